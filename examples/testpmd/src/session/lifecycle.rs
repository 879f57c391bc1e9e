//! The session's life: DMA memory, the mbuf pool and the ports from creation
//! to shutdown, and the port commands (`port start|stop|close`, `port config`).

use std::sync::Arc;

use nicpoll::fwd::LatencyRecorder;
use nicpoll::lcore;
use nicpoll::memory::{DmaMemory, IovaMode, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::pci::PciAddress;
use nicpoll::port::{PortConf, PortQueues};
use nicpoll::stats::{RateMeter, WindowRateMeter};
use nicpoll::vfio::{IommuType, VfioContext};
use serde_json::json;

use crate::cli::Config;
use crate::display;
use crate::metrics::MetricsServer;
use crate::registry::{self, PciEnv};

use super::{Out, PortSlot, PortState, RunError, Session, usage};

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
        if let Err(e) = crate::cli::check_txpkts_fit(&cfg.tx, pool.data_room()) {
            return Err(usage(format!("--txpkts: {e}")));
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
            metric_meters: (0..nb_ports)
                .map(|_| WindowRateMeter::new(crate::metrics::RATE_WINDOW))
                .collect(),
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

    /// Bytes of data one mbuf of the pool holds.
    pub fn pool_data_room(&self) -> usize {
        self.pool.data_room()
    }

    /// Whether forwarding is running.
    pub fn forwarding(&self) -> bool {
        self.fwd.is_some()
    }

    pub(super) fn slot(&mut self, id: u16) -> Result<&mut PortSlot, RunError> {
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
            // DPDK's max-pkt-len counts the FCS the port strips.
            max_rx_pktlen: self.cfg.max_pkt_len.map_or(0, |n| n.saturating_sub(4)),
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
