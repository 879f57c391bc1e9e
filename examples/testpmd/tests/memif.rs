//! testpmd with `--vdev net_memifN`: two testpmd processes connected by
//! memif, started exactly as `pod/pod_memif.yaml` starts its two containers
//! (the entrypoint in entrypoint mode, with each container's
//! NICPOLL_EAL_ARGS and NICPOLL_APP_ARGS), the shared volume being a
//! directory of the test's.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The value of environment variable `var` of container `container` in the
/// manifest (a plain reading of the pod's YAML, enough for this file).
fn container_env(manifest: &str, container: &str, var: &str) -> String {
    let start = manifest
        .find(&format!("- name: {container}"))
        .unwrap_or_else(|| panic!("no container {container}"));
    let rest = &manifest[start..];
    let at = rest
        .find(&format!("- name: {var}"))
        .unwrap_or_else(|| panic!("no {var} in {container}"));
    let line = rest[at..]
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{var} has no value line"));
    let v = line
        .trim()
        .strip_prefix("value:")
        .expect("value: line")
        .trim();
    v.trim_matches('"').to_string()
}

/// One container of the pod: the entrypoint with the manifest's variables,
/// the volume at `dir`, metrics on a free loopback port, a bounded run.
fn container(manifest: &str, name: &str, dir: &str, run_time: u32) -> Child {
    let eal = container_env(manifest, name, "NICPOLL_EAL_ARGS")
        .replace("/run/memif/", &format!("{dir}/"));
    let app = container_env(manifest, name, "NICPOLL_APP_ARGS");
    let app: Vec<String> = app
        .split_whitespace()
        .map(|a| {
            if a.starts_with("--metrics=") {
                "--metrics=127.0.0.1:0".to_string()
            } else {
                a.to_string()
            }
        })
        .collect();
    let app = format!(
        "{} --run-time={run_time} --stats-format=json",
        app.join(" ")
    );
    Command::new("sh")
        .arg(repo().join("pod/entrypoint.sh"))
        .env("TESTPMD", env!("CARGO_BIN_EXE_testpmd"))
        .env(
            "NICPOLL_DOCTOR",
            container_env(manifest, name, "NICPOLL_DOCTOR"),
        )
        .env("NICPOLL_EAL_ARGS", eal)
        .env("NICPOLL_APP_ARGS", app)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the entrypoint starts")
}

fn final_total(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("\"event\":\"final\""))
        .unwrap_or_else(|| {
            panic!(
                "no final statistics:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str::<serde_json::Value>(line).unwrap()["total"].clone()
}

#[test]
fn the_memif_pod_s_two_containers_exchange_every_frame() {
    let manifest = std::fs::read_to_string(repo().join("pod/pod_memif.yaml")).unwrap();
    let dir = std::env::temp_dir().join(format!("nicpoll-memif-pod-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap().to_string();
    // The client first: it must wait for the server by itself.
    let client = container(&manifest, "memif-client", &d, 4);
    std::thread::sleep(Duration::from_millis(700));
    let server = container(&manifest, "memif-server", &d, 8);
    let deadline = Instant::now() + Duration::from_secs(60);
    let client = client.wait_with_output().unwrap();
    let server = server.wait_with_output().unwrap();
    assert!(Instant::now() < deadline);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        client.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert_eq!(
        server.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&server.stderr)
    );
    let sent = final_total(&client)["tx_packets"].as_u64().unwrap();
    let got = final_total(&server)["rx_packets"].as_u64().unwrap();
    let errors = final_total(&server)["rx_errors"].as_u64().unwrap();
    assert!(sent > 10_000, "the client sent only {sent} frames");
    // The client stopped first, so the server drained every frame it sent.
    assert_eq!(got, sent, "frames lost between the containers");
    assert_eq!(errors, 0);
    let slog = String::from_utf8_lossy(&server.stderr);
    let clog = String::from_utf8_lossy(&client.stderr);
    assert!(
        clog.contains("no memif server listens") || slog.contains("connected"),
        "{clog}\n{slog}"
    );
}
