//! What the simulated VF knows about the iavf device and the i40e PF: register
//! offsets, admin-queue layout, virtchnl opcodes, status codes, payload layouts and
//! descriptor formats.
//!
//! Everything here is taken from the public headers and sources, named at each
//! item (Linux `include/linux/avf/virtchnl.h`, DPDK `base/iavf_register.h`,
//! `base/iavf_adminq_cmd.h`, `base/iavf_type.h`, Linux
//! `drivers/net/ethernet/intel/{i40e,ice}`), never from this crate's driver
//! modules: if the driver and the model shared a constant they would agree on
//! the same mistake.
#![deny(unsafe_code)]
// A table of hardware constants: not every one is used by the model yet.
#![allow(dead_code)]

/// Size of the VF's BAR0 (700-series and E800 VFs expose 64 KiB).
pub const BAR0_LEN: usize = 0x1_0000;

/// VF BAR0 registers (DPDK `base/iavf_register.h`).
pub mod reg {
    /// Tx tail doorbell of queue `q` (bits 0-12).
    pub const fn qtx_tail(q: usize) -> usize {
        q * 4
    }
    /// Rx tail doorbell of queue `q` (bits 0-12).
    pub const fn qrx_tail(q: usize) -> usize {
        0x2000 + q * 4
    }
    /// First Tx tail register.
    pub const QTX_TAIL_BASE: usize = 0x0000;
    /// First Rx tail register.
    pub const QRX_TAIL_BASE: usize = 0x2000;
    /// Tail registers cover 2048 queues each (0x2000 bytes).
    pub const TAIL_SPAN: usize = 0x2000;
    /// Tail value mask.
    pub const TAIL_MASK: u32 = 0x1FFF;
    /// One past the Rx tail registers the model decodes (the ITR registers
    /// start here).
    pub const RX_TAIL_END: usize = 0x2800;

    /// ITR `i` (0..2) of vector `v` (0..15).
    pub const fn vfint_itrn1(i: usize, v: usize) -> usize {
        0x2800 + 64 * i + 4 * v
    }
    /// Per-queue-vector dynamic control, vectors 1..64.
    pub const fn vfint_dyn_ctln1(v: usize) -> usize {
        0x3800 + 4 * v
    }
    /// Interrupt cause register of vector 0 (read clears it).
    pub const VFINT_ICR01: usize = 0x4800;
    /// ICR01 cause: queue 0.
    pub const ICR01_QUEUE_0: u32 = 1 << 1;
    /// ICR01 cause: link state change.
    pub const ICR01_LINK_STAT_CHANGE: u32 = 1 << 25;
    /// ICR01 cause: admin queue.
    pub const ICR01_ADMINQ: u32 = 1 << 30;
    /// ITR `i` of vector 0.
    pub const fn vfint_itr01(i: usize) -> usize {
        0x4C00 + 4 * i
    }
    /// Cause enable of vector 0.
    pub const VFINT_ICR0_ENA1: usize = 0x5000;
    /// DYN_CTL bit 0: interrupt enable.
    pub const DYN_CTL_INTENA: u32 = 1 << 0;
    /// DYN_CTL bit 1: clear the pending bit.
    pub const DYN_CTL_CLEARPBA: u32 = 1 << 1;
    /// DYN_CTL bit 2: software interrupt trigger.
    pub const DYN_CTL_SWINT_TRIG: u32 = 1 << 2;
    /// DYN_CTL bits 3-4: ITR index (3: none).
    pub const DYN_CTL_ITR_INDX_SHIFT: u32 = 3;
    /// DYN_CTL bits 5-16 (and ITR registers bits 0-11): interval, 2 µs units.
    pub const DYN_CTL_INTERVAL_SHIFT: u32 = 5;
    /// Interval field mask (12 bits).
    pub const DYN_CTL_INTERVAL_MASK: u32 = 0xFFF;
    /// DYN_CTLN1 bit 30: write back descriptors on ITR expiry, no interrupt.
    pub const DYN_CTLN_WB_ON_ITR: u32 = 1 << 30;
    /// Vector 0 statistics control.
    pub const VFINT_STAT_CTL01: usize = 0x5400;
    /// Vector 0 (misc/admin queue) dynamic control.
    pub const VFINT_DYN_CTL01: usize = 0x5C00;

    /// ARQ base address high 32 bits.
    pub const VF_ARQBAH1: usize = 0x6000;
    /// ATQ head (bits 0-9).
    pub const VF_ATQH1: usize = 0x6400;
    /// ATQ length and enable.
    pub const VF_ATQLEN1: usize = 0x6800;
    /// ARQ base address low 32 bits.
    pub const VF_ARQBAL1: usize = 0x6C00;
    /// ARQ tail.
    pub const VF_ARQT1: usize = 0x7000;
    /// ARQ head (bits 0-9).
    pub const VF_ARQH1: usize = 0x7400;
    /// ATQ base address high 32 bits.
    pub const VF_ATQBAH1: usize = 0x7800;
    /// ATQ base address low 32 bits.
    pub const VF_ATQBAL1: usize = 0x7C00;
    /// ARQ length and enable.
    pub const VF_ARQLEN1: usize = 0x8000;
    /// ATQ tail.
    pub const VF_ATQT1: usize = 0x8400;
    /// AQ head/tail value mask.
    pub const AQ_PTR_MASK: u32 = 0x3FF;
    /// ATQLEN/ARQLEN: queue length field.
    pub const AQ_LEN_MASK: u32 = 0x3FF;
    /// ATQLEN/ARQLEN: VF error.
    pub const AQ_LEN_VFE: u32 = 1 << 28;
    /// ATQLEN/ARQLEN: overflow (a message was dropped: queue full).
    pub const AQ_LEN_OVFL: u32 = 1 << 29;
    /// ATQLEN/ARQLEN: critical error.
    pub const AQ_LEN_CRIT: u32 = 1 << 30;
    /// ATQLEN/ARQLEN: queue enable.
    pub const AQ_LEN_ENABLE: u32 = 1 << 31;

    /// VF reset status (bits 0-1, `enum virtchnl_vfr_states`).
    pub const VFGEN_RSTAT: usize = 0x8800;
    /// VFGEN_RSTAT state mask.
    pub const RSTAT_MASK: u32 = 0x3;
    /// What a read returns while the VF is in hardware reset.
    pub const DEADBEEF: u32 = 0xDEAD_BEEF;

    /// RSS hash enable, register `i` (0..=1), 64 PCTYPE bits.
    pub const fn vfqf_hena(i: usize) -> usize {
        0xC400 + 4 * i
    }
    /// RSS key, register `i` (0..=12), 52 bytes.
    pub const fn vfqf_hkey(i: usize) -> usize {
        0xCC00 + 4 * i
    }
    /// RSS lookup table, register `i` (0..=15), four 1-byte entries each.
    pub const fn vfqf_hlut(i: usize) -> usize {
        0xD000 + 4 * i
    }
    /// First RSS register (HENA0) and one past the last (HLUT15).
    pub const RSS_FIRST: usize = 0xC400;
    /// One past the last RSS register.
    pub const RSS_END: usize = 0xD040;
}

/// `enum virtchnl_vfr_states` (virtchnl.h).
pub mod vfr {
    /// Reset in progress.
    pub const INPROGRESS: u32 = 0;
    /// Reset completed.
    pub const COMPLETED: u32 = 1;
    /// VF active.
    pub const VFACTIVE: u32 = 2;
}

/// Admin queue descriptor (`struct iavf_aq_desc`, 32 bytes, `iavf_adminq_cmd.h`).
pub mod aq {
    /// Descriptor size in bytes.
    pub const DESC_LEN: usize = 32;
    /// Offsets of the descriptor fields.
    pub const FLAGS: usize = 0x00;
    /// Opcode (u16).
    pub const OPCODE: usize = 0x02;
    /// Data length (u16).
    pub const DATALEN: usize = 0x04;
    /// AQ return value (u16).
    pub const RETVAL: usize = 0x06;
    /// Cookie high: the virtchnl opcode (u32).
    pub const COOKIE_HIGH: usize = 0x08;
    /// Cookie low: the virtchnl status (u32).
    pub const COOKIE_LOW: usize = 0x0C;
    /// Param 0 (u32).
    pub const PARAM0: usize = 0x10;
    /// Param 1 (u32).
    pub const PARAM1: usize = 0x14;
    /// Buffer address, bits 63:32 (u32).
    pub const ADDR_HIGH: usize = 0x18;
    /// Buffer address, bits 31:0 (u32).
    pub const ADDR_LOW: usize = 0x1C;

    /// Flag: descriptor done.
    pub const FLAG_DD: u16 = 0x0001;
    /// Flag: command completed.
    pub const FLAG_CMP: u16 = 0x0002;
    /// Flag: error.
    pub const FLAG_ERR: u16 = 0x0004;
    /// Flag: VF error.
    pub const FLAG_VFE: u16 = 0x0008;
    /// Flag: buffer larger than 512 bytes.
    pub const FLAG_LB: u16 = 0x0200;
    /// Flag: the buffer is read by firmware (host to device data).
    pub const FLAG_RD: u16 = 0x0400;
    /// Flag: VF command.
    pub const FLAG_VFC: u16 = 0x0800;
    /// Flag: the descriptor has a buffer.
    pub const FLAG_BUF: u16 = 0x1000;
    /// Flag: suppress interrupt.
    pub const FLAG_SI: u16 = 0x2000;
    /// Flag: interrupt on error.
    pub const FLAG_EI: u16 = 0x4000;
    /// Flag: flush on error.
    pub const FLAG_FE: u16 = 0x8000;

    /// AQ opcode: VF to PF message.
    pub const OPC_SEND_MSG_TO_PF: u16 = 0x0801;
    /// AQ opcode: PF to VF message (what the VF's ARQ carries).
    pub const OPC_SEND_MSG_TO_VF: u16 = 0x0802;
    /// AQ opcode: message to a peer driver.
    pub const OPC_SEND_MSG_TO_PEER: u16 = 0x0803;

    /// Largest AQ buffer (Linux/DPDK iavf use 4096-byte buffers).
    pub const MAX_BUF: usize = 4096;
    /// Above this size a buffer carries the LB flag.
    pub const LARGE_BUF: usize = 512;

    /// `enum iavf_admin_queue_err` values used by the model.
    pub mod rc {
        /// Success.
        pub const OK: u16 = 0;
        /// Bad opcode.
        pub const ESRCH: u16 = 3;
        /// Argument too long.
        pub const E2BIG: u16 = 7;
        /// Invalid argument.
        pub const EINVAL: u16 = 14;
        /// Descriptor contains a bad pointer.
        pub const BAD_ADDR: u16 = 20;
    }
}

/// virtchnl opcodes (`enum virtchnl_ops`, virtchnl.h).
pub mod op {
    pub const UNKNOWN: u32 = 0;
    pub const VERSION: u32 = 1;
    pub const RESET_VF: u32 = 2;
    pub const GET_VF_RESOURCES: u32 = 3;
    pub const CONFIG_TX_QUEUE: u32 = 4;
    pub const CONFIG_RX_QUEUE: u32 = 5;
    pub const CONFIG_VSI_QUEUES: u32 = 6;
    pub const CONFIG_IRQ_MAP: u32 = 7;
    pub const ENABLE_QUEUES: u32 = 8;
    pub const DISABLE_QUEUES: u32 = 9;
    pub const ADD_ETH_ADDR: u32 = 10;
    pub const DEL_ETH_ADDR: u32 = 11;
    pub const ADD_VLAN: u32 = 12;
    pub const DEL_VLAN: u32 = 13;
    pub const CONFIG_PROMISCUOUS_MODE: u32 = 14;
    pub const GET_STATS: u32 = 15;
    pub const RSVD: u32 = 16;
    pub const EVENT: u32 = 17;
    pub const CONFIG_RSS_HFUNC: u32 = 18;
    pub const IWARP: u32 = 20;
    pub const CONFIG_IWARP_IRQ_MAP: u32 = 21;
    pub const RELEASE_IWARP_IRQ_MAP: u32 = 22;
    pub const CONFIG_RSS_KEY: u32 = 23;
    pub const CONFIG_RSS_LUT: u32 = 24;
    pub const GET_RSS_HENA_CAPS: u32 = 25;
    pub const SET_RSS_HENA: u32 = 26;
    pub const ENABLE_VLAN_STRIPPING: u32 = 27;
    pub const DISABLE_VLAN_STRIPPING: u32 = 28;
    pub const REQUEST_QUEUES: u32 = 29;
    pub const ENABLE_CHANNELS: u32 = 30;
    pub const DISABLE_CHANNELS: u32 = 31;
    pub const ADD_CLOUD_FILTER: u32 = 32;
    pub const DEL_CLOUD_FILTER: u32 = 33;
    pub const GET_SUPPORTED_RXDIDS: u32 = 44;
    pub const GET_OFFLOAD_VLAN_V2_CAPS: u32 = 51;
}

/// `enum virtchnl_status_code` (virtchnl.h): what the ice PF answers with.
pub mod status {
    pub const SUCCESS: i32 = 0;
    /// VIRTCHNL_STATUS_ERR_PARAM.
    pub const ERR_PARAM: i32 = -5;
    /// VIRTCHNL_STATUS_ERR_NO_MEMORY.
    pub const ERR_NO_MEMORY: i32 = -18;
    /// VIRTCHNL_STATUS_ERR_OPCODE_MISMATCH (what `virtchnl_vc_validate_vf_msg`
    /// returns for a wrong length; both PFs send their own code instead).
    pub const ERR_OPCODE_MISMATCH: i32 = -38;
    /// VIRTCHNL_STATUS_ERR_NOT_SUPPORTED (ice: an opcode outside the VF's
    /// allowlist, `ice_vc_is_opcode_allowed`).
    pub const ERR_NOT_SUPPORTED: i32 = -64;
}

/// Linux errno values, which Linux 6.12's i40e PF passes through `v_retval`
/// (`i40e_vc_send_resp_to_vf(vf, op, -EINVAL)` and the like).
pub mod errno {
    /// `-EPERM`: an untrusted VF over its MAC filter quota or overriding an
    /// administratively set MAC (`i40e_check_vf_permission`), queues of a VF
    /// the host disabled.
    pub const EPERM: i32 = -1;
    /// `-ENOENT`.
    pub const ENOENT: i32 = -2;
    /// `-EIO`: the PF could not program the hardware.
    pub const EIO: i32 = -5;
    /// `-ENOMEM`.
    pub const ENOMEM: i32 = -12;
    /// `-EINVAL`: a message failing validation or a handler's checks.
    pub const EINVAL: i32 = -22;
    /// `-EOPNOTSUPP`: a valid opcode i40e has no handler for.
    pub const EOPNOTSUPP: i32 = -95;
}

/// virtchnl protocol version (virtchnl.h `VIRTCHNL_VERSION_*`).
pub const VIRTCHNL_VERSION_MAJOR: u32 = 1;
/// Minor version 1: VF capabilities are negotiated.
pub const VIRTCHNL_VERSION_MINOR: u32 = 1;
/// Minor version 0: no VF capabilities.
pub const VIRTCHNL_VERSION_MINOR_NO_VF_CAPS: u32 = 0;

/// `VIRTCHNL_VF_OFFLOAD_*` capability bits (virtchnl.h).
pub mod cap {
    pub const L2: u32 = 1 << 0;
    pub const IWARP: u32 = 1 << 1;
    pub const RSS_AQ: u32 = 1 << 3;
    pub const RSS_REG: u32 = 1 << 4;
    pub const WB_ON_ITR: u32 = 1 << 5;
    pub const REQ_QUEUES: u32 = 1 << 6;
    pub const ADV_LINK_SPEED: u32 = 1 << 7;
    pub const CRC: u32 = 1 << 10;
    pub const VLAN_V2: u32 = 1 << 15;
    pub const VLAN: u32 = 1 << 16;
    pub const RX_POLLING: u32 = 1 << 17;
    pub const RSS_PCTYPE_V2: u32 = 1 << 18;
    pub const RSS_PF: u32 = 1 << 19;
    pub const ENCAP: u32 = 1 << 20;
    pub const ENCAP_CSUM: u32 = 1 << 21;
    pub const RX_ENCAP_CSUM: u32 = 1 << 22;
    pub const ADQ: u32 = 1 << 23;
    pub const USO: u32 = 1 << 25;
    pub const RX_FLEX_DESC: u32 = 1 << 26;
    pub const ADV_RSS_PF: u32 = 1 << 27;
    pub const FDIR_PF: u32 = 1 << 28;
}

/// Payload layouts and sizes (virtchnl.h structures, `VIRTCHNL_CHECK_STRUCT_LEN`).
pub mod msg {
    /// `virtchnl_version_info`.
    pub const VERSION_INFO_LEN: usize = 8;
    /// `virtchnl_vf_resource` header (before `vsi_res[]`).
    pub const VF_RESOURCE_HDR_LEN: usize = 20;
    /// `virtchnl_vsi_resource`.
    pub const VSI_RESOURCE_LEN: usize = 16;
    /// VSI type SR-IOV.
    pub const VSI_TYPE_SRIOV: i32 = 6;
    /// `virtchnl_txq_info`.
    pub const TXQ_INFO_LEN: usize = 24;
    /// `virtchnl_rxq_info`.
    pub const RXQ_INFO_LEN: usize = 40;
    /// `virtchnl_queue_pair_info`.
    pub const QUEUE_PAIR_INFO_LEN: usize = 64;
    /// `virtchnl_vsi_queue_config_info` header (before `qpair[]`).
    pub const VSI_QUEUE_CONFIG_HDR_LEN: usize = 8;
    /// `virtchnl_vector_map`.
    pub const VECTOR_MAP_LEN: usize = 12;
    /// `virtchnl_irq_map_info` header (before `vecmap[]`).
    pub const IRQ_MAP_INFO_HDR_LEN: usize = 2;
    /// `virtchnl_queue_select`.
    pub const QUEUE_SELECT_LEN: usize = 12;
    /// `virtchnl_ether_addr`.
    pub const ETHER_ADDR_LEN: usize = 8;
    /// `virtchnl_ether_addr.type` (low 2 bits): legacy (0), primary (1), extra (2).
    pub const ETHER_ADDR_TYPE_MASK: u8 = 0x3;
    /// `VIRTCHNL_ETHER_ADDR_LEGACY`.
    pub const ETHER_ADDR_LEGACY: u8 = 0;
    /// `VIRTCHNL_ETHER_ADDR_PRIMARY`.
    pub const ETHER_ADDR_PRIMARY: u8 = 1;
    /// `virtchnl_ether_addr_list` header (before `list[]`).
    pub const ETHER_ADDR_LIST_HDR_LEN: usize = 4;
    /// `virtchnl_vlan_filter_list` header (before `vlan_id[]`).
    pub const VLAN_FILTER_LIST_HDR_LEN: usize = 4;
    /// `virtchnl_promisc_info`.
    pub const PROMISC_INFO_LEN: usize = 4;
    /// Promiscuous flag: unicast.
    pub const FLAG_VF_UNICAST_PROMISC: u16 = 1 << 0;
    /// Promiscuous flag: multicast.
    pub const FLAG_VF_MULTICAST_PROMISC: u16 = 1 << 1;
    /// `virtchnl_eth_stats`: twelve u64.
    pub const ETH_STATS_LEN: usize = 96;
    /// `virtchnl_rss_key` / `virtchnl_rss_lut` header (before the bytes).
    pub const RSS_KEY_LUT_HDR_LEN: usize = 4;
    /// `virtchnl_rss_hena`: one u64.
    pub const RSS_HENA_LEN: usize = 8;
    /// `virtchnl_vf_res_request`: one u16.
    pub const VF_RES_REQUEST_LEN: usize = 2;
    /// `virtchnl_pf_event`.
    pub const PF_EVENT_LEN: usize = 16;

    /// Expected message length of CONFIG_VSI_QUEUES with `n` pairs
    /// (`virtchnl_vc_validate_vf_msg`:
    /// the old `[1]` arrays' extra element is kept).
    pub const fn vsi_queue_config_len(n: usize) -> usize {
        VSI_QUEUE_CONFIG_HDR_LEN + QUEUE_PAIR_INFO_LEN * (n + 1)
    }
    /// Expected length of CONFIG_IRQ_MAP with `n` vectors.
    pub const fn irq_map_len(n: usize) -> usize {
        IRQ_MAP_INFO_HDR_LEN + VECTOR_MAP_LEN * (n + 1)
    }
    /// Expected length of ADD/DEL_ETH_ADDR with `n` addresses.
    pub const fn ether_addr_list_len(n: usize) -> usize {
        ETHER_ADDR_LIST_HDR_LEN + ETHER_ADDR_LEN * (n + 1)
    }
    /// Expected length of ADD/DEL_VLAN with `n` ids.
    pub const fn vlan_filter_list_len(n: usize) -> usize {
        VLAN_FILTER_LIST_HDR_LEN + 2 * (n + 1)
    }
    /// Expected length of CONFIG_RSS_KEY/LUT with `k` bytes.
    pub const fn rss_key_lut_len(k: usize) -> usize {
        RSS_KEY_LUT_HDR_LEN + k + 1
    }

    /// `virtchnl_pf_event.event` values.
    pub const EVENT_LINK_CHANGE: i32 = 1;
    /// The PF is about to reset the VF.
    pub const EVENT_RESET_IMPENDING: i32 = 2;
    /// Severity: informational.
    pub const SEVERITY_INFO: i32 = 0;
    /// Severity: certain doom (reset).
    pub const SEVERITY_CERTAIN_DOOM: i32 = 255;

    /// Legacy link speed enum (`enum virtchnl_link_speed`) for a speed in Mbps;
    /// 0 (unknown) for speeds it cannot express.
    pub const fn legacy_link_speed(mbps: u32) -> u32 {
        match mbps {
            100 => 0x2,
            1000 => 0x4,
            2500 => 0x1,
            5000 => 0x80,
            10_000 => 0x8,
            20_000 => 0x20,
            25_000 => 0x40,
            40_000 => 0x10,
            _ => 0,
        }
    }
}

/// i40e PF limits (Linux `i40e_virtchnl_pf.c`, `i40e.h`, `i40e_type.h`).
pub mod pf {
    /// `I40E_MAX_VF_QUEUES`: queue pairs a VF can have (bitmaps must stay below).
    pub const MAX_VF_QUEUES: u16 = 16;
    /// `I40E_DEFAULT_QUEUES_PER_VF`.
    pub const DEFAULT_QUEUES_PER_VF: u16 = 4;
    /// `I40E_HKEY_ARRAY_SIZE`: RSS key bytes (52).
    pub const RSS_KEY_SIZE: usize = 52;
    /// `I40E_VF_HLUT_ARRAY_SIZE`: RSS LUT entries (64).
    pub const RSS_LUT_SIZE: usize = 64;
    /// `I40E_VC_MAX_MAC_ADDR_PER_VF`: 16 multicast + 1 unicast + 1 broadcast,
    /// for an untrusted VF.
    pub const MAX_MAC_ADDR_PER_UNTRUSTED_VF: usize = 18;
    /// `I40E_VC_MAX_VLAN_PER_VF` for an untrusted VF.
    pub const MAX_VLAN_PER_UNTRUSTED_VF: usize = 16;
    /// `I40E_DEFAULT_NUM_INVALID_MSGS_ALLOWED` of older i40e versions: more
    /// failed messages in a row and the PF disabled the VF's mailbox until its
    /// next reset (6.12's i40e has no such limit; `SimConfig::invalid_msg_limit`
    /// brings it back).
    pub const OLD_I40E_NUM_INVALID_MSGS_ALLOWED: u32 = 10;
    /// Largest frame of the port, CRC included: what GET_VF_RESOURCES reports in
    /// `max_mtu` (`i40e_vc_get_max_frame_size`, `ice_vc_get_max_frame_size`:
    /// the link's `max_frame_size`; `I40E_MAX_RXBUFFER`,
    /// `ICE_AQ_SET_MAC_FRAME_SIZE_MAX`).
    pub const PORT_MAX_FRAME: u16 = 9728;
    /// i40e ring lengths: at most `I40E_MAX_NUM_DESCRIPTORS_XL710` on the
    /// XL710 MAC (X710/XL710/XXV710), `I40E_MAX_NUM_DESCRIPTORS` on X722
    /// (`i40e_get_max_num_descriptors`).
    pub const I40E_MAX_DESC_XL710: u32 = 8160;
    /// See [`I40E_MAX_DESC_XL710`].
    pub const I40E_MAX_DESC_X722: u32 = 4096;
    /// i40e: Rx ring length a multiple of 32, Tx of 8 (`i40e_config_vsi_rx_queue`,
    /// `i40e_config_vsi_tx_queue`; 0 allowed).
    pub const I40E_RX_RING_MULTIPLE: u32 = 32;
    /// See [`I40E_RX_RING_MULTIPLE`].
    pub const I40E_TX_RING_MULTIPLE: u32 = 8;
    /// i40e waits this many times (100-200 µs each) for a VF that was active to
    /// set `VFINT_ICR0_ENA1.ADMINQ` before it triggers the VF's reset, then logs
    /// "Reset VF %d never finished" (`I40E_VFR_WAIT_COUNT`, `i40e_sync_vfr_reset`).
    pub const I40E_VFR_WAIT_COUNT: u32 = 100;
    /// ice's VF VSI id (`ICE_VF_VSI_ID`).
    pub const ICE_VF_VSI_ID: u16 = 1;
    /// i40e: `databuffer_size` must not exceed 16 KiB − 128
    /// (`i40e_config_vsi_rx_queue`).
    pub const MAX_DATABUFFER: u32 = 16 * 1024 - 128;
    /// i40e: `max_pkt_size` must be in [64, 16 KiB)
    /// (`i40e_config_vsi_rx_queue`).
    pub const MIN_PKT: u32 = 64;
    /// Upper bound (exclusive) of `max_pkt_size`.
    pub const MAX_PKT_EXCL: u32 = 16 * 1024;
    /// i40e: header buffer at most 2 KiB − 64 when header split is asked for.
    pub const MAX_HDR_SIZE: u32 = 2 * 1024 - 64;
    /// The Rx data buffer size is kept in 128-byte units
    /// (`I40E_RXQ_CTX_DBUFF_SHIFT`).
    pub const DBUFF_UNIT: u32 = 128;
    /// Ring bases are kept in 128-byte units (`i40e_config_vsi_rx_queue`:
    /// `base = dma_ring_addr / 128`).
    pub const RING_BASE_UNIT: u64 = 128;
    /// ice's ring length rule (`ice_vc_isvalid_ring_len`: 0, or
    /// a multiple of 32 in 64..=8160; DPDK's `IAVF_MIN_RING_DESC`/`IAVF_MAX_RING_DESC` agree).
    pub const RING_LEN_MIN: u32 = 64;
    /// Largest ring.
    pub const RING_LEN_MAX: u32 = 8160;
    /// Ring length multiple.
    pub const RING_LEN_MULTIPLE: u32 = 32;
    /// Promiscuous flags an i40e PF accepts (`I40E_MAX_VF_PROMISC_FLAGS`).
    pub const MAX_VF_PROMISC_FLAGS: u16 = 3;
    /// Largest VLAN id.
    pub const MAX_VLANID: u16 = 4095;
}

/// Packet classifier types: bit numbers of the 64-bit RSS hash-enable (HENA)
/// mask (Linux `i40e_type.h` `enum i40e_filter_pctype`).
pub mod pctype {
    pub const NONF_UNICAST_IPV4_UDP: u32 = 29;
    pub const NONF_MULTICAST_IPV4_UDP: u32 = 30;
    pub const NONF_IPV4_UDP: u32 = 31;
    pub const NONF_IPV4_TCP_SYN_NO_ACK: u32 = 32;
    pub const NONF_IPV4_TCP: u32 = 33;
    pub const NONF_IPV4_SCTP: u32 = 34;
    pub const NONF_IPV4_OTHER: u32 = 35;
    pub const FRAG_IPV4: u32 = 36;
    pub const NONF_UNICAST_IPV6_UDP: u32 = 39;
    pub const NONF_MULTICAST_IPV6_UDP: u32 = 40;
    pub const NONF_IPV6_UDP: u32 = 41;
    pub const NONF_IPV6_TCP_SYN_NO_ACK: u32 = 42;
    pub const NONF_IPV6_TCP: u32 = 43;
    pub const NONF_IPV6_SCTP: u32 = 44;
    pub const NONF_IPV6_OTHER: u32 = 45;
    pub const FRAG_IPV6: u32 = 46;
    pub const L2_PAYLOAD: u32 = 63;
    /// `I40E_DEFAULT_RSS_HENA` (700 series without the extended PCTYPEs): what
    /// the PF writes at VF reset and answers GET_RSS_HENA_CAPS with.
    pub const DEFAULT_HENA: u64 = (1 << NONF_IPV4_UDP)
        | (1 << NONF_IPV4_SCTP)
        | (1 << NONF_IPV4_TCP)
        | (1 << NONF_IPV4_OTHER)
        | (1 << FRAG_IPV4)
        | (1 << NONF_IPV6_UDP)
        | (1 << NONF_IPV6_TCP)
        | (1 << NONF_IPV6_SCTP)
        | (1 << NONF_IPV6_OTHER)
        | (1 << FRAG_IPV6)
        | (1 << L2_PAYLOAD);
    /// `I40E_DEFAULT_RSS_HENA_EXPANDED` (X722, whose parser splits UDP into
    /// unicast and multicast and TCP SYN without ACK apart; i40e's
    /// `i40e_pf_get_default_rss_hena`) and ice's `ICE_DEFAULT_RSS_HENA`.
    pub const DEFAULT_HENA_EXPANDED: u64 = DEFAULT_HENA
        | (1 << NONF_IPV4_TCP_SYN_NO_ACK)
        | (1 << NONF_UNICAST_IPV4_UDP)
        | (1 << NONF_MULTICAST_IPV4_UDP)
        | (1 << NONF_IPV6_TCP_SYN_NO_ACK)
        | (1 << NONF_UNICAST_IPV6_UDP)
        | (1 << NONF_MULTICAST_IPV6_UDP);
}

/// Legacy Rx descriptor (32 bytes, `union iavf_32byte_rx_desc` in `iavf_type.h`).
pub mod rx {
    /// Descriptor size (the i40e PF always programs 32-byte descriptors).
    pub const DESC_LEN: usize = 32;
    /// Status bit 0: descriptor done.
    pub const STATUS_DD: u64 = 1 << 0;
    /// Status bit 1: end of packet.
    pub const STATUS_EOP: u64 = 1 << 1;
    /// Status bit 2: L2TAG1 (stripped VLAN) valid.
    pub const STATUS_L2TAG1P: u64 = 1 << 2;
    /// Status bits 9-10: unicast/multicast/broadcast.
    pub const STATUS_UMBCAST_SHIFT: u32 = 9;
    /// UMBCAST values.
    pub const UMBCAST_UNICAST: u64 = 0;
    /// Multicast.
    pub const UMBCAST_MULTICAST: u64 = 1;
    /// Broadcast.
    pub const UMBCAST_BROADCAST: u64 = 2;
    /// Status bits 12-13: filter status; 3 = RSS hash valid in qword 0.
    pub const STATUS_FLTSTAT_SHIFT: u32 = 12;
    /// FLTSTAT: RSS hash.
    pub const FLTSTAT_RSS_HASH: u64 = 3;
    /// Error field starts at bit 19.
    pub const ERROR_SHIFT: u32 = 19;
    /// Error: receive error.
    pub const ERROR_RXE: u64 = 1 << ERROR_SHIFT;
    /// Error: oversize.
    pub const ERROR_OVERSIZE: u64 = 1 << (ERROR_SHIFT + 6);
    /// Packet type: bits 30-37.
    pub const PTYPE_SHIFT: u32 = 30;
    /// Packet buffer length: bits 38-51.
    pub const LENGTH_PBUF_SHIFT: u32 = 38;
    /// Packet buffer length mask (14 bits).
    pub const LENGTH_PBUF_MASK: u64 = 0x3FFF;
    /// Qword 0: RSS hash in bits 32-63.
    pub const RSS_SHIFT: u32 = 32;
    /// Qword 0: L2TAG1 in bits 16-31.
    pub const L2TAG1_SHIFT: u32 = 16;
}

/// Hardware packet types written in the Rx descriptor (Linux `iavf_common.c`
/// `iavf_ptype_lookup`; non-tunnelled entries only).
pub mod ptype {
    /// L2 payload (non-IP).
    pub const L2_PAY2: u8 = 1;
    pub const IPV4_FRAG: u8 = 22;
    pub const IPV4_PAY3: u8 = 23;
    pub const IPV4_UDP: u8 = 24;
    pub const IPV4_TCP: u8 = 26;
    pub const IPV4_SCTP: u8 = 27;
    pub const IPV4_ICMP: u8 = 28;
    pub const IPV6_FRAG: u8 = 88;
    pub const IPV6_PAY3: u8 = 89;
    pub const IPV6_UDP: u8 = 90;
    pub const IPV6_TCP: u8 = 92;
    pub const IPV6_SCTP: u8 = 93;
    pub const IPV6_ICMP: u8 = 94;
}

/// Tx data descriptor (16 bytes, `struct iavf_tx_desc` in `iavf_type.h`).
pub mod tx {
    /// Descriptor size.
    pub const DESC_LEN: usize = 16;
    /// DTYPE mask (bits 0-3 of qword 1).
    pub const DTYPE_MASK: u64 = 0xF;
    /// DTYPE: data.
    pub const DTYPE_DATA: u64 = 0x0;
    /// DTYPE: context.
    pub const DTYPE_CONTEXT: u64 = 0x1;
    /// DTYPE written back by hardware on completion.
    pub const DTYPE_DESC_DONE: u64 = 0xF;
    /// CMD field shift (bits 4-15).
    pub const CMD_SHIFT: u32 = 4;
    /// CMD: end of packet.
    pub const CMD_EOP: u64 = 0x001;
    /// CMD: report status.
    pub const CMD_RS: u64 = 0x002;
    /// CMD: insert CRC.
    pub const CMD_ICRC: u64 = 0x004;
    /// CMD: insert VLAN tag from L2TAG1.
    pub const CMD_IL2TAG1: u64 = 0x008;
    /// Buffer size shift (bits 34-47).
    pub const BUF_SZ_SHIFT: u32 = 34;
    /// Buffer size mask (14 bits).
    pub const BUF_SZ_MASK: u64 = 0x3FFF;
    /// L2TAG1 shift (bits 48-63).
    pub const L2TAG1_SHIFT: u32 = 48;
}

/// Largest frame the 700 series handles (DPDK `iavf.h` `IAVF_FRAME_SIZE_MAX`).
pub const FRAME_SIZE_MAX: usize = 9728;
