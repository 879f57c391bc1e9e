//! Device registers: the [`Bar`] trait, with a VFIO implementation over an
//! mmap'd PCI BAR ([`VfioBar`]) and a simulated one over plain memory
//! ([`SimBar`]).
//!
//! Drivers are generic over `B: Bar` (`IavfPort<B: Bar>`), so a simulated device
//! runs the very driver code the hardware runs, at no cost to the hardware path:
//! every method is small and inlined into the driver.
//!
//! Registers are little-endian, as PCI is. Offsets must be naturally aligned and
//! inside the BAR; a bad offset is a driver bug and panics (an access outside the
//! mapping could otherwise hit any memory). Ordering: a write is not moved before
//! the program's earlier memory writes (a tail-pointer write comes after the
//! descriptors it publishes), and a read is not moved after later memory reads (a
//! head-pointer read comes before the descriptors it covers) — DPDK's
//! `rte_write32`/`rte_read32`. On x86-64 that costs no instruction.
//!
//! This module holds the MMIO unsafe code; a BAR mapping is only ever a raw
//! pointer, never a Rust reference, since the device changes it at will.

use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering, fence};

/// Registers of one device BAR (or of a simulated device).
///
/// `&self` methods for writes too: registers are shared with the device, and a
/// driver writes tail registers from the lcores that own its queues.
pub trait Bar: Send + Sync {
    /// Size of the BAR in bytes.
    fn len(&self) -> usize;

    /// Whether the BAR has no registers.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read the 32-bit register at `offset` (a multiple of 4).
    fn read32(&self, offset: usize) -> u32;

    /// Write the 32-bit register at `offset` (a multiple of 4).
    fn write32(&self, offset: usize, value: u32);

    /// Read the 16-bit register at `offset` (a multiple of 2).
    fn read16(&self, offset: usize) -> u16;

    /// Write the 16-bit register at `offset` (a multiple of 2).
    fn write16(&self, offset: usize, value: u16);

    /// Read the 8-bit register at `offset`.
    fn read8(&self, offset: usize) -> u8;

    /// Write the 8-bit register at `offset`.
    fn write8(&self, offset: usize, value: u8);
}

#[cold]
#[inline(never)]
fn bad_offset(what: &str, offset: usize, size: usize, len: usize) -> ! {
    panic!(
        "{what}: {size}-byte register access at offset {offset:#x} is misaligned or outside the \
         {len:#x}-byte BAR"
    )
}

/// Panics unless `size` bytes at `offset` are aligned and inside `len` bytes.
#[inline(always)]
fn check(what: &str, offset: usize, size: usize, len: usize) {
    if offset & (size - 1) != 0 || offset >= len || len - offset < size {
        bad_offset(what, offset, size, len);
    }
}

/// A PCI BAR of a VFIO device, mmap'd from the device file.
///
/// Created by `VfioDevice::map_bar`. It keeps the device open: the device is
/// reset and closed only after its last BAR is unmapped.
pub struct VfioBar {
    base: NonNull<u8>,
    len: usize,
    index: u32,
    /// Unmaps the BAR (and releases the device) when dropped.
    _owner: Box<dyn Send + Sync>,
}

// SAFETY: a VfioBar owns its mapping, which stays valid until `_owner` drops
// with it; it hands out no reference into it (only a raw pointer, which carries
// no aliasing promise); and every access through it is
// a single volatile load or store of a register, which the device (not the
// Rust memory model) orders. Registers are designed to be accessed from any
// CPU; callers order their accesses with their own synchronization.
unsafe impl Send for VfioBar {}
// SAFETY: see Send; `&self` methods only perform volatile register accesses.
unsafe impl Sync for VfioBar {}

impl VfioBar {
    /// Wrap a mapping of BAR `index`.
    ///
    /// # Safety
    ///
    /// `base..base + len` must be a readable and writable mapping of device memory
    /// (or of plain memory, for a test twin) that stays mapped until `owner` is
    /// dropped, and that nothing else in the program accesses through a Rust
    /// reference. `base` must be at least 4-byte aligned (mmap gives page alignment).
    pub(crate) unsafe fn new(
        base: NonNull<u8>,
        len: usize,
        index: u32,
        owner: Box<dyn Send + Sync>,
    ) -> VfioBar {
        debug_assert!((base.as_ptr() as usize).is_multiple_of(4));
        VfioBar {
            base,
            len,
            index,
            _owner: owner,
        }
    }

    /// The BAR's index (0..=5).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The mapping's first byte, for a driver that needs the address (prefetching).
    /// Accesses through it must be volatile and stay within [`Bar::len`] bytes.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl fmt::Debug for VfioBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfioBar")
            .field("index", &self.index)
            .field("base", &self.base)
            .field("len", &format_args!("{:#x}", self.len))
            .finish()
    }
}

macro_rules! mmio_access {
    ($read:ident, $write:ident, $t:ty) => {
        #[inline(always)]
        fn $read(&self, offset: usize) -> $t {
            check("VfioBar", offset, size_of::<$t>(), self.len);
            // SAFETY: `check` keeps the aligned access inside the live mapping
            // (see `VfioBar::new`); volatile, because the device changes it.
            let v = unsafe { self.base.as_ptr().add(offset).cast::<$t>().read_volatile() };
            fence(Ordering::Acquire);
            <$t>::from_le(v)
        }

        #[inline(always)]
        fn $write(&self, offset: usize, value: $t) {
            check("VfioBar", offset, size_of::<$t>(), self.len);
            fence(Ordering::Release);
            // SAFETY: as in the read; the mapping is writable.
            unsafe {
                self.base
                    .as_ptr()
                    .add(offset)
                    .cast::<$t>()
                    .write_volatile(value.to_le())
            }
        }
    };
}

impl Bar for VfioBar {
    #[inline(always)]
    fn len(&self) -> usize {
        self.len
    }
    mmio_access!(read32, write32, u32);
    mmio_access!(read16, write16, u16);
    mmio_access!(read8, write8, u8);
}

/// A simulated BAR: a register file in plain memory, for tests and simulated
/// devices. Reads return what was last written; nothing reacts to writes (a
/// device model that must react implements [`Bar`] itself, or polls this one).
pub struct SimBar {
    words: Box<[AtomicU32]>,
}

impl SimBar {
    /// `len` bytes of zeroed registers (rounded up to whole 32-bit words).
    pub fn new(len: usize) -> SimBar {
        SimBar {
            words: (0..len.div_ceil(4)).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// Registers with these initial 32-bit values, from offset 0.
    pub fn from_words(words: &[u32]) -> SimBar {
        SimBar {
            words: words.iter().map(|&w| AtomicU32::new(w)).collect(),
        }
    }

    #[inline]
    fn word(&self, offset: usize) -> &AtomicU32 {
        &self.words[offset / 4]
    }

    #[inline]
    fn update(&self, offset: usize, bits: u32, mask: u32) {
        let shift = (offset % 4) * 8;
        let (mask, bits) = (mask << shift, bits << shift);
        let _ = self
            .word(offset)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some((w & !mask) | (bits & mask))
            });
    }
}

impl fmt::Debug for SimBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimBar")
            .field("len", &format_args!("{:#x}", self.len()))
            .finish()
    }
}

impl Bar for SimBar {
    fn len(&self) -> usize {
        self.words.len() * 4
    }

    fn read32(&self, offset: usize) -> u32 {
        check("SimBar", offset, 4, self.len());
        self.word(offset).load(Ordering::Acquire)
    }

    fn write32(&self, offset: usize, value: u32) {
        check("SimBar", offset, 4, self.len());
        self.word(offset).store(value, Ordering::Release);
    }

    fn read16(&self, offset: usize) -> u16 {
        check("SimBar", offset, 2, self.len());
        (self.word(offset).load(Ordering::Acquire) >> ((offset % 4) * 8)) as u16
    }

    fn write16(&self, offset: usize, value: u16) {
        check("SimBar", offset, 2, self.len());
        self.update(offset, value.into(), 0xffff);
    }

    fn read8(&self, offset: usize) -> u8 {
        check("SimBar", offset, 1, self.len());
        (self.word(offset).load(Ordering::Acquire) >> ((offset % 4) * 8)) as u8
    }

    fn write8(&self, offset: usize, value: u8) {
        check("SimBar", offset, 1, self.len());
        self.update(offset, value.into(), 0xff);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_bar_reads_back_little_endian_lanes() {
        let bar = SimBar::new(0x10);
        assert_eq!(bar.len(), 0x10);
        bar.write32(4, 0x1122_3344);
        assert_eq!(bar.read32(4), 0x1122_3344);
        assert_eq!(bar.read16(4), 0x3344);
        assert_eq!(bar.read16(6), 0x1122);
        assert_eq!(bar.read8(7), 0x11);
        bar.write8(5, 0xaa);
        assert_eq!(bar.read32(4), 0x1122_aa44);
        bar.write16(6, 0xbeef);
        assert_eq!(bar.read32(4), 0xbeef_aa44);
        assert_eq!(bar.read32(0), 0);
        assert_eq!(SimBar::from_words(&[7, 8]).read32(4), 8);
        assert_eq!(SimBar::new(5).len(), 8);
    }

    #[test]
    fn sim_bar_is_shared_across_threads() {
        let bar = std::sync::Arc::new(SimBar::new(64));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let bar = bar.clone();
                std::thread::spawn(move || {
                    for n in 0..1000u32 {
                        bar.write32(i * 4, n);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for i in 0..4 {
            assert_eq!(bar.read32(i * 4), 999);
        }
    }

    #[test]
    #[should_panic(expected = "outside the 0x8-byte BAR")]
    fn out_of_range_access_panics() {
        SimBar::new(8).read32(8);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_access_panics() {
        SimBar::new(8).write32(2, 0);
    }

    #[test]
    #[should_panic(expected = "2-byte register access at offset 0x7")]
    fn straddling_access_panics() {
        SimBar::new(8).read16(7);
    }

    #[test]
    fn generic_driver_code_runs_on_a_sim_bar() {
        fn bump_tail<B: Bar>(bar: &B, reg: usize) -> u32 {
            let v = bar.read32(reg).wrapping_add(1);
            bar.write32(reg, v);
            v
        }
        let bar = SimBar::new(0x100);
        assert_eq!(bump_tail(&bar, 0x18), 1);
        assert_eq!(bump_tail(&bar, 0x18), 2);
    }
}
