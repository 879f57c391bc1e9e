//! testpmd's text blocks and the JSON lines for tools.

use nicpoll::fwd::BurstHistogram;
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

/// `---- Forward statistics for port N ----` block; `extra`: lines to add
/// under the totals (the burst statistics).
pub fn fwd_port_block(port: u16, t: &FwdPortTotals, extra: &str) -> String {
    format!(
        "  ---------------------- Forward statistics for port {port:<2} ----------------------\n{}{extra}  {}\n",
        fwd_lines(t),
        "-".repeat(76)
    )
}

/// testpmd's burst statistics line (`pkt_burst_stats_display`), e.g.
/// `  RX-bursts : 1831508 [66% of 0 pkts + 33% of 32 pkts + 0% of 1 pkts + 1% of other]`;
/// `dir` is "RX" or "TX". Nothing when no call was counted.
pub fn burst_stats_line(dir: &str, h: &BurstHistogram) -> String {
    let Some(spread) = h.spread() else {
        return String::new();
    };
    let mut parts: Vec<String> = spread
        .sizes
        .iter()
        .map(|(size, pct)| format!("{pct}% of {size} pkts"))
        .collect();
    if let Some(pct) = spread.other {
        parts.push(format!("{pct}% of other"));
    }
    format!(
        "  {dir}-bursts : {} [{}]\n",
        spread.total,
        parts.join(" + ")
    )
}

/// The RX-bursts line, then the TX-bursts line (each only if it counted anything).
pub fn burst_stats_lines(rx: &BurstHistogram, tx: &BurstHistogram) -> String {
    burst_stats_line("RX", rx) + &burst_stats_line("TX", tx)
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

/// A burst histogram as JSON: the calls, and the calls of each size that
/// occurred (`{"calls": 10, "by_size": {"0": 4, "32": 6}}`).
pub fn bursts_json(h: &BurstHistogram) -> Value {
    let by_size: serde_json::Map<String, Value> = h
        .bins
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(size, c)| (size.to_string(), json!(c)))
        .collect();
    json!({"calls": h.total(), "by_size": by_size})
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
        let b = fwd_port_block(1, &t, "");
        assert!(b.contains("Forward statistics for port 1"));
        assert!(
            b.contains("RX-total: 12") && b.contains("TX-total: 10"),
            "{b}"
        );
        assert!(!b.contains("RX-nombufs"));
        let t2 = FwdPortTotals { rx_nombuf: 5, ..t };
        assert!(fwd_total_block(&t2).contains("RX-nombufs: 5"));
    }

    fn hist(pairs: &[(usize, u64)]) -> BurstHistogram {
        let mut h = BurstHistogram::default();
        for &(size, calls) in pairs {
            h.bins[size] = calls;
        }
        h
    }

    #[test]
    fn burst_lines_read_as_dpdk_testpmd_prints_them() {
        // The counts behind the line from dpdk-testpmd 24.11,
        // "RX-bursts : 1831508 [66% of 0 pkts + 33% of 32 pkts + 0% of 1 pkts + 1% of other]":
        // any split with these shares prints it the same way.
        let rx = hist(&[(0, 1_220_000), (32, 610_000), (1, 900), (2, 400), (7, 208)]);
        assert_eq!(rx.total(), 1_831_508);
        assert_eq!(
            burst_stats_line("RX", &rx),
            "  RX-bursts : 1831508 [66% of 0 pkts + 33% of 32 pkts + 0% of 1 pkts + 1% of other]\n"
        );
        let tx = hist(&[(32, 10)]);
        assert_eq!(
            burst_stats_line("TX", &tx),
            "  TX-bursts : 10 [0% of 0 pkts + 100% of 32 pkts]\n"
        );
        assert_eq!(
            burst_stats_line("RX", &hist(&[(0, 3)])),
            "  RX-bursts : 3 [100% of 0 pkts]\n"
        );
        assert_eq!(burst_stats_line("TX", &hist(&[])), "", "no call, no line");
        assert_eq!(
            burst_stats_lines(&hist(&[]), &tx),
            "  TX-bursts : 10 [0% of 0 pkts + 100% of 32 pkts]\n"
        );
    }

    #[test]
    fn burst_lines_sit_inside_the_port_block() {
        let b = fwd_port_block(
            0,
            &FwdPortTotals::default(),
            &burst_stats_line("RX", &hist(&[(0, 1)])),
        );
        let lines: Vec<&str> = b.lines().collect();
        assert!(lines[3].starts_with("  RX-bursts : 1 ["), "{b}");
        assert!(lines[4].starts_with("  ------"), "{b}");
    }

    #[test]
    fn bursts_json_lists_the_sizes_that_occurred() {
        let j = bursts_json(&hist(&[(0, 4), (32, 6)]));
        assert_eq!(j, json!({"calls": 10, "by_size": {"0": 4, "32": 6}}));
    }
}
