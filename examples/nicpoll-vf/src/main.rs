//! `nicpoll-vf`: the VFs of one simulated Intel PF (an X710 under i40e by
//! default, an X722, or an E810 under ice) served as PCI devices over
//! vfio-user, so that a QEMU guest gets them as `vfio-user-pci` devices and
//! Linux's iavf, DPDK's net_iavf and nicpoll's own driver (through VFIO in the
//! guest) drive them as they would real VFs.
//!
//! ```text
//! nicpoll-vf --vf SOCKET [--vf SOCKET ...] [--uplink IFACE] [--pf i40e|x722|ice]
//! ```
//!
//! VF i is served on the i-th socket. The VFs are switched as the PF's
//! embedded switch does (by destination MAC; broadcast and multicast to all
//! others); `--uplink` is the PF's physical port on a host interface: frames
//! for other MACs leave there, frames arriving there reach the VF they are
//! for. It prints what it serves, and a line of counters per VF on SIGUSR1
//! and at exit; SIGUSR2 resets the PF (every VF gets a RESET_IMPENDING
//! event, then a VF reset, as i40e's PF reset does); SIGINT and SIGTERM end
//! it.
#![forbid(unsafe_code)]

mod backend;
mod config_space;
mod guard;
mod irq;
mod memory;
mod msg;
mod server;
mod stats;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use nicpoll::port::MacAddr;
use nicpoll_iavf::sim::{PfModel, SimConfig, SimPf, SimVf, Switch};

use crate::backend::VfBackend;
use crate::irq::Interrupts;
use crate::stats::VfStats;

/// The VFs of one simulated Intel PF served over vfio-user.
#[derive(Parser, Debug)]
#[command(name = "nicpoll-vf", version)]
struct Args {
    /// Serve the next VF on this unix socket (QEMU: `-device
    /// vfio-user-pci,socket=SOCKET`). Repeat for more VFs (up to 16).
    #[arg(long = "vf", value_name = "SOCKET", required = true)]
    vfs: Vec<PathBuf>,
    /// The PF's physical port: a host interface (AF_PACKET, needs
    /// CAP_NET_RAW). Without it, frames for no VF are dropped and counted.
    #[arg(long, value_name = "IFACE")]
    uplink: Option<String>,
    /// The PF: i40e (X710), x722 (X722 under i40e) or ice (E810).
    #[arg(long, default_value = "i40e", value_name = "i40e|x722|ice")]
    pf: PfModel,
    /// Link speed the PF reports, in Mb/s (default: 10000 for i40e and x722,
    /// 100000 for ice).
    #[arg(long, value_name = "MBPS")]
    speed: Option<u32>,
    /// Queue pairs per VF (default: 4 for i40e and x722, i40e's default; 16
    /// for ice).
    #[arg(long, value_name = "N")]
    queues: Option<u16>,
    /// The VFs are trusted (`ip link set PF vf N trust on`): promiscuous
    /// mode takes effect, any number of MAC filters.
    #[arg(long)]
    trusted: bool,
    /// Anti-spoof check of the source MAC on transmit (`spoofchk`).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    spoofchk: String,
}

/// VF `i`'s MAC, as the host administrator set it: 02:00:00:56:46:<i>
/// ("VF"), locally administered.
fn vf_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0x00, 0x00, 0x56, 0x46, i as u8])
}

fn main() -> ExitCode {
    let _ = env_logger::Builder::new()
        .parse_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .try_init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nicpoll-vf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one served VF is made of.
struct Served {
    path: PathBuf,
    sim: Arc<SimVf>,
    irqs: Arc<Interrupts>,
    stats: Arc<VfStats>,
}

fn run(args: Args) -> Result<(), String> {
    if args.vfs.len() > 16 {
        return Err(format!(
            "{} VFs: a simulated PF serves at most 16 here",
            args.vfs.len()
        ));
    }
    let pf = args.pf;
    let speed = args
        .speed
        .unwrap_or(if pf.is_ice() { 100_000 } else { 10_000 });
    // i40e gives a VF 4 queue pairs and 5 vectors (`I40E_DEFAULT_QUEUES_PER_VF`,
    // the 700 series' `num_msix_vectors_vf`); ice 16 and 17
    // (`ICE_MAX_RSS_QS_PER_VF`, `ICE_NUM_VF_MSIX_MED`).
    let queues = args.queues.unwrap_or(if pf.is_ice() { 16 } else { 4 });
    let vectors: u16 = if pf.is_ice() { 17 } else { 5 };
    let stop = Arc::new(AtomicBool::new(false));
    let dump = Arc::new(AtomicBool::new(false));
    let pf_reset = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("installing the handler of signal {sig}: {e}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, dump.clone())
        .map_err(|e| format!("installing the SIGUSR1 handler: {e}"))?;
    signal_hook::flag::register(signal_hook::consts::SIGUSR2, pf_reset.clone())
        .map_err(|e| format!("installing the SIGUSR2 handler: {e}"))?;

    let switch = Switch::new("pf0", args.uplink.as_deref()).map_err(|e| {
        let iface = args.uplink.as_deref().unwrap_or("?");
        let hint = match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => {
                " (AF_PACKET needs CAP_NET_RAW: run as root or grant the capability)"
            }
            Some(libc::ENODEV) => " (no such interface: check the name with `ip link`)",
            _ => "",
        };
        format!("opening the uplink on {iface}: {e}{hint}")
    })?;
    // One polling thread serves every VF, as one adapter moves the queues of
    // all its VFs (and as testpmd's simulated VFs of one PF are served).
    let sim_pf =
        SimPf::new("pf0", pf).map_err(|e| format!("starting the simulated PF's thread: {e}"))?;
    let mut served = Vec::new();
    for (i, path) in args.vfs.iter().enumerate() {
        let sim = Arc::new(
            sim_pf
                .add_vf(SimConfig {
                    name: format!("vf{i}"),
                    mac: vf_mac(i),
                    queue_pairs: queues,
                    trusted: args.trusted,
                    spoofchk: args.spoofchk == "on",
                    link_speed_mbps: speed,
                    pf,
                    max_vectors: vectors,
                    vsi_id: 17 + i as u16,
                    // The guest maps the tail doorbells (backend::server_regions).
                    shared_doorbells: true,
                    ..SimConfig::default()
                })
                .map_err(|e| format!("VF {i}: {e}"))?,
        );
        sim.attach(&switch);
        let irqs = Arc::new(Interrupts::new(vectors));
        sim.set_irq_sink(irqs.clone());
        let stats = Arc::new(VfStats::default());
        let listener = server::bind(path)
            .map_err(|e| format!("VF {i}: listening on {}: {e}", path.display()))?;
        let backend = VfBackend::new(
            &format!("vf{i}"),
            sim.clone(),
            irqs.clone(),
            stats.clone(),
            vectors,
            pf,
        );
        let doorbells = sim.shared_doorbells().map(|f| f.as_raw_fd());
        server::spawn(
            i,
            path.clone(),
            listener,
            backend,
            &irqs,
            stats.clone(),
            doorbells,
        )
        .map_err(|e| format!("VF {i}: starting its threads: {e}"))?;
        served.push(Served {
            path: path.clone(),
            sim,
            irqs,
            stats,
        });
    }
    println!(
        "nicpoll-vf: a simulated {} PF ({}), link {speed} Mb/s, uplink {}; {} VF(s), served by \
         one polling thread (iavf-sim-{}):",
        match pf {
            PfModel::X710 => "X710",
            PfModel::X722 => "X722",
            PfModel::E810 => "E810",
        },
        pf.name(),
        args.uplink.as_deref().unwrap_or("none"),
        served.len(),
        sim_pf.name()
    );
    for (i, s) in served.iter().enumerate() {
        println!(
            "  vf{i}: 8086:{:04x} MAC {} {} queue pairs {vectors} MSI-X vectors{}{} on {}",
            pf.vf_device_id(),
            vf_mac(i),
            queues,
            if args.trusted { ", trusted" } else { "" },
            if args.spoofchk == "on" {
                ""
            } else {
                ", spoofchk off"
            },
            s.path.display()
        );
    }
    println!(
        "nicpoll-vf: ready (SIGUSR1 prints the counters, SIGUSR2 resets the PF, SIGINT or \
         SIGTERM ends it)"
    );
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if dump.swap(false, Ordering::AcqRel) {
            print_counters(&served, &switch);
        }
        if pf_reset.swap(false, Ordering::AcqRel) {
            // i40e's PF reset: i40e_prep_for_reset tells every VF
            // (i40e_vc_notify_reset, i40e_main.c:10805), the rebuild resets
            // them all (i40e_reset_all_vfs, :11192).
            println!("nicpoll-vf: PF reset: resetting every VF");
            for s in &served {
                s.sim.faults().reset_vf();
            }
        }
    }
    println!("nicpoll-vf: stopping");
    print_counters(&served, &switch);
    for s in &served {
        let _ = std::fs::remove_file(&s.path);
    }
    Ok(())
}

fn print_counters(served: &[Served], switch: &Switch) {
    for (i, s) in served.iter().enumerate() {
        println!("{}", stats::line(i, &s.stats, &s.irqs, &s.sim));
    }
    let w = switch.stats();
    println!(
        "switch: vf->vf {} vf->uplink {} uplink->vf {} unknown_unicast {} lost {}",
        w.vf_to_vf, w.vf_to_uplink, w.uplink_to_vf, w.unknown_unicast, w.lost
    );
}
