//! One VF's socket: clients connect there one at a time (QEMU connects once
//! per guest boot); each message a client sends is read whole and checked
//! (module `guard`), then relayed to the `vfio_user` crate's `Server`, which
//! serves the VF's backend on a private connection of its own, and its reply
//! relayed back.
//!
//! The relay asks the crate for a reply to every message, posted writes
//! included, and drops the ones the client did not want: so a failed posted
//! write (whose error reply the crate sends anyway) never reaches the client
//! as the answer to its next request. An error reply of the crate without an
//! errno gets the backend's (the crate sends 0 for all but EINVAL, which a
//! client takes for success).
//!
//! When the client goes (between messages or in the middle of one), its
//! memory and eventfds are released and the function reset; the next client
//! finds the VF as a freshly reset function.
#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::backend::{VfBackend, irq_infos, region_sizes, server_regions};
use crate::guard::{self, MAX_MESSAGE};
use crate::irq::Interrupts;
use crate::msg::{self, FLAG_ERROR, FLAG_NO_REPLY, Header, ReadError, cmd};
use crate::stats::VfStats;

/// Bind `path` for clients. A socket file left by a server that is gone is
/// replaced; one a live server listens on is not.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(path) {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{}: another server listens there (stop it, or choose another path)",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
            UnixListener::bind(path)
        }
        Err(e) => Err(e),
    }
}

/// Serve VF `index` on `listener` (bound at `path`) until the process ends:
/// one thread relays clients, one runs the crate's server.
pub fn spawn(
    index: usize,
    path: PathBuf,
    listener: UnixListener,
    mut backend: VfBackend,
    irqs: &Interrupts,
    stats: Arc<VfStats>,
    doorbells: Option<RawFd>,
) -> io::Result<()> {
    let name = format!("vf{index}");
    let private = format!(
        "nicpoll-vf-{}-{index}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let addr = SocketAddr::from_abstract_name(private.as_bytes())?;
    let inner = UnixListener::bind_addr(&addr)?;
    let server = vfio_user::Server::from_owned_fd(
        inner.into(),
        true,
        irq_infos(irqs.counts()),
        server_regions(doorbells),
    );
    let last_errno = backend.last_errno();
    let counts = irqs.counts();
    // Sessions are strictly one after the other: the crate accepts the next
    // relay connection only after the last one's cleanup, and whatever the
    // next client sends waits in that connection until then.
    std::thread::Builder::new()
        .name(format!("{name}-device"))
        .spawn(move || {
            loop {
                if let Err(e) = server.run(&mut backend) {
                    log::warn!("{name}: the session ended with an error: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                backend.client_gone();
            }
        })?;
    let name = format!("vf{index}");
    std::thread::Builder::new()
        .name(format!("{name}-socket"))
        .spawn(move || {
            for client in listener.incoming() {
                let client = match client {
                    Ok(c) => c,
                    Err(e) => {
                        log::error!("{name}: accepting a client on {}: {e}", path.display());
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        continue;
                    }
                };
                let relay = Relay {
                    name: &name,
                    stats: &stats,
                    last_errno: &last_errno,
                    irq_counts: &counts,
                };
                let inner = match UnixStream::connect_addr(&addr) {
                    Ok(s) => s,
                    Err(e) => {
                        log::error!("{name}: connecting to the device's server: {e}");
                        continue;
                    }
                };
                stats.connected.store(true, Ordering::Relaxed);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                log::info!("{name}: client connected on {}", path.display());
                relay.run(&client, &inner);
                let _ = inner.shutdown(std::net::Shutdown::Both);
                stats.connected.store(false, Ordering::Relaxed);
                log::info!("{name}: client gone");
            }
        })?;
    Ok(())
}

/// The relay of one client session.
struct Relay<'a> {
    name: &'a str,
    stats: &'a VfStats,
    last_errno: &'a AtomicI32,
    irq_counts: &'a [u32],
}

impl Relay<'_> {
    fn run(&self, client: &UnixStream, inner: &UnixStream) {
        let sizes = region_sizes();
        loop {
            let mut truncated_fds = false;
            let mut m = match msg::read_message(client, MAX_MESSAGE, &mut truncated_fds) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(e) => {
                    match &e {
                        ReadError::Truncated { .. } => {
                            self.stats.truncated.fetch_add(1, Ordering::Relaxed)
                        }
                        ReadError::BadSize(_) => {
                            self.stats.unframed.fetch_add(1, Ordering::Relaxed)
                        }
                        ReadError::Io(_) => 0,
                    };
                    log::warn!("{}: {e}; closing the connection", self.name);
                    return;
                }
            };
            self.stats.messages.fetch_add(1, Ordering::Relaxed);
            if truncated_fds {
                self.stats.truncated_fds.fetch_add(1, Ordering::Relaxed);
            }
            let h = m.header;
            if let Err(r) = guard::check(&mut m, &sizes, self.irq_counts) {
                self.stats.count_bad(r.kind);
                let n = self.stats.bad_total();
                if n <= 20 || n.is_multiple_of(1000) {
                    log::warn!(
                        "{}: refused message {} (command {} {}): {} (errno {}; bad message #{n})",
                        self.name,
                        h.id,
                        h.command,
                        cmd::name(h.command),
                        r.why,
                        r.errno
                    );
                }
                if !h.no_reply()
                    && msg::write_message(client, &h.error_reply(r.errno), &[], &[]).is_err()
                {
                    return;
                }
                continue;
            }
            let to_crate = Header {
                flags: m.header.flags & !FLAG_NO_REPLY,
                ..m.header
            };
            let fds: Vec<_> = m.fds.iter().map(|f| f.as_fd()).collect();
            self.last_errno.store(0, Ordering::Relaxed);
            if let Err(e) = msg::write_message(inner, &to_crate, &m.payload, &fds) {
                log::error!(
                    "{}: passing a message to the device's server: {e}",
                    self.name
                );
                return;
            }
            let mut t = false;
            let mut reply = match msg::read_message(inner, MAX_MESSAGE, &mut t) {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => {
                    log::error!(
                        "{}: the device's server did not answer {} {}",
                        self.name,
                        h.command,
                        cmd::name(h.command)
                    );
                    return;
                }
            };
            if reply.header.id != h.id || reply.header.command != h.command {
                log::error!(
                    "{}: the device's server answered message {} ({}) with {} ({})",
                    self.name,
                    h.id,
                    cmd::name(h.command),
                    reply.header.id,
                    cmd::name(reply.header.command)
                );
                return;
            }
            let failed = reply.header.flags & FLAG_ERROR != 0;
            if failed {
                if reply.header.error == 0 {
                    let e = self.last_errno.load(Ordering::Relaxed);
                    reply.header.error = if e > 0 { e } else { libc::EIO } as u32;
                }
                let counter = if h.no_reply() {
                    &self.stats.posted_errors
                } else {
                    &self.stats.failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "{}: {} failed: errno {}",
                    self.name,
                    cmd::name(h.command),
                    reply.header.error
                );
            }
            if h.no_reply() {
                continue;
            }
            let fds: Vec<_> = reply.fds.iter().map(|f| f.as_fd()).collect();
            if let Err(e) = msg::write_message(client, &reply.header, &reply.payload, &fds) {
                log::warn!("{}: answering the client: {e}", self.name);
                return;
            }
        }
    }
}
