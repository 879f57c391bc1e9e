//! The PF's embedded switch: what an i40e or ice PF puts between its VFs and
//! its physical port (the VEB of the X710/E810 datasheets: "switching between
//! VSIs of the same PF" without leaving the adapter), and the port itself.
//!
//! A frame a VF transmits goes, by destination MAC address:
//!
//! - to the other VF whose unicast filters hold it (its own receive filters
//!   then decide, as for any frame);
//! - broadcast or multicast: to every other VF and out of the port;
//! - any other unicast address: out of the port, and to the VFs whose
//!   unicast promiscuous mode is in effect (a trusted VF that asked for it).
//!
//! A frame arriving at the port (the uplink, a kernel interface through an
//! AF_PACKET socket) goes to the VF that owns its destination, to every VF if
//! it is broadcast or multicast, else to the promiscuous VFs; one no VF wants
//! is dropped and counted (`unknown_unicast`).
//!
//! The table the senders look addresses up in is published by each VF's
//! device when its filters change, and read through a snapshot a sender
//! refreshes when the table's generation moved (no lock per frame).
#![deny(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nicpoll::netdev::RawSocket;

use super::wire::{Inbox, open_wire_socket};

/// One VF's port on the switch, as its device last published it.
#[derive(Clone)]
struct Port {
    inbox: Arc<Inbox>,
    /// Unicast addresses of the VF's filters.
    unicast: Vec<[u8; 6]>,
    /// Unicast promiscuous mode in effect.
    promisc: bool,
}

/// The switch's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwitchStats {
    /// Frames delivered from one VF to another (one per receiving VF).
    pub vf_to_vf: u64,
    /// Frames a VF sent out of the port.
    pub vf_to_uplink: u64,
    /// Frames from the port delivered to a VF (one per receiving VF).
    pub uplink_to_vf: u64,
    /// Unicast frames to an address no VF owns that nothing took: from the
    /// port, or from a VF when the switch has no port.
    pub unknown_unicast: u64,
    /// Frames lost: a VF's receive backlog or the port's socket was full.
    pub lost: u64,
}

#[derive(Default)]
struct Counters {
    vf_to_vf: AtomicU64,
    vf_to_uplink: AtomicU64,
    uplink_to_vf: AtomicU64,
    unknown_unicast: AtomicU64,
    lost: AtomicU64,
}

/// The PF's switch between its VFs ([`SimVf::attach`](super::SimVf::attach)),
/// and its physical port on a host interface when it has one.
pub struct Switch {
    name: String,
    ports: Mutex<Arc<[Port]>>,
    generation: AtomicU64,
    uplink: Option<Arc<RawSocket>>,
    uplink_name: Option<String>,
    counters: Counters,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Switch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Switch")
            .field("name", &self.name)
            .field("uplink", &self.uplink_name)
            .finish()
    }
}

/// A sender's copy of the table.
pub(crate) struct SwitchView {
    ports: Arc<[Port]>,
    generation: u64,
    /// Frames per destination port, gathered for one batch.
    batches: Vec<Vec<Vec<u8>>>,
}

impl Switch {
    /// A switch named `name` (for logs), with its physical port on the host
    /// interface `uplink` when given: an AF_PACKET socket in promiscuous mode
    /// (needs CAP_NET_RAW), read by a thread of the switch's own that sleeps
    /// in the kernel while nothing arrives.
    pub fn new(name: &str, uplink: Option<&str>) -> io::Result<Arc<Switch>> {
        let socket = match uplink {
            Some(ifname) => Some(Arc::new(open_wire_socket(ifname)?)),
            None => None,
        };
        let sw = Arc::new(Switch {
            name: name.to_string(),
            ports: Mutex::new(Arc::from(Vec::new())),
            generation: AtomicU64::new(0),
            uplink: socket.clone(),
            uplink_name: uplink.map(str::to_string),
            counters: Counters::default(),
            stop: Arc::new(AtomicBool::new(false)),
        });
        if let Some(s) = socket {
            let weak = Arc::downgrade(&sw);
            let stop = sw.stop.clone();
            std::thread::Builder::new()
                .name(format!("{name}-uplink"))
                .spawn(move || uplink_loop(weak, &s, &stop))?;
        }
        Ok(sw)
    }

    /// The host interface of the port, if any.
    pub fn uplink(&self) -> Option<&str> {
        self.uplink_name.as_deref()
    }

    /// The counters so far.
    pub fn stats(&self) -> SwitchStats {
        let c = &self.counters;
        SwitchStats {
            vf_to_vf: c.vf_to_vf.load(Ordering::Relaxed),
            vf_to_uplink: c.vf_to_uplink.load(Ordering::Relaxed),
            uplink_to_vf: c.uplink_to_vf.load(Ordering::Relaxed),
            unknown_unicast: c.unknown_unicast.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
        }
    }

    /// Add a VF's receive backlog as a port; returns its index.
    pub(crate) fn add_port(&self, inbox: Arc<Inbox>) -> usize {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = ports.to_vec();
        v.push(Port {
            inbox,
            unicast: Vec::new(),
            promisc: false,
        });
        *ports = Arc::from(v);
        self.generation.fetch_add(1, Ordering::AcqRel);
        ports.len() - 1
    }

    /// A VF's device publishes its unicast filters and promiscuous mode.
    pub(crate) fn publish(&self, port: usize, unicast: &[[u8; 6]], promisc: bool) {
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = ports.get(port) else {
            return;
        };
        if p.promisc == promisc && p.unicast == unicast {
            return;
        }
        let mut v = ports.to_vec();
        v[port].unicast = unicast.to_vec();
        v[port].promisc = promisc;
        *ports = Arc::from(v);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A sender's snapshot of the table.
    pub(crate) fn view(&self) -> SwitchView {
        let ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        SwitchView {
            ports: ports.clone(),
            generation: self.generation.load(Ordering::Acquire),
            batches: Vec::new(),
        }
    }

    fn refresh(&self, view: &mut SwitchView) {
        if self.generation.load(Ordering::Acquire) != view.generation {
            let fresh = self.view();
            view.ports = fresh.ports;
            view.generation = fresh.generation;
        }
    }

    /// Switch `frames` (emptied) that came from port `from` (None: from the
    /// uplink). Returns the frames lost on the way (full backlogs, a busy
    /// socket).
    pub(crate) fn forward(
        &self,
        view: &mut SwitchView,
        from: Option<usize>,
        frames: &mut Vec<Vec<u8>>,
    ) -> u64 {
        self.refresh(view);
        let n = view.ports.len();
        view.batches.resize_with(n, Vec::new);
        let (mut to_vf, mut to_uplink, mut unknown, mut lost) = (0u64, 0u64, 0u64, 0u64);
        for f in frames.drain(..) {
            if f.len() < 14 {
                lost += 1;
                continue;
            }
            let dst: [u8; 6] = f[0..6].try_into().expect("6 bytes");
            let others = (0..n).filter(|&j| Some(j) != from);
            if dst[0] & 1 != 0 {
                // Broadcast and multicast: every other VF, and the wire.
                for j in others {
                    view.batches[j].push(f.clone());
                    to_vf += 1;
                }
                if from.is_some() && self.send_uplink(&f, &mut lost) {
                    to_uplink += 1;
                }
                continue;
            }
            if let Some(j) = others
                .clone()
                .find(|&j| view.ports[j].unicast.contains(&dst))
            {
                view.batches[j].push(f);
                to_vf += 1;
                continue;
            }
            let mut taken = false;
            for j in others.filter(|&j| view.ports[j].promisc) {
                view.batches[j].push(f.clone());
                to_vf += 1;
                taken = true;
            }
            if from.is_some() && self.uplink.is_some() {
                if self.send_uplink(&f, &mut lost) {
                    to_uplink += 1;
                }
            } else if !taken {
                unknown += 1;
            }
        }
        for (j, batch) in view.batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                let dropped = view.ports[j].inbox.push(batch);
                lost += dropped;
                to_vf = to_vf.saturating_sub(dropped);
            }
        }
        let c = &self.counters;
        if from.is_some() {
            c.vf_to_vf.fetch_add(to_vf, Ordering::Relaxed);
        } else {
            c.uplink_to_vf.fetch_add(to_vf, Ordering::Relaxed);
        }
        c.vf_to_uplink.fetch_add(to_uplink, Ordering::Relaxed);
        c.unknown_unicast.fetch_add(unknown, Ordering::Relaxed);
        c.lost.fetch_add(lost, Ordering::Relaxed);
        lost
    }

    /// Send one frame out of the port (false: there is none, or it was lost,
    /// counted in `lost`).
    fn send_uplink(&self, f: &[u8], lost: &mut u64) -> bool {
        let Some(s) = &self.uplink else {
            return false;
        };
        match s.try_send(f) {
            Ok(true) => true,
            Ok(false) => {
                *lost += 1;
                false
            }
            Err(e) => {
                *lost += 1;
                log::warn!(
                    "{}: sending a {}-byte frame out of {}: {e}",
                    self.name,
                    f.len(),
                    self.uplink_name.as_deref().unwrap_or("?")
                );
                false
            }
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The uplink's reader: waits in the kernel for frames, then switches what
/// arrived (frames the interface sends are not the wire's). Ends when the
/// switch is dropped.
fn uplink_loop(sw: Weak<Switch>, socket: &RawSocket, stop: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut frames: Vec<Vec<u8>> = Vec::with_capacity(64);
    let mut view: Option<SwitchView> = None;
    while !stop.load(Ordering::Acquire) {
        match socket.wait_readable(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                log::error!("switch uplink: waiting for frames: {e}; the uplink stops");
                return;
            }
        }
        let Some(sw) = sw.upgrade() else {
            return;
        };
        let mut too_long = 0u64;
        while frames.len() < 64 {
            match socket.try_recv(&mut buf) {
                Ok(Some(r)) if r.outgoing => {}
                Ok(Some(r)) if r.len <= buf.len() => frames.push(buf[..r.len].to_vec()),
                Ok(Some(_)) => too_long += 1,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("{}: receiving on the uplink: {e}", sw.name);
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
            }
        }
        sw.counters.lost.fetch_add(too_long, Ordering::Relaxed);
        let v = view.get_or_insert_with(|| sw.view());
        sw.forward(v, None, &mut frames);
    }
}
