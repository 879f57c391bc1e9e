//! The iavf PMD against the simulated PF in each of its flavours (Linux 6.12's
//! i40e on an X710 or X722, ice on an E810), where the references (Linux's
//! i40e, ice and iavf, DPDK's net_iavf) show what the hardware and the PF do.
#![cfg(feature = "sim")]

mod pmd_util;

use std::sync::Arc;
use std::time::Duration;

use nicpoll::Port;
use nicpoll::memory::DmaMemory;
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
        assert_eq!(got, frames, "{pf}: every frame, in order, byte for byte");
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
    let mem = Arc::new(DmaMemory::plain());
    let pool = pool(&mem, "stale-rstat", 4096);
    let (mut a, mut b) = pair(
        sim("st-a", PfModel::E810, MAC_A, Wire::None),
        sim("st-b", PfModel::E810, MAC_B, Wire::None),
        &mem,
        &pool,
        opts(),
    );
    assert_eq!(a_to_b(&mut a, &mut b, &pool, 0, 32), 32);
    for round in 0..3u32 {
        a.vf.faults().reset_vf();
        wait_for("the reset to show", Duration::from_secs(2), || {
            a.vf.stats().resets > u64::from(round)
        });
        resume(&mut a, Duration::from_millis(900));
        assert_eq!(a_to_b(&mut a, &mut b, &pool, 100 * (round + 1), 32), 32);
    }
    assert_eq!(xstat(&a.port, "vf_reset_recoveries_failed"), 0);
    drop((a.q, b.q));
}
