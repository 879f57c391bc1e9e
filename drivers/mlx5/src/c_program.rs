//! Test helper: compile and run a small C program against the system's
//! headers, for the tests that compare our FFI mirrors and constants with
//! what the C compiler makes of rdma-core's and the kernel's headers
//! (`layout_test`, `netlink`'s header test). Whether the compiler and the
//! header exist is asked of the compiler itself before any code of ours runs;
//! when one is missing the test is skipped, saying what to install (which
//! fails the run under CI, whose `.ci/run` installs both).
#![deny(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A scratch directory and the compiler invocation for one test's programs.
pub struct CProgram {
    cc: String,
    includes: Vec<PathBuf>,
    dir: PathBuf,
}

impl CProgram {
    /// A program that includes `header`, searched first in `includes`. `None`
    /// (after a skip that names `package`) when there is no C compiler or no
    /// such header; `what` says what the test compares.
    pub fn new(
        tag: &str,
        includes: Vec<PathBuf>,
        header: &str,
        package: &str,
        what: &str,
    ) -> Option<CProgram> {
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Command(&cc)]) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "nicpoll-mlx5-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        let p = CProgram { cc, includes, dir };
        if p.header_path(header).is_none() {
            nicpoll_testkit::skip(format!(
                "<{header}> (apt-get install {package}) to compare {what}"
            ));
            return None;
        }
        Some(p)
    }

    /// The scratch directory (removed with the value).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cc);
        for inc in &self.includes {
            cmd.arg("-I").arg(inc);
        }
        cmd
    }

    /// Where the compiler finds `header` (from the preprocessor's line
    /// markers), or `None` if it does not.
    pub fn header_path(&self, header: &str) -> Option<PathBuf> {
        let mut child = self
            .command()
            .args(["-E", "-x", "c", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the C preprocessor");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("#include <{header}>\n").as_bytes())
            .expect("write to the preprocessor");
        let out = child.wait_with_output().expect("run the C preprocessor");
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let path = l.strip_prefix("# ")?.split('"').nth(1)?;
            path.ends_with(&format!("/{header}"))
                .then(|| PathBuf::from(path))
        })
    }

    /// Compile `source` and run it; its standard output. Panics with the
    /// compiler's message if it does not compile.
    pub fn run(&self, name: &str, source: &str) -> String {
        let src = self.dir.join(format!("{name}.c"));
        let exe = self.dir.join(name);
        std::fs::write(&src, source).expect("write the C program");
        let out = self
            .command()
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .expect("run the C compiler");
        assert!(
            out.status.success(),
            "{name}.c does not compile:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = Command::new(&exe).output().expect("run the C program");
        assert!(run.status.success(), "{name} failed");
        String::from_utf8_lossy(&run.stdout).into_owned()
    }
}

impl Drop for CProgram {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
