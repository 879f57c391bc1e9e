//! Every engine on multi-segment packets: what each does to the first
//! segment (where the headers are), that the other segments arrive intact,
//! that chains leave as chains, and that generators build them per
//! `--txpkts`.

use super::testutil::{Harness, frame_of_len, ipv4_udp_frame};
use super::{Engine, EngineConfig, FwdMode};
use crate::net::checksum;

const M1: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const M2: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

/// A harness whose receive queue delivers chains of these segment lengths.
fn chained(segments: &[usize]) -> Harness {
    let mut h = Harness::new();
    h.rx.segments = segments.to_vec();
    h
}

/// The segment lengths a frame of `len` bytes gets from `segments` (the
/// last length repeated).
fn split(len: usize, segments: &[usize]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut at = 0;
    while at < len {
        let n = segments[v.len().min(segments.len() - 1)].min(len - at);
        v.push(n);
        at += n;
    }
    v
}

#[test]
fn io_forwards_chains_untouched() {
    let segs = [100, 1000, 1000];
    let mut h = chained(&segs);
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame_of_len(3000 + i, i as u8)).collect();
    h.rx.push_frames(frames.clone());
    h.forward(&mut super::io::Io);
    assert_eq!(h.tx.take_sent(), frames);
    for (s, f) in h.tx.sent_segs.iter().zip(&frames) {
        assert_eq!(s, &split(f.len(), &segs), "a chain leaves as a chain");
    }
    h.assert_no_leak();
}

/// mac and macswap rewrite the first segment's addresses; a chain whose
/// first segment is shorter than an Ethernet header is malformed (its
/// header is not where every engine reads it) and counted.
#[test]
fn mac_engines_rewrite_the_first_segment_only() {
    let f = frame_of_len(5000, 9);
    for mode in [FwdMode::Mac, FwdMode::MacSwap] {
        let mut h = chained(&[60, 1000]);
        h.rx.push_frames([f.clone()]);
        let (peer, own) = (h.info.peer_mac.0, h.info.tx_mac.0);
        match mode {
            FwdMode::Mac => h.forward(&mut super::mac::Mac::new(&h.cfg, &h.info)),
            _ => h.forward(&mut super::macswap::MacSwap::new(&h.cfg, &h.info)),
        }
        let out = h.tx.take_sent();
        let (dst, src) = match mode {
            FwdMode::Mac => (peer, own),
            _ => (M2, M1),
        };
        assert_eq!(&out[0][0..6], &dst, "{mode}");
        assert_eq!(&out[0][6..12], &src, "{mode}");
        assert_eq!(&out[0][12..], &f[12..], "{mode}: the rest intact");
        assert_eq!(h.tx.sent_segs[0], split(5000, &[60, 1000]));
        // The Ethernet header split over two segments: counted, freed.
        let mut h = chained(&[10, 100]);
        h.rx.push_frames([frame_of_len(200, 1)]);
        match mode {
            FwdMode::Mac => h.forward(&mut super::mac::Mac::new(&h.cfg, &h.info)),
            _ => h.forward(&mut super::macswap::MacSwap::new(&h.cfg, &h.info)),
        }
        assert!(h.tx.take_sent().is_empty());
        assert_eq!(h.stats().rx_bad, 1, "{mode}");
        h.assert_no_leak();
    }
}

/// 5tswap swaps what the first segment holds: with the UDP header in it,
/// everything; with the first segment ending inside the IP header, the
/// MACs only (the addresses are not read across segments).
#[test]
fn fivetswap_swaps_the_headers_of_the_first_segment() {
    let f = ipv4_udp_frame(M1, M2, [10, 0, 0, 1], [10, 0, 0, 2], 1111, 2222, 6000);
    let mut h = chained(&[64, 1600]);
    h.rx.push_frames([f.clone()]);
    h.forward(&mut super::fivetswap::FiveTupleSwap);
    let out = h.tx.take_sent().remove(0);
    assert_eq!((&out[0..6], &out[6..12]), (&M2[..], &M1[..]));
    assert_eq!((&out[26..30], &out[30..34]), (&f[30..34], &f[26..30]));
    assert_eq!((&out[34..36], &out[36..38]), (&f[36..38], &f[34..36]));
    assert_eq!(
        checksum::checksum(&out[14..34]),
        0,
        "IP checksum still valid"
    );
    assert_eq!(&out[38..], &f[38..], "UDP length, checksum, payload intact");
    let mut h = chained(&[20, 1600]);
    h.rx.push_frames([f.clone()]);
    h.forward(&mut super::fivetswap::FiveTupleSwap);
    let out = h.tx.take_sent().remove(0);
    assert_eq!((&out[0..6], &out[6..12]), (&M2[..], &M1[..]));
    assert_eq!(
        &out[12..],
        &f[12..],
        "no address read beyond the first segment"
    );
    h.assert_no_leak();
}

/// A jumbo ping in three segments (headers in the first): the reply's ICMP
/// checksum, updated incrementally, is right over the whole message.
#[test]
fn icmpecho_answers_a_jumbo_ping_in_segments() {
    let payload: Vec<u8> = (0..8000).map(|i| (i * 13) as u8).collect();
    let mut f = Vec::new();
    f.extend_from_slice(&M1);
    f.extend_from_slice(&M2);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0, 0, 64, 1, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
    f.extend_from_slice(&payload);
    let c = checksum::checksum(&f[34..]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
    let mut h = chained(&[100, 1600]);
    h.rx.push_frames([f.clone()]);
    h.forward(&mut super::icmpecho::IcmpEcho::new(&h.cfg, &h.info));
    let out = h.tx.take_sent().remove(0);
    assert_eq!(out.len(), f.len());
    assert_eq!((&out[0..6], &out[6..12]), (&M2[..], &M1[..]));
    assert_eq!((&out[26..30], &out[30..34]), (&f[30..34], &f[26..30]));
    assert_eq!(out[34], 0, "echo reply");
    assert_eq!(
        checksum::checksum(&out[34..]),
        0,
        "ICMP checksum over all segments"
    );
    assert_eq!(
        &out[42..],
        &f[42..],
        "the payload in the other segments intact"
    );
    assert_eq!(h.tx.sent_segs[0], split(f.len(), &[100, 1600]));
    h.assert_no_leak();
}

fn generator_cfg(segs: &[u16]) -> EngineConfig {
    let mut c = EngineConfig {
        burst: 4,
        ..EngineConfig::default()
    };
    c.tx.segs = segs.to_vec();
    c.tx.len = segs.iter().sum();
    c
}

/// txonly and flowgen with several --txpkts segments: chains of exactly
/// those lengths, the same bytes a one-segment frame of the same length
/// gets (headers and stamp written across the segments, even a header cut
/// at 14 bytes), and rxonly reads the stamp back across segments.
#[test]
fn generators_build_chains_per_txpkts() {
    for segs in [
        vec![14u16, 50],
        vec![1000, 1000, 500],
        vec![60, 1600, 1600, 1600],
    ] {
        let total: u16 = segs.iter().sum();
        for mode in [FwdMode::TxOnly, FwdMode::FlowGen] {
            let run = |segs: &[u16]| {
                let mut h = Harness::with_cfg(generator_cfg(segs));
                h.cfg.latency = true;
                match mode {
                    FwdMode::TxOnly => h.forward(&mut super::txonly::TxOnly::new(&h.cfg, &h.info)),
                    _ => h.forward(&mut super::flowgen::FlowGen::new(&h.cfg, &h.info)),
                }
                let segs_out = std::mem::take(&mut h.tx.sent_segs);
                let out = h.tx.take_sent();
                h.assert_no_leak();
                (out, segs_out)
            };
            let (chains, chain_segs) = run(&segs);
            let (singles, single_segs) = run(&[total]);
            assert_eq!(chains.len(), 4, "{mode} {segs:?}");
            let want: Vec<usize> = segs.iter().map(|&s| s as usize).collect();
            assert!(
                chain_segs.iter().all(|s| *s == want),
                "{mode}: {chain_segs:?}"
            );
            assert!(single_segs.iter().all(|s| s.len() == 1));
            for (c, s) in chains.iter().zip(&singles) {
                assert_eq!(c.len(), total as usize);
                // Headers and stamp up to its send time (the time differs).
                assert_eq!(
                    &c[..50],
                    &s[..50],
                    "{mode} {segs:?}: headers, stamp magic, seq"
                );
                assert_eq!(&c[58..60], &s[58..60], "{mode}: flow id");
            }
            // rxonly reads the stamps back, across the segments.
            let mut h = chained(&segs.iter().map(|&s| s as usize).collect::<Vec<_>>());
            h.rx.push_frames(chains.clone());
            h.forward(&mut super::rxonly::RxOnly::new(&h.cfg, &h.info));
            assert_eq!(
                h.latency.summary().samples,
                4,
                "{mode} {segs:?}: stamps read"
            );
            h.assert_no_leak();
        }
    }
}
