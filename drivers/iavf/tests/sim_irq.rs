//! The simulated VF's interrupt logic and the descriptor write-back it times:
//! lines of four, leftovers at ITR expiry of an armed vector, auto-masking,
//! WB_ON_ITR, the admin-queue cause, and interrupts as a sink sees them.
#![cfg(feature = "sim")]

mod sim_util;

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nicpoll::bar::Bar;
use nicpoll_iavf::sim::{IrqSink, PfModel, SimConfig};
use sim_util::*;

/// Records the vectors fired.
#[derive(Default)]
struct Sink(Mutex<Vec<u16>>);

impl IrqSink for Sink {
    fn raise(&self, vector: u16) {
        self.0.lock().unwrap().push(vector);
    }
}

/// A VF asking `caps`, one queue pair of 64, its queues configured and
/// enabled but mapped to no vector and no DYN_CTL written.
fn bare(cfg: SimConfig, caps: u32) -> (Rig, Queue, Sender<Vec<u8>>) {
    let mut rig = Rig::new(cfg);
    rig.init_aq();
    rig.bring_up(caps);
    let (inject, _wire) = rig.vf.wire_channel();
    std::mem::forget(_wire);
    let vsi = rig.vsi_id;
    let tx_ring = rig.alloc(64 * 16, 4096);
    let rx_ring = rig.alloc(64 * 32, 4096);
    let rx_bufs = rig.alloc(64 * 2048, 4096);
    let q = Queue {
        id: 0,
        len: 64,
        tx_ring,
        rx_ring,
        rx_bufs,
        buf: 2048,
        tx_next: 0,
        rx_next: 0,
    };
    let p = Pair {
        qid: 0,
        tx_len: 64,
        tx_ring,
        rx_len: 64,
        rx_ring,
        buf: 2048,
        max_pkt: 1518,
    };
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), SUCCESS);
    for i in 0..64 {
        rig.post_rx(&q, i);
    }
    rig.bar.write32(r::qrx_tail(0), 63);
    rig.expect(op::ENABLE_QUEUES, &queue_select(vsi, 1, 1), SUCCESS);
    (rig, q, inject)
}

fn done(rig: &Rig, q: &Queue, i: u32) -> bool {
    rx_dd(rig.rx_desc(q, i)[1])
}

/// Whether descriptor `i` gets written back within `ms`.
fn comes(rig: &Rig, q: &Queue, i: u32, ms: u64) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        if done(rig, q, i) {
            return true;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

fn lone(inject: &Sender<Vec<u8>>, i: u32) {
    inject.send(frame(VF_MAC, PEER_MAC, i, 64)).unwrap();
}

#[test]
fn without_a_vector_write_back_comes_by_whole_lines() {
    let (rig, q, inject) = bare(cfg(), cap::L2 | cap::RX_POLLING);
    lone(&inject, 0);
    rig.until("received", || rig.vf.stats().rx_delivered == 1);
    assert!(!comes(&rig, &q, 0, 50), "a lone frame waits for its line");
    for i in 1..3 {
        lone(&inject, i);
    }
    rig.until("received", || rig.vf.stats().rx_delivered == 3);
    assert!(!comes(&rig, &q, 0, 20), "three of four: still waiting");
    lone(&inject, 3);
    assert!(comes(&rig, &q, 0, 2000), "the line is complete");
    assert!((1..4).all(|i| done(&rig, &q, i)));
    assert_eq!(rig.vf.interrupts(0), 0);
}

#[test]
fn an_enabled_vector_writes_leftovers_back_at_its_itr_and_fires() {
    // DPDK's poll mode on an X710: vector 0, INTENA, ITR 0 = 32 µs, queues
    // mapped there; the VF asked for RX_POLLING, so i40e turned vector 0's
    // auto-masking off.
    let (mut rig, q, inject) = bare(cfg(), cap::L2 | cap::RX_POLLING);
    let sink = Arc::new(Sink::default());
    rig.vf.set_irq_sink(sink.clone());
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 0, 1, 1)]), SUCCESS);
    rig.bar
        .write32(r::VFINT_DYN_CTL01, r::INTENA | (16 << r::INTERVAL_SHIFT));
    for i in 0..3 {
        lone(&inject, i);
        assert!(comes(&rig, &q, i, 2000), "frame {i} written back alone");
    }
    assert!(rig.vf.interrupts(0) >= 3);
    assert!(sink.0.lock().unwrap().iter().all(|&v| v == 0));
    assert!(sink.0.lock().unwrap().len() >= 3);
}

#[test]
fn an_interrupt_masks_its_vector_until_software_enables_it_again() {
    // Without RX_POLLING the PF leaves auto-masking on: the first firing
    // disables vector 0, and with it the write-back of leftovers, until
    // DYN_CTL01 is written again (DPDK's alarm does it every 50 ms).
    let (mut rig, q, inject) = bare(cfg(), cap::L2);
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 0, 1, 1)]), SUCCESS);
    rig.bar
        .write32(r::VFINT_DYN_CTL01, r::INTENA | (16 << r::INTERVAL_SHIFT));
    lone(&inject, 0);
    assert!(comes(&rig, &q, 0, 2000));
    assert_eq!(rig.vf.interrupts(0), 1);
    lone(&inject, 1);
    rig.until("received", || rig.vf.stats().rx_delivered == 2);
    assert!(!comes(&rig, &q, 1, 50), "masked: the leftover waits");
    rig.bar
        .write32(r::VFINT_DYN_CTL01, r::INTENA | r::CLEARPBA | r::ITR_NONE);
    assert!(comes(&rig, &q, 1, 2000), "enabled again: written back");
    assert_eq!(rig.vf.interrupts(0), 2);
}

/// Linux's iavf is interrupt-driven: each write-back must raise the queue's
/// vector, a descriptor whose line completed on arrival (the fourth of a
/// line) as much as a leftover the ITR wrote back. Before, the fourth lone
/// frame reached memory with no interrupt, and Linux saw it only at the next
/// one (a ping every 300 ms: every fourth reply 300 ms late).
#[test]
fn every_write_back_raises_the_queues_vector() {
    let (mut rig, q, inject) = bare(cfg(), cap::L2);
    let sink = Arc::new(Sink::default());
    rig.vf.set_irq_sink(sink.clone());
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 1, 1, 1)]), SUCCESS);
    // As iavf_update_enable_itr leaves it after each NAPI poll: INTENA, Rx ITR.
    let enable = |rig: &Rig| {
        rig.bar
            .write32(r::dyn_ctln1(0), r::INTENA | (25 << r::INTERVAL_SHIFT))
    };
    for i in 0..8 {
        enable(&rig);
        lone(&inject, i);
        assert!(comes(&rig, &q, i, 2000), "frame {i}");
        rig.until("the interrupt", || rig.vf.interrupts(1) == u64::from(i) + 1);
    }
    // Masked (no re-enable after the last firing): the fourth of a line is
    // written back, its interrupt waits for INTENA.
    for i in 8..12 {
        lone(&inject, i);
    }
    assert!(comes(&rig, &q, 11, 2000), "the line is complete");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(rig.vf.interrupts(1), 8, "masked");
    enable(&rig);
    rig.until("the held cause", || rig.vf.interrupts(1) == 9);
    assert!(sink.0.lock().unwrap().iter().all(|&v| v == 1));
}

#[test]
fn wb_on_itr_writes_back_without_interrupts() {
    // X722/E810 with WB_ON_ITR: DPDK puts the queues on vector 1 with
    // WB_ON_ITR and a 4 µs ITR, interrupts off.
    let (mut rig, q, inject) = bare(
        SimConfig {
            pf: PfModel::X722,
            ..cfg()
        },
        cap::L2 | cap::WB_ON_ITR,
    );
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 1, 1, 1)]), SUCCESS);
    rig.bar
        .write32(r::dyn_ctln1(0), r::WB_ON_ITR | (2 << r::INTERVAL_SHIFT));
    for i in 0..3 {
        lone(&inject, i);
        assert!(comes(&rig, &q, i, 2000), "frame {i}");
    }
    assert_eq!(rig.vf.interrupts(1), 0);
    // A vector left alone (no DYN_CTLN1 write) writes back nothing alone.
    rig.bar.write32(r::dyn_ctln1(0), 0);
    lone(&inject, 3);
    lone(&inject, 4);
    rig.until("received", || rig.vf.stats().rx_delivered == 5);
    assert!(comes(&rig, &q, 3, 2000), "its line completed");
    assert!(!comes(&rig, &q, 4, 50), "a new line waits");
}

#[test]
fn transmit_write_back_is_timed_the_same_way() {
    let (mut rig, mut q, _inject) = bare(
        SimConfig {
            spoofchk: false,
            ..cfg()
        },
        cap::L2 | cap::RX_POLLING,
    );
    // RS on a lone descriptor, no vector: DD waits for the line.
    let f = frame(PEER_MAC, VF_MAC, 1, 64);
    let i = rig.put_tx(&mut q, &f, true, None);
    rig.ring_tx(&q);
    rig.until("sent", || rig.vf.stats().tx_frames == 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(rig.tx_qw1(&q, i) & 0xF, 0, "not written back yet");
    // Mapped to an enabled vector: the ITR writes it back.
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 0, 1, 1)]), SUCCESS);
    rig.bar
        .write32(r::VFINT_DYN_CTL01, r::INTENA | (16 << r::INTERVAL_SHIFT));
    rig.wait_tx_done(&q, i);
}

#[test]
fn the_admin_queue_cause_fires_vector_0_when_enabled() {
    let (mut rig, _q, _inject) = bare(cfg(), cap::L2 | cap::RX_POLLING);
    // ICR0_ENA1 without ADMINQ: a reply sets the cause, fires nothing.
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    assert_ne!(rig.bar.read32(r::VFINT_ICR01) & (1 << 30), 0);
    assert_eq!(rig.bar.read32(r::VFINT_ICR01), 0, "read to clear");
    assert_eq!(rig.vf.interrupts(0), 0);
    // DPDK's iavf_enable_irq0: ICR0_ENA1 = ADMINQ, DYN_CTL01 = INTENA |
    // CLEARPBA | no ITR.
    rig.bar.write32(r::VFINT_ICR0_ENA1, 1 << 30);
    rig.bar
        .write32(r::VFINT_DYN_CTL01, r::INTENA | r::CLEARPBA | r::ITR_NONE);
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    assert_eq!(rig.vf.interrupts(0), 1);
    // ICR0_ENA1 survives a VF reset (Reset: CORER); DYN_CTL01 does not.
    rig.vf.faults().reset_vf();
    rig.until("reset", || {
        rig.vf.stats().resets == 1 && rig.bar.read32(r::RSTAT) & 3 == 2
    });
    assert_eq!(rig.bar.read32(r::VFINT_ICR0_ENA1), 1 << 30);
    assert_eq!(rig.bar.read32(r::VFINT_DYN_CTL01), 0);
}
