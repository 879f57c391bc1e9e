//! `txonly`: generate IPv4/UDP packets (testpmd's txonly.c): Ethernet from the
//! transmit port's MAC to its peer, 198.18.0.1 -> 198.18.0.2 (`--tx-ip`), UDP
//! 9 -> 9 (`--tx-udp`), TTL 64, UDP checksum 0, `--txpkts` bytes long. Every
//! frame long enough carries a latency stamp (see [`super::latency`]).
//!
//! With several `--txpkts` segments (`--txpkts=X,Y`) every frame is a chain of
//! mbufs of those lengths, the headers and the stamp written across them as
//! testpmd's `copy_buf_to_pkt` does; the packets of a burst are allocated one
//! chain at a time, and a burst the pool runs short in is sent as far as it
//! got (counted in `tx_nombuf`).
#![deny(unsafe_code)]

use super::latency::{MIN_STAMPED_LEN, Stamp, write_stamp};
use super::{Engine, EngineConfig, StreamCtx, StreamInfo};
use crate::Mbuf;
use crate::mbuf::{MbufBatch, RxChain};
use crate::mempool::Mempool;
use crate::net::checksum;

/// A fresh chain of mbufs of lengths `segs` (all allocated at once, or
/// none); `scratch` is an empty batch with room for them.
pub fn alloc_chain(pool: &Mempool, segs: &[u16], scratch: &mut MbufBatch) -> Option<Mbuf> {
    if !pool.alloc_bulk(scratch, segs.len()) {
        return None;
    }
    let mut chain = RxChain::new();
    for &len in segs {
        let mut m = scratch.pop_front().expect("allocated above");
        // Checked against the data room when the configuration was made.
        let fits = m.set_len(len as usize);
        debug_assert!(fits, "a --txpkts segment longer than an mbuf");
        // At most MAX_SEGS segments: also checked with the configuration.
        let _ = chain.push(m);
    }
    chain.finish()
}

/// Length of the Ethernet + IPv4 + UDP headers txonly writes.
pub const HEADERS_LEN: usize = 42;
/// Shortest frame txonly builds (the headers).
pub const MIN_LEN: u16 = HEADERS_LEN as u16;

/// Build the 42 header bytes of a generated frame of `len` bytes.
pub fn build_headers(
    info: &StreamInfo,
    cfg: &super::TxPacketConfig,
    ip_src: std::net::Ipv4Addr,
    ip_dst: std::net::Ipv4Addr,
) -> [u8; HEADERS_LEN] {
    let len = cfg.len.max(MIN_LEN);
    let mut h = [0u8; HEADERS_LEN];
    h[0..6].copy_from_slice(&info.peer_mac.0);
    h[6..12].copy_from_slice(&info.tx_mac.0);
    h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = len - 14;
    h[14] = 0x45;
    h[15] = 0;
    h[16..18].copy_from_slice(&ip_len.to_be_bytes());
    h[18..20].copy_from_slice(&0u16.to_be_bytes()); // identification
    h[20..22].copy_from_slice(&0u16.to_be_bytes()); // flags/fragment
    h[22] = 64; // TTL
    h[23] = 17; // UDP
    h[26..30].copy_from_slice(&ip_src.octets());
    h[30..34].copy_from_slice(&ip_dst.octets());
    let c = checksum::checksum(&h[14..34]);
    h[24..26].copy_from_slice(&c.to_be_bytes());
    h[34..36].copy_from_slice(&cfg.udp_src.to_be_bytes());
    h[36..38].copy_from_slice(&cfg.udp_dst.to_be_bytes());
    h[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    h[40..42].copy_from_slice(&0u16.to_be_bytes()); // UDP checksum: none
    h
}

/// The txonly engine: one per stream, with its own sequence.
#[derive(Debug)]
pub struct TxOnly {
    headers: [u8; HEADERS_LEN],
    len: usize,
    /// Segment lengths of a frame that is a chain (more than one).
    segs: Vec<u16>,
    seq: u32,
    flow: u16,
    multi_flow: bool,
    udp_src: u16,
    stamp: bool,
}

impl Engine for TxOnly {
    fn new(cfg: &EngineConfig, info: &StreamInfo) -> Self {
        let len = cfg.tx.len.max(MIN_LEN) as usize;
        TxOnly {
            headers: build_headers(info, &cfg.tx, cfg.tx.ip_src, cfg.tx.ip_dst),
            len,
            segs: if cfg.tx.segs.len() > 1 {
                cfg.tx.segs.clone()
            } else {
                Vec::new()
            },
            seq: 0,
            flow: info.id,
            multi_flow: cfg.tx.multi_flow,
            udp_src: cfg.tx.udp_src,
            stamp: cfg.latency,
        }
    }

    #[inline(always)]
    fn forward(&mut self, ctx: &mut StreamCtx<'_>) {
        if !self.segs.is_empty() {
            return self.forward_chains(ctx);
        }
        let n = ctx.batch.burst();
        if !ctx.pool.alloc_bulk(ctx.batch, n) {
            ctx.counters.tx_nombuf.add(1);
            return;
        }
        let now = if self.stamp { crate::time::now_ns() } else { 0 };
        for m in ctx.batch.iter_mut() {
            if !m.set_len(self.len) {
                // The mbuf is smaller than --txpkts: the configuration check
                // prevents this; send what fits rather than overrun.
                let cap = m.capacity();
                m.set_len(cap);
            }
            let d = m.data_mut();
            let hl = HEADERS_LEN.min(d.len());
            d[..hl].copy_from_slice(&self.headers[..hl]);
            if self.multi_flow && d.len() >= HEADERS_LEN {
                // testpmd varies the UDP source port; the UDP checksum is 0 and
                // the IP header is unchanged, so nothing else needs fixing.
                let port = self.udp_src.wrapping_add((self.seq & 0xff) as u16);
                d[34..36].copy_from_slice(&port.to_be_bytes());
            }
            if self.stamp {
                write_stamp(
                    d,
                    Stamp {
                        seq: self.seq,
                        tx_ns: now,
                        flow: self.flow,
                    },
                );
            }
            self.seq = self.seq.wrapping_add(1);
        }
        ctx.transmit();
    }
}

impl TxOnly {
    /// A burst of chains (`--txpkts` with several segments): the first
    /// bytes (headers, UDP source port, stamp) built aside and copied across
    /// the segments.
    #[cold]
    #[inline(never)]
    fn forward_chains(&mut self, ctx: &mut StreamCtx<'_>) {
        let n = ctx.batch.burst();
        let now = if self.stamp { crate::time::now_ns() } else { 0 };
        let mut scratch = MbufBatch::with_burst(self.segs.len());
        let mut head = [0u8; MIN_STAMPED_LEN];
        for _ in 0..n {
            let Some(mut m) = alloc_chain(ctx.pool, &self.segs, &mut scratch) else {
                ctx.counters.tx_nombuf.add(1);
                break;
            };
            head[..HEADERS_LEN].copy_from_slice(&self.headers);
            if self.multi_flow {
                let port = self.udp_src.wrapping_add((self.seq & 0xff) as u16);
                head[34..36].copy_from_slice(&port.to_be_bytes());
            }
            let mut upto = HEADERS_LEN;
            if self.stamp && self.len >= MIN_STAMPED_LEN {
                write_stamp(
                    &mut head,
                    Stamp {
                        seq: self.seq,
                        tx_ns: now,
                        flow: self.flow,
                    },
                );
                upto = MIN_STAMPED_LEN;
            }
            m.copy_in(0, &head[..upto]);
            self.seq = self.seq.wrapping_add(1);
            // The burst size is the batch's: it has room.
            let _ = ctx.batch.push(m);
        }
        ctx.transmit();
    }
}
