//! The driver against the fake device of `fake.rs`.

use std::sync::Arc;

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::{DmaMemory, IovaMode};
use nicpoll::mempool::{Mempool, MempoolConfig};
use nicpoll::port::testing::{self, Delivery, fill, test_frame};
use nicpoll::port::{Port, PortConf, PortQueues};
use nicpoll::vfio::IommuType;

use crate::fake::{self, FakeConfig, FakeVirtio};
use crate::queue::ctrl;
use crate::ring::{NET_HDR_LEN, VIRTQ_USED_F_NO_NOTIFY};
use crate::transport::{Transport, feature, netcfg, status};
use crate::{VirtioOptions, VirtioPort, check_dma_path};

fn port_on(
    dev: &Arc<FakeVirtio>,
    mem: Arc<DmaMemory>,
    id: u16,
) -> nicpoll::Result<VirtioPort<FakeVirtio>> {
    let t = Transport::new("fake0", &fake::caps(), |_| Ok(dev.clone()))?;
    VirtioPort::with_transport(
        "fake0",
        t,
        mem,
        None,
        VirtioOptions::default(),
        id,
        None,
        None,
    )
}

struct Rig {
    dev: Arc<FakeVirtio>,
    port: VirtioPort<FakeVirtio>,
    pool: Mempool,
    _mem: Arc<DmaMemory>,
}

fn rig(cfg: FakeConfig, nbufs: u32) -> Rig {
    let mem = Arc::new(DmaMemory::plain());
    let pool = Mempool::new(&mem, &MempoolConfig::new("virtio-test", nbufs)).unwrap();
    let dev = FakeVirtio::new(cfg);
    dev.view.allow(pool.region());
    let port = port_on(&dev, mem.clone(), 0).unwrap();
    Rig {
        dev,
        port,
        pool,
        _mem: mem,
    }
}

impl Rig {
    fn start(&mut self, nq: u16, rxd: u16, txd: u16) -> PortQueues {
        self.port
            .configure(&PortConf {
                port_id: 0,
                nb_rxq: nq,
                nb_txq: nq,
                nb_rxd: rxd,
                nb_txd: txd,
                max_rx_pktlen: 0,
                mempool: self.pool.clone(),
            })
            .unwrap();
        self.dev.view.allow(self.port.ring_region().unwrap());
        self.port.start().unwrap()
    }

    /// Stop and drop everything; every mbuf must be back.
    fn finish(mut self, q: PortQueues) {
        drop(q);
        self.port.stop().unwrap();
        assert_eq!(
            *self.dev.state().status_log.last().unwrap(),
            0,
            "stop resets the device"
        );
        drop(self.port);
        assert_eq!(self.pool.in_use(), 0, "every mbuf back in the pool");
        assert_eq!(
            self.dev.state().dma_faults,
            0,
            "the device was only given memory it may reach"
        );
    }
}

#[test]
fn negotiation_takes_what_the_driver_knows_and_nothing_else() {
    let r = rig(
        FakeConfig {
            features: FakeConfig::default().features | feature::ACCESS_PLATFORM,
            ..FakeConfig::default()
        },
        1024,
    );
    assert_eq!(
        r.port.features(),
        feature::VERSION_1
            | feature::ACCESS_PLATFORM
            | feature::NET_MAC
            | feature::NET_STATUS
            | feature::NET_CTRL_VQ
            | feature::NET_CTRL_RX
            | feature::NET_MQ
            | feature::NET_MRG_RXBUF
    );
    let st = r.dev.state();
    // Reset, ACKNOWLEDGE, DRIVER, FEATURES_OK, then reset until start.
    assert_eq!(
        st.status_log,
        vec![
            0,
            status::ACKNOWLEDGE,
            status::ACKNOWLEDGE | status::DRIVER,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
            0
        ]
    );
    assert_eq!(r.port.mac_addr().0, [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    assert_eq!(r.port.info().max_rx_queues, 4);
    assert_eq!(r.port.info().default_rxd, 256);
}

#[test]
fn a_device_without_version_1_or_refusing_features_is_failed() {
    let dev = FakeVirtio::new(FakeConfig {
        features: feature::NET_MAC | feature::NET_STATUS,
        ..FakeConfig::default()
    });
    let e = port_on(&dev, Arc::new(DmaMemory::plain()), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("VIRTIO_F_VERSION_1") && e.contains("legacy"),
        "{e}"
    );
    assert_ne!(dev.state().status & status::FAILED, 0, "marked FAILED");

    let dev = FakeVirtio::new(FakeConfig::default());
    dev.state().accept_features_ok = false;
    let e = port_on(&dev, Arc::new(DmaMemory::plain()), 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("FEATURES_OK did not stick"), "{e}");
    assert_ne!(dev.state().status & status::FAILED, 0);
}

#[test]
fn mq_and_ctrl_rx_need_the_control_queue() {
    let r = rig(
        FakeConfig {
            features: feature::VERSION_1 | feature::NET_MQ | feature::NET_CTRL_RX,
            ..FakeConfig::default()
        },
        1024,
    );
    assert_eq!(r.port.features(), feature::VERSION_1);
    assert_eq!(r.port.info().max_rx_queues, 1);
    // No MAC feature: a locally administered address; no STATUS: link up.
    assert_eq!(r.port.mac_addr().0[0], 0x02);
    assert!(r.port.link().up);
    let mut r = r;
    let e = r.port.set_promiscuous(false).unwrap_err().to_string();
    assert!(e.contains("VIRTIO_NET_F_CTRL_RX"), "{e}");
}

#[test]
fn link_status_comes_from_the_device_configuration() {
    let r = rig(FakeConfig::default(), 1024);
    assert!(r.port.link().up);
    // The device reports the link down (offset 6 of the device configuration).
    use nicpoll::bar::Bar;
    r.dev.write16(0x2000 + netcfg::STATUS, 0);
    assert!(!r.port.link().up);
}

#[test]
fn frames_go_out_and_come_in_through_the_rings() {
    let mut r = rig(FakeConfig::default(), 1024);
    let mut q = r.start(1, 8, 8);
    assert_eq!(r.dev.state().queues[0].size, 8);
    // Transmit: header in the headroom, frame after it, one doorbell.
    let mut b = MbufBatch::with_burst(32);
    fill(&r.pool, &mut b, 0, 5, 60);
    assert_eq!(q.tx[0].tx_burst(&mut b), 5);
    assert!(b.is_empty());
    let out = r.dev.tx_pop(1);
    assert_eq!(out.len(), 5);
    for (i, f) in out.iter().enumerate() {
        assert_eq!(f, &test_frame(i as u32, 60));
    }
    assert_eq!(
        r.dev.state().queues[1].notifies,
        1,
        "one doorbell per burst"
    );
    // Receive: the device writes header + frame at data_iova - 12.
    let frame = test_frame(77, 100);
    let mut hdr = [0u8; NET_HDR_LEN];
    hdr.copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 0]);
    assert!(r.dev.rx_push(0, &frame, hdr));
    let mut rx = MbufBatch::with_burst(32);
    assert_eq!(q.rx[0].rx_burst(&mut rx), 1);
    let mut m = rx.pop_front().unwrap();
    assert_eq!(m.data(), &frame[..]);
    assert_eq!(
        m.headroom(),
        m.default_headroom(),
        "the frame is at the data start"
    );
    assert_eq!((m.port(), m.queue()), (0, 0));
    assert_eq!(
        m.prepend(NET_HDR_LEN).unwrap(),
        &hdr,
        "the header landed in the headroom"
    );
    drop(m);
    let st = r.port.stats();
    assert_eq!((st.opackets, st.obytes), (5, 5 * 64));
    assert_eq!((st.ipackets, st.ibytes), (1, 100));
    // The freed transmit buffers come back on the next bursts.
    r.finish(q);
}

#[test]
fn indices_wrap_and_every_packet_arrives_in_order() {
    let mut r = rig(FakeConfig::default(), 2048);
    let mut q = r.start(1, 8, 8);
    let mut tx = MbufBatch::with_burst(8);
    let mut rx = MbufBatch::with_burst(8);
    let (mut sent, mut got) = (0u32, 0u32);
    // 70 000 > 65 536: both 16-bit ring indices wrap.
    const N: u32 = 70_000;
    while got < N {
        if tx.is_empty() && sent < N {
            let k = (N - sent).min(5) as usize;
            fill(&r.pool, &mut tx, sent, k, 60);
            sent += k as u32;
        }
        q.tx[0].tx_burst(&mut tx);
        r.dev.loop_back();
        q.rx[0].rx_burst(&mut rx);
        while let Some(m) = rx.pop_front() {
            assert_eq!(m.data(), &test_frame(got, 60)[..], "packet {got}");
            got += 1;
        }
    }
    let st = r.port.stats();
    assert_eq!(
        (st.opackets, st.ipackets, st.ierrors, st.oerrors),
        (N as u64, N as u64, 0, 0)
    );
    assert_eq!(
        r.dev.state().queues[1].used_idx,
        (N % 65536) as u16,
        "the used index wrapped"
    );
    drop(tx);
    r.finish(q);
}

#[test]
fn full_rings_leave_the_tail_and_drop_at_the_device() {
    let mut r = rig(FakeConfig::default(), 1024);
    let mut q = r.start(1, 8, 8);
    let mut b = MbufBatch::with_burst(32);
    fill(&r.pool, &mut b, 0, 20, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 8, "only as many as descriptors");
    assert_eq!(b.len(), 12);
    assert_eq!(q.tx[0].tx_burst(&mut b), 0, "nothing completed yet");
    assert_eq!(r.dev.tx_pop(1).len(), 8);
    assert_eq!(
        q.tx[0].tx_burst(&mut b),
        8,
        "completed descriptors are reused"
    );
    assert_eq!(r.dev.tx_pop(1).len(), 8);
    b.clear();
    // Receive: 8 buffers; the 9th and 10th frames find none.
    let hdr = [0u8; NET_HDR_LEN];
    let delivered = (0..10)
        .filter(|&i| r.dev.rx_push(0, &test_frame(i, 64), hdr))
        .count();
    assert_eq!(delivered, 8);
    assert_eq!(r.dev.state().rx_dropped, 2);
    let mut rx = MbufBatch::with_burst(4);
    assert_eq!(
        q.rx[0].rx_burst(&mut rx),
        4,
        "no more than the batch's room"
    );
    rx.clear();
    assert_eq!(q.rx[0].rx_burst(&mut rx), 4);
    rx.clear();
    assert_eq!(r.port.stats().ipackets, 8);
    r.finish(q);
}

#[test]
fn bad_used_entries_are_counted_and_never_trusted() {
    let mut r = rig(FakeConfig::default(), 1024);
    let mut q = r.start(1, 8, 8);
    let mut rx = MbufBatch::with_burst(32);
    // Id out of range, a length past the buffer, a length shorter than the header.
    r.dev.push_used(0, 99, 60);
    r.dev.push_used(0, 3, 4000);
    r.dev.push_used(0, 5, 5);
    assert_eq!(q.rx[0].rx_burst(&mut rx), 0, "no packet from a bad entry");
    // Id 3 was taken back (bad length) and reposted by the refill; id 99 never.
    r.dev.push_used(0, 99, 60);
    assert_eq!(q.rx[0].rx_burst(&mut rx), 0);
    // A transmit completion for a descriptor that is not in flight: seen by
    // the reclaim that a burst larger than the free descriptors starts with.
    r.dev.push_used(1, 2, 0);
    let mut b = MbufBatch::with_burst(32);
    fill(&r.pool, &mut b, 0, 9, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 8);
    // The queue is full: the next burst reclaims and meets an id out of range.
    r.dev.push_used(1, 1000, 0);
    assert_eq!(q.tx[0].tx_burst(&mut b), 0);
    b.clear();
    let st = r.port.stats();
    assert_eq!(st.ierrors, 4);
    assert_eq!(st.oerrors, 2);
    assert_eq!(st.ipackets, 0);
    // A real frame still gets through afterwards.
    assert!(r.dev.rx_push(0, &test_frame(1, 64), [0; NET_HDR_LEN]));
    assert_eq!(q.rx[0].rx_burst(&mut rx), 1);
    assert_eq!(rx.pop_front().unwrap().data(), &test_frame(1, 64)[..]);
    r.finish(q);
}

#[test]
fn one_doorbell_per_burst_and_none_when_the_device_says_so() {
    let mut r = rig(FakeConfig::default(), 4096);
    let mut q = r.start(1, 0, 0);
    assert_eq!(r.dev.state().queues[1].size, 256);
    let rx_kicks = r.dev.state().queues[0].notifies;
    assert_eq!(rx_kicks, 1, "one doorbell for the buffers posted at start");
    let mut b = MbufBatch::with_burst(64);
    fill(&r.pool, &mut b, 0, 64, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 64);
    assert_eq!(r.dev.state().queues[1].notifies, 1);
    r.dev.set_used_flags(1, VIRTQ_USED_F_NO_NOTIFY);
    fill(&r.pool, &mut b, 64, 64, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 64);
    assert_eq!(r.dev.state().queues[1].notifies, 1, "suppressed");
    r.dev.set_used_flags(1, 0);
    fill(&r.pool, &mut b, 128, 3, 64);
    assert_eq!(q.tx[0].tx_burst(&mut b), 3);
    assert_eq!(r.dev.state().queues[1].notifies, 2);
    assert_eq!(r.dev.tx_pop(1).len(), 131);
    // Receive: a burst that refills rings at most once.
    for i in 0..40 {
        assert!(r.dev.rx_push(0, &test_frame(i, 64), [0; NET_HDR_LEN]));
    }
    let mut rx = MbufBatch::with_burst(64);
    assert_eq!(q.rx[0].rx_burst(&mut rx), 40);
    assert_eq!(r.dev.state().queues[0].notifies, rx_kicks + 1);
    rx.clear();
    r.finish(q);
}

#[test]
fn queue_pairs_and_promiscuous_mode_go_through_the_control_queue() {
    let mut r = rig(FakeConfig::default(), 4096);
    let q = r.start(2, 64, 64);
    {
        let st = r.dev.state();
        assert_eq!(st.ctrl_index, Some(8), "after 4 pairs");
        assert!(st.queues[..4].iter().all(|q| q.enable));
        assert!(!st.queues[4].enable);
        assert!(st.queues[8].enable);
        assert_eq!(
            st.ctrl_cmds,
            vec![
                (ctrl::CLASS_MQ, ctrl::MQ_VQ_PAIRS_SET, vec![2, 0]),
                (ctrl::CLASS_RX, ctrl::RX_PROMISC, vec![1]),
            ]
        );
    }
    assert_eq!((q.rx.len(), q.tx.len()), (2, 2));
    r.port.set_promiscuous(false).unwrap();
    assert!(!r.port.promiscuous());
    assert_eq!(r.dev.state().ctrl_cmds.last().unwrap(), &(0, 0, vec![0]));
    // A refused command is an error and changes nothing.
    r.dev.state().ctrl_ack = 1;
    let e = r.port.set_promiscuous(true).unwrap_err().to_string();
    assert!(e.contains("refused"), "{e}");
    assert!(!r.port.promiscuous());
    r.dev.state().ctrl_ack = ctrl::OK;
    r.finish(q);
}

#[test]
fn stop_waits_for_the_queues_and_frees_every_buffer() {
    let mut r = rig(FakeConfig::default(), 1024);
    let q = r.start(1, 0, 0);
    assert_eq!(r.pool.in_use(), 256, "the receive ring is full of buffers");
    let e = r.port.stop().unwrap_err().to_string();
    assert!(e.contains("still in use"), "{e}");
    assert!(r.port.is_started());
    drop(q);
    r.port.stop().unwrap();
    assert_eq!(r.pool.in_use(), 0);
    // Again, with a smaller ring, and dropping the port while started.
    let q = r.start(1, 16, 16);
    assert_eq!(r.pool.in_use(), 16);
    drop(q);
    drop(r.port);
    assert_eq!(r.pool.in_use(), 0);
}

#[test]
fn ring_sizes_follow_the_device() {
    let mut r = rig(FakeConfig::default(), 4096);
    let q = r.start(1, 1024, 100);
    {
        let st = r.dev.state();
        assert_eq!(st.queues[0].size, 256, "capped at the device's size");
        assert_eq!(st.queues[1].size, 64, "a power of two");
    }
    r.finish(q);
}

#[test]
fn a_start_that_fails_leaves_nothing_behind() {
    // 100 mbufs cannot fill a 256-entry receive ring.
    let mut r = rig(FakeConfig::default(), 100);
    r.port
        .configure(&PortConf {
            port_id: 0,
            nb_rxq: 1,
            nb_txq: 1,
            nb_rxd: 0,
            nb_txd: 0,
            max_rx_pktlen: 0,
            mempool: r.pool.clone(),
        })
        .unwrap();
    let e = r.port.start().unwrap_err().to_string();
    assert!(e.contains("--total-num-mbufs"), "{e}");
    assert!(!r.port.is_started());
    assert_eq!(r.dev.state().status, 0, "reset");
    assert_eq!(r.pool.in_use(), 0);
    // A control command the device refuses.
    let mut r = rig(FakeConfig::default(), 1024);
    r.dev.state().ctrl_ack = 1;
    r.port
        .configure(&PortConf {
            port_id: 0,
            nb_rxq: 1,
            nb_txq: 1,
            nb_rxd: 64,
            nb_txd: 64,
            max_rx_pktlen: 0,
            mempool: r.pool.clone(),
        })
        .unwrap();
    r.dev.view.allow(r.port.ring_region().unwrap());
    let e = r.port.start().unwrap_err().to_string();
    assert!(e.contains("refused"), "{e}");
    assert_eq!(r.pool.in_use(), 0);
}

#[test]
fn packets_without_headroom_are_dropped_and_counted() {
    let mut r = rig(FakeConfig::default(), 1024);
    let mut q = r.start(1, 8, 8);
    let mut b = MbufBatch::with_burst(4);
    let mut m = r.pool.alloc().unwrap();
    assert!(m.set_data(4, 60));
    b.push(m).unwrap();
    fill(&r.pool, &mut b, 0, 1, 60);
    assert_eq!(q.tx[0].tx_burst(&mut b), 2);
    assert_eq!(r.dev.tx_pop(1).len(), 1);
    assert_eq!(r.port.stats().oerrors, 1);
    assert_eq!(r.port.stats().opackets, 1);
    r.finish(q);
}

#[test]
fn dma_path_check_needs_access_platform_behind_an_iommu_with_va() {
    let f = feature::VERSION_1;
    let e = check_dma_path("d", f, Some(IommuType::Type1v2), IovaMode::Va)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("VIRTIO_F_ACCESS_PLATFORM") && e.contains("--iova-mode=pa"),
        "{e}"
    );
    assert!(check_dma_path("d", f, Some(IommuType::Type1v2), IovaMode::Pa).is_ok());
    assert!(
        check_dma_path(
            "d",
            f | feature::ACCESS_PLATFORM,
            Some(IommuType::Type1v2),
            IovaMode::Va
        )
        .is_ok()
    );
    assert!(check_dma_path("d", f, Some(IommuType::NoIommu), IovaMode::Pa).is_ok());
}

#[test]
fn devargs_take_speed_only() {
    use nicpoll::port::DevArgs;
    let o =
        VirtioOptions::from_devargs(&DevArgs::parse("0000:00:03.0,speed=25000").unwrap()).unwrap();
    assert_eq!(o.speed, Some(25000));
    let e = VirtioOptions::from_devargs(&DevArgs::parse("0000:00:03.0,mq=4").unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("accepted keys: speed"), "{e}");
}

#[test]
fn passes_the_port_conformance_suite_against_a_looping_device() {
    let mut loopers = Vec::new();
    let mut devs = Vec::new();
    testing::run_conformance(
        "net_virtio",
        &mut |id| {
            let dev = FakeVirtio::new(FakeConfig {
                trust_all: true,
                ..FakeConfig::default()
            });
            loopers.push(dev.spawn_loopback());
            devs.push(dev.clone());
            Ok(Box::new(port_on(&dev, Arc::new(DmaMemory::plain()), id)?) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
    drop(loopers);
    for d in devs {
        assert_eq!(d.state().dma_faults, 0);
    }
}

/// VIRTIO_NET_F_MRG_RXBUF: a 9014-byte frame the device spreads over
/// several receive buffers (its header's num_buffers says how many) comes
/// out as one chain, byte for byte, also when the bursts cut it; a bad used
/// entry in the middle drops that frame (counted) and no other; a frame over
/// the limit is counted.
#[test]
fn merged_receive_buffers_make_chains() {
    let mut r = rig(FakeConfig::default(), 1024);
    assert!(r.port.info().rx_scatter);
    let mut q = r.start(1, 64, 64);
    let room = r.pool.data_room();
    let jumbo = testing::udp_frame(7, 9014);
    let small = test_frame(8, 60);
    let hdr = [0u8; NET_HDR_LEN];
    assert!(r.dev.rx_push(0, &jumbo, hdr));
    assert!(r.dev.rx_push(0, &small, hdr));
    assert!(r.dev.rx_push(0, &jumbo, hdr));
    // Bursts of 2 used entries: the frames straddle them.
    let mut got = Vec::new();
    let mut rx = MbufBatch::with_burst(2);
    for _ in 0..20 {
        q.rx[0].rx_burst(&mut rx);
        while let Some(m) = rx.pop_front() {
            got.push((m.nb_segs(), testing::packet_bytes(&m), m.port()));
        }
    }
    // Header + 9014 bytes in buffers of room + 12: 6 buffers.
    let segs = (9014 + NET_HDR_LEN).div_ceil(room + NET_HDR_LEN);
    assert_eq!(
        got,
        vec![
            (segs, jumbo.clone(), 0),
            (1, small.clone(), 0),
            (segs, jumbo.clone(), 0)
        ]
    );
    let st = r.port.stats();
    assert_eq!((st.ipackets, st.ibytes, st.ierrors), (3, 2 * 9014 + 64, 0));
    // A used entry that names no buffer in flight, inside a merged frame:
    // that frame is dropped whole and counted; the next one arrives.
    let first = r.dev.state().queues[0].used_idx;
    assert!(r.dev.rx_push(0, &jumbo, hdr));
    r.dev.overwrite_used_id(0, first.wrapping_add(1), 9999);
    assert!(r.dev.rx_push(0, &small, hdr));
    let mut rx = MbufBatch::with_burst(32);
    q.rx[0].rx_burst(&mut rx);
    let got: Vec<Vec<u8>> = rx.iter().map(testing::packet_bytes).collect();
    assert_eq!(got, vec![small.clone()]);
    assert_eq!(r.port.stats().ierrors, 1);
    rx.clear();
    r.finish(q);
}

/// A frame longer than --max-pkt-len allows is dropped and counted.
#[test]
fn merged_frames_over_the_limit_are_counted() {
    let mut r = rig(FakeConfig::default(), 1024);
    r.port
        .configure(&PortConf {
            port_id: 0,
            nb_rxq: 1,
            nb_txq: 1,
            nb_rxd: 64,
            nb_txd: 64,
            max_rx_pktlen: 9000,
            mempool: r.pool.clone(),
        })
        .unwrap();
    r.dev.view.allow(r.port.ring_region().unwrap());
    let mut q = r.port.start().unwrap();
    let hdr = [0u8; NET_HDR_LEN];
    assert!(r.dev.rx_push(0, &testing::udp_frame(1, 9001), hdr));
    assert!(r.dev.rx_push(0, &testing::udp_frame(2, 9000), hdr));
    let mut rx = MbufBatch::with_burst(32);
    q.rx[0].rx_burst(&mut rx);
    let got: Vec<Vec<u8>> = rx.iter().map(testing::packet_bytes).collect();
    assert_eq!(got, vec![testing::udp_frame(2, 9000)]);
    assert_eq!(r.port.stats().ierrors, 1);
    rx.clear();
    r.finish(q);
}

/// Without MRG_RXBUF a frame must fit one buffer: the port says it does
/// not scatter, and the device drops what does not fit.
#[test]
fn without_merged_buffers_one_buffer_is_the_limit() {
    let mut r = rig(
        FakeConfig {
            features: FakeConfig::default().features & !feature::NET_MRG_RXBUF,
            ..FakeConfig::default()
        },
        1024,
    );
    assert!(!r.port.info().rx_scatter);
    let q = r.start(1, 64, 64);
    assert!(
        !r.dev
            .rx_push(0, &testing::udp_frame(1, 3000), [0; NET_HDR_LEN])
    );
    assert_eq!(r.dev.state().rx_oversize, 1);
    r.finish(q);
}

/// A chain goes out as one descriptor chain (the header in the first
/// segment's headroom); the device reads the frame whole; every descriptor
/// comes back to the free list when it completes; a chain that could never
/// fit the ring is dropped and counted.
#[test]
fn chains_go_out_as_descriptor_chains() {
    let mut r = rig(FakeConfig::default(), 1024);
    let mut q = r.start(1, 16, 16);
    let mut b = MbufBatch::with_burst(32);
    testing::fill_chain(&r.pool, &mut b, 1, 9014, 1500);
    testing::fill(&r.pool, &mut b, 2, 1, 60);
    testing::fill_chain(&r.pool, &mut b, 3, 3000, 1000);
    assert_eq!(q.tx[0].tx_burst(&mut b), 3);
    let out = r.dev.tx_pop(1);
    assert_eq!(
        out,
        vec![test_frame(1, 9014), test_frame(2, 60), test_frame(3, 3000)]
    );
    // 7 + 1 + 3 descriptors were used: a later burst needing 16 gets them
    // all back (reclaim frees every descriptor of a chain).
    testing::fill_chain(&r.pool, &mut b, 4, 1600, 100);
    assert_eq!(b.as_slice()[0].nb_segs(), 16);
    assert_eq!(q.tx[0].tx_burst(&mut b), 1);
    assert_eq!(r.dev.tx_pop(1), vec![test_frame(4, 1600)]);
    // 17 segments never fit a ring of 16.
    testing::fill_chain(&r.pool, &mut b, 5, 1700, 100);
    assert_eq!(q.tx[0].tx_burst(&mut b), 1);
    let st = r.port.stats();
    assert_eq!(
        (st.opackets, st.obytes, st.oerrors),
        (4, 9014 + 64 + 3000 + 1600, 1)
    );
    r.finish(q);
}
