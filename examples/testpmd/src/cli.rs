//! The command line: `testpmd [EAL options] -- [application options]`, parsed
//! with dpdk-testpmd's option names so existing runbooks work unchanged where the
//! feature exists. Options dpdk-testpmd has and we do not (yet) are known by
//! name and rejected with a reason, never silently ignored.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::Parser;
use nicpoll::fwd::{FwdMode, RetryConfig, TxPacketConfig};
use nicpoll::lcore::{self, LcoreSet};
use nicpoll::memory::{IovaMode, MemoryConfig};
use nicpoll::pci::PciAddress;
use nicpoll::port::{DevArgs, MacAddr};

/// A usage error: printed with the option it concerns, exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// EAL options (before `--`).
#[derive(Parser, Debug)]
#[command(
    name = "testpmd",
    about = "nicpoll testpmd: forward packets between ports and measure them (dpdk-testpmd compatible)",
    after_help = "Application options follow `--`; see `testpmd -- --help`.\n\
                  Run without any argument for a self-contained demo on in-memory ports.",
    disable_version_flag = true
)]
pub struct EalArgs {
    /// CPU list of the lcores to use, e.g. 0-3 or 0,2; the first is the main lcore.
    #[arg(short = 'l', value_name = "CORELIST")]
    pub corelist: Option<String>,
    /// Hexadecimal mask of the lcores to use, e.g. 0x3.
    #[arg(short = 'c', value_name = "COREMASK")]
    pub coremask: Option<String>,
    /// Lcore to CPU map, e.g. 0@0,1@1 or (0-1)@(2,3).
    #[arg(long = "lcores", value_name = "MAP")]
    pub lcores: Option<String>,
    /// The lcore that runs control and statistics (default: the first).
    #[arg(long = "main-lcore", value_name = "ID")]
    pub main_lcore: Option<u32>,
    /// Add a virtual device, e.g. net_null0,size=64 or net_ring0,peer=net_ring1.
    #[arg(long = "vdev", value_name = "DEVICE")]
    pub vdev: Vec<String>,
    /// PCI device to use, bound to vfio-pci (BDF[,devargs], e.g. 0000:00:03.0 or
    /// 0000:00:03.0,speed=10000); repeatable. `testpmd bind BDF` binds one.
    #[arg(short = 'a', long = "allow", value_name = "BDF")]
    pub allow: Vec<String>,
    /// Block a PCI device.
    #[arg(short = 'b', long = "block", value_name = "BDF", hide = true)]
    pub block: Vec<String>,
    /// Use no PCI device (accepted: nicpoll only touches devices it is given).
    #[arg(long = "no-pci")]
    pub no_pci: bool,
    /// Memory channels (accepted for compatibility; nicpoll's allocator has no use for it).
    #[arg(short = 'n', value_name = "N")]
    pub channels: Option<u32>,
    /// DMA memory limit in MiB.
    #[arg(short = 'm', value_name = "MB")]
    pub mem_mb: Option<String>,
    /// DMA memory limit per NUMA node in MiB (summed: nicpoll allocates on the local node).
    #[arg(long = "socket-mem", value_name = "MB,MB")]
    pub socket_mem: Option<String>,
    /// Directory on the hugetlbfs mount to use.
    #[arg(long = "huge-dir", value_name = "DIR")]
    pub huge_dir: Option<PathBuf>,
    /// Use plain memory instead of hugepages (software ports only).
    #[arg(long = "no-huge")]
    pub no_huge: bool,
    /// Prefix of the hugepage files (run several instances side by side).
    #[arg(long = "file-prefix", value_name = "NAME")]
    pub file_prefix: Option<String>,
    /// Remove hugepage files right after mapping them.
    #[arg(long = "huge-unlink", num_args = 0..=1, default_missing_value = "always", value_name = "MODE")]
    pub huge_unlink: Option<String>,
    /// Keep no files at all (same as --huge-unlink here).
    #[arg(long = "in-memory")]
    pub in_memory: bool,
    /// How devices address memory: va, pa or dc.
    #[arg(long = "iova-mode", value_name = "MODE")]
    pub iova_mode: Option<String>,
    /// Log level: a level (error, warning, info, debug) or TYPE:LEVEL pairs.
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Vec<String>,
    /// No telemetry socket (accepted: nicpoll has none; see --stats-format json).
    #[arg(long = "no-telemetry")]
    pub no_telemetry: bool,
    /// No shared configuration (accepted: nicpoll has none).
    #[arg(long = "no-shconf")]
    pub no_shconf: bool,
    /// Process type: only `primary` (or `auto`) is supported.
    #[arg(long = "proc-type", value_name = "TYPE")]
    pub proc_type: Option<String>,
    /// Unsupported EAL options, rejected by name.
    #[arg(long = "telemetry", hide = true)]
    pub telemetry: bool,
    #[arg(short = 'd', hide = true)]
    pub driver_path: Vec<String>,
    #[arg(long = "legacy-mem", hide = true)]
    pub legacy_mem: bool,
    #[arg(long = "single-file-segments", hide = true)]
    pub single_file_segments: bool,
    #[arg(long = "vfio-intr", hide = true)]
    pub vfio_intr: Option<String>,
    #[arg(long = "vfio-vf-token", hide = true)]
    pub vfio_vf_token: Option<String>,
    #[arg(long = "socket-limit", hide = true)]
    pub socket_limit: Option<String>,
    #[arg(long = "base-virtaddr", hide = true)]
    pub base_virtaddr: Option<String>,
    #[arg(long = "match-allocations", hide = true)]
    pub match_allocations: bool,
    /// Application options (after `--`).
    #[arg(last = true, allow_hyphen_values = true, value_name = "APP OPTIONS")]
    pub app: Vec<String>,
}

/// Application options (after `--`).
#[derive(Parser, Debug)]
#[command(
    name = "testpmd --",
    no_binary_name = true,
    disable_version_flag = true,
    about = "testpmd application options"
)]
pub struct AppArgs {
    /// Interactive prompt.
    #[arg(short = 'i', long = "interactive")]
    pub interactive: bool,
    /// Start forwarding at once (always the case without -i).
    #[arg(short = 'a', long = "auto-start")]
    pub auto_start: bool,
    /// Send one burst of txonly packets on every stream before forwarding.
    #[arg(long = "tx-first")]
    pub tx_first: bool,
    /// Print port statistics every N seconds (fractions allowed).
    #[arg(long = "stats-period", value_name = "SECONDS")]
    pub stats_period: Option<f64>,
    /// `text` (testpmd's blocks) or `json` (one object per line, for tools).
    #[arg(long = "stats-format", value_name = "FORMAT", default_value = "text")]
    pub stats_format: String,
    /// Stop by itself after this many seconds (nicpoll).
    #[arg(long = "run-time", value_name = "SECONDS")]
    pub run_time: Option<f64>,
    /// Stop by itself after this many packets were received (or sent, by
    /// generators) over all streams (nicpoll).
    #[arg(long = "max-packets", value_name = "N")]
    pub max_packets: Option<u64>,
    /// Forwarding mode: io, mac, macswap, flowgen, rxonly, txonly, icmpecho, 5tswap.
    #[arg(long = "forward-mode", value_name = "MODE", default_value = "io")]
    pub forward_mode: String,
    /// Retry transmits that did not take every packet (`set fwd MODE retry`) (nicpoll).
    #[arg(long = "tx-retry")]
    pub tx_retry: bool,
    /// Retries per burst when --tx-retry is on (default 64).
    #[arg(long = "tx-retry-num", value_name = "N")]
    pub tx_retry_num: Option<u32>,
    /// Microseconds between retries (default 1).
    #[arg(long = "tx-retry-delay", value_name = "US")]
    pub tx_retry_delay: Option<u32>,
    /// Number of forwarding lcores.
    #[arg(long = "nb-cores", value_name = "N")]
    pub nb_cores: Option<usize>,
    /// Number of forwarding ports.
    #[arg(long = "nb-ports", value_name = "N")]
    pub nb_ports: Option<usize>,
    /// Hexadecimal mask of the forwarding ports.
    #[arg(long = "portmask", value_name = "MASK")]
    pub portmask: Option<String>,
    /// List of the forwarding ports, e.g. 0,2-3.
    #[arg(long = "portlist", value_name = "LIST")]
    pub portlist: Option<String>,
    /// paired (0<->1, 2<->3), chained (0->1->2->0) or loop (rx and tx on one port).
    #[arg(
        long = "port-topology",
        value_name = "TOPOLOGY",
        default_value = "paired"
    )]
    pub port_topology: String,
    /// Receive queues per port.
    #[arg(long = "rxq", value_name = "N", default_value_t = 1)]
    pub rxq: u16,
    /// Transmit queues per port.
    #[arg(long = "txq", value_name = "N", default_value_t = 1)]
    pub txq: u16,
    /// Receive ring size (0: the driver's default).
    #[arg(long = "rxd", value_name = "N", default_value_t = 0)]
    pub rxd: u16,
    /// Transmit ring size (0: the driver's default).
    #[arg(long = "txd", value_name = "N", default_value_t = 0)]
    pub txd: u16,
    /// Packets per burst, 1 to 512.
    #[arg(long = "burst", value_name = "N", default_value_t = 32)]
    pub burst: usize,
    /// Buffer size per mbuf after its header: headroom plus data room, up to 65535.
    #[arg(long = "mbuf-size", value_name = "N")]
    pub mbuf_size: Option<u32>,
    /// Number of mbufs in the pool (at least 1024).
    #[arg(long = "total-num-mbufs", value_name = "N")]
    pub total_num_mbufs: Option<u32>,
    /// Per-lcore mempool cache, 0 to 512.
    #[arg(long = "mbcache", value_name = "N")]
    pub mbcache: Option<u32>,
    /// Peer MAC of a port: PORT,XX:XX:XX:XX:XX:XX (repeatable).
    #[arg(long = "eth-peer", value_name = "PORT,MAC")]
    pub eth_peer: Vec<String>,
    /// File with one peer MAC per line, for ports 0, 1, ...
    #[arg(long = "eth-peers-configfile", value_name = "FILE")]
    pub eth_peers_configfile: Option<PathBuf>,
    /// Length of generated packets in bytes; X,Y,...: segment lengths of a multi-segment packet.
    #[arg(long = "txpkts", value_name = "LEN[,LEN...]")]
    pub txpkts: Option<String>,
    /// Longest frame received, FCS included (64 to 65535; default: each port's own limit).
    #[arg(long = "max-pkt-len", value_name = "N")]
    pub max_pkt_len: Option<u32>,
    /// Source and destination IPv4 of generated packets: SRC,DST.
    #[arg(long = "tx-ip", value_name = "SRC,DST")]
    pub tx_ip: Option<String>,
    /// UDP ports of generated packets: SRC[,DST].
    #[arg(long = "tx-udp", value_name = "SRC[,DST]")]
    pub tx_udp: Option<String>,
    /// Vary the UDP source port of txonly packets.
    #[arg(long = "txonly-multi-flow")]
    pub txonly_multi_flow: bool,
    /// Number of flows flowgen cycles through.
    #[arg(long = "flowgen-flows", value_name = "N")]
    pub flowgen_flows: Option<u32>,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 0.0.0.0:9100 (nicpoll).
    #[arg(long = "metrics", value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Do not stamp generated packets nor record latency on receive (nicpoll).
    #[arg(long = "no-latency")]
    pub no_latency: bool,
    /// Do not drain receive queues before forwarding starts.
    #[arg(long = "no-flush-rx")]
    pub no_flush_rx: bool,
    /// Do not wait for the links to come up at start.
    #[arg(long = "disable-link-check")]
    pub disable_link_check: bool,
    /// Accepted: software ports raise no link-state interrupt.
    #[arg(long = "no-lsc-interrupt")]
    pub no_lsc_interrupt: bool,
    /// Accepted: software ports raise no removal interrupt.
    #[arg(long = "no-rmv-interrupt")]
    pub no_rmv_interrupt: bool,
    /// Accepted: nicpoll allocates on the local NUMA node.
    #[arg(long = "no-numa")]
    pub no_numa: bool,
    /// Count receive and transmit calls by the number of packets they moved;
    /// the forward statistics then show the share of empty receives and of
    /// the two most frequent burst sizes (RX-bursts, TX-bursts lines).
    #[arg(long = "record-burst-stats")]
    pub record_burst_stats: bool,
    // dpdk-testpmd options not supported yet: known by name, rejected with a reason.
    /// Run the commands of this file at start (interactive mode).
    #[arg(long = "cmdline-file", value_name = "FILE")]
    pub cmdline_file: Option<PathBuf>,
    #[arg(long = "record-core-cycles", hide = true)]
    pub record_core_cycles: bool,
    #[arg(long = "rss-ip", hide = true)]
    pub rss_ip: bool,
    #[arg(long = "rss-udp", hide = true)]
    pub rss_udp: bool,
    #[arg(long = "disable-rss", hide = true)]
    pub disable_rss: bool,
    #[arg(long = "enable-rss", hide = true)]
    pub enable_rss: bool,
    #[arg(long = "enable-rx-cksum", hide = true)]
    pub enable_rx_cksum: bool,
    /// Accepted: ports that can receive a frame into several mbufs do so when it does not fit one.
    #[arg(long = "enable-scatter")]
    pub enable_scatter: bool,
    #[arg(long = "flowgen-clones", hide = true)]
    pub flowgen_clones: Option<String>,
    #[arg(long = "mp-alloc", hide = true)]
    pub mp_alloc: Option<String>,
    #[arg(long = "display-xstats", hide = true)]
    pub display_xstats: Option<String>,
    #[arg(long = "flow-isolate-all", hide = true)]
    pub flow_isolate_all: bool,
    #[arg(long = "rx-offloads", hide = true)]
    pub rx_offloads: Option<String>,
    #[arg(long = "tx-offloads", hide = true)]
    pub tx_offloads: Option<String>,
    #[arg(long = "num-procs", hide = true)]
    pub num_procs: Option<String>,
    #[arg(long = "proc-id", hide = true)]
    pub proc_id: Option<String>,
}

/// Which ports a stream pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// 0<->1, 2<->3.
    Paired,
    /// 0->1->2->0.
    Chained,
    /// Each port to itself.
    Loop,
}

/// How statistics are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    /// testpmd's text blocks.
    Text,
    /// One JSON object per line.
    Json,
}

/// A PCI device given with `-a BDF[,devargs]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciSpec {
    /// Its address.
    pub addr: PciAddress,
    /// The whole argument; `name` is the address as typed, `args` the device arguments.
    pub args: DevArgs,
}

/// Parse one `-a` value.
pub fn parse_pci_spec(value: &str) -> Result<PciSpec, UsageError> {
    let args = DevArgs::parse(value).map_err(|e| usage(format!("-a: {e}")))?;
    let addr = PciAddress::parse(&args.name).map_err(|e| usage(format!("-a {value:?}: {e}")))?;
    Ok(PciSpec { addr, args })
}

/// Everything a run needs, checked.
#[derive(Debug)]
pub struct Config {
    pub lcores: LcoreSet,
    /// PCI devices (`-a`), in order: they get the first port ids.
    pub pci: Vec<PciSpec>,
    pub vdevs: Vec<DevArgs>,
    pub memory: MemoryConfig,
    pub log_level: Option<String>,
    pub mode: FwdMode,
    pub retry: RetryConfig,
    pub burst: usize,
    pub nb_cores: Option<usize>,
    pub port_select: PortSelect,
    pub topology: Topology,
    pub rxq: u16,
    pub txq: u16,
    pub rxd: u16,
    pub txd: u16,
    pub mbuf_buf_size: Option<u32>,
    /// `--max-pkt-len`: the longest frame received, FCS included (DPDK's).
    pub max_pkt_len: Option<u32>,
    pub total_num_mbufs: Option<u32>,
    pub mbcache: u32,
    pub eth_peers: BTreeMap<u16, MacAddr>,
    pub tx: TxPacketConfig,
    pub latency: bool,
    /// `--record-burst-stats` / `set record-burst-stats on|off` (from the
    /// next `start`).
    pub record_burst_stats: bool,
    pub tx_first: bool,
    pub stats_period: Option<f64>,
    pub stats_format: StatsFormat,
    pub run_time: Option<f64>,
    pub max_packets: Option<u64>,
    pub flush_rx: bool,
    pub link_check: bool,
    /// The built-in demo (no arguments at all).
    pub demo: bool,
    /// `-i`: the interactive prompt.
    pub interactive: bool,
    /// `-a`: start forwarding at once (interactive mode; always without -i).
    pub auto_start: bool,
    /// `--cmdline-file`.
    pub cmdline_file: Option<PathBuf>,
    /// `--metrics ADDR`.
    pub metrics: Option<String>,
    /// What entrypoint mode derived from the pod, when it was used.
    pub entrypoint: Option<crate::entrypoint::Derived>,
}

/// Which ports forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSelect {
    /// Every port.
    All,
    /// The first N (`--nb-ports`).
    First(usize),
    /// These (`--portmask`, `--portlist`).
    List(Vec<u16>),
}

/// The demo's arguments: two simulated X710 VFs (the real iavf driver against
/// nicpoll's device model) wired back to back, io forwarding primed with one
/// burst per stream, live statistics, ten seconds.
pub const DEMO_ARGS: &[&str] = &[
    "--vdev",
    "net_iavf_sim0,peer=net_iavf_sim1",
    "--vdev",
    "net_iavf_sim1,peer=net_iavf_sim0",
    "--",
    "--forward-mode=io",
    "--tx-first",
    "--stats-period=1",
    "--run-time=10",
];

fn reject(name: &str, why: &str) -> UsageError {
    usage(format!("option {name} is not supported yet: {why}"))
}

/// Parse a full command line (without the program name).
pub fn parse(args: &[String]) -> Result<Config, ParseOutcome> {
    let demo = args.is_empty();
    let owned: Vec<String> = if demo {
        DEMO_ARGS.iter().map(|s| s.to_string()).collect()
    } else {
        args.to_vec()
    };
    let eal = EalArgs::try_parse_from(
        std::iter::once("testpmd".to_string()).chain(owned.iter().cloned()),
    )
    .map_err(ParseOutcome::Clap)?;
    let app = AppArgs::try_parse_from(eal.app.iter().cloned()).map_err(ParseOutcome::Clap)?;
    build(eal, app, demo).map_err(ParseOutcome::Usage)
}

/// Why parsing did not produce a configuration.
#[derive(Debug)]
pub enum ParseOutcome {
    /// clap's own error or help text (it knows its exit status).
    Clap(clap::Error),
    /// One of our checks failed.
    Usage(UsageError),
}

/// `--txpkts` / `set txpkts`: one length, or the segment lengths of a
/// multi-segment packet (`X,Y,...`, at most 255 as DPDK's
/// RTE_MAX_SEGS_PER_PKT); (total, segments if more than one). Each segment
/// must also fit an mbuf, checked once the pool exists.
pub fn parse_txpkts(value: &str) -> Result<(u16, Vec<u16>), String> {
    let segs: Vec<u32> = value
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    format!(
                        "{value}: {p:?} is not a length; expected LEN[,LEN...] like 64 or 14,50"
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    if segs.len() > nicpoll::mbuf::MAX_SEGS {
        return Err(format!(
            "{value}: {} segments; at most {}",
            segs.len(),
            nicpoll::mbuf::MAX_SEGS
        ));
    }
    let total: u32 = segs.iter().sum();
    let min = nicpoll::fwd::txonly::MIN_LEN as u32;
    if !(min..=65535).contains(&total) {
        return Err(format!(
            "{value}: a frame of {total} bytes; give {min} (Ethernet + IPv4 + UDP headers) \
             to 65535 in all"
        ));
    }
    let segs: Vec<u16> = segs.into_iter().map(|s| s as u16).collect();
    Ok((total as u16, if segs.len() > 1 { segs } else { Vec::new() }))
}

/// What a `--txpkts` of segments (or one length) needs of the mbufs: each
/// segment within the data room.
pub fn check_txpkts_fit(tx: &TxPacketConfig, data_room: usize) -> Result<(), String> {
    let longest = tx.segs.iter().copied().max().unwrap_or(tx.len) as usize;
    if longest <= data_room {
        return Ok(());
    }
    let fix = if tx.segs.is_empty() {
        let k = (tx.len as usize).div_ceil(data_room);
        format!(
            "raise --mbuf-size to {} or give segments, e.g. --txpkts={}",
            tx.len as usize + nicpoll::mbuf::DEFAULT_HEADROOM as usize,
            (0..k)
                .map(|i| (tx.len as usize - i * data_room).min(data_room).to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    } else {
        format!(
            "raise --mbuf-size to {}",
            longest + nicpoll::mbuf::DEFAULT_HEADROOM as usize
        )
    };
    Err(format!(
        "a segment of {longest} bytes does not fit the {data_room}-byte data room of an mbuf: {fix}"
    ))
}

fn parse_u32_list(value: &str, option: &str, form: &str) -> Result<Vec<u32>, UsageError> {
    value
        .split(',')
        .map(|p| {
            p.trim().parse::<u32>().map_err(|_| {
                usage(format!(
                    "{option} {value:?}: {p:?} is not a number; expected {form}"
                ))
            })
        })
        .collect()
}

fn build(eal: EalArgs, app: AppArgs, demo: bool) -> Result<Config, UsageError> {
    // Known but unsupported options first: rejected by name.
    let unsupported: &[(bool, &str, &str)] = &[
        (
            eal.telemetry,
            "--telemetry",
            "nicpoll has no telemetry socket; use --stats-format json",
        ),
        (
            !eal.driver_path.is_empty(),
            "-d",
            "drivers are built in; there is nothing to load",
        ),
        (
            !eal.block.is_empty(),
            "-b/--block",
            "nicpoll uses only the devices given with -a or --vdev",
        ),
        (
            eal.legacy_mem,
            "--legacy-mem",
            "memory is always allocated on demand",
        ),
        (
            eal.single_file_segments,
            "--single-file-segments",
            "each allocation is its own file",
        ),
        (
            eal.vfio_intr.is_some(),
            "--vfio-intr",
            "the VFIO layer comes with PCI device support",
        ),
        (
            eal.vfio_vf_token.is_some(),
            "--vfio-vf-token",
            "the VFIO layer comes with PCI device support",
        ),
        (
            eal.socket_limit.is_some(),
            "--socket-limit",
            "use -m to limit memory",
        ),
        (
            eal.base_virtaddr.is_some(),
            "--base-virtaddr",
            "there is no secondary process to share addresses with",
        ),
        (
            eal.match_allocations,
            "--match-allocations",
            "memory is never freed back during a run",
        ),
        (
            app.record_core_cycles,
            "--record-core-cycles",
            "use the benchmark scripts (benches/) for cost per packet",
        ),
        (app.rss_ip, "--rss-ip", "no port with RSS exists yet"),
        (app.rss_udp, "--rss-udp", "no port with RSS exists yet"),
        (
            app.disable_rss,
            "--disable-rss",
            "no port with RSS exists yet",
        ),
        (
            app.enable_rss,
            "--enable-rss",
            "no port with RSS exists yet",
        ),
        (
            app.enable_rx_cksum,
            "--enable-rx-cksum",
            "checksum offloads are not supported",
        ),
        (
            app.flowgen_clones.is_some(),
            "--flowgen-clones",
            "mbufs have no reference count by design",
        ),
        (
            app.mp_alloc.is_some(),
            "--mp-alloc",
            "mempools always come from nicpoll's DMA memory",
        ),
        (
            app.display_xstats.is_some(),
            "--display-xstats",
            "extended statistics are shown by port, not in the periodic block",
        ),
        (
            app.flow_isolate_all,
            "--flow-isolate-all",
            "no port with flow rules exists yet",
        ),
        (
            app.rx_offloads.is_some(),
            "--rx-offloads",
            "offloads are not supported",
        ),
        (
            app.tx_offloads.is_some(),
            "--tx-offloads",
            "offloads are not supported",
        ),
        (
            app.num_procs.is_some(),
            "--num-procs",
            "multi-process mode is not supported",
        ),
        (
            app.proc_id.is_some(),
            "--proc-id",
            "multi-process mode is not supported",
        ),
        (
            eal.proc_type
                .as_deref()
                .is_some_and(|t| t != "primary" && t != "auto"),
            "--proc-type",
            "only primary processes exist in nicpoll",
        ),
    ];
    if let Some((_, name, why)) = unsupported.iter().find(|(present, _, _)| *present) {
        return Err(reject(name, why));
    }
    if app.stats_format != "text" && app.stats_format != "json" {
        return Err(usage(format!(
            "--stats-format {:?}: give text or json",
            app.stats_format
        )));
    }

    // Lcores.
    let allowed = lcore::allowed_cpus().map_err(|e| usage(e.to_string()))?;
    let given = [
        eal.corelist.is_some(),
        eal.coremask.is_some(),
        eal.lcores.is_some(),
    ];
    if given.iter().filter(|&&g| g).count() > 1 {
        return Err(usage(
            "-l, -c and --lcores each name the lcores: give only one of them",
        ));
    }
    let (mut lcores, option, value) = if let Some(l) = &eal.corelist {
        let cpus = lcore::parse_cpu_list(l, "-l").map_err(|e| usage(e.to_string()))?;
        (LcoreSet::from_cpus(&cpus), "-l", l.clone())
    } else if let Some(c) = &eal.coremask {
        let cpus = lcore::parse_core_mask(c).map_err(|e| usage(e.to_string()))?;
        (LcoreSet::from_cpus(&cpus), "-c", c.clone())
    } else if let Some(m) = &eal.lcores {
        (
            lcore::parse_lcores(m).map_err(|e| usage(e.to_string()))?,
            "--lcores",
            m.clone(),
        )
    } else {
        (
            LcoreSet::from_cpus(&allowed),
            "(default: every CPU this process may use)",
            String::new(),
        )
    };
    lcores
        .validate(option, &value, &allowed, eal.main_lcore)
        .map_err(|e| usage(e.to_string()))?;

    // Devices.
    let mut pci: Vec<PciSpec> = Vec::new();
    for a in &eal.allow {
        let spec = parse_pci_spec(a)?;
        if pci.iter().any(|p| p.addr == spec.addr) {
            return Err(usage(format!(
                "-a {}: the device is given twice",
                spec.addr
            )));
        }
        pci.push(spec);
    }
    if eal.no_pci && !pci.is_empty() {
        return Err(usage(
            "--no-pci and -a contradict each other: give PCI devices with -a, or none with --no-pci",
        ));
    }
    let vdevs = eal
        .vdev
        .iter()
        .map(|v| DevArgs::parse(v).map_err(|e| usage(format!("--vdev: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;

    // Memory.
    let limit_bytes = match (&eal.mem_mb, &eal.socket_mem) {
        (Some(_), Some(_)) => {
            return Err(usage(
                "-m and --socket-mem both limit memory: give only one",
            ));
        }
        (Some(m), None) => Some(
            parse_u32_list(m, "-m", "a size in MiB like 512")?
                .first()
                .copied()
                .filter(|_| !m.contains(','))
                .ok_or_else(|| usage(format!("-m {m:?}: expected one size in MiB like 512")))?
                as usize
                * 1024
                * 1024,
        ),
        (None, Some(s)) => Some(
            parse_u32_list(s, "--socket-mem", "sizes in MiB per node like 1024,0")?
                .iter()
                .sum::<u32>() as usize
                * 1024
                * 1024,
        ),
        (None, None) => None,
    };
    if limit_bytes == Some(0) {
        return Err(usage(
            "-m/--socket-mem of 0 MiB leaves no memory for packet buffers",
        ));
    }
    let iova_mode = match &eal.iova_mode {
        None => None,
        Some(m) => Some(
            IovaMode::parse(m)
                .ok_or_else(|| usage(format!("--iova-mode {m:?}: give va, pa or dc")))?,
        ),
    };
    if let Some(u) = &eal.huge_unlink
        && !matches!(u.as_str(), "always" | "existing" | "never")
    {
        return Err(usage(format!(
            "--huge-unlink {u:?}: give always, existing or never"
        )));
    }
    if eal.no_huge && eal.huge_dir.is_some() {
        return Err(usage(
            "--no-huge and --huge-dir contradict each other: give one",
        ));
    }
    let file_prefix = eal
        .file_prefix
        .clone()
        .unwrap_or_else(|| "nicpoll".to_string());
    if file_prefix.is_empty() || file_prefix.contains('/') {
        return Err(usage(format!(
            "--file-prefix {file_prefix:?}: give a plain name without '/'"
        )));
    }
    let mut memory = MemoryConfig {
        no_huge: eal.no_huge,
        huge_dir: eal.huge_dir.clone(),
        limit_bytes,
        file_prefix,
        iova_mode,
        huge_unlink: eal.in_memory || eal.huge_unlink.as_deref().is_some_and(|u| u != "never"),
    };

    // Forwarding.
    let mode = FwdMode::parse(&app.forward_mode).ok_or_else(|| {
        usage(format!(
            "--forward-mode {:?}: unknown mode; give one of {}",
            app.forward_mode,
            FwdMode::names()
        ))
    })?;
    if app.burst == 0 || app.burst > nicpoll::MAX_BURST {
        return Err(usage(format!(
            "--burst {}: give a number from 1 to {}",
            app.burst,
            nicpoll::MAX_BURST
        )));
    }
    let mut retry = RetryConfig {
        enabled: app.tx_retry,
        ..RetryConfig::default()
    };
    if let Some(n) = app.tx_retry_num {
        retry.count = n;
    }
    if let Some(d) = app.tx_retry_delay {
        retry.delay_us = d;
    }
    if (app.tx_retry_num.is_some() || app.tx_retry_delay.is_some()) && !app.tx_retry {
        return Err(usage("--tx-retry-num/--tx-retry-delay need --tx-retry"));
    }
    if app.nb_cores == Some(0) {
        return Err(usage(
            "--nb-cores 0: at least one forwarding core is needed",
        ));
    }
    let port_select = match (&app.portmask, &app.portlist, app.nb_ports) {
        (None, None, None) => PortSelect::All,
        (None, None, Some(0)) => return Err(usage("--nb-ports 0: at least one port must forward")),
        (None, None, Some(n)) => PortSelect::First(n),
        (Some(m), None, None) => {
            let v = lcore::parse_core_mask(m).map_err(|_| {
                usage(format!(
                    "--portmask {m:?}: expected a hexadecimal mask with at least one bit, like 0x3"
                ))
            })?;
            PortSelect::List(v.into_iter().map(|p| p as u16).collect())
        }
        (None, Some(l), None) => {
            let v = lcore::parse_cpu_list(l, "--portlist")
                .map_err(|_| usage(format!("--portlist {l:?}: expected a list like 0,2-3")))?;
            PortSelect::List(v.into_iter().map(|p| p as u16).collect())
        }
        _ => {
            return Err(usage(
                "--portmask, --portlist and --nb-ports each select ports: give only one",
            ));
        }
    };
    let topology = match app.port_topology.as_str() {
        "paired" => Topology::Paired,
        "chained" => Topology::Chained,
        "loop" => Topology::Loop,
        t => {
            return Err(usage(format!(
                "--port-topology {t:?}: give paired, chained or loop"
            )));
        }
    };
    if app.rxq == 0 && app.txq == 0 {
        return Err(usage(
            "--rxq 0 and --txq 0: a port needs at least one queue",
        ));
    }
    if app.rxq == 0 && !mode.generates() {
        return Err(usage(format!(
            "--rxq 0: the {mode} mode receives, so it needs receive queues"
        )));
    }
    if app.txq == 0 && mode != FwdMode::RxOnly {
        return Err(usage(format!(
            "--txq 0: the {mode} mode transmits, so it needs transmit queues"
        )));
    }
    if let Some(n) = app.total_num_mbufs
        && n < 1024
    {
        return Err(usage(format!("--total-num-mbufs {n}: give at least 1024")));
    }
    let mbcache = app.mbcache.unwrap_or(nicpoll::mempool::DEFAULT_CACHE_SIZE);
    if mbcache > nicpoll::mempool::MAX_CACHE_SIZE {
        return Err(usage(format!(
            "--mbcache {mbcache}: give a number from 0 to 512"
        )));
    }
    if let Some(s) = app.mbuf_size
        && (s < 256 || s as usize > nicpoll::mempool::MAX_BUF_SIZE)
    {
        return Err(usage(format!(
            "--mbuf-size {s}: give a size from 256 to {} (headroom + data room, as DPDK's)",
            nicpoll::mempool::MAX_BUF_SIZE
        )));
    }
    if let Some(n) = app.max_pkt_len
        && !(64..=65535).contains(&n)
    {
        return Err(usage(format!(
            "--max-pkt-len {n}: give a frame length from 64 to 65535, FCS included \
             (1518 for MTU 1500, 9018 for MTU 9000)"
        )));
    }

    // Peers.
    let mut eth_peers = BTreeMap::new();
    if let Some(f) = &app.eth_peers_configfile {
        let text = std::fs::read_to_string(f)
            .map_err(|e| usage(format!("--eth-peers-configfile {}: {e}", f.display())))?;
        for (i, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
        {
            let mac: MacAddr = line.parse().map_err(|e| {
                usage(format!(
                    "--eth-peers-configfile {}: line {}: {e}",
                    f.display(),
                    i + 1
                ))
            })?;
            eth_peers.insert(i as u16, mac);
        }
    }
    for p in &app.eth_peer {
        let Some((port, mac)) = p.split_once(',') else {
            return Err(usage(format!(
                "--eth-peer {p:?}: expected PORT,MAC like 0,02:00:00:00:00:01"
            )));
        };
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|_| usage(format!("--eth-peer {p:?}: {port:?} is not a port number")))?;
        let mac: MacAddr = mac
            .trim()
            .parse()
            .map_err(|e| usage(format!("--eth-peer {p:?}: {e}")))?;
        eth_peers.insert(port, mac);
    }

    // Generated packets.
    let mut tx = TxPacketConfig::default();
    if let Some(t) = &app.txpkts {
        let (len, segs) = parse_txpkts(t).map_err(|e| usage(format!("--txpkts {e}")))?;
        tx.len = len;
        tx.segs = segs;
    }
    if let Some(ip) = &app.tx_ip {
        let parts: Vec<&str> = ip.split(',').collect();
        let parsed: Option<Vec<Ipv4Addr>> = parts.iter().map(|p| p.trim().parse().ok()).collect();
        match parsed.as_deref() {
            Some([s, d]) => {
                tx.ip_src = *s;
                tx.ip_dst = *d;
            }
            _ => {
                return Err(usage(format!(
                    "--tx-ip {ip:?}: expected SRC,DST like 198.18.0.1,198.18.0.2"
                )));
            }
        }
    }
    if let Some(u) = &app.tx_udp {
        let ports: Vec<u16> = u
            .split(',')
            .map(|p| p.trim().parse::<u16>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                usage(format!(
                    "--tx-udp {u:?}: expected SRC[,DST] port numbers like 9,9"
                ))
            })?;
        match ports[..] {
            [s] => {
                tx.udp_src = s;
                tx.udp_dst = s;
            }
            [s, d] => {
                tx.udp_src = s;
                tx.udp_dst = d;
            }
            _ => return Err(usage(format!("--tx-udp {u:?}: expected SRC[,DST]"))),
        }
    }
    tx.multi_flow = app.txonly_multi_flow;
    if let Some(f) = app.flowgen_flows {
        if f == 0 {
            return Err(usage("--flowgen-flows 0: give at least one flow"));
        }
        tx.flowgen_flows = f;
    }

    // Run control.
    if let Some(p) = app.stats_period
        && !(p > 0.0 && p.is_finite())
    {
        return Err(usage(format!(
            "--stats-period {p}: give a positive number of seconds"
        )));
    }
    if let Some(t) = app.run_time
        && !(t > 0.0 && t.is_finite())
    {
        return Err(usage(format!(
            "--run-time {t}: give a positive number of seconds"
        )));
    }
    if app.max_packets == Some(0) {
        return Err(usage("--max-packets 0: give a positive count"));
    }
    // Entrypoint mode: no device on the command line, as in a pod whose
    // devices the SR-IOV device plugin gave through PCIDEVICE_* variables; or
    // run by the pod's entrypoint (NICPOLL_ENTRYPOINT=1) with no -a, where
    // NICPOLL_EAL_ARGS may add software ports to the plugin's devices.
    let mut entrypoint = None;
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    let by_entrypoint = crate::entrypoint::run_by_entrypoint(&vars);
    if pci.is_empty() && !eal.no_pci && (vdevs.is_empty() || by_entrypoint) {
        let root = crate::entrypoint::root_from_env();
        let mut derived = crate::entrypoint::derive(&vars, &root, &allowed).map_err(usage)?;
        if !derived.devices.is_empty() || by_entrypoint {
            if derived.devices.is_empty() && vdevs.is_empty() {
                return Err(usage(crate::entrypoint::no_devices_message(&derived)));
            }
            for (_, a) in &derived.devices {
                pci.push(parse_pci_spec(&a.to_string())?);
            }
            derived.vdevs = vdevs.iter().map(|v| v.spec.clone()).collect();
            if !given.iter().any(|&g| g) {
                lcores = derived.lcores();
                lcores
                    .validate(
                        "cpuset",
                        &lcore::format_cpu_list(&derived.cpus),
                        &allowed,
                        eal.main_lcore,
                    )
                    .map_err(|e| usage(e.to_string()))?;
            }
            if memory.huge_dir.is_none() && !memory.no_huge {
                memory.huge_dir = derived.hugepages.as_ref().map(|h| h.0.clone());
            }
            entrypoint = Some(derived);
        }
    }
    if vdevs.is_empty() && pci.is_empty() {
        return Err(usage(
            "no ports: give PCI devices bound to vfio-pci with -a BDF, or add virtual devices, \
             e.g. --vdev net_null0 --vdev net_null1 (run testpmd without arguments for a demo); \
             in a pod, the device plugin's PCIDEVICE_* variables name no device",
        ));
    }
    if app.interactive && app.stats_period.is_some() {
        return Err(usage(
            "--stats-period prints without -i only (it would garble the prompt); use `show port stats all` at the prompt",
        ));
    }
    if app.cmdline_file.is_some() && !app.interactive {
        return Err(usage(
            "--cmdline-file needs -i (the commands run at the interactive prompt)",
        ));
    }
    let _ = (eal.no_pci, eal.channels, eal.no_telemetry, eal.no_shconf);
    let _ = (app.no_lsc_interrupt, app.no_rmv_interrupt, app.no_numa);
    Ok(Config {
        lcores,
        pci,
        vdevs,
        memory,
        log_level: eal.log_level.last().cloned(),
        mode,
        retry,
        burst: app.burst,
        nb_cores: app.nb_cores,
        port_select,
        topology,
        rxq: app.rxq,
        txq: app.txq,
        rxd: app.rxd,
        txd: app.txd,
        mbuf_buf_size: app.mbuf_size,
        max_pkt_len: app.max_pkt_len,
        total_num_mbufs: app.total_num_mbufs,
        mbcache,
        eth_peers,
        tx,
        latency: !app.no_latency,
        record_burst_stats: app.record_burst_stats,
        tx_first: app.tx_first,
        stats_period: app.stats_period,
        stats_format: if app.stats_format == "json" {
            StatsFormat::Json
        } else {
            StatsFormat::Text
        },
        run_time: app.run_time,
        max_packets: app.max_packets,
        flush_rx: !app.no_flush_rx,
        link_check: !app.disable_link_check,
        demo,
        interactive: app.interactive,
        auto_start: app.auto_start,
        cmdline_file: app.cmdline_file,
        metrics: app.metrics,
        entrypoint,
    })
}
