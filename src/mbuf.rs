//! Packet buffers: the [`Mbuf`] handle and the inline [`MbufBatch`] that bursts move.
//!
//! Every buffer is one element of a [`Mempool`](crate::Mempool): a fixed
//! power-of-two stride (2 KiB or 4 KiB), aligned to that stride. The 64-byte
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
    /// `ol_flags: u64` ([`flags`](super::flags)).
    pub const OL_FLAGS: usize = offset_of!(MbufHeader, ol_flags);
}

/// The metadata in front of every buffer, like rte_mbuf's first cache line.
///
/// It lives in DMA memory but no device ever writes it: only the CPU that owns
/// the [`Mbuf`] touches it.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct MbufHeader {
    pub(crate) pool: *const PoolInner,
    /// IOVA of the buffer start (the byte after this header).
    pub(crate) buf_iova: u64,
    pub(crate) data_off: u16,
    pub(crate) data_len: u16,
    pub(crate) port: u16,
    pub(crate) queue: u16,
    pub(crate) buf_len: u32,
    pub(crate) rss_hash: u32,
    pub(crate) ol_flags: u64,
    pub(crate) timestamp: u64,
    pub(crate) vlan_tci: u16,
    pub(crate) packet_type: u16,
    /// data_off of a fresh mbuf (its headroom), fixed per element.
    pub(crate) default_data_off: u16,
    /// Offset of this header from the element start (color * 64).
    pub(crate) elem_off: u16,
    pub(crate) user: u64,
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

    /// The packet bytes.
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let h = self.hdr();
        // SAFETY: data_off + data_len <= buf_len is an invariant every setter keeps.
        unsafe {
            std::slice::from_raw_parts(self.buf_ptr().add(h.data_off as usize), h.data_len as usize)
        }
    }

    /// The packet bytes, writable.
    #[inline(always)]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let (off, len) = (self.hdr().data_off as usize, self.hdr().data_len as usize);
        // SAFETY: as in `data`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.buf_ptr().add(off), len) }
    }

    /// Packet length in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.hdr().data_len as usize
    }

    /// Whether the packet has no bytes.
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.hdr().data_len == 0
    }

    /// Bytes free in front of the data.
    #[inline(always)]
    pub fn headroom(&self) -> usize {
        self.hdr().data_off as usize
    }

    /// Bytes free after the data.
    #[inline(always)]
    pub fn tailroom(&self) -> usize {
        let h = self.hdr();
        h.buf_len as usize - h.data_off as usize - h.data_len as usize
    }

    /// Largest packet this buffer can hold with its current headroom.
    #[inline(always)]
    pub fn capacity(&self) -> usize {
        self.hdr().buf_len as usize - self.hdr().data_off as usize
    }

    /// Set the packet length; false (and nothing changed) if it does not fit.
    #[inline(always)]
    pub fn set_len(&mut self, len: usize) -> bool {
        if len > self.capacity() {
            return false;
        }
        self.hdr_mut().data_len = len as u16;
        true
    }

    /// Set the packet length without the capacity check of
    /// [`set_len`](Self::set_len): a receive fast path whose lengths were
    /// already checked against the buffer's room.
    ///
    /// # Safety
    /// `len <= self.capacity()` (the invariant `data()` relies on).
    #[inline(always)]
    pub unsafe fn set_len_unchecked(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.hdr_mut().data_len = len as u16;
    }

    /// Grow the packet at its end by `n` bytes and return them.
    pub fn append(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.tailroom() {
            return None;
        }
        let old = self.len();
        self.hdr_mut().data_len += n as u16;
        Some(&mut self.data_mut()[old..])
    }

    /// Grow the packet at its front by `n` bytes (into the headroom) and return them.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.headroom() {
            return None;
        }
        let h = self.hdr_mut();
        h.data_off -= n as u16;
        h.data_len += n as u16;
        Some(&mut self.data_mut()[..n])
    }

    /// Remove `n` bytes from the front; false if the packet is shorter.
    pub fn adj(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        let h = self.hdr_mut();
        h.data_off += n as u16;
        h.data_len -= n as u16;
        true
    }

    /// Remove `n` bytes from the end; false if the packet is shorter.
    pub fn trim(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.hdr_mut().data_len -= n as u16;
        true
    }

    /// Set the data offset (headroom) and length at once, as a driver does after
    /// a device wrote a frame; false if they do not fit the buffer.
    #[inline(always)]
    pub fn set_data(&mut self, data_off: usize, len: usize) -> bool {
        let h = self.hdr_mut();
        // Not `data_off + len > buf_len`: that sum can wrap.
        if len > h.buf_len as usize || data_off > h.buf_len as usize - len {
            return false;
        }
        h.data_off = data_off as u16;
        h.data_len = len as u16;
        true
    }

    /// Put the buffer back in its freshly allocated state (default headroom,
    /// empty, no flags).
    #[inline(always)]
    pub fn reset(&mut self) {
        let h = self.hdr_mut();
        h.data_off = h.default_data_off;
        h.data_len = 0;
        h.ol_flags = 0;
        h.vlan_tci = 0;
        h.packet_type = 0;
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
        let p = self.hdr.as_ptr() as usize;
        // SAFETY: see `pool_name`; the element is ours to give back.
        unsafe { (*self.hdr().pool).put_bulk(&[p]) }
    }
}

impl fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mbuf")
            .field("pool", &self.pool_name())
            .field("len", &self.len())
            .field("data_off", &self.headroom())
            .field("port", &self.port())
            .field("iova", &format_args!("{:#x}", self.buf_iova()))
            .finish()
    }
}

/// What a receive ring's refill writes into the header of every buffer it
/// posts, built once per queue: the state [`Mbuf::reset`] leaves (default
/// headroom, length 0, no VLAN tag, no packet type) plus the receiving port
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
            (*h).packet_type = 0;
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
    pub fn retain_mut(&mut self, mut keep: impl FnMut(&mut Mbuf) -> bool) -> usize {
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
        let (start, end) = (self.start, self.end);
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

    /// Driver fast path (a PMD's transmit loop): the first `n` packets (`n <=
    /// len()`, else a panic) leave the batch as raw element pointers, owned by
    /// the caller from now on, as [`Mbuf::into_raw`] does for one: give each
    /// back with [`Mbuf::from_raw`] (or hand it to a device and do so later),
    /// or it leaks.
    #[inline(always)]
    pub fn take_front_raw(&mut self, n: usize) -> &[usize] {
        assert!(n <= self.len(), "take_front_raw({n}) of {}", self.len());
        let s = self.start;
        self.forget_front(n);
        &self.slots[s..s + n]
    }
}

/// Give raw element pointers back to their pools: a driver's transmit cleanup,
/// straight from its table of slots. Zero entries (empty slots) are skipped.
/// When every entry is an element of the first one's pool (one pass over the
/// pointers, checked against that pool's memory), one bulk put; otherwise one per run of the same pool. Returns
/// how many elements were freed.
///
/// # Safety
/// Each non-zero entry is a pool element the caller owns (from
/// [`Mbuf::into_raw`], [`MbufBatch::take_front_raw`] or
/// [`Mempool::alloc_raw`](crate::Mempool::alloc_raw)), none appears twice,
/// and the caller gives up its ownership (it must clear or forget the entries).
#[inline]
pub unsafe fn free_raw(ptrs: &[usize]) -> usize {
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

/// Return raw element pointers to their pools, one bulk put per run of the same
/// pool; returns the sum of their data lengths (read from the same header line).
#[inline]
pub(crate) fn free_raw_bulk(ptrs: &[usize]) -> u64 {
    let mut bytes = 0u64;
    let mut i = 0;
    while i < ptrs.len() {
        // SAFETY: each pointer is an element the caller owns; its header names its pool.
        let (pool, len) = unsafe {
            let h = &*(ptrs[i] as *const MbufHeader);
            (h.pool, h.data_len)
        };
        bytes += len as u64;
        let mut j = i + 1;
        while j < ptrs.len() {
            // SAFETY: as above.
            let h = unsafe { &*(ptrs[j] as *const MbufHeader) };
            if h.pool != pool {
                break;
            }
            bytes += h.data_len as u64;
            j += 1;
        }
        // SAFETY: the pool outlives its elements.
        unsafe { (*pool).put_bulk(&ptrs[i..j]) };
        i = j;
    }
    bytes
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
