//! nicpoll-vf's VFs in a QEMU 11 guest (the project's harness, `tools/guest`),
//! driven by drivers we did not write and by ours, two boots:
//!
//! - `linux_iavf_and_nicpoll_share_the_pf` (`tests/guest/linux_and_nicpoll.sh`):
//!   Linux's iavf brings VF0 up (the PF's MAC, link up at the PF's speed) and
//!   pings a network namespace of the host through the PF's uplink (a veth
//!   pair the test makes), its netdev counters agreeing with the host side's;
//!   nicpoll's testpmd drives VF1 through vfio-pci in no-IOMMU mode in
//!   icmpecho mode and Linux's pings of nicpoll's address are answered across
//!   the PF's switch; then the host resets the PF and both drivers recover.
//! - `dpdk_and_nicpoll_testpmd_forward_between_two_vfs`
//!   (`tests/guest/dpdk_and_nicpoll.sh`): dpdk-testpmd 24.11 (net_iavf) and
//!   nicpoll's testpmd each forward between the two VFs (io, `--tx-first`)
//!   and send txonly frames that reach the host through the uplink (counted
//!   there by destination MAC); nicpoll's runs with the group nodes renamed
//!   `/dev/vfio/N` as in a pod, on hugepages, and `testpmd doctor -a` passes
//!   its VFIO checks there.
//!
//! The release testpmd is built unless `NICPOLL_GUEST_TESTPMD` names one.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use nicpoll_guest::{Driver, Guest, Mode, VfioUser};
use nicpoll_testkit::{Need, skip};

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest")
}

/// The release testpmd, built once per test process.
fn testpmd_release() -> &'static Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("NICPOLL_GUEST_TESTPMD") {
            return Ok(PathBuf::from(p));
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "testpmd",
                "--bin",
                "testpmd",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !out.status.success() {
            return Err("cargo build --release -p testpmd failed".into());
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "testpmd")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| "no testpmd executable in cargo's output".to_string())
    })
}

/// Guests run one at a time: each keeps two vCPUs busy.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// What this machine lacks for the host side (veth pairs, a namespace, raw
/// sockets), decided before anything runs.
fn host_side_missing() -> Option<String> {
    let mut needs = nicpoll_testkit::VETH.to_vec();
    needs.push(Need::RawSockets);
    nicpoll_testkit::missing(&needs)
}

/// A network namespace created for one test, deleted when dropped.
struct Netns {
    name: String,
    _lock: nicpoll_testkit::NameLock,
}

impl Netns {
    fn create(name: &str) -> Netns {
        let lock = nicpoll_testkit::lock_name(name);
        let _ = ip(&["netns", "del", name]);
        ip_ok(&["netns", "add", name]);
        Netns {
            name: name.to_string(),
            _lock: lock,
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"))
}

fn ip_ok(args: &[&str]) {
    let o = ip(args);
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A counter of an interface in a namespace (`/sys/class/net/IF/statistics`).
fn netns_counter(ns: &str, ifname: &str, counter: &str) -> u64 {
    let o = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{ifname}/statistics/{counter}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `key=value` in a line.
fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
}

/// Replies in a busybox ping summary ("5 packets transmitted, 5 packets received").
fn received(out: &str, prefix: &str) -> u64 {
    out.lines()
        .filter(|l| l.starts_with(prefix) && l.contains("packets received"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter()
                .position(|&x| x == "received,")
                .and_then(|i| w[i - 2].parse().ok())
        })
        .next_back()
        .unwrap_or(0)
}

#[test]
fn linux_iavf_and_nicpoll_share_the_pf() {
    let dir = tempfile::tempdir().unwrap();
    let (s0, s1) = (dir.path().join("vf0.sock"), dir.path().join("vf1.sock"));
    let guest = Guest::new()
        .mode(Mode::NoIommu)
        .vfio_user(VfioUser::new(&s0))
        .vfio_user(VfioUser::new(&s1).driver(Driver::VfioPci))
        .kmod("iavf")
        .smp(2)
        .timeout(Duration::from_secs(420));
    if let Some(why) = guest.missing().or_else(host_side_missing) {
        return skip(why);
    }
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let bin = testpmd_release().as_ref().unwrap_or_else(|e| panic!("{e}"));
    // The PF's port: one end of a veth pair; the other end in a namespace
    // with the address the guest pings.
    let pair = nicpoll::port::testing::VethPair::create("npvfl");
    let ns = Netns::create("npvf-linux");
    ip_ok(&["link", "set", &pair.b, "netns", &ns.name]);
    // A new namespace has IPv6 on again: its chatter (router and multicast
    // listener messages) would reach the VF's filters, not the VF.
    ip_ok(&[
        "netns",
        "exec",
        &ns.name,
        "sh",
        "-c",
        &format!("echo 1 > /proc/sys/net/ipv6/conf/{}/disable_ipv6", pair.b),
    ]);
    ip_ok(&["-n", &ns.name, "link", "set", &pair.b, "up"]);
    ip_ok(&[
        "-n",
        &ns.name,
        "addr",
        "add",
        "10.77.0.1/24",
        "dev",
        &pair.b,
    ]);
    let server = Server::start(dir.path(), 2, &["--uplink", &pair.a]);
    let running = guest
        .file(bin)
        .program(
            guest_dir().join("linux_and_nicpoll.sh"),
            Vec::<String>::new(),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("the guest harness: {e}"));
    // The guest's counters against the host side's, read while nothing moves.
    let mut host = None;
    if running.wait_for_output("=== STATS", Duration::from_secs(240)) {
        host = Some((
            netns_counter(&ns.name, &pair.b, "rx_packets"),
            netns_counter(&ns.name, &pair.b, "tx_packets"),
            netns_counter(&ns.name, &pair.b, "rx_bytes"),
            netns_counter(&ns.name, &pair.b, "tx_bytes"),
        ));
    }
    if running.wait_for_output("READY FOR PF RESET", Duration::from_secs(240)) {
        server.signal("USR2");
    }
    let out = running.wait();
    let counters = server.counters();
    let (_, server_out) = server.stop();
    eprintln!(
        "=== guest: {}\n{}\n=== nicpoll-vf:\n{}",
        out.report(),
        out.output,
        server_out
    );
    let o = &out.output;
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(o.contains("=== GUEST DONE"), "{o}");
    // 1. Linux's iavf: the MAC the PF assigned, link up at the PF's speed.
    let link = line_with(o, "=== LINK");
    assert_eq!(value(link, "driver"), "iavf", "{link}");
    assert_eq!(value(link, "mac"), "02:00:00:56:46:00", "{link}");
    assert_eq!(value(link, "carrier"), "1", "{link}");
    assert_eq!(value(link, "speed"), "10000", "{link}");
    assert_eq!(received(o, "ping-uplink:"), 5, "pings through the uplink");
    // Its counters (the PF's GET_STATS) agree with what the host saw: every
    // frame it sent arrived, every frame the host sent reached it; bytes as
    // the VSI counts them, the frame's 4-byte CRC included on receive.
    let stats = line_with(o, "=== STATS");
    let g = |k: &str| value(stats, k).parse::<u64>().unwrap();
    let (h_rx, h_tx, h_rx_bytes, h_tx_bytes) = host.expect("the host read its counters");
    eprintln!(
        "guest {stats}\nhost rx_packets={h_rx} tx_packets={h_tx} rx_bytes={h_rx_bytes} \
         tx_bytes={h_tx_bytes}"
    );
    assert!(g("tx_packets") >= 5, "{stats}");
    assert_eq!(g("tx_packets"), h_rx, "guest sent, host received");
    assert_eq!(g("rx_packets"), h_tx, "host sent, guest received");
    assert_eq!(g("tx_bytes"), h_rx_bytes, "bytes the guest sent");
    assert_eq!(g("rx_bytes"), h_tx_bytes + 4 * h_tx, "bytes the guest got");
    // 2. nicpoll answers Linux across the PF's switch.
    assert_eq!(received(o, "ping-nicpoll:"), 5, "nicpoll answered");
    // 3. The PF reset: both drivers saw it and recovered.
    assert!(o.contains("RESET SEEN by iavf"), "{o}");
    assert!(o.contains("RECOVERED nicpoll"), "{o}");
    assert!(o.contains("RECOVERED uplink"), "{o}");
    assert_eq!(received(o, "ping-nicpoll-after:"), 5);
    assert_eq!(received(o, "ping-uplink-after:"), 5);
    assert!(line_with(o, "TESTPMD EXIT").contains("EXIT 0"), "{o}");
    assert!(o.contains("mbufs back in the pool"), "{o}");
    // The server: both VFs reset by the PF reset, no bad message, no DMA fault.
    for l in &counters[..2] {
        eprintln!("{l}");
        assert_eq!(field(l, "bad"), 0, "{l}");
        assert_eq!(field(l, "faults"), 0, "{l}");
        assert!(field(l, "(vf") >= 1, "{l}");
    }
    assert!(server_out.contains("PF reset"), "{server_out}");
}

/// Frames arriving at a host interface, counted by destination MAC.
struct HostCounter {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<BTreeMap<[u8; 6], u64>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostCounter {
    fn start(ifname: &str) -> HostCounter {
        let s = nicpoll::netdev::RawSocket::open(ifname).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let (st, c) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 16384];
            while !st.load(Ordering::Relaxed) {
                if !s.wait_readable(Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                let mut seen: BTreeMap<[u8; 6], u64> = BTreeMap::new();
                while let Ok(Some(r)) = s.try_recv(&mut buf) {
                    if !r.outgoing && r.len >= 14 {
                        *seen.entry(buf[..6].try_into().unwrap()).or_default() += 1;
                    }
                }
                let mut c = c.lock().unwrap();
                for (k, n) in seen {
                    *c.entry(k).or_default() += n;
                }
            }
        });
        HostCounter {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeMap<[u8; 6], u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().unwrap().join();
        self.counts.lock().unwrap().clone()
    }
}

/// The phases of a guest script: name -> (exit status, its output).
fn phases(output: &str) -> BTreeMap<String, (Option<i32>, String)> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in output.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["===", "PHASE", name, "BEGIN", _] => current = Some((name.to_string(), String::new())),
            ["===", "PHASE", name, "EXIT", rc, _] => {
                let text = current.take().map(|c| c.1).unwrap_or_default();
                out.insert(name.to_string(), (rc.parse().ok(), text));
            }
            _ => {
                if let Some((_, text)) = &mut current {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    out
}

/// testpmd's "Forward statistics for port P" block (dpdk-testpmd's and
/// nicpoll's print the same): (RX-packets, TX-packets).
fn fwd_stats(text: &str, port: u32) -> (u64, u64) {
    let head = format!("Forward statistics for port {port} ");
    let mut lines = text.lines().skip_while(|l| !l.contains(&head));
    let mut get = |key: &str| -> u64 {
        lines
            .find(|l| l.contains(key))
            .and_then(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.iter()
                    .position(|&x| x == key)
                    .and_then(|i| w.get(i + 1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let rx = get("RX-packets:");
    let tx = get("TX-packets:");
    (rx, tx)
}

#[test]
fn dpdk_and_nicpoll_testpmd_forward_between_two_vfs() {
    const HOST_DPDK: [u8; 6] = [0x02, 0, 0, 0, 0x0d, 0x0d];
    const HOST_NP: [u8; 6] = [0x02, 0, 0, 0, 0x0e, 0x0e];
    let mac = |m: [u8; 6]| nicpoll::port::MacAddr(m).to_string();
    let dir = tempfile::tempdir().unwrap();
    let (s0, s1) = (dir.path().join("vf0.sock"), dir.path().join("vf1.sock"));
    let guest = Guest::new()
        .mode(Mode::NoIommu)
        .vfio_user(VfioUser::new(&s0).driver(Driver::VfioPci))
        .vfio_user(VfioUser::new(&s1).driver(Driver::VfioPci))
        .dpdk()
        .smp(2)
        .hugepages(128)
        .env("HOST_DPDK", mac(HOST_DPDK))
        .env("HOST_NP", mac(HOST_NP))
        .timeout(Duration::from_secs(480));
    if let Some(why) = guest.missing().or_else(host_side_missing) {
        return skip(why);
    }
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let bin = testpmd_release().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let pair = nicpoll::port::testing::VethPair::create("npvfd");
    let counter = HostCounter::start(&pair.b);
    let server = Server::start(dir.path(), 2, &["--uplink", &pair.a]);
    let t = Instant::now();
    let out = guest
        .file(bin)
        .program(
            guest_dir().join("dpdk_and_nicpoll.sh"),
            Vec::<String>::new(),
        )
        .run()
        .unwrap_or_else(|e| panic!("the guest harness: {e}"));
    let host = counter.finish();
    let counters = server.counters();
    let (_, server_out) = server.stop();
    eprintln!(
        "=== guest ({:.0} s): {}\n{}\n=== nicpoll-vf:\n{}\n=== host: {host:x?}",
        t.elapsed().as_secs_f64(),
        out.report(),
        out.output,
        server_out
    );
    assert_eq!(out.status, Some(0), "{}", out.report());
    assert!(out.output.contains("=== GUEST DONE"), "{}", out.output);
    let ph = phases(&out.output);
    for name in ["dpdk-io", "dpdk-txonly", "np-io", "np-txonly"] {
        let (rc, text) = ph.get(name).unwrap_or_else(|| panic!("no {name} phase"));
        // dpdk-testpmd stopped by SIGINT exits 0 too.
        assert_eq!(*rc, Some(0), "{name}:\n{text}");
    }
    // io forwarding: each port received what the other sent, both ways.
    for name in ["dpdk-io", "np-io"] {
        let text = &ph[name].1;
        let (rx0, tx0) = fwd_stats(text, 0);
        let (rx1, tx1) = fwd_stats(text, 1);
        eprintln!("{name}: port 0 rx {rx0} tx {tx0}, port 1 rx {rx1} tx {tx1}");
        for (what, n) in [("rx0", rx0), ("tx0", tx0), ("rx1", rx1), ("tx1", tx1)] {
            assert!(n > 1000, "{name}: {what} {n}:\n{text}");
        }
        // Forwarded: a port sends what the other received (in flight aside).
        assert!(
            tx1 <= rx0 + 512 && rx0 <= tx1 + 32,
            "{name}: rx0 {rx0} tx1 {tx1}"
        );
        assert!(
            tx0 <= rx1 + 512 && rx1 <= tx0 + 32,
            "{name}: rx1 {rx1} tx0 {tx0}"
        );
    }
    // txonly frames reach the host through the uplink. At these rates the
    // host side (a veth's backlog, a raw socket's buffer) drops some; what is
    // asserted is that they arrive, by the thousand, and no more than were
    // sent.
    for (name, dst) in [("dpdk-txonly", HOST_DPDK), ("np-txonly", HOST_NP)] {
        let text = &ph[name].1;
        let sent = fwd_stats(text, 0).1 + fwd_stats(text, 1).1;
        let got = host.get(&dst).copied().unwrap_or(0);
        eprintln!(
            "{name}: sent {sent}, the host got {got} ({:.0} %)",
            got as f64 * 100.0 / sent.max(1) as f64
        );
        assert!(sent > 1000, "{name}: sent {sent}:\n{text}");
        assert!(
            got >= 1000 && got <= sent,
            "{name}: sent {sent}, host got {got}"
        );
    }
    assert!(ph["np-io"].1.contains("mbufs back in the pool"));
    // The guest's vCPU (the harness's qemu64 with SSE4.2, no AVX2) runs
    // nicpoll's SSE4.1 loops, as DPDK's net_iavf runs its SSE ones.
    for name in ["np-io", "np-txonly"] {
        assert!(
            ph[name]
                .1
                .contains("SSE4.1 receive/transmit loops (this CPU has no AVX2)"),
            "{name}: the start log names the SSE4.1 loops:\n{}",
            ph[name].1
        );
    }
    // doctor's VFIO checks, with /dev/vfio/N.
    assert!(
        out.output.contains("pod rename: /dev/vfio now holds"),
        "{}",
        out.output
    );
    let doctor_line = line_with(&out.output, "doctor: [");
    let checks: serde_json::Value =
        serde_json::from_str(doctor_line.trim_start_matches("doctor: ")).unwrap();
    // Every VFIO check passes; vfio-noiommu may warn that no
    // /etc/modprobe.d file keeps no-IOMMU mode across a reboot (the
    // guest's initramfs has none), which is true and not a failure.
    let mut seen = 0;
    for c in checks.as_array().unwrap() {
        let name = c["check"].as_str().unwrap();
        if name.starts_with("vfio") || name.starts_with("driver ") {
            seen += 1;
            let ok = c["status"] == "PASS"
                || (name == "vfio-noiommu"
                    && c["status"] == "WARN"
                    && c["finding"].as_str().unwrap().contains("modprobe.d"));
            assert!(ok, "doctor: {c}");
        }
    }
    assert!(seen >= 7, "doctor ran its VFIO checks: {doctor_line}");
    for l in &counters[..2] {
        eprintln!("{l}");
        assert_eq!(field(l, "bad"), 0, "{l}");
        assert_eq!(field(l, "faults"), 0, "{l}");
    }
}
