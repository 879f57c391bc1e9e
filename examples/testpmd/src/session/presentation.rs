//! What the session shows: `show port stats|info|summary|xstats`, `show fwd
//! stats`, `show config fwd`, the final forward statistics, and the telemetry
//! it hands to the metrics server.

use std::time::Instant;

use nicpoll::fwd::{BurstHistogram, FwdCountersRef, FwdStats, LatencyRecorder};
use nicpoll::lcore;
use nicpoll::port::PortStats;
use nicpoll::stats::Rates;
use serde_json::json;

use crate::cli::Config;
use crate::display::{self, FwdPortTotals};
use crate::metrics::{self, PortSample};
use crate::plan::Plan;
use nicpoll::fwd::StreamSpec;

use super::{ActiveFwd, PortSlot, PortState, RunError, Session, peer_mac, usage};

/// One stream's forward counters, read at one moment (or the difference of
/// two such reads).
#[derive(Clone, Debug, Default)]
pub(super) struct StreamSnapshot {
    stats: FwdStats,
    /// Receive calls by size (all zero when bursts are not recorded).
    rx_bursts: BurstHistogram,
    /// Transmits by size.
    tx_bursts: BurstHistogram,
}

impl StreamSnapshot {
    fn since(&self, base: &StreamSnapshot) -> StreamSnapshot {
        StreamSnapshot {
            stats: self.stats.since(&base.stats),
            rx_bursts: self.rx_bursts.since(&base.rx_bursts),
            tx_bursts: self.tx_bursts.since(&base.tx_bursts),
        }
    }
}

impl ActiveFwd {
    /// Every stream's counters now.
    pub(super) fn stream_snapshots(&self) -> Vec<StreamSnapshot> {
        self.counters
            .iter()
            .map(|c| {
                let (rx_bursts, tx_bursts) = if self.record_bursts {
                    c.bursts.snapshot()
                } else {
                    Default::default()
                };
                StreamSnapshot {
                    stats: c.snapshot(),
                    rx_bursts,
                    tx_bursts,
                }
            })
            .collect()
    }

    /// Every stream's counters since `start` or the last `clear fwd stats all`.
    pub(super) fn streams_since_base(&self) -> Vec<StreamSnapshot> {
        self.stream_snapshots()
            .iter()
            .zip(&self.stream_base)
            .map(|(now, base)| now.since(base))
            .collect()
    }
}

/// What the forward statistics are drawn from: the plan, the per-stream
/// counters since the base, whether bursts were recorded.
pub(super) struct FwdView<'a> {
    pub plan: &'a Plan,
    pub streams: &'a [StreamSnapshot],
    pub base: &'a [PortStats],
    pub record_bursts: bool,
}

impl Session {
    /// `show port stats`: one NIC block per port with rates since the last show.
    /// `ports` None = the forwarding ports while forwarding, else every open port.
    pub fn show_port_stats(&mut self, ports: Option<&[u16]>, header: bool) {
        let now = Instant::now();
        let fwd_ports: Option<Vec<u16>> = self.fwd.as_ref().map(|f| f.plan.fwd_ports.clone());
        let ids: Vec<u16> = match (ports, &fwd_ports) {
            (Some(p), _) => p.to_vec(),
            (None, Some(f)) => f.clone(),
            (None, None) => (0..self.ports.len() as u16)
                .filter(|&i| self.ports[i as usize].state != PortState::Closed)
                .collect(),
        };
        let fwd_ports = fwd_ports.unwrap_or_else(|| ids.clone());
        let mut text = String::new();
        if header {
            if self.out.clear {
                text += "\x1b[2J\x1b[1;1H";
            }
            text += "\n  Port statistics ====================================\n";
        }
        let mut jports = Vec::new();
        let (mut tot_rx, mut tot_tx) = (0.0, 0.0);
        for &p in &ids {
            let Some(slot) = self.ports.get_mut(p as usize) else {
                continue;
            };
            let s = slot.port.stats();
            let r: Rates = slot.meter.sample(s, now);
            if fwd_ports.contains(&p) {
                tot_rx += r.rx_pps;
                tot_tx += r.tx_pps;
            }
            text += &display::nic_stats_block(p, &s, &r);
            let dropped = self
                .fwd
                .as_ref()
                .map_or(0, |f| fwd_dropped_by_port(&f.plan, &f.counters, p));
            jports.push(display::port_json(
                p,
                &self.ports[p as usize].port.info().name,
                &s,
                &r,
                dropped,
            ));
        }
        if header {
            text += &format!(
                "  Total: Rx-pps: {:.0}  Tx-pps: {:.0}  ({:.3} Mpps received)\n",
                tot_rx,
                tot_tx,
                tot_rx / 1e6
            );
        }
        self.out.text(&text);
        let elapsed = self
            .fwd
            .as_ref()
            .map_or(0.0, |f| now.duration_since(f.started).as_secs_f64());
        self.out.json(json!({
            "event": "stats",
            "elapsed_s": elapsed,
            "ports": jports,
            "total": {"rx_pps": tot_rx, "tx_pps": tot_tx},
        }));
    }

    /// Render the telemetry text and hand it to the metrics server (if any).
    pub fn publish_metrics(&mut self) {
        let Some(server) = &self.metrics else { return };
        let now = Instant::now();
        let mut latency = LatencyRecorder::new();
        match &self.fwd {
            Some(f) => {
                for sh in &f.latency_shares {
                    if let Ok(g) = sh.lock() {
                        latency.merge(&g);
                    }
                }
            }
            None => latency.merge(&self.last_latency),
        }
        let names: Vec<String> = self.ports.iter().map(|p| p.port.info().name).collect();
        let samples: Vec<PortSample<'_>> = self
            .ports
            .iter()
            .zip(self.metric_meters.iter_mut())
            .enumerate()
            .map(|(i, (slot, meter))| {
                let stats = slot.port.stats();
                PortSample {
                    port: i as u16,
                    name: &names[i],
                    stats,
                    rates: meter.sample(stats, now),
                    xstats: slot.port.xstats(),
                    fwd_dropped: self
                        .fwd
                        .as_ref()
                        .map_or(0, |f| fwd_dropped_by_port(&f.plan, &f.counters, i as u16)),
                    link_up: slot.port.link().up,
                }
            })
            .collect();
        let ps = self.pool.stats();
        let text = metrics::render(
            &samples,
            self.fwd.is_some(),
            self.cfg.mode.name(),
            &latency,
            (self.pool.name(), &ps),
        );
        server.publish(text);
    }

    /// Take a rate sample of every port without printing (the next show then
    /// reports rates since now).
    pub fn sample_rates(&mut self) {
        let now = Instant::now();
        for slot in self.ports.iter_mut() {
            let s = slot.port.stats();
            slot.meter.sample(s, now);
        }
    }

    /// `clear port stats all`.
    pub fn clear_port_stats(&mut self) {
        for slot in self.ports.iter_mut() {
            slot.port.reset_stats();
            slot.meter.reset();
        }
        for meter in self.metric_meters.iter_mut() {
            meter.reset();
        }
        if let Some(f) = self.fwd.as_mut() {
            f.base = vec![PortStats::default(); f.base.len()];
        }
        self.out.text("  NIC statistics cleared\n");
    }

    /// `show fwd stats all`: forward statistics of the running forwarding.
    pub fn show_fwd_stats(&mut self) -> Result<(), RunError> {
        let Some(f) = &self.fwd else {
            return Err(usage("packet forwarding not started"));
        };
        let streams = f.streams_since_base();
        let view = FwdView {
            plan: &f.plan,
            streams: &streams,
            base: &f.base,
            record_bursts: f.record_bursts,
        };
        let text = fwd_stats_text(&self.ports, &view);
        self.out.text(&text);
        Ok(())
    }

    /// `clear fwd stats all`: the forward statistics count from now (the ports'
    /// counters and the streams' own, burst counts included), as testpmd's
    /// fwd_stats_reset. Nothing is written that an lcore owns: new bases are
    /// taken.
    pub fn clear_fwd_stats(&mut self) -> Result<(), RunError> {
        let Some(f) = self.fwd.as_mut() else {
            return Err(usage("packet forwarding not started"));
        };
        f.base = self.ports.iter().map(|p| p.port.stats()).collect();
        f.stream_base = f.stream_snapshots();
        Ok(())
    }

    /// `show port info N|all`.
    pub fn show_port_info(&mut self, ids: &[u16]) -> Result<(), RunError> {
        let mut text = String::new();
        for &id in ids {
            let slot = self.slot(id)?;
            let info = slot.port.info();
            text += &format!(
                "\n********************* Infos for port {id}  *********************\n\
                 MAC address: {}\nDevice name: {}\nDriver name: {}\nConnect to socket: {}\n\
                 Port state: {:?}\nLink status: {}\nPromiscuous mode: {}\n\
                 Max possible RX queues: {}\nMax possible number of RXDs per queue: {}\n\
                 Min possible number of RXDs per queue: {}\nRXDs number alignment: {}\n\
                 Max possible TX queues: {}\nMax possible number of TXDs per queue: {}\n\
                 Min possible number of TXDs per queue: {}\nTXDs number alignment: {}\n\
                 Max RX packet length: {}\nCurrent number of RX queues: {}\nCurrent number of TX queues: {}\n",
                slot.port.mac_addr(),
                info.name,
                info.driver,
                info.numa_node
                    .map_or("unknown".to_string(), |n| n.to_string()),
                slot.state,
                slot.port.link(),
                if slot.port.promiscuous() {
                    "enabled"
                } else {
                    "disabled"
                },
                info.max_rx_queues,
                info.max_rxd,
                info.min_rxd,
                info.desc_align,
                info.max_tx_queues,
                info.max_txd,
                info.min_txd,
                info.desc_align,
                info.max_rx_pktlen,
                slot.rx.len(),
                slot.tx.len(),
            );
            // Which loops the driver runs (DPDK prints it in `show rxq info`),
            // while queue 0 is with us rather than on a forwarding lcore.
            let rx_mode = slot.rx.first().and_then(|q| q.as_ref()?.burst_mode());
            let tx_mode = slot.tx.first().and_then(|q| q.as_ref()?.burst_mode());
            if let Some(m) = rx_mode {
                text += &format!("Rx burst mode: {m}\n");
            }
            if let Some(m) = tx_mode {
                text += &format!("Tx burst mode: {m}\n");
            }
            // DPDK lists these among the offload capabilities.
            let yes_no = |b: bool| if b { "yes" } else { "no" };
            text += &format!(
                "Rx scatter (frames over several mbufs): {}\nTx multi-segment mbufs: {}\n",
                yes_no(info.rx_scatter),
                yes_no(info.tx_multi_seg)
            );
        }
        self.out.text(&text);
        Ok(())
    }

    /// `show port summary all`: one line per port.
    pub fn show_port_summary(&mut self, ids: &[u16]) {
        let mut text = format!(
            "Number of available ports: {}
Port MAC Address       Name         Driver         Status   Link
",
            self.ports.len()
        );
        for &id in ids {
            let Some(slot) = self.ports.get(id as usize) else {
                continue;
            };
            let info = slot.port.info();
            let link = slot.port.link();
            text += &format!(
                "{id:<4} {} {:<12} {:<14} {:<8} {}\n",
                slot.port.mac_addr(),
                info.name,
                info.driver,
                if link.up { "up" } else { "down" },
                if link.speed_mbps % 1000 == 0 {
                    format!("{} Gbps", link.speed_mbps / 1000)
                } else {
                    format!("{} Mbps", link.speed_mbps)
                }
            );
        }
        self.out.text(&text);
    }

    /// `show port xstats N`.
    pub fn show_port_xstats(&mut self, ids: &[u16]) -> Result<(), RunError> {
        let mut text = String::new();
        for &id in ids {
            let slot = self.slot(id)?;
            text += &format!("###### NIC extended statistics for port {id:<2} ######\n");
            for (k, v) in slot.port.xstats() {
                text += &format!("{k}: {v}\n");
            }
        }
        self.out.text(&text);
        Ok(())
    }

    /// `show config fwd`.
    pub fn show_config_fwd(&mut self) -> Result<(), RunError> {
        let plan = self.plan()?;
        self.out.text(&fwd_config_text(&self.cfg, &plan));
        Ok(())
    }

    pub(super) fn final_report(
        &self,
        view: &FwdView<'_>,
        latency: &LatencyRecorder,
        elapsed: std::time::Duration,
        mode: nicpoll::fwd::FwdMode,
    ) {
        let mut text = fwd_stats_text(&self.ports, view);
        let total = fwd_totals(&self.ports, view);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let fwd_pkts = if mode.generates() {
            total.1.tx_packets
        } else {
            total.1.rx_packets
        };
        text += &format!(
            "\n  Run time {:.3} s: {:.3} Mpps {} ({:.0} packets per second over all ports)\n",
            secs,
            fwd_pkts as f64 / secs / 1e6,
            if mode.generates() { "sent" } else { "received" },
            fwd_pkts as f64 / secs
        );
        let lat = latency.summary();
        if lat.samples > 0 {
            text += &format!("\n{}", display::latency_block(&lat));
        }
        text += "\nDone.\n";
        self.out.text(&text);
        let jports: Vec<serde_json::Value> = total
            .0
            .iter()
            .map(|(p, t)| {
                let mut j = display::fwd_json(t);
                j["port"] = json!(p);
                if view.record_bursts {
                    let (rx, tx) = port_bursts(view, *p);
                    j["rx_bursts"] = display::bursts_json(&rx);
                    j["tx_bursts"] = display::bursts_json(&tx);
                }
                j
            })
            .collect();
        self.out.json(json!({
            "event": "final",
            "elapsed_s": secs,
            "mode": mode.name(),
            "ports": jports,
            "total": display::fwd_json(&total.1),
            "mpps": fwd_pkts as f64 / secs / 1e6,
            "latency": display::latency_json(&lat),
        }));
    }
}

/// testpmd's forwarding configuration (`show config fwd`): the mode and the
/// counts, then each lcore's streams with the MAC they send to.
fn fwd_config_text(cfg: &Config, plan: &Plan) -> String {
    let mut text = format!(
        "{} packet forwarding{} - ports={} - cores={} - streams={} - NUMA support disabled, MP allocation mode: native\n",
        cfg.mode,
        if cfg.retry.enabled { " with retry" } else { "" },
        plan.fwd_ports.len(),
        plan.lcores.len(),
        plan.streams.len()
    );
    for (lc, ids) in &plan.lcores {
        text += &format!(
            "Logical Core {} (CPU {}) forwards packets on {} streams:\n",
            lc.id,
            lcore::format_cpu_list(&lc.cpus),
            ids.len()
        );
        for &i in ids {
            let s = plan.streams[i];
            text += &format!("  {s} peer={}\n", peer_mac(cfg, s.tx_port));
        }
    }
    text
}

/// What a run prints as forwarding starts: the configuration, and testpmd's
/// summary of burst size, cores and ports.
pub(super) fn config_text(cfg: &Config, plan: &Plan) -> String {
    let mut text = fwd_config_text(cfg, plan);
    text += &format!(
        "\n  {} packet forwarding packets/burst={}\n  nb forwarding cores={} - nb forwarding ports={}\n",
        cfg.mode,
        cfg.burst,
        plan.lcores.len(),
        plan.fwd_ports.len()
    );
    text
}

fn fwd_dropped_by_port(plan: &Plan, counters: &[FwdCountersRef], port: u16) -> u64 {
    plan.streams
        .iter()
        .zip(counters)
        .filter(|(s, _)| s.tx_port == port)
        .map(|(_, c)| c.fwd_dropped.get())
        .sum()
}

type PortTotals = (Vec<(u16, FwdPortTotals)>, FwdPortTotals);

fn fwd_totals(ports: &[PortSlot], view: &FwdView<'_>) -> PortTotals {
    let mut total = FwdPortTotals::default();
    let mut per = Vec::new();
    for &p in &view.plan.fwd_ports {
        let s = ports[p as usize].port.stats().since(&view.base[p as usize]);
        let on_port = |dir: fn(&StreamSpec) -> u16| {
            view.plan
                .streams
                .iter()
                .zip(view.streams)
                .filter(move |(spec, _)| dir(spec) == p)
                .map(|(_, st)| st)
        };
        let t = FwdPortTotals {
            rx_packets: s.ipackets,
            rx_dropped: s.imissed,
            tx_packets: s.opackets,
            tx_dropped: s.oerrors
                + on_port(|spec| spec.tx_port)
                    .map(|st| st.stats.fwd_dropped)
                    .sum::<u64>(),
            rx_errors: s.ierrors,
            rx_nombuf: s.rx_nombuf,
            rx_bad: on_port(|spec| spec.rx_port).map(|st| st.stats.rx_bad).sum(),
        };
        total.add(&t);
        per.push((p, t));
    }
    (per, total)
}

/// The RX-bursts and TX-bursts lines of a port: the streams that receive on
/// it, the streams that send on it (with one stream per port, testpmd's own
/// figures; with more, their sum).
fn port_burst_lines(view: &FwdView<'_>, port: u16) -> String {
    if !view.record_bursts {
        return String::new();
    }
    let (rx, tx) = port_bursts(view, port);
    display::burst_stats_lines(&rx, &tx)
}

/// The receive histogram of the streams receiving on `port`, the transmit
/// histogram of those sending on it.
fn port_bursts(view: &FwdView<'_>, port: u16) -> (BurstHistogram, BurstHistogram) {
    let (mut rx, mut tx) = (BurstHistogram::default(), BurstHistogram::default());
    for (spec, st) in view.plan.streams.iter().zip(view.streams) {
        if spec.rx_port == port {
            rx.add(&st.rx_bursts);
        }
        if spec.tx_port == port {
            tx.add(&st.tx_bursts);
        }
    }
    (rx, tx)
}

fn fwd_stats_text(ports: &[PortSlot], view: &FwdView<'_>) -> String {
    let mut text = String::new();
    if view.plan.streams.len() > view.plan.fwd_ports.len() {
        for (s, st) in view.plan.streams.iter().zip(view.streams) {
            let f = &st.stats;
            text += &format!(
                "\n  ------- Forward Stats for {s} -------\n  RX-packets: {:<14} TX-packets: {:<14} TX-dropped: {}\n",
                f.rx_packets, f.tx_packets, f.fwd_dropped
            );
            if view.record_bursts {
                text += &display::burst_stats_lines(&st.rx_bursts, &st.tx_bursts);
            }
        }
    }
    let (per, total) = fwd_totals(ports, view);
    for (p, t) in &per {
        text += &format!(
            "\n{}",
            display::fwd_port_block(*p, t, &port_burst_lines(view, *p))
        );
    }
    text += &format!("\n{}", display::fwd_total_block(&total));
    text
}
