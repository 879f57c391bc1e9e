//! testpmd on kernel-backed ports, as users run it: a txonly testpmd on one end
//! of a veth pair and an rxonly testpmd on the other (AF_PACKET and AF_XDP),
//! and icmpecho on a tap answering the kernel's ARP and ping. Every interface is
//! created here and deleted at the end. Without root (or ip(8)) they skip.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_testpmd");

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct Veth(String);

impl Veth {
    fn create(tag: &str) -> Option<Veth> {
        let (a, b) = (format!("{tag}a"), format!("{tag}b"));
        let _ = ip(&["link", "del", &a]);
        if !ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]) {
            eprintln!("skipped: cannot create a veth pair (needs root and ip(8))");
            return None;
        }
        for end in [&a, &b] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
            assert!(ip(&["link", "set", end, "up"]));
        }
        Some(Veth(tag.to_string()))
    }
    fn a(&self) -> String {
        format!("{}a", self.0)
    }
    fn b(&self) -> String {
        format!("{}b", self.0)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.a()]);
    }
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

fn check_delivery(driver: &str, tag: &str, extra: &str) {
    let Some(v) = Veth::create(tag) else { return };
    let (sent, got, samples, lost) = tx_to_rx(
        tag,
        &format!("{driver}0,iface={}{extra}", v.a()),
        &format!("{driver}0,iface={}{extra}", v.b()),
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
    check_delivery("net_af_packet", "nptpk", "");
}

#[test]
fn af_xdp_txonly_to_rxonly_over_veth() {
    check_delivery("net_af_xdp", "nptxd", "");
}

#[test]
fn icmpecho_on_a_tap_answers_the_kernels_arp_and_ping() {
    if !std::path::Path::new("/dev/net/tun").exists()
        || Command::new("ping").arg("-V").output().is_err()
    {
        eprintln!("skipped: needs /dev/net/tun and ping");
        return;
    }
    let tap = "nptapecho0";
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
        eprintln!(
            "skipped: no tap created: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
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
