//! `testpmd doctor [--root DIR] [-a BDF]... [--json] [--brief]`: check every
//! prerequisite of a hardware run (VFIO, no-IOMMU, device drivers, hugepages,
//! capabilities, CPU pinning and isolation, NUMA locality, VF settings) and say,
//! for each, PASS / WARN / FAIL with the command that fixes it.
//!
//! Every reader takes a filesystem root (`--root DIR`, else `$NICPOLL_ROOT`, else
//! `/`) and the environment is passed in, so tests run the very same code on a fake
//! `/proc` + `/sys` + `/dev` tree with a fake `PCIDEVICE_*` map. Paths in findings are
//! shown as they are on the machine (`/dev/vfio/vfio`), not inside the root.
//!
//! Devices come from `-a BDF` and from the SR-IOV device plugin's `PCIDEVICE_*`
//! variables. Without any device, the checks that depend on them say what a device
//! would need (WARN) instead of failing.
//!
//! [`start_checks`] is the short form for the start of a run: only the checks the
//! run's configuration makes relevant.
//!
//! This file runs the checks and reports them; each group of checks has its
//! file (`vfio`, `devices`, `hugepages`, `caps`, `privileged`, `cpu`, `numa`, `vf`), with
//! its tests, over `host` (the machine below the root) and `scope` (what the
//! run needs); `args` is the command line, `testing` the fake machine the
//! tests build.
#![deny(unsafe_code)]

mod args;
mod caps;
mod cpu;
mod devices;
mod host;
mod hugepages;
mod numa;
mod privileged;
mod scope;
#[cfg(test)]
mod testing;
mod vf;
mod vfio;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nicpoll::pci::PciAddress;
use serde::Serialize;

use crate::device_plugin::DevicePluginEnv;

use args::{USAGE, parse_args};
use caps::capability_checks;
use cpu::cpu_checks;
use devices::{check_driver, devices_finding, resolve_devices};
use host::Host;
use hugepages::hugepage_checks;
use numa::check_numa;
use privileged::check_privileged;
use scope::{Need, Scope};
use vf::check_vf_settings;
use vfio::vfio_checks;

/// The environment the checks see (`PCIDEVICE_*`, `KUBERNETES_SERVICE_HOST`, ...).
pub type Env = BTreeMap<String, String>;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Verified and fine.
    Pass,
    /// Not verified, or works but not as it should (slow, fragile, unschedulable).
    Warn,
    /// A run that needs this will fail.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check, with its object where it has one (`driver 0000:00:07.0`).
    pub check: String,
    /// PASS, WARN or FAIL.
    pub status: Status,
    /// What was found.
    pub finding: String,
    /// The command or setting that fixes it (none for most passes).
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: impl Into<String>, status: Status, finding: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            status,
            finding: finding.into(),
            fix: None,
        }
    }

    fn pass(check: impl Into<String>, finding: impl Into<String>) -> Finding {
        Finding::new(check, Status::Pass, finding)
    }

    /// Set the fix; an empty one is none.
    fn fix(mut self, fix: impl Into<String>) -> Finding {
        let fix = fix.into();
        self.fix = (!fix.is_empty()).then_some(fix);
        self
    }
}

/// What a run will use, for [`start_checks`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartConfig {
    /// The PCI devices the run drives (its `-a` list, or in entrypoint mode the
    /// device plugin's devices). Empty: no device, VFIO or device checks.
    pub devices: Vec<PciAddress>,
    /// `--no-huge`: no hugepage checks.
    pub no_huge: bool,
    /// `--huge-dir`: the hugetlbfs directory the run will use, if given.
    pub huge_dir: Option<PathBuf>,
}

/// The checks relevant to a run about to start: the hugepage checks unless
/// `no_huge`; each device's driver, and the VFIO checks when a device uses
/// vfio-pci; the capabilities those need (only the needed ones). Advisory checks
/// (CPU set and isolation, NUMA, VF settings, privileged) are left to
/// `testpmd doctor`. `env` supplies the device plugin's `_INFO` mounts and tells
/// a pod from a host; `root` is `/` in production.
pub fn start_checks(root: &Path, env: &Env, cfg: &StartConfig) -> Vec<Finding> {
    let host = Host::new(root, env);
    let devs = resolve_devices(&host, cfg.devices.iter().map(|a| (*a, "-a".to_string())));
    let scope = Scope::new(&host, &devs, !cfg.no_huge, false);
    let mut out = Vec::new();
    if !devs.is_empty() {
        out.extend(devs.iter().map(|d| check_driver(&host, d)));
        if scope.vfio == Need::Yes {
            out.extend(vfio_checks(&host, &devs, &scope));
        }
    }
    if scope.hugepages {
        out.extend(hugepage_checks(&host, cfg.huge_dir.as_deref()));
    }
    out.extend(
        capability_checks(&host, &scope)
            .into_iter()
            .filter(|(need, _)| *need == Need::Yes)
            .map(|(_, f)| f),
    );
    out
}

/// Run `testpmd doctor ARGS`.
pub fn run(args: &[String]) -> ExitCode {
    let env: Env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let code = run_with(args, &env, &mut io::stdout().lock(), &mut io::stderr());
    ExitCode::from(code)
}

fn run_with(args: &[String], env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(err, "testpmd doctor: {e}\n(see `testpmd doctor --help`)");
            return 2;
        }
    };
    if opts.help {
        let _ = write!(out, "{USAGE}");
        return 0;
    }
    let root = opts
        .root
        .clone()
        .or_else(|| {
            env.get("NICPOLL_ROOT")
                .filter(|r| !r.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/"));
    if !root.is_dir() {
        let _ = writeln!(
            err,
            "testpmd doctor: root {}: not a directory (give --root DIR or NICPOLL_ROOT)",
            root.display()
        );
        return 2;
    }
    let findings = doctor_checks(&root, env, &opts.allow);
    let text = if opts.json {
        let shown: Vec<&Finding> = findings
            .iter()
            .filter(|f| !opts.brief || f.status != Status::Pass)
            .collect();
        let mut s = serde_json::to_string_pretty(&shown).expect("findings serialize");
        s.push('\n');
        s
    } else {
        render_text(&findings, opts.brief)
    };
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    exit_code(&findings)
}

/// 0 when no finding FAILs, else 1.
fn exit_code(findings: &[Finding]) -> u8 {
    u8::from(findings.iter().any(|f| f.status == Status::Fail))
}

/// The text form: `STATUS  check: finding` and `      fix: command` lines (only
/// WARN and FAIL ones when `brief`), then a summary line.
pub fn render_text(findings: &[Finding], brief: bool) -> String {
    let mut s = String::new();
    for f in findings {
        if brief && f.status == Status::Pass {
            continue;
        }
        s.push_str(&format!(
            "{}  {}: {}\n",
            f.status.label(),
            f.check,
            f.finding
        ));
        if let Some(fix) = &f.fix {
            s.push_str(&format!("      fix: {fix}\n"));
        }
    }
    s.push_str(&summary(findings));
    s.push('\n');
    s
}

/// `doctor: 14 checks, 11 PASS, 2 WARN, 1 FAIL`.
pub fn summary(findings: &[Finding]) -> String {
    let n = |st: Status| findings.iter().filter(|f| f.status == st).count();
    format!(
        "doctor: {} checks, {} PASS, {} WARN, {} FAIL",
        findings.len(),
        n(Status::Pass),
        n(Status::Warn),
        n(Status::Fail)
    )
}

/// Every check, for `testpmd doctor`.
fn doctor_checks(root: &Path, env: &Env, allow: &[PciAddress]) -> Vec<Finding> {
    let host = Host::new(root, env);
    let mut out = Vec::new();
    let (plugin, env_finding) = match DevicePluginEnv::from_vars(env.iter()) {
        Ok(p) => (p, None),
        Err(e) => (
            DevicePluginEnv::default(),
            Some(
                Finding::new(
                    "devices",
                    Status::Fail,
                    format!("the device plugin's environment is malformed: {e}"),
                )
                .fix(
                    "fix the SR-IOV device plugin's resource configuration (its config.json) \
                         and recreate the pod",
                ),
            ),
        ),
    };
    let mut wanted: Vec<(PciAddress, String)> = allow.iter().map(|a| (*a, "-a".into())).collect();
    for r in &plugin.resources {
        wanted.extend(r.devices.iter().map(|d| (d.address, r.var.clone())));
    }
    let devs = resolve_devices(&host, wanted);
    out.push(env_finding.unwrap_or_else(|| devices_finding(&devs, &plugin)));
    let scope = Scope::new(&host, &devs, true, true);
    out.extend(devs.iter().map(|d| check_driver(&host, d)));
    out.extend(vfio_checks(&host, &devs, &scope));
    out.extend(hugepage_checks(&host, None));
    out.extend(capability_checks(&host, &scope).into_iter().map(|(_, f)| f));
    out.push(check_privileged(&host, &scope));
    out.extend(cpu_checks(&host));
    out.extend(devs.iter().filter_map(|d| check_numa(&host, d)));
    out.extend(devs.iter().filter_map(|d| check_vf_settings(&host, d)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testing::*;

    #[test]
    fn a_well_set_up_vm_passes_everything_checkable() {
        let t = Tree::good();
        let fs = t.vf();
        for f in &fs {
            if f.check.starts_with("vf-trust") {
                assert_eq!(f.status, Status::Warn, "{f:?}");
            } else {
                assert_eq!(f.status, Status::Pass, "{f:?}");
            }
        }
        let names: Vec<&str> = fs.iter().map(|f| f.check.as_str()).collect();
        assert_eq!(
            names,
            [
                "devices",
                "driver 0000:00:07.0",
                "vfio-modules",
                "vfio-noiommu",
                "vfio-container",
                "vfio-group 0000:00:07.0",
                "hugepages",
                "hugepage-size",
                "hugetlbfs",
                "capability IPC_LOCK",
                "capability SYS_RAWIO",
                "capability NET_RAW",
                "capability SYS_ADMIN",
                "privileged",
                "cpu-set",
                "cpu-isolation",
                "numa 0000:00:07.0",
                "vf-trust 0000:00:07.0",
            ]
        );
        assert_eq!(exit_code(&fs), 0);
        let g = get(&fs, "vfio-group 0000:00:07.0");
        assert!(
            g.finding
                .contains("no-IOMMU group 0: /dev/vfio/noiommu-0 opens"),
            "{g:?}"
        );
        let h = get(&fs, "hugetlbfs");
        assert!(h.finding.contains("/dev/hugepages (1 GiB pages)"), "{h:?}");
        assert!(
            !h.finding.contains(&t.root().display().to_string()),
            "{h:?}"
        );
    }

    #[test]
    fn start_checks_cover_only_what_the_run_uses() {
        let t = Tree::good();
        let names = |fs: &[Finding]| fs.iter().map(|f| f.check.clone()).collect::<Vec<_>>();
        // Software ports without hugepages: nothing to check.
        let cfg = StartConfig {
            no_huge: true,
            ..StartConfig::default()
        };
        assert!(start_checks(t.root(), &Env::new(), &cfg).is_empty());
        // Hugepages only: the hugepage checks and IPC_LOCK.
        let fs = start_checks(t.root(), &Env::new(), &StartConfig::default());
        assert_eq!(
            names(&fs),
            [
                "hugepages",
                "hugepage-size",
                "hugetlbfs",
                "capability IPC_LOCK"
            ]
        );
        // A no-IOMMU VF: drivers, VFIO, and its capabilities; nothing advisory.
        let cfg = StartConfig {
            devices: vec![VF.parse().unwrap()],
            ..StartConfig::default()
        };
        let fs = start_checks(t.root(), &Env::new(), &cfg);
        assert_eq!(
            names(&fs),
            [
                "driver 0000:00:07.0",
                "vfio-modules",
                "vfio-noiommu",
                "vfio-container",
                "vfio-group 0000:00:07.0",
                "hugepages",
                "hugepage-size",
                "hugetlbfs",
                "capability IPC_LOCK",
                "capability SYS_RAWIO",
                "capability SYS_ADMIN",
            ]
        );
        assert!(
            fs.iter().all(|f| f.status == Status::Pass),
            "{}",
            render_text(&fs, false)
        );
        // --huge-dir names the mount to check.
        let cfg = StartConfig {
            huge_dir: Some("/tmp".into()),
            ..StartConfig::default()
        };
        t.mkdir("tmp");
        let fs = start_checks(t.root(), &Env::new(), &cfg);
        expect_saying(
            &fs,
            "hugetlbfs",
            Status::Fail,
            "mount -t hugetlbfs",
            "--huge-dir /tmp",
        );
        let cfg = StartConfig {
            huge_dir: Some("/dev/hugepages".into()),
            ..StartConfig::default()
        };
        expect(
            &start_checks(t.root(), &Env::new(), &cfg),
            "hugetlbfs",
            Status::Pass,
            "",
        );
        // An mlx5 device: NET_RAW, no VFIO.
        t.device(&FakeDev::mlx5());
        let cfg = StartConfig {
            devices: vec!["3b:00.2".parse().unwrap()],
            no_huge: true,
            ..StartConfig::default()
        };
        assert_eq!(
            names(&start_checks(t.root(), &Env::new(), &cfg)),
            ["driver 0000:3b:00.2", "capability NET_RAW"]
        );
    }

    fn run_args(args: &[&str], env: &Env) -> (u8, String, String) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run_with(&args, env, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn output_forms_and_exit_status() {
        let t = Tree::good();
        let root = t.root().display().to_string();
        let (code, out, _) = run_args(&["--root", &root, "-a", VF], &Env::new());
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("PASS  driver 0000:00:07.0: Intel 8086:154c is bound to vfio-pci\n"),
            "{out}"
        );
        assert!(
            out.ends_with("doctor: 18 checks, 17 PASS, 1 WARN, 0 FAIL\n"),
            "{out}"
        );
        t.rm("dev/vfio/vfio");
        let (code, out, _) = run_args(&["--brief", "-a", VF], &env(&[("NICPOLL_ROOT", &root)]));
        assert_eq!(code, 1, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(
            lines[0].starts_with("FAIL  vfio-container: /dev/vfio/vfio does not exist"),
            "{out}"
        );
        assert_eq!(
            lines[1],
            "      fix: modprobe vfio-pci (it creates /dev/vfio/vfio)"
        );
        assert!(
            lines[2].starts_with("WARN  vf-trust 0000:00:07.0: "),
            "{out}"
        );
        assert!(
            lines[3].starts_with("      fix: on the hypervisor"),
            "{out}"
        );
        assert_eq!(lines[4], "doctor: 18 checks, 16 PASS, 1 WARN, 1 FAIL");
        let (code, out, _) = run_args(&["--root", &root, "-a", VF, "--json"], &Env::new());
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 18);
        for item in arr {
            let keys: Vec<&String> = item.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 4, "{item}");
            assert!(["PASS", "WARN", "FAIL"].contains(&item["status"].as_str().unwrap()));
        }
        let c = arr.iter().find(|i| i["check"] == "vfio-container").unwrap();
        assert_eq!(c["status"], "FAIL");
        assert!(c["fix"].as_str().unwrap().contains("modprobe vfio-pci"));
        assert!(arr.iter().find(|i| i["check"] == "hugepages").unwrap()["fix"].is_null());

        let (code, _, err) = run_args(&["--root", "/does/not/exist"], &Env::new());
        assert_eq!(code, 2);
        assert!(err.contains("not a directory"), "{err}");
        let (code, _, err) = run_args(&["-a", "zz"], &Env::new());
        assert_eq!(code, 2);
        assert!(err.contains("testpmd doctor --help"), "{err}");
        let (code, out, _) = run_args(&["--help"], &Env::new());
        assert_eq!(code, 0);
        assert!(out.starts_with("usage: testpmd doctor"), "{out}");
    }
}
