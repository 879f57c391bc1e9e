//! Ethernet II frames, with up to [`MAX_VLAN_TAGS`] 802.1Q / 802.1ad tags
//! skipped to find the network layer.
#![deny(unsafe_code)]

use super::{get_u16, set_u16, swap_fields};
use crate::port::MacAddr;

/// EtherType values the engines care about.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag (C-tag).
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (S-tag, QinQ outer).
    pub const QINQ: u16 = 0x88a8;

    /// Whether `t` introduces a VLAN tag.
    #[inline(always)]
    pub fn is_vlan(t: u16) -> bool {
        t == VLAN || t == QINQ
    }
}

/// Byte ranges of the Ethernet header fields.
pub mod field {
    use core::ops::{Range, RangeFrom};

    /// Destination MAC.
    pub const DESTINATION: Range<usize> = 0..6;
    /// Source MAC.
    pub const SOURCE: Range<usize> = 6..12;
    /// EtherType (or TPID of the first VLAN tag).
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// Everything after the untagged header.
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Length of the untagged header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID is counted in the preceding field; TCI + inner type).
pub const VLAN_TAG_LEN: usize = 4;
/// VLAN tags [`EthernetFrame::layer3`] looks through (QinQ: S-tag then C-tag).
pub const MAX_VLAN_TAGS: usize = 2;

/// Where the network layer of a frame starts, past any VLAN tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer3 {
    /// The EtherType of the network layer (after the last VLAN tag).
    pub ethertype: u16,
    /// Offset of the network header from the start of the frame.
    pub offset: usize,
    /// Number of VLAN tags skipped.
    pub vlan_tags: u8,
}

/// A view of an Ethernet II frame at least [`HEADER_LEN`] bytes long.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wrap `buffer` if it holds a whole Ethernet header.
    #[inline(always)]
    pub fn new_checked(buffer: T) -> Option<Self> {
        if buffer.as_ref().len() < HEADER_LEN {
            return None;
        }
        Some(EthernetFrame { buffer })
    }

    /// Give back the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    #[inline(always)]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Destination MAC.
    #[inline(always)]
    pub fn dst_addr(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::DESTINATION]);
        MacAddr(m)
    }

    /// Source MAC.
    #[inline(always)]
    pub fn src_addr(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[field::SOURCE]);
        MacAddr(m)
    }

    /// The outer EtherType (a TPID if the frame is tagged).
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// Bytes after the untagged 14-byte header (tags included, if any).
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }

    /// The network layer's EtherType and offset, looking through up to
    /// [`MAX_VLAN_TAGS`] VLAN tags; `None` if a tag is cut short or there are
    /// more tags than that.
    #[inline(always)]
    pub fn layer3(&self) -> Option<Layer3> {
        let d = self.buffer.as_ref();
        let mut ethertype = self.ethertype();
        let mut offset = HEADER_LEN;
        let mut tags = 0u8;
        while ethertype::is_vlan(ethertype) {
            if tags as usize == MAX_VLAN_TAGS || d.len() < offset + VLAN_TAG_LEN {
                return None;
            }
            // The tag is TCI (2) then the inner EtherType (2).
            ethertype = get_u16(d, offset + 2);
            offset += VLAN_TAG_LEN;
            tags += 1;
        }
        Some(Layer3 {
            ethertype,
            offset,
            vlan_tags: tags,
        })
    }

    /// The TCI of the outermost VLAN tag, if the frame is tagged and long enough.
    #[inline(always)]
    pub fn vlan_tci(&self) -> Option<u16> {
        if !ethertype::is_vlan(self.ethertype()) {
            return None;
        }
        let d = self.buffer.as_ref();
        d.get(HEADER_LEN..HEADER_LEN + 2)
            .map(|t| u16::from_be_bytes([t[0], t[1]]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// The whole frame, writable.
    #[inline(always)]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Set the destination MAC.
    #[inline(always)]
    pub fn set_dst_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&mac.0);
    }

    /// Set the source MAC.
    #[inline(always)]
    pub fn set_src_addr(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&mac.0);
    }

    /// Set the outer EtherType.
    #[inline(always)]
    pub fn set_ethertype(&mut self, t: u16) {
        set_u16(self.buffer.as_mut(), field::ETHERTYPE.start, t);
    }

    /// Exchange source and destination MAC.
    #[inline(always)]
    pub fn swap_addrs(&mut self) {
        swap_fields::<6>(
            self.buffer.as_mut(),
            field::DESTINATION.start,
            field::SOURCE.start,
        );
    }

    /// Bytes after the untagged header, writable.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

    fn frame(tags: &[u16], inner: u16, extra: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&A);
        f.extend_from_slice(&B);
        for (i, &tpid) in tags.iter().enumerate() {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(100 + i as u16).to_be_bytes());
        }
        f.extend_from_slice(&inner.to_be_bytes());
        f.resize(f.len() + extra, 0x5a);
        f
    }

    #[test]
    fn fields_and_setters() {
        let mut f = frame(&[], ethertype::IPV4, 6);
        let mut e = EthernetFrame::new_checked(&mut f[..]).unwrap();
        assert_eq!(e.dst_addr(), MacAddr(A));
        assert_eq!(e.src_addr(), MacAddr(B));
        assert_eq!(e.ethertype(), ethertype::IPV4);
        assert_eq!(e.payload(), &[0x5a; 6]);
        assert_eq!(e.vlan_tci(), None);
        assert_eq!(
            e.layer3(),
            Some(Layer3 {
                ethertype: ethertype::IPV4,
                offset: 14,
                vlan_tags: 0
            })
        );
        e.swap_addrs();
        assert_eq!(e.dst_addr(), MacAddr(B));
        assert_eq!(e.src_addr(), MacAddr(A));
        e.set_dst_addr(MacAddr([1, 2, 3, 4, 5, 6]));
        e.set_src_addr(MacAddr([7, 8, 9, 10, 11, 12]));
        e.set_ethertype(ethertype::ARP);
        e.payload_mut()[0] = 1;
        assert_eq!(
            &f[..15],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0x08, 0x06, 1]
        );
    }

    #[test]
    fn vlan_and_qinq() {
        let f = frame(&[ethertype::VLAN], ethertype::IPV6, 40);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.vlan_tci(), Some(100));
        assert_eq!(
            e.layer3(),
            Some(Layer3 {
                ethertype: ethertype::IPV6,
                offset: 18,
                vlan_tags: 1
            })
        );
        let f = frame(&[ethertype::QINQ, ethertype::VLAN], ethertype::ARP, 0);
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(
            e.layer3().map(|l| (l.ethertype, l.offset)),
            Some((ethertype::ARP, 22))
        );
        // Three tags: more than we look through.
        let f = frame(
            &[ethertype::QINQ, ethertype::VLAN, ethertype::VLAN],
            0x0800,
            0,
        );
        assert_eq!(EthernetFrame::new_checked(&f[..]).unwrap().layer3(), None);
    }

    #[test]
    fn truncated() {
        for n in 0..HEADER_LEN {
            assert!(EthernetFrame::new_checked(&[0u8; 14][..n]).is_none(), "{n}");
        }
        assert!(EthernetFrame::new_checked(&[0u8; 14][..]).is_some());
        // A tag cut short anywhere: no panic, no layer 3.
        let f = frame(&[ethertype::QINQ, ethertype::VLAN], ethertype::IPV4, 0);
        for n in HEADER_LEN..f.len() {
            let e = EthernetFrame::new_checked(&f[..n]).unwrap();
            assert_eq!(e.layer3(), None, "{n}");
            let _ = e.vlan_tci();
            assert_eq!(e.payload().len(), n - HEADER_LEN);
        }
        let e = EthernetFrame::new_checked(&f[..14]).unwrap();
        assert_eq!(e.vlan_tci(), None);
    }
}
