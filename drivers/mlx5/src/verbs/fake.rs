//! A fake NIC behind a fake libibverbs, for tests (part of the unsafe `verbs`
//! module). Its exported functions fill a [`Fns`] table; the contexts it opens
//! are `verbs_context` mirrors in Rust memory whose `ops` and extension ops
//! point to the `extern "C"` functions below, so the driver runs exactly the
//! dispatch it runs against rdma-core.
//!
//! The NIC emulates what the driver relies on. Where a test depends on how
//! rdma-core's libmlx5 or the device behaves, the behaviour follows rdma-core
//! v56.1 (Debian trixie), cited at each place as `file:line` of its
//! `providers/mlx5/` (`driver.h`: `libibverbs/driver.h`), and the kernel:
//! - flow steering: a frame from the wire goes to the best (lowest priority
//!   number) matching flow's hash QP, then through its indirection table to a
//!   work queue; frames no flow matches go to "the kernel" (recorded);
//! - receive: the first posted buffer of the WQ gets the frame; a frame longer
//!   than the buffer consumes it with IBV_WC_LOC_LEN_ERR and the WQ keeps
//!   running; an error the device treats as fatal (local QP operation, local
//!   protection, flush) moves the WQ to the error state, where it receives
//!   nothing until it is reset ([`Nic::complete_posted`]); no buffer, or a WQ
//!   not ready: counted as missed;
//! - send: a RAW_PACKET QP in RTS "transmits" each request when it is posted
//!   (inline data copied, others read through the registered region, checked
//!   against the MR's lkey and bounds), completes signalled ones, and with
//!   `loopback` puts the frame back on the wire; the send queue holds
//!   `max_send_wr` requests until a completion covering them is polled;
//! - completion queues as libmlx5 makes them (`ibv_create_cq_ex`'s checks, the
//!   lock-free extended poll functions of a single-threaded CQ), doorbell
//!   registers as libmlx5 hands them out (4 dedicated, then 12 shared, then the
//!   least used shared one; a thread domain's own), thread and parent domains;
//! - errors on demand (open, create_qp, create_flow, reg_mr errno, a failing
//!   send, a failing poll), the kernel's EBUSY when an object is destroyed
//!   while another still uses it, and object accounting so tests can check
//!   nothing leaks;
//! - the asynchronous event queue as the kernel's uverbs keeps it when the
//!   device is removed ([`Nic::remove_device`], [`EventQueueOnRemoval`]):
//!   IBV_EVENT_DEVICE_FATAL queued, then, on the kernels that close the queue
//!   then, `poll` reporting POLLERR once it is empty and a read failing with
//!   EIO, or with EAGAIN on a kernel without the 2023 fix.
//!
//! Deliberately stricter than libmlx5 (to catch driver mistakes, never to
//! decide what the device does): a post to a send QP not in RTS (or error) is
//! refused (libmlx5 does not look at the state, `qp.c:804-850`, and the device
//! would ignore the request), and a receive SGE outside every registered region
//! is refused and counted as a violation (the device would fail it with a
//! protection error).
//!
//! # Safety
//! Every `f_*` function has the contract of the libibverbs function it stands
//! for (as `<infiniband/verbs.h>` documents it), and every object pointer it is
//! given must be one this fake made.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::ffi::{c_int, c_void};
use std::mem::{offset_of, size_of};
use std::ptr;
use std::sync::{Arc, Mutex, MutexGuard};

use super::*;
use crate::flow::FlowRule;
use crate::netlink::Kernel;
use crate::verbs::library::{Fns, set_errno};
use std::ffi::c_char;
use std::io;

/// What the fake NIC does.
#[derive(Clone, Debug)]
pub struct FakeConfig {
    /// The RDMA device name libibverbs lists.
    pub ibdev: String,
    /// Port link layer.
    pub link_layer: u8,
    /// ibv_open_device fails with this errno.
    pub open_errno: Option<i32>,
    /// ibv_create_qp / create_qp_ex fail with this errno.
    pub create_qp_errno: Option<i32>,
    /// ibv_create_flow fails with this errno.
    pub create_flow_errno: Option<i32>,
    /// ibv_reg_mr fails with this errno.
    pub reg_mr_errno: Option<i32>,
    /// The context has the extended ABI (verbs_context ops). False: an old
    /// provider, every extension op is missing.
    pub extended: bool,
    /// The device's largest send WQE in bytes (libmlx5's `max_sq_desc_sz`,
    /// which the kernel reports from the device's capabilities): bounds the
    /// inline data of a send QP.
    pub max_sq_desc_sz: u32,
    /// Transmitted frames come back from the wire.
    pub loopback: bool,
    /// post_send refuses (EINVAL) a request of this length.
    pub refuse_send_len: Option<u32>,
    /// What the PF says of the VF's trust (`None`: no PF visible).
    pub vf_trusted: Option<bool>,
    /// The IB port RDMA netlink names for the interface (`None`: no answer).
    pub rdma_port: Option<u8>,
    /// The provider has thread domains (`ibv_alloc_td`).
    pub thread_domains: bool,
    /// What the kernel does to the asynchronous event queue when the device
    /// is removed.
    pub event_queue_on_removal: EventQueueOnRemoval,
}

/// What the kernel's uverbs does to a context's asynchronous event queue when
/// its device is removed (with a driver that disassociates, as mlx5_ib does),
/// after queueing IBV_EVENT_DEVICE_FATAL. Line numbers are Linux 6.12's
/// (Debian's linux-source-6.12), `drivers/infiniband/core/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventQueueOnRemoval {
    /// Linux 5.7 and later (commit c485b19d52c4): the async event queue is
    /// closed only when its descriptor is released
    /// (`uverbs_std_types_async_fd.c:47-55`); removal queues DEVICE_FATAL
    /// (`uverbs_std_types_async_fd.c:30-31`) and the queue stays open: after
    /// the event, `poll` reports nothing and a non-blocking read EAGAIN.
    StaysOpen,
    /// Kernels before 5.6 (4.19, 5.4) close the queue in
    /// `ib_uverbs_free_hw_resources` right after queueing DEVICE_FATAL (code
    /// that commit 3e032c0e92aa removed); once it is empty `poll` reports
    /// POLLERR (commit eb356e6dc15a, in their stable releases since June
    /// 2020; `uverbs_main.c:311-314`) and a read fails with EIO even on a
    /// non-blocking descriptor (commit 62fab312fa16, June 2023;
    /// `uverbs_main.c:237-245`).
    Closes,
    /// As [`Closes`](Self::Closes) on a kernel without commit 62fab312fa16
    /// (4.19 and 5.4 stable before June 2023): the read of the closed, empty
    /// queue checks O_NONBLOCK first and fails with EAGAIN, as if no event
    /// had come yet, while `poll` keeps reporting POLLERR.
    ClosesReadingEagain,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            ibdev: "mlx5_0".into(),
            link_layer: IBV_LINK_LAYER_ETHERNET,
            open_errno: None,
            create_qp_errno: None,
            create_flow_errno: None,
            reg_mr_errno: None,
            extended: true,
            max_sq_desc_sz: 1024,
            loopback: false,
            refuse_send_len: None,
            vf_trusted: None,
            rdma_port: None,
            thread_domains: true,
            event_queue_on_removal: EventQueueOnRemoval::StaysOpen,
        }
    }
}

/// `IBV_CREATE_CQ_SUP_WC_FLAGS` (`verbs.h`): the completion fields libmlx5 can
/// report (its CREATE_CQ_SUPPORTED_WC_FLAGS, `verbs.c:932-939`).
pub(crate) const IBV_CREATE_CQ_SUP_WC_FLAGS: u64 = 0xfff;
/// `IBV_CQ_INIT_ATTR_MASK_PD`.
pub(crate) const IBV_CQ_INIT_ATTR_MASK_PD: u32 = 1 << 1;
/// `IBV_CREATE_CQ_ATTR_IGNORE_OVERRUN`.
pub(crate) const IBV_CREATE_CQ_ATTR_IGNORE_OVERRUN: u32 = 1 << 1;
/// `IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS`.
pub(crate) const IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS: u32 = 1 << 0;
/// `IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT`.
pub(crate) const IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT: u32 = 1 << 1;
/// libmlx5's CQ_POLL_ERR (`cq.c:52`), what `ibv_start_poll` returns when it
/// cannot parse a completion.
pub(crate) const CQ_POLL_ERR: c_int = -2;

/// Whether the device treats an error completion of a receive queue as fatal,
/// moving the queue to the error state: the syndromes mlx5e recovers from
/// (Linux `drivers/net/ethernet/mellanox/mlx5/core/en/health.h`
/// cqe_syndrome_needs_recover: local QP operation, local protection, flush),
/// which libmlx5 reports as these statuses (`cq.c:340-371`
/// mlx5_handle_error_cqe). Others, a local length error among them, leave the
/// queue running (Linux commit 187a9830c921 "net/mlx5e: Do not recover from a
/// non-fatal syndrome": "the RQ is not actually in ERR state").
fn fatal_to_a_receive_queue(status: u32) -> bool {
    matches!(
        status,
        IBV_WC_LOC_QP_OP_ERR | IBV_WC_LOC_PROT_ERR | IBV_WC_WR_FLUSH_ERR
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    Recv(u32),
    Send(u32, u64),
    Injected,
}

struct CqRec {
    cap: usize,
    entries: VecDeque<(IbvWc, Src)>,
    /// The completion the extended poll functions are on.
    current: Option<IbvWc>,
    /// `ibv_cq_init_attr_ex.flags`.
    flags: u32,
}

impl CqRec {
    /// libmlx5 gives a CQ created with IBV_CREATE_CQ_ATTR_SINGLE_THREADED the
    /// extended poll functions without the CQ spinlock (`cq.c:1673-1686`
    /// mlx5_cq_fill_pfns picks them, `cq.c:1100-1123` mlx5_start_poll takes
    /// the lock only in the `_lock` variants); `ibv_poll_cq` always locks
    /// (`cq.c:1019`, the lock made with `verbs.c:1046`) unless the process set
    /// MLX5_SINGLE_THREADED, which the fake does not model.
    fn lock_free_extended_poll(&self) -> bool {
        self.flags & IBV_CREATE_CQ_ATTR_SINGLE_THREADED != 0
    }
}

struct WqRec {
    cq: u32,
    state: u32,
    max_wr: usize,
    posted: VecDeque<(u64, IbvSge)>,
}

enum QpRec {
    Send {
        cq: u32,
        cap: IbvQpCap,
        state: u32,
        posted: u64,
        done: u64,
        /// The doorbell register (UAR) its posts ring, and whether it is one
        /// of libmlx5's shared ones (rung under a lock, by several QPs).
        doorbell: (u32, bool),
        /// The parent domain it was created in, and that domain's thread
        /// domain (0: none).
        parent: Option<(u32, u32)>,
    },
    Rss {
        table: u32,
        fields: u64,
    },
}

struct MrRec {
    access: u32,
    lkey: u32,
    start: usize,
    len: usize,
}

/// A flow rule as the fake decoded it from the attribute buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRec {
    /// The hash QP it steers to.
    pub qp: u32,
    /// The rule.
    pub rule: FlowRule,
}

#[derive(Default)]
struct State {
    next_id: u32,
    pds: u32,
    ctxs: u32,
    mrs: HashMap<u32, MrRec>,
    cqs: HashMap<u32, CqRec>,
    wqs: HashMap<u32, WqRec>,
    wq_order: Vec<u32>,
    tables: HashMap<u32, Vec<u32>>,
    qps: HashMap<u32, QpRec>,
    flows: Vec<(u32, FlowRec)>,
    devices: Vec<usize>,
    lists: Vec<usize>,
    kernel: Vec<Vec<u8>>,
    sent: Vec<Vec<u8>>,
    missed: u64,
    fail_next_send: Option<u32>,
    fdb: Vec<(u32, [u8; 6], bool)>,
    /// Thread domains alive: (id, the doorbell register dedicated to it).
    tds: Vec<(u32, u32)>,
    /// Parent domains alive: (id, thread domain).
    parent_pds: Vec<(u32, u32)>,
    /// Doorbell registers handed out: next id, dedicated ones in use by QPs,
    /// the shared ones with their users. libmlx5 (`verbs.c:371-410`
    /// mlx5_get_qp_uar) gives a QP created outside a thread domain a dedicated
    /// register while fewer than `qp_max_dedicated_uuars` are out, then
    /// allocates shared ones up to `qp_max_shared_uuars`, then puts it on the
    /// least used shared one; those limits are the low-latency count (4) and
    /// the rest of the 16 (`mlx5.c:2512-2513`, defaults `mlx5.c:692-706` and
    /// `mlx5-abi.h:50-51`). Shared registers are rung under a lock
    /// (`verbs.c:319`). A thread domain gets a register of its own
    /// (`verbs.c:449-474` mlx5_alloc_td, `verbs.c:413-435`), which every QP
    /// created in it rings (`verbs.c:2676-2678`), without a lock.
    next_doorbell: u32,
    low_latency_used: u32,
    shared_doorbells: Vec<(u32, u32)>,
    /// Polls that take libmlx5's CQ lock ([`CqRec::lock_free_extended_poll`]).
    locking_polls: u64,
    /// The next `ibv_start_poll` fails as libmlx5's does on a CQE it cannot
    /// parse (CQ_POLL_ERR, `cq.c:52`, passed on by `cq.c:1100-1173` mlx5_start_poll).
    fail_next_poll: bool,
    /// Pending async events and the eventfd that signals them (one count
    /// per event); once the queue is closed and empty, the descriptor polls
    /// as POLLERR ([`State::close_drained_event_queue`]).
    async_events: VecDeque<u32>,
    async_fd: Option<std::os::fd::OwnedFd>,
    /// The device was removed and the kernel closed the event queue.
    event_queue_closed: bool,
    /// `ibv_get_async_event` calls that found the queue empty or closed (a
    /// watcher that spins makes many).
    empty_async_reads: u64,
    promisc_log: Vec<(u32, bool)>,
    ebusy: u32,
    sq_overflows: u32,
    cq_overruns: u32,
    bad_sge: u32,
}

impl State {
    fn id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn push_cqe(&mut self, cq: u32, wc: IbvWc, src: Src) {
        if let Some(c) = self.cqs.get_mut(&cq) {
            if c.entries.len() >= c.cap {
                self.cq_overruns += 1;
            }
            c.entries.push_back((wc, src));
        }
    }

    /// A doorbell register for a new send QP outside a thread domain, as
    /// libmlx5 hands them out (see `next_doorbell`).
    fn doorbell(&mut self) -> (u32, bool) {
        let fresh = self.fresh_doorbell();
        if self.low_latency_used < 4 {
            self.low_latency_used += 1;
            return (fresh, false);
        }
        if self.shared_doorbells.len() < 12 {
            self.shared_doorbells.push((fresh, 1));
            return (fresh, true);
        }
        let least = self
            .shared_doorbells
            .iter_mut()
            .min_by_key(|(_, users)| *users)
            .expect("12 shared registers");
        least.1 += 1;
        (least.0, true)
    }

    /// A register no QP rings yet.
    fn fresh_doorbell(&mut self) -> u32 {
        self.next_doorbell += 1;
        self.next_doorbell
    }

    /// The doorbell register of a QP created in `pd`: its thread domain's,
    /// if `pd` is a parent domain with one, else one from the QP pool.
    fn doorbell_in(&mut self, pd: u32) -> ((u32, bool), Option<(u32, u32)>) {
        let Some(&(parent, td)) = self.parent_pds.iter().find(|(p, _)| *p == pd) else {
            return (self.doorbell(), None);
        };
        match self.tds.iter().find(|(t, _)| *t == td) {
            Some(&(_, reg)) => ((reg, false), Some((parent, td))),
            None => (self.doorbell(), Some((parent, 0))),
        }
    }

    fn release_doorbell(&mut self, doorbell: (u32, bool), thread_domain: bool) {
        match doorbell {
            (_, false) if !thread_domain => self.low_latency_used -= 1,
            (reg, true) => {
                if let Some(d) = self.shared_doorbells.iter_mut().find(|(r, _)| *r == reg) {
                    d.1 -= 1;
                }
            }
            _ => {}
        }
    }

    /// Once the closed event queue holds no more events, make its descriptor
    /// poll as the kernel's does (POLLERR, no POLLIN): the descriptor number
    /// the context hands out now refers to the write end of a pipe whose read
    /// end is closed, which Linux polls as EPOLLERR (`fs/pipe.c:693-702`).
    fn close_drained_event_queue(&mut self) {
        if !self.event_queue_closed || !self.async_events.is_empty() {
            return;
        }
        let Some(fd) = self.async_fd.as_mut() else {
            return;
        };
        let (read_end, write_end) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        drop(read_end);
        rustix::io::dup2(&write_end, fd).expect("dup2 over the event descriptor");
    }

    fn mr_ok(&self, sge: &IbvSge) -> bool {
        self.mrs.values().any(|m| {
            m.lkey == sge.lkey
                && sge.addr as usize >= m.start
                && sge.addr as usize + sge.length as usize <= m.start + m.len
        })
    }
}

/// The fake NIC.
pub struct Nic {
    cfg: FakeConfig,
    st: Mutex<State>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Nic>>> = const { RefCell::new(None) };
}

#[repr(C)]
struct FakeDevice {
    dev: IbvDevice,
    nic: Arc<Nic>,
}

#[repr(C)]
struct FakeCtx {
    vctx: VerbsContext,
    nic: Arc<Nic>,
}

#[repr(C)]
struct Obj<T> {
    raw: T,
    id: u32,
}

/// The NIC behind a context pointer.
///
/// # Safety
/// `ctx` must be a context this fake opened.
unsafe fn nic_of(ctx: *mut IbvContext) -> Arc<Nic> {
    let f = (ctx as *mut u8).wrapping_sub(offset_of!(VerbsContext, context)) as *mut FakeCtx;
    // SAFETY: the caller's contract: ctx is the context field of a FakeCtx,
    // whose VerbsContext is its first field.
    unsafe { (*f).nic.clone() }
}

/// The id of a fake object.
///
/// # Safety
/// `p` must point to an `Obj<T>` this fake made.
unsafe fn id_of<T>(p: *mut T) -> u32 {
    // SAFETY: the caller's contract; raw is the first field.
    unsafe { (*(p as *mut Obj<T>)).id }
}

fn boxed<T>(raw: T, id: u32) -> *mut T {
    Box::into_raw(Box::new(Obj { raw, id })) as *mut T
}

/// # Safety
/// `p` must come from `boxed` and not be freed yet.
unsafe fn unbox<T>(p: *mut T) {
    // SAFETY: the caller's contract.
    drop(unsafe { Box::from_raw(p as *mut Obj<T>) });
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the verbs mirrors, whose fields are integers, raw
    // pointers, Option<fn> and pthread types: all-zero is valid for each.
    unsafe { std::mem::zeroed() }
}

fn fail<T>(errno: i32) -> *mut T {
    set_errno(errno);
    ptr::null_mut()
}

impl Nic {
    /// A NIC configured by `cfg`.
    pub fn new(cfg: FakeConfig) -> Arc<Nic> {
        Arc::new(Nic {
            cfg,
            st: Mutex::new(State::default()),
        })
    }

    /// Make this the NIC the fake library lists on this thread, and return the
    /// library.
    pub fn install(self: &Arc<Self>) -> Arc<Verbs> {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        Verbs::from_fns("fake-libibverbs", fake_fns(), Some(f_reg_mr_iova2))
    }

    /// The fake kernel next to this NIC: it records netlink requests.
    pub fn kernel(self: &Arc<Self>) -> Arc<dyn Kernel> {
        Arc::new(FakeKernel(self.clone()))
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put a frame on the wire towards the port.
    pub fn receive(&self, frame: &[u8]) {
        let mut st = self.st();
        deliver(&mut st, frame);
    }

    /// Frames no flow matched (what the kernel got).
    pub fn kernel_frames(&self) -> Vec<Vec<u8>> {
        self.st().kernel.clone()
    }

    /// Frames transmitted.
    pub fn sent_frames(&self) -> Vec<Vec<u8>> {
        self.st().sent.clone()
    }

    /// Frames dropped for lack of a posted buffer (or a WQ not ready).
    pub fn missed(&self) -> u64 {
        self.st().missed
    }

    /// The flow rules in place, in creation order.
    pub fn flows(&self) -> Vec<FlowRec> {
        self.st().flows.iter().map(|(_, f)| f.clone()).collect()
    }

    /// Hash fields of an RSS QP and the WQ indices (in creation order) of its table.
    pub fn rss_qp(&self, qp: u32) -> Option<(u64, Vec<usize>)> {
        let st = self.st();
        match st.qps.get(&qp)? {
            QpRec::Rss { table, fields } => {
                let wqs = st.tables.get(table)?;
                Some((
                    *fields,
                    wqs.iter()
                        .map(|w| {
                            st.wq_order
                                .iter()
                                .position(|x| x == w)
                                .unwrap_or(usize::MAX)
                        })
                        .collect(),
                ))
            }
            QpRec::Send { .. } => None,
        }
    }

    /// Buffers posted to the `i`-th work queue created (still alive).
    pub fn posted(&self, i: usize) -> usize {
        let st = self.st();
        st.wq_order
            .get(i)
            .and_then(|w| st.wqs.get(w))
            .map(|w| w.posted.len())
            .unwrap_or(0)
    }

    /// Take the oldest posted request of the `i`-th work queue (as if the
    /// device consumed it) and queue `wc` for it on the WQ's CQ, with its wr_id
    /// (unless `keep_wr_id` is false, then `wc.wr_id` as given). An error the
    /// device treats as fatal ([`fatal_to_a_receive_queue`]) also moves the
    /// WQ to the error state: it receives nothing more until it is reset.
    pub fn complete_posted(&self, i: usize, mut wc: IbvWc, keep_wr_id: bool) -> Option<IbvSge> {
        let mut st = self.st();
        let w = *st.wq_order.get(i)?;
        let rec = st.wqs.get_mut(&w)?;
        let (wr_id, sge) = rec.posted.pop_front()?;
        if fatal_to_a_receive_queue(wc.status) {
            rec.state = IBV_WQS_ERR;
        }
        let cq = rec.cq;
        if keep_wr_id {
            wc.wr_id = wr_id;
        }
        st.push_cqe(cq, wc, Src::Recv(w));
        Some(sge)
    }

    /// Queue a completion on the CQ of the `i`-th work queue without consuming
    /// anything (a bogus completion).
    pub fn inject_rx_completion(&self, i: usize, wc: IbvWc) {
        let mut st = self.st();
        let Some(w) = st.wq_order.get(i).copied() else {
            return;
        };
        let Some(cq) = st.wqs.get(&w).map(|r| r.cq) else {
            return;
        };
        st.push_cqe(cq, wc, Src::Injected);
    }

    /// The next send request fails with `status` (and puts its QP in error).
    pub fn fail_next_send(&self, status: u32) {
        self.st().fail_next_send = Some(status);
    }

    /// The next `ibv_start_poll` of any CQ fails with libmlx5's CQ_POLL_ERR.
    pub fn fail_next_poll(&self) {
        self.st().fail_next_poll = true;
    }

    /// The state of the `i`-th work queue created (IBV_WQS_*).
    pub fn wq_state(&self, i: usize) -> Option<u32> {
        let st = self.st();
        st.wq_order
            .get(i)
            .and_then(|w| st.wqs.get(w))
            .map(|w| w.state)
    }

    /// The doorbell register of each live send QP: (register, shared, QPs
    /// ringing it).
    pub fn send_doorbells(&self) -> Vec<(u32, bool, usize)> {
        let st = self.st();
        let regs: Vec<u32> = st
            .qps
            .values()
            .filter_map(|q| match q {
                QpRec::Send { doorbell, .. } => Some(doorbell.0),
                _ => None,
            })
            .collect();
        st.qps
            .values()
            .filter_map(|q| match q {
                QpRec::Send { doorbell, .. } => Some((
                    doorbell.0,
                    doorbell.1,
                    regs.iter().filter(|r| **r == doorbell.0).count(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Live send QPs created in a thread domain.
    pub fn send_qps_in_thread_domains(&self) -> usize {
        self.st()
            .qps
            .values()
            .filter(|q| matches!(q, QpRec::Send { parent: Some((_, td)), .. } if *td != 0))
            .count()
    }

    /// The creation flags of every live CQ.
    pub fn cq_flags(&self) -> Vec<u32> {
        self.st().cqs.values().map(|c| c.flags).collect()
    }

    /// Polls that took libmlx5's CQ lock: `ibv_poll_cq`, and the extended
    /// poll of a CQ not created single-threaded.
    pub fn locking_polls(&self) -> u64 {
        self.st().locking_polls
    }

    /// The access flags of every live memory region.
    pub fn mr_access(&self) -> Vec<u32> {
        self.st().mrs.values().map(|m| m.access).collect()
    }

    /// Live memory regions.
    pub fn mr_count(&self) -> usize {
        self.st().mrs.len()
    }

    /// Raise an async event (IBV_EVENT_*) on the open contexts. A closed
    /// queue takes no more events (`uverbs_main.c:414-417`).
    pub fn async_event(&self, kind: u32) {
        let mut st = self.st();
        if st.event_queue_closed {
            return;
        }
        st.async_events.push_back(kind);
        if let Some(fd) = &st.async_fd {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// Remove the device, as the kernel's uverbs does to an open context
    /// (`uverbs_main.c:1221-1249` ib_uverbs_free_hw_resources): queue
    /// IBV_EVENT_DEVICE_FATAL, unless `fatal_event` is false (the event's
    /// allocation failed, `uverbs_main.c:420-424`: then nothing but a closed
    /// queue tells), then do to the queue what the configured kernel does
    /// ([`EventQueueOnRemoval`]).
    pub fn remove_device(&self, fatal_event: bool) {
        if fatal_event {
            self.async_event(IBV_EVENT_DEVICE_FATAL);
        }
        let mut st = self.st();
        if self.cfg.event_queue_on_removal != EventQueueOnRemoval::StaysOpen {
            st.event_queue_closed = true;
            st.close_drained_event_queue();
        }
    }

    /// `ibv_get_async_event` calls so far that found no event (the queue
    /// empty or closed): what a watcher that reads without being told to
    /// piles up.
    pub fn empty_async_reads(&self) -> u64 {
        self.st().empty_async_reads
    }

    /// Async events raised and not yet read.
    pub fn pending_async_events(&self) -> usize {
        self.st().async_events.len()
    }

    /// IFF_PROMISC requests seen (ifindex, on).
    pub fn promisc_log(&self) -> Vec<(u32, bool)> {
        self.st().promisc_log.clone()
    }

    /// FDB requests seen (ifindex, mac, add).
    pub fn fdb_log(&self) -> Vec<(u32, [u8; 6], bool)> {
        self.st().fdb.clone()
    }

    /// Verbs objects still alive (contexts, PDs, MRs, CQs, WQs, tables, QPs, flows).
    pub fn live_objects(&self) -> usize {
        let st = self.st();
        (st.ctxs + st.pds) as usize
            + st.mrs.len()
            + st.cqs.len()
            + st.wqs.len()
            + st.tables.len()
            + st.qps.len()
            + st.flows.len()
            + st.tds.len()
            + st.parent_pds.len()
    }

    /// Things the driver must never cause: destroying an object still in use,
    /// more outstanding sends than the QP holds, a CQ overrun, a receive buffer
    /// outside a registered region.
    pub fn violations(&self) -> String {
        let st = self.st();
        format!(
            "ebusy={} sq_overflows={} cq_overruns={} bad_sge={}",
            st.ebusy, st.sq_overflows, st.cq_overruns, st.bad_sge
        )
    }

    /// Whether there were no violations.
    pub fn clean(&self) -> bool {
        let st = self.st();
        st.ebusy == 0 && st.sq_overflows == 0 && st.cq_overruns == 0 && st.bad_sge == 0
    }
}

impl Drop for Nic {
    fn drop(&mut self) {
        let st = self.st.get_mut().unwrap_or_else(|e| e.into_inner());
        for d in st.devices.drain(..) {
            // SAFETY: devices are freed only here, once.
            drop(unsafe { Box::from_raw(d as *mut FakeDevice) });
        }
    }
}

/// The kernel beside the fake NIC: FDB entries and interface flags recorded.
struct FakeKernel(Arc<Nic>);

impl Kernel for FakeKernel {
    fn fdb(&self, ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()> {
        self.0.st().fdb.push((ifindex, mac, add));
        Ok(())
    }

    fn set_promisc(&self, ifindex: u32, on: bool) -> io::Result<()> {
        self.0.st().promisc_log.push((ifindex, on));
        Ok(())
    }

    fn vf_trust(&self, _pf_ifindex: u32, _vf: u32) -> io::Result<Option<bool>> {
        Ok(self.0.cfg.vf_trusted)
    }

    fn rdma_port(&self, _ibdev: &str, _ifindex: u32) -> io::Result<Option<u8>> {
        Ok(self.0.cfg.rdma_port)
    }
}

fn fake_fns() -> Fns {
    Fns {
        get_device_list: f_get_device_list,
        free_device_list: f_free_device_list,
        open_device: f_open_device,
        close_device: f_close_device,
        query_device: f_query_device,
        query_port: f_query_port_compat,
        alloc_pd: f_alloc_pd,
        dealloc_pd: f_dealloc_pd,
        reg_mr: f_reg_mr,
        dereg_mr: f_dereg_mr,
        destroy_cq: f_destroy_cq,
        create_qp: f_create_qp,
        modify_qp: f_modify_qp,
        destroy_qp: f_destroy_qp,
        get_async_event: f_get_async_event,
        ack_async_event: f_ack_async_event,
    }
}

// ---------------------------------------------------------------------------
// Steering and delivery

fn ethertype_and_l3(frame: &[u8]) -> (Option<u16>, u16, usize) {
    if frame.len() < 14 {
        return (None, 0, 14);
    }
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    if et == 0x8100 && frame.len() >= 18 {
        let vid = u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff;
        (Some(vid), u16::from_be_bytes([frame[16], frame[17]]), 18)
    } else {
        (None, et, 14)
    }
}

fn l4_proto(frame: &[u8], et: u16, l3: usize) -> Option<u8> {
    match et {
        0x0800 => frame.get(l3 + 9).copied(),
        0x86dd => frame.get(l3 + 6).copied(),
        _ => None,
    }
}

fn rule_matches(r: &FlowRule, frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return false;
    }
    if let Some(mac) = r.dst_mac
        && frame[0..6] != mac
    {
        return false;
    }
    let (vid, et, l3) = ethertype_and_l3(frame);
    if let Some(v) = r.vlan
        && vid != Some(v)
    {
        return false;
    }
    match r.ipv6 {
        Some(false) if et != 0x0800 => return false,
        Some(true) if et != 0x86dd => return false,
        _ => {}
    }
    if let (Some(want), None) = (r.ether_type, r.ipv6)
        && et != want
    {
        return false;
    }
    if let Some(p) = r.ip_proto
        && l4_proto(frame, et, l3) != Some(p)
    {
        return false;
    }
    match r.tcp {
        Some(true) if l4_proto(frame, et, l3) != Some(6) => return false,
        Some(false) if l4_proto(frame, et, l3) != Some(17) => return false,
        _ => {}
    }
    if let Some(port) = r.dst_port {
        // IPv4 without options (IHL 5) or IPv6 without extension headers.
        let l4 = l3 + if et == 0x86dd { 40 } else { 20 };
        if frame.get(l4 + 2..l4 + 4) != Some(&port.to_be_bytes()[..]) {
            return false;
        }
    }
    true
}

fn fake_hash(frame: &[u8]) -> u32 {
    // FNV-1a over the L3/L4 headers: not Toeplitz, but spreads flows.
    let (_, _, l3) = ethertype_and_l3(frame);
    let end = frame.len().min(l3 + 44);
    let mut h: u32 = 0x811c9dc5;
    for b in &frame[l3.min(end)..end] {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h
}

fn deliver(st: &mut State, frame: &[u8]) {
    let best = st
        .flows
        .iter()
        .filter(|(_, f)| rule_matches(&f.rule, frame))
        .min_by_key(|(id, f)| (f.rule.priority, *id))
        .map(|(_, f)| f.qp);
    let Some(qp) = best else {
        st.kernel.push(frame.to_vec());
        return;
    };
    let Some(QpRec::Rss { table, fields }) = st.qps.get(&qp) else {
        st.missed += 1;
        return;
    };
    let fields = *fields;
    let Some(wqs) = st.tables.get(table) else {
        st.missed += 1;
        return;
    };
    let idx = if fields == 0 {
        0
    } else {
        fake_hash(frame) as usize % wqs.len()
    };
    let w = wqs[idx];
    let Some(rec) = st.wqs.get_mut(&w) else {
        st.missed += 1;
        return;
    };
    if rec.state != IBV_WQS_RDY {
        st.missed += 1;
        return;
    }
    let Some((wr_id, sge)) = rec.posted.pop_front() else {
        st.missed += 1;
        return;
    };
    let cq = rec.cq;
    let mut wc = IbvWc {
        wr_id,
        opcode: IBV_WC_RECV,
        qp_num: qp,
        ..Default::default()
    };
    if frame.len() > sge.length as usize {
        // A frame longer than the buffer: the buffer is consumed with a local
        // length error (`cq.c:343-344`); the queue keeps running
        // ([`fatal_to_a_receive_queue`]).
        wc.status = IBV_WC_LOC_LEN_ERR;
    } else {
        // SAFETY: the SGE was checked against a registered region when posted,
        // and the driver keeps the buffer untouched until it polls this
        // completion (the contract of post_recv).
        unsafe {
            ptr::copy_nonoverlapping(frame.as_ptr(), sge.addr as *mut u8, frame.len());
        }
        wc.byte_len = frame.len() as u32;
    }
    st.push_cqe(cq, wc, Src::Recv(w));
}

// ---------------------------------------------------------------------------
// Exported functions

unsafe extern "C" fn f_get_device_list(n: *mut c_int) -> *mut *mut IbvDevice {
    let Some(nic) = CURRENT.with(|c| c.borrow().clone()) else {
        return fail(libc::ENOSYS);
    };
    let mut dev: IbvDevice = zeroed();
    for (i, b) in nic.cfg.ibdev.bytes().take(63).enumerate() {
        dev.name[i] = b as c_char;
    }
    let d = Box::into_raw(Box::new(FakeDevice {
        dev,
        nic: nic.clone(),
    }));
    let list: Box<[*mut IbvDevice]> = vec![d as *mut IbvDevice, ptr::null_mut()].into();
    let list = Box::into_raw(list) as *mut *mut IbvDevice;
    let mut st = nic.st();
    st.devices.push(d as usize);
    st.lists.push(list as usize);
    if !n.is_null() {
        // SAFETY: n is the caller's out-pointer.
        unsafe { *n = 1 };
    }
    list
}

unsafe extern "C" fn f_free_device_list(list: *mut *mut IbvDevice) {
    let Some(nic) = CURRENT.with(|c| c.borrow().clone()) else {
        return;
    };
    let mut st = nic.st();
    if let Some(i) = st.lists.iter().position(|l| *l == list as usize) {
        st.lists.remove(i);
        // SAFETY: list came from f_get_device_list as a 2-element boxed slice.
        drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(list, 2)) });
    }
}

unsafe extern "C" fn f_open_device(dev: *mut IbvDevice) -> *mut IbvContext {
    // SAFETY: dev came from f_get_device_list.
    let nic = unsafe { (*(dev as *mut FakeDevice)).nic.clone() };
    if let Some(e) = nic.cfg.open_errno {
        return fail(e);
    }
    let mut v: VerbsContext = zeroed();
    v.context.device = dev;
    v.context.ops.poll_cq = Some(f_poll_cq);
    v.context.ops.post_send = Some(f_post_send);
    v.context.ops.post_recv = Some(f_qp_post_recv);
    v.context.cmd_fd = -1;
    let efd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::SEMAPHORE
            | rustix::event::EventfdFlags::NONBLOCK
            | rustix::event::EventfdFlags::CLOEXEC,
    )
    .ok();
    v.context.async_fd = efd
        .as_ref()
        .map(std::os::fd::AsRawFd::as_raw_fd)
        .unwrap_or(-1);
    nic.st().async_fd = efd;
    if nic.cfg.extended {
        v.context.abi_compat = usize::MAX as *mut c_void;
        v.sz = size_of::<VerbsContext>();
        v.query_port = Some(f_query_port_ex);
        v.create_wq = Some(f_create_wq);
        v.modify_wq = Some(f_modify_wq);
        v.destroy_wq = Some(f_destroy_wq);
        v.create_rwq_ind_table = Some(f_create_ind_table);
        v.destroy_rwq_ind_table = Some(f_destroy_ind_table);
        v.ibv_create_flow = Some(f_create_flow);
        v.ibv_destroy_flow = Some(f_destroy_flow);
        v.create_qp_ex = Some(f_create_qp_ex);
        v.create_cq_ex = Some(f_create_cq_ex);
        if nic.cfg.thread_domains {
            v.alloc_td = Some(f_alloc_td);
            v.dealloc_td = Some(f_dealloc_td);
            v.alloc_parent_domain = Some(f_alloc_parent_domain);
        }
    }
    nic.st().ctxs += 1;
    let f = Box::into_raw(Box::new(FakeCtx { vctx: v, nic }));
    // SAFETY: f is a live box; we hand out the address of its context field.
    unsafe { ptr::addr_of_mut!((*f).vctx.context) }
}

unsafe extern "C" fn f_close_device(ctx: *mut IbvContext) -> c_int {
    // SAFETY: ctx came from f_open_device.
    let nic = unsafe { nic_of(ctx) };
    nic.st().ctxs -= 1;
    let f = (ctx as *mut u8).wrapping_sub(offset_of!(VerbsContext, context)) as *mut FakeCtx;
    // SAFETY: f is the FakeCtx box f_open_device leaked.
    drop(unsafe { Box::from_raw(f) });
    0
}

unsafe extern "C" fn f_query_device(_ctx: *mut IbvContext, attr: *mut IbvDeviceAttr) -> c_int {
    let mut a: IbvDeviceAttr = zeroed();
    for (i, b) in b"16.35.1012".iter().enumerate() {
        a.fw_ver[i] = *b as c_char;
    }
    a.vendor_id = 0x02c9;
    a.vendor_part_id = 4123;
    a.max_qp_wr = 32768;
    a.max_cqe = 4_194_303;
    a.phys_port_cnt = 1;
    // SAFETY: attr is the caller's out-struct.
    unsafe { *attr = a };
    0
}

fn port_attr(nic: &Nic) -> IbvPortAttr {
    IbvPortAttr {
        state: IBV_PORT_ACTIVE,
        link_layer: nic.cfg.link_layer,
        ..Default::default()
    }
}

unsafe extern "C" fn f_query_port_compat(
    ctx: *mut IbvContext,
    port: u8,
    attr: *mut IbvPortAttr,
) -> c_int {
    // SAFETY: ctx came from f_open_device.
    if port != 1 && Some(port) != unsafe { nic_of(ctx) }.cfg.rdma_port {
        return libc::EINVAL;
    }
    // SAFETY: ctx came from f_open_device; attr is the caller's out-struct.
    unsafe { *attr = port_attr(&nic_of(ctx)) };
    0
}

unsafe extern "C" fn f_query_port_ex(
    ctx: *mut IbvContext,
    port: u8,
    attr: *mut IbvPortAttr,
    len: usize,
) -> c_int {
    // libibverbs takes any length: a caller's shorter struct gets a prefix
    // of the library's (`libibverbs/verbs.c:174-194` __lib_query_port).
    if len >= size_of::<IbvPortAttr>() {
        // SAFETY: as in the compat entry.
        return unsafe { f_query_port_compat(ctx, port, attr) };
    }
    let mut full = IbvPortAttr::default();
    // SAFETY: as in the compat entry, into our own struct.
    let rc = unsafe { f_query_port_compat(ctx, port, &mut full) };
    if rc == 0 {
        // SAFETY: attr has room for len bytes (the caller's contract), fewer
        // than full has.
        unsafe { ptr::copy_nonoverlapping(ptr::addr_of!(full) as *const u8, attr as *mut u8, len) };
    }
    rc
}

unsafe extern "C" fn f_alloc_pd(ctx: *mut IbvContext) -> *mut IbvPd {
    // SAFETY: ctx came from f_open_device.
    let nic = unsafe { nic_of(ctx) };
    let mut st = nic.st();
    st.pds += 1;
    let id = st.id();
    boxed(
        IbvPd {
            context: ctx,
            handle: id,
        },
        id,
    )
}

unsafe extern "C" fn f_dealloc_pd(pd: *mut IbvPd) -> c_int {
    // SAFETY: pd came from f_alloc_pd or f_alloc_parent_domain.
    let (nic, id) = unsafe { (nic_of((*pd).context), id_of(pd)) };
    let mut st = nic.st();
    if let Some(i) = st.parent_pds.iter().position(|(p, _)| *p == id) {
        if st
            .qps
            .values()
            .any(|q| matches!(q, QpRec::Send { parent: Some((p, _)), .. } if *p == id))
        {
            st.ebusy += 1;
            return libc::EBUSY;
        }
        st.parent_pds.remove(i);
        // SAFETY: as above.
        unsafe { unbox(pd) };
        return 0;
    }
    // A parent domain holds a reference on its PD (`verbs.c:556`), which
    // libmlx5 then refuses to free (`_mlx5_free_pd`); the kernel refuses while
    // objects use it.
    if !st.mrs.is_empty() || !st.qps.is_empty() || !st.wqs.is_empty() || !st.parent_pds.is_empty() {
        st.ebusy += 1;
        return libc::EBUSY;
    }
    st.pds -= 1;
    // SAFETY: as above.
    unsafe { unbox(pd) };
    0
}

unsafe extern "C" fn f_reg_mr(
    pd: *mut IbvPd,
    addr: *mut c_void,
    len: usize,
    access: c_int,
) -> *mut IbvMr {
    // SAFETY: pd came from f_alloc_pd.
    let ctx = unsafe { (*pd).context };
    // SAFETY: ctx is one of ours.
    let nic = unsafe { nic_of(ctx) };
    if let Some(e) = nic.cfg.reg_mr_errno {
        return fail(e);
    }
    if access & IBV_ACCESS_LOCAL_WRITE == 0 || addr.is_null() || len == 0 {
        return fail(libc::EINVAL);
    }
    let mut st = nic.st();
    let id = st.id();
    let lkey = 0x1000 + id;
    st.mrs.insert(
        id,
        MrRec {
            access: access as u32,
            lkey,
            start: addr as usize,
            len,
        },
    );
    boxed(
        IbvMr {
            context: ctx,
            pd,
            addr,
            length: len,
            handle: id,
            lkey,
            rkey: lkey,
        },
        id,
    )
}

unsafe extern "C" fn f_reg_mr_iova2(
    pd: *mut IbvPd,
    addr: *mut c_void,
    len: usize,
    iova: u64,
    access: u32,
) -> *mut IbvMr {
    if iova != addr as u64 {
        return fail(libc::EINVAL);
    }
    // SAFETY: the same contract.
    unsafe { f_reg_mr(pd, addr, len, access as c_int) }
}

unsafe extern "C" fn f_dereg_mr(mr: *mut IbvMr) -> c_int {
    // SAFETY: mr came from f_reg_mr.
    let (nic, id) = unsafe { (nic_of((*mr).context), id_of(mr)) };
    nic.st().mrs.remove(&id);
    // SAFETY: as above.
    unsafe { unbox(mr) };
    0
}

unsafe extern "C" fn f_destroy_cq(cq: *mut IbvCq) -> c_int {
    // SAFETY: cq came from f_create_cq_ex (an ibv_cq_ex starts as an ibv_cq).
    let (nic, id) = unsafe { (nic_of((*cq).context), id_of(cq as *mut IbvCqEx)) };
    let mut st = nic.st();
    let used = st.wqs.values().any(|w| w.cq == id)
        || st
            .qps
            .values()
            .any(|q| matches!(q, QpRec::Send { cq, .. } if *cq == id));
    if used {
        st.ebusy += 1;
        return libc::EBUSY;
    }
    st.cqs.remove(&id);
    // SAFETY: as above.
    unsafe { unbox(cq as *mut IbvCqEx) };
    0
}

unsafe extern "C" fn f_create_qp(pd: *mut IbvPd, attr: *mut IbvQpInitAttr) -> *mut IbvQp {
    // SAFETY: pd is ours; attr is the caller's struct.
    let (ctx, a) = unsafe { ((*pd).context, &mut *attr) };
    // SAFETY: ctx is one of ours.
    let nic = unsafe { nic_of(ctx) };
    if let Some(e) = nic.cfg.create_qp_errno {
        return fail(e);
    }
    if a.qp_type != IBV_QPT_RAW_PACKET || a.send_cq.is_null() || a.cap.max_send_wr == 0 {
        return fail(libc::EINVAL);
    }
    // SAFETY: send_cq and pd are ours.
    unsafe { new_send_qp(&nic, ctx, pd, a.send_cq, a.recv_cq, &mut a.cap) }
}

/// A send-only raw packet QP in `pd` (a PD or parent domain), its capacities
/// checked as libmlx5 checks them and `cap.max_inline_data` set to what it
/// granted: what `ibv_create_qp` and `ibv_create_qp_ex` share.
///
/// # Safety
/// `pd` and `send_cq` are ours (made by this library, not freed).
unsafe fn new_send_qp(
    nic: &Nic,
    ctx: *mut IbvContext,
    pd: *mut IbvPd,
    send_cq: *mut IbvCq,
    recv_cq: *mut IbvCq,
    cap: &mut IbvQpCap,
) -> *mut IbvQp {
    let Some(granted) = send_queue_fits(cap, nic.cfg.max_sq_desc_sz) else {
        return fail(libc::EINVAL);
    };
    cap.max_inline_data = granted;
    // SAFETY: the caller's contract.
    let (cq, pd_id) = unsafe { (id_of(send_cq as *mut IbvCqEx), id_of(pd)) };
    let mut st = nic.st();
    let id = st.id();
    let (doorbell, parent) = st.doorbell_in(pd_id);
    st.qps.insert(
        id,
        QpRec::Send {
            cq,
            cap: *cap,
            state: IBV_QPS_RESET,
            posted: 0,
            done: 0,
            doorbell,
            parent,
        },
    );
    let mut qp: IbvQp = zeroed();
    qp.context = ctx;
    qp.pd = pd;
    qp.send_cq = send_cq;
    qp.recv_cq = recv_cq;
    qp.qp_num = id;
    qp.qp_type = IBV_QPT_RAW_PACKET;
    boxed(qp, id)
}

/// libmlx5's send queue sizing for a raw packet QP with one gather entry, and
/// the inline size it grants (`None`: EINVAL). A WQE is the overhead of a raw
/// packet send, the control segment (16 bytes) and the Ethernet segment (32),
/// (`verbs.c:1486-1554` _sq_overhead), plus a data pointer (16) or the inline
/// data behind its 4-byte header rounded to 16 (`verbs.c:1607-1643`
/// mlx5_calc_send_wqe), at most `max_sq_desc_sz` bytes, in 64-byte blocks;
/// the queue is the next power of two of `max_send_wr` WQEs and may have at
/// most `max_send_wqebb` (here 32768) blocks; the inline size granted is what
/// the WQE leaves after the overhead and the inline header (`verbs.c:1668-1716`
/// mlx5_calc_sq_size).
fn send_queue_fits(cap: &IbvQpCap, max_sq_desc_sz: u32) -> Option<u32> {
    const OVERHEAD: u64 = 16 + 32;
    const INLINE_HEADER: u64 = 4;
    let max_desc = max_sq_desc_sz as u64;
    let inline = if cap.max_inline_data > 0 {
        OVERHEAD + (INLINE_HEADER + cap.max_inline_data as u64).div_ceil(16) * 16
    } else {
        0
    };
    let data = OVERHEAD + 16 * cap.max_send_sge as u64;
    let wqe = data.max(inline);
    if wqe > max_desc || cap.max_send_wr as u64 > 0x7fff_ffff / max_desc {
        return None;
    }
    let wqe = wqe.div_ceil(64) * 64;
    let bytes = (cap.max_send_wr as u64 * wqe).next_power_of_two();
    (bytes / 64 <= 32768).then_some((wqe - OVERHEAD - INLINE_HEADER) as u32)
}

unsafe extern "C" fn f_modify_qp(qp: *mut IbvQp, attr: *mut IbvQpAttr, mask: c_int) -> c_int {
    // SAFETY: qp is ours; attr is the caller's struct.
    let (nic, id, a) = unsafe { (nic_of((*qp).context), id_of(qp), &*attr) };
    let mut st = nic.st();
    let Some(rec) = st.qps.get_mut(&id) else {
        return libc::EINVAL;
    };
    let QpRec::Send {
        cq,
        state,
        posted,
        done,
        ..
    } = rec
    else {
        // mlx5 refuses to modify an RSS QP.
        return libc::ENOSYS;
    };
    if mask & IBV_QP_STATE == 0 {
        return libc::EINVAL;
    }
    let ok = match (*state, a.qp_state) {
        (_, IBV_QPS_RESET) => true,
        (IBV_QPS_RESET, IBV_QPS_INIT) => {
            mask & IBV_QP_PORT != 0 && (a.port_num == 1 || Some(a.port_num) == nic.cfg.rdma_port)
        }
        (IBV_QPS_INIT, IBV_QPS_RTR) | (IBV_QPS_RTR, IBV_QPS_RTS) => true,
        (_, IBV_QPS_ERR) => true,
        _ => false,
    };
    if !ok {
        return libc::EINVAL;
    }
    *state = a.qp_state;
    let cq = *cq;
    if a.qp_state == IBV_QPS_RESET {
        *posted = 0;
        *done = 0;
        // libmlx5 drops the QP's completions from its CQs when it goes to
        // RESET (`verbs.c:3139-3148` mlx5_modify_qp).
        if let Some(c) = st.cqs.get_mut(&cq) {
            c.entries
                .retain(|(_, s)| !matches!(s, Src::Send(q, _) if *q == id));
        }
    }
    // SAFETY: qp is ours.
    unsafe { (*qp).state = a.qp_state };
    0
}

unsafe extern "C" fn f_destroy_qp(qp: *mut IbvQp) -> c_int {
    // SAFETY: qp is ours.
    let (nic, id) = unsafe { (nic_of((*qp).context), id_of(qp)) };
    let mut st = nic.st();
    if st.flows.iter().any(|(_, f)| f.qp == id) {
        st.ebusy += 1;
        return libc::EBUSY;
    }
    if let Some(QpRec::Send {
        doorbell, parent, ..
    }) = st.qps.remove(&id)
    {
        st.release_doorbell(doorbell, parent.is_some_and(|(_, td)| td != 0));
    }
    // SAFETY: as above.
    unsafe { unbox(qp) };
    0
}

// ---------------------------------------------------------------------------
// Extension ops

unsafe extern "C" fn f_create_qp_ex(
    ctx: *mut IbvContext,
    attr: *mut IbvQpInitAttrEx,
) -> *mut IbvQp {
    // SAFETY: ctx is ours; attr is the caller's struct.
    let (nic, a) = unsafe { (nic_of(ctx), &*attr) };
    if let Some(e) = nic.cfg.create_qp_errno {
        return fail(e);
    }
    if a.comp_mask == IBV_QP_INIT_ATTR_PD {
        // SAFETY: as above.
        return unsafe { create_send_qp_ex(&nic, ctx, attr) };
    }
    let want = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_IND_TABLE | IBV_QP_INIT_ATTR_RX_HASH;
    let h = &a.rx_hash_conf;
    if a.qp_type != IBV_QPT_RAW_PACKET
        || a.comp_mask != want
        || !a.send_cq.is_null()
        || a.rwq_ind_tbl.is_null()
        || h.rx_hash_function != IBV_RX_HASH_FUNC_TOEPLITZ
        || h.rx_hash_key_len != 40
        || h.rx_hash_key.is_null()
    {
        return fail(libc::EINVAL);
    }
    // SAFETY: the table is ours.
    let table = unsafe { id_of(a.rwq_ind_tbl) };
    let mut st = nic.st();
    let Some(wqs) = st.tables.get(&table) else {
        return fail(libc::EINVAL);
    };
    // The kernel (mlx5_ib create_rss_raw_qp_tir) accepts no hash fields only
    // for a one-entry table.
    if h.rx_hash_fields_mask == 0 && wqs.len() != 1 {
        return fail(libc::EINVAL);
    }
    let id = st.id();
    st.qps.insert(
        id,
        QpRec::Rss {
            table,
            fields: h.rx_hash_fields_mask,
        },
    );
    let mut qp: IbvQp = zeroed();
    qp.context = ctx;
    qp.pd = a.pd;
    qp.qp_num = id;
    qp.qp_type = IBV_QPT_RAW_PACKET;
    boxed(qp, id)
}

/// A send-only raw packet QP through `ibv_create_qp_ex`, in the PD (or parent
/// domain) the attributes name.
///
/// # Safety
/// `attr` is the caller's valid struct; its PD and CQ are ours.
unsafe fn create_send_qp_ex(
    nic: &Nic,
    ctx: *mut IbvContext,
    attr: *mut IbvQpInitAttrEx,
) -> *mut IbvQp {
    // SAFETY: the caller's contract.
    let a = unsafe { &mut *attr };
    if a.qp_type != IBV_QPT_RAW_PACKET || a.send_cq.is_null() || a.pd.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: the caller's contract: the PD and the send CQ are ours.
    unsafe { new_send_qp(nic, ctx, a.pd, a.send_cq, a.recv_cq, &mut a.cap) }
}

unsafe extern "C" fn f_create_cq_ex(
    ctx: *mut IbvContext,
    attr: *mut IbvCqInitAttrEx,
) -> *mut IbvCqEx {
    // SAFETY: ctx is ours; attr is the caller's struct.
    let (nic, a) = unsafe { (nic_of(ctx), &*attr) };
    // libmlx5's checks, in its order (`verbs.c:979-1031` create_cq).
    if a.cqe < 1 || a.comp_mask & !(IBV_CQ_INIT_ATTR_MASK_FLAGS | IBV_CQ_INIT_ATTR_MASK_PD) != 0 {
        return fail(libc::EINVAL);
    }
    if a.comp_mask & IBV_CQ_INIT_ATTR_MASK_FLAGS != 0
        && a.flags & !(IBV_CREATE_CQ_ATTR_SINGLE_THREADED | IBV_CREATE_CQ_ATTR_IGNORE_OVERRUN) != 0
    {
        return fail(libc::EINVAL);
    }
    if a.wc_flags & !IBV_CREATE_CQ_SUP_WC_FLAGS != 0 {
        return fail(libc::EOPNOTSUPP);
    }
    let flags = if a.comp_mask & IBV_CQ_INIT_ATTR_MASK_FLAGS != 0 {
        a.flags
    } else {
        0
    };
    let mut st = nic.st();
    if a.comp_mask & IBV_CQ_INIT_ATTR_MASK_PD != 0 {
        // SAFETY: a parent domain, if set, is one of ours.
        let pd = (!a.parent_domain.is_null()).then(|| unsafe { id_of(a.parent_domain) });
        if !pd.is_some_and(|pd| st.parent_pds.iter().any(|(p, _)| *p == pd)) {
            return fail(libc::EINVAL);
        }
    }
    let id = st.id();
    st.cqs.insert(
        id,
        CqRec {
            cap: a.cqe as usize,
            entries: VecDeque::new(),
            current: None,
            flags,
        },
    );
    let mut cq: IbvCqEx = zeroed();
    cq.context = ctx;
    cq.handle = id;
    cq.cqe = a.cqe as c_int;
    cq.start_poll = Some(f_start_poll);
    cq.next_poll = Some(f_next_poll);
    cq.end_poll = Some(f_end_poll);
    // The byte count only if asked for; the flags always (`cq.c:1688-1692`).
    if a.wc_flags & IBV_WC_EX_WITH_BYTE_LEN != 0 {
        cq.read_byte_len = Some(f_read_byte_len);
    }
    cq.read_wc_flags = Some(f_read_wc_flags);
    boxed(cq, id)
}

/// Move the CQ to its next completion (what start_poll and next_poll do).
///
/// # Safety
/// `cq` is one of ours.
unsafe fn advance(cq: *mut IbvCqEx) -> c_int {
    // SAFETY: the caller's contract.
    let (nic, id) = unsafe { (nic_of((*cq).context), id_of(cq)) };
    let mut st = nic.st();
    let Some(c) = st.cqs.get_mut(&id) else {
        return libc::EINVAL;
    };
    let Some((wc, src)) = c.entries.pop_front() else {
        c.current = None;
        return libc::ENOENT;
    };
    c.current = Some(wc);
    // Polling a send completion frees its slots of the send queue.
    if let Src::Send(q, seq) = src
        && let Some(QpRec::Send { done, .. }) = st.qps.get_mut(&q)
    {
        *done = (*done).max(seq + 1);
    }
    // SAFETY: the caller's contract.
    unsafe {
        (*cq).wr_id = wc.wr_id;
        (*cq).status = wc.status;
    }
    0
}

unsafe extern "C" fn f_start_poll(cq: *mut IbvCqEx, attr: *mut IbvPollCqAttr) -> c_int {
    // SAFETY: attr is the caller's struct.
    if unsafe { (*attr).comp_mask } != 0 {
        return libc::EINVAL;
    }
    {
        // SAFETY: cq is ours.
        let (nic, id) = unsafe { (nic_of((*cq).context), id_of(cq)) };
        let mut st = nic.st();
        if st
            .cqs
            .get(&id)
            .is_some_and(|c| !c.lock_free_extended_poll())
        {
            st.locking_polls += 1;
        }
        if std::mem::take(&mut st.fail_next_poll) {
            return CQ_POLL_ERR;
        }
    }
    // SAFETY: cq is ours.
    unsafe { advance(cq) }
}

unsafe extern "C" fn f_next_poll(cq: *mut IbvCqEx) -> c_int {
    // SAFETY: cq is ours.
    unsafe { advance(cq) }
}

unsafe extern "C" fn f_end_poll(_cq: *mut IbvCqEx) {}

/// The current completion of a CQ.
///
/// # Safety
/// `cq` is one of ours.
unsafe fn current(cq: *mut IbvCqEx) -> IbvWc {
    // SAFETY: the caller's contract.
    let (nic, id) = unsafe { (nic_of((*cq).context), id_of(cq)) };
    let st = nic.st();
    st.cqs.get(&id).and_then(|c| c.current).unwrap_or_default()
}

unsafe extern "C" fn f_read_byte_len(cq: *mut IbvCqEx) -> u32 {
    // SAFETY: cq is ours.
    unsafe { current(cq) }.byte_len
}

unsafe extern "C" fn f_read_wc_flags(cq: *mut IbvCqEx) -> u32 {
    // SAFETY: cq is ours.
    unsafe { current(cq) }.wc_flags
}

unsafe extern "C" fn f_alloc_td(ctx: *mut IbvContext, attr: *mut IbvTdInitAttr) -> *mut IbvTd {
    // SAFETY: ctx is ours; attr is the caller's struct.
    let (nic, a) = unsafe { (nic_of(ctx), &*attr) };
    if a.comp_mask != 0 {
        return fail(libc::EINVAL);
    }
    let mut st = nic.st();
    let id = st.id();
    let doorbell = st.fresh_doorbell();
    st.tds.push((id, doorbell));
    boxed(IbvTd { context: ctx }, id)
}

unsafe extern "C" fn f_dealloc_td(td: *mut IbvTd) -> c_int {
    // SAFETY: td is ours.
    let (nic, id) = unsafe { (nic_of((*td).context), id_of(td)) };
    let mut st = nic.st();
    if st.parent_pds.iter().any(|(_, t)| *t == id) {
        st.ebusy += 1;
        return libc::EBUSY;
    }
    st.tds.retain(|(t, _)| *t != id);
    // SAFETY: as above.
    unsafe { unbox(td) };
    0
}

unsafe extern "C" fn f_alloc_parent_domain(
    ctx: *mut IbvContext,
    attr: *mut IbvParentDomainInitAttr,
) -> *mut IbvPd {
    // SAFETY: ctx is ours; attr is the caller's struct.
    let (nic, a) = unsafe { (nic_of(ctx), &*attr) };
    // `driver.h:738-747` ibv_check_alloc_parent_domain, `verbs.c:533-541`.
    let known = IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS | IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT;
    if a.pd.is_null() || a.comp_mask & !known != 0 {
        return fail(libc::EINVAL);
    }
    let td = if a.td.is_null() {
        0
    } else {
        // SAFETY: the TD, if any, is ours.
        unsafe { id_of(a.td) }
    };
    let mut st = nic.st();
    if td != 0 && !st.tds.iter().any(|(t, _)| *t == td) {
        return fail(libc::EINVAL);
    }
    let id = st.id();
    st.parent_pds.push((id, td));
    boxed(
        IbvPd {
            context: ctx,
            handle: id,
        },
        id,
    )
}

unsafe extern "C" fn f_get_async_event(ctx: *mut IbvContext, ev: *mut IbvAsyncEvent) -> c_int {
    // SAFETY: ctx is ours.
    let nic = unsafe { nic_of(ctx) };
    let mut st = nic.st();
    // libibverbs reads the descriptor and passes read(2)'s errno on
    // (`libibverbs/device.c` ibv_get_async_event); the kernel answers an
    // empty queue as `uverbs_main.c:237-245` does, or did before 62fab312fa16.
    let Some(kind) = st.async_events.pop_front() else {
        st.empty_async_reads += 1;
        let closed_errno = match nic.cfg.event_queue_on_removal {
            EventQueueOnRemoval::Closes => libc::EIO,
            _ => libc::EAGAIN,
        };
        set_errno(if st.event_queue_closed {
            closed_errno
        } else {
            libc::EAGAIN
        });
        return -1;
    };
    if let Some(fd) = &st.async_fd {
        let mut b = [0u8; 8];
        let _ = rustix::io::read(fd, &mut b);
    }
    st.close_drained_event_queue();
    // SAFETY: ev is the caller's out-struct.
    unsafe {
        (*ev).event_type = kind;
        (*ev).element = std::ptr::dangling_mut::<c_void>();
    }
    0
}

unsafe extern "C" fn f_ack_async_event(_ev: *mut IbvAsyncEvent) {}

unsafe extern "C" fn f_create_wq(ctx: *mut IbvContext, attr: *mut IbvWqInitAttr) -> *mut IbvWq {
    // SAFETY: ctx is ours; attr is the caller's struct.
    let (nic, a) = unsafe { (nic_of(ctx), &*attr) };
    if a.wq_type != IBV_WQT_RQ || a.max_sge != 1 || a.max_wr == 0 || a.cq.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: the CQ is ours (an ibv_cq_ex).
    let cq = unsafe { id_of(a.cq as *mut IbvCqEx) };
    let mut st = nic.st();
    let id = st.id();
    st.wqs.insert(
        id,
        WqRec {
            cq,
            state: IBV_WQS_RESET,
            max_wr: a.max_wr as usize,
            posted: VecDeque::new(),
        },
    );
    st.wq_order.push(id);
    let mut wq: IbvWq = zeroed();
    wq.context = ctx;
    wq.pd = a.pd;
    wq.cq = a.cq;
    wq.wq_num = id;
    wq.wq_type = IBV_WQT_RQ;
    wq.post_recv = Some(f_wq_post_recv);
    boxed(wq, id)
}

unsafe extern "C" fn f_modify_wq(wq: *mut IbvWq, attr: *mut IbvWqAttr) -> c_int {
    // SAFETY: wq is ours; attr is the caller's struct.
    let (nic, id, a) = unsafe { (nic_of((*wq).context), id_of(wq), &*attr) };
    if a.attr_mask & IBV_WQ_ATTR_STATE == 0 {
        return libc::EINVAL;
    }
    let mut st = nic.st();
    let Some(rec) = st.wqs.get_mut(&id) else {
        return libc::EINVAL;
    };
    let ok = matches!(
        (rec.state, a.wq_state),
        (_, IBV_WQS_RESET) | (IBV_WQS_RESET, IBV_WQS_RDY) | (_, IBV_WQS_ERR)
    );
    if !ok {
        return libc::EINVAL;
    }
    let from = std::mem::replace(&mut rec.state, a.wq_state);
    // In RESET the device owns no receive buffer. Leaving RESET for RDY,
    // libmlx5 drops the WQ's completions from its CQ and starts its ring
    // afresh, so what was posted while in RESET is forgotten too
    // (`verbs.c:4441-4464` mlx5_modify_wq, mlx5_init_rwq_indices).
    if a.wq_state == IBV_WQS_RESET {
        rec.posted.clear();
    }
    if from == IBV_WQS_RESET && a.wq_state == IBV_WQS_RDY {
        rec.posted.clear();
        let cq = rec.cq;
        if let Some(c) = st.cqs.get_mut(&cq) {
            c.entries
                .retain(|(_, s)| !matches!(s, Src::Recv(w) if *w == id));
        }
    }
    // SAFETY: wq is ours.
    unsafe { (*wq).state = a.wq_state };
    0
}

unsafe extern "C" fn f_destroy_wq(wq: *mut IbvWq) -> c_int {
    // SAFETY: wq is ours.
    let (nic, id) = unsafe { (nic_of((*wq).context), id_of(wq)) };
    let mut st = nic.st();
    if st.tables.values().any(|t| t.contains(&id)) {
        st.ebusy += 1;
        return libc::EBUSY;
    }
    st.wqs.remove(&id);
    // SAFETY: as above.
    unsafe {
        libc::pthread_mutex_destroy(ptr::addr_of_mut!((*wq).mutex));
        libc::pthread_cond_destroy(ptr::addr_of_mut!((*wq).cond));
        unbox(wq)
    };
    0
}

unsafe extern "C" fn f_create_ind_table(
    ctx: *mut IbvContext,
    attr: *mut IbvRwqIndTableInitAttr,
) -> *mut IbvRwqIndTable {
    // SAFETY: ctx is ours; attr is the caller's struct.
    let (nic, a) = unsafe { (nic_of(ctx), &*attr) };
    if a.log_ind_tbl_size > 16 || a.ind_tbl.is_null() {
        return fail(libc::EINVAL);
    }
    let n = 1usize << a.log_ind_tbl_size;
    // SAFETY: the table has 2^log entries (the verb's contract), each one ours.
    let wqs: Vec<u32> = (0..n)
        .map(|i| unsafe { id_of(*a.ind_tbl.add(i)) })
        .collect();
    let mut st = nic.st();
    if wqs.iter().any(|w| !st.wqs.contains_key(w)) {
        return fail(libc::EINVAL);
    }
    let id = st.id();
    st.tables.insert(id, wqs);
    let mut t: IbvRwqIndTable = zeroed();
    t.context = ctx;
    t.ind_tbl_handle = id as c_int;
    t.ind_tbl_num = id as c_int;
    boxed(t, id)
}

unsafe extern "C" fn f_destroy_ind_table(t: *mut IbvRwqIndTable) -> c_int {
    // SAFETY: t is ours.
    let (nic, id) = unsafe { (nic_of((*t).context), id_of(t)) };
    let mut st = nic.st();
    if st
        .qps
        .values()
        .any(|q| matches!(q, QpRec::Rss { table, .. } if *table == id))
    {
        st.ebusy += 1;
        return libc::EBUSY;
    }
    st.tables.remove(&id);
    // SAFETY: as above.
    unsafe { unbox(t) };
    0
}

/// Decode an `ibv_flow_attr` + specs buffer the way the kernel parses it.
///
/// # Safety
/// `attr` points to at least `attr.size` readable bytes.
unsafe fn decode_flow(attr: *const IbvFlowAttr) -> Option<FlowRule> {
    // SAFETY: the caller's contract covers the header.
    let a = unsafe { ptr::read_unaligned(attr) };
    if a.type_ != IBV_FLOW_ATTR_NORMAL || a.comp_mask != 0 || a.flags != 0 {
        return None;
    }
    let total = a.size as usize;
    // SAFETY: the caller's contract: total bytes are readable.
    let b = unsafe { std::slice::from_raw_parts(attr as *const u8, total) };
    let u16_at = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut rule = FlowRule {
        priority: a.priority,
        port: a.port,
        ..FlowRule::default()
    };
    let mut at = size_of::<IbvFlowAttr>();
    for _ in 0..a.num_of_specs {
        if at + 8 > total {
            return None;
        }
        let ty = u32_at(at);
        let size = u16_at(at + 4) as usize;
        if size == 0 || at + size > total {
            return None;
        }
        match ty {
            IBV_FLOW_SPEC_ETH if size == size_of::<IbvFlowSpecEth>() => {
                let val = at + offset_of!(IbvFlowSpecEth, val);
                let mask = at + offset_of!(IbvFlowSpecEth, mask);
                let d = offset_of!(IbvFlowEthFilter, dst_mac);
                let m: [u8; 6] = b[mask + d..mask + d + 6].try_into().ok()?;
                if m == [0xff; 6] {
                    rule.dst_mac = Some(b[val + d..val + d + 6].try_into().ok()?);
                } else if m != [0; 6] {
                    return None;
                }
                let v = offset_of!(IbvFlowEthFilter, vlan_tag);
                let vmask = u16::from_be(u16_at(mask + v));
                if vmask == 0x0fff {
                    rule.vlan = Some(u16::from_be(u16_at(val + v)));
                } else if vmask != 0 {
                    return None;
                }
                let t = offset_of!(IbvFlowEthFilter, ether_type);
                match u16::from_be(u16_at(mask + t)) {
                    0xffff => rule.ether_type = Some(u16::from_be(u16_at(val + t))),
                    0 => {}
                    // The kernel takes only a full EtherType mask (fs.c
                    // is_valid_ethertype).
                    _ => return None,
                }
            }
            IBV_FLOW_SPEC_IPV4 if size == size_of::<IbvFlowSpecIpv4>() => rule.ipv6 = Some(false),
            IBV_FLOW_SPEC_IPV4_EXT if size == size_of::<IbvFlowSpecIpv4Ext>() => {
                rule.ipv6 = Some(false);
                let p = offset_of!(IbvFlowIpv4ExtFilter, proto);
                match b[at + offset_of!(IbvFlowSpecIpv4Ext, mask) + p] {
                    0xff => rule.ip_proto = Some(b[at + offset_of!(IbvFlowSpecIpv4Ext, val) + p]),
                    0 => {}
                    _ => return None,
                }
            }
            IBV_FLOW_SPEC_IPV6 if size == size_of::<IbvFlowSpecIpv6>() => {
                rule.ipv6 = Some(true);
                let p = offset_of!(IbvFlowIpv6Filter, next_hdr);
                match b[at + offset_of!(IbvFlowSpecIpv6, mask) + p] {
                    0xff => rule.ip_proto = Some(b[at + offset_of!(IbvFlowSpecIpv6, val) + p]),
                    0 => {}
                    _ => return None,
                }
            }
            IBV_FLOW_SPEC_TCP | IBV_FLOW_SPEC_UDP if size == size_of::<IbvFlowSpecTcpUdp>() => {
                rule.tcp = Some(ty == IBV_FLOW_SPEC_TCP);
                let d = offset_of!(IbvFlowTcpUdpFilter, dst_port);
                match u16::from_be(u16_at(at + offset_of!(IbvFlowSpecTcpUdp, mask) + d)) {
                    0xffff => {
                        rule.dst_port = Some(u16::from_be(u16_at(
                            at + offset_of!(IbvFlowSpecTcpUdp, val) + d,
                        )))
                    }
                    0 => {}
                    _ => return None,
                }
            }
            _ => return None,
        }
        at += size;
    }
    (at == total).then_some(rule)
}

unsafe extern "C" fn f_create_flow(qp: *mut IbvQp, attr: *mut IbvFlowAttr) -> *mut IbvFlow {
    // SAFETY: qp is ours.
    let (ctx, qid) = unsafe { ((*qp).context, id_of(qp)) };
    // SAFETY: ctx is ours.
    let nic = unsafe { nic_of(ctx) };
    if let Some(e) = nic.cfg.create_flow_errno {
        return fail(e);
    }
    // SAFETY: the verb's contract: attr is followed by its specs.
    let Some(rule) = (unsafe { decode_flow(attr) }) else {
        return fail(libc::EINVAL);
    };
    if rule.port != 1 && Some(rule.port) != nic.cfg.rdma_port {
        return fail(libc::EINVAL);
    }
    let mut st = nic.st();
    if !matches!(st.qps.get(&qid), Some(QpRec::Rss { .. })) {
        return fail(libc::EINVAL);
    }
    let id = st.id();
    st.flows.push((id, FlowRec { qp: qid, rule }));
    boxed(
        IbvFlow {
            comp_mask: 0,
            context: ctx,
            handle: id,
        },
        id,
    )
}

unsafe extern "C" fn f_destroy_flow(flow: *mut IbvFlow) -> c_int {
    // SAFETY: flow is ours.
    let (nic, id) = unsafe { (nic_of((*flow).context), id_of(flow)) };
    nic.st().flows.retain(|(i, _)| *i != id);
    // SAFETY: as above.
    unsafe { unbox(flow) };
    0
}

// ---------------------------------------------------------------------------
// The fast path

unsafe extern "C" fn f_poll_cq(cq: *mut IbvCq, n: c_int, wc: *mut IbvWc) -> c_int {
    // SAFETY: cq is ours.
    let (nic, id) = unsafe { (nic_of((*cq).context), id_of(cq as *mut IbvCqEx)) };
    let mut st = nic.st();
    st.locking_polls += 1;
    let mut got = 0usize;
    let mut done: Vec<(u32, u64)> = Vec::new();
    if let Some(c) = st.cqs.get_mut(&id) {
        while got < n.max(0) as usize {
            let Some((w, src)) = c.entries.pop_front() else {
                break;
            };
            // SAFETY: wc has room for n entries (the verb's contract).
            unsafe { *wc.add(got) = w };
            got += 1;
            if let Src::Send(q, seq) = src {
                done.push((q, seq));
            }
        }
    }
    // Polling a send completion frees its slots of the send queue.
    for (q, seq) in done {
        if let Some(QpRec::Send { done, .. }) = st.qps.get_mut(&q) {
            *done = (*done).max(seq + 1);
        }
    }
    got as c_int
}

unsafe extern "C" fn f_qp_post_recv(
    _qp: *mut IbvQp,
    wr: *mut IbvRecvWr,
    bad: *mut *mut IbvRecvWr,
) -> c_int {
    // Our QPs have no receive queue (receive goes through WQs).
    // SAFETY: bad is the caller's out-pointer.
    unsafe { *bad = wr };
    libc::EINVAL
}

unsafe extern "C" fn f_wq_post_recv(
    wq: *mut IbvWq,
    mut wr: *mut IbvRecvWr,
    bad: *mut *mut IbvRecvWr,
) -> c_int {
    // SAFETY: wq is ours.
    let (nic, id) = unsafe { (nic_of((*wq).context), id_of(wq)) };
    let mut st = nic.st();
    while !wr.is_null() {
        // SAFETY: the chain is the caller's (the verb's contract).
        let r = unsafe { *wr };
        let err = if r.num_sge != 1 || r.sg_list.is_null() {
            libc::EINVAL
        } else {
            // SAFETY: as above.
            let sge = unsafe { *r.sg_list };
            if !st.mr_ok(&sge) {
                st.bad_sge += 1;
                libc::EINVAL
            } else {
                // libmlx5 posts in any state (the device takes the buffers
                // once the WQ is ready) and refuses only a full ring
                // (`qp.c:3753-3824` mlx5_post_wq_recv).
                match st.wqs.get_mut(&id) {
                    Some(rec) if rec.posted.len() >= rec.max_wr => libc::ENOMEM,
                    Some(rec) => {
                        rec.posted.push_back((r.wr_id, sge));
                        0
                    }
                    None => libc::EINVAL,
                }
            }
        };
        if err != 0 {
            // SAFETY: bad is the caller's out-pointer.
            unsafe { *bad = wr };
            return err;
        }
        wr = r.next;
    }
    0
}

unsafe extern "C" fn f_post_send(
    qp: *mut IbvQp,
    mut wr: *mut IbvSendWr,
    bad: *mut *mut IbvSendWr,
) -> c_int {
    // SAFETY: qp is ours.
    let (nic, id) = unsafe { (nic_of((*qp).context), id_of(qp)) };
    let loopback = nic.cfg.loopback;
    let mut st = nic.st();
    while !wr.is_null() {
        // SAFETY: the chain is the caller's (the verb's contract).
        let r = unsafe { *wr };
        let Some(QpRec::Send {
            cq,
            cap,
            state,
            posted,
            done,
            ..
        }) = st.qps.get(&id)
        else {
            // SAFETY: bad is the caller's out-pointer.
            unsafe { *bad = wr };
            return libc::EINVAL;
        };
        let (cq, cap, state, posted, done) = (*cq, *cap, *state, *posted, *done);
        let refuse = |e: i32| {
            // SAFETY: bad is the caller's out-pointer.
            unsafe { *bad = wr };
            e
        };
        if state != IBV_QPS_RTS && state != IBV_QPS_ERR {
            return refuse(libc::EINVAL);
        }
        if posted - done >= cap.max_send_wr as u64 {
            st.sq_overflows += 1;
            return refuse(libc::ENOMEM);
        }
        if r.num_sge != 1 || r.sg_list.is_null() || r.opcode != IBV_WR_SEND {
            return refuse(libc::EINVAL);
        }
        // SAFETY: as above.
        let sge = unsafe { *r.sg_list };
        let inline = r.send_flags & IBV_SEND_INLINE != 0;
        if inline && sge.length > cap.max_inline_data {
            return refuse(libc::EINVAL);
        }
        if nic.cfg.refuse_send_len == Some(sge.length) {
            return refuse(libc::EINVAL);
        }
        // A QP in error flushes what is posted; an lkey that does not cover
        // the buffer is a local protection error (statuses as libmlx5 maps
        // the syndromes, `cq.c:340-371`).
        let mut status = IBV_WC_SUCCESS;
        if state == IBV_QPS_ERR {
            status = IBV_WC_WR_FLUSH_ERR;
        } else if !inline && !st.mr_ok(&sge) {
            status = IBV_WC_LOC_PROT_ERR;
        } else if let Some(s) = st.fail_next_send.take() {
            status = s;
        }
        let seq = posted;
        if let Some(QpRec::Send { posted, state, .. }) = st.qps.get_mut(&id) {
            *posted += 1;
            if status != IBV_WC_SUCCESS {
                *state = IBV_QPS_ERR;
            }
        }
        if status == IBV_WC_SUCCESS {
            // SAFETY: inline: the caller's buffer, valid during the call;
            // otherwise checked against a registered region above and kept
            // alive by the driver until the completion.
            let frame =
                unsafe { std::slice::from_raw_parts(sge.addr as *const u8, sge.length as usize) }
                    .to_vec();
            st.sent.push(frame.clone());
            if loopback {
                deliver(&mut st, &frame);
            }
        }
        // Errors complete whether signalled or not.
        if r.send_flags & IBV_SEND_SIGNALED != 0 || status != IBV_WC_SUCCESS {
            let wc = IbvWc {
                wr_id: r.wr_id,
                status,
                opcode: IBV_WC_SEND,
                qp_num: id,
                ..Default::default()
            };
            st.push_cqe(cq, wc, Src::Send(id, seq));
        }
        wr = r.next;
    }
    0
}
