//! The pod/ directory: the entrypoint script's own tests and the offline
//! validation of every manifest (yamllint, kubernetes-validate, config.json).

use std::path::PathBuf;
use std::process::Command;

fn pod_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../pod")
}

#[test]
fn entrypoint_script_tests_pass() {
    let out = Command::new("bash")
        .arg(pod_dir().join("tests/entrypoint_test.sh"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");
}

#[test]
fn manifests_validate_offline() {
    if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Command("python3")]) {
        return;
    }
    // One virtualenv per user: another user's cannot be run (its python is theirs).
    let venv = std::env::var_os("NICPOLL_VENV").unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("nicpoll-pod-venv-{}", nicpoll_testkit::euid()))
            .into()
    });
    let out = Command::new("bash")
        .arg(pod_dir().join("tests/validate.sh"))
        .env("NICPOLL_VENV", venv)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // pip's own words, printed while validate.sh installs the tools and before
    // it reads any manifest.
    if !out.status.success()
        && (text.contains("No matching distribution") || text.contains("Could not find a version"))
    {
        return nicpoll_testkit::skip(format!(
            "PyPI, to install yamllint and kubernetes-validate:\n{text}"
        ));
    }
    assert!(out.status.success(), "{text}");
    assert!(text.contains("manifests valid:"), "{text}");
    assert!(!text.contains("did not validate"), "{text}");
}

#[test]
fn entrypoint_runs_the_real_testpmd_and_passes_sigterm_through() {
    // With arguments, the entrypoint execs testpmd as given; SIGTERM to the
    // container's PID 1 (the exec'd testpmd) ends it cleanly with status 0.
    let child = Command::new("sh")
        .arg(pod_dir().join("entrypoint.sh"))
        .args([
            "--no-huge",
            "-l",
            "0,1",
            "--vdev=net_null0",
            "--vdev=net_null1",
            "--",
            "--run-time=30",
        ])
        .env("TESTPMD", env!("CARGO_BIN_EXE_testpmd"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Telling cores to stop (signal)"), "{text}");
}
