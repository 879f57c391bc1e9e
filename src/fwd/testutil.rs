//! Test harness for the engines: a pool, a receive queue that hands out
//! prepared frames, a transmit queue that records what it was given (and can
//! refuse some), and the stream context wiring them. Also frame builders, and
//! the tests of `txonly` and of [`StreamCtx::transmit`].
#![deny(unsafe_code)]

use std::collections::VecDeque;

use super::{
    Engine, EngineConfig, FwdCounters, FwdStats, LatencyRecorder, StreamCtx, StreamInfo, StreamSpec,
};
use crate::mbuf::MbufBatch;
use crate::memory::DmaMemory;
use crate::mempool::{Mempool, MempoolConfig};
use crate::net::checksum;
use crate::port::{MacAddr, RxQueue, TxQueue};

/// Buffers in the harness pool.
pub const POOL_SIZE: u32 = 256;

/// A receive queue that hands out queued frames, copied into fresh mbufs.
pub struct FakeRx {
    pool: Mempool,
    frames: VecDeque<Vec<u8>>,
    /// Calls to `rx_burst`.
    pub calls: usize,
    /// Deliver each frame as a chain of segments of these lengths (the last
    /// length repeated for the rest), as a scattering port would; empty: one
    /// mbuf.
    pub segments: Vec<usize>,
}

impl FakeRx {
    /// Queue frames for the next bursts.
    pub fn push_frames(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) {
        self.frames.extend(frames);
    }

    /// Frames not received yet.
    pub fn pending(&self) -> usize {
        self.frames.len()
    }
}

impl RxQueue for FakeRx {
    fn rx_burst(&mut self, out: &mut MbufBatch) -> usize {
        self.calls += 1;
        let mut n = 0;
        while out.spare() > 0 {
            let Some(f) = self.frames.pop_front() else {
                break;
            };
            let m = if self.segments.is_empty() {
                let mut m = self.pool.alloc().expect("the test pool ran dry");
                assert!(m.set_len(f.len()), "test frame larger than an mbuf");
                m.data_mut().copy_from_slice(&f);
                m
            } else {
                let mut chain = crate::mbuf::RxChain::new();
                let mut at = 0;
                let mut i = 0;
                while at < f.len() {
                    let len = self.segments[i.min(self.segments.len() - 1)];
                    let n = len.min(f.len() - at);
                    let mut s = self.pool.alloc().expect("the test pool ran dry");
                    s.append(n)
                        .expect("segment fits")
                        .copy_from_slice(&f[at..at + n]);
                    chain.push(s).expect("few segments");
                    at += n;
                    i += 1;
                }
                chain.finish().expect("a frame")
            };
            out.push(m).expect("spare was checked");
            n += 1;
        }
        n
    }
}

/// A transmit queue that records the bytes of what it takes and frees the mbufs.
#[derive(Debug)]
pub struct FakeTx {
    /// Frames taken, in order (every segment's bytes).
    pub sent: Vec<Vec<u8>>,
    /// The segment lengths of each frame taken.
    pub sent_segs: Vec<Vec<usize>>,
    /// Calls to `tx_burst`.
    pub calls: usize,
    /// Take nothing on this many first calls.
    pub refuse_first: usize,
    /// Take at most this many per call.
    pub max_per_call: usize,
}

impl FakeTx {
    /// Take the recorded frames.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.sent)
    }
}

impl TxQueue for FakeTx {
    fn tx_burst(&mut self, pkts: &mut MbufBatch) -> usize {
        self.calls += 1;
        if self.calls <= self.refuse_first {
            return 0;
        }
        let n = pkts.len().min(self.max_per_call);
        for _ in 0..n {
            let m = pkts.pop_front().expect("len was checked");
            self.sent_segs.push(m.segments().map(<[u8]>::len).collect());
            self.sent
                .push(m.segments().flat_map(|s| s.iter().copied()).collect());
        }
        n
    }
}

/// One stream with fake queues.
pub struct Harness {
    /// Engine configuration (its `burst` sized the batch; `retry` is used as is).
    pub cfg: EngineConfig,
    /// The stream: id 3, tx MAC 02:00:00:00:00:10, peer 02:00:00:00:00:20.
    pub info: StreamInfo,
    /// Receive side.
    pub rx: FakeRx,
    /// Transmit side (takes everything unless told otherwise).
    pub tx: FakeTx,
    /// Scratch batch.
    pub batch: MbufBatch,
    /// Stream counters.
    pub counters: FwdCounters,
    /// Latency recorder.
    pub latency: LatencyRecorder,
    /// The pool everything comes from.
    pub pool: Mempool,
    _mem: DmaMemory,
}

impl Harness {
    /// A harness with the default configuration.
    pub fn new() -> Harness {
        Harness::with_cfg(EngineConfig::default())
    }

    /// A harness with `cfg`.
    pub fn with_cfg(cfg: EngineConfig) -> Harness {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("t", POOL_SIZE)).expect("test pool");
        Harness {
            info: StreamInfo {
                id: 3,
                spec: StreamSpec {
                    rx_port: 0,
                    rx_queue: 0,
                    tx_port: 1,
                    tx_queue: 0,
                },
                tx_mac: MacAddr([0x02, 0, 0, 0, 0, 0x10]),
                peer_mac: MacAddr([0x02, 0, 0, 0, 0, 0x20]),
            },
            rx: FakeRx {
                pool: pool.clone(),
                frames: VecDeque::new(),
                calls: 0,
                segments: Vec::new(),
            },
            tx: FakeTx {
                sent: Vec::new(),
                sent_segs: Vec::new(),
                calls: 0,
                refuse_first: 0,
                max_per_call: usize::MAX,
            },
            batch: MbufBatch::with_burst(cfg.burst),
            counters: FwdCounters::default(),
            latency: LatencyRecorder::new(),
            pool,
            _mem: mem,
            cfg,
        }
    }

    /// Run one `forward` of `engine`; the batch must be empty afterwards.
    pub fn forward<E: Engine>(&mut self, engine: &mut E) {
        let mut ctx = StreamCtx {
            info: &self.info,
            rx: &mut self.rx,
            tx: &mut self.tx,
            batch: &mut self.batch,
            pool: &self.pool,
            counters: &self.counters,
            latency: &mut self.latency,
            retry: self.cfg.retry,
            record_bursts: self.cfg.record_burst_stats,
        };
        engine.forward(&mut ctx);
        assert!(
            self.batch.is_empty(),
            "the engine left packets in the batch"
        );
    }

    /// The stream counters.
    pub fn stats(&self) -> FwdStats {
        self.counters.snapshot()
    }

    /// Every mbuf is back in the pool.
    pub fn assert_no_leak(&self) {
        assert_eq!(self.rx.pending(), 0, "frames still queued for receive");
        assert_eq!(
            self.pool.available(),
            self.pool.size() as u64,
            "mbufs leaked"
        );
    }
}

/// `len` bytes: destination 02:..:01, source 02:..:02, then a pattern from `seed`.
pub fn frame_of_len(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| seed.wrapping_add(i as u8)).collect();
    let hdr = [0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    let n = hdr.len().min(len);
    f[..n].copy_from_slice(&hdr[..n]);
    f
}

/// An untagged IPv4/UDP frame (valid IP checksum, UDP checksum 0) with
/// `payload_len` pattern bytes.
pub fn ipv4_udp_frame(
    dst: [u8; 6],
    src: [u8; 6],
    ip_src: [u8; 4],
    ip_dst: [u8; 4],
    sport: u16,
    dport: u16,
    payload_len: usize,
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload_len) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0x00, 0x01, 0x40, 0x00, 64, 17, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&ip_src);
    f.extend_from_slice(&ip_dst);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend((0..payload_len).map(|i| (i * 7) as u8));
    f
}

/// An untagged IPv6 frame from 2001:db8::`src_last` to 2001:db8::`dst_last`
/// carrying `l4` as protocol `proto`.
pub fn ipv6_frame(
    dst: [u8; 6],
    src: [u8; 6],
    src_last: u8,
    dst_last: u8,
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[proto, 64]);
    for last in [src_last, dst_last] {
        f.extend_from_slice(&[
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last,
        ]);
    }
    f.extend_from_slice(l4);
    f
}

/// A 20-byte TCP header (ACK, checksum 0) followed by `payload`.
pub fn tcp_segment(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[
        0, 0, 0x10, 0x00, 0, 0, 0, 0, 0x50, 0x10, 0x20, 0x00, 0, 0, 0, 0,
    ]);
    t.extend_from_slice(payload);
    t
}

/// `frame` with a VLAN tag (`tpid`, `tci`) inserted after the MACs.
pub fn vlan_tag(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fwd::io::Io;
    use crate::fwd::latency::read_stamp;
    use crate::fwd::txonly::TxOnly;
    use crate::fwd::{FwdMode, RetryConfig};

    fn io_with(retry: RetryConfig, frames: usize) -> Harness {
        let mut h = Harness::with_cfg(EngineConfig {
            mode: FwdMode::Io,
            retry,
            ..EngineConfig::default()
        });
        h.rx.push_frames((0..frames).map(|i| frame_of_len(60, i as u8)));
        h
    }

    #[test]
    fn transmit_without_retry_drops_the_rest() {
        let mut h = io_with(RetryConfig::default(), 32);
        h.tx.max_per_call = 10;
        h.forward(&mut Io);
        assert_eq!(h.tx.calls, 1, "one try only");
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), 10);
        for (i, f) in sent.iter().enumerate() {
            assert_eq!(f, &frame_of_len(60, i as u8), "the first ten, in order");
        }
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.fwd_dropped), (32, 10, 22));
        h.assert_no_leak();
    }

    #[test]
    fn transmit_with_retry_gets_everything_through() {
        let retry = RetryConfig {
            enabled: true,
            count: 64,
            delay_us: 1,
        };
        let mut h = io_with(retry, 32);
        h.tx.refuse_first = 2;
        h.forward(&mut Io);
        assert_eq!(h.tx.calls, 3, "two refusals, then all");
        assert_eq!(h.tx.take_sent().len(), 32);
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.fwd_dropped), (32, 32, 0));
        h.assert_no_leak();

        // Partial acceptance: retries until the batch is empty.
        let mut h = io_with(retry, 32);
        h.tx.max_per_call = 10;
        h.forward(&mut Io);
        assert_eq!(h.tx.calls, 4);
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), 32);
        assert_eq!(sent[31], frame_of_len(60, 31), "order kept across retries");
        assert_eq!(h.stats().fwd_dropped, 0);
        h.assert_no_leak();
    }

    #[test]
    fn transmit_retry_gives_up_after_count() {
        let retry = RetryConfig {
            enabled: true,
            count: 3,
            delay_us: 0,
        };
        let mut h = io_with(retry, 20);
        h.tx.refuse_first = 10;
        h.forward(&mut Io);
        assert_eq!(h.tx.calls, 4, "one try and three retries");
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.fwd_dropped), (20, 0, 20));
        h.assert_no_leak();
    }

    #[test]
    fn txonly_headers_checksum_stamp_and_sequence() {
        let mut h = Harness::new();
        let mut e = TxOnly::new(&h.cfg, &h.info);
        h.forward(&mut e);
        h.forward(&mut e);
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), 64);
        for (i, f) in sent.iter().enumerate() {
            assert_eq!(f.len(), 64);
            assert_eq!(&f[0..6], &h.info.peer_mac.0);
            assert_eq!(&f[6..12], &h.info.tx_mac.0);
            assert_eq!(&f[12..14], &[0x08, 0x00]);
            assert_eq!(f[14], 0x45);
            assert_eq!(&f[16..18], &50u16.to_be_bytes(), "IP total length");
            assert_eq!(f[22], 64, "TTL");
            assert_eq!(f[23], 17, "UDP");
            assert_eq!(&f[26..30], &[198, 18, 0, 1]);
            assert_eq!(&f[30..34], &[198, 18, 0, 2]);
            assert_eq!(
                checksum::checksum(&f[14..34]),
                0,
                "IP header checksum valid"
            );
            assert_eq!(&f[34..38], &[0, 9, 0, 9], "UDP 9 -> 9");
            assert_eq!(&f[38..40], &30u16.to_be_bytes(), "UDP length");
            assert_eq!(&f[40..42], &[0, 0], "no UDP checksum");
            let st = read_stamp(f).expect("stamped");
            assert_eq!(st.seq, i as u32, "sequence increments across bursts");
            assert_eq!(st.flow, h.info.id);
            assert!(st.tx_ns > 0);
        }
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.tx_nombuf), (0, 64, 0));
        h.assert_no_leak();
    }

    #[test]
    fn txonly_multi_flow_and_short_frames() {
        let mut cfg = EngineConfig::default();
        cfg.tx.multi_flow = true;
        cfg.tx.len = 50; // below the stamp size
        let mut h = Harness::with_cfg(cfg);
        let mut e = TxOnly::new(&h.cfg, &h.info);
        h.forward(&mut e);
        let sent = h.tx.take_sent();
        for (i, f) in sent.iter().enumerate() {
            assert_eq!(f.len(), 50);
            assert_eq!(
                u16::from_be_bytes([f[34], f[35]]),
                9 + i as u16,
                "source port varies"
            );
            assert_eq!(read_stamp(f), None, "too short to stamp");
            assert_eq!(checksum::checksum(&f[14..34]), 0);
        }
        h.assert_no_leak();
    }

    #[test]
    fn txonly_counts_an_empty_pool() {
        let mut h = Harness::with_cfg(EngineConfig {
            burst: POOL_SIZE as usize + 1,
            ..EngineConfig::default()
        });
        let mut e = TxOnly::new(&h.cfg, &h.info);
        h.forward(&mut e);
        assert_eq!(h.tx.calls, 0);
        assert_eq!(h.stats().tx_nombuf, 1);
        h.assert_no_leak();
    }

    fn recording(mut cfg: EngineConfig) -> Harness {
        cfg.record_burst_stats = true;
        cfg.burst = 4;
        Harness::with_cfg(cfg)
    }

    /// `bins` as (size, calls) pairs, for readable assertions.
    fn nonzero(h: &crate::fwd::BurstHistogram) -> Vec<(usize, u64)> {
        h.bins
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
            .collect()
    }

    #[test]
    fn burst_stats_count_every_receive_call_and_every_transmit_by_size() {
        let mut h = recording(EngineConfig::default());
        // Bursts of 4, 4, 1, then two empty polls.
        h.rx.push_frames((0..9).map(|i| frame_of_len(60, i as u8)));
        for _ in 0..5 {
            h.forward(&mut Io);
        }
        let (rx, tx) = h.counters.bursts.snapshot();
        assert_eq!(nonzero(&rx), [(0, 2), (1, 1), (4, 2)]);
        assert_eq!(rx.total(), h.rx.calls as u64, "one count per rx_burst call");
        // io does not transmit after an empty receive, as testpmd's iofwd.
        assert_eq!(nonzero(&tx), [(1, 1), (4, 2)]);
        assert_eq!(tx.total(), h.tx.calls as u64);
        h.assert_no_leak();
    }

    #[test]
    fn burst_stats_count_a_transmit_once_with_what_its_retries_sent() {
        let retry = RetryConfig {
            enabled: true,
            count: 64,
            delay_us: 0,
        };
        let mut h = recording(EngineConfig {
            retry,
            ..EngineConfig::default()
        });
        h.tx.max_per_call = 3;
        h.rx.push_frames((0..4).map(|i| frame_of_len(60, i as u8)));
        h.forward(&mut Io);
        assert_eq!(h.tx.calls, 2, "3 then 1");
        let (_, tx) = h.counters.bursts.snapshot();
        assert_eq!(
            nonzero(&tx),
            [(4, 1)],
            "testpmd counts nb_tx after the retries"
        );

        // Without retry the transmit counts what the one call took.
        let mut h = recording(EngineConfig::default());
        h.tx.max_per_call = 3;
        h.rx.push_frames((0..4).map(|i| frame_of_len(60, i as u8)));
        h.forward(&mut Io);
        let (_, tx) = h.counters.bursts.snapshot();
        assert_eq!(nonzero(&tx), [(3, 1)]);
        assert_eq!(h.stats().fwd_dropped, 1);
        h.tx.refuse_first = usize::MAX;
        h.rx.push_frames([frame_of_len(60, 9)]);
        h.forward(&mut Io);
        let (_, tx) = h.counters.bursts.snapshot();
        assert_eq!(
            nonzero(&tx),
            [(0, 1), (3, 1)],
            "a refused transmit is size 0"
        );
        h.assert_no_leak();
    }

    #[test]
    fn burst_stats_cover_generators() {
        let mut h = recording(EngineConfig::default());
        let mut e = TxOnly::new(&h.cfg, &h.info);
        h.forward(&mut e);
        h.forward(&mut e);
        let (rx, tx) = h.counters.bursts.snapshot();
        assert_eq!(nonzero(&tx), [(4, 2)]);
        assert_eq!(rx.total(), 0, "txonly does not receive");
        h.assert_no_leak();
    }

    #[test]
    fn burst_stats_off_records_nothing() {
        let mut h = Harness::with_cfg(EngineConfig {
            burst: 4,
            ..EngineConfig::default()
        });
        h.rx.push_frames((0..6).map(|i| frame_of_len(60, i as u8)));
        for _ in 0..3 {
            h.forward(&mut Io);
        }
        let (rx, tx) = h.counters.bursts.snapshot();
        assert_eq!((rx.total(), tx.total()), (0, 0));
        assert_eq!(h.stats().tx_packets, 6, "but the packets went through");
        h.assert_no_leak();
    }
}
