//! Checked views of the protocol headers the forwarding engines read and write.
//!
//! Each view wraps a byte slice, checks its length once when built, and names
//! its fields by their byte ranges, as smoltcp's wire module does. Nothing here
//! allocates or panics on short or malformed input: constructors return `None`.
//!
//! There is deliberately no unchecked constructor: every view that exists has
//! passed its length check, so its getters and setters index within bounds.
#![deny(unsafe_code)]

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;

pub use arp::ArpPacket;
pub use ethernet::{EthernetFrame, Layer3};
pub use icmp::Icmpv4Packet;
pub use ipv4::Ipv4Packet;
pub use ipv6::Ipv6Packet;
pub use tcp::TcpPacket;
pub use udp::UdpPacket;

/// IP protocol numbers (IPv4 `protocol`, IPv6 `next header`).
pub mod ip_proto {
    /// ICMP for IPv4.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMP for IPv6.
    pub const ICMPV6: u8 = 58;
}

/// Big-endian u16 at `at`; the caller has checked `at + 2 <= d.len()`.
#[inline(always)]
pub(crate) fn get_u16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

/// Store a big-endian u16 at `at`; the caller has checked the length.
#[inline(always)]
pub(crate) fn set_u16(d: &mut [u8], at: usize, v: u16) {
    let b = v.to_be_bytes();
    d[at] = b[0];
    d[at + 1] = b[1];
}

/// Big-endian u32 at `at`; the caller has checked `at + 4 <= d.len()`.
#[inline(always)]
pub(crate) fn get_u32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Store a big-endian u32 at `at`; the caller has checked the length.
#[inline(always)]
pub(crate) fn set_u32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Exchange the `N`-byte fields at `a` and `b` (non-overlapping, in bounds).
#[inline(always)]
pub(crate) fn swap_fields<const N: usize>(d: &mut [u8], a: usize, b: usize) {
    let mut t = [0u8; N];
    t.copy_from_slice(&d[a..a + N]);
    d.copy_within(b..b + N, a);
    d[b..b + N].copy_from_slice(&t);
}
