//! PCI devices as Linux shows them in sysfs: addresses, identities, drivers,
//! NUMA nodes, IOMMU groups and kernel network interfaces.
//!
//! Everything here reads files under a root directory (`/` in production), so
//! tests run on fake sysfs trees in a temporary directory. Nothing here needs
//! privileges except [`bind`], which writes to sysfs.
//!
//! - [`PciAddress`]: a bus/device/function address, parsed from the full form
//!   `0000:00:03.0` or the short form `00:03.0`, always printed in full.
//! - [`Sysfs`]: look-ups under `ROOT/sys/bus/pci/devices/BDF`.
//! - [`bind`]: handing a device to vfio-pci (and back), like `driverctl`.
#![deny(unsafe_code)]

pub mod bind;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The driver a device must be bound to for VFIO.
pub const VFIO_PCI_DRIVER: &str = "vfio-pci";

/// The name the kernel gives a no-IOMMU VFIO group (`iommu_group/name`).
pub const NOIOMMU_GROUP_NAME: &str = "vfio-noiommu";

/// A PCI address: domain, bus, device (slot) and function.
///
/// Parsed from `DDDD:BB:DD.F` or the short `BB:DD.F` (domain 0), hex digits in
/// either case; printed as the kernel names it, `0000:00:03.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment). More than 16 bits on some hosts (VMD: `10000:`).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// A PCI address from its parts; `None` if the device or function is out of range.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<PciAddress> {
        (device < 32 && function < 8).then_some(PciAddress {
            domain,
            bus,
            device,
            function,
        })
    }

    /// Parse `DDDD:BB:DD.F` or `BB:DD.F`.
    pub fn parse(s: &str) -> Result<PciAddress> {
        let bad = |why: &str| Error::Pci {
            device: s.to_string(),
            reason: format!(
                "not a PCI address ({why}): expected DDDD:BB:DD.F such as 0000:00:03.0, \
                 or the short form BB:DD.F such as 00:03.0"
            ),
        };
        let t = s.trim();
        let (head, function) = t.rsplit_once('.').ok_or_else(|| bad("no '.F'"))?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, dev] => ("0", *bus, *dev),
            [dom, bus, dev] => (*dom, *bus, *dev),
            _ => return Err(bad("wrong number of ':'")),
        };
        let hex = |v: &str, max_digits: usize, what: &str| {
            if v.is_empty() || v.len() > max_digits || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(&format!("bad {what} {v:?}")));
            }
            u32::from_str_radix(v, 16).map_err(|_| bad(&format!("bad {what} {v:?}")))
        };
        let domain = hex(domain, 8, "domain")?;
        let bus = hex(bus, 2, "bus")?;
        let device = hex(device, 2, "device")?;
        let function = hex(function, 1, "function")?;
        PciAddress::new(domain, bus as u8, device as u8, function as u8).ok_or_else(|| {
            bad(&format!(
                "device {device:#x} or function {function} out of range (device 0-0x1f, function 0-7)"
            ))
        })
    }
}

impl FromStr for PciAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<PciAddress> {
        PciAddress::parse(s)
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// What sysfs says about one PCI device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// Vendor id (`vendor`).
    pub vendor: u16,
    /// Device id (`device`).
    pub device: u16,
    /// Subsystem vendor id, if the file exists.
    pub subsystem_vendor: Option<u16>,
    /// Subsystem device id, if the file exists.
    pub subsystem_device: Option<u16>,
    /// Class code, 24 bits: class, subclass, programming interface (`0x020000` Ethernet).
    pub class: u32,
    /// The bound driver's name (`driver` link), if any.
    pub driver: Option<String>,
    /// The driver forced with `driver_override`, if any.
    pub driver_override: Option<String>,
    /// NUMA node, `None` when the kernel says -1 (no affinity) or has no file.
    pub numa_node: Option<u32>,
    /// IOMMU group number (`iommu_group` link), if the device has one.
    pub iommu_group: Option<u32>,
    /// The group's name, if set: [`NOIOMMU_GROUP_NAME`] for no-IOMMU groups.
    pub iommu_group_name: Option<String>,
    /// Kernel network interfaces of the device (`net/*`).
    pub netdevs: Vec<String>,
    /// The physical function of an SR-IOV virtual function (`physfn` link).
    pub physfn: Option<PciAddress>,
}

impl PciDevice {
    /// Whether it is bound to vfio-pci.
    pub fn is_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_PCI_DRIVER)
    }

    /// Whether it is a network controller (class 0x02).
    pub fn is_network(&self) -> bool {
        self.class >> 16 == 0x02
    }

    /// Whether its group is a no-IOMMU group (only known when sysfs shows the name).
    pub fn is_noiommu(&self) -> bool {
        self.iommu_group_name.as_deref() == Some(NOIOMMU_GROUP_NAME)
    }
}

/// sysfs and procfs under a root directory (`/` in production).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new("/")
    }
}

impl Sysfs {
    /// Read below `root` (`/` in production, a temporary tree in tests).
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The root everything is read under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ROOT/sys/bus/pci/devices`.
    pub fn devices_dir(&self) -> PathBuf {
        self.root.join("sys/bus/pci/devices")
    }

    /// `ROOT/sys/bus/pci/devices/BDF`.
    pub fn device_dir(&self, addr: &PciAddress) -> PathBuf {
        self.devices_dir().join(addr.to_string())
    }

    /// `ROOT/sys/bus/pci/drivers/NAME`.
    pub fn driver_dir(&self, driver: &str) -> PathBuf {
        self.root.join("sys/bus/pci/drivers").join(driver)
    }

    /// `ROOT/sys/kernel/iommu_groups/N`.
    pub fn iommu_group_dir(&self, group: u32) -> PathBuf {
        self.root
            .join("sys/kernel/iommu_groups")
            .join(group.to_string())
    }

    /// Whether the device exists.
    pub fn exists(&self, addr: &PciAddress) -> bool {
        self.device_dir(addr).is_dir()
    }

    /// Everything sysfs says about one device.
    pub fn device(&self, addr: &PciAddress) -> Result<PciDevice> {
        let dir = self.device_dir(addr);
        if !dir.is_dir() {
            return Err(Error::Pci {
                device: addr.to_string(),
                reason: format!(
                    "no such device ({} does not exist); list devices with `lspci -D` and check the \
                     address, or in a pod the PCIDEVICE_* variables the device plugin set",
                    dir.display()
                ),
            });
        }
        let id = |name: &str| -> Result<u32> {
            let path = dir.join(name);
            let text = fs::read_to_string(&path).map_err(|source| Error::Io {
                op: "read",
                path: path.clone(),
                source,
                hint: None,
            })?;
            parse_hex(&text).ok_or_else(|| Error::Pci {
                device: addr.to_string(),
                reason: format!("{}: unexpected content {:?}", path.display(), text.trim()),
            })
        };
        let opt_id = |name: &str| -> Option<u32> {
            read_trimmed(&dir.join(name)).and_then(|t| parse_hex(&t))
        };
        let group_link = dir.join("iommu_group");
        let iommu_group = link_name(&group_link).and_then(|n| n.parse().ok());
        Ok(PciDevice {
            address: *addr,
            vendor: id("vendor")? as u16,
            device: id("device")? as u16,
            subsystem_vendor: opt_id("subsystem_vendor").map(|v| v as u16),
            subsystem_device: opt_id("subsystem_device").map(|v| v as u16),
            class: id("class")?,
            driver: link_name(&dir.join("driver")),
            driver_override: read_trimmed(&dir.join("driver_override"))
                .filter(|s| !s.is_empty() && s != "(null)"),
            numa_node: read_trimmed(&dir.join("numa_node"))
                .and_then(|t| t.parse::<i64>().ok())
                .and_then(|n| u32::try_from(n).ok()),
            iommu_group,
            iommu_group_name: iommu_group
                .and_then(|_| read_trimmed(&group_link.join("name")))
                .filter(|s| !s.is_empty()),
            netdevs: self.netdevs(addr),
            physfn: link_name(&dir.join("physfn")).and_then(|n| PciAddress::parse(&n).ok()),
        })
    }

    /// Every PCI device, sorted by address.
    pub fn devices(&self) -> Result<Vec<PciDevice>> {
        let dir = self.devices_dir();
        let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
            op: "list",
            path: dir.clone(),
            source,
            hint: Some("sysfs must be mounted at /sys"),
        })?;
        let mut addrs: Vec<PciAddress> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| PciAddress::parse(&e.file_name().to_string_lossy()).ok())
            .collect();
        addrs.sort();
        addrs.iter().map(|a| self.device(a)).collect()
    }

    /// The kernel network interfaces of a device (`BDF/net/*`), sorted.
    pub fn netdevs(&self, addr: &PciAddress) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.device_dir(addr).join("net"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The devices of IOMMU group `group`, with their drivers, sorted by address.
    pub fn iommu_group_members(&self, group: u32) -> Vec<(PciAddress, Option<String>)> {
        let dir = self.iommu_group_dir(group).join("devices");
        let mut out: Vec<(PciAddress, Option<String>)> = fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| PciAddress::parse(&e.file_name().to_string_lossy()).ok())
                    .map(|a| (a, link_name(&self.device_dir(&a).join("driver"))))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// `enable_unsafe_noiommu_mode` of the vfio module: `Some(true)` if loaded with
    /// it, `Some(false)` if loaded without, `None` if the module (or the parameter,
    /// in a kernel without CONFIG_VFIO_NOIOMMU) is absent.
    pub fn noiommu_mode_enabled(&self) -> Option<bool> {
        read_trimmed(
            &self
                .root
                .join("sys/module/vfio/parameters/enable_unsafe_noiommu_mode"),
        )
        .map(|v| v == "Y" || v == "1")
    }
}

/// The command that hands `addr` to vfio-pci, for error messages.
pub fn bind_command(addr: &PciAddress) -> String {
    format!(
        "`testpmd bind {addr}`, or `echo vfio-pci > /sys/bus/pci/devices/{addr}/driver_override; \
         echo {addr} > /sys/bus/pci/drivers_probe` (unbind its current driver first if it has one: \
         `echo {addr} > /sys/bus/pci/devices/{addr}/driver/unbind`)"
    )
}

/// The final path component of a symlink's target.
pub(crate) fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// A file's content without surrounding white space; `None` if unreadable.
pub(crate) fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn parse_hex(text: &str) -> Option<u32> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(t, 16).ok()
}

/// Write `value` to a sysfs attribute, naming the file in the error.
pub(crate) fn write_attr(path: &Path, value: &str, hint: Option<&'static str>) -> Result<()> {
    fs::write(path, value).map_err(|source: io::Error| Error::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
        hint,
    })
}

/// Builders for fake sysfs trees, for this crate's tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake root with `sys/bus/pci/{devices,drivers}`.
    pub(crate) struct FakeSys {
        pub dir: tempfile::TempDir,
    }

    /// One fake device.
    pub(crate) struct FakeDev<'a> {
        pub bdf: &'a str,
        pub vendor: u16,
        pub device: u16,
        pub class: u32,
        pub driver: Option<&'a str>,
        pub group: Option<u32>,
        pub noiommu: bool,
        pub numa: i32,
        pub netdevs: &'a [&'a str],
    }

    impl Default for FakeDev<'_> {
        fn default() -> Self {
            FakeDev {
                bdf: "0000:00:03.0",
                vendor: 0x8086,
                device: 0x10d3,
                class: 0x020000,
                driver: Some("vfio-pci"),
                group: Some(2),
                noiommu: false,
                numa: -1,
                netdevs: &[],
            }
        }
    }

    impl FakeSys {
        pub(crate) fn new() -> FakeSys {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("sys/bus/pci/devices")).unwrap();
            fs::create_dir_all(dir.path().join("sys/bus/pci/drivers")).unwrap();
            fs::create_dir_all(dir.path().join("sys/kernel/iommu_groups")).unwrap();
            fs::write(dir.path().join("sys/bus/pci/drivers_probe"), "").unwrap();
            FakeSys { dir }
        }

        pub(crate) fn root(&self) -> &Path {
            self.dir.path()
        }

        pub(crate) fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.root())
        }

        pub(crate) fn path(&self, rel: &str) -> PathBuf {
            self.root().join(rel)
        }

        pub(crate) fn driver(&self, name: &str) -> PathBuf {
            let d = self.path("sys/bus/pci/drivers").join(name);
            fs::create_dir_all(&d).unwrap();
            d
        }

        pub(crate) fn noiommu_param(&self, on: bool) {
            let d = self.path("sys/module/vfio/parameters");
            fs::create_dir_all(&d).unwrap();
            fs::write(
                d.join("enable_unsafe_noiommu_mode"),
                if on { "Y\n" } else { "N\n" },
            )
            .unwrap();
        }

        pub(crate) fn add(&self, d: &FakeDev<'_>) -> PathBuf {
            // Real sysfs: devices/BDF is a link into /sys/devices; a directory will do.
            let dir = self.path("sys/bus/pci/devices").join(d.bdf);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("vendor"), format!("0x{:04x}\n", d.vendor)).unwrap();
            fs::write(dir.join("device"), format!("0x{:04x}\n", d.device)).unwrap();
            fs::write(dir.join("subsystem_vendor"), "0x1af4\n").unwrap();
            fs::write(dir.join("subsystem_device"), "0x1100\n").unwrap();
            fs::write(dir.join("class"), format!("0x{:06x}\n", d.class)).unwrap();
            fs::write(dir.join("numa_node"), format!("{}\n", d.numa)).unwrap();
            fs::write(dir.join("driver_override"), "(null)\n").unwrap();
            if let Some(drv) = d.driver {
                let drv_dir = self.driver(drv);
                symlink(&drv_dir, dir.join("driver")).unwrap();
                fs::create_dir_all(drv_dir.join(d.bdf)).unwrap();
            }
            if let Some(g) = d.group {
                let gdir = self.path("sys/kernel/iommu_groups").join(g.to_string());
                fs::create_dir_all(gdir.join("devices")).unwrap();
                let member = gdir.join("devices").join(d.bdf);
                if !member.exists() {
                    symlink(&dir, member).unwrap();
                }
                if d.noiommu {
                    fs::write(gdir.join("name"), "vfio-noiommu\n").unwrap();
                }
                symlink(&gdir, dir.join("iommu_group")).unwrap();
            }
            if !d.netdevs.is_empty() {
                for n in d.netdevs {
                    fs::create_dir_all(dir.join("net").join(n)).unwrap();
                    let cls = self.path("sys/class/net").join(n);
                    fs::create_dir_all(&cls).unwrap();
                    fs::write(cls.join("flags"), "0x1003\n").unwrap();
                    fs::write(cls.join("operstate"), "up\n").unwrap();
                }
            }
            dir
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeDev, FakeSys};
    use super::*;

    #[test]
    fn parses_full_and_short_addresses() {
        let a = PciAddress::parse("0000:00:03.0").unwrap();
        assert_eq!(a, PciAddress::new(0, 0, 3, 0).unwrap());
        assert_eq!(PciAddress::parse("00:03.0").unwrap(), a);
        assert_eq!(
            PciAddress::parse(" 0000:3B:02.6 ").unwrap().to_string(),
            "0000:3b:02.6"
        );
        assert_eq!(
            PciAddress::parse("10000:01:00.1").unwrap().to_string(),
            "10000:01:00.1"
        );
        assert_eq!(
            "af:1f.7".parse::<PciAddress>().unwrap().to_string(),
            "0000:af:1f.7"
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "0000:00:03",
            "00:03",
            "0000:00:20.0",
            "0000:00:03.8",
            "0000:000:03.0",
            "zz:03.0",
            "0000:00:03.0.1",
            "1:2:3:4.0",
            "eth0",
            "0000:00:03.",
        ] {
            let e = PciAddress::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected DDDD:BB:DD.F"), "{bad}: {e}");
        }
    }

    #[test]
    fn reads_a_device() {
        let t = FakeSys::new();
        t.add(&FakeDev {
            numa: 1,
            driver: Some("e1000e"),
            netdevs: &["ens3"],
            ..FakeDev::default()
        });
        let dev = t.sysfs().device(&"00:03.0".parse().unwrap()).unwrap();
        assert_eq!(
            (dev.vendor, dev.device, dev.class),
            (0x8086, 0x10d3, 0x020000)
        );
        assert_eq!(dev.subsystem_vendor, Some(0x1af4));
        assert_eq!(dev.driver.as_deref(), Some("e1000e"));
        assert_eq!(dev.driver_override, None);
        assert_eq!(dev.numa_node, Some(1));
        assert_eq!(dev.iommu_group, Some(2));
        assert_eq!(dev.iommu_group_name, None);
        assert_eq!(dev.netdevs, vec!["ens3".to_string()]);
        assert!(dev.is_network() && !dev.is_vfio() && !dev.is_noiommu());
    }

    #[test]
    fn reads_noiommu_group_and_no_numa() {
        let t = FakeSys::new();
        t.add(&FakeDev {
            group: Some(0),
            noiommu: true,
            ..FakeDev::default()
        });
        t.noiommu_param(true);
        let s = t.sysfs();
        let dev = s.device(&"0000:00:03.0".parse().unwrap()).unwrap();
        assert_eq!(dev.numa_node, None);
        assert!(dev.is_vfio() && dev.is_noiommu());
        assert_eq!(s.noiommu_mode_enabled(), Some(true));
        assert_eq!(
            s.iommu_group_members(0),
            vec![(dev.address, Some("vfio-pci".to_string()))]
        );
    }

    #[test]
    fn lists_devices_sorted_and_reports_missing_ones() {
        let t = FakeSys::new();
        t.add(&FakeDev {
            bdf: "0000:00:04.0",
            group: Some(3),
            ..FakeDev::default()
        });
        t.add(&FakeDev::default());
        let all = t.sysfs().devices().unwrap();
        let names: Vec<String> = all.iter().map(|d| d.address.to_string()).collect();
        assert_eq!(names, ["0000:00:03.0", "0000:00:04.0"]);
        let e = t
            .sysfs()
            .device(&"0000:00:09.0".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0000:00:09.0") && e.contains("no such device"),
            "{e}"
        );
        assert_eq!(t.sysfs().noiommu_mode_enabled(), None);
    }

    #[test]
    fn bind_command_names_both_ways() {
        let c = bind_command(&"00:03.0".parse().unwrap());
        assert!(c.contains("testpmd bind 0000:00:03.0"));
        assert!(c.contains("echo vfio-pci > /sys/bus/pci/devices/0000:00:03.0/driver_override"));
        assert!(c.contains("echo 0000:00:03.0 > /sys/bus/pci/drivers_probe"));
    }
}
