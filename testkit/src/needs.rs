//! What a test needs from the machine, checked without our own code: the
//! kernel's answer to a system call made here (socket(2), bpf(2), a read of
//! /proc/self/pagemap), /proc and /sys files, `PATH`. A test names its needs
//! once, before the product runs:
//!
//! ```no_run
//! use nicpoll_testkit::{Cap, Need, skip_if_missing};
//! if skip_if_missing(&[Need::Capability(Cap::NetAdmin), Need::Command("ip")]) {
//!     return;
//! }
//! ```
//!
//! Only what is missing becomes a skip; once the needs are met, whatever our
//! code does must succeed or the test fails.
#![allow(unsafe_code)]

use std::io;
use std::path::{Path, PathBuf};

/// A Linux capability (numbers from `<linux/capability.h>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// CAP_NET_ADMIN: create interfaces, attach XDP programs, netlink changes.
    NetAdmin = 12,
    /// CAP_NET_RAW: AF_PACKET and AF_XDP sockets.
    NetRaw = 13,
    /// CAP_IPC_LOCK: lock memory beyond RLIMIT_MEMLOCK.
    IpcLock = 14,
    /// CAP_SYS_RAWIO: no-IOMMU VFIO groups.
    SysRawio = 17,
    /// CAP_SYS_ADMIN: physical addresses from /proc/self/pagemap.
    SysAdmin = 21,
    /// CAP_BPF: BPF maps and programs.
    Bpf = 39,
}

impl Cap {
    /// The name `<linux/capability.h>` and Kubernetes' securityContext use, without `CAP_`.
    pub fn name(self) -> &'static str {
        match self {
            Cap::NetAdmin => "NET_ADMIN",
            Cap::NetRaw => "NET_RAW",
            Cap::IpcLock => "IPC_LOCK",
            Cap::SysRawio => "SYS_RAWIO",
            Cap::SysAdmin => "SYS_ADMIN",
            Cap::Bpf => "BPF",
        }
    }
}

/// One thing a test needs; [`Need::missing`] says whether it is absent and how to get it.
#[derive(Clone, Copy, Debug)]
pub enum Need<'a> {
    /// A capability in the calling thread's effective set (/proc/thread-self/status).
    Capability(Cap),
    /// A program on `PATH`.
    Command(&'a str),
    /// A file or device node that must exist.
    Path(&'a str),
    /// At least this many free, unreserved hugepages of the default size (/proc/meminfo).
    FreeHugepages(u64),
    /// A hugetlbfs mount of the default page size this user may create files in.
    Hugetlbfs,
    /// AF_PACKET sockets (socket(2) tried here).
    RawSockets,
    /// An XSKMAP, the BPF map AF_XDP needs (bpf(2) BPF_MAP_CREATE tried here).
    BpfXskMap,
    /// Physical addresses in /proc/self/pagemap (read here for a page of our own).
    PhysicalAddresses,
    /// A shared library `dlopen` can load, such as "libibverbs.so.1".
    Library(&'a str),
    /// A CPU with AVX2.
    Avx2,
}

impl Need<'_> {
    /// What is missing and how to get it, or `None` when this need is met.
    pub fn missing(&self) -> Option<String> {
        match *self {
            Need::Capability(c) => (!has_capability(c)).then(|| {
                format!(
                    "CAP_{} (run as root, or add {} to the container's capabilities)",
                    c.name(),
                    c.name()
                )
            }),
            Need::Command(tool) => (!have_command(tool)).then(|| {
                format!(
                    "{tool} is not on PATH (apt-get install {})",
                    debian_package(tool)
                )
            }),
            Need::Path(p) => (!Path::new(p).exists()).then(|| {
                let how = match p {
                    "/usr/include/infiniband/verbs.h" => " (apt-get install libibverbs-dev)",
                    "/dev/net/tun" => " (modprobe tun)",
                    _ => "",
                };
                format!("{p} does not exist{how}")
            }),
            Need::FreeHugepages(n) => {
                let free = free_hugepages();
                (free < n).then(|| {
                    format!(
                        "{n} free hugepages of the default size ({free} free; reserve more: \
                         echo 256 > /proc/sys/vm/nr_hugepages)"
                    )
                })
            }
            Need::Hugetlbfs => hugetlbfs_mount().is_none().then(|| {
                "a writable hugetlbfs mount of the default page size (mount -t hugetlbfs \
                 nodev /dev/hugepages, as root)"
                    .to_string()
            }),
            Need::RawSockets => raw_socket_permission()
                .err()
                .map(|e| format!("AF_PACKET sockets: socket(2) says {e} (needs CAP_NET_RAW)")),
            Need::BpfXskMap => bpf_xskmap_permission().err().map(|e| {
                format!("BPF maps: bpf(BPF_MAP_CREATE) says {e} (needs CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN)")
            }),
            Need::PhysicalAddresses => (!physical_addresses_visible()).then(|| {
                "physical addresses in /proc/self/pagemap (need CAP_SYS_ADMIN in the initial user namespace)"
                    .to_string()
            }),
            Need::Library(lib) => (!can_load_library(lib)).then(|| {
                format!(
                    "the shared library {lib} (apt-get install {})",
                    debian_package(lib)
                )
            }),
            Need::Avx2 => (!cpu_has_avx2()).then(|| "a CPU with AVX2".to_string()),
        }
    }
}

/// What the first unmet need of `needs` lacks, or `None` when all are met.
pub fn missing(needs: &[Need]) -> Option<String> {
    needs.iter().find_map(Need::missing)
}

/// Check `needs` in order; when one is not met, [`skip`](crate::skip) the calling
/// test naming it and return true (the test then returns).
#[track_caller]
pub fn skip_if_missing(needs: &[Need]) -> bool {
    match missing(needs) {
        Some(m) => {
            crate::skip(m);
            true
        }
        None => false,
    }
}

/// What a test needs to create a veth pair (`nicpoll::port::testing::VethPair`).
pub const VETH: [Need<'static>; 2] = [Need::Capability(Cap::NetAdmin), Need::Command("ip")];

/// The Debian package that has `tool` (what `.ci/run` installs).
fn debian_package(tool: &str) -> &str {
    match tool {
        "ip" | "tc" | "bridge" => "iproute2",
        "script" => "bsdutils",
        "setpriv" | "prlimit" => "util-linux",
        "ping" => "iputils-ping",
        "promtool" => "prometheus",
        "cc" | "gcc" => "gcc",
        "qemu-system-x86_64" => "qemu-system-x86",
        "libibverbs.so.1" => "libibverbs1",
        other => other,
    }
}

/// Whether the calling thread has `cap` in its effective set.
pub fn has_capability(cap: Cap) -> bool {
    // thread-self: capabilities are per thread, and tests drop some in a thread.
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|eff| eff & (1 << cap as u32) != 0)
}

/// Whether `tool` is an executable file on `PATH` (no process is started).
pub fn have_command(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The first of `tools` missing from `PATH`, to name in a skip.
pub fn missing_command<'a>(tools: &[&'a str]) -> Option<&'a str> {
    tools.iter().copied().find(|t| !have_command(t))
}

/// Whether the effective user is root (capabilities may still be missing:
/// prefer [`Need::Capability`]).
pub fn is_root() -> bool {
    euid() == 0
}

/// The effective user id, to keep per-user files apart in shared folders.
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Free hugepages of the default size not promised to a mapping yet
/// (HugePages_Free - HugePages_Rsvd in /proc/meminfo).
pub fn free_hugepages() -> u64 {
    let free = meminfo_field("HugePages_Free").unwrap_or(0);
    free.saturating_sub(meminfo_field("HugePages_Rsvd").unwrap_or(0))
}

/// One numeric field of /proc/meminfo (the unit, if any, is dropped).
pub fn meminfo_field(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// Whether a hugetlbfs is mounted at `dir` (read from /proc/self/mounts).
pub fn hugetlbfs_mounted_at(dir: &str) -> bool {
    hugetlbfs_mounts()
        .iter()
        .any(|(at, _)| at == Path::new(dir))
}

/// The hugetlbfs mounts of /proc/self/mounts with their page size in KiB (the
/// `pagesize=` option, else the default size).
fn hugetlbfs_mounts() -> Vec<(PathBuf, u64)> {
    let default_kib = meminfo_field("Hugepagesize").unwrap_or(0);
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 || f[2] != "hugetlbfs" {
                return None;
            }
            let kib = f[3]
                .split(',')
                .find_map(|o| o.strip_prefix("pagesize="))
                .map_or(Some(default_kib), parse_size_kib)?;
            // /proc/mounts escapes blanks in paths as octal (\040).
            Some((PathBuf::from(f[1].replace("\\040", " ")), kib))
        })
        .collect()
}

/// "2M", "1G", "2048k", "1024M" in KiB.
fn parse_size_kib(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    match unit {
        "k" | "K" => Some(n),
        "M" | "m" => Some(n * 1024),
        "G" | "g" => Some(n * 1024 * 1024),
        _ => None,
    }
}

/// The first hugetlbfs mount of the default page size this user may create
/// files in (access(2) W_OK).
pub fn hugetlbfs_mount() -> Option<PathBuf> {
    let default_kib = meminfo_field("Hugepagesize")?;
    hugetlbfs_mounts()
        .into_iter()
        .filter(|(_, kib)| *kib == default_kib)
        .map(|(p, _)| p)
        .find(|p| writable(p))
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) reads the NUL-terminated path, which lives across the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Whether this process may open a raw AF_PACKET socket: `Err` with the OS
/// error when the kernel refuses (EPERM without CAP_NET_RAW). Opened here with
/// libc, not through our drivers, so a driver bug cannot turn into a skip.
pub fn raw_socket_permission() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was returned by socket(2) above and is closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Whether this process may create an XSKMAP, the BPF map AF_XDP redirects
/// into: `Err` with the OS error when the kernel refuses. Made here by the raw
/// bpf(2) system call, not through our af_xdp code.
pub fn bpf_xskmap_permission() -> io::Result<()> {
    // union bpf_attr for BPF_MAP_CREATE (<linux/bpf.h>): map_type, key_size,
    // value_size, max_entries, then fields that may stay zero.
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_XSKMAP: u32 = 17;
    let mut attr = [0u32; 18];
    attr[..4].copy_from_slice(&[BPF_MAP_TYPE_XSKMAP, 4, 4, 1]);
    // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from attr, which lives
    // across the call; the descriptor it returns is closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was returned by bpf(2) above and is closed once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Whether /proc/self/pagemap shows page frame numbers: read here for a page of
/// our own (without CAP_SYS_ADMIN in the initial user namespace the kernel
/// shows 0).
pub fn physical_addresses_visible() -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let page = vec![1u8; 4096 * 2];
    // SAFETY: sysconf(2) with a constant name reads no memory of ours.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let addr = std::hint::black_box(page.as_ptr()) as u64;
    let Ok(mut f) = std::fs::File::open("/proc/self/pagemap") else {
        return false;
    };
    let mut entry = [0u8; 8];
    let read = f
        .seek(SeekFrom::Start(addr / page_size * 8))
        .and_then(|_| f.read_exact(&mut entry));
    let entry = u64::from_le_bytes(entry);
    // Bit 63: present; bits 0-54: the page frame number.
    read.is_ok() && entry >> 63 == 1 && entry & ((1 << 55) - 1) != 0
}

/// Whether the dynamic loader can load `lib` (dlopen(3) here, then dlclose).
pub fn can_load_library(lib: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(lib) else {
        return false;
    };
    // SAFETY: dlopen reads the NUL-terminated name, which lives across the call;
    // a handle it returns is closed once below. Loading runs the library's
    // constructors, as the product's own dlopen would.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    if h.is_null() {
        return false;
    }
    // SAFETY: h came from dlopen above.
    unsafe { libc::dlclose(h) };
    true
}

/// Whether the CPU has AVX2 (CPUID, through std).
pub fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether `e` is the kernel refusing for want of privilege (EPERM/EACCES).
pub fn is_permission_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_parse() {
        assert!(meminfo_field("MemTotal").is_some_and(|kb| kb > 0));
        assert_eq!(meminfo_field("NoSuchField"), None);
    }

    #[test]
    fn commands_are_found_on_path_only_when_executable() {
        assert!(have_command("sh"));
        assert!(!have_command("no-such-tool-nicpoll"));
        assert_eq!(
            missing_command(&["sh", "no-such-tool-nicpoll"]),
            Some("no-such-tool-nicpoll")
        );
    }

    #[test]
    fn unmet_needs_say_what_is_missing_and_how_to_get_it() {
        assert_eq!(Need::Command("sh").missing(), None);
        assert_eq!(Need::Path("/proc/self").missing(), None);
        let m = missing(&[Need::Command("sh"), Need::Command("promtool-nicpoll-x")]).unwrap();
        assert!(m.contains("promtool-nicpoll-x is not on PATH"), "{m}");
        let m = Need::FreeHugepages(u64::MAX).missing().unwrap();
        assert!(m.contains("nr_hugepages"), "{m}");
        let m = Need::Path("/no/such/nicpoll").missing().unwrap();
        assert!(m.contains("/no/such/nicpoll does not exist"), "{m}");
        let m = Need::Library("libnicpoll-none.so.9").missing().unwrap();
        assert!(m.contains("libnicpoll-none.so.9"), "{m}");
        assert_eq!(Need::Library("libc.so.6").missing(), None);
        assert_eq!(debian_package("promtool"), "prometheus");
    }

    #[test]
    fn mount_page_sizes_parse() {
        assert_eq!(parse_size_kib("2M"), Some(2048));
        assert_eq!(parse_size_kib("1G"), Some(1 << 20));
        assert_eq!(parse_size_kib("1024M"), Some(1 << 20));
        assert_eq!(parse_size_kib("64k"), Some(64));
        assert_eq!(parse_size_kib("2X"), None);
        assert_eq!(parse_size_kib("M"), None);
    }

    #[test]
    fn hugetlbfs_mount_is_one_of_the_mounts_and_writable() {
        if let Some(p) = hugetlbfs_mount() {
            assert!(hugetlbfs_mounted_at(p.to_str().unwrap()), "{}", p.display());
            assert!(writable(&p));
        }
        assert!(!hugetlbfs_mounted_at("/proc"));
    }

    #[test]
    fn permission_errors_are_only_eperm_and_eacces() {
        assert!(is_permission_error(&io::Error::from_raw_os_error(
            libc::EPERM
        )));
        assert!(is_permission_error(&io::Error::from_raw_os_error(
            libc::EACCES
        )));
        assert!(!is_permission_error(&io::Error::from_raw_os_error(
            libc::ENOENT
        )));
    }

    const PRIVILEGED: [Need<'static>; 4] = [
        Need::RawSockets,
        Need::BpfXskMap,
        Need::PhysicalAddresses,
        Need::Capability(Cap::NetAdmin),
    ];

    /// Not a test by itself: run by `probes_agree_with_the_kernel` without any
    /// capability; prints what each privileged probe found.
    #[test]
    #[ignore = "run by probes_agree_with_the_kernel in a child process"]
    fn child_reports_probes() {
        for n in PRIVILEGED {
            println!("PROBE {n:?}: {:?}", n.missing());
        }
        println!(
            "PROBE raw: {:?}",
            raw_socket_permission().map_err(|e| e.raw_os_error())
        );
        println!(
            "PROBE bpf: {:?}",
            bpf_xskmap_permission().map_err(|e| e.raw_os_error())
        );
    }

    /// With every capability the privileged probes succeed; without any (a
    /// child under `setpriv --bounding-set=-all`, or this process when it is
    /// unprivileged) the kernel refuses each with EPERM, and each is named.
    #[test]
    fn probes_agree_with_the_kernel() {
        let all_caps = [Cap::NetAdmin, Cap::NetRaw, Cap::SysAdmin, Cap::Bpf]
            .into_iter()
            .all(has_capability);
        let no_caps = [Cap::NetAdmin, Cap::NetRaw, Cap::SysAdmin, Cap::Bpf]
            .into_iter()
            .all(|c| !has_capability(c));
        if no_caps {
            assert_eq!(
                raw_socket_permission().unwrap_err().raw_os_error(),
                Some(libc::EPERM)
            );
            assert_eq!(
                bpf_xskmap_permission().unwrap_err().raw_os_error(),
                Some(libc::EPERM)
            );
            assert!(PRIVILEGED.iter().all(|n| n.missing().is_some()));
            return;
        }
        assert!(
            all_caps,
            "neither all nor none of the capabilities: run as root or as a user"
        );
        raw_socket_permission().unwrap();
        bpf_xskmap_permission().unwrap();
        assert!(physical_addresses_visible());
        assert_eq!(missing(&PRIVILEGED), None);
        if skip_if_missing(&[Need::Command("setpriv")]) {
            return;
        }
        let o = std::process::Command::new("setpriv")
            .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "needs::tests::child_reports_probes",
                "--nocapture",
            ])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        for n in PRIVILEGED {
            let line = out
                .lines()
                .find(|l| l.starts_with(&format!("PROBE {n:?}: ")))
                .unwrap_or_else(|| panic!("no line for {n:?}: {out}"));
            assert!(line.contains("Some("), "{line}");
        }
        let eperm = format!("Err(Some({}))", libc::EPERM);
        assert!(out.contains(&format!("PROBE raw: {eperm}")), "{out}");
        assert!(out.contains(&format!("PROBE bpf: {eperm}")), "{out}");
    }
}
