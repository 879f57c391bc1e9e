//! Forwarding configuration: the mode, the burst, generator parameters, retry.
#![deny(unsafe_code)]

use std::fmt;
use std::net::Ipv4Addr;

/// A forwarding mode (testpmd's `--forward-mode` / `set fwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwdMode {
    /// Receive and send the same mbufs untouched.
    Io,
    /// Rewrite source MAC (tx port) and destination MAC (peer), then send.
    Mac,
    /// Swap source and destination MAC, then send.
    MacSwap,
    /// Receive and free (recording latency of stamped packets).
    RxOnly,
    /// Generate UDP packets only.
    TxOnly,
    /// Generate UDP packets over many flows; free what is received.
    FlowGen,
    /// Answer ARP requests and ICMP echo requests; free the rest.
    IcmpEcho,
    /// Swap MACs, IP addresses and L4 ports.
    FiveTupleSwap,
}

impl FwdMode {
    /// Every mode, in testpmd's order.
    pub const ALL: [FwdMode; 8] = [
        FwdMode::Io,
        FwdMode::Mac,
        FwdMode::MacSwap,
        FwdMode::FlowGen,
        FwdMode::RxOnly,
        FwdMode::TxOnly,
        FwdMode::IcmpEcho,
        FwdMode::FiveTupleSwap,
    ];

    /// The name testpmd uses.
    pub fn name(self) -> &'static str {
        match self {
            FwdMode::Io => "io",
            FwdMode::Mac => "mac",
            FwdMode::MacSwap => "macswap",
            FwdMode::RxOnly => "rxonly",
            FwdMode::TxOnly => "txonly",
            FwdMode::FlowGen => "flowgen",
            FwdMode::IcmpEcho => "icmpecho",
            FwdMode::FiveTupleSwap => "5tswap",
        }
    }

    /// Parse a mode name.
    pub fn parse(s: &str) -> Option<FwdMode> {
        FwdMode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// `io|mac|...` for messages.
    pub fn names() -> String {
        FwdMode::ALL.map(|m| m.name()).join("|")
    }

    /// Whether the mode generates its own packets (counted on transmit).
    pub fn generates(self) -> bool {
        matches!(self, FwdMode::TxOnly | FwdMode::FlowGen)
    }
}

impl fmt::Display for FwdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Transmit retry (`set fwd MODE retry`, `set burst tx delay D retry N`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retry at all.
    pub enabled: bool,
    /// Retries after the first attempt (testpmd's burst_tx_retry_num, 64).
    pub count: u32,
    /// Microseconds between tries (burst_tx_delay_time, 1).
    pub delay_us: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: false,
            count: 64,
            delay_us: 1,
        }
    }
}

/// What generators (txonly, flowgen, tx_first) put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPacketConfig {
    /// Total frame length in bytes (`--txpkts`, sum of segments), without FCS.
    pub len: u16,
    /// Segment lengths (`--txpkts=X,Y,...`, `set txpkts`): with more than
    /// one, every generated frame is a chain of mbufs of these lengths, in
    /// order (their sum is `len`); empty or one: a single mbuf of `len`.
    pub segs: Vec<u16>,
    /// IPv4 source and destination (`--tx-ip`).
    pub ip_src: Ipv4Addr,
    /// IPv4 destination.
    pub ip_dst: Ipv4Addr,
    /// UDP source port (`--tx-udp`).
    pub udp_src: u16,
    /// UDP destination port.
    pub udp_dst: u16,
    /// Vary the UDP source port per packet (`--txonly-multi-flow`).
    pub multi_flow: bool,
    /// Number of flows flowgen cycles through (`--flowgen-flows`).
    pub flowgen_flows: u32,
}

impl Default for TxPacketConfig {
    fn default() -> Self {
        TxPacketConfig {
            len: 64,
            segs: Vec::new(),
            ip_src: Ipv4Addr::new(198, 18, 0, 1),
            ip_dst: Ipv4Addr::new(198, 18, 0, 2),
            udp_src: 9,
            udp_dst: 9,
            multi_flow: false,
            flowgen_flows: 1024,
        }
    }
}

/// Everything engines are configured with.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// The mode.
    pub mode: FwdMode,
    /// Packets per burst (1..=512).
    pub burst: usize,
    /// Transmit retry.
    pub retry: RetryConfig,
    /// Generated packets.
    pub tx: TxPacketConfig,
    /// Record one-way latency and sequence gaps of stamped packets on receive.
    pub latency: bool,
    /// Count receive and transmit calls by the number of packets they moved
    /// (testpmd's `--record-burst-stats`). Off, it costs nothing: the
    /// forwarding loop is compiled without the counting.
    pub record_burst_stats: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mode: FwdMode::Io,
            burst: 32,
            retry: RetryConfig::default(),
            tx: TxPacketConfig::default(),
            latency: true,
            record_burst_stats: false,
        }
    }
}

/// One stream: receive port and queue to transmit port and queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// Receive port id.
    pub rx_port: u16,
    /// Receive queue.
    pub rx_queue: u16,
    /// Transmit port id.
    pub tx_port: u16,
    /// Transmit queue.
    pub tx_queue: u16,
}

impl fmt::Display for StreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RX P={}/Q={} -> TX P={}/Q={}",
            self.rx_port, self.rx_queue, self.tx_port, self.tx_queue
        )
    }
}
