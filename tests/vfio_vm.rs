//! Real VFIO in a QEMU guest: builds `tests/vfio_guest.rs` and runs it in a
//! guest of the project's harness (`tools/guest`), once with a vIOMMU (type1)
//! and once in no-IOMMU mode (including the pod rename of `/dev/vfio/noiommu-N`
//! to `/dev/vfio/N`).
//!
//! Each guest has a modern virtio-net and an e1000e, both bound to vfio-pci (two
//! groups in one container). When the machine cannot run the guest (no QEMU, no
//! Debian archive, ...) the tests skip through `nicpoll_testkit::skip`, saying
//! what is missing; under CI that fails the run. The harness's cache is
//! `NICPOLL_GUEST_CACHE` (default `~/.cache/nicpoll-guest`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nicpoll_guest::{Guest, Mode, Nic, Outcome};
use nicpoll_testkit::skip;

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

/// The guest both tests boot: virtio-net at 00:03.0 and e1000e at 00:04.0.
fn guest(mode: Mode) -> Guest {
    Guest::new()
        .mode(mode)
        .nic(Nic::virtio())
        .nic(Nic::e1000e())
        .timeout(Duration::from_secs(240))
}

fn run(guest: Guest, mode: &str) -> Outcome {
    let bin = match guest_binary() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    };
    let out = guest
        .program(bin, ["--ignored", "--test-threads=1", "--nocapture"])
        .run()
        .unwrap_or_else(|e| panic!("the guest harness: {e}"));
    eprintln!(
        "=== guest {mode}: status {:?} after {:.1} s\n{}",
        out.status, out.seconds, out.output
    );
    out
}

fn check_common(r: &Outcome, mode: &str) {
    assert_eq!(r.status, Some(0), "{mode} guest run failed: {}", r.report());
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
    // A 48-bit vIOMMU, so IOVA = VA fits (QEMU's default is 39 bits).
    let g = guest(Mode::Type1)
        .qemu_arg("-global")
        .qemu_arg("intel-iommu.aw-bits=48")
        .env("NICPOLL_TEST_EXPECT_VA", "1");
    if let Some(why) = g.missing() {
        return skip(why);
    }
    let r = run(g, "type1");
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
    let g = guest(Mode::NoIommu).env("NICPOLL_TEST_POD_RENAME", "1");
    if let Some(why) = g.missing() {
        return skip(why);
    }
    let r = run(g, "noiommu");
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
