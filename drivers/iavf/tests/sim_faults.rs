//! The simulated VF's fault knobs and its DMA fault detection.
#![cfg(feature = "sim")]

mod sim_util;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll_iavf::sim::{EthStats, PfModel, ResetTiming, RxCorruption, SimConfig};
use sim_util::*;

fn wire_frame(rx: &Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a frame on the wire")
}

#[test]
fn vf_reset_sequence() {
    let (mut rig, _) = Rig::up(SimConfig {
        reset_timing: ResetTiming {
            impending: Duration::from_millis(30),
            in_progress: Duration::from_millis(60),
            completed: Duration::from_millis(40),
            ..Default::default()
        },
        ..cfg()
    });
    rig.event();
    let (inject, _wire) = rig.vf.wire_channel();
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    rig.event();
    rig.vf.faults().reset_vf();
    // RESET_IMPENDING arrives while the admin queue still works.
    let ev = rig.event();
    assert_eq!(ev.event().0, 2);
    assert_eq!(le32(&ev.payload, 12) as i32, 255, "severity: certain doom");
    // Then: ARQ disabled and VFR_INPROGRESS, then VFACTIVE (Linux 6.12's PFs
    // never write VFR_COMPLETED).
    let mut seen = vec![rig.bar.read32(r::RSTAT) & 3];
    let mut arq_off_with_rstat = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let s = rig.bar.read32(r::RSTAT) & 3;
        if arq_off_with_rstat.is_none() && rig.bar.read32(r::ARQLEN) & r::LEN_ENABLE == 0 {
            arq_off_with_rstat = Some(s);
        }
        if *seen.last().unwrap() != s {
            seen.push(s);
            if s == 0 {
                // Writes are lost while the function is in reset.
                rig.bar.write32(r::ATQBAL, 0x1234_5600);
                assert_ne!(rig.bar.read32(r::ATQBAL), 0x1234_5600);
                rig.until("registers cleared", || rig.bar.read32(r::ATQBAL) == 0);
                // Queues are stopped: a frame from the wire is lost.
                inject.send(frame(VF_MAC, PEER_MAC, 1, 64)).unwrap();
            }
        }
        if seen.ends_with(&[0, 2]) {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(seen, vec![2, 0, 2]);
    assert_eq!(arq_off_with_rstat, Some(0));
    let stats = rig.vf.stats();
    assert_eq!(stats.resets, 1);
    assert!(stats.dropped_writes >= 1);
    assert_eq!(stats.rx_delivered, 0);
    assert_eq!(rig.rx_desc(&q, 0)[1] & 1, 0);
    let st = rig.vf.status();
    // i40e: ACTIVE again once the reset is done, nothing configured.
    assert!(st.active && !st.queues_enabled);
    assert!(st.rx_queues.iter().all(|q| !q.enabled && q.ring_len == 0));
    // The VF starts over: AQ, VERSION, resources.
    rig.init_aq();
    rig.bring_up(cap::L2 | cap::RSS_PF);
    assert_eq!(rig.eth_stats(), [0; 12]);
}

#[test]
fn ice_disables_the_mailbox_before_the_state_says_reset() {
    // ice_trigger_vf_reset: VF_MBX_ARQLEN/ATQLEN cleared first, VFGEN_RSTAT
    // goes on reading VFACTIVE until the hardware gets to it. The device moves
    // only in steps here (manual mode), so what a descheduled thread would
    // make of the timing cannot blur the sequence.
    let lag = Duration::from_millis(200);
    let (rig, _) = Rig::up(SimConfig {
        pf: PfModel::E810,
        reset_timing: ResetTiming {
            impending: Duration::from_millis(1),
            in_progress: Duration::from_millis(20),
            completed: Duration::from_millis(5),
            rstat_lag: lag,
        },
        ..cfg()
    });
    let mailbox_on = || rig.bar.read32(r::ARQLEN) & r::LEN_ENABLE != 0;
    let rstat = || rig.bar.read32(r::RSTAT) & 3;
    rig.vf.set_manual(true);
    rig.vf.faults().reset_vf();
    let deadline = Instant::now() + Duration::from_secs(5);
    // The mailbox went off between these two instants.
    let (before_off, after_off) = loop {
        assert!(Instant::now() < deadline, "the mailbox stayed on");
        std::thread::sleep(Duration::from_millis(1));
        let t = Instant::now();
        rig.vf.step();
        if !mailbox_on() {
            break (t, Instant::now());
        }
    };
    let stale = rstat();
    // Read within the lag of the step that turned the mailbox off: stale.
    if before_off.elapsed() < lag {
        assert_eq!(stale, 2, "a stale VFACTIVE");
    }
    assert_eq!(rig.vf.stats().resets, 0);
    // The hardware's clock ends it, step or not; then the reset runs its course.
    std::thread::sleep(lag.saturating_sub(after_off.elapsed()));
    assert_eq!(rstat(), 0, "reset in progress");
    let deadline = Instant::now() + Duration::from_secs(5);
    while rig.vf.stats().resets == 0 || rstat() != 2 {
        assert!(Instant::now() < deadline, "the reset did not finish");
        std::thread::sleep(Duration::from_millis(1));
        rig.vf.step();
    }
    assert_eq!(rig.vf.stats().resets, 1);
    rig.vf.set_manual(false);
}

#[test]
fn deadbeef_while_in_reset() {
    let (rig, _) = Rig::up(SimConfig {
        reset_timing: ResetTiming {
            impending: Duration::ZERO,
            in_progress: Duration::from_millis(100),
            completed: Duration::from_millis(1),
            ..Default::default()
        },
        ..cfg()
    });
    rig.vf.faults().deadbeef_during_reset(true);
    rig.vf.faults().reset_vf();
    rig.until("0xDEADBEEF", || rig.bar.read32(r::RSTAT) == 0xDEAD_BEEF);
    assert_eq!(rig.bar.read32(r::RSTAT) & 3, 3);
    assert_eq!(rig.bar.read32(r::ARQLEN), 0xDEAD_BEEF);
    rig.until("active", || rig.bar.read32(r::RSTAT) == 2);
}

#[test]
fn reset_in_the_middle_of_configuration() {
    let (mut rig, _) = Rig::up(cfg());
    rig.event();
    rig.vf.faults().reset_on_opcode(op::CONFIG_VSI_QUEUES);
    let p = Pair {
        qid: 0,
        tx_len: 64,
        tx_ring: 0x1000,
        rx_len: 64,
        rx_ring: 0x2000,
        buf: 2048,
        max_pkt: 1518,
    };
    rig.send(op::CONFIG_VSI_QUEUES, &vsi_queues(rig.vsi_id, &[p]));
    // No reply: RESET_IMPENDING, then the reset.
    let ev = rig.recv(Duration::from_secs(1)).unwrap();
    assert_eq!((ev.op, ev.event().0), (op::EVENT, 2));
    rig.until("reset", || {
        rig.vf.stats().resets == 1 && rig.bar.read32(r::RSTAT) & 3 == 2
    });
    assert_eq!(rig.vf.status().rx_queues[0].ring_len, 0);
}

#[test]
fn reset_after_transmitted_frames() {
    let (mut rig, _) = Rig::up(cfg());
    let (_inject, wire) = rig.vf.wire_channel();
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    rig.vf.faults().reset_after_tx_frames(3);
    for i in 0..3 {
        rig.put_tx(&mut q, &frame(PEER_MAC, VF_MAC, i, 64), false, None);
    }
    rig.ring_tx(&q);
    for _ in 0..3 {
        wire_frame(&wire);
    }
    rig.until("reset", || rig.vf.stats().resets == 1);
}

#[test]
fn new_vsi_id_after_reset() {
    let (mut rig, res) = Rig::up(cfg());
    rig.vf.faults().new_vsi_id_on_reset(true);
    rig.vf.faults().reset_vf();
    rig.until("reset", || {
        rig.vf.stats().resets == 1 && rig.bar.read32(r::RSTAT) & 3 == 2
    });
    rig.init_aq();
    let new = rig.bring_up(cap::L2);
    assert_ne!(new.vsi_id, res.vsi_id);
    // A driver still using the old id is refused.
    rig.expect(op::GET_STATS, &queue_select(res.vsi_id, 0, 0), EINVAL);
    rig.expect(op::GET_STATS, &queue_select(new.vsi_id, 0, 0), SUCCESS);
}

#[test]
fn silent_pf_and_lost_replies() {
    let (mut rig, _) = Rig::up(cfg());
    rig.event();
    let vsi = rig.vsi_id;
    rig.vf.faults().pf_silent(true);
    let wb = rig.send(
        op::ADD_ETH_ADDR,
        &ether_addrs(vsi, &[[0x01, 0, 0x5e, 0, 0, 1]]),
    );
    // The firmware completes the command; the PF does nothing.
    assert_eq!(wb.flags & (f::DD | f::CMP | f::ERR), f::DD | f::CMP);
    assert!(rig.recv(Duration::from_millis(50)).is_none());
    assert_eq!(rig.vf.status().mac_filters.len(), 2);
    rig.vf.faults().pf_silent(false);
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    // A lost reply: the PF acts, the VF hears nothing.
    rig.vf.faults().drop_pf_replies(1);
    rig.send(
        op::ADD_ETH_ADDR,
        &ether_addrs(vsi, &[[0x01, 0, 0x5e, 0, 0, 1]]),
    );
    assert!(rig.recv(Duration::from_millis(50)).is_none());
    assert_eq!(rig.vf.status().mac_filters.len(), 3);
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
}

#[test]
fn link_down_and_up() {
    let (mut rig, _) = Rig::up(cfg());
    rig.event();
    let (inject, wire) = rig.vf.wire_channel();
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    assert_eq!(rig.event().event(), (1, 0x10, 1));
    rig.vf.faults().set_link(false);
    assert_eq!(rig.event().event(), (1, 0, 0));
    inject.send(frame(VF_MAC, PEER_MAC, 1, 64)).unwrap();
    rig.until("lost on receive", || rig.vf.stats().rx_link_down == 1);
    rig.put_tx(&mut q, &frame(PEER_MAC, VF_MAC, 2, 64), true, None);
    rig.ring_tx(&q);
    // The descriptor completes, the frame goes nowhere.
    rig.wait_tx_done(&q, 0);
    assert!(wire.recv_timeout(Duration::from_millis(50)).is_err());
    rig.vf.faults().set_link(true);
    assert_eq!(rig.event().event(), (1, 0x10, 1));
    inject.send(frame(VF_MAC, PEER_MAC, 3, 64)).unwrap();
    rig.wait_rx(&q, 0);
}

#[test]
fn corrupted_rx_write_back() {
    let (mut rig, _) = Rig::up(cfg());
    let (inject, _wire) = rig.vf.wire_channel();
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    let faults = rig.vf.faults();
    faults.corrupt_rx(RxCorruption::BadLength, 1);
    inject.send(frame(VF_MAC, PEER_MAC, 1, 64)).unwrap();
    let d = rig.wait_rx(&q, 0);
    assert_eq!(rx_len(d[1]), 0x3FFF, "longer than any buffer");
    faults.corrupt_rx(RxCorruption::ErrorBit, 1);
    inject.send(frame(VF_MAC, PEER_MAC, 2, 64)).unwrap();
    let d = rig.wait_rx(&q, 1);
    assert_eq!(rx_error(d[1]) & 1, 1, "RXE");
    faults.corrupt_rx(RxCorruption::NoEop, 1);
    inject.send(frame(VF_MAC, PEER_MAC, 3, 64)).unwrap();
    let d = rig.wait_rx(&q, 2);
    assert!(!rx_eop(d[1]));
    // Then normal again.
    inject.send(frame(VF_MAC, PEER_MAC, 4, 64)).unwrap();
    let d = rig.wait_rx(&q, 3);
    assert!(rx_eop(d[1]) && rx_len(d[1]) == 64 && rx_error(d[1]) == 0);
}

#[test]
fn dropped_frames_and_oversize_delivery() {
    let (mut rig, _) = Rig::up(cfg());
    let (inject, wire) = rig.vf.wire_channel();
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let faults = rig.vf.faults();
    faults.drop_rx_frames(2);
    for i in 0..3 {
        inject.send(frame(VF_MAC, PEER_MAC, i, 64)).unwrap();
    }
    rig.wait_rx(&q, 0);
    assert_eq!(&rig.read(q.rx_buf(0), 18)[14..18], &2u32.to_be_bytes());
    assert_eq!(rig.eth_stats()[4], 2, "rx_discards");
    // A lost transmit frame: DD written, nothing on the wire, no counter.
    faults.drop_tx_frames(1);
    rig.put_tx(&mut q, &frame(PEER_MAC, VF_MAC, 10, 64), true, None);
    rig.put_tx(&mut q, &frame(PEER_MAC, VF_MAC, 11, 64), true, None);
    rig.ring_tx(&q);
    assert_eq!(&wire_frame(&wire)[14..18], &11u32.to_be_bytes());
    rig.wait_tx_done(&q, 0);
    assert_eq!(rig.eth_stats()[7], 1);
    // A frame longer than max frame (1518) delivered anyway, over two buffers.
    faults.ignore_rx_max_frame(1);
    inject.send(frame(VF_MAC, PEER_MAC, 20, 3000)).unwrap();
    let d2 = rig.wait_rx(&q, 2);
    let d1 = rig.rx_desc(&q, 1);
    assert!(!rx_eop(d1[1]) && rx_len(d1[1]) == 2048);
    assert!(rx_eop(d2[1]) && rx_len(d2[1]) == 952);
    // The next one is dropped again.
    inject.send(frame(VF_MAC, PEER_MAC, 21, 3000)).unwrap();
    rig.until("oversize", || rig.vf.stats().rx_oversize == 1);
}

#[test]
fn stats_wrap_at_48_and_32_bits() {
    let (mut rig, _) = Rig::up(cfg());
    let (inject, _wire) = rig.vf.wire_channel();
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    rig.vf.faults().preset_stats(EthStats {
        rx_unicast: (1 << 48) - 1,
        rx_discards: (1 << 32) - 1,
        ..EthStats::default()
    });
    let s = rig.eth_stats();
    assert_eq!((s[1], s[4]), ((1 << 48) - 1, (1 << 32) - 1));
    rig.vf.faults().drop_rx_frames(1);
    inject.send(frame(VF_MAC, PEER_MAC, 1, 64)).unwrap();
    inject.send(frame(VF_MAC, PEER_MAC, 2, 64)).unwrap();
    rig.wait_rx(&q, 0);
    let s = rig.eth_stats();
    assert_eq!((s[1], s[4]), (1, 0), "wrapped");
    assert_eq!(rig.vf.stats().eth.rx_unicast, (1 << 48) + 1);
}

#[test]
fn dma_fault_on_unmapped_iova() {
    let (mut rig, _) = Rig::up(cfg());
    let (inject, wire) = rig.vf.wire_channel();
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let unmapped = 0x7_0000_0000u64;
    // Rx: a descriptor naming an unmapped buffer. The device's write faults (not
    // done), the descriptor still completes, as a device behind an IOMMU does.
    let mut d = [0u8; 32];
    d[0..8].copy_from_slice(&unmapped.to_le_bytes());
    rig.write(q.rx_ring, &d);
    inject.send(frame(VF_MAC, PEER_MAC, 1, 100)).unwrap();
    let wb = rig.wait_rx(&q, 0);
    assert_eq!(rx_len(wb[1]), 100);
    assert_eq!(rig.vf.dma_faults(), 1);
    let fault = rig.vf.last_dma_fault().unwrap();
    assert_eq!((fault.iova, fault.len, fault.write), (unmapped, 100, true));
    // Tx: a buffer at an unmapped IOVA: read fault, frame dropped as an error.
    let f = frame(PEER_MAC, VF_MAC, 2, 64);
    rig.put_tx(&mut q, &f, true, Some(unmapped + 0x1000));
    rig.ring_tx(&q);
    rig.until("tx fault", || rig.vf.dma_faults() == 2);
    assert!(!rig.vf.last_dma_fault().unwrap().write);
    rig.wait_tx_done(&q, 0);
    assert!(wire.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(rig.vf.stats().eth.tx_errors, 1);
    // A Tx ring at an unmapped IOVA: the fetch faults, the queue stops.
    let vsi = rig.vsi_id;
    let p = Pair {
        qid: 1,
        tx_len: 64,
        tx_ring: unmapped,
        rx_len: 0,
        rx_ring: 0,
        buf: 2048,
        max_pkt: 1518,
    };
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), SUCCESS);
    rig.expect(op::ENABLE_QUEUES, &queue_select(vsi, 0, 2), SUCCESS);
    rig.bar.write32(r::qtx_tail(1), 1);
    rig.until("ring fault", || rig.vf.dma_faults() == 3);
    assert_eq!(rig.vf.last_dma_fault().unwrap().iova, unmapped);
}

#[test]
fn unmap_dma_makes_memory_unreachable() {
    let (mut rig, _) = Rig::up(cfg());
    let (inject, _wire) = rig.vf.wire_channel();
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    let extra = std::sync::Arc::new(rig.mem.alloc("extra buffers", 64 * 1024).unwrap());
    rig.vf.map_dma(&extra).unwrap();
    assert_eq!(rig.vf.dma_mapping_count(), 2);
    // Rx descriptor 0 uses a buffer in the extra region.
    let mut d = [0u8; 32];
    d[0..8].copy_from_slice(&extra.iova(0).to_le_bytes());
    rig.write(q.rx_ring, &d);
    inject.send(frame(VF_MAC, PEER_MAC, 1, 64)).unwrap();
    rig.wait_rx(&q, 0);
    assert_eq!(rig.vf.dma_faults(), 0);
    let mut got = vec![0u8; 64];
    rig.vf.read_iova(extra.iova(0), &mut got).unwrap();
    assert_eq!(got, frame(VF_MAC, PEER_MAC, 1, 64));
    // Unmapped: the next frame into it faults.
    rig.vf.unmap_dma(&extra).unwrap();
    assert!(rig.vf.unmap_dma(&extra).is_err());
    assert!(rig.vf.read_iova(extra.iova(0), &mut got).is_err());
    let old = extra.iova(0);
    // Once unmap_dma returned, the memory may go.
    drop(extra);
    assert!(rig.vf.last_dma_fault().is_none());
    let mut d = [0u8; 32];
    d[0..8].copy_from_slice(&old.to_le_bytes());
    rig.write(q.rx_ring + 32, &d);
    inject.send(frame(VF_MAC, PEER_MAC, 2, 64)).unwrap();
    rig.wait_rx(&q, 1);
    assert_eq!(rig.vf.dma_faults(), 1);
    assert_eq!(rig.vf.last_dma_fault().unwrap().iova, old);
    assert_eq!(rig.vf.dma_mapping_count(), 1);
    // Mapping the same region again is harmless.
    rig.vf.map_dma(&rig.region).unwrap();
    assert_eq!(rig.vf.dma_mapping_count(), 1);
}
