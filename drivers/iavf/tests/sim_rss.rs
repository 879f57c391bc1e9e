//! RSS in the simulated VF: the Toeplitz hash of the programmed key over the
//! IPv4 5-tuple, checked against the Microsoft RSS verification vectors, and the
//! LUT spreading flows over queues.
#![cfg(feature = "sim")]

mod sim_util;

use nicpoll::bar::Bar;
use sim_util::*;

/// The Microsoft RSS verification key (40 bytes; i40e keys are 52, the rest 0).
const MS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Flow A: 66.9.149.187:2794 -> 161.142.100.80:1766 (TCP hash 0x51ccc178, IPv4
/// hash 0x323e8fc2); flow B: 199.92.111.2:14230 -> 65.69.140.83:4739 (TCP hash
/// 0xc626b0ea).
const A: ([u8; 4], [u8; 4], u16, u16) = ([66, 9, 149, 187], [161, 142, 100, 80], 2794, 1766);
const B: ([u8; 4], [u8; 4], u16, u16) = ([199, 92, 111, 2], [65, 69, 140, 83], 14230, 4739);
const HASH_A_TCP: u32 = 0x51cc_c178;
const HASH_A_IP: u32 = 0x323e_8fc2;
const HASH_B_TCP: u32 = 0xc626_b0ea;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

#[test]
fn toeplitz_spreads_two_flows_over_queues() {
    let (mut rig, _) = Rig::up(cfg());
    let (inject, _wire) = rig.vf.wire_channel();
    let mut qs = rig.queues(4, 64, 2048, 1518);
    let vsi = rig.vsi_id;
    let mut key = MS_KEY.to_vec();
    key.resize(52, 0);
    rig.expect(op::CONFIG_RSS_KEY, &rss_bytes(vsi, &key), SUCCESS);
    // LUT index = the hash's 6 low bits: A (0x78 & 63 = 56) to queue 1, B (0xea &
    // 63 = 42) to queue 2, everything else to queue 0.
    let mut lut = vec![0u8; 64];
    lut[(HASH_A_TCP & 63) as usize] = 1;
    lut[(HASH_B_TCP & 63) as usize] = 2;
    rig.expect(op::CONFIG_RSS_LUT, &rss_bytes(vsi, &lut), SUCCESS);

    let send = |proto, f: ([u8; 4], [u8; 4], u16, u16)| {
        inject
            .send(ipv4_l4(VF_MAC, PEER_MAC, proto, f.0, f.1, f.2, f.3))
            .unwrap();
    };
    let mut next = |rig: &Rig, q: usize| {
        let slot = qs[q].rx_next;
        let d = rig.wait_rx(&qs[q], slot);
        qs[q].rx_next += 1;
        d
    };
    send(TCP, A);
    let d = next(&rig, 1);
    assert_eq!(rx_fltstat(d[1]), 3, "RSS hash valid");
    assert_eq!((d[0] >> 32) as u32, HASH_A_TCP);
    assert_eq!(rx_ptype(d[1]), 26, "IPv4 TCP");
    send(TCP, B);
    let d = next(&rig, 2);
    assert_eq!((d[0] >> 32) as u32, HASH_B_TCP);
    // UDP hashes the same 12 bytes.
    send(UDP, A);
    let d = next(&rig, 1);
    assert_eq!((d[0] >> 32) as u32, HASH_A_TCP);
    assert_eq!(rx_ptype(d[1]), 24, "IPv4 UDP");
    // Other IPv4: addresses only.
    send(ICMP, A);
    // (0x323e8fc2 & 63 = 2: LUT entry 2 is queue 0.)
    let d = next(&rig, 0);
    assert_eq!((d[0] >> 32) as u32, HASH_A_IP);
    assert_eq!(rx_ptype(d[1]), 28, "IPv4 ICMP");
    // The same flow always lands on the same queue.
    for _ in 0..5 {
        send(TCP, B);
        let d = next(&rig, 2);
        assert_eq!((d[0] >> 32) as u32, HASH_B_TCP);
    }
    // Without TCP in the hash-enable mask, TCP is not hashed: queue 0, no hash.
    rig.expect(op::SET_RSS_HENA, &(1u64 << 31).to_le_bytes(), SUCCESS);
    send(TCP, A);
    let d = next(&rig, 0);
    assert_eq!(rx_fltstat(d[1]), 0);
    assert_eq!(d[0] >> 32, 0);
    assert_eq!(rig.vf.stats().rx_delivered, 10);
    for q in &qs {
        // Nothing landed anywhere else.
        assert_eq!(rig.rx_desc(q, q.rx_next)[1] & 1, 0, "queue {}", q.id);
    }
}

#[test]
fn rss_through_the_registers() {
    // A VF granted RSS_REG programs VFQF_HKEY/HLUT itself.
    let mut rig = Rig::new(cfg());
    rig.init_aq();
    let res = rig.bring_up(cap::L2 | cap::RSS_REG);
    assert_ne!(res.caps & cap::RSS_REG, 0);
    let (inject, _wire) = rig.vf.wire_channel();
    let qs = rig.queues(4, 64, 2048, 1518);
    let mut key = MS_KEY.to_vec();
    key.resize(52, 0);
    for (i, w) in key.chunks(4).enumerate() {
        rig.bar
            .write32(r::hkey(i), u32::from_le_bytes(w.try_into().unwrap()));
    }
    // Every LUT entry: queue 3.
    for i in 0..16 {
        rig.bar.write32(r::hlut(i), 0x0303_0303);
    }
    inject
        .send(ipv4_l4(VF_MAC, PEER_MAC, TCP, B.0, B.1, B.2, B.3))
        .unwrap();
    let d = rig.wait_rx(&qs[3], 0);
    assert_eq!((d[0] >> 32) as u32, HASH_B_TCP);
}
