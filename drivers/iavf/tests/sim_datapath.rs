//! The simulated VF's descriptor engine: transmit rings to the wire, the wire to
//! receive rings, with the write-back formats of `iavf_type.h`.
#![cfg(feature = "sim")]

mod sim_util;

use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use nicpoll::bar::Bar;
use nicpoll_iavf::sim::{PfModel, SimConfig};
use sim_util::*;

fn rig_with_wire(cfg: SimConfig) -> (Rig, Sender<Vec<u8>>, Receiver<Vec<u8>>) {
    let (rig, _) = Rig::up(cfg);
    let (tx, rx) = rig.vf.wire_channel();
    (rig, tx, rx)
}

fn wire_frame(rx: &Receiver<Vec<u8>>) -> Vec<u8> {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("a frame on the wire")
}

#[test]
fn tx_reaches_the_wire_byte_exact_and_gets_dd() {
    let (mut rig, _tx, wire) = rig_with_wire(cfg());
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| frame(PEER_MAC, VF_MAC, i, 60 + 100 * i as usize))
        .collect();
    let mut idx = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        idx.push(rig.put_tx(&mut q, f, i == 2, None));
    }
    rig.ring_tx(&q);
    for f in &frames {
        assert_eq!(&wire_frame(&wire), f);
    }
    // DD (DTYPE 0xF) where RS was set, the rest of qword 1 kept; none elsewhere.
    let done = rig.wait_tx_done(&q, idx[2]);
    assert_eq!(done >> 4, 0x007 | ((frames[2].len() as u64) << 30));
    assert_eq!(rig.tx_qw1(&q, idx[0]) & 0xF, 0);
    assert_eq!(rig.tx_qw1(&q, idx[1]) & 0xF, 0);
    let s = rig.eth_stats();
    // tx_bytes, tx_unicast.
    assert_eq!(s[6], frames.iter().map(|f| f.len() as u64).sum::<u64>());
    assert_eq!(s[7], 3);
    assert_eq!(rig.vf.stats().tx_frames, 3);
}

#[test]
fn tx_frame_over_several_descriptors_and_context_descriptors() {
    let (mut rig, _tx, wire) = rig_with_wire(cfg());
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    let f = frame(PEER_MAC, VF_MAC, 7, 1000);
    let (a, b) = (rig.alloc(400, 128), rig.alloc(600, 128));
    rig.write(a, &f[..400]);
    rig.write(b, &f[400..]);
    // A context descriptor (DTYPE 1), then two data descriptors, EOP|RS on the last.
    rig.write_u64(q.tx_ring, 0);
    rig.write_u64(q.tx_ring + 8, 0x1);
    rig.write_u64(q.tx_ring + 16, a);
    rig.write_u64(q.tx_ring + 24, (0x004u64 << 4) | (400 << 34));
    rig.write_u64(q.tx_ring + 32, b);
    rig.write_u64(q.tx_ring + 40, (0x007u64 << 4) | (600 << 34));
    rig.bar.write32(r::qtx_tail(0), 3);
    assert_eq!(wire_frame(&wire), f);
    rig.wait_tx_done(&q, 2);
}

#[test]
fn tx_pads_short_frames_inserts_vlan_refuses_runts() {
    let (mut rig, _tx, wire) = rig_with_wire(cfg());
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let f = frame(PEER_MAC, VF_MAC, 1, 42);
    rig.put_tx(&mut q, &f, false, None);
    rig.ring_tx(&q);
    let got = wire_frame(&wire);
    assert_eq!(got.len(), 60);
    assert_eq!(&got[..42], &f[..]);
    assert!(got[42..].iter().all(|&b| b == 0));
    // IL2TAG1: the tag from qword 1 bits 48-63 is inserted after the MACs
    // (VLAN 100: a filter for it lets the tagged frame past VLAN anti-spoof).
    let vsi = rig.vsi_id;
    rig.expect(op::ADD_VLAN, &vlans(vsi, &[100]), SUCCESS);
    let f = frame(PEER_MAC, VF_MAC, 2, 100);
    let buf = rig.alloc(100, 128);
    rig.write(buf, &f);
    let i = q.tx_next;
    rig.write_u64(q.tx_ring + u64::from(i) * 16, buf);
    rig.write_u64(
        q.tx_ring + u64::from(i) * 16 + 8,
        (0x00Fu64 << 4) | (100 << 34) | (0x2064 << 48),
    );
    q.tx_next += 1;
    rig.ring_tx(&q);
    let got = wire_frame(&wire);
    assert_eq!(&got[12..16], &[0x81, 0x00, 0x20, 0x64]);
    assert_eq!(&got[..12], &f[..12]);
    assert_eq!(&got[16..], &f[12..]);
    // Shorter than 17 bytes: an error, nothing sent.
    rig.put_tx(&mut q, &f[..16], true, None);
    rig.ring_tx(&q);
    rig.until("tx error counted", || rig.vf.stats().eth.tx_errors == 1);
    assert!(wire.recv_timeout(Duration::from_millis(50)).is_err());
}

#[test]
fn anti_spoof_check() {
    let (mut rig, _tx, wire) = rig_with_wire(cfg());
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    rig.put_tx(&mut q, &frame(PEER_MAC, PEER_MAC, 1, 64), false, None);
    rig.put_tx(&mut q, &frame(PEER_MAC, VF_MAC, 2, 64), true, None);
    rig.ring_tx(&q);
    let got = wire_frame(&wire);
    assert_eq!(
        u32::from_be_bytes(got[14..18].try_into().unwrap()),
        2,
        "the spoofed frame is gone"
    );
    let s = rig.eth_stats();
    assert_eq!((s[7], s[10]), (1, 1), "one sent, one tx_discard");
    assert_eq!(rig.vf.stats().tx_spoofed, 1);

    let (mut rig, _tx, wire) = rig_with_wire(SimConfig {
        spoofchk: false,
        ..cfg()
    });
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let f = frame(PEER_MAC, PEER_MAC, 1, 64);
    rig.put_tx(&mut q, &f, false, None);
    rig.ring_tx(&q);
    assert_eq!(wire_frame(&wire), f);
}

#[test]
fn tail_beyond_the_ring_stops_the_queue() {
    let (mut rig, _tx, wire) = rig_with_wire(cfg());
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    rig.bar.write32(r::qtx_tail(q.id), 64);
    rig.until("MDD event", || rig.vf.stats().mdd_events == 1);
    assert!(wire.recv_timeout(Duration::from_millis(20)).is_err());
}

#[test]
fn rx_lands_in_posted_buffers_with_the_right_write_back() {
    let (mut rig, inject, _wire) = rig_with_wire(cfg());
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    let f = frame(VF_MAC, PEER_MAC, 9, 200);
    inject.send(f.clone()).unwrap();
    let d = rig.wait_rx(&q, 0);
    assert!(rx_dd(d[1]) && rx_eop(d[1]));
    assert_eq!(rx_len(d[1]), 200);
    assert_eq!(rx_error(d[1]), 0);
    assert_eq!(rx_ptype(d[1]), 1, "L2 payload");
    assert_eq!(rx_umbcast(d[1]), 0);
    assert_eq!(rx_fltstat(d[1]), 0, "no hash for an L2 frame");
    assert_eq!((d[2], d[3]), (0, 0));
    assert_eq!(rig.read(q.rx_buf(0), 200), f);
    // Broadcast: accepted, UMBCAST 2.
    let b = frame([0xff; 6], PEER_MAC, 10, 64);
    inject.send(b.clone()).unwrap();
    let d = rig.wait_rx(&q, 1);
    assert_eq!(rx_umbcast(d[1]), 2);
    assert_eq!(rig.read(q.rx_buf(1), 64), b);
    // Another MAC, or a multicast group not joined: filtered out.
    inject.send(frame(PEER_MAC, PEER_MAC, 11, 64)).unwrap();
    let mc = [0x01, 0x00, 0x5e, 0, 0, 7];
    inject.send(frame(mc, PEER_MAC, 12, 64)).unwrap();
    rig.until("filtered", || rig.vf.stats().rx_filtered == 2);
    assert_eq!(rig.rx_desc(&q, 2)[1] & 1, 0);
    // After ADD_ETH_ADDR the group is received (UMBCAST 1).
    let vsi = rig.vsi_id;
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[mc]), SUCCESS);
    inject.send(frame(mc, PEER_MAC, 13, 64)).unwrap();
    let d = rig.wait_rx(&q, 2);
    assert_eq!(rx_umbcast(d[1]), 1);
    let s = rig.eth_stats();
    // rx_bytes count 4 bytes of CRC per frame; uni/multi/broadcast.
    assert_eq!(s[0], 200 + 64 + 64 + 3 * 4);
    assert_eq!((s[1], s[2], s[3], s[4]), (1, 1, 1, 0));
}

#[test]
fn rx_and_tx_ring_wrap() {
    let (mut rig, inject, wire) = rig_with_wire(cfg());
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    // Transmit 200 frames through a 64-descriptor ring, 40 at a time, RS on the
    // last of each batch; reuse descriptors only once they are done.
    let mut sent = 0u32;
    while sent < 200 {
        let mut last = 0;
        for k in 0..40 {
            last = rig.put_tx(
                &mut q,
                &frame(PEER_MAC, VF_MAC, sent + k, 64),
                k == 39,
                None,
            );
        }
        rig.ring_tx(&q);
        for k in 0..40 {
            let got = wire_frame(&wire);
            assert_eq!(
                u32::from_be_bytes(got[14..18].try_into().unwrap()),
                sent + k
            );
        }
        rig.wait_tx_done(&q, last);
        sent += 40;
    }
    // Receive 200 frames, refilling like a driver: read in order, re-post the
    // descriptor, tail = the last refilled index.
    for i in 0..200u32 {
        inject
            .send(frame(VF_MAC, PEER_MAC, i, 64 + (i as usize % 50)))
            .unwrap();
        let slot = q.rx_next;
        let d = rig.wait_rx(&q, slot);
        assert_eq!(rx_len(d[1]), 64 + (i as usize % 50));
        let data = rig.read(q.rx_buf(slot), 18);
        assert_eq!(u32::from_be_bytes(data[14..18].try_into().unwrap()), i);
        rig.post_rx(&q, slot);
        rig.bar.write32(r::qrx_tail(0), slot);
        q.rx_next = (slot + 1) % q.len;
    }
    assert_eq!(rig.vf.stats().rx_delivered, 200);
}

#[test]
fn full_rx_ring_counts_missed() {
    let (mut rig, inject, _wire) = rig_with_wire(cfg());
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    // Tail = 63: the device owns 63 descriptors.
    for i in 0..70 {
        inject.send(frame(VF_MAC, PEER_MAC, i, 64)).unwrap();
    }
    rig.until("70 frames seen", || {
        let s = rig.vf.stats();
        s.rx_delivered + s.rx_missed == 70
    });
    let s = rig.vf.stats();
    assert_eq!((s.rx_delivered, s.rx_missed), (63, 7));
    assert_eq!(
        rig.rx_desc(&q, 63)[1] & 1,
        0,
        "the slot at the tail stays the driver's"
    );
    let e = rig.eth_stats();
    // All 70 counted as received unicast, 7 discarded (DPDK: imissed).
    assert_eq!((e[1], e[4]), (70, 7));
}

#[test]
fn frames_longer_than_the_buffer_are_chained() {
    let (mut rig, inject, _wire) = rig_with_wire(cfg());
    // 1024-byte buffers, frames up to 3000 bytes.
    let q = rig.queues(1, 64, 1024, 3000).remove(0);
    let f = frame(VF_MAC, PEER_MAC, 3, 2500);
    inject.send(f.clone()).unwrap();
    let d2 = rig.wait_rx(&q, 2);
    let (d0, d1) = (rig.rx_desc(&q, 0), rig.rx_desc(&q, 1));
    assert!(rx_dd(d0[1]) && !rx_eop(d0[1]) && rx_len(d0[1]) == 1024);
    assert!(rx_dd(d1[1]) && !rx_eop(d1[1]) && rx_len(d1[1]) == 1024);
    assert!(rx_eop(d2[1]) && rx_len(d2[1]) == 452);
    let mut got = rig.read(q.rx_buf(0), 1024);
    got.extend(rig.read(q.rx_buf(1), 1024));
    got.extend(rig.read(q.rx_buf(2), 452));
    assert_eq!(got, f);
    // Longer than the max frame: dropped and counted.
    inject.send(frame(VF_MAC, PEER_MAC, 4, 3001)).unwrap();
    rig.until("oversize", || rig.vf.stats().rx_oversize == 1);
    assert_eq!(rig.rx_desc(&q, 3)[1] & 1, 0);
    assert_eq!(rig.eth_stats()[4], 1);
}

#[test]
fn vlan_stripping_on_receive() {
    // i40e's VF VSI strips every tag into L2TAG1 from the start (PVLAN_MODE_ALL,
    // EMOD 0): nobody asked for it.
    let (mut rig, inject, _wire) = rig_with_wire(cfg());
    assert!(rig.vf.status().vlan_strip);
    let q = rig.queues(1, 64, 2048, 1518).remove(0);
    let mut f = frame(VF_MAC, PEER_MAC, 5, 100);
    f.splice(12..12, [0x81, 0x00, 0x00, 0x2a]);
    inject.send(f.clone()).unwrap();
    let d = rig.wait_rx(&q, 0);
    assert_ne!(d[1] & (1 << 2), 0, "L2TAG1P");
    assert_eq!((d[0] >> 16) & 0xFFFF, 0x2a);
    assert_eq!(rx_len(d[1]), 100);
    let mut untagged = f.clone();
    untagged.drain(12..16);
    assert_eq!(rig.read(q.rx_buf(0), 100), untagged);
    // Turned off, the tag stays in the frame.
    rig.expect(op::DISABLE_VLAN_STRIPPING, &[], SUCCESS);
    inject.send(f.clone()).unwrap();
    let d = rig.wait_rx(&q, 1);
    assert_eq!(d[1] & (1 << 2), 0, "no L2TAG1P");
    assert_eq!(rx_len(d[1]), 104);
    assert_eq!(rig.read(q.rx_buf(1), 104), f);
    // A reset brings the default back.
    rig.vf.faults().reset_vf();
    // (The status is published at the end of the device step that wrote
    // VFACTIVE: wait for it rather than for the register.)
    rig.until("the reset's default back", || {
        rig.vf.stats().resets == 1 && rig.vf.status().vlan_strip
    });

    // ice strips only when VLAN offloads were negotiated
    // (ice_vf_init_vlan_stripping).
    let (rig, _) = Rig::up(SimConfig {
        pf: PfModel::E810,
        ..cfg()
    });
    assert!(!rig.vf.status().vlan_strip);
    let mut rig = Rig::new(SimConfig {
        pf: PfModel::E810,
        ..cfg()
    });
    rig.init_aq();
    rig.bring_up(cap::L2 | cap::VLAN);
    assert!(rig.vf.status().vlan_strip);
}

#[test]
fn vlan_anti_spoof_of_a_spoof_checked_vf() {
    // i40e turns VLAN anti-spoofing on with MAC anti-spoofing: a tagged frame
    // leaves only with a VLAN the VF has a filter for.
    let (mut rig, _tx, wire) = rig_with_wire(cfg());
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let mut f = frame(PEER_MAC, VF_MAC, 1, 64);
    f.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
    rig.put_tx(&mut q, &f, true, None);
    rig.ring_tx(&q);
    rig.until("spoofed", || rig.vf.stats().tx_spoofed == 1);
    let vsi = rig.vsi_id;
    rig.expect(op::ADD_VLAN, &vlans(vsi, &[10]), SUCCESS);
    rig.put_tx(&mut q, &f, true, None);
    rig.ring_tx(&q);
    assert_eq!(wire_frame(&wire), f);
}

#[test]
fn disabled_queue_drops() {
    let (mut rig, inject, _wire) = rig_with_wire(cfg());
    rig.queues(1, 64, 2048, 1518);
    let vsi = rig.vsi_id;
    rig.expect(op::DISABLE_QUEUES, &queue_select(vsi, 1, 1), SUCCESS);
    inject.send(frame(VF_MAC, PEER_MAC, 1, 64)).unwrap();
    rig.until("dropped", || rig.vf.stats().rx_queue_off == 1);
}

#[test]
fn a_frame_under_17_bytes_is_a_malicious_driver_event() {
    // i40e: the queue stops and the PF disables the VF (its messages get no
    // answer) until the host resets it.
    let (mut rig, _tx, wire) = rig_with_wire(cfg());
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let f = frame(PEER_MAC, VF_MAC, 1, 64);
    rig.put_tx(&mut q, &f[..16], false, None);
    rig.put_tx(&mut q, &f, true, None);
    rig.ring_tx(&q);
    rig.until("MDD event", || rig.vf.stats().mdd_events == 1);
    assert!(
        wire.recv_timeout(Duration::from_millis(50)).is_err(),
        "queue stopped"
    );
    rig.until("VF disabled", || rig.vf.status().mailbox_disabled);
    rig.send(op::VERSION, &version(1, 1));
    while let Some(m) = rig.recv(Duration::from_millis(100)) {
        assert_ne!(m.op, op::VERSION, "a disabled VF gets no answer");
    }
    rig.vf.faults().reset_vf();
    rig.until("the host's reset enabling the VF again", || {
        rig.vf.stats().resets == 1
            && rig.bar.read32(r::RSTAT) & 3 == 2
            && !rig.vf.status().mailbox_disabled
    });

    // ice: the queue stops, the VF goes on answering.
    let (mut rig, _tx, _wire) = rig_with_wire(SimConfig {
        pf: PfModel::E810,
        ..cfg()
    });
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    rig.put_tx(&mut q, &f[..1], true, None);
    rig.ring_tx(&q);
    rig.until("MDD event", || rig.vf.stats().mdd_events == 1);
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
}
