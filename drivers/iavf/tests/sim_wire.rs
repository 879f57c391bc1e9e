//! The simulated VF's wires: two VFs back to back, a named peer, loopback, and a
//! kernel interface (AF_PACKET on a veth pair).
#![cfg(feature = "sim")]

mod sim_util;

use nicpoll::port::MacAddr;
use nicpoll::port::testing::VethPair;
use nicpoll_iavf::sim::{SimConfig, SimVf, Wire};
use sim_util::*;

/// Send `n` frames from `a` (queue 0) to `b`'s MAC and check they arrive at `b`.
fn a_to_b(
    a: &mut Rig,
    qa: &mut Queue,
    b: &Rig,
    qb: &mut Queue,
    src: [u8; 6],
    dst: [u8; 6],
    n: u32,
) {
    for i in 0..n {
        let f = frame(dst, src, i, 64 + i as usize);
        a.put_tx(qa, &f, true, None);
        a.ring_tx(qa);
        let slot = qb.rx_next;
        let d = b.wait_rx(qb, slot);
        assert_eq!(rx_len(d[1]), f.len());
        assert_eq!(b.read(qb.rx_buf(slot), f.len()), f);
        qb.rx_next += 1;
    }
}

fn two(cfg_a: SimConfig, cfg_b: SimConfig) -> (Rig, Queue, Rig, Queue) {
    let (mut a, _) = Rig::up(cfg_a);
    let (mut b, _) = Rig::up(cfg_b);
    let qa = a.queues(1, 64, 2048, 1518).remove(0);
    let qb = b.queues(1, 64, 2048, 1518).remove(0);
    (a, qa, b, qb)
}

#[test]
fn two_vfs_back_to_back() {
    let (mut a, mut qa, mut b, mut qb) = two(
        cfg(),
        SimConfig {
            mac: MacAddr(PEER_MAC),
            ..cfg()
        },
    );
    SimVf::connect(&a.vf, &b.vf);
    a_to_b(&mut a, &mut qa, &b, &mut qb, VF_MAC, PEER_MAC, 5);
    a_to_b(&mut b, &mut qb, &a, &mut qa, PEER_MAC, VF_MAC, 5);
    assert_eq!(a.vf.stats().tx_frames, 5);
    assert_eq!(b.vf.stats().rx_delivered, 5);
}

#[test]
fn named_peers_and_loopback() {
    let (mut a, mut qa, mut b, mut qb) = two(
        SimConfig {
            name: "a".into(),
            wire: Wire::Peer("sim-wire-test".into()),
            ..cfg()
        },
        SimConfig {
            name: "b".into(),
            mac: MacAddr(PEER_MAC),
            wire: Wire::Peer("sim-wire-test".into()),
            ..cfg()
        },
    );
    a_to_b(&mut a, &mut qa, &b, &mut qb, VF_MAC, PEER_MAC, 3);
    a_to_b(&mut b, &mut qb, &a, &mut qa, PEER_MAC, VF_MAC, 3);

    let (mut l, _) = Rig::up(SimConfig {
        wire: Wire::Loopback,
        ..cfg()
    });
    let mut q = l.queues(1, 64, 2048, 1518).remove(0);
    let mut q2 = q.clone();
    // What the VF sends to itself comes back (broadcast passes the filters too).
    for (i, dst) in [VF_MAC, [0xff; 6]].into_iter().enumerate() {
        let f = frame(dst, VF_MAC, i as u32, 100);
        l.put_tx(&mut q, &f, true, None);
        l.ring_tx(&q);
        let slot = q2.rx_next;
        l.wait_rx(&q2, slot);
        assert_eq!(l.read(q2.rx_buf(slot), 100), f);
        q2.rx_next += 1;
    }
}

#[test]
fn af_packet_wire_on_a_veth_pair() {
    // The pair, and the AF_PACKET sockets the device model's wire opens on it.
    let mut needs = nicpoll_testkit::VETH.to_vec();
    needs.push(nicpoll_testkit::Need::RawSockets);
    if nicpoll_testkit::skip_if_missing(&needs) {
        return;
    }
    let pair = VethPair::create("npsim0");
    let (mut a, mut qa, mut b, mut qb) = two(
        SimConfig {
            name: "veth-a".into(),
            wire: Wire::Iface(pair.a.clone()),
            ..cfg()
        },
        SimConfig {
            name: "veth-b".into(),
            mac: MacAddr(PEER_MAC),
            wire: Wire::Iface(pair.b.clone()),
            ..cfg()
        },
    );
    // VF a -> veth a -> veth b -> VF b, and back; the kernel's own frames (if
    // any) are not for these MACs and are filtered out.
    a_to_b(&mut a, &mut qa, &b, &mut qb, VF_MAC, PEER_MAC, 10);
    a_to_b(&mut b, &mut qb, &a, &mut qa, PEER_MAC, VF_MAC, 10);
    // A frame as long as the veth MTU allows.
    let f = frame(PEER_MAC, VF_MAC, 99, 1514);
    a.put_tx(&mut qa, &f, true, None);
    a.ring_tx(&qa);
    let slot = qb.rx_next;
    b.wait_rx(&qb, slot);
    assert_eq!(b.read(qb.rx_buf(slot), 1514), f);
}

#[test]
fn iface_errors_are_clear() {
    let e = SimVf::new(SimConfig {
        wire: Wire::Iface("npsim-nonexistent".into()),
        ..cfg()
    })
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("npsim-nonexistent") && msg.contains("ip link"),
        "{msg}"
    );
    // Bad configurations.
    assert!(
        SimVf::new(SimConfig {
            queue_pairs: 0,
            ..cfg()
        })
        .is_err()
    );
    assert!(
        SimVf::new(SimConfig {
            queue_pairs: 17,
            ..cfg()
        })
        .is_err()
    );
    assert!(
        SimVf::new(SimConfig {
            mac: MacAddr([1, 0, 0, 0, 0, 1]),
            ..cfg()
        })
        .is_err()
    );
}

#[test]
fn af_packet_wire_keeps_vlan_tags() {
    // The kernel takes a received frame's 802.1Q tag out of its data
    // (skb_vlan_untag); the wire puts it back (PACKET_AUXDATA), so a tagged
    // frame reaches the VF as it was on the wire.
    let mut needs = nicpoll_testkit::VETH.to_vec();
    needs.push(nicpoll_testkit::Need::RawSockets);
    if nicpoll_testkit::skip_if_missing(&needs) {
        return;
    }
    let pair = VethPair::create("npsimv");
    let (mut a, mut qa, mut b, mut qb) = two(
        SimConfig {
            name: "vlan-a".into(),
            wire: Wire::Iface(pair.a.clone()),
            spoofchk: false,
            ..cfg()
        },
        SimConfig {
            name: "vlan-b".into(),
            mac: MacAddr(PEER_MAC),
            wire: Wire::Iface(pair.b.clone()),
            ..cfg()
        },
    );
    // B keeps tags in the frame (i40e strips them by default).
    b.expect(op::DISABLE_VLAN_STRIPPING, &[], SUCCESS);
    for (i, tpid) in [0x8100u16, 0x88a8].into_iter().enumerate() {
        let mut f = frame(PEER_MAC, VF_MAC, i as u32, 100);
        f.splice(
            12..12,
            [(tpid >> 8) as u8, tpid as u8, 0x20, 0x0a + i as u8],
        );
        a.put_tx(&mut qa, &f, true, None);
        a.ring_tx(&qa);
        let slot = qb.rx_next;
        let d = b.wait_rx(&qb, slot);
        assert_eq!(rx_len(d[1]), f.len(), "TPID {tpid:#x}");
        assert_eq!(b.read(qb.rx_buf(slot), f.len()), f, "TPID {tpid:#x}");
        qb.rx_next += 1;
    }
}
