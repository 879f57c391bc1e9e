//! `net_af_packet`: ports on a kernel network interface through AF_PACKET
//! sockets with memory-mapped TPACKET_V3 rings, like DPDK's net_af_packet.
//!
//! Each queue pair is one AF_PACKET socket bound to the interface by index.
//! Receive walks the socket's TPACKET_V3 block ring — pure memory polling, no
//! system call — and copies each frame into an mbuf from the queue's mempool,
//! handing every block back to the kernel once read. Transmit copies frames into
//! the socket's transmit ring (fixed-size frames: the V3 transmit ring behaves
//! like V2's) and kicks the kernel with one `sendto(MSG_DONTWAIT)` per burst.
//! With several receive queues the sockets form a `PACKET_FANOUT` group whose id
//! the kernel picks (`PACKET_FANOUT_FLAG_UNIQUEID`), so no other process or port
//! can join it by accident.
//!
//! Device arguments (`--vdev net_af_packet0,iface=eth0,qpairs=2`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `iface` | required | the interface (in the caller's network namespace) |
//! | `qpairs` | 1 | most queue pairs (1 to 64); `--rxq`/`--txq` pick how many are used |
//! | `blocksz` | from the MTU | bytes per ring block, a multiple of the page size, at most 4 MiB |
//! | `framesz` | from the MTU | bytes per frame, a multiple of 16, from 80 to `blocksz` |
//! | `framecnt` | 512 | frames per ring, a multiple of `blocksz / framesz`, at most 32768 |
//! | `qdisc_bypass` | 1 | transmit straight to the driver (`PACKET_QDISC_BYPASS`) |
//! | `fanout_mode` | `hash` | `hash`, `lb`, `cpu`, `rollover`, `rnd` or `qm` (with several receive queues) |
//! | `promisc` | 0 | start in promiscuous mode |
//!
//! Decisions, where DPDK's PMD (TPACKET_V2) gives no answer for V3:
//!
//! - **Frame and block size follow the interface's MTU** when `framesz=` and
//!   `blocksz=` are not given, read when the port is created: a frame holds
//!   MTU + 18 bytes (a VLAN-tagged frame) after its header, at least 2048
//!   bytes (DPDK's default); a block at least a page and a frame, and a
//!   received frame of MTU + 18 bytes after its headers (130 bytes). At MTU
//!   1500 that is DPDK's 2048 and 4096; at MTU 9000, 9072 and 12288. DPDK
//!   keeps 2048 whatever the MTU, and its jumbo frames then fail to send.
//! - **Frames longer than an mbuf arrive as chains** (the frame copied into
//!   as many mbufs as it takes), and chains are sent, gathered into one
//!   transmit slot; frames over `--max-pkt-len` are dropped and counted in
//!   `ierrors`.
//! - **Same ring memory as DPDK for the same arguments.** A ring is `framecnt`
//!   frames of `framesz` bytes in blocks of `blocksz` (512 × 2048 B = 1 MiB in
//!   256 blocks of 4 KiB by default), for receive and for transmit. On transmit
//!   that is exactly V2's ring. On receive, V3 packs frames into a block back to
//!   back (each takes its length plus about 82 bytes of headers, rounded to 16),
//!   so the same memory holds about 25 minimum-size frames per 4 KiB block,
//!   about 6400 in all, where V2 holds 512. Small blocks are kept because V3
//!   hands a block to us only when it is full or its timer expires: small blocks
//!   keep the ring fine-grained, and benchmarks showed no gain from larger ones.
//! - **Block retire timeout: 1 ms**, the smallest the kernel takes, so a lone
//!   packet waits at most about a millisecond for its block to be handed over.
//! - **`--rxd`/`--txd` set the frame count of the receive/transmit ring**
//!   (default `framecnt`, in multiples of `blocksz / framesz`); DPDK ignores them.
//! - **The largest frame received whole is `blocksz - 130` bytes** (block and
//!   frame headers); longer frames arrive truncated from the kernel and are
//!   dropped and counted as `ierrors`, never delivered truncated. Transmit
//!   needs `MTU + 14 <= framesz - 48`: `start` refuses an interface whose MTU
//!   grew past that since the port was created.
//! - **VLAN tags come back**: the kernel strips the outer tag before AF_PACKET
//!   sees a frame; receive puts it back, so frames arrive as they were on the wire.
//! - **Only incoming frames are received** (`PACKET_IGNORE_OUTGOING`): what this
//!   or another program sends out of the interface does not come back in.
//! - **Kernel drops are counted**: `imissed` is the sum of the sockets'
//!   `PACKET_STATISTICS` drops (frames lost because the receive ring was full),
//!   which DPDK's PMD does not read.
//! - **Fanout without DPDK's DEFRAG and ROLLOVER flags**: frames are delivered as
//!   they arrived (no reassembly) and a flow stays on one queue even under load
//!   (`fanout_mode=rollover` moves traffic instead).
//! - **Sockets are created at `start`** for `max(rxq, txq)` queues and closed at
//!   `stop`: transmit-only sockets receive nothing, and no socket takes a share
//!   of the fanout that no queue reads.
//! - **Promiscuous mode is a `PACKET_MR_PROMISC` membership**, held only while
//!   the port is started; the kernel counts memberships, so an interface that was
//!   already promiscuous stays so, and stop, drop or a crash leave it as it was.
//!   Stop and drop give the membership back themselves: left to the socket's
//!   close, it would last as long as a child forked meanwhile by any thread of
//!   the process holds its copy of the descriptor (until its exec).
//!
//! Needs Linux 4.20 or newer (TPACKET_V3 transmit ring: 4.11;
//! `PACKET_IGNORE_OUTGOING`: 4.20) and CAP_NET_RAW.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod sys;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nicpoll::mbuf::{Mbuf, MbufBatch, RxChain, flags};
use nicpoll::mempool::Mempool;
use nicpoll::netdev::Netdev;
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

use sys::{Geometry, PacketSocket, RxFrame, RxRing, TxRing};

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_af_packet";
const KEYS: &[&str] = &[
    "iface",
    "qpairs",
    "blocksz",
    "framesz",
    "framecnt",
    "qdisc_bypass",
    "fanout_mode",
    "promisc",
];
const MAX_QUEUES: u16 = 64;
/// Most frames in one ring (descriptor counts are 16-bit).
const MAX_FRAMES: u32 = 32768;
/// Largest block.
const MAX_BLOCK: u32 = 4 << 20;
/// Most bytes in one ring.
const MAX_RING_BYTES: u64 = 1 << 30;
/// Smallest frame: the TPACKET_V3 header and sockaddr_ll, aligned to 16.
const MIN_FRAME: u32 = 80;
/// Block retire timeout in milliseconds.
const RETIRE_TOV_MS: u32 = 1;
/// Bytes of a receive block that are not frame data: the block descriptor (48)
/// and the frame header in front of the data (`tp_mac` = 82 for Ethernet).
const RX_OVERHEAD: u32 = 130;
const ETH_HLEN: usize = 14;

const CAP_HINT: &str = "AF_PACKET sockets need CAP_NET_RAW: run as root, or add NET_RAW to the \
     container's securityContext.capabilities.add in the pod spec";

/// How a fanout group spreads received frames over the receive queues
/// (`PACKET_FANOUT_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanoutMode {
    /// By flow hash (the kernel's skb hash): a flow stays on one queue.
    #[default]
    Hash,
    /// Round robin.
    Lb,
    /// By the CPU that received the frame.
    Cpu,
    /// Fill one queue, then the next.
    Rollover,
    /// At random.
    Rnd,
    /// By the device's receive queue (`skb->queue_mapping`).
    Qm,
}

impl FanoutMode {
    const NAMES: &'static [(&'static str, FanoutMode)] = &[
        ("hash", FanoutMode::Hash),
        ("lb", FanoutMode::Lb),
        ("cpu", FanoutMode::Cpu),
        ("rollover", FanoutMode::Rollover),
        ("rnd", FanoutMode::Rnd),
        ("qm", FanoutMode::Qm),
    ];

    /// The devarg spelling.
    pub fn name(self) -> &'static str {
        FanoutMode::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("hash")
    }

    fn kernel(self) -> u32 {
        match self {
            FanoutMode::Hash => libc::PACKET_FANOUT_HASH,
            FanoutMode::Lb => libc::PACKET_FANOUT_LB,
            FanoutMode::Cpu => libc::PACKET_FANOUT_CPU,
            FanoutMode::Rollover => libc::PACKET_FANOUT_ROLLOVER,
            FanoutMode::Rnd => libc::PACKET_FANOUT_RND,
            FanoutMode::Qm => libc::PACKET_FANOUT_QM,
        }
    }
}

impl std::str::FromStr for FanoutMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<FanoutMode, String> {
        FanoutMode::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                format!(
                    "fanout_mode={s:?} is not one of {}",
                    FanoutMode::NAMES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }
}

/// Options of an AF_PACKET port (its device arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketOptions {
    /// The kernel interface.
    pub iface: String,
    /// Most queue pairs.
    pub qpairs: u16,
    /// Bytes per ring block (0: from the interface's MTU, see [`Self::resolve`]).
    pub blocksz: u32,
    /// Bytes per ring frame (0: from the interface's MTU).
    pub framesz: u32,
    /// Frames per ring (the default for `--rxd`/`--txd`).
    pub framecnt: u32,
    /// Bypass the interface's queueing discipline on transmit.
    pub qdisc_bypass: bool,
    /// How several receive queues share the traffic.
    pub fanout_mode: FanoutMode,
    /// Start in promiscuous mode.
    pub promisc: bool,
}

impl AfPacketOptions {
    /// The defaults for interface `iface`: 512 frames, frame and block sizes
    /// from the interface's MTU when the port is created (DPDK's 2048 and one
    /// page at MTU 1500), qdisc bypass on.
    pub fn new(iface: &str) -> AfPacketOptions {
        AfPacketOptions {
            iface: iface.to_string(),
            qpairs: 1,
            blocksz: 0,
            framesz: 0,
            framecnt: 512,
            qdisc_bypass: true,
            fanout_mode: FanoutMode::Hash,
            promisc: false,
        }
    }

    /// Read the options from device arguments and check them.
    pub fn from_devargs(args: &DevArgs) -> Result<AfPacketOptions> {
        args.check_keys(KEYS)?;
        let bad = |reason: String| Error::DevArgs {
            device: args.spec.clone(),
            reason,
        };
        let iface = match args.get("iface") {
            Some(i) if !i.is_empty() => i,
            _ => {
                return Err(bad(format!(
                    "iface= is required: the kernel interface to attach to, e.g. {},iface=eth0 \
                     (`ip link show` lists them)",
                    args.name
                )));
            }
        };
        let d = AfPacketOptions::new(iface);
        let o = AfPacketOptions {
            iface: iface.to_string(),
            qpairs: args
                .get_u64("qpairs", 1..=MAX_QUEUES as u64)?
                .map_or(d.qpairs, |v| v as u16),
            blocksz: args
                .get_u64("blocksz", 1..=MAX_BLOCK as u64)?
                .map_or(d.blocksz, |v| v as u32),
            framesz: args
                .get_u64("framesz", 1..=MAX_BLOCK as u64)?
                .map_or(d.framesz, |v| v as u32),
            framecnt: args
                .get_u64("framecnt", 1..=MAX_FRAMES as u64)?
                .map_or(d.framecnt, |v| v as u32),
            qdisc_bypass: args.get_bool("qdisc_bypass")?.unwrap_or(d.qdisc_bypass),
            fanout_mode: match args.get("fanout_mode") {
                Some(m) => m.parse().map_err(bad)?,
                None => d.fanout_mode,
            },
            promisc: args.get_bool("promisc")?.unwrap_or(d.promisc),
        };
        o.check().map_err(bad)?;
        Ok(o)
    }

    /// Fill in the frame and block sizes not given, from the interface's MTU:
    /// a frame holds an MTU-sized VLAN-tagged frame (MTU + 18) after its
    /// header, at least 2048 bytes; a block holds a frame and a received frame
    /// of MTU + 18 bytes after the block and frame headers, at least a page.
    pub fn resolve(&self, mtu: u32) -> AfPacketOptions {
        let page = sys::page_size() as u32;
        let framesz = match self.framesz {
            0 => (mtu + 18 + sys::TPACKET3_HDR as u32)
                .next_multiple_of(libc::TPACKET_ALIGNMENT as u32)
                .max(2048),
            f => f,
        };
        let blocksz = match self.blocksz {
            0 => framesz
                .max(mtu + 18 + RX_OVERHEAD)
                .next_multiple_of(page)
                .min(MAX_BLOCK),
            b => b,
        };
        AfPacketOptions {
            framesz,
            blocksz,
            ..self.clone()
        }
    }

    /// Check the options against each other and the kernel's rules (frame
    /// and block sizes only where given: 0 is resolved from the MTU later).
    pub fn check(&self) -> std::result::Result<(), String> {
        let name = &self.iface;
        if name.len() >= libc::IFNAMSIZ
            || name == "."
            || name == ".."
            || name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "iface={name:?} cannot be an interface name (at most 15 bytes, no '/', ':' or spaces)"
            ));
        }
        if self.qpairs == 0 || self.qpairs > MAX_QUEUES {
            return Err(format!(
                "qpairs={} is not from 1 to {MAX_QUEUES}",
                self.qpairs
            ));
        }
        let page = sys::page_size() as u32;
        if self.blocksz != 0 && (!self.blocksz.is_multiple_of(page) || self.blocksz > MAX_BLOCK) {
            return Err(format!(
                "blocksz={} must be a multiple of the {page}-byte page size, at most {MAX_BLOCK}",
                self.blocksz
            ));
        }
        if !self.framesz.is_multiple_of(libc::TPACKET_ALIGNMENT as u32) {
            return Err(format!(
                "framesz={} is not a multiple of {} (TPACKET_ALIGNMENT)",
                self.framesz,
                libc::TPACKET_ALIGNMENT
            ));
        }
        if self.framesz != 0 && self.framesz < MIN_FRAME {
            return Err(format!(
                "framesz={} is below the {MIN_FRAME}-byte minimum (the TPACKET_V3 frame header \
                 alone takes 68); use e.g. framesz=2048",
                self.framesz
            ));
        }
        if self.framesz == 0 || self.blocksz == 0 {
            return Ok(());
        }
        if self.framesz > self.blocksz {
            return Err(format!(
                "framesz={} is larger than blocksz={}: a frame must fit in a block; raise \
                 blocksz= or lower framesz=",
                self.framesz, self.blocksz
            ));
        }
        let fpb = self.blocksz / self.framesz;
        if !self.framecnt.is_multiple_of(fpb) {
            return Err(format!(
                "framecnt={} is not a multiple of the {fpb} frames per block (blocksz/framesz = \
                 {}/{}); use framecnt={}",
                self.framecnt,
                self.blocksz,
                self.framesz,
                (self.framecnt / fpb).max(1) * fpb
            ));
        }
        let max = self.max_frames();
        if self.framecnt > max {
            return Err(format!(
                "framecnt={} makes a ring larger than {max} frames or {} MiB; lower framecnt= or blocksz=",
                self.framecnt,
                MAX_RING_BYTES >> 20
            ));
        }
        Ok(())
    }

    /// Frames per block.
    pub fn frames_per_block(&self) -> u32 {
        self.blocksz.checked_div(self.framesz).unwrap_or(1).max(1)
    }

    /// The most frames one ring may have (a multiple of `frames_per_block`).
    fn max_frames(&self) -> u32 {
        let fpb = self.frames_per_block();
        let blocks = (MAX_FRAMES / fpb).min((MAX_RING_BYTES / self.blocksz.max(1) as u64) as u32);
        blocks * fpb
    }

    fn geometry(&self, frames: u32, rx: bool, fill_rxhash: bool) -> Geometry {
        Geometry {
            block_size: self.blocksz,
            block_nr: frames / self.frames_per_block(),
            frame_size: self.framesz,
            frame_nr: frames,
            retire_tov_ms: if rx { RETIRE_TOV_MS } else { 0 },
            fill_rxhash,
        }
    }
}

/// An AF_PACKET port on one kernel interface.
pub struct AfPacketPort {
    name: String,
    port_id: u16,
    opts: AfPacketOptions,
    /// The promiscuous membership's socket.
    ctl: PacketSocket,
    /// The interface ioctls (index, flags, MAC, MTU).
    netdev: Netdev,
    ifindex: i32,
    mac: MacAddr,
    conf: Option<(PortConf, u16, u16)>,
    started: bool,
    promisc: bool,
    promisc_held: bool,
    /// The queue sockets while started (receive queues first).
    sockets: Vec<Arc<PacketSocket>>,
    counters: PortCounters,
    kernel_drops: AtomicU64,
    drops_base: u64,
}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("name", &self.name)
            .field("iface", &self.opts.iface)
            .field("ifindex", &self.ifindex)
            .field("started", &self.started)
            .field("sockets", &self.sockets.len())
            .finish()
    }
}

impl AfPacketPort {
    /// Create the port described by `args`
    /// (`net_af_packetN,iface=NAME[,qpairs=..][,blocksz=..]...`).
    pub fn from_devargs(args: &DevArgs, port_id: u16) -> Result<AfPacketPort> {
        args.expect_driver(DRIVER)?;
        AfPacketPort::new(&args.name, AfPacketOptions::from_devargs(args)?, port_id)
    }

    /// Create a port named `name` with explicit options. Checks that the
    /// interface exists and reads its MTU (for the frame and block sizes not
    /// given); touches nothing on it.
    pub fn new(name: &str, opts: AfPacketOptions, port_id: u16) -> Result<AfPacketPort> {
        let err = |reason: String| Error::port(port_id, name, "create", reason);
        opts.check().map_err(&err)?;
        let iface = opts.iface.clone();
        let ctl = PacketSocket::new()
            .map_err(|e| err(os_reason("cannot open an AF_PACKET socket", &iface, &e)))?;
        let netdev = Netdev::open()
            .map_err(|e| err(os_reason("cannot open a control socket", &iface, &e)))?;
        let ifindex = netdev
            .index(&iface)
            .map_err(|e| err(os_reason("cannot find the interface", &iface, &e)))?
            as i32;
        let mac = read_mac(&netdev, &iface).map_err(&err)?;
        let mtu = netdev
            .mtu(&iface)
            .map_err(|e| err(os_reason("cannot read the MTU", &iface, &e)))?;
        let opts = opts.resolve(mtu);
        opts.check().map_err(|r| {
            err(format!(
                "{r} (frame and block sizes derived from MTU {mtu} where not given: framesz={}, \
                 blocksz={})",
                opts.framesz, opts.blocksz
            ))
        })?;
        Ok(AfPacketPort {
            name: name.to_string(),
            port_id,
            promisc: opts.promisc,
            opts,
            ctl,
            netdev,
            ifindex,
            mac,
            conf: None,
            started: false,
            promisc_held: false,
            sockets: Vec::new(),
            counters: PortCounters::default(),
            kernel_drops: AtomicU64::new(0),
            drops_base: 0,
        })
    }

    /// The kernel interface this port is on.
    pub fn iface(&self) -> &str {
        &self.opts.iface
    }

    /// The options the port was created with.
    pub fn options(&self) -> &AfPacketOptions {
        &self.opts
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::port(self.port_id, &self.name, op, reason)
    }

    /// Add the kernel's ring-full drops since the last read to the total.
    fn collect_drops(&self) {
        for s in &self.sockets {
            if let Ok((_, drops)) = s.take_stats() {
                self.kernel_drops.fetch_add(drops as u64, Ordering::Relaxed);
            }
        }
    }

    fn apply_promisc(&mut self) -> Result<()> {
        let want = self.promisc && self.started;
        if want == self.promisc_held {
            return Ok(());
        }
        self.ctl
            .promisc_membership(self.ifindex, want)
            .map_err(|e| {
                self.err(
                    "promiscuous",
                    os_reason(
                        if want {
                            "cannot turn promiscuous mode on"
                        } else {
                            "cannot turn promiscuous mode off"
                        },
                        &self.opts.iface,
                        &e,
                    ),
                )
            })?;
        self.promisc_held = want;
        Ok(())
    }

    /// Open, set up and bind the queue sockets.
    fn open_sockets(
        &self,
        ifindex: i32,
        conf: &PortConf,
        rxd: u16,
        txd: u16,
    ) -> Result<Vec<Arc<PacketSocket>>> {
        let iface = &self.opts.iface;
        let (nb_rxq, nb_txq) = (conf.nb_rxq as usize, conf.nb_txq as usize);
        let fanout = nb_rxq > 1;
        let mode = self.opts.fanout_mode.kernel();
        let rx_geom = self.opts.geometry(
            rxd as u32,
            true,
            fanout && self.opts.fanout_mode == FanoutMode::Hash,
        );
        let tx_geom = self.opts.geometry(txd as u32, false, false);
        let mut fanout_id: Option<u32> = None;
        let mut socks = Vec::with_capacity(nb_rxq.max(nb_txq));
        for q in 0..nb_rxq.max(nb_txq) {
            let (is_rx, is_tx) = (q < nb_rxq, q < nb_txq);
            let fail = |what: &str, e: io::Error| {
                self.err("start", os_reason(&format!("queue {q}: {what}"), iface, &e))
            };
            let mut s =
                PacketSocket::new().map_err(|e| fail("cannot open an AF_PACKET socket", e))?;
            s.set_v3()
                .map_err(|e| fail("cannot select TPACKET_V3 (Linux 3.2 or newer needed)", e))?;
            if is_tx {
                // Discard malformed frames instead of stalling the ring on them.
                s.set_packet_opt(libc::PACKET_LOSS, 1)
                    .map_err(|e| fail("cannot set PACKET_LOSS", e))?;
                if self.opts.qdisc_bypass {
                    s.set_packet_opt(libc::PACKET_QDISC_BYPASS, 1)
                        .map_err(|e| fail("cannot set PACKET_QDISC_BYPASS", e))?;
                }
            }
            if is_rx {
                // Older kernels lack it; receive then skips outgoing frames itself.
                let _ = s.set_packet_opt(libc::PACKET_IGNORE_OUTGOING, 1);
                if fanout {
                    // Queue nothing until every socket is in the group, so no
                    // frame is received twice meanwhile.
                    s.attach_drop_all()
                        .map_err(|e| fail("cannot attach a socket filter", e))?;
                }
            }
            s.set_rings(is_rx.then_some(rx_geom), is_tx.then_some(tx_geom))
                .map_err(|e| {
                    fail(
                        &format!(
                            "cannot set up the rings ({} receive and {} transmit frames of {} bytes \
                             in {}-byte blocks)",
                            if is_rx { rxd } else { 0 },
                            if is_tx { txd } else { 0 },
                            self.opts.framesz,
                            self.opts.blocksz
                        ),
                        e,
                    )
                })?;
            s.bind(ifindex, if is_rx { sys::ETH_P_ALL } else { 0 })
                .map_err(|e| fail("cannot bind to the interface", e))?;
            if is_rx && fanout {
                let flags = libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
                match fanout_id {
                    None => {
                        s.join_fanout((mode | flags | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16)
                            .map_err(|e| {
                                fail(
                                    "cannot create a fanout group (Linux 4.20 or newer needed)",
                                    e,
                                )
                            })?;
                        fanout_id = Some(
                            s.fanout()
                                .map_err(|e| fail("cannot read the fanout group id", e))?
                                & 0xffff,
                        );
                    }
                    Some(id) => s
                        .join_fanout(id | (mode | flags) << 16)
                        .map_err(|e| fail("cannot join the fanout group", e))?,
                }
            }
            socks.push(Arc::new(s));
        }
        if fanout {
            for (q, s) in socks.iter().take(nb_rxq).enumerate() {
                s.detach_filter().map_err(|e| {
                    self.err(
                        "start",
                        os_reason(
                            &format!("queue {q}: cannot detach the socket filter"),
                            iface,
                            &e,
                        ),
                    )
                })?;
            }
        }
        log::debug!(
            "{}: {} on {iface} (ifindex {ifindex}): {nb_rxq} rx / {nb_txq} tx queues, {rxd}/{txd} \
             frames of {} B in {} B blocks, qdisc_bypass={}, fanout={}{}",
            self.name,
            DRIVER,
            self.opts.framesz,
            self.opts.blocksz,
            self.opts.qdisc_bypass as u8,
            if fanout {
                self.opts.fanout_mode.name()
            } else {
                "none"
            },
            fanout_id
                .map(|id| format!(" (group {id})"))
                .unwrap_or_default(),
        );
        Ok(socks)
    }
}

/// A message for a failed system call on `iface`: what failed, the OS error,
/// and the usual fix.
fn os_reason(what: &str, iface: &str, e: &io::Error) -> String {
    let fix = match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => CAP_HINT.to_string(),
        Some(libc::ENODEV) | Some(libc::ENXIO) => {
            "it does not exist in this network namespace; `ip link show` lists the interfaces"
                .to_string()
        }
        Some(libc::ENETDOWN) => {
            format!("the interface is down; bring it up with `ip link set {iface} up`")
        }
        Some(libc::ENOMEM) => {
            "the kernel could not allocate the rings; lower framecnt=, --rxd/--txd or blocksz="
                .into()
        }
        Some(libc::ENOPROTOOPT) | Some(libc::EINVAL) => {
            "the kernel refused the setting; check the device arguments and the kernel version"
                .into()
        }
        _ => String::new(),
    };
    if fix.is_empty() {
        format!("interface {iface}: {what}: {e}")
    } else {
        format!("interface {iface}: {what}: {e}; {fix}")
    }
}

fn read_mac(netdev: &Netdev, iface: &str) -> std::result::Result<MacAddr, String> {
    let (family, mac) = netdev
        .hwaddr(iface)
        .map_err(|e| os_reason("cannot read the MAC address (SIOCGIFHWADDR)", iface, &e))?;
    if family != libc::ARPHRD_ETHER {
        return Err(format!(
            "interface {iface} is not an Ethernet interface (hardware type {family}); \
             net_af_packet needs Ethernet frames"
        ));
    }
    Ok(MacAddr(mac))
}

fn read_sysfs(iface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Link state from sysfs: `operstate` (an interface that reports no state but
/// is up with carrier counts as up), `speed` and `duplex`.
fn sysfs_link(iface: &str) -> Link {
    let oper = read_sysfs(iface, "operstate").unwrap_or_default();
    let flags = read_sysfs(iface, "flags")
        .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0);
    let carrier = read_sysfs(iface, "carrier").as_deref() == Some("1");
    let up = oper == "up" || (oper == "unknown" && flags & libc::IFF_UP as u32 != 0 && carrier);
    let speed = read_sysfs(iface, "speed")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|&s| s > 0 && s < u32::MAX as i64)
        .unwrap_or(0) as u32;
    Link {
        up,
        speed_mbps: if up { speed } else { 0 },
        full_duplex: up
            && read_sysfs(iface, "duplex")
                .as_deref()
                .is_none_or(|d| d == "full"),
    }
}

impl Drop for AfPacketPort {
    fn drop(&mut self) {
        // Give the membership back ourselves rather than leave it to the
        // socket's close: a child forked meanwhile by any thread of this
        // process holds the socket until its exec, and the interface would
        // stay promiscuous until then.
        // An error here (the interface is gone, and the membership with it)
        // changes nothing: the kernel drops what is left when the socket closes.
        if self.promisc_held {
            if let Err(e) = self.ctl.promisc_membership(self.ifindex, false) {
                log::debug!(
                    "{}: dropping the promiscuous membership on {}: {e}",
                    self.name,
                    self.opts.iface
                );
            }
            self.promisc_held = false;
        }
    }
}

impl Port for AfPacketPort {
    fn info(&self) -> PortInfo {
        let fpb = self.opts.frames_per_block().min(u16::MAX as u32) as u16;
        let max = self.opts.max_frames().min(u16::MAX as u32) as u16;
        let def = self.opts.framecnt.min(u16::MAX as u32) as u16;
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: self.opts.qpairs,
            max_tx_queues: self.opts.qpairs,
            default_rxd: def,
            default_txd: def,
            min_rxd: fpb,
            max_rxd: max,
            min_txd: fpb,
            max_txd: max,
            desc_align: fpb,
            // What a block holds whole, and what the interface delivers (an
            // MTU-sized frame with a VLAN tag).
            max_rx_pktlen: self.opts.blocksz.saturating_sub(RX_OVERHEAD).min(
                self.netdev
                    .mtu(&self.opts.iface)
                    .map_or(u32::MAX, |mtu| mtu + ETH_HLEN as u32 + 4),
            ),
            rx_scatter: true,
            tx_multi_seg: true,
            numa_node: read_sysfs(&self.opts.iface, "device/numa_node")
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|&n| n >= 0)
                .map(|n| n as u32),
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        port::ensure_stopped(self.started, self.port_id, &self.name)?;
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        self.port_id = conf.port_id;
        self.conf = Some((conf.clone(), rxd, txd));
        Ok(())
    }

    fn start(&mut self) -> Result<PortQueues> {
        let Some((conf, rxd, txd)) = self.conf.clone() else {
            return Err(self.err("start", "the port is not configured".into()));
        };
        if self.started {
            return Err(self.err("start", "the port is already started".into()));
        }
        let iface = self.opts.iface.clone();
        // The interface may have been recreated since the port was made.
        let ifindex =
            self.netdev.index(&iface).map_err(|e| {
                self.err("start", os_reason("cannot find the interface", &iface, &e))
            })? as i32;
        let ifflags = self.netdev.flags(&iface).map_err(|e| {
            self.err(
                "start",
                os_reason("cannot read the interface flags", &iface, &e),
            )
        })?;
        if ifflags & libc::IFF_UP as u32 == 0 {
            return Err(self.err(
                "start",
                format!("interface {iface} is down; bring it up with `ip link set {iface} up`"),
            ));
        }
        let mtu = self
            .netdev
            .mtu(&iface)
            .map_err(|e| self.err("start", os_reason("cannot read the MTU", &iface, &e)))?;
        let tx_room = self.opts.framesz as usize - sys::TPACKET3_HDR;
        if conf.nb_txq > 0 && mtu as usize + ETH_HLEN > tx_room {
            let need = (mtu as usize + ETH_HLEN + sys::TPACKET3_HDR).next_multiple_of(16);
            let block = need
                .next_multiple_of(sys::page_size())
                .max(self.opts.blocksz as usize);
            return Err(self.err(
                "start",
                format!(
                    "interface {iface} has MTU {mtu}, but framesz={} holds frames of at most \
                     {tx_room} bytes (after its {}-byte header); raise the frame size, e.g. \
                     framesz={need},blocksz={block} (or leave both out to derive them from the \
                     MTU when the port is created), or lower the MTU with `ip link set {iface} mtu {}`",
                    self.opts.framesz,
                    sys::TPACKET3_HDR,
                    tx_room - ETH_HLEN
                ),
            ));
        }
        let max_len = match conf.max_rx_pktlen {
            0 => self.info().max_rx_pktlen as usize,
            l => l as usize,
        };
        self.ifindex = ifindex;
        self.mac = read_mac(&self.netdev, &iface).map_err(|r| self.err("start", r))?;
        let socks = self.open_sockets(ifindex, &conf, rxd, txd)?;

        let mut rx: Vec<Box<dyn RxQueue>> = Vec::with_capacity(conf.nb_rxq as usize);
        for q in 0..conf.nb_rxq {
            let ring = RxRing::new(&socks[q as usize]).expect("a fresh socket's receive ring");
            rx.push(Box::new(AfPacketRxQueue {
                ring,
                max_len,
                pool: conf.mempool.clone(),
                port: conf.port_id,
                queue: q,
                rss: conf.nb_rxq > 1 && self.opts.fanout_mode == FanoutMode::Hash,
                counters: self.counters.rx(q as usize),
            }));
        }
        let mut tx: Vec<Box<dyn TxQueue>> = Vec::with_capacity(conf.nb_txq as usize);
        for q in 0..conf.nb_txq {
            let ring = TxRing::new(&socks[q as usize]).expect("a fresh socket's transmit ring");
            tx.push(Box::new(AfPacketTxQueue {
                max_len: ring.capacity().min(mtu as usize + ETH_HLEN + 4),
                ring,
                counters: self.counters.tx(q as usize),
            }));
        }
        self.sockets = socks;
        self.started = true;
        if let Err(e) = self.apply_promisc() {
            drop((rx, tx));
            self.sockets.clear();
            self.started = false;
            return Err(e);
        }
        Ok(PortQueues { rx, tx })
    }

    fn stop(&mut self) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        if self.sockets.iter().any(|s| Arc::strong_count(s) > 1) {
            return Err(self.err(
                "stop",
                "its queues are still in use; drop the receive and transmit queues first".into(),
            ));
        }
        self.collect_drops();
        self.sockets.clear();
        self.started = false;
        self.apply_promisc()
    }

    fn is_started(&self) -> bool {
        self.started
    }

    fn link(&self) -> Link {
        sysfs_link(&self.opts.iface)
    }

    fn mac_addr(&self) -> MacAddr {
        self.mac
    }

    fn promiscuous(&self) -> bool {
        self.promisc
    }

    fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        let before = self.promisc;
        self.promisc = on;
        if let Err(e) = self.apply_promisc() {
            self.promisc = before;
            return Err(e);
        }
        Ok(())
    }

    fn stats(&self) -> PortStats {
        self.collect_drops();
        let mut s = self.counters.stats();
        s.imissed += self
            .kernel_drops
            .load(Ordering::Relaxed)
            .saturating_sub(self.drops_base);
        s
    }

    fn reset_stats(&mut self) {
        self.collect_drops();
        self.counters.reset();
        self.drops_base = self.kernel_drops.load(Ordering::Relaxed);
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let s = self.stats();
        let mut v = self.counters.xstats();
        for (k, val) in v.iter_mut() {
            if k == "rx_missed_errors" {
                *val = s.imissed;
            }
        }
        v
    }
}

struct AfPacketRxQueue {
    ring: RxRing,
    /// Longest frame delivered (`--max-pkt-len`); longer ones are counted.
    max_len: usize,
    pool: Mempool,
    port: u16,
    queue: u16,
    rss: bool,
    counters: QueueCountersRef,
}

/// What became of one received frame.
enum Fill {
    Ok,
    Skip,
    Error,
    NoBuf,
}

impl AfPacketRxQueue {
    /// Copy frame `f` into `m` (VLAN tag put back), or say why not. A frame
    /// longer than `m` continues in more mbufs, chained to it.
    #[inline(always)]
    fn fill(&self, f: &RxFrame, m: &mut Mbuf) -> Fill {
        let ring = &self.ring;
        if f.pkttype == libc::PACKET_OUTGOING {
            return Fill::Skip;
        }
        let snap = f.snaplen as usize;
        let vlan = f.status & libc::TP_STATUS_VLAN_VALID != 0;
        let len = snap + if vlan { 4 } else { 0 };
        // Truncated by the kernel (longer than a block holds), a runt, or
        // over the frame limit: drop and count, never deliver it cut.
        if f.snaplen < f.len || snap < ETH_HLEN || len > self.max_len {
            return Fill::Error;
        }
        if !m.set_len(len) {
            return self.fill_chain(f, m, len, vlan);
        }
        let ok = copy_head(ring, f, m.data_mut(), vlan);
        if !ok {
            return Fill::Error;
        }
        self.stamp(f, m);
        Fill::Ok
    }

    #[inline(always)]
    fn stamp(&self, f: &RxFrame, m: &mut Mbuf) {
        m.set_port(self.port);
        m.set_queue(self.queue);
        if self.rss {
            m.set_rss_hash(f.rxhash);
            m.set_ol_flags(flags::RX_RSS_HASH);
        }
    }

    /// [`fill`](Self::fill) for a frame of `len` bytes (VLAN tag included)
    /// longer than `m`: `m` takes what it holds, more mbufs the rest.
    #[cold]
    #[inline(never)]
    fn fill_chain(&self, f: &RxFrame, m: &mut Mbuf, len: usize, vlan: bool) -> Fill {
        let ring = &self.ring;
        let first = m.capacity();
        // Frame bytes from `at` on: past the first 16 bytes, a re-inserted
        // tag puts them 4 bytes later than in the ring.
        let src = |at: usize| if vlan { at - 4 } else { at };
        let mut chain = RxChain::new();
        let mut at = first;
        while at < len {
            let Some(mut seg) = self.pool.alloc() else {
                chain.discard();
                return Fill::NoBuf;
            };
            let n = (len - at).min(seg.capacity());
            let ok = ring.copy(f, src(at), seg.append(n).expect("within capacity"));
            if !ok || chain.push(seg).is_err() {
                chain.discard();
                return Fill::Error;
            }
            at += n;
        }
        assert!(m.set_len(first));
        let ok = copy_head(ring, f, m.data_mut(), vlan);
        let rest = chain.finish().expect("a frame longer than its first mbuf");
        if !ok || m.chain(rest).is_err() {
            m.set_len(0);
            return Fill::Error;
        }
        self.stamp(f, m);
        Fill::Ok
    }
}

/// Copy the start of frame `f` into `d` (as much as `d` holds), putting back
/// the VLAN tag the kernel stripped (`vlan`) after the MAC addresses, with
/// its TPID when the kernel reports one (802.1Q's 0x8100 otherwise). False
/// if `f` is not the ring's current frame or holds less than asked.
#[inline(always)]
fn copy_head(ring: &RxRing, f: &RxFrame, d: &mut [u8], vlan: bool) -> bool {
    if vlan {
        let tpid = if f.status & libc::TP_STATUS_VLAN_TPID_VALID != 0 && f.vlan_tpid != 0 {
            f.vlan_tpid
        } else {
            0x8100
        };
        d[12..14].copy_from_slice(&tpid.to_be_bytes());
        d[14..16].copy_from_slice(&f.vlan_tci.to_be_bytes());
        ring.copy(f, 0, &mut d[..12]) && ring.copy(f, 12, &mut d[16..])
    } else {
        ring.copy(f, 0, d)
    }
}

/// Free the last `n` mbufs of `batch` (rare: frames dropped after allocation).
fn free_tail(batch: &mut MbufBatch, n: usize) {
    let keep = batch.len() - n;
    let mut i = 0;
    batch.retain_mut(|_| {
        i += 1;
        i <= keep
    });
}

impl RxQueue for AfPacketRxQueue {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let (mut got, mut bytes, mut errors, mut nombuf) = (0usize, 0u64, 0u64, 0u64);
        loop {
            let spare = out.spare();
            if spare == 0 {
                break;
            }
            let avail = self.ring.pending() as usize;
            if avail == 0 {
                break;
            }
            // One bulk allocation per block's worth of frames.
            let mut k = avail.min(spare);
            let first = out.len();
            let mut short = false;
            if !self.pool.alloc_bulk(out, k) {
                let mut a = 0;
                while a < k {
                    match self.pool.alloc() {
                        Some(m) => {
                            let _ = out.push(m);
                            a += 1;
                        }
                        None => break,
                    }
                }
                // The frames stay in the ring for the next burst.
                nombuf += (k - a) as u64;
                if a == 0 {
                    break;
                }
                k = a;
                short = true;
            }
            let mut w = first;
            for _ in 0..k {
                let Some(f) = self.ring.frame() else {
                    // Malformed header: the rest of the block was handed back.
                    errors += 1;
                    break;
                };
                let m = &mut out.as_mut_slice()[w];
                match self.fill(&f, m) {
                    Fill::Ok => {
                        bytes += m.pkt_len() as u64;
                        w += 1;
                    }
                    Fill::Skip => {}
                    Fill::Error => errors += 1,
                    Fill::NoBuf => nombuf += 1,
                }
                self.ring.advance(f);
            }
            let unused = first + k - w;
            if unused > 0 {
                free_tail(out, unused);
            }
            got += w - first;
            if short {
                break;
            }
        }
        if got > 0 {
            self.counters.rx_packets.add(got as u64);
            self.counters.rx_bytes.add(bytes);
        }
        if errors > 0 {
            self.counters.rx_errors.add(errors);
        }
        if nombuf > 0 {
            self.counters.rx_nombuf.add(nombuf);
        }
        got
    }
}

struct AfPacketTxQueue {
    ring: TxRing,
    /// Longest frame the kernel accepts: the slot size, and MTU + 14 + a VLAN tag.
    max_len: usize,
    counters: QueueCountersRef,
}

impl TxQueue for AfPacketTxQueue {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let (mut taken, mut sent, mut bytes, mut errors) = (0usize, 0u64, 0u64, 0u64);
        let mut full = false;
        for m in pkts.iter() {
            let len = m.pkt_len();
            if !(ETH_HLEN..=self.max_len).contains(&len) {
                // The kernel would refuse it: drop and count.
                errors += 1;
                taken += 1;
                continue;
            }
            let pushed = if m.is_chained() {
                self.ring.push_parts(len, m.segments())
            } else {
                self.ring.push(m.data())
            };
            if !pushed {
                full = true;
                break;
            }
            sent += 1;
            bytes += len as u64;
            taken += 1;
        }
        // One system call per burst: flush what was queued, or retry a flush
        // that an earlier EAGAIN/ENOBUFS left pending when the ring is full.
        // Frames stay marked in the ring on failure and go with the next kick.
        if sent > 0 || (full && taken == 0) {
            let _ = self.ring.kick();
        }
        pkts.free_front(taken);
        if sent > 0 {
            self.counters.tx_packets.add(sent);
            self.counters.tx_bytes.add(bytes);
        }
        if errors > 0 {
            self.counters.tx_errors.add(errors);
        }
        taken
    }
}

#[cfg(test)]
mod tests;
