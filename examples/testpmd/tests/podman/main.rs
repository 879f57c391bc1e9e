//! The pod in a real container runtime: podman (4.3.1 on Debian 12) builds the
//! image from `pod/Containerfile` offline and plays the manifests of `pod/` as
//! Kubernetes Pod manifests (`podman kube play`).
//!
//! - The base image the Containerfile's runtime stage starts `FROM` is used when
//!   the machine has it; otherwise it is made with `debootstrap --variant=minbase
//!   bookworm` from the Debian archive of the machine's apt sources, imported and
//!   tagged with that name, and stays as the cache of later runs. The image is
//!   built with `--target prebuilt` around the testpmd cargo built for this test.
//! - `pod/pod_testpmd_virt.yaml` plays through an overlay that changes only what
//!   a runtime without the SR-IOV device plugin forces: a hugetlbfs volume of
//!   the machine's page size under the manifest's volume name (podman mounts a
//!   volume of that name for the `emptyDir`), software ports in
//!   `NICPOLL_EAL_ARGS`, and `restartPolicy: Never`.
//! - `pod/pod_memif.yaml` plays unchanged (it needs no device, hugepage or
//!   privilege): its two containers connect over the socket in their shared
//!   `emptyDir`, one receiving what the other sends.
//! - Safety: every pod is played from a network namespace this test makes
//!   (`nsenter --net`): podman's bridge, its NAT rules and the published port
//!   9100 live there, so no container reaches the machine's own NIC and nothing
//!   listens on the machine's addresses. The metrics are scraped from that
//!   namespace, the node's side of the published port.
//! - Podman's own settings for this machine come from a containers.conf given
//!   with `CONTAINERS_CONF`: runc (crun refuses a hybrid cgroup layout), no
//!   default ulimit above the machine's hard limits, cgroupfs, events to a file.
//! - Names podman shares machine-wide (image tags, the volume, the pods, the
//!   network namespace, the port) are held with `nicpoll_testkit::lock_name`;
//!   pods, volumes and the namespace made here are removed, also on failure.

mod machine;
mod manifest;
mod output;
mod session;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use machine::{allowed_cpus, hugepage_kib, page_size_text, parse_cpus};
use manifest::{Manifest, containerfile_base, overlay};
use output::{block, last_count, promtool_check, samples, scrape};
use session::Session;

const NETNS: &str = "nicpoll-podman";
/// The published metrics port of the manifests (inside `NETNS` only).
const METRICS_PORT: u16 = 9100;
/// The test's images: `TEST_IMAGE:podman-test-KEY`, KEY naming the build's
/// inputs; the last one stays as the cache of later runs.
const TEST_IMAGE: &str = "localhost/nicpoll-testpmd";
const TEST_TAG_PREFIX: &str = "podman-test";
/// The software ports the overlay gives (DPDK's net_null: receive as fast as
/// the mempool allows, drop what is sent).
const SOFTWARE_PORTS: &str = "--vdev net_null0 --vdev net_null1";
/// Free hugepage memory a run needs (its mempool and rings; about 80 MiB).
const HUGEPAGE_BYTES_NEEDED: u64 = 128 << 20;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn pod_file(name: &str) -> PathBuf {
    repo().join("pod").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `podman kube play FILE`, which must succeed; its output.
fn play_ok(s: &Session, file: &Path) -> Output {
    let out = s.play(file);
    assert!(
        out.status.success(),
        "podman kube play {}: {}",
        file.display(),
        text(&out)
    );
    out
}

#[test]
fn the_virt_pod_forwards_in_podman_serves_metrics_and_stops_cleanly_on_sigterm() {
    let Some(mut s) = Session::start() else {
        return;
    };
    let started = Instant::now();
    let m = Manifest::read(pod_file("pod_testpmd_virt.yaml"));
    let volume = m
        .hugepage_volume
        .clone()
        .expect("the manifest mounts hugepages");
    s.hugetlbfs_volume(&volume);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod_testpmd_virt.podman.yaml");
    std::fs::write(&file, overlay(&m, SOFTWARE_PORTS)).unwrap();
    play_ok(&s, &file);
    let ctr = m.container_name();

    // podman kept what it honours: privileged, the env, the memory limit, the policy.
    let settings = s.inspect(
        &ctr,
        "{{.HostConfig.Privileged}} {{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}}",
    );
    assert_eq!(
        settings, "true 1073741824 no",
        "privileged, memory limit (1Gi), restartPolicy: Never"
    );

    // The first statistics period: everything the start printed is there.
    let logs = s.wait_logs(&ctr, 30, "statistics block", |l| {
        l.contains("NIC statistics for port 1")
    });
    // Entrypoint mode: no device plugin, the overlay's ports, the CPUs podman
    // gave (no cpuset: every CPU we may use), the hugetlbfs volume.
    let derived = block(&logs, "Entrypoint mode: configuration derived from the pod");
    assert!(
        derived.contains("devices: none in PCIDEVICE_* variables"),
        "{derived}"
    );
    for port in ["net_null0", "net_null1"] {
        assert!(
            derived.contains(&format!(
                "port --vdev {port} from the command line (NICPOLL_EAL_ARGS)"
            )),
            "{derived}"
        );
    }
    let cores_line = derived
        .lines()
        .find(|l| l.trim().starts_with("cores: "))
        .unwrap();
    let cores = cores_line.trim()["cores: ".len()..]
        .split(' ')
        .next()
        .unwrap();
    let cpus = allowed_cpus();
    assert_eq!(parse_cpus(cores), cpus, "{derived}");
    assert!(
        cores_line.contains(&format!("main lcore {}", cpus.first().unwrap())),
        "{derived}"
    );
    let pages = page_size_text(hugepage_kib().unwrap());
    assert!(
        derived.contains(&format!("hugepages: {pages} pages at /dev/hugepages")),
        "{derived}"
    );
    assert!(
        logs.contains(&format!("EAL: hugepages: {pages} pages at /dev/hugepages")),
        "the mempool is in the volume's hugepages:\n{logs}"
    );
    // The entrypoint's doctor (NICPOLL_DOCTOR=warn): what a node without the
    // device plugin and CPU manager lacks, nothing failing (hugepages are there).
    assert!(logs.contains("WARN  devices: no PCI device"), "{logs}");
    assert!(logs.contains("WARN  cpu-set: "), "{logs}");
    let summary = logs
        .lines()
        .find(|l| l.starts_with("doctor: "))
        .unwrap_or_else(|| panic!("no doctor summary:\n{logs}"));
    assert!(summary.ends_with(" 0 FAIL"), "{summary}");

    // Forwarding: both null ports receive and send.
    for port in ["0", "1"] {
        let stats = block(&logs, &format!("NIC statistics for port {port}"));
        assert!(last_count(stats, "RX-packets:") > 0, "{stats}");
        assert!(last_count(stats, "TX-packets:") > 0, "{stats}");
    }

    // The metrics, from the node's side of the published port, through Prometheus's parser.
    let metrics = scrape(METRICS_PORT);
    promtool_check(&metrics);
    let rx = samples(&metrics, "nicpoll_port_rx_packets_total");
    assert_eq!(rx.len(), 2, "{metrics}");
    assert!(rx.iter().all(|&v| v > 0.0), "{metrics}");
    assert_eq!(
        samples(&metrics, "nicpoll_forwarding"),
        vec![1.0],
        "{metrics}"
    );

    // podman pod stop -t 30: SIGTERM to testpmd (PID 1), the final statistics,
    // every mbuf back, exit status 0, well within the grace period.
    let stop = Instant::now();
    s.must(&["pod", "stop", "-t", "30", &m.pod]);
    let stop_time = stop.elapsed();
    assert!(
        stop_time < Duration::from_secs(25),
        "pod stop took {stop_time:?}: SIGTERM not honoured?"
    );
    assert_eq!(
        s.inspect(&ctr, "{{.State.ExitCode}}"),
        "0",
        "{}",
        s.logs(&ctr)
    );
    let logs = s.logs(&ctr);
    assert!(logs.contains("Telling cores to stop (signal)"), "{logs}");
    let total = block(&logs, "Accumulated forward statistics for all ports");
    let (rx, tx) = (
        last_count(total, "RX-packets:"),
        last_count(total, "TX-packets:"),
    );
    let dropped = last_count(total, "TX-dropped:");
    assert!(rx > 0, "{total}");
    assert_eq!(
        tx + dropped,
        rx,
        "io forwards or drops every packet it receives:\n{total}"
    );
    let mempool = logs
        .lines()
        .find(|l| l.starts_with("Mempool "))
        .unwrap_or_else(|| panic!("no mempool line:\n{logs}"));
    assert!(
        mempool.contains(": all ") && mempool.ends_with(" mbufs back in the pool"),
        "{mempool}"
    );
    assert!(logs.contains("\nBye..."), "{logs}");
    eprintln!(
        "podman test: the virt pod ran and stopped in {:.1?}",
        started.elapsed()
    );
}

#[test]
fn the_shipped_virt_manifest_played_unchanged_says_no_devices() {
    let Some(s) = Session::start() else { return };
    let m = Manifest::read(pod_file("pod_testpmd_virt.yaml"));
    play_ok(&s, &m.file);
    let ctr = m.container_name();
    let logs = s.wait_logs(&ctr, 30, "'no devices' message", |l| {
        l.contains("testpmd: entrypoint mode: no devices:")
    });
    assert!(
        logs.contains("resources.requests"),
        "the message says what to request:\n{logs}"
    );
    // Without the device plugin's volume type, podman gives a plain directory:
    // doctor says so before testpmd starts.
    assert!(logs.contains("FAIL  hugetlbfs: "), "{logs}");
    // A usage error: exit status 2 (podman restarts it at once: OnFailure,
    // without the kubelet's backoff).
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.inspect(&ctr, "{{.State.ExitCode}}") != "2" {
        assert!(
            Instant::now() < deadline,
            "exit status: {}",
            s.inspect(&ctr, "{{.State.ExitCode}}")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.inspect(&ctr, "{{.HostConfig.RestartPolicy.Name}}"),
        "on-failure"
    );
}

#[test]
fn the_other_manifests_play_in_podman_without_a_rejected_field() {
    let Some(s) = Session::start() else { return };
    let others: Vec<Manifest> = Manifest::shipped()
        .into_iter()
        .filter(|m| {
            !m.file.ends_with("pod_testpmd_virt.yaml") && !m.file.ends_with("pod_memif.yaml")
        })
        .collect();
    assert_eq!(others.len(), 2, "{others:?}");
    for m in &others {
        let out = play_ok(&s, &m.file);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        // podman warns on stderr about what it does not take.
        assert!(
            said.trim().is_empty(),
            "podman kube play {}: {said}",
            m.file.display()
        );
        let ctr = m.container_name();
        // testpmd ran: the entrypoint's doctor summary, then testpmd's own words.
        let logs = s.wait_logs(&ctr, 30, "testpmd's start", |l| {
            l.lines().any(|l| l.starts_with("doctor: "))
                && l.lines()
                    .any(|l| l.starts_with("testpmd: ") || l.starts_with("Entrypoint mode"))
        });
        assert!(logs.contains("doctor: "), "{logs}");
        let caps = s.inspect(&ctr, "{{.EffectiveCaps}}");
        for cap in &m.caps_added {
            assert!(
                caps.contains(&format!("CAP_{cap}")),
                "{}: {cap} not in {caps}",
                m.file.display()
            );
        }
        assert_eq!(
            s.inspect(&ctr, "{{.HostConfig.Privileged}}"),
            m.privileged.to_string(),
            "{}",
            m.file.display()
        );
        // A crash restarts, an exit as asked stays down (every shipped manifest).
        assert_eq!(
            s.inspect(&ctr, "{{.HostConfig.RestartPolicy.Name}}"),
            "on-failure",
            "{}",
            m.file.display()
        );
        s.remove_pod(&m.pod).unwrap();
    }
}

#[test]
fn the_memif_pod_connects_its_two_containers_without_privileges_and_stops_cleanly() {
    let Some(s) = Session::start() else { return };
    let m = Manifest::read(pod_file("pod_memif.yaml"));
    // Played unchanged: the manifest needs no device plugin, hugepages or privileges.
    let out = play_ok(&s, &m.file);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.trim().is_empty(), "podman kube play: {said}");
    let server = format!("{}-memif-server", m.pod);
    let client = format!("{}-memif-client", m.pod);
    for ctr in [&server, &client] {
        assert_eq!(s.inspect(ctr, "{{.HostConfig.Privileged}}"), "false");
        assert_eq!(
            s.inspect(ctr, "{{.EffectiveCaps}}"),
            "[]",
            "{ctr}: capabilities dropped"
        );
    }
    // The server (rxonly) receives what the client (txonly) generates, through
    // the socket in the shared emptyDir and the memfd regions it carries.
    let received = |l: &str| {
        l.contains("NIC statistics for port 0")
            && last_count(block(l, "NIC statistics for port 0"), "RX-packets:") > 0
    };
    let logs = s.wait_logs(&server, 30, "frames from the client", received);
    assert!(logs.contains("role=server"), "{logs}");
    let logs = s.wait_logs(&client, 10, "frames sent", |l| {
        l.contains("NIC statistics for port 0")
            && last_count(block(l, "NIC statistics for port 0"), "TX-packets:") > 0
    });
    assert!(logs.contains("role=client"), "{logs}");

    // SIGTERM to both: final statistics, every mbuf back, exit status 0.
    s.must(&["pod", "stop", "-t", "30", &m.pod]);
    let mut totals = Vec::new();
    for ctr in [&server, &client] {
        let logs = s.logs(ctr);
        assert_eq!(s.inspect(ctr, "{{.State.ExitCode}}"), "0", "{ctr}:\n{logs}");
        let total = block(&logs, "Accumulated forward statistics for all ports");
        totals.push((
            last_count(total, "RX-packets:"),
            last_count(total, "TX-packets:"),
        ));
        let mempool = logs
            .lines()
            .find(|l| l.starts_with("Mempool "))
            .unwrap_or_else(|| panic!("{ctr}: no mempool line:\n{logs}"));
        assert!(
            mempool.contains(": all ") && mempool.ends_with(" mbufs back in the pool"),
            "{ctr}: {mempool}"
        );
    }
    let (server_rx, client_tx) = (totals[0].0, totals[1].1);
    assert!(server_rx > 0, "server received nothing");
    assert!(
        server_rx <= client_tx,
        "the server received {server_rx}, more than the client sent ({client_tx})"
    );
    s.remove_pod(&m.pod).unwrap();
}

#[test]
fn the_build_context_leaves_out_target_and_git() {
    let Some(s) = Session::start() else { return };
    // What `COPY . .` of the source stage receives from the repository root.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("Containerfile");
    std::fs::write(
        &file,
        format!(
            "FROM {}\nCOPY . /context\nRUN echo CONTEXT-BEGIN && cd /context && find . -path ./src -prune -o -path ./drivers -prune -o -print | sort && du -sk . && echo CONTEXT-END\n",
            containerfile_base()
        ),
    )
    .unwrap();
    let tag = "localhost/nicpoll-context-check:podman-test";
    let out = s.images(&[
        "build",
        "--pull=never",
        "--no-cache",
        "-f",
        file.to_str().unwrap(),
        "-t",
        tag,
        repo().to_str().unwrap(),
    ]);
    let _ = s.images(&["rmi", "-f", tag]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let listing =
        &said[said.find("\nCONTEXT-BEGIN\n").unwrap() + 15..said.rfind("\nCONTEXT-END").unwrap()];
    let paths: Vec<&str> = listing.lines().collect();
    assert!(
        paths.contains(&"./Cargo.toml") && paths.contains(&"./pod/Containerfile"),
        "{listing}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| *p == "./.git" || p.starts_with("./.git/")),
        "{listing}"
    );
    for p in paths.iter().filter(|p| p.starts_with("./target/")) {
        assert!(
            [
                "./target/debug",
                "./target/release",
                "./target/debug/testpmd",
                "./target/release/testpmd"
            ]
            .contains(p),
            "only the testpmd binaries come out of target/: {p}\n{listing}"
        );
    }
}

/// `testpmd doctor --json` in a container of the test's image run with
/// `options`: the `privileged` finding.
fn doctor_privileged(s: &Session, options: &[&str]) -> (String, String) {
    let image = s.test_image.clone().unwrap();
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "testpmd",
    ];
    args.extend_from_slice(options);
    args.extend_from_slice(&[image.as_str(), "doctor", "--json"]);
    let out = s.podman(&args);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("podman {}: {e}: {}", args.join(" "), text(&out)));
    let f = json
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "privileged")
        .unwrap_or_else(|| panic!("no privileged finding: {json}"));
    (
        f["status"].as_str().unwrap().to_string(),
        f["finding"].as_str().unwrap().to_string(),
    )
}

#[test]
fn doctor_tells_a_privileged_container_from_one_with_every_capability() {
    let Some(s) = Session::start() else { return };
    // What podman makes of --privileged on this machine, whatever its bounding set.
    let (status, finding) = doctor_privileged(&s, &["--privileged"]);
    assert_eq!(status, "PASS", "{finding}");
    assert!(
        finding.starts_with("a privileged container: no seccomp filter, "),
        "{finding}"
    );
    // The runtime's defaults: seccomp on, no devices of the machine, a short set.
    let (status, finding) = doctor_privileged(&s, &[]);
    assert_eq!(
        status, "PASS",
        "not needed without no-IOMMU devices: {finding}"
    );
    assert!(
        finding.starts_with(
            "not privileged: a seccomp filter is on (Seccomp: 2); 0 of the machine's "
        ),
        "{finding}"
    );
    assert!(finding.contains("lacks CAP_SYS_ADMIN"), "{finding}");
    // Every capability the runtime has, and still not privileged.
    let (_, finding) = doctor_privileged(&s, &["--cap-add", "ALL"]);
    assert!(
        finding.starts_with(
            "not privileged: a seccomp filter is on (Seccomp: 2); 0 of the machine's "
        ),
        "{finding}"
    );
    assert!(!finding.contains("bounding set"), "{finding}");
}
