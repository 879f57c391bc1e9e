//! UDP headers (RFC 768).
#![deny(unsafe_code)]

use super::{get_u16, set_u16, swap_fields};

/// Byte ranges of the UDP header fields.
pub mod field {
    use core::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length of header plus payload.
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum (0: none, IPv4 only).
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = 8;

/// A view of a UDP datagram whose 8-byte header is whole.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wrap `buffer` if it holds a whole UDP header.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Option<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return None;
        }
        Some(UdpPacket { buffer })
    }

    /// Give back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length field (header plus payload).
    #[inline(always)]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Whether the length field says there is no payload.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len() as usize <= HEADER_LEN
    }

    /// Checksum field.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The payload: after the header, up to the length field or the end of the
    /// buffer, whichever comes first.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        &d[HEADER_LEN..payload_end(d)]
    }
}

#[inline(always)]
fn payload_end(d: &[u8]) -> usize {
    (get_u16(d, field::LENGTH.start) as usize).clamp(HEADER_LEN, d.len())
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Set the source port.
    #[inline(always)]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT.start, v);
    }

    /// Set the destination port.
    #[inline(always)]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT.start, v);
    }

    /// Set the length field.
    #[inline(always)]
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, v);
    }

    /// Set the checksum field.
    #[inline(always)]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, v);
    }

    /// Exchange source and destination ports (the checksum stays valid).
    #[inline(always)]
    pub fn swap_ports(&mut self) {
        swap_fields::<2>(
            self.buffer.as_mut(),
            field::SRC_PORT.start,
            field::DST_PORT.start,
        );
    }

    /// The payload (see [`UdpPacket::payload`]), writable.
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

    #[test]
    fn fields_and_swap() {
        let mut p = vec![
            0x03, 0xe8, 0x03, 0xe9, 0x00, 0x0a, 0x12, 0x34, 0xaa, 0xbb, 0xcc,
        ];
        let mut u = UdpPacket::new_checked(&mut p[..]).unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.len(), u.checksum()),
            (1000, 1001, 10, 0x1234)
        );
        assert!(!u.is_empty());
        assert_eq!(
            u.payload(),
            &[0xaa, 0xbb],
            "padding after the length excluded"
        );
        u.swap_ports();
        assert_eq!((u.src_port(), u.dst_port()), (1001, 1000));
        u.set_src_port(1);
        u.set_dst_port(2);
        u.set_checksum(0);
        u.set_len(4); // shorter than the header
        assert!(u.payload().is_empty());
        assert!(u.is_empty());
        u.set_len(300);
        assert_eq!(u.payload().len(), 3);
        u.payload_mut()[2] = 0;
        assert_eq!(p, [0, 1, 0, 2, 0x01, 0x2c, 0, 0, 0xaa, 0xbb, 0]);
    }

    #[test]
    fn truncated() {
        let p = [0u8; 8];
        for n in 0..HEADER_LEN {
            assert!(UdpPacket::new_checked(&p[..n]).is_none(), "{n}");
        }
        assert!(UdpPacket::new_checked(&p[..]).unwrap().payload().is_empty());
    }
}
