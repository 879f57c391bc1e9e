//! Real VFIO in a QEMU guest: builds `tests/vfio_guest.rs` and runs it inside
//! `../shared/lab/vfio-vm.sh`, once with a vIOMMU (type1) and once in no-IOMMU
//! mode (including the pod rename of `/dev/vfio/noiommu-N` to `/dev/vfio/N`).
//!
//! Each guest has a modern virtio-net and an e1000e, both bound to vfio-pci (two
//! groups in one container). Skipped, with the reason printed, when
//! `qemu-system-x86_64` or the harness is missing (Debian: `apt-get install
//! qemu-system-x86 cpio xz-utils python3 file`; the no-IOMMU run also builds
//! vfio.ko once with `make gcc-12 libelf1`). `VFIO_VM_SCRIPT` overrides the
//! harness path, `VFIO_VM_CACHE` its download cache.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn script() -> PathBuf {
    std::env::var_os("VFIO_VM_SCRIPT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/lab/vfio-vm.sh"),
        PathBuf::from,
    )
}

/// Why the guest runs cannot happen here, if they cannot.
fn skip_reason(mode: &str) -> Option<String> {
    if !on_path("qemu-system-x86_64") {
        return Some(
            "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".into(),
        );
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

/// Build the guest test binary; its path comes from cargo's JSON messages.
fn guest_binary() -> &'static Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let t = Instant::now();
        // --workspace: the same feature set as `cargo test --workspace`, so the
        // binary it already built is reused.
        let out = Command::new(cargo)
            .args([
                "test",
                "--workspace",
                "--no-run",
                "--test",
                "vfio_guest",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map_err(|e| format!("running cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo test --no-run --test vfio_guest failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let exe = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "vfio_guest")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or("no vfio_guest executable in cargo's output")?;
        eprintln!(
            "built {} in {:.1} s",
            exe.display(),
            t.elapsed().as_secs_f64()
        );
        Ok(exe)
    })
}

struct GuestRun {
    status: i32,
    output: String,
    console: String,
}

fn run_guest(mode: &str, extra: &[&str]) -> GuestRun {
    let bin = match guest_binary() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let log =
        std::env::temp_dir().join(format!("nicpoll-vfio-vm-{mode}-{}.log", std::process::id()));
    let t = Instant::now();
    let out = Command::new("bash")
        .arg(script())
        .args([
            "--mode",
            mode,
            "--nic",
            "virtio",
            "--nic",
            "e1000e",
            "--timeout",
            "240",
        ])
        .arg("--log")
        .arg(&log)
        .args(extra)
        .arg("--")
        .arg(bin)
        .args(["--ignored", "--test-threads=1", "--nocapture"])
        .output()
        .expect("running vfio-vm.sh");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "=== guest {mode}: exit {:?} after {:.1} s\n{output}",
        out.status.code(),
        t.elapsed().as_secs_f64()
    );
    GuestRun {
        status: out.status.code().unwrap_or(-1),
        output,
        console,
    }
}

fn check_common(r: &GuestRun, mode: &str) {
    assert_eq!(
        r.status, 0,
        "{mode} guest run failed:\n{}\n--- console:\n{}",
        r.output, r.console
    );
    assert!(
        r.output.contains("test result: ok. 5 passed; 0 failed"),
        "{mode}: the five guest tests must run and pass:\n{}",
        r.output
    );
    assert!(
        r.output.contains("e1000e ARP round trip through DMA"),
        "{}",
        r.output
    );
}

#[test]
fn vfio_in_guest_type1() {
    if let Some(why) = skip_reason("type1") {
        eprintln!("skipped: {why}");
        return;
    }
    // A 48-bit vIOMMU, so IOVA = VA fits (QEMU's default is 39 bits).
    let r = run_guest(
        "type1",
        &[
            "--qemu",
            "-global intel-iommu.aw-bits=48",
            "--env",
            "VFIO_VM_EXPECT_VA=1",
        ],
    );
    check_common(&r, "type1");
    assert!(r.output.contains("IOVA mode Va"), "{}", r.output);
    assert!(r.output.contains("IOVA = PA on type1"), "{}", r.output);
    let faults: Vec<&str> = r
        .console
        .lines()
        .filter(|l| l.contains("DMAR:") && l.to_lowercase().contains("fault"))
        .collect();
    assert!(
        faults.is_empty(),
        "IOMMU faults in the guest:\n{}",
        faults.join("\n")
    );
    assert!(
        r.output
            .contains("kernel log: DMAR enabled, no DMAR faults"),
        "{}",
        r.output
    );
}

#[test]
fn vfio_in_guest_noiommu_and_pod_rename() {
    if let Some(why) = skip_reason("noiommu") {
        eprintln!("skipped: {why}");
        return;
    }
    let r = run_guest("noiommu", &["--env", "VFIO_VM_POD_RENAME=1"]);
    check_common(&r, "noiommu");
    assert!(r.output.contains("IOVA mode Pa"), "{}", r.output);
    assert!(
        r.output
            .contains("pod rename: 0000:00:03.0 opened through /dev/vfio/"),
        "{}",
        r.output
    );
    assert!(r.output.contains("without CAP_SYS_RAWIO"), "{}", r.output);
    assert!(
        r.output.contains("vfio-noiommu device opened by user"),
        "{}",
        r.output
    );
}
