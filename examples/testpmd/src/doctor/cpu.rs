//! CPUs: the CPU set we may run on (enough, exclusive, inside `isolcpus=`) and
//! isolation (`isolcpus`, `nohz_full`, `rcu_nocbs`).

use std::collections::BTreeMap;

use nicpoll::lcore::{format_cpu_list, parse_kernel_cpu_list};

use super::host::Host;
use super::{Finding, Status};

/// A kernel CPU list (`0-3,8,10-11`; empty is no CPU), sorted; None if it
/// cannot be parsed. `lcore::parse_kernel_cpu_list`, which also takes CPUs
/// beyond the highest lcore id.
pub(super) fn parse_kernel_cpus(s: &str) -> Option<Vec<usize>> {
    parse_kernel_cpu_list(s, "a kernel CPU list").ok()
}

/// `isolcpus=[flags,]LIST`: the flags (`domain`, `nohz`, `managed_irq`) are not CPUs.
pub(super) fn parse_isolcpus(s: &str) -> Option<Vec<usize>> {
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
pub(super) fn our_cpus(host: &Host<'_>) -> Option<(Vec<usize>, String)> {
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

pub(super) fn cpu_checks(host: &Host<'_>) -> Vec<Finding> {
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

pub(super) fn exclusive_fix(host: &Host<'_>) -> String {
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
pub(super) fn check_cpu_set(
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
pub(super) fn check_cpu_isolation(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testing::*;

    #[test]
    fn cpu_set() {
        let t = Tree::good();
        let f = expect_saying(
            &t.vf(),
            "cpu-set",
            Status::Pass,
            "",
            "CPUs 2-4 (Cpus_allowed_list) of 8 online (0-7)",
        );
        assert!(
            f.finding.contains("within isolcpus=managed_irq,domain,3-7"),
            "{f:?}"
        );
        t.status(0x1ff_ffff_ffff, "0-7");
        expect_saying(
            &t.vf(),
            "cpu-set",
            Status::Warn,
            "static CPU manager policy",
            "every online CPU",
        );
        t.status(0x1ff_ffff_ffff, "1-3");
        expect_saying(
            &t.vf(),
            "cpu-set",
            Status::Warn,
            "Guaranteed QoS",
            "forwarding CPUs 2 are outside isolcpus",
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
        expect_saying(
            &t.vf(),
            "cpu-set",
            Status::Warn,
            "",
            "cannot tell whether they are exclusive",
        );
        t.write("sys/devices/system/cpu/online", "0-7\n");
        // No Cpus_allowed_list: the cgroup v2 cpuset.
        t.write("proc/self/status", "CapEff:\t000001ffffffffff\n")
            .write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
            .write(
                "sys/fs/cgroup/kubepods/pod1/ctr/cpuset.cpus.effective",
                "4-6\n",
            );
        expect_saying(
            &t.vf(),
            "cpu-set",
            Status::Pass,
            "",
            "CPUs 4-6 (/sys/fs/cgroup/kubepods/pod1/ctr/cpuset.cpus.effective)",
        );
    }

    #[test]
    fn cpu_isolation() {
        let t = Tree::good();
        expect_saying(
            &t.vf(),
            "cpu-isolation",
            Status::Pass,
            "",
            "forwarding CPUs 3-4 are isolated",
        );
        // nohz_full alone covers both (it implies rcu_nocbs).
        t.write("proc/cmdline", "default_hugepagesz=1G nohz_full=3-4\n");
        expect(&t.vf(), "cpu-isolation", Status::Pass, "");
        t.write("proc/cmdline", "default_hugepagesz=1G isolcpus=3-4\n");
        expect_saying(
            &t.vf(),
            "cpu-isolation",
            Status::Warn,
            "rcu_nocbs=3-4",
            "not in rcu_nocbs",
        );
        t.write("proc/cmdline", "default_hugepagesz=1G\n");
        expect_saying(
            &t.vf(),
            "cpu-isolation",
            Status::Warn,
            "isolcpus=3-4 nohz_full=3-4 rcu_nocbs=3-4 on the kernel command line",
            "no isolcpus, no nohz_full, no rcu_nocbs",
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
}
