//! Debian packages from the archive, through apt-get with the harness's own
//! sources and lists, so the guest always gets Debian 12's (bookworm) kernel and
//! busybox whatever the host runs (Debian 12 or 13, Ubuntu): the host's apt
//! configuration (proxies) applies, its sources and pinning do not.
//!
//! The archive is the first `.../debian` URI of the host's apt sources (deb822
//! `*.sources` or one-line `*.list`), or `NICPOLL_GUEST_MIRROR`, or
//! `http://deb.debian.org/debian`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{self, Cache};
use crate::error::{Error, Result};
use crate::exec;

/// The Debian archive keyring the harness's sources and debootstrap verify with.
pub(crate) const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The default archive when neither the environment nor the host names one.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The Debian archive URL to use (see the module's documentation).
pub fn mirror() -> String {
    if let Ok(m) = std::env::var("NICPOLL_GUEST_MIRROR")
        && !m.trim().is_empty()
    {
        return m.trim().trim_end_matches('/').to_string();
    }
    host_mirror(Path::new("/etc/apt")).unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// The first archive URI ending in `/debian` in the apt sources under `etc`.
fn host_mirror(etc: &Path) -> Option<String> {
    let mut files = vec![etc.join("sources.list")];
    if let Ok(dir) = std::fs::read_dir(etc.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            let name = f.to_string_lossy();
            if name.ends_with(".sources") {
                deb822_uris(&text)
            } else if name.ends_with(".list") {
                one_line_uris(&text)
            } else {
                None
            }
        })
        .flatten()
        .find(|u| u.starts_with("http") && u.trim_end_matches('/').ends_with("/debian"))
        .map(|u| u.trim_end_matches('/').to_string())
}

/// `URIs:` values of a deb822 sources file.
fn deb822_uris(text: &str) -> Option<Vec<String>> {
    Some(
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.strip_prefix("URIs:"))
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect(),
    )
}

/// The URIs of `deb` lines in a one-line sources file (`deb [opts] URI suite ...`).
fn one_line_uris(text: &str) -> Option<Vec<String>> {
    Some(
        text.lines()
            .filter_map(|l| {
                let rest = l.trim().strip_prefix("deb ")?.trim_start();
                let rest = match rest.strip_prefix('[') {
                    Some(r) => r.split_once(']')?.1,
                    None => rest,
                };
                rest.split_whitespace().next().map(str::to_string)
            })
            .collect(),
    )
}

/// The HTTP proxy this host's apt uses (`Acquire::http::Proxy`), for the tools
/// that do not read apt's configuration (debootstrap, apt in the chroot).
pub(crate) fn host_proxy() -> Option<String> {
    if std::env::var_os("http_proxy").is_some() {
        return None;
    }
    let out = Command::new("apt-config")
        .args(["shell", "P", "Acquire::http::Proxy"])
        .output()
        .ok()?;
    // Prints P='http://proxy:3128/' when set, nothing otherwise.
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.trim().strip_prefix("P=")?.trim_matches('\'');
    (v.starts_with("http") && !v.is_empty()).then(|| v.to_string())
}

/// apt-get and apt-cache over the harness's own bookworm sources and lists in
/// `CACHE/apt`.
pub(crate) struct Apt {
    dir: PathBuf,
    log: PathBuf,
    mirror: String,
}

impl Apt {
    pub(crate) fn new(cache: &Cache) -> Apt {
        Apt {
            dir: cache.path("apt"),
            log: cache.logs().join("apt.log"),
            mirror: mirror(),
        }
    }

    /// The files apt needs beside the host's configuration.
    fn layout(&self) -> Result<()> {
        for d in ["lists/partial", "cache/archives/partial", "empty"] {
            cache::mkdir(&self.dir.join(d))?;
        }
        let sources = format!(
            "deb [arch=amd64 signed-by={KEYRING}] {m} bookworm main\n\
             deb [arch=amd64 signed-by={KEYRING}] {m} bookworm-updates main\n",
            m = self.mirror
        );
        let list = self.dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            cache::write_atomic(&list, sources.as_bytes())?;
            // New sources: the lists must be fetched again.
            cache::remove(&self.dir.join("lists"))?;
            cache::mkdir(&self.dir.join("lists/partial"))?;
        }
        if !self.dir.join("status").exists() {
            cache::write_atomic(&self.dir.join("status"), b"")?;
        }
        Ok(())
    }

    fn command(&self, tool: &str) -> Command {
        let d = self.dir.display();
        let mut c = Command::new(tool);
        c.env("LC_ALL", "C");
        for o in [
            format!("Dir::Etc::SourceList={d}/sources.list"),
            format!("Dir::Etc::SourceParts={d}/empty"),
            format!("Dir::Etc::Preferences={d}/preferences"),
            format!("Dir::Etc::PreferencesParts={d}/empty"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            "APT::Architecture=amd64".into(),
            "APT::Architectures=amd64".into(),
            "Acquire::Languages=none".into(),
            // The cache may lie where the _apt user cannot write (/root).
            "APT::Sandbox::User=root".into(),
        ] {
            c.arg("-o").arg(o);
        }
        c
    }

    fn fix(&self) -> String {
        format!(
            "check that {} is reachable (apt's proxy settings apply) or set NICPOLL_GUEST_MIRROR to a Debian archive; \
             the keyring {KEYRING} comes with `apt-get install debian-archive-keyring`",
            self.mirror
        )
    }

    /// Fetch the package lists (once per cache, and again when asked).
    pub(crate) fn update(&self) -> Result<()> {
        self.layout()?;
        crate::say(&format!(
            "apt-get update (Debian 12 lists from {})",
            self.mirror
        ));
        exec::run_logged(
            self.command("apt-get").args(["-q", "update"]),
            &self.log,
            &self.fix(),
        )
    }

    fn have_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("lists")).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    fn ensure_lists(&self) -> Result<()> {
        self.layout()?;
        if self.have_lists() {
            Ok(())
        } else {
            self.update()
        }
    }

    /// The kernel ABI name (`6.1.0-NN-amd64`) Debian 12's `linux-image-amd64`
    /// depends on now.
    pub(crate) fn current_kabi(&self) -> Result<String> {
        self.ensure_lists()?;
        let out = exec::output(
            self.command("apt-cache")
                .args(["depends", "--important", "linux-image-amd64"]),
            &self.log,
            &self.fix(),
        )?;
        String::from_utf8_lossy(&out)
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: linux-image-").map(str::to_string))
            .filter(|k| k.ends_with("-amd64"))
            .ok_or_else(|| {
                Error::new(format!(
                    "apt-cache names no linux-image-*-amd64 that linux-image-amd64 depends on (see {}); \
                     set NICPOLL_GUEST_KABI=6.1.0-NN-amd64",
                    self.log.display()
                ))
            })
    }

    /// Download `packages` (`name` or `name=version`) into `dest`, unless a .deb
    /// of each is there already; returns their paths in order.
    pub(crate) fn download(&self, packages: &[String], dest: &Path) -> Result<Vec<PathBuf>> {
        cache::mkdir(dest)?;
        let need: Vec<&String> = packages
            .iter()
            .filter(|p| find_deb(dest, p).is_none())
            .collect();
        if !need.is_empty() {
            self.ensure_lists()?;
            let partial = dest.join(".partial");
            cache::remove(&partial)?;
            cache::mkdir(&partial)?;
            let names: Vec<&str> = need.iter().map(|s| s.as_str()).collect();
            crate::say(&format!("apt-get download {}", names.join(" ")));
            let mut first = self.command("apt-get");
            first
                .current_dir(&partial)
                .args(["-q", "download"])
                .args(&names);
            if exec::run_logged(&mut first, &self.log, &self.fix()).is_err() {
                // Lists older than the archive name files it no longer has.
                self.update()?;
                let mut again = self.command("apt-get");
                again
                    .current_dir(&partial)
                    .args(["-q", "download"])
                    .args(&names);
                exec::run_logged(&mut again, &self.log, &self.fix())?;
            }
            for e in std::fs::read_dir(&partial)
                .map_err(|e| Error::new(format!("cannot read {}: {e}", partial.display())))?
                .flatten()
            {
                cache::rename(&e.path(), &dest.join(e.file_name()))?;
            }
            cache::remove(&partial)?;
        }
        packages
            .iter()
            .map(|p| {
                find_deb(dest, p).ok_or_else(|| {
                    Error::new(format!(
                        "apt-get download {p} left no .deb in {} (see {})",
                        dest.display(),
                        self.log.display()
                    ))
                })
            })
            .collect()
    }
}

/// The .deb of `spec` (`name` or `name=version`) in `dir`. apt names files
/// `name_version_arch.deb`, with the version's epoch colon as `%3a`.
pub(crate) fn find_deb(dir: &Path, spec: &str) -> Option<PathBuf> {
    let (name, version) = match spec.split_once('=') {
        Some((n, v)) => (n, Some(v.replace(':', "%3a"))),
        None => (spec, None),
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let f = p.file_name().unwrap_or_default().to_string_lossy();
            let Some(rest) = f.strip_suffix(".deb") else {
                return false;
            };
            let mut parts = rest.split('_');
            parts.next() == Some(name) && version.as_deref().is_none_or(|v| parts.next() == Some(v))
        })
        .collect();
    found.sort();
    found.pop()
}

/// Unpack `member` (`./usr/bin/x`) of the package file `deb` to `dest`,
/// executable: through a temporary file renamed into place, so an interrupted
/// run leaves no half-written `dest`. `fix` is what a failure tells the user.
pub(crate) fn unpack_executable(
    deb: &Path,
    member: &str,
    dest: &Path,
    log: &Path,
    fix: &str,
) -> Result<()> {
    let tmp = cache::tmp_path(dest);
    let file = std::fs::File::create(&tmp)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", tmp.display())))?;
    exec::pipe(
        Command::new("dpkg-deb").arg("--fsys-tarfile").arg(deb),
        Command::new("tar").args(["-xO", member]).stdout(file),
        log,
        fix,
    )?;
    cache::make_executable(&tmp)?;
    cache::rename(&tmp, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_is_the_first_debian_uri_of_either_sources_format() {
        let etc = tempfile::tempdir().unwrap();
        let d = etc.path().join("sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("debian.sources"),
            "Types: deb\n# URIs: http://old.example/debian\nURIs: http://mirror.example/debian/\n\
             Suites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n",
        )
        .unwrap();
        std::fs::write(
            d.join("other.list"),
            "deb https://x.example/apt stable main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(etc.path()).as_deref(),
            Some("http://mirror.example/debian")
        );
        std::fs::write(
            etc.path().join("sources.list"),
            "# deb http://c.example/debian x main\n\
             deb [signed-by=/k.gpg arch=amd64] http://one.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(etc.path()).as_deref(),
            Some("http://one.example/debian")
        );
        let ubuntu = tempfile::tempdir().unwrap();
        std::fs::write(
            ubuntu.path().join("sources.list"),
            "deb http://archive.ubuntu.com/ubuntu noble main\n",
        )
        .unwrap();
        assert_eq!(host_mirror(ubuntu.path()), None);
    }

    #[test]
    fn debs_are_found_by_name_and_exact_version() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "linux-image-6.1.0-50-amd64_6.1.176-1_amd64.deb",
            "linux-kbuild-6.1_6.1.176-1_amd64.deb",
            "busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb",
        ] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        assert!(find_deb(d.path(), "linux-kbuild-6.1=6.1.176-1").is_some());
        assert!(find_deb(d.path(), "linux-kbuild-6.1=6.1.192-3").is_none());
        assert!(find_deb(d.path(), "linux-kbuild").is_none());
        assert!(find_deb(d.path(), "busybox-static=1:1.35.0-4+deb12u1+b1").is_some());
        assert!(find_deb(d.path(), "linux-image-6.1.0-50-amd64").is_some());
    }
}
