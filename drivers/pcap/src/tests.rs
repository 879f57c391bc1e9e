//! Tests of the pcap port: the conformance suite, round trips through files,
//! hand-written captures in every classic variant, damaged files, and the files
//! read back by tshark and tcpdump.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nicpoll::memory::DmaMemory;
use nicpoll::mempool::MempoolConfig;
use nicpoll::port::testing::{self, Delivery, conf, fill, test_frame};

use super::*;

/// A directory of its own for each test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "nicpoll-pcap-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A classic pcap file written by hand: `ns` picks the nanosecond magic, `big`
/// the byte order. Returns the bytes and the offset of each record header.
fn pcap_bytes(ns: bool, big: bool, linktype: u32, frames: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let u32b = |v: u32| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let u16b = |v: u16| {
        if big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut b = Vec::new();
    b.extend_from_slice(&u32b(if ns { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    b.extend_from_slice(&u16b(2));
    b.extend_from_slice(&u16b(4));
    b.extend_from_slice(&u32b(0));
    b.extend_from_slice(&u32b(0));
    b.extend_from_slice(&u32b(65535));
    b.extend_from_slice(&u32b(linktype));
    let mut offsets = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        offsets.push(b.len());
        b.extend_from_slice(&u32b(1_700_000_000 + i as u32));
        b.extend_from_slice(&u32b(if ns { 999_999_999 } else { 999_999 }));
        b.extend_from_slice(&u32b(f.len() as u32));
        b.extend_from_slice(&u32b(f.len() as u32));
        b.extend_from_slice(f);
    }
    (b, offsets)
}

fn frames(sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut f = test_frame(i as u32, len.max(64));
            f.truncate(len);
            f
        })
        .collect()
}

fn pool(name: &str, count: u32) -> Mempool {
    Mempool::new(&DmaMemory::plain(), &MempoolConfig::new(name, count)).unwrap()
}

fn port(spec: &str, id: u16) -> Result<PcapPort> {
    PcapPort::from_devargs(&DevArgs::parse(spec)?, id)
}

/// Receive until `max` packets arrived or ten bursts in a row bring nothing.
fn receive(q: &mut dyn RxQueue, max: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut b = MbufBatch::with_burst(32);
    let mut idle = 0;
    while got.len() < max && idle < 10 {
        if q.rx_burst(&mut b) == 0 {
            idle += 1;
        } else {
            idle = 0;
        }
        while let Some(m) = b.pop_front() {
            got.push(nicpoll::port::testing::packet_bytes(&m));
        }
    }
    got
}

fn xstat(p: &dyn Port, name: &str) -> u64 {
    p.xstats()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no xstat {name}"))
        .1
}

#[test]
fn infinite_rx_passes_the_conformance_suite_as_a_generator() {
    let dir = TempDir::new("gen");
    let rx = dir.path("in.pcap");
    std::fs::write(&rx, pcap_bytes(true, false, 1, &frames(&[64, 100, 1514])).0).unwrap();
    testing::run_conformance(
        "net_pcap infinite_rx=1",
        &mut |id| {
            Ok(Box::new(port(
                &format!("net_pcap0,rx_pcap={},infinite_rx=1", rx.display()),
                id,
            )?) as Box<dyn Port>)
        },
        Delivery::Generates,
    );
}

#[test]
fn tx_only_passes_the_conformance_suite_as_a_sink() {
    let dir = TempDir::new("sink");
    testing::run_conformance(
        "net_pcap tx_pcap",
        &mut |id| {
            let out = dir.path(&format!("sink{id}.pcap"));
            Ok(
                Box::new(port(&format!("net_pcap0,tx_pcap={}", out.display()), id)?)
                    as Box<dyn Port>,
            )
        },
        Delivery::Sink,
    );
    // What the suite sent to the sink is in the file, in order.
    let f = RxFile::load(&dir.path("sink1.pcap"), 1 << 20).unwrap();
    assert!(f.error().is_none());
    assert_eq!(f.len(), 8);
    for i in 0..8 {
        assert_eq!(f.frame(i), test_frame(i as u32, 64));
    }
}

#[test]
fn round_trip_is_byte_exact() {
    let dir = TempDir::new("rt");
    let out = dir.path("out.pcap");
    let pool = pool("pcap-rt", 512);
    let sizes = [14usize, 60, 64, 65, 128, 999, 1514, pool.data_room()];
    let want: Vec<Vec<u8>> = (0..300)
        .map(|i| {
            let len = sizes[i % sizes.len()];
            let mut f = test_frame(i as u32, len.max(64));
            f.truncate(len);
            f
        })
        .collect();

    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut tx = port(&format!("net_pcap0,tx_pcap={}", out.display()), 0).unwrap();
    tx.configure(&conf(0, &pool, 0, 1)).unwrap();
    let mut q = tx.start().unwrap();
    assert!(tx.link().up);
    let mut b = MbufBatch::with_burst(32);
    for chunk in want.chunks(32) {
        for f in chunk {
            let mut m = pool.alloc().unwrap();
            assert!(m.set_len(f.len()));
            m.data_mut().copy_from_slice(f);
            b.push(m).unwrap();
        }
        assert_eq!(q.tx[0].tx_burst(&mut b), chunk.len());
        assert!(b.is_empty());
    }
    drop(q);
    tx.stop().unwrap();
    assert!(!tx.link().up);
    let st = tx.stats();
    assert_eq!(st.opackets, 300);
    assert_eq!(st.obytes, want.iter().map(|f| f.len() as u64).sum::<u64>());
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();

    // The file itself: nanosecond magic, Ethernet, timestamps from the real clock.
    let raw = std::fs::read(&out).unwrap();
    assert_eq!(
        u32::from_ne_bytes(raw[0..4].try_into().unwrap()),
        0xa1b2_3c4d
    );
    let sec = u32::from_ne_bytes(raw[24..28].try_into().unwrap()) as u64;
    let nsec = u32::from_ne_bytes(raw[28..32].try_into().unwrap()) as u64;
    let ts = sec * 1_000_000_000 + nsec;
    assert!(
        before.as_nanos() as u64 <= ts && ts <= after.as_nanos() as u64,
        "timestamp {ts} outside {before:?}..{after:?}"
    );

    // Read back through a receive port.
    let mut rx = port(&format!("net_pcap1,rx_pcap={}", out.display()), 1).unwrap();
    assert!(rx.rx_file_error().is_none());
    rx.configure(&conf(1, &pool, 1, 0)).unwrap();
    let mut q = rx.start().unwrap();
    let mut got = Vec::new();
    let mut b = MbufBatch::with_burst(32);
    loop {
        let n = q.rx[0].rx_burst(&mut b);
        if n == 0 {
            break;
        }
        for m in b.iter() {
            assert_eq!((m.port(), m.queue()), (1, 0), "port id stamped");
        }
        while let Some(m) = b.pop_front() {
            got.push(m.data().to_vec());
        }
    }
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "packet {i}");
    }
    assert_eq!(
        q.rx[0].rx_burst(&mut b),
        0,
        "a finite file is delivered once"
    );
    let st = rx.stats();
    assert_eq!((st.ipackets, st.ierrors), (300, 0));
    assert_eq!(st.ibytes, want.iter().map(|f| f.len() as u64).sum::<u64>());
    assert_eq!(xstat(&rx, "rx_pcap_file_packets"), 300);
    assert_eq!(xstat(&rx, "rx_pcap_truncated_at_offset"), 0);

    // Each start replays the file from the beginning.
    drop(q);
    rx.stop().unwrap();
    let mut q = rx.start().unwrap();
    assert_eq!(receive(q.rx[0].as_mut(), 1)[0], want[0]);
    drop(q);
    rx.stop().unwrap();
    drop((tx, rx));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn microsecond_nanosecond_and_both_byte_orders_are_read() {
    let dir = TempDir::new("fmt");
    let pool = pool("pcap-fmt", 64);
    let want = frames(&[60, 64, 1514, 14, 300]);
    for ns in [false, true] {
        for big in [false, true] {
            let path = dir.path(&format!("ns{ns}-big{big}.pcap"));
            std::fs::write(&path, pcap_bytes(ns, big, 1, &want).0).unwrap();
            let mut p = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0).unwrap();
            let f = p.rx_file().unwrap();
            assert_eq!(
                f.resolution(),
                if ns {
                    pcap_file::TsResolution::NanoSecond
                } else {
                    pcap_file::TsResolution::MicroSecond
                }
            );
            assert_eq!(f.endianness().is_big(), big);
            p.configure(&conf(0, &pool, 1, 1)).unwrap();
            let mut q = p.start().unwrap();
            assert_eq!(receive(q.rx[0].as_mut(), 100), want, "ns={ns} big={big}");
            drop(q);
            p.stop().unwrap();
        }
    }
    assert_eq!(pool.in_use(), 0);
}

/// A file with three good records and a fourth cut at `cut` bytes into it.
fn truncated_case(dir: &TempDir, name: &str, cut: usize) -> (PathBuf, Vec<Vec<u8>>, usize) {
    let want = frames(&[64, 200, 1000, 500]);
    let (mut b, offs) = pcap_bytes(false, false, 1, &want);
    b.truncate(offs[3] + cut);
    let path = dir.path(name);
    std::fs::write(&path, &b).unwrap();
    (path, want[..3].to_vec(), offs[3])
}

#[test]
fn a_truncated_file_reports_file_and_offset_and_delivers_what_precedes() {
    let dir = TempDir::new("trunc");
    let pool = pool("pcap-trunc", 64);
    for (name, cut, needle) in [
        (
            "in-header.pcap",
            10,
            "record header is truncated: 10 of 16 bytes",
        ),
        (
            "in-data.pcap",
            16 + 250,
            "the record holds 500 bytes, the file ends after 250",
        ),
    ] {
        let (path, want, off) = truncated_case(&dir, name, cut);
        let mut p = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0).unwrap();
        let e = p
            .rx_file_error()
            .expect("the damage is reported")
            .to_string();
        assert!(
            e.contains(&path.display().to_string())
                && e.contains(&format!("byte offset {off}"))
                && e.contains(needle)
                && e.contains("3 packets before it"),
            "{e}"
        );
        assert_eq!(xstat(&p, "rx_pcap_truncated_at_offset"), off as u64);
        p.configure(&conf(0, &pool, 1, 1)).unwrap();
        let mut q = p.start().unwrap();
        assert_eq!(receive(q.rx[0].as_mut(), 100), want, "{name}");
        let st = p.stats();
        assert_eq!(
            (st.ipackets, st.ierrors),
            (3, 1),
            "{name}: the bad record counted once"
        );
        assert_eq!(receive(q.rx[0].as_mut(), 100).len(), 0);
        assert_eq!(p.stats().ierrors, 1, "{name}: counted once per pass");
        drop(q);
        p.stop().unwrap();
    }

    // A length no record can have is corruption, not truncation.
    let (mut b, offs) = pcap_bytes(true, true, 1, &frames(&[64, 64]));
    b[offs[1] + 8..offs[1] + 12].copy_from_slice(&0x1000_0000u32.to_be_bytes());
    let path = dir.path("corrupt.pcap");
    std::fs::write(&path, &b).unwrap();
    let p = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0).unwrap();
    let e = p.rx_file_error().unwrap().to_string();
    assert!(
        e.contains(&format!("byte offset {}", offs[1]))
            && e.contains("captured length 268435456 is more than 262144"),
        "{e}"
    );
    assert_eq!(p.rx_file().unwrap().len(), 1);

    // Replayed forever, a truncated file counts its bad record at each pass.
    let (path, want, _) = truncated_case(&dir, "loop.pcap", 5);
    let mut p = port(
        &format!("net_pcap0,rx_pcap={},infinite_rx=1", path.display()),
        0,
    )
    .unwrap();
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    let got = receive(q.rx[0].as_mut(), 9);
    assert!(got.len() >= 9);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &want[i % 3]);
    }
    assert!(p.stats().ierrors >= 2);
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn other_link_types_and_formats_are_refused_by_name() {
    let dir = TempDir::new("lt");
    let path = dir.path("sll.pcap");
    std::fs::write(&path, pcap_bytes(false, false, 113, &frames(&[64])).0).unwrap();
    let e = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&path.display().to_string())
            && e.contains("link type 113 (LINUX_SLL) is not Ethernet"),
        "{e}"
    );
    std::fs::write(&path, [0x0a, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0]).unwrap();
    let e = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("pcapng") && e.contains("editcap -F pcap"), "{e}");
    let missing = dir.path("missing.pcap");
    let e = port(&format!("net_pcap0,rx_pcap={}", missing.display()), 0).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(
        e.to_string().contains("open rx_pcap") && e.to_string().contains("missing.pcap"),
        "{e}"
    );
    let e = port(
        &format!(
            "net_pcap0,tx_pcap={}",
            dir.path("no/such/dir.pcap").display()
        ),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("create tx_pcap") && e.contains("no/such/dir.pcap"),
        "{e}"
    );
}

/// Records longer than an mbuf come as chains; records longer than the
/// frame limit (`--max-pkt-len`) or shorter than an Ethernet header are
/// counted and skipped.
#[test]
fn oversize_and_runt_frames_are_counted_and_skipped() {
    let dir = TempDir::new("big");
    let pool = pool("pcap-big", 64);
    let room = pool.data_room();
    let all = frames(&[64, room + 1, 100, 3000, 10, 128, 9014, 9015]);
    let path = dir.path("big.pcap");
    std::fs::write(&path, pcap_bytes(true, false, 1, &all).0).unwrap();
    let mut p = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0).unwrap();
    let mut c = conf(0, &pool, 1, 1);
    c.max_rx_pktlen = 9014;
    p.configure(&c).unwrap();
    let mut q = p.start().unwrap();
    let mut b = MbufBatch::with_burst(32);
    assert_eq!(q.rx[0].rx_burst(&mut b), 6);
    let segs: Vec<usize> = b.iter().map(|m| m.nb_segs()).collect();
    assert_eq!(segs, vec![1, 2, 1, 2, 1, 9014usize.div_ceil(room)]);
    let got: Vec<Vec<u8>> = b.iter().map(nicpoll::port::testing::packet_bytes).collect();
    let want: Vec<Vec<u8>> = [0, 1, 2, 3, 5, 6].iter().map(|&i| all[i].clone()).collect();
    assert_eq!(got, want);
    b.clear();
    let st = p.stats();
    assert_eq!((st.ipackets, st.ierrors), (6, 2));
    assert_eq!(st.ibytes, want.iter().map(|f| f.len() as u64).sum::<u64>());
    drop(q);
    p.stop().unwrap();

    // Replaying a file where nothing fits is refused at configure, not spun on.
    let path = dir.path("none-fit.pcap");
    std::fs::write(&path, pcap_bytes(true, false, 1, &frames(&[3000, 4])).0).unwrap();
    let mut p = port(
        &format!("net_pcap0,rx_pcap={},infinite_rx=1", path.display()),
        0,
    )
    .unwrap();
    let mut c = conf(0, &pool, 1, 1);
    c.max_rx_pktlen = 1518;
    let e = p.configure(&c).unwrap_err().to_string();
    assert!(e.contains("none of the 2 packets"), "{e}");
    assert_eq!(pool.in_use(), 0);
}

/// A pool too small for a jumbo record's chain: the record is counted in
/// rx_nombuf and skipped, nothing leaks, the next burst goes on.
#[test]
fn a_chain_the_pool_cannot_complete_is_counted() {
    let dir = TempDir::new("chainnombuf");
    let pool = pool("pcap-chain-nombuf", 4);
    let all = frames(&[9014, 64]);
    let path = dir.path("c.pcap");
    std::fs::write(&path, pcap_bytes(true, false, 1, &all).0).unwrap();
    let mut p = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0).unwrap();
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    let got = receive(q.rx[0].as_mut(), 10);
    assert_eq!(got, vec![all[1].clone()]);
    let st = p.stats();
    assert_eq!((st.ipackets, st.rx_nombuf), (1, 1));
    drop(q);
    assert_eq!(pool.in_use(), 0);
}

/// Chains are written as one record each; tshark (not our reader) reads the
/// jumbo records back whole.
#[test]
fn chains_are_written_whole_and_tshark_reads_them() {
    use nicpoll_testkit::{Need, skip_if_missing};
    if skip_if_missing(&[Need::Command("tshark")]) {
        return;
    }
    let dir = TempDir::new("chaintx");
    let pool = pool("pcap-chain-tx", 64);
    let path = dir.path("out.pcap");
    let mut p = port(&format!("net_pcap0,tx_pcap={}", path.display()), 0).unwrap();
    p.configure(&conf(0, &pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let mut b = MbufBatch::with_burst(8);
    let lens = [9014usize, 64, 3000];
    for (i, &len) in lens.iter().enumerate() {
        nicpoll::port::testing::fill_chain(&pool, &mut b, i as u32, len, 1000);
    }
    assert_eq!(q.tx[0].tx_burst(&mut b), 3);
    drop(q);
    p.stop().unwrap();
    assert_eq!(p.stats().obytes, lens.iter().sum::<usize>() as u64);
    let o = std::process::Command::new("tshark")
        .args(["-r", path.to_str().unwrap(), "-T", "fields"])
        .args(["-e", "frame.len", "-e", "frame.cap_len", "-e", "data.data"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (i, (line, &len)) in lines.iter().zip(&lens).enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        let payload: String = test_frame(i as u32, len)[14..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            (f[0], f[1], f[2]),
            (
                len.to_string().as_str(),
                len.to_string().as_str(),
                payload.as_str()
            ),
            "record {i}: tshark's length, captured length and payload"
        );
    }
}

#[test]
fn an_empty_pool_counts_nombuf_and_loses_nothing() {
    let dir = TempDir::new("nombuf");
    let pool = pool("pcap-nombuf", 8);
    let want = frames(&[64, 65, 66]);
    let path = dir.path("in.pcap");
    std::fs::write(&path, pcap_bytes(false, true, 1, &want).0).unwrap();
    let mut p = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0).unwrap();
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    let mut hold = MbufBatch::with_burst(32);
    while let Some(m) = pool.alloc() {
        hold.push(m).unwrap();
    }
    let mut b = MbufBatch::with_burst(32);
    assert_eq!(q.rx[0].rx_burst(&mut b), 0);
    assert_eq!(p.stats().rx_nombuf, 3);
    hold.clear();
    assert_eq!(receive(q.rx[0].as_mut(), 100), want);
    drop(q);
    p.stop().unwrap();
}

#[test]
fn the_transmit_file_lives_across_restarts_and_stop_waits_for_queues() {
    let dir = TempDir::new("restart");
    let pool = pool("pcap-restart", 64);
    let out = dir.path("out.pcap");
    let mut p = port(&format!("net_pcap0,tx_pcap={}", out.display()), 0).unwrap();
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut b = MbufBatch::with_burst(32);
    for (first, n) in [(0u32, 2usize), (2, 3)] {
        let mut q = p.start().unwrap();
        fill(&pool, &mut b, first, n, 80);
        assert_eq!(q.tx[0].tx_burst(&mut b), n);
        let e = p.stop().unwrap_err().to_string();
        assert!(e.contains("still in use"), "{e}");
        assert!(p.is_started());
        drop(q);
        p.stop().unwrap();
    }
    let f = RxFile::load(&out, 1 << 20).unwrap();
    assert_eq!(f.len(), 5);
    for i in 0..5 {
        assert_eq!(f.frame(i), test_frame(i as u32, 80));
    }
}

#[test]
fn a_failed_write_is_counted_and_reported_by_stop() {
    if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Path("/dev/full")]) {
        return;
    }
    let full = Path::new("/dev/full");
    let e = port("net_pcap0,tx_pcap=/dev/full", 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("write tx_pcap /dev/full"), "{e}");

    let dir = TempDir::new("full");
    let pool = pool("pcap-full", 64);
    let mut p = port(
        &format!("net_pcap0,tx_pcap={}", dir.path("x.pcap").display()),
        0,
    )
    .unwrap();
    // Swap in a writer on /dev/full whose 256-byte buffer fills on the 4th record.
    let f = std::fs::OpenOptions::new().write(true).open(full).unwrap();
    *lock(&p.tx) = Some(TxFile::on_file(full, f, 256));
    p.configure(&conf(0, &pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let mut b = MbufBatch::with_burst(32);
    fill(&pool, &mut b, 0, 10, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 10, "failed packets are consumed");
    fill(&pool, &mut b, 10, 5, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 5);
    let st = p.stats();
    assert_eq!(
        (st.opackets, st.oerrors),
        (3, 12),
        "nothing written after a failure"
    );
    drop(q);
    let e = p.stop().unwrap_err().to_string();
    assert!(
        e.contains("write tx_pcap /dev/full") && e.contains("No space left"),
        "{e}"
    );
    assert!(!p.is_started(), "the port stops anyway");
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn without_tx_pcap_transmit_drops_and_counts() {
    let dir = TempDir::new("drop");
    let pool = pool("pcap-drop", 64);
    let path = dir.path("in.pcap");
    std::fs::write(&path, pcap_bytes(false, false, 1, &frames(&[64])).0).unwrap();
    let mut p = port(&format!("net_pcap0,rx_pcap={}", path.display()), 0).unwrap();
    p.configure(&conf(0, &pool, 1, 1)).unwrap();
    let mut q = p.start().unwrap();
    let mut b = MbufBatch::with_burst(32);
    fill(&pool, &mut b, 0, 5, 100);
    assert_eq!(q.tx[0].tx_burst(&mut b), 5);
    let st = p.stats();
    assert_eq!((st.opackets, st.obytes, st.oerrors), (5, 500, 0));
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn devargs_are_checked() {
    let dir = TempDir::new("args");
    let rx = dir.path("in.pcap");
    std::fs::write(&rx, pcap_bytes(false, false, 1, &frames(&[64])).0).unwrap();
    let o = PcapOptions::from_devargs(
        &DevArgs::parse(&format!("net_pcap0,rx_pcap={},infinite_rx=1", rx.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(o.rx_pcap.as_deref(), Some(rx.as_path()));
    assert!(o.infinite_rx && o.tx_pcap.is_none());
    for (spec, needle) in [
        ("net_pcap0,iface=eth0", "use net_af_packet,iface=eth0"),
        (
            "net_pcap0,rx_iface=eth1,tx_pcap=x",
            "rx_iface=eth1: net_pcap does not capture live",
        ),
        ("net_pcap0,rx_iface_in=eth1", "net_af_packet,iface=eth1"),
        ("net_pcap0,tx_iface=eth2", "net_af_packet,iface=eth2"),
        ("net_pcap0,rx_pcap=a,tx_pcap=b,rx_pcap=c", "twice"),
        ("net_pcap0,rx_pcaps=a", "unknown key \"rx_pcaps\""),
        ("net_pcap0", "neither rx_pcap nor tx_pcap"),
        ("net_pcap0,rx_pcap=", "rx_pcap= needs a file name"),
        (
            "net_pcap0,tx_pcap=x,infinite_rx=1",
            "infinite_rx=1 needs rx_pcap",
        ),
        ("net_pcap0,rx_pcap=x,infinite_rx=2", "not a boolean"),
        ("net_null0,rx_pcap=x", "not a net_pcap device"),
    ] {
        let e = match DevArgs::parse(spec) {
            Err(e) => e,
            Ok(d) => PcapPort::from_devargs(&d, 0).unwrap_err(),
        }
        .to_string();
        assert!(e.contains(needle), "{spec}: {e}");
    }
    // The same file both ways would truncate the capture before it is replayed.
    let e = port(
        &format!("net_pcap0,rx_pcap={0},tx_pcap={0}", rx.display()),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("same file"), "{e}");
    assert_eq!(std::fs::metadata(&rx).unwrap().len(), 24 + 16 + 64);
    // Larger than the in-memory limit.
    let e = PcapPort::new(
        "net_pcap0",
        PcapOptions {
            rx_pcap: Some(rx.clone()),
            max_rx_file_bytes: 100,
            ..PcapOptions::default()
        },
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("104 bytes is more than the 100-byte limit") && e.contains("in.pcap"),
        "{e}"
    );
    // An empty capture cannot be replayed forever.
    let empty = dir.path("empty.pcap");
    std::fs::write(&empty, pcap_bytes(true, false, 1, &[]).0).unwrap();
    let e = port(
        &format!("net_pcap0,rx_pcap={},infinite_rx=1", empty.display()),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds no packet"), "{e}");
    assert!(port(&format!("net_pcap0,rx_pcap={}", empty.display()), 0).is_ok());
}

/// Write `n` frames of assorted sizes through a transmit port; return the path
/// and the lengths.
fn write_for_tools(dir: &TempDir, n: usize) -> (PathBuf, Vec<usize>) {
    let pool = pool("pcap-tools", 256);
    let out = dir.path("out.pcap");
    let mut p = port(&format!("net_pcap0,tx_pcap={}", out.display()), 0).unwrap();
    p.configure(&conf(0, &pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let lens: Vec<usize> = (0..n).map(|i| [60, 64, 128, 1514, 999][i % 5]).collect();
    let mut b = MbufBatch::with_burst(32);
    for (i, &len) in lens.iter().enumerate() {
        fill(&pool, &mut b, i as u32, 1, len);
        // fill() pads to 64: trim to the exact length.
        let m = &mut b.as_mut_slice()[0];
        m.set_len(len);
        assert_eq!(q.tx[0].tx_burst(&mut b), 1);
    }
    drop(q);
    p.stop().unwrap();
    (out, lens)
}

/// Whether `name` is installed; skips the test if not.
fn tool(name: &str) -> bool {
    !nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Command(name)])
}

fn lengths_from(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn tshark_reads_the_transmit_file() {
    if !tool("tshark") {
        return;
    }
    let dir = TempDir::new("tshark");
    let (out, lens) = write_for_tools(&dir, 50);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let o = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&out)
        .args(["-T", "fields", "-e", "frame.len", "-e", "frame.time_epoch"])
        .output()
        .unwrap();
    let text = lengths_from(&o, "tshark");
    let rows: Vec<(usize, f64)> = text
        .lines()
        .map(|l| {
            let mut it = l.split('\t');
            (
                it.next().unwrap().trim().parse().unwrap(),
                it.next().unwrap().trim().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), lens, "{text}");
    for (_, t) in rows {
        assert!((t - now).abs() < 60.0, "timestamp {t} is not now ({now})");
    }
}

#[test]
fn tcpdump_reads_the_transmit_file() {
    if !tool("tcpdump") {
        return;
    }
    let dir = TempDir::new("tcpdump");
    let (out, lens) = write_for_tools(&dir, 50);
    let o = Command::new("tcpdump")
        .args(["-nn", "-e", "-r"])
        .arg(&out)
        .output()
        .unwrap();
    let text = lengths_from(&o, "tcpdump");
    // Packet lines start with the timestamp; the hex dump of unknown
    // EtherTypes is indented.
    let got: Vec<usize> = text
        .lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .map(|l| {
            let rest = &l[l.find(", length ").unwrap_or_else(|| panic!("{l}")) + 9..];
            rest[..rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())]
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(got, lens, "{text}");
}

#[test]
fn helpers_agree_with_the_crate() {
    // The hand-written writer above and RxFile agree on record offsets.
    let (b, offs) = pcap_bytes(true, true, 1, &frames(&[64, 70]));
    let f = RxFile::parse(Path::new("mem"), b).unwrap();
    assert_eq!(f.frames()[0].0 as usize, offs[0] + 16);
    assert_eq!(f.frames()[1].0 as usize, offs[1] + 16);
}
