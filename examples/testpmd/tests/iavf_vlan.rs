//! 802.1Q frames from a kernel veth through two simulated X710 VFs in io
//! forwarding, tried as a user would:
//!
//! ```text
//! testpmd --no-huge --vdev net_iavf_sim0,iface=Ab --vdev net_iavf_sim1,iface=Bb -- --forward-mode=io
//! ```
//!
//! on two veth pairs Aa/Ab and Ba/Bb, with tagged frames sent into Ab's peer
//! (Aa) and caught at Bb's peer (Ba):
//! every frame must come out as it went in, tag included, byte for byte. The
//! same run with `net_af_packet` on the same veths is the control (it keeps
//! tags by reading them back from the kernel's PACKET_AUXDATA). Frames are
//! sent and caught with nicpoll's own AF_PACKET port, whose receive side puts
//! the kernel's stripped tags back too.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::testing::VethPair;
use nicpoll::port::{Port, PortConf, PortQueues};
use nicpoll_af_packet::{AfPacketOptions, AfPacketPort};
use nicpoll_testkit::{Need, skip_if_missing};

const BIN: &str = env!("CARGO_BIN_EXE_testpmd");
const FRAMES: u32 = 50;
/// Marks our frames in the payload (the kernel may send its own).
const MAGIC: [u8; 4] = *b"NPVL";

/// Frame `i`: 802.1Q-tagged (VLAN 100 + i, priority 5) IPv4/UDP, 64 to 113
/// bytes, with our mark and its number in the payload.
fn tagged_frame(i: u32) -> Vec<u8> {
    let len = 64 + i as usize;
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    f[6..12].copy_from_slice(&[0x02, 0x66, 0x77, 0x88, 0x99, 0xaa]);
    f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    f[14..16].copy_from_slice(&(0xA000u16 | (100 + i as u16)).to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[18..38];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((len - 18) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[198, 18, 0, 1]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 2]);
    f[38..40].copy_from_slice(&9u16.to_be_bytes());
    f[40..42].copy_from_slice(&9u16.to_be_bytes());
    f[42..44].copy_from_slice(&((len - 38) as u16).to_be_bytes());
    f[46..50].copy_from_slice(&MAGIC);
    f[50..54].copy_from_slice(&i.to_be_bytes());
    for (k, b) in f[54..].iter_mut().enumerate() {
        *b = (i as usize * 31 + k) as u8;
    }
    f
}

/// Ours, tagged or with the tag lost (4 bytes earlier).
fn is_ours(f: &[u8]) -> bool {
    (f.len() >= 54 && f[46..50] == MAGIC) || (f.len() >= 50 && f[42..46] == MAGIC)
}

/// An AF_PACKET port of ours on `iface`, started, one queue pair.
fn kernel_port(iface: &str, pool: &Mempool, id: u16) -> (AfPacketPort, PortQueues) {
    let mut p = AfPacketPort::new(&format!("cap{id}"), AfPacketOptions::new(iface), id)
        .unwrap_or_else(|e| panic!("AF_PACKET port on {iface}: {e}"));
    p.configure(&PortConf {
        port_id: id,
        nb_rxq: 1,
        nb_txq: 1,
        nb_rxd: 512,
        nb_txd: 512,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    })
    .unwrap();
    let q = p.start().unwrap();
    (p, q)
}

/// testpmd in io forwarding on `vdevs`, running until it printed its first
/// statistics (so the ports forward); returns it and what it printed so far.
fn testpmd(prefix: &str, vdevs: [String; 2]) -> (Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(["--no-huge", "--lcores=0@0,1@1", "--file-prefix", prefix])
        .args(["--vdev", &vdevs[0], "--vdev", &vdevs[1]])
        .args([
            "--",
            "--forward-mode=io",
            "--stats-format=json",
            "--stats-period=0.2",
            "--run-time=30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("testpmd runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Some(Ok(l)) = lines.next() else { break };
        let started = l.contains("\"event\":\"stats\"");
        out.push(l);
        if started {
            // Keep draining stdout so testpmd never blocks on it.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return (child, out);
        }
    }
    let _ = child.kill();
    let err = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default();
    panic!("testpmd did not start forwarding: {out:?}\n{err}");
}

/// Send the tagged frames into `into` and catch what comes out of `out_of`
/// while `testpmd` forwards; returns our frames as caught, in order.
fn through(into: &mut PortQueues, out_of: &mut PortQueues, pool: &Mempool) -> Vec<Vec<u8>> {
    let mut b = MbufBatch::with_burst(64);
    for i in 0..FRAMES {
        let f = tagged_frame(i);
        let mut m = pool.alloc().expect("mbuf");
        assert!(m.set_len(f.len()));
        m.data_mut().copy_from_slice(&f);
        b.push(m).unwrap();
    }
    let t = Instant::now();
    while !b.is_empty() && t.elapsed() < Duration::from_secs(5) {
        into.tx[0].tx_burst(&mut b);
    }
    assert!(
        b.is_empty(),
        "the sending port took only part of the frames"
    );
    let mut got = Vec::new();
    let mut r = MbufBatch::with_burst(64);
    let t = Instant::now();
    while got.len() < FRAMES as usize && t.elapsed() < Duration::from_secs(10) {
        if out_of.rx[0].rx_burst(&mut r) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        while let Some(m) = r.pop_front() {
            if is_ours(m.data()) {
                got.push(m.data().to_vec());
            }
        }
    }
    got
}

fn stop(mut child: Child) -> String {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let t = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .unwrap_or_default()
}

/// One run: `driver` on A1 and B1; the frames go in at A0 and are caught at B0.
fn forward_tagged(driver: &str, prefix: &str) -> Vec<Vec<u8>> {
    let a = VethPair::create(&format!("{prefix}0"));
    let b = VethPair::create(&format!("{prefix}1"));
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new(prefix, 2048)).unwrap();
    let (_pa, mut qa) = kernel_port(&a.a, &pool, 0);
    let (_pb, mut qb) = kernel_port(&b.a, &pool, 1);
    let (child, _) = testpmd(
        prefix,
        [
            format!("{driver}0,iface={}", a.b),
            format!("{driver}1,iface={}", b.b),
        ],
    );
    let got = through(&mut qa, &mut qb, &pool);
    let err = stop(child);
    if got.len() < FRAMES as usize {
        eprintln!("testpmd's log:\n{err}");
    }
    drop((qa, qb));
    got
}

/// veth pairs, AF_PACKET sockets, and kill(1) to stop testpmd with SIGINT.
fn skip_unless_able() -> bool {
    let mut needs = nicpoll_testkit::VETH.to_vec();
    needs.extend([Need::RawSockets, Need::Command("kill")]);
    skip_if_missing(&needs)
}

fn check(got: &[Vec<u8>], what: &str) {
    let want: Vec<Vec<u8>> = (0..FRAMES).map(tagged_frame).collect();
    let kept = got.iter().zip(&want).filter(|(g, w)| g == w).count();
    let tagged = got.iter().filter(|f| f[12..14] == [0x81, 0x00]).count();
    assert_eq!(
        (got.len(), tagged, kept),
        (want.len(), want.len(), want.len()),
        "{what}: (frames out, still tagged, byte for byte as sent); first out: {:02x?}",
        got.first().map(|f| &f[..f.len().min(24)])
    );
}

#[test]
fn vlan_tagged_frames_keep_their_tags_through_two_simulated_x710_vfs() {
    if skip_unless_able() {
        return;
    }
    check(
        &forward_tagged("net_iavf_sim", "npvli"),
        "net_iavf_sim io forwarding",
    );
}

#[test]
fn vlan_tagged_frames_keep_their_tags_through_net_af_packet_on_the_same_veths() {
    // The control: the kernel-side plumbing and the capture are right.
    if skip_unless_able() {
        return;
    }
    check(
        &forward_tagged("net_af_packet", "npvlp"),
        "net_af_packet io forwarding",
    );
}
