//! The admin queue (DPDK `base/iavf_adminq.c`, `base/iavf_adminq_cmd.h`):
//! a send queue (ATQ, VF → PF) and a receive queue (ARQ, PF → VF) of 32-byte
//! descriptors with 4 KiB message buffers, in DMA memory, driven through the
//! `VF_ATQ*` / `VF_ARQ*` registers. virtchnl rides on it: every message is an
//! indirect `send_msg_to_pf` command whose cookies carry the virtchnl opcode
//! and status.
#![deny(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll::memory::DmaRegion;

pub use crate::desc::{AQC_SEND_MSG_TO_PF, AQC_SEND_MSG_TO_VF, AqDesc, aq_flags as flags};
use crate::error::{IavfError, Result};
use crate::regs;
use crate::ring::{DescRing, DmaBytes};

/// Entries per queue (`IAVF_AQ_LEN` in DPDK and Linux).
pub const AQ_LEN: u16 = 32;
/// Bytes per message buffer (`IAVF_AQ_BUF_SZ`).
pub const AQ_BUF_SIZE: usize = 4096;
/// How long the PF's firmware may take to consume an ATQ descriptor
/// (`IAVF_ASQ_CMD_TIMEOUT`, 250 ms).
pub const ASQ_TIMEOUT: Duration = Duration::from_millis(250);

/// Name of an admin-queue error code (`enum iavf_admin_queue_err`).
pub fn aq_error_name(code: u16) -> &'static str {
    const NAMES: [&str; 23] = [
        "OK", "EPERM", "ENOENT", "ESRCH", "EINTR", "EIO", "ENXIO", "E2BIG", "EAGAIN", "ENOMEM",
        "EACCES", "EFAULT", "EBUSY", "EEXIST", "EINVAL", "ENOTTY", "ENOSPC", "ENOSYS", "ERANGE",
        "EFLUSHED", "BAD_ADDR", "EMODE", "EFBIG",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown")
}

/// What registers of a device in (or gone through) a hardware reset read.
pub fn is_unreadable(v: u32) -> bool {
    v == 0xDEAD_BEEF || v == u32::MAX
}

fn len_enabled(v: u32) -> bool {
    !is_unreadable(v) && v & regs::AQ_LEN_ENABLE != 0
}

/// A message the PF put on the ARQ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArqMessage {
    /// virtchnl opcode (17 for events).
    pub v_op: u32,
    /// virtchnl status.
    pub v_retval: i32,
    /// Admin-queue status if the descriptor had ERR set.
    pub aq_error: Option<u16>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Offsets of the admin queue's memory inside its region.
const ATQ_RING_OFF: usize = 0;
const ARQ_RING_OFF: usize = 4096;
const BUFS_OFF: usize = 8192;

/// Bytes of DMA memory one admin queue needs: two rings (4 KiB-aligned, as
/// DPDK's `IAVF_ADMINQ_DESC_ALIGNMENT`) and 2 × 32 buffers of 4 KiB.
pub const fn region_size() -> usize {
    BUFS_OFF + 2 * AQ_LEN as usize * AQ_BUF_SIZE
}

/// Poll `f` until it returns `Some`, spinning briefly then sleeping `every`,
/// for at most `timeout`.
pub(crate) fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        if spins < 64 {
            spins += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(every);
        }
    }
}

/// The admin queue client: rings, buffers and indices. Driven from the
/// control thread only (the port's control lock).
pub struct AdminQueue {
    device: String,
    atq: DescRing<AqDesc>,
    arq: DescRing<AqDesc>,
    atq_bufs: Vec<DmaBytes>,
    arq_bufs: Vec<DmaBytes>,
    atq_next: u16,
    arq_next: u16,
    send_timeout: Duration,
}

impl AdminQueue {
    /// Lay the queues out in `region` (at least [`region_size`] bytes).
    pub fn new(region: Arc<DmaRegion>, device: &str) -> Result<AdminQueue> {
        let mem_err = |reason: String| IavfError::Memory {
            device: device.to_string(),
            reason,
        };
        let atq = DescRing::new(region.clone(), ATQ_RING_OFF, AQ_LEN).map_err(mem_err)?;
        let arq = DescRing::new(region.clone(), ARQ_RING_OFF, AQ_LEN).map_err(mem_err)?;
        let buf = |i: usize| DmaBytes::new(region.clone(), BUFS_OFF + i * AQ_BUF_SIZE, AQ_BUF_SIZE);
        let atq_bufs = (0..AQ_LEN as usize)
            .map(buf)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(mem_err)?;
        let arq_bufs = (AQ_LEN as usize..2 * AQ_LEN as usize)
            .map(buf)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(mem_err)?;
        Ok(AdminQueue {
            device: device.to_string(),
            atq,
            arq,
            atq_bufs,
            arq_bufs,
            atq_next: 0,
            arq_next: 0,
            send_timeout: ASQ_TIMEOUT,
        })
    }

    /// Change how long [`send`](Self::send) waits for the firmware.
    pub fn set_send_timeout(&mut self, t: Duration) {
        self.send_timeout = t;
    }

    fn err(&self, op: &'static str, reason: String) -> IavfError {
        IavfError::AdminQueue {
            device: self.device.clone(),
            op,
            reason,
        }
    }

    /// Program both queues (DPDK
    /// `iavf_config_asq_regs` / `iavf_config_arq_regs`).
    pub fn init<B: Bar>(&mut self, bar: &B) -> Result<()> {
        self.shutdown(bar);
        // `iavf_config_asq_regs`, ATQ: head = tail = 0, length | ENABLE, base address;
        // read the base back to be sure the device took it.
        self.atq.clear();
        self.atq_next = 0;
        let atq = self.atq.iova();
        bar.write32(regs::VF_ATQH1, 0);
        bar.write32(regs::VF_ATQT1, 0);
        bar.write32(regs::VF_ATQLEN1, AQ_LEN as u32 | regs::AQ_LEN_ENABLE);
        bar.write32(regs::VF_ATQBAL1, atq as u32);
        bar.write32(regs::VF_ATQBAH1, (atq >> 32) as u32);
        let back = bar.read32(regs::VF_ATQBAL1);
        if back != atq as u32 {
            return Err(self.err(
                "ATQ setup",
                format!(
                    "VF_ATQBAL1 reads {back:#x} after writing {:#x}: the BAR is not the VF's, or \
                     the VF is in a reset",
                    atq as u32
                ),
            ));
        }
        // `iavf_config_arq_regs`, ARQ: arm every slot with its buffer first, then head =
        // tail = 0, length | ENABLE, base, and tail = entries - 1 hands all
        // buffers to the PF.
        for i in 0..AQ_LEN {
            let d = AqDesc::arq_buffer(self.arq_bufs[i as usize].iova(), AQ_BUF_SIZE as u16);
            self.arq.write(i, d);
        }
        self.arq_next = 0;
        let arq = self.arq.iova();
        bar.write32(regs::VF_ARQH1, 0);
        bar.write32(regs::VF_ARQT1, 0);
        bar.write32(regs::VF_ARQLEN1, AQ_LEN as u32 | regs::AQ_LEN_ENABLE);
        bar.write32(regs::VF_ARQBAL1, arq as u32);
        bar.write32(regs::VF_ARQBAH1, (arq >> 32) as u32);
        bar.write32(regs::VF_ARQT1, AQ_LEN as u32 - 1);
        let back = bar.read32(regs::VF_ARQBAL1);
        if back != arq as u32 {
            return Err(self.err(
                "ARQ setup",
                format!(
                    "VF_ARQBAL1 reads {back:#x} after writing {:#x}: the BAR is not the VF's, or \
                     the VF is in a reset",
                    arq as u32
                ),
            ));
        }
        Ok(())
    }

    /// Turn both queues off (`iavf_shutdown_adminq`: zero head, tail, length
    /// and base).
    pub fn shutdown<B: Bar>(&mut self, bar: &B) {
        for r in [
            regs::VF_ATQH1,
            regs::VF_ATQT1,
            regs::VF_ATQLEN1,
            regs::VF_ATQBAL1,
            regs::VF_ATQBAH1,
            regs::VF_ARQH1,
            regs::VF_ARQT1,
            regs::VF_ARQLEN1,
            regs::VF_ARQBAL1,
            regs::VF_ARQBAH1,
        ] {
            bar.write32(r, 0);
        }
    }

    /// Whether the PF left our ARQ enabled; a cleared enable bit means the PF
    /// reset the VF (DPDK `iavf_is_reset`). A register that reads as a
    /// device in reset does (0xDEADBEEF, all ones) counts as disabled.
    pub fn arq_enabled<B: Bar>(bar: &B) -> bool {
        len_enabled(bar.read32(regs::VF_ARQLEN1))
    }

    /// Whether the ATQ is enabled.
    pub fn atq_enabled<B: Bar>(bar: &B) -> bool {
        len_enabled(bar.read32(regs::VF_ATQLEN1))
    }

    /// Post a virtchnl message and wait until the firmware consumed it (DPDK
    /// `iavf_aq_send_msg_to_pf` / `iavf_asq_send_command`). The PF's answer arrives on the ARQ.
    pub fn send<B: Bar>(&mut self, bar: &B, v_op: u32, payload: &[u8]) -> Result<()> {
        if payload.len() > AQ_BUF_SIZE {
            return Err(self.err(
                "send",
                format!(
                    "a {}-byte message does not fit the {AQ_BUF_SIZE}-byte buffer",
                    payload.len()
                ),
            ));
        }
        if !Self::atq_enabled(bar) {
            return Err(IavfError::Resetting {
                device: self.device.clone(),
            });
        }
        let i = self.atq_next;
        let buf = if payload.is_empty() {
            None
        } else {
            let b = &mut self.atq_bufs[i as usize];
            b.write(payload);
            Some((b.iova(), payload.len() as u16))
        };
        self.atq.write(i, AqDesc::send_msg_to_pf(v_op, buf));
        self.atq_next = (i + 1) % AQ_LEN;
        // The doorbell orders itself after the descriptor and buffer writes.
        bar.write32(regs::VF_ATQT1, self.atq_next as u32);
        let next = self.atq_next as u32;
        // Completion: the head catches up with what we posted (Intel
        // recommends the head over the DD bit).
        let done = poll_until(self.send_timeout, Duration::from_micros(50), || {
            (bar.read32(regs::VF_ATQH1) & regs::AQ_HEAD_MASK == next).then_some(())
        });
        if done.is_none() {
            if !Self::atq_enabled(bar) || !Self::arq_enabled(bar) {
                return Err(IavfError::Resetting {
                    device: self.device.clone(),
                });
            }
            return Err(self.err(
                "send",
                format!(
                    "the firmware did not consume virtchnl {} in {} ms (VF_ATQH1 = {:#x}, \
                     VF_ATQLEN1 = {:#x}): the PF driver is not running or the device hung",
                    crate::virtchnl::Op::name_of(v_op),
                    self.send_timeout.as_millis(),
                    bar.read32(regs::VF_ATQH1),
                    bar.read32(regs::VF_ATQLEN1)
                ),
            ));
        }
        let d = self.atq.read(i);
        // The status is the low byte; the firmware may leave an internal code
        // in the high one (Linux's and DPDK's iavf_asq_send_command: "strip off
        // FW internal code").
        let status = d.retval() & 0xFF;
        if d.flags() & flags::ERR != 0 || status != 0 {
            return Err(self.err(
                "send",
                format!(
                    "the firmware refused virtchnl {}: admin queue error {status} ({}, retval \
                     {:#06x}); the PF may be resetting or out of resources",
                    crate::virtchnl::Op::name_of(v_op),
                    aq_error_name(status),
                    d.retval()
                ),
            ));
        }
        Ok(())
    }

    /// Take the next message off the ARQ, if any, and give its slot back
    /// (DPDK `iavf_clean_arq_element`).
    pub fn receive<B: Bar>(&mut self, bar: &B) -> Option<ArqMessage> {
        let head = bar.read32(regs::VF_ARQH1) & regs::AQ_HEAD_MASK;
        if head == self.arq_next as u32 || head >= AQ_LEN as u32 {
            return None;
        }
        let i = self.arq_next;
        let d = self.arq.read(i);
        let len = (d.datalen() as usize).min(AQ_BUF_SIZE);
        let mut payload = vec![0u8; len];
        self.arq_bufs[i as usize].read(&mut payload);
        let aq_error = (d.flags() & flags::ERR != 0).then_some(d.retval());
        // Re-arm the slot and hand it back: the tail is the index just cleaned.
        let buf = self.arq_bufs[i as usize].iova();
        self.arq
            .write(i, AqDesc::arq_buffer(buf, AQ_BUF_SIZE as u16));
        bar.write32(regs::VF_ARQT1, i as u32);
        self.arq_next = (i + 1) % AQ_LEN;
        Some(ArqMessage {
            v_op: d.v_opcode(),
            v_retval: d.v_retval(),
            aq_error,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_and_region_size() {
        assert_eq!(aq_error_name(12), "EBUSY");
        assert_eq!(aq_error_name(99), "unknown");
        assert_eq!(region_size(), 8192 + 64 * 4096);
    }
}
