//! The VFs of one simulated PF (`SimPf`) served by one polling thread, the
//! iavf PMD on each: traffic between them, a VF in manual mode beside one
//! that runs, VFs leaving, and the thread ending with the PF's last handle.
//! Threads are counted in `/proc/self/task` (the kernel's list, by the names
//! the model gives them), not through the model.
#![cfg(feature = "sim")]

mod pmd_util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::memory::DmaMemory;
use nicpoll::port::MacAddr;
use nicpoll_iavf::sim::{PfModel, SimConfig, SimPf, SimVf, Wire};
use pmd_util::*;

/// Threads of this process whose name (`comm`, at most 15 bytes: keep the
/// names short) is `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

/// Frames A → B and B → A, `n` each way, compared byte for byte.
fn both_ways(a: &mut Side, b: &mut Side, pool: &nicpoll::mempool::Mempool, n: u32) {
    for (from, to, src, dst) in [(0, 1, MAC_A, MAC_B), (1, 0, MAC_B, MAC_A)] {
        let sent: Vec<Vec<u8>> = (0..n).map(|i| udp_frame(dst, src, i, 1000, 64)).collect();
        let (tx, rx) = if from == 0 {
            (&mut a.q.tx[0], &mut b.q.rx[0])
        } else {
            (&mut b.q.tx[0], &mut a.q.rx[0])
        };
        send_all(pool, tx.as_mut(), &sent);
        let got: Vec<Vec<u8>> = receive(rx.as_mut(), sent.len(), Duration::from_secs(10))
            .iter()
            .map(|m| m.data().to_vec())
            .collect();
        assert_same_frames(&got, &sent, &format!("VF {from} -> VF {to}"));
    }
}

#[test]
fn vfs_of_one_pf_forward_on_its_one_polling_thread() {
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "one-pf", 4096);
    let pf = SimPf::new("pfone", PfModel::X710).unwrap();
    assert_eq!(threads_named("iavf-sim-pfone"), 1);
    let a = rig_on(
        &pf,
        sim("p1a", PfModel::X710, MAC_A, Wire::None),
        &mem,
        opts(),
    );
    let b = rig_on(
        &pf,
        sim("p1b", PfModel::X710, MAC_B, Wire::None),
        &mem,
        opts(),
    );
    SimVf::connect(&a.vf, &b.vf);
    let (mut a, mut b) = (start(a, &pool, 1, 512), start(b, &pool, 1, 512));
    assert_eq!(pf.vf_count(), 2);
    assert!(a.vf.pf().same_pf(&pf) && b.vf.pf().same_pf(&pf));
    assert_eq!(a.vf.pf().thread_id(), pf.thread_id());
    // One thread for both VFs, none of their own.
    assert_eq!(threads_named("iavf-sim-pfone"), 1);
    assert_eq!(threads_named("iavf-sim-p1a"), 0);
    assert_eq!(threads_named("iavf-sim-p1b"), 0);
    both_ways(&mut a, &mut b, &pool, 500);
    assert_eq!(a.vf.stats().tx_frames, 500);
    assert_eq!(b.vf.stats().rx_delivered, 500);

    // A VF on a PF of its own gets a thread of its own, as before.
    let alone = SimVf::new(SimConfig {
        name: "p1c".into(),
        ..SimConfig::default()
    })
    .unwrap();
    assert!(!alone.pf().same_pf(&pf));
    assert_eq!(threads_named("iavf-sim-p1c"), 1);
    drop(alone);
    assert_eq!(threads_named("iavf-sim-p1c"), 0, "its thread ended");
}

#[test]
fn a_vf_in_manual_mode_moves_only_when_stepped_while_its_sibling_runs() {
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "manual-pf", 4096);
    let pf = SimPf::new("pfman", PfModel::X710).unwrap();
    let a = rig_on(
        &pf,
        sim("pfman-a", PfModel::X710, MAC_A, Wire::None),
        &mem,
        opts(),
    );
    let b = rig_on(
        &pf,
        sim("pfman-b", PfModel::X710, MAC_B, Wire::None),
        &mem,
        opts(),
    );
    // A third VF on its own loopback keeps the PF's thread busy meanwhile.
    let c = rig_on(
        &pf,
        sim(
            "pfman-c",
            PfModel::X710,
            MacAddr([0x02, 0, 0, 0, 0, 0x0c]),
            Wire::Loopback,
        ),
        &mem,
        opts(),
    );
    SimVf::connect(&a.vf, &b.vf);
    let mut a = start(a, &pool, 1, 512);
    let mut b = start(b, &pool, 1, 512);
    let mut c = start(c, &pool, 1, 512);
    a.vf.set_manual(true);
    let frames: Vec<Vec<u8>> = (0..64).map(|i| udp_frame(MAC_B, MAC_A, i, 7, 64)).collect();
    send_all(&pool, a.q.tx[0].as_mut(), &frames);
    // The sibling on loopback works while A is parked.
    let mac_c = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
    let own: Vec<Vec<u8>> = (0..32).map(|i| udp_frame(mac_c, mac_c, i, 9, 64)).collect();
    send_all(&pool, c.q.tx[0].as_mut(), &own);
    let back = receive(c.q.rx[0].as_mut(), own.len(), Duration::from_secs(10));
    assert_eq!(back.len(), own.len(), "the running VF's loopback");
    drop(back);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(a.vf.stats().tx_frames, 0, "A moved without a step");
    // Steps move A's frames; B (running) receives them.
    let t = Instant::now();
    while a.vf.stats().tx_frames < 64 {
        a.vf.step();
        assert!(t.elapsed() < Duration::from_secs(5), "steps do not move A");
    }
    wait_for("B to receive A's frames", Duration::from_secs(5), || {
        b.vf.stats().rx_delivered == 64
    });
    a.vf.set_manual(false);
    let got: Vec<Vec<u8>> = receive(b.q.rx[0].as_mut(), frames.len(), Duration::from_secs(10))
        .iter()
        .map(|m| m.data().to_vec())
        .collect();
    assert_same_frames(&got, &frames, "A (stepped) -> B (running)");
}

#[test]
fn vfs_leave_a_running_pf_and_its_thread_ends_with_the_last_handle() {
    let pf = SimPf::new("pfgo", PfModel::E810).unwrap();
    let cfg = |name: &str, mac: u16| SimConfig {
        name: name.into(),
        pf: PfModel::E810,
        mac: MacAddr::local(mac),
        wire: Wire::Loopback,
        ..SimConfig::default()
    };
    let a = pf.add_vf(cfg("pfgo-a", 1)).unwrap();
    let b = pf.add_vf(cfg("pfgo-b", 2)).unwrap();
    // Each VF answers its own admin queue on the shared thread: a reset of one
    // leaves the other active.
    a.faults().reset_vf();
    let t = Instant::now();
    while a.stats().resets == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "no reset");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(b.stats().resets, 0);
    drop(a);
    assert_eq!(pf.vf_count(), 1);
    // The other VF still runs: its reset completes on the thread.
    b.faults().reset_vf();
    let t = Instant::now();
    while b.stats().resets == 0 || b.status().reset_state != 2 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "b's reset did not complete"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // A VF of another flavour is refused, by name.
    assert!(pf.add_vf(cfg("pfgo-x", 3)).is_ok(), "same flavour");
    let e = pf
        .add_vf(SimConfig {
            pf: PfModel::X710,
            ..cfg("pfgo-y", 4)
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("pfgo-y") && e.contains("ice"), "{e}");
    // The thread lives while a VF does, and ends with the last handle.
    drop(pf);
    assert_eq!(threads_named("iavf-sim-pfgo"), 1, "b still holds the PF");
    drop(b);
    assert_eq!(threads_named("iavf-sim-pfgo"), 0);
}
