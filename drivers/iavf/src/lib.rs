//! `net_iavf`: the poll-mode driver for Intel Ethernet Adaptive Virtual
//! Functions (X710/XL710/XXV710 and E810 VFs), and (feature `sim`) a simulated
//! VF with its PF so the driver runs without hardware.
//!
//! The driver is generic over the BAR ([`IavfPort<B: Bar>`](IavfPort)): over
//! VFIO it is a [`VfioBar`] ([`open_pci`]), in tests the
//! simulated device's registers. Modules, one per hardware concept (ixy.rs
//! style):
//!
//! - [`regs`]: BAR0 register offsets and fields (DPDK `base/iavf_register.h`);
//! - [`adminq`]: the admin queue (DPDK `base/iavf_adminq.c`);
//! - [`virtchnl`]: opcodes, capabilities and message layouts
//!   (`include/linux/avf/virtchnl.h`);
//! - [`vf`]: the virtchnl client and the VF's bring-up (DPDK `iavf_init_vf`);
//! - [`desc`]: admin-queue, receive and transmit descriptors
//!   (`base/iavf_adminq_cmd.h`, `base/iavf_type.h`);
//! - [`ring`]: the only unsafe module: DMA memory, descriptor rings and the
//!   mbufs the device holds;
//! - `rxq` / `txq`: the data path; `sync`: how queues and the control
//!   thread agree on resets; `port`: [`IavfPort`], the control plane.
//!
//! Bring-up, start and stop follow DPDK's iavf PMD (`drivers/net/iavf`:
//! `iavf_ethdev.c`, `iavf_vchnl.c`) and Linux's iavf driver
//! (`drivers/net/ethernet/intel/iavf`); every step names the function it
//! follows or its virtchnl opcode. Resets of the VF by its PF are recovered from by the
//! driver itself (see [`port`]).
//!
//! Unsafe code is denied at the crate root and allowed in `ring` (DMA memory
//! and descriptor rings) and, in the model, in `sim`'s `sys` (system calls) and
//! `dma` (the device's view of DMA memory; docs/DECISIONS.md).
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod adminq;
pub mod desc;
pub mod dma;
pub mod error;
pub mod options;
pub mod port;
pub mod regs;
#[allow(unsafe_code)]
pub mod ring;
mod rxq;
mod stats;
mod sync;
mod txq;
pub mod vf;
pub mod virtchnl;

#[cfg(feature = "sim")]
pub mod sim;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use nicpoll::bar::VfioBar;
use nicpoll::memory::DmaMemory;
use nicpoll::pci::PciAddress;
use nicpoll::port::DevArgs;

pub use dma::{DmaMap, NoDmaMap, VfioDma};
pub use error::IavfError;
pub use options::{DEVARGS_KEYS, IavfOptions, MaxSimd};
pub use port::{IavfPort, VfInfo, VfStatus};
pub use vf::Timeouts;

/// Driver name, as DPDK's (`net_iavf`).
pub const DRIVER: &str = "net_iavf";

/// Intel's PCI vendor id.
pub const INTEL_VENDOR_ID: u16 = 0x8086;

/// The VF device ids this driver takes (DPDK `base/iavf_devids.h`, `pci_id_iavf_map`):
/// 700-series VF, its Hyper-V flavour, the Adaptive VF (E810 VFs), and the
/// X722 VFs.
pub const PCI_DEVICE_IDS: &[(u16, &str)] = &[
    (0x154C, "Ethernet Virtual Function 700 Series"),
    (0x1571, "Ethernet Virtual Function 700 Series (Hyper-V)"),
    (0x1889, "Ethernet Adaptive Virtual Function"),
    (0x37CD, "Ethernet Virtual Function X722"),
    (0x374D, "Ethernet Virtual Function X722 A0"),
];

/// Whether a PCI device is an iavf VF (probe by vendor and device id).
pub fn is_iavf(vendor: u16, device: u16) -> bool {
    vendor == INTEL_VENDOR_ID && PCI_DEVICE_IDS.iter().any(|&(d, _)| d == device)
}

/// Open the VF at `addr` through VFIO (bound to vfio-pci, its group joining
/// `dma`'s context) and bring it up as a port: what testpmd's `-a BDF` does
/// for 8086:154c and the other ids of [`PCI_DEVICE_IDS`].
pub fn open_pci(
    dma: Arc<VfioDma>,
    addr: &PciAddress,
    mem: Arc<DmaMemory>,
    args: &DevArgs,
    port_id: u16,
) -> nicpoll::Result<IavfPort<VfioBar>> {
    let dev = dma.context().open_device(addr)?;
    if !is_iavf(dev.vendor_id(), dev.device_id()) {
        return Err(nicpoll::Error::Pci {
            device: addr.to_string(),
            reason: format!(
                "{:04x}:{:04x} is not an iavf VF (expected 8086 with one of {}); choose the \
                 driver for this device",
                dev.vendor_id(),
                dev.device_id(),
                PCI_DEVICE_IDS
                    .iter()
                    .map(|(d, _)| format!("{d:04x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let bar0 = dev.map_bar(0)?;
    let port = IavfPort::new(bar0, dma, mem, &addr.to_string(), args, port_id)?;
    port.set_numa_node(
        nicpoll::pci::Sysfs::default()
            .device(addr)
            .ok()
            .and_then(|d| d.numa_node),
    );
    Ok(port)
}
