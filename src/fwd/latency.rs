//! One-way latency and sequence tracking.
//!
//! Generators stamp each frame that has room for it (IPv4/UDP, at least
//! [`MIN_STAMPED_LEN`] bytes) with a magic, a flow id, a sequence number and the
//! CLOCK_MONOTONIC time of sending, right after the UDP header:
//!
//! ```text
//! UDP payload: | magic "NPLT" (4) | seq u32 (4) | tx_ns u64 (8) | flow u16 (2) |   big-endian
//! ```
//!
//! The receiver records `now - tx_ns` in an hdrhistogram per lcore (merged by
//! the main thread) and follows each flow's sequence: a jump forward counts the
//! skipped packets as lost, a step back counts one reordered packet (and takes
//! it off the lost count, since it did arrive).
#![deny(unsafe_code)]

use hdrhistogram::Histogram;

/// Magic at the start of a stamp.
pub const STAMP_MAGIC: u32 = 0x4e50_4c54;
/// Stamp length in bytes.
pub const STAMP_LEN: usize = 18;
/// Where the stamp starts: after Ethernet (14), IPv4 without options (20), UDP (8).
pub const STAMP_OFFSET: usize = 42;
/// Shortest frame that carries a stamp.
pub const MIN_STAMPED_LEN: usize = STAMP_OFFSET + STAMP_LEN;
/// Flows tracked per lcore (flow ids are taken modulo this).
pub const MAX_FLOWS: usize = 1024;

/// A stamp read back from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Sequence number within the flow.
    pub seq: u32,
    /// Send time, CLOCK_MONOTONIC nanoseconds.
    pub tx_ns: u64,
    /// Flow (the sending stream's id).
    pub flow: u16,
}

/// Write a stamp into an IPv4/UDP frame of at least [`MIN_STAMPED_LEN`] bytes;
/// false if the frame is too short.
#[inline(always)]
pub fn write_stamp(frame: &mut [u8], stamp: Stamp) -> bool {
    let Some(s) = frame.get_mut(STAMP_OFFSET..STAMP_OFFSET + STAMP_LEN) else {
        return false;
    };
    s[0..4].copy_from_slice(&STAMP_MAGIC.to_be_bytes());
    s[4..8].copy_from_slice(&stamp.seq.to_be_bytes());
    s[8..16].copy_from_slice(&stamp.tx_ns.to_be_bytes());
    s[16..18].copy_from_slice(&stamp.flow.to_be_bytes());
    true
}

/// Read the stamp of a packet, also when its first segment is too short to
/// hold it (a chain, as `--txpkts=14,50` builds): then from a copy of its
/// first bytes.
#[inline(always)]
pub fn read_stamp_mbuf(m: &crate::Mbuf) -> Option<Stamp> {
    if m.len() >= MIN_STAMPED_LEN || !m.is_chained() {
        return read_stamp(m.data());
    }
    let mut head = [0u8; MIN_STAMPED_LEN];
    (m.copy_out(0, &mut head) == MIN_STAMPED_LEN)
        .then(|| read_stamp(&head))
        .flatten()
}

/// Read the stamp of a frame, if it is an untagged IPv4 (no options) UDP frame
/// carrying one.
#[inline(always)]
pub fn read_stamp(frame: &[u8]) -> Option<Stamp> {
    let s = frame.get(STAMP_OFFSET..STAMP_OFFSET + STAMP_LEN)?;
    // EtherType IPv4, version 4 / IHL 5, protocol UDP.
    if frame[12..14] != [0x08, 0x00] || frame[14] != 0x45 || frame[23] != 17 {
        return None;
    }
    if s[0..4] != STAMP_MAGIC.to_be_bytes() {
        return None;
    }
    Some(Stamp {
        seq: u32::from_be_bytes(s[4..8].try_into().ok()?),
        tx_ns: u64::from_be_bytes(s[8..16].try_into().ok()?),
        flow: u16::from_be_bytes(s[16..18].try_into().ok()?),
    })
}

/// Per-lcore latency histogram and per-flow sequence state.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
    expected: Box<[u32]>,
    seen: Box<[bool]>,
    lost: u64,
    reordered: u64,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder::new()
    }
}

impl LatencyRecorder {
    /// An empty recorder (1 ns to 60 s, 2 significant digits: 1 % precision in
    /// 30 KiB, so a live copy for telemetry costs the lcore microseconds).
    pub fn new() -> LatencyRecorder {
        LatencyRecorder {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds"),
            expected: vec![0; MAX_FLOWS].into(),
            seen: vec![false; MAX_FLOWS].into(),
            lost: 0,
            reordered: 0,
        }
    }

    /// Account one received stamp at time `now_ns`.
    #[inline(always)]
    pub fn record(&mut self, stamp: Stamp, now_ns: u64) {
        self.hist
            .saturating_record(now_ns.saturating_sub(stamp.tx_ns).max(1));
        let f = stamp.flow as usize % MAX_FLOWS;
        if !self.seen[f] {
            self.seen[f] = true;
            self.expected[f] = stamp.seq.wrapping_add(1);
            return;
        }
        let ahead = stamp.seq.wrapping_sub(self.expected[f]);
        if ahead == 0 {
            self.expected[f] = stamp.seq.wrapping_add(1);
        } else if ahead < 1 << 31 {
            self.lost += ahead as u64;
            self.expected[f] = stamp.seq.wrapping_add(1);
        } else {
            self.reordered += 1;
            self.lost = self.lost.saturating_sub(1);
        }
    }

    /// Fold another lcore's recorder into this one (histograms add; flows are
    /// disjoint between lcores, so counts add too).
    pub fn merge(&mut self, other: &LatencyRecorder) {
        let _ = self.hist.add(&other.hist);
        self.lost += other.lost;
        self.reordered += other.reordered;
    }

    /// Forget everything (on `clear fwd stats`).
    pub fn reset(&mut self) {
        *self = LatencyRecorder::new();
    }

    /// Count of recorded latencies at or below `ns` (for cumulative histogram
    /// buckets, e.g. Prometheus `le`).
    pub fn count_at_or_below(&self, ns: u64) -> u64 {
        self.hist.count_between(0, ns)
    }

    /// Sum of all recorded latencies in nanoseconds (approximate, from the
    /// histogram's buckets).
    pub fn sum_ns(&self) -> f64 {
        self.hist.mean() * self.hist.len() as f64
    }

    /// Percentiles and counts.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.hist;
        let n = h.len();
        let q = |p: f64| if n == 0 { 0 } else { h.value_at_quantile(p) };
        LatencySummary {
            samples: n,
            min_ns: if n == 0 { 0 } else { h.min() },
            mean_ns: if n == 0 { 0.0 } else { h.mean() },
            p50_ns: q(0.50),
            p90_ns: q(0.90),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            max_ns: if n == 0 { 0 } else { h.max() },
            lost: self.lost,
            reordered: self.reordered,
        }
    }
}

/// Latency percentiles and sequence counts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencySummary {
    /// Stamped packets received.
    pub samples: u64,
    /// Smallest latency.
    pub min_ns: u64,
    /// Mean latency.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest latency.
    pub max_ns: u64,
    /// Packets missing from the sequence.
    pub lost: u64,
    /// Packets that arrived after a later one.
    pub reordered: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[12] = 0x08;
        f[14] = 0x45;
        f[23] = 17;
        f
    }

    #[test]
    fn stamp_round_trip_and_rejects() {
        let mut f = frame(64);
        let st = Stamp {
            seq: 7,
            tx_ns: 123_456,
            flow: 3,
        };
        assert!(write_stamp(&mut f, st));
        assert_eq!(read_stamp(&f), Some(st));
        let mut short = frame(59);
        assert!(!write_stamp(&mut short, st));
        assert_eq!(read_stamp(&short), None);
        f[23] = 6; // TCP: not ours
        assert_eq!(read_stamp(&f), None);
        let mut g = frame(64);
        assert!(write_stamp(&mut g, st));
        g[STAMP_OFFSET] ^= 1;
        assert_eq!(read_stamp(&g), None, "bad magic");
    }

    #[test]
    fn loss_and_reordering() {
        let mut r = LatencyRecorder::new();
        let at = |seq| Stamp {
            seq,
            tx_ns: 1000,
            flow: 1,
        };
        for s in [0, 1, 2, 5, 6, 4, 7] {
            r.record(at(s), 1500);
        }
        let sum = r.summary();
        assert_eq!(sum.samples, 7);
        assert_eq!(sum.lost, 1, "3 missing; 4 came late");
        assert_eq!(sum.reordered, 1);
        assert!((495..=505).contains(&sum.p50_ns), "{sum:?}");
        // Wrap-around is not loss.
        let mut w = LatencyRecorder::new();
        w.record(
            Stamp {
                seq: u32::MAX,
                tx_ns: 0,
                flow: 2,
            },
            10,
        );
        w.record(
            Stamp {
                seq: 0,
                tx_ns: 0,
                flow: 2,
            },
            10,
        );
        assert_eq!(w.summary().lost, 0);
        let mut m = LatencyRecorder::new();
        m.merge(&r);
        m.merge(&w);
        assert_eq!(m.summary().samples, 9);
    }
}
