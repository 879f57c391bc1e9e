//! Tests on veth pairs the tests create (and delete). Without CAP_NET_RAW /
//! CAP_NET_ADMIN or without ip(8)/tc(8) they skip through `nicpoll_testkit`
//! (a failure under CI).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use nicpoll::memory::DmaMemory;
use nicpoll::mempool::MempoolConfig;
use nicpoll::netdev::RawSocket;
use nicpoll::port::testing::{self, Delivery, VethPair, udp_frame, without_capability};

use nicpoll_testkit::{Cap, Need, skip_if_missing};

use super::*;

/// What the veth tests need: CAP_NET_ADMIN and ip(8) for the pair, AF_PACKET
/// sockets (checked by socket(2) itself, not by our code).
const VETH_NEEDS: [Need; 3] = [
    Need::Capability(Cap::NetAdmin),
    Need::Command("ip"),
    Need::RawSockets,
];

/// A veth pair tagged `tag`, or `None` after a skip where none can be made.
fn veth(tag: &str) -> Option<VethPair> {
    if skip_if_missing(&VETH_NEEDS) {
        return None;
    }
    Some(VethPair::create(tag))
}

fn ip(args: &[&str]) {
    let o = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip(8) runs");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn sys_flags(iface: &str) -> u32 {
    let s = std::fs::read_to_string(format!("/sys/class/net/{iface}/flags")).unwrap();
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap()
}

fn sys_mtu(iface: &str) -> u32 {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const IFF_PROMISC: u32 = 0x100;

fn pool(name: &str, count: u32) -> Mempool {
    let mut c = MempoolConfig::new(name, count);
    c.cache_size = 0;
    Mempool::new(&DmaMemory::plain(), &c).unwrap()
}

fn conf(pool: &Mempool, port_id: u16, nq: u16) -> PortConf {
    PortConf {
        port_id,
        nb_rxq: nq,
        nb_txq: nq,
        nb_rxd: 0,
        nb_txd: 0,
        max_rx_pktlen: 0,
        mempool: pool.clone(),
    }
}

fn port(spec: &str, id: u16) -> AfPacketPort {
    AfPacketPort::from_devargs(&DevArgs::parse(spec).unwrap(), id)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
}

/// Receive from `q` until `want` packets arrived or `timeout` passed.
fn receive(q: &mut dyn RxQueue, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut b = MbufBatch::with_burst(32);
    let deadline = Instant::now() + timeout;
    while got.len() < want && Instant::now() < deadline {
        if q.rx_burst(&mut b) == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        while let Some(m) = b.pop_front() {
            got.push(testing::packet_bytes(&m));
        }
    }
    got
}

fn batch_of(pool: &Mempool, frames: &[Vec<u8>]) -> MbufBatch {
    let mut b = MbufBatch::with_burst(32);
    for f in frames {
        let mut m = pool.alloc().unwrap();
        assert!(m.set_len(f.len()));
        m.data_mut().copy_from_slice(f);
        b.push(m).unwrap();
    }
    b
}

#[test]
fn devargs_are_checked() {
    let o = AfPacketOptions::from_devargs(&DevArgs::parse("net_af_packet0,iface=eth0").unwrap())
        .unwrap();
    assert_eq!(o, AfPacketOptions::new("eth0"));
    assert_eq!(
        (o.qpairs, o.framesz, o.framecnt, o.qdisc_bypass, o.promisc),
        (1, 0, 512, true, false),
        "frame and block sizes come from the MTU"
    );
    assert_eq!(o.blocksz, 0);
    // DPDK's sizes at MTU 1500; a jumbo MTU gets a jumbo frame and block.
    let page = sys::page_size() as u32;
    let r = o.resolve(1500);
    assert_eq!((r.framesz, r.blocksz), (2048, page));
    assert_eq!(r.check(), Ok(()));
    let r = o.resolve(9000);
    assert_eq!((r.framesz, r.blocksz), (9072, 12288));
    assert!(r.framesz as usize - sys::TPACKET3_HDR >= 9018);
    assert!(r.blocksz - RX_OVERHEAD >= 9018);
    assert_eq!(r.check(), Ok(()));
    let given = AfPacketOptions {
        framesz: 4096,
        ..o.clone()
    }
    .resolve(9000);
    assert_eq!(
        (given.framesz, given.blocksz),
        (4096, 12288),
        "a given size stays"
    );
    let o = AfPacketOptions::from_devargs(
        &DevArgs::parse(
            "net_af_packet0,iface=eth0,qpairs=4,blocksz=65536,framesz=2048,framecnt=4096,\
             qdisc_bypass=0,fanout_mode=lb,promisc=1",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            o.qpairs,
            o.blocksz,
            o.framecnt,
            o.qdisc_bypass,
            o.fanout_mode,
            o.promisc
        ),
        (4, 65536, 4096, false, FanoutMode::Lb, true)
    );
    for (spec, needle) in [
        ("net_af_packet0", "iface= is required"),
        ("net_af_packet0,iface=", "iface= is required"),
        (
            "net_af_packet0,iface=eth0,ifname=x",
            "unknown key \"ifname\"",
        ),
        ("net_af_packet0,iface=a/b", "cannot be an interface name"),
        (
            "net_af_packet0,iface=averyveryverylongname",
            "cannot be an interface name",
        ),
        ("net_af_packet0,iface=eth0,qpairs=0", "qpairs=\"0\""),
        (
            "net_af_packet0,iface=eth0,framesz=2056",
            "not a multiple of 16",
        ),
        (
            "net_af_packet0,iface=eth0,framesz=64",
            "below the 80-byte minimum",
        ),
        (
            "net_af_packet0,iface=eth0,framesz=8192,blocksz=4096",
            "framesz=8192 is larger than blocksz=4096",
        ),
        ("net_af_packet0,iface=eth0,blocksz=5000", "page size"),
        (
            "net_af_packet0,iface=eth0,framesz=2048,blocksz=4096,framecnt=5",
            "framecnt=5 is not a multiple of the 2 frames per block",
        ),
        (
            "net_af_packet0,iface=eth0,framecnt=40000",
            "framecnt=\"40000\"",
        ),
        (
            "net_af_packet0,iface=eth0,blocksz=4194304,framesz=4194304,framecnt=512",
            "larger than",
        ),
        ("net_af_packet0,iface=eth0,qdisc_bypass=2", "not a boolean"),
        (
            "net_af_packet0,iface=eth0,fanout_mode=best",
            "fanout_mode=\"best\" is not one of hash, lb",
        ),
    ] {
        let e = AfPacketOptions::from_devargs(&DevArgs::parse(spec).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{spec}: {e}");
    }
    assert!(
        AfPacketPort::from_devargs(&DevArgs::parse("net_tap0,iface=eth0").unwrap(), 0).is_err()
    );
}

#[test]
fn missing_interface_is_named() {
    if skip_if_missing(&[Need::RawSockets]) {
        return;
    }
    let e = AfPacketPort::from_devargs(
        &DevArgs::parse("net_af_packet0,iface=npafpnothere").unwrap(),
        3,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("npafpnothere") && e.contains("does not exist") && e.contains("ip link show"),
        "{e}"
    );
}

#[test]
fn without_cap_net_raw_the_error_says_so() {
    // CAP_NET_RAW is 13.
    let e = without_capability(13, || {
        AfPacketPort::from_devargs(&DevArgs::parse("net_af_packet0,iface=lo").unwrap(), 0)
            .unwrap_err()
            .to_string()
    });
    assert!(
        e.contains("CAP_NET_RAW") && e.contains("securityContext") && e.contains("interface lo"),
        "{e}"
    );
}

#[test]
fn passes_the_port_conformance_suite_with_one_queue_pair() {
    if skip_if_missing(&[Need::Command("tc")]) {
        return;
    }
    let Some(v) = veth("npafp1") else {
        return;
    };
    v.loop_back_far_end();
    let spec = format!("net_af_packet0,iface={}", v.a);
    testing::run_conformance(
        "net_af_packet",
        &mut |id| {
            Ok(Box::new(AfPacketPort::from_devargs(&DevArgs::parse(&spec)?, id)?) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
}

#[test]
fn passes_the_port_conformance_suite_with_two_queue_pairs() {
    if skip_if_missing(&[Need::Command("tc")]) {
        return;
    }
    let Some(v) = veth("npafp2") else {
        return;
    };
    v.loop_back_far_end();
    let spec = format!("net_af_packet0,iface={},qpairs=2", v.a);
    testing::run_conformance(
        "net_af_packet qpairs=2",
        &mut |id| {
            Ok(Box::new(AfPacketPort::from_devargs(&DevArgs::parse(&spec)?, id)?) as Box<dyn Port>)
        },
        Delivery::Loopback,
    );
}

#[test]
fn fanout_spreads_flows_over_both_queues() {
    let Some(v) = veth("npafp3") else {
        return;
    };
    spread(&v, FanoutMode::Hash);
    spread(&v, FanoutMode::Lb);
}

/// Send many flows from the far end to a two-queue port; check that both
/// queues get traffic, every frame arrives intact, and (hash) flows stay put.
fn spread(v: &VethPair, mode: FanoutMode) {
    let pool = pool("afp-fanout", 2048);
    let mut p = port(
        &format!(
            "net_af_packet0,iface={},qpairs=2,fanout_mode={}",
            v.a,
            mode.name()
        ),
        4,
    );
    p.configure(&conf(&pool, 4, 2)).unwrap();
    let mut q = p.start().unwrap();
    let far = RawSocket::open(&v.b).unwrap();
    const FLOWS: u16 = 64;
    const PER_FLOW: usize = 4;
    for _ in 0..PER_FLOW {
        for f in 0..FLOWS {
            far.send(&udp_frame(1000 + f, 80)).unwrap();
        }
    }
    let total = FLOWS as usize * PER_FLOW;
    let mut per_queue = [0usize; 2];
    let mut flow_queue: HashMap<u16, usize> = HashMap::new();
    let mut b = MbufBatch::with_burst(32);
    let deadline = Instant::now() + Duration::from_secs(5);
    while per_queue.iter().sum::<usize>() < total && Instant::now() < deadline {
        for (i, rq) in q.rx.iter_mut().enumerate() {
            rq.rx_burst(&mut b);
            while let Some(m) = b.pop_front() {
                assert_eq!(m.queue() as usize, i);
                assert_eq!(m.port(), 4);
                let sport = u16::from_be_bytes([m.data()[34], m.data()[35]]);
                assert_eq!(m.data(), &udp_frame(sport, 80)[..]);
                if mode == FanoutMode::Hash {
                    assert!(m.ol_flags() & flags::RX_RSS_HASH != 0 && m.rss_hash() != 0);
                    let prev = flow_queue.insert(sport, i);
                    assert!(
                        prev.is_none() || prev == Some(i),
                        "flow {sport} on both queues"
                    );
                }
                per_queue[i] += 1;
            }
        }
    }
    assert_eq!(
        per_queue.iter().sum::<usize>(),
        total,
        "{mode:?}: {per_queue:?}"
    );
    assert!(
        per_queue[0] > 0 && per_queue[1] > 0,
        "fanout {mode:?} left a queue empty: {per_queue:?}"
    );
    if mode == FanoutMode::Hash {
        assert_eq!(flow_queue.len(), FLOWS as usize);
    }
    let s = p.stats();
    assert_eq!((s.ipackets, s.imissed, s.ierrors), (total as u64, 0, 0));
    let x = p.xstats();
    assert!(
        x.contains(&("rx_q0_packets".to_string(), per_queue[0] as u64)),
        "{x:?}"
    );
    assert!(
        x.contains(&("rx_q1_packets".to_string(), per_queue[1] as u64)),
        "{x:?}"
    );
    drop(q);
    p.stop().unwrap();
    drop(p);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn frames_arrive_intact_both_ways() {
    let Some(v) = veth("npafp4") else {
        return;
    };
    let pool = pool("afp-intact", 1024);
    let mut p = port(&format!("net_af_packet0,iface={}", v.a), 0);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let far = RawSocket::open(&v.b).unwrap();

    // Far end to port, including a VLAN-tagged frame (the kernel strips the
    // tag before AF_PACKET sees it; the port must put it back).
    let mut vlan = testing::test_frame(77, 100);
    vlan[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    vlan[14..16].copy_from_slice(&0x2123u16.to_be_bytes());
    vlan[16..18].copy_from_slice(&0x88b5u16.to_be_bytes());
    let mut qinq = testing::test_frame(78, 120);
    qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    qinq[14..16].copy_from_slice(&0x0007u16.to_be_bytes());
    qinq[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
    qinq[18..20].copy_from_slice(&0x0009u16.to_be_bytes());
    let sent: Vec<Vec<u8>> = vec![
        testing::test_frame(1, 60),
        testing::test_frame(2, 64),
        udp_frame(7, 333),
        vlan,
        testing::test_frame(3, 1514),
        qinq,
        testing::test_frame(4, 1000),
    ];
    for f in &sent {
        far.send(f).unwrap();
    }
    let got = receive(q.rx[0].as_mut(), sent.len(), Duration::from_secs(5));
    assert_eq!(got.len(), sent.len());
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "frame {i} differs");
    }
    let st = p.stats();
    assert_eq!(st.ipackets, sent.len() as u64);
    assert_eq!(st.ibytes, sent.iter().map(|f| f.len() as u64).sum::<u64>());

    // Port to far end.
    let out: Vec<Vec<u8>> = (0..40)
        .map(|i| udp_frame(i, 60 + i as usize * 37))
        .collect();
    let mut b = batch_of(&pool, &out[..32]);
    assert_eq!(q.tx[0].tx_burst(&mut b), 32);
    let mut b = batch_of(&pool, &out[32..]);
    assert_eq!(q.tx[0].tx_burst(&mut b), 8);
    let mut buf = vec![0u8; 4096];
    for (i, f) in out.iter().enumerate() {
        let n = far
            .recv(&mut buf, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("frame {i} did not arrive"));
        assert_eq!(&buf[..n], &f[..], "frame {i} differs");
    }
    let st = p.stats();
    assert_eq!(st.opackets, 40);
    assert_eq!(st.obytes, out.iter().map(|f| f.len() as u64).sum::<u64>());
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

/// Frames longer than an mbuf arrive whole as chains; frames the kernel cut
/// to fit a block, or over --max-pkt-len, are counted, never delivered cut.
#[test]
fn oversize_frames_are_counted_not_truncated() {
    let Some(v) = veth("npafp5") else {
        return;
    };
    // Room for 4034 + 14 bytes in a 4096-byte transmit frame; a receive block
    // of 4096 holds frames of up to 4096 - 130 bytes whole.
    ip(&["link", "set", &v.a, "mtu", "4034"]);
    ip(&["link", "set", &v.b, "mtu", "4034"]);
    let pool = pool("afp-oversize", 256);
    let room = pool.data_room();
    assert!(room + 100 < 3966, "the test needs a 2 KiB pool");
    let mut p = port(
        &format!(
            "net_af_packet0,iface={},blocksz=4096,framesz=4096,framecnt=64",
            v.a
        ),
        0,
    );
    assert_eq!(p.info().max_rx_pktlen, 3966);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let far = RawSocket::open(&v.b).unwrap();
    let ok1 = testing::test_frame(1, 1500);
    let ok2 = testing::test_frame(4, 200);
    let chain = testing::test_frame(2, room + 50); // longer than the mbuf's data room
    far.send(&ok1).unwrap();
    far.send(&chain).unwrap();
    far.send(&testing::test_frame(3, 4000)).unwrap(); // truncated by the kernel to fit the block
    far.send(&ok2).unwrap();
    let mut b = MbufBatch::with_burst(32);
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.len() < 3 && Instant::now() < deadline {
        q.rx[0].rx_burst(&mut b);
    }
    let segs: Vec<usize> = b.iter().map(|m| m.nb_segs()).collect();
    let got: Vec<Vec<u8>> = b.iter().map(testing::packet_bytes).collect();
    assert_eq!(got, vec![ok1.clone(), chain.clone(), ok2.clone()]);
    assert_eq!(segs, vec![1, 2, 1]);
    b.clear();
    let st = p.stats();
    assert_eq!((st.ipackets, st.ierrors), (3, 1), "{st:?}");
    assert_eq!(st.ibytes, (ok1.len() + chain.len() + ok2.len()) as u64);
    drop(q);
    p.stop().unwrap();
    // --max-pkt-len 1504: a 1500-byte frame passes, 1501 bytes are counted.
    let mut c = conf(&pool, 0, 1);
    c.max_rx_pktlen = 1500;
    p.configure(&c).unwrap();
    let mut q = p.start().unwrap();
    p.reset_stats();
    far.send(&testing::test_frame(5, 1501)).unwrap();
    far.send(&ok1).unwrap();
    let got = receive(q.rx[0].as_mut(), 1, Duration::from_secs(5));
    assert_eq!(got, vec![ok1]);
    assert_eq!(p.stats().ierrors, 1);
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn promiscuous_mode_is_toggled_and_restored() {
    let Some(v) = veth("npafp6") else {
        return;
    };
    let pool = pool("afp-promisc", 256);
    let a = v.a.clone();
    assert_eq!(sys_flags(&a) & IFF_PROMISC, 0);
    let mut p = port(&format!("net_af_packet0,iface={a}"), 0);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    p.set_promiscuous(true).unwrap();
    assert!(p.promiscuous());
    assert_eq!(
        sys_flags(&a) & IFF_PROMISC,
        0,
        "stopped port: interface untouched"
    );
    let q = p.start().unwrap();
    assert_ne!(sys_flags(&a) & IFF_PROMISC, 0, "started: promiscuous");
    p.set_promiscuous(false).unwrap();
    assert!(!p.promiscuous());
    assert_eq!(sys_flags(&a) & IFF_PROMISC, 0);
    p.set_promiscuous(true).unwrap();
    assert_ne!(sys_flags(&a) & IFF_PROMISC, 0);
    assert!(p.stop().is_err(), "stop with live queues must be refused");
    drop(q);
    p.stop().unwrap();
    assert_eq!(sys_flags(&a) & IFF_PROMISC, 0, "stop restores");
    let q = p.start().unwrap();
    assert_ne!(sys_flags(&a) & IFF_PROMISC, 0);
    drop(q);
    drop(p);
    assert_eq!(sys_flags(&a) & IFF_PROMISC, 0, "drop restores");

    // promisc=1 on an interface that was already promiscuous leaves it so.
    ip(&["link", "set", &a, "promisc", "on"]);
    let mut p = port(&format!("net_af_packet0,iface={a},promisc=1"), 0);
    assert!(p.promiscuous());
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let q = p.start().unwrap();
    drop(q);
    p.stop().unwrap();
    drop(p);
    assert_ne!(
        sys_flags(&a) & IFF_PROMISC,
        0,
        "was promiscuous before: still is"
    );
    ip(&["link", "set", &a, "promisc", "off"]);
    assert_eq!(sys_flags(&a) & IFF_PROMISC, 0);
}

#[test]
fn dropping_a_port_ends_its_promiscuity_while_another_process_shares_its_socket() {
    // A process that forks (std::process::Command, from any thread: the test
    // harness's others, ip(8) in veth()) gives its child a copy of every
    // descriptor until the child's exec closes them; closing ours then does
    // not release the socket, nor the membership the kernel would drop with it.
    let Some(v) = veth("npafp11") else {
        return;
    };
    let pool = pool("afp-promisc-shared", 256);
    let a = v.a.clone();
    let mut p = port(&format!("net_af_packet0,iface={a},promisc=1"), 0);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let q = p.start().unwrap();
    assert_ne!(sys_flags(&a) & IFF_PROMISC, 0, "started: promiscuous");
    let child_copy = p.ctl.duplicate().unwrap();
    drop(q);
    drop(p);
    assert_eq!(
        sys_flags(&a) & IFF_PROMISC,
        0,
        "drop restores, whoever else holds the socket"
    );
    drop(child_copy);
}

#[test]
fn ring_overflow_shows_as_imissed() {
    let Some(v) = veth("npafp7") else {
        return;
    };
    let pool = pool("afp-imissed", 1024);
    // Two 4 KiB blocks: about 50 small frames fit.
    let mut p = port(&format!("net_af_packet0,iface={},framecnt=4", v.a), 0);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let far = RawSocket::open(&v.b).unwrap();
    const N: usize = 500;
    for i in 0..N {
        far.send(&testing::test_frame(i as u32, 64)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let missed = p.stats().imissed;
    assert!(missed > 0, "no drops counted after overflowing the ring");
    let got = receive(q.rx[0].as_mut(), N, Duration::from_millis(500));
    let st = p.stats();
    assert_eq!(st.ipackets as usize, got.len());
    assert_eq!(
        st.ipackets + st.imissed,
        N as u64,
        "received + missed must account for every frame: {st:?}"
    );
    assert_eq!(
        p.xstats()
            .iter()
            .find(|(k, _)| k == "rx_missed_errors")
            .unwrap()
            .1,
        st.imissed
    );
    p.reset_stats();
    assert_eq!(p.stats(), PortStats::default());
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn down_interface_and_bad_mtu_are_refused_untouched() {
    let Some(v) = veth("npafp8") else {
        return;
    };
    let pool = pool("afp-down", 64);
    let a = v.a.clone();
    ip(&["link", "set", &a, "down"]);
    let before = sys_flags(&a);
    let mut p = port(&format!("net_af_packet0,iface={a},promisc=1"), 2);
    p.configure(&conf(&pool, 2, 1)).unwrap();
    let e = p.start().unwrap_err().to_string();
    assert!(
        e.contains(&format!("interface {a} is down")) && e.contains(&format!("ip link set {a} up")),
        "{e}"
    );
    assert!(!p.is_started());
    assert!(!p.link().up);
    assert_eq!(
        sys_flags(&a),
        before,
        "the interface must be left as it was"
    );

    ip(&["link", "set", &a, "up"]);
    ip(&["link", "set", &a, "mtu", "3000"]);
    let before = sys_flags(&a);
    let e = p.start().unwrap_err().to_string();
    assert!(
        e.contains("MTU 3000")
            && e.contains("framesz=2048")
            && e.contains("derive them from the MTU"),
        "{e}"
    );
    assert_eq!(sys_flags(&a), before);
    assert_eq!(sys_mtu(&a), 3000);
    ip(&["link", "set", &a, "mtu", "1500"]);
    let q = p.start().unwrap();
    assert!(p.link().up);
    drop(q);
    p.stop().unwrap();
    drop(p);
    assert_eq!(sys_flags(&a) & IFF_PROMISC, 0);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn tx_takes_what_fits_and_counts_bad_frames() {
    let Some(v) = veth("npafp9") else {
        return;
    };
    let pool = pool("afp-tx", 256);
    // A transmit ring of two frames.
    let mut p = port(&format!("net_af_packet0,iface={},framecnt=2", v.a), 0);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let far = RawSocket::open(&v.b).unwrap();
    let good: Vec<Vec<u8>> = (0..3).map(|i| testing::test_frame(i, 100)).collect();
    let mut b = batch_of(
        &pool,
        &[
            vec![0u8; 10], // runt
            good[0].clone(),
            good[1].clone(),
            good[2].clone(),
            testing::test_frame(9, 1600), // longer than MTU + 14 + 4
        ],
    );
    // Two slots: the runt is dropped, two frames fill the ring, the rest stays.
    assert_eq!(q.tx[0].tx_burst(&mut b), 3);
    assert_eq!(b.len(), 2);
    assert_eq!(b.as_slice()[0].data(), &good[2][..]);
    // The kick sent them (veth frees them at once): room again.
    assert_eq!(q.tx[0].tx_burst(&mut b), 2);
    assert!(b.is_empty());
    let mut buf = vec![0u8; 2048];
    for (i, f) in good.iter().enumerate() {
        let n = far
            .recv(&mut buf, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("frame {i} did not arrive"));
        assert_eq!(&buf[..n], &f[..]);
    }
    let st = p.stats();
    assert_eq!((st.opackets, st.oerrors), (3, 2), "{st:?}");
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn empty_pool_counts_nombuf_and_keeps_frames() {
    let Some(v) = veth("npafp10") else {
        return;
    };
    let pool = pool("afp-nombuf", 8);
    let mut p = port(&format!("net_af_packet0,iface={}", v.a), 0);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let far = RawSocket::open(&v.b).unwrap();
    let held: Vec<Mbuf> = (0..8).map(|_| pool.alloc().unwrap()).collect();
    let sent: Vec<Vec<u8>> = (0..4).map(|i| testing::test_frame(i, 64)).collect();
    for f in &sent {
        far.send(f).unwrap();
    }
    let mut b = MbufBatch::with_burst(32);
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.stats().rx_nombuf == 0 && Instant::now() < deadline {
        assert_eq!(q.rx[0].rx_burst(&mut b), 0);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(p.stats().rx_nombuf > 0);
    drop(held);
    let got = receive(q.rx[0].as_mut(), 4, Duration::from_secs(5));
    assert_eq!(got, sent, "frames wait in the ring while the pool is empty");
    assert_eq!(p.stats().imissed, 0);
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}

/// MTU 9000 on a veth: the port (no framesz=) sizes its rings from the MTU,
/// receives 9014-byte frames from the kernel as chains of 2 KiB mbufs, sends
/// chains back, and the kernel's far end reads them byte for byte.
#[test]
fn jumbo_frames_from_the_mtu_both_ways() {
    let Some(v) = veth("npafpj") else {
        return;
    };
    ip(&["link", "set", &v.a, "mtu", "9000"]);
    ip(&["link", "set", &v.b, "mtu", "9000"]);
    let pool = pool("afp-jumbo", 1024);
    let room = pool.data_room();
    let mut p = port(&format!("net_af_packet0,iface={}", v.a), 0);
    assert_eq!((p.options().framesz, p.options().blocksz), (9072, 12288));
    assert_eq!(p.info().max_rx_pktlen, 9018);
    assert!(p.info().rx_scatter && p.info().tx_multi_seg);
    p.configure(&conf(&pool, 0, 1)).unwrap();
    let mut q = p.start().unwrap();
    let far = RawSocket::open(&v.b).unwrap();
    let frames: Vec<Vec<u8>> = (0..20)
        .map(|i| udp_frame(1000 + i, [9014, 60, 1664, 1665, 4000][i as usize % 5]))
        .collect();
    for f in &frames {
        far.send(f).unwrap();
    }
    let mut b = MbufBatch::with_burst(32);
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.len() < frames.len() && Instant::now() < deadline {
        q.rx[0].rx_burst(&mut b);
    }
    let got: Vec<Vec<u8>> = b.iter().map(testing::packet_bytes).collect();
    assert_eq!(got, frames, "received whole and in order");
    for m in b.iter() {
        assert_eq!(m.nb_segs(), m.pkt_len().div_ceil(room));
    }
    // Back out as they came in: chains gathered into the transmit slots.
    let mut left = b.len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.is_empty() && Instant::now() < deadline {
        left -= q.tx[0].tx_burst(&mut b);
    }
    assert_eq!(left, 0);
    let mut back = Vec::new();
    let mut buf = vec![0u8; 16384];
    while back.len() < frames.len() {
        match far.recv(&mut buf, Duration::from_secs(5)) {
            Some(n) => back.push(buf[..n].to_vec()),
            None => break,
        }
    }
    assert_eq!(back, frames, "the far end reads every byte");
    let st = p.stats();
    let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
    assert_eq!(
        (
            st.ipackets,
            st.ibytes,
            st.opackets,
            st.obytes,
            st.ierrors,
            st.oerrors
        ),
        (20, bytes, 20, bytes, 0, 0)
    );
    drop(q);
    p.stop().unwrap();
    assert_eq!(pool.in_use(), 0);
}
