//! Per-stream forwarding counters: single writer (the lcore that runs the
//! stream), read by the main thread, cache-padded so streams on different lcores
//! never share a line.
#![deny(unsafe_code)]

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::port::counters::Counter;

/// The counters of one stream.
#[derive(Debug, Default)]
pub struct FwdCounters {
    /// Packets received by the stream.
    pub rx_packets: Counter,
    /// Packets the stream transmitted.
    pub tx_packets: Counter,
    /// Packets the stream dropped because the transmit queue did not take them.
    pub fwd_dropped: Counter,
    /// Received packets the engine could not handle (runts, wrong protocol where
    /// one is required) and freed.
    pub rx_bad: Counter,
    /// Generator bursts that found the mempool empty.
    pub tx_nombuf: Counter,
}

/// Shared handle on a stream's counters.
pub type FwdCountersRef = Arc<CachePadded<FwdCounters>>;

/// A snapshot of forwarding counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets transmitted.
    pub tx_packets: u64,
    /// Packets dropped at transmit.
    pub fwd_dropped: u64,
    /// Malformed or unhandled packets freed.
    pub rx_bad: u64,
    /// Generator allocation failures (bursts).
    pub tx_nombuf: u64,
}

impl FwdCounters {
    /// Read all counters.
    pub fn snapshot(&self) -> FwdStats {
        FwdStats {
            rx_packets: self.rx_packets.get(),
            tx_packets: self.tx_packets.get(),
            fwd_dropped: self.fwd_dropped.get(),
            rx_bad: self.rx_bad.get(),
            tx_nombuf: self.tx_nombuf.get(),
        }
    }
}

impl FwdStats {
    /// Field-wise sum.
    pub fn add(&mut self, o: &FwdStats) {
        self.rx_packets += o.rx_packets;
        self.tx_packets += o.tx_packets;
        self.fwd_dropped += o.fwd_dropped;
        self.rx_bad += o.rx_bad;
        self.tx_nombuf += o.tx_nombuf;
    }

    /// Field-wise `self - base`, saturating.
    pub fn since(&self, base: &FwdStats) -> FwdStats {
        FwdStats {
            rx_packets: self.rx_packets.saturating_sub(base.rx_packets),
            tx_packets: self.tx_packets.saturating_sub(base.tx_packets),
            fwd_dropped: self.fwd_dropped.saturating_sub(base.fwd_dropped),
            rx_bad: self.rx_bad.saturating_sub(base.rx_bad),
            tx_nombuf: self.tx_nombuf.saturating_sub(base.tx_nombuf),
        }
    }
}
