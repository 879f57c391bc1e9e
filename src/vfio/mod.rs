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
//! let rings = std::sync::Arc::new(mem.alloc("rings", 1 << 21)?);
//! ctx.map_dma(&rings)?;                        // type1: MAP_DMA; no-IOMMU: checks PA mode
//! let _status = bar0.read32(0x8);
//! # Ok(()) }
//! ```
//!
//! Teardown runs in `Drop`, on every path: a BAR unmaps; the device (after its
//! last BAR) turns bus mastering off, resets and closes; the context (after its
//! last device) unmaps DMA, detaches and closes its groups, and closes the
//! container. A mapped DMA region stays allocated while it is mapped: the
//! context holds it (an `Arc`) until [`VfioContext::unmap_dma`] or its own end,
//! so a device never reaches memory that went back to the system (without an
//! IOMMU nothing else would stop it).
//!
//! All system calls go through one crate-private trait (module `ioctl`): the
//! real kernel in production, a test twin (`twin`, feature `testing`) in tests.
//! Its dangerous calls (DMA map, munmap, device writes) are `unsafe fn`s with
//! their contracts, and its descriptors are owned, so that nothing outside this
//! module can map arbitrary memory for a device, unmap memory or close a
//! descriptor it does not own:
//!
//! ```compile_fail
//! use nicpoll::vfio::VfioOps; // private: the doors are VfioContext and VfioDevice
//! ```
//!
//! ```compile_fail
//! let _ = nicpoll::vfio::SysVfio; // private too
//! ```

mod container;
pub mod device;
mod errors;
mod group;
// The VFIO layer's unsafe code: the system calls and their test twin.
#[allow(unsafe_code)]
mod ioctl;

use std::fmt;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_bindings::bindings::vfio as sys;

use crate::error::{Error, Result};
use crate::memory::{DmaRegion, IovaMode};
use crate::pci::{PciAddress, Sysfs, bind_command};
use container::{Container, Mapping};
pub use device::VfioDevice;
use group::{Group, GroupNode};
/// The test twin of the VFIO system calls (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub use ioctl::twin;
pub use ioctl::{DeviceInfo, IommuInfo, IrqInfo, RegionInfo};
use ioctl::{SysVfio, VfioOps};

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

/// What the context owns; torn down when the context and every device are gone.
pub(crate) struct Shared {
    pub(crate) ops: Arc<dyn VfioOps>,
    sysfs: Sysfs,
    dev_dir: PathBuf,
    state: Mutex<State>,
}

struct State {
    // Drop order: the container closes before the mappings free their memory.
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
        // 2. Groups leave the container, then close.
        for g in state.groups.drain(..) {
            if let Err(e) = ops.group_unset_container(g.fd.as_fd()) {
                log::warn!("VFIO_GROUP_UNSET_CONTAINER {}: {e}", g.path.display());
            }
        }
        // 3. The container closes when `state` drops, and then the DMA memory
        // it kept allocated is released (`State` declares `container` first).
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
        VfioContext::with_config(VfioConfig::default())
    }

    /// Open the container with the real system calls, with sysfs and the VFIO
    /// nodes where `config` says.
    pub fn with_config(config: VfioConfig) -> Result<VfioContext> {
        VfioContext::with_ops(Arc::new(SysVfio), config)
    }

    /// Open the container through the test twin (feature `testing`), with sysfs
    /// and the VFIO nodes where `config` says.
    #[cfg(any(test, feature = "testing"))]
    pub fn with_twin(twin: Arc<twin::VfioTwin>, config: VfioConfig) -> Result<VfioContext> {
        VfioContext::with_ops(twin, config)
    }

    /// Open the container through `ops`.
    pub(crate) fn with_ops(ops: Arc<dyn VfioOps>, config: VfioConfig) -> Result<VfioContext> {
        let container = Container::open(&ops, &config.dev_dir.join("vfio"))?;
        if container.type1_flavour().is_none() && !container.noiommu {
            let noiommu = Sysfs::new(&config.root).noiommu_mode_enabled();
            drop(container);
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
        let (number, iommu) = self.attach_group(addr)?;
        device::open(&self.shared, *addr, number, iommu)
    }

    /// Check the device is ours to open and attach its group; returns the group
    /// number and the container's IOMMU type.
    fn attach_group(&self, addr: &PciAddress) -> Result<(u32, IommuType)> {
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
        if st.groups.iter().any(|g| g.number == number) {
            let iommu = st.container.iommu.expect("a joined group set the type");
            return Ok((number, iommu));
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
        let fd = group::open(&sh.ops, &sh.sysfs, &node, noiommu)?;
        sh.ops
            .group_set_container(fd.as_fd(), st.container.fd.as_fd())
            .map_err(|e| {
                errors::group_ioctl("VFIO_GROUP_SET_CONTAINER", node.path.display(), noiommu, e)
            })?;
        if st.container.iommu.is_none()
            && let Err(e) = self.set_iommu(&mut st, iommu)
        {
            if let Err(u) = sh.ops.group_unset_container(fd.as_fd()) {
                log::warn!("VFIO_GROUP_UNSET_CONTAINER {}: {u}", node.path.display());
            }
            return Err(e);
        }
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
        Ok((number, iommu))
    }

    /// Set the container's IOMMU type (first group), read the aperture, and make
    /// the DMA mappings asked for before. On error the type is left unset (the
    /// caller detaches the group, which makes the kernel forget it too).
    fn set_iommu(&self, st: &mut State, iommu: IommuType) -> Result<()> {
        let ops = &*self.shared.ops;
        ops.set_iommu(st.container.fd.as_fd(), iommu.raw())
            .map_err(|e| {
                errors::set_iommu(
                    iommu.set_op(),
                    self.shared.dev_dir.join("vfio").display(),
                    iommu == IommuType::NoIommu,
                    e,
                )
            })?;
        st.container.iommu = Some(iommu);
        if iommu != IommuType::NoIommu {
            match ops.iommu_info(st.container.fd.as_fd()) {
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
        // Without an IOMMU nothing was mapped, but the regions stay held: the
        // devices will reach them by physical address.
        st.mappings = pending;
        Ok(())
    }

    /// Map (type1) or check (no-IOMMU) one mapping on a container whose type is set.
    fn place(ops: &dyn VfioOps, c: &Container, m: &mut Mapping) -> Result<()> {
        match c.iommu {
            None => Ok(()),
            Some(IommuType::NoIommu) => {
                if m.mode() != IovaMode::Pa {
                    return Err(Error::VfioSetup {
                        object: format!("DMA memory {}", m.what()),
                        reason: format!(
                            "has IOVA mode {}, but without an IOMMU devices need physical \
                             addresses: allocate it with --iova-mode=pa (needs CAP_SYS_ADMIN to \
                             read /proc/self/pagemap; in a pod `privileged: true`)",
                            m.mode().name().to_uppercase()
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
    ///
    /// The context keeps `region` allocated (holds the `Arc`) until
    /// [`unmap_dma`](Self::unmap_dma) or until it is dropped itself, after its
    /// devices: dropping your handle while the region is mapped cannot free
    /// memory a device may still write.
    pub fn map_dma(&self, region: &Arc<DmaRegion>) -> Result<()> {
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
        self.map_segments(region, &segs)
    }

    /// [`map_dma`](Self::map_dma) for (vaddr, iova, size) segments of `region`
    /// already worked out.
    pub(crate) fn map_segments(
        &self,
        region: &Arc<DmaRegion>,
        segs: &[(u64, u64, u64)],
    ) -> Result<()> {
        let ops = &*self.shared.ops;
        let mut st = self.shared.lock();
        let mut done: Vec<Mapping> = Vec::new();
        for &(vaddr, iova, size) in segs {
            let mut m = Mapping {
                region: region.clone(),
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
        // Kept in every mode: before the type is known they wait to be made;
        // with an IOMMU UNMAP_DMA is owed; without one the devices use the
        // memory by physical address, so it must stay allocated.
        st.mappings.extend(done);
        Ok(())
    }

    /// Undo [`map_dma`](Self::map_dma) for `region` and let the context's hold
    /// on it go. Stop the devices using it first: with an IOMMU their accesses
    /// fault from here on, but without one nothing revokes them. Mappings not
    /// made are forgotten.
    pub fn unmap_dma(&self, region: &DmaRegion) -> Result<()> {
        let ops = &*self.shared.ops;
        let mut st = self.shared.lock();
        let (ours, rest): (Vec<Mapping>, Vec<Mapping>) = std::mem::take(&mut st.mappings)
            .into_iter()
            .partition(|m| std::ptr::eq(&*m.region, region));
        st.mappings = rest;
        let mut first_err = None;
        for m in ours.iter().filter(|m| m.mapped) {
            if let Err(e) = st.container.unmap(ops, m) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Number of DMA mappings the context holds: made (type1), waiting for the
    /// first device, or (no-IOMMU) regions kept for devices that address them
    /// physically. One per run of IOVA-contiguous pages.
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
