//! A testpmd session: DMA memory, the mbuf pool, the ports, and forwarding that
//! can be started and stopped again (by the run loop, or by interactive
//! commands), with testpmd's statistics.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use nicpoll::fwd::{
    EngineConfig, FwdCounters, FwdCountersRef, LatencyRecorder, LatencyShare, LcoreStream,
    LcoreWork, StreamInfo,
};
use nicpoll::lcore::{self, Lcore};
use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::{DmaMemory, IovaMode, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::pci::PciAddress;
use nicpoll::port::{MacAddr, PortConf, PortQueues, PortStats};
use nicpoll::stats::{RateMeter, Rates};
use nicpoll::vfio::{IommuType, VfioContext};
use nicpoll::{Port, RxQueue, TxQueue};
use serde_json::json;

use crate::cli::{Config, StatsFormat, UsageError};
use crate::display::{self, FwdPortTotals};
use crate::metrics::{self, MetricsServer, PortSample};
use crate::plan::{self, Plan, PlanInput};
use crate::registry::{self, PciEnv};

/// Why an operation failed: a usage problem (exit 2, or a one-line error at the
/// prompt) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum RunError {
    /// The configuration or command cannot work.
    Usage(UsageError),
    /// Something failed while setting up or running.
    Runtime(anyhow::Error),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Usage(u) => write!(f, "{u}"),
            RunError::Runtime(e) => write!(f, "{e}"),
        }
    }
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

fn usage(msg: impl Into<String>) -> RunError {
    RunError::Usage(UsageError(msg.into()))
}

/// Where output goes: text to stdout (stderr when stdout carries JSON).
pub struct Out {
    /// The statistics format.
    pub format: StatsFormat,
    /// Clear the screen before each periodic block (a terminal, text format).
    pub clear: bool,
}

impl Out {
    /// For the given format, clearing only on a terminal.
    pub fn new(format: StatsFormat) -> Out {
        Out {
            format,
            clear: format == StatsFormat::Text && std::io::stdout().is_terminal(),
        }
    }

    /// Human text.
    pub fn text(&self, s: &str) {
        if self.format == StatsFormat::Text {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        } else {
            eprint!("{s}");
        }
    }

    /// One JSON line (only in JSON format).
    pub fn json(&self, v: serde_json::Value) {
        if self.format == StatsFormat::Json {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{v}");
            let _ = o.flush();
        }
    }
}

/// Lifecycle of one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Configured, not started.
    Stopped,
    /// Started: its queues exist.
    Started,
    /// Closed: unusable until the program ends.
    Closed,
}

struct PortSlot {
    port: Box<dyn Port>,
    state: PortState,
    /// The started port's queues while no lcore holds them.
    rx: Vec<Option<Box<dyn RxQueue>>>,
    tx: Vec<Option<Box<dyn TxQueue>>>,
    meter: RateMeter,
}

/// Which (port, queue) each of an lcore's queue slots came from.
type QueueKeys = Vec<(u16, u16)>;

/// An lcore about to start: its CPUs, its work, and where its queues came from.
type PreparedLcore = (Lcore, LcoreWork, QueueKeys, QueueKeys);

struct LcoreRun {
    handle: JoinHandle<Result<LcoreWork, nicpoll::Error>>,
    rx_keys: QueueKeys,
    tx_keys: QueueKeys,
}

struct ActiveFwd {
    plan: Plan,
    counters: Vec<FwdCountersRef>,
    lcores: Vec<LcoreRun>,
    stop: Arc<AtomicBool>,
    started: Instant,
    base: Vec<PortStats>,
    mode: nicpoll::fwd::FwdMode,
    latency_shares: Vec<LatencyShare>,
}

/// The whole state of a testpmd process.
pub struct Session {
    /// The configuration; interactive `set` commands change it between runs.
    pub cfg: Config,
    /// Output.
    pub out: Out,
    /// Kept for the life of the session (it owns the hugepage settings).
    _mem: Arc<DmaMemory>,
    /// The VFIO container of the PCI devices (`-a`), if any; it maps the pool.
    vfio: Option<Arc<VfioContext>>,
    pool: Mempool,
    ports: Vec<PortSlot>,
    fwd: Option<ActiveFwd>,
    metrics: Option<MetricsServer>,
    metric_meters: Vec<RateMeter>,
    /// Latency of the last finished forwarding run (for telemetry after `stop`).
    last_latency: LatencyRecorder,
}

/// The pool size testpmd would pick, adapted: every ring full, every cache full,
/// a burst in flight per stream, and slack.
fn pool_size(cfg: &Config, rxd: &[u16], txd: &[u16], lcores: usize) -> u32 {
    let rings: usize = rxd
        .iter()
        .zip(txd)
        .map(|(&r, &t)| cfg.rxq as usize * r as usize + cfg.txq as usize * t as usize)
        .sum();
    let caches = (lcores + 1) * (cfg.mbcache as usize * 3 / 2 + nicpoll::MAX_BURST);
    let streams = rxd.len() * cfg.rxq.max(cfg.txq) as usize;
    let inflight = streams * nicpoll::MAX_BURST * 2;
    ((rings + caches + inflight + 1024) as u32).max(1024)
}

impl Session {
    /// Create memory, the pool and the ports, configure every port and start it.
    pub fn new(cfg: Config) -> Result<Session, RunError> {
        let out = Out::new(cfg.stats_format);
        // The main lcore runs control and statistics: pin it as DPDK does.
        lcore::pin_current(&cfg.lcores.main_lcore().cpus)?;
        // PCI devices: one VFIO container for all of them, which decides the
        // IOVA mode before any DMA memory exists.
        // Mellanox devices bound to mlx5_core go through verbs, not VFIO.
        let vfio_addrs: Vec<PciAddress> = cfg
            .pci
            .iter()
            .filter(|p| !registry::is_mlx5(p))
            .map(|p| p.addr)
            .collect();
        let (vfio, pci_mem) = if vfio_addrs.is_empty() {
            (None, None)
        } else {
            let ctx = VfioContext::new()?;
            let addrs = vfio_addrs;
            let needed = ctx.iova_mode_for(&addrs)?;
            let mode = pci_iova_mode(cfg.memory.iova_mode, needed, ctx.iommu_type())?;
            let mem = DmaMemory::new(MemoryConfig {
                iova_mode: Some(mode),
                ..cfg.memory.clone()
            })?;
            out.text(&format!(
                "EAL: VFIO: {}, {} device(s), IOVA mode {}\n",
                ctx.iommu_type()
                    .map_or("no IOMMU type yet", |t| t.describe()),
                addrs.len(),
                mode.name().to_uppercase()
            ));
            (Some(Arc::new(ctx)), Some(Arc::new(mem)))
        };
        let env = match (&vfio, &pci_mem) {
            (Some(ctx), Some(mem)) => Some(PciEnv {
                ctx: ctx.clone(),
                mem: mem.clone(),
                dma: Arc::new(nicpoll_iavf::VfioDma::new(ctx.clone())),
            }),
            _ => None,
        };
        // Bad device arguments are usage errors: the user typed them.
        let ports =
            registry::create_ports(&cfg.pci, env.as_ref(), &cfg.vdevs).map_err(|e| match e {
                nicpoll::Error::DevArgs { ref device, .. } => {
                    if cfg.pci.iter().any(|p| &p.args.spec == device) {
                        usage(format!("-a: {e}"))
                    } else {
                        usage(format!("--vdev: {e}"))
                    }
                }
                e => RunError::Runtime(e.into()),
            })?;
        // One mapper for the container: the pool is mapped once, whichever
        // driver (or this code) asks first.
        let pci_dma = env.as_ref().map(|e| e.dma.clone());
        drop(env);
        for (id, spec) in cfg.pci.iter().enumerate() {
            let info = ports[id].info();
            out.text(&format!(
                "EAL: Probe PCI driver: {} device: {} (port {id})\n",
                info.driver, spec.addr
            ));
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
        let nb_mbufs = cfg
            .total_num_mbufs
            .unwrap_or_else(|| pool_size(&cfg, &rxd, &txd, cfg.lcores.lcores.len()));
        let mut pool_cfg = MempoolConfig::new("mb_pool_0", nb_mbufs);
        pool_cfg.cache_size = cfg.mbcache;
        if let Some(b) = cfg.mbuf_buf_size {
            pool_cfg.buf_size = b;
        }
        let (mem, pool) = match pci_mem {
            Some(mem) => {
                let pool = Mempool::new(&mem, &pool_cfg)?;
                if let Some(dma) = &pci_dma {
                    nicpoll_iavf::DmaMap::map(dma.as_ref(), pool.region())?;
                }
                (mem, pool)
            }
            None => {
                let (mem, pool) = memory_and_pool(&cfg, &out, &pool_cfg)?;
                (Arc::new(mem), pool)
            }
        };
        if cfg.tx.len as usize > pool.data_room() {
            return Err(usage(format!(
                "--txpkts {}: does not fit the {}-byte data room of an mbuf; raise --mbuf-size",
                cfg.tx.len,
                pool.data_room()
            )));
        }
        out.text(&format!(
            "EAL: {}\ntestpmd: create a new mbuf pool <{}>: n={}, data room={}, stride={}\n",
            mem.describe(),
            pool.name(),
            pool.size(),
            pool.data_room(),
            pool.stride()
        ));
        let metrics = match &cfg.metrics {
            Some(addr) => {
                let m = MetricsServer::start(addr).map_err(usage)?;
                out.text(&format!("Metrics: http://{}/metrics\n", m.addr()));
                Some(m)
            }
            None => None,
        };
        let nb_ports = ports.len();
        let mut s = Session {
            metrics,
            metric_meters: (0..nb_ports).map(|_| RateMeter::new()).collect(),
            last_latency: LatencyRecorder::new(),
            cfg,
            out,
            _mem: mem,
            vfio,
            pool,
            ports: ports
                .into_iter()
                .map(|port| PortSlot {
                    port,
                    state: PortState::Stopped,
                    rx: Vec::new(),
                    tx: Vec::new(),
                    meter: RateMeter::new(),
                })
                .collect(),
            fwd: None,
        };
        // Configure every port before starting any: a ring port's peer must
        // have its rings when the port starts.
        for id in 0..s.ports.len() {
            s.configure_port(id as u16)?;
        }
        for id in 0..s.ports.len() {
            s.start_port(id as u16)?;
        }
        if s.cfg.link_check {
            for (id, p) in s.ports.iter().enumerate() {
                s.out.text(&format!("Port {id}: link {}\n", p.port.link()));
            }
        }
        Ok(s)
    }

    /// Number of ports.
    pub fn nb_ports(&self) -> usize {
        self.ports.len()
    }

    /// Whether forwarding is running.
    pub fn forwarding(&self) -> bool {
        self.fwd.is_some()
    }

    fn slot(&mut self, id: u16) -> Result<&mut PortSlot, RunError> {
        let n = self.ports.len();
        self.ports.get_mut(id as usize).ok_or_else(|| {
            usage(format!(
                "port {id} does not exist (ports 0 to {})",
                n.saturating_sub(1)
            ))
        })
    }

    fn configure_port(&mut self, id: u16) -> Result<(), RunError> {
        let conf = PortConf {
            port_id: id,
            nb_rxq: self.cfg.rxq,
            nb_txq: self.cfg.txq,
            nb_rxd: self.cfg.rxd,
            nb_txd: self.cfg.txd,
            mempool: self.pool.clone(),
        };
        self.out
            .text(&format!("Configuring Port {id} (socket 0)\n"));
        let slot = self.slot(id)?;
        slot.port.configure(&conf)?;
        Ok(())
    }

    /// Start a stopped port.
    pub fn start_port(&mut self, id: u16) -> Result<(), RunError> {
        let forwarding = self.forwarding();
        let slot = self.slot(id)?;
        match slot.state {
            PortState::Started => return Err(usage(format!("port {id} is already started"))),
            PortState::Closed => return Err(usage(format!("port {id} is closed"))),
            PortState::Stopped if forwarding => {
                return Err(usage("stop forwarding first (stop)"));
            }
            PortState::Stopped => {}
        }
        let q: PortQueues = slot.port.start()?;
        slot.rx = q.rx.into_iter().map(Some).collect();
        slot.tx = q.tx.into_iter().map(Some).collect();
        slot.state = PortState::Started;
        let mac = slot.port.mac_addr();
        self.out.text(&format!("Port {id}: {mac}\n"));
        Ok(())
    }

    /// Stop a started port (forwarding must be stopped).
    pub fn stop_port(&mut self, id: u16) -> Result<(), RunError> {
        if self.forwarding() {
            return Err(usage("stop forwarding first (stop)"));
        }
        let slot = self.slot(id)?;
        if slot.state != PortState::Started {
            return Err(usage(format!("port {id} is not started")));
        }
        slot.rx.clear();
        slot.tx.clear();
        slot.port.stop()?;
        slot.state = PortState::Stopped;
        self.out
            .text(&format!("Stopping ports...\nPort {id}: stopped\n"));
        Ok(())
    }

    /// Close a port: stopped and unusable from now on.
    pub fn close_port(&mut self, id: u16) -> Result<(), RunError> {
        if self.slot(id)?.state == PortState::Started {
            self.stop_port(id)?;
        }
        self.slot(id)?.state = PortState::Closed;
        self.out.text(&format!("Port {id} is closed\n"));
        Ok(())
    }

    /// Reconfigure queue counts or ring sizes of every port (`port config all rxq N`).
    pub fn reconfigure_all(
        &mut self,
        rxq: Option<u16>,
        txq: Option<u16>,
        rxd: Option<u16>,
        txd: Option<u16>,
    ) -> Result<(), RunError> {
        if self.ports.iter().any(|p| p.state == PortState::Started) {
            return Err(usage("stop all ports first (port stop all)"));
        }
        let old = (self.cfg.rxq, self.cfg.txq, self.cfg.rxd, self.cfg.txd);
        self.cfg.rxq = rxq.unwrap_or(self.cfg.rxq);
        self.cfg.txq = txq.unwrap_or(self.cfg.txq);
        self.cfg.rxd = rxd.unwrap_or(self.cfg.rxd);
        self.cfg.txd = txd.unwrap_or(self.cfg.txd);
        for id in 0..self.ports.len() as u16 {
            if self.ports[id as usize].state == PortState::Closed {
                continue;
            }
            if let Err(e) = self.configure_port(id) {
                (self.cfg.rxq, self.cfg.txq, self.cfg.rxd, self.cfg.txd) = old;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Turn promiscuous mode on or off.
    pub fn set_promisc(&mut self, id: u16, on: bool) -> Result<(), RunError> {
        self.slot(id)?.port.set_promiscuous(on)?;
        Ok(())
    }

    /// Start forwarding, first sending `tx_first` bursts per stream.
    pub fn start_forwarding(&mut self, tx_first: u32) -> Result<(), RunError> {
        if self.fwd.is_some() {
            return Err(usage("packet forwarding already started"));
        }
        let workers: Vec<Lcore> = self.cfg.lcores.workers().cloned().collect();
        let plan = plan::plan(&PlanInput {
            nb_ports: self.ports.len(),
            select: &self.cfg.port_select,
            topology: self.cfg.topology,
            rxq: self.cfg.rxq,
            txq: self.cfg.txq,
            workers: &workers,
            nb_cores: self.cfg.nb_cores,
        })?;
        for &p in &plan.fwd_ports {
            if self.ports[p as usize].state != PortState::Started {
                return Err(usage(format!("port {p} is not started (port start {p})")));
            }
        }
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
                let peer = self
                    .cfg
                    .eth_peers
                    .get(&spec.tx_port)
                    .copied()
                    .unwrap_or(MacAddr::local(spec.tx_port));
                w.streams.push(LcoreStream {
                    info: StreamInfo {
                        id: si as u16,
                        spec,
                        tx_mac: macs[spec.tx_port as usize],
                        peer_mac: peer,
                    },
                    rx: rx_idx,
                    tx: tx_idx,
                    counters: counters[si].clone(),
                });
            }
            works.push((lc.clone(), w, rx_keys, tx_keys));
        }
        self.out.text(&config_text(&self.cfg, &plan, &works));
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
        self.fwd = Some(ActiveFwd {
            plan,
            counters,
            lcores,
            stop,
            started: Instant::now(),
            base,
            mode: self.cfg.mode,
            latency_shares,
        });
        if let Some(e) = spawn_error {
            let _ = self.stop_forwarding("spawn failure");
            return Err(e);
        }
        Ok(())
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
        let Some(f) = self.fwd.take() else {
            return Err(usage("packet forwarding not started"));
        };
        f.stop.store(true, Ordering::Relaxed);
        let elapsed = f.started.elapsed();
        self.out.text(&format!(
            "\nTelling cores to stop ({reason})...\nWaiting for lcores to finish...\n"
        ));
        let mut latency = LatencyRecorder::new();
        let mut failure = None;
        for l in f.lcores {
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
        self.final_report(&f.plan, &f.counters, &f.base, &latency, elapsed, f.mode);
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
        let text = fwd_stats_text(&self.ports, &f.plan, &f.counters, &f.base);
        self.out.text(&text);
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
        let workers: Vec<Lcore> = self.cfg.lcores.workers().cloned().collect();
        let plan = plan::plan(&PlanInput {
            nb_ports: self.ports.len(),
            select: &self.cfg.port_select,
            topology: self.cfg.topology,
            rxq: self.cfg.rxq,
            txq: self.cfg.txq,
            workers: &workers,
            nb_cores: self.cfg.nb_cores,
        })?;
        let mut text = format!(
            "{} packet forwarding{} - ports={} - cores={} - streams={} - NUMA support disabled, MP allocation mode: native\n",
            self.cfg.mode,
            if self.cfg.retry.enabled {
                " with retry"
            } else {
                ""
            },
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
                let peer = self
                    .cfg
                    .eth_peers
                    .get(&s.tx_port)
                    .copied()
                    .unwrap_or(MacAddr::local(s.tx_port));
                text += &format!("  {s} peer={peer}\n");
            }
        }
        self.out.text(&text);
        Ok(())
    }

    /// Stop forwarding if it runs, drop the queues, stop the ports, and check
    /// that every mbuf is back. Returns whether they all are.
    pub fn shutdown(mut self, reason: &str) -> Result<bool, RunError> {
        let fwd_result = if self.fwd.is_some() {
            self.stop_forwarding(reason)
        } else {
            Ok(())
        };
        self.out.text("\nStopping port(s)...\n");
        for slot in self.ports.iter_mut() {
            slot.rx.clear();
            slot.tx.clear();
            if slot.state == PortState::Started
                && let Err(e) = slot.port.stop()
            {
                self.out.text(&format!("warning: {e}\n"));
            }
        }
        let out = std::mem::replace(&mut self.out, Out::new(self.cfg.stats_format));
        let pool = self.pool.clone();
        drop(std::mem::take(&mut self.ports));
        // The devices are closed: the pool's memory may leave the IOMMU.
        if let Some(ctx) = &self.vfio
            && let Err(e) = ctx.unmap_dma(pool.region())
        {
            out.text(&format!("warning: {e}\n"));
        }
        let ps = pool.stats();
        let returned = ps.in_use == 0;
        if returned {
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
        fwd_result?;
        out.text("\nBye...\n");
        Ok(returned)
    }

    #[allow(clippy::too_many_arguments)]
    fn final_report(
        &self,
        plan: &Plan,
        counters: &[FwdCountersRef],
        base: &[PortStats],
        latency: &LatencyRecorder,
        elapsed: std::time::Duration,
        mode: nicpoll::fwd::FwdMode,
    ) {
        let mut text = fwd_stats_text(&self.ports, plan, counters, base);
        let total = fwd_totals(&self.ports, plan, counters, base);
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

/// The IOVA mode for PCI devices: what their VFIO container needs, or what
/// `--iova-mode` asked for if the devices can use it.
fn pci_iova_mode(
    asked: Option<IovaMode>,
    needed: IovaMode,
    iommu: Option<IommuType>,
) -> Result<IovaMode, RunError> {
    match (asked, needed) {
        (None, m) => Ok(m),
        (Some(IovaMode::Dc), _) => Err(usage(
            "--iova-mode=dc is for software ports only: PCI devices need va or pa \
             (drop --iova-mode and the devices decide)",
        )),
        (Some(IovaMode::Va), IovaMode::Pa) => Err(usage(format!(
            "--iova-mode=va: the devices need physical addresses ({}); drop --iova-mode or give pa",
            if iommu == Some(IommuType::NoIommu) {
                "no-IOMMU VFIO: nothing translates device addresses"
            } else {
                "the IOMMU's address width does not reach user-space addresses"
            }
        ))),
        (Some(m), _) => Ok(m),
    }
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

fn config_text(cfg: &Config, plan: &Plan, works: &[PreparedLcore]) -> String {
    let mut text = format!(
        "{} packet forwarding{} - ports={} - cores={} - streams={} - NUMA support disabled, MP allocation mode: native\n",
        cfg.mode,
        if cfg.retry.enabled { " with retry" } else { "" },
        plan.fwd_ports.len(),
        plan.lcores.len(),
        plan.streams.len()
    );
    for (lc, w, _, _) in works {
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

fn rx_bad_by_port(plan: &Plan, counters: &[FwdCountersRef], port: u16) -> u64 {
    plan.streams
        .iter()
        .zip(counters)
        .filter(|(s, _)| s.rx_port == port)
        .map(|(_, c)| c.rx_bad.get())
        .sum()
}

type PortTotals = (Vec<(u16, FwdPortTotals)>, FwdPortTotals);

fn fwd_totals(
    ports: &[PortSlot],
    plan: &Plan,
    counters: &[FwdCountersRef],
    base: &[PortStats],
) -> PortTotals {
    let mut total = FwdPortTotals::default();
    let mut per = Vec::new();
    for &p in &plan.fwd_ports {
        let s = ports[p as usize].port.stats().since(&base[p as usize]);
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
        per.push((p, t));
    }
    (per, total)
}

fn fwd_stats_text(
    ports: &[PortSlot],
    plan: &Plan,
    counters: &[FwdCountersRef],
    base: &[PortStats],
) -> String {
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
    let (per, total) = fwd_totals(ports, plan, counters, base);
    for (p, t) in &per {
        text += &format!("\n{}", display::fwd_port_block(*p, t));
    }
    text += &format!("\n{}", display::fwd_total_block(&total));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_devices_decide_the_iova_mode_unless_asked_for_one_they_can_use() {
        let t1 = Some(IommuType::Type1v2);
        let no = Some(IommuType::NoIommu);
        assert_eq!(pci_iova_mode(None, IovaMode::Va, t1).unwrap(), IovaMode::Va);
        assert_eq!(pci_iova_mode(None, IovaMode::Pa, no).unwrap(), IovaMode::Pa);
        // Behind an IOMMU, physical addresses work too.
        assert_eq!(
            pci_iova_mode(Some(IovaMode::Pa), IovaMode::Va, t1).unwrap(),
            IovaMode::Pa
        );
        let e = pci_iova_mode(Some(IovaMode::Va), IovaMode::Pa, no)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-IOMMU") && e.contains("give pa"), "{e}");
        let e = pci_iova_mode(Some(IovaMode::Va), IovaMode::Pa, t1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("address width"), "{e}");
        let e = pci_iova_mode(Some(IovaMode::Dc), IovaMode::Va, t1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("software ports only"), "{e}");
    }
}
