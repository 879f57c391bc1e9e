//! The simulated VF's wires: two VFs back to back, a named peer, loopback, and a
//! kernel interface (AF_PACKET on a veth pair).
#![cfg(feature = "sim")]

mod sim_util;

use nicpoll::port::MacAddr;
use nicpoll::port::testing::VethPair;
use nicpoll_iavf::sim::{SimConfig, SimVf, Switch, Wire};
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

/// Three VFs on one PF's switch: unicast reaches only the VF that owns the
/// address, broadcast every other VF, an address no VF owns is dropped and
/// counted (no uplink).
#[test]
fn the_pf_switch_delivers_by_destination_mac() {
    const THIRD: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
    let (mut a, mut qa, mut b, mut qb) = two(
        SimConfig {
            name: "sw-a".into(),
            ..cfg()
        },
        SimConfig {
            name: "sw-b".into(),
            mac: MacAddr(PEER_MAC),
            ..cfg()
        },
    );
    let (mut c, _) = Rig::up(SimConfig {
        name: "sw-c".into(),
        mac: MacAddr(THIRD),
        ..cfg()
    });
    let mut qc = c.queues(1, 64, 2048, 1518).remove(0);
    let sw = Switch::new("pf-test", None).unwrap();
    for r in [&a, &b, &c] {
        r.vf.attach(&sw);
    }
    a_to_b(&mut a, &mut qa, &b, &mut qb, VF_MAC, PEER_MAC, 3);
    a_to_b(&mut b, &mut qb, &c, &mut qc, PEER_MAC, THIRD, 2);
    a_to_b(&mut c, &mut qc, &a, &mut qa, THIRD, VF_MAC, 2);
    assert_eq!(c.vf.stats().rx_delivered, 2, "only what was for C");
    // Broadcast from A: B and C get it.
    let f = frame([0xff; 6], VF_MAC, 77, 80);
    a.put_tx(&mut qa, &f, true, None);
    a.ring_tx(&qa);
    for (r, q) in [(&b, &mut qb), (&c, &mut qc)] {
        let slot = q.rx_next;
        r.wait_rx(q, slot);
        assert_eq!(r.read(q.rx_buf(slot), 80), f);
        q.rx_next += 1;
    }
    // An address nobody owns: gone, counted.
    let f = frame([0x02, 9, 9, 9, 9, 9], VF_MAC, 78, 80);
    a.put_tx(&mut qa, &f, true, None);
    a.ring_tx(&qa);
    let t = std::time::Instant::now();
    while sw.stats().unknown_unicast == 0 && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let s = sw.stats();
    assert_eq!(s.unknown_unicast, 1, "{s:?}");
    assert_eq!(s.vf_to_vf, 3 + 2 + 2 + 2, "{s:?}");
    assert_eq!(b.vf.stats().rx_delivered, 3 + 1);
}

/// The switch's port on a host interface: a VF's frame to an address no VF
/// owns leaves there; a frame arriving there for a VF's MAC reaches that VF
/// only.
#[test]
fn the_pf_switch_uplink_on_a_veth_pair() {
    let mut needs = nicpoll_testkit::VETH.to_vec();
    needs.push(nicpoll_testkit::Need::RawSockets);
    if nicpoll_testkit::skip_if_missing(&needs) {
        return;
    }
    let pair = VethPair::create("npsw0");
    let (mut a, mut qa, b, qb) = two(
        SimConfig {
            name: "up-a".into(),
            ..cfg()
        },
        SimConfig {
            name: "up-b".into(),
            mac: MacAddr(PEER_MAC),
            ..cfg()
        },
    );
    let sw = Switch::new("pf-uplink-test", Some(&pair.a)).unwrap();
    a.vf.attach(&sw);
    b.vf.attach(&sw);
    let host = nicpoll::netdev::RawSocket::open(&pair.b).unwrap();
    let host_mac = [0x02, 0x42, 0, 0, 0, 0x99];
    let f = frame(host_mac, VF_MAC, 5, 100);
    a.put_tx(&mut qa, &f, true, None);
    a.ring_tx(&qa);
    let mut buf = [0u8; 2048];
    let t = std::time::Instant::now();
    let mut got = None;
    while got.is_none() && t.elapsed() < std::time::Duration::from_secs(5) {
        if let Some(n) = host.recv(&mut buf, std::time::Duration::from_millis(100))
            && buf[..6] == host_mac
        {
            got = Some(buf[..n].to_vec());
        }
    }
    assert_eq!(got.as_deref(), Some(&f[..]), "the frame left by the uplink");
    // From the host to VF b's MAC.
    let g = frame(PEER_MAC, host_mac, 6, 90);
    host.send(&g).unwrap();
    let slot = qb.rx_next;
    b.wait_rx(&qb, slot);
    assert_eq!(b.read(qb.rx_buf(slot), 90), g);
    assert_eq!(a.vf.stats().rx_delivered, 0, "not for A");
    assert_eq!(sw.stats().vf_to_uplink, 1);
}
