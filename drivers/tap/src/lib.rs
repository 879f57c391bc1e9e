//! `net_tap`: a port that is a kernel TAP interface it creates, like DPDK's
//! net_tap. What the port transmits, the kernel receives on the interface; what
//! the kernel sends out of the interface, the port receives.
//!
//! Creating the port opens `/dev/net/tun` and creates the interface
//! (`TUNSETIFF`, `IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE`, refusing to join an
//! interface that already exists). That first descriptor is detached from the
//! queue set (`IFF_DETACH_QUEUE`): it only keeps the interface alive while the
//! port exists. `start` opens one more non-blocking descriptor per queue — the
//! kernel spreads the traffic it sends over the attached queues by flow hash —
//! and brings the interface up; `stop` brings it down and closes them. The
//! interface is deleted when the last descriptor closes: dropping the port
//! (and its queues) removes it, and so does a crash.
//!
//! Receive is one `readv` per packet (into the mbuf, then, when the frame
//! limit is larger than an mbuf, into as many spare mbufs as a frame at the
//! limit takes, which become the chain of a long frame, plus a scratch
//! buffer that only serves to detect frames over the limit), bounded by the
//! burst; transmit is one `write` per packet (`writev` of the segments of a
//! chain). That is what the TUN/TAP interface
//! offers (DPDK's TAP PMD also does one system call per packet); the fast-path
//! rule of one system call per burst cannot hold here.
//!
//! Device arguments (`--vdev net_tap0,iface=tap0,mac=fixed`):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `iface` | `dtap%d` (the kernel numbers it: dtap0, dtap1...) | name of the interface to create |
//! | `mac` | random (the kernel's) | `fixed` (`02:64:74:61:70:<port id>`, "dtap") or an address |
//!
//! The number of queues comes from the port configuration (`--rxq`/`--txq`, at
//! most 16); descriptors beyond `--rxq` (transmit only) are detached so the
//! kernel sends them nothing. Ring sizes are accepted and not used (the
//! kernel-side queue is the interface's `txqueuelen`). `imissed` counts the frames the kernel
//! dropped because a queue was full (the interface's `tx_dropped`).
//! Promiscuous mode sets IFF_PROMISC on the port's own interface. A frame
//! limit (`--max-pkt-len N`) sets the interface's MTU to N - 18 (Ethernet
//! header and FCS), as DPDK's testpmd and tap do.
//!
//! Needs CAP_NET_ADMIN and a `/dev/net/tun` device node.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod sys;

use std::fs::File;
use std::io::{self, IoSliceMut, Read, Write};
use std::sync::Arc;

use nicpoll::mbuf::{Mbuf, MbufBatch};
use nicpoll::mempool::Mempool;
use nicpoll::netdev::Netdev;
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

use sys::TapOpenError;

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_tap";
/// The interface name used when `iface=` is not given; the kernel replaces
/// `%d` with the first free number.
pub const DEFAULT_IFACE: &str = "dtap%d";
const KEYS: &[&str] = &["iface", "mac"];
const MAX_QUEUES: u16 = 16;
const ETH_HLEN: usize = 14;
/// Largest frame a TAP read can return (64 KiB IP packets plus headers).
const SCRATCH: usize = 65536;

const CAP_HINT: &str = "creating a TAP interface needs CAP_NET_ADMIN: run as root, or add \
     NET_ADMIN to the container's securityContext.capabilities.add in the pod spec";

/// The MAC address a TAP port gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TapMac {
    /// The random address the kernel gives a new interface.
    #[default]
    Random,
    /// DPDK's fixed address `02:64:74:61:70:<port id>` ("dtap").
    Fixed,
    /// This address.
    Addr(MacAddr),
}

/// Options of a TAP port (its device arguments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapOptions {
    /// Name of the interface to create (`%d` is numbered by the kernel).
    pub iface: String,
    /// Its MAC address.
    pub mac: TapMac,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            iface: DEFAULT_IFACE.to_string(),
            mac: TapMac::Random,
        }
    }
}

impl TapOptions {
    /// Read `iface` and `mac` from device arguments and check them.
    pub fn from_devargs(args: &DevArgs) -> Result<TapOptions> {
        args.check_keys(KEYS)?;
        let bad = |reason: String| Error::DevArgs {
            device: args.spec.clone(),
            reason,
        };
        let mut o = TapOptions::default();
        if let Some(i) = args.get("iface") {
            o.iface = i.to_string();
        }
        o.mac = match args.get("mac") {
            None => TapMac::Random,
            Some(m) if m.eq_ignore_ascii_case("fixed") => TapMac::Fixed,
            Some(m) => {
                let a: MacAddr = m
                    .parse()
                    .map_err(|e: String| bad(format!("mac={m:?}: {e}, or mac=fixed")))?;
                if a.is_multicast() || a.0 == [0; 6] {
                    return Err(bad(format!(
                        "mac={m:?} is a multicast or zero address; a port needs a unicast one"
                    )));
                }
                TapMac::Addr(a)
            }
        };
        o.check().map_err(bad)?;
        Ok(o)
    }

    /// Check the interface name.
    pub fn check(&self) -> std::result::Result<(), String> {
        let n = &self.iface;
        if n.is_empty()
            || n.len() >= libc::IFNAMSIZ
            || n == "."
            || n == ".."
            || n.matches('%').count() > 1
            || (n.contains('%') && !n.contains("%d"))
            || n.chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "iface={n:?} cannot be an interface name (1 to 15 bytes, no '/', ':' or spaces, \
                 at most one %d)"
            ));
        }
        Ok(())
    }
}

/// A TAP port.
pub struct TapPort {
    name: String,
    port_id: u16,
    iface: String,
    /// Keeps the interface alive (a detached queue).
    _keepalive: File,
    ctl: Netdev,
    conf: Option<(PortConf, u16, u16)>,
    started: bool,
    /// The queue descriptors while started.
    queues: Vec<Arc<File>>,
    counters: PortCounters,
    /// The interface's `tx_dropped` at creation or the last reset.
    dropped_base: u64,
}

impl std::fmt::Debug for TapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPort")
            .field("name", &self.name)
            .field("iface", &self.iface)
            .field("started", &self.started)
            .field("queues", &self.queues.len())
            .finish()
    }
}

/// A message for a failed TAP open on `iface`: the OS error and the usual fix.
fn open_reason(iface: &str, e: &TapOpenError) -> String {
    match e {
        TapOpenError::Open(e) => {
            let fix = match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    "; load the tun module (`modprobe tun`) or, in a pod, mount the host's \
                     /dev/net/tun (a hostPath volume or a device plugin) into the container"
                }
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    "; the device node must be readable and writable (crw-rw-rw- root root 10, 200), \
                     and the container's device cgroup must allow it"
                }
                _ => "",
            };
            format!("cannot open {}: {e}{fix}", sys::TUN_PATH)
        }
        TapOpenError::SetIff(e) => {
            let fix = match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => format!("; {CAP_HINT}"),
                Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::EEXIST) => format!(
                    "; an interface named {iface} already exists (or is not a multi-queue TAP); \
                     pick another iface= or delete it with `ip link del {iface}`"
                ),
                _ => String::new(),
            };
            format!(
                "cannot create TAP interface {iface} on {} (TUNSETIFF): {e}{fix}",
                sys::TUN_PATH
            )
        }
    }
}

fn read_sysfs(iface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{file}"))
        .ok()
        .map(|s| s.trim().to_string())
}

impl TapPort {
    /// Create the port described by `args` (`net_tapN[,iface=NAME][,mac=..]`),
    /// creating its interface.
    pub fn from_devargs(args: &DevArgs, port_id: u16) -> Result<TapPort> {
        args.expect_driver(DRIVER)?;
        TapPort::new(&args.name, TapOptions::from_devargs(args)?, port_id)
    }

    /// Create a port named `name`, creating its TAP interface.
    pub fn new(name: &str, opts: TapOptions, port_id: u16) -> Result<TapPort> {
        let err = |reason: String| Error::port(port_id, name, "create", reason);
        opts.check().map_err(&err)?;
        let (keepalive, iface) = sys::open_tap_queue(&opts.iface, true)
            .map_err(|e| err(open_reason(&opts.iface, &e)))?;
        // From here on, dropping `keepalive` on an error deletes the interface.
        sys::set_queue_attached(&keepalive, false).map_err(|e| {
            err(format!(
                "interface {iface}: cannot detach the keep-alive queue (TUNSETQUEUE): {e}"
            ))
        })?;
        let ctl = Netdev::open().map_err(|e| err(format!("cannot open a control socket: {e}")))?;
        let mac = match opts.mac {
            TapMac::Random => None,
            TapMac::Fixed => Some([0x02, b'd', b't', b'a', b'p', port_id as u8]),
            TapMac::Addr(a) => Some(a.0),
        };
        if let Some(mac) = mac {
            ctl.set_hwaddr(&iface, mac).map_err(|e| {
                err(format!(
                    "interface {iface}: cannot set MAC address {} (SIOCSIFHWADDR): {e}",
                    MacAddr(mac)
                ))
            })?;
        }
        let dropped_base = read_sysfs(&iface, "statistics/tx_dropped")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        log::debug!("{name}: {DRIVER} created interface {iface}");
        Ok(TapPort {
            name: name.to_string(),
            port_id,
            iface,
            _keepalive: keepalive,
            ctl,
            conf: None,
            started: false,
            queues: Vec::new(),
            counters: PortCounters::default(),
            dropped_base,
        })
    }

    /// The name of the port's TAP interface (with `%d` resolved).
    pub fn iface(&self) -> &str {
        &self.iface
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::port(self.port_id, &self.name, op, reason)
    }

    fn kernel_dropped(&self) -> u64 {
        read_sysfs(&self.iface, "statistics/tx_dropped")
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.dropped_base)
    }

    fn set_up(&self, up: bool) -> io::Result<()> {
        let f = libc::IFF_UP as u32;
        if up {
            self.ctl.change_flags(&self.iface, f, 0)
        } else {
            self.ctl.change_flags(&self.iface, 0, f)
        }
    }
}

impl Port for TapPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: MAX_QUEUES,
            max_tx_queues: MAX_QUEUES,
            default_rxd: 512,
            default_txd: 512,
            min_rxd: 1,
            max_rxd: 32768,
            min_txd: 1,
            max_txd: 32768,
            desc_align: 1,
            // What the interface's MTU may be raised to (a frame limit sets
            // it); without one the limit is the MTU's, see `start`.
            max_rx_pktlen: MAX_FRAME as u32,
            rx_scatter: true,
            tx_multi_seg: true,
            numa_node: None,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        port::ensure_stopped(self.started, self.port_id, &self.name)?;
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        // The interface is the port's own: a frame limit sets its MTU as
        // DPDK's testpmd and tap set it (--max-pkt-len less the Ethernet
        // header and FCS), so the kernel sends frames up to the limit.
        if conf.max_rx_pktlen != 0 {
            let mtu = conf.max_rx_pktlen.saturating_sub(ETH_HLEN as u32).max(68);
            if self.ctl.mtu(&self.iface).ok() != Some(mtu) {
                self.ctl.set_mtu(&self.iface, mtu).map_err(|e| {
                    self.err(
                        "configure",
                        format!(
                            "cannot set the MTU of interface {} to {mtu} for --max-pkt-len {} \
                             (SIOCSIFMTU): {e}",
                            self.iface,
                            conf.max_rx_pktlen + 4
                        ),
                    )
                })?;
            }
        }
        port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        self.port_id = conf.port_id;
        self.conf = Some((conf.clone(), rxd, txd));
        Ok(())
    }

    fn start(&mut self) -> Result<PortQueues> {
        let Some((conf, _, _)) = self.conf.clone() else {
            return Err(self.err("start", "the port is not configured".into()));
        };
        if self.started {
            return Err(self.err("start", "the port is already started".into()));
        }
        let (nb_rxq, nb_txq) = (conf.nb_rxq as usize, conf.nb_txq as usize);
        // Opening a queue creates an interface of that name if there is none:
        // refuse rather than run on a stranger if ours was deleted.
        if let Err(e) = self.ctl.flags(&self.iface) {
            return Err(self.err(
                "start",
                format!(
                    "interface {} is gone ({e}): was it deleted behind the port's back? \
                     create the port again",
                    self.iface
                ),
            ));
        }
        let mut files = Vec::with_capacity(nb_rxq.max(nb_txq));
        for q in 0..nb_rxq.max(nb_txq) {
            let (f, _) = sys::open_tap_queue(&self.iface, false).map_err(|e| {
                self.err(
                    "start",
                    format!("queue {q}: {}", open_reason(&self.iface, &e)),
                )
            })?;
            if q >= nb_rxq {
                // Transmit only: take no share of what the kernel sends.
                sys::set_queue_attached(&f, false).map_err(|e| {
                    self.err(
                        "start",
                        format!(
                            "queue {q}: interface {}: cannot detach (TUNSETQUEUE): {e}",
                            self.iface
                        ),
                    )
                })?;
            }
            files.push(Arc::new(f));
        }
        self.set_up(true).map_err(|e| {
            self.err(
                "start",
                format!(
                    "cannot bring interface {} up (SIOCSIFFLAGS): {e}",
                    self.iface
                ),
            )
        })?;
        // The frame limit: without --max-pkt-len the MTU's (a VLAN-tagged
        // frame), read now: it may have changed since configure.
        let max_len = match conf.max_rx_pktlen {
            0 => self.ctl.mtu(&self.iface).unwrap_or(1500) as usize + ETH_HLEN + 4,
            l => l as usize,
        }
        .min(MAX_FRAME);
        let room = conf.mempool.data_room();
        let segs = max_len.saturating_sub(room).div_ceil(room);
        let rx = (0..conf.nb_rxq)
            .map(|q| {
                Box::new(TapRxQueue {
                    file: files[q as usize].clone(),
                    pool: conf.mempool.clone(),
                    port: conf.port_id,
                    queue: q,
                    max_len,
                    segs,
                    extra: Vec::with_capacity(segs),
                    spare: None,
                    scratch: vec![0u8; SCRATCH].into_boxed_slice(),
                    counters: self.counters.rx(q as usize),
                }) as Box<dyn RxQueue>
            })
            .collect();
        let tx = (0..conf.nb_txq)
            .map(|q| {
                Box::new(TapTxQueue {
                    file: files[q as usize].clone(),
                    counters: self.counters.tx(q as usize),
                }) as Box<dyn TxQueue>
            })
            .collect();
        self.queues = files;
        self.started = true;
        Ok(PortQueues { rx, tx })
    }

    fn stop(&mut self) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        if self.queues.iter().any(|f| Arc::strong_count(f) > 1) {
            return Err(self.err(
                "stop",
                "its queues are still in use; drop the receive and transmit queues first".into(),
            ));
        }
        let down = self.set_up(false);
        self.queues.clear();
        self.started = false;
        down.map_err(|e| {
            self.err(
                "stop",
                format!(
                    "cannot bring interface {} down (SIOCSIFFLAGS): {e}",
                    self.iface
                ),
            )
        })
    }

    fn is_started(&self) -> bool {
        self.started
    }

    fn link(&self) -> Link {
        let flags = self.ctl.flags(&self.iface).unwrap_or(0);
        let oper = read_sysfs(&self.iface, "operstate").unwrap_or_default();
        let carrier = read_sysfs(&self.iface, "carrier").as_deref() == Some("1");
        let up =
            flags & libc::IFF_UP as u32 != 0 && (oper == "up" || (oper == "unknown" && carrier));
        Link {
            up,
            speed_mbps: if up {
                read_sysfs(&self.iface, "speed")
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|&s| s > 0 && s < u32::MAX as i64)
                    .unwrap_or(0) as u32
            } else {
                0
            },
            full_duplex: up,
        }
    }

    fn mac_addr(&self) -> MacAddr {
        MacAddr(self.ctl.hwaddr(&self.iface).map_or([0; 6], |(_, mac)| mac))
    }

    fn promiscuous(&self) -> bool {
        self.ctl
            .flags(&self.iface)
            .map(|f| f & libc::IFF_PROMISC as u32 != 0)
            .unwrap_or(false)
    }

    fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        let f = libc::IFF_PROMISC as u32;
        let r = if on {
            self.ctl.change_flags(&self.iface, f, 0)
        } else {
            self.ctl.change_flags(&self.iface, 0, f)
        };
        r.map_err(|e| {
            self.err(
                "promiscuous",
                format!("interface {}: SIOCSIFFLAGS: {e}", self.iface),
            )
        })
    }

    fn stats(&self) -> PortStats {
        let mut s = self.counters.stats();
        s.imissed += self.kernel_dropped().saturating_sub(self.dropped_base);
        s
    }

    fn reset_stats(&mut self) {
        self.counters.reset();
        self.dropped_base = self.kernel_dropped();
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

struct TapRxQueue {
    file: Arc<File>,
    pool: Mempool,
    port: u16,
    queue: u16,
    /// Longest frame delivered; longer ones are counted.
    max_len: usize,
    /// Spare mbufs a read may need after the first: a frame at the limit.
    segs: usize,
    /// Those spares, kept between reads (allocated once, not per packet).
    extra: Vec<Mbuf>,
    /// An mbuf kept from a read that found nothing, for the next one.
    spare: Option<Mbuf>,
    /// Catches the bytes of frames longer than the mbuf, so they are seen.
    scratch: Box<[u8]>,
    counters: QueueCountersRef,
}

impl TapRxQueue {
    /// Read one frame into `m`, then the spares, then the scratch buffer;
    /// the bytes read, and `m` with the spares it took chained to it.
    #[inline]
    fn read(&mut self, m: &mut Mbuf) -> io::Result<usize> {
        let cap = m.capacity();
        m.set_len(cap);
        if self.segs == 0 {
            let mut iov = [
                IoSliceMut::new(m.data_mut()),
                IoSliceMut::new(&mut self.scratch),
            ];
            return (&*self.file).read_vectored(&mut iov);
        }
        self.read_scatter(m, cap)
    }

    /// [`read`](Self::read) when a frame may be longer than one mbuf.
    #[cold]
    #[inline(never)]
    fn read_scatter(&mut self, m: &mut Mbuf, cap: usize) -> io::Result<usize> {
        while self.extra.len() < self.segs {
            match self.pool.alloc() {
                Some(s) => self.extra.push(s),
                // Frames that need more than the pool gave end in the
                // scratch buffer and are counted.
                None => break,
            }
        }
        let mut iov: [IoSliceMut<'_>; MAX_IOV] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut k = 0;
        iov[k] = IoSliceMut::new(m.data_mut());
        k += 1;
        for s in self.extra.iter_mut() {
            let c = s.capacity();
            s.set_len(c);
            iov[k] = IoSliceMut::new(s.data_mut());
            k += 1;
        }
        iov[k] = IoSliceMut::new(&mut self.scratch);
        k += 1;
        let n = (&*self.file).read_vectored(&mut iov[..k])?;
        if n > cap && n <= self.max_len {
            // The spares the frame reached, in order, become its chain.
            let mut left = n - cap;
            let mut used = 0;
            for s in self.extra.iter() {
                if left == 0 {
                    break;
                }
                left = left.saturating_sub(s.len());
                used += 1;
            }
            if left == 0 {
                let mut rest = self.extra.drain(..used);
                let mut chain = nicpoll::mbuf::RxChain::new();
                let mut tail = n - cap;
                for mut s in rest.by_ref() {
                    let l = tail.min(s.len());
                    s.set_len(l);
                    tail -= l;
                    let _ = chain.push(s);
                }
                drop(rest);
                if let Some(c) = chain.finish() {
                    let _ = m.chain(c);
                }
            }
        }
        Ok(n)
    }
}

/// Most `readv` buffers: the first mbuf, spares for a 64 KiB frame in 2 KiB
/// mbufs, the scratch buffer.
const MAX_IOV: usize = 2 + MAX_FRAME.div_ceil(1664);
/// Longest frame a tap port takes (the largest MTU is 65535 + 14).
const MAX_FRAME: usize = 65536;

impl RxQueue for TapRxQueue {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let (mut got, mut bytes, mut errors, mut nombuf) = (0usize, 0u64, 0u64, 0u64);
        while out.spare() > 0 {
            let mut m = match self.spare.take() {
                Some(m) => m,
                None => match self.pool.alloc() {
                    Some(m) => m,
                    None => {
                        nombuf += 1;
                        break;
                    }
                },
            };
            let cap = m.capacity();
            let r = self.read(&mut m);
            match r {
                Ok(n) if n > cap && m.pkt_len() == n => {
                    // A chain: the first mbuf is full.
                    m.set_port(self.port);
                    m.set_queue(self.queue);
                    bytes += n as u64;
                    got += 1;
                    if let Err(m) = out.push(m) {
                        self.spare = Some(m);
                        break;
                    }
                }
                Ok(n) if (ETH_HLEN..=cap.min(self.max_len)).contains(&n) => {
                    m.set_len(n);
                    m.set_port(self.port);
                    m.set_queue(self.queue);
                    bytes += n as u64;
                    got += 1;
                    if let Err(m) = out.push(m) {
                        // Cannot happen (spare() > 0), but never lose a buffer.
                        self.spare = Some(m);
                        break;
                    }
                }
                Ok(0) => {
                    self.spare = Some(m);
                    break;
                }
                Ok(_) => {
                    // A runt, or longer than the mbuf: dropped, counted.
                    errors += 1;
                    self.spare = Some(m);
                }
                Err(_) => {
                    // EAGAIN: nothing more now; anything else (interface gone)
                    // is no packet either.
                    self.spare = Some(m);
                    break;
                }
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

struct TapTxQueue {
    file: Arc<File>,
    counters: QueueCountersRef,
}

impl TxQueue for TapTxQueue {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let (mut taken, mut sent, mut bytes, mut errors) = (0usize, 0u64, 0u64, 0u64);
        for m in pkts.iter() {
            let r = if m.nb_segs() > MAX_IOV {
                Err(io::Error::from_raw_os_error(libc::EMSGSIZE))
            } else if m.is_chained() {
                let mut iov = [io::IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                for seg in m.segments().take(MAX_IOV) {
                    iov[k] = io::IoSlice::new(seg);
                    k += 1;
                }
                (&*self.file).write_vectored(&iov[..k])
            } else {
                (&*self.file).write(m.data())
            };
            match r {
                Ok(_) => {
                    sent += 1;
                    bytes += m.pkt_len() as u64;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    break;
                }
                // Refused (a runt, the interface gone): dropped, counted.
                Err(_) => errors += 1,
            }
            taken += 1;
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
