//! Tests on TAP interfaces the ports create (and delete when dropped).
//! Without CAP_NET_ADMIN (and CAP_NET_RAW for the AF_PACKET peer socket) or
//! without /dev/net/tun they skip through `nicpoll_testkit` (a failure under CI).

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use nicpoll::memory::DmaMemory;
use nicpoll::mempool::MempoolConfig;
use nicpoll::netdev::RawSocket;
use nicpoll::port::testing::{self, Delivery, conf, udp_frame, without_capability};

use nicpoll_testkit::{Cap, NameLock, Need, skip_if_missing};

use super::*;

const CAP_NET_ADMIN: u32 = 12;
const IFF_PROMISC: u32 = 0x100;

/// Checks what the test needs (checked from /proc and /dev, not by our code):
/// /dev/net/tun and CAP_NET_ADMIN to create TAP interfaces, and CAP_NET_RAW for
/// the AF_PACKET peer socket if `raw`. Skips and gives `None` when one is
/// missing; otherwise the host-wide lock on the test's interface names
/// (`names`), held while the test runs.
fn can_run(raw: bool, names: &str) -> Option<NameLock> {
    let mut needs = vec![Need::Path(sys::TUN_PATH), Need::Capability(Cap::NetAdmin)];
    if raw {
        needs.push(Need::RawSockets);
    }
    if skip_if_missing(&needs) {
        return None;
    }
    Some(nicpoll_testkit::lock_name(names))
}

fn exists(iface: &str) -> bool {
    Path::new(&format!("/sys/class/net/{iface}")).exists()
}

fn sys_mtu(iface: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn sys_flags(iface: &str) -> u32 {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/flags")).unwrap();
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap()
}

/// Keep the kernel quiet on the interface (no IPv6 autoconfiguration chatter).
fn quiet(iface: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
}

fn pool(name: &str, count: u32) -> Mempool {
    let mut c = MempoolConfig::new(name, count);
    c.cache_size = 0;
    Mempool::new(&DmaMemory::plain(), &c).unwrap()
}

fn tap(spec: &str, id: u16) -> TapPort {
    let p = TapPort::from_devargs(&DevArgs::parse(spec).unwrap(), id)
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    quiet(p.iface());
    p
}

fn batch_of(pool: &Mempool, frames: &[Vec<u8>]) -> MbufBatch {
    let mut b = MbufBatch::with_burst(32);
    for f in frames {
        let mut m = pool.alloc().unwrap();
        assert!(m.set_len(f.len()));
        m.data_mut().copy_from_slice(f);
        b.push(m).unwrap();
    }
    b
}

/// Receive on all queues until `want` packets or `timeout`; (queue, bytes) pairs.
fn receive_all(
    qs: &mut [Box<dyn RxQueue>],
    want: usize,
    timeout: Duration,
) -> Vec<(usize, Vec<u8>)> {
    let mut got = Vec::new();
    let mut b = MbufBatch::with_burst(32);
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        let mut n = 0;
        for (i, q) in qs.iter_mut().enumerate() {
            n += q.rx_burst(&mut b);
            while let Some(m) = b.pop_front() {
                assert_eq!(m.queue() as usize, i);
                got.push((i, testing::packet_bytes(&m)));
            }
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

#[test]
fn devargs_are_checked() {
    let d = TapOptions::from_devargs(&DevArgs::parse("net_tap0").unwrap()).unwrap();
    assert_eq!(d, TapOptions::default());
    assert_eq!(d.iface, "dtap%d");
    let o = TapOptions::from_devargs(&DevArgs::parse("net_tap0,iface=tap7,mac=fixed").unwrap())
        .unwrap();
    assert_eq!((o.iface.as_str(), o.mac), ("tap7", TapMac::Fixed));
    let o = TapOptions::from_devargs(&DevArgs::parse("net_tap0,mac=02:11:22:33:44:55").unwrap())
        .unwrap();
    assert_eq!(
        o.mac,
        TapMac::Addr(MacAddr([2, 0x11, 0x22, 0x33, 0x44, 0x55]))
    );
    for (spec, needle) in [
        ("net_tap0,ifname=x", "unknown key \"ifname\""),
        ("net_tap0,iface=", "cannot be an interface name"),
        ("net_tap0,iface=a/b", "cannot be an interface name"),
        (
            "net_tap0,iface=waytoolonginterfacename",
            "cannot be an interface name",
        ),
        ("net_tap0,iface=t%s", "cannot be an interface name"),
        ("net_tap0,mac=02:11:22", "not a MAC address"),
        ("net_tap0,mac=01:00:5e:00:00:01", "multicast or zero"),
        ("net_tap0,mac=00:00:00:00:00:00", "multicast or zero"),
    ] {
        let e = TapOptions::from_devargs(&DevArgs::parse(spec).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{spec}: {e}");
    }
    assert!(TapPort::from_devargs(&DevArgs::parse("net_null0").unwrap(), 0).is_err());
}

#[test]
fn passes_the_port_conformance_suite() {
    let Some(_lock) = can_run(false, "nptapc") else {
        return;
    };
    testing::run_conformance(
        "net_tap",
        &mut |id| {
            let p = TapPort::from_devargs(&DevArgs::parse("net_tap0,iface=nptapc%d")?, id)?;
            quiet(p.iface());
            Ok(Box::new(p) as Box<dyn Port>)
        },
        Delivery::Sink,
    );
}

#[test]
fn frames_cross_both_ways_on_several_queues() {
    let Some(_lock) = can_run(true, "nptapb") else {
        return;
    };
    let pool = pool("tap-both", 1024);
    let mut p = tap("net_tap0,iface=nptapb0", 5);
    assert_eq!(p.iface(), "nptapb0");
    p.configure(&conf(5, &pool, 4, 4)).unwrap();
    let mut q = p.start().unwrap();
    assert!(p.link().up, "a started tap is up: {}", p.link());
    let peer = RawSocket::open(p.iface()).unwrap();

    // Port to kernel: every transmit queue.
    let mut sent = Vec::new();
    for (i, tq) in q.tx.iter_mut().enumerate() {
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|k| testing::test_frame((i * 100 + k) as u32, 60 + 200 * k))
            .collect();
        let mut b = batch_of(&pool, &frames);
        assert_eq!(tq.tx_burst(&mut b), 5);
        sent.extend(frames);
    }
    let mut buf = vec![0u8; 4096];
    for (i, f) in sent.iter().enumerate() {
        let n = peer
            .recv(&mut buf, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("frame {i} did not reach the AF_PACKET socket"));
        assert_eq!(&buf[..n], &f[..], "frame {i}");
    }

    // Kernel to port: flows spread over the receive queues.
    const FLOWS: u16 = 64;
    for f in 0..FLOWS {
        peer.send(&udp_frame(2000 + f, 100 + f as usize)).unwrap();
    }
    let got = receive_all(&mut q.rx, FLOWS as usize, Duration::from_secs(5));
    assert_eq!(got.len(), FLOWS as usize);
    let mut queues_used = HashSet::new();
    let mut seen = HashSet::new();
    for (qi, data) in &got {
        let sport = u16::from_be_bytes([data[34], data[35]]);
        assert_eq!(data, &udp_frame(sport, 100 + (sport - 2000) as usize));
        assert!(seen.insert(sport), "flow {sport} twice");
        queues_used.insert(*qi);
    }
    assert!(
        queues_used.len() > 1,
        "all flows on one queue: {queues_used:?}"
    );
    let st = p.stats();
    assert_eq!(st.opackets as usize, sent.len());
    assert_eq!(st.ipackets, FLOWS as u64);
    assert_eq!(st.obytes, sent.iter().map(|f| f.len() as u64).sum::<u64>());
    drop(q);
    p.stop().unwrap();
    assert!(!p.link().up);
    drop(p);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn more_transmit_than_receive_queues() {
    let Some(_lock) = can_run(true, "nptaps") else {
        return;
    };
    let pool = pool("tap-split", 256);
    let mut p = tap("net_tap0,iface=nptaps0", 0);
    p.configure(&conf(0, &pool, 1, 3)).unwrap();
    let mut q = p.start().unwrap();
    assert_eq!((q.rx.len(), q.tx.len()), (1, 3));
    let peer = RawSocket::open(p.iface()).unwrap();
    let frames: Vec<Vec<u8>> = (0..3).map(|i| testing::test_frame(i, 80)).collect();
    for (i, tq) in q.tx.iter_mut().enumerate() {
        let mut b = batch_of(&pool, &frames[i..=i]);
        assert_eq!(tq.tx_burst(&mut b), 1, "transmit queue {i}");
    }
    let mut buf = vec![0u8; 2048];
    for f in &frames {
        let n = peer.recv(&mut buf, Duration::from_secs(5)).unwrap();
        assert_eq!(&buf[..n], &f[..]);
    }
    // Everything the kernel sends lands on the one receive queue.
    for f in 0..16 {
        peer.send(&udp_frame(3000 + f, 90)).unwrap();
    }
    let got = receive_all(&mut q.rx, 16, Duration::from_secs(5));
    assert_eq!(got.len(), 16);
    assert_eq!(p.stats().imissed, 0);
    assert_eq!(p.stats().oerrors, 0);
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn interface_disappears_with_the_port() {
    let Some(_lock) = can_run(false, "nptapg") else {
        return;
    };
    let pool = pool("tap-gone", 64);
    // The default name: dtap<N>, numbered by the kernel.
    let p = tap("net_tap0", 0);
    let name = p.iface().to_string();
    assert!(
        name.starts_with("dtap") && name[4..].parse::<u32>().is_ok(),
        "{name}"
    );
    assert!(exists(&name));
    drop(p);
    assert!(
        !exists(&name),
        "{name} still exists after the port was dropped"
    );

    let mut p = tap("net_tap0,iface=nptapg0", 0);
    p.configure(&conf(0, &pool, 2, 2)).unwrap();
    let q = p.start().unwrap();
    drop(p);
    assert!(exists("nptapg0"), "queues still hold the interface");
    drop(q);
    assert!(
        !exists("nptapg0"),
        "nptapg0 still exists after its queues were dropped"
    );
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn existing_interface_is_refused_untouched() {
    let Some(_lock) = can_run(false, "nptapx") else {
        return;
    };
    let first = tap("net_tap0,iface=nptapx0", 0);
    let before = sys_flags("nptapx0");
    let e = TapPort::from_devargs(&DevArgs::parse("net_tap1,iface=nptapx0").unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nptapx0") && e.contains("already exists") && e.contains("ip link del nptapx0"),
        "{e}"
    );
    assert_eq!(sys_flags("nptapx0"), before);
    let lo = sys_flags("lo");
    let e = TapPort::from_devargs(&DevArgs::parse("net_tap1,iface=lo").unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(sys_flags("lo"), lo);
    drop(first);
    assert!(!exists("nptapx0"));
}

#[test]
fn mac_and_promiscuous_mode() {
    let Some(_lock) = can_run(false, "nptapm") else {
        return;
    };
    let mut p = tap("net_tap0,iface=nptapm0,mac=fixed", 7);
    assert_eq!(p.mac_addr(), MacAddr([0x02, 0x64, 0x74, 0x61, 0x70, 7]));
    assert!(!p.promiscuous());
    p.set_promiscuous(true).unwrap();
    assert!(p.promiscuous());
    assert_ne!(sys_flags("nptapm0") & IFF_PROMISC, 0);
    p.set_promiscuous(false).unwrap();
    assert_eq!(sys_flags("nptapm0") & IFF_PROMISC, 0);
    drop(p);
    let p = tap("net_tap0,iface=nptapm1,mac=02:aa:bb:cc:dd:ee", 0);
    assert_eq!(p.mac_addr().to_string(), "02:AA:BB:CC:DD:EE");
}

#[test]
fn without_cap_net_admin_the_error_says_so() {
    if skip_if_missing(&[Need::Path(sys::TUN_PATH)]) {
        return;
    }
    let _lock = nicpoll_testkit::lock_name("nptape");
    let e = without_capability(CAP_NET_ADMIN, || {
        TapPort::from_devargs(&DevArgs::parse("net_tap0,iface=nptape0").unwrap(), 0)
            .unwrap_err()
            .to_string()
    });
    assert!(
        e.contains("CAP_NET_ADMIN") && e.contains("/dev/net/tun") && e.contains("securityContext"),
        "{e}"
    );
    assert!(!exists("nptape0"));
}

#[test]
fn oversize_frames_are_counted_not_truncated() {
    if skip_if_missing(&[Need::Command("ip")]) {
        return;
    }
    let Some(_lock) = can_run(true, "nptapo") else {
        return;
    };
    let pool = pool("tap-oversize", 64);
    let mut p = tap("net_tap0,iface=nptapo0", 0);
    quiet(p.iface());
    let o = std::process::Command::new("ip")
        .args(["link", "set", "nptapo0", "mtu", "3000"])
        .output()
        .expect("ip(8) runs");
    assert!(
        o.status.success(),
        "ip link set nptapo0 mtu 3000: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A frame limit (--max-pkt-len 1004: 1000 bytes) sets the interface's
    // MTU (986), so the kernel sends nothing longer;
    // with the MTU raised behind the port's back, longer frames are counted.
    let mut c = conf(0, &pool, 1, 1);
    c.max_rx_pktlen = 1000;
    p.configure(&c).unwrap();
    assert_eq!(sys_mtu("nptapo0"), 986);
    let o = std::process::Command::new("ip")
        .args(["link", "set", "nptapo0", "mtu", "3000"])
        .output()
        .expect("ip(8) runs");
    assert!(o.status.success());
    // The MTU change brought IPv6 back (its chatter): off again, and what
    // it sent meanwhile drained.
    quiet(p.iface());
    let mut q = p.start().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut drain = MbufBatch::with_burst(32);
    while q.rx[0].rx_burst(&mut drain) > 0 {
        drain.clear();
    }
    p.reset_stats();
    let peer = RawSocket::open(p.iface()).unwrap();
    let small = testing::test_frame(1, 500);
    assert!(pool.data_room() < 2500);
    peer.send(&testing::test_frame(2, 1001)).unwrap();
    peer.send(&small).unwrap();
    let got = receive_all(&mut q.rx, 1, Duration::from_secs(5));
    assert_eq!(got, vec![(0, small.clone())]);
    let st = p.stats();
    assert_eq!((st.ipackets, st.ierrors), (1, 1));
    drop(q);
    p.stop().unwrap();
    // Without it the limit is the MTU's: longer than an mbuf is a chain.
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    p.reset_stats();
    // A socket of its own: the old one holds the ENETDOWN of the stop.
    let peer = RawSocket::open(p.iface()).unwrap();
    let long = testing::test_frame(2, 2500);
    peer.send(&long).unwrap();
    peer.send(&small).unwrap();
    let got = receive_all(&mut q.rx, 2, Duration::from_secs(5));
    assert_eq!(got, vec![(0, long), (0, small)]);
    let st = p.stats();
    assert_eq!((st.ipackets, st.ierrors), (2, 0));
    // Runts are refused by the kernel on transmit: counted, taken.
    let mut b = batch_of(&pool, &[vec![0u8; 8], testing::test_frame(3, 64)]);
    assert_eq!(q.tx[0].tx_burst(&mut b), 2);
    let st = p.stats();
    assert_eq!((st.opackets, st.oerrors), (1, 1));
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn kernel_queue_overflow_shows_as_imissed() {
    let Some(_lock) = can_run(true, "nptapi") else {
        return;
    };
    let pool = pool("tap-imissed", 4096);
    let mut p = tap("net_tap0,iface=nptapi0", 0);
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    let peer = RawSocket::open(p.iface()).unwrap();
    const N: usize = 3000;
    let mut sent = 0;
    for i in 0..N {
        if peer.send(&testing::test_frame(i as u32, 64)).is_ok() {
            sent += 1;
        }
    }
    let missed = p.stats().imissed;
    assert!(missed > 0, "no drops counted after overflowing the queue");
    let got = receive_all(&mut q.rx, sent, Duration::from_millis(300));
    let st = p.stats();
    assert_eq!(st.ipackets as usize, got.len());
    assert_eq!(
        st.ipackets + st.imissed,
        sent as u64,
        "received + missed must account for every frame: {st:?}"
    );
    p.reset_stats();
    assert_eq!(p.stats(), PortStats::default());
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn empty_pool_counts_nombuf() {
    let Some(_lock) = can_run(true, "nptapn") else {
        return;
    };
    let pool = pool("tap-nombuf", 4);
    let mut p = tap("net_tap0,iface=nptapn0", 0);
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    let peer = RawSocket::open(p.iface()).unwrap();
    let held: Vec<Mbuf> = (0..4).map(|_| pool.alloc().unwrap()).collect();
    let frames: Vec<Vec<u8>> = (0..3).map(|i| testing::test_frame(i, 64)).collect();
    for f in &frames {
        peer.send(f).unwrap();
    }
    let mut b = MbufBatch::with_burst(32);
    assert_eq!(q.rx[0].rx_burst(&mut b), 0);
    assert!(p.stats().rx_nombuf > 0);
    drop(held);
    let got = receive_all(&mut q.rx, 3, Duration::from_secs(5));
    assert_eq!(got.into_iter().map(|(_, d)| d).collect::<Vec<_>>(), frames);
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

/// MTU 9000 on the tap: the kernel's 9014-byte frames arrive as chains of 2
/// KiB mbufs, chains sent back reach the kernel whole (a raw socket on the
/// interface reads them byte for byte).
#[test]
fn jumbo_frames_both_ways() {
    if skip_if_missing(&[Need::Command("ip")]) {
        return;
    }
    let Some(_lock) = can_run(true, "nptapj") else {
        return;
    };
    let pool = pool("tap-jumbo", 1024);
    let room = pool.data_room();
    let mut p = tap("net_tap0,iface=nptapj0", 0);
    let o = std::process::Command::new("ip")
        .args(["link", "set", "nptapj0", "mtu", "9000"])
        .output()
        .expect("ip(8) runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        p.info().max_rx_pktlen,
        65536,
        "what the MTU may be raised to"
    );
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    quiet(p.iface());
    let peer = RawSocket::open(p.iface()).unwrap();
    let frames: Vec<Vec<u8>> = (0..12u32)
        .map(|i| testing::test_frame(i, [9014, 64, 1665, 5000][i as usize % 4]))
        .collect();
    for f in &frames {
        peer.send(f).unwrap();
    }
    let mut b = MbufBatch::with_burst(32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.len() < frames.len() && Instant::now() < deadline {
        q.rx[0].rx_burst(&mut b);
    }
    let got: Vec<Vec<u8>> = b.iter().map(testing::packet_bytes).collect();
    assert_eq!(got, frames);
    for m in b.iter() {
        assert_eq!(m.nb_segs(), m.pkt_len().div_ceil(room));
    }
    assert_eq!(q.tx[0].tx_burst(&mut b), frames.len());
    let mut back = Vec::new();
    let mut buf = vec![0u8; 16384];
    while back.len() < frames.len() {
        match peer.recv(&mut buf, Duration::from_secs(5)) {
            Some(n) => back.push(buf[..n].to_vec()),
            None => break,
        }
    }
    assert_eq!(back, frames, "the kernel received every byte");
    let st = p.stats();
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!(
        (
            st.ipackets,
            st.ibytes,
            st.opackets,
            st.obytes,
            st.ierrors,
            st.oerrors
        ),
        (12, bytes, 12, bytes, 0, 0)
    );
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}
