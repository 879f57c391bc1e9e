//! A receive queue: the legacy 32-byte descriptor ring (§2.8), one mbuf per
//! slot, batched refill and one tail doorbell per burst.
//!
//! Ring discipline (DPDK `iavf_recv_pkts`, with a bulk refill): every slot
//! holds an mbuf except the `nb_hold` slots just behind `next`, which were
//! delivered and wait for the refill. The device owns the descriptors from its
//! head up to (not including) `tail`; we read from `next` and never past
//! `tail`, so a slot whose buffer was taken is never read again before it was
//! refilled. A refill gives buffers to the `nb_hold` slots in one bulk get once
//! there are `free_thresh` of them, then writes `tail = next - 1` (one slot
//! stays back, so a full ring is told apart from an empty one).
//!
//! A descriptor is never trusted: a write-back without EOP (the frame did not
//! fit one buffer; everything up to its EOP is dropped too), with a fatal error
//! bit, or with a length outside the buffer is counted in `rx_errors` /
//! `bad_desc` and its mbuf freed.
#![deny(unsafe_code)]

use std::sync::Arc;

use nicpoll::bar::Bar;
use nicpoll::mbuf::{MbufBatch, flags};
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::{Mempool, RxQueue};

use crate::desc::{RxDesc, rx_error, rx_status};
use crate::regs;
use crate::ring::{DescRing, MbufSlots};
use crate::stats::QueueExtraRef;
use crate::sync::QueueShared;

/// Smallest frame delivered: an Ethernet header.
const MIN_FRAME: usize = 14;

/// One receive queue of a started port. Owned by one lcore.
pub struct IavfRxQueue<B: Bar> {
    ring: DescRing<RxDesc>,
    slots: Option<MbufSlots>,
    bar: Arc<B>,
    tail_reg: usize,
    pool: Mempool,
    n: u16,
    next: u16,
    tail: u16,
    nb_hold: u16,
    free_thresh: u16,
    /// Bytes the device may write per buffer (the `databuffer_size` given to
    /// the PF).
    buf_len: u16,
    /// Dropping descriptors up to the next EOP.
    discarding: bool,
    port_id: u16,
    queue_id: u16,
    counters: QueueCountersRef,
    extra: QueueExtraRef,
    shared: Arc<QueueShared>,
    seen_gen: u64,
}

/// What building a receive queue needs.
pub(crate) struct RxQueueParts<B: Bar> {
    pub ring: DescRing<RxDesc>,
    pub bar: Arc<B>,
    pub pool: Mempool,
    pub free_thresh: u16,
    pub buf_len: u16,
    pub port_id: u16,
    pub queue_id: u16,
    pub counters: QueueCountersRef,
    pub extra: QueueExtraRef,
    pub shared: Arc<QueueShared>,
}

impl<B: Bar> IavfRxQueue<B> {
    /// A queue with every slot filled and armed, and its tail written (§2.7
    /// dev_start step 1: `QRX_TAIL = nb_desc - 1`). Fails if the pool cannot
    /// fill the ring (nothing is kept then).
    pub(crate) fn new(p: RxQueueParts<B>) -> Result<IavfRxQueue<B>, usize> {
        let n = p.ring.len();
        let mut q = IavfRxQueue {
            slots: Some(MbufSlots::new(n as usize)),
            tail_reg: regs::qrx_tail(p.queue_id),
            n,
            next: 0,
            tail: 0,
            nb_hold: n,
            free_thresh: p.free_thresh.clamp(1, n - 1),
            buf_len: p.buf_len,
            discarding: false,
            port_id: p.port_id,
            queue_id: p.queue_id,
            seen_gen: p.shared.generation(),
            ring: p.ring,
            bar: p.bar,
            pool: p.pool,
            counters: p.counters,
            extra: p.extra,
            shared: p.shared,
        };
        q.ring.clear();
        if !q.refill() {
            // Nothing was taken (a fill is all or nothing from slot 0).
            q.slots = None;
            return Err(n as usize);
        }
        Ok(q)
    }

    #[inline(always)]
    fn slots(&mut self) -> &mut MbufSlots {
        self.slots.as_mut().expect("slots live until drop")
    }

    #[inline(always)]
    fn wrap(&self, i: u16) -> u16 {
        if i >= self.n { i - self.n } else { i }
    }

    /// Give buffers to the `nb_hold` empty slots behind `next` and move the
    /// tail. Returns false if the pool is short (the slots stay empty and are
    /// retried at the next burst).
    #[inline]
    fn refill(&mut self) -> bool {
        let hold = self.nb_hold;
        if hold == 0 {
            return true;
        }
        let start = self.wrap(self.next + self.n - hold);
        let first = hold.min(self.n - start);
        let slots = self.slots.as_mut().expect("slots live until drop");
        if !slots.fill(&self.pool, start as usize, first as usize) {
            self.counters.rx_nombuf.add(hold as u64);
            return false;
        }
        self.arm(start, first);
        let rest = hold - first;
        let slots = self.slots.as_mut().expect("slots live until drop");
        if rest > 0 && !slots.fill(&self.pool, 0, rest as usize) {
            // Only the run up to the end of the ring was refilled; the empty
            // slots [0, rest) are still just behind `next`.
            self.nb_hold = rest;
            self.tail = self.n - 1;
            self.bar.write32(self.tail_reg, self.tail as u32);
            self.counters.rx_nombuf.add(rest as u64);
            return false;
        }
        if rest > 0 {
            self.arm(0, rest);
        }
        self.nb_hold = 0;
        self.tail = self.wrap(self.next + self.n - 1);
        // One doorbell for the whole refill, ordered after the descriptors.
        self.bar.write32(self.tail_reg, self.tail as u32);
        true
    }

    /// Write read-format descriptors for `count` filled slots from `start`.
    #[inline]
    fn arm(&mut self, start: u16, count: u16) {
        for i in start..start + count {
            let iova = self.slots.as_ref().expect("live").rx_iova(i as usize);
            self.ring.write(i, RxDesc::read_format(iova));
        }
    }

    /// After a VF reset: drop what was written back but not delivered, post
    /// the buffers we hold again from slot 0, and refill the rest.
    fn rearm(&mut self) {
        // Written back before the reset and not delivered yet: lost.
        let mut lost = 0u64;
        let mut i = self.next;
        while i != self.tail {
            if self.ring.read(i).is_done() {
                lost += 1;
            }
            i = self.wrap(i + 1);
        }
        let held = self.slots().compact() as u16;
        self.ring.clear();
        self.arm(0, held);
        self.next = 0;
        self.nb_hold = self.n - held;
        self.tail = if held == 0 { 0 } else { held - 1 };
        self.discarding = false;
        self.bar.write32(self.tail_reg, self.tail as u32);
        self.refill();
        self.extra.reset_dropped.add(lost);
        self.extra.rearms.add(1);
    }

    /// The receive loop proper.
    #[inline]
    fn receive(&mut self, out: &mut MbufBatch) -> usize {
        let spare = out.spare();
        let avail = self.wrap(self.tail + self.n - self.next) as usize;
        let max = spare.min(avail);
        let (mut got, mut bytes, mut bad) = (0usize, 0u64, 0u64);
        let mut scanned = 0;
        while scanned < max {
            let i = self.next;
            let d = self.ring.read(i);
            if !d.is_done() {
                break;
            }
            scanned += 1;
            self.next = self.wrap(i + 1);
            self.nb_hold += 1;
            let Some(mut m) = self.slots().take(i as usize) else {
                bad += 1;
                continue;
            };
            let len = d.pkt_len() as usize;
            let errors = d.errors();
            if self.discarding || !d.is_eop() || errors & rx_error::FATAL != 0 {
                // A chained frame's fragments, or a frame the device flagged:
                // counted once per descriptor, mbuf freed.
                self.discarding = !d.is_eop();
                bad += 1;
                drop(m);
                continue;
            }
            if !(MIN_FRAME..=self.buf_len as usize).contains(&len) {
                bad += 1;
                drop(m);
                continue;
            }
            m.reset();
            if !m.set_len(len) {
                bad += 1;
                drop(m);
                continue;
            }
            m.set_port(self.port_id);
            m.set_queue(self.queue_id);
            if let Some(h) = d.rss_hash() {
                m.set_rss_hash(h);
            }
            if d.status() & rx_status::L3L4P != 0 && errors & (rx_error::IPE | rx_error::L4E) != 0 {
                let mut f = m.ol_flags();
                if errors & rx_error::IPE != 0 {
                    f |= flags::RX_IP_CKSUM_BAD;
                }
                if errors & rx_error::L4E != 0 {
                    f |= flags::RX_L4_CKSUM_BAD;
                }
                m.set_ol_flags(f);
            }
            bytes += len as u64;
            got += 1;
            if let Err(m) = out.push(m) {
                // Cannot happen (max <= spare); never lose a packet silently.
                drop(m);
                bad += 1;
                got -= 1;
                bytes -= len as u64;
            }
        }
        if self.nb_hold >= self.free_thresh {
            self.refill();
        }
        if got > 0 {
            self.counters.rx_packets.add(got as u64);
            self.counters.rx_bytes.add(bytes);
        }
        if bad > 0 {
            self.counters.rx_errors.add(bad);
            self.extra.bad_desc.add(bad);
        }
        got
    }
}

impl<B: Bar> RxQueue for IavfRxQueue<B> {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let g = self.shared.generation();
        if g != self.seen_gen {
            if g % 2 == 1 {
                // The VF is being reset: leave the ring alone.
                return 0;
            }
            self.rearm();
            self.seen_gen = g;
            self.shared.ack_rx(self.queue_id as usize, g);
        }
        self.receive(out)
    }
}

impl<B: Bar> Drop for IavfRxQueue<B> {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            self.shared.retire(true, self.queue_id as usize, slots);
        }
    }
}
