//! Tests of the admin-queue client, the bring-up and the port against a tiny
//! fake PF: a thread that watches the registers of a `SimBar`, reads the ATQ
//! and the rings through the memory the driver mapped, answers virtchnl as a
//! PF does (checking message lengths), and loops transmitted frames back to
//! the receive rings. The real device model (`sim/`) is tested in
//! `tests/pmd_sim.rs`; this fake only knows what these tests need.
#![deny(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the fake PF offers for RSS: X722's expanded set (i40e's
/// `I40E_DEFAULT_RSS_HENA_EXPANDED`: PCTYPEs 29-36, 39-46, 63).
const OFFERED_HENA: u64 = 0x8000_7F9F_E000_0000;

use nicpoll::Port;
use nicpoll::bar::{Bar, SimBar};
use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::testing::{self, Delivery};
use nicpoll::port::{DevArgs, PortConf};

use crate::adminq::{AQ_LEN, AqDesc, flags};
use crate::desc::{RxDesc, TxDesc, rx_error, rx_status};
use crate::error::IavfError;
use crate::options::IavfOptions;
use crate::regs;
use crate::ring::fake::FakeIommu;
use crate::vf::{Timeouts, Vf};
use crate::virtchnl::{self, EthStats, Op, PfEvent, QueueSelect, VfResource, VsiResource};
use crate::{IavfPort, adminq};

/// A `Bar` both the driver and the fake PF hold.
#[derive(Clone)]
struct SharedBar(Arc<SimBar>);

impl Bar for SharedBar {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read32(&self, o: usize) -> u32 {
        self.0.read32(o)
    }
    fn write32(&self, o: usize, v: u32) {
        self.0.write32(o, v)
    }
    fn read16(&self, o: usize) -> u16 {
        self.0.read16(o)
    }
    fn write16(&self, o: usize, v: u16) {
        self.0.write16(o, v)
    }
    fn read8(&self, o: usize) -> u8 {
        self.0.read8(o)
    }
    fn write8(&self, o: usize, v: u8) {
        self.0.write8(o, v)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct FakeQueue {
    ring: u64,
    len: u16,
    buf: u32,
    /// Largest frame, CRC included (`max_pkt_size`; 0: none given).
    max: u32,
    head: u16,
    enabled: bool,
}

/// A bad write-back the fake PF produces for the next received frame.
#[derive(Clone, Copy, Debug)]
enum Corrupt {
    /// Length beyond the buffer.
    TooLong,
    /// RXE error bit.
    RxError,
    /// A frame split over two descriptors (first without EOP).
    Chained,
    /// L3/L4 checked, L4 checksum bad (the frame is still delivered).
    L4Checksum,
    /// A clean frame without an RSS hash (FLTSTAT 0).
    NoHash,
}

#[derive(Default)]
struct FakeState {
    /// Every virtchnl request: (opcode, length).
    log: Vec<(u32, usize)>,
    /// Opcodes answered with this status instead of success.
    fail: HashMap<u32, i32>,
    /// Opcodes never answered.
    silent: Vec<u32>,
    version: (u32, u32),
    grant: u32,
    num_qps: u16,
    mac: [u8; 6],
    rx: Vec<FakeQueue>,
    tx: Vec<FakeQueue>,
    lut: Vec<u8>,
    key: Vec<u8>,
    hena: u64,
    promisc: u16,
    macs: Vec<[u8; 6]>,
    stats: EthStats,
    events: VecDeque<Vec<u8>>,
    /// Reset the VF now, holding RSTAT in progress this long.
    reset: Option<Duration>,
    corrupt: Option<Corrupt>,
    /// Per transmit queue, the buffers of a frame whose EOP has not come.
    tx_partial: Vec<Vec<u8>>,
    /// Frames dropped for being over a queue's max_pkt_size.
    rx_oversize: u64,
    /// Frames are not looped back while set (fills receive rings otherwise).
    hold_tx: bool,
    resets_done: u32,
}

struct FakePf {
    bar: Arc<SimBar>,
    iommu: Arc<FakeIommu>,
    st: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const BAR_LEN: usize = 0x10000;

impl FakePf {
    fn new() -> FakePf {
        let bar = Arc::new(SimBar::new(BAR_LEN));
        bar.write32(regs::VFGEN_RSTAT, 2);
        let iommu = Arc::new(FakeIommu::default());
        let st = Arc::new(Mutex::new(FakeState {
            version: (1, 1),
            grant: virtchnl::caps::REQUESTED,
            num_qps: 4,
            mac: [0x02, 0x09, 0x08, 0x07, 0x06, 0x05],
            rx: vec![FakeQueue::default(); 16],
            tx: vec![FakeQueue::default(); 16],
            tx_partial: vec![Vec::new(); 16],
            ..FakeState::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (bar, iommu, st, stop) = (bar.clone(), iommu.clone(), st.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut idle = 0u32;
                while !stop.load(Ordering::Acquire) {
                    let work = step(
                        &bar,
                        &iommu,
                        &mut st.lock().unwrap_or_else(|e| e.into_inner()),
                    );
                    if work {
                        idle = 0;
                    } else {
                        idle += 1;
                        if idle > 100 {
                            std::thread::sleep(Duration::from_micros(50));
                        } else {
                            std::thread::yield_now();
                        }
                    }
                }
            })
        };
        FakePf {
            bar,
            iommu,
            st,
            stop,
            thread: Some(thread),
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn driver_bar(&self) -> SharedBar {
        SharedBar(self.bar.clone())
    }

    fn dma(&self) -> Arc<dyn crate::DmaMap> {
        self.iommu.clone()
    }

    fn ops_seen(&self) -> Vec<u32> {
        self.state().log.iter().map(|&(op, _)| op).collect()
    }
}

impl Drop for FakePf {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One pass of the fake PF; true if it did anything.
fn step(bar: &SimBar, mem: &FakeIommu, st: &mut FakeState) -> bool {
    let mut work = false;
    if let Some(hold) = st.reset.take() {
        // The PF resets the VF: RSTAT in progress, ARQ and ATQ disabled,
        // queues gone; after `hold`, the VF is active again.
        bar.write32(regs::VFGEN_RSTAT, 0);
        bar.write32(regs::VF_ARQLEN1, 0);
        bar.write32(regs::VF_ATQLEN1, 0);
        for q in st.rx.iter_mut().chain(st.tx.iter_mut()) {
            *q = FakeQueue::default();
        }
        for q in 0..16 {
            bar.write32(regs::qrx_tail(q), 0);
            bar.write32(regs::qtx_tail(q), 0);
        }
        st.lut.clear();
        st.macs.clear();
        st.promisc = 0;
        st.stats = EthStats::default();
        std::thread::sleep(hold);
        st.resets_done += 1;
        bar.write32(regs::VFGEN_RSTAT, 2);
        return true;
    }
    // Admin queue: requests in, answers out.
    if bar.read32(regs::VF_ATQLEN1) & regs::AQ_LEN_ENABLE != 0 {
        let base =
            (bar.read32(regs::VF_ATQBAH1) as u64) << 32 | bar.read32(regs::VF_ATQBAL1) as u64;
        let tail = bar.read32(regs::VF_ATQT1) % AQ_LEN as u32;
        let mut head = bar.read32(regs::VF_ATQH1) % AQ_LEN as u32;
        while head != tail {
            work = true;
            let d = read_desc(mem, base + head as u64 * 32);
            let mut payload = vec![0u8; d.datalen() as usize];
            if d.flags() & flags::BUF != 0 {
                mem.read(d.addr(), &mut payload);
            }
            write_desc(mem, base + head as u64 * 32, d.completed(0));
            head = (head + 1) % AQ_LEN as u32;
            bar.write32(regs::VF_ATQH1, head);
            if let Some((status, reply)) = answer(bar, st, d.v_opcode(), &payload) {
                post(bar, mem, d.v_opcode(), status, &reply);
            }
        }
    }
    if bar.read32(regs::VF_ARQLEN1) & regs::AQ_LEN_ENABLE != 0 {
        while let Some(e) = st.events.pop_front() {
            post(bar, mem, Op::Event.raw(), 0, &e);
            work = true;
        }
    }
    // Transmit queues loop back to receive queues (by the RSS LUT if set).
    if !st.hold_tx {
        for q in 0..16u16 {
            let t = st.tx[q as usize];
            if !t.enabled {
                continue;
            }
            let tail = bar.read32(regs::qtx_tail(q)) as u16;
            let mut head = t.head;
            while head != tail && tail < t.len {
                work = true;
                let at = t.ring + head as u64 * 16;
                let d = read_tx(mem, at);
                let mut buf = vec![0u8; d.buf_size() as usize];
                mem.read(d.addr(), &mut buf);
                if d.cmd() & crate::desc::tx_cmd::RS != 0 {
                    write_tx(mem, at, TxDesc::done());
                }
                head = (head + 1) % t.len;
                // A frame is its buffers up to the one with EOP.
                st.tx_partial[q as usize].extend_from_slice(&buf);
                if d.cmd() & crate::desc::tx_cmd::EOP == 0 {
                    continue;
                }
                let frame = std::mem::take(&mut st.tx_partial[q as usize]);
                st.stats.tx_unicast += 1;
                st.stats.tx_bytes += frame.len() as u64 + 4;
                deliver(bar, mem, st, q, &frame);
            }
            st.tx[q as usize].head = head;
        }
    }
    work
}

fn flow_hash(frame: &[u8]) -> u32 {
    frame
        .iter()
        .skip(14)
        .take(4)
        .fold(2166136261u32, |h, &b| (h ^ b as u32).wrapping_mul(16777619))
}

fn deliver(bar: &SimBar, mem: &FakeIommu, st: &mut FakeState, txq: u16, frame: &[u8]) {
    let hash = flow_hash(frame);
    let q = if st.lut.is_empty() {
        txq
    } else {
        st.lut[hash as usize % st.lut.len()] as u16
    };
    let r = st.rx[q as usize];
    let tail = bar.read32(regs::qrx_tail(q)) as u16;
    if !r.enabled || r.head == tail || tail >= r.len {
        st.stats.rx_discards += 1;
        return;
    }
    // The queue's largest frame counts the CRC.
    if r.max != 0 && frame.len() + 4 > r.max as usize {
        st.stats.rx_discards += 1;
        st.rx_oversize += 1;
        return;
    }
    // A frame longer than a buffer takes several, EOP on the last.
    let buffers = frame.len().div_ceil(r.buf.max(1) as usize).max(1);
    if buffers > (tail + r.len - r.head) as usize % r.len as usize {
        st.stats.rx_discards += 1;
        return;
    }
    let fltstat = rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT;
    let write = |head: u16, data: &[u8], eop: bool, len: u16, err: u8| {
        let at = r.ring + head as u64 * 32;
        let d = read_rx(mem, at);
        mem.write(d.pkt_addr(), &data[..data.len().min(r.buf as usize)]);
        let status = rx_status::DD | if eop { rx_status::EOF } else { 0 } | fltstat;
        write_rx(mem, at, RxDesc::writeback(len, status, err, hash));
    };
    let mut head = r.head;
    match st.corrupt.take() {
        Some(Corrupt::TooLong) => write(head, frame, true, r.buf as u16 + 1, 0),
        Some(Corrupt::RxError) => write(head, frame, true, frame.len() as u16, rx_error::RXE),
        Some(Corrupt::L4Checksum) => {
            let at = r.ring + head as u64 * 32;
            let d = read_rx(mem, at);
            mem.write(d.pkt_addr(), frame);
            let status = rx_status::DD | rx_status::EOF | rx_status::L3L4P | fltstat;
            let wb = RxDesc::writeback(frame.len() as u16, status, rx_error::L4E, hash);
            write_rx(mem, at, wb);
        }
        Some(Corrupt::NoHash) => {
            let at = r.ring + head as u64 * 32;
            let d = read_rx(mem, at);
            mem.write(d.pkt_addr(), frame);
            let status = rx_status::DD | rx_status::EOF;
            let wb = RxDesc::writeback(frame.len() as u16, status, 0, hash);
            write_rx(mem, at, wb);
        }
        Some(Corrupt::Chained) if (r.head + 1) % r.len != tail => {
            let half = frame.len() / 2;
            write(head, &frame[..half], false, half as u16, 0);
            head = (head + 1) % r.len;
            write(head, &frame[half..], true, (frame.len() - half) as u16, 0);
        }
        _ => {
            let chunks: Vec<&[u8]> = frame.chunks(r.buf.max(1) as usize).collect();
            for (i, c) in chunks.iter().enumerate() {
                let last = i + 1 == chunks.len();
                write(head, c, last, c.len() as u16, 0);
                if !last {
                    head = (head + 1) % r.len;
                }
            }
        }
    }
    st.rx[q as usize].head = (head + 1) % r.len;
    st.stats.rx_unicast += 1;
    st.stats.rx_bytes += frame.len() as u64 + 4;
}

/// The PF's answer to one request: `None` for no answer.
fn answer(bar: &SimBar, st: &mut FakeState, op: u32, p: &[u8]) -> Option<(i32, Vec<u8>)> {
    st.log.push((op, p.len()));
    if st.silent.contains(&op) {
        return None;
    }
    if let Some(&s) = st.fail.get(&op) {
        return Some((s, Vec::new()));
    }
    const MISMATCH: i32 = virtchnl::STATUS_ERR_OPCODE_MISMATCH;
    let u16_at = |o: usize| u16::from_le_bytes([p[o], p[o + 1]]);
    let ok = |v: Vec<u8>| Some((0, v));
    let bad = || Some((MISMATCH, Vec::new()));
    match op {
        1 => {
            if p.len() != 8 {
                return bad();
            }
            let mut v = st.version.0.to_le_bytes().to_vec();
            v.extend_from_slice(&st.version.1.to_le_bytes());
            ok(v)
        }
        2 => {
            st.reset = Some(Duration::from_millis(20));
            None
        }
        3 => {
            if p.len() != 4 {
                return bad();
            }
            let asked = u32::from_le_bytes(p[..4].try_into().unwrap());
            let r = VfResource {
                num_vsis: 1,
                num_queue_pairs: st.num_qps,
                max_vectors: 5,
                max_mtu: 9000,
                vf_cap_flags: asked & st.grant,
                rss_key_size: 52,
                rss_lut_size: 64,
                vsi_res: vec![VsiResource {
                    vsi_id: 10,
                    num_queue_pairs: st.num_qps,
                    vsi_type: virtchnl::VSI_TYPE_SRIOV,
                    qset_handle: 0,
                    default_mac: st.mac,
                }],
            };
            ok(r.encode())
        }
        6 => {
            let Ok((vsi, pairs)) = virtchnl::decode_vsi_queues(p) else {
                return bad();
            };
            if p.len() != virtchnl::vsi_queues_len(pairs.len()) || vsi != 10 {
                return bad();
            }
            for qp in pairs {
                let (t, r) = (qp.txq, qp.rxq);
                if t.ring_len != 0 {
                    st.tx[t.queue_id as usize] = FakeQueue {
                        ring: t.dma_ring_addr,
                        len: t.ring_len,
                        ..FakeQueue::default()
                    };
                }
                if r.ring_len != 0 {
                    if r.ring_len % 32 != 0
                        || r.databuffer_size % 128 != 0
                        || r.dma_ring_addr % 128 != 0
                    {
                        return Some((virtchnl::STATUS_ERR_PARAM, Vec::new()));
                    }
                    st.rx[r.queue_id as usize] = FakeQueue {
                        ring: r.dma_ring_addr,
                        len: r.ring_len as u16,
                        buf: r.databuffer_size,
                        max: r.max_pkt_size,
                        ..FakeQueue::default()
                    };
                }
            }
            ok(Vec::new())
        }
        7 => {
            let n = u16_at(0) as usize;
            if p.len() != virtchnl::irq_map_len(n) {
                return bad();
            }
            ok(Vec::new())
        }
        8 | 9 => {
            let Ok(s) = QueueSelect::decode(p) else {
                return bad();
            };
            if p.len() != 12 {
                return bad();
            }
            for q in 0..16 {
                if s.rx_queues & (1 << q) != 0 {
                    st.rx[q].enabled = op == 8;
                    st.rx[q].head = 0;
                }
                if s.tx_queues & (1 << q) != 0 {
                    st.tx[q].enabled = op == 8;
                    st.tx[q].head = 0;
                }
            }
            if op == 8 {
                st.events.push_back(PfEvent::encode_link(true, 25_000));
            }
            ok(Vec::new())
        }
        10 | 11 => {
            let n = u16_at(2) as usize;
            if p.len() != virtchnl::ether_addr_list_len(n) {
                return bad();
            }
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&p[4..10]);
            if op == 10 {
                st.macs.push(mac);
            } else {
                st.macs.retain(|m| *m != mac);
            }
            ok(Vec::new())
        }
        14 => {
            if p.len() != 4 {
                return bad();
            }
            st.promisc = u16_at(2);
            ok(Vec::new())
        }
        15 => {
            if p.len() != 12 {
                return bad();
            }
            ok(st.stats.encode())
        }
        23 | 24 => {
            let n = u16_at(2) as usize;
            if p.len() != virtchnl::rss_key_lut_len(n) {
                return bad();
            }
            if op == 23 {
                st.key = p[4..4 + n].to_vec();
            } else {
                st.lut = p[4..4 + n].to_vec();
            }
            ok(Vec::new())
        }
        25 => ok(virtchnl::encode_hena(OFFERED_HENA)),
        26 => {
            if p.len() != 8 {
                return bad();
            }
            st.hena = virtchnl::decode_hena(p).unwrap();
            ok(Vec::new())
        }
        _ => {
            let _ = bar;
            Some((virtchnl::STATUS_ERR_NOT_SUPPORTED, Vec::new()))
        }
    }
}

fn post(bar: &SimBar, mem: &FakeIommu, op: u32, status: i32, payload: &[u8]) {
    let base = (bar.read32(regs::VF_ARQBAH1) as u64) << 32 | bar.read32(regs::VF_ARQBAL1) as u64;
    let head = bar.read32(regs::VF_ARQH1) % AQ_LEN as u32;
    if head == bar.read32(regs::VF_ARQT1) {
        return; // no buffer: dropped, as firmware does
    }
    let at = base + head as u64 * 32;
    let d = read_desc(mem, at);
    mem.write(d.addr(), payload);
    write_desc(
        mem,
        at,
        AqDesc::pf_message(op, status, payload.len() as u16, d.addr()),
    );
    bar.write32(regs::VF_ARQH1, (head + 1) % AQ_LEN as u32);
}

fn read_bytes<const N: usize>(mem: &FakeIommu, at: u64) -> [u8; N] {
    let mut b = [0u8; N];
    mem.read(at, &mut b);
    b
}

fn read_desc(mem: &FakeIommu, at: u64) -> AqDesc {
    AqDesc::from_bytes(&read_bytes(mem, at))
}

fn write_desc(mem: &FakeIommu, at: u64, d: AqDesc) {
    mem.write(at, &d.to_bytes());
}

fn read_tx(mem: &FakeIommu, at: u64) -> TxDesc {
    TxDesc::from_bytes(&read_bytes(mem, at))
}

fn write_tx(mem: &FakeIommu, at: u64, d: TxDesc) {
    let b = d.to_bytes();
    mem.write(at, &b[0..8]);
    mem.write_u64(at + 8, u64::from_le_bytes(b[8..16].try_into().unwrap()));
}

fn read_rx(mem: &FakeIommu, at: u64) -> RxDesc {
    RxDesc::from_bytes(&read_bytes(mem, at))
}

fn write_rx(mem: &FakeIommu, at: u64, d: RxDesc) {
    // The status word (DD) last and whole, as a device does.
    let b = d.to_bytes();
    mem.write(at, &b[0..8]);
    mem.write(at + 16, &b[16..32]);
    mem.write_u64(at + 8, u64::from_le_bytes(b[8..16].try_into().unwrap()));
}

fn fast_timeouts() -> Timeouts {
    Timeouts {
        aq_send: Duration::from_millis(250),
        reply: Duration::from_millis(300),
        reset_done: Duration::from_millis(400),
        reset_detect: Duration::from_millis(200),
    }
}

fn options() -> IavfOptions {
    IavfOptions {
        watchdog: Some(Duration::from_millis(5)),
        timeouts: fast_timeouts(),
        ..IavfOptions::default()
    }
}

fn make_port(
    pf: &FakePf,
    mem: &Arc<DmaMemory>,
    opts: IavfOptions,
    id: u16,
) -> nicpoll::Result<IavfPort<SharedBar>> {
    IavfPort::with_options(pf.driver_bar(), pf.dma(), mem.clone(), "fake0", opts, id)
}

/// A port on `pf` with the test options, its own memory and a pool of
/// `pool_size` mbufs, configured with `(queue pairs, rxd, txd)` and started.
fn started(
    pf: &FakePf,
    pool_name: &str,
    pool_size: u32,
    id: u16,
    (q, rxd, txd): (u16, u16, u16),
) -> (Mempool, IavfPort<SharedBar>, nicpoll::port::PortQueues) {
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new(pool_name, pool_size)).unwrap();
    let mut port = make_port(pf, &mem, options(), id).unwrap();
    port.configure(&conf(&pool, q, rxd, txd)).unwrap();
    let queues = port.start().unwrap();
    (pool, port, queues)
}

/// Drop the queues, stop `port`, drop it, and check that every mbuf of
/// `pool` is back (`what` says whose).
fn stop_and_check_pool(
    pool: &Mempool,
    mut port: IavfPort<SharedBar>,
    q: nicpoll::port::PortQueues,
    what: &str,
) {
    drop(q);
    port.stop().unwrap();
    drop(port);
    assert_eq!(pool.in_use(), 0, "{what}");
}

fn conf(pool: &Mempool, q: u16, rxd: u16, txd: u16) -> PortConf {
    PortConf {
        port_id: 0,
        nb_rxq: q,
        nb_txq: q,
        nb_rxd: rxd,
        nb_txd: txd,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------
// Admin queue client and bring-up.

#[test]
fn admin_queue_client_talks_to_the_fake_pf() {
    let pf = FakePf::new();
    let mem = DmaMemory::plain();
    let region = Arc::new(mem.alloc("aq", adminq::region_size()).unwrap());
    crate::DmaMap::map(&*pf.iommu, &region).unwrap();
    let bar = pf.driver_bar();
    let mut vf = Vf::new("fake0", region, fast_timeouts()).unwrap();
    vf.init(&bar).unwrap();
    assert_eq!(vf.vsi_id, 10);
    assert_eq!(vf.num_queue_pairs(), 4);
    assert_eq!(vf.caps, virtchnl::caps::REQUESTED);
    assert_eq!(pf.ops_seen(), vec![1, 3]);
    // More requests than the rings have entries: indices wrap.
    for _ in 0..3 * AQ_LEN {
        vf.get_stats(&bar).unwrap();
    }
    // A status error names the opcode, the status and the usual cause.
    pf.state()
        .fail
        .insert(14, virtchnl::STATUS_ERR_NOT_SUPPORTED);
    let e = vf.config_promisc(&bar, true).unwrap_err();
    assert!(
        matches!(
            e,
            IavfError::Virtchnl {
                op: 14,
                status: -64,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("VIRTCHNL_OP_CONFIG_PROMISCUOUS_MODE")
            && text.contains("ERR_NOT_SUPPORTED")
            && text.contains("trust on"),
        "{text}"
    );
    // No answer: a timeout naming the opcode.
    pf.state().silent.push(15);
    let e = vf.get_stats(&bar).unwrap_err();
    assert!(
        matches!(e, IavfError::VirtchnlTimeout { op: 15, .. }),
        "{e:?}"
    );
    // Events arriving during a request are handled.
    pf.state().silent.clear();
    pf.state()
        .events
        .push_back(PfEvent::encode_link(true, 10_000));
    vf.get_stats(&bar).unwrap();
    wait_for("the link event", Duration::from_secs(2), || {
        vf.poll_events(&bar);
        vf.link.up
    });
    assert_eq!(vf.link.speed_mbps, 10_000);
}

#[test]
fn exact_message_lengths_are_accepted() {
    // The fake PF refuses any length other than virtchnl.h's with
    // ERR_OPCODE_MISMATCH; a full start exercises every message.
    let pf = FakePf::new();
    let (pool, mut port, q) = started(&pf, "len", 4096, 0, (4, 512, 512));
    port.set_promiscuous(true).unwrap();
    let _ = port.stats();
    let log = pf.state().log.clone();
    let lens: HashMap<u32, usize> = log.iter().copied().collect();
    assert_eq!(lens[&6], 72 + 64 * 4, "CONFIG_VSI_QUEUES");
    assert_eq!(lens[&7], 14 + 12, "CONFIG_IRQ_MAP");
    assert_eq!(lens[&10], 12 + 8, "ADD_ETH_ADDR");
    assert_eq!(lens[&23], 5 + 52, "CONFIG_RSS_KEY");
    assert_eq!(lens[&24], 5 + 64, "CONFIG_RSS_LUT");
    assert_eq!(lens[&8], 12, "ENABLE_QUEUES");
    assert_eq!(lens[&14], 4, "PROMISC");
    assert_eq!(lens[&15], 12, "GET_STATS");
    assert_eq!(pf.state().lut[..8], [0, 1, 2, 3, 0, 1, 2, 3]);
    // Every packet type the PF offers, unmasked (an X722 offers types the base
    // set lacks).
    assert_eq!(pf.state().hena, OFFERED_HENA);
    assert_eq!(pf.state().promisc, 3);
    drop(q);
    port.stop().unwrap();
    assert_eq!(
        pf.state().log.last().unwrap().0,
        9,
        "DISABLE_QUEUES on stop"
    );
    drop(port);
    let ops = pf.ops_seen();
    assert_eq!(
        &ops[ops.len() - 3..],
        &[14, 11, 2],
        "close: promisc off, DEL_ETH_ADDR, RESET_VF"
    );
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn bring_up_errors_are_clear() {
    // VF never out of reset: the error names VFGEN_RSTAT and its value.
    let pf = FakePf::new();
    pf.bar.write32(regs::VFGEN_RSTAT, 0);
    let mem = Arc::new(DmaMemory::plain());
    let e = make_port(&pf, &mem, options(), 0).unwrap_err().to_string();
    assert!(
        e.contains("VFGEN_RSTAT") && e.contains("0x00000000") && e.contains("VFR_INPROGRESS"),
        "{e}"
    );
    // A PF that speaks a newer virtchnl.
    let pf = FakePf::new();
    pf.state().version = (2, 0);
    let e = make_port(&pf, &mem, options(), 0).unwrap_err().to_string();
    assert!(
        e.contains("virtchnl 2.0") && e.contains("VIRTCHNL_OP_VERSION"),
        "{e}"
    );
    // A PF refusing our MAC filter.
    let pf = FakePf::new();
    pf.state().fail.insert(10, virtchnl::STATUS_ERR_PARAM);
    let e = make_port(&pf, &mem, options(), 0).unwrap_err().to_string();
    assert!(
        e.contains("VIRTCHNL_OP_ADD_ETH_ADDR") && e.contains("ERR_PARAM") && e.contains("spoof"),
        "{e}"
    );
}

#[test]
fn probe_by_pci_id() {
    for id in [0x154C, 0x1571, 0x1889, 0x37CD, 0x374D] {
        assert!(crate::is_iavf(0x8086, id), "{id:#x}");
    }
    assert!(!crate::is_iavf(0x8086, 0x1572), "a PF");
    assert!(!crate::is_iavf(0x15b3, 0x154C));
}

// ---------------------------------------------------------------------------
// The port.

#[test]
fn passes_the_port_conformance_suite() {
    let pf = std::cell::RefCell::new(Vec::<FakePf>::new());
    let mem = Arc::new(DmaMemory::plain());
    testing::run_conformance(
        "net_iavf (fake PF)",
        &mut |id| {
            let fake = FakePf::new();
            let p = IavfPort::new(
                fake.driver_bar(),
                fake.dma(),
                mem.clone(),
                "fake0",
                &DevArgs::parse("net_iavf0,watchdog_ms=5").unwrap(),
                id,
            )?;
            pf.borrow_mut().push(fake);
            Ok(Box::new(p) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
}

/// The length `send_and_receive` gives frame `i` of a run.
fn frame_len(i: usize) -> usize {
    60 + (i - i % 32) % 100
}

/// Send `n` test frames (tags from `first`) on `tx` in bursts of 32 and
/// receive on every queue of `rxs` until `expect` arrived.
fn send_and_receive(
    pool: &Mempool,
    tx: &mut dyn nicpoll::TxQueue,
    rxs: &mut [Box<dyn nicpoll::RxQueue>],
    n: usize,
    expect: usize,
    first: u32,
) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut sent = 0;
    let mut b = MbufBatch::with_burst(32);
    let mut r = MbufBatch::with_burst(64);
    let t = Instant::now();
    while out.len() < expect || !b.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{} of {expect} arrived",
            out.len()
        );
        // At most one burst in flight, so the receive ring (refilled every
        // 32) never overflows.
        if b.is_empty() && sent < n && sent <= out.len() + (n - expect) {
            let k = (n - sent).min(32);
            testing::fill(pool, &mut b, first + sent as u32, k, frame_len(sent));
            sent += k;
        }
        tx.tx_burst(&mut b);
        for (qi, rq) in rxs.iter_mut().enumerate() {
            rq.rx_burst(&mut r);
            while let Some(m) = r.pop_front() {
                assert_eq!(m.queue() as usize, qi);
                out.push((qi as u16, m.data().to_vec()));
            }
        }
    }
    out
}

#[test]
fn ring_wrap_and_full_rings() {
    let pf = FakePf::new();
    let (pool, port, mut q) = started(&pf, "wrap", 1024, 0, (1, 64, 64));
    // Many laps of both 64-entry rings, content checked in order.
    let got = send_and_receive(&pool, q.tx[0].as_mut(), &mut q.rx, 1000, 1000, 0);
    for (i, (_, f)) in got.iter().enumerate() {
        assert_eq!(f, &testing::test_frame(i as u32, frame_len(i)), "frame {i}");
    }
    // Full transmit ring: the device stops consuming; tx_burst takes what
    // fits and leaves the rest with the caller, then takes nothing.
    pf.state().hold_tx = true;
    let mut b = MbufBatch::with_burst(128);
    testing::fill(&pool, &mut b, 0, 128, 64);
    let mut taken = 0;
    for _ in 0..4 {
        taken += q.tx[0].tx_burst(&mut b);
    }
    assert!(
        (32..=63).contains(&taken),
        "a 64-entry ring holds at most 63: {taken}"
    );
    assert_eq!(q.tx[0].tx_burst(&mut b), 0, "full");
    assert_eq!(b.len(), 128 - taken);
    b.clear();
    // Full receive ring: what the device cannot place is its discard.
    let before = port.stats();
    pf.state().hold_tx = false;
    wait_for(
        "the device to drain the transmit ring",
        Duration::from_secs(5),
        || pf.state().tx[0].head == bar_tail(&pf, 0),
    );
    let mut r = MbufBatch::with_burst(512);
    q.rx[0].rx_burst(&mut r);
    let placed = r.len();
    r.clear();
    let missed = port.stats().imissed - before.imissed;
    assert_eq!(
        placed as u64 + missed,
        taken as u64,
        "every frame placed or counted missed"
    );
    assert!(
        placed >= 32,
        "at least the refilled part of the ring was posted"
    );
    stop_and_check_pool(&pool, port, q, "every mbuf back in its pool");
}

fn bar_tail(pf: &FakePf, q: u16) -> u16 {
    pf.bar.read32(regs::qtx_tail(q)) as u16
}

#[test]
fn rss_spreads_flows_over_queues() {
    let pf = FakePf::new();
    let (pool, mut port, mut q) = started(&pf, "rss", 4096, 0, (4, 128, 128));
    let mut tx0 = q.tx.remove(0);
    let got = send_and_receive(&pool, tx0.as_mut(), &mut q.rx, 400, 400, 0);
    let mut per_q = [0usize; 4];
    for (qi, _) in &got {
        per_q[*qi as usize] += 1;
    }
    assert!(
        per_q.iter().all(|&n| n > 40),
        "flows spread over 4 queues: {per_q:?}"
    );
    let xs: HashMap<String, u64> = port.xstats().into_iter().collect();
    assert_eq!(
        (0..4).map(|i| xs[&format!("rx_q{i}_packets")]).sum::<u64>(),
        400
    );
    drop((q, tx0));
    port.stop().unwrap();
    drop(port);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn bad_descriptors_are_counted_and_freed() {
    let pf = FakePf::new();
    let (pool, port, mut q) = started(&pf, "bad", 1024, 0, (1, 64, 64));
    // Each corruption spoils one frame of three; the other two arrive.
    for (k, c) in [Corrupt::TooLong, Corrupt::RxError, Corrupt::Chained]
        .into_iter()
        .enumerate()
    {
        pf.state().corrupt = Some(c);
        let got = send_and_receive(&pool, q.tx[0].as_mut(), &mut q.rx, 3, 2, 100 * k as u32);
        assert_eq!(got.len(), 2, "{c:?}");
    }
    let s = port.stats();
    let xs: HashMap<String, u64> = port.xstats().into_iter().collect();
    // A frame over two descriptors whose first buffer is not full is no
    // frame the device writes: dropped whole, both descriptors counted.
    assert_eq!(
        xs["rx_bad_descriptors"], 4,
        "too long, RXE, and both halves of the broken chain"
    );
    assert_eq!(s.ierrors, 4);
    stop_and_check_pool(&pool, port, q, "bad descriptors' mbufs were freed");
}

#[test]
fn transmit_refuses_unsendable_lengths() {
    let pf = FakePf::new();
    let (pool, port, mut q) = started(&pf, "len0", 256, 0, (1, 64, 64));
    let mut b = MbufBatch::with_burst(4);
    b.push(pool.alloc().unwrap()).unwrap(); // length 0
    assert_eq!(q.tx[0].tx_burst(&mut b), 1, "taken (and dropped)");
    assert_eq!(port.stats().oerrors, 1);
    assert_eq!(port.stats().opackets, 0);
    stop_and_check_pool(&pool, port, q, "every mbuf back in its pool");
}

#[test]
fn bursts_straddling_the_ring_ends_arrive_whole_and_in_order() {
    let pf = FakePf::new();
    let (pool, port, mut q) = started(&pf, "wrap", 400, 3, (1, 64, 64));
    // Bursts of 7 on rings of 64: transmit bursts and receive refills
    // (odd counts too) cross the end of both rings again and again.
    let mut r = MbufBatch::with_burst(7);
    for i in 0..40u32 {
        let mut b = MbufBatch::with_burst(7);
        testing::fill(&pool, &mut b, i * 7, 7, 60 + i as usize);
        let sent: Vec<Vec<u8>> = b.iter().map(|m| m.data().to_vec()).collect();
        assert_eq!(q.tx[0].tx_burst(&mut b), 7, "burst {i}");
        let mut got = Vec::new();
        wait_for("7 frames", Duration::from_secs(5), || {
            q.rx[0].rx_burst(&mut r);
            got.extend(r.iter().map(|m| m.data().to_vec()));
            r.clear();
            got.len() >= 7
        });
        assert_eq!(got, sent, "burst {i}");
    }
    let st = port.stats();
    assert_eq!(
        (st.opackets, st.ipackets, st.ierrors, st.oerrors),
        (280, 280, 0, 0)
    );
    stop_and_check_pool(&pool, port, q, "every mbuf back in its pool");
}

#[test]
fn a_frame_without_hash_in_a_burst_of_hashed_ones() {
    let pf = FakePf::new();
    let (pool, port, mut q) = started(&pf, "nohash", 160, 3, (1, 64, 64));
    let mut sent = Vec::new();
    // Two hashed frames, one without a hash, two hashed: one receive burst.
    for (n, corrupt) in [(2, None), (1, Some(Corrupt::NoHash)), (2, None)] {
        let mut b = MbufBatch::with_burst(4);
        testing::fill(&pool, &mut b, 500, n, 90);
        sent.extend(b.iter().map(|m| m.data().to_vec()));
        pf.state().corrupt = corrupt;
        assert_eq!(q.tx[0].tx_burst(&mut b), n);
        let want = sent.len() as u64;
        wait_for("delivered", Duration::from_secs(5), || {
            pf.state().stats.rx_unicast >= want
        });
    }
    let mut r = MbufBatch::with_burst(8);
    assert_eq!(q.rx[0].rx_burst(&mut r), 5);
    for (k, m) in r.iter().enumerate() {
        assert_eq!(m.data(), sent[k].as_slice(), "frame {k}");
        assert_eq!(m.len(), sent[k].len(), "frame {k}");
        let want = if k == 2 {
            0
        } else {
            nicpoll::mbuf::flags::RX_RSS_HASH
        };
        assert_eq!(m.ol_flags(), want, "frame {k}: flags");
        if k != 2 {
            assert_eq!(m.rss_hash(), flow_hash(&sent[k]), "frame {k}");
        }
    }
    assert_eq!(port.stats().ierrors, 0);
    r.clear();
    stop_and_check_pool(&pool, port, q, "every mbuf back in its pool");
}

#[test]
fn receive_sets_every_header_field() {
    let pf = FakePf::new();
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new("hdr", 160)).unwrap();
    // Buffers come back to the pool with whatever their last user left in
    // their headers; the receive path must not keep any of it.
    let mut dirty = MbufBatch::with_burst(160);
    assert!(pool.alloc_bulk(&mut dirty, 160));
    for m in dirty.iter_mut() {
        assert!(m.set_len(100) && m.adj(10));
        m.set_vlan_tci(7);
        m.set_rss_hash(1);
        m.set_ol_flags(u64::MAX);
        m.set_port(9);
        m.set_queue(9);
    }
    dirty.clear();
    let mut port = make_port(&pf, &mem, options(), 3).unwrap();
    let mut c = conf(&pool, 1, 64, 64);
    c.port_id = 3;
    port.configure(&c).unwrap();
    let mut q = port.start().unwrap();
    let mut b = MbufBatch::with_burst(4);
    testing::fill(&pool, &mut b, 500, 3, 90);
    let sent: Vec<Vec<u8>> = b.iter().map(|m| m.data().to_vec()).collect();
    // The first frame comes with a bad L4 checksum (delivered, flagged).
    pf.state().corrupt = Some(Corrupt::L4Checksum);
    assert_eq!(q.tx[0].tx_burst(&mut b), 3);
    let mut r = MbufBatch::with_burst(8);
    wait_for("3 frames", Duration::from_secs(5), || {
        q.rx[0].rx_burst(&mut r);
        r.len() >= 3
    });
    for (k, m) in r.iter().enumerate() {
        assert_eq!(m.data(), sent[k].as_slice(), "frame {k}");
        assert_eq!(m.headroom(), m.default_headroom(), "frame {k}: data offset");
        assert_eq!((m.port(), m.queue(), m.vlan_tci()), (3, 0, 0), "frame {k}");
        assert_eq!(m.rss_hash(), flow_hash(&sent[k]), "frame {k}");
        let want = nicpoll::mbuf::flags::RX_RSS_HASH
            | if k == 0 {
                nicpoll::mbuf::flags::RX_L4_CKSUM_BAD
            } else {
                0
            };
        assert_eq!(m.ol_flags(), want, "frame {k}: flags");
    }
    assert_eq!(
        port.stats().ierrors,
        0,
        "a checksum error is not a receive error"
    );
    r.clear();
    stop_and_check_pool(&pool, port, q, "every mbuf back in its pool");
}

#[test]
fn transmit_skips_refused_packets_in_order() {
    let pf = FakePf::new();
    let (pool, port, mut q) = started(&pf, "refused", 512, 0, (1, 64, 64));
    let mut r = MbufBatch::with_burst(64);
    let mut want = Vec::new();
    let (mut refused, mut got) = (0u64, Vec::new());
    // Bursts of 20 with empty packets at the front, in the middle and at the
    // end, over several laps of the 64-entry ring (and across its end).
    for round in 0..10u32 {
        let mut b = MbufBatch::with_burst(20);
        for i in 0..20u32 {
            if i == 0 || i == 7 || i == 8 || i == 19 || (round % 3 == 1 && i == 13) {
                b.push(pool.alloc().unwrap()).unwrap();
                refused += 1;
            } else {
                testing::fill(&pool, &mut b, round * 100 + i, 1, 64 + i as usize);
                want.push(b.as_slice()[b.len() - 1].data().to_vec());
            }
        }
        assert_eq!(q.tx[0].tx_burst(&mut b), 20, "round {round}: all taken");
        wait_for("the frames", Duration::from_secs(5), || {
            q.rx[0].rx_burst(&mut r);
            while let Some(m) = r.pop_front() {
                got.push(m.data().to_vec());
            }
            got.len() == want.len()
        });
    }
    assert_eq!(got, want, "sent in order, none lost, none doubled");
    let s = port.stats();
    assert_eq!((s.opackets, s.oerrors), (want.len() as u64, refused));
    stop_and_check_pool(&pool, port, q, "every mbuf back in its pool");
}

#[test]
fn reset_mid_traffic_recovers() {
    let pf = FakePf::new();
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new("reset", 2048)).unwrap();
    let mut port = make_port(&pf, &mem, options(), 0).unwrap();
    port.set_promiscuous(true).unwrap();
    port.configure(&conf(&pool, 2, 128, 128)).unwrap();
    let mut q = port.start().unwrap();
    let got = send_and_receive(&pool, q.tx[0].as_mut(), &mut q.rx, 96, 96, 0);
    assert_eq!(got.len(), 96);
    // Packets in flight when the PF resets the VF.
    pf.state().hold_tx = true;
    let mut b = MbufBatch::with_burst(32);
    testing::fill(&pool, &mut b, 5000, 20, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 20);
    pf.state().reset = Some(Duration::from_millis(30));
    pf.state().hold_tx = false;
    // While recovering, bursts return 0 and keep packets with the caller.
    wait_for("the reset to be noticed", Duration::from_secs(5), || {
        port.poll_events().map(|s| s.resets == 1).unwrap_or(false)
    });
    // Traffic resumes: the queues re-arm at their next burst and the
    // watchdog enables each once it has.
    let mut empty = MbufBatch::with_burst(32);
    wait_for(
        "the queues to be enabled again",
        Duration::from_secs(5),
        || {
            for rq in q.rx.iter_mut() {
                rq.rx_burst(&mut empty);
            }
            for tq in q.tx.iter_mut() {
                tq.tx_burst(&mut empty);
            }
            port.poll_events()
                .map(|s| s.queues_pending == 0)
                .unwrap_or(false)
        },
    );
    assert!(empty.is_empty());
    let got = send_and_receive(&pool, q.tx[0].as_mut(), &mut q.rx, 100, 100, 10_000);
    assert_eq!(got.len(), 100);
    let status = port.poll_events().unwrap();
    assert_eq!(status.resets, 1);
    assert_eq!(status.failed, None);
    let xs: HashMap<String, u64> = port.xstats().into_iter().collect();
    assert_eq!(xs["vf_resets"], 1);
    assert_eq!(xs["tx_reset_dropped_packets"], 20, "in flight at the reset");
    assert!(xs["vf_reset_last_recovery_us"] > 0);
    // The configuration was replayed.
    let st = pf.state();
    assert_eq!(st.resets_done, 1);
    assert_eq!(st.promisc, 3, "promiscuous mode restored");
    assert_eq!(st.macs.len(), 1, "MAC filter restored");
    assert_eq!(st.lut[..4], [0, 1, 0, 1], "RSS restored");
    drop(st);
    stop_and_check_pool(&pool, port, q, "every mbuf back after a reset");
}

#[test]
fn reset_while_stopped_and_failed_recovery_retries() {
    let pf = FakePf::new();
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new("stopped", 1024)).unwrap();
    let mut opts = options();
    opts.watchdog = None;
    let mut port = make_port(&pf, &mem, opts, 0).unwrap();
    // A reset that outlasts the wait: recovery fails, is reported, retried.
    pf.state().reset = Some(Duration::from_millis(700));
    wait_for("the reset to start", Duration::from_secs(2), || {
        pf.bar.read32(regs::VFGEN_RSTAT) == 0
    });
    let e = port.poll_events().unwrap_err().to_string();
    assert!(e.contains("VFGEN_RSTAT"), "{e}");
    std::thread::sleep(Duration::from_millis(1100));
    let s = port.poll_events().unwrap();
    assert_eq!((s.resets, s.recoveries_failed, s.failed), (1, 1, None));
    // The port works after it.
    port.configure(&conf(&pool, 1, 64, 64)).unwrap();
    let mut q = port.start().unwrap();
    let got = send_and_receive(&pool, q.tx[0].as_mut(), &mut q.rx, 50, 50, 0);
    assert_eq!(got.len(), 50);
    stop_and_check_pool(&pool, port, q, "every mbuf back in its pool");
}

#[test]
fn link_events_reach_the_port() {
    let pf = FakePf::new();
    let mem = Arc::new(DmaMemory::plain());
    let port = make_port(&pf, &mem, options(), 0).unwrap();
    pf.state()
        .events
        .push_back(PfEvent::encode_link(true, 40_000));
    wait_for("link up", Duration::from_secs(2), || port.link().up);
    assert_eq!(port.link().speed_mbps, 40_000);
    pf.state().events.push_back(PfEvent::encode_link(false, 0));
    wait_for("link down", Duration::from_secs(2), || !port.link().up);
    // RESET_IMPENDING stops the queues and recovers.
    pf.state()
        .events
        .push_back(PfEvent::encode_bare(virtchnl::EVENT_RESET_IMPENDING));
    pf.state().reset = Some(Duration::from_millis(10));
    wait_for("recovery", Duration::from_secs(5), || {
        port.poll_events()
            .map(|s| s.resets >= 1 && s.failed.is_none())
            .unwrap_or(false)
    });
}

#[test]
fn stop_refuses_while_queues_live_and_drop_parks_buffers() {
    let pf = FakePf::new();
    let (pool, mut port, q) = started(&pf, "park", 1024, 0, (1, 64, 64));
    let e = port.stop().unwrap_err().to_string();
    assert!(e.contains("still in use"), "{e}");
    drop(q);
    assert_eq!(
        pool.in_use(),
        64,
        "the receive buffers wait for DISABLE_QUEUES"
    );
    port.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
    // Queues outliving their port: the port quiets the device on drop and
    // the queues free their buffers when dropped.
    let q = port.start().unwrap();
    drop(port);
    drop(q);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn configure_checks_limits() {
    let pf = FakePf::new();
    pf.state().grant = virtchnl::caps::REQUESTED & !virtchnl::caps::RSS_PF;
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new("lim", 256)).unwrap();
    let mut port = make_port(&pf, &mem, options(), 0).unwrap();
    let info = port.info();
    assert_eq!(
        (
            info.max_rx_queues,
            info.min_rxd,
            info.max_rxd,
            info.desc_align
        ),
        (4, 64, 4096, 32)
    );
    let e = port
        .configure(&conf(&pool, 2, 64, 64))
        .unwrap_err()
        .to_string();
    assert!(e.contains("RSS"), "{e}");
    let e = port
        .configure(&conf(&pool, 1, 100, 64))
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiples of 32"), "{e}");
    // A pool too small to fill the ring.
    port.configure(&conf(&pool, 1, 512, 64)).unwrap();
    let e = port.start().unwrap_err().to_string();
    assert!(e.contains("cannot fill receive queue 0"), "{e}");
    assert_eq!(pool.in_use(), 0);
}
