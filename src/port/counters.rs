//! Per-queue counters a driver shares with the control plane.
//!
//! Each queue's counters are written by the one lcore that owns the queue, once
//! per burst, with a relaxed load and a relaxed store: no read-modify-write, no
//! lock. The control thread reads them at any time. Resetting is done by taking
//! a baseline, never by writing a counter another thread owns.
#![deny(unsafe_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use super::PortStats;

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning thread may call this.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Read the value.
    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one queue (receive or transmit side, or both).
#[derive(Debug, Default)]
pub struct QueueCounters {
    /// Packets received.
    pub rx_packets: Counter,
    /// Bytes received.
    pub rx_bytes: Counter,
    /// Receive buffer allocation failures.
    pub rx_nombuf: Counter,
    /// Packets dropped because the receive ring was full.
    pub rx_missed: Counter,
    /// Erroneous frames dropped on receive.
    pub rx_errors: Counter,
    /// Packets sent.
    pub tx_packets: Counter,
    /// Bytes sent.
    pub tx_bytes: Counter,
    /// Packets the device failed to send.
    pub tx_errors: Counter,
}

/// A (packets, bytes) pair.
pub type PacketsBytes = (u64, u64);

/// Shared handle on one queue's counters.
pub type QueueCountersRef = Arc<CachePadded<QueueCounters>>;

/// All queues' counters of one port, plus the reset baseline.
#[derive(Debug, Clone, Default)]
pub struct PortCounters {
    rx: Vec<QueueCountersRef>,
    tx: Vec<QueueCountersRef>,
    /// Totals of queues from earlier configurations.
    retired: PortStats,
    base: PortStats,
}

impl PortCounters {
    /// Counters for `nb_rxq` receive and `nb_txq` transmit queues.
    pub fn new(nb_rxq: usize, nb_txq: usize) -> PortCounters {
        let mut c = PortCounters::default();
        c.reconfigure(nb_rxq, nb_txq);
        c
    }

    /// Fresh per-queue counters for a new configuration; what was counted so far
    /// is kept in the port's totals.
    pub fn reconfigure(&mut self, nb_rxq: usize, nb_txq: usize) {
        self.retired = self.total();
        self.rx = (0..nb_rxq)
            .map(|_| Arc::new(CachePadded::new(QueueCounters::default())))
            .collect();
        self.tx = (0..nb_txq)
            .map(|_| Arc::new(CachePadded::new(QueueCounters::default())))
            .collect();
    }

    /// The shared counters of receive queue `q`.
    pub fn rx(&self, q: usize) -> QueueCountersRef {
        self.rx[q].clone()
    }

    /// The shared counters of transmit queue `q`.
    pub fn tx(&self, q: usize) -> QueueCountersRef {
        self.tx[q].clone()
    }

    fn total(&self) -> PortStats {
        let mut s = self.retired;
        for q in &self.rx {
            s.ipackets += q.rx_packets.get();
            s.ibytes += q.rx_bytes.get();
            s.rx_nombuf += q.rx_nombuf.get();
            s.imissed += q.rx_missed.get();
            s.ierrors += q.rx_errors.get();
        }
        for q in &self.tx {
            s.opackets += q.tx_packets.get();
            s.obytes += q.tx_bytes.get();
            s.oerrors += q.tx_errors.get();
        }
        s
    }

    /// Counters since creation or the last reset.
    pub fn stats(&self) -> PortStats {
        self.total().since(&self.base)
    }

    /// Per-queue (packets, bytes) for receive and transmit, for xstats.
    pub fn per_queue(&self) -> (Vec<PacketsBytes>, Vec<PacketsBytes>) {
        (
            self.rx
                .iter()
                .map(|q| (q.rx_packets.get(), q.rx_bytes.get()))
                .collect(),
            self.tx
                .iter()
                .map(|q| (q.tx_packets.get(), q.tx_bytes.get()))
                .collect(),
        )
    }

    /// Extended statistics in DPDK's naming: the port totals, then per queue.
    pub fn xstats(&self) -> Vec<(String, u64)> {
        let s = self.stats();
        let mut v = vec![
            ("rx_good_packets".to_string(), s.ipackets),
            ("tx_good_packets".to_string(), s.opackets),
            ("rx_good_bytes".to_string(), s.ibytes),
            ("tx_good_bytes".to_string(), s.obytes),
            ("rx_missed_errors".to_string(), s.imissed),
            ("rx_errors".to_string(), s.ierrors),
            ("tx_errors".to_string(), s.oerrors),
            ("rx_mbuf_allocation_errors".to_string(), s.rx_nombuf),
        ];
        let (rx, tx) = self.per_queue();
        for (q, (p, b)) in rx.iter().enumerate() {
            v.push((format!("rx_q{q}_packets"), *p));
            v.push((format!("rx_q{q}_bytes"), *b));
        }
        for (q, (p, b)) in tx.iter().enumerate() {
            v.push((format!("tx_q{q}_packets"), *p));
            v.push((format!("tx_q{q}_bytes"), *b));
        }
        v
    }

    /// Reset: take the current totals as the new zero.
    pub fn reset(&mut self) {
        self.base = self.total();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_survive_reconfigure_and_reset_rebaselines() {
        let mut c = PortCounters::new(2, 1);
        c.rx(0).rx_packets.add(3);
        c.rx(1).rx_packets.add(4);
        c.tx(0).tx_bytes.add(100);
        assert_eq!(c.stats().ipackets, 7);
        c.reconfigure(1, 1);
        c.rx(0).rx_packets.add(1);
        assert_eq!(c.stats().ipackets, 8);
        assert_eq!(c.stats().obytes, 100);
        c.reset();
        assert_eq!(c.stats(), PortStats::default());
        c.tx(0).tx_packets.add(2);
        assert_eq!(c.stats().opackets, 2);
        assert!(c.xstats().contains(&("tx_q0_packets".to_string(), 2)));
    }
}
