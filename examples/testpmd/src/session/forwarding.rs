//! Forwarding: the plan's streams handed to pinned lcores with their queues,
//! started, and stopped again with the queues given back to their ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nicpoll::fwd::{
    EngineConfig, FwdCounters, FwdCountersRef, LatencyRecorder, LatencyShare, LcoreStream,
    LcoreWork, StreamInfo,
};
use nicpoll::lcore::{self, Lcore};
use nicpoll::mbuf::MbufBatch;
use nicpoll::port::{MacAddr, PortStats};
use serde_json::json;

use crate::plan::{self, Plan, PlanInput};

use super::presentation::{FwdView, StreamSnapshot, config_text};
use super::{ActiveFwd, LcoreRun, PortState, PreparedLcore, RunError, Session, peer_mac, usage};

impl Session {
    /// Refuse, before any packet moves, a plan that would hand a port
    /// multi-segment packets it says it cannot send (`tx_multi_seg`):
    /// generated frames of several `--txpkts` segments, or frames a port
    /// may receive as a chain (it scatters, and its frame limit is above
    /// what one mbuf holds) forwarded to it.
    fn check_chains(&self, plan: &Plan, tx_first: u32) -> Result<(), RunError> {
        use nicpoll::fwd::FwdMode;
        let room = self.pool.data_room();
        let generates = self.cfg.mode.generates() || tx_first > 0;
        let forwards = matches!(
            self.cfg.mode,
            FwdMode::Io
                | FwdMode::Mac
                | FwdMode::MacSwap
                | FwdMode::FiveTupleSwap
                | FwdMode::IcmpEcho
        );
        for st in &plan.streams {
            let txi = self.ports[st.tx_port as usize].port.info();
            if txi.tx_multi_seg {
                continue;
            }
            if generates && self.cfg.tx.segs.len() > 1 {
                return Err(usage(format!(
                    "--txpkts {}: port {} ({}) cannot send multi-segment packets; give one length",
                    self.cfg
                        .tx
                        .segs
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    st.tx_port,
                    txi.driver
                )));
            }
            let rxi = self.ports[st.rx_port as usize].port.info();
            let limit =
                self.cfg
                    .max_pkt_len
                    .map_or(rxi.max_rx_pktlen, |n| n.saturating_sub(4)) as usize;
            if forwards && rxi.rx_scatter && limit > room {
                // No mbuf holds more than MAX_DATA_ROOM: offer --mbuf-size
                // only where it can fix it.
                let bigger_mbufs = if limit <= nicpoll::mempool::MAX_DATA_ROOM {
                    format!(
                        "raise --mbuf-size to {} or ",
                        limit + nicpoll::mbuf::DEFAULT_HEADROOM as usize
                    )
                } else {
                    String::new()
                };
                return Err(usage(format!(
                    "port {} ({}) may receive frames of up to {limit} bytes, more than the \
                     {room}-byte data room of an mbuf, as multi-segment packets, and port {} ({}) \
                     cannot send those: {bigger_mbufs}lower --max-pkt-len to {}",
                    st.rx_port,
                    rxi.driver,
                    st.tx_port,
                    txi.driver,
                    room + 4
                )));
            }
        }
        Ok(())
    }

    /// Start forwarding, first sending `tx_first` bursts per stream.
    pub fn start_forwarding(&mut self, tx_first: u32) -> Result<(), RunError> {
        if self.fwd.is_some() {
            return Err(usage("packet forwarding already started"));
        }
        let plan = self.plan()?;
        for &p in &plan.fwd_ports {
            if self.ports[p as usize].state != PortState::Started {
                return Err(usage(format!("port {p} is not started (port start {p})")));
            }
        }
        self.check_chains(&plan, tx_first)?;
        for n in &plan.notes {
            self.out.text(&format!("note: {n}\n"));
        }
        if self.cfg.flush_rx {
            self.flush_rx_queues();
        }
        let engine = EngineConfig {
            mode: self.cfg.mode,
            burst: self.cfg.burst,
            retry: self.cfg.retry,
            tx: self.cfg.tx.clone(),
            latency: self.cfg.latency,
            record_burst_stats: self.cfg.record_burst_stats,
        };
        let macs: Vec<MacAddr> = self.ports.iter().map(|p| p.port.mac_addr()).collect();
        let counters: Vec<FwdCountersRef> = plan
            .streams
            .iter()
            .map(|_| Arc::new(crossbeam_utils::CachePadded::new(FwdCounters::default())))
            .collect();

        // Hand each lcore the queues its streams use.
        let mut works: Vec<PreparedLcore> = Vec::new();
        let mut latency_shares: Vec<LatencyShare> = Vec::new();
        for (lc, stream_ids) in &plan.lcores {
            let share: Option<LatencyShare> = self
                .metrics
                .as_ref()
                .map(|_| Arc::new(std::sync::Mutex::new(LatencyRecorder::new())));
            if let Some(sh) = &share {
                latency_shares.push(sh.clone());
            }
            let mut w = LcoreWork {
                lcore: lc.id,
                rx: Vec::new(),
                tx: Vec::new(),
                streams: Vec::new(),
                pool: self.pool.clone(),
                latency: LatencyRecorder::new(),
                latency_live: share,
            };
            let mut rx_keys: Vec<(u16, u16)> = Vec::new();
            let mut tx_keys: Vec<(u16, u16)> = Vec::new();
            for &si in stream_ids {
                let spec = plan.streams[si];
                let rx_idx = match rx_keys
                    .iter()
                    .position(|k| *k == (spec.rx_port, spec.rx_queue))
                {
                    Some(i) => i,
                    None => {
                        let q = self.ports[spec.rx_port as usize].rx[spec.rx_queue as usize]
                            .take()
                            .expect("the plan gives each receive queue to one lcore");
                        w.rx.push(q);
                        rx_keys.push((spec.rx_port, spec.rx_queue));
                        w.rx.len() - 1
                    }
                };
                let tx_idx = match tx_keys
                    .iter()
                    .position(|k| *k == (spec.tx_port, spec.tx_queue))
                {
                    Some(i) => i,
                    None => {
                        let q = self.ports[spec.tx_port as usize].tx[spec.tx_queue as usize]
                            .take()
                            .expect("the plan gives each transmit queue to one lcore");
                        w.tx.push(q);
                        tx_keys.push((spec.tx_port, spec.tx_queue));
                        w.tx.len() - 1
                    }
                };
                w.streams.push(LcoreStream {
                    info: StreamInfo {
                        id: si as u16,
                        spec,
                        tx_mac: macs[spec.tx_port as usize],
                        peer_mac: peer_mac(&self.cfg, spec.tx_port),
                    },
                    rx: rx_idx,
                    tx: tx_idx,
                    counters: counters[si].clone(),
                });
            }
            works.push((lc.clone(), w, rx_keys, tx_keys));
        }
        self.out.text(&config_text(&self.cfg, &plan));
        self.out.json(json!({
            "event": "start",
            "mode": self.cfg.mode.name(),
            "burst": self.cfg.burst,
            "ports": plan.fwd_ports,
            "streams": plan.streams.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "cores": plan.lcores.iter().map(|(l, _)| l.id).collect::<Vec<_>>(),
        }));

        let base: Vec<PortStats> = self.ports.iter().map(|p| p.port.stats()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut lcores = Vec::new();
        let mut spawn_error = None;
        for (lc, mut w, rx_keys, tx_keys) in works {
            let (engine, stop2) = (engine.clone(), stop.clone());
            let lc_id = lc.id;
            let spawned = std::thread::Builder::new()
                .name(format!("lcore-worker-{}", lc.id))
                .spawn(move || -> Result<LcoreWork, nicpoll::Error> {
                    lcore::pin_current(&lc.cpus)?;
                    let _id = lcore::register(lc.id)?;
                    nicpoll::fwd::run_lcore(&mut w, &engine, tx_first, &stop2);
                    Ok(w)
                });
            match spawned {
                Ok(handle) => lcores.push(LcoreRun {
                    handle,
                    rx_keys,
                    tx_keys,
                }),
                Err(e) => {
                    spawn_error = Some(RunError::Runtime(anyhow::anyhow!(
                        "spawning the thread of lcore {lc_id}: {e}"
                    )));
                    break;
                }
            }
        }
        let plan_streams = plan.streams.len();
        self.fwd = Some(ActiveFwd {
            plan,
            counters,
            lcores,
            stop,
            started: Instant::now(),
            base,
            stream_base: vec![StreamSnapshot::default(); plan_streams],
            record_bursts: engine.record_burst_stats,
            mode: self.cfg.mode,
            latency_shares,
        });
        if let Some(e) = spawn_error {
            let _ = self.stop_forwarding("spawn failure");
            return Err(e);
        }
        Ok(())
    }

    /// The forwarding plan of the current configuration: streams and the
    /// lcores that run them.
    pub(super) fn plan(&self) -> Result<Plan, RunError> {
        let workers: Vec<Lcore> = self.cfg.lcores.workers().cloned().collect();
        Ok(plan::plan(&PlanInput {
            nb_ports: self.ports.len(),
            select: &self.cfg.port_select,
            topology: self.cfg.topology,
            rxq: self.cfg.rxq,
            txq: self.cfg.txq,
            workers: &workers,
            nb_cores: self.cfg.nb_cores,
        })?)
    }

    /// Whether a forwarding lcore ended on its own (an error).
    pub fn lcore_finished(&self) -> bool {
        self.fwd
            .as_ref()
            .is_some_and(|f| f.lcores.iter().any(|l| l.handle.is_finished()))
    }

    /// Packets the running forwarding has handled: received, or sent by generators.
    pub fn fwd_packets(&self) -> u64 {
        self.fwd.as_ref().map_or(0, |f| {
            f.counters
                .iter()
                .map(|c| {
                    if f.mode.generates() {
                        c.tx_packets.get()
                    } else {
                        c.rx_packets.get()
                    }
                })
                .sum()
        })
    }

    /// Stop forwarding, give the queues back to their ports and print the
    /// forward statistics.
    pub fn stop_forwarding(&mut self, reason: &str) -> Result<(), RunError> {
        let Some(mut f) = self.fwd.take() else {
            return Err(usage("packet forwarding not started"));
        };
        f.stop.store(true, Ordering::Relaxed);
        let elapsed = f.started.elapsed();
        self.out.text(&format!(
            "\nTelling cores to stop ({reason})...\nWaiting for lcores to finish...\n"
        ));
        let mut latency = LatencyRecorder::new();
        let mut failure = None;
        for l in std::mem::take(&mut f.lcores) {
            match l.handle.join() {
                Ok(Ok(w)) => {
                    latency.merge(&w.latency);
                    for (q, (p, i)) in w.rx.into_iter().zip(l.rx_keys) {
                        self.ports[p as usize].rx[i as usize] = Some(q);
                    }
                    for (q, (p, i)) in w.tx.into_iter().zip(l.tx_keys) {
                        self.ports[p as usize].tx[i as usize] = Some(q);
                    }
                }
                Ok(Err(e)) => failure = Some(RunError::Runtime(e.into())),
                Err(_) => {
                    failure = Some(RunError::Runtime(anyhow::anyhow!(
                        "a forwarding lcore panicked"
                    )))
                }
            }
        }
        let streams = f.streams_since_base();
        let view = FwdView {
            plan: &f.plan,
            streams: &streams,
            base: &f.base,
            record_bursts: f.record_bursts,
        };
        self.final_report(&view, &latency, elapsed, f.mode);
        self.last_latency = latency;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Drain what is waiting in the receive queues before forwarding starts
    /// (testpmd's flush_fwd_rx_queues: two rounds, bounded).
    fn flush_rx_queues(&mut self) {
        let mut b = MbufBatch::new();
        for _ in 0..2 {
            for slot in self.ports.iter_mut() {
                for q in slot.rx.iter_mut().flatten() {
                    for _ in 0..16 {
                        if q.rx_burst(&mut b) == 0 {
                            break;
                        }
                        b.clear();
                    }
                }
            }
        }
    }
}
