//! [`MbufSlots`]: which mbuf each descriptor slot holds while the device owns
//! it, and its bulk fill and free (the loops that move mbufs between slots,
//! descriptors and batches are in `scalar`, `sse` and `avx2`), and the choice
//! of those loops ([`Loops`]).

use std::ptr::NonNull;

use nicpoll::mbuf::MbufHeader;
use nicpoll::{Mbuf, Mempool};

use crate::options::MaxSimd;

/// Which mbuf each descriptor slot holds, as raw element pointers (0: none).
///
/// While a slot holds an mbuf, the device may read or write its buffer: the
/// queue code takes it out ([`take`](Self::take)) only once the device is done
/// with it (DD seen, or the queue stopped). Dropping the table returns every
/// held mbuf to its pool, so it must only be dropped once the device has
/// stopped using the ring (see the port's parking of queues in `port.rs`).
#[derive(Debug)]
pub struct MbufSlots {
    pub(super) slots: Box<[usize]>,
    /// A length every held mbuf has room for: the smallest data room of the
    /// pools [`refill_rx`](Self::refill_rx) filled from (it prepares each
    /// header with the default data offset, so its capacity is the pool's data
    /// room); 0 once a slot was filled otherwise (`fill`, `put`: headers not
    /// prepared), for good: a table filled that way (none of iavf's receive
    /// rings) always takes the slow path. [`rx_clean`](Self::rx_clean) sets
    /// lengths up to it without a check per packet.
    pub(super) rx_room: usize,
    /// Which receive and transmit loops run (see [`set_loops`](Self::set_loops)).
    pub(super) loops: Loops,
}

/// The receive and transmit loops a queue runs: all take the same
/// descriptors and write the same headers; the vector ones take four
/// descriptors per step first, and leave the rest to the scalar loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loops {
    /// One or two descriptors per step.
    Scalar,
    /// Four per step with SSE4.1 (and SSSE3), as DPDK's
    /// `iavf_rxtx_vec_sse.c` (`ring::sse`).
    Sse41,
    /// Four per step with AVX2, as DPDK's `iavf_rxtx_vec_avx2.c`
    /// (`ring::avx2`).
    Avx2,
}

impl Loops {
    /// The widest loops this CPU runs within `max`: AVX2, else SSE4.1, else
    /// scalar (the CPU is asked each time: call it once per queue).
    pub fn choose(max: MaxSimd) -> Loops {
        match max {
            MaxSimd::Best if cpu_has_avx2() => Loops::Avx2,
            MaxSimd::Best | MaxSimd::Sse if cpu_has_sse41() => Loops::Sse41,
            _ => Loops::Scalar,
        }
    }

    /// What the loops are called in `burst_mode()` (as DPDK's burst mode
    /// names): "AVX2 Vector", "SSE Vector" or "Scalar".
    pub fn burst_mode(self) -> &'static str {
        match self {
            Loops::Avx2 => "AVX2 Vector",
            Loops::Sse41 => "SSE Vector",
            Loops::Scalar => "Scalar",
        }
    }
}

/// Whether this CPU runs the AVX2 loops.
pub fn cpu_has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the SSE4.1 loops (and SSSE3, which SSE4.1 implies
/// to the compiler that builds them).
pub fn cpu_has_sse41() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl MbufSlots {
    /// `n` empty slots; scalar loops until [`set_loops`](Self::set_loops).
    pub fn new(n: usize) -> MbufSlots {
        MbufSlots {
            slots: vec![0usize; n].into_boxed_slice(),
            rx_room: usize::MAX,
            loops: Loops::Scalar,
        }
    }

    /// Run the widest receive and transmit loops the CPU has within `max`
    /// ([`Loops::choose`]; DPDK picks its vector paths the same way, capped
    /// by its EAL's `--force-max-simd-bitwidth`). All take the same
    /// descriptors and write the same headers. Returns the loops chosen.
    pub fn set_loops(&mut self, max: MaxSimd) -> Loops {
        self.loops = Loops::choose(max);
        self.loops
    }

    /// What the loops run: "AVX2 Vector", "SSE Vector" or "Scalar" (DPDK's
    /// burst mode names).
    pub fn burst_mode(&self) -> &'static str {
        self.loops.burst_mode()
    }

    /// Number of slots.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether slot `i` holds an mbuf.
    #[inline(always)]
    pub fn is_held(&self, i: usize) -> bool {
        self.slots[i] != 0
    }

    /// Fill the `count` empty slots from `start` (no wrap) with fresh buffers
    /// from `pool`, in one bulk get; false (nothing taken) if the pool is short.
    #[inline]
    pub fn fill(&mut self, pool: &Mempool, start: usize, count: usize) -> bool {
        self.rx_room = 0;
        let s = &mut self.slots[start..start + count];
        debug_assert!(s.iter().all(|&p| p == 0), "refilling a held slot");
        // SAFETY: the elements become owned by this table, which gives each
        // back exactly once (take, free or drop).
        unsafe { pool.alloc_raw(s) }
    }

    /// The IOVA where a device must write a frame into slot `i`'s buffer: the
    /// element's fixed data offset (`buf_iova + default_headroom`). Panics
    /// if the slot is empty.
    #[inline(always)]
    pub fn rx_iova(&self, i: usize) -> u64 {
        let p = self.slots[i];
        assert!(p != 0, "slot {i} holds no mbuf");
        // SAFETY: a held slot is an element this table owns; the temporary Mbuf
        // is turned back into the raw pointer without being dropped.
        let m = unsafe { Mbuf::from_raw(NonNull::new_unchecked(p as *mut MbufHeader)) };
        let iova = m.buf_iova() + m.default_headroom() as u64;
        let _ = m.into_raw();
        iova
    }

    /// Take the mbuf out of slot `i` (the device is done with it).
    #[inline(always)]
    pub fn take(&mut self, i: usize) -> Option<Mbuf> {
        let p = std::mem::take(&mut self.slots[i]);
        // SAFETY: a non-zero slot is an element this table owned; ownership
        // moves to the returned Mbuf and the slot is now empty.
        NonNull::new(p as *mut MbufHeader).map(|h| unsafe { Mbuf::from_raw(h) })
    }

    /// Put an mbuf into empty slot `i` (handing it to the device). Returns the
    /// mbuf if the slot is not empty.
    #[inline(always)]
    pub fn put(&mut self, i: usize, m: Mbuf) -> Result<(), Mbuf> {
        if self.slots[i] != 0 {
            return Err(m);
        }
        self.rx_room = 0;
        self.slots[i] = m.into_raw().as_ptr() as usize;
        Ok(())
    }
}

impl MbufSlots {
    /// Transmit-ring cleanup: take the mbufs of slots `[start, start + count)`
    /// (the device is done with them) and give them back to their pools, in
    /// one bulk put straight from the slots when all are held and from one
    /// pool ([`nicpoll::mbuf::free_raw`]). Returns how many slots held one.
    #[inline]
    pub fn free_range(&mut self, start: usize, count: usize) -> usize {
        let s = &mut self.slots[start..start + count];
        // SAFETY: every non-zero slot holds an element this table owns; the
        // slots are emptied below, so ownership moves to the pools.
        let n = unsafe { nicpoll::mbuf::free_raw(s) };
        s.fill(0);
        n
    }

    /// Move every held mbuf to the front slots, keeping their order; returns
    /// how many are held. Only while the device does not use the ring.
    pub fn compact(&mut self) -> usize {
        let mut w = 0;
        for r in 0..self.slots.len() {
            if self.slots[r] != 0 {
                self.slots.swap(w, r);
                w += 1;
            }
        }
        w
    }

    /// Return every held mbuf to its pool; returns how many.
    pub fn free_all(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if let Some(m) = self.take(i) {
                drop(m);
                n += 1;
            }
        }
        n
    }

    /// How many slots hold an mbuf.
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|&&p| p != 0).count()
    }
}

impl Drop for MbufSlots {
    fn drop(&mut self) {
        self.free_all();
    }
}
