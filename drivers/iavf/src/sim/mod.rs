//! A simulated iavf virtual function and the PF behind it (feature `sim`), so
//! the iavf PMD runs without hardware. The PF is Linux 6.12's i40e on an X710
//! (the default) or an X722, or its ice on an E810 ([`PfModel`]).
//!
//! The model is written from the public headers and sources (register map, admin
//! queue, virtchnl, descriptor formats: DPDK `base/iavf_register.h`,
//! `iavf_adminq_cmd.h`, `iavf_type.h`, Linux `include/linux/avf/virtchnl.h`,
//! `i40e_virtchnl_pf.c`, `ice_virtchnl.c`), in its own `spec` module: it uses no constant or
//! type of the driver, so the two cannot agree on the same mistake.
//!
//! # Public API
//!
//! ```text
//! SimPf::new(name, PfModel) -> Result<SimPf>      a PF and its polling thread, which serves all its VFs
//! SimPf::add_vf(SimConfig) -> Result<SimVf>       a VF of that PF (cfg.pf must be the PF's flavour)
//! SimPf::{name, model, vf_count, thread_id, same_pf}
//!                                                  Clone; the thread stops with the PF's last handle or VF
//! SimVf::new(SimConfig) -> nicpoll::Result<SimVf>   a VF on a PF of its own (one thread for it alone)
//! SimVf::pf() -> SimPf                             the PF whose thread serves the VF
//! SimVf::bar() -> SimVfBar                         BAR0: `impl nicpoll::bar::Bar`, Clone + Send + Sync
//! SimVf::map_dma(&Arc<DmaRegion>) -> Result<()>    IOMMU: make the region's IOVAs reachable (holds it)
//! SimVf::unmap_dma(&DmaRegion) -> Result<()>       ... and unreachable (waits for the device)
//! SimVf::map_client_memory(&Arc<GuestRegionMmap>, writable), unmap_client_memory(iova, len),
//!        unmap_all_client_memory()                 a vfio-user client's DMA_MAP/DMA_UNMAP (vm-memory)
//! SimVf::function_level_reset()                    a PCIe FLR (or VFIO device reset) of the VF
//! SimVf::shared_doorbells() -> Option<&File>        the memfd of BAR0's doorbell pages (cfg.shared_doorbells)
//! SimVf::connect(&a, &b)                           two VFs back to back
//! Switch::new(name, uplink) -> Arc<Switch>, SimVf::attach(&switch)
//!                                                  the PF's switch between its VFs and its port
//! SimVf::set_manual(bool), SimVf::is_manual()      the PF's thread leaves the VF alone / runs it again
//! SimVf::step() -> usize                           one device iteration on the caller's thread
//!                                                  (work done; manual mode: the only way it moves)
//! SimVf::wire_channel() -> (Sender<Vec<u8>>, Receiver<Vec<u8>>)
//!                                                  frames into the VF's receive side / out of its transmit side
//! SimVf::faults() -> Faults                        fault knobs (resets, silent PF, link, corruption ...)
//! SimVf::set_irq_sink(Arc<dyn IrqSink>), SimVf::interrupts(v)
//!                                                  where the VF's interrupts go; how many fired
//! SimVf::stats() -> SimStats                       the eth_stats GET_STATS reports, plus model counters
//! SimVf::status() -> SimStatus                     PF-side state: caps, filters, promiscuous, queues, RSS
//! SimVf::dma_faults() / last_dma_fault()           accesses to unmapped IOVAs (counted, logged, dropped)
//! SimVf::read_iova() / write_iova()                DMA memory through the IOMMU table (tests play the driver)
//! SimVf::dma_mapping_count(), SimVf::name()
//! SimConfig { name, mac, queue_pairs, trusted, spoofchk, link_up, link_speed_mbps, wire, pf,
//!             multi_function,
//!             max_vectors, vsi_id, invalid_msg_limit, reset_timing, inbox_capacity,
//!             shared_doorbells }
//! Wire::{None, Loopback, Peer(name), Iface(ifname)}     PfModel::{X710, X722, E810}
//! Faults: host_set_mac, reset_vf, reset_on_opcode, reset_after_tx_frames, set_reset_timing,
//!         deadbeef_during_reset, new_vsi_id_on_reset, pf_silent, drop_pf_replies,
//!         drop_replies_to, fail_opcode, aq_internal_code, set_link,
//!         corrupt_rx(RxCorruption::{BadLength, ErrorBit, NoEop}, n), drop_rx_frames,
//!         drop_tx_frames, ignore_rx_max_frame, preset_stats
//! ```
//!
//! Defaults model what a host gives a VM by default: an untrusted VF with
//! anti-spoof on, MAC 02:00:00:00:00:01 set by the host, 4 queue pairs, 5
//! vectors, link up at 40G, an X710 under i40e. A driver that transmits frames with another
//! source MAC needs `spoofchk: false` (or `trusted` plus ADD_ETH_ADDR).
//!
//! # What is modelled
//!
//! - **BAR0** ([`SimVfBar`]): `VFGEN_RSTAT`, the ATQ/ARQ registers, the Rx/Tx tail
//!   doorbells, the interrupt registers (`VFINT_ICR01` clears on read and shows
//!   the ADMINQ cause when the PF posts to the ARQ, which fires vector 0 when
//!   `VFINT_ICR0_ENA1` enables it; `VFINT_DYN_CTL*` and `VFINT_ITR*` act as
//!   module `irq` describes: enable, auto-mask, pending bit, ITR intervals,
//!   WB_ON_ITR), and the RSS registers
//!   (`VFQF_HENA/HKEY/HLUT`, which the PF's CONFIG_RSS_KEY/LUT and SET_RSS_HENA
//!   program too, as on the hardware).
//! - **Admin queue**: the device reads ATQ descriptors and their buffers from DMA
//!   memory up to `VF_ATQT1`, writes them back with DD|CMP (|ERR and an AQ
//!   `retval` when the descriptor is bad), advances `VF_ATQH1`, and hands the
//!   message to the PF. PF messages go into the buffers the driver posted on the
//!   ARQ (opcode 0x0802, `cookie_high` = virtchnl opcode, `cookie_low` = status),
//!   advancing `VF_ARQH1`; a full ARQ sets `ARQLEN.OVFL` and loses the message.
//! - **PF**: answers virtchnl the way Linux 6.12's i40e or ice does (module
//!   `pf`): length validation (`virtchnl_vc_validate_vf_msg`), i40e's errno
//!   status codes (-EINVAL, -EPERM, -EOPNOTSUPP) or ice's virtchnl ones and its
//!   opcode allowlist, VF state checks, queue and vector ids, capability
//!   negotiation (i40e grants VLAN and ADV_LINK_SPEED unasked), MAC filter
//!   permissions and quota of an untrusted VF, promiscuous mode silently not
//!   applied for an untrusted VF, link events with the physical link's state
//!   (in Mbit/s when the VF asked for ADV_LINK_SPEED), RESET_IMPENDING, VF
//!   resets that go from VFR_INPROGRESS straight to VFR_VFACTIVE.
//! - **Interrupts and write-back timing** (module `irq`): descriptors reach
//!   memory by whole 4-descriptor lines, the leftovers when the ITR of the
//!   queue's vector (CONFIG_IRQ_MAP) expires while the vector is enabled or in
//!   WB_ON_ITR mode; fired vectors go to an [`IrqSink`] and are counted.
//! - **Descriptor engine**: legacy 32-byte Rx descriptors (DD, EOP, length, PTYPE,
//!   RSS hash with FLTSTAT=3, UMBCAST, L2TAG1 when stripping), frames longer than
//!   the buffer chained over several descriptors up to the queue's max frame size
//!   (larger frames are dropped and counted), no free descriptor = a drop counted
//!   in `rx_discards`; 16-byte Tx data descriptors up to the tail, context
//!   descriptors skipped, DD (DTYPE 0xF) written back where RS is set, VLAN
//!   insertion, anti-spoof check (source MAC, and on i40e the VLAN of a tagged
//!   frame: `I40E_AQ_VSI_SEC_FLAG_ENABLE_VLAN_CHK` for a spoof-checked VF).
//!   VLAN stripping on receive is on by default on i40e (the VF's VSI strips
//!   into L2TAG1), on ice only when VLAN offloads were negotiated. RSS: Toeplitz over the IPv4/IPv6 (+TCP/UDP/SCTP
//!   ports) input, HENA per PCTYPE, 64-entry LUT.
//! - **IOMMU**: every device access to DMA memory goes through the IOVAs the
//!   driver programmed, translated with the table `map_dma` fills; an access to an
//!   unmapped IOVA is a DMA fault: counted, logged, the access dropped.
//! - **Polling thread** (module `poller`): a PF's thread serves all its VFs
//!   ([`SimPf`]), stepping each in turn (registers, admin queue, rings, wire,
//!   timers), spinning a little when none had work, then sleeping (at most 1
//!   ms; any of its VFs' doorbells wakes it, and it wakes for the earliest
//!   reset phase or ITR expiry). A step takes the VF's device mutex. A VF in
//!   manual mode (`set_manual(true)`) is left alone by the thread and moves
//!   only when the handle's owner calls `step()`: deterministic,
//!   single-threaded runs (a callgrind benchmark, where valgrind serializes
//!   threads and a polling thread would starve; tests that check what each
//!   step moved).
//!
//! Fidelity notes and decisions are at the items (`pf.rs`, `datapath.rs`,
//! `device.rs`) and in docs/DECISIONS.md.
#![deny(unsafe_code)]

mod datapath;
mod device;
mod dma;
mod irq;
mod pf;
mod poller;
mod regs;
mod rss;
mod spec;
mod switch;
mod wire;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nicpoll::memory::DmaRegion;
use nicpoll::port::MacAddr;
use nicpoll::{Error, Result};
use vm_memory::GuestRegionMmap;

pub use dma::DmaFault;
pub use irq::IrqSink;
pub use poller::SimPf;
pub use regs::{DOORBELL_PAGES, SimVfBar};
pub use switch::{Switch, SwitchStats};
pub use wire::Wire;

use device::Device;
use dma::{IoMmu, MapError, SharedWords};
use poller::PfOwner;
use regs::{Regs, Waker};
use wire::{Inbox, Outbound, WireState, open_wire_socket};

/// Which PF the simulated VF belongs to: the PF driver of Linux 6.12 and the
/// hardware it drives. Chosen per simulated PF (`pf=` of testpmd's
/// `net_iavf_sim`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PfModel {
    /// `pf=i40e`: an X710/XL710/XXV710 port under Linux's i40e (VF device id
    /// 0x154c): RSS through the PF or registers, no WB_ON_ITR.
    #[default]
    X710,
    /// `pf=x722`: an X722 port under i40e (VF 0x37cd): adds RSS through the AQ,
    /// the expanded RSS PCTYPEs, outer UDP checksum and WB_ON_ITR (i40e's
    /// `hw->caps` for `I40E_MAC_X722`).
    X722,
    /// `pf=ice`: an E810 port under Linux's ice (VF 0x1889): virtchnl status
    /// codes, an opcode allowlist, capabilities only as asked for.
    E810,
}

impl PfModel {
    /// The `pf=` name.
    pub fn name(self) -> &'static str {
        match self {
            PfModel::X710 => "i40e",
            PfModel::X722 => "x722",
            PfModel::E810 => "ice",
        }
    }

    /// Whether the PF driver is ice (else i40e).
    pub fn is_ice(self) -> bool {
        self == PfModel::E810
    }

    /// The VF's PCI device id on this PF.
    pub fn vf_device_id(self) -> u16 {
        match self {
            PfModel::X710 => 0x154C,
            PfModel::X722 => 0x37CD,
            PfModel::E810 => 0x1889,
        }
    }
}

impl fmt::Display for PfModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PfModel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<PfModel, String> {
        match s.to_ascii_lowercase().as_str() {
            "i40e" | "x710" | "xl710" | "xxv710" => Ok(PfModel::X710),
            "x722" => Ok(PfModel::X722),
            "ice" | "e810" => Ok(PfModel::E810),
            _ => Err(format!(
                "unknown PF {s:?}: use i40e (X710/XL710/XXV710), x722 (X722 under i40e) or ice \
                 (E810)"
            )),
        }
    }
}

/// How long each step of a VF reset takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetTiming {
    /// From the PF's decision to reset (after its RESET_IMPENDING event, or
    /// after the VF's RESET_VF command completed on the ATQ) to the hardware
    /// reset: the VF can read the event, or see its command complete, first.
    pub impending: Duration,
    /// The hardware reset: `VFGEN_RSTAT` reads VFR_INPROGRESS (0) and register
    /// writes are lost this long.
    pub in_progress: Duration,
    /// Then the PF re-creates the VF's resources this long, `VFGEN_RSTAT` still
    /// reading VFR_INPROGRESS (Linux 6.12's i40e and ice never write
    /// VFR_COMPLETED), then it writes VFR_VFACTIVE (2).
    pub completed: Duration,
    /// ice only: the PF disables the VF's mailbox (`VF_MBX_ARQLEN/ATQLEN` = 0,
    /// `ice_sriov_clear_mbx_register`) before it triggers the reset, and
    /// `VFGEN_RSTAT` goes on reading VFR_VFACTIVE this long after that (the
    /// hardware "hasn't yet gotten around to clearing VFGEN_RSTAT",
    /// `ice_sriov_clear_reset_state`). On i40e the hardware reset disables the
    /// admin queue and the state together.
    pub rstat_lag: Duration,
}

impl Default for ResetTiming {
    fn default() -> Self {
        ResetTiming {
            impending: Duration::from_millis(2),
            in_progress: Duration::from_millis(10),
            completed: Duration::from_millis(2),
            rstat_lag: Duration::from_millis(2),
        }
    }
}

/// Configuration of a simulated VF.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Name for logs and for `Wire::Peer` matching.
    pub name: String,
    /// The VF's MAC address as the host administrator set it (GET_VF_RESOURCES'
    /// `default_mac_addr`). All-zero: none set (the driver picks one, and an
    /// untrusted VF may then add any unicast address).
    pub mac: MacAddr,
    /// Queue pairs the PF gives the VF (1..=16; i40e's default is 4).
    pub queue_pairs: u16,
    /// `ip link set <pf> vf <n> trust on`: promiscuous mode takes effect and the
    /// MAC filter quota is lifted.
    pub trusted: bool,
    /// Anti-spoof check (i40e's default: on): frames whose source MAC is not one
    /// of the VF's unicast filters are dropped on transmit (`tx_discards`).
    pub spoofchk: bool,
    /// Physical link state at start.
    pub link_up: bool,
    /// Link speed reported in link events, in Mb/s.
    pub link_speed_mbps: u32,
    /// Where the port is connected.
    pub wire: Wire,
    /// PF hardware flavour.
    pub pf: PfModel,
    /// i40e: the port is partitioned (NPAR, several PCI functions per port,
    /// `I40E_FLAG_MFP_ENA`): a VF asking for RX_POLLING gets -EINVAL for its
    /// GET_VF_RESOURCES ("supported only when the device is running in single
    /// function per port (SFP) mode").
    pub multi_function: bool,
    /// MSI-X vectors of the VF (i40e `num_msix_vectors_vf`, 5 on 700-series VFs).
    pub max_vectors: u16,
    /// The VSI id the PF reports (and checks in every message).
    pub vsi_id: u16,
    /// Failed messages in a row after which the PF stops answering the VF until
    /// its next reset, as older i40e versions did (10); `None` (the default):
    /// never, as Linux 6.12's i40e and ice.
    pub invalid_msg_limit: Option<u32>,
    /// Timing of VF resets.
    pub reset_timing: ResetTiming,
    /// Frames a peer or loopback may queue for this VF before they are dropped.
    pub inbox_capacity: usize,
    /// Keep the first [`DOORBELL_PAGES`] bytes of BAR0 (the tail doorbells and
    /// the queue vectors' ITRs) in a memfd that another process may map
    /// ([`SimVf::shared_doorbells`]): a vfio-user client maps them into its
    /// guest. The device polls them (their writes do not wake it).
    pub shared_doorbells: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            name: "iavf-sim".to_string(),
            // 02:00:00:00:00:01, the destination of nicpoll's conformance frames.
            mac: MacAddr::local(1),
            queue_pairs: spec::pf::DEFAULT_QUEUES_PER_VF,
            trusted: false,
            spoofchk: true,
            link_up: true,
            link_speed_mbps: 40_000,
            wire: Wire::None,
            pf: PfModel::X710,
            multi_function: false,
            max_vectors: 5,
            vsi_id: 17,
            invalid_msg_limit: None,
            reset_timing: ResetTiming::default(),
            inbox_capacity: 4096,
            shared_doorbells: false,
        }
    }
}

/// `virtchnl_eth_stats`, the counters GET_STATS reports (cumulative since the
/// last VF reset; GET_STATS wraps byte/packet counters at 48 bits and discards
/// and errors at 32 bits, as the 700 series does).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthStats {
    /// Bytes received, 4 bytes of CRC included per frame.
    pub rx_bytes: u64,
    /// Unicast frames received (dropped ones included).
    pub rx_unicast: u64,
    /// Multicast frames received.
    pub rx_multicast: u64,
    /// Broadcast frames received.
    pub rx_broadcast: u64,
    /// Frames dropped on receive: no free descriptor, queue disabled, too long.
    pub rx_discards: u64,
    /// Unknown protocol (never counted by the model).
    pub rx_unknown_protocol: u64,
    /// Bytes transmitted (no CRC).
    pub tx_bytes: u64,
    /// Unicast frames transmitted.
    pub tx_unicast: u64,
    /// Multicast frames transmitted.
    pub tx_multicast: u64,
    /// Broadcast frames transmitted.
    pub tx_broadcast: u64,
    /// Frames dropped on transmit (anti-spoof).
    pub tx_discards: u64,
    /// Malformed transmit descriptors.
    pub tx_errors: u64,
}

/// Counters of the model (cumulative since the `SimVf` was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// What GET_STATS would report now (unwrapped).
    pub eth: EthStats,
    /// Frames written to Rx descriptors.
    pub rx_delivered: u64,
    /// Frames dropped because the Rx ring had no free descriptor (rx missed).
    pub rx_missed: u64,
    /// Frames dropped by the MAC filters (not for this VF).
    pub rx_filtered: u64,
    /// Frames dropped because their queue was not enabled or configured.
    pub rx_queue_off: u64,
    /// Frames longer than the queue's max frame size (dropped).
    pub rx_oversize: u64,
    /// Frames lost because the link was down or a reset was in progress.
    pub rx_link_down: u64,
    /// Frames sent to the wire.
    pub tx_frames: u64,
    /// Frames dropped by the anti-spoof check.
    pub tx_spoofed: u64,
    /// Malformed Tx descriptors (bad DTYPE, zero size).
    pub tx_bad_desc: u64,
    /// Frames the wire refused (peer inbox or channel full, socket busy).
    pub wire_lost: u64,
    /// Malicious-driver-detection events: a tail write beyond the ring, or a
    /// frame shorter than 17 bytes (the queue is stopped; i40e also disables
    /// the VF).
    pub mdd_events: u64,
    /// ATQ descriptors processed.
    pub aq_commands: u64,
    /// ATQ descriptors completed with an AQ error.
    pub aq_errors: u64,
    /// Messages posted to the ARQ.
    pub arq_posted: u64,
    /// PF messages lost: ARQ disabled or full, or dropped by a fault knob.
    pub arq_lost: u64,
    /// VF messages the PF ignored (mailbox disabled, PF silent).
    pub pf_ignored: u64,
    /// VF resets.
    pub resets: u64,
    /// Resets of an active VF that i40e triggered only after waiting 15 ms in
    /// vain for the VF's `VFINT_ICR0_ENA1.ADMINQ` ("Reset VF %d never
    /// finished" in the host's log, `i40e_sync_vfr_reset`).
    pub reset_sync_timeouts: u64,
    /// Driver register writes lost during resets.
    pub dropped_writes: u64,
    /// DMA faults.
    pub dma_faults: u64,
}

/// Promiscuous mode as the VF asked for it and as the PF applied it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Promisc {
    /// Unicast promiscuous asked for by the last CONFIG_PROMISCUOUS_MODE.
    pub requested_unicast: bool,
    /// Multicast promiscuous asked for.
    pub requested_multicast: bool,
    /// Unicast promiscuous in effect (only for a trusted VF).
    pub unicast: bool,
    /// Multicast promiscuous in effect.
    pub multicast: bool,
}

/// A queue as the PF configured it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStatus {
    /// Enabled by ENABLE_QUEUES.
    pub enabled: bool,
    /// Ring base IOVA (after the 128-byte truncation of the queue context).
    pub ring_iova: u64,
    /// Descriptors in the ring (0: not configured).
    pub ring_len: u32,
    /// Rx only: data buffer size (128-byte units applied).
    pub buffer_size: u32,
    /// Rx only: max frame size.
    pub max_frame: u32,
}

/// One CONFIG_IRQ_MAP vector entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorMap {
    /// Vector id.
    pub vector_id: u16,
    /// Rx queues bitmap.
    pub rxq_map: u16,
    /// Tx queues bitmap.
    pub txq_map: u16,
    /// Rx ITR index.
    pub rxitr_idx: u16,
    /// Tx ITR index.
    pub txitr_idx: u16,
}

/// The PF-side state of the VF, as of the last control event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStatus {
    /// `VFGEN_RSTAT` (0 in progress, 1 completed, 2 active).
    pub reset_state: u32,
    /// The VF may configure (`I40E_VF_STATE_ACTIVE`: set by i40e when a reset
    /// completes, by ice when GET_VF_RESOURCES is answered).
    pub active: bool,
    /// The PF ignores the VF's messages until its next reset
    /// (`I40E_VF_STATE_DISABLED`).
    pub mailbox_disabled: bool,
    /// virtchnl version the VF announced.
    pub version: (u32, u32),
    /// Capabilities the VF asked for.
    pub requested_caps: u32,
    /// Capabilities the PF granted.
    pub granted_caps: u32,
    /// VSI id in force.
    pub vsi_id: u16,
    /// Queue pairs of the VF.
    pub num_queue_pairs: u16,
    /// MAC filters (the default MAC and broadcast included).
    pub mac_filters: Vec<MacAddr>,
    /// VLAN filters.
    pub vlan_filters: Vec<u16>,
    /// VLAN stripping on receive.
    pub vlan_strip: bool,
    /// Promiscuous mode.
    pub promisc: Promisc,
    /// ENABLE_QUEUES was answered and no DISABLE_QUEUES since.
    pub queues_enabled: bool,
    /// Rx queues, index = queue id.
    pub rx_queues: Vec<QueueStatus>,
    /// Tx queues.
    pub tx_queues: Vec<QueueStatus>,
    /// CONFIG_IRQ_MAP entries in force.
    pub irq_map: Vec<VectorMap>,
    /// RSS key (52 bytes).
    pub rss_key: Vec<u8>,
    /// RSS LUT (64 entries).
    pub rss_lut: Vec<u8>,
    /// RSS hash-enable mask.
    pub rss_hena: u64,
    /// Link state the PF last reported to the VF.
    pub link_reported_up: bool,
}

/// Kinds of corrupted Rx write-back ([`Faults::corrupt_rx`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxCorruption {
    /// The length field claims 0x3FFF bytes, more than any buffer.
    BadLength,
    /// The RXE error bit is set.
    ErrorBit,
    /// The last descriptor of a frame comes without EOP.
    NoEop,
}

/// Fault knobs of a simulated VF, also usable while it runs. Cheap to clone.
#[derive(Clone)]
pub struct Faults {
    sh: Arc<Shared>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults").field("vf", &self.sh.name).finish()
    }
}

impl Faults {
    /// Reset the VF now, as the PF does on the host's request (`ip link set ...
    /// vf n mac`, a PF reset): RESET_IMPENDING event, then after
    /// `ResetTiming::impending` the hardware reset (`VFGEN_RSTAT` → in progress,
    /// ARQ/ATQ disabled, queues stopped), then completed, then active.
    pub fn reset_vf(&self) {
        self.sh.faults.reset_now.store(true, Ordering::Release);
        self.sh.regs.waker.wake();
    }

    /// The host sets the VF's MAC (`ip link set <pf> vf N mac MAC`, i40e
    /// `i40e_ndo_set_vf_mac`): every filter goes, the MAC becomes the VF's
    /// (all-zero: the host takes its setting back), and the VF is reset with a
    /// RESET_IMPENDING event ("Bring down and up the VF interface to make this
    /// change effective"). An untrusted VF may then use no other unicast MAC.
    pub fn host_set_mac(&self, mac: MacAddr) {
        *self
            .sh
            .faults
            .host_mac
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(mac.0);
        self.sh.regs.waker.wake();
    }

    /// When the PF next receives virtchnl opcode `op`, it resets the VF (as
    /// [`reset_vf`](Self::reset_vf)) instead of answering: a reset in the middle
    /// of the driver's configuration. 0 disarms.
    pub fn reset_on_opcode(&self, op: u32) {
        self.sh.faults.reset_on_opcode.store(op, Ordering::Release);
    }

    /// Reset the VF after it has transmitted `n` more frames (0 disarms).
    pub fn reset_after_tx_frames(&self, n: u64) {
        self.sh.faults.reset_after_tx.store(n, Ordering::Release);
        self.sh.faults.arm();
    }

    /// Change the timing of resets from now on.
    pub fn set_reset_timing(&self, t: ResetTiming) {
        *self
            .sh
            .faults
            .timing
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// While a reset is in progress, every BAR read returns 0xDEADBEEF (what the
    /// hardware returns; `VFGEN_RSTAT & 3` then reads 3).
    pub fn deadbeef_during_reset(&self, on: bool) {
        self.sh.faults.deadbeef.store(on, Ordering::Release);
    }

    /// Give the VF a new VSI id at every reset (an i40e PF re-creates the VSI and
    /// may get another id): a driver that keeps the old one fails.
    pub fn new_vsi_id_on_reset(&self, on: bool) {
        self.sh.faults.new_vsi_id.store(on, Ordering::Release);
    }

    /// A hung PF: the firmware still completes ATQ commands, but the PF neither
    /// acts on messages nor answers them (nor sends events) until turned off.
    pub fn pf_silent(&self, on: bool) {
        self.sh.faults.pf_silent.store(on, Ordering::Release);
    }

    /// The PF acts on the next `n` messages but their replies are lost.
    pub fn drop_pf_replies(&self, n: u32) {
        self.sh.faults.drop_replies.store(n, Ordering::Release);
    }

    /// The firmware completes every ATQ command with `code` in the high byte of
    /// its `retval` (0 in the low byte: success). Linux and DPDK look at the
    /// low byte only ("strip off FW internal code", `iavf_asq_send_command`).
    pub fn aq_internal_code(&self, code: u8) {
        self.sh
            .faults
            .aq_internal_code
            .store(code, Ordering::Release);
    }

    /// The PF refuses virtchnl opcode `op` (with the status it uses for a bad
    /// request) until this is called again with another opcode (0: none): a
    /// PF that does not do what the driver asks (a host policy, an older PF).
    pub fn fail_opcode(&self, op: u32) {
        self.sh.faults.fail_opcode.store(op, Ordering::Release);
    }

    /// The PF acts on the next `n` messages of virtchnl opcode `op` but their
    /// replies are lost (a driver that times out then finds the PF changed).
    pub fn drop_replies_to(&self, op: u32, n: u32) {
        let f = &self.sh.faults;
        *f.drop_replies_to.lock().unwrap_or_else(|e| e.into_inner()) = (op, n);
    }

    /// Physical link up or down: the PF sends a LINK_CHANGE event; while down,
    /// nothing is received from the wire and transmitted frames are lost.
    pub fn set_link(&self, up: bool) {
        self.sh
            .faults
            .link_change
            .store(if up { 2 } else { 1 }, Ordering::Release);
        self.sh.regs.waker.wake();
    }

    /// Corrupt the write-back of the next `n` received frames.
    pub fn corrupt_rx(&self, kind: RxCorruption, n: u32) {
        let f = &self.sh.faults;
        match kind {
            RxCorruption::BadLength => f.rx_bad_length.store(n, Ordering::Release),
            RxCorruption::ErrorBit => f.rx_error.store(n, Ordering::Release),
            RxCorruption::NoEop => f.rx_no_eop.store(n, Ordering::Release),
        }
        f.arm();
    }

    /// Drop the next `n` frames from the wire before they reach a descriptor
    /// (counted in `rx_discards`, as a drop in the device).
    pub fn drop_rx_frames(&self, n: u32) {
        self.sh.faults.rx_drop.store(n, Ordering::Release);
        self.sh.faults.arm();
    }

    /// Lose the next `n` transmitted frames on the wire: their descriptors
    /// complete normally, the frames never arrive, no counter of the VF moves.
    pub fn drop_tx_frames(&self, n: u32) {
        self.sh.faults.tx_drop.store(n, Ordering::Release);
        self.sh.faults.arm();
    }

    /// Deliver the next `n` frames longer than the queue's max frame size anyway,
    /// chained over as many descriptors as they need (non-EOP descriptors reach a
    /// driver that set max frame = one buffer and does not expect them).
    pub fn ignore_rx_max_frame(&self, n: u32) {
        self.sh.faults.ignore_rxmax.store(n, Ordering::Release);
        self.sh.faults.arm();
    }

    /// Set the raw counters behind GET_STATS (e.g. just below 2^48 and 2^32 to
    /// exercise a driver's wrap handling). They are zeroed again by a VF reset.
    pub fn preset_stats(&self, s: EthStats) {
        *self
            .sh
            .faults
            .preset
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(s);
        self.sh.faults.preset_pending.store(true, Ordering::Release);
        self.sh.regs.waker.wake();
        // Taken by the device thread before this returns (in manual mode: at
        // the next step).
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.sh.faults.preset_pending.load(Ordering::Acquire)
            && Instant::now() < deadline
            && !self.sh.stop.load(Ordering::Acquire)
            && !self.sh.manual.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

/// Fault state shared with the device thread.
#[derive(Default)]
pub(crate) struct FaultState {
    reset_now: AtomicBool,
    /// A function-level reset is requested.
    flr: AtomicBool,
    reset_on_opcode: AtomicU32,
    reset_after_tx: AtomicU64,
    timing: Mutex<ResetTiming>,
    deadbeef: AtomicBool,
    new_vsi_id: AtomicBool,
    pf_silent: AtomicBool,
    drop_replies: AtomicU32,
    /// A MAC the host set, for the device to apply.
    host_mac: Mutex<Option<[u8; 6]>>,
    /// The firmware's internal code in the high byte of ATQ `retval`s.
    aq_internal_code: AtomicU8,
    /// The opcode the PF refuses (0: none).
    fail_opcode: AtomicU32,
    /// (opcode, replies of it still to lose).
    drop_replies_to: Mutex<(u32, u32)>,
    /// 0: no change pending, 1: down, 2: up.
    link_change: AtomicU8,
    rx_bad_length: AtomicU32,
    rx_error: AtomicU32,
    rx_no_eop: AtomicU32,
    rx_drop: AtomicU32,
    tx_drop: AtomicU32,
    ignore_rxmax: AtomicU32,
    /// Some per-frame fault may be armed (checked before the others).
    armed: AtomicBool,
    preset: Mutex<Option<EthStats>>,
    preset_pending: AtomicBool,
}

impl FaultState {
    fn arm(&self) {
        self.armed.store(true, Ordering::Release);
    }

    /// Take one unit of a per-frame counter if it is armed.
    pub(crate) fn take(c: &AtomicU32) -> bool {
        c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
            .is_ok()
    }
}

/// A counter written by the device thread only (no read-modify-write needed).
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    #[inline]
    pub(crate) fn inc(&self) {
        self.add(1)
    }
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    #[inline]
    pub(crate) fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed)
    }
}

/// The counters (eth_stats part reset by a VF reset, the rest cumulative).
#[derive(Default)]
pub(crate) struct Counters {
    pub rx_bytes: Counter,
    pub rx_unicast: Counter,
    pub rx_multicast: Counter,
    pub rx_broadcast: Counter,
    pub rx_discards: Counter,
    pub rx_unknown_protocol: Counter,
    pub tx_bytes: Counter,
    pub tx_unicast: Counter,
    pub tx_multicast: Counter,
    pub tx_broadcast: Counter,
    pub tx_discards: Counter,
    pub tx_errors: Counter,
    pub rx_delivered: Counter,
    pub rx_missed: Counter,
    pub rx_filtered: Counter,
    pub rx_queue_off: Counter,
    pub rx_oversize: Counter,
    pub rx_link_down: Counter,
    pub tx_frames: Counter,
    pub tx_spoofed: Counter,
    pub tx_bad_desc: Counter,
    pub wire_lost: Counter,
    pub mdd_events: Counter,
    pub aq_commands: Counter,
    pub aq_errors: Counter,
    pub arq_posted: Counter,
    pub arq_lost: Counter,
    pub pf_ignored: Counter,
    pub resets: Counter,
    pub reset_sync_timeouts: Counter,
}

impl Counters {
    pub(crate) fn eth(&self) -> EthStats {
        EthStats {
            rx_bytes: self.rx_bytes.get(),
            rx_unicast: self.rx_unicast.get(),
            rx_multicast: self.rx_multicast.get(),
            rx_broadcast: self.rx_broadcast.get(),
            rx_discards: self.rx_discards.get(),
            rx_unknown_protocol: self.rx_unknown_protocol.get(),
            tx_bytes: self.tx_bytes.get(),
            tx_unicast: self.tx_unicast.get(),
            tx_multicast: self.tx_multicast.get(),
            tx_broadcast: self.tx_broadcast.get(),
            tx_discards: self.tx_discards.get(),
            tx_errors: self.tx_errors.get(),
        }
    }

    pub(crate) fn set_eth(&self, s: &EthStats) {
        self.rx_bytes.set(s.rx_bytes);
        self.rx_unicast.set(s.rx_unicast);
        self.rx_multicast.set(s.rx_multicast);
        self.rx_broadcast.set(s.rx_broadcast);
        self.rx_discards.set(s.rx_discards);
        self.rx_unknown_protocol.set(s.rx_unknown_protocol);
        self.tx_bytes.set(s.tx_bytes);
        self.tx_unicast.set(s.tx_unicast);
        self.tx_multicast.set(s.tx_multicast);
        self.tx_broadcast.set(s.tx_broadcast);
        self.tx_discards.set(s.tx_discards);
        self.tx_errors.set(s.tx_errors);
    }
}

/// State shared by the `SimVf` handle, its BAR and fault handles, and the device
/// thread.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) regs: Arc<Regs>,
    pub(crate) iommu: IoMmu,
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) counters: Counters,
    pub(crate) faults: FaultState,
    /// The VF is gone: its PF's thread steps it no more.
    pub(crate) stop: AtomicBool,
    /// Manual mode: the PF's thread leaves the VF alone; `SimVf::step` runs
    /// the device.
    pub(crate) manual: AtomicBool,
    /// A new wire for the device thread to take.
    pub(crate) pending_wire: Mutex<Option<WireState>>,
    pub(crate) wire_pending: AtomicBool,
    pub(crate) status: Mutex<SimStatus>,
}

/// A running simulated iavf VF and the PF side of it, served by its PF's
/// polling thread ([`SimPf`]). Dropping it takes it off that thread (and
/// stops the thread if nothing else of the PF is left).
pub struct SimVf {
    sh: Arc<Shared>,
    /// The device, stepped by the PF's thread one iteration at a time, or by
    /// [`SimVf::step`].
    device: Arc<Mutex<Device>>,
    /// The PF whose thread serves the VF.
    pf: Arc<PfOwner>,
}

impl fmt::Debug for SimVf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimVf")
            .field("name", &self.sh.name)
            .finish()
    }
}

/// `Wire::Peer` rendezvous: VFs waiting for their peer, by name.
static PEERS: Mutex<Vec<(String, Weak<Shared>)>> = Mutex::new(Vec::new());

fn config_error(name: &str, reason: String) -> Error {
    Error::DevArgs {
        device: format!("iavf-sim:{name}"),
        reason,
    }
}

impl SimVf {
    /// Create the VF as the PF leaves it after enabling SR-IOV (reset done,
    /// `VFGEN_RSTAT` = VFR_VFACTIVE, resources allocated), on a PF of its own
    /// (flavour `cfg.pf`) whose thread serves only it: `SimPf::new(&cfg.name,
    /// cfg.pf)?.add_vf(cfg)`. VFs that should share a polling thread are added
    /// to one [`SimPf`] instead. Fails on a bad configuration, when
    /// `Wire::Iface` cannot be opened, or when the thread cannot be spawned.
    pub fn new(cfg: SimConfig) -> Result<SimVf> {
        SimPf::new(&cfg.name, cfg.pf)?.add_vf(cfg)
    }

    /// The shared state and the device of a new VF whose doorbells wake
    /// `waker` (its PF's thread), its status published.
    fn build(cfg: &SimConfig, waker: Arc<Waker>) -> Result<(Arc<Shared>, Arc<Mutex<Device>>)> {
        if cfg.queue_pairs == 0 || cfg.queue_pairs > spec::pf::MAX_VF_QUEUES {
            return Err(config_error(
                &cfg.name,
                format!(
                    "queue_pairs {} out of range: a VF has 1 to {} queue pairs",
                    cfg.queue_pairs,
                    spec::pf::MAX_VF_QUEUES
                ),
            ));
        }
        if cfg.max_vectors == 0 {
            return Err(config_error(
                &cfg.name,
                "max_vectors 0: a VF has at least its misc/admin-queue vector".into(),
            ));
        }
        if cfg.mac.is_multicast() {
            return Err(config_error(
                &cfg.name,
                format!(
                    "MAC {} is multicast: a VF's MAC must be unicast (or all zero)",
                    cfg.mac
                ),
            ));
        }
        let shared = if cfg.shared_doorbells {
            Some(
                SharedWords::new(&format!("{} doorbells", cfg.name), DOORBELL_PAGES).map_err(
                    |source| Error::Os {
                        op: format!(
                            "simulated iavf {}: a memfd for the doorbell pages",
                            cfg.name
                        ),
                        source,
                        hint: None,
                    },
                )?,
            )
        } else {
            None
        };
        let regs = Arc::new(Regs::new(waker, shared));
        let inbox = Arc::new(Inbox::new(cfg.inbox_capacity.max(1), regs.clone()));
        let sh = Arc::new(Shared {
            name: cfg.name.clone(),
            regs,
            iommu: IoMmu::new(),
            inbox,
            counters: Counters::default(),
            faults: FaultState {
                timing: Mutex::new(cfg.reset_timing),
                ..FaultState::default()
            },
            stop: AtomicBool::new(false),
            manual: AtomicBool::new(false),
            pending_wire: Mutex::new(None),
            wire_pending: AtomicBool::new(false),
            status: Mutex::new(SimStatus::default()),
        });
        let wire = match &cfg.wire {
            Wire::None | Wire::Peer(_) => WireState::none(),
            Wire::Loopback => WireState {
                out: Outbound::Inbox(sh.inbox.clone()),
                chan_in: None,
                sock_in: None,
            },
            Wire::Iface(ifname) => {
                let s = Arc::new(open_wire_socket(ifname).map_err(|source| {
                    let hint = matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
                        .then_some(
                            "AF_PACKET needs CAP_NET_RAW: run as root or grant the capability",
                        )
                        .or_else(|| {
                            (source.raw_os_error() == Some(libc::ENODEV)).then_some(
                                "no such interface: check the name with `ip link` (a veth pair \
                             must exist before the VF starts)",
                            )
                        });
                    Error::Os {
                        op: format!(
                            "simulated iavf {}: open an AF_PACKET socket on {ifname}",
                            cfg.name
                        ),
                        source,
                        hint,
                    }
                })?);
                WireState {
                    out: Outbound::Socket(s.clone()),
                    chan_in: None,
                    sock_in: Some(s),
                }
            }
        };
        let mut dev = Device::new(sh.clone(), cfg, wire);
        // What `status()` shows from the start (the device reads VFACTIVE).
        dev.publish_status();
        sh.iommu.set_live(true);
        Ok((sh, Arc::new(Mutex::new(dev))))
    }

    /// The handle of a VF its PF serves now.
    fn assemble(
        sh: Arc<Shared>,
        device: Arc<Mutex<Device>>,
        pf: Arc<PfOwner>,
        cfg: &SimConfig,
    ) -> SimVf {
        let vf = SimVf { sh, device, pf };
        if let Wire::Peer(name) = &cfg.wire {
            vf.join_peer(name);
        }
        vf
    }

    /// The PF whose polling thread serves this VF.
    pub fn pf(&self) -> SimPf {
        SimPf {
            owner: self.pf.clone(),
        }
    }

    fn join_peer(&self, name: &str) {
        let mut peers = PEERS.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|(_, w)| w.strong_count() > 0);
        if let Some(i) = peers.iter().position(|(n, _)| n == name) {
            let (_, other) = peers.remove(i);
            if let Some(other) = other.upgrade() {
                drop(peers);
                Self::link(&self.sh, &other);
                return;
            }
        }
        peers.push((name.to_string(), Arc::downgrade(&self.sh)));
    }

    fn link(a: &Arc<Shared>, b: &Arc<Shared>) {
        set_wire(
            a,
            WireState {
                out: Outbound::Inbox(b.inbox.clone()),
                chan_in: None,
                sock_in: None,
            },
        );
        set_wire(
            b,
            WireState {
                out: Outbound::Inbox(a.inbox.clone()),
                chan_in: None,
                sock_in: None,
            },
        );
    }

    /// The memfd holding the first [`DOORBELL_PAGES`] bytes of BAR0, when the
    /// VF was made with `shared_doorbells`: map it `MAP_SHARED` (a vfio-user
    /// client maps it into its guest's BAR0).
    pub fn shared_doorbells(&self) -> Option<&std::fs::File> {
        self.sh.regs.shared().map(SharedWords::file)
    }

    /// The VF's BAR0, for the driver (`IavfPort<SimVfBar>`).
    pub fn bar(&self) -> SimVfBar {
        SimVfBar {
            regs: self.sh.regs.clone(),
        }
    }

    /// Make `region` reachable by the device at the IOVAs it reports
    /// (`region.iova(offset)`), as `VFIO_IOMMU_MAP_DMA` does. Mapping a region
    /// twice is harmless.
    ///
    /// The device holds the region (the `Arc`) while it is mapped: dropping your
    /// handle frees nothing the device can still reach; the memory goes after
    /// [`unmap_dma`](Self::unmap_dma), or with the `SimVf`.
    pub fn map_dma(&self, region: &Arc<DmaRegion>) -> Result<()> {
        let r = self.sh.iommu.map(region).map_err(|e| Error::VfioSetup {
            object: format!(
                "simulated iavf {} DMA map of {}",
                self.sh.name,
                region.what()
            ),
            reason: match e {
                MapError::Empty => "the region is empty".into(),
                MapError::Overlap(other) => format!("its IOVAs overlap those of {other}"),
            },
        });
        // In effect for the device when this returns, as with an IOMMU.
        self.sync_dma();
        r
    }

    /// Make `region` unreachable again. Returns once the device thread no longer
    /// uses the old translation (later accesses are DMA faults), so the region
    /// may then be dropped. Unmapping a region that is not mapped is an error.
    pub fn unmap_dma(&self, region: &DmaRegion) -> Result<()> {
        let removed = self.sh.iommu.unmap(region);
        self.sync_dma();
        if removed == 0 {
            return Err(Error::VfioSetup {
                object: format!(
                    "simulated iavf {} DMA unmap of {}",
                    self.sh.name,
                    region.what()
                ),
                reason: "the region is not mapped".into(),
            });
        }
        Ok(())
    }

    /// Make a vfio-user client's memory reachable by the device at the IOVAs
    /// its DMA_MAP gave (`region.start_addr()` onwards): `region` is
    /// vm-memory's mapping of the file the client passed. Read-only unless
    /// `writable` (a device write there is then a DMA fault). The device
    /// holds the region while it is mapped; in effect when this returns.
    /// IOVAs already mapped are refused (vfio-user answers EEXIST).
    pub fn map_client_memory(&self, region: &Arc<GuestRegionMmap>, writable: bool) -> Result<()> {
        let r = self
            .sh
            .iommu
            .map_client(region, writable)
            .map_err(|e| Error::VfioSetup {
                object: format!(
                    "simulated iavf {} DMA map of client memory at IOVA {:#x} (+{:#x})",
                    self.sh.name,
                    vm_memory::GuestMemoryRegion::start_addr(&**region).0,
                    vm_memory::GuestMemoryRegion::len(&**region)
                ),
                reason: match e {
                    MapError::Empty => "the range is empty".into(),
                    MapError::Overlap(other) => format!("its IOVAs overlap those of {other}"),
                },
            });
        self.sync_dma();
        r
    }

    /// Make the client memory mapped at exactly `[iova, iova + len)` unreachable
    /// (vfio-user's DMA_UNMAP names a range one DMA_MAP mapped). Returns once
    /// the device no longer uses it, so its mapping may then go; an error if
    /// no such mapping exists.
    pub fn unmap_client_memory(&self, iova: u64, len: u64) -> Result<()> {
        let removed = self.sh.iommu.unmap_client(iova, len);
        self.sync_dma();
        if removed == 0 {
            return Err(Error::VfioSetup {
                object: format!(
                    "simulated iavf {} DMA unmap of client memory at IOVA {iova:#x} (+{len:#x})",
                    self.sh.name
                ),
                reason: "no DMA map of exactly that range".into(),
            });
        }
        Ok(())
    }

    /// Make every client mapping unreachable (the client is gone, or asked
    /// for UNMAP_ALL); returns how many there were, once the device no longer
    /// uses them.
    pub fn unmap_all_client_memory(&self) -> usize {
        let removed = self.sh.iommu.unmap_client(0, u64::MAX);
        self.sync_dma();
        removed
    }

    /// A function-level reset of the VF (PCIe FLR through its config space, or
    /// a VFIO device reset): the hardware resets the VF at once, without a
    /// RESET_IMPENDING event, and the PF, seeing the VFLR, rebuilds it as
    /// after any reset (i40e `i40e_vc_process_vflr_event` → `i40e_reset_vf(vf,
    /// true)`, which skips the VFRTRIG write and the wait for the VF). Returns
    /// at once; `VFGEN_RSTAT` reads in progress from the device's next step,
    /// then VFACTIVE after `ResetTiming::in_progress + completed`. A reset
    /// already under way starts over.
    pub fn function_level_reset(&self) {
        self.sh.faults.flr.store(true, Ordering::Release);
        self.sh.regs.waker.wake();
        self.sh.regs.waker.unpark();
    }

    /// Make the device use the current IOMMU table before this returns: taking
    /// the device's lock waits for the iteration in progress (the thread's or a
    /// [`step`](Self::step)), and the device switches tables here, so this works
    /// in manual mode too, where the thread does not run.
    fn sync_dma(&self) {
        {
            let mut d = device::lock(&self.device);
            d.refresh_dma();
        }
        // Returns at once now (the table the device uses is the current one).
        self.sh.iommu.quiesce();
    }

    /// Manual mode on (`true`) or off. On: the PF's polling thread leaves the
    /// VF alone (it parks when none of its VFs is left to run), and the
    /// device moves only when [`step`](Self::step) is called, on the caller's
    /// thread (a benchmark under valgrind, which runs one thread at a time, or a
    /// test that wants every frame accounted for at each step); the PF's other
    /// VFs run on. Returns once the thread is out of the device (no iteration
    /// of it runs after this returns). Off: the thread runs the device again.
    ///
    /// In manual mode, whatever waits for the device thread waits for a step
    /// instead: a [`connect`](Self::connect) or [`wire_channel`](Self::wire_channel)
    /// takes effect at the next step (before it moves frames),
    /// [`Faults::preset_stats`] too, and a reset's phases advance only at steps
    /// made after their time has come — but for one register the hardware's
    /// clock changes: an ice VF's stale VFACTIVE (`ResetTiming::rstat_lag`)
    /// reads "in progress" at its time, step or not. Bring a driver's port up (its admin
    /// queue) before turning manual mode on, or step while it waits.
    pub fn set_manual(&self, on: bool) {
        self.sh.manual.store(on, Ordering::SeqCst);
        if on {
            // The thread re-checks the flag under the lock: once we have held
            // the lock, it starts no iteration until manual mode ends.
            drop(device::lock(&self.device));
        } else {
            self.sh.regs.waker.unpark();
        }
    }

    /// Whether the VF is in manual mode ([`set_manual`](Self::set_manual)).
    pub fn is_manual(&self) -> bool {
        self.sh.manual.load(Ordering::Acquire)
    }

    /// Run one iteration of the device on the caller's thread: pending control
    /// requests (a new wire, fault knobs), reset phases, the admin queue, every
    /// Tx queue up to its tail (frames sent to the wire, RS write-backs), then
    /// the wire and inbox into the Rx queues (up to 256 frames), and the status.
    /// Returns the work done (descriptors, frames and events; 0: nothing to do).
    ///
    /// Meant for manual mode ([`set_manual`](Self::set_manual)); outside it, a
    /// step is safe too (it excludes the thread's iteration) but races it for
    /// the work.
    pub fn step(&self) -> usize {
        device::lock(&self.device).step()
    }

    /// Connect two simulated VFs back to back: what one transmits, the other
    /// receives (replacing whatever wire each had).
    pub fn connect(a: &SimVf, b: &SimVf) {
        Self::link(&a.sh, &b.sh);
    }

    /// Put the VF on its PF's switch (module `switch`), replacing whatever
    /// wire it had: what it transmits is switched to the other VFs attached
    /// to `switch` by destination MAC, or out of the switch's port; what
    /// arrives for it comes in. Returns the VF's port number on the switch.
    pub fn attach(&self, switch: &Arc<Switch>) -> usize {
        let port = switch.add_port(self.sh.inbox.clone());
        set_wire(
            &self.sh,
            WireState {
                out: Outbound::Switch {
                    sw: switch.clone(),
                    port,
                    view: switch.view(),
                },
                chan_in: None,
                sock_in: None,
            },
        );
        // The device publishes its filters at its next status update.
        device::lock(&self.device).dirty = true;
        port
    }

    /// Replace the VF's wire with a pair of channels for a test: frames sent on
    /// the `Sender` arrive at the VF's receive side (through its MAC filters);
    /// frames the VF transmits come out of the `Receiver` (up to 65536 waiting,
    /// then they are lost and counted in `wire_lost`).
    pub fn wire_channel(&self) -> (Sender<Vec<u8>>, Receiver<Vec<u8>>) {
        let (in_tx, in_rx) = std::sync::mpsc::channel();
        let (out_tx, out_rx) = std::sync::mpsc::sync_channel(65536);
        set_wire(
            &self.sh,
            WireState {
                out: Outbound::Channel(out_tx),
                chan_in: Some(in_rx),
                sock_in: None,
            },
        );
        (in_tx, out_rx)
    }

    /// Send the VF's interrupts to `sink` (as well as counting them).
    pub fn set_irq_sink(&self, sink: Arc<dyn IrqSink>) {
        device::lock(&self.device).irq.sink = Some(sink);
    }

    /// Interrupts vector `vector` fired so far (0: the misc/admin-queue
    /// vector).
    pub fn interrupts(&self, vector: u16) -> u64 {
        device::lock(&self.device)
            .irq
            .fired
            .get(usize::from(vector))
            .copied()
            .unwrap_or(0)
    }

    /// The fault knobs.
    pub fn faults(&self) -> Faults {
        Faults {
            sh: self.sh.clone(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> SimStats {
        let c = &self.sh.counters;
        SimStats {
            eth: c.eth(),
            rx_delivered: c.rx_delivered.get(),
            rx_missed: c.rx_missed.get(),
            rx_filtered: c.rx_filtered.get(),
            rx_queue_off: c.rx_queue_off.get(),
            rx_oversize: c.rx_oversize.get(),
            rx_link_down: c.rx_link_down.get(),
            tx_frames: c.tx_frames.get(),
            tx_spoofed: c.tx_spoofed.get(),
            tx_bad_desc: c.tx_bad_desc.get(),
            wire_lost: c.wire_lost.get() + self.sh.inbox.dropped.load(Ordering::Relaxed),
            mdd_events: c.mdd_events.get(),
            aq_commands: c.aq_commands.get(),
            aq_errors: c.aq_errors.get(),
            arq_posted: c.arq_posted.get(),
            arq_lost: c.arq_lost.get(),
            pf_ignored: c.pf_ignored.get(),
            resets: c.resets.get(),
            reset_sync_timeouts: c.reset_sync_timeouts.get(),
            dropped_writes: self.sh.regs.dropped_writes(),
            dma_faults: self.sh.iommu.faults(),
        }
    }

    /// The PF-side state of the VF (as of the last message, queue or reset event).
    pub fn status(&self) -> SimStatus {
        self.sh
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// DMA faults so far.
    pub fn dma_faults(&self) -> u64 {
        self.sh.iommu.faults()
    }

    /// The most recent DMA fault.
    pub fn last_dma_fault(&self) -> Option<DmaFault> {
        self.sh.iommu.last_fault()
    }

    /// Read DMA memory at `iova` through the VF's IOMMU table, as a debugger
    /// looking at guest memory would (not counted as a device access). Tests play
    /// the driver with this and [`write_iova`](Self::write_iova); an unmapped
    /// range is an error.
    pub fn read_iova(&self, iova: u64, buf: &mut [u8]) -> std::result::Result<(), DmaFault> {
        self.sh
            .iommu
            .host_read(iova, buf)
            .map_err(|e| e.with_context("reading through SimVf::read_iova"))
    }

    /// Write DMA memory at `iova` through the VF's IOMMU table (see
    /// [`read_iova`](Self::read_iova)).
    pub fn write_iova(&self, iova: u64, data: &[u8]) -> std::result::Result<(), DmaFault> {
        self.sh
            .iommu
            .host_write(iova, data)
            .map_err(|e| e.with_context("writing through SimVf::write_iova"))
    }

    /// IOVA ranges mapped (one per region in IOVA modes VA and DC).
    pub fn dma_mapping_count(&self) -> usize {
        self.sh.iommu.mapping_count()
    }

    /// The VF's name.
    pub fn name(&self) -> &str {
        &self.sh.name
    }
}

/// Hand `wire` to the device thread and wait (bounded) until it took it.
fn set_wire(sh: &Arc<Shared>, wire: WireState) {
    *sh.pending_wire.lock().unwrap_or_else(|e| e.into_inner()) = Some(wire);
    sh.wire_pending.store(true, Ordering::Release);
    sh.regs.waker.wake();
    let deadline = Instant::now() + Duration::from_secs(2);
    while sh.wire_pending.load(Ordering::Acquire) && Instant::now() < deadline {
        if sh.stop.load(Ordering::Acquire) || sh.manual.load(Ordering::Acquire) {
            // Manual mode: the next step takes it.
            return;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

impl Drop for SimVf {
    fn drop(&mut self) {
        // Off the PF's thread: it steps the VF no more (it checks `stop` under
        // the device's lock), and lets go of it before `remove` returns.
        self.sh.stop.store(true, Ordering::Release);
        self.pf.core.remove(&self.sh);
        drop(device::lock(&self.device));
        self.sh.iommu.set_live(false);
        // Frames in flight to the VF are gone.
        self.sh.inbox.clear();
        let mut peers = PEERS.lock().unwrap_or_else(|e| e.into_inner());
        peers.retain(|(_, w)| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), &*self.sh));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::bar::Bar;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn pf_flavours_by_name() {
        for (name, pf) in [
            ("i40e", PfModel::X710),
            ("x722", PfModel::X722),
            ("ice", PfModel::E810),
            ("E810", PfModel::E810),
        ] {
            assert_eq!(name.parse::<PfModel>(), Ok(pf));
        }
        for pf in [PfModel::X710, PfModel::X722, PfModel::E810] {
            assert_eq!(pf.name().parse::<PfModel>(), Ok(pf));
        }
        assert_eq!(PfModel::default(), PfModel::X710);
        let e = "mlx5".parse::<PfModel>().unwrap_err();
        assert!(e.contains("i40e") && e.contains("ice"), "{e}");
    }

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<SimVf>();
        send_sync::<SimVfBar>();
        send_sync::<Faults>();
    }

    #[test]
    fn manual_mode_runs_the_device_only_in_steps() {
        let vf = SimVf::new(SimConfig {
            reset_timing: ResetTiming {
                impending: Duration::ZERO,
                in_progress: Duration::from_millis(5),
                completed: Duration::from_millis(5),
                ..Default::default()
            },
            ..SimConfig::default()
        })
        .unwrap();
        vf.set_manual(true);
        assert!(vf.is_manual());
        // A control request waits for a step, not for the parked thread.
        let preset = EthStats {
            rx_bytes: 1234,
            ..EthStats::default()
        };
        let t = Instant::now();
        vf.faults().preset_stats(preset);
        assert!(t.elapsed() < Duration::from_secs(1), "preset_stats waited");
        vf.faults().reset_vf();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(vf.stats().eth.rx_bytes, 0, "taken without a step");
        assert_eq!(vf.stats().resets, 0, "reset without a step");
        assert_eq!(vf.status().reset_state, spec::vfr::VFACTIVE);
        // One step: the preset and the start of the reset.
        assert!(vf.step() >= 2);
        assert_eq!(vf.stats().resets, 1);
        assert_eq!(vf.status().reset_state, spec::vfr::INPROGRESS);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            vf.status().reset_state,
            spec::vfr::INPROGRESS,
            "moved on its own"
        );
        vf.step();
        assert_eq!(
            vf.status().reset_state,
            spec::vfr::INPROGRESS,
            "no VFR_COMPLETED: the PF goes from in progress to active"
        );
        std::thread::sleep(Duration::from_millis(10));
        vf.step();
        assert_eq!(vf.status().reset_state, spec::vfr::VFACTIVE);
        assert_eq!(vf.step(), 0, "nothing left to do");
        // The thread takes over again.
        vf.set_manual(false);
        assert!(!vf.is_manual());
        vf.faults().preset_stats(preset);
        assert_eq!(vf.stats().eth.rx_bytes, 1234, "the thread took the preset");
    }

    #[test]
    fn an_ice_stale_vfactive_ends_at_its_time_even_if_the_device_does_not_run() {
        // ice's VFGEN_RSTAT lag is the hardware's: a driver polling it (the
        // iavf driver gives it 10 ms) must see it end on time even when the
        // model's thread is descheduled. Manual mode stands for that thread
        // not running at all.
        use nicpoll::bar::Bar;
        let lag = Duration::from_millis(200);
        let vf = SimVf::new(SimConfig {
            pf: PfModel::E810,
            reset_timing: ResetTiming {
                impending: Duration::from_millis(1),
                in_progress: Duration::from_millis(5),
                completed: Duration::from_millis(5),
                rstat_lag: lag,
            },
            ..SimConfig::default()
        })
        .unwrap();
        let bar = vf.bar();
        let rstat = || bar.read32(spec::reg::VFGEN_RSTAT) & spec::reg::RSTAT_MASK;
        vf.set_manual(true);
        vf.faults().reset_vf();
        vf.step();
        std::thread::sleep(Duration::from_millis(2));
        vf.step();
        let mailbox_off = Instant::now();
        assert_eq!(
            bar.read32(spec::reg::VF_ARQLEN1) & spec::reg::AQ_LEN_ENABLE,
            0,
            "ice clears the mailbox first"
        );
        let stale = rstat();
        if mailbox_off.elapsed() < lag {
            assert_eq!(stale, spec::vfr::VFACTIVE, "stale until the lag is over");
        }
        std::thread::sleep(lag.saturating_sub(mailbox_off.elapsed()) + Duration::from_millis(1));
        assert_eq!(
            rstat(),
            spec::vfr::INPROGRESS,
            "over at its time, no step made"
        );
        assert_eq!(vf.stats().resets, 0, "the device itself has not moved");
        // The device catches up; the state is its own again.
        vf.step();
        assert_eq!(vf.stats().resets, 1);
        assert_eq!(rstat(), spec::vfr::INPROGRESS);
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(6));
            vf.step();
        }
        assert_eq!(rstat(), spec::vfr::VFACTIVE, "the reset is over");
        vf.set_manual(false);
    }

    /// Before, the table kept a bare pointer: map, drop the region, and a
    /// device access to that IOVA (a descriptor the driver wrote, a SimVfBar
    /// doorbell) read or wrote freed memory.
    #[test]
    fn a_mapped_region_outlives_its_handle_until_unmapped() {
        let vf = SimVf::new(SimConfig::default()).unwrap();
        let mem = nicpoll::memory::DmaMemory::plain();
        let r = Arc::new(mem.alloc("rings", 4096).unwrap());
        let (held, iova) = (Arc::downgrade(&r), r.iova(0));
        vf.map_dma(&r).unwrap();
        drop(r);
        assert!(held.upgrade().is_some(), "freed while mapped");
        vf.write_iova(iova + 64, &[7; 8]).unwrap();
        let mut back = [0u8; 8];
        vf.read_iova(iova + 64, &mut back).unwrap();
        assert_eq!(back, [7; 8]);
        vf.unmap_dma(&held.upgrade().unwrap()).unwrap();
        assert!(held.upgrade().is_none(), "unmap_dma waited for the device");
        assert!(vf.read_iova(iova, &mut back).is_err());

        // Never unmapped: it goes with the device.
        let r = Arc::new(mem.alloc("pool", 4096).unwrap());
        let held = Arc::downgrade(&r);
        vf.map_dma(&r).unwrap();
        drop(r);
        assert!(held.upgrade().is_some());
        drop(vf);
        assert!(held.upgrade().is_none());
    }

    /// A function-level reset: no RESET_IMPENDING (nothing reaches the ARQ),
    /// in progress at once, then active again; one in the middle of another
    /// starts over.
    #[test]
    fn a_function_level_reset_resets_at_once() {
        let vf = SimVf::new(SimConfig {
            reset_timing: ResetTiming {
                in_progress: Duration::from_millis(20),
                completed: Duration::from_millis(5),
                ..Default::default()
            },
            ..SimConfig::default()
        })
        .unwrap();
        vf.set_manual(true);
        vf.function_level_reset();
        vf.step();
        assert_eq!(vf.status().reset_state, spec::vfr::INPROGRESS);
        assert_eq!(vf.stats().resets, 1);
        assert_eq!(vf.stats().arq_posted + vf.stats().arq_lost, 0, "no event");
        std::thread::sleep(Duration::from_millis(15));
        vf.function_level_reset();
        vf.step();
        assert_eq!(vf.stats().resets, 2);
        std::thread::sleep(Duration::from_millis(10));
        vf.step();
        assert_eq!(
            vf.status().reset_state,
            spec::vfr::INPROGRESS,
            "the second reset started over"
        );
        let t = Instant::now();
        while vf.status().reset_state != spec::vfr::VFACTIVE && t.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(2));
            vf.step();
        }
        assert_eq!(vf.status().reset_state, spec::vfr::VFACTIVE);
    }

    /// The doorbell pages in a memfd: what another process stores there is
    /// the register the device reads, and the other way round; the rest of
    /// BAR0 is not in it.
    #[test]
    fn shared_doorbells_are_the_registers() {
        let vf = SimVf::new(SimConfig {
            shared_doorbells: true,
            ..SimConfig::default()
        })
        .unwrap();
        let file = vf.shared_doorbells().expect("a memfd").try_clone().unwrap();
        assert_eq!(file.metadata().unwrap().len(), DOORBELL_PAGES as u64);
        // pwrite/pread reach the pages a mapping of the memfd shows.
        use std::os::unix::fs::FileExt;
        let bar = vf.bar();
        file.write_all_at(&77u32.to_le_bytes(), spec::reg::qrx_tail(3) as u64)
            .unwrap();
        assert_eq!(bar.read32(spec::reg::qrx_tail(3)), 77);
        bar.write32(spec::reg::qtx_tail(1), 12);
        let mut w = [0u8; 4];
        file.read_exact_at(&mut w, spec::reg::qtx_tail(1) as u64)
            .unwrap();
        assert_eq!(u32::from_le_bytes(w), 12);
        assert_eq!(bar.read32(spec::reg::VFGEN_RSTAT) & 3, spec::vfr::VFACTIVE);
        assert!(
            SimVf::new(SimConfig::default())
                .unwrap()
                .shared_doorbells()
                .is_none()
        );
    }

    #[test]
    fn idle_device_sleeps() {
        // An idle VF must not keep a core busy: after its short spin it parks.
        let vf = SimVf::new(SimConfig::default()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let asleep = (0..20)
            .filter(|_| {
                std::thread::sleep(Duration::from_micros(300));
                vf.sh.regs.waker_is_sleeping()
            })
            .count();
        assert!(asleep >= 10, "asleep in {asleep} of 20 samples");
    }
}
