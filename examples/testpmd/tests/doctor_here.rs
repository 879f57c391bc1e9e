//! `testpmd doctor` once on this machine's real /proc, /sys and /dev (no fake
//! root): what it reports is compared with what this test reads from the
//! kernel itself (/proc/meminfo, /proc/self/mounts, /proc/self/status,
//! /sys/devices/system/cpu/online, /sys/module, /dev/vfio). The fake trees of
//! `doctor.rs` test the rules; this tests that the real files are read right.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// testpmd doctor with `args`, without NICPOLL_ROOT or the device plugin's
/// variables from our environment (only PATH is kept).
fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_testpmd"))
        .arg("doctor")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("testpmd doctor runs")
}

/// One "Key: value" line of a /proc file.
fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {file}"))
        .trim()
        .to_string()
}

fn meminfo(key: &str) -> u64 {
    proc_field("/proc/meminfo", key)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A kernel CPU list ("0-3,8,10-11") as the CPUs it names.
fn cpu_list(s: &str) -> Vec<usize> {
    s.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|p| match p.split_once('-') {
            Some((a, b)) => a.parse().unwrap()..=b.parse().unwrap(),
            None => p.parse().unwrap()..=p.parse().unwrap(),
        })
        .collect()
}

/// A hugepage size in kB as the kernel's hugepages-N folders and doctor name it.
fn size_name(kib: u64) -> String {
    match kib {
        k if k % (1 << 20) == 0 => format!("{} GiB", k >> 20),
        k if k % 1024 == 0 => format!("{} MiB", k >> 10),
        k => format!("{k} KiB"),
    }
}

#[test]
fn doctor_on_this_machine_reports_what_the_kernel_says() {
    let free_before = meminfo("HugePages_Free");
    let json = doctor(&["--json"]);
    let free_after = meminfo("HugePages_Free");
    let findings: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&json.stdout),
            String::from_utf8_lossy(&json.stderr)
        )
    });
    let by_check: BTreeMap<&str, (&str, &str)> = findings
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap(),
                (
                    f["status"].as_str().unwrap(),
                    f["finding"].as_str().unwrap(),
                ),
            )
        })
        .collect();
    let get = |check: &str| {
        *by_check
            .get(check)
            .unwrap_or_else(|| panic!("no {check} check in {findings:#?}"))
    };

    // Exit status: 1 exactly when a check fails.
    let fails = findings.iter().filter(|f| f["status"] == "FAIL").count();
    assert_eq!(
        json.status.code(),
        Some(i32::from(fails > 0)),
        "{findings:#?}"
    );

    // No -a and no device plugin variables: no device.
    assert_eq!(get("devices").0, "WARN");
    assert!(
        get("devices").1.starts_with("no PCI device"),
        "{:?}",
        get("devices")
    );

    // Hugepages, from /proc/meminfo.
    let (status, finding) = get("hugepages");
    let total = meminfo("HugePages_Total");
    let size = size_name(meminfo("Hugepagesize"));
    assert!(
        finding.starts_with(&format!("HugePages_Total {total}, HugePages_Free ")),
        "{finding}"
    );
    assert!(
        finding.contains(&format!(", Hugepagesize {size}")),
        "{finding}"
    );
    let shown_free: u64 = finding
        .split("HugePages_Free ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{finding}"));
    // Other users of the machine may take or give back pages meanwhile.
    let (lo, hi) = (free_before.min(free_after), free_before.max(free_after));
    assert!(
        (lo..=hi).contains(&shown_free),
        "{finding}: /proc/meminfo said {lo}..={hi}"
    );
    if lo > 0 {
        assert_eq!(status, "PASS", "{finding}");
    } else if hi == 0 {
        assert_ne!(status, "PASS", "{finding}");
    }

    // hugetlbfs mounts, from /proc/self/mounts.
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        .collect();
    let (status, finding) = get("hugetlbfs");
    if mounts.is_empty() {
        assert_eq!(status, "FAIL", "{finding}");
    } else {
        assert!(
            mounts.iter().any(|m| finding.contains(m.as_str())),
            "{finding} names none of {mounts:?}"
        );
    }

    // CPUs, from /proc/self/status (testpmd inherits our affinity) and sysfs.
    let ours = proc_field("/proc/self/status", "Cpus_allowed_list");
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let (status, finding) = get("cpu-set");
    assert!(
        finding.starts_with(&format!(
            "CPUs {ours} (Cpus_allowed_list) of {} online ({})",
            cpu_list(&online).len(),
            online.trim()
        )),
        "{finding}"
    );
    assert_eq!(status == "FAIL", cpu_list(&ours).len() < 2, "{finding}");

    // Capabilities, from our CapEff (testpmd runs with the same).
    let eff = u64::from_str_radix(&proc_field("/proc/self/status", "CapEff"), 16).unwrap();
    let init_userns = std::fs::read_to_string("/proc/self/uid_map")
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        == ["0", "0", "4294967295"];
    for (name, bit) in [
        ("IPC_LOCK", 14),
        ("SYS_RAWIO", 17),
        ("NET_RAW", 13),
        ("SYS_ADMIN", 21),
    ] {
        let (status, finding) = get(&format!("capability {name}"));
        if eff & (1 << bit) != 0 && (init_userns || name == "NET_RAW") {
            assert_eq!(
                (status, finding.starts_with(&format!("CAP_{name} held"))),
                ("PASS", true),
                "{finding}"
            );
        } else if eff & (1 << bit) == 0 {
            assert!(
                finding.contains(&format!("CAP_{name} not held")),
                "{finding}"
            );
        }
    }

    // VFIO, from /sys/module and /dev/vfio.
    let loaded = |m: &str| Path::new(&format!("/sys/module/{m}")).exists();
    let (status, finding) = get("vfio-modules");
    let vfio_pci = loaded("vfio_pci") || Path::new("/sys/bus/pci/drivers/vfio-pci").is_dir();
    if loaded("vfio") && vfio_pci {
        assert_eq!((status, finding), ("PASS", "vfio and vfio_pci are loaded"));
    } else {
        assert!(finding.contains("not loaded"), "{finding}");
        assert_eq!(
            finding.contains("vfio and vfio_pci"),
            !loaded("vfio") && !vfio_pci
        );
    }
    let finding = get("vfio-container").1;
    assert_eq!(
        finding.contains("/dev/vfio/vfio does not exist"),
        !Path::new("/dev/vfio/vfio").exists(),
        "{finding}"
    );

    // The text report says the same, line for line, and counts it.
    let text = doctor(&[]);
    assert_eq!(text.status.code(), json.status.code());
    let text = String::from_utf8(text.stdout).unwrap();
    for f in &findings {
        let line = format!(
            "{:<4}  {}: ",
            f["status"].as_str().unwrap(),
            f["check"].as_str().unwrap()
        );
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "no {line:?} in\n{text}"
        );
    }
    let count = |s: &str| findings.iter().filter(|f| f["status"] == s).count();
    let summary = format!(
        "doctor: {} checks, {} PASS, {} WARN, {} FAIL",
        findings.len(),
        count("PASS"),
        count("WARN"),
        count("FAIL")
    );
    assert_eq!(text.lines().last(), Some(summary.as_str()), "{text}");
}
