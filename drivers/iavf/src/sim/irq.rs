//! The VF's interrupt logic and the descriptor write-back it times, as the
//! 700/800-series hardware has them (registers of DPDK `base/iavf_register.h`;
//! behaviour from Linux's i40e/iavf and DPDK's iavf, which drive it):
//!
//! - **Vectors.** Vector 0 (`VFINT_DYN_CTL01`, `VFINT_ITR01(i)`) takes the
//!   "other" causes (the admin queue: `VFINT_ICR01` bit 30, enabled by
//!   `VFINT_ICR0_ENA1`); vectors 1.. (`VFINT_DYN_CTLN1(v - 1)`,
//!   `VFINT_ITRN1(i, v - 1)`) take queues only. CONFIG_IRQ_MAP puts queues on
//!   vectors (vector 0 too, on i40e), each with an ITR index.
//! - **DYN_CTL writes**: INTENA (bit 0) enables the vector's interrupt,
//!   CLEARPBA (bit 1) drops a pending one, SWINT_TRIG (bit 2) fires it now,
//!   ITR_INDX (bits 3-4; 3 = none) with INTERVAL (bits 5-16, 2 µs units)
//!   writes that ITR register's interval, WB_ON_ITR (bit 30, queue vectors)
//!   writes descriptors back at ITR expiry without an interrupt. The ITR
//!   registers (`VFINT_ITR01(i)`, `VFINT_ITRN1(i, v - 1)`, interval in bits
//!   0-11) hold the intervals the timers use, whichever way software wrote
//!   them (a vfio-user client's guest stores the queue vectors' directly into
//!   the shared doorbell pages).
//! - **Auto-mask.** Firing an interrupt clears its INTENA until software sets
//!   it again (DPDK's 50 ms alarm does, `iavf_dev_alarm_handler`), except on
//!   vector 0 of a VF that asked for RX_POLLING and put queues there: i40e
//!   sets `GLINT_CTL.DIS_AUTOMASK_VF0` then (`i40e_config_irq_link_list`).
//! - **Causes.** Every descriptor written back is an interrupt cause of its
//!   queue's vector (the queue's cause bit of the vector's linked list,
//!   datasheet "interrupt causes"): if the vector is enabled, its ITR timer
//!   starts (if not running) and the vector fires when it expires; if not,
//!   the cause waits, and the timer starts when software sets INTENA again.
//!   An interrupt-driven driver (Linux's iavf) learns of a lone frame whose
//!   line completed this way, as of one the ITR wrote back.
//! - **Write-back.** A completed descriptor reaches memory when the 4 of its
//!   cache line are complete (Linux's `WB_STRIDE`, `iavf_txrx.c`; DPDK's
//!   commit "net/iavf: fix Rx queue interrupt setting": "a full cache line
//!   could contain 4 packets"), or, for the leftovers, when the ITR of the
//!   queue's vector expires while that vector is armed (INTENA or WB_ON_ITR:
//!   "following ITR expiration, all leftover completed descriptors are posted
//!   to host memory"). A queue on no vector, or on a vector neither enabled
//!   nor in WB_ON_ITR mode, gets whole lines only: a lone frame waits for three
//!   more (virtchnl.h: "all active queues ... should be mapped to interrupts,
//!   even if the driver intends to operate only in polling mode ... the ITR
//!   timer will still run to trigger writebacks").
//!
//! Interrupts go to an [`IrqSink`] (tests observe them; a vfio-user server
//! will signal an eventfd per vector) and are counted per vector.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::regs::Regs;
use super::spec::reg;

/// Where the VF's interrupts go: `raise(v)` asserts MSI-X vector `v` once.
pub trait IrqSink: Send + Sync {
    /// Vector `vector` fired.
    fn raise(&self, vector: u16);
}

/// Descriptors in a cache line: a write-back without an ITR comes in lines.
pub(crate) const WB_STRIDE: u32 = 4;
/// DYN_CTL ITR index meaning "no ITR update".
const ITR_NONE: u32 = 3;
/// ITR intervals count 2 µs units.
const ITR_UNIT: Duration = Duration::from_micros(2);

/// One MSI-X vector's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Vector {
    pub intena: bool,
    pub wb_on_itr: bool,
    /// A cause fired while the vector was masked (PBA).
    pub pending: bool,
    /// The running ITR timer's expiry.
    pub deadline: Option<Instant>,
    /// A queue cause (a write-back) that has not yet made the vector fire,
    /// and the ITR index of the queue it came from.
    pub cause: bool,
    pub cause_itr: u16,
}

impl Vector {
    /// Whether an ITR expiry writes descriptors back.
    pub fn armed(&self) -> bool {
        self.intena || self.wb_on_itr
    }
}

/// A descriptor write-back the device holds: (descriptor index, its IOVA,
/// the qwords to write: qword 0 (receive only) and qword 1, DD last).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeldWb {
    pub idx: u32,
    pub at: u64,
    pub q0: Option<u64>,
    pub q1: u64,
}

/// The write-backs one queue holds.
pub(crate) type HeldQueue = VecDeque<HeldWb>;

/// Whether the line of held descriptor `idx` is complete: the device has
/// moved past the line's last descriptor (`head` is the next one it uses).
pub(crate) fn line_done(idx: u32, head: u32, len: u32) -> bool {
    let mut ahead = (head + len - idx) % len;
    if ahead == 0 {
        ahead = len;
    }
    ahead > (WB_STRIDE - 1) - (idx % WB_STRIDE)
}

/// The interrupt registers' effects and the vectors.
pub(crate) struct Irq {
    pub vectors: Vec<Vector>,
    /// `GLINT_CTL.DIS_AUTOMASK_VF0` (a PF-wide register, never cleared).
    pub automask_off_vf0: bool,
    /// Interrupts fired, per vector.
    pub fired: Vec<u64>,
    pub sink: Option<Arc<dyn IrqSink>>,
}

impl Irq {
    pub(crate) fn new(max_vectors: u16) -> Irq {
        let n = usize::from(max_vectors.max(1));
        Irq {
            vectors: vec![Vector::default(); n],
            automask_off_vf0: false,
            fired: vec![0; n],
            sink: None,
        }
    }

    /// What a VF reset does: DYN_CTL and ITR registers are "Reset: VFR".
    pub(crate) fn reset(&mut self) {
        for v in &mut self.vectors {
            *v = Vector::default();
        }
    }

    /// The vector a DYN_CTL or ITR register belongs to, and which: `Some((v,
    /// Kind))`.
    pub(crate) fn decode(offset: usize) -> Option<(usize, RegKind)> {
        if offset == reg::VFINT_DYN_CTL01 {
            return Some((0, RegKind::DynCtl));
        }
        if (reg::vfint_dyn_ctln1(0)..reg::vfint_dyn_ctln1(64)).contains(&offset) {
            return Some(((offset - reg::vfint_dyn_ctln1(0)) / 4 + 1, RegKind::DynCtl));
        }
        for i in 0..3 {
            if offset == reg::vfint_itr01(i) {
                return Some((0, RegKind::Itr(i)));
            }
            if (reg::vfint_itrn1(i, 0)..reg::vfint_itrn1(i, 16)).contains(&offset) {
                return Some(((offset - reg::vfint_itrn1(i, 0)) / 4 + 1, RegKind::Itr(i)));
            }
        }
        None
    }

    /// The ITR register `idx` (0..2) of vector `v`.
    pub(crate) fn itr_register(v: usize, idx: usize) -> Option<usize> {
        match (v, idx) {
            (_, 3..) => None,
            (0, i) => Some(reg::vfint_itr01(i)),
            (v, i) if v <= 16 => Some(reg::vfint_itrn1(i, v - 1)),
            _ => None,
        }
    }

    /// Apply a driver write to a DYN_CTL or ITR register of vector `v` (the
    /// register already holds it). Returns whether the vector must fire now
    /// (SWINT_TRIG, or enabled with an interrupt pending).
    pub(crate) fn write(&mut self, regs: &Regs, v: usize, kind: RegKind, value: u32) -> bool {
        let Some(vec) = self.vectors.get_mut(v) else {
            return false;
        };
        match kind {
            // The interval is the register's; nothing else to do.
            RegKind::Itr(_) => false,
            RegKind::DynCtl => {
                let idx = (value >> reg::DYN_CTL_ITR_INDX_SHIFT) & 3;
                if idx != ITR_NONE
                    && let Some(r) = Self::itr_register(v, idx as usize)
                {
                    regs.set(
                        r,
                        (value >> reg::DYN_CTL_INTERVAL_SHIFT) & reg::DYN_CTL_INTERVAL_MASK,
                    );
                }
                vec.intena = value & reg::DYN_CTL_INTENA != 0;
                if v > 0 {
                    vec.wb_on_itr = value & reg::DYN_CTLN_WB_ON_ITR != 0;
                }
                if value & reg::DYN_CTL_CLEARPBA != 0 {
                    vec.pending = false;
                }
                value & reg::DYN_CTL_SWINT_TRIG != 0 || (vec.intena && vec.pending)
            }
        }
    }

    /// Vector `v` fires: counted, sent to the sink, then auto-masked (unless
    /// auto-masking is off for it).
    pub(crate) fn fire(&mut self, v: usize) {
        let Some(vec) = self.vectors.get_mut(v) else {
            return;
        };
        if !vec.intena {
            vec.pending = true;
            return;
        }
        vec.pending = false;
        if !(v == 0 && self.automask_off_vf0) {
            vec.intena = false;
        }
        self.fired[v] += 1;
        if let Some(s) = &self.sink {
            s.raise(v as u16);
        }
    }

    /// The interval of ITR `idx` of vector `v` (index 3: none, immediate).
    pub(crate) fn interval(&self, regs: &Regs, v: usize, idx: u16) -> Duration {
        match Self::itr_register(v, usize::from(idx)) {
            Some(r) if v < self.vectors.len() => {
                ITR_UNIT * (regs.get(r) & reg::DYN_CTL_INTERVAL_MASK)
            }
            _ => Duration::ZERO,
        }
    }

    /// The earliest running ITR timer.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.vectors.iter().filter_map(|v| v.deadline).min()
    }
}

/// Which interrupt register a write went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegKind {
    /// `VFINT_DYN_CTL01` / `VFINT_DYN_CTLN1`.
    DynCtl,
    /// `VFINT_ITR01(i)` / `VFINT_ITRN1(i, _)`.
    Itr(usize),
}

/// The time, read from the clock once and only when needed: the device runs
/// its timers every step, and a step that finds no timer running and starts
/// none reads no clock.
#[derive(Default)]
struct LazyNow(Option<Instant>);

impl LazyNow {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

impl super::device::Device {
    /// Apply the driver's interrupt register writes, in order (before the
    /// doorbells written after them are acted on). Returns the work done.
    pub(super) fn apply_irq_writes(&mut self) -> usize {
        let mut work = 0;
        let mut writes = std::mem::take(&mut self.irq_writes);
        self.sh.regs.take_irq_writes(&mut writes);
        for (off, val) in writes.drain(..) {
            work += 1;
            if let Some((v, kind)) = Irq::decode(off)
                && self.irq.write(&self.sh.regs, v, kind, val)
            {
                work += self.flush_vector(v);
                self.irq.fire(v);
            }
        }
        self.irq_writes = writes;
        work
    }

    /// Expire the ITR timers (writing back what the queues of an armed vector
    /// hold, firing it if enabled), and start a timer for every armed vector
    /// whose queues hold write-backs or wrote some back. Returns the work
    /// done.
    pub(super) fn run_itr_timers(&mut self) -> usize {
        let mut work = 0;
        let mut now = LazyNow::default();
        for v in 0..self.irq.vectors.len() {
            let vec = &mut self.irq.vectors[v];
            if vec.deadline.is_some_and(|d| d <= now.get()) {
                vec.deadline = None;
                if vec.armed() {
                    work += self.expire(v);
                }
            }
        }
        work + self.start_itr_timers(&mut now)
    }

    /// Vector `v`'s ITR expired while armed: write back what its queues
    /// hold, and fire if enabled (which takes the causes so far).
    fn expire(&mut self, v: usize) -> usize {
        let intena = self.irq.vectors[v].intena;
        let work = self.flush_vector(v);
        if intena {
            self.irq.vectors[v].cause = false;
            self.take_queue_causes(v);
            self.irq.fire(v);
        }
        work
    }

    /// Clear the write-back causes of the queues mapped to vector `v`.
    fn take_queue_causes(&mut self, v: usize) {
        for &(vec, rxq, txq, _, _) in &self.pf.irq_map {
            if usize::from(vec) != v {
                continue;
            }
            for q in 0..self.rx_cause.len().min(16) {
                if rxq & (1 << q) != 0 {
                    self.rx_cause[q] = false;
                }
                if txq & (1 << q) != 0 && q < self.tx_cause.len() {
                    self.tx_cause[q] = false;
                }
            }
        }
    }

    /// The vector receive (`rx`) or transmit queue `q` is mapped to, and its
    /// ITR index.
    fn vector_of(&self, q: usize, rx: bool) -> Option<(usize, u16)> {
        self.pf
            .irq_map
            .iter()
            .find_map(|&(v, rxq, txq, rxitr, txitr)| {
                let (map, itr) = if rx { (rxq, rxitr) } else { (txq, txitr) };
                (map & (1 << q) != 0).then_some((usize::from(v), itr))
            })
    }

    /// Write back everything the queues of vector `v` hold.
    fn flush_vector(&mut self, v: usize) -> usize {
        let (mut rx, mut tx) = (0u16, 0u16);
        for &(vec, rxq, txq, _, _) in &self.pf.irq_map {
            if usize::from(vec) == v {
                rx |= rxq;
                tx |= txq;
            }
        }
        let mut n = 0;
        for q in 0..self.rx_wb.len().min(16) {
            if rx & (1 << q) != 0 {
                n += self.flush_rx(q, true);
            }
        }
        for q in 0..self.tx_wb.len().min(16) {
            if tx & (1 << q) != 0 {
                n += self.flush_tx(q, true);
            }
        }
        n
    }

    /// Start the ITR timer of each vector whose queues hold write-backs (if it
    /// is armed) or wrote some back (if it is enabled); an interval of 0
    /// expires at once. A cause on a vector that is not enabled waits there.
    fn start_itr_timers(&mut self, now: &mut LazyNow) -> usize {
        let mut work = 0;
        let queues = self.rx_wb.len().max(self.tx_wb.len()).min(16);
        for q in 0..queues {
            for rx in [true, false] {
                let (held, cause) = if rx {
                    (&self.rx_wb, &mut self.rx_cause)
                } else {
                    (&self.tx_wb, &mut self.tx_cause)
                };
                let held = held.get(q).is_some_and(|h| !h.is_empty());
                let cause = cause.get_mut(q).is_some_and(std::mem::take);
                if !held && !cause {
                    continue;
                }
                // A queue on no vector raises nothing.
                let Some((v, idx)) = self.vector_of(q, rx) else {
                    continue;
                };
                let Some(vec) = self.irq.vectors.get_mut(v) else {
                    continue;
                };
                if cause {
                    vec.cause = true;
                    vec.cause_itr = idx;
                }
                let startable = if held { vec.armed() } else { vec.intena };
                if startable && vec.deadline.is_none() {
                    work += self.start_timer(v, idx, now);
                }
            }
        }
        // Causes that waited for the vector to be enabled.
        for v in 0..self.irq.vectors.len() {
            let vec = &self.irq.vectors[v];
            if vec.cause && vec.intena && vec.deadline.is_none() {
                let idx = vec.cause_itr;
                work += self.start_timer(v, idx, now);
            }
        }
        work
    }

    /// Start vector `v`'s timer with the interval of its ITR `idx` (0:
    /// expire now).
    fn start_timer(&mut self, v: usize, idx: u16, now: &mut LazyNow) -> usize {
        let interval = self.irq.interval(&self.sh.regs, v, idx);
        if interval.is_zero() {
            self.expire(v)
        } else {
            self.irq.vectors[v].deadline = Some(now.get() + interval);
            0
        }
    }

    /// An interrupt cause of vector 0 (the admin queue): it fires if
    /// `VFINT_ICR0_ENA1` enables the cause.
    pub(super) fn other_cause(&mut self, icr0_bit: u32) {
        if self.sh.regs.get(reg::VFINT_ICR0_ENA1) & icr0_bit != 0 {
            self.irq.fire(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_four() {
        // Descriptor 0 is written once 0..=3 are done (head at 4).
        assert!(!line_done(0, 1, 64));
        assert!(!line_done(0, 3, 64));
        assert!(line_done(0, 4, 64));
        assert!(line_done(3, 4, 64));
        assert!(!line_done(4, 5, 64));
        // Across the ring's end.
        assert!(!line_done(62, 63, 64));
        assert!(line_done(62, 0, 64));
        // A full ring of held descriptors.
        assert!(line_done(5, 5, 64));
    }

    #[test]
    fn dyn_ctl_semantics() {
        let mut irq = Irq::new(5);
        let regs = Regs::new(Default::default(), None);
        // DPDK's poll-mode vector 0: INTENA, ITR 0 = 16 (32 µs).
        assert!(!irq.write(&regs, 0, RegKind::DynCtl, 1 | (16 << 5)));
        assert!(irq.vectors[0].intena);
        assert_eq!(irq.interval(&regs, 0, 0), Duration::from_micros(32));
        assert_eq!(regs.get(reg::vfint_itr01(0)), 16, "written to ITR01(0)");
        // ITR index 3 leaves the intervals alone.
        irq.write(&regs, 0, RegKind::DynCtl, 1 | (3 << 3) | (99 << 5));
        assert_eq!(irq.interval(&regs, 0, 0), Duration::from_micros(32));
        // Firing auto-masks, and a masked cause is held.
        irq.fire(0);
        assert_eq!(irq.fired[0], 1);
        assert!(!irq.vectors[0].intena);
        irq.fire(0);
        assert_eq!(irq.fired[0], 1);
        assert!(irq.vectors[0].pending);
        // Enabled again without CLEARPBA: the held one fires.
        assert!(irq.write(&regs, 0, RegKind::DynCtl, 1 | (3 << 3)));
        // With CLEARPBA it is dropped.
        irq.vectors[0].pending = true;
        assert!(!irq.write(&regs, 0, RegKind::DynCtl, 1 | 2 | (3 << 3)));
        // GLINT_CTL.DIS_AUTOMASK_VF0: vector 0 stays enabled.
        irq.automask_off_vf0 = true;
        irq.fire(0);
        assert!(irq.vectors[0].intena);
        // WB_ON_ITR on a queue vector arms it without an interrupt.
        irq.write(&regs, 1, RegKind::DynCtl, (1 << 30) | (2 << 5));
        assert!(irq.vectors[1].armed() && !irq.vectors[1].intena);
        assert_eq!(irq.interval(&regs, 1, 0), Duration::from_micros(4));
        // An ITR register written directly (the guest's store to a shared
        // doorbell page, or an ITRN1 write) is the timer's interval.
        regs.set(reg::vfint_itrn1(1, 0), 25);
        assert_eq!(irq.interval(&regs, 1, 1), Duration::from_micros(50));
        assert_eq!(
            Irq::decode(reg::vfint_dyn_ctln1(0)),
            Some((1, RegKind::DynCtl))
        );
        assert_eq!(
            Irq::decode(reg::vfint_itrn1(2, 3)),
            Some((4, RegKind::Itr(2)))
        );
        assert_eq!(Irq::decode(reg::vfint_itr01(1)), Some((0, RegKind::Itr(1))));
    }
}
