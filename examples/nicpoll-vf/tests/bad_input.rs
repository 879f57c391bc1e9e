//! Bad input from a vfio-user client, sent by a raw client written here:
//! malformed and unknown messages, a client that goes away in the middle of a
//! message, DMA to addresses the client never mapped, garbage in every
//! register, a device reset in a loop. Each is answered or dropped, logged
//! and counted; the server never dies, and another VF's client, served all
//! along, notices nothing.

mod common;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;

const BAR0: u32 = 0;
const BAR3: u32 = 3;
const CONFIG: u32 = 7;
const VFGEN_RSTAT: u64 = 0x8800;
const VFACTIVE: u32 = 2;

/// A client on another VF that reads VFGEN_RSTAT in a loop while the test
/// runs: every read must succeed.
struct Bystander {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Bystander {
    fn start(sock: &std::path::Path) -> Bystander {
        let mut c = Client::connect(sock);
        c.version();
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), reads.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match c.read32(BAR0, VFGEN_RSTAT) {
                    Ok(v) if v & 3 == VFACTIVE => {
                        r.fetch_add(1, Ordering::Relaxed);
                    }
                    other => return Err(format!("the other VF read {other:?}")),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        });
        Bystander {
            stop,
            reads,
            thread: Some(thread),
        }
    }

    /// Stop; every read succeeded, and there were some.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap().unwrap();
        let n = self.reads.load(Ordering::Relaxed);
        assert!(n > 0, "the other VF was never served");
        n
    }
}

/// Read VFGEN_RSTAT until it says VFACTIVE (a reset takes some ms).
fn wait_active(c: &mut Client) {
    let t = Instant::now();
    loop {
        if c.read32(BAR0, VFGEN_RSTAT) == Ok(VFACTIVE) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the VF never came back"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn expect_error(c: &mut Client, command: u16, payload: &[u8]) -> u32 {
    let r = c.call(command, payload, &[]);
    assert!(r.is_error(), "command {command} was accepted");
    assert_ne!(r.error, 0, "an error reply carries an errno");
    assert!(r.payload.is_empty(), "an error reply is the header alone");
    // The stream is still in step: the next request gets its own answer.
    assert_eq!(c.read32(BAR0, VFGEN_RSTAT), Ok(VFACTIVE));
    r.error
}

#[test]
fn malformed_and_unknown_messages_are_answered_counted_and_the_stream_stays_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let other = Bystander::start(&server.sockets[1]);
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    // Unknown, and commands the server does not offer, each with a payload
    // the crate would have taken for the next header.
    assert_eq!(expect_error(&mut c, 99, &[0xAB; 24]), libc::ENOSYS as u32);
    assert_eq!(
        expect_error(&mut c, REGION_WRITE_MULTI, &[0x11; 40]),
        libc::ENOTSUP as u32
    );
    expect_error(&mut c, 11, &[0; 16]); // DMA_READ goes server to client
    // VERSION without a NUL, with a NUL inside, not an object, too short.
    expect_error(&mut c, VERSION, b"\0\0\0\0{\"capabilities\":{}}");
    expect_error(&mut c, VERSION, b"\0\0\0\0{\0}\0");
    expect_error(&mut c, VERSION, b"\0\0\0\0not json\0");
    expect_error(&mut c, VERSION, b"\0\0");
    // Region accesses: outside the region, of a region that has no size,
    // of 2 GiB, of nothing.
    expect_error(&mut c, REGION_READ, &Client::access(0x10000, BAR0, 4));
    expect_error(&mut c, REGION_READ, &Client::access(u64::MAX - 1, BAR0, 4));
    expect_error(&mut c, REGION_READ, &Client::access(0, 1, 4));
    expect_error(&mut c, REGION_READ, &Client::access(0, BAR0, 0x7fff_ffff));
    expect_error(&mut c, REGION_READ, &Client::access(0, BAR0, 0));
    // A write whose data is shorter than its count.
    let mut w = Client::access(0x2000, BAR0, 8);
    w.extend_from_slice(&[1, 2, 3, 4]);
    expect_error(&mut c, REGION_WRITE, &w);
    // An unaligned register access reaches the server but not the registers.
    let mut odd = Client::access(0x8801, BAR0, 3);
    odd.extend_from_slice(&[9, 9, 9]);
    expect_error(&mut c, REGION_WRITE, &odd);
    // SET_IRQS with boolean data, with two actions, beyond the vectors.
    let irqs = |flags: u32, index: u32, start: u32, count: u32, extra: usize| {
        let mut p = 20u32.to_le_bytes().to_vec();
        for v in [flags, index, start, count] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.resize(20 + extra, 1);
        p
    };
    expect_error(&mut c, DEVICE_SET_IRQS, &irqs(0x2 | 0x20, 2, 0, 2, 2));
    expect_error(&mut c, DEVICE_SET_IRQS, &irqs(0x4 | 0x20 | 0x8, 2, 0, 1, 0));
    expect_error(&mut c, DEVICE_SET_IRQS, &irqs(0x1 | 0x20, 2, 3, 9, 0));
    // A file descriptor with a command that takes none (it is closed).
    let f = memfd(4096);
    let id = c.send(DEVICE_RESET, 0, &[], &[f.as_fd()]);
    let r = c.recv();
    assert!(r.id == id && r.is_error());
    // A posted bad message gets no answer, and the stream goes on.
    c.send(98, NO_REPLY, &[7; 12], &[]);
    assert_eq!(c.read32(BAR0, VFGEN_RSTAT), Ok(VFACTIVE));
    // A "reply" from the client.
    let id = c.send(REGION_READ, 0x1, &Client::access(0, BAR0, 4), &[]);
    let r = c.recv();
    assert!(r.id == id && r.is_error());
    // A header whose size no message can have: the stream cannot be framed
    // after it, the server closes the connection; the next client is served.
    let mut h = Client::header(500, REGION_READ, 0, 0);
    h[4..8].copy_from_slice(&8u32.to_le_bytes());
    c.raw(&h);
    let mut buf = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut c.s, &mut buf).unwrap_or(0),
        0,
        "closed"
    );
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    // The function was reset when the last client went.
    wait_active(&mut c);
    drop(c);
    let served = other.finish();
    let counters = server.counters();
    let (vf0, vf1) = (&counters[0], &counters[1]);
    eprintln!("{vf0}\n{vf1}\n(the other VF was read {served} times)");
    assert_eq!(kv(vf0, "unknown"), 4, "{vf0}");
    assert_eq!(kv(vf0, "unsupported"), 2, "{vf0}");
    assert_eq!(kv(vf0, "malformed"), 6, "{vf0}");
    assert_eq!(kv(vf0, "out_of_range"), 6, "{vf0}");
    assert_eq!(kv(vf0, "bad_fds"), 1, "{vf0}");
    assert_eq!(field(vf0, "unframed"), 1, "{vf0}");
    assert_eq!(field(vf0, "bad_reg"), 1, "{vf0}");
    assert_eq!(field(vf1, "bad"), 0, "{vf1}");
    assert!(server.alive());
    let out = server.output();
    assert!(out.contains("refused message"), "logged: {out}");
    assert!(out.contains("unknown command 99"), "{out}");
    let (status, _) = server.stop();
    assert_eq!(status, Some(0));
}

#[test]
fn a_client_that_disconnects_mid_transfer_is_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let other = Bystander::start(&server.sockets[1]);
    // Half a message, then gone.
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    c.raw(&Client::header(9, REGION_WRITE, 16 + 1000, 0));
    c.raw(&[0u8; 30]);
    drop(c);
    // A client with memory mapped, bus mastering on and an admin queue
    // running, gone in the middle of a header.
    let ram = memfd(0x20_0000);
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    assert!(!c.dma_map(ram.as_fd(), 0, 0x4000_0000, 0x20_0000).is_error());
    assert!(!c.write(CONFIG, 4, &6u16.to_le_bytes()).is_error());
    c.raw(&Client::header(10, REGION_READ, 16, 0)[..7]);
    drop(c);
    // The next client finds a freshly reset function.
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    wait_active(&mut c);
    let mut cfg = [0u8; 4];
    let r = c.call(REGION_READ, &Client::access(4, CONFIG, 2), &[]);
    cfg[..2].copy_from_slice(&r.payload[16..18]);
    assert_eq!(
        u16::from_le_bytes([cfg[0], cfg[1]]) & 4,
        0,
        "bus master off"
    );
    drop(c);
    other.finish();
    let counters = server.counters();
    let vf0 = &counters[0];
    eprintln!("{vf0}");
    assert_eq!(field(vf0, "truncated"), 2, "{vf0}");
    assert_eq!(field(vf0, "maps"), 1, "{vf0}");
    assert_eq!(field(vf0, "unmaps"), 1, "released with the client: {vf0}");
    assert!(field(vf0, "resets") >= 2, "a reset per client gone: {vf0}");
    assert!(server.alive());
    assert!(server.output().contains("in the middle of a message"));
}

/// Admin queue registers (DPDK `base/iavf_register.h`).
const ATQBAL: u64 = 0x7C00;
const ATQBAH: u64 = 0x7800;
const ATQLEN: u64 = 0x6800;
const ATQH: u64 = 0x6400;
const ATQT: u64 = 0x8400;

#[test]
fn dma_to_addresses_the_client_never_mapped_is_a_counted_fault() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let other = Bystander::start(&server.sockets[1]);
    let ram = memfd(0x20_0000);
    // A pattern the device must leave alone.
    std::os::unix::fs::FileExt::write_all_at(&ram, &vec![0x5A; 0x20_0000], 0).unwrap();
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    let base = 0x1000_0000u64;
    assert!(!c.dma_map(ram.as_fd(), 0, base, 0x20_0000).is_error());
    assert!(!c.write(CONFIG, 4, &6u16.to_le_bytes()).is_error());
    let aq = |c: &mut Client, ring: u64| {
        c.write32_posted(BAR0, ATQLEN, 0);
        c.write32_posted(BAR0, ATQH, 0);
        c.write32_posted(BAR0, ATQT, 0);
        c.write32_posted(BAR0, ATQBAL, ring as u32);
        c.write32_posted(BAR0, ATQBAH, (ring >> 32) as u32);
        c.write32_posted(BAR0, ATQLEN, 0x8000_0020);
        c.write32_posted(BAR0, ATQT, 1);
    };
    let faults = |server: &Server| field(&server.counters()[0], "faults");
    let wait_faults = |server: &Server, n: u64| {
        let t = Instant::now();
        while faults(server) < n {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no DMA fault counted"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A ring where nothing is mapped; one that runs off the mapped end; one
    // far above.
    aq(&mut c, 0x2000_0000);
    wait_faults(&server, 1);
    // The admin queue stopped (ATQLEN.CRIT); a reset starts it over.
    c.call(DEVICE_RESET, &[], &[]);
    wait_active(&mut c);
    assert!(!c.write(CONFIG, 4, &6u16.to_le_bytes()).is_error());
    aq(&mut c, base + 0x20_0000 - 16);
    wait_faults(&server, 2);
    c.call(DEVICE_RESET, &[], &[]);
    wait_active(&mut c);
    assert!(!c.write(CONFIG, 4, &6u16.to_le_bytes()).is_error());
    aq(&mut c, 0xffff_ffff_ffff_f000);
    wait_faults(&server, 3);
    // A command in mapped memory whose buffer points nowhere: the descriptor
    // completes with an error, the buffer is never read.
    c.call(DEVICE_RESET, &[], &[]);
    wait_active(&mut c);
    assert!(!c.write(CONFIG, 4, &6u16.to_le_bytes()).is_error());
    let ring = base + 0x1000;
    let mut desc = [0u8; 32];
    desc[0..2].copy_from_slice(&0x1400u16.to_le_bytes()); // BUF | RD
    desc[2..4].copy_from_slice(&0x0801u16.to_le_bytes()); // send to PF
    desc[4..6].copy_from_slice(&8u16.to_le_bytes());
    desc[8..12].copy_from_slice(&1u32.to_le_bytes()); // VERSION
    desc[24..28].copy_from_slice(&0x7777u32.to_le_bytes()); // buffer high
    std::os::unix::fs::FileExt::write_all_at(&ram, &desc, 0x1000).unwrap();
    aq(&mut c, ring);
    wait_faults(&server, 4);
    let mut back = [0u8; 32];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        std::os::unix::fs::FileExt::read_exact_at(&ram, &mut back, 0x1000).unwrap();
        if back[0] & 1 != 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(back[0] & 0x5, 0x5, "completed with DD and ERR");
    // Nothing else in the client's memory changed.
    let mut all = vec![0u8; 0x20_0000];
    std::os::unix::fs::FileExt::read_exact_at(&ram, &mut all, 0).unwrap();
    let changed: Vec<usize> = (0..all.len())
        .filter(|&i| all[i] != 0x5A && !(0x1000..0x1020).contains(&i))
        .collect();
    assert!(
        changed.is_empty(),
        "bytes changed at {:x?}",
        &changed[..changed.len().min(8)]
    );
    drop(c);
    other.finish();
    let out = server.output();
    assert!(out.contains("DMA read fault"), "logged: {out}");
    assert!(server.alive());
}

/// A small xorshift: the same garbage every run.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as u32
    }
}

#[test]
fn garbage_written_to_every_register_leaves_the_server_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let other = Bystander::start(&server.sockets[1]);
    let ram = memfd(0x40_0000);
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    assert!(!c.dma_map(ram.as_fd(), 0, 0, 0x40_0000).is_error());
    let mut g = Garbage(0x9E37_79B9_7F4A_7C15);
    for round in 0..2 {
        // Bus mastering on, so garbage rings and tails make the device DMA.
        assert!(!c.write(CONFIG, 4, &6u16.to_le_bytes()).is_error());
        for off in (0..0x1_0000u64).step_by(4) {
            // Leave VFGEN_RSTAT's read to the checks below; it is read-only anyway.
            c.write32_posted(BAR0, off, g.next());
            if off % 0x1000 == 0 {
                // Interleaved reads, each answered in order.
                assert!(c.read32(BAR0, off).is_ok());
            }
        }
        for off in (0..0x4000u64).step_by(4) {
            c.write32_posted(BAR3, off, g.next());
        }
        for off in (0..4096u64).step_by(4) {
            c.write32_posted(CONFIG, off, g.next());
        }
        // 8-byte and 1-byte writes, and reads of every register.
        for off in (0..0x1_0000u64).step_by(8) {
            let v = [g.next().to_le_bytes(), g.next().to_le_bytes()].concat();
            let mut p = Client::access(off, BAR0, 8);
            p.extend_from_slice(&v);
            c.send(REGION_WRITE, NO_REPLY, &p, &[]);
        }
        for off in (0..0x1_0000u64).step_by(4) {
            assert!(
                c.read32(BAR0, off).is_ok(),
                "read of {off:#x} in round {round}"
            );
        }
    }
    // The function still resets and comes back.
    c.call(DEVICE_RESET, &[], &[]);
    wait_active(&mut c);
    drop(c);
    let served = other.finish();
    let counters = server.counters();
    eprintln!(
        "{}\n{}\n(the other VF: {served} reads)",
        counters[0], counters[1]
    );
    assert_eq!(field(&counters[1], "bad"), 0);
    assert_eq!(field(&counters[1], "faults"), 0, "the other VF saw nothing");
    assert!(server.alive());
    let (status, _) = server.stop();
    assert_eq!(status, Some(0), "a clean exit after all that");
}

#[test]
fn a_device_reset_in_a_loop_is_counted_and_the_vf_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), 2, &[]);
    let other = Bystander::start(&server.sockets[1]);
    let mut c = Client::connect(&server.sockets[0]);
    c.version();
    for i in 0..300 {
        assert!(!c.call(DEVICE_RESET, &[], &[]).is_error());
        // FLR through the PCIe Device Control register.
        assert!(!c.write(CONFIG, 0xA8, &0x8000u16.to_le_bytes()).is_error());
        assert!(c.read32(BAR0, VFGEN_RSTAT).is_ok(), "iteration {i}");
    }
    wait_active(&mut c);
    drop(c);
    other.finish();
    let counters = server.counters();
    eprintln!("{}", counters[0]);
    assert!(field(&counters[0], "resets") >= 600, "{}", counters[0]);
    assert!(server.alive());
}
