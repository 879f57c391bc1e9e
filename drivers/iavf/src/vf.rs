//! The virtchnl client: one request at a time over the admin queue, the VF's
//! bring-up (DPDK `iavf_init_vf`: reset done, admin queue, VERSION,
//! GET_VF_RESOURCES), and the
//! PF's events (link changes, resets).
//!
//! Everything here runs on the control path, under the port's control lock.
#![deny(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll::memory::DmaRegion;
use nicpoll::port::{Link, MacAddr};

use crate::adminq::{AdminQueue, poll_until};
use crate::error::{IavfError, Result};
use crate::regs::{self, ResetState};
use crate::virtchnl::{
    self, EthStats, Op, PfEvent, QueuePairInfo, QueueSelect, VectorMap, VersionInfo, VfResource,
};

/// How long the driver waits for the device and the PF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The firmware consuming an ATQ descriptor (`IAVF_ASQ_CMD_TIMEOUT`, 250 ms).
    pub aq_send: Duration,
    /// The PF answering a virtchnl request (DPDK: 2000 x 1 ms).
    pub reply: Duration,
    /// `VFGEN_RSTAT` reaching COMPLETED or VFACTIVE (Linux: 2000 x 10 ms).
    pub reset_done: Duration,
    /// A reset announced or requested becoming visible (ARQ disabled; Linux:
    /// 500 x 5 ms).
    pub reset_detect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            aq_send: Duration::from_millis(250),
            reply: Duration::from_millis(2000),
            reset_done: Duration::from_secs(20),
            reset_detect: Duration::from_millis(2500),
        }
    }
}

/// The VF as the PF described it, plus the state of the conversation.
pub struct Vf {
    device: String,
    aq: AdminQueue,
    pub(crate) timeouts: Timeouts,
    /// The PF's virtchnl version.
    pub(crate) pf_version: Option<VersionInfo>,
    /// The last GET_VF_RESOURCES answer.
    pub(crate) res: Option<VfResource>,
    /// Our VSI.
    pub(crate) vsi_id: u16,
    /// Capabilities granted.
    pub(crate) caps: u32,
    /// Link state from the PF's events.
    pub(crate) link: Link,
    /// The PF announced a reset (RESET_IMPENDING) or its driver is closing.
    pub(crate) reset_impending: bool,
    /// The PF strips VLAN tags on receive (it granted VLAN offloads and
    /// refused to turn stripping off): the receive path reports each tag in
    /// the mbuf.
    pub(crate) vlan_stripping: bool,
    /// Link events seen.
    pub(crate) link_events: u64,
    /// Answers that matched no request (late or duplicate).
    pub(crate) stray_replies: u64,
}

impl Vf {
    /// A VF whose admin queue lives in `aq_region`.
    pub fn new(device: &str, aq_region: Arc<DmaRegion>, timeouts: Timeouts) -> Result<Vf> {
        let mut aq = AdminQueue::new(aq_region, device)?;
        aq.set_send_timeout(timeouts.aq_send);
        Ok(Vf {
            device: device.to_string(),
            aq,
            timeouts,
            pf_version: None,
            res: None,
            vsi_id: 0,
            caps: 0,
            link: Link::default(),
            reset_impending: false,
            vlan_stripping: false,
            link_events: 0,
            stray_replies: 0,
        })
    }

    /// The device name.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Queue pairs granted.
    pub fn num_queue_pairs(&self) -> u16 {
        self.res.as_ref().map_or(0, |r| r.num_queue_pairs)
    }

    /// The MAC the PF gives the VF (`default_mac_addr` of its VSI), unless it
    /// is zero or multicast (none given).
    pub fn pf_mac(&self) -> Option<MacAddr> {
        self.res
            .as_ref()
            .and_then(|r| r.sriov_vsi())
            .map(|v| MacAddr(v.default_mac))
            .filter(|m| m.0 != [0; 6] && !m.is_multicast())
    }

    /// Whether the PF granted `cap` ([`virtchnl::caps`]).
    pub fn has_cap(&self, cap: u32) -> bool {
        self.caps & cap != 0
    }

    /// Wait until `VFGEN_RSTAT` says the VF reset is done (COMPLETED or
    /// VFACTIVE), as DPDK's `iavf_check_vf_reset_done`.
    pub fn wait_reset_done<B: Bar>(&self, bar: &B, what: &'static str) -> Result<()> {
        let start = Instant::now();
        let mut last = 0;
        let ok = poll_until(self.timeouts.reset_done, Duration::from_millis(10), || {
            last = bar.read32(regs::VFGEN_RSTAT);
            ResetState::from_reg(last).is_done().then_some(())
        });
        match ok {
            Some(()) => Ok(()),
            None => Err(IavfError::ResetTimeout {
                device: self.device.clone(),
                rstat: last,
                waited_ms: start.elapsed().as_millis() as u64,
                what,
            }),
        }
    }

    /// After a reset showed (the ARQ disabled), give `VFGEN_RSTAT` up to 10 ms
    /// to leave VFR_VFACTIVE: ice disables the VF's mailbox before it triggers
    /// the reset, and the state register may still read VFACTIVE from before
    /// the reset (`ice_sriov_clear_reset_state`); taken for "done", it would
    /// make us set the admin queue up just before the hardware reset wipes it.
    /// Linux's reset task sleeps 10 ms before its first look
    /// (`IAVF_RESET_WAIT_MS`); DPDK fixed the same race in `iavf_dev_close`.
    /// Returns at once on i40e, where the reset disables both together.
    pub fn wait_reset_started<B: Bar>(&self, bar: &B) {
        let _ = poll_until(Duration::from_millis(10), Duration::from_millis(1), || {
            let rstat = ResetState::from_reg(bar.read32(regs::VFGEN_RSTAT));
            (rstat != ResetState::Active).then_some(())
        });
    }

    /// Ask the PF for a reset when none was seen (or a recovery failed and the
    /// PF may keep state of it: i40e answers a second GET_VF_RESOURCES with
    /// -EINVAL until the VF is reset): set the admin queue up again, send
    /// VIRTCHNL_OP_RESET_VF, wait until the reset shows, as Linux's reset task
    /// does for `IAVF_FLAG_RESET_NEEDED`. True if the reset was seen.
    pub fn request_reset<B: Bar>(&mut self, bar: &B) -> Result<bool> {
        self.aq.shutdown(bar);
        self.aq.init(bar)?;
        self.aq.send(bar, Op::ResetVf.raw(), &[])?;
        Ok(self.wait_reset_detected(bar))
    }

    /// Wait until a VF reset shows: our ARQ disabled (by the hardware reset on
    /// i40e, by the PF first on ice) or `VFGEN_RSTAT` out of the done states;
    /// true if it did within the detection timeout.
    pub fn wait_reset_detected<B: Bar>(&self, bar: &B) -> bool {
        poll_until(self.timeouts.reset_detect, Duration::from_millis(5), || {
            let rstat = ResetState::from_reg(bar.read32(regs::VFGEN_RSTAT));
            (!AdminQueue::arq_enabled(bar) || !rstat.is_done()).then_some(())
        })
        .is_some()
    }

    /// Bring the VF up to the point where it can be configured (DPDK
    /// `iavf_init_vf`): reset done, admin queue, VERSION, GET_VF_RESOURCES.
    pub fn init<B: Bar>(&mut self, bar: &B) -> Result<()> {
        // VFGEN_RSTAT must say the VF is out of reset.
        self.wait_reset_done(bar, "waiting for the VF to come out of reset")?;
        // ATQ and ARQ, 32 entries of 4 KiB each (`IAVF_AQ_LEN`, `IAVF_AQ_BUF_SZ`).
        self.aq.init(bar)?;
        self.enable_irq0(bar);
        self.reset_impending = false;
        // VIRTCHNL_OP_VERSION {1, 1}.
        self.negotiate_version(bar)?;
        // VIRTCHNL_OP_GET_VF_RESOURCES with the capabilities we
        // implement (no RX_FLEX_DESC: legacy 32-byte receive descriptors).
        self.get_vf_resources(bar)?;
        self.leave_vlan_tags_in(bar)?;
        Ok(())
    }

    /// With VLAN offloads granted, VIRTCHNL_OP_DISABLE_VLAN_STRIPPING: i40e
    /// grants VLAN whether asked or not and its VF VSI strips every tag into
    /// the descriptor by default (`i40e_vc_get_vf_resources_msg`, the VSI's
    /// PVLAN_MODE_ALL with EMOD 0 in `i40e_vsi_add`), so forwarded frames would
    /// lose their tags; DPDK turns stripping off unless the application asked
    /// for it (`iavf_dev_init_vlan`). Asked after every reset too: the VSI is
    /// new then. If the PF refuses, tags keep being stripped and the receive
    /// path reports each in the mbuf (`RX_VLAN | RX_VLAN_STRIPPED`).
    fn leave_vlan_tags_in<B: Bar>(&mut self, bar: &B) -> Result<()> {
        self.vlan_stripping = false;
        if !self.has_cap(virtchnl::caps::VLAN) {
            return Ok(());
        }
        match self.command(bar, Op::DisableVlanStripping, &[]) {
            Ok(()) => Ok(()),
            Err(e @ IavfError::Virtchnl { .. }) => {
                log::warn!(
                    "iavf {}: {e}; received VLAN tags are stripped by the device and reported in \
                     the mbuf (vlan_tci, RX_VLAN_STRIPPED) instead of staying in the frame",
                    self.device
                );
                self.vlan_stripping = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Enable vector 0's admin-queue cause, as DPDK's `iavf_enable_irq0` and
    /// Linux's `iavf_misc_irq_enable` do: `VFINT_ICR0_ENA1` = ADMINQ, then
    /// `VFINT_DYN_CTL01` = INTENA | CLEARPBA with no ITR change. Besides
    /// interrupts (none are taken here: the driver polls), the PF reads it:
    /// i40e resets an active VF only after it saw ADMINQ enabled, polling up to
    /// 100 times first ("Reset VF %d never finished", `i40e_sync_vfr_reset`).
    pub fn enable_irq0<B: Bar>(&self, bar: &B) {
        bar.write32(regs::VFINT_ICR0_ENA1, regs::ICR0_ADMINQ);
        bar.write32(
            regs::VFINT_DYN_CTL01,
            regs::DYN_CTL_INTENA | regs::DYN_CTL_CLEARPBA | regs::DYN_CTL_ITR_NONE,
        );
    }

    /// Without WB_ON_ITR, what DPDK's 50 ms alarm does
    /// (`iavf_dev_alarm_handler`): disable vector 0, read (and so clear) its
    /// causes, enable it again. The ITR of vector 0 writes back the
    /// descriptors of partial cache lines only while the vector is enabled,
    /// and its first interrupt masks it again unless the PF turned its
    /// auto-masking off (RX_POLLING, which a partitioned port refuses): without
    /// this a lone frame would wait for three more. Returns the causes read.
    pub fn service_irq0<B: Bar>(&self, bar: &B) -> u32 {
        bar.write32(regs::VFINT_ICR0_ENA1, 0);
        bar.write32(regs::VFINT_DYN_CTL01, regs::DYN_CTL_ITR_NONE);
        let causes = bar.read32(regs::VFINT_ICR01);
        self.enable_irq0(bar);
        causes
    }

    /// Turn the admin queue off (`iavf_shutdown_adminq`).
    pub fn shutdown<B: Bar>(&mut self, bar: &B) {
        self.aq.shutdown(bar);
    }

    fn protocol(&self, op: Op, reason: String) -> IavfError {
        IavfError::Protocol {
            device: self.device.clone(),
            op: op.raw(),
            reason,
        }
    }

    /// VIRTCHNL_OP_VERSION: offer 1.1; refuse a PF that speaks a newer
    /// version (Linux and DPDK do) or one older than 1.1 (as DPDK).
    fn negotiate_version<B: Bar>(&mut self, bar: &B) -> Result<()> {
        let reply = self.request(bar, Op::Version, &VersionInfo::OURS.encode())?;
        let v =
            VersionInfo::decode(&reply).map_err(|e| self.protocol(Op::Version, e.to_string()))?;
        let ours = VersionInfo::OURS;
        if (v.major, v.minor) > (ours.major, ours.minor) {
            return Err(self.protocol(
                Op::Version,
                format!(
                    "the PF speaks virtchnl {}.{}, newer than our {}.{}; use a PF driver that \
                     offers {}.{}",
                    v.major, v.minor, ours.major, ours.minor, ours.major, ours.minor
                ),
            ));
        }
        if (v.major, v.minor) < (ours.major, ours.minor) {
            return Err(self.protocol(
                Op::Version,
                format!(
                    "the PF speaks virtchnl {}.{}; this driver needs {}.{} (capability \
                     negotiation): update the host's i40e/ice driver",
                    v.major, v.minor, ours.major, ours.minor
                ),
            ));
        }
        self.pf_version = Some(v);
        Ok(())
    }

    /// VIRTCHNL_OP_GET_VF_RESOURCES: ask for [`virtchnl::caps::REQUESTED`],
    /// keep the SR-IOV VSI.
    fn get_vf_resources<B: Bar>(&mut self, bar: &B) -> Result<()> {
        let asked = virtchnl::caps::REQUESTED;
        let reply = match self.request(
            bar,
            Op::GetVfResources,
            &virtchnl::encode_get_vf_resources(asked),
        ) {
            // i40e refuses RX_POLLING on a partitioned port (NPAR) by failing
            // the whole request (i40e_vc_get_vf_resources_msg): ask once more
            // without it, as Linux's iavf never asks for it. Vector 0 then
            // keeps auto-masking; the watchdog re-enables it (see
            // `Vf::service_irq0`).
            Err(IavfError::Virtchnl { status, .. })
                if status == virtchnl::errno::EINVAL || status == virtchnl::STATUS_ERR_PARAM =>
            {
                log::info!(
                    "iavf {}: the PF refused GET_VF_RESOURCES asking for RX_POLLING (a \
                     partitioned port?); asking again without it",
                    self.device
                );
                let asked = asked & !virtchnl::caps::RX_POLLING;
                self.request(
                    bar,
                    Op::GetVfResources,
                    &virtchnl::encode_get_vf_resources(asked),
                )?
            }
            r => r?,
        };
        let res = VfResource::decode(&reply)
            .map_err(|e| self.protocol(Op::GetVfResources, e.to_string()))?;
        let Some(vsi) = res.sriov_vsi().copied() else {
            return Err(self.protocol(
                Op::GetVfResources,
                format!(
                    "no VSI of type SR-IOV (6) among {} listed; the PF did not set this VF up",
                    res.vsi_res.len()
                ),
            ));
        };
        if res.num_queue_pairs == 0 {
            return Err(self.protocol(Op::GetVfResources, "the PF granted no queue pairs".into()));
        }
        if res.vf_cap_flags & virtchnl::caps::L2 == 0 {
            log::warn!(
                "iavf {}: the PF did not grant VIRTCHNL_VF_OFFLOAD_L2 (granted: {})",
                self.device,
                virtchnl::caps::describe(res.vf_cap_flags)
            );
        }
        log::info!(
            "iavf {}: virtchnl {}.{}, VSI {}, {} queue pairs, {} vectors, RSS key {} B / LUT {}, caps {}",
            self.device,
            self.pf_version.map_or(0, |v| v.major),
            self.pf_version.map_or(0, |v| v.minor),
            vsi.vsi_id,
            res.num_queue_pairs,
            res.max_vectors,
            res.rss_key_size,
            res.rss_lut_size,
            virtchnl::caps::describe(res.vf_cap_flags)
        );
        self.vsi_id = vsi.vsi_id;
        self.caps = res.vf_cap_flags;
        self.res = Some(res);
        Ok(())
    }

    /// Send `op` with `payload` and wait for the PF's answer to it, handling
    /// the events that arrive meanwhile. A non-zero virtchnl status is an
    /// error naming the opcode, the status and its usual cause.
    pub fn request<B: Bar>(&mut self, bar: &B, op: Op, payload: &[u8]) -> Result<Vec<u8>> {
        if !AdminQueue::arq_enabled(bar) {
            return Err(IavfError::Resetting {
                device: self.device.clone(),
            });
        }
        self.aq.send(bar, op.raw(), payload)?;
        let start = Instant::now();
        let mut answer: Option<Result<Vec<u8>>> = None;
        let mut resetting = false;
        let timeout = self.timeouts.reply;
        poll_until(timeout, Duration::from_micros(100), || {
            while let Some(msg) = self.aq.receive(bar) {
                if msg.v_op == Op::Event.raw() {
                    self.handle_event(&msg.payload);
                } else if msg.v_op == op.raw() {
                    answer = Some(if msg.v_retval != virtchnl::STATUS_SUCCESS {
                        Err(IavfError::Virtchnl {
                            device: self.device.clone(),
                            op: op.raw(),
                            status: msg.v_retval,
                        })
                    } else if let Some(code) = msg.aq_error {
                        Err(IavfError::AdminQueue {
                            device: self.device.clone(),
                            op: "receive",
                            reason: format!(
                                "the answer to {} came with admin queue error {code} ({})",
                                op,
                                crate::adminq::aq_error_name(code)
                            ),
                        })
                    } else {
                        Ok(msg.payload)
                    });
                    return Some(());
                } else {
                    self.stray_replies += 1;
                    log::debug!(
                        "iavf {}: dropped an answer to {} ({}) while waiting for {}",
                        self.device,
                        Op::name_of(msg.v_op),
                        msg.v_op,
                        op
                    );
                }
            }
            if !AdminQueue::arq_enabled(bar) {
                resetting = true;
                return Some(());
            }
            None
        });
        if let Some(a) = answer {
            return a;
        }
        if resetting {
            return Err(IavfError::Resetting {
                device: self.device.clone(),
            });
        }
        Err(IavfError::VirtchnlTimeout {
            device: self.device.clone(),
            op: op.raw(),
            waited_ms: start.elapsed().as_millis() as u64,
        })
    }

    /// A request whose answer carries no payload we use.
    fn command<B: Bar>(&mut self, bar: &B, op: Op, payload: &[u8]) -> Result<()> {
        self.request(bar, op, payload).map(|_| ())
    }

    /// Drain the ARQ: handle events, drop stray answers. Returns how many
    /// messages were taken.
    pub fn poll_events<B: Bar>(&mut self, bar: &B) -> usize {
        let mut n = 0;
        if !AdminQueue::arq_enabled(bar) {
            return 0;
        }
        while let Some(msg) = self.aq.receive(bar) {
            n += 1;
            if msg.v_op == Op::Event.raw() {
                self.handle_event(&msg.payload);
            } else {
                self.stray_replies += 1;
                log::debug!(
                    "iavf {}: dropped an unexpected answer to {} ({})",
                    self.device,
                    Op::name_of(msg.v_op),
                    msg.v_op
                );
            }
        }
        n
    }

    /// A VIRTCHNL_OP_EVENT from the PF.
    fn handle_event(&mut self, payload: &[u8]) {
        let adv = self.has_cap(virtchnl::caps::ADV_LINK_SPEED);
        match PfEvent::decode(payload, adv) {
            Ok(PfEvent::LinkChange { up, speed_mbps }) => {
                self.link_events += 1;
                let link = Link {
                    up,
                    speed_mbps: if up { speed_mbps } else { 0 },
                    full_duplex: up,
                };
                if link != self.link {
                    log::info!("iavf {}: link {}", self.device, link);
                }
                self.link = link;
            }
            Ok(PfEvent::ResetImpending) => {
                log::warn!(
                    "iavf {}: the PF announced a VF reset (VIRTCHNL_EVENT_RESET_IMPENDING)",
                    self.device
                );
                // Down until the PF says otherwise after the reset, as DPDK
                // marks it (iavf_handle_pf_event_msg).
                self.link = Link::default();
                self.reset_impending = true;
            }
            Ok(PfEvent::PfDriverClose) => {
                log::warn!(
                    "iavf {}: the PF driver is closing (VIRTCHNL_EVENT_PF_DRIVER_CLOSE); the VF \
                     will be reset",
                    self.device
                );
                self.link = Link::default();
                self.reset_impending = true;
            }
            Ok(PfEvent::Other(e)) => {
                log::debug!("iavf {}: ignored PF event {e}", self.device)
            }
            Err(e) => log::warn!("iavf {}: malformed PF event: {e}", self.device),
        }
    }

    /// VIRTCHNL_OP_CONFIG_VSI_QUEUES, in messages of at most 32 pairs.
    pub fn config_vsi_queues<B: Bar>(&mut self, bar: &B, pairs: &[QueuePairInfo]) -> Result<()> {
        for chunk in pairs.chunks(virtchnl::MAX_QPAIRS_PER_MSG) {
            let msg = virtchnl::encode_vsi_queues(self.vsi_id, chunk);
            self.command(bar, Op::ConfigVsiQueues, &msg)?;
        }
        Ok(())
    }

    /// VIRTCHNL_OP_CONFIG_IRQ_MAP: every queue on one vector.
    pub fn config_irq_map<B: Bar>(
        &mut self,
        bar: &B,
        vector: u16,
        rx_queues: u16,
        tx_queues: u16,
    ) -> Result<()> {
        let map = VectorMap {
            vsi_id: self.vsi_id,
            vector_id: vector,
            rxq_map: virtchnl::queue_bitmap(rx_queues) as u16,
            txq_map: virtchnl::queue_bitmap(tx_queues) as u16,
            rxitr_idx: 0,
            txitr_idx: 0,
        };
        self.command(bar, Op::ConfigIrqMap, &virtchnl::encode_irq_map(&[map]))
    }

    /// VIRTCHNL_OP_ENABLE_QUEUES for the queues in the bitmaps.
    pub fn enable_queues<B: Bar>(&mut self, bar: &B, rx: u32, tx: u32) -> Result<()> {
        let sel = QueueSelect {
            vsi_id: self.vsi_id,
            rx_queues: rx,
            tx_queues: tx,
        };
        self.command(bar, Op::EnableQueues, &sel.encode())
    }

    /// VIRTCHNL_OP_DISABLE_QUEUES for the queues in the bitmaps.
    pub fn disable_queues<B: Bar>(&mut self, bar: &B, rx: u32, tx: u32) -> Result<()> {
        let sel = QueueSelect {
            vsi_id: self.vsi_id,
            rx_queues: rx,
            tx_queues: tx,
        };
        self.command(bar, Op::DisableQueues, &sel.encode())
    }

    /// VIRTCHNL_OP_ADD_ETH_ADDR (add) or DEL_ETH_ADDR: our primary MAC filter.
    pub fn eth_addr<B: Bar>(&mut self, bar: &B, mac: [u8; 6], add: bool) -> Result<()> {
        let msg =
            virtchnl::encode_ether_addr_list(self.vsi_id, &[(mac, virtchnl::ETHER_ADDR_PRIMARY)]);
        let op = if add { Op::AddEthAddr } else { Op::DelEthAddr };
        self.command(bar, op, &msg)
    }

    /// VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE: unicast and multicast on or off.
    pub fn config_promisc<B: Bar>(&mut self, bar: &B, on: bool) -> Result<()> {
        let flags = if on {
            virtchnl::PROMISC_UNICAST | virtchnl::PROMISC_MULTICAST
        } else {
            0
        };
        self.command(
            bar,
            Op::ConfigPromiscuousMode,
            &virtchnl::encode_promisc(self.vsi_id, flags),
        )
    }

    /// RSS through the PF: VIRTCHNL_OP_CONFIG_RSS_KEY, CONFIG_RSS_LUT (entry
    /// i = queue i mod nb_rxq), then the packet types to hash: all the PF
    /// offers (GET_RSS_HENA_CAPS, SET_RSS_HENA).
    pub fn config_rss<B: Bar>(&mut self, bar: &B, key: &[u8], nb_rxq: u16) -> Result<()> {
        let Some(res) = self.res.clone() else {
            return Ok(());
        };
        let key_len = (res.rss_key_size as usize).min(key.len());
        if key_len > 0 {
            let msg = virtchnl::encode_rss_key_or_lut(self.vsi_id, &key[..key_len]);
            self.command(bar, Op::ConfigRssKey, &msg)?;
        }
        let lut_len = (res.rss_lut_size as usize).min(crate::adminq::AQ_BUF_SIZE - 8);
        if lut_len > 0 {
            let lut: Vec<u8> = (0..lut_len)
                .map(|i| (i % nb_rxq.max(1) as usize) as u8)
                .collect();
            let msg = virtchnl::encode_rss_key_or_lut(self.vsi_id, &lut);
            self.command(bar, Op::ConfigRssLut, &msg)?;
        }
        let hena = match self.request(bar, Op::GetRssHenaCaps, &[]) {
            Ok(b) => virtchnl::decode_hena(&b)
                .map_err(|e| self.protocol(Op::GetRssHenaCaps, e.to_string()))?,
            Err(IavfError::Virtchnl { status, .. })
                if status == virtchnl::STATUS_ERR_NOT_SUPPORTED =>
            {
                log::info!(
                    "iavf {}: the PF does not report RSS packet types; keeping its default",
                    self.device
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Every packet type the PF offers, as Linux's iavf sets them
        // (iavf_virtchnl.c, VIRTCHNL_OP_GET_RSS_HENA_CAPS): an X722 offers the
        // expanded set, whose UDP (29/30) and TCP SYN (32) types its parser
        // uses instead of the base ones.
        if hena != 0 {
            self.command(bar, Op::SetRssHena, &virtchnl::encode_hena(hena))?;
        }
        Ok(())
    }

    /// VIRTCHNL_OP_GET_STATS: the VSI's counters.
    pub fn get_stats<B: Bar>(&mut self, bar: &B) -> Result<EthStats> {
        let sel = QueueSelect {
            vsi_id: self.vsi_id,
            ..QueueSelect::default()
        };
        let reply = self.request(bar, Op::GetStats, &sel.encode())?;
        EthStats::decode(&reply).map_err(|e| self.protocol(Op::GetStats, e.to_string()))
    }

    /// VIRTCHNL_OP_RESET_VF: ask the PF to reset us (no answer), wait until
    /// the reset shows (ARQ disabled), then turn our admin queue off (DPDK
    /// `iavf_dev_close`). True if the reset was seen.
    pub fn reset_vf<B: Bar>(&mut self, bar: &B) -> Result<bool> {
        self.aq.send(bar, Op::ResetVf.raw(), &[])?;
        let seen = self.wait_reset_detected(bar);
        self.aq.shutdown(bar);
        Ok(seen)
    }
}
