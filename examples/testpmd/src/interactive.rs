//! Interactive mode (`-i`): testpmd's `testpmd>` prompt with line editing,
//! history and tab completion on a terminal; commands also come from
//! `--cmdline-file` and, when stdin is not a terminal, from stdin line by line.
//! A bad command prints one line and the prompt returns: forwarding never stops
//! because of a typo.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nicpoll::fwd::FwdMode;
use nicpoll::port::MacAddr;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::cli::Config;
use crate::session::{RunError, Session};

/// The command words, for completion and `help`.
const COMMANDS: &[&str] = &[
    "start",
    "start tx_first",
    "stop",
    "show port stats all",
    "show port info all",
    "show port xstats all",
    "show port summary all",
    "show fwd stats all",
    "show config fwd",
    "clear port stats all",
    "clear fwd stats all",
    "set fwd",
    "set nbcore",
    "set burst",
    "set burst tx delay",
    "set eth-peer",
    "set txpkts",
    "set promisc all on",
    "set promisc all off",
    "set verbose",
    "set record-burst-stats on",
    "set record-burst-stats off",
    "port stop all",
    "port start all",
    "port close all",
    "port config all rxq",
    "port config all txq",
    "port config all rxd",
    "port config all txd",
    "help",
    "quit",
];

const HELP: &str = "\
Commands:
  start | start tx_first [N]         start forwarding (first sending N bursts of txonly packets)
  stop                               stop forwarding and show the forward statistics
  show port stats|info|xstats all|N  port counters and rates / capabilities / extended counters
  show port summary all              one line per port
  show fwd stats all                 forward statistics of the running forwarding
  show config fwd                    the streams and the lcores that run them
  clear port stats all               reset port counters
  clear fwd stats all                forward statistics count from now (burst counts too)
  set fwd MODE [retry]               io mac macswap flowgen rxonly txonly icmpecho 5tswap
  set nbcore N | set burst N         forwarding cores / packets per burst
  set burst tx delay US retry N      transmit retry parameters
  set eth-peer PORT MAC              peer MAC of a port (mac and txonly modes)
  set txpkts LEN[,LEN...]            length of generated packets (several: segments)
  set promisc all|N on|off           promiscuous mode
  set verbose N                      log level (0 warnings, 1 info, 2+ debug)
  set record-burst-stats on|off      count bursts by size (RX-/TX-bursts lines), from the next start
  port stop|start|close all|N        port life cycle (stop forwarding first)
  port config all rxq|txq|rxd|txd N  queues and ring sizes (ports stopped)
  help                               this text
  quit                               stop everything and exit
";

struct CommandHelper;

impl Completer for CommandHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let typed = &line[..pos];
        let start = typed.rfind(' ').map_or(0, |i| i + 1);
        let words_before = typed[..start].split_whitespace().count();
        let mut out: Vec<String> = Vec::new();
        for c in COMMANDS {
            if c.starts_with(typed) || (typed.ends_with(' ') && c.starts_with(typed.trim_end())) {
                let mut words = c.split_whitespace().skip(words_before);
                if let Some(w) = words.next() {
                    // A word with more after it gets its space, so Tab moves on.
                    let cand = if words.next().is_some() {
                        format!("{w} ")
                    } else {
                        w.to_string()
                    };
                    if !out.contains(&cand) {
                        out.push(cand);
                    }
                }
            }
        }
        if typed.starts_with("set fwd ") && words_before == 2 {
            out = FwdMode::ALL
                .iter()
                .map(|m| m.name().to_string())
                .filter(|m| m.starts_with(&typed[start..]))
                .collect();
        }
        Ok((start, out))
    }
}

impl Hinter for CommandHelper {
    type Hint = String;
}
impl Highlighter for CommandHelper {}
impl Validator for CommandHelper {}
impl Helper for CommandHelper {}

/// What a command asks of the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave.
    Quit,
}

fn num<T: std::str::FromStr>(s: Option<&&str>, what: &str) -> Result<T, String> {
    let s = s.ok_or_else(|| format!("missing {what}"))?;
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not a valid number"))
}

fn port_list(s: &Session, arg: Option<&&str>) -> Result<Vec<u16>, String> {
    match arg.copied() {
        None | Some("all") => Ok((0..s.nb_ports() as u16).collect()),
        Some(p) => {
            let id: u16 = p
                .parse()
                .map_err(|_| format!("{p:?} is not a port number or \"all\""))?;
            if id as usize >= s.nb_ports() {
                return Err(format!(
                    "port {id} does not exist (ports 0 to {})",
                    s.nb_ports().saturating_sub(1)
                ));
            }
            Ok(vec![id])
        }
    }
}

fn run_err(e: RunError) -> String {
    e.to_string()
}

/// Execute one command line.
pub fn execute(s: &mut Session, line: &str) -> Result<Flow, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    match w.as_slice() {
        [] => Ok(Flow::Continue),
        ["#", ..] => Ok(Flow::Continue),
        [c, ..] if c.starts_with('#') => Ok(Flow::Continue),
        ["help", ..] => {
            s.out.text(HELP);
            Ok(Flow::Continue)
        }
        ["quit"] | ["exit"] => Ok(Flow::Quit),
        ["start"] => s
            .start_forwarding(0)
            .map(|_| Flow::Continue)
            .map_err(run_err),
        ["start", "tx_first"] => s
            .start_forwarding(1)
            .map(|_| Flow::Continue)
            .map_err(run_err),
        ["start", "tx_first", n] => {
            let n: u32 = num(Some(n), "burst count")?;
            s.start_forwarding(n)
                .map(|_| Flow::Continue)
                .map_err(run_err)
        }
        ["stop"] => s
            .stop_forwarding("stop")
            .map(|_| Flow::Continue)
            .map_err(run_err),
        ["show", "port", "stats", rest @ ..] if rest.len() <= 1 => {
            let ids = port_list(s, rest.first())?;
            s.show_port_stats(Some(&ids), false);
            Ok(Flow::Continue)
        }
        ["show", "port", "info", rest @ ..] if rest.len() <= 1 => {
            let ids = port_list(s, rest.first())?;
            s.show_port_info(&ids)
                .map(|_| Flow::Continue)
                .map_err(run_err)
        }
        ["show", "port", "xstats", rest @ ..] if rest.len() <= 1 => {
            let ids = port_list(s, rest.first())?;
            s.show_port_xstats(&ids)
                .map(|_| Flow::Continue)
                .map_err(run_err)
        }
        ["show", "port", "summary", rest @ ..] if rest.len() <= 1 => {
            let ids = port_list(s, rest.first())?;
            s.show_port_summary(&ids);
            Ok(Flow::Continue)
        }
        ["show", "fwd", "stats", "all"] => {
            s.show_fwd_stats().map(|_| Flow::Continue).map_err(run_err)
        }
        ["show", "config", "fwd"] => s.show_config_fwd().map(|_| Flow::Continue).map_err(run_err),
        ["clear", "port", "stats", "all"] => {
            s.clear_port_stats();
            Ok(Flow::Continue)
        }
        ["clear", "fwd", "stats", "all"] => {
            s.clear_fwd_stats().map(|_| Flow::Continue).map_err(run_err)
        }
        ["set", "record-burst-stats", onoff] => {
            let on = match *onoff {
                "on" => true,
                "off" => false,
                _ => return Err("usage: set record-burst-stats on|off".into()),
            };
            s.cfg.record_burst_stats = on;
            // The lcores read the setting once, at start (no test of a shared
            // flag per burst).
            if s.forwarding() {
                s.out.text(
                    "note: record-burst-stats takes effect at the next start (stop, then start)\n",
                );
            }
            Ok(Flow::Continue)
        }
        ["set", "fwd", mode, rest @ ..] => {
            let m = FwdMode::parse(mode).ok_or_else(|| {
                format!(
                    "unknown forwarding mode {mode:?}; give one of {}",
                    FwdMode::names()
                )
            })?;
            let retry = match rest {
                [] => false,
                ["retry"] => true,
                _ => return Err("usage: set fwd MODE [retry]".into()),
            };
            if s.forwarding() {
                return Err("stop forwarding first (stop)".into());
            }
            s.cfg.mode = m;
            s.cfg.retry.enabled = retry;
            s.out.text(&format!(
                "Set {m} packet forwarding mode{}\n",
                if retry { " with retry" } else { "" }
            ));
            Ok(Flow::Continue)
        }
        ["set", "nbcore", n] => {
            let n: usize = num(Some(n), "number of cores")?;
            let workers = s.cfg.lcores.workers().count();
            if n == 0 || n > workers {
                return Err(format!(
                    "nbcore {n}: give 1 to {workers} (the forwarding lcores of -l)"
                ));
            }
            if s.forwarding() {
                return Err("stop forwarding first (stop)".into());
            }
            s.cfg.nb_cores = Some(n);
            s.out
                .text(&format!("Number of forwarding cores set to {n}\n"));
            Ok(Flow::Continue)
        }
        ["set", "burst", "tx", "delay", d, "retry", n] => {
            let d: u32 = num(Some(d), "delay")?;
            let n: u32 = num(Some(n), "retry count")?;
            if s.forwarding() {
                return Err("stop forwarding first (stop)".into());
            }
            s.cfg.retry.delay_us = d;
            s.cfg.retry.count = n;
            Ok(Flow::Continue)
        }
        ["set", "burst", n] => {
            let n: usize = num(Some(n), "burst")?;
            if n == 0 || n > nicpoll::MAX_BURST {
                return Err(format!("burst {n}: give 1 to {}", nicpoll::MAX_BURST));
            }
            if s.forwarding() {
                return Err("stop forwarding first (stop)".into());
            }
            s.cfg.burst = n;
            s.out
                .text(&format!("Number of packets per burst set to {n}\n"));
            Ok(Flow::Continue)
        }
        ["set", "eth-peer", p, mac] => {
            let p: u16 = num(Some(p), "port")?;
            if p as usize >= s.nb_ports() {
                return Err(format!("port {p} does not exist"));
            }
            let mac: MacAddr = mac.parse()?;
            if s.forwarding() {
                return Err("stop forwarding first (stop)".into());
            }
            s.cfg.eth_peers.insert(p, mac);
            Ok(Flow::Continue)
        }
        ["set", "txpkts", lens] => {
            let (len, segs) = crate::cli::parse_txpkts(lens).map_err(|e| format!("txpkts {e}"))?;
            if s.forwarding() {
                return Err("stop forwarding first (stop)".into());
            }
            let tx = nicpoll::fwd::TxPacketConfig {
                len,
                segs,
                ..s.cfg.tx.clone()
            };
            crate::cli::check_txpkts_fit(&tx, s.pool_data_room())
                .map_err(|e| format!("txpkts {lens}: {e}"))?;
            s.cfg.tx = tx;
            Ok(Flow::Continue)
        }
        ["set", "promisc", which, onoff] => {
            let on = match *onoff {
                "on" => true,
                "off" => false,
                _ => return Err("usage: set promisc all|N on|off".into()),
            };
            for id in port_list(s, Some(which))? {
                s.set_promisc(id, on).map_err(run_err)?;
            }
            Ok(Flow::Continue)
        }
        ["set", "verbose", n] => {
            let n: u32 = num(Some(n), "level")?;
            log::set_max_level(match n {
                0 => log::LevelFilter::Warn,
                1 => log::LevelFilter::Info,
                _ => log::LevelFilter::Debug,
            });
            s.out.text(&format!("Change verbose level from ? to {n}\n"));
            Ok(Flow::Continue)
        }
        ["port", op @ ("stop" | "start" | "close"), which] => {
            for id in port_list(s, Some(which))? {
                let r = match *op {
                    "stop" => s.stop_port(id),
                    "start" => s.start_port(id),
                    _ => s.close_port(id),
                };
                r.map_err(run_err)?;
            }
            Ok(Flow::Continue)
        }
        [
            "port",
            "config",
            "all",
            what @ ("rxq" | "txq" | "rxd" | "txd"),
            n,
        ] => {
            let n: u16 = num(Some(n), what)?;
            let (rxq, txq, rxd, txd) = match *what {
                "rxq" => (Some(n), None, None, None),
                "txq" => (None, Some(n), None, None),
                "rxd" => (None, None, Some(n), None),
                _ => (None, None, None, Some(n)),
            };
            s.reconfigure_all(rxq, txq, rxd, txd)
                .map(|_| Flow::Continue)
                .map_err(run_err)
        }
        _ => Err(format!("bad command {line:?}; type help for the list")),
    }
}

/// Run the interactive session until `quit`, end of input, `--run-time`, or a signal.
pub fn run(cfg: Config, stop: Arc<AtomicBool>) -> Result<bool, RunError> {
    let (auto_start, tx_first, run_time, cmdline_file) = (
        cfg.auto_start,
        cfg.tx_first,
        cfg.run_time,
        cfg.cmdline_file.clone(),
    );
    let mut s = Session::new(cfg)?;
    let started = Instant::now();
    let deadline = run_time.map(|t| started + Duration::from_secs_f64(t));
    if let Some(f) = &cmdline_file {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                let _ = s.shutdown("error");
                return Err(RunError::Usage(crate::cli::UsageError(format!(
                    "--cmdline-file {}: {e}",
                    f.display()
                ))));
            }
        };
        for line in text.lines() {
            s.out.text(&format!("testpmd> {line}\n"));
            match execute(&mut s, line) {
                Ok(Flow::Quit) => return s.shutdown("quit"),
                Ok(Flow::Continue) => {}
                Err(e) => s.out.text(&format!("Bad arguments: {e}\n")),
            }
        }
        s.out
            .text(&format!("Read CLI commands from {}\n", f.display()));
    }
    if auto_start && !s.forwarding() {
        s.start_forwarding(u32::from(tx_first))?;
    }
    // Lines are read on their own thread so that a signal or the run time can
    // end the session while the prompt waits.
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let tty = std::io::stdin().is_terminal();
    std::thread::Builder::new()
        .name("cli".into())
        .spawn(move || read_lines(tx, tty))
        .map_err(|e| RunError::Runtime(anyhow::anyhow!("starting the command reader: {e}")))?;
    let mut next_metrics = Instant::now();
    let reason = loop {
        if Instant::now() >= next_metrics {
            s.publish_metrics();
            next_metrics = Instant::now() + Duration::from_millis(250);
        }
        if stop.load(Ordering::Relaxed) {
            break "signal";
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break "run time reached";
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Some(line)) => {
                if !tty {
                    s.out.text(&format!("{line}\n"));
                }
                match execute(&mut s, &line) {
                    Ok(Flow::Quit) => break "quit",
                    Ok(Flow::Continue) => {}
                    Err(e) => s.out.text(&format!("Bad arguments: {e}\n")),
                }
                if !tty {
                    s.out.text("testpmd> ");
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break "end of input",
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    s.shutdown(reason)
}

fn read_lines(tx: mpsc::Sender<Option<String>>, tty: bool) {
    if tty {
        let mut ed =
            match rustyline::Editor::<CommandHelper, rustyline::history::DefaultHistory>::new() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("testpmd: cannot start line editing: {e}");
                    let _ = tx.send(None);
                    return;
                }
            };
        ed.set_helper(Some(CommandHelper));
        loop {
            match ed.readline("testpmd> ") {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = ed.add_history_entry(line.as_str());
                    }
                    if tx.send(Some(line)).is_err() {
                        return;
                    }
                }
                // Ctrl-C at the prompt clears the line, as a shell does; Ctrl-D quits.
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
            }
        }
    } else {
        print!("testpmd> ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(Some(l)).is_err() {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = tx.send(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_offers_next_words_and_modes() {
        let h = CommandHelper;
        let hist = rustyline::history::DefaultHistory::new();
        let ctx = Context::new(&hist);
        let (start, c) = h.complete("sh", 2, &ctx).unwrap();
        assert_eq!((start, c), (0, vec!["show ".to_string()]));
        let (start, c) = h.complete("show port s", 11, &ctx).unwrap();
        assert_eq!(start, 10);
        assert!(
            c.contains(&"stats ".to_string()) && c.contains(&"summary ".to_string()),
            "{c:?}"
        );
        let (_, c) = h.complete("show port stats a", 17, &ctx).unwrap();
        assert_eq!(c, vec!["all".to_string()]);
        let (_, c) = h.complete("set fwd ma", 10, &ctx).unwrap();
        assert_eq!(c, vec!["mac".to_string(), "macswap".to_string()]);
    }
}
