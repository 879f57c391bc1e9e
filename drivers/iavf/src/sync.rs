//! What a started port's queues share with its control thread, and how a VF
//! reset is agreed on without a lock on the data path.
//!
//! **Generation.** One counter per start: even while the queues may run, odd
//! while the VF is being reset. A queue loads it (acquire) once per burst and
//! compares it with the generation it last saw: equal is the fast path (one
//! load, one compare). Odd: the burst returns 0 without touching its ring or
//! registers (transmit leaves every packet with the caller). A new even value:
//! the control thread has reset and reconfigured the VF (rings at the same
//! addresses), so the queue first re-arms its own ring — receive re-posts the
//! buffers it holds, transmit frees what was in flight (counted as lost) — and
//! writes its tail, then publishes the generation as its *ack* (release).
//!
//! **Enabling after a reset.** The control thread enables a queue
//! (VIRTCHNL_OP_ENABLE_QUEUES) only once it has seen that queue's ack for the
//! current generation. The ack is stored after the queue's last access of the
//! old ring state and after its re-arm, so when the device starts reading a
//! ring it reads what the re-arm wrote, never a stale tail or a written-back
//! descriptor (which a device would take for a buffer address). A queue that
//! is not being polled stays disabled until its next burst, which is harmless:
//! nobody is receiving from it.
//!
//! **Dropped queues.** A queue dropped while its port is started may still
//! have buffers the device writes into; it parks its mbuf table here instead of
//! freeing it, and the port frees parked tables after VIRTCHNL_OP_DISABLE_QUEUES
//! (or the reset on close) has quieted the device.
#![deny(unsafe_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::ring::MbufSlots;

/// A value on its own cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Ack value of a queue that was dropped.
pub(crate) const GONE: u64 = u64::MAX;

#[derive(Debug, Default)]
struct Parking {
    /// The device no longer touches the rings: free instead of parking.
    quiet: bool,
    slots: Vec<MbufSlots>,
}

/// State shared by a started port's queues and its control thread.
#[derive(Debug)]
pub(crate) struct QueueShared {
    generation: Padded<AtomicU64>,
    rx_acks: Box<[Padded<AtomicU64>]>,
    tx_acks: Box<[Padded<AtomicU64>]>,
    parking: Mutex<Parking>,
    live: AtomicUsize,
}

impl QueueShared {
    /// Shared state for `nb_rx` + `nb_tx` queues, all at generation 0.
    pub fn new(nb_rx: usize, nb_tx: usize) -> Arc<QueueShared> {
        Arc::new(QueueShared {
            generation: Padded(AtomicU64::new(0)),
            rx_acks: (0..nb_rx).map(|_| Padded(AtomicU64::new(0))).collect(),
            tx_acks: (0..nb_tx).map(|_| Padded(AtomicU64::new(0))).collect(),
            parking: Mutex::new(Parking::default()),
            live: AtomicUsize::new(nb_rx + nb_tx),
        })
    }

    /// Queue side, once per burst: the current generation.
    #[inline(always)]
    pub fn generation(&self) -> u64 {
        self.generation.0.load(Ordering::Acquire)
    }

    /// Queue side: receive queue `q` re-armed for generation `g`.
    pub fn ack_rx(&self, q: usize, g: u64) {
        self.rx_acks[q].0.store(g, Ordering::Release);
    }

    /// Queue side: transmit queue `q` re-armed for generation `g`.
    pub fn ack_tx(&self, q: usize, g: u64) {
        self.tx_acks[q].0.store(g, Ordering::Release);
    }

    /// Queue side, on drop: hand the mbuf table over (or free it if the device
    /// is already quiet) and mark the queue gone.
    pub fn retire(&self, rx: bool, q: usize, slots: MbufSlots) {
        {
            let mut p = self.parking.lock().unwrap_or_else(|e| e.into_inner());
            if p.quiet {
                drop(p);
                drop(slots);
            } else {
                p.slots.push(slots);
            }
        }
        if rx {
            self.rx_acks[q].0.store(GONE, Ordering::Release);
        } else {
            self.tx_acks[q].0.store(GONE, Ordering::Release);
        }
        self.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Queues not dropped yet.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Control side: tell the queues to stop touching their rings (a reset
    /// began). Returns the new (odd) generation.
    pub fn stop(&self) -> u64 {
        let g = self.generation.0.load(Ordering::Relaxed);
        let odd = if g.is_multiple_of(2) { g + 1 } else { g };
        self.generation.0.store(odd, Ordering::Release);
        odd
    }

    /// Whether the queues are stopped.
    #[cfg(test)]
    pub fn is_stopped(&self) -> bool {
        self.generation() % 2 == 1
    }

    /// Control side: the VF is configured again; queues re-arm at their next
    /// burst. Returns the new (even) generation.
    pub fn resume(&self) -> u64 {
        let g = self.generation.0.load(Ordering::Relaxed);
        let even = if g % 2 == 1 { g + 1 } else { g + 2 };
        self.generation.0.store(even, Ordering::Release);
        even
    }

    /// Control side: bitmaps of the queues that acked generation `g` among
    /// `rx_pending` / `tx_pending`, and of those dropped (never to ack).
    pub fn acked(&self, g: u64, rx_pending: u32, tx_pending: u32) -> ((u32, u32), (u32, u32)) {
        let scan = |acks: &[Padded<AtomicU64>], pending: u32| {
            let (mut ok, mut gone) = (0u32, 0u32);
            for (q, a) in acks.iter().enumerate().take(32) {
                if pending & (1 << q) == 0 {
                    continue;
                }
                match a.0.load(Ordering::Acquire) {
                    v if v == g => ok |= 1 << q,
                    GONE => gone |= 1 << q,
                    _ => {}
                }
            }
            (ok, gone)
        };
        let (rx_ok, rx_gone) = scan(&self.rx_acks, rx_pending);
        let (tx_ok, tx_gone) = scan(&self.tx_acks, tx_pending);
        ((rx_ok, tx_ok), (rx_gone, tx_gone))
    }

    /// Control side: the device no longer touches the rings. Frees every
    /// parked table; later drops free their tables at once. Returns how many
    /// mbufs were freed.
    pub fn quiesce(&self) -> usize {
        let parked = {
            let mut p = self.parking.lock().unwrap_or_else(|e| e.into_inner());
            p.quiet = true;
            std::mem::take(&mut p.slots)
        };
        parked.into_iter().map(|mut s| s.free_all()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::Mempool;
    use nicpoll::memory::DmaMemory;
    use nicpoll::mempool::MempoolConfig;

    #[test]
    fn generations_alternate_and_acks_are_seen() {
        let s = QueueShared::new(2, 1);
        assert_eq!(s.generation(), 0);
        assert!(!s.is_stopped());
        assert_eq!(s.stop(), 1);
        assert_eq!(s.stop(), 1, "stopping twice keeps the generation");
        assert!(s.is_stopped());
        assert_eq!(s.resume(), 2);
        assert_eq!(s.acked(2, 0b11, 0b1), ((0, 0), (0, 0)));
        s.ack_rx(1, 2);
        s.ack_tx(0, 2);
        assert_eq!(s.acked(2, 0b11, 0b1), ((0b10, 0b1), (0, 0)));
        assert_eq!(s.resume(), 4, "a resume without a stop still moves on");
    }

    #[test]
    fn dropped_queues_park_until_quiet() {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("park", 8)).unwrap();
        let s = QueueShared::new(1, 1);
        let mut slots = MbufSlots::new(4);
        assert!(slots.fill(&pool, 0, 4));
        s.retire(true, 0, slots);
        assert_eq!(pool.in_use(), 4, "parked while the device may write");
        assert_eq!(s.live(), 1);
        assert_eq!(s.acked(0, 1, 0).1, (1, 0));
        assert_eq!(s.quiesce(), 4);
        assert_eq!(pool.in_use(), 0);
        let mut slots = MbufSlots::new(2);
        assert!(slots.fill(&pool, 0, 2));
        s.retire(false, 0, slots);
        assert_eq!(pool.in_use(), 0, "freed at once once quiet");
        assert_eq!(s.live(), 0);
    }
}
