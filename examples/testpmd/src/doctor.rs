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
#![deny(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nicpoll::lcore::format_cpu_list;
use nicpoll::memory::hugepage::{self, HugepageSize, HugetlbfsMount};
use nicpoll::pci::sriov::DevicePluginEnv;
use nicpoll::pci::{NOIOMMU_GROUP_NAME, PciAddress, PciDevice, Sysfs, VFIO_PCI_DRIVER};
use serde::Serialize;

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

const USAGE: &str = "\
usage: testpmd doctor [--root DIR] [-a BDF]... [--json] [--brief]

Checks what a hardware run needs and prints PASS, WARN or FAIL for each check,
with the command that fixes it.

  -a, --allow BDF  a PCI device to check (repeatable); the device plugin's
                   PCIDEVICE_* variables add theirs
  --root DIR       read /proc, /sys, /dev and /etc below DIR (default: $NICPOLL_ROOT, else /)
  --json           print a JSON array of {check, status, finding, fix}
  --brief          print only WARN and FAIL findings and a summary line
  -h, --help       this text

Exit status: 0 when nothing FAILs, 1 when a check FAILs, 2 on a usage error.
";

#[derive(Debug, Default)]
struct Options {
    root: Option<PathBuf>,
    allow: Vec<PciAddress>,
    json: bool,
    brief: bool,
    help: bool,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value ({what})")),
            }
        };
        match name {
            "-h" | "--help" => o.help = true,
            "--json" => o.json = true,
            "--brief" => o.brief = true,
            "--root" => {
                let dir = value("a directory")?;
                if dir.is_empty() {
                    return Err("--root needs a directory".into());
                }
                o.root = Some(PathBuf::from(dir));
            }
            "-a" | "--allow" => o.allow.push(parse_bdf(name, &value("a PCI address")?)?),
            short if short.starts_with("-a") && short.len() > 2 => {
                o.allow.push(parse_bdf("-a", &short[2..])?)
            }
            other if other.starts_with('-') => {
                return Err(format!(
                    "unknown option {other:?}; the options are --root, -a/--allow, --json, --brief"
                ));
            }
            other => {
                return Err(format!(
                    "unexpected argument {other:?}; give devices with -a BDF"
                ));
            }
        }
    }
    Ok(o)
}

/// A `-a` value: `BDF` or dpdk's `BDF,devargs` (the device arguments are not ours).
fn parse_bdf(option: &str, value: &str) -> Result<PciAddress, String> {
    let bdf = value.split(',').next().unwrap_or(value);
    PciAddress::parse(bdf).map_err(|e| format!("{option} {value:?}: {e}"))
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

// ---------------------------------------------------------------------------
// The machine.

/// The machine below a root, and the environment.
struct Host<'a> {
    root: PathBuf,
    sysfs: Sysfs,
    env: &'a Env,
    in_pod: bool,
}

impl<'a> Host<'a> {
    fn new(root: &Path, env: &'a Env) -> Host<'a> {
        let mut host = Host {
            root: root.to_path_buf(),
            sysfs: Sysfs::new(root),
            env,
            in_pod: false,
        };
        host.in_pod = env.contains_key("KUBERNETES_SERVICE_HOST")
            || host.path("/run/.containerenv").exists()
            || host.path("/.dockerenv").exists();
        host
    }

    /// An absolute machine path inside the root.
    fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    fn read(&self, abs: &str) -> Option<String> {
        fs::read_to_string(self.path(abs)).ok()
    }

    fn read_trimmed(&self, abs: &str) -> Option<String> {
        self.read(abs).map(|s| s.trim().to_string())
    }

    /// A path inside the root as the machine names it.
    fn shown(&self, p: &Path) -> String {
        let canon_root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let rel = p
            .strip_prefix(&canon_root)
            .or_else(|_| p.strip_prefix(&self.root))
            .unwrap_or(p);
        if rel.is_absolute() {
            rel.display().to_string()
        } else {
            format!("/{}", rel.display())
        }
    }

    /// Names in a directory, sorted (empty if it cannot be read).
    fn list(&self, abs: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(abs))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `/proc/self/status` field.
    fn status_field(&self, key: &str) -> Option<String> {
        self.read("/proc/self/status")?.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    }

    /// The kernel command line as `name -> value` (`""` for bare flags); later
    /// occurrences win; `--` ends the kernel's part.
    fn cmdline(&self) -> BTreeMap<String, String> {
        let text = self.read("/proc/cmdline").unwrap_or_default();
        let mut m = BTreeMap::new();
        for word in text.split_whitespace() {
            if word == "--" {
                break;
            }
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    fn module_loaded(&self, name: &str) -> bool {
        self.path(format!("/sys/module/{name}")).is_dir()
    }
}

// ---------------------------------------------------------------------------
// Devices.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Intel (iavf, ...) and virtio devices: userspace over vfio-pci.
    Vfio,
    /// Mellanox ConnectX: bifurcated, stays on mlx5_core, used through verbs.
    Mlx5,
    /// Something nicpoll has no driver for.
    Other,
}

const INTEL: u16 = 0x8086;
const VIRTIO: u16 = 0x1af4;
const MELLANOX: u16 = 0x15b3;
const MLX5_DRIVER: &str = "mlx5_core";

/// One device to check.
struct Dev {
    addr: PciAddress,
    /// Where it came from: `-a`, or the `PCIDEVICE_*` variable.
    sources: Vec<String>,
    /// What sysfs says, or why it could not say.
    info: Result<PciDevice, String>,
    /// The group node the device plugin says it mounted (`vfio.dev-mount`).
    plugin_group_node: Option<PathBuf>,
    /// The container node the plugin says it mounted (`vfio.mount`).
    plugin_container_node: Option<PathBuf>,
}

impl Dev {
    fn kind(&self) -> Option<Kind> {
        self.info.as_ref().ok().map(|d| match d.vendor {
            INTEL | VIRTIO => Kind::Vfio,
            MELLANOX => Kind::Mlx5,
            _ => Kind::Other,
        })
    }

    fn noiommu_group(&self) -> bool {
        self.info.as_ref().is_ok_and(|d| d.is_noiommu())
    }
}

fn resolve_devices(
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

fn devices_finding(devs: &[Dev], plugin: &DevicePluginEnv) -> Finding {
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

fn describe(d: &PciDevice) -> String {
    let vendor = match d.vendor {
        INTEL => "Intel",
        VIRTIO => "virtio",
        MELLANOX => "Mellanox",
        _ => "vendor",
    };
    format!("{vendor} {:04x}:{:04x}", d.vendor, d.device)
}

fn bind_fix(host: &Host<'_>, addr: &PciAddress) -> String {
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
fn check_driver(host: &Host<'_>, dev: &Dev) -> Finding {
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

fn check_mlx5_driver(
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
fn rdma_devices(host: &Host<'_>, addr: &PciAddress) -> Vec<String> {
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

// ---------------------------------------------------------------------------
// What the run needs.

/// How much a run needs something: a missing one FAILs, WARNs, or does not matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Yes,
    Maybe,
    No,
}

impl Need {
    fn missing(self) -> Status {
        match self {
            Need::Yes => Status::Fail,
            Need::Maybe => Status::Warn,
            Need::No => Status::Pass,
        }
    }
}

/// What the IOMMU situation is.
struct Iommu {
    /// `/sys/class/iommu/*` entries (dmar0, amd-iommu ...), or groups that are not no-IOMMU.
    units: Vec<String>,
}

impl Iommu {
    fn read(host: &Host<'_>) -> Iommu {
        let mut units = host.list("/sys/class/iommu");
        if units.is_empty() {
            let real_groups = host
                .list("/sys/kernel/iommu_groups")
                .into_iter()
                .filter(|g| {
                    host.read_trimmed(&format!("/sys/kernel/iommu_groups/{g}/name"))
                        .as_deref()
                        != Some(NOIOMMU_GROUP_NAME)
                })
                .count();
            if real_groups > 0 {
                units.push(format!(
                    "{real_groups} IOMMU group(s) in /sys/kernel/iommu_groups"
                ));
            }
        }
        Iommu { units }
    }

    fn present(&self) -> bool {
        !self.units.is_empty()
    }
}

/// The run's needs, derived from its devices.
struct Scope {
    /// vfio-pci: a device needs it (Yes), no device given (Maybe), only others (No).
    vfio: Need,
    /// No-IOMMU VFIO: devices need vfio and the machine has no IOMMU (or their
    /// groups are no-IOMMU ones).
    noiommu: Need,
    /// mlx5 devices (CAP_NET_RAW for verbs raw packet queues).
    mlx5: Need,
    /// Hugepage memory will be used.
    hugepages: bool,
    iommu: Iommu,
    /// The devices that need vfio-pci, for messages.
    vfio_devices: Vec<PciAddress>,
    mlx5_devices: Vec<PciAddress>,
}

impl Scope {
    /// `unknown_is_maybe`: with no device at all, things a device would need are
    /// Maybe (doctor) rather than No (start of a run without PCI devices).
    fn new(host: &Host<'_>, devs: &[Dev], hugepages: bool, unknown_is_maybe: bool) -> Scope {
        let iommu = Iommu::read(host);
        let pick = |k: Kind| -> Vec<PciAddress> {
            devs.iter()
                .filter(|d| d.kind() == Some(k))
                .map(|d| d.addr)
                .collect()
        };
        let vfio_devices = pick(Kind::Vfio);
        let mlx5_devices = pick(Kind::Mlx5);
        let none = if devs.is_empty() && unknown_is_maybe {
            Need::Maybe
        } else {
            Need::No
        };
        let need = |v: &[PciAddress]| if v.is_empty() { none } else { Need::Yes };
        let vfio = need(&vfio_devices);
        let noiommu = match vfio {
            Need::Yes if !iommu.present() || devs.iter().any(Dev::noiommu_group) => Need::Yes,
            Need::Yes => Need::No,
            Need::Maybe if !iommu.present() => Need::Maybe,
            _ => Need::No,
        };
        Scope {
            vfio,
            noiommu,
            mlx5: need(&mlx5_devices),
            hugepages,
            iommu,
            vfio_devices,
            mlx5_devices,
        }
    }

    fn vfio_users(&self) -> String {
        if self.vfio_devices.is_empty() {
            "Intel and virtio devices need it".to_string()
        } else {
            format!("needed by {}", join(&self.vfio_devices))
        }
    }
}

fn join(addrs: &[PciAddress]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// VFIO.

fn vfio_checks(host: &Host<'_>, devs: &[Dev], scope: &Scope) -> Vec<Finding> {
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
fn check_vfio_modules(host: &Host<'_>, scope: &Scope) -> Finding {
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

const NOIOMMU_PARAM: &str = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode";
const NOIOMMU_CONF: &str = "/etc/modprobe.d/vfio-noiommu.conf";
const NOIOMMU_CONF_LINE: &str = "options vfio enable_unsafe_noiommu_mode=1";

/// Where no-IOMMU mode is made permanent: a modprobe.d file with
/// `options vfio enable_unsafe_noiommu_mode=1`, or `vfio.enable_unsafe_noiommu_mode=1`
/// on the kernel command line (vfio built in).
fn noiommu_persisted(host: &Host<'_>) -> Option<String> {
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
fn check_noiommu(host: &Host<'_>, scope: &Scope) -> Finding {
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

const EPERM: i32 = 1;
const ENOENT: i32 = 2;
const EACCES: i32 = 13;
const EBUSY: i32 = 16;

/// Open a device node read-write, as the engine will, and close it at once.
fn try_open(path: &Path) -> io::Result<()> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(drop)
}

/// Status, finding and fix for a node that would not open.
fn open_failure(
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
fn check_vfio_container(host: &Host<'_>, devs: &[Dev], scope: &Scope) -> Finding {
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
const GROUP_OK_DRIVERS: &[&str] = &[VFIO_PCI_DRIVER, "pci-stub", "pcieport"];

/// `vfio-group BDF`: the device's group node is there, opens read-write, and the
/// group is viable (every member on vfio-pci or no driver).
fn check_vfio_group(host: &Host<'_>, dev: &Dev, d: &PciDevice) -> Finding {
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

// ---------------------------------------------------------------------------
// Hugepages.

fn size_arg(s: HugepageSize) -> String {
    if s.bytes().is_multiple_of(1 << 30) {
        format!("{}G", s.bytes() >> 30)
    } else if s.bytes().is_multiple_of(1 << 20) {
        format!("{}M", s.bytes() >> 20)
    } else {
        format!("{}K", s.kib())
    }
}

fn k8s_resource(s: HugepageSize) -> String {
    if s.bytes().is_multiple_of(1 << 30) {
        format!("hugepages-{}Gi", s.bytes() >> 30)
    } else if s.bytes().is_multiple_of(1 << 20) {
        format!("hugepages-{}Mi", s.bytes() >> 20)
    } else {
        format!("hugepages-{}Ki", s.kib())
    }
}

/// `echo N > .../hugepages-SIZEkB/nr_hugepages`, for `size` pages; 1 GiB pages
/// also get the kernel command line (runtime reservation fails on fragmented memory).
fn reserve_fix(size: HugepageSize, now: u64) -> String {
    let n = if size.bytes() >= 1 << 30 {
        now + 4
    } else {
        now + 1024
    };
    let echo = format!(
        "echo {n} > /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages",
        size.kib()
    );
    if size.bytes() >= 1 << 30 {
        let a = size_arg(size);
        format!(
            "{echo} (reliably: default_hugepagesz={a} hugepagesz={a} hugepages={n} on the kernel command line, then reboot)"
        )
    } else {
        echo
    }
}

/// Every hugepage pool the kernel has, by size.
fn pools(host: &Host<'_>) -> Vec<(HugepageSize, hugepage::HugepagePool)> {
    let mut v: Vec<_> = host
        .list("/sys/kernel/mm/hugepages")
        .iter()
        .filter_map(|n| {
            let kib: usize = n
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let size = HugepageSize::from_bytes(kib.checked_mul(1024)?)?;
            Some((size, hugepage::pool_in(&host.root, size)?))
        })
        .collect();
    v.sort_by_key(|(s, _)| *s);
    v
}

fn hugepage_checks(host: &Host<'_>, huge_dir: Option<&Path>) -> Vec<Finding> {
    let meminfo = hugepage::meminfo_in(&host.root);
    let pools = pools(host);
    vec![
        check_hugepages(host, &meminfo, &pools),
        check_hugepage_size(host, &meminfo, &pools),
        check_hugetlbfs(host, &meminfo, huge_dir),
    ]
}

/// `hugepages`: HugePages_Total / HugePages_Free of the default size, and the
/// other pools.
fn check_hugepages(
    host: &Host<'_>,
    meminfo: &nicpoll::Result<hugepage::HugepageMeminfo>,
    pools: &[(HugepageSize, hugepage::HugepagePool)],
) -> Finding {
    const NAME: &str = "hugepages";
    let m = match meminfo {
        Ok(m) => m,
        Err(e) => return Finding::new(NAME, Status::Warn, format!("cannot tell: {e}")),
    };
    let (Some(size), Some(total), Some(free)) = (m.default_size, m.total, m.free) else {
        return Finding::new(
            NAME,
            Status::Fail,
            "/proc/meminfo has no HugePages_Total/HugePages_Free/Hugepagesize: the kernel has no hugetlbfs support",
        )
        .fix("a kernel with CONFIG_HUGETLBFS=y; software ports run without hugepages (--no-huge)");
    };
    let others: Vec<String> = pools
        .iter()
        .filter(|(s, _)| *s != size)
        .map(|(s, p)| format!("{s}: {} total, {} free", p.total, p.free))
        .collect();
    let other_note = if others.is_empty() {
        String::new()
    } else {
        format!("; other pools: {}", others.join("; "))
    };
    let found =
        format!("HugePages_Total {total}, HugePages_Free {free}, Hugepagesize {size}{other_note}");
    let pod_note = if host.in_pod {
        format!(
            " (these are the node's counts; the pod gets what it asks with resources.limits {})",
            k8s_resource(size)
        )
    } else {
        String::new()
    };
    if free > 0 {
        return Finding::pass(NAME, format!("{found}{pod_note}"));
    }
    if let Some((other, _)) = pools.iter().find(|(s, p)| *s != size && p.free > 0) {
        let a = size_arg(*other);
        return Finding::new(
            NAME,
            Status::Warn,
            format!(
                "{found}: no free pages of the default size; the free {other} pages need a hugetlbfs mounted with pagesize={a}, and Kubernetes does not schedule them"
            ),
        )
        .fix(format!(
            "make {other} the default: default_hugepagesz={a} hugepagesz={a} hugepages=N on the kernel command line; or {}",
            reserve_fix(size, total)
        ));
    }
    let why = if total == 0 {
        "no hugepages are reserved".to_string()
    } else {
        format!("all {total} pages are in use")
    };
    let free_hint = if total == 0 {
        String::new()
    } else {
        " (or free them: hugepage files left in hugetlbfs mounts, `ls /dev/hugepages`)".to_string()
    };
    Finding::new(NAME, Status::Fail, format!("{found}: {why}{pod_note}")).fix(format!(
        "{}{free_hint}; software ports run without hugepages (--no-huge)",
        reserve_fix(size, total)
    ))
}

/// `hugepage-size`: the default size the kernel took vs `default_hugepagesz=` on
/// /proc/cmdline; pages reserved only at another size (Kubernetes schedules the
/// default size only).
fn check_hugepage_size(
    host: &Host<'_>,
    meminfo: &nicpoll::Result<hugepage::HugepageMeminfo>,
    pools: &[(HugepageSize, hugepage::HugepagePool)],
) -> Finding {
    const NAME: &str = "hugepage-size";
    let cmdline = host.cmdline();
    let asked = cmdline.get("default_hugepagesz");
    let Some(default) = meminfo.as_ref().ok().and_then(|m| m.default_size) else {
        return Finding::new(
            NAME,
            Status::Warn,
            "cannot tell: no Hugepagesize in /proc/meminfo",
        );
    };
    let on_cmdline = match asked {
        Some(v) => format!("default_hugepagesz={v} on /proc/cmdline"),
        None => "no default_hugepagesz= on /proc/cmdline".to_string(),
    };
    if let Some(v) = asked {
        match hugepage::parse_size(v) {
            Some(want) if want == default => {}
            Some(want) => {
                let a = size_arg(want);
                return Finding::new(
                    NAME,
                    Status::Fail,
                    format!(
                        "{on_cmdline} but Hugepagesize is {default}: the kernel refused {want} pages \
                         (a VM whose CPU lacks the pdpe1gb flag has no 1 GiB pages); pods asking for {} will not schedule",
                        k8s_resource(want)
                    ),
                )
                .fix(format!(
                    "give the VM's CPU the pdpe1gb flag (libvirt: <cpu mode='host-passthrough'/>) and reboot \
                     with default_hugepagesz={a} hugepagesz={a} hugepages=N; or use {default} pages and ask for {}",
                    k8s_resource(default)
                ));
            }
            None => {
                return Finding::new(
                    NAME,
                    Status::Fail,
                    format!("{on_cmdline} is not a page size the kernel takes; the default stayed {default}"),
                )
                .fix(
                    "default_hugepagesz=1G hugepagesz=1G hugepages=N (or 2M) on the kernel command line",
                );
            }
        }
    }
    let default_total = pools
        .iter()
        .find(|(s, _)| *s == default)
        .map(|(_, p)| p.total)
        .or_else(|| meminfo.as_ref().ok().and_then(|m| m.total))
        .unwrap_or(0);
    if default_total == 0
        && let Some((other, p)) = pools.iter().find(|(s, p)| *s != default && p.total > 0)
    {
        let a = size_arg(*other);
        return Finding::new(
            NAME,
            Status::Warn,
            format!(
                "{on_cmdline}: the default size is {default}, but the reserved pages are {other} ({}): \
                 Kubernetes only schedules the default size, so the node offers {} and pods asking {} stay pending",
                p.total,
                k8s_resource(default),
                k8s_resource(*other)
            ),
        )
        .fix(format!(
            "default_hugepagesz={a} hugepagesz={a} hugepages={} on the kernel command line",
            p.total
        ));
    }
    Finding::pass(
        NAME,
        format!(
            "default size {default} ({on_cmdline}); Kubernetes schedules {}",
            k8s_resource(default)
        ),
    )
}

/// `hugetlbfs`: a hugetlbfs is mounted (with `huge_dir`: that one), at which page
/// size, and whether that is the default size.
fn check_hugetlbfs(
    host: &Host<'_>,
    meminfo: &nicpoll::Result<hugepage::HugepageMeminfo>,
    huge_dir: Option<&Path>,
) -> Finding {
    const NAME: &str = "hugetlbfs";
    let default = meminfo.as_ref().ok().and_then(|m| m.default_size);
    let mount_fix = if host.in_pod {
        "mount one in the pod: a volume `emptyDir: {medium: HugePages}` (or HugePages-1Gi) with a volumeMount at /dev/hugepages"
    } else {
        "mount -t hugetlbfs nodev /dev/hugepages"
    };
    let mounts: Vec<HugetlbfsMount> = match huge_dir {
        Some(dir) => match hugepage::find_mount_in(&host.root, Some(dir)) {
            Ok(m) => vec![m],
            Err(e) => {
                return Finding::new(
                    NAME,
                    Status::Fail,
                    format!("--huge-dir {}: {e}", dir.display()),
                )
                .fix(mount_fix);
            }
        },
        None => match hugepage::mounts_in(&host.root) {
            Ok(m) => m,
            Err(e) => return Finding::new(NAME, Status::Warn, format!("cannot tell: {e}")),
        },
    };
    let list: Vec<String> = mounts
        .iter()
        .map(|m| format!("{} ({} pages)", host.shown(&m.path), m.page_size))
        .collect();
    if mounts.is_empty() {
        return Finding::new(NAME, Status::Fail, "no hugetlbfs is mounted (/proc/mounts)")
            .fix(mount_fix);
    }
    let Some(default) = default else {
        return Finding::pass(NAME, format!("mounted at {}", list.join(", ")));
    };
    if mounts.iter().any(|m| m.page_size == default) {
        return Finding::pass(
            NAME,
            format!(
                "mounted at {}; {default} is the default size",
                list.join(", ")
            ),
        );
    }
    let size = mounts[0].page_size;
    let a = size_arg(size);
    Finding::new(
        NAME,
        Status::Warn,
        format!(
            "mounted at {}, but the default size is {default}: Kubernetes only schedules the default size \
             ({}), so a pod cannot be given {} pages",
            list.join(", "),
            k8s_resource(default),
            size
        ),
    )
    .fix(format!(
        "make {size} the default: default_hugepagesz={a} hugepagesz={a} hugepages=N on the kernel command line; \
         or mount the default size: mount -t hugetlbfs -o pagesize={} nodev /dev/hugepages",
        size_arg(default)
    ))
}

// ---------------------------------------------------------------------------
// Capabilities.

const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_ADMIN: u32 = 21;

struct Caps {
    /// CapEff, if readable.
    eff: Option<u64>,
    /// /proc/sys/kernel/cap_last_cap.
    last: Option<u32>,
    /// Whether we are in the initial user namespace (capabilities count machine-wide).
    init_userns: bool,
    /// RLIMIT_MEMLOCK soft limit is unlimited.
    memlock_unlimited: bool,
}

impl Caps {
    fn read(host: &Host<'_>) -> Caps {
        let eff = host
            .status_field("CapEff")
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
        let last = host
            .read_trimmed("/proc/sys/kernel/cap_last_cap")
            .and_then(|s| s.parse().ok());
        let init_userns = host
            .read("/proc/self/uid_map")
            .is_none_or(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]);
        let memlock_unlimited = host.read("/proc/self/limits").is_some_and(|t| {
            t.lines().any(|l| {
                l.strip_prefix("Max locked memory")
                    .and_then(|r| r.split_whitespace().next())
                    == Some("unlimited")
            })
        });
        Caps {
            eff,
            last,
            init_userns,
            memlock_unlimited,
        }
    }

    fn has(&self, cap: u32) -> Option<bool> {
        self.eff.map(|e| e & (1u64 << cap) != 0)
    }

    /// All capabilities up to cap_last_cap (40 if unreadable).
    fn privileged(&self) -> Option<bool> {
        let last = self.last.unwrap_or(40).min(63);
        let all = if last == 63 {
            u64::MAX
        } else {
            (1u64 << (last + 1)) - 1
        };
        self.eff.map(|e| e & all == all)
    }
}

fn cap_fix(name: &str) -> String {
    format!(
        "securityContext: capabilities: add: [\"{name}\"] in the container spec (or privileged: true); on a host, run as root"
    )
}

/// The capability checks with how much the run needs each:
/// `capability IPC_LOCK|SYS_RAWIO|NET_RAW|SYS_ADMIN`.
fn capability_checks(host: &Host<'_>, scope: &Scope) -> Vec<(Need, Finding)> {
    let caps = Caps::read(host);
    let ipc_need = if scope.hugepages || scope.vfio == Need::Yes {
        Need::Yes
    } else {
        scope.vfio
    };
    let (rawio_why, admin_why) = if scope.noiommu == Need::Yes {
        let devs = join(&scope.vfio_devices);
        (
            format!("opening the no-IOMMU VFIO groups of {devs}"),
            format!(
                "reading physical addresses from /proc/self/pagemap: without an IOMMU they are \
                 the DMA addresses of {devs}"
            ),
        )
    } else {
        (
            "opening no-IOMMU VFIO groups (machines without an IOMMU, such as VMs without a \
             virtual IOMMU)"
                .to_string(),
            "reading physical addresses from /proc/self/pagemap (the DMA addresses when there \
             is no IOMMU)"
                .to_string(),
        )
    };
    let net_raw_why = if scope.mlx5 == Need::Yes {
        format!("mlx5 raw packet queues of {}", join(&scope.mlx5_devices))
    } else {
        "mlx5 raw packet queues and net_af_packet ports".to_string()
    };
    let specs: [(u32, &str, Need, String, bool); 4] = [
        (
            CAP_IPC_LOCK,
            "IPC_LOCK",
            ipc_need,
            "locking DMA memory".into(),
            true,
        ),
        (CAP_SYS_RAWIO, "SYS_RAWIO", scope.noiommu, rawio_why, true),
        (CAP_NET_RAW, "NET_RAW", scope.mlx5, net_raw_why, false),
        (CAP_SYS_ADMIN, "SYS_ADMIN", scope.noiommu, admin_why, true),
    ];
    specs
        .into_iter()
        .map(|(bit, name, need, why, init_ns_only)| {
            let check = format!("capability {name}");
            let f = match caps.has(bit) {
                None => Finding::new(check, Status::Warn, "cannot tell: no CapEff line in /proc/self/status"),
                Some(true) if init_ns_only && !caps.init_userns => Finding::new(
                    check,
                    need.missing(),
                    format!(
                        "CAP_{name} is held inside a user namespace (a rootless container): the kernel checks it against the machine's, so it does not count for {why}"
                    ),
                )
                .fix("run the container rootful (no user namespace), privileged: true"),
                Some(true) => Finding::pass(check, format!("CAP_{name} held ({why})")),
                Some(false) if bit == CAP_IPC_LOCK && caps.memlock_unlimited => Finding::pass(
                    check,
                    format!("CAP_{name} not held, but RLIMIT_MEMLOCK is unlimited ({why} works)"),
                ),
                Some(false) if need == Need::No => Finding::pass(
                    check,
                    format!("CAP_{name} not held; not needed here (it is for {why})"),
                ),
                Some(false) => Finding::new(
                    check,
                    need.missing(),
                    format!("CAP_{name} not held; needed for {why}"),
                )
                .fix(cap_fix(name)),
            };
            (need, f)
        })
        .collect()
}

/// `privileged`: every capability up to cap_last_cap. The no-IOMMU guide asks
/// for a privileged pod (writable /sys, every /dev/vfio node); type1 and mlx5 do not.
fn check_privileged(host: &Host<'_>, scope: &Scope) -> Finding {
    const NAME: &str = "privileged";
    let caps = Caps::read(host);
    let last = caps
        .last
        .map_or("40 (cap_last_cap unreadable)".to_string(), |l| {
            l.to_string()
        });
    match caps.privileged() {
        None => Finding::new(NAME, Status::Warn, "cannot tell: no CapEff line in /proc/self/status"),
        Some(true) => Finding::pass(
            NAME,
            format!("all capabilities 0-{last} (a privileged container, or root on the host)"),
        ),
        Some(false) if scope.noiommu == Need::Yes => Finding::new(
            NAME,
            Status::Warn,
            format!(
                "not privileged (CapEff {:016x}, capabilities 0-{last} exist): no-IOMMU VFIO with vfio-pci runs in a privileged pod \
                 (the capabilities above are the minimum; /sys stays read-only without it)",
                caps.eff.unwrap_or(0)
            ),
        )
        .fix(
            "securityContext: privileged: true (with capabilities: add: [\"IPC_LOCK\", \"SYS_RAWIO\"])",
        ),
        Some(false) => Finding::pass(
            NAME,
            format!(
                "not privileged (CapEff {:016x}); not needed here (VFIO with an IOMMU and mlx5 need only the capabilities above)",
                caps.eff.unwrap_or(0)
            ),
        ),
    }
}

// ---------------------------------------------------------------------------
// CPUs.

/// Parse a kernel CPU list (`0-3,8,10-11`; empty is no CPU). Not
/// `lcore::parse_cpu_list`: that stops at the highest lcore id (127), and
/// machines have more CPUs than that.
fn parse_kernel_cpus(s: &str) -> Option<Vec<usize>> {
    let mut v = BTreeSet::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n: usize = part.parse().ok()?;
                (n, n)
            }
        };
        if a > b || b > 1 << 16 {
            return None;
        }
        v.extend(a..=b);
    }
    Some(v.into_iter().collect())
}

/// `isolcpus=[flags,]LIST`: the flags (`domain`, `nohz`, `managed_irq`) are not CPUs.
fn parse_isolcpus(s: &str) -> Option<Vec<usize>> {
    let list: Vec<&str> = s
        .split(',')
        .filter(|p| {
            !p.trim().is_empty() && !p.trim().starts_with(|c: char| c.is_ascii_alphabetic())
        })
        .collect();
    parse_kernel_cpus(&list.join(","))
}

/// Our CPUs: Cpus_allowed_list of /proc/self/status, else the cgroup v2
/// `cpuset.cpus.effective`; with where they came from.
fn our_cpus(host: &Host<'_>) -> Option<(Vec<usize>, String)> {
    if let Some(c) = host
        .status_field("Cpus_allowed_list")
        .and_then(|l| parse_kernel_cpus(&l))
        .filter(|c| !c.is_empty())
    {
        return Some((c, "Cpus_allowed_list".into()));
    }
    let cg = host
        .read("/proc/self/cgroup")
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
        })
        .unwrap_or_default();
    let mut tries = vec![format!(
        "/sys/fs/cgroup{}/cpuset.cpus.effective",
        cg.trim_end_matches('/')
    )];
    tries.push("/sys/fs/cgroup/cpuset.cpus.effective".into());
    tries.into_iter().find_map(|p| {
        let c = parse_kernel_cpus(&host.read(&p)?)?;
        (!c.is_empty()).then_some((c, p))
    })
}

fn cpu_checks(host: &Host<'_>) -> Vec<Finding> {
    let ours = our_cpus(host);
    let online = host
        .read("/sys/devices/system/cpu/online")
        .and_then(|s| parse_kernel_cpus(&s));
    let cmd = host.cmdline();
    let isolcpus = cmd.get("isolcpus").map(|v| (v.clone(), parse_isolcpus(v)));
    vec![
        check_cpu_set(host, ours.as_ref(), online.as_deref(), isolcpus.as_ref()),
        check_cpu_isolation(host, ours.as_ref(), &cmd),
    ]
}

fn exclusive_fix(host: &Host<'_>) -> String {
    let k8s = "Guaranteed QoS: resources.requests = limits with an integer cpu (e.g. cpu: \"3\") and memory, \
               and the kubelet's static CPU manager policy (cpuManagerPolicy: static, or --cpu-manager-policy=static)";
    if host.in_pod {
        k8s.to_string()
    } else {
        format!(
            "in a pod: {k8s}; on a host: give testpmd dedicated CPUs with -l (and keep others off them: isolcpus=)"
        )
    }
}

/// `cpu-set`: our CPUs, whether they are exclusive (fewer than all online CPUs,
/// and inside isolcpus where given) and enough for a main and a forwarding lcore.
fn check_cpu_set(
    host: &Host<'_>,
    ours: Option<&(Vec<usize>, String)>,
    online: Option<&[usize]>,
    isolcpus: Option<&(String, Option<Vec<usize>>)>,
) -> Finding {
    const NAME: &str = "cpu-set";
    let Some((cpus, from)) = ours else {
        return Finding::new(
            NAME,
            Status::Warn,
            "cannot tell: no Cpus_allowed_list in /proc/self/status and no cgroup cpuset.cpus.effective",
        );
    };
    let list = format_cpu_list(cpus);
    let of_online = online.map_or(String::new(), |o| {
        format!(" of {} online ({})", o.len(), format_cpu_list(o))
    });
    let found = format!("CPUs {list} ({from}){of_online}");
    if cpus.len() < 2 {
        return Finding::new(
            NAME,
            Status::Fail,
            format!(
                "{found}: testpmd needs a main lcore and at least one forwarding lcore, so two CPUs"
            ),
        )
        .fix(if host.in_pod {
            "resources.requests and limits cpu: \"2\" or more (integer, for exclusive CPUs)"
                .to_string()
        } else {
            "run with at least two CPUs (taskset -c 2,3 testpmd ..., or the cgroup's cpuset)"
                .to_string()
        });
    }
    let Some(online) = online else {
        return Finding::new(
            NAME,
            Status::Warn,
            format!(
                "{found}; cannot tell whether they are exclusive: /sys/devices/system/cpu/online is unreadable"
            ),
        );
    };
    if online.iter().all(|c| cpus.contains(c)) {
        return Finding::new(
            NAME,
            Status::Warn,
            format!(
                "{found}: every online CPU, so shared with every other process (not exclusive)"
            ),
        )
        .fix(exclusive_fix(host));
    }
    if let Some((raw, iso)) = isolcpus {
        let fwd = &cpus[1..];
        match iso {
            Some(iso) => {
                let outside: Vec<usize> =
                    fwd.iter().copied().filter(|c| !iso.contains(c)).collect();
                if !outside.is_empty() {
                    return Finding::new(
                        NAME,
                        Status::Warn,
                        format!(
                            "{found}: forwarding CPUs {} are outside isolcpus={raw} (the first CPU is the main lcore)",
                            format_cpu_list(&outside)
                        ),
                    )
                    .fix(exclusive_fix(host));
                }
                return Finding::pass(
                    NAME,
                    format!(
                        "{found}: exclusive; forwarding CPUs {} within isolcpus={raw}",
                        format_cpu_list(fwd)
                    ),
                );
            }
            None => {
                return Finding::new(
                    NAME,
                    Status::Warn,
                    format!("{found}; isolcpus={raw} cannot be parsed"),
                );
            }
        }
    }
    Finding::pass(
        NAME,
        format!("{found}: fewer than all online CPUs, so exclusive if the CPU manager gave them"),
    )
}

/// `cpu-isolation`: isolcpus, nohz_full, rcu_nocbs on /proc/cmdline cover our
/// forwarding CPUs (all but the first, the main lcore).
fn check_cpu_isolation(
    host: &Host<'_>,
    ours: Option<&(Vec<usize>, String)>,
    cmd: &BTreeMap<String, String>,
) -> Finding {
    const NAME: &str = "cpu-isolation";
    let get = |k: &str| {
        cmd.get(k).map(|v| {
            (
                v.as_str(),
                if k == "isolcpus" {
                    parse_isolcpus(v)
                } else {
                    parse_kernel_cpus(v)
                },
            )
        })
    };
    let iso = get("isolcpus");
    let nohz = get("nohz_full");
    let rcu = get("rcu_nocbs");
    let shown: Vec<String> = [
        ("isolcpus", &iso),
        ("nohz_full", &nohz),
        ("rcu_nocbs", &rcu),
    ]
    .iter()
    .map(|(k, v)| match v {
        Some((raw, _)) => format!("{k}={raw}"),
        None => format!("no {k}"),
    })
    .collect();
    let found = shown.join(", ");
    let fwd: Vec<usize> = ours
        .map(|(c, _)| c.iter().skip(1).copied().collect())
        .unwrap_or_default();
    let fwd_list = if fwd.is_empty() {
        "N-M".to_string()
    } else {
        format_cpu_list(&fwd)
    };
    let fix = if host.in_pod {
        format!(
            "isolcpus={fwd_list} nohz_full={fwd_list} rcu_nocbs={fwd_list} on the node's kernel command line \
             (e.g. a tuned/performance profile), with the kubelet's reservedSystemCPUs outside them; in a VM, \
             pin and isolate the vCPUs on the hypervisor too"
        )
    } else {
        format!(
            "isolcpus={fwd_list} nohz_full={fwd_list} rcu_nocbs={fwd_list} on the kernel command line; in a VM, \
             pin and isolate the vCPUs on the hypervisor too"
        )
    };
    let covers = |v: &Option<(&str, Option<Vec<usize>>)>| {
        v.as_ref()
            .and_then(|(_, l)| l.as_ref())
            .is_some_and(|l| !fwd.is_empty() && fwd.iter().all(|c| l.contains(c)))
    };
    if fwd.is_empty() {
        return Finding::new(
            NAME,
            Status::Warn,
            format!("{found}; no forwarding CPU known to compare"),
        )
        .fix(fix);
    }
    // nohz_full implies rcu_nocbs for its CPUs.
    let isolated = covers(&iso) || covers(&nohz);
    let no_rcu = covers(&rcu) || covers(&nohz);
    if isolated && no_rcu {
        return Finding::pass(
            NAME,
            format!("{found}: forwarding CPUs {fwd_list} are isolated"),
        );
    }
    let mut missing = Vec::new();
    if !isolated {
        missing.push("not in isolcpus or nohz_full (the scheduler and timer ticks still use them)");
    }
    if !no_rcu {
        missing.push("not in rcu_nocbs or nohz_full (RCU callbacks still run on them)");
    }
    Finding::new(
        NAME,
        Status::Warn,
        format!(
            "{found}: forwarding CPUs {fwd_list} are {}",
            missing.join("; ")
        ),
    )
    .fix(fix)
}

// ---------------------------------------------------------------------------
// NUMA.

/// NUMA nodes and their CPUs (`/sys/devices/system/node/nodeN/cpulist`).
fn numa_nodes(host: &Host<'_>) -> BTreeMap<u32, Vec<usize>> {
    host.list("/sys/devices/system/node")
        .iter()
        .filter_map(|n| {
            let id: u32 = n.strip_prefix("node")?.parse().ok()?;
            let cpus = host
                .read(&format!("/sys/devices/system/node/{n}/cpulist"))
                .and_then(|l| parse_kernel_cpus(&l))
                .unwrap_or_default();
            Some((id, cpus))
        })
        .collect()
}

/// Free pages of `size` on node `id`, if the node shows the pool.
fn node_free_pages(host: &Host<'_>, id: u32, size: HugepageSize) -> Option<u64> {
    host.read_trimmed(&format!(
        "/sys/devices/system/node/node{id}/hugepages/hugepages-{}kB/free_hugepages",
        size.kib()
    ))?
    .parse()
    .ok()
}

/// `numa BDF`: the device's node vs our CPUs' nodes vs the nodes with free
/// hugepages (of the default size).
fn check_numa(host: &Host<'_>, dev: &Dev) -> Option<Finding> {
    let d = dev.info.as_ref().ok()?;
    let name = format!("numa {}", dev.addr);
    let nodes = numa_nodes(host);
    let Some(node) = d.numa_node else {
        return Some(Finding::pass(
            name,
            "the device has no NUMA node (numa_node -1: one node, or a VM that shows no affinity)",
        ));
    };
    if nodes.len() <= 1 {
        return Some(Finding::pass(
            name,
            format!("node {node}, the machine's only NUMA node"),
        ));
    }
    let cpus = our_cpus(host).map(|(c, _)| c).unwrap_or_default();
    let cpu_nodes: Vec<u32> = nodes
        .iter()
        .filter(|(_, nc)| nc.iter().any(|c| cpus.contains(c)))
        .map(|(id, _)| *id)
        .collect();
    let size = hugepage::meminfo_in(&host.root)
        .ok()
        .and_then(|m| m.default_size);
    let huge_nodes: Vec<u32> = match size {
        Some(s) => nodes
            .keys()
            .copied()
            .filter(|id| node_free_pages(host, *id, s).unwrap_or(0) > 0)
            .collect(),
        None => Vec::new(),
    };
    let ids = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let found = format!(
        "device on node {node}; our CPUs on node(s) {}; free hugepages on node(s) {}",
        ids(&cpu_nodes),
        ids(&huge_nodes)
    );
    let cpu_ok = cpu_nodes.contains(&node);
    let huge_ok = huge_nodes.contains(&node);
    if cpu_ok && huge_ok {
        return Some(Finding::pass(name, format!("{found}: local")));
    }
    let mut far = Vec::new();
    if !cpu_ok {
        far.push("no CPU of ours is on the device's node");
    }
    if !huge_ok {
        far.push("the device's node has no free hugepages");
    }
    let node_cpus = nodes
        .get(&node)
        .map(|c| format_cpu_list(c))
        .unwrap_or_default();
    let kib = size.map_or(2048, HugepageSize::kib);
    Some(
        Finding::new(
            name,
            Status::Warn,
            format!("{found}: {} (every packet crosses the interconnect)", far.join("; ")),
        )
        .fix(format!(
            "{}CPUs {node_cpus} and hugepages of node {node}: in Kubernetes the kubelet's topology manager \
             (topologyManagerPolicy: single-numa-node) with the static CPU manager; on a host, -l from {node_cpus} and \
             echo N > /sys/devices/system/node/node{node}/hugepages/hugepages-{kib}kB/nr_hugepages; in a VM the hypervisor places vCPUs, memory and VFs",
            if host.in_pod { "" } else { "use " }
        )),
    )
}

// ---------------------------------------------------------------------------
// VF settings.

/// `vf-trust BDF`: trust and spoof checking are PF-side settings of a VF. On the
/// host (the device has a physfn) say what to look at; in a VM say it cannot be
/// seen. Nothing is run.
fn check_vf_settings(host: &Host<'_>, dev: &Dev) -> Option<Finding> {
    let d = dev.info.as_ref().ok()?;
    let name = format!("vf-trust {}", dev.addr);
    if d.vendor == VIRTIO {
        return Some(Finding::pass(
            name,
            "a virtio device, not an SR-IOV VF: no trust or spoof checking to set",
        ));
    }
    let why = "spoof checking drops frames sent with another source MAC (io forwarding sends them), \
               and an untrusted VF gets no promiscuous or multicast-all mode";
    if let Some(pf) = d.physfn {
        let pf_dir = format!("/sys/bus/pci/devices/{pf}");
        let pf_name = host
            .list(&format!("{pf_dir}/net"))
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("<PF {pf}>"));
        let vf = host
            .list(&pf_dir)
            .into_iter()
            .filter_map(|n| n.strip_prefix("virtfn").map(str::to_string))
            .find(|n| {
                fs::read_link(host.path(format!("{pf_dir}/virtfn{n}")))
                    .ok()
                    .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .as_deref()
                    == Some(dev.addr.to_string().as_str())
            })
            .unwrap_or_else(|| "N".to_string());
        return Some(
            Finding::new(
                name,
                Status::Warn,
                format!(
                    "VF {vf} of PF {pf} ({pf_name}): trust and spoof checking are not in sysfs, so not checked ({why}); \
                     `ip link show {pf_name}` should list `vf {vf} ... spoof checking off, ... trust on`"
                ),
            )
            .fix(format!("ip link set {pf_name} vf {vf} spoofchk off trust on")),
        );
    }
    if host
        .path(format!("/sys/bus/pci/devices/{}/sriov_totalvfs", dev.addr))
        .exists()
    {
        return Some(Finding::pass(
            name,
            "a physical function (it has sriov_totalvfs): trust and spoof checking are settings of VFs",
        ));
    }
    Some(
        Finding::new(
            name,
            Status::Warn,
            format!(
                "no physfn: a VF passed into this VM, whose trust and spoof checking cannot be seen from here ({why}); \
                 they are set on the hypervisor, on the PF"
            ),
        )
        .fix(
            "on the hypervisor: ip link set PF vf N spoofchk off trust on (OpenStack: port_security_enabled=False \
             and binding:profile {\"trusted\": \"true\"}; or the network's SR-IOV settings)",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const VF: &str = "0000:00:07.0";

    /// A fake machine under a temporary root, removed on drop.
    pub(super) struct Tree {
        dir: PathBuf,
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// One fake PCI device.
    struct FakeDev<'a> {
        bdf: &'a str,
        vendor: u16,
        device: u16,
        driver: Option<&'a str>,
        /// Group number and whether it is a no-IOMMU group.
        group: Option<(u32, bool)>,
        numa: i32,
    }

    impl Default for FakeDev<'_> {
        fn default() -> Self {
            FakeDev {
                bdf: VF,
                vendor: INTEL,
                device: 0x154c,
                driver: Some("vfio-pci"),
                group: Some((0, true)),
                numa: -1,
            }
        }
    }

    impl Tree {
        fn empty() -> Tree {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "nicpoll-doctor-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Tree { dir }
        }

        fn root(&self) -> &Path {
            &self.dir
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.dir.join(rel.trim_start_matches('/'))
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

        fn rm(&self, rel: &str) -> &Tree {
            let p = self.p(rel);
            if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(p).unwrap();
            } else {
                let _ = fs::remove_file(p);
            }
            self
        }

        fn link(&self, target_rel: &str, rel: &str) -> &Tree {
            let p = self.p(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            let _ = fs::remove_file(&p);
            symlink(self.p(target_rel), p).unwrap();
            self
        }

        fn status(&self, cap_eff: u64, cpus: &str) -> &Tree {
            self.write(
                "proc/self/status",
                &format!(
                    "Name:\ttestpmd\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff:016x}\nCpus_allowed:\tff\nCpus_allowed_list:\t{cpus}\n"
                ),
            )
        }

        fn meminfo(&self, total: u64, free: u64, kib: u64) -> &Tree {
            self.write(
                "proc/meminfo",
                &format!(
                    "MemTotal: 16000000 kB\nHugePages_Total: {total}\nHugePages_Free: {free}\nHugePages_Rsvd: 0\nHugePages_Surp: 0\nHugepagesize: {kib} kB\n"
                ),
            )
        }

        fn pool(&self, kib: u64, total: u64, free: u64) -> &Tree {
            let d = format!("sys/kernel/mm/hugepages/hugepages-{kib}kB");
            self.write(&format!("{d}/nr_hugepages"), &format!("{total}\n"))
                .write(&format!("{d}/free_hugepages"), &format!("{free}\n"))
        }

        fn device(&self, d: &FakeDev<'_>) -> &Tree {
            let dir = format!("sys/bus/pci/devices/{}", d.bdf);
            self.write(&format!("{dir}/vendor"), &format!("0x{:04x}\n", d.vendor))
                .write(&format!("{dir}/device"), &format!("0x{:04x}\n", d.device))
                .write(&format!("{dir}/class"), "0x020000\n")
                .write(&format!("{dir}/numa_node"), &format!("{}\n", d.numa))
                .write(&format!("{dir}/driver_override"), "(null)\n");
            self.rm(&format!("{dir}/driver"))
                .rm(&format!("{dir}/iommu_group"));
            if let Some(drv) = d.driver {
                self.mkdir(&format!("sys/bus/pci/drivers/{drv}")).link(
                    &format!("sys/bus/pci/drivers/{drv}"),
                    &format!("{dir}/driver"),
                );
            }
            if let Some((g, noiommu)) = d.group {
                let gdir = format!("sys/kernel/iommu_groups/{g}");
                self.mkdir(&format!("{gdir}/devices"))
                    .link(&dir, &format!("{gdir}/devices/{}", d.bdf))
                    .link(&gdir, &format!("{dir}/iommu_group"));
                if noiommu {
                    self.write(&format!("{gdir}/name"), "vfio-noiommu\n");
                }
            }
            self
        }

        /// A VM without an IOMMU, set up right: vfio in no-IOMMU mode (and in
        /// modprobe.d), an Intel VF on vfio-pci with its no-IOMMU group node, 1 GiB
        /// default hugepages mounted, every capability, CPUs 2-4 of 0-7 with 3-7
        /// isolated, one NUMA node.
        fn good() -> Tree {
            let t = Tree::empty();
            t.status(0x1ff_ffff_ffff, "2-4")
                .write("proc/sys/kernel/cap_last_cap", "40\n")
                .write("proc/self/uid_map", "         0          0 4294967295\n")
                .write(
                    "proc/cmdline",
                    "BOOT_IMAGE=/vmlinuz ro default_hugepagesz=1G hugepagesz=1G hugepages=8 \
                     isolcpus=managed_irq,domain,3-7 nohz_full=3-7 rcu_nocbs=3-7 -- isolcpus=0\n",
                )
                .meminfo(8, 8, 1048576)
                .pool(1048576, 8, 8)
                .pool(2048, 0, 0)
                .write(
                    "proc/mounts",
                    "/dev/vda1 / ext4 rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=1024M 0 0\n",
                )
                .mkdir("dev/hugepages")
                .write("sys/devices/system/cpu/online", "0-7\n")
                .write("sys/devices/system/node/node0/cpulist", "0-7\n")
                .write(
                    "sys/devices/system/node/node0/hugepages/hugepages-1048576kB/free_hugepages",
                    "8\n",
                )
                .write(NOIOMMU_PARAM, "Y\n")
                .mkdir("sys/module/vfio_pci")
                .write(NOIOMMU_CONF, &format!("# no IOMMU in this VM\n{NOIOMMU_CONF_LINE}\n"))
                .mkdir("sys/class/iommu")
                .write("dev/vfio/vfio", "")
                .write("dev/vfio/noiommu-0", "")
                .device(&FakeDev::default());
            t
        }

        fn checks(&self, env: &Env, allow: &[&str]) -> Vec<Finding> {
            let allow: Vec<PciAddress> = allow.iter().map(|a| a.parse().unwrap()).collect();
            doctor_checks(self.root(), env, &allow)
        }

        /// Doctor with the VF given by -a and no environment.
        fn vf(&self) -> Vec<Finding> {
            self.checks(&Env::new(), &[VF])
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pod() -> Env {
        env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1")])
    }

    #[track_caller]
    fn get<'a>(fs: &'a [Finding], check: &str) -> &'a Finding {
        fs.iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check} in {}", render_text(fs, false)))
    }

    /// Assert a check's status and that its fix (empty for none) contains `fix`.
    #[track_caller]
    fn expect(fs: &[Finding], check: &str, status: Status, fix: &str) -> Finding {
        let f = get(fs, check).clone();
        assert_eq!(f.status, status, "{check}: {f:?}");
        let got = f.fix.clone().unwrap_or_default();
        assert!(
            got.contains(fix),
            "{check}: fix {got:?} lacks {fix:?}; {f:?}"
        );
        f
    }

    // ----- the baseline

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

    // ----- devices

    #[test]
    fn devices_pass_warn_fail() {
        let t = Tree::good();
        let e = env(&[("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK", VF)]);
        let f = expect(&t.checks(&e, &[VF]), "devices", Status::Pass, "");
        assert!(
            f.finding
                .contains("0000:00:07.0 (-a, PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK)"),
            "{f:?}"
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
        let f = expect(
            &t.checks(&bad, &[]),
            "devices",
            Status::Fail,
            "device plugin",
        );
        assert!(f.finding.contains("PCIDEVICE_X_INFO"), "{f:?}");
    }

    // ----- drivers

    #[test]
    fn intel_and_virtio_need_vfio_pci() {
        let t = Tree::good();
        expect(&t.vf(), "driver 0000:00:07.0", Status::Pass, "");
        t.device(&FakeDev {
            driver: Some("iavf"),
            ..FakeDev::default()
        });
        let f = expect(
            &t.vf(),
            "driver 0000:00:07.0",
            Status::Fail,
            "testpmd bind 0000:00:07.0",
        );
        assert!(f.finding.contains("bound to iavf"), "{f:?}");
        t.device(&FakeDev {
            vendor: VIRTIO,
            device: 0x1041,
            driver: None,
            ..FakeDev::default()
        });
        let f = expect(
            &t.vf(),
            "driver 0000:00:07.0",
            Status::Fail,
            "testpmd bind 0000:00:07.0",
        );
        assert!(
            f.finding.contains("virtio 1af4:1041 has no driver"),
            "{f:?}"
        );
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
        let f = expect(&fs, "driver 0000:00:1f.0", Status::Fail, "lspci -D");
        assert!(
            f.finding
                .contains("/sys/bus/pci/devices/0000:00:1f.0 does not exist"),
            "{f:?}"
        );
    }

    #[test]
    fn mellanox_stays_on_mlx5_core_with_an_rdma_device() {
        let t = Tree::good();
        let mlx = FakeDev {
            bdf: "0000:3b:00.2",
            vendor: MELLANOX,
            device: 0x1018,
            driver: Some("mlx5_core"),
            group: Some((5, false)),
            ..FakeDev::default()
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
        let f = expect(&fs, name, Status::Pass, "");
        assert!(f.finding.contains("mlx5_0"), "{f:?}");
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

    // ----- vfio modules

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

    // ----- no-IOMMU

    #[test]
    fn noiommu_mode_and_its_modprobe_file() {
        let t = Tree::good();
        let f = expect(&t.vf(), "vfio-noiommu", Status::Pass, "");
        assert!(
            f.finding
                .contains("/etc/modprobe.d/vfio-noiommu.conf keeps it"),
            "{f:?}"
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
        let f = expect(&t.vf(), "vfio-noiommu", Status::Pass, "");
        assert!(
            f.finding.contains("/usr/lib/modprobe.d/dpdk.conf keeps it"),
            "{f:?}"
        );
        t.rm("usr/lib/modprobe.d/dpdk.conf")
            .write("proc/cmdline", "ro vfio.enable_unsafe_noiommu_mode=1\n");
        let f = expect(&t.vf(), "vfio-noiommu", Status::Pass, "");
        assert!(
            f.finding
                .contains("vfio.enable_unsafe_noiommu_mode=1 on /proc/cmdline"),
            "{f:?}"
        );
        t.write("proc/cmdline", "ro\n");
        // In a pod the file is the host's concern.
        let f = expect(&t.checks(&pod(), &[VF]), "vfio-noiommu", Status::Pass, "");
        assert!(f.finding.contains("host's concern"), "{f:?}");
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
        let f = expect(&fs, "vfio-noiommu", Status::Pass, "");
        assert!(f.finding.contains("IOMMU (dmar0)"), "{f:?}");
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

    // ----- /dev/vfio

    #[test]
    fn vfio_container_node() {
        let t = Tree::good();
        let f = expect(&t.vf(), "vfio-container", Status::Pass, "");
        assert!(
            f.finding
                .contains("/dev/vfio/vfio opens read-write; group nodes noiommu-0"),
            "{f:?}"
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
        let f = expect(
            &t.vf(),
            "vfio-container",
            Status::Fail,
            "ls -l /dev/vfio/vfio",
        );
        assert!(f.finding.contains("cannot be opened read-write"), "{f:?}");
    }

    #[test]
    fn vfio_group_node() {
        let t = Tree::good();
        let name = "vfio-group 0000:00:07.0";
        expect(&t.vf(), name, Status::Pass, "");
        t.rm("dev/vfio/noiommu-0");
        let f = expect(&t.vf(), name, Status::Fail, "testpmd bind 0000:00:07.0");
        assert!(
            f.finding
                .contains("/dev/vfio/noiommu-0, /dev/vfio/0 missing"),
            "{f:?}"
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
        let f = expect(&t.checks(&e, &[]), name, Status::Pass, "");
        assert!(
            f.finding.contains("no-IOMMU group 0: /dev/vfio/0 opens"),
            "{f:?}"
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

    // ----- hugepages

    #[test]
    fn hugepage_counts() {
        let t = Tree::good();
        let f = expect(&t.vf(), "hugepages", Status::Pass, "");
        assert!(
            f.finding
                .contains("HugePages_Total 8, HugePages_Free 8, Hugepagesize 1 GiB"),
            "{f:?}"
        );
        // None reserved at the default size (2 MiB), none anywhere.
        t.meminfo(0, 0, 2048)
            .pool(2048, 0, 0)
            .pool(1048576, 0, 0)
            .write("proc/cmdline", "ro\n");
        let f = expect(
            &t.vf(),
            "hugepages",
            Status::Fail,
            "echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        );
        assert!(f.finding.contains("no hugepages are reserved"), "{f:?}");
        // All in use.
        t.meminfo(64, 0, 2048).pool(2048, 64, 0);
        let f = expect(
            &t.vf(),
            "hugepages",
            Status::Fail,
            "echo 1088 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        );
        assert!(f.finding.contains("all 64 pages are in use"), "{f:?}");
        // 1 GiB default: the command line is the reliable way.
        t.meminfo(0, 0, 1048576)
            .pool(1048576, 0, 0)
            .pool(2048, 0, 0);
        expect(
            &t.vf(),
            "hugepages",
            Status::Fail,
            "default_hugepagesz=1G hugepagesz=1G hugepages=4",
        );
        // Free pages only at a size that is not the default.
        t.meminfo(0, 0, 2048).pool(2048, 0, 0).pool(1048576, 4, 4);
        let f = expect(
            &t.vf(),
            "hugepages",
            Status::Warn,
            "default_hugepagesz=1G hugepagesz=1G",
        );
        assert!(f.finding.contains("1 GiB: 4 total, 4 free"), "{f:?}");
        // No hugetlb in the kernel.
        t.write("proc/meminfo", "MemTotal: 1 kB\n");
        expect(&t.vf(), "hugepages", Status::Fail, "--no-huge");
    }

    #[test]
    fn hugepage_default_size_and_the_command_line() {
        let t = Tree::good();
        let f = expect(&t.vf(), "hugepage-size", Status::Pass, "");
        assert!(
            f.finding.contains("default_hugepagesz=1G on /proc/cmdline")
                && f.finding.contains("hugepages-1Gi"),
            "{f:?}"
        );
        // 1G asked for, but the kernel stayed at 2 MiB (a VM CPU without pdpe1gb).
        t.meminfo(1024, 1024, 2048)
            .pool(2048, 1024, 1024)
            .pool(1048576, 0, 0);
        let f = expect(&t.vf(), "hugepage-size", Status::Fail, "pdpe1gb");
        assert!(f.finding.contains("Hugepagesize is 2 MiB"), "{f:?}");
        t.write("proc/cmdline", "default_hugepagesz=3M\n");
        expect(
            &t.vf(),
            "hugepage-size",
            Status::Fail,
            "default_hugepagesz=1G hugepagesz=1G",
        );
        // 1 GiB pages reserved without making them the default: not schedulable.
        t.write("proc/cmdline", "hugepagesz=1G hugepages=8\n")
            .meminfo(0, 0, 2048)
            .pool(2048, 0, 0)
            .pool(1048576, 8, 8);
        let f = expect(
            &t.vf(),
            "hugepage-size",
            Status::Warn,
            "default_hugepagesz=1G hugepagesz=1G hugepages=8",
        );
        assert!(
            f.finding
                .contains("Kubernetes only schedules the default size"),
            "{f:?}"
        );
        // No default_hugepagesz but 2 MiB pages: fine.
        t.meminfo(512, 512, 2048)
            .pool(2048, 512, 512)
            .pool(1048576, 0, 0);
        let f = expect(&t.vf(), "hugepage-size", Status::Pass, "");
        assert!(f.finding.contains("no default_hugepagesz="), "{f:?}");
    }

    #[test]
    fn hugetlbfs_mounts() {
        let t = Tree::good();
        expect(&t.vf(), "hugetlbfs", Status::Pass, "");
        // Mounted at 2 MiB while the default is 1 GiB.
        t.write(
            "proc/mounts",
            "hugetlbfs /dev/hugepages hugetlbfs rw,pagesize=2M 0 0\n",
        );
        let f = expect(
            &t.vf(),
            "hugetlbfs",
            Status::Warn,
            "mount -t hugetlbfs -o pagesize=1G nodev /dev/hugepages",
        );
        assert!(
            f.finding
                .contains("Kubernetes only schedules the default size"),
            "{f:?}"
        );
        t.write("proc/mounts", "/dev/vda1 / ext4 rw 0 0\n");
        expect(
            &t.vf(),
            "hugetlbfs",
            Status::Fail,
            "mount -t hugetlbfs nodev /dev/hugepages",
        );
        expect(
            &t.checks(&pod(), &[VF]),
            "hugetlbfs",
            Status::Fail,
            "emptyDir: {medium: HugePages}",
        );
    }

    // ----- capabilities

    fn all_but(caps: &[u32]) -> u64 {
        caps.iter().fold(0x1ff_ffff_ffff, |e, c| e & !(1u64 << c))
    }

    #[test]
    fn capabilities_needed_for_no_iommu_vfio() {
        let t = Tree::good();
        for cap in ["IPC_LOCK", "SYS_RAWIO", "NET_RAW", "SYS_ADMIN"] {
            expect(&t.vf(), &format!("capability {cap}"), Status::Pass, "");
        }
        t.status(
            all_but(&[CAP_IPC_LOCK, CAP_SYS_RAWIO, CAP_SYS_ADMIN, CAP_NET_RAW]),
            "2-4",
        );
        let fs = t.vf();
        for cap in ["IPC_LOCK", "SYS_RAWIO", "SYS_ADMIN"] {
            expect(
                &fs,
                &format!("capability {cap}"),
                Status::Fail,
                &format!("capabilities: add: [\"{cap}\"]"),
            );
        }
        // NET_RAW is for mlx5 and af_packet, not this VF.
        expect(&fs, "capability NET_RAW", Status::Pass, "");
        // Without a device: what a device would need is a warning.
        let fs = t.checks(&Env::new(), &[]);
        expect(&fs, "capability SYS_RAWIO", Status::Warn, "SYS_RAWIO");
        expect(&fs, "capability NET_RAW", Status::Warn, "NET_RAW");
        expect(&fs, "capability IPC_LOCK", Status::Fail, "IPC_LOCK");
        // RLIMIT_MEMLOCK unlimited does what IPC_LOCK would.
        t.write(
            "proc/self/limits",
            "Limit                     Soft Limit           Hard Limit           Units\nMax locked memory         unlimited            unlimited            bytes\n",
        );
        expect(&t.vf(), "capability IPC_LOCK", Status::Pass, "");
    }

    #[test]
    fn capabilities_for_mlx5_and_user_namespaces() {
        let t = Tree::good();
        t.device(&FakeDev {
            bdf: "0000:3b:00.2",
            vendor: MELLANOX,
            device: 0x1018,
            driver: Some("mlx5_core"),
            group: None,
            ..FakeDev::default()
        });
        t.status(all_but(&[CAP_NET_RAW]), "2-4");
        expect(
            &t.checks(&Env::new(), &["3b:00.2"]),
            "capability NET_RAW",
            Status::Fail,
            r#"add: ["NET_RAW"]"#,
        );
        // Capabilities of a rootless container's user namespace do not count.
        let t = Tree::good();
        t.write("proc/self/uid_map", "0 100000 65536\n");
        let fs = t.vf();
        expect(&fs, "capability SYS_RAWIO", Status::Fail, "rootful");
        expect(&fs, "capability NET_RAW", Status::Pass, "");
        t.rm("proc/self/status");
        expect(&t.vf(), "capability IPC_LOCK", Status::Warn, "");
    }

    #[test]
    fn privileged_container() {
        let t = Tree::good();
        let f = expect(&t.vf(), "privileged", Status::Pass, "");
        assert!(f.finding.contains("all capabilities 0-40"), "{f:?}");
        // This sandbox's set: everything but SYS_RESOURCE (24).
        t.status(all_but(&[24]), "2-4");
        let f = expect(&t.vf(), "privileged", Status::Warn, "privileged: true");
        assert!(f.finding.contains("000001fffeffffff"), "{f:?}");
        // cap_last_cap decides what "all" is.
        t.status(0xff_ffff_ffff, "2-4")
            .write("proc/sys/kernel/cap_last_cap", "39\n");
        expect(&t.vf(), "privileged", Status::Pass, "");
        t.rm("proc/self/status");
        expect(&t.vf(), "privileged", Status::Warn, "");
    }

    // ----- CPUs

    #[test]
    fn cpu_set() {
        let t = Tree::good();
        let f = expect(&t.vf(), "cpu-set", Status::Pass, "");
        assert!(
            f.finding
                .contains("CPUs 2-4 (Cpus_allowed_list) of 8 online (0-7)"),
            "{f:?}"
        );
        assert!(
            f.finding.contains("within isolcpus=managed_irq,domain,3-7"),
            "{f:?}"
        );
        t.status(0x1ff_ffff_ffff, "0-7");
        let f = expect(
            &t.vf(),
            "cpu-set",
            Status::Warn,
            "static CPU manager policy",
        );
        assert!(f.finding.contains("every online CPU"), "{f:?}");
        t.status(0x1ff_ffff_ffff, "1-3");
        let f = expect(&t.vf(), "cpu-set", Status::Warn, "Guaranteed QoS");
        assert!(
            f.finding.contains("forwarding CPUs 2 are outside isolcpus"),
            "{f:?}"
        );
        t.status(0x1ff_ffff_ffff, "5");
        expect(
            &t.checks(&pod(), &[VF]),
            "cpu-set",
            Status::Fail,
            "cpu: \"2\"",
        );
        t.status(0x1ff_ffff_ffff, "2-4")
            .rm("sys/devices/system/cpu/online");
        let f = expect(&t.vf(), "cpu-set", Status::Warn, "");
        assert!(
            f.finding.contains("cannot tell whether they are exclusive"),
            "{f:?}"
        );
        t.write("sys/devices/system/cpu/online", "0-7\n");
        // No Cpus_allowed_list: the cgroup v2 cpuset.
        t.write("proc/self/status", "CapEff:\t000001ffffffffff\n")
            .write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
            .write(
                "sys/fs/cgroup/kubepods/pod1/ctr/cpuset.cpus.effective",
                "4-6\n",
            );
        let f = expect(&t.vf(), "cpu-set", Status::Pass, "");
        assert!(
            f.finding
                .contains("CPUs 4-6 (/sys/fs/cgroup/kubepods/pod1/ctr/cpuset.cpus.effective)"),
            "{f:?}"
        );
    }

    #[test]
    fn cpu_isolation() {
        let t = Tree::good();
        let f = expect(&t.vf(), "cpu-isolation", Status::Pass, "");
        assert!(
            f.finding.contains("forwarding CPUs 3-4 are isolated"),
            "{f:?}"
        );
        // nohz_full alone covers both (it implies rcu_nocbs).
        t.write("proc/cmdline", "default_hugepagesz=1G nohz_full=3-4\n");
        expect(&t.vf(), "cpu-isolation", Status::Pass, "");
        t.write("proc/cmdline", "default_hugepagesz=1G isolcpus=3-4\n");
        let f = expect(&t.vf(), "cpu-isolation", Status::Warn, "rcu_nocbs=3-4");
        assert!(f.finding.contains("not in rcu_nocbs"), "{f:?}");
        t.write("proc/cmdline", "default_hugepagesz=1G\n");
        let f = expect(
            &t.vf(),
            "cpu-isolation",
            Status::Warn,
            "isolcpus=3-4 nohz_full=3-4 rcu_nocbs=3-4 on the kernel command line",
        );
        assert!(
            f.finding
                .contains("no isolcpus, no nohz_full, no rcu_nocbs"),
            "{f:?}"
        );
        expect(
            &t.checks(&pod(), &[VF]),
            "cpu-isolation",
            Status::Warn,
            "on the node's kernel command line",
        );
    }

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_kernel_cpus("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_kernel_cpus("\n"), Some(vec![]));
        assert_eq!(parse_kernel_cpus("200-201"), Some(vec![200, 201]));
        assert_eq!(parse_kernel_cpus("3-1"), None);
        assert_eq!(parse_kernel_cpus("x"), None);
        assert_eq!(
            parse_isolcpus("managed_irq,domain,2-3,6"),
            Some(vec![2, 3, 6])
        );
        assert_eq!(parse_isolcpus("nohz,1"), Some(vec![1]));
    }

    // ----- NUMA

    #[test]
    fn numa_locality() {
        let t = Tree::good();
        let name = "numa 0000:00:07.0";
        let f = expect(&t.vf(), name, Status::Pass, "");
        assert!(f.finding.contains("no NUMA node"), "{f:?}");
        // Two nodes: CPUs 0-3 and 4-7, device on node 1, hugepages on node 0.
        t.status(0x1ff_ffff_ffff, "1-3")
            .write("sys/devices/system/node/node0/cpulist", "0-3\n")
            .write("sys/devices/system/node/node1/cpulist", "4-7\n")
            .write(
                "sys/devices/system/node/node1/hugepages/hugepages-1048576kB/free_hugepages",
                "0\n",
            )
            .device(&FakeDev {
                numa: 1,
                ..FakeDev::default()
            });
        let f = expect(&t.vf(), name, Status::Warn, "single-numa-node");
        assert!(
            f.finding
                .contains("device on node 1; our CPUs on node(s) 0; free hugepages on node(s) 0"),
            "{f:?}"
        );
        assert!(
            f.fix.as_deref().unwrap().contains(
                "/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages"
            )
        );
        t.status(0x1ff_ffff_ffff, "4-6").write(
            "sys/devices/system/node/node1/hugepages/hugepages-1048576kB/free_hugepages",
            "4\n",
        );
        let f = expect(&t.vf(), name, Status::Pass, "");
        assert!(f.finding.contains("local"), "{f:?}");
    }

    // ----- VF settings

    #[test]
    fn vf_trust_and_spoof_checking() {
        let t = Tree::good();
        let name = "vf-trust 0000:00:07.0";
        let f = expect(
            &t.vf(),
            name,
            Status::Warn,
            "on the hypervisor: ip link set PF vf N spoofchk off trust on",
        );
        assert!(f.finding.contains("cannot be seen"), "{f:?}");
        // On the host: the VF's PF and index.
        t.device(&FakeDev {
            bdf: "0000:3b:00.0",
            driver: Some("i40e"),
            group: Some((40, false)),
            ..FakeDev::default()
        })
        .mkdir("sys/bus/pci/devices/0000:3b:00.0/net/ens1f0")
        .link(
            "sys/bus/pci/devices/0000:3b:00.0",
            &format!("sys/bus/pci/devices/{VF}/physfn"),
        )
        .link(
            &format!("sys/bus/pci/devices/{VF}"),
            "sys/bus/pci/devices/0000:3b:00.0/virtfn2",
        )
        .write("sys/bus/pci/devices/0000:3b:00.0/sriov_totalvfs", "64\n");
        let f = expect(
            &t.vf(),
            name,
            Status::Warn,
            "ip link set ens1f0 vf 2 spoofchk off trust on",
        );
        assert!(
            f.finding
                .contains("`ip link show ens1f0` should list `vf 2 ... spoof checking off"),
            "{f:?}"
        );
        // A PF, and virtio, have no VF settings.
        expect(
            &t.checks(&Env::new(), &["3b:00.0"]),
            "vf-trust 0000:3b:00.0",
            Status::Pass,
            "",
        );
        let t = Tree::good();
        t.device(&FakeDev {
            vendor: VIRTIO,
            device: 0x1041,
            ..FakeDev::default()
        });
        expect(&t.vf(), name, Status::Pass, "");
    }

    // ----- start_checks

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
        let f = expect(&fs, "hugetlbfs", Status::Fail, "mount -t hugetlbfs");
        assert!(f.finding.contains("--huge-dir /tmp"), "{f:?}");
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
        t.device(&FakeDev {
            bdf: "0000:3b:00.2",
            vendor: MELLANOX,
            device: 0x1018,
            driver: Some("mlx5_core"),
            group: None,
            ..FakeDev::default()
        });
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

    // ----- command line and output

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
    fn arguments_parse() {
        let o = parse_args(
            &[
                "-a",
                "00:07.0",
                "--allow=0000:00:08.0",
                "-a0000:00:09.0",
                "--allow",
                "00:0a.0,foo=1",
                "--json",
                "--brief",
                "--root=/x",
            ]
            .map(String::from),
        )
        .unwrap();
        let a: Vec<String> = o.allow.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            a,
            [
                "0000:00:07.0",
                "0000:00:08.0",
                "0000:00:09.0",
                "0000:00:0a.0"
            ]
        );
        assert!(o.json && o.brief && o.root == Some(PathBuf::from("/x")));
        for (bad, says) in [
            (&["-a", "eth0"][..], "-a \"eth0\""),
            (&["-a"][..], "-a needs a value"),
            (&["--root"][..], "--root needs a value"),
            (&["--verbose"][..], "unknown option \"--verbose\""),
            (&["0000:00:07.0"][..], "give devices with -a BDF"),
        ] {
            let e = parse_args(&bad.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
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
