//! `mac` forwarding: rewrite the destination MAC to the transmit port's peer
//! (`--eth-peer`) and the source MAC to the transmit port's own, then send
//! (testpmd's macfwd.c). Frames too short to hold an Ethernet header are freed
//! and counted in `rx_bad`.
#![deny(unsafe_code)]

use super::{Engine, EngineConfig, StreamCtx, StreamInfo};
use crate::net::EthernetFrame;
use crate::port::MacAddr;

/// The mac engine: the two addresses it writes.
#[derive(Debug)]
pub struct Mac {
    dst: MacAddr,
    src: MacAddr,
}

impl Engine for Mac {
    fn new(_: &EngineConfig, info: &StreamInfo) -> Self {
        Mac {
            dst: info.peer_mac,
            src: info.tx_mac,
        }
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if ctx.receive() == 0 {
            return;
        }
        let (dst, src) = (self.dst, self.src);
        let bad = ctx
            .batch
            .retain_mut(|m| match EthernetFrame::new_checked(m.data_mut()) {
                Some(mut eth) => {
                    eth.set_dst_addr(dst);
                    eth.set_src_addr(src);
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
    fn rewrites_both_addresses_and_drops_runts() {
        let mut h = Harness::new();
        let a = frame_of_len(60, 1);
        let runt = vec![0xffu8; 13];
        let b = frame_of_len(14, 2);
        h.rx.push_frames([a.clone(), runt, b.clone()]);
        h.forward(&mut Mac::new(&h.cfg, &h.info));
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), 2);
        for (out, orig) in sent.iter().zip([&a, &b]) {
            assert_eq!(&out[0..6], &h.info.peer_mac.0);
            assert_eq!(&out[6..12], &h.info.tx_mac.0);
            assert_eq!(&out[12..], &orig[12..], "the rest is untouched");
        }
        let s = h.stats();
        assert_eq!(
            (s.rx_packets, s.tx_packets, s.rx_bad, s.fwd_dropped),
            (3, 2, 1, 0)
        );
        h.assert_no_leak();
    }

    #[test]
    fn nothing_received_nothing_sent() {
        let mut h = Harness::new();
        h.forward(&mut Mac::new(&h.cfg, &h.info));
        assert_eq!(h.tx.calls, 0);
        assert_eq!(h.stats(), Default::default());
        h.assert_no_leak();
    }
}
