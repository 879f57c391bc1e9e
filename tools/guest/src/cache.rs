//! The cache directory: where downloads, the unpacked guest kernel, the chroot
//! and run directories live, and the lock that keeps two processes from
//! preparing the same thing at once.
//!
//! `NICPOLL_GUEST_CACHE` names it; otherwise `$XDG_CACHE_HOME/nicpoll-guest`, or
//! `~/.cache/nicpoll-guest`. Every prepared piece is written under a temporary
//! name and renamed into place, then marked done in `state/`; a piece without its
//! mark is redone, so an interrupted preparation picks up where it stopped.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, Result};

/// The harness's cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// An exclusive hold on the cache for preparing it; released when dropped (also
/// when the process dies: the kernel drops a flock with its descriptor).
#[derive(Debug)]
pub(crate) struct CacheLock {
    _file: File,
}

impl Cache {
    /// The cache named by the environment (see the module's documentation).
    pub fn from_env() -> Result<Cache> {
        let dir = if let Some(d) = std::env::var_os("NICPOLL_GUEST_CACHE").filter(|d| !d.is_empty())
        {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(d).join("nicpoll-guest")
        } else if let Some(h) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            PathBuf::from(h).join(".cache/nicpoll-guest")
        } else {
            return Err(Error::new(
                "no cache directory: HOME is not set; set NICPOLL_GUEST_CACHE to an absolute path",
            ));
        };
        Cache::at(dir)
    }

    /// The cache at `dir` (created if missing).
    pub fn at(dir: impl Into<PathBuf>) -> Result<Cache> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::new(format!(
                "cannot create the cache directory {}: {e}; set NICPOLL_GUEST_CACHE to a writable directory",
                dir.display()
            ))
        })?;
        let root = dir.canonicalize().map_err(|e| {
            Error::new(format!(
                "cannot resolve the cache directory {}: {e}",
                dir.display()
            ))
        })?;
        // Paths go into QEMU's key=value options, the chroot's mount table and
        // shell arguments: keep them plain.
        if root.to_string_lossy().contains(|c: char| c.is_whitespace()) {
            return Err(Error::new(format!(
                "the cache directory {} contains white space; set NICPOLL_GUEST_CACHE to a path without",
                root.display()
            )));
        }
        Ok(Cache { root })
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the cache.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The folder of preparation logs.
    pub(crate) fn logs(&self) -> PathBuf {
        self.path("logs")
    }

    /// Whether the piece `name` was prepared completely.
    pub(crate) fn is_done(&self, name: &str) -> bool {
        self.path(&format!("state/{name}.done")).is_file()
    }

    /// Mark the piece `name` as prepared, with a line saying what it holds.
    pub(crate) fn mark_done(&self, name: &str, what: &str) -> Result<()> {
        write_atomic(
            &self.path(&format!("state/{name}.done")),
            format!("{what}\n").as_bytes(),
        )
    }

    /// Take the cache for preparing it, waiting while another process has it.
    pub(crate) fn lock(&self) -> Result<CacheLock> {
        let path = self.path("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                Error::new(format!(
                    "cannot open the cache lock {}: {e}",
                    path.display()
                ))
            })?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            crate::say(&format!(
                "waiting for another process that is preparing {}",
                self.root.display()
            ));
            loop {
                match flock(&file, FlockOperation::LockExclusive) {
                    Ok(()) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => {
                        return Err(Error::new(format!("cannot lock {}: {e}", path.display())));
                    }
                }
            }
        }
        Ok(CacheLock { _file: file })
    }
}

/// Write `bytes` to `path` through a temporary file in the same folder and a
/// rename, so `path` is either absent or complete.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
}

/// The temporary name `path` is prepared under.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Rename `from` to `to` (both in the cache), naming both on failure.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| {
        Error::new(format!(
            "cannot rename {} to {}: {e}",
            from.display(),
            to.display()
        ))
    })
}

/// Remove a file or folder tree if it exists.
pub(crate) fn remove(path: &Path) -> Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    r.map_err(|e| Error::new(format!("cannot remove {}: {e}", path.display())))
}

/// Make `path` executable (mode 0755).
pub(crate) fn make_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::new(format!("cannot chmod {}: {e}", path.display())))
}

/// Create a folder and its parents.
pub(crate) fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_done_only_once_marked_and_files_appear_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().join("c")).unwrap();
        assert!(!cache.is_done("kernel"));
        cache.mark_done("kernel", "6.1.0-0-amd64").unwrap();
        assert!(cache.is_done("kernel"));
        let f = cache.path("a/b/file");
        write_atomic(&f, b"whole").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"whole");
        assert!(!tmp_path(&f).exists());
    }

    #[test]
    fn white_space_in_the_cache_path_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let e = Cache::at(dir.path().join("a b")).unwrap_err().to_string();
        assert!(e.contains("NICPOLL_GUEST_CACHE"), "{e}");
    }

    #[test]
    fn the_lock_excludes_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path()).unwrap();
        let first = cache.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let c2 = cache.clone();
        let t = std::thread::spawn(move || {
            // A second open file description: flock excludes it like another process.
            let _second = c2.lock().unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err()
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
