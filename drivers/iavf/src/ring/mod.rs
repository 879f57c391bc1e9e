//! The driver's unsafe code: memory shared with the device. Nothing outside
//! this module touches DMA memory (DESIGN.md: "the descriptor ring" is one of
//! the named unsafe modules); each submodule has one job:
//!
//! - `desc_ring`: [`DescRing`], a ring of typed descriptors in DMA memory,
//!   read and written whole with volatile accesses, never through a Rust
//!   reference (the device writes descriptors back at any time), and the
//!   volatile loads and stores of each descriptor type ([`DmaDesc`]).
//! - `dma_bytes`: [`DmaBytes`], a byte buffer in DMA memory (admin-queue
//!   message buffers), copied in and out with volatile accesses.
//! - `slots`: [`MbufSlots`], which mbuf each descriptor slot holds while the
//!   device owns it, as raw element pointers (an mbuf handed to a device is
//!   not a Rust value: `Mbuf::into_raw` on the way in, `Mbuf::from_raw` on the
//!   way out), and its bulk fill and free.
//! - `scalar`: the data path's inner loops ([`MbufSlots::refill_rx`],
//!   [`MbufSlots::rx_clean`], [`MbufSlots::tx_fill`]): they walk descriptors,
//!   slots and the caller's batch with raw pointers, one bounds check per
//!   burst instead of three per packet, and move mbufs in and out of batches
//!   in bulk (`MbufBatch::spare_raw` / `take_front_raw`). The queue modules
//!   decide what is valid and what to count; these loops only move buffers.
//! - `avx2`: on a CPU with AVX2 ([`MbufSlots::set_loops`], [`Loops`]) the
//!   receive and transmit loops run four descriptors per step first (as
//!   DPDK's `iavf_rxtx_vec_avx2.c`), taking exactly what the scalar loops
//!   would; tests hold the two to that.
//! - `sse`: the same with SSE4.1 and SSSE3 (as DPDK's `iavf_rxtx_vec_sse.c`),
//!   on a CPU without AVX2 or with `simd=128`, built for the fewest memory
//!   accesses per packet (what an emulator such as QEMU's TCG charges for);
//!   the same tests hold it to the scalar loops.
//!
//! Ordering. Descriptor reads load the word the device sets last (receive:
//! qword 1 with DD; admin queue: flags) first, then the rest after an acquire
//! fence, so a descriptor seen done is seen whole (the receive path reads only
//! qwords 1 and 0; the vector loops read both in one 16-byte load, see
//! theirs). Writes store the whole descriptor (receive refills: the
//! two qwords of the read format); the tail doorbell that publishes it goes through
//! [`Bar::write32`](nicpoll::bar::Bar::write32), which orders it after earlier
//! memory writes (a release fence), as DPDK's `rte_write32` does.

mod desc_ring;
mod dma_bytes;
mod slots;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod sse;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

pub use desc_ring::{DescRing, DmaDesc};
pub use dma_bytes::DmaBytes;
pub use scalar::discard;
pub use slots::{Loops, MbufSlots, cpu_has_avx2, cpu_has_sse41};
