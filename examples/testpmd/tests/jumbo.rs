//! Jumbo frames end to end, tried as a user would: two veth pairs at MTU 9000
//! (A0/A1, B0/B1), testpmd in io forwarding between two ports on A1 and B1,
//!
//! ```text
//! testpmd --no-huge --vdev net_af_packet0,iface=A1 --vdev net_af_packet1,iface=B1 -- --forward-mode=io
//! ```
//!
//! frames of 9014 bytes (an MTU-9000 frame) and others sent into A0 by the
//! kernel and caught at B0, then the other way, compared byte for byte: for
//! each kind of port that can be wired to a kernel interface (AF_PACKET,
//! AF_XDP, the simulated iavf VF with `iface=`; a TAP port is itself the
//! kernel interface, its frames sent and caught on the taps). testpmd's mbufs
//! are the default 2 KiB ones, so every jumbo frame is a chain inside it. The
//! frames are sent and caught with plain AF_PACKET sockets (the kernel's own
//! view). A frame one byte over `--max-pkt-len` is counted, not forwarded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nicpoll::netdev::RawSocket;
use nicpoll::port::testing::VethPair;
use nicpoll_testkit::{Cap, Need, skip_if_missing};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_testpmd");
/// Marks our frames (the kernel may send its own).
const MAGIC: [u8; 4] = *b"NPJB";

/// What every run needs: veth pairs (or taps) and raw sockets.
const NEEDS: [Need; 3] = [
    Need::Capability(Cap::NetAdmin),
    Need::Command("ip"),
    Need::RawSockets,
];

/// Frame `i` of `len` bytes: local experimental EtherType, our mark and
/// number, then a pattern of its own.
fn frame(i: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0x4a, 0x42, 0, 0, 0x01]);
    f[6..12].copy_from_slice(&[0x02, 0x4a, 0x42, 0, 0, 0x02]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f[14..18].copy_from_slice(&MAGIC);
    f[18..22].copy_from_slice(&i.to_be_bytes());
    for (k, b) in f[22..].iter_mut().enumerate() {
        *b = (i as usize * 131 + k * 7) as u8;
    }
    f
}

fn ours(f: &[u8]) -> bool {
    f.len() >= 22 && f[12..14] == [0x88, 0xb5] && f[14..18] == MAGIC
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip(8) runs");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
}

fn quiet(iface: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
}

/// A running testpmd and the lines of stdout it prints after its first
/// statistics (read on a thread of their own, so it never blocks on them).
struct Running {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

/// testpmd in io forwarding on `vdevs` with `extra` options, running until
/// it printed its first statistics (so the ports forward).
fn testpmd(prefix: &str, vdevs: &[String], extra: &[&str]) -> Running {
    let mut cmd = Command::new(BIN);
    cmd.args(["--no-huge", "--lcores=0@0,1@1", "--file-prefix", prefix]);
    for v in vdevs {
        cmd.args(["--vdev", v]);
    }
    let mut child = cmd
        .args([
            "--",
            "--forward-mode=io",
            "--stats-format=json",
            "--stats-period=0.2",
            "--run-time=60",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("testpmd runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(Ok(l)) = lines.next() else { break };
        let started = l.contains("\"event\":\"stats\"");
        out.push(l);
        if started {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for l in lines.map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            });
            return Running { child, lines: rx };
        }
    }
    let _ = child.kill();
    let err = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    panic!("testpmd did not start forwarding: {out:?}\n{err}");
}

/// Stop testpmd with SIGINT; its exit status must be 0 (every mbuf back in
/// its pool); returns its final event.
fn stop(run: Running) -> Value {
    let Running {
        mut child,
        lines: rx,
    } = run;
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let t = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "testpmd must stop cleanly with every mbuf back: {err}"
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) => {
                if let Ok(v) = serde_json::from_str::<Value>(&l)
                    && v["event"] == "final"
                {
                    return v;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => break,
        }
    }
    panic!("no final event: {err}");
}

/// Send `frames` into `into` and catch ours coming out of `out_of`.
fn through(into: &RawSocket, out_of: &RawSocket, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16384];
    for f in frames {
        into.send(f)
            .unwrap_or_else(|e| panic!("sending a {}-byte frame: {e}", f.len()));
        // One at a time: a raw socket's buffer holds few jumbo frames.
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            match out_of.recv(&mut buf, Duration::from_millis(50)) {
                Some(n) if ours(&buf[..n]) => {
                    got.push(buf[..n].to_vec());
                    break;
                }
                _ => {}
            }
        }
    }
    got
}

/// The frames of a run: MTU-sized jumbo frames, and some around an mbuf's
/// data room and smaller.
fn frames(first: u32) -> Vec<Vec<u8>> {
    [
        9014usize, 64, 9014, 1664, 1665, 5000, 9014, 1514, 9014, 3329,
    ]
    .iter()
    .enumerate()
    .map(|(i, &len)| frame(first + i as u32, len))
    .collect()
}

/// Both directions through testpmd; every frame must come out as it went in.
fn both_ways(a: (&str, &str), b: (&str, &str)) {
    let (a_in, b_out) = (RawSocket::open(a.0).unwrap(), RawSocket::open(b.0).unwrap());
    let want = frames(0);
    let got = through(&a_in, &b_out, &want);
    assert!(
        got == want,
        "{} of {} frames from {} came out of {} whole: {:?}",
        got.iter().zip(&want).filter(|(g, w)| g == w).count(),
        want.len(),
        a.0,
        b.0,
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let want = frames(100);
    let got = through(&b_out, &a_in, &want);
    assert!(
        got == want,
        "{} of {} frames from {} came out of {} whole: {:?}",
        got.iter().zip(&want).filter(|(g, w)| g == w).count(),
        want.len(),
        b.0,
        a.0,
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let _ = (a.1, b.1);
}

/// Two veth pairs at MTU 9000 tagged `tag`; testpmd's ports of `driver` on
/// their second ends.
fn veth_run(driver: &str, tag: &str, extra_needs: &[Need]) {
    if skip_if_missing(&NEEDS) || skip_if_missing(extra_needs) {
        return;
    }
    let a = VethPair::create(&format!("{tag}0"));
    let b = VethPair::create(&format!("{tag}1"));
    for end in [&a.a, &a.b, &b.a, &b.b] {
        ip(&["link", "set", end, "mtu", "9000"]);
    }
    let child = testpmd(
        tag,
        &[
            format!("{driver}0,iface={}", a.b),
            format!("{driver}1,iface={}", b.b),
        ],
        &[],
    );
    both_ways((&a.a, &a.b), (&b.a, &b.b));
    let fin = stop(child);
    let total = &fin["total"];
    assert_eq!(total["rx_packets"].as_u64(), Some(20), "{fin}");
    assert_eq!(total["tx_packets"].as_u64(), Some(20), "{fin}");
}

#[test]
fn jumbo_frames_through_af_packet() {
    veth_run("net_af_packet", "npjpk", &[]);
}

#[test]
fn jumbo_frames_through_af_xdp() {
    veth_run("net_af_xdp", "npjxd", &[Need::BpfXskMap]);
}

#[test]
fn jumbo_frames_through_simulated_iavf_vfs() {
    veth_run("net_iavf_sim", "npjiv", &[]);
}

/// Two TAP ports: `--max-pkt-len=9018` sets their MTU to 9000; the frames
/// go in and come out through raw sockets on the taps.
#[test]
fn jumbo_frames_through_taps() {
    if skip_if_missing(&NEEDS) || skip_if_missing(&[Need::Path("/dev/net/tun")]) {
        return;
    }
    let (t0, t1) = ("npjtap0", "npjtap1");
    let _locks = (
        nicpoll_testkit::lock_name(t0),
        nicpoll_testkit::lock_name(t1),
    );
    let child = testpmd(
        "npjtap",
        &[
            format!("net_tap0,iface={t0}"),
            format!("net_tap1,iface={t1}"),
        ],
        &["--max-pkt-len=9018"],
    );
    for t in [t0, t1] {
        quiet(t);
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{t}/mtu")).unwrap();
        assert_eq!(mtu.trim(), "9000", "--max-pkt-len=9018 sets the tap's MTU");
    }
    both_ways((t0, t0), (t1, t1));
    let fin = stop(child);
    // The taps may have carried the kernel's own frames too (ours are 20).
    assert!(fin["total"]["tx_packets"].as_u64() >= Some(20), "{fin}");
}

/// `--max-pkt-len=9000` (frames of up to 8996 bytes, the FCS counted as in
/// DPDK) on AF_PACKET ports at MTU 9000: an 8996-byte frame is forwarded,
/// one of 8997 bytes is counted in RX-errors and goes nowhere.
#[test]
fn a_frame_one_byte_over_max_pkt_len_is_counted_not_forwarded() {
    if skip_if_missing(&NEEDS) {
        return;
    }
    let a = VethPair::create("npjmx0");
    let b = VethPair::create("npjmx1");
    for end in [&a.a, &a.b, &b.a, &b.b] {
        ip(&["link", "set", end, "mtu", "9000"]);
    }
    let child = testpmd(
        "npjmx",
        &[
            format!("net_af_packet0,iface={}", a.b),
            format!("net_af_packet1,iface={}", b.b),
        ],
        &["--max-pkt-len=9000"],
    );
    let (a_in, b_out) = (
        RawSocket::open(&a.a).unwrap(),
        RawSocket::open(&b.a).unwrap(),
    );
    let over = frame(1, 8997);
    let at = frame(2, 8996);
    a_in.send(&over).unwrap();
    let got = through(&a_in, &b_out, std::slice::from_ref(&at));
    assert_eq!(got, vec![at], "the frame at the limit, whole");
    // Nothing more comes out: the frame over the limit was dropped.
    let mut buf = vec![0u8; 16384];
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        if let Some(n) = b_out.recv(&mut buf, Duration::from_millis(50)) {
            assert!(
                !ours(&buf[..n]) || buf[18..22] != 1u32.to_be_bytes(),
                "the 8997-byte frame came out"
            );
        }
    }
    let fin = stop(child);
    let p0 = &fin["ports"][0];
    assert_eq!(
        p0["rx_errors"].as_u64(),
        Some(1),
        "counted on the receiving port: {fin}"
    );
    assert_eq!(fin["total"]["tx_packets"].as_u64(), Some(1), "{fin}");
}
