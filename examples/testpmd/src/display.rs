//! testpmd's text blocks and the JSON lines for tools.

use nicpoll::fwd::latency::LatencySummary;
use nicpoll::mempool::MempoolStats;
use nicpoll::port::PortStats;
use nicpoll::stats::Rates;
use serde_json::{Value, json};

/// `show port stats N`: the NIC statistics block with rates since the last one.
pub fn nic_stats_block(port: u16, s: &PortStats, r: &Rates) -> String {
    let rule = "#".repeat(24);
    format!(
        "  {rule} NIC statistics for port {port:<2} {rule}\n\
         \x20 RX-packets: {:<10} RX-missed: {:<10} RX-bytes:  {}\n\
         \x20 RX-errors: {}\n\
         \x20 RX-nombuf:  {:<10}\n\
         \x20 TX-packets: {:<10} TX-errors: {:<10} TX-bytes:  {}\n\
         \n\
         \x20 Throughput (since last show)\n\
         \x20 Rx-pps: {:>12.0}          Rx-bps: {:>12.0}\n\
         \x20 Tx-pps: {:>12.0}          Tx-bps: {:>12.0}\n\
         \x20 {}\n",
        s.ipackets,
        s.imissed,
        s.ibytes,
        s.ierrors,
        s.rx_nombuf,
        s.opackets,
        s.oerrors,
        s.obytes,
        r.rx_pps,
        r.rx_bps,
        r.tx_pps,
        r.tx_bps,
        "#".repeat(76),
    )
}

/// Forwarding totals of one port (or of all), as `stop` prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdPortTotals {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets the device dropped on receive (imissed).
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Device transmit errors plus the engine's fwd_dropped.
    pub tx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Receive allocation failures.
    pub rx_nombuf: u64,
    /// Malformed packets the engine freed.
    pub rx_bad: u64,
}

impl FwdPortTotals {
    /// Field-wise sum.
    pub fn add(&mut self, o: &FwdPortTotals) {
        self.rx_packets += o.rx_packets;
        self.rx_dropped += o.rx_dropped;
        self.tx_packets += o.tx_packets;
        self.tx_dropped += o.tx_dropped;
        self.rx_errors += o.rx_errors;
        self.rx_nombuf += o.rx_nombuf;
        self.rx_bad += o.rx_bad;
    }
}

fn fwd_lines(t: &FwdPortTotals) -> String {
    let mut s = format!(
        "  RX-packets: {:<14} RX-dropped: {:<14} RX-total: {}\n",
        t.rx_packets,
        t.rx_dropped,
        t.rx_packets + t.rx_dropped
    );
    if t.rx_errors > 0 {
        s += &format!("  RX-error: {}\n", t.rx_errors);
    }
    if t.rx_nombuf > 0 {
        s += &format!("  RX-nombufs: {:<14}\n", t.rx_nombuf);
    }
    if t.rx_bad > 0 {
        s += &format!("  RX-malformed: {:<12}\n", t.rx_bad);
    }
    s += &format!(
        "  TX-packets: {:<14} TX-dropped: {:<14} TX-total: {}\n",
        t.tx_packets,
        t.tx_dropped,
        t.tx_packets + t.tx_dropped
    );
    s
}

/// `---- Forward statistics for port N ----` block.
pub fn fwd_port_block(port: u16, t: &FwdPortTotals) -> String {
    format!(
        "  ---------------------- Forward statistics for port {port:<2} ----------------------\n{}  {}\n",
        fwd_lines(t),
        "-".repeat(76)
    )
}

/// `+++ Accumulated forward statistics for all ports +++` block.
pub fn fwd_total_block(t: &FwdPortTotals) -> String {
    format!(
        "  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++\n{}  {}\n",
        fwd_lines(t),
        "+".repeat(76)
    )
}

/// Latency and sequence summary of rxonly.
pub fn latency_block(l: &LatencySummary) -> String {
    let us = |ns: u64| ns as f64 / 1000.0;
    format!(
        "  ---------------------- Latency (one-way, stamped packets) -------------------\n\
         \x20 Samples: {}  min {:.2} us  mean {:.2} us  p50 {:.2} us  p90 {:.2} us  p99 {:.2} us  p99.9 {:.2} us  max {:.2} us\n\
         \x20 Sequence: lost {}  reordered {}\n\
         \x20 {}\n",
        l.samples,
        us(l.min_ns),
        l.mean_ns / 1000.0,
        us(l.p50_ns),
        us(l.p90_ns),
        us(l.p99_ns),
        us(l.p999_ns),
        us(l.max_ns),
        l.lost,
        l.reordered,
        "-".repeat(76)
    )
}

/// One port's counters and rates as JSON.
pub fn port_json(port: u16, name: &str, s: &PortStats, r: &Rates, fwd_dropped: u64) -> Value {
    json!({
        "port": port,
        "name": name,
        "rx_packets": s.ipackets,
        "rx_bytes": s.ibytes,
        "rx_missed": s.imissed,
        "rx_errors": s.ierrors,
        "rx_nombuf": s.rx_nombuf,
        "tx_packets": s.opackets,
        "tx_bytes": s.obytes,
        "tx_errors": s.oerrors,
        "tx_dropped": s.oerrors + fwd_dropped,
        "rx_pps": r.rx_pps,
        "tx_pps": r.tx_pps,
        "rx_bps": r.rx_bps,
        "tx_bps": r.tx_bps,
        "rx_wire_bps": r.rx_wire_bps,
        "tx_wire_bps": r.tx_wire_bps,
    })
}

/// Forwarding totals as JSON.
pub fn fwd_json(t: &FwdPortTotals) -> Value {
    json!({
        "rx_packets": t.rx_packets,
        "rx_dropped": t.rx_dropped,
        "rx_errors": t.rx_errors,
        "rx_nombuf": t.rx_nombuf,
        "rx_malformed": t.rx_bad,
        "tx_packets": t.tx_packets,
        "tx_dropped": t.tx_dropped,
    })
}

/// Latency summary as JSON (nanoseconds).
pub fn latency_json(l: &LatencySummary) -> Value {
    json!({
        "samples": l.samples,
        "min_ns": l.min_ns,
        "mean_ns": l.mean_ns,
        "p50_ns": l.p50_ns,
        "p90_ns": l.p90_ns,
        "p99_ns": l.p99_ns,
        "p999_ns": l.p999_ns,
        "max_ns": l.max_ns,
        "lost": l.lost,
        "reordered": l.reordered,
    })
}

/// Mempool counters as JSON.
pub fn mempool_json(name: &str, m: &MempoolStats) -> Value {
    json!({
        "name": name,
        "size": m.size,
        "available": m.available,
        "in_use": m.in_use,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_block_has_testpmd_fields() {
        let s = PortStats {
            ipackets: 356928,
            opackets: 2080,
            ..PortStats::default()
        };
        let b = nic_stats_block(
            0,
            &s,
            &Rates {
                rx_pps: 1.5e6,
                ..Rates::default()
            },
        );
        assert!(b.contains("NIC statistics for port 0"), "{b}");
        assert!(b.contains("RX-packets: 356928"), "{b}");
        assert!(b.contains("TX-packets: 2080"), "{b}");
        assert!(b.contains("Rx-pps:      1500000"), "{b}");
        assert!(b.contains("RX-nombuf:"), "{b}");
    }

    #[test]
    fn fwd_blocks_show_totals_and_extra_lines_only_when_nonzero() {
        let t = FwdPortTotals {
            rx_packets: 10,
            rx_dropped: 2,
            tx_packets: 7,
            tx_dropped: 3,
            ..Default::default()
        };
        let b = fwd_port_block(1, &t);
        assert!(b.contains("Forward statistics for port 1"));
        assert!(
            b.contains("RX-total: 12") && b.contains("TX-total: 10"),
            "{b}"
        );
        assert!(!b.contains("RX-nombufs"));
        let t2 = FwdPortTotals { rx_nombuf: 5, ..t };
        assert!(fwd_total_block(&t2).contains("RX-nombufs: 5"));
    }
}
