//! The driver on a real VF, for whoever has one: an X710/XL710/XXV710, X722 or
//! E810 VF bound to vfio-pci, hugepages reserved, and
//!
//! ```text
//! NICPOLL_IAVF_BDF=0000:03:02.0 cargo test -p nicpoll-iavf --test hw_vfio -- --ignored --nocapture
//! ```
//!
//! It brings the VF up through VFIO and:
//!
//! 1. sends broadcast frames, untagged and 802.1Q-tagged (the PF's switch takes
//!    them; nothing needs to be cabled), and checks the counters: a
//!    spoof-checked VF's tagged frames are dropped by the PF's VLAN
//!    anti-spoofing (`ip link set <pf> vf N spoofchk off` lets them out);
//! 2. with `NICPOLL_IAVF_PEER=IF`, a kernel interface on the same PF's switch
//!    (the PF's own netdev, or another VF bound to iavf), receives from it:
//!    tagged frames must arrive with their tag (in the frame, or reported in
//!    the mbuf if the PF strips it anyway), and a single frame's latency — the
//!    time from the peer's send to `rx_burst` — is measured: it shows the
//!    descriptor write-back of a lone frame (the ITR of the queues' vector,
//!    and, without WB_ON_ITR, vector 0 enabled again by the watchdog);
//! 3. with `NICPOLL_IAVF_SHORT_FRAME=1` (only on a disposable VF: if the driver
//!    let it through, an i40e PF would disable the VF until the host resets
//!    it), offers a 16-byte frame, which the driver must refuse and count, the
//!    VF still sending afterwards.
//!
//! Every mbuf must come back to its pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::Port;
use nicpoll::mbuf::{MbufBatch, flags};
use nicpoll::memory::{DmaMemory, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::netdev::RawSocket;
use nicpoll::pci::PciAddress;
use nicpoll::port::{DevArgs, MacAddr, PortConf, PortQueues};
use nicpoll::vfio::VfioContext;
use nicpoll_iavf::{VfioDma, open_pci};

/// An EtherType for local experiments (IEEE 802 "local experimental 1").
const ETH_P_LOCAL: u16 = 0x88b5;

/// A `len`-byte frame from `src` to `dst`, optionally 802.1Q-tagged, whose
/// payload starts with `seq`.
fn frame(dst: MacAddr, src: MacAddr, vlan: Option<u16>, seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    if let Some(tci) = vlan {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ETH_P_LOCAL.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(len.max(f.len()), 0x5a);
    f
}

/// Transmit `frames` on queue 0; returns how many the queue took.
fn send(q: &mut PortQueues, pool: &Mempool, frames: &[Vec<u8>]) -> usize {
    let mut sent = 0;
    for f in frames {
        let mut b = MbufBatch::with_burst(1);
        let mut m = pool.alloc().expect("a free mbuf");
        m.append(f.len()).expect("room").copy_from_slice(f);
        b.push(m).unwrap();
        let t = Instant::now();
        while !b.is_empty() && t.elapsed() < Duration::from_secs(1) {
            sent += q.tx[0].tx_burst(&mut b);
        }
    }
    sent
}

/// Receive on queue 0 until a frame whose EtherType (after any tag) is ours
/// and whose sequence is `seq` arrives, or `timeout`; returns it with its
/// VLAN TCI as the mbuf reports it and when it arrived.
fn wait_for_frame(
    q: &mut PortQueues,
    seq: u32,
    timeout: Duration,
) -> Option<(Vec<u8>, Option<u16>, Instant)> {
    let mut r = MbufBatch::with_burst(64);
    let t = Instant::now();
    while t.elapsed() < timeout {
        q.rx[0].rx_burst(&mut r);
        let now = Instant::now();
        while let Some(m) = r.pop_front() {
            let d = m.data();
            let at = if d.len() >= 18 && d[12..14] == [0x81, 0x00] {
                16
            } else {
                12
            };
            if d.len() >= at + 6
                && d[at..at + 2] == ETH_P_LOCAL.to_be_bytes()
                && d[at + 2..at + 6] == seq.to_be_bytes()
            {
                let tci = (m.ol_flags() & flags::RX_VLAN != 0).then(|| m.vlan_tci());
                return Some((d.to_vec(), tci, now));
            }
        }
    }
    None
}

#[test]
#[ignore = "needs an iavf VF bound to vfio-pci: set NICPOLL_IAVF_BDF"]
fn real_vf_over_vfio() {
    let Ok(bdf) = std::env::var("NICPOLL_IAVF_BDF") else {
        return nicpoll_testkit::skip(
            "NICPOLL_IAVF_BDF, the PCI address of an iavf VF bound to vfio-pci",
        );
    };
    let peer = std::env::var("NICPOLL_IAVF_PEER").ok();
    let short = std::env::var("NICPOLL_IAVF_SHORT_FRAME").is_ok_and(|v| v == "1");
    let addr: PciAddress = bdf.parse().expect("NICPOLL_IAVF_BDF is a PCI address");
    let ctx = Arc::new(VfioContext::new().expect("VFIO container"));
    let mode = ctx
        .iova_mode_for(&[addr])
        .expect("the VF's group joins the container");
    let mem = Arc::new(
        DmaMemory::new(MemoryConfig {
            iova_mode: Some(mode),
            ..MemoryConfig::default()
        })
        .expect("hugepage memory"),
    );
    let dma = Arc::new(VfioDma::new(ctx));
    let mut port = open_pci(dma, &addr, mem.clone(), &DevArgs::parse(&bdf).unwrap(), 0)
        .unwrap_or_else(|e| panic!("bring-up of {bdf}: {e}"));
    eprintln!(
        "{:?}\n{:?}\nMAC {}",
        port.info(),
        port.vf_info(),
        port.mac_addr()
    );
    let pool = Mempool::new(&mem, &MempoolConfig::new("hw", 8192)).unwrap();
    port.configure(&PortConf {
        port_id: 0,
        nb_rxq: 1,
        nb_txq: 1,
        nb_rxd: 512,
        nb_txd: 512,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    })
    .unwrap();
    let mut q = port.start().unwrap();
    let t = Instant::now();
    while !port.link().up && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("link: {}", port.link());
    let mac = port.mac_addr();

    // 1. Broadcast frames, untagged then tagged.
    let xstat = |p: &dyn Port, name: &str| {
        p.xstats()
            .into_iter()
            .find(|(k, _)| k == name)
            .map_or(0, |(_, v)| v)
    };
    let plain: Vec<Vec<u8>> = (0..1000)
        .map(|i| frame(MacAddr::BROADCAST, mac, None, i, 64))
        .collect();
    assert_eq!(send(&mut q, &pool, &plain), 1000);
    let tagged: Vec<Vec<u8>> = (0..100)
        .map(|i| frame(MacAddr::BROADCAST, mac, Some(0x2000 | 100), 1000 + i, 68))
        .collect();
    assert_eq!(send(&mut q, &pool, &tagged), 100);
    std::thread::sleep(Duration::from_millis(200));
    let s = port.stats();
    eprintln!("after 1000 untagged and 100 tagged broadcasts: {s:?}");
    assert_eq!(s.opackets, 1100);
    let discards = xstat(&port, "tx_dropped_packets");
    assert!(
        s.oerrors == 0 || (discards <= 100 && s.oerrors == discards),
        "the PF dropped untagged frames (spoof check on our own MAC? trust?): {s:?}"
    );
    if discards > 0 {
        eprintln!(
            "the PF dropped {discards} tagged frames: VLAN anti-spoofing of a spoof-checked VF \
             (`ip link set <pf> vf N spoofchk off` on the host lets them out)"
        );
    }

    // 2. From a peer on the same switch: tagged frames, and one frame's latency.
    if let Some(peer) = &peer {
        let raw = RawSocket::open(peer).unwrap_or_else(|e| {
            panic!("AF_PACKET socket on {peer} (NICPOLL_IAVF_PEER, needs CAP_NET_RAW): {e}")
        });
        let src = MacAddr([0x02, 0x6e, 0x70, 0x65, 0x65, 0x72]);
        for i in 0..20u32 {
            let f = frame(mac, src, Some(0xA000 | (200 + i as u16)), 5000 + i, 80);
            raw.send(&f).expect("send from the peer");
            let (got, tci, _) = wait_for_frame(&mut q, 5000 + i, Duration::from_secs(1))
                .unwrap_or_else(|| panic!("tagged frame {i} from {peer} did not arrive"));
            match tci {
                // Stripping off, as the driver asks: the frame as sent.
                None => assert_eq!(got, f, "tagged frame {i}, byte for byte"),
                // A PF that refused: the tag in the mbuf, the rest as sent.
                Some(t) => {
                    assert_eq!(t, 0xA000 | (200 + i as u16));
                    let mut untagged = f.clone();
                    untagged.drain(12..16);
                    assert_eq!(got, untagged);
                }
            }
        }
        eprintln!("20 tagged frames from {peer} arrived with their tags");
        let mut lat = Vec::new();
        for i in 0..10u32 {
            std::thread::sleep(Duration::from_millis(20));
            let f = frame(mac, src, None, 6000 + i, 64);
            let t = Instant::now();
            raw.send(&f).expect("send from the peer");
            let (_, _, at) = wait_for_frame(&mut q, 6000 + i, Duration::from_secs(1))
                .unwrap_or_else(|| panic!("lone frame {i} from {peer} did not arrive in 1 s"));
            lat.push(at - t);
        }
        lat.sort();
        eprintln!(
            "single-frame latency {peer} -> VF (send to rx_burst, 10 lone frames): min {:?}, \
             median {:?}, max {:?}",
            lat[0], lat[5], lat[9]
        );
        // The watchdog enables vector 0 again at least every 50 ms.
        assert!(lat[9] < Duration::from_millis(200), "{lat:?}");
    } else {
        eprintln!(
            "no NICPOLL_IAVF_PEER: receive of tagged frames and the single-frame latency not \
             measured"
        );
    }

    // 3. A 16-byte frame: refused and counted by the driver, never sent.
    if short {
        let before = xstat(&port, "tx_bad_length_packets");
        let mut runt = frame(MacAddr::BROADCAST, mac, None, 7000, 16);
        runt.truncate(16);
        assert_eq!(send(&mut q, &pool, &[runt]), 1, "taken (and freed)");
        assert_eq!(xstat(&port, "tx_bad_length_packets"), before + 1);
        let more: Vec<Vec<u8>> = (0..100)
            .map(|i| frame(MacAddr::BROADCAST, mac, None, 7001 + i, 64))
            .collect();
        let sent_before = port.stats().opackets;
        assert_eq!(send(&mut q, &pool, &more), 100);
        std::thread::sleep(Duration::from_millis(200));
        let s = port.stats();
        assert_eq!(s.opackets, sent_before + 100, "the VF still sends: {s:?}");
        assert!(port.poll_events().is_ok(), "the VF is still up");
        eprintln!("a 16-byte frame was refused and counted; the VF still sends");
    } else {
        eprintln!("NICPOLL_IAVF_SHORT_FRAME is not 1: the short-frame check not run on hardware");
    }

    for (k, v) in port.xstats() {
        eprintln!("  {k}: {v}");
    }
    drop(q);
    port.stop().unwrap();
    drop(port);
    assert_eq!(pool.in_use(), 0, "every mbuf back in its pool");
}
