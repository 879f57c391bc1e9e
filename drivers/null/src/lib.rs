//! `net_null`: a port that receives as fast as its mempool allows and discards
//! whatever it transmits, doing the same work as DPDK's net_null so that
//! benchmarks of the two compare like with like.
//!
//! Receive allocates a burst of mbufs in bulk from the queue's mempool and sets
//! their length (`size`, default 64) without touching the data unless `copy=1`;
//! a `size` larger than an mbuf's data room gives chains of full mbufs (one
//! allocation per packet). Transmit counts and frees, chains included.
//! Device arguments: `size` (0 to 65535), `copy`, `no-rx`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use nicpoll::mbuf::{MbufBatch, RxChain};
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
                .get_u64("size", 0..=u16::MAX as u64)?
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

    /// The id the port was last configured with (0 before that).
    fn port_id(&self) -> u16 {
        self.conf.as_ref().map_or(0, |c| c.0.port_id)
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::port(self.port_id(), &self.name, op, reason)
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
            max_rx_pktlen: u16::MAX as u32,
            rx_scatter: true,
            tx_multi_seg: true,
            numa_node: None,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        port::ensure_stopped(self.started, self.port_id(), &self.name)?;
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        let limit = port::rx_frame_limit(conf.port_id, &self.info(), conf)?;
        if conf.nb_rxq > 0 && !self.opts.no_rx && self.opts.size as u32 > limit {
            return Err(self.err(
                "configure",
                format!(
                    "size={} is above the {limit}-byte frame limit (--max-pkt-len {}): every \
                     frame would be dropped; lower size= or raise --max-pkt-len",
                    self.opts.size,
                    limit + 4
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
                    chains: self.opts.size as usize > conf.mempool.data_room(),
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
        Link::software(self.started)
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
    /// `size` does not fit one mbuf.
    chains: bool,
    copy: bool,
    no_rx: bool,
    port: u16,
    queue: u16,
    template: Box<[u8]>,
    counters: QueueCountersRef,
}

impl NullRxQueue {
    /// Receive when `size` does not fit one mbuf: each packet a chain of
    /// full mbufs, allocated together (all or none for a packet).
    #[cold]
    fn rx_chains(&mut self, out: &mut MbufBatch) -> usize {
        let size = self.size as usize;
        let room = self.pool.data_room();
        let segs = size.div_ceil(room);
        let mut got = 0;
        let mut parts = MbufBatch::with_burst(nicpoll::MAX_BURST);
        while out.spare() > 0 {
            if !self
                .pool
                .alloc_bulk_rx(&mut parts, segs, room as u16, self.port, self.queue)
            {
                self.counters.rx_nombuf.add(out.spare() as u64);
                break;
            }
            let mut chain = RxChain::new();
            while let Some(m) = parts.pop_front() {
                // At most 40 segments of 1664 bytes (65535 bytes): below MAX_SEGS.
                let _ = chain.push(m);
            }
            let mut m = chain.finish().expect("at least one segment");
            m.trim(segs * room - size);
            if self.copy {
                m.copy_in(0, &self.template);
            }
            let _ = out.push(m);
            got += 1;
        }
        self.counters.rx_packets.add(got as u64);
        self.counters.rx_bytes.add((got * size) as u64);
        got
    }
}

impl RxQueue for NullRxQueue {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let n = out.spare();
        if n == 0 || self.no_rx {
            return 0;
        }
        if self.chains {
            return self.rx_chains(out);
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
                "size=\"big\" is not a number from 0 to 65535",
            ),
            ("net_null0,size=100000", "from 0 to 65535"),
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
            max_rx_pktlen: 0,
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

    /// A size larger than an mbuf gives chains of full mbufs (the last one
    /// partly), with the template across them; transmit frees every segment
    /// and counts every byte; a size above the frame limit is refused.
    #[test]
    fn jumbo_sizes_are_chains() {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("null-jumbo", 256)).unwrap();
        let room = pool.data_room();
        let mut p = NullPort::new(
            "net_null0",
            NullOptions {
                size: 9014,
                copy: true,
                no_rx: false,
            },
            1,
        );
        let mut c = PortConf {
            port_id: 1,
            nb_rxq: 1,
            nb_txq: 1,
            nb_rxd: 0,
            nb_txd: 0,
            max_rx_pktlen: 9013,
            mempool: pool.clone(),
        };
        let e = p.configure(&c).unwrap_err().to_string();
        assert!(
            e.contains("size=9014 is above the 9013-byte frame limit"),
            "{e}"
        );
        c.max_rx_pktlen = 9014;
        p.configure(&c).unwrap();
        let mut q = p.start().unwrap();
        let mut b = MbufBatch::with_burst(8);
        assert_eq!(q.rx[0].rx_burst(&mut b), 8);
        let segs = 9014usize.div_ceil(room);
        assert_eq!(pool.in_use() as usize, 8 * segs);
        let template = template_frame(9014, p.mac_addr());
        for m in b.iter() {
            assert_eq!((m.pkt_len(), m.nb_segs(), m.len()), (9014, segs, room));
            assert_eq!(m.port(), 1);
            let mut bytes = vec![0; 9014];
            assert_eq!(m.copy_out(0, &mut bytes), 9014);
            assert_eq!(&bytes[..], &template[..]);
        }
        assert_eq!(q.tx[0].tx_burst(&mut b), 8);
        let s = p.stats();
        assert_eq!(
            (s.ipackets, s.ibytes, s.opackets, s.obytes),
            (8, 8 * 9014, 8, 8 * 9014)
        );
        // 256 mbufs hold 256 / segs packets: the rest is counted.
        let mut big = MbufBatch::with_burst(64);
        let got = q.rx[0].rx_burst(&mut big);
        assert_eq!(got, 256 / segs);
        assert!(p.stats().rx_nombuf > 0);
        drop(big);
        drop(q);
        assert_eq!(pool.in_use(), 0);
    }
}
