//! IPv6 fixed headers (RFC 8200). Extension headers are not walked: the
//! payload starts right after the 40-byte fixed header.
#![deny(unsafe_code)]

use std::net::Ipv6Addr;

use super::{get_u16, get_u32, set_u16, swap_fields};

/// Byte ranges of the IPv6 fixed header fields.
pub mod field {
    use core::ops::Range;

    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length (everything after the fixed header).
    pub const LENGTH: Range<usize> = 4..6;
    /// Next header (protocol of the payload or first extension header).
    pub const NXT_HDR: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 8..24;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// A view of an IPv6 packet whose version is 6 and whose fixed header is whole.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wrap `buffer` if it starts with a whole IPv6 fixed header of version 6.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Option<Self> {
        let d = buffer.as_ref();
        if d.len() < HEADER_LEN || d[0] >> 4 != 6 {
            return None;
        }
        Some(Ipv6Packet { buffer })
    }

    /// Give back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version (always 6 for a checked view).
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        (get_u32(self.buffer.as_ref(), 0) >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline(always)]
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), 0) & 0x000f_ffff
    }

    /// Payload length field.
    #[inline(always)]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Next header ([`super::ip_proto`] or an extension header type).
    #[inline(always)]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline(always)]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC_ADDR]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST_ADDR]);
        Ipv6Addr::from(a)
    }

    /// The payload: after the fixed header, up to the payload length or the end
    /// of the buffer, whichever comes first.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        let end = payload_end(d);
        &d[HEADER_LEN..end]
    }
}

#[inline(always)]
fn payload_end(d: &[u8]) -> usize {
    (HEADER_LEN + get_u16(d, field::LENGTH.start) as usize).min(d.len())
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set the payload length field.
    #[inline(always)]
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, v);
    }

    /// Set the next header.
    #[inline(always)]
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }

    /// Set the hop limit.
    #[inline(always)]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Set the source address.
    #[inline(always)]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Set the destination address.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Exchange source and destination addresses (transport checksums over the
    /// pseudo-header stay valid).
    #[inline(always)]
    pub fn swap_addrs(&mut self) {
        swap_fields::<16>(
            self.buffer.as_mut(),
            field::SRC_ADDR.start,
            field::DST_ADDR.start,
        );
    }

    /// The payload (see [`Ipv6Packet::payload`]), writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let d = self.buffer.as_mut();
        let end = payload_end(d);
        &mut d[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ip_proto;

    fn packet() -> Vec<u8> {
        let mut p = vec![0x6a, 0xb1, 0x23, 0x45, 0x00, 0x04, ip_proto::TCP, 64];
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[1, 2, 3, 4, 0xee, 0xee]);
        p
    }

    #[test]
    fn fields_and_swap() {
        let mut p = packet();
        let mut ip = Ipv6Packet::new_checked(&mut p[..]).unwrap();
        assert_eq!(ip.version(), 6);
        assert_eq!(ip.traffic_class(), 0xab);
        assert_eq!(ip.flow_label(), 0x12345);
        assert_eq!(ip.payload_len(), 4);
        assert_eq!(ip.next_header(), ip_proto::TCP);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.payload(), &[1, 2, 3, 4]);
        ip.swap_addrs();
        assert_eq!(ip.src_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.dst_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        ip.set_hop_limit(1);
        ip.set_next_header(ip_proto::UDP);
        ip.set_src_addr(Ipv6Addr::LOCALHOST);
        ip.set_dst_addr(Ipv6Addr::UNSPECIFIED);
        ip.set_payload_len(500);
        assert_eq!(ip.payload().len(), 6, "clamped to the buffer");
        ip.payload_mut()[0] = 7;
        assert_eq!(p[40], 7);
        assert_eq!(p[7], 1);
    }

    #[test]
    fn truncated_and_malformed() {
        let p = packet();
        for n in 0..HEADER_LEN {
            assert!(Ipv6Packet::new_checked(&p[..n]).is_none(), "{n}");
        }
        let ip = Ipv6Packet::new_checked(&p[..42]).unwrap();
        assert_eq!(ip.payload(), &[1, 2]);
        let mut q = p.clone();
        q[0] = 0x45;
        assert!(Ipv6Packet::new_checked(&q[..]).is_none());
    }
}
