//! Every VFIO system call, each wrapped once, behind the crate-private
//! [`VfioOps`] trait.
//!
//! [`SysVfio`] performs them on the real kernel; the test twin (module `twin`)
//! answers them from canned state and records the calls, so the
//! container/group/device logic above is tested without a kernel.
//!
//! Request numbers: `linux/vfio.h` defines each as `_IO(VFIO_TYPE, VFIO_BASE + n)`
//! with `VFIO_TYPE = ';'` and `VFIO_BASE = 100`; `_IO` has no size or direction
//! bits, so the number is `(';' << 8) | (100 + n)`. vfio-bindings has the structs
//! and constants but not these numbers.
//!
//! This is the VFIO layer's unsafe code: the ioctls, mmap/munmap of device
//! regions, and the three safe doors the rest of the layer goes through instead
//! of the trait's unsafe methods: [`map_dma_in`] (a DMA mapping checked to lie in
//! a [`DmaRegion`]), [`write_config`] (a write checked to stay in config space)
//! and [`map_bar`] (a BAR mapping that becomes a [`VfioBar`] and is unmapped once).
//!
//! Descriptors are owned: `open` and `group_get_device_fd` hand out an
//! [`OwnedFd`], which a [`VfioFd`] gives back to the ops ([`VfioOps::close`])
//! when it drops; every other call borrows one, so no code can name a descriptor
//! it does not hold.

use std::ffi::CString;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use vfio_bindings::bindings::vfio as sys;

use crate::bar::VfioBar;
use crate::memory::DmaRegion;

#[cfg(any(test, feature = "testing"))]
pub mod twin;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`.
const fn vfio_io(n: u32) -> u32 {
    ((sys::VFIO_TYPE as u32) << 8) | (sys::VFIO_BASE + n)
}

/// `VFIO_GET_API_VERSION` (container).
pub const VFIO_GET_API_VERSION: u32 = vfio_io(0);
/// `VFIO_CHECK_EXTENSION` (container).
pub const VFIO_CHECK_EXTENSION: u32 = vfio_io(1);
/// `VFIO_SET_IOMMU` (container).
pub const VFIO_SET_IOMMU: u32 = vfio_io(2);
/// `VFIO_GROUP_GET_STATUS` (group).
pub const VFIO_GROUP_GET_STATUS: u32 = vfio_io(3);
/// `VFIO_GROUP_SET_CONTAINER` (group).
pub const VFIO_GROUP_SET_CONTAINER: u32 = vfio_io(4);
/// `VFIO_GROUP_UNSET_CONTAINER` (group).
pub const VFIO_GROUP_UNSET_CONTAINER: u32 = vfio_io(5);
/// `VFIO_GROUP_GET_DEVICE_FD` (group).
pub const VFIO_GROUP_GET_DEVICE_FD: u32 = vfio_io(6);
/// `VFIO_DEVICE_GET_INFO` (device).
pub const VFIO_DEVICE_GET_INFO: u32 = vfio_io(7);
/// `VFIO_DEVICE_GET_REGION_INFO` (device).
pub const VFIO_DEVICE_GET_REGION_INFO: u32 = vfio_io(8);
/// `VFIO_DEVICE_GET_IRQ_INFO` (device).
pub const VFIO_DEVICE_GET_IRQ_INFO: u32 = vfio_io(9);
/// `VFIO_DEVICE_SET_IRQS` (device).
pub const VFIO_DEVICE_SET_IRQS: u32 = vfio_io(10);
/// `VFIO_DEVICE_RESET` (device).
pub const VFIO_DEVICE_RESET: u32 = vfio_io(11);
/// `VFIO_IOMMU_GET_INFO` (container, type1).
pub const VFIO_IOMMU_GET_INFO: u32 = vfio_io(12);
/// `VFIO_IOMMU_MAP_DMA` (container, type1).
pub const VFIO_IOMMU_MAP_DMA: u32 = vfio_io(13);
/// `VFIO_IOMMU_UNMAP_DMA` (container, type1).
pub const VFIO_IOMMU_UNMAP_DMA: u32 = vfio_io(14);

/// A VFIO descriptor (container, group or device) the ops opened; it goes back
/// to them ([`VfioOps::close`]) when this drops. Not `Clone`: one owner.
pub(crate) struct VfioFd {
    ops: Arc<dyn VfioOps>,
    fd: Option<OwnedFd>,
}

impl VfioFd {
    /// Own `fd`, which `ops` opened.
    pub(crate) fn new(ops: Arc<dyn VfioOps>, fd: OwnedFd) -> VfioFd {
        VfioFd { ops, fd: Some(fd) }
    }
}

impl AsFd for VfioFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("open until dropped").as_fd()
    }
}

impl fmt::Debug for VfioFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fd {
            Some(fd) => write!(f, "VfioFd({})", fd.as_raw_fd()),
            None => f.write_str("VfioFd(closed)"),
        }
    }
}

impl Drop for VfioFd {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            self.ops.close(fd);
        }
    }
}

/// `VFIO_DEVICE_GET_INFO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `VFIO_DEVICE_FLAGS_*` (RESET 1, PCI 2, ...).
    pub flags: u32,
    /// Number of regions (9 for PCI: BAR0-5, ROM, CONFIG, VGA).
    pub num_regions: u32,
    /// Number of IRQ indexes (INTX, MSI, MSIX, ERR, REQ).
    pub num_irqs: u32,
}

/// `VFIO_DEVICE_GET_REGION_INFO`, with the capabilities we use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index.
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*` (READ 1, WRITE 2, MMAP 4, CAPS 8).
    pub flags: u32,
    /// Size in bytes (0: the region does not exist).
    pub size: u64,
    /// Offset of the region in the device file (for pread/pwrite/mmap).
    pub offset: u64,
    /// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: only these (offset, size) areas of the
    /// region may be mmap'd (the rest, e.g. an MSI-X table, may not).
    pub sparse_areas: Option<Vec<(u64, u64)>>,
    /// `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`: the MSI-X table may be mmap'd too.
    pub msix_mappable: bool,
}

impl RegionInfo {
    /// Whether the region may be mmap'd (whole, or in sparse areas).
    pub fn mmappable(&self) -> bool {
        self.flags & sys::VFIO_REGION_INFO_FLAG_MMAP != 0
    }
}

/// `VFIO_DEVICE_GET_IRQ_INFO`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqInfo {
    /// IRQ index.
    pub index: u32,
    /// `VFIO_IRQ_INFO_*`.
    pub flags: u32,
    /// Number of vectors.
    pub count: u32,
}

/// `VFIO_IOMMU_GET_INFO` of a type1 container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IommuInfo {
    /// `VFIO_IOMMU_INFO_*`.
    pub flags: u32,
    /// Supported IOMMU page sizes (bitmap).
    pub iova_pgsizes: u64,
    /// Usable IOVA ranges, inclusive (start, end); empty if the kernel did not say.
    pub iova_ranges: Vec<(u64, u64)>,
    /// How many more DMA mappings the container accepts, if the kernel said.
    pub dma_avail: Option<u32>,
}

/// The VFIO system calls. All methods return the OS error as is; the layers
/// above turn it into a message that says what to fix.
///
/// Crate-private: outside code reaches VFIO only through `VfioContext` and
/// `VfioDevice`, which keep DMA memory alive while it is mapped, own every
/// descriptor and unmap every BAR once.
///
/// # Safety
///
/// The safe doors of this module rely on an implementation to: return from
/// [`mmap`](Self::mmap) a new, page-aligned mapping of exactly `len` readable
/// and writable bytes that stays mapped until [`munmap`](Self::munmap) is given
/// it, and return from [`open`](Self::open) and
/// [`group_get_device_fd`](Self::group_get_device_fd) descriptors nothing else
/// owns.
pub(crate) unsafe trait VfioOps: Send + Sync + fmt::Debug {
    /// Whether a device node exists (`/dev/vfio/N`, `/dev/vfio/noiommu-N`).
    fn exists(&self, path: &Path) -> bool;
    /// `open(path, O_RDWR | O_CLOEXEC)`.
    fn open(&self, path: &Path) -> io::Result<OwnedFd>;
    /// `close(fd)`: give back a descriptor these ops opened.
    fn close(&self, fd: OwnedFd);
    /// `VFIO_GET_API_VERSION`.
    fn get_api_version(&self, container: BorrowedFd<'_>) -> io::Result<i32>;
    /// `VFIO_CHECK_EXTENSION`: whether the container supports `ext`.
    fn check_extension(&self, container: BorrowedFd<'_>, ext: u32) -> io::Result<bool>;
    /// `VFIO_SET_IOMMU`.
    fn set_iommu(&self, container: BorrowedFd<'_>, iommu_type: u32) -> io::Result<()>;
    /// `VFIO_IOMMU_GET_INFO` with its capability chain.
    fn iommu_info(&self, container: BorrowedFd<'_>) -> io::Result<IommuInfo>;
    /// `VFIO_IOMMU_MAP_DMA` read+write: the container's devices may then read
    /// and write `size` bytes of our memory at `vaddr` through IOVA `iova`.
    ///
    /// # Safety
    ///
    /// `vaddr..vaddr + size` must be memory of this process that no Rust
    /// reference covers while it is mapped (the device may write it at any
    /// time), and it must stay allocated to us until the range is unmapped
    /// ([`unmap_dma`](Self::unmap_dma), or the container closes): the IOMMU
    /// keeps the pages it pinned, so memory later placed at that address is not
    /// what the device sees. (Use [`map_dma_in`].)
    unsafe fn map_dma(
        &self,
        container: BorrowedFd<'_>,
        vaddr: u64,
        iova: u64,
        size: u64,
    ) -> io::Result<()>;
    /// `VFIO_IOMMU_UNMAP_DMA`; returns the bytes unmapped. Safe: it only takes
    /// access away from the devices.
    fn unmap_dma(&self, container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<u64>;
    /// `VFIO_GROUP_GET_STATUS` flags.
    fn group_status(&self, group: BorrowedFd<'_>) -> io::Result<u32>;
    /// `VFIO_GROUP_SET_CONTAINER`.
    fn group_set_container(
        &self,
        group: BorrowedFd<'_>,
        container: BorrowedFd<'_>,
    ) -> io::Result<()>;
    /// `VFIO_GROUP_UNSET_CONTAINER`.
    fn group_unset_container(&self, group: BorrowedFd<'_>) -> io::Result<()>;
    /// `VFIO_GROUP_GET_DEVICE_FD` for the device named `name` (`0000:00:03.0`).
    fn group_get_device_fd(&self, group: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd>;
    /// `VFIO_DEVICE_GET_INFO`.
    fn device_info(&self, device: BorrowedFd<'_>) -> io::Result<DeviceInfo>;
    /// `VFIO_DEVICE_GET_REGION_INFO` (with capabilities).
    fn region_info(&self, device: BorrowedFd<'_>, index: u32) -> io::Result<RegionInfo>;
    /// `VFIO_DEVICE_GET_IRQ_INFO`.
    fn irq_info(&self, device: BorrowedFd<'_>, index: u32) -> io::Result<IrqInfo>;
    /// `VFIO_DEVICE_SET_IRQS` with `DATA_EVENTFD | ACTION_TRIGGER` for vectors
    /// `start..start + fds.len()`; `None` detaches that vector. An empty `fds`
    /// disables the whole index (`DATA_NONE | ACTION_TRIGGER`, count 0).
    fn set_irq_eventfds(
        &self,
        device: BorrowedFd<'_>,
        index: u32,
        start: u32,
        fds: &[Option<BorrowedFd<'_>>],
    ) -> io::Result<()>;
    /// `VFIO_DEVICE_RESET`.
    fn device_reset(&self, device: BorrowedFd<'_>) -> io::Result<()>;
    /// `pread` at a device-file offset (region offset + offset within).
    fn pread(&self, device: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// `pwrite` at a device-file offset: programs the device.
    ///
    /// # Safety
    ///
    /// `offset` must lie in a region of `device` that the caller means to write
    /// (config space, a BAR's registers), and the write must not make the
    /// device access memory outside its container's DMA mappings. (Use
    /// [`write_config`].)
    unsafe fn pwrite(&self, device: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// `mmap` `len` bytes of the device file at `offset`, shared, read+write,
    /// at an address the kernel chooses (so nothing else is replaced). With
    /// `areas` (sparse mmap), reserve `len` bytes inaccessible and map only the
    /// (offset within the region, size) areas into it.
    fn mmap(
        &self,
        device: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        areas: Option<&[(u64, u64)]>,
    ) -> io::Result<NonNull<u8>>;
    /// `munmap` what [`VfioOps::mmap`] returned.
    ///
    /// # Safety
    ///
    /// `addr` and `len` must be exactly a mapping `mmap` returned and that was
    /// not unmapped yet, and nothing may access it afterwards. (Use
    /// [`map_bar`], whose `VfioBar` unmaps once, when it drops.)
    unsafe fn munmap(&self, addr: NonNull<u8>, len: usize);
}

/// Map `size` bytes at `vaddr` of `region` for DMA at `iova`
/// (`VFIO_IOMMU_MAP_DMA`). EINVAL unless the range lies inside the region.
///
/// Callers keep the region (an `Arc`) until they unmap the range: the VFIO
/// context's mapping list holds one.
pub(crate) fn map_dma_in(
    ops: &dyn VfioOps,
    container: BorrowedFd<'_>,
    region: &DmaRegion,
    vaddr: u64,
    iova: u64,
    size: u64,
) -> io::Result<()> {
    let start = region.as_ptr() as u64;
    let end = start + region.len() as u64;
    let inside = size > 0 && vaddr >= start && vaddr.checked_add(size).is_some_and(|e| e <= end);
    if !inside {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: the range lies inside `region`, DMA memory: mapped for as long as
    // the region lives and only ever reached through raw pointers, never a Rust
    // reference (`DmaRegion`'s contract). The VFIO context holds the region
    // until it unmaps this range or closes the container.
    unsafe { ops.map_dma(container, vaddr, iova, size) }
}

/// Write `buf` at `offset` of the PCI config space `cfg` describes
/// (`pwrite`). EINVAL unless `cfg` is the config region and the write stays
/// inside it.
pub(crate) fn write_config(
    ops: &dyn VfioOps,
    device: BorrowedFd<'_>,
    cfg: &RegionInfo,
    offset: u64,
    buf: &[u8],
) -> io::Result<usize> {
    let inside = cfg.index == sys::VFIO_PCI_CONFIG_REGION_INDEX
        && offset
            .checked_add(buf.len() as u64)
            .is_some_and(|e| e <= cfg.size);
    if !inside {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: the write stays in config space. vfio-pci virtualizes the
    // registers through which it could move device memory or redirect writes
    // (BARs, expansion ROM, MSI/MSI-X: drivers/vfio/pci/vfio_pci_config.c), so
    // what is left is the command register and device-specific state: with an
    // IOMMU the device still reaches only the container's mappings, which
    // `map_dma_in` limits to live DMA regions. Without one (no-IOMMU, which the
    // kernel calls unsafe by name) nothing confines a device, whatever we write
    // here or through its BAR registers; see docs/DECISIONS.md.
    unsafe { ops.pwrite(device, buf, cfg.offset + offset) }
}

/// mmap `len` bytes of the device file at `offset` (sparse `areas`, if given)
/// and make them BAR `index`. The mapping, and `keep` (the device it belongs
/// to), live until the returned `VfioBar` drops; then it is unmapped, once.
pub(crate) fn map_bar(
    ops: &Arc<dyn VfioOps>,
    device: BorrowedFd<'_>,
    offset: u64,
    len: usize,
    areas: Option<&[(u64, u64)]>,
    index: u32,
    keep: Box<dyn Send + Sync>,
) -> io::Result<VfioBar> {
    let base = ops.mmap(device, offset, len, areas)?;
    let owner = BarMapping {
        ops: ops.clone(),
        addr: base.as_ptr() as usize,
        len,
        _keep: keep,
    };
    // SAFETY: `base..base + len` is the fresh read-write mapping `mmap` made
    // (the trait's contract), page-aligned; `owner` unmaps it exactly once, when
    // the VfioBar that owns it drops, and nothing else holds a pointer into it.
    Ok(unsafe { VfioBar::new(base, len, index, Box::new(owner)) })
}

/// A BAR mapping, unmapped when dropped (before the device it keeps goes).
struct BarMapping {
    ops: Arc<dyn VfioOps>,
    addr: usize,
    len: usize,
    _keep: Box<dyn Send + Sync>,
}

impl Drop for BarMapping {
    fn drop(&mut self) {
        if let Some(p) = NonNull::new(self.addr as *mut u8) {
            // SAFETY: exactly the mapping `map_bar` got from `mmap`; this runs
            // once, when its VfioBar (the only user) drops.
            unsafe { self.ops.munmap(p, self.len) };
        }
    }
}

/// The real VFIO system calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct SysVfio;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// ioctl with no argument or an integer argument.
fn ioctl_val(fd: BorrowedFd<'_>, request: u32, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: for these requests the kernel reads no memory of ours: the argument
    // is a plain value (or ignored).
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) })
}

/// ioctl whose argument points at `*arg`, a `#[repr(C)]` struct (or buffer) the
/// kernel may read and write within its `argsz`.
///
/// # Safety
///
/// `arg` must be valid for reads and writes of the size the request uses (for
/// VFIO, the `argsz` written in its first field, which must not exceed the
/// buffer).
unsafe fn ioctl_ptr<T>(fd: BorrowedFd<'_>, request: u32, arg: *mut T) -> io::Result<libc::c_int> {
    // SAFETY: the caller guarantees `arg` covers what the kernel accesses.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) })
}

/// A zeroed, 8-byte aligned buffer of `len` bytes for a VFIO info struct plus its
/// capability chain.
fn info_buffer(len: usize) -> Vec<u64> {
    vec![0u64; len.div_ceil(8)]
}

/// Walk a VFIO capability chain in `buf` (bytes) from `offset`; call `f(id, at)`
/// for each header. Stops on a malformed chain (an offset out of the buffer or
/// not increasing).
fn walk_caps(buf: &[u8], mut offset: usize, mut f: impl FnMut(u16, usize)) {
    let hdr = size_of::<sys::vfio_info_cap_header>();
    let mut guard = 0;
    while offset != 0 && offset + hdr <= buf.len() && guard < 64 {
        let id = u16::from_ne_bytes([buf[offset], buf[offset + 1]]);
        let next = u32::from_ne_bytes(buf[offset + 4..offset + 8].try_into().unwrap()) as usize;
        f(id, offset);
        if next != 0 && next <= offset {
            break;
        }
        offset = next;
        guard += 1;
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// View a `Vec<u64>` buffer as bytes.
fn bytes(buf: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern of it is valid; the slice
    // covers exactly the same memory, and u8 alignment is 1.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), buf.len() * 8) }
}

/// Parse sparse-mmap and MSI-X-mappable capabilities of a region info buffer.
fn parse_region_caps(buf: &[u8], first: usize, info: &mut RegionInfo) {
    walk_caps(buf, first, |id, at| match id as u32 {
        sys::VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
            // header (8), nr_areas (4), reserved (4), areas [{offset u64, size u64}]
            if let Some(n) = read_u32(buf, at + 8) {
                let areas = (0..n as usize)
                    .filter_map(|i| {
                        let a = at + 16 + i * 16;
                        Some((read_u64(buf, a)?, read_u64(buf, a + 8)?))
                    })
                    .collect();
                info.sparse_areas = Some(areas);
            }
        }
        sys::VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => info.msix_mappable = true,
        _ => {}
    });
}

/// Parse IOVA-range and DMA-avail capabilities of an IOMMU info buffer.
fn parse_iommu_caps(buf: &[u8], first: usize, info: &mut IommuInfo) {
    walk_caps(buf, first, |id, at| match id as u32 {
        sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
            if let Some(n) = read_u32(buf, at + 8) {
                info.iova_ranges = (0..n as usize)
                    .filter_map(|i| {
                        let a = at + 16 + i * 16;
                        Some((read_u64(buf, a)?, read_u64(buf, a + 8)?))
                    })
                    .collect();
            }
        }
        sys::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => info.dma_avail = read_u32(buf, at + 8),
        _ => {}
    });
}

// SAFETY: `mmap` maps at an address the kernel picks (no MAP_FIXED outside
// our own reservation) and returns only a successful mapping of `len` bytes;
// descriptors come from open(2) and VFIO_GROUP_GET_DEVICE_FD, fresh.
unsafe impl VfioOps for SysVfio {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn open(&self, path: &Path) -> io::Result<OwnedFd> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        Ok(file.into())
    }

    fn close(&self, fd: OwnedFd) {
        drop(fd);
    }

    fn get_api_version(&self, container: BorrowedFd<'_>) -> io::Result<i32> {
        ioctl_val(container, VFIO_GET_API_VERSION, 0)
    }

    fn check_extension(&self, container: BorrowedFd<'_>, ext: u32) -> io::Result<bool> {
        ioctl_val(container, VFIO_CHECK_EXTENSION, ext.into()).map(|r| r > 0)
    }

    fn set_iommu(&self, container: BorrowedFd<'_>, iommu_type: u32) -> io::Result<()> {
        ioctl_val(container, VFIO_SET_IOMMU, iommu_type.into()).map(drop)
    }

    fn iommu_info(&self, container: BorrowedFd<'_>) -> io::Result<IommuInfo> {
        let base = size_of::<sys::vfio_iommu_type1_info>();
        let mut len = base;
        for _ in 0..2 {
            let mut buf = info_buffer(len.max(base));
            let p = buf.as_mut_ptr().cast::<sys::vfio_iommu_type1_info>();
            // SAFETY: the buffer is zeroed, 8-aligned and at least `base` bytes,
            // so `p` points at a valid vfio_iommu_type1_info.
            unsafe { (*p).argsz = (buf.len() * 8) as u32 };
            // SAFETY: argsz is the buffer's size; the kernel writes within it.
            unsafe { ioctl_ptr(container, VFIO_IOMMU_GET_INFO, p)? };
            // SAFETY: the kernel filled the struct; `p` is still valid.
            let raw = unsafe { ptr::read(p) };
            if raw.argsz as usize > buf.len() * 8 {
                len = raw.argsz as usize;
                continue;
            }
            let mut info = IommuInfo {
                flags: raw.flags,
                iova_pgsizes: raw.iova_pgsizes,
                ..IommuInfo::default()
            };
            if raw.flags & sys::VFIO_IOMMU_INFO_CAPS != 0 {
                parse_iommu_caps(bytes(&buf), raw.cap_offset as usize, &mut info);
            }
            return Ok(info);
        }
        Err(io::Error::other("VFIO_IOMMU_GET_INFO kept growing"))
    }

    unsafe fn map_dma(
        &self,
        container: BorrowedFd<'_>,
        vaddr: u64,
        iova: u64,
        size: u64,
    ) -> io::Result<()> {
        let mut m = sys::vfio_iommu_type1_dma_map {
            argsz: size_of::<sys::vfio_iommu_type1_dma_map>() as u32,
            flags: sys::VFIO_DMA_MAP_FLAG_READ | sys::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        };
        // SAFETY: `m` is a complete vfio_iommu_type1_dma_map whose argsz is its size.
        unsafe { ioctl_ptr(container, VFIO_IOMMU_MAP_DMA, &mut m).map(drop) }
    }

    fn unmap_dma(&self, container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<u64> {
        let mut u = sys::vfio_iommu_type1_dma_unmap {
            argsz: size_of::<sys::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova,
            size,
            data: Default::default(),
        };
        // SAFETY: `u` is a complete vfio_iommu_type1_dma_unmap (no bitmap) whose
        // argsz is its size; the kernel writes back `size`.
        unsafe { ioctl_ptr(container, VFIO_IOMMU_UNMAP_DMA, &mut u)? };
        Ok(u.size)
    }

    fn group_status(&self, group: BorrowedFd<'_>) -> io::Result<u32> {
        let mut s = sys::vfio_group_status {
            argsz: size_of::<sys::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: `s` is a complete vfio_group_status whose argsz is its size.
        unsafe { ioctl_ptr(group, VFIO_GROUP_GET_STATUS, &mut s)? };
        Ok(s.flags)
    }

    fn group_set_container(
        &self,
        group: BorrowedFd<'_>,
        container: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut fd: libc::c_int = container.as_raw_fd();
        // SAFETY: the kernel reads one int (the container fd) from the pointer.
        unsafe { ioctl_ptr(group, VFIO_GROUP_SET_CONTAINER, &mut fd).map(drop) }
    }

    fn group_unset_container(&self, group: BorrowedFd<'_>) -> io::Result<()> {
        ioctl_val(group, VFIO_GROUP_UNSET_CONTAINER, 0).map(drop)
    }

    fn group_get_device_fd(&self, group: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
        let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the kernel reads a NUL-terminated string, which `name` is, and
        // writes nothing through the pointer.
        let fd = unsafe { ioctl_ptr(group, VFIO_GROUP_GET_DEVICE_FD, name.as_ptr().cast_mut())? };
        // SAFETY: on success the ioctl returns a new descriptor, which no one
        // else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn device_info(&self, device: BorrowedFd<'_>) -> io::Result<DeviceInfo> {
        let mut d = sys::vfio_device_info {
            argsz: size_of::<sys::vfio_device_info>() as u32,
            ..Default::default()
        };
        // SAFETY: `d` is a complete vfio_device_info whose argsz is its size.
        unsafe { ioctl_ptr(device, VFIO_DEVICE_GET_INFO, &mut d)? };
        Ok(DeviceInfo {
            flags: d.flags,
            num_regions: d.num_regions,
            num_irqs: d.num_irqs,
        })
    }

    fn region_info(&self, device: BorrowedFd<'_>, index: u32) -> io::Result<RegionInfo> {
        let base = size_of::<sys::vfio_region_info>();
        let mut len = base;
        for _ in 0..2 {
            let mut buf = info_buffer(len.max(base));
            let p = buf.as_mut_ptr().cast::<sys::vfio_region_info>();
            // SAFETY: zeroed, 8-aligned, at least `base` bytes: a valid struct.
            unsafe {
                (*p).argsz = (buf.len() * 8) as u32;
                (*p).index = index;
            }
            // SAFETY: argsz is the buffer's size; the kernel writes within it.
            unsafe { ioctl_ptr(device, VFIO_DEVICE_GET_REGION_INFO, p)? };
            // SAFETY: the kernel filled the struct; `p` is still valid.
            let raw = unsafe { ptr::read(p) };
            let has_caps = raw.flags & sys::VFIO_REGION_INFO_FLAG_CAPS != 0;
            if has_caps && raw.argsz as usize > buf.len() * 8 {
                len = raw.argsz as usize;
                continue;
            }
            let mut info = RegionInfo {
                index,
                flags: raw.flags,
                size: raw.size,
                offset: raw.offset,
                ..RegionInfo::default()
            };
            if has_caps {
                parse_region_caps(bytes(&buf), raw.cap_offset as usize, &mut info);
            }
            return Ok(info);
        }
        Err(io::Error::other("VFIO_DEVICE_GET_REGION_INFO kept growing"))
    }

    fn irq_info(&self, device: BorrowedFd<'_>, index: u32) -> io::Result<IrqInfo> {
        let mut i = sys::vfio_irq_info {
            argsz: size_of::<sys::vfio_irq_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `i` is a complete vfio_irq_info whose argsz is its size.
        unsafe { ioctl_ptr(device, VFIO_DEVICE_GET_IRQ_INFO, &mut i)? };
        Ok(IrqInfo {
            index,
            flags: i.flags,
            count: i.count,
        })
    }

    fn set_irq_eventfds(
        &self,
        device: BorrowedFd<'_>,
        index: u32,
        start: u32,
        fds: &[Option<BorrowedFd<'_>>],
    ) -> io::Result<()> {
        let fds: Vec<i32> = fds
            .iter()
            .map(|f| f.map_or(-1, |f| f.as_raw_fd()))
            .collect();
        let fds = fds.as_slice();
        let head = size_of::<sys::vfio_irq_set>();
        let total = head + size_of_val(fds);
        let mut buf = info_buffer(total);
        let p = buf.as_mut_ptr().cast::<sys::vfio_irq_set>();
        let flags = if fds.is_empty() {
            sys::VFIO_IRQ_SET_DATA_NONE | sys::VFIO_IRQ_SET_ACTION_TRIGGER
        } else {
            sys::VFIO_IRQ_SET_DATA_EVENTFD | sys::VFIO_IRQ_SET_ACTION_TRIGGER
        };
        // SAFETY: the buffer is zeroed, 8-aligned and holds the header plus
        // `fds.len()` ints right after it (the struct's flexible `data`).
        unsafe {
            *p = sys::vfio_irq_set {
                argsz: total as u32,
                flags,
                index,
                start,
                count: fds.len() as u32,
                data: Default::default(),
            };
            ptr::copy_nonoverlapping(
                fds.as_ptr(),
                buf.as_mut_ptr().cast::<u8>().add(head).cast::<i32>(),
                fds.len(),
            );
        }
        // SAFETY: argsz covers exactly the header and the fds in the buffer.
        unsafe { ioctl_ptr(device, VFIO_DEVICE_SET_IRQS, p).map(drop) }
    }

    fn device_reset(&self, device: BorrowedFd<'_>) -> io::Result<()> {
        ioctl_val(device, VFIO_DEVICE_RESET, 0).map(drop)
    }

    fn pread(&self, device: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(rustix::io::pread(device, buf, offset)?)
    }

    unsafe fn pwrite(&self, device: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize> {
        Ok(rustix::io::pwrite(device, buf, offset)?)
    }

    fn mmap(
        &self,
        device: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        areas: Option<&[(u64, u64)]>,
    ) -> io::Result<NonNull<u8>> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let Some(areas) = areas else {
            // SAFETY: no MAP_FIXED: the kernel picks a free range, so no memory
            // Rust owns is replaced; all arguments are values.
            let p = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    prot,
                    libc::MAP_SHARED,
                    device.as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            return NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned 0"));
        };
        // Reserve the whole BAR inaccessible, then map each allowed area over it.
        // SAFETY: an anonymous PROT_NONE reservation at a kernel-chosen address.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        for &(off, size) in areas {
            if size == 0 {
                continue;
            }
            if off.checked_add(size).is_none_or(|end| end > len as u64) {
                // SAFETY: unmapping exactly our reservation.
                unsafe { libc::munmap(base, len) };
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            // SAFETY: MAP_FIXED replaces only pages of our own reservation
            // (checked inside `len` above), which nothing else uses.
            let p = unsafe {
                libc::mmap(
                    base.cast::<u8>().add(off as usize).cast(),
                    size as usize,
                    prot,
                    libc::MAP_SHARED | libc::MAP_FIXED,
                    device.as_raw_fd(),
                    (offset + off) as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                // SAFETY: unmapping exactly our reservation (and the areas in it).
                unsafe { libc::munmap(base, len) };
                return Err(e);
            }
        }
        NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap returned 0"))
    }

    unsafe fn munmap(&self, addr: NonNull<u8>, len: usize) {
        // SAFETY: `addr`/`len` are exactly a mapping `mmap` returned, unmapped once
        // by its owner after the last access through it (the caller's contract).
        if unsafe { libc::munmap(addr.as_ptr().cast(), len) } != 0 {
            log::warn!("VFIO: munmap {addr:p}: {}", io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_linux_vfio_h() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3B64);
        assert_eq!(VFIO_GET_API_VERSION, 15204);
        assert_eq!(VFIO_CHECK_EXTENSION, 15205);
        assert_eq!(VFIO_SET_IOMMU, 15206);
        assert_eq!(VFIO_GROUP_GET_STATUS, 15207);
        assert_eq!(VFIO_GROUP_SET_CONTAINER, 15208);
        assert_eq!(VFIO_GROUP_UNSET_CONTAINER, 15209);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 15210);
        assert_eq!(VFIO_DEVICE_GET_INFO, 15211);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 15212);
        assert_eq!(VFIO_DEVICE_GET_IRQ_INFO, 15213);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 15214);
        assert_eq!(VFIO_DEVICE_RESET, 15215);
        assert_eq!(VFIO_IOMMU_GET_INFO, 15216);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 15217);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 15218);
        assert_eq!(sys::VFIO_NOIOMMU_IOMMU, 8);
        assert_eq!(sys::VFIO_TYPE1v2_IOMMU, 3);
    }

    fn put(buf: &mut [u8], at: usize, v: &[u8]) {
        buf[at..at + v.len()].copy_from_slice(v);
    }

    #[test]
    fn parses_capability_chains() {
        // Region info: sparse mmap at 32 (2 areas) -> MSI-X mappable at 80.
        let mut b = vec![0u8; 96];
        put(&mut b, 32, &1u16.to_ne_bytes());
        put(&mut b, 36, &80u32.to_ne_bytes());
        put(&mut b, 40, &2u32.to_ne_bytes());
        put(&mut b, 48, &0u64.to_ne_bytes());
        put(&mut b, 56, &0x2000u64.to_ne_bytes());
        put(&mut b, 64, &0x3000u64.to_ne_bytes());
        put(&mut b, 72, &0x1000u64.to_ne_bytes());
        put(&mut b, 80, &3u16.to_ne_bytes());
        let mut r = RegionInfo::default();
        parse_region_caps(&b, 32, &mut r);
        assert_eq!(r.sparse_areas, Some(vec![(0, 0x2000), (0x3000, 0x1000)]));
        assert!(r.msix_mappable);

        // IOMMU info: IOVA ranges at 24 -> DMA avail at 56; a looping `next` stops.
        let mut b = vec![0u8; 72];
        put(&mut b, 24, &1u16.to_ne_bytes());
        put(&mut b, 28, &56u32.to_ne_bytes());
        put(&mut b, 32, &1u32.to_ne_bytes());
        put(&mut b, 40, &0u64.to_ne_bytes());
        put(&mut b, 48, &0x7f_ffff_ffffu64.to_ne_bytes());
        put(&mut b, 56, &3u16.to_ne_bytes());
        put(&mut b, 60, &24u32.to_ne_bytes());
        put(&mut b, 64, &65535u32.to_ne_bytes());
        let mut i = IommuInfo::default();
        parse_iommu_caps(&b, 24, &mut i);
        assert_eq!(i.iova_ranges, vec![(0, 0x7f_ffff_ffff)]);
        assert_eq!(i.dma_avail, Some(65535));

        // A chain pointing outside the buffer is ignored.
        let mut r = RegionInfo::default();
        parse_region_caps(&[0u8; 16], 400, &mut r);
        assert_eq!(r, RegionInfo::default());
    }
}
