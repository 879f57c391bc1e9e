//! The simulated VF's port: where transmitted frames go and received frames come
//! from.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use nicpoll::netdev::RawSocket;

use super::regs::Regs;
use super::switch::{Switch, SwitchView};

/// Where a simulated VF's port is connected (see `SimConfig::wire`).
///
/// Two more kinds are made at run time: `SimVf::connect` (two VFs back to back)
/// and `SimVf::wire_channel` (frames to and from a test).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Wire {
    /// Nothing: transmitted frames are counted and dropped, nothing arrives.
    #[default]
    None,
    /// What the VF transmits arrives back at its own receive side (after the
    /// receive filters, like any frame from the wire).
    Loopback,
    /// Back to back with the other `SimVf` of this process configured with
    /// `Wire::Peer` and the same name (connected when the second one starts).
    Peer(String),
    /// A kernel network interface, through an `AF_PACKET` socket opened by the
    /// device (needs CAP_NET_RAW): frames arriving at the interface are received,
    /// transmitted frames are sent out of it.
    Iface(String),
}

/// The socket of [`Wire::Iface`]: a raw socket on the interface, in
/// promiscuous mode (a NIC port receives frames for MAC addresses the kernel
/// does not own only then; the VF's own filters decide after that), that
/// sees only frames arriving at the interface, not the ones the VF sends.
/// Needs CAP_NET_RAW.
pub(crate) fn open_wire_socket(ifname: &str) -> io::Result<RawSocket> {
    let s = RawSocket::open(ifname)?;
    // Best effort (Linux 4.20+): `WireState::receive` skips what older
    // kernels report as outgoing.
    let _ = s.ignore_outgoing();
    s.set_promiscuous()?;
    Ok(s)
}

/// Frames waiting to be received by a VF (from a peer or from loopback).
pub(crate) struct Inbox {
    q: Mutex<VecDeque<Vec<u8>>>,
    len: AtomicUsize,
    cap: usize,
    /// Frames refused because the inbox was full.
    pub(crate) dropped: AtomicU64,
    regs: Arc<Regs>,
}

impl Inbox {
    pub(crate) fn new(cap: usize, regs: Arc<Regs>) -> Inbox {
        Inbox {
            q: Mutex::new(VecDeque::with_capacity(cap.min(1024))),
            len: AtomicUsize::new(0),
            cap,
            dropped: AtomicU64::new(0),
            regs,
        }
    }

    /// Append `frames` (emptied); returns how many did not fit.
    pub(crate) fn push(&self, frames: &mut Vec<Vec<u8>>) -> u64 {
        if frames.is_empty() {
            return 0;
        }
        let mut dropped = 0;
        {
            let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
            for f in frames.drain(..) {
                if q.len() < self.cap {
                    q.push_back(f);
                } else {
                    dropped += 1;
                }
            }
            self.len.store(q.len(), Ordering::Release);
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.regs.waker.wake();
        dropped
    }

    /// Move up to `max` frames into `out`.
    pub(crate) fn drain(&self, out: &mut Vec<Vec<u8>>, max: usize) {
        if self.len.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        let n = q.len().min(max);
        out.extend(q.drain(..n));
        self.len.store(q.len(), Ordering::Release);
    }

    /// Throw away everything waiting.
    pub(crate) fn clear(&self) {
        let mut q = self.q.lock().unwrap_or_else(|e| e.into_inner());
        q.clear();
        self.len.store(0, Ordering::Release);
    }
}

/// Where transmitted frames go (device side).
pub(crate) enum Outbound {
    /// Counted and dropped.
    Drop,
    /// Into an inbox (our own for loopback, a peer's otherwise).
    Inbox(Arc<Inbox>),
    /// To a test harness.
    Channel(SyncSender<Vec<u8>>),
    /// Out of a kernel interface.
    Socket(Arc<RawSocket>),
    /// Into the PF's switch, from port `port`.
    Switch {
        sw: Arc<Switch>,
        port: usize,
        view: SwitchView,
    },
}

/// The device thread's wire: one outbound path and up to two extra sources of
/// received frames besides the VF's own inbox.
pub(crate) struct WireState {
    pub(crate) out: Outbound,
    pub(crate) chan_in: Option<Receiver<Vec<u8>>>,
    pub(crate) sock_in: Option<Arc<RawSocket>>,
}

impl WireState {
    pub(crate) fn none() -> WireState {
        WireState {
            out: Outbound::Drop,
            chan_in: None,
            sock_in: None,
        }
    }

    /// Send `frames` (emptied); returns how many were lost on the way.
    pub(crate) fn send(&mut self, frames: &mut Vec<Vec<u8>>) -> u64 {
        match &mut self.out {
            Outbound::Drop => {
                let n = frames.len() as u64;
                frames.clear();
                n
            }
            Outbound::Inbox(inbox) => inbox.push(frames),
            Outbound::Channel(tx) => {
                let mut lost = 0;
                for f in frames.drain(..) {
                    match tx.try_send(f) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                            lost += 1
                        }
                    }
                }
                lost
            }
            Outbound::Switch { sw, port, view } => sw.forward(view, Some(*port), frames),
            Outbound::Socket(s) => {
                let mut lost = 0;
                for f in frames.drain(..) {
                    match s.try_send(&f) {
                        Ok(true) => {}
                        Ok(false) => lost += 1,
                        Err(e) => {
                            lost += 1;
                            log::warn!("simulated iavf: send on the wire interface: {e}");
                        }
                    }
                }
                lost
            }
        }
    }

    /// Receive up to `max` frames from the channel and the socket into `out`.
    /// `buf` is scratch space for the socket. Returns frames refused as too long.
    pub(crate) fn receive(&mut self, out: &mut Vec<Vec<u8>>, max: usize, buf: &mut [u8]) -> u64 {
        let mut too_long = 0;
        if let Some(rx) = &self.chan_in {
            while out.len() < max {
                match rx.try_recv() {
                    Ok(f) => out.push(f),
                    Err(_) => break,
                }
            }
        }
        if let Some(s) = &self.sock_in {
            while out.len() < max {
                match s.try_recv(buf) {
                    // What the interface sent (kernels before 4.20, which
                    // ignore PACKET_IGNORE_OUTGOING) is not the wire's.
                    Ok(Some(r)) if r.outgoing => {}
                    Ok(Some(r)) if r.len <= buf.len() => out.push(buf[..r.len].to_vec()),
                    Ok(Some(_)) => too_long += 1,
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("simulated iavf: receive on the wire interface: {e}");
                        break;
                    }
                }
            }
        }
        too_long
    }
}
