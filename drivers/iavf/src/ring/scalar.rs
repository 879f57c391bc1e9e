//! The data path's inner loops over [`MbufSlots`], one or two descriptors per
//! step: receive refill ([`MbufSlots::refill_rx`]), receive
//! ([`MbufSlots::rx_clean`]) and transmit ([`MbufSlots::tx_fill`]). When the
//! table runs vector loops (`MbufSlots::set_loops`), receive and transmit
//! hand the run to `avx2` or `sse` first and go on from where it stopped.

use std::ptr::NonNull;

use nicpoll::mbuf::{MbufBatch, MbufHeader, RxHeaderTemplate};
use nicpoll::{Mbuf, Mempool};

#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::desc_ring::{DescRing, rx_arm, rx_wb, rx_wb_rss, tx_put};
use super::slots::{Loops, MbufSlots};
#[cfg(target_arch = "x86_64")]
use super::sse;
use crate::desc::{RxDesc, TxDesc};

/// Free an mbuf off the fast path (a call the hot loops keep out of line).
#[cold]
#[inline(never)]
pub fn discard(m: Mbuf) {
    drop(m);
}

impl MbufSlots {
    /// Receive-ring refill: fill the `count` empty slots from `start` (no
    /// wrap) with fresh buffers from `pool` in one bulk get, prepare each
    /// one's header from `tmpl` (the receive path then writes only what the
    /// device reports), and hand each to the device in the descriptor of the
    /// same index of `ring` (read format, at the element's fixed data offset,
    /// see [`rx_iova`](Self::rx_iova)). False, and nothing taken or written,
    /// if the pool is short.
    #[inline(always)]
    pub fn refill_rx(
        &mut self,
        ring: &mut DescRing<RxDesc>,
        pool: &Mempool,
        start: usize,
        count: usize,
        tmpl: &RxHeaderTemplate,
    ) -> bool {
        let end = start + count;
        assert!(
            end <= self.slots.len() && end <= ring.len as usize,
            "refill of [{start}, {end}) outside the ring"
        );
        let s = &mut self.slots[start..end];
        debug_assert!(s.iter().all(|&p| p == 0), "refilling a held slot");
        // SAFETY: the elements become owned by this table, which gives each
        // back exactly once (take, free or drop).
        if !unsafe { pool.alloc_raw(s) } {
            return false;
        }
        // SAFETY: `start <= end <= ring.len` (one past the end at most).
        let base = unsafe { ring.base.as_ptr().add(start) };
        // Two buffers per iteration (half the loop overhead), then the odd one.
        let pairs = s.chunks_exact(2);
        let odd = pairs.remainder();
        let mut k = 0;
        for pair in pairs {
            // SAFETY: each `p` is an element the pool just handed out (not
            // null), owned by this table, no reference to it alive. The
            // descriptors `start + k`, `start + k + 1` are below `end <=
            // ring.len`, checked above.
            unsafe {
                let a = tmpl.apply(NonNull::new_unchecked(pair[0] as *mut MbufHeader));
                let b = tmpl.apply(NonNull::new_unchecked(pair[1] as *mut MbufHeader));
                rx_arm(base.add(k), a);
                rx_arm(base.add(k + 1), b);
            }
            k += 2;
        }
        if let [p] = *odd {
            // SAFETY: as above, for descriptor `start + k = end - 1`.
            unsafe {
                let iova = tmpl.apply(NonNull::new_unchecked(p as *mut MbufHeader));
                rx_arm(base.add(k), iova);
            }
        }
        // Prepared headers: capacity = the pool's data room.
        self.rx_room = self.rx_room.min(pool.data_room());
        true
    }

    /// The receive fast loop: from descriptor `start`, at most `max`
    /// descriptors (no wrap), while each is a clean whole frame
    /// ([`RxDesc::is_clean_eop`]) of a length in `lo..=lo + span`, set the
    /// length and RSS hash of its slot's mbuf (the rest of the header was
    /// prepared at refill, see [`refill_rx`](Self::refill_rx)) and move it to
    /// `out`'s spare slots (`out` must have room for `max`). Stops at the first
    /// descriptor not written back, or at one that is not such a frame (or
    /// whose slot holds no mbuf), leaving it for the caller's slow path.
    /// Returns (descriptors taken = mbufs delivered, their bytes, whether the
    /// caller must look at the descriptor after them itself: it stopped at a
    /// written-back descriptor it left, or the table's buffers were not
    /// prepared by [`refill_rx`](Self::refill_rx) and it took none).
    #[inline(always)]
    pub fn rx_clean(
        &mut self,
        ring: &DescRing<RxDesc>,
        start: usize,
        max: usize,
        lo: usize,
        span: usize,
        out: &mut MbufBatch,
    ) -> (usize, u64, bool) {
        let end = start + max;
        assert!(
            end <= self.slots.len() && end <= ring.len as usize,
            "receive scan of [{start}, {end}) outside the ring"
        );
        // Lengths up to `rx_room` fit every held mbuf (see `rx_room`): the
        // range check below is the capacity check too. If `lo` itself does
        // not fit, nothing is taken here: every descriptor goes to the
        // caller's slow path.
        if lo > self.rx_room {
            return (0, 0, true);
        }
        let span = span.min(self.rx_room - lo);
        let slots = self.slots[start..end].as_mut_ptr();
        let dst = out.spare_raw(max).as_mut_ptr();
        // SAFETY: `start <= end <= ring.len`.
        let base = unsafe { ring.base.as_ptr().add(start) };
        let mut k = 0;
        let mut bytes = 0u64;
        #[cfg(target_arch = "x86_64")]
        match self.loops {
            Loops::Avx2 => {
                // SAFETY: the CPU has AVX2 (`set_loops`); `max` descriptors
                // from `base`, slots from `slots` and spare slots from `dst`
                // are in bounds (checked above), the held slots' elements are
                // owned by this table with prepared headers (`lo + span <=
                // rx_room`).
                (k, bytes) = unsafe { avx2::rx_clean(base, slots, dst, max, lo, span) };
            }
            // (A data room is below 64 KiB, so `lo + span` is too whenever a
            // slot is held; the SSE loop counts in 32-bit lanes.)
            Loops::Sse41 if lo + span <= u16::MAX as usize => {
                // SAFETY: the CPU has SSE4.1 and SSSE3 (`set_loops`); as
                // above, and `lo + span < 2^16`.
                (k, bytes) = unsafe { sse::rx_clean(base, slots, dst, max, lo, span) };
            }
            _ => {}
        }
        // The common case with RSS on: clean whole frames with a hash, which
        // and whose flag are stored without a test per packet. A clean frame
        // without a hash goes on in the general loop below.
        // Two at a time while both pass (half the loop overhead) ...
        // `k < max - 1`, i.e. `k + 1 < max` (none if `max` is 0 or 1).
        let last = max.saturating_sub(1);
        while k < last {
            // SAFETY: `k + 1 < max`: as in the general loop below, for
            // descriptors, slots and spare slots `k` and `k + 1`.
            unsafe {
                let (d0, hash0) = rx_wb_rss(base.add(k));
                let (d1, hash1) = rx_wb_rss(base.add(k + 1));
                if !(d0.is_clean_eop_rss() & d1.is_clean_eop_rss()) {
                    break;
                }
                let (l0, l1) = (d0.pkt_len_unsplit() as usize, d1.pkt_len_unsplit() as usize);
                // Both in range if the or of `len - lo` is: at least the
                // larger, so a pair refused here may still be fine (the loops
                // after decide).
                if l0.wrapping_sub(lo) | l1.wrapping_sub(lo) > span {
                    break;
                }
                let (r0, r1) = (*slots.add(k), *slots.add(k + 1));
                let (Some(h0), Some(h1)) = (
                    NonNull::new(r0 as *mut MbufHeader),
                    NonNull::new(r1 as *mut MbufHeader),
                ) else {
                    break;
                };
                // As below, for both.
                let mut m0 = std::mem::ManuallyDrop::new(Mbuf::from_raw(h0));
                let mut m1 = std::mem::ManuallyDrop::new(Mbuf::from_raw(h1));
                m0.set_len_unchecked(l0);
                m0.set_rss_hash(hash0);
                // All the flags (the refill leaves them to us).
                m0.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                m1.set_len_unchecked(l1);
                m1.set_rss_hash(hash1);
                m1.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                *slots.add(k) = 0;
                *slots.add(k + 1) = 0;
                dst.add(k).write(r0);
                dst.add(k + 1).write(r1);
                bytes += (l0 + l1) as u64;
            }
            k += 2;
        }
        // ... then one at a time.
        let rss_stop = loop {
            if k == max {
                break Some(false);
            }
            // SAFETY: as in the general loop below.
            unsafe {
                let (d, hash) = rx_wb_rss(base.add(k));
                if !d.is_clean_eop_rss() {
                    break if d.is_clean_eop() {
                        None
                    } else {
                        Some(d.is_done())
                    };
                }
                let len = d.pkt_len_unsplit() as usize;
                if len.wrapping_sub(lo) > span {
                    break Some(true);
                }
                let raw = *slots.add(k);
                let Some(h) = NonNull::new(raw as *mut MbufHeader) else {
                    break Some(true);
                };
                // As below.
                let mut m = std::mem::ManuallyDrop::new(Mbuf::from_raw(h));
                m.set_len_unchecked(len);
                m.set_rss_hash(hash);
                // All the flags (the refill leaves them to us).
                m.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                *slots.add(k) = 0;
                dst.add(k).write(raw);
                bytes += len as u64;
            }
            k += 1;
        };
        let unusual = loop {
            if let Some(u) = rss_stop {
                break u;
            }
            if k == max {
                break false;
            }
            // SAFETY: `k < max`: descriptor `start + k < end <= ring.len` is
            // in bounds, mapped, aligned; so is slot `start + k`, and spare
            // slot `k` of `out` (`max` long).
            unsafe {
                let d = rx_wb(base.add(k));
                if !d.is_clean_eop() {
                    break d.is_done();
                }
                // In range, and no header-split bits set.
                let len = d.pkt_len_unsplit() as usize;
                if len.wrapping_sub(lo) > span {
                    break true;
                }
                let raw = *slots.add(k);
                let Some(h) = NonNull::new(raw as *mut MbufHeader) else {
                    break true;
                };
                // A non-zero slot is an element this table owns; the temporary
                // Mbuf is not dropped: the element stays in the slot or moves
                // to `out` below.
                let mut m = std::mem::ManuallyDrop::new(Mbuf::from_raw(h));
                // `lo <= len <= lo + span <= rx_room <= m.capacity()`.
                m.set_len_unchecked(len);
                // The refill leaves the flags to the receive path.
                if let Some(hash) = d.rss_hash() {
                    m.set_rss_hash(hash);
                    m.set_ol_flags(nicpoll::mbuf::flags::RX_RSS_HASH);
                } else {
                    m.set_ol_flags(0);
                }
                *slots.add(k) = 0;
                dst.add(k).write(raw);
                bytes += len as u64;
            }
            k += 1;
        };
        // SAFETY: the first `k` spare slots hold the elements taken from the
        // slots, which this table owned and no longer holds.
        unsafe { out.commit_raw(k) };
        (k, bytes, unusual)
    }

    /// The transmit fast loop: take up to `max` mbufs from the front of
    /// `pkts` (descriptors `[start, start + max)` free, no wrap) and hand each
    /// to the device: one data descriptor for the whole packet (EOP, ICRC, no
    /// RS) at the next index, the mbuf in that slot; a packet whose length is
    /// not in `min_len..=max_len` (`min_len` at least 1, `max_len` at most
    /// [`TX_MAX_BUF`](crate::desc::TX_MAX_BUF)) cannot be sent and is freed.
    /// It stops at a chain (one descriptor per segment: the caller sends it),
    /// which stays at the front of `pkts` with what follows it.
    /// Returns (descriptors written, mbufs taken from `pkts`, bytes written).
    #[inline(always)]
    pub fn tx_fill(
        &mut self,
        ring: &mut DescRing<TxDesc>,
        start: usize,
        max: usize,
        pkts: &mut MbufBatch,
        min_len: usize,
        max_len: usize,
    ) -> (usize, usize, u64) {
        let min_len = min_len.max(1);
        // How many lengths pass: `len` does iff `len - min_len < valid` as
        // unsigned numbers (one subtraction and one compare, as a plain
        // `1..=max_len` check costs); 0 if none does.
        let valid = (max_len.min(crate::desc::TX_MAX_BUF) + 1).saturating_sub(min_len);
        let describe = |m: &Mbuf| {
            let len = m.len();
            (len.wrapping_sub(min_len) < valid && !m.is_chained())
                .then(|| (TxDesc::packet_fitting(m.data_iova(), len), len))
        };
        let end = start + max;
        assert!(
            end <= self.slots.len() && end <= ring.len as usize,
            "transmit of [{start}, {end}) outside the ring"
        );
        let taken = pkts.take_front_raw(max.min(pkts.len()));
        let count = taken.len();
        let src = taken.as_ptr();
        // Packet `j` goes to descriptor and slot `start + j - refused`: in a
        // run without a refused packet both move with `j`, so the run loop
        // uses one index on bases shifted back by `refused` (only ever indexed
        // at `j >= refused`, i.e. at or after `start`).
        let desc0 = ring.base.as_ptr().wrapping_add(start);
        let slot0 = self.slots.as_mut_ptr().wrapping_add(start);
        let (mut j, mut refused, mut bytes) = (0usize, 0usize, 0u64);
        while j < count {
            let dbase = desc0.wrapping_sub(refused);
            let sbase = slot0.wrapping_sub(refused);
            #[cfg(target_arch = "x86_64")]
            if self.loops != Loops::Scalar && valid > 0 {
                let (src, d, sl, n) = (
                    src.wrapping_add(j),
                    dbase.wrapping_add(j),
                    sbase.wrapping_add(j),
                    count - j,
                );
                let max_len = min_len + valid - 1;
                // SAFETY: the CPU has the loop's extensions (`set_loops`:
                // AVX2, or SSE4.1 and SSSE3). Packets `j..count` are in
                // `taken`, owned by us; descriptor and slot `start + j -
                // refused + i` for `i < count - j` are below `end <=
                // ring.len` (as in the loops below), the slots empty by the
                // caller's accounting; `1 <= min_len <= max_len <=
                // TX_MAX_BUF`.
                let (n, b) = unsafe {
                    if self.loops == Loops::Avx2 {
                        avx2::tx_fill(src, d, sl, n, min_len, max_len)
                    } else {
                        sse::tx_fill(src, d, sl, n, min_len, max_len)
                    }
                };
                j += n;
                bytes += b;
            }
            // The run: no call, nothing dropped; two packets per iteration
            // while both lengths pass (tested on the or of `len - min_len`:
            // at least the larger, so a pair it refuses may still be fine and
            // the loop after decides) ...
            // (`count > j >= 0` here.)
            let last = count - 1;
            while j < last {
                // SAFETY: `j + 1 < count`: both are in `taken`, given to us
                // by `take_front_raw`; the temporary Mbufs are not dropped
                // (they move to the slots below, or stay for the loop after).
                let (p, q) = unsafe { (*src.add(j), *src.add(j + 1)) };
                // SAFETY: `p` and `q` are non-null headers of elements we own
                // (from `taken`); ManuallyDrop keeps these views from freeing them.
                let (mp, mq) = unsafe {
                    (
                        std::mem::ManuallyDrop::new(Mbuf::from_raw(NonNull::new_unchecked(
                            p as *mut MbufHeader,
                        ))),
                        std::mem::ManuallyDrop::new(Mbuf::from_raw(NonNull::new_unchecked(
                            q as *mut MbufHeader,
                        ))),
                    )
                };
                let (lp, lq) = (mp.len(), mq.len());
                if (lp.wrapping_sub(min_len) | lq.wrapping_sub(min_len) >= valid)
                    | mp.is_chained()
                    | mq.is_chained()
                {
                    break;
                }
                // Both in `min_len..=max_len`, `max_len <= TX_MAX_BUF`.
                // SAFETY: as in the loop below, for `j` and `j + 1 < count`.
                unsafe {
                    tx_put(
                        dbase.wrapping_add(j),
                        TxDesc::packet_fitting(mp.data_iova(), lp),
                    );
                    tx_put(
                        dbase.wrapping_add(j + 1),
                        TxDesc::packet_fitting(mq.data_iova(), lq),
                    );
                    let slot = sbase.wrapping_add(j);
                    debug_assert_eq!(*slot, 0, "transmit slot still held");
                    debug_assert_eq!(*slot.add(1), 0, "transmit slot still held");
                    *slot = p;
                    *slot.add(1) = q;
                }
                bytes += (lp + lq) as u64;
                j += 2;
            }
            // ... and one at a time.
            while j < count {
                // SAFETY: `j < count`: `taken` holds `count` elements, which
                // `take_front_raw` gave us; the temporary Mbuf is not dropped
                // (it moves to the slot below).
                let p = unsafe { *src.add(j) };
                // SAFETY: `p` is the non-null header of an element we own;
                // ManuallyDrop keeps this view from freeing it.
                let m = std::mem::ManuallyDrop::new(unsafe {
                    Mbuf::from_raw(NonNull::new_unchecked(p as *mut MbufHeader))
                });
                let Some((d, len)) = describe(&m) else { break };
                // SAFETY: `dbase + j` and `sbase + j` are descriptor and slot
                // `start + j - refused` with `j - refused < count <= max`, so
                // below `end <= ring.len`: in bounds (the descriptor mapped,
                // aligned, and not read by the device before the tail moves).
                unsafe {
                    tx_put(dbase.wrapping_add(j), d);
                    let slot = sbase.wrapping_add(j);
                    // An empty slot by the caller's accounting; were it not,
                    // its mbuf would leak (never be freed twice).
                    debug_assert_eq!(*slot, 0, "transmit slot still held");
                    *slot = p;
                }
                bytes += len as u64;
                j += 1;
            }
            if j < count {
                // SAFETY: as above; this one is not sent: ours to free, or
                // (a chain) to give back.
                let m = unsafe {
                    Mbuf::from_raw(NonNull::new_unchecked(*src.add(j) as *mut MbufHeader))
                };
                if m.is_chained() {
                    let _ = m.into_raw();
                    // Packets `j..count`, a chain first, go back to the batch:
                    // the last `count - j` of what take_front_raw gave, and
                    // nothing else touched the batch since.
                    // SAFETY: as said; we give up their ownership.
                    unsafe { pkts.untake_front_raw(count - j) };
                    return (j - refused, j, bytes);
                }
                discard(m);
                refused += 1;
                j += 1;
            }
        }
        let used = count - refused;
        (used, count, bytes)
    }
}
