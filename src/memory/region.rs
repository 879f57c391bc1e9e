//! [`DmaRegion`]: one mapping of DMA memory and the IOVAs devices use for it.
//!
//! The mapping is a [`memmap2::MmapRaw`] (`mmap`, `mlock`, and `munmap` when it
//! drops), so this module needs no unsafe code of its own. A region is only ever
//! handed out as a raw pointer: a device may write the memory at any time, so a
//! Rust reference to it would be a lie to the compiler (hence `MmapRaw`, never
//! `MmapMut`, which derefs to `&mut [u8]`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapOptions, MmapRaw};

use super::IovaMode;
use super::hugepage::{self, HugepagePool, HugetlbfsMount};
use super::page::base_page_size;
use super::pagemap::Pagemap;
use crate::error::{Error, Result};

const MLOCK_HINT: &str = "locking DMA memory needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK: \
     run as root or with `ulimit -l unlimited`, or in a pod add IPC_LOCK to \
     securityContext.capabilities.add";
const EXISTS_HINT: &str = "the file is left over from an earlier run or used by another process: \
     remove it if no process uses it, or choose another --file-prefix";
const ACCESS_HINT: &str = "the hugetlbfs mount is not writable by this user: run as root, or mount \
     it with uid=/gid=/mode= options that let this user create files";
const SHORT_HINT: &str = "not enough free hugepages, or a limit reached: the size= option of this \
     hugetlbfs mount, or this cgroup's hugetlb limit (a pod's resources.limits hugepages-2Mi / \
     hugepages-1Gi); reserve more pages (nr_hugepages), raise the limit, or ask for less memory (-m)";
const LIMIT_HINT: &str = "the system has enough free hugepages, so a limit was reached: the size= \
     option of this hugetlbfs mount, or this cgroup's hugetlb limit (a pod's resources.limits \
     hugepages-2Mi / hugepages-1Gi); raise it or ask for less memory (-m)";

/// A mapping of DMA memory: a whole number of pages, populated, and (for
/// hugetlbfs) locked, with the IOVA a device must be given for each byte.
///
/// Dropping the region unmaps the memory and removes its file: every device
/// that may DMA into it must have been stopped first.
pub struct DmaRegion {
    /// The memory, unmapped when this drops (after `Drop::drop` removed the file).
    map: MmapRaw,
    /// Where the region starts in `map`: 0, except for plain memory aligned
    /// beyond its page size ([`DmaRegion::anonymous`] with a larger `align`).
    start: usize,
    len: usize,
    page_size: usize,
    /// log2 of `page_size`, so `iova` shifts instead of dividing.
    page_shift: u32,
    iova_mode: IovaMode,
    /// The physical address of each page, in IOVA mode PA; empty otherwise.
    page_iovas: Box<[u64]>,
    /// The backing file while it exists (not for anonymous or unlinked regions).
    path: Option<PathBuf>,
    /// The open backing file, holding a shared flock for the region's life.
    lock: Option<File>,
    what: String,
}

/// Give the file all its pages now, so a shortage is an error here rather than a
/// SIGBUS on first touch. Retries when a signal interrupts it.
fn fallocate(file: &File, len: usize) -> io::Result<()> {
    loop {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len as u64) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Removes the file we just created if construction fails before a [`DmaRegion`]
/// owns it; never touches a file we did not create (it is armed after O_EXCL).
struct CreatedFile<'a> {
    path: &'a Path,
    armed: bool,
}

impl CreatedFile<'_> {
    /// Remove the file now (so its pages go back to the pool before we count them).
    fn remove_now(&mut self) {
        if self.armed {
            self.armed = false;
            remove_file_logged(self.path, "failed allocation");
        }
    }
}

impl Drop for CreatedFile<'_> {
    fn drop(&mut self) {
        self.remove_now();
    }
}

fn remove_file_logged(path: &Path, what: &str) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        log::warn!("{what}: cannot remove {}: {e}", path.display());
    }
}

fn shortage(what: &str, mount: &HugetlbfsMount, needed: u64, pool: HugepagePool) -> Error {
    let free = pool.available();
    Error::NoFreeHugepages {
        what: what.to_string(),
        page_kib: mount.page_size.kib() as u64,
        needed,
        free,
        suggest: pool.total + needed.saturating_sub(free),
    }
}

impl DmaRegion {
    /// Plain private memory in base pages, populated but not locked: for software
    /// ports and simulated devices (`--no-huge`). IOVA mode PA is refused, since
    /// the kernel may move such pages and change their physical addresses.
    ///
    /// The region starts at a multiple of `align` (a power of two): above the
    /// page size, the mapping is larger by `align - page` and the region is its
    /// aligned part (a mempool whose elements are larger than a page needs them
    /// aligned to their size).
    pub(crate) fn anonymous(
        what: &str,
        len: usize,
        align: usize,
        mode: IovaMode,
    ) -> Result<DmaRegion> {
        if mode == IovaMode::Pa {
            return Err(Error::NoHugetlbfs {
                dir: None,
                reason: format!(
                    "{what}: IOVA mode PA needs hugepages (plain pages can move, so their physical \
                     addresses do not last)"
                ),
            });
        }
        let page = base_page_size();
        debug_assert!(
            len > 0 && len.is_multiple_of(page),
            "{what}: {len} is not a whole number of {page}-byte pages"
        );
        debug_assert!(align.is_power_of_two(), "{what}: alignment {align}");
        let slack = align.saturating_sub(page);
        // MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, read-write.
        let map = MmapOptions::new().len(len + slack).populate().map_anon();
        let map = MmapRaw::from(map.map_err(|source| Error::Os {
            op: format!("mmap {} bytes of anonymous memory for {what}", len + slack),
            hint: (source.raw_os_error() == Some(libc::ENOMEM)).then_some(
                "out of memory or address space (see ulimit -v); ask for less memory (-m)",
            ),
            source,
        })?);
        let addr = map.as_ptr() as usize;
        let start = addr.next_multiple_of(align.max(page)) - addr;
        let mut r = DmaRegion::new(what, map, page, mode, None);
        r.start = start;
        r.len = len;
        Ok(r)
    }

    /// Plain memory that reports the given physical page addresses (IOVA mode
    /// PA, one per base page), for tests of code that only computes with the
    /// IOVAs: nothing may DMA into it.
    #[cfg(test)]
    pub(crate) fn fake_pa(what: &str, page_iovas: &[u64]) -> DmaRegion {
        let len = page_iovas.len() * base_page_size();
        let mut r = DmaRegion::anonymous(what, len, 1, IovaMode::Dc).expect("plain memory");
        r.iova_mode = IovaMode::Pa;
        r.page_iovas = page_iovas.into();
        r
    }

    /// Memory from a new file at `path` on the hugetlbfs `mount`: created (mode
    /// 0600, failing if it exists), given all its pages with `fallocate`, mapped
    /// shared and populated, locked, its page addresses read in IOVA mode PA, and
    /// unlinked at once if `unlink`. A shortage of pages is
    /// [`Error::NoFreeHugepages`]; nothing is left behind on any error.
    pub(crate) fn hugetlbfs(
        what: &str,
        mount: &HugetlbfsMount,
        path: &Path,
        len: usize,
        mode: IovaMode,
        unlink: bool,
    ) -> Result<DmaRegion> {
        // Counted up front so that a request that cannot fit fails without first
        // taking every free page (and starving a process starting beside us).
        let needed = (len / mount.page_size.bytes()) as u64;
        if let Some(pool) = hugepage::pool_in(Path::new("/"), mount.page_size)
            && needed > pool.available()
        {
            return Err(shortage(what, mount, needed, pool));
        }
        Self::hugetlbfs_unchecked(what, mount, path, len, mode, unlink)
    }

    /// [`DmaRegion::hugetlbfs`] without the early count: `fallocate` decides.
    fn hugetlbfs_unchecked(
        what: &str,
        mount: &HugetlbfsMount,
        path: &Path,
        len: usize,
        mode: IovaMode,
        unlink: bool,
    ) -> Result<DmaRegion> {
        let page = mount.page_size.bytes();
        debug_assert!(
            len > 0 && len.is_multiple_of(page),
            "{what}: {len} is not a whole number of {page}-byte pages"
        );
        let needed = (len / page) as u64;
        let io_error =
            |op: &'static str, source: io::Error, hint: Option<&'static str>| Error::Io {
                op,
                path: path.to_path_buf(),
                source,
                hint,
            };

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                let hint = match e.raw_os_error() {
                    Some(libc::EEXIST) => Some(EXISTS_HINT),
                    Some(libc::EACCES | libc::EPERM | libc::EROFS) => Some(ACCESS_HINT),
                    _ => None,
                };
                io_error("create", e, hint)
            })?;
        let mut created = CreatedFile { path, armed: true };

        file.set_len(len as u64)
            .map_err(|e| io_error("ftruncate", e, None))?;
        if let Err(e) = fallocate(&file, len) {
            match e.raw_os_error() {
                // Kernels before 4.3 cannot fallocate on hugetlbfs; the shared
                // mapping below still reserves every page or fails with ENOMEM.
                Some(libc::EOPNOTSUPP | libc::ENOSYS) => {
                    log::debug!(
                        "fallocate {}: {e}; relying on mmap's reservation",
                        path.display()
                    );
                }
                Some(libc::ENOSPC) => {
                    // Give back the pages fallocate did get before counting.
                    drop(file);
                    created.remove_now();
                    return Err(match hugepage::pool_in(Path::new("/"), mount.page_size) {
                        Some(pool) if needed > pool.available() => {
                            shortage(what, mount, needed, pool)
                        }
                        Some(_) => io_error("fallocate", e, Some(LIMIT_HINT)),
                        None => io_error("fallocate", e, Some(SHORT_HINT)),
                    });
                }
                _ => return Err(io_error("fallocate", e, None)),
            }
        }

        // MAP_SHARED | MAP_POPULATE, read-write; hugetlbfs makes it huge. `len`
        // is whole hugepages, so memmap2's munmap (of the length asked for)
        // succeeds.
        let map = MmapOptions::new()
            .len(len)
            .populate()
            .map_raw(&file)
            .map_err(|e| {
                let hint = (e.raw_os_error() == Some(libc::ENOMEM)).then_some(SHORT_HINT);
                io_error("mmap", e, hint)
            })?;
        let base = map.as_mut_ptr() as usize;
        // The mapping keeps the file's pages. The descriptor stays open with a
        // shared lock, so a later start can tell a live file from one a killed
        // process left behind (see `remove_stale_files`), across PID namespaces.
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockShared)
            .map_err(|e| io_error("flock", e.into(), None))?;
        created.armed = false;
        // From here the region's Drop unmaps and removes the file on any error.
        let mut region = DmaRegion::new(what, map, page, mode, Some(path.to_path_buf()));
        region.lock = Some(file);

        if unlink {
            fs::remove_file(path).map_err(|e| io_error("unlink", e, None))?;
            region.path = None;
        }
        if let Err(e) = region.map.lock() {
            let hint =
                matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOMEM)).then_some(MLOCK_HINT);
            return Err(io_error("mlock", e, hint));
        }
        if mode == IovaMode::Pa {
            let pagemap = Pagemap::open()?;
            region.page_iovas = (0..len / page)
                .map(|i| pagemap.physical_address(base + i * page, what))
                .collect::<Result<_>>()?;
        }
        Ok(region)
    }

    fn new(
        what: &str,
        map: MmapRaw,
        page_size: usize,
        mode: IovaMode,
        path: Option<PathBuf>,
    ) -> DmaRegion {
        DmaRegion {
            start: 0,
            len: map.len(),
            map,
            page_size,
            page_shift: page_size.trailing_zeros(),
            iova_mode: mode,
            page_iovas: Box::new([]),
            path,
            lock: None,
            what: what.to_string(),
        }
    }

    /// The first byte. Access through it must be volatile (or otherwise
    /// synchronized with the device) and stay within [`len`](Self::len) bytes, and
    /// no pointer derived from it may be used after the region is dropped.
    pub fn as_ptr(&self) -> *mut u8 {
        // `start` is inside the mapping (0, or below the `align - page` bytes
        // mapped beyond `len`): wrapping_add never wraps here.
        self.map.as_mut_ptr().wrapping_add(self.start)
    }

    /// Length in bytes (a whole number of pages).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes (never true for a region that was mapped).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size of the pages backing the region, in bytes.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// How devices address this region.
    pub fn iova_mode(&self) -> IovaMode {
        self.iova_mode
    }

    /// The IOVA of the byte at `offset`: its virtual address in modes VA and DC,
    /// its physical address in mode PA. Panics if `offset` is not inside the region.
    pub fn iova(&self, offset: usize) -> u64 {
        assert!(
            offset < self.len,
            "{}: offset {offset} outside {} bytes",
            self.what,
            self.len
        );
        match self.iova_mode {
            IovaMode::Va | IovaMode::Dc => self.as_ptr() as u64 + offset as u64,
            IovaMode::Pa => {
                let within = offset & (self.page_size - 1);
                self.page_iovas[offset >> self.page_shift] + within as u64
            }
        }
    }

    /// Whether `len` bytes from `offset` lie inside the region and have contiguous
    /// IOVAs, so that one descriptor can cover them: always within one page, and
    /// across pages unless (mode PA) the pages are not physically adjacent.
    pub fn is_iova_contiguous(&self, offset: usize, len: usize) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        if len == 0 || self.iova_mode != IovaMode::Pa {
            return true;
        }
        let pages = &self.page_iovas[offset >> self.page_shift..=(end - 1) >> self.page_shift];
        pages
            .windows(2)
            .all(|w| w[1] == w[0] + self.page_size as u64)
    }

    /// The backing file, while it exists (`None` for plain memory and for files
    /// unlinked at creation).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// What the memory is for, as named at allocation.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRegion")
            .field("what", &self.what)
            .field("ptr", &self.as_ptr())
            .field("len", &self.len)
            .field("page_size", &self.page_size)
            .field("iova_mode", &self.iova_mode)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        // The memory is unmapped right after, when `map` drops (a hugetlbfs
        // file's pages go back to the pool at its last unmap); every pointer into
        // it came from `as_ptr`, whose users promised not to use it after the
        // region is gone.
        if let Some(path) = &self.path {
            remove_file_logged(path, &self.what);
        }
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // the tests play the device: volatile accesses to the memory
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::ptr;
    use std::sync::{MutexGuard, PoisonError};

    use super::*;
    use crate::memory::pagemap::physical_address;
    use crate::memory::{DmaMemory, MemoryConfig};

    fn write_read_every_page(region: &DmaRegion) {
        let step = region.page_size();
        for (i, offset) in (0..region.len()).step_by(step).enumerate() {
            let value = 0xA5u8 ^ i as u8;
            // SAFETY: offset and offset + step - 1 are inside the live mapping, and
            // no device or other thread uses this region.
            unsafe {
                let p = region.as_ptr().add(offset);
                ptr::write_volatile(p, value);
                ptr::write_volatile(p.add(step - 1), !value);
                assert_eq!(ptr::read_volatile(p), value);
                assert_eq!(ptr::read_volatile(p.add(step - 1)), !value);
            }
        }
    }

    #[test]
    fn regions_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<DmaRegion>();
    }

    #[test]
    fn anonymous_region_is_usable_and_addressed_by_va() {
        let page = base_page_size();
        assert!(page.is_power_of_two() && page >= 4096);
        for mode in [IovaMode::Dc, IovaMode::Va] {
            let region = DmaRegion::anonymous("test ring", 3 * page, page, mode).unwrap();
            assert_eq!(region.len(), 3 * page);
            assert!(!region.is_empty());
            assert_eq!(region.page_size(), page);
            assert_eq!(region.iova_mode(), mode);
            assert_eq!(region.what(), "test ring");
            assert_eq!(region.path(), None);
            assert_eq!(region.as_ptr() as usize % page, 0);
            write_read_every_page(&region);
            assert_eq!(region.iova(0), region.as_ptr() as u64);
            assert_eq!(
                region.iova(page + 5),
                region.as_ptr() as u64 + page as u64 + 5
            );
            assert!(region.is_iova_contiguous(0, 3 * page));
            assert!(region.is_iova_contiguous(3 * page, 0));
            assert!(!region.is_iova_contiguous(page, 2 * page + 1));
            assert!(!region.is_iova_contiguous(usize::MAX, 2));
            assert!(format!("{region:?}").contains("test ring"));
        }
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn iova_outside_the_region_panics() {
        let page = base_page_size();
        DmaRegion::anonymous("x", page, page, IovaMode::Va)
            .unwrap()
            .iova(page);
    }

    #[test]
    fn anonymous_region_refuses_pa() {
        let err = DmaRegion::anonymous("mbufs", base_page_size(), 1, IovaMode::Pa).unwrap_err();
        assert!(matches!(err, Error::NoHugetlbfs { dir: None, .. }), "{err}");
        assert!(
            err.to_string()
                .contains("mbufs: IOVA mode PA needs hugepages"),
            "{err}"
        );
    }

    #[test]
    fn plain_dma_memory_rounds_up_to_pages() {
        let memory = DmaMemory::plain();
        let region = memory.alloc("pool", 100).unwrap();
        assert_eq!(region.len(), base_page_size());
        assert_eq!(memory.used_bytes(), base_page_size());
        write_read_every_page(&region);
    }

    #[test]
    fn existing_file_is_refused_and_kept() {
        // Only the page size of the mount matters before the file is created.
        let dir = tempfile::tempdir().unwrap();
        let mount = HugetlbfsMount {
            path: dir.path().to_path_buf(),
            page_size: hugepage::HugepageSize::TWO_MIB,
        };
        let path = dir.path().join("nicpollmap_1_0");
        fs::write(&path, "someone else's").unwrap();
        let err =
            DmaRegion::hugetlbfs_unchecked("ring", &mount, &path, 2 << 20, IovaMode::Va, false)
                .unwrap_err();
        assert!(matches!(err, Error::Io { op: "create", .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("nicpollmap_1_0") && text.contains("--file-prefix"),
            "{text}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "someone else's");
    }

    /// The mount and its pool, or `None` after a skip when this machine has no
    /// `pages` free hugepages or no hugetlbfs mount this user may write to
    /// (checked from /proc without our code). Once they exist, our own
    /// discovery must find them.
    fn hugepages(pages: u64) -> Option<(MutexGuard<'static, ()>, HugetlbfsMount, HugepagePool)> {
        use nicpoll_testkit::{Need, skip_if_missing};
        let guard = super::super::HUGEPAGE_TESTS
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if skip_if_missing(&[Need::Hugetlbfs, Need::FreeHugepages(pages)]) {
            return None;
        }
        let dir = nicpoll_testkit::hugetlbfs_mount().expect("checked above");
        let mount = hugepage::find_mount(Some(&dir))
            .unwrap_or_else(|e| panic!("{} is a hugetlbfs mount, yet: {e}", dir.display()));
        let pool = hugepage::pool_in(Path::new("/"), mount.page_size)
            .unwrap_or_else(|| panic!("no pool counts for {} pages in /sys", mount.page_size));
        assert!(
            pool.available() >= pages,
            "/proc/meminfo shows {pages} free pages, our pool counts {pool:?}"
        );
        Some((guard, mount, pool))
    }

    fn test_path(mount: &HugetlbfsMount, name: &str) -> PathBuf {
        mount
            .path
            .join(format!("nicpoll-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn hugetlbfs_region_lives_in_its_file() {
        let Some((_lock, mount, _)) = hugepages(2) else {
            return;
        };
        let page = mount.page_size.bytes();
        let path = test_path(&mount, "keep");
        let region =
            DmaRegion::hugetlbfs("test pool", &mount, &path, 2 * page, IovaMode::Va, false)
                .unwrap();
        assert_eq!(region.path(), Some(path.as_path()));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 2 * page as u64);
        assert_eq!(region.page_size(), page);
        assert_eq!(region.as_ptr() as usize % page, 0);
        write_read_every_page(&region);
        assert_eq!(
            region.iova(page + 1),
            region.as_ptr() as u64 + page as u64 + 1
        );
        assert!(region.is_iova_contiguous(0, 2 * page));
        drop(region);
        assert!(!path.exists(), "{} left behind", path.display());
    }

    #[test]
    fn hugetlbfs_region_unlinked_at_once() {
        let Some((_lock, mount, _)) = hugepages(2) else {
            return;
        };
        let page = mount.page_size.bytes();
        let path = test_path(&mount, "unlink");
        let region =
            DmaRegion::hugetlbfs("test pool", &mount, &path, 2 * page, IovaMode::Dc, true).unwrap();
        assert_eq!(region.path(), None);
        assert!(!path.exists());
        write_read_every_page(&region);
    }

    fn assert_shortage(err: &Error, needed: u64, page_kib: usize) {
        let Error::NoFreeHugepages {
            needed: n,
            page_kib: kib,
            free,
            suggest,
            ..
        } = err
        else {
            panic!("expected NoFreeHugepages, got {err}")
        };
        assert_eq!((*n, *kib), (needed, page_kib as u64));
        assert!(*free < needed && *suggest >= needed, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("hugepages-{page_kib}kB/nr_hugepages")),
            "{text}"
        );
    }

    #[test]
    fn too_many_pages_is_refused_up_front() {
        let Some((_lock, mount, pool)) = hugepages(1) else {
            return;
        };
        let needed = pool.total + pool.overcommit + 1;
        let path = test_path(&mount, "precheck");
        let len = needed as usize * mount.page_size.bytes();
        let err =
            DmaRegion::hugetlbfs("big pool", &mount, &path, len, IovaMode::Va, false).unwrap_err();
        assert_shortage(&err, needed, mount.page_size.kib());
        assert!(!path.exists());
    }

    #[test]
    fn fallocate_shortage_is_no_free_hugepages() {
        let Some((_lock, mount, pool)) = hugepages(1) else {
            return;
        };
        let needed = pool.available() + 1;
        let path = test_path(&mount, "fallocate");
        let len = needed as usize * mount.page_size.bytes();
        let err =
            DmaRegion::hugetlbfs_unchecked("big pool", &mount, &path, len, IovaMode::Va, false)
                .unwrap_err();
        assert_shortage(&err, needed, mount.page_size.kib());
        assert!(!path.exists());
        // The pages fallocate did get went back to the pool.
        let after = hugepage::pool_in(Path::new("/"), mount.page_size).unwrap();
        assert_eq!(after.available(), pool.available());
    }

    #[test]
    fn dma_memory_allocates_hugetlbfs_files() {
        let Some((_lock, mount, _)) = hugepages(1) else {
            return;
        };
        let memory = DmaMemory::new(MemoryConfig {
            file_prefix: format!("nicpoll-test-{}-", std::process::id()),
            ..MemoryConfig::default()
        })
        .unwrap();
        assert_eq!(memory.page_size(), mount.page_size.bytes());
        let region = memory.alloc("rx ring", 1).unwrap();
        assert_eq!(region.len(), mount.page_size.bytes());
        let path = region.path().unwrap().to_path_buf();
        assert!(path.exists());
        drop(region);
        assert!(!path.exists());
    }

    #[test]
    fn pa_mode_reads_physical_addresses() {
        if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::PhysicalAddresses]) {
            return;
        }
        let Some((_lock, mount, _)) = hugepages(2) else {
            return;
        };
        let page = mount.page_size.bytes();
        let path = test_path(&mount, "pa");
        let region =
            DmaRegion::hugetlbfs("pa pool", &mount, &path, 2 * page, IovaMode::Pa, true).unwrap();
        let (first, second) = (region.iova(0), region.iova(page));
        for pa in [first, second] {
            assert!(pa != 0 && pa % page as u64 == 0, "{pa:#x}");
        }
        assert_eq!(region.iova(page + 7), second + 7);
        assert_eq!(physical_address(region.as_ptr() as usize).unwrap(), first);
        assert_eq!(
            physical_address(region.as_ptr() as usize + page + 9).unwrap(),
            second + 9
        );
        assert!(region.is_iova_contiguous(page - 64, 64));
        assert_eq!(
            region.is_iova_contiguous(page - 64, 128),
            second == first + page as u64
        );
        write_read_every_page(&region);
    }
}
