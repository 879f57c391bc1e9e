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

/// A fake pod root for `NICPOLL_ROOT`: a cgroup v2 cpuset of the first two
/// CPUs this process may use (so testpmd can pin to them), no hugepages.
fn fake_pod_root(cpus: &[usize]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: String| {
        let p = d.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("proc/self/cgroup", "0::/kubepods/pod1/ctr\n".into());
    write(
        "sys/fs/cgroup/kubepods/pod1/ctr/cpuset.cpus.effective",
        format!("{},{}\n", cpus[0], cpus[1]),
    );
    write("proc/mounts", String::new());
    d
}

/// The CPUs this process may use, from /proc/self/status (not our parser).
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// The CPUs this process may use and a fake pod root whose cpuset is the
/// first two of them; `None` (after a skip) where there are fewer than two.
fn pod_of_two_cpus() -> Option<(Vec<usize>, tempfile::TempDir)> {
    let cpus = allowed_cpus();
    if cpus.len() < 2 {
        nicpoll_testkit::skip("two CPUs this process may use (a main and a forwarding lcore)");
        return None;
    }
    let root = fake_pod_root(&cpus);
    Some((cpus, root))
}

/// Runs the entrypoint script in entrypoint mode (no arguments) with the real
/// testpmd, a fake pod root and `NICPOLL_EAL_ARGS`.
fn entrypoint_mode(root: &std::path::Path, eal_args: &str) -> std::process::Output {
    Command::new("sh")
        .arg(pod_dir().join("entrypoint.sh"))
        .env("TESTPMD", env!("CARGO_BIN_EXE_testpmd"))
        .env("NICPOLL_ROOT", root)
        .env("NICPOLL_DOCTOR", "off")
        .env("NICPOLL_EAL_ARGS", eal_args)
        .env("NICPOLL_APP_ARGS", "--forward-mode=io --run-time=1")
        .env_remove("NICPOLL_ENTRYPOINT")
        .output()
        .unwrap()
}

#[test]
fn entrypoint_mode_takes_software_ports_from_nicpoll_eal_args_and_the_pods_cores() {
    let Some((cpus, root)) = pod_of_two_cpus() else {
        return;
    };
    let out = entrypoint_mode(root.path(), "--no-huge --vdev net_null0 --vdev net_null1");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("Entrypoint mode: configuration derived from the pod"),
        "{text}"
    );
    assert!(
        text.contains("devices: none in PCIDEVICE_* variables"),
        "{text}"
    );
    assert!(
        text.contains("port --vdev net_null0 from the command line (NICPOLL_EAL_ARGS)"),
        "{text}"
    );
    // The cores are the fake pod's cpuset, not every CPU we may use.
    let (main, fwd) = (cpus[0], cpus[1]);
    assert!(
        text.contains(&format!("main lcore {main}, forwarding {fwd}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Logical Core {fwd} (CPU {fwd}) forwards")),
        "{text}"
    );
    assert!(
        text.contains("all ") && text.contains(" mbufs back in the pool"),
        "{text}"
    );
}

#[test]
fn entrypoint_mode_without_devices_or_ports_says_no_devices_and_exits_2() {
    let Some((_, root)) = pod_of_two_cpus() else {
        return;
    };
    let out = entrypoint_mode(root.path(), "--no-huge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("testpmd: entrypoint mode: no devices:"),
        "{err}"
    );
    assert!(err.contains("resources.requests"), "{err}");
    // Run by hand with software ports (no NICPOLL_ENTRYPOINT), the same
    // command line is explicit: no entrypoint mode.
    let out = Command::new(env!("CARGO_BIN_EXE_testpmd"))
        .args([
            "--no-huge",
            "--vdev",
            "net_null0",
            "--vdev",
            "net_null1",
            "--",
            "--run-time=1",
        ])
        .env("NICPOLL_ROOT", root.path())
        .env_remove("NICPOLL_ENTRYPOINT")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("Entrypoint mode"), "{text}");
}
