//! The VFIO container (`/dev/vfio/vfio`): API version, extensions, IOMMU type,
//! IOVA aperture, and DMA mappings.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use vfio_bindings::bindings::vfio as sys;

use super::IommuType;
use super::errors::{self, io_error};
use super::ioctl::{self, IommuInfo, VfioFd, VfioOps};
use crate::error::{Error, Result};
use crate::memory::{DmaRegion, IovaMode};

/// The highest user-space virtual address on x86-64 with 4-level paging:
/// IOVA = VA needs an IOMMU aperture that reaches this far.
pub(crate) const USER_VA_TOP: u64 = 0x7fff_ffff_ffff;

/// One DMA mapping the context made or will make (pending until the IOMMU type
/// is set, i.e. until the first group joins), holding its region allocated.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The memory, kept allocated while a device may reach it.
    pub region: Arc<DmaRegion>,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
    /// Whether MAP_DMA was done (and UNMAP_DMA is owed).
    pub mapped: bool,
}

impl Mapping {
    /// What the memory is for (the region's name).
    pub fn what(&self) -> &str {
        self.region.what()
    }

    /// The region's IOVA mode.
    pub fn mode(&self) -> IovaMode {
        self.region.iova_mode()
    }
}

impl std::fmt::Display for Mapping {
    /// As errors name it: `what (vaddr V -> IOVA I, N bytes)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (vaddr {:#x} -> IOVA {:#x}, {} bytes)",
            self.what(),
            self.vaddr,
            self.iova,
            self.size
        )
    }
}

/// An open container.
#[derive(Debug)]
pub(crate) struct Container {
    pub fd: VfioFd,
    pub type1v2: bool,
    pub type1: bool,
    pub noiommu: bool,
    /// Set once the first group joined.
    pub iommu: Option<IommuType>,
    /// Type1 only: what VFIO_IOMMU_GET_INFO said (aperture).
    pub info: Option<IommuInfo>,
}

impl Container {
    /// Open `/dev/vfio/vfio`, check the API version and read the extensions.
    pub fn open(ops: &Arc<dyn VfioOps>, path: &Path) -> Result<Container> {
        let fd = ops
            .open(path)
            .map_err(|e| errors::open_container(path, e))?;
        let fd = VfioFd::new(ops.clone(), fd);
        let version = ops
            .get_api_version(fd.as_fd())
            .map_err(|e| io_error("VFIO_GET_API_VERSION", path.display(), e, None))?;
        if version != sys::VFIO_API_VERSION as i32 {
            return Err(Error::VfioSetup {
                object: path.display().to_string(),
                reason: format!(
                    "kernel VFIO API version {version}, expected {}: this kernel's VFIO is not \
                     supported",
                    sys::VFIO_API_VERSION
                ),
            });
        }
        let ext = |e: u32| ops.check_extension(fd.as_fd(), e).unwrap_or(false);
        let (type1v2, type1, noiommu) = (
            ext(sys::VFIO_TYPE1v2_IOMMU),
            ext(sys::VFIO_TYPE1_IOMMU),
            ext(sys::VFIO_NOIOMMU_IOMMU),
        );
        let c = Container {
            fd,
            type1v2,
            type1,
            noiommu,
            iommu: None,
            info: None,
        };
        log::debug!(
            "VFIO container: type1v2={} type1={} noiommu={}",
            c.type1v2,
            c.type1,
            c.noiommu
        );
        Ok(c)
    }

    /// The type1 flavour this container offers, if any.
    pub fn type1_flavour(&self) -> Option<IommuType> {
        if self.type1v2 {
            Some(IommuType::Type1v2)
        } else if self.type1 {
            Some(IommuType::Type1)
        } else {
            None
        }
    }

    /// Whether IOVA = VA fits the IOMMU aperture (unknown aperture: assume so).
    pub fn va_fits(&self) -> bool {
        match &self.info {
            Some(info) if !info.iova_ranges.is_empty() => info
                .iova_ranges
                .iter()
                .any(|&(s, e)| s <= 0x1_0000_0000 && e >= USER_VA_TOP),
            _ => true,
        }
    }

    /// The highest usable IOVA, if the kernel said.
    pub fn aperture_end(&self) -> Option<u64> {
        self.info
            .as_ref()
            .and_then(|i| i.iova_ranges.iter().map(|r| r.1).max())
    }

    /// Check one mapping against the IOMMU's usable ranges.
    pub fn check_aperture(&self, m: &Mapping) -> Result<()> {
        let Some(info) = &self.info else {
            return Ok(());
        };
        if info.iova_ranges.is_empty() {
            return Ok(());
        }
        let last = m.iova + (m.size - 1);
        if info
            .iova_ranges
            .iter()
            .any(|&(s, e)| m.iova >= s && last <= e)
        {
            return Ok(());
        }
        let end = self.aperture_end().unwrap_or(0);
        let bits = 64 - end.leading_zeros();
        let fix = if m.mode() == IovaMode::Va {
            "use IOVA mode PA (--iova-mode=pa: IOVAs are physical addresses, needs \
             CAP_SYS_ADMIN), or give the IOMMU a wider address width (a QEMU vIOMMU: \
             -device intel-iommu,aw-bits=48)"
        } else {
            "this physical memory is not reachable through the IOMMU; use other hugepages"
        };
        Err(Error::VfioSetup {
            object: format!("DMA memory {}", m.what()),
            reason: format!(
                "IOVA {:#x}-{:#x} is outside the IOMMU's usable ranges ({}; a {bits}-bit \
                 address width): {fix}",
                m.iova,
                last,
                info.iova_ranges
                    .iter()
                    .map(|(s, e)| format!("{s:#x}-{e:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }

    /// VFIO_IOMMU_MAP_DMA one mapping.
    pub fn map(&self, ops: &dyn VfioOps, m: &Mapping) -> Result<()> {
        self.check_aperture(m)?;
        ioctl::map_dma_in(ops, self.fd.as_fd(), &m.region, m.vaddr, m.iova, m.size)
            .map_err(|e| errors::map_dma(m, e))
    }

    /// VFIO_IOMMU_UNMAP_DMA one mapping; logs (teardown must go on).
    pub fn unmap(&self, ops: &dyn VfioOps, m: &Mapping) -> Result<()> {
        match ops.unmap_dma(self.fd.as_fd(), m.iova, m.size) {
            Ok(n) if n == m.size => Ok(()),
            Ok(n) => {
                log::warn!(
                    "VFIO_IOMMU_UNMAP_DMA {}: unmapped {n} of {} bytes at IOVA {:#x}",
                    m.what(),
                    m.size,
                    m.iova
                );
                Ok(())
            }
            Err(e) => Err(io_error(
                "VFIO_IOMMU_UNMAP_DMA",
                format_args!("{} (IOVA {:#x}, {} bytes)", m.what(), m.iova, m.size),
                e,
                None,
            )),
        }
    }
}

/// The (vaddr, iova, size) segments of `len` bytes at `va` whose page IOVAs are
/// given by `iova_of(offset)`: pages merge while both addresses are contiguous.
pub(crate) fn segments(
    va: u64,
    len: u64,
    page: u64,
    mut iova_of: impl FnMut(u64) -> u64,
) -> Vec<(u64, u64, u64)> {
    let mut out: Vec<(u64, u64, u64)> = Vec::new();
    let mut off = 0;
    while off < len {
        let size = page.min(len - off);
        let iova = iova_of(off);
        match out.last_mut() {
            Some(last) if last.0 + last.2 == va + off && last.1 + last.2 == iova => last.2 += size,
            _ => out.push((va + off, iova, size)),
        }
        off += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_merge_contiguous_pages_only() {
        let pa = [0x1000_0000u64, 0x1020_0000, 0x5000_0000, 0x5020_0000];
        let page = 0x20_0000;
        let segs = segments(0x7f00_0000_0000, 4 * page, page, |off| {
            pa[(off / page) as usize]
        });
        assert_eq!(
            segs,
            vec![
                (0x7f00_0000_0000, 0x1000_0000, 2 * page),
                (0x7f00_0040_0000, 0x5000_0000, 2 * page)
            ]
        );
        let va = segments(0x7f00_0000_0000, 4 * page, page, |off| {
            0x7f00_0000_0000 + off
        });
        assert_eq!(va, vec![(0x7f00_0000_0000, 0x7f00_0000_0000, 4 * page)]);
    }
}
