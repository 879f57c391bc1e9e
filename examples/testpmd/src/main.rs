//! nicpoll's testpmd: forward packets between ports with live statistics,
//! command-line compatible with dpdk-testpmd.
#![forbid(unsafe_code)]

mod bind_cmd;
mod cli;
mod device_plugin;
mod display;
mod doctor;
mod entrypoint;
mod iavf_sim;
mod interactive;
mod metrics;
mod plan;
mod registry;
mod run;
mod session;
mod subcommands;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = subcommands::dispatch(&args) {
        return code;
    }
    let cfg = match cli::parse(&args) {
        Ok(c) => c,
        Err(cli::ParseOutcome::Clap(e)) => {
            // Help goes to stdout with status 0; errors to stderr with status 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
        Err(cli::ParseOutcome::Usage(e)) => {
            eprintln!("testpmd: {e}");
            eprintln!("testpmd: see `testpmd --help` and `testpmd -- --help`");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_level.as_deref());
    if let Some(d) = &cfg.entrypoint {
        print!("{}", d.describe());
    }
    if !cfg.demo {
        // The short form of `testpmd doctor`, only when something is off.
        let env: doctor::Env = std::env::vars().collect();
        let findings = doctor::start_checks(
            &entrypoint::root_from_env(),
            &env,
            &doctor::StartConfig {
                devices: cfg.pci.iter().map(|p| p.addr).collect(),
                no_huge: cfg.memory.no_huge,
                huge_dir: cfg.memory.huge_dir.clone(),
            },
        );
        if findings.iter().any(|f| f.status != doctor::Status::Pass) {
            eprint!("{}", doctor::render_text(&findings, true));
        }
    }
    if cfg.demo {
        println!(
            "nicpoll testpmd demo: io forwarding between two simulated X710 VFs (the iavf driver against\n\
             nicpoll's device model, wired back to back) for 10 s.\n\
             Stop earlier with Ctrl-C. The same run by hand:\n  testpmd {}\n",
            cli::DEMO_ARGS.join(" ")
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("testpmd: cannot install the handler of signal {sig}: {e}");
            return ExitCode::from(1);
        }
    }
    let result = if cfg.interactive {
        interactive::run(cfg, stop)
    } else {
        run::run(cfg, stop)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!(
                "testpmd: error: mbufs were lost (see the mempool line above); this is a bug, please report it"
            );
            ExitCode::from(1)
        }
        Err(session::RunError::Usage(e)) => {
            eprintln!("testpmd: {e}");
            ExitCode::from(2)
        }
        Err(session::RunError::Runtime(e)) => {
            eprintln!("testpmd: error: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: Option<&str>) {
    // DPDK's --log-level takes LEVEL or TYPE:LEVEL; keep the level part.
    let lvl = level
        .map(|l| l.rsplit(':').next().unwrap_or(l).to_ascii_lowercase())
        .map(|l| match l.as_str() {
            "emerg" | "alert" | "crit" | "err" | "error" | "1" | "2" | "3" | "4" => {
                "error".to_string()
            }
            "warning" | "warn" | "notice" | "5" | "6" => "warn".to_string(),
            "info" | "7" => "info".to_string(),
            "debug" | "8" => "debug".to_string(),
            other => other.to_string(),
        })
        .unwrap_or_else(|| "warn".to_string());
    let _ = env_logger::Builder::new()
        .parse_filters(&lvl)
        .format_timestamp(None)
        .try_init();
}
