//! `rxonly`: receive and free (testpmd's rxonly.c), recording the one-way
//! latency and sequence of frames a txonly generator stamped.
#![deny(unsafe_code)]

use super::latency::read_stamp_mbuf;
use super::{Engine, EngineConfig, StreamCtx, StreamInfo};

/// The rxonly engine.
#[derive(Debug)]
pub struct RxOnly {
    latency: bool,
}

impl Engine for RxOnly {
    fn new(cfg: &EngineConfig, _: &StreamInfo) -> Self {
        RxOnly {
            latency: cfg.latency,
        }
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if ctx.receive() == 0 {
            return;
        }
        if self.latency {
            let now = crate::time::now_ns();
            for m in ctx.batch.iter() {
                if let Some(st) = read_stamp_mbuf(m) {
                    ctx.latency.record(st, now);
                }
            }
        }
        ctx.batch.clear();
    }
}
