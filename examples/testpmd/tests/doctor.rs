//! `testpmd doctor` end to end: the binary on fake /proc, /sys, /dev and /etc trees
//! (`--root`, `NICPOLL_ROOT`), its text, brief and JSON output, its exit status,
//! and the pod entrypoint's use of `doctor --brief`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

const VF: &str = "0000:00:07.0";

/// A fake machine under a temporary root, removed on drop.
struct Tree {
    dir: PathBuf,
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Tree {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> &Tree {
        let p = self.p(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
        self
    }

    fn mkdir(&self, rel: &str) -> &Tree {
        fs::create_dir_all(self.p(rel)).unwrap();
        self
    }

    fn link(&self, target: &str, rel: &str) -> &Tree {
        symlink(self.p(target), self.p(rel)).unwrap();
        self
    }

    fn root(&self) -> &Path {
        &self.dir
    }

    /// A VM without an IOMMU, set up right: vfio in no-IOMMU mode, an Intel VF
    /// (0000:00:07.0) on vfio-pci with its no-IOMMU group node, 1 GiB default
    /// hugepages mounted, privileged (every capability, no seccomp filter, the
    /// machine's disk in /dev), CPUs 2-4 of 0-7 with 3-7 isolated.
    fn good() -> Tree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nicpoll-doctor-it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let t = Tree { dir };
        let dev = format!("sys/bus/pci/devices/{VF}");
        t.write(
            "proc/self/status",
            "CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nSeccomp:\t0\nCpus_allowed_list:\t2-4\n",
        )
        .write("proc/1/status", "CapBnd:\t000001ffffffffff\n")
        .write("sys/dev/block/253:0/uevent", "DEVNAME=vda\n")
        .write("dev/vda", "")
        .write("proc/sys/kernel/cap_last_cap", "40\n")
        .write(
            "proc/cmdline",
            "ro default_hugepagesz=1G hugepagesz=1G hugepages=8 isolcpus=3-7 nohz_full=3-7 rcu_nocbs=3-7\n",
        )
        .write(
            "proc/meminfo",
            "HugePages_Total: 8\nHugePages_Free: 8\nHugepagesize: 1048576 kB\n",
        )
        .write(
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "8\n",
        )
        .write(
            "sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages",
            "8\n",
        )
        .write(
            "proc/mounts",
            "hugetlbfs /dev/hugepages hugetlbfs rw,pagesize=1024M 0 0\n",
        )
        .mkdir("dev/hugepages")
        .write("sys/devices/system/cpu/online", "0-7\n")
        .write("sys/devices/system/node/node0/cpulist", "0-7\n")
        .write("sys/module/vfio/parameters/enable_unsafe_noiommu_mode", "Y\n")
        .mkdir("sys/module/vfio_pci")
        .write(
            "etc/modprobe.d/vfio-noiommu.conf",
            "options vfio enable_unsafe_noiommu_mode=1\n",
        )
        .mkdir("sys/class/iommu")
        .write("dev/vfio/vfio", "")
        .write("dev/vfio/noiommu-0", "")
        .write(&format!("{dev}/vendor"), "0x8086\n")
        .write(&format!("{dev}/device"), "0x154c\n")
        .write(&format!("{dev}/class"), "0x020000\n")
        .write(&format!("{dev}/numa_node"), "-1\n")
        .mkdir("sys/bus/pci/drivers/vfio-pci")
        .link("sys/bus/pci/drivers/vfio-pci", &format!("{dev}/driver"))
        .write("sys/kernel/iommu_groups/0/name", "vfio-noiommu\n")
        .mkdir("sys/kernel/iommu_groups/0/devices")
        .link(&dev, &format!("sys/kernel/iommu_groups/0/devices/{VF}"))
        .link("sys/kernel/iommu_groups/0", &format!("{dev}/iommu_group"));
        t
    }
}

/// testpmd doctor with a clean environment plus `env`.
fn doctor(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testpmd"))
        .arg("doctor")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("testpmd runs")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn root_arg(t: &Tree) -> String {
    t.root().display().to_string()
}

#[test]
fn a_good_machine_exits_0_with_one_line_per_check() {
    let t = Tree::good();
    let out = doctor(&["--root", &root_arg(&t), "-a", VF], &[]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    let checks: Vec<&str> = s
        .lines()
        .filter(|l| !l.starts_with("      fix: ") && !l.starts_with("doctor: "))
        .collect();
    for l in &checks {
        let (status, rest) = l.split_at(6);
        assert!(
            ["PASS  ", "WARN  ", "FAIL  "].contains(&status),
            "line {l:?}"
        );
        assert!(rest.contains(": "), "line {l:?}");
    }
    assert_eq!(checks.len(), 18, "{s}");
    assert!(
        s.contains("PASS  vfio-group 0000:00:07.0: no-IOMMU group 0: /dev/vfio/noiommu-0 opens read-write\n"),
        "{s}"
    );
    // The one thing a VM cannot check: the VF's trust and spoof checking.
    assert!(s.contains("WARN  vf-trust 0000:00:07.0: "), "{s}");
    assert!(
        s.contains("      fix: on the hypervisor: ip link set PF vf N spoofchk off trust on"),
        "{s}"
    );
    assert!(
        s.ends_with("doctor: 18 checks, 17 PASS, 1 WARN, 0 FAIL\n"),
        "{s}"
    );
    assert!(
        !s.contains(&root_arg(&t)),
        "paths are shown as on the machine: {s}"
    );
}

#[test]
fn a_failure_exits_1_and_brief_shows_only_problems() {
    let t = Tree::good();
    t.write(
        "sys/module/vfio/parameters/enable_unsafe_noiommu_mode",
        "N\n",
    );
    let out = doctor(&["--root", &root_arg(&t), "-a", VF, "--brief"], &[]);
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(!s.contains("PASS  "), "{s}");
    assert!(s.contains("FAIL  vfio-noiommu: "), "{s}");
    assert!(
        s.contains("      fix: echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode; echo \"options vfio enable_unsafe_noiommu_mode=1\" > /etc/modprobe.d/vfio-noiommu.conf"),
        "{s}"
    );
    let last = s.lines().last().unwrap();
    assert_eq!(last, "doctor: 18 checks, 16 PASS, 1 WARN, 1 FAIL");
}

#[test]
fn json_is_an_array_of_check_status_finding_fix() {
    let t = Tree::good();
    fs::remove_file(t.p("dev/vfio/noiommu-0")).unwrap();
    let out = doctor(&["--json", "-a", VF], &[("NICPOLL_ROOT", &root_arg(&t))]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let arr = v.as_array().expect("an array");
    assert_eq!(arr.len(), 18);
    for item in arr {
        let obj = item.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["check", "finding", "fix", "status"], "{item}");
        assert!(obj["check"].is_string() && obj["finding"].is_string());
        assert!(obj["fix"].is_string() || obj["fix"].is_null(), "{item}");
        assert!(["PASS", "WARN", "FAIL"].contains(&obj["status"].as_str().unwrap()));
    }
    let g = arr
        .iter()
        .find(|i| i["check"] == "vfio-group 0000:00:07.0")
        .unwrap();
    assert_eq!(g["status"], "FAIL");
    assert!(
        g["fix"]
            .as_str()
            .unwrap()
            .contains("testpmd bind 0000:00:07.0"),
        "{g}"
    );
    // --brief --json: only the problems.
    let out = doctor(
        &["--json", "--brief", "--root", &root_arg(&t), "-a", VF],
        &[],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["FAIL", "WARN"]);
}

#[test]
fn device_plugin_variables_name_the_devices() {
    let t = Tree::good();
    // A device the plugin gives that is on the wrong driver.
    fs::remove_file(t.p(&format!("sys/bus/pci/devices/{VF}/driver"))).unwrap();
    t.mkdir("sys/bus/pci/drivers/iavf").link(
        "sys/bus/pci/drivers/iavf",
        &format!("sys/bus/pci/devices/{VF}/driver"),
    );
    let out = doctor(
        &["--root", &root_arg(&t)],
        &[
            ("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK", VF),
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ],
    );
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("PASS  devices: 1 PCI device(s): 0000:00:07.0 (PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK)"),
        "{s}"
    );
    assert!(
        s.contains("FAIL  driver 0000:00:07.0: Intel 8086:154c is bound to iavf"),
        "{s}"
    );
    assert!(s.contains("      fix: testpmd bind 0000:00:07.0"), "{s}");
    // A malformed variable is a finding, not a crash.
    let out = doctor(
        &["--root", &root_arg(&t)],
        &[("PCIDEVICE_X", "0000:00:20.0")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("FAIL  devices: the device plugin's environment is malformed"));
}

#[test]
fn usage_errors_exit_2() {
    let t = Tree::good();
    let root = root_arg(&t);
    for (args, says) in [
        (vec!["--root", &root, "-a", "eth0"], "-a \"eth0\""),
        (vec!["--root", &root, "--frobnicate"], "unknown option"),
        (vec!["--root", "/no/such/dir"], "not a directory"),
        (vec!["--root"], "--root needs a value"),
    ] {
        let out = doctor(&args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = doctor(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).contains("--brief"));
}

/// The pod entrypoint runs `testpmd doctor --brief` first: with NICPOLL_DOCTOR=strict
/// a FAIL stops the container (exit 1); with warn it starts anyway.
#[test]
fn the_entrypoint_uses_doctor_brief() {
    let t = Tree::good();
    fs::remove_file(t.p("dev/vfio/vfio")).unwrap();
    let entry = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../pod/entrypoint.sh");
    let run = |mode: &str| {
        Command::new("sh")
            .arg(&entry)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TESTPMD", env!("CARGO_BIN_EXE_testpmd"))
            .env("NICPOLL_ROOT", t.root())
            .env("NICPOLL_DOCTOR", mode)
            .env("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK", VF)
            // --no-pci: the run after doctor uses the null ports only (in
            // entrypoint mode --vdev ports would join the fake VF).
            .env(
                "NICPOLL_EAL_ARGS",
                "--no-pci --no-huge --vdev=net_null0 --vdev=net_null1",
            )
            .env("NICPOLL_APP_ARGS", "--run-time=1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("strict");
    let s = text(&out);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert!(
        s.contains("FAIL  vfio-container: /dev/vfio/vfio does not exist"),
        "{s}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not starting"),
        "{out:?}"
    );
    let out = run("warn");
    let s = text(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains("FAIL  vfio-container"), "{s}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("starting anyway"),
        "{out:?}"
    );
}
