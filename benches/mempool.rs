//! Mempool micro-benchmark: cost of one bulk get + bulk put, per mbuf.
//!
//! Each iteration does `Mempool::alloc_bulk(&mut batch, n)` (take `n` mbufs
//! and reset their headers) followed by `batch.clear()` (give them back in
//! bulk), which is what a null/io forwarding loop does per burst. Reported:
//! best-of-SAMPLES nanoseconds per mbuf (get + put together), for burst sizes
//! 1, 8, 32 and 64, on three paths:
//!
//! - `lcore-cache`: the thread is registered as lcore 0 and the pool has the
//!   default per-lcore cache (250): gets and puts stay in the lcore's cache;
//! - `ring, cache=0`: same thread, pool built with `cache_size = 0`: every get
//!   and put is a multi-producer/multi-consumer ring operation;
//! - `ring, not-lcore`: the default-cache pool used from a thread that is not
//!   an lcore (it cannot own a cache, so it uses the ring too).
//!
//! No criterion (it needs a C toolchain build); plain `std::time::Instant`.
//!
//! Run: `cargo bench --bench mempool` (needs `[[bench]] name = "mempool"`,
//! `harness = false` in the root Cargo.toml). Optional positional argument: a
//! substring filter on the case name (e.g. `cargo bench --bench mempool -- ring`).
//! Environment: `MEMPOOL_BENCH_SAMPLES` (default 25), `MEMPOOL_BENCH_MBUFS`
//! (mbufs moved per sample, default 4000000), `MEMPOOL_BENCH_CPU` (CPU to pin
//! to; default: the last allowed CPU; `none` to not pin).
// Without the `harness = false` stanza cargo builds this file as a libtest
// harness (cfg(test)), where `main` is unused: keep that build warning-free.
#![cfg_attr(test, allow(dead_code, unused_imports))]

use std::hint::black_box;
use std::time::Instant;

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::{Mempool, MempoolConfig};

const SIZES: [usize; 4] = [1, 8, 32, 64];
const POOL_MBUFS: u32 = 8192;

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Best-of-`samples` ns per mbuf for one get+put of `n` mbufs.
fn measure(pool: &Mempool, n: usize, samples: u64, mbufs_per_sample: u64) -> f64 {
    let iters = (mbufs_per_sample / n as u64).max(1);
    let mut batch = MbufBatch::with_burst(n);
    assert_eq!(batch.burst(), n, "MbufBatch cannot hold a burst of {n}");
    let mut fails = 0u64;
    // Warm-up: fill the lcore cache, fault in the pages, settle the clock.
    for _ in 0..iters / 4 + 1 {
        if !pool.alloc_bulk(&mut batch, n) {
            fails += 1;
        }
        batch.clear();
    }
    let mut best = f64::INFINITY;
    for _ in 0..samples {
        let t0 = Instant::now();
        for _ in 0..iters {
            if !pool.alloc_bulk(black_box(&mut batch), n) {
                fails += 1;
            }
            black_box(batch.as_slice());
            batch.clear();
        }
        let dt = t0.elapsed().as_nanos() as f64;
        best = best.min(dt / (iters * n as u64) as f64);
    }
    assert_eq!(
        fails, 0,
        "alloc_bulk({n}) failed {fails} times: pool too small?"
    );
    assert_eq!(pool.in_use(), 0, "mbufs leaked");
    best
}

fn pool(name: &str, cache_size: u32) -> (DmaMemory, Mempool) {
    let mem = DmaMemory::plain();
    let mut cfg = MempoolConfig::new(name, POOL_MBUFS);
    cfg.cache_size = cache_size;
    let pool = Mempool::new(&mem, &cfg).expect("create mempool");
    (mem, pool)
}

fn main() {
    // Flags such as `--bench` come from cargo; the first other argument filters cases.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let samples = env_num("MEMPOOL_BENCH_SAMPLES", 25).max(1);
    let per_sample = env_num("MEMPOOL_BENCH_MBUFS", 4_000_000).max(1);
    let pin = std::env::var("MEMPOOL_BENCH_CPU").unwrap_or_default();
    let cpu = if pin == "none" {
        None
    } else if pin.is_empty() {
        nicpoll::lcore::allowed_cpus()
            .ok()
            .and_then(|c| c.last().copied())
    } else {
        Some(
            pin.parse::<usize>()
                .expect("MEMPOOL_BENCH_CPU: a CPU number or `none`"),
        )
    };
    if let Some(c) = cpu {
        nicpoll::lcore::pin_current(&[c]).expect("pin to MEMPOOL_BENCH_CPU");
    }
    let wanted = |case: &str| filter.as_deref().is_none_or(|f| case.contains(f));

    println!(
        "mempool bulk get+put, ns per mbuf (best of {samples} samples of {per_sample} mbufs; \
         pool {POOL_MBUFS} mbufs, stride 2048; pinned to CPU {})",
        cpu.map_or("-".to_string(), |c| c.to_string())
    );
    println!(
        "{:<18} {:>6} {:>12} {:>14}",
        "path", "burst", "ns/mbuf", "Mmbuf/s"
    );
    let report = |case: &str, n: usize, ns: f64| {
        println!("{case:<18} {n:>6} {ns:>12.2} {:>14.1}", 1e3 / ns);
    };

    // The thread is not an lcore yet: the default-cache pool goes through its ring.
    if wanted("ring, not-lcore") {
        let (_mem, p) = pool("bench-notlcore", nicpoll::mempool::DEFAULT_CACHE_SIZE);
        for n in SIZES {
            report("ring, not-lcore", n, measure(&p, n, samples, per_sample));
        }
    }

    let _lcore = nicpoll::lcore::register(0).expect("register this thread as lcore 0");
    if wanted("lcore-cache") {
        let (_mem, p) = pool("bench-cache", nicpoll::mempool::DEFAULT_CACHE_SIZE);
        for n in SIZES {
            report("lcore-cache", n, measure(&p, n, samples, per_sample));
        }
        p.flush_cache();
    }
    if wanted("ring, cache=0") {
        let (_mem, p) = pool("bench-nocache", 0);
        for n in SIZES {
            report("ring, cache=0", n, measure(&p, n, samples, per_sample));
        }
    }
}
