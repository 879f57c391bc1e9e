//! DMA memory: hugepage-backed (or, for software ports, plain) memory whose
//! device addresses (IOVAs) are known.
//!
//! A [`DmaMemory`] is the process's allocator, configured once from the EAL-style
//! options (`--huge-dir`, `--no-huge`, `-m`, `--file-prefix`, `--iova-mode`). Each
//! [`DmaRegion`] it hands out is a whole number of pages, mapped from a file on a
//! hugetlbfs mount (so a peer process could map it too), locked, and populated;
//! its IOVA is the virtual address (IOVA mode VA, an IOMMU maps it), the physical
//! address read from `/proc/self/pagemap` (mode PA, no-IOMMU), or irrelevant
//! (mode DC, no device ever sees it).
//!
//! DMA memory is shared with devices: nothing here hands out a Rust reference to it.

pub mod hugepage;
mod page;
mod pagemap;
mod region;

use std::path::PathBuf;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::error::{Error, Result};
pub use hugepage::{HugepageSize, HugetlbfsMount};
pub use region::DmaRegion;

/// How devices address our memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IovaMode {
    /// IOVA = virtual address; an IOMMU (VFIO type1) maps it.
    Va,
    /// IOVA = physical address from /proc/self/pagemap (VFIO no-IOMMU). Needs
    /// CAP_SYS_ADMIN to read, and pages that never move (hugetlbfs).
    Pa,
    /// No device will address this memory (software ports, simulated devices that
    /// translate virtual addresses); the IOVA reported is the virtual address.
    Dc,
}

impl IovaMode {
    /// Parse the `--iova-mode` value.
    pub fn parse(s: &str) -> Option<IovaMode> {
        match s {
            "va" => Some(IovaMode::Va),
            "pa" => Some(IovaMode::Pa),
            "dc" => Some(IovaMode::Dc),
            _ => None,
        }
    }

    /// The lower-case name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            IovaMode::Va => "va",
            IovaMode::Pa => "pa",
            IovaMode::Dc => "dc",
        }
    }
}

/// How the process's DMA memory is to be obtained.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// Plain (non-hugepage) memory: enough for software ports; IOVA mode becomes DC.
    pub no_huge: bool,
    /// Use this hugetlbfs mount instead of the first one found.
    pub huge_dir: Option<PathBuf>,
    /// Upper bound on all DMA memory, in bytes (`-m`, or the sum of `--socket-mem`).
    pub limit_bytes: Option<usize>,
    /// Prefix of the hugepage file names, so two processes do not collide.
    pub file_prefix: String,
    /// Forced IOVA mode; `None` picks DC for software-only runs.
    pub iova_mode: Option<IovaMode>,
    /// Remove the hugepage files right after mapping them (nothing left behind,
    /// no peer can map them).
    pub huge_unlink: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            no_huge: false,
            huge_dir: None,
            limit_bytes: None,
            file_prefix: "nicpoll".to_string(),
            iova_mode: None,
            huge_unlink: false,
        }
    }
}

/// The process's DMA memory allocator.
#[derive(Debug)]
pub struct DmaMemory {
    config: MemoryConfig,
    mount: Option<HugetlbfsMount>,
    iova_mode: IovaMode,
    used: AtomicUsize,
}

static NEXT_SEGMENT: AtomicU32 = AtomicU32::new(0);

/// Remove hugepage files named `<prefix>map_*` in `dir` that no process holds:
/// a live region keeps a shared flock on its file, so a file we can lock
/// exclusively was left by a process that was killed. Returns what was removed.
pub fn remove_stale_files(dir: &std::path::Path, prefix: &str) -> Vec<(PathBuf, u64)> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    let start = format!("{prefix}map_");
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(&start) {
            continue;
        }
        let path = e.path();
        let Ok(f) = std::fs::File::open(&path) else {
            continue;
        };
        if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
            if std::fs::remove_file(&path).is_ok() {
                removed.push((path, bytes));
            }
        }
    }
    removed
}

impl DmaMemory {
    /// Set up the allocator: find the hugetlbfs mount (unless `no_huge`) and settle
    /// the IOVA mode. Does not reserve memory yet.
    pub fn new(config: MemoryConfig) -> Result<DmaMemory> {
        let mount = if config.no_huge {
            None
        } else {
            Some(hugepage::find_mount(config.huge_dir.as_deref())?)
        };
        if let Some(m) = &mount {
            for (path, bytes) in remove_stale_files(&m.path, &config.file_prefix) {
                log::warn!(
                    "removed {} ({} MiB of hugepages) left behind by a process that died",
                    path.display(),
                    bytes >> 20
                );
            }
        }
        let iova_mode = match (config.iova_mode, config.no_huge) {
            (Some(IovaMode::Pa), true) => {
                return Err(Error::NoHugetlbfs {
                    dir: None,
                    reason:
                        "--iova-mode=pa needs hugepages (plain pages move), but --no-huge was given"
                            .into(),
                });
            }
            (Some(mode), _) => mode,
            (None, _) => IovaMode::Dc,
        };
        if iova_mode == IovaMode::Pa {
            pagemap::check_physical_addresses_readable()?;
        }
        Ok(DmaMemory {
            config,
            mount,
            iova_mode,
            used: AtomicUsize::new(0),
        })
    }

    /// Plain memory for tests and software ports: no hugepages, IOVA mode DC.
    pub fn plain() -> DmaMemory {
        DmaMemory::new(MemoryConfig {
            no_huge: true,
            ..MemoryConfig::default()
        })
        .expect("plain memory needs no discovery")
    }

    /// Allocate at least `len` bytes (rounded up to whole pages) for `what`.
    pub fn alloc(&self, what: &str, len: usize) -> Result<DmaRegion> {
        self.alloc_aligned(what, len, 1)
    }

    /// As [`alloc`](Self::alloc), the region starting at a multiple of `align`
    /// (a power of two; at most 1 MiB): a mempool whose elements are larger
    /// than a page keeps them aligned to their size. Hugepages (2 MiB, 1 GiB)
    /// are aligned enough; plain memory maps up to `align` more bytes.
    pub fn alloc_aligned(&self, what: &str, len: usize, align: usize) -> Result<DmaRegion> {
        assert!(
            align.is_power_of_two() && align <= 1 << 20,
            "{what}: alignment {align} is not a power of two up to 1 MiB"
        );
        let page = self.page_size();
        let len = len.max(1).div_ceil(page) * page;
        let used = self.used.load(Ordering::Relaxed);
        if let Some(limit) = self.config.limit_bytes
            && used + len > limit
        {
            return Err(Error::MemoryLimit {
                what: what.to_string(),
                requested: len,
                used,
                limit,
            });
        }
        let region = match &self.mount {
            None => DmaRegion::anonymous(what, len, align, self.iova_mode)?,
            Some(mount) => {
                // Process-wide, so two allocators with one prefix never collide.
                let seg = NEXT_SEGMENT.fetch_add(1, Ordering::Relaxed);
                let path = mount.path.join(format!(
                    "{}map_{}_{}",
                    self.config.file_prefix,
                    std::process::id(),
                    seg
                ));
                DmaRegion::hugetlbfs(
                    what,
                    mount,
                    &path,
                    len,
                    self.iova_mode,
                    self.config.huge_unlink,
                )?
            }
        };
        self.used.fetch_add(len, Ordering::Relaxed);
        Ok(region)
    }

    /// Page size of every region this allocator hands out.
    pub fn page_size(&self) -> usize {
        match &self.mount {
            Some(m) => m.page_size.bytes(),
            None => page::base_page_size(),
        }
    }

    /// The IOVA mode in force.
    pub fn iova_mode(&self) -> IovaMode {
        self.iova_mode
    }

    /// The hugetlbfs mount used, if any.
    pub fn mount(&self) -> Option<&HugetlbfsMount> {
        self.mount.as_ref()
    }

    /// Bytes handed out so far.
    pub fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// One line for the start-up log: where memory comes from and how it is addressed.
    pub fn describe(&self) -> String {
        match &self.mount {
            Some(m) => format!(
                "hugepages: {} pages at {}, IOVA mode {}",
                m.page_size,
                m.path.display(),
                self.iova_mode.name()
            ),
            None => format!(
                "plain {} KiB pages (--no-huge), IOVA mode {}",
                self.page_size() / 1024,
                self.iova_mode.name()
            ),
        }
    }
}

/// Tests in this crate that take hugepages hold this lock: the shortage tests
/// count the free pages and then briefly take every one.
#[cfg(test)]
pub(crate) static HUGEPAGE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod stale_tests {
    use super::remove_stale_files;

    #[test]
    fn only_unlocked_files_with_our_prefix_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("npmap_123_0");
        let live = dir.path().join("npmap_456_0");
        let other = dir.path().join("othermap_1_0");
        for p in [&stale, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let holder = std::fs::File::open(&live).unwrap();
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockShared).unwrap();
        let removed = remove_stale_files(dir.path(), "np");
        assert_eq!(
            removed.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            vec![stale.clone()]
        );
        assert!(!stale.exists() && live.exists() && other.exists());
        drop(holder);
        assert_eq!(
            remove_stale_files(dir.path(), "np").len(),
            1,
            "unlocked once its holder is gone"
        );
    }
}
