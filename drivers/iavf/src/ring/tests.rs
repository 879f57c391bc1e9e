use std::ptr::NonNull;
use std::sync::Arc;

use nicpoll::mbuf::{MbufBatch, MbufHeader, RxHeaderTemplate};
use nicpoll::memory::DmaMemory;
use nicpoll::mempool::MempoolConfig;
use nicpoll::{Mbuf, Mempool};

use super::*;
#[cfg(target_arch = "x86_64")]
use super::{avx2, sse};
use crate::desc::{RxDesc, TX_MAX_BUF, TX_MIN_LEN, TxDesc};
use crate::options::MaxSimd;

#[test]
fn rings_are_checked_and_read_back() {
    let mem = DmaMemory::plain();
    let region = Arc::new(mem.alloc("ring test", 8192).unwrap());
    assert!(DescRing::<TxDesc>::new(region.clone(), 8192 - 16 * 4, 8).is_err());
    assert!(
        DescRing::<TxDesc>::new(region.clone(), 64, 8).is_err(),
        "128-byte alignment"
    );
    let mut r = DescRing::<TxDesc>::new(region.clone(), 128, 64).unwrap();
    assert_eq!(r.iova(), region.iova(128));
    r.write(3, TxDesc::packet(0x1000, 64, true));
    assert_eq!(r.read(3), TxDesc::packet(0x1000, 64, true));
    r.clear();
    assert_eq!(r.read(3), TxDesc::default());
    let mut rx = DescRing::<RxDesc>::new(region.clone(), 4096, 32).unwrap();
    rx.write(31, RxDesc::read_format(0xAB00));
    assert_eq!(rx.read(31).pkt_addr(), 0xAB00);
    let mut b = DmaBytes::new(region, 0, 16).unwrap();
    b.write(&[1, 2, 3]);
    let mut out = [0u8; 4];
    b.read(&mut out);
    assert_eq!(out, [1, 2, 3, 0]);
}

#[test]
#[should_panic(expected = "outside a ring")]
fn out_of_range_descriptor_panics() {
    let mem = DmaMemory::plain();
    let region = Arc::new(mem.alloc("ring test", 4096).unwrap());
    let r = DescRing::<TxDesc>::new(region, 0, 4).unwrap();
    r.read(4);
}

#[test]
fn slots_fill_take_and_free() {
    let mem = DmaMemory::plain();
    let pool = Mempool::new(&mem, &MempoolConfig::new("slots", 16)).unwrap();
    let mut s = MbufSlots::new(8);
    assert!(s.fill(&pool, 2, 4));
    assert_eq!(pool.in_use(), 4);
    assert!(s.fill(&pool, 0, 2));
    assert_eq!(pool.in_use(), 6);
    let iova = s.rx_iova(2);
    let m = s.take(2).unwrap();
    assert_eq!(iova, m.buf_iova() + m.default_headroom() as u64);
    assert_eq!(
        m.buf_addr() as usize + m.default_headroom(),
        m.element_addr() as usize + nicpoll::mbuf::ELEMENT_DATA_OFFSET,
        "frames land at the element's fixed data offset"
    );
    assert!(s.take(2).is_none());
    assert!(s.put(7, m).is_ok());
    let held = s.held();
    assert_eq!(s.compact(), held);
    assert!((0..held).all(|i| s.is_held(i)));
    drop(s);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn receive_fast_loop_takes_only_prepared_buffers() {
    use crate::desc::rx_status;
    let mem = DmaMemory::plain();
    let region = Arc::new(mem.alloc("rx ring", 4096).unwrap());
    let mut ring = DescRing::<RxDesc>::new(region, 0, 8).unwrap();
    let pool = Mempool::new(&mem, &MempoolConfig::new("rx", 16)).unwrap();
    let clean =
        rx_status::DD | rx_status::EOF | (rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT);
    let mut out = MbufBatch::with_burst(8);
    // Filled without prepared headers: the fast loop leaves them all.
    let mut s = MbufSlots::new(8);
    assert!(s.fill(&pool, 0, 8));
    for i in 0..8 {
        ring.write(i, RxDesc::writeback(60, clean, 0, 7));
    }
    assert_eq!(s.rx_clean(&ring, 0, 8, 14, 2000, &mut out), (0, 0, true));
    assert!(out.is_empty());
    drop(s);
    // Prepared by refill_rx: taken, two by two and the odd one.
    let mut s = MbufSlots::new(8);
    let tmpl = RxHeaderTemplate::new(1, 2);
    assert!(s.refill_rx(&mut ring, &pool, 0, 8, &tmpl));
    for i in 0..7 {
        ring.write(i, RxDesc::writeback(60 + i, clean, 0, 7));
    }
    let (k, bytes, unusual) = s.rx_clean(&ring, 0, 8, 14, 2000, &mut out);
    assert_eq!((k, bytes, unusual), (7, (60..67).sum::<u64>(), false));
    for (i, m) in out.iter().enumerate() {
        assert_eq!(
            (m.len(), m.rss_hash(), m.port(), m.queue()),
            (60 + i, 7, 1, 2)
        );
    }
    out.clear();
    drop(s);
    assert_eq!(pool.in_use(), 0);
}

/// A small xorshift generator: reproducible inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random write-back: mostly clean hashed whole frames of lengths in
/// range, and now and then each way a descriptor leaves the fast loops
/// (not done, no EOF, an error bit, no hash, a length out of range or with
/// header-split bits).
fn random_writeback(r: &mut Rng, max_len: u16) -> RxDesc {
    use crate::desc::rx_status;
    let flt = rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT;
    let hash = r.next() as u32;
    let len = 14 + r.below(max_len as u64 - 13) as u16;
    let clean = rx_status::DD | rx_status::EOF | flt;
    match r.below(64) {
        0 => RxDesc::writeback(len, 0, 0, hash),
        1 => RxDesc::writeback(len, rx_status::DD | flt, 0, hash),
        2 => RxDesc::writeback(len, clean, 1 << r.below(8), hash),
        3 => RxDesc::writeback(len, rx_status::DD | rx_status::EOF, 0, hash),
        4 => RxDesc::writeback(r.below(14) as u16, clean, 0, hash),
        5 => RxDesc::writeback(max_len + 1 + r.below(64) as u16, clean, 0, hash),
        6 => {
            // A length in range, but header-split bits above it.
            let d = RxDesc::writeback(len, clean, 0, hash);
            let q1 = u64::from_le(d.qw1) | 1 << (52 + r.below(12));
            RxDesc {
                qw1: q1.to_le(),
                ..d
            }
        }
        _ => RxDesc::writeback(len, clean, 0, hash),
    }
}

/// Descriptors per ring in the agreement tests.
const AGREE_N: usize = 64;

/// What both agreement tests set up: a pool, two rings of [`AGREE_N`]
/// descriptors (the first for the vector loops, the second for the scalar
/// ones), a random source, and the count of groups of four the vector loops
/// took, which [`finish`](Self::finish) wants above 1000 (the inputs reached
/// them) with every mbuf back.
struct Agreement<D: DmaDesc> {
    _mem: DmaMemory,
    pool: Mempool,
    rings: [DescRing<D>; 2],
    r: Rng,
    vector_groups: usize,
}

impl<D: DmaDesc> Agreement<D> {
    fn new(what: &str, seed: u64) -> Agreement<D> {
        const N: usize = AGREE_N;
        let d = size_of::<D>();
        let mem = DmaMemory::plain();
        let region = Arc::new(mem.alloc(&format!("{what} rings"), 2 * N * d).unwrap());
        let pool = Mempool::new(&mem, &MempoolConfig::new(what, 3 * N as u32)).unwrap();
        let rings = [
            DescRing::<D>::new(region.clone(), 0, N as u16).unwrap(),
            DescRing::<D>::new(region, N * d, N as u16).unwrap(),
        ];
        Agreement {
            _mem: mem,
            pool,
            rings,
            r: Rng(seed),
            vector_groups: 0,
        }
    }

    /// A trial's run of the ring: any start, any length to its end.
    fn window(&mut self) -> (usize, usize) {
        let start = self.r.below(AGREE_N as u64) as usize;
        let max = self.r.below((AGREE_N - start) as u64 + 1) as usize;
        (start, max)
    }

    fn finish(self) {
        // The inputs did reach the vector loop's groups of four.
        assert!(self.vector_groups > 1000, "{} groups", self.vector_groups);
        assert_eq!(self.pool.in_use(), 0);
    }
}

/// Whether this CPU runs `loops`; if not, the test is skipped (a failure
/// under CI), decided by the CPU's own feature flags.
fn cpu_runs(loops: Loops) -> bool {
    match loops {
        Loops::Avx2 => !nicpoll_testkit::skip_if_missing(&[nicpoll_testkit::Need::Avx2]),
        Loops::Sse41 => {
            #[cfg(target_arch = "x86_64")]
            let has = std::arch::is_x86_feature_detected!("sse4.1")
                && std::arch::is_x86_feature_detected!("ssse3");
            #[cfg(not(target_arch = "x86_64"))]
            let has = false;
            if !has {
                nicpoll_testkit::skip("a CPU with SSE4.1 and SSSE3");
            }
            has
        }
        Loops::Scalar => true,
    }
}

/// The widest loops allowed that make a table run `loops`.
fn max_for(loops: Loops) -> MaxSimd {
    match loops {
        Loops::Avx2 => MaxSimd::Best,
        Loops::Sse41 => MaxSimd::Sse,
        Loops::Scalar => MaxSimd::Scalar,
    }
}

/// The AVX2 receive loop takes exactly what the scalar loops take and
/// writes the same headers, over random runs of descriptors (any start
/// and length, every kind of descriptor that leaves the fast loops, empty
/// slots, buffers shorter than the descriptor's length), and leaves the
/// same slots held. Skipped on a CPU without AVX2 (a failure under CI).
#[test]
fn vector_and_scalar_receive_loops_agree() {
    receive_loops_agree(Loops::Avx2, 0x9E37_79B9_7F4A_7C15);
}

/// The same for the SSE4.1 receive loop (other random runs).
#[test]
fn sse_and_scalar_receive_loops_agree() {
    receive_loops_agree(Loops::Sse41, 0x5851_F42D_4C95_7F2D);
}

fn receive_loops_agree(loops: Loops, seed: u64) {
    if !cpu_runs(loops) {
        return;
    }
    const N: usize = AGREE_N;
    let mut t = Agreement::<RxDesc>::new("rx agree", seed);
    let tmpl = RxHeaderTemplate::new(3, 5);
    for trial in 0..3000 {
        let (start, max) = t.window();
        let r = &mut t.r;
        // The receive path's range: lengths up to `buf_len`.
        let buf_len = [60usize, 1000, 2048][r.below(3) as usize];
        let span = buf_len - 14;
        let descs: Vec<RxDesc> = (0..N)
            .map(|_| random_writeback(r, buf_len as u16))
            .collect();
        let holes: Vec<usize> = (0..N).filter(|_| r.below(100) == 0).collect();
        let mut results = Vec::new();
        for (which, ring) in t.rings.iter_mut().enumerate() {
            let mut s = MbufSlots::new(N);
            let want = if which == 0 { loops } else { Loops::Scalar };
            assert_eq!(s.set_loops(max_for(want)), want);
            assert!(s.refill_rx(ring, &t.pool, 0, N, &tmpl));
            for (i, d) in descs.iter().enumerate() {
                ring.write(i as u16, *d);
            }
            for &i in &holes {
                drop(s.take(i));
            }
            let before: Vec<Option<u64>> =
                (0..N).map(|i| s.is_held(i).then(|| s.rx_iova(i))).collect();
            let mut out = MbufBatch::with_burst(N);
            let (k, bytes, unusual) = s.rx_clean(ring, start, max, 14, span, &mut out);
            let got: Vec<_> = out
                .iter()
                .enumerate()
                .map(|(j, m)| {
                    // The mbuf of slot `start + j`, in order.
                    let iova = m.buf_iova() + m.default_headroom() as u64;
                    assert_eq!(Some(iova), before[start + j], "trial {trial}");
                    (
                        m.len(),
                        // (Meaningful only with its flag.)
                        (m.ol_flags() & nicpoll::mbuf::flags::RX_RSS_HASH != 0)
                            .then(|| m.rss_hash()),
                        m.ol_flags(),
                        m.port(),
                        m.queue(),
                        m.headroom() == m.default_headroom(),
                    )
                })
                .collect();
            let held: Vec<bool> = (0..N).map(|i| s.is_held(i)).collect();
            assert_eq!(got.len(), k, "trial {trial}");
            results.push((k, bytes, unusual, got, held));
            out.clear();
        }
        let (v, sc) = (&results[0], &results[1]);
        assert_eq!(
            (v.0, v.1, v.2),
            (sc.0, sc.1, sc.2),
            "trial {trial}: start {start} max {max} buf_len {buf_len}"
        );
        assert_eq!(v.3, sc.3, "trial {trial}: headers differ");
        assert_eq!(v.4, sc.4, "trial {trial}: held slots differ");
        t.vector_groups += v.0 / 4;
    }
    t.finish();
}

/// A vector receive loop's signature (`avx2::rx_clean`, `sse::rx_clean`).
#[cfg(target_arch = "x86_64")]
type RxLoop = unsafe fn(*const RxDesc, *mut usize, *mut usize, usize, usize, usize) -> (usize, u64);

/// The AVX2 loop on its own: whole groups of four up to the first
/// descriptor of any kind the fast loops leave (and nothing of that
/// group), the bytes of what it took, the lengths at both ends of the
/// range accepted.
#[cfg(target_arch = "x86_64")]
#[test]
fn vector_receive_loop_takes_whole_groups() {
    receive_loop_takes_whole_groups(Loops::Avx2, avx2::rx_clean);
}

/// The same for the SSE4.1 loop.
#[cfg(target_arch = "x86_64")]
#[test]
fn sse_receive_loop_takes_whole_groups() {
    receive_loop_takes_whole_groups(Loops::Sse41, sse::rx_clean);
}

#[cfg(target_arch = "x86_64")]
fn receive_loop_takes_whole_groups(loops: Loops, rx_clean: RxLoop) {
    use crate::desc::rx_status;
    if !cpu_runs(loops) {
        return;
    }
    const N: usize = 16;
    let mem = DmaMemory::plain();
    let region = Arc::new(mem.alloc("rx ring", N * 32).unwrap());
    let mut ring = DescRing::<RxDesc>::new(region, 0, N as u16).unwrap();
    let pool = Mempool::new(&mem, &MempoolConfig::new("rx groups", 2 * N as u32)).unwrap();
    let tmpl = RxHeaderTemplate::new(0, 0);
    let clean =
        rx_status::DD | rx_status::EOF | (rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT);
    let (lo, span) = (14usize, 1000usize);
    let len_of = |i: usize| [lo, lo + span, 64, 1000][i % 4] as u16;
    let bad: [(&str, RxDesc); 5] = [
        ("not done", RxDesc::writeback(64, 0, 0, 1)),
        ("too short", RxDesc::writeback(lo as u16 - 1, clean, 0, 1)),
        (
            "too long",
            RxDesc::writeback((lo + span + 1) as u16, clean, 0, 1),
        ),
        (
            "no hash",
            RxDesc::writeback(64, rx_status::DD | rx_status::EOF, 0, 1),
        ),
        ("error bit", RxDesc::writeback(64, clean, 0x80, 1)),
    ];
    for at in 0..=N {
        let cases = bad.iter().map(|&(w, d)| (Some(w), d));
        for (what, d) in cases.chain([(None, RxDesc::default())]) {
            let mut s = MbufSlots::new(N);
            assert!(s.refill_rx(&mut ring, &pool, 0, N, &tmpl));
            for i in 0..N {
                ring.write(i as u16, RxDesc::writeback(len_of(i), clean, 0, i as u32));
            }
            match (what, d) {
                (Some(_), d) if at < N => ring.write(at as u16, d),
                // An empty slot stops it as well.
                (None, _) if at < N => drop(s.take(at)),
                _ => {}
            }
            let mut dst = [0usize; N];
            // SAFETY: (test) the CPU has the loop's extensions; ring, slots
            // and `dst` hold N entries; the slots were filled by `refill_rx`
            // from a pool whose data room exceeds lo + span (below 2^16).
            let (k, bytes) = unsafe {
                rx_clean(
                    ring.base.as_ptr(),
                    s.slots.as_mut_ptr(),
                    dst.as_mut_ptr(),
                    N,
                    lo,
                    span,
                )
            };
            let want = at / 4 * 4;
            assert_eq!(k, want, "{loops:?}: {what:?} at {at}");
            assert_eq!(bytes, (0..k).map(|i| len_of(i) as u64).sum::<u64>());
            for (i, &p) in dst[..k].iter().enumerate() {
                assert!(!s.is_held(i));
                // SAFETY: (test) taken by the loop: ours now.
                let m = unsafe { Mbuf::from_raw(NonNull::new(p as *mut MbufHeader).unwrap()) };
                assert_eq!(
                    (m.len(), m.rss_hash(), m.ol_flags()),
                    (
                        len_of(i) as usize,
                        i as u32,
                        nicpoll::mbuf::flags::RX_RSS_HASH
                    )
                );
            }
            assert!(dst[k..].iter().all(|&p| p == 0));
            assert_eq!(s.held(), N - k - usize::from(what.is_none() && at < N));
        }
    }
    assert_eq!(pool.in_use(), 0);
}

/// The AVX2 transmit loop writes exactly the descriptors and slots the
/// scalar loops write, over random bursts (any start, lengths from 0 to
/// beyond the limit, data offsets moved, chains), refuses the same packets
/// and leaves the same packets in the batch.
#[test]
fn vector_and_scalar_transmit_loops_agree() {
    transmit_loops_agree(Loops::Avx2, 0x2545_F491_4F6C_DD1D);
}

/// The same for the SSE4.1 transmit loop (other random bursts).
#[test]
fn sse_and_scalar_transmit_loops_agree() {
    transmit_loops_agree(Loops::Sse41, 0x1405_7B7E_F767_814F);
}

fn transmit_loops_agree(loops: Loops, seed: u64) {
    if !cpu_runs(loops) {
        return;
    }
    const N: usize = AGREE_N;
    let mut t = Agreement::<TxDesc>::new("tx agree", seed);
    for trial in 0..3000 {
        let (start, max) = t.window();
        let r = &mut t.r;
        // (0: a limit nothing fits, every packet refused.)
        let max_len = [0usize, 60, 1000, TX_MAX_BUF][r.below(4) as usize];
        // The driver's 17 (TX_MIN_LEN), or any length from 1.
        let min_len = [1usize, TX_MIN_LEN][r.below(2) as usize];
        let burst = r.below(40) as usize;
        // (length, headroom change, a second segment) of each packet:
        // mostly sendable; now and then a chain, which stops the fast loops.
        let shapes: Vec<(usize, isize, bool)> = (0..burst)
            .map(|_| {
                let len = match r.below(40) {
                    0 => 0,
                    1 => max_len + 1 + r.below(100) as usize,
                    2 => r.below(TX_MIN_LEN as u64 + 1) as usize,
                    _ => 1 + r.below(max_len.max(1) as u64) as usize,
                };
                (len.min(1500), r.below(64) as isize - 32, r.below(30) == 0)
            })
            .collect();
        let mut results = Vec::new();
        for (which, ring) in t.rings.iter_mut().enumerate() {
            let mut s = MbufSlots::new(N);
            let want = if which == 0 { loops } else { Loops::Scalar };
            assert_eq!(s.set_loops(max_for(want)), want);
            ring.clear();
            let mut b = MbufBatch::with_burst(burst.max(1));
            let mut iovas = Vec::new();
            for &(len, shift, chained) in &shapes {
                let mut m = t.pool.alloc().unwrap();
                if shift < 0 {
                    assert!(m.prepend(-shift as usize).is_some());
                } else {
                    assert!(m.set_len(shift as usize) && m.adj(shift as usize));
                }
                assert!(m.set_len(len), "len {len}");
                if chained {
                    let mut tail = t.pool.alloc().unwrap();
                    assert!(tail.set_len(10));
                    assert!(m.chain(tail).is_ok());
                }
                iovas.push(m.data_iova());
                b.push(m).unwrap();
            }
            let (used, taken, bytes) = s.tx_fill(ring, start, max, &mut b, min_len, max_len);
            // Each descriptor as (index of its packet, qword 1); each
            // slot as the index of its packet's IOVA.
            let descs: Vec<_> = (0..N as u16)
                .map(|i| {
                    let d = ring.read(i);
                    let pkt = iovas.iter().position(|&a| a == u64::from_le(d.addr));
                    (pkt, u64::from_le(d.cmd_type_offset_bsz))
                })
                .collect();
            let slots: Vec<Option<usize>> = (0..N)
                .map(|i| {
                    let iova = s.is_held(i).then(|| s.take(i).unwrap().data_iova());
                    iova.map(|a| iovas.iter().position(|&x| x == a).unwrap())
                })
                .collect();
            results.push((used, taken, bytes, descs, slots, b.len()));
            b.clear();
        }
        let (v, sc) = (&results[0], &results[1]);
        assert_eq!(
            (v.0, v.1, v.2, v.5),
            (sc.0, sc.1, sc.2, sc.5),
            "trial {trial}: start {start} max {max} lengths {min_len}..={max_len}"
        );
        // Every descriptor a packet got carries a length in the range.
        for (pkt, qw1) in &v.3 {
            if pkt.is_some() {
                let len = ((qw1 >> 34) & 0x3FFF) as usize;
                assert!(
                    (min_len..=max_len).contains(&len),
                    "trial {trial}: a {len}-byte packet written ({min_len}..={max_len})"
                );
            }
        }
        assert_eq!(v.3, sc.3, "trial {trial}: descriptors differ");
        assert_eq!(v.4, sc.4, "trial {trial}: slots differ");
        t.vector_groups += v.0 / 4;
    }
    t.finish();
}

/// The AVX2 transmit loop on its own: whole groups of four up to the
/// first length out of range (and nothing of that group), each the
/// scalar path's descriptor, the bytes of what it took.
#[cfg(target_arch = "x86_64")]
#[test]
fn vector_transmit_loop_takes_whole_groups() {
    transmit_loop_takes_whole_groups(Loops::Avx2, avx2::tx_fill);
}

/// The same for the SSE4.1 loop.
#[cfg(target_arch = "x86_64")]
#[test]
fn sse_transmit_loop_takes_whole_groups() {
    transmit_loop_takes_whole_groups(Loops::Sse41, sse::tx_fill);
}

/// A vector transmit loop's signature (`avx2::tx_fill`, `sse::tx_fill`).
#[cfg(target_arch = "x86_64")]
type TxLoop = unsafe fn(*const usize, *mut TxDesc, *mut usize, usize, usize, usize) -> (usize, u64);

#[cfg(target_arch = "x86_64")]
fn transmit_loop_takes_whole_groups(loops: Loops, tx_fill: TxLoop) {
    if !cpu_runs(loops) {
        return;
    }
    const N: usize = 16;
    let max_len = 1000;
    let min_len = TX_MIN_LEN;
    let mem = DmaMemory::plain();
    let region = Arc::new(mem.alloc("tx ring", N * 16).unwrap());
    let mut ring = DescRing::<TxDesc>::new(region, 0, N as u16).unwrap();
    let pool = Mempool::new(&mem, &MempoolConfig::new("tx groups", N as u32)).unwrap();
    let len_of = |i: usize| [min_len, max_len, 60, 1400 - max_len][i % 4];
    for at in 0..=N {
        for bad_len in [0, 1, min_len - 1, max_len + 1] {
            ring.clear();
            let mut s = MbufSlots::new(N);
            let src: Vec<usize> = (0..N)
                .map(|i| {
                    let mut m = pool.alloc().unwrap();
                    assert!(m.prepend(i).is_some());
                    assert!(m.set_len(if i == at { bad_len } else { len_of(i) }));
                    m.into_raw().as_ptr() as usize
                })
                .collect();
            // SAFETY: (test) the CPU has the loop's extensions; `src` holds
            // N elements we own, the ring and the slots N empty entries.
            let (k, bytes) = unsafe {
                tx_fill(
                    src.as_ptr(),
                    ring.base.as_ptr(),
                    s.slots.as_mut_ptr(),
                    N,
                    min_len,
                    max_len,
                )
            };
            assert_eq!(k, at / 4 * 4, "{loops:?}: length {bad_len} at {at}");
            assert_eq!(bytes, (0..k).map(|i| len_of(i) as u64).sum::<u64>());
            for (i, &p) in src.iter().enumerate() {
                let m = if i < k {
                    assert_eq!(s.slots[i], p);
                    s.take(i).unwrap()
                } else {
                    assert!(!s.is_held(i));
                    // SAFETY: (test) the loop did not take it: still ours,
                    // from `src`.
                    unsafe { Mbuf::from_raw(NonNull::new(p as *mut MbufHeader).unwrap()) }
                };
                let want = if i < k {
                    TxDesc::packet_fitting(m.data_iova(), len_of(i))
                } else {
                    TxDesc::default()
                };
                assert_eq!(ring.read(i as u16), want, "descriptor {i}");
            }
        }
    }
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn pool_shortage_takes_nothing() {
    let mem = DmaMemory::plain();
    let pool = Mempool::new(&mem, &MempoolConfig::new("short", 4)).unwrap();
    let mut s = MbufSlots::new(8);
    assert!(!s.fill(&pool, 0, 8));
    assert_eq!(s.held(), 0);
    assert_eq!(pool.in_use(), 0);
}
