//! Handing a PCI device to vfio-pci, and back, through sysfs.
//!
//! As `driverctl set-override BDF vfio-pci` does: write `vfio-pci` to the
//! device's `driver_override`, unbind its current driver, and ask the bus to
//! probe it again (`drivers_probe`), which now only vfio-pci may take. Giving it
//! back clears the override and probes again, so the kernel's default driver
//! takes it.
//!
//! A device whose kernel network interface is up and carries routes is refused
//! unless forced: taking it away could cut the host (or the pod) off the network,
//! as `dpdk-devbind.py` warns for "Active" interfaces.
#![deny(unsafe_code)]

use std::fs;
use std::path::Path;

use super::{PciAddress, Sysfs, VFIO_PCI_DRIVER, link_name, read_trimmed, write_attr};
use crate::error::{Error, Result};

const IFF_UP: u32 = 0x1;

/// How to bind.
#[derive(Clone, Copy, Debug, Default)]
pub struct BindOptions {
    /// Take the device even if its network interface is up with routes.
    pub force: bool,
}

/// What a bind did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindReport {
    /// The device.
    pub address: PciAddress,
    /// The driver it had before (`None` if unbound or already vfio-pci).
    pub previous_driver: Option<String>,
    /// Whether it was already bound to vfio-pci (nothing was written).
    pub already_bound: bool,
}

/// A kernel interface that is in use: up, with routes through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveInterface {
    /// Interface name.
    pub name: String,
    /// Routes through it (IPv4 and IPv6, link-local and multicast left out).
    pub routes: usize,
}

/// The device's interfaces that are up and carry routes (the reason to refuse it).
pub fn active_interfaces(sysfs: &Sysfs, addr: &PciAddress) -> Vec<ActiveInterface> {
    let root = sysfs.root();
    sysfs
        .netdevs(addr)
        .into_iter()
        .filter(|name| interface_is_up(root, name))
        .filter_map(|name| {
            let routes = count_routes(root, &name);
            (routes > 0).then_some(ActiveInterface { name, routes })
        })
        .collect()
}

fn interface_is_up(root: &Path, name: &str) -> bool {
    let dir = root.join("sys/class/net").join(name);
    if let Some(flags) = read_trimmed(&dir.join("flags")) {
        let t = flags.trim_start_matches("0x");
        if let Ok(f) = u32::from_str_radix(t, 16) {
            return f & IFF_UP != 0;
        }
    }
    matches!(
        read_trimmed(&dir.join("operstate")).as_deref(),
        Some("up" | "unknown")
    )
}

/// Routes through `iface` in `/proc/net/route` and `/proc/net/ipv6_route`.
fn count_routes(root: &Path, iface: &str) -> usize {
    let v4 = fs::read_to_string(root.join("proc/net/route"))
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| l.split_whitespace().next() == Some(iface))
                .count()
        })
        .unwrap_or(0);
    // Columns: dest, dest prefix len, src, src len, next hop, metric, refcnt, use, flags, iface.
    let v6 = fs::read_to_string(root.join("proc/net/ipv6_route"))
        .map(|t| {
            t.lines()
                .filter(|l| {
                    let c: Vec<&str> = l.split_whitespace().collect();
                    c.len() >= 10
                        && c[9] == iface
                        && !c[0].starts_with("fe80")
                        && !c[0].starts_with("ff")
                })
                .count()
        })
        .unwrap_or(0);
    v4 + v6
}

/// Bind `addr` to vfio-pci. Refuses a device whose interface is up with routes
/// unless `opts.force`; checks afterwards that vfio-pci took it.
pub fn bind_vfio(sysfs: &Sysfs, addr: &PciAddress, opts: BindOptions) -> Result<BindReport> {
    let dev = sysfs.device(addr)?;
    if dev.is_vfio() {
        return Ok(BindReport {
            address: *addr,
            previous_driver: None,
            already_bound: true,
        });
    }
    let active = active_interfaces(sysfs, addr);
    if !active.is_empty() && !opts.force {
        let list: Vec<String> = active
            .iter()
            .map(|a| format!("{} ({} routes)", a.name, a.routes))
            .collect();
        return Err(Error::Pci {
            device: addr.to_string(),
            reason: format!(
                "its kernel interface {} is up and routes traffic; taking the device away would \
                 cut those routes. Bring it down first (`ip link set {} down`) or force the bind \
                 (`testpmd bind --force {addr}`)",
                list.join(", "),
                active[0].name
            ),
        });
    }
    if !sysfs.driver_dir(VFIO_PCI_DRIVER).is_dir() {
        return Err(Error::Pci {
            device: addr.to_string(),
            reason: format!(
                "the vfio-pci driver is not loaded ({} is missing): `modprobe vfio-pci` (in a VM \
                 without a vIOMMU: `modprobe vfio enable_unsafe_noiommu_mode=1` first)",
                sysfs.driver_dir(VFIO_PCI_DRIVER).display()
            ),
        });
    }
    let dir = sysfs.device_dir(addr);
    let bdf = addr.to_string();
    const ROOT_HINT: &str = "binding drivers needs root (CAP_SYS_ADMIN) and a writable /sys";
    write_attr(
        &dir.join("driver_override"),
        VFIO_PCI_DRIVER,
        Some(ROOT_HINT),
    )?;
    if dev.driver.is_some() {
        write_attr(&dir.join("driver/unbind"), &bdf, Some(ROOT_HINT))?;
    }
    write_attr(
        &sysfs.root().join("sys/bus/pci/drivers_probe"),
        &bdf,
        Some(ROOT_HINT),
    )?;
    let now = link_name(&dir.join("driver"));
    if now.as_deref() != Some(VFIO_PCI_DRIVER) {
        return Err(Error::Pci {
            device: bdf,
            reason: format!(
                "vfio-pci did not take the device (driver now: {}); see `dmesg` (an IOMMU group \
                 whose other devices are bound elsewhere, or a kernel without VFIO support)",
                now.as_deref().unwrap_or("none")
            ),
        });
    }
    log::info!(
        "bound {addr} to vfio-pci (was {})",
        dev.driver.as_deref().unwrap_or("unbound")
    );
    Ok(BindReport {
        address: *addr,
        previous_driver: dev.driver,
        already_bound: false,
    })
}

/// Give `addr` back to the kernel: clear `driver_override`, unbind vfio-pci and
/// probe again, so the default driver (e1000e, iavf, ...) takes it.
pub fn unbind_vfio(sysfs: &Sysfs, addr: &PciAddress) -> Result<Option<String>> {
    let dev = sysfs.device(addr)?;
    let dir = sysfs.device_dir(addr);
    let bdf = addr.to_string();
    // An empty line clears the override (the kernel stores NULL).
    write_attr(&dir.join("driver_override"), "\n", None)?;
    if dev.driver.is_some() {
        write_attr(&dir.join("driver/unbind"), &bdf, None)?;
    }
    write_attr(&sysfs.root().join("sys/bus/pci/drivers_probe"), &bdf, None)?;
    Ok(link_name(&dir.join("driver")))
}

#[cfg(test)]
mod tests {
    use super::super::fake::{FakeDev, FakeSys};
    use super::*;

    fn addr() -> PciAddress {
        "0000:00:03.0".parse().unwrap()
    }

    fn routes(t: &FakeSys, v4: &str, v6: &str) {
        fs::create_dir_all(t.path("proc/net")).unwrap();
        fs::write(t.path("proc/net/route"), v4).unwrap();
        fs::write(t.path("proc/net/ipv6_route"), v6).unwrap();
    }

    const V4_HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    #[test]
    fn refuses_an_interface_up_with_routes_unless_forced() {
        let t = FakeSys::new();
        t.driver("vfio-pci");
        t.add(&FakeDev {
            driver: Some("e1000e"),
            netdevs: &["ens3"],
            ..FakeDev::default()
        });
        routes(
            &t,
            &format!(
                "{V4_HEADER}ens3\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\nlo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n"
            ),
            "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     ens3\n",
        );
        let s = t.sysfs();
        assert_eq!(
            active_interfaces(&s, &addr()),
            vec![ActiveInterface {
                name: "ens3".into(),
                routes: 1
            }]
        );
        let e = bind_vfio(&s, &addr(), BindOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ens3 (1 routes)")
                && e.contains("ip link set ens3 down")
                && e.contains("--force"),
            "{e}"
        );
        // Nothing was written.
        assert_eq!(
            fs::read_to_string(s.device_dir(&addr()).join("driver_override")).unwrap(),
            "(null)\n"
        );

        // Forced: the writes happen in driverctl's order; the fake kernel does not
        // rebind, so the final check reports it.
        let e = bind_vfio(&s, &addr(), BindOptions { force: true })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("did not take the device (driver now: e1000e)"),
            "{e}"
        );
        let dir = s.device_dir(&addr());
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        assert_eq!(
            fs::read_to_string(t.path("sys/bus/pci/drivers/e1000e/unbind")).unwrap(),
            "0000:00:03.0"
        );
        assert_eq!(
            fs::read_to_string(t.path("sys/bus/pci/drivers_probe")).unwrap(),
            "0000:00:03.0"
        );
    }

    #[test]
    fn interface_down_or_without_routes_is_not_active() {
        let t = FakeSys::new();
        t.driver("vfio-pci");
        t.add(&FakeDev {
            driver: Some("e1000e"),
            netdevs: &["ens3"],
            ..FakeDev::default()
        });
        routes(&t, V4_HEADER, "");
        assert!(active_interfaces(&t.sysfs(), &addr()).is_empty());
        routes(
            &t,
            &format!("{V4_HEADER}ens3\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"),
            "",
        );
        fs::write(t.path("sys/class/net/ens3/flags"), "0x1002\n").unwrap();
        assert!(active_interfaces(&t.sysfs(), &addr()).is_empty());
    }

    #[test]
    fn already_bound_is_left_alone_and_missing_vfio_pci_is_named() {
        let t = FakeSys::new();
        t.add(&FakeDev::default());
        let r = bind_vfio(&t.sysfs(), &addr(), BindOptions::default()).unwrap();
        assert!(r.already_bound && r.previous_driver.is_none());
        assert_eq!(
            fs::read_to_string(t.path("sys/bus/pci/drivers_probe")).unwrap(),
            ""
        );

        let t = FakeSys::new();
        t.add(&FakeDev {
            driver: None,
            ..FakeDev::default()
        });
        let e = bind_vfio(&t.sysfs(), &addr(), BindOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("modprobe vfio-pci"), "{e}");
    }

    #[test]
    fn unbind_clears_the_override_and_reprobes() {
        let t = FakeSys::new();
        t.add(&FakeDev::default());
        let s = t.sysfs();
        let now = unbind_vfio(&s, &addr()).unwrap();
        // The fake kernel leaves the link alone.
        assert_eq!(now.as_deref(), Some("vfio-pci"));
        let dir = s.device_dir(&addr());
        assert_eq!(
            fs::read_to_string(dir.join("driver_override")).unwrap(),
            "\n"
        );
        assert_eq!(
            fs::read_to_string(t.path("sys/bus/pci/drivers/vfio-pci/unbind")).unwrap(),
            "0000:00:03.0"
        );
    }
}
