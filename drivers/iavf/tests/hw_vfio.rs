//! The driver on a real VF, for whoever has one: an X710/XL710/XXV710 or E810
//! VF bound to vfio-pci, hugepages reserved, and
//!
//! ```text
//! NICPOLL_IAVF_BDF=0000:03:02.0 cargo test -p nicpoll-iavf --test hw_vfio -- --ignored --nocapture
//! ```
//!
//! It brings the VF up through VFIO, sends broadcast frames (the PF's switch
//! takes them; nothing needs to be cabled), receives for a second, and checks
//! the counters and that every mbuf came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::Port;
use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::{DmaMemory, MemoryConfig};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::pci::PciAddress;
use nicpoll::port::{DevArgs, MacAddr, PortConf};
use nicpoll::vfio::VfioContext;
use nicpoll_iavf::{VfioDma, open_pci};

#[test]
#[ignore = "needs an iavf VF bound to vfio-pci: set NICPOLL_IAVF_BDF"]
fn real_vf_over_vfio() {
    let Ok(bdf) = std::env::var("NICPOLL_IAVF_BDF") else {
        return nicpoll_testkit::skip(
            "NICPOLL_IAVF_BDF, the PCI address of an iavf VF bound to vfio-pci",
        );
    };
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
    let mut sent = 0;
    let mut b = MbufBatch::with_burst(32);
    while sent < 1000 {
        while b.len() < 32 {
            let mut m = pool.alloc().unwrap();
            let f = m.append(64).unwrap();
            f[0..6].copy_from_slice(&MacAddr::BROADCAST.0);
            f[6..12].copy_from_slice(&mac.0);
            f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
            b.push(m).unwrap();
        }
        sent += q.tx[0].tx_burst(&mut b);
    }
    b.clear();
    let mut r = MbufBatch::with_burst(64);
    let mut received = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        received += q.rx[0].rx_burst(&mut r);
        r.clear();
    }
    let s = port.stats();
    eprintln!("sent {sent}, received {received}; {s:?}");
    for (k, v) in port.xstats() {
        eprintln!("  {k}: {v}");
    }
    assert_eq!(s.opackets, 1000);
    assert_eq!(
        s.oerrors, 0,
        "the PF dropped our frames (spoof check? trust?)"
    );
    drop(q);
    port.stop().unwrap();
    drop(port);
    assert_eq!(pool.in_use(), 0, "every mbuf back in its pool");
}
