//! The testpmd binary end to end: bad input gets exit status 2 and a message
//! naming the argument; runs end by themselves or on SIGINT/SIGTERM with final
//! statistics and every mbuf back in its pool.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_contains, assert_exit_0, eal, event, json_events, run, signal, spawn_piped, testpmd,
};
use serde_json::Value;

#[test]
fn bad_input_is_a_usage_error_naming_the_argument() {
    let cases: &[(&[&str], &str)] = &[
        (&["-l", "0,a", "--vdev", "net_null0"], "-l \"0,a\""),
        (
            &["-l", "0,99", "--vdev", "net_null0"],
            "CPU 99 is not available",
        ),
        (
            &["-l", "0-1,200", "--vdev", "net_null0"],
            "above the highest lcore id",
        ),
        (&["-c", "0xZ", "--vdev", "net_null0"], "hex"),
        (
            &["--lcores", "0@0,0@1", "--vdev", "net_null0"],
            "appears twice",
        ),
        (
            &["-l", "0,1", "-c", "0x3", "--vdev", "net_null0"],
            "give only one",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0,sizes=64"],
            "unknown key \"sizes\"",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0,size=huge"],
            "size=\"huge\" is not a number",
        ),
        (
            &["-l", "0,1", "--vdev", "net_bogus0"],
            "unknown driver \"net_bogus\"",
        ),
        (
            &["-l", "0,1", "--vdev", "net_ring0,peer=net_ring7"],
            "no such net_ring device",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--burst=513"],
            "--burst 513",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--burst=0"],
            "--burst 0",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "--forward-mode=warp",
            ],
            "unknown mode",
        ),
        (&["-l", "0,1", "--", "--forward-mode=io"], "no ports"),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--nb-cores=2"],
            "--nb-cores 2",
        ),
        (&["-l", "0", "--vdev", "net_null0"], "no forwarding lcore"),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--txpkts=20"],
            "--txpkts 20",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--txpkts=64,0"],
            "--txpkts 64,0: \"0\" is not a length",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--max-pkt-len=20"],
            "--max-pkt-len 20",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "--mbuf-size=65536",
            ],
            "--mbuf-size 65536: give a size from 256 to 65535",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "-i",
                "--stats-period=1",
            ],
            "--stats-period prints without -i only",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--cmdline-file=x"],
            "--cmdline-file needs -i",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "-i",
                "--cmdline-file=/nonexistent/x",
            ],
            "--cmdline-file /nonexistent/x",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--rss-ip"],
            "--rss-ip is not supported yet",
        ),
        (
            &["-l", "0,1", "-a", "0000:00:20.0", "--vdev", "net_null0"],
            "-a \"0000:00:20.0\"",
        ),
        (
            &["-l", "0,1", "--no-pci", "-a", "0000:00:04.0"],
            "--no-pci and -a contradict",
        ),
        (&["-l", "0,1", "-m", "0", "--vdev", "net_null0"], "0 MiB"),
        (
            &["-l", "0,1", "-m", "lots", "--vdev", "net_null0"],
            "-m \"lots\"",
        ),
        (
            &["-l", "0,1", "--iova-mode=xx", "--vdev", "net_null0"],
            "--iova-mode \"xx\"",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--eth-peer=0,zz"],
            "--eth-peer",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "--stats-period=-1",
            ],
            "--stats-period",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--portmask=0x4"],
            "port 2",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "--port-topology=star",
            ],
            "--port-topology",
        ),
        (
            &["-l", "0,1", "--vdev", "net_null0", "--", "--mbcache=9999"],
            "--mbcache 9999",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "--total-num-mbufs=10",
            ],
            "at least 1024",
        ),
        (
            &[
                "-l",
                "0,1",
                "--vdev",
                "net_null0",
                "--",
                "--stats-format=xml",
            ],
            "--stats-format",
        ),
    ];
    for (args, needle) in cases {
        let mut a = vec!["--no-huge".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let out = run(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: exit status, stderr: {err}"
        );
        assert!(
            err.contains(needle),
            "{args:?}: stderr does not name {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: panicked: {err}");
    }
}

#[test]
fn unknown_options_are_rejected_by_clap_with_status_2() {
    for args in [
        &["--frobnicate"][..],
        &["--vdev", "net_null0", "--", "--frobnicate"][..],
    ] {
        let out = run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--frobnicate"), "{err}");
    }
    let help = run(&["--help".to_string()]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--vdev"));
}

#[test]
fn null_io_run_ends_by_itself_with_json_statistics() {
    let out = run(&eal(&[
        "--vdev=net_null0",
        "--vdev=net_null1",
        "--",
        "--forward-mode=io",
        "--burst=32",
        "--stats-period=0.2",
        "--run-time=1",
        "--stats-format=json",
    ]));
    assert_exit_0(&out, "testpmd");
    let ev = json_events(&out);
    let stats: Vec<&Value> = ev.iter().filter(|e| e["event"] == "stats").collect();
    assert!(
        stats.len() >= 3,
        "expected periodic stats, got {}",
        stats.len()
    );
    let last = stats.last().unwrap();
    assert_eq!(last["ports"].as_array().unwrap().len(), 2);
    assert!(last["total"]["rx_pps"].as_f64().unwrap() > 1e5, "{last}");
    let p0 = &last["ports"][0];
    // 64-byte packets: wire bit/s = (64 + 4 + 20) * 8 per packet.
    let (pps, wire) = (
        p0["rx_pps"].as_f64().unwrap(),
        p0["rx_wire_bps"].as_f64().unwrap(),
    );
    // The statistics read a port's packet and byte counters one after the
    // other while the lcore forwards, so a period's bytes may include one burst
    // more than its packets (32 x 64 B over 0.2 s: 1e-5 of this rate); a wrong
    // per-packet overhead would be off by 4 % or more.
    assert!((wire - pps * 88.0 * 8.0).abs() <= 1.0 + wire * 1e-4, "{p0}");
    let fin = event(&ev, "final");
    let total = &fin["total"];
    assert!(total["rx_packets"].as_u64().unwrap() > 0);
    // null tx takes everything: nothing dropped, and every received packet was sent.
    assert_eq!(total["tx_dropped"].as_u64(), Some(0));
    let (rx, tx) = (
        total["rx_packets"].as_u64().unwrap(),
        total["tx_packets"].as_u64().unwrap(),
    );
    assert_eq!(rx, tx, "io forwarding sends what it receives");
    let mp = &event(&ev, "mempool")["mempool"];
    assert_eq!(mp["in_use"].as_u64(), Some(0), "{mp}");
    assert_eq!(mp["available"], mp["size"]);
}

#[test]
fn max_packets_ends_the_run() {
    let t = Instant::now();
    let out = run(&eal(&[
        "--vdev=net_null0",
        "--vdev=net_null1",
        "--",
        "--max-packets=2000000",
        "--run-time=60",
        "--stats-format=json",
    ]));
    assert_exit_0(&out, "testpmd");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "the packet count did not end the run"
    );
    let ev = json_events(&out);
    assert!(event(&ev, "final")["total"]["rx_packets"].as_u64().unwrap() >= 2_000_000);
}

fn signal_stops(sig: &str) {
    let child = spawn_piped(
        testpmd()
            .args(eal(&[
                "--vdev=net_null0",
                "--vdev=net_null1",
                "--",
                "--run-time=60",
                "--stats-period=0.5",
            ]))
            .stdin(Stdio::null()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    signal(&child, sig);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_exit_0(&out, sig);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{sig}: too slow to stop"
    );
    assert_contains(
        &text,
        &[
            "Telling cores to stop (signal)",
            "Accumulated forward statistics for all ports",
            "NIC statistics for port 1",
            "mbufs back in the pool",
        ],
    );
    // The demo's VFs are trusted: no line may say their promiscuous request
    // goes unapplied (a warning must apply to the run it is printed in).
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.lines()
            .any(|l| l.contains("promiscuous") || l.contains("untrusted")),
        "{err}"
    );
}

#[test]
fn an_untrusted_simulated_vf_is_warned_that_promiscuous_mode_is_not_applied() {
    // The PF (the model, whose log is the host's here) knows which VF is
    // untrusted; the driver cannot (the PF answers success either way).
    let out = run(&eal(&[
        "--vdev=net_iavf_sim0,peer=net_iavf_sim1,trusted=0",
        "--vdev=net_iavf_sim1,peer=net_iavf_sim0,trusted=1",
        "--",
        "--forward-mode=io",
        "--tx-first",
        "--run-time=1",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let warned: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("promiscuous"))
        .collect();
    assert_eq!(warned.len(), 1, "{err}");
    assert!(
        warned[0].contains("net_iavf_sim0")
            && warned[0].contains("untrusted")
            && warned[0].contains("trust on"),
        "{err}"
    );
}

#[test]
fn sigint_prints_final_statistics_and_exits_0() {
    signal_stops("-INT");
}

#[test]
fn sigterm_prints_final_statistics_and_exits_0() {
    signal_stops("-TERM");
}

/// Each mode on null and ring ports with two queues: it runs, moves packets
/// and gives every mbuf back. What each mode does to the frames is checked in
/// `modes_on_frames.rs`.
#[test]
fn every_mode_runs_and_returns_every_mbuf() {
    for mode in [
        "io", "mac", "macswap", "rxonly", "txonly", "flowgen", "icmpecho", "5tswap",
    ] {
        for ports in [
            &["--vdev=net_null0,copy=1", "--vdev=net_null1,copy=1"][..],
            &[
                "--vdev=net_ring0,peer=net_ring1",
                "--vdev=net_ring1,peer=net_ring0",
            ][..],
        ] {
            let mut extra: Vec<&str> = ports.to_vec();
            let fm = format!("--forward-mode={mode}");
            extra.extend([
                "--",
                &fm,
                "--tx-first",
                "--run-time=0.3",
                "--stats-format=json",
                "--rxq=2",
                "--txq=2",
            ]);
            let out = run(&eal(&extra));
            assert_exit_0(&out, &format!("{mode} {ports:?}"));
            let ev = json_events(&out);
            let fin = event(&ev, "final");
            assert_eq!(fin["mode"], mode);
            let total = &fin["total"];
            let moved =
                total["rx_packets"].as_u64().unwrap() + total["tx_packets"].as_u64().unwrap();
            assert!(moved > 0, "{mode} {ports:?}: nothing moved: {fin}");
            assert_eq!(
                event(&ev, "mempool")["mempool"]["in_use"].as_u64(),
                Some(0),
                "{mode} {ports:?}"
            );
        }
    }
}

#[test]
fn two_simulated_x710_vfs_forward_with_the_iavf_driver() {
    let out = run(&eal(&[
        "--vdev=net_iavf_sim0,peer=net_iavf_sim1",
        "--vdev=net_iavf_sim1,peer=net_iavf_sim0",
        "--",
        "--forward-mode=io",
        "--tx-first",
        "--run-time=1",
        "--stats-format=json",
    ]));
    assert_exit_0(&out, "testpmd");
    let ev = json_events(&out);
    let fin = event(&ev, "final");
    for p in fin["ports"].as_array().unwrap() {
        assert!(p["rx_packets"].as_u64().unwrap() > 1000, "{fin}");
        assert_eq!(p["rx_dropped"].as_u64(), Some(0), "{fin}");
    }
    assert_eq!(event(&ev, "mempool")["mempool"]["in_use"].as_u64(), Some(0));
}

/// The names of `pid`'s threads that run the iavf device model
/// (`iavf-sim-*`), as the kernel lists them.
fn model_threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|c| c.trim_end().to_string())
        .filter(|c| c.starts_with("iavf-sim-"))
        .collect();
    names.sort();
    names
}

#[test]
fn the_simulated_vfs_of_one_pf_share_one_model_thread() {
    let cases: [(&str, &[&str]); 2] = [
        // The demo's wiring: both VFs on PF 0, one thread.
        ("net_iavf_sim1,peer=net_iavf_sim0", &["iavf-sim-i40e0"]),
        (
            "net_iavf_sim1,peer=net_iavf_sim0,pf_id=1",
            &["iavf-sim-i40e0", "iavf-sim-i40e1"],
        ),
    ];
    for (second, want) in cases {
        let mut child = testpmd()
            .args(eal(&[
                "--vdev=net_iavf_sim0,peer=net_iavf_sim1",
                &format!("--vdev={second}"),
                "--",
                "--forward-mode=io",
                "--tx-first",
                "--run-time=2",
            ]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("testpmd starts");
        // Every model thread testpmd had while it ran, and the most at once.
        let (mut seen, mut most) = (Vec::<String>::new(), 0);
        let t = Instant::now();
        let status = loop {
            let now = model_threads(child.id());
            most = most.max(now.len());
            for n in now {
                if !seen.contains(&n) {
                    seen.push(n);
                }
            }
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "testpmd did not end");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "{second}: {status}");
        seen.sort();
        assert_eq!(seen, want, "{second}");
        assert_eq!(most, want.len(), "{second}: model threads at once");
    }
}

#[test]
fn demo_runs_without_arguments_root_or_hugepages() {
    let t = Instant::now();
    let out = testpmd().stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_exit_0(&out, "testpmd");
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(text.contains("nicpoll testpmd demo"), "{text}");
    assert!(
        text.matches("NIC statistics for port 0").count() >= 5,
        "{text}"
    );
    assert_contains(
        &text,
        &[
            "Telling cores to stop (run time reached)",
            "mbufs back in the pool",
        ],
    );
}

/// Scrape `path` from `addr` with a plain HTTP/1.1 GET.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn metric_value(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    metric_value(text, name_and_labels)
        .unwrap_or_else(|| panic!("no {name_and_labels} in:\n{text}"))
}

/// Scrape `/metrics` every 100 ms until `ready` holds for the response;
/// returns it, or panics with the last one after `limit`.
fn poll_metrics(addr: &str, limit: Duration, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let r = http_get(addr, "/metrics");
        if ready(&r) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not there after {limit:?}; the last scrape:\n{r}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `promtool check metrics` (Prometheus' own parser and linter) on the
/// body of an HTTP response; panics with its findings unless it is clean.
/// Lint findings (a counter without `_total`, a metric without HELP, ...)
/// fail too: they are what a Prometheus user's tooling would flag.
fn promtool_check(response: &str) {
    use std::io::Write;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .expect("an HTTP response with a body");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics (exit {:?}: 1 = parse error, 3 = lint findings):\n{said}\n{body}",
        out.status.code()
    );
}

/// The check above can fail: promtool refuses broken text and lint findings.
#[test]
fn promtool_check_fails_on_parse_errors_and_lint_findings() {
    if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Command("promtool")]) {
        return;
    }
    let response = |body: &str| format!("HTTP/1.1 200 OK\r\n\r\n{body}");
    promtool_check(&response(
        "# HELP x_total Things.\n# TYPE x_total counter\nx_total 1\n",
    ));
    for bad in [
        "x_total{a=\"b\" 1\n",
        "# HELP x Things.\n# TYPE x counter\nx 1\n",
    ] {
        let r = std::panic::catch_unwind(|| promtool_check(&response(bad)));
        assert!(r.is_err(), "promtool accepted {bad:?}");
    }
}

#[test]
fn metrics_endpoint_serves_prometheus_text_with_latency() {
    use std::io::{BufRead, BufReader};
    // Decided before testpmd starts; the checks that need no promtool run anyway.
    let no_promtool = nicpoll_testkit::missing(&[nicpoll_testkit::Need::Command("promtool")]);
    let mut child = spawn_piped(
        testpmd()
            .args(eal(&[
                "--vdev=net_ring0,peer=net_ring1",
                "--vdev=net_ring1,peer=net_ring0",
                "--",
                "--forward-mode=flowgen",
                "--metrics=127.0.0.1:0",
                "--run-time=20",
            ]))
            .stdin(Stdio::null()),
    );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let l = lines
            .next()
            .expect("testpmd printed its metrics address")
            .unwrap();
        if let Some(rest) = l.strip_prefix("Metrics: http://") {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    // What traffic must show, polled until it does: the text is rendered every
    // 250 ms and the rate gauges average over the last second, so how soon
    // depends on how soon the forwarding lcore gets a CPU, not on a sleep.
    let rx_port = "nicpoll_port_rx_packets_total{port=\"1\",name=\"net_ring1\"}";
    let rx_queue = "nicpoll_queue_rx_packets_total{port=\"1\",name=\"net_ring1\",queue=\"0\"}";
    let rx_pps = "nicpoll_port_rx_pps{port=\"1\",name=\"net_ring1\"}";
    let lat_count = "nicpoll_latency_seconds_count";
    let first = poll_metrics(&addr, Duration::from_secs(15), |t| {
        [rx_port, rx_queue, rx_pps, lat_count]
            .iter()
            .all(|m| metric_value(t, m).is_some_and(|v| v > 0.0))
    });
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{first}");
    assert_contains(
        &first,
        &[
            "Content-Type: text/plain; version=0.0.4",
            "# TYPE nicpoll_port_rx_packets_total counter",
            "# TYPE nicpoll_port_rx_pps gauge",
        ],
    );
    let rx1 = metric(&first, rx_port);
    assert_eq!(metric(&first, "nicpoll_forwarding{mode=\"flowgen\"}"), 1.0);
    // flowgen receives its own stamped packets over the ring pair: live latency.
    let count = metric(&first, lat_count);
    assert!(metric(&first, "nicpoll_latency_seconds_bucket{le=\"+Inf\"}") == count);
    assert!(first.contains("nicpoll_mempool_in_use{pool=\"mb_pool_0\"}"));
    match &no_promtool {
        None => promtool_check(&first),
        Some(missing) => nicpoll_testkit::skip(format!("the promtool check: {missing}")),
    }
    // Counters move (in a later rendering of the text).
    poll_metrics(&addr, Duration::from_secs(10), |t| {
        metric_value(t, rx_port).is_some_and(|v| v > rx1)
    });
    assert!(http_get(&addr, "/other").starts_with("HTTP/1.1 404"));
    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Frames of a classic pcap file (header 24 bytes, records 16 + caplen).
fn pcap_frames(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let caplen = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        out.push(b[off + 16..off + 16 + caplen].to_vec());
        off += 16 + caplen;
    }
    out
}

#[test]
fn pcap_ports_record_generated_traffic_and_replay_it() {
    let dir = std::env::temp_dir().join(format!("np-pcap-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("a.pcap"), dir.join("b.pcap"));
    // txonly on a port whose transmit side is a pcap file.
    let out = run(&eal(&[
        &format!("--vdev=net_pcap0,tx_pcap={}", a.display()),
        "--",
        "--forward-mode=txonly",
        "--txpkts=100",
        "--max-packets=5000",
        "--no-latency",
    ]));
    assert_exit_0(&out, "testpmd");
    let gen_frames = pcap_frames(&a);
    assert!(gen_frames.len() >= 5000, "{}", gen_frames.len());
    assert!(
        gen_frames
            .iter()
            .all(|f| f.len() == 100 && f[12..14] == [0x08, 0x00])
    );
    // io forwarding from that file to another: every frame, byte for byte.
    let out = run(&eal(&[
        &format!("--vdev=net_pcap0,rx_pcap={}", a.display()),
        &format!("--vdev=net_pcap1,tx_pcap={}", b.display()),
        "--",
        "--forward-mode=io",
        "--run-time=1",
        // Draining receive queues before the start would eat the file's first frames.
        "--no-flush-rx",
    ]));
    assert_exit_0(&out, "testpmd");
    let replayed = pcap_frames(&b);
    assert_eq!(replayed.len(), gen_frames.len(), "replayed frame count");
    assert!(replayed == gen_frames, "replayed frames differ in content");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hugepage_files_of_a_killed_run_are_removed_at_the_next_start() {
    use nicpoll_testkit::{Need, skip_if_missing};
    // 4096 mbufs of 2 KiB and their rings: 8 MiB and a little, on a writable
    // mount testpmd finds by itself (the first of the default page size).
    if skip_if_missing(&[Need::Hugetlbfs, Need::FreeHugepages(16)]) {
        return;
    }
    let huge_dir = nicpoll_testkit::hugetlbfs_mount().expect("checked above");
    let prefix = format!("npkill{}", std::process::id());
    let args = [
        "-l",
        "0,1",
        "--file-prefix",
        &prefix,
        "--huge-dir",
        huge_dir.to_str().unwrap(),
        "--vdev=net_null0",
        "--",
        "--run-time=30",
        "--total-num-mbufs=4096",
    ];
    let mut child = testpmd()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let files = || -> Vec<String> {
        std::fs::read_dir(&huge_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while files().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = files();
    if left.is_empty() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "testpmd made no hugepage file {prefix}* in {} in 10 s",
            huge_dir.display()
        );
    }
    child.kill().unwrap(); // SIGKILL: no cleanup runs
    child.wait().unwrap();
    assert_eq!(files(), left, "a killed run leaves its files");
    let again: Vec<String> = args
        .iter()
        .map(|s| {
            if *s == "--run-time=30" {
                "--run-time=0.2"
            } else {
                s
            }
            .to_string()
        })
        .collect();
    let out = run(&again);
    assert_exit_0(&out, "testpmd");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("left behind by a process that died"), "{err}");
    assert!(
        files().is_empty(),
        "stale and own files are gone: {:?}",
        files()
    );
}

#[test]
fn entrypoint_mode_takes_devices_cores_and_hugepages_from_the_pod() {
    // A fake pod: cgroup cpuset 0-1, a 2 MiB hugetlbfs mount, one VF from the
    // device plugin. The device does not exist here, so the run stops at VFIO
    // after printing what it derived.
    let root = std::env::temp_dir().join(format!("np-fakepod-{}", std::process::id()));
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("proc/self/cgroup", "0::/kubepods/p1\n");
    w("sys/fs/cgroup/kubepods/p1/cpuset.cpus.effective", "0-1\n");
    w(
        "proc/mounts",
        "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n",
    );
    w(
        "proc/meminfo",
        "HugePages_Total:    64\nHugePages_Free:     64\nHugepagesize:       2048 kB\n",
    );
    let out = testpmd()
        .args(["--", "--run-time=1"])
        .env("NICPOLL_ROOT", &root)
        .env("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_DOWNLINK", "0000:00:1f.6")
        .env(
            "PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_DOWNLINK_INFO",
            r#"{"0000:00:1f.6":{"vfio":{"vfio-dev-mount":"/dev/vfio/7","vfio-mount":"/dev/vfio/vfio"}}}"#,
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Entrypoint mode: configuration derived from the pod"),
        "{text}{err}"
    );
    assert_contains(
        &text,
        &[
            "device 0000:00:1f.6 from PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_DOWNLINK",
            "cores: 0-1 from the container's cpuset",
            "main lcore 0, forwarding 1",
            "hugepages: 2 MiB pages at /dev/hugepages",
        ],
    );
    // It then tried the device it was given (no VFIO on this machine or no such device).
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("VFIO") || err.contains("0000:00:1f.6"),
        "{err}"
    );
    // Malformed plugin variables are a usage error naming the variable.
    let bad = testpmd()
        .args(["--", "--run-time=1"])
        .env("NICPOLL_ROOT", &root)
        .env("PCIDEVICE_INTEL_COM_X", "0000:00:1f.6")
        .env("PCIDEVICE_INTEL_COM_X_INFO", "{oops")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("PCIDEVICE_INTEL_COM_X_INFO"));
    std::fs::remove_dir_all(&root).unwrap();
}

/// A plan that would hand multi-segment packets to a port that cannot send
/// them (net_memif: `tx_multi_seg` false) is refused before any packet
/// moves, naming the ports and the fix; the same ports run once the plan
/// makes no chains.
#[test]
fn chains_for_a_port_that_cannot_send_them_are_refused_at_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let memif = format!(
        "net_memif0,role=server,socket-abstract=no,socket={}",
        dir.path().join("m.sock").display()
    );
    let base = |vdevs: &[&str], app: &[&str]| {
        let mut a: Vec<String> = ["--no-huge", "-l", "0,1", "--file-prefix=npchainref"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for v in vdevs {
            a.push(format!("--vdev={v}"));
        }
        a.push("--".into());
        a.extend(app.iter().map(|s| s.to_string()));
        a.push("--run-time=1".into());
        a
    };
    let refused: &[(&[&str], &[&str], &str)] = &[
        (
            &[&memif],
            &["--forward-mode=txonly", "--txpkts=1000,1000"],
            "--txpkts 1000,1000: port 0 (net_memif) cannot send multi-segment packets",
        ),
        (
            // net_null takes frames of any length (as DPDK's): no mbuf holds
            // its limit, so only --max-pkt-len is offered.
            &["net_null0,size=9000", &memif],
            &["--forward-mode=io"],
            "port 0 (net_null) may receive frames of up to 65535 bytes, more than the \
             1664-byte data room of an mbuf, as multi-segment packets, and port 1 \
             (net_memif) cannot send those: lower --max-pkt-len to 1668",
        ),
    ];
    for (vdevs, app, needle) in refused {
        let out = run(&base(vdevs, app));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{app:?}: stderr: {err}");
        assert!(err.contains(needle), "{app:?}: not {needle:?} in: {err}");
    }
    let fine: &[(&[&str], &[&str])] = &[
        (&[&memif], &["--forward-mode=txonly", "--txpkts=1000"]),
        (
            &["net_null0,size=9000", &memif],
            &[
                "--forward-mode=io",
                "--max-pkt-len=9018",
                "--mbuf-size=9142",
            ],
        ),
    ];
    for (vdevs, app) in fine {
        let out = run(&base(vdevs, app));
        assert_exit_0(&out, &format!("{app:?}"));
    }
}

/// The `RX-bursts : N [...]` / `TX-bursts : N [...]` line of `dir` in
/// `block`: (N, the bracketed text).
fn bursts_line<'a>(block: &'a str, dir: &str) -> Option<(u64, &'a str)> {
    let line = block
        .lines()
        .find(|l| l.starts_with(&format!("  {dir}-bursts : ")))?;
    let rest = line.split_once(" : ").unwrap().1;
    let (n, spread) = rest.split_once(' ').unwrap();
    Some((n.parse().unwrap(), spread))
}

/// A number after `key` in `block` (`RX-packets: 123`).
fn field(block: &str, key: &str) -> u64 {
    let at = block
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {block}"));
    block[at + key.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The "Forward statistics for port N" blocks of a run's text, in order.
fn port_blocks(text: &str) -> Vec<&str> {
    text.split("Forward statistics for port ")
        .skip(1)
        .map(|b| b.split("\n\n").next().unwrap())
        .collect()
}

/// `--record-burst-stats`: each port block gets RX-bursts and TX-bursts
/// lines whose calls account for the port's packets (net_null always fills
/// the burst); null ports that never receive show only empty polls, and io
/// never transmits then; without the flag there are no such lines.
#[test]
fn record_burst_stats_adds_burst_lines_that_account_for_the_packets() {
    let with = |ports: &[&str], flag: bool, extra: &[&str]| {
        let mut args: Vec<&str> = ports.to_vec();
        args.extend(["--", "--forward-mode=io", "--burst=32", "--run-time=0.5"]);
        if flag {
            args.push("--record-burst-stats");
        }
        args.extend(extra);
        let out = run(&eal(&args));
        assert_exit_0(&out, &format!("{args:?}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let nulls = ["--vdev=net_null0", "--vdev=net_null1"];
    let text = with(&nulls, true, &[]);
    let blocks = port_blocks(&text);
    assert_eq!(blocks.len(), 2, "{text}");
    for b in &blocks {
        let (rx_calls, rx_spread) = bursts_line(b, "RX").unwrap_or_else(|| panic!("{text}"));
        let (tx_calls, tx_spread) = bursts_line(b, "TX").unwrap_or_else(|| panic!("{text}"));
        assert!(rx_calls > 100, "{b}");
        assert_eq!(rx_spread, "[0% of 0 pkts + 100% of 32 pkts]", "{b}");
        assert_eq!(tx_spread, "[0% of 0 pkts + 100% of 32 pkts]", "{b}");
        assert_eq!(rx_calls * 32, field(b, "RX-packets:"), "{b}");
        assert_eq!(tx_calls * 32, field(b, "TX-packets:"), "{b}");
    }

    let text = with(
        &["--vdev=net_null0,no-rx=1", "--vdev=net_null1,no-rx=1"],
        true,
        &[],
    );
    for b in port_blocks(&text) {
        let (calls, spread) = bursts_line(b, "RX").unwrap_or_else(|| panic!("{text}"));
        assert!(calls > 100, "{b}");
        assert_eq!(spread, "[100% of 0 pkts]", "{b}");
        assert_eq!(
            bursts_line(b, "TX"),
            None,
            "io sends nothing after an empty poll: {b}"
        );
    }

    // Two queues per port: four streams on two ports. Each stream block has
    // its own lines (as dpdk-testpmd's); each port block sums its streams.
    let text = with(&nulls, true, &["--rxq=2", "--txq=2"]);
    let streams: Vec<&str> = text
        .split("Forward Stats for ")
        .skip(1)
        .map(|b| b.split("\n\n").next().unwrap())
        .collect();
    assert_eq!(streams.len(), 4, "{text}");
    let mut rx_per_port = [0u64; 2];
    for s in &streams {
        let port: usize = s["RX P=".len()..][..1].parse().unwrap();
        rx_per_port[port] += bursts_line(s, "RX").unwrap_or_else(|| panic!("{s}")).0;
    }
    for (p, b) in port_blocks(&text).iter().enumerate() {
        assert_eq!(bursts_line(b, "RX").unwrap().0, rx_per_port[p], "{text}");
    }

    let text = with(&nulls, false, &[]);
    assert!(
        !text.contains("-bursts :"),
        "no burst lines without the flag: {text}"
    );

    // The final JSON event carries the histograms.
    for flag in [true, false] {
        let mut args = vec![
            "--vdev=net_null0",
            "--vdev=net_null1",
            "--",
            "--run-time=0.3",
        ];
        args.push("--stats-format=json");
        if flag {
            args.push("--record-burst-stats");
        }
        let out = run(&eal(&args));
        assert_exit_0(&out, "json");
        let ev = json_events(&out);
        let p0 = &event(&ev, "final")["ports"][0];
        if !flag {
            assert!(p0.get("rx_bursts").is_none(), "{p0}");
            continue;
        }
        let calls = p0["rx_bursts"]["calls"].as_u64().unwrap();
        assert_eq!(
            p0["rx_bursts"]["by_size"]["32"].as_u64(),
            Some(calls),
            "{p0}"
        );
        assert_eq!(calls * 32, p0["rx_packets"].as_u64().unwrap(), "{p0}");
        assert_eq!(p0["tx_bursts"]["calls"].as_u64(), Some(calls), "{p0}");
    }
}

/// Our lines against dpdk-testpmd's own on the same null ports, io, burst
/// 32: the same place in the port block and the same spread text.
#[test]
fn burst_lines_match_dpdk_testpmd_on_null_ports() {
    if !nicpoll_testkit::have_command("dpdk-testpmd") {
        return nicpoll_testkit::skip(
            "dpdk-testpmd is missing: apt-get install dpdk (Debian 12: dpdk-dev)",
        );
    }
    let mut dpdk = Command::new("dpdk-testpmd");
    dpdk.args([
        "--no-huge",
        "-m",
        "512",
        "--no-pci",
        "-l",
        "0,1",
        "--vdev=net_null0",
        "--vdev=net_null1",
        &format!("--file-prefix=np-bursts-{}", std::process::id()),
        "--log-level=lib.eal:error",
        "--",
        "-i",
        "--record-burst-stats",
        "--total-num-mbufs=16384",
    ])
    .stdin(Stdio::piped());
    let mut child = spawn_piped(&mut dpdk);
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"start\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(b"stop\nquit\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_exit_0(&out, &theirs);
    let out = run(&eal(&[
        "--vdev=net_null0",
        "--vdev=net_null1",
        "--",
        "--record-burst-stats",
        "--run-time=0.5",
    ]));
    assert_exit_0(&out, "testpmd");
    let ours = String::from_utf8_lossy(&out.stdout).into_owned();
    let shape = |text: &str| -> Vec<String> {
        port_blocks(text)
            .iter()
            .flat_map(|b| b.lines())
            .filter(|l| l.contains("-bursts :"))
            .map(|l| {
                let (head, rest) = l.split_once(" : ").unwrap();
                format!("{head} : N {}", rest.split_once(' ').unwrap().1)
            })
            .collect()
    };
    let expected = shape(&theirs);
    assert_eq!(expected.len(), 4, "dpdk-testpmd printed: {theirs}");
    assert_eq!(shape(&ours), expected, "ours: {ours}\ntheirs: {theirs}");
}
