//! testpmd drives a virtio-net NIC through VFIO inside a QEMU guest of the
//! project's harness (`tools/guest`), once behind an emulated vIOMMU (type1) and
//! once in no-IOMMU mode, each in ONE guest boot running `tests/guest/run.sh`:
//!
//! 1. txonly for 1 s: the frames reach the host-side peer (`tests/guest/peer.py`,
//!    on QEMU's `-netdev dgram` socket), which counts them;
//! 2. rxonly: frames the peer injects are received and counted (200);
//! 3. icmpecho answers the peer's ARP request and its five pings;
//! 4. no-IOMMU only: after `/dev/vfio/noiommu-N` is renamed `/dev/vfio/N` (as the
//!    SR-IOV device plugin does in a pod), txonly still reaches the peer.
//!
//! A third boot (type1, `tests/guest/run_jumbo.sh`) carries jumbo frames with the
//! default 2 KiB mbufs: txonly's six-segment 9000-byte frames reach the peer
//! whole, rxonly counts 9014-byte frames through merged receive buffers
//! (`VIRTIO_NET_F_MRG_RXBUF`, which QEMU's virtio-net offers), and icmpecho
//! answers 9014-byte pings byte for byte.
//!
//! The type1 runs' consoles must show no DMAR fault. The release testpmd is built
//! (dynamic; the harness puts the libraries `ldd` lists into the guest) unless
//! `NICPOLL_GUEST_TESTPMD` names a binary. When the machine cannot run the guest
//! or the peer, the tests skip through `nicpoll_testkit::skip`, saying what is
//! missing (a failure under CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nicpoll_guest::{Guest, Mode, Net, Nic, Outcome};
use nicpoll_testkit::skip;
use serde_json::Value;

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest")
}

/// The guest a run boots, with the peer's socket; None (after the skip) when
/// this machine cannot run it.
fn guest(mode: Mode, peer_sock: &Path) -> Option<Guest> {
    if let Some(t) = nicpoll_testkit::missing_command(&["python3"]) {
        skip(format!(
            "{t} for the host-side peer (apt-get install python3)"
        ));
        return None;
    }
    let mut g = Guest::new()
        .mode(mode)
        .smp(2)
        .nic(Nic::virtio().net(Net::Dgram(peer_sock.to_path_buf())))
        .timeout(Duration::from_secs(240));
    if mode == Mode::Type1 {
        // A 48-bit vIOMMU, so IOVA = VA fits (QEMU's default is 39 bits).
        g = g.qemu_arg("-global").qemu_arg("intel-iommu.aw-bits=48");
    }
    if let Some(why) = g.missing() {
        skip(why);
        return None;
    }
    Some(g)
}

/// The release testpmd, built once per test process.
fn testpmd_release() -> &'static Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("NICPOLL_GUEST_TESTPMD") {
            return Ok(PathBuf::from(p));
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let t = Instant::now();
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
        let exe = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "testpmd")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or("no testpmd executable in cargo's output")?;
        eprintln!(
            "built {} in {:.1} s",
            exe.display(),
            t.elapsed().as_secs_f64()
        );
        Ok(exe)
    })
}

struct Peer {
    child: Child,
    summary: PathBuf,
}

impl Peer {
    fn start(dir: &Path, sock: &Path, jumbo: bool) -> Peer {
        let summary = dir.join("summary.json");
        let child = Command::new("python3")
            .arg(guest_dir().join("peer.py"))
            .arg(sock)
            .arg(&summary)
            .arg("600")
            .env("NICPOLL_PEER_JUMBO", if jumbo { "1" } else { "0" })
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the peer");
        let t = Instant::now();
        while !summary.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        Peer { child, summary }
    }

    /// Stop the peer (it saves its counters on SIGTERM) and read them.
    fn finish(mut self) -> Value {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.summary).expect("peer summary");
        serde_json::from_str(&text).expect("peer summary is JSON")
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One phase of the guest script: its exit status and testpmd's final JSON.
#[derive(Debug, Default)]
struct Phase {
    rc: Option<i32>,
    final_stats: Option<Value>,
    /// The last periodic statistics event (`--stats-period`), port counters.
    last_stats: Option<Value>,
    secs: f64,
}

fn phases(output: &str) -> BTreeMap<String, Phase> {
    let mut out: BTreeMap<String, Phase> = BTreeMap::new();
    let mut current: Option<(String, f64)> = None;
    for line in output.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["===", "PHASE", name, "BEGIN", t] => {
                current = Some((name.to_string(), t.parse().unwrap_or(0.0)));
                out.entry(name.to_string()).or_default();
            }
            ["===", "PHASE", name, "EXIT", rc, t] => {
                let p = out.entry(name.to_string()).or_default();
                p.rc = rc.parse().ok();
                if let Some((_, t0)) = &current {
                    p.secs = t.parse::<f64>().unwrap_or(0.0) - t0;
                }
                current = None;
            }
            _ => {
                if let Some((name, _)) = &current
                    && line.starts_with('{')
                    && let Ok(v) = serde_json::from_str::<Value>(line)
                {
                    let p = out.get_mut(name).unwrap();
                    if v["event"] == "final" {
                        p.final_stats = Some(v);
                    } else if v["event"] == "stats" {
                        p.last_stats = Some(v);
                    }
                }
            }
        }
    }
    out
}

struct GuestRun {
    out: Outcome,
    phases: BTreeMap<String, Phase>,
    peer: Value,
}

/// Guests run one at a time: each keeps two vCPUs busy polling.
static ONE_GUEST: Mutex<()> = Mutex::new(());

/// Boot the guest of `mode` and run the phases; None when it cannot run here.
fn run_guest(mode: Mode) -> Option<GuestRun> {
    run_guest_script(mode, "run.sh", false)
}

/// As [`run_guest`], with the guest script `script` and the peer in jumbo
/// mode or not.
fn run_guest_script(mode: Mode, script: &str, jumbo: bool) -> Option<GuestRun> {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("peer.sock");
    let guest = guest(mode, &sock)?;
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let bin = match testpmd_release() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let peer = Peer::start(dir.path(), &sock, jumbo);
    let out = guest
        .file(bin)
        .program(guest_dir().join(script), Vec::<String>::new())
        .run()
        .unwrap_or_else(|e| panic!("the guest harness: {e}"));
    let peer = peer.finish();
    eprintln!(
        "=== guest {}: status {:?} after {:.1} s\n{}\n=== peer: {peer}",
        mode.name(),
        out.status,
        out.seconds,
        out.output
    );
    Some(GuestRun {
        phases: phases(&out.output),
        out,
        peer,
    })
}

fn stat(p: &Phase, key: &str) -> u64 {
    p.final_stats.as_ref().expect("final statistics")["total"][key]
        .as_u64()
        .unwrap_or(0)
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Phases 1-3, common to both modes.
fn check_common(r: &GuestRun, mode: &str) {
    assert_eq!(
        r.out.status,
        Some(0),
        "{mode} guest run failed: {}",
        r.out.report()
    );
    assert!(r.out.output.contains("=== GUEST DONE"), "{}", r.out.output);
    for name in ["txonly", "rxonly", "icmpecho"] {
        let p = r
            .phases
            .get(name)
            .unwrap_or_else(|| panic!("{mode}: no {name} phase"));
        assert_eq!(p.rc, Some(0), "{mode}: {name} failed:\n{}", r.out.output);
        assert!(
            p.final_stats.is_some(),
            "{mode}: {name} printed no final statistics"
        );
        eprintln!("{mode}: {name} took {:.2} s in the guest", p.secs);
    }
    assert!(
        r.out.output.matches("mbufs back in the pool").count() >= 3,
        "{mode}: every run returns every mbuf"
    );
    // 1. txonly frames reach the peer: at most a ring (256) plus the device's one
    //    in hand is lost at the stop, when the device is reset.
    let tx = &r.phases["txonly"];
    let sent = stat(tx, "tx_packets");
    let got = n(&r.peer["udp_by_dst"], "198.18.0.2");
    eprintln!("{mode}: txonly sent {sent}, the peer got {got}");
    assert!(
        sent > 0 && got > 0,
        "{mode}: txonly: sent {sent}, peer got {got}"
    );
    assert!(
        got <= sent && got + 257 >= sent,
        "{mode}: txonly: sent {sent}, peer got {got}"
    );
    // 2. rxonly counts what the peer injected (200, --max-packets), no errors.
    let rx = &r.phases["rxonly"];
    let received = stat(rx, "rx_packets");
    let injected = n(&r.peer, "injected") + n(&r.peer, "arp_requests_sent");
    eprintln!("{mode}: rxonly received {received}, the peer injected {injected}");
    assert!(
        received >= 200 && received <= injected,
        "{mode}: rxonly {received} of {injected}"
    );
    assert_eq!(
        stat(rx, "rx_errors") + stat(rx, "rx_nombuf"),
        0,
        "{mode}: rxonly errors"
    );
    // 3. icmpecho answers ARP and all five pings, correctly.
    assert!(
        n(&r.peer, "arp_replies") >= 1,
        "{mode}: no ARP reply: {}",
        r.peer
    );
    assert_eq!(
        n(&r.peer, "ping_replies"),
        5,
        "{mode}: ping replies: {}",
        r.peer
    );
    assert_eq!(
        n(&r.peer, "bad_replies"),
        0,
        "{mode}: bad replies: {}",
        r.peer
    );
    assert_eq!(
        r.peer["arp_reply_mac"], r.peer["guest_mac"],
        "the ARP reply names the port's MAC"
    );
    let echo = &r.phases["icmpecho"];
    assert!(
        stat(echo, "tx_packets") >= 6,
        "{mode}: icmpecho sent {}",
        stat(echo, "tx_packets")
    );
}

/// A type1 run's guest had a vIOMMU and logged no fault.
fn check_no_dmar_fault(r: &GuestRun) {
    let faults: Vec<&str> = r
        .out
        .console
        .lines()
        .filter(|l| l.contains("DMAR") && l.to_lowercase().contains("fault"))
        .collect();
    assert!(
        faults.is_empty(),
        "IOMMU faults in the guest:\n{}",
        faults.join("\n")
    );
    assert!(
        r.out.output.contains("kernel: ") && r.out.output.contains("DMAR: IOMMU enabled"),
        "the guest has a vIOMMU"
    );
    assert!(
        r.out
            .output
            .contains("=== kernel log: 0 IOMMU fault line(s)"),
        "{}",
        r.out.output
    );
}

#[test]
fn virtio_through_vfio_type1() {
    let Some(r) = run_guest(Mode::Type1) else {
        return;
    };
    check_common(&r, "type1");
    check_no_dmar_fault(&r);
    assert!(
        r.out
            .output
            .contains("IOMMU type1v2, 1 device(s), IOVA mode VA"),
        "{}",
        r.out.output
    );
    assert!(
        r.out.output.contains("ACCESS_PLATFORM"),
        "the vIOMMU's virtio takes ACCESS_PLATFORM"
    );
}

/// Jumbo frames through QEMU's virtio-net with 2 KiB mbufs: chains out as
/// descriptor chains, merged receive buffers in, a jumbo ping answered.
#[test]
fn virtio_jumbo_frames_through_vfio_type1() {
    let Some(r) = run_guest_script(Mode::Type1, "run_jumbo.sh", true) else {
        return;
    };
    check_common(&r, "jumbo");
    check_no_dmar_fault(&r);
    assert!(
        r.out.output.contains("MRG_RXBUF"),
        "QEMU's virtio-net offers merged receive buffers and the driver takes them: {}",
        r.out.output
    );
    // txonly: 9000-byte frames of six segments arrive whole.
    assert_eq!(
        n(&r.peer, "udp_max_len"),
        9000,
        "the peer's longest UDP frame: {}",
        r.peer
    );
    assert_eq!(
        n(&r.peer, "udp_bad_len"),
        0,
        "UDP frames whose length disagrees with their IP header: {}",
        r.peer
    );
    // rxonly: the port's counters at its last statistics event. The peer
    // injects 9014-byte frames and 60-byte ARP requests only, so the bytes
    // say how many of each arrived: every frame whole, and at most as many
    // short ones as ARP requests were sent.
    let rx = &r.phases["rxonly"];
    let port = &rx
        .last_stats
        .as_ref()
        .unwrap_or_else(|| panic!("rxonly printed no statistics event:\n{}", r.out.output))["ports"]
        [0];
    let (pkts, bytes) = (n(port, "rx_packets"), n(port, "rx_bytes"));
    let arps = n(&r.peer, "arp_requests_sent");
    let jumbo = bytes.saturating_sub(pkts * 60) / (9014 - 60);
    assert!(
        pkts > 0
            && bytes == jumbo * 9014 + (pkts - jumbo) * 60
            && pkts - jumbo <= arps
            && jumbo >= 100,
        "rxonly: {pkts} frames, {bytes} bytes, {arps} ARP requests sent: \
         not {jumbo} whole 9014-byte frames and ARP requests"
    );
    // icmpecho: the five replies (checked byte for byte by the peer) were
    // 9014-byte frames.
    assert_eq!(n(&r.peer, "ping_bytes"), 9014, "{}", r.peer);
}

#[test]
fn virtio_through_vfio_noiommu_and_pod_rename() {
    let Some(r) = run_guest(Mode::NoIommu) else {
        return;
    };
    check_common(&r, "noiommu");
    assert!(
        r.out
            .output
            .contains("no-IOMMU (physical addresses), 1 device(s), IOVA mode PA"),
        "{}",
        r.out.output
    );
    assert!(
        r.out
            .output
            .contains("vfio-noiommu device opened by user (testpmd"),
        "the kernel logs testpmd's no-IOMMU use"
    );
    // 4. The pod's /dev/vfio/N: the same binary still sends.
    assert!(
        r.out
            .output
            .contains("pod rename: /dev/vfio now holds 0 vfio"),
        "{}",
        r.out.output
    );
    let p = &r.phases["podrename"];
    assert_eq!(p.rc, Some(0), "{}", r.out.output);
    let sent = stat(p, "tx_packets");
    let got = n(&r.peer["udp_by_dst"], "198.18.0.3");
    eprintln!("noiommu: after the pod rename txonly sent {sent}, the peer got {got}");
    assert!(
        got > 0 && got <= sent && got + 257 >= sent,
        "sent {sent}, peer got {got}"
    );
}
