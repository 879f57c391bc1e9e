//! `net_mlx5`: Mellanox/NVIDIA ConnectX-4 and newer through rdma-core verbs,
//! bifurcated like DPDK's mlx5 driver: the kernel keeps the device and its
//! network interface; flow rules steer the traffic meant for the port to our
//! queues, everything else stays with the kernel. No unbinding, no VFIO.
//!
//! **Status: verified against the rdma-core 44 to 64 headers (layout test) and a fake
//! verbs library (unit and conformance tests), not yet on ConnectX hardware.**
//!
//! # Building and running
//!
//! `cargo build` needs nothing from rdma-core: `libibverbs.so.1` is loaded at run
//! time with dlopen (libibverbs then loads the mlx5 provider itself, as
//! `/etc/libibverbs.d/mlx5.driver` says). At run time the machine or container
//! needs the packages `libibverbs1` and `ibverbs-providers`, the `mlx5_ib`
//! module, access to `/dev/infiniband/uverbsN`, CAP_NET_RAW (raw packet QPs and
//! flow rules) and enough RLIMIT_MEMLOCK (or CAP_IPC_LOCK) to pin the mempool.
//! Each error says which of these is missing ([`Mlx5Error`]). Do not set
//! `MLX5_SINGLE_THREADED`: it drops libmlx5's locks for the whole process,
//! shared doorbell registers included. The driver needs none of those locks:
//! each transmit queue has its own thread domain and each CQ is polled
//! lock-free (below).
//!
//! # Device arguments
//!
//! `--vdev net_mlx5,iface=IFNAME` or `--vdev net_mlx5,dev=0000:03:00.0`, or
//! `-a 0000:03:00.0` for a function bound to mlx5_core ([`is_mlx5_pci`]), with:
//!
//! | key | meaning |
//! |---|---|
//! | `mac=M1+M2` | also steer these unicast MACs (added to the interface's FDB with netlink, as `bridge fdb add M dev IF self`, so a VF's vport accepts them) |
//! | `vlan=V1+V2` | steer only frames tagged with these VLANs (untagged and other VLANs stay with the kernel) |
//! | `txq_inline_max=N` | inline frames up to N bytes on transmit (default 128, 0 to 960; the device may grant less) |
//! | `isolated=1` | isolated mode: steer only what `flow=` names, the kernel keeps the rest (DPDK's `rte_flow_isolate`) |
//! | `flow=R1+R2` | isolated mode's rules; a rule is items joined by `/`: `eth_type:N`, `ipv4`, `ipv6`, `ip_proto:N`, `tcp`, `udp`, `tcp_dst:PORT`, `udp_dst:PORT`, `dst_mac:M`, `vlan:ID` |
//!
//! DPDK keys that describe what this backend does anyway (`dv_flow_en=0`,
//! `rxq_cqe_comp_en=0`, `mprq_en=0`, `rx_vec_en=0`, `tx_vec_en=0`,
//! `txq_mpw_en=0`, `rxq_pkt_pad_en=0`) are accepted; DPDK's other mlx5 keys
//! and other values are refused by name: they need Direct Verbs, which this
//! backend does not use.
//!
//! # How it maps onto verbs
//!
//! - Receive queue *q*: a CQ and a receive work queue (`ibv_create_wq`), filled
//!   with mbufs of the configured mempool, which is registered whole as one
//!   memory region.
//! - RSS, the way plain verbs allow it (and DPDK's verbs-only mlx5 did): the
//!   WQs go in an indirection table (`ibv_create_rwq_ind_table`, size rounded up
//!   to a power of two) and receive-only RAW_PACKET "hash" QPs
//!   (`ibv_create_qp_ex` with `rx_hash_conf`, Toeplitz, DPDK's default key) sit
//!   on it: one per traffic type, because one hash QP hashes either IPv4 or
//!   IPv6 and either TCP or UDP: TCP/IPv4, UDP/IPv4, IPv4, TCP/IPv6, UDP/IPv6,
//!   IPv6 over all queues, and everything else over a one-entry table (queue
//!   0, no hash: the kernel allows no hash fields only there). With one
//!   receive queue only that last one exists. ("One flow per queue with a
//!   hash" is not something verbs flow specs can express.)
//! - Steering, default mode: for each MAC (the interface's own and `mac=`),
//!   each VLAN of `vlan=` (or any), and each traffic type, an `ibv_create_flow`
//!   rule (ETH [+ IPv4/IPv6 [+ TCP/UDP]] specs) to that type's hash QP; more
//!   specific rules get a higher priority (L4 0, L3 1, L2 2). As with DPDK,
//!   the kernel no longer receives unicast frames for a MAC we steer (SSH,
//!   ARP replies, neighbour discovery): the port says so at start.
//!   Broadcast and multicast are not steered. Promiscuous mode adds the same
//!   rules without a MAC, taking *every* frame of the interface, broadcast and
//!   multicast included, and sets the interface's IFF_PROMISC (a VF gets
//!   foreign frames only if its PF trusts it; the port warns when it cannot).
//! - Steering, isolated mode: exactly the `flow=` rules (a rule naming an IP
//!   protocol or port without an IP version is made for both), each to the
//!   hash QP of its traffic type; everything else stays with the kernel.
//!   Promiscuous mode is refused there.
//! - Transmit queue *q*: a CQ and a send-only RAW_PACKET QP in its own thread
//!   domain (`ibv_alloc_td`, a parent domain, `ibv_create_qp_ex`: a doorbell
//!   register of its own, no lock in libmlx5), taken INIT → RTR → RTS. Frames
//!   up to the granted `max_inline_data` go inline (IBV_SEND_INLINE, the mbuf
//!   is freed at once); larger ones are read by DMA from the registered
//!   mempool, or from another pool whose memory is registered the first time
//!   one of its frames is sent. A completion is requested every 32 requests
//!   and on the last of each burst (`sq_sig_all = 0`). `--txd` goes up to what
//!   the device takes with the inline size (found at open).
//! - CQs are created single-threaded (`ibv_create_cq_ex`) and read with the
//!   extended poll functions, which libmlx5 runs without a lock for them;
//!   `ibv_post_wq_recv` and `ibv_post_send` are called the way the header's
//!   inline functions do (`ibv_wq.post_recv`, `ibv_context.ops`).
//! - Receive errors: a frame longer than the mbuf (`rx_qN_too_long`) is
//!   counted and its buffer reposted; only the errors DPDK resets on
//!   (local QP operation, protection, flush) reset the queue. A configuration
//!   whose mbufs are smaller than the frames that can arrive (the MTU, or a
//!   VF's PF's MTU, plus 18) is refused with the `--mbuf-size` to use.
//! - Device removal (IBV_EVENT_DEVICE_FATAL, or the event queue closed: EIO,
//!   POLLERR/POLLHUP) is watched by a thread per port and reported once; the
//!   library is loaded with RDMAV_ALLOW_DISASSOC_DESTROY=1.
//! - Counters per queue; `xstats` adds per-queue error counters, the RDMA
//!   port's `hw_counters` (`out_of_buffer` is `imissed`; it counts the drops
//!   of every verbs receive queue of the function, other programs' too), and
//!   the interface's `statistics`. Link state comes from the interface
//!   (operstate, speed, duplex). Checksum and RSS hash results are not
//!   reported: plain verbs give no hash, and only a "checksum good" flag the
//!   mbuf has no field for.
//!
//! # unsafe
//!
//! `#![deny(unsafe_code)]` at the crate root and in every module except the
//! FFI folder `verbs/` (dlopen, struct mirrors, calls through function
//! pointers, and the safe owners of the buffers posted to the device; with
//! its test-only fake NIC `verbs::fake`). The datapath and the netlink
//! requests (the core's `nicpoll::netdev::netlink`) are safe code. Every `unsafe` block has a `// SAFETY:`
//! comment.
//!
//! # Hardware test
//!
//! `hw_steers_our_mac_and_leaves_the_rest_to_the_kernel` and
//! `hw_isolated_mode_leaves_the_kernel_its_ping_and_takes_a_jumbo_frame` are
//! `#[ignore]`d. On a machine with two ConnectX interfaces on the same
//! Ethernet segment (two VFs of one PF are enough: the e-switch connects
//! them), as root:
//!
//! ```text
//! NICPOLL_MLX5_IFACE=ens1f0v0 NICPOLL_MLX5_PEER=ens1f0v1 NICPOLL_MLX5_PING=192.0.2.1 \
//!     cargo test -p nicpoll-mlx5 --release -- --ignored --nocapture hw_
//! ```
//!
//! The isolated-mode test runs the port with `isolated=1,flow=eth_type:0x88b5`,
//! pings `NICPOLL_MLX5_PING` (an address the kernel reaches through the
//! interface) and wants the ping answered, then has the peer send 100 frames
//! and one of the largest size that can arrive, and wants them all, the big
//! one whole and no length error (or, when no mbuf can hold it, the refusal
//! naming `--mbuf-size`).
//!
//! The peer port (no receive queue, so it steers nothing) sends 1000 frames to
//! the tested interface's MAC and 1000 broadcast frames; the tested port must
//! receive the first and none of the second, and the kernel interface's
//! `rx_packets` must grow by the broadcasts. Without `NICPOLL_MLX5_PEER` the
//! test only opens, starts, reports link and counters, and listens for two
//! seconds.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
mod c_program;
mod datapath;
pub mod error;
mod events;
mod flow;
#[cfg(test)]
mod layout_test;
mod netlink;
pub mod options;
mod steering;
pub mod sysfs;
#[cfg(test)]
mod test_log;
mod verbs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nicpoll::mempool::Mempool;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Port, RxQueue, TxQueue};

use datapath::{ExtraRef, MrRegistry, QueueExtra, RingError, RxRing, TX_SIGNAL_EVERY, TxRing};
pub use error::{Mlx5Error, Result};
use flow::FlowRule;
use netlink::{Kernel, Netlink};
pub use options::{DRIVER, Mlx5Options, Selector, is_mlx5_devargs, normalize_pci};
use steering::HashKind;
pub use sysfs::is_mlx5_pci;
use sysfs::{Netdev, Resolved};
use verbs::{
    Context, DeviceLimits, Flow, IBV_LINK_LAYER_ETHERNET, IndTable, Mr, Qp, RecvQueue, SendQueue,
    ThreadDomain, VerbError, Verbs, Wq,
};

/// Most receive or transmit queues per port.
pub const MAX_QUEUES: u16 = 64;
const DEFAULT_DESC: u16 = 512;
const MIN_DESC: u16 = 16;
const MAX_DESC: u16 = 32768;

/// What a started port holds besides its queues. Dropping it removes the flow
/// rules (traffic goes back to the kernel), then the hash QPs, tables, WQs and
/// CQs in that order (each holds the next), as soon as the queues are gone too.
struct Started {
    alive: Arc<()>,
    hash_qps: Vec<(HashKind, Arc<Qp>)>,
    flows: Vec<Flow>,
    promisc_flows: Vec<Flow>,
    fdb_added: Vec<[u8; 6]>,
}

/// An mlx5 port.
pub struct Mlx5Port {
    name: String,
    opts: Mlx5Options,
    root: PathBuf,
    dev: Resolved,
    netdev: Netdev,
    ctx: Arc<Context>,
    kernel: Arc<dyn Kernel>,
    limits: DeviceLimits,
    /// The device is gone (set by the event watcher).
    fatal: Arc<std::sync::atomic::AtomicBool>,
    _events: Option<events::EventWatcher>,
    /// Most send requests a transmit queue can have (found at open).
    max_txd: u16,
    mac: MacAddr,
    port_id: u16,
    conf: Option<(PortConf, u16, u16)>,
    mr: Option<Arc<Mr>>,
    registry: Option<Arc<MrRegistry>>,
    /// Whether thread domains are known to be missing (warned once).
    no_thread_domains: std::sync::atomic::AtomicBool,
    started: Option<Started>,
    promisc: bool,
    /// We set the interface's IFF_PROMISC (and clear it again).
    set_iff_promisc: bool,
    counters: PortCounters,
    rx_extra: Vec<ExtraRef>,
    tx_extra: Vec<ExtraRef>,
    missed_base: u64,
}

impl std::fmt::Debug for Mlx5Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mlx5Port")
            .field("name", &self.name)
            .field("ibdev", &self.dev.ibdev)
            .field("netdev", &self.dev.netdev)
            .field("port", &self.dev.port)
            .field("started", &self.started.is_some())
            .field(
                "flow_rules",
                &self
                    .started
                    .as_ref()
                    .map(|s| s.flows.len() + s.promisc_flows.len())
                    .unwrap_or(0),
            )
            .finish()
    }
}

impl Mlx5Port {
    /// Create the port `args` describes (`net_mlx5,iface=..`, `net_mlx5,dev=..`,
    /// or a PCI address with optional `key=value`s).
    pub fn from_devargs(args: &DevArgs, port_id: u16) -> Result<Mlx5Port> {
        let opts = Mlx5Options::from_devargs(args)?;
        Mlx5Port::open(&opts, port_id)
    }

    /// Open the device `opts` selects: load libibverbs, find the device in
    /// sysfs, open it, check its port is Ethernet, and probe that a RAW_PACKET
    /// QP may be created (so a missing capability is reported now, not at start).
    pub fn open(opts: &Mlx5Options, port_id: u16) -> Result<Mlx5Port> {
        let verbs = Verbs::load()?;
        Mlx5Port::open_with(verbs, Arc::new(Netlink), Path::new("/"), opts, port_id)
    }

    fn open_with(
        verbs: Arc<Verbs>,
        kernel: Arc<dyn Kernel>,
        root: &Path,
        opts: &Mlx5Options,
        port_id: u16,
    ) -> Result<Mlx5Port> {
        let wanted = opts.select.to_string();
        let mut dev = sysfs::resolve(root, &opts.select).map_err(|nf| Mlx5Error::NoDevice {
            wanted: wanted.clone(),
            reason: nf.reason,
            found: nf.found,
        })?;
        // The IB port that carries the interface, as RDMA netlink names it (DPDK's
        // mlx5_nl_ifindex); sysfs's dev_port + 1 is right for a single-port
        // function but not for multi-port devices (representors, bonds).
        if let Some(ifindex) = Netdev::new(root, &dev.netdev).ifindex() {
            match kernel.rdma_port(&dev.ibdev, ifindex) {
                Ok(Some(p)) => dev.port = p,
                Ok(None) => log::debug!(
                    "{}: RDMA netlink names no port for {}; using dev_port + 1 = {}",
                    dev.ibdev,
                    dev.netdev,
                    dev.port
                ),
                Err(e) => log::debug!(
                    "{}: no RDMA netlink answer ({e}); using dev_port + 1 = {}",
                    dev.ibdev,
                    dev.port
                ),
            }
        }
        let ctx = match verbs.open(&dev.ibdev) {
            Ok(Some(ctx)) => ctx,
            Ok(None) => {
                let listed = verbs.device_names().unwrap_or_default();
                return Err(Mlx5Error::NoDevice {
                    wanted,
                    reason: format!(
                        "sysfs has {} but {} does not list it (it lists: {}): the mlx5 verbs \
                         provider is missing (install ibverbs-providers) or /dev/infiniband is \
                         not available in this container",
                        dev.ibdev,
                        verbs.library,
                        if listed.is_empty() {
                            "nothing".into()
                        } else {
                            listed.join(", ")
                        }
                    ),
                    found: sysfs::list_rdma(root)
                        .iter()
                        .map(|d| d.to_string())
                        .collect(),
                });
            }
            Err(e) => {
                return Err(Mlx5Error::OpenFailed {
                    device: dev.ibdev.clone(),
                    source: e,
                });
            }
        };
        let name = dev.ibdev.clone();
        let verb = |e: VerbError| Mlx5Error::from_verb(&name, e.op, e.err);
        let attr = ctx.query_port(dev.port).map_err(verb)?;
        if attr.link_layer != IBV_LINK_LAYER_ETHERNET {
            return Err(Mlx5Error::NotEthernet {
                device: name.clone(),
                port: dev.port,
                link_layer: attr.link_layer,
            });
        }
        let limits = ctx.query_device().map_err(verb)?;
        // Probe: a RAW_PACKET QP needs CAP_NET_RAW and a capable provider.
        {
            let cq = ctx.create_cq(1).map_err(verb)?;
            ctx.create_send_qp(&cq, 1, opts.txq_inline_max as u32, dev.port, None)
                .map_err(|e| match Mlx5Error::from_verb(&name, e.op, e.err) {
                    Mlx5Error::Verbs {
                        device, op, source, ..
                    } if source.raw_os_error() == Some(libc::EINVAL) => Mlx5Error::Verbs {
                        device,
                        op,
                        source,
                        hint: Some("lower txq_inline_max (the device may allow less inline data)"),
                    },
                    other => other,
                })?;
        }
        // The device's own limit on send requests with this inline size
        // (max_qp_wr overstates it: a WQE with inline data takes several
        // blocks).
        let upper = (MAX_DESC as u32).min(limits.max_qp_wr).max(MIN_DESC as u32);
        let max_txd = ctx
            .max_send_wr(upper, opts.txq_inline_max as u32, dev.port)
            .map_err(verb)?
            .min(u16::MAX as u32) as u16;
        let fatal = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let events = match events::EventWatcher::start(ctx.clone(), name.clone(), fatal.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "{name}: cannot watch the device's events ({e}); removal goes unnoticed"
                );
                None
            }
        };
        let netdev = Netdev::new(root, &dev.netdev);
        let mac = netdev.mac().ok_or_else(|| Mlx5Error::NoDevice {
            wanted: wanted.clone(),
            reason: format!("cannot read the MAC address of {}", dev.netdev),
            found: Vec::new(),
        })?;
        log::info!(
            "{name}: port {} of {}, interface {} ({mac}), firmware {}, vendor part {}",
            dev.port,
            dev.pci.as_deref().unwrap_or("?"),
            dev.netdev,
            limits.fw_ver,
            limits.vendor_part_id
        );
        let mut port = Mlx5Port {
            name: match &opts.select {
                Selector::Iface(n) => n.clone(),
                Selector::Pci(b) => b.clone(),
            },
            opts: opts.clone(),
            root: root.to_path_buf(),
            dev,
            netdev,
            ctx,
            kernel,
            limits,
            fatal,
            _events: events,
            max_txd,
            mac,
            port_id,
            conf: None,
            mr: None,
            registry: None,
            no_thread_domains: std::sync::atomic::AtomicBool::new(false),
            started: None,
            promisc: false,
            set_iff_promisc: false,
            counters: PortCounters::default(),
            rx_extra: Vec::new(),
            tx_extra: Vec::new(),
            missed_base: 0,
        };
        port.missed_base = port.out_of_buffer();
        Ok(port)
    }

    /// The RDMA device (`mlx5_0`) and IB port number.
    pub fn rdma_device(&self) -> (&str, u8) {
        (&self.dev.ibdev, self.dev.port)
    }

    /// Whether the device was removed or hit a fatal error.
    pub fn device_gone(&self) -> bool {
        self.fatal.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The kernel network interface whose traffic the port shares.
    pub fn interface(&self) -> &str {
        &self.dev.netdev
    }

    fn err(&self, op: &'static str, reason: String) -> nicpoll::Error {
        nicpoll::Error::port(self.port_id, &self.name, op, reason)
    }

    /// A thread domain for one transmit queue: its own doorbell register and
    /// no lock in libmlx5's post path. Without one (a provider or rdma-core
    /// too old to have them) the queue still works, sharing doorbell registers
    /// under libmlx5's lock; that is said once.
    fn thread_domain(&self) -> Option<Arc<ThreadDomain>> {
        match self.ctx.alloc_thread_domain() {
            Ok(td) => Some(td),
            Err(e) => {
                if !self
                    .no_thread_domains
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    log::warn!(
                        "{}: no thread domain for the transmit queues ({}: {}); they share \
                         doorbell registers under libmlx5's lock (install rdma-core 20 or newer)",
                        self.name,
                        e.op,
                        e.err
                    );
                }
                None
            }
        }
    }

    /// The interface's IFF_PROMISC, which the vport needs to pass foreign
    /// unicast to a VF at all (DPDK's mlx5_os_set_promisc, mlx5_nl_promisc),
    /// set on `on` and cleared when we set it. A VF gets foreign frames only if
    /// its PF trusts it: say so when the PF says it does not, or cannot be
    /// asked.
    fn kernel_promisc(&mut self, on: bool) {
        let Some(ifindex) = self.netdev.ifindex() else {
            return;
        };
        if on {
            if self
                .netdev
                .flags()
                .is_some_and(|f| f & netlink::IFF_PROMISC != 0)
            {
                return;
            }
            match self.kernel.set_promisc(ifindex, true) {
                Ok(()) => self.set_iff_promisc = true,
                Err(e) => log::warn!(
                    "{}: cannot set IFF_PROMISC on {} ({e}): frames to other MACs may not reach \
                     it; grant CAP_NET_ADMIN, or run `ip link set {} promisc on`",
                    self.name,
                    self.dev.netdev,
                    self.dev.netdev
                ),
            }
            match self.vf_trusted() {
                Some(true) => {}
                Some(false) => log::warn!(
                    "{}: {} is an untrusted VF: its PF passes it no frames for other MACs, \
                     promiscuous or not; on the host: `ip link set PF vf N trust on`",
                    self.name,
                    self.dev.netdev
                ),
                None if self.netdev.is_vf() => log::warn!(
                    "{}: {} is a VF whose PF is not visible here, so its trust cannot be \
                     checked: an untrusted VF receives no frames for other MACs (host: `ip link \
                     set PF vf N trust on`)",
                    self.name,
                    self.dev.netdev
                ),
                None => {}
            }
        } else if self.set_iff_promisc {
            match self.kernel.set_promisc(ifindex, false) {
                Ok(()) => self.set_iff_promisc = false,
                Err(e) => log::warn!(
                    "{}: cannot clear IFF_PROMISC on {} ({e})",
                    self.name,
                    self.dev.netdev
                ),
            }
        }
    }

    /// Whether the PF trusts this VF (`None`: not a VF, or the PF is not here).
    fn vf_trusted(&self) -> Option<bool> {
        let (pf, vf) = self.netdev.pf_and_vf_index()?;
        let pf_ifindex = Netdev::new(&self.root, &pf).ifindex()?;
        self.kernel.vf_trust(pf_ifindex, vf).ok().flatten()
    }

    /// Why mbufs of `conf`'s pool cannot take `frame`-byte frames, and the fix.
    /// A frame must fit one mbuf: the driver posts one SGE per receive (no
    /// multi-SGE scatter; DPDK's mlx5 refuses such a configuration too unless
    /// scatter is on, `mlx5_rxq.c`), and an mbuf large enough is one
    /// `--mbuf-size` away.
    fn mbuf_too_small(&self, conf: &PortConf, frame: usize) -> String {
        let headroom = nicpoll::mbuf::DEFAULT_HEADROOM as usize;
        let need = frame + headroom;
        let mtu = self.netdev.mtu().unwrap_or(1500);
        let pf = match self.netdev.pf_mtu() {
            Some(p) if p > mtu => {
                format!(" (the PF's MTU, {p}: a VF receives up to it whatever its own MTU says)")
            }
            _ => format!(" (the MTU of {}, {mtu})", self.dev.netdev),
        };
        let fix = if need <= nicpoll::mempool::MAX_BUF_SIZE {
            format!("raise --mbuf-size to {need} or more")
        } else {
            let most = nicpoll::mempool::MAX_DATA_ROOM;
            format!(
                "--mbuf-size goes up to {} (a data room of {most} bytes) and net_mlx5 receives \
                 a frame into one mbuf, so lower the MTU to {} or less (ip link set DEV mtu N, \
                 on the PF for a VF)",
                nicpoll::mempool::MAX_BUF_SIZE,
                most - 18
            )
        };
        format!(
            "mbufs of pool {} hold {} bytes but frames of up to {frame} bytes can arrive{pf}; \
             net_mlx5 receives each frame into one mbuf: {fix}",
            conf.mempool.name(),
            conf.mempool.data_room(),
        )
    }

    fn verb_err(&self, e: VerbError) -> Mlx5Error {
        Mlx5Error::from_verb(&self.dev.ibdev, e.op, e.err)
    }

    fn out_of_buffer(&self) -> u64 {
        sysfs::hw_counters(&self.root, &self.dev.ibdev, self.dev.port)
            .into_iter()
            .find(|(n, _)| n == "hw_out_of_buffer")
            .map(|(_, v)| v)
            .unwrap_or(0)
    }

    /// The rules to create: isolated mode's `flow=` rules, or the default
    /// mode's (the interface's MAC and `mac=`, or any MAC when `promisc`).
    fn rules(&self, kinds: &[HashKind], promisc: bool) -> Vec<(HashKind, FlowRule)> {
        if self.opts.isolated {
            return steering::isolated_rules(self.dev.port, &self.opts.flows);
        }
        let macs: Vec<Option<[u8; 6]>> = if promisc {
            vec![None]
        } else {
            self.steered_macs().iter().map(|m| Some(m.0)).collect()
        };
        steering::default_rules(self.dev.port, &macs, &self.opts.vlans, kinds)
    }

    /// The unicast MACs the default mode steers: the interface's, then `mac=`.
    fn steered_macs(&self) -> Vec<MacAddr> {
        std::iter::once(self.mac)
            .chain(self.opts.macs.iter().copied().filter(|m| *m != self.mac))
            .collect()
    }

    fn create_flows(&self, hash_qps: &[(HashKind, Arc<Qp>)], promisc: bool) -> Result<Vec<Flow>> {
        let kinds: Vec<HashKind> = hash_qps.iter().map(|(k, _)| *k).collect();
        let mut flows = Vec::new();
        for (kind, rule) in self.rules(&kinds, promisc) {
            // A kind without its own hash QP (one receive queue) goes to the
            // queue-0 QP that every port has.
            let qp = hash_qps
                .iter()
                .find(|(k, _)| *k == kind)
                .or_else(|| hash_qps.iter().find(|(k, _)| *k == HashKind::Eth))
                .map(|(_, qp)| qp)
                .expect("the Eth hash QP exists whenever there is a receive queue");
            flows.push(
                self.ctx
                    .create_flow(qp, &rule)
                    .map_err(|e| self.verb_err(e))?,
            );
        }
        Ok(flows)
    }

    /// What the port takes from the kernel, as said at start.
    pub fn steering_summary(&self) -> String {
        steering::summary(
            &self.dev.netdev,
            self.mac,
            &self.steered_macs()[1..],
            &self.opts.vlans,
            if self.opts.isolated {
                &self.opts.flows
            } else {
                &[]
            },
            self.promisc,
        )
    }

    fn start_inner(&mut self) -> Result<(PortQueues, Started)> {
        let (conf, rxd, txd) = self.conf.clone().expect("checked by start");
        let mr = self.mr.clone().expect("registered by configure");
        let pool: Mempool = conf.mempool.clone();
        let alive = Arc::new(());
        let mut queues = PortQueues::default();
        let mut wqs: Vec<Arc<Wq>> = Vec::new();
        for q in 0..conf.nb_rxq {
            let cq = self
                .ctx
                .create_cq(rxd as u32)
                .map_err(|e| self.verb_err(e))?;
            let wq = self
                .ctx
                .create_wq(&cq, rxd as u32)
                .map_err(|e| self.verb_err(e))?;
            let rq = RecvQueue::new(
                wq.clone(),
                mr.clone(),
                rxd as usize,
                pool.data_room() as u32,
            );
            let ring = RxRing::new(
                rq,
                cq.poller().expect("a new CQ has its poller"),
                pool.clone(),
                conf.port_id,
                q,
                self.counters.rx(q as usize),
                self.rx_extra[q as usize].clone(),
                alive.clone(),
            )
            .map_err(|e| match e {
                RingError::NoBuffers { needed, available } => Mlx5Error::Verbs {
                    device: self.dev.ibdev.clone(),
                    op: format!("filling receive queue {q}"),
                    source: std::io::Error::from_raw_os_error(libc::ENOBUFS),
                    hint: Some(if available < needed as u64 {
                        "the mempool has fewer free mbufs than the receive rings need: raise \
                         --total-num-mbufs or lower --rxd/--rxq"
                    } else {
                        "the mempool ran short while filling the receive rings"
                    }),
                },
                RingError::Post(errno) => Mlx5Error::Verbs {
                    device: self.dev.ibdev.clone(),
                    op: format!("ibv_post_wq_recv on receive queue {q}"),
                    source: std::io::Error::from_raw_os_error(errno),
                    hint: None,
                },
            })?;
            let mut ring = ring;
            if conf.max_rx_pktlen != 0 {
                ring.set_max_len(conf.max_rx_pktlen);
            }
            wqs.push(wq);
            queues.rx.push(Box::new(ring) as Box<dyn RxQueue>);
        }
        let mut hash_qps: Vec<(HashKind, Arc<Qp>)> = Vec::new();
        if !wqs.is_empty() {
            let first: Arc<IndTable> = self
                .ctx
                .create_ind_table(&wqs[..1])
                .map_err(|e| self.verb_err(e))?;
            let spread: Option<Arc<IndTable>> = if wqs.len() > 1 {
                let n = wqs.len().next_power_of_two();
                let entries: Vec<Arc<Wq>> = (0..n).map(|i| wqs[i % wqs.len()].clone()).collect();
                Some(
                    self.ctx
                        .create_ind_table(&entries)
                        .map_err(|e| self.verb_err(e))?,
                )
            } else {
                None
            };
            for kind in HashKind::for_queues(conf.nb_rxq) {
                let table = match (kind, &spread) {
                    (HashKind::Eth, _) | (_, None) => &first,
                    (_, Some(t)) => t,
                };
                let qp = self
                    .ctx
                    .create_rss_qp(table, kind.fields())
                    .map_err(|e| self.verb_err(e))?;
                hash_qps.push((*kind, qp));
            }
        }
        let flows = self.create_flows(&hash_qps, false)?;
        if !hash_qps.is_empty() {
            if self.opts.isolated {
                log::info!("{}: {}", self.name, self.steering_summary());
            } else {
                log::warn!("{}: {}", self.name, self.steering_summary());
            }
        }
        let promisc_flows = if self.promisc && !hash_qps.is_empty() && !self.opts.isolated {
            self.create_flows(&hash_qps, true)?
        } else {
            Vec::new()
        };
        let mut started = Started {
            alive: alive.clone(),
            hash_qps,
            flows,
            promisc_flows,
            fdb_added: Vec::new(),
        };
        let registry = self.registry.clone().expect("registered by configure");
        for q in 0..conf.nb_txq {
            let domain = self.thread_domain();
            let cq = self
                .ctx
                .create_cq(txd as u32)
                .map_err(|e| self.verb_err(e))?;
            let qp = self
                .ctx
                .create_send_qp(
                    &cq,
                    txd as u32,
                    self.opts.txq_inline_max as u32,
                    self.dev.port,
                    domain.as_ref(),
                )
                .map_err(|e| self.verb_err(e))?;
            let sq = SendQueue::new(
                qp,
                txd as usize,
                self.opts.txq_inline_max as u32,
                TX_SIGNAL_EVERY,
            );
            let ring = TxRing::new(
                sq,
                cq.poller().expect("a new CQ has its poller"),
                &mr,
                registry.clone(),
                self.counters.tx(q as usize),
                self.tx_extra[q as usize].clone(),
                alive.clone(),
            );
            queues.tx.push(Box::new(ring) as Box<dyn TxQueue>);
        }
        // Last: nothing can fail after it, so no FDB entry outlives a failed start.
        if !started.hash_qps.is_empty() {
            self.fdb_add(&mut started);
        }
        Ok((queues, started))
    }

    /// Extra MACs must pass the vport's unicast filter: add them to the
    /// interface's FDB (as DPDK's mlx5 does). A failure is not fatal (a trusted
    /// VF in promiscuous mode passes them anyway), but it is logged with the fix.
    fn fdb_add(&self, started: &mut Started) {
        let wanted: Vec<MacAddr> = if self.opts.isolated {
            self.opts
                .flows
                .iter()
                .filter_map(|f| f.dst_mac.map(MacAddr))
                .filter(|m| !m.is_multicast())
                .collect()
        } else {
            self.opts.macs.clone()
        };
        let mut extra: Vec<MacAddr> = Vec::new();
        for m in wanted {
            if m != self.mac && !extra.contains(&m) {
                extra.push(m);
            }
        }
        if extra.is_empty() {
            return;
        }
        let Some(ifindex) = self.netdev.ifindex() else {
            log::warn!(
                "{}: no ifindex for {}; mac= addresses not added to its FDB",
                self.name,
                self.dev.netdev
            );
            return;
        };
        for m in extra {
            match self.kernel.fdb(ifindex, m.0, true) {
                Ok(()) => started.fdb_added.push(m.0),
                Err(e) if nicpoll::netdev::netlink::errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => log::warn!(
                    "{}: cannot add {m} to the FDB of {} ({e}): frames to it may not reach this \
                     function; grant CAP_NET_ADMIN, or run `bridge fdb add {m} dev {} self`",
                    self.name,
                    self.dev.netdev,
                    self.dev.netdev
                ),
            }
        }
    }

    fn teardown(&mut self, started: Started) {
        if let Some(ifindex) = self.netdev.ifindex() {
            for m in &started.fdb_added {
                if let Err(e) = self.kernel.fdb(ifindex, *m, false) {
                    log::warn!(
                        "{}: cannot remove {} from the FDB of {}: {e}",
                        self.name,
                        MacAddr(*m),
                        self.dev.netdev
                    );
                }
            }
        }
        drop(started);
    }
}

impl Port for Mlx5Port {
    fn info(&self) -> PortInfo {
        let max_desc = MAX_DESC
            .min(self.limits.max_qp_wr.min(u16::MAX as u32) as u16)
            .min(self.limits.max_cqe.min(u16::MAX as u32) as u16)
            .max(MIN_DESC);
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: MAX_QUEUES,
            max_tx_queues: MAX_QUEUES,
            default_rxd: DEFAULT_DESC.min(max_desc),
            default_txd: DEFAULT_DESC.min(max_desc),
            min_rxd: MIN_DESC,
            max_rxd: max_desc,
            min_txd: MIN_DESC,
            max_txd: max_desc.min(self.max_txd).max(MIN_DESC),
            desc_align: 1,
            // A VF receives up to its PF's MTU; FCS stripped, a VLAN tag kept.
            max_rx_pktlen: self
                .netdev
                .mtu()
                .unwrap_or(1500)
                .max(self.netdev.pf_mtu().unwrap_or(0))
                + 18,
            rx_scatter: false,
            tx_multi_seg: false,
            numa_node: self.netdev.numa_node(),
        }
    }

    fn configure(&mut self, conf: &PortConf) -> nicpoll::Result<()> {
        nicpoll::port::ensure_stopped(self.started.is_some(), self.port_id, &self.name)?;
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        let same_pool = self
            .mr
            .as_ref()
            .is_some_and(|m| m.start == conf.mempool.region().as_ptr() as usize);
        if !same_pool {
            self.mr = None;
            self.registry = None;
            let mr = self.ctx.reg_mr(&conf.mempool).map_err(|e| {
                let e = Mlx5Error::RegisterMemory {
                    device: self.dev.ibdev.clone(),
                    bytes: conf.mempool.region().len(),
                    source: e.err,
                };
                self.err("configure", e.to_string())
            })?;
            self.registry = Some(Arc::new(MrRegistry::new(self.ctx.clone(), mr.clone())));
            self.mr = Some(mr);
        }
        let frame = self.info().max_rx_pktlen as usize;
        if conf.nb_rxq > 0 && conf.mempool.data_room() < frame {
            return Err(self.err("configure", self.mbuf_too_small(conf, frame)));
        }
        port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        self.rx_extra = (0..conf.nb_rxq)
            .map(|_| Arc::new(QueueExtra::default()))
            .collect();
        self.tx_extra = (0..conf.nb_txq)
            .map(|_| Arc::new(QueueExtra::default()))
            .collect();
        self.port_id = conf.port_id;
        self.conf = Some((conf.clone(), rxd, txd));
        Ok(())
    }

    fn start(&mut self) -> nicpoll::Result<PortQueues> {
        if self.device_gone() {
            return Err(self.err(
                "start",
                format!(
                    "{} is gone (removed, or a fatal error): open the port again once it is back",
                    self.dev.ibdev
                ),
            ));
        }
        if self.conf.is_none() {
            return Err(self.err("start", "the port is not configured".into()));
        }
        if self.started.is_some() {
            return Err(self.err("start", "the port is already started".into()));
        }
        let (queues, started) = self
            .start_inner()
            .map_err(|e| self.err("start", e.to_string()))?;
        self.started = Some(started);
        Ok(queues)
    }

    fn stop(&mut self) -> nicpoll::Result<()> {
        let Some(s) = &self.started else {
            return Ok(());
        };
        if Arc::strong_count(&s.alive) > 1 {
            return Err(self.err(
                "stop",
                "its queues are still in use; drop the queues handed out by start first".into(),
            ));
        }
        let s = self.started.take().expect("checked above");
        self.teardown(s);
        Ok(())
    }

    fn is_started(&self) -> bool {
        self.started.is_some()
    }

    fn link(&self) -> Link {
        if self.device_gone() {
            return Link::default();
        }
        self.netdev.link()
    }

    fn mac_addr(&self) -> MacAddr {
        self.mac
    }

    fn promiscuous(&self) -> bool {
        self.promisc
    }

    fn set_promiscuous(&mut self, on: bool) -> nicpoll::Result<()> {
        if on == self.promisc {
            return Ok(());
        }
        if on && self.opts.isolated {
            // DPDK's mlx5 ignores it in isolated mode (mlx5_rxmode.c); saying so
            // is clearer than a switch that does nothing.
            return Err(self.err(
                "promiscuous",
                "isolated mode takes only what flow= names; promiscuous mode would take every \
                 frame from the kernel (drop isolated=1 to use it)"
                    .into(),
            ));
        }
        if let Some(s) = &self.started {
            if on && !s.hash_qps.is_empty() {
                let flows = self
                    .create_flows(&s.hash_qps, true)
                    .map_err(|e| self.err("promiscuous", e.to_string()))?;
                self.started.as_mut().expect("started").promisc_flows = flows;
            } else {
                self.started
                    .as_mut()
                    .expect("started")
                    .promisc_flows
                    .clear();
            }
        }
        self.kernel_promisc(on);
        self.promisc = on;
        Ok(())
    }

    fn stats(&self) -> PortStats {
        let mut s = self.counters.stats();
        s.imissed += self.out_of_buffer().saturating_sub(self.missed_base);
        s
    }

    fn reset_stats(&mut self) {
        self.counters.reset();
        self.missed_base = self.out_of_buffer();
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        let mut v = self.counters.xstats();
        let imissed = self.stats().imissed;
        for (n, val) in v.iter_mut() {
            if n == "rx_missed_errors" {
                *val = imissed;
            }
        }
        let extra = |v: &mut Vec<(String, u64)>, dir: &str, q: usize, e: &QueueExtra| {
            for (name, c) in [
                ("bad_status", &e.bad_status),
                ("bad_length", &e.bad_length),
                ("too_long", &e.too_long),
                ("bad_wr_id", &e.bad_wr_id),
                ("recoveries", &e.recoveries),
                ("dead", &e.dead),
                ("post_errors", &e.post_errors),
                ("poll_errors", &e.poll_errors),
                ("inline", &e.inline),
                ("unsendable", &e.unsendable),
                ("mr_registered", &e.mr_registered),
            ] {
                v.push((format!("{dir}_q{q}_{name}"), c.get()));
            }
        };
        for (q, e) in self.rx_extra.iter().enumerate() {
            extra(&mut v, "rx", q, e);
        }
        for (q, e) in self.tx_extra.iter().enumerate() {
            extra(&mut v, "tx", q, e);
        }
        v.push(("device_fatal".into(), self.device_gone() as u64));
        v.extend(sysfs::hw_counters(
            &self.root,
            &self.dev.ibdev,
            self.dev.port,
        ));
        v.extend(self.netdev.statistics());
        v
    }
}

impl Drop for Mlx5Port {
    fn drop(&mut self) {
        if let Some(s) = self.started.take() {
            self.teardown(s);
        }
        if self.set_iff_promisc {
            self.kernel_promisc(false);
        }
    }
}

#[cfg(test)]
mod tests;
