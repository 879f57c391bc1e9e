//! [`DescRing`]: a ring of typed descriptors in DMA memory, and the volatile
//! loads and stores of each descriptor type ([`DmaDesc`]).

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use nicpoll::memory::DmaRegion;

use crate::desc::{AqDesc, RxDesc, TxDesc};

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

    /// Write a descriptor the device may read: one volatile write of the
    /// whole descriptor (the device reads it only after the tail moves past it,
    /// so the word order does not matter).
    ///
    /// # Safety
    /// `p` must be valid for writes of `Self` and aligned.
    #[inline(always)]
    unsafe fn store(p: *mut Self, v: Self) {
        // SAFETY: the caller guarantees `p` is valid and aligned.
        unsafe { p.write_volatile(v) }
    }
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
}

/// A ring of `len` descriptors of type `D` inside a DMA region.
pub struct DescRing<D: DmaDesc> {
    pub(super) base: NonNull<D>,
    pub(super) len: u16,
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
pub(super) unsafe fn rx_wb(p: *const RxDesc) -> RxDesc {
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
pub(super) unsafe fn rx_wb_rss(p: *const RxDesc) -> (RxDesc, u32) {
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

/// # Safety
/// `p` must be valid for writes of a `TxDesc` and aligned.
#[inline(always)]
pub(super) unsafe fn tx_put(p: *mut TxDesc, d: TxDesc) {
    // SAFETY: the caller's guarantee.
    unsafe {
        std::ptr::addr_of_mut!((*p).addr).write_volatile(d.addr);
        std::ptr::addr_of_mut!((*p).cmd_type_offset_bsz).write_volatile(d.cmd_type_offset_bsz);
    }
}

/// # Safety
/// `p` must be valid for writes of an `RxDesc` and aligned.
#[inline(always)]
pub(super) unsafe fn rx_arm(p: *mut RxDesc, iova: u64) {
    let d = RxDesc::read_format(iova);
    // The read format's two qwords in one 16-byte store (SSE2, which every
    // x86-64 CPU has): one memory access per buffer fewer, what an emulator
    // charges for.
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's guarantee; a descriptor is 32-aligned, so its
    // first 16 bytes are an aligned 16-byte store.
    unsafe {
        use std::arch::x86_64::{__m128i, _mm_set_epi64x};
        (p as *mut __m128i).write_volatile(_mm_set_epi64x(d.qw1 as i64, d.qw0 as i64));
    }
    #[cfg(not(target_arch = "x86_64"))]
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
