//! Can a guest run here? Decided from the host alone (tools on PATH, root,
//! files, whether the Debian archive answers) before anything is downloaded or
//! booted, so a test that cannot run says why instead of failing half-way.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cache::Cache;
use crate::{Emulator, Guest, Mode, Net, chroot, kernel};

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether `tool` is an executable file on PATH.
pub(crate) fn have(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// QEMU's version as (major, minor), from `qemu-system-x86_64 --version`.
fn host_qemu_version() -> Option<(u32, u32)> {
    let out = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()?;
    parse_qemu_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_qemu_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The host and port apt reaches the archive through (its proxy, if any).
fn archive_endpoint(mirror: &str) -> Option<(String, u16)> {
    let url = crate::apt::host_proxy()
        .or_else(|| std::env::var("http_proxy").ok().filter(|p| !p.is_empty()))
        .unwrap_or_else(|| mirror.to_string());
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?))
        }
        _ => Some((authority.trim_matches(['[', ']']).to_string(), default)),
    }
}

/// Whether a TCP connection to the archive (or apt's proxy) opens within 5 s.
fn archive_reachable(mirror: &str) -> Result<(), String> {
    let (host, port) =
        archive_endpoint(mirror).ok_or_else(|| format!("cannot parse the archive URL {mirror}"))?;
    let addrs = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{host}:{port}: {e}"),
        }
    }
    Err(last)
}

/// What `g` lacks on this machine, or None.
pub(crate) fn missing(g: &Guest, cache: &Cache) -> Option<String> {
    let mut lacks: Vec<String> = Vec::new();
    let tool = |lacks: &mut Vec<String>, t: &str, package: &str| {
        if !have(t) {
            lacks.push(format!("{t} (apt-get install {package})"));
        }
    };
    tool(&mut lacks, "ldd", "libc-bin");
    tool(&mut lacks, "setpriv", "util-linux");
    let emulator = g.resolved_emulator();
    let chroot = emulator == Emulator::Qemu11 || g.dpdk;
    if emulator == Emulator::Host {
        tool(&mut lacks, "qemu-system-x86_64", "qemu-system-x86");
    }
    if g.netns().is_some() {
        tool(&mut lacks, "nsenter", "util-linux");
    }
    if chroot {
        tool(&mut lacks, "unshare", "util-linux");
        tool(&mut lacks, "chroot", "coreutils");
        tool(&mut lacks, "mount", "mount");
    }
    let kernel = kernel::prepared(cache);
    let noiommu_ready = kernel
        .as_ref()
        .is_some_and(|k| cache.is_done(&format!("noiommu-{}", k.kabi)));
    let chroot_ready = chroot::prepared(cache, g.dpdk);
    let downloads = kernel.is_none()
        || !cache.is_done("busybox")
        || (g.mode == Mode::NoIommu && !noiommu_ready)
        || (chroot && !chroot_ready);
    if downloads {
        tool(&mut lacks, "apt-get", "apt");
        tool(&mut lacks, "dpkg-deb", "dpkg");
        tool(&mut lacks, "tar", "tar");
        tool(&mut lacks, "xz", "xz-utils");
        if !Path::new(crate::apt::KEYRING).is_file() {
            lacks.push(format!(
                "{} (apt-get install debian-archive-keyring)",
                crate::apt::KEYRING
            ));
        }
    }
    if g.mode == Mode::NoIommu && !noiommu_ready {
        tool(&mut lacks, "make", "make");
        tool(&mut lacks, "gcc-12", "gcc-12");
        if !Path::new("/usr/lib/x86_64-linux-gnu/libelf.so.1").exists() {
            lacks.push(
                "libelf.so.1 for the no-IOMMU vfio.ko build (apt-get install libelf1)".into(),
            );
        }
    }
    if chroot && !chroot_ready {
        tool(&mut lacks, "debootstrap", "debootstrap");
    }
    if chroot && !is_root() {
        lacks.push(
            "root: QEMU 11 and DPDK 24.11 run from a chroot the harness makes and mounts into"
                .into(),
        );
    }
    if let Some(ns) = g.netns()
        && !Path::new(&format!("/run/netns/{ns}")).exists()
    {
        lacks.push(format!(
            "the network namespace {ns} (ip netns add {ns}) with its tap"
        ));
    }
    if emulator == Emulator::Host
        && have("qemu-system-x86_64")
        && g.nics.iter().any(|n| matches!(n.net, Net::Dgram(_)))
        && host_qemu_version().is_some_and(|v| v < (7, 2))
    {
        lacks.push("QEMU 7.2 or newer for -netdev dgram (Debian 12's qemu-system-x86)".into());
    }
    if lacks.is_empty()
        && downloads
        && let Err(e) = archive_reachable(&crate::apt::mirror())
    {
        lacks.push(format!(
            "the Debian archive {} to download the guest ({e}); NICPOLL_GUEST_MIRROR names another",
            crate::apt::mirror()
        ));
    }
    if lacks.is_empty() {
        None
    } else {
        Some(format!("the QEMU guest harness needs {}", lacks.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_parse() {
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n"),
            Some((7, 2))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 11.1.3\n"),
            Some((11, 1))
        );
        assert_eq!(parse_qemu_version("nonsense"), None);
    }

    #[test]
    fn archive_endpoints_come_from_the_url() {
        // Only where no proxy stands between this host and the archive.
        if std::env::var_os("http_proxy").is_some() || crate::apt::host_proxy().is_some() {
            return;
        }
        assert_eq!(
            archive_endpoint("http://deb.debian.org/debian"),
            Some(("deb.debian.org".into(), 80))
        );
        assert_eq!(
            archive_endpoint("https://mirror.example:8443/debian"),
            Some(("mirror.example".into(), 8443))
        );
    }

    #[test]
    fn a_guest_that_binds_without_vfio_is_refused_before_anything_runs() {
        let g = Guest::new().nic(crate::Nic::e1000e());
        let why = g.missing().unwrap();
        assert!(why.contains("Mode::Type1"), "{why}");
        let g = Guest::new()
            .emulator(Emulator::Host)
            .vfio_user(crate::VfioUser::new("/tmp/x.sock"));
        assert!(g.missing().unwrap().contains("QEMU 11"));
    }
}
