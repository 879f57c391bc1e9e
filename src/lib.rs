//! nicpoll: a userspace poll-mode packet I/O engine.
//!
//! The core crate holds everything a driver or an application needs that is not
//! tied to one device:
//!
//! - [`memory`]: hugepage-backed DMA memory and its IOVAs;
//! - [`mempool`] and [`mbuf`]: fixed-size packet buffers with per-lcore caches;
//! - [`port`]: the control-plane `Port` trait and the per-queue burst traits;
//! - [`lcore`]: core lists, pinning and lcore identities;
//! - [`fwd`]: forwarding engines (one file each) and the per-lcore poll loop;
//! - [`stats`]: port and forwarding counters, rates and latency histograms;
//! - [`net`]: checked views of the protocol headers the engines touch;
//! - [`netdev`]: kernel network interfaces for the drivers that use them
//!   (interface ioctls, a raw AF_PACKET socket, rtnetlink requests).
//!
//! Drivers live in their own crates (`drivers/*`) and depend on this one, never
//! the other way round.
//!
//! Unsafe code is denied here and allowed only in the modules DESIGN.md names:
//! [`bar`] (MMIO), [`mbuf`] and [`mempool`], and the VFIO system calls
//! (`vfio`'s ioctl module). [`memory`] maps through memmap2 and needs none.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[allow(unsafe_code)]
pub mod bar;
pub mod error;
pub mod fwd;
pub mod lcore;
#[allow(unsafe_code)]
pub mod mbuf;
pub mod memory;
#[allow(unsafe_code)]
pub mod mempool;
pub mod net;
pub mod netdev;
pub mod pci;
pub mod port;
pub mod stats;
pub mod time;
pub mod vfio;

pub use error::{Error, Result};
pub use mbuf::{MAX_BURST, Mbuf, MbufBatch};
pub use mempool::{MbufRing, Mempool, MempoolConfig};
pub use port::{Port, RxQueue, TxQueue};
