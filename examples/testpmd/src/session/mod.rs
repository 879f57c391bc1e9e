//! A testpmd session: DMA memory, the mbuf pool, the ports, and forwarding that
//! can be started and stopped again (by the run loop, or by interactive
//! commands), with testpmd's statistics.
//!
//! This file holds the session's state and its output; its jobs are in
//! `lifecycle` (memory, pool and ports from creation to shutdown),
//! `forwarding` (lcores started and stopped with their queues) and
//! `presentation` (`show` commands, the final report, telemetry).

mod forwarding;
mod lifecycle;
mod presentation;

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Instant;

use nicpoll::fwd::{FwdCountersRef, LatencyRecorder, LatencyShare, LcoreWork};
use nicpoll::lcore::Lcore;
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::Mempool;
use nicpoll::port::{MacAddr, PortStats};
use nicpoll::stats::{RateMeter, WindowRateMeter};
use nicpoll::vfio::VfioContext;
use nicpoll::{Port, RxQueue, TxQueue};

use crate::cli::{Config, StatsFormat, UsageError};
use crate::metrics::MetricsServer;
use crate::plan::Plan;

use presentation::StreamSnapshot;

/// Why an operation failed: a usage problem (exit 2, or a one-line error at the
/// prompt) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum RunError {
    /// The configuration or command cannot work.
    Usage(UsageError),
    /// Something failed while setting up or running.
    Runtime(anyhow::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(u) => write!(f, "{u}"),
            RunError::Runtime(e) => write!(f, "{e}"),
        }
    }
}

impl From<nicpoll::Error> for RunError {
    fn from(e: nicpoll::Error) -> Self {
        RunError::Runtime(e.into())
    }
}

impl From<UsageError> for RunError {
    fn from(e: UsageError) -> Self {
        RunError::Usage(e)
    }
}

fn usage(msg: impl Into<String>) -> RunError {
    RunError::Usage(UsageError(msg.into()))
}

/// Where output goes: text to stdout (stderr when stdout carries JSON).
pub struct Out {
    /// The statistics format.
    pub format: StatsFormat,
    /// Clear the screen before each periodic block (a terminal, text format).
    pub clear: bool,
}

impl Out {
    /// For the given format, clearing only on a terminal.
    pub fn new(format: StatsFormat) -> Out {
        Out {
            format,
            clear: format == StatsFormat::Text && std::io::stdout().is_terminal(),
        }
    }

    /// Human text.
    pub fn text(&self, s: &str) {
        if self.format == StatsFormat::Text {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        } else {
            eprint!("{s}");
        }
    }

    /// One JSON line (only in JSON format).
    pub fn json(&self, v: serde_json::Value) {
        if self.format == StatsFormat::Json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{v}");
            let _ = o.flush();
        }
    }
}

/// Lifecycle of one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Configured, not started.
    Stopped,
    /// Started: its queues exist.
    Started,
    /// Closed: unusable until the program ends.
    Closed,
}

struct PortSlot {
    port: Box<dyn Port>,
    state: PortState,
    /// The started port's queues while no lcore holds them.
    rx: Vec<Option<Box<dyn RxQueue>>>,
    tx: Vec<Option<Box<dyn TxQueue>>>,
    meter: RateMeter,
}

/// Which (port, queue) each of an lcore's queue slots came from.
type QueueKeys = Vec<(u16, u16)>;

/// An lcore about to start: its CPUs, its work, and where its queues came from.
type PreparedLcore = (Lcore, LcoreWork, QueueKeys, QueueKeys);

struct LcoreRun {
    handle: JoinHandle<Result<LcoreWork, nicpoll::Error>>,
    rx_keys: QueueKeys,
    tx_keys: QueueKeys,
}

struct ActiveFwd {
    plan: Plan,
    counters: Vec<FwdCountersRef>,
    lcores: Vec<LcoreRun>,
    stop: Arc<AtomicBool>,
    started: Instant,
    base: Vec<PortStats>,
    /// The streams' counters at the last `clear fwd stats all` (zero until then).
    stream_base: Vec<StreamSnapshot>,
    /// Whether the lcores count bursts (`record-burst-stats` as it was at `start`).
    record_bursts: bool,
    mode: nicpoll::fwd::FwdMode,
    latency_shares: Vec<LatencyShare>,
}

/// The MAC address frames forwarded out of `port` are sent to: its
/// `--eth-peer`, else the port's default peer.
fn peer_mac(cfg: &Config, port: u16) -> MacAddr {
    cfg.eth_peers
        .get(&port)
        .copied()
        .unwrap_or(MacAddr::local(port))
}

/// The whole state of a testpmd process.
pub struct Session {
    /// The configuration; interactive `set` commands change it between runs.
    pub cfg: Config,
    /// Output.
    pub out: Out,
    /// Kept for the life of the session (it owns the hugepage settings).
    _mem: Arc<DmaMemory>,
    /// The VFIO container of the PCI devices (`-a`), if any; it maps the pool.
    vfio: Option<Arc<VfioContext>>,
    pool: Mempool,
    ports: Vec<PortSlot>,
    fwd: Option<ActiveFwd>,
    metrics: Option<MetricsServer>,
    metric_meters: Vec<WindowRateMeter>,
    /// Latency of the last finished forwarding run (for telemetry after `stop`).
    last_latency: LatencyRecorder,
}
