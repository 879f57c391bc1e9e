//! The crate's error type: each variant names the device, the operation (an
//! admin-queue step, a virtchnl opcode, a register) and what the value was, and
//! its message ends with the usual cause or fix.
#![deny(unsafe_code)]

use std::fmt;

use crate::virtchnl::{self, Op};

/// Result alias for this crate's internals.
pub type Result<T, E = IavfError> = std::result::Result<T, E>;

/// What bringing up or running an iavf VF can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IavfError {
    /// `VFGEN_RSTAT` never reported the VF ready.
    ResetTimeout {
        /// The device (PCI address or sim name).
        device: String,
        /// The last raw `VFGEN_RSTAT` value read.
        rstat: u32,
        /// How long we waited.
        waited_ms: u64,
        /// What we were waiting for.
        what: &'static str,
    },
    /// The admin queue could not be set up or used.
    AdminQueue {
        /// The device.
        device: String,
        /// The step (`ATQ setup`, `send`, ...).
        op: &'static str,
        /// What went wrong, with the usual cause.
        reason: String,
    },
    /// The PF answered a virtchnl request with an error status.
    Virtchnl {
        /// The device.
        device: String,
        /// The request's opcode.
        op: u32,
        /// `enum virtchnl_status_code` the PF returned.
        status: i32,
    },
    /// No answer to a virtchnl request.
    VirtchnlTimeout {
        /// The device.
        device: String,
        /// The request's opcode.
        op: u32,
        /// How long we waited.
        waited_ms: u64,
    },
    /// An answer we cannot use (too short, a version we do not speak, no VSI...).
    Protocol {
        /// The device.
        device: String,
        /// The request's opcode.
        op: u32,
        /// What is wrong with it.
        reason: String,
    },
    /// DMA memory for rings cannot be used as it is.
    Memory {
        /// The device.
        device: String,
        /// What is wrong and the fix.
        reason: String,
    },
    /// The VF is being reset by its PF; the operation may be retried once the
    /// driver has recovered (`poll_events`).
    Resetting {
        /// The device.
        device: String,
    },
}

impl IavfError {
    /// The device the error is about.
    pub fn device(&self) -> &str {
        match self {
            IavfError::ResetTimeout { device, .. }
            | IavfError::AdminQueue { device, .. }
            | IavfError::Virtchnl { device, .. }
            | IavfError::VirtchnlTimeout { device, .. }
            | IavfError::Protocol { device, .. }
            | IavfError::Memory { device, .. }
            | IavfError::Resetting { device } => device,
        }
    }

    /// As the core crate's error for a port operation.
    pub fn into_port_error(self, port: u16, op: &'static str) -> nicpoll::Error {
        nicpoll::Error::Port {
            port,
            name: self.device().to_string(),
            op,
            reason: Detail(&self).to_string(),
        }
    }
}

/// The message without the device prefix.
struct Detail<'a>(&'a IavfError);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IavfError::ResetTimeout {
                rstat,
                waited_ms,
                what,
                ..
            } => write!(
                f,
                "{what}: VFGEN_RSTAT (0x8800) read {rstat:#010x} = {} for {waited_ms} ms; \
                 the VF is not ready: check on the host that the PF driver (i40e or ice) is loaded and \
                 the PF is up (`ip link show <pf>`), that SR-IOV VFs exist (sriov_numvfs), and dmesg \
                 for a VF reset that did not finish",
                crate::regs::ResetState::from_reg(*rstat).describe()
            ),
            IavfError::AdminQueue { op, reason, .. } => {
                write!(f, "admin queue {op}: {reason}")
            }
            IavfError::Virtchnl { op, status, .. } => write!(
                f,
                "virtchnl {} ({op}) failed with status {} ({status}): {}",
                Op::name_of(*op),
                virtchnl::status_name(*status),
                virtchnl::usual_cause(*op, *status)
            ),
            IavfError::VirtchnlTimeout { op, waited_ms, .. } => write!(
                f,
                "virtchnl {} ({op}): no answer from the PF in {waited_ms} ms; the PF \
                 driver is unloaded or busy, or it is resetting this VF (check dmesg on the host)",
                Op::name_of(*op)
            ),
            IavfError::Protocol { op, reason, .. } => write!(
                f,
                "virtchnl {} ({op}): unusable answer from the PF: {reason}",
                Op::name_of(*op)
            ),
            IavfError::Memory { reason, .. } => {
                write!(f, "DMA memory: {reason}")
            }
            IavfError::Resetting { .. } => write!(
                f,
                "the PF is resetting the VF; the driver brings it up again by itself \
                 (retry once poll_events() reports it recovered)"
            ),
        }
    }
}

impl fmt::Display for IavfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "iavf {}: {}", self.device(), Detail(self))
    }
}

impl std::error::Error for IavfError {}

impl From<IavfError> for nicpoll::Error {
    fn from(e: IavfError) -> nicpoll::Error {
        nicpoll::Error::Pci {
            device: e.device().to_string(),
            reason: format!("iavf: {}", Detail(&e)),
        }
    }
}
