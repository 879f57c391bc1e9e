//! Ports: the control plane ([`Port`]) and the per-queue data plane
//! ([`RxQueue`], [`TxQueue`]).
//!
//! A port is configured (queue counts, ring sizes, the mempool its receive
//! queues allocate from), then started; starting hands out one `RxQueue` and one
//! `TxQueue` value per queue. Each is `Send`, owned by exactly one lcore, and
//! needs no lock. Control operations return `Result` and may block; burst
//! operations never fail: what cannot be done is counted.
#![deny(unsafe_code)]

pub mod counters;
pub mod devargs;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::str::FromStr;

use crate::error::Result;
use crate::mbuf::MbufBatch;
use crate::mempool::Mempool;
pub use counters::{PortCounters, QueueCounters};
pub use devargs::DevArgs;

/// An Ethernet address.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// A locally administered address derived from a port id, the way testpmd
    /// makes its default peer addresses (02:00:00:00:00:<port>).
    pub fn local(port: u16) -> MacAddr {
        MacAddr::with_prefix([0x02, 0, 0, 0], port)
    }

    /// A locally administered address: the four bytes `prefix` (whose first
    /// byte has the local bit set and the group bit clear), then the port id
    /// big-endian, as a software driver names its ports (ring: 02:72:69:6e).
    pub fn with_prefix(prefix: [u8; 4], port: u16) -> MacAddr {
        let [a, b, c, d] = prefix;
        let [hi, lo] = port.to_be_bytes();
        MacAddr([a, b, c, d, hi, lo])
    }

    /// Whether the group (multicast) bit is set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<MacAddr, String> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(format!("{s:?} is not a MAC address like 02:00:00:00:00:01"));
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || p.len() > 2 {
                return Err(format!("{s:?} is not a MAC address like 02:00:00:00:00:01"));
            }
            m[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address like 02:00:00:00:00:01"))?;
        }
        Ok(MacAddr(m))
    }
}

/// Link state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    /// Link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 if unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

impl Link {
    /// The link a software port reports (null, ring, pcap): up while the
    /// port is started, 10 Gbit/s full duplex, as DPDK's software PMDs
    /// report it.
    pub fn software(up: bool) -> Link {
        Link {
            up,
            speed_mbps: 10_000,
            full_duplex: true,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.up {
            return write!(f, "down");
        }
        let speed = match self.speed_mbps {
            0 => "unknown speed".to_string(),
            s if s % 1000 == 0 => format!("{} Gbps", s / 1000),
            s => format!("{s} Mbps"),
        };
        write!(
            f,
            "up, {speed}, {}",
            if self.full_duplex {
                "full-duplex"
            } else {
                "half-duplex"
            }
        )
    }
}

/// What a port can do, as `show port info` prints it.
#[derive(Clone, Debug)]
pub struct PortInfo {
    /// Driver name (`net_null`).
    pub driver: &'static str,
    /// Device name (`net_null0`, a PCI address, an interface).
    pub name: String,
    /// Most receive queues.
    pub max_rx_queues: u16,
    /// Most transmit queues.
    pub max_tx_queues: u16,
    /// Receive ring size used when none is asked for.
    pub default_rxd: u16,
    /// Transmit ring size used when none is asked for.
    pub default_txd: u16,
    /// Smallest receive ring.
    pub min_rxd: u16,
    /// Largest receive ring.
    pub max_rxd: u16,
    /// Smallest transmit ring.
    pub min_txd: u16,
    /// Largest transmit ring.
    pub max_txd: u16,
    /// Ring sizes must be a multiple of this.
    pub desc_align: u16,
    /// Largest frame the port receives, in bytes as delivered (no FCS): the
    /// most [`PortConf::max_rx_pktlen`] may ask for, and what the port
    /// receives when it is 0 (a kernel interface's: its MTU + 14 + 4 for a
    /// VLAN tag).
    pub max_rx_pktlen: u32,
    /// Receives a frame longer than one mbuf's data room as a chain of mbufs
    /// (DPDK's `RTE_ETH_RX_OFFLOAD_SCATTER`). Without it, every frame up to
    /// the port's limit must fit one mbuf, and `configure` refuses a pool
    /// whose mbufs are too small.
    pub rx_scatter: bool,
    /// Transmits multi-segment mbufs (DPDK's `RTE_ETH_TX_OFFLOAD_MULTI_SEGS`).
    /// A port without it must not be given one: testpmd refuses such a
    /// configuration up front; the port counts one it is given anyway as a
    /// transmit error and frees it.
    pub tx_multi_seg: bool,
    /// NUMA node of the device, if known.
    pub numa_node: Option<u32>,
}

/// How to configure a port before starting it.
#[derive(Clone, Debug)]
pub struct PortConf {
    /// The port id the application gave this port (stamped into received mbufs).
    pub port_id: u16,
    /// Receive queues.
    pub nb_rxq: u16,
    /// Transmit queues.
    pub nb_txq: u16,
    /// Receive ring size (0: the driver's default).
    pub nb_rxd: u16,
    /// Transmit ring size (0: the driver's default).
    pub nb_txd: u16,
    /// The longest frame to receive, in bytes as delivered (no FCS; DPDK's
    /// `--max-pkt-len` less 4); longer frames are dropped and counted in
    /// `ierrors`. 0: the port's default, [`PortInfo::max_rx_pktlen`].
    pub max_rx_pktlen: u32,
    /// The pool receive queues allocate from.
    pub mempool: Mempool,
}

/// The queues a started port hands out. Each is owned by one lcore.
#[derive(Default)]
pub struct PortQueues {
    /// One per receive queue, in queue order.
    pub rx: Vec<Box<dyn RxQueue>>,
    /// One per transmit queue, in queue order.
    pub tx: Vec<Box<dyn TxQueue>>,
}

impl fmt::Debug for PortQueues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortQueues")
            .field("rx", &self.rx.len())
            .field("tx", &self.tx.len())
            .finish()
    }
}

/// Port counters, as `struct rte_eth_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// Packets the device dropped because no receive descriptor was free.
    pub imissed: u64,
    /// Erroneous received packets (runts, bad descriptors, oversized frames).
    pub ierrors: u64,
    /// Packets the device failed to send.
    pub oerrors: u64,
    /// Receive buffer allocation failures (mempool empty).
    pub rx_nombuf: u64,
}

impl PortStats {
    /// Field-wise `self - base`, saturating (for "since start" and "since clear").
    pub fn since(&self, base: &PortStats) -> PortStats {
        PortStats {
            ipackets: self.ipackets.saturating_sub(base.ipackets),
            opackets: self.opackets.saturating_sub(base.opackets),
            ibytes: self.ibytes.saturating_sub(base.ibytes),
            obytes: self.obytes.saturating_sub(base.obytes),
            imissed: self.imissed.saturating_sub(base.imissed),
            ierrors: self.ierrors.saturating_sub(base.ierrors),
            oerrors: self.oerrors.saturating_sub(base.oerrors),
            rx_nombuf: self.rx_nombuf.saturating_sub(base.rx_nombuf),
        }
    }
}

/// The control plane of one port.
pub trait Port: Send {
    /// Capabilities and limits.
    fn info(&self) -> PortInfo;

    /// Set queue counts, ring sizes and the receive mempool. The port must be stopped.
    fn configure(&mut self, conf: &PortConf) -> Result<()>;

    /// Start the port and hand out its queues.
    fn start(&mut self) -> Result<PortQueues>;

    /// Stop the port. Queues handed out by `start` must have been dropped first;
    /// a driver that cannot tell refuses with an error rather than corrupt state.
    fn stop(&mut self) -> Result<()>;

    /// Whether the port is started.
    fn is_started(&self) -> bool;

    /// Current link state.
    fn link(&self) -> Link;

    /// The port's own MAC address.
    fn mac_addr(&self) -> MacAddr;

    /// Whether promiscuous mode is on.
    fn promiscuous(&self) -> bool;

    /// Turn promiscuous mode on or off.
    fn set_promiscuous(&mut self, on: bool) -> Result<()>;

    /// Counters since the port was created or last reset.
    fn stats(&self) -> PortStats;

    /// Reset the counters.
    fn reset_stats(&mut self);

    /// Extended counters: driver-specific names and values (per queue and more).
    fn xstats(&self) -> Vec<(String, u64)> {
        let s = self.stats();
        vec![
            ("rx_good_packets".into(), s.ipackets),
            ("tx_good_packets".into(), s.opackets),
            ("rx_good_bytes".into(), s.ibytes),
            ("tx_good_bytes".into(), s.obytes),
            ("rx_missed_errors".into(), s.imissed),
            ("rx_errors".into(), s.ierrors),
            ("tx_errors".into(), s.oerrors),
            ("rx_mbuf_allocation_errors".into(), s.rx_nombuf),
        ]
    }
}

/// One receive queue. Owned by one lcore; never blocks, never fails.
pub trait RxQueue: Send {
    /// Append up to `out.spare()` received packets to `out`; return how many.
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize;

    /// Which receive loop runs, for drivers that have several (DPDK's
    /// `rte_eth_rx_burst_mode_get`: "AVX2 Vector", "Scalar"); None if the
    /// driver has one.
    fn burst_mode(&self) -> Option<&'static str> {
        None
    }
}

/// One transmit queue. Owned by one lcore; never blocks, never fails.
pub trait TxQueue: Send {
    /// Send packets from the front of `pkts`; return how many were taken. The
    /// unsent tail stays in `pkts` for the caller to retry or drop.
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize;

    /// Which transmit loop runs, as [`RxQueue::burst_mode`].
    fn burst_mode(&self) -> Option<&'static str> {
        None
    }
}

/// The longest frame a configuration receives, checked against what the port
/// can do: `conf.max_rx_pktlen` (at most `info.max_rx_pktlen`, and within
/// one mbuf unless the port scatters), or when that is 0 the port's maximum
/// (a port that cannot scatter: what one mbuf holds, if less).
pub fn rx_frame_limit(port_id: u16, info: &PortInfo, conf: &PortConf) -> Result<u32> {
    let err = |reason: String| crate::Error::port(port_id, &info.name, "configure", reason);
    let room = conf.mempool.data_room();
    let limit = match conf.max_rx_pktlen {
        0 if info.rx_scatter => info.max_rx_pktlen,
        0 => info.max_rx_pktlen.min(room as u32),
        asked => asked,
    };
    if limit > info.max_rx_pktlen {
        return Err(err(format!(
            "frames of up to {limit} bytes asked for (--max-pkt-len {}), the port receives at \
             most {}",
            limit + 4,
            info.max_rx_pktlen
        )));
    }
    if limit < 14 {
        return Err(err(format!(
            "a frame limit of {limit} bytes cannot hold an Ethernet header (--max-pkt-len {})",
            limit + 4
        )));
    }
    if conf.nb_rxq > 0 && !info.rx_scatter && limit as usize > room {
        return Err(err(format!(
            "frames of up to {limit} bytes do not fit the {room}-byte data room of an mbuf and \
             the port cannot receive a frame into several: raise --mbuf-size to {} or lower \
             --max-pkt-len to {}",
            limit as usize + crate::mbuf::DEFAULT_HEADROOM as usize,
            room + 4
        )));
    }
    Ok(limit)
}

/// Refuse to reconfigure a started port, as DPDK's `rte_eth_dev_configure`
/// does (`-EBUSY`): the error says to stop it first.
pub fn ensure_stopped(started: bool, port_id: u16, name: &str) -> Result<()> {
    if started {
        return Err(crate::Error::port(
            port_id,
            name,
            "configure",
            "the port is started; stop it first (port stop N)".into(),
        ));
    }
    Ok(())
}

/// Resolve and check queue and ring sizes against a port's limits.
pub fn check_conf(port_id: u16, info: &PortInfo, conf: &PortConf) -> Result<(u16, u16)> {
    let err = |reason: String| crate::Error::port(port_id, &info.name, "configure", reason);
    if conf.nb_rxq == 0 && conf.nb_txq == 0 {
        return Err(err(
            "no queue asked for: --rxq and --txq must not both be 0".into(),
        ));
    }
    if conf.nb_rxq > info.max_rx_queues {
        return Err(err(format!(
            "{} receive queues asked for, the port has at most {} (--rxq)",
            conf.nb_rxq, info.max_rx_queues
        )));
    }
    if conf.nb_txq > info.max_tx_queues {
        return Err(err(format!(
            "{} transmit queues asked for, the port has at most {} (--txq)",
            conf.nb_txq, info.max_tx_queues
        )));
    }
    let rxd = if conf.nb_rxd == 0 {
        info.default_rxd
    } else {
        conf.nb_rxd
    };
    let txd = if conf.nb_txd == 0 {
        info.default_txd
    } else {
        conf.nb_txd
    };
    let align = info.desc_align.max(1);
    if rxd < info.min_rxd || rxd > info.max_rxd || rxd % align != 0 {
        return Err(err(format!(
            "receive ring size {rxd} is not allowed: from {} to {} in multiples of {align} (--rxd)",
            info.min_rxd, info.max_rxd
        )));
    }
    if txd < info.min_txd || txd > info.max_txd || txd % align != 0 {
        return Err(err(format!(
            "transmit ring size {txd} is not allowed: from {} to {} in multiples of {align} (--txd)",
            info.min_txd, info.max_txd
        )));
    }
    Ok((rxd, txd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(m, MacAddr::local(1));
        assert_eq!(m.to_string(), "02:00:00:00:00:01");
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:zz".parse::<MacAddr>().is_err());
        assert!("020:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert_eq!(
            MacAddr::with_prefix([0x02, 0x72, 0x69, 0x6e], 0x0102).to_string(),
            "02:72:69:6E:01:02"
        );
    }

    #[test]
    fn link_text() {
        let l = Link {
            up: true,
            speed_mbps: 10_000,
            full_duplex: true,
        };
        assert_eq!(l.to_string(), "up, 10 Gbps, full-duplex");
        assert_eq!(Link::software(true), l);
        assert_eq!(Link::software(false).to_string(), "down");
        assert_eq!(Link::default().to_string(), "down");
    }
}
