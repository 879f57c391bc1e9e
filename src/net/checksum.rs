//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
#![deny(unsafe_code)]

/// One's-complement sum of `data` folded to 16 bits, added to `initial`.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// The checksum of `data` (complement of the folded sum).
pub fn checksum(data: &[u8]) -> u16 {
    !(sum(data, 0) as u16)
}

/// Update checksum `old_csum` after a 16-bit field changed from `old` to `new`
/// (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')).
pub fn update16(old_csum: u16, old: u16, new: u16) -> u16 {
    let mut acc = (!old_csum) as u32 + (!old) as u32 + new as u32;
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_and_incremental_update() {
        // IPv4 header from RFC 1071 style example: checksum field zeroed.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&h);
        assert_eq!(c, 0xb861);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&h), 0, "a header with its checksum sums to zero");
        // Change the TTL/protocol word and update incrementally.
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = 0x3f;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let inc = update16(c, old, new);
        h[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(inc, checksum(&h));
        assert_eq!(checksum(&[0x01]), !0x0100);
    }
}
