//! `5tswap` forwarding (testpmd's 5tswap.c): exchange the MACs, then — looking
//! through up to two VLAN tags — the IPv4 or IPv6 addresses, then the UDP or
//! TCP ports. Every swap keeps the one's-complement sums, so the IP header and
//! transport checksums stay valid without being touched.
//!
//! What cannot be parsed is not rewritten: a non-IP frame, or one whose IP
//! header is cut short or malformed, gets its MACs swapped only (as testpmd);
//! a transport header cut short is left as it is. Unlike testpmd, the ports of
//! a non-first IPv4 fragment are left alone (its payload does not begin with
//! them). Frames too short for an Ethernet header are freed and counted in
//! `rx_bad`. IPv6 extension headers are not walked (testpmd does not either).
#![deny(unsafe_code)]

use super::{Engine, EngineConfig, StreamCtx, StreamInfo};
use crate::net::ethernet::ethertype;
use crate::net::{EthernetFrame, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket, ip_proto};

/// The 5-tuple swap engine (stateless).
#[derive(Debug, Default)]
pub struct FiveTupleSwap;

/// Swap what can be swapped in one frame; false if it has no Ethernet header.
#[inline(always)]
pub fn swap_five_tuple(frame: &mut [u8]) -> bool {
    let Some(mut eth) = EthernetFrame::new_checked(&mut *frame) else {
        return false;
    };
    eth.swap_addrs();
    let Some(l3) = eth.layer3() else {
        return true;
    };
    let Some(l3_bytes) = frame.get_mut(l3.offset..) else {
        return true;
    };
    let (proto, l4) = match l3.ethertype {
        ethertype::IPV4 => {
            let Some(mut ip) = Ipv4Packet::new_checked(l3_bytes) else {
                return true;
            };
            ip.swap_addrs();
            if ip.is_later_fragment() {
                return true;
            }
            let hl = ip.header_len();
            (ip.protocol(), ip.into_inner().get_mut(hl..))
        }
        ethertype::IPV6 => {
            let Some(mut ip) = Ipv6Packet::new_checked(l3_bytes) else {
                return true;
            };
            ip.swap_addrs();
            (
                ip.next_header(),
                ip.into_inner().get_mut(crate::net::ipv6::HEADER_LEN..),
            )
        }
        _ => return true,
    };
    let Some(l4) = l4 else { return true };
    match proto {
        ip_proto::UDP => {
            if let Some(mut udp) = UdpPacket::new_checked(l4) {
                udp.swap_ports();
            }
        }
        ip_proto::TCP => {
            if let Some(mut tcp) = TcpPacket::new_checked(l4) {
                tcp.swap_ports();
            }
        }
        _ => {}
    }
    true
}

impl Engine for FiveTupleSwap {
    fn new(_: &EngineConfig, _: &StreamInfo) -> Self {
        FiveTupleSwap
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if ctx.receive() == 0 {
            return;
        }
        let bad = ctx.batch.retain_mut(|m| swap_five_tuple(m.data_mut()));
        if bad > 0 {
            ctx.counters.rx_bad.add(bad as u64);
        }
        ctx.transmit();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Harness, ipv4_udp_frame, ipv6_frame, tcp_segment, vlan_tag};
    use super::*;
    use crate::net::checksum;

    const M1: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const M2: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    fn swapped_macs(out: &[u8]) {
        assert_eq!(&out[0..6], &M2);
        assert_eq!(&out[6..12], &M1);
    }

    /// IPv4 + TCP with a valid TCP checksum over the pseudo-header.
    fn ipv4_tcp_frame() -> Vec<u8> {
        let tcp = tcp_segment(80, 40000, b"hello");
        let mut f = ipv4_udp_frame(M1, M2, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 0);
        f.truncate(34);
        f[23] = ip_proto::TCP;
        let total = (20 + tcp.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&tcp);
        let c = l4_checksum_v4(&f[26..34], ip_proto::TCP, &f[34..]);
        f[34 + 16..34 + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn l4_checksum_v4(addrs: &[u8], proto: u8, l4: &[u8]) -> u16 {
        let mut pseudo = addrs.to_vec();
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        !(checksum::sum(l4, checksum::sum(&pseudo, 0)) as u16)
    }

    fn l4_checksum_v6(addrs: &[u8], proto: u8, l4: &[u8]) -> u16 {
        let mut pseudo = addrs.to_vec();
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
        !(checksum::sum(l4, checksum::sum(&pseudo, 0)) as u16)
    }

    #[test]
    fn ipv4_udp_and_tcp() {
        let mut h = Harness::new();
        let mut udp = ipv4_udp_frame(M1, M2, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 2000, 18);
        // Give the UDP datagram a real checksum too.
        let c = l4_checksum_v4(&udp[26..34], ip_proto::UDP, &udp[34..]);
        udp[40..42].copy_from_slice(&c.to_be_bytes());
        let tcp = ipv4_tcp_frame();
        h.rx.push_frames([udp.clone(), tcp.clone()]);
        h.forward(&mut FiveTupleSwap);
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), 2);
        for out in &sent {
            swapped_macs(out);
            assert_eq!(&out[26..30], &[10, 0, 0, 2]);
            assert_eq!(&out[30..34], &[10, 0, 0, 1]);
            assert_eq!(
                checksum::checksum(&out[14..34]),
                0,
                "IP header checksum still valid"
            );
        }
        let u = &sent[0];
        assert_eq!(&u[34..38], &[0x07, 0xd0, 0x03, 0xe8], "ports 2000 -> 1000");
        assert_eq!(
            l4_checksum_v4(&u[26..34], ip_proto::UDP, &u[34..]),
            0,
            "UDP checksum valid"
        );
        assert_eq!(&u[38..], &udp[38..]);
        let t = &sent[1];
        assert_eq!(&t[34..38], &[0x9c, 0x40, 0x00, 0x50], "ports 40000 -> 80");
        assert_eq!(
            l4_checksum_v4(&t[26..34], ip_proto::TCP, &t[34..]),
            0,
            "TCP checksum valid"
        );
        assert_eq!(&t[38..], &tcp[38..]);
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bad), (2, 2, 0));
        h.assert_no_leak();
    }

    #[test]
    fn ipv6_udp_behind_a_vlan_tag_and_tcp() {
        let mut h = Harness::new();
        let mut udp = ipv6_frame(
            M1,
            M2,
            1,
            2,
            ip_proto::UDP,
            &[0x03, 0xe8, 0x03, 0xe9, 0, 10, 0, 0, 0xab, 0xcd],
        );
        let c = l4_checksum_v6(&udp[22..54], ip_proto::UDP, &udp[54..]);
        udp[60..62].copy_from_slice(&c.to_be_bytes());
        let tagged = vlan_tag(&udp, 0x8100, 7);
        let tcp = ipv6_frame(M1, M2, 3, 4, ip_proto::TCP, &tcp_segment(1, 2, b""));
        h.rx.push_frames([tagged.clone(), tcp.clone()]);
        h.forward(&mut FiveTupleSwap);
        let sent = h.tx.take_sent();
        let u = &sent[0];
        swapped_macs(u);
        assert_eq!(&u[12..18], &tagged[12..18], "tag untouched");
        assert_eq!(&u[26..42], &tagged[42..58], "addresses swapped");
        assert_eq!(&u[42..58], &tagged[26..42]);
        assert_eq!(&u[58..62], &[0x03, 0xe9, 0x03, 0xe8]);
        assert_eq!(l4_checksum_v6(&u[26..58], ip_proto::UDP, &u[58..]), 0);
        let t = &sent[1];
        swapped_macs(t);
        assert_eq!(&t[22..38], &tcp[38..54]);
        assert_eq!(&t[54..58], &[0, 2, 0, 1]);
        h.assert_no_leak();
    }

    #[test]
    fn partial_frames_get_what_can_be_swapped() {
        let mut h = Harness::new();
        let full = ipv4_udp_frame(M1, M2, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 2000, 18);
        let mut inputs = Vec::new();
        // Every truncation of an IPv4/UDP frame, plus a runt, an ARP frame and
        // a later fragment.
        for n in 0..=full.len() {
            inputs.push(full[..n].to_vec());
        }
        let mut arp = full.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        inputs.push(arp.clone());
        let mut frag = full.clone();
        frag[20..22].copy_from_slice(&1u16.to_be_bytes());
        inputs.push(frag.clone());
        let n_in = inputs.len();
        for chunk in inputs.chunks(32) {
            h.rx.push_frames(chunk.iter().cloned());
            h.forward(&mut FiveTupleSwap);
        }
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), n_in - 14, "frames of 0..14 bytes dropped");
        for out in &sent[..34 - 14] {
            // 14..34 bytes: Ethernet only, no whole IP header.
            swapped_macs(out);
            assert_eq!(&out[12..], &full[12..out.len()]);
        }
        for out in &sent[34 - 14..42 - 14] {
            // Whole IP header, UDP cut short: addresses swapped, ports not.
            assert_eq!(&out[26..34], &[10, 0, 0, 2, 10, 0, 0, 1]);
            assert_eq!(&out[34..], &full[34..out.len()]);
        }
        for out in &sent[42 - 14..=full.len() - 14] {
            assert_eq!(&out[34..38], &[0x07, 0xd0, 0x03, 0xe8]);
        }
        let a = &sent[sent.len() - 2];
        swapped_macs(a);
        assert_eq!(&a[12..], &arp[12..], "non-IP: MACs only");
        let f = &sent[sent.len() - 1];
        assert_eq!(&f[26..34], &[10, 0, 0, 2, 10, 0, 0, 1]);
        assert_eq!(&f[34..], &frag[34..], "later fragment: no ports");
        let s = h.stats();
        assert_eq!(
            (s.rx_packets, s.tx_packets, s.rx_bad),
            (n_in as u64, (n_in - 14) as u64, 14)
        );
        h.assert_no_leak();
    }
}
