//! Rates from counter snapshots: packets and bits per second, on the wire too.
//!
//! Wire bit/s counts what a packet occupies on an Ethernet link: its bytes plus
//! 20 bytes of preamble, start delimiter and inter-frame gap (and the 4-byte
//! FCS, when the port's byte counters leave it out, as software ports do).
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::port::PortStats;

/// Preamble (7) + start of frame delimiter (1) + inter-frame gap (12).
pub const WIRE_OVERHEAD_BYTES: u64 = 20;
/// Frame check sequence, absent from software ports' byte counts.
pub const FCS_BYTES: u64 = 4;

/// Rates over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Received packets per second.
    pub rx_pps: f64,
    /// Transmitted packets per second.
    pub tx_pps: f64,
    /// Received bits per second (frame bytes as counted by the port).
    pub rx_bps: f64,
    /// Transmitted bits per second.
    pub tx_bps: f64,
    /// Received bits per second on the wire (with FCS, preamble and gap).
    pub rx_wire_bps: f64,
    /// Transmitted bits per second on the wire.
    pub tx_wire_bps: f64,
}

impl Rates {
    /// Rates between two snapshots taken `secs` apart.
    pub fn between(old: &PortStats, new: &PortStats, secs: f64) -> Rates {
        if secs <= 0.0 {
            return Rates::default();
        }
        let d = new.since(old);
        let per_pkt = (WIRE_OVERHEAD_BYTES + FCS_BYTES) as f64 * 8.0;
        Rates {
            rx_pps: d.ipackets as f64 / secs,
            tx_pps: d.opackets as f64 / secs,
            rx_bps: d.ibytes as f64 * 8.0 / secs,
            tx_bps: d.obytes as f64 * 8.0 / secs,
            rx_wire_bps: (d.ibytes as f64 * 8.0 + d.ipackets as f64 * per_pkt) / secs,
            tx_wire_bps: (d.obytes as f64 * 8.0 + d.opackets as f64 * per_pkt) / secs,
        }
    }
}

/// Tracks one port's previous snapshot so each call yields the rates since the
/// last one (testpmd's "Throughput (since last show)").
#[derive(Clone, Debug)]
pub struct RateMeter {
    last: Option<(Instant, PortStats)>,
}

impl Default for RateMeter {
    fn default() -> Self {
        RateMeter::new()
    }
}

impl RateMeter {
    /// A meter with no previous sample: the first call reports zero rates.
    pub fn new() -> RateMeter {
        RateMeter { last: None }
    }

    /// Rates since the previous call, then remember `now`.
    pub fn sample(&mut self, stats: PortStats, now: Instant) -> Rates {
        let r = match &self.last {
            Some((t, old)) => Rates::between(old, &stats, now.duration_since(*t).as_secs_f64()),
            None => Rates::default(),
        };
        self.last = Some((now, stats));
        r
    }

    /// Forget the previous sample (after counters were cleared).
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// Rates over a sliding window: each sample is compared with the newest
/// earlier sample that is at least `window` old (while the meter is younger
/// than that, with its first sample). Sampled often, it moves at every sample
/// yet averages over the whole window, so a sampler or a forwarding thread
/// descheduled for less than the window does not show as a rate of zero (the
/// Prometheus gauges: a scrape reads the last second, not the last 250 ms).
#[derive(Clone, Debug)]
pub struct WindowRateMeter {
    window: Duration,
    /// Samples from oldest to newest; the front one is the base of the rate.
    samples: VecDeque<(Instant, PortStats)>,
}

impl WindowRateMeter {
    /// A meter averaging over at least `window`.
    pub fn new(window: Duration) -> WindowRateMeter {
        WindowRateMeter {
            window,
            samples: VecDeque::new(),
        }
    }

    /// Rates over the window ending at `now`, then remember this sample.
    /// The first sample has no interval: zero rates.
    pub fn sample(&mut self, stats: PortStats, now: Instant) -> Rates {
        // Keep one sample at least a window old, and nothing older.
        while self.samples.len() >= 2
            && now.saturating_duration_since(self.samples[1].0) >= self.window
        {
            self.samples.pop_front();
        }
        let r = match self.samples.front() {
            Some((t, old)) => {
                Rates::between(old, &stats, now.saturating_duration_since(*t).as_secs_f64())
            }
            None => Rates::default(),
        };
        self.samples.push_back((now, stats));
        r
    }

    /// Forget every sample (after counters were cleared).
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_count_wire_overhead() {
        let old = PortStats::default();
        let new = PortStats {
            ipackets: 1_000,
            ibytes: 60_000,
            opackets: 500,
            obytes: 30_000,
            ..PortStats::default()
        };
        let r = Rates::between(&old, &new, 0.5);
        assert_eq!(r.rx_pps, 2_000.0);
        assert_eq!(r.tx_pps, 1_000.0);
        assert_eq!(r.rx_bps, 960_000.0);
        // 60 B + 4 FCS + 20 = 84 B per packet on the wire.
        assert_eq!(r.rx_wire_bps, 2_000.0 * 84.0 * 8.0);
        assert_eq!(Rates::between(&old, &new, 0.0), Rates::default());
    }

    #[test]
    fn meter_reports_since_last_sample() {
        let mut m = RateMeter::new();
        let t0 = Instant::now();
        let s = |n| PortStats {
            ipackets: n,
            ..PortStats::default()
        };
        assert_eq!(
            m.sample(s(10), t0).rx_pps,
            0.0,
            "first sample has no interval"
        );
        let r = m.sample(s(110), t0 + Duration::from_secs(1));
        assert_eq!(r.rx_pps, 100.0);
        let r = m.sample(s(310), t0 + Duration::from_secs(3));
        assert_eq!(r.rx_pps, 100.0);
    }

    #[test]
    fn window_meter_averages_over_its_window_and_moves_every_sample() {
        let mut m = WindowRateMeter::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let s = |n| PortStats {
            ipackets: n,
            ..PortStats::default()
        };
        assert_eq!(m.sample(s(0), at(0)), Rates::default(), "no interval yet");
        // Younger than the window: since the first sample.
        assert_eq!(m.sample(s(250), at(250)).rx_pps, 1000.0);
        assert_eq!(m.sample(s(500), at(500)).rx_pps, 1000.0);
        assert_eq!(m.sample(s(1000), at(1000)).rx_pps, 1000.0);
        // A quarter of a second with nothing (a descheduled lcore) lowers the
        // rate over the last second; it does not zero it.
        assert_eq!(m.sample(s(1000), at(1250)).rx_pps, 750.0);
        assert_eq!(m.sample(s(1250), at(1500)).rx_pps, 750.0);
        // The base is the newest sample at least a second old: 500 ms.
        assert_eq!(m.sample(s(1500), at(1750)).rx_pps, 1000.0 / 1.25);
        // A late sample (the sampler itself descheduled) spans its gap.
        assert_eq!(m.sample(s(4500), at(4750)).rx_pps, 1000.0);
        assert_eq!(m.sample(s(4750), at(5000)).rx_pps, 1000.0);
        m.reset();
        assert_eq!(m.sample(s(0), at(5250)), Rates::default(), "reset");
    }
}
