//! Tests of the port against the fake NIC (`verbs::fake`) on a fake sysfs tree,
//! the error variants, and the hardware test (ignored).
#![deny(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::mbuf::MbufBatch;
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::MempoolConfig;
use nicpoll::port::testing::{self, Delivery};

use super::*;
use crate::flow::FlowRule;
use crate::sysfs::fake_tree::{TempRoot, add_function, add_virtual};
use crate::test_log;
use crate::verbs::fake::{FakeConfig, Nic};
use crate::verbs::{
    IBV_ACCESS_RELAXED_ORDERING, IBV_CREATE_CQ_ATTR_SINGLE_THREADED, IBV_LINK_LAYER_INFINIBAND,
    IBV_WC_GENERAL_ERR, IBV_WC_LOC_PROT_ERR, IBV_WC_LOC_QP_OP_ERR, IBV_WC_RECV, IBV_WC_SUCCESS,
    IBV_WC_WR_FLUSH_ERR, IBV_WQS_ERR, IBV_WQS_RDY, IbvWc,
};

const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
const EXTRA_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];
const BDF: &str = "0000:03:00.0";

fn tree() -> TempRoot {
    tree_of("mlx5_0")
}

/// The fake tree with the mlx5 function's RDMA device named `ibdev` (a test
/// whose log lines must not mix with another's gives its NIC its own name).
fn tree_of(ibdev: &str) -> TempRoot {
    let t = TempRoot::new("port");
    add_function(
        &t.0,
        BDF,
        sysfs::MELLANOX_VENDOR,
        sysfs::MLX5_DRIVER,
        Some(ibdev),
        Some(("fake0", "02:00:00:00:00:01")),
    );
    add_function(
        &t.0,
        "0000:05:00.0",
        "0x8086",
        "i40e",
        None,
        Some(("eno1", "3c:fd:fe:00:00:01")),
    );
    add_virtual(&t.0, "lo");
    t
}

fn open_fake(nic: &Arc<Nic>, root: &Path, spec: &str, id: u16) -> Result<Mlx5Port> {
    let verbs = nic.install();
    let opts = Mlx5Options::from_devargs(&DevArgs::parse(spec).expect("devargs parse"))?;
    Mlx5Port::open_with(verbs, nic.kernel(), root, &opts, id)
}

fn pool(n: u32) -> Mempool {
    Mempool::new(&DmaMemory::plain(), &MempoolConfig::new("mlx5-test", n)).unwrap()
}

fn conf(pool: &Mempool, nb_rxq: u16, nb_txq: u16, desc: u16) -> PortConf {
    PortConf {
        port_id: 3,
        nb_rxq,
        nb_txq,
        nb_rxd: desc,
        nb_txd: desc,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    }
}

/// A fake NIC, a fake tree and a started port.
struct Bench {
    root: TempRoot,
    nic: Arc<Nic>,
    pool: Mempool,
    port: Mlx5Port,
    q: PortQueues,
}

impl Bench {
    fn new(
        cfg: FakeConfig,
        spec: &str,
        nb_rxq: u16,
        nb_txq: u16,
        desc: u16,
        pool_size: u32,
    ) -> Bench {
        let root = tree_of(&cfg.ibdev);
        let nic = Nic::new(cfg);
        let mut port = open_fake(&nic, &root.0, spec, 3).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let pool = pool(pool_size);
        port.configure(&conf(&pool, nb_rxq, nb_txq, desc)).unwrap();
        let q = port.start().unwrap();
        Bench {
            root,
            nic,
            pool,
            port,
            q,
        }
    }

    fn xstat(&self, name: &str) -> u64 {
        self.port
            .xstats()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no xstat {name}"))
            .1
    }

    /// Stop, drop, and check that every mbuf and every verbs object is gone and
    /// no object was destroyed while in use.
    fn finish(mut self) {
        drop(std::mem::take(&mut self.q));
        self.port.stop().unwrap();
        // Context, PD and the MRs (the port's pool, and any other pool a
        // transmit queue registered) stay while the port exists.
        assert_eq!(
            self.nic.live_objects(),
            2 + self.nic.mr_count(),
            "objects left after stop"
        );
        drop(self.port);
        assert_eq!(self.nic.live_objects(), 0, "objects left after drop");
        assert!(self.nic.clean(), "{}", self.nic.violations());
        assert_eq!(self.pool.in_use(), 0, "mbufs not returned");
        drop(self.root);
    }
}

fn frame(dst: [u8; 6], ethertype: u16, len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len.max(60)];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x42]);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f
}

fn ip4(dst: [u8; 6], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = frame(dst, 0x0800, 64, 0);
    f[14] = 0x45;
    f[14 + 9] = proto;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f
}

fn ip6(dst: [u8; 6], next: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut f = frame(dst, 0x86dd, 80, 0);
    f[14] = 0x60;
    f[14 + 6] = next;
    f[22..38].copy_from_slice(&[0xfd; 16]);
    f[38..54].copy_from_slice(&[0xfe; 16]);
    f[54..56].copy_from_slice(&sport.to_be_bytes());
    f[56..58].copy_from_slice(&dport.to_be_bytes());
    f
}

fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

/// Everything a receive queue has now (several bursts).
fn drain(q: &mut dyn RxQueue) -> Vec<Vec<u8>> {
    let mut b = MbufBatch::with_burst(64);
    let mut v = Vec::new();
    while q.rx_burst(&mut b) > 0 {
        while let Some(m) = b.pop_front() {
            v.push(m.data().to_vec());
        }
    }
    v
}

fn send(pool: &Mempool, q: &mut dyn TxQueue, frames: &[Vec<u8>]) -> usize {
    let mut b = MbufBatch::with_burst(frames.len().max(1));
    for f in frames {
        let mut m = pool.alloc().expect("pool has room");
        assert!(m.set_len(f.len()));
        m.data_mut().copy_from_slice(f);
        b.push(m).expect("batch has room");
    }
    let n = q.tx_burst(&mut b);
    b.clear();
    n
}

// ---------------------------------------------------------------------------

#[test]
fn passes_the_port_conformance_suite_on_the_fake_nic() {
    let root = tree();
    let mut nics: Vec<Arc<Nic>> = Vec::new();
    testing::run_conformance(
        "net_mlx5 (fake NIC, looped back)",
        &mut |id| {
            let nic = Nic::new(FakeConfig {
                loopback: true,
                ..FakeConfig::default()
            });
            nics.push(nic.clone());
            Ok(Box::new(open_fake(&nic, &root.0, "net_mlx5,iface=fake0", id)?) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
    // Limits and life cycle, bursts, chains and the frame limit: a port each.
    assert_eq!(nics.len(), 3);
    for nic in &nics {
        assert!(nic.clean(), "{}", nic.violations());
        assert_eq!(nic.live_objects(), 0, "verbs objects leaked");
        assert!(!nic.sent_frames().is_empty() || nic.kernel_frames().is_empty());
    }
}

#[test]
fn steers_our_mac_and_leaves_the_rest_to_the_kernel() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    let flows = b.nic.flows();
    assert_eq!(flows.len(), 1, "one queue: one L2 rule");
    assert_eq!(
        flows[0].rule,
        FlowRule {
            priority: 2,
            port: 1,
            dst_mac: Some(OUR_MAC),
            ..FlowRule::default()
        }
    );
    assert_eq!(b.nic.rss_qp(flows[0].qp), Some((0, vec![0])));
    assert_eq!(b.nic.posted(0), 64, "ring filled before steering");
    let ours = frame(OUR_MAC, 0x88b5, 100, 7);
    b.nic.receive(&ours);
    b.nic.receive(&ip4(OUR_MAC, 6, 1, 2));
    b.nic.receive(&frame(OTHER_MAC, 0x88b5, 100, 8));
    b.nic.receive(&frame([0xff; 6], 0x0806, 60, 9));
    let mut batch = MbufBatch::with_burst(32);
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 2);
    let m = batch.pop_front().unwrap();
    assert_eq!(m.data(), &ours[..]);
    assert_eq!((m.port(), m.queue()), (3, 0));
    drop(m);
    batch.clear();
    let kernel = b.nic.kernel_frames();
    assert_eq!(
        kernel.len(),
        2,
        "other unicast and broadcast stay with the kernel"
    );
    assert_eq!(&kernel[1][0..6], &[0xff; 6]);
    let s = b.port.stats();
    assert_eq!((s.ipackets, s.ibytes), (2, 100 + 64));
    assert_eq!(b.port.link().to_string(), "up, 25 Gbps, full-duplex");
    assert_eq!(b.port.mac_addr(), MacAddr(OUR_MAC));
    assert_eq!(b.port.info().max_rx_pktlen, 1518);
    assert_eq!(b.port.info().numa_node, Some(0));
    b.finish();
}

#[test]
fn rss_spreads_ip_traffic_and_keeps_the_rest_on_queue_0() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        4,
        1,
        64,
        2048,
    );
    let flows = b.nic.flows();
    assert_eq!(flows.len(), 7, "one rule per traffic type");
    let mut seen = Vec::new();
    for f in &flows {
        let (fields, table) = b.nic.rss_qp(f.qp).unwrap();
        match (f.rule.ipv6, f.rule.tcp) {
            (None, None) => {
                assert_eq!((f.rule.priority, fields, table.clone()), (2, 0, vec![0]));
            }
            (Some(_), None) => {
                assert_eq!(f.rule.priority, 1);
                assert_eq!(table, vec![0, 1, 2, 3]);
                assert_eq!(fields.count_ones(), 2);
            }
            (Some(_), Some(_)) => {
                assert_eq!(f.rule.priority, 0);
                assert_eq!(table, vec![0, 1, 2, 3]);
                assert_eq!(fields.count_ones(), 4);
            }
            (None, Some(_)) => panic!("L4 without L3"),
        }
        seen.push((f.rule.ipv6, f.rule.tcp));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 7);
    for p in 0..64u16 {
        b.nic.receive(&ip4(OUR_MAC, 6, 1000 + p, 80));
        b.nic.receive(&ip6(OUR_MAC, 17, 2000 + p, 53));
    }
    for _ in 0..8 {
        b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, 1));
    }
    let per_queue: Vec<Vec<Vec<u8>>> = b.q.rx.iter_mut().map(|q| drain(q.as_mut())).collect();
    let total: usize = per_queue.iter().map(|v| v.len()).sum();
    assert_eq!(total, 136);
    assert!(
        per_queue.iter().filter(|v| !v.is_empty()).count() >= 3,
        "hashing spreads flows: {:?}",
        per_queue.iter().map(|v| v.len()).collect::<Vec<_>>()
    );
    let non_ip: Vec<usize> = per_queue
        .iter()
        .map(|v| v.iter().filter(|f| f[12..14] == [0x88, 0xb5]).count())
        .collect();
    assert_eq!(non_ip, vec![8, 0, 0, 0], "non-IP traffic goes to queue 0");
    b.finish();
}

#[test]
fn three_queues_fill_a_table_of_four() {
    let b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        3,
        1,
        32,
        2048,
    );
    let flows = b.nic.flows();
    let tcp4 = flows
        .iter()
        .find(|f| f.rule.ipv6 == Some(false) && f.rule.tcp == Some(true))
        .unwrap();
    assert_eq!(b.nic.rss_qp(tcp4.qp).unwrap().1, vec![0, 1, 2, 0]);
    b.finish();
}

#[test]
fn extra_macs_and_vlans() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0,mac=02:00:00:00:00:09,vlan=100+200",
        1,
        1,
        64,
        1024,
    );
    let mut rules: Vec<(Option<[u8; 6]>, Option<u16>)> = b
        .nic
        .flows()
        .iter()
        .map(|f| (f.rule.dst_mac, f.rule.vlan))
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        vec![
            (Some(OUR_MAC), Some(100)),
            (Some(OUR_MAC), Some(200)),
            (Some(EXTRA_MAC), Some(100)),
            (Some(EXTRA_MAC), Some(200)),
        ]
    );
    assert_eq!(
        b.nic.fdb_log(),
        vec![(7, EXTRA_MAC, true)],
        "extra MAC added to the FDB"
    );
    let base = frame(OUR_MAC, 0x88b5, 64, 3);
    b.nic.receive(&tagged(&base, 100));
    b.nic.receive(&base);
    b.nic.receive(&tagged(&base, 300));
    b.nic
        .receive(&tagged(&frame(EXTRA_MAC, 0x88b5, 64, 4), 200));
    let got = drain(b.q.rx[0].as_mut());
    assert_eq!(got.len(), 2);
    assert_eq!(
        &got[0][12..16],
        &[0x81, 0x00, 0, 100],
        "the tag stays in the frame"
    );
    assert_eq!(&got[1][0..6], &EXTRA_MAC);
    assert_eq!(
        b.nic.kernel_frames().len(),
        2,
        "untagged and VLAN 300 stay with the kernel"
    );
    let nic = b.nic.clone();
    b.finish();
    assert_eq!(
        nic.fdb_log(),
        vec![(7, EXTRA_MAC, true), (7, EXTRA_MAC, false)],
        "FDB entry removed at stop"
    );
}

#[test]
fn promiscuous_takes_all_traffic_while_on() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        2,
        1,
        64,
        2048,
    );
    assert!(!b.port.promiscuous());
    b.nic.receive(&frame(OTHER_MAC, 0x88b5, 64, 1));
    assert_eq!(b.nic.kernel_frames().len(), 1);
    b.port.set_promiscuous(true).unwrap();
    assert_eq!(b.nic.flows().len(), 14);
    b.nic.receive(&frame(OTHER_MAC, 0x88b5, 64, 2));
    b.nic.receive(&ip4(OTHER_MAC, 17, 5, 6));
    let n: usize = b.q.rx.iter_mut().map(|q| drain(q.as_mut()).len()).sum();
    assert_eq!(n, 2);
    b.port.set_promiscuous(false).unwrap();
    assert_eq!(b.nic.flows().len(), 7);
    b.nic.receive(&frame(OTHER_MAC, 0x88b5, 64, 3));
    assert_eq!(b.nic.kernel_frames().len(), 2);
    // Set while stopped: applied at the next start.
    drop(std::mem::take(&mut b.q));
    b.port.stop().unwrap();
    b.port.set_promiscuous(true).unwrap();
    b.q = b.port.start().unwrap();
    assert_eq!(b.nic.flows().len(), 14);
    b.finish();
}

#[test]
fn bad_receive_completions_are_counted_and_the_queue_recovers() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    let mut batch = MbufBatch::with_burst(32);
    // An error status: counted, the WQ is reset and refilled.
    b.nic.complete_posted(
        0,
        IbvWc {
            status: IBV_WC_LOC_PROT_ERR,
            opcode: IBV_WC_RECV,
            ..Default::default()
        },
        true,
    );
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 0);
    assert_eq!(b.port.stats().ierrors, 1);
    assert_eq!(b.xstat("rx_q0_bad_status"), 1);
    assert_eq!(b.xstat("rx_q0_recoveries"), 1);
    assert_eq!(b.nic.posted(0), 64, "ring refilled after the reset");
    // A success claiming more bytes than the buffer holds: dropped, counted.
    b.nic.complete_posted(
        0,
        IbvWc {
            status: IBV_WC_SUCCESS,
            opcode: IBV_WC_RECV,
            byte_len: 100_000,
            ..Default::default()
        },
        true,
    );
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 0);
    assert_eq!(b.xstat("rx_q0_bad_length"), 1);
    // A completion for a request never posted.
    b.nic.inject_rx_completion(
        0,
        IbvWc {
            wr_id: 1_000_000,
            opcode: IBV_WC_RECV,
            byte_len: 64,
            ..Default::default()
        },
    );
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 0);
    assert_eq!(b.xstat("rx_q0_bad_wr_id"), 1);
    assert_eq!(b.port.stats().ierrors, 3);
    // A frame longer than the buffer: the device reports a length error; the
    // buffer is counted and reposted, the queue is not reset.
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 3000, 1));
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 0);
    assert_eq!(b.xstat("rx_q0_too_long"), 1);
    assert_eq!(b.xstat("rx_q0_recoveries"), 1);
    // And the queue works.
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, 2));
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 1);
    batch.clear();
    assert_eq!(b.port.stats().ierrors, 4);
    b.finish();
}

#[test]
fn a_frame_longer_than_the_buffer_is_counted_and_the_queue_keeps_running() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    // One oversized frame between good ones, and a burst too small to take
    // them all: a reset would drop the frames still in the queue.
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 3000, 9));
    for i in 0..3 {
        b.nic.receive(&frame(OUR_MAC, 0x88b5, 100, i));
    }
    let mut got = 0;
    let mut batch = MbufBatch::with_burst(2);
    for _ in 0..4 {
        got += b.q.rx[0].rx_burst(&mut batch);
        batch.clear();
    }
    assert_eq!(got, 3, "every good frame arrives");
    assert_eq!(b.xstat("rx_q0_too_long"), 1);
    assert_eq!(
        b.xstat("rx_q0_recoveries"),
        0,
        "no reset for a length error"
    );
    assert_eq!(b.port.stats().ierrors, 1);
    // The oversized frame's buffer went back to the ring with the others: a
    // ring's worth of frames still arrives.
    let mut more = 0;
    for round in 0..4u8 {
        for i in 0..16 {
            b.nic.receive(&frame(OUR_MAC, 0x88b5, 100, round * 16 + i));
        }
        more += drain(b.q.rx[0].as_mut()).len();
    }
    assert_eq!(more, 64);
    assert_eq!(b.nic.missed(), 0);
    b.finish();
}

#[test]
fn fatal_receive_errors_reset_the_queue() {
    for status in [
        IBV_WC_LOC_QP_OP_ERR,
        IBV_WC_LOC_PROT_ERR,
        IBV_WC_WR_FLUSH_ERR,
    ] {
        let mut b = Bench::new(
            FakeConfig::default(),
            "net_mlx5,iface=fake0",
            1,
            1,
            64,
            1024,
        );
        b.nic.complete_posted(
            0,
            IbvWc {
                status,
                opcode: IBV_WC_RECV,
                ..Default::default()
            },
            true,
        );
        assert_eq!(
            b.nic.wq_state(0),
            Some(IBV_WQS_ERR),
            "status {status}: the device stopped the queue"
        );
        let mut batch = MbufBatch::with_burst(32);
        assert_eq!(b.q.rx[0].rx_burst(&mut batch), 0);
        assert_eq!(b.xstat("rx_q0_recoveries"), 1, "status {status}");
        assert_eq!(b.xstat("rx_q0_bad_status"), 1, "status {status}");
        assert_eq!(b.nic.wq_state(0), Some(IBV_WQS_RDY), "status {status}");
        assert_eq!(b.nic.posted(0), 64);
        b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, 1));
        assert_eq!(b.q.rx[0].rx_burst(&mut batch), 1);
        assert_eq!(b.nic.missed(), 0, "status {status}");
        batch.clear();
        b.finish();
    }
}

#[test]
fn other_receive_errors_are_counted_without_a_reset() {
    // An error the device does not treat as fatal (here the status libmlx5
    // gives an unknown syndrome) leaves the queue running, like a length
    // error: a reset would drop the frames behind it.
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 100, 1));
    b.nic.complete_posted(
        0,
        IbvWc {
            status: IBV_WC_GENERAL_ERR,
            opcode: IBV_WC_RECV,
            ..Default::default()
        },
        true,
    );
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 100, 2));
    assert_eq!(b.nic.wq_state(0), Some(IBV_WQS_RDY));
    let mut got = 0;
    let mut batch = MbufBatch::with_burst(2);
    for _ in 0..4 {
        got += b.q.rx[0].rx_burst(&mut batch);
        batch.clear();
    }
    assert_eq!(got, 2, "the frames on both sides of the error arrive");
    assert_eq!(b.xstat("rx_q0_bad_status"), 1);
    assert_eq!(b.xstat("rx_q0_recoveries"), 0, "no reset");
    assert_eq!(b.port.stats().ierrors, 1);
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 100, 3));
    assert_eq!(drain(b.q.rx[0].as_mut()).len(), 1);
    assert_eq!(b.nic.missed(), 0);
    b.finish();
}

#[test]
fn a_failed_poll_is_counted_and_does_not_reset_the_queue() {
    // libmlx5 fails a poll it cannot parse; resetting the WQ would not repair
    // the CQ, and would throw away the frames already completed.
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 100, 1));
    b.nic.fail_next_poll();
    let mut batch = MbufBatch::with_burst(32);
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 0);
    assert_eq!(b.xstat("rx_q0_poll_errors"), 1);
    assert_eq!(b.xstat("rx_q0_recoveries"), 0, "no reset");
    assert_eq!(
        b.q.rx[0].rx_burst(&mut batch),
        1,
        "the frame completed before the failed poll is still there"
    );
    batch.clear();
    b.finish();
}

#[test]
fn each_transmit_queue_has_its_own_doorbell_and_polls_without_a_lock() {
    // More queues than libmlx5 has dedicated (4) and shared (12) doorbell
    // registers for QPs created without a thread domain.
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        2,
        20,
        32,
        4096,
    );
    assert_eq!(b.nic.send_qps_in_thread_domains(), 20);
    let doorbells = b.nic.send_doorbells();
    assert_eq!(doorbells.len(), 20);
    assert!(
        doorbells
            .iter()
            .all(|(_, shared, users)| !shared && *users == 1),
        "every transmit queue rings a register of its own: {doorbells:?}"
    );
    assert!(
        b.nic
            .cq_flags()
            .iter()
            .all(|f| f & IBV_CREATE_CQ_ATTR_SINGLE_THREADED != 0),
        "every CQ is single-threaded: {:?}",
        b.nic.cq_flags()
    );
    for q in 0..20 {
        let f = frame(OTHER_MAC, 0x88b5, 300, q as u8);
        assert_eq!(send(&b.pool, b.q.tx[q].as_mut(), &[f]), 1);
        assert_eq!(send(&b.pool, b.q.tx[q].as_mut(), &[]), 0);
    }
    b.nic.receive(&ip4(OUR_MAC, 17, 1, 2));
    let n: usize = b.q.rx.iter_mut().map(|q| drain(q.as_mut()).len()).sum();
    assert_eq!(n, 1);
    assert_eq!(b.nic.sent_frames().len(), 20);
    assert_eq!(
        b.nic.locking_polls(),
        0,
        "completions are read with the lock-free extended poll functions"
    );
    b.finish();
}

#[test]
fn without_thread_domains_the_queues_still_work_on_shared_doorbells() {
    let mut b = Bench::new(
        FakeConfig {
            thread_domains: false,
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
        1,
        20,
        32,
        4096,
    );
    assert_eq!(b.nic.send_qps_in_thread_domains(), 0);
    let shared = b.nic.send_doorbells().iter().filter(|d| d.1).count();
    assert_eq!(shared, 16, "past the 4 dedicated registers, QPs share");
    for q in 0..20 {
        let f = frame(OTHER_MAC, 0x88b5, 300, q as u8);
        assert_eq!(send(&b.pool, b.q.tx[q].as_mut(), &[f]), 1);
    }
    assert_eq!(b.nic.sent_frames().len(), 20);
    b.finish();
}

#[test]
fn the_mempool_is_registered_with_relaxed_ordering() {
    let b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        32,
        1024,
    );
    let access = b.nic.mr_access();
    assert_eq!(access.len(), 1);
    let relaxed = access[0] & IBV_ACCESS_RELAXED_ORDERING as u32 != 0;
    assert_eq!(
        relaxed,
        !crate::verbs::context::cpu_mishandles_relaxed_ordering(),
        "relaxed ordering unless the CPU is a Haswell/Broadwell (as DPDK)"
    );
    b.finish();
}

#[test]
fn receive_counts_nombuf_and_resumes_when_mbufs_come_back() {
    let mut b = Bench::new(FakeConfig::default(), "net_mlx5,iface=fake0", 1, 1, 16, 32);
    let mut held = MbufBatch::with_burst(64);
    for i in 0..16 {
        b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, i));
    }
    assert_eq!(b.q.rx[0].rx_burst(&mut held), 16);
    assert_eq!(b.nic.posted(0), 16, "refilled from the 16 spare mbufs");
    for i in 0..16 {
        b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, i));
    }
    assert_eq!(b.q.rx[0].rx_burst(&mut held), 16);
    assert_eq!(
        b.port.stats().rx_nombuf,
        16,
        "pool dry: refill of 16 failed"
    );
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, 99));
    assert_eq!(b.nic.missed(), 1, "nothing posted: the device drops");
    held.clear();
    let mut batch = MbufBatch::with_burst(32);
    assert_eq!(b.q.rx[0].rx_burst(&mut batch), 0);
    assert_eq!(b.nic.posted(0), 16, "refilled once mbufs came back");
    b.finish();
}

#[test]
fn transmit_inlines_small_frames_and_dmas_the_rest() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    let frames = vec![
        frame(OTHER_MAC, 0x88b5, 60, 1),
        frame(OTHER_MAC, 0x88b5, 1000, 2),
    ];
    assert_eq!(send(&b.pool, b.q.tx[0].as_mut(), &frames), 2);
    assert_eq!(b.nic.sent_frames(), frames);
    assert_eq!(b.xstat("tx_q0_inline"), 1);
    let s = b.port.stats();
    assert_eq!((s.opackets, s.obytes), (2, 1060));
    // The DMA'd mbuf is held until a completion covers it; the next burst reaps.
    assert_eq!(b.pool.in_use(), 64 + 1);
    assert_eq!(send(&b.pool, b.q.tx[0].as_mut(), &[]), 0);
    assert_eq!(b.pool.in_use(), 64);
    b.finish();
}

#[test]
fn transmit_never_overfills_the_send_queue() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        16,
        2048,
    );
    let frames: Vec<Vec<u8>> = (0..32).map(|i| frame(OTHER_MAC, 0x88b5, 200, i)).collect();
    let mut sent = 0;
    for _ in 0..100 {
        sent += send(&b.pool, b.q.tx[0].as_mut(), &frames);
    }
    assert!(sent >= 100 * 16, "ring of 16 refilled every burst: {sent}");
    assert_eq!(b.nic.sent_frames().len(), sent);
    assert!(b.nic.clean(), "{}", b.nic.violations());
    b.finish();
}

#[test]
fn send_errors_are_counted_and_the_queue_recovers() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    let frames: Vec<Vec<u8>> = (0..8).map(|i| frame(OTHER_MAC, 0x88b5, 300, i)).collect();
    b.nic.fail_next_send(IBV_WC_LOC_PROT_ERR);
    assert_eq!(send(&b.pool, b.q.tx[0].as_mut(), &frames), 8);
    // The next burst reaps the error (and the flushed rest), resets the QP.
    assert_eq!(send(&b.pool, b.q.tx[0].as_mut(), &frames), 8);
    assert_eq!(b.xstat("tx_q0_recoveries"), 1);
    assert_eq!(
        b.port.stats().oerrors,
        8,
        "the failed request and the 7 flushed behind it"
    );
    assert_eq!(
        b.port.stats().opackets,
        8,
        "a frame is counted sent or failed, not both: only the second burst was sent"
    );
    assert_eq!(
        b.nic.sent_frames().len(),
        8,
        "after recovery the queue sends again"
    );
    b.finish();
}

#[test]
fn frames_of_another_mempool_get_a_memory_region_on_demand() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    let other = pool(16);
    let frames = vec![
        frame(OTHER_MAC, 0x88b5, 64, 1),
        frame(OTHER_MAC, 0x88b5, 1200, 2),
    ];
    assert_eq!(b.nic.mr_count(), 1, "the port's own pool");
    assert_eq!(send(&other, b.q.tx[0].as_mut(), &frames), 2, "both taken");
    assert_eq!(
        b.nic.sent_frames(),
        frames,
        "the long frame of the other pool goes by DMA through a region registered on first sight"
    );
    assert_eq!(b.nic.mr_count(), 2);
    assert_eq!(b.xstat("tx_q0_mr_registered"), 1);
    // Again: the queue's cache knows the region; nothing more is registered.
    assert_eq!(send(&other, b.q.tx[0].as_mut(), &frames[1..]), 1);
    assert_eq!(b.nic.mr_count(), 2);
    assert_eq!(b.xstat("tx_q0_mr_registered"), 1);
    assert_eq!(b.xstat("tx_q0_unsendable"), 0);
    assert_eq!(b.port.stats().oerrors, 0);
    assert!(b.nic.clean(), "{}", b.nic.violations());
    // The other pool's buffers come back once completions cover them.
    assert_eq!(send(&other, b.q.tx[0].as_mut(), &[]), 0);
    assert_eq!(other.in_use(), 0);
    b.finish();
}

#[test]
fn runts_and_refused_frames_are_dropped_not_retried_forever() {
    let mut b = Bench::new(
        FakeConfig {
            refuse_send_len: Some(333),
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
        1,
        1,
        64,
        1024,
    );
    let mut batch = MbufBatch::with_burst(8);
    for len in [16usize, 100, 333, 200, 300] {
        let mut m = b.pool.alloc().unwrap();
        assert!(m.set_len(len));
        m.data_mut().fill(0x5a);
        batch.push(m).unwrap();
    }
    // 16: runt, dropped; 100: sent; 333: refused by the library, dropped;
    // 200 and 300: not posted in this burst, left for the caller.
    assert_eq!(b.q.tx[0].tx_burst(&mut batch), 3);
    assert_eq!(batch.len(), 2);
    assert_eq!(b.q.tx[0].tx_burst(&mut batch), 2);
    let lens: Vec<usize> = b.nic.sent_frames().iter().map(|f| f.len()).collect();
    assert_eq!(lens, vec![100, 200, 300]);
    assert_eq!(b.xstat("tx_q0_unsendable"), 2);
    assert_eq!(b.xstat("tx_q0_post_errors"), 1);
    assert_eq!(b.port.stats().oerrors, 2);
    b.finish();
}

#[test]
fn start_without_enough_mbufs_fails_clearly_and_cleans_up() {
    let root = tree();
    let nic = Nic::new(FakeConfig::default());
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    let small = pool(8);
    port.configure(&conf(&small, 1, 1, 16)).unwrap();
    let e = port.start().unwrap_err().to_string();
    assert!(e.contains("--total-num-mbufs"), "{e}");
    assert_eq!(small.in_use(), 0);
    assert!(!port.is_started());
    drop(port);
    assert_eq!(nic.live_objects(), 0);
    assert!(nic.clean(), "{}", nic.violations());
}

#[test]
fn stop_is_refused_while_queues_are_alive() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        32,
        1024,
    );
    let e = b.port.stop().unwrap_err().to_string();
    assert!(e.contains("drop the queues"), "{e}");
    assert!(b.port.is_started());
    drop(std::mem::take(&mut b.q));
    b.port.stop().unwrap();
    assert!(
        b.nic.flows().is_empty(),
        "flows removed: traffic back to the kernel"
    );
    b.port.configure(&conf(&b.pool, 2, 2, 32)).unwrap();
    b.q = b.port.start().unwrap();
    assert_eq!(b.nic.flows().len(), 7);
    b.finish();
}

#[test]
fn port_dropped_before_its_queues_tears_down_safely() {
    let root = tree();
    let nic = Nic::new(FakeConfig::default());
    let p = pool(1024);
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    port.configure(&conf(&p, 2, 2, 32)).unwrap();
    let mut q = port.start().unwrap();
    drop(port);
    assert!(nic.flows().is_empty(), "flows go with the port");
    nic.receive(&frame(OUR_MAC, 0x88b5, 64, 1));
    let mut batch = MbufBatch::with_burst(8);
    assert_eq!(q.rx[0].rx_burst(&mut batch), 0);
    drop(q);
    assert_eq!(nic.live_objects(), 0);
    assert!(nic.clean(), "{}", nic.violations());
    assert_eq!(p.in_use(), 0);
}

#[test]
fn statistics_xstats_and_imissed() {
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        32,
        1024,
    );
    let names: Vec<String> = b.port.xstats().into_iter().map(|(n, _)| n).collect();
    for want in [
        "rx_good_packets",
        "rx_q0_packets",
        "rx_q0_bad_status",
        "tx_q0_inline",
        "hw_out_of_buffer",
        "netdev_rx_packets",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing xstat {want}: {names:?}"
        );
    }
    assert_eq!(b.xstat("netdev_tx_packets"), 20);
    let oob = b
        .root
        .0
        .join("sys/class/infiniband/mlx5_0/ports/1/hw_counters/out_of_buffer");
    std::fs::write(&oob, "5\n").unwrap();
    assert_eq!(b.port.stats().imissed, 5);
    assert_eq!(b.xstat("rx_missed_errors"), 5);
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, 1));
    drain(b.q.rx[0].as_mut());
    b.port.reset_stats();
    assert_eq!(b.port.stats(), PortStats::default());
    b.finish();
}

#[test]
fn a_pci_address_selects_the_same_port() {
    let root = tree();
    let nic = Nic::new(FakeConfig::default());
    let port = open_fake(&nic, &root.0, "0000:03:00.0,txq_inline_max=64", 0).unwrap();
    assert_eq!(port.info().name, BDF);
    assert_eq!(port.interface(), "fake0");
    assert_eq!(port.rdma_device(), ("mlx5_0", 1));
    assert!(is_mlx5_pci(&root.0, BDF));
    assert!(!is_mlx5_pci(&root.0, "0000:05:00.0"));
}

#[test]
fn rdma_netlink_names_the_port_of_a_multi_port_device() {
    // A bond or representor device: the interface is on IB port 2 although its
    // dev_port (0) says 1.
    let mut b = Bench::new(
        FakeConfig {
            rdma_port: Some(2),
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
        1,
        1,
        32,
        1024,
    );
    assert_eq!(b.port.rdma_device(), ("mlx5_0", 2));
    assert!(
        b.nic.flows().iter().all(|f| f.rule.port == 2),
        "rules on port 2"
    );
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, 1));
    assert_eq!(drain(b.q.rx[0].as_mut()).len(), 1);
    b.finish();
}

// ---------------------------------------------------------------------------
// Isolated mode, frame sizes, ring sizes, promiscuous mode

fn rule(kind_priority: u16, f: impl FnOnce(&mut FlowRule)) -> FlowRule {
    let mut r = FlowRule {
        priority: kind_priority,
        port: 1,
        ..FlowRule::default()
    };
    f(&mut r);
    r
}

#[test]
fn isolated_mode_creates_exactly_the_flow_rules() {
    // Each case: flow=, the rules the fake library must have been given.
    let cases: Vec<(&str, Vec<FlowRule>)> = vec![
        (
            "eth_type:0x88b5",
            vec![rule(2, |r| r.ether_type = Some(0x88b5))],
        ),
        (
            "ip_proto:47",
            vec![
                rule(1, |r| {
                    r.ipv6 = Some(false);
                    r.ip_proto = Some(47)
                }),
                rule(1, |r| {
                    r.ipv6 = Some(true);
                    r.ip_proto = Some(47)
                }),
            ],
        ),
        (
            "udp_dst:4789/ipv4",
            vec![rule(0, |r| {
                r.ipv6 = Some(false);
                r.tcp = Some(false);
                r.dst_port = Some(4789)
            })],
        ),
        (
            "tcp_dst:80",
            vec![
                rule(0, |r| {
                    r.ipv6 = Some(false);
                    r.tcp = Some(true);
                    r.dst_port = Some(80)
                }),
                rule(0, |r| {
                    r.ipv6 = Some(true);
                    r.tcp = Some(true);
                    r.dst_port = Some(80)
                }),
            ],
        ),
        (
            "dst_mac:02:00:00:00:00:01/vlan:100+eth_type:0x0806/dst_mac:02:00:00:00:00:01",
            vec![
                rule(2, |r| {
                    r.dst_mac = Some(OUR_MAC);
                    r.vlan = Some(100)
                }),
                rule(2, |r| {
                    r.dst_mac = Some(OUR_MAC);
                    r.ether_type = Some(0x0806)
                }),
            ],
        ),
    ];
    for (flows, want) in cases {
        let b = Bench::new(
            FakeConfig::default(),
            &format!("net_mlx5,iface=fake0,isolated=1,flow={flows}"),
            4,
            1,
            32,
            2048,
        );
        let got: Vec<FlowRule> = b.nic.flows().iter().map(|f| f.rule).collect();
        assert_eq!(got, want, "flow={flows}");
        // Each rule goes to the hash QP of its traffic type.
        for f in b.nic.flows() {
            let (fields, table) = b.nic.rss_qp(f.qp).unwrap();
            match (f.rule.ipv6, f.rule.tcp) {
                (None, _) => assert_eq!((fields, table), (0, vec![0]), "flow={flows}"),
                (Some(_), None) => assert_eq!(fields.count_ones(), 2, "flow={flows}"),
                (Some(_), Some(_)) => assert_eq!(fields.count_ones(), 4, "flow={flows}"),
            }
        }
        assert!(b.port.steering_summary().starts_with("isolated mode: only"));
        b.finish();
    }
}

#[test]
fn isolated_mode_leaves_the_kernel_everything_else() {
    test_log::start();
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0,isolated=1,flow=udp_dst:4789+eth_type:0x88b5",
        2,
        1,
        32,
        2048,
    );
    let vxlan = ip4(OUR_MAC, 17, 5555, 4789);
    b.nic.receive(&vxlan);
    b.nic.receive(&frame(OUR_MAC, 0x88b5, 64, 1));
    // The kernel's own traffic to the interface's MAC: SSH, DNS, ARP.
    b.nic.receive(&ip4(OUR_MAC, 6, 40000, 22));
    b.nic.receive(&ip4(OUR_MAC, 17, 5555, 53));
    b.nic.receive(&frame(OUR_MAC, 0x0806, 60, 2));
    let got: usize = b.q.rx.iter_mut().map(|q| drain(q.as_mut()).len()).sum();
    assert_eq!(got, 2, "only what flow= names reaches the port");
    assert_eq!(
        b.nic.kernel_frames().len(),
        3,
        "SSH, DNS and ARP stay with the kernel"
    );
    assert_eq!(b.nic.kernel_frames()[0][36..38], 22u16.to_be_bytes());
    let said = test_log::of_this_thread(log::Level::Info);
    assert!(
        said.contains(&format!("fake0: {}", b.port.steering_summary())),
        "start says what isolated mode takes: {said:?}"
    );
    let warned = test_log::of_this_thread(log::Level::Warn);
    assert!(
        !warned.iter().any(|m| m.contains("every unicast frame")),
        "{warned:?}"
    );
    // Promiscuous mode would take the kernel's frames: refused.
    let e = b.port.set_promiscuous(true).unwrap_err().to_string();
    assert!(e.contains("isolated mode"), "{e}");
    b.finish();
}

#[test]
fn the_default_mode_says_what_it_takes_from_the_kernel() {
    test_log::start();
    let b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0,mac=02:00:00:00:00:09",
        1,
        1,
        32,
        1024,
    );
    let s = b.port.steering_summary();
    assert!(
        s.contains("every unicast frame to 02:00:00:00:00:01, 02:00:00:00:00:09")
            && s.contains("from fake0")
            && s.contains("SSH")
            && s.contains("isolated=1"),
        "{s}"
    );
    let warned = test_log::of_this_thread(log::Level::Warn);
    assert!(
        warned.contains(&format!("fake0: {s}")),
        "start warns with it: {warned:?}"
    );
    b.finish();
}

#[test]
fn mbufs_smaller_than_the_frames_that_can_arrive_are_refused() {
    let root = tree();
    let nic = Nic::new(FakeConfig::default());
    let mtu = root.0.join("sys/class/net/fake0/mtu");
    // A jumbo MTU: 9018-byte frames cannot fit a 2 KiB mbuf; a 9146-byte
    // --mbuf-size takes them. An MTU no mbuf can take: lower it.
    std::fs::write(&mtu, "9000\n").unwrap();
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    assert_eq!(port.info().max_rx_pktlen, 9018);
    let p = pool(256);
    let e = port.configure(&conf(&p, 1, 1, 32)).unwrap_err().to_string();
    assert!(
        e.contains("frames of up to 9018 bytes")
            && e.contains("into one mbuf")
            && e.contains("raise --mbuf-size to 9146"),
        "{e}"
    );
    drop(port);
    std::fs::write(&mtu, "65500\n").unwrap();
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    let e = port.configure(&conf(&p, 1, 1, 32)).unwrap_err().to_string();
    assert!(
        e.contains("--mbuf-size goes up to 65535") && e.contains("lower the MTU to 65134"),
        "{e}"
    );
    std::fs::write(&mtu, "9000\n").unwrap();
    // Transmit only: nothing arrives, nothing to refuse.
    port.configure(&conf(&p, 0, 1, 32)).unwrap();
    drop(port);
    // An MTU a bigger mbuf can take: the fix is --mbuf-size.
    std::fs::write(&mtu, "2000\n").unwrap();
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    let e = port.configure(&conf(&p, 1, 1, 32)).unwrap_err().to_string();
    assert!(e.contains("raise --mbuf-size to 2146"), "{e}");
    drop(port);
    // The VF's own MTU is 1500 but its PF's is 9000: the PF's counts.
    std::fs::write(&mtu, "1500\n").unwrap();
    let pf = root.0.join("sys/devices/pci0000:00/0000:03:00.0/physfn");
    std::fs::create_dir_all(pf.join("net/pf0")).unwrap();
    std::fs::write(pf.join("net/pf0/mtu"), "9000\n").unwrap();
    let port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    assert_eq!(port.info().max_rx_pktlen, 9018);
    drop(port);
    assert_eq!(nic.live_objects(), 0);
}

#[test]
fn txd_is_capped_at_what_the_device_can_hold() {
    // libmlx5 sizes a send queue in 64-byte blocks: with 128 bytes of inline
    // data a request takes 3, and the device holds 32768 blocks (rounded to a
    // power of two): 10922 requests, not max_qp_wr's 32768.
    let root = tree();
    let nic = Nic::new(FakeConfig::default());
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    assert_eq!(port.info().max_txd, 10922);
    let p = pool(256);
    let mut c = conf(&p, 0, 1, 32);
    c.nb_txd = 10923;
    let e = port.configure(&c).unwrap_err().to_string();
    assert!(e.contains("--txd") && e.contains("10922"), "{e}");
    c.nb_txd = 10922;
    port.configure(&c).unwrap();
    let q = port.start().expect("the largest ring starts");
    drop(q);
    port.stop().unwrap();
    drop(port);
    // Without inline data a request is one block.
    let port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0,txq_inline_max=0", 0).unwrap();
    assert_eq!(port.info().max_txd, 32768);
    drop(port);
    assert_eq!(nic.live_objects(), 0);
    assert!(nic.clean(), "{}", nic.violations());
}

#[test]
fn promiscuous_mode_sets_iff_promisc_and_clears_what_it_set() {
    let mut b = Bench::new(
        FakeConfig {
            vf_trusted: Some(false),
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
        1,
        1,
        32,
        1024,
    );
    b.port.set_promiscuous(true).unwrap();
    assert_eq!(b.nic.promisc_log(), vec![(7, true)]);
    b.port.set_promiscuous(false).unwrap();
    assert_eq!(b.nic.promisc_log(), vec![(7, true), (7, false)]);
    // Already promiscuous in the kernel: left as it is.
    std::fs::write(b.root.0.join("sys/class/net/fake0/flags"), "0x1103\n").unwrap();
    b.port.set_promiscuous(true).unwrap();
    b.port.set_promiscuous(false).unwrap();
    assert_eq!(b.nic.promisc_log().len(), 2);
    b.finish();
}

#[test]
fn promiscuous_mode_warns_when_the_pf_does_not_trust_the_vf() {
    test_log::start();
    let root = tree();
    // fake0's function is VF 3 of a PF whose interface is pf0 (ifindex 2).
    let dev = root.0.join("sys/devices/pci0000:00/0000:03:00.0");
    let pf = root.0.join("sys/devices/pci0000:00/0000:03:00.1");
    std::fs::create_dir_all(pf.join("net/pf0")).unwrap();
    std::os::unix::fs::symlink(&pf, dev.join("physfn")).unwrap();
    std::os::unix::fs::symlink(&dev, pf.join("virtfn3")).unwrap();
    std::fs::create_dir_all(root.0.join("sys/class/net")).unwrap();
    std::os::unix::fs::symlink(pf.join("net/pf0"), root.0.join("sys/class/net/pf0")).unwrap();
    std::fs::write(pf.join("net/pf0/ifindex"), "2\n").unwrap();
    // None: the PF does not say (no VF list), so trust cannot be checked.
    for trusted in [Some(false), Some(true), None] {
        let nic = Nic::new(FakeConfig {
            vf_trusted: trusted,
            ..FakeConfig::default()
        });
        let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
        assert!(port.netdev.is_vf());
        assert_eq!(port.netdev.pf_and_vf_index(), Some(("pf0".into(), 3)));
        assert_eq!(port.vf_trusted(), trusted);
        let before = test_log::of_this_thread(log::Level::Warn).len();
        port.set_promiscuous(true).unwrap();
        let warned = test_log::of_this_thread(log::Level::Warn)[before..].to_vec();
        let untrusted = warned
            .iter()
            .any(|m| m.contains("fake0 is an untrusted VF") && m.contains("trust on"));
        let unknown = warned
            .iter()
            .any(|m| m.contains("its trust cannot be checked") && m.contains("trust on"));
        assert_eq!(
            (untrusted, unknown),
            (trusted == Some(false), trusted.is_none()),
            "trusted {trusted:?}: {warned:?}"
        );
        assert_eq!(nic.promisc_log(), vec![(7, true)], "IFF_PROMISC set anyway");
        port.set_promiscuous(false).unwrap();
    }
}

#[test]
fn isolated_mode_adds_a_foreign_dst_mac_to_the_fdb() {
    // A VF's vport passes only its own MAC and its FDB entries: a rule for
    // another MAC needs the entry, as mac= does (the interface's own needs
    // none).
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0,isolated=1,flow=dst_mac:02:00:00:00:00:09/udp_dst:4789+dst_mac:02:00:00:00:00:01/eth_type:0x88b5",
        1,
        1,
        32,
        1024,
    );
    assert_eq!(b.nic.fdb_log(), vec![(7, EXTRA_MAC, true)]);
    let vxlan_to_extra = ip4(EXTRA_MAC, 17, 1, 4789);
    let ours_88b5 = frame(OUR_MAC, 0x88b5, 64, 1);
    let vxlan_to_ours = ip4(OUR_MAC, 17, 1, 4789);
    for f in [&vxlan_to_extra, &ours_88b5, &vxlan_to_ours] {
        b.nic.receive(f);
    }
    assert_eq!(
        drain(b.q.rx[0].as_mut()),
        vec![vxlan_to_extra, ours_88b5],
        "each rule takes its own MAC's frames"
    );
    assert_eq!(b.nic.kernel_frames(), vec![vxlan_to_ours]);
    let nic = b.nic.clone();
    b.finish();
    assert_eq!(
        nic.fdb_log(),
        vec![(7, EXTRA_MAC, true), (7, EXTRA_MAC, false)],
        "removed at stop"
    );
}

#[test]
fn device_removal_is_seen_and_reported() {
    test_log::start();
    let mut b = Bench::new(
        FakeConfig::default(),
        "net_mlx5,iface=fake0",
        1,
        1,
        32,
        1024,
    );
    assert!(!b.port.device_gone());
    assert!(b.port.link().up);
    b.nic.async_event(crate::verbs::IBV_EVENT_PORT_ERR);
    // The kernel may send it twice (mlx5_ib and uverbs).
    b.nic.async_event(crate::verbs::IBV_EVENT_DEVICE_FATAL);
    b.nic.async_event(crate::verbs::IBV_EVENT_DEVICE_FATAL);
    let end = Instant::now() + Duration::from_secs(5);
    while (!b.port.device_gone() || b.nic.pending_async_events() > 0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(b.port.device_gone(), "the watcher saw DEVICE_FATAL");
    assert_eq!(b.nic.pending_async_events(), 0, "every event was read");
    let reports: Vec<String> = test_log::containing(log::Level::Error, "IBV_EVENT_DEVICE_FATAL")
        .into_iter()
        .filter(|m| m.starts_with("mlx5_0:"))
        .collect();
    assert_eq!(reports.len(), 1, "reported once: {reports:?}");
    assert!(
        reports[0].starts_with("mlx5_0: the device was removed")
            && reports[0].contains("open it again"),
        "{reports:?}"
    );
    assert_eq!(b.xstat("device_fatal"), 1);
    assert!(!b.port.link().up, "a gone device has no link");
    drop(std::mem::take(&mut b.q));
    b.port.stop().unwrap();
    let e = b.port.start().unwrap_err().to_string();
    assert!(e.contains("is gone"), "{e}");
    b.q = PortQueues::default();
    b.finish();
}

/// Set in the child process of
/// `the_library_is_loaded_with_disassociated_destroy_allowed`.
const CHILD: &str = "NICPOLL_MLX5_TEST_CHILD";

/// A removed device whose kernel closes the event queue: POLLERR from then
/// on, and a read that fails with EIO, or, on kernels without Linux commit
/// 62fab312fa16, with EAGAIN as if no event had come. Either way the port is
/// marked gone, said once, and the watcher stops reading: on the EAGAIN
/// kernels it would otherwise poll and read in a loop, a core at 100 %, and
/// when the DEVICE_FATAL event was lost never learn that the device went.
#[test]
fn a_closed_event_queue_marks_the_port_gone_and_ends_the_watch() {
    use crate::verbs::fake::EventQueueOnRemoval::{self, *};
    test_log::start();
    let cases: [(EventQueueOnRemoval, bool); 5] = [
        (ClosesReadingEagain, true),
        (ClosesReadingEagain, false),
        (Closes, true),
        (Closes, false),
        (StaysOpen, true),
    ];
    for (n, (kernel, fatal_event)) in cases.into_iter().enumerate() {
        let case = format!("{kernel:?}, DEVICE_FATAL queued: {fatal_event}");
        let ibdev = format!("mlx5_{}", 40 + n);
        let cfg = FakeConfig {
            ibdev: ibdev.clone(),
            event_queue_on_removal: kernel,
            ..FakeConfig::default()
        };
        let b = Bench::new(cfg, "net_mlx5,iface=fake0", 1, 1, 32, 1024);
        assert!(!b.port.device_gone(), "{case}");
        b.nic.remove_device(fatal_event);
        let end = Instant::now() + Duration::from_secs(5);
        while !b.port.device_gone() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            b.port.device_gone(),
            "{case}: the port knows the device is gone"
        );
        assert_eq!(b.xstat("device_fatal"), 1, "{case}");
        assert!(!b.port.link().up, "{case}: a gone device has no link");
        // The watcher reads only when poll says there is something: it drains
        // the queue down to one read that finds it empty (or closed), and then
        // a closed queue ends the watch and an open one is polled without
        // reading (the tick is 100 ms). One that spins, or reads at every tick,
        // piles up empty reads. Counted, not timed: a loaded machine may delay
        // the watcher's last legitimate read, never add reads of its own.
        let drained_by = Instant::now() + Duration::from_secs(5);
        while b.nic.empty_async_reads() == 0 && Instant::now() < drained_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            b.nic.empty_async_reads() >= 1,
            "{case}: the watcher never read the queue to its end"
        );
        assert_eq!(
            b.nic.pending_async_events(),
            0,
            "{case}: events left unread"
        );
        std::thread::sleep(Duration::from_millis(500));
        let empty = b.nic.empty_async_reads();
        assert!(
            empty <= 2,
            "{case}: the watcher read on after the device went ({empty} reads found nothing)"
        );
        let prefix = format!("{ibdev}: ");
        let reports: Vec<String> = test_log::containing(log::Level::Error, "")
            .into_iter()
            .filter(|m| m.starts_with(&prefix))
            .collect();
        assert_eq!(reports.len(), 1, "{case}: said once: {reports:?}");
        assert!(reports[0].contains("open it again"), "{case}: {reports:?}");
        b.finish();
    }
}

#[test]
fn the_library_is_loaded_with_disassociated_destroy_allowed() {
    const VAR: &str = "RDMAV_ALLOW_DISASSOC_DESTROY";
    if std::env::var_os(CHILD).is_some() {
        // A fresh process where nothing of ours loaded a library yet: the
        // variable must be set before dlopen (a missing library fails there)
        // and before any function of the library runs (libc loads but is no
        // libibverbs: it fails at the first symbol), since libibverbs reads
        // it in its first ibv_get_device_list (rdma-core libibverbs/init.c
        // ibverbs_init). A value the user set is kept.
        let user = std::env::var(VAR).ok();
        let want = Some(user.clone().unwrap_or_else(|| "1".into()));
        assert!(Verbs::load_from("libnicpoll-no-such-library.so.1").is_err());
        assert_eq!(std::env::var(VAR).ok(), want, "after a failed dlopen");
        assert!(Verbs::load_from("libc.so.6").is_err());
        assert_eq!(std::env::var(VAR).ok(), want, "after a failed lookup");
        return;
    }
    // The environment is the process's: run the check in a child of its own
    // (this test alone, in this test binary).
    let exe = std::env::current_exe().expect("the test binary's path");
    let name = "tests::the_library_is_loaded_with_disassociated_destroy_allowed";
    for user in [None, Some("0")] {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .env_remove(VAR);
        if let Some(v) = user {
            cmd.env(VAR, v);
        }
        let out = cmd.output().expect("run the test binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("1 passed"),
            "user value {user:?}:\n{text}"
        );
    }
}

// ---------------------------------------------------------------------------
// Error variants

fn open_err(cfg: FakeConfig, spec: &str) -> Mlx5Error {
    let root = tree();
    let nic = Nic::new(cfg);
    let e = open_fake(&nic, &root.0, spec, 0).unwrap_err();
    assert_eq!(nic.live_objects(), 0, "a failed open leaves nothing open");
    e
}

#[test]
fn no_device_says_what_exists() {
    for (spec, needle) in [
        ("net_mlx5,iface=eth9", "no network interface eth9"),
        ("net_mlx5,iface=lo", "not a PCI network function"),
        ("net_mlx5,iface=eno1", "driven by i40e"),
        ("net_mlx5,dev=0000:07:00.0", "no PCI function 0000:07:00.0"),
    ] {
        let e = open_err(FakeConfig::default(), spec);
        assert!(matches!(e, Mlx5Error::NoDevice { .. }), "{spec}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(needle), "{spec}: {msg}");
        assert!(
            msg.contains(
                "RDMA devices here: mlx5_0 (PCI 0000:03:00.0, driver mlx5_core, interface fake0)"
            ),
            "{spec}: {msg}"
        );
    }
}

#[test]
fn device_in_sysfs_but_not_in_libibverbs_names_the_provider() {
    let e = open_err(
        FakeConfig {
            ibdev: "mlx5_7".into(),
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
    );
    assert!(matches!(e, Mlx5Error::NoDevice { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("ibverbs-providers") && msg.contains("it lists: mlx5_7"),
        "{msg}"
    );
}

#[test]
fn open_failure_names_the_uverbs_device() {
    let e = open_err(
        FakeConfig {
            open_errno: Some(libc::EACCES),
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
    );
    assert!(matches!(e, Mlx5Error::OpenFailed { .. }), "{e:?}");
    assert!(e.to_string().contains("/dev/infiniband/uverbs"), "{e}");
}

#[test]
fn infiniband_port_is_not_ethernet() {
    let e = open_err(
        FakeConfig {
            link_layer: IBV_LINK_LAYER_INFINIBAND,
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
    );
    assert!(
        matches!(e, Mlx5Error::NotEthernet { link_layer: 1, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("LINK_TYPE_P1=2"), "{e}");
}

#[test]
fn raw_packet_unsupported_and_cap_net_raw_are_told_apart() {
    let e = open_err(
        FakeConfig {
            create_qp_errno: Some(libc::EOPNOTSUPP),
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
    );
    assert!(
        matches!(
            e,
            Mlx5Error::RawPacketUnsupported {
                op: "ibv_create_qp(RAW_PACKET)",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("ConnectX-4 or newer"), "{e}");
    // An old kernel or rdma-core gives EOPNOTSUPP too (DPDK's mlx5 guide:
    // Linux 4.14, rdma-core 16; thread domains: rdma-core 20).
    assert!(
        e.to_string().contains("a kernel or rdma-core too old")
            && e.to_string().contains("Linux 4.14")
            && e.to_string().contains("rdma-core 20"),
        "{e}"
    );
    let e = open_err(
        FakeConfig {
            create_qp_errno: Some(libc::EPERM),
            ..FakeConfig::default()
        },
        "net_mlx5,iface=fake0",
    );
    assert!(matches!(e, Mlx5Error::NeedCapNetRaw { .. }), "{e:?}");
    assert!(e.to_string().contains("CAP_NET_RAW"), "{e}");
}

#[test]
fn flow_rules_refused_at_start_name_cap_net_raw_and_leave_nothing() {
    let root = tree();
    let nic = Nic::new(FakeConfig {
        create_flow_errno: Some(libc::EPERM),
        ..FakeConfig::default()
    });
    let p = pool(1024);
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    port.configure(&conf(&p, 2, 1, 32)).unwrap();
    let e = port.start().unwrap_err().to_string();
    assert!(
        e.contains("ibv_create_flow") && e.contains("CAP_NET_RAW"),
        "{e}"
    );
    assert_eq!(nic.live_objects(), 3, "only context, PD and MR remain");
    assert_eq!(p.in_use(), 0);
    drop(port);
    assert!(nic.clean(), "{}", nic.violations());
}

#[test]
fn an_old_provider_without_extension_ops_is_unsupported() {
    let root = tree();
    let nic = Nic::new(FakeConfig {
        extended: false,
        ..FakeConfig::default()
    });
    // The CQs (extended poll API) and work queues need the verbs_context
    // extension ops: said at open, by the first one missing.
    let e = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap_err();
    assert!(
        matches!(
            e,
            Mlx5Error::RawPacketUnsupported {
                op: "ibv_create_cq_ex",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("rdma-core"), "{e}");
    assert_eq!(nic.live_objects(), 0);
}

#[test]
fn memory_registration_failure_names_memlock() {
    let root = tree();
    let nic = Nic::new(FakeConfig {
        reg_mr_errno: Some(libc::ENOMEM),
        ..FakeConfig::default()
    });
    let p = pool(64);
    let mut port = open_fake(&nic, &root.0, "net_mlx5,iface=fake0", 0).unwrap();
    let e = port.configure(&conf(&p, 1, 1, 32)).unwrap_err();
    assert!(
        matches!(
            e,
            nicpoll::Error::Port {
                op: "configure",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}");
}

#[test]
fn devargs_errors_come_before_anything_is_loaded() {
    let e = Mlx5Port::from_devargs(&DevArgs::parse("net_mlx5,iface=x,rx_vec_en=1").unwrap(), 0)
        .unwrap_err();
    assert!(matches!(e, Mlx5Error::DevArgs { .. }), "{e:?}");
    let core: nicpoll::Error = e.into();
    assert!(matches!(core, nicpoll::Error::DevArgs { .. }));
}

#[test]
fn on_this_machine_without_rdma_the_error_says_which() {
    // The real libibverbs and the real sysfs (a missing library has its own test).
    if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Library("libibverbs.so.1")]) {
        return;
    }
    let spec = "net_mlx5,iface=lo";
    match Mlx5Port::from_devargs(&DevArgs::parse(spec).unwrap(), 0) {
        Err(e @ Mlx5Error::NoDevice { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("iface=lo") && msg.contains("RDMA devices here"),
                "{msg}"
            );
            eprintln!("{msg}");
        }
        other => panic!("{spec}: expected NoDevice, got {other:?}"),
    }
    let spec = "0000:ff:1f.7";
    match Mlx5Port::from_devargs(&DevArgs::parse(spec).unwrap(), 0) {
        Err(Mlx5Error::NoDevice { .. }) => {}
        other => panic!("{spec}: expected NoDevice, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Hardware

/// See the crate documentation for how to run it.
#[test]
#[ignore = "needs ConnectX hardware: NICPOLL_MLX5_IFACE (and NICPOLL_MLX5_PEER)"]
fn hw_steers_our_mac_and_leaves_the_rest_to_the_kernel() {
    let Ok(iface) = std::env::var("NICPOLL_MLX5_IFACE") else {
        return nicpoll_testkit::skip(
            "NICPOLL_MLX5_IFACE, a ConnectX interface (see the crate docs)",
        );
    };
    let peer = std::env::var("NICPOLL_MLX5_PEER").ok();
    let mem = DmaMemory::plain();
    let pool = Mempool::new(&mem, &MempoolConfig::new("mlx5-hw", 8192)).unwrap();
    let mut a = Mlx5Port::open(&Mlx5Options::new(Selector::Iface(iface.clone())), 0)
        .unwrap_or_else(|e| panic!("{iface}: {e}"));
    a.configure(&conf(&pool, 1, 1, 1024)).unwrap();
    let mut qa = a.start().unwrap_or_else(|e| panic!("{iface}: {e}"));
    eprintln!("{iface}: {:?} link {}", a, a.link());
    let kernel = Netdev::new(Path::new("/"), &iface);
    let kernel_rx = || {
        kernel
            .statistics()
            .into_iter()
            .find(|(n, _)| n == "netdev_rx_packets")
            .map(|(_, v)| v)
            .unwrap_or(0)
    };
    let mut batch = MbufBatch::with_burst(64);
    let Some(peer) = peer else {
        let end = Instant::now() + Duration::from_secs(2);
        let mut n = 0;
        while Instant::now() < end {
            n += qa.rx[0].rx_burst(&mut batch);
            batch.clear();
        }
        eprintln!("received {n} frames in 2 s; stats {:?}", a.stats());
        return nicpoll_testkit::skip(
            "NICPOLL_MLX5_PEER, the interface wired to NICPOLL_MLX5_IFACE: only the receive half ran",
        );
    };
    let mut b = Mlx5Port::open(&Mlx5Options::new(Selector::Iface(peer.clone())), 1)
        .unwrap_or_else(|e| panic!("{peer}: {e}"));
    b.configure(&conf(&pool, 0, 1, 1024)).unwrap();
    let mut qb = b.start().unwrap();
    const N: usize = 1000;
    let marker = *b"nicpoll-mlx5-hw!";
    let mk = |dst: [u8; 6], i: usize| {
        let mut f = frame(dst, 0x88b5, 128, 0);
        f[6..12].copy_from_slice(&b.mac_addr().0);
        f[14..30].copy_from_slice(&marker);
        f[30..34].copy_from_slice(&(i as u32).to_be_bytes());
        f
    };
    let before = kernel_rx();
    let mut frames: Vec<Vec<u8>> = (0..N).map(|i| mk(a.mac_addr().0, i)).collect();
    frames.extend((0..N).map(|i| mk([0xff; 6], i)));
    let (mut ours, mut broadcast_here) = (0usize, 0usize);
    let mut tx = MbufBatch::with_burst(64);
    let mut next = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end && (next < frames.len() || !tx.is_empty() || ours < N) {
        while next < frames.len() && tx.spare() > 0 {
            let mut m = pool.alloc().expect("pool");
            m.set_len(frames[next].len());
            m.data_mut().copy_from_slice(&frames[next]);
            let _ = tx.push(m);
            next += 1;
        }
        qb.tx[0].tx_burst(&mut tx);
        qa.rx[0].rx_burst(&mut batch);
        while let Some(m) = batch.pop_front() {
            let d = m.data();
            if d.len() >= 30 && d[14..30] == marker {
                if d[0..6] == [0xff; 6] {
                    broadcast_here += 1;
                } else {
                    ours += 1;
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let kernel_got = kernel_rx().saturating_sub(before);
    eprintln!(
        "sent {} + {} broadcast; port received {ours} (+{broadcast_here} broadcast); kernel rx_packets +{kernel_got}; a {:?}; b {:?}",
        N,
        N,
        a.stats(),
        b.stats()
    );
    assert!(
        ours >= N * 99 / 100,
        "frames to our MAC must reach the port: {ours}/{N}"
    );
    assert_eq!(
        broadcast_here, 0,
        "broadcasts must not be steered to the port"
    );
    assert!(
        kernel_got as usize >= N * 99 / 100,
        "broadcasts must still reach the kernel interface: +{kernel_got}"
    );
    drop(qa);
    drop(qb);
    a.stop().unwrap();
    b.stop().unwrap();
}

/// Isolated mode on hardware: the kernel keeps its own traffic (its ping
/// still works) while the port takes the frames its rule names, a jumbo one
/// included. See the crate documentation for how to run it.
#[test]
#[ignore = "needs ConnectX hardware: NICPOLL_MLX5_IFACE, NICPOLL_MLX5_PEER, NICPOLL_MLX5_PING"]
fn hw_isolated_mode_leaves_the_kernel_its_ping_and_takes_a_jumbo_frame() {
    let (Ok(iface), Ok(peer), Ok(ping_to)) = (
        std::env::var("NICPOLL_MLX5_IFACE"),
        std::env::var("NICPOLL_MLX5_PEER"),
        std::env::var("NICPOLL_MLX5_PING"),
    ) else {
        return nicpoll_testkit::skip(
            "ConnectX interfaces: NICPOLL_MLX5_IFACE, NICPOLL_MLX5_PEER and NICPOLL_MLX5_PING \
             (an IPv4 address the kernel reaches through NICPOLL_MLX5_IFACE)",
        );
    };
    if nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Command("ping")]) {
        return;
    }
    let mem = DmaMemory::plain();
    // 16 KiB elements: room for a frame at any ConnectX MTU (up to 9978).
    let mut cfg = MempoolConfig::new("mlx5-hw-jumbo", 8192);
    cfg.buf_size = 16384 - 256;
    let pool = Mempool::new(&mem, &cfg).unwrap();
    let spec = format!("net_mlx5,iface={iface},isolated=1,flow=eth_type:0x88b5");
    let mut a = Mlx5Port::from_devargs(&DevArgs::parse(&spec).unwrap(), 0)
        .unwrap_or_else(|e| panic!("{spec}: {e}"));
    let jumbo = a.info().max_rx_pktlen as usize;
    if let Err(e) = a.configure(&conf(&pool, 1, 1, 1024)) {
        // Frames this long cannot fit one mbuf: the refusal must say so.
        let e = e.to_string();
        assert!(e.contains("--mbuf-size") || e.contains("MTU"), "{e}");
        eprintln!(
            "{iface}: frames up to {jumbo} bytes cannot fit one mbuf; refused as expected: {e}"
        );
        return;
    }
    let mut qa = a.start().unwrap_or_else(|e| panic!("{iface}: {e}"));
    eprintln!("{iface}: {}", a.steering_summary());
    // The kernel's own traffic keeps flowing while the port runs.
    let ping = std::process::Command::new("ping")
        .args(["-c", "3", "-W", "2", "-I", &iface, &ping_to])
        .output()
        .expect("run ping");
    assert!(
        ping.status.success(),
        "the kernel's ping through {iface} must work in isolated mode:\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let mut b = Mlx5Port::open(&Mlx5Options::new(Selector::Iface(peer.clone())), 1)
        .unwrap_or_else(|e| panic!("{peer}: {e}"));
    b.configure(&conf(&pool, 0, 1, 1024)).unwrap();
    let mut qb = b.start().unwrap();
    let lens: Vec<usize> = std::iter::repeat_n(128, 100).chain([jumbo]).collect();
    let mut tx = MbufBatch::with_burst(64);
    for len in &lens {
        let mut m = pool.alloc().expect("pool");
        assert!(m.set_len(*len), "a {len}-byte frame fits a 16 KiB mbuf");
        let mut f = frame(a.mac_addr().0, 0x88b5, *len, 0x5a);
        f[6..12].copy_from_slice(&b.mac_addr().0);
        m.data_mut().copy_from_slice(&f);
        let _ = tx.push(m);
        if tx.spare() == 0 {
            while !tx.is_empty() {
                qb.tx[0].tx_burst(&mut tx);
            }
        }
    }
    let end = Instant::now() + Duration::from_secs(5);
    while !tx.is_empty() && Instant::now() < end {
        qb.tx[0].tx_burst(&mut tx);
    }
    let mut got = Vec::new();
    let mut rx = MbufBatch::with_burst(64);
    let end = Instant::now() + Duration::from_secs(5);
    while got.len() < lens.len() && Instant::now() < end {
        qa.rx[0].rx_burst(&mut rx);
        while let Some(m) = rx.pop_front() {
            got.push(m.len());
        }
    }
    let too_long = a
        .xstats()
        .into_iter()
        .find(|(n, _)| n == "rx_q0_too_long")
        .map(|(_, v)| v);
    eprintln!(
        "received {} of {} frames; too_long {too_long:?}; {:?}",
        got.len(),
        lens.len(),
        a.stats()
    );
    assert!(got.contains(&jumbo), "the {jumbo}-byte frame arrives whole");
    assert!(got.len() >= lens.len() * 99 / 100);
    assert_eq!(too_long, Some(0));
    drop(qa);
    drop(qb);
    a.stop().unwrap();
    b.stop().unwrap();
}
