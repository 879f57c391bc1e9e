//! `#[repr(C)]` mirrors of the `<infiniband/verbs.h>` structs and constants
//! the driver touches (rdma-core 44 layouts; the layout test compares each with
//! the installed header). Data only: no calls.
//!
//! Some mirrors only the fake NIC and the layout test use (completion error
//! codes, port states): outside tests they are unused, which is no reason to
//! drop a mirror. Test builds, which use every part of the header we mirror,
//! still report what nothing uses.
#![cfg_attr(not(test), allow(dead_code))]

use std::ffi::{c_char, c_int, c_void};
#[cfg(target_arch = "x86_64")]
use std::mem::{offset_of, size_of};
use std::ptr;

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
pub const IBV_WC_LOC_LEN_ERR: u32 = 1;
/// `IBV_WC_LOC_PROT_ERR`.
pub const IBV_WC_LOC_PROT_ERR: u32 = 4;
/// `IBV_WC_WR_FLUSH_ERR`.
pub const IBV_WC_WR_FLUSH_ERR: u32 = 5;
/// `IBV_WC_GENERAL_ERR`.
pub const IBV_WC_GENERAL_ERR: u32 = 21;
/// `IBV_WC_SEND` (completion opcode).
pub const IBV_WC_SEND: u32 = 0;
/// `IBV_WC_RECV` (completion opcode).
pub const IBV_WC_RECV: u32 = 1 << 7;
/// `IBV_PORT_ACTIVE`.
pub const IBV_PORT_ACTIVE: u32 = 4;
/// `IBV_LINK_LAYER_INFINIBAND`.
pub const IBV_LINK_LAYER_INFINIBAND: u8 = 1;
/// `IBV_LINK_LAYER_ETHERNET`.
pub const IBV_LINK_LAYER_ETHERNET: u8 = 2;
/// `IBV_FLOW_ATTR_NORMAL`.
pub const IBV_FLOW_ATTR_NORMAL: u32 = 0;
/// `IBV_FLOW_SPEC_ETH`.
pub const IBV_FLOW_SPEC_ETH: u32 = 0x20;
/// `IBV_FLOW_SPEC_IPV4`.
pub const IBV_FLOW_SPEC_IPV4: u32 = 0x30;
/// `IBV_FLOW_SPEC_IPV4_EXT` (IPv4 with protocol, ToS, TTL, flags).
pub const IBV_FLOW_SPEC_IPV4_EXT: u32 = 0x32;
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
pub const IBV_WQS_ERR: u32 = 2;
/// `IBV_WQ_ATTR_STATE`.
pub const IBV_WQ_ATTR_STATE: u32 = 1;
/// `IBV_WC_LOC_QP_OP_ERR`.
pub const IBV_WC_LOC_QP_OP_ERR: u32 = 2;
/// `IBV_WC_IP_CSUM_OK` (a `wc_flags` bit).
pub const IBV_WC_IP_CSUM_OK: u32 = 1 << 2;
/// `IBV_WC_EX_WITH_BYTE_LEN` (`ibv_cq_init_attr_ex.wc_flags`).
pub const IBV_WC_EX_WITH_BYTE_LEN: u64 = 1;
/// `IBV_CQ_INIT_ATTR_MASK_FLAGS`.
pub const IBV_CQ_INIT_ATTR_MASK_FLAGS: u32 = 1;
/// `IBV_CREATE_CQ_ATTR_SINGLE_THREADED`: the extended poll functions
/// (`ibv_start_poll` ...) of such a CQ take no lock.
pub const IBV_CREATE_CQ_ATTR_SINGLE_THREADED: u32 = 1;
/// `IBV_ACCESS_RELAXED_ORDERING` (`IBV_ACCESS_OPTIONAL_FIRST`).
pub const IBV_ACCESS_RELAXED_ORDERING: c_int = 1 << 20;
/// `IBV_EVENT_CQ_ERR`.
pub const IBV_EVENT_CQ_ERR: u32 = 0;
/// `IBV_EVENT_QP_FATAL`.
pub const IBV_EVENT_QP_FATAL: u32 = 1;
/// `IBV_EVENT_DEVICE_FATAL`.
pub const IBV_EVENT_DEVICE_FATAL: u32 = 8;
/// `IBV_EVENT_PORT_ACTIVE`.
pub const IBV_EVENT_PORT_ACTIVE: u32 = 9;
/// `IBV_EVENT_PORT_ERR`.
pub const IBV_EVENT_PORT_ERR: u32 = 10;
/// `IBV_EVENT_WQ_FATAL`.
pub const IBV_EVENT_WQ_FATAL: u32 = 19;

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
    pub alloc_parent_domain:
        Option<unsafe extern "C" fn(*mut IbvContext, *mut IbvParentDomainInitAttr) -> *mut IbvPd>,
    pub dealloc_td: Option<unsafe extern "C" fn(*mut IbvTd) -> c_int>,
    pub alloc_td: Option<unsafe extern "C" fn(*mut IbvContext, *mut IbvTdInitAttr) -> *mut IbvTd>,
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
    pub create_cq_ex:
        Option<unsafe extern "C" fn(*mut IbvContext, *mut IbvCqInitAttrEx) -> *mut IbvCqEx>,
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

/// `ibv_cq_ex.start_poll`.
pub type StartPollFn = unsafe extern "C" fn(*mut IbvCqEx, *mut IbvPollCqAttr) -> c_int;
/// `ibv_cq_ex.next_poll`.
pub type NextPollFn = unsafe extern "C" fn(*mut IbvCqEx) -> c_int;
/// `ibv_cq_ex.end_poll`.
pub type EndPollFn = unsafe extern "C" fn(*mut IbvCqEx);
/// `ibv_cq_ex.read_byte_len` and the other `uint32_t` readers.
pub type ReadU32Fn = unsafe extern "C" fn(*mut IbvCqEx) -> u32;

/// `struct ibv_cq_ex`: an `ibv_cq` prefix, then the current completion and the
/// extended poll functions (`ibv_start_poll`, `ibv_next_poll`, `ibv_end_poll`
/// and the `ibv_wc_read_*` readers are the header's inline calls of these).
#[repr(C)]
pub struct IbvCqEx {
    pub context: *mut IbvContext,
    pub channel: *mut c_void,
    pub cq_context: *mut c_void,
    pub handle: u32,
    pub cqe: c_int,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub comp_events_completed: u32,
    pub async_events_completed: u32,
    pub comp_mask: u32,
    pub status: u32,
    pub wr_id: u64,
    pub start_poll: Option<StartPollFn>,
    pub next_poll: Option<NextPollFn>,
    pub end_poll: Option<EndPollFn>,
    pub read_opcode: Option<ReadU32Fn>,
    pub read_vendor_err: Option<ReadU32Fn>,
    pub read_byte_len: Option<ReadU32Fn>,
    pub read_imm_data: Option<ReadU32Fn>,
    pub read_qp_num: Option<ReadU32Fn>,
    pub read_src_qp: Option<ReadU32Fn>,
    pub read_wc_flags: Option<ReadU32Fn>,
    pub read_slid: Option<ReadU32Fn>,
    pub read_sl: Unused,
    pub read_dlid_path_bits: Unused,
    pub read_completion_ts: Unused,
    pub read_cvlan: Unused,
    pub read_flow_tag: Option<ReadU32Fn>,
    pub read_tm_info: Unused,
    pub read_completion_wallclock_ns: Unused,
}

/// `struct ibv_cq_init_attr_ex`.
#[repr(C)]
pub struct IbvCqInitAttrEx {
    pub cqe: u32,
    pub cq_context: *mut c_void,
    pub channel: *mut c_void,
    pub comp_vector: u32,
    pub wc_flags: u64,
    pub comp_mask: u32,
    pub flags: u32,
    pub parent_domain: *mut IbvPd,
}

/// `struct ibv_poll_cq_attr`.
#[repr(C)]
#[derive(Default)]
pub struct IbvPollCqAttr {
    pub comp_mask: u32,
}

/// `struct ibv_td_init_attr`.
#[repr(C)]
#[derive(Default)]
pub struct IbvTdInitAttr {
    pub comp_mask: u32,
}

/// `struct ibv_td`.
#[repr(C)]
pub struct IbvTd {
    pub context: *mut IbvContext,
}

/// `struct ibv_parent_domain_init_attr`.
#[repr(C)]
pub struct IbvParentDomainInitAttr {
    pub pd: *mut IbvPd,
    pub td: *mut IbvTd,
    pub comp_mask: u32,
    pub alloc: Unused,
    pub free: Unused,
    pub pd_context: *mut c_void,
}

/// `struct ibv_async_event`: the element union (a CQ, QP, SRQ or WQ pointer,
/// or a port number) and the event type.
#[repr(C)]
pub struct IbvAsyncEvent {
    pub element: *mut c_void,
    pub event_type: u32,
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

/// `struct ibv_flow_ipv4_ext_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowIpv4ExtFilter {
    pub src_ip: u32,
    pub dst_ip: u32,
    pub proto: u8,
    pub tos: u8,
    pub ttl: u8,
    pub flags: u8,
}

/// `struct ibv_flow_spec_ipv4_ext`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IbvFlowSpecIpv4Ext {
    pub type_: u32,
    pub size: u16,
    pub val: IbvFlowIpv4ExtFilter,
    pub mask: IbvFlowIpv4ExtFilter,
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
