//! Rates from counter snapshots: packets and bits per second, on the wire too.
//!
//! Wire bit/s counts what a packet occupies on an Ethernet link: its bytes plus
//! 20 bytes of preamble, start delimiter and inter-frame gap (and the 4-byte
//! FCS, when the port's byte counters leave it out, as software ports do).
#![deny(unsafe_code)]

use std::time::Instant;

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
}
