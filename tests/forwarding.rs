//! The core's forwarding loop with real drivers: a txonly lcore sends through a
//! cross-connected ring pair to an rxonly lcore, which measures latency and
//! sequence; io forwarding between null ports; every mbuf back at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use nicpoll::fwd::{
    EngineConfig, FwdCounters, FwdMode, LatencyRecorder, LcoreStream, LcoreWork, StreamInfo,
    StreamSpec, run_lcore,
};
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::{DevArgs, MacAddr, PortConf, PortQueues};
use nicpoll::{Port, lcore};
use nicpoll_ring::{RingBus, RingPort};

fn conf(id: u16, pool: &Mempool) -> PortConf {
    PortConf {
        port_id: id,
        nb_rxq: 1,
        nb_txq: 1,
        nb_rxd: 4096,
        nb_txd: 4096,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    }
}

/// Two ring ports crossed over (what port 0 sends, port 1 receives and the
/// other way), each with one queue pair on `pool`, started: their bus, the
/// ports and their queues.
fn started_ring_pair(pool: &Mempool) -> (RingBus, [RingPort; 2], PortQueues, PortQueues) {
    let mut bus = RingBus::new();
    let mut a = bus
        .create(&DevArgs::parse("net_ring0,peer=net_ring1").unwrap(), 0)
        .unwrap();
    let mut b = bus
        .create(&DevArgs::parse("net_ring1,peer=net_ring0").unwrap(), 1)
        .unwrap();
    bus.connect(&mut [&mut a, &mut b]).unwrap();
    a.configure(&conf(0, pool)).unwrap();
    b.configure(&conf(1, pool)).unwrap();
    let qa = a.start().unwrap();
    let qb = b.start().unwrap();
    (bus, [a, b], qa, qb)
}

fn spawn_lcore(
    id: u32,
    mut work: LcoreWork,
    cfg: EngineConfig,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<LcoreWork> {
    std::thread::spawn(move || {
        let _g = lcore::register(id).unwrap();
        run_lcore(&mut work, &cfg, 0, &stop);
        work
    })
}

#[test]
fn txonly_to_rxonly_over_a_ring_pair_measures_latency_without_loss() {
    let mem = DmaMemory::plain();
    let pool = Mempool::new(&mem, &MempoolConfig::new("fwd-latency", 16384)).unwrap();
    let (bus, [a, b], mut qa, mut qb) = started_ring_pair(&pool);

    let spec = StreamSpec {
        rx_port: 0,
        rx_queue: 0,
        tx_port: 0,
        tx_queue: 0,
    };
    let info = |spec: StreamSpec| StreamInfo {
        id: 7,
        spec,
        tx_mac: MacAddr::local(9),
        peer_mac: MacAddr::local(1),
    };
    let tx_counters = Arc::new(CachePadded::new(FwdCounters::default()));
    let rx_counters = Arc::new(CachePadded::new(FwdCounters::default()));
    // The generator sends on port 0 (to port 1) and never receives: give it
    // port 0's receive queue, which stays empty.
    let gen_work = LcoreWork {
        lcore: 1,
        rx: vec![qa.rx.remove(0)],
        tx: vec![qa.tx.remove(0)],
        streams: vec![LcoreStream {
            info: info(spec),
            rx: 0,
            tx: 0,
            counters: tx_counters.clone(),
        }],
        pool: pool.clone(),
        latency: LatencyRecorder::new(),
        latency_live: None,
    };
    let recv_spec = StreamSpec {
        rx_port: 1,
        rx_queue: 0,
        tx_port: 1,
        tx_queue: 0,
    };
    let recv_work = LcoreWork {
        lcore: 2,
        rx: vec![qb.rx.remove(0)],
        tx: vec![qb.tx.remove(0)],
        streams: vec![LcoreStream {
            info: info(recv_spec),
            rx: 0,
            tx: 0,
            counters: rx_counters.clone(),
        }],
        pool: pool.clone(),
        latency: LatencyRecorder::new(),
        latency_live: None,
    };
    let base = EngineConfig::default();
    let stop_rx = Arc::new(AtomicBool::new(false));
    let stop_tx = Arc::new(AtomicBool::new(false));
    let receiver = spawn_lcore(
        2,
        recv_work,
        EngineConfig {
            mode: FwdMode::RxOnly,
            ..base.clone()
        },
        stop_rx.clone(),
    );
    // Retry with no delay: the generator never drops, so the receiver must see
    // every sequence number exactly once.
    let mut gen_cfg = EngineConfig {
        mode: FwdMode::TxOnly,
        ..base
    };
    gen_cfg.retry.enabled = true;
    gen_cfg.retry.count = u32::MAX;
    gen_cfg.retry.delay_us = 0;
    let generator = spawn_lcore(1, gen_work, gen_cfg, stop_tx.clone());
    std::thread::sleep(Duration::from_millis(300));
    stop_tx.store(true, Ordering::Relaxed);
    let gen_done = generator.join().unwrap();
    // Let the receiver drain what is in flight.
    let sent = tx_counters.tx_packets.get();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rx_counters.rx_packets.get() < sent && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop_rx.store(true, Ordering::Relaxed);
    let recv_done = receiver.join().unwrap();

    assert!(sent > 1000, "the generator sent only {sent}");
    assert_eq!(tx_counters.fwd_dropped.get(), 0);
    assert_eq!(
        rx_counters.rx_packets.get(),
        sent,
        "every generated packet arrives"
    );
    let lat = recv_done.latency.summary();
    assert_eq!(lat.samples, sent, "every packet carried a stamp");
    assert_eq!(lat.lost, 0);
    assert_eq!(lat.reordered, 0);
    assert!(
        lat.p50_ns > 0 && lat.p50_ns <= lat.p99_ns && lat.p99_ns <= lat.max_ns,
        "{lat:?}"
    );
    assert!(lat.max_ns < 5_000_000_000, "{lat:?}");
    assert_eq!(a.stats().opackets, sent);
    assert_eq!(b.stats().ipackets, sent);
    drop((gen_done, recv_done, qa, qb));
    drop((a, b, bus));
    assert_eq!(pool.in_use(), 0, "every mbuf back in the pool");
}

#[test]
fn io_between_null_ports_forwards_everything_it_receives() {
    let mem = DmaMemory::plain();
    let pool = Mempool::new(&mem, &MempoolConfig::new("fwd-null", 4096)).unwrap();
    let mut ports: Vec<Box<dyn Port>> = (0..2)
        .map(|i| {
            Box::new(
                nicpoll_null::NullPort::from_devargs(
                    &DevArgs::parse(&format!("net_null{i}")).unwrap(),
                    i,
                )
                .unwrap(),
            ) as Box<dyn Port>
        })
        .collect();
    let mut queues = Vec::new();
    for (i, p) in ports.iter_mut().enumerate() {
        p.configure(&conf(i as u16, &pool)).unwrap();
        queues.push(p.start().unwrap());
    }
    let counters: Vec<_> = (0..2)
        .map(|_| Arc::new(CachePadded::new(FwdCounters::default())))
        .collect();
    let streams = (0..2u16)
        .map(|i| LcoreStream {
            info: StreamInfo {
                id: i,
                spec: StreamSpec {
                    rx_port: i,
                    rx_queue: 0,
                    tx_port: 1 - i,
                    tx_queue: 0,
                },
                tx_mac: MacAddr::local(1 - i),
                peer_mac: MacAddr::local(1 - i),
            },
            rx: i as usize,
            tx: (1 - i) as usize,
            counters: counters[i as usize].clone(),
        })
        .collect();
    let (rx0, rx1) = (queues[0].rx.remove(0), queues[1].rx.remove(0));
    let (tx0, tx1) = (queues[0].tx.remove(0), queues[1].tx.remove(0));
    let work = LcoreWork {
        lcore: 3,
        rx: vec![rx0, rx1],
        tx: vec![tx0, tx1],
        streams,
        pool: pool.clone(),
        latency: LatencyRecorder::new(),
        latency_live: None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let h = spawn_lcore(3, work, EngineConfig::default(), stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    drop(h.join().unwrap());
    for (i, c) in counters.iter().enumerate() {
        let s = c.snapshot();
        assert!(s.rx_packets > 0);
        assert_eq!(
            s.rx_packets, s.tx_packets,
            "stream {i}: io sends what it receives"
        );
        assert_eq!(s.fwd_dropped, 0);
    }
    assert_eq!(ports[0].stats().ipackets, ports[1].stats().opackets);
    drop(queues);
    drop(ports);
    assert_eq!(pool.in_use(), 0);
}

/// Packets a burst histogram accounts for: sum of size x calls.
fn packets_in(h: &nicpoll::fwd::BurstHistogram) -> u64 {
    h.bins.iter().enumerate().map(|(n, c)| n as u64 * c).sum()
}

#[test]
fn burst_stats_over_a_ring_pair_account_for_what_the_ports_counted() {
    let mem = DmaMemory::plain();
    let pool = Mempool::new(&mem, &MempoolConfig::new("fwd-bursts", 16384)).unwrap();
    let (bus, [a, b], mut qa, mut qb) = started_ring_pair(&pool);
    let stream = |id: u16, port: u16, counters| LcoreStream {
        info: StreamInfo {
            id,
            spec: StreamSpec {
                rx_port: port,
                rx_queue: 0,
                tx_port: port,
                tx_queue: 0,
            },
            tx_mac: MacAddr::local(9),
            peer_mac: MacAddr::local(1),
        },
        rx: 0,
        tx: 0,
        counters,
    };
    let gen_counters = Arc::new(CachePadded::new(FwdCounters::default()));
    let recv_counters = Arc::new(CachePadded::new(FwdCounters::default()));
    let work = |lcore, q: &mut PortQueues, s| LcoreWork {
        lcore,
        rx: vec![q.rx.remove(0)],
        tx: vec![q.tx.remove(0)],
        streams: vec![s],
        pool: pool.clone(),
        latency: LatencyRecorder::new(),
        latency_live: None,
    };
    let gen_work = work(4, &mut qa, stream(0, 0, gen_counters.clone()));
    let recv_work = work(5, &mut qb, stream(1, 1, recv_counters.clone()));
    let cfg = EngineConfig {
        record_burst_stats: true,
        burst: 32,
        ..EngineConfig::default()
    };
    let (stop_rx, stop_tx) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    // Lcore ids are claimed process-wide: not those of the other tests,
    // which run at the same time.
    let receiver = spawn_lcore(
        5,
        recv_work,
        EngineConfig {
            mode: FwdMode::RxOnly,
            ..cfg.clone()
        },
        stop_rx.clone(),
    );
    let generator = spawn_lcore(
        4,
        gen_work,
        EngineConfig {
            mode: FwdMode::TxOnly,
            ..cfg
        },
        stop_tx.clone(),
    );
    std::thread::sleep(Duration::from_millis(200));
    stop_tx.store(true, Ordering::Relaxed);
    let gen_done = generator.join().unwrap();
    let sent = a.stats().opackets;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.stats().ipackets < sent && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The ring is empty now: the receiver keeps polling, and must count those
    // empty polls.
    std::thread::sleep(Duration::from_millis(20));
    stop_rx.store(true, Ordering::Relaxed);
    let recv_done = receiver.join().unwrap();

    let (gen_rx, gen_tx) = gen_counters.bursts.snapshot();
    let (recv_rx, recv_tx) = recv_counters.bursts.snapshot();
    assert!(sent > 1000, "the generator sent only {sent}");
    assert_eq!(
        packets_in(&gen_tx),
        sent,
        "the transmit histogram accounts for every packet net_ring counted"
    );
    assert_eq!(gen_rx.total(), 0, "txonly never receives");
    assert_eq!(packets_in(&recv_rx), b.stats().ipackets);
    assert_eq!(b.stats().ipackets, sent);
    assert!(
        recv_rx.bins[0] > 0,
        "empty polls counted: {:?}",
        &recv_rx.bins[..4]
    );
    assert_eq!(
        recv_rx.bins[33..].iter().sum::<u64>(),
        0,
        "no call above the burst"
    );
    assert_eq!(recv_tx.total(), 0, "rxonly never transmits");
    drop((gen_done, recv_done, qa, qb));
    drop((a, b, bus));
    assert_eq!(pool.in_use(), 0, "every mbuf back in the pool");
}
