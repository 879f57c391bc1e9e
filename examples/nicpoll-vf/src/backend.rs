//! One VF as the `vfio_user` crate's `ServerBackend`: region accesses to its
//! config space, BAR0 (the model's registers) and BAR3 (the MSI-X table and
//! PBA); DMA maps to the client's memory; interrupts to eventfds; resets.
//!
//! Every access reaches the model as the hardware would take it: BAR0 in
//! naturally aligned 1, 2, 4 or 8-byte accesses (an 8-byte access is two
//! 4-byte ones, low dword first, as a PCIe TLP would be split); anything
//! else is refused, logged and counted, never passed on (the model's BAR
//! rejects what a CPU cannot issue).
#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use nicpoll::bar::Bar;
use nicpoll_iavf::sim::{SimVf, SimVfBar};
use std::os::fd::RawFd;

use nicpoll_iavf::sim::DOORBELL_PAGES;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_NORESIZE, VFIO_REGION_INFO_FLAG_MMAP,
    VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE, vfio_region_info,
    vfio_region_sparse_mmap_area,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, IrqInfo, ServerBackend, ServerRegion, SparseArea};

use crate::config_space::{BAR0_LEN, BAR3_LEN, CONFIG_LEN, ConfigSpace};
use crate::irq::{Interrupts, index};
use crate::memory::ClientMemory;
use crate::stats::VfStats;

/// VFIO region indices of a PCI device (`linux/vfio.h`).
pub mod region {
    pub const BAR0: u32 = 0;
    pub const BAR3: u32 = 3;
    pub const CONFIG: u32 = 7;
    /// BAR0..BAR5, ROM, config, VGA.
    pub const COUNT: usize = 9;
}

/// The size of each region, by index.
pub fn region_sizes() -> [u64; region::COUNT] {
    let mut s = [0u64; region::COUNT];
    s[region::BAR0 as usize] = BAR0_LEN;
    s[region::BAR3 as usize] = BAR3_LEN;
    s[region::CONFIG as usize] = CONFIG_LEN as u64;
    s
}

/// The regions as the crate announces them. BAR0's first
/// [`DOORBELL_PAGES`] bytes (the tail doorbells) are mappable when
/// `doorbells` is the memfd holding them: the client maps them into its
/// guest, whose doorbell writes then cost no message and keep their order
/// across VFs. Every other access is a message.
pub fn server_regions(doorbells: Option<RawFd>) -> Vec<ServerRegion> {
    region_sizes()
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let mut flags = if size > 0 {
                VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
            } else {
                0
            };
            let (mut sparse_areas, mut mmap_fd) = (Vec::new(), None);
            if i as u32 == region::BAR0
                && let Some(fd) = doorbells
            {
                flags |= VFIO_REGION_INFO_FLAG_MMAP;
                sparse_areas.push(SparseArea {
                    area: vfio_region_sparse_mmap_area {
                        offset: 0,
                        size: DOORBELL_PAGES as u64,
                    },
                });
                mmap_fd = Some(fd);
            }
            ServerRegion {
                region_info: vfio_region_info {
                    argsz: std::mem::size_of::<vfio_region_info>() as u32,
                    flags,
                    index: i as u32,
                    cap_offset: 0,
                    size,
                    // Where an mmap of the region starts in its file: BAR0's
                    // memfd holds just the doorbell pages, from 0. (Others, as
                    // vfio-pci lays regions out: index << 40.)
                    offset: (i as u64) << 40,
                },
                sparse_areas,
                mmap_fd,
            }
        })
        .collect()
}

/// The IRQ indices as the crate announces them.
pub fn irq_infos(counts: [u32; index::COUNT]) -> Vec<IrqInfo> {
    counts
        .iter()
        .enumerate()
        .map(|(i, &count)| IrqInfo {
            index: i as u32,
            count,
            flags: match (i as u32, count) {
                (_, 0) => 0,
                (index::MSIX, _) => VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE,
                _ => VFIO_IRQ_INFO_EVENTFD,
            },
        })
        .collect()
}

/// One VF behind the protocol.
pub struct VfBackend {
    name: String,
    sim: Arc<SimVf>,
    bar: SimVfBar,
    config: ConfigSpace,
    /// BAR3's MSI-X table (16 bytes per vector), for a client that does not
    /// emulate it (QEMU does, and never reaches it).
    msix_table: Vec<u8>,
    irqs: Arc<Interrupts>,
    memory: ClientMemory,
    stats: Arc<VfStats>,
    /// errno of the last failed call (the crate's error replies carry 0 for
    /// most errors; the relay puts this in).
    last_errno: Arc<AtomicI32>,
}

impl VfBackend {
    /// VF `name` of the model, its interrupts, its counters.
    pub fn new(
        name: &str,
        sim: Arc<SimVf>,
        irqs: Arc<Interrupts>,
        stats: Arc<VfStats>,
        vectors: u16,
        pf: nicpoll_iavf::sim::PfModel,
    ) -> VfBackend {
        let bar = sim.bar();
        VfBackend {
            name: name.to_string(),
            memory: ClientMemory::new(name, sim.clone(), stats.clone()),
            sim,
            bar,
            config: ConfigSpace::new(pf, vectors),
            msix_table: initial_msix_table(vectors),
            irqs,
            stats,
            last_errno: Arc::new(AtomicI32::new(0)),
        }
    }

    /// Where the relay finds the errno of a failed call.
    pub fn last_errno(&self) -> Arc<AtomicI32> {
        self.last_errno.clone()
    }

    fn fail(&self, errno: i32) -> io::Error {
        self.last_errno.store(errno, Ordering::Relaxed);
        io::Error::from_raw_os_error(errno)
    }

    /// A register access the model will not take: logged (the first ones)
    /// and counted.
    fn bad_access(&self, what: &str, offset: u64, len: usize) -> io::Error {
        let n = self
            .stats
            .bad_register_accesses
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n <= 10 || n.is_multiple_of(1000) {
            log::warn!(
                "{}: {len}-byte {what} at BAR0 {offset:#x} refused (only naturally aligned 1, 2, \
                 4 and 8-byte accesses reach the registers; #{n})",
                self.name
            );
        }
        self.fail(libc::EINVAL)
    }

    /// Reset the function (DEVICE_RESET, FLR, the client gone).
    pub fn reset_function(&mut self) {
        self.stats.resets.fetch_add(1, Ordering::Relaxed);
        self.config.reset();
        self.msix_table = initial_msix_table((self.msix_table.len() / 16) as u16);
        self.memory.set_bus_master(false);
        self.sim.function_level_reset();
    }

    /// The client went away: its memory and eventfds go, the function is
    /// reset (as vfio-pci resets a device its user released), the device
    /// state otherwise stays for the next client.
    pub fn client_gone(&mut self) {
        self.memory.clear();
        self.irqs.clear();
        self.reset_function();
    }

    fn bar0_read(&self, offset: u64, data: &mut [u8]) -> io::Result<()> {
        let o = offset as usize;
        match data.len() {
            1 => data[0] = self.bar.read8(o),
            2 if o.is_multiple_of(2) => data.copy_from_slice(&self.bar.read16(o).to_le_bytes()),
            4 if o.is_multiple_of(4) => data.copy_from_slice(&self.bar.read32(o).to_le_bytes()),
            8 if o.is_multiple_of(8) => {
                let lo = self.bar.read32(o);
                let hi = self.bar.read32(o + 4);
                data[..4].copy_from_slice(&lo.to_le_bytes());
                data[4..].copy_from_slice(&hi.to_le_bytes());
            }
            n => return Err(self.bad_access("read", offset, n)),
        }
        Ok(())
    }

    fn bar0_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let o = offset as usize;
        let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
        match data.len() {
            1 => self.bar.write8(o, data[0]),
            2 if o.is_multiple_of(2) => self.bar.write16(o, u16::from_le_bytes([data[0], data[1]])),
            4 if o.is_multiple_of(4) => self.bar.write32(o, u32_at(0)),
            8 if o.is_multiple_of(8) => {
                self.bar.write32(o, u32_at(0));
                self.bar.write32(o + 4, u32_at(4));
            }
            n => return Err(self.bad_access("write", offset, n)),
        }
        Ok(())
    }

    fn bar3_read(&self, offset: u64, data: &mut [u8]) {
        let o = offset as usize;
        data.fill(0);
        let end = (o + data.len()).min(self.msix_table.len());
        if o < end {
            data[..end - o].copy_from_slice(&self.msix_table[o..end]);
        }
        // The PBA (from MSIX_PBA_OFFSET): nothing pending, the client holds
        // the masked vectors.
    }

    fn bar3_write(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        let end = (o + data.len()).min(self.msix_table.len());
        if o < end {
            self.msix_table[o..end].copy_from_slice(&data[..end - o]);
        }
    }
}

/// Every vector masked (Vector Control bit 0), as after reset.
fn initial_msix_table(vectors: u16) -> Vec<u8> {
    let mut t = vec![0u8; usize::from(vectors) * 16];
    for e in t.chunks_mut(16) {
        e[12] = 1;
    }
    t
}

impl ServerBackend for VfBackend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        // The guard checked the range against the region's size.
        match region {
            region::BAR0 => self.bar0_read(offset, data),
            region::BAR3 => {
                self.bar3_read(offset, data);
                Ok(())
            }
            region::CONFIG => {
                self.config.read(offset as usize, data);
                Ok(())
            }
            _ => Err(self.fail(libc::EINVAL)),
        }
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        match region {
            region::BAR0 => self.bar0_write(offset, data),
            region::BAR3 => {
                self.bar3_write(offset, data);
                Ok(())
            }
            region::CONFIG => {
                let w = self.config.write(offset as usize, data);
                if let Some(on) = w.bus_master {
                    log::debug!(
                        "{}: bus master {}",
                        self.name,
                        if on { "on" } else { "off" }
                    );
                    self.memory.set_bus_master(on);
                }
                if w.flr {
                    log::info!("{}: function level reset (config space)", self.name);
                    self.reset_function();
                }
                Ok(())
            }
            _ => Err(self.fail(libc::EINVAL)),
        }
    }

    fn dma_map(
        &mut self,
        flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        self.memory
            .map(flags.bits(), offset, address, size, fd)
            .map_err(|e| self.fail(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn dma_unmap(&mut self, flags: DmaUnmapFlags, address: u64, size: u64) -> io::Result<()> {
        self.memory
            .unmap(flags.bits(), address, size)
            .map_err(|e| self.fail(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn reset(&mut self) -> io::Result<()> {
        log::info!("{}: device reset", self.name);
        self.reset_function();
        Ok(())
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        log::debug!(
            "{}: SET_IRQS index {index} flags {flags:#x} start {start} count {count} fds {}",
            self.name,
            fds.len()
        );
        self.irqs.set(index, flags, start, count, fds).map_err(|e| {
            log::warn!("{}: SET_IRQS: {e}", self.name);
            self.fail(libc::EINVAL)
        })
    }
}
