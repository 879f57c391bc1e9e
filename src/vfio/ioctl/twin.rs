//! The test twin of the VFIO system calls: a [`VfioOps`] that answers from canned
//! state, behaves like the kernel where our code relies on it (order of
//! SET_CONTAINER / SET_IOMMU / GET_DEVICE_FD, ENOTTY for MAP_DMA without an
//! IOMMU, overlapping mappings), records every call, and fails on demand.
//!
//! BAR mmaps are backed by anonymous memory (memmap2), so a `VfioBar` over the
//! twin reads back what was written. Its descriptors are real ones (of
//! `/dev/null`), so they are owned like the kernel's; the twin knows each by its
//! number while it is open.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use vfio_bindings::bindings::vfio as sys;

use super::{DeviceInfo, IommuInfo, IrqInfo, RegionInfo, VfioOps};

/// What a twin fd stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handle {
    /// The container.
    Container,
    /// Group N.
    Group(u32),
    /// The device of this PCI address.
    Device(String),
}

/// One recorded call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    /// `open(path)`.
    Open(PathBuf),
    /// `close`.
    Close(Handle),
    /// `VFIO_GET_API_VERSION`.
    GetApiVersion,
    /// `VFIO_CHECK_EXTENSION(ext)`.
    CheckExtension(u32),
    /// `VFIO_SET_IOMMU(type)`.
    SetIommu(u32),
    /// `VFIO_IOMMU_GET_INFO`.
    IommuInfo,
    /// `VFIO_IOMMU_MAP_DMA`.
    MapDma {
        /// Virtual address.
        vaddr: u64,
        /// IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
    },
    /// `VFIO_IOMMU_UNMAP_DMA`.
    UnmapDma {
        /// IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
    },
    /// `VFIO_GROUP_GET_STATUS` of group N.
    GroupStatus(u32),
    /// `VFIO_GROUP_SET_CONTAINER` of group N.
    SetContainer(u32),
    /// `VFIO_GROUP_UNSET_CONTAINER` of group N.
    UnsetContainer(u32),
    /// `VFIO_GROUP_GET_DEVICE_FD(name)`.
    GetDeviceFd(String),
    /// `VFIO_DEVICE_GET_INFO`.
    DeviceInfo(String),
    /// `VFIO_DEVICE_GET_REGION_INFO(index)`.
    RegionInfo(String, u32),
    /// `VFIO_DEVICE_GET_IRQ_INFO(index)`.
    IrqInfo(String, u32),
    /// `VFIO_DEVICE_SET_IRQS`.
    SetIrqs {
        /// Device.
        device: String,
        /// IRQ index.
        index: u32,
        /// First vector.
        start: u32,
        /// The eventfds (empty: disable).
        fds: Vec<i32>,
    },
    /// `VFIO_DEVICE_RESET`.
    Reset(String),
    /// `pread` of config space.
    ConfigRead {
        /// Device.
        device: String,
        /// Offset in config space.
        offset: u64,
        /// Bytes.
        len: usize,
    },
    /// `pwrite` of config space.
    ConfigWrite {
        /// Device.
        device: String,
        /// Offset in config space.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `mmap` of a region.
    Mmap {
        /// Device.
        device: String,
        /// Region index.
        index: u32,
        /// Bytes.
        len: usize,
        /// Sparse areas given.
        sparse: bool,
    },
    /// `munmap`.
    Munmap {
        /// Bytes.
        len: usize,
    },
}

/// An operation that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `open` (any path, unless a path failure says otherwise).
    Open,
    /// `VFIO_GET_API_VERSION`.
    GetApiVersion,
    /// `VFIO_SET_IOMMU`.
    SetIommu,
    /// `VFIO_IOMMU_GET_INFO`.
    IommuInfo,
    /// `VFIO_IOMMU_MAP_DMA`.
    MapDma,
    /// `VFIO_IOMMU_UNMAP_DMA`.
    UnmapDma,
    /// `VFIO_GROUP_GET_STATUS`.
    GroupStatus,
    /// `VFIO_GROUP_SET_CONTAINER`.
    SetContainer,
    /// `VFIO_GROUP_GET_DEVICE_FD`.
    GetDeviceFd,
    /// `VFIO_DEVICE_GET_INFO`.
    DeviceInfo,
    /// `VFIO_DEVICE_GET_REGION_INFO`.
    RegionInfo,
    /// `VFIO_DEVICE_RESET`.
    Reset,
    /// `pread`.
    Pread,
    /// `pwrite`.
    Pwrite,
    /// `mmap`.
    Mmap,
}

/// A device the twin knows.
#[derive(Clone, Debug)]
pub struct TwinDevice {
    /// `VFIO_DEVICE_GET_INFO`.
    pub info: DeviceInfo,
    /// Regions by index; size 0 answers EINVAL.
    pub regions: Vec<RegionInfo>,
    /// Config space contents.
    pub config: Vec<u8>,
    /// IRQ infos by index.
    pub irqs: Vec<IrqInfo>,
}

const R: u32 = sys::VFIO_REGION_INFO_FLAG_READ;
const W: u32 = sys::VFIO_REGION_INFO_FLAG_WRITE;
const M: u32 = sys::VFIO_REGION_INFO_FLAG_MMAP;
const C: u32 = sys::VFIO_REGION_INFO_FLAG_CAPS;

/// Where vfio-pci puts the region index in a device-file offset (Linux's
/// `VFIO_PCI_OFFSET_SHIFT`, a private vfio-pci header).
const REGION_SHIFT: u32 = 40;

/// Device-file offset of region `index`, as vfio-pci lays them out.
pub fn region_offset(index: u32) -> u64 {
    (index as u64) << REGION_SHIFT
}

/// The region index and the offset inside it of a device-file offset.
fn region_and_offset(offset: u64) -> (u32, u64) {
    (
        (offset >> REGION_SHIFT) as u32,
        offset & ((1 << REGION_SHIFT) - 1),
    )
}

/// The bytes of a `len`-byte access at `off` that fall inside a config space
/// of `size` bytes (a short transfer past its end, as the kernel's).
fn config_span(size: usize, off: u64, len: usize) -> std::ops::Range<usize> {
    let off = (off as usize).min(size);
    off..off + len.min(size - off)
}

fn region(index: u32, size: u64, flags: u32) -> RegionInfo {
    RegionInfo {
        index,
        flags,
        size,
        offset: region_offset(index),
        ..RegionInfo::default()
    }
}

impl TwinDevice {
    /// A PCI device with these ids, regions (index, size, flags) and reset support.
    pub fn new(vendor: u16, device: u16, bars: &[(u32, u64, u32)], reset: bool) -> TwinDevice {
        let mut regions: Vec<RegionInfo> = (0..sys::VFIO_PCI_NUM_REGIONS)
            .map(|i| region(i, 0, 0))
            .collect();
        for &(i, size, flags) in bars {
            regions[i as usize] = region(i, size, flags);
        }
        regions[sys::VFIO_PCI_CONFIG_REGION_INDEX as usize] =
            region(sys::VFIO_PCI_CONFIG_REGION_INDEX, 0x1000, R | W);
        let mut config = vec![0u8; 0x1000];
        config[0..2].copy_from_slice(&vendor.to_le_bytes());
        config[2..4].copy_from_slice(&device.to_le_bytes());
        config[0x0b] = 0x02; // class: network
        TwinDevice {
            info: DeviceInfo {
                flags: sys::VFIO_DEVICE_FLAGS_PCI
                    | if reset {
                        sys::VFIO_DEVICE_FLAGS_RESET
                    } else {
                        0
                    },
                num_regions: sys::VFIO_PCI_NUM_REGIONS,
                num_irqs: sys::VFIO_PCI_NUM_IRQS,
            },
            regions,
            config,
            irqs: vec![
                IrqInfo {
                    index: 0,
                    flags: 0x7,
                    count: 1,
                },
                IrqInfo {
                    index: 1,
                    flags: 0x9,
                    count: 1,
                },
                IrqInfo {
                    index: 2,
                    flags: 0x9,
                    count: 5,
                },
            ],
        }
    }

    /// Like QEMU's e1000e as a guest sees it: BAR0/BAR1 128 KiB mmappable, BAR2
    /// I/O (not mmappable), BAR3 the MSI-X BAR (mmappable, MSIX_MAPPABLE), reset.
    pub fn e1000e() -> TwinDevice {
        let mut d = TwinDevice::new(
            0x8086,
            0x10d3,
            &[
                (0, 0x20000, R | W | M),
                (1, 0x20000, R | W | M),
                (2, 0x20, R | W),
                (3, 0x4000, R | W | M | C),
            ],
            true,
        );
        d.regions[3].msix_mappable = true;
        d
    }

    /// Like QEMU's modern virtio-net: BAR1 (MSI-X) and BAR4, no reset.
    pub fn virtio_net() -> TwinDevice {
        let mut d = TwinDevice::new(
            0x1af4,
            0x1041,
            &[(1, 0x1000, R | W | M | C), (4, 0x4000, R | W | M)],
            false,
        );
        d.regions[1].msix_mappable = true;
        d
    }

    /// An older kernel's MSI-X BAR: sparse areas around the table, not MSIX_MAPPABLE.
    pub fn with_sparse_bar(mut self, index: u32, areas: Vec<(u64, u64)>) -> TwinDevice {
        let r = &mut self.regions[index as usize];
        r.flags |= C | M;
        r.msix_mappable = false;
        r.sparse_areas = Some(areas);
        self
    }
}

#[derive(Debug)]
struct TwinGroup {
    viable: bool,
    devices: Vec<String>,
    in_container: bool,
}

#[derive(Debug, Default)]
struct TwinState {
    api_version: i32,
    extensions: Vec<u32>,
    nodes: BTreeMap<PathBuf, u32>,
    container_path: PathBuf,
    groups: BTreeMap<u32, TwinGroup>,
    devices: BTreeMap<String, TwinDevice>,
    iommu_info: IommuInfo,
    iommu: Option<u32>,
    mappings: BTreeMap<u64, u64>,
    failures: Vec<(Op, Option<PathBuf>, i32)>,
    /// Open descriptors by number, in the order they were opened.
    fds: HashMap<i32, (u64, Handle)>,
    opened: u64,
    calls: Vec<Call>,
    mmaps: HashMap<usize, memmap2::MmapRaw>,
}

/// The test twin. Build it, wrap it in an `Arc`, hand a clone to
/// `VfioContext::with_ops`, and inspect [`calls`](VfioTwin::calls) afterwards.
#[derive(Debug)]
pub struct VfioTwin {
    state: Mutex<TwinState>,
}

fn err(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl VfioTwin {
    fn with_extensions(extensions: Vec<u32>) -> VfioTwin {
        VfioTwin {
            state: Mutex::new(TwinState {
                api_version: 0,
                extensions,
                container_path: PathBuf::from("/dev/vfio/vfio"),
                iommu_info: IommuInfo {
                    flags: sys::VFIO_IOMMU_INFO_PGSIZES | sys::VFIO_IOMMU_INFO_CAPS,
                    iova_pgsizes: 0x4020_1000,
                    iova_ranges: vec![(0, 0xfedf_ffff), (0xfef0_0000, 0xffff_ffff_ffff)],
                    dma_avail: Some(65535),
                },
                ..TwinState::default()
            }),
        }
    }

    /// A host (or VM) with an IOMMU: type1 and type1v2, 48-bit aperture.
    pub fn type1() -> VfioTwin {
        VfioTwin::with_extensions(vec![sys::VFIO_TYPE1_IOMMU, sys::VFIO_TYPE1v2_IOMMU])
    }

    /// vfio in no-IOMMU mode: the container offers only `VFIO_NOIOMMU_IOMMU`.
    pub fn noiommu() -> VfioTwin {
        VfioTwin::with_extensions(vec![sys::VFIO_NOIOMMU_IOMMU])
    }

    /// A container offering exactly these IOMMU types.
    pub fn with_types(types: &[u32]) -> VfioTwin {
        VfioTwin::with_extensions(types.to_vec())
    }

    fn lock(&self) -> MutexGuard<'_, TwinState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add group `number` whose node is `/dev/vfio/<node>` (`"3"`, `"noiommu-0"`).
    pub fn group(self, number: u32, node: &str, viable: bool) -> VfioTwin {
        {
            let mut s = self.lock();
            s.nodes.insert(Path::new("/dev/vfio").join(node), number);
            s.groups.insert(
                number,
                TwinGroup {
                    viable,
                    devices: Vec::new(),
                    in_container: false,
                },
            );
        }
        self
    }

    /// Add a device to group `number`.
    pub fn device(self, number: u32, bdf: &str, dev: TwinDevice) -> VfioTwin {
        {
            let mut s = self.lock();
            s.groups
                .get_mut(&number)
                .expect("add the group first")
                .devices
                .push(bdf.to_string());
            s.devices.insert(bdf.to_string(), dev);
        }
        self
    }

    /// Answer `VFIO_GET_API_VERSION` with this.
    pub fn api_version(self, v: i32) -> VfioTwin {
        self.lock().api_version = v;
        self
    }

    /// Usable IOVA ranges (inclusive) reported by `VFIO_IOMMU_GET_INFO`.
    pub fn iova_ranges(self, ranges: Vec<(u64, u64)>) -> VfioTwin {
        self.lock().iommu_info.iova_ranges = ranges;
        self
    }

    /// Make every `op` fail with `errno`.
    pub fn fail(self, op: Op, errno: i32) -> VfioTwin {
        self.lock().failures.push((op, None, errno));
        self
    }

    /// Make `open(path)` fail with `errno`.
    pub fn fail_open(self, path: &str, errno: i32) -> VfioTwin {
        self.lock()
            .failures
            .push((Op::Open, Some(PathBuf::from(path)), errno));
        self
    }

    /// Remove a node (as `mv` away would); returns its group.
    pub fn rename_node(&self, from: &str, to: &str) {
        let mut s = self.lock();
        let n = s
            .nodes
            .remove(&Path::new("/dev/vfio").join(from))
            .expect("no such node");
        s.nodes.insert(Path::new("/dev/vfio").join(to), n);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Forget the calls so far.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// What is still open, in the order it was opened.
    pub fn open_handles(&self) -> Vec<Handle> {
        let s = self.lock();
        let mut v: Vec<(u64, Handle)> = s.fds.values().cloned().collect();
        v.sort_by_key(|(k, _)| *k);
        v.into_iter().map(|(_, h)| h).collect()
    }

    /// DMA mappings the "IOMMU" holds (iova -> size).
    pub fn dma_mappings(&self) -> Vec<(u64, u64)> {
        self.lock().mappings.iter().map(|(a, b)| (*a, *b)).collect()
    }

    /// BAR mappings not unmapped yet.
    pub fn live_mmaps(&self) -> usize {
        self.lock().mmaps.len()
    }

    /// The IOMMU type set, if any.
    pub fn iommu(&self) -> Option<u32> {
        self.lock().iommu
    }

    /// Config space bytes of a device, as the twin holds them.
    pub fn config(&self, bdf: &str, offset: usize, len: usize) -> Vec<u8> {
        self.lock().devices[bdf].config[offset..offset + len].to_vec()
    }

    fn check(s: &TwinState, op: Op, path: Option<&Path>) -> io::Result<()> {
        for (o, p, errno) in &s.failures {
            if *o == op && (p.is_none() || p.as_deref() == path) {
                return Err(err(*errno));
            }
        }
        Ok(())
    }

    fn handle(s: &TwinState, fd: BorrowedFd<'_>) -> io::Result<Handle> {
        s.fds
            .get(&fd.as_raw_fd())
            .map(|(_, h)| h.clone())
            .ok_or_else(|| err(libc::EBADF))
    }

    fn device_of(s: &TwinState, fd: BorrowedFd<'_>) -> io::Result<String> {
        match Self::handle(s, fd)? {
            Handle::Device(d) => Ok(d),
            _ => Err(err(libc::ENOTTY)),
        }
    }

    /// A real descriptor (of /dev/null) standing for `h`.
    fn new_fd(s: &mut TwinState, h: Handle) -> io::Result<OwnedFd> {
        let fd: OwnedFd = std::fs::File::open("/dev/null")?.into();
        s.opened += 1;
        let order = s.opened;
        let old = s.fds.insert(fd.as_raw_fd(), (order, h));
        assert!(
            old.is_none(),
            "descriptor {} reused while the twin thought {old:?} open: a VFIO descriptor was \
             dropped without VfioOps::close",
            fd.as_raw_fd()
        );
        Ok(fd)
    }

    fn leave_container(s: &mut TwinState, n: u32) {
        if let Some(g) = s.groups.get_mut(&n) {
            g.in_container = false;
        }
        if !s.groups.values().any(|g| g.in_container) {
            // The last group gone: the kernel drops the IOMMU and its mappings.
            s.iommu = None;
            s.mappings.clear();
        }
    }
}

// SAFETY: BAR mappings are fresh anonymous read-write mappings of `len` bytes
// (memmap2, page-aligned) kept in `mmaps` until `munmap` removes them;
// descriptors are freshly opened.
unsafe impl VfioOps for VfioTwin {
    fn exists(&self, path: &Path) -> bool {
        let s = self.lock();
        s.nodes.contains_key(path) || path == s.container_path
    }

    fn open(&self, path: &Path) -> io::Result<OwnedFd> {
        let mut s = self.lock();
        s.calls.push(Call::Open(path.to_path_buf()));
        Self::check(&s, Op::Open, Some(path))?;
        if path == s.container_path {
            return Self::new_fd(&mut s, Handle::Container);
        }
        let n = *s.nodes.get(path).ok_or_else(|| err(libc::ENOENT))?;
        if s.fds.values().any(|(_, h)| *h == Handle::Group(n)) {
            return Err(err(libc::EBUSY));
        }
        Self::new_fd(&mut s, Handle::Group(n))
    }

    fn close(&self, fd: OwnedFd) {
        let mut s = self.lock();
        let (_, h) = s
            .fds
            .remove(&fd.as_raw_fd())
            .expect("close of an fd the twin never gave");
        drop(fd);
        if let Handle::Group(n) = &h
            && s.groups.get(n).is_some_and(|g| g.in_container)
        {
            Self::leave_container(&mut s, *n);
        }
        s.calls.push(Call::Close(h));
    }

    fn get_api_version(&self, container: BorrowedFd<'_>) -> io::Result<i32> {
        let mut s = self.lock();
        s.calls.push(Call::GetApiVersion);
        Self::check(&s, Op::GetApiVersion, None)?;
        Self::handle(&s, container)?;
        Ok(s.api_version)
    }

    fn check_extension(&self, _container: BorrowedFd<'_>, ext: u32) -> io::Result<bool> {
        let mut s = self.lock();
        s.calls.push(Call::CheckExtension(ext));
        Ok(s.extensions.contains(&ext))
    }

    fn set_iommu(&self, _container: BorrowedFd<'_>, iommu_type: u32) -> io::Result<()> {
        let mut s = self.lock();
        s.calls.push(Call::SetIommu(iommu_type));
        Self::check(&s, Op::SetIommu, None)?;
        if s.iommu.is_some() {
            return Err(err(libc::EBUSY));
        }
        if !s.groups.values().any(|g| g.in_container) || !s.extensions.contains(&iommu_type) {
            return Err(err(libc::EINVAL));
        }
        s.iommu = Some(iommu_type);
        Ok(())
    }

    fn iommu_info(&self, _container: BorrowedFd<'_>) -> io::Result<IommuInfo> {
        let mut s = self.lock();
        s.calls.push(Call::IommuInfo);
        Self::check(&s, Op::IommuInfo, None)?;
        match s.iommu {
            Some(sys::VFIO_TYPE1_IOMMU | sys::VFIO_TYPE1v2_IOMMU) => Ok(s.iommu_info.clone()),
            Some(_) => Err(err(libc::ENOTTY)),
            None => Err(err(libc::EINVAL)),
        }
    }

    unsafe fn map_dma(
        &self,
        _container: BorrowedFd<'_>,
        vaddr: u64,
        iova: u64,
        size: u64,
    ) -> io::Result<()> {
        let mut s = self.lock();
        s.calls.push(Call::MapDma { vaddr, iova, size });
        Self::check(&s, Op::MapDma, None)?;
        match s.iommu {
            Some(sys::VFIO_NOIOMMU_IOMMU) => return Err(err(libc::ENOTTY)),
            None => return Err(err(libc::EINVAL)),
            _ => {}
        }
        if s.mappings
            .iter()
            .any(|(&a, &n)| iova < a + n && a < iova + size)
        {
            return Err(err(libc::EEXIST));
        }
        s.mappings.insert(iova, size);
        Ok(())
    }

    fn unmap_dma(&self, _container: BorrowedFd<'_>, iova: u64, size: u64) -> io::Result<u64> {
        let mut s = self.lock();
        s.calls.push(Call::UnmapDma { iova, size });
        Self::check(&s, Op::UnmapDma, None)?;
        Ok(s.mappings.remove(&iova).unwrap_or(0))
    }

    fn group_status(&self, group: BorrowedFd<'_>) -> io::Result<u32> {
        let mut s = self.lock();
        let Handle::Group(n) = Self::handle(&s, group)? else {
            return Err(err(libc::ENOTTY));
        };
        s.calls.push(Call::GroupStatus(n));
        Self::check(&s, Op::GroupStatus, None)?;
        let g = &s.groups[&n];
        Ok(if g.viable {
            sys::VFIO_GROUP_FLAGS_VIABLE
        } else {
            0
        } | if g.in_container {
            sys::VFIO_GROUP_FLAGS_CONTAINER_SET
        } else {
            0
        })
    }

    fn group_set_container(
        &self,
        group: BorrowedFd<'_>,
        container: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut s = self.lock();
        let Handle::Group(n) = Self::handle(&s, group)? else {
            return Err(err(libc::ENOTTY));
        };
        s.calls.push(Call::SetContainer(n));
        Self::check(&s, Op::SetContainer, None)?;
        if Self::handle(&s, container)? != Handle::Container {
            return Err(err(libc::EINVAL));
        }
        let g = s.groups.get_mut(&n).unwrap();
        if !g.viable {
            return Err(err(libc::EPERM));
        }
        if g.in_container {
            return Err(err(libc::EINVAL));
        }
        g.in_container = true;
        Ok(())
    }

    fn group_unset_container(&self, group: BorrowedFd<'_>) -> io::Result<()> {
        let mut s = self.lock();
        let Handle::Group(n) = Self::handle(&s, group)? else {
            return Err(err(libc::ENOTTY));
        };
        s.calls.push(Call::UnsetContainer(n));
        if !s.groups[&n].in_container {
            return Err(err(libc::EINVAL));
        }
        Self::leave_container(&mut s, n);
        Ok(())
    }

    fn group_get_device_fd(&self, group: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
        let mut s = self.lock();
        let Handle::Group(n) = Self::handle(&s, group)? else {
            return Err(err(libc::ENOTTY));
        };
        s.calls.push(Call::GetDeviceFd(name.to_string()));
        Self::check(&s, Op::GetDeviceFd, None)?;
        // The kernel hands out devices only once the container has an IOMMU.
        if !s.groups[&n].in_container || s.iommu.is_none() {
            return Err(err(libc::EINVAL));
        }
        if !s.groups[&n].devices.iter().any(|d| d == name) {
            return Err(err(libc::ENODEV));
        }
        Self::new_fd(&mut s, Handle::Device(name.to_string()))
    }

    fn device_info(&self, device: BorrowedFd<'_>) -> io::Result<DeviceInfo> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        s.calls.push(Call::DeviceInfo(d.clone()));
        Self::check(&s, Op::DeviceInfo, None)?;
        Ok(s.devices[&d].info)
    }

    fn region_info(&self, device: BorrowedFd<'_>, index: u32) -> io::Result<RegionInfo> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        s.calls.push(Call::RegionInfo(d.clone(), index));
        Self::check(&s, Op::RegionInfo, None)?;
        match s.devices[&d].regions.get(index as usize) {
            Some(r) if r.size > 0 => Ok(r.clone()),
            _ => Err(err(libc::EINVAL)),
        }
    }

    fn irq_info(&self, device: BorrowedFd<'_>, index: u32) -> io::Result<IrqInfo> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        s.calls.push(Call::IrqInfo(d.clone(), index));
        s.devices[&d]
            .irqs
            .get(index as usize)
            .copied()
            .ok_or_else(|| err(libc::EINVAL))
    }

    fn set_irq_eventfds(
        &self,
        device: BorrowedFd<'_>,
        index: u32,
        start: u32,
        fds: &[Option<BorrowedFd<'_>>],
    ) -> io::Result<()> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        s.calls.push(Call::SetIrqs {
            device: d.clone(),
            index,
            start,
            fds: fds
                .iter()
                .map(|f| f.map_or(-1, |f| f.as_raw_fd()))
                .collect(),
        });
        let count = s.devices[&d]
            .irqs
            .get(index as usize)
            .map_or(0, |i| i.count);
        if start as usize + fds.len() > count as usize {
            return Err(err(libc::EINVAL));
        }
        Ok(())
    }

    fn device_reset(&self, device: BorrowedFd<'_>) -> io::Result<()> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        s.calls.push(Call::Reset(d.clone()));
        Self::check(&s, Op::Reset, None)?;
        if s.devices[&d].info.flags & sys::VFIO_DEVICE_FLAGS_RESET == 0 {
            return Err(err(libc::EINVAL));
        }
        Ok(())
    }

    fn pread(&self, device: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        Self::check(&s, Op::Pread, None)?;
        let (index, off) = region_and_offset(offset);
        if index == sys::VFIO_PCI_CONFIG_REGION_INDEX {
            s.calls.push(Call::ConfigRead {
                device: d.clone(),
                offset: off,
                len: buf.len(),
            });
            let cfg = &s.devices[&d].config;
            let span = config_span(cfg.len(), off, buf.len());
            let n = span.len();
            buf[..n].copy_from_slice(&cfg[span]);
            return Ok(n);
        }
        buf.fill(0);
        Ok(buf.len())
    }

    unsafe fn pwrite(&self, device: BorrowedFd<'_>, buf: &[u8], offset: u64) -> io::Result<usize> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        Self::check(&s, Op::Pwrite, None)?;
        let (index, off) = region_and_offset(offset);
        if index == sys::VFIO_PCI_CONFIG_REGION_INDEX {
            s.calls.push(Call::ConfigWrite {
                device: d.clone(),
                offset: off,
                data: buf.to_vec(),
            });
            let cfg = &mut s.devices.get_mut(&d).unwrap().config;
            let span = config_span(cfg.len(), off, buf.len());
            let n = span.len();
            cfg[span].copy_from_slice(&buf[..n]);
            return Ok(n);
        }
        Ok(buf.len())
    }

    fn mmap(
        &self,
        device: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        areas: Option<&[(u64, u64)]>,
    ) -> io::Result<NonNull<u8>> {
        let mut s = self.lock();
        let d = Self::device_of(&s, device)?;
        s.calls.push(Call::Mmap {
            device: d,
            index: region_and_offset(offset).0,
            len,
            sparse: areas.is_some(),
        });
        Self::check(&s, Op::Mmap, None)?;
        // Stands in for the BAR; unmapped when `munmap` drops it.
        let map = memmap2::MmapRaw::from(memmap2::MmapOptions::new().len(len).map_anon()?);
        let p = NonNull::new(map.as_mut_ptr()).ok_or_else(|| err(libc::ENOMEM))?;
        s.mmaps.insert(p.as_ptr() as usize, map);
        Ok(p)
    }

    unsafe fn munmap(&self, addr: NonNull<u8>, len: usize) {
        let mut s = self.lock();
        s.calls.push(Call::Munmap { len });
        let known = s.mmaps.remove(&(addr.as_ptr() as usize));
        assert_eq!(
            known.as_ref().map(|m| m.len()),
            Some(len),
            "munmap of a mapping the twin never made"
        );
    }
}
