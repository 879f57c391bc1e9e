//! The non-interactive run: start forwarding, print statistics every
//! `--stats-period`, stop on `--run-time`, `--max-packets` or a signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cli::Config;
use crate::session::{RunError, Session};

/// Run until something says stop; returns whether every mbuf came back.
pub fn run(cfg: Config, stop: Arc<AtomicBool>) -> Result<bool, RunError> {
    let tx_first = u32::from(cfg.tx_first);
    let (period, run_time, max_packets) = (cfg.stats_period, cfg.run_time, cfg.max_packets);
    let mut s = Session::new(cfg)?;
    if let Err(e) = s.start_forwarding(tx_first) {
        let _ = s.shutdown("start failed");
        return Err(e);
    }
    let started = Instant::now();
    s.sample_rates();
    let period = period.map(Duration::from_secs_f64);
    let deadline = run_time.map(|t| started + Duration::from_secs_f64(t));
    let mut next_stats = period.map(|p| started + p);
    let mut next_metrics = started;
    let reason = loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if deadline.is_some_and(|d| now >= d) {
            break "run time reached";
        }
        if max_packets.is_some_and(|m| s.fwd_packets() >= m) {
            break "packet count reached";
        }
        if s.lcore_finished() {
            break "a forwarding lcore stopped";
        }
        if now >= next_metrics {
            s.publish_metrics();
            next_metrics = now + Duration::from_millis(250);
        }
        if let (Some(p), Some(t)) = (period, next_stats)
            && now >= t
        {
            s.show_port_stats(None, true);
            next_stats = Some(t + p);
        }
        let mut wake = now + Duration::from_millis(20);
        for t in [deadline, next_stats].into_iter().flatten() {
            wake = wake.min(t);
        }
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    };
    s.shutdown(reason)
}
