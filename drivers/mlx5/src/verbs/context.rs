//! The device context and its protection domain, and every verb that creates
//! an object in it. The `verbs_context` extension ops are found as the
//! header's `verbs_get_ctx_op` finds them ([`vctx_op!`](crate::verbs)).

use std::ffi::{c_int, c_void};
use std::io;
use std::mem::size_of;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use nicpoll::mempool::Mempool;

use super::ffi::*;
use super::library::{Fns, Verbs, clear_errno, errno_or, rc_to_result};
use super::objects::{Cq, Flow, IndTable, Mr, Qp, Wq};
use crate::flow::FlowRule;

pub(super) fn eopnotsupp() -> io::Error {
    io::Error::from_raw_os_error(libc::EOPNOTSUPP)
}

/// A failed verb: which one, and the OS error.
#[derive(Debug)]
pub struct VerbError {
    /// The verb (`ibv_create_qp`).
    pub op: &'static str,
    /// What it failed with.
    pub err: io::Error,
}

/// Result of a verb.
pub type VResult<T> = Result<T, VerbError>;

pub(super) trait Op<T> {
    fn op(self, op: &'static str) -> VResult<T>;
}

impl<T> Op<T> for io::Result<T> {
    fn op(self, op: &'static str) -> VResult<T> {
        self.map_err(|err| VerbError { op, err })
    }
}

// ---------------------------------------------------------------------------
// Owning handles

/// An open device context with its protection domain.
pub struct Context {
    pub(super) verbs: Arc<Verbs>,
    pub(super) ctx: NonNull<IbvContext>,
    pub(super) pd: NonNull<IbvPd>,
    /// The RDMA device name (`mlx5_0`).
    pub name: String,
}

// SAFETY: verbs objects may be used from any thread; the control operations
// below are kernel commands (serialised by the kernel and libibverbs' own
// locks). The fast-path operations are `unsafe fn`s whose contract keeps each
// queue to one thread.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("name", &self.name).finish()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every object created in this PD holds an Arc on us, so none is
        // left; pd and ctx are ours.
        let rc = unsafe { (self.verbs.fns.dealloc_pd)(self.pd.as_ptr()) };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_dealloc_pd: {e}", self.name);
        }
        // SAFETY: as above.
        let rc = unsafe { (self.verbs.fns.close_device)(self.ctx.as_ptr()) };
        if let Err(e) = rc_to_result(rc) {
            log::error!("{}: ibv_close_device: {e}", self.name);
        }
    }
}

/// What [`Context::query_device`] reports that we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Most work requests per queue.
    pub max_qp_wr: u32,
    /// Most completion queue entries.
    pub max_cqe: u32,
    /// Vendor id (0x02c9 for Mellanox).
    pub vendor_id: u32,
    /// Vendor part id (the ConnectX generation).
    pub vendor_part_id: u32,
    /// Firmware version.
    pub fw_ver: String,
}

/// One flow rule: an Ethernet match plus optional L3/L4 protocol matches,
/// steered to a hash QP.

impl Context {
    pub(super) fn fns(&self) -> &Fns {
        &self.verbs.fns
    }

    /// Port attributes, as the `ibv_query_port` macro gets them.
    pub fn query_port(&self, port: u8) -> VResult<IbvPortAttr> {
        let mut attr = IbvPortAttr::default();
        let ctx = self.ctx.as_ptr();
        let rc = match vctx_op!(ctx, query_port) {
            // SAFETY: the op's prototype; attr is a valid out-struct of that size.
            Some(op) => unsafe { op(ctx, port, &mut attr, size_of::<IbvPortAttr>()) },
            // SAFETY: the exported compat entry point fills a prefix of the struct.
            None => unsafe { (self.fns().query_port)(ctx, port, &mut attr) },
        };
        rc_to_result(rc).map(|_| attr).op("ibv_query_port")
    }

    /// Device limits.
    pub fn query_device(&self) -> VResult<DeviceLimits> {
        // SAFETY: an all-zero ibv_device_attr is valid (integers and chars).
        let mut attr: IbvDeviceAttr = unsafe { std::mem::zeroed() };
        // SAFETY: attr is a valid out-struct.
        let rc = unsafe { (self.fns().query_device)(self.ctx.as_ptr(), &mut attr) };
        rc_to_result(rc).op("ibv_query_device")?;
        let fw: Vec<u8> = attr
            .fw_ver
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        Ok(DeviceLimits {
            max_qp_wr: attr.max_qp_wr.max(0) as u32,
            max_cqe: attr.max_cqe.max(0) as u32,
            vendor_id: attr.vendor_id,
            vendor_part_id: attr.vendor_part_id,
            fw_ver: String::from_utf8_lossy(&fw).into_owned(),
        })
    }

    /// Register the whole memory of `pool` for local write (one MR per pool).
    pub fn reg_mr(self: &Arc<Self>, pool: &Mempool) -> VResult<Arc<Mr>> {
        let region = pool.region();
        let (addr, len) = (region.as_ptr(), region.len());
        clear_errno();
        // SAFETY: the region is mapped for its whole length and stays mapped while
        // the Mr (which keeps a pool handle) lives.
        let mr = unsafe {
            (self.fns().reg_mr)(
                self.pd.as_ptr(),
                addr as *mut c_void,
                len,
                IBV_ACCESS_LOCAL_WRITE,
            )
        };
        let mr = NonNull::new(mr)
            .ok_or_else(|| errno_or(libc::ENOMEM))
            .op("ibv_reg_mr")?;
        // SAFETY: mr is a valid ibv_mr the library just returned.
        let lkey = unsafe { (*mr.as_ptr()).lkey };
        Ok(Arc::new(Mr {
            ctx: self.clone(),
            mr,
            lkey,
            start: addr as usize,
            len,
            _pool: pool.clone(),
        }))
    }

    /// A completion queue of at least `cqe` entries.
    pub fn create_cq(self: &Arc<Self>, cqe: u32) -> VResult<Arc<Cq>> {
        clear_errno();
        // SAFETY: plain create; no channel, vector 0.
        let cq = unsafe {
            (self.fns().create_cq)(
                self.ctx.as_ptr(),
                cqe.max(1) as c_int,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
            )
        };
        let cq = NonNull::new(cq)
            .ok_or_else(|| errno_or(libc::ENOMEM))
            .op("ibv_create_cq")?;
        Ok(Arc::new(Cq {
            ctx: self.clone(),
            cq,
        }))
    }

    /// A receive work queue of `max_wr` single-SGE entries completing on `cq`,
    /// moved to ready. Mirrors the `ibv_create_wq` inline wrapper, which also
    /// initialises the WQ's mutex and condition variable.
    pub fn create_wq(self: &Arc<Self>, cq: &Arc<Cq>, max_wr: u32) -> VResult<Arc<Wq>> {
        let ctx = self.ctx.as_ptr();
        let op = vctx_op!(ctx, create_wq)
            .ok_or_else(eopnotsupp)
            .op("ibv_create_wq")?;
        let mut attr = IbvWqInitAttr {
            wq_context: ptr::null_mut(),
            wq_type: IBV_WQT_RQ,
            max_wr,
            max_sge: 1,
            pd: self.pd.as_ptr(),
            cq: cq.cq.as_ptr(),
            comp_mask: 0,
            create_flags: 0,
        };
        clear_errno();
        // SAFETY: the op's prototype with a valid attribute struct.
        let wq = unsafe { op(ctx, &mut attr) };
        let wq = NonNull::new(wq)
            .ok_or_else(|| errno_or(libc::EINVAL))
            .op("ibv_create_wq")?;
        // SAFETY: wq is a freshly created ibv_wq; this is what the header's inline
        // ibv_create_wq does before returning it.
        unsafe {
            let w = wq.as_ptr();
            (*w).wq_context = ptr::null_mut();
            (*w).events_completed = 0;
            libc::pthread_mutex_init(ptr::addr_of_mut!((*w).mutex), ptr::null());
            libc::pthread_cond_init(ptr::addr_of_mut!((*w).cond), ptr::null());
        }
        let wq = Arc::new(Wq {
            ctx: self.clone(),
            _cq: cq.clone(),
            wq,
        });
        wq.modify(IBV_WQS_RDY).op("ibv_modify_wq(RDY)")?;
        Ok(wq)
    }

    /// An indirection table over `wqs` (its length must be a power of two).
    pub fn create_ind_table(self: &Arc<Self>, wqs: &[Arc<Wq>]) -> VResult<Arc<IndTable>> {
        debug_assert!(wqs.len().is_power_of_two());
        let ctx = self.ctx.as_ptr();
        let op = vctx_op!(ctx, create_rwq_ind_table)
            .ok_or_else(eopnotsupp)
            .op("ibv_create_rwq_ind_table")?;
        let mut ptrs: Vec<*mut IbvWq> = wqs.iter().map(|w| w.wq.as_ptr()).collect();
        let mut attr = IbvRwqIndTableInitAttr {
            log_ind_tbl_size: wqs.len().trailing_zeros(),
            ind_tbl: ptrs.as_mut_ptr(),
            comp_mask: 0,
        };
        clear_errno();
        // SAFETY: the op's prototype; ptrs has 2^log entries and outlives the call.
        let t = unsafe { op(ctx, &mut attr) };
        let table = NonNull::new(t)
            .ok_or_else(|| errno_or(libc::EINVAL))
            .op("ibv_create_rwq_ind_table")?;
        Ok(Arc::new(IndTable {
            ctx: self.clone(),
            _wqs: wqs.to_vec(),
            table,
        }))
    }

    /// A receive-only RAW_PACKET QP that spreads packets over `table` with a
    /// Toeplitz hash of `fields` (0: everything to the table's first entry;
    /// the kernel accepts that only for a one-entry table). Such a QP needs no
    /// state transitions (mlx5 refuses to modify one).
    pub fn create_rss_qp(self: &Arc<Self>, table: &Arc<IndTable>, fields: u64) -> VResult<Arc<Qp>> {
        let ctx = self.ctx.as_ptr();
        let op = vctx_op!(ctx, create_qp_ex)
            .ok_or_else(eopnotsupp)
            .op("ibv_create_qp_ex(RAW_PACKET, RX_HASH)")?;
        let mut key = RSS_KEY;
        let mut attr = IbvQpInitAttrEx {
            qp_context: ptr::null_mut(),
            send_cq: ptr::null_mut(),
            recv_cq: ptr::null_mut(),
            srq: ptr::null_mut(),
            cap: IbvQpCap::default(),
            qp_type: IBV_QPT_RAW_PACKET,
            sq_sig_all: 0,
            comp_mask: IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_IND_TABLE | IBV_QP_INIT_ATTR_RX_HASH,
            pd: self.pd.as_ptr(),
            xrcd: ptr::null_mut(),
            create_flags: 0,
            max_tso_header: 0,
            rwq_ind_tbl: table.table.as_ptr(),
            rx_hash_conf: IbvRxHashConf {
                rx_hash_function: IBV_RX_HASH_FUNC_TOEPLITZ,
                rx_hash_key_len: key.len() as u8,
                rx_hash_key: key.as_mut_ptr(),
                rx_hash_fields_mask: fields,
            },
            source_qpn: 0,
            send_ops_flags: 0,
        };
        clear_errno();
        // SAFETY: the op's prototype; attr and key outlive the call.
        let qp = unsafe { op(ctx, &mut attr) };
        let qp = NonNull::new(qp)
            .ok_or_else(|| errno_or(libc::EINVAL))
            .op("ibv_create_qp_ex(RAW_PACKET, RX_HASH)")?;
        Ok(Arc::new(Qp {
            ctx: self.clone(),
            _cq: None,
            _table: Some(table.clone()),
            qp,
            cap: IbvQpCap::default(),
            port: 0,
        }))
    }

    /// A send-only RAW_PACKET QP completing on `cq`, taken to RTS on `port`.
    /// Its actual capabilities (max_inline_data as granted) are in `Qp::cap`.
    pub fn create_send_qp(
        self: &Arc<Self>,
        cq: &Arc<Cq>,
        max_send_wr: u32,
        max_inline: u32,
        port: u8,
    ) -> VResult<Arc<Qp>> {
        let mut attr = IbvQpInitAttr {
            qp_context: ptr::null_mut(),
            send_cq: cq.cq.as_ptr(),
            recv_cq: cq.cq.as_ptr(),
            srq: ptr::null_mut(),
            cap: IbvQpCap {
                max_send_wr,
                max_recv_wr: 0,
                max_send_sge: 1,
                max_recv_sge: 0,
                max_inline_data: max_inline,
            },
            qp_type: IBV_QPT_RAW_PACKET,
            sq_sig_all: 0,
        };
        clear_errno();
        // SAFETY: exported function with a valid attribute struct.
        let qp = unsafe { (self.fns().create_qp)(self.pd.as_ptr(), &mut attr) };
        let qp = NonNull::new(qp)
            .ok_or_else(|| errno_or(libc::EINVAL))
            .op("ibv_create_qp(RAW_PACKET)")?;
        let qp = Arc::new(Qp {
            ctx: self.clone(),
            _cq: Some(cq.clone()),
            _table: None,
            qp,
            // ibv_create_qp writes back what it granted.
            cap: attr.cap,
            port,
        });
        qp.to_rts().op("ibv_modify_qp(INIT, RTR, RTS)")?;
        Ok(qp)
    }

    /// Attach a flow rule to `qp`.
    pub fn create_flow(self: &Arc<Self>, qp: &Arc<Qp>, rule: &FlowRule) -> VResult<Flow> {
        let ctx = self.ctx.as_ptr();
        let op = vctx_op!(ctx, ibv_create_flow)
            .ok_or_else(eopnotsupp)
            .op("ibv_create_flow")?;
        let mut buf = rule.encode();
        clear_errno();
        // SAFETY: the op's prototype; buf holds attr + specs, attr.size bytes.
        let flow = unsafe { op(qp.qp.as_ptr(), buf.as_mut_ptr() as *mut IbvFlowAttr) };
        let flow = NonNull::new(flow)
            .ok_or_else(|| errno_or(libc::EINVAL))
            .op("ibv_create_flow")?;
        Ok(Flow {
            qp: qp.clone(),
            flow,
        })
    }
}
