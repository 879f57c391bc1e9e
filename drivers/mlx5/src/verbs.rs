//! The FFI module: rdma-core's libibverbs loaded at run time with dlopen, the
//! `#[repr(C)]` mirrors of the structs we touch, owning handles for every verbs
//! object, and the one netlink request the bifurcated model needs (an FDB entry
//! for extra MAC addresses). With `datapath` and the test-only `verbs::fake`, this
//! is where the crate's `unsafe` lives.
//!
//! Three ways into libibverbs, mirroring `<infiniband/verbs.h>` (rdma-core 44):
//!
//! - **exported functions** (`ibv_open_device`, `ibv_create_qp`, ...) are looked
//!   up with `dlsym` once, into [`Fns`];
//! - **`ibv_context.ops`** (`poll_cq`, `post_send`, `post_recv`): the header's
//!   `static inline` wrappers call through this table, and so do we;
//! - **`verbs_context` extension ops** (`ibv_create_flow`, `ibv_create_wq`,
//!   `ibv_create_qp_ex`, ...): a table that sits *before* the `ibv_context` in
//!   memory, with a `size_t sz` immediately before it. The header checks
//!   `abi_compat == UINTPTR_MAX`, `sz`, and a non-NULL pointer before calling an
//!   op ([`vctx_op!`] does the same). New ops are added at the front, so the
//!   context-relative offsets we use are stable across rdma-core versions.
//!
//! A work queue's `post_recv` is a function pointer in `struct ibv_wq` itself
//! (`ibv_post_wq_recv`).
//!
//! Every mirror's size and field offsets are compared with the C compiler's
//! view of the installed header by the layout test (`layout_test.rs`).
#![allow(unsafe_code)]

#[cfg(test)]
pub(crate) mod fake;

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io;
use std::mem::{offset_of, size_of};
use std::ptr::{self, NonNull};
use std::sync::Arc;

use libloading::Library;
use nicpoll::mempool::Mempool;

use crate::error::Mlx5Error;

/// The library name we dlopen (the SONAME of rdma-core's libibverbs).
pub const LIBIBVERBS: &str = "libibverbs.so.1";

// ---------------------------------------------------------------------------
// Constants (values from <infiniband/verbs.h>)

/// `IBV_QPT_RAW_PACKET`.
pub const IBV_QPT_RAW_PACKET: u32 = 8;
/// `enum ibv_qp_state`.
pub const IBV_QPS_RESET: u32 = 0;
/// `IBV_QPS_INIT`.
pub const IBV_QPS_INIT: u32 = 1;
/// `IBV_QPS_RTR`.
pub const IBV_QPS_RTR: u32 = 2;
/// `IBV_QPS_RTS`.
pub const IBV_QPS_RTS: u32 = 3;
/// `IBV_QPS_ERR`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_QPS_ERR: u32 = 6;
/// `IBV_QP_STATE` (attribute mask of ibv_modify_qp).
pub const IBV_QP_STATE: c_int = 1;
/// `IBV_QP_PORT`.
pub const IBV_QP_PORT: c_int = 1 << 5;
/// `IBV_ACCESS_LOCAL_WRITE`.
pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
/// `IBV_WR_SEND`.
pub const IBV_WR_SEND: u32 = 2;
/// `IBV_SEND_SIGNALED`.
pub const IBV_SEND_SIGNALED: u32 = 1 << 1;
/// `IBV_SEND_INLINE`.
pub const IBV_SEND_INLINE: u32 = 1 << 3;
/// `IBV_WC_SUCCESS`.
pub const IBV_WC_SUCCESS: u32 = 0;
/// `IBV_WC_LOC_LEN_ERR`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_WC_LOC_LEN_ERR: u32 = 1;
/// `IBV_WC_LOC_PROT_ERR`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_WC_LOC_PROT_ERR: u32 = 4;
/// `IBV_WC_WR_FLUSH_ERR`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_WC_WR_FLUSH_ERR: u32 = 5;
/// `IBV_WC_GENERAL_ERR`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_WC_GENERAL_ERR: u32 = 21;
/// `IBV_WC_SEND` (completion opcode).
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_WC_SEND: u32 = 0;
/// `IBV_WC_RECV` (completion opcode).
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_WC_RECV: u32 = 1 << 7;
/// `IBV_PORT_ACTIVE`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_PORT_ACTIVE: u32 = 4;
/// `IBV_LINK_LAYER_INFINIBAND`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_LINK_LAYER_INFINIBAND: u8 = 1;
/// `IBV_LINK_LAYER_ETHERNET`.
pub const IBV_LINK_LAYER_ETHERNET: u8 = 2;
/// `IBV_FLOW_ATTR_NORMAL`.
pub const IBV_FLOW_ATTR_NORMAL: u32 = 0;
/// `IBV_FLOW_SPEC_ETH`.
pub const IBV_FLOW_SPEC_ETH: u32 = 0x20;
/// `IBV_FLOW_SPEC_IPV4`.
pub const IBV_FLOW_SPEC_IPV4: u32 = 0x30;
/// `IBV_FLOW_SPEC_IPV6`.
pub const IBV_FLOW_SPEC_IPV6: u32 = 0x31;
/// `IBV_FLOW_SPEC_TCP`.
pub const IBV_FLOW_SPEC_TCP: u32 = 0x40;
/// `IBV_FLOW_SPEC_UDP`.
pub const IBV_FLOW_SPEC_UDP: u32 = 0x41;
/// `IBV_QP_INIT_ATTR_PD`.
pub const IBV_QP_INIT_ATTR_PD: u32 = 1;
/// `IBV_QP_INIT_ATTR_IND_TABLE`.
pub const IBV_QP_INIT_ATTR_IND_TABLE: u32 = 1 << 4;
/// `IBV_QP_INIT_ATTR_RX_HASH`.
pub const IBV_QP_INIT_ATTR_RX_HASH: u32 = 1 << 5;
/// `IBV_RX_HASH_FUNC_TOEPLITZ`.
pub const IBV_RX_HASH_FUNC_TOEPLITZ: u8 = 1;
/// `IBV_RX_HASH_SRC_IPV4`.
pub const IBV_RX_HASH_SRC_IPV4: u64 = 1;
/// `IBV_RX_HASH_DST_IPV4`.
pub const IBV_RX_HASH_DST_IPV4: u64 = 1 << 1;
/// `IBV_RX_HASH_SRC_IPV6`.
pub const IBV_RX_HASH_SRC_IPV6: u64 = 1 << 2;
/// `IBV_RX_HASH_DST_IPV6`.
pub const IBV_RX_HASH_DST_IPV6: u64 = 1 << 3;
/// `IBV_RX_HASH_SRC_PORT_TCP`.
pub const IBV_RX_HASH_SRC_PORT_TCP: u64 = 1 << 4;
/// `IBV_RX_HASH_DST_PORT_TCP`.
pub const IBV_RX_HASH_DST_PORT_TCP: u64 = 1 << 5;
/// `IBV_RX_HASH_SRC_PORT_UDP`.
pub const IBV_RX_HASH_SRC_PORT_UDP: u64 = 1 << 6;
/// `IBV_RX_HASH_DST_PORT_UDP`.
pub const IBV_RX_HASH_DST_PORT_UDP: u64 = 1 << 7;
/// `IBV_WQT_RQ`.
pub const IBV_WQT_RQ: u32 = 0;
/// `IBV_WQS_RESET`.
pub const IBV_WQS_RESET: u32 = 0;
/// `IBV_WQS_RDY`.
pub const IBV_WQS_RDY: u32 = 1;
/// `IBV_WQS_ERR`.
#[cfg_attr(not(test), allow(dead_code))] // used by the fake NIC and the layout test
pub const IBV_WQS_ERR: u32 = 2;
/// `IBV_WQ_ATTR_STATE`.
pub const IBV_WQ_ATTR_STATE: u32 = 1;

/// The Toeplitz key DPDK's mlx5 driver uses by default (`rss_hash_default_key`).
pub const RSS_KEY: [u8; 40] = [
    0x2c, 0xc6, 0x81, 0xd1, 0x5b, 0xdb, 0xf4, 0xf7, 0xfc, 0xa2, 0x83, 0x19, 0xdb, 0x1a, 0x3e, 0x94,
    0x6b, 0x9e, 0x38, 0xd9, 0x2c, 0x9c, 0x03, 0xd1, 0xad, 0x99, 0x44, 0xa7, 0xd9, 0x56, 0x3d, 0x59,
    0x06, 0x3c, 0x25, 0xf3, 0xfc, 0x1f, 0xdc, 0x2a,
];

// ---------------------------------------------------------------------------
// Struct mirrors. Enums are C `int`s; pthread types come from libc so the
// mirrors are right on every architecture libc knows.

/// A function pointer slot we never call (same size as any function pointer).
pub type Unused = Option<unsafe extern "C" fn()>;

/// `struct ibv_device`.
#[repr(C)]
pub struct IbvDevice {
    pub _ops: [Unused; 2],
    pub node_type: c_int,
    pub transport_type: c_int,
    pub name: [c_char; 64],
    pub dev_name: [c_char; 64],
    pub dev_path: [c_char; 256],
    pub ibdev_path: [c_char; 256],
}

/// `ibv_context_ops.poll_cq`.
pub type PollCqFn = unsafe extern "C" fn(*mut IbvCq, c_int, *mut IbvWc) -> c_int;
/// `ibv_context_ops.req_notify_cq`.
pub type ReqNotifyCqFn = unsafe extern "C" fn(*mut IbvCq, c_int) -> c_int;
/// `ibv_context_ops.post_send`.
pub type PostSendFn =
    unsafe extern "C" fn(*mut IbvQp, *mut IbvSendWr, *mut *mut IbvSendWr) -> c_int;
/// `ibv_context_ops.post_recv`.
pub type PostRecvFn =
    unsafe extern "C" fn(*mut IbvQp, *mut IbvRecvWr, *mut *mut IbvRecvWr) -> c_int;
/// `ibv_wq.post_recv`.
pub type WqPostRecvFn =
    unsafe extern "C" fn(*mut IbvWq, *mut IbvRecvWr, *mut *mut IbvRecvWr) -> c_int;

/// `struct ibv_context_ops`: 32 function pointers, most of them compat slots.
#[repr(C)]
pub struct IbvContextOps {
    pub _compat_query_device: Unused,
    pub _compat_query_port: Unused,
    pub _compat_alloc_pd: Unused,
    pub _compat_dealloc_pd: Unused,
    pub _compat_reg_mr: Unused,
    pub _compat_rereg_mr: Unused,
    pub _compat_dereg_mr: Unused,
    pub alloc_mw: Unused,
    pub bind_mw: Unused,
    pub dealloc_mw: Unused,
    pub _compat_create_cq: Unused,
    pub poll_cq: Option<PollCqFn>,
    pub req_notify_cq: Option<ReqNotifyCqFn>,
    pub _compat_cq_event: Unused,
    pub _compat_resize_cq: Unused,
    pub _compat_destroy_cq: Unused,
    pub _compat_create_srq: Unused,
    pub _compat_modify_srq: Unused,
    pub _compat_query_srq: Unused,
    pub _compat_destroy_srq: Unused,
    pub post_srq_recv: Unused,
    pub _compat_create_qp: Unused,
    pub _compat_query_qp: Unused,
    pub _compat_modify_qp: Unused,
    pub _compat_destroy_qp: Unused,
    pub post_send: Option<PostSendFn>,
    pub post_recv: Option<PostRecvFn>,
    pub _compat_create_ah: Unused,
    pub _compat_destroy_ah: Unused,
    pub _compat_attach_mcast: Unused,
    pub _compat_detach_mcast: Unused,
    pub _compat_async_event: Unused,
}

/// `struct ibv_context`.
#[repr(C)]
pub struct IbvContext {
    pub device: *mut IbvDevice,
    pub ops: IbvContextOps,
    pub cmd_fd: c_int,
    pub async_fd: c_int,
    pub num_comp_vectors: c_int,
    pub mutex: libc::pthread_mutex_t,
    pub abi_compat: *mut c_void,
}

/// `struct verbs_context` (rdma-core 44): the extension ops, then `sz`, then the
/// `ibv_context` every other pointer refers to.
#[repr(C)]
pub struct VerbsContext {
    pub query_port:
        Option<unsafe extern "C" fn(*mut IbvContext, u8, *mut IbvPortAttr, usize) -> c_int>,
    pub advise_mr: Unused,
    pub alloc_null_mr: Unused,
    pub read_counters: Unused,
    pub attach_counters_point_flow: Unused,
    pub create_counters: Unused,
    pub destroy_counters: Unused,
    pub reg_dm_mr: Unused,
    pub alloc_dm: Unused,
    pub free_dm: Unused,
    pub modify_flow_action_esp: Unused,
    pub destroy_flow_action: Unused,
    pub create_flow_action_esp: Unused,
    pub modify_qp_rate_limit: Unused,
    pub alloc_parent_domain: Unused,
    pub dealloc_td: Unused,
    pub alloc_td: Unused,
    pub modify_cq: Unused,
    pub post_srq_ops: Unused,
    pub destroy_rwq_ind_table: Option<unsafe extern "C" fn(*mut IbvRwqIndTable) -> c_int>,
    pub create_rwq_ind_table: Option<
        unsafe extern "C" fn(*mut IbvContext, *mut IbvRwqIndTableInitAttr) -> *mut IbvRwqIndTable,
    >,
    pub destroy_wq: Option<unsafe extern "C" fn(*mut IbvWq) -> c_int>,
    pub modify_wq: Option<unsafe extern "C" fn(*mut IbvWq, *mut IbvWqAttr) -> c_int>,
    pub create_wq: Option<unsafe extern "C" fn(*mut IbvContext, *mut IbvWqInitAttr) -> *mut IbvWq>,
    pub query_rt_values: Unused,
    pub create_cq_ex: Unused,
    pub priv_: *mut c_void,
    pub query_device_ex: Unused,
    pub ibv_destroy_flow: Option<unsafe extern "C" fn(*mut IbvFlow) -> c_int>,
    pub abi_placeholder2: Unused,
    pub ibv_create_flow: Option<unsafe extern "C" fn(*mut IbvQp, *mut IbvFlowAttr) -> *mut IbvFlow>,
    pub abi_placeholder1: Unused,
    pub open_qp: Unused,
    pub create_qp_ex:
        Option<unsafe extern "C" fn(*mut IbvContext, *mut IbvQpInitAttrEx) -> *mut IbvQp>,
    pub get_srq_num: Unused,
    pub create_srq_ex: Unused,
    pub open_xrcd: Unused,
    pub close_xrcd: Unused,
    pub _abi_placeholder3: u64,
    pub sz: usize,
    pub context: IbvContext,
}

/// `struct ibv_device_attr`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IbvDeviceAttr {
    pub fw_ver: [c_char; 64],
    pub node_guid: u64,
    pub sys_image_guid: u64,
    pub max_mr_size: u64,
    pub page_size_cap: u64,
    pub vendor_id: u32,
    pub vendor_part_id: u32,
    pub hw_ver: u32,
    pub max_qp: c_int,
    pub max_qp_wr: c_int,
    pub device_cap_flags: u32,
    pub max_sge: c_int,
    pub max_sge_rd: c_int,
    pub max_cq: c_int,
    pub max_cqe: c_int,
    pub max_mr: c_int,
    pub max_pd: c_int,
    pub max_qp_rd_atom: c_int,
    pub max_ee_rd_atom: c_int,
    pub max_res_rd_atom: c_int,
    pub max_qp_init_rd_atom: c_int,
    pub max_ee_init_rd_atom: c_int,
    pub atomic_cap: c_int,
    pub max_ee: c_int,
    pub max_rdd: c_int,
    pub max_mw: c_int,
    pub max_raw_ipv6_qp: c_int,
    pub max_raw_ethy_qp: c_int,
    pub max_mcast_grp: c_int,
    pub max_mcast_qp_attach: c_int,
    pub max_total_mcast_qp_attach: c_int,
    pub max_ah: c_int,
    pub max_fmr: c_int,
    pub max_map_per_fmr: c_int,
    pub max_srq: c_int,
    pub max_srq_wr: c_int,
    pub max_srq_sge: c_int,
    pub max_pkeys: u16,
    pub local_ca_ack_delay: u8,
    pub phys_port_cnt: u8,
}

/// `struct ibv_port_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvPortAttr {
    pub state: u32,
    pub max_mtu: u32,
    pub active_mtu: u32,
    pub gid_tbl_len: c_int,
    pub port_cap_flags: u32,
    pub max_msg_sz: u32,
    pub bad_pkey_cntr: u32,
    pub qkey_viol_cntr: u32,
    pub pkey_tbl_len: u16,
    pub lid: u16,
    pub sm_lid: u16,
    pub lmc: u8,
    pub max_vl_num: u8,
    pub sm_sl: u8,
    pub subnet_timeout: u8,
    pub init_type_reply: u8,
    pub active_width: u8,
    pub active_speed: u8,
    pub phys_state: u8,
    pub link_layer: u8,
    pub flags: u8,
    pub port_cap_flags2: u16,
}

/// `struct ibv_pd`.
#[repr(C)]
pub struct IbvPd {
    pub context: *mut IbvContext,
    pub handle: u32,
}

/// `struct ibv_mr`.
#[repr(C)]
pub struct IbvMr {
    pub context: *mut IbvContext,
    pub pd: *mut IbvPd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

/// `struct ibv_cq`.
#[repr(C)]
pub struct IbvCq {
    pub context: *mut IbvContext,
    pub channel: *mut c_void,
    pub cq_context: *mut c_void,
    pub handle: u32,
    pub cqe: c_int,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub comp_events_completed: u32,
    pub async_events_completed: u32,
}

/// `struct ibv_qp`.
#[repr(C)]
pub struct IbvQp {
    pub context: *mut IbvContext,
    pub qp_context: *mut c_void,
    pub pd: *mut IbvPd,
    pub send_cq: *mut IbvCq,
    pub recv_cq: *mut IbvCq,
    pub srq: *mut c_void,
    pub handle: u32,
    pub qp_num: u32,
    pub state: u32,
    pub qp_type: u32,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub events_completed: u32,
}

/// `struct ibv_wq`.
#[repr(C)]
pub struct IbvWq {
    pub context: *mut IbvContext,
    pub wq_context: *mut c_void,
    pub pd: *mut IbvPd,
    pub cq: *mut IbvCq,
    pub wq_num: u32,
    pub handle: u32,
    pub state: u32,
    pub wq_type: u32,
    pub post_recv: Option<WqPostRecvFn>,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub events_completed: u32,
    pub comp_mask: u32,
}

/// `struct ibv_wq_init_attr`.
#[repr(C)]
pub struct IbvWqInitAttr {
    pub wq_context: *mut c_void,
    pub wq_type: u32,
    pub max_wr: u32,
    pub max_sge: u32,
    pub pd: *mut IbvPd,
    pub cq: *mut IbvCq,
    pub comp_mask: u32,
    pub create_flags: u32,
}

/// `struct ibv_wq_attr`.
#[repr(C)]
#[derive(Default)]
pub struct IbvWqAttr {
    pub attr_mask: u32,
    pub wq_state: u32,
    pub curr_wq_state: u32,
    pub flags: u32,
    pub flags_mask: u32,
}

/// `struct ibv_rwq_ind_table`.
#[repr(C)]
pub struct IbvRwqIndTable {
    pub context: *mut IbvContext,
    pub ind_tbl_handle: c_int,
    pub ind_tbl_num: c_int,
    pub comp_mask: u32,
}

/// `struct ibv_rwq_ind_table_init_attr`.
#[repr(C)]
pub struct IbvRwqIndTableInitAttr {
    pub log_ind_tbl_size: u32,
    pub ind_tbl: *mut *mut IbvWq,
    pub comp_mask: u32,
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IbvQpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
pub struct IbvQpInitAttr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut IbvCq,
    pub recv_cq: *mut IbvCq,
    pub srq: *mut c_void,
    pub cap: IbvQpCap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
}

/// `struct ibv_rx_hash_conf`.
#[repr(C)]
pub struct IbvRxHashConf {
    pub rx_hash_function: u8,
    pub rx_hash_key_len: u8,
    pub rx_hash_key: *mut u8,
    pub rx_hash_fields_mask: u64,
}

/// `struct ibv_qp_init_attr_ex`.
#[repr(C)]
pub struct IbvQpInitAttrEx {
    pub qp_context: *mut c_void,
    pub send_cq: *mut IbvCq,
    pub recv_cq: *mut IbvCq,
    pub srq: *mut c_void,
    pub cap: IbvQpCap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
    pub comp_mask: u32,
    pub pd: *mut IbvPd,
    pub xrcd: *mut c_void,
    pub create_flags: u32,
    pub max_tso_header: u16,
    pub rwq_ind_tbl: *mut IbvRwqIndTable,
    pub rx_hash_conf: IbvRxHashConf,
    pub source_qpn: u32,
    pub send_ops_flags: u64,
}

/// `struct ibv_qp_attr`. The two address-handle attributes (`struct
/// ibv_ah_attr`, 32 bytes, 8-aligned through `union ibv_gid`) are opaque: a raw
/// packet QP never uses them.
#[repr(C)]
pub struct IbvQpAttr {
    pub qp_state: u32,
    pub cur_qp_state: u32,
    pub path_mtu: u32,
    pub path_mig_state: u32,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub qp_access_flags: u32,
    pub cap: IbvQpCap,
    pub ah_attr: [u64; 4],
    pub alt_ah_attr: [u64; 4],
    pub pkey_index: u16,
    pub alt_pkey_index: u16,
    pub en_sqd_async_notify: u8,
    pub sq_draining: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub port_num: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub alt_port_num: u8,
    pub alt_timeout: u8,
    pub rate_limit: u32,
}

/// `struct ibv_sge`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvSge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_recv_wr`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IbvRecvWr {
    pub wr_id: u64,
    pub next: *mut IbvRecvWr,
    pub sg_list: *mut IbvSge,
    pub num_sge: c_int,
}

impl Default for IbvRecvWr {
    fn default() -> Self {
        IbvRecvWr {
            wr_id: 0,
            next: ptr::null_mut(),
            sg_list: ptr::null_mut(),
            num_sge: 0,
        }
    }
}

/// `struct ibv_send_wr`. The `wr` union (rdma/atomic/ud, 32 bytes) and the
/// trailing union (bind_mw/tso, 48 bytes) are opaque: a raw packet SEND uses
/// neither.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IbvSendWr {
    pub wr_id: u64,
    pub next: *mut IbvSendWr,
    pub sg_list: *mut IbvSge,
    pub num_sge: c_int,
    pub opcode: u32,
    pub send_flags: u32,
    pub imm_data: u32,
    pub wr: [u64; 4],
    pub qp_type: u32,
    pub tso: [u64; 6],
}

impl Default for IbvSendWr {
    fn default() -> Self {
        IbvSendWr {
            wr_id: 0,
            next: ptr::null_mut(),
            sg_list: ptr::null_mut(),
            num_sge: 0,
            opcode: 0,
            send_flags: 0,
            imm_data: 0,
            wr: [0; 4],
            qp_type: 0,
            tso: [0; 6],
        }
    }
}

/// `struct ibv_wc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IbvWc {
    pub wr_id: u64,
    pub status: u32,
    pub opcode: u32,
    pub vendor_err: u32,
    pub byte_len: u32,
    pub imm_data: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: u32,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

/// `struct ibv_flow_attr` (the specs follow it contiguously).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowAttr {
    pub comp_mask: u32,
    pub type_: u32,
    pub size: u16,
    pub priority: u16,
    pub num_of_specs: u8,
    pub port: u8,
    pub flags: u32,
}

/// `struct ibv_flow_eth_filter` (network byte order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IbvFlowEthFilter {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub ether_type: u16,
    pub vlan_tag: u16,
}

/// `struct ibv_flow_spec_eth`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowSpecEth {
    pub type_: u32,
    pub size: u16,
    pub val: IbvFlowEthFilter,
    pub mask: IbvFlowEthFilter,
}

/// `struct ibv_flow_ipv4_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowIpv4Filter {
    pub src_ip: u32,
    pub dst_ip: u32,
}

/// `struct ibv_flow_spec_ipv4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowSpecIpv4 {
    pub type_: u32,
    pub size: u16,
    pub val: IbvFlowIpv4Filter,
    pub mask: IbvFlowIpv4Filter,
}

/// `struct ibv_flow_ipv6_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowIpv6Filter {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub flow_label: u32,
    pub next_hdr: u8,
    pub traffic_class: u8,
    pub hop_limit: u8,
}

/// `struct ibv_flow_spec_ipv6`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowSpecIpv6 {
    pub type_: u32,
    pub size: u16,
    pub val: IbvFlowIpv6Filter,
    pub mask: IbvFlowIpv6Filter,
}

/// `struct ibv_flow_tcp_udp_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowTcpUdpFilter {
    pub dst_port: u16,
    pub src_port: u16,
}

/// `struct ibv_flow_spec_tcp_udp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowSpecTcpUdp {
    pub type_: u32,
    pub size: u16,
    pub val: IbvFlowTcpUdpFilter,
    pub mask: IbvFlowTcpUdpFilter,
}

/// `struct ibv_flow`.
#[repr(C)]
pub struct IbvFlow {
    pub comp_mask: u32,
    pub context: *mut IbvContext,
    pub handle: u32,
}

// Sizes rdma-core 44 has on x86-64 (the layout test checks every field on any
// architecture; these catch a broken mirror at compile time on the common one).
#[cfg(target_arch = "x86_64")]
const _: () = {
    assert!(size_of::<IbvContext>() == 328);
    assert!(offset_of!(IbvContext, ops) + offset_of!(IbvContextOps, poll_cq) == 96);
    assert!(offset_of!(IbvContext, ops) + offset_of!(IbvContextOps, post_send) == 208);
    assert!(offset_of!(IbvContext, ops) + offset_of!(IbvContextOps, post_recv) == 216);
    assert!(offset_of!(IbvContext, abi_compat) == 320);
    assert!(offset_of!(VerbsContext, context) - offset_of!(VerbsContext, ibv_create_flow) == 80);
    assert!(offset_of!(VerbsContext, context) - offset_of!(VerbsContext, ibv_destroy_flow) == 96);
    assert!(size_of::<IbvQp>() == 160);
    assert!(size_of::<IbvWc>() == 48);
    assert!(size_of::<IbvSendWr>() == 128);
    assert!(size_of::<IbvRecvWr>() == 32);
    assert!(size_of::<IbvQpAttr>() == 144);
    assert!(offset_of!(IbvQpAttr, port_num) == 129);
    assert!(size_of::<IbvFlowAttr>() == 20);
    assert!(size_of::<IbvFlowSpecEth>() == 40);
    assert!(size_of::<IbvPortAttr>() == 52);
    assert!(offset_of!(IbvMr, lkey) == 36);
    assert!(offset_of!(IbvDevice, name) == 24);
};

// ---------------------------------------------------------------------------
// errno

/// Set errno to 0 before a call whose failure may or may not set it.
fn clear_errno() {
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    unsafe { *libc::__errno_location() = 0 };
}

/// The errno a failed call left, or `fallback` if it left none (rdma-core does
/// not promise errno on every NULL return).
fn errno_or(fallback: i32) -> io::Error {
    // SAFETY: as in `clear_errno`.
    let e = unsafe { *libc::__errno_location() };
    io::Error::from_raw_os_error(if e == 0 { fallback } else { e })
}

/// Set errno (for the fake library).
#[cfg(test)]
pub(crate) fn set_errno(e: i32) {
    // SAFETY: as in `clear_errno`.
    unsafe { *libc::__errno_location() = e };
}

/// rdma-core verbs that return an int return 0 or a positive errno value (some
/// providers return -1 with errno set).
fn rc_to_result(rc: c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        r if r > 0 => Err(io::Error::from_raw_os_error(r)),
        _ => Err(errno_or(libc::EINVAL)),
    }
}

// ---------------------------------------------------------------------------
// The library

macro_rules! exported {
    ($($field:ident : $sym:literal => $ty:ty),* $(,)?) => {
        /// The functions libibverbs exports (dlsym'd once).
        #[derive(Clone, Copy)]
        pub struct Fns {
            $(#[doc = $sym] pub $field: $ty,)*
        }

        impl Fns {
            fn load(lib: &Library, library: &str) -> Result<Fns, Mlx5Error> {
                Ok(Fns {
                    $($field: {
                        // SAFETY: the type is the prototype in <infiniband/verbs.h>
                        // (rdma-core 44) of this exported, versioned symbol; the
                        // pointer stays valid while `lib` is loaded, and the Verbs
                        // value that keeps these pointers also keeps `lib`.
                        let s = unsafe { lib.get::<$ty>($sym) }.map_err(|e| {
                            Mlx5Error::LibraryTooOld {
                                library: library.to_string(),
                                symbol: $sym.to_string(),
                                reason: e.to_string(),
                            }
                        })?;
                        *s
                    },)*
                })
            }
        }
    };
}

exported! {
    get_device_list: "ibv_get_device_list" => unsafe extern "C" fn(*mut c_int) -> *mut *mut IbvDevice,
    free_device_list: "ibv_free_device_list" => unsafe extern "C" fn(*mut *mut IbvDevice),
    open_device: "ibv_open_device" => unsafe extern "C" fn(*mut IbvDevice) -> *mut IbvContext,
    close_device: "ibv_close_device" => unsafe extern "C" fn(*mut IbvContext) -> c_int,
    query_device: "ibv_query_device" => unsafe extern "C" fn(*mut IbvContext, *mut IbvDeviceAttr) -> c_int,
    query_port: "ibv_query_port" => unsafe extern "C" fn(*mut IbvContext, u8, *mut IbvPortAttr) -> c_int,
    alloc_pd: "ibv_alloc_pd" => unsafe extern "C" fn(*mut IbvContext) -> *mut IbvPd,
    dealloc_pd: "ibv_dealloc_pd" => unsafe extern "C" fn(*mut IbvPd) -> c_int,
    reg_mr: "ibv_reg_mr" => unsafe extern "C" fn(*mut IbvPd, *mut c_void, usize, c_int) -> *mut IbvMr,
    dereg_mr: "ibv_dereg_mr" => unsafe extern "C" fn(*mut IbvMr) -> c_int,
    create_cq: "ibv_create_cq" => unsafe extern "C" fn(*mut IbvContext, c_int, *mut c_void, *mut c_void, c_int) -> *mut IbvCq,
    destroy_cq: "ibv_destroy_cq" => unsafe extern "C" fn(*mut IbvCq) -> c_int,
    create_qp: "ibv_create_qp" => unsafe extern "C" fn(*mut IbvPd, *mut IbvQpInitAttr) -> *mut IbvQp,
    modify_qp: "ibv_modify_qp" => unsafe extern "C" fn(*mut IbvQp, *mut IbvQpAttr, c_int) -> c_int,
    destroy_qp: "ibv_destroy_qp" => unsafe extern "C" fn(*mut IbvQp) -> c_int,
}

/// Adds (`true`) or removes an FDB entry for a MAC on an interface.
pub type FdbFn = fn(ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()>;

/// libibverbs, loaded: its exported functions, plus the netlink FDB request.
pub struct Verbs {
    /// What was loaded (for messages).
    pub library: String,
    fns: Fns,
    fdb: FdbFn,
    /// Keeps the shared object mapped while any function pointer may be used.
    _lib: Option<Library>,
}

impl std::fmt::Debug for Verbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verbs")
            .field("library", &self.library)
            .finish()
    }
}

impl Verbs {
    /// dlopen `libibverbs.so.1`.
    pub fn load() -> Result<Arc<Verbs>, Mlx5Error> {
        Verbs::load_from(LIBIBVERBS)
    }

    /// dlopen `library` (a SONAME or a path) and look up every function we use.
    pub fn load_from(library: &str) -> Result<Arc<Verbs>, Mlx5Error> {
        // SAFETY: loading runs the library's initialisers; libibverbs' only
        // initialise its own state (it reads /etc/libibverbs.d lazily).
        let lib = unsafe { Library::new(library) }.map_err(|e| Mlx5Error::LibraryMissing {
            library: library.to_string(),
            reason: e.to_string(),
        })?;
        let fns = Fns::load(&lib, library)?;
        Ok(Arc::new(Verbs {
            library: library.to_string(),
            fns,
            fdb: netlink_fdb,
            _lib: Some(lib),
        }))
    }

    /// A library made of the given functions (the fake NIC of the tests).
    #[cfg(test)]
    pub(crate) fn from_fns(library: &str, fns: Fns, fdb: FdbFn) -> Arc<Verbs> {
        Arc::new(Verbs {
            library: library.to_string(),
            fns,
            fdb,
            _lib: None,
        })
    }

    /// The names of the RDMA devices libibverbs sees (those with a provider).
    pub fn device_names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        self.with_devices(|_, name| {
            names.push(name.to_string());
            false
        })?;
        Ok(names)
    }

    /// Walk the device list until `f` returns true; the device it was given is
    /// valid only during the call.
    fn with_devices(&self, mut f: impl FnMut(*mut IbvDevice, &str) -> bool) -> io::Result<()> {
        let mut n: c_int = 0;
        clear_errno();
        // SAFETY: exported function, n is a valid out-pointer.
        let list = unsafe { (self.fns.get_device_list)(&mut n) };
        if list.is_null() {
            let e = errno_or(libc::ENODEV);
            // No kernel RDMA support at all is "no device", not a failure.
            if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::ENODEV)) {
                return Ok(());
            }
            return Err(e);
        }
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds n valid device pointers (NULL-terminated).
            let dev = unsafe { *list.add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: dev points to a live ibv_device; name is NUL-terminated
            // within its 64 bytes (the library copies a sysfs name into it).
            let name = unsafe { CStr::from_ptr((*dev).name.as_ptr()) };
            if f(dev, &name.to_string_lossy()) {
                break;
            }
        }
        // SAFETY: the list came from get_device_list and is freed once; devices
        // we opened stay valid (the library refcounts them).
        unsafe { (self.fns.free_device_list)(list) };
        Ok(())
    }

    /// Open the device named `ibdev` and allocate its protection domain.
    /// `Ok(None)` if libibverbs does not list it.
    pub fn open(self: &Arc<Self>, ibdev: &str) -> io::Result<Option<Arc<Context>>> {
        let mut opened: Option<io::Result<NonNull<IbvContext>>> = None;
        self.with_devices(|dev, name| {
            if name != ibdev {
                return false;
            }
            clear_errno();
            // SAFETY: dev is valid during the walk.
            let ctx = unsafe { (self.fns.open_device)(dev) };
            opened = Some(NonNull::new(ctx).ok_or_else(|| errno_or(libc::ENODEV)));
            true
        })?;
        let ctx = match opened {
            None => return Ok(None),
            Some(r) => r?,
        };
        clear_errno();
        // SAFETY: ctx was just opened.
        let pd = unsafe { (self.fns.alloc_pd)(ctx.as_ptr()) };
        let Some(pd) = NonNull::new(pd) else {
            let e = errno_or(libc::ENOMEM);
            // SAFETY: ctx is open and owned by nobody else.
            unsafe { (self.fns.close_device)(ctx.as_ptr()) };
            return Err(e);
        };
        Ok(Some(Arc::new(Context {
            verbs: self.clone(),
            ctx,
            pd,
            name: ibdev.to_string(),
        })))
    }
}

// ---------------------------------------------------------------------------
// verbs_context ops

/// Cast a byte address to a pointer typed like a `VerbsContext` field, without
/// ever forming a reference to (or an in-bounds projection of) a struct that may
/// be smaller in an older library.
#[inline(always)]
fn typed<T>(p: *const u8, _field: fn(&VerbsContext) -> &T) -> *const T {
    p as *const T
}

/// The extension op `$field` of the context `$ctx`, as `verbs_get_ctx_op` finds
/// it: `None` unless the context is extended, its `sz` covers the op, and the op
/// is set. `$ctx` must point to a live `ibv_context`.
macro_rules! vctx_op {
    ($ctx:expr, $field:ident) => {{
        let ctx: *mut IbvContext = $ctx;
        // SAFETY: ctx is a live ibv_context (the macro's contract).
        let abi = unsafe { ptr::read(ptr::addr_of!((*ctx).abi_compat)) };
        if abi as usize != usize::MAX {
            None
        } else {
            let base = (ctx as *const u8).wrapping_sub(offset_of!(VerbsContext, context));
            // SAFETY: an extended context is embedded in a verbs_context, whose
            // `sz` sits immediately before it.
            let sz = unsafe {
                ptr::read(base.wrapping_add(offset_of!(VerbsContext, sz)) as *const usize)
            };
            let op_off = offset_of!(VerbsContext, $field);
            if sz < size_of::<VerbsContext>() - op_off {
                None
            } else {
                // SAFETY: `sz` says the library's verbs_context reaches this op.
                unsafe { ptr::read(typed(base.wrapping_add(op_off), |v| &v.$field)) }
            }
        }
    }};
}

fn eopnotsupp() -> io::Error {
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

trait Op<T> {
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
    verbs: Arc<Verbs>,
    ctx: NonNull<IbvContext>,
    pd: NonNull<IbvPd>,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRule {
    /// Lower wins.
    pub priority: u16,
    /// IB port number (1-based).
    pub port: u8,
    /// Destination MAC to match (`None`: any).
    pub dst_mac: Option<[u8; 6]>,
    /// VLAN id to match (`None`: any, tagged or not).
    pub vlan: Option<u16>,
    /// Match IPv4 (`Some(false)`) or IPv6 (`Some(true)`).
    pub ipv6: Option<bool>,
    /// Match TCP (`Some(true)`) or UDP (`Some(false)`).
    pub tcp: Option<bool>,
}

impl FlowRule {
    /// `ibv_flow_attr` followed by its specs, as `ibv_create_flow` reads them,
    /// written field by field at the mirrors' offsets (padding stays zero).
    /// Returned in u64 words so the buffer is 8-aligned.
    pub fn encode(&self) -> Vec<u64> {
        let eth = size_of::<IbvFlowSpecEth>();
        let l3 = match self.ipv6 {
            Some(false) => size_of::<IbvFlowSpecIpv4>(),
            Some(true) => size_of::<IbvFlowSpecIpv6>(),
            None => 0,
        };
        let l4 = if self.tcp.is_some() {
            size_of::<IbvFlowSpecTcpUdp>()
        } else {
            0
        };
        let total = size_of::<IbvFlowAttr>() + eth + l3 + l4;
        let mut b = vec![0u8; total.div_ceil(8) * 8];
        let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        let n_specs = 1 + (l3 != 0) as u8 + (l4 != 0) as u8;
        // ibv_flow_attr
        put(
            &mut b,
            offset_of!(IbvFlowAttr, type_),
            &IBV_FLOW_ATTR_NORMAL.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(IbvFlowAttr, size),
            &(total as u16).to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(IbvFlowAttr, priority),
            &self.priority.to_ne_bytes(),
        );
        put(&mut b, offset_of!(IbvFlowAttr, num_of_specs), &[n_specs]);
        put(&mut b, offset_of!(IbvFlowAttr, port), &[self.port]);
        // ibv_flow_spec_eth
        let e = size_of::<IbvFlowAttr>();
        put(
            &mut b,
            e + offset_of!(IbvFlowSpecEth, type_),
            &IBV_FLOW_SPEC_ETH.to_ne_bytes(),
        );
        put(
            &mut b,
            e + offset_of!(IbvFlowSpecEth, size),
            &(eth as u16).to_ne_bytes(),
        );
        let val = e + offset_of!(IbvFlowSpecEth, val);
        let mask = e + offset_of!(IbvFlowSpecEth, mask);
        if let Some(mac) = self.dst_mac {
            put(&mut b, val + offset_of!(IbvFlowEthFilter, dst_mac), &mac);
            put(
                &mut b,
                mask + offset_of!(IbvFlowEthFilter, dst_mac),
                &[0xff; 6],
            );
        }
        if let Some(vid) = self.vlan {
            put(
                &mut b,
                val + offset_of!(IbvFlowEthFilter, vlan_tag),
                &(vid & 0x0fff).to_be_bytes(),
            );
            put(
                &mut b,
                mask + offset_of!(IbvFlowEthFilter, vlan_tag),
                &0x0fffu16.to_be_bytes(),
            );
        }
        // L3 and L4 specs match the protocol only (all-zero value and mask).
        let mut at = e + eth;
        if let Some(v6) = self.ipv6 {
            let (ty, size) = if v6 {
                (IBV_FLOW_SPEC_IPV6, size_of::<IbvFlowSpecIpv6>())
            } else {
                (IBV_FLOW_SPEC_IPV4, size_of::<IbvFlowSpecIpv4>())
            };
            put(&mut b, at, &ty.to_ne_bytes());
            put(
                &mut b,
                at + offset_of!(IbvFlowSpecIpv4, size),
                &(size as u16).to_ne_bytes(),
            );
            at += size;
        }
        if let Some(tcp) = self.tcp {
            let ty = if tcp {
                IBV_FLOW_SPEC_TCP
            } else {
                IBV_FLOW_SPEC_UDP
            };
            put(&mut b, at, &ty.to_ne_bytes());
            put(
                &mut b,
                at + offset_of!(IbvFlowSpecTcpUdp, size),
                &(size_of::<IbvFlowSpecTcpUdp>() as u16).to_ne_bytes(),
            );
        }
        b.chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }
}

impl Context {
    fn fns(&self) -> &Fns {
        &self.verbs.fns
    }

    /// Add or remove an FDB entry (netlink, or the fake's record).
    pub fn fdb(&self, ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()> {
        (self.verbs.fdb)(ifindex, mac, add)
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

/// A registered memory region covering one mempool.
pub struct Mr {
    ctx: Arc<Context>,
    mr: NonNull<IbvMr>,
    /// The local key every SGE into this memory carries.
    pub lkey: u32,
    /// First byte.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
    _pool: Mempool,
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
    ctx: Arc<Context>,
    cq: NonNull<IbvCq>,
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
    ctx: Arc<Context>,
    _cq: Arc<Cq>,
    wq: NonNull<IbvWq>,
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
    ctx: Arc<Context>,
    _wqs: Vec<Arc<Wq>>,
    table: NonNull<IbvRwqIndTable>,
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
    ctx: Arc<Context>,
    _cq: Option<Arc<Cq>>,
    _table: Option<Arc<IndTable>>,
    qp: NonNull<IbvQp>,
    /// Capabilities granted at creation (send QPs).
    pub cap: IbvQpCap,
    port: u8,
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
    qp: Arc<Qp>,
    flow: NonNull<IbvFlow>,
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

// ---------------------------------------------------------------------------
// netlink: the FDB entry that lets a VF's vport accept an extra MAC

const NDA_LLADDR: u16 = 2;
const NTF_SELF: u8 = 0x02;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;

/// `bridge fdb add|del MAC dev IF self`: an RTM_NEWNEIGH/RTM_DELNEIGH with
/// NTF_SELF on the interface, which puts MAC into its unicast filter (for mlx5:
/// the vport context the e-switch forwards by). DPDK's mlx5 does the same
/// (`mlx5_nl_mac_addr_modify`). Needs CAP_NET_ADMIN.
pub fn netlink_fdb(ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // nlmsghdr (16) + ndmsg (12) + rtattr(NDA_LLADDR, 6 bytes, padded to 12).
    let mut msg = [0u8; 40];
    let len = msg.len() as u32;
    let (ty, flags) = if add {
        (
            libc::RTM_NEWNEIGH,
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL,
        )
    } else {
        (libc::RTM_DELNEIGH, libc::NLM_F_REQUEST | libc::NLM_F_ACK)
    };
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&ty.to_ne_bytes());
    msg[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence
    // ndmsg: family, pad1, pad2, ifindex, state, flags, type
    msg[16] = libc::AF_BRIDGE as u8;
    msg[20..24].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    msg[24..26].copy_from_slice(&(NUD_NOARP | NUD_PERMANENT).to_ne_bytes());
    msg[26] = NTF_SELF;
    // rtattr: len (4 + 6), type
    msg[28..30].copy_from_slice(&10u16.to_ne_bytes());
    msg[30..32].copy_from_slice(&NDA_LLADDR.to_ne_bytes());
    msg[32..38].copy_from_slice(&mac);
    // SAFETY: an all-zero sockaddr_nl is valid; we set the family (kernel: pid 0).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: msg and sa are valid for their lengths.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            msg.as_ptr() as *const c_void,
            msg.len(),
            0,
            &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ack = [0u8; 512];
    // SAFETY: ack is writable for its length.
    let got = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            ack.as_mut_ptr() as *mut c_void,
            ack.len(),
            0,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_netlink_ack(&ack[..got as usize])
}

/// The result an NLMSG_ERROR acknowledgement carries.
fn parse_netlink_ack(buf: &[u8]) -> io::Result<()> {
    if buf.len() < 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    }
    let ty = u16::from_ne_bytes([buf[4], buf[5]]);
    if ty != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected netlink reply type {ty}"),
        ));
    }
    let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if err == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(-err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_rule_encoding_is_attr_then_contiguous_specs() {
        let rule = FlowRule {
            priority: 1,
            port: 1,
            dst_mac: Some([2, 0, 0, 0, 0, 1]),
            vlan: Some(100),
            ipv6: Some(false),
            tcp: Some(true),
        };
        let words = rule.encode();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let total = 20 + 40 + 24 + 16;
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]) as usize, total);
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 1, "priority");
        assert_eq!(bytes[12], 3, "num_of_specs");
        assert_eq!(bytes[13], 1, "port");
        // eth spec at 20: type, size, dst mac, mask
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 0x20);
        assert_eq!(u16::from_le_bytes([bytes[24], bytes[25]]), 40);
        assert_eq!(&bytes[26..32], &[2, 0, 0, 0, 0, 1]);
        // vlan_tag val at 20+6+14, network order
        assert_eq!(&bytes[40..42], &100u16.to_be_bytes());
        assert_eq!(&bytes[42..48], &[0xff; 6], "dst mac mask");
        assert_eq!(&bytes[56..58], &0x0fffu16.to_be_bytes(), "vlan mask");
        assert_eq!(u32::from_le_bytes(bytes[60..64].try_into().unwrap()), 0x30);
        assert_eq!(u32::from_le_bytes(bytes[84..88].try_into().unwrap()), 0x40);
        let plain = FlowRule {
            priority: 2,
            port: 1,
            dst_mac: None,
            vlan: None,
            ipv6: None,
            tcp: None,
        }
        .encode();
        let b: Vec<u8> = plain.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(b[12], 1);
        assert!(b[26..60].iter().all(|x| *x == 0), "promiscuous: zero masks");
    }

    #[test]
    fn netlink_ack_parsing() {
        let mut ok = [0u8; 36];
        ok[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(parse_netlink_ack(&ok).is_ok());
        ok[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert_eq!(
            parse_netlink_ack(&ok).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(parse_netlink_ack(&ok[..8]).is_err());
    }

    #[test]
    fn bogus_library_name_is_library_missing() {
        let e = Verbs::load_from("libibverbs-does-not-exist.so.1").unwrap_err();
        assert!(matches!(e, Mlx5Error::LibraryMissing { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("ibverbs-providers")
                && msg.contains("libibverbs1")
                && msg.contains("Containerfile"),
            "{msg}"
        );
    }

    #[test]
    fn netlink_fdb_adds_and_removes_an_entry_on_a_veth() {
        let Some(pair) = nicpoll::port::testing::VethPair::create("npmlx5fdb") else {
            return;
        };
        let ifindex: u32 = std::fs::read_to_string(format!("/sys/class/net/{}/ifindex", pair.a))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mac = [0x02, 0x6e, 0x70, 0x00, 0x00, 0x09];
        let show = || {
            std::process::Command::new("bridge")
                .args(["fdb", "show", "dev", &pair.a])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        match netlink_fdb(ifindex, mac, true) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                eprintln!("skipped: no CAP_NET_ADMIN for the FDB request ({e})");
                return;
            }
            Err(e) => panic!("RTM_NEWNEIGH: {e}"),
        }
        assert_eq!(
            netlink_fdb(ifindex, mac, true).unwrap_err().raw_os_error(),
            Some(libc::EEXIST),
            "NLM_F_EXCL: a second add is refused"
        );
        if let Ok(out) = show() {
            assert!(out.contains("02:6e:70:00:00:09"), "bridge fdb show: {out}");
        }
        netlink_fdb(ifindex, mac, false).expect("RTM_DELNEIGH");
        if let Ok(out) = show() {
            assert!(!out.contains("02:6e:70:00:00:09"), "bridge fdb show: {out}");
        }
        assert!(netlink_fdb(ifindex, mac, false).is_err(), "already removed");
    }

    #[test]
    fn a_library_without_the_verbs_is_too_old() {
        // libc loads but exports no ibv_* function.
        let e = Verbs::load_from("libc.so.6").unwrap_err();
        assert!(
            matches!(&e, Mlx5Error::LibraryTooOld { symbol, .. } if symbol == "ibv_get_device_list"),
            "{e:?}"
        );
    }

    #[test]
    fn real_library_loads_and_lists_devices() {
        match Verbs::load() {
            Ok(v) => {
                let names = v.device_names().expect("ibv_get_device_list");
                eprintln!("libibverbs loaded; RDMA devices: {names:?}");
            }
            Err(e) => eprintln!("skipped: {e}"),
        }
    }
}
