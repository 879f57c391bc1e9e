//! Test support: a device's view of DMA memory by IOVA, for the fake PF of the
//! admin-queue tests (the real device model lives in `sim/`).

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
    fn map(&self, region: &std::sync::Arc<DmaRegion>) -> nicpoll::Result<()> {
        self.regions
            .lock()
            .unwrap()
            .push((region.iova(0), region.as_ptr() as usize, region.len()));
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
