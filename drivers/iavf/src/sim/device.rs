//! The device: one step of it (module `poller` runs the steps), the admin
//! queue engine (ATQ in, ARQ out), VF resets, and the control requests from
//! the `SimVf` handle.
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::datapath::{RssCache, RxQ, TxQ};
use super::dma::DmaView;
use super::irq::{HeldQueue, Irq};
use super::pf::Pf;
use super::spec::{self, aq, msg, op, reg, vfr};
use super::wire::{Outbound, WireState};
use super::{
    FaultState, PfModel, Promisc, QueueStatus, ResetTiming, Shared, SimConfig, SimStatus, VectorMap,
};
use nicpoll::port::MacAddr;

/// Where the VF is in a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Running.
    Active,
    /// RESET_IMPENDING sent; the hardware reset starts at `at`.
    Impending { at: Instant },
    /// ice: the mailbox is disabled, `VFGEN_RSTAT` still reads VFACTIVE until
    /// `until` (then the hardware reset).
    MailboxOff { until: Instant },
    /// i40e: the VF was active but has not set `VFINT_ICR0_ENA1.ADMINQ`; the
    /// PF polls for it until `until` before it triggers the reset anyway
    /// (`i40e_sync_vfr_reset`).
    SyncWait { until: Instant },
    /// The hardware reset: `VFGEN_RSTAT` = in progress, registers frozen, until
    /// `until`.
    InProgress { until: Instant },
    /// The hardware reset is done (registers writable again) and the PF
    /// re-creates the VF's resources until `until`, then writes VFACTIVE.
    /// `VFGEN_RSTAT` still reads in progress: neither i40e nor ice writes
    /// VFR_COMPLETED (`i40e_cleanup_reset_vf`, `ice_sriov_post_vsi_rebuild`).
    Completed { until: Instant },
}

/// Configuration the device keeps from `SimConfig`.
pub(super) struct DevConfig {
    pub default_queue_pairs: u16,
    pub trusted: bool,
    pub spoofchk: bool,
    pub link_speed_mbps: u32,
    pub pf: PfModel,
    pub multi_function: bool,
    pub max_vectors: u16,
    pub first_vsi_id: u16,
    pub invalid_msg_limit: Option<u32>,
    pub mac: [u8; 6],
}

/// The simulated device: everything mutable lives here, behind a mutex that
/// its PF's polling thread takes per step (and `SimVf::step` in manual mode).
pub(crate) struct Device {
    pub(super) sh: Arc<Shared>,
    pub(super) cfg: DevConfig,
    pub(super) dma: DmaView,
    pub(super) wire: WireState,
    pub(super) pf: Pf,
    pub(super) rxq: Vec<RxQ>,
    pub(super) txq: Vec<TxQ>,
    /// Write-backs each receive / transmit queue holds (module `irq`).
    pub(super) rx_wb: Vec<HeldQueue>,
    pub(super) tx_wb: Vec<HeldQueue>,
    /// A receive / transmit queue wrote descriptors back since its vector
    /// last took the cause (module `irq`).
    pub(super) rx_cause: Vec<bool>,
    pub(super) tx_cause: Vec<bool>,
    /// The interrupt logic.
    pub(super) irq: Irq,
    /// Scratch for the interrupt register writes of one step.
    pub(super) irq_writes: Vec<(usize, u32)>,
    pub(super) rss: RssCache,
    pub(super) phase: Phase,
    pub(super) link_up: bool,
    /// The link state last reported in an event.
    pub(super) link_reported: bool,
    /// Frames taken from the wire, waiting to be received.
    pub(super) rx_frames: Vec<Vec<u8>>,
    /// Frames transmitted, waiting to go out.
    pub(super) tx_frames: Vec<Vec<u8>>,
    pub(super) sock_buf: Vec<u8>,
    /// Frame buffers to reuse (module `datapath`: a received frame's buffer
    /// carries the next transmitted one).
    pub(super) spare: Vec<Vec<u8>>,
    /// The status needs republishing.
    pub(super) dirty: bool,
    /// The reset under way was triggered on a VF that was active (i40e waits
    /// for its ICR0_ENA1 first).
    pub(super) reset_waits_for_vf: bool,
}

/// Work done by one poll (0: idle).
pub(super) type Work = usize;

/// Lock the device (a panic in a step on another thread leaves it usable).
pub(super) fn lock(dev: &Mutex<Device>) -> MutexGuard<'_, Device> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

impl Device {
    pub(super) fn new(sh: Arc<Shared>, cfg: &SimConfig, wire: WireState) -> Device {
        let dcfg = DevConfig {
            default_queue_pairs: cfg.queue_pairs,
            trusted: cfg.trusted,
            spoofchk: cfg.spoofchk,
            link_speed_mbps: cfg.link_speed_mbps,
            pf: cfg.pf,
            multi_function: cfg.multi_function,
            max_vectors: cfg.max_vectors,
            first_vsi_id: cfg.vsi_id,
            invalid_msg_limit: cfg.invalid_msg_limit,
            mac: cfg.mac.0,
        };
        let dma = sh.iommu.view();
        let mut d = Device {
            pf: Pf::new(&dcfg),
            cfg: dcfg,
            dma,
            wire,
            rxq: Vec::new(),
            txq: Vec::new(),
            rx_wb: Vec::new(),
            tx_wb: Vec::new(),
            rx_cause: Vec::new(),
            tx_cause: Vec::new(),
            irq: Irq::new(cfg.max_vectors),
            irq_writes: Vec::new(),
            rss: RssCache::default(),
            phase: Phase::Active,
            link_up: cfg.link_up,
            link_reported: false,
            rx_frames: Vec::with_capacity(256),
            tx_frames: Vec::with_capacity(256),
            sock_buf: vec![0u8; 16 * 1024],
            spare: Vec::new(),
            dirty: true,
            reset_waits_for_vf: false,
            sh,
        };
        // As the PF leaves a VF after enabling SR-IOV: reset done, resources
        // allocated, active.
        d.allocate_resources();
        d.sh.regs.set(reg::VFGEN_RSTAT, vfr::VFACTIVE);
        d
    }

    /// One iteration of the device: switch to the current IOMMU table, poll the
    /// control requests, the admin queue, the Tx and Rx queues and the wire once,
    /// and publish the status if it changed. Returns the work done (0: idle).
    pub(super) fn step(&mut self) -> Work {
        self.sh.iommu.refresh(&mut self.dma);
        let work = self.poll_once();
        if self.dirty {
            self.publish_status();
        }
        work
    }

    /// Bring the device's view of DMA memory up to date (after a map or unmap).
    pub(super) fn refresh_dma(&mut self) {
        self.sh.iommu.refresh(&mut self.dma);
    }

    fn poll_once(&mut self) -> Work {
        let mut work = self.control();
        work += self.step_reset();
        if matches!(self.phase, Phase::InProgress { .. }) {
            // The function is in reset: no admin queue, no queues; the wire still
            // delivers (and the frames are lost).
            work += self.drain_wire_during_reset();
            return work;
        }
        work += self.apply_irq_writes();
        work += self.poll_atq();
        work += self.poll_tx();
        work += self.poll_rx();
        work += self.run_itr_timers();
        work
    }

    /// The earliest time the device must be stepped again although nothing
    /// else happens: a reset phase ending, an ITR expiring.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match (self.phase_deadline(), self.irq.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn phase_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Active => None,
            Phase::Impending { at }
            | Phase::MailboxOff { until: at }
            | Phase::SyncWait { until: at } => Some(at),
            Phase::InProgress { until } | Phase::Completed { until } => Some(until),
        }
    }

    /// Requests from the handle: a new wire, fault knobs that act at once.
    fn control(&mut self) -> Work {
        let mut work = 0;
        let sh = self.sh.clone();
        if sh.wire_pending.load(Ordering::Acquire) {
            if let Some(w) = sh
                .pending_wire
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                self.wire = w;
            }
            sh.wire_pending.store(false, Ordering::Release);
            work += 1;
        }
        let f = &sh.faults;
        let host_mac = f.host_mac.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mac) = host_mac {
            // i40e_ndo_set_vf_mac: drop every filter, take the MAC, reset.
            log::info!(
                "simulated iavf {}: the host sets the VF's MAC to {}",
                sh.name,
                MacAddr(mac)
            );
            self.pf.filters.clear();
            self.pf.mac = mac;
            self.pf.pf_set_mac = mac != [0; 6];
            self.dirty = true;
            self.start_reset(true);
            work += 1;
        }
        if f.flr.swap(false, Ordering::AcqRel) {
            self.function_level_reset();
            work += 1;
        }
        if f.reset_now.swap(false, Ordering::AcqRel) {
            self.start_reset(true);
            work += 1;
        }
        match f.link_change.swap(0, Ordering::AcqRel) {
            1 => {
                self.link_up = false;
                self.notify_link();
                work += 1;
            }
            2 => {
                self.link_up = true;
                self.notify_link();
                work += 1;
            }
            _ => {}
        }
        if f.preset_pending.swap(false, Ordering::AcqRel)
            && let Some(s) = f.preset.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            sh.counters.set_eth(&s);
            work += 1;
        }
        work
    }

    // ---------------------------------------------------------------- resets

    /// Begin a VF reset. `notify`: a PF-initiated reset, announced with a
    /// RESET_IMPENDING event (i40e `i40e_vc_notify_vf_reset`); RESET_VF from the
    /// VF itself is not announced.
    pub(super) fn start_reset(&mut self, notify: bool) {
        if self.phase != Phase::Active {
            return;
        }
        let timing = self.timing();
        let announce = notify && (self.pf.init || self.pf.active);
        if announce {
            let mut ev = [0u8; msg::PF_EVENT_LEN];
            ev[0..4].copy_from_slice(&msg::EVENT_RESET_IMPENDING.to_le_bytes());
            ev[12..16].copy_from_slice(&msg::SEVERITY_CERTAIN_DOOM.to_le_bytes());
            self.send_to_vf(op::EVENT, 0, &ev);
        }
        // i40e_trigger_vf_reset: the configuration API closes at once; a VF
        // that was active is waited for (i40e_sync_vfr_reset).
        self.reset_waits_for_vf = !self.cfg.pf.is_ice() && self.pf.active;
        self.pf.active = false;
        self.pf.init = false;
        self.dirty = true;
        log::debug!("simulated iavf {}: VF reset", self.sh.name);
        // The PF acts from its service task, after the firmware completed the
        // VF's command: the hardware reset comes a little later in any case.
        if !timing.impending.is_zero() {
            self.phase = Phase::Impending {
                at: Instant::now() + timing.impending,
            };
        } else {
            self.enter_in_progress(timing);
        }
    }

    /// A VFLR: the hardware has reset the VF (no RESET_IMPENDING, no wait for
    /// the VF's ICR0_ENA1: i40e's `i40e_trigger_vf_reset(vf, flr = true)`
    /// skips both); whatever reset was under way starts over.
    fn function_level_reset(&mut self) {
        log::debug!("simulated iavf {}: function-level reset", self.sh.name);
        self.reset_waits_for_vf = false;
        self.pf.active = false;
        self.pf.init = false;
        let timing = self.timing();
        self.enter_in_progress(timing);
    }

    fn timing(&self) -> ResetTiming {
        *self
            .sh
            .faults
            .timing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn enter_in_progress(&mut self, timing: ResetTiming) {
        let regs = &self.sh.regs;
        // Writes are lost from now on; then the state reads "in progress" (so a
        // VF that sees its admin queues disabled reads it too); then the
        // hardware resets the VF's registers: admin queues disabled (the first
        // thing a VF driver notices: ARQLEN.ENABLE clear), tails zero.
        regs.set_in_reset(true, self.sh.faults.deadbeef.load(Ordering::Acquire));
        regs.set(reg::VFGEN_RSTAT, vfr::INPROGRESS);
        regs.set_stale_rstat_until(None);
        regs.clear_vf_registers();
        self.sh.counters.resets.inc();
        for q in &mut self.rxq {
            *q = RxQ::default();
        }
        for q in &mut self.txq {
            *q = TxQ::default();
        }
        for h in self.rx_wb.iter_mut().chain(self.tx_wb.iter_mut()) {
            h.clear();
        }
        for c in self.rx_cause.iter_mut().chain(self.tx_cause.iter_mut()) {
            *c = false;
        }
        self.irq.reset();
        regs.drop_irq_writes();
        self.sh.inbox.clear();
        self.phase = Phase::InProgress {
            until: Instant::now() + timing.in_progress,
        };
        self.dirty = true;
    }

    fn step_reset(&mut self) -> Work {
        if matches!(self.phase, Phase::Active) {
            // The usual case, every step: no clock read.
            return 0;
        }
        let now = Instant::now();
        match self.phase {
            Phase::Active => 0,
            Phase::Impending { at } if now >= at => {
                let t = self.timing();
                let enabled = self.sh.regs.get(reg::VFINT_ICR0_ENA1) & reg::ICR01_ADMINQ != 0;
                if self.reset_waits_for_vf && !enabled {
                    // I40E_VFR_WAIT_COUNT polls, 100-200 µs apart.
                    self.phase = Phase::SyncWait {
                        until: now + Duration::from_micros(150) * spec::pf::I40E_VFR_WAIT_COUNT,
                    };
                } else if self.cfg.pf.is_ice() && !t.rstat_lag.is_zero() {
                    // ice_trigger_vf_reset: the mailbox first; the state
                    // register catches up later.
                    let regs = &self.sh.regs;
                    let until = now + t.rstat_lag;
                    regs.set_stale_rstat_until(Some(until));
                    regs.set(reg::VF_ARQLEN1, 0);
                    regs.set(reg::VF_ATQLEN1, 0);
                    self.phase = Phase::MailboxOff { until };
                } else {
                    self.enter_in_progress(t);
                }
                1
            }
            Phase::MailboxOff { until } if now >= until => {
                let t = self.timing();
                self.enter_in_progress(t);
                1
            }
            Phase::SyncWait { until } => {
                let enabled = self.sh.regs.get(reg::VFINT_ICR0_ENA1) & reg::ICR01_ADMINQ != 0;
                if !enabled && now < until {
                    return 0;
                }
                if !enabled {
                    self.sh.counters.reset_sync_timeouts.inc();
                    log::info!(
                        "simulated iavf {}: Reset VF never finished (the VF did not enable \
                         its admin queue interrupt cause, VFINT_ICR0_ENA1)",
                        self.sh.name
                    );
                }
                let t = self.timing();
                self.enter_in_progress(t);
                1
            }
            Phase::InProgress { until } if now >= until => {
                let regs = self.sh.regs.clone();
                // Writes that raced with the start of the reset are gone too.
                regs.clear_vf_registers();
                regs.set_in_reset(false, false);
                self.phase = Phase::Completed {
                    until: now + self.timing().completed,
                };
                self.dirty = true;
                1
            }
            Phase::Completed { until } if now >= until => {
                // i40e_cleanup_reset_vf: free and re-create the VF's resources
                // (the VF may configure again), then report VFACTIVE — with
                // `SimVf::status()` showing the new state before the register
                // does, as for a message on the ARQ.
                self.allocate_resources();
                self.phase = Phase::Active;
                self.publish_status();
                self.sh.regs.set(reg::VFGEN_RSTAT, vfr::VFACTIVE);
                self.dirty = true;
                1
            }
            _ => 0,
        }
    }

    fn drain_wire_during_reset(&mut self) -> Work {
        let mut frames = std::mem::take(&mut self.rx_frames);
        self.sh.inbox.drain(&mut frames, 256);
        self.wire.receive(&mut frames, 256, &mut self.sock_buf);
        let n = frames.len();
        self.sh.counters.rx_link_down.add(n as u64);
        for f in frames.drain(..) {
            self.recycle(f);
        }
        self.rx_frames = frames;
        n
    }

    /// The VF's resources after a reset (i40e `i40e_alloc_vf_res`): queue pairs,
    /// VSI, default MAC and broadcast filters, RSS off, counters zero.
    fn allocate_resources(&mut self) {
        let new_vsi = self.sh.faults.new_vsi_id.load(Ordering::Acquire);
        self.pf.reallocate(&self.cfg, new_vsi);
        let n = usize::from(self.pf.num_qps);
        self.rxq = (0..n).map(|_| RxQ::default()).collect();
        self.txq = (0..n).map(|_| TxQ::default()).collect();
        self.rx_wb = (0..n).map(|_| HeldQueue::new()).collect();
        self.tx_wb = (0..n).map(|_| HeldQueue::new()).collect();
        self.rx_cause = vec![false; n];
        self.tx_cause = vec![false; n];
        // RSS: key and LUT zero until the VF sets them, HENA to the PF default.
        let regs = &self.sh.regs;
        for i in 0..13 {
            regs.set(reg::vfqf_hkey(i), 0);
        }
        for i in 0..16 {
            regs.set(reg::vfqf_hlut(i), 0);
        }
        let hena = self.default_hena();
        regs.set(reg::vfqf_hena(0), hena as u32);
        regs.set(reg::vfqf_hena(1), (hena >> 32) as u32);
        regs.bump_rss_gen();
        self.sh.counters.set_eth(&super::EthStats::default());
        self.dirty = true;
    }

    // ----------------------------------------------------------- admin queue

    /// Process ATQ descriptors up to the tail.
    fn poll_atq(&mut self) -> Work {
        let regs = self.sh.regs.clone();
        let mut work = 0;
        // A bounded batch: the datapath gets its turn.
        for _ in 0..16 {
            let len_reg = regs.get(reg::VF_ATQLEN1);
            if len_reg & reg::AQ_LEN_ENABLE == 0 || len_reg & reg::AQ_LEN_CRIT != 0 {
                return work;
            }
            let n = len_reg & reg::AQ_LEN_MASK;
            let head = regs.get(reg::VF_ATQH1) & reg::AQ_PTR_MASK;
            let tail = regs.get(reg::VF_ATQT1) & reg::AQ_PTR_MASK;
            if head == tail || n == 0 {
                return work;
            }
            if head >= n || tail >= n {
                log::error!(
                    "simulated iavf {}: ATQ head {head} / tail {tail} outside its {n} entries: \
                     admin queue stopped (ATQLEN.CRIT)",
                    self.sh.name
                );
                regs.set_bits(reg::VF_ATQLEN1, reg::AQ_LEN_CRIT);
                return work + 1;
            }
            let base =
                (u64::from(regs.get(reg::VF_ATQBAH1)) << 32) | u64::from(regs.get(reg::VF_ATQBAL1));
            let at = base + u64::from(head) * aq::DESC_LEN as u64;
            let mut d = [0u8; aq::DESC_LEN];
            if let Err(e) = self.dma.read(at, &mut d) {
                self.fault(e.with_context(format!("reading ATQ descriptor {head}")));
                // The descriptor cannot even be completed: stop the queue.
                regs.set_bits(reg::VF_ATQLEN1, reg::AQ_LEN_CRIT);
                return work + 1;
            }
            work += 1;
            self.sh.counters.aq_commands.inc();
            let flags = u16_at(&d, aq::FLAGS);
            let opcode = u16_at(&d, aq::OPCODE);
            let datalen = usize::from(u16_at(&d, aq::DATALEN));
            let v_op = u32_at(&d, aq::COOKIE_HIGH);
            let addr =
                (u64::from(u32_at(&d, aq::ADDR_HIGH)) << 32) | u64::from(u32_at(&d, aq::ADDR_LOW));
            let mut rc = aq::rc::OK;
            let mut payload = Vec::new();
            if opcode != aq::OPC_SEND_MSG_TO_PF {
                // A VF may only talk to its PF.
                rc = aq::rc::ESRCH;
            } else if flags & aq::FLAG_BUF != 0 && datalen > 0 {
                if datalen > aq::MAX_BUF {
                    rc = aq::rc::E2BIG;
                } else {
                    payload.resize(datalen, 0);
                    if let Err(e) = self.dma.read(addr, &mut payload) {
                        self.fault(e.with_context(format!(
                            "reading the buffer of ATQ descriptor {head} (virtchnl op {v_op})"
                        )));
                        rc = aq::rc::BAD_ADDR;
                    }
                }
            }
            // Write back: retval, then the flags (DD last), then move the head.
            let mut wb_flags = flags | aq::FLAG_DD | aq::FLAG_CMP;
            if rc != aq::rc::OK {
                wb_flags |= aq::FLAG_ERR;
                self.sh.counters.aq_errors.inc();
            }
            // The firmware may leave an internal code in the high byte; the
            // status is the low byte (Linux and DPDK mask it: "strip off FW
            // internal code").
            let internal = u16::from(self.sh.faults.aq_internal_code.load(Ordering::Acquire)) << 8;
            let _ = self
                .dma
                .write(at + aq::RETVAL as u64, &(rc | internal).to_le_bytes());
            let _ = self
                .dma
                .write(at + aq::FLAGS as u64, &wb_flags.to_le_bytes());
            regs.set(reg::VF_ATQH1, (head + 1) % n);
            if rc == aq::rc::OK {
                self.handle_message(v_op, &payload);
            }
        }
        work
    }

    /// A message from the PF to the VF: into the next ARQ buffer the driver
    /// posted. Lost if the PF is silent, the ARQ is disabled or full.
    pub(super) fn send_to_vf(&mut self, v_op: u32, status: i32, payload: &[u8]) {
        // Whoever reads the message may look at `SimVf::status()` next: make it
        // show what the PF did before the message is posted.
        if self.dirty {
            self.publish_status();
        }
        let faults: &FaultState = &self.sh.faults;
        if faults.pf_silent.load(Ordering::Acquire) {
            self.sh.counters.arq_lost.inc();
            return;
        }
        if v_op != op::EVENT && FaultState::take(&faults.drop_replies) {
            self.sh.counters.arq_lost.inc();
            return;
        }
        {
            let mut d = faults
                .drop_replies_to
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if d.0 == v_op && d.1 > 0 {
                d.1 -= 1;
                self.sh.counters.arq_lost.inc();
                return;
            }
        }
        let (p0, p1) = if v_op == op::VERSION && payload.len() >= 8 {
            (u32_at(payload, 0), u32_at(payload, 4))
        } else {
            (0, 0)
        };
        let regs = self.sh.regs.clone();
        let len_reg = regs.get(reg::VF_ARQLEN1);
        let n = len_reg & reg::AQ_LEN_MASK;
        if len_reg & reg::AQ_LEN_ENABLE == 0 || n == 0 {
            self.sh.counters.arq_lost.inc();
            return;
        }
        let head = regs.get(reg::VF_ARQH1) & reg::AQ_PTR_MASK;
        let tail = regs.get(reg::VF_ARQT1) & reg::AQ_PTR_MASK;
        if head >= n || tail >= n {
            log::error!(
                "simulated iavf {}: ARQ head {head} / tail {tail} outside its {n} entries",
                self.sh.name
            );
            self.sh.counters.arq_lost.inc();
            return;
        }
        if head == tail {
            // No buffer left: the message is dropped and the overflow flagged.
            regs.set_bits(reg::VF_ARQLEN1, reg::AQ_LEN_OVFL);
            self.sh.counters.arq_lost.inc();
            log::warn!(
                "simulated iavf {}: ARQ full, virtchnl op {v_op} lost (ARQLEN.OVFL set)",
                self.sh.name
            );
            return;
        }
        let base =
            (u64::from(regs.get(reg::VF_ARQBAH1)) << 32) | u64::from(regs.get(reg::VF_ARQBAL1));
        let at = base + u64::from(head) * aq::DESC_LEN as u64;
        let mut d = [0u8; aq::DESC_LEN];
        if let Err(e) = self.dma.read(at, &mut d) {
            self.fault(e.with_context(format!("reading ARQ descriptor {head}")));
            self.sh.counters.arq_lost.inc();
            return;
        }
        let flags = u16_at(&d, aq::FLAGS);
        let buf_len = usize::from(u16_at(&d, aq::DATALEN));
        let addr =
            (u64::from(u32_at(&d, aq::ADDR_HIGH)) << 32) | u64::from(u32_at(&d, aq::ADDR_LOW));
        let mut wb_flags = aq::FLAG_DD | aq::FLAG_CMP | (flags & (aq::FLAG_BUF | aq::FLAG_LB));
        let mut retval = aq::rc::OK;
        let mut datalen = payload.len();
        if !payload.is_empty() {
            if flags & aq::FLAG_BUF == 0 || buf_len < payload.len() {
                // The posted buffer cannot hold the message.
                wb_flags |= aq::FLAG_ERR;
                retval = aq::rc::E2BIG;
                datalen = 0;
            } else if let Err(e) = self.dma.write(addr, payload) {
                self.fault(e.with_context(format!(
                    "writing virtchnl op {v_op} into the buffer of ARQ descriptor {head}"
                )));
                wb_flags |= aq::FLAG_ERR;
                retval = aq::rc::BAD_ADDR;
                datalen = 0;
            }
        }
        put_u16(&mut d, aq::OPCODE, aq::OPC_SEND_MSG_TO_VF);
        put_u16(&mut d, aq::DATALEN, datalen as u16);
        put_u16(&mut d, aq::RETVAL, retval);
        put_u32(&mut d, aq::COOKIE_HIGH, v_op);
        put_u32(&mut d, aq::COOKIE_LOW, status as u32);
        put_u32(&mut d, aq::PARAM0, p0);
        put_u32(&mut d, aq::PARAM1, p1);
        // Everything but the flags, then the flags (DD) last.
        let _ = self.dma.write(at + 2, &d[2..]);
        let _ = self.dma.write(at, &wb_flags.to_le_bytes());
        regs.set(reg::VF_ARQH1, (head + 1) % n);
        regs.set_bits(reg::VFINT_ICR01, reg::ICR01_ADMINQ);
        self.other_cause(reg::ICR01_ADMINQ);
        self.sh.counters.arq_posted.inc();
    }

    /// A LINK_CHANGE event with the physical link's state (i40e
    /// `i40e_vc_notify_vf_link_state`, ice `ice_vc_notify_vf_link_state`): the
    /// speed in Mbit/s for a VF that asked for ADV_LINK_SPEED, else the legacy
    /// `enum virtchnl_link_speed` bit.
    pub(super) fn notify_link(&mut self) {
        let up = self.link_up;
        let speed = if !up {
            0
        } else if self.pf.driver_caps & spec::cap::ADV_LINK_SPEED != 0 {
            self.cfg.link_speed_mbps
        } else {
            msg::legacy_link_speed(self.cfg.link_speed_mbps)
        };
        let mut ev = [0u8; msg::PF_EVENT_LEN];
        ev[0..4].copy_from_slice(&msg::EVENT_LINK_CHANGE.to_le_bytes());
        ev[4..8].copy_from_slice(&speed.to_le_bytes());
        ev[8] = u8::from(up);
        ev[12..16].copy_from_slice(&msg::SEVERITY_INFO.to_le_bytes());
        self.link_reported = up;
        self.dirty = true;
        self.send_to_vf(op::EVENT, 0, &ev);
    }

    pub(super) fn fault(&self, f: super::DmaFault) {
        self.sh.iommu.record_fault(f, &self.sh.name);
    }

    pub(super) fn publish_status(&mut self) {
        self.dirty = false;
        let regs = &self.sh.regs;
        let mut key = Vec::with_capacity(spec::pf::RSS_KEY_SIZE);
        for i in 0..13 {
            key.extend_from_slice(&regs.get(reg::vfqf_hkey(i)).to_le_bytes());
        }
        let mut lut = Vec::with_capacity(spec::pf::RSS_LUT_SIZE);
        for i in 0..16 {
            lut.extend_from_slice(&regs.get(reg::vfqf_hlut(i)).to_le_bytes());
        }
        let hena =
            u64::from(regs.get(reg::vfqf_hena(0))) | (u64::from(regs.get(reg::vfqf_hena(1))) << 32);
        let p = &self.pf;
        let s = SimStatus {
            reset_state: regs.get(reg::VFGEN_RSTAT) & reg::RSTAT_MASK,
            active: p.active,
            mailbox_disabled: p.disabled,
            version: p.vf_ver,
            requested_caps: p.driver_caps,
            granted_caps: p.granted,
            vsi_id: p.vsi_id,
            num_queue_pairs: p.num_qps,
            mac_filters: p.filters.iter().map(|m| MacAddr(*m)).collect(),
            vlan_filters: p.vlans.clone(),
            vlan_strip: p.vlan_strip,
            promisc: Promisc {
                requested_unicast: p.promisc_req.0,
                requested_multicast: p.promisc_req.1,
                unicast: p.promisc.0,
                multicast: p.promisc.1,
            },
            queues_enabled: p.queues_enabled,
            rx_queues: self
                .rxq
                .iter()
                .map(|q| QueueStatus {
                    enabled: q.enabled,
                    ring_iova: q.base,
                    ring_len: q.len,
                    buffer_size: q.dbuff,
                    max_frame: q.rxmax,
                })
                .collect(),
            tx_queues: self
                .txq
                .iter()
                .map(|q| QueueStatus {
                    enabled: q.enabled,
                    ring_iova: q.base,
                    ring_len: q.len,
                    buffer_size: 0,
                    max_frame: 0,
                })
                .collect(),
            irq_map: p
                .irq_map
                .iter()
                .map(|m| VectorMap {
                    vector_id: m.0,
                    rxq_map: m.1,
                    txq_map: m.2,
                    rxitr_idx: m.3,
                    txitr_idx: m.4,
                })
                .collect(),
            rss_key: key,
            rss_lut: lut,
            rss_hena: hena,
            link_reported_up: self.link_reported,
        };
        if let Outbound::Switch { sw, port, .. } = &self.wire.out {
            let unicast: Vec<[u8; 6]> = self
                .pf
                .filters
                .iter()
                .filter(|m| m[0] & 1 == 0)
                .copied()
                .collect();
            sw.publish(*port, &unicast, self.pf.promisc.0);
        }
        *self.sh.status.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

#[inline]
pub(super) fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

#[inline]
pub(super) fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

#[inline]
pub(super) fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

#[inline]
fn put_u16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_u32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
