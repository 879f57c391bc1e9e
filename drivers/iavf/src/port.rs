//! [`IavfPort`]: the control plane of one VF, generic over its BAR so the
//! simulated device runs the very same code as the hardware.
//!
//! **Threads.** All control state sits behind one mutex (`Ctrl`): the port's
//! `Port` methods, [`IavfPort::poll_events`] and the watchdog thread take it;
//! the queues never do. The queues share with the control thread only the
//! atomics of `QueueShared` (`sync.rs`: a generation counter and one ack per
//! queue) and their counters.
//!
//! **VF resets** (the PF resets the VF: its admin queue is disabled,
//! `VFGEN_RSTAT` leaves VFACTIVE, or it announced RESET_IMPENDING) are noticed
//! by whichever control caller runs next — the watchdog thread every
//! `watchdog_ms` (default 100 ms), or `stats()`, `xstats()`, `link()`,
//! `poll_events()` — which recovers on the spot, under the control lock:
//!
//! 1. stop the queues (generation odd: bursts return 0 and touch nothing), and
//!    mark the link down;
//! 2. wait for the reset to show; if it does not (announced only), or if this
//!    is the retry of a failed recovery, ask the PF for one (RESET_VF, as
//!    Linux's reset task does: i40e answers GET_VF_RESOURCES once per reset);
//!    let a stale VFACTIVE go (ice), then wait for the reset to finish;
//! 3. bring the VF up again: admin queue, vector 0's admin cause, VERSION,
//!    GET_VF_RESOURCES (the PF's MAC, if it gives one, becomes ours: the host
//!    may have changed it), VLAN stripping off, the MAC filter, promiscuous
//!    mode;
//! 4. if started: CONFIG_VSI_QUEUES with the same rings, CONFIG_IRQ_MAP, RSS,
//!    then resume the queues (generation even). Each queue re-arms its own
//!    ring at its next burst and acks; the control thread enables each queue
//!    (ENABLE_QUEUES) once it has acked.
//!
//! What was lost is counted: frames written back but not delivered and
//! packets in flight (`rx_reset_dropped`, `tx_reset_dropped`), resets
//! (`vf_resets`), failed recoveries, and the last recovery's duration.
//! Hardware counters restart at zero after a reset; the port's totals carry on
//! from the last values read.
//!
//! **Descriptor write-back** is timed by the ITR of the vector the queues are
//! mapped to (a partial cache line of descriptors waits for it): with
//! WB_ON_ITR (X722, E810) vector 1 in WB_ON_ITR mode; without (X710) vector 0
//! enabled with a 32 µs ITR, which the watchdog enables again at least every
//! 50 ms (DPDK's alarm), since its first interrupt masks it unless the PF
//! turned auto-masking off (RX_POLLING, refused on a partitioned port).
//!
//! **Life cycle.** Creation brings the VF up (DPDK `iavf_init_vf`) and installs its
//! MAC filter; `configure` checks the limits and maps the mempool; `start`
//! builds and fills the rings, then CONFIG_VSI_QUEUES, CONFIG_IRQ_MAP, RSS,
//! tails, ENABLE_QUEUES; `stop` (queues dropped first) DISABLE_QUEUES and frees
//! the buffers dropped queues parked; dropping the port closes it as DPDK's
//! `dev_close`: promiscuous off, DEL_ETH_ADDR, RESET_VF, admin queue off, and
//! its admin-queue and ring memory unmapped.
//!
//! **Statistics.** Packets and bytes are the queues' own counts (what the
//! application got and gave); `imissed` is the device's `rx_discards` and
//! `oerrors` its `tx_errors + tx_discards` plus packets we refused, from
//! VIRTCHNL_OP_GET_STATS on the control path; xstats add the twelve
//! `virtchnl_eth_stats` counters under DPDK's names and the driver's own.
#![deny(unsafe_code)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll::memory::{DmaMemory, DmaRegion};
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Mempool, Port, RxQueue, TxQueue};

use crate::DRIVER;
use crate::adminq::{self, AdminQueue};
use crate::desc::{RxDesc, TxDesc};
use crate::dma::DmaMap;
use crate::error::IavfError;
use crate::options::{IavfOptions, MaxSimd};
use crate::regs::{self, ResetState};
use crate::ring::{DescRing, Loops};
use crate::rxq::{IavfRxQueue, RxQueueParts};
use crate::stats::{HwStats, QueueExtraRef, new_extra};
use crate::sync::QueueShared;
use crate::txq::IavfTxQueue;
use crate::vf::Vf;
use crate::virtchnl::{self, EthStats, QueuePairInfo, RxqInfo, TxqInfo};

/// Most queue pairs used (`IAVF_MAX_NUM_QUEUES_DFLT`; more needs
/// LARGE_NUM_QPAIRS, which we do not ask for).
pub const MAX_QUEUE_PAIRS: u16 = 16;
/// Smallest ring (Linux `IAVF_MIN_RXD`).
pub const MIN_RING: u16 = 64;
/// Largest ring (Linux `IAVF_MAX_RXD`).
pub const MAX_RING: u16 = 4096;
/// Ring sizes are multiples of this (`IAVF_REQ_DESCRIPTOR_MULTIPLE`).
pub const RING_ALIGN: u16 = 32;
/// Default ring size (Linux `IAVF_DEFAULT_RXD`).
pub const DEFAULT_RING: u16 = 512;
/// Largest frame, CRC included (`IAVF_FRAME_SIZE_MAX`).
pub const MAX_FRAME: u32 = 9728;
/// The Ethernet CRC, which the frame limits count and receive strips.
const CRC_LEN: u32 = 4;
/// Receive buffers are given in 128-byte units (`IAVF_RXQ_CTX_DBUFF_SHIFT`).
const RX_BUF_UNIT: usize = 128;
/// Smallest receive buffer (`IAVF_BUF_SIZE_MIN`).
const RX_BUF_MIN: usize = 1024;
/// Largest receive buffer the PF accepts (16 KiB - 128).
const RX_BUF_MAX: usize = 16384 - 128;
/// Bytes reserved per receive / transmit ring (the largest ring).
const RX_RING_BYTES: usize = MAX_RING as usize * size_of::<RxDesc>();
const TX_RING_BYTES: usize = MAX_RING as usize * size_of::<TxDesc>();
/// Default RSS key (the Toeplitz key of Microsoft's RSS specification, repeated
/// to the 52 bytes of the 700 series): deterministic, so runs reproduce.
const RSS_KEY: [u8; 52] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa, 0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2,
    0x41, 0x67, 0x25, 0x3d,
];
/// How often a failed recovery is retried.
const RECOVERY_RETRY: Duration = Duration::from_secs(1);
/// How often, at least, vector 0 is enabled again when the PF did not grant
/// WB_ON_ITR (DPDK's `IAVF_ALARM_INTERVAL`, 50 ms).
const IRQ0_SERVICE: Duration = Duration::from_millis(50);

/// What `configure` fixed.
struct Conf {
    nb_rxq: u16,
    nb_txq: u16,
    rxd: u16,
    txd: u16,
    pool: Mempool,
    buf_len: u16,
    /// The largest frame the queues take, CRC included (`max_pkt_size`):
    /// `--max-pkt-len`, else the PF's; above `buf_len` a frame takes several
    /// buffers (scatter receive).
    max_frame: u32,
}

/// A started port's shared state and the queues waiting to be enabled.
struct Running {
    shared: Arc<QueueShared>,
    /// Generation the pending queues must ack.
    generation: u64,
    /// Receive / transmit queues to enable once they ack (after a reset).
    pending: (u32, u32),
}

/// How the VF is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Health {
    Up,
    Failed { reason: String, at: Instant },
}

/// Totals of the extra counters across configurations.
#[derive(Clone, Copy, Debug, Default)]
struct ExtraTotals {
    rx_bad_desc: u64,
    rx_reset_dropped: u64,
    tx_reset_dropped: u64,
    tx_bad_len: u64,
}

impl ExtraTotals {
    fn since(&self, b: &ExtraTotals) -> ExtraTotals {
        ExtraTotals {
            rx_bad_desc: self.rx_bad_desc.saturating_sub(b.rx_bad_desc),
            rx_reset_dropped: self.rx_reset_dropped.saturating_sub(b.rx_reset_dropped),
            tx_reset_dropped: self.tx_reset_dropped.saturating_sub(b.tx_reset_dropped),
            tx_bad_len: self.tx_bad_len.saturating_sub(b.tx_bad_len),
        }
    }
}

/// A summary of the VF's state, from [`IavfPort::poll_events`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfStatus {
    /// Link as the PF last reported it.
    pub link: Link,
    /// VF resets seen since the port was created.
    pub resets: u64,
    /// Recoveries that failed (each retried every second).
    pub recoveries_failed: u64,
    /// Why the VF is down, while it is.
    pub failed: Option<String>,
    /// Queues re-armed after a reset that wait to be enabled (they are enabled
    /// at their first burst after the recovery).
    pub queues_pending: u32,
}

/// What the PF granted, for `show port info` and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfInfo {
    /// virtchnl version of the PF.
    pub pf_version: (u32, u32),
    /// Our VSI.
    pub vsi_id: u16,
    /// Capabilities granted (`VIRTCHNL_VF_OFFLOAD_*`).
    pub caps: u32,
    /// Queue pairs granted.
    pub num_queue_pairs: u16,
    /// MSI-X vectors.
    pub max_vectors: u16,
    /// Largest MTU.
    pub max_mtu: u16,
    /// RSS key bytes.
    pub rss_key_size: u32,
    /// RSS LUT entries.
    pub rss_lut_size: u32,
}

/// The control state of one port, behind the port's mutex.
struct Ctrl<B: Bar> {
    name: String,
    port_id: u16,
    bar: Arc<B>,
    vf: Vf,
    dma: Arc<dyn DmaMap>,
    rings: Arc<DmaRegion>,
    /// Queue pairs the ring memory holds.
    ring_qps: u16,
    opts: IavfOptions,
    mac: MacAddr,
    promisc: bool,
    /// The note on what promiscuous mode needs was logged.
    promisc_noted: bool,
    conf: Option<Conf>,
    /// Mempools mapped for the device, held so their memory stays while mapped.
    mapped_pools: Vec<Arc<DmaRegion>>,
    run: Option<Running>,
    counters: PortCounters,
    rx_extra: Vec<QueueExtraRef>,
    tx_extra: Vec<QueueExtraRef>,
    extra_retired: ExtraTotals,
    extra_base: ExtraTotals,
    hw: HwStats,
    health: Health,
    resets: u64,
    recoveries_failed: u64,
    last_recovery: Duration,
    closed: bool,
    numa_node: Option<u32>,
    // Last: unmapped when the control state is dropped, after `close`.
    _aq_mem: MappedRegion,
    _ring_mem: MappedRegion,
}

/// A DMA region the port mapped for the device; unmapped when dropped (the
/// device must be quiet by then: the port resets the VF first).
struct MappedRegion {
    region: Arc<DmaRegion>,
    dma: Arc<dyn DmaMap>,
}

impl MappedRegion {
    fn new(region: DmaRegion, dma: &Arc<dyn DmaMap>) -> nicpoll::Result<MappedRegion> {
        let region = Arc::new(region);
        dma.map(&region)?;
        Ok(MappedRegion {
            region,
            dma: dma.clone(),
        })
    }
}

impl Drop for MappedRegion {
    fn drop(&mut self) {
        if let Err(e) = self.dma.unmap(&self.region) {
            log::warn!("unmapping {}: {e}", self.region.what());
        }
    }
}

/// An iavf port: one Intel Ethernet Adaptive Virtual Function, over a VFIO
/// BAR or a simulated one.
pub struct IavfPort<B: Bar + 'static> {
    ctrl: Arc<Mutex<Ctrl<B>>>,
    watchdog: Option<Watchdog>,
    name: String,
}

struct Watchdog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock<B: Bar>(m: &Mutex<Ctrl<B>>) -> MutexGuard<'_, Ctrl<B>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<B: Bar + 'static> IavfPort<B> {
    /// Bring the VF behind `bar` up and make it a port: wait for the VF to be
    /// out of reset, set up the admin queue, negotiate virtchnl 1.1, get the
    /// VF's resources, install its MAC filter; allocate the admin-queue and
    /// ring memory from `mem` and map both through `dma`. `name` names the
    /// device in messages (its PCI address, or the simulated device's name);
    /// `args` gives the options ([`crate::DEVARGS_KEYS`]); `port_id` is the
    /// application's id for the port.
    pub fn new(
        bar: B,
        dma: Arc<dyn DmaMap>,
        mem: Arc<DmaMemory>,
        name: &str,
        args: &DevArgs,
        port_id: u16,
    ) -> nicpoll::Result<IavfPort<B>> {
        Self::with_options(
            bar,
            dma,
            mem,
            name,
            IavfOptions::from_devargs(args)?,
            port_id,
        )
    }

    /// [`new`](Self::new) with options already parsed.
    pub fn with_options(
        bar: B,
        dma: Arc<dyn DmaMap>,
        mem: Arc<DmaMemory>,
        name: &str,
        opts: IavfOptions,
        port_id: u16,
    ) -> nicpoll::Result<IavfPort<B>> {
        let bar = Arc::new(bar);
        let aq_mem = MappedRegion::new(
            mem.alloc(&format!("iavf {name} admin queue"), adminq::region_size())?,
            &dma,
        )?;
        let mut vf = Vf::new(name, aq_mem.region.clone(), opts.timeouts)?;
        if let Err(e) = vf.init(&*bar) {
            // Leave no admin queue pointing at memory about to be freed.
            vf.shutdown(&*bar);
            return Err(e.into());
        }
        let ring_qps = vf.num_queue_pairs().min(MAX_QUEUE_PAIRS);
        let rings = mem
            .alloc(
                &format!("iavf {name} rings"),
                ring_qps as usize * (RX_RING_BYTES + TX_RING_BYTES),
            )
            .and_then(|r| MappedRegion::new(r, &dma));
        let rings = match rings {
            Ok(r) => r,
            Err(e) => {
                vf.shutdown(&*bar);
                return Err(e);
            }
        };
        let mac = match vf.pf_mac() {
            Some(m) => m,
            None => {
                let m = random_local_mac();
                log::info!(
                    "iavf {name}: the PF assigned no MAC address; using the random locally \
                     administered {m}"
                );
                m
            }
        };
        let mut ctrl = Ctrl {
            name: name.to_string(),
            port_id,
            bar,
            vf,
            dma,
            rings: rings.region.clone(),
            _aq_mem: aq_mem,
            _ring_mem: rings,
            ring_qps,
            opts: opts.clone(),
            mac,
            promisc: false,
            promisc_noted: false,
            conf: None,
            mapped_pools: Vec::new(),
            run: None,
            counters: PortCounters::default(),
            rx_extra: Vec::new(),
            tx_extra: Vec::new(),
            extra_retired: ExtraTotals::default(),
            extra_base: ExtraTotals::default(),
            hw: HwStats::default(),
            health: Health::Up,
            resets: 0,
            recoveries_failed: 0,
            last_recovery: Duration::ZERO,
            closed: false,
            numa_node: None,
        };
        // DPDK dev_start: VIRTCHNL_OP_ADD_ETH_ADDR, our primary MAC
        // (once per VF bring-up; the filter lives until the VF is reset).
        let bar = ctrl.bar.clone();
        let done = ctrl.vf.eth_addr(&*bar, ctrl.mac.0, true).and_then(|()| {
            if opts.promisc {
                ctrl.set_promisc(true)
            } else {
                Ok(())
            }
        });
        if let Err(e) = done {
            ctrl.close();
            return Err(e.into());
        }
        let _ = ctrl.refresh_hw_stats();
        let ctrl = Arc::new(Mutex::new(ctrl));
        let watchdog = opts
            .watchdog
            .map(|period| Watchdog::spawn(&ctrl, name, period));
        Ok(IavfPort {
            ctrl,
            watchdog,
            name: name.to_string(),
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drain the PF's events and recover from a VF reset if one happened (what
    /// the watchdog thread does every `watchdog_ms`); returns the VF's state.
    /// An error says the VF is down and recovery failed (it is retried).
    pub fn poll_events(&self) -> nicpoll::Result<VfStatus> {
        let mut c = lock(&self.ctrl);
        let r = c.service();
        let status = c.status();
        let port_id = c.port_id;
        r.map_err(|e| e.into_port_error(port_id, "poll events"))?;
        Ok(status)
    }

    /// Let the device reach the buffers of `pool` too: transmit mbufs from a
    /// pool other than the configured receive pool must come from a mapped one
    /// (with an IOMMU the device faults on any other). Mapping twice is a no-op.
    pub fn map_pool(&self, pool: &Mempool) -> nicpoll::Result<()> {
        lock(&self.ctrl).map_pool(pool)
    }

    /// Record the device's NUMA node (from sysfs), for `info()`.
    pub fn set_numa_node(&self, node: Option<u32>) {
        lock(&self.ctrl).numa_node = node;
    }

    /// What the PF granted.
    pub fn vf_info(&self) -> VfInfo {
        let c = lock(&self.ctrl);
        let r = c.vf.res.clone().unwrap_or_else(|| virtchnl::VfResource {
            num_vsis: 0,
            num_queue_pairs: 0,
            max_vectors: 0,
            max_mtu: 0,
            vf_cap_flags: 0,
            rss_key_size: 0,
            rss_lut_size: 0,
            vsi_res: Vec::new(),
        });
        VfInfo {
            pf_version: c.vf.pf_version.map_or((0, 0), |v| (v.major, v.minor)),
            vsi_id: c.vf.vsi_id,
            caps: c.vf.caps,
            num_queue_pairs: r.num_queue_pairs,
            max_vectors: r.max_vectors,
            max_mtu: r.max_mtu,
            rss_key_size: r.rss_key_size,
            rss_lut_size: r.rss_lut_size,
        }
    }
}

impl Watchdog {
    fn spawn<B: Bar + 'static>(
        ctrl: &Arc<Mutex<Ctrl<B>>>,
        name: &str,
        period: Duration,
    ) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (Arc::downgrade(ctrl), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("iavf-wd-{name}"))
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    let Some(ctrl) = c.upgrade() else { break };
                    let next = {
                        let mut g = lock(&ctrl);
                        // Errors are logged where they happen and retried.
                        let _ = g.service();
                        if g.pending_queues() != 0 {
                            Duration::from_millis(1)
                        } else if g.needs_irq0_service() {
                            period.min(IRQ0_SERVICE)
                        } else {
                            period
                        }
                    };
                    drop(ctrl);
                    std::thread::park_timeout(next);
                }
            })
            .ok();
        if thread.is_none() {
            log::warn!(
                "iavf {name}: cannot start the watchdog thread; VF resets are handled only when \
                 the application polls the port"
            );
        }
        Watchdog { stop, thread }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The start log's words for the loops the queues run (`chosen`, as
/// [`Loops::choose`] picks them within `max`) and why (empty: the best).
pub(crate) fn loops_described(max: MaxSimd, chosen: Loops) -> (&'static str, &'static str) {
    match (chosen, max) {
        (Loops::Avx2, _) => ("AVX2", ""),
        (Loops::Sse41, MaxSimd::Sse) => ("SSE4.1", " (simd=128)"),
        (Loops::Sse41, _) => ("SSE4.1", " (this CPU has no AVX2)"),
        (Loops::Scalar, MaxSimd::Scalar) => ("scalar", " (simd=0)"),
        (Loops::Scalar, _) => ("scalar", " (this CPU has no SSE4.1)"),
    }
}

fn random_local_mac() -> MacAddr {
    let r = RandomState::new().hash_one(std::time::SystemTime::now());
    let b = r.to_le_bytes();
    // Locally administered, unicast.
    MacAddr([(b[0] & 0xFE) | 0x02, b[1], b[2], b[3], b[4], b[5]])
}

impl<B: Bar> Ctrl<B> {
    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::Port {
            port: self.port_id,
            name: self.name.clone(),
            op,
            reason,
        }
    }

    fn map_pool(&mut self, pool: &Mempool) -> nicpoll::Result<()> {
        let region = pool.region();
        // By identity (and held): a new pool at a freed pool's address is new.
        if !self.mapped_pools.iter().any(|r| Arc::ptr_eq(r, region)) {
            self.dma.map(region)?;
            self.mapped_pools.push(region.clone());
        }
        Ok(())
    }

    fn pending_queues(&self) -> u32 {
        self.run
            .as_ref()
            .map_or(0, |r| (r.pending.0 | r.pending.1).count_ones())
    }

    fn status(&self) -> VfStatus {
        VfStatus {
            link: self.vf.link,
            resets: self.resets,
            recoveries_failed: self.recoveries_failed,
            failed: match &self.health {
                Health::Up => None,
                Health::Failed { reason, .. } => Some(reason.clone()),
            },
            queues_pending: self.pending_queues(),
        }
    }

    /// Why the VF needs recovering, if it does.
    fn reset_reason(&self) -> Option<String> {
        let bar = &*self.bar;
        if self.vf.reset_impending {
            return Some("the PF announced a reset".into());
        }
        let arq = bar.read32(regs::VF_ARQLEN1);
        if !AdminQueue::arq_enabled(bar) {
            return Some(format!(
                "VF_ARQLEN1 = {arq:#x}: {}",
                if adminq::is_unreadable(arq) {
                    "the device is in a hardware reset"
                } else {
                    "the admin queue was disabled (a VF reset)"
                }
            ));
        }
        let rstat = bar.read32(regs::VFGEN_RSTAT);
        match ResetState::from_reg(rstat) {
            s @ (ResetState::InProgress | ResetState::Unreadable) => {
                Some(format!("VFGEN_RSTAT = {rstat:#x}: {}", s.describe()))
            }
            _ => None,
        }
    }

    /// Whether vector 0 needs enabling again from time to time: started
    /// without WB_ON_ITR, its ITR is what writes partial lines back.
    fn needs_irq0_service(&self) -> bool {
        self.run.is_some()
            && self.health == Health::Up
            && !self.vf.has_cap(virtchnl::caps::WB_ON_ITR)
    }

    /// The control poll: PF events, reset detection and recovery, vector 0
    /// enabled again (without WB_ON_ITR), and enabling the queues that
    /// re-armed after a recovery.
    fn service(&mut self) -> Result<(), IavfError> {
        if self.closed {
            return Ok(());
        }
        let bar = self.bar.clone();
        if AdminQueue::arq_enabled(&*bar) {
            if self.needs_irq0_service() {
                self.vf.service_irq0(&*bar);
            }
            self.vf.poll_events(&*bar);
        }
        match &self.health {
            Health::Failed { at, .. } if at.elapsed() < RECOVERY_RETRY => {
                return Err(IavfError::Resetting {
                    device: self.name.clone(),
                });
            }
            Health::Failed { .. } => self.recover("retrying after a failed recovery".into())?,
            Health::Up => {
                if let Some(why) = self.reset_reason() {
                    self.resets += 1;
                    self.recover(why)?;
                }
            }
        }
        self.enable_acked_queues()
    }

    /// Enable the queues that re-armed for the current generation.
    fn enable_acked_queues(&mut self) -> Result<(), IavfError> {
        let Some(run) = &self.run else { return Ok(()) };
        if run.pending == (0, 0) {
            return Ok(());
        }
        let ((rx, tx), (rx_gone, tx_gone)) =
            run.shared
                .acked(run.generation, run.pending.0, run.pending.1);
        if rx | tx != 0 {
            let bar = self.bar.clone();
            // VIRTCHNL_OP_ENABLE_QUEUES for the queues that acked (queue by
            // queue, as DPDK's iavf_switch_queue).
            self.vf.enable_queues(&*bar, rx, tx)?;
            log::debug!("iavf {}: re-enabled rx {rx:#x} tx {tx:#x}", self.name);
        }
        let run = self.run.as_mut().expect("checked");
        run.pending.0 &= !(rx | rx_gone);
        run.pending.1 &= !(tx | tx_gone);
        Ok(())
    }

    /// Recover from a VF reset (see the module documentation).
    fn recover(&mut self, why: String) -> Result<(), IavfError> {
        let first = self.health == Health::Up;
        if first {
            log::warn!(
                "iavf {}: VF reset detected ({why}); stopping the queues and bringing the VF up \
                 again",
                self.name
            );
        }
        let t0 = Instant::now();
        if let Some(run) = &self.run {
            run.shared.stop();
        }
        // No link while the VF is reset: the PF reports it again once the VF
        // is back (after GET_VF_RESOURCES).
        self.vf.link = Link::default();
        match self.bring_up_again(!first) {
            Ok(()) => {
                self.health = Health::Up;
                self.last_recovery = t0.elapsed();
                log::warn!(
                    "iavf {}: VF recovered from a reset in {} ms{}",
                    self.name,
                    self.last_recovery.as_millis(),
                    if self.run.is_some() {
                        "; queues resume at their next burst"
                    } else {
                        ""
                    }
                );
                Ok(())
            }
            Err(e) => {
                if first {
                    self.recoveries_failed += 1;
                }
                log::error!(
                    "iavf {}: recovery from a VF reset failed (retried every {} s): {e}",
                    self.name,
                    RECOVERY_RETRY.as_secs()
                );
                self.health = Health::Failed {
                    reason: e.to_string(),
                    at: Instant::now(),
                };
                Err(e)
            }
        }
    }

    fn bring_up_again(&mut self, retry: bool) -> Result<(), IavfError> {
        let bar = self.bar.clone();
        let bar = &*bar;
        let rstat = ResetState::from_reg(bar.read32(regs::VFGEN_RSTAT));
        // Our admin queue up and the VF out of reset: either a reset only
        // announced (RESET_IMPENDING) has not shown yet (give it time, as
        // Linux's reset task does), or the last attempt failed after setting
        // the admin queue up again.
        let out_of_reset = AdminQueue::arq_enabled(bar) && rstat.is_done();
        if out_of_reset && (retry || !self.vf.wait_reset_detected(bar)) {
            // No reset happened, or the PF may keep state of the failed
            // attempt that only a reset clears (i40e refuses a second
            // GET_VF_RESOURCES until then). Ask for one, as Linux's reset task
            // does for IAVF_FLAG_RESET_NEEDED.
            log::info!(
                "iavf {}: {}; asking the PF for a reset (VIRTCHNL_OP_RESET_VF)",
                self.name,
                if retry {
                    "the last recovery failed"
                } else {
                    "the announced reset did not show"
                }
            );
            if !self.vf.request_reset(bar)? {
                log::warn!(
                    "iavf {}: the PF did not reset the VF on VIRTCHNL_OP_RESET_VF;                      re-initialising anyway",
                    self.name
                );
            }
        }
        // Never take a VFACTIVE left from before the reset for its end.
        self.vf.wait_reset_started(bar);
        self.vf.shutdown(bar);
        // The device's counters restart from zero.
        self.hw.device_reset();
        // iavf_init_vf again: RSTAT, admin queue, VERSION, GET_VF_RESOURCES.
        self.vf.init(bar)?;
        if let Some(conf) = &self.conf {
            let need = conf.nb_rxq.max(conf.nb_txq);
            if self.vf.num_queue_pairs() < need {
                return Err(IavfError::Protocol {
                    device: self.name.clone(),
                    op: virtchnl::Op::GetVfResources.raw(),
                    reason: format!(
                        "after the reset the PF grants {} queue pairs, the port is configured \
                         for {need}",
                        self.vf.num_queue_pairs()
                    ),
                });
            }
        }
        // The PF's MAC, when it gives one, is ours: the host may have changed
        // it (`ip link set <pf> vf N mac ...` resets the VF, and an untrusted
        // VF gets -EPERM for any other unicast MAC). Linux's iavf takes it
        // after every GET_VF_RESOURCES; a zero one leaves ours.
        if let Some(m) = self.vf.pf_mac()
            && m != self.mac
        {
            log::warn!(
                "iavf {}: the PF gives the VF the MAC {m} (was {}): taking it",
                self.name,
                self.mac
            );
            self.mac = m;
        }
        // VIRTCHNL_OP_ADD_ETH_ADDR: the filter went with the reset.
        self.vf.eth_addr(bar, self.mac.0, true)?;
        if self.promisc {
            // VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE, as it was.
            self.vf.config_promisc(bar, true)?;
        }
        if self.run.is_some() {
            self.program_queues()?;
            let conf = self.conf.as_ref().expect("started ports are configured");
            let (rx, tx) = (
                virtchnl::queue_bitmap(conf.nb_rxq),
                virtchnl::queue_bitmap(conf.nb_txq),
            );
            let run = self.run.as_mut().expect("checked");
            run.generation = run.shared.resume();
            run.pending = (rx, tx);
        }
        Ok(())
    }

    /// The largest frame the PF lets a receive queue take, CRC included, as
    /// the PF and the device count it: its `max_mtu` (a frame size already,
    /// the port's: i40e_vc_get_max_frame_size; not an MTU to add headers
    /// to), in the PF's 64..16K.
    fn pf_max_frame(&self) -> u32 {
        let pf = match self.vf.res.as_ref().map_or(0, |r| u32::from(r.max_mtu)) {
            0 => MAX_FRAME,
            m => m,
        };
        pf.clamp(64, 16383)
    }

    /// The largest frame the receive queues take, CRC included: once
    /// configured, `--max-pkt-len`'s (or the PF's); a frame longer than a
    /// buffer takes several, only the last with EOP (scatter receive).
    fn max_frame(&self) -> u32 {
        self.conf
            .as_ref()
            .map_or_else(|| self.pf_max_frame(), |c| c.max_frame)
    }

    fn rx_ring_offset(q: u16) -> usize {
        q as usize * RX_RING_BYTES
    }

    fn tx_ring_offset(&self, q: u16) -> usize {
        self.ring_qps as usize * RX_RING_BYTES + q as usize * TX_RING_BYTES
    }

    /// CONFIG_VSI_QUEUES, CONFIG_IRQ_MAP and RSS for the configured queues,
    /// rings at their fixed places (DPDK `iavf_dev_start`, `iavf_dev_configure`).
    fn program_queues(&mut self) -> Result<(), IavfError> {
        let conf = self.conf.as_ref().expect("configured");
        let (nb_rxq, nb_txq) = (conf.nb_rxq, conf.nb_txq);
        let vsi = self.vf.vsi_id;
        // Both halves of every pair name the VSI and the queue, and the receive
        // half a valid max_pkt_size even when unused: the PF checks them all
        // (i40e `i40e_vc_config_queues_msg`, as DPDK's iavf_configure_queues
        // fills them). An unused half has ring_len 0.
        let max_pkt = self.max_frame();
        let pairs: Vec<QueuePairInfo> = (0..nb_rxq.max(nb_txq))
            .map(|q| QueuePairInfo {
                txq: TxqInfo {
                    vsi_id: vsi,
                    queue_id: q,
                    ring_len: if q < nb_txq { conf.txd } else { 0 },
                    dma_ring_addr: if q < nb_txq {
                        self.rings.iova(self.tx_ring_offset(q))
                    } else {
                        0
                    },
                },
                rxq: RxqInfo {
                    vsi_id: vsi,
                    queue_id: q,
                    ring_len: if q < nb_rxq { conf.rxd as u32 } else { 0 },
                    databuffer_size: if q < nb_rxq { conf.buf_len as u32 } else { 0 },
                    // Above databuffer_size a frame takes several buffers,
                    // the receive queue chains them; the device drops (and
                    // counts) frames above max_pkt_size.
                    max_pkt_size: max_pkt,
                    rxdid: if self.vf.has_cap(virtchnl::caps::RX_FLEX_DESC) {
                        virtchnl::RXDID_LEGACY_32
                    } else {
                        0
                    },
                    dma_ring_addr: if q < nb_rxq {
                        self.rings.iova(Self::rx_ring_offset(q))
                    } else {
                        0
                    },
                },
            })
            .collect();
        let bar = self.bar.clone();
        let bar = &*bar;
        // iavf_dev_start: VIRTCHNL_OP_CONFIG_VSI_QUEUES.
        self.vf.config_vsi_queues(bar, &pairs)?;
        // iavf_config_rx_queues_irqs: descriptor write-back is driven by the ITR of
        // the vector the queues map to, even in poll mode. With WB_ON_ITR
        // (and a second vector) use vector 1 with write-back on ITR and no
        // interrupt; otherwise vector 0 with the default 32 µs ITR.
        let res = self.vf.res.as_ref().expect("brought up");
        let vector = if self.vf.has_cap(virtchnl::caps::WB_ON_ITR) && res.max_vectors >= 2 {
            bar.write32(
                regs::vfint_dyn_ctln1(0),
                regs::DYN_CTLN_WB_ON_ITR
                    | (regs::ITR_INTERVAL_WB_ON_ITR << regs::DYN_CTL_INTERVAL_SHIFT),
            );
            1
        } else {
            // CLEARPBA too: an admin-queue cause that fired while vector 0 was
            // masked would fire again on enabling it and, until the PF turns
            // vector 0's auto-masking off (CONFIG_IRQ_MAP with RX_POLLING),
            // mask it straight away.
            bar.write32(
                regs::VFINT_DYN_CTL01,
                regs::DYN_CTL_INTENA
                    | regs::DYN_CTL_CLEARPBA
                    | (regs::ITR_INTERVAL_DEFAULT << regs::DYN_CTL_INTERVAL_SHIFT),
            );
            0
        };
        // VIRTCHNL_OP_CONFIG_IRQ_MAP: every queue on that vector.
        self.vf.config_irq_map(bar, vector, nb_rxq, nb_txq)?;
        // dev_configure: VIRTCHNL_OP_CONFIG_RSS_KEY / CONFIG_RSS_LUT /
        // SET_RSS_HENA. Programmed even for one queue, so that no frame is
        // steered to a queue we did not enable.
        if self.vf.has_cap(virtchnl::caps::RSS_PF) && nb_rxq > 0 {
            self.vf.config_rss(bar, &RSS_KEY, nb_rxq)?;
        }
        Ok(())
    }

    fn set_promisc(&mut self, on: bool) -> Result<(), IavfError> {
        let bar = self.bar.clone();
        self.vf.config_promisc(&*bar, on)?;
        if on && !self.promisc_noted {
            self.promisc_noted = true;
            // Not a warning: nothing the VF sees says whether it applies.
            // i40e and ice apply the request only for a trusted VF and answer
            // SUCCESS either way ("Lie to the VF on purpose",
            // i40e_vc_config_promiscuous_mode_msg; ice_vc_cfg_promiscuous_mode_msg),
            // and virtchnl carries no trust bit. The PF's host logs the refusal.
            log::info!(
                "iavf {}: promiscuous mode requested; the PF applies it only to a trusted VF \
                 (`ip link set <pf> vf <n> trust on` on the host, whose kernel log says \
                 \"Unprivileged VF ... is attempting to configure promiscuous mode\" otherwise)",
                self.name
            );
        }
        self.promisc = on;
        Ok(())
    }

    fn refresh_hw_stats(&mut self) -> Result<(), IavfError> {
        if self.health != Health::Up {
            return Ok(());
        }
        let bar = self.bar.clone();
        // VIRTCHNL_OP_GET_STATS (control path only).
        let s = self.vf.get_stats(&*bar)?;
        self.hw.update(&s);
        Ok(())
    }

    fn extra_totals(&self) -> ExtraTotals {
        let mut t = self.extra_retired;
        for e in &self.rx_extra {
            t.rx_bad_desc += e.0.bad_desc.get();
            t.rx_reset_dropped += e.0.reset_dropped.get();
        }
        for e in &self.tx_extra {
            t.tx_reset_dropped += e.0.reset_dropped.get();
            t.tx_bad_len += e.0.tx_bad_len.get();
        }
        t
    }

    fn stats(&self) -> PortStats {
        let mut s = self.counters.stats();
        let hw = self.hw.since_reset();
        s.imissed += hw.rx_discards;
        s.oerrors += hw.tx_errors + hw.tx_discards;
        s
    }

    /// Stop the device's use of the queues and free what dropped queues left.
    fn disable_all(&mut self) {
        let Some(run) = self.run.take() else { return };
        let conf = self.conf.as_ref().expect("started ports are configured");
        let (rx, tx) = (
            virtchnl::queue_bitmap(conf.nb_rxq),
            virtchnl::queue_bitmap(conf.nb_txq),
        );
        let bar = self.bar.clone();
        if self.health == Health::Up
            && let Err(e) = self.vf.disable_queues(&*bar, rx, tx)
        {
            log::warn!("iavf {}: disabling the queues: {e}", self.name);
        }
        // Queues still alive (only on close) must not touch the rings again.
        run.shared.stop();
        run.shared.quiesce();
    }

    /// dev_close: DISABLE_QUEUES, promiscuous off, DEL_ETH_ADDR, RESET_VF
    /// (no answer; wait until the reset shows), admin queue off.
    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.disable_all();
        let bar = self.bar.clone();
        let bar = &*bar;
        if self.health == Health::Up && AdminQueue::arq_enabled(bar) {
            if self.promisc {
                let _ = self.vf.config_promisc(bar, false);
            }
            let _ = self.vf.eth_addr(bar, self.mac.0, false);
            match self.vf.reset_vf(bar) {
                Ok(true) => {}
                Ok(false) => {
                    log::debug!("iavf {}: the PF did not reset the VF on close", self.name)
                }
                Err(e) => log::debug!("iavf {}: VIRTCHNL_OP_RESET_VF: {e}", self.name),
            }
        }
        self.vf.shutdown(bar);
        self.closed = true;
    }
}

impl<B: Bar + 'static> Port for IavfPort<B> {
    fn info(&self) -> PortInfo {
        let c = lock(&self.ctrl);
        PortInfo {
            driver: DRIVER,
            name: c.name.clone(),
            max_rx_queues: c.ring_qps,
            max_tx_queues: c.ring_qps,
            default_rxd: DEFAULT_RING,
            default_txd: DEFAULT_RING,
            min_rxd: MIN_RING,
            max_rxd: MAX_RING,
            min_txd: MIN_RING,
            max_txd: MAX_RING,
            desc_align: RING_ALIGN,
            max_rx_pktlen: c.pf_max_frame() - CRC_LEN,
            rx_scatter: true,
            tx_multi_seg: true,
            numa_node: c.numa_node,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> nicpoll::Result<()> {
        let info = self.info();
        let mut c = lock(&self.ctrl);
        c.port_id = conf.port_id;
        if c.run.is_some() {
            return Err(c.err(
                "configure",
                "the port is started; stop it first (port stop N)".into(),
            ));
        }
        let (rxd, txd) = port::check_conf(conf.port_id, &info, conf)?;
        let limit = port::rx_frame_limit(conf.port_id, &info, conf)?;
        if let Err(e) = c.service() {
            return Err(e.into_port_error(conf.port_id, "configure"));
        }
        let room = conf.mempool.data_room().min(RX_BUF_MAX);
        let buf_len = room / RX_BUF_UNIT * RX_BUF_UNIT;
        if conf.nb_rxq > 0 && buf_len < RX_BUF_MIN {
            return Err(c.err(
                "configure",
                format!(
                    "mempool {} has {}-byte buffers; receive needs at least {RX_BUF_MIN} (raise \
                     --mbuf-size)",
                    conf.mempool.name(),
                    conf.mempool.data_room()
                ),
            ));
        }
        if conf.nb_rxq > 1 && !c.vf.has_cap(virtchnl::caps::RSS_PF) {
            return Err(c.err(
                "configure",
                format!(
                    "{} receive queues need RSS, which the PF did not grant \
                     (VIRTCHNL_VF_OFFLOAD_RSS_PF); use --rxq=1",
                    conf.nb_rxq
                ),
            ));
        }
        // The device must reach the pool's buffers: map its memory once.
        c.map_pool(&conf.mempool)?;
        let retired = c.extra_totals();
        c.extra_retired = retired;
        c.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        c.rx_extra = (0..conf.nb_rxq).map(|_| new_extra()).collect();
        c.tx_extra = (0..conf.nb_txq).map(|_| new_extra()).collect();
        c.conf = Some(Conf {
            nb_rxq: conf.nb_rxq,
            nb_txq: conf.nb_txq,
            rxd,
            txd,
            pool: conf.mempool.clone(),
            buf_len: buf_len as u16,
            max_frame: limit + CRC_LEN,
        });
        Ok(())
    }

    fn start(&mut self) -> nicpoll::Result<PortQueues> {
        let mut c = lock(&self.ctrl);
        let port_id = c.port_id;
        let Some(conf) = &c.conf else {
            return Err(c.err("start", "the port is not configured".into()));
        };
        if c.run.is_some() {
            return Err(c.err("start", "the port is already started".into()));
        }
        let (nb_rxq, nb_txq, rxd, txd, buf_len) =
            (conf.nb_rxq, conf.nb_txq, conf.rxd, conf.txd, conf.buf_len);
        let pool = conf.pool.clone();
        if let Err(e) = c.service() {
            return Err(e.into_port_error(port_id, "start"));
        }
        let shared = QueueShared::new(nb_rxq as usize, nb_txq as usize);
        let mut queues = PortQueues::default();
        let mem_err = |c: &Ctrl<B>, r: String| c.err("start", r);
        for q in 0..nb_rxq {
            let ring = DescRing::new(c.rings.clone(), Ctrl::<B>::rx_ring_offset(q), rxd)
                .map_err(|r| mem_err(&c, r))?;
            let parts = RxQueueParts {
                ring,
                bar: c.bar.clone(),
                pool: pool.clone(),
                free_thresh: c.opts.rx_free_thresh,
                buf_len,
                port_id,
                queue_id: q,
                counters: c.counters.rx(q as usize),
                extra: c.rx_extra[q as usize].clone(),
                shared: shared.clone(),
                simd: c.opts.simd,
            };
            match IavfRxQueue::new(parts) {
                Ok(rq) => queues.rx.push(Box::new(rq) as Box<dyn RxQueue>),
                Err(need) => {
                    drop(queues);
                    shared.quiesce();
                    return Err(c.err(
                        "start",
                        format!(
                            "mempool {} cannot fill receive queue {q}: {need} mbufs needed, {} \
                             free; raise --total-num-mbufs or lower --rxd",
                            pool.name(),
                            pool.available()
                        ),
                    ));
                }
            }
        }
        for q in 0..nb_txq {
            let off = c.tx_ring_offset(q);
            let ring = DescRing::new(c.rings.clone(), off, txd).map_err(|r| mem_err(&c, r))?;
            queues.tx.push(Box::new(IavfTxQueue::new(
                ring,
                c.bar.clone(),
                q,
                c.counters.tx(q as usize),
                c.tx_extra[q as usize].clone(),
                shared.clone(),
                c.opts.simd,
            )) as Box<dyn TxQueue>);
        }
        let result = (|| {
            c.program_queues()?;
            // iavf_dev_start: tails (receive: all but one descriptor
            // to the device; transmit: empty), then VIRTCHNL_OP_ENABLE_QUEUES.
            for q in 0..nb_rxq {
                c.bar.write32(regs::qrx_tail(q), (rxd - 1) as u32);
            }
            for q in 0..nb_txq {
                c.bar.write32(regs::qtx_tail(q), 0);
            }
            let bar = c.bar.clone();
            c.vf.enable_queues(
                &*bar,
                virtchnl::queue_bitmap(nb_rxq),
                virtchnl::queue_bitmap(nb_txq),
            )
        })();
        if let Err(e) = result {
            drop(queues);
            shared.quiesce();
            return Err(e.into_port_error(port_id, "start"));
        }
        c.run = Some(Running {
            shared,
            generation: 0,
            pending: (0, 0),
        });
        let (loops, why) = loops_described(c.opts.simd, Loops::choose(c.opts.simd));
        log::info!("iavf {}: {loops} receive/transmit loops{why}", c.name);
        Ok(queues)
    }

    fn stop(&mut self) -> nicpoll::Result<()> {
        let mut c = lock(&self.ctrl);
        let Some(run) = &c.run else { return Ok(()) };
        let live = run.shared.live();
        if live > 0 {
            return Err(c.err(
                "stop",
                format!(
                    "{live} of its queues are still in use; drop the RxQueue/TxQueue values \
                     before stopping the port"
                ),
            ));
        }
        // VIRTCHNL_OP_DISABLE_QUEUES, then free what the queues left parked.
        c.disable_all();
        Ok(())
    }

    fn is_started(&self) -> bool {
        lock(&self.ctrl).run.is_some()
    }

    fn link(&self) -> Link {
        let mut c = lock(&self.ctrl);
        let _ = c.service();
        c.vf.link
    }

    fn mac_addr(&self) -> MacAddr {
        lock(&self.ctrl).mac
    }

    fn promiscuous(&self) -> bool {
        lock(&self.ctrl).promisc
    }

    fn set_promiscuous(&mut self, on: bool) -> nicpoll::Result<()> {
        let mut c = lock(&self.ctrl);
        let port_id = c.port_id;
        c.service()
            .and_then(|_| c.set_promisc(on))
            .map_err(|e| e.into_port_error(port_id, "promiscuous"))
    }

    fn stats(&self) -> PortStats {
        let mut c = lock(&self.ctrl);
        let _ = c.service();
        if let Err(e) = c.refresh_hw_stats() {
            log::debug!("iavf {}: {e}", c.name);
        }
        c.stats()
    }

    fn reset_stats(&mut self) {
        let mut c = lock(&self.ctrl);
        let _ = c.service();
        let _ = c.refresh_hw_stats();
        c.counters.reset();
        c.hw.reset();
        c.extra_base = c.extra_totals();
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let mut c = lock(&self.ctrl);
        let _ = c.service();
        let _ = c.refresh_hw_stats();
        let mut v = c.counters.xstats();
        let s = c.stats();
        for (name, value) in v.iter_mut() {
            match name.as_str() {
                "rx_missed_errors" => *value = s.imissed,
                "tx_errors" => *value = s.oerrors,
                _ => {}
            }
        }
        let hw: EthStats = c.hw.since_reset();
        for (name, value) in EthStats::NAMES.iter().zip(hw.to_array()) {
            v.push((name.to_string(), value));
        }
        let e = c.extra_totals().since(&c.extra_base);
        v.push(("rx_bad_descriptors".into(), e.rx_bad_desc));
        v.push(("rx_reset_dropped_packets".into(), e.rx_reset_dropped));
        v.push(("tx_reset_dropped_packets".into(), e.tx_reset_dropped));
        v.push(("tx_bad_length_packets".into(), e.tx_bad_len));
        v.push(("vf_resets".into(), c.resets));
        v.push(("vf_reset_recoveries_failed".into(), c.recoveries_failed));
        v.push((
            "vf_reset_last_recovery_us".into(),
            c.last_recovery.as_micros() as u64,
        ));
        v.push(("vf_link_events".into(), c.vf.link_events));
        v.push(("virtchnl_stray_replies".into(), c.vf.stray_replies));
        v
    }
}

impl<B: Bar + 'static> Drop for IavfPort<B> {
    fn drop(&mut self) {
        // The watchdog first, so nothing else takes the control lock.
        self.watchdog.take();
        lock(&self.ctrl).close();
    }
}

impl<B: Bar + 'static> std::fmt::Debug for IavfPort<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IavfPort")
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_memory_layout_is_aligned() {
        assert_eq!(RX_RING_BYTES, 131072);
        assert_eq!(TX_RING_BYTES, 65536);
        assert_eq!(RSS_KEY.len(), 52);
        let m = random_local_mac();
        assert_eq!(m.0[0] & 3, 2, "locally administered unicast");
    }

    /// The start log names the loops and why; the choice follows the CPU's
    /// own flags within the `simd` cap.
    #[test]
    fn start_log_names_the_loops_chosen() {
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        let sse41 = std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3");
        let best = if avx2 {
            Loops::Avx2
        } else if sse41 {
            Loops::Sse41
        } else {
            Loops::Scalar
        };
        assert_eq!(Loops::choose(MaxSimd::Best), best);
        let sse = if sse41 { Loops::Sse41 } else { Loops::Scalar };
        assert_eq!(Loops::choose(MaxSimd::Sse), sse);
        assert_eq!(Loops::choose(MaxSimd::Scalar), Loops::Scalar);
        let line = |max, chosen| {
            let (loops, why) = loops_described(max, chosen);
            format!("{loops} receive/transmit loops{why}")
        };
        let no_sse = "scalar receive/transmit loops (this CPU has no SSE4.1)";
        for (max, chosen, words) in [
            (MaxSimd::Best, Loops::Avx2, "AVX2 receive/transmit loops"),
            (
                MaxSimd::Best,
                Loops::Sse41,
                "SSE4.1 receive/transmit loops (this CPU has no AVX2)",
            ),
            (
                MaxSimd::Sse,
                Loops::Sse41,
                "SSE4.1 receive/transmit loops (simd=128)",
            ),
            (MaxSimd::Best, Loops::Scalar, no_sse),
            (MaxSimd::Sse, Loops::Scalar, no_sse),
            (
                MaxSimd::Scalar,
                Loops::Scalar,
                "scalar receive/transmit loops (simd=0)",
            ),
        ] {
            assert_eq!(line(max, chosen), words);
        }
    }
}
