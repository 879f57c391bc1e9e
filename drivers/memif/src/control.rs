//! The control plane: the unix seqpacket socket, the handshake of both roles,
//! and the threads that keep a port connected.
//!
//! The message sequence (DPDK memif_socket.c v22.11, memif_msg_receive
//! 632-778; libmemif socket.c 600-700): the server sends HELLO on accept; the
//! client answers with INIT, then one ADD_REGION per region (its memfd in
//! SCM_RIGHTS), one ADD_RING per ring (its interrupt eventfd), then CONNECT;
//! the server acknowledges each with ACK and CONNECT with CONNECTED. Both
//! sides send one message and wait for the answer, as DPDK and libmemif do.
//! Either side may send DISCONNECT with a reason at any time.
//!
//! A server port registers its interface id with the process's listener for
//! its socket address (one listening socket per address, shared by every
//! server port on it, as DPDK's socket hash does), which accepts connections
//! and hands each to the port whose id the client asks for. A client port has
//! a thread that connects, runs the handshake, watches the connection, and
//! tries again after a pause when it fails or ends.
//!
//! Every wait is bounded (a 5 s limit per handshake message) and is cut into
//! 100 ms slices so that stopping a port never waits for a peer.
#![deny(unsafe_code)]

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nicpoll::mempool::Mempool;
use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use crate::options::{MemifOptions, SocketSpec};
use crate::proto::{
    self, ADD_RING_FLAG_C2S, AddRegion, AddRing, COOKIE, Hello, Init, MAX_LOG2_RING_SIZE,
    MAX_QUEUE_PAIRS, MAX_REGIONS, MODE_ETHERNET, MSG_SIZE, Msg, MsgType, VERSION,
};
use crate::queue::{ConnLife, Quarantine, QueueLink, RingAttach, ZeroCopy};
use crate::sys::{Mapping, RING_FLAG_MASK_INT, Region, RingView};

/// How long one handshake message may take.
pub const MSG_TIMEOUT: Duration = Duration::from_secs(5);
/// The slice every wait is cut into, to notice a stop.
const SLICE: Duration = Duration::from_millis(100);
/// Pause between a client's connection attempts.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// How long zero-copy mbufs wait after their connection ended before reuse.
pub const GRACE: Duration = Duration::from_millis(100);
/// Our name in HELLO and INIT (DPDK sends its version string).
const APP_NAME: &str = concat!("nicpoll ", env!("CARGO_PKG_VERSION"));

/// Link phase of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Not connected.
    #[default]
    Down,
    /// A handshake runs.
    Connecting,
    /// Rings are attached.
    Up,
}

/// What the port shows of its connection.
#[derive(Clone, Debug, Default)]
pub struct ConnStatus {
    /// Link phase.
    pub phase: Phase,
    /// The peer's application name (HELLO/INIT) and interface name (CONNECT/CONNECTED).
    pub peer: Option<(String, String)>,
    /// Rings of the connection: (client-to-server, server-to-client, log2 slots).
    pub rings: Option<(usize, usize, u8)>,
    /// The last failure: refused handshake, lost peer, bad message.
    pub last_error: Option<String>,
}

/// Connection events, counted by the control plane.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections established.
    pub connects: AtomicU64,
    /// Connections that ended.
    pub disconnects: AtomicU64,
    /// Handshakes refused or failed.
    pub refused: AtomicU64,
}

/// The queue links and pool of a started port.
#[derive(Debug)]
pub struct Running {
    /// Receive queue links, by queue.
    pub rx: Vec<Arc<QueueLink>>,
    /// Transmit queue links, by queue.
    pub tx: Vec<Arc<QueueLink>>,
    /// The pool receive queues allocate from (and zero-copy shares).
    pub pool: Mempool,
    /// Zero-copy client: the pool's hugepage file, sent as region 1.
    pub pool_file: Option<OwnedFd>,
    /// Set when the port stops.
    pub stop: AtomicBool,
}

/// A port as the control plane sees it.
#[derive(Debug)]
pub struct Endpoint {
    /// Port name (`net_memif0`).
    pub name: String,
    /// Its options.
    pub opts: MemifOptions,
    /// Connection status.
    pub status: Mutex<ConnStatus>,
    /// The running configuration while started.
    pub running: Mutex<Option<Arc<Running>>>,
    /// Server: a connection is being handled for this port.
    pub busy: AtomicBool,
    /// Event counters.
    pub counters: ConnCounters,
    /// Zero-copy mbufs waiting to be reused.
    pub quarantine: Arc<Quarantine>,
}

impl Endpoint {
    /// A fresh, stopped endpoint.
    pub fn new(name: &str, opts: MemifOptions) -> Endpoint {
        Endpoint {
            name: name.to_string(),
            opts,
            status: Mutex::new(ConnStatus::default()),
            running: Mutex::new(None),
            busy: AtomicBool::new(false),
            counters: ConnCounters::default(),
            quarantine: Arc::new(Quarantine::default()),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, ConnStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the status.
    pub fn snapshot(&self) -> ConnStatus {
        self.status().clone()
    }

    fn set_phase(&self, phase: Phase) {
        let mut s = self.status();
        s.phase = phase;
        if phase == Phase::Down {
            s.rings = None;
        }
    }

    fn set_error(&self, e: &str) {
        self.status().last_error = Some(e.to_string());
    }

    fn running(&self) -> Option<Arc<Running>> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

// ---------------------------------------------------------------------------
// The socket.

/// The rustix address of a socket spec.
pub fn socket_addr(s: &SocketSpec) -> rustix::io::Result<SocketAddrUnix> {
    if s.abstract_ns {
        SocketAddrUnix::new_abstract_name(s.path.as_bytes())
    } else {
        SocketAddrUnix::new(s.path.as_str())
    }
}

/// Why a wait for a message ended without one.
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed the socket.
    Closed,
    /// No message within the limit.
    Timeout,
    /// The port is stopping.
    Stopped,
    /// The socket failed.
    Io(rustix::io::Errno),
    /// The message was not a memif message.
    Garbage(proto::DecodeError),
}

impl std::fmt::Display for RecvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecvError::Closed => f.write_str("the peer closed the control socket"),
            RecvError::Timeout => {
                write!(f, "no control message within {} s", MSG_TIMEOUT.as_secs())
            }
            RecvError::Stopped => f.write_str("the port is stopping"),
            RecvError::Io(e) => write!(f, "control socket: {e}"),
            RecvError::Garbage(e) => write!(f, "the peer sent {e}"),
        }
    }
}

/// Send one message, with an fd in SCM_RIGHTS if given.
pub fn send(sock: &OwnedFd, msg: &Msg, fd: Option<BorrowedFd<'_>>) -> rustix::io::Result<()> {
    let bytes = msg.encode();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds;
    if let Some(fd) = fd {
        fds = [fd];
        control.push(SendAncillaryMessage::ScmRights(&fds));
    }
    let n = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(&bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if n != MSG_SIZE {
        return Err(rustix::io::Errno::MSGSIZE);
    }
    Ok(())
}

/// Wait up to `limit` for one message (and the fd it carries, if any),
/// giving up early when `stop` says so.
pub fn recv(
    sock: &OwnedFd,
    limit: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<(Msg, Option<OwnedFd>), RecvError> {
    let deadline = Instant::now() + limit;
    loop {
        if stop() {
            return Err(RecvError::Stopped);
        }
        if readable(sock, SLICE).map_err(RecvError::Io)? {
            break;
        }
        if Instant::now() >= deadline {
            return Err(RecvError::Timeout);
        }
    }
    let mut buf = [0u8; 2 * MSG_SIZE];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let r = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
    )
    .map_err(RecvError::Io)?;
    let mut fd = None;
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                // One fd per message in memif; extra ones are closed here.
                fd.get_or_insert(f);
            }
        }
    }
    if r.bytes == 0 {
        return Err(RecvError::Closed);
    }
    let msg = Msg::decode(&buf[..r.bytes]).map_err(RecvError::Garbage)?;
    Ok((msg, fd))
}

/// Whether `fd` becomes readable (or hung up) within `t`.
fn readable(fd: &OwnedFd, t: Duration) -> rustix::io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let ts = rustix::time::Timespec {
        tv_sec: t.as_secs() as i64,
        tv_nsec: t.subsec_nanos() as i64,
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(n) => Ok(n > 0),
        Err(rustix::io::Errno::INTR) => Ok(false),
        Err(e) => Err(e),
    }
}

fn send_disconnect(sock: &OwnedFd, reason: &str) {
    let _ = send(
        sock,
        &Msg::Disconnect {
            code: 0,
            reason: reason.to_string(),
        },
        None,
    );
}

/// What ended a handshake.
#[derive(Debug)]
enum Fail {
    /// The peer refused with this DISCONNECT reason.
    Refused(String),
    /// We refused the peer with this reason (sent to it).
    Refusing(String),
    /// The socket or the peer failed.
    Lost(String),
    /// The port is stopping.
    Stopped,
}

impl From<RecvError> for Fail {
    fn from(e: RecvError) -> Fail {
        match e {
            RecvError::Stopped => Fail::Stopped,
            e => Fail::Lost(e.to_string()),
        }
    }
}

fn io_fail(what: &str) -> impl Fn(rustix::io::Errno) -> Fail + '_ {
    move |e| Fail::Lost(format!("{what}: {e}"))
}

/// Wait for a message of type `want`; a DISCONNECT is a refusal.
fn expect(
    sock: &OwnedFd,
    want: MsgType,
    stop: &dyn Fn() -> bool,
) -> Result<(Msg, Option<OwnedFd>), Fail> {
    let (m, fd) = recv(sock, MSG_TIMEOUT, stop)?;
    match m {
        Msg::Disconnect { reason, .. } => Err(Fail::Refused(reason)),
        m if m.kind() == want => Ok((m, fd)),
        m => {
            let reason = format!("Unexpected message {:?} (wanted {want:?})", m.kind());
            send_disconnect(sock, "Unexpected message");
            Err(Fail::Refusing(reason))
        }
    }
}

/// The usual fix for a refusal reason a peer sent.
fn refusal_hint(reason: &str, opts: &MemifOptions) -> String {
    match reason {
        "Incorrect secret" | "Secret required" => {
            "secret= must be the same on both sides".to_string()
        }
        "ID not found" => format!(
            "no started server interface has id={} on {}: check id= (and that the server port is started)",
            opts.id, opts.socket
        ),
        "Already connected" => format!(
            "another client is already connected to id={} on {}",
            opts.id, opts.socket
        ),
        r if r.contains("version") => {
            "the peer speaks another memif protocol version (nicpoll speaks 2.0)".to_string()
        }
        _ => "see the peer's log".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Publishing a connection's rings to the queues.

/// The rings of one live connection, as published.
struct Attached {
    links: Vec<Arc<QueueLink>>,
    life: Arc<ConnLife>,
}

impl Attached {
    fn detach(self) {
        for l in &self.links {
            l.publish(None);
        }
        self.life.end();
    }
}

// ---------------------------------------------------------------------------
// Client.

/// The client's thread: connect, handshake, watch, and again, until `stop`.
pub fn client_loop(ep: Arc<Endpoint>, run: Arc<Running>) {
    let stop = || run.stop.load(Ordering::Relaxed);
    let mut last_failure: Option<String> = None;
    while !stop() {
        match client_session(&ep, &run) {
            Ok(()) => last_failure = None,
            Err(Fail::Stopped) => break,
            Err(f) => {
                let text = match &f {
                    Fail::Refused(r) => {
                        ep.counters.refused.fetch_add(1, Ordering::Relaxed);
                        format!(
                            "the memif server on {} refused the connection: {r:?}: {}",
                            ep.opts.socket,
                            refusal_hint(r, &ep.opts)
                        )
                    }
                    Fail::Refusing(r) => {
                        ep.counters.refused.fetch_add(1, Ordering::Relaxed);
                        format!(
                            "handshake with the server on {} failed: {r}",
                            ep.opts.socket
                        )
                    }
                    Fail::Lost(r) => r.clone(),
                    Fail::Stopped => unreachable!(),
                };
                if last_failure.as_deref() != Some(&text) {
                    match &f {
                        Fail::Lost(_) => log::warn!(
                            "{}: {text}; retrying every {} ms",
                            ep.name,
                            RETRY_INTERVAL.as_millis()
                        ),
                        _ => log::error!(
                            "{}: {text}; retrying every {} ms",
                            ep.name,
                            RETRY_INTERVAL.as_millis()
                        ),
                    }
                } else {
                    log::debug!("{}: {text}", ep.name);
                }
                ep.set_error(&text);
                last_failure = Some(text);
            }
        }
        ep.set_phase(Phase::Down);
        ep.quarantine.release(GRACE, false);
        let until = Instant::now() + RETRY_INTERVAL;
        while !stop() && Instant::now() < until {
            std::thread::sleep(SLICE.min(until.saturating_duration_since(Instant::now())));
        }
    }
    ep.set_phase(Phase::Down);
}

/// The layout of the client's region 0 (DPDK memif_region_init_shm and
/// memif_init_rings, rte_eth_memif.c:928-1084): every client-to-server ring,
/// then every server-to-client ring, then (copy mode) one buffer per slot of
/// every ring, ring by ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLayout {
    /// Client-to-server rings.
    pub c2s: usize,
    /// Server-to-client rings.
    pub s2c: usize,
    /// Slots per ring, as log2.
    pub log2: u8,
    /// Bytes per buffer.
    pub bsize: u32,
    /// Whether the buffers are in region 0 (copy mode).
    pub buffers: bool,
}

impl ClientLayout {
    /// Offset of ring `i` of all rings (client-to-server first).
    pub fn ring_offset(&self, i: usize) -> u64 {
        (i * RingView::bytes(self.log2)) as u64
    }
    /// Offset of the first buffer.
    pub fn buffers_offset(&self) -> u64 {
        self.ring_offset(self.c2s + self.s2c)
    }
    /// Offset of the buffer of slot 0 of ring `i` of all rings.
    pub fn ring_buffers(&self, i: usize) -> u64 {
        self.buffers_offset() + ((i as u64) << self.log2) * self.bsize as u64
    }
    /// Size of region 0.
    pub fn region_size(&self) -> u64 {
        if self.buffers {
            self.ring_buffers(self.c2s + self.s2c)
        } else {
            self.buffers_offset()
        }
    }
}

fn client_session(ep: &Arc<Endpoint>, run: &Arc<Running>) -> Result<(), Fail> {
    let stop = || run.stop.load(Ordering::Relaxed);
    let opts = &ep.opts;
    let addr = socket_addr(&opts.socket).map_err(io_fail("socket address"))?;
    let sock = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io_fail("socket(AF_UNIX, SOCK_SEQPACKET)"))?;
    if let Err(e) = rustix::net::connect(&sock, &addr) {
        return Err(Fail::Lost(format!(
            "no memif server listens on {} yet (connect: {e}){}",
            opts.socket,
            if opts.socket.abstract_ns {
                "; abstract sockets are per network namespace: both sides must share one (or use socket-abstract=no)"
            } else {
                ""
            }
        )));
    }
    ep.set_phase(Phase::Connecting);
    let (m, _) = expect(&sock, MsgType::Hello, &stop)?;
    let Msg::Hello(hello) = m else { unreachable!() };
    if hello.min_version > VERSION || hello.max_version < VERSION {
        send_disconnect(&sock, "Incompatible memif version");
        return Err(Fail::Refusing(format!(
            "the server speaks memif versions {:#06x}..={:#06x}, nicpoll {VERSION:#06x}",
            hello.min_version, hello.max_version
        )));
    }
    let (nb_rxq, nb_txq) = (run.rx.len(), run.tx.len());
    let layout = ClientLayout {
        c2s: nb_txq.min(hello.max_c2s_ring as usize + 1),
        s2c: nb_rxq.min(hello.max_s2c_ring as usize + 1),
        log2: opts.rsize.min(hello.max_log2_ring_size).max(1),
        bsize: opts.bsize as u32,
        buffers: run.pool_file.is_none(),
    };
    if layout.c2s < nb_txq || layout.s2c < nb_rxq {
        log::warn!(
            "{}: the server ({}) takes at most {} client-to-server and {} server-to-client rings; \
             queues beyond them stay idle",
            ep.name,
            hello.name,
            layout.c2s,
            layout.s2c
        );
    }
    let size = layout.region_size();
    if size > u32::MAX as u64 {
        send_disconnect(&sock, "Region too large");
        return Err(Fail::Refusing(format!(
            "{size} bytes of rings and buffers do not fit memif's 32-bit offsets: lower rsize=, bsize= or the queue count"
        )));
    }
    let (mapping, memfd) = Mapping::new_memfd("memif_region_0", size as usize)
        .map_err(|e| Fail::Lost(format!("creating a {size}-byte memfd region: {e}")))?;
    let mut regions = vec![Region::of_mapping(Arc::new(mapping))];
    let zero_copy = run.pool_file.as_ref().map(|_| {
        let r = Region::of_pool(&run.pool);
        regions.push(r.clone());
        ZeroCopy {
            index: 1,
            region: r,
            pool: run.pool.clone(),
        }
    });
    let regions: Arc<[Region]> = Arc::from(regions);
    let nrings = layout.c2s + layout.s2c;
    let mut rings = Vec::with_capacity(nrings);
    let mut eventfds = Vec::with_capacity(nrings);
    for i in 0..nrings {
        let ring = RingView::new(&regions[0], layout.ring_offset(i) as u32, layout.log2)
            .ok_or_else(|| Fail::Lost("ring outside its own region (a layout bug)".into()))?;
        ring.set_cookie(COOKIE);
        ring.set_flags(0);
        ring.set_head(0, Ordering::Relaxed);
        ring.set_tail(0, Ordering::Relaxed);
        if layout.buffers {
            let base = layout.ring_buffers(i) as u32;
            for s in 0..ring.size() {
                ring.set_desc(
                    s,
                    crate::sys::Desc {
                        flags: 0,
                        region: 0,
                        length: layout.bsize,
                        offset: base + s as u32 * layout.bsize,
                    },
                );
            }
        }
        rings.push(ring);
        eventfds.push(Arc::new(
            rustix::event::eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)
                .map_err(io_fail("eventfd"))?,
        ));
    }
    let init = Msg::Init(Init {
        version: VERSION,
        id: opts.id,
        mode: MODE_ETHERNET,
        secret: proto::secret_field(&opts.secret),
        name: APP_NAME.to_string(),
    });
    let step = |m: &Msg, fd: Option<BorrowedFd<'_>>| -> Result<(), Fail> {
        send(&sock, m, fd).map_err(io_fail("sending a control message"))?;
        expect(&sock, MsgType::Ack, &stop).map(|_| ())
    };
    step(&init, None)?;
    step(
        &Msg::AddRegion(AddRegion { index: 0, size }),
        Some(memfd.as_fd()),
    )?;
    if let (Some(f), Some(zc)) = (&run.pool_file, &zero_copy) {
        step(
            &Msg::AddRegion(AddRegion {
                index: 1,
                size: zc.region.len() as u64,
            }),
            Some(f.as_fd()),
        )?;
    }
    for (i, ring) in rings.iter().enumerate() {
        let c2s = i < layout.c2s;
        let index = if c2s { i } else { i - layout.c2s } as u16;
        step(
            &Msg::AddRing(AddRing {
                flags: if c2s { ADD_RING_FLAG_C2S } else { 0 },
                index,
                region: 0,
                offset: layout.ring_offset(i) as u32,
                log2_ring_size: ring.log2(),
                private_hdr_size: 0,
            }),
            Some(eventfds[i].as_fd()),
        )?;
    }
    send(
        &sock,
        &Msg::Connect {
            if_name: ep.name.clone(),
        },
        None,
    )
    .map_err(io_fail("sending CONNECT"))?;
    let (m, _) = expect(&sock, MsgType::Connected, &stop)?;
    let Msg::Connected { if_name } = m else {
        unreachable!()
    };
    // Connected (DPDK memif_connect, rte_eth_memif.c:1196-1232): indices from
    // zero, and polling mode on the rings we receive on.
    let life = Arc::new(ConnLife::default());
    let mut links = Vec::with_capacity(nrings);
    for (i, ring) in rings.iter().enumerate() {
        let c2s = i < layout.c2s;
        // Copy mode: every receive slot already describes its own buffer,
        // so all are posted now and the server can send at once (DPDK posts
        // them in its first receive burst, and drops what comes before).
        let posted = if !c2s && layout.buffers {
            ring.size()
        } else {
            0
        };
        ring.set_tail(0, Ordering::Relaxed);
        ring.set_head(posted, Ordering::Release);
        if !c2s {
            ring.set_flags(RING_FLAG_MASK_INT);
        }
        let link = if c2s {
            run.tx[i].clone()
        } else {
            run.rx[i - layout.c2s].clone()
        };
        link.publish(Some(Arc::new(RingAttach {
            ring: ring.clone(),
            regions: regions.clone(),
            own_buffers: layout
                .buffers
                .then(|| (layout.ring_buffers(i) as u32, layout.bsize)),
            zero_copy: zero_copy.clone(),
            interrupt: Some(eventfds[i].clone()),
            life: life.clone(),
        })));
        links.push(link);
    }
    let attached = Attached { links, life };
    {
        let mut s = ep.status();
        s.phase = Phase::Up;
        s.peer = Some((hello.name.clone(), if_name.clone()));
        s.rings = Some((layout.c2s, layout.s2c, layout.log2));
        s.last_error = None;
    }
    ep.counters.connects.fetch_add(1, Ordering::Relaxed);
    log::info!(
        "{}: connected to {} ({}) on {}: {} client-to-server and {} server-to-client rings of {} slots, {}",
        ep.name,
        if_name,
        hello.name,
        opts.socket,
        layout.c2s,
        layout.s2c,
        1u32 << layout.log2,
        if zero_copy.is_some() {
            "zero-copy"
        } else {
            "copy mode"
        }
    );
    let end = watch(&sock, &stop);
    attached.detach();
    ep.counters.disconnects.fetch_add(1, Ordering::Relaxed);
    ep.set_phase(Phase::Down);
    match end {
        Watch::Stopped => {
            send_disconnect(&sock, "interface stopped");
            Err(Fail::Stopped)
        }
        Watch::Ended(why) => {
            let text = format!("{} (server {}) disconnected: {why}", opts.socket, if_name);
            log::warn!("{}: {text}; reconnecting", ep.name);
            ep.set_error(&text);
            Ok(())
        }
    }
}

enum Watch {
    Stopped,
    Ended(String),
}

/// Watch a connected control socket until the peer ends it or we stop.
fn watch(sock: &OwnedFd, stop: &dyn Fn() -> bool) -> Watch {
    loop {
        match recv(sock, Duration::from_secs(3600), stop) {
            Err(RecvError::Stopped) => return Watch::Stopped,
            Err(RecvError::Timeout) => continue,
            Err(RecvError::Closed) => {
                return Watch::Ended(
                    "the peer closed the control socket (its process ended?)".into(),
                );
            }
            Err(e) => return Watch::Ended(e.to_string()),
            Ok((Msg::Disconnect { reason, .. }, _)) => {
                return Watch::Ended(format!("the peer sent DISCONNECT {reason:?}"));
            }
            Ok((m, _)) => log::debug!("memif: ignoring {:?} on a connected socket", m.kind()),
        }
    }
}

// ---------------------------------------------------------------------------
// Server.

/// One listening socket and the server ports registered on it.
#[derive(Debug)]
pub struct Listener {
    spec: SocketSpec,
    fd: OwnedFd,
    endpoints: Mutex<Vec<Weak<Endpoint>>>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static LISTENERS: Mutex<Vec<Weak<Listener>>> = Mutex::new(Vec::new());

/// A server port's place on its listener; dropping it unregisters the port
/// and closes the listener when it was the last one.
#[derive(Debug)]
pub struct Registration {
    listener: Arc<Listener>,
    ep: Weak<Endpoint>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let last = {
            let mut eps = self
                .listener
                .endpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            eps.retain(|e| !Weak::ptr_eq(e, &self.ep) && e.strong_count() > 0);
            eps.is_empty()
        };
        if last {
            let mut all = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|l| {
                l.strong_count() > 0 && !Weak::ptr_eq(l, &Arc::downgrade(&self.listener))
            });
            drop(all);
            self.listener.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self
                .listener
                .thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                let _ = t.join();
            }
            if !self.listener.spec.abstract_ns {
                let _ = std::fs::remove_file(&self.listener.spec.path);
            }
        }
    }
}

/// Register a server endpoint on the listener of its socket, creating the
/// listener (and its socket) if this process has none for that address yet.
pub fn register(ep: &Arc<Endpoint>) -> Result<Registration, String> {
    let spec = &ep.opts.socket;
    let mut all = LISTENERS.lock().unwrap_or_else(|e| e.into_inner());
    all.retain(|l| l.strong_count() > 0);
    let existing = all
        .iter()
        .filter_map(|l| l.upgrade())
        .find(|l| &l.spec == spec && !l.stop.load(Ordering::Relaxed));
    let listener = match existing {
        Some(l) => l,
        None => {
            let l = Arc::new(listen(ep, spec)?);
            all.push(Arc::downgrade(&l));
            let lt = l.clone();
            let t = std::thread::Builder::new()
                .name(format!("memif-listen-{}", ep.name))
                .spawn(move || accept_loop(lt))
                .map_err(|e| format!("starting the listener thread: {e}"))?;
            *l.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            l
        }
    };
    drop(all);
    let mut eps = listener.endpoints.lock().unwrap_or_else(|e| e.into_inner());
    eps.retain(|e| e.strong_count() > 0);
    if let Some(other) = eps
        .iter()
        .filter_map(|e| e.upgrade())
        .find(|o| o.opts.id == ep.opts.id)
    {
        return Err(format!(
            "{} is already a server with id={} on {}: two server interfaces on one socket need different id= values",
            other.name, ep.opts.id, spec
        ));
    }
    eps.push(Arc::downgrade(ep));
    drop(eps);
    Ok(Registration {
        listener,
        ep: Arc::downgrade(ep),
    })
}

/// Bind and listen. A socket file that no process listens on any more (left
/// by a killed server) is replaced; a live one is an error.
fn listen(ep: &Endpoint, spec: &SocketSpec) -> Result<Listener, String> {
    let addr = socket_addr(spec).map_err(|e| format!("socket address {spec}: {e}"))?;
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )
    .map_err(|e| format!("socket(AF_UNIX, SOCK_SEQPACKET): {e}"))?;
    if let Err(e) = rustix::net::bind(&fd, &addr) {
        let in_use = e == rustix::io::Errno::ADDRINUSE;
        if in_use && !spec.abstract_ns && !someone_listens(spec) {
            log::warn!(
                "{}: removing the stale memif socket {} (no process listens on it)",
                ep.name,
                spec.path
            );
            let _ = std::fs::remove_file(&spec.path);
            rustix::net::bind(&fd, &addr).map_err(|e| bind_error(spec, e))?;
        } else {
            return Err(bind_error(spec, e));
        }
    }
    rustix::net::listen(&fd, 16).map_err(|e| format!("listen on {spec}: {e}"))?;
    if !spec.abstract_ns && (ep.opts.owner_uid.is_some() || ep.opts.owner_gid.is_some()) {
        rustix::fs::chown(
            spec.path.as_str(),
            ep.opts.owner_uid.map(rustix::fs::Uid::from_raw),
            ep.opts.owner_gid.map(rustix::fs::Gid::from_raw),
        )
        .map_err(|e| {
            format!(
                "changing the owner of {} (owner-uid=/owner-gid=): {e}: that needs CAP_CHOWN",
                spec.path
            )
        })?;
    }
    Ok(Listener {
        spec: spec.clone(),
        fd,
        endpoints: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        thread: Mutex::new(None),
    })
}

fn bind_error(spec: &SocketSpec, e: rustix::io::Errno) -> String {
    let hint = match e {
        rustix::io::Errno::ADDRINUSE => {
            "another process listens on it (another memif server with this socket=?)"
        }
        rustix::io::Errno::NOENT => {
            "its directory does not exist: create it, or in a pod mount a volume there"
        }
        rustix::io::Errno::ACCESS | rustix::io::Errno::PERM => {
            "no permission to create it there: run as root or pick a writable directory"
        }
        _ => "",
    };
    format!(
        "bind {spec}: {e}{}{hint}",
        if hint.is_empty() { "" } else { ": " }
    )
}

fn someone_listens(spec: &SocketSpec) -> bool {
    let Ok(addr) = socket_addr(spec) else {
        return false;
    };
    let Ok(probe) = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    ) else {
        return false;
    };
    rustix::net::connect(&probe, &addr).is_ok()
}

fn accept_loop(l: Arc<Listener>) {
    while !l.stop.load(Ordering::Relaxed) {
        match readable(&l.fd, SLICE) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                log::error!("memif listener {}: poll: {e}", l.spec);
                std::thread::sleep(SLICE);
                continue;
            }
        }
        let conn = match rustix::net::accept_with(&l.fd, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(e) => {
                log::error!("memif listener {}: accept: {e}", l.spec);
                std::thread::sleep(SLICE);
                continue;
            }
        };
        let lc = l.clone();
        let spawned = std::thread::Builder::new()
            .name("memif-conn".into())
            .spawn(move || serve(lc, conn));
        if let Err(e) = spawned {
            log::error!(
                "memif listener {}: cannot start a connection thread: {e}",
                l.spec
            );
        }
    }
}

/// A server port's rings as the client announced them.
struct PendingRings {
    c2s: Vec<Option<(AddRing, OwnedFd)>>,
    s2c: Vec<Option<(AddRing, OwnedFd)>>,
}

fn serve(l: Arc<Listener>, sock: OwnedFd) {
    let lstop = || l.stop.load(Ordering::Relaxed);
    let hello = Msg::Hello(Hello {
        name: APP_NAME.to_string(),
        min_version: VERSION,
        max_version: VERSION,
        max_region: MAX_REGIONS - 1,
        max_s2c_ring: MAX_QUEUE_PAIRS,
        max_c2s_ring: MAX_QUEUE_PAIRS,
        max_log2_ring_size: MAX_LOG2_RING_SIZE,
    });
    if send(&sock, &hello, None).is_err() {
        return;
    }
    let init = match recv(&sock, MSG_TIMEOUT, &lstop) {
        Ok((Msg::Init(i), _)) => i,
        Ok((Msg::Disconnect { reason, .. }, _)) => {
            log::warn!(
                "memif {}: a client disconnected before INIT: {reason:?}",
                l.spec
            );
            return;
        }
        Ok((m, _)) => {
            send_disconnect(&sock, "Unexpected message");
            log::warn!(
                "memif {}: a client sent {:?} instead of INIT",
                l.spec,
                m.kind()
            );
            return;
        }
        Err(e) => {
            log::warn!("memif {}: a client connected but sent no INIT: {e}", l.spec);
            return;
        }
    };
    if init.version != VERSION {
        send_disconnect(&sock, "Incompatible memif version");
        log::error!(
            "memif {}: client {:?} speaks memif version {:#06x}, nicpoll {VERSION:#06x}",
            l.spec,
            init.name,
            init.version
        );
        return;
    }
    let eps: Vec<Arc<Endpoint>> = l
        .endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|e| e.upgrade())
        .collect();
    let Some((ep, run)) = eps
        .iter()
        .find(|e| e.opts.id == init.id)
        .and_then(|e| e.running().map(|r| (e.clone(), r)))
    else {
        send_disconnect(&sock, "ID not found");
        let ids: Vec<String> = eps
            .iter()
            .map(|e| {
                format!(
                    "{} (id={}{})",
                    e.name,
                    e.opts.id,
                    if e.running().is_some() {
                        ""
                    } else {
                        ", not started"
                    }
                )
            })
            .collect();
        log::error!(
            "memif {}: refused client {:?}: it asked for id={}, the server interfaces here are {}",
            l.spec,
            init.name,
            init.id,
            ids.join(", ")
        );
        for e in eps.iter().filter(|e| e.running().is_some()) {
            e.counters.refused.fetch_add(1, Ordering::Relaxed);
            e.set_error(&format!(
                "refused a client asking for id={} (this interface is id={})",
                init.id, e.opts.id
            ));
        }
        return;
    };
    let refuse = |reason: &str, detail: String| {
        send_disconnect(&sock, reason);
        ep.counters.refused.fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "refused client {:?} on {}: {reason}{detail}",
            init.name, l.spec
        );
        log::error!("{}: {text}", ep.name);
        ep.set_error(&text);
    };
    if ep.busy.swap(true, Ordering::AcqRel) {
        refuse("Already connected", String::new());
        return;
    }
    struct Busy<'a>(&'a Endpoint);
    impl Drop for Busy<'_> {
        fn drop(&mut self) {
            self.0.busy.store(false, Ordering::Release);
        }
    }
    let _busy = Busy(&ep);
    if init.mode != MODE_ETHERNET {
        refuse(
            "Only ethernet mode supported",
            format!(" (mode {})", init.mode),
        );
        return;
    }
    if let Err(reason) = proto::check_secret(&proto::secret_field(&ep.opts.secret), &init.secret) {
        refuse(reason, ": secret= must be the same on both sides".into());
        return;
    }
    let stop = || lstop() || run.stop.load(Ordering::Relaxed);
    ep.set_phase(Phase::Connecting);
    let r = server_session(&ep, &run, &sock, &init, &stop);
    ep.set_phase(Phase::Down);
    match r {
        Ok(()) | Err(Fail::Stopped) => {}
        Err(Fail::Refusing(reason)) => refuse(&reason, String::new()),
        Err(Fail::Refused(reason)) => {
            let text = format!("client {:?} gave up the handshake: {reason:?}", init.name);
            log::error!("{}: {text}", ep.name);
            ep.set_error(&text);
        }
        Err(Fail::Lost(reason)) => {
            let text = format!("handshake with client {:?} failed: {reason}", init.name);
            log::warn!("{}: {text}", ep.name);
            ep.set_error(&text);
        }
    }
    ep.quarantine.release(GRACE, false);
}

/// After INIT was accepted: regions, rings, CONNECT, then watch.
fn server_session(
    ep: &Arc<Endpoint>,
    run: &Arc<Running>,
    sock: &OwnedFd,
    init: &Init,
    stop: &dyn Fn() -> bool,
) -> Result<(), Fail> {
    send(sock, &Msg::Ack, None).map_err(io_fail("sending ACK"))?;
    let mut regions: Vec<Region> = Vec::new();
    let mut rings = PendingRings {
        c2s: (0..run.rx.len()).map(|_| None).collect(),
        s2c: (0..run.tx.len()).map(|_| None).collect(),
    };
    let peer_if = loop {
        let (m, fd) = recv(sock, MSG_TIMEOUT, stop)?;
        match m {
            Msg::AddRegion(ar) => {
                let Some(fd) = fd else {
                    return Err(Fail::Refusing("Missing region fd".into()));
                };
                if ar.index as usize != regions.len() || ar.index >= MAX_REGIONS {
                    return Err(Fail::Refusing(format!(
                        "Invalid region index {} (expected {})",
                        ar.index,
                        regions.len()
                    )));
                }
                let m = Mapping::map_peer(&fd, ar.size).map_err(|e| {
                    Fail::Refusing(format!(
                        "Failed to map region {} ({} bytes): {e}",
                        ar.index, ar.size
                    ))
                })?;
                regions.push(Region::of_mapping(Arc::new(m)));
            }
            Msg::AddRing(ar) => {
                let Some(fd) = fd else {
                    return Err(Fail::Refusing("Missing interrupt fd".into()));
                };
                if ar.private_hdr_size != 0 {
                    return Err(Fail::Refusing("Private headers not supported".into()));
                }
                if ar.log2_ring_size == 0 || ar.log2_ring_size > MAX_LOG2_RING_SIZE {
                    return Err(Fail::Refusing(format!(
                        "Invalid ring size 2^{} (at most 2^{MAX_LOG2_RING_SIZE})",
                        ar.log2_ring_size
                    )));
                }
                let (list, what) = if ar.is_c2s() {
                    (&mut rings.c2s, "receive")
                } else {
                    (&mut rings.s2c, "transmit")
                };
                let n = list.len();
                match list.get_mut(ar.index as usize) {
                    Some(slot @ None) => *slot = Some((ar, fd)),
                    Some(Some(_)) => {
                        return Err(Fail::Refusing(format!("Duplicate ring index {}", ar.index)));
                    }
                    None if ar.index <= MAX_QUEUE_PAIRS => {
                        // More rings than we have queues (DPDK refuses: "Invalid
                        // ring index"). Taken but not attached: the client's
                        // extra queues fill their rings and then count drops,
                        // while the others work.
                        log::warn!(
                            "{}: the client offers {} ring {} but this interface has {n} {what}                              queues: that ring is not served (raise --rxq/--txq to match the client)",
                            ep.name,
                            if ar.is_c2s() {
                                "client-to-server"
                            } else {
                                "server-to-client"
                            },
                            ar.index
                        );
                    }
                    None => {
                        return Err(Fail::Refusing(format!("Invalid ring index {}", ar.index)));
                    }
                }
            }
            Msg::Connect { if_name } => break if_name,
            Msg::Disconnect { reason, .. } => return Err(Fail::Refused(reason)),
            m => {
                return Err(Fail::Refusing(format!("Unexpected message {:?}", m.kind())));
            }
        }
        send(sock, &Msg::Ack, None).map_err(io_fail("sending ACK"))?;
    };
    // CONNECT: check every ring and attach it (DPDK memif_connect).
    let regions: Arc<[Region]> = Arc::from(regions);
    let life = Arc::new(ConnLife::default());
    let mut staged: Vec<(Arc<QueueLink>, RingAttach)> = Vec::new();
    let mut log2 = 0;
    for (c2s, list, links) in [
        (true, &mut rings.c2s, &run.rx),
        (false, &mut rings.s2c, &run.tx),
    ] {
        for (i, slot) in list.iter_mut().enumerate() {
            let Some((ar, fd)) = slot.take() else {
                continue;
            };
            let region = regions.get(ar.region as usize).ok_or_else(|| {
                Fail::Refusing(format!(
                    "Ring {} in region {} that was not added",
                    ar.index, ar.region
                ))
            })?;
            let ring = RingView::new(region, ar.offset, ar.log2_ring_size).ok_or_else(|| {
                Fail::Refusing(format!(
                    "Ring {} at offset {} does not fit region {} ({} bytes) or is misaligned",
                    ar.index,
                    ar.offset,
                    ar.region,
                    region.len()
                ))
            })?;
            if ring.cookie() != COOKIE {
                return Err(Fail::Refusing(format!(
                    "Wrong ring cookie {:#x} in ring {}",
                    ring.cookie(),
                    ar.index
                )));
            }
            log2 = ar.log2_ring_size;
            ring.set_head(0, Ordering::Relaxed);
            ring.set_tail(0, Ordering::Release);
            if c2s {
                ring.set_flags(RING_FLAG_MASK_INT);
            }
            staged.push((
                links[i].clone(),
                RingAttach {
                    ring,
                    regions: regions.clone(),
                    own_buffers: None,
                    zero_copy: None,
                    interrupt: Some(Arc::new(fd)),
                    life: life.clone(),
                },
            ));
        }
    }
    let n_c2s = staged
        .iter()
        .filter(|(_, a)| a.ring.flags() & RING_FLAG_MASK_INT != 0)
        .count();
    let n_s2c = staged.len() - n_c2s;
    let mut links = Vec::with_capacity(staged.len());
    for (link, att) in staged {
        link.publish(Some(Arc::new(att)));
        links.push(link);
    }
    let attached = Attached { links, life };
    {
        let mut s = ep.status();
        s.phase = Phase::Up;
        s.peer = Some((init.name.clone(), peer_if.clone()));
        s.rings = Some((n_c2s, n_s2c, log2));
        s.last_error = None;
    }
    ep.counters.connects.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = send(
        sock,
        &Msg::Connected {
            if_name: ep.name.clone(),
        },
        None,
    ) {
        attached.detach();
        ep.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        return Err(Fail::Lost(format!("sending CONNECTED: {e}")));
    }
    log::info!(
        "{}: client {} ({}) connected on {}: {n_c2s} client-to-server and {n_s2c} server-to-client rings of {} slots",
        ep.name,
        peer_if,
        init.name,
        ep.opts.socket,
        1u32 << log2
    );
    let end = watch(sock, stop);
    attached.detach();
    ep.counters.disconnects.fetch_add(1, Ordering::Relaxed);
    match end {
        Watch::Stopped => {
            send_disconnect(sock, "interface stopped");
            Err(Fail::Stopped)
        }
        Watch::Ended(why) => {
            let text = format!("client {} ({}) disconnected: {why}", peer_if, init.name);
            log::warn!("{}: {text}; listening for the next client", ep.name);
            ep.set_error(&text);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_layout_is_dpdks() {
        // Two queue pairs, 2^10 slots, 2048-byte buffers, copy mode:
        // rte_eth_memif.c:948-959 and 1054-1082.
        let l = ClientLayout {
            c2s: 2,
            s2c: 2,
            log2: 10,
            bsize: 2048,
            buffers: true,
        };
        let ring = 128 + 16 * 1024;
        assert_eq!(l.ring_offset(3), 3 * ring as u64);
        assert_eq!(l.buffers_offset(), 4 * ring as u64);
        assert_eq!(l.ring_buffers(2), 4 * ring as u64 + 2 * 1024 * 2048);
        assert_eq!(l.region_size(), 4 * ring as u64 + 4 * 1024 * 2048);
        let zc = ClientLayout {
            buffers: false,
            ..l
        };
        assert_eq!(zc.region_size(), 4 * ring as u64);
    }
}
