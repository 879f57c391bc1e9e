//! net_memif against DPDK's: dpdk-testpmd 22.11 (Debian's `dpdk-dev` and
//! `librte-net-memif23`) on the other end of the socket, in both roles.
//!
//! - txonly on one side, rxonly on the other, in all four role/direction
//!   combinations: every frame counted on both sides (DPDK's port counters,
//!   read while it is still connected, against ours), and the bytes of every
//!   frame dpdk-testpmd generated checked against what its txonly engine
//!   builds (app/test-pmd/txonly.c: Ethernet, IPv4 198.18.0.1 -> 198.18.0.2
//!   with a valid header checksum, UDP 9 -> 9, zero payload);
//! - io forwarding in dpdk-testpmd: every frame we send comes back byte for
//!   byte, in order (copy mode, and zero-copy when hugepages are free);
//! - a dpdk-testpmd killed mid-traffic and restarted, in both roles;
//! - a wrong secret and a mismatched id, with DPDK's own refusal text.
//!
//! dpdk-testpmd always runs with `--no-pci`, `--no-huge -m 64` (memif's
//! regions are memfds of their own, so DPDK needs no hugepages here) and a
//! file prefix of its own; the tests take turns through a host-wide lock.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::{DmaMemory, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::testing::{fill, test_frame};
use nicpoll::port::{PortConf, PortQueues};
use nicpoll::{Port, RxQueue};
use nicpoll_memif::{MemifOptions, MemifPort, Phase, Role, SocketSpec};

const DPDK: &str = "dpdk-testpmd";

/// Whether dpdk-testpmd and DPDK's memif PMD are installed (checked without
/// running our code).
fn dpdk_missing() -> Option<String> {
    if !nicpoll_testkit::have_command(DPDK) {
        return Some(
            "dpdk-testpmd 22.11 (apt-get install dpdk dpdk-dev librte-net-memif23)".into(),
        );
    }
    let has_pmd = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|arch| std::fs::read_dir(arch.path().join("dpdk")).ok())
        .flatten()
        .flatten()
        .filter_map(|pmds| std::fs::read_dir(pmds.path()).ok())
        .flatten()
        .flatten()
        .any(|f| {
            f.file_name()
                .to_string_lossy()
                .starts_with("librte_net_memif.so")
        });
    if !has_pmd {
        return Some("DPDK's memif PMD (apt-get install librte-net-memif23)".into());
    }
    None
}

macro_rules! need_dpdk {
    () => {
        if let Some(m) = dpdk_missing() {
            return nicpoll_testkit::skip(m);
        }
    };
}

fn sock_path(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/tmp/np-memif-dpdk-{tag}-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A dpdk-testpmd in interactive mode, driven through its stdin.
struct Dpdk {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<String>>,
    prefix: String,
}

impl Dpdk {
    fn start(vdev: &str, mode: &str, extra_app: &[&str]) -> Dpdk {
        static N: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "np-memif-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut args: Vec<String> = [
            "--no-pci",
            "--no-huge",
            "-m",
            "64",
            "--no-shconf",
            "-l",
            "0,1",
            "--log-level=pmd.net.memif:info",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!("--file-prefix={prefix}"));
        args.push(format!("--vdev={vdev}"));
        args.push("--".into());
        for a in ["-i", "--total-num-mbufs=2048", "--nb-cores=1"] {
            args.push(a.into());
        }
        args.push(format!("--forward-mode={mode}"));
        args.extend(extra_app.iter().map(|s| s.to_string()));
        // stdbuf (which execs testpmd: one pid to kill): testpmd prints with
        // stdio, which a pipe would buffer whole.
        let mut child = Command::new("stdbuf")
            .args(["-o0", "-e0", DPDK])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dpdk-testpmd starts");
        let out = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let o = out.clone();
            // Chunks, not lines: the prompt has no newline after it.
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    o.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let stdin = child.stdin.take().unwrap();
        let d = Dpdk {
            child,
            stdin,
            out,
            prefix,
        };
        assert!(
            d.wait_for("testpmd>", Duration::from_secs(30)),
            "dpdk-testpmd did not come up:\n{}",
            d.text()
        );
        d
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn cmd(&mut self, c: &str) {
        let _ = writeln!(self.stdin, "{c}");
        let _ = self.stdin.flush();
    }

    /// Port 0's counters, as `show port stats 0` prints them: (RX-packets,
    /// RX-bytes, TX-packets, TX-bytes).
    fn stats(&mut self) -> (u64, u64, u64, u64) {
        let before = self.text().matches("NIC statistics for port 0").count();
        self.cmd("show port stats 0");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.text();
            let blocks: Vec<&str> = t.split("NIC statistics for port 0").collect();
            if blocks.len() > before + 1 && blocks.last().unwrap().contains("Tx-pps") {
                let b = blocks.last().unwrap();
                let field = |name: &str| -> u64 {
                    let at = b.find(name).unwrap_or_else(|| panic!("{name} in {b}"));
                    b[at + name.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                return (
                    field("RX-packets:"),
                    field("RX-bytes:"),
                    field("TX-packets:"),
                    field("TX-bytes:"),
                );
            }
            assert!(
                Instant::now() < deadline,
                "no statistics from dpdk-testpmd:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn quit(mut self) -> String {
        self.cmd("quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        self.text()
    }
}

impl Drop for Dpdk {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
    }
}

fn pool(name: &str, n: u32) -> Mempool {
    Mempool::new(&DmaMemory::plain(), &MempoolConfig::new(name, n)).unwrap()
}

fn ours(role: Role, path: &str, p: &Mempool, secret: &str, id: u32) -> (MemifPort, PortQueues) {
    let opts = MemifOptions {
        role,
        id,
        socket: SocketSpec {
            path: path.to_string(),
            abstract_ns: false,
        },
        secret: secret.to_string(),
        ..MemifOptions::default()
    };
    let mut port = MemifPort::new("net_memif0", opts, 0).unwrap();
    port.configure(&PortConf {
        port_id: 0,
        nb_rxq: 1,
        nb_txq: 1,
        nb_rxd: 0,
        nb_txd: 0,
        mempool: p.clone(),
        max_rx_pktlen: 0,
    })
    .unwrap();
    let q = port.start().unwrap();
    (port, q)
}

fn dpdk_vdev(role: Role, path: &str, extra: &str) -> String {
    format!("net_memif0,role={role},socket={path},socket-abstract=no,mac=02:00:00:00:00:0a{extra}")
}

/// The 64-byte frame dpdk-testpmd's txonly engine builds with its defaults
/// (txonly.c v22.11: 49-56, 111-157, 361): everything but the payload, which
/// it never writes (zero in fresh memory).
fn check_dpdk_txonly_frame(f: &[u8]) -> Result<(), String> {
    if f.len() != 64 {
        return Err(format!("length {}", f.len()));
    }
    if f[6..12] != [2, 0, 0, 0, 0, 0x0a] || f[12..14] != [0x08, 0x00] {
        return Err(format!("Ethernet header {:02x?}", &f[..14]));
    }
    let ip = &f[14..34];
    let expect_ip = [
        0x45, 0, 0, 50, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
    ];
    let mut without_sum = [0u8; 20];
    without_sum.copy_from_slice(ip);
    without_sum[10] = 0;
    without_sum[11] = 0;
    if without_sum != expect_ip {
        return Err(format!("IPv4 header {ip:02x?}"));
    }
    let sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    if folded != 0xffff {
        return Err(format!("IPv4 header checksum wrong: {ip:02x?}"));
    }
    if f[34..42] != [0, 9, 0, 9, 0, 30, 0, 0] {
        return Err(format!("UDP header {:02x?}", &f[34..42]));
    }
    if f[42..].iter().any(|&b| b != 0) {
        return Err(format!("payload {:02x?}", &f[42..]));
    }
    Ok(())
}

/// Receive until nothing came for `quiet`, checking each frame; returns
/// (frames, bytes, bad frames).
fn drain_checking(
    rx: &mut dyn RxQueue,
    quiet: Duration,
    limit: Duration,
    check: &dyn Fn(&[u8]) -> Result<(), String>,
) -> (u64, u64, u64) {
    let mut b = MbufBatch::with_burst(32);
    let (mut n, mut bytes, mut bad) = (0u64, 0u64, 0u64);
    let mut last = Instant::now();
    let end = Instant::now() + limit;
    while last.elapsed() < quiet && Instant::now() < end {
        if rx.rx_burst(&mut b) > 0 {
            last = Instant::now();
            for m in b.iter() {
                n += 1;
                bytes += m.len() as u64;
                if let Err(e) = check(m.data()) {
                    if bad == 0 {
                        eprintln!("first bad frame ({e})");
                    }
                    bad += 1;
                }
            }
            b.clear();
        } else {
            std::thread::yield_now();
        }
    }
    (n, bytes, bad)
}

/// dpdk-testpmd generates, we receive and check every frame; the counts must
/// agree exactly once DPDK has stopped and we have drained the ring.
fn dpdk_sends_we_receive(our_role: Role) {
    let _turn = nicpoll_testkit::lock_name("nicpoll-memif-dpdk");
    let path = sock_path("dtx");
    let p = pool("dtx", 4096);
    let (port, mut q) = ours(our_role, &path, &p, "", 0);
    let peer = if our_role == Role::Server {
        Role::Client
    } else {
        Role::Server
    };
    let mut d = Dpdk::start(&dpdk_vdev(peer, &path, ""), "txonly", &[]);
    assert!(
        port.wait_connected(Duration::from_secs(10)),
        "{:?}\n{}",
        port.status(),
        d.text()
    );
    d.cmd("start");
    let (n1, _, bad1) = drain_checking(
        q.rx[0].as_mut(),
        Duration::from_secs(2),
        Duration::from_millis(1500),
        &check_dpdk_txonly_frame,
    );
    d.cmd("stop");
    assert!(d.wait_for("Done.", Duration::from_secs(10)), "{}", d.text());
    let (n2, _, bad2) = drain_checking(
        q.rx[0].as_mut(),
        Duration::from_millis(500),
        Duration::from_secs(10),
        &check_dpdk_txonly_frame,
    );
    let (_, _, dpdk_tx, dpdk_tx_bytes) = d.stats();
    let text = d.quit();
    let st = port.stats();
    assert!(
        n1 > 1000,
        "dpdk-testpmd sent too little to judge: {n1}\n{text}"
    );
    assert_eq!(bad1 + bad2, 0, "frames unlike dpdk-testpmd's txonly frames");
    assert_eq!(
        n1 + n2,
        dpdk_tx,
        "every frame DPDK put on the ring arrived, once"
    );
    assert_eq!(st.ipackets, dpdk_tx);
    assert_eq!(st.ibytes, dpdk_tx_bytes);
    assert_eq!(st.ierrors, 0);
    drop(q);
    drop(port);
    assert_eq!(p.in_use(), 0);
}

/// We send exactly N tagged frames; dpdk-testpmd's rxonly counts them.
fn we_send_dpdk_receives(our_role: Role) {
    let _turn = nicpoll_testkit::lock_name("nicpoll-memif-dpdk");
    let path = sock_path("drx");
    let p = pool("drx", 4096);
    let peer = if our_role == Role::Server {
        Role::Client
    } else {
        Role::Server
    };
    // DPDK's client connects once, at start: our server must be listening.
    let (port, mut q) = if our_role == Role::Server {
        ours(our_role, &path, &p, "", 0)
    } else {
        (
            MemifPort::new("unused", MemifOptions::default(), 9).unwrap(),
            PortQueues::default(),
        )
    };
    let mut d = Dpdk::start(&dpdk_vdev(peer, &path, ""), "rxonly", &[]);
    let (port, mut q) = if our_role == Role::Client {
        drop((q, port));
        ours(our_role, &path, &p, "", 0)
    } else {
        (port, std::mem::take(&mut q))
    };
    assert!(
        port.wait_connected(Duration::from_secs(10)),
        "{:?}\n{}",
        port.status(),
        d.text()
    );
    d.cmd("start");
    const N: u64 = 200_000;
    let mut b = MbufBatch::with_burst(32);
    let (mut sent, mut next) = (0u64, 0u32);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent < N && Instant::now() < deadline {
        if b.is_empty() {
            let k = (N - sent).min(32) as usize;
            fill(&p, &mut b, next, k, 64);
            next += k as u32;
        }
        sent += q.tx[0].tx_burst(&mut b) as u64;
    }
    assert_eq!(sent, N, "the ring did not take every frame in 60 s");
    let ok = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (rx, rx_bytes, _, _) = d.stats();
            if rx == N || Instant::now() > deadline {
                break (rx, rx_bytes);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let text = d.quit();
    assert_eq!(
        ok,
        (N, N * 64),
        "dpdk-testpmd counted other than what we sent:\n{text}"
    );
    let st = port.stats();
    assert_eq!((st.opackets, st.obytes, st.oerrors), (N, N * 64, 0));
    drop(q);
    drop(port);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn dpdk_client_txonly_to_our_server() {
    need_dpdk!();
    dpdk_sends_we_receive(Role::Server);
}

#[test]
fn dpdk_server_txonly_to_our_client() {
    need_dpdk!();
    dpdk_sends_we_receive(Role::Client);
}

#[test]
fn our_server_to_dpdk_client_rxonly() {
    need_dpdk!();
    we_send_dpdk_receives(Role::Server);
}

#[test]
fn our_client_to_dpdk_server_rxonly() {
    need_dpdk!();
    we_send_dpdk_receives(Role::Client);
}

/// Send tagged frames of many lengths through dpdk-testpmd's io forwarding
/// and get each back intact, in order.
fn io_round_trip(p: &Mempool, zero_copy: bool) {
    let _turn = nicpoll_testkit::lock_name("nicpoll-memif-dpdk");
    let path = sock_path("io");
    // `--no-flush-rx`: testpmd's `start` otherwise drains the receive queues
    // (flush_fwd_rx_queues, app/test-pmd/testpmd.c v22.11) after it printed
    // "io packet forwarding - ports=..." and before the forwarding lcore runs;
    // frames of ours that arrive then are counted in RX-packets and freed,
    // never forwarded (under load: 32 or 64 of them, one or two bursts).
    let mut d = Dpdk::start(
        &dpdk_vdev(Role::Server, &path, ""),
        "io",
        &["--port-topology=loop", "--no-flush-rx"],
    );
    d.cmd("start");
    // The line testpmd prints once the start is through (rxtx_config_display,
    // right before it launches the forwarding lcore).
    assert!(
        d.wait_for(
            "io packet forwarding packets/burst=",
            Duration::from_secs(10)
        ),
        "{}",
        d.text()
    );
    let opts = MemifOptions {
        role: Role::Client,
        socket: SocketSpec {
            path: path.clone(),
            abstract_ns: false,
        },
        zero_copy,
        ..MemifOptions::default()
    };
    let mut port = MemifPort::new("net_memif0", opts, 0).unwrap();
    port.configure(&PortConf {
        port_id: 0,
        nb_rxq: 1,
        nb_txq: 1,
        nb_rxd: 0,
        nb_txd: 0,
        mempool: p.clone(),
        max_rx_pktlen: 0,
    })
    .unwrap();
    let mut q = port.start().unwrap();
    assert!(
        port.wait_connected(Duration::from_secs(10)),
        "{:?}\n{}",
        port.status(),
        d.text()
    );
    // Our receive queue posts its buffers (zero copy: mbufs) in its first
    // burst: before the first frame goes out, so that dpdk-testpmd finds
    // room for what it forwards.
    let mut r = MbufBatch::with_burst(32);
    assert_eq!(q.rx[0].rx_burst(&mut r), 0);
    const N: usize = 20_000;
    let len = |i: usize| 60 + (i * 37) % 1400;
    let mut b = MbufBatch::with_burst(32);
    let (mut next, mut got, mut bad) = (0usize, 0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_back = Instant::now();
    // A lost frame shows as a stall once everything is sent: 10 s of nothing.
    while got < N && Instant::now() < deadline && last_back.elapsed() < Duration::from_secs(10) {
        // At most half of our receive ring (1024 slots, all posted) in
        // flight: DPDK's io forwarding, which does not retry, always finds
        // room then, so it drops nothing.
        if b.is_empty() && next < N && next - got < 512 {
            for i in next..(next + 32).min(N) {
                fill(p, &mut b, i as u32, 1, len(i));
            }
            next = (next + 32).min(N);
        }
        q.tx[0].tx_burst(&mut b);
        q.rx[0].rx_burst(&mut r);
        while let Some(m) = r.pop_front() {
            if m.data() != test_frame(got as u32, len(got)).as_slice() {
                bad += 1;
            }
            got += 1;
            last_back = Instant::now();
        }
    }
    let (drx, _, dtx, _) = d.stats();
    let text = d.quit();
    assert_eq!(
        got,
        N,
        "frames back from dpdk-testpmd's io forwarding (sent {next}, it counted {drx} in and \
         {dtx} out; our port: {:?}):\n{text}",
        port.xstats()
    );
    assert_eq!(bad, 0, "frames changed or reordered on the way");
    assert_eq!(
        (drx, dtx),
        (N as u64, N as u64),
        "dpdk-testpmd's own counts"
    );
    drop(q);
    drop(port);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn dpdk_io_forwarding_returns_every_frame_intact() {
    need_dpdk!();
    io_round_trip(&pool("io", 4096), false);
}

#[test]
fn dpdk_io_forwarding_with_our_zero_copy_client() {
    need_dpdk!();
    if nicpoll_testkit::skip_if_missing(&[
        nicpoll_testkit::Need::Hugetlbfs,
        nicpoll_testkit::Need::FreeHugepages(8),
    ]) {
        return;
    }
    let mem = DmaMemory::new(MemoryConfig {
        file_prefix: format!("np-memif-zc-{}-", std::process::id()),
        ..MemoryConfig::default()
    })
    .unwrap();
    let p = Mempool::new(&mem, &MempoolConfig::new("io-zc", 4096)).unwrap();
    io_round_trip(&p, true);
}

/// Traffic until the peer is SIGKILLed, then a new peer: we notice, free
/// everything, and carry on with the next one.
#[test]
fn dpdk_killed_mid_traffic_and_restarted_in_both_roles() {
    need_dpdk!();
    let _turn = nicpoll_testkit::lock_name("nicpoll-memif-dpdk");
    for our_role in [Role::Server, Role::Client] {
        let path = sock_path("kill");
        let p = pool("kill", 4096);
        let peer = if our_role == Role::Server {
            Role::Client
        } else {
            Role::Server
        };
        let mut port_q = None;
        if our_role == Role::Server {
            port_q = Some(ours(our_role, &path, &p, "", 0));
        }
        for round in 0..2 {
            let mut d = Dpdk::start(&dpdk_vdev(peer, &path, ""), "txonly", &[]);
            let (port, q) = port_q.get_or_insert_with(|| ours(our_role, &path, &p, "", 0));
            assert!(
                port.wait_connected(Duration::from_secs(10)),
                "{our_role} round {round}: {:?}\n{}",
                port.status(),
                d.text()
            );
            d.cmd("start");
            let (n, _, bad) = drain_checking(
                q.rx[0].as_mut(),
                Duration::from_secs(1),
                Duration::from_millis(700),
                &check_dpdk_txonly_frame,
            );
            assert!(
                n > 100 && bad == 0,
                "{our_role} round {round}: {n} frames, {bad} bad"
            );
            // SIGKILL: no DISCONNECT, the socket just closes.
            d.kill();
            let deadline = Instant::now() + Duration::from_secs(5);
            while port.status().phase != Phase::Down && Instant::now() < deadline {
                let mut b = MbufBatch::with_burst(32);
                q.rx[0].rx_burst(&mut b);
            }
            assert_eq!(
                port.status().phase,
                Phase::Down,
                "{our_role}: the peer's death went unseen"
            );
            assert!(!port.link().up);
            // The error says so (a client may already be retrying, and
            // then says that nobody listens), and the drop is counted.
            let e = port.status().last_error.unwrap_or_default();
            assert!(
                e.contains("closed the control socket") || e.contains("no memif server listens"),
                "{e}"
            );
            let disconnects = port
                .xstats()
                .into_iter()
                .find(|(k, _)| k == "memif_disconnects")
                .map(|(_, v)| v);
            assert!(disconnects >= Some(round + 1), "{disconnects:?}");
            // A server killed by SIGKILL leaves its socket file: DPDK does not
            // replace it, so the restart needs it gone (as an operator does).
            if peer == Role::Server {
                let _ = std::fs::remove_file(&path);
            }
        }
        drop(port_q);
        assert_eq!(p.in_use(), 0, "{our_role}: mbufs leaked");
    }
}

#[test]
fn wrong_secret_and_mismatched_id_are_refused_both_ways() {
    need_dpdk!();
    let _turn = nicpoll_testkit::lock_name("nicpoll-memif-dpdk");
    let p = pool("refuse", 4096);
    // We serve with a secret, DPDK's client brings another one / another id.
    for (dpdk_extra, reason) in [
        (",secret=wrong", "Incorrect secret"),
        (",secret=right,id=4", "ID not found"),
    ] {
        let path = sock_path("refs");
        let (port, _q) = ours(Role::Server, &path, &p, "right", 0);
        let d = Dpdk::start(&dpdk_vdev(Role::Client, &path, dpdk_extra), "rxonly", &[]);
        assert!(
            d.wait_for(
                &format!("Disconnect received: {reason}"),
                Duration::from_secs(10)
            ),
            "DPDK did not report {reason:?}:\n{}",
            d.text()
        );
        assert_ne!(port.status().phase, Phase::Up);
        let e = port.status().last_error.unwrap_or_default();
        assert!(
            e.contains(if reason == "ID not found" {
                "id=4"
            } else {
                reason
            }),
            "{e}"
        );
        drop(d);
    }
    // DPDK serves with a secret, our client brings another one / another id.
    for (secret, id, reason) in [
        ("wrong", 0, "Incorrect secret"),
        ("right", 4, "ID not found"),
    ] {
        let path = sock_path("refc");
        let d = Dpdk::start(
            &dpdk_vdev(Role::Server, &path, ",secret=right"),
            "rxonly",
            &[],
        );
        let (port, _q) = ours(Role::Client, &path, &p, secret, id);
        assert!(!port.wait_connected(Duration::from_secs(2)));
        let e = port.status().last_error.unwrap_or_default();
        assert!(e.contains(reason), "{e}\n{}", d.text());
        drop(d);
    }
}
