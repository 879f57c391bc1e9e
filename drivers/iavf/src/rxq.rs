//! A receive queue: the legacy 32-byte descriptor ring, one mbuf per
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
//! A frame whose VLAN tag the device stripped (L2TAG1P: a PF that refused to
//! turn stripping off) takes the one-at-a-time path, which puts the tag in the
//! mbuf (`vlan_tci`, `RX_VLAN | RX_VLAN_STRIPPED`).
//!
//! Scatter receive: a frame longer than one buffer (the PF's max frame, or
//! `--max-pkt-len`, above the `databuffer_size`) takes several descriptors,
//! only the last with EOP; their mbufs become one chain (kept across bursts
//! until the EOP comes), whose first segment gets what the EOP descriptor
//! reports (RSS hash, stripped tag, checksum flags).
//!
//! A descriptor is never trusted: one with a fatal error bit, or with a length
//! outside the buffer, is counted in `rx_errors` / `bad_desc` and its mbuf
//! freed (a chained frame it belongs to is dropped whole, every descriptor
//! of it counted).
//!
//! Fast path. A refill prepares each buffer's header (data offset, port,
//! queue; the flags are left to the receive path) when it posts it, while the header is being read for the
//! buffer's address anyway; a burst then runs the common case — written back,
//! one whole frame, no error bit at all, a length in range — in one tight loop
//! ([`MbufSlots::rx_clean`]) that sets only the length and the RSS hash.
//! Anything else (a ring wrap, a chained frame, an error or checksum bit, a
//! bad length) stops that loop and goes one descriptor at a time through the
//! cold path. An idle queue costs one status read. On a CPU with AVX2 (unless
//! `simd=0` or `simd=128`), else on one with SSE4.1 (unless `simd=0`), the
//! loop takes four descriptors per step first, exactly what the scalar loop
//! would (`ring::avx2`, `ring::sse`).
#![deny(unsafe_code)]

use std::sync::Arc;

use nicpoll::bar::Bar;
use nicpoll::mbuf::{MbufBatch, RxChain, RxHeaderTemplate, flags};
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::{Mbuf, Mempool, RxQueue};

use crate::desc::{RxDesc, rx_error, rx_status};
use crate::options::MaxSimd;
use crate::regs;
use crate::ring::{DescRing, MbufSlots};
use crate::stats::QueueExtraRef;
use crate::sync::QueueShared;

/// Smallest frame delivered: an Ethernet header.
const MIN_FRAME: usize = 14;

/// One receive queue of a started port. Owned by one lcore.
pub struct IavfRxQueue<B: Bar> {
    ring: DescRing<RxDesc>,
    /// Empty (no slots) only once retired, or when `new` failed.
    slots: MbufSlots,
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
    /// The descriptors up to the next EOP continue a frame that spans
    /// buffers (`chain`; dropped whole at its EOP if `broken`).
    mid_frame: bool,
    /// That frame's segments so far.
    chain: RxChain,
    /// That frame lost a segment (an error bit, a bad length): drop it.
    broken: bool,
    /// Descriptors that frame took so far (counted as bad if it is dropped).
    chain_descs: usize,
    queue_id: u16,
    /// The header every posted buffer gets (port, queue, fresh state).
    rx_template: RxHeaderTemplate,
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
    /// The widest vector loops to use if the CPU has them
    /// ([`MbufSlots::set_loops`]).
    pub simd: MaxSimd,
}

impl<B: Bar> IavfRxQueue<B> {
    /// A queue with every slot filled and armed, and its tail written (DPDK
    /// `iavf_dev_rx_queue_start`: `QRX_TAIL = nb_desc - 1`). Fails if the pool cannot
    /// fill the ring (nothing is kept then).
    pub(crate) fn new(p: RxQueueParts<B>) -> Result<IavfRxQueue<B>, usize> {
        let n = p.ring.len();
        let mut slots = MbufSlots::new(n as usize);
        slots.set_loops(p.simd);
        let mut q = IavfRxQueue {
            slots,
            tail_reg: regs::qrx_tail(p.queue_id),
            n,
            next: 0,
            tail: 0,
            nb_hold: n,
            free_thresh: p.free_thresh.clamp(1, n - 1),
            buf_len: p.buf_len,
            mid_frame: false,
            chain: RxChain::new(),
            broken: false,
            chain_descs: 0,
            queue_id: p.queue_id,
            rx_template: RxHeaderTemplate::new(p.port_id, p.queue_id),
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
            q.slots = MbufSlots::new(0);
            return Err(n as usize);
        }
        Ok(q)
    }

    #[inline(always)]
    fn wrap(&self, i: u16) -> u16 {
        if i >= self.n { i - self.n } else { i }
    }

    /// Give buffers to the `nb_hold` empty slots behind `next` and move the
    /// tail. Returns false if the pool is short (the slots stay empty and are
    /// retried at the next burst); each failed attempt adds the buffers it
    /// wanted to `rx_nombuf`, as DPDK's iavf adds its refill size to
    /// `rx_mbuf_alloc_failed` per failed bulk allocation. Inline in the receive path (no call, no
    /// second prologue per burst); [`refill_retry`](Self::refill_retry) is the
    /// idle path's out-of-line copy.
    #[inline(always)]
    fn refill(&mut self) -> bool {
        let hold = self.nb_hold;
        if hold == 0 {
            return true;
        }
        let start = self.wrap(self.next + self.n - hold);
        if hold > self.n - start {
            return self.refill_wrap(start, hold);
        }
        let slots = &mut self.slots;
        // What the receive path does not write: the data offset, no VLAN tag,
        // no packet type (as `reset` leaves them), the port and queue.
        if !slots.refill_rx(
            &mut self.ring,
            &self.pool,
            start as usize,
            hold as usize,
            &self.rx_template,
        ) {
            self.counters.rx_nombuf.add(hold as u64);
            return false;
        }
        self.nb_hold = 0;
        self.tail = self.wrap(self.next + self.n - 1);
        // One doorbell for the whole refill, ordered after the descriptors.
        self.bar.write32(self.tail_reg, self.tail as u32);
        true
    }

    /// [`refill`](Self::refill) out of line: an idle poll's retry of a refill
    /// the pool was too short for (the idle path stays small).
    #[cold]
    #[inline(never)]
    fn refill_retry(&mut self) -> bool {
        self.refill()
    }

    /// [`refill`](Self::refill) of `hold` slots from `start` across the end
    /// of the ring: up to the end, then from 0.
    #[cold]
    #[inline(never)]
    fn refill_wrap(&mut self, start: u16, hold: u16) -> bool {
        let first = self.n - start;
        let slots = &mut self.slots;
        // What the receive path does not write: the data offset, no VLAN tag,
        // no packet type (as `reset` leaves them), the port and queue.
        let tmpl = &self.rx_template;
        if !slots.refill_rx(
            &mut self.ring,
            &self.pool,
            start as usize,
            first as usize,
            tmpl,
        ) {
            self.counters.rx_nombuf.add(hold as u64);
            return false;
        }
        let rest = hold - first;
        if rest > 0 && !slots.refill_rx(&mut self.ring, &self.pool, 0, rest as usize, tmpl) {
            // Only the run up to the end of the ring was refilled; the empty
            // slots [0, rest) are still just behind `next`.
            self.nb_hold = rest;
            self.tail = self.n - 1;
            self.bar.write32(self.tail_reg, self.tail as u32);
            self.counters.rx_nombuf.add(rest as u64);
            return false;
        }
        self.nb_hold = 0;
        self.tail = self.wrap(self.next + self.n - 1);
        // One doorbell for the whole refill, ordered after the descriptors.
        self.bar.write32(self.tail_reg, self.tail as u32);
        true
    }

    /// Write read-format descriptors for `count` filled slots from `start`.
    fn arm(&mut self, start: u16, count: u16) {
        for i in start..start + count {
            let iova = self.slots.rx_iova(i as usize);
            self.ring.arm(i, iova);
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
        let held = self.slots.compact() as u16;
        self.ring.clear();
        self.arm(0, held);
        self.next = 0;
        self.nb_hold = self.n - held;
        self.tail = if held == 0 { 0 } else { held - 1 };
        // A frame cut by the reset.
        if self.mid_frame {
            lost += 1;
        }
        self.chain.discard();
        self.mid_frame = false;
        self.broken = false;
        self.chain_descs = 0;
        self.bar.write32(self.tail_reg, self.tail as u32);
        self.refill();
        self.extra.reset_dropped.add(lost);
        self.extra.rearms.add(1);
    }

    /// The receive loop proper: a run of clean whole frames in the fast loop
    /// ([`MbufSlots::rx_clean`]); a ring wrap or anything else goes on in
    /// [`receive_rest`](Self::receive_rest).
    #[inline(never)]
    fn receive(&mut self, out: &mut MbufBatch) -> usize {
        let avail = self.wrap(self.tail + self.n - self.next) as usize;
        let max = out.spare().min(avail);
        let n = self.n as usize;
        // Valid lengths are MIN_FRAME..=buf_len: one unsigned compare.
        let span = (self.buf_len as usize).wrapping_sub(MIN_FRAME);
        let i = self.next as usize;
        let chunk = max.min(n - i);
        let slots = &mut self.slots;
        let (k, mut bytes, unusual) = if self.mid_frame {
            (0, 0, true)
        } else {
            slots.rx_clean(&self.ring, i, chunk, MIN_FRAME, span, out)
        };
        let (mut scanned, mut got, mut bad) = (k, k, 0usize);
        let mut i = i + k;
        if i == n {
            i = 0;
        }
        if unusual || (k == chunk && max > chunk) {
            let (s, g, b, e) = self.receive_rest(out, i, max - k, span);
            scanned += s;
            got += g;
            bytes += b;
            bad += e;
            i = self.next as usize;
        }
        self.next = i as u16;
        self.nb_hold += scanned as u16;
        if self.nb_hold >= self.free_thresh {
            self.refill();
        }
        if got > 0 {
            self.counters.rx_packets.add(got as u64);
            self.counters.rx_bytes.add(bytes);
        }
        if bad > 0 {
            self.counters.rx_errors.add(bad as u64);
            self.extra.bad_desc.add(bad as u64);
        }
        got
    }

    /// The rest of a burst from descriptor `i` (at most `left` descriptors)
    /// after a ring wrap or a descriptor off the fast path: runs of clean
    /// frames in the fast loop, anything else one descriptor at a time in
    /// [`unusual`](Self::unusual), and the descriptors of a frame that spans
    /// buffers in [`segment`](Self::segment). Leaves `next` after what it
    /// took; returns (descriptors taken, packets delivered, their bytes,
    /// descriptors or frames dropped and counted).
    #[cold]
    #[inline(never)]
    fn receive_rest(
        &mut self,
        out: &mut MbufBatch,
        mut i: usize,
        mut left: usize,
        span: usize,
    ) -> (usize, usize, u64, usize) {
        let n = self.n as usize;
        let (mut scanned, mut got, mut bytes, mut bad) = (0usize, 0usize, 0u64, 0usize);
        while left > 0 {
            let chunk = left.min(n - i);
            let slots = &mut self.slots;
            let (k, b, unusual) = if self.mid_frame {
                (0, 0, true)
            } else {
                slots.rx_clean(&self.ring, i, chunk, MIN_FRAME, span, out)
            };
            scanned += k;
            got += k;
            bytes += b;
            i += k;
            if i == n {
                i = 0;
            }
            left -= k;
            if !unusual {
                if k < chunk {
                    break;
                }
                continue;
            }
            // One descriptor off the fast path (DD set, unless discarding).
            let d = self.ring.read_wb(i as u16);
            if !d.is_done() {
                break;
            }
            let m = self.slots.take(i);
            scanned += 1;
            i += 1;
            if i == n {
                i = 0;
            }
            left -= 1;
            let m = if self.mid_frame || !d.is_eop() {
                // A buffer of a frame that spans several.
                match self.segment(m, &d) {
                    Segment::More => continue,
                    Segment::Dropped(descs) => {
                        bad += descs;
                        continue;
                    }
                    Segment::Frame(m) => Some(m),
                }
            } else if let Some(m) = m {
                Self::unusual(m, &d, span)
            } else {
                None
            };
            let Some(m) = m else {
                bad += 1;
                continue;
            };
            let len = m.pkt_len() as u64;
            match out.push(m) {
                Ok(()) => {
                    got += 1;
                    bytes += len;
                }
                // Cannot happen (left <= spare); never lose a buffer silently.
                Err(m) => {
                    drop(m);
                    bad += 1;
                }
            }
        }
        self.next = i as u16;
        (scanned, got, bytes, bad)
    }

    /// One buffer of a frame that spans several (no EOP until its last): its
    /// mbuf joins the chain; at the EOP the chain is the packet, with what
    /// that descriptor reports, unless a buffer was bad (an error bit, a
    /// length that is not the buffer's, a slot without an mbuf): then the
    /// frame is dropped whole, each of its descriptors counted.
    #[cold]
    #[inline(never)]
    fn segment(&mut self, m: Option<Mbuf>, d: &RxDesc) -> Segment {
        self.mid_frame = !d.is_eop();
        self.chain_descs += 1;
        let len = d.pkt_len() as usize;
        // Every buffer but the last is full.
        let len_ok = if d.is_eop() {
            len <= self.buf_len as usize
        } else {
            len == self.buf_len as usize
        };
        match m {
            Some(mut m) if !self.broken && d.errors() & rx_error::FATAL == 0 && len_ok => {
                if !m.set_len(len) || self.chain.push(m).is_err() {
                    self.broken = true;
                }
            }
            _ => self.broken = true,
        }
        if !d.is_eop() {
            return Segment::More;
        }
        let descs = std::mem::take(&mut self.chain_descs);
        if std::mem::take(&mut self.broken) || self.chain.pkt_len() < MIN_FRAME {
            self.chain.discard();
            return Segment::Dropped(descs);
        }
        let Some(mut m) = self.chain.finish() else {
            return Segment::Dropped(descs);
        };
        Self::report(&mut m, d);
        Segment::Frame(m)
    }

    /// A one-buffer frame off the common path: a fatal error bit or a length
    /// outside the buffer (dropped), or checksum errors (delivered with their
    /// flags). Returns the mbuf to deliver (None: count it as bad; the mbuf is
    /// freed).
    #[cold]
    #[inline(never)]
    fn unusual(m: Mbuf, d: &RxDesc, span: usize) -> Option<Mbuf> {
        if d.errors() & rx_error::FATAL != 0 {
            // A frame the device flagged: mbuf freed.
            return None;
        }
        let len = d.pkt_len() as usize;
        if len.wrapping_sub(MIN_FRAME) > span {
            return None;
        }
        let mut m = m;
        if !m.set_len(len) {
            return None;
        }
        Self::report(&mut m, d);
        Some(m)
    }

    /// Put what the (EOP) descriptor reports into the packet's first mbuf:
    /// the flags (the refill leaves them to the receive path), RSS hash,
    /// stripped tag, checksum errors.
    fn report(m: &mut Mbuf, d: &RxDesc) {
        let errors = d.errors();
        m.set_ol_flags(0);
        if let Some(h) = d.rss_hash() {
            m.set_rss_hash(h);
            m.set_ol_flags(flags::RX_RSS_HASH);
        }
        if let Some(tci) = d.l2tag1() {
            // The device took the tag out of the frame (a PF that refused
            // DISABLE_VLAN_STRIPPING): hand it over as DPDK does.
            m.set_vlan_tci(tci);
            m.set_ol_flags(m.ol_flags() | flags::RX_VLAN | flags::RX_VLAN_STRIPPED);
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
    }
}

/// What became of a buffer of a frame that spans several.
enum Segment {
    /// Part of the frame; more to come.
    More,
    /// The last one: the whole frame.
    Frame(Mbuf),
    /// The last one of a frame dropped whole: the descriptors it took.
    Dropped(usize),
}

impl<B: Bar> RxQueue for IavfRxQueue<B> {
    fn burst_mode(&self) -> Option<&'static str> {
        Some(self.slots.burst_mode())
    }

    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        if self.shared.generation() != self.seen_gen {
            return self.new_generation(out);
        }
        // An idle queue costs one status read: nothing written back at `next`
        // (or no buffer posted at all: `next == tail`).
        if self.next == self.tail || !self.ring.is_done(self.next) {
            if self.nb_hold >= self.free_thresh {
                // A refill the pool was too short for: retried at every burst.
                self.refill_retry();
            }
            return 0;
        }
        self.receive(out)
    }
}

impl<B: Bar> IavfRxQueue<B> {
    /// The generation changed: the VF is being reset (leave the ring alone),
    /// or it was, and the ring is re-armed before receiving again.
    #[cold]
    #[inline(never)]
    fn new_generation(&mut self, out: &mut MbufBatch) -> usize {
        let g = self.shared.generation();
        if g % 2 == 1 {
            return 0;
        }
        self.rearm();
        self.seen_gen = g;
        self.shared.ack_rx(self.queue_id as usize, g);
        if self.next == self.tail || !self.ring.is_done(self.next) {
            return 0;
        }
        self.receive(out)
    }
}

impl<B: Bar> Drop for IavfRxQueue<B> {
    fn drop(&mut self) {
        if !self.slots.is_empty() {
            let slots = std::mem::replace(&mut self.slots, MbufSlots::new(0));
            self.shared.retire(true, self.queue_id as usize, slots);
        }
    }
}
