//! `flowgen` (testpmd's flowgen.c): free whatever is received, then send a
//! burst of generated IPv4/UDP packets over many flows: Ethernet
//! 00:01:02:03:04:00 -> 00:01:02:03:04:01 (fixed, as testpmd), IPv4 10.254.0.0
//! -> 10.253.0.0 + flow, the flow cycling through `--flowgen-flows`, UDP
//! 1000 -> 1001 with checksum 0, TTL 64, `--txpkts` bytes long (at least the
//! 42 header bytes), and a latency stamp when long enough (as txonly).
//!
//! Flows whose packets the transmit queue did not take are sent again next
//! burst (testpmd backs its flow counter out the same way). The whole burst
//! is allocated at once; an empty pool skips the burst and counts `tx_nombuf`.
//! With several `--txpkts` segments every frame is a chain (as txonly's).
#![deny(unsafe_code)]

use std::net::Ipv4Addr;

use super::latency::{MIN_STAMPED_LEN, Stamp, write_stamp};
use super::txonly::{HEADERS_LEN, MIN_LEN, alloc_chain, build_headers};
use super::{Engine, EngineConfig, StreamCtx, StreamInfo, TxPacketConfig};
use crate::mbuf::MbufBatch;
use crate::net::checksum;
use crate::port::MacAddr;

/// Source MAC of generated frames.
pub const ETH_SRC: MacAddr = MacAddr([0x00, 0x01, 0x02, 0x03, 0x04, 0x00]);
/// Destination MAC of generated frames.
pub const ETH_DST: MacAddr = MacAddr([0x00, 0x01, 0x02, 0x03, 0x04, 0x01]);
/// IPv4 source of generated packets.
pub const IP_SRC: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 0);
/// IPv4 destination of flow 0; flow `i` goes to this plus `i`.
pub const IP_DST_BASE: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 0);
/// UDP source port.
pub const UDP_SRC: u16 = 1000;
/// UDP destination port.
pub const UDP_DST: u16 = 1001;

/// Offset of the IPv4 header checksum in a generated frame.
const IP_CSUM_AT: usize = 24;
/// Offset of the IPv4 destination in a generated frame.
const IP_DST_AT: usize = 30;

/// The flowgen engine: one per stream, with its own flow counter and sequence.
#[derive(Debug)]
pub struct FlowGen {
    headers: [u8; HEADERS_LEN],
    /// Header checksum of flow 0.
    base_csum: u16,
    len: usize,
    /// Segment lengths of a frame that is a chain (more than one).
    segs: Vec<u16>,
    flows: u32,
    next_flow: u32,
    seq: u32,
    stream: u16,
    stamp: bool,
}

impl FlowGen {
    /// The IPv4 header checksum of flow `flow`, from flow 0's by RFC 1624
    /// updates of the two destination words.
    #[inline(always)]
    pub fn ip_checksum(&self, flow: u32) -> u16 {
        let base = u32::from(IP_DST_BASE);
        let dst = base.wrapping_add(flow);
        let c = checksum::update16(self.base_csum, (base >> 16) as u16, (dst >> 16) as u16);
        checksum::update16(c, base as u16, dst as u16)
    }

    /// The flow the next generated packet belongs to.
    pub fn next_flow(&self) -> u32 {
        self.next_flow
    }
}

impl Engine for FlowGen {
    fn new(cfg: &EngineConfig, info: &StreamInfo) -> Self {
        let tx = TxPacketConfig {
            udp_src: UDP_SRC,
            udp_dst: UDP_DST,
            ..cfg.tx.clone()
        };
        let mut headers = build_headers(info, &tx, IP_SRC, IP_DST_BASE);
        headers[0..6].copy_from_slice(&ETH_DST.0);
        headers[6..12].copy_from_slice(&ETH_SRC.0);
        let base_csum = u16::from_be_bytes([headers[IP_CSUM_AT], headers[IP_CSUM_AT + 1]]);
        FlowGen {
            headers,
            base_csum,
            len: cfg.tx.len.max(MIN_LEN) as usize,
            segs: if cfg.tx.segs.len() > 1 {
                cfg.tx.segs.clone()
            } else {
                Vec::new()
            },
            flows: cfg.tx.flowgen_flows.max(1),
            next_flow: 0,
            seq: 0,
            stream: info.id,
            stamp: cfg.latency,
        }
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if ctx.receive() > 0 {
            // Frames a generator (this one looped back, or another) stamped
            // give their latency here too, so one flowgen measures a loop.
            if self.stamp {
                let now = crate::time::now_ns();
                for m in ctx.batch.iter() {
                    if let Some(st) = super::latency::read_stamp_mbuf(m) {
                        ctx.latency.record(st, now);
                    }
                }
            }
            ctx.batch.clear();
        }
        let n = ctx.batch.burst();
        if !self.segs.is_empty() {
            if !self.build_chains(ctx, n) {
                return;
            }
            return self.send(ctx, n);
        }
        if !ctx.pool.alloc_bulk(ctx.batch, n) {
            ctx.counters.tx_nombuf.add(1);
            return;
        }
        let now = if self.stamp { crate::time::now_ns() } else { 0 };
        let base = u32::from(IP_DST_BASE);
        for m in ctx.batch.iter_mut() {
            if !m.set_len(self.len) {
                // Smaller mbufs than --txpkts: send what fits (as txonly).
                let cap = m.capacity();
                m.set_len(cap);
            }
            let csum = self.ip_checksum(self.next_flow);
            let d = m.data_mut();
            let hl = HEADERS_LEN.min(d.len());
            d[..hl].copy_from_slice(&self.headers[..hl]);
            if let Some(ip_dst) = d.get_mut(IP_DST_AT..IP_DST_AT + 4) {
                ip_dst.copy_from_slice(&base.wrapping_add(self.next_flow).to_be_bytes());
            }
            if let Some(c) = d.get_mut(IP_CSUM_AT..IP_CSUM_AT + 2) {
                c.copy_from_slice(&csum.to_be_bytes());
            }
            if self.stamp {
                write_stamp(
                    d,
                    Stamp {
                        seq: self.seq,
                        tx_ns: now,
                        flow: self.stream,
                    },
                );
            }
            self.seq = self.seq.wrapping_add(1);
            self.next_flow += 1;
            if self.next_flow >= self.flows {
                self.next_flow = 0;
            }
        }
        self.send(ctx, n);
    }
}

impl FlowGen {
    /// Send the `n` generated packets; flows not taken go first next time.
    #[inline(always)]
    fn send(&mut self, ctx: &mut StreamCtx<'_>, n: usize) {
        let before = ctx.counters.tx_packets.get();
        ctx.transmit();
        let sent = ctx.counters.tx_packets.get().wrapping_sub(before);
        let unsent = (n as u64).saturating_sub(sent);
        if unsent > 0 {
            // Back the flow counter out so the unsent flows go first next time.
            let flows = self.flows as u64;
            self.next_flow = ((self.next_flow as u64 + flows - unsent % flows) % flows) as u32;
        }
    }
}

impl FlowGen {
    /// Fill the batch with `n` chains (`--txpkts` with several segments),
    /// their first bytes built aside and copied across the segments; false
    /// (and nothing built, `tx_nombuf` counted) if the pool is short.
    #[cold]
    #[inline(never)]
    fn build_chains(&mut self, ctx: &mut StreamCtx<'_>, n: usize) -> bool {
        let now = if self.stamp { crate::time::now_ns() } else { 0 };
        let base = u32::from(IP_DST_BASE);
        let mut scratch = MbufBatch::with_burst(self.segs.len());
        let mut head = [0u8; MIN_STAMPED_LEN];
        for k in 0..n {
            let Some(mut m) = alloc_chain(ctx.pool, &self.segs, &mut scratch) else {
                ctx.counters.tx_nombuf.add(1);
                ctx.batch.clear();
                // The flows of the chains built are taken again.
                let flows = self.flows as usize;
                self.next_flow = ((self.next_flow as usize + flows - k % flows) % flows) as u32;
                return false;
            };
            head[..HEADERS_LEN].copy_from_slice(&self.headers);
            let flow = self.next_flow;
            head[IP_DST_AT..IP_DST_AT + 4].copy_from_slice(&base.wrapping_add(flow).to_be_bytes());
            head[IP_CSUM_AT..IP_CSUM_AT + 2].copy_from_slice(&self.ip_checksum(flow).to_be_bytes());
            let mut upto = HEADERS_LEN;
            if self.stamp && self.len >= MIN_STAMPED_LEN {
                write_stamp(
                    &mut head,
                    Stamp {
                        seq: self.seq,
                        tx_ns: now,
                        flow: self.stream,
                    },
                );
                upto = MIN_STAMPED_LEN;
            }
            m.copy_in(0, &head[..upto]);
            let _ = ctx.batch.push(m);
            self.seq = self.seq.wrapping_add(1);
            self.next_flow += 1;
            if self.next_flow >= self.flows {
                self.next_flow = 0;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Harness, POOL_SIZE, frame_of_len};
    use super::*;
    use crate::fwd::latency::read_stamp;

    fn cfg(flows: u32, len: u16) -> EngineConfig {
        let mut c = EngineConfig::default();
        c.tx.flowgen_flows = flows;
        c.tx.len = len;
        c
    }

    #[test]
    fn frees_received_and_generates_flows() {
        let mut h = Harness::with_cfg(cfg(5, 64));
        h.rx.push_frames((0..7).map(|i| frame_of_len(60, i)));
        let mut e = FlowGen::new(&h.cfg, &h.info);
        h.forward(&mut e);
        h.forward(&mut e);
        let sent = h.tx.take_sent();
        assert_eq!(sent.len(), 64);
        for (i, f) in sent.iter().enumerate() {
            assert_eq!(f.len(), 64);
            assert_eq!(&f[0..6], &[0, 1, 2, 3, 4, 1], "fixed destination MAC");
            assert_eq!(&f[6..12], &[0, 1, 2, 3, 4, 0], "fixed source MAC");
            assert_eq!(&f[12..14], &[0x08, 0x00]);
            assert_eq!(f[14], 0x45);
            assert_eq!(&f[16..18], &50u16.to_be_bytes());
            assert_eq!((f[22], f[23]), (64, 17));
            assert_eq!(&f[26..30], &[10, 254, 0, 0]);
            assert_eq!(
                &f[30..34],
                &[10, 253, 0, (i % 5) as u8],
                "flow cycles through 5"
            );
            assert_eq!(
                checksum::checksum(&f[14..34]),
                0,
                "IP header checksum valid"
            );
            assert_eq!(
                &f[34..42],
                &[0x03, 0xe8, 0x03, 0xe9, 0, 30, 0, 0],
                "UDP 1000 -> 1001"
            );
            let st = read_stamp(f).expect("stamped");
            assert_eq!((st.seq, st.flow), (i as u32, h.info.id));
        }
        let s = h.stats();
        assert_eq!(
            (s.rx_packets, s.tx_packets, s.rx_bad, s.fwd_dropped),
            (7, 64, 0, 0)
        );
        h.assert_no_leak();
    }

    #[test]
    fn unsent_flows_go_first_next_time() {
        let mut h = Harness::with_cfg(cfg(1024, 64));
        h.tx.max_per_call = 10;
        let mut e = FlowGen::new(&h.cfg, &h.info);
        h.forward(&mut e);
        assert_eq!(e.next_flow(), 10, "22 unsent flows backed out");
        h.forward(&mut e);
        let sent = h.tx.take_sent();
        let flows: Vec<u8> = sent.iter().map(|f| f[33]).collect();
        assert_eq!(flows, (0..20).collect::<Vec<u8>>());
        let s = h.stats();
        assert_eq!((s.tx_packets, s.fwd_dropped), (20, 44));
        h.assert_no_leak();

        // Back-out wraps below flow 0.
        let mut h = Harness::with_cfg(cfg(7, 64));
        h.tx.refuse_first = 1;
        let mut e = FlowGen::new(&h.cfg, &h.info);
        h.forward(&mut e);
        assert_eq!(e.next_flow(), 0);
        h.assert_no_leak();
    }

    #[test]
    fn incremental_checksum_matches_a_recompute() {
        let h = Harness::with_cfg(cfg(1 << 20, 64));
        let e = FlowGen::new(&h.cfg, &h.info);
        for flow in [
            0u32, 1, 2, 255, 256, 0x1234, 0xfffe, 0xffff, 0x1_0000, 0x1_0001, 0x2_5a5a, 0xf_ffff,
        ] {
            let mut hdr = e.headers;
            hdr[IP_DST_AT..IP_DST_AT + 4]
                .copy_from_slice(&(u32::from(IP_DST_BASE) + flow).to_be_bytes());
            hdr[IP_CSUM_AT..IP_CSUM_AT + 2].copy_from_slice(&e.ip_checksum(flow).to_be_bytes());
            assert_eq!(checksum::checksum(&hdr[14..34]), 0, "flow {flow:#x}");
        }
    }

    #[test]
    fn short_frames_and_an_empty_pool() {
        let mut h = Harness::with_cfg(cfg(0, 20)); // 0 flows means 1; 20 bytes means 42
        let mut e = FlowGen::new(&h.cfg, &h.info);
        h.forward(&mut e);
        for f in h.tx.take_sent() {
            assert_eq!(f.len(), 42);
            assert_eq!(&f[30..34], &[10, 253, 0, 0]);
            assert_eq!(checksum::checksum(&f[14..34]), 0);
            assert_eq!(read_stamp(&f), None);
        }
        let mut c = cfg(4, 64);
        c.burst = POOL_SIZE as usize + 1;
        let mut h = Harness::with_cfg(c);
        h.rx.push_frames([frame_of_len(60, 0)]);
        let mut e = FlowGen::new(&h.cfg, &h.info);
        h.forward(&mut e);
        let s = h.stats();
        assert_eq!((s.rx_packets, s.tx_packets, s.tx_nombuf), (1, 0, 1));
        assert_eq!(e.next_flow(), 0);
        h.assert_no_leak();
    }
}
