//! Garbage everywhere a driver (or a hostile guest) can put it: every BAR0
//! register written with random and extreme values while the VF's queues
//! run, its rings and admin queue descriptors overwritten with random bytes,
//! frames of random length from the wire. The model must neither panic nor
//! touch memory outside its mappings, and after a function-level reset the VF
//! must come up and carry traffic again.
#![cfg(feature = "sim")]

mod sim_util;

use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll_iavf::sim::{SimConfig, SimVf};
use sim_util::*;

/// A small xorshift: the same garbage every run.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value a fuzzer would try: random, all ones, zero, a high bit, or a
    /// small number (queue indices, lengths).
    fn value(&mut self) -> u32 {
        match self.next() % 6 {
            0 => u32::MAX,
            1 => 0,
            2 => 0x8000_0000 | (self.next() as u32 & 0x3FF),
            3 => self.next() as u32 & 0x3F,
            _ => self.next() as u32,
        }
    }
}

/// Step the device (manual mode) until `VFGEN_RSTAT` reads VFACTIVE.
fn wait_active(vf: &SimVf) {
    let t = Instant::now();
    vf.step();
    while vf.bar().read32(0x8800) & 3 != 2 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the VF never came back"
        );
        vf.step();
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn garbage_in_every_register_ring_and_frame_then_a_reset_brings_it_back() {
    let (mut rig, _) = Rig::up(SimConfig {
        queue_pairs: 4,
        ..cfg()
    });
    let mut qs = rig.queues(4, 64, 2048, 1518);
    let (to_vf, from_vf) = rig.vf.wire_channel();
    rig.vf.set_manual(true);
    let mut g = Garbage(0x2545_F491_4F6C_DD1D);
    // Some frames go through first, so the queues hold state.
    for q in qs.iter_mut() {
        for i in 0..5 {
            let f = frame([0xff; 6], VF_MAC, i, 64 + 9 * i as usize);
            rig.put_tx(q, &f, i % 2 == 0, None);
        }
        rig.ring_tx(q);
    }
    rig.vf.step();
    let region_len = REGION as u64;
    let base = rig.region.iova(0);
    for round in 0..3u32 {
        for off in (0..0x1_0000usize).step_by(4) {
            rig.bar.write32(off, g.value());
            // Every few registers: garbage in the rings and admin queues
            // (the device reads them), frames from the wire, a device step.
            if off.is_multiple_of(64) {
                let at = base + g.next() % (region_len - 64);
                let junk: Vec<u8> = (0..64).map(|_| g.next() as u8).collect();
                rig.vf.write_iova(at, &junk).unwrap();
                let len = (g.next() % 2000) as usize;
                let mut f: Vec<u8> = (0..len).map(|_| g.next() as u8).collect();
                if len >= 6 && g.next().is_multiple_of(2) {
                    f[..6].copy_from_slice(&VF_MAC);
                }
                let _ = to_vf.send(f);
                rig.vf.step();
            }
            // Reads of every register, side effects included.
            let _ = rig.bar.read32(off);
        }
        rig.vf.step();
        if round == 1 {
            // A reset in the middle of the garbage.
            rig.vf.function_level_reset();
        }
    }
    while from_vf.try_recv().is_ok() {}
    let s = rig.vf.stats();
    eprintln!("after the garbage: {s:?}");
    // The device noticed: faults, bad descriptors or resets.
    assert!(
        s.dma_faults + s.tx_bad_desc + s.mdd_events + s.aq_errors + s.resets > 0,
        "{s:?}"
    );
    // A function-level reset, then a fresh bring-up and traffic both ways.
    rig.vf.function_level_reset();
    wait_active(&rig.vf);
    rig.vf.set_manual(false);
    rig.init_aq();
    rig.bring_up(0x0000_0001 | 0x0001_0000);
    let mut q = rig.queues(1, 64, 2048, 1518).remove(0);
    let f = frame([0x02, 0, 0, 0, 0, 0x42], VF_MAC, 1, 100);
    rig.put_tx(&mut q, &f, true, None);
    rig.ring_tx(&q);
    let out = from_vf
        .recv_timeout(Duration::from_secs(5))
        .expect("a frame from the VF after the reset");
    assert_eq!(out[..100], f[..]);
    let g = frame(VF_MAC, [0x02, 0, 0, 0, 0, 0x42], 2, 90);
    to_vf.send(g.clone()).unwrap();
    let slot = q.rx_next;
    rig.wait_rx(&q, slot);
    assert_eq!(rig.read(q.rx_buf(slot), 90), g);
}
