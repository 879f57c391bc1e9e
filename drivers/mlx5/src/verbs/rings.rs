//! Safe owners of what the device holds: the receive buffers posted to a work
//! queue and the transmit buffers a send queue may still be reading. Posting
//! hands the device a buffer address; these types keep every such buffer
//! (an owned `Mbuf`) until a completion says the device is done with it or a
//! reset stopped the queue, so nothing above this module needs `unsafe`.

use std::io;
use std::sync::Arc;

use nicpoll::mbuf::{Mbuf, MbufBatch};

use super::ffi::*;
use super::objects::{Mr, Qp, Wq};

/// Most requests posted in one call.
pub const POST_MAX: usize = 256;

/// The receive side of a work queue: the mbufs posted to it, by slot (the
/// slot is the request's wr_id).
pub struct RecvQueue {
    wq: Arc<Wq>,
    mr: Arc<Mr>,
    /// Most bytes the device may write into one buffer.
    room: u32,
    slots: Box<[Option<Mbuf>]>,
    /// Stack of slots with nothing posted.
    free: Box<[u32]>,
    nfree: usize,
    wrs: Box<[IbvRecvWr]>,
    sges: Box<[IbvSge]>,
}

// SAFETY: the raw pointers in `wrs` only ever point into this value's own boxed
// `wrs`/`sges` arrays, which move with it; the verbs objects are Send.
unsafe impl Send for RecvQueue {}

impl RecvQueue {
    /// A queue of `size` slots on `wq`, for buffers of the memory `mr`
    /// registers, each receiving at most `room` bytes.
    pub fn new(wq: Arc<Wq>, mr: Arc<Mr>, size: usize, room: u32) -> RecvQueue {
        RecvQueue {
            wq,
            mr,
            room,
            slots: (0..size).map(|_| None).collect(),
            free: (0..size as u32).rev().collect(),
            nfree: size,
            wrs: vec![IbvRecvWr::default(); POST_MAX].into(),
            sges: vec![IbvSge::default(); POST_MAX].into(),
        }
    }

    /// Slots.
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// Slots with no buffer posted.
    pub fn free_slots(&self) -> usize {
        self.nfree
    }

    /// Buffers posted now.
    pub fn posted(&self) -> usize {
        self.slots.len() - self.nfree
    }

    /// Post every mbuf of `batch` (at most `free_slots()` and [`POST_MAX`];
    /// the caller sizes the batch) in one chain, the frame to start at the
    /// mbuf's default headroom. On a refusal returns the errno; the refused
    /// buffers go back to their pool.
    pub fn post(&mut self, batch: &mut MbufBatch) -> Result<(), i32> {
        let k = batch.len().min(self.nfree).min(POST_MAX);
        if k == 0 {
            return Ok(());
        }
        let wrs = self.wrs.as_mut_ptr();
        let sges = self.sges.as_mut_ptr();
        for j in 0..k {
            let m = batch.pop_front().expect("k <= batch.len()");
            let slot = self.free[self.nfree - 1 - j] as usize;
            // The device writes at most the buffer's own room after its
            // default headroom, whatever `room` says.
            let own = (m.buf_len() - m.default_headroom()) as u32;
            self.sges[j] = IbvSge {
                addr: m.buf_addr() as u64 + m.default_headroom() as u64,
                length: self.room.min(own),
                lkey: self.mr.lkey,
            };
            self.wrs[j] = IbvRecvWr {
                wr_id: slot as u64,
                next: if j + 1 < k {
                    wrs.wrapping_add(j + 1)
                } else {
                    std::ptr::null_mut()
                },
                sg_list: sges.wrapping_add(j),
                num_sge: 1,
            };
            self.slots[slot] = Some(m);
        }
        self.nfree -= k;
        // SAFETY: wrs[0..k] is a NULL-terminated chain; each SGE covers a
        // buffer now owned by `slots` (the device may write it until its
        // completion is taken in `complete` or the WQ is reset); this value is
        // the WQ's only poster (created once per WQ, &mut self).
        if let Err((errno, posted)) = unsafe { self.wq.post_recv(self.wrs.as_mut_ptr(), k) } {
            for j in posted..k {
                let slot = self.wrs[j].wr_id as usize;
                drop(self.slots[slot].take());
                self.free[self.nfree] = slot as u32;
                self.nfree += 1;
            }
            return Err(errno);
        }
        Ok(())
    }

    /// The buffer of a completed request, if `wr_id` names one posted (a
    /// completion is the device's word that it is done with the buffer).
    #[inline(always)]
    pub fn complete(&mut self, wr_id: u64) -> Option<Mbuf> {
        let slot = usize::try_from(wr_id).ok()?;
        let m = self.slots.get_mut(slot)?.take()?;
        self.free[self.nfree] = slot as u32;
        self.nfree += 1;
        Some(m)
    }

    /// Move the WQ to RESET (the device drops every posted buffer and writes
    /// none of them any more) and give the buffers back to their pool.
    pub fn reset(&mut self) -> io::Result<()> {
        self.wq.modify(IBV_WQS_RESET)?;
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.take().is_some() {
                self.free[self.nfree] = i as u32;
                self.nfree += 1;
            }
        }
        Ok(())
    }

    /// Move the WQ back to ready after a reset.
    pub fn ready(&mut self) -> io::Result<()> {
        self.wq.modify(IBV_WQS_RDY)
    }
}

impl Drop for RecvQueue {
    fn drop(&mut self) {
        // The device must stop writing the posted buffers before they go back
        // to the pool. If the reset fails, leak them rather than let the device
        // write into buffers someone else owns.
        if let Err(e) = self.reset() {
            log::error!(
                "{}: cannot reset a receive work queue ({e}); leaking {} posted mbufs",
                self.wq.ctx.name,
                self.posted()
            );
            leak(&mut self.slots);
        }
    }
}

/// Give up the mbufs in `slots` without returning them to their pool: a queue
/// that could not be reset may still have the device reading or writing them.
fn leak(slots: &mut [Option<Mbuf>]) {
    for s in slots {
        if let Some(m) = s.take() {
            let _ = m.into_raw();
        }
    }
}

/// How one frame of a burst is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxPlan {
    /// Not sent (counted by the caller).
    Drop,
    /// Copied into the request (IBV_SEND_INLINE): the mbuf is free at once.
    Inline,
    /// Read by DMA from the mbuf, through the memory region of this lkey.
    Dma(u32),
}

/// What one [`SendQueue::post`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Posted {
    /// Frames taken from the front of the batch (sent, inlined or dropped).
    pub taken: usize,
    /// Requests posted.
    pub posted: u64,
    /// Bytes of the requests posted.
    pub bytes: u64,
    /// Of the posted, sent inline.
    pub inlined: u64,
    /// Frames taken but not sent: planned drops and a request the library
    /// refused for good.
    pub dropped: u64,
    /// The library refused a request (the errno).
    pub refused: Option<i32>,
}

/// What a completion or a reset covered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    /// Requests.
    pub frames: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of the last one (the one the completion names).
    pub last_bytes: u64,
}

/// A send-only QP's queue: the mbufs the device may still read, by request
/// sequence number (the wr_id) modulo the size.
pub struct SendQueue {
    qp: Arc<Qp>,
    slots: Box<[Option<Mbuf>]>,
    lens: Box<[u16]>,
    /// Oldest outstanding request.
    head: u64,
    /// Next request's sequence number.
    tail: u64,
    wrs: Box<[IbvSendWr]>,
    sges: Box<[IbvSge]>,
    /// For each request of the burst being built, the frame index it sends.
    wr_pkt: Box<[u16]>,
    free_batch: MbufBatch,
    max_inline: u32,
    signal_every: u64,
}

// SAFETY: as for RecvQueue: the raw pointers in `wrs` only point into this
// value's own boxed arrays.
unsafe impl Send for SendQueue {}

impl SendQueue {
    /// A queue of `size` requests on `qp`; frames up to `max_inline` bytes may
    /// go inline (never more than the QP granted); a completion is asked for
    /// at least every `signal_every` requests and on the last of each post.
    pub fn new(qp: Arc<Qp>, size: usize, max_inline: u32, signal_every: u64) -> SendQueue {
        let max_inline = max_inline.min(qp.cap.max_inline_data);
        SendQueue {
            qp,
            slots: (0..size).map(|_| None).collect(),
            lens: vec![0u16; size].into(),
            head: 0,
            tail: 0,
            wrs: vec![IbvSendWr::default(); POST_MAX].into(),
            sges: vec![IbvSge::default(); POST_MAX].into(),
            wr_pkt: vec![0u16; POST_MAX].into(),
            free_batch: MbufBatch::new(),
            max_inline,
            signal_every: signal_every.clamp(1, (size as u64 / 2).max(1)),
        }
    }

    /// Frames up to this length may be inlined.
    pub fn max_inline(&self) -> u32 {
        self.max_inline
    }

    /// Requests posted and not yet known complete.
    #[inline(always)]
    pub fn outstanding(&self) -> usize {
        (self.tail - self.head) as usize
    }

    /// Requests that can be posted now.
    #[inline(always)]
    pub fn room(&self) -> usize {
        self.slots.len() - self.outstanding()
    }

    #[inline(always)]
    fn give_back(&mut self, m: Mbuf) {
        if let Err(m) = self.free_batch.push(m) {
            self.free_batch.clear();
            let _ = self.free_batch.push(m);
        }
    }

    /// Post the first `plan.len()` frames of `pkts` (at most `room()` and
    /// [`POST_MAX`]) as `plan` says, and take from the front of `pkts` what was
    /// dealt with. A full send queue (ENOMEM) leaves the rest with the caller;
    /// any other refusal drops that one frame (it would be refused again).
    pub fn post(&mut self, pkts: &mut MbufBatch, plan: &[TxPlan]) -> Posted {
        let size = self.slots.len();
        let n = plan.len().min(pkts.len()).min(self.room()).min(POST_MAX);
        let mut out = Posted::default();
        if n == 0 {
            return out;
        }
        let wrs = self.wrs.as_mut_ptr();
        let sges = self.sges.as_mut_ptr();
        let mut nwr = 0usize;
        for (i, m) in pkts.as_slice()[..n].iter().enumerate() {
            let len = m.len();
            let (flags, lkey) = match plan[i] {
                TxPlan::Drop => continue,
                TxPlan::Inline if len as u32 <= self.max_inline => (IBV_SEND_INLINE, 0),
                TxPlan::Inline => continue,
                TxPlan::Dma(lkey) => (0, lkey),
            };
            let seq = self.tail + nwr as u64;
            self.sges[nwr] = IbvSge {
                addr: m.data().as_ptr() as u64,
                length: len as u32,
                lkey,
            };
            let mut flags = flags;
            if (seq + 1).is_multiple_of(self.signal_every) {
                flags |= IBV_SEND_SIGNALED;
            }
            self.wrs[nwr] = IbvSendWr {
                wr_id: seq,
                next: wrs.wrapping_add(nwr + 1),
                sg_list: sges.wrapping_add(nwr),
                num_sge: 1,
                opcode: IBV_WR_SEND,
                send_flags: flags,
                ..IbvSendWr::default()
            };
            self.wr_pkt[nwr] = i as u16;
            nwr += 1;
        }
        let mut posted = 0usize;
        let mut refused_at: Option<usize> = None;
        if nwr > 0 {
            // The last request of every post is signalled, so nothing waits
            // for a completion that no later burst would bring.
            self.wrs[nwr - 1].next = std::ptr::null_mut();
            self.wrs[nwr - 1].send_flags |= IBV_SEND_SIGNALED;
            // SAFETY: wrs[0..nwr] is a NULL-terminated chain; every non-inline
            // SGE points into an mbuf that is moved into `slots` below and kept
            // until a completion at or after it is taken or the QP is reset
            // (the lkey decides what the device may read: a wrong one is a
            // protection error, not a stray read); inline data is copied during
            // the call; this value is the QP's only poster.
            posted = match unsafe { self.qp.post_send(self.wrs.as_mut_ptr(), nwr) } {
                Ok(()) => nwr,
                Err((errno, k)) => {
                    out.refused = Some(errno);
                    if errno != libc::ENOMEM && k < nwr {
                        refused_at = Some(k);
                    }
                    k
                }
            };
        }
        // Frames taken: all n if everything was posted, else those before the
        // first frame whose request was not posted (and that one if it was
        // refused for good).
        let (taken, refused_pkt) = if posted == nwr {
            (n, None)
        } else if let Some(k) = refused_at {
            let i = self.wr_pkt[k] as usize;
            (i + 1, Some(i))
        } else {
            (self.wr_pkt[posted] as usize, None)
        };
        let mut w = 0usize;
        for i in 0..taken {
            let m = pkts.pop_front().expect("taken <= n <= len");
            let sent = w < posted && self.wr_pkt[w] as usize == i && refused_pkt != Some(i);
            if !sent {
                out.dropped += 1;
                self.give_back(m);
                continue;
            }
            let slot = ((self.tail + w as u64) % size as u64) as usize;
            let len = m.len();
            out.bytes += len as u64;
            self.lens[slot] = len.min(u16::MAX as usize) as u16;
            if self.wrs[w].send_flags & IBV_SEND_INLINE != 0 {
                out.inlined += 1;
                self.give_back(m);
            } else {
                self.slots[slot] = Some(m);
            }
            w += 1;
        }
        debug_assert_eq!(w, posted);
        self.tail += posted as u64;
        self.free_batch.clear();
        out.taken = taken;
        out.posted = posted as u64;
        out
    }

    /// A completion for request `seq` came: it and every earlier request are
    /// done; their buffers go back to their pools. `None` if `seq` is not
    /// outstanding (a bogus completion).
    pub fn complete_through(&mut self, seq: u64) -> Option<Covered> {
        if seq < self.head || seq >= self.tail {
            return None;
        }
        let size = self.slots.len() as u64;
        let mut c = Covered::default();
        while self.head <= seq {
            let slot = (self.head % size) as usize;
            if let Some(m) = self.slots[slot].take() {
                self.give_back(m);
            }
            c.frames += 1;
            c.last_bytes = self.lens[slot] as u64;
            c.bytes += c.last_bytes;
            self.head += 1;
        }
        self.free_batch.clear();
        Some(c)
    }

    /// Move the QP to RESET (its send queue is emptied, the device reads none
    /// of its buffers any more), give back what was in flight and report it.
    pub fn reset(&mut self) -> io::Result<Covered> {
        self.qp.reset()?;
        let lost = if self.tail > self.head {
            self.complete_through(self.tail - 1).unwrap_or_default()
        } else {
            Covered::default()
        };
        Ok(lost)
    }

    /// Take the QP from RESET back to ready to send.
    pub fn make_ready(&mut self) -> io::Result<()> {
        self.qp.to_rts()
    }
}

impl Drop for SendQueue {
    fn drop(&mut self) {
        // Stop the device reading in-flight buffers before they go back to the
        // pool; leak them if the QP cannot be reset.
        if let Err(e) = self.qp.reset() {
            log::error!(
                "{}: cannot reset a transmit queue pair ({e}); leaking {} in-flight mbufs",
                self.qp.ctx.name,
                self.outstanding()
            );
            leak(&mut self.slots);
        }
    }
}
