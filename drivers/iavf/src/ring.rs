//! The driver's unsafe code: memory shared with the device.
//!
//! - [`DescRing`]: a ring of typed descriptors in DMA memory, read and written
//!   whole with volatile accesses, never through a Rust reference (the device
//!   writes descriptors back at any time).
//! - [`DmaBytes`]: a byte buffer in DMA memory (admin-queue message buffers),
//!   copied in and out with volatile accesses.
//! - [`MbufSlots`]: which mbuf each descriptor slot holds while the device owns
//!   it, as raw element pointers (an mbuf handed to a device is not a Rust
//!   value: `Mbuf::into_raw` on the way in, `Mbuf::from_raw` on the way out).
//!   It also holds the data path's inner loops ([`MbufSlots::refill_rx`],
//!   [`MbufSlots::rx_clean`], [`MbufSlots::tx_fill`], [`MbufSlots::free_range`]):
//!   they walk descriptors, slots and the caller's batch with raw pointers,
//!   one bounds check per burst instead of three per packet, and move mbufs
//!   in and out of batches in bulk (`MbufBatch::spare_raw` / `take_front_raw`).
//!   The queue modules decide what is valid and what to count; these loops
//!   only move buffers. On a CPU with AVX2 (`MbufSlots::set_vector`) the
//!   receive and transmit loops run four descriptors per step first (`avx2`,
//!   as DPDK's `iavf_rxtx_vec_avx2.c`), taking exactly what the scalar loops
//!   would; tests hold the two to that.
//!
//! Ordering. Descriptor reads load the word the device sets last (receive:
//! qword 1 with DD; admin queue: flags) first, then the rest after an acquire
//! fence, so a descriptor seen done is seen whole (the receive path reads only
//! qwords 1 and 0). Writes store the whole descriptor (receive refills: the
//! two qwords of the read format); the tail doorbell that publishes it goes through
//! [`Bar::write32`](nicpoll::bar::Bar::write32), which orders it after earlier
//! memory writes (a release fence), as DPDK's `rte_write32` does.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use nicpoll::mbuf::{MbufBatch, MbufHeader, RxHeaderTemplate};
use nicpoll::memory::DmaRegion;
use nicpoll::{Mbuf, Mempool};

use crate::adminq::AqDesc;
use crate::desc::{RxDesc, TxDesc};

mod sealed {
    pub trait Sealed {}
}

/// A descriptor type that may live in a [`DescRing`]: plain data of a fixed
/// layout, loaded and stored with volatile accesses in a defined word order.
pub trait DmaDesc: Copy + Default + sealed::Sealed {
    /// Read a descriptor the device may be writing.
    ///
    /// # Safety
    /// `p` must be valid for reads of `Self` and aligned.
    unsafe fn load(p: *const Self) -> Self;

    /// Write a descriptor the device may read.
    ///
    /// # Safety
    /// `p` must be valid for writes of `Self` and aligned.
    unsafe fn store(p: *mut Self, v: Self);
}

impl sealed::Sealed for RxDesc {}
impl DmaDesc for RxDesc {
    #[inline(always)]
    unsafe fn load(p: *const RxDesc) -> RxDesc {
        // SAFETY: the caller guarantees `p` is valid and aligned; the fields
        // are u64 at their natural offsets. Qword 1 (status with DD) first: the
        // device writes the whole descriptor back, so once DD is seen the
        // other words read after the fence are the written-back ones.
        unsafe {
            let qw1 = std::ptr::addr_of!((*p).qw1).read_volatile();
            fence(Ordering::Acquire);
            RxDesc {
                qw0: std::ptr::addr_of!((*p).qw0).read_volatile(),
                qw1,
                qw2: std::ptr::addr_of!((*p).qw2).read_volatile(),
                qw3: std::ptr::addr_of!((*p).qw3).read_volatile(),
            }
        }
    }

    #[inline(always)]
    unsafe fn store(p: *mut RxDesc, v: RxDesc) {
        // SAFETY: the caller guarantees `p` is valid and aligned.
        unsafe { p.write_volatile(v) }
    }
}

impl sealed::Sealed for TxDesc {}
impl DmaDesc for TxDesc {
    #[inline(always)]
    unsafe fn load(p: *const TxDesc) -> TxDesc {
        // SAFETY: as for RxDesc; qword 1 carries DTYPE = DESC_DONE.
        unsafe {
            let qw1 = std::ptr::addr_of!((*p).cmd_type_offset_bsz).read_volatile();
            fence(Ordering::Acquire);
            TxDesc {
                addr: std::ptr::addr_of!((*p).addr).read_volatile(),
                cmd_type_offset_bsz: qw1,
            }
        }
    }

    #[inline(always)]
    unsafe fn store(p: *mut TxDesc, v: TxDesc) {
        // SAFETY: the caller guarantees `p` is valid and aligned.
        unsafe { p.write_volatile(v) }
    }
}

impl sealed::Sealed for AqDesc {}
impl DmaDesc for AqDesc {
    #[inline(always)]
    unsafe fn load(p: *const AqDesc) -> AqDesc {
        // SAFETY: the caller guarantees `p` is valid and aligned. Flags (DD)
        // first, then the rest after an acquire fence.
        unsafe {
            let flags = std::ptr::addr_of!((*p).flags).read_volatile();
            fence(Ordering::Acquire);
            let mut d = p.read_volatile();
            d.flags = flags;
            d
        }
    }

    #[inline(always)]
    unsafe fn store(p: *mut AqDesc, v: AqDesc) {
        // SAFETY: the caller guarantees `p` is valid and aligned.
        unsafe { p.write_volatile(v) }
    }
}

/// A ring of `len` descriptors of type `D` inside a DMA region.
pub struct DescRing<D: DmaDesc> {
    base: NonNull<D>,
    len: u16,
    iova: u64,
    /// Keeps the memory mapped as long as the ring exists.
    _region: Arc<DmaRegion>,
    _d: PhantomData<D>,
}

// SAFETY: a DescRing is the only software user of its descriptors (each ring
// has one owner: a queue's lcore, or the control thread for the admin queue),
// it keeps the region alive, and it reaches the memory only with volatile
// accesses; moving it to another thread moves that ownership.
unsafe impl<D: DmaDesc> Send for DescRing<D> {}

impl<D: DmaDesc> DescRing<D> {
    /// The ring of `len` descriptors at `offset` in `region`. Fails (with the
    /// reason) unless the ring lies inside the region, is aligned to 128 bytes
    /// (the i40e PF stores ring bases in 128-byte units) and has contiguous
    /// IOVAs.
    pub fn new(region: Arc<DmaRegion>, offset: usize, len: u16) -> Result<DescRing<D>, String> {
        let bytes = len as usize * size_of::<D>();
        if len == 0
            || offset
                .checked_add(bytes)
                .is_none_or(|end| end > region.len())
        {
            return Err(format!(
                "a ring of {len} descriptors at offset {offset} does not fit the {}-byte region {}",
                region.len(),
                region.what()
            ));
        }
        let iova = region.iova(offset);
        let addr = region.as_ptr() as usize + offset;
        if !addr.is_multiple_of(128) || !iova.is_multiple_of(128) {
            return Err(format!(
                "ring at offset {offset} of {} is not 128-byte aligned",
                region.what()
            ));
        }
        if !region.is_iova_contiguous(offset, bytes) {
            return Err(format!(
                "the {bytes}-byte ring at offset {offset} of {} spans physically discontiguous \
                 pages; use hugepages (2 MiB or 1 GiB) for device memory",
                region.what()
            ));
        }
        let base = NonNull::new(addr as *mut D).expect("region pointers are not null");
        Ok(DescRing {
            base,
            len,
            iova,
            _region: region,
            _d: PhantomData,
        })
    }

    /// Number of descriptors.
    #[inline(always)]
    pub fn len(&self) -> u16 {
        self.len
    }

    /// Whether the ring has no descriptors (never: `new` refuses).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// IOVA of descriptor 0.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    #[inline(always)]
    fn slot(&self, i: u16) -> *mut D {
        if i >= self.len {
            outside(i, self.len);
        }
        // SAFETY: `i < len` and `new` checked that `len` descriptors fit the
        // region from `base`.
        unsafe { self.base.as_ptr().add(i as usize) }
    }

    /// Read descriptor `i` (volatile; status word first).
    #[inline(always)]
    pub fn read(&self, i: u16) -> D {
        let p = self.slot(i);
        // SAFETY: `slot` returns an in-bounds pointer; the region is mapped
        // while `_region` lives and `new` checked the alignment (128 bytes and
        // the descriptor's own alignment, since region offsets of rings are
        // multiples of it).
        unsafe { D::load(p) }
    }

    /// Write descriptor `i` (volatile).
    #[inline(always)]
    pub fn write(&mut self, i: u16, d: D) {
        let p = self.slot(i);
        // SAFETY: as in `read`; `&mut self` makes this the only software
        // writer (the device may write other descriptors back meanwhile).
        unsafe { D::store(p, d) }
    }

    /// Zero every descriptor.
    pub fn clear(&mut self) {
        for i in 0..self.len {
            self.write(i, D::default());
        }
    }
}

impl DescRing<RxDesc> {
    /// Read the write-back words of receive descriptor `i` that the driver
    /// uses, qword 1 (status, error, length) first and qword 0 (RSS hash,
    /// L2TAG1) after an acquire fence; qwords 2-3 (extended status, flexible
    /// data) are not read and come back zero. Cheaper than [`read`](Self::read)
    /// on the receive path.
    #[inline(always)]
    pub fn read_wb(&self, i: u16) -> RxDesc {
        let p = self.slot(i);
        // SAFETY: as in `read`: `slot` is in bounds, the region mapped and the
        // descriptor aligned.
        unsafe { rx_wb(p) }
    }

    /// Whether the device has written receive descriptor `i` back (DD): one
    /// load of its status word.
    #[inline(always)]
    pub fn is_done(&self, i: u16) -> bool {
        let p = self.slot(i);
        // SAFETY: as in `read`.
        let qw1 = unsafe { std::ptr::addr_of!((*p).qw1).read_volatile() };
        RxDesc {
            qw0: 0,
            qw1,
            qw2: 0,
            qw3: 0,
        }
        .is_done()
    }

    /// Hand buffer `iova` to the device in descriptor `i` (read format: packet
    /// buffer address, header buffer address 0, which also clears DD). Qwords
    /// 2-3 are reserved in the read format and left as they are, as DPDK and
    /// Linux do.
    #[inline(always)]
    pub fn arm(&mut self, i: u16, iova: u64) {
        let p = self.slot(i);
        // SAFETY: as in `write`.
        unsafe { rx_arm(p, iova) }
    }
}

/// # Safety
/// `p` must be valid for reads of an `RxDesc` and aligned.
#[inline(always)]
unsafe fn rx_wb(p: *const RxDesc) -> RxDesc {
    // SAFETY: the caller's guarantee; status word first, as in `RxDesc::load`.
    unsafe {
        let qw1 = std::ptr::addr_of!((*p).qw1).read_volatile();
        fence(Ordering::Acquire);
        RxDesc {
            qw0: std::ptr::addr_of!((*p).qw0).read_volatile(),
            qw1,
            qw2: 0,
            qw3: 0,
        }
    }
}

/// As [`rx_wb`], for the receive loops of hashed frames: qword 1, then (after
/// the acquire fence) only the RSS hash field of qword 0 (its upper 32 bits,
/// bytes 4-7 in memory), one 32-bit load; the returned descriptor's qword 0
/// is zero.
///
/// # Safety
/// `p` must be valid for reads of an `RxDesc` and aligned.
#[inline(always)]
unsafe fn rx_wb_rss(p: *const RxDesc) -> (RxDesc, u32) {
    // SAFETY: the caller's guarantee; bytes 4-7 of the 32-aligned descriptor
    // are a 4-aligned u32 (little-endian, as the whole descriptor).
    unsafe {
        let qw1 = std::ptr::addr_of!((*p).qw1).read_volatile();
        fence(Ordering::Acquire);
        let hash = (p as *const u32).add(1).read_volatile();
        (
            RxDesc {
                qw0: 0,
                qw1,
                qw2: 0,
                qw3: 0,
            },
            u32::from_le(hash),
        )
    }
}

/// Free an mbuf off the fast path (a call the hot loops keep out of line).
#[cold]
#[inline(never)]
pub fn discard(m: Mbuf) {
    drop(m);
}

/// # Safety
/// `p` must be valid for writes of a `TxDesc` and aligned.
#[inline(always)]
unsafe fn tx_put(p: *mut TxDesc, d: TxDesc) {
    // SAFETY: the caller's guarantee.
    unsafe {
        std::ptr::addr_of_mut!((*p).addr).write_volatile(d.addr);
        std::ptr::addr_of_mut!((*p).cmd_type_offset_bsz).write_volatile(d.cmd_type_offset_bsz);
    }
}

/// # Safety
/// `p` must be valid for writes of an `RxDesc` and aligned.
#[inline(always)]
unsafe fn rx_arm(p: *mut RxDesc, iova: u64) {
    let d = RxDesc::read_format(iova);
    // SAFETY: the caller's guarantee.
    unsafe {
        std::ptr::addr_of_mut!((*p).qw0).write_volatile(d.qw0);
        std::ptr::addr_of_mut!((*p).qw1).write_volatile(d.qw1);
    }
}

impl DescRing<TxDesc> {
    /// Write transmit descriptor `i` as two volatile qword stores (a whole
    /// 16-byte volatile store goes through the stack).
    #[inline(always)]
    pub fn put(&mut self, i: u16, d: TxDesc) {
        let p = self.slot(i);
        // SAFETY: as in `write`.
        unsafe { tx_put(p, d) }
    }

    /// Set RS on descriptor `i`, written by the driver and not yet handed to
    /// the device (its tail has not passed it).
    #[inline(always)]
    pub fn set_rs(&mut self, i: u16) {
        let p = self.slot(i);
        // SAFETY: as in `read` and `write`; the device does not own it yet.
        unsafe {
            let d = TxDesc {
                addr: std::ptr::addr_of!((*p).addr).read_volatile(),
                cmd_type_offset_bsz: std::ptr::addr_of!((*p).cmd_type_offset_bsz).read_volatile(),
            };
            tx_put(p, d.with_rs());
        }
    }

    /// Read the status qword (DTYPE, written back as DESC_DONE) of descriptor `i`.
    #[inline(always)]
    pub fn read_status(&self, i: u16) -> TxDesc {
        let p = self.slot(i);
        // SAFETY: as in `read`.
        let qw1 = unsafe { std::ptr::addr_of!((*p).cmd_type_offset_bsz).read_volatile() };
        fence(Ordering::Acquire);
        TxDesc {
            addr: 0,
            cmd_type_offset_bsz: qw1,
        }
    }
}

/// The panic of an index outside a ring, out of line (the check inline costs
/// a compare and a branch, and keeps no register for the message).
#[cold]
#[inline(never)]
#[track_caller]
fn outside(i: u16, len: u16) -> ! {
    panic!("descriptor index {i} outside a ring of {len}")
}

/// A byte buffer in DMA memory (an admin-queue message buffer).
pub struct DmaBytes {
    base: NonNull<u8>,
    len: usize,
    iova: u64,
    _region: Arc<DmaRegion>,
}

// SAFETY: as for DescRing: one owner, volatile access only, region kept alive.
unsafe impl Send for DmaBytes {}

impl DmaBytes {
    /// `len` bytes at `offset` of `region`; they must lie inside it and have
    /// contiguous IOVAs.
    pub fn new(region: Arc<DmaRegion>, offset: usize, len: usize) -> Result<DmaBytes, String> {
        if !region.is_iova_contiguous(offset, len) || len == 0 {
            return Err(format!(
                "a {len}-byte buffer at offset {offset} of {} is outside it or spans \
                 discontiguous pages",
                region.what()
            ));
        }
        let iova = region.iova(offset);
        let base = NonNull::new((region.as_ptr() as usize + offset) as *mut u8).expect("not null");
        Ok(DmaBytes {
            base,
            len,
            iova,
            _region: region,
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no bytes (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// IOVA of the first byte.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Copy `data` to the start of the buffer (at most `len` bytes).
    pub fn write(&mut self, data: &[u8]) {
        let n = data.len().min(self.len);
        for (i, b) in data[..n].iter().enumerate() {
            // SAFETY: `i < n <= len`, inside the buffer `new` checked.
            unsafe { self.base.as_ptr().add(i).write_volatile(*b) }
        }
    }

    /// Copy the first `out.len()` bytes (at most `len`) out of the buffer.
    pub fn read(&self, out: &mut [u8]) {
        let n = out.len().min(self.len);
        fence(Ordering::Acquire);
        for (i, b) in out[..n].iter_mut().enumerate() {
            // SAFETY: `i < n <= len`, inside the buffer.
            *b = unsafe { self.base.as_ptr().add(i).read_volatile() };
        }
    }
}

/// Which mbuf each descriptor slot holds, as raw element pointers (0: none).
///
/// While a slot holds an mbuf, the device may read or write its buffer: the
/// queue code takes it out ([`take`](Self::take)) only once the device is done
/// with it (DD seen, or the queue stopped). Dropping the table returns every
/// held mbuf to its pool, so it must only be dropped once the device has
/// stopped using the ring (see the port's parking of queues in `port.rs`).
#[derive(Debug)]
pub struct MbufSlots {
    slots: Box<[usize]>,
    /// A length every held mbuf has room for: the smallest data room of the
    /// pools [`refill_rx`](Self::refill_rx) filled from (it prepares each
    /// header with the default data offset, so its capacity is the pool's data
    /// room); 0 once a slot was filled otherwise (`fill`, `put`: headers not
    /// prepared), for good: a table filled that way (none of iavf's receive
    /// rings) always takes the slow path. [`rx_clean`](Self::rx_clean) sets
    /// lengths up to it without a check per packet.
    rx_room: usize,
    /// The loops run their AVX2 versions (see [`set_vector`](Self::set_vector)).
    avx2: bool,
}

/// Whether this CPU runs the AVX2 loops ([`MbufSlots::set_vector`]).
pub fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl MbufSlots {
    /// `n` empty slots; scalar loops until [`set_vector`](Self::set_vector).
    pub fn new(n: usize) -> MbufSlots {
        MbufSlots {
            slots: vec![0usize; n].into_boxed_slice(),
            rx_room: usize::MAX,
            avx2: false,
        }
    }

    /// Run the receive and transmit loops four descriptors at a time with
    /// AVX2 if `on` and the CPU has it ([`cpu_has_avx2`]), one or two at a
    /// time otherwise (DPDK picks its vector paths the same way; its EAL's
    /// `--force-max-simd-bitwidth=64` is our `simd=0`). Both take the same
    /// descriptors and write the same headers. Returns whether AVX2 is used.
    pub fn set_vector(&mut self, on: bool) -> bool {
        self.avx2 = on && cpu_has_avx2();
        self.avx2
    }

    /// What the loops run: "AVX2 Vector" or "Scalar" (DPDK's burst mode
    /// names).
    pub fn burst_mode(&self) -> &'static str {
        if self.avx2 { "AVX2 Vector" } else { "Scalar" }
    }

    /// Number of slots.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether slot `i` holds an mbuf.
    #[inline(always)]
    pub fn is_held(&self, i: usize) -> bool {
        self.slots[i] != 0
    }

    /// Fill the `count` empty slots from `start` (no wrap) with fresh buffers
    /// from `pool`, in one bulk get; false (nothing taken) if the pool is short.
    #[inline]
    pub fn fill(&mut self, pool: &Mempool, start: usize, count: usize) -> bool {
        self.rx_room = 0;
        let s = &mut self.slots[start..start + count];
        debug_assert!(s.iter().all(|&p| p == 0), "refilling a held slot");
        // SAFETY: the elements become owned by this table, which gives each
        // back exactly once (take, free or drop).
        unsafe { pool.alloc_raw(s) }
    }

    /// The IOVA where a device must write a frame into slot `i`'s buffer: the
    /// element's fixed data offset (`buf_iova + default_headroom`). Panics
    /// if the slot is empty.
    #[inline(always)]
    pub fn rx_iova(&self, i: usize) -> u64 {
        let p = self.slots[i];
        assert!(p != 0, "slot {i} holds no mbuf");
        // SAFETY: a held slot is an element this table owns; the temporary Mbuf
        // is turned back into the raw pointer without being dropped.
        let m = unsafe { Mbuf::from_raw(NonNull::new_unchecked(p as *mut MbufHeader)) };
        let iova = m.buf_iova() + m.default_headroom() as u64;
        let _ = m.into_raw();
        iova
    }

    /// Take the mbuf out of slot `i` (the device is done with it).
    #[inline(always)]
    pub fn take(&mut self, i: usize) -> Option<Mbuf> {
        let p = std::mem::take(&mut self.slots[i]);
        // SAFETY: a non-zero slot is an element this table owned; ownership
        // moves to the returned Mbuf and the slot is now empty.
        NonNull::new(p as *mut MbufHeader).map(|h| unsafe { Mbuf::from_raw(h) })
    }

    /// Put an mbuf into empty slot `i` (handing it to the device). Returns the
    /// mbuf if the slot is not empty.
    #[inline(always)]
    pub fn put(&mut self, i: usize, m: Mbuf) -> Result<(), Mbuf> {
        if self.slots[i] != 0 {
            return Err(m);
        }
        self.rx_room = 0;
        self.slots[i] = m.into_raw().as_ptr() as usize;
        Ok(())
    }

    /// Receive-ring refill: fill the `count` empty slots from `start` (no
    /// wrap) with fresh buffers from `pool` in one bulk get, prepare each
    /// one's header from `tmpl` (the receive path then writes only what the
    /// device reports), and hand each to the device in the descriptor of the
    /// same index of `ring` (read format, at the element's fixed data offset,
    /// see [`rx_iova`](Self::rx_iova)). False, and nothing taken or written,
    /// if the pool is short.
    #[inline(always)]
    pub fn refill_rx(
        &mut self,
        ring: &mut DescRing<RxDesc>,
        pool: &Mempool,
        start: usize,
        count: usize,
        tmpl: &RxHeaderTemplate,
    ) -> bool {
        let end = start + count;
        assert!(
            end <= self.slots.len() && end <= ring.len as usize,
            "refill of [{start}, {end}) outside the ring"
        );
        let s = &mut self.slots[start..end];
        debug_assert!(s.iter().all(|&p| p == 0), "refilling a held slot");
        // SAFETY: the elements become owned by this table, which gives each
        // back exactly once (take, free or drop).
        if !unsafe { pool.alloc_raw(s) } {
            return false;
        }
        // SAFETY: `start <= end <= ring.len` (one past the end at most).
        let base = unsafe { ring.base.as_ptr().add(start) };
        // Two buffers per iteration (half the loop overhead), then the odd one.
        let pairs = s.chunks_exact(2);
        let odd = pairs.remainder();
        let mut k = 0;
        for pair in pairs {
            // SAFETY: each `p` is an element the pool just handed out (not
            // null), owned by this table, no reference to it alive. The
            // descriptors `start + k`, `start + k + 1` are below `end <=
            // ring.len`, checked above.
            unsafe {
                let a = tmpl.apply(NonNull::new_unchecked(pair[0] as *mut MbufHeader));
                let b = tmpl.apply(NonNull::new_unchecked(pair[1] as *mut MbufHeader));
                rx_arm(base.add(k), a);
                rx_arm(base.add(k + 1), b);
            }
            k += 2;
        }
        if let [p] = *odd {
            // SAFETY: as above, for descriptor `start + k = end - 1`.
            unsafe {
                let iova = tmpl.apply(NonNull::new_unchecked(p as *mut MbufHeader));
                rx_arm(base.add(k), iova);
            }
        }
        // Prepared headers: capacity = the pool's data room.
        self.rx_room = self.rx_room.min(pool.data_room());
        true
    }

    /// The receive fast loop: from descriptor `start`, at most `max`
    /// descriptors (no wrap), while each is a clean whole frame
    /// ([`RxDesc::is_clean_eop`]) of a length in `lo..=lo + span`, set the
    /// length and RSS hash of its slot's mbuf (the rest of the header was
    /// prepared at refill, see [`refill_rx`](Self::refill_rx)) and move it to
    /// `out`'s spare slots (`out` must have room for `max`). Stops at the first
    /// descriptor not written back, or at one that is not such a frame (or
    /// whose slot holds no mbuf), leaving it for the caller's slow path.
    /// Returns (descriptors taken = mbufs delivered, their bytes, whether the
    /// caller must look at the descriptor after them itself: it stopped at a
    /// written-back descriptor it left, or the table's buffers were not
    /// prepared by [`refill_rx`](Self::refill_rx) and it took none).
    #[inline(always)]
    pub fn rx_clean(
        &mut self,
        ring: &DescRing<RxDesc>,
        start: usize,
        max: usize,
        lo: usize,
        span: usize,
        out: &mut MbufBatch,
    ) -> (usize, u64, bool) {
        let end = start + max;
        assert!(
            end <= self.slots.len() && end <= ring.len as usize,
            "receive scan of [{start}, {end}) outside the ring"
        );
        // Lengths up to `rx_room` fit every held mbuf (see `rx_room`): the
        // range check below is the capacity check too. If `lo` itself does
        // not fit, nothing is taken here: every descriptor goes to the
        // caller's slow path.
        if lo > self.rx_room {
            return (0, 0, true);
        }
        let span = span.min(self.rx_room - lo);
        let slots = self.slots[start..end].as_mut_ptr();
        let dst = out.spare_raw(max).as_mut_ptr();
        // SAFETY: `start <= end <= ring.len`.
        let base = unsafe { ring.base.as_ptr().add(start) };
        let mut k = 0;
        let mut bytes = 0u64;
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 (`set_vector`); `max` descriptors from
            // `base`, slots from `slots` and spare slots from `dst` are in
            // bounds (checked above), the held slots' elements are owned by
            // this table with prepared headers (`lo + span <= rx_room`).
            (k, bytes) = unsafe { avx2::rx_clean(base, slots, dst, max, lo, span) };
        }
        // The common case with RSS on: clean whole frames with a hash, which
        // and whose flag are stored without a test per packet. A clean frame
        // without a hash goes on in the general loop below.
        // Two at a time while both pass (half the loop overhead) ...
        // `k < max - 1`, i.e. `k + 1 < max` (none if `max` is 0 or 1).
        let last = max.saturating_sub(1);
        while k < last {
            // SAFETY: `k + 1 < max`: as in the general loop below, for
            // descriptors, slots and spare slots `k` and `k + 1`.
            unsafe {
                let (d0, hash0) = rx_wb_rss(base.add(k));
                let (d1, hash1) = rx_wb_rss(base.add(k + 1));
                if !(d0.is_clean_eop_rss() & d1.is_clean_eop_rss()) {
                    break;
                }
                let (l0, l1) = (d0.pkt_len_unsplit() as usize, d1.pkt_len_unsplit() as usize);
                // Both in range if the or of `len - lo` is: at least the
                // larger, so a pair refused here may still be fine (the loops
                // after decide).
                if l0.wrapping_sub(lo) | l1.wrapping_sub(lo) > span {
                    break;
                }
                let (r0, r1) = (*slots.add(k), *slots.add(k + 1));
                let (Some(h0), Some(h1)) = (
                    NonNull::new(r0 as *mut MbufHeader),
                    NonNull::new(r1 as *mut MbufHeader),
                ) else {
                    break;
                };
                // As below, for both.
                let mut m0 = std::mem::ManuallyDrop::new(Mbuf::from_raw(h0));
                let mut m1 = std::mem::ManuallyDrop::new(Mbuf::from_raw(h1));
                m0.set_len_unchecked(l0);
                m0.set_rss_hash(hash0);
                // All the flags (the refill leaves them to us).
                m0.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                m1.set_len_unchecked(l1);
                m1.set_rss_hash(hash1);
                m1.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                *slots.add(k) = 0;
                *slots.add(k + 1) = 0;
                dst.add(k).write(r0);
                dst.add(k + 1).write(r1);
                bytes += (l0 + l1) as u64;
            }
            k += 2;
        }
        // ... then one at a time.
        let rss_stop = loop {
            if k == max {
                break Some(false);
            }
            // SAFETY: as in the general loop below.
            unsafe {
                let (d, hash) = rx_wb_rss(base.add(k));
                if !d.is_clean_eop_rss() {
                    break if d.is_clean_eop() {
                        None
                    } else {
                        Some(d.is_done())
                    };
                }
                let len = d.pkt_len_unsplit() as usize;
                if len.wrapping_sub(lo) > span {
                    break Some(true);
                }
                let raw = *slots.add(k);
                let Some(h) = NonNull::new(raw as *mut MbufHeader) else {
                    break Some(true);
                };
                // As below.
                let mut m = std::mem::ManuallyDrop::new(Mbuf::from_raw(h));
                m.set_len_unchecked(len);
                m.set_rss_hash(hash);
                // All the flags (the refill leaves them to us).
                m.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                *slots.add(k) = 0;
                dst.add(k).write(raw);
                bytes += len as u64;
            }
            k += 1;
        };
        let unusual = loop {
            if let Some(u) = rss_stop {
                break u;
            }
            if k == max {
                break false;
            }
            // SAFETY: `k < max`: descriptor `start + k < end <= ring.len` is
            // in bounds, mapped, aligned; so is slot `start + k`, and spare
            // slot `k` of `out` (`max` long).
            unsafe {
                let d = rx_wb(base.add(k));
                if !d.is_clean_eop() {
                    break d.is_done();
                }
                // In range, and no header-split bits set.
                let len = d.pkt_len_unsplit() as usize;
                if len.wrapping_sub(lo) > span {
                    break true;
                }
                let raw = *slots.add(k);
                let Some(h) = NonNull::new(raw as *mut MbufHeader) else {
                    break true;
                };
                // A non-zero slot is an element this table owns; the temporary
                // Mbuf is not dropped: the element stays in the slot or moves
                // to `out` below.
                let mut m = std::mem::ManuallyDrop::new(Mbuf::from_raw(h));
                // `lo <= len <= lo + span <= rx_room <= m.capacity()`.
                m.set_len_unchecked(len);
                // The refill leaves the flags to the receive path.
                if let Some(hash) = d.rss_hash() {
                    m.set_rss_hash(hash);
                    m.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                } else {
                    m.set_ol_flags(0);
                }
                *slots.add(k) = 0;
                dst.add(k).write(raw);
                bytes += len as u64;
            }
            k += 1;
        };
        // SAFETY: the first `k` spare slots hold the elements taken from the
        // slots, which this table owned and no longer holds.
        unsafe { out.commit_raw(k) };
        (k, bytes, unusual)
    }

    /// The transmit fast loop: take up to `max` mbufs from the front of
    /// `pkts` (descriptors `[start, start + max)` free, no wrap) and hand each
    /// to the device: one data descriptor for the whole packet (EOP, ICRC, no
    /// RS) at the next index, the mbuf in that slot; a packet whose length is
    /// not in `1..=max_len` (at most [`TX_MAX_BUF`](crate::desc::TX_MAX_BUF))
    /// cannot be sent and is freed. Returns (descriptors written, mbufs taken
    /// from `pkts`, bytes written).
    #[inline(always)]
    pub fn tx_fill(
        &mut self,
        ring: &mut DescRing<TxDesc>,
        start: usize,
        max: usize,
        pkts: &mut MbufBatch,
        max_len: usize,
    ) -> (usize, usize, u64) {
        let max_len = max_len.min(crate::desc::TX_MAX_BUF);
        let describe = |m: &Mbuf| {
            let len = m.len();
            (len.wrapping_sub(1) < max_len)
                .then(|| (TxDesc::packet_fitting(m.data_iova(), len), len))
        };
        let end = start + max;
        assert!(
            end <= self.slots.len() && end <= ring.len as usize,
            "transmit of [{start}, {end}) outside the ring"
        );
        let taken = pkts.take_front_raw(max.min(pkts.len()));
        let count = taken.len();
        let src = taken.as_ptr();
        // Packet `j` goes to descriptor and slot `start + j - refused`: in a
        // run without a refused packet both move with `j`, so the run loop
        // uses one index on bases shifted back by `refused` (only ever indexed
        // at `j >= refused`, i.e. at or after `start`).
        let desc0 = ring.base.as_ptr().wrapping_add(start);
        let slot0 = self.slots.as_mut_ptr().wrapping_add(start);
        let (mut j, mut refused, mut bytes) = (0usize, 0usize, 0u64);
        while j < count {
            let dbase = desc0.wrapping_sub(refused);
            let sbase = slot0.wrapping_sub(refused);
            #[cfg(target_arch = "x86_64")]
            if self.avx2 && max_len > 0 {
                // SAFETY: the CPU has AVX2 (`set_vector`). Packets `j..count`
                // are in `taken`, owned by us; descriptor and slot `start + j
                // - refused + i` for `i < count - j` are below `end <=
                // ring.len` (as in the loops below), the slots empty by the
                // caller's accounting; `1 <= max_len <= TX_MAX_BUF`.
                let (n, b) = unsafe {
                    avx2::tx_fill(
                        src.add(j),
                        dbase.wrapping_add(j),
                        sbase.wrapping_add(j),
                        count - j,
                        max_len,
                    )
                };
                j += n;
                bytes += b;
            }
            // The run: no call, nothing dropped; two packets per iteration
            // while both lengths pass (tested on the or of `len - 1`: at
            // least the larger, so a pair it refuses may still be fine and
            // the loop after decides) ...
            // (`count > j >= 0` here.)
            let last = count - 1;
            while j < last {
                // SAFETY: `j + 1 < count`: both are in `taken`, given to us
                // by `take_front_raw`; the temporary Mbufs are not dropped
                // (they move to the slots below, or stay for the loop after).
                let (p, q) = unsafe { (*src.add(j), *src.add(j + 1)) };
                let (mp, mq) = unsafe {
                    (
                        std::mem::ManuallyDrop::new(Mbuf::from_raw(NonNull::new_unchecked(
                            p as *mut MbufHeader,
                        ))),
                        std::mem::ManuallyDrop::new(Mbuf::from_raw(NonNull::new_unchecked(
                            q as *mut MbufHeader,
                        ))),
                    )
                };
                let (lp, lq) = (mp.len(), mq.len());
                if lp.wrapping_sub(1) | lq.wrapping_sub(1) >= max_len {
                    break;
                }
                // Both in `1..=max_len`, `max_len <= TX_MAX_BUF`.
                // SAFETY: as in the loop below, for `j` and `j + 1 < count`.
                unsafe {
                    tx_put(
                        dbase.wrapping_add(j),
                        TxDesc::packet_fitting(mp.data_iova(), lp),
                    );
                    tx_put(
                        dbase.wrapping_add(j + 1),
                        TxDesc::packet_fitting(mq.data_iova(), lq),
                    );
                    let slot = sbase.wrapping_add(j);
                    debug_assert_eq!(*slot, 0, "transmit slot still held");
                    debug_assert_eq!(*slot.add(1), 0, "transmit slot still held");
                    *slot = p;
                    *slot.add(1) = q;
                }
                bytes += (lp + lq) as u64;
                j += 2;
            }
            // ... and one at a time.
            while j < count {
                // SAFETY: `j < count`: `taken` holds `count` elements, which
                // `take_front_raw` gave us; the temporary Mbuf is not dropped
                // (it moves to the slot below).
                let p = unsafe { *src.add(j) };
                let m = std::mem::ManuallyDrop::new(unsafe {
                    Mbuf::from_raw(NonNull::new_unchecked(p as *mut MbufHeader))
                });
                let Some((d, len)) = describe(&m) else { break };
                // SAFETY: `dbase + j` and `sbase + j` are descriptor and slot
                // `start + j - refused` with `j - refused < count <= max`, so
                // below `end <= ring.len`: in bounds (the descriptor mapped,
                // aligned, and not read by the device before the tail moves).
                unsafe {
                    tx_put(dbase.wrapping_add(j), d);
                    let slot = sbase.wrapping_add(j);
                    // An empty slot by the caller's accounting; were it not,
                    // its mbuf would leak (never be freed twice).
                    debug_assert_eq!(*slot, 0, "transmit slot still held");
                    *slot = p;
                }
                bytes += len as u64;
                j += 1;
            }
            if j < count {
                // SAFETY: as above; this one is not sent: ours to free.
                discard(unsafe {
                    Mbuf::from_raw(NonNull::new_unchecked(*src.add(j) as *mut MbufHeader))
                });
                refused += 1;
                j += 1;
            }
        }
        let used = count - refused;
        (used, count, bytes)
    }

    /// Transmit-ring cleanup: take the mbufs of slots `[start, start + count)`
    /// (the device is done with them) and give them back to their pools, in
    /// one bulk put straight from the slots when all are held and from one
    /// pool ([`nicpoll::mbuf::free_raw`]). Returns how many slots held one.
    #[inline]
    pub fn free_range(&mut self, start: usize, count: usize) -> usize {
        let s = &mut self.slots[start..start + count];
        // SAFETY: every non-zero slot holds an element this table owns; the
        // slots are emptied below, so ownership moves to the pools.
        let n = unsafe { nicpoll::mbuf::free_raw(s) };
        s.fill(0);
        n
    }

    /// Move every held mbuf to the front slots, keeping their order; returns
    /// how many are held. Only while the device does not use the ring.
    pub fn compact(&mut self) -> usize {
        let mut w = 0;
        for r in 0..self.slots.len() {
            if self.slots[r] != 0 {
                self.slots.swap(w, r);
                w += 1;
            }
        }
        w
    }

    /// Return every held mbuf to its pool; returns how many.
    pub fn free_all(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if let Some(m) = self.take(i) {
                drop(m);
                n += 1;
            }
        }
        n
    }

    /// How many slots hold an mbuf.
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|&&p| p != 0).count()
    }
}

impl Drop for MbufSlots {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// Test support: a device's view of DMA memory by IOVA, for the fake PF of the
/// admin-queue tests (the real device model lives in `sim/`).
#[cfg(test)]
pub(crate) mod fake {
    use std::sync::Mutex;

    use nicpoll::memory::DmaRegion;

    use crate::dma::DmaMap;

    /// Remembers every region the driver maps, as (iova, va, len), and reads
    /// and writes them by IOVA. Tests keep the port (which owns the regions)
    /// alive while a responder uses this.
    #[derive(Default)]
    pub struct FakeIommu {
        regions: Mutex<Vec<(u64, usize, usize)>>,
    }

    impl DmaMap for FakeIommu {
        fn map(&self, region: &DmaRegion) -> nicpoll::Result<()> {
            self.regions.lock().unwrap().push((
                region.iova(0),
                region.as_ptr() as usize,
                region.len(),
            ));
            Ok(())
        }
    }

    impl FakeIommu {
        fn translate(&self, iova: u64, len: usize) -> *mut u8 {
            let r = self.regions.lock().unwrap();
            let &(base, va, _) = r
                .iter()
                .find(|&&(b, _, l)| iova >= b && iova + len as u64 <= b + l as u64)
                .unwrap_or_else(|| panic!("IOVA {iova:#x}+{len} is not mapped"));
            (va + (iova - base) as usize) as *mut u8
        }

        /// Read `out.len()` bytes at `iova`.
        pub fn read(&self, iova: u64, out: &mut [u8]) {
            let p = self.translate(iova, out.len());
            for (i, b) in out.iter_mut().enumerate() {
                // SAFETY: `translate` checked the range lies in a mapped region,
                // which the test keeps alive.
                *b = unsafe { p.add(i).read_volatile() };
            }
        }

        /// Write the 8-byte-aligned `v` at `iova` in one store, as a device
        /// writes a descriptor's status word.
        pub fn write_u64(&self, iova: u64, v: u64) {
            let p = self.translate(iova, 8);
            assert!(
                (p as usize).is_multiple_of(8),
                "unaligned qword at {iova:#x}"
            );
            // SAFETY: as in `read`; aligned.
            unsafe { (p as *mut u64).write_volatile(v.to_le()) }
        }

        /// Write `data` at `iova`.
        pub fn write(&self, iova: u64, data: &[u8]) {
            let p = self.translate(iova, data.len());
            for (i, b) in data.iter().enumerate() {
                // SAFETY: as in `read`.
                unsafe { p.add(i).write_volatile(*b) }
            }
        }
    }
}

/// The AVX2 loops: four descriptors per step, as DPDK's `iavf_rxtx_vec_avx2.c`
/// does, each taking exactly what the scalar loops would.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::sync::atomic::{Ordering, fence};

    use nicpoll::mbuf::{flags, header_offsets as off};

    use crate::desc::{
        RX_CLEAN_RSS_MASK, RX_CLEAN_RSS_WANT, RX_PLEN_SHIFT, RxDesc, TX_BSZ_SHIFT, TX_MAX_BUF,
        TX_WHOLE_PACKET_QW1, TxDesc,
    };

    const _: () = assert!(std::mem::size_of::<RxDesc>() == 32);
    const _: () = assert!(std::mem::size_of::<TxDesc>() == 16);

    /// [`MbufSlots::tx_fill`](super::MbufSlots::tx_fill)'s run loop four
    /// packets at a time: from `src`, groups of four whose lengths are all
    /// in `1..=max_len`, each packet one data descriptor (its data IOVA,
    /// EOP, ICRC, its length) at `desc[i]` and its pointer in `slots[i]`.
    /// Returns (packets taken, a multiple of 4 and at most `max`; their
    /// bytes). The first group with a length out of range is left whole.
    ///
    /// # Safety
    /// The CPU has AVX2. `src` holds `max` mbuf elements the caller owns
    /// (ownership of those taken moves to the slots); `desc` points to `max`
    /// writable ring descriptors (16-aligned) the device does not read before
    /// the next tail write, `slots` to `max` writable empty slots;
    /// `1 <= max_len <= TX_MAX_BUF`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tx_fill(
        src: *const usize,
        desc: *mut TxDesc,
        slots: *mut usize,
        max: usize,
        max_len: usize,
    ) -> (usize, u64) {
        debug_assert!((1..=TX_MAX_BUF).contains(&max_len));
        // One 16-byte load at `buf_iova` gets [buf_iova, data_off | data_len
        // << 16 | port << 32 | queue << 48].
        const _: () = assert!(off::DATA_OFF == off::BUF_IOVA + 8);
        const _: () = assert!(off::DATA_LEN == off::DATA_OFF + 2);
        // Per 128-bit lane (one packet): the data offset (bytes 8-9) moved to
        // bytes 0-1 with the rest zeroed (added to the IOVA in the low qword),
        // and the length moved to the descriptor's size field (bit 34) by a
        // shift of 18 and a mask, in the high qword.
        let off_down = _mm256_setr_epi8(
            8, 9, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
            8, 9, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
        );
        let len_mask = _mm256_set_epi64x(0xFFFF << TX_BSZ_SHIFT, 0, 0xFFFF << TX_BSZ_SHIFT, 0);
        let qw1 = _mm256_set1_epi64x(TX_WHOLE_PACKET_QW1 as i64);
        // `len - 1 <= max_len - 1` as unsigned numbers, on `len << 34` and
        // with the sign bit flipped on both sides: a signed compare.
        let one = 1i64 << TX_BSZ_SHIFT;
        let bias = _mm256_set1_epi64x(i64::MIN.wrapping_sub(one));
        let limit = _mm256_set1_epi64x((((max_len - 1) as i64) << TX_BSZ_SHIFT) ^ i64::MIN);
        let mut lens = _mm256_setzero_si256();
        let end = max & !3;
        let mut k = 0;
        while k < end {
            // SAFETY: `k + 3 < max`: `src`, `desc` and `slots` entries
            // `k..k + 4` are in bounds (the caller's contract); each element's
            // header is ours to read (16 bytes from `buf_iova`, inside it).
            unsafe {
                let p = src.add(k);
                let held = _mm256_loadu_si256(p as *const __m256i);
                let h = |i: usize| (*p.add(i) as *const u8).add(off::BUF_IOVA) as *const __m128i;
                let h01 = _mm256_loadu2_m128i(h(1), h(0));
                let h23 = _mm256_loadu2_m128i(h(3), h(2));
                let l01 = _mm256_and_si256(_mm256_slli_epi64::<18>(h01), len_mask);
                let l23 = _mm256_and_si256(_mm256_slli_epi64::<18>(h23), len_mask);
                // The four lengths side by side (packets 0, 2, 1, 3).
                let l4 = _mm256_unpackhi_epi64(l01, l23);
                let bad = _mm256_cmpgt_epi64(_mm256_add_epi64(l4, bias), limit);
                if _mm256_testz_si256(bad, bad) == 0 {
                    break;
                }
                // Address: buf_iova + data_off; qword 1: command and length.
                let a01 = _mm256_add_epi64(h01, _mm256_shuffle_epi8(h01, off_down));
                let a23 = _mm256_add_epi64(h23, _mm256_shuffle_epi8(h23, off_down));
                let d01 = _mm256_blend_epi32::<0b1100_1100>(a01, _mm256_or_si256(l01, qw1));
                let d23 = _mm256_blend_epi32::<0b1100_1100>(a23, _mm256_or_si256(l23, qw1));
                // One volatile 16-byte store per descriptor (they are only
                // 16-aligned).
                let d = desc.add(k) as *mut __m128i;
                d.write_volatile(_mm256_castsi256_si128(d01));
                d.add(1).write_volatile(_mm256_extracti128_si256::<1>(d01));
                d.add(2).write_volatile(_mm256_castsi256_si128(d23));
                d.add(3).write_volatile(_mm256_extracti128_si256::<1>(d23));
                debug_assert!(
                    (0..4).all(|i| *slots.add(k + i) == 0),
                    "transmit slot still held"
                );
                _mm256_storeu_si256(slots.add(k) as *mut __m256i, held);
                lens = _mm256_add_epi64(lens, l4);
            }
            k += 4;
        }
        // The lane sums, at bit 34: below 2^60 (at most 4096 packets, of less
        // than 2^14 bytes).
        let s = _mm_add_epi64(
            _mm256_castsi256_si128(lens),
            _mm256_extracti128_si256::<1>(lens),
        );
        let sum = (_mm_cvtsi128_si64(s) as u64).wrapping_add(_mm_extract_epi64::<1>(s) as u64);
        (k, sum >> TX_BSZ_SHIFT)
    }

    /// A received frame's header fields (the refill prepared the rest): its
    /// length and hash, each stored straight from a vector lane (the
    /// extracts become `vpextrw`/`vpextrd` to memory), and its flags whole.
    ///
    /// # Safety
    /// `hdr` is the header of an element the caller owns (no reference to it
    /// alive); `len` fits its data room.
    #[inline(always)]
    unsafe fn received(hdr: usize, len: i32, hash: i32) {
        let h = hdr as *mut u8;
        // SAFETY: the caller's guarantee; the fields lie at their (aligned)
        // offsets in the 64-aligned header.
        unsafe {
            h.add(off::DATA_LEN).cast::<u16>().write(len as u16);
            h.add(off::RSS_HASH).cast::<u32>().write(hash as u32);
            h.add(off::OL_FLAGS).cast::<u64>().write(flags::RX_RSS_HASH);
        }
    }

    /// [`MbufSlots::rx_clean`](super::MbufSlots::rx_clean)'s hashed loop
    /// four at a time: from descriptor 0 at `base`, groups of four while all
    /// four are clean whole frames with a hash ([`RxDesc::is_clean_eop_rss`]),
    /// of lengths in `lo..=lo + span`, in held slots: each mbuf gets its
    /// length, hash and flags, moves from `slots[k]` to `dst[k]`, and its slot
    /// is emptied. Returns (descriptors taken, a multiple of 4 and at most
    /// `max`; their bytes). The first group that fails is left whole.
    ///
    /// A descriptor's first 16 bytes (qwords 0 and 1) are read in one aligned
    /// 16-byte load: atomic on CPUs with AVX (Intel SDM vol. 3A §9.1.1;
    /// DPDK's vector paths rely on it too), so the hash read belongs to the
    /// status read with DD, as the scalar loop's two loads with a fence do.
    ///
    /// # Safety
    /// The CPU has AVX2. `base` points to `max` ring descriptors (32-aligned),
    /// `slots` to `max` slots and `dst` to `max` writable pointers; every
    /// non-zero slot is an element the caller owns whose header was prepared
    /// by a receive refill, with room for `lo + span` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rx_clean(
        base: *const RxDesc,
        slots: *mut usize,
        dst: *mut usize,
        max: usize,
        lo: usize,
        span: usize,
    ) -> (usize, u64) {
        let mask = _mm256_set1_epi64x(RX_CLEAN_RSS_MASK as i64);
        let want = _mm256_set1_epi64x(RX_CLEAN_RSS_WANT as i64);
        // `len - lo <= span` as unsigned numbers is, with the sign bit
        // flipped on both sides, a signed compare (AVX2 has no unsigned one):
        // `len + (MIN - lo) <= span + MIN`.
        let bias = _mm256_set1_epi64x(i64::MIN.wrapping_sub(lo as i64));
        let limit = _mm256_set1_epi64x((span as i64).wrapping_add(i64::MIN));
        let zero = _mm256_setzero_si256();
        let mut lens = zero;
        let end = max & !3;
        let mut k = 0;
        while k < end {
            // SAFETY: `k + 3 < max`: descriptors, slots and spare slots
            // `k..k + 4` are in bounds (the caller's contract); a descriptor
            // is 32-aligned, so its first 16 bytes are a 16-aligned load.
            unsafe {
                let p = base.add(k) as *const __m128i;
                let d0 = p.read_volatile();
                let d1 = p.add(2).read_volatile();
                let d2 = p.add(4).read_volatile();
                let d3 = p.add(6).read_volatile();
                // [d0 | d2] and [d1 | d3], then qwords 0 and qwords 1 of the four.
                let d02 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(d0), d2);
                let d13 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(d1), d3);
                let q0 = _mm256_unpacklo_epi64(d02, d13);
                let q1 = _mm256_unpackhi_epi64(d02, d13);
                // Zero where clean.
                let unclean = _mm256_xor_si256(_mm256_and_si256(q1, mask), want);
                // The length with the header-split fields above it: a range
                // check on it checks both (`RxDesc::pkt_len_unsplit`).
                let len = _mm256_srli_epi64::<{ RX_PLEN_SHIFT as i32 }>(q1);
                let out_of_range = _mm256_cmpgt_epi64(_mm256_add_epi64(len, bias), limit);
                let held = _mm256_loadu_si256(slots.add(k) as *const __m256i);
                let empty = _mm256_cmpeq_epi64(held, zero);
                let bad = _mm256_or_si256(_mm256_or_si256(out_of_range, empty), unclean);
                if _mm256_testz_si256(bad, bad) == 0 {
                    break;
                }
                // Written back before anything of the frames is read.
                fence(Ordering::Acquire);
                let h = [
                    *slots.add(k),
                    *slots.add(k + 1),
                    *slots.add(k + 2),
                    *slots.add(k + 3),
                ];
                _mm256_storeu_si256(dst.add(k) as *mut __m256i, held);
                _mm256_storeu_si256(slots.add(k) as *mut __m256i, zero);
                lens = _mm256_add_epi64(lens, len);
                // Per frame one qword: the length in its low 32 bits, the
                // hash (qword 0's upper half) in its high ones.
                let lh = _mm256_blend_epi32::<0b1010_1010>(len, q0);
                let lo2 = _mm256_castsi256_si128(lh);
                let hi2 = _mm256_extracti128_si256::<1>(lh);
                // The refill prepared the rest of each header; the flags are
                // ours to write whole.
                received(
                    h[0],
                    _mm_extract_epi16::<0>(lo2),
                    _mm_extract_epi32::<1>(lo2),
                );
                received(
                    h[1],
                    _mm_extract_epi16::<4>(lo2),
                    _mm_extract_epi32::<3>(lo2),
                );
                received(
                    h[2],
                    _mm_extract_epi16::<0>(hi2),
                    _mm_extract_epi32::<1>(hi2),
                );
                received(
                    h[3],
                    _mm_extract_epi16::<4>(hi2),
                    _mm_extract_epi32::<3>(hi2),
                );
            }
            k += 4;
        }
        // The four lanes' sums (each below 2^40: lengths of 26 bits at most).
        let s = _mm_add_epi64(
            _mm256_castsi256_si128(lens),
            _mm256_extracti128_si256::<1>(lens),
        );
        let bytes = (_mm_cvtsi128_si64(s) as u64).wrapping_add(_mm_extract_epi64::<1>(s) as u64);
        (k, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desc::TX_MAX_BUF;
    use nicpoll::memory::DmaMemory;
    use nicpoll::mempool::MempoolConfig;

    #[test]
    fn rings_are_checked_and_read_back() {
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("ring test", 8192).unwrap());
        assert!(DescRing::<TxDesc>::new(region.clone(), 8192 - 16 * 4, 8).is_err());
        assert!(
            DescRing::<TxDesc>::new(region.clone(), 64, 8).is_err(),
            "128-byte alignment"
        );
        let mut r = DescRing::<TxDesc>::new(region.clone(), 128, 64).unwrap();
        assert_eq!(r.iova(), region.iova(128));
        r.write(3, TxDesc::packet(0x1000, 64, true));
        assert_eq!(r.read(3), TxDesc::packet(0x1000, 64, true));
        r.clear();
        assert_eq!(r.read(3), TxDesc::default());
        let mut rx = DescRing::<RxDesc>::new(region.clone(), 4096, 32).unwrap();
        rx.write(31, RxDesc::read_format(0xAB00));
        assert_eq!(rx.read(31).pkt_addr(), 0xAB00);
        let mut b = DmaBytes::new(region, 0, 16).unwrap();
        b.write(&[1, 2, 3]);
        let mut out = [0u8; 4];
        b.read(&mut out);
        assert_eq!(out, [1, 2, 3, 0]);
    }

    #[test]
    #[should_panic(expected = "outside a ring")]
    fn out_of_range_descriptor_panics() {
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("ring test", 4096).unwrap());
        let r = DescRing::<TxDesc>::new(region, 0, 4).unwrap();
        r.read(4);
    }

    #[test]
    fn slots_fill_take_and_free() {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("slots", 16)).unwrap();
        let mut s = MbufSlots::new(8);
        assert!(s.fill(&pool, 2, 4));
        assert_eq!(pool.in_use(), 4);
        assert!(s.fill(&pool, 0, 2));
        assert_eq!(pool.in_use(), 6);
        let iova = s.rx_iova(2);
        let m = s.take(2).unwrap();
        assert_eq!(iova, m.buf_iova() + m.default_headroom() as u64);
        assert_eq!(
            m.buf_addr() as usize + m.default_headroom(),
            m.element_addr() as usize + nicpoll::mbuf::ELEMENT_DATA_OFFSET,
            "frames land at the element's fixed data offset"
        );
        assert!(s.take(2).is_none());
        assert!(s.put(7, m).is_ok());
        let held = s.held();
        assert_eq!(s.compact(), held);
        assert!((0..held).all(|i| s.is_held(i)));
        drop(s);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn receive_fast_loop_takes_only_prepared_buffers() {
        use crate::desc::rx_status;
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("rx ring", 4096).unwrap());
        let mut ring = DescRing::<RxDesc>::new(region, 0, 8).unwrap();
        let pool = Mempool::new(&mem, &MempoolConfig::new("rx", 16)).unwrap();
        let clean = rx_status::DD
            | rx_status::EOF
            | (rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT);
        let mut out = MbufBatch::with_burst(8);
        // Filled without prepared headers: the fast loop leaves them all.
        let mut s = MbufSlots::new(8);
        assert!(s.fill(&pool, 0, 8));
        for i in 0..8 {
            ring.write(i, RxDesc::writeback(60, clean, 0, 7));
        }
        assert_eq!(s.rx_clean(&ring, 0, 8, 14, 2000, &mut out), (0, 0, true));
        assert!(out.is_empty());
        drop(s);
        // Prepared by refill_rx: taken, two by two and the odd one.
        let mut s = MbufSlots::new(8);
        let tmpl = RxHeaderTemplate::new(1, 2);
        assert!(s.refill_rx(&mut ring, &pool, 0, 8, &tmpl));
        for i in 0..7 {
            ring.write(i, RxDesc::writeback(60 + i, clean, 0, 7));
        }
        let (k, bytes, unusual) = s.rx_clean(&ring, 0, 8, 14, 2000, &mut out);
        assert_eq!((k, bytes, unusual), (7, (60..67).sum::<u64>(), false));
        for (i, m) in out.iter().enumerate() {
            assert_eq!(
                (m.len(), m.rss_hash(), m.port(), m.queue()),
                (60 + i, 7, 1, 2)
            );
        }
        out.clear();
        drop(s);
        assert_eq!(pool.in_use(), 0);
    }

    /// A small xorshift generator: reproducible inputs without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random write-back: mostly clean hashed whole frames of lengths in
    /// range, and now and then each way a descriptor leaves the fast loops
    /// (not done, no EOF, an error bit, no hash, a length out of range or with
    /// header-split bits).
    fn random_writeback(r: &mut Rng, max_len: u16) -> RxDesc {
        use crate::desc::rx_status;
        let flt = rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT;
        let hash = r.next() as u32;
        let len = 14 + r.below(max_len as u64 - 13) as u16;
        let clean = rx_status::DD | rx_status::EOF | flt;
        match r.below(64) {
            0 => RxDesc::writeback(len, 0, 0, hash),
            1 => RxDesc::writeback(len, rx_status::DD | flt, 0, hash),
            2 => RxDesc::writeback(len, clean, 1 << r.below(8), hash),
            3 => RxDesc::writeback(len, rx_status::DD | rx_status::EOF, 0, hash),
            4 => RxDesc::writeback(r.below(14) as u16, clean, 0, hash),
            5 => RxDesc::writeback(max_len + 1 + r.below(64) as u16, clean, 0, hash),
            6 => {
                // A length in range, but header-split bits above it.
                let d = RxDesc::writeback(len, clean, 0, hash);
                let q1 = u64::from_le(d.qw1) | 1 << (52 + r.below(12));
                RxDesc {
                    qw1: q1.to_le(),
                    ..d
                }
            }
            _ => RxDesc::writeback(len, clean, 0, hash),
        }
    }

    /// The AVX2 receive loop takes exactly what the scalar loops take and
    /// writes the same headers, over random runs of descriptors (any start
    /// and length, every kind of descriptor that leaves the fast loops, empty
    /// slots, buffers shorter than the descriptor's length), and leaves the
    /// same slots held. Skipped (scalar only) on a CPU without AVX2.
    #[test]
    fn vector_and_scalar_receive_loops_agree() {
        const N: usize = 64;
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("rx rings", 2 * N * 32).unwrap());
        let pool = Mempool::new(&mem, &MempoolConfig::new("rx agree", 3 * N as u32)).unwrap();
        let mut rings = [
            DescRing::<RxDesc>::new(region.clone(), 0, N as u16).unwrap(),
            DescRing::<RxDesc>::new(region, N * 32, N as u16).unwrap(),
        ];
        let tmpl = RxHeaderTemplate::new(3, 5);
        if !cpu_has_avx2() {
            eprintln!("this CPU has no AVX2: only the scalar loops run");
        }
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let mut vector_groups = 0;
        for trial in 0..3000 {
            let start = r.below(N as u64) as usize;
            let max = r.below((N - start) as u64 + 1) as usize;
            // The receive path's range: lengths up to `buf_len`.
            let buf_len = [60usize, 1000, 2048][r.below(3) as usize];
            let span = buf_len - 14;
            let descs: Vec<RxDesc> = (0..N)
                .map(|_| random_writeback(&mut r, buf_len as u16))
                .collect();
            let holes: Vec<usize> = (0..N).filter(|_| r.below(100) == 0).collect();
            let mut results = Vec::new();
            for (which, ring) in rings.iter_mut().enumerate() {
                let mut s = MbufSlots::new(N);
                assert_eq!(s.set_vector(which == 0), which == 0 && cpu_has_avx2());
                assert!(s.refill_rx(ring, &pool, 0, N, &tmpl));
                for (i, d) in descs.iter().enumerate() {
                    ring.write(i as u16, *d);
                }
                for &i in &holes {
                    drop(s.take(i));
                }
                let before: Vec<Option<u64>> =
                    (0..N).map(|i| s.is_held(i).then(|| s.rx_iova(i))).collect();
                let mut out = MbufBatch::with_burst(N);
                let (k, bytes, unusual) = s.rx_clean(ring, start, max, 14, span, &mut out);
                let got: Vec<_> = out
                    .iter()
                    .enumerate()
                    .map(|(j, m)| {
                        // The mbuf of slot `start + j`, in order.
                        let iova = m.buf_iova() + m.default_headroom() as u64;
                        assert_eq!(Some(iova), before[start + j], "trial {trial}");
                        (
                            m.len(),
                            // (Meaningful only with its flag.)
                            (m.ol_flags() & nicpoll::mbuf::flags::RX_RSS_HASH != 0)
                                .then(|| m.rss_hash()),
                            m.ol_flags(),
                            m.port(),
                            m.queue(),
                            m.headroom() == m.default_headroom(),
                        )
                    })
                    .collect();
                let held: Vec<bool> = (0..N).map(|i| s.is_held(i)).collect();
                assert_eq!(got.len(), k, "trial {trial}");
                results.push((k, bytes, unusual, got, held));
                out.clear();
            }
            let (v, sc) = (&results[0], &results[1]);
            assert_eq!(
                (v.0, v.1, v.2),
                (sc.0, sc.1, sc.2),
                "trial {trial}: start {start} max {max} buf_len {buf_len}"
            );
            assert_eq!(v.3, sc.3, "trial {trial}: headers differ");
            assert_eq!(v.4, sc.4, "trial {trial}: held slots differ");
            vector_groups += v.0 / 4;
        }
        // The inputs did reach the vector loop's groups of four.
        assert!(vector_groups > 1000, "{vector_groups} groups");
        assert_eq!(pool.in_use(), 0);
    }

    /// The AVX2 loop on its own: whole groups of four up to the first
    /// descriptor of any kind the fast loops leave (and nothing of that
    /// group), the bytes of what it took, the lengths at both ends of the
    /// range accepted.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_receive_loop_takes_whole_groups() {
        use crate::desc::rx_status;
        if !cpu_has_avx2() {
            eprintln!("this CPU has no AVX2: nothing to test");
            return;
        }
        const N: usize = 16;
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("rx ring", N * 32).unwrap());
        let mut ring = DescRing::<RxDesc>::new(region, 0, N as u16).unwrap();
        let pool = Mempool::new(&mem, &MempoolConfig::new("rx groups", 2 * N as u32)).unwrap();
        let tmpl = RxHeaderTemplate::new(0, 0);
        let clean = rx_status::DD
            | rx_status::EOF
            | (rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT);
        let (lo, span) = (14usize, 1000usize);
        let len_of = |i: usize| [lo, lo + span, 64, 1000][i % 4] as u16;
        let bad: [(&str, RxDesc); 5] = [
            ("not done", RxDesc::writeback(64, 0, 0, 1)),
            ("too short", RxDesc::writeback(lo as u16 - 1, clean, 0, 1)),
            (
                "too long",
                RxDesc::writeback((lo + span + 1) as u16, clean, 0, 1),
            ),
            (
                "no hash",
                RxDesc::writeback(64, rx_status::DD | rx_status::EOF, 0, 1),
            ),
            ("error bit", RxDesc::writeback(64, clean, 0x80, 1)),
        ];
        for at in 0..=N {
            let cases = bad.iter().map(|&(w, d)| (Some(w), d));
            for (what, d) in cases.chain([(None, RxDesc::default())]) {
                let mut s = MbufSlots::new(N);
                assert!(s.refill_rx(&mut ring, &pool, 0, N, &tmpl));
                for i in 0..N {
                    ring.write(i as u16, RxDesc::writeback(len_of(i), clean, 0, i as u32));
                }
                match (what, d) {
                    (Some(_), d) if at < N => ring.write(at as u16, d),
                    // An empty slot stops it as well.
                    (None, _) if at < N => drop(s.take(at)),
                    _ => {}
                }
                let mut dst = [0usize; N];
                // SAFETY: (test) the CPU has AVX2; ring, slots and `dst` hold
                // N entries; the slots were filled by `refill_rx` from a pool
                // whose data room exceeds lo + span.
                let (k, bytes) = unsafe {
                    avx2::rx_clean(
                        ring.base.as_ptr(),
                        s.slots.as_mut_ptr(),
                        dst.as_mut_ptr(),
                        N,
                        lo,
                        span,
                    )
                };
                let want = at / 4 * 4;
                assert_eq!(k, want, "{what:?} at {at}");
                assert_eq!(bytes, (0..k).map(|i| len_of(i) as u64).sum::<u64>());
                for (i, &p) in dst[..k].iter().enumerate() {
                    assert!(!s.is_held(i));
                    // SAFETY: (test) taken by the loop: ours now.
                    let m = unsafe { Mbuf::from_raw(NonNull::new(p as *mut MbufHeader).unwrap()) };
                    assert_eq!(
                        (m.len(), m.rss_hash(), m.ol_flags()),
                        (
                            len_of(i) as usize,
                            i as u32,
                            nicpoll::mbuf::flags::RX_RSS_HASH
                        )
                    );
                }
                assert!(dst[k..].iter().all(|&p| p == 0));
                assert_eq!(s.held(), N - k - usize::from(what.is_none() && at < N));
            }
        }
        assert_eq!(pool.in_use(), 0);
    }

    /// The AVX2 transmit loop writes exactly the descriptors and slots the
    /// scalar loops write, over random bursts (any start, lengths from 0 to
    /// beyond the limit, data offsets moved), and refuses the same packets.
    #[test]
    fn vector_and_scalar_transmit_loops_agree() {
        const N: usize = 64;
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("tx rings", 2 * N * 16).unwrap());
        let pool = Mempool::new(&mem, &MempoolConfig::new("tx agree", 3 * N as u32)).unwrap();
        let mut rings = [
            DescRing::<TxDesc>::new(region.clone(), 0, N as u16).unwrap(),
            DescRing::<TxDesc>::new(region, N * 16, N as u16).unwrap(),
        ];
        let mut r = Rng(0x2545_F491_4F6C_DD1D);
        let mut vector_groups = 0;
        for trial in 0..3000 {
            let start = r.below(N as u64) as usize;
            let max = r.below((N - start) as u64 + 1) as usize;
            // (0: a limit nothing fits, every packet refused.)
            let max_len = [0usize, 60, 1000, TX_MAX_BUF][r.below(4) as usize];
            let burst = r.below(40) as usize;
            // (length, headroom change) of each packet: mostly sendable.
            let shapes: Vec<(usize, isize)> = (0..burst)
                .map(|_| {
                    let len = match r.below(40) {
                        0 => 0,
                        1 => max_len + 1 + r.below(100) as usize,
                        _ => 1 + r.below(max_len.max(1) as u64) as usize,
                    };
                    (len.min(1500), r.below(64) as isize - 32)
                })
                .collect();
            let mut results = Vec::new();
            for (which, ring) in rings.iter_mut().enumerate() {
                let mut s = MbufSlots::new(N);
                s.set_vector(which == 0);
                ring.clear();
                let mut b = MbufBatch::with_burst(burst.max(1));
                let mut iovas = Vec::new();
                for &(len, shift) in &shapes {
                    let mut m = pool.alloc().unwrap();
                    if shift < 0 {
                        assert!(m.prepend(-shift as usize).is_some());
                    } else {
                        assert!(m.set_len(shift as usize) && m.adj(shift as usize));
                    }
                    assert!(m.set_len(len), "len {len}");
                    iovas.push(m.data_iova());
                    b.push(m).unwrap();
                }
                let (used, taken, bytes) = s.tx_fill(ring, start, max, &mut b, max_len);
                // Each descriptor as (index of its packet, qword 1); each
                // slot as the index of its packet's IOVA.
                let descs: Vec<_> = (0..N as u16)
                    .map(|i| {
                        let d = ring.read(i);
                        let pkt = iovas.iter().position(|&a| a == u64::from_le(d.addr));
                        (pkt, u64::from_le(d.cmd_type_offset_bsz))
                    })
                    .collect();
                let slots: Vec<Option<usize>> = (0..N)
                    .map(|i| {
                        let iova = s.is_held(i).then(|| s.take(i).unwrap().data_iova());
                        iova.map(|a| iovas.iter().position(|&x| x == a).unwrap())
                    })
                    .collect();
                results.push((used, taken, bytes, descs, slots, b.len()));
                b.clear();
            }
            let (v, sc) = (&results[0], &results[1]);
            assert_eq!(
                (v.0, v.1, v.2, v.5),
                (sc.0, sc.1, sc.2, sc.5),
                "trial {trial}: start {start} max {max} max_len {max_len}"
            );
            assert_eq!(v.3, sc.3, "trial {trial}: descriptors differ");
            assert_eq!(v.4, sc.4, "trial {trial}: slots differ");
            vector_groups += v.0 / 4;
        }
        assert!(vector_groups > 1000, "{vector_groups} groups");
        assert_eq!(pool.in_use(), 0);
    }

    /// The AVX2 transmit loop on its own: whole groups of four up to the
    /// first length out of range (and nothing of that group), each the
    /// scalar path's descriptor, the bytes of what it took.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_transmit_loop_takes_whole_groups() {
        if !cpu_has_avx2() {
            eprintln!("this CPU has no AVX2: nothing to test");
            return;
        }
        const N: usize = 16;
        let max_len = 1000;
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc("tx ring", N * 16).unwrap());
        let mut ring = DescRing::<TxDesc>::new(region, 0, N as u16).unwrap();
        let pool = Mempool::new(&mem, &MempoolConfig::new("tx groups", N as u32)).unwrap();
        let len_of = |i: usize| [1, max_len, 60, 1400 - max_len][i % 4];
        for at in 0..=N {
            for bad_len in [0, max_len + 1] {
                ring.clear();
                let mut s = MbufSlots::new(N);
                let src: Vec<usize> = (0..N)
                    .map(|i| {
                        let mut m = pool.alloc().unwrap();
                        assert!(m.prepend(i).is_some());
                        assert!(m.set_len(if i == at { bad_len } else { len_of(i) }));
                        m.into_raw().as_ptr() as usize
                    })
                    .collect();
                // SAFETY: (test) the CPU has AVX2; `src` holds N elements we
                // own, the ring and the slots N empty entries.
                let (k, bytes) = unsafe {
                    avx2::tx_fill(
                        src.as_ptr(),
                        ring.base.as_ptr(),
                        s.slots.as_mut_ptr(),
                        N,
                        max_len,
                    )
                };
                assert_eq!(k, at / 4 * 4, "length {bad_len} at {at}");
                assert_eq!(bytes, (0..k).map(|i| len_of(i) as u64).sum::<u64>());
                for (i, &p) in src.iter().enumerate() {
                    // SAFETY: (test) each element is ours: from its slot if
                    // the loop took it, else still from `src`.
                    let m = if i < k {
                        assert_eq!(s.slots[i], p);
                        s.take(i).unwrap()
                    } else {
                        assert!(!s.is_held(i));
                        unsafe { Mbuf::from_raw(NonNull::new(p as *mut MbufHeader).unwrap()) }
                    };
                    let want = if i < k {
                        TxDesc::packet_fitting(m.data_iova(), len_of(i))
                    } else {
                        TxDesc::default()
                    };
                    assert_eq!(ring.read(i as u16), want, "descriptor {i}");
                }
            }
        }
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn pool_shortage_takes_nothing() {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("short", 4)).unwrap();
        let mut s = MbufSlots::new(8);
        assert!(!s.fill(&pool, 0, 8));
        assert_eq!(s.held(), 0);
        assert_eq!(pool.in_use(), 0);
    }
}
