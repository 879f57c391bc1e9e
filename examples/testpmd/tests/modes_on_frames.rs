//! Every forwarding mode end to end, checked on the frames themselves: testpmd
//! between two net_pcap ports (port 0 replays a capture written here, each
//! port writes what it sends to its own capture), and the output read back by
//! tshark, a parser we did not write, with IPv4, UDP and TCP checksum
//! validation on. The input is validated by tshark the same way first, so the
//! frames built here are known to be right.
//!
//! Port topology is testpmd's default (paired): what port 0 receives leaves
//! through port 1.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use nicpoll_testkit::{Need, skip_if_missing};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_testpmd");

/// Source and destination MACs of the input frames.
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa1];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa2];
/// The `--eth-peer` of each port.
const PEER0: &str = "02:00:00:00:00:b0";
const PEER1: &str = "02:00:00:00:00:b1";

// ---------------------------------------------------------------------------
// Frames written here (RFC 791, 768, 793, 826, 792, 8200; IEEE 802.1Q)

/// The RFC 1071 checksum of `data` with `init` already summed in.
fn checksum(init: u32, data: &[u8]) -> u16 {
    let mut sum = init;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn eth(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = [dst, src].concat();
    if let Some(id) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header (no options) + `l4`, with both checksums filled in (`l4_csum_at`:
/// offset of the transport checksum inside `l4`, if it has a pseudo-header one).
fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    mut l4: Vec<u8>,
    l4_csum_at: Option<usize>,
) -> Vec<u8> {
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = checksum(0, &h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    match l4_csum_at {
        Some(at) => {
            let pseudo = sum_words(&src) + sum_words(&dst) + u32::from(proto) + l4.len() as u32;
            let c = checksum(pseudo, &l4);
            l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        None => {
            let c = checksum(0, &l4);
            l4[2..4].copy_from_slice(&c.to_be_bytes());
        }
    }
    h.extend_from_slice(&l4);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes()); // sequence
    t.extend_from_slice(&2000u32.to_be_bytes()); // acknowledgment
    t.extend_from_slice(&[0x50, 0x18]); // 5 words, PSH+ACK
    t.extend_from_slice(&8192u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    t.extend_from_slice(payload);
    t
}

fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut i = vec![8, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&seq.to_be_bytes());
    i.extend_from_slice(payload);
    i
}

fn ipv6_udp(src: [u8; 16], dst: [u8; 16], l4: Vec<u8>) -> Vec<u8> {
    let mut l4 = l4;
    let pseudo = sum_words(&src) + sum_words(&dst) + l4.len() as u32 + 17;
    let c = checksum(pseudo, &l4);
    l4[6..8].copy_from_slice(&c.to_be_bytes());
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[17, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(&l4);
    h
}

fn arp_request(sender_mac: [u8; 6], sender_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender_ip);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target_ip);
    a
}

/// Pad to the 60-byte Ethernet minimum (without FCS), as a NIC would.
fn padded(mut f: Vec<u8>) -> Vec<u8> {
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

/// The input: one frame of each kind the modes treat differently.
fn input_frames() -> Vec<Vec<u8>> {
    frames_with(40, 20, 32, 16)
}

/// The same frames with jumbo payloads (UDP/IPv4 9014 bytes in all: an
/// MTU-9000 frame), which testpmd's 2 KiB mbufs hold only as chains.
fn jumbo_frames() -> Vec<Vec<u8>> {
    frames_with(8972, 5000, 8972, 3000)
}

/// The input frames with payloads of these lengths: UDP (IPv4 and IPv6),
/// TCP, ICMP echo, ICMP echo in a VLAN.
fn frames_with(
    udp_len: usize,
    tcp_len: usize,
    icmp_len: usize,
    vlan_icmp_len: usize,
) -> Vec<Vec<u8>> {
    let big: Vec<u8> = (0..udp_len.max(tcp_len).max(icmp_len))
        .map(|i| (i * 7) as u8)
        .collect();
    let payload = &big[..udp_len];
    vec![
        // 0: UDP over IPv4
        [
            eth(MAC_B, MAC_A, None, 0x0800),
            ipv4(
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                17,
                udp(1111, 2222, payload),
                Some(6),
            ),
        ]
        .concat(),
        // 1: TCP over IPv4
        [
            eth(MAC_B, MAC_A, None, 0x0800),
            ipv4(
                [10, 0, 0, 3],
                [10, 0, 0, 4],
                6,
                tcp(3333, 4444, &big[..tcp_len]),
                Some(16),
            ),
        ]
        .concat(),
        // 2: UDP over IPv6
        [
            eth(MAC_B, MAC_A, None, 0x86dd),
            ipv6_udp(v6(1), v6(2), udp(5555, 6666, payload)),
        ]
        .concat(),
        // 3: ARP request: who has 10.0.0.99, tell 10.0.0.1
        padded(
            [
                eth([0xff; 6], MAC_A, None, 0x0806),
                arp_request(MAC_A, [10, 0, 0, 1], [10, 0, 0, 99]),
            ]
            .concat(),
        ),
        // 4: ICMP echo request
        [
            eth(MAC_B, MAC_A, None, 0x0800),
            ipv4(
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                1,
                icmp_echo(0x1234, 7, &big[..icmp_len]),
                None,
            ),
        ]
        .concat(),
        // 5: ICMP echo request in VLAN 100
        [
            eth(MAC_B, MAC_A, Some(100), 0x0800),
            ipv4(
                [10, 0, 0, 5],
                [10, 0, 0, 6],
                1,
                icmp_echo(0x4321, 9, &big[..vlan_icmp_len]),
                None,
            ),
        ]
        .concat(),
        // 6: not IP (IEEE 802 local experimental EtherType)
        padded([eth(MAC_B, MAC_A, None, 0x88b5), b"nicpoll".to_vec()].concat()),
    ]
}

/// A classic pcap file (little-endian, microseconds, link type Ethernet).
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&[0; 8]); // thiszone, sigfigs
    b.extend_from_slice(&65535u32.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        b.extend_from_slice(&(i as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap();
}

// ---------------------------------------------------------------------------
// Reading captures with tshark

/// The fields read per frame (`-T fields`, first occurrence).
const FIELDS: &[&str] = &[
    "frame.len",
    "eth.src",
    "eth.dst",
    "vlan.id",
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.checksum.status",
    "ipv6.src",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "udp.checksum.status",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.checksum.status",
    "icmp.type",
    "icmp.ident",
    "icmp.seq",
    "icmp.checksum.status",
    "arp.opcode",
    "arp.src.hw_mac",
    "arp.src.proto_ipv4",
    "arp.dst.hw_mac",
    "arp.dst.proto_ipv4",
];

/// tshark's checksum status for a checksum it verified and found right.
const GOOD: &str = "1";

type Fields = HashMap<&'static str, String>;

fn tshark(path: &Path, args: &[&str]) -> String {
    let o = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
        ])
        .args(args)
        .output()
        .expect("tshark runs");
    assert!(
        o.status.success(),
        "tshark on {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// The fields of every frame of the capture, as tshark decodes them.
fn fields(path: &Path) -> Vec<Fields> {
    let mut args = vec!["-T", "fields", "-E", "occurrence=f", "-E", "separator=\t"];
    for f in FIELDS {
        args.extend(["-e", f]);
    }
    tshark(path, &args)
        .lines()
        .map(|l| {
            let vals: Vec<&str> = l.split('\t').collect();
            assert_eq!(vals.len(), FIELDS.len(), "{l}");
            FIELDS
                .iter()
                .zip(vals)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (*k, v.to_string()))
                .collect()
        })
        .collect()
}

/// The bytes of every frame of the capture, as tshark reads them (`frame_raw`).
fn raw_frames(path: &Path) -> Vec<Vec<u8>> {
    let doc: Value = serde_json::from_str(&tshark(path, &["-T", "json", "-x", "-j", "frame"]))
        .expect("tshark -T json");
    doc.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let hex = p["_source"]["layers"]["frame_raw"][0].as_str().unwrap();
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
}

fn get<'a>(f: &'a Fields, k: &str) -> &'a str {
    f.get(k).map_or("", String::as_str)
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

// ---------------------------------------------------------------------------
// Running testpmd

struct Run {
    dir: tempfile::TempDir,
    /// The port MACs testpmd reported ("Port N: MAC").
    port_mac: [String; 2],
    /// The final statistics (JSON event).
    fin: Value,
}

impl Run {
    fn out(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("out{port}.pcap"))
    }
}

/// testpmd in `mode` between net_pcap0 (replaying the input, writing out0.pcap)
/// and net_pcap1 (writing out1.pcap), with `extra` application options.
fn run_mode(mode: &str, extra: &[&str]) -> Run {
    run_mode_on(mode, extra, &input_frames())
}

/// [`run_mode`] on `frames`.
fn run_mode_on(mode: &str, extra: &[&str], frames: &[Vec<u8>]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (input, out0, out1) = (
        dir.path().join("in.pcap"),
        dir.path().join("out0.pcap"),
        dir.path().join("out1.pcap"),
    );
    write_pcap(&input, frames);
    let o = Command::new(BIN)
        .args(["--no-pci", "--no-huge", "-l", "0,1"])
        .arg(format!(
            "--vdev=net_pcap0,rx_pcap={},tx_pcap={}",
            input.display(),
            out0.display()
        ))
        .arg(format!("--vdev=net_pcap1,tx_pcap={}", out1.display()))
        .args(["--", &format!("--forward-mode={mode}")])
        .args([
            // Draining receive queues before the start would eat the capture.
            "--no-flush-rx",
            "--stats-format=json",
            "--no-latency",
            &format!("--eth-peer=0,{PEER0}"),
            &format!("--eth-peer=1,{PEER1}"),
        ])
        .args(extra)
        .output()
        .expect("testpmd runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{mode}: {stdout}{stderr}");
    let text = format!("{stdout}{stderr}");
    let port_mac = [0, 1].map(|p| {
        let prefix = format!("Port {p}: ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix).filter(|m| m.len() == 17))
            .unwrap_or_else(|| panic!("no \"{prefix}MAC\" line: {text}"))
            .to_lowercase()
    });
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let fin = events
        .iter()
        .find(|e| e["event"] == "final")
        .unwrap_or_else(|| panic!("no final event: {stdout}"))
        .clone();
    let pool = events.iter().find(|e| e["event"] == "mempool").unwrap();
    assert_eq!(pool["mempool"]["in_use"], 0, "{mode}: mbufs leaked");
    Run { dir, port_mac, fin }
}

fn port_stat(r: &Run, port: usize, key: &str) -> u64 {
    r.fin["ports"][port][key].as_u64().unwrap()
}

fn tools() -> bool {
    !skip_if_missing(&[Need::Command("tshark")])
}

/// A forwarding mode over `frames` once: port 1 sends what port 0 got, port
/// 0 sends nothing; returns the run and (input, output) as tshark reads them.
fn forward_once_on(mode: &str, frames: &[Vec<u8>]) -> (Run, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let r = run_mode_on(mode, &["--run-time=1"], frames);
    let input = raw_frames(&r.dir.path().join("in.pcap"));
    assert_eq!(input, frames, "tshark reads the input as written");
    assert_eq!(
        port_stat(&r, 0, "rx_packets"),
        input.len() as u64,
        "{}",
        r.fin
    );
    assert!(
        raw_frames(&r.out(0)).is_empty(),
        "{mode}: port 0 sent frames"
    );
    let out = raw_frames(&r.out(1));
    assert_eq!(
        port_stat(&r, 1, "tx_packets"),
        out.len() as u64,
        "{}",
        r.fin
    );
    (r, input, out)
}

// ---------------------------------------------------------------------------
// The modes

/// The input is what the checks below assume: tshark decodes each frame as
/// intended and finds every checksum right.
#[test]
fn input_frames_are_valid_for_tshark() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.pcap");
    write_pcap(&p, &input_frames());
    let f = fields(&p);
    assert_eq!(f.len(), 7);
    for (i, proto) in [(0, "udp"), (1, "tcp"), (2, "udp")] {
        assert_eq!(
            get(&f[i], &format!("{proto}.checksum.status")),
            GOOD,
            "{i}: {:?}",
            f[i]
        );
    }
    for i in [0, 1, 4, 5] {
        assert_eq!(get(&f[i], "ip.checksum.status"), GOOD, "{i}: {:?}", f[i]);
    }
    for i in [4, 5] {
        assert_eq!(get(&f[i], "icmp.type"), "8");
        assert_eq!(get(&f[i], "icmp.checksum.status"), GOOD, "{i}: {:?}", f[i]);
    }
    assert_eq!(get(&f[5], "vlan.id"), "100");
    assert_eq!(get(&f[3], "arp.opcode"), "1");
    assert_eq!(get(&f[2], "ipv6.dst"), "fd00::2");
}

#[test]
fn io_forwards_every_frame_byte_for_byte() {
    io_on(&input_frames());
}

fn io_on(frames: &[Vec<u8>]) {
    if !tools() {
        return;
    }
    let (_, input, out) = forward_once_on("io", frames);
    assert_eq!(out, input);
}

#[test]
fn mac_writes_the_ports_own_mac_and_its_eth_peer() {
    mac_on(&input_frames());
}

fn mac_on(frames: &[Vec<u8>]) {
    if !tools() {
        return;
    }
    let (r, input, out) = forward_once_on("mac", frames);
    assert_eq!(out.len(), input.len());
    for (o, i) in out.iter().zip(&input) {
        assert_eq!(mac(&o[0..6]), PEER1, "destination: port 1's --eth-peer");
        assert_eq!(mac(&o[6..12]), r.port_mac[1], "source: port 1's MAC");
        assert_eq!(o[12..], i[12..], "the rest untouched");
    }
}

#[test]
fn macswap_swaps_the_macs_and_nothing_else() {
    macswap_on(&input_frames());
}

fn macswap_on(frames: &[Vec<u8>]) {
    if !tools() {
        return;
    }
    let (_, input, out) = forward_once_on("macswap", frames);
    assert_eq!(out.len(), input.len());
    for (o, i) in out.iter().zip(&input) {
        assert_eq!((&o[0..6], &o[6..12]), (&i[6..12], &i[0..6]));
        assert_eq!(o[12..], i[12..]);
    }
}

#[test]
fn fivetswap_swaps_macs_addresses_and_ports_keeping_checksums_valid() {
    fivetswap_on(&input_frames());
}

fn fivetswap_on(frames: &[Vec<u8>]) {
    if !tools() {
        return;
    }
    let (r, input, out) = forward_once_on("5tswap", frames);
    assert_eq!(out.len(), input.len());
    let (fi, fo) = (fields(&r.dir.path().join("in.pcap")), fields(&r.out(1)));
    for (n, (i, o)) in fi.iter().zip(&fo).enumerate() {
        let swapped = |a: &str, b: &str| {
            assert_eq!(
                (get(o, a), get(o, b)),
                (get(i, b), get(i, a)),
                "frame {n}: {a}/{b}: in {i:?} out {o:?}"
            );
        };
        swapped("eth.src", "eth.dst");
        swapped("ip.src", "ip.dst");
        swapped("ipv6.src", "ipv6.dst");
        swapped("udp.srcport", "udp.dstport");
        swapped("tcp.srcport", "tcp.dstport");
        for k in [
            "ip.checksum.status",
            "udp.checksum.status",
            "tcp.checksum.status",
            "icmp.checksum.status",
        ] {
            assert_eq!(get(o, k), get(i, k), "frame {n}: {k} in {i:?} out {o:?}");
        }
        for k in [
            "frame.len",
            "vlan.id",
            "ip.proto",
            "icmp.type",
            "arp.opcode",
        ] {
            assert_eq!(get(o, k), get(i, k), "frame {n}: {k}");
        }
    }
    // Frames without IP (ARP, the experimental EtherType) get their MACs swapped only.
    for n in [3, 6] {
        assert_eq!(out[n][12..], input[n][12..], "frame {n}");
    }
    // And the payloads travel untouched (UDP/IPv4: after its 42 header bytes).
    assert_eq!(out[0][42..], input[0][42..]);
}

#[test]
fn icmpecho_answers_arp_and_echo_requests_with_valid_checksums() {
    icmpecho_on(&input_frames());
}

fn icmpecho_on(frames: &[Vec<u8>]) {
    if !tools() {
        return;
    }
    let (r, _, out) = forward_once_on("icmpecho", frames);
    let f = fields(&r.out(1));
    // The ARP request and the two echo requests are answered, in order; the
    // UDP, TCP, IPv6 and non-IP frames are not.
    assert_eq!(out.len(), 3, "{f:?}");
    let arp = &f[0];
    let port1 = r.port_mac[1].as_str();
    let a = mac(&MAC_A);
    assert_eq!(get(arp, "arp.opcode"), "2", "a reply: {arp:?}");
    assert_eq!(
        (get(arp, "eth.src"), get(arp, "eth.dst")),
        (port1, a.as_str())
    );
    assert_eq!(get(arp, "arp.src.hw_mac"), port1);
    assert_eq!(
        get(arp, "arp.src.proto_ipv4"),
        "10.0.0.99",
        "the address asked for"
    );
    assert_eq!(get(arp, "arp.dst.hw_mac"), a);
    assert_eq!(get(arp, "arp.dst.proto_ipv4"), "10.0.0.1");
    let b = mac(&MAC_B);
    for (reply, (src, dst, id, seq, vlan)) in f[1..].iter().zip([
        ("10.0.0.2", "10.0.0.1", 0x1234, "7", ""),
        ("10.0.0.6", "10.0.0.5", 0x4321, "9", "100"),
    ]) {
        assert_eq!(get(reply, "icmp.type"), "0", "an echo reply: {reply:?}");
        assert_eq!((get(reply, "ip.src"), get(reply, "ip.dst")), (src, dst));
        assert_eq!(
            (get(reply, "eth.src"), get(reply, "eth.dst")),
            (b.as_str(), a.as_str())
        );
        // tshark -n prints the identifier in decimal.
        let id = u16::to_string(&id);
        assert_eq!(
            (get(reply, "icmp.ident"), get(reply, "icmp.seq")),
            (id.as_str(), seq)
        );
        assert_eq!(get(reply, "vlan.id"), vlan, "the VLAN tag is kept");
        assert_eq!(get(reply, "icmp.checksum.status"), GOOD, "{reply:?}");
        assert_eq!(get(reply, "ip.checksum.status"), GOOD, "{reply:?}");
    }
}

#[test]
fn rxonly_counts_every_frame_and_sends_nothing() {
    if !tools() {
        return;
    }
    let r = run_mode("rxonly", &["--run-time=1"]);
    assert_eq!(port_stat(&r, 0, "rx_packets"), 7, "{}", r.fin);
    assert_eq!(r.fin["total"]["tx_packets"], 0, "{}", r.fin);
    for p in [0, 1] {
        assert!(raw_frames(&r.out(p)).is_empty(), "port {p} sent frames");
    }
}

/// The generated frames of both ports, which must hold at least `min` each.
fn generated(r: &Run, min: usize) -> [Vec<Fields>; 2] {
    [0, 1].map(|p| {
        let f = fields(&r.out(p));
        assert!(f.len() >= min, "port {p} sent {} frames", f.len());
        assert_eq!(
            port_stat(r, p as usize, "tx_packets"),
            f.len() as u64,
            "{}",
            r.fin
        );
        f
    })
}

#[test]
fn txonly_sends_txpkts_long_frames_with_the_configured_addresses() {
    if !tools() {
        return;
    }
    let r = run_mode(
        "txonly",
        &[
            "--txpkts=80",
            "--tx-ip=10.9.8.7,10.6.5.4",
            "--tx-udp=4000,5000",
            "--max-packets=2000",
            "--run-time=10",
        ],
    );
    for (p, frames) in generated(&r, 32).iter().enumerate() {
        let peer = [PEER0, PEER1][p];
        for f in frames {
            let want = [
                ("frame.len", "80"),
                ("eth.src", r.port_mac[p].as_str()),
                ("eth.dst", peer),
                ("ip.src", "10.9.8.7"),
                ("ip.dst", "10.6.5.4"),
                ("ip.checksum.status", GOOD),
                ("udp.srcport", "4000"),
                ("udp.dstport", "5000"),
            ];
            for (k, v) in want {
                assert_eq!(get(f, k), v, "port {p} {k}: {f:?}");
            }
        }
    }
}

/// `--txpkts` with several segments: every frame a chain of those lengths
/// (the headers cut across the first two), sent whole: tshark reads 9000-byte
/// frames with the configured addresses, a valid IP checksum and the IP and
/// UDP lengths of the whole frame.
#[test]
fn txonly_sends_multi_segment_txpkts_as_whole_frames() {
    if !tools() {
        return;
    }
    let r = run_mode(
        "txonly",
        &[
            "--txpkts=20,1600,1600,1600,1600,1600,980",
            "--tx-ip=10.9.8.7,10.6.5.4",
            "--max-packets=500",
            "--run-time=10",
        ],
    );
    for (p, frames) in generated(&r, 32).iter().enumerate() {
        for f in frames {
            let want = [
                ("frame.len", "9000"),
                ("eth.src", r.port_mac[p].as_str()),
                ("ip.src", "10.9.8.7"),
                ("ip.dst", "10.6.5.4"),
                ("ip.checksum.status", GOOD),
            ];
            for (k, v) in want {
                assert_eq!(get(f, k), v, "port {p} {k}: {f:?}");
            }
        }
    }
    let raw = raw_frames(&r.out(0));
    for f in &raw {
        assert_eq!(
            u16::from_be_bytes([f[16], f[17]]),
            9000 - 14,
            "IP total length"
        );
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 9000 - 34, "UDP length");
    }
}

/// The jumbo input is what the jumbo checks assume (tshark decodes it).
#[test]
fn jumbo_input_frames_are_valid_for_tshark() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jumbo.pcap");
    write_pcap(&path, &jumbo_frames());
    assert_eq!(raw_frames(&path), jumbo_frames());
    let f = fields(&path);
    assert_eq!(get(&f[0], "frame.len"), "9014");
    for (n, k) in [
        (0, "udp.checksum.status"),
        (1, "tcp.checksum.status"),
        (2, "udp.checksum.status"),
        (4, "icmp.checksum.status"),
        (5, "icmp.checksum.status"),
    ] {
        assert_eq!(get(&f[n], k), GOOD, "frame {n}: {:?}", f[n]);
    }
}

#[test]
fn flowgen_spreads_its_frames_over_the_configured_flows() {
    if !tools() {
        return;
    }
    let r = run_mode(
        "flowgen",
        &[
            "--flowgen-flows=7",
            "--txpkts=64",
            "--max-packets=2000",
            "--run-time=10",
        ],
    );
    for (p, frames) in generated(&r, 64).iter().enumerate() {
        let flows: BTreeSet<&str> = frames.iter().map(|f| get(f, "ip.dst")).collect();
        let want: BTreeSet<String> = (0..7).map(|i| format!("10.253.0.{i}")).collect();
        assert_eq!(
            flows,
            want.iter().map(String::as_str).collect(),
            "port {p}: the destinations are the flows"
        );
        for f in frames {
            for (k, v) in [
                ("frame.len", "64"),
                ("ip.src", "10.254.0.0"),
                ("ip.checksum.status", GOOD),
                ("udp.srcport", "1000"),
                ("udp.dstport", "1001"),
            ] {
                assert_eq!(get(f, k), v, "port {p} {k}: {f:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The same on jumbo frames: net_pcap delivers them as chains of testpmd's
// 2 KiB mbufs, the engines read and write the first segment (where the
// headers are), and net_pcap writes every segment back as one record.

#[test]
fn io_forwards_jumbo_frames_byte_for_byte() {
    io_on(&jumbo_frames());
}

#[test]
fn mac_rewrites_jumbo_frames() {
    mac_on(&jumbo_frames());
}

#[test]
fn macswap_swaps_the_macs_of_jumbo_frames() {
    macswap_on(&jumbo_frames());
}

#[test]
fn fivetswap_swaps_jumbo_frames_keeping_checksums_valid() {
    fivetswap_on(&jumbo_frames());
}

#[test]
fn icmpecho_answers_jumbo_echo_requests_with_valid_checksums() {
    icmpecho_on(&jumbo_frames());
}
