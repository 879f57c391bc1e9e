//! ICMPv4 messages (RFC 792), with the echo request / reply fields.
#![deny(unsafe_code)]

use super::{checksum, get_u16, set_u16};

/// Byte ranges of the ICMPv4 header fields.
pub mod field {
    use core::ops::{Range, RangeFrom};

    /// Message type ([`super::msg_type`]).
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum over the whole message.
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Echo identifier.
    pub const ECHO_IDENT: Range<usize> = 4..6;
    /// Echo sequence number.
    pub const ECHO_SEQNO: Range<usize> = 6..8;
    /// Echo data.
    pub const ECHO_DATA: RangeFrom<usize> = 8..;
}

/// ICMPv4 message types.
pub mod msg_type {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DST_UNREACHABLE: u8 = 3;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
}

/// Length of the header (type, code, checksum and the 4 type-specific bytes).
pub const HEADER_LEN: usize = 8;

/// A view of an ICMPv4 message whose 8-byte header is whole. The buffer should
/// be exactly the message (the IPv4 payload) for the checksum to mean anything.
#[derive(Debug, Clone)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wrap `buffer` if it holds a whole ICMP header.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Option<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return None;
        }
        Some(Icmpv4Packet { buffer })
    }

    /// Give back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline(always)]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Code.
    #[inline(always)]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    #[inline(always)]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Echo identifier (meaningful for echo request and reply).
    #[inline(always)]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// Echo sequence number (meaningful for echo request and reply).
    #[inline(always)]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQNO.start)
    }

    /// Whether this is an echo request (type 8, code 0).
    #[inline(always)]
    pub fn is_echo_request(&self) -> bool {
        self.msg_type() == msg_type::ECHO_REQUEST && self.msg_code() == 0
    }

    /// Bytes after the 8-byte header (echo data).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::ECHO_DATA]
    }

    /// Whether the checksum over the whole buffer is right.
    #[inline(always)]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Set the message type (the checksum is not updated).
    #[inline(always)]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Set the code (the checksum is not updated).
    #[inline(always)]
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Set the checksum field.
    #[inline(always)]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, v);
    }

    /// Set the echo identifier.
    #[inline(always)]
    pub fn set_echo_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, v);
    }

    /// Set the echo sequence number.
    #[inline(always)]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_SEQNO.start, v);
    }

    /// Turn an echo request into its reply in place: type 0, code kept, the
    /// checksum updated incrementally (RFC 1624) rather than recomputed over
    /// the data.
    #[inline(always)]
    pub fn make_echo_reply(&mut self) {
        let d = self.buffer.as_mut();
        let old = get_u16(d, 0);
        d[field::TYPE] = msg_type::ECHO_REPLY;
        let new = get_u16(d, 0);
        let c = checksum::update16(get_u16(d, field::CHECKSUM.start), old, new);
        set_u16(d, field::CHECKSUM.start, c);
    }

    /// Compute and store the checksum over the whole buffer.
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Bytes after the header, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::ECHO_DATA]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_fields_and_reply() {
        let mut p = vec![8, 0, 0, 0, 0x12, 0x34, 0x00, 0x07, b'a', b'b', b'c'];
        let mut m = Icmpv4Packet::new_checked(&mut p[..]).unwrap();
        m.fill_checksum();
        assert!(m.verify_checksum());
        assert!(m.is_echo_request());
        assert_eq!((m.echo_ident(), m.echo_seq_no()), (0x1234, 7));
        assert_eq!(m.data(), b"abc");
        m.make_echo_reply();
        assert_eq!(m.msg_type(), msg_type::ECHO_REPLY);
        assert_eq!(m.msg_code(), 0);
        assert!(!m.is_echo_request());
        assert!(m.verify_checksum(), "incremental update");
        let inc = m.checksum();
        m.fill_checksum();
        assert_eq!(m.checksum(), inc, "same as a full recompute");
        m.set_msg_type(msg_type::ECHO_REQUEST);
        m.set_msg_code(1);
        assert!(!m.is_echo_request());
        m.set_echo_ident(1);
        m.set_echo_seq_no(2);
        m.data_mut()[0] = b'A';
        m.set_checksum(0xffff);
        assert_eq!(&p[..9], &[8, 1, 0xff, 0xff, 0, 1, 0, 2, b'A']);
    }

    #[test]
    fn truncated() {
        let p = [8u8, 0, 0xf7, 0xff, 0, 0, 0, 0];
        for n in 0..HEADER_LEN {
            assert!(Icmpv4Packet::new_checked(&p[..n]).is_none(), "{n}");
        }
        let m = Icmpv4Packet::new_checked(&p[..]).unwrap();
        assert!(m.data().is_empty());
        assert!(m.verify_checksum());
    }
}
