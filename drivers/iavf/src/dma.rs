//! Making DMA memory reachable by the device: the [`DmaMap`] trait, and its
//! VFIO implementation [`VfioDma`].
//!
//! The port maps its admin-queue and ring memory when it is created, and the
//! receive mempool's memory in `configure` (once per pool). A simulated VF
//! implements `DmaMap` to learn which memory the driver lets it touch, as an
//! IOMMU would.
#![deny(unsafe_code)]

use std::sync::{Arc, Mutex};

use nicpoll::memory::DmaRegion;
use nicpoll::vfio::VfioContext;

/// Something that makes a DMA region addressable by the device at the IOVAs
/// the region reports (`region.iova(offset)`).
pub trait DmaMap: Send + Sync {
    /// Map `region`. The driver calls this once per region. An implementation
    /// that lets a device reach the memory keeps the region (the `Arc`) until
    /// [`unmap`](Self::unmap), so the memory cannot be freed while mapped.
    fn map(&self, region: &Arc<DmaRegion>) -> nicpoll::Result<()>;

    /// Undo [`map`](Self::map) before the region is freed. The port calls it
    /// for its own admin-queue and ring memory when it is dropped, once the
    /// device was reset (never for a mempool, which other ports may share).
    /// The default does nothing.
    fn unmap(&self, region: &DmaRegion) -> nicpoll::Result<()> {
        let _ = region;
        Ok(())
    }
}

/// [`DmaMap`] over a VFIO container: `VFIO_IOMMU_MAP_DMA` with an IOMMU, a
/// check of the IOVA mode without one.
///
/// Share one `VfioDma` between every port of a context: a region (the usual
/// case is one mempool for all ports) is mapped only the first time, since the
/// kernel refuses to map the same IOVA range twice. Regions are known by
/// identity and held while mapped, so a new region can never be mistaken for
/// an old one that had the same address.
pub struct VfioDma {
    ctx: Arc<VfioContext>,
    mapped: Mutex<Vec<Arc<DmaRegion>>>,
}

impl VfioDma {
    /// Map through `ctx`.
    pub fn new(ctx: Arc<VfioContext>) -> VfioDma {
        VfioDma {
            ctx,
            mapped: Mutex::new(Vec::new()),
        }
    }

    /// The context.
    pub fn context(&self) -> &Arc<VfioContext> {
        &self.ctx
    }
}

impl std::fmt::Debug for VfioDma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioDma")
            .field("ctx", &self.ctx)
            .field("regions", &self.mapped.lock().map(|m| m.len()).unwrap_or(0))
            .finish()
    }
}

impl DmaMap for VfioDma {
    fn map(&self, region: &Arc<DmaRegion>) -> nicpoll::Result<()> {
        let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        if mapped.iter().any(|r| Arc::ptr_eq(r, region)) {
            return Ok(());
        }
        self.ctx.map_dma(region)?;
        mapped.push(region.clone());
        Ok(())
    }

    fn unmap(&self, region: &DmaRegion) -> nicpoll::Result<()> {
        let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = mapped.iter().position(|r| std::ptr::eq(&**r, region)) else {
            return Ok(());
        };
        let held = mapped.swap_remove(i);
        self.ctx.unmap_dma(&held)
    }
}

/// The simulated VF is its own IOMMU: the driver maps its memory into it.
#[cfg(feature = "sim")]
impl DmaMap for crate::sim::SimVf {
    fn map(&self, region: &Arc<DmaRegion>) -> nicpoll::Result<()> {
        self.map_dma(region)
    }

    fn unmap(&self, region: &DmaRegion) -> nicpoll::Result<()> {
        self.unmap_dma(region)
    }
}

/// A [`DmaMap`] that maps nothing: for devices that reach memory by virtual
/// address without translation (and for tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoDmaMap;

impl DmaMap for NoDmaMap {
    fn map(&self, _region: &Arc<DmaRegion>) -> nicpoll::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::memory::{DmaMemory, IovaMode, MemoryConfig};
    use nicpoll::vfio::VfioConfig;
    use nicpoll::vfio::twin::VfioTwin;

    fn va_memory() -> DmaMemory {
        DmaMemory::new(MemoryConfig {
            no_huge: true,
            iova_mode: Some(IovaMode::Va),
            ..MemoryConfig::default()
        })
        .unwrap()
    }

    /// Mappings used to be remembered by (address, length): a pool freed while
    /// mapped, then a new pool at the same address, was taken as mapped, and the
    /// device kept using the old pages.
    #[test]
    fn a_mapped_region_is_held_and_a_new_one_is_mapped_anew() {
        let twin = Arc::new(VfioTwin::type1());
        let ctx = Arc::new(VfioContext::with_twin(twin, VfioConfig::default()).unwrap());
        let dma = VfioDma::new(ctx.clone());
        let mem = va_memory();
        let a = Arc::new(mem.alloc("pool a", 4096).unwrap());
        let (a_held, a_addr) = (Arc::downgrade(&a), a.as_ptr());
        dma.map(&a).unwrap();
        dma.map(&a).unwrap();
        assert_eq!(ctx.dma_mapping_count(), 1, "mapped once");
        drop(a);
        assert!(a_held.upgrade().is_some(), "held while mapped");
        let b = Arc::new(mem.alloc("pool b", 4096).unwrap());
        assert_ne!(b.as_ptr(), a_addr, "a's memory is still allocated");
        dma.map(&b).unwrap();
        assert_eq!(ctx.dma_mapping_count(), 2, "b is mapped anew");

        // Unmapped, a goes; a region that gets its address back is new.
        dma.unmap(&a_held.upgrade().unwrap()).unwrap();
        assert!(a_held.upgrade().is_none());
        dma.unmap(&b).unwrap();
        let b_addr = b.as_ptr();
        drop(b);
        assert_eq!(ctx.dma_mapping_count(), 0);
        let c = Arc::new(mem.alloc("pool c", 4096).unwrap());
        dma.map(&c).unwrap();
        assert_eq!(
            ctx.dma_mapping_count(),
            1,
            "c (at {:p}, b was at {b_addr:p}) is mapped",
            c.as_ptr()
        );
        assert!(format!("{dma:?}").contains("regions: 1"));
    }
}
