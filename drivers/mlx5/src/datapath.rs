//! The fast path: receive and transmit rings over the FFI layer's safe queue
//! owners ([`RecvQueue`], [`SendQueue`], [`CqPoller`]). What to do with each
//! completion, when to refill, how to send each frame, and the counters live
//! here; no `unsafe`.
//!
//! Per burst: one poll of the CQ (libmlx5's single-threaded extended poll
//! functions: no lock), at most one `post_recv` or `post_send` (each a
//! userspace doorbell write into the queue's own doorbell register: no system
//! call), no allocation, counters stored once. Two exceptions, both outside
//! steady traffic: a queue error puts the queue through a reset (a few kernel
//! commands) in the burst that sees it, as DPDK's mlx5 does; and the first
//! frame of a mempool the port has not seen registers that pool's memory
//! (DPDK's `mlx5_mr_mb2mr_bh`), once per pool.
#![deny(unsafe_code)]

use std::sync::{Arc, Mutex};

use nicpoll::mbuf::{MAX_BURST, Mbuf, MbufBatch};
use nicpoll::mempool::Mempool;
use nicpoll::port::counters::{Counter, QueueCountersRef};
use nicpoll::{RxQueue, TxQueue};

use crate::verbs::{
    Completion, Context, CqPoller, IBV_WC_LOC_LEN_ERR, IBV_WC_LOC_PROT_ERR, IBV_WC_LOC_QP_OP_ERR,
    IBV_WC_SUCCESS, IBV_WC_WR_FLUSH_ERR, Mr, RecvQueue, SendQueue, TxPlan,
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
/// Memory regions of other mempools a transmit queue remembers.
pub const TX_MR_CACHE: usize = 8;

/// Driver-specific counters of one queue, for xstats. Written by the queue's
/// lcore only (single writer, relaxed).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct QueueExtra {
    /// Completions with an error status.
    pub bad_status: Counter,
    /// Receive completions reporting more bytes than the buffer holds.
    pub bad_length: Counter,
    /// Frames longer than the receive buffer (IBV_WC_LOC_LEN_ERR): dropped,
    /// the buffer reposted, the queue left running.
    pub too_long: Counter,
    /// Completions naming no outstanding request.
    pub bad_wr_id: Counter,
    /// Queue resets after an error completion.
    pub recoveries: Counter,
    /// Resets that failed (the queue is then out of service).
    pub dead: Counter,
    /// post_recv / post_send calls the library refused (part of a chain).
    pub post_errors: Counter,
    /// Poll failures (the library reports the CQ in error).
    pub poll_errors: Counter,
    /// Frames sent inline.
    pub inline: Counter,
    /// Transmit frames dropped: shorter than 18 bytes, from memory that could
    /// not be registered, or refused by the library.
    pub unsendable: Counter,
    /// Transmit frames from another mempool, whose memory was registered on
    /// first sight (counted once per pool and queue).
    pub mr_registered: Counter,
}

/// Shared handle on a queue's extra counters.
pub type ExtraRef = Arc<QueueExtra>;

/// Whether an error completion means the receive queue must be reset: the
/// syndromes DPDK's mlx5 resets on (`mlx5_rx.c` mlx5_rx_err_handle: LOCAL_QP_OP,
/// LOCAL_PROT, WR_FLUSH, which libmlx5 reports as these statuses,
/// `providers/mlx5/cq.c`). Others (a frame longer than the buffer) leave the
/// queue running.
#[inline(always)]
fn rx_needs_reset(status: u32) -> bool {
    matches!(
        status,
        IBV_WC_LOC_QP_OP_ERR | IBV_WC_LOC_PROT_ERR | IBV_WC_WR_FLUSH_ERR
    )
}

/// One receive queue: a WQ in the port's indirection tables, its CQ, and the
/// mbufs posted to it.
pub struct RxRing {
    rq: RecvQueue,
    cq: CqPoller,
    pool: Mempool,
    comps: Box<[Completion]>,
    scratch: MbufBatch,
    /// Bytes the device may write into each buffer.
    room: u32,
    /// Longest frame delivered (`--max-pkt-len`); longer ones are counted in
    /// `too_long`.
    max_len: u32,
    port: u16,
    queue: u16,
    counters: QueueCountersRef,
    extra: ExtraRef,
    needs_recovery: bool,
    dead: bool,
    _alive: Arc<()>,
}

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
    /// Drop (and count in `too_long`) frames longer than `len` bytes, below
    /// what the MTU lets in (`--max-pkt-len`).
    pub fn set_max_len(&mut self, len: u32) {
        self.max_len = len;
    }

    /// A ring over `rq` (filled completely from `pool`) completing on `cq`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rq: RecvQueue,
        cq: CqPoller,
        pool: Mempool,
        port: u16,
        queue: u16,
        counters: QueueCountersRef,
        extra: ExtraRef,
        alive: Arc<()>,
    ) -> Result<RxRing, RingError> {
        let room = pool.data_room() as u32;
        let mut r = RxRing {
            rq,
            cq,
            pool,
            comps: vec![Completion::default(); MAX_BURST].into(),
            scratch: MbufBatch::with_burst(RX_POST_MAX),
            room,
            max_len: u32::MAX,
            port,
            queue,
            counters,
            extra,
            needs_recovery: false,
            dead: false,
            _alive: alive,
        };
        let size = r.rq.size();
        while r.rq.free_slots() > 0 {
            match r.post_some() {
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

    /// Allocate up to RX_POST_MAX buffers for the free slots and post them in
    /// one chain. None if the pool is short (nothing posted).
    fn post_some(&mut self) -> Option<Result<(), i32>> {
        let k = self.rq.free_slots().min(RX_POST_MAX);
        if !self.pool.alloc_bulk(&mut self.scratch, k) {
            return None;
        }
        let r = self.rq.post(&mut self.scratch);
        if r.is_err() {
            self.extra.post_errors.add(1);
        }
        Some(r)
    }

    /// Top the ring up when enough slots are free: at least a quarter of the
    /// ring (or RX_REFILL_MIN), in chains of up to RX_POST_MAX requests.
    #[inline]
    fn refill(&mut self) {
        let threshold = RX_REFILL_MIN.min(self.rq.size() / 4).max(1);
        while self.rq.free_slots() >= threshold {
            let k = self.rq.free_slots().min(RX_POST_MAX);
            match self.post_some() {
                Some(Ok(())) => {}
                Some(Err(_)) => return,
                None => {
                    self.counters.rx_nombuf.add(k as u64);
                    return;
                }
            }
        }
    }

    /// After a fatal error completion: reset the WQ (the device drops every
    /// posted buffer and stops writing them), make it ready, post fresh ones.
    #[cold]
    fn recover(&mut self) {
        self.needs_recovery = false;
        if self.rq.reset().is_err() || self.rq.ready().is_err() {
            self.dead = true;
            self.extra.dead.add(1);
            return;
        }
        self.extra.recoveries.add(1);
        while self.rq.free_slots() > 0 {
            let k = self.rq.free_slots().min(RX_POST_MAX);
            match self.post_some() {
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
        let want = out.spare().min(self.comps.len());
        let mut got = 0usize;
        if want > 0 {
            let n = match self.cq.poll(&mut self.comps[..want]) {
                Ok(n) => n,
                Err(_) => {
                    // A CQ error is not fixed by resetting the WQ; the device
                    // also reports it as an async event (logged).
                    self.extra.poll_errors.add(1);
                    0
                }
            };
            let (mut bytes, mut errors) = (0u64, 0u64);
            let (mut bad_status, mut bad_length, mut bad_wr_id, mut too_long) =
                (0u64, 0u64, 0u64, 0u64);
            for i in 0..n {
                let c = self.comps[i];
                let Some(mut m) = self.rq.complete(c.wr_id) else {
                    // Not a buffer we posted: never trust it.
                    bad_wr_id += 1;
                    errors += 1;
                    continue;
                };
                if c.status != IBV_WC_SUCCESS {
                    errors += 1;
                    if c.status == IBV_WC_LOC_LEN_ERR {
                        too_long += 1;
                    } else {
                        bad_status += 1;
                        if rx_needs_reset(c.status) {
                            self.needs_recovery = true;
                        }
                    }
                    drop(m);
                    continue;
                }
                if c.byte_len > self.room {
                    bad_length += 1;
                    errors += 1;
                    drop(m);
                    continue;
                }
                if c.byte_len > self.max_len {
                    too_long += 1;
                    errors += 1;
                    drop(m);
                    continue;
                }
                m.reset();
                m.set_len(c.byte_len as usize);
                m.set_port(self.port);
                m.set_queue(self.queue);
                bytes += c.byte_len as u64;
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
                self.extra.too_long.add(too_long);
            }
        }
        if self.needs_recovery {
            self.recover();
        }
        self.refill();
        got
    }
}

/// The memory regions of a port's mempools, registered the first time one of
/// their buffers is sent: shared by the port's transmit queues, consulted
/// only when a queue's own cache misses.
pub struct MrRegistry {
    ctx: Arc<Context>,
    mrs: Mutex<Vec<Arc<Mr>>>,
}

impl MrRegistry {
    /// A registry for `ctx` holding `primary` (the port's own pool).
    pub fn new(ctx: Arc<Context>, primary: Arc<Mr>) -> MrRegistry {
        MrRegistry {
            ctx,
            mrs: Mutex::new(vec![primary]),
        }
    }

    /// The region covering `m`'s pool, registering that pool now if needed.
    #[cold]
    fn region_of(&self, m: &Mbuf) -> Option<Arc<Mr>> {
        let addr = m.data().as_ptr() as usize;
        let mut mrs = self.mrs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mr) = mrs.iter().find(|r| r.covers(addr, m.len())) {
            return Some(mr.clone());
        }
        let pool = m.mempool()?;
        let mr = self.ctx.reg_mr(&pool).ok()?;
        mrs.push(mr.clone());
        Some(mr)
    }
}

/// A transmit queue's lkey lookup: the port's pool first (one range check),
/// then the other pools this queue has sent from.
struct LkeyCache {
    primary: (usize, usize, u32),
    extra: Vec<(usize, usize, u32, Arc<Mr>)>,
    next_victim: usize,
    registry: Arc<MrRegistry>,
}

impl LkeyCache {
    fn new(primary: &Mr, registry: Arc<MrRegistry>) -> LkeyCache {
        LkeyCache {
            primary: (primary.start, primary.start + primary.len, primary.lkey),
            extra: Vec::with_capacity(TX_MR_CACHE),
            next_victim: 0,
            registry,
        }
    }

    /// The lkey of the region holding `m`'s data; `None` if its memory cannot
    /// be registered. `registered` counts first sightings of a pool.
    #[inline(always)]
    fn lkey(&mut self, m: &Mbuf, registered: &mut u64) -> Option<u32> {
        let start = m.data().as_ptr() as usize;
        let end = start + m.len();
        let (s, e, k) = self.primary;
        if start >= s && end <= e {
            return Some(k);
        }
        for (s, e, k, _) in &self.extra {
            if start >= *s && end <= *e {
                return Some(*k);
            }
        }
        self.miss(m, registered)
    }

    #[cold]
    fn miss(&mut self, m: &Mbuf, registered: &mut u64) -> Option<u32> {
        let mr = self.registry.region_of(m)?;
        *registered += 1;
        let entry = (mr.start, mr.start + mr.len, mr.lkey, mr);
        let lkey = entry.2;
        if self.extra.len() < TX_MR_CACHE {
            self.extra.push(entry);
        } else {
            self.extra[self.next_victim] = entry;
            self.next_victim = (self.next_victim + 1) % TX_MR_CACHE;
        }
        Some(lkey)
    }
}

/// One transmit queue: a send-only RAW_PACKET QP in its own thread domain, its
/// CQ, and the mbufs the device may still be reading.
pub struct TxRing {
    sq: SendQueue,
    cq: CqPoller,
    lkeys: LkeyCache,
    plan: Box<[TxPlan]>,
    comps: Box<[Completion]>,
    counters: QueueCountersRef,
    extra: ExtraRef,
    needs_recovery: bool,
    dead: bool,
    _alive: Arc<()>,
}

impl TxRing {
    /// A ring over `sq` completing on `cq`; DMA'd frames must lie in the
    /// port's pool (`primary`) or a pool `registry` can register.
    pub fn new(
        sq: SendQueue,
        cq: CqPoller,
        primary: &Mr,
        registry: Arc<MrRegistry>,
        counters: QueueCountersRef,
        extra: ExtraRef,
        alive: Arc<()>,
    ) -> TxRing {
        TxRing {
            sq,
            cq,
            lkeys: LkeyCache::new(primary, registry),
            plan: vec![TxPlan::Drop; TX_POST_MAX].into(),
            comps: vec![Completion::default(); TX_POLL_MAX].into(),
            counters,
            extra,
            needs_recovery: false,
            dead: false,
            _alive: alive,
        }
    }

    /// Frames counted as sent that the device did not send: out of sent, into
    /// errors.
    #[inline]
    fn unsend(&self, frames: u64, bytes: u64) {
        if frames > 0 {
            self.counters.tx_packets.add(frames.wrapping_neg());
            self.counters.tx_bytes.add(bytes.wrapping_neg());
            self.counters.tx_errors.add(frames);
        }
    }

    /// Poll send completions and free what they cover.
    #[inline]
    fn reap(&mut self) {
        let n = match self.cq.poll(&mut self.comps) {
            Ok(n) => n,
            Err(_) => {
                self.extra.poll_errors.add(1);
                return;
            }
        };
        let (mut failed, mut failed_bytes, mut bad_wr_id) = (0u64, 0u64, 0u64);
        for i in 0..n {
            let c = self.comps[i];
            // A completion covers every earlier request of the send queue.
            let Some(covered) = self.sq.complete_through(c.wr_id) else {
                bad_wr_id += 1;
                continue;
            };
            if c.status != IBV_WC_SUCCESS {
                // The named request was not sent; the ones before it were.
                failed += 1;
                failed_bytes += covered.last_bytes;
                self.needs_recovery = true;
            }
        }
        if failed > 0 {
            self.unsend(failed, failed_bytes);
            self.extra.bad_status.add(failed);
        }
        if bad_wr_id > 0 {
            self.extra.bad_wr_id.add(bad_wr_id);
        }
    }

    /// After an error completion: reset the QP (the send queue is emptied, the
    /// device reads none of its buffers any more), count what was in flight as
    /// not sent, and take the QP back to RTS.
    #[cold]
    fn recover(&mut self) {
        self.needs_recovery = false;
        match self.sq.reset() {
            Ok(lost) => self.unsend(lost.frames, lost.bytes),
            Err(_) => {
                self.dead = true;
                self.extra.dead.add(1);
                return;
            }
        }
        if self.sq.make_ready().is_err() {
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
        if self.sq.outstanding() > 0 {
            self.reap();
        }
        if self.needs_recovery {
            self.recover();
            if self.dead {
                return 0;
            }
        }
        let n = pkts.len().min(self.sq.room()).min(TX_POST_MAX);
        if n == 0 {
            return 0;
        }
        let max_inline = self.sq.max_inline() as usize;
        let mut registered = 0u64;
        for (i, m) in pkts.as_slice()[..n].iter().enumerate() {
            let len = m.len();
            // A chain cannot go out (one SGE per send: tx_multi_seg is
            // false, and testpmd never routes one here): counted, freed.
            self.plan[i] = if len < TX_MIN_FRAME || m.is_chained() {
                TxPlan::Drop
            } else if len <= max_inline {
                TxPlan::Inline
            } else {
                match self.lkeys.lkey(m, &mut registered) {
                    Some(lkey) => TxPlan::Dma(lkey),
                    None => TxPlan::Drop,
                }
            };
        }
        let p = self.sq.post(pkts, &self.plan[..n]);
        if p.posted > 0 {
            self.counters.tx_packets.add(p.posted);
            self.counters.tx_bytes.add(p.bytes);
        }
        if p.inlined > 0 {
            self.extra.inline.add(p.inlined);
        }
        if p.dropped > 0 {
            self.counters.tx_errors.add(p.dropped);
            self.extra.unsendable.add(p.dropped);
        }
        if p.refused.is_some() {
            self.extra.post_errors.add(1);
        }
        if registered > 0 {
            self.extra.mr_registered.add(registered);
        }
        p.taken
    }
}
