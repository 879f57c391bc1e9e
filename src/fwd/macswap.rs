//! `macswap` forwarding: exchange source and destination MAC, then send
//! (testpmd's macswap.c). Frames too short to hold an Ethernet header are
//! freed and counted in `rx_bad`.
#![deny(unsafe_code)]

use super::{Engine, EngineConfig, StreamCtx, StreamInfo};
use crate::net::EthernetFrame;

/// The macswap engine (stateless).
#[derive(Debug, Default)]
pub struct MacSwap;

impl Engine for MacSwap {
    fn new(_: &EngineConfig, _: &StreamInfo) -> Self {
        MacSwap
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if ctx.receive() == 0 {
            return;
        }
        let bad = ctx
            .batch
            .retain_mut(|m| match EthernetFrame::new_checked(m.data_mut()) {
                Some(mut eth) => {
                    eth.swap_addrs();
                    true
                }
                None => false,
            });
        if bad > 0 {
            ctx.counters.rx_bad.add(bad as u64);
        }
        ctx.transmit();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Harness, frame_of_len};
    use super::*;

    #[test]
    fn swaps_and_drops_runts() {
        let mut h = Harness::new();
        let a = frame_of_len(64, 1);
        let b = frame_of_len(20, 2);
        h.rx.push_frames([vec![], a.clone(), vec![1; 5], b.clone()]);
        h.forward(&mut MacSwap);
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), 2);
        for (out, orig) in sent.iter().zip([&a, &b]) {
            assert_eq!(&out[0..6], &orig[6..12]);
            assert_eq!(&out[6..12], &orig[0..6]);
            assert_eq!(&out[12..], &orig[12..]);
        }
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bad), (4, 2, 2));
        h.assert_no_leak();
    }

    #[test]
    fn all_bad_sends_nothing() {
        let mut h = Harness::new();
        h.rx.push_frames([vec![0; 3], vec![0; 13]]);
        h.forward(&mut MacSwap);
        assert!(h.tx.take_sent().is_empty());
        assert_eq!(h.stats().rx_bad, 2);
        h.assert_no_leak();
    }
}
