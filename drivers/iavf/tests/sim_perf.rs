//! How much CPU the simulated VF spends per frame (run with `cargo test
//! --release --test sim_perf -- --ignored --nocapture`): a check that the model
//! will not be the bottleneck of a driver benchmark, not a benchmark itself.
//!
//! The device thread's CPU time (Linux schedstat) is what is measured, so the
//! figure holds on a loaded machine too: the test hands whole rings at once and
//! sleeps while the device works.
#![cfg(feature = "sim")]

mod sim_util;

use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll_iavf::sim::{SimConfig, Wire};
use sim_util::*;

const RING: u32 = 2048;
const PASSES: u32 = 100;

#[test]
#[ignore = "a measurement: cargo test --release --test sim_perf -- --ignored --nocapture"]
fn cpu_per_frame() {
    for (what, wire) in [
        ("tx to an unconnected wire", Wire::None),
        ("tx -> loopback -> rx", Wire::Loopback),
    ] {
        let rx = wire == Wire::Loopback;
        let (mut rig, _) = Rig::up(SimConfig { wire, ..cfg() });
        let mut q = rig.queues(1, RING, 2048, 1518).remove(0);
        // Descriptors without RS are never written back: the ring can be replayed.
        let f = frame(VF_MAC, VF_MAC, 1, 64);
        let buf = rig.alloc(64, 128);
        rig.write(buf, &f);
        for _ in 0..RING {
            rig.put_tx(&mut q, &f, false, Some(buf));
        }
        // The Rx ring in read format, written in one go each pass.
        let mut rx_ring = vec![0u8; RING as usize * 32];
        for i in 0..RING {
            rx_ring[i as usize * 32..i as usize * 32 + 8]
                .copy_from_slice(&q.rx_buf(i).to_le_bytes());
        }
        let per_pass = u64::from(RING - 1);
        let mut cpu = 0u64;
        let wall = Instant::now();
        for pass in 1..=u64::from(PASSES) {
            if rx {
                rig.write(q.rx_ring, &rx_ring);
                let head = ((pass - 1) * per_pass % u64::from(RING)) as u32;
                rig.bar.write32(r::qrx_tail(0), (head + RING - 1) % RING);
            }
            let before = device_cpu_ns();
            rig.bar
                .write32(r::qtx_tail(0), (pass * per_pass % u64::from(RING)) as u32);
            let target = pass * per_pass;
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let s = rig.vf.stats();
                let done = if rx {
                    s.rx_delivered + s.rx_missed
                } else {
                    s.eth.tx_unicast
                };
                if done >= target {
                    break;
                }
                assert!(Instant::now() < deadline, "device stalled");
                std::thread::sleep(Duration::from_micros(200));
            }
            cpu += device_cpu_ns() - before;
        }
        let s = rig.vf.stats();
        let frames = u64::from(PASSES) * per_pass;
        assert_eq!(s.eth.tx_unicast, frames);
        if rx {
            assert_eq!(s.rx_delivered, frames);
        }
        println!(
            "{what}: {frames} frames, device thread {:.0} ns per frame (≈ {:.1} Mpps on a core \
             of its own; includes up to 200 µs of idle spin per {per_pass}-frame pass), {:.2} s wall",
            cpu as f64 / frames as f64,
            frames as f64 / (cpu as f64 / 1e9) / 1e6,
            wall.elapsed().as_secs_f64(),
        );
    }
}

/// CPU time of the simulated VFs' device threads so far (Linux schedstat).
fn device_cpu_ns() -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with("iavf-sim") {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}
