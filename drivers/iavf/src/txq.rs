//! A transmit queue: the 16-byte data descriptor ring, one packet per
//! descriptor, report-status every `rs_thresh` descriptors and cleanup in
//! batches of `rs_thresh`, one tail doorbell per burst (DPDK's simple path,
//! `iavf_xmit_pkts_simple` / `ci_tx_free_bufs`).
//!
//! Descriptors whose index is `rs_thresh - 1` modulo `rs_thresh` carry RS; the
//! device writes DTYPE = DESC_DONE back into them when it has read them and
//! everything before. When fewer than `free_thresh` descriptors are free, the
//! queue checks the next RS descriptor and, if done, frees the `rs_thresh`
//! mbufs it covers in one bulk put. A burst writes its descriptors in one
//! loop without RS ([`MbufSlots::tx_fill`]), then sets RS on the few that need
//! it, before the doorbell. On a CPU with AVX2 (unless `simd=0` or
//! `simd=128`), else on one with SSE4.1 (unless `simd=0`), that loop writes
//! four descriptors per step first (`ring::avx2`, `ring::sse`).
//!
//! A multi-segment mbuf (a chain) takes one data descriptor per segment,
//! EOP on the last (DPDK's `iavf_xmit_pkts`): the fast loop stops at it and
//! [`transmit_chains`](IavfTxQueue::transmit_chains) sends it, each segment
//! in its own slot, freed with the others at cleanup. A chain of more than
//! [`TX_MAX_SEGS`] segments, or a segment longer than a descriptor carries,
//! cannot be sent and is counted (`tx_bad_len`).
#![deny(unsafe_code)]

use std::sync::Arc;

use nicpoll::TxQueue;
use nicpoll::bar::Bar;
use nicpoll::mbuf::MbufBatch;
use nicpoll::port::counters::QueueCountersRef;

use crate::desc::{TX_MAX_BUF, TX_MIN_LEN, TxDesc};
use crate::options::MaxSimd;
use crate::regs;
use crate::ring::{DescRing, MbufSlots};
use crate::stats::QueueExtraRef;
use crate::sync::QueueShared;

/// Most data descriptors one (non-TSO) packet may take (`IAVF_TX_MAX_MTU_SEG`,
/// the hardware's limit DPDK's `iavf_prep_pkts` checks).
pub const TX_MAX_SEGS: usize = 8;
/// Report status every this many descriptors (`IAVF_DEFAULT_TX_RS_THRESH`).
pub const RS_THRESH: u16 = 32;
/// Clean up when fewer descriptors than this are free
/// (`IAVF_DEFAULT_TX_FREE_THRESH`).
pub const FREE_THRESH: u16 = 32;
const _: () = assert!(RS_THRESH.is_power_of_two());

/// One transmit queue of a started port. Owned by one lcore.
pub struct IavfTxQueue<B: Bar> {
    ring: DescRing<TxDesc>,
    /// Empty (no slots) only once retired, or when `new` failed.
    slots: MbufSlots,
    bar: Arc<B>,
    tail_reg: usize,
    n: u16,
    /// Next descriptor to write.
    tail: u16,
    /// The RS descriptor to check next.
    next_dd: u16,
    nb_free: u16,
    queue_id: u16,
    counters: QueueCountersRef,
    extra: QueueExtraRef,
    shared: Arc<QueueShared>,
    seen_gen: u64,
}

impl<B: Bar> IavfTxQueue<B> {
    /// An empty queue with its tail at 0. `ring.len()` must be a multiple of
    /// [`RS_THRESH`]. `simd`: the widest vector loop to use if the CPU
    /// has it ([`MbufSlots::set_loops`]).
    pub(crate) fn new(
        ring: DescRing<TxDesc>,
        bar: Arc<B>,
        queue_id: u16,
        counters: QueueCountersRef,
        extra: QueueExtraRef,
        shared: Arc<QueueShared>,
        simd: MaxSimd,
    ) -> IavfTxQueue<B> {
        let n = ring.len();
        assert!(n >= 2 * RS_THRESH && n.is_multiple_of(RS_THRESH));
        let mut slots = MbufSlots::new(n as usize);
        slots.set_loops(simd);
        let mut q = IavfTxQueue {
            slots,
            tail_reg: regs::qtx_tail(queue_id),
            n,
            tail: 0,
            next_dd: RS_THRESH - 1,
            nb_free: n - 1,
            queue_id,
            seen_gen: shared.generation(),
            ring,
            bar,
            counters,
            extra,
            shared,
        };
        q.ring.clear();
        q.bar.write32(q.tail_reg, 0);
        q
    }

    /// Free the `RS_THRESH` mbufs covered by the next RS descriptor, if the
    /// device is done with it. Returns whether it was.
    #[inline(always)]
    fn free_done(&mut self) -> bool {
        if !self.ring.read_status(self.next_dd).is_done() {
            return false;
        }
        let first = self.next_dd + 1 - RS_THRESH;
        let slots = &mut self.slots;
        slots.free_range(first as usize, RS_THRESH as usize);
        self.nb_free += RS_THRESH;
        self.next_dd += RS_THRESH;
        if self.next_dd >= self.n {
            self.next_dd = RS_THRESH - 1;
        }
        true
    }

    /// After a VF reset: what the device reported done before it was sent;
    /// the rest of what was in flight is lost (its fate is unknown). Start
    /// over at 0.
    fn rearm(&mut self) {
        // Only RS descriptors written in this lap say anything: the one at
        // `next_dd` was, if at least RS_THRESH packets are in flight.
        while self.n - 1 - self.nb_free >= RS_THRESH && self.free_done() {}
        let lost = self.slots.free_all() as u64;
        self.ring.clear();
        self.tail = 0;
        self.next_dd = RS_THRESH - 1;
        self.nb_free = self.n - 1;
        self.bar.write32(self.tail_reg, 0);
        self.extra.reset_dropped.add(lost);
        self.extra.rearms.add(1);
    }

    /// A burst: the common case — the descriptors fit before the end of
    /// the ring — in one run of the fast loop; a ring wrap in
    /// [`transmit_wrap`](Self::transmit_wrap).
    #[inline(never)]
    fn transmit(&mut self, pkts: &mut MbufBatch) -> usize {
        if self.nb_free < FREE_THRESH {
            self.free_done();
        }
        let count = pkts.len().min(self.nb_free as usize);
        if count == 0 {
            return 0;
        }
        let tail = self.tail as usize;
        if tail + count > self.n as usize {
            return self.transmit_wrap(pkts, count);
        }
        let slots = &mut self.slots;
        // Takes all `count` (refused ones are freed) up to a chain.
        let (used, taken, bytes) =
            slots.tx_fill(&mut self.ring, tail, count, pkts, TX_MIN_LEN, TX_MAX_BUF);
        self.set_rs(tail, used);
        let mut end = tail + used;
        if end == self.n as usize {
            end = 0;
        }
        let sent = self.publish(end, used, taken, bytes);
        if taken < count {
            return sent + self.transmit_chains(pkts);
        }
        sent
    }

    /// The front of `pkts` is a chain (the fast loop stopped at it): send
    /// chains one descriptor per segment (EOP on the last, RS where the
    /// ring's every `RS_THRESH`-th descriptor falls), wrapping as needed,
    /// then whatever follows through [`transmit`](Self::transmit). A chain
    /// the descriptors left cannot take stays at the front.
    #[cold]
    #[inline(never)]
    fn transmit_chains(&mut self, pkts: &mut MbufBatch) -> usize {
        let n = self.n as usize;
        let (mut taken, mut sent, mut bytes, mut bad) = (0usize, 0usize, 0u64, 0u64);
        let mut packets = 0u64;
        let mut tail = self.tail as usize;
        while let Some(m) = pkts.as_slice().first() {
            if !m.is_chained() {
                break;
            }
            let segs = m.nb_segs();
            let len = m.pkt_len();
            let fits = segs <= TX_MAX_SEGS
                && len >= TX_MIN_LEN
                && m.segments().all(|s| !s.is_empty() && s.len() <= TX_MAX_BUF);
            if !fits {
                drop(pkts.pop_front());
                taken += 1;
                bad += 1;
                continue;
            }
            if (self.nb_free as usize) < segs + sent {
                self.free_done();
                if (self.nb_free as usize) < segs + sent {
                    break;
                }
            }
            let mut rest = pkts.pop_front();
            let mut k = 0;
            while let Some(p) = rest {
                let (seg, r) = p.split_first();
                rest = r;
                let d = TxDesc::segment(seg.data_iova(), seg.len(), rest.is_none());
                self.ring.put(tail as u16, d);
                if (tail & (RS_THRESH as usize - 1)) == RS_THRESH as usize - 1 {
                    self.ring.set_rs(tail as u16);
                }
                // Free by the queue's accounting (the descriptor was free).
                if let Err(seg) = self.slots.put(tail, seg) {
                    drop(seg);
                }
                tail += 1;
                if tail == n {
                    tail = 0;
                }
                k += 1;
            }
            sent += k;
            bytes += len as u64;
            taken += 1;
            packets += 1;
        }
        if sent > 0 {
            self.nb_free -= sent as u16;
            self.tail = tail as u16;
            self.bar.write32(self.tail_reg, tail as u32);
            self.counters.tx_packets.add(packets);
            self.counters.tx_bytes.add(bytes);
        }
        if bad > 0 {
            self.counters.tx_errors.add(bad);
            self.extra.tx_bad_len.add(bad);
        }
        if taken > 0 && !pkts.is_empty() && !pkts.as_slice()[0].is_chained() {
            return taken + self.transmit(pkts);
        }
        taken
    }

    /// Report status on every RS_THRESH-th descriptor of `[from, from + used)`
    /// (no wrap).
    #[inline(always)]
    fn set_rs(&mut self, from: usize, used: usize) {
        let mut rs = from | (RS_THRESH as usize - 1);
        while rs < from + used {
            self.ring.set_rs(rs as u16);
            rs += RS_THRESH as usize;
        }
    }

    /// After a burst wrote `sent` descriptors of the `count` packets it took,
    /// the new tail `tail`: move it (one doorbell, ordered after the
    /// descriptors) and count. Returns `count`.
    #[inline(always)]
    fn publish(&mut self, tail: usize, sent: usize, count: usize, bytes: u64) -> usize {
        if sent > 0 {
            self.nb_free -= sent as u16;
            self.tail = tail as u16;
            self.bar.write32(self.tail_reg, tail as u32);
            self.counters.tx_packets.add(sent as u64);
            self.counters.tx_bytes.add(bytes);
        }
        let bad = (count - sent) as u64;
        if bad > 0 {
            self.counters.tx_errors.add(bad);
            self.extra.tx_bad_len.add(bad);
        }
        count
    }

    /// A burst of `count` packets whose descriptors wrap around the end of
    /// the ring: one run up to the end, one from 0.
    #[cold]
    #[inline(never)]
    fn transmit_wrap(&mut self, pkts: &mut MbufBatch, count: usize) -> usize {
        let n = self.n as usize;
        let mut tail = self.tail as usize;
        let (mut left, mut sent, mut bytes) = (count, 0usize, 0u64);
        while left > 0 {
            let chunk = left.min(n - tail);
            let slots = &mut self.slots;
            let (used, taken, b) =
                slots.tx_fill(&mut self.ring, tail, chunk, pkts, TX_MIN_LEN, TX_MAX_BUF);
            self.set_rs(tail, used);
            sent += used;
            bytes += b;
            tail += used;
            if tail == n {
                tail = 0;
            }
            left -= taken;
            if taken < chunk {
                // Stopped at a chain.
                let done = self.publish(tail, sent, count - left, bytes);
                return done + self.transmit_chains(pkts);
            }
        }
        self.publish(tail, sent, count, bytes)
    }
}

impl<B: Bar> TxQueue for IavfTxQueue<B> {
    fn burst_mode(&self) -> Option<&'static str> {
        Some(self.slots.burst_mode())
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        if self.shared.generation() != self.seen_gen {
            return self.new_generation(pkts);
        }
        if pkts.is_empty() {
            return 0;
        }
        self.transmit(pkts)
    }
}

impl<B: Bar> IavfTxQueue<B> {
    /// The generation changed: the VF is being reset (keep the packets with
    /// the caller), or it was, and the ring is re-armed before sending again.
    #[cold]
    #[inline(never)]
    fn new_generation(&mut self, pkts: &mut MbufBatch) -> usize {
        let g = self.shared.generation();
        if g % 2 == 1 {
            return 0;
        }
        self.rearm();
        self.seen_gen = g;
        self.shared.ack_tx(self.queue_id as usize, g);
        if pkts.is_empty() {
            return 0;
        }
        self.transmit(pkts)
    }
}

impl<B: Bar> Drop for IavfTxQueue<B> {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            let slots = std::mem::replace(&mut self.slots, MbufSlots::new(0));
            self.shared.retire(false, self.queue_id as usize, slots);
        }
    }
}
