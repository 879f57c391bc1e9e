//! Interactive mode through a pseudo-terminal (script(1) gives the prompt a real
//! terminal, so line editing and tab completion are live), from piped stdin,
//! and from --cmdline-file.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_contains, assert_exit_0, signal, spawn_piped, testpmd};

const BIN: &str = env!("CARGO_BIN_EXE_testpmd");

fn base_args() -> String {
    format!("{BIN} --no-huge -l 0,1 --vdev net_null0 --vdev net_null1 -- -i")
}

/// Run testpmd under script(1), typing `keys` with a pause between chunks; returns
/// what the terminal showed and the exit status.
fn pty_session(extra: &str, keys: &[&str]) -> Option<(String, Option<i32>)> {
    if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Command("script")]) {
        return None;
    }
    let cmd = format!("{} {extra}", base_args());
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    for k in keys {
        stdin.write_all(k.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    Some((
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    ))
}

#[test]
fn prompt_edits_completes_survives_typos_and_quits() {
    let Some((screen, code)) = pty_session(
        "",
        &[
            "start\r",
            "show port stats all\r",
            "set fwd warp\r",
            "this is not a command\r",
            // Tab completion: "sho" + Tab completes to "show ".
            "sho\tport summary all\r",
            "show fwd stats all\r",
            "stop\r",
            "quit\r",
        ],
    ) else {
        return;
    };
    assert_eq!(code, Some(0), "{screen}");
    assert_contains(
        &screen,
        &[
            "testpmd> ",
            "NIC statistics for port 1",
            "Bad arguments: unknown forwarding mode \"warp\"",
            "Bad arguments: bad command",
        ],
    );
    assert!(
        screen.contains("Number of available ports: 2"),
        "tab completion: {screen}"
    );
    // Forwarding survived the typos: stop still reports it ran.
    assert_contains(
        &screen,
        &[
            "Accumulated forward statistics for all ports",
            "Telling cores to stop (stop)",
            "mbufs back in the pool",
        ],
    );
}

#[test]
fn commands_from_piped_stdin_and_from_a_file() {
    let dir = tempfile_dir();
    let file = dir.join("cmds.txt");
    std::fs::write(&file, "set fwd macswap\nset burst 16\nshow config fwd\n").unwrap();
    let mut child = spawn_session(
        &["net_null0", "net_null1"],
        &[format!("--cmdline-file={}", file.display())],
    );
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"start\nport stop 0\nshow port info 0\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stdin.write_all(b"stop\nshow port info 0\nquit\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_exit_0(&out, &text);
    assert!(
        text.contains("macswap packet forwarding - ports=2"),
        "file commands ran: {text}"
    );
    assert!(text.contains("packets/burst=16"), "{text}");
    assert!(
        text.contains("Bad arguments: stop forwarding first"),
        "port stop refused while forwarding: {text}"
    );
    assert!(text.contains("Infos for port 0"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn end_of_input_and_sigterm_end_the_session_cleanly() {
    let auto_start = [
        "--no-huge",
        "-l",
        "0,1",
        "--vdev",
        "net_null0",
        "--",
        "-i",
        "-a",
    ];
    let out = testpmd()
        .args(auto_start)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Telling cores to stop (end of input)"),
        "auto-started, stopped at EOF: {text}"
    );

    let child = testpmd()
        .args(auto_start)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep stdin open: end of input must not be what stops it.
    let mut child = child;
    let stdin = child.stdin.take();
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, "-TERM");
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Telling cores to stop (signal)"), "{text}");
}

/// testpmd at its prompt (`-i`) on the ports `vdevs`, with `extra`
/// application arguments after `-i`; stdin, stdout and stderr piped.
fn spawn_session(vdevs: &[&str], extra: &[String]) -> Child {
    let mut cmd = testpmd();
    cmd.args(["--no-huge", "-l", "0,1"]);
    for v in vdevs {
        cmd.args(["--vdev", v]);
    }
    cmd.args(["--", "-i"]).args(extra).stdin(Stdio::piped());
    spawn_piped(&mut cmd)
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("np-interactive-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `show port info` names the receive and transmit loops a driver runs
/// (iavf: AVX2 unless `simd=0` or the CPU has none), while the queues are
/// with the session.
#[test]
fn port_info_shows_the_burst_mode() {
    let mut child = spawn_session(
        &[
            "net_iavf_sim0,peer=net_iavf_sim1,simd=0",
            "net_iavf_sim1,peer=net_iavf_sim0",
        ],
        &[],
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"show port info all\nquit\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_exit_0(&out, &text);
    let (p0, p1) = text
        .split_once("Infos for port 1")
        .expect("both ports shown");
    assert!(
        p0.contains("Rx burst mode: Scalar\nTx burst mode: Scalar"),
        "{text}"
    );
    #[cfg(target_arch = "x86_64")]
    let vector = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let vector = false;
    let mode = if vector { "AVX2 Vector" } else { "Scalar" };
    assert!(
        p1.contains(&format!("Rx burst mode: {mode}\nTx burst mode: {mode}")),
        "{text}"
    );
}

/// `set txpkts X,Y` at the prompt: txonly then sends chains of those
/// lengths (net_null frees them, every mbuf comes back: exit status 0); a
/// segment longer than an mbuf is refused with the fix; `show port info`
/// says what a port does with multi-segment mbufs.
#[test]
fn set_txpkts_takes_segments() {
    let mut child = spawn_session(&["net_null0,no-rx=1", "net_null1,no-rx=1"], &[]);
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"set txpkts 5000,5000\nset txpkts 14,50,1000\nset fwd txonly\nstart\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stdin
            .write_all(b"stop\nshow port info 0\nshow port stats 0\nquit\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    let all = format!("{text}{err}");
    assert!(
        all.contains(
            "txpkts 5000,5000: a segment of 5000 bytes does not fit the 1664-byte data room"
        ) && all.contains("raise --mbuf-size to 5128"),
        "{all}"
    );
    assert!(
        all.contains("Rx scatter (frames over several mbufs): yes\nTx multi-segment mbufs: yes"),
        "{all}"
    );
    // Bytes counted whole: 1064 per packet.
    let tx_bytes = all
        .lines()
        .find_map(|l| l.split("TX-bytes:").nth(1))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("show port stats prints TX-bytes");
    assert!(
        tx_bytes > 0 && tx_bytes % 1064 == 0,
        "TX-bytes {tx_bytes}: {all}"
    );
}

/// `set record-burst-stats on|off` at the prompt takes effect at the next
/// `start`; `show fwd stats all` shows the lines while forwarding; `clear fwd
/// stats all` restarts the counts (burst counts included).
#[test]
fn set_record_burst_stats_applies_from_the_next_start_and_clears() {
    let mut child = spawn_session(&["net_null0", "net_null1"], &[]);
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"set record-burst-stats maybe\nset record-burst-stats on\nstart\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        stdin
            .write_all(b"show fwd stats all\nclear fwd stats all\nshow fwd stats all\nset record-burst-stats off\nstop\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        stdin.write_all(b"start\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        stdin.write_all(b"stop\nquit\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let (text, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_exit_0(&out, &text);
    assert!(
        format!("{text}{err}").contains("usage: set record-burst-stats on|off"),
        "{text}\n{err}"
    );
    assert!(
        text.contains("note: record-burst-stats takes effect at the next start"),
        "{text}"
    );
    // Four statistics outputs: show, show after clear, stop, stop.
    let rx_bursts: Vec<Option<u64>> = text
        .split("Accumulated forward statistics")
        .take(4)
        .map(|part| {
            let block = part.rsplit("Forward statistics for port 0").next().unwrap();
            block
                .lines()
                .find_map(|l| l.strip_prefix("  RX-bursts : "))
                .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(rx_bursts.len(), 4, "{text}");
    let (before, after_clear, at_stop) = (
        rx_bursts[0].expect("lines while forwarding"),
        rx_bursts[1].unwrap_or(0),
        rx_bursts[2].expect("lines at stop: recording was on at start"),
    );
    assert!(before > 1000, "{text}");
    assert!(
        after_clear < before / 10,
        "cleared: {after_clear} after {before}: {text}"
    );
    assert!(at_stop > after_clear, "{text}");
    assert_eq!(rx_bursts[3], None, "off from the second start: {text}");
}
