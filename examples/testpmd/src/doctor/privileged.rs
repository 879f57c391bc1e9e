//! `privileged`: whether the container runs privileged (Kubernetes'
//! `securityContext.privileged: true`), as the no-IOMMU guide asks of a pod
//! driving vfio-pci devices (writable /sys, every /dev/vfio node).
//!
//! A full capability mask does not tell: a privileged container gets the
//! runtime's whole bounding set, which is short wherever the machine's is (a
//! VM or sandbox without CAP_SYS_RESOURCE), and `capabilities: add: [ALL]`
//! gives the same mask without privilege. What privilege gives, and an
//! unprivileged container lacks, is judged by three things together:
//!
//! - no seccomp filter (`Seccomp: 0` in /proc/self/status; the runtime's
//!   default profile is mode 2);
//! - the machine's devices in /dev: the block and character devices sysfs lists
//!   (`/sys/dev/{block,char}/MAJ:MIN/uevent`, `DEVNAME=`; sysfs shows the
//!   machine's, not the container's), outside the few every container gets, have
//!   their nodes in our /dev;
//! - the bounding set (CapBnd) holds PID 1's (the host's init on a host; in a
//!   container, the set the runtime gave it), or every capability up to
//!   cap_last_cap when PID 1 cannot be read, and CAP_SYS_ADMIN, which no runtime
//!   gives an unprivileged container by default.

use super::caps::CAP_SYS_ADMIN;
use super::host::Host;
use super::scope::{Need, Scope};
use super::{Finding, Status};

/// Capability names by number (include/uapi/linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Device nodes every container has (the OCI runtime spec's default devices),
/// and the directories a device plugin mounts single nodes into.
const CONTAINER_DEVICES: [&str; 8] = [
    "null", "zero", "full", "random", "urandom", "tty", "console", "ptmx",
];
const PLUGIN_DIRS: [&str; 3] = ["pts/", "vfio/", "infiniband/"];

fn cap_name(bit: u32) -> String {
    CAP_NAMES
        .get(bit as usize)
        .map_or(format!("capability {bit}"), |n| format!("CAP_{n}"))
}

/// The capabilities set in `mask`, by name.
fn cap_list(mask: u64) -> String {
    let names: Vec<String> = (0..64)
        .filter(|b| mask & (1u64 << b) != 0)
        .map(cap_name)
        .collect();
    names.join(", ")
}

fn hex_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key)
            .then(|| u64::from_str_radix(v.trim(), 16).ok())
            .flatten()
    })
}

/// What the three tests found.
struct Privilege {
    /// `Seccomp:` of /proc/self/status (None: no such line, a kernel without seccomp).
    seccomp: Option<u32>,
    /// The machine's devices (outside the container defaults) and how many are in /dev.
    devices_total: usize,
    devices_seen: usize,
    /// Our bounding set, and what it is held against (PID 1's, or the full set).
    bounding: u64,
    reference: u64,
    reference_is_pid1: bool,
    /// Every capability the kernel has (0-cap_last_cap).
    full: u64,
}

impl Privilege {
    fn read(host: &Host<'_>) -> Option<Privilege> {
        let status = host.read("/proc/self/status")?;
        let bounding = hex_field(&status, "CapBnd")?;
        let seccomp = status.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "Seccomp")
                .then(|| v.trim().parse().ok())
                .flatten()
        });
        let last = host
            .read_trimmed("/proc/sys/kernel/cap_last_cap")
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(40)
            .min(63);
        let full = if last == 63 {
            u64::MAX
        } else {
            (1u64 << (last + 1)) - 1
        };
        let pid1 = host
            .read("/proc/1/status")
            .and_then(|t| hex_field(&t, "CapBnd"));
        let (mut devices_total, mut devices_seen) = (0, 0);
        for kind in ["block", "char"] {
            for entry in host.list(&format!("/sys/dev/{kind}")) {
                let Some(uevent) = host.read(&format!("/sys/dev/{kind}/{entry}/uevent")) else {
                    continue;
                };
                let Some(name) = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME=")) else {
                    continue;
                };
                if CONTAINER_DEVICES.contains(&name)
                    || PLUGIN_DIRS.iter().any(|d| name.starts_with(d))
                {
                    continue;
                }
                devices_total += 1;
                if host.path(format!("/dev/{name}")).exists() {
                    devices_seen += 1;
                }
            }
        }
        Some(Privilege {
            seccomp,
            devices_total,
            devices_seen,
            bounding,
            reference: pid1.unwrap_or(full),
            reference_is_pid1: pid1.is_some(),
            full,
        })
    }

    fn no_seccomp(&self) -> bool {
        self.seccomp.is_none_or(|m| m == 0)
    }

    /// Most of the machine's devices are in /dev (some have no node even on
    /// the machine); unknown (true) when sysfs lists none.
    fn host_devices(&self) -> bool {
        self.devices_total == 0 || self.devices_seen * 2 >= self.devices_total
    }

    fn full_bounding_set(&self) -> bool {
        self.bounding & self.reference == self.reference
            && self.bounding & (1u64 << CAP_SYS_ADMIN) != 0
    }

    fn privileged(&self) -> bool {
        self.no_seccomp() && self.host_devices() && self.full_bounding_set()
    }

    fn devices_text(&self) -> String {
        if self.devices_total == 0 {
            "cannot tell whether the machine's devices are in /dev (/sys/dev lists none)".into()
        } else {
            format!(
                "{} of the machine's {} devices in /dev",
                self.devices_seen, self.devices_total
            )
        }
    }

    fn reference_text(&self) -> &'static str {
        if self.reference_is_pid1 {
            "PID 1's"
        } else {
            "every capability the kernel has"
        }
    }

    /// Why it counts as privileged, or what is missing.
    fn describe(&self) -> String {
        if self.privileged() {
            let withheld = self.full & !self.bounding;
            let short = if withheld == 0 {
                String::new()
            } else {
                format!(
                    "; the machine withholds {} from every process, so no container gets it",
                    cap_list(withheld)
                )
            };
            return format!(
                "no seccomp filter, {}, bounding set {:016x} holds {}{short}",
                self.devices_text(),
                self.bounding,
                self.reference_text()
            );
        }
        let mut missing = Vec::new();
        if !self.no_seccomp() {
            missing.push(format!(
                "a seccomp filter is on (Seccomp: {})",
                self.seccomp.unwrap_or(0)
            ));
        }
        if !self.host_devices() {
            missing.push(self.devices_text());
        }
        if !self.full_bounding_set() {
            let lacks = self.reference & !self.bounding;
            let admin = 1u64 << CAP_SYS_ADMIN;
            if lacks != 0 {
                missing.push(format!(
                    "bounding set {:016x} lacks {} of {}",
                    self.bounding,
                    cap_list(lacks),
                    self.reference_text()
                ));
            }
            if self.bounding & admin == 0 && lacks & admin == 0 {
                missing.push(format!(
                    "bounding set {:016x} lacks CAP_SYS_ADMIN (a runtime gives it only to privileged containers)",
                    self.bounding
                ));
            }
        }
        missing.join("; ")
    }
}

/// The `privileged` check: a warning only where the run needs privilege
/// (no-IOMMU VFIO); elsewhere a note.
pub(super) fn check_privileged(host: &Host<'_>, scope: &Scope) -> Finding {
    const NAME: &str = "privileged";
    let Some(p) = Privilege::read(host) else {
        return Finding::new(
            NAME,
            Status::Warn,
            "cannot tell: no CapBnd line in /proc/self/status",
        );
    };
    let what = if host.in_pod {
        "a privileged container"
    } else {
        "privileged (root on the host, or a privileged container)"
    };
    if p.privileged() {
        return Finding::pass(NAME, format!("{what}: {}", p.describe()));
    }
    if scope.noiommu == Need::Yes {
        return Finding::new(
            NAME,
            Status::Warn,
            format!(
                "not privileged: {}. No-IOMMU VFIO with vfio-pci runs in a privileged pod (the \
                 capabilities above are the minimum; /sys stays read-only without it)",
                p.describe()
            ),
        )
        .fix(
            "securityContext: privileged: true (with capabilities: add: [\"IPC_LOCK\", \"SYS_RAWIO\"])",
        );
    }
    Finding::pass(
        NAME,
        format!(
            "not privileged: {}; not needed here (VFIO with an IOMMU and mlx5 need only the capabilities above)",
            p.describe()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Env;
    use crate::doctor::testing::*;

    /// All 41 capabilities of a 6.x kernel.
    const FULL: u64 = 0x1ff_ffff_ffff;
    /// A machine's set without CAP_SYS_RESOURCE (24), as in a sandboxed VM.
    const SHORT: u64 = FULL & !(1 << 24);
    /// podman's default set for an unprivileged container.
    const DEFAULT_CONTAINER: u64 = 0xa804_25fb;

    /// /proc/self/status and /proc/1/status with these sets and seccomp mode.
    fn process(t: &Tree, bounding: u64, pid1_bounding: u64, seccomp: u32) {
        t.write(
            "proc/self/status",
            &format!(
                "Name:\ttestpmd\nCapInh:\t0000000000000000\nCapPrm:\t{bounding:016x}\n\
                 CapEff:\t{bounding:016x}\nCapBnd:\t{bounding:016x}\nNoNewPrivs:\t0\n\
                 Seccomp:\t{seccomp}\nSeccomp_filters:\t{}\nCpus_allowed_list:\t2-4\n",
                u32::from(seccomp != 0)
            ),
        )
        .write(
            "proc/1/status",
            &format!("Name:\tinit\nCapBnd:\t{pid1_bounding:016x}\n"),
        );
    }

    /// The machine's devices in sysfs: a disk, a loop device, a console tty,
    /// and /dev/null (which every container has).
    fn machine_devices(t: &Tree) {
        for (kind, id, name) in [
            ("block", "253:0", "vda"),
            ("block", "7:0", "loop0"),
            ("char", "4:1", "tty1"),
            ("char", "1:3", "null"),
        ] {
            t.write(
                &format!("sys/dev/{kind}/{id}/uevent"),
                &format!("MAJOR=1\nMINOR=3\nDEVNAME={name}\n"),
            );
        }
    }

    fn dev_nodes(t: &Tree, names: &[&str]) {
        for n in names {
            t.write(&format!("dev/{n}"), "");
        }
    }

    #[test]
    fn a_privileged_container_on_a_machine_with_a_short_bounding_set() {
        // podman --privileged on this project's VM: CapBnd 000001fffeffffff,
        // no seccomp, the machine's /dev.
        let t = Tree::good();
        process(&t, SHORT, SHORT, 0);
        machine_devices(&t);
        dev_nodes(&t, &["vda", "loop0", "tty1", "null"]);
        t.write(".dockerenv", "");
        let f = expect(&t.vf(), "privileged", Status::Pass, "");
        assert!(
            f.finding.starts_with(
                "a privileged container: no seccomp filter, 3 of the machine's 3 devices in /dev"
            ),
            "{f:?}"
        );
        assert!(
            f.finding.contains("000001fffeffffff holds PID 1's"),
            "{f:?}"
        );
        assert!(f.finding.contains("withholds CAP_SYS_RESOURCE"), "{f:?}");
    }

    #[test]
    fn root_on_a_host_whose_bounding_set_is_short() {
        // No container: init's set is the machine's, ours equals it.
        let t = Tree::good();
        process(&t, SHORT, SHORT, 0);
        machine_devices(&t);
        dev_nodes(&t, &["vda", "loop0", "tty1", "null"]);
        let f = expect(&t.vf(), "privileged", Status::Pass, "");
        assert!(
            f.finding.starts_with("privileged (root on the host"),
            "{f:?}"
        );
        // A process whose bounding set was narrowed below init's is not.
        process(&t, SHORT & !(1 << CAP_SYS_ADMIN), SHORT, 0);
        expect_saying(
            &t.vf(),
            "privileged",
            Status::Warn,
            "privileged: true",
            "lacks CAP_SYS_ADMIN of PID 1's",
        );
        // Without /proc/1, the reference is every capability the kernel has.
        process(&t, SHORT, SHORT, 0);
        t.rm("proc/1/status");
        expect_saying(
            &t.vf(),
            "privileged",
            Status::Warn,
            "",
            "lacks CAP_SYS_RESOURCE of every capability the kernel has",
        );
    }

    #[test]
    fn an_unprivileged_container_is_not_privileged_even_with_every_capability() {
        let t = Tree::good();
        machine_devices(&t);
        t.rm("dev/vda");
        dev_nodes(&t, &["null"]);
        t.write(".dockerenv", "");
        // The default: podman's capability set, its seccomp profile, its /dev.
        process(&t, DEFAULT_CONTAINER, DEFAULT_CONTAINER, 2);
        let f = expect_saying(
            &t.vf(),
            "privileged",
            Status::Warn,
            "privileged: true",
            "a seccomp filter is on (Seccomp: 2)",
        );
        assert!(
            f.finding.contains("0 of the machine's 3 devices in /dev"),
            "{f:?}"
        );
        assert!(
            f.finding
                .contains("lacks CAP_SYS_ADMIN (a runtime gives it only to privileged containers)"),
            "{f:?}"
        );
        // capabilities: add: [ALL] fills the mask, nothing else.
        process(&t, SHORT, SHORT, 2);
        let f = expect(&t.vf(), "privileged", Status::Warn, "");
        assert!(!f.finding.contains("bounding set"), "{f:?}");
        assert!(
            f.finding.contains("Seccomp: 2") && f.finding.contains("0 of the machine's 3"),
            "{f:?}"
        );
        // seccomp: Unconfined and a hostPath /dev, default capabilities: still not.
        process(&t, DEFAULT_CONTAINER, DEFAULT_CONTAINER, 0);
        dev_nodes(&t, &["vda", "loop0", "tty1"]);
        let f = expect(&t.vf(), "privileged", Status::Warn, "");
        assert!(
            f.finding
                .starts_with("not privileged: bounding set 00000000a80425fb lacks CAP_SYS_ADMIN"),
            "{f:?}"
        );
        // Where no-IOMMU VFIO is not needed, not being privileged is fine.
        process(&t, DEFAULT_CONTAINER, DEFAULT_CONTAINER, 2);
        expect_saying(
            &t.checks(&Env::new(), &[]),
            "privileged",
            Status::Pass,
            "",
            "not needed here",
        );
        // Without CapBnd, it cannot tell.
        t.write("proc/self/status", "Name:\ttestpmd\n");
        expect(&t.vf(), "privileged", Status::Warn, "");
    }

    #[test]
    fn capability_names_are_the_kernel_headers() {
        // The header of the machine's kernel API (linux-libc-dev), not our table.
        let header = std::path::Path::new("/usr/include/linux/capability.h");
        let Ok(text) = std::fs::read_to_string(header) else {
            return nicpoll_testkit::skip(
                "/usr/include/linux/capability.h (apt-get install linux-libc-dev)",
            );
        };
        let mut seen = 0;
        for line in text.lines() {
            let mut w = line.split_whitespace();
            if let (Some("#define"), Some(name), Some(value)) = (w.next(), w.next(), w.next())
                && let Some(cap) = name.strip_prefix("CAP_")
                && let Ok(bit) = value.parse::<usize>()
                && cap != "LAST_CAP"
            {
                assert_eq!(CAP_NAMES.get(bit), Some(&cap), "{line}");
                seen += 1;
            }
        }
        assert!(
            seen >= CAP_NAMES.len(),
            "{seen} capabilities in {}",
            header.display()
        );
    }

    #[test]
    fn capability_names_and_lists() {
        assert_eq!(cap_name(CAP_SYS_ADMIN), "CAP_SYS_ADMIN");
        assert_eq!(cap_name(24), "CAP_SYS_RESOURCE");
        assert_eq!(cap_name(40), "CAP_CHECKPOINT_RESTORE");
        assert_eq!(cap_name(41), "capability 41");
        assert_eq!(cap_list(FULL & !SHORT), "CAP_SYS_RESOURCE");
    }
}
