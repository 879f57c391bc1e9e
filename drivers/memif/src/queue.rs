//! The data path: receive and transmit queues over memif rings.
//!
//! A queue is handed out by `start` and lives across connections: the
//! control thread publishes the ring of each new connection (and `None` when
//! it ends) in the queue's [`QueueLink`], and the queue picks it up at its next
//! burst after one acquire load of the link's generation. Nothing else on the
//! per-packet path synchronizes with the control plane.
//!
//! Who moves which index (DPDK rte_eth_memif.c v22.11, eth_memif_rx/tx,
//! 291-434 and 563-695):
//!
//! | ring | producer | consumer |
//! |---|---|---|
//! | client-to-server | client writes descriptors, then `head` (release) | server reads up to `head` (acquire), then gives the slots back with `tail` (release) |
//! | server-to-client | server fills the slots the client posted, then `tail` (release) | client reads up to `tail` (acquire), re-posts empty slots, then `head` (release) |
//!
//! Everything read from the ring is checked before use: an index more than a
//! ring ahead, a descriptor naming a region the peer never sent, or a buffer
//! outside its region is a counted drop, never an access outside a mapping.
#![deny(unsafe_code)]

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use nicpoll::mbuf::{MAX_BURST, Mbuf, MbufBatch, RxHeaderTemplate};
use nicpoll::mempool::Mempool;
use nicpoll::port::counters::{Counter, QueueCountersRef};
use nicpoll::{RxQueue, TxQueue};

use crate::sys::{self, DESC_FLAG_NEXT, Desc, RING_FLAG_MASK_INT, Region, RingView};

/// Driver counters of one queue beyond the core's.
#[derive(Debug, Default)]
pub struct MemifQueueStats {
    /// Descriptors the peer filled wrongly (unknown region, buffer outside
    /// its region, frame longer than an mbuf), dropped.
    pub bad_desc: Counter,
    /// Chained frames (`MEMIF_DESC_FLAG_NEXT`) dropped on receive: nicpoll
    /// has no multi-segment mbufs yet.
    pub chained_dropped: Counter,
    /// Frames sent over several descriptors (longer than a buffer).
    pub chained_sent: Counter,
    /// Bursts that found the peer's ring index more than a ring away.
    pub bad_index: Counter,
    /// Interrupts (eventfd writes) sent because the peer asked for them.
    pub interrupts: Counter,
}

/// Shared handle on a queue's driver counters.
pub type MemifQueueStatsRef = Arc<CachePadded<MemifQueueStats>>;

/// The life of one connection, so that mbufs a queue held on its rings are
/// reused only once the peer can no longer touch them.
#[derive(Debug, Default)]
pub struct ConnLife {
    ended: Mutex<Option<Instant>>,
}

impl ConnLife {
    /// Mark the connection as over (its socket closed, its rings abandoned).
    pub fn end(&self) {
        let mut e = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        e.get_or_insert_with(Instant::now);
    }

    /// When the connection ended, if it has.
    pub fn ended_at(&self) -> Option<Instant> {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Mbufs whose buffers a peer may still write (zero-copy): they wait here
/// until their connection has been over for a grace period.
#[derive(Debug, Default)]
pub struct Quarantine {
    held: Mutex<Vec<(Arc<ConnLife>, Vec<Mbuf>)>>,
}

impl Quarantine {
    fn put(&self, life: &Arc<ConnLife>, mbufs: Vec<Mbuf>) {
        if !mbufs.is_empty() {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((life.clone(), mbufs));
        }
    }

    /// Free what has waited `grace` since its connection ended; with `force`,
    /// everything (the port is going away and every connection is closed).
    pub fn release(&self, grace: std::time::Duration, force: bool) -> usize {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut freed = 0;
        held.retain(|(life, mbufs)| {
            let ripe = force || life.ended_at().is_some_and(|t| t.elapsed() >= grace);
            if ripe {
                freed += mbufs.len();
            }
            !ripe
        });
        freed
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mbufs waiting.
    pub fn len(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, v)| v.len())
            .sum()
    }
}

/// Zero-copy: the mempool region the client shares as a memif region.
#[derive(Clone, Debug)]
pub struct ZeroCopy {
    /// The region index it was sent as.
    pub index: u16,
    /// The pool's memory.
    pub region: Region,
    /// The pool whose mbufs the receive ring posts.
    pub pool: Mempool,
}

/// One ring of one connection, as a queue uses it.
#[derive(Debug)]
pub struct RingAttach {
    /// The ring.
    pub ring: RingView,
    /// Every region of the connection, by index.
    pub regions: Arc<[Region]>,
    /// Client in copy mode: the ring's own buffers in region 0, as (offset of
    /// slot 0's buffer, buffer size); slot `s` uses `offset + s * size`.
    pub own_buffers: Option<(u32, u32)>,
    /// Client in zero-copy mode.
    pub zero_copy: Option<ZeroCopy>,
    /// The eventfd to signal the peer through when it asks for interrupts.
    pub interrupt: Option<Arc<OwnedFd>>,
    /// The connection's life.
    pub life: Arc<ConnLife>,
}

/// Where the control plane hands a queue its current ring.
#[derive(Debug, Default)]
pub struct QueueLink {
    generation: CachePadded<AtomicU64>,
    current: Mutex<Option<Arc<RingAttach>>>,
    /// Where retired zero-copy mbufs wait.
    pub quarantine: Arc<Quarantine>,
}

impl QueueLink {
    /// A link with nothing attached.
    pub fn new(quarantine: Arc<Quarantine>) -> QueueLink {
        QueueLink {
            generation: CachePadded::new(AtomicU64::new(0)),
            current: Mutex::new(None),
            quarantine,
        }
    }

    /// Give the queue a new ring (or none); it switches at its next burst.
    pub fn publish(&self, ring: Option<Arc<RingAttach>>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = ring;
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> Option<Arc<RingAttach>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether a ring is attached now.
    pub fn is_attached(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

/// Which side of the connection a queue is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Server: receives on client-to-server rings, sends on server-to-client ones.
    Server,
    /// Client: the other way round; owns the regions.
    Client,
}

struct RxRing {
    att: Arc<RingAttach>,
    /// Next slot to consume.
    cur: u16,
    /// Client: next slot to post (the ring's head, which only we write).
    head: u16,
    /// The previous burst stopped inside a chained frame being dropped.
    in_chain: bool,
    /// Zero-copy: the mbuf posted in each slot.
    posted: Vec<Option<Mbuf>>,
}

/// A receive queue.
pub struct MemifRx {
    link: Arc<QueueLink>,
    seen: u64,
    st: Option<RxRing>,
    side: Side,
    port: u16,
    queue: u16,
    pool: Mempool,
    room: u32,
    counters: QueueCountersRef,
    stats: MemifQueueStatsRef,
    tpl: RxHeaderTemplate,
    refill: MbufBatch,
    /// The port shares its pool (zero-copy client).
    pub zero_copy: bool,
}

impl MemifRx {
    /// A receive queue on `side`, allocating from `pool`.
    pub fn new(
        link: Arc<QueueLink>,
        side: Side,
        port: u16,
        queue: u16,
        pool: Mempool,
        counters: QueueCountersRef,
        stats: MemifQueueStatsRef,
    ) -> MemifRx {
        let room = pool.data_room().min(u16::MAX as usize) as u32;
        MemifRx {
            link,
            seen: 0,
            st: None,
            side,
            port,
            queue,
            pool,
            room,
            counters,
            stats,
            tpl: RxHeaderTemplate::new(port, queue),
            refill: MbufBatch::with_burst(MAX_BURST),
            zero_copy: false,
        }
    }

    /// Drop (and count in the errors) frames longer than `limit` bytes; the
    /// default is the pool's data room, the most one mbuf holds.
    pub fn set_frame_limit(&mut self, limit: u32) {
        self.room = limit.min(self.pool.data_room() as u32);
    }

    #[cold]
    fn switch(&mut self, generation: u64) {
        self.seen = generation;
        let next = self.link.current();
        if let (Some(st), Some(n)) = (&self.st, &next)
            && Arc::ptr_eq(&st.att, n)
        {
            return;
        }
        self.retire();
        self.st = next.map(|att| {
            let posted = if att.zero_copy.is_some() {
                (0..att.ring.size()).map(|_| None).collect()
            } else {
                Vec::new()
            };
            // A client's copy-mode ring arrives with every slot posted
            // (the control thread did it): start from the ring's head.
            let head = if self.side == Side::Client && att.zero_copy.is_none() {
                att.ring.head(Ordering::Acquire)
            } else {
                0
            };
            RxRing {
                att,
                cur: 0,
                head,
                in_chain: false,
                posted,
            }
        });
    }

    fn retire(&mut self) {
        if let Some(st) = self.st.take() {
            let held: Vec<Mbuf> = st.posted.into_iter().flatten().collect();
            self.link.quarantine.put(&st.att.life, held);
        }
    }

    /// Client: post every free slot of a copy-mode ring again (its own
    /// buffer, full size) and publish them with one head store.
    #[inline(always)]
    fn repost_copy(st: &mut RxRing) {
        let Some((base, bsize)) = st.att.own_buffers else {
            return;
        };
        let ring = &st.att.ring;
        let target = st.cur.wrapping_add(ring.size());
        if st.head == target {
            return;
        }
        let mask = ring.mask();
        let mut h = st.head;
        while h != target {
            ring.set_desc(
                h,
                Desc {
                    flags: 0,
                    region: 0,
                    length: bsize,
                    offset: base + (h & mask) as u32 * bsize,
                },
            );
            h = h.wrapping_add(1);
        }
        st.head = h;
        ring.set_head(h, Ordering::Release);
    }

    /// Client, zero-copy: post fresh mbufs of the pool in free slots, in bulk
    /// once enough are free, and publish them with one head store.
    #[inline(always)]
    fn repost_zero_copy(&mut self) -> u64 {
        let Some(st) = self.st.as_mut() else { return 0 };
        let Some(zc) = &st.att.zero_copy else {
            return 0;
        };
        let ring = &st.att.ring;
        let free = ring.size().wrapping_sub(st.head.wrapping_sub(st.cur));
        let threshold = (ring.size() / 2).clamp(1, 32);
        if free < threshold {
            return 0;
        }
        let n = (free as usize).min(MAX_BURST);
        if !self
            .pool
            .alloc_bulk_rx(&mut self.refill, n, 0, self.port, self.queue)
        {
            return n as u64;
        }
        let mask = ring.mask();
        while let Some(m) = self.refill.pop_front() {
            let room = m.capacity();
            let addr = m.buf_addr() as usize + m.headroom();
            let Some(off) = zc.region.offset_of(addr, room) else {
                // An mbuf of the pool always lies in the pool's region.
                drop(m);
                continue;
            };
            ring.set_desc(
                st.head,
                Desc {
                    flags: 0,
                    region: zc.index,
                    length: room as u32,
                    offset: off,
                },
            );
            st.posted[(st.head & mask) as usize] = Some(m);
            st.head = st.head.wrapping_add(1);
        }
        ring.set_head(st.head, Ordering::Release);
        0
    }

    /// Copy mode: one pass, allocating a burst of mbufs up front and copying
    /// each published frame that passes the checks into the next of them.
    #[inline(always)]
    fn rx_copy(&mut self, out: &mut MbufBatch) -> usize {
        let side = self.side;
        let Some(st) = self.st.as_mut() else { return 0 };
        let ring = &st.att.ring;
        let (prod, limit) = match side {
            Side::Server => (ring.head(Ordering::Acquire), ring.size()),
            Side::Client => (ring.tail(Ordering::Acquire), st.head.wrapping_sub(st.cur)),
        };
        let avail = prod.wrapping_sub(st.cur);
        if avail == 0 {
            if side == Side::Client {
                Self::repost_copy(st);
            }
            return 0;
        }
        if avail > limit {
            self.stats.bad_index.add(1);
            return 0;
        }
        let n = (avail as usize).min(out.spare());
        if n == 0 {
            return 0;
        }
        let src = sys::RxSource {
            ring,
            regions: &st.att.regions,
            cur: st.cur,
            avail,
            room: self.room,
        };
        let Some(r) = sys::rx_copy(&self.pool, out, n, &self.tpl, &src, st.in_chain) else {
            // Nothing consumed: the frames wait in the ring.
            self.counters.rx_nombuf.add(n as u64);
            return 0;
        };
        if r.got > 0 {
            self.counters.rx_packets.add(r.got as u64);
            self.counters.rx_bytes.add(r.bytes);
        }
        if r.bad + r.chained > 0 {
            self.counters.rx_errors.add(r.bad + r.chained);
            self.stats.bad_desc.add(r.bad);
            self.stats.chained_dropped.add(r.chained);
        }
        st.in_chain = r.in_chain;
        st.cur = st.cur.wrapping_add(r.consumed);
        match side {
            Side::Server => ring.set_tail(st.cur, Ordering::Release),
            Side::Client => Self::repost_copy(st),
        }
        r.got
    }

    /// Zero-copy client: the frames are already in the mbufs we posted.
    #[inline(always)]
    fn rx_zero_copy(&mut self, out: &mut MbufBatch) -> usize {
        let Some(st) = self.st.as_mut() else { return 0 };
        let ring = &st.att.ring;
        let prod = ring.tail(Ordering::Acquire);
        let avail = prod.wrapping_sub(st.cur);
        let mut got = 0usize;
        if avail > st.head.wrapping_sub(st.cur) {
            self.stats.bad_index.add(1);
        } else if avail > 0 {
            let mask = ring.mask();
            let spare = out.spare();
            let (mut i, mut bytes, mut bad, mut chained) = (0u16, 0u64, 0u64, 0u64);
            let mut in_chain = st.in_chain;
            while i < avail && got < spare {
                let slot = st.cur.wrapping_add(i);
                let d = ring.desc(slot);
                i += 1;
                let Some(mut m) = st.posted[(slot & mask) as usize].take() else {
                    bad += 1;
                    continue;
                };
                if in_chain {
                    in_chain = d.flags & DESC_FLAG_NEXT != 0;
                    continue;
                }
                if d.flags & DESC_FLAG_NEXT != 0 {
                    chained += 1;
                    in_chain = true;
                    continue;
                }
                if d.length > self.room || !m.set_len(d.length as usize) {
                    bad += 1;
                    continue;
                }
                bytes += d.length as u64;
                // got < spare, so the push cannot fail.
                let _ = out.push(m);
                got += 1;
            }
            st.in_chain = in_chain;
            st.cur = st.cur.wrapping_add(i);
            if got > 0 {
                self.counters.rx_packets.add(got as u64);
                self.counters.rx_bytes.add(bytes);
            }
            if bad + chained > 0 {
                self.counters.rx_errors.add(bad + chained);
                self.stats.bad_desc.add(bad);
                self.stats.chained_dropped.add(chained);
            }
        }
        let short = self.repost_zero_copy();
        if short > 0 {
            self.counters.rx_nombuf.add(short);
        }
        got
    }
}

impl RxQueue for MemifRx {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let g = self.link.generation.load(Ordering::Acquire);
        if g != self.seen {
            self.switch(g);
        }
        match &self.st {
            None => 0,
            Some(st) if st.att.zero_copy.is_some() => self.rx_zero_copy(out),
            Some(_) => self.rx_copy(out),
        }
    }

    fn burst_mode(&self) -> Option<&'static str> {
        Some(if self.zero_copy { "zero-copy" } else { "copy" })
    }
}

impl Drop for MemifRx {
    fn drop(&mut self) {
        self.retire();
    }
}

struct TxRing {
    att: Arc<RingAttach>,
    /// Next slot to fill (client: the head we own; server: the tail we own).
    next: u16,
    /// Zero-copy client: the slot up to which the server gave buffers back.
    done: u16,
    /// Zero-copy: the mbuf in flight in each slot.
    in_flight: Vec<Option<Mbuf>>,
}

/// A transmit queue.
pub struct MemifTx {
    link: Arc<QueueLink>,
    seen: u64,
    st: Option<TxRing>,
    side: Side,
    counters: QueueCountersRef,
    stats: MemifQueueStatsRef,
    /// The port shares its pool (zero-copy client).
    pub zero_copy: bool,
}

impl MemifTx {
    /// A transmit queue on `side`.
    pub fn new(
        link: Arc<QueueLink>,
        side: Side,
        counters: QueueCountersRef,
        stats: MemifQueueStatsRef,
    ) -> MemifTx {
        MemifTx {
            link,
            seen: 0,
            st: None,
            side,
            counters,
            stats,
            zero_copy: false,
        }
    }

    #[cold]
    fn switch(&mut self, generation: u64) {
        self.seen = generation;
        let next = self.link.current();
        if let (Some(st), Some(n)) = (&self.st, &next)
            && Arc::ptr_eq(&st.att, n)
        {
            return;
        }
        self.retire();
        self.st = next.map(|att| {
            let in_flight = if att.zero_copy.is_some() {
                (0..att.ring.size()).map(|_| None).collect()
            } else {
                Vec::new()
            };
            TxRing {
                att,
                next: 0,
                done: 0,
                in_flight,
            }
        });
    }

    fn retire(&mut self) {
        if let Some(st) = self.st.take() {
            let held: Vec<Mbuf> = st.in_flight.into_iter().flatten().collect();
            self.link.quarantine.put(&st.att.life, held);
        }
    }

    /// Signal the peer if it asked for interrupts on this ring.
    #[inline(always)]
    fn notify(att: &RingAttach, stats: &MemifQueueStats) {
        if att.ring.flags() & RING_FLAG_MASK_INT == 0
            && let Some(fd) = &att.interrupt
        {
            let _ = rustix::io::write(&**fd, &1u64.to_ne_bytes());
            stats.interrupts.add(1);
        }
    }

    /// Client, copy mode: our own buffers, one per slot.
    #[inline(always)]
    fn tx_client_copy(&mut self, pkts: &mut MbufBatch) -> usize {
        let Some(st) = self.st.as_mut() else { return 0 };
        let Some((base, bsize)) = st.att.own_buffers else {
            return 0;
        };
        let ring = &st.att.ring;
        let used = st.next.wrapping_sub(ring.tail(Ordering::Acquire));
        if used > ring.size() {
            self.stats.bad_index.add(1);
            return 0;
        }
        let mut free = ring.size() - used;
        let mask = ring.mask();
        let region = &st.att.regions[0];
        let fast = sys::tx_copy(pkts, ring, region, (base, bsize), st.next, free);
        let (mut taken, mut sent, mut bytes, mut errors) =
            (fast.sent, fast.sent as u64, fast.bytes, 0u64);
        free -= fast.sent as u16;
        let mut h = st.next.wrapping_add(fast.sent as u16);
        for m in pkts.iter().skip(fast.sent) {
            if m.is_chained() {
                // A multi-segment mbuf (the fast loop stopped at it): not
                // sent (info() says tx_multi_seg: false, and testpmd refuses
                // such a plan at configuration).
                errors += 1;
                taken += 1;
                continue;
            }
            let len = m.len();
            if len as u64 <= bsize as u64 && len > 0 {
                if free == 0 {
                    break;
                }
                let off = base + (h & mask) as u32 * bsize;
                region.copy_in(off, m.data());
                ring.set_desc(
                    h,
                    Desc {
                        flags: 0,
                        region: 0,
                        length: len as u32,
                        offset: off,
                    },
                );
                h = h.wrapping_add(1);
                free -= 1;
            } else if len == 0 {
                errors += 1;
                taken += 1;
                continue;
            } else {
                // Longer than a buffer: over several slots, as DPDK does.
                let need = len.div_ceil(bsize as usize);
                if need > free as usize {
                    break;
                }
                let data = m.data();
                for (k, chunk) in data.chunks(bsize as usize).enumerate() {
                    let off = base + (h & mask) as u32 * bsize;
                    region.copy_in(off, chunk);
                    ring.set_desc(
                        h,
                        Desc {
                            flags: if k + 1 < need { DESC_FLAG_NEXT } else { 0 },
                            region: 0,
                            length: chunk.len() as u32,
                            offset: off,
                        },
                    );
                    h = h.wrapping_add(1);
                }
                free -= need as u16;
                self.stats.chained_sent.add(1);
            }
            taken += 1;
            sent += 1;
            bytes += len as u64;
        }
        if h != st.next {
            st.next = h;
            ring.set_head(h, Ordering::Release);
            Self::notify(&st.att, &self.stats);
        }
        // What the fast loop sent is single-segment: freed by address range;
        // the checked loop's share (dropped frames included) with a header
        // read each, which a multi-segment mbuf needs.
        sys::free_front_unchained(pkts, fast.sent);
        if taken > fast.sent {
            // Not inlined: a call only when the checked loop took any.
            pkts.free_front(taken - fast.sent);
        }
        self.count(sent, bytes, errors);
        taken
    }

    /// Server: the client's buffers, whose offsets and room its descriptors give.
    #[inline(always)]
    fn tx_server(&mut self, pkts: &mut MbufBatch) -> usize {
        let Some(st) = self.st.as_mut() else { return 0 };
        let ring = &st.att.ring;
        let mut free = ring.head(Ordering::Acquire).wrapping_sub(st.next);
        if free > ring.size() {
            self.stats.bad_index.add(1);
            return 0;
        }
        let regions = &*st.att.regions;
        let (mut taken, mut sent, mut bytes, mut errors, mut bad) =
            (0usize, 0u64, 0u64, 0u64, 0u64);
        let mut t = st.next;
        'pkts: for m in pkts.iter() {
            if free == 0 {
                break;
            }
            if m.is_chained() {
                // A multi-segment mbuf: not sent (tx_multi_seg: false).
                errors += 1;
                taken += 1;
                continue;
            }
            let data = m.data();
            let d = ring.desc(t);
            if data.len() <= d.length as usize {
                match regions.get(d.region as usize) {
                    Some(r) if !data.is_empty() && r.copy_in(d.offset, data) => {
                        ring.set_desc_head(t, 0, d.region, data.len() as u32);
                        sent += 1;
                        bytes += data.len() as u64;
                    }
                    Some(_) if data.is_empty() => {
                        // An empty frame: nothing to send, the slot stays ours.
                        errors += 1;
                        taken += 1;
                        continue;
                    }
                    _ => {
                        // The client posted a buffer outside its regions: the
                        // slot goes back empty and the frame is dropped.
                        ring.set_desc_head(t, 0, d.region, 0);
                        bad += 1;
                        errors += 1;
                    }
                }
                t = t.wrapping_add(1);
                free -= 1;
                taken += 1;
                continue;
            }
            // Longer than the posted buffer: chain slots while they last.
            let (mut k, mut done) = (t, 0usize);
            let mut left = free;
            while done < data.len() {
                if left == 0 {
                    // Not enough slots now: the frame waits for the next burst.
                    break 'pkts;
                }
                let d = ring.desc(k);
                let n = (d.length as usize).min(data.len() - done);
                let ok = n > 0
                    && regions
                        .get(d.region as usize)
                        .is_some_and(|r| r.copy_in(d.offset, &data[done..done + n]));
                if !ok {
                    // A bad or empty buffer inside the chain: drop the frame
                    // and give its slots back empty.
                    let mut s = t;
                    while s != k.wrapping_add(1) {
                        let d = ring.desc(s);
                        ring.set_desc_head(s, 0, d.region, 0);
                        s = s.wrapping_add(1);
                    }
                    bad += 1;
                    errors += 1;
                    left -= 1;
                    k = k.wrapping_add(1);
                    free = left;
                    t = k;
                    taken += 1;
                    continue 'pkts;
                }
                done += n;
                let last = done == data.len();
                ring.set_desc_head(k, if last { 0 } else { DESC_FLAG_NEXT }, d.region, n as u32);
                k = k.wrapping_add(1);
                left -= 1;
            }
            t = k;
            free = left;
            taken += 1;
            sent += 1;
            bytes += data.len() as u64;
            self.stats.chained_sent.add(1);
        }
        if t != st.next {
            st.next = t;
            ring.set_tail(t, Ordering::Release);
            Self::notify(&st.att, &self.stats);
        }
        if bad > 0 {
            self.stats.bad_desc.add(bad);
        }
        // Header-reading bulk free: this loop has no single-segment guarantee.
        pkts.free_front(taken);
        self.count(sent, bytes, errors);
        taken
    }

    /// Zero-copy client: descriptors point at the mbufs themselves, which
    /// stay in flight until the server moves the tail past them.
    #[inline(always)]
    fn tx_zero_copy(&mut self, pkts: &mut MbufBatch) -> usize {
        let Some(st) = self.st.as_mut() else { return 0 };
        // Split borrows: the attachment is read, the slots are written.
        let TxRing {
            att,
            next,
            done: st_done,
            in_flight,
        } = st;
        let st_next = next;
        let Some(zc) = att.zero_copy.as_ref() else {
            return 0;
        };
        let ring = &att.ring;
        let mask = ring.mask();
        let tail = ring.tail(Ordering::Acquire);
        let done = tail.wrapping_sub(*st_done);
        if done > st_next.wrapping_sub(*st_done) {
            self.stats.bad_index.add(1);
            return 0;
        }
        // Give back what the server has read.
        sys::release_in_flight(in_flight, *st_done, tail);
        *st_done = tail;
        let mut free = ring.size() - st_next.wrapping_sub(tail);
        let fast = sys::tx_lend(
            pkts,
            ring,
            in_flight,
            (&zc.region, zc.index),
            *st_next,
            free,
        );
        let (mut taken, mut sent, mut bytes, mut errors) =
            (fast.sent, fast.sent as u64, fast.bytes, 0u64);
        free -= fast.sent as u16;
        let mut h = st_next.wrapping_add(fast.sent as u16);
        while free > 0 {
            let Some(m) = pkts.pop_front() else { break };
            if m.is_chained() {
                // A multi-segment mbuf: dropped here (tx_multi_seg: false).
                errors += 1;
                taken += 1;
                continue;
            }
            let len = m.len();
            let m = match zc.region.offset_of(m.data().as_ptr() as usize, len) {
                Some(_) if len > 0 => m,
                _ if len == 0 => {
                    errors += 1;
                    taken += 1;
                    continue;
                }
                // Not an mbuf of the shared pool: copy it into one that is.
                _ => {
                    let Some(mut c) = zc.pool.alloc().filter(|c| c.capacity() >= len) else {
                        // The pool is dry, or the frame is longer than its mbufs.
                        errors += 1;
                        taken += 1;
                        continue;
                    };
                    if !c.set_len(len) {
                        errors += 1;
                        taken += 1;
                        continue;
                    }
                    c.data_mut().copy_from_slice(m.data());
                    c
                }
            };
            let off = zc
                .region
                .offset_of(m.data().as_ptr() as usize, len)
                .unwrap_or(0);
            ring.set_desc(
                h,
                Desc {
                    flags: 0,
                    region: zc.index,
                    length: len as u32,
                    offset: off,
                },
            );
            in_flight[(h & mask) as usize] = Some(m);
            h = h.wrapping_add(1);
            free -= 1;
            taken += 1;
            sent += 1;
            bytes += len as u64;
        }
        if h != *st_next {
            *st_next = h;
            ring.set_head(h, Ordering::Release);
            Self::notify(att, &self.stats);
        }
        self.count(sent, bytes, errors);
        taken
    }

    #[inline(always)]
    fn count(&self, sent: u64, bytes: u64, errors: u64) {
        if sent > 0 {
            self.counters.tx_packets.add(sent);
            self.counters.tx_bytes.add(bytes);
        }
        if errors > 0 {
            self.counters.tx_errors.add(errors);
        }
    }
}

impl TxQueue for MemifTx {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let g = self.link.generation.load(Ordering::Acquire);
        if g != self.seen {
            self.switch(g);
        }
        if pkts.is_empty() {
            return 0;
        }
        match (&self.st, self.side) {
            (None, _) => 0,
            (Some(st), _) if st.att.zero_copy.is_some() => self.tx_zero_copy(pkts),
            (Some(_), Side::Client) => self.tx_client_copy(pkts),
            (Some(_), Side::Server) => self.tx_server(pkts),
        }
    }

    fn burst_mode(&self) -> Option<&'static str> {
        Some(if self.zero_copy { "zero-copy" } else { "copy" })
    }
}

impl Drop for MemifTx {
    fn drop(&mut self) {
        self.retire();
    }
}
