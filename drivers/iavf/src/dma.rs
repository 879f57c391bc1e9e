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
    /// Map `region`. The driver calls this once per region; the region stays
    /// alive (and mapped) until the port is dropped.
    fn map(&self, region: &DmaRegion) -> nicpoll::Result<()>;

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
/// kernel refuses to map the same IOVA range twice.
pub struct VfioDma {
    ctx: Arc<VfioContext>,
    mapped: Mutex<Vec<(usize, usize)>>,
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
    fn map(&self, region: &DmaRegion) -> nicpoll::Result<()> {
        let key = (region.as_ptr() as usize, region.len());
        let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        if mapped.contains(&key) {
            return Ok(());
        }
        self.ctx.map_dma(region)?;
        mapped.push(key);
        Ok(())
    }

    fn unmap(&self, region: &DmaRegion) -> nicpoll::Result<()> {
        let key = (region.as_ptr() as usize, region.len());
        let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = mapped.iter().position(|k| *k == key) else {
            return Ok(());
        };
        mapped.swap_remove(i);
        self.ctx.unmap_dma(region)
    }
}

/// The simulated VF is its own IOMMU: the driver maps its memory into it.
#[cfg(feature = "sim")]
impl DmaMap for crate::sim::SimVf {
    fn map(&self, region: &DmaRegion) -> nicpoll::Result<()> {
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
    fn map(&self, _region: &DmaRegion) -> nicpoll::Result<()> {
        Ok(())
    }
}
