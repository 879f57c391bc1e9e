//! `net_ring`: in-memory ports built on mbuf rings, like DPDK's net_ring.
//!
//! Each port owns one ring per receive queue. A port's transmit queue `q`
//! enqueues onto receive ring `q` (modulo the receiver's queue count) of its
//! destination: itself by default (loopback, DPDK's `--vdev net_ringN`
//! behaviour), or the port named by `peer=` — `--vdev net_ring0,peer=net_ring1
//! --vdev net_ring1,peer=net_ring0` makes a cross-connected pair, which DPDK can
//! only build through its C API. Rings are created by [`RingBus::create`], the
//! registry through which ports find their peers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use nicpoll::mbuf::MbufBatch;
use nicpoll::mempool::MbufRing;
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_ring";
const KEYS: &[&str] = &["peer"];
const MAX_QUEUES: u16 = 16;

type RxRings = Arc<RwLock<Arc<[MbufRing]>>>;

/// The registry of ring ports of one application, so ports can find their peers.
#[derive(Default, Debug)]
pub struct RingBus {
    nodes: HashMap<String, RxRings>,
}

impl RingBus {
    /// An empty registry.
    pub fn new() -> RingBus {
        RingBus::default()
    }

    /// Create the port described by `args` (`net_ringN[,peer=NAME]`).
    pub fn create(&mut self, args: &DevArgs, port_id: u16) -> Result<RingPort> {
        args.expect_driver(DRIVER)?;
        args.check_keys(KEYS)?;
        if self.nodes.contains_key(&args.name) {
            return Err(Error::DevArgs {
                device: args.spec.clone(),
                reason: format!("a device named {} already exists", args.name),
            });
        }
        let peer = match args.get("peer") {
            None => None,
            Some(p) if p == args.name => None,
            Some("") => {
                return Err(Error::DevArgs {
                    device: args.spec.clone(),
                    reason: "peer= needs the name of another net_ring device, e.g. peer=net_ring1"
                        .into(),
                });
            }
            Some(p) => Some(p.to_string()),
        };
        let rings: RxRings = Arc::new(RwLock::new(Arc::from(Vec::new())));
        self.nodes.insert(args.name.clone(), rings.clone());
        Ok(RingPort {
            name: args.name.clone(),
            port_id,
            peer,
            rx_rings: rings,
            bus: self.nodes.clone(),
            conf: None,
            started: false,
            promisc: true,
            counters: PortCounters::default(),
        })
    }

    /// Finish wiring once every ring port exists: give each port the registry
    /// so it can resolve `peer=` at start. Returns an error naming a missing peer.
    pub fn connect(&self, ports: &mut [&mut RingPort]) -> Result<()> {
        for p in ports.iter_mut() {
            if let Some(peer) = &p.peer
                && !self.nodes.contains_key(peer)
            {
                return Err(Error::DevArgs {
                    device: p.name.clone(),
                    reason: format!(
                        "peer={peer}: no such net_ring device; add --vdev {peer},peer={}",
                        p.name
                    ),
                });
            }
            p.bus = self.nodes.clone();
        }
        Ok(())
    }
}

/// A ring port.
#[derive(Debug)]
pub struct RingPort {
    name: String,
    port_id: u16,
    peer: Option<String>,
    rx_rings: RxRings,
    bus: HashMap<String, RxRings>,
    conf: Option<(PortConf, u16, u16)>,
    started: bool,
    promisc: bool,
    counters: PortCounters,
}

impl RingPort {
    /// The port this one transmits to (its own name when looped back).
    pub fn destination(&self) -> &str {
        self.peer.as_deref().unwrap_or(&self.name)
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::port(self.port_id, &self.name, op, reason)
    }
}

impl Port for RingPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: MAX_QUEUES,
            max_tx_queues: MAX_QUEUES,
            default_rxd: 1024,
            default_txd: 1024,
            min_rxd: 2,
            max_rxd: 32768,
            min_txd: 2,
            max_txd: 32768,
            desc_align: 1,
            // In memory, packets pass whole: chains too.
            max_rx_pktlen: u32::MAX,
            rx_scatter: true,
            tx_multi_seg: true,
            numa_node: None,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        port::ensure_stopped(self.started, self.port_id, &self.name)?;
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        // Several peers' queues may feed one ring: multi-producer. One lcore
        // owns each receive queue: the consumer side could be single, but the
        // ring is symmetric and the cost is one CAS per burst.
        let rings: Vec<MbufRing> = (0..conf.nb_rxq)
            .map(|_| MbufRing::new(rxd as usize, true))
            .collect();
        *self.rx_rings.write().expect("ring registry lock") = Arc::from(rings);
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
        self.port_id = conf.port_id;
        self.conf = Some((conf.clone(), rxd, txd));
        Ok(())
    }

    fn start(&mut self) -> Result<PortQueues> {
        let Some((conf, _, _)) = &self.conf else {
            return Err(self.err("start", "the port is not configured".into()));
        };
        if self.started {
            return Err(self.err("start", "the port is already started".into()));
        }
        let dest_name = self.destination().to_string();
        let dest = if dest_name == self.name {
            self.rx_rings.clone()
        } else {
            self.bus.get(&dest_name).cloned().ok_or_else(|| {
                self.err(
                    "start",
                    format!(
                        "peer {dest_name} does not exist; add --vdev {dest_name},peer={}",
                        self.name
                    ),
                )
            })?
        };
        let own = self.rx_rings.read().expect("ring registry lock").clone();
        let dest_rings = dest.read().expect("ring registry lock").clone();
        if dest_rings.is_empty() && conf.nb_txq > 0 {
            return Err(self.err(
                "start",
                format!(
                    "peer {dest_name} has no receive queue configured; configure and start it too"
                ),
            ));
        }
        let (port_id, nb_rxq, nb_txq) = (conf.port_id, conf.nb_rxq, conf.nb_txq);
        let rx = (0..nb_rxq)
            .map(|q| {
                Box::new(RingRxQueue {
                    rings: own.clone(),
                    q: q as usize,
                    port: port_id,
                    max_len: match conf.max_rx_pktlen {
                        0 => usize::MAX,
                        l => l as usize,
                    },
                    counters: self.counters.rx(q as usize),
                }) as Box<dyn RxQueue>
            })
            .collect();
        let tx = (0..nb_txq)
            .map(|q| {
                Box::new(RingTxQueue {
                    q: q as usize % dest_rings.len(),
                    rings: dest_rings.clone(),
                    counters: self.counters.tx(q as usize),
                }) as Box<dyn TxQueue>
            })
            .collect();
        self.started = true;
        Ok(PortQueues { rx, tx })
    }

    fn stop(&mut self) -> Result<()> {
        self.started = false;
        Ok(())
    }

    fn is_started(&self) -> bool {
        self.started
    }

    fn link(&self) -> Link {
        Link::software(self.started)
    }

    fn mac_addr(&self) -> MacAddr {
        MacAddr::with_prefix([0x02, 0x72, 0x69, 0x6e], self.port_id)
    }

    fn promiscuous(&self) -> bool {
        self.promisc
    }

    fn set_promiscuous(&mut self, on: bool) -> Result<()> {
        self.promisc = on;
        Ok(())
    }

    fn stats(&self) -> PortStats {
        self.counters.stats()
    }

    fn reset_stats(&mut self) {
        self.counters.reset();
    }

    fn xstats(&self) -> Vec<(String, u64)> {
        self.counters.xstats()
    }
}

struct RingRxQueue {
    rings: Arc<[MbufRing]>,
    q: usize,
    port: u16,
    /// `--max-pkt-len`: longer packets are dropped and counted.
    max_len: usize,
    counters: QueueCountersRef,
}

impl RxQueue for RingRxQueue {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let first = out.len();
        let n = self.rings[self.q].dequeue_into(out);
        if n == 0 {
            return 0;
        }
        let mut bytes = 0;
        let mut over = false;
        for m in &mut out.as_mut_slice()[first..] {
            m.set_port(self.port);
            let len = m.pkt_len();
            bytes += len as u64;
            over |= len > self.max_len;
        }
        let mut n = n;
        if over {
            let max = self.max_len;
            let mut dropped_bytes = 0;
            let dropped = out.retain_mut_from(first, |m| {
                let keep = m.pkt_len() <= max;
                if !keep {
                    dropped_bytes += m.pkt_len() as u64;
                }
                keep
            });
            n -= dropped;
            bytes -= dropped_bytes;
            self.counters.rx_errors.add(dropped as u64);
        }
        self.counters.rx_packets.add(n as u64);
        self.counters.rx_bytes.add(bytes);
        n
    }
}

struct RingTxQueue {
    rings: Arc<[MbufRing]>,
    q: usize,
    counters: QueueCountersRef,
}

impl TxQueue for RingTxQueue {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        let mut bytes = 0;
        let n = self.rings[self.q].enqueue_from_counting(pkts, &mut bytes);
        self.counters.tx_packets.add(n as u64);
        self.counters.tx_bytes.add(bytes);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::memory::DmaMemory;
    use nicpoll::mempool::{Mempool, MempoolConfig};
    use nicpoll::port::testing::{self, Delivery, fill, test_frame};

    #[test]
    fn loopback_passes_the_port_conformance_suite() {
        let mut bus = RingBus::new();
        let mut n = 0;
        testing::run_conformance(
            "net_ring",
            &mut |id| {
                n += 1;
                Ok(
                    Box::new(bus.create(&DevArgs::parse(&format!("net_ring{n}"))?, id)?)
                        as Box<dyn Port>,
                )
            },
            Delivery::Loopback,
        );
    }

    #[test]
    fn a_pair_crosses_over() {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("ring-pair", 256)).unwrap();
        let mut bus = RingBus::new();
        let mut a = bus
            .create(&DevArgs::parse("net_ring0,peer=net_ring1").unwrap(), 0)
            .unwrap();
        let mut b = bus
            .create(&DevArgs::parse("net_ring1,peer=net_ring0").unwrap(), 1)
            .unwrap();
        bus.connect(&mut [&mut a, &mut b]).unwrap();
        for (p, id) in [(&mut a, 0), (&mut b, 1)] {
            p.configure(&PortConf {
                port_id: id,
                nb_rxq: 1,
                nb_txq: 1,
                nb_rxd: 64,
                nb_txd: 64,
                max_rx_pktlen: 0,
                mempool: pool.clone(),
            })
            .unwrap();
        }
        let mut qa = a.start().unwrap();
        let mut qb = b.start().unwrap();
        let mut batch = MbufBatch::with_burst(32);
        fill(&pool, &mut batch, 0, 10, 64);
        assert_eq!(qa.tx[0].tx_burst(&mut batch), 10);
        assert_eq!(
            qa.rx[0].rx_burst(&mut batch),
            0,
            "nothing loops back on a paired port"
        );
        assert_eq!(qb.rx[0].rx_burst(&mut batch), 10);
        assert!(
            batch
                .iter()
                .enumerate()
                .all(|(i, m)| m.data() == test_frame(i as u32, 64) && m.port() == 1)
        );
        // A full ring leaves the unsent tail in the batch.
        let mut big = MbufBatch::with_burst(512);
        fill(&pool, &mut big, 0, 100, 64);
        let sent = qb.tx[0].tx_burst(&mut big);
        assert_eq!(sent, 64);
        assert_eq!(big.len(), 36);
        drop(big);
        drop(batch);
        drop((qa, qb));
        drop((a, b, bus));
        assert_eq!(
            pool.in_use(),
            0,
            "mbufs left in rings are freed with the rings"
        );
    }

    #[test]
    fn bad_devargs() {
        let mut bus = RingBus::new();
        let e = bus
            .create(&DevArgs::parse("net_ring0,nodeaction=x").unwrap(), 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key \"nodeaction\"") && e.contains("accepted keys: peer"),
            "{e}"
        );
        let mut a = bus
            .create(&DevArgs::parse("net_ring0,peer=net_ring9").unwrap(), 0)
            .unwrap();
        let e = bus.connect(&mut [&mut a]).unwrap_err().to_string();
        assert!(e.contains("no such net_ring device"), "{e}");
        assert!(
            bus.create(&DevArgs::parse("net_ring0").unwrap(), 1)
                .is_err(),
            "duplicate name"
        );
    }
}
