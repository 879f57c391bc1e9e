//! The iavf PMD's rx_burst / tx_burst against the device model, stepped on one
//! thread (issue 4, "Measured"): what `benches/iavf-sim-callgrind.sh` runs under
//! callgrind to count the driver's own instructions per packet.
//!
//! Two simulated VFs A and B of one simulated PF (`SimPf`, as testpmd's
//! demo has them), back to back (`SimVf::connect`), each driven by a real
//! `IavfPort<SimVfBar>` (one queue pair, rings of `IAVF_BENCH_RING`
//! descriptors, default 512). The ports are brought up with the PF's polling
//! thread running, then both VFs go to manual mode (`SimVf::set_manual(true)`):
//! the model moves only in `SimVf::step()`, on this thread. Under valgrind,
//! which runs one thread at a time, a polling thread would starve; here
//! nothing else runs while the loop does (the PF's thread parks).
//!
//! Modes (first argument that does not start with `-`; the second is the
//! count):
//!
//! - `fwd N` (default, N = 200000): N iterations of io forwarding both ways,
//!   burst 32, 64-byte frames:
//!   1. 32 fresh mbufs from the pool, 64-byte frames A→B, `tx_burst` on A;
//!   2. `step(A)` (A's model reads the Tx ring, sends to B's inbox, writes RS
//!      back), `step(B)` (B's model places the frames in B's Rx ring);
//!   3. `rx_burst` on B must return exactly 32 (anything else is an error);
//!   4. the same 32 mbufs out of B's `tx_burst`, `step(B)`, `step(A)`,
//!      `rx_burst` on A must return 32, and they are freed.
//!
//!   Every packet crosses one `tx_burst` and one `rx_burst` of the driver: 64
//!   packets per iteration, 2 rx_burst + 2 tx_burst calls and 4 model steps.
//! - `empty N` (N = 1000000): N `rx_burst` calls on A's empty Rx queue, then N
//!   `tx_burst` calls with an empty batch: the cost of an idle poll.
//!
//! Printed: packets, wall-clock time and Mpps of the whole loop — the driver
//! AND the model, on one thread, so a figure of the model's speed as much as
//! the driver's; not comparable to a NIC's rate. Every mbuf must be back in the
//! pool at the end (asserted). The driver's bursts are real functions in the
//! profile: they are called through `dyn RxQueue` / `dyn TxQueue`, as in
//! testpmd, so callgrind names them `<...IavfRxQueue<B> as ...RxQueue>::rx_burst`.
//!
//! Environment: `IAVF_BENCH_RING` (descriptors per ring, default 512),
//! `IAVF_BENCH_CPU` (CPU to pin to; default: not pinned), `IAVF_BENCH_SIMD`
//! (the driver's `simd=` values: 1 or 256, default: the best loops the CPU
//! has, AVX2 else SSE4.1; 128: at most SSE4.1; 0 or 64: the scalar loops).
//! The loops that ran are printed ("burst mode").
//!
//! Run: `cargo bench -p nicpoll-iavf --bench sim_burst -- fwd 200000`.
// Without `harness = false` cargo would build this as a libtest harness, where
// `main` is unused: keep that build warning-free.
#![cfg_attr(test, allow(dead_code, unused_imports))]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::{MacAddr, PortConf, PortQueues};
use nicpoll::{Port, RxQueue, TxQueue};
use nicpoll_iavf::sim::{PfModel, SimConfig, SimPf, SimVf, SimVfBar};
use nicpoll_iavf::{DmaMap, IavfOptions, IavfPort, MaxSimd, Timeouts};

const BURST: usize = 32;
const FRAME_LEN: usize = 64;
const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x71, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x71, 0x0b]);

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A 64-byte IPv4/UDP frame from A to B (what testpmd's txonly sends).
fn frame() -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&MAC_B.0);
    f[6..12].copy_from_slice(&MAC_A.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((FRAME_LEN - 14) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    let udp = &mut f[34..42];
    udp[0..2].copy_from_slice(&9u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    udp[4..6].copy_from_slice(&((FRAME_LEN - 34) as u16).to_be_bytes());
    f
}

struct Vf {
    sim: Arc<SimVf>,
    port: IavfPort<SimVfBar>,
    q: PortQueues,
}

/// A simulated VF and its started port, as testpmd's `--vdev net_iavf_sim`
/// makes it: trusted, no spoof check, promiscuous (io forwarding sends the
/// frames back unchanged).
fn vf(
    pf: &SimPf,
    name: &str,
    mac: MacAddr,
    mem: &Arc<DmaMemory>,
    pool: &Mempool,
    ring: u16,
    simd: MaxSimd,
) -> Vf {
    let sim = Arc::new(
        pf.add_vf(SimConfig {
            name: name.to_string(),
            mac,
            queue_pairs: 1,
            trusted: true,
            spoofchk: false,
            ..SimConfig::default()
        })
        .expect("simulated VF"),
    );
    let opts = IavfOptions {
        promisc: true,
        // No control thread: it would talk to a parked PF.
        watchdog: None,
        // Bring-up under valgrind is slow: be patient with the PF.
        timeouts: Timeouts {
            aq_send: Duration::from_secs(30),
            reply: Duration::from_secs(60),
            reset_done: Duration::from_secs(60),
            reset_detect: Duration::from_secs(10),
        },
        simd,
        ..IavfOptions::default()
    };
    let mut port = IavfPort::with_options(
        sim.bar(),
        sim.clone() as Arc<dyn DmaMap>,
        mem.clone(),
        name,
        opts,
        0,
    )
    .expect("bring the simulated VF up");
    port.configure(&PortConf {
        port_id: 0,
        nb_rxq: 1,
        nb_txq: 1,
        nb_rxd: ring,
        nb_txd: ring,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    })
    .expect("configure");
    let q = port.start().expect("start");
    Vf { sim, port, q }
}

fn fail(what: String) -> ExitCode {
    eprintln!("sim_burst: {what}");
    ExitCode::FAILURE
}

/// One hop of a burst: `from` transmits all of `batch`, both models step
/// (`from` reads its Tx ring and sends, `to` places the frames in its Rx
/// ring), and `to` receives a whole burst into `into`.
#[inline(always)]
fn hop(
    (from_name, from): (&str, &mut Vf),
    (to_name, to): (&str, &mut Vf),
    batch: &mut MbufBatch,
    into: &mut MbufBatch,
    it: u64,
) -> Result<(), String> {
    let sent = from.q.tx[0].tx_burst(batch);
    if sent != BURST {
        return Err(format!(
            "iteration {it}: tx_burst on {from_name} sent {sent} of {BURST}"
        ));
    }
    from.sim.step();
    to.sim.step();
    let got = to.q.rx[0].rx_burst(into);
    if got != BURST {
        return Err(format!(
            "iteration {it}: rx_burst on {to_name} got {got} of {BURST}"
        ));
    }
    Ok(())
}

/// `iters` iterations of io forwarding A → B → A; returns the packets received.
#[inline(never)]
fn forward(a: &mut Vf, b: &mut Vf, pool: &Mempool, iters: u64) -> Result<u64, String> {
    let tmpl = frame();
    let mut fresh = MbufBatch::with_burst(BURST);
    let mut fwd = MbufBatch::with_burst(BURST);
    let mut sink = MbufBatch::with_burst(BURST);
    let mut received = 0u64;
    for it in 0..iters {
        if !pool.alloc_bulk(&mut fresh, BURST) {
            return Err(format!("iteration {it}: the pool is empty"));
        }
        for m in fresh.iter_mut() {
            let _ = m.set_len(FRAME_LEN);
            m.data_mut().copy_from_slice(&tmpl);
        }
        hop(("A", a), ("B", b), &mut fresh, &mut fwd, it)?;
        hop(("B", b), ("A", a), &mut fwd, &mut sink, it)?;
        if it == 0 && sink.as_slice()[0].data() != tmpl {
            return Err("the frame came back changed".into());
        }
        sink.clear();
        received += 2 * BURST as u64;
    }
    Ok(received)
}

/// `polls` rx_burst calls on an empty queue, then as many tx_burst calls with
/// nothing to send; returns what they moved (must be 0).
#[inline(never)]
fn empty_polls(a: &mut Vf, polls: u64) -> (u64, u64) {
    let mut rx = MbufBatch::with_burst(BURST);
    let mut tx = MbufBatch::with_burst(BURST);
    let (mut got, mut sent) = (0u64, 0u64);
    for _ in 0..polls {
        got += a.q.rx[0].rx_burst(std::hint::black_box(&mut rx)) as u64;
    }
    for _ in 0..polls {
        sent += a.q.tx[0].tx_burst(std::hint::black_box(&mut tx)) as u64;
    }
    rx.clear();
    (got, sent)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("fwd");
    let default_n = if mode == "empty" { 1_000_000 } else { 200_000 };
    let n: u64 = match args.get(1) {
        Some(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => return fail(format!("count {v:?} is not a number")),
        },
        None => default_n,
    };
    if mode != "fwd" && mode != "empty" {
        return fail(format!("mode {mode:?}: expected fwd or empty"));
    }
    let ring = env_num("IAVF_BENCH_RING", 512) as u16;
    if let Ok(c) = std::env::var("IAVF_BENCH_CPU") {
        let c: usize = c.parse().expect("IAVF_BENCH_CPU: a CPU number");
        nicpoll::lcore::pin_current(&[c]).expect("pin to IAVF_BENCH_CPU");
    }
    // The forwarding thread is an lcore, as in testpmd: the pool's per-lcore
    // cache serves the driver's refills and frees.
    let _lcore = nicpoll::lcore::register(0).expect("register this thread as lcore 0");
    // Plain pages: the model reaches rings and buffers through the IOVAs the
    // driver maps, as in testpmd's net_iavf_sim (no hugepages needed).
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new("sim-burst", 8192)).expect("mempool");
    let simd = match std::env::var("IAVF_BENCH_SIMD") {
        Err(_) => MaxSimd::Best,
        Ok(v) => MaxSimd::parse(&v).unwrap_or_else(|| {
            eprintln!("IAVF_BENCH_SIMD={v:?}: use 0 or 64, 128, or 1 or 256");
            std::process::exit(2)
        }),
    };
    let pf = SimPf::new("bench", PfModel::X710).expect("simulated PF");
    let mut a = vf(&pf, "bench-a", MAC_A, &mem, &pool, ring, simd);
    let mut b = vf(&pf, "bench-b", MAC_B, &mem, &pool, ring, simd);
    println!(
        "burst mode: rx {}, tx {}",
        a.q.rx[0].burst_mode().unwrap_or("?"),
        a.q.tx[0].burst_mode().unwrap_or("?")
    );
    SimVf::connect(&a.sim, &b.sim);
    a.sim.set_manual(true);
    b.sim.set_manual(true);

    let result = if mode == "fwd" {
        let t = Instant::now();
        let r = forward(&mut a, &mut b, &pool, n);
        let secs = t.elapsed().as_secs_f64();
        r.map(|pkts| {
            println!(
                "sim_burst fwd: {n} iterations, {pkts} packets (each through one tx_burst and \
                 one rx_burst), burst {BURST}, {FRAME_LEN}-byte frames, rings {ring}"
            );
            println!(
                "stepped driver + model on ONE thread (wall clock, not a NIC rate): {:.3} s, \
                 {:.3} Mpps",
                secs,
                pkts as f64 / secs / 1e6
            );
        })
    } else {
        let t = Instant::now();
        let (got, sent) = empty_polls(&mut a, n);
        let secs = t.elapsed().as_secs_f64();
        if got + sent != 0 {
            Err(format!("empty polls moved {got} rx / {sent} tx packets"))
        } else {
            println!(
                "sim_burst empty: {n} rx_burst + {n} tx_burst calls on empty queues, {:.1} ns \
                 per call pair",
                secs * 1e9 / n as f64
            );
            Ok(())
        }
    };

    // The PF answers again: the ports close through the admin queue.
    a.sim.set_manual(false);
    b.sim.set_manual(false);
    let (sa, sb) = (a.sim.stats(), b.sim.stats());
    println!(
        "model: A tx {} rx {} missed {}, B tx {} rx {} missed {}, wire lost {}",
        sa.tx_frames,
        sa.rx_delivered,
        sa.rx_missed,
        sb.tx_frames,
        sb.rx_delivered,
        sb.rx_missed,
        sa.wire_lost + sb.wire_lost
    );
    for v in [a, b] {
        let Vf { sim, mut port, q } = v;
        drop(q);
        if let Err(e) = port.stop() {
            return fail(format!("stop: {e}"));
        }
        drop(port);
        drop(sim);
    }
    if let Err(e) = result {
        return fail(e);
    }
    if pool.in_use() != 0 {
        return fail(format!("{} mbufs not back in the pool", pool.in_use()));
    }
    println!("all {} mbufs back in the pool", pool.stats().size);
    ExitCode::SUCCESS
}
