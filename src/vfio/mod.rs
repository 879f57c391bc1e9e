//! VFIO: user-space access to PCI devices, with an IOMMU (type1) or without one
//! (no-IOMMU, as in VMs without a virtual IOMMU and the pods on them).
//!
//! A [`VfioContext`] is one container plus the groups of the devices opened in
//! it; there are no globals. A driver does:
//!
//! ```no_run
//! # fn main() -> nicpoll::Result<()> {
//! use nicpoll::bar::Bar;
//! use nicpoll::memory::{DmaMemory, MemoryConfig};
//! use nicpoll::pci::PciAddress;
//! use nicpoll::vfio::VfioContext;
//!
//! let addr: PciAddress = "0000:00:03.0".parse()?;
//! let ctx = VfioContext::new()?;
//! // Which IOVAs the devices need: VA behind an IOMMU, PA without one.
//! let mode = ctx.iova_mode_for(&[addr])?;
//! let mem = DmaMemory::new(MemoryConfig { iova_mode: Some(mode), ..Default::default() })?;
//! let dev = ctx.open_device(&addr)?;          // reset, memory space + bus master on
//! let bar0 = dev.map_bar(0)?;                  // VfioBar: Bar
//! let rings = mem.alloc("rings", 1 << 21)?;
//! ctx.map_dma(&rings)?;                        // type1: MAP_DMA; no-IOMMU: checks PA mode
//! let _status = bar0.read32(0x8);
//! # Ok(()) }
//! ```
//!
//! Teardown runs in `Drop`, on every path: a BAR unmaps; the device (after its
//! last BAR) turns bus mastering off, resets and closes; the context (after its
//! last device) unmaps DMA, detaches and closes its groups, and closes the
//! container. Dropping a DMA region while it is still mapped is safe (the IOMMU
//! keeps its pages pinned until the context unmaps them) but wastes them.
//!
//! All system calls go through [`VfioOps`] ([`ioctl`]): [`SysVfio`] in
//! production, the test twin ([`twin::VfioTwin`]) in tests.

mod container;
pub mod device;
mod errors;
mod group;
pub mod ioctl;
#[cfg(any(test, feature = "testing"))]
pub mod twin;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_bindings::bindings::vfio as sys;

use crate::error::{Error, Result};
use crate::memory::{DmaRegion, IovaMode};
use crate::pci::{PciAddress, Sysfs, bind_command};
use container::{Container, Mapping};
pub use device::VfioDevice;
use group::{Group, GroupNode};
pub use ioctl::{DeviceInfo, IommuInfo, IrqInfo, RegionInfo, SysVfio, VfioFd, VfioOps};

/// How a container translates device addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuType {
    /// `VFIO_TYPE1v2_IOMMU` (3): an IOMMU maps IOVAs we choose.
    Type1v2,
    /// `VFIO_TYPE1_IOMMU` (1): the same, older semantics.
    Type1,
    /// `VFIO_NOIOMMU_IOMMU` (8): no translation; devices get physical addresses.
    NoIommu,
}

impl IommuType {
    /// The `VFIO_SET_IOMMU` argument.
    pub fn raw(self) -> u32 {
        match self {
            IommuType::Type1v2 => sys::VFIO_TYPE1v2_IOMMU,
            IommuType::Type1 => sys::VFIO_TYPE1_IOMMU,
            IommuType::NoIommu => sys::VFIO_NOIOMMU_IOMMU,
        }
    }

    fn set_op(self) -> &'static str {
        match self {
            IommuType::Type1v2 => "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)",
            IommuType::Type1 => "VFIO_SET_IOMMU(VFIO_TYPE1_IOMMU)",
            IommuType::NoIommu => "VFIO_SET_IOMMU(VFIO_NOIOMMU_IOMMU)",
        }
    }

    /// One phrase for logs.
    pub fn describe(self) -> &'static str {
        match self {
            IommuType::Type1v2 => "IOMMU type1v2",
            IommuType::Type1 => "IOMMU type1",
            IommuType::NoIommu => "no-IOMMU (physical addresses)",
        }
    }
}

/// Where the context looks for things.
#[derive(Clone, Debug)]
pub struct VfioConfig {
    /// Root of sysfs and procfs (`/` in production).
    pub root: PathBuf,
    /// Directory of the VFIO nodes (`/dev/vfio`).
    pub dev_dir: PathBuf,
}

impl Default for VfioConfig {
    fn default() -> Self {
        VfioConfig {
            root: PathBuf::from("/"),
            dev_dir: PathBuf::from("/dev/vfio"),
        }
    }
}

/// Closes a freshly opened fd unless disarmed (error paths).
pub(crate) struct FdGuard {
    ops: Arc<dyn VfioOps>,
    fd: VfioFd,
    armed: bool,
}

impl FdGuard {
    pub(crate) fn new(ops: Arc<dyn VfioOps>, fd: VfioFd) -> FdGuard {
        FdGuard {
            ops,
            fd,
            armed: true,
        }
    }

    pub(crate) fn fd(&self) -> VfioFd {
        self.fd
    }

    pub(crate) fn disarm(mut self) -> VfioFd {
        self.armed = false;
        self.fd
    }
}

impl Drop for FdGuard {
    fn drop(&mut self) {
        if self.armed {
            self.ops.close(self.fd);
        }
    }
}

/// What the context owns; torn down when the context and every device are gone.
pub(crate) struct Shared {
    pub(crate) ops: Arc<dyn VfioOps>,
    sysfs: Sysfs,
    dev_dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    container: Container,
    groups: Vec<Group>,
    mappings: Vec<Mapping>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let ops = &*self.ops;
        // 1. DMA: every device is closed (they hold this), so nothing DMAs now.
        for m in state.mappings.iter().filter(|m| m.mapped) {
            if let Err(e) = state.container.unmap(ops, m) {
                log::warn!("{e}");
            }
        }
        state.mappings.clear();
        // 2. Groups leave the container, then close.
        for g in state.groups.drain(..) {
            if let Err(e) = ops.group_unset_container(g.fd) {
                log::warn!("VFIO_GROUP_UNSET_CONTAINER {}: {e}", g.path.display());
            }
            ops.close(g.fd);
        }
        // 3. The container.
        ops.close(state.container.fd);
        log::debug!("VFIO: context closed");
    }
}

/// A VFIO container and the groups of the devices opened in it.
///
/// Cheap to share by reference; devices keep what they need alive by themselves.
pub struct VfioContext {
    shared: Arc<Shared>,
}

impl fmt::Debug for VfioContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.shared.lock();
        f.debug_struct("VfioContext")
            .field("iommu", &s.container.iommu)
            .field(
                "groups",
                &s.groups.iter().map(|g| g.number).collect::<Vec<_>>(),
            )
            .field("mappings", &s.mappings.len())
            .finish()
    }
}

impl VfioContext {
    /// Open `/dev/vfio/vfio` with the real system calls.
    pub fn new() -> Result<VfioContext> {
        VfioContext::with_ops(Arc::new(SysVfio), VfioConfig::default())
    }

    /// Open the container through `ops` (the test twin in tests), with sysfs and
    /// the VFIO nodes where `config` says.
    pub fn with_ops(ops: Arc<dyn VfioOps>, config: VfioConfig) -> Result<VfioContext> {
        let container = Container::open(&ops, &config.dev_dir.join("vfio"))?;
        if container.type1_flavour().is_none() && !container.noiommu {
            let noiommu = Sysfs::new(&config.root).noiommu_mode_enabled();
            let c = ops.clone();
            c.close(container.fd);
            return Err(Error::VfioSetup {
                object: config.dev_dir.join("vfio").display().to_string(),
                reason: format!(
                    "the container offers no usable IOMMU type: load vfio_iommu_type1 (`modprobe \
                     vfio_iommu_type1`) on a machine with an IOMMU, or {}",
                    if noiommu == Some(false) {
                        "enable no-IOMMU mode: vfio is loaded with enable_unsafe_noiommu_mode=N \
                         (`echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode`, or \
                         options vfio enable_unsafe_noiommu_mode=1 in /etc/modprobe.d)"
                    } else {
                        "in a VM without a vIOMMU load vfio with enable_unsafe_noiommu_mode=1"
                    }
                ),
            });
        }
        Ok(VfioContext {
            shared: Arc::new(Shared {
                ops,
                sysfs: Sysfs::new(config.root),
                dev_dir: config.dev_dir,
                state: Mutex::new(State {
                    container,
                    groups: Vec::new(),
                    mappings: Vec::new(),
                }),
            }),
        })
    }

    /// The container's IOMMU type, once a group joined.
    pub fn iommu_type(&self) -> Option<IommuType> {
        self.shared.lock().container.iommu
    }

    /// What `VFIO_IOMMU_GET_INFO` said (type1, once a group joined).
    pub fn iommu_info(&self) -> Option<IommuInfo> {
        self.shared.lock().container.info.clone()
    }

    /// The IOVA mode DMA memory must use for these devices: PA without an IOMMU
    /// (no-IOMMU groups), VA behind one, or PA when the IOMMU's address width does
    /// not reach user-space addresses (as DPDK chooses). Attaches the devices'
    /// groups to the container (as [`open_device`](Self::open_device) would).
    pub fn iova_mode_for(&self, devices: &[PciAddress]) -> Result<IovaMode> {
        for addr in devices {
            self.attach_group(addr)?;
        }
        let s = self.shared.lock();
        Ok(match s.container.iommu {
            Some(IommuType::NoIommu) => IovaMode::Pa,
            Some(_) if !s.container.va_fits() => {
                log::info!(
                    "VFIO: the IOMMU's usable IOVAs end at {:#x}, below user-space addresses: \
                     IOVA mode PA",
                    s.container.aperture_end().unwrap_or(0)
                );
                IovaMode::Pa
            }
            _ => IovaMode::Va,
        })
    }

    /// Open a device bound to vfio-pci: its group joins the container (the first
    /// group sets the IOMMU type), then the device is opened, reset if it can be,
    /// and given memory space and bus mastering.
    pub fn open_device(&self, addr: &PciAddress) -> Result<VfioDevice> {
        let (group_fd, number, iommu) = self.attach_group(addr)?;
        device::open(&self.shared, group_fd, *addr, number, iommu)
    }

    /// Check the device is ours to open and attach its group; returns the group
    /// fd, number and the container's IOMMU type.
    fn attach_group(&self, addr: &PciAddress) -> Result<(VfioFd, u32, IommuType)> {
        let sh = &*self.shared;
        let dev = sh.sysfs.device(addr)?;
        if !dev.is_vfio() {
            return Err(Error::Pci {
                device: addr.to_string(),
                reason: format!(
                    "bound to {} instead of vfio-pci; bind it with {}",
                    dev.driver
                        .as_deref()
                        .map(|d| format!("the kernel driver {d}"))
                        .unwrap_or_else(|| "no driver".into()),
                    bind_command(addr)
                ),
            });
        }
        let Some(number) = dev.iommu_group else {
            return Err(Error::Pci {
                device: addr.to_string(),
                reason: "bound to vfio-pci but has no IOMMU group in sysfs".into(),
            });
        };
        let mut st = sh.lock();
        if let Some(g) = st.groups.iter().find(|g| g.number == number) {
            let iommu = st.container.iommu.expect("a joined group set the type");
            return Ok((g.fd, number, iommu));
        }
        let node = group::locate(&*sh.ops, &sh.sysfs, &sh.dev_dir, number)?;
        let iommu = decide_iommu(&st.container, &node)?;
        if let Some(current) = st.container.iommu
            && current != iommu
        {
            return Err(Error::VfioSetup {
                object: format!("group {number} ({})", node.path.display()),
                reason: format!(
                    "needs {} but the container is already {}: devices with and without an IOMMU \
                     cannot share one process's container",
                    iommu.describe(),
                    current.describe()
                ),
            });
        }
        let noiommu = iommu == IommuType::NoIommu;
        let guard = group::open(&sh.ops, &sh.sysfs, &node, noiommu)?;
        let fd = guard.fd();
        sh.ops
            .group_set_container(fd, st.container.fd)
            .map_err(|e| {
                errors::group_ioctl("VFIO_GROUP_SET_CONTAINER", node.path.display(), noiommu, e)
            })?;
        if st.container.iommu.is_none()
            && let Err(e) = self.set_iommu(&mut st, iommu)
        {
            if let Err(u) = sh.ops.group_unset_container(fd) {
                log::warn!("VFIO_GROUP_UNSET_CONTAINER {}: {u}", node.path.display());
            }
            return Err(e);
        }
        let fd = guard.disarm();
        log::info!(
            "VFIO: group {number} ({}) joined the container, {}",
            node.path.display(),
            iommu.describe()
        );
        st.groups.push(Group {
            number,
            path: node.path,
            fd,
        });
        Ok((fd, number, iommu))
    }

    /// Set the container's IOMMU type (first group), read the aperture, and make
    /// the DMA mappings asked for before. On error the type is left unset (the
    /// caller detaches the group, which makes the kernel forget it too).
    fn set_iommu(&self, st: &mut State, iommu: IommuType) -> Result<()> {
        let ops = &*self.shared.ops;
        ops.set_iommu(st.container.fd, iommu.raw()).map_err(|e| {
            errors::set_iommu(
                iommu.set_op(),
                self.shared.dev_dir.join("vfio").display(),
                iommu == IommuType::NoIommu,
                e,
            )
        })?;
        st.container.iommu = Some(iommu);
        if iommu != IommuType::NoIommu {
            match ops.iommu_info(st.container.fd) {
                Ok(info) => st.container.info = Some(info),
                Err(e) => log::debug!("VFIO_IOMMU_GET_INFO: {e} (aperture unknown)"),
            }
        }
        // Mappings asked for before the type was known.
        let mut pending = std::mem::take(&mut st.mappings);
        for i in 0..pending.len() {
            if let Err(e) = Self::place(ops, &st.container, &mut pending[i]) {
                for m in pending[..i].iter_mut().filter(|m| m.mapped) {
                    if let Err(u) = st.container.unmap(ops, m) {
                        log::warn!("{u}");
                    }
                    m.mapped = false;
                }
                st.mappings = pending;
                st.container.iommu = None;
                st.container.info = None;
                return Err(e);
            }
        }
        if iommu != IommuType::NoIommu {
            st.mappings = pending;
        }
        Ok(())
    }

    /// Map (type1) or check (no-IOMMU) one mapping on a container whose type is set.
    fn place(ops: &dyn VfioOps, c: &Container, m: &mut Mapping) -> Result<()> {
        match c.iommu {
            None => Ok(()),
            Some(IommuType::NoIommu) => {
                if m.mode != IovaMode::Pa {
                    return Err(Error::VfioSetup {
                        object: format!("DMA memory {}", m.what),
                        reason: format!(
                            "has IOVA mode {}, but without an IOMMU devices need physical \
                             addresses: allocate it with --iova-mode=pa (needs CAP_SYS_ADMIN to \
                             read /proc/self/pagemap; in a pod `privileged: true`)",
                            m.mode.name().to_uppercase()
                        ),
                    });
                }
                Ok(())
            }
            Some(_) => {
                c.map(ops, m)?;
                m.mapped = true;
                Ok(())
            }
        }
    }

    /// Make `region` reachable by the devices at the IOVAs it reports
    /// (`region.iova(offset)`): with an IOMMU, `VFIO_IOMMU_MAP_DMA` (IOVA = VA in
    /// mode VA; per run of physically contiguous pages at IOVA = PA in mode PA);
    /// without one, only a check that the region is in mode PA. Before the first
    /// device is opened the mapping is remembered and made when the IOMMU type is
    /// set. Refuses mode DC (memory no device may address).
    pub fn map_dma(&self, region: &DmaRegion) -> Result<()> {
        let mode = region.iova_mode();
        if mode == IovaMode::Dc {
            return Err(Error::VfioSetup {
                object: format!("DMA memory {}", region.what()),
                reason: "has IOVA mode DC (for software ports only): allocate device memory with \
                         --iova-mode=va (IOMMU) or pa (no-IOMMU); VfioContext::iova_mode_for \
                         tells which"
                    .into(),
            });
        }
        let va = region.as_ptr() as u64;
        let segs = container::segments(va, region.len() as u64, region.page_size() as u64, |off| {
            region.iova(off as usize)
        });
        self.map_segments(region.what(), mode, &segs)
    }

    /// [`map_dma`](Self::map_dma) for (vaddr, iova, size) segments already worked out.
    pub(crate) fn map_segments(
        &self,
        what: &str,
        mode: IovaMode,
        segs: &[(u64, u64, u64)],
    ) -> Result<()> {
        let ops = &*self.shared.ops;
        let mut st = self.shared.lock();
        let mut done: Vec<Mapping> = Vec::new();
        for &(vaddr, iova, size) in segs {
            let mut m = Mapping {
                what: what.to_string(),
                mode,
                vaddr,
                iova,
                size,
                mapped: false,
            };
            if let Err(e) = Self::place(ops, &st.container, &mut m) {
                for d in done.iter().filter(|d| d.mapped) {
                    if let Err(u) = st.container.unmap(ops, d) {
                        log::warn!("{u}");
                    }
                }
                return Err(e);
            }
            done.push(m);
        }
        // Without an IOMMU nothing is owed later; before the type is known the
        // mappings wait in the list.
        if st.container.iommu != Some(IommuType::NoIommu) {
            st.mappings.extend(done);
        }
        Ok(())
    }

    /// Undo [`map_dma`](Self::map_dma) for `region` (stop the devices using it
    /// first). Mappings not made are forgotten.
    pub fn unmap_dma(&self, region: &DmaRegion) -> Result<()> {
        let start = region.as_ptr() as u64;
        self.unmap_range(start, start + region.len() as u64)
    }

    fn unmap_range(&self, start: u64, end: u64) -> Result<()> {
        let ops = &*self.shared.ops;
        let mut st = self.shared.lock();
        let (ours, rest): (Vec<Mapping>, Vec<Mapping>) = std::mem::take(&mut st.mappings)
            .into_iter()
            .partition(|m| m.vaddr >= start && m.vaddr < end);
        st.mappings = rest;
        let mut first_err = None;
        for m in ours.iter().filter(|m| m.mapped) {
            if let Err(e) = st.container.unmap(ops, m) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Number of DMA mappings made (type1) or waiting for the first device.
    pub fn dma_mapping_count(&self) -> usize {
        self.shared.lock().mappings.len()
    }

    /// The VFIO node directory in use.
    pub fn dev_dir(&self) -> &Path {
        &self.shared.dev_dir
    }
}

/// Which IOMMU type a group needs, given its node and the container.
fn decide_iommu(c: &Container, node: &GroupNode) -> Result<IommuType> {
    match node.noiommu {
        Some(true) => {
            if c.noiommu {
                Ok(IommuType::NoIommu)
            } else {
                Err(Error::VfioSetup {
                    object: format!("group {} ({})", node.number, node.path.display()),
                    reason: "is a no-IOMMU group but the container does not offer \
                             VFIO_NOIOMMU_IOMMU: vfio must be loaded with \
                             enable_unsafe_noiommu_mode=1"
                        .into(),
                })
            }
        }
        _ => match c.type1_flavour() {
            Some(t) => Ok(t),
            // A pod: the plugin renamed noiommu-N to N and sysfs did not tell;
            // a container that offers only no-IOMMU settles it.
            None if c.noiommu => Ok(IommuType::NoIommu),
            None => Err(Error::VfioSetup {
                object: format!("group {} ({})", node.number, node.path.display()),
                reason: "the container offers neither type1 nor no-IOMMU".into(),
            }),
        },
    }
}

#[cfg(test)]
mod tests;
