//! testpmd drives a virtio-net NIC through VFIO inside a QEMU guest
//! (`../shared/lab/vfio-vm.sh`), once behind an emulated vIOMMU (type1) and once
//! in no-IOMMU mode, each in ONE guest boot running `tests/guest/run.sh`:
//!
//! 1. txonly for 1 s: the frames reach the host-side peer (`tests/guest/peer.py`,
//!    on QEMU's `-netdev dgram` socket), which counts them;
//! 2. rxonly: frames the peer injects are received and counted (200);
//! 3. icmpecho answers the peer's ARP request and its five pings;
//! 4. no-IOMMU only: after `/dev/vfio/noiommu-N` is renamed `/dev/vfio/N` (as the
//!    SR-IOV device plugin does in a pod), txonly still reaches the peer.
//!
//! The type1 run's console must show no DMAR fault. The release testpmd is built
//! (dynamic; its libraries go into the guest next to it) unless
//! `NICPOLL_GUEST_TESTPMD` names a binary. Skipped, with the reason printed, when
//! `qemu-system-x86_64`, python3 or the harness is missing (Debian: `apt-get
//! install qemu-system-x86 cpio xz-utils file python3 gzip`; no-IOMMU also builds
//! vfio.ko once with `make gcc-12 libelf1`). `VFIO_VM_SCRIPT` overrides the
//! harness path, `VFIO_VM_CACHE` its download cache.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn script() -> PathBuf {
    std::env::var_os("VFIO_VM_SCRIPT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/lab/vfio-vm.sh"),
        PathBuf::from,
    )
}

fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest")
}

/// Why the guest runs cannot happen here, if they cannot.
fn skip_reason(mode: &str) -> Option<String> {
    if !on_path("qemu-system-x86_64") {
        return Some(
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
        );
    }
    if !on_path("python3") {
        return Some("python3 (the host-side peer) is not installed".into());
    }
    let s = script();
    if !s.is_file() {
        return Some(format!("the VFIO guest harness {} is missing", s.display()));
    }
    if mode == "noiommu" {
        for t in ["make", "gcc-12"] {
            if !on_path(t) {
                return Some(format!(
                    "the no-IOMMU guest needs {t} to build vfio.ko (apt-get install make gcc-12 libelf1)"
                ));
            }
        }
    }
    None
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

/// The files the guest needs: testpmd, its libraries (by `ldd`), the script.
fn guest_files(testpmd: &Path) -> Vec<PathBuf> {
    let mut files = vec![testpmd.to_path_buf()];
    let out = Command::new("ldd").arg(testpmd).output().expect("ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    files
}

struct Peer {
    child: Child,
    summary: PathBuf,
}

impl Peer {
    fn start(dir: &Path) -> (Peer, PathBuf) {
        let sock = dir.join("peer.sock");
        let summary = dir.join("summary.json");
        let child = Command::new("python3")
            .arg(guest_dir().join("peer.py"))
            .arg(&sock)
            .arg(&summary)
            .arg("600")
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the peer");
        let t = Instant::now();
        while !summary.exists() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        (Peer { child, summary }, sock)
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
                    && v["event"] == "final"
                {
                    out.get_mut(name).unwrap().final_stats = Some(v);
                }
            }
        }
    }
    out
}

struct GuestRun {
    status: i32,
    output: String,
    console: String,
    phases: BTreeMap<String, Phase>,
    peer: Value,
}

/// Guests run one at a time: each keeps two vCPUs busy polling.
static ONE_GUEST: Mutex<()> = Mutex::new(());

fn run_guest(mode: &str) -> GuestRun {
    let _one = ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner());
    let bin = match testpmd_release() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let (peer, sock) = Peer::start(dir.path());
    let log = dir.path().join("console.log");
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .args(["--mode", mode, "--smp", "2", "--timeout", "240"])
        .args(["--nic", "virtio", "--net"])
        .arg(format!("dgram:{}", sock.display()))
        .arg("--log")
        .arg(&log);
    if mode == "type1" {
        // A 48-bit vIOMMU, so IOVA = VA fits (QEMU's default is 39 bits).
        cmd.args(["--qemu", "-global intel-iommu.aw-bits=48"]);
    }
    for f in guest_files(bin) {
        cmd.arg("--file").arg(f);
    }
    cmd.arg("--").arg(guest_dir().join("run.sh"));
    let t = Instant::now();
    let out = cmd.output().expect("running vfio-vm.sh");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let peer = peer.finish();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "=== guest {mode}: exit {:?} after {:.1} s\n{output}\n=== peer: {peer}",
        out.status.code(),
        t.elapsed().as_secs_f64()
    );
    GuestRun {
        status: out.status.code().unwrap_or(-1),
        phases: phases(&output),
        output,
        console,
        peer,
    }
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
        r.status, 0,
        "{mode} guest run failed:\n{}\n--- console:\n{}",
        r.output, r.console
    );
    assert!(r.output.contains("=== GUEST DONE"), "{}", r.output);
    for name in ["txonly", "rxonly", "icmpecho"] {
        let p = r
            .phases
            .get(name)
            .unwrap_or_else(|| panic!("{mode}: no {name} phase"));
        assert_eq!(p.rc, Some(0), "{mode}: {name} failed:\n{}", r.output);
        assert!(
            p.final_stats.is_some(),
            "{mode}: {name} printed no final statistics"
        );
        eprintln!("{mode}: {name} took {:.2} s in the guest", p.secs);
    }
    assert!(
        r.output.matches("mbufs back in the pool").count() >= 3,
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

#[test]
fn virtio_through_vfio_type1() {
    if let Some(why) = skip_reason("type1") {
        eprintln!("skipped: {why}");
        return;
    }
    let r = run_guest("type1");
    check_common(&r, "type1");
    assert!(
        r.output
            .contains("IOMMU type1v2, 1 device(s), IOVA mode VA"),
        "{}",
        r.output
    );
    assert!(
        r.output.contains("ACCESS_PLATFORM"),
        "the vIOMMU's virtio takes ACCESS_PLATFORM"
    );
    let faults: Vec<&str> = r
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
        r.output.contains("kernel: ") && r.output.contains("DMAR: IOMMU enabled"),
        "the guest has a vIOMMU"
    );
    assert!(
        r.output.contains("=== kernel log: 0 IOMMU fault line(s)"),
        "{}",
        r.output
    );
}

#[test]
fn virtio_through_vfio_noiommu_and_pod_rename() {
    if let Some(why) = skip_reason("noiommu") {
        eprintln!("skipped: {why}");
        return;
    }
    let r = run_guest("noiommu");
    check_common(&r, "noiommu");
    assert!(
        r.output
            .contains("no-IOMMU (physical addresses), 1 device(s), IOVA mode PA"),
        "{}",
        r.output
    );
    assert!(
        r.output
            .contains("vfio-noiommu device opened by user (testpmd"),
        "the kernel logs testpmd's no-IOMMU use"
    );
    // 4. The pod's /dev/vfio/N: the same binary still sends.
    assert!(
        r.output.contains("pod rename: /dev/vfio now holds 0 vfio"),
        "{}",
        r.output
    );
    let p = &r.phases["podrename"];
    assert_eq!(p.rc, Some(0), "{}", r.output);
    let sent = stat(p, "tx_packets");
    let got = n(&r.peer["udp_by_dst"], "198.18.0.3");
    eprintln!("noiommu: after the pod rename txonly sent {sent}, the peer got {got}");
    assert!(
        got > 0 && got <= sent && got + 257 >= sent,
        "sent {sent}, peer got {got}"
    );
}
