//! The one place that knows every driver: maps a device spec to the driver that
//! creates its port.

use nicpoll::port::DevArgs;
use nicpoll::{Error, Port, Result};
use nicpoll_null::NullPort;
use nicpoll_pcap::PcapPort;
use nicpoll_ring::{RingBus, RingPort};

/// Drivers a `--vdev` may name, for messages.
pub const VDEV_DRIVERS: &[&str] = &[
    nicpoll_null::DRIVER,
    nicpoll_ring::DRIVER,
    nicpoll_pcap::DRIVER,
];

/// Create one port per device, port ids in the order given.
pub fn create_ports(vdevs: &[DevArgs]) -> Result<Vec<Box<dyn Port>>> {
    let mut bus = RingBus::new();
    let mut slots: Vec<Option<Box<dyn Port>>> = Vec::new();
    let mut rings: Vec<(usize, RingPort)> = Vec::new();
    for (i, d) in vdevs.iter().enumerate() {
        let id = i as u16;
        // DPDK accepts both net_ and eth_ prefixes for virtual devices.
        let driver = d.driver.replacen("eth_", "net_", 1);
        match driver.as_str() {
            nicpoll_null::DRIVER => slots.push(Some(Box::new(NullPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_pcap::DRIVER => slots.push(Some(Box::new(PcapPort::from_devargs(
                &normalized(d, &driver),
                id,
            )?))),
            nicpoll_ring::DRIVER => {
                rings.push((i, bus.create(&normalized(d, &driver), id)?));
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
