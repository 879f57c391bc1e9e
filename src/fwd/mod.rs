//! Forwarding: engines (one file each), streams, and the per-lcore poll loop.
//!
//! A *stream* moves packets from one receive queue to one transmit queue. Streams
//! are spread over the forwarding lcores; each lcore owns the queues its streams
//! use and runs [`run_lcore`] until the stop flag is set. An [`Engine`] decides
//! what happens to each burst, as testpmd's forwarding modes do.
//!
//! The loop allocates nothing, takes no lock, and dispatches dynamically only for
//! the queue calls (one per burst). Counters are per stream, single-writer, and
//! aggregated by the main thread.
#![deny(unsafe_code)]

#[cfg(test)]
mod chain_tests;
pub mod config;
pub mod counters;
pub mod fivetswap;
pub mod flowgen;
pub mod icmpecho;
pub mod io;
pub mod latency;
pub mod mac;
pub mod macswap;
pub mod rxonly;
#[cfg(test)]
mod testutil;
pub mod txonly;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use config::{EngineConfig, FwdMode, RetryConfig, StreamSpec, TxPacketConfig};
pub use counters::{
    BurstCounters, BurstHistogram, BurstSpread, FwdCounters, FwdCountersRef, FwdStats,
};
pub use latency::LatencyRecorder;

use crate::mbuf::MbufBatch;
use crate::mempool::Mempool;
use crate::port::{MacAddr, RxQueue, TxQueue};

/// Iterations of the stream loop between two looks at the stop flag.
pub const STOP_CHECK_INTERVAL: u32 = 1024;

/// What one stream knows about its ports.
#[derive(Clone, Debug)]
pub struct StreamInfo {
    /// Index of the stream in the whole configuration (stamped as the flow id
    /// into generated packets).
    pub id: u16,
    /// Where it receives and sends.
    pub spec: StreamSpec,
    /// The transmit port's own MAC (source MAC of generated and mac-forwarded packets).
    pub tx_mac: MacAddr,
    /// The peer MAC of the transmit port (`--eth-peer`).
    pub peer_mac: MacAddr,
}

/// Everything an engine may use for one burst of one stream.
pub struct StreamCtx<'a> {
    /// The stream.
    pub info: &'a StreamInfo,
    /// Its receive queue.
    pub rx: &'a mut dyn RxQueue,
    /// Its transmit queue.
    pub tx: &'a mut dyn TxQueue,
    /// A scratch batch at the configured burst size, empty on entry.
    pub batch: &'a mut MbufBatch,
    /// The pool generators allocate from.
    pub pool: &'a Mempool,
    /// The stream's counters.
    pub counters: &'a FwdCounters,
    /// The lcore's latency and sequence recorder.
    pub latency: &'a mut LatencyRecorder,
    /// Transmit retry settings.
    pub retry: RetryConfig,
    /// Count every receive and transmit call by size in `counters.bursts`
    /// ([`EngineConfig::record_burst_stats`]). The forwarding loop sets it
    /// from a constant, so that with it off the test disappears once
    /// `receive`/`transmit` are inlined into the engine.
    pub record_bursts: bool,
}

impl StreamCtx<'_> {
    /// Send everything in the batch (testpmd's `common_fwd_stream_transmit`):
    /// one burst, then, if retry is on and some are left, up to `retry.count`
    /// more after `retry.delay_us` each; what is still left is freed and counted
    /// as `fwd_dropped`.
    #[inline(always)]
    pub fn transmit(&mut self) {
        let want = self.batch.len();
        if want == 0 {
            return;
        }
        let mut sent = self.tx.tx_burst(self.batch);
        if sent < want && self.retry.enabled {
            let mut tries = 0;
            while !self.batch.is_empty() && tries < self.retry.count {
                if self.retry.delay_us > 0 {
                    spin_delay_us(self.retry.delay_us);
                }
                sent += self.tx.tx_burst(self.batch);
                tries += 1;
            }
        }
        self.counters.tx_packets.add(sent as u64);
        if self.record_bursts {
            self.counters.bursts.record_tx(sent);
        }
        if !self.batch.is_empty() {
            let dropped = self.batch.clear();
            self.counters.fwd_dropped.add(dropped as u64);
        }
    }

    /// Receive one burst into the (empty) batch and count it (and, when
    /// recording bursts, count the call by its size, empty ones included).
    #[inline(always)]
    pub fn receive(&mut self) -> usize {
        let n = self.rx.rx_burst(self.batch);
        self.counters.rx_packets.add(n as u64);
        if self.record_bursts {
            self.counters.bursts.record_rx(n);
        }
        n
    }
}

/// Busy-wait `us` microseconds (the retry delay: a sleep would be a system call
/// and far too coarse).
#[inline]
pub fn spin_delay_us(us: u32) {
    let end = crate::time::now_ns() + us as u64 * 1000;
    while crate::time::now_ns() < end {
        std::hint::spin_loop();
    }
}

/// A forwarding mode's per-stream worker.
pub trait Engine: Send {
    /// Build the engine for one stream.
    fn new(cfg: &EngineConfig, info: &StreamInfo) -> Self
    where
        Self: Sized;

    /// Handle one burst of the stream: typically receive, act, transmit.
    fn forward(&mut self, ctx: &mut StreamCtx<'_>);
}

/// One stream as an lcore runs it: its queues are indices into the lcore's
/// queue lists, because two streams on one lcore may share a queue.
pub struct LcoreStream {
    /// The stream.
    pub info: StreamInfo,
    /// Index into [`LcoreWork::rx`].
    pub rx: usize,
    /// Index into [`LcoreWork::tx`].
    pub tx: usize,
    /// Its counters (shared with the main thread).
    pub counters: FwdCountersRef,
}

/// Everything one forwarding lcore owns while it runs.
pub struct LcoreWork {
    /// Lcore id.
    pub lcore: u32,
    /// Receive queues its streams use.
    pub rx: Vec<Box<dyn RxQueue>>,
    /// Transmit queues its streams use.
    pub tx: Vec<Box<dyn TxQueue>>,
    /// Its streams.
    pub streams: Vec<LcoreStream>,
    /// The pool generators allocate from.
    pub pool: Mempool,
    /// Latency and sequence recorder, merged by the main thread at the end.
    pub latency: LatencyRecorder,
    /// Where the lcore publishes a copy of its recorder about once a second,
    /// for live telemetry (None: no publishing).
    pub latency_live: Option<LatencyShare>,
}

/// A recorder shared with the main thread for live telemetry. The lcore only
/// `try_lock`s it, once a second at most, never per packet.
pub type LatencyShare = Arc<std::sync::Mutex<LatencyRecorder>>;

/// How often an lcore publishes its latency recorder.
pub const LATENCY_PUBLISH_NS: u64 = 1_000_000_000;

/// Run `cfg.mode` on this lcore until `stop` is set, first sending `tx_first`
/// bursts of generated packets on every stream.
pub fn run_lcore(work: &mut LcoreWork, cfg: &EngineConfig, tx_first: u32, stop: &AtomicBool) {
    // Recording bursts or not is a constant of the loop, so that with it off
    // the compiler removes the counting rather than testing a flag per burst.
    macro_rules! go {
        ($e:ty) => {
            if cfg.record_burst_stats {
                run_engine::<$e, true>(work, cfg, tx_first, stop)
            } else {
                run_engine::<$e, false>(work, cfg, tx_first, stop)
            }
        };
    }
    match cfg.mode {
        FwdMode::Io => go!(io::Io),
        FwdMode::Mac => go!(mac::Mac),
        FwdMode::MacSwap => go!(macswap::MacSwap),
        FwdMode::RxOnly => go!(rxonly::RxOnly),
        FwdMode::TxOnly => go!(txonly::TxOnly),
        FwdMode::FlowGen => go!(flowgen::FlowGen),
        FwdMode::IcmpEcho => go!(icmpecho::IcmpEcho),
        FwdMode::FiveTupleSwap => go!(fivetswap::FiveTupleSwap),
    }
}

fn run_engine<E: Engine, const RECORD_BURSTS: bool>(
    work: &mut LcoreWork,
    cfg: &EngineConfig,
    tx_first: u32,
    stop: &AtomicBool,
) {
    let mut batch = MbufBatch::with_burst(cfg.burst);
    let retry = cfg.retry;
    let LcoreWork {
        rx,
        tx,
        streams,
        pool,
        latency,
        latency_live,
        ..
    } = work;
    let mut next_publish = crate::time::now_ns() + LATENCY_PUBLISH_NS;
    if tx_first > 0 {
        for s in streams.iter() {
            let mut gen_engine = txonly::TxOnly::new(cfg, &s.info);
            for _ in 0..tx_first {
                let mut ctx = StreamCtx {
                    info: &s.info,
                    rx: rx[s.rx].as_mut(),
                    tx: tx[s.tx].as_mut(),
                    batch: &mut batch,
                    pool,
                    counters: &s.counters,
                    latency,
                    retry,
                    record_bursts: RECORD_BURSTS,
                };
                gen_engine.forward(&mut ctx);
            }
        }
    }
    let mut engines: Vec<E> = streams.iter().map(|s| E::new(cfg, &s.info)).collect();
    'outer: loop {
        for _ in 0..STOP_CHECK_INTERVAL {
            for (s, e) in streams.iter().zip(engines.iter_mut()) {
                let mut ctx = StreamCtx {
                    info: &s.info,
                    rx: rx[s.rx].as_mut(),
                    tx: tx[s.tx].as_mut(),
                    batch: &mut batch,
                    pool,
                    counters: &s.counters,
                    latency,
                    retry,
                    record_bursts: RECORD_BURSTS,
                };
                e.forward(&mut ctx);
                debug_assert!(
                    batch.is_empty(),
                    "an engine left packets in the scratch batch"
                );
            }
        }
        if stop.load(Ordering::Relaxed) {
            break 'outer;
        }
        if let Some(share) = latency_live.as_ref() {
            let now = crate::time::now_ns();
            if now >= next_publish {
                next_publish = now + LATENCY_PUBLISH_NS;
                // Never wait for the reader: skip this round if it holds the lock.
                if let Ok(mut g) = share.try_lock() {
                    g.clone_from(latency);
                }
            }
        }
    }
    // Give back anything a buggy engine left behind; counted so it is not lost silently.
    let left = batch.clear();
    if left > 0
        && let Some(s) = streams.first()
    {
        s.counters.fwd_dropped.add(left as u64);
    }
    pool.flush_cache();
}

/// Shared handle type for the stop flag.
pub type StopFlag = Arc<AtomicBool>;
