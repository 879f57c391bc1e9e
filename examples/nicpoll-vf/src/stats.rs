//! Counters of one served VF (the protocol side; the device's own come from
//! the model) and the line printed per VF on SIGUSR1 and at exit.
#![forbid(unsafe_code)]

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nicpoll_iavf::sim::SimVf;

use crate::guard::Bad;
use crate::irq::Interrupts;

/// Counters of the vfio-user side of a VF.
#[derive(Default)]
pub struct VfStats {
    /// A client is connected.
    pub connected: AtomicBool,
    /// Clients that connected.
    pub connections: AtomicU64,
    /// Messages received whole.
    pub messages: AtomicU64,
    /// Messages refused, per [`Bad`] kind (in `Bad::ALL` order).
    pub bad: [AtomicU64; 5],
    /// Connections closed because a header gave a size no message can have.
    pub unframed: AtomicU64,
    /// Clients that went away in the middle of a message.
    pub truncated: AtomicU64,
    /// Messages that came with more descriptors than fit (the rest lost).
    pub truncated_fds: AtomicU64,
    /// Posted writes (no reply wanted) that failed.
    pub posted_errors: AtomicU64,
    /// Other commands that failed (answered with an error).
    pub failed: AtomicU64,
    /// Register accesses the device refused (size, alignment).
    pub bad_register_accesses: AtomicU64,
    /// Function-level resets: DEVICE_RESET, FLR in config space, client gone.
    pub resets: AtomicU64,
    /// DMA maps and unmaps.
    pub dma_maps: AtomicU64,
    pub dma_unmaps: AtomicU64,
    /// DMA maps of files that could not be sealed against shrinking.
    pub unsealed_maps: AtomicU64,
}

impl VfStats {
    /// Count one refused message.
    pub fn count_bad(&self, kind: Bad) {
        let i = Bad::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.bad[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Refused messages of `kind`.
    pub fn bad(&self, kind: Bad) -> u64 {
        let i = Bad::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        self.bad[i].load(Ordering::Relaxed)
    }

    /// All refused messages.
    pub fn bad_total(&self) -> u64 {
        self.bad.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// One line about VF `index`: the client, the protocol's counters, the
/// device's traffic and faults.
pub fn line(index: usize, stats: &VfStats, irqs: &Interrupts, sim: &SimVf) -> String {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let s = sim.stats();
    let mut l = format!(
        "vf{index}: client {} ({} connections) msgs {} bad {}",
        if stats.connected.load(Ordering::Relaxed) {
            "connected"
        } else {
            "none"
        },
        g(&stats.connections),
        g(&stats.messages),
        stats.bad_total(),
    );
    if stats.bad_total() > 0 {
        let kinds: Vec<String> = Bad::ALL
            .iter()
            .filter(|&&k| stats.bad(k) > 0)
            .map(|&k| format!("{}={}", k.name(), stats.bad(k)))
            .collect();
        let _ = write!(l, " ({})", kinds.join(" "));
    }
    let _ = write!(
        l,
        " truncated {} unframed {} failed {} posted_errors {} bad_reg {} | resets {} (vf {}) \
         dma maps {} unmaps {} faults {} | irqs {} no_eventfd {} vectors {} | rx {} missed {} \
         filtered {} queue_off {} oversize {} link_down {} | tx {} spoofed {} errors {} bad_desc {} \
         mdd {} wire_lost {} | aq {} arq {}",
        g(&stats.truncated),
        g(&stats.unframed),
        g(&stats.failed),
        g(&stats.posted_errors),
        g(&stats.bad_register_accesses),
        g(&stats.resets),
        s.resets,
        g(&stats.dma_maps),
        g(&stats.dma_unmaps),
        s.dma_faults,
        g(&irqs.delivered),
        g(&irqs.undelivered),
        irqs.armed(),
        s.rx_delivered,
        s.rx_missed,
        s.rx_filtered,
        s.rx_queue_off,
        s.rx_oversize,
        s.rx_link_down,
        s.tx_frames,
        s.tx_spoofed,
        s.eth.tx_errors,
        s.tx_bad_desc,
        s.mdd_events,
        s.wire_lost,
        s.aq_commands,
        s.arq_posted,
    );
    l
}
