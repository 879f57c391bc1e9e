//! testpmd on kernel-backed ports, as users run it: a txonly testpmd on one end
//! of a veth pair and an rxonly testpmd on the other (AF_PACKET and AF_XDP),
//! and icmpecho on a tap answering the kernel's ARP and ping. Every interface is
//! created here and deleted at the end. Without root (or ip(8)) they skip
//! through `nicpoll_testkit` (a failure under CI).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nicpoll::port::testing::VethPair;
use nicpoll_testkit::{Cap, Need, skip_if_missing};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_testpmd");

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn final_event(stdout: &str) -> Value {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "final")
        .unwrap_or_else(|| panic!("no final event in {stdout}"))
}

/// What the kernel counted on `iface` (`/sys/class/net/IFACE/statistics/NAME`).
fn kernel_counter(iface: &str, name: &str) -> u64 {
    let path = format!("/sys/class/net/{iface}/statistics/{name}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// One txonly → rxonly run, as both testpmds and the kernel counted it.
#[derive(Debug)]
struct Delivery {
    /// Frames the txonly testpmd sent (its final report).
    sent: u64,
    /// Frames the veth dropped on the way (the kernel's `tx_dropped` of the
    /// sending end: a full backlog or XDP ring).
    dropped_on_the_way: u64,
    /// Frames the rxonly testpmd received (its final report).
    received: u64,
    /// Frames its port counted as missed (the socket's ring was full: the
    /// kernel's PACKET_STATISTICS or XDP_STATISTICS), its final report.
    missed: u64,
    /// Latency samples and frames lost by sequence number.
    samples: u64,
    lost: u64,
}

/// An rxonly testpmd on `rx_dev`, then a txonly one on `tx_dev` (on kernel
/// interface `tx_iface`) sending `count` packets; the receiver is stopped once
/// its port has accounted for every frame the kernel passed on (or after
/// 30 s), so what the kernel still held is not lost uncounted.
fn tx_to_rx(prefix: &str, tx_dev: &str, tx_iface: &str, rx_dev: &str, count: u64) -> Delivery {
    let mut rx = Command::new(BIN)
        .args([
            "--no-huge",
            "--lcores=0@1,1@1",
            "--file-prefix",
            &format!("{prefix}rx"),
            "--vdev",
            rx_dev,
        ])
        .args([
            "--",
            "--forward-mode=rxonly",
            "--stats-format=json",
            "--run-time=120",
            "--stats-period=0.5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The receiver's output, line by line, as it comes.
    let (line_tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = rx.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut out = String::new();
    let next_line = |out: &mut String, until: Instant| -> Option<String> {
        let l = lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .ok()?;
        *out += &l;
        out.push('\n');
        Some(l)
    };
    // Wait until the receiver forwards.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(l) = next_line(&mut out, deadline) {
        if l.contains("\"event\":\"start\"") {
            break;
        }
    }
    assert!(
        out.contains("\"start\""),
        "the receiver did not start: {out}"
    );
    let tx = Command::new(BIN)
        .args([
            "--no-huge",
            "--lcores=0@0,1@0",
            "--file-prefix",
            &format!("{prefix}tx"),
            "--vdev",
            tx_dev,
        ])
        .args([
            "--",
            "--forward-mode=txonly",
            "--stats-format=json",
            "--txpkts=64",
        ])
        .arg(format!("--max-packets={count}"))
        .output()
        .unwrap();
    assert_eq!(
        tx.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&tx.stderr)
    );
    let sent = final_event(&String::from_utf8_lossy(&tx.stdout))["total"]["tx_packets"]
        .as_u64()
        .unwrap();
    let dropped_on_the_way = kernel_counter(tx_iface, "tx_dropped");
    // Until the receiver's port has seen (received or counted missed) every
    // frame the veth passed on: its statistics every 0.5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(l) = next_line(&mut out, deadline) {
        let Ok(v) = serde_json::from_str::<Value>(&l) else {
            continue;
        };
        if v["event"] == "stats"
            && v["ports"][0]["rx_packets"].as_u64().unwrap_or(0)
                + v["ports"][0]["rx_missed"].as_u64().unwrap_or(0)
                >= sent - dropped_on_the_way.min(sent)
        {
            break;
        }
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &rx.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    while next_line(&mut out, Instant::now() + Duration::from_secs(30)).is_some() {}
    let status = rx.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    let fin = final_event(&out);
    Delivery {
        sent,
        dropped_on_the_way,
        received: fin["total"]["rx_packets"].as_u64().unwrap(),
        missed: fin["total"]["rx_dropped"].as_u64().unwrap(),
        samples: fin["latency"]["samples"].as_u64().unwrap(),
        lost: fin["latency"]["lost"].as_u64().unwrap(),
    }
}

/// txonly to rxonly over a veth pair tagged `tag`; `needs` are what the driver
/// needs beyond the pair.
///
/// On a busy machine the receiver is descheduled and the kernel drops what its
/// socket has no room for: what must hold is that every frame is accounted
/// for, received intact or counted where it was dropped, by the kernel.
fn check_delivery(driver: &str, tag: &str, extra: &str, needs: &[Need]) {
    let mut all = nicpoll_testkit::VETH.to_vec();
    all.extend_from_slice(needs);
    if skip_if_missing(&all) {
        return;
    }
    let v = VethPair::create(tag);
    let d = tx_to_rx(
        tag,
        &format!("{driver}0,iface={}{extra}", v.a),
        &v.a,
        &format!("{driver}0,iface={}{extra}", v.b),
        50_000,
    );
    eprintln!("{driver}: {d:?}");
    assert!(d.sent >= 50_000, "{driver}: {d:?}");
    assert!(d.received > 0, "{driver}: nothing arrived: {d:?}");
    assert_eq!(
        d.received + d.missed + d.dropped_on_the_way,
        d.sent,
        "{driver}: every frame sent was received or counted as dropped: {d:?}"
    );
    assert_eq!(
        d.samples, d.received,
        "{driver}: every received frame carries a latency stamp: {d:?}"
    );
    assert!(
        d.lost <= d.missed + d.dropped_on_the_way,
        "{driver}: more frames missing by sequence number than were dropped: {d:?}"
    );
}

#[test]
fn af_packet_txonly_to_rxonly_over_veth() {
    check_delivery("net_af_packet", "nptpk", "", &[Need::RawSockets]);
}

#[test]
fn af_xdp_txonly_to_rxonly_over_veth() {
    check_delivery(
        "net_af_xdp",
        "nptxd",
        "",
        &[Need::RawSockets, Need::BpfXskMap],
    );
}

#[test]
fn icmpecho_on_a_tap_answers_the_kernels_arp_and_ping() {
    if skip_if_missing(&[
        Need::Path("/dev/net/tun"),
        Need::Capability(Cap::NetAdmin),
        Need::Command("ip"),
        Need::Command("ping"),
    ]) {
        return;
    }
    let tap = "nptapecho0";
    let _lock = nicpoll_testkit::lock_name(tap);
    let mut child = Command::new(BIN)
        .args([
            "--no-huge",
            "-l",
            "0,1",
            "--vdev",
            &format!("net_tap0,iface={tap}"),
        ])
        .args(["--", "--forward-mode=icmpecho", "--run-time=20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "testpmd created no tap {tap} in 10 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1");
    assert!(ip(&["addr", "add", "10.211.0.1/24", "dev", tap]));
    // The kernel ARPs for 10.211.0.2 through the tap; icmpecho answers ARP for
    // any target and then the echo requests.
    let ping = Command::new("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", "10.211.0.2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("3 received"), "ping: {text}");
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "the tap is gone with testpmd"
    );
}
