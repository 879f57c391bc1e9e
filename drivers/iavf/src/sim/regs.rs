//! The VF's BAR0 register file ([`SimVfBar`]), shared by the driver (through the
//! [`Bar`] trait) and the device thread.
//!
//! Registers are atomics, so the BAR is `Send + Sync` and cheap to clone. Most
//! registers store what the driver writes; the exceptions are those the hardware
//! owns or reacts to:
//!
//! - `VFGEN_RSTAT` is owned by the device (driver writes are ignored); a stale
//!   VFACTIVE left from before an ice reset reads "in progress" from the
//!   moment the hardware gets to the reset, whether or not the device thread
//!   has run since (the hardware's clock, not the model's thread, ends it);
//! - `VFINT_ICR01` clears on read (the interrupt cause register of vector 0);
//! - writes to `VF_ATQT1` and the Tx tail doorbells wake the device thread;
//! - writes to the interrupt control registers (`VFINT_DYN_CTL*`, `VFINT_ITR*`)
//!   are stored and queued, in order, for the device, which applies their
//!   effects (module `irq`);
//! - while a VF reset is in progress every write is dropped (the function is in
//!   reset), and, if asked for with `Faults::deadbeef_during_reset`, every read
//!   returns 0xDEADBEEF as the hardware does.
//!
//! A VF served to another process (`SimConfig::shared_doorbells`, the vfio-user
//! server) keeps its first [`DOORBELL_PAGES`] bytes — the Tx and Rx tail
//! doorbells, and the queue vectors' ITR registers that share their last
//! page — in memory that process maps into its guest's BAR0 ([`SharedWords`]):
//! the guest's doorbell writes then cost no message and reach the device in
//! the order the guest's CPU made them, also across VFs, as posted writes do
//! on the hardware's one link. The device polls them; they do not wake it.
#![deny(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;

use super::dma::SharedWords;
use super::spec::{self, reg};

/// The bytes of BAR0 a client maps when the doorbells are shared: the Tx
/// tails (0x0000), the Rx tails and the queue vectors' ITRs (0x2000-0x2FFF).
pub const DOORBELL_PAGES: usize = 0x3000;

/// Wakes the thread that serves a VF (its PF's polling thread) when it sleeps
/// while idle.
#[derive(Default)]
pub(crate) struct Waker {
    thread: OnceLock<Thread>,
    sleeping: AtomicBool,
}

impl Waker {
    pub(crate) fn set_thread(&self, t: Thread) {
        let _ = self.thread.set(t);
    }

    /// Called after making work visible (a doorbell, a frame in an inbox).
    #[inline]
    pub(crate) fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }

    /// Unpark the device thread whether or not it announced a sleep (manual
    /// mode ending, the VF stopping).
    pub(crate) fn unpark(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// The device thread announces it is about to sleep; it must look for work
    /// once more after this, then park.
    pub(crate) fn sleeping(&self, on: bool) {
        self.sleeping.store(on, Ordering::SeqCst);
    }
}

impl Regs {
    #[cfg(test)]
    pub(crate) fn waker_is_sleeping(&self) -> bool {
        self.waker.sleeping.load(Ordering::SeqCst)
    }
}

/// The register words and the bits of state that change how accesses behave.
pub(crate) struct Regs {
    words: Box<[AtomicU32]>,
    /// The doorbell pages, in memory shared with a client (None: in `words`).
    shared: Option<SharedWords>,
    /// A VF reset is in progress: driver writes are dropped.
    in_reset: AtomicBool,
    /// Reads return 0xDEADBEEF (a reset in progress, if the fault is armed).
    deadbeef: AtomicBool,
    /// Bumped on driver writes to the RSS registers.
    rss_gen: AtomicU64,
    dropped_writes: AtomicU64,
    /// Interrupt register writes the device has not applied yet.
    irq_writes: Mutex<Vec<(usize, u32)>>,
    irq_pending: AtomicBool,
    /// ice's stale VFACTIVE ends at this time (ns after `epoch`; 0: none).
    stale_rstat_until: AtomicU64,
    epoch: Instant,
    /// Wakes the thread that serves the VF (its PF's, shared by its VFs).
    pub(crate) waker: Arc<Waker>,
}

impl Regs {
    pub(crate) fn new(waker: Arc<Waker>, shared: Option<SharedWords>) -> Regs {
        Regs {
            words: (0..spec::BAR0_LEN / 4).map(|_| AtomicU32::new(0)).collect(),
            shared,
            in_reset: AtomicBool::new(false),
            deadbeef: AtomicBool::new(false),
            rss_gen: AtomicU64::new(0),
            dropped_writes: AtomicU64::new(0),
            irq_writes: Mutex::new(Vec::new()),
            irq_pending: AtomicBool::new(false),
            stale_rstat_until: AtomicU64::new(0),
            epoch: Instant::now(),
            waker,
        }
    }

    /// `VFGEN_RSTAT` is stale until `until` (ice: the mailbox is off, the
    /// hardware has not got to the reset yet): from then on a driver reads
    /// VFR_INPROGRESS even if the device thread, descheduled, has not yet
    /// entered the reset. Set before the mailbox is cleared, so a driver that
    /// sees the mailbox off sees the end of the stale state too. `None` when
    /// the device writes the state itself.
    pub(crate) fn set_stale_rstat_until(&self, until: Option<Instant>) {
        let ns = until.map_or(0, |t| {
            (t.saturating_duration_since(self.epoch).as_nanos() as u64).max(1)
        });
        self.stale_rstat_until.store(ns, Ordering::Release);
    }

    /// What the driver reads in `VFGEN_RSTAT`.
    fn read_rstat(&self) -> u32 {
        let v = self.words[reg::VFGEN_RSTAT / 4].load(Ordering::Acquire);
        let until = self.stale_rstat_until.load(Ordering::Acquire);
        if until != 0
            && v & reg::RSTAT_MASK == spec::vfr::VFACTIVE
            && self.epoch.elapsed() >= Duration::from_nanos(until)
        {
            return (v & !reg::RSTAT_MASK) | spec::vfr::INPROGRESS;
        }
        v
    }

    /// The shared doorbell pages, when the VF has them.
    pub(crate) fn shared(&self) -> Option<&SharedWords> {
        self.shared.as_ref()
    }

    /// Device-side read (no side effects).
    #[inline]
    pub(crate) fn get(&self, off: usize) -> u32 {
        if off < DOORBELL_PAGES
            && let Some(s) = &self.shared
        {
            return s.load(off / 4);
        }
        self.words[off / 4].load(Ordering::Acquire)
    }

    /// Device-side write.
    #[inline]
    pub(crate) fn set(&self, off: usize, v: u32) {
        if off < DOORBELL_PAGES
            && let Some(s) = &self.shared
        {
            return s.store(off / 4, v);
        }
        self.words[off / 4].store(v, Ordering::Release);
    }

    /// Device-side OR of bits.
    #[inline]
    pub(crate) fn set_bits(&self, off: usize, bits: u32) {
        if off < DOORBELL_PAGES
            && let Some(s) = &self.shared
        {
            return s.store(off / 4, s.load(off / 4) | bits);
        }
        self.words[off / 4].fetch_or(bits, Ordering::AcqRel);
    }

    pub(crate) fn set_in_reset(&self, on: bool, deadbeef: bool) {
        self.in_reset.store(on, Ordering::Release);
        self.deadbeef.store(on && deadbeef, Ordering::Release);
    }

    pub(crate) fn rss_gen(&self) -> u64 {
        self.rss_gen.load(Ordering::Acquire)
    }

    pub(crate) fn bump_rss_gen(&self) {
        self.rss_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// The interrupt register writes since the last call, in order.
    pub(crate) fn take_irq_writes(&self, out: &mut Vec<(usize, u32)>) {
        if !self.irq_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut w = self.irq_writes.lock().unwrap_or_else(|e| e.into_inner());
        out.append(&mut w);
    }

    /// Forget queued interrupt register writes (a VF reset).
    pub(crate) fn drop_irq_writes(&self) {
        self.irq_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.irq_pending.store(false, Ordering::Release);
    }

    pub(crate) fn dropped_writes(&self) -> u64 {
        self.dropped_writes.load(Ordering::Relaxed)
    }

    /// What a VF reset does to the registers the VF owns: admin queues, tails and
    /// the interrupt registers reset by a VFR to 0. `VFGEN_RSTAT` and the RSS
    /// registers are left to the caller (the PF reprograms RSS); the interrupt
    /// cause registers of vector 0 keep their values (`VFINT_ICR01`,
    /// `VFINT_ICR0_ENA1`, `VFINT_STAT_CTL01` are "Reset: CORER" in
    /// `iavf_register.h`).
    pub(crate) fn clear_vf_registers(&self) {
        for i in 0..self.words.len() {
            let off = i * 4;
            if off == reg::VFGEN_RSTAT
                || (reg::RSS_FIRST..reg::RSS_END).contains(&off)
                || matches!(
                    off,
                    reg::VFINT_ICR01 | reg::VFINT_ICR0_ENA1 | reg::VFINT_STAT_CTL01
                )
            {
                continue;
            }
            self.set(off, 0);
        }
    }

    #[inline]
    fn check(&self, offset: usize, size: usize) {
        let len = self.words.len() * 4;
        if offset & (size - 1) != 0 || offset >= len || len - offset < size {
            panic!(
                "SimVfBar: {size}-byte register access at offset {offset:#x} is misaligned or \
                 outside the {len:#x}-byte BAR"
            );
        }
    }

    #[inline]
    fn driver_read32(&self, offset: usize) -> u32 {
        if self.deadbeef.load(Ordering::Acquire) {
            return reg::DEADBEEF;
        }
        if offset == reg::VFINT_ICR01 {
            return self.words[offset / 4].swap(0, Ordering::AcqRel);
        }
        if offset == reg::VFGEN_RSTAT {
            return self.read_rstat();
        }
        self.get(offset)
    }

    #[inline]
    fn driver_write32(&self, offset: usize, value: u32) {
        if self.in_reset.load(Ordering::Acquire) {
            self.dropped_writes.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // The doorbells first: the data path writes nothing else.
        if offset < reg::QTX_TAIL_BASE + reg::TAIL_SPAN {
            self.set(offset, value);
            self.waker.wake();
            return;
        }
        if offset < reg::RX_TAIL_END {
            self.set(offset, value);
            return;
        }
        match offset {
            // Owned by the device: status and read-to-clear cause registers.
            reg::VFGEN_RSTAT | reg::VFINT_ICR01 => {}
            reg::VF_ATQT1 => {
                self.set(offset, value);
                self.waker.wake();
            }
            o if (reg::RSS_FIRST..reg::RSS_END).contains(&o) => {
                self.set(offset, value);
                self.bump_rss_gen();
            }
            o if is_irq_control(o) => {
                self.set(offset, value);
                self.irq_writes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((o, value));
                self.irq_pending.store(true, Ordering::Release);
                self.waker.wake();
            }
            _ => self.set(offset, value),
        }
    }
}

/// Whether `offset` is an interrupt control register (DYN_CTL, ITR).
fn is_irq_control(offset: usize) -> bool {
    offset == reg::VFINT_DYN_CTL01
        || (reg::vfint_dyn_ctln1(0)..reg::vfint_dyn_ctln1(64)).contains(&offset)
        || (reg::vfint_itrn1(0, 0)..reg::vfint_itrn1(2, 16)).contains(&offset)
        || (reg::vfint_itr01(0)..=reg::vfint_itr01(2)).contains(&offset)
}

/// The simulated VF's BAR0: implements [`Bar`], so a driver generic over `B: Bar`
/// runs on it unchanged. Cheap to clone (all clones are the same registers).
#[derive(Clone)]
pub struct SimVfBar {
    pub(crate) regs: Arc<Regs>,
}

impl fmt::Debug for SimVfBar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimVfBar")
            .field("len", &format_args!("{:#x}", spec::BAR0_LEN))
            .finish()
    }
}

impl Bar for SimVfBar {
    fn len(&self) -> usize {
        spec::BAR0_LEN
    }

    #[inline]
    fn read32(&self, offset: usize) -> u32 {
        self.regs.check(offset, 4);
        self.regs.driver_read32(offset)
    }

    #[inline]
    fn write32(&self, offset: usize, value: u32) {
        self.regs.check(offset, 4);
        self.regs.driver_write32(offset, value)
    }

    fn read16(&self, offset: usize) -> u16 {
        self.regs.check(offset, 2);
        (self.regs.driver_read32(offset & !3) >> ((offset % 4) * 8)) as u16
    }

    fn write16(&self, offset: usize, value: u16) {
        self.regs.check(offset, 2);
        let word = offset & !3;
        let shift = (offset % 4) * 8;
        let old = self.regs.get(word);
        let new = (old & !(0xFFFF << shift)) | (u32::from(value) << shift);
        self.regs.driver_write32(word, new)
    }

    fn read8(&self, offset: usize) -> u8 {
        self.regs.check(offset, 1);
        (self.regs.driver_read32(offset & !3) >> ((offset % 4) * 8)) as u8
    }

    fn write8(&self, offset: usize, value: u8) {
        self.regs.check(offset, 1);
        let word = offset & !3;
        let shift = (offset % 4) * 8;
        let old = self.regs.get(word);
        let new = (old & !(0xFF << shift)) | (u32::from(value) << shift);
        self.regs.driver_write32(word, new)
    }
}
