//! Subcommands that are not forwarding runs: `testpmd bind ...`, `testpmd doctor ...`.
//! A first argument naming one of them selects it; anything else is a run.

use std::process::ExitCode;

/// Run the subcommand named by `args[0]`, if it names one.
pub fn dispatch(args: &[String]) -> Option<ExitCode> {
    match args.first().map(String::as_str) {
        Some("bind") => Some(crate::bind_cmd::run(&args[1..])),
        Some("doctor") => Some(crate::doctor::run(&args[1..])),
        _ => None,
    }
}
