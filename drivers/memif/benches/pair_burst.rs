//! net_memif's own rx_burst / tx_burst on one thread, for
//! `benches/memif-vs-dpdk.sh` to count the driver's instructions per packet
//! under callgrind, independently of how busy the machine is.
//!
//! A server and a client port of this process connect over a real socket (the
//! control threads run the handshake), then one thread, registered as lcore 1
//! so the mempool caches work as in testpmd, runs N iterations of:
//! 32 fresh 64-byte frames, client `tx_burst`, server `rx_burst` (must return
//! 32), the same 32 mbufs out through the server's `tx_burst`, client
//! `rx_burst` (must return 32), free. Every packet crosses one tx_burst and
//! one rx_burst in each direction: 64 packets per iteration. The bursts are
//! called through `dyn RxQueue` / `dyn TxQueue`, as testpmd calls them.
//!
//! With `oneway`, only the first half: client `tx_burst`, server `rx_burst`,
//! the received mbufs freed (the path of the txonly -> rxonly benchmark, its
//! generator being the client): 32 packets per iteration.
//!
//! Usage: `cargo bench -p nicpoll-memif --bench pair_burst -- [copy|zc] [N] [oneway]`
//! (zc: the client shares a hugepage-backed pool; needs 8 free 2 MiB pages).
#![cfg_attr(test, allow(dead_code, unused_imports))]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::{DmaMemory, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::PortConf;
use nicpoll::{Port, RxQueue, TxQueue};
use nicpoll_memif::{MemifOptions, MemifPort, Role, SocketSpec};

const BURST: usize = 32;

fn port(
    role: Role,
    path: &str,
    zc: bool,
    pool: &Mempool,
) -> (MemifPort, nicpoll::port::PortQueues) {
    let opts = MemifOptions {
        role,
        socket: SocketSpec {
            path: path.to_string(),
            abstract_ns: false,
        },
        zero_copy: zc,
        ..MemifOptions::default()
    };
    let mut p = MemifPort::new(&format!("net_memif_{role}"), opts, 0).expect("port");
    p.configure(&PortConf {
        port_id: 0,
        nb_rxq: 1,
        nb_txq: 1,
        nb_rxd: 0,
        nb_txd: 0,
        mempool: pool.clone(),
        max_rx_pktlen: 0,
    })
    .expect("configure");
    let q = p.start().expect("start");
    (p, q)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let zc = args.first().is_some_and(|a| a == "zc");
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let oneway = args.get(2).is_some_and(|a| a == "oneway");
    let path = format!("/tmp/nicpoll-memif-bench-{}.sock", std::process::id());
    let plain = DmaMemory::plain();
    let huge;
    let server_pool = Mempool::new(&plain, &MempoolConfig::new("server", 8192)).unwrap();
    let client_pool = if zc {
        huge = DmaMemory::new(MemoryConfig {
            file_prefix: format!("nicpoll-memif-bench-{}-", std::process::id()),
            ..MemoryConfig::default()
        })
        .expect("hugepages for zero copy");
        Mempool::new(&huge, &MempoolConfig::new("client", 8192)).unwrap()
    } else {
        Mempool::new(&plain, &MempoolConfig::new("client", 8192)).unwrap()
    };
    let (_server, mut sq) = port(Role::Server, &path, false, &server_pool);
    let (client, mut cq) = port(Role::Client, &path, zc, &client_pool);
    if !client.wait_connected(Duration::from_secs(30)) {
        eprintln!("no connection: {:?}", client.status());
        return ExitCode::FAILURE;
    }
    let _lcore = nicpoll::lcore::register(1).expect("lcore 1");
    let mut b = MbufBatch::with_burst(BURST);
    let mut r = MbufBatch::with_burst(BURST);
    let t = Instant::now();
    for i in 0..n {
        assert!(client_pool.alloc_bulk(&mut b, BURST));
        for m in b.iter_mut() {
            m.set_len(64);
            m.data_mut()[0] = i as u8;
        }
        let mut sent = 0;
        while sent < BURST {
            sent += cq.tx[0].tx_burst(&mut b);
        }
        let mut got = 0;
        while got < BURST {
            got += sq.rx[0].rx_burst(&mut b);
        }
        if oneway {
            b.clear();
            continue;
        }
        // The client posts its receive buffers in its rx_burst: the server's
        // transmit waits for that.
        let mut got = 0;
        while got < BURST {
            sq.tx[0].tx_burst(&mut b);
            got += cq.rx[0].rx_burst(&mut r);
        }
        r.clear();
    }
    let secs = t.elapsed().as_secs_f64();
    let pkts = n * if oneway { 1 } else { 2 } * BURST as u64;
    println!(
        "memif pair_burst {}{}: {pkts} packets (each one tx_burst and one rx_burst), {secs:.3} s, {:.2} Mpps on one thread",
        if zc { "zero-copy" } else { "copy" },
        if oneway { " one way" } else { "" },
        pkts as f64 / secs / 1e6
    );
    // Zero copy: what the rings held comes back once the connection is over.
    drop((sq, cq));
    drop((client, _server));
    assert_eq!(client_pool.in_use() + server_pool.in_use(), 0, "mbufs lost");
    ExitCode::SUCCESS
}
