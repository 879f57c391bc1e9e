//! The port conformance suite (feature `testing`): every driver runs it from its
//! own tests, so all ports keep the same promises to the forwarding code.
//!
//! It checks configuration limits and errors, the start/stop life cycle, burst
//! semantics (receive never exceeds the batch's spare room, transmit leaves the
//! unsent tail), statistics and their reset, content integrity for ports that
//! loop traffic back, multi-segment packets (sent whole by a port that says
//! it can, counted as errors by one that cannot), the receive frame limit
//! (a frame one byte over it counted, not delivered), and that every mbuf is
//! back in its pool at the end.
#![deny(unsafe_code)]

use std::time::{Duration, Instant};

use crate::mbuf::MbufBatch;
use crate::memory::DmaMemory;
use crate::mempool::{Mempool, MempoolConfig};
use crate::port::{Port, PortConf, PortStats};
use crate::{Error, Result};

/// How a port delivers traffic, so the suite knows what to expect from receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Receive always yields packets (net_null).
    Generates,
    /// What is sent on transmit queue q comes back on receive queue q of the same
    /// port, in order (net_ring loopback, a veth pair's far end looped back...).
    Loopback,
    /// Nothing arrives unless someone outside sends it.
    Sink,
}

/// A factory for fresh ports of the driver under test, given the port id.
pub type MakePort<'a> = dyn FnMut(u16) -> Result<Box<dyn Port>> + 'a;

/// A configuration of `nb_rxq`/`nb_txq` queues with the port's default ring
/// sizes and frame limit, buffers from `pool`.
pub fn conf(port_id: u16, pool: &Mempool, nb_rxq: u16, nb_txq: u16) -> PortConf {
    PortConf {
        port_id,
        nb_rxq,
        nb_txq,
        nb_rxd: 0,
        nb_txd: 0,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    }
}

/// A frame whose bytes encode `tag`, so reordering or corruption shows.
pub fn test_frame(tag: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(64)];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = (tag as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    f[14..18].copy_from_slice(&tag.to_be_bytes());
    f.truncate(len.max(64));
    f
}

/// An Ethernet + IPv4 + UDP frame of `len` bytes in all (at least 42), from
/// 02:00:00:00:00:02 / 198.18.0.1 port `sport` to 02:00:00:00:00:01 /
/// 198.18.0.2 port 9: a valid IP header checksum, UDP checksum 0, and a
/// payload drawn from `sport`, so each source port makes a frame of its own
/// (and kernels spread them by their hash).
pub fn udp_frame(sport: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(42)];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (f.len() - 14) as u16;
    let iph = &mut f[14..34];
    iph[0] = 0x45;
    iph[2..4].copy_from_slice(&ip_len.to_be_bytes());
    iph[8] = 64;
    iph[9] = 17;
    iph[12..16].copy_from_slice(&[198, 18, 0, 1]);
    iph[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let sum = crate::net::checksum::checksum(iph);
    iph[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    for (i, b) in f[42..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(7).wrapping_add(sport as u8);
    }
    f
}

/// Fill `batch` with one packet: test frame `tag` of `len` bytes in segments
/// of at most `seg` bytes (a chain when `len > seg`).
pub fn fill_chain(pool: &Mempool, batch: &mut MbufBatch, tag: u32, len: usize, seg: usize) {
    let f = test_frame(tag, len);
    let mut chain = crate::mbuf::RxChain::new();
    for piece in f.chunks(seg) {
        let mut m = pool.alloc().expect("test pool has room");
        m.append(piece.len())
            .expect("a segment fits an mbuf")
            .copy_from_slice(piece);
        chain.push(m).expect("few segments");
    }
    batch
        .push(chain.finish().expect("a frame"))
        .expect("batch has room");
}

/// The bytes of a packet, every segment.
pub fn packet_bytes(m: &crate::Mbuf) -> Vec<u8> {
    let mut v = vec![0u8; m.pkt_len()];
    assert_eq!(m.copy_out(0, &mut v), v.len());
    v
}

/// Fill `batch` with `n` test frames tagged `first..first+n`.
pub fn fill(pool: &Mempool, batch: &mut MbufBatch, first: u32, n: usize, len: usize) {
    for i in 0..n {
        let mut m = pool.alloc().expect("test pool has room");
        let f = test_frame(first + i as u32, len);
        assert!(m.set_len(f.len()));
        m.data_mut().copy_from_slice(&f);
        batch.push(m).expect("batch has room");
    }
}

/// Run every check on ports made by `make`. Panics with a message naming the
/// driver and the broken promise.
pub fn run_conformance(driver: &str, make: &mut MakePort<'_>, delivery: Delivery) {
    let mem = DmaMemory::plain();
    let mut port = make(0).unwrap_or_else(|e| panic!("{driver}: create: {e}"));
    // Two queue pairs at the default ring sizes, filled, plus bursts in flight.
    let info = port.info();
    let rings = 2 * (u32::from(info.default_rxd) + u32::from(info.default_txd));
    let pool = Mempool::new(
        &mem,
        &MempoolConfig::new(&format!("conformance-{driver}"), rings + 4096),
    )
    .unwrap_or_else(|e| panic!("{driver}: pool: {e}"));
    limits_and_lifecycle(driver, port.as_mut(), &pool);
    drop(port);
    {
        let mut port = make(1).unwrap_or_else(|e| panic!("{driver}: create: {e}"));
        bursts_and_stats(driver, port.as_mut(), &pool, delivery);
    }
    {
        let mut port = make(2).unwrap_or_else(|e| panic!("{driver}: create: {e}"));
        chains_and_frame_limit(driver, port.as_mut(), &pool, delivery);
    }
    assert_eq!(
        pool.in_use(),
        0,
        "{driver}: {} mbufs not returned to the pool after the ports were dropped",
        pool.in_use()
    );
}

fn limits_and_lifecycle(driver: &str, port: &mut dyn Port, pool: &Mempool) {
    let info = port.info();
    assert!(!info.name.is_empty(), "{driver}: empty port name");
    assert!(
        info.max_rx_queues >= 1 && info.max_tx_queues >= 1,
        "{driver}: no queues"
    );
    assert!(
        info.min_rxd <= info.default_rxd && info.default_rxd <= info.max_rxd,
        "{driver}: default rxd outside its limits"
    );
    assert!(
        info.min_txd <= info.default_txd && info.default_txd <= info.max_txd,
        "{driver}: default txd outside its limits"
    );
    assert!(
        port.start().is_err(),
        "{driver}: start before configure must fail"
    );
    assert!(!port.is_started());
    let expect_port_err = |r: Result<()>, what: &str| match r {
        Err(Error::Port { .. }) => {}
        Err(e) => panic!("{driver}: {what}: wrong error kind: {e}"),
        Ok(()) => panic!("{driver}: {what} must be refused"),
    };
    expect_port_err(port.configure(&conf(0, pool, 0, 0)), "zero queues");
    expect_port_err(
        port.configure(&conf(0, pool, info.max_rx_queues + 1, 1)),
        "more receive queues than the maximum",
    );
    expect_port_err(
        port.configure(&conf(0, pool, 1, info.max_tx_queues + 1)),
        "more transmit queues than the maximum",
    );
    if info.max_rxd < u16::MAX {
        let mut c = conf(0, pool, 1, 1);
        c.nb_rxd = info.max_rxd + 1;
        expect_port_err(port.configure(&c), "rxd above the maximum");
    }
    let nq = 2.min(info.max_rx_queues).min(info.max_tx_queues);
    port.configure(&conf(0, pool, nq, nq))
        .unwrap_or_else(|e| panic!("{driver}: configure: {e}"));
    let queues = port
        .start()
        .unwrap_or_else(|e| panic!("{driver}: start: {e}"));
    assert!(port.is_started());
    assert_eq!(
        queues.rx.len(),
        nq as usize,
        "{driver}: receive queue count"
    );
    assert_eq!(
        queues.tx.len(),
        nq as usize,
        "{driver}: transmit queue count"
    );
    assert!(port.start().is_err(), "{driver}: second start must fail");
    expect_port_err(
        port.configure(&conf(0, pool, 1, 1)),
        "configure while started",
    );
    drop(queues);
    port.stop()
        .unwrap_or_else(|e| panic!("{driver}: stop: {e}"));
    assert!(!port.is_started());
    // Restart after stop, with another configuration.
    port.configure(&conf(0, pool, 1, 1))
        .unwrap_or_else(|e| panic!("{driver}: reconfigure: {e}"));
    let queues = port
        .start()
        .unwrap_or_else(|e| panic!("{driver}: restart: {e}"));
    assert_eq!(queues.rx.len(), 1);
    drop(queues);
    port.stop().unwrap();
    if port.set_promiscuous(true).is_ok() {
        assert!(port.promiscuous(), "{driver}: promiscuous on did not stick");
        if port.set_promiscuous(false).is_ok() {
            assert!(
                !port.promiscuous(),
                "{driver}: promiscuous off did not stick"
            );
        }
    }
    assert_ne!(port.mac_addr().0, [0; 6], "{driver}: zero MAC address");
}

fn receive_some(port_q: &mut dyn crate::RxQueue, batch: &mut MbufBatch, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while batch.len() < want && Instant::now() < deadline {
        if port_q.rx_burst(batch) == 0 {
            std::thread::yield_now();
        }
    }
}

fn bursts_and_stats(driver: &str, port: &mut dyn Port, pool: &Mempool, delivery: Delivery) {
    const PORT_ID: u16 = 1;
    port.configure(&conf(PORT_ID, pool, 1, 1))
        .unwrap_or_else(|e| panic!("{driver}: configure: {e}"));
    let mut q = port
        .start()
        .unwrap_or_else(|e| panic!("{driver}: start: {e}"));
    assert_eq!(
        port.stats(),
        PortStats::default(),
        "{driver}: counters not zero after start"
    );

    // Transmitting nothing sends nothing.
    let mut empty = MbufBatch::with_burst(32);
    assert_eq!(
        q.tx[0].tx_burst(&mut empty),
        0,
        "{driver}: tx of an empty batch"
    );

    // Receive never appends more than the batch's spare room.
    let mut b = MbufBatch::with_burst(4);
    fill(pool, &mut b, 9000, 3, 64);
    let before = b.len();
    let got = q.rx[0].rx_burst(&mut b);
    assert!(
        got <= 1 && b.len() == before + got,
        "{driver}: rx appended {got} into 1 spare slot"
    );
    b.clear();

    match delivery {
        Delivery::Generates => {
            let mut b = MbufBatch::with_burst(32);
            receive_some(q.rx[0].as_mut(), &mut b, 1);
            assert!(
                !b.is_empty(),
                "{driver}: a generating port received nothing"
            );
            assert!(
                b.iter().all(|m| m.port() == PORT_ID),
                "{driver}: received mbufs not stamped with the port id"
            );
            let n = b.len() as u64;
            assert!(
                port.stats().ipackets >= n,
                "{driver}: ipackets below what was received"
            );
            let sent = q.tx[0].tx_burst(&mut b);
            assert_eq!(
                sent + b.len(),
                n as usize,
                "{driver}: tx lost or invented packets"
            );
            b.clear();
        }
        Delivery::Loopback => {
            const N: usize = 100;
            let mut tx = MbufBatch::with_burst(32);
            let mut rx = MbufBatch::with_burst(32);
            let mut received: Vec<Vec<u8>> = Vec::new();
            let mut sent_total = 0usize;
            let mut next = 0u32;
            let deadline = Instant::now() + Duration::from_secs(10);
            while received.len() < N && Instant::now() < deadline {
                if (next as usize) < N && tx.is_empty() {
                    let k = (N - next as usize).min(32);
                    for t in next..next + k as u32 {
                        fill(pool, &mut tx, t, 1, 60 + t as usize % 200);
                    }
                    next += k as u32;
                }
                let before = tx.len();
                let s = q.tx[0].tx_burst(&mut tx);
                assert_eq!(
                    s + tx.len(),
                    before,
                    "{driver}: tx must leave exactly the unsent tail"
                );
                sent_total += s;
                q.rx[0].rx_burst(&mut rx);
                while let Some(m) = rx.pop_front() {
                    assert_eq!(
                        m.port(),
                        PORT_ID,
                        "{driver}: received mbuf not stamped with the port id"
                    );
                    received.push(m.data().to_vec());
                }
            }
            assert_eq!(
                received.len(),
                N,
                "{driver}: {} of {N} looped-back packets arrived",
                received.len()
            );
            for (i, r) in received.iter().enumerate() {
                assert_eq!(
                    r,
                    &test_frame(i as u32, 60 + i % 200),
                    "{driver}: packet {i} corrupted or out of order"
                );
            }
            let st = port.stats();
            assert_eq!(st.opackets as usize, sent_total, "{driver}: opackets");
            assert_eq!(st.ipackets as usize, N, "{driver}: ipackets");
            let bytes: u64 = (0..N).map(|i| (60 + i % 200).max(64) as u64).sum();
            assert_eq!(st.ibytes, bytes, "{driver}: ibytes");
        }
        Delivery::Sink => {
            let mut b = MbufBatch::with_burst(32);
            assert_eq!(
                q.rx[0].rx_burst(&mut b),
                0,
                "{driver}: a sink port received something"
            );
            fill(pool, &mut b, 0, 8, 64);
            let sent = q.tx[0].tx_burst(&mut b);
            assert_eq!(sent + b.len(), 8, "{driver}: tx lost or invented packets");
            b.clear();
        }
    }

    port.reset_stats();
    assert_eq!(
        port.stats(),
        PortStats::default(),
        "{driver}: counters not zero after reset"
    );
    drop(q);
    port.stop()
        .unwrap_or_else(|e| panic!("{driver}: stop: {e}"));
}

/// Multi-segment packets and the receive frame limit.
fn chains_and_frame_limit(driver: &str, port: &mut dyn Port, pool: &Mempool, delivery: Delivery) {
    const PORT_ID: u16 = 2;
    let info = port.info();
    let room = pool.data_room();
    let expect_port_err = |r: Result<()>, what: &str| match r {
        Err(Error::Port { .. }) => {}
        Err(e) => panic!("{driver}: {what}: wrong error kind: {e}"),
        Ok(()) => panic!("{driver}: {what} must be refused"),
    };
    if info.max_rx_pktlen < u32::MAX {
        let mut c = conf(PORT_ID, pool, 1, 1);
        c.max_rx_pktlen = info.max_rx_pktlen + 1;
        expect_port_err(port.configure(&c), "a frame limit above max_rx_pktlen");
    }
    if !info.rx_scatter && info.max_rx_pktlen as usize > room {
        let mut c = conf(PORT_ID, pool, 1, 1);
        c.max_rx_pktlen = room as u32 + 1;
        expect_port_err(
            port.configure(&c),
            "a frame limit above the data room of a port that does not scatter",
        );
    }
    // A limit of 1000 bytes: a frame of 1001 is dropped and counted.
    let limit = 1000usize.min(info.max_rx_pktlen as usize);
    let mut c = conf(PORT_ID, pool, 1, 1);
    c.max_rx_pktlen = limit as u32;
    port.configure(&c)
        .unwrap_or_else(|e| panic!("{driver}: configure with max_rx_pktlen {limit}: {e}"));
    let mut q = port
        .start()
        .unwrap_or_else(|e| panic!("{driver}: start: {e}"));
    // Segments of 700 bytes: every frame above 700 is a chain.
    let seg = 700;
    if delivery == Delivery::Loopback {
        let mut tx = MbufBatch::with_burst(8);
        // Send in order: at the limit, over it, small, at the limit again.
        for (tag, len) in [(1u32, limit), (2, limit + 1), (3, 64), (4, limit)] {
            fill_chain(pool, &mut tx, tag, len, seg);
        }
        let mut rx = MbufBatch::with_burst(8);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 3 && Instant::now() < deadline {
            if !tx.is_empty() {
                q.tx[0].tx_burst(&mut tx);
            }
            q.rx[0].rx_burst(&mut rx);
            while let Some(m) = rx.pop_front() {
                got.push(packet_bytes(&m));
            }
        }
        if info.tx_multi_seg {
            assert_eq!(
                got,
                vec![
                    test_frame(1, limit),
                    test_frame(3, 64),
                    test_frame(4, limit)
                ],
                "{driver}: frames at the {limit}-byte limit sent as chains of {seg}-byte \
                 segments must come back whole, the one byte over it must not"
            );
            // In ierrors, or (a device that drops it, as an iavf VF's counts
            // it among its discards) in imissed.
            let st = port.stats();
            assert!(
                st.ierrors + st.imissed >= 1,
                "{driver}: the frame over the limit was not counted: {st:?}"
            );
        } else {
            assert_eq!(
                got,
                vec![test_frame(3, 64)],
                "{driver}: a port without tx_multi_seg sends no chain"
            );
            assert_eq!(
                port.stats().oerrors,
                3,
                "{driver}: the chains it cannot send are counted"
            );
        }
        tx.clear();
    } else if delivery == Delivery::Sink {
        let mut tx = MbufBatch::with_burst(8);
        fill_chain(pool, &mut tx, 1, 1500, seg);
        fill_chain(pool, &mut tx, 2, 100, seg);
        let sent = q.tx[0].tx_burst(&mut tx);
        assert_eq!(sent + tx.len(), 2, "{driver}: tx lost or invented packets");
        tx.clear();
        if !info.tx_multi_seg {
            assert!(
                port.stats().oerrors >= 1,
                "{driver}: a chain it cannot send must be counted"
            );
        }
    }
    drop(q);
    port.stop()
        .unwrap_or_else(|e| panic!("{driver}: stop: {e}"));
    // Scatter: with the port's own limit, a frame larger than an mbuf comes
    // back as a chain, whole.
    let big = (info.max_rx_pktlen as usize).min(3 * room + 100);
    if delivery != Delivery::Loopback || !info.rx_scatter || !info.tx_multi_seg || big <= room {
        return;
    }
    port.configure(&conf(PORT_ID, pool, 1, 1))
        .unwrap_or_else(|e| panic!("{driver}: configure: {e}"));
    let mut q = port
        .start()
        .unwrap_or_else(|e| panic!("{driver}: start: {e}"));
    port.reset_stats();
    let mut tx = MbufBatch::with_burst(8);
    fill_chain(pool, &mut tx, 5, big, room);
    fill_chain(pool, &mut tx, 6, 64, room);
    let mut rx = MbufBatch::with_burst(8);
    let mut got: Vec<(usize, Vec<u8>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 2 && Instant::now() < deadline {
        if !tx.is_empty() {
            q.tx[0].tx_burst(&mut tx);
        }
        q.rx[0].rx_burst(&mut rx);
        while let Some(m) = rx.pop_front() {
            assert_eq!(m.port(), PORT_ID, "{driver}: port id of a chain");
            got.push((m.nb_segs(), packet_bytes(&m)));
        }
    }
    assert_eq!(
        got.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
        vec![test_frame(5, big), test_frame(6, 64)],
        "{driver}: a {big}-byte frame (mbufs of {room}) must come back whole"
    );
    assert!(
        got[0].0 >= big.div_ceil(room),
        "{driver}: a {big}-byte frame in {} segments of at most {room}",
        got[0].0
    );
    let st = port.stats();
    assert_eq!(
        (st.ipackets, st.ibytes),
        (2, big as u64 + 64),
        "{driver}: a chain is one packet of all its bytes"
    );
    tx.clear();
    drop(q);
    port.stop()
        .unwrap_or_else(|e| panic!("{driver}: stop: {e}"));
}

/// A veth pair created for one test and deleted when dropped, so kernel-backed
/// ports can be tested without touching any interface the machine already has.
#[derive(Debug)]
pub struct VethPair {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// Host-wide lock on the names, so concurrent test runs take turns.
    _lock: nicpoll_testkit::NameLock,
}

impl VethPair {
    /// Create `<tag>a`/`<tag>b` (tag: up to 12 characters), both up, IPv6 off so
    /// the kernel sends no chatter of its own.
    ///
    /// The caller checks first that the machine can (`nicpoll_testkit::VETH`:
    /// CAP_NET_ADMIN and ip(8)) and skips the test otherwise.
    ///
    /// # Panics
    /// When the pair cannot be created or brought up, naming ip(8)'s error: with
    /// the prerequisites met that is a failure, not a reason to skip.
    pub fn create(tag: &str) -> VethPair {
        assert!(tag.len() <= 12, "interface names are at most 15 bytes");
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        // Held before the stale-pair removal below, so it never removes the
        // live pair of another test run on this machine.
        let lock = nicpoll_testkit::lock_name(&a);
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap_or_else(|e| panic!("cannot run ip(8) {args:?}: {e}"))
        };
        // A pair left by a killed earlier run would make `add` fail.
        let _ = ip(&["link", "del", &a]);
        let o = ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        assert!(
            o.status.success(),
            "cannot create veth pair {a}/{b}: ip link add: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
        let pair = VethPair { a, b, _lock: lock };
        for end in [&pair.a, &pair.b] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
            let o = ip(&["link", "set", end, "up"]);
            assert!(
                o.status.success(),
                "cannot bring {end} up: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        pair
    }
}

impl VethPair {
    /// Send everything that arrives at `b` straight back out of `b`, so a port on
    /// `a` sees its own frames come back, in order: [`Delivery::Loopback`] for
    /// kernel-backed ports (tc ingress qdisc + u32 match-all + mirred redirect).
    pub fn loop_back_far_end(&self) {
        let tc = |args: &[&str]| {
            let o = std::process::Command::new("tc")
                .args(args)
                .output()
                .expect("tc(8) runs");
            assert!(
                o.status.success(),
                "tc {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        tc(&["qdisc", "add", "dev", &self.b, "ingress"]);
        tc(&[
            "filter", "add", "dev", &self.b, "parent", "ffff:", "protocol", "all", "u32", "match",
            "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", &self.b,
        ]);
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.a])
            .output();
    }
}

/// Run `f` on a thread of its own without capability `cap` (`CAP_*` number,
/// e.g. 13 for CAP_NET_RAW) in its effective set, so a test sees what an
/// unprivileged process sees, and return what `f` returns. Linux credentials
/// are per thread: the caller's stay as they are.
pub fn without_capability<T: Send + 'static>(
    cap: u32,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        drop_effective_cap(cap).unwrap_or_else(|e| panic!("cannot drop capability {cap}: {e}"));
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Remove capability `cap` (`CAP_*` number) from the calling thread's
/// effective set. Linux credentials are per thread: run it on a thread made
/// for that, which should exit afterwards ([`without_capability`] does).
pub fn drop_effective_cap(cap: u32) -> std::io::Result<()> {
    use rustix::thread::{CapabilitySet, capabilities, set_capabilities};
    let mut sets = capabilities(None)?;
    sets.effective
        .remove(CapabilitySet::from_bits_retain(1u64 << cap));
    set_capabilities(None, sets)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::checksum::checksum;

    /// The IPv4 header's checksum verifies (sums to zero) and the lengths are
    /// the frame's, at the shortest length and a longer one.
    #[test]
    fn udp_frames_are_valid_ipv4() {
        for (sport, len) in [(7u16, 0usize), (1000, 80), (65535, 1514)] {
            let f = udp_frame(sport, len);
            assert_eq!(f.len(), len.max(42));
            assert_eq!(checksum(&f[14..34]), 0, "sport {sport} len {len}");
            assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
            assert_eq!(u16::from_be_bytes([f[38], f[39]]) as usize, f.len() - 34);
            assert_eq!(u16::from_be_bytes([f[34], f[35]]), sport);
        }
        assert_ne!(udp_frame(1, 64), udp_frame(2, 64));
    }

    /// The capability is gone on `f`'s thread (as the kernel reports it in
    /// /proc/thread-self/status) and not on the caller's.
    #[test]
    fn a_capability_is_dropped_on_its_own_thread_only() {
        let cap_eff = || {
            let s = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap();
            u64::from_str_radix(hex.trim(), 16).unwrap()
        };
        const CAP_NET_RAW: u32 = 13;
        let before = cap_eff();
        let inside = without_capability(CAP_NET_RAW, cap_eff);
        assert_eq!(inside, before & !(1 << CAP_NET_RAW));
        assert_eq!(cap_eff(), before, "the caller keeps its capabilities");
    }
}
