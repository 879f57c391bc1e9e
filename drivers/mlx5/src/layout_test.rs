//! The layout test: every size and field offset the FFI mirrors rely on,
//! compared with what the C compiler computes from the installed
//! `<infiniband/verbs.h>`, and from a copy grown as newer rdma-core releases
//! grew it. Skips through `nicpoll_testkit` (a failure under CI) when `cc` or
//! the header is missing, decided by the compiler before the comparison runs;
//! CI installs gcc and libibverbs-dev.
#![deny(unsafe_code)]

use std::mem::{offset_of, size_of};
use std::path::PathBuf;

use crate::c_program::CProgram;
use crate::verbs::fake;
use crate::verbs::*;

/// (C expression, value our mirror gives).
type Item = (String, usize);

/// `(C name, our value)` for constants whose Rust name is their C name:
/// `stringify!` makes the name asked of the C compiler the very one checked,
/// which a hand-written `("NAME", NAME)` pair does not. `m::{..}` reads the
/// constants from module `m`.
macro_rules! c_named {
    ($t:ty; $($c:ident),+ $(,)?) => {
        [$((stringify!($c), $c as $t)),+]
    };
    ($t:ty; $m:ident::{$($c:ident),+ $(,)?}) => {
        [$((stringify!($c), $m::$c as $t)),+]
    };
}
pub(crate) use c_named;

macro_rules! size {
    ($v:ident, $c:literal, $t:ty) => {
        $v.push((format!("sizeof(struct {})", $c), size_of::<$t>()));
    };
}

macro_rules! off {
    ($v:ident, $c:literal, $t:ty, $($f:ident $(= $cf:literal)?),+ $(,)?) => {
        $(
            #[allow(unused_mut, unused_assignments)]
            let mut cname = stringify!($f).to_string();
            $(cname = $cf.to_string();)?
            $v.push((
                format!("offsetof(struct {}, {})", $c, cname),
                offset_of!($t, $f),
            ));
        )+
    };
}

macro_rules! ops {
    ($v:ident, $($f:ident),+ $(,)?) => {
        $(
            $v.push((
                format!("offsetof(struct ibv_context, ops.{})", stringify!($f)),
                offset_of!(IbvContext, ops) + offset_of!(IbvContextOps, $f),
            ));
        )+
    };
}

/// A flow spec's size and its `type`, `size`, `val`, `mask` offsets (every kind
/// of spec has this layout around its own filter).
macro_rules! flow_spec {
    ($v:ident, $c:literal, $t:ty) => {
        size!($v, $c, $t);
        off!($v, $c, $t, type_ = "type", size, val, mask);
    };
}

/// Offsets from each `verbs_context` field to the embedded `ibv_context`: what
/// the driver actually uses (`context - N`).
macro_rules! vctx {
    ($v:ident, $($f:ident $(= $cf:literal)?),+ $(,)?) => {
        $(
            #[allow(unused_mut, unused_assignments)]
            let mut cname = stringify!($f).to_string();
            $(cname = $cf.to_string();)?
            $v.push((
                format!(
                    "offsetof(struct verbs_context, context) - offsetof(struct verbs_context, {})",
                    cname
                ),
                offset_of!(VerbsContext, context) - offset_of!(VerbsContext, $f),
            ));
        )+
    };
}

fn items() -> Vec<Item> {
    let mut v: Vec<Item> = Vec::new();
    size!(v, "ibv_device", IbvDevice);
    off!(
        v,
        "ibv_device",
        IbvDevice,
        _ops,
        node_type,
        transport_type,
        name,
        dev_name,
        dev_path,
        ibdev_path
    );

    size!(v, "ibv_context_ops", IbvContextOps);
    ops!(
        v,
        _compat_query_device,
        _compat_query_port,
        _compat_alloc_pd,
        _compat_dealloc_pd,
        _compat_reg_mr,
        _compat_rereg_mr,
        _compat_dereg_mr,
        alloc_mw,
        bind_mw,
        dealloc_mw,
        _compat_create_cq,
        poll_cq,
        req_notify_cq,
        _compat_cq_event,
        _compat_resize_cq,
        _compat_destroy_cq,
        _compat_create_srq,
        _compat_modify_srq,
        _compat_query_srq,
        _compat_destroy_srq,
        post_srq_recv,
        _compat_create_qp,
        _compat_query_qp,
        _compat_modify_qp,
        _compat_destroy_qp,
        post_send,
        post_recv,
        _compat_create_ah,
        _compat_destroy_ah,
        _compat_attach_mcast,
        _compat_detach_mcast,
        _compat_async_event,
    );

    size!(v, "ibv_context", IbvContext);
    off!(
        v,
        "ibv_context",
        IbvContext,
        device,
        ops,
        cmd_fd,
        async_fd,
        num_comp_vectors,
        mutex,
        abi_compat
    );

    // rdma-core adds ops at the front of verbs_context (six more in v59), so
    // what must hold is the distance from our first op to the end.
    v.push((
        "sizeof(struct verbs_context) - offsetof(struct verbs_context, query_port)".into(),
        size_of::<VerbsContext>() - offset_of!(VerbsContext, query_port),
    ));
    vctx!(
        v,
        query_port,
        advise_mr,
        alloc_null_mr,
        read_counters,
        attach_counters_point_flow,
        create_counters,
        destroy_counters,
        reg_dm_mr,
        alloc_dm,
        free_dm,
        modify_flow_action_esp,
        destroy_flow_action,
        create_flow_action_esp,
        modify_qp_rate_limit,
        alloc_parent_domain,
        dealloc_td,
        alloc_td,
        modify_cq,
        post_srq_ops,
        destroy_rwq_ind_table,
        create_rwq_ind_table,
        destroy_wq,
        modify_wq,
        create_wq,
        query_rt_values,
        create_cq_ex,
        priv_ = "priv",
        query_device_ex,
        ibv_destroy_flow,
        abi_placeholder2 = "ABI_placeholder2",
        ibv_create_flow,
        abi_placeholder1 = "ABI_placeholder1",
        open_qp,
        create_qp_ex,
        get_srq_num,
        create_srq_ex,
        open_xrcd,
        close_xrcd,
        _abi_placeholder3 = "_ABI_placeholder3",
        sz,
    );

    size!(v, "ibv_device_attr", IbvDeviceAttr);
    off!(
        v,
        "ibv_device_attr",
        IbvDeviceAttr,
        fw_ver,
        node_guid,
        sys_image_guid,
        max_mr_size,
        page_size_cap,
        vendor_id,
        vendor_part_id,
        hw_ver,
        max_qp,
        max_qp_wr,
        device_cap_flags,
        max_sge,
        max_sge_rd,
        max_cq,
        max_cqe,
        max_mr,
        max_pd,
        max_qp_rd_atom,
        max_ee_rd_atom,
        max_res_rd_atom,
        max_qp_init_rd_atom,
        max_ee_init_rd_atom,
        atomic_cap,
        max_ee,
        max_rdd,
        max_mw,
        max_raw_ipv6_qp,
        max_raw_ethy_qp,
        max_mcast_grp,
        max_mcast_qp_attach,
        max_total_mcast_qp_attach,
        max_ah,
        max_fmr,
        max_map_per_fmr,
        max_srq,
        max_srq_wr,
        max_srq_sge,
        max_pkeys,
        local_ca_ack_delay,
        phys_port_cnt,
    );

    // rdma-core 49 appended active_speed_ex; libibverbs copies a shorter
    // struct's worth (`__lib_query_port`), so ours may be a prefix.
    v.push((
        format!(
            "sizeof(struct ibv_port_attr) >= {}",
            size_of::<IbvPortAttr>()
        ),
        1,
    ));
    off!(
        v,
        "ibv_port_attr",
        IbvPortAttr,
        state,
        max_mtu,
        active_mtu,
        gid_tbl_len,
        port_cap_flags,
        max_msg_sz,
        bad_pkey_cntr,
        qkey_viol_cntr,
        pkey_tbl_len,
        lid,
        sm_lid,
        lmc,
        max_vl_num,
        sm_sl,
        subnet_timeout,
        init_type_reply,
        active_width,
        active_speed,
        phys_state,
        link_layer,
        flags,
        port_cap_flags2,
    );

    size!(v, "ibv_pd", IbvPd);
    off!(v, "ibv_pd", IbvPd, context, handle);

    size!(v, "ibv_mr", IbvMr);
    off!(
        v, "ibv_mr", IbvMr, context, pd, addr, length, handle, lkey, rkey
    );

    size!(v, "ibv_cq", IbvCq);
    off!(
        v,
        "ibv_cq",
        IbvCq,
        context,
        channel,
        cq_context,
        handle,
        cqe,
        mutex,
        cond,
        comp_events_completed,
        async_events_completed,
    );

    size!(v, "ibv_cq_ex", IbvCqEx);
    off!(
        v,
        "ibv_cq_ex",
        IbvCqEx,
        context,
        channel,
        cq_context,
        handle,
        cqe,
        mutex,
        cond,
        comp_events_completed,
        async_events_completed,
        comp_mask,
        status,
        wr_id,
        start_poll,
        next_poll,
        end_poll,
        read_opcode,
        read_vendor_err,
        read_byte_len,
        read_imm_data,
        read_qp_num,
        read_src_qp,
        read_wc_flags,
        read_slid,
        read_sl,
        read_dlid_path_bits,
        read_completion_ts,
        read_cvlan,
        read_flow_tag,
        read_tm_info,
        read_completion_wallclock_ns,
    );
    size!(v, "ibv_cq_init_attr_ex", IbvCqInitAttrEx);
    off!(
        v,
        "ibv_cq_init_attr_ex",
        IbvCqInitAttrEx,
        cqe,
        cq_context,
        channel,
        comp_vector,
        wc_flags,
        comp_mask,
        flags,
        parent_domain
    );
    size!(v, "ibv_poll_cq_attr", IbvPollCqAttr);
    size!(v, "ibv_td_init_attr", IbvTdInitAttr);
    size!(v, "ibv_td", IbvTd);
    size!(v, "ibv_parent_domain_init_attr", IbvParentDomainInitAttr);
    off!(
        v,
        "ibv_parent_domain_init_attr",
        IbvParentDomainInitAttr,
        pd,
        td,
        comp_mask,
        alloc,
        free,
        pd_context
    );
    size!(v, "ibv_async_event", IbvAsyncEvent);
    off!(v, "ibv_async_event", IbvAsyncEvent, element, event_type);

    size!(v, "ibv_qp", IbvQp);
    off!(
        v,
        "ibv_qp",
        IbvQp,
        context,
        qp_context,
        pd,
        send_cq,
        recv_cq,
        srq,
        handle,
        qp_num,
        state,
        qp_type,
        mutex,
        cond,
        events_completed,
    );

    size!(v, "ibv_wq", IbvWq);
    off!(
        v,
        "ibv_wq",
        IbvWq,
        context,
        wq_context,
        pd,
        cq,
        wq_num,
        handle,
        state,
        wq_type,
        post_recv,
        mutex,
        cond,
        events_completed,
        comp_mask,
    );

    size!(v, "ibv_wq_init_attr", IbvWqInitAttr);
    off!(
        v,
        "ibv_wq_init_attr",
        IbvWqInitAttr,
        wq_context,
        wq_type,
        max_wr,
        max_sge,
        pd,
        cq,
        comp_mask,
        create_flags
    );

    size!(v, "ibv_wq_attr", IbvWqAttr);
    off!(
        v,
        "ibv_wq_attr",
        IbvWqAttr,
        attr_mask,
        wq_state,
        curr_wq_state,
        flags,
        flags_mask
    );

    size!(v, "ibv_rwq_ind_table", IbvRwqIndTable);
    off!(
        v,
        "ibv_rwq_ind_table",
        IbvRwqIndTable,
        context,
        ind_tbl_handle,
        ind_tbl_num,
        comp_mask
    );

    size!(v, "ibv_rwq_ind_table_init_attr", IbvRwqIndTableInitAttr);
    off!(
        v,
        "ibv_rwq_ind_table_init_attr",
        IbvRwqIndTableInitAttr,
        log_ind_tbl_size,
        ind_tbl,
        comp_mask
    );

    size!(v, "ibv_qp_cap", IbvQpCap);
    off!(
        v,
        "ibv_qp_cap",
        IbvQpCap,
        max_send_wr,
        max_recv_wr,
        max_send_sge,
        max_recv_sge,
        max_inline_data
    );

    size!(v, "ibv_qp_init_attr", IbvQpInitAttr);
    off!(
        v,
        "ibv_qp_init_attr",
        IbvQpInitAttr,
        qp_context,
        send_cq,
        recv_cq,
        srq,
        cap,
        qp_type,
        sq_sig_all
    );

    size!(v, "ibv_rx_hash_conf", IbvRxHashConf);
    off!(
        v,
        "ibv_rx_hash_conf",
        IbvRxHashConf,
        rx_hash_function,
        rx_hash_key_len,
        rx_hash_key,
        rx_hash_fields_mask
    );

    size!(v, "ibv_qp_init_attr_ex", IbvQpInitAttrEx);
    off!(
        v,
        "ibv_qp_init_attr_ex",
        IbvQpInitAttrEx,
        qp_context,
        send_cq,
        recv_cq,
        srq,
        cap,
        qp_type,
        sq_sig_all,
        comp_mask,
        pd,
        xrcd,
        create_flags,
        max_tso_header,
        rwq_ind_tbl,
        rx_hash_conf,
        source_qpn,
        send_ops_flags,
    );

    size!(v, "ibv_qp_attr", IbvQpAttr);
    v.push(("sizeof(struct ibv_ah_attr)".into(), size_of::<[u64; 4]>()));
    off!(
        v,
        "ibv_qp_attr",
        IbvQpAttr,
        qp_state,
        cur_qp_state,
        path_mtu,
        path_mig_state,
        qkey,
        rq_psn,
        sq_psn,
        dest_qp_num,
        qp_access_flags,
        cap,
        ah_attr,
        alt_ah_attr,
        pkey_index,
        alt_pkey_index,
        en_sqd_async_notify,
        sq_draining,
        max_rd_atomic,
        max_dest_rd_atomic,
        min_rnr_timer,
        port_num,
        timeout,
        retry_cnt,
        rnr_retry,
        alt_port_num,
        alt_timeout,
        rate_limit,
    );

    size!(v, "ibv_sge", IbvSge);
    off!(v, "ibv_sge", IbvSge, addr, length, lkey);

    size!(v, "ibv_recv_wr", IbvRecvWr);
    off!(v, "ibv_recv_wr", IbvRecvWr, wr_id, next, sg_list, num_sge);

    size!(v, "ibv_send_wr", IbvSendWr);
    off!(
        v,
        "ibv_send_wr",
        IbvSendWr,
        wr_id,
        next,
        sg_list,
        num_sge,
        opcode,
        send_flags,
        imm_data,
        wr,
        qp_type,
        tso,
    );

    size!(v, "ibv_wc", IbvWc);
    off!(
        v,
        "ibv_wc",
        IbvWc,
        wr_id,
        status,
        opcode,
        vendor_err,
        byte_len,
        imm_data,
        qp_num,
        src_qp,
        wc_flags,
        pkey_index,
        slid,
        sl,
        dlid_path_bits,
    );

    size!(v, "ibv_flow_attr", IbvFlowAttr);
    off!(
        v,
        "ibv_flow_attr",
        IbvFlowAttr,
        comp_mask,
        type_ = "type",
        size,
        priority,
        num_of_specs,
        port,
        flags
    );

    size!(v, "ibv_flow_eth_filter", IbvFlowEthFilter);
    off!(
        v,
        "ibv_flow_eth_filter",
        IbvFlowEthFilter,
        dst_mac,
        src_mac,
        ether_type,
        vlan_tag
    );

    flow_spec!(v, "ibv_flow_spec_eth", IbvFlowSpecEth);

    size!(v, "ibv_flow_ipv4_filter", IbvFlowIpv4Filter);
    flow_spec!(v, "ibv_flow_spec_ipv4", IbvFlowSpecIpv4);

    size!(v, "ibv_flow_ipv4_ext_filter", IbvFlowIpv4ExtFilter);
    off!(
        v,
        "ibv_flow_ipv4_ext_filter",
        IbvFlowIpv4ExtFilter,
        src_ip,
        dst_ip,
        proto,
        tos,
        ttl,
        flags
    );
    flow_spec!(v, "ibv_flow_spec_ipv4_ext", IbvFlowSpecIpv4Ext);
    size!(v, "ibv_flow_ipv6_filter", IbvFlowIpv6Filter);
    off!(
        v,
        "ibv_flow_ipv6_filter",
        IbvFlowIpv6Filter,
        src_ip,
        dst_ip,
        flow_label,
        next_hdr,
        traffic_class,
        hop_limit
    );
    flow_spec!(v, "ibv_flow_spec_ipv6", IbvFlowSpecIpv6);

    size!(v, "ibv_flow_tcp_udp_filter", IbvFlowTcpUdpFilter);
    flow_spec!(v, "ibv_flow_spec_tcp_udp", IbvFlowSpecTcpUdp);

    size!(v, "ibv_flow", IbvFlow);
    off!(v, "ibv_flow", IbvFlow, comp_mask, context, handle);

    // Constants the driver hard-codes.
    let constants = c_named!(usize;
        IBV_QPT_RAW_PACKET, IBV_QPS_RESET, IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS, IBV_QPS_ERR,
        IBV_QP_STATE, IBV_QP_PORT, IBV_ACCESS_LOCAL_WRITE, IBV_WR_SEND, IBV_SEND_SIGNALED,
        IBV_SEND_INLINE, IBV_WC_SUCCESS, IBV_WC_LOC_LEN_ERR, IBV_WC_LOC_PROT_ERR,
        IBV_WC_WR_FLUSH_ERR, IBV_WC_GENERAL_ERR, IBV_WC_SEND, IBV_WC_RECV, IBV_PORT_ACTIVE,
        IBV_LINK_LAYER_INFINIBAND, IBV_LINK_LAYER_ETHERNET, IBV_FLOW_ATTR_NORMAL,
        IBV_FLOW_SPEC_ETH, IBV_FLOW_SPEC_IPV4, IBV_FLOW_SPEC_IPV6, IBV_FLOW_SPEC_IPV4_EXT,
        IBV_FLOW_SPEC_TCP, IBV_FLOW_SPEC_UDP, IBV_QP_INIT_ATTR_PD, IBV_QP_INIT_ATTR_IND_TABLE,
        IBV_QP_INIT_ATTR_RX_HASH, IBV_RX_HASH_FUNC_TOEPLITZ, IBV_RX_HASH_SRC_IPV4,
        IBV_RX_HASH_DST_IPV4, IBV_RX_HASH_SRC_IPV6, IBV_RX_HASH_DST_IPV6,
        IBV_RX_HASH_SRC_PORT_TCP, IBV_RX_HASH_DST_PORT_TCP, IBV_RX_HASH_SRC_PORT_UDP,
        IBV_RX_HASH_DST_PORT_UDP, IBV_WQT_RQ, IBV_WQS_RESET, IBV_WQS_RDY, IBV_WQS_ERR,
        IBV_WQ_ATTR_STATE, IBV_WC_LOC_QP_OP_ERR, IBV_WC_IP_CSUM_OK, IBV_WC_EX_WITH_BYTE_LEN,
        IBV_CQ_INIT_ATTR_MASK_FLAGS, IBV_CREATE_CQ_ATTR_SINGLE_THREADED,
        IBV_ACCESS_RELAXED_ORDERING, IBV_EVENT_CQ_ERR, IBV_EVENT_QP_FATAL,
        IBV_EVENT_DEVICE_FATAL, IBV_EVENT_PORT_ACTIVE, IBV_EVENT_PORT_ERR, IBV_EVENT_WQ_FATAL
    );
    // The fake library's own (what libmlx5 checks the attributes against).
    let fake_constants = c_named!(usize; fake::{
        IBV_CREATE_CQ_SUP_WC_FLAGS, IBV_CQ_INIT_ATTR_MASK_PD, IBV_CREATE_CQ_ATTR_IGNORE_OVERRUN,
        IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS, IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT
    });
    let abi = [("UINTPTR_MAX == (uintptr_t)__VERBS_ABI_IS_EXTENDED", 1)];
    for (expr, val) in constants.into_iter().chain(fake_constants).chain(abi) {
        v.push((expr.to_string(), val));
    }
    v
}

fn c_program(items: &[Item]) -> String {
    let mut s = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n\
         #include <infiniband/verbs.h>\nint main(void) {\n",
    );
    for (i, (expr, _)) in items.iter().enumerate() {
        s.push_str(&format!("    printf(\"{i} %zu\\n\", (size_t)({expr}));\n"));
    }
    s.push_str("    return 0;\n}\n");
    s
}

/// What the comparison is about, for skips.
const WHAT: &str = "the FFI mirrors with rdma-core's layouts";

/// The header directories to search first: NICPOLL_VERBS_INCLUDE points at
/// another rdma-core's headers (an unpacked libibverbs-dev: `dpkg-deb -x
/// libibverbs-dev_*.deb DIR`, then DIR/usr/include).
fn includes() -> Vec<PathBuf> {
    std::env::var_os("NICPOLL_VERBS_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .collect()
}

/// The facts of `items` the C compiler, with `program`'s headers, computes
/// differently from our mirrors.
fn differences(program: &CProgram, items: &[Item]) -> Vec<String> {
    let text = program.run("layout", &c_program(items));
    let mut c_values = vec![None; items.len()];
    for line in text.lines() {
        let (i, v) = line.split_once(' ').expect("index value");
        c_values[i.parse::<usize>().unwrap()] = Some(v.parse::<usize>().unwrap());
    }
    let mut wrong = Vec::new();
    for ((expr, ours), c) in items.iter().zip(&c_values) {
        match c {
            Some(c) if c == ours => {}
            Some(c) => wrong.push(format!("{expr}: C says {c}, our mirror {ours}")),
            None => wrong.push(format!("{expr}: no value printed")),
        }
    }
    wrong
}

#[test]
fn mirrors_match_the_installed_verbs_header() {
    let Some(program) = CProgram::new(
        "layout",
        includes(),
        "infiniband/verbs.h",
        "libibverbs-dev",
        WHAT,
    ) else {
        return;
    };
    let items = items();
    let wrong = differences(&program, &items);
    assert!(
        wrong.is_empty(),
        "{} of {} layout facts differ from <infiniband/verbs.h>:\n{}",
        wrong.len(),
        items.len(),
        wrong.join("\n")
    );
    eprintln!(
        "layout: {} sizes, offsets and constants match <infiniband/verbs.h>",
        items.len()
    );
}

/// `verbs.h` as later rdma-core releases grew it, where the driver must not
/// care: new ops at the front of `verbs_context` (rdma-core 59 put
/// `reg_mr_ex`, `dealloc_dmah` and `alloc_dmah` there) and a field appended
/// to `ibv_port_attr` (rdma-core 49: `active_speed_ex`).
fn grown(header: &str) -> String {
    let mut h = header.to_string();
    let vctx = "struct verbs_context {\n";
    let at = h.find(vctx).expect("struct verbs_context in verbs.h") + vctx.len();
    h.insert_str(at, "\tvoid *(*nicpoll_newer_ops[6])(void);\n");
    let pa = h
        .find("struct ibv_port_attr {")
        .expect("struct ibv_port_attr in verbs.h");
    let end = pa
        + h[pa..]
            .find("\n};")
            .expect("the end of struct ibv_port_attr");
    h.insert_str(end, "\n\tuint32_t\t\tnicpoll_newer_field;");
    h
}

#[test]
fn mirrors_hold_where_newer_rdma_core_grew_structures() {
    let Some(installed) = CProgram::new(
        "layout-installed",
        includes(),
        "infiniband/verbs.h",
        "libibverbs-dev",
        WHAT,
    ) else {
        return;
    };
    let path = installed
        .header_path("infiniband/verbs.h")
        .expect("found a moment ago");
    let header = std::fs::read_to_string(&path).expect("read verbs.h");
    let newer = installed.dir().join("newer");
    std::fs::create_dir_all(newer.join("infiniband")).unwrap();
    std::fs::write(newer.join("infiniband/verbs.h"), grown(&header)).unwrap();
    let mut search = vec![newer];
    search.extend(includes());
    let Some(program) = CProgram::new(
        "layout-newer",
        search,
        "infiniband/verbs.h",
        "libibverbs-dev",
        WHAT,
    ) else {
        return;
    };
    // Every fact the driver relies on still holds; the whole sizes, which
    // it must not rely on, changed (so the growth took effect).
    let mut items = items();
    let whole = [
        ("sizeof(struct verbs_context)", size_of::<VerbsContext>()),
        ("sizeof(struct ibv_port_attr)", size_of::<IbvPortAttr>()),
    ];
    items.extend(whole.iter().map(|(e, v)| (e.to_string(), *v)));
    let wrong = differences(&program, &items);
    let unexpected: Vec<&String> = wrong
        .iter()
        .filter(|w| !whole.iter().any(|(e, _)| w.starts_with(&format!("{e}:"))))
        .collect();
    assert!(
        unexpected.is_empty(),
        "against {} grown as newer rdma-core did:\n{}",
        path.display(),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(wrong.len(), whole.len(), "both structures grew: {wrong:?}");
}
