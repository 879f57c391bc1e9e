//! The PF side of virtchnl, answering as Linux 6.12's PF drivers do: i40e
//! (`drivers/net/ethernet/intel/i40e/i40e_virtchnl_pf.c`,
//! `i40e_vc_process_vf_msg` and its handlers) for the X710 and X722 flavours,
//! ice (`ice/ice_virtchnl.c`, `ice_vc_process_vf_msg`) for E810, with the
//! message lengths of `virtchnl_vc_validate_vf_msg` (`include/linux/avf/virtchnl.h`).
//!
//! The rules, as modelled:
//!
//! - i40e ignores every message of a VF it disabled (`I40E_VF_STATE_DISABLED`:
//!   a malicious-driver event, or, with `SimConfig::invalid_msg_limit`, too many
//!   failed messages as older i40e versions counted them); ice answers such a
//!   VF with ERR_PARAM.
//! - Every message is first length-checked; a wrong length (or a zero element
//!   count, or an opcode virtchnl does not know) is answered with `-EINVAL`
//!   (i40e) or `VIRTCHNL_STATUS_ERR_PARAM` (ice).
//! - i40e passes its handlers' errno values to the VF (`-EINVAL`, `-EPERM`,
//!   `-EIO`); a valid opcode it has no handler for gets `-EOPNOTSUPP`. ice
//!   answers with virtchnl status codes, and first checks the opcode against
//!   the VF's allowlist (`ice_vc_is_opcode_allowed`: what its capabilities
//!   allow): `VIRTCHNL_STATUS_ERR_NOT_SUPPORTED` otherwise.
//! - Every configuration message needs the VF to be ACTIVE and to name its own
//!   VSI. i40e answers GET_VF_RESOURCES once per reset (`RESOURCES_LOADED`).
//! - RDMA (20-22) and ADq (30-33) messages are refused (the model grants
//!   neither capability).
//!
//! Where i40e checks less than the hardware needs, the model adds the check ice
//! makes and says so (queue bitmaps beyond the VF's queues).
#![deny(unsafe_code)]

use std::sync::atomic::Ordering;

use super::datapath::{RxQ, TxQ};
use super::device::{DevConfig, Device, u16_at, u32_at, u64_at};
use super::spec::{self, cap, errno, msg, op, pf as lim, reg, status};
use super::{FaultState, PfModel};

/// The PF's per-VF state (i40e `struct i40e_vf` and its VSI; ice `struct
/// ice_vf`).
pub(super) struct Pf {
    /// virtchnl version the VF announced (i40e `vf->vf_ver`; kept across resets).
    pub vf_ver: (u32, u32),
    /// `I40E_VF_STATE_INIT`: resources allocated (GET_VF_RESOURCES allowed).
    pub init: bool,
    /// `I40E_VF_STATE_ACTIVE`: the VF may configure (set again when a reset
    /// completes, and by GET_VF_RESOURCES).
    pub active: bool,
    /// `I40E_VF_STATE_RESOURCES_LOADED`: GET_VF_RESOURCES was answered since
    /// the last reset (i40e refuses a second one).
    pub resources_loaded: bool,
    /// `I40E_VF_STATE_DISABLED`: messages ignored until the next reset.
    pub disabled: bool,
    pub num_invalid: u32,
    pub driver_caps: u32,
    pub granted: u32,
    pub vsi_id: u16,
    /// Queue pairs of the VSI (`alloc_queue_pairs`).
    pub num_qps: u16,
    /// From REQUEST_QUEUES, applied at the next reset.
    pub num_req_queues: u16,
    /// The VF's MAC as the PF keeps it (`default_lan_addr`), all-zero if none.
    pub mac: [u8; 6],
    /// The host set the MAC (`ip link set <pf> vf N mac ...`, `pf_set_mac`).
    pub pf_set_mac: bool,
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
    /// The refusal of an untrusted VF's promiscuous request was logged as a
    /// warning (later ones, after resets, are logged as information).
    pub promisc_refusal_logged: bool,
}

const BROADCAST: [u8; 6] = [0xff; 6];

impl Pf {
    pub(super) fn new(cfg: &DevConfig) -> Pf {
        Pf {
            vf_ver: (0, 0),
            init: false,
            active: false,
            resources_loaded: false,
            disabled: false,
            num_invalid: 0,
            driver_caps: 0,
            granted: 0,
            vsi_id: cfg.first_vsi_id,
            num_qps: cfg.default_queue_pairs,
            num_req_queues: 0,
            mac: cfg.mac,
            pf_set_mac: cfg.mac != [0; 6],
            filters: Vec::new(),
            vlans: Vec::new(),
            vlan_strip: false,
            promisc_req: (false, false),
            promisc: (false, false),
            queues_enabled: false,
            irq_map: Vec::new(),
            allocations: 0,
            promisc_refusal_logged: false,
        }
    }

    /// i40e `i40e_cleanup_reset_vf` (`i40e_free_vf_res` + `i40e_alloc_vf_res`,
    /// then ACTIVE again), ice `ice_reset_vf`.
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
        // i40e creates the VF's VSI with PVLAN_MODE_ALL and EMOD 0 ("strip
        // both", i40e_main.c, i40e_adminq_cmd.h): tags are stripped into
        // L2TAG1 until the VF turns stripping off. ice decides at
        // GET_VF_RESOURCES (ice_vf_init_vlan_stripping).
        self.vlan_strip = !cfg.pf.is_ice();
        self.promisc_req = (false, false);
        self.promisc = (false, false);
        self.queues_enabled = false;
        self.irq_map.clear();
        self.granted = 0;
        self.disabled = false;
        self.num_invalid = 0;
        self.resources_loaded = false;
        self.init = true;
        // i40e_cleanup_reset_vf sets ACTIVE once the resources are back; ice
        // sets it when GET_VF_RESOURCES is answered.
        self.active = !cfg.pf.is_ice();
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

/// Whether ice lets a VF granted `caps` send `v_op` (`ice_vc_is_opcode_allowed`
/// with the allowlists of `ice_virtchnl_allowlist.c`; before GET_VF_RESOURCES
/// only VERSION, RESET_VF and GET_VF_RESOURCES).
fn ice_allows(v_op: u32, caps: u32, active: bool) -> bool {
    match v_op {
        op::VERSION | op::RESET_VF | op::GET_VF_RESOURCES => true,
        _ if !active => false,
        op::CONFIG_TX_QUEUE
        | op::CONFIG_RX_QUEUE
        | op::CONFIG_VSI_QUEUES
        | op::CONFIG_IRQ_MAP
        | op::ENABLE_QUEUES
        | op::DISABLE_QUEUES
        | op::GET_STATS
        | op::EVENT => true,
        op::ADD_ETH_ADDR | op::DEL_ETH_ADDR | op::CONFIG_PROMISCUOUS_MODE => caps & cap::L2 != 0,
        op::REQUEST_QUEUES => caps & cap::REQ_QUEUES != 0,
        op::ADD_VLAN | op::DEL_VLAN | op::ENABLE_VLAN_STRIPPING | op::DISABLE_VLAN_STRIPPING => {
            caps & cap::VLAN != 0
        }
        op::CONFIG_RSS_KEY
        | op::CONFIG_RSS_LUT
        | op::GET_RSS_HENA_CAPS
        | op::SET_RSS_HENA
        | op::CONFIG_RSS_HFUNC => caps & cap::RSS_PF != 0,
        op::GET_SUPPORTED_RXDIDS => caps & cap::RX_FLEX_DESC != 0,
        _ => false,
    }
}

impl Device {
    /// The status a PF sends for a message it refuses: i40e's `-EINVAL`, ice's
    /// `VIRTCHNL_STATUS_ERR_PARAM`.
    pub(super) fn invalid(&self) -> i32 {
        if self.cfg.pf.is_ice() {
            status::ERR_PARAM
        } else {
            errno::EINVAL
        }
    }

    /// One virtchnl message from the VF (`i40e_vc_process_vf_msg`,
    /// `ice_vc_process_vf_msg`).
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
        let ice = self.cfg.pf.is_ice();
        if self.pf.disabled {
            // i40e: "Check if VF is disabled" — no answer at all. ice answers
            // ERR_PARAM.
            self.sh.counters.pf_ignored.inc();
            if ice {
                self.send_to_vf(v_op, status::ERR_PARAM, &[]);
            }
            return;
        }
        self.dirty = true;
        match expected_len(v_op, m, self.pf.vf_ver) {
            Some(l) if l == m.len() => {}
            _ => {
                log::debug!(
                    "simulated iavf {}: invalid message from VF, opcode {v_op}, len {}",
                    self.sh.name,
                    m.len()
                );
                let s = self.invalid();
                self.reply(v_op, s, &[]);
                return;
            }
        }
        if v_op != 0 && faults.fail_opcode.load(Ordering::Acquire) == v_op {
            // Fault knob: the PF refuses this opcode.
            let s = self.invalid();
            self.reply(v_op, s, &[]);
            return;
        }
        if ice && !ice_allows(v_op, self.pf.granted, self.pf.active) {
            self.reply(v_op, status::ERR_NOT_SUPPORTED, &[]);
            return;
        }
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
            let s = self.invalid();
            self.reply(v_op, s, &[]);
            return;
        }
        match v_op {
            op::VERSION => self.vc_version(m),
            op::RESET_VF => {
                // No reply: the VF polls VFGEN_RSTAT. i40e resets the VF
                // whatever its state (`i40e_vc_reset_vf`); ice only once it
                // has resources (`ice_vc_reset_vf_msg`).
                if !ice || self.pf.init {
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
                if !ice {
                    // i40e tells the link state again after every enable.
                    self.notify_link();
                }
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
                    let hena = self.default_hena().to_le_bytes();
                    self.reply(v_op, status::SUCCESS, &hena);
                } else {
                    let s = self.invalid();
                    self.reply(v_op, s, &[]);
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
                    self.invalid()
                };
                self.reply(v_op, s, &[]);
            }
            op::ENABLE_VLAN_STRIPPING | op::DISABLE_VLAN_STRIPPING => {
                let s = if self.pf.active {
                    self.pf.vlan_strip = v_op == op::ENABLE_VLAN_STRIPPING;
                    status::SUCCESS
                } else {
                    self.invalid()
                };
                self.reply(v_op, s, &[]);
            }
            op::REQUEST_QUEUES => self.vc_request_queues(m),
            // Valid messages the PF has no handler for.
            _ => {
                let s = if ice {
                    status::ERR_NOT_SUPPORTED
                } else {
                    errno::EOPNOTSUPP
                };
                self.reply(v_op, s, &[]);
            }
        }
    }

    /// The packet types GET_RSS_HENA_CAPS offers and a reset programs.
    pub(super) fn default_hena(&self) -> u64 {
        match self.cfg.pf {
            PfModel::X710 => spec::pctype::DEFAULT_HENA,
            PfModel::X722 | PfModel::E810 => spec::pctype::DEFAULT_HENA_EXPANDED,
        }
    }

    /// `i40e_vc_send_msg_to_vf`: post the answer; with
    /// `SimConfig::invalid_msg_limit`, count failures in a row and disable the
    /// VF's mailbox after too many (older i40e versions).
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

    /// What the PF grants a VF asking for `asked` (`i40e_vc_get_vf_resources_msg`,
    /// `ice_vc_get_vf_res_msg`).
    fn grant(&self, asked: u32) -> u32 {
        let model = self.cfg.pf;
        if model.is_ice() {
            // ice: what was asked for, among what it implements; VLAN only if
            // asked (no port VLAN, single VLAN mode).
            const ICE_CAN: u32 = cap::L2
                | cap::VLAN
                | cap::RSS_PF
                | cap::RX_FLEX_DESC
                | cap::FDIR_PF
                | cap::RSS_PCTYPE_V2
                | cap::ENCAP
                | cap::ENCAP_CSUM
                | cap::RX_POLLING
                | cap::WB_ON_ITR
                | cap::REQ_QUEUES
                | cap::CRC
                | cap::ADV_LINK_SPEED
                | cap::ADV_RSS_PF
                | cap::USO;
            return cap::L2 | (asked & ICE_CAN);
        }
        let x722 = model == PfModel::X722;
        // i40e 6.12: L2 and ADV_LINK_SPEED always, VLAN unless a port VLAN is
        // set (none is modelled), whether asked or not.
        let mut g = cap::L2 | cap::ADV_LINK_SPEED | cap::VLAN;
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
        g
    }

    /// `i40e_vc_get_vf_resources_msg` / `ice_vc_get_vf_res_msg`.
    fn vc_get_vf_resources(&mut self, m: &[u8]) {
        // i40e answers once per reset: "!INIT || RESOURCES_LOADED" is -EINVAL.
        if !self.pf.init || self.pf.resources_loaded {
            let s = self.invalid();
            self.reply(op::GET_VF_RESOURCES, s, &[]);
            return;
        }
        let ice = self.cfg.pf.is_ice();
        let asked = if self.pf.vf_ver == (1, 1) {
            u32_at(m, 0)
        } else if ice {
            cap::L2 | cap::VLAN
        } else {
            cap::L2 | cap::RSS_REG | cap::VLAN
        };
        if !ice && self.cfg.multi_function && asked & cap::RX_POLLING != 0 {
            log::warn!(
                "simulated iavf {}: VF requested polling mode: this feature is supported only \
                 when the device is running in single function per port (SFP) mode",
                self.sh.name
            );
            let s = self.invalid();
            self.reply(op::GET_VF_RESOURCES, s, &[]);
            return;
        }
        let g = self.grant(asked);
        // ice keeps what it granted as the VF's capabilities ("match guest
        // capabilities"); i40e keeps what the VF asked for.
        self.pf.driver_caps = if ice { g } else { asked };
        self.pf.granted = g;
        let p = &self.pf;
        let mut r = vec![0u8; msg::VF_RESOURCE_HDR_LEN + msg::VSI_RESOURCE_LEN];
        r[0..2].copy_from_slice(&1u16.to_le_bytes()); // num_vsis
        r[2..4].copy_from_slice(&p.num_qps.to_le_bytes());
        r[4..6].copy_from_slice(&self.cfg.max_vectors.to_le_bytes());
        // max_mtu: the port's largest frame, CRC included.
        r[6..8].copy_from_slice(&lim::PORT_MAX_FRAME.to_le_bytes());
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
        if !ice && asked & cap::USO == 0 && !self.pf.pf_set_mac {
            // i40e tells a VF the MAC only if the host set it (or the VF asked
            // for USO): otherwise the filter goes and the VF picks its own.
            let mac = self.pf.mac;
            self.pf.filters.retain(|f| *f != mac || mac == BROADCAST);
            self.pf.mac = [0; 6];
            r[30..36].copy_from_slice(&[0; 6]);
        }
        self.pf.active = true;
        if ice {
            // ice_vf_init_vlan_stripping: on only if VLAN offloads were
            // negotiated.
            self.pf.vlan_strip = g & cap::VLAN != 0;
        } else {
            self.pf.resources_loaded = true;
        }
        self.reply(op::GET_VF_RESOURCES, status::SUCCESS, &r);
    }

    /// Whether `n` descriptors is a ring length the PF accepts for a receive
    /// (`rx`) or transmit queue: i40e `i40e_config_vsi_{rx,tx}_queue` (a
    /// multiple of 32 / 8 up to the MAC's maximum, 0 allowed), ice
    /// `ice_vc_isvalid_ring_len`.
    fn valid_ring_len(&self, n: u32, rx: bool) -> bool {
        match self.cfg.pf {
            PfModel::E810 => {
                n == 0
                    || ((lim::RING_LEN_MIN..=lim::RING_LEN_MAX).contains(&n)
                        && n.is_multiple_of(lim::RING_LEN_MULTIPLE))
            }
            m => {
                let max = if m == PfModel::X722 {
                    lim::I40E_MAX_DESC_X722
                } else {
                    lim::I40E_MAX_DESC_XL710
                };
                let multiple = if rx {
                    lim::I40E_RX_RING_MULTIPLE
                } else {
                    lim::I40E_TX_RING_MULTIPLE
                };
                n <= max && n.is_multiple_of(multiple)
            }
        }
    }

    /// `i40e_vc_config_queues_msg` / `ice_vc_cfg_qs_msg`: pairs are configured
    /// in order; the first bad one stops the message (the ones before it stay
    /// configured).
    fn vc_config_queues(&mut self, m: &[u8]) -> i32 {
        let bad = self.invalid();
        let vsi = u16_at(m, 0);
        let n = usize::from(u16_at(m, 2));
        let ice = self.cfg.pf.is_ice();
        if !self.pf.active || !self.pf.is_valid_vsi(vsi) || n > usize::from(lim::MAX_VF_QUEUES) {
            return bad;
        }
        if ice && n > usize::from(self.pf.num_qps) {
            return bad;
        }
        for i in 0..n {
            let qp = &m[msg::VSI_QUEUE_CONFIG_HDR_LEN + i * msg::QUEUE_PAIR_INFO_LEN..];
            let (tx, rx) = (
                &qp[..msg::TXQ_INFO_LEN],
                &qp[msg::TXQ_INFO_LEN..msg::QUEUE_PAIR_INFO_LEN],
            );
            let qid = u16_at(tx, 2);
            if !self.pf.is_valid_queue(qid) {
                return bad;
            }
            if u16_at(tx, 0) != vsi || u16_at(rx, 0) != vsi || u16_at(rx, 2) != qid {
                return bad;
            }
            let tx_len = u32::from(u16_at(tx, 4));
            let tx_ring = u64_at(tx, 8);
            let rx_len = u32_at(rx, 4);
            let hdr_size = u32::from(u16_at(rx, 8));
            let split = u16_at(rx, 10);
            let dbuf = u32_at(rx, 12);
            let max_pkt = u32_at(rx, 16);
            let rx_ring = u64_at(rx, 24);
            if !self.valid_ring_len(tx_len, false) || !self.valid_ring_len(rx_len, true) {
                return bad;
            }
            if ice {
                // ice checks the receive half only when it is used.
                if rx_len > 0
                    && ((dbuf != 0 && !(lim::DBUFF_UNIT..=lim::MAX_DATABUFFER).contains(&dbuf))
                        || !(lim::MIN_PKT..=u32::from(lim::PORT_MAX_FRAME)).contains(&max_pkt))
                {
                    return bad;
                }
            } else {
                // i40e_config_vsi_rx_queue, for every pair.
                if split != 0 && hdr_size > lim::MAX_HDR_SIZE {
                    return bad;
                }
                if dbuf > lim::MAX_DATABUFFER {
                    return bad;
                }
                if !(lim::MIN_PKT..lim::MAX_PKT_EXCL).contains(&max_pkt) {
                    return bad;
                }
            }
            let q = usize::from(qid);
            if self.rxq[q].enabled || (self.txq[q].enabled && !ice) {
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
            // A queue set up again starts with nothing held back.
            self.rx_wb[q].clear();
            self.tx_wb[q].clear();
            let enabled_rx = self.rxq[q].enabled;
            self.rxq[q] = RxQ {
                enabled: enabled_rx,
                base: rx_ring & !(lim::RING_BASE_UNIT - 1),
                len: rx_len,
                head: 0,
                dbuff: dbuf & !(lim::DBUFF_UNIT - 1),
                rxmax: max_pkt,
            };
            // ice: "Tx rings were enabled by the FW when the Tx queue group
            // list was configured" (`ice_vc_ena_qs_msg`): a configured transmit
            // queue runs from here on, ENABLE_QUEUES or not.
            let enabled_tx = if ice { tx_len > 0 } else { self.txq[q].enabled };
            self.txq[q] = TxQ {
                enabled: enabled_tx,
                base: tx_ring & !(lim::RING_BASE_UNIT - 1),
                len: tx_len,
                ..TxQ::default()
            };
        }
        status::SUCCESS
    }

    /// `i40e_vc_config_irq_map_msg` / `ice_vc_cfg_irq_map_msg`.
    fn vc_config_irq_map(&mut self, m: &[u8]) -> i32 {
        let bad = self.invalid();
        let ice = self.cfg.pf.is_ice();
        let n = usize::from(u16_at(m, 0));
        if !self.pf.active || n > usize::from(self.cfg.max_vectors) || (ice && n == 0) {
            return bad;
        }
        let mut maps = Vec::with_capacity(n);
        for i in 0..n {
            let v = &m[msg::IRQ_MAP_INFO_HDR_LEN + i * msg::VECTOR_MAP_LEN..];
            let (vsi, vector, rxq, txq) = (u16_at(v, 0), u16_at(v, 2), u16_at(v, 4), u16_at(v, 6));
            if vector >= self.cfg.max_vectors || !self.pf.is_valid_vsi(vsi) {
                return bad;
            }
            // ice: "The VF may not request that vector 0 be used for traffic"
            // (virtchnl.h), enforced.
            if ice && vector == 0 && (rxq != 0 || txq != 0) {
                return bad;
            }
            // i40e_validate_queue_map: every queue named must be the VF's.
            let bad_map =
                |map: u16| (0..16).any(|b| map & (1 << b) != 0 && !self.pf.is_valid_queue(b));
            if bad_map(rxq) || bad_map(txq) {
                return bad;
            }
            maps.push((vector, rxq, txq, u16_at(v, 8), u16_at(v, 10)));
            // i40e_config_irq_link_list: "if the vf is running in polling mode
            // and using interrupt zero, need to disable auto-mask on enabling
            // zero interrupt for VFs" (GLINT_CTL.DIS_AUTOMASK_VF0, PF-wide).
            if !ice && vector == 0 && (rxq | txq) != 0 && self.pf.driver_caps & cap::RX_POLLING != 0
            {
                self.irq.automask_off_vf0 = true;
            }
            // Programmed vector by vector: the ones before a bad entry stay.
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
            return self.invalid();
        };
        for q in 0..self.rxq.len() {
            if rx & (1 << q) != 0 {
                let r = &mut self.rxq[q];
                r.enabled = true;
                // The queue starts at descriptor 0 (the PF clears the head).
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
        let Some((rx, tx)) = self.queue_select(m) else {
            return self.invalid();
        };
        self.pf.queues_enabled = false;
        for q in 0..self.rxq.len() {
            // What a stopped queue held back never reaches memory.
            if tx & (1 << q) != 0 {
                self.txq[q].enabled = false;
                self.tx_wb[q].clear();
            }
            if rx & (1 << q) != 0 {
                self.rxq[q].enabled = false;
                self.rx_wb[q].clear();
            }
        }
        status::SUCCESS
    }

    /// `i40e_vc_add_mac_addr_msg` with `i40e_check_vf_permission` (ice:
    /// `ice_vc_add_mac_addr_msg`, the same rules, ERR_PARAM for all).
    fn vc_add_mac(&mut self, m: &[u8]) -> i32 {
        let bad = self.invalid();
        let ice = self.cfg.pf.is_ice();
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) {
            return bad;
        }
        let eperm = if ice { status::ERR_PARAM } else { errno::EPERM };
        let list = mac_list(m);
        let mut new = 0usize;
        for (a, _) in &list {
            if *a == BROADCAST || *a == [0; 6] {
                return bad;
            }
            let unicast = a[0] & 1 == 0;
            // The host set the VF's MAC: an untrusted VF may not use another.
            if !self.cfg.trusted && unicast && self.pf.pf_set_mac && *a != self.pf.mac {
                return eperm;
            }
            if !self.pf.filters.contains(a) {
                new += 1;
            }
        }
        if !self.cfg.trusted && self.pf.filters.len() + new > lim::MAX_MAC_ADDR_PER_UNTRUSTED_VF {
            return eperm;
        }
        for (a, ty) in list {
            if !self.pf.filters.contains(&a) {
                self.pf.filters.push(a);
            }
            // i40e_update_vf_mac_addr: a PRIMARY address becomes the VF's MAC
            // (kept across resets), a LEGACY one only if it has none.
            if a[0] & 1 == 0
                && (ty == msg::ETHER_ADDR_PRIMARY
                    || (ty == msg::ETHER_ADDR_LEGACY && self.pf.mac == [0; 6]))
            {
                self.pf.mac = a;
            }
        }
        status::SUCCESS
    }

    /// `i40e_vc_del_mac_addr_msg`: the MAC the host set stays (skipped without
    /// an error); an address without a filter fails the message.
    fn vc_del_mac(&mut self, m: &[u8]) -> i32 {
        let bad = self.invalid();
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) {
            return bad;
        }
        let list = mac_list(m);
        if list.iter().any(|(a, _)| *a == BROADCAST || *a == [0; 6]) {
            return bad;
        }
        let mut unimac_deleted = false;
        for (a, _) in list {
            if a == self.pf.mac {
                if self.pf.pf_set_mac {
                    continue;
                }
                unimac_deleted = true;
            }
            match self.pf.filters.iter().position(|f| *f == a) {
                Some(i) => {
                    self.pf.filters.remove(i);
                }
                None => return bad,
            }
        }
        if unimac_deleted {
            self.pf.mac = [0; 6];
        }
        status::SUCCESS
    }

    /// `i40e_vc_add_vlan_msg` / `i40e_vc_remove_vlan_msg` (filters are kept, not
    /// applied to received frames).
    fn vc_vlan(&mut self, m: &[u8], add: bool) -> i32 {
        let bad = self.invalid();
        let n = usize::from(u16_at(m, 2));
        if add && !self.cfg.trusted && self.pf.vlans.len() >= lim::MAX_VLAN_PER_UNTRUSTED_VF {
            // i40e: refused without an error status.
            return status::SUCCESS;
        }
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) {
            return bad;
        }
        let ids: Vec<u16> = (0..n).map(|i| u16_at(m, 4 + 2 * i)).collect();
        if ids.iter().any(|&v| v > lim::MAX_VLANID) {
            return bad;
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
        let bad = self.invalid();
        if !self.pf.active {
            return bad;
        }
        let (vsi, flags) = (u16_at(m, 0), u16_at(m, 2));
        let req = (
            flags & msg::FLAG_VF_UNICAST_PROMISC != 0,
            flags & msg::FLAG_VF_MULTICAST_PROMISC != 0,
        );
        if !self.cfg.trusted {
            self.pf.promisc_req = req;
            // What the host's kernel log shows (i40e and ice: dev_err
            // "Unprivileged VF %d is attempting to configure promiscuous
            // mode"): the VF is told it worked. The model's log is that host
            // log, and here it is known to apply: a warning, the first time.
            let asked = req.0 || req.1;
            if asked && !self.pf.promisc_refusal_logged {
                self.pf.promisc_refusal_logged = true;
                log::warn!(
                    "simulated iavf {}: untrusted VF asked for promiscuous mode; the PF answers \
                     success and does not apply it, as Linux's i40e and ice do (\"Unprivileged \
                     VF is attempting to configure promiscuous mode\"): frames to other MAC \
                     addresses will not arrive. Trust the VF: trusted=1 (net_iavf_sim), \
                     `ip link set <pf> vf <n> trust on` on a real host",
                    self.sh.name
                );
            } else {
                log::info!(
                    "simulated iavf {}: unprivileged VF is attempting to configure promiscuous \
                     mode (accepted, not applied)",
                    self.sh.name
                );
            }
            return status::SUCCESS;
        }
        if flags > lim::MAX_VF_PROMISC_FLAGS || !self.pf.is_valid_vsi(vsi) {
            return bad;
        }
        self.pf.promisc_req = req;
        self.pf.promisc = req;
        status::SUCCESS
    }

    /// `i40e_vc_get_stats_msg`: the 96-byte eth_stats, zeros with an error.
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
            self.invalid()
        };
        self.reply(op::GET_STATS, s, &r);
    }

    /// `i40e_vc_config_rss_key`: exactly 52 bytes.
    fn vc_rss_key(&mut self, m: &[u8]) -> i32 {
        let klen = usize::from(u16_at(m, 2));
        if !self.pf.active || !self.pf.is_valid_vsi(u16_at(m, 0)) || klen != lim::RSS_KEY_SIZE {
            return self.invalid();
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
            return self.invalid();
        }
        let lut = &m[msg::RSS_KEY_LUT_HDR_LEN..msg::RSS_KEY_LUT_HDR_LEN + n];
        if lut.iter().any(|&q| u16::from(q) >= self.pf.num_qps) {
            return self.invalid();
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

/// The (address, type) entries of a `virtchnl_ether_addr_list` (length already
/// validated; the type is the low 2 bits of its `type` byte).
fn mac_list(m: &[u8]) -> Vec<([u8; 6], u8)> {
    let n = usize::from(u16_at(m, 2));
    (0..n)
        .map(|i| {
            let o = msg::ETHER_ADDR_LIST_HDR_LEN + i * msg::ETHER_ADDR_LEN;
            (
                m[o..o + 6].try_into().expect("6 bytes"),
                m[o + 6] & msg::ETHER_ADDR_TYPE_MASK,
            )
        })
        .collect()
}
