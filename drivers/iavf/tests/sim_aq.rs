//! The simulated VF's registers, admin queue and the first virtchnl exchanges,
//! driven through its BAR and DMA memory by a hand-written client.
#![cfg(feature = "sim")]

mod sim_util;

use std::time::Duration;

use nicpoll::bar::Bar;
use nicpoll_iavf::sim::{PfModel, SimConfig};
use sim_util::*;

#[test]
fn bar_is_64k_and_starts_active() {
    let rig = Rig::new(cfg());
    assert_eq!(rig.bar.len(), 0x10000);
    // Reset done, VF active (VFGEN_RSTAT: 2 = VIRTCHNL_VFR_VFACTIVE).
    assert_eq!(rig.bar.read32(r::RSTAT) & 3, 2);
    // Nothing configured yet.
    assert_eq!(rig.bar.read32(r::ATQLEN), 0);
    assert_eq!(rig.bar.read32(r::ARQLEN), 0);
    // RSTAT belongs to the device.
    rig.bar.write32(r::RSTAT, 0);
    assert_eq!(rig.bar.read32(r::RSTAT) & 3, 2);
    // Interrupt registers are stored.
    rig.bar.write32(r::VFINT_DYN_CTL01, 0x1B);
    assert_eq!(rig.bar.read32(r::VFINT_DYN_CTL01), 0x1B);
    let clone = rig.bar.clone();
    assert_eq!(clone.read32(r::VFINT_DYN_CTL01), 0x1B);
}

#[test]
fn version_and_resources() {
    let mut rig = Rig::new(cfg());
    rig.init_aq();
    let v = rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    assert_eq!((le32(&v.payload, 0), le32(&v.payload, 4)), (1, 1));
    // The reply repeats the version in param0/param1 (virtchnl.h).
    assert_eq!((v.param0, v.param1), (1, 1));
    assert_eq!(v.flags & (f::DD | f::CMP | f::ERR), f::DD | f::CMP);
    // The ARQ cause shows in ICR01, which clears on read.
    assert_ne!(rig.bar.read32(r::VFINT_ICR01) & (1 << 30), 0);
    assert_eq!(rig.bar.read32(r::VFINT_ICR01), 0);

    // GET_VF_RESOURCES: a 1.1 VF sends its caps (4 bytes).
    let asked = cap::L2
        | cap::RSS_PF
        | cap::RX_POLLING
        | cap::WB_ON_ITR
        | cap::RX_FLEX_DESC
        | cap::ADV_LINK_SPEED;
    let m = rig.expect(op::GET_VF_RESOURCES, &asked.to_le_bytes(), SUCCESS);
    assert_eq!(m.payload.len(), 36);
    let res = parse_resources(&m.payload);
    assert_eq!(res.num_vsis, 1);
    assert_eq!(res.num_queue_pairs, 4);
    assert_eq!(res.vsi_queue_pairs, 4);
    assert_eq!(res.vsi_type, 6);
    assert_eq!(res.mac, VF_MAC);
    assert_eq!((res.rss_key_size, res.rss_lut_size), (52, 64));
    assert_eq!(res.max_vectors, 5);
    // The port's largest frame, CRC included (i40e_vc_get_max_frame_size).
    assert_eq!(res.max_mtu, 9728);
    // X710 under Linux 6.12's i40e: L2, VLAN and ADV_LINK_SPEED always, RSS_PF
    // and RX_POLLING as asked; no WB_ON_ITR (X722 only), never flex descriptors.
    assert_eq!(
        res.caps,
        cap::L2 | cap::VLAN | cap::RSS_PF | cap::RX_POLLING | cap::ADV_LINK_SPEED
    );
    // Then a link event with the physical link's state, in Mbit/s (the VF
    // asked for ADV_LINK_SPEED): up at 40G, queues enabled or not.
    let ev = rig.event();
    assert_eq!(ev.event(), (1, 40_000, 1));
    let st = rig.vf.status();
    assert!(st.active);
    assert_eq!(st.requested_caps, asked);
    assert_eq!(st.granted_caps, res.caps);
}

#[test]
fn caps_granted_depend_on_the_pf() {
    let mut rig = Rig::new(SimConfig {
        pf: PfModel::X722,
        ..cfg()
    });
    rig.init_aq();
    let res = rig.bring_up(cap::L2 | cap::RSS_AQ | cap::WB_ON_ITR);
    assert_eq!(
        res.caps,
        cap::L2 | cap::VLAN | cap::RSS_AQ | cap::WB_ON_ITR | cap::ADV_LINK_SPEED
    );

    let mut rig = Rig::new(cfg());
    rig.init_aq();
    // No RSS asked: the X710 PF falls back to register RSS.
    let res = rig.bring_up(cap::L2);
    assert_eq!(
        res.caps,
        cap::L2 | cap::VLAN | cap::RSS_REG | cap::ADV_LINK_SPEED
    );
    // Without ADV_LINK_SPEED asked, i40e still grants it but reports the link
    // with the legacy speed enum (keyed on what the VF asked for): 40G = 0x10.
    assert_eq!(rig.event().event(), (1, 0x10, 1));

    // ice grants what was asked for among what it does: no VLAN unasked, no
    // RSS fallback, WB_ON_ITR and ADV_LINK_SPEED as asked.
    let mut rig = Rig::new(SimConfig {
        pf: PfModel::E810,
        ..cfg()
    });
    rig.init_aq();
    let asked = cap::L2 | cap::RSS_PF | cap::WB_ON_ITR | cap::RX_POLLING | cap::ADV_LINK_SPEED;
    let res = rig.bring_up(asked);
    assert_eq!(res.caps, asked);
    assert_eq!(res.max_mtu, 9728);
    let mut rig = Rig::new(SimConfig {
        pf: PfModel::E810,
        ..cfg()
    });
    rig.init_aq();
    assert_eq!(rig.bring_up(cap::L2 | cap::VLAN).caps, cap::L2 | cap::VLAN);
}

#[test]
fn version_1_0_vf() {
    let mut rig = Rig::new(cfg());
    rig.init_aq();
    let v = rig.expect(op::VERSION, &version(1, 0), SUCCESS);
    assert_eq!((le32(&v.payload, 0), le32(&v.payload, 4)), (1, 0));
    // A 1.0 VF sends GET_VF_RESOURCES without payload; 4 bytes are then wrong.
    rig.expect(op::GET_VF_RESOURCES, &0u32.to_le_bytes(), EINVAL);
    let m = rig.expect(op::GET_VF_RESOURCES, &[], SUCCESS);
    assert_eq!(
        parse_resources(&m.payload).caps,
        cap::L2 | cap::VLAN | cap::RSS_REG | cap::ADV_LINK_SPEED
    );
}

#[test]
fn every_opcode_checks_its_length() {
    // A wrong length is answered -EINVAL by i40e, ERR_PARAM by ice (both after
    // virtchnl_vc_validate_vf_msg, before any allowlist).
    for (pf, invalid) in [(PfModel::X710, EINVAL), (PfModel::E810, ERR_PARAM)] {
        lengths_checked(pf, invalid);
    }
}

fn lengths_checked(pf: PfModel, invalid: i32) {
    let (mut rig, _) = Rig::up(SimConfig { pf, ..cfg() });
    let vsi = rig.vsi_id;
    // (op, a right-length message, a wrong length).
    let cases: Vec<(u32, usize, usize)> = vec![
        (op::VERSION, 8, 7),
        (op::GET_VF_RESOURCES, 4, 0),
        (op::CONFIG_TX_QUEUE, 24, 23),
        (op::CONFIG_RX_QUEUE, 40, 41),
        (op::CONFIG_VSI_QUEUES, 136, 128),
        (op::CONFIG_IRQ_MAP, 26, 14),
        (op::ENABLE_QUEUES, 12, 8),
        (op::DISABLE_QUEUES, 12, 16),
        (op::ADD_ETH_ADDR, 20, 12),
        (op::DEL_ETH_ADDR, 20, 19),
        (op::ADD_VLAN, 8, 6),
        (op::DEL_VLAN, 8, 10),
        (op::CONFIG_PROMISCUOUS_MODE, 4, 2),
        (op::GET_STATS, 12, 0),
        (op::CONFIG_RSS_KEY, 57, 56),
        (op::CONFIG_RSS_LUT, 69, 68),
        (op::GET_RSS_HENA_CAPS, 0, 4),
        (op::SET_RSS_HENA, 8, 4),
        (op::ENABLE_VLAN_STRIPPING, 0, 1),
        (op::REQUEST_QUEUES, 2, 4),
    ];
    for (v_op, _good, bad) in &cases {
        let mut m = vec![0u8; *bad];
        // Counts in the array messages say one element.
        let array = [op::CONFIG_VSI_QUEUES, op::ADD_ETH_ADDR, op::DEL_ETH_ADDR];
        if array.contains(v_op) && m.len() >= 4 {
            m[2] = 1;
        }
        if *v_op == op::CONFIG_IRQ_MAP && m.len() >= 2 {
            m[0] = 1;
        }
        if (*v_op == op::ADD_VLAN || *v_op == op::DEL_VLAN) && m.len() >= 4 {
            m[2] = 1;
        }
        if (*v_op == op::CONFIG_RSS_KEY || *v_op == op::CONFIG_RSS_LUT) && m.len() >= 4 {
            m[2] = if *v_op == op::CONFIG_RSS_KEY { 52 } else { 64 };
        }
        if m.len() >= 2 && *v_op != op::CONFIG_IRQ_MAP {
            m[0..2].copy_from_slice(&vsi.to_le_bytes());
        }
        let r = rig.call(*v_op, &m);
        assert_eq!(
            r.status, invalid,
            "{pf}: op {v_op} with a wrong length {bad}"
        );
        assert!(r.payload.is_empty());
    }
    // Zero elements in an array message is a format error too.
    let mut m = ether_addrs(vsi, &[[0x02, 0, 0, 0, 0, 9]]);
    m[2] = 0;
    m.truncate(12);
    rig.expect(op::ADD_ETH_ADDR, &m, invalid);
    // Linux 6.12 disables no mailbox however many messages fail in a row.
    for _ in 0..20 {
        rig.expect(op::VERSION, &[0u8; 3], invalid);
    }
    assert!(!rig.vf.status().mailbox_disabled);
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
}

#[test]
fn unknown_and_unimplemented_opcodes() {
    let (mut rig, _) = Rig::up(cfg());
    // i40e: opcodes virtchnl does not know, and EVENT from a VF, fail
    // validation: -EINVAL.
    rig.expect(0, &[], EINVAL);
    rig.expect(16, &[], EINVAL);
    rig.expect(op::EVENT, &[0u8; 16], EINVAL);
    rig.expect(999, &[1, 2, 3], EINVAL);
    // Valid messages i40e has no handler for: -EOPNOTSUPP.
    rig.expect(op::CONFIG_TX_QUEUE, &[0u8; 24], EOPNOTSUPP);
    rig.expect(op::CONFIG_RX_QUEUE, &[0u8; 40], EOPNOTSUPP);
    rig.expect(op::GET_SUPPORTED_RXDIDS, &[], EOPNOTSUPP);

    // ice: validation failures are ERR_PARAM; an opcode outside the VF's
    // allowlist (no VLAN asked, so no VLAN stripping) or without a handler is
    // ERR_NOT_SUPPORTED.
    let (mut rig, _) = Rig::up(SimConfig {
        pf: PfModel::E810,
        ..cfg()
    });
    rig.expect(0, &[], ERR_PARAM);
    rig.expect(999, &[1, 2, 3], ERR_PARAM);
    rig.expect(op::DISABLE_VLAN_STRIPPING, &[], ERR_NOT_SUPPORTED);
    rig.expect(op::GET_SUPPORTED_RXDIDS, &[], ERR_NOT_SUPPORTED);
    rig.expect(op::CONFIG_TX_QUEUE, &[0u8; 24], ERR_NOT_SUPPORTED);
}

#[test]
fn too_many_invalid_messages_disable_the_mailbox_of_an_old_i40e() {
    // Older i40e versions stopped answering after more than 10 failures in a
    // row (SimConfig::invalid_msg_limit); 6.12 does not.
    let (mut rig, _) = Rig::up(SimConfig {
        invalid_msg_limit: Some(10),
        ..cfg()
    });
    for _ in 0..11 {
        rig.expect(op::VERSION, &[0u8; 3], EINVAL);
    }
    assert!(rig.vf.status().mailbox_disabled);
    let wb = rig.send(op::VERSION, &version(1, 1));
    // The firmware still completes the command...
    assert_eq!(wb.flags & (f::DD | f::CMP | f::ERR), f::DD | f::CMP);
    // ... but no answer comes.
    assert!(rig.recv(Duration::from_millis(100)).is_none());
    assert!(rig.vf.stats().pf_ignored >= 1);
    // A reset gives the VF a fresh mailbox.
    rig.vf.faults().reset_vf();
    rig.until("reset done", || {
        rig.bar.read32(r::RSTAT) & 3 == 2 && !rig.vf.status().mailbox_disabled
    });
    rig.init_aq();
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
}

#[test]
fn bad_aq_descriptors() {
    let mut rig = Rig::new(cfg());
    rig.init_aq();
    // An AQ opcode a VF may not use: completed with ERR.
    let wb = rig.send_raw(0x0001, op::VERSION, &version(1, 1), None);
    assert_eq!(
        wb.flags & (f::DD | f::CMP | f::ERR),
        f::DD | f::CMP | f::ERR
    );
    assert_ne!(wb.retval, 0);
    assert!(rig.recv(Duration::from_millis(50)).is_none());
    // A buffer at an unmapped IOVA: DMA fault, AQ error, no message.
    let before = rig.vf.dma_faults();
    let wb = rig.send_raw(0x0801, op::VERSION, &version(1, 1), Some(0xdead_0000_0000));
    assert_eq!(wb.flags & f::ERR, f::ERR);
    assert_eq!(rig.vf.dma_faults(), before + 1);
    let fault = rig.vf.last_dma_fault().unwrap();
    assert_eq!(fault.iova, 0xdead_0000_0000);
    assert!(!fault.write);
    assert!(rig.recv(Duration::from_millis(50)).is_none());
    assert_eq!(rig.vf.stats().aq_errors, 2);
    // The queue still works.
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
}

#[test]
fn full_arq_sets_overflow_and_loses_the_message() {
    let mut rig = Rig::new(cfg());
    rig.init_aq();
    // Hand the device no buffer: tail = head.
    rig.bar.write32(r::ARQT, 0);
    rig.send(op::VERSION, &version(1, 1));
    rig.until("ARQ overflow", || {
        rig.bar.read32(r::ARQLEN) & r::LEN_OVFL != 0
    });
    assert_eq!(rig.bar.read32(r::ARQH), 0);
    assert_eq!(rig.vf.stats().arq_lost, 1);
}

#[test]
fn arq_disabled_loses_messages() {
    let mut rig = Rig::new(cfg());
    rig.init_aq();
    rig.bar.write32(r::ARQLEN, 0);
    rig.send(op::VERSION, &version(1, 1));
    rig.until("message lost", || rig.vf.stats().arq_lost == 1);
}

#[test]
fn ring_wrap_of_the_admin_queues() {
    let (mut rig, _) = Rig::up(cfg());
    // Three times around both 32-entry queues.
    for _ in 0..100 {
        rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    }
    assert_eq!(rig.vf.stats().aq_commands, 102);
}
