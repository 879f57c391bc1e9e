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
use super::library::rc_to_result;

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
        // SAFETY: every WQ/QP that used this MR was reset or destroyed before its
        // holder released its Arc on us.
        let rc = unsafe { (self.ctx.fns().dereg_mr)(self.mr.as_ptr()) };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_dereg_mr: {e}", self.ctx.name);
        }
    }
}

/// A completion queue.
pub struct Cq {
    pub(super) ctx: Arc<Context>,
    pub(super) cq: NonNull<IbvCq>,
}

// SAFETY: see Context; polling is an unsafe fn whose contract is one poller.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

impl Cq {
    /// Poll up to `wc.len()` completions (`ibv_poll_cq`: `ctx->ops.poll_cq`).
    /// Returns the number written, or a negative value if the CQ is in error.
    ///
    /// # Safety
    /// Only one thread may poll a CQ at a time (the provider may have been told
    /// it is single-threaded with MLX5_SINGLE_THREADED).
    #[inline(always)]
    pub unsafe fn poll(&self, wc: &mut [IbvWc]) -> c_int {
        let cq = self.cq.as_ptr();
        // SAFETY: cq is live while self is; its context and ops table are the
        // library's; wc is writable for wc.len() entries.
        unsafe {
            let ops = &(*(*cq).context).ops;
            match ops.poll_cq {
                Some(f) => f(cq, wc.len() as c_int, wc.as_mut_ptr()),
                None => -1,
            }
        }
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: every QP/WQ on this CQ holds an Arc on it, so none is left.
        let rc = unsafe { (self.ctx.fns().destroy_cq)(self.cq.as_ptr()) };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_destroy_cq: {e}", self.ctx.name);
        }
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
    pub unsafe fn post_recv(&self, head: *mut IbvRecvWr, n: usize) -> Result<(), (i32, usize)> {
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
        let w = self.wq.as_ptr();
        // SAFETY: w is live.
        let ctx = unsafe { (*w).context };
        let rc = match vctx_op!(ctx, destroy_wq) {
            // SAFETY: every table over this WQ holds an Arc on it, so none is left.
            Some(op) => unsafe { op(w) },
            None => libc::EOPNOTSUPP,
        };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_destroy_wq: {e}", self.ctx.name);
        }
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
        let ctx = self.ctx.ctx.as_ptr();
        let rc = match vctx_op!(ctx, destroy_rwq_ind_table) {
            // SAFETY: every QP over this table holds an Arc on it, so none is left.
            Some(op) => unsafe { op(self.table.as_ptr()) },
            None => libc::EOPNOTSUPP,
        };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_destroy_rwq_ind_table: {e}", self.ctx.name);
        }
    }
}

/// A queue pair: a send-only one (one per transmit queue) or a receive-only
/// hash one (flow rules point at it).
pub struct Qp {
    pub(super) ctx: Arc<Context>,
    pub(super) _cq: Option<Arc<Cq>>,
    pub(super) _table: Option<Arc<IndTable>>,
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
    pub unsafe fn post_send(&self, head: *mut IbvSendWr, n: usize) -> Result<(), (i32, usize)> {
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
        // SAFETY: every flow on this QP holds an Arc on it, so none is left.
        let rc = unsafe { (self.ctx.fns().destroy_qp)(self.qp.as_ptr()) };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_destroy_qp: {e}", self.ctx.name);
        }
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
        let f = self.flow.as_ptr();
        // SAFETY: f is a live ibv_flow; ibv_destroy_flow finds the op through
        // flow->context.
        let ctx = unsafe { (*f).context };
        let rc = match vctx_op!(ctx, ibv_destroy_flow) {
            // SAFETY: the op's prototype.
            Some(op) => unsafe { op(f) },
            None => libc::EOPNOTSUPP,
        };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_destroy_flow: {e}", self.qp.ctx.name);
        }
    }
}
