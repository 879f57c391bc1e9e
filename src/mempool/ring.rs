//! A bounded multi-producer/multi-consumer ring of pointer-sized values with
//! bulk and burst operations, in the manner of DPDK's rte_ring.
//!
//! Producers reserve a range by moving `prod.head` (a CAS in multi-producer mode,
//! a plain store in single-producer mode), write their slots, then publish by
//! moving `prod.tail` once every earlier producer has published. Consumers mirror
//! this. One atomic read-modify-write per burst, none per element: the slots are
//! atomics only so that the ring needs no `unsafe`, and relaxed loads and stores
//! of them compile to plain moves.
//!
//! Ordering, in the Rust (C++20) memory model: every tail store is Release and
//! every load of the other side's tail is Acquire, so what a side did to the
//! slots happens before the other side uses them. In multi-producer (consumer)
//! mode a thread publishes only after the one before it did, and its wait for
//! that is an Acquire load too: the chain A's slot writes -> A's tail store ->
//! B's wait -> B's tail store -> the consumer's load carries A's writes to the
//! consumer. A Relaxed wait would be enough on x86-64 (a total store order) but
//! not in the language's model; an Acquire load is the same plain `mov` there.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Whether several threads may enqueue (or dequeue) at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// Exactly one thread at a time: no CAS.
    Single,
    /// Any number of threads: CAS on the head.
    Multi,
}

/// One side's indices: `head` is how far it has reserved, `tail` how far it
/// has published. Producers and consumers move theirs the same way.
#[derive(Debug)]
struct HeadTail {
    head: AtomicU32,
    tail: AtomicU32,
}

impl HeadTail {
    fn new() -> CachePadded<HeadTail> {
        CachePadded::new(HeadTail {
            head: AtomicU32::new(0),
            tail: AtomicU32::new(0),
        })
    }

    /// Reserve `want` entries past the head, or fewer unless `all_or_nothing`,
    /// where `room(old_head)` is how many the other side leaves: a plain store
    /// in single mode, a CAS in multi mode. The reserved range's start and
    /// length, or `None` when nothing was reserved.
    #[inline(always)]
    fn reserve(
        &self,
        sync: Sync,
        want: u32,
        all_or_nothing: bool,
        room: impl Fn(u32) -> u32,
    ) -> Option<(u32, u32)> {
        if want == 0 {
            return None;
        }
        loop {
            let old_head = self.head.load(Ordering::Relaxed);
            let room = room(old_head);
            let n = if want <= room {
                want
            } else if all_or_nothing {
                return None;
            } else {
                room
            };
            if n == 0 {
                return None;
            }
            let new_head = old_head.wrapping_add(n);
            match sync {
                Sync::Single => {
                    self.head.store(new_head, Ordering::Relaxed);
                    return Some((old_head, n));
                }
                Sync::Multi => {
                    if self
                        .head
                        .compare_exchange_weak(
                            old_head,
                            new_head,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return Some((old_head, n));
                    }
                }
            }
        }
    }

    /// Publish the `n` entries reserved at `old_head` by moving the tail past
    /// them (Release: the other side's Acquire of the tail sees the slots).
    #[inline(always)]
    fn publish(&self, sync: Sync, old_head: u32, n: u32) {
        if sync == Sync::Multi {
            // Publish in reservation order: wait for earlier reservations.
            // Acquire, so that their slot accesses happen before our Release of
            // the tail below: a consumer that sees a producer's tail then sees
            // the earlier producers' writes too, and a producer that sees a
            // consumer's tail does not overwrite a slot an earlier consumer is
            // still reading. (A plain store ends a release sequence, so without
            // this the other side's Acquire would synchronize with our store
            // only.)
            while self.tail.load(Ordering::Acquire) != old_head {
                std::hint::spin_loop();
            }
        }
        self.tail.store(old_head.wrapping_add(n), Ordering::Release);
    }
}

/// The ring. Capacity is a power of two; indices run freely and wrap.
#[derive(Debug)]
pub struct PtrRing {
    prod: CachePadded<HeadTail>,
    cons: CachePadded<HeadTail>,
    mask: u32,
    capacity: u32,
    prod_sync: Sync,
    cons_sync: Sync,
    slots: Box<[AtomicUsize]>,
}

impl PtrRing {
    /// A ring holding up to `capacity` values (rounded up to a power of two).
    pub fn new(capacity: usize, prod_sync: Sync, cons_sync: Sync) -> PtrRing {
        let size = capacity.max(2).next_power_of_two();
        assert!(size <= 1 << 30, "ring too large");
        PtrRing {
            prod: HeadTail::new(),
            cons: HeadTail::new(),
            mask: size as u32 - 1,
            capacity: size as u32,
            prod_sync,
            cons_sync,
            slots: (0..size).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// How many values fit.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Values currently published (a snapshot).
    pub fn len(&self) -> usize {
        let prod = self.prod.tail.load(Ordering::Acquire);
        let cons = self.cons.tail.load(Ordering::Acquire);
        (prod.wrapping_sub(cons) as usize).min(self.capacity as usize)
    }

    /// Whether the ring is empty (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enqueue all of `values` or none. Returns whether they went in.
    pub fn enqueue_bulk(&self, values: &[usize]) -> bool {
        self.enqueue(values, true) == values.len()
    }

    /// Enqueue as many of `values` as fit, from the front. Returns how many.
    pub fn enqueue_burst(&self, values: &[usize]) -> usize {
        self.enqueue(values, false)
    }

    /// Dequeue exactly `out.len()` values or none. Returns whether it did.
    pub fn dequeue_bulk(&self, out: &mut [usize]) -> bool {
        let n = out.len();
        self.dequeue(out, true) == n
    }

    /// Dequeue up to `out.len()` values. Returns how many were written to the front of `out`.
    pub fn dequeue_burst(&self, out: &mut [usize]) -> usize {
        self.dequeue(out, false)
    }

    #[inline]
    fn enqueue(&self, values: &[usize], all_or_nothing: bool) -> usize {
        let room = |old_head: u32| {
            // Acquire pairs with the consumer's Release of cons.tail: the slots it
            // freed are no longer read once we see them free.
            let cons_tail = self.cons.tail.load(Ordering::Acquire);
            self.capacity.wrapping_add(cons_tail).wrapping_sub(old_head)
        };
        let Some((old_head, n)) =
            self.prod
                .reserve(self.prod_sync, values.len() as u32, all_or_nothing, room)
        else {
            return 0;
        };
        for (i, v) in values[..n as usize].iter().enumerate() {
            let idx = (old_head.wrapping_add(i as u32) & self.mask) as usize;
            self.slots[idx].store(*v, Ordering::Relaxed);
        }
        self.prod.publish(self.prod_sync, old_head, n);
        n as usize
    }

    #[inline]
    fn dequeue(&self, out: &mut [usize], all_or_nothing: bool) -> usize {
        let room = |old_head: u32| {
            // Acquire pairs with the producer's Release of prod.tail: its slot
            // writes are visible once we see them published.
            let prod_tail = self.prod.tail.load(Ordering::Acquire);
            prod_tail.wrapping_sub(old_head)
        };
        let Some((old_head, n)) =
            self.cons
                .reserve(self.cons_sync, out.len() as u32, all_or_nothing, room)
        else {
            return 0;
        };
        for (i, o) in out[..n as usize].iter_mut().enumerate() {
            let idx = (old_head.wrapping_add(i as u32) & self.mask) as usize;
            *o = self.slots[idx].load(Ordering::Relaxed);
        }
        self.cons.publish(self.cons_sync, old_head, n);
        n as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bulk_is_all_or_nothing_and_burst_takes_what_fits() {
        let r = PtrRing::new(8, Sync::Single, Sync::Single);
        assert_eq!(r.capacity(), 8);
        assert!(r.enqueue_bulk(&[1, 2, 3, 4, 5, 6]));
        assert!(!r.enqueue_bulk(&[7, 8, 9]), "only two slots free");
        assert_eq!(r.len(), 6);
        assert_eq!(r.enqueue_burst(&[7, 8, 9]), 2);
        let mut out = [0usize; 10];
        assert!(!r.dequeue_bulk(&mut out[..9]));
        assert_eq!(r.dequeue_burst(&mut out), 8);
        assert_eq!(&out[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(r.is_empty());
    }

    #[test]
    fn indices_wrap_past_u32_max() {
        let r = PtrRing::new(4, Sync::Single, Sync::Single);
        r.prod.head.store(u32::MAX - 1, Ordering::Relaxed);
        r.prod.tail.store(u32::MAX - 1, Ordering::Relaxed);
        r.cons.head.store(u32::MAX - 1, Ordering::Relaxed);
        r.cons.tail.store(u32::MAX - 1, Ordering::Relaxed);
        for round in 0..10usize {
            assert!(r.enqueue_bulk(&[round, round + 1, round + 2]));
            let mut out = [0; 3];
            assert!(r.dequeue_bulk(&mut out));
            assert_eq!(out, [round, round + 1, round + 2]);
        }
    }

    #[test]
    fn multi_producer_multi_consumer_loses_and_duplicates_nothing() {
        const PER: usize = 20_000;
        let r = Arc::new(PtrRing::new(64, Sync::Multi, Sync::Multi));
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut next = 0;
                    while next < PER {
                        let end = (next + 7).min(PER);
                        let vals: Vec<usize> = (next..end).map(|i| p * PER + i + 1).collect();
                        next += r.enqueue_burst(&vals);
                    }
                })
            })
            .collect();
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let (r, taken) = (r.clone(), taken.clone());
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0; 5];
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
                    while taken.load(Ordering::Relaxed) < 2 * PER
                        && std::time::Instant::now() < deadline
                    {
                        let n = r.dequeue_burst(&mut buf);
                        taken.fetch_add(n, Ordering::Relaxed);
                        got.extend_from_slice(&buf[..n]);
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<usize> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        let expect: Vec<usize> = (0..2)
            .flat_map(|p| (0..PER).map(move |i| p * PER + i + 1))
            .collect();
        assert_eq!(all, expect);
    }
}
