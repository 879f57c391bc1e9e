//! VFIO: the modules, no-IOMMU mode and its modprobe file, `/dev/vfio/vfio` and
//! each device's group node.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nicpoll::pci::{PciDevice, VFIO_PCI_DRIVER};

use super::devices::{Dev, Kind};
use super::host::Host;
use super::scope::Scope;
use super::{Finding, Status};

pub(super) fn vfio_checks(host: &Host<'_>, devs: &[Dev], scope: &Scope) -> Vec<Finding> {
    let mut out = vec![
        check_vfio_modules(host, scope),
        check_noiommu(host, scope),
        check_vfio_container(host, devs, scope),
    ];
    out.extend(
        devs.iter()
            .filter(|d| d.kind() == Some(Kind::Vfio))
            .filter_map(|d| Some((d, d.info.as_ref().ok().filter(|i| i.is_vfio())?)))
            .map(|(d, info)| check_vfio_group(host, d, info)),
    );
    out
}

/// `vfio-modules`: vfio and vfio_pci are loaded (or built in).
pub(super) fn check_vfio_modules(host: &Host<'_>, scope: &Scope) -> Finding {
    const NAME: &str = "vfio-modules";
    let vfio = host.module_loaded("vfio");
    let vfio_pci =
        host.module_loaded("vfio_pci") || host.path("/sys/bus/pci/drivers/vfio-pci").is_dir();
    if vfio && vfio_pci {
        return Finding::pass(NAME, "vfio and vfio_pci are loaded");
    }
    let missing: Vec<&str> = [("vfio", vfio), ("vfio_pci", vfio_pci)]
        .iter()
        .filter(|(_, loaded)| !loaded)
        .map(|(n, _)| *n)
        .collect();
    let finding = format!(
        "{} not loaded (no /sys/module/{}); {}",
        missing.join(" and "),
        missing.join(", /sys/module/"),
        scope.vfio_users()
    );
    let status = scope.vfio.missing();
    if status == Status::Pass {
        return Finding::pass(NAME, format!("{finding}; no device here uses vfio-pci"));
    }
    let fix = if host.in_pod {
        "on the node: modprobe vfio-pci (a container cannot load kernel modules; make it permanent with \
         `echo vfio-pci > /etc/modules-load.d/vfio-pci.conf`)"
    } else {
        "modprobe vfio-pci (permanent: echo vfio-pci > /etc/modules-load.d/vfio-pci.conf)"
    };
    Finding::new(NAME, status, finding).fix(fix)
}

pub(super) const NOIOMMU_PARAM: &str = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode";
pub(super) const NOIOMMU_CONF: &str = "/etc/modprobe.d/vfio-noiommu.conf";
pub(super) const NOIOMMU_CONF_LINE: &str = "options vfio enable_unsafe_noiommu_mode=1";

/// Where no-IOMMU mode is made permanent: a modprobe.d file with
/// `options vfio enable_unsafe_noiommu_mode=1`, or `vfio.enable_unsafe_noiommu_mode=1`
/// on the kernel command line (vfio built in).
pub(super) fn noiommu_persisted(host: &Host<'_>) -> Option<String> {
    let on = |v: &str| matches!(v, "1" | "Y" | "y");
    if let Some(v) = host.cmdline().get("vfio.enable_unsafe_noiommu_mode")
        && on(v)
    {
        return Some(format!(
            "vfio.enable_unsafe_noiommu_mode={v} on /proc/cmdline"
        ));
    }
    [
        "/etc/modprobe.d",
        "/run/modprobe.d",
        "/usr/lib/modprobe.d",
        "/lib/modprobe.d",
    ]
    .iter()
    .flat_map(|dir| {
        host.list(dir)
            .into_iter()
            .filter(|f| f.ends_with(".conf"))
            .map(move |f| format!("{dir}/{f}"))
    })
    .find(|file| {
        host.read(file).is_some_and(|t| {
            t.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 3
                    && w[0] == "options"
                    && w[1] == "vfio"
                    && w[2..].iter().any(|o| {
                        o.strip_prefix("enable_unsafe_noiommu_mode=")
                            .is_some_and(on)
                    })
            })
        })
    })
}

/// `vfio-noiommu`: without an IOMMU, vfio must run in no-IOMMU mode, and (on a
/// host) be set so in modprobe.d so it survives a reboot.
pub(super) fn check_noiommu(host: &Host<'_>, scope: &Scope) -> Finding {
    const NAME: &str = "vfio-noiommu";
    let param = host.sysfs.noiommu_mode_enabled();
    if scope.iommu.present() {
        let also = if param == Some(true) {
            "; enable_unsafe_noiommu_mode is Y too (used only for devices without an IOMMU group)"
        } else {
            ""
        };
        return Finding::pass(
            NAME,
            format!(
                "the machine has an IOMMU ({}): VFIO type1, no-IOMMU mode not needed{also}",
                scope.iommu.units.join(", ")
            ),
        );
    }
    let no_iommu = "no IOMMU (/sys/class/iommu is empty and no IOMMU group is a real one)";
    let host_fix = format!(
        "echo 1 > {NOIOMMU_PARAM}; echo \"{NOIOMMU_CONF_LINE}\" > {NOIOMMU_CONF}; then rebind the devices (testpmd bind BDF) so they get no-IOMMU groups"
    );
    let fix = if host.in_pod {
        format!(
            "on the node (the modprobe.d file is the host's concern, not the pod's): {host_fix}"
        )
    } else {
        host_fix
    };
    let status = scope.noiommu.missing();
    let users = scope.vfio_users();
    match param {
        Some(true) => {
            let found = format!("{no_iommu}; vfio runs in no-IOMMU mode (enable_unsafe_noiommu_mode=Y)");
            if host.in_pod {
                Finding::pass(
                    NAME,
                    format!("{found}; {NOIOMMU_CONF} that keeps it across reboots is the host's concern (a pod cannot see it)"),
                )
            } else if let Some(file) = noiommu_persisted(host) {
                Finding::pass(NAME, format!("{found}; {file} keeps it across reboots"))
            } else {
                Finding::new(
                    NAME,
                    Status::Warn,
                    format!("{found}, but no /etc/modprobe.d file sets it: it is lost at the next reboot"),
                )
                .fix(format!("echo \"{NOIOMMU_CONF_LINE}\" > {NOIOMMU_CONF}"))
            }
        }
        _ if status == Status::Pass => Finding::pass(
            NAME,
            format!("{no_iommu}, vfio not in no-IOMMU mode; no device here uses vfio-pci"),
        ),
        Some(false) => Finding::new(
            NAME,
            status,
            format!("{no_iommu} and vfio's enable_unsafe_noiommu_mode is N: vfio-pci cannot hand out devices ({users})"),
        )
        .fix(fix),
        None if host.module_loaded("vfio") => Finding::new(
            NAME,
            status,
            format!("{no_iommu} and vfio has no enable_unsafe_noiommu_mode parameter: the kernel is built without CONFIG_VFIO_NOIOMMU ({users})"),
        )
        .fix(
            "a kernel built with CONFIG_VFIO_NOIOMMU=y, or give the VM a virtual IOMMU \
             (QEMU: -device intel-iommu,intremap=on)",
        ),
        None => {
            let load = format!(
                "modprobe vfio enable_unsafe_noiommu_mode=1 && modprobe vfio-pci; echo \"{NOIOMMU_CONF_LINE}\" > {NOIOMMU_CONF}"
            );
            Finding::new(
                NAME,
                status,
                format!("{no_iommu} and vfio is not loaded: it must be loaded in no-IOMMU mode ({users})"),
            )
            .fix(if host.in_pod {
                format!("on the node (the modprobe.d file is the host's concern): {load}")
            } else {
                load
            })
        }
    }
}

pub(super) const EPERM: i32 = 1;
pub(super) const ENOENT: i32 = 2;
pub(super) const EACCES: i32 = 13;
pub(super) const EBUSY: i32 = 16;

/// Open a device node read-write, as the engine will, and close it at once.
pub(super) fn try_open(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
}

/// Status, finding and fix for a node that would not open.
pub(super) fn open_failure(
    shown: &str,
    e: &io::Error,
    noiommu: bool,
    in_pod: bool,
) -> (Status, String, String) {
    let priv_fix = if in_pod {
        "in the pod spec: securityContext: privileged: true (or let the device plugin mount the node)"
    } else {
        "run as root"
    };
    match e.raw_os_error() {
        Some(EBUSY) => (
            Status::Warn,
            format!("{shown} is busy: another process has it open (a running testpmd, a VM?)"),
            format!("find it with `fuser -v {shown}` and stop it"),
        ),
        Some(EPERM) if noiommu => (
            Status::Fail,
            format!("{shown}: permission denied (EPERM): no-IOMMU groups need CAP_SYS_RAWIO"),
            "securityContext: capabilities: add: [\"SYS_RAWIO\"] (or privileged: true); on a host, run as root"
                .to_string(),
        ),
        Some(EPERM | EACCES) => (
            Status::Fail,
            format!("{shown}: permission denied ({e})"),
            priv_fix.to_string(),
        ),
        Some(ENOENT) => (
            Status::Fail,
            format!("{shown} does not exist"),
            String::new(),
        ),
        _ => (
            Status::Fail,
            format!("{shown} cannot be opened read-write: {e}"),
            format!("check what {shown} is (`ls -l {shown}`): it must be the VFIO character device"),
        ),
    }
}

/// `vfio-container`: `/dev/vfio/vfio` is there and opens read-write.
pub(super) fn check_vfio_container(host: &Host<'_>, devs: &[Dev], scope: &Scope) -> Finding {
    const NAME: &str = "vfio-container";
    let abs = devs
        .iter()
        .find_map(|d| d.plugin_container_node.clone())
        .unwrap_or_else(|| PathBuf::from("/dev/vfio/vfio"));
    let shown = abs.display().to_string();
    let nodes: Vec<String> = host
        .list("/dev/vfio")
        .into_iter()
        .filter(|n| n != "vfio")
        .collect();
    let groups = if nodes.is_empty() {
        "no group nodes".to_string()
    } else {
        format!("group nodes {}", nodes.join(", "))
    };
    let status_if_missing = scope.vfio.missing();
    match try_open(&host.path(&abs)) {
        Ok(()) => Finding::pass(NAME, format!("{shown} opens read-write; {groups}")),
        Err(_) if status_if_missing == Status::Pass => Finding::pass(
            NAME,
            format!("{shown} is not usable; no device here uses vfio-pci"),
        ),
        Err(e) if e.raw_os_error() == Some(ENOENT) => {
            let fix = if host.in_pod {
                "the device plugin mounts /dev/vfio/vfio with the devices of a vfio-pci pool: request its \
                 resource in resources.requests and limits; or run the pod privileged"
            } else {
                "modprobe vfio-pci (it creates /dev/vfio/vfio)"
            };
            Finding::new(
                NAME,
                status_if_missing,
                format!("{shown} does not exist ({})", scope.vfio_users()),
            )
            .fix(fix)
        }
        Err(e) => {
            let (st, finding, fix) = open_failure(&shown, &e, false, host.in_pod);
            let st = if st == Status::Fail {
                status_if_missing
            } else {
                st
            };
            Finding::new(NAME, st, finding).fix(fix)
        }
    }
}

/// Other drivers a VFIO group's members may have without making it unusable.
pub(super) const GROUP_OK_DRIVERS: &[&str] = &[VFIO_PCI_DRIVER, "pci-stub", "pcieport"];

/// `vfio-group BDF`: the device's group node is there, opens read-write, and the
/// group is viable (every member on vfio-pci or no driver).
pub(super) fn check_vfio_group(host: &Host<'_>, dev: &Dev, d: &PciDevice) -> Finding {
    let name = format!("vfio-group {}", dev.addr);
    let Some(group) = d.iommu_group else {
        return Finding::new(
            name,
            Status::Fail,
            "bound to vfio-pci but without an IOMMU group: no /dev/vfio node can exist for it",
        )
        .fix(format!(
            "turn on no-IOMMU mode and rebind: echo 1 > {NOIOMMU_PARAM}; testpmd bind {}",
            dev.addr
        ));
    };
    let noiommu = d.is_noiommu();
    let kind = if noiommu { "no-IOMMU group" } else { "group" };
    let mut candidates: Vec<PathBuf> = dev.plugin_group_node.iter().cloned().collect();
    candidates.push(PathBuf::from(format!("/dev/vfio/noiommu-{group}")));
    candidates.push(PathBuf::from(format!("/dev/vfio/{group}")));
    let Some(node) = candidates.iter().find(|c| host.path(c).exists()).cloned() else {
        let tried: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
        let fix = if host.in_pod {
            "the device plugin mounts the group node of each device it gives the pod: check \
             PCIDEVICE_*_INFO (vfio dev-mount) names this device and the pool selects drivers [\"vfio-pci\"]"
                .to_string()
        } else {
            format!(
                "rebind the device so vfio-pci creates the node: testpmd bind {}",
                dev.addr
            )
        };
        return Finding::new(
            name,
            Status::Fail,
            format!("{kind} {group}: no node ({} missing)", tried.join(", ")),
        )
        .fix(fix);
    };
    let shown = node.display().to_string();
    if let Err(e) = try_open(&host.path(&node)) {
        let (st, finding, fix) = open_failure(&shown, &e, noiommu, host.in_pod);
        return Finding::new(name, st, format!("{kind} {group}: {finding}")).fix(fix);
    }
    let blockers: Vec<String> = host
        .sysfs
        .iommu_group_members(group)
        .into_iter()
        .filter(|(a, drv)| {
            *a != dev.addr
                && drv
                    .as_deref()
                    .is_some_and(|x| !GROUP_OK_DRIVERS.contains(&x))
        })
        .map(|(a, drv)| format!("{a} ({})", drv.unwrap_or_default()))
        .collect();
    if !blockers.is_empty() {
        return Finding::new(
            name,
            Status::Fail,
            format!(
                "{kind} {group} is not viable: its other members {} are bound to kernel drivers",
                blockers.join(", ")
            ),
        )
        .fix(format!(
            "bind every member of the group to vfio-pci (testpmd bind BDF for each of {}), or move the device to its own group",
            blockers.join(", ")
        ));
    }
    Finding::pass(name, format!("{kind} {group}: {shown} opens read-write"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testing::*;
    use crate::doctor::{Env, caps::CAP_IPC_LOCK};

    #[test]
    fn vfio_modules() {
        let t = Tree::good();
        expect(&t.vf(), "vfio-modules", Status::Pass, "");
        t.rm("sys/module/vfio_pci")
            .rm("sys/bus/pci/drivers/vfio-pci");
        let f = expect(&t.vf(), "vfio-modules", Status::Fail, "modprobe vfio-pci");
        assert!(
            f.finding.contains("vfio_pci not loaded")
                && f.finding.contains("needed by 0000:00:07.0"),
            "{f:?}"
        );
        expect(
            &t.checks(&Env::new(), &[]),
            "vfio-modules",
            Status::Warn,
            "modprobe vfio-pci",
        );
        expect(
            &t.checks(&pod(), &[VF]),
            "vfio-modules",
            Status::Fail,
            "on the node: modprobe vfio-pci",
        );
    }

    #[test]
    fn noiommu_mode_and_its_modprobe_file() {
        let t = Tree::good();
        expect_saying(
            &t.vf(),
            "vfio-noiommu",
            Status::Pass,
            "",
            "/etc/modprobe.d/vfio-noiommu.conf keeps it",
        );
        // Enabled now, not persistent: a host warning.
        t.rm(NOIOMMU_CONF);
        expect(
            &t.vf(),
            "vfio-noiommu",
            Status::Warn,
            "echo \"options vfio enable_unsafe_noiommu_mode=1\" > /etc/modprobe.d/vfio-noiommu.conf",
        );
        // Also permanent: another modprobe.d directory, or the kernel command line.
        t.write(
            "usr/lib/modprobe.d/dpdk.conf",
            "options vfio enable_unsafe_noiommu_mode=Y\n",
        );
        expect_saying(
            &t.vf(),
            "vfio-noiommu",
            Status::Pass,
            "",
            "/usr/lib/modprobe.d/dpdk.conf keeps it",
        );
        t.rm("usr/lib/modprobe.d/dpdk.conf")
            .write("proc/cmdline", "ro vfio.enable_unsafe_noiommu_mode=1\n");
        expect_saying(
            &t.vf(),
            "vfio-noiommu",
            Status::Pass,
            "",
            "vfio.enable_unsafe_noiommu_mode=1 on /proc/cmdline",
        );
        t.write("proc/cmdline", "ro\n");
        // In a pod the file is the host's concern.
        expect_saying(
            &t.checks(&pod(), &[VF]),
            "vfio-noiommu",
            Status::Pass,
            "",
            "host's concern",
        );
        // Off: devices cannot be used.
        t.write(NOIOMMU_PARAM, "N\n");
        let f = expect(
            &t.vf(),
            "vfio-noiommu",
            Status::Fail,
            "echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode",
        );
        assert!(
            f.fix.as_deref().unwrap().contains(NOIOMMU_CONF_LINE),
            "{f:?}"
        );
        let f = expect(
            &t.checks(&pod(), &[VF]),
            "vfio-noiommu",
            Status::Fail,
            "the modprobe.d file is the host's concern",
        );
        assert!(f.fix.unwrap().starts_with("on the node"));
        expect(
            &t.checks(&Env::new(), &[]),
            "vfio-noiommu",
            Status::Warn,
            "enable_unsafe_noiommu_mode",
        );
        // A kernel without CONFIG_VFIO_NOIOMMU.
        t.rm("sys/module/vfio/parameters");
        t.mkdir("sys/module/vfio");
        expect(
            &t.vf(),
            "vfio-noiommu",
            Status::Fail,
            "CONFIG_VFIO_NOIOMMU=y",
        );
        // vfio not loaded at all.
        t.rm("sys/module/vfio");
        expect(
            &t.vf(),
            "vfio-noiommu",
            Status::Fail,
            "modprobe vfio enable_unsafe_noiommu_mode=1",
        );
    }

    #[test]
    fn an_iommu_makes_noiommu_mode_irrelevant() {
        let t = Tree::good();
        t.write(NOIOMMU_PARAM, "N\n").mkdir("sys/class/iommu/dmar0");
        t.device(&FakeDev {
            group: Some((12, false)),
            ..FakeDev::default()
        })
        .rm("dev/vfio/noiommu-0")
        .write("dev/vfio/12", "");
        let fs = t.vf();
        expect_saying(&fs, "vfio-noiommu", Status::Pass, "", "IOMMU (dmar0)");
        expect(&fs, "vfio-group 0000:00:07.0", Status::Pass, "");
        // No-IOMMU capabilities are not needed, so not asked for.
        t.status(1 << CAP_IPC_LOCK, "2-4");
        let fs = t.vf();
        expect(&fs, "capability SYS_RAWIO", Status::Pass, "");
        expect(&fs, "capability SYS_ADMIN", Status::Pass, "");
        expect(&fs, "privileged", Status::Pass, "");
        // Real IOMMU groups count as an IOMMU even without /sys/class/iommu.
        t.rm("sys/class/iommu/dmar0");
        expect(&t.vf(), "vfio-noiommu", Status::Pass, "");
    }

    #[test]
    fn vfio_container_node() {
        let t = Tree::good();
        expect_saying(
            &t.vf(),
            "vfio-container",
            Status::Pass,
            "",
            "/dev/vfio/vfio opens read-write; group nodes noiommu-0",
        );
        t.rm("dev/vfio/vfio");
        expect(&t.vf(), "vfio-container", Status::Fail, "modprobe vfio-pci");
        expect(
            &t.checks(&pod(), &[VF]),
            "vfio-container",
            Status::Fail,
            "device plugin mounts /dev/vfio/vfio",
        );
        expect(
            &t.checks(&Env::new(), &[]),
            "vfio-container",
            Status::Warn,
            "modprobe vfio-pci",
        );
        // Something that is there but does not open read-write.
        t.mkdir("dev/vfio/vfio");
        expect_saying(
            &t.vf(),
            "vfio-container",
            Status::Fail,
            "ls -l /dev/vfio/vfio",
            "cannot be opened read-write",
        );
    }

    #[test]
    fn vfio_group_node() {
        let t = Tree::good();
        let name = "vfio-group 0000:00:07.0";
        expect(&t.vf(), name, Status::Pass, "");
        t.rm("dev/vfio/noiommu-0");
        expect_saying(
            &t.vf(),
            name,
            Status::Fail,
            "testpmd bind 0000:00:07.0",
            "/dev/vfio/noiommu-0, /dev/vfio/0 missing",
        );
        expect(
            &t.checks(&pod(), &[VF]),
            name,
            Status::Fail,
            "PCIDEVICE_*_INFO",
        );
        // In a pod the plugin mounts noiommu-0 as /dev/vfio/0 and says so.
        t.write("dev/vfio/0", "");
        let e = env(&[
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK", VF),
            (
                "PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK_INFO",
                r#"{"0000:00:07.0":{"vfio":{"dev-mount":"/dev/vfio/0","mount":"/dev/vfio/vfio"}}}"#,
            ),
        ]);
        expect_saying(
            &t.checks(&e, &[]),
            name,
            Status::Pass,
            "",
            "no-IOMMU group 0: /dev/vfio/0 opens",
        );
        // A node that will not open.
        t.rm("dev/vfio/0").mkdir("dev/vfio/0");
        expect(&t.checks(&e, &[]), name, Status::Fail, "ls -l /dev/vfio/0");
    }

    #[test]
    fn vfio_group_viability_and_missing_group() {
        let t = Tree::good();
        let name = "vfio-group 0000:00:07.0";
        t.device(&FakeDev {
            bdf: "0000:00:07.1",
            driver: Some("iavf"),
            ..FakeDev::default()
        });
        let f = expect(&t.vf(), name, Status::Fail, "testpmd bind BDF");
        assert!(
            f.finding.contains("not viable") && f.finding.contains("0000:00:07.1 (iavf)"),
            "{f:?}"
        );
        let t = Tree::good();
        t.device(&FakeDev {
            group: None,
            ..FakeDev::default()
        });
        expect(
            &t.vf(),
            name,
            Status::Fail,
            "enable_unsafe_noiommu_mode; testpmd bind 0000:00:07.0",
        );
    }

    #[test]
    fn open_errors_say_what_to_do() {
        let err = |n| io::Error::from_raw_os_error(n);
        let (st, f, fix) = open_failure("/dev/vfio/0", &err(EBUSY), true, true);
        assert_eq!(st, Status::Warn);
        assert!(
            f.contains("busy") && fix.contains("fuser -v /dev/vfio/0"),
            "{f} {fix}"
        );
        let (st, f, fix) = open_failure("/dev/vfio/0", &err(EPERM), true, true);
        assert_eq!(st, Status::Fail);
        assert!(
            f.contains("CAP_SYS_RAWIO") && fix.contains(r#"capabilities: add: ["SYS_RAWIO"]"#),
            "{f} {fix}"
        );
        let (st, f, fix) = open_failure("/dev/vfio/12", &err(EACCES), false, true);
        assert_eq!(st, Status::Fail);
        assert!(
            f.contains("permission denied") && fix.contains("privileged: true"),
            "{f} {fix}"
        );
        let (_, _, fix) = open_failure("/dev/vfio/12", &err(EACCES), false, false);
        assert_eq!(fix, "run as root");
    }
}
