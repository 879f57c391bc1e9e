//! Entrypoint mode: inside a pod, with no device on the command line, testpmd
//! takes what the pod was given — the devices from the SR-IOV device plugin's
//! `PCIDEVICE_*` variables (and their `_INFO` JSON), the cores from the
//! container's cpuset, the hugepage directory and size from the mounts — and
//! prints the configuration it derived before it starts. The pod's entrypoint
//! (`pod/entrypoint.sh`) says it runs testpmd with `NICPOLL_ENTRYPOINT=1`; then
//! software ports from `NICPOLL_EAL_ARGS` (`--vdev`) join the plugin's devices
//! and the cores and hugepages are still the pod's.
//!
//! Everything here reads a filesystem root (`NICPOLL_ROOT`, default `/`) and an
//! environment given as a map, so tests fake a whole pod.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nicpoll::lcore::{self, LcoreSet};
use nicpoll::memory::hugepage;
use nicpoll::pci::PciAddress;

use crate::device_plugin::DevicePluginEnv;

/// What entrypoint mode derived, for the run and for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// Devices, in resource order, with the resource each came from.
    pub devices: Vec<(String, PciAddress)>,
    /// Software ports (`--vdev`) the entrypoint's `NICPOLL_EAL_ARGS` added.
    pub vdevs: Vec<String>,
    /// The cores: the cpuset, first one the main lcore.
    pub cpus: Vec<usize>,
    /// Where the cpus came from.
    pub cpus_source: String,
    /// The hugetlbfs directory chosen and its page size, if hugepages are mounted.
    pub hugepages: Option<(PathBuf, String)>,
}

impl Derived {
    /// The lines printed before the start.
    pub fn describe(&self) -> String {
        let mut s = String::from("Entrypoint mode: configuration derived from the pod\n");
        if self.devices.is_empty() {
            s += "  devices: none in PCIDEVICE_* variables\n";
        }
        for (res, a) in &self.devices {
            s += &format!("  device {a} from {res}\n");
        }
        for v in &self.vdevs {
            s += &format!("  port --vdev {v} from the command line (NICPOLL_EAL_ARGS)\n");
        }
        s += &format!(
            "  cores: {} from {} (main lcore {}, forwarding {})\n",
            lcore::format_cpu_list(&self.cpus),
            self.cpus_source,
            self.cpus.first().map_or("-".to_string(), |c| c.to_string()),
            if self.cpus.len() > 1 {
                lcore::format_cpu_list(&self.cpus[1..])
            } else {
                "none".into()
            }
        );
        match &self.hugepages {
            Some((dir, size)) => s += &format!("  hugepages: {size} pages at {}\n", dir.display()),
            None => s += "  hugepages: none mounted (plain memory will be refused for devices)\n",
        }
        s
    }

    /// The lcore set: every derived CPU, lcore id = CPU number.
    pub fn lcores(&self) -> LcoreSet {
        LcoreSet::from_cpus(&self.cpus)
    }
}

/// The variable the pod's entrypoint sets when it runs testpmd in entrypoint mode.
pub const ENTRYPOINT_VAR: &str = "NICPOLL_ENTRYPOINT";

/// Whether the pod's entrypoint script runs us (`NICPOLL_ENTRYPOINT=1`).
pub fn run_by_entrypoint(vars: &BTreeMap<String, String>) -> bool {
    vars.get(ENTRYPOINT_VAR).is_some_and(|v| v.trim() == "1")
}

/// The error of entrypoint mode when the pod gave no device and
/// `NICPOLL_EAL_ARGS` adds no port: restarting cannot fix it, so it says what to
/// change in the pod.
pub fn no_devices_message(derived: &Derived) -> String {
    format!(
        "entrypoint mode: no devices: no PCIDEVICE_* variable names a PCI device, so the SR-IOV \
         device plugin gave this container none, and NICPOLL_EAL_ARGS adds no --vdev port.\n\
         The fix: request the plugin's resources in the container's resources.requests and \
         limits (e.g. openshift.io/intelnics_radio_uplink: \"1\") on a node whose device plugin \
         advertises them (kubectl describe node: Allocatable); or, without devices, give software \
         ports: NICPOLL_EAL_ARGS=\"--vdev net_null0 --vdev net_null1\".\n\
         What the pod gave:\n{}",
        derived.describe().trim_end()
    )
}

/// The filesystem root for pod facts: `NICPOLL_ROOT` or `/`.
pub fn root_from_env() -> PathBuf {
    std::env::var_os("NICPOLL_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Our cgroup v2 `cpuset.cpus.effective`, if the cgroup filesystem shows it.
pub fn cgroup_cpus(root: &Path) -> Option<Vec<usize>> {
    let cg = std::fs::read_to_string(root.join("proc/self/cgroup")).ok()?;
    // cgroup v2: a single line "0::/path".
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let rel = path.trim_start_matches('/');
    let file = root
        .join("sys/fs/cgroup")
        .join(rel)
        .join("cpuset.cpus.effective");
    let text = std::fs::read_to_string(file).ok()?;
    lcore::parse_cpu_list(text.trim(), "cpuset.cpus.effective").ok()
}

/// The cores of the container: the CPUs both sched_getaffinity (`allowed`) and
/// the cgroup cpuset allow (each alone when the other is unknown).
pub fn container_cpus(root: &Path, allowed: &[usize]) -> (Vec<usize>, String) {
    match cgroup_cpus(root) {
        Some(cg) if !allowed.is_empty() => {
            let both: Vec<usize> = allowed.iter().copied().filter(|c| cg.contains(c)).collect();
            if both.is_empty() {
                (
                    allowed.to_vec(),
                    "sched_getaffinity (the cgroup cpuset shares none of them)".into(),
                )
            } else {
                (
                    both,
                    "the container's cpuset (sched_getaffinity and cgroup cpuset.cpus.effective)"
                        .into(),
                )
            }
        }
        Some(cg) => (cg, "cgroup cpuset.cpus.effective".into()),
        None => (allowed.to_vec(), "sched_getaffinity".into()),
    }
}

/// The hugetlbfs mount to use: the one at the default page size (Kubernetes
/// schedules only that size), /dev/hugepages first.
pub fn hugepage_dir(root: &Path) -> Option<(PathBuf, String)> {
    let mounts = hugepage::mounts_in(root).ok()?;
    let default = hugepage::meminfo_in(root).ok().and_then(|m| m.default_size);
    let pick = mounts
        .iter()
        .filter(|m| default.is_none_or(|d| m.page_size == d))
        .min_by_key(|m| m.path != Path::new("/dev/hugepages"))
        .or_else(|| mounts.first())?;
    // The mount table is read below `root` (a fake tree in tests); the path the
    // process uses is the one under `/`.
    let path = match pick.path.strip_prefix(root) {
        Ok(rel) if root != Path::new("/") => Path::new("/").join(rel),
        _ => pick.path.clone(),
    };
    Some((path, pick.page_size.to_string()))
}

/// Derive the configuration from the environment and the root.
pub fn derive(
    vars: &BTreeMap<String, String>,
    root: &Path,
    allowed_cpus: &[usize],
) -> Result<Derived, String> {
    let env = DevicePluginEnv::from_vars(vars.iter()).map_err(|e| e.to_string())?;
    let devices = env
        .devices()
        .into_iter()
        .map(|(var, d)| (var.to_string(), d.address))
        .collect();
    let (cpus, cpus_source) = container_cpus(root, allowed_cpus);
    if cpus.is_empty() {
        return Err("the container's cpuset is empty or unreadable".into());
    }
    Ok(Derived {
        devices,
        vdevs: Vec::new(),
        cpus,
        cpus_source,
        hugepages: hugepage_dir(root),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn fake_pod() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "proc/self/cgroup", "0::/kubepods/pod1/ctr\n");
        write(
            r,
            "sys/fs/cgroup/kubepods/pod1/ctr/cpuset.cpus.effective",
            "2-4\n",
        );
        write(
            r,
            "proc/mounts",
            "hugetlbfs /mnt/huge2m hugetlbfs rw,relatime,pagesize=2M 0 0\n\
             hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=1024M 0 0\n",
        );
        write(
            r,
            "proc/meminfo",
            "HugePages_Total:       4\nHugePages_Free:        4\nHugepagesize:    1048576 kB\n",
        );
        d
    }

    #[test]
    fn a_fake_pod_gives_devices_cores_and_hugepages() {
        let pod = fake_pod();
        let vars: BTreeMap<String, String> = [
            ("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_DOWNLINK", "0000:00:09.0"),
            ("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK", "0000:00:07.0,0000:00:08.0"),
            (
                "PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK_INFO",
                r#"{"0000:00:07.0":{"vfio":{"vfio-dev-mount":"/dev/vfio/3","vfio-mount":"/dev/vfio/vfio"}},"0000:00:08.0":{"vfio":{"vfio-dev-mount":"/dev/vfio/4","vfio-mount":"/dev/vfio/vfio"}}}"#,
            ),
            ("HOME", "/root"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // sched_getaffinity allows 0-7; the cpuset narrows to 2-4.
        let d = derive(&vars, pod.path(), &(0..8).collect::<Vec<_>>()).unwrap();
        let addrs: Vec<String> = d.devices.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(addrs.len(), 3);
        for a in ["0000:00:09.0", "0000:00:07.0", "0000:00:08.0"] {
            assert!(addrs.contains(&a.to_string()), "{addrs:?}");
        }
        assert_eq!(d.cpus, vec![2, 3, 4]);
        assert_eq!(d.lcores().main, 2);
        assert_eq!(
            d.hugepages,
            Some((PathBuf::from("/dev/hugepages"), "1 GiB".to_string()))
        );
        let text = d.describe();
        assert!(
            text.contains("device 0000:00:07.0 from PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK"),
            "{text}"
        );
        assert!(text.contains("cores: 2-4"), "{text}");
        assert!(text.contains("main lcore 2, forwarding 3-4"), "{text}");
    }

    #[test]
    fn without_cgroup_the_affinity_counts_and_bad_json_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let (cpus, src) = container_cpus(d.path(), &[1, 3]);
        assert_eq!((cpus, src.as_str()), (vec![1, 3], "sched_getaffinity"));
        assert!(hugepage_dir(d.path()).is_none());
        let vars: BTreeMap<String, String> = [
            ("PCIDEVICE_INTEL_COM_X", "0000:00:07.0"),
            ("PCIDEVICE_INTEL_COM_X_INFO", "{not json"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let e = derive(&vars, d.path(), &[0, 1]).unwrap_err();
        assert!(e.contains("PCIDEVICE_INTEL_COM_X_INFO"), "{e}");
    }

    #[test]
    fn software_ports_of_the_entrypoint_are_described_and_no_port_is_a_clear_error() {
        let pod = fake_pod();
        let vars: BTreeMap<String, String> = [(ENTRYPOINT_VAR, "1"), ("HOME", "/root")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(run_by_entrypoint(&vars));
        assert!(!run_by_entrypoint(&BTreeMap::new()));
        let mut d = derive(&vars, pod.path(), &(0..8).collect::<Vec<_>>()).unwrap();
        assert!(d.devices.is_empty());
        let e = no_devices_message(&d);
        assert!(e.starts_with("entrypoint mode: no devices:"), "{e}");
        assert!(e.contains("resources.requests"), "{e}");
        assert!(e.contains("NICPOLL_EAL_ARGS="), "{e}");
        assert!(e.contains("cores: 2-4"), "the derived configuration: {e}");
        d.vdevs = vec!["net_null0".into(), "net_ring0,peer=net_ring1".into()];
        let text = d.describe();
        assert!(
            text.contains("devices: none in PCIDEVICE_* variables"),
            "{text}"
        );
        assert!(
            text.contains(
                "port --vdev net_ring0,peer=net_ring1 from the command line (NICPOLL_EAL_ARGS)"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_default_hugepage_size_wins_over_other_mounts() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "proc/mounts",
            "hugetlbfs /mnt/a hugetlbfs rw,pagesize=1G 0 0\nhugetlbfs /mnt/b hugetlbfs rw,pagesize=2M 0 0\n",
        );
        write(d.path(), "proc/meminfo", "Hugepagesize:       2048 kB\n");
        assert_eq!(
            hugepage_dir(d.path()),
            Some((PathBuf::from("/mnt/b"), "2 MiB".to_string()))
        );
    }
}
