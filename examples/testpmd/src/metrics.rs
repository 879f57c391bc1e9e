//! Telemetry: `--metrics ADDR` serves Prometheus text at `/metrics` (port and
//! queue counters, rates, the latency histogram, the mempool). The main thread
//! renders the text a few times a second; the HTTP thread only hands out the
//! latest copy, so a scrape never touches ports or lcores.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nicpoll::fwd::LatencyRecorder;
use nicpoll::mempool::MempoolStats;
use nicpoll::port::PortStats;
use nicpoll::stats::Rates;

/// The window the `*_pps` and `*_bps` gauges average over: a second, the unit
/// they are in. The text is rendered every 250 ms, so the gauges move at that
/// pace, but a scrape never reads a single quarter of a second (a forwarding
/// lcore descheduled that long would read as no traffic at all).
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// The server: a listening socket and the text it serves.
pub struct MetricsServer {
    text: Arc<Mutex<String>>,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Bind `addr` (e.g. `127.0.0.1:9100`, `0.0.0.0:9100`, port 0 for any) and serve.
    pub fn start(addr: &str) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            format!("--metrics {addr}: cannot listen: {e} (is the port in use, or the address not on this host?)")
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("--metrics {addr}: {e}"))?;
        let text = Arc::new(Mutex::new(String::from("# no sample yet\n")));
        let served = text.clone();
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let _ = serve(conn, &served);
                }
            })
            .map_err(|e| format!("--metrics: cannot start the HTTP thread: {e}"))?;
        Ok(MetricsServer { text, addr })
    }

    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the served text.
    pub fn publish(&self, text: String) {
        if let Ok(mut t) = self.text.lock() {
            *t = text;
        }
    }
}

fn serve(mut conn: TcpStream, text: &Mutex<String>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Drain the headers (bounded by the read timeout).
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) =
        if request.starts_with("GET ") && (path == "/metrics" || path.starts_with("/metrics?")) {
            let body = text.lock().map(|t| t.clone()).unwrap_or_default();
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body)
        } else {
            ("404 Not Found", "text/plain", "try /metrics\n".to_string())
        };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// One port's numbers for rendering.
pub struct PortSample<'a> {
    /// Port id.
    pub port: u16,
    /// Device name.
    pub name: &'a str,
    /// Counters.
    pub stats: PortStats,
    /// Rates over the last [`RATE_WINDOW`].
    pub rates: Rates,
    /// Extended counters (per queue among them).
    pub xstats: Vec<(String, u64)>,
    /// Packets the engine dropped at transmit on this port.
    pub fwd_dropped: u64,
    /// Link up.
    pub link_up: bool,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Latency bucket bounds in nanoseconds for the Prometheus histogram.
const BUCKETS_NS: &[u64] = &[
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    1_000_000_000,
];

/// A counter family: metric name, help text, and how to read it from a port's stats.
type CounterFamily = (&'static str, &'static str, fn(&PortStats) -> u64);
/// A gauge family read from a port's rates.
type RateFamily = (&'static str, &'static str, fn(&Rates) -> f64);

/// Render everything as Prometheus text exposition format 0.0.4.
pub fn render(
    ports: &[PortSample<'_>],
    forwarding: bool,
    mode: &str,
    latency: &LatencyRecorder,
    pool: (&str, &MempoolStats),
) -> String {
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        o += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (labels, value) in rows {
            o += &format!("{name}{labels} {value}\n");
        }
    };
    let lp = |p: &PortSample<'_>| format!("{{port=\"{}\",name=\"{}\"}}", p.port, escape(p.name));
    let counters: [CounterFamily; 8] = [
        ("nicpoll_port_rx_packets_total", "Packets received.", |s| {
            s.ipackets
        }),
        ("nicpoll_port_tx_packets_total", "Packets sent.", |s| {
            s.opackets
        }),
        ("nicpoll_port_rx_bytes_total", "Bytes received.", |s| {
            s.ibytes
        }),
        ("nicpoll_port_tx_bytes_total", "Bytes sent.", |s| s.obytes),
        (
            "nicpoll_port_rx_missed_total",
            "Packets the device dropped for lack of receive descriptors.",
            |s| s.imissed,
        ),
        (
            "nicpoll_port_rx_errors_total",
            "Erroneous received packets.",
            |s| s.ierrors,
        ),
        (
            "nicpoll_port_tx_errors_total",
            "Packets the device failed to send.",
            |s| s.oerrors,
        ),
        (
            "nicpoll_port_rx_nombuf_total",
            "Receive buffer allocation failures.",
            |s| s.rx_nombuf,
        ),
    ];
    for (name, help, get) in counters {
        family(
            name,
            "counter",
            help,
            ports
                .iter()
                .map(|p| (lp(p), get(&p.stats).to_string()))
                .collect(),
        );
    }
    family(
        "nicpoll_port_tx_dropped_total",
        "counter",
        "Packets the forwarding engine dropped because the transmit queue did not take them.",
        ports
            .iter()
            .map(|p| (lp(p), p.fwd_dropped.to_string()))
            .collect(),
    );
    let rates: [RateFamily; 6] = [
        (
            "nicpoll_port_rx_pps",
            "Received packets per second, over the last second.",
            |r| r.rx_pps,
        ),
        (
            "nicpoll_port_tx_pps",
            "Sent packets per second, over the last second.",
            |r| r.tx_pps,
        ),
        (
            "nicpoll_port_rx_bps",
            "Received bits per second, over the last second.",
            |r| r.rx_bps,
        ),
        (
            "nicpoll_port_tx_bps",
            "Sent bits per second, over the last second.",
            |r| r.tx_bps,
        ),
        (
            "nicpoll_port_rx_wire_bps",
            "Received bits per second on the wire (FCS, preamble, gap), over the last second.",
            |r| r.rx_wire_bps,
        ),
        (
            "nicpoll_port_tx_wire_bps",
            "Sent bits per second on the wire, over the last second.",
            |r| r.tx_wire_bps,
        ),
    ];
    for (name, help, get) in rates {
        family(
            name,
            "gauge",
            help,
            ports
                .iter()
                .map(|p| (lp(p), format!("{}", get(&p.rates))))
                .collect(),
        );
    }
    family(
        "nicpoll_port_link_up",
        "gauge",
        "1 when the link is up.",
        ports
            .iter()
            .map(|p| (lp(p), u8::from(p.link_up).to_string()))
            .collect(),
    );
    // Per-queue counters from the xstats named rx_qN_packets / tx_qN_bytes ...
    let mut queue_rows: Vec<(String, String, String)> = Vec::new();
    for p in ports {
        for (k, v) in &p.xstats {
            let Some((dir, rest)) = k.split_once("_q") else {
                continue;
            };
            let Some((q, what)) = rest.split_once('_') else {
                continue;
            };
            if !(dir == "rx" || dir == "tx")
                || q.parse::<u32>().is_err()
                || !(what == "packets" || what == "bytes")
            {
                continue;
            }
            queue_rows.push((
                format!("nicpoll_queue_{dir}_{what}_total"),
                format!(
                    "{{port=\"{}\",name=\"{}\",queue=\"{q}\"}}",
                    p.port,
                    escape(p.name)
                ),
                v.to_string(),
            ));
        }
    }
    for name in [
        "nicpoll_queue_rx_packets_total",
        "nicpoll_queue_rx_bytes_total",
        "nicpoll_queue_tx_packets_total",
        "nicpoll_queue_tx_bytes_total",
    ] {
        let rows: Vec<(String, String)> = queue_rows
            .iter()
            .filter(|r| r.0 == name)
            .map(|r| (r.1.clone(), r.2.clone()))
            .collect();
        family(name, "counter", "Per-queue counter.", rows);
    }
    family(
        "nicpoll_forwarding",
        "gauge",
        "1 while packet forwarding runs.",
        vec![(
            format!("{{mode=\"{}\"}}", escape(mode)),
            u8::from(forwarding).to_string(),
        )],
    );
    let summary = latency.summary();
    o += "# HELP nicpoll_latency_seconds One-way latency of stamped packets (rxonly, flowgen).\n# TYPE nicpoll_latency_seconds histogram\n";
    for &b in BUCKETS_NS {
        o += &format!(
            "nicpoll_latency_seconds_bucket{{le=\"{}\"}} {}\n",
            b as f64 / 1e9,
            latency.count_at_or_below(b)
        );
    }
    o += &format!(
        "nicpoll_latency_seconds_bucket{{le=\"+Inf\"}} {}\n",
        summary.samples
    );
    o += &format!("nicpoll_latency_seconds_sum {}\n", latency.sum_ns() / 1e9);
    o += &format!("nicpoll_latency_seconds_count {}\n", summary.samples);
    let mut family2 = |name: &str, kind: &str, help: &str, value: String| {
        o += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
    };
    family2(
        "nicpoll_latency_lost_total",
        "counter",
        "Stamped packets missing from their sequence.",
        summary.lost.to_string(),
    );
    family2(
        "nicpoll_latency_reordered_total",
        "counter",
        "Stamped packets that arrived after a later one.",
        summary.reordered.to_string(),
    );
    let pl = format!("{{pool=\"{}\"}}", escape(pool.0));
    o += &format!(
        "# HELP nicpoll_mempool_size Mbufs in the pool.\n# TYPE nicpoll_mempool_size gauge\nnicpoll_mempool_size{pl} {}\n\
         # HELP nicpoll_mempool_available Free mbufs.\n# TYPE nicpoll_mempool_available gauge\nnicpoll_mempool_available{pl} {}\n\
         # HELP nicpoll_mempool_in_use Mbufs handed out.\n# TYPE nicpoll_mempool_in_use gauge\nnicpoll_mempool_in_use{pl} {}\n",
        pool.1.size, pool.1.available, pool.1.in_use
    );
    o
}
