//! Split virtqueue memory (virtio 1.0 §2.4): the descriptor table, the
//! available ring and the used ring, in DMA memory shared with the device; and
//! the table of mbufs the device holds ([`InFlight`]).
//!
//! This is the driver's only unsafe code. Ring memory is reached through raw
//! pointers with volatile accesses, never through a Rust reference: the device
//! writes the used ring (and, for receive buffers, the packet memory) at any
//! time. Ordering follows the spec's barriers: descriptors and available-ring
//! entries are written before the available index ([`Vring::publish_avail`]:
//! release), the used index is read before the used entries and the buffers
//! it covers ([`Vring::used_idx`]: acquire), and the available index is
//! published before the device's "no notify" flag is read
//! ([`Vring::device_wants_notify`]: a full fence), so a doorbell is never
//! skipped while the device is going to sleep.
//!
//! Every structure is little-endian, as virtio 1.0 is.

use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use nicpoll::memory::DmaRegion;
use nicpoll::{Error, Mbuf, Result};

/// Descriptor flag: the buffer continues in the `next` descriptor.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes the buffer (receive); otherwise it reads it.
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Available-ring flag: the driver does not want interrupts.
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used-ring flag: the device does not need a doorbell for new buffers.
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;
/// Largest queue size of a split virtqueue.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// One descriptor (`struct virtq_desc`): a buffer's address and length.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

const _: () = assert!(size_of::<Desc>() == 16);

impl Desc {
    /// A descriptor for `len` bytes at IOVA `addr`.
    #[inline(always)]
    pub fn new(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
        Desc {
            addr: addr.to_le(),
            len: len.to_le(),
            flags: flags.to_le(),
            next: next.to_le(),
        }
    }

    /// The buffer's IOVA.
    pub fn addr(&self) -> u64 {
        u64::from_le(self.addr)
    }

    /// The buffer's length.
    pub fn len(&self) -> u32 {
        u32::from_le(self.len)
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `VIRTQ_DESC_F_*` flags.
    pub fn flags(&self) -> u16 {
        u16::from_le(self.flags)
    }

    /// The next descriptor of a chain (with `VIRTQ_DESC_F_NEXT`).
    pub fn next(&self) -> u16 {
        u16::from_le(self.next)
    }
}

impl fmt::Debug for Desc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Desc")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len())
            .field("flags", &self.flags())
            .field("next", &self.next())
            .finish()
    }
}

/// One used-ring entry (`struct virtq_used_elem`): which descriptor chain the
/// device is done with, and how many bytes it wrote into it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsedElem {
    id: u32,
    len: u32,
}

const _: () = assert!(size_of::<UsedElem>() == 8);

impl UsedElem {
    /// An entry (what a device writes; for the tests' fake device).
    pub fn new(id: u32, len: u32) -> UsedElem {
        UsedElem {
            id: id.to_le(),
            len: len.to_le(),
        }
    }

    /// Head descriptor of the chain.
    #[inline(always)]
    pub fn id(&self) -> u32 {
        u32::from_le(self.id)
    }

    /// Bytes written by the device.
    #[inline(always)]
    pub fn len(&self) -> u32 {
        u32::from_le(self.len)
    }

    /// Whether the device wrote nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `struct virtio_net_hdr` as virtio 1.0 lays it out (12 bytes, `num_buffers`
/// included whatever the features): in front of every frame on both rings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`.
    pub gso_type: u8,
    /// Header length for GSO.
    pub hdr_len: u16,
    /// Segment size for GSO.
    pub gso_size: u16,
    /// Checksum offload: where to start.
    pub csum_start: u16,
    /// Checksum offload: where to store it.
    pub csum_offset: u16,
    /// Buffers of a merged receive (1 without VIRTIO_NET_F_MRG_RXBUF).
    pub num_buffers: u16,
}

/// Size of [`NetHdr`].
pub const NET_HDR_LEN: usize = 12;
const _: () = assert!(size_of::<NetHdr>() == NET_HDR_LEN);

impl NetHdr {
    /// The header's wire bytes.
    pub fn to_bytes(&self) -> [u8; NET_HDR_LEN] {
        let mut b = [0u8; NET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }
}

/// Where the three parts of a split virtqueue of `size` entries go, from the
/// start of its memory (virtio 1.0 §2.4: alignments 16, 2 and 4; the used ring
/// starts on its own cache line, away from what the driver writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Entries.
    pub size: u16,
    /// Offset of the descriptor table (`16 * size` bytes).
    pub desc: usize,
    /// Offset of the available ring (`6 + 2 * size` bytes).
    pub avail: usize,
    /// Offset of the used ring (`6 + 8 * size` bytes).
    pub used: usize,
    /// Bytes in all.
    pub bytes: usize,
}

impl Layout {
    /// The layout of a queue of `size` entries.
    pub fn new(size: u16) -> Layout {
        let n = size as usize;
        let desc = 0;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n).next_multiple_of(64);
        let bytes = (used + 6 + 8 * n).next_multiple_of(64);
        Layout {
            size,
            desc,
            avail,
            used,
            bytes,
        }
    }

    /// Bytes of the descriptor table, the available ring and the used ring.
    pub fn part_lens(&self) -> [(usize, usize); 3] {
        let n = self.size as usize;
        [
            (self.desc, 16 * n),
            (self.avail, 6 + 2 * n),
            (self.used, 6 + 8 * n),
        ]
    }
}

/// One split virtqueue's memory inside a [`DmaRegion`].
pub struct Vring {
    /// Keeps the memory alive as long as the ring exists.
    region: Arc<DmaRegion>,
    base: NonNull<u8>,
    layout: Layout,
    desc_iova: u64,
    avail_iova: u64,
    used_iova: u64,
}

// SAFETY: a Vring is the only user of its part of the region (the layout of a
// port's rings never overlaps, see `Vring::new`), the region lives as long as
// the Arc, and every access is a volatile access through a raw pointer; the
// owning queue is used by one thread at a time (`&mut self` on the fast path).
unsafe impl Send for Vring {}

impl fmt::Debug for Vring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vring")
            .field("size", &self.layout.size)
            .field("desc_iova", &format_args!("{:#x}", self.desc_iova))
            .field("avail_iova", &format_args!("{:#x}", self.avail_iova))
            .field("used_iova", &format_args!("{:#x}", self.used_iova))
            .finish()
    }
}

impl Vring {
    /// A ring of `layout.size` entries at `offset` in `region`, zeroed. Each of
    /// its three parts must be IOVA-contiguous (one address for the device).
    /// Distinct rings of one region must not overlap (the caller's layout).
    pub fn new(region: Arc<DmaRegion>, offset: usize, layout: Layout) -> Result<Vring> {
        let bad = |reason: String| Error::VfioSetup {
            object: format!("DMA memory {}", region.what()),
            reason,
        };
        if !layout.size.is_power_of_two() || layout.size > MAX_QUEUE_SIZE {
            return Err(bad(format!(
                "queue size {} is not a power of two up to {MAX_QUEUE_SIZE}",
                layout.size
            )));
        }
        let end = offset
            .checked_add(layout.bytes)
            .filter(|&e| e <= region.len());
        if end.is_none() || !offset.is_multiple_of(64) {
            return Err(bad(format!(
                "a ring of {} bytes at offset {offset:#x} does not fit the {}-byte region",
                layout.bytes,
                region.len()
            )));
        }
        for (off, len) in layout.part_lens() {
            if !region.is_iova_contiguous(offset + off, len) {
                return Err(bad(format!(
                    "ring part at offset {:#x} ({len} bytes) spans pages that are not contiguous \
                     in IOVA space; use hugepages",
                    offset + off
                )));
            }
        }
        // SAFETY: offset + bytes <= region.len() (checked), so the pointer stays
        // inside the mapping; the mapping is never null.
        let base = unsafe { NonNull::new_unchecked(region.as_ptr().add(offset)) };
        let ring = Vring {
            desc_iova: region.iova(offset + layout.desc),
            avail_iova: region.iova(offset + layout.avail),
            used_iova: region.iova(offset + layout.used),
            region,
            base,
            layout,
        };
        for i in (0..layout.bytes).step_by(8) {
            // SAFETY: in bounds (bytes is a multiple of 64) and 8-byte aligned
            // (the region is page aligned, the offset a multiple of 64).
            unsafe { ring.base.as_ptr().add(i).cast::<u64>().write_volatile(0) };
        }
        Ok(ring)
    }

    /// Entries.
    #[inline(always)]
    pub fn size(&self) -> u16 {
        self.layout.size
    }

    /// IOVA of the descriptor table (`queue_desc`).
    pub fn desc_iova(&self) -> u64 {
        self.desc_iova
    }

    /// IOVA of the available ring (`queue_driver`).
    pub fn avail_iova(&self) -> u64 {
        self.avail_iova
    }

    /// IOVA of the used ring (`queue_device`).
    pub fn used_iova(&self) -> u64 {
        self.used_iova
    }

    /// The region holding the ring.
    pub fn region(&self) -> &Arc<DmaRegion> {
        &self.region
    }

    #[inline(always)]
    fn ptr<T>(&self, offset: usize) -> *mut T {
        debug_assert!(offset + size_of::<T>() <= self.layout.bytes);
        // SAFETY: every caller passes an offset inside the ring's layout (indices
        // are masked with size - 1 before they get here).
        unsafe { self.base.as_ptr().add(offset).cast::<T>() }
    }

    /// Write descriptor `id` (< size).
    #[inline(always)]
    pub fn write_desc(&self, id: u16, d: Desc) {
        let id = id & (self.layout.size - 1);
        // SAFETY: inside the descriptor table, 16-byte aligned; driver-owned
        // until published through the available ring.
        unsafe {
            self.ptr::<Desc>(self.layout.desc + 16 * id as usize)
                .write_volatile(d)
        }
    }

    /// Read descriptor `id` back (tests and diagnostics).
    pub fn read_desc(&self, id: u16) -> Desc {
        let id = id & (self.layout.size - 1);
        // SAFETY: as in `write_desc`.
        unsafe {
            self.ptr::<Desc>(self.layout.desc + 16 * id as usize)
                .read_volatile()
        }
    }

    /// Set the available ring's flags (`VIRTQ_AVAIL_F_NO_INTERRUPT`).
    pub fn set_avail_flags(&self, flags: u16) {
        // SAFETY: the flags field at the start of the available ring.
        unsafe {
            self.ptr::<u16>(self.layout.avail)
                .write_volatile(flags.to_le())
        }
    }

    /// Put descriptor `id` into available slot `idx` (masked to the size).
    #[inline(always)]
    pub fn write_avail(&self, idx: u16, id: u16) {
        let slot = (idx & (self.layout.size - 1)) as usize;
        // SAFETY: ring[slot] of the available ring, 2-byte aligned.
        unsafe {
            self.ptr::<u16>(self.layout.avail + 4 + 2 * slot)
                .write_volatile(id.to_le())
        }
    }

    /// Make every entry written before `idx` visible to the device: a release
    /// fence, then the available index.
    #[inline(always)]
    pub fn publish_avail(&self, idx: u16) {
        fence(Ordering::Release);
        // SAFETY: the idx field of the available ring.
        unsafe {
            self.ptr::<u16>(self.layout.avail + 2)
                .write_volatile(idx.to_le())
        }
    }

    /// The available index as last published (tests and diagnostics).
    pub fn avail_idx(&self) -> u16 {
        // SAFETY: as in `publish_avail`; only the driver writes it.
        u16::from_le(unsafe { self.ptr::<u16>(self.layout.avail + 2).read_volatile() })
    }

    /// The device's used index, with acquire ordering: the entries and buffers
    /// it covers are read after it.
    #[inline(always)]
    pub fn used_idx(&self) -> u16 {
        // SAFETY: the idx field of the used ring; the device writes it, so it is
        // read volatile, never through a reference.
        let v = unsafe { self.ptr::<u16>(self.layout.used + 2).read_volatile() };
        fence(Ordering::Acquire);
        u16::from_le(v)
    }

    /// Used slot `idx` (masked to the size). Read after [`used_idx`](Self::used_idx).
    #[inline(always)]
    pub fn used_elem(&self, idx: u16) -> UsedElem {
        let slot = (idx & (self.layout.size - 1)) as usize;
        // SAFETY: ring[slot] of the used ring, 4-byte aligned, device-written.
        unsafe {
            self.ptr::<UsedElem>(self.layout.used + 4 + 8 * slot)
                .read_volatile()
        }
    }

    /// Whether the device wants a doorbell for what was just published: a full
    /// fence orders the available index before the read of the device's
    /// `VIRTQ_USED_F_NO_NOTIFY` flag (a store-load barrier).
    #[inline(always)]
    pub fn device_wants_notify(&self) -> bool {
        fence(Ordering::SeqCst);
        // SAFETY: the flags field of the used ring, device-written.
        let flags = unsafe { self.ptr::<u16>(self.layout.used).read_volatile() };
        u16::from_le(flags) & VIRTQ_USED_F_NO_NOTIFY == 0
    }

    /// Write `bytes` at `offset` from the ring's start (the control queue's
    /// command buffer lives after its ring).
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.layout.bytes,
            "outside the ring"
        );
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: inside the ring's memory (asserted).
            unsafe { self.base.as_ptr().add(offset + i).write_volatile(*b) }
        }
    }

    /// Read the byte at `offset` from the ring's start (a device-written status).
    pub fn read_byte(&self, offset: usize) -> u8 {
        assert!(offset < self.layout.bytes, "outside the ring");
        // SAFETY: inside the ring's memory (asserted); volatile: the device writes it.
        unsafe { self.base.as_ptr().add(offset).read_volatile() }
    }

    /// IOVA of `offset` from the ring's start.
    pub fn iova_at(&self, offset: usize) -> u64 {
        let start = self.base.as_ptr() as usize - self.region.as_ptr() as usize;
        self.region.iova(start + offset)
    }
}

/// The mbufs a queue has handed to the device, by descriptor id.
///
/// While an mbuf is in here the device may read or write its buffer, so it is
/// held as a raw pointer, never as an `Mbuf`. Dropping the table (or
/// [`release_all`](Self::release_all)) returns what it holds to the pools:
/// only do that once the device is reset and can no longer touch them.
pub struct InFlight {
    slots: Box<[usize]>,
    held: usize,
}

// SAFETY: the table owns the mbufs whose pointers it holds (Mbuf is Send).
unsafe impl Send for InFlight {}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("size", &self.slots.len())
            .field("held", &self.held)
            .finish()
    }
}

impl InFlight {
    /// An empty table for descriptor ids `0..size`.
    pub fn new(size: u16) -> InFlight {
        InFlight {
            slots: vec![0usize; size as usize].into_boxed_slice(),
            held: 0,
        }
    }

    /// Mbufs held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Whether descriptor `id` has an mbuf (false for ids out of range).
    #[inline(always)]
    pub fn is_busy(&self, id: u32) -> bool {
        self.slots.get(id as usize).is_some_and(|&p| p != 0)
    }

    /// Hand `m` to the device under descriptor `id`, which must be free.
    #[inline(always)]
    pub fn insert(&mut self, id: u16, m: Mbuf) {
        let slot = &mut self.slots[id as usize];
        debug_assert_eq!(*slot, 0, "descriptor {id} is already in flight");
        *slot = m.into_raw().as_ptr() as usize;
        self.held += 1;
    }

    /// Take back the mbuf of descriptor `id` (the device is done with it);
    /// `None` if `id` is out of range or holds nothing.
    #[inline(always)]
    pub fn take(&mut self, id: u32) -> Option<Mbuf> {
        let slot = self.slots.get_mut(id as usize)?;
        let p = NonNull::new(std::mem::take(slot) as *mut nicpoll::mbuf::MbufHeader)?;
        self.held -= 1;
        // SAFETY: `p` came from `Mbuf::into_raw` in `insert` and was cleared from
        // the table just now, so this is its only owner; the device returned the
        // descriptor through the used ring, so it no longer touches the buffer.
        Some(unsafe { Mbuf::from_raw(p) })
    }

    /// Return every held mbuf to its pool. Only once the device is reset.
    pub fn release_all(&mut self) -> usize {
        let mut n = 0;
        for id in 0..self.slots.len() {
            if self.take(id as u32).is_some() {
                n += 1;
            }
        }
        n
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// The device side's view of DMA memory, for the tests' fake device: reads and
/// writes at IOVAs of regions it was told about (IOVA mode DC: IOVA = virtual
/// address), refusing anything else, as an IOMMU would.
#[cfg(test)]
pub(crate) struct DeviceView {
    ranges: std::sync::Mutex<Vec<(u64, u64)>>,
    /// Trust any address (the conformance suite's pool is not visible to the
    /// test): still IOVA = VA, but unchecked.
    trust_all: bool,
}

#[cfg(test)]
impl DeviceView {
    pub(crate) fn new(trust_all: bool) -> DeviceView {
        DeviceView {
            ranges: std::sync::Mutex::new(Vec::new()),
            trust_all,
        }
    }

    /// Allow the device to reach `region` (which must be in IOVA mode DC or VA).
    pub(crate) fn allow(&self, region: &DmaRegion) {
        let start = region.as_ptr() as u64;
        assert_eq!(region.iova(0), start, "the fake device needs IOVA = VA");
        self.ranges
            .lock()
            .unwrap()
            .push((start, start + region.len() as u64));
    }

    fn check(&self, iova: u64, len: usize) -> Option<*mut u8> {
        let end = iova.checked_add(len as u64)?;
        if iova == 0 {
            return None;
        }
        if self.trust_all
            || self
                .ranges
                .lock()
                .unwrap()
                .iter()
                .any(|&(s, e)| iova >= s && end <= e)
        {
            Some(iova as *mut u8)
        } else {
            None
        }
    }

    /// Read `buf.len()` bytes at `iova`; false (a "DMA fault") if not allowed.
    pub(crate) fn read(&self, iova: u64, buf: &mut [u8]) -> bool {
        let Some(p) = self.check(iova, buf.len()) else {
            return false;
        };
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: inside a live region the test registered (or, trust_all,
            // an address the driver under test handed to the device).
            *b = unsafe { p.add(i).read_volatile() };
        }
        true
    }

    /// Write `buf` at `iova`; false (a "DMA fault") if not allowed.
    pub(crate) fn write(&self, iova: u64, buf: &[u8]) -> bool {
        let Some(p) = self.check(iova, buf.len()) else {
            return false;
        };
        for (i, b) in buf.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { p.add(i).write_volatile(*b) };
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::memory::DmaMemory;

    #[test]
    fn layouts_follow_the_spec_alignments() {
        let l = Layout::new(256);
        assert_eq!(l.desc, 0);
        assert_eq!(l.avail, 4096);
        assert_eq!(l.used % 64, 0);
        assert!(l.used >= l.avail + 6 + 512);
        assert!(l.bytes >= l.used + 6 + 8 * 256);
        assert_eq!(NetHdr::default().to_bytes(), [0; 12]);
    }

    #[test]
    fn ring_round_trips_and_refuses_bad_placements() {
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("ring test", 1 << 16).unwrap());
        let l = Layout::new(8);
        assert!(Vring::new(region.clone(), 1 << 16, l).is_err());
        assert!(Vring::new(region.clone(), 8, l).is_err());
        assert!(Vring::new(region.clone(), 0, Layout { size: 6, ..l }).is_err());
        let r = Vring::new(region.clone(), 64, l).unwrap();
        assert_eq!(r.desc_iova(), region.iova(64));
        r.write_desc(9, Desc::new(0x1234, 60, VIRTQ_DESC_F_WRITE, 0));
        assert_eq!(r.read_desc(1).addr(), 0x1234, "ids are masked");
        r.write_avail(3, 5);
        r.publish_avail(4);
        assert_eq!(r.avail_idx(), 4);
        assert_eq!(r.used_idx(), 0);
        assert!(r.device_wants_notify());
        let view = DeviceView::new(false);
        view.allow(&region);
        let mut b = [0u8; 2];
        assert!(view.read(r.avail_iova() + 4 + 6, &mut b));
        assert_eq!(u16::from_le_bytes(b), 5);
        assert!(view.write(r.used_iova(), &1u16.to_le_bytes()));
        assert!(!r.device_wants_notify());
        assert!(!view.read(0x10, &mut b), "outside every region");
    }
}
