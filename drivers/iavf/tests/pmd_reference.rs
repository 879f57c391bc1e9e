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
