//! The iavf PMD against the simulated PF in each of its flavours (Linux 6.12's
//! i40e on an X710 or X722, ice on an E810), where the references (Linux's
//! i40e, ice and iavf, DPDK's net_iavf) show what the hardware and the PF do.
#![cfg(feature = "sim")]

mod pmd_util;

use std::sync::Arc;
use std::time::Duration;

use nicpoll::Port;
use nicpoll::memory::DmaMemory;
use nicpoll_iavf::MaxSimd;
use nicpoll_iavf::sim::{PfModel, Wire};
use nicpoll_iavf::virtchnl::caps;
use pmd_util::*;

const FLAVOURS: [PfModel; 3] = [PfModel::X710, PfModel::X722, PfModel::E810];

#[test]
fn every_pf_flavour_brings_the_port_up_and_forwards() {
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "flavours", 4096);
    for pf in FLAVOURS {
        let (mut a, mut b) = pair(
            sim(&format!("fl-{pf}-a"), pf, MAC_A, Wire::None),
            sim(&format!("fl-{pf}-b"), pf, MAC_B, Wire::None),
            &mem,
            &pool,
            opts(),
        );
        let info = a.port.vf_info();
        // Link up at the PF's speed, reported in Mbit/s (ADV_LINK_SPEED).
        wait_for("link up", Duration::from_secs(2), || a.port.link().up);
        assert_eq!(a.port.link().speed_mbps, 40_000, "{pf}");
        assert_ne!(info.caps & caps::ADV_LINK_SPEED, 0, "{pf}");
        // WB_ON_ITR where the PF grants it (X722, E810), not on an X710.
        assert_eq!(
            info.caps & caps::WB_ON_ITR != 0,
            pf != PfModel::X710,
            "{pf}: {}",
            caps::describe(info.caps)
        );
        let frames: Vec<Vec<u8>> = (0..100)
            .map(|i| udp_frame(MAC_B, MAC_A, i, 1000 + i as u16, 60 + i as usize))
            .collect();
        send_all(&pool, a.q.tx[0].as_mut(), &frames);
        let got = receive(b.q.rx[0].as_mut(), 100, Duration::from_secs(5));
        let got: Vec<Vec<u8>> = got.iter().map(|m| m.data().to_vec()).collect();
        assert_same_frames(&got, &frames, &format!("{pf}: frames A to B"));
        drop((a.q, b.q));
        a.port.stop().unwrap();
        b.port.stop().unwrap();
    }
    assert_eq!(pool.in_use(), 0);
}

/// Frames A → B with tags `from..from + n`; returns how many arrived intact.
fn a_to_b(a: &mut Side, b: &mut Side, pool: &nicpoll::Mempool, from: u32, n: u32) -> usize {
    let frames: Vec<Vec<u8>> = (from..from + n)
        .map(|i| udp_frame(MAC_B, MAC_A, i, 7, 64))
        .collect();
    send_all(pool, a.q.tx[0].as_mut(), &frames);
    let got = receive(b.q.rx[0].as_mut(), n as usize, Duration::from_secs(3));
    got.iter()
        .zip(&frames)
        .filter(|(m, f)| m.data() == f.as_slice())
        .count()
}

#[test]
fn a_failed_recovery_is_followed_by_a_good_one() {
    // i40e answers GET_VF_RESOURCES once per reset (RESOURCES_LOADED,
    // i40e_virtchnl_pf.c): a recovery that failed after it was answered can
    // only be retried after another reset, which the driver must ask for
    // (Linux's reset task sends RESET_VF when it saw no reset).
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "failed-recovery", 4096);
    let (mut a, mut b) = pair(
        sim("fr-a", PfModel::X710, MAC_A, Wire::None),
        sim("fr-b", PfModel::X710, MAC_B, Wire::None),
        &mem,
        &pool,
        opts(),
    );
    assert_eq!(a_to_b(&mut a, &mut b, &pool, 0, 32), 32);
    // The PF resets VF A; the answer to its first GET_VF_RESOURCES after
    // that is lost (the PF did act on it).
    a.vf.faults()
        .drop_replies_to(nicpoll_iavf::virtchnl::Op::GetVfResources.raw(), 1);
    a.vf.faults().reset_vf();
    wait_for("a failed recovery", Duration::from_secs(5), || {
        a.port.poll_events().is_err()
    });
    assert_eq!(xstat(&a.port, "vf_reset_recoveries_failed"), 1);
    // The retry (a second later) comes through.
    resume(&mut a, Duration::from_secs(5));
    assert_eq!(a_to_b(&mut a, &mut b, &pool, 100, 32), 32);
    assert_eq!(xstat(&a.port, "vf_reset_recoveries_failed"), 1);
    drop((a.q, b.q));
}

#[test]
fn an_ice_reset_with_a_stale_vfactive_recovers_at_once() {
    // ice disables the mailbox before the reset and VFGEN_RSTAT lags
    // (ice_sriov_clear_reset_state): a driver that takes the stale VFACTIVE
    // for the end of the reset sets its admin queue up just before the
    // hardware reset wipes it, and loses a recovery attempt.
    //
    // What shows the loss is the count of failed recoveries, not a clock: the
    // model's stale VFACTIVE ends on the hardware's clock whether or not its
    // thread runs, 8 ms after the mailbox went off, within the 10 ms the
    // driver gives it from when it noticed; long enough that the watchdog
    // (every 2 ms) notices while it is stale. The limits below only bound a
    // hang on a loaded machine (a recovery that sets its admin queue up too
    // early fails at its first message, however long it waits).
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "stale-rstat", 4096);
    let ice = |name: &str, mac| {
        let mut cfg = sim(name, PfModel::E810, mac, Wire::None);
        cfg.reset_timing.rstat_lag = Duration::from_millis(8);
        cfg
    };
    let patient = nicpoll_iavf::IavfOptions {
        timeouts: nicpoll_iavf::Timeouts {
            aq_send: Duration::from_secs(5),
            reply: Duration::from_secs(5),
            ..opts().timeouts
        },
        ..opts()
    };
    let (mut a, mut b) = pair(ice("st-a", MAC_A), ice("st-b", MAC_B), &mem, &pool, patient);
    assert_eq!(a_to_b(&mut a, &mut b, &pool, 0, 32), 32);
    for round in 0..3u32 {
        a.vf.faults().reset_vf();
        wait_for("the reset to show", Duration::from_secs(10), || {
            a.vf.stats().resets > u64::from(round)
        });
        resume(&mut a, Duration::from_secs(20));
        assert_eq!(
            xstat(&a.port, "vf_reset_recoveries_failed"),
            0,
            "round {round}: a recovery failed"
        );
        assert_eq!(a_to_b(&mut a, &mut b, &pool, 100 * (round + 1), 32), 32);
    }
    drop((a.q, b.q));
}

/// `n` VLAN-tagged UDP frames from `src` to `dst`, VLAN `100 + i`, priority 3.
fn tagged_frames(dst: nicpoll::port::MacAddr, src: nicpoll::port::MacAddr, n: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            tagged(
                &udp_frame(dst, src, i, 2000 + i as u16, 64 + i as usize),
                0x6000 | (100 + i as u16),
            )
        })
        .collect()
}

#[test]
fn vlan_tags_survive_io_forwarding_between_two_x710_vfs() {
    // An X710's VF strips every VLAN tag into the descriptor unless the VF
    // turns stripping off (i40e grants VLAN unasked; its VSI strips by
    // default): io forwarding must not turn tagged frames into untagged ones.
    for simd in [MaxSimd::Best, MaxSimd::Sse, MaxSimd::Scalar] {
        let mem = Arc::new(DmaMemory::plain());
        let pool = pool(&mem, "vlan-fwd", 4096);
        let o = nicpoll_iavf::IavfOptions { simd, ..opts() };
        // Lab VFs as testpmd's net_iavf_sim makes them (spoof checking off:
        // a spoof-checked i40e VF sends tagged frames only with VLAN filters).
        let lab = |name, mac| nicpoll_iavf::sim::SimConfig {
            spoofchk: false,
            ..sim(name, PfModel::X710, mac, Wire::None)
        };
        let a = rig(lab("vl-a", MAC_A), &mem, o.clone());
        let b = rig(lab("vl-b", MAC_B), &mem, o);
        let (into_a, _out_of_a) = a.vf.wire_channel();
        let (_into_b, out_of_b) = b.vf.wire_channel();
        let (mut a, mut b) = (start(a, &pool, 1, 512), start(b, &pool, 1, 512));
        let frames = tagged_frames(MAC_A, MAC_B, 50);
        for f in &frames {
            into_a.send(f.clone()).unwrap();
        }
        // io forwarding: what A receives, B sends as it is.
        let got = receive(a.q.rx[0].as_mut(), 50, Duration::from_secs(5));
        assert_eq!(got.len(), 50, "simd={simd:?}");
        let mut batch = nicpoll::mbuf::MbufBatch::with_burst(64);
        for m in got {
            batch.push(m).unwrap();
        }
        while !batch.is_empty() {
            b.q.tx[0].tx_burst(&mut batch);
        }
        let out: Vec<Vec<u8>> = (0..50)
            .map(|_| {
                out_of_b
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("a frame out of B: {e}; {:?}", b.vf.stats()))
            })
            .collect();
        assert_same_frames(
            &out,
            &frames,
            &format!("simd={simd:?}: tags through io forwarding"),
        );
        assert!(!a.vf.status().vlan_strip, "the driver turned stripping off");
        drop((a.q, b.q));
    }
}

#[test]
fn a_tag_the_pf_strips_anyway_is_reported_in_the_mbuf() {
    // A PF that refuses DISABLE_VLAN_STRIPPING: each stripped tag comes in the
    // mbuf (vlan_tci, RX_VLAN | RX_VLAN_STRIPPED), as DPDK reports it.
    use nicpoll::mbuf::flags;
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "vlan-stripped", 4096);
    let cfg = sim("vs-a", PfModel::X710, MAC_A, Wire::None);
    let vf = Arc::new(nicpoll_iavf::sim::SimVf::new(cfg).unwrap());
    vf.faults()
        .fail_opcode(nicpoll_iavf::virtchnl::Op::DisableVlanStripping.raw());
    let port = nicpoll_iavf::IavfPort::with_options(
        vf.bar(),
        vf.clone() as Arc<dyn nicpoll_iavf::DmaMap>,
        mem.clone(),
        "vs-a",
        opts(),
        0,
    )
    .unwrap();
    let (into_a, _out) = vf.wire_channel();
    let mut a = start(
        Rig {
            vf: vf.clone(),
            port,
        },
        &pool,
        1,
        512,
    );
    assert!(a.vf.status().vlan_strip);
    let frames = tagged_frames(MAC_A, MAC_B, 40);
    for f in &frames {
        into_a.send(f.clone()).unwrap();
    }
    let got = receive(a.q.rx[0].as_mut(), 40, Duration::from_secs(5));
    assert_eq!(got.len(), 40);
    for (m, f) in got.iter().zip(&frames) {
        let tci = u16::from_be_bytes([f[14], f[15]]);
        let mut untagged = f.clone();
        untagged.drain(12..16);
        assert_eq!(m.data(), untagged.as_slice());
        assert_eq!(m.vlan_tci(), tci);
        assert_eq!(
            m.ol_flags() & (flags::RX_VLAN | flags::RX_VLAN_STRIPPED),
            flags::RX_VLAN | flags::RX_VLAN_STRIPPED
        );
        assert_ne!(m.ol_flags() & flags::RX_RSS_HASH, 0, "and the hash");
    }
    drop(got);
    drop(a.q);
}

#[test]
fn a_host_mac_change_mid_traffic_is_adopted() {
    // `ip link set <pf> vf N mac M` resets the VF (i40e_ndo_set_vf_mac); an
    // untrusted VF then gets -EPERM for any other unicast MAC
    // (i40e_check_vf_permission): the driver must take the PF's MAC, as
    // Linux's iavf does after every GET_VF_RESOURCES.
    const MAC_C: nicpoll::port::MacAddr = nicpoll::port::MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "host-mac", 4096);
    let (mut a, mut b) = pair(
        sim("hm-a", PfModel::X710, MAC_A, Wire::None),
        sim("hm-b", PfModel::X710, MAC_B, Wire::None),
        &mem,
        &pool,
        opts(),
    );
    assert_eq!(b.port.mac_addr(), MAC_B);
    // Traffic flows A -> B while the host changes B's MAC.
    let mut sent = 0u32;
    for i in 0..20u32 {
        if i == 5 {
            b.vf.faults().host_set_mac(MAC_C);
        }
        let f = vec![udp_frame(MAC_B, MAC_A, i, 9, 64)];
        send_all(&pool, a.q.tx[0].as_mut(), &f);
        sent += 1;
        receive(b.q.rx[0].as_mut(), 1, Duration::from_millis(5));
    }
    assert_eq!(sent, 20);
    resume(&mut b, Duration::from_secs(3));
    assert_eq!(b.port.mac_addr(), MAC_C, "the port took the host's MAC");
    assert_eq!(xstat(&b.port, "vf_reset_recoveries_failed"), 0);
    // Frames to the new MAC arrive; B sends from it too (spoof checking on).
    let to_c: Vec<Vec<u8>> = (0..32)
        .map(|i| udp_frame(MAC_C, MAC_A, 100 + i, 9, 64))
        .collect();
    send_all(&pool, a.q.tx[0].as_mut(), &to_c);
    let got: Vec<Vec<u8>> = receive(b.q.rx[0].as_mut(), 32, Duration::from_secs(3))
        .iter()
        .map(|m| m.data().to_vec())
        .collect();
    assert_same_frames(&got, &to_c, "frames to the new MAC");
    let from_c: Vec<Vec<u8>> = (0..32)
        .map(|i| udp_frame(MAC_A, MAC_C, 200 + i, 9, 64))
        .collect();
    send_all(&pool, b.q.tx[0].as_mut(), &from_c);
    let got: Vec<Vec<u8>> = receive(a.q.rx[0].as_mut(), 32, Duration::from_secs(3))
        .iter()
        .map(|m| m.data().to_vec())
        .collect();
    assert_same_frames(&got, &from_c, "frames from the new MAC");
    assert_eq!(b.vf.stats().tx_spoofed, 0);
    drop((a.q, b.q));
}

#[test]
fn the_pf_does_not_wait_for_the_vf_before_resetting_it() {
    // i40e resets an active VF only once the VF has set VFINT_ICR0_ENA1.ADMINQ,
    // polling 100 times first (i40e_sync_vfr_reset: "Reset VF %d never
    // finished", 10-20 ms lost per reset); Linux's and DPDK's iavf set it.
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "icr0-ena", 2048);
    let r = rig(sim("ena-a", PfModel::X710, MAC_A, Wire::None), &mem, opts());
    let vf = r.vf.clone();
    let mut a = start(r, &pool, 1, 128);
    vf.faults().reset_vf();
    wait_for("the reset", Duration::from_secs(2), || {
        vf.stats().resets == 1
    });
    resume(&mut a, Duration::from_secs(3));
    // And the reset the driver asks for when the port closes.
    drop(a.q);
    a.port.stop().unwrap();
    drop(a.port);
    wait_for("the close's reset", Duration::from_secs(2), || {
        vf.stats().resets == 2
    });
    assert_eq!(vf.stats().reset_sync_timeouts, 0);
}

/// A VF of an X710 port partitioned into several PCI functions (NPAR).
fn npar(name: &str, mac: nicpoll::port::MacAddr) -> nicpoll_iavf::sim::SimConfig {
    nicpoll_iavf::sim::SimConfig {
        multi_function: true,
        ..sim(name, PfModel::X710, mac, Wire::None)
    }
}

#[test]
fn a_vf_of_a_partitioned_x710_comes_up_without_rx_polling() {
    // i40e refuses RX_POLLING on a multi-function port with -EINVAL for the
    // whole GET_VF_RESOURCES (i40e_vc_get_vf_resources_msg); Linux's iavf
    // never asks for it.
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "npar", 4096);
    let (mut a, mut b) = pair(
        npar("np-a", MAC_A),
        npar("np-b", MAC_B),
        &mem,
        &pool,
        opts(),
    );
    assert_eq!(a.port.vf_info().caps & caps::RX_POLLING, 0);
    // Whole lines: no write-back timing involved.
    assert_eq!(a_to_b(&mut a, &mut b, &pool, 0, 32), 32);
    drop((a.q, b.q));
}

#[test]
fn lone_frames_arrive_when_vector_0_auto_masks() {
    // Without WB_ON_ITR (an X710) the driver has the ITR of vector 0 write
    // descriptors back; without RX_POLLING (a partitioned port) the PF leaves
    // vector 0's auto-masking on, so its first interrupt stops the write-back
    // of partial lines until software enables it again — what DPDK's 50 ms
    // alarm does (iavf_dev_alarm_handler). A lone frame must not wait for three
    // more.
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "lone", 4096);
    let (mut a, mut b) = pair(
        npar("lo-a", MAC_A),
        npar("lo-b", MAC_B),
        &mem,
        &pool,
        opts(),
    );
    for i in 0..5u32 {
        let f = vec![udp_frame(MAC_B, MAC_A, i, 9, 64)];
        send_all(&pool, a.q.tx[0].as_mut(), &f);
        let t = std::time::Instant::now();
        let got = receive(b.q.rx[0].as_mut(), 1, Duration::from_millis(500));
        assert_eq!(
            got.len(),
            1,
            "lone frame {i} not written back within 500 ms"
        );
        assert_eq!(got[0].data(), f[0].as_slice());
        eprintln!("lone frame {i}: {:?}", t.elapsed());
    }
    drop((a.q, b.q));
}

#[test]
fn udp_is_hashed_on_an_x722() {
    // X722's parser files UDP under PCTYPEs 29/30 (and TCP SYN under 32), which
    // only the expanded HENA it offers enables (I40E_DEFAULT_RSS_HENA_EXPANDED;
    // Linux's iavf sets the capabilities as returned).
    use nicpoll::mbuf::flags;
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "x722-rss", 8192);
    let a = rig(sim("rss-a", PfModel::X722, MAC_A, Wire::None), &mem, opts());
    let b = rig(sim("rss-b", PfModel::X722, MAC_B, Wire::None), &mem, opts());
    nicpoll_iavf::sim::SimVf::connect(&a.vf, &b.vf);
    let (mut a, mut b) = (start(a, &pool, 4, 512), start(b, &pool, 4, 512));
    let frames: Vec<Vec<u8>> = (0..64)
        .map(|i| udp_frame(MAC_B, MAC_A, i, 1000 + 7 * i as u16, 64))
        .collect();
    send_all(&pool, a.q.tx[0].as_mut(), &frames);
    let mut per_queue = [0usize; 4];
    let mut hashed = 0;
    let t = std::time::Instant::now();
    while per_queue.iter().sum::<usize>() < 64 && t.elapsed() < Duration::from_secs(5) {
        for (qi, rq) in b.q.rx.iter_mut().enumerate() {
            for m in receive(rq.as_mut(), 64, Duration::from_millis(1)) {
                per_queue[qi] += 1;
                hashed += usize::from(m.ol_flags() & flags::RX_RSS_HASH != 0);
            }
        }
    }
    assert_eq!(per_queue.iter().sum::<usize>(), 64, "{per_queue:?}");
    assert_eq!(
        hashed, 64,
        "every UDP frame hashed; per queue {per_queue:?}"
    );
    assert!(
        per_queue.iter().filter(|&&n| n > 0).count() >= 2,
        "flows spread over the queues: {per_queue:?}"
    );
    drop((a.q, b.q));
}

#[test]
fn the_largest_frame_counts_the_crc() {
    // The queue's max frame size the hardware checks includes the 4-byte CRC
    // (i40e_txrx.h I40E_PACKET_HDR_PAD = ETH_HLEN + ETH_FCS_LEN + 2 VLANs),
    // and GET_VF_RESOURCES' max_mtu is already a frame size: a port asked
    // for frames of up to 1660 bytes (--max-pkt-len 1664) programs
    // max_pkt_size 1664, and the device drops 1661.
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "max-frame", 4096);
    let a = rig(
        nicpoll_iavf::sim::SimConfig {
            spoofchk: false,
            ..sim("mf-a", PfModel::X710, MAC_A, Wire::None)
        },
        &mem,
        opts(),
    );
    let b = rig(sim("mf-b", PfModel::X710, MAC_B, Wire::None), &mem, opts());
    nicpoll_iavf::sim::SimVf::connect(&a.vf, &b.vf);
    // The PF's max_mtu (9728, a frame size) less the CRC.
    assert_eq!(b.port.info().max_rx_pktlen, 9724);
    let mut a = start(a, &pool, 1, 512);
    let Rig { vf, mut port } = b;
    port.configure(&nicpoll::port::PortConf {
        max_rx_pktlen: 1660,
        ..conf(&pool, 1, 512)
    })
    .unwrap();
    let q = port.start().unwrap();
    let mut b = Side { vf, port, q };
    let frames: Vec<Vec<u8>> = [1660usize, 1661, 1664, 1600]
        .iter()
        .enumerate()
        .map(|(i, &len)| udp_frame(MAC_B, MAC_A, i as u32, 9, len))
        .collect();
    send_all(&pool, a.q.tx[0].as_mut(), &frames);
    let got: Vec<Vec<u8>> = receive(b.q.rx[0].as_mut(), 2, Duration::from_secs(3))
        .iter()
        .map(|m| m.data().to_vec())
        .collect();
    assert_same_frames(
        &got,
        &[frames[0].clone(), frames[3].clone()],
        "frames up to 1660",
    );
    // The two longer ones: dropped by the device, and counted.
    wait_for("the drops counted", Duration::from_secs(2), || {
        b.port.stats().imissed == 2
    });
    drop((a.q, b.q));
}

/// Scatter receive and multi-segment transmit on the model's X710 VF: a
/// jumbo frame longer than one receive buffer takes several descriptors,
/// only the last with EOP, and arrives as a chain, byte for byte; a chain
/// goes out one descriptor per segment and the other VF reads it whole.
/// Frames with more segments than the hardware takes per packet (8) are
/// counted, not sent.
#[test]
fn jumbo_frames_scatter_and_gather_between_two_vfs() {
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "jumbo", 8192);
    let room = pool.data_room();
    let (mut a, mut b) = pair(
        nicpoll_iavf::sim::SimConfig {
            spoofchk: false,
            ..sim("jb-a", PfModel::X710, MAC_A, Wire::None)
        },
        sim("jb-b", PfModel::X710, MAC_B, Wire::None),
        &mem,
        &pool,
        opts(),
    );
    assert!(b.port.info().rx_scatter && a.port.info().tx_multi_seg);
    // Built as chains of room-sized segments (the 9000-byte one of 6).
    let lens = [9014usize, 64, 1664, 1665, 4000, 9000, 9724];
    let frames: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| udp_frame(MAC_B, MAC_A, i as u32, 9, len))
        .collect();
    let mut tx = nicpoll::MbufBatch::with_burst(32);
    for f in &frames {
        let mut chain = nicpoll::mbuf::RxChain::new();
        for piece in f.chunks(room) {
            let mut m = pool.alloc().unwrap();
            m.append(piece.len()).unwrap().copy_from_slice(piece);
            chain.push(m).unwrap();
        }
        tx.push(chain.finish().unwrap()).unwrap();
    }
    // One more of 9 segments: more than a packet may take.
    let mut nine = nicpoll::mbuf::RxChain::new();
    for _ in 0..9 {
        let mut m = pool.alloc().unwrap();
        m.append(100).unwrap().fill(0x5a);
        nine.push(m).unwrap();
    }
    tx.push(nine.finish().unwrap()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !tx.is_empty() && std::time::Instant::now() < deadline {
        a.q.tx[0].tx_burst(&mut tx);
    }
    assert!(tx.is_empty());
    let got = receive(b.q.rx[0].as_mut(), frames.len(), Duration::from_secs(5));
    let bytes: Vec<Vec<u8>> = got
        .iter()
        .map(nicpoll::port::testing::packet_bytes)
        .collect();
    assert_same_frames(&bytes, &frames, "jumbo frames through scatter receive");
    // The device's buffers are the pool's data room rounded down to 128.
    let buf = room / 128 * 128;
    for (m, &len) in got.iter().zip(&lens) {
        assert_eq!(m.nb_segs(), len.div_ceil(buf), "a {len}-byte frame");
    }
    let sa = a.port.stats();
    assert_eq!((sa.opackets, sa.oerrors), (lens.len() as u64, 1), "{sa:?}");
    let sb = b.port.stats();
    assert_eq!(sb.ibytes, lens.iter().sum::<usize>() as u64);
    drop(got);
    drop((a.q, b.q));
    drop((a.port, b.port));
    assert_eq!(pool.in_use(), 0, "every segment back in the pool");
}

#[test]
fn a_firmware_code_in_the_high_byte_of_an_aq_status_is_no_error() {
    // The admin queue's retval carries the status in its low byte; the high
    // byte may hold a firmware-internal code (iavf_asq_send_command: "strip
    // off FW internal code").
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "aq-retval", 2048);
    let vf = Arc::new(
        nicpoll_iavf::sim::SimVf::new(sim("rv-a", PfModel::X710, MAC_A, Wire::None)).unwrap(),
    );
    vf.faults().aq_internal_code(0x5a);
    let port = nicpoll_iavf::IavfPort::with_options(
        vf.bar(),
        vf.clone() as Arc<dyn nicpoll_iavf::DmaMap>,
        mem.clone(),
        "rv-a",
        opts(),
        0,
    )
    .unwrap_or_else(|e| panic!("bring-up with a firmware code in retval: {e}"));
    let a = start(Rig { vf, port }, &pool, 1, 128);
    assert!(a.port.link().up);
    drop(a.q);
}

#[test]
fn the_link_is_down_while_the_vf_is_reset() {
    // DPDK marks the link down on RESET_IMPENDING (iavf_vchnl.c): a port whose
    // recovery fails must not go on saying its link is up.
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "link-reset", 2048);
    let r = rig(sim("lk-a", PfModel::X710, MAC_A, Wire::None), &mem, opts());
    let vf = r.vf.clone();
    let mut a = start(r, &pool, 1, 128);
    assert!(a.port.link().up);
    // The PF resets the VF, then stops answering it.
    vf.faults()
        .reset_on_opcode(nicpoll_iavf::virtchnl::Op::Version.raw());
    vf.faults().pf_silent(true);
    vf.faults().reset_vf();
    wait_for("a failed recovery", Duration::from_secs(5), || {
        a.port.poll_events().is_err()
    });
    assert!(!a.port.link().up, "link down while the VF is not back");
    vf.faults().pf_silent(false);
    resume(&mut a, Duration::from_secs(5));
    wait_for("link up again", Duration::from_secs(2), || a.port.link().up);
    drop(a.q);
}

#[test]
fn frames_under_17_bytes_are_refused_and_counted_on_both_transmit_paths() {
    // The hardware takes no frame under 17 bytes: Linux's iavf pads to
    // IAVF_MIN_TX_LEN, DPDK refuses below IAVF_TX_MIN_PKT_LEN; on an i40e PF
    // one that gets through is a malicious-driver event that disables the VF.
    // Lengths 1, 16 land in different groups of the vector loops and the
    // scalar pairs; 17 is sent.
    for simd in [MaxSimd::Best, MaxSimd::Sse, MaxSimd::Scalar] {
        let mem = Arc::new(DmaMemory::plain());
        let pool = pool(&mem, "runts", 4096);
        let o = nicpoll_iavf::IavfOptions { simd, ..opts() };
        let lab = |name, mac| nicpoll_iavf::sim::SimConfig {
            spoofchk: false,
            ..sim(name, PfModel::X710, mac, Wire::None)
        };
        let (mut a, mut b) = pair(lab("rt-a", MAC_A), lab("rt-b", MAC_B), &mem, &pool, o);
        let lens = [
            64usize, 64, 64, 64, 64, 16, 64, 64, 1, 64, 64, 64, 17, 64, 64, 16,
        ];
        let frames: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let mut f = udp_frame(MAC_B, MAC_A, i as u32, 9, 64);
                f.truncate(len);
                f
            })
            .collect();
        let mut batch = nicpoll::mbuf::MbufBatch::with_burst(32);
        for f in &frames {
            batch.push(mbuf(&pool, f)).unwrap();
        }
        assert_eq!(
            a.q.tx[0].tx_burst(&mut batch),
            16,
            "simd={simd:?}: all taken"
        );
        let want: Vec<Vec<u8>> = frames.iter().filter(|f| f.len() >= 17).cloned().collect();
        let got: Vec<Vec<u8>> = receive(b.q.rx[0].as_mut(), want.len(), Duration::from_secs(3))
            .iter()
            .map(|m| {
                // The wire pads to 60 bytes; compare what was sent.
                let mut d = m.data().to_vec();
                if d.len() == 60 {
                    d.truncate(17);
                }
                d
            })
            .collect();
        assert_same_frames(&got, &want, &format!("simd={simd:?}: the sendable frames"));
        assert_eq!(xstat(&a.port, "tx_bad_length_packets"), 3, "simd={simd:?}");
        assert!(a.port.stats().oerrors >= 3, "simd={simd:?}");
        assert_eq!(
            a.vf.stats().mdd_events,
            0,
            "simd={simd:?}: nothing short reached the PF"
        );
        assert!(!a.vf.status().mailbox_disabled, "simd={simd:?}");
        // The queue and the VF go on.
        assert_eq!(a_to_b(&mut a, &mut b, &pool, 500, 32), 32, "simd={simd:?}");
        drop((a.q, b.q));
    }
}
