//! `io` forwarding: receive a burst and send the same mbufs, bytes untouched
//! (testpmd's iofwd.c). The fastest mode: the cost is the ports' own.
#![deny(unsafe_code)]

use super::{Engine, EngineConfig, StreamCtx, StreamInfo};

/// The io engine (stateless).
#[derive(Debug, Default)]
pub struct Io;

impl Engine for Io {
    fn new(_: &EngineConfig, _: &StreamInfo) -> Self {
        Io
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if ctx.receive() == 0 {
            return;
        }
        ctx.transmit();
    }
}
