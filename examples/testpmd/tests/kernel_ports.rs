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

/// An rxonly testpmd on `rx_dev`, then a txonly one on `tx_dev` sending
/// `count` packets; returns (sent, received, latency samples, lost).
fn tx_to_rx(prefix: &str, tx_dev: &str, rx_dev: &str, count: u64) -> (u64, u64, u64, u64) {
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
            "--run-time=20",
            "--stats-period=0.5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the receiver forwards.
    let mut lines = BufReader::new(rx.stdout.take().unwrap()).lines();
    let mut out = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(Ok(l)) = lines.next() else { break };
        out += &l;
        out.push('\n');
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
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        Command::new("kill")
            .args(["-TERM", &rx.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    for l in lines.map_while(Result::ok) {
        out += &l;
        out.push('\n');
    }
    let status = rx.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    let fin = final_event(&out);
    let got = fin["total"]["rx_packets"].as_u64().unwrap();
    (
        sent,
        got,
        fin["latency"]["samples"].as_u64().unwrap(),
        fin["latency"]["lost"].as_u64().unwrap(),
    )
}

/// txonly to rxonly over a veth pair tagged `tag`; `needs` are what the driver
/// needs beyond the pair.
fn check_delivery(driver: &str, tag: &str, extra: &str, needs: &[Need]) {
    let mut all = nicpoll_testkit::VETH.to_vec();
    all.extend_from_slice(needs);
    if skip_if_missing(&all) {
        return;
    }
    let v = VethPair::create(tag);
    let (sent, got, samples, lost) = tx_to_rx(
        tag,
        &format!("{driver}0,iface={}{extra}", v.a),
        &format!("{driver}0,iface={}{extra}", v.b),
        50_000,
    );
    assert!(sent >= 50_000, "{driver}: sent {sent}");
    assert!(got > 0 && got <= sent, "{driver}: received {got} of {sent}");
    // The kernel may drop under load; most must arrive, every one stamped.
    assert!(got * 2 > sent, "{driver}: only {got} of {sent} arrived");
    assert_eq!(
        samples, got,
        "{driver}: every received frame carries a latency stamp"
    );
    assert!(
        lost <= sent - got,
        "{driver}: {lost} counted lost but only {} missing",
        sent - got
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
