//! virtchnl: the messages a VF exchanges with its PF over the admin queue
//! (`enum virtchnl_ops`, `VIRTCHNL_VF_OFFLOAD_*` and the message structures
//! of Linux's `include/linux/avf/virtchnl.h`; DPDK's `base/virtchnl.h` is the
//! same file).
//!
//! Every payload is little-endian with natural alignment. Messages are encoded
//! field by field into byte buffers (control path only), with the exact lengths
//! the PF validates (`virtchnl_vc_validate_vf_msg`): the "array" messages keep
//! the historical one extra element of the old `[1]` arrays (virtchnl.h's
//! `virtchnl_*_LEGACY_SIZEOF` lengths).
#![deny(unsafe_code)]

use std::fmt;

/// virtchnl API version we speak: 1.1 (`VIRTCHNL_VERSION_MAJOR/MINOR`).
pub const VERSION_MAJOR: u32 = 1;
/// See [`VERSION_MAJOR`].
pub const VERSION_MINOR: u32 = 1;

/// The virtchnl opcodes this driver sends or receives (`enum virtchnl_ops`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// 1: negotiate the API version.
    Version = 1,
    /// 2: ask the PF to reset us (no reply).
    ResetVf = 2,
    /// 3: capabilities, queues, VSIs, MAC.
    GetVfResources = 3,
    /// 6: program the rings of every queue pair.
    ConfigVsiQueues = 6,
    /// 7: map queues to interrupt vectors (drives descriptor write-back).
    ConfigIrqMap = 7,
    /// 8: start queues.
    EnableQueues = 8,
    /// 9: stop queues.
    DisableQueues = 9,
    /// 10: add MAC filters.
    AddEthAddr = 10,
    /// 11: remove MAC filters.
    DelEthAddr = 11,
    /// 14: unicast / multicast promiscuous mode.
    ConfigPromiscuousMode = 14,
    /// 15: the VSI's counters.
    GetStats = 15,
    /// 17: PF → VF notification (link change, reset impending).
    Event = 17,
    /// 23: RSS hash key.
    ConfigRssKey = 23,
    /// 24: RSS lookup table.
    ConfigRssLut = 24,
    /// 25: which packet types the PF can hash.
    GetRssHenaCaps = 25,
    /// 26: which packet types to hash.
    SetRssHena = 26,
    /// 27: strip VLAN tags on receive (into the descriptor's L2TAG1).
    EnableVlanStripping = 27,
    /// 28: leave VLAN tags in received frames.
    DisableVlanStripping = 28,
}

impl Op {
    /// The raw opcode.
    pub fn raw(self) -> u32 {
        self as u32
    }

    /// The `VIRTCHNL_OP_*` name of any opcode, for messages.
    pub fn name_of(op: u32) -> &'static str {
        match op {
            0 => "VIRTCHNL_OP_UNKNOWN",
            1 => "VIRTCHNL_OP_VERSION",
            2 => "VIRTCHNL_OP_RESET_VF",
            3 => "VIRTCHNL_OP_GET_VF_RESOURCES",
            4 => "VIRTCHNL_OP_CONFIG_TX_QUEUE",
            5 => "VIRTCHNL_OP_CONFIG_RX_QUEUE",
            6 => "VIRTCHNL_OP_CONFIG_VSI_QUEUES",
            7 => "VIRTCHNL_OP_CONFIG_IRQ_MAP",
            8 => "VIRTCHNL_OP_ENABLE_QUEUES",
            9 => "VIRTCHNL_OP_DISABLE_QUEUES",
            10 => "VIRTCHNL_OP_ADD_ETH_ADDR",
            11 => "VIRTCHNL_OP_DEL_ETH_ADDR",
            12 => "VIRTCHNL_OP_ADD_VLAN",
            13 => "VIRTCHNL_OP_DEL_VLAN",
            14 => "VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE",
            15 => "VIRTCHNL_OP_GET_STATS",
            17 => "VIRTCHNL_OP_EVENT",
            18 => "VIRTCHNL_OP_CONFIG_RSS_HFUNC",
            23 => "VIRTCHNL_OP_CONFIG_RSS_KEY",
            24 => "VIRTCHNL_OP_CONFIG_RSS_LUT",
            25 => "VIRTCHNL_OP_GET_RSS_HENA_CAPS",
            26 => "VIRTCHNL_OP_SET_RSS_HENA",
            27 => "VIRTCHNL_OP_ENABLE_VLAN_STRIPPING",
            28 => "VIRTCHNL_OP_DISABLE_VLAN_STRIPPING",
            29 => "VIRTCHNL_OP_REQUEST_QUEUES",
            44 => "VIRTCHNL_OP_GET_SUPPORTED_RXDIDS",
            _ => "VIRTCHNL_OP_(other)",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Op::name_of(self.raw()))
    }
}

/// `VIRTCHNL_STATUS_SUCCESS`.
pub const STATUS_SUCCESS: i32 = 0;
/// `VIRTCHNL_STATUS_ERR_PARAM`.
pub const STATUS_ERR_PARAM: i32 = -5;
/// `VIRTCHNL_STATUS_ERR_NO_MEMORY`.
pub const STATUS_ERR_NO_MEMORY: i32 = -18;
/// `VIRTCHNL_STATUS_ERR_OPCODE_MISMATCH` (also: wrong message length).
pub const STATUS_ERR_OPCODE_MISMATCH: i32 = -38;
/// `VIRTCHNL_STATUS_ERR_CQP_COMPL_ERROR`.
pub const STATUS_ERR_CQP_COMPL_ERROR: i32 = -39;
/// `VIRTCHNL_STATUS_ERR_INVALID_VF_ID`.
pub const STATUS_ERR_INVALID_VF_ID: i32 = -40;
/// `VIRTCHNL_STATUS_ERR_ADMIN_QUEUE_ERROR`.
pub const STATUS_ERR_ADMIN_QUEUE_ERROR: i32 = -53;
/// `VIRTCHNL_STATUS_ERR_NOT_SUPPORTED`.
pub const STATUS_ERR_NOT_SUPPORTED: i32 = -64;

/// Linux errno values a PF passes as the status: Linux 6.12's i40e answers
/// with its handlers' return values (`i40e_vc_send_resp_to_vf(vf, op, -EINVAL)`)
/// instead of `enum virtchnl_status_code`; ice uses the virtchnl codes.
pub mod errno {
    /// `-EPERM`: not allowed (an untrusted VF, a MAC the host set).
    pub const EPERM: i32 = -1;
    /// `-ENOENT`.
    pub const ENOENT: i32 = -2;
    /// `-ENOMEM`.
    pub const ENOMEM: i32 = -12;
    /// `-EINVAL`: the message or a value in it is invalid, or the VF's state
    /// does not allow it.
    pub const EINVAL: i32 = -22;
    /// `-EOPNOTSUPP`: an opcode the PF has no handler for.
    pub const EOPNOTSUPP: i32 = -95;
}

/// The name of a `virtchnl_status_code` (or of the Linux errno an i40e PF
/// sends in its place; -5 is both ERR_PARAM and -EIO).
pub fn status_name(status: i32) -> &'static str {
    match status {
        STATUS_SUCCESS => "SUCCESS",
        STATUS_ERR_PARAM => "ERR_PARAM (ice) or -EIO (i40e)",
        errno::EPERM => "-EPERM",
        errno::ENOENT => "-ENOENT",
        errno::ENOMEM => "-ENOMEM",
        errno::EINVAL => "-EINVAL",
        errno::EOPNOTSUPP => "-EOPNOTSUPP",
        STATUS_ERR_NO_MEMORY => "ERR_NO_MEMORY",
        STATUS_ERR_OPCODE_MISMATCH => "ERR_OPCODE_MISMATCH",
        STATUS_ERR_CQP_COMPL_ERROR => "ERR_CQP_COMPL_ERROR",
        STATUS_ERR_INVALID_VF_ID => "ERR_INVALID_VF_ID",
        STATUS_ERR_ADMIN_QUEUE_ERROR => "ERR_ADMIN_QUEUE_ERROR",
        STATUS_ERR_NOT_SUPPORTED => "ERR_NOT_SUPPORTED",
        _ => "unknown status",
    }
}

/// The usual cause of `status` in answer to `op`, for error messages.
pub fn usual_cause(op: u32, status: i32) -> &'static str {
    const ADD: u32 = Op::AddEthAddr as u32;
    const PROMISC: u32 = Op::ConfigPromiscuousMode as u32;
    const QUEUES: u32 = Op::ConfigVsiQueues as u32;
    match (op, status) {
        (ADD, STATUS_ERR_PARAM) | (ADD, STATUS_ERR_NOT_SUPPORTED) | (ADD, errno::EPERM) => {
            "the PF refused the MAC filter: the host assigned this VF a MAC (`ip link set <pf> vf N \
             mac ...`) and spoof checking forbids another, or an untrusted VF reached its filter \
             limit (`ip link set <pf> vf N trust on`)"
        }
        (PROMISC, _) => {
            "promiscuous mode needs a trusted VF: `ip link set <pf> vf N trust on` on the host"
        }
        (QUEUES, STATUS_ERR_PARAM) | (QUEUES, errno::EINVAL) => {
            "the PF rejected a queue parameter: ring length (multiple of 32, 64..4096), buffer \
             size (1024..16256 in 128-byte units), frame size (64..16383), a queue id beyond \
             those granted, or a wrong message length"
        }
        (_, STATUS_ERR_PARAM) | (_, errno::EINVAL) => {
            "the PF rejected the request: a wrong message length for this opcode, a bad VSI id, \
             queue id or value, or a request the VF's state does not allow (Linux's i40e answers \
             -EINVAL, ice ERR_PARAM)"
        }
        (_, errno::EPERM) => {
            "the PF does not allow this VF to do that: `ip link set <pf> vf N trust on` on the host"
        }
        (_, errno::EOPNOTSUPP) => "the PF has no handler for this request",
        (_, STATUS_ERR_NO_MEMORY) => {
            "the PF is out of resources for this VF (filters, queues, vectors)"
        }
        (_, STATUS_ERR_OPCODE_MISMATCH) => {
            "the PF did not accept the message: wrong message length for this opcode, or a request \
             the PF does not expect in the VF's current state (a reset in progress)"
        }
        (_, STATUS_ERR_INVALID_VF_ID) => {
            "the PF does not know this VF right now: it is being reset or was removed"
        }
        (_, STATUS_ERR_ADMIN_QUEUE_ERROR) => "the PF's own admin queue to the firmware failed",
        (_, STATUS_ERR_NOT_SUPPORTED) => {
            "the PF does not support this request or capability (an older PF driver, or a \
             capability it did not grant)"
        }
        _ => "see the PF driver's messages in the host's dmesg",
    }
}

/// Capability flags of GET_VF_RESOURCES (virtchnl.h `VIRTCHNL_VF_OFFLOAD_*`).
pub mod caps {
    /// Base L2 offloads.
    pub const L2: u32 = 1 << 0;
    /// RSS configured through the admin queue firmware commands.
    pub const RSS_AQ: u32 = 1 << 3;
    /// RSS configured by the VF's registers.
    pub const RSS_REG: u32 = 1 << 4;
    /// Descriptor write-back on ITR expiry without interrupts.
    pub const WB_ON_ITR: u32 = 1 << 5;
    /// The VF may ask for more queues.
    pub const REQ_QUEUES: u32 = 1 << 6;
    /// Link events carry the speed in Mbit/s.
    pub const ADV_LINK_SPEED: u32 = 1 << 7;
    /// More than 16 queue pairs.
    pub const LARGE_NUM_QPAIRS: u32 = 1 << 9;
    /// Keep the CRC.
    pub const CRC: u32 = 1 << 10;
    /// VLAN filters and stripping.
    pub const VLAN: u32 = 1 << 16;
    /// Poll mode: queues mapped to vector 0 without auto-masking.
    pub const RX_POLLING: u32 = 1 << 17;
    /// RSS configured through the PF with virtchnl (key, LUT, HENA).
    pub const RSS_PF: u32 = 1 << 19;
    /// Flexible receive descriptors.
    pub const RX_FLEX_DESC: u32 = 1 << 26;

    /// What this driver asks for: only what it implements. No RX_FLEX_DESC, so
    /// receive descriptors are the legacy 32-byte ones (`union
    /// iavf_32byte_rx_desc`).
    pub const REQUESTED: u32 = L2 | RSS_PF | WB_ON_ITR | RX_POLLING | ADV_LINK_SPEED;

    /// Names of the flags set in `v`, for logs.
    pub fn describe(v: u32) -> String {
        const NAMES: &[(u32, &str)] = &[
            (L2, "L2"),
            (RSS_AQ, "RSS_AQ"),
            (RSS_REG, "RSS_REG"),
            (WB_ON_ITR, "WB_ON_ITR"),
            (REQ_QUEUES, "REQ_QUEUES"),
            (ADV_LINK_SPEED, "ADV_LINK_SPEED"),
            (LARGE_NUM_QPAIRS, "LARGE_NUM_QPAIRS"),
            (CRC, "CRC"),
            (VLAN, "VLAN"),
            (RX_POLLING, "RX_POLLING"),
            (RSS_PF, "RSS_PF"),
            (RX_FLEX_DESC, "RX_FLEX_DESC"),
        ];
        let mut s: Vec<String> = NAMES
            .iter()
            .filter(|(b, _)| v & b != 0)
            .map(|(_, n)| n.to_string())
            .collect();
        let known = NAMES.iter().fold(0, |a, (b, _)| a | b);
        if v & !known != 0 {
            s.push(format!("{:#x}", v & !known));
        }
        if s.is_empty() {
            "none".into()
        } else {
            s.join("|")
        }
    }
}

/// `VIRTCHNL_VSI_SRIOV`: the VSI type of a VF's own VSI.
pub const VSI_TYPE_SRIOV: i32 = 6;
/// `VIRTCHNL_ETHER_ADDR_PRIMARY`.
pub const ETHER_ADDR_PRIMARY: u8 = 1;
/// `FLAG_VF_UNICAST_PROMISC`.
pub const PROMISC_UNICAST: u16 = 1 << 0;
/// `FLAG_VF_MULTICAST_PROMISC`.
pub const PROMISC_MULTICAST: u16 = 1 << 1;
/// `rxdid` of the legacy 32-byte receive descriptor.
pub const RXDID_LEGACY_32: u8 = 1;
/// Most queue pairs one CONFIG_VSI_QUEUES message carries, so it fits the
/// 4 KiB admin-queue buffer (DPDK `IAVF_CFG_Q_NUM_PER_BUF`).
pub const MAX_QPAIRS_PER_MSG: usize = 32;

/// Sizes of the fixed structures (virtchnl.h `VIRTCHNL_CHECK_STRUCT_LEN`),
/// asserted in the tests.
pub mod size {
    /// `virtchnl_version_info`.
    pub const VERSION_INFO: usize = 8;
    /// `virtchnl_vf_resource` with one VSI.
    pub const VF_RESOURCE: usize = 36;
    /// `virtchnl_vf_resource` without its VSI array.
    pub const VF_RESOURCE_HEADER: usize = 20;
    /// `virtchnl_vsi_resource`.
    pub const VSI_RESOURCE: usize = 16;
    /// `virtchnl_txq_info`.
    pub const TXQ_INFO: usize = 24;
    /// `virtchnl_rxq_info`.
    pub const RXQ_INFO: usize = 40;
    /// `virtchnl_queue_pair_info`.
    pub const QUEUE_PAIR_INFO: usize = 64;
    /// `virtchnl_vsi_queue_config_info` with one pair.
    pub const VSI_QUEUE_CONFIG_INFO: usize = 72;
    /// `virtchnl_vector_map`.
    pub const VECTOR_MAP: usize = 12;
    /// `virtchnl_irq_map_info` with one map.
    pub const IRQ_MAP_INFO: usize = 14;
    /// `virtchnl_queue_select`.
    pub const QUEUE_SELECT: usize = 12;
    /// `virtchnl_ether_addr`.
    pub const ETHER_ADDR: usize = 8;
    /// `virtchnl_ether_addr_list` with one address.
    pub const ETHER_ADDR_LIST: usize = 12;
    /// `virtchnl_promisc_info`.
    pub const PROMISC_INFO: usize = 4;
    /// `virtchnl_eth_stats`.
    pub const ETH_STATS: usize = 96;
    /// `virtchnl_rss_key` / `virtchnl_rss_lut` with one byte.
    pub const RSS_KEY_LUT: usize = 6;
    /// `virtchnl_pf_event`.
    pub const PF_EVENT: usize = 16;
}

/// Little-endian writer into a zeroed buffer of the exact message length.
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn new(len: usize) -> Writer {
        Writer { buf: vec![0; len] }
    }
    fn u8(&mut self, off: usize, v: u8) -> &mut Self {
        self.buf[off] = v;
        self
    }
    fn u16(&mut self, off: usize, v: u16) -> &mut Self {
        self.buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, off: usize, v: &[u8]) -> &mut Self {
        self.buf[off..off + v.len()].copy_from_slice(v);
        self
    }
    fn done(self) -> Vec<u8> {
        self.buf
    }
}

fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn rd_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// A message too short for its structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortMessage {
    /// What was being decoded.
    pub what: &'static str,
    /// Bytes received.
    pub got: usize,
    /// Bytes needed.
    pub need: usize,
}

impl fmt::Display for ShortMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} bytes, at least {} expected",
            self.what, self.got, self.need
        )
    }
}

fn need(what: &'static str, b: &[u8], need: usize) -> Result<(), ShortMessage> {
    if b.len() < need {
        Err(ShortMessage {
            what,
            got: b.len(),
            need,
        })
    } else {
        Ok(())
    }
}

/// `virtchnl_version_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl VersionInfo {
    /// Ours: 1.1.
    pub const OURS: VersionInfo = VersionInfo {
        major: VERSION_MAJOR,
        minor: VERSION_MINOR,
    };

    /// The 8-byte payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(size::VERSION_INFO);
        w.u32(0, self.major).u32(4, self.minor);
        w.done()
    }

    /// Parse a reply.
    pub fn decode(b: &[u8]) -> Result<VersionInfo, ShortMessage> {
        need("virtchnl_version_info", b, size::VERSION_INFO)?;
        Ok(VersionInfo {
            major: rd_u32(b, 0),
            minor: rd_u32(b, 4),
        })
    }
}

/// GET_VF_RESOURCES request: the capabilities we ask for (u32, for PF ≥ 1.1).
pub fn encode_get_vf_resources(caps: u32) -> Vec<u8> {
    caps.to_le_bytes().to_vec()
}

/// `virtchnl_vsi_resource`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsiResource {
    /// The VSI id every later message names.
    pub vsi_id: u16,
    /// Queue pairs of this VSI.
    pub num_queue_pairs: u16,
    /// `VIRTCHNL_VSI_SRIOV` (6) for the VF's VSI.
    pub vsi_type: i32,
    /// Queue set handle.
    pub qset_handle: u16,
    /// The MAC address the PF gives the VF (zero: none).
    pub default_mac: [u8; 6],
}

/// `virtchnl_vf_resource` and its VSIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfResource {
    /// VSIs listed.
    pub num_vsis: u16,
    /// Queue pairs the VF may use.
    pub num_queue_pairs: u16,
    /// MSI-X vectors.
    pub max_vectors: u16,
    /// Largest MTU.
    pub max_mtu: u16,
    /// Capabilities granted.
    pub vf_cap_flags: u32,
    /// RSS key length in bytes.
    pub rss_key_size: u32,
    /// RSS LUT entries.
    pub rss_lut_size: u32,
    /// The VSIs (DPDK reads up to 4).
    pub vsi_res: Vec<VsiResource>,
}

impl VfResource {
    /// Most VSIs read from a reply (DPDK `IAVF_MAX_VF_VSI`).
    pub const MAX_VSIS: usize = 4;

    /// Parse a GET_VF_RESOURCES reply.
    pub fn decode(b: &[u8]) -> Result<VfResource, ShortMessage> {
        need("virtchnl_vf_resource", b, size::VF_RESOURCE_HEADER)?;
        let num_vsis = rd_u16(b, 0);
        let mut vsi_res = Vec::new();
        for i in 0..(num_vsis as usize).min(Self::MAX_VSIS) {
            let off = size::VF_RESOURCE_HEADER + i * size::VSI_RESOURCE;
            if b.len() < off + size::VSI_RESOURCE {
                break;
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&b[off + 10..off + 16]);
            vsi_res.push(VsiResource {
                vsi_id: rd_u16(b, off),
                num_queue_pairs: rd_u16(b, off + 2),
                vsi_type: rd_u32(b, off + 4) as i32,
                qset_handle: rd_u16(b, off + 8),
                default_mac: mac,
            });
        }
        Ok(VfResource {
            num_vsis,
            num_queue_pairs: rd_u16(b, 2),
            max_vectors: rd_u16(b, 4),
            max_mtu: rd_u16(b, 6),
            vf_cap_flags: rd_u32(b, 8),
            rss_key_size: rd_u32(b, 12),
            rss_lut_size: rd_u32(b, 16),
            vsi_res,
        })
    }

    /// Encode (for tests and fake PFs).
    pub fn encode(&self) -> Vec<u8> {
        let n = self.vsi_res.len().max(1);
        let mut w = Writer::new(size::VF_RESOURCE_HEADER + n * size::VSI_RESOURCE);
        w.u16(0, self.num_vsis)
            .u16(2, self.num_queue_pairs)
            .u16(4, self.max_vectors)
            .u16(6, self.max_mtu)
            .u32(8, self.vf_cap_flags)
            .u32(12, self.rss_key_size)
            .u32(16, self.rss_lut_size);
        for (i, v) in self.vsi_res.iter().enumerate() {
            let off = size::VF_RESOURCE_HEADER + i * size::VSI_RESOURCE;
            w.u16(off, v.vsi_id)
                .u16(off + 2, v.num_queue_pairs)
                .u32(off + 4, v.vsi_type as u32)
                .u16(off + 8, v.qset_handle)
                .bytes(off + 10, &v.default_mac);
        }
        w.done()
    }

    /// The VF's own VSI: the first of type SRIOV (6).
    pub fn sriov_vsi(&self) -> Option<&VsiResource> {
        self.vsi_res.iter().find(|v| v.vsi_type == VSI_TYPE_SRIOV)
    }
}

/// `virtchnl_txq_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxqInfo {
    /// VSI.
    pub vsi_id: u16,
    /// Queue index.
    pub queue_id: u16,
    /// Descriptors.
    pub ring_len: u16,
    /// Ring IOVA.
    pub dma_ring_addr: u64,
}

/// `virtchnl_rxq_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxqInfo {
    /// VSI.
    pub vsi_id: u16,
    /// Queue index.
    pub queue_id: u16,
    /// Descriptors (multiple of 32).
    pub ring_len: u32,
    /// Bytes per receive buffer (multiple of 128).
    pub databuffer_size: u32,
    /// Largest frame accepted.
    pub max_pkt_size: u32,
    /// `rxdid` (only with RX_FLEX_DESC; 0 otherwise).
    pub rxdid: u8,
    /// Ring IOVA.
    pub dma_ring_addr: u64,
}

/// `virtchnl_queue_pair_info`: one transmit and one receive queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuePairInfo {
    /// Transmit half (zero if unused).
    pub txq: TxqInfo,
    /// Receive half (zero if unused).
    pub rxq: RxqInfo,
}

impl QueuePairInfo {
    fn write(&self, w: &mut Writer, off: usize) {
        let t = &self.txq;
        w.u16(off, t.vsi_id)
            .u16(off + 2, t.queue_id)
            .u16(off + 4, t.ring_len)
            .u16(off + 6, 0) // headwb_enabled: deprecated
            .u64(off + 8, t.dma_ring_addr)
            .u64(off + 16, 0); // dma_headwb_addr: deprecated
        let r = &self.rxq;
        let o = off + size::TXQ_INFO;
        w.u16(o, r.vsi_id)
            .u16(o + 2, r.queue_id)
            .u32(o + 4, r.ring_len)
            .u16(o + 8, 0) // hdr_size
            .u16(o + 10, 0) // splithdr_enabled
            .u32(o + 12, r.databuffer_size)
            .u32(o + 16, r.max_pkt_size)
            .u8(o + 20, 0) // crc_disable: strip the CRC
            .u8(o + 21, r.rxdid)
            .u8(o + 22, 0) // flags
            .u64(o + 24, r.dma_ring_addr)
            .u32(o + 32, 0); // rx_split_pos
    }

    fn read(b: &[u8], off: usize) -> QueuePairInfo {
        let o = off + size::TXQ_INFO;
        QueuePairInfo {
            txq: TxqInfo {
                vsi_id: rd_u16(b, off),
                queue_id: rd_u16(b, off + 2),
                ring_len: rd_u16(b, off + 4),
                dma_ring_addr: rd_u64(b, off + 8),
            },
            rxq: RxqInfo {
                vsi_id: rd_u16(b, o),
                queue_id: rd_u16(b, o + 2),
                ring_len: rd_u32(b, o + 4),
                databuffer_size: rd_u32(b, o + 12),
                max_pkt_size: rd_u32(b, o + 16),
                rxdid: b[o + 21],
                dma_ring_addr: rd_u64(b, o + 24),
            },
        }
    }
}

/// Exact CONFIG_VSI_QUEUES length for `n` pairs: 72 + 64·n
/// (`virtchnl_vc_validate_vf_msg`).
pub const fn vsi_queues_len(n: usize) -> usize {
    size::VSI_QUEUE_CONFIG_INFO + size::QUEUE_PAIR_INFO * n
}

/// CONFIG_VSI_QUEUES (`virtchnl_vsi_queue_config_info`) for these pairs.
pub fn encode_vsi_queues(vsi_id: u16, pairs: &[QueuePairInfo]) -> Vec<u8> {
    assert!(!pairs.is_empty() && pairs.len() <= MAX_QPAIRS_PER_MSG);
    let mut w = Writer::new(vsi_queues_len(pairs.len()));
    w.u16(0, vsi_id).u16(2, pairs.len() as u16);
    for (i, p) in pairs.iter().enumerate() {
        p.write(&mut w, 8 + i * size::QUEUE_PAIR_INFO);
    }
    w.done()
}

/// Parse CONFIG_VSI_QUEUES (for tests and fake PFs): (vsi_id, pairs).
pub fn decode_vsi_queues(b: &[u8]) -> Result<(u16, Vec<QueuePairInfo>), ShortMessage> {
    need("virtchnl_vsi_queue_config_info", b, 8)?;
    let n = rd_u16(b, 2) as usize;
    need(
        "virtchnl_vsi_queue_config_info",
        b,
        8 + n * size::QUEUE_PAIR_INFO,
    )?;
    Ok((
        rd_u16(b, 0),
        (0..n)
            .map(|i| QueuePairInfo::read(b, 8 + i * size::QUEUE_PAIR_INFO))
            .collect(),
    ))
}

/// `virtchnl_vector_map`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorMap {
    /// VSI.
    pub vsi_id: u16,
    /// Vector (0: the misc vector).
    pub vector_id: u16,
    /// Bitmap of receive queues.
    pub rxq_map: u16,
    /// Bitmap of transmit queues.
    pub txq_map: u16,
    /// ITR index for receive.
    pub rxitr_idx: u16,
    /// ITR index for transmit.
    pub txitr_idx: u16,
}

/// Exact CONFIG_IRQ_MAP length for `n` vectors: 14 + 12·n.
pub const fn irq_map_len(n: usize) -> usize {
    size::IRQ_MAP_INFO + size::VECTOR_MAP * n
}

/// CONFIG_IRQ_MAP (`virtchnl_irq_map_info`).
pub fn encode_irq_map(maps: &[VectorMap]) -> Vec<u8> {
    assert!(!maps.is_empty());
    let mut w = Writer::new(irq_map_len(maps.len()));
    w.u16(0, maps.len() as u16);
    for (i, m) in maps.iter().enumerate() {
        let o = 2 + i * size::VECTOR_MAP;
        w.u16(o, m.vsi_id)
            .u16(o + 2, m.vector_id)
            .u16(o + 4, m.rxq_map)
            .u16(o + 6, m.txq_map)
            .u16(o + 8, m.rxitr_idx)
            .u16(o + 10, m.txitr_idx);
    }
    w.done()
}

/// `virtchnl_queue_select`, for ENABLE/DISABLE_QUEUES and GET_STATS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSelect {
    /// VSI.
    pub vsi_id: u16,
    /// Bitmap of receive queues.
    pub rx_queues: u32,
    /// Bitmap of transmit queues.
    pub tx_queues: u32,
}

impl QueueSelect {
    /// The 12-byte payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(size::QUEUE_SELECT);
        w.u16(0, self.vsi_id)
            .u32(4, self.rx_queues)
            .u32(8, self.tx_queues);
        w.done()
    }

    /// Parse (for tests and fake PFs).
    pub fn decode(b: &[u8]) -> Result<QueueSelect, ShortMessage> {
        need("virtchnl_queue_select", b, size::QUEUE_SELECT)?;
        Ok(QueueSelect {
            vsi_id: rd_u16(b, 0),
            rx_queues: rd_u32(b, 4),
            tx_queues: rd_u32(b, 8),
        })
    }
}

/// Bitmap of the first `n` queues.
pub fn queue_bitmap(n: u16) -> u32 {
    if n >= 32 { u32::MAX } else { (1u32 << n) - 1 }
}

/// Exact ADD/DEL_ETH_ADDR length for `n` addresses: 12 + 8·n.
pub const fn ether_addr_list_len(n: usize) -> usize {
    size::ETHER_ADDR_LIST + size::ETHER_ADDR * n
}

/// ADD/DEL_ETH_ADDR (`virtchnl_ether_addr_list`) with `(mac, type)` entries.
pub fn encode_ether_addr_list(vsi_id: u16, addrs: &[([u8; 6], u8)]) -> Vec<u8> {
    assert!(!addrs.is_empty());
    let mut w = Writer::new(ether_addr_list_len(addrs.len()));
    w.u16(0, vsi_id).u16(2, addrs.len() as u16);
    for (i, (mac, ty)) in addrs.iter().enumerate() {
        let o = 4 + i * size::ETHER_ADDR;
        w.bytes(o, mac).u8(o + 6, *ty);
    }
    w.done()
}

/// CONFIG_PROMISCUOUS_MODE (`virtchnl_promisc_info`).
pub fn encode_promisc(vsi_id: u16, flags: u16) -> Vec<u8> {
    let mut w = Writer::new(size::PROMISC_INFO);
    w.u16(0, vsi_id).u16(2, flags);
    w.done()
}

/// Exact CONFIG_RSS_KEY / CONFIG_RSS_LUT length for `k` bytes: 5 + k.
pub const fn rss_key_lut_len(k: usize) -> usize {
    size::RSS_KEY_LUT - 1 + k
}

/// CONFIG_RSS_KEY (`virtchnl_rss_key`) or CONFIG_RSS_LUT (`virtchnl_rss_lut`):
/// the same layout, `vsi_id`, length, bytes.
pub fn encode_rss_key_or_lut(vsi_id: u16, bytes: &[u8]) -> Vec<u8> {
    assert!(!bytes.is_empty());
    let mut w = Writer::new(rss_key_lut_len(bytes.len()).max(size::RSS_KEY_LUT));
    w.u16(0, vsi_id).u16(2, bytes.len() as u16).bytes(4, bytes);
    let mut v = w.done();
    v.truncate(rss_key_lut_len(bytes.len()));
    v
}

/// SET_RSS_HENA: the u64 bitmap of packet types to hash.
pub fn encode_hena(hena: u64) -> Vec<u8> {
    hena.to_le_bytes().to_vec()
}

/// Parse a GET_RSS_HENA_CAPS reply.
pub fn decode_hena(b: &[u8]) -> Result<u64, ShortMessage> {
    need("virtchnl_rss_hena", b, 8)?;
    Ok(rd_u64(b, 0))
}

/// `virtchnl_eth_stats`: the VSI's counters, cumulative since the VF's reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthStats {
    /// Bytes received (with CRC).
    pub rx_bytes: u64,
    /// Unicast frames received.
    pub rx_unicast: u64,
    /// Multicast frames received.
    pub rx_multicast: u64,
    /// Broadcast frames received.
    pub rx_broadcast: u64,
    /// Frames dropped for lack of receive descriptors.
    pub rx_discards: u64,
    /// Frames of an unknown protocol.
    pub rx_unknown_protocol: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Unicast frames sent.
    pub tx_unicast: u64,
    /// Multicast frames sent.
    pub tx_multicast: u64,
    /// Broadcast frames sent.
    pub tx_broadcast: u64,
    /// Frames dropped on transmit.
    pub tx_discards: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

impl EthStats {
    /// DPDK's xstats names, in the structure's order.
    pub const NAMES: [&'static str; 12] = [
        "rx_bytes",
        "rx_unicast_packets",
        "rx_multicast_packets",
        "rx_broadcast_packets",
        "rx_dropped_packets",
        "rx_unknown_protocol_packets",
        "tx_bytes",
        "tx_unicast_packets",
        "tx_multicast_packets",
        "tx_broadcast_packets",
        "tx_dropped_packets",
        "tx_error_packets",
    ];

    /// Counter widths on 700-series hardware: 48 bits for bytes and packets,
    /// 32 for discards and errors (DPDK `iavf_stat_update_48/_32`).
    pub const WIDTHS: [u32; 12] = [48, 48, 48, 48, 32, 32, 48, 48, 48, 48, 32, 32];

    /// The counters in the structure's order.
    pub fn to_array(&self) -> [u64; 12] {
        [
            self.rx_bytes,
            self.rx_unicast,
            self.rx_multicast,
            self.rx_broadcast,
            self.rx_discards,
            self.rx_unknown_protocol,
            self.tx_bytes,
            self.tx_unicast,
            self.tx_multicast,
            self.tx_broadcast,
            self.tx_discards,
            self.tx_errors,
        ]
    }

    /// From the array order.
    pub fn from_array(a: [u64; 12]) -> EthStats {
        EthStats {
            rx_bytes: a[0],
            rx_unicast: a[1],
            rx_multicast: a[2],
            rx_broadcast: a[3],
            rx_discards: a[4],
            rx_unknown_protocol: a[5],
            tx_bytes: a[6],
            tx_unicast: a[7],
            tx_multicast: a[8],
            tx_broadcast: a[9],
            tx_discards: a[10],
            tx_errors: a[11],
        }
    }

    /// Parse a GET_STATS reply.
    pub fn decode(b: &[u8]) -> Result<EthStats, ShortMessage> {
        need("virtchnl_eth_stats", b, size::ETH_STATS)?;
        let mut a = [0u64; 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = rd_u64(b, i * 8);
        }
        Ok(EthStats::from_array(a))
    }

    /// Encode (for tests and fake PFs).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(size::ETH_STATS);
        for (i, v) in self.to_array().iter().enumerate() {
            w.u64(i * 8, *v);
        }
        w.done()
    }
}

/// `VIRTCHNL_EVENT_LINK_CHANGE`.
pub const EVENT_LINK_CHANGE: i32 = 1;
/// `VIRTCHNL_EVENT_RESET_IMPENDING`.
pub const EVENT_RESET_IMPENDING: i32 = 2;
/// `VIRTCHNL_EVENT_PF_DRIVER_CLOSE`.
pub const EVENT_PF_DRIVER_CLOSE: i32 = 3;

/// A decoded `virtchnl_pf_event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PfEvent {
    /// The link went up or down.
    LinkChange {
        /// Link up.
        up: bool,
        /// Speed in Mbit/s (0 unknown).
        speed_mbps: u32,
    },
    /// The PF is about to reset the VF: stop touching the queues.
    ResetImpending,
    /// The PF driver is going away.
    PfDriverClose,
    /// Anything else (event code).
    Other(i32),
}

/// Legacy `enum virtchnl_link_speed` bit to Mbit/s.
pub fn legacy_speed_mbps(v: u32) -> u32 {
    match v {
        0x1 => 2_500,
        0x2 => 100,
        0x4 => 1_000,
        0x8 => 10_000,
        0x10 => 40_000,
        0x20 => 20_000,
        0x40 => 25_000,
        0x80 => 5_000,
        _ => 0,
    }
}

impl PfEvent {
    /// Parse an EVENT message; `adv_speed` says whether CAP_ADV_LINK_SPEED was
    /// granted (speed in Mbit/s) or the speed is the legacy enum.
    pub fn decode(b: &[u8], adv_speed: bool) -> Result<PfEvent, ShortMessage> {
        // The link fields end at byte 9; some PFs send only that much.
        need("virtchnl_pf_event", b, 4)?;
        let event = rd_u32(b, 0) as i32;
        Ok(match event {
            EVENT_LINK_CHANGE => {
                need("virtchnl_pf_event", b, 9)?;
                let raw = rd_u32(b, 4);
                PfEvent::LinkChange {
                    up: b[8] != 0,
                    speed_mbps: if adv_speed {
                        raw
                    } else {
                        legacy_speed_mbps(raw)
                    },
                }
            }
            EVENT_RESET_IMPENDING => PfEvent::ResetImpending,
            EVENT_PF_DRIVER_CLOSE => PfEvent::PfDriverClose,
            e => PfEvent::Other(e),
        })
    }

    /// Encode a link event with the speed in Mbit/s (for tests and fake PFs).
    pub fn encode_link(up: bool, speed_mbps: u32) -> Vec<u8> {
        let mut w = Writer::new(size::PF_EVENT);
        w.u32(0, EVENT_LINK_CHANGE as u32)
            .u32(4, speed_mbps)
            .u8(8, up as u8);
        w.done()
    }

    /// Encode an event without payload (for tests and fake PFs).
    pub fn encode_bare(event: i32) -> Vec<u8> {
        let mut w = Writer::new(size::PF_EVENT);
        w.u32(0, event as u32);
        w.done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_sizes_match_the_headers() {
        assert_eq!(VersionInfo::OURS.encode().len(), 8);
        assert_eq!(encode_get_vf_resources(caps::REQUESTED).len(), 4);
        assert_eq!(
            size::VF_RESOURCE,
            size::VF_RESOURCE_HEADER + size::VSI_RESOURCE
        );
        assert_eq!(size::QUEUE_PAIR_INFO, size::TXQ_INFO + size::RXQ_INFO);
        assert_eq!(size::VSI_QUEUE_CONFIG_INFO, 8 + size::QUEUE_PAIR_INFO);
        assert_eq!(size::IRQ_MAP_INFO, 2 + size::VECTOR_MAP);
        assert_eq!(size::ETHER_ADDR_LIST, 4 + size::ETHER_ADDR);
        assert_eq!(QueueSelect::default().encode().len(), 12);
        assert_eq!(encode_promisc(1, 3).len(), 4);
        assert_eq!(EthStats::default().encode().len(), 96);
        assert_eq!(encode_hena(0).len(), 8);
    }

    #[test]
    fn array_messages_have_the_lengths_the_pf_validates() {
        // virtchnl_vc_validate_vf_msg: 72 + 64n, 14 + 12n, 12 + 8n, 5 + k.
        let pair = QueuePairInfo::default();
        for n in 1..=MAX_QPAIRS_PER_MSG {
            assert_eq!(encode_vsi_queues(3, &vec![pair; n]).len(), 72 + 64 * n);
        }
        assert!(vsi_queues_len(MAX_QPAIRS_PER_MSG) <= 4096);
        assert_eq!(encode_irq_map(&[VectorMap::default()]).len(), 26);
        assert_eq!(encode_irq_map(&[VectorMap::default(); 3]).len(), 14 + 36);
        assert_eq!(encode_ether_addr_list(1, &[([2; 6], 1)]).len(), 20);
        assert_eq!(encode_ether_addr_list(1, &[([2; 6], 1); 4]).len(), 44);
        assert_eq!(encode_rss_key_or_lut(1, &[7; 52]).len(), 57);
        assert_eq!(encode_rss_key_or_lut(1, &[7; 64]).len(), 69);
        assert_eq!(encode_rss_key_or_lut(1, &[7; 1]).len(), 6);
    }

    #[test]
    fn vsi_queues_layout() {
        let p = QueuePairInfo {
            txq: TxqInfo {
                vsi_id: 5,
                queue_id: 2,
                ring_len: 512,
                dma_ring_addr: 0x1122_3344_5566_7780,
            },
            rxq: RxqInfo {
                vsi_id: 5,
                queue_id: 2,
                ring_len: 1024,
                databuffer_size: 1664,
                max_pkt_size: 1664,
                rxdid: 0,
                dma_ring_addr: 0xAABB_CCDD_0000_1000,
            },
        };
        let b = encode_vsi_queues(5, &[p]);
        assert_eq!(&b[0..4], &[5, 0, 1, 0]);
        assert_eq!(&b[4..8], &[0; 4], "pad");
        let q = 8;
        assert_eq!(rd_u16(&b, q), 5);
        assert_eq!(rd_u16(&b, q + 2), 2);
        assert_eq!(rd_u16(&b, q + 4), 512);
        assert_eq!(rd_u64(&b, q + 8), 0x1122_3344_5566_7780);
        let r = q + 24;
        assert_eq!(rd_u32(&b, r + 4), 1024);
        assert_eq!(rd_u32(&b, r + 12), 1664);
        assert_eq!(rd_u32(&b, r + 16), 1664);
        assert_eq!(b[r + 20], 0, "crc_disable: CRC stripped");
        assert_eq!(rd_u64(&b, r + 24), 0xAABB_CCDD_0000_1000);
        assert!(b[72..].iter().all(|&x| x == 0), "the extra element is zero");
        assert_eq!(decode_vsi_queues(&b).unwrap(), (5, vec![p]));
    }

    #[test]
    fn irq_map_and_queue_select_layout() {
        let b = encode_irq_map(&[VectorMap {
            vsi_id: 9,
            vector_id: 1,
            rxq_map: 0xF,
            txq_map: 0,
            rxitr_idx: 0,
            txitr_idx: 0,
        }]);
        assert_eq!(rd_u16(&b, 0), 1);
        assert_eq!(rd_u16(&b, 2), 9);
        assert_eq!(rd_u16(&b, 4), 1);
        assert_eq!(rd_u16(&b, 6), 0xF);
        let s = QueueSelect {
            vsi_id: 9,
            rx_queues: 0b111,
            tx_queues: 0b11,
        };
        let b = s.encode();
        assert_eq!(&b[0..4], &[9, 0, 0, 0]);
        assert_eq!(rd_u32(&b, 4), 7);
        assert_eq!(rd_u32(&b, 8), 3);
        assert_eq!(QueueSelect::decode(&b).unwrap(), s);
        assert_eq!(queue_bitmap(0), 0);
        assert_eq!(queue_bitmap(3), 7);
        assert_eq!(queue_bitmap(32), u32::MAX);
    }

    #[test]
    fn ether_addr_and_promisc_layout() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let b = encode_ether_addr_list(7, &[(mac, ETHER_ADDR_PRIMARY)]);
        assert_eq!(rd_u16(&b, 0), 7);
        assert_eq!(rd_u16(&b, 2), 1);
        assert_eq!(&b[4..10], &mac);
        assert_eq!(b[10], 1);
        assert_eq!(
            encode_promisc(7, PROMISC_UNICAST | PROMISC_MULTICAST),
            vec![7, 0, 3, 0]
        );
        let k = encode_rss_key_or_lut(7, &[1, 2, 3]);
        assert_eq!(k, vec![7, 0, 3, 0, 1, 2, 3, 0], "5 + 3 bytes");
    }

    #[test]
    fn vf_resource_round_trip_and_vsi_choice() {
        let r = VfResource {
            num_vsis: 2,
            num_queue_pairs: 4,
            max_vectors: 5,
            max_mtu: 9710,
            vf_cap_flags: caps::L2 | caps::RSS_PF,
            rss_key_size: 52,
            rss_lut_size: 64,
            vsi_res: vec![
                VsiResource {
                    vsi_id: 1,
                    num_queue_pairs: 4,
                    vsi_type: 0,
                    qset_handle: 0,
                    default_mac: [0; 6],
                },
                VsiResource {
                    vsi_id: 17,
                    num_queue_pairs: 4,
                    vsi_type: VSI_TYPE_SRIOV,
                    qset_handle: 3,
                    default_mac: [2, 0, 0, 0, 0, 9],
                },
            ],
        };
        let b = r.encode();
        assert_eq!(b.len(), 20 + 32);
        assert_eq!(rd_u32(&b, 8), caps::L2 | caps::RSS_PF);
        assert_eq!(rd_u16(&b, 36), 17, "second VSI at 20 + 16");
        assert_eq!(&b[46..52], &[2, 0, 0, 0, 0, 9]);
        let d = VfResource::decode(&b).unwrap();
        assert_eq!(d, r);
        assert_eq!(d.sriov_vsi().unwrap().vsi_id, 17);
        assert!(VfResource::decode(&b[..10]).is_err());
    }

    #[test]
    fn eth_stats_and_events_decode() {
        let s = EthStats::from_array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let b = s.encode();
        assert_eq!(rd_u64(&b, 32), 5, "rx_discards @32");
        assert_eq!(rd_u64(&b, 88), 12, "tx_errors @88");
        assert_eq!(EthStats::decode(&b).unwrap(), s);
        assert!(EthStats::decode(&b[..95]).is_err());
        let e = PfEvent::encode_link(true, 25_000);
        assert_eq!(e.len(), 16);
        assert_eq!(
            PfEvent::decode(&e, true).unwrap(),
            PfEvent::LinkChange {
                up: true,
                speed_mbps: 25_000
            }
        );
        let mut legacy = PfEvent::encode_link(true, 0x8);
        assert_eq!(
            PfEvent::decode(&legacy, false).unwrap(),
            PfEvent::LinkChange {
                up: true,
                speed_mbps: 10_000
            }
        );
        legacy[8] = 0;
        assert!(matches!(
            PfEvent::decode(&legacy, false).unwrap(),
            PfEvent::LinkChange { up: false, .. }
        ));
        assert_eq!(
            PfEvent::decode(&PfEvent::encode_bare(EVENT_RESET_IMPENDING), true).unwrap(),
            PfEvent::ResetImpending
        );
    }

    #[test]
    fn requested_caps_exclude_flex_descriptors() {
        assert_eq!(caps::REQUESTED & caps::RX_FLEX_DESC, 0);
        assert_eq!(
            caps::describe(caps::REQUESTED),
            "L2|WB_ON_ITR|ADV_LINK_SPEED|RX_POLLING|RSS_PF"
        );
        assert_eq!(Op::name_of(6), "VIRTCHNL_OP_CONFIG_VSI_QUEUES");
        assert!(usual_cause(14, 0).contains("trust on"));
        // Linux 6.12's i40e answers with errno values.
        assert_eq!(status_name(-22), "-EINVAL");
        assert_eq!(status_name(-95), "-EOPNOTSUPP");
        assert!(usual_cause(Op::AddEthAddr.raw(), errno::EPERM).contains("MAC"));
        assert!(usual_cause(Op::ConfigVsiQueues.raw(), errno::EINVAL).contains("ring length"));
    }
}
