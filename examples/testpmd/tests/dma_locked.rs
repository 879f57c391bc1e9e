//! DMA memory stays in RAM: a running testpmd's mbuf pool, as the kernel
//! accounts it in /proc/PID/status and /proc/PID/smaps.
//!
//! What the kernel shows depends on the memory. mlock(2) on a hugetlbfs
//! mapping sets no VM_LOCKED and is not counted in VmLck (Linux
//! mm/mlock.c, mlock_fixup(): "don't set VM_LOCKED or VM_LOCKONFAULT and
//! don't count" for is_vm_hugetlb_page()), because hugetlb pages are never
//! swapped out (Documentation/admin-guide/mm/hugetlbpage.rst). So a DMA
//! mapping counts as locked when it is either hugetlb (VmFlags `ht`) with
//! every page present (Shared_Hugetlb + Private_Hugetlb = Size), or mlocked
//! (VmFlags `lo`, Locked = Size); in both cases nothing of it is in swap. The
//! locked mappings together must hold the pool (n × stride, as testpmd
//! announces it), and HugetlbPages + VmLck must cover it too.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nicpoll_testkit::{Need, skip_if_missing};

/// One mapping of /proc/PID/smaps: its path and the fields we read (kB).
#[derive(Debug, Default)]
struct Mapping {
    path: String,
    size: u64,
    hugetlb: u64,
    locked: u64,
    swap: u64,
    flags: Vec<String>,
}

fn smaps(pid: u32) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut maps: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        // A mapping's header: "start-end perms offset dev inode [path]".
        if first.contains('-') && !first.ends_with(':') {
            maps.push(Mapping {
                path: f.nth(4).unwrap_or("").to_string(),
                ..Mapping::default()
            });
            continue;
        }
        let Some(m) = maps.last_mut() else { continue };
        let kb = || {
            f.clone()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match first {
            "Size:" => m.size = kb(),
            "Shared_Hugetlb:" | "Private_Hugetlb:" => m.hugetlb += kb(),
            "Locked:" => m.locked = kb(),
            "Swap:" => m.swap = kb(),
            "VmFlags:" => m.flags = f.map(str::to_string).collect(),
            _ => {}
        }
    }
    maps
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

#[test]
fn a_running_testpmds_mbuf_pool_is_locked_in_memory() {
    // 4096 mbufs of 2 KiB and the rings: five 2 MiB pages; some to spare.
    if skip_if_missing(&[Need::Hugetlbfs, Need::FreeHugepages(16)]) {
        return;
    }
    let mount = nicpoll_testkit::hugetlbfs_mount().expect("checked above");
    let prefix = format!("nplck{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_testpmd"))
        .args(["-l", "0,1", "--file-prefix", &prefix, "--huge-dir"])
        .arg(&mount)
        .args(["--vdev=net_null0", "--vdev=net_null1", "--"])
        .args(["--run-time=30", "--total-num-mbufs=4096"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Read until forwarding starts; the pool line comes before.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pool_bytes = None;
    while Instant::now() < deadline {
        let Some(Ok(l)) = lines.next() else { break };
        seen += &l;
        seen.push('\n');
        if let Some(rest) = l.split_once("create a new mbuf pool").map(|(_, r)| r) {
            let num = |key: &str| -> u64 {
                rest.split(&format!("{key}="))
                    .nth(1)
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                    .unwrap_or_else(|| panic!("no {key}= in {l}"))
            };
            pool_bytes = Some(num("n") * num("stride"));
        }
        if l.contains("packet forwarding packets/burst") {
            break;
        }
    }
    let Some(pool_bytes) = pool_bytes else {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = child.wait();
        panic!("testpmd announced no mbuf pool: {seen}");
    };
    let ours: Vec<Mapping> = smaps(pid)
        .into_iter()
        .filter(|m| m.path.starts_with(&format!("{}/{prefix}", mount.display())))
        .collect();
    let (vm_lck, hugetlb_pages) = (status_kb(pid, "VmLck"), status_kb(pid, "HugetlbPages"));
    // SIGTERM, not SIGKILL: testpmd then removes its hugepage files.
    std::thread::spawn(move || for _ in lines {});
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        term.is_ok_and(|s| s.success()) && status.success(),
        "testpmd: {status}"
    );

    assert!(!ours.is_empty(), "no mapping of {prefix}* files: {seen}");
    let mut locked_kb = 0;
    for m in &ours {
        let hugetlb = m.flags.iter().any(|f| f == "ht") && m.hugetlb == m.size;
        let mlocked = m.flags.iter().any(|f| f == "lo") && m.locked == m.size;
        assert!(
            hugetlb || mlocked,
            "{m:?}: neither hugetlb with every page present nor mlocked"
        );
        assert_eq!(m.swap, 0, "{m:?}: in swap");
        locked_kb += m.size;
    }
    assert!(
        locked_kb * 1024 >= pool_bytes,
        "locked DMA mappings {locked_kb} kB < the pool's {pool_bytes} bytes: {ours:?}"
    );
    assert!(
        (hugetlb_pages + vm_lck) * 1024 >= pool_bytes,
        "HugetlbPages {hugetlb_pages} kB + VmLck {vm_lck} kB < the pool's {pool_bytes} bytes"
    );
}
