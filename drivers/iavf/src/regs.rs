//! VF BAR0 registers (DPDK `base/iavf_register.h`; field widths
//! cross-checked in i40e's `i40e_register.h`).
//!
//! Only offsets and bit fields live here; every access goes through the
//! [`Bar`](nicpoll::bar::Bar) the port is generic over.
#![deny(unsafe_code)]

/// Transmit tail doorbell of queue `q` (`QTX_TAIL1`), bits 0-12.
#[inline(always)]
pub const fn qtx_tail(q: u16) -> usize {
    4 * q as usize
}

/// Receive tail doorbell of queue `q` (`QRX_TAIL1`), bits 0-12.
#[inline(always)]
pub const fn qrx_tail(q: u16) -> usize {
    0x2000 + 4 * q as usize
}

/// Per-queue-vector control of vector `v + 1` (`VFINT_DYN_CTLN1(v)`, v = 0..63).
pub const fn vfint_dyn_ctln1(v: u16) -> usize {
    0x3800 + 4 * v as usize
}

/// Interrupt cause register of vector 0 (`VFINT_ICR01`).
pub const VFINT_ICR01: usize = 0x4800;
/// Cause enable of vector 0 (`VFINT_ICR0_ENA1`).
pub const VFINT_ICR0_ENA1: usize = 0x5000;
/// Control of vector 0, the misc/admin-queue vector (`VFINT_DYN_CTL01`).
pub const VFINT_DYN_CTL01: usize = 0x5C00;

/// ARQ base address, high 32 bits (`VF_ARQBAH1`).
pub const VF_ARQBAH1: usize = 0x6000;
/// ATQ head (`VF_ATQH1`), bits 0-9.
pub const VF_ATQH1: usize = 0x6400;
/// ATQ length and enable (`VF_ATQLEN1`).
pub const VF_ATQLEN1: usize = 0x6800;
/// ARQ base address, low 32 bits (`VF_ARQBAL1`).
pub const VF_ARQBAL1: usize = 0x6C00;
/// ARQ tail (`VF_ARQT1`).
pub const VF_ARQT1: usize = 0x7000;
/// ARQ head (`VF_ARQH1`), bits 0-9.
pub const VF_ARQH1: usize = 0x7400;
/// ATQ base address, high 32 bits (`VF_ATQBAH1`).
pub const VF_ATQBAH1: usize = 0x7800;
/// ATQ base address, low 32 bits (`VF_ATQBAL1`).
pub const VF_ATQBAL1: usize = 0x7C00;
/// ARQ length and enable (`VF_ARQLEN1`).
pub const VF_ARQLEN1: usize = 0x8000;
/// ATQ tail (`VF_ATQT1`).
pub const VF_ATQT1: usize = 0x8400;
/// VF reset status (`VFGEN_RSTAT`), bits 0-1.
pub const VFGEN_RSTAT: usize = 0x8800;

/// Head registers hold a 10-bit index.
pub const AQ_HEAD_MASK: u32 = 0x3FF;
/// `*LEN1`: ring length, bits 0-9.
pub const AQ_LEN_MASK: u32 = 0x3FF;
/// `*LEN1` bit 28: VF error.
pub const AQ_LEN_VFE: u32 = 1 << 28;
/// `*LEN1` bit 29: overflow (a message was dropped).
pub const AQ_LEN_OVFL: u32 = 1 << 29;
/// `*LEN1` bit 30: critical error.
pub const AQ_LEN_CRIT: u32 = 1 << 30;
/// `*LEN1` bit 31: queue enabled. A VF reset clears the ARQ's: on i40e the
/// hardware reset does it (the PF writes only `VPGEN_VFRTRIG`,
/// `i40e_trigger_vf_reset`); ice's PF writes `VF_MBX_ARQLEN` = 0 itself before
/// it triggers the reset (`ice_sriov_clear_mbx_register`). So `ARQLEN1 &
/// ENABLE == 0` means "a reset happened" (DPDK `iavf_is_reset`, Linux's reset
/// task), and on ice `VFGEN_RSTAT` may still read VFACTIVE for a while then.
pub const AQ_LEN_ENABLE: u32 = 1 << 31;

/// `VFGEN_RSTAT` state field mask.
pub const RSTAT_MASK: u32 = 0x3;

/// The VF reset state in `VFGEN_RSTAT` (virtchnl.h `enum virtchnl_vfr_states`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetState {
    /// 0: `VFR_INPROGRESS`, the PF is resetting the VF.
    InProgress,
    /// 1: `VFR_COMPLETED`, the hardware reset is done (Linux 6.12's i40e and
    /// ice never write it: they go from in progress to VFACTIVE).
    Completed,
    /// 2: `VFR_VFACTIVE`, the PF has set the VF up again.
    Active,
    /// 3: what a read during a hardware reset gives (0xDEADBEEF masked).
    Unreadable,
}

impl ResetState {
    /// Decode a raw `VFGEN_RSTAT` value.
    pub fn from_reg(v: u32) -> ResetState {
        match v & RSTAT_MASK {
            0 => ResetState::InProgress,
            1 => ResetState::Completed,
            2 => ResetState::Active,
            _ => ResetState::Unreadable,
        }
    }

    /// Whether the VF may (re)initialise its admin queue: COMPLETED or
    /// VFACTIVE, as DPDK's `iavf_check_vf_reset_done` and Linux's start-up
    /// check (`iavf_check_reset_complete`) accept. Linux's reset task waits for
    /// VFACTIVE only, after sleeping 10 ms first; the driver's recovery first
    /// lets a stale VFACTIVE go (`Vf::wait_reset_started`).
    pub fn is_done(self) -> bool {
        matches!(self, ResetState::Completed | ResetState::Active)
    }

    /// A phrase for messages.
    pub fn describe(self) -> &'static str {
        match self {
            ResetState::InProgress => "VFR_INPROGRESS (the PF is resetting the VF)",
            ResetState::Completed => "VFR_COMPLETED",
            ResetState::Active => "VFR_VFACTIVE",
            ResetState::Unreadable => {
                "unreadable (all ones: the device is in a hardware reset or gone)"
            }
        }
    }
}

/// `VFINT_ICR0_ENA1` / `VFINT_ICR01` bit 30: admin queue cause.
pub const ICR0_ADMINQ: u32 = 1 << 30;

/// `VFINT_DYN_CTL*` bit 0: interrupt enable.
pub const DYN_CTL_INTENA: u32 = 1 << 0;
/// `VFINT_DYN_CTL*` bit 1: clear the pending bit.
pub const DYN_CTL_CLEARPBA: u32 = 1 << 1;
/// `VFINT_DYN_CTL*` bits 3-4: ITR index (3 = no ITR update).
pub const DYN_CTL_ITR_INDX_SHIFT: u32 = 3;
/// `VFINT_DYN_CTL*` ITR index 3: leave the ITR intervals as they are.
pub const DYN_CTL_ITR_NONE: u32 = 3 << DYN_CTL_ITR_INDX_SHIFT;
/// `VFINT_DYN_CTL*` bits 5-16: interval in 2 µs units.
pub const DYN_CTL_INTERVAL_SHIFT: u32 = 5;
/// `VFINT_DYN_CTLN1` bit 30: write back descriptors on ITR expiry without an
/// interrupt.
pub const DYN_CTLN_WB_ON_ITR: u32 = 1 << 30;

/// Default ITR interval field: 16 x 2 µs = 32 µs (DPDK `iavf.h`
/// `IAVF_QUEUE_ITR_INTERVAL_DEFAULT` through `iavf_calc_itr_interval`).
pub const ITR_INTERVAL_DEFAULT: u32 = 16;
/// ITR interval field DPDK writes with WB_ON_ITR (2 x 2 µs).
pub const ITR_INTERVAL_WB_ON_ITR: u32 = 2;

/// Tail registers hold 13 bits.
pub const TAIL_MASK: u32 = 0x1FFF;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_match_the_register_map() {
        assert_eq!(qtx_tail(0), 0x0000);
        assert_eq!(qtx_tail(15), 0x3C);
        assert_eq!(qrx_tail(1), 0x2004);
        assert_eq!(vfint_dyn_ctln1(0), 0x3800);
        assert_eq!(VFGEN_RSTAT, 0x8800);
        assert_eq!(VF_ATQLEN1, 0x6800);
        assert_eq!(VF_ARQLEN1, 0x8000);
    }

    #[test]
    fn reset_states_decode() {
        assert_eq!(ResetState::from_reg(2), ResetState::Active);
        assert_eq!(ResetState::from_reg(1), ResetState::Completed);
        assert_eq!(ResetState::from_reg(0), ResetState::InProgress);
        assert_eq!(ResetState::from_reg(0xDEAD_BEEF), ResetState::Unreadable);
        assert!(ResetState::Active.is_done() && ResetState::Completed.is_done());
        assert!(!ResetState::InProgress.is_done() && !ResetState::Unreadable.is_done());
    }
}
