//! The command line of `testpmd doctor`.

use std::path::PathBuf;

use clap::Parser;
use nicpoll::pci::PciAddress;

pub(super) const USAGE: &str = "\
usage: testpmd doctor [--root DIR] [-a BDF]... [--json] [--brief]

Checks what a hardware run needs and prints PASS, WARN or FAIL for each check,
with the command that fixes it.

  -a, --allow BDF  a PCI device to check (repeatable); the device plugin's
                   PCIDEVICE_* variables add theirs
  --root DIR       read /proc, /sys, /dev and /etc below DIR (default: $NICPOLL_ROOT, else /)
  --json           print a JSON array of {check, status, finding, fix}
  --brief          print only WARN and FAIL findings and a summary line
  -h, --help       this text

Exit status: 0 when nothing FAILs, 1 when a check FAILs, 2 on a usage error.
";

/// `testpmd doctor`'s options, parsed by clap; its errors are reworded to
/// name the option and the accepted form, as every testpmd usage error does.
#[derive(Parser, Debug, Default)]
#[command(
    name = "testpmd doctor",
    disable_version_flag = true,
    disable_help_flag = true,
    args_override_self = true
)]
pub(super) struct Options {
    /// Read /proc, /sys, /dev and /etc below DIR.
    #[arg(long, value_name = "DIR", value_parser = parse_root)]
    pub(super) root: Option<PathBuf>,
    /// A PCI device to check (repeatable): `BDF` or DPDK's `BDF,devargs`.
    #[arg(short = 'a', long = "allow", value_name = "BDF", value_parser = parse_bdf)]
    pub(super) allow: Vec<PciAddress>,
    /// Print a JSON array of {check, status, finding, fix}.
    #[arg(long)]
    pub(super) json: bool,
    /// Print only WARN and FAIL findings and a summary line.
    #[arg(long)]
    pub(super) brief: bool,
    /// Print [`USAGE`].
    #[arg(short = 'h', long = "help")]
    pub(super) help: bool,
}

/// The options, or the usage error to print (without the program name).
pub(super) fn parse_args(args: &[String]) -> Result<Options, String> {
    let argv = std::iter::once("testpmd doctor".to_string()).chain(args.iter().cloned());
    Options::try_parse_from(argv).map_err(|e| usage_error(&e))
}

/// `--root DIR`: a directory, not an empty string.
fn parse_root(value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err("--root needs a directory".into());
    }
    Ok(PathBuf::from(value))
}

/// A `-a` value: `BDF` or dpdk's `BDF,devargs` (the device arguments are not ours).
fn parse_bdf(value: &str) -> Result<PciAddress, String> {
    let bdf = value.split(',').next().unwrap_or(value);
    PciAddress::parse(bdf).map_err(|e| format!("-a {value:?}: {e}"))
}

/// clap's error in doctor's words: the option, what it takes, and what to do.
fn usage_error(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    // clap names an option by its long form and value name (`--allow <BDF>`).
    let option = match arg.split_whitespace().next().unwrap_or("") {
        "--allow" => "-a",
        o => o,
    };
    match e.kind() {
        // Our own parsers' messages already name the option and the value.
        ErrorKind::ValueValidation => match std::error::Error::source(e) {
            Some(reason) => reason.to_string(),
            None => clap_message(e),
        },
        ErrorKind::InvalidValue | ErrorKind::MissingRequiredArgument => {
            let what = if option == "-a" {
                "a PCI address"
            } else {
                "a directory"
            };
            format!("{option} needs a value ({what})")
        }
        ErrorKind::UnknownArgument if arg.starts_with('-') => {
            format!("unknown option {arg:?}; the options are --root, -a/--allow, --json, --brief")
        }
        ErrorKind::UnknownArgument => {
            format!("unexpected argument {arg:?}; give devices with -a BDF")
        }
        _ => clap_message(e),
    }
}

/// clap's own first line, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let o = parse_args(
            &[
                "-a",
                "00:07.0",
                "--allow=0000:00:08.0",
                "-a0000:00:09.0",
                "--allow",
                "00:0a.0,foo=1",
                "--json",
                "--brief",
                "--root=/x",
            ]
            .map(String::from),
        )
        .unwrap();
        let a: Vec<String> = o.allow.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            a,
            [
                "0000:00:07.0",
                "0000:00:08.0",
                "0000:00:09.0",
                "0000:00:0a.0"
            ]
        );
        assert!(o.json && o.brief && o.root == Some(PathBuf::from("/x")));
        for (bad, says) in [
            (&["-a", "eth0"][..], "-a \"eth0\""),
            (&["-a"][..], "-a needs a value"),
            (&["--root"][..], "--root needs a value"),
            (&["--verbose"][..], "unknown option \"--verbose\""),
            (&["0000:00:07.0"][..], "give devices with -a BDF"),
        ] {
            let e = parse_args(&bad.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
