//! Hugepages: free pages, the default size against the kernel command line, and
//! a hugetlbfs mount of the default size.

use std::path::Path;

use nicpoll::memory::hugepage::{self, HugepageSize, HugetlbfsMount};

use super::host::Host;
use super::{Finding, Status};

pub(super) fn size_arg(s: HugepageSize) -> String {
    if s.bytes().is_multiple_of(1 << 30) {
        format!("{}G", s.bytes() >> 30)
    } else if s.bytes().is_multiple_of(1 << 20) {
        format!("{}M", s.bytes() >> 20)
    } else {
        format!("{}K", s.kib())
    }
}

pub(super) fn k8s_resource(s: HugepageSize) -> String {
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
pub(super) fn reserve_fix(size: HugepageSize, now: u64) -> String {
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
pub(super) fn pools(host: &Host<'_>) -> Vec<(HugepageSize, hugepage::HugepagePool)> {
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

pub(super) fn hugepage_checks(host: &Host<'_>, huge_dir: Option<&Path>) -> Vec<Finding> {
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
pub(super) fn check_hugepages(
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
pub(super) fn check_hugepage_size(
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
pub(super) fn check_hugetlbfs(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testing::*;

    #[test]
    fn hugepage_counts() {
        let t = Tree::good();
        expect_saying(
            &t.vf(),
            "hugepages",
            Status::Pass,
            "",
            "HugePages_Total 8, HugePages_Free 8, Hugepagesize 1 GiB",
        );
        // None reserved at the default size (2 MiB), none anywhere.
        t.meminfo(0, 0, 2048)
            .pool(2048, 0, 0)
            .pool(1048576, 0, 0)
            .write("proc/cmdline", "ro\n");
        expect_saying(
            &t.vf(),
            "hugepages",
            Status::Fail,
            "echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "no hugepages are reserved",
        );
        // All in use.
        t.meminfo(64, 0, 2048).pool(2048, 64, 0);
        expect_saying(
            &t.vf(),
            "hugepages",
            Status::Fail,
            "echo 1088 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "all 64 pages are in use",
        );
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
        expect_saying(
            &t.vf(),
            "hugepages",
            Status::Warn,
            "default_hugepagesz=1G hugepagesz=1G",
            "1 GiB: 4 total, 4 free",
        );
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
        expect_saying(
            &t.vf(),
            "hugepage-size",
            Status::Fail,
            "pdpe1gb",
            "Hugepagesize is 2 MiB",
        );
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
        expect_saying(
            &t.vf(),
            "hugepage-size",
            Status::Warn,
            "default_hugepagesz=1G hugepagesz=1G hugepages=8",
            "Kubernetes only schedules the default size",
        );
        // No default_hugepagesz but 2 MiB pages: fine.
        t.meminfo(512, 512, 2048)
            .pool(2048, 512, 512)
            .pool(1048576, 0, 0);
        expect_saying(
            &t.vf(),
            "hugepage-size",
            Status::Pass,
            "",
            "no default_hugepagesz=",
        );
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
        expect_saying(
            &t.vf(),
            "hugetlbfs",
            Status::Warn,
            "mount -t hugetlbfs -o pagesize=1G nodev /dev/hugepages",
            "Kubernetes only schedules the default size",
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
}
