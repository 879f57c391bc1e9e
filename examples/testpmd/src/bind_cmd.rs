//! `testpmd bind BDF [--force]`: bind a PCI device to vfio-pci (being written).

use std::process::ExitCode;

/// Run `testpmd bind`.
pub fn run(_args: &[String]) -> ExitCode {
    eprintln!("testpmd bind: not available yet");
    ExitCode::from(2)
}
