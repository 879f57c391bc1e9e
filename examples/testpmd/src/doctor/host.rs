//! The machine below a root (`--root`, `$NICPOLL_ROOT`, `/`) and the
//! environment: what every check reads through.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nicpoll::pci::Sysfs;

use super::Env;

/// The machine below a root, and the environment.
pub(super) struct Host<'a> {
    pub(super) root: PathBuf,
    pub(super) sysfs: Sysfs,
    pub(super) env: &'a Env,
    pub(super) in_pod: bool,
}

impl<'a> Host<'a> {
    pub(super) fn new(root: &Path, env: &'a Env) -> Host<'a> {
        let mut host = Host {
            root: root.to_path_buf(),
            sysfs: Sysfs::new(root),
            env,
            in_pod: false,
        };
        host.in_pod = env.contains_key("KUBERNETES_SERVICE_HOST")
            || host.path("/run/.containerenv").exists()
            || host.path("/.dockerenv").exists();
        host
    }

    /// An absolute machine path inside the root.
    pub(super) fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    pub(super) fn read(&self, abs: &str) -> Option<String> {
        fs::read_to_string(self.path(abs)).ok()
    }

    pub(super) fn read_trimmed(&self, abs: &str) -> Option<String> {
        self.read(abs).map(|s| s.trim().to_string())
    }

    /// A path inside the root as the machine names it.
    pub(super) fn shown(&self, p: &Path) -> String {
        let canon_root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let rel = p
            .strip_prefix(&canon_root)
            .or_else(|_| p.strip_prefix(&self.root))
            .unwrap_or(p);
        if rel.is_absolute() {
            rel.display().to_string()
        } else {
            format!("/{}", rel.display())
        }
    }

    /// Names in a directory, sorted (empty if it cannot be read).
    pub(super) fn list(&self, abs: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path(abs))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `/proc/self/status` field.
    pub(super) fn status_field(&self, key: &str) -> Option<String> {
        self.read("/proc/self/status")?.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    }

    /// The kernel command line as `name -> value` (`""` for bare flags); later
    /// occurrences win; `--` ends the kernel's part.
    pub(super) fn cmdline(&self) -> BTreeMap<String, String> {
        let text = self.read("/proc/cmdline").unwrap_or_default();
        let mut m = BTreeMap::new();
        for word in text.split_whitespace() {
            if word == "--" {
                break;
            }
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    pub(super) fn module_loaded(&self, name: &str) -> bool {
        self.path(format!("/sys/module/{name}")).is_dir()
    }
}
