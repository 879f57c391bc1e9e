//! The device context and its protection domain, and every verb that creates
//! an object in it. The `verbs_context` extension ops are found as the
//! header's `verbs_get_ctx_op` finds them ([`vctx_op!`](crate::verbs)).

use std::ffi::c_void;
use std::io;
use std::mem::size_of;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use nicpoll::mempool::Mempool;

use super::ffi::*;
use super::library::{Fns, Verbs, clear_errno, errno_or, log_failed_destroy, rc_to_result};
use super::objects::{Cq, Flow, IndTable, Mr, PollFns, Qp, ThreadDomain, Wq};
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

/// The object a create or alloc call returned, or, for a null pointer, the
/// errno it set (`fallback` where it set none), named by the call.
fn created<T>(p: *mut T, fallback: i32, op: &'static str) -> VResult<NonNull<T>> {
    NonNull::new(p).ok_or_else(|| errno_or(fallback)).op(op)
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
    /// Serialises destroys with `ibv_get_async_event` (see `next_async_event`).
    pub(super) destroy_lock: std::sync::Mutex<()>,
}

/// An asynchronous event of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncEvent {
    /// `enum ibv_event_type`.
    pub kind: u32,
    /// The port, for port events (the element union's `port_num`).
    pub port: u32,
}

/// Whether this CPU is one DPDK keeps relaxed ordering off for (Intel
/// Haswell or Broadwell, family 6: `mlx5_common.c` mlx5_is_haswell_broadwell_cpu).
pub(crate) fn cpu_mishandles_relaxed_ordering() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let v = __cpuid(0);
        if v.eax < 1 || v.ebx != 0x756e_6547 {
            return false;
        }
        let l1 = __cpuid(1);
        let family = (l1.eax >> 8) & 0x0f;
        let model = ((l1.eax >> 4) & 0x0f) + ((l1.eax >> 12) & 0xf0);
        let brand = l1.ebx & 0xff;
        family == 6
            && brand == 0
            && [0x3d, 0x47, 0x4f, 0x56, 0x3c, 0x3f, 0x45, 0x46].contains(&model)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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
        log_failed_destroy(&self.name, "ibv_dealloc_pd", rc);
        // SAFETY: as above.
        let rc = unsafe { (self.verbs.fns.close_device)(self.ctx.as_ptr()) };
        log_failed_destroy(&self.name, "ibv_close_device", rc);
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

    /// Register the whole memory of `pool` for local write (one MR per pool),
    /// with relaxed ordering where the library and CPU allow it (as DPDK's
    /// `mlx5_os_reg_mr`: it lets the device reorder its writes, which matters
    /// in virtual machines; not on Haswell/Broadwell, whose root ports mishandle
    /// it).
    pub fn reg_mr(self: &Arc<Self>, pool: &Mempool) -> VResult<Arc<Mr>> {
        let region = pool.region();
        let (addr, len) = (region.as_ptr(), region.len());
        let relaxed = !cpu_mishandles_relaxed_ordering();
        clear_errno();
        // SAFETY: the region is mapped for its whole length and stays mapped while
        // the Mr (which keeps a pool handle) lives.
        let mr = unsafe {
            match self.verbs.reg_mr_iova2 {
                Some(iova2) if relaxed => {
                    let access = (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_RELAXED_ORDERING) as u32;
                    iova2(
                        self.pd.as_ptr(),
                        addr as *mut c_void,
                        len,
                        addr as u64,
                        access,
                    )
                }
                _ => (self.fns().reg_mr)(
                    self.pd.as_ptr(),
                    addr as *mut c_void,
                    len,
                    IBV_ACCESS_LOCAL_WRITE,
                ),
            }
        };
        let mr = created(mr, libc::ENOMEM, "ibv_reg_mr")?;
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

    /// A completion queue of at least `cqe` entries, polled through the
    /// extended API (`ibv_create_cq_ex`) and created single-threaded: its
    /// `ibv_start_poll`/`ibv_next_poll`/`ibv_end_poll` take no lock
    /// (libmlx5 picks lock-free poll functions for such a CQ, `cq.c`; plain
    /// `ibv_poll_cq` would lock unless MLX5_SINGLE_THREADED is set for the
    /// whole process). Each CQ is polled by one lcore: [`Cq::poller`] hands
    /// out its only poller.
    pub fn create_cq(self: &Arc<Self>, cqe: u32) -> VResult<Arc<Cq>> {
        let ctx = self.ctx.as_ptr();
        let op = vctx_op!(ctx, create_cq_ex)
            .ok_or_else(eopnotsupp)
            .op("ibv_create_cq_ex")?;
        let mut attr = IbvCqInitAttrEx {
            cqe: cqe.max(1),
            cq_context: ptr::null_mut(),
            channel: ptr::null_mut(),
            comp_vector: 0,
            wc_flags: IBV_WC_EX_WITH_BYTE_LEN,
            comp_mask: IBV_CQ_INIT_ATTR_MASK_FLAGS,
            flags: IBV_CREATE_CQ_ATTR_SINGLE_THREADED,
            parent_domain: ptr::null_mut(),
        };
        clear_errno();
        // SAFETY: the op's prototype with a valid attribute struct.
        let cq = unsafe { op(ctx, &mut attr) };
        let cq = created(cq, libc::ENOMEM, "ibv_create_cq_ex")?;
        // SAFETY: a fresh CQ; the poll functions are the provider's.
        let (start, next, end, byte_len, wc_flags) = unsafe {
            let c = cq.as_ptr();
            (
                (*c).start_poll,
                (*c).next_poll,
                (*c).end_poll,
                (*c).read_byte_len,
                (*c).read_wc_flags,
            )
        };
        let fns = match (start, next, end, byte_len, wc_flags) {
            (Some(start), Some(next), Some(end), Some(byte_len), Some(wc_flags)) => Some(PollFns {
                start,
                next,
                end,
                byte_len,
                wc_flags,
            }),
            _ => None,
        };
        let missing = fns.is_none();
        let cq = Arc::new(Cq {
            ctx: self.clone(),
            cq,
            fns,
            polled: std::sync::atomic::AtomicBool::new(false),
        });
        if missing {
            // Dropping it destroys it again.
            return Err(eopnotsupp()).op("ibv_create_cq_ex (extended poll functions)");
        }
        Ok(cq)
    }

    /// A thread domain and the parent domain that carries it: objects created
    /// in it get a doorbell register of their own and no lock, because one
    /// thread uses them (`ibv_alloc_td(3)`; libmlx5 attaches a dedicated UAR,
    /// `verbs.c` mlx5_alloc_td, and creates the QP's lock disabled,
    /// `mlx5_spinlock_init_pd`).
    pub fn alloc_thread_domain(self: &Arc<Self>) -> VResult<Arc<ThreadDomain>> {
        let ctx = self.ctx.as_ptr();
        let alloc_td = vctx_op!(ctx, alloc_td)
            .ok_or_else(eopnotsupp)
            .op("ibv_alloc_td")?;
        let alloc_pd = vctx_op!(ctx, alloc_parent_domain)
            .ok_or_else(eopnotsupp)
            .op("ibv_alloc_parent_domain")?;
        let mut td_attr = IbvTdInitAttr::default();
        clear_errno();
        // SAFETY: the op's prototype with a valid attribute struct.
        let td = unsafe { alloc_td(ctx, &mut td_attr) };
        let td = created(td, libc::ENOMEM, "ibv_alloc_td")?;
        let mut pd_attr = IbvParentDomainInitAttr {
            pd: self.pd.as_ptr(),
            td: td.as_ptr(),
            comp_mask: 0,
            alloc: None,
            free: None,
            pd_context: ptr::null_mut(),
        };
        clear_errno();
        // SAFETY: as above; pd and td are live.
        let pd = unsafe { alloc_pd(ctx, &mut pd_attr) };
        let Some(pd) = NonNull::new(pd) else {
            let e = errno_or(libc::ENOMEM);
            // The thread domain alone goes again.
            drop(ThreadDomain {
                ctx: self.clone(),
                td,
                pd: None,
            });
            return Err(e).op("ibv_alloc_parent_domain");
        };
        Ok(Arc::new(ThreadDomain {
            ctx: self.clone(),
            td,
            pd: Some(pd),
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
            cq: cq.cq.as_ptr() as *mut IbvCq,
            comp_mask: 0,
            create_flags: 0,
        };
        clear_errno();
        // SAFETY: the op's prototype with a valid attribute struct.
        let wq = unsafe { op(ctx, &mut attr) };
        let wq = created(wq, libc::EINVAL, "ibv_create_wq")?;
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
        let table = created(t, libc::EINVAL, "ibv_create_rwq_ind_table")?;
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
        let qp = created(qp, libc::EINVAL, "ibv_create_qp_ex(RAW_PACKET, RX_HASH)")?;
        Ok(Arc::new(Qp {
            ctx: self.clone(),
            _cq: None,
            _table: Some(table.clone()),
            _domain: None,
            qp,
            cap: IbvQpCap::default(),
            port: 0,
        }))
    }

    /// A send-only RAW_PACKET QP completing on `cq`, taken to RTS on `port`,
    /// in the parent domain of `domain` if given (`ibv_create_qp_ex` with
    /// IBV_QP_INIT_ATTR_PD), else in the context's PD (`ibv_create_qp`). Its
    /// actual capabilities (max_inline_data as granted) are in `Qp::cap`.
    pub fn create_send_qp(
        self: &Arc<Self>,
        cq: &Arc<Cq>,
        max_send_wr: u32,
        max_inline: u32,
        port: u8,
        domain: Option<&Arc<ThreadDomain>>,
    ) -> VResult<Arc<Qp>> {
        let cap = IbvQpCap {
            max_send_wr,
            max_recv_wr: 0,
            max_send_sge: 1,
            max_recv_sge: 0,
            max_inline_data: max_inline,
        };
        let cqp = cq.cq.as_ptr() as *mut IbvCq;
        let (qp, cap, op) = match domain.and_then(|d| d.pd.map(|pd| (d, pd))) {
            Some((_, pd)) => {
                let ctx = self.ctx.as_ptr();
                let op = vctx_op!(ctx, create_qp_ex)
                    .ok_or_else(eopnotsupp)
                    .op("ibv_create_qp_ex(RAW_PACKET, thread domain)")?;
                // SAFETY: an all-zero ibv_qp_init_attr_ex is valid (pointers,
                // integers); the fields that matter are set below.
                let mut attr: IbvQpInitAttrEx = unsafe { std::mem::zeroed() };
                attr.send_cq = cqp;
                attr.recv_cq = cqp;
                attr.cap = cap;
                attr.qp_type = IBV_QPT_RAW_PACKET;
                attr.comp_mask = IBV_QP_INIT_ATTR_PD;
                attr.pd = pd.as_ptr();
                clear_errno();
                // SAFETY: the op's prototype with a valid attribute struct.
                let qp = unsafe { op(ctx, &mut attr) };
                (qp, attr.cap, "ibv_create_qp_ex(RAW_PACKET, thread domain)")
            }
            None => {
                let mut attr = IbvQpInitAttr {
                    qp_context: ptr::null_mut(),
                    send_cq: cqp,
                    recv_cq: cqp,
                    srq: ptr::null_mut(),
                    cap,
                    qp_type: IBV_QPT_RAW_PACKET,
                    sq_sig_all: 0,
                };
                clear_errno();
                // SAFETY: exported function with a valid attribute struct.
                let qp = unsafe { (self.fns().create_qp)(self.pd.as_ptr(), &mut attr) };
                (qp, attr.cap, "ibv_create_qp(RAW_PACKET)")
            }
        };
        let qp = created(qp, libc::EINVAL, op)?;
        let qp = Arc::new(Qp {
            ctx: self.clone(),
            _cq: Some(cq.clone()),
            _table: None,
            _domain: domain.cloned(),
            qp,
            // The create call writes back what it granted.
            cap,
            port,
        });
        qp.to_rts().op("ibv_modify_qp(INIT, RTR, RTS)")?;
        Ok(qp)
    }

    /// The most send requests a raw packet QP with `max_inline` bytes of inline
    /// data can have on this device, found by trying (libmlx5 refuses with
    /// EINVAL when the WQE blocks exceed the device's `max_send_wqebb`,
    /// `mlx5_calc_sq_size`; the block count depends on the inline size, so
    /// `max_qp_wr` overstates it). Binary search over `[1, upper]`, a dozen
    /// short-lived QPs at open. 0 if not even one request fits.
    pub fn max_send_wr(self: &Arc<Self>, upper: u32, max_inline: u32, port: u8) -> VResult<u32> {
        let cq = self.create_cq(1)?;
        let fits = |n: u32| self.create_send_qp_unmodified(&cq, n, max_inline, port);
        if fits(upper)? {
            return Ok(upper);
        }
        let (mut lo, mut hi) = (0u32, upper);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Whether a send QP of `max_send_wr` requests can be created (created and
    /// destroyed at once). EINVAL and ENOMEM say no; other errors are errors.
    fn create_send_qp_unmodified(
        self: &Arc<Self>,
        cq: &Arc<Cq>,
        max_send_wr: u32,
        max_inline: u32,
        _port: u8,
    ) -> VResult<bool> {
        let mut attr = IbvQpInitAttr {
            qp_context: ptr::null_mut(),
            send_cq: cq.cq.as_ptr() as *mut IbvCq,
            recv_cq: cq.cq.as_ptr() as *mut IbvCq,
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
        match NonNull::new(qp) {
            Some(qp) => {
                let _guard = self.destroy_guard();
                // SAFETY: just created, used by nothing.
                let rc = unsafe { (self.fns().destroy_qp)(qp.as_ptr()) };
                rc_to_result(rc).op("ibv_destroy_qp")?;
                Ok(true)
            }
            None => {
                let e = errno_or(libc::EINVAL);
                match e.raw_os_error() {
                    Some(libc::EINVAL) | Some(libc::ENOMEM) => Ok(false),
                    _ => Err(e).op("ibv_create_qp(RAW_PACKET)"),
                }
            }
        }
    }

    /// The context's asynchronous event descriptor, borrowed for as long as
    /// the context lives (to poll it; [`Context::next_async_event`] reads it).
    pub fn async_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: ctx is live; async_fd is the library's descriptor, open until
        // ibv_close_device in our Drop, which cannot run while &self lives.
        unsafe { std::os::fd::BorrowedFd::borrow_raw((*self.ctx.as_ptr()).async_fd) }
    }

    /// The next asynchronous event (`ibv_get_async_event`, acknowledged at
    /// once): `Ok(None)` if none is pending (the descriptor must be
    /// non-blocking), `Err` with EIO once the device is gone. Serialised with
    /// every destroy, as RDMAV_ALLOW_DISASSOC_DESTROY requires
    /// (`ibv_open_device(3)`).
    pub fn next_async_event(&self) -> io::Result<Option<AsyncEvent>> {
        let _guard = self.destroy_guard();
        let mut ev = IbvAsyncEvent {
            element: ptr::null_mut(),
            event_type: 0,
        };
        clear_errno();
        // SAFETY: exported function; ev is a valid out-struct.
        let rc = unsafe { (self.fns().get_async_event)(self.ctx.as_ptr(), &mut ev) };
        if rc != 0 {
            let e = errno_or(libc::EIO);
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                _ => Err(e),
            };
        }
        let event = AsyncEvent {
            kind: ev.event_type,
            port: ev.element as usize as u32,
        };
        // SAFETY: the event get_async_event returned, acknowledged once.
        unsafe { (self.fns().ack_async_event)(&mut ev) };
        Ok(Some(event))
    }

    /// Held while destroying an object or reading an async event.
    pub(super) fn destroy_guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.destroy_lock.lock().unwrap_or_else(|e| e.into_inner())
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
        let flow = created(flow, libc::EINVAL, "ibv_create_flow")?;
        Ok(Flow {
            qp: qp.clone(),
            flow,
        })
    }
}
