//! [`DmaBytes`]: a byte buffer in DMA memory (an admin-queue message buffer),
//! copied in and out with volatile accesses.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use nicpoll::memory::DmaRegion;

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
