//! What the test reads of the machine: hugepages, limits, the apt sources'
//! archive, the CPUs; and podman's containers.conf made from them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::read;

/// The default hugepage size in KiB, from /proc/meminfo.
pub(crate) fn hugepage_kib() -> Option<u64> {
    nicpoll_testkit::meminfo_field("Hugepagesize")
}

/// How testpmd names a page size ("2 MiB", "1 GiB").
pub(crate) fn page_size_text(kib: u64) -> String {
    if kib >= 1 << 20 {
        format!("{} GiB", kib >> 20)
    } else {
        format!("{} MiB", kib >> 10)
    }
}

/// The hard limits the container's default ulimits must stay within
/// (runc fails to raise one above them: "error setting rlimit").
pub(crate) fn hard_limit(name: &str) -> Option<String> {
    let limits = read(Path::new("/proc/self/limits"));
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let hard = line[name.len()..].split_whitespace().nth(1)?;
    (hard != "unlimited").then(|| hard.to_string())
}

pub(crate) fn containers_conf() -> String {
    let mut ulimits = Vec::new();
    if let Some(h) = hard_limit("Max open files") {
        ulimits.push(format!("\"nofile={h}:{h}\""));
    }
    // podman's conmon, whose limits the container starts from, ran with
    // RLIMIT_NPROC = kernel.pid_max (32768) on a Debian 12 machine whose hard
    // limit was higher: the lower of the two.
    let pid_max: Option<u64> = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let hard: Option<u64> = hard_limit("Max processes").and_then(|h| h.parse().ok());
    if let Some(n) = match (hard, pid_max) {
        (Some(h), Some(p)) => Some(h.min(p)),
        (h, p) => h.or(p),
    } {
        ulimits.push(format!("\"nproc={n}:{n}\""));
    }
    format!(
        "[containers]\ndefault_ulimits = [{}]\n\n[engine]\nruntime = \"runc\"\n\
         cgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        ulimits.join(", ")
    )
}

/// The Debian archive of the machine's apt sources (one-line and deb822
/// formats), the public one when there is none.
pub(crate) fn debian_archive() -> String {
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push(t);
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            if let Ok(t) = std::fs::read_to_string(f) {
                texts.push(t);
            }
        }
    }
    let is_archive = |uri: &str| {
        let u = uri.trim_end_matches('/');
        (u.starts_with("http://") || u.starts_with("https://")) && u.ends_with("/debian")
    };
    for t in &texts {
        for l in t.lines().map(str::trim) {
            let uri = if let Some(rest) = l.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                l.strip_prefix("URIs:")
                    .and_then(|u| u.split_whitespace().next())
            };
            if let Some(u) = uri.filter(|u| is_archive(u)) {
                return u.trim_end_matches('/').to_string();
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// Whether `url`'s host answers on its port within a few seconds (checked
/// before debootstrap, with the standard library only).
pub(crate) fn reachable(url: &str) -> bool {
    use std::net::ToSocketAddrs;
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let host = rest.split('/').next().unwrap_or(rest);
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:{}", if scheme == "https" { 443 } else { 80 })
    };
    addr.to_socket_addrs().is_ok_and(|mut a| {
        a.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
    })
}

/// The CPUs this process may use (`Cpus_allowed_list`); a container podman
/// starts from here inherits them, and podman gives it no cpuset of its own.
pub(crate) fn allowed_cpus() -> BTreeSet<usize> {
    let status = read(Path::new("/proc/self/status"));
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    parse_cpus(&list)
}

pub(crate) fn parse_cpus(list: &str) -> BTreeSet<usize> {
    let mut cpus = BTreeSet::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => {
                cpus.insert(part.parse().unwrap());
            }
        }
    }
    cpus
}
