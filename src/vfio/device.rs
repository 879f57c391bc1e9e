//! A VFIO device: its regions, PCI config space, BARs, interrupts and reset.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use vfio_bindings::bindings::vfio as sys;

use super::errors::{self, io_error};
use super::ioctl::{self, DeviceInfo, IrqInfo, RegionInfo, VfioFd};
use super::{IommuType, Shared};
use crate::bar::VfioBar;
use crate::error::{Error, Result};
use crate::pci::PciAddress;

/// PCI config space: the command register and its bits.
pub const PCI_COMMAND: u64 = 0x04;
/// Command register: respond to memory space accesses (BARs).
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
/// Command register: bus master (the device may DMA).
pub const PCI_COMMAND_MASTER: u16 = 0x4;

/// Region index of PCI config space.
pub const CONFIG_REGION: u32 = sys::VFIO_PCI_CONFIG_REGION_INDEX;

/// Whether a device may be reset, and how a device ends.
pub(crate) struct DeviceInner {
    // Field order is drop order: the device closes before the context (its
    // DMA mappings, group and container) may go.
    pub fd: VfioFd,
    pub shared: Arc<Shared>,
    pub address: PciAddress,
    pub group: u32,
    pub iommu: IommuType,
    pub info: DeviceInfo,
    pub regions: Vec<RegionInfo>,
    pub vendor: u16,
    pub device: u16,
}

impl DeviceInner {
    fn config(&self) -> &RegionInfo {
        &self.regions[CONFIG_REGION as usize]
    }

    /// Config space, once `len` bytes at `offset` are known to lie inside it.
    fn config_for(&self, offset: u64, len: usize) -> Result<&RegionInfo> {
        let cfg = self.config();
        if offset + len as u64 > cfg.size {
            return Err(self.config_range(offset, len));
        }
        Ok(cfg)
    }

    pub(crate) fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let cfg = self.config_for(offset, buf.len())?;
        let want = buf.len();
        let done = self
            .shared
            .ops
            .pread(self.fd.as_fd(), buf, cfg.offset + offset);
        self.config_done(
            "pread config space",
            offset,
            want,
            done,
            io::ErrorKind::UnexpectedEof,
        )
    }

    pub(crate) fn write_config(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let cfg = self.config_for(offset, buf.len())?;
        let done = ioctl::write_config(&*self.shared.ops, self.fd.as_fd(), cfg, offset, buf);
        let short = io::ErrorKind::WriteZero;
        self.config_done("pwrite config space", offset, buf.len(), done, short)
    }

    /// A config-space transfer of `want` bytes at `offset` that returned
    /// `done`: its OS error, or `short` when fewer bytes moved, named by the
    /// device and offset.
    fn config_done(
        &self,
        op: &'static str,
        offset: u64,
        want: usize,
        done: io::Result<usize>,
        short: io::ErrorKind,
    ) -> Result<()> {
        let source = match done {
            Ok(n) if n == want => return Ok(()),
            Ok(_) => io::Error::from(short),
            Err(e) => e,
        };
        let object = format!("{} at {offset:#x}", self.address);
        Err(io_error(op, object, source, None))
    }

    fn config_range(&self, offset: u64, len: usize) -> Error {
        Error::VfioSetup {
            object: self.address.to_string(),
            reason: format!(
                "config space access of {len} bytes at {offset:#x} is outside its {} bytes",
                self.config().size
            ),
        }
    }

    pub(crate) fn read_u16(&self, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_config(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub(crate) fn update_command(&self, set: u16, clear: u16) -> Result<u16> {
        let cmd = self.read_u16(PCI_COMMAND)?;
        let new = (cmd | set) & !clear;
        if new != cmd {
            self.write_config(PCI_COMMAND, &new.to_le_bytes())?;
        }
        Ok(new)
    }

    pub(crate) fn can_reset(&self) -> bool {
        self.info.flags & sys::VFIO_DEVICE_FLAGS_RESET != 0
    }

    pub(crate) fn reset(&self) -> Result<()> {
        self.shared
            .ops
            .device_reset(self.fd.as_fd())
            .map_err(|e| io_error("VFIO_DEVICE_RESET", self.address, e, None))
    }
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        // Stop DMA before anything else goes: bus master off, then reset.
        if let Err(e) = self.update_command(0, PCI_COMMAND_MASTER) {
            log::warn!("{}: clearing bus master: {e}", self.address);
        }
        if self.can_reset()
            && let Err(e) = self.reset()
        {
            log::warn!("{}: {e}", self.address);
        }
        // The descriptor closes right after this, with the fields.
        log::debug!("VFIO: closing {}", self.address);
    }
}

/// A PCI device opened through VFIO.
///
/// Opening reset it (when VFIO can) and turned on memory space and bus
/// mastering. Dropping it (and its last [`VfioBar`]) turns bus mastering off,
/// resets it and closes it; its group and DMA mappings go with the context.
pub struct VfioDevice {
    pub(crate) inner: Arc<DeviceInner>,
}

impl fmt::Debug for VfioDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.inner;
        f.debug_struct("VfioDevice")
            .field("address", &d.address.to_string())
            .field("id", &format_args!("{:04x}:{:04x}", d.vendor, d.device))
            .field("group", &d.group)
            .field("iommu", &d.iommu)
            .finish()
    }
}

impl VfioDevice {
    /// Its PCI address.
    pub fn address(&self) -> PciAddress {
        self.inner.address
    }

    /// Vendor id, from config space.
    pub fn vendor_id(&self) -> u16 {
        self.inner.vendor
    }

    /// Device id, from config space.
    pub fn device_id(&self) -> u16 {
        self.inner.device
    }

    /// Its IOMMU group number.
    pub fn group(&self) -> u32 {
        self.inner.group
    }

    /// How its DMA is translated: by an IOMMU (type1, IOVA mode VA or PA) or not
    /// at all (no-IOMMU, IOVA mode PA).
    pub fn iommu_type(&self) -> IommuType {
        self.inner.iommu
    }

    /// What `VFIO_DEVICE_GET_INFO` said.
    pub fn info(&self) -> DeviceInfo {
        self.inner.info
    }

    /// Region `index` (BAR0-5 = 0-5, ROM 6, CONFIG 7), if the device has it.
    pub fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.inner
            .regions
            .get(index as usize)
            .filter(|r| r.size > 0)
    }

    /// Whether VFIO can reset the device (`VFIO_DEVICE_FLAGS_RESET`).
    pub fn can_reset(&self) -> bool {
        self.inner.can_reset()
    }

    /// `VFIO_DEVICE_RESET` (function-level or similar reset).
    pub fn reset(&self) -> Result<()> {
        self.inner.reset()
    }

    /// Read config space bytes at `offset`.
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_config(offset, buf)
    }

    /// Write config space bytes at `offset`.
    pub fn write_config(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.inner.write_config(offset, buf)
    }

    /// Read a little-endian 16-bit config register.
    pub fn read_config_u16(&self, offset: u64) -> Result<u16> {
        self.inner.read_u16(offset)
    }

    /// Read a little-endian 32-bit config register.
    pub fn read_config_u32(&self, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.inner.read_config(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a little-endian 16-bit config register.
    pub fn write_config_u16(&self, offset: u64, value: u16) -> Result<()> {
        self.inner.write_config(offset, &value.to_le_bytes())
    }

    /// Write a little-endian 32-bit config register.
    pub fn write_config_u32(&self, offset: u64, value: u32) -> Result<()> {
        self.inner.write_config(offset, &value.to_le_bytes())
    }

    /// Turn bus mastering (the device's right to DMA) on or off; returns the
    /// new command register.
    pub fn set_bus_master(&self, on: bool) -> Result<u16> {
        if on {
            self.inner.update_command(PCI_COMMAND_MASTER, 0)
        } else {
            self.inner.update_command(0, PCI_COMMAND_MASTER)
        }
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` for index `index` (INTX 0, MSI 1, MSIX 2).
    pub fn irq_info(&self, index: u32) -> Result<IrqInfo> {
        self.inner
            .shared
            .ops
            .irq_info(self.inner.fd.as_fd(), index)
            .map_err(|e| {
                io_error(
                    "VFIO_DEVICE_GET_IRQ_INFO",
                    format_args!("{} index {index}", self.inner.address),
                    e,
                    None,
                )
            })
    }

    /// Route vectors `start..` of IRQ index `index` to these eventfds
    /// (`VFIO_DEVICE_SET_IRQS`); `None` detaches a vector. The kernel takes its
    /// own reference to each eventfd.
    pub fn set_irq_eventfds(
        &self,
        index: u32,
        start: u32,
        fds: &[Option<BorrowedFd<'_>>],
    ) -> Result<()> {
        self.inner
            .shared
            .ops
            .set_irq_eventfds(self.inner.fd.as_fd(), index, start, fds)
            .map_err(|e| {
                io_error(
                    "VFIO_DEVICE_SET_IRQS",
                    format_args!("{} index {index}", self.inner.address),
                    e,
                    None,
                )
            })
    }

    /// Disable every vector of IRQ index `index`.
    pub fn disable_irqs(&self, index: u32) -> Result<()> {
        self.set_irq_eventfds(index, 0, &[])
    }

    /// mmap BAR `index` (0..=5). Only memory BARs VFIO marks mmappable can be
    /// mapped; a BAR with an MSI-X table the kernel keeps (sparse mmap, no
    /// MSIX_MAPPABLE) is mapped around the table, which stays inaccessible.
    pub fn map_bar(&self, index: u32) -> Result<VfioBar> {
        let d = &self.inner;
        let object = format_args!("{} BAR{index}", d.address).to_string();
        let region = self
            .region(index)
            .filter(|_| index <= sys::VFIO_PCI_BAR5_REGION_INDEX)
            .ok_or_else(|| Error::VfioSetup {
                object: object.clone(),
                reason: "the device has no such BAR".into(),
            })?;
        if !region.mmappable() {
            return Err(Error::VfioSetup {
                object,
                reason: format!(
                    "VFIO does not allow mmap of this BAR ({} bytes, flags {:#x}): an I/O port \
                     BAR, or smaller than a page",
                    region.size, region.flags
                ),
            });
        }
        let len = usize::try_from(region.size).map_err(|_| Error::VfioSetup {
            object: object.clone(),
            reason: "BAR larger than the address space".into(),
        })?;
        let areas = match &region.sparse_areas {
            Some(a) if !region.msix_mappable => Some(a.as_slice()),
            _ => None,
        };
        // The BAR keeps the device open: it is reset and closed after its last BAR.
        let bar = ioctl::map_bar(
            &d.shared.ops,
            d.fd.as_fd(),
            region.offset,
            len,
            areas,
            index,
            Box::new(d.clone()),
        )
        .map_err(|e| io_error("mmap", &object, e, None))?;
        log::debug!(
            "VFIO: mapped {object}: {len:#x} bytes at {:p}",
            bar.as_ptr()
        );
        Ok(bar)
    }
}

/// Open the device fd and read what the device is; reset it and enable it.
pub(crate) fn open(
    shared: &Arc<Shared>,
    address: PciAddress,
    group: u32,
    iommu: IommuType,
) -> Result<VfioDevice> {
    let ops = &shared.ops;
    let noiommu = iommu == IommuType::NoIommu;
    let name = address.to_string();
    let fd = {
        let st = shared.lock();
        let g = st
            .groups
            .iter()
            .find(|g| g.number == group)
            .expect("the group was attached");
        ops.group_get_device_fd(g.fd.as_fd(), &name)
    }
    .map_err(|e| errors::group_ioctl("VFIO_GROUP_GET_DEVICE_FD", &name, noiommu, e))?;
    let fd = VfioFd::new(ops.clone(), fd);
    let info = ops
        .device_info(fd.as_fd())
        .map_err(|e| io_error("VFIO_DEVICE_GET_INFO", &name, e, None))?;
    if info.flags & sys::VFIO_DEVICE_FLAGS_PCI == 0 || info.num_regions <= CONFIG_REGION {
        return Err(Error::VfioSetup {
            object: name,
            reason: format!(
                "not a VFIO PCI device (flags {:#x}, {} regions)",
                info.flags, info.num_regions
            ),
        });
    }
    let mut regions = Vec::new();
    for index in 0..info.num_regions.min(sys::VFIO_PCI_NUM_REGIONS) {
        match ops.region_info(fd.as_fd(), index) {
            Ok(r) => regions.push(r),
            // Absent regions (VGA on a NIC) answer EINVAL.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => regions.push(RegionInfo {
                index,
                ..RegionInfo::default()
            }),
            Err(e) => {
                return Err(io_error(
                    "VFIO_DEVICE_GET_REGION_INFO",
                    format_args!("{name} region {index}"),
                    e,
                    None,
                ));
            }
        }
    }
    if regions[CONFIG_REGION as usize].size < 64 {
        return Err(Error::VfioSetup {
            object: name,
            reason: "VFIO reports no PCI config space region".into(),
        });
    }
    // From here the device's own Drop (bus master off, reset, close) takes over.
    let mut inner = DeviceInner {
        fd,
        shared: shared.clone(),
        address,
        group,
        iommu,
        info,
        regions,
        vendor: 0,
        device: 0,
    };
    let mut ids = [0u8; 4];
    inner.read_config(0, &mut ids)?;
    inner.vendor = u16::from_le_bytes([ids[0], ids[1]]);
    inner.device = u16::from_le_bytes([ids[2], ids[3]]);
    // Start from a clean device, as DPDK does; a failed reset is not fatal.
    if inner.can_reset()
        && let Err(e) = inner.reset()
    {
        log::info!("{e} (continuing without reset)");
    }
    let cmd = inner.update_command(PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER, 0)?;
    log::info!(
        "VFIO: opened {address} ({:04x}:{:04x}) in group {group}, {}, command {cmd:#06x}",
        inner.vendor,
        inner.device,
        iommu.describe()
    );
    Ok(VfioDevice {
        inner: Arc::new(inner),
    })
}
