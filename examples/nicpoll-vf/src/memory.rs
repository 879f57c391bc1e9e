//! The client's memory as the VF may reach it: every DMA_MAP that came with
//! a file descriptor is mapped into this process with vm-memory (a
//! `GuestRegionMmap` over the file, `MAP_SHARED`, at the IOVA the client
//! gave), the set of them kept as a `GuestMemoryMmap`, and each region handed
//! to the model's IOMMU table, which holds it while the device may use it
//! (the table's contract: a mapping holds what it maps; DMA_UNMAP returns
//! once the device has let go).
//!
//! The model sees the client's memory only while the function's Bus Master
//! Enable is set, as a PCIe function may not issue memory requests
//! otherwise (PCIe base §7.5.1.1): a driver that never sets it gets DMA
//! faults here as it would get nothing on a real VF.
//!
//! A mapped file that the client later truncates would make any access
//! past its new end fault with SIGBUS: each file is sealed against shrinking
//! (`F_SEAL_SHRINK`; QEMU's `memory-backend-memfd` seals its memfds already),
//! and one that cannot be sealed (not a memfd) is still mapped, with a
//! warning and a counter.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nicpoll_iavf::sim::SimVf;
use rustix::fs::SealFlags;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

use crate::guard::DMA_UNMAP_FLAG_ALL;
use crate::stats::VfStats;

/// DMA_MAP flag: the device may read.
const MAP_READ: u32 = 1;
/// DMA_MAP flag: the device may write.
const MAP_WRITE: u32 = 2;
/// The most DMA maps a client may hold at once (the protocol's default
/// `max_dma_maps`).
pub const MAX_DMA_MAPS: usize = 65535;

fn err(errno: i32, why: String) -> io::Error {
    log::warn!("{why}");
    io::Error::from_raw_os_error(errno)
}

/// The client's DMA maps of one VF.
pub struct ClientMemory {
    name: String,
    sim: Arc<SimVf>,
    stats: Arc<VfStats>,
    /// Maps with a file, by IOVA.
    mem: GuestMemoryMmap,
    /// `mem`'s regions again, each with whether the device may write it (to
    /// hand to the model).
    regions: Vec<(Arc<GuestRegionMmap>, bool)>,
    /// Maps without a file (ROM, or memory the client would serve through
    /// DMA_READ/WRITE messages): known, never reachable.
    unmappable: Vec<(u64, u64)>,
    /// The model has the regions (Bus Master Enable is set).
    in_model: bool,
}

impl ClientMemory {
    /// No maps yet, the model reaching nothing.
    pub fn new(name: &str, sim: Arc<SimVf>, stats: Arc<VfStats>) -> ClientMemory {
        ClientMemory {
            name: name.to_string(),
            sim,
            stats,
            mem: GuestMemoryMmap::new(),
            regions: Vec::new(),
            unmappable: Vec::new(),
            in_model: false,
        }
    }

    /// How many maps the client holds (with a file, without one).
    #[cfg(test)]
    fn maps(&self) -> (usize, usize) {
        (self.mem.num_regions(), self.unmappable.len())
    }

    fn overlaps(&self, iova: u64, size: u64) -> Option<(u64, u64)> {
        let end = iova + size;
        self.mem
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .chain(self.unmappable.iter().copied())
            .find(|&(a, l)| a < end && iova < a + l)
    }

    /// DMA_MAP (flags, range checked by the guard).
    pub fn map(
        &mut self,
        flags: u32,
        offset: u64,
        iova: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        let what = format!(
            "{}: DMA_MAP of IOVA {iova:#x} (+{size:#x}), file offset {offset:#x}",
            self.name
        );
        if flags & MAP_READ == 0 {
            return Err(err(
                libc::EINVAL,
                format!("{what}: not readable (flags {flags:#x})"),
            ));
        }
        if let Some((a, l)) = self.overlaps(iova, size) {
            return Err(err(
                libc::EEXIST,
                format!("{what}: overlaps the map at {a:#x} (+{l:#x})"),
            ));
        }
        if self.mem.num_regions() + self.unmappable.len() >= MAX_DMA_MAPS {
            return Err(err(
                libc::ENOSPC,
                format!("{what}: the client already holds {MAX_DMA_MAPS} maps"),
            ));
        }
        let Some(file) = fd else {
            self.unmappable.push((iova, size));
            self.stats.dma_maps.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let len = usize::try_from(size)
            .map_err(|_| err(libc::EINVAL, format!("{what}: too large for this host")))?;
        let file_len = file
            .metadata()
            .map_err(|e| err(libc::EBADF, format!("{what}: fstat of its file: {e}")))?
            .len();
        if offset.checked_add(size).is_none_or(|end| end > file_len) {
            return Err(err(
                libc::EINVAL,
                format!("{what}: beyond the end of its {file_len:#x}-byte file"),
            ));
        }
        self.seal(&file, &what);
        let writable = flags & MAP_WRITE != 0;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let region = MmapRegion::build(
            Some(FileOffset::new(file, offset)),
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )
        .map_err(|e| err(libc::EINVAL, format!("{what}: mmap: {e}")))?;
        let region = Arc::new(
            GuestRegionMmap::new(region, GuestAddress(iova))
                .ok_or_else(|| err(libc::EINVAL, format!("{what}: the range wraps")))?,
        );
        self.mem = self
            .mem
            .insert_region(region.clone())
            .map_err(|e| err(libc::EEXIST, format!("{what}: {e}")))?;
        self.regions.push((region.clone(), writable));
        if self.in_model {
            self.sim
                .map_client_memory(&region, writable)
                .map_err(|e| err(libc::EEXIST, format!("{what}: {e}")))?;
        }
        self.stats.dma_maps.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Seal the file against shrinking, as far as it lets us.
    fn seal(&self, file: &File, what: &str) {
        let sealed = match rustix::fs::fcntl_get_seals(file) {
            Ok(s) if s.contains(SealFlags::SHRINK) => true,
            Ok(_) => rustix::fs::fcntl_add_seals(file, SealFlags::SHRINK).is_ok(),
            Err(_) => false,
        };
        if !sealed {
            self.stats.unsealed_maps.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "{what}: its file cannot be sealed against shrinking (not a memfd, or sealed \
                 against sealing): if the client truncates it, this server dies of SIGBUS on \
                 the next DMA there"
            );
        }
    }

    /// DMA_UNMAP: every map inside `[iova, iova + size)` (exactly one, as
    /// QEMU sends it), or all of them with the ALL flag. A map the range cuts
    /// is refused (EINVAL); a range holding none is not an error (as Linux's
    /// type1 IOMMU answers it).
    pub fn unmap(&mut self, flags: u32, iova: u64, size: u64) -> io::Result<()> {
        if flags & DMA_UNMAP_FLAG_ALL != 0 {
            self.clear();
            return Ok(());
        }
        let end = iova.checked_add(size).ok_or_else(|| {
            err(
                libc::EINVAL,
                format!(
                    "{}: DMA_UNMAP of {size:#x} bytes at {iova:#x} wraps",
                    self.name
                ),
            )
        })?;
        let ranges: Vec<(u64, u64)> = self
            .mem
            .iter()
            .map(|r| (r.start_addr().0, r.len()))
            .chain(self.unmappable.iter().copied())
            .filter(|&(a, l)| a < end && iova < a + l)
            .collect();
        if let Some(&(a, l)) = ranges.iter().find(|&&(a, l)| a < iova || a + l > end) {
            return Err(err(
                libc::EINVAL,
                format!(
                    "{}: DMA_UNMAP of IOVA {iova:#x} (+{size:#x}) cuts the map at {a:#x} \
                     (+{l:#x})",
                    self.name
                ),
            ));
        }
        for (a, l) in ranges {
            self.remove(a, l);
        }
        Ok(())
    }

    fn remove(&mut self, iova: u64, len: u64) {
        if let Some(i) = self.unmappable.iter().position(|&r| r == (iova, len)) {
            self.unmappable.remove(i);
            return;
        }
        if self.in_model && self.sim.unmap_client_memory(iova, len).is_err() {
            log::error!(
                "{}: the model had no map of IOVA {iova:#x} (+{len:#x})",
                self.name
            );
        }
        match self.mem.remove_region(GuestAddress(iova), len) {
            Ok((rest, region)) => {
                self.mem = rest;
                // The model let go; this was the last holder: unmapped here.
                drop(region);
            }
            Err(e) => log::error!("{}: unmapping IOVA {iova:#x}: {e}", self.name),
        }
        self.regions.retain(|(r, _)| r.start_addr().0 != iova);
        self.stats.dma_unmaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Unmap everything (UNMAP_ALL, or the client is gone).
    pub fn clear(&mut self) {
        if self.in_model {
            self.sim.unmap_all_client_memory();
        }
        let n = self.mem.num_regions() + self.unmappable.len();
        self.stats.dma_unmaps.fetch_add(n as u64, Ordering::Relaxed);
        self.mem = GuestMemoryMmap::new();
        self.regions.clear();
        self.unmappable.clear();
    }

    /// Bus Master Enable changed: the model gets every region, or none.
    pub fn set_bus_master(&mut self, on: bool) {
        if on == self.in_model {
            return;
        }
        self.in_model = on;
        if !on {
            self.sim.unmap_all_client_memory();
            return;
        }
        for (r, writable) in &self.regions {
            if let Err(e) = self.sim.map_client_memory(r, *writable) {
                log::error!("{}: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll_iavf::sim::SimConfig;
    use std::io::Write;

    fn memfd(len: u64) -> File {
        let fd = rustix::fs::memfd_create(
            "client",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .unwrap();
        let f = File::from(fd);
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn maps_follow_bus_master_and_unmaps_cover_whole_maps() {
        let sim = Arc::new(SimVf::new(SimConfig::default()).unwrap());
        let stats = Arc::new(VfStats::default());
        let mut m = ClientMemory::new("vf0", sim.clone(), stats.clone());
        let f = memfd(0x20_0000);
        (&f).write_all(b"guest RAM").unwrap();
        m.map(3, 0, 0x1000_0000, 0x10_0000, Some(f.try_clone().unwrap()))
            .unwrap();
        m.map(
            3,
            0x10_0000,
            0x2000_0000,
            0x10_0000,
            Some(f.try_clone().unwrap()),
        )
        .unwrap();
        m.map(1, 0, 0xffff_0000, 0x1_0000, None).unwrap();
        assert_eq!(m.maps(), (2, 1));
        // Sealed against shrinking now.
        assert!(
            rustix::fs::fcntl_get_seals(&f)
                .unwrap()
                .contains(SealFlags::SHRINK)
        );
        // Overlap, past the file's end, not readable: refused.
        let e = m.map(3, 0, 0x1008_0000, 0x1000, Some(f.try_clone().unwrap()));
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EEXIST));
        let e = m.map(
            3,
            0x1f_0000,
            0x3000_0000,
            0x2_0000,
            Some(f.try_clone().unwrap()),
        );
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EINVAL));
        assert!(m.map(2, 0, 0x4000_0000, 0x1000, None).is_err());
        // The device reaches nothing until bus mastering is on.
        let mut b = [0u8; 9];
        assert!(sim.read_iova(0x1000_0000, &mut b).is_err());
        m.set_bus_master(true);
        sim.read_iova(0x1000_0000, &mut b).unwrap();
        assert_eq!(&b, b"guest RAM");
        assert_eq!(sim.dma_mapping_count(), 2);
        // An unmap that cuts a map is refused; one that covers it goes.
        assert!(m.unmap(0, 0x1000_0000, 0x1000).is_err());
        m.unmap(0, 0x1000_0000, 0x10_0000).unwrap();
        assert!(sim.read_iova(0x1000_0000, &mut b).is_err());
        assert_eq!(sim.dma_mapping_count(), 1);
        m.set_bus_master(false);
        assert_eq!(sim.dma_mapping_count(), 0);
        m.set_bus_master(true);
        assert_eq!(sim.dma_mapping_count(), 1);
        m.unmap(DMA_UNMAP_FLAG_ALL, 0, 0).unwrap();
        assert_eq!(m.maps(), (0, 0));
        assert_eq!(sim.dma_mapping_count(), 0);
    }
}
