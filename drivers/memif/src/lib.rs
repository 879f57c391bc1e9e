//! `net_memif`: shared-memory packet interfaces between processes, containers
//! and pods on one machine, interoperable with DPDK's `net_memif` (22.11,
//! 24.11), VPP's memif and libmemif.
//!
//! ```text
//! --vdev net_memif0[,role=server|client][,id=0][,socket=/run/memif.sock]
//!                  [,socket-abstract=yes|no][,owner-uid=U][,owner-gid=G]
//!                  [,bsize=2048][,rsize=10][,mac=MAC][,secret=S][,zero-copy=yes|no]
//! ```
//!
//! The arguments and their defaults are DPDK's ([`options`]). A client
//! connects to the server's unix seqpacket socket (abstract by default, as in
//! DPDK; `socket-abstract=no` for a file, which is what two containers share
//! through a volume), and the memif handshake ([`control`]) hands the server
//! the client's shared memory: one memfd region with a pair of descriptor
//! rings per queue and (copy mode) one buffer per slot. The client's transmit
//! queues and the server's receive queues share the client-to-server rings,
//! and the other way round ([`queue`]).
//!
//! - **Queues**: a client offers `--txq` client-to-server and `--rxq`
//!   server-to-client rings (fewer if the server takes fewer); a server takes
//!   rings up to its own `--rxq`/`--txq`. Queues without a ring stay idle.
//! - **Reconnects**: a server keeps listening and takes the next client when
//!   one leaves; a client tries again every 500 ms until it is stopped. While
//!   disconnected, receive returns nothing and transmit takes nothing (the
//!   caller counts the drops). The link is up while connected.
//! - **Zero copy** (`zero-copy=yes`, client only, as in DPDK): the mempool's
//!   memory is shared as region 1; the server writes received frames straight
//!   into posted mbufs and reads transmitted ones in place. It needs the pool
//!   in hugepage files (not `--no-huge`, not `--huge-unlink`).
//! - **Chained frames**: a peer sends a frame longer than its buffer size in
//!   several descriptors (`MEMIF_DESC_FLAG_NEXT`); this driver does not yet
//!   receive into multi-segment mbufs (`rx_scatter: false`), so such frames
//!   are dropped and counted (`rx_chained_dropped`, and RX-errors). nicpoll
//!   itself sends a single mbuf longer than a buffer in chained descriptors,
//!   as DPDK does; a multi-segment mbuf (`tx_multi_seg: false`) is dropped
//!   and counted in TX-errors (testpmd refuses such a plan up front). Frames
//!   longer than `PortConf::max_rx_pktlen` (at most the data room) are
//!   dropped and counted in RX-errors.
//! - **Trust**: everything the peer writes in shared memory is checked before
//!   use (see [`queue`]); a misbehaving peer costs counted drops, never an
//!   access outside its regions.
//!
//! # unsafe
//!
//! Only in [`sys`]: mmap/munmap and the accesses to shared memory. Every other
//! module denies unsafe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod control;
pub mod options;
pub mod proto;
pub mod queue;
#[allow(unsafe_code)]
pub mod sys;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

pub use control::{ConnStatus, Phase};
pub use options::{MemifOptions, Role, SocketSpec};
use queue::{MemifQueueStats, MemifQueueStatsRef, MemifRx, MemifTx, QueueLink, Side};

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_memif";
/// Queue pairs a port takes at most (`ETH_MEMIF_MAX_NUM_Q_PAIRS`).
const MAX_QUEUES: u16 = 255;
/// Link speed reported while connected (DPDK reports 100G).
const SPEED_MBPS: u32 = 100_000;

/// A memif port.
pub struct MemifPort {
    name: String,
    port_id: u16,
    ep: Arc<control::Endpoint>,
    registration: Option<control::Registration>,
    conf: Option<PortConf>,
    /// The receive frame limit `configure` settled on.
    rx_limit: u32,
    running: Option<Arc<control::Running>>,
    client_thread: Option<JoinHandle<()>>,
    /// One clone per queue handed out: stop refuses while queues live.
    queues_alive: Arc<()>,
    counters: PortCounters,
    rx_stats: Vec<MemifQueueStatsRef>,
    tx_stats: Vec<MemifQueueStatsRef>,
}

impl std::fmt::Debug for MemifPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemifPort")
            .field("name", &self.name)
            .field("opts", &self.ep.opts)
            .field("started", &self.running.is_some())
            .field("status", &self.ep.snapshot())
            .finish()
    }
}

impl MemifPort {
    /// Create the port `net_memifN,key=value,...`. A server starts listening
    /// on its socket now (so that clients find it); it takes a client once
    /// started.
    pub fn from_devargs(args: &DevArgs, port_id: u16) -> Result<MemifPort> {
        if args.driver != DRIVER {
            return Err(Error::DevArgs {
                device: args.spec.clone(),
                reason: format!("not a {DRIVER} device"),
            });
        }
        MemifPort::new(&args.name, MemifOptions::from_devargs(args)?, port_id)
    }

    /// Create a port with explicit options.
    pub fn new(name: &str, opts: MemifOptions, port_id: u16) -> Result<MemifPort> {
        let err = |reason: String| Error::port(port_id, name, "create", reason);
        if !opts.socket.abstract_ns {
            let dir = std::path::Path::new(&opts.socket.path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                return Err(err(format!(
                    "socket={}: directory {} does not exist: create it (in a pod: mount a shared \
                     volume there)",
                    opts.socket.path,
                    dir.display()
                )));
            }
        }
        if opts.zero_copy && opts.role == Role::Server {
            log::info!("{name}: zero-copy=yes applies to clients only; the server copies");
        }
        let ep = Arc::new(control::Endpoint::new(name, opts));
        let registration = if ep.opts.role == Role::Server {
            Some(control::register(&ep).map_err(err)?)
        } else {
            None
        };
        Ok(MemifPort {
            name: name.to_string(),
            port_id,
            ep,
            registration,
            conf: None,
            rx_limit: 0,
            running: None,
            client_thread: None,
            queues_alive: Arc::new(()),
            counters: PortCounters::default(),
            rx_stats: Vec::new(),
            tx_stats: Vec::new(),
        })
    }

    /// The options the port was created with.
    pub fn options(&self) -> &MemifOptions {
        &self.ep.opts
    }

    /// The connection's state: phase, peer, rings, last error.
    pub fn status(&self) -> ConnStatus {
        self.ep.snapshot()
    }

    /// Wait up to `limit` for the link to come up; whether it did.
    pub fn wait_connected(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.ep.snapshot().phase == Phase::Up && self.queues_attached() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn queues_attached(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.rx.iter().chain(r.tx.iter()).any(|l| l.is_attached()))
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::port(self.port_id, &self.name, op, reason)
    }

    /// Stop the control side: end the connection, stop the threads, release
    /// what zero-copy rings held.
    fn shut_down(&mut self) {
        let Some(run) = self.running.take() else {
            return;
        };
        run.stop.store(true, Ordering::Relaxed);
        *self.ep.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(t) = self.client_thread.take() {
            let _ = t.join();
        }
        // A server connection thread notices the stop within its 100 ms slice.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.ep.busy.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for l in run.rx.iter().chain(run.tx.iter()) {
            l.publish(None);
        }
        if !self.ep.quarantine.is_empty() {
            std::thread::sleep(control::GRACE);
            self.ep.quarantine.release(control::GRACE, true);
        }
    }
}

impl Port for MemifPort {
    fn info(&self) -> PortInfo {
        let ring = 1u16 << self.ep.opts.rsize.min(15);
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: MAX_QUEUES,
            max_tx_queues: MAX_QUEUES,
            default_rxd: ring,
            default_txd: ring,
            min_rxd: 1,
            max_rxd: u16::MAX,
            min_txd: 1,
            max_txd: u16::MAX,
            desc_align: 1,
            // A frame is received into one mbuf: configure bounds this by
            // the pool's data room (port::rx_frame_limit).
            max_rx_pktlen: nicpoll::mempool::MAX_DATA_ROOM as u32,
            // Chained descriptors (MEMIF_DESC_FLAG_NEXT) are dropped on
            // receive and chained mbufs on transmit (counted in the errors).
            rx_scatter: false,
            tx_multi_seg: false,
            numa_node: None,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        nicpoll::port::ensure_stopped(self.running.is_some(), self.port_id, &self.name)?;
        port::check_conf(conf.port_id, &self.info(), conf)?;
        self.rx_limit = port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        let opts = &self.ep.opts;
        if opts.zero_copy && opts.role == Role::Client {
            let r = conf.mempool.region();
            if r.path().is_none() {
                return Err(self.err(
                    "configure",
                    format!(
                        "zero-copy=yes shares mempool {}'s memory with the server, which needs it \
                         in a hugepage file; this pool is in plain memory or its file was \
                         unlinked: run without --no-huge and --huge-unlink, or use zero-copy=no",
                        conf.mempool.name()
                    ),
                ));
            }
            if r.len() as u64 > u32::MAX as u64 {
                return Err(self.err(
                    "configure",
                    format!(
                        "zero-copy=yes: mempool {} spans {} bytes, beyond memif's 32-bit offsets: \
                         lower --total-num-mbufs",
                        conf.mempool.name(),
                        r.len()
                    ),
                ));
            }
        }
        if u32::from(opts.bsize) > conf.mempool.data_room() as u32 && opts.role == Role::Client {
            log::info!(
                "{}: bsize={} is above the {}-byte data room of mempool {}: frames longer than \
                 the data room are dropped and counted in RX-errors (--mbuf-size raises it)",
                self.name,
                opts.bsize,
                conf.mempool.data_room(),
                conf.mempool.name()
            );
        }
        if conf.nb_rxd != 0 || conf.nb_txd != 0 {
            log::info!(
                "{}: --rxd/--txd do not size memif rings; rsize={} does (2^{} slots, the client's \
                 choice)",
                self.name,
                opts.rsize,
                opts.rsize
            );
        }
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        self.rx_stats = (0..conf.nb_rxq)
            .map(|_| Arc::new(CachePadded::new(MemifQueueStats::default())))
            .collect();
        self.tx_stats = (0..conf.nb_txq)
            .map(|_| Arc::new(CachePadded::new(MemifQueueStats::default())))
            .collect();
        self.port_id = conf.port_id;
        self.conf = Some(conf.clone());
        Ok(())
    }

    fn start(&mut self) -> Result<PortQueues> {
        let Some(conf) = self.conf.clone() else {
            return Err(self.err("start", "the port is not configured".into()));
        };
        if self.running.is_some() {
            return Err(self.err("start", "the port is already started".into()));
        }
        let opts = &self.ep.opts;
        let pool_file: Option<OwnedFd> = if opts.zero_copy && opts.role == Role::Client {
            let path = conf.mempool.region().path().map(|p| p.to_path_buf());
            let path =
                path.ok_or_else(|| self.err("start", "zero-copy: the mempool has no file".into()))?;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| {
                    self.err(
                        "start",
                        format!(
                            "zero-copy: opening the mempool's file {}: {e}",
                            path.display()
                        ),
                    )
                })?;
            Some(f.into())
        } else {
            None
        };
        let q = &self.ep.quarantine;
        let run = Arc::new(control::Running {
            rx: (0..conf.nb_rxq)
                .map(|_| Arc::new(QueueLink::new(q.clone())))
                .collect(),
            tx: (0..conf.nb_txq)
                .map(|_| Arc::new(QueueLink::new(q.clone())))
                .collect(),
            pool: conf.mempool.clone(),
            pool_file,
            stop: std::sync::atomic::AtomicBool::new(false),
        });
        let side = match opts.role {
            Role::Server => Side::Server,
            Role::Client => Side::Client,
        };
        *self.ep.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(run.clone());
        if opts.role == Role::Client {
            let (ep, r) = (self.ep.clone(), run.clone());
            let t = std::thread::Builder::new()
                .name(format!("memif-{}", self.name))
                .spawn(move || control::client_loop(ep, r))
                .map_err(|e| self.err("start", format!("starting the control thread: {e}")))?;
            self.client_thread = Some(t);
        }
        let zero_copy = run.pool_file.is_some();
        let rx = run
            .rx
            .iter()
            .enumerate()
            .map(|(q, link)| {
                let mut rx = MemifRx::new(
                    link.clone(),
                    side,
                    conf.port_id,
                    q as u16,
                    conf.mempool.clone(),
                    self.counters.rx(q),
                    self.rx_stats[q].clone(),
                );
                rx.zero_copy = zero_copy;
                rx.set_frame_limit(self.rx_limit);
                Box::new(Held {
                    q: rx,
                    _alive: self.queues_alive.clone(),
                }) as Box<dyn RxQueue>
            })
            .collect();
        let tx = run
            .tx
            .iter()
            .enumerate()
            .map(|(q, link)| {
                let mut tx = MemifTx::new(
                    link.clone(),
                    side,
                    self.counters.tx(q),
                    self.tx_stats[q].clone(),
                );
                tx.zero_copy = zero_copy;
                Box::new(Held {
                    q: tx,
                    _alive: self.queues_alive.clone(),
                }) as Box<dyn TxQueue>
            })
            .collect();
        log::info!(
            "{}: memif {} id={} on {}, {} rx / {} tx queues{}",
            self.name,
            opts.role,
            opts.id,
            opts.socket,
            conf.nb_rxq,
            conf.nb_txq,
            if run.pool_file.is_some() {
                ", zero-copy"
            } else {
                ""
            }
        );
        self.running = Some(run);
        Ok(PortQueues { rx, tx })
    }

    fn stop(&mut self) -> Result<()> {
        if self.running.is_none() {
            return Ok(());
        }
        if Arc::strong_count(&self.queues_alive) > 1 {
            return Err(self.err(
                "stop",
                "queues handed out by start are still in use; drop them first".into(),
            ));
        }
        self.shut_down();
        Ok(())
    }

    fn is_started(&self) -> bool {
        self.running.is_some()
    }

    fn link(&self) -> Link {
        Link {
            up: self.running.is_some() && self.ep.snapshot().phase == Phase::Up,
            speed_mbps: SPEED_MBPS,
            full_duplex: true,
        }
    }

    fn mac_addr(&self) -> MacAddr {
        self.ep.opts.mac.unwrap_or(MacAddr([
            0x02,
            0x6d,
            0x65,
            0x6d,
            (self.port_id >> 8) as u8,
            self.port_id as u8,
        ]))
    }

    fn promiscuous(&self) -> bool {
        true
    }

    fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        if on {
            Ok(())
        } else {
            Err(self.err(
                "promiscuous",
                "memif has no address filter: every frame the peer sends is received".into(),
            ))
        }
    }

    fn stats(&self) -> PortStats {
        self.counters.stats()
    }

    fn reset_stats(&mut self) {
        self.counters.reset();
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let mut v = self.counters.xstats();
        let sum = |s: &[MemifQueueStatsRef], f: fn(&MemifQueueStats) -> u64| -> u64 {
            s.iter().map(|q| f(q)).sum()
        };
        let st = self.ep.snapshot();
        let c = &self.ep.counters;
        v.extend([
            (
                "memif_connected".to_string(),
                u64::from(st.phase == Phase::Up),
            ),
            (
                "memif_connects".to_string(),
                c.connects.load(Ordering::Relaxed),
            ),
            (
                "memif_disconnects".to_string(),
                c.disconnects.load(Ordering::Relaxed),
            ),
            (
                "memif_refused".to_string(),
                c.refused.load(Ordering::Relaxed),
            ),
            (
                "rx_bad_descriptors".to_string(),
                sum(&self.rx_stats, |q| q.bad_desc.get()),
            ),
            (
                "rx_chained_dropped".to_string(),
                sum(&self.rx_stats, |q| q.chained_dropped.get()),
            ),
            (
                "rx_ring_index_errors".to_string(),
                sum(&self.rx_stats, |q| q.bad_index.get()),
            ),
            (
                "tx_bad_descriptors".to_string(),
                sum(&self.tx_stats, |q| q.bad_desc.get()),
            ),
            (
                "tx_chained_frames".to_string(),
                sum(&self.tx_stats, |q| q.chained_sent.get()),
            ),
            (
                "tx_ring_index_errors".to_string(),
                sum(&self.tx_stats, |q| q.bad_index.get()),
            ),
            (
                "tx_interrupts".to_string(),
                sum(&self.tx_stats, |q| q.interrupts.get()),
            ),
        ]);
        v
    }
}

/// A queue handed out by `start`, holding the port's count of live queues.
struct Held<Q> {
    q: Q,
    _alive: Arc<()>,
}

impl RxQueue for Held<MemifRx> {
    #[inline]
    fn rx_burst(&mut self, out: &mut nicpoll::mbuf::MbufBatch) -> usize {
        self.q.rx_burst(out)
    }

    fn burst_mode(&self) -> Option<&'static str> {
        self.q.burst_mode()
    }
}

impl TxQueue for Held<MemifTx> {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut nicpoll::mbuf::MbufBatch) -> usize {
        self.q.tx_burst(pkts)
    }

    fn burst_mode(&self) -> Option<&'static str> {
        self.q.burst_mode()
    }
}

impl Drop for MemifPort {
    fn drop(&mut self) {
        self.shut_down();
        // Then `registration` unregisters a server from its listener (the last
        // one closes the socket and removes its file).
        self.registration.take();
    }
}

#[cfg(test)]
mod tests;
