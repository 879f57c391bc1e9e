//! A forwarding run: memory, mempool, ports, lcores, the monitor loop, and the
//! final report.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nicpoll::fwd::{
    EngineConfig, FwdCounters, FwdCountersRef, LatencyRecorder, LcoreStream, LcoreWork, StreamInfo,
};
use nicpoll::lcore::{self, Lcore};
use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::{DmaMemory, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::{MacAddr, PortConf, PortQueues, PortStats};
use nicpoll::stats::RateMeter;
use nicpoll::{Port, RxQueue, TxQueue};
use serde_json::json;

use crate::cli::{Config, StatsFormat, UsageError};
use crate::display::{self, FwdPortTotals};
use crate::plan::{self, Plan, PlanInput};
use crate::registry;

/// Why a run failed: a usage problem found late (exit 2) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum RunError {
    /// The configuration cannot work (exit status 2).
    Usage(UsageError),
    /// Something failed while setting up or running (exit status 1).
    Runtime(anyhow::Error),
}

impl From<nicpoll::Error> for RunError {
    fn from(e: nicpoll::Error) -> Self {
        RunError::Runtime(e.into())
    }
}

impl From<UsageError> for RunError {
    fn from(e: UsageError) -> Self {
        RunError::Usage(e)
    }
}

/// What a finished run reports.
pub struct Report {
    /// All mbufs back in the pool at the end.
    pub mbufs_returned: bool,
}

/// Where output goes: stdout, and whether to clear the screen for live stats.
struct Out {
    format: StatsFormat,
    clear: bool,
}

impl Out {
    fn text(&self, s: &str) {
        if self.format == StatsFormat::Text {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        } else {
            // Keep stdout pure JSON: human text goes to stderr.
            eprint!("{s}");
        }
    }

    fn json(&self, v: serde_json::Value) {
        if self.format == StatsFormat::Json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{v}");
            let _ = o.flush();
        }
    }
}

/// The pool size testpmd would pick, adapted: every ring full, every cache full,
/// a burst in flight per stream, and slack.
fn pool_size(
    cfg: &Config,
    nb_ports: usize,
    rxd: &[u16],
    txd: &[u16],
    lcores: usize,
    streams: usize,
) -> u32 {
    let rings: usize = (0..nb_ports)
        .map(|p| cfg.rxq as usize * rxd[p] as usize + cfg.txq as usize * txd[p] as usize)
        .sum();
    let caches = (lcores + 1) * (cfg.mbcache as usize * 3 / 2 + nicpoll::MAX_BURST);
    let inflight = streams * cfg.burst * 2;
    ((rings + caches + inflight + 1024) as u32).max(1024)
}

/// DMA memory and the mbuf pool. The demo must work anywhere, so when hugepages
/// are missing, full or not writable it says so and falls back to plain memory.
fn memory_and_pool(
    cfg: &Config,
    out: &Out,
    pool_cfg: &MempoolConfig,
) -> Result<(DmaMemory, Mempool), RunError> {
    let attempt = |mc: &MemoryConfig| -> nicpoll::Result<(DmaMemory, Mempool)> {
        let mem = DmaMemory::new(mc.clone())?;
        let pool = Mempool::new(&mem, pool_cfg)?;
        Ok((mem, pool))
    };
    match attempt(&cfg.memory) {
        Ok(x) => Ok(x),
        Err(e) if cfg.demo && !cfg.memory.no_huge => {
            out.text(&format!(
                "note: {e}\nnote: the demo falls back to plain memory (--no-huge)\n"
            ));
            Ok(attempt(&MemoryConfig {
                no_huge: true,
                ..cfg.memory.clone()
            })?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Run the configuration until `stop` is set, the run time is over, or the
/// packet count is reached; print statistics; give everything back.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<Report, RunError> {
    let out = Out {
        format: cfg.stats_format,
        clear: cfg.stats_format == StatsFormat::Text && std::io::stdout().is_terminal(),
    };
    let workers: Vec<Lcore> = cfg.lcores.workers().cloned().collect();
    // Bad device arguments are usage errors: the user typed them.
    let mut ports = registry::create_ports(&cfg.vdevs).map_err(|e| match e {
        nicpoll::Error::DevArgs { .. } => RunError::Usage(UsageError(format!("--vdev: {e}"))),
        e => RunError::Runtime(e.into()),
    })?;
    let plan: Plan = plan::plan(&PlanInput {
        nb_ports: ports.len(),
        select: &cfg.port_select,
        topology: cfg.topology,
        rxq: cfg.rxq,
        txq: cfg.txq,
        workers: &workers,
        nb_cores: cfg.nb_cores,
    })?;
    for n in &plan.notes {
        out.text(&format!("note: {n}\n"));
    }
    let rxd: Vec<u16> = ports
        .iter()
        .map(|p| {
            if cfg.rxd == 0 {
                p.info().default_rxd
            } else {
                cfg.rxd
            }
        })
        .collect();
    let txd: Vec<u16> = ports
        .iter()
        .map(|p| {
            if cfg.txd == 0 {
                p.info().default_txd
            } else {
                cfg.txd
            }
        })
        .collect();
    let nb_mbufs = cfg.total_num_mbufs.unwrap_or_else(|| {
        pool_size(
            cfg,
            ports.len(),
            &rxd,
            &txd,
            plan.lcores.len(),
            plan.streams.len(),
        )
    });
    let mut pool_cfg = MempoolConfig::new("mb_pool_0", nb_mbufs);
    pool_cfg.cache_size = cfg.mbcache;
    if let Some(b) = cfg.mbuf_buf_size {
        pool_cfg.buf_size = b;
    }
    let (mem, pool) = memory_and_pool(cfg, &out, &pool_cfg)?;
    if cfg.tx.len as usize > pool.data_room() && (cfg.mode.generates() || cfg.tx_first) {
        return Err(UsageError(format!(
            "--txpkts {}: does not fit the {}-byte data room of an mbuf; raise --mbuf-size",
            cfg.tx.len,
            pool.data_room()
        ))
        .into());
    }
    out.text(&format!(
        "EAL: {}\ntestpmd: create a new mbuf pool <{}>: n={}, size={}, stride={}\n",
        mem.describe(),
        pool.name(),
        pool.size(),
        pool.buf_len(),
        pool.stride()
    ));

    // Configure every port, then start them (a ring port's peer must be
    // configured before the port starts).
    for (id, port) in ports.iter_mut().enumerate() {
        out.text(&format!("Configuring Port {id} (socket 0)\n"));
        port.configure(&PortConf {
            port_id: id as u16,
            nb_rxq: cfg.rxq,
            nb_txq: cfg.txq,
            nb_rxd: cfg.rxd,
            nb_txd: cfg.txd,
            mempool: pool.clone(),
        })?;
    }
    let mut queues: Vec<PortQueues> = Vec::new();
    for (id, port) in ports.iter_mut().enumerate() {
        queues.push(port.start()?);
        out.text(&format!("Port {id}: {}\n", port.mac_addr()));
    }
    let result = forward(cfg, &out, &mut ports, &mut queues, &plan, &pool, stop);
    drop(queues);
    for p in ports.iter_mut() {
        if let Err(e) = p.stop() {
            out.text(&format!("warning: {e}\n"));
        }
    }
    drop(ports);
    let ps = pool.stats();
    let mbufs_returned = ps.in_use == 0;
    if mbufs_returned {
        out.text(&format!(
            "Mempool {}: all {} mbufs back in the pool\n",
            pool.name(),
            ps.size
        ));
    } else {
        out.text(&format!(
            "warning: mempool {}: {} of {} mbufs were not returned\n",
            pool.name(),
            ps.in_use,
            ps.size
        ));
    }
    out.json(json!({"event": "mempool", "mempool": display::mempool_json(pool.name(), &ps)}));
    result?;
    out.text("\nBye...\n");
    Ok(Report { mbufs_returned })
}

#[allow(clippy::too_many_arguments)]
fn forward(
    cfg: &Config,
    out: &Out,
    ports: &mut [Box<dyn Port>],
    queues: &mut [PortQueues],
    plan: &Plan,
    pool: &Mempool,
    stop: Arc<AtomicBool>,
) -> Result<(), RunError> {
    if cfg.link_check {
        for (id, p) in ports.iter().enumerate() {
            out.text(&format!("Port {id}: link {}\n", p.link()));
        }
    }
    if cfg.flush_rx {
        flush_rx_queues(queues);
    }
    let engine = EngineConfig {
        mode: cfg.mode,
        burst: cfg.burst,
        retry: cfg.retry,
        tx: cfg.tx.clone(),
        latency: cfg.latency,
    };
    let macs: Vec<MacAddr> = ports.iter().map(|p| p.mac_addr()).collect();
    let peer = |p: u16| cfg.eth_peers.get(&p).copied().unwrap_or(MacAddr::local(p));
    let counters: Vec<FwdCountersRef> = plan
        .streams
        .iter()
        .map(|_| Arc::new(crossbeam_utils::CachePadded::new(FwdCounters::default())))
        .collect();

    // Hand each lcore the queues its streams use.
    let mut rxq: Vec<Vec<Option<Box<dyn RxQueue>>>> = queues
        .iter_mut()
        .map(|q| q.rx.drain(..).map(Some).collect())
        .collect();
    let mut txq: Vec<Vec<Option<Box<dyn TxQueue>>>> = queues
        .iter_mut()
        .map(|q| q.tx.drain(..).map(Some).collect())
        .collect();
    let mut works: Vec<(Lcore, LcoreWork)> = Vec::new();
    for (lc, stream_ids) in &plan.lcores {
        let mut w = LcoreWork {
            lcore: lc.id,
            rx: Vec::new(),
            tx: Vec::new(),
            streams: Vec::new(),
            pool: pool.clone(),
            latency: LatencyRecorder::new(),
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
                    let q = rxq[spec.rx_port as usize][spec.rx_queue as usize]
                        .take()
                        .expect("plan gives each receive queue to one lcore");
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
                    let q = txq[spec.tx_port as usize][spec.tx_queue as usize]
                        .take()
                        .expect("plan gives each transmit queue to one lcore");
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
                    peer_mac: peer(spec.tx_port),
                },
                rx: rx_idx,
                tx: tx_idx,
                counters: counters[si].clone(),
            });
        }
        works.push((lc.clone(), w));
    }

    // The configuration, as testpmd prints it.
    let mut text = format!(
        "{} packet forwarding{} - ports={} - cores={} - streams={} - NUMA support disabled, MP allocation mode: native\n",
        cfg.mode,
        if cfg.retry.enabled { " with retry" } else { "" },
        plan.fwd_ports.len(),
        plan.lcores.len(),
        plan.streams.len()
    );
    for (lc, w) in &works {
        text += &format!(
            "Logical Core {} (CPU {}) forwards packets on {} streams:\n",
            lc.id,
            lcore::format_cpu_list(&lc.cpus),
            w.streams.len()
        );
        for s in &w.streams {
            text += &format!("  {} peer={}\n", s.info.spec, s.info.peer_mac);
        }
    }
    text += &format!(
        "\n  {} packet forwarding packets/burst={}\n  nb forwarding cores={} - nb forwarding ports={}\n",
        cfg.mode,
        cfg.burst,
        plan.lcores.len(),
        plan.fwd_ports.len()
    );
    out.text(&text);
    out.json(json!({
        "event": "start",
        "mode": cfg.mode.name(),
        "burst": cfg.burst,
        "ports": plan.fwd_ports,
        "streams": plan.streams.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "cores": plan.lcores.iter().map(|(l, _)| l.id).collect::<Vec<_>>(),
    }));

    // Pin the main thread to its lcore, then start the workers.
    let main = cfg.lcores.main_lcore().clone();
    lcore::pin_current(&main.cpus)?;
    let base_port: Vec<PortStats> = ports.iter().map(|p| p.stats()).collect();
    let started = Instant::now();
    let fwd_stop = Arc::new(AtomicBool::new(false));
    let tx_first = if cfg.tx_first { 1 } else { 0 };
    let mut handles = Vec::new();
    for (lc, mut w) in works {
        let (engine, fwd_stop) = (engine.clone(), fwd_stop.clone());
        let h = std::thread::Builder::new()
            .name(format!("lcore-worker-{}", lc.id))
            .spawn(move || -> Result<LcoreWork, nicpoll::Error> {
                lcore::pin_current(&lc.cpus)?;
                let _id = lcore::register(lc.id)?;
                nicpoll::fwd::run_lcore(&mut w, &engine, tx_first, &fwd_stop);
                Ok(w)
            })
            .map_err(|e| {
                RunError::Runtime(anyhow::anyhow!(
                    "spawning the thread of lcore {}: {e}",
                    lc.id
                ))
            })?;
        handles.push(h);
    }

    // Monitor until something says stop.
    let mut meters: Vec<RateMeter> = ports.iter().map(|_| RateMeter::new()).collect();
    for (i, m) in meters.iter_mut().enumerate() {
        m.sample(ports[i].stats(), started);
    }
    let period = cfg.stats_period.map(Duration::from_secs_f64);
    let deadline = cfg.run_time.map(|t| started + Duration::from_secs_f64(t));
    let mut next_stats = period.map(|p| started + p);
    let reason = loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if deadline.is_some_and(|d| now >= d) {
            break "run time reached";
        }
        if let Some(max) = cfg.max_packets {
            let done: u64 = counters
                .iter()
                .map(|c| {
                    if cfg.mode.generates() {
                        c.tx_packets.get()
                    } else {
                        c.rx_packets.get()
                    }
                })
                .sum();
            if done >= max {
                break "packet count reached";
            }
        }
        if handles.iter().any(|h| h.is_finished()) {
            break "a forwarding lcore stopped";
        }
        if let (Some(p), Some(t)) = (period, next_stats)
            && now >= t
        {
            periodic(
                out,
                ports,
                plan,
                &counters,
                &mut meters,
                &base_port,
                started,
                now,
            );
            next_stats = Some(t + p);
        }
        let mut wake = now + Duration::from_millis(20);
        for t in [deadline, next_stats].into_iter().flatten() {
            wake = wake.min(t);
        }
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    };
    fwd_stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    out.text(&format!(
        "\nTelling cores to stop ({reason})...\nWaiting for lcores to finish...\n"
    ));
    let mut latency = LatencyRecorder::new();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(w)) => {
                latency.merge(&w.latency);
                // The lcore's queues are dropped here, before the ports stop.
                drop(w);
            }
            Ok(Err(e)) => failure = Some(RunError::Runtime(e.into())),
            Err(_) => {
                failure = Some(RunError::Runtime(anyhow::anyhow!(
                    "a forwarding lcore panicked"
                )))
            }
        }
    }
    final_report(
        out, cfg, ports, plan, &counters, &base_port, &latency, elapsed,
    );
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

/// Drain what is waiting in the receive queues before forwarding starts
/// (testpmd's flush_fwd_rx_queues: two rounds, bounded).
fn flush_rx_queues(queues: &mut [PortQueues]) {
    let mut b = MbufBatch::new();
    for _ in 0..2 {
        for pq in queues.iter_mut() {
            for q in pq.rx.iter_mut() {
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

fn fwd_dropped_by_port(plan: &Plan, counters: &[FwdCountersRef], port: u16) -> u64 {
    plan.streams
        .iter()
        .zip(counters)
        .filter(|(s, _)| s.tx_port == port)
        .map(|(_, c)| c.fwd_dropped.get())
        .sum()
}

fn rx_bad_by_port(plan: &Plan, counters: &[FwdCountersRef], port: u16) -> u64 {
    plan.streams
        .iter()
        .zip(counters)
        .filter(|(s, _)| s.rx_port == port)
        .map(|(_, c)| c.rx_bad.get())
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn periodic(
    out: &Out,
    ports: &[Box<dyn Port>],
    plan: &Plan,
    counters: &[FwdCountersRef],
    meters: &mut [RateMeter],
    base: &[PortStats],
    started: Instant,
    now: Instant,
) {
    let mut text = String::new();
    if out.clear {
        text += "\x1b[2J\x1b[1;1H";
    }
    text += "\n  Port statistics ====================================\n";
    let mut jports = Vec::new();
    let (mut tot_rx, mut tot_tx) = (0.0, 0.0);
    for &p in &plan.fwd_ports {
        let s = ports[p as usize].stats().since(&base[p as usize]);
        let r = meters[p as usize].sample(ports[p as usize].stats(), now);
        tot_rx += r.rx_pps;
        tot_tx += r.tx_pps;
        text += &display::nic_stats_block(p, &s, &r);
        jports.push(display::port_json(
            p,
            &ports[p as usize].info().name,
            &s,
            &r,
            fwd_dropped_by_port(plan, counters, p),
        ));
    }
    text += &format!(
        "  Total: Rx-pps: {:.0}  Tx-pps: {:.0}  ({:.3} Mpps forwarded)\n",
        tot_rx,
        tot_tx,
        tot_rx / 1e6
    );
    out.text(&text);
    out.json(json!({
        "event": "stats",
        "elapsed_s": now.duration_since(started).as_secs_f64(),
        "ports": jports,
        "total": {"rx_pps": tot_rx, "tx_pps": tot_tx},
    }));
}

#[allow(clippy::too_many_arguments)]
fn final_report(
    out: &Out,
    cfg: &Config,
    ports: &[Box<dyn Port>],
    plan: &Plan,
    counters: &[FwdCountersRef],
    base: &[PortStats],
    latency: &LatencyRecorder,
    elapsed: Duration,
) {
    let mut text = String::new();
    if plan.streams.len() > plan.fwd_ports.len() {
        for (s, c) in plan.streams.iter().zip(counters) {
            let f = c.snapshot();
            text += &format!(
                "\n  ------- Forward Stats for {s} -------\n  RX-packets: {:<14} TX-packets: {:<14} TX-dropped: {}\n",
                f.rx_packets, f.tx_packets, f.fwd_dropped
            );
        }
    }
    let mut total = FwdPortTotals::default();
    let mut jports = Vec::new();
    for &p in &plan.fwd_ports {
        let s = ports[p as usize].stats().since(&base[p as usize]);
        let t = FwdPortTotals {
            rx_packets: s.ipackets,
            rx_dropped: s.imissed,
            tx_packets: s.opackets,
            tx_dropped: s.oerrors + fwd_dropped_by_port(plan, counters, p),
            rx_errors: s.ierrors,
            rx_nombuf: s.rx_nombuf,
            rx_bad: rx_bad_by_port(plan, counters, p),
        };
        total.add(&t);
        text += &format!("\n{}", display::fwd_port_block(p, &t));
        let mut j = display::fwd_json(&t);
        j["port"] = json!(p);
        jports.push(j);
    }
    text += &format!("\n{}", display::fwd_total_block(&total));
    let secs = elapsed.as_secs_f64();
    let fwd_pkts = if cfg.mode.generates() {
        total.tx_packets
    } else {
        total.rx_packets
    };
    text += &format!(
        "\n  Run time {:.3} s: {:.3} Mpps {} ({:.0} packets per second over all ports)\n",
        secs,
        fwd_pkts as f64 / secs / 1e6,
        if cfg.mode.generates() {
            "sent"
        } else {
            "received"
        },
        fwd_pkts as f64 / secs
    );
    let lat = latency.summary();
    if lat.samples > 0 {
        text += &format!("\n{}", display::latency_block(&lat));
    }
    text += "\nStopping port(s)...\nDone.\n";
    out.text(&text);
    out.json(json!({
        "event": "final",
        "elapsed_s": secs,
        "mode": cfg.mode.name(),
        "ports": jports,
        "total": display::fwd_json(&total),
        "mpps": fwd_pkts as f64 / secs / 1e6,
        "latency": display::latency_json(&lat),
    }));
}
