//! Devices: which PCI devices to check (from `-a` and the device plugin's
//! `PCIDEVICE_*` variables), and `driver BDF`: each is bound to the driver
//! nicpoll uses for it.

use std::fs;
use std::path::PathBuf;

use nicpoll::pci::{PciAddress, PciDevice, VFIO_PCI_DRIVER};

use crate::device_plugin::DevicePluginEnv;

use super::host::Host;
use super::{Finding, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Intel (iavf, ...) and virtio devices: userspace over vfio-pci.
    Vfio,
    /// Mellanox ConnectX: bifurcated, stays on mlx5_core, used through verbs.
    Mlx5,
    /// Something nicpoll has no driver for.
    Other,
}

pub(super) const INTEL: u16 = 0x8086;
pub(super) const VIRTIO: u16 = 0x1af4;
pub(super) const MELLANOX: u16 = 0x15b3;
pub(super) const MLX5_DRIVER: &str = "mlx5_core";

/// One device to check.
pub(super) struct Dev {
    pub(super) addr: PciAddress,
    /// Where it came from: `-a`, or the `PCIDEVICE_*` variable.
    pub(super) sources: Vec<String>,
    /// What sysfs says, or why it could not say.
    pub(super) info: Result<PciDevice, String>,
    /// The group node the device plugin says it mounted (`vfio.dev-mount`).
    pub(super) plugin_group_node: Option<PathBuf>,
    /// The container node the plugin says it mounted (`vfio.mount`).
    pub(super) plugin_container_node: Option<PathBuf>,
}

impl Dev {
    pub(super) fn kind(&self) -> Option<Kind> {
        self.info.as_ref().ok().map(|d| match d.vendor {
            INTEL | VIRTIO => Kind::Vfio,
            MELLANOX => Kind::Mlx5,
            _ => Kind::Other,
        })
    }

    pub(super) fn noiommu_group(&self) -> bool {
        self.info.as_ref().is_ok_and(|d| d.is_noiommu())
    }
}

pub(super) fn resolve_devices(
    host: &Host<'_>,
    wanted: impl IntoIterator<Item = (PciAddress, String)>,
) -> Vec<Dev> {
    let plugin = DevicePluginEnv::from_vars(host.env.iter()).unwrap_or_default();
    let mut devs: Vec<Dev> = Vec::new();
    for (addr, source) in wanted {
        if let Some(d) = devs.iter_mut().find(|d| d.addr == addr) {
            if !d.sources.contains(&source) {
                d.sources.push(source);
            }
            continue;
        }
        let info = if host.sysfs.exists(&addr) {
            host.sysfs.device(&addr).map_err(|e| e.to_string())
        } else {
            Err(format!(
                "not in sysfs ({} does not exist)",
                host.shown(&host.sysfs.device_dir(&addr))
            ))
        };
        let pd = plugin.device(&addr);
        devs.push(Dev {
            addr,
            sources: vec![source],
            info,
            plugin_group_node: pd.and_then(|p| p.vfio_dev_mount.clone()),
            plugin_container_node: pd.and_then(|p| p.vfio_mount.clone()),
        });
    }
    devs
}

pub(super) fn devices_finding(devs: &[Dev], plugin: &DevicePluginEnv) -> Finding {
    let others: Vec<&str> = plugin
        .resources
        .iter()
        .flat_map(|r| r.other_ids.iter().map(String::as_str))
        .collect();
    let other_note = if others.is_empty() {
        String::new()
    } else {
        format!("; not PCI devices, not checked: {}", others.join(", "))
    };
    if devs.is_empty() {
        return Finding::new(
            "devices",
            Status::Warn,
            format!(
                "no PCI device: none given with -a and no PCIDEVICE_* variable from the device plugin; \
                 only software ports (--vdev) can run, and device checks say what a device would need{other_note}"
            ),
        )
        .fix(
            "name the devices: testpmd doctor -a 0000:00:07.0; in a pod request the device plugin's \
             resource in resources.requests and limits (e.g. openshift.io/intelnics_radio_uplink: \"1\")",
        );
    }
    let list: Vec<String> = devs
        .iter()
        .map(|d| format!("{} ({})", d.addr, d.sources.join(", ")))
        .collect();
    Finding::pass(
        "devices",
        format!(
            "{} PCI device(s): {}{other_note}",
            devs.len(),
            list.join(", ")
        ),
    )
}

pub(super) fn describe(d: &PciDevice) -> String {
    let vendor = match d.vendor {
        INTEL => "Intel",
        VIRTIO => "virtio",
        MELLANOX => "Mellanox",
        _ => "vendor",
    };
    format!("{vendor} {:04x}:{:04x}", d.vendor, d.device)
}

pub(super) fn bind_fix(host: &Host<'_>, addr: &PciAddress) -> String {
    let mut fix = String::new();
    if !host.module_loaded("vfio_pci") && !host.path("/sys/bus/pci/drivers/vfio-pci").is_dir() {
        fix.push_str("modprobe vfio-pci && ");
    }
    fix.push_str(&format!("testpmd bind {addr}"));
    if host.in_pod {
        fix.push_str(
            " (on the node, or in a privileged pod: binding writes to /sys; the device plugin's \
             pool should select drivers [\"vfio-pci\"])",
        );
    }
    fix
}

/// `driver BDF`: the device exists and is bound to the driver nicpoll uses for it.
pub(super) fn check_driver(host: &Host<'_>, dev: &Dev) -> Finding {
    let name = format!("driver {}", dev.addr);
    let d = match &dev.info {
        Ok(d) => d,
        Err(e) => {
            return Finding::new(
                name,
                Status::Fail,
                format!("{} (from {}): {e}", dev.addr, dev.sources.join(", ")),
            )
            .fix(
                "list the machine's devices with `lspci -D` and correct the -a address, or the \
                     device plugin's pool (PCIDEVICE_* come from it)",
            );
        }
    };
    let what = describe(d);
    let bound = d.driver.as_deref();
    match dev.kind() {
        Some(Kind::Vfio) => match bound {
            Some(VFIO_PCI_DRIVER) => Finding::pass(name, format!("{what} is bound to vfio-pci")),
            Some(other) => Finding::new(
                name,
                Status::Fail,
                format!("{what} is bound to {other}; nicpoll drives it through vfio-pci"),
            )
            .fix(bind_fix(host, &dev.addr)),
            None => Finding::new(
                name,
                Status::Fail,
                format!("{what} has no driver; nicpoll drives it through vfio-pci"),
            )
            .fix(bind_fix(host, &dev.addr)),
        },
        Some(Kind::Mlx5) => check_mlx5_driver(host, dev, name, what, bound),
        _ => Finding::new(
            name,
            Status::Warn,
            format!(
                "{what} (driver {}): nicpoll has no driver for this vendor (Intel 8086 and virtio 1af4 \
                 over vfio-pci, Mellanox 15b3 over mlx5_core)",
                bound.unwrap_or("none")
            ),
        )
        .fix("use a supported device, or leave this one out of -a and the device plugin's pool"),
    }
}

pub(super) fn check_mlx5_driver(
    host: &Host<'_>,
    dev: &Dev,
    name: String,
    what: String,
    bound: Option<&str>,
) -> Finding {
    let a = dev.addr;
    match bound {
        Some(MLX5_DRIVER) => {
            let rdma = rdma_devices(host, &a);
            if rdma.is_empty() {
                Finding::new(
                    name,
                    Status::Fail,
                    format!("{what} is bound to mlx5_core but has no RDMA device (no /sys/class/infiniband entry for it): verbs cannot open it"),
                )
                .fix(
                    "modprobe mlx5_ib (on the node); in a pod, share the RDMA device into it: the rdma \
                     shared device plugin, or `rdma system set netns shared` on the node",
                )
            } else {
                Finding::pass(
                    name,
                    format!(
                        "{what} is bound to mlx5_core (bifurcated; RDMA device {})",
                        rdma.join(", ")
                    ),
                )
            }
        }
        other => {
            let now = other.map_or("no driver".to_string(), |o| format!("bound to {o}"));
            let fix = match other {
                Some(o) => format!(
                    "echo {a} > /sys/bus/pci/drivers/{o}/unbind; echo > /sys/bus/pci/devices/{a}/driver_override; \
                     echo {a} > /sys/bus/pci/drivers_probe (or `driverctl unset-override {a}`)"
                ),
                None => format!(
                    "modprobe mlx5_core; echo > /sys/bus/pci/devices/{a}/driver_override; echo {a} > /sys/bus/pci/drivers_probe"
                ),
            };
            Finding::new(
                name,
                Status::Fail,
                format!("{what} is {now}; Mellanox devices stay on mlx5_core (nicpoll uses them through verbs)"),
            )
            .fix(fix)
        }
    }
}

/// RDMA devices of a PCI function: `BDF/infiniband/*`, or a
/// `/sys/class/infiniband/*/device` that is the function.
pub(super) fn rdma_devices(host: &Host<'_>, addr: &PciAddress) -> Vec<String> {
    let bdf = addr.to_string();
    let mut v = host.list(&format!("/sys/bus/pci/devices/{bdf}/infiniband"));
    for ib in host.list("/sys/class/infiniband") {
        let link = host.path(format!("/sys/class/infiniband/{ib}/device"));
        let target = fs::read_link(&link)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        let canon = fs::canonicalize(&link)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        if (target.as_deref() == Some(bdf.as_str()) || canon.as_deref() == Some(bdf.as_str()))
            && !v.contains(&ib)
        {
            v.push(ib);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testing::*;
    use crate::doctor::{Env, exit_code, render_text};

    #[test]
    fn devices_pass_warn_fail() {
        let t = Tree::good();
        let e = env(&[("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK", VF)]);
        expect_saying(
            &t.checks(&e, &[VF]),
            "devices",
            Status::Pass,
            "",
            "0000:00:07.0 (-a, PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK)",
        );
        // The plugin's devices alone are checked too.
        let fs = t.checks(&e, &[]);
        expect(&fs, "driver 0000:00:07.0", Status::Pass, "");

        let fs = t.checks(&Env::new(), &[]);
        expect(&fs, "devices", Status::Warn, "testpmd doctor -a");
        // Nothing FAILs for want of a device on a good machine.
        assert_eq!(exit_code(&fs), 0, "{}", render_text(&fs, false));

        let bad = env(&[
            ("PCIDEVICE_X", "0000:00:07.0"),
            ("PCIDEVICE_X_INFO", "{oops"),
        ]);
        expect_saying(
            &t.checks(&bad, &[]),
            "devices",
            Status::Fail,
            "device plugin",
            "PCIDEVICE_X_INFO",
        );
    }

    #[test]
    fn intel_and_virtio_need_vfio_pci() {
        let t = Tree::good();
        expect(&t.vf(), "driver 0000:00:07.0", Status::Pass, "");
        let on_iavf = FakeDev {
            driver: Some("iavf"),
            ..FakeDev::default()
        };
        let virtio_unbound = FakeDev {
            vendor: VIRTIO,
            device: 0x1041,
            driver: None,
            ..FakeDev::default()
        };
        for (dev, says) in [
            (on_iavf, "bound to iavf"),
            (virtio_unbound, "virtio 1af4:1041 has no driver"),
        ] {
            t.device(&dev);
            let bind = "testpmd bind 0000:00:07.0";
            expect_saying(&t.vf(), "driver 0000:00:07.0", Status::Fail, bind, says);
        }
        // Without vfio-pci loaded the fix loads it first.
        t.rm("sys/module/vfio_pci")
            .rm("sys/bus/pci/drivers/vfio-pci");
        expect(
            &t.vf(),
            "driver 0000:00:07.0",
            Status::Fail,
            "modprobe vfio-pci && testpmd bind",
        );
        // In a pod: say where binding happens.
        expect(
            &t.checks(&pod(), &[VF]),
            "driver 0000:00:07.0",
            Status::Fail,
            "on the node",
        );
    }

    #[test]
    fn unknown_vendors_warn_and_missing_devices_fail() {
        let t = Tree::good();
        t.device(&FakeDev {
            vendor: 0x10ec,
            device: 0x8168,
            driver: Some("r8169"),
            group: None,
            ..FakeDev::default()
        });
        expect(
            &t.vf(),
            "driver 0000:00:07.0",
            Status::Warn,
            "supported device",
        );
        let fs = t.checks(&Env::new(), &["0000:00:1f.0"]);
        expect_saying(
            &fs,
            "driver 0000:00:1f.0",
            Status::Fail,
            "lspci -D",
            "/sys/bus/pci/devices/0000:00:1f.0 does not exist",
        );
    }

    #[test]
    fn mellanox_stays_on_mlx5_core_with_an_rdma_device() {
        let t = Tree::good();
        let mlx = FakeDev {
            group: Some((5, false)),
            ..FakeDev::mlx5()
        };
        t.device(&mlx);
        let name = "driver 0000:3b:00.2";
        expect(
            &t.checks(&Env::new(), &["3b:00.2"]),
            name,
            Status::Fail,
            "modprobe mlx5_ib",
        );
        t.mkdir("sys/class/infiniband/mlx5_0").link(
            "sys/bus/pci/devices/0000:3b:00.2",
            "sys/class/infiniband/mlx5_0/device",
        );
        let fs = t.checks(&Env::new(), &["3b:00.2"]);
        expect_saying(&fs, name, Status::Pass, "", "mlx5_0");
        // mlx5 alone needs no VFIO.
        expect(&fs, "vfio-modules", Status::Pass, "");
        expect(&fs, "capability SYS_RAWIO", Status::Pass, "");
        t.device(&FakeDev {
            driver: Some("vfio-pci"),
            ..mlx
        });
        let f = expect(
            &t.checks(&Env::new(), &["3b:00.2"]),
            name,
            Status::Fail,
            "driverctl unset-override 0000:3b:00.2",
        );
        assert!(
            f.fix
                .unwrap()
                .contains("echo 0000:3b:00.2 > /sys/bus/pci/drivers/vfio-pci/unbind")
        );
    }
}
