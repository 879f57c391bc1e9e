//! `testpmd bind` on fake sysfs trees (a temporary `--root`): usage errors exit
//! 2, failures exit 1 with the fix, and the sysfs writes happen as driverctl
//! does them. The fake kernel does not rebind devices by itself, so a real bind
//! ends in "vfio-pci did not take the device" here; the QEMU guest test binds
//! for real.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BDF: &str = "0000:00:03.0";

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/kernel/iommu_groups/5/devices",
            "proc/net",
        ] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        fs::write(dir.path().join("sys/bus/pci/drivers_probe"), "").unwrap();
        fs::write(
            dir.path().join("proc/net/route"),
            "Iface\tDestination\tGateway\n",
        )
        .unwrap();
        Tree { dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn driver(&self, name: &str) -> PathBuf {
        let d = self.p("sys/bus/pci/drivers").join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("unbind"), "").unwrap();
        d
    }

    /// An e1000e-like device bound to `driver`, with interface `ens3` if asked.
    fn device(&self, driver: Option<&str>, netdev: bool) -> PathBuf {
        let dir = self.p("sys/bus/pci/devices").join(BDF);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("vendor"), "0x8086\n").unwrap();
        fs::write(dir.join("device"), "0x10d3\n").unwrap();
        fs::write(dir.join("class"), "0x020000\n").unwrap();
        fs::write(dir.join("driver_override"), "(null)\n").unwrap();
        if let Some(d) = driver {
            symlink(self.driver(d), dir.join("driver")).unwrap();
        }
        symlink(self.p("sys/kernel/iommu_groups/5"), dir.join("iommu_group")).unwrap();
        if netdev {
            fs::create_dir_all(dir.join("net/ens3")).unwrap();
            let cls = self.p("sys/class/net/ens3");
            fs::create_dir_all(&cls).unwrap();
            fs::write(cls.join("flags"), "0x1003\n").unwrap();
            fs::write(
                self.p("proc/net/route"),
                "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n\
                 ens3\t00000000\t0202000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
            )
            .unwrap();
        }
        dir
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.p(rel)).unwrap()
    }
}

fn bind(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testpmd"))
        .arg("bind")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn usage_errors_exit_2() {
    let t = Tree::new();
    for (args, needle) in [
        (&[][..], "BDF"),
        (&["eth0"][..], "not a PCI address"),
        (&["--frobnicate", BDF][..], "--frobnicate"),
        (&["--force", "--unbind", BDF][..], "cannot be used with"),
    ] {
        let o = bind(t.dir.path(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_testpmd"))
        .args(["bind", "--help"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("--force") && text(&o).contains("--unbind"));
}

#[test]
fn a_missing_device_or_driver_exits_1_with_the_fix() {
    let t = Tree::new();
    let o = bind(t.dir.path(), &[BDF]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("no such device") && text(&o).contains("lspci -D"),
        "{}",
        text(&o)
    );
    t.device(Some("e1000e"), false);
    let o = bind(t.dir.path(), &[BDF]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("modprobe vfio-pci"), "{}", text(&o));
}

#[test]
fn an_interface_with_routes_is_refused_unless_forced() {
    let t = Tree::new();
    t.driver("vfio-pci");
    t.device(Some("e1000e"), true);
    let o = bind(t.dir.path(), &["00:03.0"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = text(&o);
    assert!(
        s.contains("ens3 (1 routes)")
            && s.contains("ip link set ens3 down")
            && s.contains("--force"),
        "{s}"
    );
    assert_eq!(
        t.read("sys/bus/pci/devices/0000:00:03.0/driver_override"),
        "(null)\n"
    );
    assert_eq!(t.read("sys/bus/pci/drivers_probe"), "");

    // Forced: override, unbind, probe, in driverctl's order. The fake kernel
    // does not rebind, which the final check reports.
    let o = bind(t.dir.path(), &["--force", BDF]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("did not take the device (driver now: e1000e)"),
        "{}",
        text(&o)
    );
    assert_eq!(
        t.read("sys/bus/pci/devices/0000:00:03.0/driver_override"),
        "vfio-pci"
    );
    assert_eq!(t.read("sys/bus/pci/drivers/e1000e/unbind"), BDF);
    assert_eq!(t.read("sys/bus/pci/drivers_probe"), BDF);
}

#[test]
fn a_device_already_on_vfio_pci_is_left_alone() {
    let t = Tree::new();
    t.device(Some("vfio-pci"), false);
    let o = bind(t.dir.path(), &[BDF]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("0000:00:03.0: already bound to vfio-pci, IOMMU group 5"),
        "{}",
        text(&o)
    );
    assert_eq!(t.read("sys/bus/pci/drivers_probe"), "");
}

#[test]
fn unbind_clears_the_override_and_reprobes() {
    let t = Tree::new();
    let dev = t.device(Some("vfio-pci"), false);
    fs::write(dev.join("driver_override"), "vfio-pci\n").unwrap();
    let o = bind(t.dir.path(), &["--unbind", BDF]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The fake kernel leaves the link where it was.
    assert!(
        text(&o).contains("unbound from vfio-pci, now bound to vfio-pci"),
        "{}",
        text(&o)
    );
    assert_eq!(
        t.read("sys/bus/pci/devices/0000:00:03.0/driver_override"),
        "\n"
    );
    assert_eq!(t.read("sys/bus/pci/drivers/vfio-pci/unbind"), BDF);
    assert_eq!(t.read("sys/bus/pci/drivers_probe"), BDF);
}

#[test]
fn pci_devices_that_cannot_be_opened_are_refused_with_the_reason() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_testpmd"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&[
        "-l",
        "0,1",
        "-a",
        "0000:7f:1f.7",
        "-a",
        "7f:1f.7",
        "--",
        "--run-time=1",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("given twice"), "{}", text(&o));
    // No VFIO here (or no such device): a runtime failure naming what is missing.
    // Nothing is bound or opened: the address does not exist.
    let o = run(&[
        "--no-huge",
        "-l",
        "0,1",
        "-a",
        "0000:7f:1f.7",
        "--",
        "--run-time=1",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let s = text(&o);
    assert!(
        s.contains("/dev/vfio/vfio") || s.contains("0000:7f:1f.7"),
        "{s}"
    );
}
