//! The simulated PF's answers to each virtchnl opcode: what it accepts, what it
//! refuses and with which status code (Linux 6.12's i40e PF, and ice where they
//! differ).
#![cfg(feature = "sim")]

mod sim_util;

use nicpoll::bar::Bar;
use nicpoll::port::MacAddr;
use nicpoll_iavf::sim::{PfModel, SimConfig};
use sim_util::*;

fn ice() -> SimConfig {
    SimConfig {
        pf: PfModel::E810,
        ..cfg()
    }
}

fn pair(rig: &mut Rig, qid: u16) -> Pair {
    let tx_ring = rig.alloc(512 * 16, 4096);
    let rx_ring = rig.alloc(512 * 32, 4096);
    Pair {
        qid,
        tx_len: 512,
        tx_ring,
        rx_len: 512,
        rx_ring,
        buf: 2048,
        max_pkt: 1518,
    }
}

#[test]
fn configuration_before_get_vf_resources() {
    // ice: before GET_VF_RESOURCES only VERSION, RESET_VF and GET_VF_RESOURCES
    // are on the VF's allowlist; everything else is ERR_NOT_SUPPORTED.
    let mut rig = Rig::new(ice());
    rig.init_aq();
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    let vsi = 17;
    let p = pair(&mut rig, 0);
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(vsi, &[p]),
        ERR_NOT_SUPPORTED,
    );
    rig.expect(
        op::CONFIG_IRQ_MAP,
        &irq_map(&[(vsi, 1, 1, 0)]),
        ERR_NOT_SUPPORTED,
    );
    rig.expect(
        op::ADD_ETH_ADDR,
        &ether_addrs(vsi, &[VF_MAC]),
        ERR_NOT_SUPPORTED,
    );
    let m = rig.expect(op::GET_STATS, &queue_select(vsi, 0, 0), ERR_NOT_SUPPORTED);
    assert!(m.payload.is_empty());
    // i40e: a VF whose reset completed is ACTIVE already (i40e_cleanup_reset_vf
    // sets it), so configuration works before GET_VF_RESOURCES.
    let mut rig = Rig::new(cfg());
    rig.init_aq();
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    let p = pair(&mut rig, 0);
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), SUCCESS);
    let m = rig.expect(op::GET_STATS, &queue_select(vsi, 0, 0), SUCCESS);
    assert_eq!(m.payload, vec![0u8; 96]);
    // Another VSI: -EINVAL with 96 zero bytes.
    let m = rig.expect(op::GET_STATS, &queue_select(vsi + 1, 0, 0), EINVAL);
    assert_eq!(m.payload, vec![0u8; 96]);
}

#[test]
fn config_vsi_queues() {
    let (mut rig, res) = Rig::up(cfg());
    let vsi = rig.vsi_id;
    let good = pair(&mut rig, 0);
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[good]), SUCCESS);
    let st = rig.vf.status();
    assert_eq!(st.rx_queues[0].ring_iova, good.rx_ring);
    assert_eq!(st.rx_queues[0].ring_len, 512);
    assert_eq!(st.rx_queues[0].buffer_size, 2048);
    assert_eq!(st.rx_queues[0].max_frame, 1518);
    assert_eq!(st.tx_queues[0].ring_iova, good.tx_ring);
    assert!(!st.rx_queues[0].enabled);

    // Several pairs in one message.
    let ps: Vec<Pair> = (0..4).map(|q| pair(&mut rig, q)).collect();
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &ps), SUCCESS);

    let bad = |f: &dyn Fn(&mut Pair)| {
        let mut p = good;
        f(&mut p);
        p
    };
    // Queue id out of range (the VF has 4 pairs).
    let p = bad(&|p| p.qid = res.num_queue_pairs);
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), EINVAL);
    // Wrong VSI.
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi + 1, &[good]), EINVAL);
    // Rx half naming another queue than the Tx half.
    let mut m = vsi_queues(vsi, &[good]);
    m[8 + 24 + 2] = 1;
    rig.expect(op::CONFIG_VSI_QUEUES, &m, EINVAL);
    // Ring lengths (i40e: a multiple of 32 on receive, of 8 on transmit, at
    // most 8160 on an X710): not a multiple, too long.
    for l in [100u32, 8192] {
        rig.expect(
            op::CONFIG_VSI_QUEUES,
            &vsi_queues(vsi, &[bad(&|p| p.rx_len = l)]),
            EINVAL,
        );
        rig.expect(
            op::CONFIG_VSI_QUEUES,
            &vsi_queues(vsi, &[bad(&|p| p.tx_len = l as u16)]),
            EINVAL,
        );
    }
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(vsi, &[bad(&|p| p.rx_len = 40)]),
        EINVAL,
    );
    // 32 descriptors, and 40 on transmit, are fine for i40e.
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(
            vsi,
            &[bad(&|p| {
                p.rx_len = 32;
                p.tx_len = 40;
            })],
        ),
        SUCCESS,
    );
    // A zero ring length is an unused half.
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(vsi, &[bad(&|p| p.tx_len = 0)]),
        SUCCESS,
    );
    // Buffer and frame sizes (i40e: databuffer ≤ 16K-128, max_pkt in [64, 16K)).
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(vsi, &[bad(&|p| p.buf = 16 * 1024)]),
        EINVAL,
    );
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(vsi, &[bad(&|p| p.max_pkt = 63)]),
        EINVAL,
    );
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(vsi, &[bad(&|p| p.max_pkt = 16 * 1024)]),
        EINVAL,
    );
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(vsi, &[bad(&|p| p.buf = 16 * 1024 - 128)]),
        SUCCESS,
    );
    // More than 16 pairs.
    let many: Vec<Pair> = (0..17).map(|_| good).collect();
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &many), EINVAL);
    // The buffer size is kept in 128-byte units, the ring base in 128-byte units.
    rig.expect(
        op::CONFIG_VSI_QUEUES,
        &vsi_queues(
            vsi,
            &[bad(&|p| {
                p.buf = 2000;
                p.rx_ring += 64;
            })],
        ),
        SUCCESS,
    );
    let st = rig.vf.status();
    assert_eq!(st.rx_queues[0].buffer_size, 1920);
    assert_eq!(st.rx_queues[0].ring_iova, good.rx_ring);
}

#[test]
fn config_vsi_queues_on_ice() {
    let (mut rig, _) = Rig::up(ice());
    let vsi = rig.vsi_id;
    let good = pair(&mut rig, 0);
    // ice_vc_isvalid_ring_len: 0 or a multiple of 32 in 64..=8160, both halves.
    for l in [100u32, 32, 8192] {
        let mut p = good;
        p.rx_len = l;
        rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), ERR_PARAM);
        let mut p = good;
        p.tx_len = l as u16;
        rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), ERR_PARAM);
    }
    // A frame larger than the port's (9728 with the CRC) is refused.
    let mut p = good;
    p.max_pkt = 9729;
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), ERR_PARAM);
    // The receive half is checked only when used.
    let mut p = good;
    p.rx_len = 0;
    p.max_pkt = 0;
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), SUCCESS);
    // ice enables a transmit queue as soon as it is configured; receive
    // queues wait for ENABLE_QUEUES.
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[good]), SUCCESS);
    let st = rig.vf.status();
    assert!(st.tx_queues[0].enabled && !st.rx_queues[0].enabled);
}

#[test]
fn config_irq_map() {
    let (mut rig, res) = Rig::up(cfg());
    let vsi = rig.vsi_id;
    rig.expect(
        op::CONFIG_IRQ_MAP,
        &irq_map(&[(vsi, 1, 0xF, 0), (vsi, 0, 0, 0)]),
        SUCCESS,
    );
    let st = rig.vf.status();
    assert_eq!(st.irq_map.len(), 2);
    assert_eq!((st.irq_map[0].vector_id, st.irq_map[0].rxq_map), (1, 0xF));
    // Vector beyond the VF's (5 vectors: 0..4).
    rig.expect(
        op::CONFIG_IRQ_MAP,
        &irq_map(&[(vsi, res.max_vectors, 1, 0)]),
        EINVAL,
    );
    // A queue the VF does not have.
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 1, 1 << 4, 0)]), EINVAL);
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 1, 0, 1 << 5)]), EINVAL);
    // Wrong VSI.
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi + 1, 1, 1, 0)]), EINVAL);
    // More vectors than the VF has.
    let six: Vec<_> = (0..6).map(|v| (vsi, v, 0, 0)).collect();
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&six), EINVAL);
    // i40e takes queues on vector 0 (DPDK's poll mode without WB_ON_ITR).
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 0, 1, 1)]), SUCCESS);

    // ice refuses queues on vector 0 ("The VF may not request that vector 0
    // be used for traffic", virtchnl.h) and a message mapping no vector.
    let (mut rig, _) = Rig::up(ice());
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 0, 1, 0)]), ERR_PARAM);
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 0, 0, 0)]), SUCCESS);
    rig.expect(op::CONFIG_IRQ_MAP, &irq_map(&[(vsi, 1, 0xF, 0xF)]), SUCCESS);
}

#[test]
fn enable_and_disable_queues() {
    let (mut rig, _) = Rig::up(cfg());
    // The link as it is, after GET_VF_RESOURCES (up at 40G, the legacy enum:
    // the rig did not ask for ADV_LINK_SPEED).
    assert_eq!(rig.event().event(), (1, 0x10, 1));
    let vsi = rig.vsi_id;
    let p = pair(&mut rig, 0);
    rig.expect(op::CONFIG_VSI_QUEUES, &vsi_queues(vsi, &[p]), SUCCESS);
    // Empty bitmaps, bits ≥ 16, queues beyond the VF's 4, wrong VSI.
    rig.expect(op::ENABLE_QUEUES, &queue_select(vsi, 0, 0), EINVAL);
    rig.expect(op::ENABLE_QUEUES, &queue_select(vsi, 1 << 16, 0), EINVAL);
    rig.expect(op::ENABLE_QUEUES, &queue_select(vsi, 0, 1 << 4), EINVAL);
    rig.expect(op::ENABLE_QUEUES, &queue_select(vsi + 1, 1, 1), EINVAL);
    // i40e sends a link event after every ENABLE_QUEUES, failed ones too,
    // with the physical link's state.
    rig.expect(op::VERSION, &version(1, 1), SUCCESS);
    assert_eq!(rig.events.len(), 4);
    assert!(rig.events.iter().all(|e| e.event() == (1, 0x10, 1)));
    rig.events.clear();
    rig.expect(op::ENABLE_QUEUES, &queue_select(vsi, 1, 1), SUCCESS);
    assert_eq!(rig.event().event(), (1, 0x10, 1));
    let st = rig.vf.status();
    assert!(st.queues_enabled && st.rx_queues[0].enabled && st.tx_queues[0].enabled);
    assert!(!st.rx_queues[1].enabled);
    assert!(st.link_reported_up);
    rig.expect(op::DISABLE_QUEUES, &queue_select(vsi, 0, 1 << 17), EINVAL);
    rig.expect(op::DISABLE_QUEUES, &queue_select(vsi, 1, 1), SUCCESS);
    let st = rig.vf.status();
    assert!(!st.queues_enabled && !st.rx_queues[0].enabled && !st.tx_queues[0].enabled);
}

#[test]
fn mac_filters_of_an_untrusted_vf() {
    let (mut rig, _) = Rig::up(cfg());
    let vsi = rig.vsi_id;
    let st = rig.vf.status();
    assert_eq!(st.mac_filters, vec![MacAddr(VF_MAC), MacAddr::BROADCAST]);
    // Its own MAC again, and multicast: fine.
    let mc = [0x01, 0x00, 0x5e, 0, 0, 1];
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[VF_MAC, mc]), SUCCESS);
    assert!(rig.vf.status().mac_filters.contains(&MacAddr(mc)));
    // Broadcast or zero: -EINVAL.
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[[0xff; 6]]), EINVAL);
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[[0; 6]]), EINVAL);
    // Another unicast while the host set the MAC: -EPERM.
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[PEER_MAC]), EPERM);
    // Quota: 18 filters for an untrusted VF (3 in use: VF, broadcast, mc).
    let mcs: Vec<[u8; 6]> = (2..17u8).map(|i| [0x01, 0, 0x5e, 0, 0, i]).collect();
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &mcs), SUCCESS);
    assert_eq!(rig.vf.status().mac_filters.len(), 18);
    rig.expect(
        op::ADD_ETH_ADDR,
        &ether_addrs(vsi, &[[0x01, 0, 0x5e, 0, 0, 99]]),
        EPERM,
    );
    // Delete: unknown address or broadcast → EINVAL_ADDR.
    rig.expect(
        op::DEL_ETH_ADDR,
        &ether_addrs(vsi, &[[0x01, 0, 0x5e, 0, 0, 99]]),
        EINVAL,
    );
    rig.expect(op::DEL_ETH_ADDR, &ether_addrs(vsi, &[[0xff; 6]]), EINVAL);
    rig.expect(op::DEL_ETH_ADDR, &ether_addrs(vsi, &[mc]), SUCCESS);
    assert!(!rig.vf.status().mac_filters.contains(&MacAddr(mc)));
    rig.expect(op::DEL_ETH_ADDR, &ether_addrs(vsi + 1, &[mc]), EINVAL);
    // The MAC the host set cannot be deleted: skipped, answered SUCCESS
    // (i40e_vc_del_mac_addr_msg).
    rig.expect(op::DEL_ETH_ADDR, &ether_addrs(vsi, &[VF_MAC]), SUCCESS);
    assert!(rig.vf.status().mac_filters.contains(&MacAddr(VF_MAC)));
}

#[test]
fn mac_filters_without_an_admin_mac_or_trusted() {
    let (mut rig, res) = Rig::up(SimConfig {
        mac: MacAddr([0; 6]),
        ..cfg()
    });
    assert_eq!(res.mac, [0; 6]);
    let vsi = rig.vsi_id;
    // No MAC set by the host: the VF may pick its own unicast address.
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[PEER_MAC]), SUCCESS);

    let (mut rig, _) = Rig::up(SimConfig {
        trusted: true,
        ..cfg()
    });
    let vsi = rig.vsi_id;
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[PEER_MAC]), SUCCESS);
    let mcs: Vec<[u8; 6]> = (0..40u8).map(|i| [0x01, 0, 0x5e, 0, 1, i]).collect();
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &mcs), SUCCESS);
}

#[test]
fn promiscuous_mode_untrusted_is_accepted_not_applied() {
    let (mut rig, _) = Rig::up(cfg());
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_PROMISCUOUS_MODE, &promisc(vsi, 3), SUCCESS);
    let p = rig.vf.status().promisc;
    assert!(p.requested_unicast && p.requested_multicast);
    assert!(!p.unicast && !p.multicast);

    let (mut rig, _) = Rig::up(SimConfig {
        trusted: true,
        ..cfg()
    });
    let vsi = rig.vsi_id;
    rig.expect(op::CONFIG_PROMISCUOUS_MODE, &promisc(vsi, 1), SUCCESS);
    let p = rig.vf.status().promisc;
    assert!(p.unicast && !p.multicast);
    // Unknown flag bits or another VSI: EINVAL.
    rig.expect(op::CONFIG_PROMISCUOUS_MODE, &promisc(vsi, 4), EINVAL);
    rig.expect(op::CONFIG_PROMISCUOUS_MODE, &promisc(vsi + 1, 1), EINVAL);
    rig.expect(op::CONFIG_PROMISCUOUS_MODE, &promisc(vsi, 0), SUCCESS);
    assert!(!rig.vf.status().promisc.unicast);
}

#[test]
fn rss_key_lut_and_hena() {
    let (mut rig, _) = Rig::up(cfg());
    let vsi = rig.vsi_id;
    // Zero at start (RSS effectively off), HENA at the PF's default.
    assert_eq!(rig.vf.status().rss_key, vec![0u8; 52]);
    let key: Vec<u8> = (0..52u8).collect();
    rig.expect(op::CONFIG_RSS_KEY, &rss_bytes(vsi, &key), SUCCESS);
    // As the registers show it: byte i in HKEY(i/4), lane i%4.
    assert_eq!(rig.bar.read32(r::hkey(0)), 0x0302_0100);
    assert_eq!(rig.bar.read32(r::hkey(12)), 0x3332_3130);
    assert_eq!(rig.vf.status().rss_key, key);
    // Key of another length: EINVAL (i40e wants exactly 52).
    rig.expect(op::CONFIG_RSS_KEY, &rss_bytes(vsi, &key[..40]), EINVAL);
    let lut: Vec<u8> = (0..64u8).map(|i| i % 4).collect();
    rig.expect(op::CONFIG_RSS_LUT, &rss_bytes(vsi, &lut), SUCCESS);
    assert_eq!(rig.bar.read32(r::hlut(0)), 0x0302_0100);
    // LUT of another size, or naming a queue the VF lacks.
    rig.expect(op::CONFIG_RSS_LUT, &rss_bytes(vsi, &lut[..32]), EINVAL);
    let mut bad = lut.clone();
    bad[7] = 4;
    rig.expect(op::CONFIG_RSS_LUT, &rss_bytes(vsi, &bad), EINVAL);
    rig.expect(op::CONFIG_RSS_LUT, &rss_bytes(vsi + 1, &lut), EINVAL);
    // HENA: the PF's default, then what the VF sets.
    let m = rig.expect(op::GET_RSS_HENA_CAPS, &[], SUCCESS);
    let caps = le64(&m.payload, 0);
    assert_ne!(caps & (1 << 33), 0, "IPv4 TCP hashing offered");
    assert_eq!(rig.vf.status().rss_hena, caps);
    rig.expect(op::SET_RSS_HENA, &(1u64 << 31).to_le_bytes(), SUCCESS);
    assert_eq!(rig.bar.read32(r::hena(0)), 1 << 31);
    assert_eq!(rig.vf.status().rss_hena, 1 << 31);
}

#[test]
fn get_stats_layout() {
    let (mut rig, _) = Rig::up(cfg());
    let s = rig.eth_stats();
    assert_eq!(s, [0; 12]);
    rig.expect(op::GET_STATS, &queue_select(rig.vsi_id + 1, 0, 0), EINVAL);
}

#[test]
fn vlan_filters_and_stripping() {
    let (mut rig, _) = Rig::up(cfg());
    let vsi = rig.vsi_id;
    rig.expect(op::ADD_VLAN, &vlans(vsi, &[10, 20]), SUCCESS);
    let st = rig.vf.status();
    assert_eq!(st.vlan_filters, vec![10, 20]);
    assert!(
        st.vlan_strip,
        "i40e turns stripping on with the first VLAN filter"
    );
    rig.expect(op::ADD_VLAN, &vlans(vsi, &[4096]), EINVAL);
    rig.expect(op::DEL_VLAN, &vlans(vsi, &[10]), SUCCESS);
    assert_eq!(rig.vf.status().vlan_filters, vec![20]);
    rig.expect(op::DISABLE_VLAN_STRIPPING, &[], SUCCESS);
    assert!(!rig.vf.status().vlan_strip);
    rig.expect(op::ENABLE_VLAN_STRIPPING, &[], SUCCESS);
    assert!(rig.vf.status().vlan_strip);
}

#[test]
fn request_queues_resets_the_vf() {
    let (mut rig, res) = Rig::up(cfg());
    assert_eq!(res.num_queue_pairs, 4);
    rig.event();
    // More than 16: answered with 16, no reset.
    let m = rig.expect(op::REQUEST_QUEUES, &20u16.to_le_bytes(), SUCCESS);
    assert_eq!(le16(&m.payload, 0), 16);
    // 8: granted by a reset (RESET_IMPENDING, no reply).
    rig.send(op::REQUEST_QUEUES, &8u16.to_le_bytes());
    let ev = rig.event();
    assert_eq!(ev.event().0, 2, "RESET_IMPENDING");
    rig.until("reset seen", || {
        rig.bar.read32(r::ARQLEN) & r::LEN_ENABLE == 0
    });
    rig.until("reset done", || rig.bar.read32(r::RSTAT) & 3 == 2);
    rig.init_aq();
    let res = rig.bring_up(cap::L2 | cap::RSS_PF | cap::REQ_QUEUES);
    assert_eq!(res.num_queue_pairs, 8);
    assert_ne!(res.caps & cap::REQ_QUEUES, 0);
}

#[test]
fn reset_vf_message() {
    let (mut rig, _) = Rig::up(cfg());
    rig.event();
    let vsi = rig.vsi_id;
    rig.expect(
        op::ADD_ETH_ADDR,
        &ether_addrs(vsi, &[[0x01, 0, 0x5e, 0, 0, 1]]),
        SUCCESS,
    );
    let posted = rig.vf.stats().arq_posted;
    rig.send(op::RESET_VF, &[]);
    // No reply, no event: the VF watches ARQLEN and VFGEN_RSTAT.
    rig.until("reset seen", || {
        rig.bar.read32(r::ARQLEN) & r::LEN_ENABLE == 0
    });
    assert_eq!(rig.vf.stats().arq_posted, posted);
    rig.until("reset done", || rig.bar.read32(r::RSTAT) & 3 == 2);
    // Everything but the default MAC and broadcast filters is gone (the
    // status is published at the end of the step that wrote VFACTIVE).
    rig.until("the filters reset", || {
        rig.vf.status().mac_filters == vec![MacAddr(VF_MAC), MacAddr::BROADCAST]
    });
    rig.init_aq();
    rig.bring_up(cap::L2);
    assert_eq!(rig.vf.stats().resets, 1);
    // i40e honours RESET_VF whatever the VF's state: right after the admin
    // queue is up again, before any other message.
    rig.init_aq();
    rig.send(op::RESET_VF, &[]);
    rig.until("second reset seen", || rig.vf.stats().resets == 2);
}

#[test]
fn get_vf_resources_once_per_reset_on_i40e() {
    // i40e: RESOURCES_LOADED refuses a second GET_VF_RESOURCES with -EINVAL
    // until the VF is reset; ice answers it again.
    let (mut rig, _) = Rig::up(cfg());
    rig.expect(op::GET_VF_RESOURCES, &cap::L2.to_le_bytes(), EINVAL);
    rig.send(op::RESET_VF, &[]);
    rig.until("reset done", || {
        rig.vf.stats().resets == 1 && rig.bar.read32(r::RSTAT) & 3 == 2
    });
    rig.init_aq();
    rig.bring_up(cap::L2);

    let (mut rig, _) = Rig::up(ice());
    rig.expect(op::GET_VF_RESOURCES, &cap::L2.to_le_bytes(), SUCCESS);
}

#[test]
fn a_host_mac_change_resets_the_vf() {
    let (mut rig, res) = Rig::up(cfg());
    assert_eq!(res.mac, VF_MAC);
    rig.event();
    rig.vf.faults().host_set_mac(MacAddr(PEER_MAC));
    assert_eq!(rig.event().event().0, 2, "RESET_IMPENDING");
    rig.until("reset done", || {
        rig.vf.stats().resets == 1 && rig.bar.read32(r::RSTAT) & 3 == 2
    });
    rig.init_aq();
    let res = rig.bring_up(cap::L2);
    assert_eq!(
        res.mac, PEER_MAC,
        "GET_VF_RESOURCES gives the host's new MAC"
    );
    let vsi = rig.vsi_id;
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[VF_MAC]), EPERM);
    rig.expect(op::ADD_ETH_ADDR, &ether_addrs(vsi, &[PEER_MAC]), SUCCESS);
}
