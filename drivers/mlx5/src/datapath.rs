//! The fast path: receive rings over work queues, transmit rings over send QPs.
//! An unsafe module only for the three calls that hand buffers to the device
//! (`post_recv`, `post_send`) or read completions (`poll_cq`); everything else
//! is plain Rust over `Option<Mbuf>` slots.
//!
//! Per burst: one `poll_cq`, at most one `post_recv` or `post_send` (each is a
//! userspace doorbell write in libmlx5: no system call), no allocation, no
//! lock (run with MLX5_SINGLE_THREADED=1 so libmlx5 skips its own spinlocks),
//! counters stored once. Error completions put the queue through a reset
//! (RESET → ready, a few kernel commands) in the burst that sees them, as DPDK's
//! mlx5 does; that is the one exception, and it only happens after a device error.
#![allow(unsafe_code)]

use std::sync::Arc;

use nicpoll::mbuf::{MAX_BURST, Mbuf, MbufBatch};
use nicpoll::mempool::Mempool;
use nicpoll::port::counters::{Counter, QueueCountersRef};
use nicpoll::{RxQueue, TxQueue};

use crate::verbs::{
    Cq, IBV_SEND_INLINE, IBV_SEND_SIGNALED, IBV_WC_SUCCESS, IBV_WQS_RDY, IBV_WQS_RESET,
    IBV_WR_SEND, IbvRecvWr, IbvSendWr, IbvSge, IbvWc, Mr, Qp, Wq,
};

/// Receive requests per `post_recv` call.
pub const RX_POST_MAX: usize = 64;
/// Refill once this many buffers (or a quarter of the ring, if less) are free.
pub const RX_REFILL_MIN: usize = 16;
/// Send requests per `post_send` call (and most packets per tx_burst).
pub const TX_POST_MAX: usize = 256;
/// Completions polled per tx_burst.
pub const TX_POLL_MAX: usize = 64;
/// A send request is signalled (gets a completion) at least this often.
pub const TX_SIGNAL_EVERY: u64 = 32;
/// Shortest frame sent: libmlx5 copies the first 18 bytes (Ethernet header and
/// a VLAN tag) of every raw packet into the WQE on ConnectX-4/4 Lx and refuses
/// shorter ones (`copy_eth_inline_headers`).
pub const TX_MIN_FRAME: usize = 18;

/// Driver-specific counters of one queue, for xstats. Written by the queue's
/// lcore only (single writer, relaxed).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct QueueExtra {
    /// Completions with an error status.
    pub bad_status: Counter,
    /// Receive completions reporting more bytes than the buffer holds.
    pub bad_length: Counter,
    /// Completions naming no outstanding request.
    pub bad_wr_id: Counter,
    /// Queue resets after an error completion.
    pub recoveries: Counter,
    /// Resets that failed (the queue is then out of service).
    pub dead: Counter,
    /// post_recv / post_send calls the library refused (part of a chain).
    pub post_errors: Counter,
    /// poll_cq failures (CQ in error).
    pub poll_errors: Counter,
    /// Frames sent inline.
    pub inline: Counter,
    /// Transmit frames dropped: outside the registered mempool and too long to
    /// inline, shorter than 18 bytes, or refused by the library.
    pub unsendable: Counter,
}

/// Shared handle on a queue's extra counters.
pub type ExtraRef = Arc<QueueExtra>;

/// One receive queue: a WQ in the port's indirection tables, its CQ, and the
/// mbufs posted to it.
pub struct RxRing {
    wq: Arc<Wq>,
    cq: Arc<Cq>,
    lkey: u32,
    _mr: Arc<Mr>,
    pool: Mempool,
    /// Posted buffers by slot (the request's wr_id).
    slots: Box<[Option<Mbuf>]>,
    /// Stack of slots with no buffer posted.
    free: Box<[u32]>,
    nfree: usize,
    wrs: Box<[IbvRecvWr]>,
    sges: Box<[IbvSge]>,
    wc: Box<[IbvWc]>,
    scratch: MbufBatch,
    /// Bytes the device may write into each buffer.
    room: u32,
    port: u16,
    queue: u16,
    counters: QueueCountersRef,
    extra: ExtraRef,
    needs_recovery: bool,
    dead: bool,
    _alive: Arc<()>,
}

// SAFETY: the raw pointers inside `wrs` only ever point into this ring's own
// boxed `wrs`/`sges` arrays, which move with it; the verbs objects are Send.
unsafe impl Send for RxRing {}

/// Why a ring could not be built.
#[derive(Debug)]
pub enum RingError {
    /// The mempool could not fill the ring.
    NoBuffers {
        /// Buffers the ring needs.
        needed: usize,
        /// Buffers available.
        available: u64,
    },
    /// The library refused the first post.
    Post(i32),
}

impl RxRing {
    /// A ring of `size` buffers from `pool` (registered as `mr`) on `wq`/`cq`,
    /// filled completely.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        wq: Arc<Wq>,
        cq: Arc<Cq>,
        mr: Arc<Mr>,
        pool: Mempool,
        size: usize,
        port: u16,
        queue: u16,
        counters: QueueCountersRef,
        extra: ExtraRef,
        alive: Arc<()>,
    ) -> Result<RxRing, RingError> {
        let room = pool.data_room() as u32;
        let mut r = RxRing {
            wq,
            cq,
            lkey: mr.lkey,
            _mr: mr,
            pool,
            slots: (0..size).map(|_| None).collect(),
            free: (0..size as u32).rev().collect(),
            nfree: size,
            wrs: vec![IbvRecvWr::default(); RX_POST_MAX].into(),
            sges: vec![IbvSge::default(); RX_POST_MAX].into(),
            wc: vec![IbvWc::default(); MAX_BURST].into(),
            scratch: MbufBatch::with_burst(RX_POST_MAX),
            room,
            port,
            queue,
            counters,
            extra,
            needs_recovery: false,
            dead: false,
            _alive: alive,
        };
        while r.nfree > 0 {
            let k = r.nfree.min(RX_POST_MAX);
            match r.post(k) {
                None => {
                    return Err(RingError::NoBuffers {
                        needed: size,
                        available: r.pool.available(),
                    });
                }
                Some(Err(errno)) => return Err(RingError::Post(errno)),
                Some(Ok(())) => {}
            }
        }
        Ok(r)
    }

    /// Buffers posted now.
    pub fn posted(&self) -> usize {
        self.slots.len() - self.nfree
    }

    /// Allocate `k` buffers and post them in one chain. None if the pool is
    /// short (nothing posted); Some(Err(errno)) if the library refused part of
    /// the chain (the refused buffers are back in the pool).
    fn post(&mut self, k: usize) -> Option<Result<(), i32>> {
        debug_assert!(k <= self.nfree && k <= RX_POST_MAX);
        if !self.pool.alloc_bulk(&mut self.scratch, k) {
            return None;
        }
        let wrs = self.wrs.as_mut_ptr();
        let sges = self.sges.as_mut_ptr();
        for j in 0..k {
            let m = self.scratch.pop_front().expect("k buffers allocated");
            let slot = self.free[self.nfree - 1 - j] as usize;
            // A fresh mbuf's data starts at its default headroom, with the
            // pool's whole data room after it.
            self.sges[j] = IbvSge {
                addr: m.buf_addr() as u64 + m.default_headroom() as u64,
                length: self.room,
                lkey: self.lkey,
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
        // SAFETY: wrs[0..k] is a NULL-terminated chain whose SGEs point into
        // buffers of the registered pool; each buffer is held in `slots` (owned
        // by this ring, untouched) until its completion is polled or the WQ is
        // reset in `recover`/`drop`; this ring is the WQ's only poster.
        if let Err((errno, posted)) = unsafe { self.wq.post_recv(self.wrs.as_mut_ptr(), k) } {
            self.extra.post_errors.add(1);
            for j in posted..k {
                let slot = self.wrs[j].wr_id as usize;
                drop(self.slots[slot].take());
                self.free[self.nfree] = slot as u32;
                self.nfree += 1;
            }
            return Some(Err(errno));
        }
        Some(Ok(()))
    }

    /// Top the ring up when enough slots are free: at least a quarter of the
    /// ring (or RX_REFILL_MIN), in chains of up to RX_POST_MAX requests.
    #[inline]
    fn refill(&mut self) {
        let threshold = RX_REFILL_MIN.min(self.slots.len() / 4).max(1);
        while self.nfree >= threshold {
            let k = self.nfree.min(RX_POST_MAX);
            match self.post(k) {
                Some(Ok(())) => {}
                Some(Err(_)) => return,
                None => {
                    self.counters.rx_nombuf.add(k as u64);
                    return;
                }
            }
        }
    }

    /// After an error completion: reset the WQ (the device drops every posted
    /// buffer and stops writing them), give the buffers back, make it ready
    /// and post fresh ones.
    #[cold]
    fn recover(&mut self) {
        self.needs_recovery = false;
        if self.wq.modify(IBV_WQS_RESET).is_err() {
            self.dead = true;
            self.extra.dead.add(1);
            return;
        }
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.take().is_some() {
                self.free[self.nfree] = i as u32;
                self.nfree += 1;
            }
        }
        if self.wq.modify(IBV_WQS_RDY).is_err() {
            self.dead = true;
            self.extra.dead.add(1);
            return;
        }
        self.extra.recoveries.add(1);
        while self.nfree > 0 {
            let k = self.nfree.min(RX_POST_MAX);
            match self.post(k) {
                Some(Ok(())) => {}
                Some(Err(_)) => break,
                None => {
                    self.counters.rx_nombuf.add(k as u64);
                    break;
                }
            }
        }
    }
}

impl RxQueue for RxRing {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        if self.dead {
            return 0;
        }
        let want = out.spare().min(self.wc.len());
        let mut got = 0usize;
        if want > 0 {
            // SAFETY: this ring is the CQ's only poller.
            let n = unsafe { self.cq.poll(&mut self.wc[..want]) };
            if n < 0 {
                self.extra.poll_errors.add(1);
                self.needs_recovery = true;
            }
            let (mut bytes, mut errors) = (0u64, 0u64);
            let (mut bad_status, mut bad_length, mut bad_wr_id) = (0u64, 0u64, 0u64);
            for i in 0..n.max(0) as usize {
                let wc = self.wc[i];
                let slot = wc.wr_id as usize;
                let Some(mut m) = self.slots.get_mut(slot).and_then(Option::take) else {
                    // Not a buffer we posted: never trust it.
                    bad_wr_id += 1;
                    errors += 1;
                    continue;
                };
                self.free[self.nfree] = slot as u32;
                self.nfree += 1;
                if wc.status != IBV_WC_SUCCESS {
                    bad_status += 1;
                    errors += 1;
                    self.needs_recovery = true;
                    drop(m);
                    continue;
                }
                if wc.byte_len > self.room {
                    bad_length += 1;
                    errors += 1;
                    drop(m);
                    continue;
                }
                m.reset();
                m.set_len(wc.byte_len as usize);
                m.set_port(self.port);
                m.set_queue(self.queue);
                bytes += wc.byte_len as u64;
                if out.push(m).is_ok() {
                    got += 1;
                }
            }
            if got > 0 {
                self.counters.rx_packets.add(got as u64);
                self.counters.rx_bytes.add(bytes);
            }
            if errors > 0 {
                self.counters.rx_errors.add(errors);
                self.extra.bad_status.add(bad_status);
                self.extra.bad_length.add(bad_length);
                self.extra.bad_wr_id.add(bad_wr_id);
            }
        }
        if self.needs_recovery {
            self.recover();
        }
        self.refill();
        got
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // The device must stop writing the posted buffers before they go back
        // to the pool: reset the WQ. If that fails, leak them rather than let
        // the device write into buffers someone else owns.
        if let Err(e) = self.wq.modify(IBV_WQS_RESET) {
            log::error!(
                "mlx5 rx queue {}: cannot reset its work queue ({e}); leaking {} posted mbufs",
                self.queue,
                self.posted()
            );
            for s in self.slots.iter_mut() {
                if let Some(m) = s.take() {
                    let _ = m.into_raw();
                }
            }
        }
    }
}

const KIND_DMA: u8 = 0;
const KIND_INLINE: u8 = 1;
const KIND_DROP: u8 = 2;

/// One transmit queue: a send-only RAW_PACKET QP, its CQ, and the mbufs the
/// device may still be reading.
pub struct TxRing {
    qp: Arc<Qp>,
    cq: Arc<Cq>,
    mr: Arc<Mr>,
    /// In-flight buffers by request sequence number modulo the ring size.
    slots: Box<[Option<Mbuf>]>,
    /// Oldest outstanding request sequence number.
    head: u64,
    /// Next request sequence number (the wr_id it gets).
    tail: u64,
    wrs: Box<[IbvSendWr]>,
    sges: Box<[IbvSge]>,
    /// For each request of the burst being built, the packet index it sends.
    wr_pkt: Box<[u16]>,
    /// For each packet of the burst being built, how it goes.
    kind: Box<[u8]>,
    wc: Box<[IbvWc]>,
    free_batch: MbufBatch,
    max_inline: u32,
    signal_every: u64,
    counters: QueueCountersRef,
    extra: ExtraRef,
    needs_recovery: bool,
    dead: bool,
    _alive: Arc<()>,
}

// SAFETY: as for RxRing: the raw pointers in `wrs` only point into this ring's
// own boxed arrays.
unsafe impl Send for TxRing {}

impl TxRing {
    /// A ring of `size` requests on `qp`/`cq`; frames up to `max_inline` bytes
    /// are inlined; others must lie in `mr`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        qp: Arc<Qp>,
        cq: Arc<Cq>,
        mr: Arc<Mr>,
        size: usize,
        max_inline: u32,
        counters: QueueCountersRef,
        extra: ExtraRef,
        alive: Arc<()>,
    ) -> TxRing {
        TxRing {
            qp,
            cq,
            mr,
            slots: (0..size).map(|_| None).collect(),
            head: 0,
            tail: 0,
            wrs: vec![IbvSendWr::default(); TX_POST_MAX].into(),
            sges: vec![IbvSge::default(); TX_POST_MAX].into(),
            wr_pkt: vec![0u16; TX_POST_MAX].into(),
            kind: vec![0u8; TX_POST_MAX].into(),
            wc: vec![IbvWc::default(); TX_POLL_MAX].into(),
            free_batch: MbufBatch::new(),
            max_inline,
            signal_every: TX_SIGNAL_EVERY.min((size as u64 / 2).max(1)),
            counters,
            extra,
            needs_recovery: false,
            dead: false,
            _alive: alive,
        }
    }

    /// Requests posted and not yet known complete.
    pub fn outstanding(&self) -> usize {
        (self.tail - self.head) as usize
    }

    #[inline(always)]
    fn give_back(&mut self, m: Mbuf) {
        if let Err(m) = self.free_batch.push(m) {
            self.free_batch.clear();
            let _ = self.free_batch.push(m);
        }
    }

    /// Poll send completions and free what they cover.
    #[inline]
    fn reap(&mut self) {
        // SAFETY: this ring is the CQ's only poller.
        let n = unsafe { self.cq.poll(&mut self.wc) };
        if n < 0 {
            self.extra.poll_errors.add(1);
            self.needs_recovery = true;
            return;
        }
        let size = self.slots.len() as u64;
        let (mut errors, mut bad_wr_id) = (0u64, 0u64);
        for i in 0..n as usize {
            let wc = self.wc[i];
            let seq = wc.wr_id;
            if seq < self.head || seq >= self.tail {
                bad_wr_id += 1;
                continue;
            }
            if wc.status != IBV_WC_SUCCESS {
                errors += 1;
                self.needs_recovery = true;
            }
            // A completion covers every earlier request of the send queue.
            while self.head <= seq {
                if let Some(m) = self.slots[(self.head % size) as usize].take() {
                    self.give_back(m);
                }
                self.head += 1;
            }
        }
        self.free_batch.clear();
        if errors > 0 {
            self.counters.tx_errors.add(errors);
            self.extra.bad_status.add(errors);
        }
        if bad_wr_id > 0 {
            self.extra.bad_wr_id.add(bad_wr_id);
        }
    }

    /// After an error completion: reset the QP (the send queue is emptied, the
    /// device reads none of its buffers any more), count what was in flight as
    /// lost, and take the QP back to RTS.
    #[cold]
    fn recover(&mut self) {
        self.needs_recovery = false;
        if self.qp.reset().is_err() {
            self.dead = true;
            self.extra.dead.add(1);
            return;
        }
        let size = self.slots.len() as u64;
        let lost = self.tail - self.head;
        while self.head < self.tail {
            if let Some(m) = self.slots[(self.head % size) as usize].take() {
                self.give_back(m);
            }
            self.head += 1;
        }
        self.free_batch.clear();
        self.counters.tx_errors.add(lost);
        if self.qp.to_rts().is_err() {
            self.dead = true;
            self.extra.dead.add(1);
            return;
        }
        self.extra.recoveries.add(1);
    }
}

impl TxQueue for TxRing {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        if self.dead {
            return 0;
        }
        if self.outstanding() > 0 {
            self.reap();
        }
        if self.needs_recovery {
            self.recover();
            if self.dead {
                return 0;
            }
        }
        let size = self.slots.len();
        let n = pkts.len().min(size - self.outstanding()).min(TX_POST_MAX);
        if n == 0 {
            return 0;
        }
        let wrs = self.wrs.as_mut_ptr();
        let sges = self.sges.as_mut_ptr();
        let mut nwr = 0usize;
        for (i, m) in pkts.as_slice()[..n].iter().enumerate() {
            let len = m.len();
            let addr = m.data().as_ptr() as usize;
            let inline = len as u32 <= self.max_inline;
            if len < TX_MIN_FRAME || (!inline && !self.mr.covers(addr, len)) {
                self.kind[i] = KIND_DROP;
                continue;
            }
            self.kind[i] = if inline { KIND_INLINE } else { KIND_DMA };
            let seq = self.tail + nwr as u64;
            self.sges[nwr] = IbvSge {
                addr: addr as u64,
                length: len as u32,
                lkey: if inline { 0 } else { self.mr.lkey },
            };
            let mut flags = if inline { IBV_SEND_INLINE } else { 0 };
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
        let mut refused: Option<usize> = None;
        if nwr > 0 {
            // The last request of every burst is signalled, so nothing waits
            // for a completion that no later burst would bring.
            self.wrs[nwr - 1].next = std::ptr::null_mut();
            self.wrs[nwr - 1].send_flags |= IBV_SEND_SIGNALED;
            // SAFETY: wrs[0..nwr] is a NULL-terminated chain; every non-inline
            // SGE lies in the registered pool (checked above) and its mbuf is
            // moved into `slots` below, untouched until a completion at or
            // after it is polled or the QP is reset; inline data is copied
            // during the call; this ring is the QP's only poster.
            posted = match unsafe { self.qp.post_send(self.wrs.as_mut_ptr(), nwr) } {
                Ok(()) => nwr,
                Err((errno, k)) => {
                    self.extra.post_errors.add(1);
                    // A full send queue (ENOMEM) is retried by the caller; any
                    // other refusal would be refused again: drop that frame.
                    if errno != libc::ENOMEM && k < nwr {
                        refused = Some(k);
                    }
                    k
                }
            };
        }
        // Packets taken: all n if everything was posted, else those before the
        // first packet whose request was not posted (and that one if it was
        // refused for good).
        let taken = if posted == nwr {
            n
        } else if let Some(k) = refused {
            let i = self.wr_pkt[k] as usize;
            self.kind[i] = KIND_DROP;
            i + 1
        } else {
            self.wr_pkt[posted] as usize
        };
        let (mut bytes, mut dropped, mut inlined) = (0u64, 0u64, 0u64);
        let mut w = 0u64;
        for i in 0..taken {
            let m = pkts.pop_front().expect("taken <= n <= len");
            match self.kind[i] {
                KIND_DROP => {
                    dropped += 1;
                    self.give_back(m);
                }
                kind => {
                    bytes += m.len() as u64;
                    let slot = ((self.tail + w) % size as u64) as usize;
                    w += 1;
                    if kind == KIND_INLINE {
                        inlined += 1;
                        self.give_back(m);
                    } else {
                        self.slots[slot] = Some(m);
                    }
                }
            }
        }
        debug_assert_eq!(w, posted as u64);
        self.tail += posted as u64;
        self.free_batch.clear();
        if posted > 0 {
            self.counters.tx_packets.add(posted as u64);
            self.counters.tx_bytes.add(bytes);
        }
        if inlined > 0 {
            self.extra.inline.add(inlined);
        }
        if dropped > 0 {
            self.counters.tx_errors.add(dropped);
            self.extra.unsendable.add(dropped);
        }
        taken
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        // Stop the device reading in-flight buffers before they go back to the
        // pool; leak them if the QP cannot be reset.
        if let Err(e) = self.qp.reset() {
            log::error!(
                "mlx5 tx queue: cannot reset its queue pair ({e}); leaking {} in-flight mbufs",
                self.outstanding()
            );
            for s in self.slots.iter_mut() {
                if let Some(m) = s.take() {
                    let _ = m.into_raw();
                }
            }
        }
    }
}
