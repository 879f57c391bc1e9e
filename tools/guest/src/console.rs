//! A running guest: QEMU's serial console read line by line as it comes (a test
//! can wait for a line before it acts on the host side), the program's lines
//! told apart by the init's markers, the exit status taken from the last one,
//! and the run ended by its time limit.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Echo;

const BEGIN: &str = "=== NICPOLL-GUEST BEGIN ===";
const EXIT: &str = "=== NICPOLL-GUEST EXIT ";

/// What a guest run left behind.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The program's exit status; None when the guest ended without one (the
    /// run timed out, the guest's setup failed, the kernel panicked, QEMU
    /// failed: [`Outcome::report`] says which).
    pub status: Option<i32>,
    /// The program's output (standard output and error), line by line.
    pub output: String,
    /// The whole serial console (kernel, init, program), then QEMU's own
    /// standard error.
    pub console: String,
    /// Whether the run was ended by its time limit.
    pub timed_out: bool,
    /// QEMU's exit code (None when killed).
    pub qemu_exit: Option<i32>,
    /// Wall time from QEMU's start to its end.
    pub seconds: f64,
}

impl Outcome {
    /// Whether the program ran and exited 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// The exit code the command-line tool ends with: the program's status, 124
    /// on timeout, 125 when the guest ended without a status.
    pub fn exit_code(&self) -> i32 {
        match (self.status, self.timed_out) {
            (Some(s), _) => s,
            (None, true) => 124,
            (None, false) => 125,
        }
    }

    /// A summary for a failed assertion: the status or why there is none, the
    /// program's output, and the console's last lines.
    pub fn report(&self) -> String {
        let why = match (self.status, self.timed_out) {
            (Some(s), _) => format!("the program exited {s}"),
            (None, true) => format!("the guest run timed out after {:.0} s", self.seconds),
            (None, false) => format!(
                "the guest ended without the program's exit status (QEMU exit {:?}): see the console",
                self.qemu_exit
            ),
        };
        let lines: Vec<&str> = self.console.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!(
            "{why} after {:.1} s\n--- program output:\n{}\n--- last console lines:\n{tail}",
            self.seconds, self.output
        )
    }
}

#[derive(Default)]
struct State {
    console: Vec<String>,
    qemu_stderr: Vec<String>,
    output: Vec<String>,
    in_program: bool,
    status: Option<i32>,
    open_streams: u32,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The exit status in an EXIT marker line.
fn exit_marker(line: &str) -> Option<i32> {
    let rest = &line[line.find(EXIT)? + EXIT.len()..];
    rest.strip_suffix(" ===")?.trim().parse().ok()
}

/// A guest that runs: read its output while it goes, then [`RunningGuest::wait`].
pub struct RunningGuest {
    child: Child,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
    started: Instant,
    timeout: Duration,
    /// Removed when the guest is done (initramfs, QEMU's sockets).
    run_dir: Option<PathBuf>,
}

impl RunningGuest {
    pub(crate) fn start(
        mut child: Child,
        timeout: Duration,
        echo: Echo,
        log: Option<File>,
        run_dir: PathBuf,
    ) -> RunningGuest {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                open_streams: 2,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let log = log.map(|f| Arc::new(Mutex::new(f)));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(reader(out, false, shared.clone(), echo, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(reader(err, true, shared.clone(), echo, log));
        }
        RunningGuest {
            child,
            shared,
            readers,
            started: Instant::now(),
            timeout,
            run_dir: Some(run_dir),
        }
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until a line of the program's output contains `needle`; false when
    /// `timeout` passes or the guest ends first.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if st.output.iter().any(|l| l.contains(needle)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.open_streams == 0 {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The program's output so far.
    pub fn output_so_far(&self) -> String {
        self.shared.lock().output.join("\n")
    }

    /// Wait for QEMU to end (killing it at the run's time limit) and collect
    /// what the run left.
    pub fn wait(mut self) -> Outcome {
        let deadline = self.started + self.timeout;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break None,
            }
        };
        self.finish(status.and_then(|s| s.code()), timed_out)
    }

    /// End the guest now (QEMU is killed) and collect what the run left.
    pub fn kill(mut self) -> Outcome {
        let _ = self.child.kill();
        let code = self.child.wait().ok().and_then(|s| s.code());
        self.finish(code, false)
    }

    fn finish(&mut self, qemu_exit: Option<i32>, timed_out: bool) -> Outcome {
        let seconds = self.started.elapsed().as_secs_f64();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        if let Some(d) = self.run_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        let st = self.shared.lock();
        let mut console = st.console.join("\n");
        if !st.qemu_stderr.is_empty() {
            console.push_str("\n--- QEMU's standard error:\n");
            console.push_str(&st.qemu_stderr.join("\n"));
        }
        Outcome {
            status: st.status,
            output: st.output.join("\n"),
            console,
            timed_out,
            qemu_exit,
            seconds,
        }
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        if self.run_dir.is_some() {
            // Dropped without wait(): do not leave QEMU running.
            let _ = self.child.kill();
            let _ = self.child.wait();
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
            if let Some(d) = self.run_dir.take() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

/// A thread that reads one of QEMU's streams line by line.
fn reader(
    stream: impl Read + Send + 'static,
    is_stderr: bool,
    shared: Arc<Shared>,
    echo: Echo,
    log: Option<Arc<Mutex<File>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&buf);
            let line = text.trim_end_matches(['\n', '\r']).replace('\r', "");
            if let Some(log) = &log {
                let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(f, "{}{line}", if is_stderr { "[qemu] " } else { "" });
            }
            let mut st = shared.lock();
            if is_stderr {
                if echo != Echo::Quiet {
                    eprintln!("[qemu] {line}");
                }
                st.qemu_stderr.push(line);
            } else {
                let shown = match echo {
                    Echo::Console => true,
                    Echo::Program => st.in_program,
                    Echo::Quiet => false,
                };
                if line.ends_with(BEGIN) {
                    st.in_program = true;
                } else if let Some(code) = exit_marker(&line) {
                    st.in_program = false;
                    st.status = Some(code);
                } else if st.in_program {
                    st.output.push(line.clone());
                } else if echo == Echo::Program && line.contains("[guest]") {
                    eprintln!("{line}");
                }
                if shown && exit_marker(&line).is_none() {
                    println!("{line}");
                }
                st.console.push(line);
            }
            drop(st);
            shared.changed.notify_all();
        }
        shared.lock().open_streams -= 1;
        shared.changed.notify_all();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_marker_gives_the_status_even_after_a_glued_prefix() {
        assert_eq!(exit_marker("=== NICPOLL-GUEST EXIT 0 ==="), Some(0));
        assert_eq!(
            exit_marker("Booting from ROM...=== NICPOLL-GUEST EXIT 124 ==="),
            Some(124)
        );
        assert_eq!(exit_marker("=== NICPOLL-GUEST EXIT x ==="), None);
        assert_eq!(exit_marker("echo \"=== NICPOLL-GUEST EXIT $? ===\""), None);
    }

    fn fake_guest(script: &str, timeout: Duration) -> RunningGuest {
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap().keep();
        RunningGuest::start(child, timeout, Echo::Quiet, None, dir)
    }

    #[test]
    fn program_lines_and_status_come_from_between_the_markers() {
        let g = fake_guest(
            "echo 'Linux booting'; echo '=== NICPOLL-GUEST BEGIN ==='; echo 'hello\r'; \
             echo oops >&2; echo '=== NICPOLL-GUEST EXIT 3 ==='; echo 'reboot: Power down'",
            Duration::from_secs(10),
        );
        assert!(g.wait_for_output("hello", Duration::from_secs(10)));
        let out = g.wait();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.output, "hello");
        assert!(out.console.contains("Linux booting") && out.console.contains("oops"));
        assert!(!out.timed_out);
        assert_eq!(out.exit_code(), 3);
    }

    #[test]
    fn a_guest_past_its_limit_is_killed_and_has_no_status() {
        let g = fake_guest(
            "echo '=== NICPOLL-GUEST BEGIN ==='; exec sleep 30",
            Duration::from_millis(300),
        );
        assert!(!g.wait_for_output("never", Duration::from_millis(50)));
        let out = g.wait();
        assert!(out.timed_out);
        assert_eq!(out.status, None);
        assert_eq!(out.exit_code(), 124);
        assert!(out.seconds < 10.0);
        assert!(out.report().contains("timed out"), "{}", out.report());
    }
}
