//! `testpmd bind [--force] BDF...`: hand PCI devices to vfio-pci through
//! `driver_override`, as `driverctl set-override BDF vfio-pci` does, refusing a
//! device whose kernel interface is up with routes unless `--force`.
//! `testpmd bind --unbind BDF...` gives them back to their kernel driver.
//!
//! Exit status: 0 when every device ended where asked, 2 for a usage error, 1
//! when a device could not be (un)bound (the message says why and the fix).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use nicpoll::pci::bind::{BindOptions, bind_vfio, unbind_vfio};
use nicpoll::pci::{PciAddress, Sysfs};

/// The `bind` subcommand's options.
#[derive(Parser, Debug)]
#[command(
    name = "testpmd bind",
    about = "Bind PCI devices to vfio-pci (driver_override), so testpmd can use them with -a",
    disable_version_flag = true
)]
struct BindArgs {
    /// Bind even if the device's kernel interface is up and routes traffic.
    #[arg(long)]
    force: bool,
    /// Give the devices back to their kernel driver instead.
    #[arg(long, conflicts_with = "force")]
    unbind: bool,
    /// Root of sysfs and procfs (for tests; default /).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// PCI addresses, e.g. 0000:00:03.0 or 00:03.0.
    #[arg(value_name = "BDF", required = true)]
    devices: Vec<String>,
}

/// Run `testpmd bind` with the arguments after `bind`.
pub fn run(args: &[String]) -> ExitCode {
    let a = match BindArgs::try_parse_from(
        std::iter::once("testpmd bind".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let mut addrs: Vec<PciAddress> = Vec::new();
    for d in &a.devices {
        match PciAddress::parse(d) {
            Ok(p) => addrs.push(p),
            Err(e) => {
                eprintln!("testpmd bind: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let sysfs = Sysfs::new(&a.root);
    let mut failed = 0;
    for addr in &addrs {
        let result = if a.unbind {
            unbind_vfio(&sysfs, addr).map(|now| match now {
                Some(d) => format!("{addr}: unbound from vfio-pci, now bound to {d}"),
                None => format!("{addr}: unbound from vfio-pci, now without a driver"),
            })
        } else {
            bind_vfio(&sysfs, addr, BindOptions { force: a.force }).map(|r| {
                let group = sysfs
                    .device(addr)
                    .ok()
                    .and_then(|d| d.iommu_group)
                    .map_or(String::new(), |g| format!(", IOMMU group {g}"));
                if r.already_bound {
                    format!("{addr}: already bound to vfio-pci{group}")
                } else {
                    format!(
                        "{addr}: bound to vfio-pci (was {}){group}; use it with `testpmd -a {addr} ...`",
                        r.previous_driver.as_deref().unwrap_or("without a driver")
                    )
                }
            })
        };
        match result {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("testpmd bind: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
