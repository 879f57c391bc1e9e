//! `icmpecho` (testpmd's icmpecho.c): answer ARP requests and ICMPv4 echo
//! requests in place, looking through up to two VLAN tags (kept in the reply);
//! free everything else.
//!
//! - ARP request (Ethernet/IPv4), for any target address: the reply goes from
//!   the transmit port's MAC to the requester (the frame's source MAC); its
//!   sender is the transmit port's MAC and the address asked for, its target
//!   the requester.
//! - ICMPv4 echo request (type 8, code 0, not a later fragment): MACs swapped,
//!   IP addresses swapped, type 0, ICMP checksum fixed incrementally. As in
//!   testpmd, a request sent to a multicast group is answered from a unicast
//!   address made up from the requester's (its two low bits set to 01, or to 10
//!   if they already were 01), and the IP header checksum is recomputed.
//!
//! Frames too short for an Ethernet header are counted in `rx_bad`; other
//! frames that are not one of these requests are freed without a count (as
//! testpmd does: they were counted as received).
#![deny(unsafe_code)]

use super::{Engine, EngineConfig, StreamCtx, StreamInfo};
use crate::net::arp::operation;
use crate::net::ethernet::ethertype;
use crate::net::{ArpPacket, EthernetFrame, Icmpv4Packet, Ipv4Packet, ip_proto};
use crate::port::MacAddr;

/// The icmpecho engine: the MAC it answers ARP with.
#[derive(Debug)]
pub struct IcmpEcho {
    mac: MacAddr,
}

/// What became of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten into a reply: send it.
    Reply,
    /// Not a request this engine answers: free it.
    Ignore,
    /// No Ethernet header: free it and count it as bad.
    Runt,
}

/// Turn `frame` into the reply to it, if it is an ARP request or an ICMPv4 echo
/// request; `our_mac` is the transmit port's address.
#[inline(always)]
pub fn answer(frame: &mut [u8], our_mac: MacAddr) -> Verdict {
    let Some(eth) = EthernetFrame::new_checked(&*frame) else {
        return Verdict::Runt;
    };
    let Some(l3) = eth.layer3() else {
        return Verdict::Ignore;
    };
    match l3.ethertype {
        ethertype::ARP => {
            let Some(mut arp) = frame.get_mut(l3.offset..).and_then(ArpPacket::new_checked) else {
                return Verdict::Ignore;
            };
            if arp.operation() != operation::REQUEST {
                return Verdict::Ignore;
            }
            arp.make_reply(our_mac);
            // A new view: the ARP one borrowed the same bytes.
            let Some(mut eth) = EthernetFrame::new_checked(&mut *frame) else {
                return Verdict::Runt;
            };
            let requester = eth.src_addr();
            eth.set_dst_addr(requester);
            eth.set_src_addr(our_mac);
            Verdict::Reply
        }
        ethertype::IPV4 => {
            let Some(mut ip) = frame.get_mut(l3.offset..).and_then(Ipv4Packet::new_checked) else {
                return Verdict::Ignore;
            };
            if ip.protocol() != ip_proto::ICMP || ip.is_later_fragment() {
                return Verdict::Ignore;
            }
            let is_request =
                Icmpv4Packet::new_checked(ip.payload()).is_some_and(|icmp| icmp.is_echo_request());
            if !is_request {
                return Verdict::Ignore;
            }
            let dst = ip.dst_addr();
            if dst.is_multicast() {
                let src = u32::from(ip.src_addr());
                let low = if src & 3 == 1 { 2 } else { 1 };
                ip.set_dst_addr(src.into());
                ip.set_src_addr(((src & !3) | low).into());
                ip.fill_checksum();
            } else {
                ip.swap_addrs();
            }
            if let Some(mut icmp) = Icmpv4Packet::new_checked(ip.payload_mut()) {
                icmp.make_echo_reply();
            }
            if let Some(mut eth) = EthernetFrame::new_checked(&mut *frame) {
                eth.swap_addrs();
            }
            Verdict::Reply
        }
        _ => Verdict::Ignore,
    }
}

impl Engine for IcmpEcho {
    fn new(_: &EngineConfig, info: &StreamInfo) -> Self {
        IcmpEcho { mac: info.tx_mac }
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if ctx.receive() == 0 {
            return;
        }
        let mac = self.mac;
        let mut runts = 0u64;
        ctx.batch.retain_mut(|m| match answer(m.data_mut(), mac) {
            Verdict::Reply => true,
            Verdict::Ignore => false,
            Verdict::Runt => {
                runts += 1;
                false
            }
        });
        if runts > 0 {
            ctx.counters.rx_bad.add(runts);
        }
        ctx.transmit();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Harness, frame_of_len, ipv4_udp_frame, ipv6_frame, vlan_tag};
    use super::*;
    use crate::net::checksum;

    const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];

    fn arp_request(op: u16) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&PEER);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&PEER);
        f.extend_from_slice(&[192, 168, 7, 1]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[192, 168, 7, 99]);
        f.resize(60, 0); // Ethernet padding
        f
    }

    /// An echo request from 192.168.7.1 to `dst`, with `opts` bytes of IP options.
    fn echo_request(dst: [u8; 4], opts: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x10]);
        f.extend_from_slice(&PEER);
        f.extend_from_slice(&[0x08, 0x00]);
        let data = b"abcdefghijklmnopqrstuvw";
        let total = (20 + opts + 8 + data.len()) as u16;
        f.extend_from_slice(&[0x45 + (opts / 4) as u8, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0, 0, 64, 1, 0, 0, 192, 168, 7, 1]);
        f.extend_from_slice(&dst);
        f.resize(f.len() + opts, 1); // NOP options
        let c = checksum::checksum(&f[14..34 + opts]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let icmp_at = f.len();
        f.extend_from_slice(&[8, 0, 0, 0, 0xbe, 0xef, 0, 5]);
        f.extend_from_slice(data);
        let c = checksum::checksum(&f[icmp_at..]);
        f[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn run(frames: Vec<Vec<u8>>) -> (Harness, Vec<Vec<u8>>) {
        let mut h = Harness::new();
        let mut e = IcmpEcho::new(&h.cfg, &h.info);
        for chunk in frames.chunks(h.cfg.burst) {
            h.rx.push_frames(chunk.iter().cloned());
            h.forward(&mut e);
        }
        let sent = h.tx.take_sent();
        h.assert_no_leak();
        (h, sent)
    }

    #[test]
    fn answers_arp_requests_untagged_and_tagged() {
        let req = arp_request(1);
        let tagged = vlan_tag(&req, 0x8100, 42);
        let (h, sent) = run(vec![req.clone(), tagged.clone()]);
        assert_eq!(sent.len(), 2);
        let me = h.info.tx_mac.0;
        let mut want = Vec::new();
        want.extend_from_slice(&PEER); // to the requester
        want.extend_from_slice(&me);
        want.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        want.extend_from_slice(&me);
        want.extend_from_slice(&[192, 168, 7, 99]); // the address asked for
        want.extend_from_slice(&PEER);
        want.extend_from_slice(&[192, 168, 7, 1]);
        want.resize(60, 0);
        assert_eq!(sent[0], want);
        assert_eq!(sent[1], vlan_tag(&want, 0x8100, 42), "tag kept");
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bad), (2, 2, 0));
    }

    #[test]
    fn answers_echo_requests() {
        let req = echo_request([192, 168, 7, 99], 0);
        let with_opts = echo_request([192, 168, 7, 99], 4);
        let tagged = vlan_tag(&req, 0x88a8, 5);
        let (h, sent) = run(vec![req.clone(), with_opts.clone(), tagged.clone()]);
        assert_eq!(sent.len(), 3);
        for (out, orig, l3) in [
            (&sent[0], &req, 14),
            (&sent[1], &with_opts, 14),
            (&sent[2], &tagged, 18),
        ] {
            assert_eq!(out.len(), orig.len());
            assert_eq!(&out[0..6], &orig[6..12], "MACs swapped");
            assert_eq!(&out[6..12], &orig[0..6]);
            let ihl = (out[l3] & 0xf) as usize * 4;
            assert_eq!(&out[l3 + 12..l3 + 16], &[192, 168, 7, 99]);
            assert_eq!(&out[l3 + 16..l3 + 20], &[192, 168, 7, 1]);
            assert_eq!(
                checksum::checksum(&out[l3..l3 + ihl]),
                0,
                "IP checksum valid"
            );
            let icmp = &out[l3 + ihl..];
            assert_eq!((icmp[0], icmp[1]), (0, 0), "echo reply");
            assert_eq!(checksum::checksum(icmp), 0, "ICMP checksum valid");
            assert_eq!(
                &icmp[4..],
                &orig[l3 + ihl + 4..],
                "ident, sequence and data kept"
            );
        }
        assert_eq!(h.stats().tx_packets, 3);
    }

    #[test]
    fn multicast_echo_is_answered_from_a_unicast_address() {
        let req = echo_request([224, 0, 0, 1], 0);
        let (_, sent) = run(vec![req]);
        let out = &sent[0];
        assert_eq!(
            &out[26..30],
            &[192, 168, 7, 2],
            "requester's address with low bits 10"
        );
        assert_eq!(&out[30..34], &[192, 168, 7, 1]);
        assert_eq!(
            checksum::checksum(&out[14..34]),
            0,
            "IP checksum recomputed"
        );
        assert_eq!(checksum::checksum(&out[34..]), 0);
        let mut req = echo_request([239, 1, 1, 1], 0);
        req[29] = 4; // requester 192.168.7.4: low bits 00 -> 01
        let c = checksum::update16(u16::from_be_bytes([req[24], req[25]]), 0x0701, 0x0704);
        req[24..26].copy_from_slice(&c.to_be_bytes());
        let (_, sent) = run(vec![req]);
        assert_eq!(&sent[0][26..34], &[192, 168, 7, 5, 192, 168, 7, 4]);
        assert_eq!(checksum::checksum(&sent[0][14..34]), 0);
    }

    #[test]
    fn frees_everything_else() {
        let mut reply = echo_request([192, 168, 7, 99], 0);
        reply[34] = 0; // an echo reply is not answered
        let mut code1 = echo_request([192, 168, 7, 99], 0);
        code1[35] = 1;
        let mut frag = echo_request([192, 168, 7, 99], 0);
        frag[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
        let mut arp_ipv6 = arp_request(1);
        arp_ipv6[16..18].copy_from_slice(&[0x86, 0xdd]);
        let mut ip_len_short = echo_request([192, 168, 7, 99], 0);
        ip_len_short[16..18].copy_from_slice(&27u16.to_be_bytes()); // 7 ICMP bytes
        let mut others = vec![
            arp_request(2),
            arp_ipv6,
            reply,
            code1,
            frag,
            ip_len_short,
            ipv4_udp_frame([2; 6], PEER, [1, 1, 1, 1], [2, 2, 2, 2], 1, 2, 20),
            ipv6_frame([2; 6], PEER, 1, 2, 58, &[128, 0, 0, 0, 0, 0, 0, 0]),
            frame_of_len(60, 9),
        ];
        // Every truncation of an ARP request and of an echo request.
        let arp = arp_request(1);
        let echo = echo_request([192, 168, 7, 99], 0);
        others.extend((14..42).map(|n| arp[..n].to_vec()));
        others.extend((14..42).map(|n| echo[..n].to_vec()));
        let runts: Vec<Vec<u8>> = (0..14).map(|n| echo[..n].to_vec()).collect();
        let n_other = others.len() as u64;
        others.extend(runts);
        let (h, sent) = run(others);
        assert!(sent.is_empty(), "nothing answered: {:?}", sent.first());
        let s = h.stats();
        assert_eq!(
            (s.rx_packets, s.tx_packets, s.rx_bad),
            (n_other + 14, 0, 14),
            "only runts count as bad"
        );
    }

    #[test]
    fn mixed_burst_keeps_order() {
        let frames = vec![
            frame_of_len(60, 1),
            echo_request([192, 168, 7, 99], 0),
            vec![0; 3],
            arp_request(1),
            frame_of_len(60, 2),
        ];
        let (h, sent) = run(frames);
        assert_eq!(sent.len(), 2);
        assert_eq!(&sent[0][12..14], &[0x08, 0x00]);
        assert_eq!(&sent[1][12..14], &[0x08, 0x06]);
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bad), (5, 2, 1));
    }
}
