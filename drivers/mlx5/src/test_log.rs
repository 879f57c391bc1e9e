//! Test helper: the log records the port emits, captured so a test can check
//! what the port tells its user (the start-up warning, the untrusted-VF
//! warning, the report of a removed device). One logger for the test binary;
//! records keep the thread that logged them, since tests run in parallel.
#![deny(unsafe_code)]

use std::sync::{Mutex, OnceLock};
use std::thread::ThreadId;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Capture {
    records: Mutex<Vec<(ThreadId, Level, String)>>,
}

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &Record<'_>) {
        let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        v.push((
            std::thread::current().id(),
            record.level(),
            record.args().to_string(),
        ));
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture {
    records: Mutex::new(Vec::new()),
};
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Capture log records from now on (call before the code whose messages a
/// test checks).
pub fn start() {
    let ours = *INSTALLED.get_or_init(|| {
        let ok = log::set_logger(&CAPTURE).is_ok();
        log::set_max_level(LevelFilter::Trace);
        ok
    });
    assert!(ours, "another logger is installed in this test binary");
}

/// Messages at `level` logged by the calling thread.
pub fn of_this_thread(level: Level) -> Vec<String> {
    let me = std::thread::current().id();
    let v = CAPTURE.records.lock().unwrap_or_else(|e| e.into_inner());
    v.iter()
        .filter(|(t, l, _)| *t == me && *l == level)
        .map(|(_, _, m)| m.clone())
        .collect()
}

/// Messages at `level`, from any thread, that contain `needle`.
pub fn containing(level: Level, needle: &str) -> Vec<String> {
    let v = CAPTURE.records.lock().unwrap_or_else(|e| e.into_inner());
    v.iter()
        .filter(|(_, l, m)| *l == level && m.contains(needle))
        .map(|(_, _, m)| m.clone())
        .collect()
}
