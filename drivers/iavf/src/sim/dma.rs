//! The simulated device's view of DMA memory: an IOMMU-like table from the IOVAs
//! the driver programs to host memory, and every raw access the model makes to
//! that memory (volatile loads and stores, never a Rust reference).
//!
//! This is the model's only module with unsafe code (its wire's raw socket is
//! the core's `nicpoll::netdev::RawSocket`). Its contract: a host range enters the table only through
//! [`IoMmu::map`], from a `DmaRegion` whose `Arc` the table entry holds, or
//! through [`IoMmu::map_client`], from a client's memory that vm-memory mapped
//! into this process (a vfio-user client's DMA_MAP: a `GuestRegionMmap` over
//! the file it passed, whose `Arc` the entry holds the same way). So the
//! memory stays allocated for as long as any copy of the table (the device
//! thread's snapshot included) has the entry. [`IoMmu::unmap`] and
//! [`IoMmu::unmap_client`] remove it; the memory is freed (or unmapped) when
//! the last table that had it is dropped (the device thread lets go of its
//! snapshot at the top of its next iteration, see [`IoMmu::quiesce`]). No
//! caller can free memory the device still translates to.
//!
//! An access to an IOVA range that is not wholly mapped, or a write to one
//! mapped read-only, is a DMA fault: nothing is read or written, and the
//! caller counts and logs it.
//!
//! [`SharedWords`] is the other memory the model shares with a driver in
//! another process: the VF's doorbell pages, which a vfio-user client maps
//! into its guest's BAR0 (volatile accesses too).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nicpoll::memory::DmaRegion;
use vm_memory::{GuestMemoryRegion, GuestRegionMmap};

/// A host address inside a mapped `DmaRegion`.
#[derive(Clone, Copy, Debug)]
struct HostPtr(*mut u8);

// SAFETY: a HostPtr is only an address; it is dereferenced only inside this
// module, under the table contract described at the top (the region is alive
// while mapped), from whichever thread runs the device. Raw pointers carry no
// aliasing promise, and every access is a volatile load or store.
unsafe impl Send for HostPtr {}
// SAFETY: as for Send; shared copies are never dereferenced through `&`.
unsafe impl Sync for HostPtr {}

/// What a mapping holds so that the memory behind it stays mapped.
#[derive(Clone, Debug)]
enum Backing {
    /// DMA memory of this process (a driver in the same process).
    Region(Arc<DmaRegion>),
    /// A client's memory, mapped from the file it passed (vfio-user DMA_MAP).
    Client(Arc<GuestRegionMmap>),
}

impl Backing {
    fn describe(&self) -> String {
        match self {
            Backing::Region(r) => r.what().to_string(),
            Backing::Client(r) => match r.file_offset() {
                Some(f) => format!("client memory (file offset {:#x})", f.start()),
                None => "client memory".to_string(),
            },
        }
    }
}

/// One IOVA range and the host memory behind it.
#[derive(Clone, Debug)]
struct Mapping {
    iova: u64,
    len: u64,
    host: HostPtr,
    /// The memory `host` points into, held so it cannot be freed while any
    /// table has this entry (also the key for unmap).
    backing: Backing,
    /// The device may write (a client can map memory read-only).
    writable: bool,
}

impl Mapping {
    #[inline]
    fn contains(&self, iova: u64, len: u64) -> bool {
        iova >= self.iova && iova - self.iova <= self.len && self.len - (iova - self.iova) >= len
    }
}

/// A DMA fault: an access to IOVAs that are not (wholly) mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaFault {
    /// First IOVA of the access.
    pub iova: u64,
    /// Length of the access in bytes.
    pub len: u64,
    /// Whether the device was writing.
    pub write: bool,
    /// What the device was doing ("Rx descriptor ring of queue 0", ...).
    pub context: String,
}

impl std::fmt::Display for DmaFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DMA {} fault at IOVA {:#x} (+{} bytes) while {}",
            if self.write { "write" } else { "read" },
            self.iova,
            self.len,
            self.context
        )
    }
}

/// Why a mapping request was refused.
#[derive(Debug)]
pub(crate) enum MapError {
    /// The region is empty.
    Empty,
    /// IOVAs of another mapped region (named) overlap the region's.
    Overlap(String),
}

/// The translation table, shared by the control side (map/unmap) and the device
/// thread (which works on snapshots, see [`DmaView`]).
pub(crate) struct IoMmu {
    table: Mutex<Arc<[Mapping]>>,
    /// Bumped on every change of the table.
    generation: AtomicU64,
    /// The generation the device thread last switched to; it holds no older
    /// snapshot once this equals `generation`.
    seen: AtomicU64,
    /// Whether a device thread is running (unmap need not wait otherwise).
    live: AtomicBool,
    faults: AtomicU64,
    last_fault: Mutex<Option<DmaFault>>,
}

impl IoMmu {
    pub(crate) fn new() -> IoMmu {
        IoMmu {
            table: Mutex::new(Arc::from(Vec::new())),
            generation: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            live: AtomicBool::new(false),
            faults: AtomicU64::new(0),
            last_fault: Mutex::new(None),
        }
    }

    /// Map `region` at the IOVAs it reports, one entry per run of pages with
    /// contiguous IOVAs (one entry in IOVA modes VA and DC). The entries hold
    /// the region.
    pub(crate) fn map(&self, region: &Arc<DmaRegion>) -> Result<(), MapError> {
        if region.is_empty() {
            return Err(MapError::Empty);
        }
        let page = region.page_size().max(1);
        let mut new: Vec<Mapping> = Vec::new();
        let mut off = 0usize;
        while off < region.len() {
            let iova = region.iova(off);
            let step = page.min(region.len() - off);
            match new.last_mut() {
                Some(m) if m.iova + m.len == iova => m.len += step as u64,
                _ => new.push(Mapping {
                    iova,
                    len: step as u64,
                    // The address of byte `off` of the live mapping.
                    host: HostPtr(region.as_ptr().wrapping_add(off)),
                    backing: Backing::Region(region.clone()),
                    writable: true,
                }),
            }
            off += step;
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table
            .iter()
            .any(|o| matches!(&o.backing, Backing::Region(r) if Arc::ptr_eq(r, region)))
        {
            // Mapping a region twice changes nothing.
            return Ok(());
        }
        // Mapped regions are alive (the table holds them), and two live regions
        // never share IOVAs: their virtual or physical addresses differ.
        self.insert(&mut table, new)
    }

    /// Map a client's memory (vm-memory's mapping of the file a vfio-user
    /// client passed with DMA_MAP) at the IOVAs it was given
    /// (`region.start_addr()`), read-only unless `writable`. The entry holds
    /// the region. IOVAs already mapped are refused (vfio-user: EEXIST).
    pub(crate) fn map_client(
        &self,
        region: &Arc<GuestRegionMmap>,
        writable: bool,
    ) -> Result<(), MapError> {
        if region.len() == 0 {
            return Err(MapError::Empty);
        }
        let new = vec![Mapping {
            iova: region.start_addr().0,
            len: region.len(),
            host: HostPtr(region.as_ptr()),
            backing: Backing::Client(region.clone()),
            writable,
        }];
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        self.insert(&mut table, new)
    }

    /// Add `new` to the table unless an entry of it overlaps one there.
    fn insert(&self, table: &mut Arc<[Mapping]>, new: Vec<Mapping>) -> Result<(), MapError> {
        let overlaps = |o: &Mapping| {
            new.iter()
                .any(|n| n.iova < o.iova + o.len && o.iova < n.iova + n.len)
        };
        if let Some(o) = table.iter().find(|o| overlaps(o)) {
            return Err(MapError::Overlap(format!(
                "{} at IOVA {:#x} (+{:#x})",
                o.backing.describe(),
                o.iova,
                o.len
            )));
        }
        let mut all: Vec<Mapping> = table.to_vec();
        all.extend(new);
        *table = Arc::from(all);
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Remove the client mapping at exactly `[iova, iova + len)` (vfio-user's
    /// DMA_UNMAP names a range a DMA_MAP mapped), or every client mapping when
    /// `len` is `u64::MAX` and `iova` 0 (UNMAP_ALL, a client gone). Returns how
    /// many entries went; the caller then waits with [`quiesce`](Self::quiesce).
    pub(crate) fn unmap_client(&self, iova: u64, len: u64) -> usize {
        let all = iova == 0 && len == u64::MAX;
        self.remove(|m| {
            matches!(m.backing, Backing::Client(_)) && (all || (m.iova == iova && m.len == len))
        })
    }

    /// Remove the entries `gone` selects; returns how many went.
    fn remove(&self, gone: impl Fn(&Mapping) -> bool) -> usize {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let keep: Vec<Mapping> = table.iter().filter(|m| !gone(m)).cloned().collect();
        let removed = table.len() - keep.len();
        if removed > 0 {
            *table = Arc::from(keep);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        removed
    }

    /// Remove every mapping of `region`; returns how many entries went. The
    /// caller then waits with [`quiesce`](Self::quiesce) until the device thread
    /// no longer uses a table that has them.
    pub(crate) fn unmap(&self, region: &DmaRegion) -> usize {
        self.remove(|m| matches!(&m.backing, Backing::Region(r) if std::ptr::eq(&**r, region)))
    }

    /// Wait until the device thread has switched to the current table (it does
    /// so at the top of every loop iteration, holding no DMA pointer then).
    pub(crate) fn quiesce(&self) {
        let target = self.generation.load(Ordering::Acquire);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.live.load(Ordering::Acquire) && self.seen.load(Ordering::Acquire) < target {
            if Instant::now() > deadline {
                log::error!(
                    "simulated iavf: the device thread did not let go of an unmapped DMA region \
                     within 5 s"
                );
                return;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    pub(crate) fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }

    /// The device thread's copy of the table.
    pub(crate) fn view(&self) -> DmaView {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.generation.load(Ordering::Acquire);
        self.seen.store(current, Ordering::Release);
        DmaView {
            maps: table.clone(),
            at_generation: current,
            last: 0,
        }
    }

    /// Switch `view` to the current table if it changed (device thread, at a
    /// point where it holds no pointer into DMA memory).
    #[inline]
    pub(crate) fn refresh(&self, view: &mut DmaView) {
        if self.generation.load(Ordering::Acquire) != view.at_generation {
            *view = self.view();
        }
    }

    /// Count and log a fault.
    pub(crate) fn record_fault(&self, fault: DmaFault, device: &str) {
        let n = self.faults.fetch_add(1, Ordering::Relaxed) + 1;
        // The first ten, then one in a thousand: a driver bug repeats per packet.
        if n <= 10 || n.is_multiple_of(1000) {
            log::error!("simulated iavf {device}: {fault} (DMA fault #{n}; access dropped)");
        }
        *self.last_fault.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault);
    }

    pub(crate) fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    pub(crate) fn last_fault(&self) -> Option<DmaFault> {
        self.last_fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Read through the table from outside the device (a debugger's view).
    pub(crate) fn host_read(&self, iova: u64, buf: &mut [u8]) -> Result<(), Unmapped> {
        let mut v = self.snapshot();
        v.read(iova, buf)
    }

    /// Write through the table from outside the device.
    pub(crate) fn host_write(&self, iova: u64, data: &[u8]) -> Result<(), Unmapped> {
        let mut v = self.snapshot();
        v.write(iova, data)
    }

    /// A copy of the table that does not count as the device thread's.
    fn snapshot(&self) -> DmaView {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        DmaView {
            maps: table.clone(),
            at_generation: self.generation.load(Ordering::Acquire),
            last: 0,
        }
    }

    pub(crate) fn mapping_count(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The IOVA range of a failed access (the caller adds what it was doing).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unmapped {
    pub iova: u64,
    pub len: u64,
    pub write: bool,
}

impl Unmapped {
    pub(crate) fn with_context(self, context: impl Into<String>) -> DmaFault {
        DmaFault {
            iova: self.iova,
            len: self.len,
            write: self.write,
            context: context.into(),
        }
    }
}

/// A snapshot of the table, owned by the device thread.
pub(crate) struct DmaView {
    maps: Arc<[Mapping]>,
    at_generation: u64,
    last: usize,
}

impl DmaView {
    /// Host address of `[iova, iova + len)` if one mapping holds all of it
    /// (and, for a `write`, lets the device write).
    #[inline]
    fn lookup(&mut self, iova: u64, len: u64, write: bool) -> Option<*mut u8> {
        let usable = |m: &Mapping| m.contains(iova, len) && (m.writable || !write);
        if let Some(m) = self.maps.get(self.last)
            && usable(m)
        {
            return Some(m.host.0.wrapping_add((iova - m.iova) as usize));
        }
        let i = self.maps.iter().position(usable)?;
        self.last = i;
        let m = &self.maps[i];
        Some(m.host.0.wrapping_add((iova - m.iova) as usize))
    }

    /// The pieces of `[iova, iova + len)`, each inside one mapping, or `None` if
    /// some byte is unmapped, or read-only for a `write` (slow path: an access
    /// across mappings).
    fn pieces(&self, iova: u64, len: u64, write: bool) -> Option<Vec<(*mut u8, usize)>> {
        let mut out = Vec::new();
        let (mut cur, end) = (iova, iova.checked_add(len)?);
        while cur < end {
            let m = self
                .maps
                .iter()
                .find(|m| cur >= m.iova && cur - m.iova < m.len && (m.writable || !write))?;
            let n = (m.len - (cur - m.iova)).min(end - cur);
            out.push((m.host.0.wrapping_add((cur - m.iova) as usize), n as usize));
            cur += n;
        }
        Some(out)
    }

    /// Read `buf.len()` bytes at `iova`.
    pub(crate) fn read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), Unmapped> {
        let len = buf.len() as u64;
        let fault = Unmapped {
            iova,
            len,
            write: false,
        };
        if let Some(p) = self.lookup(iova, len, false) {
            // SAFETY: `lookup` found [iova, iova+len) inside one mapping, whose host
            // range is part of live memory the entry holds (module contract);
            // `buf` is ours.
            unsafe { copy_from_device(p, buf) };
            return Ok(());
        }
        let pieces = self.pieces(iova, len, false).ok_or(fault)?;
        let mut at = 0;
        for (p, n) in pieces {
            // SAFETY: as above, for each piece; the pieces tile `buf` in order.
            unsafe { copy_from_device(p, &mut buf[at..at + n]) };
            at += n;
        }
        Ok(())
    }

    /// Write `data` at `iova`.
    pub(crate) fn write(&mut self, iova: u64, data: &[u8]) -> Result<(), Unmapped> {
        let len = data.len() as u64;
        let fault = Unmapped {
            iova,
            len,
            write: true,
        };
        if let Some(p) = self.lookup(iova, len, true) {
            // SAFETY: as in `read`; the mapping is writable (DmaRegion memory is
            // mapped read-write; client memory is mapped writable only when the
            // entry says so, and `lookup` checked it).
            unsafe { copy_to_device(p, data) };
            return Ok(());
        }
        let pieces = self.pieces(iova, len, true).ok_or(fault)?;
        let mut at = 0;
        for (p, n) in pieces {
            // SAFETY: as above, for each piece.
            unsafe { copy_to_device(p, &data[at..at + n]) };
            at += n;
        }
        Ok(())
    }

    /// Read a little-endian u64 at `iova`.
    #[inline]
    pub(crate) fn read_u64(&mut self, iova: u64) -> Result<u64, Unmapped> {
        let mut b = [0u8; 8];
        if iova.is_multiple_of(8)
            && let Some(p) = self.lookup(iova, 8, false)
        {
            // SAFETY: 8 mapped bytes (lookup) at an 8-aligned IOVA; IOVA and host
            // address agree modulo the page size, so the host address is aligned too.
            let v = unsafe { p.cast::<u64>().read_volatile() };
            fence(Ordering::Acquire);
            return Ok(u64::from_le(v));
        }
        self.read(iova, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Write a little-endian u64 at `iova`, ordered after every earlier write of
    /// the device (the DD bit is written last this way).
    #[inline]
    pub(crate) fn write_u64(&mut self, iova: u64, v: u64) -> Result<(), Unmapped> {
        fence(Ordering::Release);
        if iova.is_multiple_of(8)
            && let Some(p) = self.lookup(iova, 8, true)
        {
            // SAFETY: as in `read_u64`, for a store to a writable mapping.
            unsafe { p.cast::<u64>().write_volatile(v.to_le()) };
            return Ok(());
        }
        self.write(iova, &v.to_le_bytes())
    }
}

impl DmaView {
    /// Write a 32-byte receive descriptor back at `iova`: qword 0 (`q0`) and
    /// qwords 2 and 3 (zero), then qword 1 (`q1`, with DD) ordered after
    /// them, as three separate writes do, with one translation when the
    /// descriptor lies in one mapping (else piece by piece: a fault in one
    /// piece leaves the others written, and is returned).
    #[inline]
    pub(crate) fn write_rx_writeback(
        &mut self,
        iova: u64,
        q0: u64,
        q1: u64,
    ) -> Result<(), Unmapped> {
        if iova.is_multiple_of(8)
            && let Some(p) = self.lookup(iova, 32, true)
        {
            let p = p.cast::<u64>();
            fence(Ordering::Release);
            // SAFETY: 32 mapped bytes (lookup) at an 8-aligned IOVA, so an
            // aligned host address (IOVA and host agree modulo the page size);
            // qwords 0, 2, 3 and 1 are inside them.
            unsafe {
                p.write_volatile(q0.to_le());
                p.add(2).write_volatile(0);
                p.add(3).write_volatile(0);
            }
            fence(Ordering::Release);
            // SAFETY: as above; qword 1 last, after the fence.
            unsafe { p.add(1).write_volatile(q1.to_le()) };
            return Ok(());
        }
        let r0 = self.write(iova, &q0.to_le_bytes());
        let r23 = self.write(iova + 16, &[0u8; 16]);
        let r1 = self.write_u64(iova + 8, q1);
        r0.and(r23).and(r1)
    }
}

/// 32-bit registers in memory shared with a driver in another process: a
/// memfd this process maps `MAP_SHARED`, whose descriptor the vfio-user
/// server hands to its client to map into the guest's BAR0 (the doorbell
/// pages). The guest's stores land here without a message; the device reads
/// them with volatile loads, as it reads DMA memory.
pub(crate) struct SharedWords {
    map: memmap2::MmapRaw,
    file: File,
    words: usize,
}

impl SharedWords {
    /// `len` bytes (a whole number of pages), zeroed.
    pub(crate) fn new(name: &str, len: usize) -> io::Result<SharedWords> {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?;
        let file = File::from(fd);
        file.set_len(len as u64)?;
        let map = memmap2::MmapOptions::new().len(len).map_raw(&file)?;
        Ok(SharedWords {
            map,
            file,
            words: len / 4,
        })
    }

    /// The memfd (for the client to map).
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Register `i` (a word index; out of range reads 0).
    #[inline]
    pub(crate) fn load(&self, i: usize) -> u32 {
        if i >= self.words {
            return 0;
        }
        // SAFETY: word i is inside the mapping, which lives as long as self;
        // the mapping is page-aligned, so the word is 4-aligned; the other
        // process writes it too, hence a volatile load, no reference.
        let v = unsafe { self.map.as_ptr().cast::<u32>().add(i).read_volatile() };
        fence(Ordering::Acquire);
        v
    }

    /// Set register `i` (out of range: nothing).
    #[inline]
    pub(crate) fn store(&self, i: usize, v: u32) {
        if i >= self.words {
            return;
        }
        fence(Ordering::Release);
        // SAFETY: as in `load`, for a store to the writable mapping.
        unsafe { self.map.as_mut_ptr().cast::<u32>().add(i).write_volatile(v) };
    }
}

/// Copy `dst.len()` bytes from device memory at `src`.
///
/// # Safety
///
/// `src..src + dst.len()` must be readable memory of a live mapping; no Rust
/// reference to it may exist (other writers use volatile or raw accesses).
#[inline]
unsafe fn copy_from_device(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    // Bytes up to 8-byte alignment of the source, then whole words, then bytes.
    let lead = src.align_offset(8).min(dst.len());
    let (head, body) = dst.split_at_mut(lead);
    for (i, b) in head.iter_mut().enumerate() {
        // SAFETY: i < lead <= len: inside the range the caller vouched for.
        *b = unsafe { src.add(i).read_volatile() };
    }
    let words = src.wrapping_add(lead).cast::<u64>();
    let mut chunks = body.chunks_exact_mut(8);
    for (k, c) in (&mut chunks).enumerate() {
        // SAFETY: word k of the aligned body, inside the range.
        let w = unsafe { words.add(k).read_volatile() };
        c.copy_from_slice(&w.to_ne_bytes());
    }
    let tail = chunks.into_remainder();
    let done = n - tail.len();
    for (i, b) in tail.iter_mut().enumerate() {
        // SAFETY: done + i < len: inside the range.
        *b = unsafe { src.add(done + i).read_volatile() };
    }
    fence(Ordering::Acquire);
}

/// Copy `src` into device memory at `dst`.
///
/// # Safety
///
/// `dst..dst + src.len()` must be writable memory of a live mapping; no Rust
/// reference to it may exist.
#[inline]
unsafe fn copy_to_device(dst: *mut u8, src: &[u8]) {
    fence(Ordering::Release);
    let lead = dst.align_offset(8).min(src.len());
    let (head, body) = src.split_at(lead);
    for (i, &b) in head.iter().enumerate() {
        // SAFETY: i < lead <= len: inside the range the caller vouched for.
        unsafe { dst.add(i).write_volatile(b) };
    }
    let words = dst.wrapping_add(lead).cast::<u64>();
    let chunks = body.chunks_exact(8);
    let tail = chunks.remainder();
    for (k, c) in chunks.enumerate() {
        let w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
        // SAFETY: word k of the aligned body, inside the range.
        unsafe { words.add(k).write_volatile(w) };
    }
    let done = src.len() - tail.len();
    for (i, &b) in tail.iter().enumerate() {
        // SAFETY: done + i < len: inside the range.
        unsafe { dst.add(done + i).write_volatile(b) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::memory::DmaMemory;

    /// The word-at-a-time copies, at every alignment and length around a
    /// word: each byte lands where it should, nothing around it moves.
    #[test]
    fn copies_at_every_alignment_and_length() {
        let mem = DmaMemory::plain();
        let r = Arc::new(mem.alloc("copy test", 4096).unwrap());
        let mmu = IoMmu::new();
        mmu.map(&r).unwrap();
        let mut v = mmu.view();
        let base = r.iova(0);
        for off in 0..16u64 {
            for len in 0..40usize {
                v.write(base, &[0xEE; 64]).unwrap();
                let data: Vec<u8> = (0..len)
                    .map(|i| (i as u8).wrapping_mul(37) ^ 0x5A)
                    .collect();
                v.write(base + 8 + off, &data).unwrap();
                let mut back = vec![0u8; len];
                v.read(base + 8 + off, &mut back).unwrap();
                assert_eq!(back, data, "offset {off}, {len} bytes");
                let mut all = [0u8; 64];
                v.read(base, &mut all).unwrap();
                let at = 8 + off as usize;
                assert!(all[..at].iter().all(|&b| b == 0xEE), "before, {off}/{len}");
                assert!(
                    all[at + len..].iter().all(|&b| b == 0xEE),
                    "after, {off}/{len}"
                );
            }
        }
    }

    #[test]
    fn translates_reads_writes_and_faults() {
        let mem = DmaMemory::plain();
        let r = Arc::new(mem.alloc("dma test", 8192).unwrap());
        let mmu = IoMmu::new();
        mmu.map(&r).unwrap();
        let mut v = mmu.view();
        let base = r.iova(0);
        v.write(base + 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
            .unwrap();
        let mut back = [0u8; 11];
        v.read(base + 3, &mut back).unwrap();
        assert_eq!(back, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        v.write_u64(base + 64, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(v.read_u64(base + 64).unwrap(), 0x1122_3344_5566_7788);
        // Unaligned u64 goes the slow way.
        v.write_u64(base + 65, 7).unwrap();
        assert_eq!(v.read_u64(base + 65).unwrap(), 7);
        // The last byte is mapped, one more is not.
        assert!(v.read(base + 8191, &mut [0u8; 1]).is_ok());
        let e = v.read(base + 8191, &mut [0u8; 2]).unwrap_err();
        assert_eq!((e.iova, e.len, e.write), (base + 8191, 2, false));
        assert!(v.write(base.wrapping_sub(4096), &[0]).is_err());
        // Remapping the same region changes nothing.
        mmu.map(&r).unwrap();
        assert_eq!(mmu.mapping_count(), 1);
        assert_eq!(mmu.unmap(&r), 1);
        mmu.quiesce();
        mmu.refresh(&mut v);
        assert!(v.read(base, &mut [0u8; 1]).is_err());
    }

    #[test]
    fn access_across_two_adjacent_mappings() {
        let mem = DmaMemory::plain();
        // Two regions whose IOVAs happen to be adjacent are rare in mode DC; build
        // the case from one region split by hand.
        let r = Arc::new(mem.alloc("split", 8192).unwrap());
        let mmu = IoMmu::new();
        let half = 4096u64;
        *mmu.table.lock().unwrap() = Arc::from(vec![
            Mapping {
                iova: 0x10_0000,
                len: half,
                host: HostPtr(r.as_ptr()),
                backing: Backing::Region(r.clone()),
                writable: true,
            },
            Mapping {
                iova: 0x10_0000 + half,
                len: half,
                host: HostPtr(r.as_ptr().wrapping_add(4096)),
                backing: Backing::Region(r.clone()),
                writable: true,
            },
        ]);
        mmu.generation.fetch_add(1, Ordering::AcqRel);
        let mut v = mmu.view();
        let data: Vec<u8> = (0..100u8).collect();
        v.write(0x10_0000 + half - 50, &data).unwrap();
        let mut back = vec![0u8; 100];
        v.read(0x10_0000 + half - 50, &mut back).unwrap();
        assert_eq!(back, data);
    }

    /// The table holds what it maps: dropping the caller's handle frees
    /// nothing the device can still reach (before, the entry kept a bare
    /// pointer, and a device write to that IOVA wrote freed memory).
    #[test]
    fn mapped_memory_lives_until_unmapped_and_the_device_lets_go() {
        let mem = DmaMemory::plain();
        let r = Arc::new(mem.alloc("kept", 4096).unwrap());
        let (held, iova) = (Arc::downgrade(&r), r.iova(0));
        let mmu = IoMmu::new();
        mmu.map(&r).unwrap();
        let mut device = mmu.view();
        drop(r);
        assert!(held.upgrade().is_some());
        device.write_u64(iova, 0x5a5a).unwrap();
        assert_eq!(device.read_u64(iova).unwrap(), 0x5a5a);
        assert_eq!(mmu.unmap(&held.upgrade().unwrap()), 1);
        // The device thread's snapshot still has the entry: still allocated.
        assert!(held.upgrade().is_some());
        mmu.refresh(&mut device);
        assert!(held.upgrade().is_none(), "freed once no table has it");
        assert!(device.write_u64(iova, 1).is_err());
    }

    #[test]
    fn overlapping_iovas_of_another_region_are_refused() {
        let mem = DmaMemory::plain();
        let a = Arc::new(mem.alloc("a", 8192).unwrap());
        let b = Arc::new(mem.alloc("b", 4096).unwrap());
        let mmu = IoMmu::new();
        // A hand-built clash (live regions never share IOVAs): b claims a's.
        *mmu.table.lock().unwrap() = Arc::from(vec![Mapping {
            iova: a.iova(4096),
            len: 4096,
            host: HostPtr(b.as_ptr()),
            backing: Backing::Region(b.clone()),
            writable: true,
        }]);
        match mmu.map(&a) {
            Err(MapError::Overlap(what)) => assert!(what.starts_with("b at IOVA"), "{what}"),
            other => panic!("expected an overlap, got {other:?}"),
        }
        assert_eq!(mmu.mapping_count(), 1);
    }

    /// A client's memory (vm-memory's mapping of a file, as a vfio-user
    /// DMA_MAP gives it): reachable at its IOVAs, writes refused where it is
    /// read-only, held until unmapped and the device lets go, and the exact
    /// range only is unmapped.
    #[test]
    fn client_memory_is_held_and_respects_read_only() {
        use vm_memory::{GuestAddress, GuestRegionMmap, MmapRegion};
        let rw = Arc::new(
            GuestRegionMmap::new(MmapRegion::new(0x4000).unwrap(), GuestAddress(0x10_0000))
                .unwrap(),
        );
        let ro = Arc::new(
            GuestRegionMmap::new(MmapRegion::new(0x1000).unwrap(), GuestAddress(0x20_0000))
                .unwrap(),
        );
        let mmu = IoMmu::new();
        mmu.map_client(&rw, true).unwrap();
        mmu.map_client(&ro, false).unwrap();
        let clash = Arc::new(
            GuestRegionMmap::new(MmapRegion::new(0x1000).unwrap(), GuestAddress(0x10_3000))
                .unwrap(),
        );
        match mmu.map_client(&clash, true) {
            Err(MapError::Overlap(what)) => assert!(what.starts_with("client memory"), "{what}"),
            other => panic!("expected an overlap, got {other:?}"),
        }
        let mut device = mmu.view();
        device.write(0x10_3ff8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(device.read_u64(0x10_3ff8).unwrap(), 0x0807_0605_0403_0201);
        // One byte past the end, and a write to the read-only range: faults.
        assert!(device.write(0x10_3ff9, &[0; 8]).is_err());
        let e = device.write_u64(0x20_0000, 1).unwrap_err();
        assert!(e.write);
        assert_eq!(device.read_u64(0x20_0000).unwrap(), 0, "readable");
        // Only the exact range unmaps.
        assert_eq!(mmu.unmap_client(0x10_0000, 0x1000), 0);
        let held = Arc::downgrade(&rw);
        drop(rw);
        assert_eq!(mmu.unmap_client(0x10_0000, 0x4000), 1);
        assert!(
            held.upgrade().is_some(),
            "the device's snapshot still has it"
        );
        mmu.refresh(&mut device);
        assert!(held.upgrade().is_none(), "unmapped once no table has it");
        assert!(device.read_u64(0x10_0000).is_err());
        assert_eq!(mmu.unmap_client(0, u64::MAX), 1, "UNMAP_ALL");
        assert_eq!(mmu.mapping_count(), 0);
    }
}
