//! The simulated PF's polling thread ([`SimPf`]): one thread serves every VF
//! of a PF, as one adapter moves the queues of all its VFs.
//!
//! Before, each `SimVf` had a device thread of its own: two VFs forwarding to
//! each other plus the application's forwarding core were three busy threads,
//! and on a 2-CPU machine they took turns by the scheduler's time slice. Now a
//! PF's VFs share one thread, which steps each VF in turn (one bounded
//! iteration each: admin queue, transmit rings, wire, receive rings, timers),
//! spins a little when none had work, then sleeps until a doorbell of any of
//! them (or the earliest reset phase or ITR expiry among them).
//!
//! Each VF's device stays behind its own mutex, taken for one step at a time:
//! a VF in manual mode (`SimVf::set_manual`) is skipped by the thread and
//! moves only in `SimVf::step` on its owner's thread, while the PF's other
//! VFs go on running.
#![deny(unsafe_code)]

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use nicpoll::{Error, Result};

use super::device::{self, Device, Work};
use super::regs::Waker;
use super::{PfModel, Shared, SimConfig, SimVf};

/// Longest idle sleep.
const MAX_SLEEP: Duration = Duration::from_millis(1);
/// Shortest idle sleep (doubled at each idle round up to [`MAX_SLEEP`]).
const MIN_SLEEP: Duration = Duration::from_micros(20);
/// Spin this long after the last work before sleeping.
const SPIN: Duration = Duration::from_micros(50);
/// How long the thread parks at a time when no VF is left for it to run
/// (none added yet, or all in manual mode): it is unparked when that
/// changes; this only bounds a lost wake-up.
const IDLE_PARK: Duration = Duration::from_millis(100);
/// How long dropping a VF waits for the thread to let go of it.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// One VF the thread serves.
pub(crate) struct VfSlot {
    pub(crate) sh: Arc<Shared>,
    pub(crate) device: Arc<Mutex<Device>>,
}

impl VfSlot {
    /// One step of the VF unless it is in manual mode or gone: the work done
    /// and the earliest time it must be looked at again.
    fn step(&self) -> Option<(Work, Option<Instant>)> {
        let running =
            |sh: &Shared| !sh.manual.load(Ordering::Acquire) && !sh.stop.load(Ordering::Acquire);
        if !running(&self.sh) {
            return None;
        }
        let mut d = device::lock(&self.device);
        // Checked again under the lock: once `set_manual(true)` or the VF's
        // drop has taken and released the lock, this thread steps it no more.
        if !running(&self.sh) {
            return None;
        }
        let work = d.step();
        Some((work, d.next_deadline()))
    }
}

/// What the PF's handles and its thread share.
pub(crate) struct PfCore {
    name: String,
    model: PfModel,
    /// Wakes the thread: every VF's doorbells and inbox use it.
    pub(crate) waker: Arc<Waker>,
    vfs: Mutex<Vec<Arc<VfSlot>>>,
    /// Bumped whenever `vfs` changes.
    generation: AtomicU64,
    /// The generation the thread serves (it holds no slot removed before it).
    seen: AtomicU64,
    stop: AtomicBool,
    thread_id: OnceLock<ThreadId>,
}

impl PfCore {
    fn add(&self, slot: Arc<VfSlot>) {
        let mut vfs = self.vfs.lock().unwrap_or_else(|e| e.into_inner());
        vfs.push(slot);
        self.generation.fetch_add(1, Ordering::AcqRel);
        drop(vfs);
        self.waker.unpark();
    }

    /// Take the VF whose shared state is `sh` off the thread's list, and wait
    /// (bounded) until the thread no longer holds it.
    pub(crate) fn remove(&self, sh: &Arc<Shared>) {
        let target = {
            let mut vfs = self.vfs.lock().unwrap_or_else(|e| e.into_inner());
            vfs.retain(|s| !Arc::ptr_eq(&s.sh, sh));
            self.generation.fetch_add(1, Ordering::AcqRel) + 1
        };
        if self.on_thread() {
            return;
        }
        let deadline = Instant::now() + RELEASE_WAIT;
        while self.seen.load(Ordering::Acquire) < target && !self.stop.load(Ordering::Acquire) {
            if Instant::now() > deadline {
                log::error!(
                    "simulated PF {}: the polling thread did not let go of VF {} within {:?}",
                    self.name,
                    sh.name,
                    RELEASE_WAIT
                );
                return;
            }
            self.waker.unpark();
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn on_thread(&self) -> bool {
        self.thread_id.get() == Some(&std::thread::current().id())
    }

    /// VFs served.
    fn count(&self) -> usize {
        self.vfs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Owns the thread: the last `SimPf` or `SimVf` of the PF to go stops it.
pub(crate) struct PfOwner {
    pub(crate) core: Arc<PfCore>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for PfOwner {
    fn drop(&mut self) {
        self.core.stop.store(true, Ordering::Release);
        self.core.waker.unpark();
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t
            && !self.core.on_thread()
            && t.join().is_err()
        {
            log::error!(
                "simulated PF {}: the polling thread panicked",
                self.core.name
            );
        }
    }
}

/// A simulated PF: one polling thread that serves every VF added to it
/// ([`add_vf`](Self::add_vf)). Cheap to clone (the clones are the same PF);
/// the thread stops when the last handle to the PF or to one of its VFs is
/// dropped.
///
/// [`SimVf::new`] makes a PF of its own for its VF (one thread per VF, as
/// before); VFs that should share a thread, as the VFs of one adapter, are
/// added to one `SimPf`.
#[derive(Clone)]
pub struct SimPf {
    pub(crate) owner: Arc<PfOwner>,
}

impl fmt::Debug for SimPf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimPf")
            .field("name", &self.owner.core.name)
            .field("model", &self.owner.core.model)
            .field("vfs", &self.owner.core.count())
            .finish()
    }
}

impl SimPf {
    /// Start a PF of flavour `model` with no VF yet, and its polling thread
    /// (named `iavf-sim-<name>`). Fails only when the thread cannot be
    /// spawned.
    pub fn new(name: &str, model: PfModel) -> Result<SimPf> {
        let core = Arc::new(PfCore {
            name: name.to_string(),
            model,
            waker: Arc::new(Waker::default()),
            vfs: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            thread_id: OnceLock::new(),
        });
        let c = core.clone();
        let (started, running) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("iavf-sim-{name}"))
            .spawn(move || {
                let _ = started.send(());
                poll(c)
            })
            .map_err(|source| Error::Os {
                op: format!("simulated PF {name}: spawn the polling thread"),
                source,
                hint: None,
            })?;
        // Running (and named, in /proc) when this returns.
        let _ = running.recv();
        let _ = core.thread_id.set(thread.thread().id());
        core.waker.set_thread(thread.thread().clone());
        Ok(SimPf {
            owner: Arc::new(PfOwner {
                core,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Add a VF to this PF, as the PF leaves it after enabling SR-IOV (reset
    /// done, `VFGEN_RSTAT` = VFR_VFACTIVE, resources allocated), served by
    /// this PF's thread from now on. `cfg.pf` must be this PF's flavour.
    /// Fails on a bad configuration, or when `Wire::Iface` cannot be opened.
    pub fn add_vf(&self, cfg: SimConfig) -> Result<SimVf> {
        let core = &self.owner.core;
        if cfg.pf != core.model {
            return Err(super::config_error(
                &cfg.name,
                format!(
                    "pf {}: the VF belongs to simulated PF {}, a {} PF",
                    cfg.pf, core.name, core.model
                ),
            ));
        }
        let (sh, device) = SimVf::build(&cfg, core.waker.clone())?;
        core.add(Arc::new(VfSlot {
            sh: sh.clone(),
            device: device.clone(),
        }));
        Ok(SimVf::assemble(sh, device, self.owner.clone(), &cfg))
    }

    /// The PF's name (its thread is `iavf-sim-<name>`).
    pub fn name(&self) -> &str {
        &self.owner.core.name
    }

    /// The PF's flavour.
    pub fn model(&self) -> PfModel {
        self.owner.core.model
    }

    /// VFs the PF serves now.
    pub fn vf_count(&self) -> usize {
        self.owner.core.count()
    }

    /// The polling thread's id (to tell which thread serves a VF, or to find
    /// it in `/proc/self/task` by its name).
    pub fn thread_id(&self) -> ThreadId {
        *self
            .owner
            .core
            .thread_id
            .get()
            .expect("set when the PF started")
    }

    /// Whether `self` and `other` are the same PF.
    pub fn same_pf(&self, other: &SimPf) -> bool {
        Arc::ptr_eq(&self.owner, &other.owner)
    }
}

/// The thread body: step every running VF in turn while any has work; when
/// none had for [`SPIN`], announce a sleep, look once more, and park until a
/// doorbell, the earliest deadline of a VF, or a backed-off timeout.
fn poll(core: Arc<PfCore>) {
    let mut vfs: Vec<Arc<VfSlot>> = Vec::new();
    let mut serving = u64::MAX;
    // When the VFs last had nothing to do (None: busy).
    let mut idle_since: Option<Instant> = None;
    let mut sleep = MIN_SLEEP;
    while !core.stop.load(Ordering::Acquire) {
        let generation = core.generation.load(Ordering::Acquire);
        if generation != serving {
            vfs = core.vfs.lock().unwrap_or_else(|e| e.into_inner()).clone();
            serving = generation;
            core.seen.store(generation, Ordering::Release);
        }
        let (work, running, _) = step_all(&vfs);
        if running == 0 {
            // Nothing to run (no VF yet, or all in manual mode): wait for a
            // change (add_vf, set_manual(false) and drops unpark us).
            idle_since = None;
            std::thread::park_timeout(IDLE_PARK);
            continue;
        }
        if work > 0 {
            idle_since = None;
            sleep = MIN_SLEEP;
            continue;
        }
        if idle_since.get_or_insert_with(Instant::now).elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        // Announce the sleep, look once more (a doorbell written before the
        // announcement is seen here; one written after it unparks us).
        core.waker.sleeping(true);
        let (again, _, deadline) = step_all(&vfs);
        if again == 0
            && !core.stop.load(Ordering::Acquire)
            && core.generation.load(Ordering::Acquire) == serving
        {
            let t = deadline.map_or(sleep, |d| {
                sleep.min(d.saturating_duration_since(Instant::now()))
            });
            std::thread::park_timeout(t);
            sleep = (sleep * 2).min(MAX_SLEEP);
        } else {
            idle_since = None;
        }
        core.waker.sleeping(false);
    }
}

/// One step of each running VF: (work, VFs stepped, earliest deadline).
fn step_all(vfs: &[Arc<VfSlot>]) -> (Work, usize, Option<Instant>) {
    let (mut work, mut running, mut deadline) = (0, 0, None::<Instant>);
    for s in vfs {
        if let Some((w, d)) = s.step() {
            work += w;
            running += 1;
            deadline = match (deadline, d) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    (work, running, deadline)
}
