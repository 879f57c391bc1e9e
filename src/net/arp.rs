//! ARP packets (RFC 826), for Ethernet and IPv4 only.
#![deny(unsafe_code)]

use std::net::Ipv4Addr;

use super::{get_u16, set_u16, swap_fields};
use crate::port::MacAddr;

/// Byte ranges of the ARP fields (Ethernet/IPv4 layout).
pub mod field {
    use core::ops::Range;

    /// Hardware type (1: Ethernet).
    pub const HTYPE: Range<usize> = 0..2;
    /// Protocol type (0x0800: IPv4).
    pub const PTYPE: Range<usize> = 2..4;
    /// Hardware address length (6).
    pub const HLEN: usize = 4;
    /// Protocol address length (4).
    pub const PLEN: usize = 5;
    /// Operation ([`super::operation`]).
    pub const OPER: Range<usize> = 6..8;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: Range<usize> = 14..18;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: Range<usize> = 24..28;
}

/// ARP operations.
pub mod operation {
    /// Request.
    pub const REQUEST: u16 = 1;
    /// Reply.
    pub const REPLY: u16 = 2;
}

/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;

/// A view of an Ethernet/IPv4 ARP packet: 28 bytes at least, hardware type
/// Ethernet with 6-byte addresses, protocol IPv4 with 4-byte addresses.
#[derive(Debug, Clone)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wrap `buffer` if it holds a whole Ethernet/IPv4 ARP packet; `None` if it
    /// is short or is ARP for other hardware or protocols.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Option<Self> {
        let d = buffer.as_ref();
        if d.len() < PACKET_LEN
            || get_u16(d, field::HTYPE.start) != HTYPE_ETHERNET
            || get_u16(d, field::PTYPE.start) != super::ethernet::ethertype::IPV4
            || d[field::HLEN] != 6
            || d[field::PLEN] != 4
        {
            return None;
        }
        Some(ArpPacket { buffer })
    }

    /// Give back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation ([`operation`]).
    #[inline(always)]
    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER.start)
    }

    /// Sender hardware address.
    #[inline(always)]
    pub fn sender_hw_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SHA.start)
    }

    /// Sender protocol address.
    #[inline(always)]
    pub fn sender_ip_addr(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::SPA.start)
    }

    /// Target hardware address.
    #[inline(always)]
    pub fn target_hw_addr(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::THA.start)
    }

    /// Target protocol address.
    #[inline(always)]
    pub fn target_ip_addr(&self) -> Ipv4Addr {
        ip_at(self.buffer.as_ref(), field::TPA.start)
    }
}

#[inline(always)]
fn mac_at(d: &[u8], at: usize) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&d[at..at + 6]);
    MacAddr(m)
}

#[inline(always)]
fn ip_at(d: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(d[at], d[at + 1], d[at + 2], d[at + 3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Set the operation.
    #[inline(always)]
    pub fn set_operation(&mut self, op: u16) {
        set_u16(self.buffer.as_mut(), field::OPER.start, op);
    }

    /// Set the sender hardware address.
    #[inline(always)]
    pub fn set_sender_hw_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&m.0);
    }

    /// Set the sender protocol address.
    #[inline(always)]
    pub fn set_sender_ip_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&a.octets());
    }

    /// Set the target hardware address.
    #[inline(always)]
    pub fn set_target_hw_addr(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&m.0);
    }

    /// Set the target protocol address.
    #[inline(always)]
    pub fn set_target_ip_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&a.octets());
    }

    /// Turn a request into the reply `our_mac` gives, in place: operation
    /// reply, target := the requester (its hardware and protocol address),
    /// sender := `our_mac` and the address that was asked for.
    #[inline(always)]
    pub fn make_reply(&mut self, our_mac: MacAddr) {
        let d = self.buffer.as_mut();
        set_u16(d, field::OPER.start, operation::REPLY);
        d.copy_within(field::SHA, field::THA.start);
        d[field::SHA].copy_from_slice(&our_mac.0);
        swap_fields::<4>(d, field::SPA.start, field::TPA.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: [u8; 28] = [
        0, 1, 8, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
        0x02, 0, 0, 0, 0, 0xaa, 192, 168, 1, 1, // sender
        0, 0, 0, 0, 0, 0, 192, 168, 1, 2, // target
    ];

    #[test]
    fn fields_and_reply() {
        let mut p = REQ.to_vec();
        let mut a = ArpPacket::new_checked(&mut p[..]).unwrap();
        assert_eq!(a.operation(), operation::REQUEST);
        assert_eq!(a.sender_hw_addr(), MacAddr([2, 0, 0, 0, 0, 0xaa]));
        assert_eq!(a.sender_ip_addr(), Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(a.target_hw_addr(), MacAddr::default());
        assert_eq!(a.target_ip_addr(), Ipv4Addr::new(192, 168, 1, 2));
        let ours = MacAddr([2, 0, 0, 0, 0, 0xbb]);
        a.make_reply(ours);
        assert_eq!(a.operation(), operation::REPLY);
        assert_eq!(a.sender_hw_addr(), ours);
        assert_eq!(a.sender_ip_addr(), Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(a.target_hw_addr(), MacAddr([2, 0, 0, 0, 0, 0xaa]));
        assert_eq!(a.target_ip_addr(), Ipv4Addr::new(192, 168, 1, 1));
        a.set_operation(operation::REQUEST);
        a.set_sender_hw_addr(MacAddr([1; 6]));
        a.set_sender_ip_addr(Ipv4Addr::new(1, 1, 1, 1));
        a.set_target_hw_addr(MacAddr([2; 6]));
        a.set_target_ip_addr(Ipv4Addr::new(2, 2, 2, 2));
        assert_eq!(
            &p[6..],
            &[
                0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2
            ]
        );
    }

    #[test]
    fn truncated_and_foreign() {
        for n in 0..PACKET_LEN {
            assert!(ArpPacket::new_checked(&REQ[..n]).is_none(), "{n}");
        }
        for (i, v) in [(1, 6), (3, 0x08), (4, 8), (5, 16)] {
            let mut q = REQ;
            q[i] = v;
            assert!(ArpPacket::new_checked(&q[..]).is_none(), "byte {i} = {v}");
        }
    }
}
