//! Running host tools: their output goes to a log file, and a failure names the
//! command, its exit status, the last lines of its log and the usual fix.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// `cmd` as a user would type it (for messages).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last `n` lines of the file at `path` (empty when it cannot be read).
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let Ok(f) = File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = BufReader::new(f).lines().map_while(|l| l.ok()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn open_log(log: &Path) -> Result<File> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::new(format!("cannot open the log {}: {e}", log.display())))
}

fn spawn_error(cmd: &Command, e: std::io::Error, fix: &str) -> Error {
    Error::new(format!(
        "cannot run {}: {e}; {fix}",
        cmd.get_program().to_string_lossy()
    ))
}

fn failed(what: String, status: std::process::ExitStatus, log: &Path, fix: &str) -> Error {
    Error::new(format!(
        "{what} failed ({status}); the last lines of {}:\n{}\n{fix}",
        log.display(),
        tail(log, 25)
    ))
}

/// Run `cmd` with stdin from /dev/null and its output appended to `log`.
pub(crate) fn run_logged(cmd: &mut Command, log: &Path, fix: &str) -> Result<()> {
    let out = open_log(log)?;
    let err = out
        .try_clone()
        .map_err(|e| Error::new(format!("cannot duplicate {}: {e}", log.display())))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| spawn_error(cmd, e, fix))?;
    if status.success() {
        Ok(())
    } else {
        Err(failed(describe(cmd), status, log, fix))
    }
}

/// Run `cmd` and return its standard output; its standard error goes to `log`.
pub(crate) fn output(cmd: &mut Command, log: &Path, fix: &str) -> Result<Vec<u8>> {
    let err = open_log(log)?;
    let out = cmd
        .stdin(Stdio::null())
        .stderr(err)
        .output()
        .map_err(|e| spawn_error(cmd, e, fix))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(failed(describe(cmd), out.status, log, fix))
    }
}

/// Run `first | second`, both logging their standard error to `log`; the second's
/// standard output goes to `log` too unless it was set by the caller.
pub(crate) fn pipe(first: &mut Command, second: &mut Command, log: &Path, fix: &str) -> Result<()> {
    let e1 = open_log(log)?;
    let e2 = open_log(log)?;
    let mut a = first
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(e1)
        .spawn()
        .map_err(|e| spawn_error(first, e, fix))?;
    let Some(a_out) = a.stdout.take() else {
        let _ = a.kill();
        let _ = a.wait();
        return Err(Error::new("no pipe from the first command"));
    };
    let b = second
        .stdin(Stdio::from(a_out))
        .stderr(e2)
        .spawn()
        .map_err(|e| spawn_error(second, e, fix));
    let b_status = match b {
        Ok(mut b) => b.wait(),
        Err(e) => {
            let _ = a.kill();
            let _ = a.wait();
            return Err(e);
        }
    };
    let a_status = a
        .wait()
        .map_err(|e| Error::new(format!("waiting for {}: {e}", describe(first))))?;
    let b_status =
        b_status.map_err(|e| Error::new(format!("waiting for {}: {e}", describe(second))))?;
    let what = format!("{} | {}", describe(first), describe(second));
    if !b_status.success() {
        return Err(failed(what, b_status, log, fix));
    }
    if !a_status.success() {
        return Err(failed(what, a_status, log, fix));
    }
    Ok(())
}
