//! `nicpoll-guest`: the QEMU guest harness from the command line (the library's
//! documentation says what the guest is). Exit status of `run`: the program's,
//! 124 on timeout, 125 when the harness or the guest failed; 2 for a usage
//! error.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nicpoll_guest::{Cache, Driver, Echo, Emulator, Guest, Mode, Net, Nic, VfioUser};

#[derive(Parser)]
#[command(
    name = "nicpoll-guest",
    about = "Run a program in a QEMU guest whose PCI functions are bound to vfio-pci (type1 or no-IOMMU), \
             or that has vfio-user devices (QEMU 11)",
    after_help = "Cache: NICPOLL_GUEST_CACHE (default ~/.cache/nicpoll-guest). Archive: NICPOLL_GUEST_MIRROR \
                  (default: the host's first .../debian apt source). Kernel: NICPOLL_GUEST_KABI. \
                  NICPOLL_GUEST_SHOW_QEMU=1 prints QEMU's command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a guest and run PROGRAM in it; exits with PROGRAM's status.
    Run {
        #[command(flatten)]
        guest: GuestArgs,
        /// Stream the whole console, not only the program's output.
        #[arg(long)]
        verbose: bool,
        /// The program (a binary from this host, or a busybox sh script) and its arguments.
        #[arg(required = true, last = true, value_name = "PROGRAM [ARGS]")]
        program: Vec<String>,
    },
    /// Download and build what such a guest needs (idempotent), without booting.
    Prepare {
        #[command(flatten)]
        guest: GuestArgs,
    },
    /// Say whether such a guest can run here, or what is missing (exit 1).
    Check {
        #[command(flatten)]
        guest: GuestArgs,
    },
    /// Show the cache: where it is and what is prepared.
    Info,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    None,
    Type1,
    Noiommu,
}

#[derive(Args)]
struct GuestArgs {
    /// VFIO in the guest.
    #[arg(long, value_enum, default_value = "none")]
    mode: ModeArg,
    /// Boot QEMU 11 from the harness's trixie chroot instead of the host's QEMU
    /// (implied by --vfio-user).
    #[arg(long)]
    qemu11: bool,
    /// An emulated NIC: e1000e|virtio[,kernel][,QEMU-PROP...]; bound to vfio-pci
    /// unless ",kernel". NIC i is at 0000:00:0(3+i).0.
    #[arg(long, value_name = "MODEL[,kernel][,PROP]")]
    nic: Vec<String>,
    /// The host side of the next NIC (in --nic order; default user):
    /// user | dgram:PEER_SOCKET | tap:IFNAME[@NETNS] | socket-listen:PORT | socket-connect:PORT.
    #[arg(long, value_name = "SPEC")]
    net: Vec<String>,
    /// A vfio-user-pci device on the server socket SOCKET; left to the guest
    /// kernel unless ",vfio-pci". Device j is at 0000:00:1j.0.
    #[arg(long, value_name = "SOCKET[,vfio-pci][,KEY=VALUE]")]
    vfio_user: Vec<String>,
    /// Put a kernel module (and what it needs) into the guest and load it.
    #[arg(long, value_name = "NAME")]
    kmod: Vec<String>,
    /// Put a kernel module into /lib/modules without loading it.
    #[arg(long, value_name = "NAME")]
    kmod_unloaded: Vec<String>,
    /// DPDK 24.11 under /opt/dpdk (/opt/dpdk/bin/dpdk-testpmd).
    #[arg(long)]
    dpdk: bool,
    /// A host file to copy into the guest's /lab.
    #[arg(long, value_name = "PATH")]
    file: Vec<PathBuf>,
    /// An environment variable for the program.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Limit on the whole run, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    mem: u32,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    smp: u32,
    /// QEMU's -cpu model.
    #[arg(long)]
    cpu: Option<String>,
    /// 2 MiB hugepages reserved at boot.
    #[arg(long, default_value_t = 64)]
    hugepages: u32,
    /// Extra guest kernel command-line arguments (repeatable).
    #[arg(long)]
    append: Vec<String>,
    /// An extra QEMU argument (repeatable, one word each).
    #[arg(long, allow_hyphen_values = true)]
    qemu_arg: Vec<String>,
    /// Write each NIC's frames to DIR/nicI.pcap.
    #[arg(long, value_name = "DIR")]
    pcap: Option<PathBuf>,
    /// Write the whole console to FILE.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

fn parse_net(spec: &str) -> Result<Net, String> {
    if spec == "user" {
        return Ok(Net::User);
    }
    let (kind, arg) = spec
        .split_once(':')
        .ok_or_else(|| format!("--net {spec}: expected user, dgram:SOCKET, tap:IF[@NETNS], socket-listen:PORT or socket-connect:PORT"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("--net {spec}: {p} is not a port"))
    };
    match kind {
        "dgram" => Ok(Net::Dgram(PathBuf::from(arg))),
        "tap" => Ok(match arg.split_once('@') {
            Some((ifname, ns)) => Net::Tap {
                ifname: ifname.into(),
                netns: Some(ns.into()),
            },
            None => Net::Tap {
                ifname: arg.into(),
                netns: None,
            },
        }),
        "socket-listen" => Ok(Net::SocketListen(port(arg)?)),
        "socket-connect" => Ok(Net::SocketConnect(port(arg)?)),
        _ => Err(format!("--net {spec}: unknown kind {kind}")),
    }
}

fn parse_nic(spec: &str, net: Net) -> Result<Nic, String> {
    let mut parts = spec.split(',');
    let mut nic = match parts.next() {
        Some("e1000e") => Nic::e1000e(),
        Some("virtio") => Nic::virtio(),
        _ => return Err(format!("--nic {spec}: the model is e1000e or virtio")),
    }
    .net(net);
    for p in parts {
        nic = if p == "kernel" {
            nic.driver(Driver::Kernel)
        } else {
            nic.prop(p)
        };
    }
    Ok(nic)
}

/// A property value as JSON: numbers and booleans as they are, the rest quoted.
fn json_value(v: &str) -> String {
    if v == "true" || v == "false" || v.parse::<f64>().is_ok() {
        v.to_string()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn parse_vfio_user(spec: &str) -> Result<VfioUser, String> {
    let mut parts = spec.split(',');
    let mut dev = VfioUser::new(parts.next().unwrap_or_default());
    for p in parts {
        dev = match p.split_once('=') {
            Some((k, v)) => dev.prop(k, json_value(v)),
            None if p == "vfio-pci" => dev.driver(Driver::VfioPci),
            None => {
                return Err(format!(
                    "--vfio-user {spec}: {p} is neither vfio-pci nor KEY=VALUE"
                ));
            }
        };
    }
    Ok(dev)
}

fn build(a: &GuestArgs) -> Result<Guest, String> {
    let mut g = Guest::new()
        .mode(match a.mode {
            ModeArg::None => Mode::None,
            ModeArg::Type1 => Mode::Type1,
            ModeArg::Noiommu => Mode::NoIommu,
        })
        .timeout(Duration::from_secs(a.timeout))
        .mem_mb(a.mem)
        .smp(a.smp)
        .hugepages(a.hugepages);
    if a.qemu11 {
        g = g.emulator(Emulator::Qemu11);
    }
    if a.net.len() > a.nic.len() {
        return Err("more --net than --nic".into());
    }
    for (i, spec) in a.nic.iter().enumerate() {
        let net = a.net.get(i).map_or(Ok(Net::User), |n| parse_net(n))?;
        g = g.nic(parse_nic(spec, net)?);
    }
    for v in &a.vfio_user {
        g = g.vfio_user(parse_vfio_user(v)?);
    }
    for k in &a.kmod {
        g = g.kmod(k);
    }
    for k in &a.kmod_unloaded {
        g = g.kmod_unloaded(k);
    }
    if a.dpdk {
        g = g.dpdk();
    }
    for f in &a.file {
        g = g.file(f);
    }
    for e in &a.env {
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| format!("--env {e}: expected KEY=VALUE"))?;
        g = g.env(k, v);
    }
    if let Some(c) = &a.cpu {
        g = g.cpu(c);
    }
    for x in &a.append {
        g = g.append(x);
    }
    for x in &a.qemu_arg {
        g = g.qemu_arg(x);
    }
    if let Some(p) = &a.pcap {
        g = g.pcap(p);
    }
    if let Some(l) = &a.log {
        g = g.log(l);
    }
    Ok(g)
}

fn info() -> Result<(), String> {
    let cache = Cache::from_env().map_err(|e| e.to_string())?;
    println!("cache    {}", cache.root().display());
    println!("archive  {}", nicpoll_guest::mirror());
    let state = cache.root().join("state");
    let mut done: Vec<_> = std::fs::read_dir(&state)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    done.sort();
    if done.is_empty() {
        println!("prepared nothing yet");
    }
    for p in done {
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let what = std::fs::read_to_string(&p).unwrap_or_default();
        println!("prepared {name:<20} {}", what.trim());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let say = |e: String, code: u8| {
        eprintln!("nicpoll-guest: {e}");
        ExitCode::from(code)
    };
    // A guest the options cannot describe (2), or one that failed to run (125).
    let usage = |e: String| say(e, 2);
    let fail = |e: String| say(e, 125);
    match cli.command {
        Cmd::Info => match info() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Cmd::Check { guest } => {
            let g = match build(&guest) {
                Ok(g) => g,
                Err(e) => return usage(e),
            };
            match g.missing() {
                None => {
                    println!("ok: such a guest can run here");
                    ExitCode::SUCCESS
                }
                Some(why) => {
                    println!("cannot run: {why}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Prepare { guest } => {
            let g = match build(&guest) {
                Ok(g) => g,
                Err(e) => return usage(e),
            };
            match g.prepare() {
                Ok(k) => {
                    println!("ready: kernel {} ({})", k.kabi, k.version);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.to_string()),
            }
        }
        Cmd::Run {
            guest,
            verbose,
            program,
        } => {
            let g = match build(&guest) {
                Ok(g) => g,
                Err(e) => return usage(e),
            };
            let (prog, args) = program.split_first().expect("clap requires PROGRAM");
            let g = g.program(prog, args.iter().cloned()).echo(if verbose {
                Echo::Console
            } else {
                Echo::Program
            });
            match g.run() {
                Ok(out) => {
                    if out.status.is_none() {
                        eprintln!("nicpoll-guest: {}", out.report());
                    } else {
                        eprintln!(
                            "[nicpoll-guest] program exit status {}, guest run {:.1} s",
                            out.exit_code(),
                            out.seconds
                        );
                    }
                    ExitCode::from(u8::try_from(out.exit_code()).unwrap_or(125))
                }
                Err(e) => fail(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_net_and_vfio_user_specs_parse() {
        assert_eq!(
            parse_net("tap:tap0@lab").unwrap(),
            Net::Tap {
                ifname: "tap0".into(),
                netns: Some("lab".into())
            }
        );
        assert_eq!(
            parse_net("socket-listen:5555").unwrap(),
            Net::SocketListen(5555)
        );
        assert!(parse_net("socket-listen:x").is_err());
        assert!(parse_net("bogus").is_err());
        assert_eq!(
            parse_nic("e1000e,kernel,mac=52:54:00:00:00:02", Net::User).unwrap(),
            Nic::e1000e()
                .driver(Driver::Kernel)
                .prop("mac=52:54:00:00:00:02")
        );
        assert!(parse_nic("igb", Net::User).is_err());
        assert_eq!(
            parse_vfio_user("/run/x.sock,vfio-pci,x-msg-timeout=5000,x-name=a").unwrap(),
            VfioUser::new("/run/x.sock")
                .driver(Driver::VfioPci)
                .prop("x-msg-timeout", "5000")
                .prop("x-name", "\"a\"")
        );
    }
}
