//! Counters beyond the core's per-queue ones: what the iavf queues count on
//! their own (bad descriptors, packets lost to a VF reset), and the VSI's
//! hardware counters from VIRTCHNL_OP_GET_STATS with DPDK's wrap arithmetic.
#![deny(unsafe_code)]

use std::sync::Arc;

use nicpoll::port::counters::Counter;

use crate::sync::Padded;
use crate::virtchnl::EthStats;

/// Counters one queue writes (single writer, relaxed) besides the core's.
#[derive(Debug, Default)]
pub struct QueueExtra {
    /// Receive descriptors the device wrote back with an error, an impossible
    /// length or without EOP, and the fragments that followed: dropped and
    /// their mbufs freed.
    pub bad_desc: Counter,
    /// Receive: frames written back but not yet delivered when the VF was
    /// reset (dropped). Transmit: packets in flight when the VF was reset (their
    /// fate is unknown; freed).
    pub reset_dropped: Counter,
    /// Transmit: packets refused because their length is 0 or above 16383
    /// bytes (freed, counted in oerrors).
    pub tx_bad_len: Counter,
    /// Re-arms after a VF reset.
    pub rearms: Counter,
}

/// Shared handle on a queue's extra counters.
pub type QueueExtraRef = Arc<Padded<QueueExtra>>;

/// A new set of extra counters.
pub fn new_extra() -> QueueExtraRef {
    Arc::new(Padded(QueueExtra::default()))
}

/// The VSI's hardware counters, made monotonic: the device's 48-bit
/// (packets, bytes) and 32-bit (discards, errors) counters wrap, and restart
/// from zero when the VF is reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwStats {
    /// The last raw values read.
    last: [u64; 12],
    /// Monotonic totals since the port was created.
    total: [u64; 12],
    /// `total` at the last reset of the statistics.
    base: [u64; 12],
}

impl HwStats {
    /// Fold in a GET_STATS answer (DPDK `iavf_stat_update_48` / `_32`).
    pub fn update(&mut self, s: &EthStats) {
        let now = s.to_array();
        for (i, (&v, width)) in now.iter().zip(EthStats::WIDTHS).enumerate() {
            let mask = if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            self.total[i] += v.wrapping_sub(self.last[i]) & mask;
        }
        self.last = now;
    }

    /// The VF was reset: its counters restart from zero.
    pub fn device_reset(&mut self) {
        self.last = [0; 12];
    }

    /// Take the current totals as zero.
    pub fn reset(&mut self) {
        self.base = self.total;
    }

    /// Counters since creation or the last reset.
    pub fn since_reset(&self) -> EthStats {
        let mut a = [0u64; 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = self.total[i].saturating_sub(self.base[i]);
        }
        EthStats::from_array(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_resets_are_folded_in() {
        let mut h = HwStats::default();
        let mut s = EthStats {
            rx_unicast: (1 << 48) - 10,
            rx_discards: u32::MAX as u64 - 1,
            ..Default::default()
        };
        h.update(&s);
        s.rx_unicast = 5; // wrapped at 48 bits
        s.rx_discards = 3; // wrapped at 32 bits
        h.update(&s);
        let t = h.since_reset();
        assert_eq!(t.rx_unicast, (1 << 48) + 5);
        assert_eq!(t.rx_discards, u32::MAX as u64 + 4);
        h.reset();
        assert_eq!(h.since_reset(), EthStats::default());
        h.device_reset();
        h.update(&EthStats {
            tx_unicast: 7,
            ..Default::default()
        });
        assert_eq!(h.since_reset().tx_unicast, 7);
        assert_eq!(h.since_reset().rx_unicast, 0);
    }
}
