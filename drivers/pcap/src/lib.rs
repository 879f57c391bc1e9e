//! `net_pcap`: ports backed by pcap files, like DPDK's pcap PMD.
//!
//! ```text
//! --vdev 'net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap[,infinite_rx=1]'
//! ```
//!
//! - `rx_pcap=FILE`: receive queue 0 replays the packets of FILE, in order. Without
//!   `infinite_rx` the file is delivered once per start (each start replays it from
//!   the beginning, as DPDK reopens the file at start), then the queue receives
//!   nothing. With `infinite_rx=1` it wraps around forever.
//! - `tx_pcap=FILE`: transmit queue 0 appends each packet to FILE as a record.
//! - Without `rx_pcap` receive queues receive nothing; without `tx_pcap` transmit
//!   queues drop what they are given and count it as sent (DPDK's tx_drop mode).
//!   At least one of the two files must be given.
//! - `iface`, `rx_iface`, `rx_iface_in`, `tx_iface` (DPDK's live capture through
//!   libpcap) are refused: use `net_af_packet,iface=NAME`.
//!
//! One queue each way. DPDK makes one queue per `rx_pcap`/`tx_pcap` key given;
//! [`DevArgs`] refuses a repeated key, so a port has at most one receive and one
//! transmit file, hence `max_rx_queues = max_tx_queues = 1`.
//!
//! # Receive: preloaded
//!
//! Reading the file on the fast path would cost a syscall per packet (or per
//! buffer refill). The whole file is read once, when the port is created (where
//! DPDK's probe opens it, so a missing file, a foreign format or a wrong link type
//! fails at once), into one buffer plus an index of (offset, length) per record:
//! memory is the file's size plus 8 bytes a packet. Files larger than
//! [`PcapOptions::max_rx_file_bytes`] (1 GiB by default) are refused with an
//! error saying how to split them. `rx_burst` copies records into mbufs allocated
//! in bulk from the queue's mempool: no syscall, no allocation, no lock. Mbufs are
//! stamped with the port id and queue 0; capture timestamps are not carried.
//!
//! Classic pcap only (pcapng is refused with the `editcap` command that converts
//! it), microsecond or nanosecond magic, either byte order, link type Ethernet (1)
//! only. Records captured with a snaplen (`orig_len > incl_len`) are delivered as
//! captured.
//!
//! Bad records are never truncated silently or lost unaccounted for:
//!
//! - a record longer than the port's frame limit (`--max-pkt-len`, else
//!   262144 bytes), or shorter than an Ethernet header (14 bytes), is skipped
//!   and counted in `ierrors` (`rx_errors`), each time the replay reaches it;
//!   a record longer than the mempool's data room is delivered as a chain of
//!   mbufs (DPDK's pcap PMD does the same), one that finds the pool short is
//!   counted in `rx_nombuf` and skipped;
//! - a truncated or corrupt record (cut in its header or its data, or announcing
//!   more than 262144 bytes) ends the file: creating the port still succeeds, the
//!   packets before it are delivered, the error (naming the file and the record's
//!   byte offset) is logged as a warning, returned by [`PcapPort::rx_file_error`],
//!   shown as the xstat `rx_pcap_truncated_at_offset` (0 when the file is sound:
//!   no record starts before byte 24), and counted once in `ierrors` each time the
//!   replay reaches the end of the file. Failing instead would deliver nothing,
//!   which loses the good packets; succeeding silently would hide the damage.
//!
//! # Transmit: buffered
//!
//! The file is created (truncated) when the port is created and stays open for the
//! port's life: packets sent after a stop and a restart are appended to the same
//! capture (DPDK truncates it again at each start). Records get nanosecond
//! timestamps from CLOCK_REALTIME, read once per burst (through the vDSO, no
//! syscall). They go through a 1 MiB [`BufWriter`](std::io::BufWriter): a write(2)
//! happens only when it fills, i.e. once per ~13 000 64-byte packets, amortized
//! over many bursts, never per packet. The buffer is flushed when the transmit
//! queue is dropped, when the port stops and when it is dropped; the file is
//! complete once the port is stopped. A chain is written as one record. The
//! file's snaplen is 262144, so jumbo frames are read back whole. A failed
//! write (disk full) is counted in
//! `oerrors` for that packet and every later one (nothing more is written, so the
//! file never holds a record after a partial one), and the OS error, naming the
//! file, is returned by the next [`Port::stop`], which stops the port anyway.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod file;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use nicpoll::mbuf::MbufBatch;
use nicpoll::mempool::Mempool;
use nicpoll::port::counters::QueueCountersRef;
use nicpoll::port::{
    self, DevArgs, Link, MacAddr, PortConf, PortCounters, PortInfo, PortQueues, PortStats,
};
use nicpoll::{Error, Port, Result, RxQueue, TxQueue};

pub use file::{PcapFileError, RxFile, TxFile};

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_pcap";
const KEYS: &[&str] = &["rx_pcap", "tx_pcap", "infinite_rx"];
/// DPDK's live-capture keys, refused by name.
const LIVE_KEYS: &[&str] = &["iface", "rx_iface", "rx_iface_in", "tx_iface"];
/// Shortest frame delivered: an Ethernet header.
const MIN_FRAME: usize = 14;

/// Options of a pcap port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapOptions {
    /// File whose packets receive queue 0 replays.
    pub rx_pcap: Option<PathBuf>,
    /// File transmit queue 0 writes.
    pub tx_pcap: Option<PathBuf>,
    /// Replay the receive file forever.
    pub infinite_rx: bool,
    /// Largest receive file loaded into memory (not a device argument).
    pub max_rx_file_bytes: u64,
}

impl Default for PcapOptions {
    fn default() -> Self {
        PcapOptions {
            rx_pcap: None,
            tx_pcap: None,
            infinite_rx: false,
            max_rx_file_bytes: file::DEFAULT_MAX_RX_FILE_BYTES,
        }
    }
}

impl PcapOptions {
    /// Read `rx_pcap`, `tx_pcap` and `infinite_rx` from device arguments.
    pub fn from_devargs(args: &DevArgs) -> Result<PcapOptions> {
        let bad = |reason: String| Error::DevArgs {
            device: args.spec.clone(),
            reason,
        };
        for (k, v) in &args.args {
            if LIVE_KEYS.contains(&k.as_str()) {
                return Err(bad(format!(
                    "{k}={v}: net_pcap does not capture live from interfaces; \
                     use net_af_packet,iface={v} for that"
                )));
            }
        }
        args.check_keys(KEYS)?;
        let path = |key: &str| -> Result<Option<PathBuf>> {
            match args.get(key) {
                None => Ok(None),
                Some("") => Err(bad(format!("{key}= needs a file name, e.g. {key}=in.pcap"))),
                Some(p) => Ok(Some(PathBuf::from(p))),
            }
        };
        let opts = PcapOptions {
            rx_pcap: path("rx_pcap")?,
            tx_pcap: path("tx_pcap")?,
            infinite_rx: args.get_bool("infinite_rx")?.unwrap_or(false),
            ..PcapOptions::default()
        };
        if opts.rx_pcap.is_none() && opts.tx_pcap.is_none() {
            return Err(bad(
                "neither rx_pcap nor tx_pcap given; e.g. net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap"
                    .into(),
            ));
        }
        if opts.infinite_rx && opts.rx_pcap.is_none() {
            return Err(bad("infinite_rx=1 needs rx_pcap=FILE to replay".into()));
        }
        Ok(opts)
    }
}

/// The transmit file, parked here while no transmit queue holds it.
type TxSlot = Arc<Mutex<Option<TxFile>>>;

fn lock(slot: &TxSlot) -> MutexGuard<'_, Option<TxFile>> {
    // A panic while holding it leaves a consistent Option: keep going.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// A pcap port.
#[derive(Debug)]
pub struct PcapPort {
    name: String,
    port_id: u16,
    opts: PcapOptions,
    rx: Option<Arc<RxFile>>,
    tx: TxSlot,
    conf: Option<(PortConf, u16, u16)>,
    started: bool,
    promisc: bool,
    counters: PortCounters,
    /// Cloned into every queue handed out: more than one holder means queues live.
    alive: Arc<()>,
}

impl PcapPort {
    /// Create the port described by `args`
    /// (`net_pcapN[,rx_pcap=FILE][,tx_pcap=FILE][,infinite_rx=0|1]`): loads the
    /// receive file and creates the transmit file.
    pub fn from_devargs(args: &DevArgs, port_id: u16) -> Result<PcapPort> {
        args.expect_driver(DRIVER)?;
        PcapPort::new(&args.name, PcapOptions::from_devargs(args)?, port_id)
    }

    /// Create a pcap port with explicit options.
    pub fn new(name: &str, opts: PcapOptions, port_id: u16) -> Result<PcapPort> {
        let fail = |e: PcapFileError| file_error(name, port_id, e);
        if opts.rx_pcap.is_none() && opts.tx_pcap.is_none() {
            return Err(Error::port(
                port_id,
                name,
                "create",
                "neither rx_pcap nor tx_pcap given".into(),
            ));
        }
        let rx = match &opts.rx_pcap {
            None => None,
            Some(p) => {
                let f = RxFile::load(p, opts.max_rx_file_bytes).map_err(fail)?;
                if let Some(e) = f.error() {
                    log::warn!("{name}: {e}");
                }
                if opts.infinite_rx && f.is_empty() {
                    return Err(Error::port(
                        port_id,
                        name,
                        "create",
                        format!("infinite_rx=1: {} holds no packet to replay", p.display()),
                    ));
                }
                log::info!(
                    "{name}: {} packets ({} bytes) loaded from {}",
                    f.len(),
                    f.bytes().len(),
                    p.display()
                );
                Some(Arc::new(f))
            }
        };
        let tx = match &opts.tx_pcap {
            None => None,
            Some(t) => {
                if let Some(r) = &opts.rx_pcap
                    && same_file(r, t)
                {
                    return Err(Error::port(
                        port_id,
                        name,
                        "create",
                        format!(
                            "rx_pcap and tx_pcap name the same file {}; the transmit file is \
                             truncated when the port is created: give tx_pcap another name",
                            t.display()
                        ),
                    ));
                }
                Some(TxFile::create(t).map_err(fail)?)
            }
        };
        Ok(PcapPort {
            name: name.to_string(),
            port_id,
            opts,
            rx,
            tx: Arc::new(Mutex::new(tx)),
            conf: None,
            started: false,
            promisc: true,
            counters: PortCounters::default(),
            alive: Arc::new(()),
        })
    }

    /// The options the port was made with.
    pub fn options(&self) -> &PcapOptions {
        &self.opts
    }

    /// The receive file, once loaded.
    pub fn rx_file(&self) -> Option<&RxFile> {
        self.rx.as_deref()
    }

    /// The truncated or corrupt record the receive file ends in, if any: its
    /// message names the file and the record's byte offset. The packets before it
    /// are delivered.
    pub fn rx_file_error(&self) -> Option<&PcapFileError> {
        self.rx.as_ref().and_then(|f| f.error())
    }

    fn err(&self, op: &'static str, reason: String) -> Error {
        Error::port(self.port_id, &self.name, op, reason)
    }

    fn flush_tx(&self) -> std::result::Result<(), PcapFileError> {
        match lock(&self.tx).as_mut() {
            Some(t) => t.flush(),
            None => Ok(()),
        }
    }
}

fn file_error(name: &str, port: u16, e: PcapFileError) -> Error {
    match e {
        PcapFileError::Io { op, path, source } => Error::Io {
            op,
            path,
            source,
            hint: Some(
                "check the rx_pcap=/tx_pcap= path, that its directory exists, and permissions",
            ),
        },
        other => Error::port(port, name, "create", other.to_string()),
    }
}

/// Whether two paths are the same existing file (same device and inode).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

impl Port for PcapPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            driver: DRIVER,
            name: self.name.clone(),
            max_rx_queues: 1,
            max_tx_queues: 1,
            default_rxd: 512,
            default_txd: 512,
            min_rxd: 1,
            max_rxd: 32768,
            min_txd: 1,
            max_txd: 32768,
            desc_align: 1,
            max_rx_pktlen: file::MAX_SNAPLEN,
            rx_scatter: true,
            tx_multi_seg: true,
            numa_node: None,
        }
    }

    fn configure(&mut self, conf: &PortConf) -> Result<()> {
        port::ensure_stopped(self.started, self.port_id, &self.name)?;
        let (rxd, txd) = port::check_conf(conf.port_id, &self.info(), conf)?;
        let limit = port::rx_frame_limit(conf.port_id, &self.info(), conf)? as usize;
        if let Some(f) = &self.rx
            && conf.nb_rxq > 0
            && self.opts.infinite_rx
            && !f.frames().iter().any(|&(_, l)| fits(l, limit))
        {
            return Err(self.err(
                "configure",
                format!(
                    "infinite_rx=1: none of the {} packets of {} is from {MIN_FRAME} bytes to \
                     the {limit}-byte frame limit, so nothing can be replayed; raise \
                     --max-pkt-len",
                    f.len(),
                    f.path().display()
                ),
            ));
        }
        self.port_id = conf.port_id;
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
        let rx = (0..conf.nb_rxq)
            .map(|q| {
                Box::new(PcapRxQueue {
                    file: self.rx.clone(),
                    pos: 0,
                    done: false,
                    infinite: self.opts.infinite_rx,
                    room: conf.mempool.data_room(),
                    limit: match conf.max_rx_pktlen {
                        0 => file::MAX_SNAPLEN as usize,
                        l => l as usize,
                    },
                    pool: conf.mempool.clone(),
                    port: conf.port_id,
                    queue: q,
                    counters: self.counters.rx(q as usize),
                    _alive: self.alive.clone(),
                }) as Box<dyn RxQueue>
            })
            .collect();
        let mut file = if conf.nb_txq > 0 {
            let f = lock(&self.tx).take();
            if f.is_none() && self.opts.tx_pcap.is_some() {
                return Err(self.err(
                    "start",
                    "the tx_pcap file is still held by a transmit queue of an earlier start; \
                     drop that queue first"
                        .into(),
                ));
            }
            f
        } else {
            None
        };
        let tx = (0..conf.nb_txq)
            .map(|q| {
                Box::new(PcapTxQueue {
                    file: if q == 0 { file.take() } else { None },
                    slot: self.tx.clone(),
                    counters: self.counters.tx(q as usize),
                    _alive: self.alive.clone(),
                }) as Box<dyn TxQueue>
            })
            .collect();
        self.started = true;
        Ok(PortQueues { rx, tx })
    }

    fn stop(&mut self) -> Result<()> {
        if !self.started {
            return Ok(());
        }
        if Arc::strong_count(&self.alive) > 1 {
            return Err(self.err(
                "stop",
                "queues handed out by start are still in use; drop them before stopping".into(),
            ));
        }
        self.started = false;
        self.flush_tx()
            .map_err(|e| file_error(&self.name, self.port_id, e))
    }

    fn is_started(&self) -> bool {
        self.started
    }

    fn link(&self) -> Link {
        Link::software(self.started)
    }

    fn mac_addr(&self) -> MacAddr {
        // 02:70:63:61 is "pcap" as DPDK's pcap PMD spells its address.
        MacAddr::with_prefix([0x02, 0x70, 0x63, 0x61], self.port_id)
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
        let mut v = self.counters.xstats();
        if let Some(f) = &self.rx {
            v.push(("rx_pcap_file_packets".into(), f.len() as u64));
            v.push((
                "rx_pcap_truncated_at_offset".into(),
                f.error_offset().unwrap_or(0),
            ));
        }
        v
    }
}

impl Drop for PcapPort {
    fn drop(&mut self) {
        if let Err(e) = self.flush_tx() {
            log::error!("{}: {e}", self.name);
        }
    }
}

#[inline(always)]
fn fits(len: u32, room: usize) -> bool {
    (MIN_FRAME..=room).contains(&(len as usize))
}

struct PcapRxQueue {
    file: Option<Arc<RxFile>>,
    /// Next record to deliver.
    pos: usize,
    /// A finite replay reached the end (and counted a bad last record).
    done: bool,
    infinite: bool,
    /// An mbuf's data room: longer records become chains.
    room: usize,
    /// Longest record delivered (the frame limit).
    limit: usize,
    pool: Mempool,
    port: u16,
    queue: u16,
    counters: QueueCountersRef,
    _alive: Arc<()>,
}

impl RxQueue for PcapRxQueue {
    #[inline]
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        let Some(file) = &self.file else { return 0 };
        let spare = out.spare();
        if spare == 0 || self.done {
            return 0;
        }
        let frames = file.frames();
        let total = frames.len();
        let ends_bad = file.error().is_some() as u64;
        let (room, limit) = (self.room, self.limit);

        // Pass 1: which records this burst takes, without committing anything, so
        // an empty mempool leaves the replay where it was.
        let (mut pos, mut n, mut bad, mut done) = (self.pos, 0usize, 0u64, false);
        // Records looked at since the last good one: stops a pass that finds nothing.
        let mut dry = 0usize;
        while n < spare {
            if pos == total {
                bad += ends_bad;
                if !self.infinite {
                    done = true;
                    break;
                }
                pos = 0;
                if dry > total {
                    break;
                }
                continue;
            }
            if fits(frames[pos].1, limit) {
                n += 1;
                dry = 0;
            } else {
                bad += 1;
                dry += 1;
            }
            pos += 1;
        }

        let first = out.len();
        if n > 0 && !self.pool.alloc_bulk(out, n) {
            self.counters.rx_nombuf.add(n as u64);
            return 0;
        }
        // Pass 2: copy the same records into the new mbufs.
        let bytes = file.bytes();
        let mut cur = self.pos;
        let mut nbytes = 0u64;
        let mut short = false;
        for m in &mut out.as_mut_slice()[first..] {
            loop {
                if cur == total {
                    cur = 0;
                }
                let (off, len) = frames[cur];
                cur += 1;
                if fits(len, limit) {
                    let (off, len) = (off as usize, len as usize);
                    let record = &bytes[off..off + len];
                    if len <= room {
                        m.set_len(len);
                        m.data_mut().copy_from_slice(record);
                    } else if !self.fill_chain(m, record) {
                        short = true;
                    }
                    m.set_port(self.port);
                    m.set_queue(self.queue);
                    nbytes += m.pkt_len() as u64;
                    break;
                }
            }
        }
        if short {
            // Records whose chain the pool could not complete are counted and
            // skipped (emptied by fill_chain).
            let dropped = out.retain_mut_from(first, |m| !m.is_empty());
            n -= dropped;
            self.counters.rx_nombuf.add(dropped as u64);
        }
        self.pos = pos;
        self.done = done;
        if n > 0 {
            self.counters.rx_packets.add(n as u64);
            self.counters.rx_bytes.add(nbytes);
        }
        if bad > 0 {
            self.counters.rx_errors.add(bad);
        }
        n
    }
}

impl PcapRxQueue {
    /// Copy a record longer than an mbuf into `m` and as many more mbufs as
    /// it takes; false, with `m` emptied, if the pool runs short.
    #[cold]
    fn fill_chain(&self, m: &mut nicpoll::Mbuf, record: &[u8]) -> bool {
        let mut chain = nicpoll::mbuf::RxChain::new();
        for piece in record[self.room..].chunks(self.room) {
            let Some(mut seg) = self.pool.alloc() else {
                chain.discard();
                m.set_len(0);
                return false;
            };
            seg.append(piece.len())
                .expect("a piece of data-room size fits")
                .copy_from_slice(piece);
            // A record of at most 262144 bytes is at most 158 segments.
            let _ = chain.push(seg);
        }
        m.set_len(self.room);
        m.data_mut().copy_from_slice(&record[..self.room]);
        if let Some(rest) = chain.finish() {
            let _ = m.chain(rest);
        }
        true
    }
}

struct PcapTxQueue {
    /// None: drop mode (no tx_pcap), or a queue other than 0.
    file: Option<TxFile>,
    slot: TxSlot,
    counters: QueueCountersRef,
    _alive: Arc<()>,
}

impl TxQueue for PcapTxQueue {
    #[inline]
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let (mut bytes, mut failed) = (0u64, 0u64);
        match &mut self.file {
            None => {
                for m in pkts.iter() {
                    bytes += m.pkt_len() as u64;
                }
            }
            Some(f) => {
                // CLOCK_REALTIME, once per burst.
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                for m in pkts.iter() {
                    let ok = if m.is_chained() {
                        f.write_record_parts(ts, m.pkt_len(), m.segments())
                    } else {
                        f.write_record(ts, m.data())
                    };
                    if ok {
                        bytes += m.pkt_len() as u64;
                    } else {
                        failed += 1;
                    }
                }
            }
        }
        let n = pkts.clear();
        self.counters.tx_packets.add(n as u64 - failed);
        self.counters.tx_bytes.add(bytes);
        if failed > 0 {
            self.counters.tx_errors.add(failed);
        }
        n
    }
}

impl Drop for PcapTxQueue {
    fn drop(&mut self) {
        if let Some(mut f) = self.file.take() {
            // Write the buffer out now; an error stays in `f` for stop to report.
            f.write_out();
            *lock(&self.slot) = Some(f);
        }
    }
}

#[cfg(test)]
mod tests;
