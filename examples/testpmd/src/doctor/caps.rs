//! Capabilities: IPC_LOCK, SYS_RAWIO, SYS_ADMIN, NET_RAW as the run needs them
//! (whether the container is privileged is `privileged`).

use super::host::Host;
use super::scope::{Need, Scope, join};
use super::{Finding, Status};

pub(super) const CAP_NET_RAW: u32 = 13;
pub(super) const CAP_IPC_LOCK: u32 = 14;
pub(super) const CAP_SYS_RAWIO: u32 = 17;
pub(super) const CAP_SYS_ADMIN: u32 = 21;

pub(super) struct Caps {
    /// CapEff, if readable.
    pub(super) eff: Option<u64>,
    /// Whether we are in the initial user namespace (capabilities count machine-wide).
    pub(super) init_userns: bool,
    /// RLIMIT_MEMLOCK soft limit is unlimited.
    pub(super) memlock_unlimited: bool,
}

impl Caps {
    pub(super) fn read(host: &Host<'_>) -> Caps {
        let eff = host
            .status_field("CapEff")
            .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
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
            init_userns,
            memlock_unlimited,
        }
    }

    pub(super) fn has(&self, cap: u32) -> Option<bool> {
        self.eff.map(|e| e & (1u64 << cap) != 0)
    }
}

pub(super) fn cap_fix(name: &str) -> String {
    format!(
        "securityContext: capabilities: add: [\"{name}\"] in the container spec (or privileged: true); on a host, run as root"
    )
}

/// The capability checks with how much the run needs each:
/// `capability IPC_LOCK|SYS_RAWIO|NET_RAW|SYS_ADMIN`.
pub(super) fn capability_checks(host: &Host<'_>, scope: &Scope) -> Vec<(Need, Finding)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Env;
    use crate::doctor::testing::*;

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
        t.device(&FakeDev::mlx5());
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
}
