//! `net_null`: a port that receives as fast as its mempool allows and discards
//! whatever it transmits, doing the same work as DPDK's net_null so that
//! benchmarks of the two compare like with like.
//!
//! Receive allocates a burst of mbufs in bulk from the queue's mempool and sets
//! their length (`size`, default 64) without touching the data unless `copy=1`;
//! transmit counts and frees. Device arguments: `size`, `copy`, `no-rx`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use nicpoll::mbuf::MbufBatch;
use nicpoll::mempool::Mempool;
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_null";
const KEYS: &[&str] = &["size", "copy", "no-rx"];
const MAX_QUEUES: u16 = 64;

/// Options of a null port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NullOptions {
    /// Length of each received packet.
    pub size: u16,
    /// Copy a packet template into each received mbuf (and read each transmitted
    /// one), as DPDK's `copy=1`.
    pub copy: bool,
    /// Receive nothing.
    pub no_rx: bool,
}

impl Default for NullOptions {
    fn default() -> Self {
        NullOptions {
            size: 64,
            copy: false,
            no_rx: false,
        }
    }
}

impl NullOptions {
    /// Read `size`, `copy` and `no-rx` from device arguments.
    pub fn from_devargs(args: &DevArgs) -> Result<NullOptions> {
        args.check_keys(KEYS)?;
        let d = NullOptions::default();
        Ok(NullOptions {
            size: args
                .get_u64("size", 0..=9000)?
                .map(|v| v as u16)
                .unwrap_or(d.size),
            copy: args.get_bool("copy")?.unwrap_or(d.copy),
            no_rx: args.get_bool("no-rx")?.unwrap_or(d.no_rx),
        })
    }
}

/// A null port.
#[derive(Debug)]
pub struct NullPort {
    name: String,
    opts: NullOptions,
    mac: MacAddr,
    conf: Option<(PortConf, u16, u16)>,
    started: bool,
    promisc: bool,
    counters: PortCounters,
}

impl NullPort {
    /// Create the port described by `args` (`net_nullN[,size=..][,copy=..][,no-rx=..]`).
    pub fn from_devargs(args: &DevArgs, port_id: u16) -> Result<NullPort> {
        args.expect_driver(DRIVER)?;
        Ok(NullPort::new(
            &args.name,
            NullOptions::from_devargs(args)?,
            port_id,
        ))
    }

    /// Create a null port with explicit options.
    pub fn new(name: &str, opts: NullOptions, port_id: u16) -> NullPort {
        NullPort {
            name: name.to_string(),
            opts,
            mac: MacAddr([0x02, 0x6e, 0x75, 0x6c, (port_id >> 8) as u8, port_id as u8]),
            conf: None,
            started: false,
            promisc: true,
            counters: PortCounters::default(),
        }
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        let port = self.conf.as_ref().map(|c| c.0.port_id).unwrap_or(0);
        Error::Port {
            port,
            name: self.name.clone(),
            op,
            reason,
        }
    }
}

impl Port for NullPort {
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
            max_rx_pktlen: 9000 + 14,
            numa_node: None,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        if self.started {
            return Err(self.err(
                "configure",
                "the port is started; stop it first (port stop N)".into(),
            ));
        }
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        if self.opts.size as usize > conf.mempool.data_room() {
            return Err(self.err(
                "configure",
                format!(
                    "size={} does not fit the mempool's {}-byte data room; lower size= or raise --mbuf-size",
                    self.opts.size,
                    conf.mempool.data_room()
                ),
            ));
        }
        self.counters
            .reconfigure(conf.nb_rxq as usize, conf.nb_txq as usize);
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
        let template = template_frame(self.opts.size as usize, self.mac);
        let rx = (0..conf.nb_rxq)
            .map(|q| {
                Box::new(NullRxQueue {
                    pool: conf.mempool.clone(),
                    size: self.opts.size,
                    copy: self.opts.copy,
                    no_rx: self.opts.no_rx,
                    port: conf.port_id,
                    queue: q,
                    template: template.clone(),
                    counters: self.counters.rx(q as usize),
                }) as Box<dyn RxQueue>
            })
            .collect();
        let tx = (0..conf.nb_txq)
            .map(|q| {
                Box::new(NullTxQueue {
                    copy: self.opts.copy,
                    sink: [0; 64],
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
        Link {
            up: self.started,
            speed_mbps: 10_000,
            full_duplex: true,
        }
    }

    fn mac_addr(&self) -> MacAddr {
        self.mac
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

/// The frame `copy=1` writes: broadcast from the port, EtherType 0x88b5
/// (local experimental), zero payload.
fn template_frame(size: usize, mac: MacAddr) -> Box<[u8]> {
    let mut f = vec![0u8; size];
    if size >= 14 {
        f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
        f[6..12].copy_from_slice(&mac.0);
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    }
    f.into()
}

struct NullRxQueue {
    pool: Mempool,
    size: u16,
    copy: bool,
    no_rx: bool,
    port: u16,
    queue: u16,
    template: Box<[u8]>,
    counters: QueueCountersRef,
}

impl RxQueue for NullRxQueue {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let n = out.spare();
        if n == 0 || self.no_rx {
            return 0;
        }
        let first = out.len();
        if !self
            .pool
            .alloc_bulk_rx(out, n, self.size, self.port, self.queue)
        {
            self.counters.rx_nombuf.add(n as u64);
            return 0;
        }
        let size = self.size as usize;
        if self.copy {
            for m in &mut out.as_mut_slice()[first..] {
                m.data_mut().copy_from_slice(&self.template);
            }
        }
        self.counters.rx_packets.add(n as u64);
        self.counters.rx_bytes.add((n * size) as u64);
        n
    }
}

struct NullTxQueue {
    copy: bool,
    sink: [u8; 64],
    counters: QueueCountersRef,
}

impl TxQueue for NullTxQueue {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        if self.copy {
            for m in pkts.iter() {
                // Read the packet as a device would (DPDK's copy=1 copies it out).
                let d = m.data();
                let k = d.len().min(self.sink.len());
                self.sink[..k].copy_from_slice(&d[..k]);
            }
        }
        let (n, bytes) = pkts.clear_counting_bytes();
        self.counters.tx_packets.add(n as u64);
        self.counters.tx_bytes.add(bytes);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::memory::DmaMemory;
    use nicpoll::mempool::MempoolConfig;
    use nicpoll::port::testing::{self, Delivery};

    #[test]
    fn passes_the_port_conformance_suite() {
        testing::run_conformance(
            "net_null",
            &mut |id| {
                Ok(
                    Box::new(NullPort::from_devargs(&DevArgs::parse("net_null0")?, id)?)
                        as Box<dyn Port>,
                )
            },
            Delivery::Generates,
        );
        testing::run_conformance(
            "net_null copy=1",
            &mut |id| {
                Ok(Box::new(NullPort::from_devargs(
                    &DevArgs::parse("net_null0,copy=1,size=128")?,
                    id,
                )?) as Box<dyn Port>)
            },
            Delivery::Generates,
        );
    }

    #[test]
    fn devargs_are_checked() {
        let ok = NullOptions::from_devargs(&DevArgs::parse("net_null0,size=128,copy=1").unwrap())
            .unwrap();
        assert_eq!(
            ok,
            NullOptions {
                size: 128,
                copy: true,
                no_rx: false
            }
        );
        for (spec, needle) in [
            ("net_null0,sizes=64", "unknown key \"sizes\""),
            (
                "net_null0,size=big",
                "size=\"big\" is not a number from 0 to 9000",
            ),
            ("net_null0,size=100000", "from 0 to 9000"),
            ("net_null0,copy=2", "not a boolean"),
        ] {
            let e = NullOptions::from_devargs(&DevArgs::parse(spec).unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        assert!(NullPort::from_devargs(&DevArgs::parse("net_ring0").unwrap(), 0).is_err());
    }

    #[test]
    fn receives_sized_packets_and_counts_nombuf() {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("null-test", 64)).unwrap();
        let mut p = NullPort::new(
            "net_null0",
            NullOptions {
                size: 100,
                copy: true,
                no_rx: false,
            },
            3,
        );
        p.configure(&PortConf {
            port_id: 3,
            nb_rxq: 1,
            nb_txq: 1,
            nb_rxd: 0,
            nb_txd: 0,
            mempool: pool.clone(),
        })
        .unwrap();
        let mut q = p.start().unwrap();
        let mut b = MbufBatch::with_burst(32);
        assert_eq!(q.rx[0].rx_burst(&mut b), 32);
        assert!(
            b.iter()
                .all(|m| m.len() == 100 && m.port() == 3 && m.data()[12..14] == [0x88, 0xb5])
        );
        let mut b2 = MbufBatch::with_burst(64);
        assert_eq!(
            q.rx[0].rx_burst(&mut b2),
            0,
            "only 32 left, bulk of 64 fails"
        );
        assert_eq!(p.stats().rx_nombuf, 64);
        assert_eq!(q.tx[0].tx_burst(&mut b), 32);
        let s = p.stats();
        assert_eq!(
            (s.ipackets, s.ibytes, s.opackets, s.obytes),
            (32, 3200, 32, 3200)
        );
        drop(q);
        assert_eq!(pool.in_use(), 0);
    }
}
