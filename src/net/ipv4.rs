//! IPv4 headers (RFC 791), options allowed.
#![deny(unsafe_code)]

use std::net::Ipv4Addr;

use super::{checksum, get_u16, set_u16, swap_fields};

/// Byte ranges of the IPv4 header fields.
pub mod field {
    use core::ops::Range;

    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP (high 6 bits) and ECN.
    pub const DSCP_ECN: usize = 1;
    /// Total length: header plus payload.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags (3 bits) and fragment offset (13 bits, in 8-byte units).
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

const DONT_FRAG: u16 = 0x4000;
const MORE_FRAGS: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 header (and what follows it) whose version is 4, whose
/// IHL is at least 5, and whose whole header, options included, is in the buffer.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wrap `buffer` if it starts with a whole, well-formed IPv4 header: `None`
    /// if it is shorter than 20 bytes, the version is not 4, the IHL is below 5,
    /// or the header (options included) runs past the buffer. The total length
    /// field is not checked against the buffer (see [`Ipv4Packet::payload`]).
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Option<Self> {
        let d = buffer.as_ref();
        let first = *d.first()?;
        if first >> 4 != 4 {
            return None;
        }
        let hl = (first & 0x0f) as usize * 4;
        if hl < MIN_HEADER_LEN || d.len() < hl {
            return None;
        }
        Some(Ipv4Packet { buffer })
    }

    /// Give back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version (always 4 for a checked view).
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4, options included).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) as usize * 4
    }

    /// The header bytes, options included.
    #[inline(always)]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// DSCP and ECN byte.
    #[inline(always)]
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// Total length field (header plus payload), as sent.
    #[inline(always)]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Identification.
    #[inline(always)]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// Don't-fragment flag.
    #[inline(always)]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & DONT_FRAG != 0
    }

    /// More-fragments flag.
    #[inline(always)]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & MORE_FRAGS != 0
    }

    /// Fragment offset in bytes.
    #[inline(always)]
    pub fn frag_offset(&self) -> u16 {
        (get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this is a fragment other than the first (its payload does not
    /// start with the transport header).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & FRAG_OFFSET_MASK != 0
    }

    /// Time to live.
    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Payload protocol ([`super::ip_proto`]).
    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    #[inline(always)]
    pub fn src_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[12], d[13], d[14], d[15])
    }

    /// Destination address.
    #[inline(always)]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        Ipv4Addr::new(d[16], d[17], d[18], d[19])
    }

    /// Whether the header checksum is right.
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.header()) == 0
    }

    /// The payload: from the end of the header to the end of the total length,
    /// or of the buffer if that comes first (a truncated packet). Ethernet
    /// padding past the total length is not included; a total length shorter
    /// than the header gives an empty payload.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        let (start, end) = payload_bounds(d, self.header_len());
        &d[start..end]
    }
}

/// Payload range: `header_len <= end <= d.len()`.
#[inline(always)]
fn payload_bounds(d: &[u8], header_len: usize) -> (usize, usize) {
    let total = get_u16(d, field::LENGTH.start) as usize;
    (header_len, total.clamp(header_len, d.len()))
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set the DSCP/ECN byte.
    #[inline(always)]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = v;
    }

    /// Set the total length field.
    #[inline(always)]
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, v);
    }

    /// Set the identification.
    #[inline(always)]
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT.start, v);
    }

    /// Set the time to live.
    #[inline(always)]
    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v;
    }

    /// Set the payload protocol.
    #[inline(always)]
    pub fn set_protocol(&mut self, v: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = v;
    }

    /// Set the header checksum field.
    #[inline(always)]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, v);
    }

    /// Set the source address (the checksum is not updated).
    #[inline(always)]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&a.octets());
    }

    /// Set the destination address (the checksum is not updated).
    #[inline(always)]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&a.octets());
    }

    /// Exchange source and destination addresses. The header checksum (and any
    /// transport checksum over the pseudo-header) stays valid: the sum is the same.
    #[inline(always)]
    pub fn swap_addrs(&mut self) {
        swap_fields::<4>(
            self.buffer.as_mut(),
            field::SRC_ADDR.start,
            field::DST_ADDR.start,
        );
    }

    /// Compute and store the header checksum.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// The payload (see [`Ipv4Packet::payload`]), writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let d = self.buffer.as_mut();
        let (start, end) = payload_bounds(d, hl);
        &mut d[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ip_proto;

    /// 20-byte header plus 4 option bytes (NOP x4) and 8 payload bytes.
    fn packet_with_options() -> Vec<u8> {
        let mut p = vec![
            0x46, 0x10, 0x00, 0x20, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 10, 0, 0, 1,
            10, 0, 0, 2, 1, 1, 1, 1,
        ];
        p.extend_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9]);
        p
    }

    #[test]
    fn fields_checksum_and_swap() {
        let mut p = packet_with_options();
        p.extend_from_slice(&[0xee; 6]); // Ethernet padding past total length
        let mut ip = Ipv4Packet::new_checked(&mut p[..]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 24);
        assert_eq!(ip.dscp_ecn(), 0x10);
        assert_eq!(ip.total_len(), 32);
        assert_eq!(ip.ident(), 0x1234);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert!(!ip.is_later_fragment());
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), ip_proto::UDP);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ip.payload(), &[9; 8], "options skipped, padding excluded");
        assert!(!ip.verify_checksum());
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        assert_eq!(checksum::checksum(ip.header()), 0);
        ip.swap_addrs();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(ip.verify_checksum(), "a swap keeps the sum");
        ip.set_ttl(63);
        ip.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        ip.set_dst_addr(Ipv4Addr::new(5, 6, 7, 8));
        ip.set_ident(7);
        ip.set_dscp_ecn(0);
        ip.set_protocol(ip_proto::TCP);
        assert!(!ip.verify_checksum());
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        ip.payload_mut()[0] = 1;
        ip.set_total_len(24);
        assert!(ip.payload().is_empty());
        ip.set_total_len(3); // shorter than the header: empty, no panic
        assert!(ip.payload().is_empty());
        ip.set_total_len(1000); // longer than the buffer: clamped
        assert_eq!(ip.payload().len(), 8 + 6);
        assert_eq!(p[24], 1);
    }

    #[test]
    fn fragments() {
        let mut p = packet_with_options();
        p[6..8].copy_from_slice(&(0x2000u16 | 3).to_be_bytes());
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.more_frags());
        assert!(!ip.dont_frag());
        assert_eq!(ip.frag_offset(), 24);
        assert!(ip.is_later_fragment());
    }

    #[test]
    fn truncated_and_malformed() {
        let p = packet_with_options();
        for n in 0..24 {
            assert!(Ipv4Packet::new_checked(&p[..n]).is_none(), "{n}");
        }
        assert!(Ipv4Packet::new_checked(&p[..24]).is_some());
        // Truncated payload: clamped to the buffer.
        assert_eq!(
            Ipv4Packet::new_checked(&p[..27]).unwrap().payload(),
            &[9, 9, 9]
        );
        for ihl in 0..5u8 {
            let mut q = p.clone();
            q[0] = 0x40 | ihl;
            assert!(Ipv4Packet::new_checked(&q[..]).is_none(), "ihl {ihl}");
        }
        let mut q = p.clone();
        q[0] = 0x4f; // 60-byte header, 32-byte buffer
        assert!(Ipv4Packet::new_checked(&q[..]).is_none());
        q[0] = 0x65; // version 6
        assert!(Ipv4Packet::new_checked(&q[..]).is_none());
    }
}
