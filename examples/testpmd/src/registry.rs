//! The one place that knows every driver: maps a device spec to the driver that
//! creates its port — a `--vdev` name to a software driver, a `-a` PCI device
//! (by its vendor and device id) to a hardware driver.

use std::sync::Arc;

use nicpoll::memory::DmaMemory;
use nicpoll::pci::{PciAddress, Sysfs};
use nicpoll::port::DevArgs;
use nicpoll::vfio::VfioContext;
use nicpoll::{Error, Port, Result};
use nicpoll_af_packet::AfPacketPort;
use nicpoll_af_xdp::AfXdpPort;
use nicpoll_memif::MemifPort;
use nicpoll_mlx5::Mlx5Port;
use nicpoll_null::NullPort;
use nicpoll_pcap::PcapPort;
use nicpoll_ring::{RingBus, RingPort};
use nicpoll_tap::TapPort;
use nicpoll_virtio::VirtioPort;

use crate::cli::PciSpec;

/// Drivers a `--vdev` may name, for messages.
pub const VDEV_DRIVERS: &[&str] = &[
    nicpoll_null::DRIVER,
    nicpoll_ring::DRIVER,
    nicpoll_pcap::DRIVER,
    nicpoll_af_packet::DRIVER,
    nicpoll_af_xdp::DRIVER,
    nicpoll_tap::DRIVER,
    nicpoll_mlx5::DRIVER,
    nicpoll_memif::DRIVER,
    crate::iavf_sim::DRIVER,
];

/// Whether a `-a` device is a Mellanox device bound to mlx5_core: DPDK's
/// behaviour is to drive it through verbs (bifurcated), not VFIO.
pub fn is_mlx5(spec: &PciSpec) -> bool {
    nicpoll_mlx5::is_mlx5_pci(std::path::Path::new("/"), &spec.addr.to_string())
}

/// The hardware drivers, by PCI id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciDriver {
    /// `net_virtio` (nicpoll-virtio).
    Virtio,
    /// `net_iavf` (nicpoll-iavf): Intel X700/E800 series VFs.
    Iavf,
}

/// Every PCI id a driver takes: (vendor, device, driver, description).
pub fn pci_ids() -> Vec<(u16, u16, PciDriver, &'static str)> {
    let mut ids: Vec<(u16, u16, PciDriver, &'static str)> = nicpoll_iavf::PCI_DEVICE_IDS
        .iter()
        .map(|&(d, what)| (0x8086, d, PciDriver::Iavf, what))
        .collect();
    ids.extend(
        nicpoll_virtio::PCI_IDS
            .iter()
            .map(|&(v, d, what)| (v, d, PciDriver::Virtio, what)),
    );
    ids
}

/// The driver for a device with these ids, or an error listing the supported ids.
pub fn driver_for(addr: &PciAddress, vendor: u16, device: u16) -> Result<PciDriver> {
    let ids = pci_ids();
    if let Some((_, _, d, _)) = ids.iter().find(|(v, d, _, _)| (*v, *d) == (vendor, device)) {
        return Ok(*d);
    }
    let list: Vec<String> = ids
        .iter()
        .map(|(v, d, drv, what)| format!("{v:04x}:{d:04x} {what} ({drv:?})"))
        .collect();
    Err(Error::Pci {
        device: addr.to_string(),
        reason: format!(
            "no driver for {vendor:04x}:{device:04x}; nicpoll drives {} over VFIO, and \
             Mellanox devices bound to mlx5_core through verbs",
            list.join(", ")
        ),
    })
}

/// What PCI ports need: the process's one VFIO container, and the DMA memory
/// (in the IOVA mode the container chose) their rings come from.
pub struct PciEnv {
    /// The VFIO container every device joins.
    pub ctx: Arc<VfioContext>,
    /// DMA memory for descriptor rings.
    pub mem: Arc<DmaMemory>,
    /// Maps DMA memory into the container once, whichever driver asks.
    pub dma: Arc<nicpoll_iavf::VfioDma>,
}

/// Create one port per device: PCI devices first (`-a`, in order), then virtual
/// devices (`--vdev`, in order); port ids follow that order.
pub fn create_ports(
    pci: &[PciSpec],
    env: Option<&PciEnv>,
    vdevs: &[DevArgs],
) -> Result<Vec<Box<dyn Port>>> {
    let mut slots: Vec<Option<Box<dyn Port>>> = Vec::new();
    if !pci.is_empty() {
        let sysfs = Sysfs::default();
        for (i, spec) in pci.iter().enumerate() {
            if is_mlx5(spec) {
                slots.push(Some(Box::new(Mlx5Port::from_devargs(
                    &spec.args, i as u16,
                )?)));
                continue;
            }
            let Some(env) = env else {
                return Err(Error::Pci {
                    device: spec.addr.to_string(),
                    reason: "no VFIO context was set up for this device".into(),
                });
            };
            let dev = sysfs.device(&spec.addr)?;
            let port: Box<dyn Port> = match driver_for(&spec.addr, dev.vendor, dev.device)? {
                PciDriver::Iavf => Box::new(nicpoll_iavf::open_pci(
                    env.dma.clone(),
                    &spec.addr,
                    env.mem.clone(),
                    &spec.args,
                    i as u16,
                )?),
                PciDriver::Virtio => Box::new(VirtioPort::open(
                    env.ctx.clone(),
                    env.mem.clone(),
                    &spec.addr,
                    &spec.args,
                    i as u16,
                )?),
            };
            slots.push(Some(port));
        }
    }
    let first = slots.len();
    let mut bus = RingBus::new();
    let mut rings: Vec<(usize, RingPort)> = Vec::new();
    for (i, d) in vdevs.iter().enumerate() {
        let slot = first + i;
        let id = slot as u16;
        // DPDK accepts both net_ and eth_ prefixes for virtual devices.
        let driver = d.driver.replacen("eth_", "net_", 1);
        if nicpoll_mlx5::is_mlx5_devargs(d) {
            slots.push(Some(Box::new(Mlx5Port::from_devargs(d, id)?)));
            continue;
        }
        match driver.as_str() {
            crate::iavf_sim::DRIVER => {
                slots.push(Some(crate::iavf_sim::create(&normalized(d, &driver), id)?))
            }
            nicpoll_af_packet::DRIVER => slots.push(Some(Box::new(AfPacketPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_af_xdp::DRIVER => slots.push(Some(Box::new(AfXdpPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_tap::DRIVER => slots.push(Some(Box::new(TapPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_null::DRIVER => slots.push(Some(Box::new(NullPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_pcap::DRIVER => slots.push(Some(Box::new(PcapPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_memif::DRIVER => slots.push(Some(Box::new(MemifPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_ring::DRIVER => {
                rings.push((slot, bus.create(&normalized(d, &driver), id)?));
                slots.push(None);
            }
            other => {
                return Err(Error::DevArgs {
                    device: d.spec.clone(),
                    reason: format!(
                        "unknown driver {other:?}; virtual devices nicpoll has: {}",
                        VDEV_DRIVERS.join(", ")
                    ),
                });
            }
        }
    }
    {
        let mut refs: Vec<&mut RingPort> = rings.iter_mut().map(|(_, p)| p).collect();
        bus.connect(&mut refs)?;
    }
    for (i, p) in rings {
        slots[i] = Some(Box::new(p));
    }
    Ok(slots
        .into_iter()
        .map(|s| s.expect("every slot filled"))
        .collect())
}

fn normalized(d: &DevArgs, driver: &str) -> DevArgs {
    let mut d = d.clone();
    if d.driver != driver {
        d.name = d.name.replacen("eth_", "net_", 1);
        d.driver = driver.to_string();
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_drivers_are_chosen_by_id() {
        let a: PciAddress = "0000:00:03.0".parse().unwrap();
        assert_eq!(driver_for(&a, 0x1af4, 0x1041).unwrap(), PciDriver::Virtio);
        assert_eq!(driver_for(&a, 0x1af4, 0x1000).unwrap(), PciDriver::Virtio);
        let e = driver_for(&a, 0x8086, 0x10d3).unwrap_err().to_string();
        assert!(
            e.contains("0000:00:03.0")
                && e.contains("no driver for 8086:10d3")
                && e.contains("1af4:1041"),
            "{e}"
        );
    }
}
