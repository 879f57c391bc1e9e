//! The PF side of virtchnl, answering as Linux's i40e PF driver does
//! (`drivers/net/ethernet/intel/i40e/i40e_virtchnl_pf.c`, `i40e_vc_process_vf_msg`
//! and its handlers), with the message lengths of `virtchnl_vc_validate_vf_msg`
//! (`include/linux/avf/virtchnl.h`).
//!
//! The i40e PF's rules, as modelled:
//!
//! - A VF whose mailbox is disabled (more than `invalid_msg_limit` failed
//!   messages in a row, i40e `I40E_DEFAULT_NUM_INVALID_MSGS_ALLOWED`) gets no
//!   answer at all until its next reset.
//! - Every message is first length-checked; a wrong length (or a zero element
//!   count, or an opcode virtchnl does not know) is answered with
//!   `I40E_ERR_PARAM` = `VIRTCHNL_STATUS_ERR_PARAM` (-5): `virtchnl_vc_validate_vf_msg`
//!   returns ERR_OPCODE_MISMATCH/NOT_SUPPORTED, and i40e sends ERR_PARAM for any
//!   validation failure.
//! - Every configuration message needs the VF to be ACTIVE (GET_VF_RESOURCES
//!   answered since the last reset) and to name its own VSI, else ERR_PARAM.
//! - A valid message i40e has no handler for (CONFIG_TX_QUEUE, CONFIG_RX_QUEUE,
//!   GET_SUPPORTED_RXDIDS, GET_OFFLOAD_VLAN_V2_CAPS) gets `I40E_ERR_NOT_IMPLEMENTED`
//!   (-60).
//! - RDMA (20-22) and ADq (30-33) messages get ERR_PARAM (the model grants
//!   neither capability; i40e refuses them for such a VF).
//!
//! Where i40e checks less than the hardware needs, the model adds the check ice
//! makes and says so (ring lengths, queue bitmaps beyond the VF's queues).
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;

use super::datapath::{RxQ, TxQ};
use super::device::{DevConfig, Device, u16_at, u32_at, u64_at};
use super::spec::{self, cap, msg, op, pf as lim, reg, status};
use super::{FaultState, PfModel};

/// The i40e PF's per-VF state (`struct i40e_vf` and its VSI).
pub(super) struct Pf {
    /// virtchnl version the VF announced (i40e `vf->vf_ver`; kept across resets).
    pub vf_ver: (u32, u32),
    /// `I40E_VF_STATE_INIT`: resources allocated (GET_VF_RESOURCES allowed).
    pub init: bool,
    /// `I40E_VF_STATE_ACTIVE`: GET_VF_RESOURCES answered.
    pub active: bool,
    /// `I40E_VF_STATE_DISABLED`: too many invalid messages.
    pub disabled: bool,
    pub num_invalid: u32,
    pub driver_caps: u32,
    pub granted: u32,
    pub vsi_id: u16,
    /// Queue pairs of the VSI (`alloc_queue_pairs`).
    pub num_qps: u16,
    /// From REQUEST_QUEUES, applied at the next reset.
    pub num_req_queues: u16,
    /// The MAC the host set (`default_lan_addr`), all-zero if none.
    pub mac: [u8; 6],
    /// MAC filters of the VSI.
    pub filters: Vec<[u8; 6]>,
    pub vlans: Vec<u16>,
    pub vlan_strip: bool,
    /// (unicast, multicast) as asked for by the VF.
    pub promisc_req: (bool, bool),
    /// (unicast, multicast) in effect.
    pub promisc: (bool, bool),
    pub queues_enabled: bool,
    /// (vector, rxq_map, txq_map, rxitr, txitr).
    pub irq_map: Vec<(u16, u16, u16, u16, u16)>,
    /// Resource allocations so far (the first keeps the configured VSI id).
    pub allocations: u32,
}

const BROADCAST: [u8; 6] = [0xff; 6];

impl Pf {
    pub(super) fn new(cfg: &DevConfig) -> Pf {
        Pf {
            vf_ver: (0, 0),
            init: false,
            active: false,
            disabled: false,
            num_invalid: 0,
            driver_caps: 0,
            granted: 0,
            vsi_id: cfg.first_vsi_id,
            num_qps: cfg.default_queue_pairs,
            num_req_queues: 0,
            mac: cfg.mac,
            filters: Vec::new(),
            vlans: Vec::new(),
            vlan_strip: false,
            promisc_req: (false, false),
            promisc: (false, false),
            queues_enabled: false,
            irq_map: Vec::new(),
            allocations: 0,
        }
    }

    /// i40e `i40e_cleanup_reset_vf` + `i40e_alloc_vf_res`.
    pub(super) fn reallocate(&mut self, cfg: &DevConfig, new_vsi_id: bool) {
        self.num_qps = if self.num_req_queues > 0 && self.num_req_queues <= lim::MAX_VF_QUEUES {
            self.num_req_queues
        } else {
            cfg.default_queue_pairs
        };
        if new_vsi_id && self.allocations > 0 {
            self.vsi_id = self.vsi_id.wrapping_add(1).max(1);
        }
        self.allocations += 1;
        self.filters.clear();
        if self.mac != [0; 6] {
            self.filters.push(self.mac);
        }
        self.filters.push(BROADCAST);
        self.vlans.clear();
        self.vlan_strip = false;
        self.promisc_req = (false, false);
        self.promisc = (false, false);
        self.queues_enabled = false;
        self.irq_map.clear();
        self.granted = 0;
        self.disabled = false;
        self.active = false;
        self.init = true;
    }

    fn is_valid_vsi(&self, vsi_id: u16) -> bool {
        vsi_id == self.vsi_id
    }

    fn is_valid_queue(&self, qid: u16) -> bool {
        qid < self.num_qps
    }

    /// The unicast addresses the VSI may send from (anti-spoof).
    pub(super) fn owns_source(&self, mac: &[u8]) -> bool {
        self.filters.iter().any(|f| f[..] == *mac && f[0] & 1 == 0)
    }
}

/// The length `virtchnl_vc_validate_vf_msg` expects, or `None` when the message
/// fails validation whatever its length.
fn expected_len(v_op: u32, m: &[u8], ver: (u32, u32)) -> Option<usize> {
    let len = m.len();
    // Array messages: a fixed minimum, then the element count decides (a count
    // of zero is a format error).
    let array = |min: usize, count_at: usize, f: fn(usize) -> usize| -> Option<usize> {
        if len < min {
            return Some(min);
        }
        let n = usize::from(u16_at(m, count_at));
        if n == 0 { None } else { Some(f(n)) }
    };
    Some(match v_op {
        op::VERSION => msg::VERSION_INFO_LEN,
        op::RESET_VF => 0,
        op::GET_VF_RESOURCES => {
            if ver == (spec::VIRTCHNL_VERSION_MAJOR, spec::VIRTCHNL_VERSION_MINOR) {
                4
            } else {
                0
            }
        }
        op::CONFIG_TX_QUEUE => msg::TXQ_INFO_LEN,
        op::CONFIG_RX_QUEUE => msg::RXQ_INFO_LEN,
        op::CONFIG_VSI_QUEUES => {
            return array(msg::vsi_queue_config_len(0), 2, msg::vsi_queue_config_len);
        }
        op::CONFIG_IRQ_MAP => return array(msg::irq_map_len(0), 0, msg::irq_map_len),
        op::ENABLE_QUEUES | op::DISABLE_QUEUES | op::GET_STATS => msg::QUEUE_SELECT_LEN,
        op::ADD_ETH_ADDR | op::DEL_ETH_ADDR => {
            return array(msg::ether_addr_list_len(0), 2, msg::ether_addr_list_len);
        }
        op::ADD_VLAN | op::DEL_VLAN => {
            return array(msg::vlan_filter_list_len(0), 2, msg::vlan_filter_list_len);
        }
        op::CONFIG_PROMISCUOUS_MODE => msg::PROMISC_INFO_LEN,
        op::CONFIG_RSS_KEY | op::CONFIG_RSS_LUT => {
            let min = msg::rss_key_lut_len(1);
            if len < min {
                min
            } else {
                msg::rss_key_lut_len(usize::from(u16_at(m, 2)))
            }
        }
        op::GET_RSS_HENA_CAPS
        | op::ENABLE_VLAN_STRIPPING
        | op::DISABLE_VLAN_STRIPPING
        | op::GET_SUPPORTED_RXDIDS
        | op::GET_OFFLOAD_VLAN_V2_CAPS => 0,
        op::SET_RSS_HENA => msg::RSS_HENA_LEN,
        op::REQUEST_QUEUES => msg::VF_RES_REQUEST_LEN,
        _ => return None,
    })
}

impl Device {
    /// One virtchnl message from the VF (`i40e_vc_process_vf_msg`).
    pub(super) fn handle_message(&mut self, v_op: u32, m: &[u8]) {
        let faults: &FaultState = &self.sh.faults;
        if v_op != 0
            && faults
                .reset_on_opcode
                .compare_exchange(v_op, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            log::info!(
                "simulated iavf {}: resetting the VF on virtchnl op {v_op} (fault knob)",
                self.sh.name
            );
            self.start_reset(true);
            return;
        }
        if faults.pf_silent.load(Ordering::Acquire) {
            self.sh.counters.pf_ignored.inc();
            return;
        }
        if self.pf.disabled {
            // i40e: "Check if VF is disabled" — no answer.
            self.sh.counters.pf_ignored.inc();
            return;
        }
        self.dirty = true;
        // RDMA and ADq: refused for a VF that was granted neither.
        if matches!(
            v_op,
            op::IWARP
                | op::CONFIG_IWARP_IRQ_MAP
                | op::RELEASE_IWARP_IRQ_MAP
                | op::ENABLE_CHANNELS
                | op::DISABLE_CHANNELS
                | op::ADD_CLOUD_FILTER
                | op::DEL_CLOUD_FILTER
        ) {
            self.reply(v_op, status::ERR_PARAM, &[]);
            return;
        }
        match expected_len(v_op, m, self.pf.vf_ver) {
            Some(l) if l == m.len() => {}
            _ => {
                log::debug!(
                    "simulated iavf {}: invalid message from VF, opcode {v_op}, len {}",
                    self.sh.name,
                    m.len()
                );
                self.reply(v_op, status::ERR_PARAM, &[]);
                return;
            }
        }
        match v_op {
            op::VERSION => self.vc_version(m),
            op::RESET_VF => {
                // No reply: the VF polls VFGEN_RSTAT.
                if self.pf.active {
                    self.start_reset(false);
                }
            }
            op::GET_VF_RESOURCES => {
                self.vc_get_vf_resources(m);
                self.notify_link();
            }
            op::CONFIG_VSI_QUEUES => {
                let s = self.vc_config_queues(m);
                self.reply(v_op, s, &[]);
            }
            op::CONFIG_IRQ_MAP => {
                let s = self.vc_config_irq_map(m);
                self.reply(v_op, s, &[]);
            }
            op::ENABLE_QUEUES => {
                let s = self.vc_enable_queues(m);
                self.reply(v_op, s, &[]);
                self.notify_link();
            }
            op::DISABLE_QUEUES => {
                let s = self.vc_disable_queues(m);
                self.reply(v_op, s, &[]);
            }
            op::ADD_ETH_ADDR => {
                let s = self.vc_add_mac(m);
                self.reply(v_op, s, &[]);
            }
            op::DEL_ETH_ADDR => {
                let s = self.vc_del_mac(m);
                self.reply(v_op, s, &[]);
            }
            op::ADD_VLAN | op::DEL_VLAN => {
                let s = self.vc_vlan(m, v_op == op::ADD_VLAN);
                self.reply(v_op, s, &[]);
            }
            op::CONFIG_PROMISCUOUS_MODE => {
                let s = self.vc_promisc(m);
                self.reply(v_op, s, &[]);
            }
            op::GET_STATS => self.vc_get_stats(m),
            op::CONFIG_RSS_KEY => {
                let s = self.vc_rss_key(m);
                self.reply(v_op, s, &[]);
            }
            op::CONFIG_RSS_LUT => {
                let s = self.vc_rss_lut(m);
                self.reply(v_op, s, &[]);
            }
            op::GET_RSS_HENA_CAPS => {
                if self.pf.active {
                    let hena = spec::pctype::DEFAULT_HENA.to_le_bytes();
                    self.reply(v_op, status::SUCCESS, &hena);
                } else {
                    self.reply(v_op, status::ERR_PARAM, &[]);
                }
            }
            op::SET_RSS_HENA => {
                let s = if self.pf.active {
                    let hena = u64_at(m, 0);
                    let regs = &self.sh.regs;
                    regs.set(reg::vfqf_hena(0), hena as u32);
                    regs.set(reg::vfqf_hena(1), (hena >> 32) as u32);
                    regs.bump_rss_gen();
                    status::SUCCESS
                } else {
                    status::ERR_PARAM
                };
                self.reply(v_op, s, &[]);
            }
            op::ENABLE_VLAN_STRIPPING | op::DISABLE_VLAN_STRIPPING => {
                let s = if self.pf.active {
                    self.pf.vlan_strip = v_op == op::ENABLE_VLAN_STRIPPING;
                    status::SUCCESS
                } else {
                    status::ERR_PARAM
                };
                self.reply(v_op, s, &[]);
            }
            op::REQUEST_QUEUES => self.vc_request_queues(m),
            // Valid messages i40e has no handler for.
            _ => self.reply(v_op, status::ERR_NOT_IMPLEMENTED, &[]),
        }
    }

    /// `i40e_vc_send_msg_to_vf`: count failures (and disable the mailbox after
    /// too many in a row), then post.
    fn reply(&mut self, v_op: u32, s: i32, payload: &[u8]) {
        if s != status::SUCCESS {
            self.pf.num_invalid += 1;
            log::debug!(
                "simulated iavf {}: VF failed opcode {v_op}, retval: {s}",
                self.sh.name
            );
            if let Some(limit) = self.cfg.invalid_msg_limit
                && self.pf.num_invalid > limit
            {
                log::warn!(
                    "simulated iavf {}: number of invalid messages exceeded: the PF ignores \
                     the VF until its next reset",
                    self.sh.name
                );
                self.pf.disabled = true;
            }
        } else {
            self.pf.num_invalid = 0;
        }
        self.send_to_vf(v_op, s, payload);
    }

    fn vc_version(&mut self, m: &[u8]) {
        self.pf.vf_ver = (u32_at(m, 0), u32_at(m, 4));
        // "VFs running the 1.0 API expect to get 1.0 back or they will cry."
        let minor = if self.pf.vf_ver == (1, 0) {
            spec::VIRTCHNL_VERSION_MINOR_NO_VF_CAPS
        } else {
            spec::VIRTCHNL_VERSION_MINOR
        };
        let mut r = [0u8; 8];
        r[0..4].copy_from_slice(&spec::VIRTCHNL_VERSION_MAJOR.to_le_bytes());
        r[4..8].copy_from_slice(&minor.to_le_bytes());
        self.reply(op::VERSION, status::SUCCESS, &r);
    }

    /// `i40e_vc_get_vf_resources_msg`: grant what the VF asked for among what
    /// this PF can do; L2 always, VLAN (no port VLAN), RSS through the PF if asked,
    /// else through the AQ (X722) or registers.
    fn vc_get_vf_resources(&mut self, m: &[u8]) {
        if !self.pf.init {
            self.reply(op::GET_VF_RESOURCES, status::ERR_PARAM, &[]);
            return;
        }
        let asked = if self.pf.vf_ver == (1, 1) {
            u32_at(m, 0)
        } else {
            cap::L2 | cap::RSS_REG | cap::VLAN
        };
        let x722 = self.cfg.pf == PfModel::X722;
        let mut g = cap::L2 | cap::VLAN;
        if asked & cap::RSS_PF != 0 {
            g |= cap::RSS_PF;
        } else if x722 && asked & cap::RSS_AQ != 0 {
            g |= cap::RSS_AQ;
        } else {
            g |= cap::RSS_REG;
        }
        if x722 && asked & cap::RSS_PCTYPE_V2 != 0 {
            g |= cap::RSS_PCTYPE_V2;
        }
        if asked & cap::ENCAP != 0 {
            g |= cap::ENCAP;
        }
        if x722 && asked & cap::ENCAP_CSUM != 0 {
            g |= cap::ENCAP_CSUM;
        }
        if asked & cap::RX_POLLING != 0 {
            g |= cap::RX_POLLING;
        }
        if x722 && asked & cap::WB_ON_ITR != 0 {
            g |= cap::WB_ON_ITR;
        }
        if asked & cap::REQ_QUEUES != 0 {
            g |= cap::REQ_QUEUES;
        }
        if asked & cap::ADQ != 0 {
            g |= cap::ADQ;
        }
        self.pf.driver_caps = asked;
        self.pf.granted = g;
        let p = &self.pf;
        let mut r = vec![0u8; msg::VF_RESOURCE_HDR_LEN + msg::VSI_RESOURCE_LEN];
        r[0..2].copy_from_slice(&1u16.to_le_bytes()); // num_vsis
        r[2..4].copy_from_slice(&p.num_qps.to_le_bytes());
        r[4..6].copy_from_slice(&self.cfg.max_vectors.to_le_bytes());
        // max_mtu stays 0: this i40e version does not report it.
        r[8..12].copy_from_slice(&g.to_le_bytes());
        r[12..16].copy_from_slice(&(lim::RSS_KEY_SIZE as u32).to_le_bytes());
        r[16..20].copy_from_slice(&(lim::RSS_LUT_SIZE as u32).to_le_bytes());
        let v = &mut r[20..];
        v[0..2].copy_from_slice(&p.vsi_id.to_le_bytes());
        v[2..4].copy_from_slice(&p.num_qps.to_le_bytes());
        v[4..8].copy_from_slice(&msg::VSI_TYPE_SRIOV.to_le_bytes());
        // qset_handle: the VSI's first queue set.
        v[8..10].copy_from_slice(&(0x100 + p.vsi_id).to_le_bytes());
        v[10..16].copy_from_slice(&p.mac);
        self.pf.active = true;
        self.reply(op::GET_VF_RESOURCES, status::SUCCESS, &r);
    }

    /// `i40e_vc_config_queues_msg`: pairs are configured in order; the first bad
    /// one stops the message (the ones before it stay configured, as in i40e).
    fn vc_config_queues(&mut self, m: &[u8]) -> i32 {
        let vsi = u16_at(m, 0);
        let n = usize::from(u16_at(m, 2));
        if !self.pf.active || !self.pf.is_valid_vsi(vsi) || n > usize::from(lim::MAX_VF_QUEUES) {
            return status::ERR_PARAM;
        }
        for i in 0..n {
            let qp = &m[msg::VSI_QUEUE_CONFIG_HDR_LEN + i * msg::QUEUE_PAIR_INFO_LEN..];
            let (tx, rx) = (
                &qp[..msg::TXQ_INFO_LEN],
                &qp[msg::TXQ_INFO_LEN..msg::QUEUE_PAIR_INFO_LEN],
            );
            let qid = u16_at(tx, 2);
            if !self.pf.is_valid_queue(qid) {
                return status::ERR_PARAM;
            }
            if u16_at(tx, 0) != vsi || u16_at(rx, 0) != vsi || u16_at(rx, 2) != qid {
                return status::ERR_PARAM;
            }
            let tx_len = u32::from(u16_at(tx, 4));
            let tx_ring = u64_at(tx, 8);
            let rx_len = u32_at(rx, 4);
            let hdr_size = u32::from(u16_at(rx, 8));
            let split = u16_at(rx, 10);
            let dbuf = u32_at(rx, 12);
            let max_pkt = u32_at(rx, 16);
            let rx_ring = u64_at(rx, 24);
            // ice's ring length rule (i40e copies the length into a 13-bit
            // context field unchecked; a bad one would only show as a stuck queue).
            if !valid_ring_len(tx_len) || !valid_ring_len(rx_len) {
                return status::ERR_PARAM;
            }
            // i40e_config_vsi_rx_queue.
            if split != 0 && hdr_size > lim::MAX_HDR_SIZE {
                return status::ERR_PARAM;
            }
            if dbuf > lim::MAX_DATABUFFER {
                return status::ERR_PARAM;
            }
            if !(lim::MIN_PKT..lim::MAX_PKT_EXCL).contains(&max_pkt) {
                return status::ERR_PARAM;
            }
            let q = usize::from(qid);
            if self.rxq[q].enabled || self.txq[q].enabled {
                log::warn!(
                    "simulated iavf {}: queue pair {q} reconfigured while enabled",
                    self.sh.name
                );
            }
            for (what, addr) in [("Rx", rx_ring), ("Tx", tx_ring)] {
                if addr % lim::RING_BASE_UNIT != 0 {
                    log::warn!(
                        "simulated iavf {}: {what} ring {q} at {addr:#x} is not 128-byte \
                         aligned: the queue context keeps {:#x}",
                        self.sh.name,
                        addr & !(lim::RING_BASE_UNIT - 1)
                    );
                }
            }
            let enabled_rx = self.rxq[q].enabled;
            self.rxq[q] = RxQ {
                enabled: enabled_rx,
                base: rx_ring & !(lim::RING_BASE_UNIT - 1),
                len: rx_len,
                head: 0,
                dbuff: dbuf & !(lim::DBUFF_UNIT - 1),
                rxmax: max_pkt,
            };
            let enabled_tx = self.txq[q].enabled;
            self.txq[q] = TxQ {
                enabled: enabled_tx,
                base: tx_ring & !(lim::RING_BASE_UNIT - 1),
                len: tx_len,
                ..TxQ::default()
            };
        }
        status::SUCCESS
    }

    /// `i40e_vc_config_irq_map_msg`.
    fn vc_config_irq_map(&mut self, m: &[u8]) -> i32 {
        let n = usize::from(u16_at(m, 0));
        if !self.pf.active || n > usize::from(self.cfg.max_vectors) {
            return status::ERR_PARAM;
        }
        let mut maps = Vec::with_capacity(n);
        for i in 0..n {
            let v = &m[msg::IRQ_MAP_INFO_HDR_LEN + i * msg::VECTOR_MAP_LEN..];
            let (vsi, vector, rxq, txq) = (u16_at(v, 0), u16_at(v, 2), u16_at(v, 4), u16_at(v, 6));
            if vector >= self.cfg.max_vectors || !self.pf.is_valid_vsi(vsi) {
                return status::ERR_PARAM;
            }
            // i40e_validate_queue_map: every queue named must be the VF's.
            let bad = |map: u16| (0..16).any(|b| map & (1 << b) != 0 && !self.pf.is_valid_queue(b));
            if bad(rxq) || bad(txq) {
                return status::ERR_PARAM;
            }
            maps.push((vector, rxq, txq, u16_at(v, 8), u16_at(v, 10)));
            // i40e programs the link list vector by vector: the ones before a bad
            // entry stay.
            self.pf.irq_map.retain(|e| e.0 != vector);
            self.pf.irq_map.push(*maps.last().expect("just pushed"));
        }
        status::SUCCESS
    }

    /// Common checks of ENABLE/DISABLE_QUEUES (`i40e_vc_validate_vqs_bitmaps`,
    /// plus ice's check that every queue named is the VF's: i40e would act on
    /// another VSI's queues).
    fn queue_select(&self, m: &[u8]) -> Option<(u32, u32)> {
        let (vsi, rx, tx) = (u16_at(m, 0), u32_at(m, 4), u32_at(m, 8));
        if !self.pf.active || !self.pf.is_valid_vsi(vsi) {
            return None;
        }
        let limit = 1u32 << lim::MAX_VF_QUEUES;
        if (rx == 0 && tx == 0) || rx >= limit || tx >= limit {
            return None;
        }
        let all = (1u32 << self.pf.num_qps) - 1;
        if rx & !all != 0 || tx & !all != 0 {
            return None;
        }
        Some((rx, tx))
    }

    fn vc_enable_queues(&mut self, m: &[u8]) -> i32 {
        let Some((rx, tx)) = self.queue_select(m) else {
            return status::ERR_PARAM;
        };
        for q in 0..self.rxq.len() {
            if rx & (1 << q) != 0 {
                let r = &mut self.rxq[q];
                r.enabled = true;
                // The queue starts at descriptor 0 (i40e clears the head).
                r.head = 0;
            }
            if tx & (1 << q) != 0 {
                let t = &mut self.txq[q];
                t.enabled = true;
                t.head = 0;
                t.partial.clear();
                t.stopped = false;
            }
        }
        self.pf.queues_enabled = true;
        status::SUCCESS
    }

    fn vc_disable_queues(&mut self, m: &[u8]) -> i32 {
        // i40e: "Immediately mark queues as disabled".
        self.pf.queues_enabled = false;
        let Some((rx, tx)) = self.queue_select(m) else {
            return status::ERR_PARAM;
        };
        for q in 0..self.rxq.len() {
            if tx & (1 << q) != 0 {
                self.txq[q].enabled = false;
            }
            if rx & (1 << q) != 0 {
                self.rxq[q].enabled = false;
            }
        }
        status::SUCCESS
    }

    /// `i40e_vc_add_mac_addr_msg` with `i40e_check_vf_permission`.
    fn vc_add_mac(&mut self, m: &[u8]) -> i32 {
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) {
            return status::ERR_PARAM;
        }
        let list = mac_list(m);
        let mut new = 0usize;
        for a in &list {
            if *a == BROADCAST || *a == [0; 6] {
                return status::ERR_INVALID_MAC_ADDR;
            }
            let unicast = a[0] & 1 == 0;
            // The host set the VF's MAC: an untrusted VF may not use another.
            if !self.cfg.trusted && unicast && self.pf.mac != [0; 6] && *a != self.pf.mac {
                return status::EPERM;
            }
            if !self.pf.filters.contains(a) {
                new += 1;
            }
        }
        if !self.cfg.trusted && self.pf.filters.len() + new > lim::MAX_MAC_ADDR_PER_UNTRUSTED_VF {
            return status::EPERM;
        }
        for a in list {
            if !self.pf.filters.contains(&a) {
                self.pf.filters.push(a);
            }
        }
        status::SUCCESS
    }

    /// `i40e_vc_del_mac_addr_msg`.
    fn vc_del_mac(&mut self, m: &[u8]) -> i32 {
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) {
            return status::ERR_PARAM;
        }
        let list = mac_list(m);
        if list.iter().any(|a| *a == BROADCAST || *a == [0; 6]) {
            return status::ERR_INVALID_MAC_ADDR;
        }
        for a in list {
            match self.pf.filters.iter().position(|f| *f == a) {
                Some(i) => {
                    self.pf.filters.remove(i);
                }
                // i40e_del_mac_filter fails on an unknown address.
                None => return status::ERR_INVALID_MAC_ADDR,
            }
        }
        status::SUCCESS
    }

    /// `i40e_vc_add_vlan_msg` / `i40e_vc_remove_vlan_msg` (filters are kept, not
    /// applied to received frames).
    fn vc_vlan(&mut self, m: &[u8], add: bool) -> i32 {
        let n = usize::from(u16_at(m, 2));
        if add && !self.cfg.trusted && self.pf.vlans.len() >= lim::MAX_VLAN_PER_UNTRUSTED_VF {
            // i40e: refused without an error status.
            return status::SUCCESS;
        }
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) {
            return status::ERR_PARAM;
        }
        let ids: Vec<u16> = (0..n).map(|i| u16_at(m, 4 + 2 * i)).collect();
        if ids.iter().any(|&v| v > lim::MAX_VLANID) {
            return status::ERR_PARAM;
        }
        for v in ids {
            if add {
                if !self.pf.vlans.contains(&v) {
                    self.pf.vlans.push(v);
                }
                // i40e turns stripping on with the first VLAN filter.
                self.pf.vlan_strip = true;
            } else {
                self.pf.vlans.retain(|&x| x != v);
            }
        }
        status::SUCCESS
    }

    /// `i40e_vc_config_promiscuous_mode_msg`: an untrusted VF is answered SUCCESS
    /// and nothing changes ("Lie to the VF on purpose").
    fn vc_promisc(&mut self, m: &[u8]) -> i32 {
        if !self.pf.active {
            return status::ERR_PARAM;
        }
        let (vsi, flags) = (u16_at(m, 0), u16_at(m, 2));
        let req = (
            flags & msg::FLAG_VF_UNICAST_PROMISC != 0,
            flags & msg::FLAG_VF_MULTICAST_PROMISC != 0,
        );
        if !self.cfg.trusted {
            self.pf.promisc_req = req;
            log::info!(
                "simulated iavf {}: unprivileged VF is attempting to configure promiscuous \
                 mode (accepted, not applied)",
                self.sh.name
            );
            return status::SUCCESS;
        }
        if flags > lim::MAX_VF_PROMISC_FLAGS || !self.pf.is_valid_vsi(vsi) {
            return status::ERR_PARAM;
        }
        self.pf.promisc_req = req;
        self.pf.promisc = req;
        status::SUCCESS
    }

    /// `i40e_vc_get_stats_msg`: the 96-byte eth_stats, zeros with ERR_PARAM.
    fn vc_get_stats(&mut self, m: &[u8]) {
        let mut r = [0u8; msg::ETH_STATS_LEN];
        let s = if self.pf.active && self.pf.is_valid_vsi(u16_at(m, 0)) {
            let e = self.sh.counters.eth();
            const W48: u64 = (1 << 48) - 1;
            const W32: u64 = (1 << 32) - 1;
            let vals = [
                e.rx_bytes & W48,
                e.rx_unicast & W48,
                e.rx_multicast & W48,
                e.rx_broadcast & W48,
                e.rx_discards & W32,
                e.rx_unknown_protocol & W32,
                e.tx_bytes & W48,
                e.tx_unicast & W48,
                e.tx_multicast & W48,
                e.tx_broadcast & W48,
                e.tx_discards & W32,
                e.tx_errors & W32,
            ];
            for (i, v) in vals.iter().enumerate() {
                r[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            status::SUCCESS
        } else {
            status::ERR_PARAM
        };
        self.reply(op::GET_STATS, s, &r);
    }

    /// `i40e_vc_config_rss_key`: exactly 52 bytes.
    fn vc_rss_key(&mut self, m: &[u8]) -> i32 {
        let klen = usize::from(u16_at(m, 2));
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) || klen != lim::RSS_KEY_SIZE {
            return status::ERR_PARAM;
        }
        let key = &m[msg::RSS_KEY_LUT_HDR_LEN..msg::RSS_KEY_LUT_HDR_LEN + klen];
        for (i, w) in key.chunks(4).enumerate() {
            let word = u32::from_le_bytes(w.try_into().expect("52 = 13 x 4"));
            self.sh.regs.set(reg::vfqf_hkey(i), word);
        }
        self.sh.regs.bump_rss_gen();
        status::SUCCESS
    }

    /// `i40e_vc_config_rss_lut`: exactly 64 entries, each a queue of the VF.
    fn vc_rss_lut(&mut self, m: &[u8]) -> i32 {
        let n = usize::from(u16_at(m, 2));
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) || n != lim::RSS_LUT_SIZE {
            return status::ERR_PARAM;
        }
        let lut = &m[msg::RSS_KEY_LUT_HDR_LEN..msg::RSS_KEY_LUT_HDR_LEN + n];
        if lut.iter().any(|&q| u16::from(q) >= self.pf.num_qps) {
            return status::ERR_PARAM;
        }
        for (i, w) in lut.chunks(4).enumerate() {
            let word = u32::from_le_bytes(w.try_into().expect("64 = 16 x 4"));
            self.sh.regs.set(reg::vfqf_hlut(i), word);
        }
        self.sh.regs.bump_rss_gen();
        status::SUCCESS
    }

    /// `i40e_vc_request_queues_msg`: more than 16 → answered with 16; otherwise
    /// granted by resetting the VF (no answer; the new count shows in the next
    /// GET_VF_RESOURCES). Not active: no answer at all.
    fn vc_request_queues(&mut self, m: &[u8]) {
        if !self.pf.active {
            return;
        }
        let req = u16_at(m, 0);
        if req > lim::MAX_VF_QUEUES {
            log::warn!(
                "simulated iavf {}: VF tried to request more than {} queues",
                self.sh.name,
                lim::MAX_VF_QUEUES
            );
            self.reply(
                op::REQUEST_QUEUES,
                status::SUCCESS,
                &lim::MAX_VF_QUEUES.to_le_bytes(),
            );
            return;
        }
        self.pf.num_req_queues = req;
        self.start_reset(true);
    }
}

/// The addresses of an `virtchnl_ether_addr_list` (length already validated).
fn mac_list(m: &[u8]) -> Vec<[u8; 6]> {
    let n = usize::from(u16_at(m, 2));
    (0..n)
        .map(|i| {
            let o = msg::ETHER_ADDR_LIST_HDR_LEN + i * msg::ETHER_ADDR_LEN;
            m[o..o + 6].try_into().expect("6 bytes")
        })
        .collect()
}

/// ice `ice_vc_isvalid_ring_len`: 0 (queue half unused) or a multiple of 32 in
/// 64..=8160.
fn valid_ring_len(n: u32) -> bool {
    n == 0
        || ((lim::RING_LEN_MIN..=lim::RING_LEN_MAX).contains(&n)
            && n.is_multiple_of(lim::RING_LEN_MULTIPLE))
}
