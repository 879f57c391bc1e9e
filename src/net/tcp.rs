//! TCP headers (RFC 9293): ports, sequence numbers, flags; options are skipped.
#![deny(unsafe_code)]

use super::{get_u16, get_u32, set_u16, set_u32, swap_fields};

/// Byte ranges of the TCP header fields.
pub mod field {
    use core::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Sequence number.
    pub const SEQ_NUM: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub const ACK_NUM: Range<usize> = 8..12;
    /// Data offset (high 4 bits, in 32-bit words), reserved bits, flags.
    pub const FLAGS: Range<usize> = 12..14;
    /// Window size.
    pub const WIN_SIZE: Range<usize> = 14..16;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 16..18;
    /// Urgent pointer.
    pub const URGENT: Range<usize> = 18..20;
}

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// TCP flag bits, as returned by [`TcpPacket::flags`].
pub mod flags {
    /// No more data from sender.
    pub const FIN: u16 = 0x001;
    /// Synchronize sequence numbers.
    pub const SYN: u16 = 0x002;
    /// Reset the connection.
    pub const RST: u16 = 0x004;
    /// Push.
    pub const PSH: u16 = 0x008;
    /// Acknowledgment field is significant.
    pub const ACK: u16 = 0x010;
    /// Urgent pointer is significant.
    pub const URG: u16 = 0x020;
    /// ECN echo.
    pub const ECE: u16 = 0x040;
    /// Congestion window reduced.
    pub const CWR: u16 = 0x080;
}

/// A view of a TCP segment whose data offset is at least 5 and whose whole
/// header, options included, is in the buffer.
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wrap `buffer` if it holds a whole, well-formed TCP header: `None` if it is
    /// shorter than 20 bytes, the data offset is below 5, or the header runs past
    /// the buffer.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Option<Self> {
        let d = buffer.as_ref();
        if d.len() < MIN_HEADER_LEN {
            return None;
        }
        let hl = (d[field::FLAGS.start] >> 4) as usize * 4;
        if hl < MIN_HEADER_LEN || d.len() < hl {
            return None;
        }
        Some(TcpPacket { buffer })
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

    /// Sequence number.
    #[inline(always)]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ_NUM.start)
    }

    /// Acknowledgment number.
    #[inline(always)]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK_NUM.start)
    }

    /// Header length in bytes (data offset × 4, options included).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        (self.buffer.as_ref()[field::FLAGS.start] >> 4) as usize * 4
    }

    /// The flag bits ([`flags`]).
    #[inline(always)]
    pub fn flags(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS.start) & 0x01ff
    }

    /// Window size.
    #[inline(always)]
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }

    /// Checksum field.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Urgent pointer.
    #[inline(always)]
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// Everything after the header (to the end of the buffer: TCP has no length
    /// field; bound it with the IP payload first).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let hl = self.header_len();
        &self.buffer.as_ref()[hl..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Set the sequence number.
    #[inline(always)]
    pub fn set_seq_number(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ_NUM.start, v);
    }

    /// Set the acknowledgment number.
    #[inline(always)]
    pub fn set_ack_number(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::ACK_NUM.start, v);
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

    /// The payload (see [`TcpPacket::payload`]), writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment() -> Vec<u8> {
        let mut s = vec![
            0x00, 0x50, 0xc3, 0x50, 0, 0, 0, 1, 0, 0, 0, 2, 0x60, 0x12, 0xff, 0xff, 0xbe, 0xef, 0,
            0,
        ];
        s.extend_from_slice(&[2, 4, 5, 0xb4]); // MSS option
        s.extend_from_slice(b"hi");
        s
    }

    #[test]
    fn fields_and_swap() {
        let mut s = segment();
        let mut t = TcpPacket::new_checked(&mut s[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (80, 50000));
        assert_eq!((t.seq_number(), t.ack_number()), (1, 2));
        assert_eq!(t.header_len(), 24);
        assert_eq!(t.flags(), flags::SYN | flags::ACK);
        assert_eq!(t.window_len(), 0xffff);
        assert_eq!(t.checksum(), 0xbeef);
        assert_eq!(t.urgent_at(), 0);
        assert_eq!(t.payload(), b"hi");
        t.swap_ports();
        assert_eq!((t.src_port(), t.dst_port()), (50000, 80));
        t.set_src_port(1);
        t.set_dst_port(2);
        t.set_seq_number(3);
        t.set_ack_number(4);
        t.set_checksum(5);
        t.payload_mut()[0] = b'H';
        assert_eq!(&s[..12], &[0, 1, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
        assert_eq!(&s[16..18], &[0, 5]);
        assert_eq!(&s[24..], b"Hi");
    }

    #[test]
    fn truncated_and_malformed() {
        let s = segment();
        for n in 0..24 {
            assert!(TcpPacket::new_checked(&s[..n]).is_none(), "{n}");
        }
        assert!(
            TcpPacket::new_checked(&s[..24])
                .unwrap()
                .payload()
                .is_empty()
        );
        for off in 0..5u8 {
            let mut q = s.clone();
            q[12] = off << 4;
            assert!(
                TcpPacket::new_checked(&q[..]).is_none(),
                "data offset {off}"
            );
        }
        let mut q = s.clone();
        q[12] = 0xf0;
        assert!(TcpPacket::new_checked(&q[..]).is_none());
    }
}
