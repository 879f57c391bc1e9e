//! The iavf PMD end to end against the simulated VF and PF (`sim`): bring-up
//! and every virtchnl exchange, traffic both ways between two VFs, ring wrap,
//! full rings, RSS, resets in the middle of traffic, each fault knob, a kernel
//! veth pair, the port conformance suite, and every mbuf back in its pool.
#![cfg(feature = "sim")]

mod pmd_util;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::mbuf::{MbufBatch, flags};
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::MacAddr;
use nicpoll::port::testing::{self, Delivery, VethPair};
use nicpoll::{Port, RxQueue, TxQueue};
use nicpoll_iavf::ring::Loops;
use nicpoll_iavf::sim::{EthStats, ResetTiming, RxCorruption, SimConfig, SimVf, Wire};
use nicpoll_iavf::virtchnl::caps;
use nicpoll_iavf::{DmaMap, IavfOptions, IavfPort, MaxSimd};
use pmd_util::{
    MAC_A, MAC_B, Rig, SimPort, conf, mbuf, opts, pool, resume_queues, rig, udp_frame, wait_for,
};

fn sim(name: &str, mac: MacAddr, wire: Wire) -> SimConfig {
    SimConfig {
        name: name.to_string(),
        mac,
        wire,
        ..SimConfig::default()
    }
}

/// Two started simulated VFs, A (`MAC_A`) and B (`MAC_B`), each port with
/// one queue pair of `ring` descriptors from `pool`.
struct Pair {
    qa: nicpoll::port::PortQueues,
    qb: nicpoll::port::PortQueues,
    pa: SimPort,
    pb: SimPort,
    va: Arc<SimVf>,
    vb: Arc<SimVf>,
}

/// [`Pair`] named `name-a`/`name-b`, wired by `Wire::Peer(link)` as testpmd's
/// `peer=` does, or, with no link, by `SimVf::connect` (what manual mode and
/// the benchmark use).
fn started_pair(
    name: &str,
    link: Option<&str>,
    mem: &Arc<DmaMemory>,
    pool: &Mempool,
    ring: u16,
    o: IavfOptions,
) -> Pair {
    let wire = || link.map_or(Wire::None, |l| Wire::Peer(l.into()));
    let a = rig(sim(&format!("{name}-a"), MAC_A, wire()), mem, o.clone());
    let b = rig(sim(&format!("{name}-b"), MAC_B, wire()), mem, o);
    if link.is_none() {
        SimVf::connect(&a.vf, &b.vf);
    }
    let (mut pa, mut pb) = (a.port, b.port);
    pa.configure(&conf(pool, 1, ring)).unwrap();
    pb.configure(&conf(pool, 1, ring)).unwrap();
    let qa = pa.start().unwrap();
    let qb = pb.start().unwrap();
    Pair {
        qa,
        qb,
        pa,
        pb,
        va: a.vf,
        vb: b.vf,
    }
}

fn tag_of(f: &[u8]) -> u32 {
    u32::from_be_bytes(f[42..46].try_into().unwrap())
}

fn push(pool: &Mempool, b: &mut MbufBatch, f: &[u8]) {
    b.push(mbuf(pool, f)).unwrap();
}

/// Send `frames` on `tx` (at most `window` unanswered) and receive on every
/// queue of `rxs` until `expect` arrived; returns (queue, frame, rss hash).
fn exchange(
    pool: &Mempool,
    tx: &mut dyn TxQueue,
    rxs: &mut [Box<dyn RxQueue>],
    frames: &[Vec<u8>],
    expect: usize,
    window: usize,
) -> Vec<(u16, Vec<u8>, Option<u32>)> {
    let mut out = Vec::new();
    let mut next = 0;
    let mut b = MbufBatch::with_burst(32);
    let mut r = MbufBatch::with_burst(64);
    let t = Instant::now();
    while out.len() < expect || !b.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} of {expect} frames arrived ({next} sent)",
            out.len()
        );
        while b.len() < 32 && next < frames.len() && next < out.len() + window {
            push(pool, &mut b, &frames[next]);
            next += 1;
        }
        tx.tx_burst(&mut b);
        for rq in rxs.iter_mut() {
            rq.rx_burst(&mut r);
            while let Some(m) = r.pop_front() {
                let h = (m.ol_flags() & flags::RX_RSS_HASH != 0).then(|| m.rss_hash());
                out.push((m.queue(), nicpoll::port::testing::packet_bytes(&m), h));
            }
        }
        if out.len() >= expect && next == frames.len() {
            break;
        }
    }
    b.clear();
    out
}

fn xstats(p: &dyn Port) -> HashMap<String, u64> {
    p.xstats().into_iter().collect()
}

/// [`started_pair`] of 256-descriptor rings, not wired by a link, with both
/// devices in manual mode (`SimVf::set_manual`): nothing moves until stepped.
/// No watchdog: it would talk to a parked PF.
fn manual_pair(name: &str, mem: &Arc<DmaMemory>, pool: &Mempool) -> Pair {
    let o = IavfOptions {
        watchdog: None,
        ..opts()
    };
    let pair = started_pair(name, None, mem, pool, 256, o);
    pair.va.set_manual(true);
    pair.vb.set_manual(true);
    pair
}

/// Poll every queue until the port has enabled them all again after a reset.
fn resume(port: &SimPort, q: &mut nicpoll::port::PortQueues) {
    resume_queues(port, q, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------

#[test]
fn bring_up_and_every_virtchnl_exchange() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "bringup", 4096);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("bringup", MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, opts());
    wait_for("the PF's status", Duration::from_secs(1), || {
        vf.status().mac_filters.contains(&MAC_A)
    });
    let s = vf.status();
    assert_eq!(s.version, (1, 1), "VIRTCHNL_OP_VERSION 1.1");
    assert_eq!(
        s.requested_caps,
        caps::REQUESTED,
        "GET_VF_RESOURCES asks only for what we implement"
    );
    assert_eq!(s.requested_caps & caps::RX_FLEX_DESC, 0);
    assert!(s.active);
    assert!(
        s.mac_filters.contains(&MAC_A),
        "ADD_ETH_ADDR: {:?}",
        s.mac_filters
    );
    assert_eq!(port.mac_addr(), MAC_A, "the MAC the PF assigned");
    let info = port.vf_info();
    assert_eq!(info.vsi_id, s.vsi_id);
    assert_eq!(info.num_queue_pairs, s.num_queue_pairs);
    assert_eq!(port.info().max_rx_queues, s.num_queue_pairs);

    port.configure(&conf(&p, 2, 256)).unwrap();
    let mut q = port.start().unwrap();
    // The model publishes its status after it answered.
    wait_for(
        "the PF's view of the queues",
        Duration::from_secs(1),
        || {
            let s = vf.status();
            s.rx_queues[1].enabled && s.tx_queues[1].enabled
        },
    );
    let s = vf.status();
    for i in 0..2 {
        let (r, t) = (s.rx_queues[i], s.tx_queues[i]);
        assert!(r.enabled && t.enabled, "ENABLE_QUEUES queue {i}");
        assert_eq!(
            (r.ring_len, t.ring_len),
            (256, 256),
            "CONFIG_VSI_QUEUES ring lengths"
        );
        assert_eq!(r.buffer_size, 1664, "2 KiB elements: 1664-byte buffers");
        // Scatter receive: the PF's largest frame, over several buffers.
        assert_eq!(r.max_frame, 9728);
        assert_eq!(r.ring_iova % 128, 0);
    }
    assert!(!s.rx_queues[2].enabled);
    assert_eq!(s.irq_map.len(), 1, "CONFIG_IRQ_MAP: one vector");
    assert_eq!((s.irq_map[0].rxq_map, s.irq_map[0].txq_map), (0b11, 0b11));
    assert_eq!(s.rss_lut.len(), 64, "CONFIG_RSS_LUT");
    assert!(
        s.rss_lut
            .iter()
            .enumerate()
            .all(|(i, &e)| e as usize == i % 2)
    );
    assert_eq!(s.rss_key.len(), 52, "CONFIG_RSS_KEY");
    assert_eq!(&s.rss_key[..4], &[0x6d, 0x5a, 0x56, 0xda]);
    assert_ne!(s.rss_hena, 0, "SET_RSS_HENA");
    wait_for(
        "link up after ENABLE_QUEUES",
        Duration::from_secs(2),
        || port.link().up,
    );
    assert_eq!(port.link().speed_mbps, 40_000, "ADV_LINK_SPEED event");

    // CONFIG_PROMISCUOUS_MODE: accepted; an untrusted VF's is not applied.
    port.set_promiscuous(true).unwrap();
    wait_for("promiscuous requested", Duration::from_secs(1), || {
        let s = vf.status().promisc;
        s.requested_unicast && s.requested_multicast
    });
    assert!(!vf.status().promisc.unicast, "untrusted: not applied");
    port.set_promiscuous(false).unwrap();
    wait_for("promiscuous off", Duration::from_secs(1), || {
        !vf.status().promisc.requested_unicast
    });

    // Traffic, then GET_STATS against the device's counters.
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|i| udp_frame(MAC_A, MAC_A, i, 1000 + i as u16, 100))
        .collect();
    let mut tx0 = q.tx.remove(0);
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 64, 32);
    assert_eq!(got.len(), 64);
    let st = port.stats();
    assert_eq!((st.ipackets, st.opackets), (64, 64));
    assert_eq!(st.ibytes, 64 * 100);
    let xs = xstats(&port);
    let eth = vf.stats().eth;
    assert_eq!(xs["rx_unicast_packets"], eth.rx_unicast, "GET_STATS");
    assert_eq!(xs["tx_bytes"], eth.tx_bytes);
    assert_eq!(xs["rx_bytes"], 64 * 104, "the device counts the CRC");

    // DISABLE_QUEUES on stop.
    drop((q, tx0));
    port.stop().unwrap();
    wait_for("DISABLE_QUEUES", Duration::from_secs(1), || {
        let s = vf.status();
        !s.rx_queues[0].enabled && !s.tx_queues[1].enabled
    });
    // Close: RESET_VF.
    let resets = vf.stats().resets;
    drop(port);
    assert_eq!(vf.stats().resets, resets + 1, "RESET_VF on close");
    let st = vf.stats();
    assert_eq!((st.aq_errors, st.pf_ignored, st.dma_faults), (0, 0, 0));
    assert!(!vf.status().mailbox_disabled, "no invalid messages");
    drop(vf);
    assert_eq!(p.in_use(), 0, "every mbuf back in its pool");
}

#[test]
fn traffic_both_ways_between_two_vfs() {
    traffic_both_ways(MaxSimd::Best);
}

/// The same with at most the SSE4.1 loops (`simd=128`; the test above runs
/// the AVX2 ones on a CPU that has them).
#[test]
fn traffic_both_ways_between_two_vfs_sse() {
    traffic_both_ways(MaxSimd::Sse);
}

/// The same with the scalar receive and transmit loops (`simd=0`).
#[test]
fn traffic_both_ways_between_two_vfs_scalar() {
    traffic_both_ways(MaxSimd::Scalar);
}

fn traffic_both_ways(simd: MaxSimd) {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "peers", 4096);
    let o = IavfOptions { simd, ..opts() };
    // Wire::Peer connects the two VFs that name the same link.
    let Pair {
        mut qa,
        mut qb,
        pa,
        pb,
        va,
        vb,
    } = started_pair("peer", Some("a-b"), &mem, &p, 512, o);
    // The loops the CPU's own flags allow within `simd`.
    let mode = match simd {
        MaxSimd::Best if std::arch::is_x86_feature_detected!("avx2") => "AVX2 Vector",
        MaxSimd::Best | MaxSimd::Sse if std::arch::is_x86_feature_detected!("sse4.1") => {
            "SSE Vector"
        }
        _ => "Scalar",
    };
    assert_eq!(Loops::choose(simd).burst_mode(), mode);
    assert_eq!(qa.rx[0].burst_mode(), Some(mode));
    assert_eq!(qb.tx[0].burst_mode(), Some(mode));
    let ab: Vec<Vec<u8>> = (0..500)
        .map(|i| udp_frame(MAC_B, MAC_A, i, 7, 60 + (i as usize * 13) % 1400))
        .collect();
    let ba: Vec<Vec<u8>> = (0..500)
        .map(|i| udp_frame(MAC_A, MAC_B, 10_000 + i, 9, 64 + (i as usize * 7) % 1000))
        .collect();
    let got_b = exchange(&p, qa.tx[0].as_mut(), &mut qb.rx, &ab, 500, 64);
    let got_a = exchange(&p, qb.tx[0].as_mut(), &mut qa.rx, &ba, 500, 64);
    for (sent, got) in [(&ab, &got_b), (&ba, &got_a)] {
        assert_eq!(got.len(), sent.len());
        for (s, (_, g, _)) in sent.iter().zip(got.iter()) {
            assert_eq!(s, g, "frame {} corrupted or out of order", tag_of(s));
        }
    }
    let (sa, sb) = (pa.stats(), pb.stats());
    assert_eq!(
        (sa.opackets, sa.ipackets, sb.opackets, sb.ipackets),
        (500, 500, 500, 500)
    );
    assert_eq!(sa.obytes, sb.ibytes);
    assert_eq!(
        (sa.imissed, sa.ierrors, sb.imissed, sb.ierrors),
        (0, 0, 0, 0)
    );
    drop((qa, qb));
    drop((pa, pb, va, vb));
    assert_eq!(p.in_use(), 0);
}

/// Manual mode (`SimVf::set_manual` / `step`): with both device threads
/// parked, nothing moves until the benchmark-style caller steps the devices,
/// and then exactly what was sent arrives, in order, each way (the path
/// `drivers/iavf/benches/sim_burst.rs` measures).
#[test]
fn manual_mode_moves_frames_only_when_stepped() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "manual", 4096);
    let Pair {
        mut qa,
        mut qb,
        pa,
        pb,
        va,
        vb,
    } = manual_pair("manual", &mem, &p);
    assert!(va.is_manual() && vb.is_manual());
    let mut tx = MbufBatch::with_burst(32);
    let mut rx = MbufBatch::with_burst(64);
    // Enough rounds to wrap the 256-entry rings and recycle Tx descriptors.
    for round in 0..20u32 {
        // A -> B: fresh frames.
        let ab: Vec<Vec<u8>> = (0..32)
            .map(|i| {
                udp_frame(
                    MAC_B,
                    MAC_A,
                    round * 1000 + i,
                    7,
                    60 + (i as usize * 37) % 1400,
                )
            })
            .collect();
        for f in &ab {
            push(&p, &mut tx, f);
        }
        let (a0, b0) = (va.stats(), vb.stats());
        assert_eq!(qa.tx[0].tx_burst(&mut tx), 32);
        if round < 2 {
            // Parked devices: the doorbell wakes nobody.
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            qb.rx[0].rx_burst(&mut rx),
            0,
            "round {round}: moved without a step"
        );
        assert_eq!(
            va.stats().tx_frames,
            a0.tx_frames,
            "A transmitted on its own"
        );
        assert_eq!(vb.step(), 0, "B had nothing to do before A stepped");
        assert!(va.step() >= 32, "A's step sends the 32 frames");
        assert_eq!(va.stats().tx_frames, a0.tx_frames + 32);
        assert_eq!(
            qb.rx[0].rx_burst(&mut rx),
            0,
            "in B's inbox, not in its ring yet"
        );
        assert!(vb.step() >= 32, "B's step places them in its ring");
        assert_eq!(vb.stats().rx_delivered, b0.rx_delivered + 32);
        assert_eq!(qb.rx[0].rx_burst(&mut rx), 32);
        for (k, f) in ab.iter().enumerate() {
            assert_eq!(
                rx.as_slice()[k].data(),
                f.as_slice(),
                "round {round} frame {k}"
            );
        }
        // B -> A: forward the same mbufs back (io forwarding), rewritten.
        let ba: Vec<Vec<u8>> = (0..32)
            .map(|i| {
                udp_frame(
                    MAC_A,
                    MAC_B,
                    round * 1000 + 500 + i,
                    9,
                    60 + (i as usize * 37) % 1400,
                )
            })
            .collect();
        while let Some(mut m) = rx.pop_front() {
            let f = &ba[tx.len()];
            m.data_mut().copy_from_slice(f);
            tx.push(m).unwrap();
        }
        assert_eq!(qb.tx[0].tx_burst(&mut tx), 32);
        assert_eq!(qa.rx[0].rx_burst(&mut rx), 0);
        assert!(vb.step() >= 32);
        assert!(va.step() >= 32);
        assert_eq!(qa.rx[0].rx_burst(&mut rx), 32);
        for (k, f) in ba.iter().enumerate() {
            assert_eq!(
                rx.as_slice()[k].data(),
                f.as_slice(),
                "round {round} back, frame {k}"
            );
        }
        rx.clear();
    }
    // Idle devices do no work.
    assert_eq!(va.step() + vb.step(), 0);
    let (sa, sb) = (va.stats(), vb.stats());
    assert_eq!((sa.tx_frames, sb.rx_delivered), (640, 640));
    assert_eq!((sb.tx_frames, sa.rx_delivered), (640, 640));
    assert_eq!(sa.rx_missed + sb.rx_missed + sa.wire_lost + sb.wire_lost, 0);
    // Threads back (the ports' control path needs the PF again).
    va.set_manual(false);
    vb.set_manual(false);
    let (ia, ib) = (pa.stats(), pb.stats());
    assert_eq!(
        (ia.opackets, ia.ipackets, ib.opackets, ib.ipackets),
        (640, 640, 640, 640)
    );
    drop((qa, qb));
    drop((pa, pb, va, vb));
    assert_eq!(p.in_use(), 0);
}

/// A receive refill the pool is too short for: the burst still delivers,
/// the empty slots are counted in `rx_nombuf`, idle polls retry the refill
/// (counted again while the pool stays empty) and, once buffers are back,
/// fill the ring so frames flow again.
#[test]
fn receive_refill_short_pool_is_retried_by_idle_polls() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "short", 2048);
    let Pair {
        mut qa,
        mut qb,
        pa,
        pb,
        va,
        vb,
    } = manual_pair("short", &mem, &p);
    let mut tx = MbufBatch::with_burst(32);
    let mut rx = MbufBatch::with_burst(32);
    let send = |qa: &mut nicpoll::port::PortQueues, tx: &mut MbufBatch, round: u32| {
        for i in 0..32 {
            push(&p, tx, &udp_frame(MAC_B, MAC_A, round * 100 + i, 7, 60));
        }
        assert_eq!(qa.tx[0].tx_burst(tx), 32);
        assert!(va.step() >= 32);
        assert!(vb.step() >= 32);
    };
    send(&mut qa, &mut tx, 0);
    // The pool runs dry before B's receive refills.
    let mut hoard = Vec::new();
    while let Some(m) = p.alloc() {
        hoard.push(m);
    }
    assert_eq!(qb.rx[0].rx_burst(&mut rx), 32, "delivered without a refill");
    // Kept too: the pool stays empty.
    while let Some(m) = rx.pop_front() {
        hoard.push(m);
    }
    va.set_manual(false);
    vb.set_manual(false);
    assert_eq!(pb.stats().rx_nombuf, 32);
    va.set_manual(true);
    vb.set_manual(true);
    // An idle poll retries, still short.
    assert_eq!(qb.rx[0].rx_burst(&mut rx), 0);
    // Buffers back: the next idle poll refills.
    drop(hoard);
    assert_eq!(qb.rx[0].rx_burst(&mut rx), 0);
    va.set_manual(false);
    vb.set_manual(false);
    let after = pb.stats().rx_nombuf;
    assert_eq!(after, 64, "the failed retry is counted too");
    va.set_manual(true);
    vb.set_manual(true);
    // The ring is whole again: a full ring's worth of frames arrives.
    for round in 1..=8 {
        send(&mut qa, &mut tx, round);
        assert_eq!(qb.rx[0].rx_burst(&mut rx), 32, "round {round}");
        for (k, m) in rx.as_slice().iter().enumerate() {
            assert_eq!(tag_of(m.data()), round * 100 + k as u32);
        }
        rx.clear();
    }
    va.set_manual(false);
    vb.set_manual(false);
    assert_eq!(pb.stats().rx_nombuf, after, "no refill failed since");
    assert_eq!(pb.stats().ipackets, 9 * 32);
    drop((qa, qb));
    drop((pa, pb, va, vb));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn ring_wrap_and_full_receive_ring() {
    ring_wrap_and_full(MaxSimd::Best);
}

/// The same with at most the SSE4.1 loops (`simd=128`).
#[test]
fn ring_wrap_and_full_receive_ring_sse() {
    ring_wrap_and_full(MaxSimd::Sse);
}

/// The same with the scalar loops (`simd=0`).
#[test]
fn ring_wrap_and_full_receive_ring_scalar() {
    ring_wrap_and_full(MaxSimd::Scalar);
}

fn ring_wrap_and_full(simd: MaxSimd) {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "wrap", 2048);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("wrap", MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, IavfOptions { simd, ..opts() });
    port.configure(&conf(&p, 1, 64)).unwrap();
    let mut q = port.start().unwrap();
    // Many laps of 64-entry rings, in order and intact.
    let frames: Vec<Vec<u8>> = (0..2000)
        .map(|i| udp_frame(MAC_A, MAC_A, i, 5, 60 + i as usize % 300))
        .collect();
    let mut tx0 = q.tx.remove(0);
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 2000, 32);
    for (s, (_, g, _)) in frames.iter().zip(got.iter()) {
        assert_eq!(s, g);
    }
    // Full receive ring: nobody polls it; the device places what the ring
    // holds and counts the rest as discards (imissed).
    let before = port.stats();
    let mut b = MbufBatch::with_burst(32);
    let mut sent = 0usize;
    while sent < 200 {
        if b.is_empty() {
            for i in 0..32.min(200 - sent) as u32 {
                push(&p, &mut b, &udp_frame(MAC_A, MAC_A, 90_000 + i, 5, 60));
            }
        }
        sent += tx0.tx_burst(&mut b);
    }
    wait_for(
        "the device to take every frame",
        Duration::from_secs(5),
        || vf.stats().tx_frames >= 2200,
    );
    std::thread::sleep(Duration::from_millis(20));
    let mut r = MbufBatch::with_burst(512);
    q.rx[0].rx_burst(&mut r);
    let placed = r.len() as u64;
    r.clear();
    let missed = port.stats().imissed - before.imissed;
    assert_eq!(placed + missed, 200, "placed {placed}, missed {missed}");
    assert!(
        missed >= 200 - 63,
        "a 64-entry ring holds at most 63: missed {missed}"
    );
    // It keeps working afterwards.
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames[..100], 100, 32);
    assert_eq!(got.len(), 100);
    drop((q, tx0));
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0);
}

/// Toeplitz hash (Microsoft's RSS specification) of `input` under `key`.
fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let mut h = 0u32;
    let mut window = u32::from_be_bytes(key[..4].try_into().unwrap());
    for (i, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                h ^= window;
            }
            let next_bit = key.get(4 + i).map_or(0, |k| (k >> (7 - bit)) & 1);
            window = (window << 1) | next_bit as u32;
        }
    }
    h
}

#[test]
fn rss_spreads_flows_over_queues() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "rss", 8192);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("rss", MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, opts());
    port.configure(&conf(&p, 4, 256)).unwrap();
    let mut q = port.start().unwrap();
    let frames: Vec<Vec<u8>> = (0..800)
        .map(|i| udp_frame(MAC_A, MAC_A, i, 2000 + i as u16, 80))
        .collect();
    let mut tx0 = q.tx.remove(0);
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 800, 32);
    let key = vf.status().rss_key;
    let mut per_q = [0usize; 4];
    for (qi, f, h) in &got {
        per_q[*qi as usize] += 1;
        // The hash the device reported is Toeplitz over (src ip, dst ip,
        // sport, dport) with our key, and the queue is LUT[hash % 64].
        let mut input = Vec::new();
        input.extend_from_slice(&f[26..34]);
        input.extend_from_slice(&f[34..38]);
        let want = toeplitz(&key, &input);
        assert_eq!(*h, Some(want), "RSS hash of flow {}", tag_of(f));
        assert_eq!(*qi as u32, (want % 64) % 4, "queue by LUT");
    }
    assert!(
        per_q.iter().all(|&n| n > 100),
        "flows spread over 4 queues: {per_q:?}"
    );
    drop((q, tx0));
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0);
}

fn reset_recovery(label: &str, arm: impl FnOnce(&SimVf), promisc: bool) {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, label, 4096);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim(label, MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, opts());
    if promisc {
        port.set_promiscuous(true).unwrap();
    }
    port.configure(&conf(&p, 2, 256)).unwrap();
    let mut q = port.start().unwrap();
    let frames: Vec<Vec<u8>> = (0..3000)
        .map(|i| udp_frame(MAC_A, MAC_A, i, i as u16, 128))
        .collect();
    let mut tx0 = q.tx.remove(0);
    let first = exchange(&p, tx0.as_mut(), &mut q.rx, &frames[..200], 200, 64);
    assert_eq!(first.len(), 200);
    let vsi_before = vf.status().vsi_id;
    arm(&vf);
    // Keep the traffic going through the reset: frames in flight are lost and
    // counted; the queues return 0 while the VF is down; afterwards traffic
    // flows again.
    let mut b = MbufBatch::with_burst(32);
    let mut r = MbufBatch::with_burst(64);
    let mut sent = 200;
    let mut received_after = 0;
    let t = Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{label}: traffic did not resume"
        );
        if b.is_empty() && sent < frames.len() {
            for f in &frames[sent..(sent + 32).min(frames.len())] {
                push(&p, &mut b, f);
            }
            sent += b.len();
        }
        tx0.tx_burst(&mut b);
        for rq in q.rx.iter_mut() {
            rq.rx_burst(&mut r);
        }
        let resets = port.poll_events().map(|s| s.resets).unwrap_or(0);
        if resets >= 1 {
            received_after += r.len();
        }
        r.clear();
        if received_after >= 200 || sent >= frames.len() {
            break;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    b.clear();
    resume(&port, &mut q);
    // Frames sent around the reset may still come in; then every frame of a
    // new run arrives, in order.
    let mut r = MbufBatch::with_burst(64);
    let mut quiet = Instant::now();
    while quiet.elapsed() < Duration::from_millis(50) {
        for rq in q.rx.iter_mut() {
            if rq.rx_burst(&mut r) > 0 {
                quiet = Instant::now();
            }
        }
        r.clear();
    }
    let fresh: Vec<Vec<u8>> = (0..300)
        .map(|i| udp_frame(MAC_A, MAC_A, 100_000 + i, i as u16, 128))
        .collect();
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &fresh, 300, 64);
    assert_eq!(
        got.len(),
        300,
        "{label}: after recovery every frame arrives"
    );
    let mut tags: Vec<u32> = got.iter().map(|(_, f, _)| tag_of(f)).collect();
    tags.sort();
    assert_eq!(tags, (100_000..100_300).collect::<Vec<u32>>(), "{label}");
    let xs = xstats(&port);
    assert!(xs["vf_resets"] >= 1, "{label}: {xs:?}");
    assert_eq!(xs["vf_reset_recoveries_failed"], 0, "{label}");
    assert!(xs["vf_reset_last_recovery_us"] > 0);
    wait_for("the PF's status", Duration::from_secs(1), || {
        let s = vf.status();
        s.rx_queues[1].enabled && s.tx_queues[0].enabled
    });
    let s = vf.status();
    assert!(
        s.mac_filters.contains(&MAC_A),
        "{label}: MAC filter restored"
    );
    assert_eq!(
        s.promisc.requested_unicast, promisc,
        "{label}: promiscuous mode restored"
    );
    assert!(s.rx_queues[0].enabled && s.rx_queues[1].enabled && s.tx_queues[0].enabled);
    assert!(
        s.rss_lut
            .iter()
            .enumerate()
            .all(|(i, &e)| e as usize == i % 2),
        "{label}: RSS restored"
    );
    let _ = vsi_before;
    assert_eq!(
        port.vf_info().vsi_id,
        s.vsi_id,
        "{label}: the driver uses the VSI id after the reset"
    );
    let st = port.stats();
    assert!(st.opackets >= st.ipackets);
    drop((q, tx0));
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0, "{label}: every mbuf back after a reset");
}

#[test]
fn reset_mid_traffic_recovers() {
    reset_recovery("reset-now", |vf| vf.faults().reset_vf(), true);
}

#[test]
fn reset_after_transmitted_frames_recovers() {
    reset_recovery(
        "reset-tx",
        |vf| vf.faults().reset_after_tx_frames(50),
        false,
    );
}

#[test]
fn reset_with_deadbeef_reads_and_a_new_vsi_recovers() {
    reset_recovery(
        "reset-deadbeef",
        |vf| {
            vf.faults().deadbeef_during_reset(true);
            vf.faults().new_vsi_id_on_reset(true);
            vf.faults().reset_vf();
        },
        false,
    );
}

#[test]
fn reset_during_configuration_then_start_works() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "reset-cfg", 4096);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("reset-cfg", MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, opts());
    port.configure(&conf(&p, 1, 128)).unwrap();
    // The PF resets the VF instead of answering CONFIG_VSI_QUEUES.
    vf.faults().reset_on_opcode(6);
    let e = port.start().unwrap_err().to_string();
    assert!(e.contains("start"), "{e}");
    assert_eq!(p.in_use(), 0, "nothing kept from the failed start");
    wait_for("recovery", Duration::from_secs(5), || {
        port.poll_events()
            .map(|s| s.resets >= 1 && s.failed.is_none())
            .unwrap_or(false)
    });
    let mut q = port.start().unwrap();
    let frames: Vec<Vec<u8>> = (0..100)
        .map(|i| udp_frame(MAC_A, MAC_A, i, 1, 64))
        .collect();
    let mut tx0 = q.tx.remove(0);
    assert_eq!(
        exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 100, 32).len(),
        100
    );
    drop((q, tx0));
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn slow_reset_fails_recovery_then_retries() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "slow", 2048);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("slow", MAC_A, Wire::Loopback)
    };
    let mut o = opts();
    o.timeouts.reset_done = Duration::from_millis(200);
    let Rig { vf, mut port } = rig(cfg, &mem, o);
    port.configure(&conf(&p, 1, 128)).unwrap();
    let mut q = port.start().unwrap();
    vf.faults().set_reset_timing(ResetTiming {
        impending: Duration::from_millis(1),
        in_progress: Duration::from_millis(600),
        completed: Duration::from_millis(5),
        ..Default::default()
    });
    vf.faults().reset_vf();
    wait_for("a failed recovery", Duration::from_secs(5), || {
        port.poll_events().is_err() && xstats(&port)["vf_reset_recoveries_failed"] == 1
    });
    let e = port.poll_events().unwrap_err().to_string();
    assert!(e.contains("resetting") || e.contains("VFGEN_RSTAT"), "{e}");
    // Bursts return nothing while the VF is down.
    let mut b = MbufBatch::with_burst(8);
    push(&p, &mut b, &udp_frame(MAC_A, MAC_A, 1, 1, 64));
    assert_eq!(
        q.tx[0].tx_burst(&mut b),
        0,
        "transmit keeps packets while resetting"
    );
    b.clear();
    resume(&port, &mut q);
    let frames: Vec<Vec<u8>> = (0..64).map(|i| udp_frame(MAC_A, MAC_A, i, 1, 64)).collect();
    let mut tx0 = q.tx.remove(0);
    assert_eq!(
        exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 64, 32).len(),
        64
    );
    drop((q, tx0));
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn silent_pf_and_lost_replies_time_out_by_name() {
    let mem = Arc::new(DmaMemory::plain());
    let Rig { vf, mut port } = rig(sim("silent", MAC_A, Wire::None), &mem, opts());
    vf.faults().pf_silent(true);
    let e = port.set_promiscuous(true).unwrap_err().to_string();
    assert!(
        e.contains("VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE") && e.contains("no answer"),
        "{e}"
    );
    vf.faults().pf_silent(false);
    port.set_promiscuous(true).unwrap();
    vf.faults().drop_pf_replies(1);
    let e = port.set_promiscuous(false).unwrap_err().to_string();
    assert!(e.contains("no answer"), "{e}");
    port.set_promiscuous(false).unwrap();
    assert!(!port.promiscuous());
    let _ = port.stats();
    assert_eq!(xstats(&port)["vf_resets"], 0, "a slow PF is not a reset");
}

#[test]
fn link_changes_reach_the_port() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "link", 1024);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("link", MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, opts());
    port.configure(&conf(&p, 1, 128)).unwrap();
    let q = port.start().unwrap();
    wait_for("link up", Duration::from_secs(2), || port.link().up);
    vf.faults().set_link(false);
    wait_for("link down", Duration::from_secs(2), || !port.link().up);
    vf.faults().set_link(true);
    wait_for("link up again", Duration::from_secs(2), || port.link().up);
    assert!(xstats(&port)["vf_link_events"] >= 3);
    drop(q);
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn corrupt_descriptors_are_counted_never_trusted() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "corrupt", 2048);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("corrupt", MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, opts());
    port.configure(&conf(&p, 1, 128)).unwrap();
    let mut q = port.start().unwrap();
    let mut tx0 = q.tx.remove(0);
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| udp_frame(MAC_A, MAC_A, i, 1, 200))
        .collect();
    let mut bad_expected = 0;
    // Two corrupted frames each; without EOP, the frame after the second
    // corrupted one is taken for its continuation and dropped too.
    for (kind, bad) in [
        (RxCorruption::BadLength, 2),
        (RxCorruption::ErrorBit, 2),
        (RxCorruption::NoEop, 3),
    ] {
        vf.faults().corrupt_rx(kind, 2);
        let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 10 - bad, 16);
        std::thread::sleep(Duration::from_millis(10));
        let mut r = MbufBatch::with_burst(64);
        q.rx[0].rx_burst(&mut r);
        assert_eq!(
            got.len() + r.len(),
            10 - bad,
            "{kind:?}: the good frames arrive"
        );
        r.clear();
        bad_expected += bad as u64;
        assert!(
            xstats(&port)["rx_bad_descriptors"] >= bad_expected,
            "{kind:?}: {:?}",
            xstats(&port)
        );
    }
    // A frame longer than the one buffer the driver posts takes two
    // descriptors, and arrives whole as a chain (scatter receive). The big
    // frame is sent from a pool of 4 KiB elements, mapped for the device
    // with map_pool.
    let p4 = Mempool::new(
        &mem,
        &MempoolConfig {
            buf_size: 3200,
            ..MempoolConfig::new("corrupt-4k", 64)
        },
    )
    .unwrap();
    port.map_pool(&p4).unwrap();
    vf.faults().ignore_rx_max_frame(1);
    let big = udp_frame(MAC_A, MAC_A, 77, 1, 3000);
    let before = xstats(&port)["rx_bad_descriptors"];
    let mut b = MbufBatch::with_burst(1);
    push(&p4, &mut b, &big);
    assert_eq!(tx0.tx_burst(&mut b), 1);
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &[frames[0].clone()], 2, 8);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, big, "the 3000-byte frame, in 2 buffers of 1664");
    assert_eq!(tag_of(&got[1].1), 0, "then the small frame");
    assert_eq!(xstats(&port)["rx_bad_descriptors"], before);
    assert_eq!(port.stats().ierrors, xstats(&port)["rx_bad_descriptors"]);
    assert_eq!(vf.dma_faults(), 0);
    drop((q, tx0));
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0, "the mbufs of bad descriptors were freed");
    assert_eq!(p4.in_use(), 0);
}

#[test]
fn dropped_frames_and_counter_wrap() {
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "drops", 2048);
    let cfg = SimConfig {
        spoofchk: false,
        ..sim("drops", MAC_A, Wire::Loopback)
    };
    let Rig { vf, mut port } = rig(cfg, &mem, opts());
    port.configure(&conf(&p, 1, 128)).unwrap();
    let mut q = port.start().unwrap();
    let mut tx0 = q.tx.remove(0);
    let frames: Vec<Vec<u8>> = (0..20).map(|i| udp_frame(MAC_A, MAC_A, i, 1, 64)).collect();
    // Dropped in the device before a descriptor: imissed.
    vf.faults().drop_rx_frames(5);
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 15, 32);
    assert_eq!(got.len(), 15);
    assert_eq!(port.stats().imissed, 5);
    // Lost on the wire: nothing counts them but the peer's absence.
    vf.faults().drop_tx_frames(3);
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames, 17, 32);
    assert_eq!(got.len(), 17);
    assert_eq!(port.stats().opackets, 40);
    // 48-bit and 32-bit wraps of the device's counters.
    port.reset_stats();
    vf.faults().preset_stats(EthStats {
        rx_unicast: (1 << 48) - 3,
        rx_discards: (1 << 32) - 2,
        ..EthStats::default()
    });
    let base = xstats(&port);
    vf.faults().drop_rx_frames(4);
    let got = exchange(&p, tx0.as_mut(), &mut q.rx, &frames[..10], 6, 32);
    assert_eq!(got.len(), 6);
    let after = xstats(&port);
    assert_eq!(
        after["rx_unicast_packets"] - base["rx_unicast_packets"],
        10,
        "across the 48-bit wrap"
    );
    assert_eq!(
        after["rx_dropped_packets"] - base["rx_dropped_packets"],
        4,
        "across the 32-bit wrap"
    );
    drop((q, tx0));
    port.stop().unwrap();
    drop((port, vf));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn frames_to_and_from_a_kernel_veth() {
    // The pair, and the AF_PACKET sockets the device model's wire opens on it.
    let mut needs = nicpoll_testkit::VETH.to_vec();
    needs.push(nicpoll_testkit::Need::RawSockets);
    if nicpoll_testkit::skip_if_missing(&needs) {
        return;
    }
    let veth = VethPair::create("npiavf");
    let mem = Arc::new(DmaMemory::plain());
    let p = pool(&mem, "veth", 4096);
    let a = Arc::new(SimVf::new(sim("veth-a", MAC_A, Wire::Iface(veth.a.clone()))).unwrap());
    let b = Arc::new(SimVf::new(sim("veth-b", MAC_B, Wire::Iface(veth.b.clone()))).unwrap());
    let mk = |vf: &Arc<SimVf>, name: &str| {
        IavfPort::with_options(
            vf.bar(),
            vf.clone() as Arc<dyn DmaMap>,
            mem.clone(),
            name,
            opts(),
            0,
        )
        .unwrap()
    };
    let (mut pa, mut pb) = (mk(&a, "veth-a"), mk(&b, "veth-b"));
    pa.configure(&conf(&p, 1, 256)).unwrap();
    pb.configure(&conf(&p, 1, 256)).unwrap();
    let mut qa = pa.start().unwrap();
    let mut qb = pb.start().unwrap();
    let kernel_tx = |i: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{i}/statistics/tx_packets"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let k0 = kernel_tx(&veth.a);
    let ab: Vec<Vec<u8>> = (0..200)
        .map(|i| udp_frame(MAC_B, MAC_A, i, 3, 60 + i as usize * 5))
        .collect();
    let got = exchange(&p, qa.tx[0].as_mut(), &mut qb.rx, &ab, 200, 32);
    for (s, (_, g, _)) in ab.iter().zip(got.iter()) {
        assert_eq!(s, g, "through the kernel's veth pair");
    }
    assert!(
        kernel_tx(&veth.a) - k0 >= 200,
        "the frames went through the kernel"
    );
    let ba: Vec<Vec<u8>> = (0..200)
        .map(|i| udp_frame(MAC_A, MAC_B, 500 + i, 4, 100))
        .collect();
    let got = exchange(&p, qb.tx[0].as_mut(), &mut qa.rx, &ba, 200, 32);
    assert_eq!(got.len(), 200);
    drop((qa, qb));
    pa.stop().unwrap();
    pb.stop().unwrap();
    drop((pa, pb, a, b, veth));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn passes_the_port_conformance_suite() {
    conformance("net_iavf (simulated VF)", "watchdog_ms=5");
}

/// The same with at most the SSE4.1 loops (`simd=128`).
#[test]
fn passes_the_port_conformance_suite_sse() {
    conformance(
        "net_iavf (simulated VF, simd=128)",
        "watchdog_ms=5,simd=128",
    );
}

/// The same with the scalar loops (`simd=0`).
#[test]
fn passes_the_port_conformance_suite_scalar() {
    conformance("net_iavf (simulated VF, simd=0)", "watchdog_ms=5,simd=0");
}

fn conformance(label: &str, devargs: &str) {
    let mem = Arc::new(DmaMemory::plain());
    let vfs = std::cell::RefCell::new(Vec::<Arc<SimVf>>::new());
    testing::run_conformance(
        label,
        &mut |id| {
            // The suite's frames go from 02:..:02 to 02:..:01, the VF's MAC.
            let vf = Arc::new(SimVf::new(SimConfig {
                spoofchk: false,
                ..sim(&format!("conf{id}"), MacAddr::local(1), Wire::Loopback)
            })?);
            let port = IavfPort::new(
                vf.bar(),
                vf.clone() as Arc<dyn DmaMap>,
                mem.clone(),
                &format!("net_iavf_sim{id}"),
                &nicpoll::port::DevArgs::parse(&format!("net_iavf_sim0,{devargs}"))?,
                id,
            )?;
            vfs.borrow_mut().push(vf);
            Ok(Box::new(port) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
    for vf in vfs.borrow().iter() {
        assert_eq!(vf.dma_faults(), 0, "{}: DMA faults", vf.name());
    }
}

#[test]
fn devargs_and_probe() {
    assert!(nicpoll_iavf::is_iavf(0x8086, 0x154c));
    assert!(nicpoll_iavf::DEVARGS_KEYS.contains(&"promisc"));
    let mem = Arc::new(DmaMemory::plain());
    let vf = Arc::new(SimVf::new(sim("devargs", MAC_A, Wire::None)).unwrap());
    let port = IavfPort::new(
        vf.bar(),
        vf.clone() as Arc<dyn DmaMap>,
        mem,
        "net_iavf_sim0",
        &nicpoll::port::DevArgs::parse("net_iavf_sim0,promisc=1,watchdog_ms=0").unwrap(),
        3,
    )
    .unwrap();
    assert!(port.promiscuous());
    wait_for("promiscuous requested", Duration::from_secs(1), || {
        vf.status().promisc.requested_unicast
    });
    assert_eq!(port.info().driver, "net_iavf");
}
