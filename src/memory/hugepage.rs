//! Hugepage discovery: hugetlbfs mounts, page sizes and the kernel's page pools.
//!
//! Everything here reads plain text files, so every reader takes a filesystem
//! root (`/` in production): a diagnostic tool, or a test, can run the very same
//! code on a fake tree (`<root>/proc/mounts`, `<root>/proc/meminfo`,
//! `<root>/sys/kernel/mm/hugepages/...`). The parsers are pure functions on strings.
#![deny(unsafe_code)]

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// The size of one hugepage, in bytes (a power of two, at least 4 KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HugepageSize(usize);

impl HugepageSize {
    /// 2 MiB pages (x86-64 PMD level).
    pub const TWO_MIB: HugepageSize = HugepageSize(2 * MIB);
    /// 1 GiB pages (x86-64 PUD level).
    pub const ONE_GIB: HugepageSize = HugepageSize(GIB);

    /// A page size from its byte count; `None` unless it is a power of two of at
    /// least 4 KiB (every hugepage size any architecture has).
    pub fn from_bytes(bytes: usize) -> Option<HugepageSize> {
        (bytes.is_power_of_two() && bytes >= 4 * KIB).then_some(HugepageSize(bytes))
    }

    /// Size in bytes.
    pub fn bytes(self) -> usize {
        self.0
    }

    /// Size in KiB, as the kernel names its pools (`hugepages-2048kB`).
    pub fn kib(self) -> usize {
        self.0 / KIB
    }
}

impl fmt::Display for HugepageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(GIB) {
            write!(f, "{} GiB", self.0 / GIB)
        } else if self.0.is_multiple_of(MIB) {
            write!(f, "{} MiB", self.0 / MIB)
        } else {
            write!(f, "{} KiB", self.0 / KIB)
        }
    }
}

/// Parse a page size as the kernel writes it: `2M`, `1G`, `2048k`, `2048 kB`, or a
/// plain byte count (the `pagesize=` mount option accepts all of these).
pub fn parse_size(s: &str) -> Option<HugepageSize> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits);
    let number: usize = number.parse().ok()?;
    // Mount options carry a bare unit letter (`2M`), meminfo writes `kB`: accept
    // both spellings (and `MiB`), but no unknown unit.
    let unit = match suffix.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        _ => return None,
    };
    HugepageSize::from_bytes(number.checked_mul(unit)?)
}

/// A hugetlbfs mount (or, with `--huge-dir`, a directory inside one) where
/// hugepage-backed files are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugetlbfsMount {
    /// The directory the files go in.
    pub path: PathBuf,
    /// The size of the pages every file there is made of.
    pub page_size: HugepageSize,
}

impl fmt::Display for HugetlbfsMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} pages)", self.path.display(), self.page_size)
    }
}

/// The hugepage lines of `/proc/meminfo` (all about the default page size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HugepageMeminfo {
    /// `Hugepagesize:`, the default page size (used by mounts without `pagesize=`).
    pub default_size: Option<HugepageSize>,
    /// `HugePages_Total:`, pages in the default-size pool.
    pub total: Option<u64>,
    /// `HugePages_Free:`, pages of that pool not yet allocated.
    pub free: Option<u64>,
}

/// Parse the hugepage lines of `/proc/meminfo` text; missing lines stay `None`.
pub fn parse_meminfo(text: &str) -> HugepageMeminfo {
    let mut info = HugepageMeminfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "Hugepagesize" => info.default_size = parse_size(value),
            "HugePages_Total" => info.total = value.parse().ok(),
            "HugePages_Free" => info.free = value.parse().ok(),
            _ => {}
        }
    }
    info
}

/// One line of `/proc/mounts`.
#[derive(Debug)]
struct MountLine {
    path: PathBuf,
    fstype: String,
    options: String,
}

/// Undo the octal escapes `/proc/mounts` uses for space, tab, newline and
/// backslash in paths (`\040` and so on), so a path with a space still matches.
fn unescape_mount_path(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(octal) = bytes.get(i + 1..i + 4)
            && octal.iter().all(|b| (b'0'..=b'7').contains(b))
        {
            let value = octal.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn parse_mount_lines(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let path = unescape_mount_path(fields.next()?);
            let fstype = fields.next()?.to_string();
            let options = fields.next().unwrap_or("").to_string();
            Some(MountLine {
                path,
                fstype,
                options,
            })
        })
        .collect()
}

/// The page size of a hugetlbfs mount line: its `pagesize=` option, else the
/// default size (mounts made without the option use it).
fn mount_page_size(line: &MountLine, default_size: Option<HugepageSize>) -> Option<HugepageSize> {
    match line
        .options
        .split(',')
        .find_map(|o| o.strip_prefix("pagesize="))
    {
        Some(size) => parse_size(size),
        None => default_size,
    }
}

/// Whether a later mount hides this one: mounted on the same path or on a parent.
fn is_shadowed(lines: &[MountLine], index: usize) -> bool {
    lines[index + 1..]
        .iter()
        .any(|later| lines[index].path.starts_with(&later.path))
}

/// The visible hugetlbfs mounts in `/proc/mounts` text, in mount order.
///
/// `default_size` is the `Hugepagesize:` of `/proc/meminfo`, for mounts without a
/// `pagesize=` option; a mount whose size is still unknown is left out (logged).
pub fn parse_mounts(text: &str, default_size: Option<HugepageSize>) -> Vec<HugetlbfsMount> {
    hugetlbfs_of(&parse_mount_lines(text), default_size)
}

fn hugetlbfs_of(lines: &[MountLine], default_size: Option<HugepageSize>) -> Vec<HugetlbfsMount> {
    (0..lines.len())
        .filter(|&i| lines[i].fstype == "hugetlbfs" && !is_shadowed(lines, i))
        .filter_map(|i| {
            let line = &lines[i];
            let page_size = mount_page_size(line, default_size);
            if page_size.is_none() {
                log::warn!(
                    "hugetlbfs at {}: cannot tell its page size (options {:?}, no Hugepagesize in /proc/meminfo); ignored",
                    line.path.display(),
                    line.options
                );
            }
            Some(HugetlbfsMount {
                path: line.path.clone(),
                page_size: page_size?,
            })
        })
        .collect()
}

/// `path` as seen from `root`: an absolute path is taken inside `root`, so that a
/// fake tree answers for `/`. With root `/` the path is unchanged.
fn reroot(root: &Path, path: &Path) -> PathBuf {
    if root == Path::new("/") {
        path.to_path_buf()
    } else {
        root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
        hint: None,
    })
}

/// Read the hugepage lines of `<root>/proc/meminfo`.
pub fn meminfo_in(root: &Path) -> Result<HugepageMeminfo> {
    read_text(&root.join("proc/meminfo")).map(|text| parse_meminfo(&text))
}

/// `<root>/proc/mounts` split into its lines, with `root` canonicalized so that
/// mount paths and canonicalized user paths compare.
fn mount_table_in(root: &Path) -> Result<(PathBuf, Vec<MountLine>, Option<HugepageSize>)> {
    let text = read_text(&root.join("proc/mounts"))?;
    // Without meminfo only mounts with an explicit pagesize= are usable; that is
    // no reason to fail, so its absence is not an error here.
    let default_size = meminfo_in(root).ok().and_then(|m| m.default_size);
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    Ok((root, parse_mount_lines(&text), default_size))
}

/// The visible hugetlbfs mounts of the system rooted at `root`, in mount order,
/// with paths inside `root`.
pub fn mounts_in(root: &Path) -> Result<Vec<HugetlbfsMount>> {
    let (root, lines, default_size) = mount_table_in(root)?;
    Ok(visible_hugetlbfs(&root, &lines, default_size))
}

/// The hugetlbfs mounts of `lines` with their paths taken inside `root`.
fn visible_hugetlbfs(
    root: &Path,
    lines: &[MountLine],
    default_size: Option<HugepageSize>,
) -> Vec<HugetlbfsMount> {
    let mut mounts = hugetlbfs_of(lines, default_size);
    for mount in &mut mounts {
        let path = reroot(root, &mount.path);
        // The kernel prints canonical paths; canonicalizing matters only when
        // `root` is a fake tree with symbolic links in it.
        mount.path = fs::canonicalize(&path).unwrap_or(path);
    }
    mounts
}

fn list_mounts(mounts: &[HugetlbfsMount]) -> String {
    if mounts.is_empty() {
        "no hugetlbfs is mounted (/proc/mounts)".to_string()
    } else {
        let list: Vec<String> = mounts.iter().map(|m| m.to_string()).collect();
        format!("hugetlbfs is mounted at {}", list.join(", "))
    }
}

/// Find the hugetlbfs mount to use, on the system rooted at `root`.
///
/// With `dir` (`--huge-dir`, resolved inside `root` when absolute), that directory
/// must be a hugetlbfs mount point or a directory inside one; otherwise the first
/// visible mount of the default page size is taken, or else the first mount.
/// Errors are [`Error::NoHugetlbfs`] naming the directory and listing the mounts
/// that do exist, or [`Error::Io`] when `/proc/mounts` cannot be read.
pub fn find_mount_in(root: &Path, dir: Option<&Path>) -> Result<HugetlbfsMount> {
    let (root, lines, default_size) = mount_table_in(root)?;
    let mounts = visible_hugetlbfs(&root, &lines, default_size);
    let Some(dir) = dir else {
        let preferred = mounts
            .iter()
            .find(|m| Some(m.page_size) == default_size)
            .or_else(|| mounts.first());
        return preferred.cloned().ok_or_else(|| Error::NoHugetlbfs {
            dir: None,
            reason: list_mounts(&mounts),
        });
    };
    let not_usable = |why: String| Error::NoHugetlbfs {
        dir: Some(dir.to_path_buf()),
        reason: format!("{why}; {}", list_mounts(&mounts)),
    };
    let wanted = fs::canonicalize(reroot(&root, dir))
        .map_err(|e| not_usable(format!("cannot resolve it ({e})")))?;
    // The file system `wanted` lives on is the last mount (in mount order) whose
    // path is a prefix of it: a later mount on a parent hides earlier ones below.
    let owner = lines
        .iter()
        .rposition(|line| wanted.starts_with(reroot(&root, &line.path)));
    match owner.map(|i| &lines[i]) {
        Some(line) if line.fstype == "hugetlbfs" => {
            let page_size = mount_page_size(line, default_size).ok_or_else(|| {
                not_usable(format!(
                    "the page size of the hugetlbfs at {} is unknown (no pagesize= option, no Hugepagesize in /proc/meminfo)",
                    line.path.display()
                ))
            })?;
            Ok(HugetlbfsMount {
                path: wanted,
                page_size,
            })
        }
        Some(line) => Err(not_usable(format!(
            "it is on a {} file system ({}), not hugetlbfs",
            line.fstype,
            line.path.display()
        ))),
        None => Err(not_usable("it is on no mounted file system".to_string())),
    }
}

/// [`find_mount_in`] on the real system (root `/`).
pub fn find_mount(dir: Option<&Path>) -> Result<HugetlbfsMount> {
    find_mount_in(Path::new("/"), dir)
}

/// The kernel's pool of one page size, from
/// `<root>/sys/kernel/mm/hugepages/hugepages-<kib>kB/`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HugepagePool {
    /// `nr_hugepages`: pages in the persistent pool.
    pub total: u64,
    /// `free_hugepages`: pages not allocated (some may be reserved).
    pub free: u64,
    /// `resv_hugepages`: free pages promised to mappings that have not faulted them in.
    pub reserved: u64,
    /// `surplus_hugepages`: pages allocated beyond the pool under overcommit.
    pub surplus: u64,
    /// `nr_overcommit_hugepages`: how many surplus pages may exist.
    pub overcommit: u64,
}

impl HugepagePool {
    /// Pages a new allocation can still get: free and unreserved, plus the
    /// overcommit headroom.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved) + self.overcommit.saturating_sub(self.surplus)
    }
}

/// Read the pool of `size` pages under `root`; `None` if the kernel has no such
/// pool (or its `nr_hugepages`/`free_hugepages` are unreadable). The other
/// counters read as 0 when absent.
pub fn pool_in(root: &Path, size: HugepageSize) -> Option<HugepagePool> {
    let dir = root.join(format!(
        "sys/kernel/mm/hugepages/hugepages-{}kB",
        size.kib()
    ));
    let read = |name: &str| -> Option<u64> {
        fs::read_to_string(dir.join(name)).ok()?.trim().parse().ok()
    };
    Some(HugepagePool {
        total: read("nr_hugepages")?,
        free: read("free_hugepages")?,
        reserved: read("resv_hugepages").unwrap_or(0),
        surplus: read("surplus_hugepages").unwrap_or(0),
        overcommit: read("nr_overcommit_hugepages").unwrap_or(0),
    })
}

/// `(total, free)` pages of the `size` pool under `root` (see [`pool_in`]).
pub fn pool_counts(root: &Path, size: HugepageSize) -> Option<(u64, u64)> {
    pool_in(root, size).map(|p| (p.total, p.free))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO_2M: &str = "MemTotal:       16314040 kB\n\
        HugePages_Total:      64\n\
        HugePages_Free:       60\n\
        HugePages_Rsvd:        0\n\
        HugePages_Surp:        0\n\
        Hugepagesize:       2048 kB\n\
        Hugetlb:          131072 kB\n";

    const MOUNTS: &str = "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
        proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n\
        /dev/vda1 / ext4 rw,relatime 0 0\n\
        udev /dev devtmpfs rw,nosuid,relatime,size=8131560k,mode=755 0 0\n\
        hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n\
        nodev /mnt/huge\\0401G hugetlbfs rw,relatime,pagesize=1024M 0 0\n";

    #[test]
    fn sizes_parse_and_display() {
        assert_eq!(parse_size("2M"), Some(HugepageSize::TWO_MIB));
        assert_eq!(parse_size("1G"), Some(HugepageSize::ONE_GIB));
        assert_eq!(parse_size("1024M"), Some(HugepageSize::ONE_GIB));
        assert_eq!(parse_size("2048k"), Some(HugepageSize::TWO_MIB));
        assert_eq!(parse_size("2048 kB"), Some(HugepageSize::TWO_MIB));
        assert_eq!(parse_size("2097152"), Some(HugepageSize::TWO_MIB));
        assert_eq!(parse_size("64K").map(HugepageSize::kib), Some(64));
        for bad in [
            "",
            "M",
            "3M",
            "2X",
            "2 M extra",
            "1k",
            "99999999999999999999G",
        ] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
        assert_eq!(HugepageSize::TWO_MIB.to_string(), "2 MiB");
        assert_eq!(HugepageSize::ONE_GIB.to_string(), "1 GiB");
        assert_eq!(parse_size("64k").unwrap().to_string(), "64 KiB");
        assert_eq!(HugepageSize::TWO_MIB.kib(), 2048);
        assert_eq!(HugepageSize::ONE_GIB.bytes(), 1 << 30);
    }

    #[test]
    fn meminfo_parses() {
        let info = parse_meminfo(MEMINFO_2M);
        assert_eq!(info.default_size, Some(HugepageSize::TWO_MIB));
        assert_eq!(info.total, Some(64));
        assert_eq!(info.free, Some(60));
        assert_eq!(
            parse_meminfo("MemTotal: 1 kB\n"),
            HugepageMeminfo::default()
        );
    }

    #[test]
    fn mounts_parse_with_page_sizes() {
        let mounts = parse_mounts(MOUNTS, Some(HugepageSize::TWO_MIB));
        assert_eq!(
            mounts,
            vec![
                HugetlbfsMount {
                    path: "/dev/hugepages".into(),
                    page_size: HugepageSize::TWO_MIB
                },
                HugetlbfsMount {
                    path: "/mnt/huge 1G".into(),
                    page_size: HugepageSize::ONE_GIB
                },
            ]
        );
    }

    #[test]
    fn mount_without_pagesize_uses_the_default() {
        let text = "none /dev/hugepages hugetlbfs rw,relatime 0 0\n";
        let mounts = parse_mounts(text, Some(HugepageSize::ONE_GIB));
        assert_eq!(mounts[0].page_size, HugepageSize::ONE_GIB);
        // Unknown size: the mount cannot be used, so it is not offered.
        assert!(parse_mounts(text, None).is_empty());
    }

    #[test]
    fn no_hugetlbfs_and_shadowed_mounts() {
        assert!(parse_mounts("/dev/vda1 / ext4 rw 0 0\n", Some(HugepageSize::TWO_MIB)).is_empty());
        assert!(parse_mounts("", None).is_empty());
        // A tmpfs mounted later over the same directory (or a parent) hides it.
        let hidden = "nodev /dev/hugepages hugetlbfs rw,pagesize=2M 0 0\n\
                      tmpfs /dev tmpfs rw 0 0\n";
        assert!(parse_mounts(hidden, None).is_empty());
        // Garbage lines are skipped, not fatal.
        let messy = "garbage\n\nnodev /h hugetlbfs rw,pagesize=banana 0 0\nnodev /g hugetlbfs pagesize=1G\n";
        let mounts = parse_mounts(messy, None);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].path, Path::new("/g"));
    }

    /// A fake system: `/proc/mounts`, `/proc/meminfo`, the mount points and the
    /// 2 MiB pool files, under a temporary root.
    fn fake_root(mounts: &str, meminfo: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        fs::create_dir_all(p.join("proc")).unwrap();
        fs::write(p.join("proc/mounts"), mounts).unwrap();
        fs::write(p.join("proc/meminfo"), meminfo).unwrap();
        fs::create_dir_all(p.join("dev/hugepages/app")).unwrap();
        fs::create_dir_all(p.join("mnt/huge 1G")).unwrap();
        fs::create_dir_all(p.join("tmp")).unwrap();
        let pool = p.join("sys/kernel/mm/hugepages/hugepages-2048kB");
        fs::create_dir_all(&pool).unwrap();
        fs::write(pool.join("nr_hugepages"), "64\n").unwrap();
        fs::write(pool.join("free_hugepages"), "60\n").unwrap();
        fs::write(pool.join("resv_hugepages"), "4\n").unwrap();
        root
    }

    #[test]
    fn find_mount_on_a_fake_root() {
        let root = fake_root(MOUNTS, MEMINFO_2M);
        let r = fs::canonicalize(root.path()).unwrap();

        let m = find_mount_in(root.path(), None).unwrap();
        assert_eq!(m.path, r.join("dev/hugepages"));
        assert_eq!(m.page_size, HugepageSize::TWO_MIB);

        // The default page size is preferred over mount order.
        let meminfo_1g = MEMINFO_2M.replace("2048 kB", "1048576 kB");
        let root1g = fake_root(MOUNTS, &meminfo_1g);
        let m = find_mount_in(root1g.path(), None).unwrap();
        assert_eq!(m.page_size, HugepageSize::ONE_GIB);

        let m = find_mount_in(root.path(), Some(Path::new("/mnt/huge 1G"))).unwrap();
        assert_eq!(m.path, r.join("mnt/huge 1G"));
        assert_eq!(m.page_size, HugepageSize::ONE_GIB);

        // Non-canonical spelling and a directory inside the mount both work.
        let m = find_mount_in(root.path(), Some(Path::new("/dev/../dev/hugepages/app/"))).unwrap();
        assert_eq!(m.path, r.join("dev/hugepages/app"));
        assert_eq!(m.page_size, HugepageSize::TWO_MIB);
    }

    #[test]
    fn find_mount_errors_name_the_dir_and_the_mounts() {
        let root = fake_root(MOUNTS, MEMINFO_2M);
        let err = find_mount_in(root.path(), Some(Path::new("/tmp"))).unwrap_err();
        let Error::NoHugetlbfs { dir, reason } = &err else {
            panic!("{err}")
        };
        assert_eq!(dir.as_deref(), Some(Path::new("/tmp")));
        assert!(reason.contains("ext4"), "{reason}");
        assert!(reason.contains("dev/hugepages (2 MiB pages)"), "{reason}");
        assert!(reason.contains("huge 1G (1 GiB pages)"), "{reason}");
        assert!(err.to_string().contains(" at /tmp:"), "{err}");

        let err = find_mount_in(root.path(), Some(Path::new("/does/not/exist"))).unwrap_err();
        assert!(err.to_string().contains("cannot resolve"), "{err}");

        let bare = fake_root("/dev/vda1 / ext4 rw 0 0\n", MEMINFO_2M);
        let err = find_mount_in(bare.path(), None).unwrap_err();
        let Error::NoHugetlbfs { dir: None, reason } = &err else {
            panic!("{err}")
        };
        assert_eq!(reason, "no hugetlbfs is mounted (/proc/mounts)");
        let err = find_mount_in(bare.path(), Some(Path::new("/dev/hugepages"))).unwrap_err();
        assert!(err.to_string().contains("no hugetlbfs is mounted"), "{err}");

        let nothing = tempfile::tempdir().unwrap();
        let err = find_mount_in(nothing.path(), None).unwrap_err();
        assert!(matches!(err, Error::Io { op: "read", .. }), "{err}");
    }

    #[test]
    fn pool_counts_on_a_fake_root() {
        let root = fake_root(MOUNTS, MEMINFO_2M);
        assert_eq!(
            pool_counts(root.path(), HugepageSize::TWO_MIB),
            Some((64, 60))
        );
        assert_eq!(pool_counts(root.path(), HugepageSize::ONE_GIB), None);
        let pool = pool_in(root.path(), HugepageSize::TWO_MIB).unwrap();
        assert_eq!(pool.reserved, 4);
        assert_eq!(pool.available(), 56);
        let overcommit = HugepagePool {
            overcommit: 8,
            surplus: 3,
            ..pool
        };
        assert_eq!(overcommit.available(), 61);
    }
}
