//! What the tests of the testpmd binary share: starting it, signalling it,
//! and reading its JSON events. Each test file uses part of it.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// The testpmd binary Cargo built for these tests.
pub fn testpmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_testpmd"))
}

/// Common EAL arguments (no PCI, no hugepages, lcores 0 and 1) and `extra`.
pub fn eal(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--no-pci", "--no-huge", "-l", "0,1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Run testpmd with `args` and no input to its end.
pub fn run(args: &[String]) -> Output {
    testpmd()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("testpmd runs")
}

/// Start `cmd` with its stdout and stderr piped to the test (its stdin as
/// the caller set it).
pub fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("testpmd starts")
}

/// Send `sig` (`-TERM`, `-INT`) to `child` with kill(1).
pub fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(st.success(), "kill {sig} {}", child.id());
}

/// Fail unless the run exited with status 0, showing `what` (which run)
/// and its stderr.
pub fn assert_exit_0(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fail unless `text` (a run's output) holds every one of `needles`, naming
/// the first missing one.
pub fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "no {n:?} in:\n{text}");
    }
}

/// The JSON events on stdout (`--stats-format=json`), one a line.
pub fn json_events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The first event named `name`.
pub fn event<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {events:?}"))
}
