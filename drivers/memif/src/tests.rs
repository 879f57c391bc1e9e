//! Ring logic against a hand-driven peer (including garbage), and pairs of
//! nicpoll memif ports over real sockets: the conformance suite, refusals,
//! reconnects, a peer lost mid-traffic, several queues, zero copy.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::{DmaMemory, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::PortConf;
use nicpoll::port::counters::QueueCounters;
use nicpoll::port::testing::{self, Delivery, fill, test_frame};
use nicpoll::{Port, RxQueue, TxQueue};

use super::*;
use crate::queue::{ConnLife, Quarantine, RingAttach};
use crate::sys::{DESC_FLAG_NEXT, Desc, Mapping, RING_FLAG_MASK_INT, Region, RingView};

fn pool(name: &str, n: u32) -> Mempool {
    Mempool::new(&DmaMemory::plain(), &MempoolConfig::new(name, n)).unwrap()
}

/// A unique socket path for one test.
fn sock_path(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}/nicpoll-memif-{tag}-{}-{}.sock",
        std::env::temp_dir().display(),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn opts(role: Role, path: &str) -> MemifOptions {
    MemifOptions {
        role,
        socket: SocketSpec {
            path: path.to_string(),
            abstract_ns: false,
        },
        ..MemifOptions::default()
    }
}

fn conf(port_id: u16, pool: &Mempool, nq: u16) -> PortConf {
    PortConf {
        port_id,
        nb_rxq: nq,
        nb_txq: nq,
        nb_rxd: 0,
        nb_txd: 0,
        mempool: pool.clone(),
        max_rx_pktlen: 0,
    }
}

// ---------------------------------------------------------------------------
// Ring logic, with the test playing the peer by hand.

/// One client-to-server ring with its buffers in a memfd region, as a client
/// lays it out, and a server receive queue attached to it.
struct Rig {
    region: Region,
    ring: RingView,
    rx: MemifRx,
    counters: Arc<CachePadded<QueueCounters>>,
    stats: MemifQueueStatsRef,
    pool: Mempool,
}

const LOG2: u8 = 4;
const BSIZE: u32 = 256;

fn buf_off(slot: u16) -> u32 {
    RingView::bytes(LOG2) as u32 + (slot as u32 % (1 << LOG2)) * BSIZE
}

fn rig(side: Side) -> Rig {
    let len = RingView::bytes(LOG2) + ((BSIZE as usize) << LOG2);
    let (m, _fd) = Mapping::new_memfd("memif-rig", len).unwrap();
    let region = Region::of_mapping(Arc::new(m));
    let ring = RingView::new(&region, 0, LOG2).unwrap();
    ring.set_cookie(proto::COOKIE);
    let quarantine = Arc::new(Quarantine::default());
    let link = Arc::new(QueueLink::new(quarantine));
    link.publish(Some(Arc::new(RingAttach {
        ring: ring.clone(),
        regions: Arc::from(vec![region.clone()]),
        own_buffers: (side == Side::Client).then(|| (buf_off(0), BSIZE)),
        zero_copy: None,
        interrupt: None,
        life: Arc::new(ConnLife::default()),
    })));
    let pool = pool("rig", 256);
    let counters = Arc::new(CachePadded::new(QueueCounters::default()));
    let stats: MemifQueueStatsRef = Arc::new(CachePadded::new(MemifQueueStats::default()));
    let rx = MemifRx::new(
        link,
        side,
        3,
        0,
        pool.clone(),
        counters.clone(),
        stats.clone(),
    );
    Rig {
        region,
        ring,
        rx,
        counters,
        stats,
        pool,
    }
}

impl Rig {
    /// Play the client: put `frame` in slot `slot`'s buffer and describe it.
    fn put(&self, slot: u16, frame: &[u8], flags: u16) {
        assert!(self.region.copy_in(buf_off(slot), frame));
        self.ring.set_desc(
            slot,
            Desc {
                flags,
                region: 0,
                length: frame.len() as u32,
                offset: buf_off(slot),
            },
        );
    }
}

#[test]
fn server_receives_what_the_client_published_and_gives_slots_back() {
    let mut r = rig(Side::Server);
    let mut out = MbufBatch::with_burst(32);
    assert_eq!(r.rx.rx_burst(&mut out), 0, "nothing published yet");
    for s in 0..5u16 {
        r.put(s, &test_frame(s as u32, 60 + s as usize), 0);
    }
    r.ring.set_head(5, Ordering::Release);
    assert_eq!(r.rx.rx_burst(&mut out), 5);
    for (i, m) in out.iter().enumerate() {
        assert_eq!(m.data(), test_frame(i as u32, 60 + i).as_slice());
        assert_eq!(m.port(), 3);
    }
    assert_eq!(r.ring.tail(Ordering::Acquire), 5, "slots handed back");
    assert_eq!(r.counters.rx_packets.get(), 5);
    assert_eq!(
        r.counters.rx_bytes.get(),
        (60..65).map(|l: u64| l.max(64)).sum::<u64>()
    );
    // Wrap the 16-slot ring several times, in bursts limited by the batch.
    out.clear();
    let mut small = MbufBatch::with_burst(7);
    let mut next = 5u16;
    for round in 0..10u32 {
        for k in 0..12u16 {
            let s = next.wrapping_add(k);
            r.put(s, &test_frame(round * 100 + k as u32, 64), 0);
        }
        next = next.wrapping_add(12);
        r.ring.set_head(next, Ordering::Release);
        let mut got = 0;
        while got < 12 {
            let n = r.rx.rx_burst(&mut small);
            assert!(n > 0 && n <= 7);
            for (i, m) in small.iter().enumerate() {
                assert_eq!(
                    m.data(),
                    test_frame(round * 100 + (got + i) as u32, 64).as_slice()
                );
            }
            got += n;
            small.clear();
        }
    }
    drop(r.rx);
    assert_eq!(r.pool.in_use(), 0);
}

#[test]
fn garbage_from_the_peer_is_counted_never_followed() {
    let mut r = rig(Side::Server);
    let mut out = MbufBatch::with_burst(32);
    // A head more than a ring ahead.
    r.ring.set_head(100, Ordering::Release);
    assert_eq!(r.rx.rx_burst(&mut out), 0);
    assert_eq!(r.stats.bad_index.get(), 1);
    assert_eq!(r.ring.tail(Ordering::Acquire), 0, "nothing consumed");
    // Bad descriptors between good ones: region 9, offset past the end,
    // offset + length wrapping u32, a frame longer than an mbuf.
    r.put(0, &test_frame(0, 64), 0);
    let bad = [
        Desc {
            flags: 0,
            region: 9,
            length: 64,
            offset: 0,
        },
        Desc {
            flags: 0,
            region: 0,
            length: 64,
            offset: r.region.len() as u32 - 10,
        },
        Desc {
            flags: 0,
            region: 0,
            length: 64,
            offset: u32::MAX - 8,
        },
        Desc {
            flags: 0,
            region: 0,
            length: 60000,
            offset: 0,
        },
    ];
    for (i, d) in bad.iter().enumerate() {
        r.ring.set_desc(1 + i as u16, *d);
    }
    r.put(5, &test_frame(5, 64), 0);
    r.ring.set_head(6, Ordering::Release);
    assert_eq!(r.rx.rx_burst(&mut out), 2);
    assert_eq!(out.as_slice()[0].data(), test_frame(0, 64).as_slice());
    assert_eq!(out.as_slice()[1].data(), test_frame(5, 64).as_slice());
    assert_eq!(r.stats.bad_desc.get(), 4);
    assert_eq!(r.counters.rx_errors.get(), 4);
    assert_eq!(
        r.ring.tail(Ordering::Acquire),
        6,
        "bad slots are consumed too"
    );
    out.clear();
    // Random descriptors and indices: never a panic, never a stray access.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut head = 6u16;
    for _ in 0..2000 {
        for s in 0..16u16 {
            let w = rnd();
            r.ring.set_desc(
                s,
                Desc {
                    flags: (w & 1) as u16,
                    region: ((w >> 8) & 1) as u16,
                    length: (w >> 16) as u32 % 2048,
                    offset: (w >> 32) as u32 % (r.region.len() as u32 + 100),
                },
            );
        }
        head = if rnd() % 8 == 0 {
            rnd() as u16
        } else {
            head.wrapping_add((rnd() % 17) as u16)
        };
        r.ring.set_head(head, Ordering::Release);
        r.rx.rx_burst(&mut out);
        out.clear();
    }
    assert!(r.stats.bad_desc.get() > 0 && r.stats.bad_index.get() > 0);
    assert!(r.stats.chained_dropped.get() > 0);
    drop(r.rx);
    assert_eq!(r.pool.in_use(), 0, "no mbuf leaked on garbage");
}

#[test]
fn chained_frames_are_dropped_whole_even_across_bursts() {
    let mut r = rig(Side::Server);
    let mut out = MbufBatch::with_burst(2);
    r.put(0, &test_frame(0, 64), 0);
    r.put(1, &[1; 100], DESC_FLAG_NEXT);
    r.put(2, &[2; 100], DESC_FLAG_NEXT);
    r.put(3, &[3; 100], 0);
    r.put(4, &test_frame(4, 64), 0);
    r.put(5, &test_frame(5, 64), 0);
    r.ring.set_head(6, Ordering::Release);
    let mut got = Vec::new();
    for _ in 0..4 {
        r.rx.rx_burst(&mut out);
        while let Some(m) = out.pop_front() {
            got.push(m.data().to_vec());
        }
    }
    assert_eq!(
        got,
        vec![test_frame(0, 64), test_frame(4, 64), test_frame(5, 64)]
    );
    assert_eq!(r.stats.chained_dropped.get(), 1);
    // A chain cut by the producer's head: its tail, published later, is
    // still part of the dropped frame.
    r.put(6, &[6; 100], DESC_FLAG_NEXT);
    r.ring.set_head(7, Ordering::Release);
    assert_eq!(r.rx.rx_burst(&mut out), 0);
    r.put(7, &[7; 100], 0);
    r.put(8, &test_frame(8, 64), 0);
    r.ring.set_head(9, Ordering::Release);
    assert_eq!(r.rx.rx_burst(&mut out), 1);
    assert_eq!(out.as_slice()[0].data(), test_frame(8, 64).as_slice());
    assert_eq!(r.stats.chained_dropped.get(), 2);
}

#[test]
fn a_burst_whose_frames_change_region_is_received_whole_and_in_order() {
    // The receive loop takes a burst's region from its first descriptor;
    // frames of another region in the same burst go through the checked
    // loop, still in order.
    let mut r = rig(Side::Server);
    let (m1, _fd) = Mapping::new_memfd("memif-rig-r1", 4096).unwrap();
    let r1 = Region::of_mapping(Arc::new(m1));
    let quarantine = Arc::new(Quarantine::default());
    let link = Arc::new(QueueLink::new(quarantine));
    link.publish(Some(Arc::new(RingAttach {
        ring: r.ring.clone(),
        regions: Arc::from(vec![r.region.clone(), r1.clone()]),
        own_buffers: None,
        zero_copy: None,
        interrupt: None,
        life: Arc::new(ConnLife::default()),
    })));
    r.rx = MemifRx::new(
        link,
        Side::Server,
        3,
        0,
        r.pool.clone(),
        r.counters.clone(),
        r.stats.clone(),
    );
    let regions = [0u16, 0, 1, 0, 1, 1, 0];
    for (s, &reg) in regions.iter().enumerate() {
        let f = test_frame(s as u32, 60 + s * 9);
        let off = if reg == 0 {
            buf_off(s as u16)
        } else {
            512 * s as u32
        };
        let region = if reg == 0 { &r.region } else { &r1 };
        assert!(region.copy_in(off, &f));
        r.ring.set_desc(
            s as u16,
            Desc {
                flags: 0,
                region: reg,
                length: f.len() as u32,
                offset: off,
            },
        );
    }
    r.ring.set_head(regions.len() as u16, Ordering::Release);
    let mut out = MbufBatch::with_burst(32);
    assert_eq!(r.rx.rx_burst(&mut out), regions.len());
    for (s, m) in out.iter().enumerate() {
        assert_eq!(m.data(), test_frame(s as u32, 60 + s * 9).as_slice());
    }
    assert_eq!(r.stats.bad_desc.get(), 0);
    out.clear();
    drop(r.rx);
    assert_eq!(r.pool.in_use(), 0);
}

#[test]
fn client_receive_reposts_its_own_buffers() {
    let mut r = rig(Side::Client);
    let mut out = MbufBatch::with_burst(32);
    assert_eq!(r.rx.rx_burst(&mut out), 0);
    assert_eq!(r.ring.head(Ordering::Acquire), 16, "every slot posted");
    let d = r.ring.desc(3);
    assert_eq!((d.offset, d.length), (buf_off(3), BSIZE));
    // Play the server: fill three slots, one with a buffer outside the region.
    for s in 0..3u16 {
        let d = r.ring.desc(s);
        assert!(r.region.copy_in(d.offset, &test_frame(s as u32, 64)));
        r.ring.set_desc_head(s, 0, 0, 64);
    }
    r.ring.set_desc(
        1,
        Desc {
            flags: 0,
            region: 0,
            length: 64,
            offset: u32::MAX - 3,
        },
    );
    r.ring.set_tail(3, Ordering::Release);
    assert_eq!(r.rx.rx_burst(&mut out), 2);
    assert_eq!(r.stats.bad_desc.get(), 1);
    assert_eq!(
        r.ring.head(Ordering::Acquire),
        19,
        "consumed slots posted again"
    );
    assert_eq!(r.ring.desc(1).offset, buf_off(1), "our own offset restored");
    // A tail beyond what was posted.
    r.ring.set_tail(3 + 17, Ordering::Release);
    assert_eq!(r.rx.rx_burst(&mut out), 0);
    assert_eq!(r.stats.bad_index.get(), 1);
}

/// A transmit queue on a ring, with an eventfd for interrupts.
fn tx_rig(side: Side) -> (Region, RingView, MemifTx, OwnedFd, MemifQueueStatsRef) {
    let len = RingView::bytes(LOG2) + ((BSIZE as usize) << LOG2);
    let (m, _fd) = Mapping::new_memfd("memif-txrig", len).unwrap();
    let region = Region::of_mapping(Arc::new(m));
    let ring = RingView::new(&region, 0, LOG2).unwrap();
    let efd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
    )
    .unwrap();
    let ours = Arc::new(rustix::io::dup(&efd).unwrap());
    let link = Arc::new(QueueLink::new(Arc::new(Quarantine::default())));
    link.publish(Some(Arc::new(RingAttach {
        ring: ring.clone(),
        regions: Arc::from(vec![region.clone()]),
        own_buffers: (side == Side::Client).then(|| (buf_off(0), BSIZE)),
        zero_copy: None,
        interrupt: Some(ours),
        life: Arc::new(ConnLife::default()),
    })));
    let stats: MemifQueueStatsRef = Arc::new(CachePadded::new(MemifQueueStats::default()));
    let counters = Arc::new(CachePadded::new(QueueCounters::default()));
    let tx = MemifTx::new(link, side, counters, stats.clone());
    (region, ring, tx, efd, stats)
}

fn eventfd_count(fd: &OwnedFd) -> u64 {
    let mut b = [0u8; 8];
    match rustix::io::read(fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

#[test]
fn client_transmit_fills_its_slots_chains_long_frames_and_signals_when_asked() {
    let (region, ring, mut tx, efd, stats) = tx_rig(Side::Client);
    let p = pool("txrig", 64);
    let mut b = MbufBatch::with_burst(32);
    fill(&p, &mut b, 0, 20, 64);
    assert_eq!(tx.tx_burst(&mut b), 16, "a 16-slot ring takes 16");
    assert_eq!(b.len(), 4);
    assert_eq!(ring.head(Ordering::Acquire), 16);
    for s in 0..16u16 {
        let d = ring.desc(s);
        let mut f = vec![0; d.length as usize];
        assert!(region.copy_out(d.offset, &mut f));
        assert_eq!(f, test_frame(s as u32, 64));
    }
    assert_eq!(
        eventfd_count(&efd),
        1,
        "one interrupt per burst: the server did not mask them"
    );
    ring.set_flags(RING_FLAG_MASK_INT);
    ring.set_tail(16, Ordering::Release);
    assert_eq!(tx.tx_burst(&mut b), 4);
    assert_eq!(eventfd_count(&efd), 0, "masked: no interrupt");
    // A 600-byte frame over 256-byte buffers: three slots, chained.
    let mut m = p.alloc().unwrap();
    m.set_len(600);
    m.data_mut()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = i as u8);
    b.push(m).unwrap();
    assert_eq!(tx.tx_burst(&mut b), 1);
    let ds: Vec<Desc> = (20..23).map(|s| ring.desc(s)).collect();
    assert_eq!(
        ds.iter().map(|d| d.length).collect::<Vec<_>>(),
        vec![256, 256, 88]
    );
    assert_eq!(
        ds.iter().map(|d| d.flags).collect::<Vec<_>>(),
        vec![1, 1, 0]
    );
    assert_eq!(stats.chained_sent.get(), 1);
    // A tail the server moved past our head is garbage.
    ring.set_tail(60, Ordering::Release);
    fill(&p, &mut b, 0, 1, 64);
    assert_eq!(tx.tx_burst(&mut b), 0);
    assert_eq!(stats.bad_index.get(), 1);
    b.clear();
    drop(tx);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn client_transmit_wraps_its_ring_inside_a_burst() {
    // Slot, descriptor and buffer advance together and wrap together.
    let (region, ring, mut tx, _efd, _stats) = tx_rig(Side::Client);
    let p = pool("txwrap", 64);
    let mut b = MbufBatch::with_burst(32);
    fill(&p, &mut b, 0, 10, 64);
    assert_eq!(tx.tx_burst(&mut b), 10);
    ring.set_tail(10, Ordering::Release);
    let lens: Vec<usize> = (0..14).map(|i| 64 + i * 13).collect();
    for (i, &l) in lens.iter().enumerate() {
        fill(&p, &mut b, 100 + i as u32, 1, l);
    }
    assert_eq!(tx.tx_burst(&mut b), 14, "slots 10..24 wrap at 16");
    assert_eq!(ring.head(Ordering::Acquire), 24);
    for (i, &l) in lens.iter().enumerate() {
        let s = 10 + i as u16;
        let d = ring.desc(s);
        assert_eq!((d.offset, d.length, d.flags), (buf_off(s), l as u32, 0));
        let mut f = vec![0; l];
        assert!(region.copy_out(d.offset, &mut f));
        assert_eq!(f, test_frame(100 + i as u32, l), "slot {s}");
    }
    drop(tx);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn client_transmit_frees_every_mbuf_it_took_sent_or_dropped_of_any_pool() {
    // The fast loop's frames (two pools among them) are freed by address
    // range, the checked loop's (an empty frame dropped, a long one sent in
    // three chained slots, short ones after it) with a header read each:
    // both pools whole right after the burst, every frame where it belongs.
    let (region, ring, mut tx, _efd, _stats) = tx_rig(Side::Client);
    let (p, q) = (pool("txfree-p", 32), pool("txfree-q", 32));
    let mut b = MbufBatch::with_burst(32);
    fill(&p, &mut b, 0, 2, 64);
    fill(&q, &mut b, 2, 1, 64);
    fill(&p, &mut b, 3, 1, 64);
    b.push(p.alloc().unwrap()).unwrap(); // empty: dropped and counted
    fill(&q, &mut b, 4, 1, 600);
    fill(&p, &mut b, 5, 2, 64);
    assert_eq!(
        tx.tx_burst(&mut b),
        8,
        "every frame taken, the empty one too"
    );
    assert!(b.is_empty());
    assert_eq!((p.in_use(), q.in_use()), (0, 0), "freed once each, at once");
    assert_eq!(ring.head(Ordering::Acquire), 4 + 3 + 2);
    let frame = |s: u16| {
        let d = ring.desc(s);
        let mut f = vec![0; d.length as usize];
        assert!(region.copy_out(d.offset, &mut f));
        (d.flags, f)
    };
    for (s, id) in [(0u16, 0u32), (1, 1), (2, 2), (3, 3), (7, 5), (8, 6)] {
        assert_eq!(frame(s), (0, test_frame(id, 64)), "slot {s}");
    }
    let mut long = Vec::new();
    for s in 4..7u16 {
        let (flags, f) = frame(s);
        assert_eq!(flags, if s < 6 { DESC_FLAG_NEXT } else { 0 });
        long.extend(f);
    }
    assert_eq!(long, test_frame(4, 600));
    drop(tx);
    assert_eq!((p.in_use(), q.in_use()), (0, 0));
}

#[test]
fn server_transmit_writes_only_into_buffers_inside_the_clients_regions() {
    let (region, ring, mut tx, _efd, stats) = tx_rig(Side::Server);
    ring.set_flags(RING_FLAG_MASK_INT);
    // The client posts 4 slots: good, outside the region, good but short
    // (100 bytes: a 64-byte frame fits), and 32 bytes (a 64-byte frame must
    // chain into the next slot, which the client did not post).
    let posts = [
        (buf_off(0), BSIZE),
        (region.len() as u32 - 8, BSIZE),
        (buf_off(2), 100),
        (buf_off(3), 32),
    ];
    for (s, (off, len)) in posts.iter().enumerate() {
        ring.set_desc(
            s as u16,
            Desc {
                flags: 0,
                region: 0,
                length: *len,
                offset: *off,
            },
        );
    }
    ring.set_head(4, Ordering::Release);
    let p = pool("txsrv", 64);
    let mut b = MbufBatch::with_burst(32);
    fill(&p, &mut b, 0, 4, 64);
    let taken = tx.tx_burst(&mut b);
    assert_eq!(
        taken, 3,
        "good, dropped (bad buffer), good; the last waits for a slot"
    );
    assert_eq!(ring.tail(Ordering::Acquire), 3);
    assert_eq!(ring.desc(1).length, 0, "the bad slot goes back empty");
    assert_eq!(stats.bad_desc.get(), 1);
    let mut f = vec![0; 64];
    assert!(region.copy_out(buf_off(2), &mut f));
    assert_eq!(f, test_frame(2, 64));
    // A head more than a ring ahead.
    ring.set_head(3 + 17, Ordering::Release);
    assert_eq!(tx.tx_burst(&mut b), 0);
    assert_eq!(stats.bad_index.get(), 1);
    b.clear();
    drop(tx);
    assert_eq!(p.in_use(), 0);
}

// ---------------------------------------------------------------------------
// Pairs of ports over a real socket.

/// A memif port in a thread of its own that sends back, on the same queue,
/// everything it receives: the far end of a loopback for the suite.
struct Reflector {
    stop: Arc<AtomicBool>,
    t: Option<JoinHandle<()>>,
}

impl Reflector {
    fn start(opts: MemifOptions, nq: u16) -> Reflector {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let ready = Arc::new(AtomicBool::new(false));
        let r = ready.clone();
        let t = std::thread::spawn(move || {
            let p = pool("reflector", 4096);
            let mut port = MemifPort::new("net_memif_reflector", opts, 9).unwrap();
            port.configure(&conf(9, &p, nq)).unwrap();
            let mut q = port.start().unwrap();
            r.store(true, Ordering::Release);
            let mut b = MbufBatch::with_burst(32);
            while !s.load(Ordering::Relaxed) {
                let mut idle = true;
                for i in 0..nq as usize {
                    if q.rx[i].rx_burst(&mut b) > 0 {
                        idle = false;
                        let deadline = Instant::now() + Duration::from_millis(200);
                        while !b.is_empty() && Instant::now() < deadline {
                            q.tx[i].tx_burst(&mut b);
                        }
                        b.clear();
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            drop(q);
            port.stop().unwrap();
            drop(port);
            assert_eq!(p.in_use(), 0, "reflector leaked mbufs");
        });
        while !ready.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        Reflector { stop, t: Some(t) }
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.t.take()
            && let Err(e) = t.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn client_port_passes_the_conformance_suite_against_a_reflecting_server() {
    let path = sock_path("conf-c");
    let _server = Reflector::start(opts(Role::Server, &path), 2);
    let mut n = 0;
    testing::run_conformance(
        "net_memif (client)",
        &mut |id| {
            n += 1;
            Ok(Box::new(MemifPort::new(
                &format!("net_memif{n}"),
                opts(Role::Client, &path),
                id,
            )?) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
}

#[test]
fn server_port_passes_the_conformance_suite_against_a_reflecting_client() {
    let path = sock_path("conf-s");
    let mut reflector = None;
    let mut n = 0;
    testing::run_conformance(
        "net_memif (server)",
        &mut |id| {
            n += 1;
            // One server at a time on the socket: the first is dropped
            // before the suite makes the second.
            let port = MemifPort::new(&format!("net_memif{n}"), opts(Role::Server, &path), id)?;
            reflector.get_or_insert_with(|| Reflector::start(opts(Role::Client, &path), 2));
            Ok(Box::new(port) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
}

/// Send `n` tagged frames from `tx` and receive them on `rx`, in order.
fn exchange(
    tx: &mut dyn TxQueue,
    rx: &mut dyn RxQueue,
    p: &Mempool,
    first: u32,
    n: usize,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut b = MbufBatch::with_burst(32);
    let mut r = MbufBatch::with_burst(32);
    let mut next = first;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < n && Instant::now() < deadline {
        if b.is_empty() && (next - first) < n as u32 {
            let k = (n as u32 - (next - first)).min(32);
            fill(p, &mut b, next, k as usize, 64);
            next += k;
        }
        tx.tx_burst(&mut b);
        rx.rx_burst(&mut r);
        while let Some(m) = r.pop_front() {
            got.push(m.data().to_vec());
        }
    }
    got
}

fn started(
    name: &str,
    o: MemifOptions,
    p: &Mempool,
    nq: u16,
) -> (MemifPort, nicpoll::port::PortQueues) {
    let mut port = MemifPort::new(name, o, 0).unwrap();
    port.configure(&conf(0, p, nq)).unwrap();
    let q = port.start().unwrap();
    (port, q)
}

#[test]
fn a_wrong_secret_is_refused_with_the_reason_on_both_sides() {
    let path = sock_path("secret");
    let p = pool("secret", 4096);
    let mut so = opts(Role::Server, &path);
    so.secret = "right".into();
    let (server, _sq) = started("net_memif0", so, &p, 1);
    let mut co = opts(Role::Client, &path);
    co.secret = "wrong".into();
    let (client, _cq) = started("net_memif1", co, &p, 1);
    assert!(!client.wait_connected(Duration::from_secs(2)));
    let e = client.status().last_error.unwrap_or_default();
    assert!(
        e.contains("Incorrect secret") && e.contains("secret= must be the same"),
        "{e}"
    );
    let e = server.status().last_error.unwrap_or_default();
    assert!(e.contains("Incorrect secret"), "{e}");
    assert!(!server.link().up && !client.link().up);
    let refused = |p: &MemifPort| {
        p.xstats()
            .iter()
            .find(|(k, _)| k == "memif_refused")
            .map(|(_, v)| *v)
            .unwrap()
    };
    assert!(refused(&server) >= 1 && refused(&client) >= 1);
    // No secret at all where one is required.
    let (c2, _q2) = started("net_memif2", opts(Role::Client, &path), &p, 1);
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(3);
    while c2.status().last_error.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        c2.status()
            .last_error
            .unwrap_or_default()
            .contains("Secret required")
    );
}

#[test]
fn a_mismatched_id_is_refused_and_the_right_one_connects() {
    let path = sock_path("id");
    let p = pool("id", 4096);
    let mut so = opts(Role::Server, &path);
    so.id = 5;
    let (_server, _sq) = started("net_memif0", so, &p, 1);
    let mut co = opts(Role::Client, &path);
    co.id = 6;
    let (client, cq) = started("net_memif1", co.clone(), &p, 1);
    assert!(!client.wait_connected(Duration::from_secs(1)));
    let e = client.status().last_error.unwrap_or_default();
    assert!(e.contains("ID not found") && e.contains("id=6"), "{e}");
    drop(cq);
    drop(client);
    co.id = 5;
    let (client, _cq) = started("net_memif1", co, &p, 1);
    assert!(
        client.wait_connected(Duration::from_secs(5)),
        "{:?}",
        client.status()
    );
    // Two servers with one id on one socket are refused at creation.
    let mut dup = opts(Role::Server, &path);
    dup.id = 5;
    let e = MemifPort::new("net_memif9", dup, 9)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already a server with id=5"), "{e}");
}

#[test]
fn several_queue_pairs_keep_their_traffic_apart() {
    let path = sock_path("mq");
    let p = pool("mq", 8192);
    let (_s, mut sq) = started("net_memif0", opts(Role::Server, &path), &p, 3);
    let (client, mut cq) = started("net_memif1", opts(Role::Client, &path), &p, 3);
    assert!(client.wait_connected(Duration::from_secs(5)));
    assert_eq!(client.status().rings, Some((3, 3, 10)));
    for q in 0..3usize {
        let tag = 1000 * (q as u32 + 1);
        let got = exchange(cq.tx[q].as_mut(), sq.rx[q].as_mut(), &p, tag, 50);
        assert_eq!(got.len(), 50, "queue {q}, client to server");
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, f)| *f == test_frame(tag + i as u32, 64))
        );
        let got = exchange(sq.tx[q].as_mut(), cq.rx[q].as_mut(), &p, tag + 500, 50);
        assert_eq!(got.len(), 50, "queue {q}, server to client");
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, f)| *f == test_frame(tag + 500 + i as u32, 64))
        );
    }
    // Nothing crossed to another queue.
    let mut b = MbufBatch::with_burst(32);
    for q in 0..3 {
        assert_eq!(sq.rx[q].rx_burst(&mut b) + cq.rx[q].rx_burst(&mut b), 0);
    }
}

#[test]
fn the_client_reconnects_when_the_server_restarts_and_the_server_takes_the_next_client() {
    let path = sock_path("restart");
    let p = pool("restart", 8192);
    let (client, mut cq) = started("net_memif1", opts(Role::Client, &path), &p, 1);
    assert!(
        !client.wait_connected(Duration::from_millis(300)),
        "no server yet"
    );
    for round in 0..2u32 {
        let (server, mut sq) = started("net_memif0", opts(Role::Server, &path), &p, 1);
        assert!(
            client.wait_connected(Duration::from_secs(5)),
            "round {round}"
        );
        let got = exchange(cq.tx[0].as_mut(), sq.rx[0].as_mut(), &p, round * 100, 40);
        assert_eq!(got.len(), 40, "round {round}");
        // The server goes away mid-connection.
        drop(sq);
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(3);
        while client.link().up && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            !client.link().up,
            "round {round}: the client saw the server go"
        );
        let mut b = MbufBatch::with_burst(32);
        fill(&p, &mut b, 0, 8, 64);
        // Transmit takes nothing while disconnected (once the queue noticed).
        let _ = cq.tx[0].tx_burst(&mut b);
        assert_eq!(cq.tx[0].tx_burst(&mut b), 0);
        b.clear();
    }
    assert!(
        !std::path::Path::new(&path).exists(),
        "the last server removed its socket"
    );
    // The server side: one client after another.
    let (server, mut sq) = started("net_memif0", opts(Role::Server, &path), &p, 1);
    drop(cq);
    drop(client);
    for round in 0..3u32 {
        let (client, mut cq) = started("net_memif1", opts(Role::Client, &path), &p, 1);
        assert!(
            client.wait_connected(Duration::from_secs(5)),
            "client {round}"
        );
        assert!(server.wait_connected(Duration::from_secs(5)));
        let got = exchange(sq.tx[0].as_mut(), cq.rx[0].as_mut(), &p, round * 7, 30);
        assert_eq!(got.len(), 30, "client {round}");
        drop(cq);
        drop(client);
        let deadline = Instant::now() + Duration::from_secs(3);
        while server.link().up && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let connects = server
        .xstats()
        .into_iter()
        .find(|(k, _)| k == "memif_connects")
        .unwrap()
        .1;
    assert_eq!(connects, 3);
    drop(sq);
    drop(server);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn a_client_that_disappears_mid_traffic_leaves_a_clean_server() {
    let path = sock_path("vanish");
    let p = pool("vanish", 8192);
    let (server, mut sq) = started("net_memif0", opts(Role::Server, &path), &p, 1);
    let cp = pool("vanish-client", 4096);
    let (client, mut cq) = started("net_memif1", opts(Role::Client, &path), &cp, 1);
    assert!(client.wait_connected(Duration::from_secs(5)));
    // Traffic both ways, then the client goes without a word (its socket
    // closes as a killed process's would: no DISCONNECT is sent by a drop
    // of the fd, the port's drop sends one; both end the connection).
    let mut b = MbufBatch::with_burst(32);
    let mut r = MbufBatch::with_burst(32);
    for i in 0..50 {
        fill(&cp, &mut b, i * 32, 32, 64);
        cq.tx[0].tx_burst(&mut b);
        b.clear();
        fill(&p, &mut b, i * 32, 32, 64);
        sq.tx[0].tx_burst(&mut b);
        b.clear();
        sq.rx[0].rx_burst(&mut r);
        r.clear();
    }
    drop(cq);
    drop(client);
    assert_eq!(cp.in_use(), 0, "the vanished client's pool is whole");
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.link().up && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!server.link().up);
    // The server's queues keep working (idle) and nothing is lost track of.
    for _ in 0..10 {
        fill(&p, &mut b, 0, 8, 64);
        sq.tx[0].tx_burst(&mut b);
        b.clear();
        sq.rx[0].rx_burst(&mut r);
        r.clear();
    }
    let e = server.status().last_error.unwrap_or_default();
    assert!(e.contains("disconnected"), "{e}");
    drop(sq);
    drop(server);
    assert_eq!(p.in_use(), 0);
}

fn hugepage_pool(name: &str, n: u32) -> Option<(DmaMemory, Mempool)> {
    let mem = DmaMemory::new(MemoryConfig {
        file_prefix: format!("nicpoll-memif-test-{}-", std::process::id()),
        ..MemoryConfig::default()
    })
    .ok()?;
    let p = Mempool::new(&mem, &MempoolConfig::new(name, n)).ok()?;
    Some((mem, p))
}

#[test]
fn zero_copy_client_shares_its_mbufs_and_gets_them_all_back() {
    // 4096 mbufs of 2 KiB: 4 hugepages of 2 MiB.
    if nicpoll_testkit::skip_if_missing(&[
        nicpoll_testkit::Need::Hugetlbfs,
        nicpoll_testkit::Need::FreeHugepages(8),
    ]) {
        return;
    }
    let path = sock_path("zc");
    let sp = pool("zc-server", 8192);
    let (_mem, cp) = hugepage_pool("zc-client", 4096).expect("hugepage pool");
    let (_server, mut sq) = started("net_memif0", opts(Role::Server, &path), &sp, 1);
    let mut co = opts(Role::Client, &path);
    co.zero_copy = true;
    co.rsize = 8;
    let (client, mut cq) = started("net_memif1", co, &cp, 1);
    assert!(client.wait_connected(Duration::from_secs(5)));
    assert_eq!(cq.tx[0].burst_mode(), Some("zero-copy"));
    for round in 0..4u32 {
        let got = exchange(cq.tx[0].as_mut(), sq.rx[0].as_mut(), &cp, round * 1000, 700);
        assert_eq!(got.len(), 700);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, f)| *f == test_frame(round * 1000 + i as u32, 64))
        );
        let got = exchange(sq.tx[0].as_mut(), cq.rx[0].as_mut(), &sp, round * 1000, 700);
        assert_eq!(got.len(), 700);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, f)| *f == test_frame(round * 1000 + i as u32, 64))
        );
    }
    // Frames from another pool are copied into shared mbufs.
    let got = exchange(cq.tx[0].as_mut(), sq.rx[0].as_mut(), &sp, 77, 10);
    assert_eq!(got.len(), 10);
    // A plain-memory pool is refused for zero copy, with the fix.
    let mut bad = MemifPort::new(
        "net_memif2",
        {
            let mut o = opts(Role::Client, &path);
            o.zero_copy = true;
            o
        },
        2,
    )
    .unwrap();
    let e = bad.configure(&conf(2, &sp, 1)).unwrap_err().to_string();
    assert!(
        e.contains("zero-copy=yes") && e.contains("--no-huge"),
        "{e}"
    );
    drop(cq);
    drop(client);
    assert_eq!(cp.in_use(), 0, "every posted and in-flight mbuf came back");
}
