//! Per-stream forwarding counters: single writer (the lcore that runs the
//! stream), read by the main thread, cache-padded so streams on different lcores
//! never share a line.
#![deny(unsafe_code)]

use std::sync::Arc;

use crossbeam_utils::CachePadded;

use crate::mbuf::MAX_BURST;
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
    /// How many packets each receive and transmit call moved, when the engine
    /// configuration asks for it (`--record-burst-stats`). Boxed: 8 KiB per
    /// direction that the packet counters above should not share lines with.
    pub bursts: Box<BurstCounters>,
}

/// Calls per burst size, one bin per size `0..=MAX_BURST`, for each direction
/// (testpmd's `pkt_burst_stats`, `app/test-pmd/testpmd.h`).
#[derive(Debug)]
pub struct BurstCounters {
    /// Receive calls, by the number of packets they returned (bin 0: empty polls).
    pub rx: [Counter; MAX_BURST + 1],
    /// Transmits, by the number of packets sent (retries included in the one
    /// transmit they belong to, as testpmd counts them).
    pub tx: [Counter; MAX_BURST + 1],
}

impl Default for BurstCounters {
    fn default() -> Self {
        BurstCounters {
            rx: std::array::from_fn(|_| Counter::default()),
            tx: std::array::from_fn(|_| Counter::default()),
        }
    }
}

impl BurstCounters {
    /// Count one receive call that returned `n` packets. Only the owning lcore
    /// may call this.
    #[inline(always)]
    pub fn record_rx(&self, n: usize) {
        // n never exceeds the batch, which never exceeds MAX_BURST; a size out
        // of range is ignored rather than panicking on the fast path.
        if let Some(c) = self.rx.get(n) {
            c.add(1);
        }
    }

    /// Count one transmit that sent `n` packets. Only the owning lcore may call this.
    #[inline(always)]
    pub fn record_tx(&self, n: usize) {
        if let Some(c) = self.tx.get(n) {
            c.add(1);
        }
    }

    /// Read both histograms.
    pub fn snapshot(&self) -> (BurstHistogram, BurstHistogram) {
        let read = |bins: &[Counter]| BurstHistogram {
            bins: bins.iter().map(Counter::get).collect(),
        };
        (read(&self.rx), read(&self.tx))
    }
}

/// A snapshot of one direction's burst counts: `bins[n]` calls moved `n` packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurstHistogram {
    /// Calls per burst size, `MAX_BURST + 1` bins.
    pub bins: Vec<u64>,
}

impl Default for BurstHistogram {
    fn default() -> Self {
        BurstHistogram {
            bins: vec![0; MAX_BURST + 1],
        }
    }
}

/// What testpmd prints of a histogram: the number of calls, then the share of
/// empty calls, of the two most frequent non-zero sizes, and of the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurstSpread {
    /// Calls counted, empty ones included.
    pub total: u64,
    /// `(burst size, percent of calls)`, starting with size 0; the last entry
    /// takes what the truncated percentages before it leave of 100 when it
    /// completes the total.
    pub sizes: Vec<(usize, u32)>,
    /// Percent of calls of the other sizes, when the three above do not cover
    /// every call.
    pub other: Option<u32>,
}

impl BurstHistogram {
    /// Calls counted.
    pub fn total(&self) -> u64 {
        self.bins.iter().sum()
    }

    /// Bin-wise sum.
    pub fn add(&mut self, o: &BurstHistogram) {
        if self.bins.len() < o.bins.len() {
            self.bins.resize(o.bins.len(), 0);
        }
        for (a, b) in self.bins.iter_mut().zip(&o.bins) {
            *a += b;
        }
    }

    /// Bin-wise `self - base`, saturating.
    pub fn since(&self, base: &BurstHistogram) -> BurstHistogram {
        BurstHistogram {
            bins: self
                .bins
                .iter()
                .enumerate()
                .map(|(i, v)| v.saturating_sub(base.bins.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The summary testpmd prints (`pkt_burst_stats_display`, DPDK 24.11
    /// `app/test-pmd/testpmd.c`): size 0 always first; then the two non-zero
    /// sizes with the most calls (on a tie, the smaller size); each share
    /// truncated to a whole percent, except that the entry which completes the
    /// total, or "other" after three entries, gets 100 minus the shares before
    /// it. None when nothing was counted.
    pub fn spread(&self) -> Option<BurstSpread> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // (calls, size) of the empty bin and of the two most frequent sizes.
        let mut top = [(self.bins[0], 0usize), (0, 0), (0, 0)];
        for (size, &calls) in self.bins.iter().enumerate().skip(1) {
            if calls > top[1].0 {
                top[2] = top[1];
                top[1] = (calls, size);
            } else if calls > top[2].0 {
                top[2] = (calls, size);
            }
        }
        let mut sizes = Vec::with_capacity(3);
        let (mut covered, mut percent_sum) = (0u64, 0u32);
        for &(calls, size) in &top {
            covered += calls;
            if covered == total {
                sizes.push((size, 100u32.saturating_sub(percent_sum)));
                return Some(BurstSpread {
                    total,
                    sizes,
                    other: None,
                });
            }
            // The same double arithmetic and truncation as testpmd, so that
            // the figures agree to the percent.
            let percent = (calls as f64 / total as f64 * 100.0) as u32;
            sizes.push((size, percent));
            percent_sum += percent;
        }
        Some(BurstSpread {
            total,
            sizes,
            other: Some(100u32.saturating_sub(percent_sum)),
        })
    }
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
    /// Read all counters but the burst histograms.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> BurstHistogram {
        let mut h = BurstHistogram::default();
        for &(size, calls) in pairs {
            h.bins[size] = calls;
        }
        h
    }

    fn spread(pairs: &[(usize, u64)]) -> Option<BurstSpread> {
        hist(pairs).spread()
    }

    #[test]
    fn nothing_counted_has_no_spread() {
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn only_empty_polls_is_all_size_zero() {
        let s = spread(&[(0, 7)]).unwrap();
        assert_eq!(s.total, 7);
        assert_eq!(s.sizes, vec![(0, 100)]);
        assert_eq!(s.other, None);
    }

    #[test]
    fn one_size_without_empty_polls_still_shows_zero_first() {
        let s = spread(&[(32, 10)]).unwrap();
        assert_eq!(s.sizes, vec![(0, 0), (32, 100)]);
        assert_eq!(s.other, None);
    }

    #[test]
    fn two_most_frequent_sizes_then_other() {
        // The example of the issue, from dpdk-testpmd 24.11:
        // "RX-bursts : 1831508 [66% of 0 pkts + 33% of 32 pkts + 0% of 1 pkts + 1% of other]"
        // shape, on small numbers: 200 empty, 100 of 32, 2 of 1, 1 each of 5 and 7.
        let s = spread(&[(0, 200), (1, 2), (5, 1), (7, 1), (32, 100)]).unwrap();
        assert_eq!(s.total, 304);
        // 200/304 = 65.79 -> 65, 100/304 = 32.89 -> 32, 2/304 = 0.66 -> 0.
        assert_eq!(s.sizes, vec![(0, 65), (32, 32), (1, 0)]);
        assert_eq!(s.other, Some(3), "100 minus the truncated shares");
    }

    #[test]
    fn the_entry_that_completes_the_total_takes_the_remainder() {
        // 1/3 each: 33 + 33, and the last one gets 34, not 33.
        let s = spread(&[(0, 1), (4, 1), (9, 1)]).unwrap();
        assert_eq!(s.sizes, vec![(0, 33), (4, 33), (9, 34)]);
        assert_eq!(s.other, None);
        // Without empty polls: 0% of 0, then 2/3 -> 66, then 1 + 33 remainder.
        let s = spread(&[(3, 2), (8, 1)]).unwrap();
        assert_eq!(s.sizes, vec![(0, 0), (3, 66), (8, 34)]);
    }

    #[test]
    fn ties_go_to_the_smaller_size_and_order_is_by_count() {
        let s = spread(&[(2, 5), (3, 5), (4, 5), (6, 9)]).unwrap();
        // 6 has most; of the tied 2, 3, 4 the first seen (2) stays second.
        assert_eq!(s.sizes, vec![(0, 0), (6, 37), (2, 20)]);
        assert_eq!(s.other, Some(43));
        // A later larger count pushes the old first down to second.
        let s = spread(&[(1, 3), (2, 10), (3, 7)]).unwrap();
        assert_eq!(s.sizes[1..], [(2, 50), (3, 35)]);
        assert_eq!(s.other, Some(15));
    }

    #[test]
    fn percentages_truncate_as_double_arithmetic_does() {
        // 29/100 * 100 is 28.999999999999996 in binary floating point: testpmd
        // prints 28, and so must we.
        assert_eq!((29.0f64 / 100.0 * 100.0) as u32, 28);
        let s = spread(&[(0, 29), (1, 40), (2, 30), (3, 1)]).unwrap();
        assert_eq!(s.sizes, vec![(0, 28), (1, 40), (2, 30)]);
        assert_eq!(s.other, Some(2));
    }

    #[test]
    fn since_and_add_work_per_bin() {
        let a = hist(&[(0, 10), (32, 5)]);
        let base = hist(&[(0, 4), (32, 5)]);
        assert_eq!(a.since(&base), hist(&[(0, 6)]));
        let mut sum = a.clone();
        sum.add(&base);
        assert_eq!(sum, hist(&[(0, 14), (32, 10)]));
        assert_eq!(sum.total(), 24);
    }

    #[test]
    fn recording_counts_per_size_and_ignores_sizes_out_of_range() {
        let c = BurstCounters::default();
        c.record_rx(0);
        c.record_rx(0);
        c.record_rx(MAX_BURST);
        c.record_rx(MAX_BURST + 1);
        c.record_tx(3);
        let (rx, tx) = c.snapshot();
        assert_eq!(rx, hist(&[(0, 2), (MAX_BURST, 1)]));
        assert_eq!(tx, hist(&[(3, 1)]));
    }
}
