//! The QEMU 11 side of the harness: a Debian trixie chroot (debootstrap
//! `--variant=minbase`) with `qemu-system-x86` from trixie-backports, whose
//! `vfio-user-pci` device attaches a PCI function served by a process on the
//! host over a unix socket, and DPDK 24.11 (dpdk-testpmd and its iavf, virtio and
//! e1000 PMDs) packed as a tree for the guest.
//!
//! Mounts: every command that runs in the chroot (apt-get while preparing, QEMU
//! for each guest) runs in a mount namespace of its own (`unshare --mount
//! --propagation private`) in which proc, sysfs, a small tmpfs `/dev` holding
//! bind mounts of single device nodes (never the host's `/dev` itself) and the
//! folders that run needs are mounted. The mounts end with the command, also when
//! it is killed: nothing stays mounted on the host, and removing the cache cannot
//! reach a host device node.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt::{self, KEYRING};
use crate::cache::{self, Cache};
use crate::error::{Error, Result};
use crate::exec;
use crate::initramfs::parse_missing_libraries;

/// The DPDK drivers the guest tree carries (shared objects loaded with `-d`).
const DPDK_PMDS: &[&str] = &[
    "librte_mempool_ring",
    "librte_bus_pci",
    "librte_bus_vdev",
    "librte_net_iavf",
    "librte_net_virtio",
    "librte_net_e1000",
    "librte_net_null",
    "librte_net_ring",
];

/// Where the DPDK tree sits in the guest.
pub const DPDK_GUEST_DIR: &str = "/opt/dpdk";

/// Mounts one command's private namespace needs, then runs it in the chroot.
/// Arguments: ROOT, then pairs of `ro|rw FOLDER` (bound at the same path), then
/// `--` and the command.
const ENTER: &str = r#"
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount -t tmpfs -o mode=0755,size=1m,nosuid,noexec nicpoll-guest-dev "$root/dev"
for n in null zero full random urandom tty net/tun; do
    [ -e "/dev/$n" ] || continue
    mkdir -p "$(dirname "$root/dev/$n")"
    : > "$root/dev/$n"
    mount --bind "/dev/$n" "$root/dev/$n"
done
mkdir -p "$root/dev/pts" "$root/dev/shm"
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
while [ "$1" != -- ]; do
    mkdir -p "$root$2"
    mount --bind "$2" "$root$2"
    if [ "$1" = ro ]; then mount -o remount,bind,ro "$root$2"; fi
    shift 2
done
shift
exec chroot "$root" "$@"
"#;

/// A host folder a guest run shows to QEMU in the chroot, at the same path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Bind {
    pub dir: PathBuf,
    pub writable: bool,
}

/// The chroot and what was installed in it.
pub(crate) struct Chroot {
    pub root: PathBuf,
    log_dir: PathBuf,
}

impl Chroot {
    pub(crate) fn new(cache: &Cache) -> Chroot {
        Chroot {
            root: cache.path("chroot"),
            log_dir: cache.logs(),
        }
    }

    /// `argv` run in the chroot, in a mount namespace of its own with `binds`;
    /// the process that runs `argv` is the command's own (every step execs).
    pub(crate) fn command(&self, binds: &[Bind], argv: &[OsString]) -> Result<Command> {
        let mut c = Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-ec",
            ENTER,
            "sh",
        ])
        .arg(&self.root);
        for b in normalize(binds) {
            self.check_bind(&b.dir)?;
            c.arg(if b.writable { "rw" } else { "ro" }).arg(&b.dir);
        }
        c.arg("--").args(argv);
        c.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("LC_ALL", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive");
        if let Some(p) = apt::host_proxy() {
            c.env("http_proxy", p);
        }
        Ok(c)
    }

    /// A folder may be bound where the chroot has nothing of its own.
    fn check_bind(&self, dir: &Path) -> Result<()> {
        if !dir.is_absolute() || dir == Path::new("/") {
            return Err(Error::new(format!(
                "{} cannot be shown to QEMU in the chroot: give a socket or output folder under an absolute, non-root folder",
                dir.display()
            )));
        }
        if dir.starts_with(&self.root) {
            return Err(Error::new(format!(
                "{} lies inside the chroot {}: put sockets and outputs elsewhere",
                dir.display(),
                self.root.display()
            )));
        }
        let target = self.root.join(dir.strip_prefix("/").unwrap_or(dir));
        let busy = std::fs::read_dir(&target).is_ok_and(|mut d| d.next().is_some());
        if busy || (target.exists() && !target.is_dir()) {
            return Err(Error::new(format!(
                "{} cannot be bound into the chroot: the chroot has its own {} there; \
                 put the socket or output in a folder of its own (e.g. a temporary folder)",
                dir.display(),
                dir.display()
            )));
        }
        Ok(())
    }

    fn run(&self, what: &str, argv: &[&str]) -> Result<()> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        exec::run_logged(
            &mut self.command(&[], &argv)?,
            &self.log_dir.join(format!("chroot-{what}.log")),
            "",
        )
    }

    fn output(&self, argv: &[&str]) -> Result<String> {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let out = exec::output(
            &mut self.command(&[], &argv)?,
            &self.log_dir.join("chroot-query.log"),
            "",
        )?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// A path inside the chroot, seen from the host.
    fn host_path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }
}

/// Drop folders already shown through a bound parent, and duplicates.
fn normalize(binds: &[Bind]) -> Vec<Bind> {
    let sorted: BTreeSet<Bind> = binds.iter().cloned().collect();
    let mut out: Vec<Bind> = Vec::new();
    for b in sorted {
        if let Some(parent) = out.iter_mut().find(|p| b.dir.starts_with(&p.dir)) {
            parent.writable |= b.writable;
        } else {
            out.push(b);
        }
    }
    out
}

/// The mount points under `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == dir.as_ref() || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// Whether the chroot with QEMU 11 (and DPDK, with `dpdk`) is prepared.
pub(crate) fn prepared(cache: &Cache, dpdk: bool) -> bool {
    cache.is_done("chroot-debootstrap")
        && cache.is_done("chroot-qemu11")
        && (!dpdk || (cache.is_done("chroot-dpdk") && cache.is_done("dpdk-tree")))
}

/// Make the chroot, install QEMU 11 and (with `dpdk`) DPDK 24.11 and its guest
/// tree, skipping what is done. The caller holds the cache lock.
pub(crate) fn prepare(cache: &Cache, dpdk: bool) -> Result<()> {
    let chroot = Chroot::new(cache);
    let mirror = apt::mirror();
    if !cache.is_done("chroot-debootstrap") {
        debootstrap(cache, &chroot, &mirror)?;
    }
    // apt in the chroot resolves the archive's name with the host's resolver.
    if let Ok(r) = std::fs::read("/etc/resolv.conf") {
        cache::write_atomic(&chroot.host_path("/etc/resolv.conf"), &r)?;
    }
    if !cache.is_done("chroot-qemu11") {
        install_qemu11(cache, &chroot, &mirror)?;
    }
    if dpdk {
        if !cache.is_done("chroot-dpdk") {
            install_dpdk(cache, &chroot)?;
        }
        if !cache.is_done("dpdk-tree") {
            dpdk_tree(cache, &chroot)?;
        }
    }
    Ok(())
}

fn debootstrap(cache: &Cache, chroot: &Chroot, mirror: &str) -> Result<()> {
    let t = std::time::Instant::now();
    if chroot.root.exists() {
        let mounted = mounts_under(&chroot.root);
        if !mounted.is_empty() {
            return Err(Error::new(format!(
                "cannot redo the incomplete chroot {}: {} mounted there; unmount with `umount -R` and retry",
                chroot.root.display(),
                mounted.join(", ")
            )));
        }
        crate::say(&format!(
            "removing the incomplete chroot {}",
            chroot.root.display()
        ));
        cache::remove(&chroot.root)?;
    }
    crate::say(&format!(
        "debootstrap --variant=minbase trixie from {mirror} (about 30 s, once)"
    ));
    // In a namespace of its own, debootstrap's proc and sysfs mounts in the
    // target end with it, also when it is interrupted.
    let mut cmd = Command::new("unshare");
    if let Some(p) = apt::host_proxy() {
        cmd.env("http_proxy", p);
    }
    exec::run_logged(
        cmd.args(["--mount", "--propagation", "private", "--", "debootstrap"])
            .args([
                "--variant=minbase",
                &format!("--keyring={KEYRING}"),
                "trixie",
            ])
            .arg(&chroot.root)
            .arg(mirror),
        &cache.logs().join("debootstrap.log"),
        &format!(
            "debootstrap needs root, the debootstrap and debian-archive-keyring packages, and the archive {mirror} \
             (NICPOLL_GUEST_MIRROR names another)"
        ),
    )?;
    cache.mark_done("chroot-debootstrap", &format!("trixie from {mirror}"))?;
    crate::say(&format!(
        "debootstrap done in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn install_qemu11(cache: &Cache, chroot: &Chroot, mirror: &str) -> Result<()> {
    let t = std::time::Instant::now();
    cache::write_atomic(
        &chroot.host_path("/etc/apt/sources.list.d/nicpoll-guest-backports.list"),
        format!("deb {mirror} trixie-backports main\n").as_bytes(),
    )?;
    crate::say("installing QEMU 11 from trixie-backports in the chroot");
    // An interrupted install leaves packages half configured.
    chroot.run("apt", &["dpkg", "--configure", "-a"])?;
    chroot.run("apt", &["apt-get", "-q", "update"])?;
    chroot.run(
        "apt",
        &[
            "apt-get",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            "trixie-backports",
            "install",
            "qemu-system-x86",
        ],
    )?;
    let devices = chroot.output(&["qemu-system-x86_64", "-device", "help"])?;
    if !devices.contains("\"vfio-user-pci\"") {
        return Err(Error::new(
            "the chroot's QEMU has no vfio-user-pci device (trixie-backports' qemu-system-x86 should have it)",
        ));
    }
    chroot.run("apt", &["apt-get", "clean"])?;
    let version = chroot.output(&["qemu-system-x86_64", "--version"])?;
    let version = version.lines().next().unwrap_or_default().to_string();
    cache.mark_done("chroot-qemu11", &version)?;
    crate::say(&format!("{version} in {:.1} s", t.elapsed().as_secs_f64()));
    Ok(())
}

/// Debian's package for the shared library `soname` (`librte_net_e1000.so.25`
/// is in `librte-net-e1000-25`, `librte_eal.so.25` in `librte-eal25`).
fn package_of(soname: &str) -> Option<String> {
    let (base, version) = soname.split_once(".so.")?;
    let base = base.replace('_', "-").to_lowercase();
    let sep = if base.ends_with(|c: char| c.is_ascii_digit()) {
        "-"
    } else {
        ""
    };
    Some(format!("{base}{sep}{version}"))
}

/// DPDK 24.11's runtime libraries and the PMDs the tree carries, and
/// `/usr/local/bin/dpdk-testpmd` out of the dpdk-dev package, which itself does
/// not install beside QEMU 11 (its libelf-dev wants another libelf than the
/// backported QEMU's).
fn install_dpdk(cache: &Cache, chroot: &Chroot) -> Result<()> {
    let t = std::time::Instant::now();
    crate::say("installing DPDK 24.11 (runtime, PMDs, dpdk-testpmd) in the chroot");
    chroot.run("apt", &["dpkg", "--configure", "-a"])?;
    let dl = "/var/tmp/nicpoll-guest-dl";
    cache::remove(&chroot.host_path(dl))?;
    cache::mkdir(&chroot.host_path(dl))?;
    chroot.run(
        "apt",
        &[
            "sh",
            "-c",
            &format!("cd {dl} && apt-get -q download dpdk-dev"),
        ],
    )?;
    let deb = apt::find_deb(&chroot.host_path(dl), "dpdk-dev")
        .ok_or_else(|| Error::new("apt-get download dpdk-dev left no .deb in the chroot"))?;
    let testpmd = chroot.host_path("/usr/local/bin/dpdk-testpmd");
    apt::unpack_executable(
        &deb,
        "./usr/bin/dpdk-testpmd",
        &testpmd,
        &cache.logs().join("chroot-apt.log"),
        "dpdk-dev's layout is not the one this harness knows (Debian 13's)",
    )?;
    cache::remove(&chroot.host_path(dl))?;
    // Install what the binary is linked against, then the PMDs of the same ABI.
    let mut abi = None;
    for round in 0..4 {
        let ldd = chroot.output(&["sh", "-c", "ldd /usr/local/bin/dpdk-testpmd || true"])?;
        abi = abi.or_else(|| {
            ldd.split_whitespace()
                .find_map(|w| w.strip_prefix("librte_eal.so."))
                .map(str::to_string)
        });
        let Some(abi) = abi.as_deref() else {
            return Err(Error::new(format!(
                "dpdk-testpmd from dpdk-dev is not linked against librte_eal:\n{ldd}"
            )));
        };
        let mut missing = parse_missing_libraries(&ldd);
        if round == 0 {
            missing.extend(DPDK_PMDS.iter().map(|p| format!("{p}.so.{abi}")));
        }
        if missing.is_empty() {
            break;
        }
        if round == 3 {
            return Err(Error::new(format!(
                "dpdk-testpmd still misses {} in the chroot (see {})",
                missing.join(" "),
                cache.logs().join("chroot-apt.log").display()
            )));
        }
        let packages: Vec<String> = missing.iter().filter_map(|s| package_of(s)).collect();
        let mut argv = vec!["apt-get", "-y", "-q", "--no-install-recommends", "install"];
        argv.extend(packages.iter().map(String::as_str));
        chroot.run("apt", &argv)?;
    }
    chroot.run("apt", &["apt-get", "clean"])?;
    let eal = format!("librte-eal{}", abi.unwrap_or_default());
    let version = chroot.output(&["dpkg-query", "-W", "-f", "${Version}", &eal])?;
    cache.mark_done("chroot-dpdk", &format!("DPDK {}", version.trim()))?;
    crate::say(&format!(
        "DPDK {} in {:.1} s",
        version.trim(),
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `CACHE/dpdk`: dpdk-testpmd, the PMDs and every library they load, with
/// trixie's own loader, under `/opt/dpdk` in the guest. `/opt/dpdk/bin/dpdk-testpmd`
/// starts the binary through that loader, so DPDK's glibc 2.41 and the host's
/// (for programs copied from the host) live side by side in one guest.
fn dpdk_tree(cache: &Cache, chroot: &Chroot) -> Result<()> {
    let out = cache.path("dpdk");
    let tmp = cache::tmp_path(&out);
    cache::remove(&tmp)?;
    let lib = tmp.join("opt/dpdk/lib");
    let pmds = tmp.join("opt/dpdk/pmds");
    let bin = tmp.join("opt/dpdk/bin");
    for d in [&lib, &pmds, &bin] {
        cache::mkdir(d)?;
    }
    let ldd = chroot.output(&["ldd", "/usr/local/bin/dpdk-testpmd"])?;
    let abi = ldd
        .split_whitespace()
        .find_map(|w| w.strip_prefix("librte_eal.so."))
        .ok_or_else(|| Error::new("dpdk-testpmd is not linked against librte_eal"))?
        .to_string();
    let mut objects = vec!["/usr/local/bin/dpdk-testpmd".to_string()];
    let mut libs = BTreeSet::new();
    for p in DPDK_PMDS {
        let path = format!("/usr/lib/x86_64-linux-gnu/{p}.so.{abi}");
        libs.insert(path.clone());
        objects.push(path);
        // A link to the one copy in lib/: a PMD that another one also needs is
        // the same file to the loader, so it never registers twice. EAL loads
        // from a `-d` folder only names ending in `.so` or `.so.MAJOR.MINOR`.
        std::os::unix::fs::symlink(format!("../lib/{p}.so.{abi}"), pmds.join(format!("{p}.so")))
            .map_err(|e| Error::new(format!("cannot link {p}: {e}")))?;
    }
    for o in &objects {
        let text = chroot.output(&["ldd", o])?;
        for l in crate::initramfs::parse_ldd(&text)
            .map_err(|missing| Error::new(format!("{o} needs {missing}, which the chroot lacks")))?
        {
            libs.insert(l.to_string_lossy().into_owned());
        }
    }
    // Loaded with dlopen (thread cancellation, unwinding): ldd does not list it.
    libs.insert("/usr/lib/x86_64-linux-gnu/libgcc_s.so.1".to_string());
    for l in &libs {
        let name = Path::new(l).file_name().unwrap_or_default();
        std::fs::copy(chroot.host_path(l), lib.join(name))
            .map_err(|e| Error::new(format!("cannot copy {l} out of the chroot: {e}")))?;
    }
    if !lib.join("ld-linux-x86-64.so.2").is_file() {
        return Err(Error::new(
            "dpdk-testpmd's loader ld-linux-x86-64.so.2 was not found",
        ));
    }
    std::fs::copy(
        chroot.host_path("/usr/local/bin/dpdk-testpmd"),
        bin.join("dpdk-testpmd.elf"),
    )
    .map_err(|e| Error::new(format!("cannot copy dpdk-testpmd: {e}")))?;
    let d = DPDK_GUEST_DIR;
    let wrapper = format!(
        "#!/bin/sh\n\
         # DPDK 24.11's dpdk-testpmd with its own loader and libraries (Debian 13's),\n\
         # and the PMDs of {d}/pmds (nicpoll-guest).\n\
         exec {d}/lib/ld-linux-x86-64.so.2 --library-path {d}/lib {d}/bin/dpdk-testpmd.elf -d {d}/pmds \"$@\"\n"
    );
    cache::write_atomic(&bin.join("dpdk-testpmd"), wrapper.as_bytes())?;
    cache::make_executable(&bin.join("dpdk-testpmd"))?;
    let version = std::fs::read_to_string(cache.path("state/chroot-dpdk.done")).unwrap_or_default();
    cache::write_atomic(&tmp.join("opt/dpdk/VERSION"), version.as_bytes())?;
    cache::remove(&out)?;
    cache::rename(&tmp, &out)?;
    cache.mark_done("dpdk-tree", version.trim())?;
    crate::say(&format!(
        "DPDK tree for the guest: {} libraries",
        libs.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sonames_map_to_debian_package_names() {
        for (soname, package) in [
            ("librte_eal.so.25", Some("librte-eal25")),
            ("librte_net_e1000.so.25", Some("librte-net-e1000-25")),
            ("librte_net_mlx5.so.25", Some("librte-net-mlx5-25")),
            ("libjansson.so.4", Some("libjansson4")),
            ("ld-linux", None),
        ] {
            assert_eq!(package_of(soname).as_deref(), package, "{soname}");
        }
    }

    #[test]
    fn binds_under_a_bound_folder_are_dropped_and_writable_wins() {
        let b = |d: &str, w| Bind {
            dir: PathBuf::from(d),
            writable: w,
        };
        assert_eq!(
            normalize(&[
                b("/tmp/a/b", true),
                b("/tmp/a", false),
                b("/tmp/c", false),
                b("/tmp/c", false)
            ]),
            [b("/tmp/a", true), b("/tmp/c", false)]
        );
    }

    #[test]
    fn folders_the_chroot_has_or_that_lie_inside_it_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("chroot");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/x"), b"").unwrap();
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        let c = Chroot {
            root: root.clone(),
            log_dir: d.path().join("logs"),
        };
        let e = c.check_bind(Path::new("/usr/lib")).unwrap_err().to_string();
        assert!(e.contains("the chroot has its own /usr/lib"), "{e}");
        assert!(c.check_bind(Path::new("/")).is_err());
        assert!(c.check_bind(&root.join("tmp")).is_err());
        c.check_bind(Path::new("/tmp")).unwrap();
        c.check_bind(Path::new("/tmp/sockets-of-a-test")).unwrap();
    }
}
