//! What the project's tests share.
//!
//! **Skips.** A test that cannot run here (no root, no `tshark`, no free hugepages)
//! calls [`skip`] with what is missing, *before* the product runs, after a check
//! that does not use our own code ([`have_command`], [`is_root`],
//! [`free_hugepages`], [`raw_socket_permission`], an EPERM/EACCES from the OS).
//! [`skip`] prints the reason past the test harness's output capture, records it
//! for the end-of-run report, and — when the `CI` environment variable is set —
//! panics: under CI a skip is a failure, so a run cannot be green without running.
//!
//! **The report.** Every skip of one `cargo test` run is appended to a file named
//! after the cargo process (the tests' parent); [`report_skips`], called by the
//! last test binary of the workspace (`examples/testpmd/tests/zz_skip_report.rs`),
//! prints how many tests were skipped and why.
#![deny(unsafe_code)]

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

mod needs;
pub use needs::*;

/// Whether this run is under CI: `CI` set to anything but "", "0" or "false"
/// (GitHub, GitLab and our `.ci/run` set `CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// The folder holding the skip logs of test runs.
fn skip_dir() -> PathBuf {
    std::env::temp_dir().join("nicpoll-test-skips")
}

/// Create `dir` (a folder every user's test runs share, under the temporary
/// folder) writable by all with the sticky bit, as /tmp is: a run as root must
/// not lock out a later run as a user.
fn shared_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.is_dir() {
        std::fs::create_dir_all(dir)?;
        // Only the owner may change the mode; another user's folder is already shared.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    Ok(())
}

/// The skip log of the `cargo test` run this process belongs to.
fn skip_log() -> PathBuf {
    skip_dir().join(format!("{}.log", std::os::unix::process::parent_id()))
}

/// The running test's name (libtest names each test's thread after it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string()
}

/// The test binary's name without cargo's hash suffix.
fn binary_name() -> String {
    let exe = std::env::args().next().unwrap_or_default();
    let base = Path::new(&exe)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match base.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => base,
    }
}

/// Say that the calling test cannot run because `missing` is absent, record it
/// for the end-of-run report, and return so the test can `return skip(..)`.
///
/// `missing` names what is missing and how to get it ("tshark (apt-get install
/// tshark)", "root: AF_PACKET sockets need CAP_NET_RAW"). Under CI this panics:
/// a skip fails the run.
#[track_caller]
pub fn skip(missing: impl Display) {
    let test = test_name();
    let line = format!("{}\t{test}\t{missing}", binary_name());
    // Written to the process's stderr directly, not through eprintln!, which
    // libtest captures for passing tests: a skip must be seen.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {missing}");
    // One write of one line: O_APPEND keeps lines from parallel tests whole.
    let recorded = shared_dir(&skip_dir()).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(skip_log())?
            .write_all(format!("{line}\n").as_bytes())
    });
    // A skip the report cannot count would let the run look complete.
    if let Err(e) = recorded {
        panic!(
            "skipped, and cannot record it in {}: {e}: {test}: {missing}",
            skip_log().display()
        );
    }
    if under_ci() {
        panic!("skipped under CI (a skip fails the run): {test}: {missing}");
    }
}

/// A host-wide lock on a name (an interface, a network namespace) that tests
/// create with a fixed name: held for the guard's lifetime, so two test runs on
/// one machine (two checkouts, two users) take turns instead of deleting each
/// other's interfaces. Blocks until the name is free.
#[derive(Debug)]
pub struct NameLock {
    _file: std::fs::File,
}

/// Take the host-wide lock on `name` (see [`NameLock`]).
///
/// # Panics
/// When the lock file cannot be created or locked: the test cannot safely go on.
#[allow(unsafe_code)]
pub fn lock_name(name: &str) -> NameLock {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir().join("nicpoll-test-locks");
    let path = dir.join(format!("{name}.lock"));
    // flock(2) needs no write access: a lock file another user created is
    // opened read-only; a new one is readable by all (mode 0644).
    let file = shared_dir(&dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o644)
                .open(&path)
        })
        .or_else(|_| std::fs::File::open(&path))
        .unwrap_or_else(|e| panic!("cannot create the test lock {}: {e}", path.display()));
    loop {
        // SAFETY: flock(2) on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        assert!(
            e.kind() == std::io::ErrorKind::Interrupted,
            "cannot lock {}: {e}",
            path.display()
        );
    }
    // The lock is released when the descriptor closes, also if the test process dies.
    NameLock { _file: file }
}

/// The skips recorded by the current `cargo test` run: (binary, test, reason).
pub fn recorded_skips() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(skip_log()).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.to_string(),
            ))
        })
        .collect()
}

/// Print how many tests this `cargo test` run skipped and why, then remove the
/// run's log (and logs of runs older than a day). Returns the number skipped.
pub fn report_skips() -> usize {
    let skips = recorded_skips();
    let mut out = String::new();
    if skips.is_empty() {
        out.push_str("skip report: no test was skipped in this run\n");
    } else {
        out.push_str(&format!(
            "skip report: {} test(s) did not run in this run:\n",
            skips.len()
        ));
        for (bin, test, why) in &skips {
            out.push_str(&format!("  {bin}: {test}: {why}\n"));
        }
        if !under_ci() {
            out.push_str("  (under CI=true each of these fails the run)\n");
        }
    }
    let _ = std::io::stderr().write_all(out.as_bytes());
    let _ = std::fs::remove_file(skip_log());
    if let Ok(dir) = std::fs::read_dir(skip_dir()) {
        for e in dir.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 86_400);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    skips.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names_lose_the_hash() {
        // The test binary itself: cargo names it nicpoll_testkit-<hash>.
        assert_eq!(binary_name(), "nicpoll_testkit");
    }

    /// Not a test by itself: the child that `skips_fail_only_under_ci` runs.
    #[test]
    #[ignore = "run by skips_fail_only_under_ci in a child process"]
    fn child_skips() {
        skip("a thing this test needs (for the testkit's own test)");
    }

    #[test]
    fn skips_fail_only_under_ci() {
        let run = |ci: Option<&str>| {
            let mut c = std::process::Command::new(std::env::current_exe().unwrap());
            // Without --nocapture: the skip line must get past libtest's capture.
            c.args(["--ignored", "--exact", "tests::child_skips"]);
            match ci {
                Some(v) => c.env("CI", v),
                None => c.env_remove("CI"),
            };
            c.output().unwrap()
        };
        let quiet = run(None);
        assert!(quiet.status.success(), "a skip outside CI passes");
        let err = String::from_utf8_lossy(&quiet.stderr);
        assert!(
            err.contains("SKIPPED tests::child_skips: a thing this test needs"),
            "{err}"
        );
        assert!(run(Some("false")).status.success(), "CI=false is not CI");
        let ci = run(Some("true"));
        assert!(!ci.status.success(), "under CI a skip fails");
        // The children's parent is this process: their skips are in our log.
        let log = skip_dir().join(format!("{}.log", std::process::id()));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text.matches("tests::child_skips").count(), 3, "{text}");
        let _ = std::fs::remove_file(log);
    }

    #[test]
    fn name_locks_exclude_each_other_until_dropped() {
        let first = lock_name("testkit-selftest");
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _second = lock_name("testkit-selftest");
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "a held name cannot be taken"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .expect("the name is free once the first guard is gone");
        t.join().unwrap();
    }
}
