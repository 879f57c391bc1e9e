//! `net_af_xdp`: ports on AF_XDP sockets, like DPDK's net_af_xdp, with the
//! port's mempool registered whole as the UMEM so that received frames become
//! mbufs and mbufs are transmitted without a copy between UMEM and mbuf.
//!
//! ```text
//! --vdev net_af_xdp0,iface=eth0[,start_queue=0][,queue_count=1][,force_copy=0]
//!                   [,busy_budget=0][,xdp_mode=auto|native|skb]
//! ```
//!
//! - `iface` (required): the interface. Port queue `q` is interface queue
//!   `start_queue + q`; the port has `queue_count` receive and transmit queues.
//! - `force_copy=1` binds in copy mode (`XDP_COPY`). Otherwise the kernel uses
//!   zero copy where the driver supports it and copy mode elsewhere (veth, or
//!   `xdp_mode=skb`, which always binds in copy mode). The mode in use is
//!   logged at start and shown in xstats (`xsk_zero_copy`).
//! - `busy_budget=N` (default 0, off): N > 0 turns on preferred busy polling as
//!   DPDK does (SO_PREFER_BUSY_POLL, SO_BUSY_POLL = 20 µs, SO_BUSY_POLL_BUDGET =
//!   N) and makes a receive burst that finds nothing call recvfrom(MSG_DONTWAIT)
//!   to drive the driver. DPDK's default is 64; ours is 0 because busy polling
//!   only pays on a NIC set up for it (napi_defer_hard_irqs, gro_flush_timeout)
//!   and costs a syscall per empty poll elsewhere (on veth DPDK measured 0.38
//!   Mpps with 64 and 0.42 with 0).
//! - `xdp_mode`: `auto` (default: native if the driver has it, else generic),
//!   `native` (refused where the driver has none) or `skb` (generic).
//!
//! # How it works
//!
//! At creation the port attaches a five-instruction redirect program
//! ([`xdp::PROG_NAME`], assembled in Rust) with its XSKMAP through a BPF link:
//! the kernel detaches it when the port is dropped or the process dies, even by
//! SIGKILL. An interface that already carries a program that is not ours is
//! refused and left as it was; a stale one of ours attached through netlink is
//! removed (see [`xdp`]). At start the port opens one AF_XDP socket per queue:
//! the first registers the mempool's memory as the UMEM, the others share it
//! (`XDP_SHARED_UMEM`, each with its own fill and completion rings). Every
//! socket binds with `XDP_USE_NEED_WAKEUP`, so a burst makes at most one
//! syscall: sendto when the TX ring asks for a wakeup (always, in copy mode:
//! copy-mode transmission happens inside that call), recvfrom when the fill
//! ring asks (zero-copy drivers out of buffers) or busy polling is on.
//!
//! The UMEM layout is described in `sys`: chunks are pool elements, the UMEM
//! headroom is 128 so that the kernel's 256-byte XDP headroom ends exactly at
//! the pool's fixed data offset (`ELEMENT_DATA_OFFSET` = 384): every received
//! frame sits where a fresh mbuf's data starts, and the receive room per chunk
//! is the pool's `data_room()` (1664 bytes with 2 KiB elements).
//!
//! Transmit: an mbuf of the port's pool goes out in place (the descriptor
//! points at its data); an mbuf of another pool is copied into a chunk of ours
//! and freed; an empty one is dropped and counted (the kernel would never
//! complete it). Completed chunks return to the pool at the next burst.
//!
//! # Jumbo frames: multi-buffer AF_XDP
//!
//! A chunk holds `data_room()` bytes (1664 with 2 KiB elements; chunks are at
//! most a page). When a frame may be longer (the interface's MTU + 18, or
//! `--max-pkt-len`), the sockets bind with `XDP_USE_SG` (Linux 6.6): the
//! kernel splits a frame over several chunks, one RX descriptor each with
//! `XDP_PKT_CONTD` on all but the last, and the queue chains those mbufs into
//! one packet (kept across bursts until its last descriptor). The program is
//! loaded multi-buffer aware (`BPF_F_XDP_HAS_FRAGS`, the "xdp.frags" of
//! libbpf; Linux 5.18) wherever the kernel knows the flag, since drivers refuse
//! native XDP with a large MTU otherwise. A chain is sent as one descriptor
//! per segment (`XDP_PKT_CONTD`): segments of the port's pool in place, others
//! copied into chunks; a chain of more than 18 segments (the most a packet may
//! take on every kernel) is copied into as few chunks as it takes; without
//! `XDP_USE_SG` a chain is copied into one chunk if it fits, else dropped and
//! counted. A kernel without multi-buffer AF_XDP (or XDP) gets a clear error at
//! start naming the MTU or `--max-pkt-len` that fits one chunk.
//!
//! # veth (measured on Linux 6.18)
//!
//! veth has no AF_XDP zero copy: sockets run in copy mode whatever is asked.
//! `auto` attaches natively; nothing is needed on the peer (attaching XDP to
//! one end clears GSO on the other, so its frames take veth's NAPI path, where
//! the program runs). Native mode also sees frames that tc `mirred` sends back
//! from the peer; generic (skb) mode does not: the kernel skips generic XDP for
//! skbs act_mirred re-injected, so such a loop delivers nothing.
//!
//! # Teardown
//!
//! Stopping removes the XSKMAP slots and closes the sockets; every chunk the
//! kernel still held comes back to the pool (a per-queue ledger knows which).
//! In zero-copy mode the driver releases its buffers in deferred work, so the
//! close waits 100 ms before the chunks become mbufs again. A queue just closed
//! stays busy until that work has run: start retries EBUSY binds for 2 s. The
//! program goes with the last reference to its link; a child the process is
//! forking at that moment holds one until it execs, so creation gives our own
//! live link up to 1 s to go before refusing the interface.
//!
//! # unsafe
//!
//! Only in two modules: `sys` (AF_XDP socket and ring syscalls, mmap, ring
//! access, raw mbuf conversion, netlink socket I/O) and `bpf` (the bpf(2)
//! system call). Every other module denies unsafe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[allow(unsafe_code)]
mod bpf;
mod netlink;
#[allow(unsafe_code)]
mod sys;
pub mod xdp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::mbuf::MbufBatch;
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

use sys::{RxSide, TxSide, XskShared, XskStats, XskStep};
pub use xdp::XdpMode;

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_af_xdp";
const KEYS: &[&str] = &[
    "iface",
    "start_queue",
    "queue_count",
    "force_copy",
    "busy_budget",
    "xdp_mode",
];
/// Most queues one port takes (DPDK's af_xdp limit is 128; ours is a u16 anyway).
const MAX_QUEUES: u32 = 128;
/// Receive (and fill) ring size when none is asked for: four times libxdp's
/// and DPDK's 2048. A poller that loses its CPU for a moment (a process the
/// scheduler runs there, the hypervisor taking the vCPU) finds on return what
/// arrived meanwhile; 2048 entries last 2.3 ms at 0.9 Mpps and overflowed on
/// veth in a VM, 8192 last 9 ms (docs/DECISIONS.md, BENCHMARKS.md §3). The
/// cost is memory: 8192 more mbufs (16 MiB with 2 KiB elements) per queue.
const DEFAULT_RX_DESCS: u16 = 8192;
/// Transmit ring size when none is asked for (libxdp's and DPDK's default): a
/// full TX ring only delays the sender, nothing is lost.
const DEFAULT_TX_DESCS: u16 = 2048;
const MIN_DESCS: u16 = 64;
const MAX_DESCS: u16 = 32768;
/// SO_BUSY_POLL value when busy_budget is on (DPDK's).
const BUSY_POLL_USECS: u32 = 20;
/// How long start waits for a queue that a just-closed socket still holds.
const BIND_BUSY_WAIT: Duration = Duration::from_secs(2);

const IFF_UP: u32 = 0x1;
const IFF_PROMISC: u32 = 0x100;

/// Options of an AF_XDP port (its device arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpOptions {
    /// Interface name.
    pub iface: String,
    /// First interface queue.
    pub start_queue: u32,
    /// Number of interface queues (and port queues).
    pub queue_count: u32,
    /// Bind in copy mode even where zero copy is possible.
    pub force_copy: bool,
    /// Preferred busy-polling budget; 0 turns busy polling off.
    pub busy_budget: u32,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
}

impl AfXdpOptions {
    /// Options for `iface` with every default.
    pub fn new(iface: &str) -> AfXdpOptions {
        AfXdpOptions {
            iface: iface.to_string(),
            start_queue: 0,
            queue_count: 1,
            force_copy: false,
            busy_budget: 0,
            xdp_mode: XdpMode::Auto,
        }
    }

    /// Read the options from device arguments.
    pub fn from_devargs(args: &DevArgs) -> Result<AfXdpOptions> {
        args.check_keys(KEYS)?;
        let bad = |reason: String| Error::DevArgs {
            device: args.spec.clone(),
            reason,
        };
        let iface = match args.get("iface") {
            Some(i) if !i.is_empty() => i.to_string(),
            _ => {
                return Err(bad(format!(
                    "iface= is required: the interface to open, e.g. {},iface=eth0",
                    args.name
                )));
            }
        };
        if iface.len() > 15 || iface.contains(['/', ' ']) || iface == "." || iface == ".." {
            return Err(bad(format!("iface={iface:?} is not an interface name")));
        }
        let d = AfXdpOptions::new(&iface);
        let xdp_mode = match args.get("xdp_mode") {
            None => d.xdp_mode,
            Some(m) => XdpMode::parse(m)
                .ok_or_else(|| bad(format!("xdp_mode={m:?} is not one of auto, native, skb")))?,
        };
        Ok(AfXdpOptions {
            iface,
            start_queue: args
                .get_u64("start_queue", 0..=4095)?
                .map(|v| v as u32)
                .unwrap_or(d.start_queue),
            queue_count: args
                .get_u64("queue_count", 1..=u64::from(MAX_QUEUES))?
                .map(|v| v as u32)
                .unwrap_or(d.queue_count),
            force_copy: args.get_bool("force_copy")?.unwrap_or(d.force_copy),
            busy_budget: args
                .get_u64("busy_budget", 0..=65535)?
                .map(|v| v as u32)
                .unwrap_or(d.busy_budget),
            xdp_mode,
        })
    }
}

fn sysfs(iface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn iface_flags(iface: &str) -> Option<u32> {
    let f = sysfs(iface, "flags")?;
    u32::from_str_radix(f.trim_start_matches("0x"), 16).ok()
}

/// Receive and transmit queue counts of an interface, from sysfs.
fn iface_queues(iface: &str) -> Option<(u32, u32)> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{iface}/queues")).ok()?;
    let (mut rx, mut tx) = (0, 0);
    for e in dir.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with("rx-") {
            rx += 1;
        } else if n.starts_with("tx-") {
            tx += 1;
        }
    }
    Some((rx, tx))
}

struct Running {
    /// One socket per queue; socket 0 registered the UMEM.
    sockets: Vec<Arc<XskShared>>,
    /// Interface queues whose XSKMAP slot we filled.
    mapped: Vec<u32>,
}

/// An AF_XDP port.
pub struct AfXdpPort {
    name: String,
    port_id: u16,
    opts: AfXdpOptions,
    ifindex: u32,
    mac: MacAddr,
    conf: Option<(PortConf, u16, u16)>,
    running: Option<Running>,
    counters: PortCounters,
    /// Kernel socket counters of sockets already closed.
    xsk_retired: XskStats,
    /// Kernel socket counters at the last reset.
    xsk_base: XskStats,
    /// The promiscuous state to put back when the port goes, if we changed it.
    promisc_restore: Option<bool>,
    /// Last, so that it is dropped after the sockets: closing its link detaches
    /// the program.
    xdp: xdp::XdpAttachment,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("name", &self.name)
            .field("opts", &self.opts)
            .field("ifindex", &self.ifindex)
            .field("started", &self.running.is_some())
            .field("xdp", &self.xdp)
            .finish()
    }
}

impl AfXdpPort {
    /// Create the port described by `args`
    /// (`net_af_xdpN,iface=NAME[,start_queue=..][,queue_count=..][,force_copy=..][,busy_budget=..][,xdp_mode=..]`).
    /// Attaches the XDP program to the interface.
    pub fn from_devargs(args: &DevArgs, port_id: u16) -> Result<AfXdpPort> {
        args.expect_driver(DRIVER)?;
        AfXdpPort::new(&args.name, AfXdpOptions::from_devargs(args)?, port_id)
    }

    /// Create a port with explicit options. Attaches the XDP program to the
    /// interface.
    pub fn new(name: &str, opts: AfXdpOptions, port_id: u16) -> Result<AfXdpPort> {
        let err = |reason: String| Error::port(port_id, name, "create", reason);
        let iface = opts.iface.clone();
        let ifindex = nicpoll::netdev::if_index(&iface).map_err(|e| {
            err(format!(
                "no interface {iface:?} in this network namespace ({e}): see `ip link show`; in a pod \
                 the interface must be moved into the pod's namespace (e.g. by a CNI plugin)"
            ))
        })?;
        let last = opts.start_queue + opts.queue_count;
        if let Some((rx, tx)) = iface_queues(&iface) {
            let have = rx.min(tx);
            if last > have {
                return Err(err(format!(
                    "start_queue={} queue_count={} needs interface queues {}..={}, but {iface} has {rx} \
                     receive and {tx} transmit queues; lower them, or add queues (`ethtool -L {iface} \
                     combined {last}`; a veth takes numrxqueues/numtxqueues at creation)",
                    opts.start_queue,
                    opts.queue_count,
                    opts.start_queue,
                    last - 1
                )));
            }
        }
        let mac = sysfs(&iface, "address")
            .and_then(|a| a.parse().ok())
            .unwrap_or(MacAddr::local(port_id));
        let xdp = xdp::attach(&iface, ifindex, opts.xdp_mode, last).map_err(err)?;
        log::info!(
            "{name}: {iface} (ifindex {ifindex}): XDP program {} id {} attached in {} mode",
            xdp::PROG_NAME,
            xdp.prog_id,
            xdp.mode.name()
        );
        Ok(AfXdpPort {
            name: name.to_string(),
            port_id,
            opts,
            ifindex,
            mac,
            conf: None,
            running: None,
            counters: PortCounters::default(),
            xsk_retired: XskStats::default(),
            xsk_base: XskStats::default(),
            promisc_restore: None,
            xdp,
        })
    }

    /// The options the port was created with.
    pub fn options(&self) -> &AfXdpOptions {
        &self.opts
    }

    /// Whether the started port's sockets run in zero-copy mode (`None` when stopped).
    pub fn zero_copy(&self) -> Option<bool> {
        self.running
            .as_ref()
            .and_then(|r| r.sockets.first())
            .map(|s| s.zero_copy())
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::Port {
            port: self
                .conf
                .as_ref()
                .map(|c| c.0.port_id)
                .unwrap_or(self.port_id),
            name: self.name.clone(),
            op,
            reason,
        }
    }

    /// Kernel counters of every socket, open or closed.
    fn xsk_total(&self) -> XskStats {
        let mut t = self.xsk_retired;
        if let Some(r) = &self.running {
            for s in &r.sockets {
                if let Ok(st) = s.statistics() {
                    t = t.add(&st);
                }
            }
        }
        t
    }

    /// Empty our XSKMAP slots and keep the sockets' counters.
    fn unmap(&mut self) {
        let total = self.xsk_total();
        if let Some(r) = &mut self.running {
            for q in r.mapped.drain(..) {
                if let Err(e) = self.xdp.remove(q) {
                    log::warn!("{}: clearing XSKMAP slot {q}: {e}", self.name);
                }
            }
        }
        self.xsk_retired = total;
    }

    /// A bind with XDP_USE_SG refused: say what the kernel or driver lacks.
    fn sg_error(&self, qid: u32, e: sys::XskError, max_len: usize, room: usize) -> Error {
        let iface = &self.opts.iface;
        let why = match e.source.raw_os_error() {
            Some(libc::EINVAL) => "this kernel has no multi-buffer AF_XDP (XDP_USE_SG, Linux 6.6)",
            Some(libc::EOPNOTSUPP) => "the driver has no multi-buffer zero copy: try force_copy=1",
            _ => "multi-buffer AF_XDP (XDP_USE_SG) was refused",
        };
        self.err(
            "start",
            format!(
                "binding an AF_XDP socket to {iface} queue {qid} with XDP_USE_SG: {}: {why}; \
                 frames of up to {max_len} bytes take several {room}-byte UMEM chunks: lower the \
                 MTU of {iface} to {} or --max-pkt-len to {}, or use net_af_packet",
                e.source,
                room - 18,
                room + 4
            ),
        )
    }

    fn socket_error(&self, qid: u32, e: sys::XskError, conf: &PortConf) -> Error {
        let iface = &self.opts.iface;
        let errno = e.source.raw_os_error();
        let perm = matches!(errno, Some(libc::EPERM) | Some(libc::EACCES));
        let reason = match e.step {
            XskStep::Socket if errno == Some(libc::EAFNOSUPPORT) => format!(
                "socket(AF_XDP): {}: the kernel has no AF_XDP (CONFIG_XDP_SOCKETS)",
                e.source
            ),
            XskStep::UmemReg => {
                let bytes = conf.mempool.size() as usize * conf.mempool.stride();
                match errno {
                    Some(libc::ENOBUFS) | Some(libc::ENOMEM) | Some(libc::EPERM) => format!(
                        "registering mempool {} ({bytes} bytes) as the UMEM: {}: the locked-memory \
                         limit is too low (RLIMIT_MEMLOCK, `ulimit -l`): run as root or with \
                         CAP_IPC_LOCK (pod: securityContext.capabilities.add: [\"IPC_LOCK\"]), or raise \
                         it (`ulimit -l unlimited`; docker --ulimit memlock=-1)",
                        conf.mempool.name(),
                        e.source
                    ),
                    _ => format!(
                        "registering mempool {} ({bytes} bytes, {}-byte chunks, headroom {}) as the \
                         UMEM: {}",
                        conf.mempool.name(),
                        conf.mempool.stride(),
                        sys::UMEM_HEADROOM,
                        e.source
                    ),
                }
            }
            XskStep::Bind => match errno {
                Some(libc::EBUSY) => format!(
                    "binding an AF_XDP socket to {iface} queue {qid}: {}: another AF_XDP socket \
                     (another process?) has used that queue for {} s",
                    e.source,
                    BIND_BUSY_WAIT.as_secs()
                ),
                Some(libc::EINVAL) => format!(
                    "binding an AF_XDP socket to {iface} queue {qid}: {}: the queue may not exist \
                     (`ls /sys/class/net/{iface}/queues`) or the UMEM does not suit the driver",
                    e.source
                ),
                Some(libc::EOPNOTSUPP) => format!(
                    "binding an AF_XDP socket to {iface} queue {qid}: {}: the driver cannot do \
                     this mode; try force_copy=1",
                    e.source
                ),
                _ => format!(
                    "binding an AF_XDP socket to {iface} queue {qid}: {}",
                    e.source
                ),
            },
            XskStep::MmapOffsets if errno == Some(libc::EOPNOTSUPP) => {
                "the kernel's AF_XDP rings have no flags field (Linux before 5.4): need_wakeup is \
                 required"
                    .to_string()
            }
            step => format!(
                "AF_XDP socket for {iface} queue {qid}: {step:?}: {}",
                e.source
            ),
        };
        if perm {
            self.err("start", format!("{reason}; {}", xdp::PERM_HINT))
        } else {
            self.err("start", reason)
        }
    }
}

impl Port for AfXdpPort {
    fn info(&self) -> PortInfo {
        let stride = self
            .conf
            .as_ref()
            .map(|c| c.0.mempool.stride())
            .unwrap_or(2048);
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: self.opts.queue_count as u16,
            max_tx_queues: self.opts.queue_count as u16,
            default_rxd: DEFAULT_RX_DESCS,
            default_txd: DEFAULT_TX_DESCS,
            min_rxd: MIN_DESCS,
            max_rxd: MAX_DESCS,
            min_txd: MIN_DESCS,
            max_txd: MAX_DESCS,
            desc_align: 1,
            // With multi-buffer AF_XDP a frame may take several chunks: what
            // the interface delivers (an MTU-sized frame with a VLAN tag).
            max_rx_pktlen: (sys::rx_frame_room(stride) as u32).max(
                sysfs(&self.opts.iface, "mtu")
                    .and_then(|m| m.parse::<u32>().ok())
                    .map_or(0, |mtu| mtu + 18),
            ),
            rx_scatter: true,
            tx_multi_seg: true,
            numa_node: sysfs(&self.opts.iface, "device/numa_node")
                .and_then(|n| n.parse::<i32>().ok())
                .and_then(|n| u32::try_from(n).ok()),
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        if self.running.is_some() {
            return Err(self.err(
                "configure",
                "the port is started; stop it first (port stop N)".into(),
            ));
        }
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        for (what, n, opt) in [("receive", rxd, "--rxd"), ("transmit", txd, "--txd")] {
            if !n.is_power_of_two() {
                return Err(self.err(
                    "configure",
                    format!("{what} ring size {n} is not a power of two, as AF_XDP rings must be ({opt})"),
                ));
            }
        }
        let stride = conf.mempool.stride();
        let page = rustix::param::page_size();
        if stride > page {
            return Err(self.err(
                "configure",
                format!(
                    "mempool {} has {stride}-byte elements; AF_XDP chunks are at most one page \
                     ({page} bytes): lower --mbuf-size (jumbo frames take several chunks, with \
                     multi-buffer AF_XDP)",
                    conf.mempool.name()
                ),
            ));
        }
        port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        self.conf = Some((conf.clone(), rxd, txd));
        Ok(())
    }

    fn start(&mut self) -> Result<PortQueues> {
        let Some((conf, rxd, txd)) = self.conf.clone() else {
            return Err(self.err("start", "the port is not configured".into()));
        };
        if self.running.is_some() {
            return Err(self.err("start", "the port is already started".into()));
        }
        let iface = self.opts.iface.clone();
        if let Some(f) = iface_flags(&iface)
            && f & IFF_UP == 0
        {
            return Err(self.err(
                "start",
                format!("interface {iface} is down: `ip link set {iface} up`"),
            ));
        }
        let copy_flags = if self.opts.force_copy || self.xdp.mode == netlink::AttachMode::Generic {
            sys::XDP_COPY
        } else {
            0
        };
        // Multi-buffer (one descriptor per chunk) when a frame may not fit a
        // chunk: the frame limit, or a chain to send.
        let room = sys::rx_frame_room(conf.mempool.stride());
        let max_len = match conf.max_rx_pktlen {
            0 => self.info().max_rx_pktlen as usize,
            l => l as usize,
        };
        let sg = max_len > room || conf.nb_txq > 0 && self.info().max_rx_pktlen as usize > room;
        if sg && !self.xdp.frags {
            return Err(self.err(
                "start",
                format!(
                    "frames of up to {max_len} bytes take several {room}-byte UMEM chunks, but \
                     this kernel has no multi-buffer XDP (BPF_F_XDP_HAS_FRAGS, Linux 5.18): lower \
                     the MTU of {iface} to {} or --max-pkt-len to {}, or use net_af_packet",
                    room - 18,
                    room + 4
                ),
            ));
        }
        let nsock = conf.nb_rxq.max(conf.nb_txq);
        let mut sockets: Vec<Arc<XskShared>> = Vec::with_capacity(nsock as usize);
        let mut rx_sides: Vec<RxSide> = Vec::new();
        let mut tx_sides: Vec<TxSide> = Vec::new();
        for q in 0..nsock {
            let qid = self.opts.start_queue + u32::from(q);
            let setup = sys::XskSetup {
                ifindex: self.ifindex,
                queue_id: qid,
                pool: &conf.mempool,
                rx_size: if q < conf.nb_rxq { u32::from(rxd) } else { 0 },
                tx_size: if q < conf.nb_txq { u32::from(txd) } else { 0 },
                fill_size: u32::from(rxd),
                comp_size: u32::from(txd),
                copy_flags,
                sg,
                max_len,
                share: sockets.first().map(|s| &**s),
            };
            // A socket closed a moment ago (stop, then start) keeps its queue
            // until the kernel's deferred release has run: EBUSY until then.
            let deadline = Instant::now() + BIND_BUSY_WAIT;
            let parts = loop {
                match XskShared::create(&setup) {
                    Ok(p) => break p,
                    Err(e)
                        if e.step == XskStep::Bind
                            && e.source.raw_os_error() == Some(libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) if sg && e.step == XskStep::Bind => {
                        return Err(self.sg_error(qid, e, max_len, room));
                    }
                    Err(e) => return Err(self.socket_error(qid, e, &conf)),
                }
            };
            if self.opts.busy_budget > 0
                && let Err(e) = parts
                    .shared
                    .set_busy_poll(BUSY_POLL_USECS, self.opts.busy_budget)
            {
                log::warn!(
                    "{}: busy_budget={}: preferred busy polling is not available ({e}); \
                     going on without it",
                    self.name,
                    self.opts.busy_budget
                );
                self.opts.busy_budget = 0;
            }
            sockets.push(parts.shared);
            if let Some(mut rx) = parts.rx {
                rx.set_busy_poll(self.opts.busy_budget > 0);
                if !rx.prime(u32::from(rxd)) {
                    return Err(self.err(
                        "start",
                        format!(
                            "mempool {} has {} free mbufs; the fill ring of receive queue {q} needs \
                             {rxd}: raise --total-num-mbufs or lower --rxd",
                            conf.mempool.name(),
                            conf.mempool.available()
                        ),
                    ));
                }
                rx_sides.push(rx);
            }
            tx_sides.extend(parts.tx);
        }
        let mut mapped = Vec::new();
        for (q, s) in sockets.iter().enumerate().take(conf.nb_rxq as usize) {
            let qid = self.opts.start_queue + q as u32;
            if let Err(e) = self.xdp.insert(qid, s.raw_fd()) {
                for m in mapped {
                    let _ = self.xdp.remove(m);
                }
                let hint = if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                    xdp::PERM_HINT
                } else {
                    ""
                };
                return Err(self.err(
                    "start",
                    format!("adding the socket of queue {qid} to the XSKMAP: {e}. {hint}"),
                ));
            }
            mapped.push(qid);
        }
        let zc = sockets.first().map(|s| s.zero_copy()).unwrap_or(false);
        log::info!(
            "{}: {iface} queues {}..={}: {} mode, XDP {}{}, {} rx / {} tx descriptors, busy polling {}",
            self.name,
            self.opts.start_queue,
            self.opts.start_queue + u32::from(nsock) - 1,
            if zc {
                "zero-copy"
            } else {
                "copy (the kernel copies between its buffers and the UMEM; mbufs and UMEM still share memory)"
            },
            self.xdp.mode.name(),
            if sg { ", multi-buffer" } else { "" },
            rxd,
            txd,
            if self.opts.busy_budget > 0 {
                format!("on (budget {})", self.opts.busy_budget)
            } else {
                "off".to_string()
            }
        );
        let rx = rx_sides
            .into_iter()
            .enumerate()
            .map(|(q, side)| {
                Box::new(AfXdpRxQueue {
                    side,
                    port: conf.port_id,
                    queue: q as u16,
                    counters: self.counters.rx(q),
                }) as Box<dyn RxQueue>
            })
            .collect();
        let tx = tx_sides
            .into_iter()
            .enumerate()
            .map(|(q, side)| {
                Box::new(AfXdpTxQueue {
                    side,
                    counters: self.counters.tx(q),
                }) as Box<dyn TxQueue>
            })
            .collect();
        self.running = Some(Running { sockets, mapped });
        Ok(PortQueues { rx, tx })
    }

    fn stop(&mut self) -> Result<()> {
        let Some(r) = &self.running else {
            return Ok(());
        };
        if r.sockets.iter().any(|s| Arc::strong_count(s) > 1) {
            return Err(self.err(
                "stop",
                "queues handed out by start are still in use; drop them first".into(),
            ));
        }
        self.unmap();
        // Closing the sockets returns every mbuf the kernel still had.
        self.running = None;
        Ok(())
    }

    fn is_started(&self) -> bool {
        self.running.is_some()
    }

    fn link(&self) -> Link {
        let iface = &self.opts.iface;
        let up = iface_flags(iface).is_some_and(|f| f & IFF_UP != 0)
            && sysfs(iface, "carrier").as_deref() == Some("1");
        Link {
            up,
            speed_mbps: sysfs(iface, "speed")
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| u32::try_from(s).ok())
                .unwrap_or(0),
            full_duplex: sysfs(iface, "duplex").is_none_or(|d| d == "full"),
        }
    }

    fn mac_addr(&self) -> MacAddr {
        sysfs(&self.opts.iface, "address")
            .and_then(|a| a.parse().ok())
            .unwrap_or(self.mac)
    }

    fn promiscuous(&self) -> bool {
        iface_flags(&self.opts.iface).is_some_and(|f| f & IFF_PROMISC != 0)
    }

    fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        let now = self.promiscuous();
        if now == on {
            return Ok(());
        }
        netlink::set_promiscuous(self.ifindex, on).map_err(|e| {
            let hint = if matches!(netlink::errno(&e), Some(libc::EPERM)) {
                xdp::PERM_HINT
            } else {
                ""
            };
            self.err(
                "promiscuous",
                format!(
                    "setting promiscuous mode {} on {}: {e}. {hint}",
                    if on { "on" } else { "off" },
                    self.opts.iface
                ),
            )
        })?;
        self.promisc_restore.get_or_insert(now);
        Ok(())
    }

    fn stats(&self) -> PortStats {
        let mut s = self.counters.stats();
        let k = self.xsk_total().since(&self.xsk_base);
        s.imissed += k.rx_dropped + k.rx_ring_full;
        s.ierrors += k.rx_invalid_descs;
        s.oerrors += k.tx_invalid_descs;
        s
    }

    fn reset_stats(&mut self) {
        self.counters.reset();
        self.xsk_base = self.xsk_total();
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let mut v = self.counters.xstats();
        let s = self.stats();
        for (k, val) in v.iter_mut() {
            match k.as_str() {
                "rx_missed_errors" => *val = s.imissed,
                "rx_errors" => *val = s.ierrors,
                "tx_errors" => *val = s.oerrors,
                _ => {}
            }
        }
        let k = self.xsk_total().since(&self.xsk_base);
        v.extend([
            ("xsk_rx_dropped".to_string(), k.rx_dropped),
            ("xsk_rx_ring_full".to_string(), k.rx_ring_full),
            (
                "xsk_rx_fill_ring_empty".to_string(),
                k.rx_fill_ring_empty_descs,
            ),
            ("xsk_rx_invalid_descs".to_string(), k.rx_invalid_descs),
            ("xsk_tx_invalid_descs".to_string(), k.tx_invalid_descs),
            ("xsk_tx_ring_empty".to_string(), k.tx_ring_empty_descs),
            (
                "xsk_zero_copy".to_string(),
                u64::from(self.zero_copy().unwrap_or(false)),
            ),
        ]);
        v
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        self.unmap();
        if let Some(orig) = self.promisc_restore
            && self.promiscuous() != orig
            && let Err(e) = netlink::set_promiscuous(self.ifindex, orig)
        {
            log::warn!(
                "{}: restoring promiscuous mode on {}: {e}",
                self.name,
                self.opts.iface
            );
        }
        // Then `running` (the sockets, unless queues still hold them) and `xdp`
        // (the link: the program is detached) are dropped, in that order.
    }
}

struct AfXdpRxQueue {
    side: RxSide,
    port: u16,
    queue: u16,
    counters: QueueCountersRef,
}

impl RxQueue for AfXdpRxQueue {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let o = self.side.rx_burst(out, self.port, self.queue);
        if o.packets > 0 {
            self.counters.rx_packets.add(u64::from(o.packets));
            self.counters.rx_bytes.add(o.bytes);
        }
        if o.errors > 0 {
            self.counters.rx_errors.add(u64::from(o.errors));
        }
        if o.nombuf > 0 {
            self.counters.rx_nombuf.add(u64::from(o.nombuf));
        }
        o.packets as usize
    }
}

struct AfXdpTxQueue {
    side: TxSide,
    counters: QueueCountersRef,
}

impl TxQueue for AfXdpTxQueue {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let o = self.side.tx_burst(pkts);
        if o.packets > 0 {
            self.counters.tx_packets.add(u64::from(o.packets));
            self.counters.tx_bytes.add(o.bytes);
        }
        if o.errors > 0 {
            self.counters.tx_errors.add(u64::from(o.errors));
        }
        o.taken as usize
    }
}

#[cfg(test)]
mod tests;
