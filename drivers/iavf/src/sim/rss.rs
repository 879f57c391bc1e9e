//! Receive-side scaling as the 700-series hardware does it: classify the frame
//! (PCTYPE for the hash-enable mask, PTYPE for the descriptor), build the hash
//! input (IPv4/IPv6 addresses, then L4 ports for TCP/UDP/SCTP), compute the
//! Toeplitz hash with the programmed key and pick the queue from the LUT.
#![deny(unsafe_code)]

use super::spec::{pctype, ptype};

/// What the parser found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Class {
    /// Bit number in the HENA mask.
    pub pctype: u32,
    /// Hardware packet type for the descriptor.
    pub ptype: u8,
    /// Hash input: src addr, dst addr, src port, dst port (network order).
    pub input: [u8; MAX_INPUT],
    /// Bytes of `input` in use (0: nothing to hash).
    pub input_len: usize,
}

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_FRAGMENT: u8 = 44;

/// Classify `frame` (an Ethernet frame, VLAN tags allowed). `split`: the
/// parser of an X722, which gives UDP to a unicast or a multicast address and
/// TCP SYN without ACK PCTYPEs of their own (29/30/32, 39/40/42: i40e's
/// `I40E_DEFAULT_RSS_HENA_EXPANDED`, and "X722 needs 29/30 to hash UDP" in
/// `i40e_ethtool.c`'s `i40e_set_rss_hash_opt`).
pub(crate) fn classify(frame: &[u8], split: bool) -> Class {
    let l2 = Class {
        pctype: pctype::L2_PAYLOAD,
        ptype: ptype::L2_PAY2,
        input: [0; 36],
        input_len: 0,
    };
    if frame.len() < 14 {
        return l2;
    }
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([frame[off], frame[off + 1]]);
    while (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) && frame.len() >= off + 6 {
        off += 4;
        ethertype = u16::from_be_bytes([frame[off], frame[off + 1]]);
    }
    let l3 = off + 2;
    match ethertype {
        ETH_P_IPV4 => ipv4(frame, l3, split).unwrap_or(l2),
        ETH_P_IPV6 => ipv6(frame, l3, split).unwrap_or(l2),
        _ => l2,
    }
}

/// TCP SYN without ACK (flags byte at offset 13 of the TCP header).
fn syn_only(f: &[u8], l4: usize) -> bool {
    f.get(l4 + 13)
        .is_some_and(|&fl| fl & 0x02 != 0 && fl & 0x10 == 0)
}

fn ipv4(f: &[u8], l3: usize, split: bool) -> Option<Class> {
    let h = f.get(l3..l3 + 20)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h[0] & 0xF) * 4;
    if ihl < 20 {
        return None;
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    let is_frag = frag & 0x3FFF != 0; // MF or a fragment offset
    let proto = h[9];
    let mut c = Class {
        pctype: pctype::NONF_IPV4_OTHER,
        ptype: ptype::IPV4_PAY3,
        input: [0; 36],
        input_len: 8,
    };
    c.input[..8].copy_from_slice(&h[12..20]);
    if is_frag {
        c.pctype = pctype::FRAG_IPV4;
        c.ptype = ptype::IPV4_FRAG;
        return Some(c);
    }
    let l4 = l3 + ihl;
    let (pct, pty) = match proto {
        IPPROTO_TCP if split && syn_only(f, l4) => {
            (pctype::NONF_IPV4_TCP_SYN_NO_ACK, ptype::IPV4_TCP)
        }
        IPPROTO_TCP => (pctype::NONF_IPV4_TCP, ptype::IPV4_TCP),
        // 224.0.0.0/4.
        IPPROTO_UDP if split && h[16] & 0xF0 == 0xE0 => {
            (pctype::NONF_MULTICAST_IPV4_UDP, ptype::IPV4_UDP)
        }
        IPPROTO_UDP if split => (pctype::NONF_UNICAST_IPV4_UDP, ptype::IPV4_UDP),
        IPPROTO_UDP => (pctype::NONF_IPV4_UDP, ptype::IPV4_UDP),
        IPPROTO_SCTP => (pctype::NONF_IPV4_SCTP, ptype::IPV4_SCTP),
        IPPROTO_ICMP => {
            c.ptype = ptype::IPV4_ICMP;
            return Some(c);
        }
        _ => return Some(c),
    };
    if let Some(p) = f.get(l4..l4 + 4) {
        c.pctype = pct;
        c.ptype = pty;
        c.input[8..12].copy_from_slice(p);
        c.input_len = 12;
    }
    Some(c)
}

fn ipv6(f: &[u8], l3: usize, split: bool) -> Option<Class> {
    let h = f.get(l3..l3 + 40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let mut c = Class {
        pctype: pctype::NONF_IPV6_OTHER,
        ptype: ptype::IPV6_PAY3,
        input: [0; 36],
        input_len: 32,
    };
    c.input[..32].copy_from_slice(&h[8..40]);
    let next = h[6];
    let l4 = l3 + 40;
    let (pct, pty) = match next {
        IPV6_FRAGMENT => {
            c.pctype = pctype::FRAG_IPV6;
            c.ptype = ptype::IPV6_FRAG;
            return Some(c);
        }
        IPPROTO_TCP if split && syn_only(f, l4) => {
            (pctype::NONF_IPV6_TCP_SYN_NO_ACK, ptype::IPV6_TCP)
        }
        IPPROTO_TCP => (pctype::NONF_IPV6_TCP, ptype::IPV6_TCP),
        // ff00::/8.
        IPPROTO_UDP if split && h[24] == 0xFF => (pctype::NONF_MULTICAST_IPV6_UDP, ptype::IPV6_UDP),
        IPPROTO_UDP if split => (pctype::NONF_UNICAST_IPV6_UDP, ptype::IPV6_UDP),
        IPPROTO_UDP => (pctype::NONF_IPV6_UDP, ptype::IPV6_UDP),
        IPPROTO_SCTP => (pctype::NONF_IPV6_SCTP, ptype::IPV6_SCTP),
        IPPROTO_ICMPV6 => {
            c.ptype = ptype::IPV6_ICMP;
            return Some(c);
        }
        _ => return Some(c),
    };
    if let Some(p) = f.get(l4..l4 + 4) {
        c.pctype = pct;
        c.ptype = pty;
        c.input[32..36].copy_from_slice(p);
        c.input_len = 36;
    }
    Some(c)
}

/// The Toeplitz hash of `input` under `key` (Microsoft RSS): for every set bit
/// of the input, XOR in the 32 key bits starting at that bit position. The
/// reference [`ToeplitzTable`] is checked against.
#[cfg(test)]
pub(crate) fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    let key_bit = |i: usize| -> u32 {
        key.get(i / 8)
            .map_or(0, |b| u32::from((b >> (7 - (i % 8))) & 1))
    };
    // The 32-bit window of the key starting at bit 0.
    let mut window: u32 = (0..32).fold(0, |w, i| (w << 1) | key_bit(i));
    let mut hash = 0u32;
    for (byte_i, &byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            // Slide the window one bit along the key.
            window = (window << 1) | key_bit(byte_i * 8 + bit + 32);
        }
    }
    hash
}

/// Longest hash input: IPv6 source and destination addresses and L4 ports.
pub(crate) const MAX_INPUT: usize = 36;

/// The Toeplitz hash of one key as lookup tables: for each input byte position
/// and byte value, the XOR of the key windows of its set bits. The hash of an
/// input is then one lookup and XOR per byte, the same value [`toeplitz`]
/// computes bit by bit (built when the key changes, 36 KiB).
pub(crate) struct ToeplitzTable {
    by_byte: Box<[[u32; 256]; MAX_INPUT]>,
}

impl ToeplitzTable {
    pub(crate) fn new(key: &[u8]) -> ToeplitzTable {
        let key_bit = |i: usize| -> u32 {
            key.get(i / 8)
                .map_or(0, |b| u32::from((b >> (7 - (i % 8))) & 1))
        };
        let mut by_byte = Box::new([[0u32; 256]; MAX_INPUT]);
        // The 32-bit window of the key starting at bit 0, slid one bit per
        // input bit, as `toeplitz` does.
        let mut window: u32 = (0..32).fold(0, |w, i| (w << 1) | key_bit(i));
        for (pos, table) in by_byte.iter_mut().enumerate() {
            // The windows of the byte's 8 bits, most significant first.
            let mut bit_windows = [0u32; 8];
            for (bit, w) in bit_windows.iter_mut().enumerate() {
                *w = window;
                window = (window << 1) | key_bit(pos * 8 + bit + 32);
            }
            for value in 1..256usize {
                // The lowest set bit is bit 7 - tz of the MSB-first order.
                let low = value.trailing_zeros() as usize;
                table[value] = table[value & (value - 1)] ^ bit_windows[7 - low];
            }
        }
        ToeplitzTable { by_byte }
    }

    /// The hash of `input` (at most [`MAX_INPUT`] bytes).
    #[inline]
    pub(crate) fn hash(&self, input: &[u8]) -> u32 {
        input
            .iter()
            .zip(self.by_byte.iter())
            .fold(0, |h, (&b, t)| h ^ t[usize::from(b)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the Microsoft RSS verification suite.
    const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    #[test]
    fn toeplitz_matches_the_microsoft_vectors() {
        // 66.9.149.187:2794 -> 161.142.100.80:1766
        let mut input = vec![66, 9, 149, 187, 161, 142, 100, 80];
        assert_eq!(toeplitz(&MS_KEY, &input), 0x323e_8fc2);
        input.extend_from_slice(&2794u16.to_be_bytes());
        input.extend_from_slice(&1766u16.to_be_bytes());
        assert_eq!(toeplitz(&MS_KEY, &input), 0x51cc_c178);
        // 199.92.111.2:14230 -> 65.69.140.83:4739
        let mut input = vec![199, 92, 111, 2, 65, 69, 140, 83];
        assert_eq!(toeplitz(&MS_KEY, &input), 0xd718_262a);
        input.extend_from_slice(&14230u16.to_be_bytes());
        input.extend_from_slice(&4739u16.to_be_bytes());
        assert_eq!(toeplitz(&MS_KEY, &input), 0xc626_b0ea);
    }

    #[test]
    fn the_table_hashes_as_the_bitwise_reference() {
        let t = ToeplitzTable::new(&MS_KEY);
        let input = [66, 9, 149, 187, 161, 142, 100, 80, 0x0a, 0xea, 0x06, 0xe6];
        assert_eq!(t.hash(&input[..8]), 0x323e_8fc2);
        assert_eq!(t.hash(&input), 0x51cc_c178);
        // Pseudo-random keys (52 bytes, as the VF's) and inputs of every
        // length up to 36 bytes.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        for _ in 0..20 {
            let key: Vec<u8> = (0..52).map(|_| next()).collect();
            let t = ToeplitzTable::new(&key);
            for len in 0..=MAX_INPUT {
                let input: Vec<u8> = (0..len).map(|_| next()).collect();
                assert_eq!(t.hash(&input), toeplitz(&key, &input), "len {len}");
            }
        }
    }

    #[test]
    fn classifies_ipv4_tcp_and_l2() {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&2000u16.to_be_bytes());
        let c = classify(&f, false);
        assert_eq!(c.pctype, pctype::NONF_IPV4_TCP);
        assert_eq!(c.ptype, ptype::IPV4_TCP);
        assert_eq!(
            &c.input[..c.input_len],
            &[10, 0, 0, 1, 10, 0, 0, 2, 3, 232, 7, 208]
        );
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
        assert_eq!(classify(&f, false).pctype, pctype::L2_PAYLOAD);
        // X722's parser: SYN without ACK, and UDP by destination.
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[47] = 0x02;
        assert_eq!(classify(&f, true).pctype, pctype::NONF_IPV4_TCP_SYN_NO_ACK);
        assert_eq!(classify(&f, false).pctype, pctype::NONF_IPV4_TCP);
        f[23] = 17;
        assert_eq!(classify(&f, true).pctype, pctype::NONF_UNICAST_IPV4_UDP);
        f[30] = 239;
        assert_eq!(classify(&f, true).pctype, pctype::NONF_MULTICAST_IPV4_UDP);
        assert_eq!(classify(&f, false).pctype, pctype::NONF_IPV4_UDP);
    }
}
