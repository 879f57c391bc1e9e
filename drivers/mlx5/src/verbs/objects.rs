//! Owning handles of the verbs objects (memory region, CQ, WQ, indirection
//! table, QP, flow rule): each destroys its object when dropped, and holds an
//! `Arc` on what its object depends on, so destruction happens in the order
//! the kernel requires.

use std::ffi::c_int;
use std::io;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use nicpoll::mempool::Mempool;

use super::context::{Context, eopnotsupp};
use super::ffi::*;
use super::library::{log_failed_destroy, rc_to_result};

/// A registered memory region covering one mempool.
pub struct Mr {
    pub(super) ctx: Arc<Context>,
    pub(super) mr: NonNull<IbvMr>,
    /// The local key every SGE into this memory carries.
    pub lkey: u32,
    /// First byte.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
    pub(super) _pool: Mempool,
}

// SAFETY: see Context; an MR is immutable once registered.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl Mr {
    /// Whether `[addr, addr+len)` lies inside the region.
    #[inline(always)]
    pub fn covers(&self, addr: usize, len: usize) -> bool {
        addr >= self.start && addr + len <= self.start + self.len
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        let _guard = self.ctx.destroy_guard();
        // SAFETY: every WQ/QP that used this MR was reset or destroyed before its
        // holder released its Arc on us.
        let rc = unsafe { (self.ctx.fns().dereg_mr)(self.mr.as_ptr()) };
        log_failed_destroy(&self.ctx.name, "ibv_dereg_mr", rc);
    }
}

/// A thread domain with the parent domain that carries it (see
/// [`Context::alloc_thread_domain`]).
pub struct ThreadDomain {
    pub(super) ctx: Arc<Context>,
    pub(super) td: NonNull<IbvTd>,
    pub(super) pd: Option<NonNull<IbvPd>>,
}

// SAFETY: see Context; the domain is only referenced by the QPs created in it.
unsafe impl Send for ThreadDomain {}
// SAFETY: as above.
unsafe impl Sync for ThreadDomain {}

impl Drop for ThreadDomain {
    fn drop(&mut self) {
        let _guard = self.ctx.destroy_guard();
        if let Some(pd) = self.pd {
            // SAFETY: every QP in this parent domain holds an Arc on us, so none
            // is left; ibv_dealloc_pd frees parent domains too.
            let rc = unsafe { (self.ctx.fns().dealloc_pd)(pd.as_ptr()) };
            log_failed_destroy(&self.ctx.name, "ibv_dealloc_pd(parent domain)", rc);
        }
        let ctx = self.ctx.ctx.as_ptr();
        let rc = match vctx_op!(ctx, dealloc_td) {
            // SAFETY: the parent domain that referred to it is gone.
            Some(op) => unsafe { op(self.td.as_ptr()) },
            None => libc::EOPNOTSUPP,
        };
        log_failed_destroy(&self.ctx.name, "ibv_dealloc_td", rc);
    }
}

/// The extended poll functions of a CQ (copied once from its `ibv_cq_ex`).
#[derive(Clone, Copy)]
pub(super) struct PollFns {
    pub(super) start: StartPollFn,
    pub(super) next: NextPollFn,
    pub(super) end: EndPollFn,
    pub(super) byte_len: ReadU32Fn,
    pub(super) wc_flags: ReadU32Fn,
}

/// A completion queue (an `ibv_cq_ex`).
pub struct Cq {
    pub(super) ctx: Arc<Context>,
    pub(super) cq: NonNull<IbvCqEx>,
    pub(super) fns: Option<PollFns>,
    /// Whether its one poller was handed out.
    pub(super) polled: std::sync::atomic::AtomicBool,
}

// SAFETY: see Context; polling goes through the one CqPoller.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

impl Cq {
    /// The CQ's poller; only one is ever handed out, so the single-threaded
    /// poll functions are called by one thread at a time.
    pub fn poller(self: &Arc<Self>) -> Option<CqPoller> {
        let fns = self.fns?;
        if self.polled.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return None;
        }
        Some(CqPoller {
            cq: self.clone(),
            fns,
        })
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        let _guard = self.ctx.destroy_guard();
        // SAFETY: every QP/WQ on this CQ holds an Arc on it, so none is left; an
        // ibv_cq_ex begins with an ibv_cq (ibv_cq_ex_to_cq is a cast).
        let rc = unsafe { (self.ctx.fns().destroy_cq)(self.cq.as_ptr() as *mut IbvCq) };
        log_failed_destroy(&self.ctx.name, "ibv_destroy_cq", rc);
    }
}

/// One completion, as the datapath needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Completion {
    /// The request's wr_id.
    pub wr_id: u64,
    /// `enum ibv_wc_status`.
    pub status: u32,
    /// Bytes received (successful receive completions only).
    pub byte_len: u32,
    /// `ibv_wc_flags` (successful completions only).
    pub wc_flags: u32,
}

/// The only poller of a CQ.
pub struct CqPoller {
    cq: Arc<Cq>,
    fns: PollFns,
}

impl CqPoller {
    /// Read up to `out.len()` completions (`ibv_start_poll`, `ibv_next_poll`,
    /// `ibv_end_poll`). `Err(errno)` if the library reports the CQ in error.
    #[inline]
    pub fn poll(&mut self, out: &mut [Completion]) -> Result<usize, i32> {
        if out.is_empty() {
            return Ok(0);
        }
        let cq = self.cq.cq.as_ptr();
        let f = self.fns;
        let mut attr = IbvPollCqAttr::default();
        // SAFETY: cq is live while self is; we are its only poller (&mut self
        // and Cq::poller); the functions are the provider's for this CQ.
        let rc = unsafe { (f.start)(cq, &mut attr) };
        if rc == libc::ENOENT {
            return Ok(0);
        }
        if rc != 0 {
            return Err(rc);
        }
        let mut n = 0usize;
        let mut err = 0;
        loop {
            // SAFETY: between start_poll/next_poll returning 0 and the next
            // call, the current completion is readable.
            let c = unsafe {
                let status = (*cq).status;
                let ok = status == IBV_WC_SUCCESS;
                Completion {
                    wr_id: (*cq).wr_id,
                    status,
                    byte_len: if ok { (f.byte_len)(cq) } else { 0 },
                    wc_flags: if ok { (f.wc_flags)(cq) } else { 0 },
                }
            };
            out[n] = c;
            n += 1;
            if n == out.len() {
                break;
            }
            // SAFETY: as above.
            let rc = unsafe { (f.next)(cq) };
            if rc != 0 {
                if rc != libc::ENOENT {
                    err = rc;
                }
                break;
            }
        }
        // SAFETY: a successful start_poll is always paired with end_poll.
        unsafe { (f.end)(cq) };
        if err != 0 && n == 0 {
            return Err(err);
        }
        Ok(n)
    }
}

/// A receive work queue.
pub struct Wq {
    pub(super) ctx: Arc<Context>,
    pub(super) _cq: Arc<Cq>,
    pub(super) wq: NonNull<IbvWq>,
}

// SAFETY: see Context; posting is an unsafe fn whose contract is one poster.
unsafe impl Send for Wq {}
// SAFETY: as above.
unsafe impl Sync for Wq {}

impl Wq {
    /// Move the WQ to `state` (IBV_WQS_RESET drops what is posted: the device
    /// no longer writes any buffer it was given).
    pub fn modify(&self, state: u32) -> io::Result<()> {
        let w = self.wq.as_ptr();
        // SAFETY: w is a live ibv_wq; its context is live.
        let ctx = unsafe { (*w).context };
        let op = vctx_op!(ctx, modify_wq).ok_or_else(eopnotsupp)?;
        let mut attr = IbvWqAttr {
            attr_mask: IBV_WQ_ATTR_STATE,
            wq_state: state,
            ..Default::default()
        };
        // SAFETY: the op's prototype with a valid attribute struct.
        rc_to_result(unsafe { op(w, &mut attr) })
    }

    /// Post a chain of receive requests (`ibv_post_wq_recv`: `wq->post_recv`).
    /// On failure returns the errno and how many requests of the chain were
    /// posted before the one the library refused.
    ///
    /// # Safety
    /// `head` must start a valid NULL-terminated chain of `n` requests whose SGEs
    /// lie in a registered region; each buffer must be owned by the caller and
    /// untouched until its completion is polled or the WQ is reset; one thread
    /// posts to a WQ at a time.
    #[inline(always)]
    pub(super) unsafe fn post_recv(
        &self,
        head: *mut IbvRecvWr,
        n: usize,
    ) -> Result<(), (i32, usize)> {
        let w = self.wq.as_ptr();
        let mut bad: *mut IbvRecvWr = ptr::null_mut();
        // SAFETY: the caller's contract; w is live.
        let rc = unsafe {
            match (*w).post_recv {
                Some(f) => f(w, head, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: bad, if set, points into the caller's chain.
        Err((rc, unsafe { chain_index(head, bad, n) }))
    }
}

/// The position of `bad` in the chain starting at `head` (n if not found).
///
/// # Safety
/// `head` starts a valid chain of at least `n` links.
unsafe fn chain_index<T: Linked>(head: *mut T, bad: *mut T, n: usize) -> usize {
    let mut p = head;
    for i in 0..n {
        if p.is_null() || p == bad {
            return i;
        }
        // SAFETY: p is a link of the caller's chain.
        p = unsafe { (*p).next_link() };
    }
    n
}

trait Linked {
    fn next_link(&self) -> *mut Self;
}
impl Linked for IbvRecvWr {
    fn next_link(&self) -> *mut Self {
        self.next
    }
}
impl Linked for IbvSendWr {
    fn next_link(&self) -> *mut Self {
        self.next
    }
}

impl Drop for Wq {
    fn drop(&mut self) {
        let _guard = self.ctx.destroy_guard();
        let w = self.wq.as_ptr();
        // SAFETY: w is live.
        let ctx = unsafe { (*w).context };
        let rc = match vctx_op!(ctx, destroy_wq) {
            // SAFETY: every table over this WQ holds an Arc on it, so none is left.
            Some(op) => unsafe { op(w) },
            None => libc::EOPNOTSUPP,
        };
        log_failed_destroy(&self.ctx.name, "ibv_destroy_wq", rc);
    }
}

/// A receive work queue indirection table.
pub struct IndTable {
    pub(super) ctx: Arc<Context>,
    pub(super) _wqs: Vec<Arc<Wq>>,
    pub(super) table: NonNull<IbvRwqIndTable>,
}

// SAFETY: see Context.
unsafe impl Send for IndTable {}
// SAFETY: as above.
unsafe impl Sync for IndTable {}

impl Drop for IndTable {
    fn drop(&mut self) {
        let _guard = self.ctx.destroy_guard();
        let ctx = self.ctx.ctx.as_ptr();
        let rc = match vctx_op!(ctx, destroy_rwq_ind_table) {
            // SAFETY: every QP over this table holds an Arc on it, so none is left.
            Some(op) => unsafe { op(self.table.as_ptr()) },
            None => libc::EOPNOTSUPP,
        };
        log_failed_destroy(&self.ctx.name, "ibv_destroy_rwq_ind_table", rc);
    }
}

/// A queue pair: a send-only one (one per transmit queue) or a receive-only
/// hash one (flow rules point at it).
pub struct Qp {
    pub(super) ctx: Arc<Context>,
    pub(super) _cq: Option<Arc<Cq>>,
    pub(super) _table: Option<Arc<IndTable>>,
    /// The thread domain the QP was created in, if any (freed after the QP).
    pub(super) _domain: Option<Arc<ThreadDomain>>,
    pub(super) qp: NonNull<IbvQp>,
    /// Capabilities granted at creation (send QPs).
    pub cap: IbvQpCap,
    pub(super) port: u8,
}

// SAFETY: see Context; posting is an unsafe fn whose contract is one poster.
unsafe impl Send for Qp {}
// SAFETY: as above.
unsafe impl Sync for Qp {}

impl Qp {
    fn modify(&self, state: u32, mask: c_int) -> io::Result<()> {
        // SAFETY: an all-zero ibv_qp_attr is valid.
        let mut attr: IbvQpAttr = unsafe { std::mem::zeroed() };
        attr.qp_state = state;
        attr.port_num = self.port;
        // SAFETY: exported function, valid attribute struct.
        rc_to_result(unsafe { (self.ctx.fns().modify_qp)(self.qp.as_ptr(), &mut attr, mask) })
    }

    /// RESET/INIT → INIT (port) → RTR → RTS.
    pub fn to_rts(&self) -> io::Result<()> {
        self.modify(IBV_QPS_INIT, IBV_QP_STATE | IBV_QP_PORT)?;
        self.modify(IBV_QPS_RTR, IBV_QP_STATE)?;
        self.modify(IBV_QPS_RTS, IBV_QP_STATE)
    }

    /// Move to RESET: the send queue is emptied, the device reads no buffer it
    /// was given any more.
    pub fn reset(&self) -> io::Result<()> {
        self.modify(IBV_QPS_RESET, IBV_QP_STATE)
    }

    /// Post a chain of send requests (`ibv_post_send`: `ctx->ops.post_send`).
    /// On failure returns the errno and how many requests were posted.
    ///
    /// # Safety
    /// `head` must start a valid NULL-terminated chain of `n` requests; each
    /// non-inline SGE must lie in a registered region and its buffer stay
    /// untouched and alive until a completion at or after it is polled or the QP
    /// is reset; one thread posts to a QP at a time.
    #[inline(always)]
    pub(super) unsafe fn post_send(
        &self,
        head: *mut IbvSendWr,
        n: usize,
    ) -> Result<(), (i32, usize)> {
        let q = self.qp.as_ptr();
        let mut bad: *mut IbvSendWr = ptr::null_mut();
        // SAFETY: the caller's contract; q and its context are live.
        let rc = unsafe {
            match (*(*q).context).ops.post_send {
                Some(f) => f(q, head, &mut bad),
                None => libc::EOPNOTSUPP,
            }
        };
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: bad, if set, points into the caller's chain.
        Err((rc, unsafe { chain_index(head, bad, n) }))
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        let _guard = self.ctx.destroy_guard();
        // SAFETY: every flow on this QP holds an Arc on it, so none is left.
        let rc = unsafe { (self.ctx.fns().destroy_qp)(self.qp.as_ptr()) };
        log_failed_destroy(&self.ctx.name, "ibv_destroy_qp", rc);
    }
}

/// A flow rule attached to a QP; destroying it gives the traffic back to the
/// kernel.
pub struct Flow {
    pub(super) qp: Arc<Qp>,
    pub(super) flow: NonNull<IbvFlow>,
}

// SAFETY: see Context.
unsafe impl Send for Flow {}
// SAFETY: as above.
unsafe impl Sync for Flow {}

impl Drop for Flow {
    fn drop(&mut self) {
        let _guard = self.qp.ctx.destroy_guard();
        let f = self.flow.as_ptr();
        // SAFETY: f is a live ibv_flow; ibv_destroy_flow finds the op through
        // flow->context.
        let ctx = unsafe { (*f).context };
        let rc = match vctx_op!(ctx, ibv_destroy_flow) {
            // SAFETY: the op's prototype.
            Some(op) => unsafe { op(f) },
            None => libc::EOPNOTSUPP,
        };
        log_failed_destroy(&self.qp.ctx.name, "ibv_destroy_flow", rc);
    }
}
