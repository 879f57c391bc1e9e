//! Packet buffers: the [`Mbuf`] handle and the inline [`MbufBatch`] that bursts move.
//!
//! Every buffer is one element of a [`Mempool`](crate::Mempool): a fixed
//! power-of-two stride (2 KiB to 64 KiB), aligned to that stride. The 64-byte
//! [`MbufHeader`] sits in front of the headroom, and a fresh mbuf's data always
//! starts [`ELEMENT_DATA_OFFSET`] bytes into the element, so a device (or an
//! AF_XDP UMEM with a fixed headroom) can be given element addresses:
//!
//! ```text
//! | color pad | MbufHeader (64 B) | headroom (>= 128 B) | packet data ... | tailroom |
//! ^ element    ^ element + color*64 ^ buffer start        ^ element + 384
//! ```
//!
//! The header's position varies with the element's *color* (0 to 3, element
//! index modulo [`COLORS`]). With a power-of-two stride every header would
//! otherwise fall in the same two sets of a 64-set L1 cache, and a burst of 32
//! headers would miss on every access; four colors spread them over eight sets.
//!
//! An `Mbuf` owns its buffer, is not `Clone`, and returns the buffer to its pool
//! when dropped. No reference counting, no heap allocation. A driver that hands a
//! buffer to a device converts it to a raw pointer first ([`Mbuf::into_raw`]) and
//! back only once the device is done with it, so no Rust reference ever covers
//! memory a device is writing.
//!
//! # Multi-segment packets
//!
//! A frame larger than one buffer is a *chain* (DPDK's `nb_segs`/`next`): the
//! `Mbuf` is its first segment, whose header also holds the segment count and
//! the packet length; each segment links to the next. A chain is one packet
//! everywhere (one slot of an [`MbufBatch`], one packet in every counter), and
//! dropping it frees every segment. What works on "the data" ([`Mbuf::data`],
//! [`Mbuf::len`], [`Mbuf::set_len`], [`Mbuf::prepend`], [`Mbuf::adj`]) works
//! on the first segment, where every receive path puts the headers; the
//! packet's end ([`Mbuf::append`], [`Mbuf::trim`]) is the last segment's. The
//! whole packet: [`Mbuf::pkt_len`], [`Mbuf::nb_segs`], [`Mbuf::segments`],
//! [`Mbuf::copy_out`], [`Mbuf::linearize`]. Drivers build chains on receive
//! with [`RxChain`] and take them apart on transmit with [`Mbuf::split_first`].
//!
//! The chain fields cost a single-segment packet nothing: a free element's
//! `next` is always null (whatever frees a chain clears it in every segment),
//! so allocation and receive paths never write them, and `pkt_len`/`nb_segs`
//! are read only when `next` is set.

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::mempool::PoolInner;

/// Largest burst any queue moves at once (testpmd's MAX_PKT_BURST).
pub const MAX_BURST: usize = 512;
/// Size of the header at the start of every element.
pub const HEADER_SIZE: usize = 64;
/// Smallest headroom in front of a fresh mbuf's data (RTE_PKTMBUF_HEADROOM);
/// elements of lower colors have more.
pub const DEFAULT_HEADROOM: u16 = 128;
/// Header positions per element (cache coloring, see the module docs).
pub const COLORS: usize = 4;
/// Where a fresh mbuf's data starts, from the element start, whatever its color.
pub const ELEMENT_DATA_OFFSET: usize =
    (COLORS - 1) * HEADER_SIZE + HEADER_SIZE + DEFAULT_HEADROOM as usize;
/// Most segments in one packet (DPDK's testpmd takes at most 255 `--txpkts`
/// segments, RTE_MAX_SEGS_PER_PKT).
pub const MAX_SEGS: usize = u8::MAX as usize;

/// Offload and status flags carried in [`MbufHeader::ol_flags`].
pub mod flags {
    /// The VLAN TCI field holds the tag of the received frame (DPDK's
    /// `RTE_MBUF_F_RX_VLAN`).
    pub const RX_VLAN: u64 = 1 << 0;
    /// The device took that tag out of the frame's data (DPDK's
    /// `RTE_MBUF_F_RX_VLAN_STRIPPED`): the data starts without it.
    pub const RX_VLAN_STRIPPED: u64 = 1 << 6;
    /// The RSS hash field is valid.
    pub const RX_RSS_HASH: u64 = 1 << 1;
    /// The device reported a bad IPv4 header checksum.
    pub const RX_IP_CKSUM_BAD: u64 = 1 << 4;
    /// The device reported a bad L4 checksum.
    pub const RX_L4_CKSUM_BAD: u64 = 1 << 3;
    /// The timestamp field is valid.
    pub const RX_TIMESTAMP: u64 = 1 << 17;
}

/// Byte offsets of the header fields a driver's vector path reads or writes
/// directly, as DPDK's vector PMDs rely on `rte_mbuf`'s layout: a receive
/// loop that stores four frames' lengths and hashes straight from its vector
/// registers, a transmit loop that loads a header's IOVA, data offset and
/// length in one 16-byte load. The header is `#[repr(C)]`; these are its
/// offsets (`offset_of!`), so a layout change moves them and a driver's
/// compile-time checks on them fail.
pub mod header_offsets {
    use super::MbufHeader;
    use std::mem::offset_of;

    /// `buf_iova: u64`, the buffer's IOVA.
    pub const BUF_IOVA: usize = offset_of!(MbufHeader, buf_iova);
    /// `data_off: u16`, the data's offset in the buffer.
    pub const DATA_OFF: usize = offset_of!(MbufHeader, data_off);
    /// `data_len: u16`, the packet's length.
    pub const DATA_LEN: usize = offset_of!(MbufHeader, data_len);
    /// `rss_hash: u32`.
    pub const RSS_HASH: usize = offset_of!(MbufHeader, rss_hash);
    /// `next: *mut MbufHeader`, the next segment: null unless the mbuf is
    /// the first (or a middle) segment of a chain. A vector transmit loop
    /// that reads headers through raw pointers tests it to leave chains to
    /// the path that sends them.
    pub const NEXT: usize = offset_of!(MbufHeader, next);
    /// `ol_flags: u64` ([`flags`](super::flags)).
    pub const OL_FLAGS: usize = offset_of!(MbufHeader, ol_flags);
}

/// The metadata in front of every buffer, like rte_mbuf's first cache line.
///
/// It lives in DMA memory but no device ever writes it: only the CPU that owns
/// the [`Mbuf`] touches it. The chain fields share the line (DPDK keeps `next`
/// in a second one): the free path reads `next` from the line it reads the
/// pool and length from anyway.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct MbufHeader {
    pub(crate) pool: *const PoolInner,
    /// IOVA of the buffer start (the byte after this header).
    pub(crate) buf_iova: u64,
    pub(crate) data_off: u16,
    /// This segment's length.
    pub(crate) data_len: u16,
    pub(crate) port: u16,
    pub(crate) queue: u16,
    /// At most 65472 (a 64 KiB element), so every offset in a segment is 16-bit.
    pub(crate) buf_len: u16,
    /// Offset of this header from the element start (color * 64).
    pub(crate) elem_off: u8,
    /// Segments of the packet; valid in a chain's first segment (`next` set).
    pub(crate) nb_segs: u8,
    pub(crate) rss_hash: u32,
    pub(crate) ol_flags: u64,
    pub(crate) timestamp: u64,
    pub(crate) vlan_tci: u16,
    /// data_off of a fresh mbuf (its headroom), fixed per element.
    pub(crate) default_data_off: u16,
    /// Bytes of the whole packet; valid in a chain's first segment (`next` set).
    pub(crate) pkt_len: u32,
    /// The next segment, null for the last (or only) one and in every free
    /// element.
    pub(crate) next: *mut MbufHeader,
}

const _: () = assert!(std::mem::size_of::<MbufHeader>() == HEADER_SIZE);

/// An owned packet buffer. Dropping it returns the buffer to its pool.
#[repr(transparent)]
pub struct Mbuf {
    hdr: NonNull<MbufHeader>,
}

// SAFETY: an Mbuf is the unique owner of its element; the pool it points to is
// shared state built for concurrent use (atomic ring, per-lcore caches).
unsafe impl Send for Mbuf {}

impl Mbuf {
    #[inline(always)]
    fn hdr(&self) -> &MbufHeader {
        // SAFETY: the header is valid for as long as the Mbuf exists (the pool never
        // frees memory with elements outstanding) and only the owner touches it.
        unsafe { self.hdr.as_ref() }
    }

    #[inline(always)]
    fn hdr_mut(&mut self) -> &mut MbufHeader {
        // SAFETY: as in `hdr`; `&mut self` makes this the only access.
        unsafe { self.hdr.as_mut() }
    }

    #[inline(always)]
    fn buf_ptr(&self) -> *mut u8 {
        // SAFETY: the buffer starts right after the header, inside the same element.
        unsafe { (self.hdr.as_ptr() as *mut u8).add(HEADER_SIZE) }
    }

    /// Take ownership of a raw element pointer (the inverse of [`Mbuf::into_raw`]).
    ///
    /// # Safety
    /// `hdr` must come from `into_raw` (or from a pool) and must not be owned by
    /// anything else, and no device may still be writing the buffer.
    #[inline(always)]
    pub unsafe fn from_raw(hdr: NonNull<MbufHeader>) -> Mbuf {
        Mbuf { hdr }
    }

    /// Give up ownership without returning the buffer to its pool.
    #[inline(always)]
    pub fn into_raw(self) -> NonNull<MbufHeader> {
        let p = self.hdr;
        std::mem::forget(self);
        p
    }

    /// The bytes of the first segment (the whole packet unless
    /// [`is_chained`](Self::is_chained)): where the headers are.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let h = self.hdr();
        // SAFETY: data_off + data_len <= buf_len is an invariant every setter keeps.
        unsafe {
            std::slice::from_raw_parts(self.buf_ptr().add(h.data_off as usize), h.data_len as usize)
        }
    }

    /// The first segment's bytes, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.hdr().data_off as usize, self.hdr().data_len as usize);
        // SAFETY: as in `data`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.buf_ptr().add(off), len) }
    }

    /// Length of the first segment (DPDK's `data_len`): the packet's length
    /// unless it is a chain, see [`pkt_len`](Self::pkt_len).
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.hdr().data_len as usize
    }

    /// Whether the first segment has no bytes.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.hdr().data_len == 0
    }

    /// Length of the whole packet, every segment (DPDK's `pkt_len`).
    #[inline(always)]
    pub fn pkt_len(&self) -> usize {
        let h = self.hdr();
        if h.next.is_null() {
            h.data_len as usize
        } else {
            h.pkt_len as usize
        }
    }

    /// Number of segments (1 unless the packet is a chain).
    #[inline(always)]
    pub fn nb_segs(&self) -> usize {
        let h = self.hdr();
        if h.next.is_null() {
            1
        } else {
            h.nb_segs as usize
        }
    }

    /// Whether the packet has more than one segment.
    #[inline(always)]
    pub fn is_chained(&self) -> bool {
        !self.hdr().next.is_null()
    }

    /// Bytes free in front of the data.
    #[inline(always)]
    pub fn headroom(&self) -> usize {
        self.hdr().data_off as usize
    }

    /// Bytes free after the first segment's data.
    #[inline(always)]
    pub fn tailroom(&self) -> usize {
        let h = self.hdr();
        h.buf_len as usize - h.data_off as usize - h.data_len as usize
    }

    /// Largest first segment this buffer can hold with its current headroom.
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        self.hdr().buf_len as usize - self.hdr().data_off as usize
    }

    /// Record a change of the first segment's length in a chain's packet length.
    #[inline(always)]
    fn first_len_changed(&mut self, old: u16, new: u16) {
        let h = self.hdr_mut();
        if !h.next.is_null() {
            h.pkt_len = h.pkt_len - old as u32 + new as u32;
        }
    }

    /// Set the first segment's length (the packet's, for one segment); false
    /// (and nothing changed) if it does not fit.
    #[inline(always)]
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() {
            return false;
        }
        let old = self.hdr().data_len;
        self.hdr_mut().data_len = len as u16;
        self.first_len_changed(old, len as u16);
        true
    }

    /// Set the length without the capacity check of
    /// [`set_len`](Self::set_len): a receive fast path whose lengths were
    /// already checked against the buffer's room, on buffers that are not
    /// chained (a chain's packet length is not updated).
    ///
    /// # Safety
    /// `len <= self.capacity()` (the invariant `data()` relies on).
    #[inline(always)]
    pub unsafe fn set_len_unchecked(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.hdr_mut().data_len = len as u16;
    }

    /// The last segment's header (this one for a single segment).
    #[inline]
    fn last_seg(&self) -> *mut MbufHeader {
        let mut p = self.hdr.as_ptr();
        // SAFETY: every `next` of an owned chain is a segment it owns.
        unsafe {
            while !(*p).next.is_null() {
                p = (*p).next;
            }
        }
        p
    }

    /// Grow the packet at its end (the last segment) by `n` bytes and return
    /// them; `None` if that segment has not that much tailroom.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        let last = self.last_seg();
        // SAFETY: `last` is a segment this mbuf owns; `&mut self` makes this
        // the only access, and no reference to its header is alive.
        unsafe {
            let (off, len, buf) = (
                (*last).data_off as usize,
                (*last).data_len as usize,
                (*last).buf_len as usize,
            );
            if n > buf - off - len {
                return None;
            }
            (*last).data_len = (len + n) as u16;
            if last != self.hdr.as_ptr() {
                let h = self.hdr.as_ptr();
                (*h).pkt_len += n as u32;
            }
            let start = (last as *mut u8).add(HEADER_SIZE + off + len);
            Some(std::slice::from_raw_parts_mut(start, n))
        }
    }

    /// Grow the packet at its front by `n` bytes (into the headroom) and return them.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.headroom() {
            return None;
        }
        let old = self.hdr().data_len;
        let h = self.hdr_mut();
        h.data_off -= n as u16;
        h.data_len += n as u16;
        self.first_len_changed(old, old + n as u16);
        Some(&mut self.data_mut()[..n])
    }

    /// Remove `n` bytes from the front (of the first segment); false if it is
    /// shorter.
    pub fn adj(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        let old = self.hdr().data_len;
        let h = self.hdr_mut();
        h.data_off += n as u16;
        h.data_len -= n as u16;
        self.first_len_changed(old, old - n as u16);
        true
    }

    /// Remove `n` bytes from the end (of the last segment); false if it is
    /// shorter.
    pub fn trim(&mut self, n: usize) -> bool {
        let last = self.last_seg();
        // SAFETY: as in `append`.
        unsafe {
            if n > (*last).data_len as usize {
                return false;
            }
            (*last).data_len -= n as u16;
            if last != self.hdr.as_ptr() {
                let h = self.hdr.as_ptr();
                (*h).pkt_len -= n as u32;
            }
        }
        true
    }

    /// Set the first segment's data offset (headroom) and length at once, as a
    /// driver does after a device wrote a frame; false if they do not fit the
    /// buffer.
    #[inline(always)]
    pub fn set_data(&mut self, data_off: usize, len: usize) -> bool {
        let buf_len = self.hdr().buf_len as usize;
        // Not `data_off + len > buf_len`: that sum can wrap.
        if len > buf_len || data_off > buf_len - len {
            return false;
        }
        let old = self.hdr().data_len;
        let h = self.hdr_mut();
        h.data_off = data_off as u16;
        h.data_len = len as u16;
        self.first_len_changed(old, len as u16);
        true
    }

    /// Put the buffer back in its freshly allocated state (default headroom,
    /// empty, no flags); the other segments of a chain are freed.
    #[inline(always)]
    pub fn reset(&mut self) {
        drop(self.take_rest());
        let h = self.hdr_mut();
        h.data_off = h.default_data_off;
        h.data_len = 0;
        h.ol_flags = 0;
        h.vlan_tci = 0;
    }

    /// Append `tail` (one segment or a chain) after the packet's last segment,
    /// as `rte_pktmbuf_chain`; `tail` is given back if the packet would have
    /// more than [`MAX_SEGS`] segments or more than `u32::MAX` bytes. Only the
    /// first segment's metadata (port, flags, hash) describes the packet.
    pub fn chain(&mut self, tail: Mbuf) -> std::result::Result<(), Mbuf> {
        let segs = self.nb_segs() + tail.nb_segs();
        let len = self.pkt_len() as u64 + tail.pkt_len() as u64;
        if segs > MAX_SEGS || len > u32::MAX as u64 {
            return Err(tail);
        }
        let last = self.last_seg();
        let t = tail.into_raw();
        // SAFETY: `last` is a segment this mbuf owns, and so, from here, is
        // `t` (its ownership moved into the chain); no reference to either
        // header is alive.
        unsafe {
            (*last).next = t.as_ptr();
        }
        let h = self.hdr_mut();
        h.nb_segs = segs as u8;
        h.pkt_len = len as u32;
        Ok(())
    }

    /// Detach the first segment: it comes back as a packet of its own and the
    /// other segments, if any, as another (its `nb_segs` and `pkt_len` set).
    /// A transmit path that gives a device one descriptor per segment takes a
    /// chain apart this way, each segment freed on its own when sent.
    #[inline]
    pub fn split_first(mut self) -> (Mbuf, Option<Mbuf>) {
        let rest = self.take_rest();
        (self, rest)
    }

    /// Unlink the segments after the first and return them as a packet.
    #[inline]
    fn take_rest(&mut self) -> Option<Mbuf> {
        let (next, segs, len, first) = {
            let h = self.hdr();
            (h.next, h.nb_segs, h.pkt_len, h.data_len)
        };
        let next = NonNull::new(next)?;
        self.hdr_mut().next = std::ptr::null_mut();
        // SAFETY: `next` was owned by this chain and is unlinked from it now;
        // `rest` is its only owner.
        let mut rest = unsafe { Mbuf::from_raw(next) };
        if rest.is_chained() {
            let h = rest.hdr_mut();
            h.nb_segs = segs - 1;
            h.pkt_len = len - first as u32;
        }
        Some(rest)
    }

    /// The segments' bytes, first to last.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            next: self.hdr.as_ptr(),
            _owner: PhantomData,
        }
    }

    /// The segments' bytes, writable, first to last.
    pub fn segments_mut(&mut self) -> SegmentsMut<'_> {
        SegmentsMut {
            next: self.hdr.as_ptr(),
            _owner: PhantomData,
        }
    }

    /// The IOVA and length of each segment's data, first to last: what a
    /// transmit path that gives a device one descriptor per segment writes.
    pub fn segment_iovas(&self) -> SegmentIovas<'_> {
        SegmentIovas {
            next: self.hdr.as_ptr(),
            _owner: PhantomData,
        }
    }

    /// Copy packet bytes from `offset` on (across segments) into `dst`, as
    /// much as both have; returns how many.
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> usize {
        let mut skip = offset;
        let mut done = 0;
        for seg in self.segments() {
            if done == dst.len() {
                break;
            }
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            let n = (seg.len() - skip).min(dst.len() - done);
            dst[done..done + n].copy_from_slice(&seg[skip..skip + n]);
            done += n;
            skip = 0;
        }
        done
    }

    /// Copy `src` into the packet from `offset` on (across segments), within
    /// its current length; returns how many bytes were written.
    pub fn copy_in(&mut self, offset: usize, src: &[u8]) -> usize {
        let mut skip = offset;
        let mut done = 0;
        for seg in self.segments_mut() {
            if done == src.len() {
                break;
            }
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            let n = (seg.len() - skip).min(src.len() - done);
            seg[skip..skip + n].copy_from_slice(&src[done..done + n]);
            done += n;
            skip = 0;
        }
        done
    }

    /// Make the packet one segment (`rte_pktmbuf_linearize`) by copying the
    /// others into the first one's tailroom and freeing them; false (and
    /// nothing changed) if the packet does not fit the first buffer.
    pub fn linearize(&mut self) -> bool {
        if !self.is_chained() {
            return true;
        }
        let total = self.pkt_len();
        if total > self.capacity() {
            return false;
        }
        let old = self.len();
        let rest = self.take_rest();
        self.hdr_mut().data_len = total as u16;
        if let Some(rest) = rest {
            rest.copy_out(0, &mut self.data_mut()[old..]);
        }
        true
    }

    /// IOVA of the buffer start (what a descriptor's buffer address is based on).
    #[inline(always)]
    pub fn buf_iova(&self) -> u64 {
        self.hdr().buf_iova
    }

    /// IOVA of the first packet byte.
    #[inline(always)]
    pub fn data_iova(&self) -> u64 {
        self.hdr().buf_iova + self.hdr().data_off as u64
    }

    /// Virtual address of the buffer start.
    #[inline(always)]
    pub fn buf_addr(&self) -> *mut u8 {
        self.buf_ptr()
    }

    /// Start of the pool element holding this buffer (what an AF_XDP UMEM or a
    /// descriptor ring addresses); the data of a fresh mbuf is at
    /// `element_addr() + ELEMENT_DATA_OFFSET`.
    #[inline(always)]
    pub fn element_addr(&self) -> *mut u8 {
        // SAFETY: the header sits `elem_off` bytes into its element.
        unsafe { (self.hdr.as_ptr() as *mut u8).sub(self.hdr().elem_off as usize) }
    }

    /// Headroom of a fresh mbuf of this element (`ELEMENT_DATA_OFFSET` minus the
    /// header's position and size): where data lands when written at the
    /// element's fixed data offset.
    #[inline(always)]
    pub fn default_headroom(&self) -> usize {
        self.hdr().default_data_off as usize
    }

    /// Size of the buffer after the header (headroom + data room).
    #[inline(always)]
    pub fn buf_len(&self) -> usize {
        self.hdr().buf_len as usize
    }

    /// Port the packet was received on.
    #[inline(always)]
    pub fn port(&self) -> u16 {
        self.hdr().port
    }

    /// Record the receiving port.
    #[inline(always)]
    pub fn set_port(&mut self, port: u16) {
        self.hdr_mut().port = port;
    }

    /// Queue the packet was received on.
    #[inline(always)]
    pub fn queue(&self) -> u16 {
        self.hdr().queue
    }

    /// Record the receiving queue.
    #[inline(always)]
    pub fn set_queue(&mut self, queue: u16) {
        self.hdr_mut().queue = queue;
    }

    /// RSS hash reported by the device (valid if `ol_flags` has RX_RSS_HASH).
    #[inline(always)]
    pub fn rss_hash(&self) -> u32 {
        self.hdr().rss_hash
    }

    /// Record an RSS hash and mark it valid.
    #[inline(always)]
    pub fn set_rss_hash(&mut self, hash: u32) {
        let h = self.hdr_mut();
        h.rss_hash = hash;
        h.ol_flags |= flags::RX_RSS_HASH;
    }

    /// Offload and status flags ([`flags`]).
    #[inline(always)]
    pub fn ol_flags(&self) -> u64 {
        self.hdr().ol_flags
    }

    /// Replace the flags.
    #[inline(always)]
    pub fn set_ol_flags(&mut self, f: u64) {
        self.hdr_mut().ol_flags = f;
    }

    /// Receive timestamp in nanoseconds (valid if `ol_flags` has RX_TIMESTAMP).
    #[inline(always)]
    pub fn timestamp(&self) -> u64 {
        self.hdr().timestamp
    }

    /// Record a receive timestamp and mark it valid.
    #[inline(always)]
    pub fn set_timestamp(&mut self, ns: u64) {
        let h = self.hdr_mut();
        h.timestamp = ns;
        h.ol_flags |= flags::RX_TIMESTAMP;
    }

    /// VLAN tag control information (stripped or to insert).
    #[inline(always)]
    pub fn vlan_tci(&self) -> u16 {
        self.hdr().vlan_tci
    }

    /// Set the VLAN TCI.
    #[inline(always)]
    pub fn set_vlan_tci(&mut self, tci: u16) {
        self.hdr_mut().vlan_tci = tci;
    }

    /// A handle on the pool the buffer belongs to (`None` once the pool's
    /// last handle was dropped). For drivers that register a pool's memory
    /// with a device the first time they see one of its buffers.
    pub fn mempool(&self) -> Option<crate::mempool::Mempool> {
        // SAFETY: see `pool_name`.
        unsafe { (*self.hdr().pool).handle() }
    }

    /// Name of the pool the buffer belongs to.
    pub fn pool_name(&self) -> &str {
        // SAFETY: the pool outlives every element it handed out (it leaks itself
        // rather than free memory with elements outstanding).
        unsafe { (*self.hdr().pool).name() }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        let h = self.hdr.as_ptr();
        // SAFETY: see `pool_name`; the element (and any segment it links to)
        // is ours to give back.
        unsafe {
            if !(*h).next.is_null() {
                free_chain(h);
                return;
            }
            (*(*h).pool).put_bulk(&[h as usize])
        }
    }
}

/// The bytes of each segment of a packet, first to last ([`Mbuf::segments`]).
pub struct Segments<'a> {
    next: *const MbufHeader,
    _owner: PhantomData<&'a Mbuf>,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.next.is_null() {
            return None;
        }
        let h = self.next;
        // SAFETY: a segment of a chain borrowed for 'a; its data lies within
        // its buffer (data_off + data_len <= buf_len).
        unsafe {
            self.next = (*h).next;
            let start = (h as *const u8).add(HEADER_SIZE + (*h).data_off as usize);
            Some(std::slice::from_raw_parts(start, (*h).data_len as usize))
        }
    }
}

/// (data IOVA, length) of each segment of a packet ([`Mbuf::segment_iovas`]).
pub struct SegmentIovas<'a> {
    next: *const MbufHeader,
    _owner: PhantomData<&'a Mbuf>,
}

impl Iterator for SegmentIovas<'_> {
    type Item = (u64, usize);

    #[inline]
    fn next(&mut self) -> Option<(u64, usize)> {
        if self.next.is_null() {
            return None;
        }
        let h = self.next;
        // SAFETY: a segment of a chain borrowed for the iterator's life.
        unsafe {
            self.next = (*h).next;
            Some(((*h).buf_iova + (*h).data_off as u64, (*h).data_len as usize))
        }
    }
}

/// The bytes of each segment of a packet, writable ([`Mbuf::segments_mut`]).
pub struct SegmentsMut<'a> {
    next: *mut MbufHeader,
    _owner: PhantomData<&'a mut Mbuf>,
}

impl<'a> Iterator for SegmentsMut<'a> {
    type Item = &'a mut [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a mut [u8]> {
        if self.next.is_null() {
            return None;
        }
        let h = self.next;
        // SAFETY: as in `Segments`; the chain is borrowed mutably for 'a and
        // each segment is a distinct element, handed out once.
        unsafe {
            self.next = (*h).next;
            let start = (h as *mut u8).add(HEADER_SIZE + (*h).data_off as usize);
            Some(std::slice::from_raw_parts_mut(
                start,
                (*h).data_len as usize,
            ))
        }
    }
}

/// A packet being assembled from the buffers a device filled, one segment at
/// a time (scatter receive: a NIC's multi-descriptor frame, AF_XDP
/// multi-buffer, virtio mergeable buffers, a memif chain). It keeps the last
/// segment, so each append is O(1), and it lives in the receive queue: a
/// frame's segments may straddle two bursts.
pub struct RxChain {
    head: Option<Mbuf>,
    tail: *mut MbufHeader,
}

// SAFETY: it owns the mbufs it links (an Mbuf is Send); `tail` points into them.
unsafe impl Send for RxChain {}

impl Default for RxChain {
    fn default() -> Self {
        RxChain::new()
    }
}

impl fmt::Debug for RxChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxChain")
            .field("segs", &self.nb_segs())
            .field("pkt_len", &self.pkt_len())
            .finish()
    }
}

impl RxChain {
    /// Nothing assembled.
    pub const fn new() -> RxChain {
        RxChain {
            head: None,
            tail: std::ptr::null_mut(),
        }
    }

    /// Whether no segment is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    /// Segments held.
    #[inline]
    pub fn nb_segs(&self) -> usize {
        self.head.as_ref().map_or(0, Mbuf::nb_segs)
    }

    /// Bytes held.
    #[inline]
    pub fn pkt_len(&self) -> usize {
        self.head.as_ref().map_or(0, Mbuf::pkt_len)
    }

    /// Append a segment (the first one becomes the packet: its port, flags
    /// and hash describe it). The segment is given back if the packet would
    /// have more than [`MAX_SEGS`] segments: the caller drops the frame
    /// ([`discard`](Self::discard)) and counts it.
    #[inline]
    pub fn push(&mut self, seg: Mbuf) -> std::result::Result<(), Mbuf> {
        let Some(head) = self.head.as_mut() else {
            self.tail = seg.last_seg();
            self.head = Some(seg);
            return Ok(());
        };
        let segs = head.nb_segs() + seg.nb_segs();
        let len = head.pkt_len() as u64 + seg.pkt_len() as u64;
        if segs > MAX_SEGS || len > u32::MAX as u64 {
            return Err(seg);
        }
        let new_tail = seg.last_seg();
        let s = seg.into_raw();
        // SAFETY: `tail` is the last segment of the chain `head` owns; `s`
        // now belongs to it. No reference to either header is alive.
        unsafe { (*self.tail).next = s.as_ptr() };
        self.tail = new_tail;
        let h = head.hdr_mut();
        h.nb_segs = segs as u8;
        h.pkt_len = len as u32;
        Ok(())
    }

    /// The assembled packet, leaving the assembler empty.
    #[inline]
    pub fn finish(&mut self) -> Option<Mbuf> {
        self.tail = std::ptr::null_mut();
        self.head.take()
    }

    /// Free what was assembled (a frame the device cut short, or one with too
    /// many segments); returns how many segments that was.
    pub fn discard(&mut self) -> usize {
        let n = self.nb_segs();
        drop(self.finish());
        n
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("pool", &self.pool_name())
            .field("len", &self.len())
            .field("pkt_len", &self.pkt_len())
            .field("nb_segs", &self.nb_segs())
            .field("data_off", &self.headroom())
            .field("port", &self.port())
            .field("iova", &format_args!("{:#x}", self.buf_iova()))
            .finish()
    }
}

/// What a receive ring's refill writes into the header of every buffer it
/// posts, built once per queue: the state [`Mbuf::reset`] leaves (default
/// headroom, length 0, no VLAN tag) plus the receiving port
/// and queue, in three stores (the length, port and queue are one 8-byte word
/// with the data offset). The flags are left as they are: the receive path
/// writes them whole ([`Mbuf::set_ol_flags`]) with the length and what else
/// the device reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxHeaderTemplate {
    /// The 8 bytes at `data_off` (data_off, data_len, port, queue) with
    /// data_off 0: the element's own default data offset is or-ed in.
    word: u64,
}

/// Bytes 16..24 of a header: data_off, data_len, port, queue.
#[repr(C, align(8))]
struct OffLenPortQueue {
    data_off: u16,
    data_len: u16,
    port: u16,
    queue: u16,
}

const _: () = assert!(std::mem::offset_of!(MbufHeader, data_off) == 16);
const _: () = assert!(std::mem::offset_of!(MbufHeader, data_len) == 18);
const _: () = assert!(std::mem::offset_of!(MbufHeader, port) == 20);
const _: () = assert!(std::mem::offset_of!(MbufHeader, queue) == 22);

impl OffLenPortQueue {
    #[inline(always)]
    const fn word(&self) -> u64 {
        let (a, b, c, d) = (
            self.data_off.to_ne_bytes(),
            self.data_len.to_ne_bytes(),
            self.port.to_ne_bytes(),
            self.queue.to_ne_bytes(),
        );
        u64::from_ne_bytes([a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1]])
    }
}

impl RxHeaderTemplate {
    /// The template of receive queue `queue` of port `port`.
    pub const fn new(port: u16, queue: u16) -> RxHeaderTemplate {
        RxHeaderTemplate {
            word: OffLenPortQueue {
                data_off: 0,
                data_len: 0,
                port,
                queue,
            }
            .word(),
        }
    }

    /// Prepare the header of element `hdr` for receiving: afterwards it reads
    /// as after `reset()`, `set_port(port)` and `set_queue(queue)`, except
    /// for the flags, which are unchanged (the receiver must set them). Returns
    /// the IOVA where the device is to write the frame (the buffer start plus
    /// the default headroom: the element's fixed data offset).
    ///
    /// # Safety
    /// `hdr` is a pool element the caller owns (from
    /// [`Mempool::alloc_raw`](crate::Mempool::alloc_raw) or
    /// [`Mbuf::into_raw`]), with no reference to its header alive.
    #[inline(always)]
    pub unsafe fn apply(&self, hdr: NonNull<MbufHeader>) -> u64 {
        let h = hdr.as_ptr();
        // SAFETY: the caller owns the element, so its header is valid for
        // reads and writes and nothing else accesses it; the word lies at
        // offset 16 (asserted above), 8-aligned in a 64-aligned header.
        unsafe {
            let ddo = (*h).default_data_off;
            let iova = (*h).buf_iova + ddo as u64;
            // The word with data_off 0, then data_off: two stores and no
            // arithmetic.
            std::ptr::addr_of_mut!((*h).data_off)
                .cast::<u64>()
                .write(self.word);
            (*h).data_off = ddo;
            (*h).vlan_tci = 0;
            iova
        }
    }
}

/// A fixed-capacity, inline batch of mbufs: what bursts move.
///
/// Receiving appends at the back (up to the batch's burst size); transmitting
/// takes from the front and leaves the unsent tail, so the caller decides to
/// retry or drop. No heap: the slots are an inline array of [`MAX_BURST`]
/// pointers.
///
/// It owns the mbufs it holds, so it is `Send` and `Sync` exactly when [`Mbuf`]
/// is (`Send`, not `Sync`), although the slots are plain integers.
pub struct MbufBatch {
    start: usize,
    end: usize,
    burst: usize,
    slots: [usize; MAX_BURST],
    /// The slots are owned `Mbuf`s: take their auto traits.
    _owns: PhantomData<Mbuf>,
}

impl Default for MbufBatch {
    fn default() -> Self {
        MbufBatch::new()
    }
}

impl MbufBatch {
    /// An empty batch with burst size [`MAX_BURST`].
    pub fn new() -> MbufBatch {
        MbufBatch {
            start: 0,
            end: 0,
            burst: MAX_BURST,
            slots: [0; MAX_BURST],
            _owns: PhantomData,
        }
    }

    /// An empty batch that receives at most `burst` packets per burst (clamped
    /// to 1..=MAX_BURST).
    pub fn with_burst(burst: usize) -> MbufBatch {
        let mut b = MbufBatch::new();
        b.set_burst(burst);
        b
    }

    /// The burst size receive calls fill up to.
    #[inline(always)]
    pub fn burst(&self) -> usize {
        self.burst
    }

    /// Change the burst size (clamped to 1..=MAX_BURST).
    pub fn set_burst(&mut self, burst: usize) {
        self.burst = burst.clamp(1, MAX_BURST);
    }

    /// Number of packets held.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether the batch holds nothing.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// How many more packets a receive may append (burst size minus held).
    #[inline(always)]
    pub fn spare(&self) -> usize {
        self.burst.saturating_sub(self.len())
    }

    /// Move the held pointers to the front so `spare()` slots follow them.
    #[inline(always)]
    fn make_room(&mut self, n: usize) {
        if self.end + n > MAX_BURST {
            self.slots.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Append one packet; gives it back if the batch is at its burst size.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.spare() == 0 {
            return Err(m);
        }
        self.make_room(1);
        self.slots[self.end] = m.into_raw().as_ptr() as usize;
        self.end += 1;
        Ok(())
    }

    /// Take the first packet.
    #[inline(always)]
    pub fn pop_front(&mut self) -> Option<Mbuf> {
        if self.is_empty() {
            return None;
        }
        let p = self.slots[self.start];
        self.start += 1;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        // SAFETY: every held slot is a non-null element pointer the batch owns.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p as *mut MbufHeader)) })
    }

    /// The held packets.
    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        let s = &self.slots[self.start..self.end];
        // SAFETY: Mbuf is repr(transparent) over a non-null pointer, and every held
        // slot is one the batch owns.
        unsafe { std::slice::from_raw_parts(s.as_ptr() as *const Mbuf, s.len()) }
    }

    /// The held packets, writable.
    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        let s = &mut self.slots[self.start..self.end];
        // SAFETY: as in `as_slice`; `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut Mbuf, s.len()) }
    }

    /// Iterate over the held packets.
    pub fn iter(&self) -> std::slice::Iter<'_, Mbuf> {
        self.as_slice().iter()
    }

    /// Iterate over the held packets, writable.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Mbuf> {
        self.as_mut_slice().iter_mut()
    }

    /// Free the first `n` packets (all if fewer) back to their pools, in bulk.
    #[inline]
    pub fn free_front(&mut self, n: usize) -> usize {
        let n = n.min(self.len());
        if n == 0 {
            return 0;
        }
        free_raw_bulk(&self.slots[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        n
    }

    /// Free every held packet back to its pool, in bulk.
    #[inline]
    pub fn clear(&mut self) -> usize {
        self.free_front(self.len())
    }

    /// Free every held packet and return (packets, bytes): what a transmit
    /// path that consumes everything counts, in one pass over the headers.
    #[inline]
    pub fn clear_counting_bytes(&mut self) -> (usize, u64) {
        let n = self.len();
        if n == 0 {
            return (0, 0);
        }
        let bytes = free_raw_bulk(&self.slots[self.start..self.end]);
        self.start = 0;
        self.end = 0;
        (n, bytes)
    }

    /// Keep the packets for which `keep` returns true, in order; free the others.
    /// Returns how many were freed. If `keep` panics, the packet it was given
    /// is freed (once) by the unwinding and the batch holds the others.
    pub fn retain_mut(&mut self, keep: impl FnMut(&mut Mbuf) -> bool) -> usize {
        self.retain_mut_from(0, keep)
    }

    /// As [`retain_mut`](Self::retain_mut), for the packets from index `from`
    /// on (the ones a receive call just appended); those before are kept.
    pub fn retain_mut_from(
        &mut self,
        from: usize,
        mut keep: impl FnMut(&mut Mbuf) -> bool,
    ) -> usize {
        /// Closes the gap the freed packets left, also when `keep` unwinds:
        /// slots `[read, end)` were not looked at yet and move down behind the
        /// kept ones at `[start, write)`.
        struct Gap<'a> {
            batch: &'a mut MbufBatch,
            read: usize,
            write: usize,
        }
        impl Drop for Gap<'_> {
            fn drop(&mut self) {
                let b = &mut *self.batch;
                let rest = b.end - self.read;
                b.slots.copy_within(self.read..b.end, self.write);
                b.end = self.write + rest;
                if b.start == b.end {
                    b.start = 0;
                    b.end = 0;
                }
            }
        }
        let (start, end) = (self.start + from.min(self.len()), self.end);
        let mut g = Gap {
            batch: self,
            read: start,
            write: start,
        };
        let mut freed = 0;
        while g.read < end {
            let p = g.batch.slots[g.read];
            // Taken out of its slot before `keep` runs: from here on `m` owns
            // it (an unwinding drops it), not the batch.
            g.read += 1;
            // SAFETY: the slot was held; it is no longer counted as held
            // (`read` moved past it), so `m` is its only owner.
            let mut m = unsafe { Mbuf::from_raw(NonNull::new_unchecked(p as *mut MbufHeader)) };
            if keep(&mut m) {
                g.batch.slots[g.write] = m.into_raw().as_ptr() as usize;
                g.write += 1;
            } else {
                drop(m);
                freed += 1;
            }
        }
        freed
    }

    /// The raw pointers of the held packets, for the pool and ring code.
    #[inline(always)]
    pub(crate) fn raw_held(&self) -> &[usize] {
        &self.slots[self.start..self.end]
    }

    /// Forget the first `n` held packets: their ownership moved elsewhere.
    #[inline(always)]
    pub(crate) fn forget_front(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for `n` more raw pointers at the back; the caller writes them and
    /// then calls `commit_back`.
    #[inline(always)]
    pub(crate) fn raw_spare(&mut self, n: usize) -> &mut [usize] {
        debug_assert!(n <= self.spare());
        self.make_room(n);
        &mut self.slots[self.end..self.end + n]
    }

    /// Take ownership of `n` pointers written through `raw_spare`.
    #[inline(always)]
    pub(crate) fn commit_back(&mut self, n: usize) {
        self.end += n;
    }

    /// Driver fast path (a PMD's receive loop): `n` spare slots at the back
    /// (`n <= spare()`, else a panic), for the driver to write raw element
    /// pointers into; [`commit_raw`](Self::commit_raw) then appends the first
    /// `k` of them. A receive loop fills the batch without a `push` per packet.
    #[inline(always)]
    pub fn spare_raw(&mut self, n: usize) -> &mut [usize] {
        assert!(
            n <= self.spare(),
            "spare_raw({n}) with {} spare",
            self.spare()
        );
        self.raw_spare(n)
    }

    /// Append the first `n` pointers written into the slice of the last
    /// [`spare_raw`](Self::spare_raw) call.
    ///
    /// # Safety
    /// `n` is at most that slice's length, no other method of the batch was
    /// called since, and each of the `n` pointers is an mbuf element the caller
    /// owned (from [`Mbuf::into_raw`], [`Mempool::alloc_raw`](crate::Mempool::alloc_raw)
    /// or [`take_front_raw`](Self::take_front_raw)): ownership moves to the batch.
    #[inline(always)]
    pub unsafe fn commit_raw(&mut self, n: usize) {
        debug_assert!(n <= self.spare() && self.end + n <= MAX_BURST);
        self.commit_back(n);
    }

    /// Give back the last `k` packets the preceding
    /// [`take_front_raw`](Self::take_front_raw) call returned, which the
    /// caller did not consume: they are the front of the batch again (a
    /// transmit loop that stops at a chain it leaves to another path).
    ///
    /// # Safety
    /// No other method of the batch was called since that call, `k` is at
    /// most what it returned, and the caller gives up those last `k` packets.
    #[inline]
    pub unsafe fn untake_front_raw(&mut self, k: usize) {
        assert!(k <= self.start, "untake_front_raw({k}) past the taken ones");
        self.start -= k;
    }

    /// Driver fast path (a PMD's transmit loop): the first `n` packets (`n <=
    /// len()`, else a panic) leave the batch as raw element pointers, owned by
    /// the caller from now on, as [`Mbuf::into_raw`] does for one: give each
    /// back with [`Mbuf::from_raw`] (or hand it to a device and do so later),
    /// or it leaks.
    #[inline(always)]
    pub fn take_front_raw(&mut self, n: usize) -> &[usize] {
        assert!(n <= self.len(), "take_front_raw({n}) of {}", self.len());
        let s = self.start;
        // Not reset to the array's start when emptied (as `forget_front`
        // does): `untake_front_raw` can give them back where they are.
        self.start += n;
        &self.slots[s..s + n]
    }
}

/// Give raw element pointers back to their pools: a driver's transmit cleanup,
/// straight from its table of slots. Zero entries (empty slots) are skipped.
/// When every entry is an element of the first one's pool (one pass over the
/// pointers, checked against that pool's memory), one bulk put; otherwise one per run of the same pool. Returns
/// how many elements were freed.
///
/// No header is read, so no entry may be the first segment of a chain: a
/// transmit path that takes packets with
/// [`MbufBatch::take_front_raw`] checks [`Mbuf::is_chained`] and takes a
/// chain apart ([`Mbuf::split_first`]) before its segments reach a slot.
///
/// # Safety
/// Each non-zero entry is a pool element the caller owns (from
/// [`Mbuf::into_raw`], [`MbufBatch::take_front_raw`] or
/// [`Mempool::alloc_raw`](crate::Mempool::alloc_raw)) that links to no other
/// segment ([`Mbuf::is_chained`] false), none appears twice,
/// and the caller gives up its ownership (it must clear or forget the entries).
#[inline]
pub unsafe fn free_raw(ptrs: &[usize]) -> usize {
    #[cfg(debug_assertions)]
    for &p in ptrs.iter().filter(|&&p| p != 0) {
        // SAFETY: the caller owns every non-zero element (see above).
        let next = unsafe { (*(p as *const MbufHeader)).next };
        debug_assert!(
            next.is_null(),
            "free_raw given the first segment of a chain: its other segments would leak \
             (take a chain apart with Mbuf::split_first, or free it as an Mbuf)"
        );
    }
    let Some(&first) = ptrs.first() else {
        return 0;
    };
    if first != 0 {
        // SAFETY: the caller owns every non-zero element; its header names
        // its pool, which outlives it.
        unsafe {
            let pool = (*(first as *const MbufHeader)).pool;
            // An element of some pool (the caller's contract) inside this
            // pool's memory is this pool's: one range test per element, no
            // header read, and an empty slot (0) fails it. (A branch-free
            // or of tests gets vectorized into far more instructions.)
            let (base, span) = (*pool).span();
            if all_in_range(ptrs, base, span) {
                (*pool).put_bulk(ptrs);
                return ptrs.len();
            }
        }
    }
    free_mixed(ptrs)
}

/// Whether every entry `p` of `ptrs` has `p - base < span` (unsigned: an
/// element of the pool whose memory is `[base, base + span)`; 0 is not).
#[inline(always)]
fn all_in_range(ptrs: &[usize], base: usize, span: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    if ptrs.len() >= 8 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { all_in_range_avx2(ptrs, base, span) };
    }
    // One range test per element (a branch-free or of tests gets vectorized
    // into far more instructions without AVX2's three-operand forms).
    ptrs.iter().all(|&p| p.wrapping_sub(base) < span)
}

/// [`all_in_range`] four pointers per step: one load, add, compare and or.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn all_in_range_avx2(ptrs: &[usize], base: usize, span: usize) -> bool {
    use std::arch::x86_64::*;
    if span == 0 {
        return false;
    }
    // `p - base <= span - 1` as unsigned numbers is, with the sign bit flipped
    // on both sides, a signed compare (AVX2 has no unsigned one).
    let bias = _mm256_set1_epi64x(i64::MIN.wrapping_sub(base as i64));
    let limit = _mm256_set1_epi64x(((span - 1) as i64).wrapping_add(i64::MIN));
    let mut outside = _mm256_setzero_si256();
    let quads = ptrs.chunks_exact(4);
    let rest = quads.remainder();
    for q in quads {
        // SAFETY: `q` is four `usize`s (8 bytes each on x86_64): 32 readable
        // bytes, loaded unaligned.
        let v = unsafe { _mm256_loadu_si256(q.as_ptr() as *const __m256i) };
        outside = _mm256_or_si256(
            outside,
            _mm256_cmpgt_epi64(_mm256_add_epi64(v, bias), limit),
        );
    }
    _mm256_testz_si256(outside, outside) == 1 && rest.iter().all(|&p| p.wrapping_sub(base) < span)
}

/// The slow case of [`free_raw`]: elements of several pools, or empty slots.
#[cold]
#[inline(never)]
fn free_mixed(ptrs: &[usize]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i < ptrs.len() {
        if ptrs[i] == 0 {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < ptrs.len() && ptrs[j] != 0 {
            j += 1;
        }
        free_raw_bulk(&ptrs[i..j]);
        n += j - i;
        i = j;
    }
    n
}

/// Return packets, as raw element pointers, to their pools; returns the sum
/// of their packet lengths (read from the header line the pool is named in).
/// The common case, single-segment packets of one pool, is one pass over the
/// headers and one bulk put; anything else goes to [`free_packets_mixed`].
#[inline]
pub(crate) fn free_raw_bulk(ptrs: &[usize]) -> u64 {
    let Some(&first) = ptrs.first() else {
        return 0;
    };
    // SAFETY: each pointer is a packet the caller owns; its header names its
    // pool and its next segment.
    let pool = unsafe { (*(first as *const MbufHeader)).pool };
    let mut bytes = 0u64;
    // Any bit set: another pool, or a chain.
    let mut odd = 0usize;
    for &p in ptrs {
        // SAFETY: as above.
        let h = unsafe { &*(p as *const MbufHeader) };
        bytes += h.data_len as u64;
        odd |= (h.pool as usize ^ pool as usize) | h.next as usize;
    }
    if odd == 0 {
        // SAFETY: the pool outlives its elements, none of which links to another.
        unsafe { (*pool).put_bulk(ptrs) };
        return bytes;
    }
    free_packets_mixed(ptrs)
}

/// [`free_raw_bulk`] for packets of several pools, or chains: one bulk put
/// per run of single-segment packets of one pool, chains segment by segment.
#[cold]
#[inline(never)]
fn free_packets_mixed(ptrs: &[usize]) -> u64 {
    let mut bytes = 0u64;
    let mut i = 0;
    while i < ptrs.len() {
        // SAFETY: each pointer is a packet the caller owns; its header names
        // its pool and its next segment.
        let (pool, len, next) = unsafe {
            let h = &*(ptrs[i] as *const MbufHeader);
            (h.pool, h.data_len, h.next)
        };
        if !next.is_null() {
            // SAFETY: a chain the caller owns.
            bytes += unsafe { free_chain(ptrs[i] as *mut MbufHeader) };
            i += 1;
            continue;
        }
        bytes += len as u64;
        let mut j = i + 1;
        while j < ptrs.len() {
            // SAFETY: as above.
            let h = unsafe { &*(ptrs[j] as *const MbufHeader) };
            if h.pool != pool || !h.next.is_null() {
                break;
            }
            bytes += h.data_len as u64;
            j += 1;
        }
        // SAFETY: the pool outlives its elements, none of which links to another.
        unsafe { (*pool).put_bulk(&ptrs[i..j]) };
        i = j;
    }
    bytes
}

/// Free every segment of the chain that starts at `head`, clearing each link
/// first (a free element links to nothing); returns the bytes it held.
///
/// # Safety
/// `head` is a packet the caller owns and gives up, with no reference to any
/// of its headers alive.
#[cold]
#[inline(never)]
unsafe fn free_chain(head: *mut MbufHeader) -> u64 {
    let mut buf = [0usize; 32];
    let mut n = 0;
    let mut bytes = 0u64;
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a segment of the chain the caller gave up.
        unsafe {
            let next = (*p).next;
            (*p).next = std::ptr::null_mut();
            bytes += (*p).data_len as u64;
            buf[n] = p as usize;
            p = next;
        }
        n += 1;
        if n == buf.len() {
            put_runs(&buf);
            n = 0;
        }
    }
    put_runs(&buf[..n]);
    bytes
}

/// One bulk put per run of elements of the same pool (none linked).
fn put_runs(ptrs: &[usize]) {
    let mut i = 0;
    while i < ptrs.len() {
        // SAFETY: elements the caller gave up; a header names its pool, which
        // outlives it.
        let pool = unsafe { (*(ptrs[i] as *const MbufHeader)).pool };
        let mut j = i + 1;
        // SAFETY: as above.
        while j < ptrs.len() && unsafe { (*(ptrs[j] as *const MbufHeader)).pool } == pool {
            j += 1;
        }
        // SAFETY: as above.
        unsafe { (*pool).put_bulk(&ptrs[i..j]) };
        i = j;
    }
}

impl Drop for MbufBatch {
    fn drop(&mut self) {
        self.clear();
    }
}

impl fmt::Debug for MbufBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufBatch")
            .field("len", &self.len())
            .field("burst", &self.burst)
            .finish()
    }
}

#[cfg(test)]
mod range_tests {
    use super::all_in_range;

    /// The free path's pool test (AVX2 from 8 pointers on, on a CPU that has
    /// it) against its definition, for every length up to 13 (whole vector
    /// steps and remainders), an outsider at every position, and pools at
    /// both ends of the address space.
    #[test]
    fn pool_range_test_matches_its_definition() {
        for (base, span) in [
            (0x7f00_0000_1000usize, 0x10000usize),
            (64, 4096),
            (usize::MAX - 100, 50),
            (0x1000, 0),
        ] {
            let inside = [
                base,
                base.wrapping_add(span / 2),
                base.wrapping_add(span.saturating_sub(1)),
            ];
            let outside = [
                0,
                base.wrapping_sub(1),
                base.wrapping_add(span),
                usize::MAX,
                base ^ (1 << 63),
            ];
            let def = |p: &[usize]| p.iter().all(|&x| x.wrapping_sub(base) < span);
            for len in 0..=13 {
                let all_in: Vec<usize> = (0..len).map(|i| inside[i % 3]).collect();
                assert_eq!(
                    all_in_range(&all_in, base, span),
                    def(&all_in),
                    "{base:#x}+{span:#x} len {len}"
                );
                for at in 0..len {
                    for &o in &outside {
                        let mut v = all_in.clone();
                        v[at] = o;
                        assert_eq!(
                            all_in_range(&v, base, span),
                            def(&v),
                            "{base:#x}+{span:#x}: {o:#x} at {at} of {len}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod auto_trait_tests {
    use super::{Mbuf, MbufBatch};

    /// `<T as NotSync<_>>::check` resolves only when `T` is not `Sync`: for a
    /// `Sync` type both impls apply and the call is ambiguous, a compile error
    /// (the `static_assertions::assert_not_impl_any` technique).
    trait NotSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> NotSync<()> for T {}
    struct IsSync;
    impl<T: ?Sized + Sync> NotSync<IsSync> for T {}

    fn is_send<T: Send>() {}

    /// A batch owns its mbufs: it may move to another lcore with them, but not
    /// be shared, exactly like an `Mbuf`. Checked when this test compiles.
    #[test]
    fn a_batch_has_the_auto_traits_of_an_mbuf() {
        is_send::<Mbuf>();
        is_send::<MbufBatch>();
        <Mbuf as NotSync<_>>::check();
        <MbufBatch as NotSync<_>>::check();
    }
}
