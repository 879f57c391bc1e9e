//! What the PMD tests against the simulated PF share: a VF and its port, two
//! started VFs back to back, frames, bursts that wait.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::{MacAddr, PortConf, PortQueues};
use nicpoll::{Mbuf, Port, RxQueue, TxQueue};
use nicpoll_iavf::sim::{PfModel, ResetTiming, SimConfig, SimPf, SimVf, SimVfBar, Wire};
use nicpoll_iavf::{DmaMap, IavfOptions, IavfPort, Timeouts};

pub const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
pub const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

pub type SimPort = IavfPort<SimVfBar>;

/// Driver options for tests: a fast watchdog and short timeouts.
pub fn opts() -> IavfOptions {
    IavfOptions {
        watchdog: Some(Duration::from_millis(2)),
        timeouts: Timeouts {
            aq_send: Duration::from_millis(250),
            reply: Duration::from_millis(500),
            reset_done: Duration::from_secs(2),
            reset_detect: Duration::from_millis(500),
        },
        ..IavfOptions::default()
    }
}

/// A VF of PF flavour `pf` with the host-set `mac` and quick resets.
pub fn sim(name: &str, pf: PfModel, mac: MacAddr, wire: Wire) -> SimConfig {
    SimConfig {
        name: name.to_string(),
        pf,
        mac,
        wire,
        reset_timing: ResetTiming {
            impending: Duration::from_millis(1),
            in_progress: Duration::from_millis(5),
            completed: Duration::from_millis(2),
            ..Default::default()
        },
        ..SimConfig::default()
    }
}

/// A simulated VF and the port the driver made of it.
pub struct Rig {
    pub vf: Arc<SimVf>,
    pub port: SimPort,
}

/// Start the VF of `cfg` and bring the driver up on it.
pub fn rig(cfg: SimConfig, mem: &Arc<DmaMemory>, o: IavfOptions) -> Rig {
    let vf = SimVf::new(cfg.clone()).expect("simulated VF");
    port_on(vf, &cfg.name, mem, o)
}

/// Add the VF of `cfg` to `pf` and bring the driver up on it.
pub fn rig_on(pf: &SimPf, cfg: SimConfig, mem: &Arc<DmaMemory>, o: IavfOptions) -> Rig {
    let vf = pf.add_vf(cfg.clone()).expect("simulated VF");
    port_on(vf, &cfg.name, mem, o)
}

fn port_on(vf: SimVf, name: &str, mem: &Arc<DmaMemory>, o: IavfOptions) -> Rig {
    let vf = Arc::new(vf);
    let port = IavfPort::with_options(
        vf.bar(),
        vf.clone() as Arc<dyn DmaMap>,
        mem.clone(),
        name,
        o,
        0,
    )
    .unwrap_or_else(|e| panic!("the driver brings {name} up: {e}"));
    Rig { vf, port }
}

/// One port of a started pair: its VF, port and queues.
pub struct Side {
    pub vf: Arc<SimVf>,
    pub port: SimPort,
    pub q: PortQueues,
}

/// Configure and start `r` with `nq` queue pairs of `ring` descriptors.
pub fn start(r: Rig, pool: &Mempool, nq: u16, ring: u16) -> Side {
    let Rig { vf, mut port } = r;
    port.configure(&conf(pool, nq, ring)).unwrap();
    let q = port.start().unwrap();
    Side { vf, port, q }
}

/// Two started VFs of `cfg_a`/`cfg_b` connected back to back, one queue pair
/// of 512 descriptors each.
pub fn pair(
    cfg_a: SimConfig,
    cfg_b: SimConfig,
    mem: &Arc<DmaMemory>,
    pool: &Mempool,
    o: IavfOptions,
) -> (Side, Side) {
    let a = rig(cfg_a, mem, o.clone());
    let b = rig(cfg_b, mem, o);
    SimVf::connect(&a.vf, &b.vf);
    (start(a, pool, 1, 512), start(b, pool, 1, 512))
}

pub fn conf(pool: &Mempool, q: u16, ring: u16) -> PortConf {
    PortConf {
        port_id: 0,
        nb_rxq: q,
        nb_txq: q,
        nb_rxd: ring,
        nb_txd: ring,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    }
}

pub fn pool(mem: &DmaMemory, name: &str, n: u32) -> Mempool {
    Mempool::new(mem, &MempoolConfig::new(name, n)).unwrap()
}

/// An IPv4/UDP frame of `len` bytes (at least 60) from `src` to `dst` whose
/// payload encodes `tag`, with UDP source port `sport`.
pub fn udp_frame(dst: MacAddr, src: MacAddr, tag: u32, sport: u16, len: usize) -> Vec<u8> {
    let len = len.max(60);
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&4789u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((len - 34) as u16).to_be_bytes());
    f[42..46].copy_from_slice(&tag.to_be_bytes());
    for (i, b) in f[46..].iter_mut().enumerate() {
        *b = (tag as usize).wrapping_mul(7).wrapping_add(i) as u8;
    }
    f
}

/// `frame` with an 802.1Q tag (`tci`) after the MAC addresses.
pub fn tagged(frame: &[u8], tci: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&0x8100u16.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// A fresh mbuf holding `f`.
pub fn mbuf(pool: &Mempool, f: &[u8]) -> Mbuf {
    let mut m = pool.alloc().expect("pool has room");
    assert!(m.set_len(f.len()));
    m.data_mut().copy_from_slice(f);
    m
}

/// Transmit all of `frames` on `tx` (retrying what the queue leaves).
pub fn send_all(pool: &Mempool, tx: &mut dyn TxQueue, frames: &[Vec<u8>]) {
    let t = Instant::now();
    for chunk in frames.chunks(32) {
        let mut b = MbufBatch::with_burst(32);
        for f in chunk {
            b.push(mbuf(pool, f)).unwrap();
        }
        while !b.is_empty() {
            tx.tx_burst(&mut b);
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the transmit queue stays full"
            );
        }
    }
}

/// Receive on `rx` until `n` frames arrived or `timeout` passed; returns the
/// mbufs.
pub fn receive(rx: &mut dyn RxQueue, n: usize, timeout: Duration) -> Vec<Mbuf> {
    let mut out = Vec::new();
    let mut r = MbufBatch::with_burst(64);
    let t = Instant::now();
    while out.len() < n && t.elapsed() < timeout {
        if rx.rx_burst(&mut r) == 0 {
            std::thread::yield_now();
        }
        while let Some(m) = r.pop_front() {
            out.push(m);
        }
    }
    out
}

/// Wait until `f` holds, or fail naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Poll `side`'s queues and port until the port has recovered from a reset
/// and enabled every queue again (or `timeout`).
pub fn resume(side: &mut Side, timeout: Duration) {
    resume_queues(&side.port, &mut side.q, timeout);
}

/// [`resume`] for a port and its queues held apart.
pub fn resume_queues(port: &SimPort, q: &mut PortQueues, timeout: Duration) {
    let mut empty = MbufBatch::with_burst(32);
    wait_for("the queues to be enabled again", timeout, || {
        for r in q.rx.iter_mut() {
            r.rx_burst(&mut empty);
        }
        for t in q.tx.iter_mut() {
            t.tx_burst(&mut empty);
        }
        port.poll_events()
            .map(|s| s.failed.is_none() && s.queues_pending == 0)
            .unwrap_or(false)
    });
    empty.clear();
}

/// The port's xstat `name`.
pub fn xstat(p: &dyn Port, name: &str) -> u64 {
    p.xstats()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no xstat {name}"))
        .1
}

/// Fail (naming `what`) unless `got` is `want`, frame for frame and byte for
/// byte; the message shows the first difference only.
pub fn assert_same_frames(got: &[Vec<u8>], want: &[Vec<u8>], what: &str) {
    let kept = got.iter().zip(want).filter(|(g, w)| g == w).count();
    if got.len() == want.len() && kept == want.len() {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let head = |f: Option<&Vec<u8>>| f.map(|f| format!("{:02x?}", &f[..f.len().min(20)]));
    panic!(
        "{what}: {kept} of {} frames as sent ({} arrived); first difference at frame \
         {first}: got {:?}, sent {:?}",
        want.len(),
        got.len(),
        head(got.get(first)),
        head(want.get(first))
    );
}
