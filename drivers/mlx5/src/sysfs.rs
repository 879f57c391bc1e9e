//! sysfs readers: which RDMA device and network interface a selector means, and
//! the interface's MAC, link and counters. Every reader takes the root the
//! `sys/` tree hangs from (`/` on a machine; a temporary directory in tests).
#![deny(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

use nicpoll::port::{Link, MacAddr};

use crate::options::{Selector, normalize_pci};

/// Mellanox's PCI vendor id.
pub const MELLANOX_VENDOR: &str = "0x15b3";
/// PCI device ids of ConnectX virtual functions (ConnectX-4, -4 Lx, -5,
/// -5 Ex, -6, and the mlx5 generic VF of later ones; the kernel's mlx5_core
/// `mlx5_core_pci_table`).
pub const MLX5_VF_IDS: &[&str] = &["0x1014", "0x1016", "0x1018", "0x101a", "0x101c", "0x101e"];

/// The kernel driver of ConnectX-4 and newer functions.
pub const MLX5_DRIVER: &str = "mlx5_core";

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A line `KEY=value` of a uevent file.
fn uevent(dev: &Path, key: &str) -> Option<String> {
    let text = fs::read_to_string(dev.join("uevent")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
}

/// The PCI address of a device directory (`.../device`): its uevent's
/// PCI_SLOT_NAME, or the name of the directory the link resolves to.
pub fn pci_of(dev: &Path) -> Option<String> {
    if let Some(s) = uevent(dev, "PCI_SLOT_NAME") {
        return normalize_pci(&s);
    }
    let real = fs::canonicalize(dev).ok()?;
    normalize_pci(&real.file_name()?.to_string_lossy())
}

/// The kernel driver bound to a device directory: uevent's DRIVER, or the name
/// the `driver` link points to.
pub fn driver_of(dev: &Path) -> Option<String> {
    if let Some(d) = uevent(dev, "DRIVER") {
        return Some(d);
    }
    let target = fs::read_link(dev.join("driver")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Whether the PCI function `bdf` is a Mellanox device bound to mlx5_core: the
/// application's `-a BDF` then goes to this driver instead of VFIO.
pub fn is_mlx5_pci(root: &Path, bdf: &str) -> bool {
    let Some(bdf) = normalize_pci(bdf) else {
        return false;
    };
    let dev = root.join("sys/bus/pci/devices").join(&bdf);
    read_trim(&dev.join("vendor")).as_deref() == Some(MELLANOX_VENDOR)
        && driver_of(&dev).as_deref() == Some(MLX5_DRIVER)
}

/// One RDMA device as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaDev {
    /// `mlx5_0`.
    pub ibdev: String,
    /// Its PCI function.
    pub pci: Option<String>,
    /// Kernel driver of the PCI function.
    pub driver: Option<String>,
    /// Network interfaces on the same function, by `dev_port`.
    pub netdevs: Vec<String>,
}

impl std::fmt::Display for RdmaDev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (PCI {}, driver {}, interface {})",
            self.ibdev,
            self.pci.as_deref().unwrap_or("?"),
            self.driver.as_deref().unwrap_or("?"),
            if self.netdevs.is_empty() {
                "none".to_string()
            } else {
                self.netdevs.join("/")
            }
        )
    }
}

/// A network interface's `dev_port` (0 if absent).
fn dev_port(root: &Path, ifname: &str) -> u32 {
    read_trim(&root.join("sys/class/net").join(ifname).join("dev_port"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Interfaces whose device is the PCI function `pci`, ordered by dev_port.
fn netdevs_of(root: &Path, pci: &str) -> Vec<String> {
    let net = root.join("sys/class/net");
    let mut v: Vec<(u32, String)> = sorted_entries(&net)
        .into_iter()
        .filter(|n| pci_of(&net.join(n).join("device")).as_deref() == Some(pci))
        .map(|n| (dev_port(root, &n), n))
        .collect();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// Every RDMA device under `root`.
pub fn list_rdma(root: &Path) -> Vec<RdmaDev> {
    let class = root.join("sys/class/infiniband");
    sorted_entries(&class)
        .into_iter()
        .map(|ibdev| {
            let dev = class.join(&ibdev).join("device");
            let pci = pci_of(&dev);
            RdmaDev {
                driver: driver_of(&dev),
                netdevs: pci
                    .as_deref()
                    .map(|p| netdevs_of(root, p))
                    .unwrap_or_default(),
                pci,
                ibdev,
            }
        })
        .collect()
}

/// What a selector resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The RDMA device (`mlx5_0`).
    pub ibdev: String,
    /// Its PCI function.
    pub pci: Option<String>,
    /// The network interface whose traffic we share.
    pub netdev: String,
    /// IB port number (1-based): the interface's dev_port + 1.
    pub port: u8,
}

/// Why a selector resolved to nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotFound {
    /// The reason, with the fix.
    pub reason: String,
    /// The RDMA devices that exist.
    pub found: Vec<String>,
}

/// Resolve `sel` to an RDMA device and its network interface.
pub fn resolve(root: &Path, sel: &Selector) -> Result<Resolved, NotFound> {
    let all = list_rdma(root);
    let found: Vec<String> = all.iter().map(|d| d.to_string()).collect();
    let nf = |reason: String| NotFound {
        reason,
        found: found.clone(),
    };
    match sel {
        Selector::Iface(name) => {
            let dir = root.join("sys/class/net").join(name);
            if !dir.exists() {
                let ifs = sorted_entries(&root.join("sys/class/net"));
                return Err(nf(format!(
                    "there is no network interface {name} in this network namespace (interfaces: {})",
                    if ifs.is_empty() {
                        "none".into()
                    } else {
                        ifs.join(", ")
                    }
                )));
            }
            let dev = dir.join("device");
            let Some(pci) = pci_of(&dev) else {
                return Err(nf(format!(
                    "{name} is not a PCI network function (a virtual interface?)"
                )));
            };
            let driver = driver_of(&dev).unwrap_or_else(|| "none".into());
            let Some(rd) = all.iter().find(|d| d.pci.as_deref() == Some(pci.as_str())) else {
                return Err(nf(no_rdma_hint(name, &pci, &driver)));
            };
            Ok(Resolved {
                ibdev: rd.ibdev.clone(),
                pci: Some(pci),
                netdev: name.clone(),
                port: port_of(root, name),
            })
        }
        Selector::Pci(bdf) => {
            let Some(rd) = all.iter().find(|d| d.pci.as_deref() == Some(bdf.as_str())) else {
                let dev = root.join("sys/bus/pci/devices").join(bdf);
                let reason = if !dev.exists() {
                    format!("there is no PCI function {bdf}")
                } else {
                    let driver = driver_of(&dev).unwrap_or_else(|| "none".into());
                    no_rdma_hint(bdf, bdf, &driver)
                };
                return Err(nf(reason));
            };
            let Some(netdev) = rd.netdevs.first().cloned() else {
                return Err(nf(format!(
                    "{} ({bdf}) has no network interface in this network namespace; the \
                     bifurcated model shares the interface's traffic, so it must be visible here \
                     (a VF moved into another namespace?)",
                    rd.ibdev
                )));
            };
            Ok(Resolved {
                ibdev: rd.ibdev.clone(),
                pci: Some(bdf.clone()),
                port: port_of(root, &netdev),
                netdev,
            })
        }
    }
}

fn port_of(root: &Path, ifname: &str) -> u8 {
    (dev_port(root, ifname) + 1).min(255) as u8
}

fn no_rdma_hint(what: &str, pci: &str, driver: &str) -> String {
    if driver == MLX5_DRIVER {
        format!(
            "{what} (PCI {pci}) is a ConnectX function without an RDMA device: load mlx5_ib \
             (`modprobe mlx5_ib`); in a pod, share the RDMA device into it (rdma shared device \
             plugin, or `rdma system set netns shared` on the node)"
        )
    } else {
        format!(
            "{what} (PCI {pci}) is driven by {driver}, not {MLX5_DRIVER}: net_mlx5 drives \
             ConnectX-4 and newer (Mellanox/NVIDIA, vendor {MELLANOX_VENDOR}) only"
        )
    }
}

/// The kernel side of a port: one network interface's sysfs directory.
#[derive(Clone, Debug)]
pub struct Netdev {
    root: PathBuf,
    /// Interface name.
    pub name: String,
}

impl Netdev {
    /// The interface `name` under `root`.
    pub fn new(root: &Path, name: &str) -> Netdev {
        Netdev {
            root: root.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join("sys/class/net").join(&self.name)
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> Option<MacAddr> {
        read_trim(&self.dir().join("address"))?.parse().ok()
    }

    /// The interface's MTU.
    pub fn mtu(&self) -> Option<u32> {
        read_trim(&self.dir().join("mtu"))?.parse().ok()
    }

    /// The interface's flags (`IFF_*`).
    pub fn flags(&self) -> Option<u32> {
        let f = read_trim(&self.dir().join("flags"))?;
        u32::from_str_radix(f.trim_start_matches("0x"), 16).ok()
    }

    /// Whether the interface is an SR-IOV virtual function: its PF is linked
    /// (`device/physfn`, on the host), or its PCI device id is a ConnectX VF's
    /// (in a VM, where the PF is not visible).
    pub fn is_vf(&self) -> bool {
        let dev = self.dir().join("device");
        dev.join("physfn").exists()
            || read_trim(&dev.join("device")).is_some_and(|id| MLX5_VF_IDS.contains(&id.as_str()))
    }

    /// The PF's interface and this VF's index on it, when the PF is visible.
    pub fn pf_and_vf_index(&self) -> Option<(String, u32)> {
        let dev = fs::canonicalize(self.dir().join("device")).ok()?;
        let pf = self.dir().join("device/physfn");
        let pf_if = sorted_entries(&pf.join("net")).into_iter().next()?;
        let vf = sorted_entries(&pf).into_iter().find_map(|e| {
            let n: u32 = e.strip_prefix("virtfn")?.parse().ok()?;
            (fs::canonicalize(pf.join(&e)).ok()? == dev).then_some(n)
        })?;
        Some((pf_if, vf))
    }

    /// The MTU of the PF, when visible: a VF receives frames up to it,
    /// whatever its own MTU says (DPDK's mlx5 guide, "Virtual Function").
    pub fn pf_mtu(&self) -> Option<u32> {
        let pf = self.dir().join("device/physfn/net");
        let pf_if = sorted_entries(&pf).into_iter().next()?;
        read_trim(&pf.join(pf_if).join("mtu"))?.parse().ok()
    }

    /// The interface index (for netlink).
    pub fn ifindex(&self) -> Option<u32> {
        read_trim(&self.dir().join("ifindex"))?.parse().ok()
    }

    /// NUMA node of its PCI function.
    pub fn numa_node(&self) -> Option<u32> {
        read_trim(&self.dir().join("device/numa_node"))?
            .parse()
            .ok()
    }

    /// Link state: operstate, speed (Mbit/s; -1 or unreadable when down), duplex.
    pub fn link(&self) -> Link {
        let d = self.dir();
        let up = read_trim(&d.join("operstate")).as_deref() == Some("up");
        let speed = read_trim(&d.join("speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(0);
        Link {
            up,
            speed_mbps: if up {
                speed.min(u32::MAX as i64) as u32
            } else {
                0
            },
            full_duplex: read_trim(&d.join("duplex")).as_deref() == Some("full"),
        }
    }

    /// The kernel's counters (`statistics/*`), named `netdev_<file>`.
    pub fn statistics(&self) -> Vec<(String, u64)> {
        counters_in(&self.dir().join("statistics"), "netdev_")
    }
}

/// The RDMA port's hardware counters (`ports/N/hw_counters/*`), named `hw_<file>`.
/// `out_of_buffer` there counts packets dropped because a verbs receive queue of
/// this function had no buffer posted: our `imissed`.
pub fn hw_counters(root: &Path, ibdev: &str, port: u8) -> Vec<(String, u64)> {
    counters_in(
        &root
            .join("sys/class/infiniband")
            .join(ibdev)
            .join("ports")
            .join(port.to_string())
            .join("hw_counters"),
        "hw_",
    )
}

fn counters_in(dir: &Path, prefix: &str) -> Vec<(String, u64)> {
    sorted_entries(dir)
        .into_iter()
        .filter_map(|f| {
            let v = read_trim(&dir.join(&f))?.parse::<u64>().ok()?;
            Some((format!("{prefix}{f}"), v))
        })
        .collect()
}

/// A fake sysfs tree for tests: ConnectX functions with their RDMA device and
/// network interface, plus other interfaces.
#[cfg(test)]
pub(crate) mod fake_tree {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A temporary directory removed on drop.
    pub struct TempRoot(pub PathBuf);

    impl TempRoot {
        pub fn new(tag: &str) -> TempRoot {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "nicpoll-mlx5-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempRoot(p)
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// Add a PCI function with a driver, and optionally an RDMA device and an
    /// interface on it.
    pub fn add_function(
        root: &Path,
        bdf: &str,
        vendor: &str,
        driver: &str,
        ibdev: Option<&str>,
        netdev: Option<(&str, &str)>,
    ) {
        let dev = root.join("sys/devices/pci0000:00").join(bdf);
        fs::create_dir_all(&dev).unwrap();
        write(&dev.join("vendor"), &format!("{vendor}\n"));
        write(&dev.join("numa_node"), "0\n");
        write(
            &dev.join("uevent"),
            &format!("DRIVER={driver}\nPCI_SLOT_NAME={bdf}\n"),
        );
        let drv = root.join("sys/bus/pci/drivers").join(driver);
        fs::create_dir_all(&drv).unwrap();
        symlink(&drv, dev.join("driver")).unwrap();
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        symlink(&dev, root.join("sys/bus/pci/devices").join(bdf)).unwrap();
        if let Some(ib) = ibdev {
            let d = root.join("sys/class/infiniband").join(ib);
            fs::create_dir_all(&d).unwrap();
            symlink(&dev, d.join("device")).unwrap();
            write(&d.join("ports/1/hw_counters/out_of_buffer"), "0\n");
        }
        if let Some((name, mac)) = netdev {
            let d = root.join("sys/class/net").join(name);
            fs::create_dir_all(d.join("statistics")).unwrap();
            symlink(&dev, d.join("device")).unwrap();
            write(&d.join("address"), &format!("{mac}\n"));
            write(&d.join("mtu"), "1500\n");
            write(&d.join("operstate"), "up\n");
            write(&d.join("speed"), "25000\n");
            write(&d.join("duplex"), "full\n");
            write(&d.join("ifindex"), "7\n");
            write(&d.join("dev_port"), "0\n");
            write(&d.join("statistics/rx_packets"), "10\n");
            write(&d.join("statistics/tx_packets"), "20\n");
        }
    }

    /// A virtual interface (no device link).
    pub fn add_virtual(root: &Path, name: &str) {
        let d = root.join("sys/class/net").join(name);
        fs::create_dir_all(&d).unwrap();
        write(&d.join("address"), "00:00:00:00:00:00\n");
    }
}

#[cfg(test)]
mod tests {
    use super::fake_tree::*;
    use super::*;

    fn tree() -> TempRoot {
        let t = TempRoot::new("sysfs");
        add_function(
            &t.0,
            "0000:03:00.0",
            MELLANOX_VENDOR,
            MLX5_DRIVER,
            Some("mlx5_0"),
            Some(("ens1f0", "0c:42:a1:00:00:01")),
        );
        add_function(
            &t.0,
            "0000:03:00.2",
            MELLANOX_VENDOR,
            MLX5_DRIVER,
            None,
            Some(("ens1f0v0", "0c:42:a1:00:00:02")),
        );
        add_function(
            &t.0,
            "0000:05:00.0",
            "0x8086",
            "i40e",
            None,
            Some(("eno1", "3c:fd:fe:00:00:01")),
        );
        add_virtual(&t.0, "lo");
        t
    }

    #[test]
    fn resolves_by_interface_and_by_pci() {
        let t = tree();
        let want = Resolved {
            ibdev: "mlx5_0".into(),
            pci: Some("0000:03:00.0".into()),
            netdev: "ens1f0".into(),
            port: 1,
        };
        assert_eq!(
            resolve(&t.0, &Selector::Iface("ens1f0".into())).unwrap(),
            want
        );
        assert_eq!(
            resolve(&t.0, &Selector::Pci("0000:03:00.0".into())).unwrap(),
            want
        );
        let n = Netdev::new(&t.0, "ens1f0");
        assert_eq!(n.mac().unwrap().to_string(), "0C:42:A1:00:00:01");
        assert_eq!(n.mtu(), Some(1500));
        assert_eq!(n.ifindex(), Some(7));
        assert_eq!(n.numa_node(), Some(0));
        assert_eq!(n.link().to_string(), "up, 25 Gbps, full-duplex");
        assert!(n.statistics().contains(&("netdev_rx_packets".into(), 10)));
        assert_eq!(
            hw_counters(&t.0, "mlx5_0", 1),
            vec![("hw_out_of_buffer".to_string(), 0)]
        );
        assert!(is_mlx5_pci(&t.0, "03:00.0"));
        assert!(is_mlx5_pci(&t.0, "0000:03:00.2"));
        assert!(!is_mlx5_pci(&t.0, "0000:05:00.0"));
        assert!(!is_mlx5_pci(&t.0, "0000:09:00.0"));
        assert!(!is_mlx5_pci(&t.0, "garbage"));
    }

    #[test]
    fn not_found_lists_what_exists_and_why() {
        let t = tree();
        for (sel, needle) in [
            (Selector::Iface("eth9".into()), "no network interface eth9"),
            (Selector::Iface("lo".into()), "not a PCI network function"),
            (Selector::Iface("eno1".into()), "driven by i40e"),
            (Selector::Iface("ens1f0v0".into()), "modprobe mlx5_ib"),
            (Selector::Pci("0000:09:00.0".into()), "no PCI function"),
            (Selector::Pci("0000:03:00.2".into()), "modprobe mlx5_ib"),
        ] {
            let e = resolve(&t.0, &sel).unwrap_err();
            assert!(e.reason.contains(needle), "{sel}: {}", e.reason);
            assert_eq!(e.found.len(), 1);
            assert!(
                e.found[0]
                    .contains("mlx5_0 (PCI 0000:03:00.0, driver mlx5_core, interface ens1f0)"),
                "{:?}",
                e.found
            );
        }
    }

    #[test]
    fn real_sysfs_is_readable() {
        // Whatever this machine has: no panic, and lo is never an RDMA device.
        let root = Path::new("/");
        let _ = list_rdma(root);
        assert!(resolve(root, &Selector::Iface("lo".into())).is_err());
    }
}
