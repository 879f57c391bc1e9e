//! Mempool, mbuf and batch behaviour.

use super::*;
use crate::lcore;
use crate::memory::{DmaMemory, IovaMode, MemoryConfig};
fn frame(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

fn pool(n: u32, cache: u32) -> (DmaMemory, Mempool) {
    let mem = DmaMemory::plain();
    let mut cfg = MempoolConfig::new("t", n);
    cfg.cache_size = cache;
    let p = Mempool::new(&mem, &cfg).unwrap();
    (mem, p)
}

#[test]
fn counts_follow_allocations_and_drops() {
    let (_m, p) = pool(64, 0);
    assert_eq!((p.size(), p.available(), p.in_use()), (64, 64, 0));
    let a = p.alloc().unwrap();
    let b = p.alloc().unwrap();
    assert_eq!(p.in_use(), 2);
    drop(a);
    assert_eq!(p.in_use(), 1);
    drop(b);
    assert_eq!(p.stats().available, 64);
    let all: Vec<Mbuf> = (0..64).map(|_| p.alloc().unwrap()).collect();
    assert!(p.alloc().is_none(), "an empty pool says so");
    drop(all);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn elements_are_aligned_to_the_stride_and_distinct() {
    let (_m, p) = pool(32, 0);
    assert_eq!(p.stride(), 2048);
    let v: Vec<Mbuf> = (0..32).map(|_| p.alloc().unwrap()).collect();
    let mut addrs: Vec<usize> = v.iter().map(|m| m.element_addr() as usize).collect();
    assert!(addrs.iter().all(|a| a % 2048 == 0));
    // Fresh data sits at the same element offset whatever the header's color.
    assert!(
        v.iter()
            .all(|m| m.data().as_ptr() as usize - m.element_addr() as usize
                == crate::mbuf::ELEMENT_DATA_OFFSET)
    );
    // Headers are spread over the colors (one 64-byte step each).
    let mut colors: Vec<usize> = v
        .iter()
        .map(|m| m.buf_addr() as usize - m.element_addr() as usize)
        .collect();
    colors.sort_unstable();
    colors.dedup();
    assert_eq!(colors, vec![64, 128, 192, 256]);
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), 32);
    let mut cfg = MempoolConfig::new("big", 4);
    cfg.buf_size = 2048;
    let mem = DmaMemory::plain();
    assert_eq!(Mempool::new(&mem, &cfg).unwrap().stride(), 4096);
    cfg.buf_size = 65536;
    assert!(
        Mempool::new(&mem, &cfg)
            .unwrap_err()
            .to_string()
            .contains("too large")
    );
    cfg.buf_size = 1000;
    cfg.cache_size = 600;
    assert!(
        Mempool::new(&mem, &cfg)
            .unwrap_err()
            .to_string()
            .contains("--mbcache")
    );
}

#[test]
fn mbuf_data_operations_respect_bounds() {
    let (_m, p) = pool(4, 0);
    let mut m = p.alloc().unwrap();
    let h = m.headroom();
    assert_eq!(m.len(), 0);
    assert!((128..=320).contains(&h), "{h}");
    assert_eq!(m.capacity(), 2048 - crate::mbuf::ELEMENT_DATA_OFFSET);
    assert!(m.append(10).is_some());
    m.data_mut().copy_from_slice(&[7; 10]);
    assert!(m.prepend(4).is_some());
    assert_eq!(m.len(), 14);
    assert_eq!(m.headroom(), h - 4);
    assert!(m.adj(4));
    assert_eq!(m.data(), &[7; 10]);
    assert!(m.trim(3));
    assert_eq!(m.len(), 7);
    assert!(
        !m.trim(8) && !m.adj(8),
        "cannot remove more than the packet"
    );
    assert!(m.prepend(h + 1).is_none(), "headroom is finite");
    assert!(m.append(m.tailroom() + 1).is_none());
    assert!(!m.set_len(m.capacity() + 1));
    assert!(!m.set_data(2000, 100), "offset + length beyond the buffer");
    // A sum that wraps is no way around the check.
    assert!(!m.set_data(usize::MAX - 5, 10));
    assert!(!m.set_data(10, usize::MAX - 5));
    assert!(m.set_data(m.buf_len(), 0) && m.set_data(0, m.buf_len()));
    assert!(m.set_data(0, 100));
    assert_eq!(m.data_iova(), m.buf_iova());
    m.set_rss_hash(0xabcd);
    assert_eq!(m.rss_hash(), 0xabcd);
    assert!(m.ol_flags() & crate::mbuf::flags::RX_RSS_HASH != 0);
    m.reset();
    assert_eq!((m.len(), m.headroom(), m.ol_flags()), (0, h, 0));
    assert_eq!(m.pool_name(), "t");
}

#[test]
fn fresh_mbufs_are_reset() {
    let (_m, p) = pool(1, 0);
    let mut m = p.alloc().unwrap();
    m.set_data(10, 50);
    m.set_ol_flags(0xff);
    drop(m);
    let m = p.alloc().unwrap();
    assert_eq!(
        (m.len(), m.headroom(), m.ol_flags()),
        (0, m.default_headroom(), 0)
    );
}

#[test]
fn batch_front_back_and_tail_semantics() {
    let (_m, p) = pool(600, 0);
    let mut b = MbufBatch::with_burst(8);
    assert_eq!(b.spare(), 8);
    assert!(p.alloc_bulk(&mut b, 5));
    assert!(!p.alloc_bulk(&mut b, 4), "more than spare is refused");
    assert_eq!(b.len(), 5);
    for (i, m) in b.iter_mut().enumerate() {
        m.set_len(i + 1);
    }
    let first = b.pop_front().unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(b.free_front(2), 2);
    assert_eq!(
        b.as_slice().iter().map(|m| m.len()).collect::<Vec<_>>(),
        vec![4, 5]
    );
    // Appending after taking from the front compacts instead of overflowing.
    let mut big = MbufBatch::new();
    assert!(p.alloc_bulk(&mut big, 510));
    big.free_front(500);
    assert!(p.alloc_bulk(&mut big, 20));
    assert_eq!(big.len(), 30);
    let freed = big.retain_mut(|m| {
        m.set_len(1);
        false
    });
    assert_eq!(freed, 30);
    assert!(big.is_empty());
    let mut one = MbufBatch::with_burst(1);
    one.push(p.alloc().unwrap()).unwrap();
    let back = one.push(p.alloc().unwrap()).unwrap_err();
    drop(back);
    drop((first, b, big, one));
    assert_eq!(p.in_use(), 0);
}

#[test]
fn lcore_caches_keep_hot_buffers_and_count_as_available() {
    let (_m, p) = pool(2048, 64);
    let p2 = p.clone();
    std::thread::spawn(move || {
        let _g = lcore::register(40).unwrap();
        let mut b = MbufBatch::with_burst(32);
        assert!(p2.alloc_bulk(&mut b, 32));
        let first = b.as_slice()[0].buf_addr() as usize;
        b.clear();
        // LIFO: the last freed comes back first.
        assert!(p2.alloc_bulk(&mut b, 32));
        assert!(b.iter().any(|m| m.buf_addr() as usize == first));
        b.clear();
        let s = p2.stats();
        assert!(s.cached > 0, "{s:?}");
        assert_eq!(s.in_use, 0);
        p2.flush_cache();
        assert_eq!(p2.stats().cached, 0);
    })
    .join()
    .unwrap();
    assert_eq!(p.in_use(), 0);
}

#[test]
fn many_lcores_share_one_pool_without_losing_buffers() {
    let (_m, p) = pool(4096, 128);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let _g = lcore::register(50 + t).unwrap();
                let mut held: Vec<MbufBatch> = Vec::new();
                for round in 0..2000 {
                    let mut b = MbufBatch::with_burst(32);
                    if p.alloc_bulk(&mut b, 1 + (round % 32)) {
                        held.push(b);
                    }
                    if held.len() > 8 {
                        held.remove(0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = p.stats();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.available, 4096);
}

#[test]
fn dropping_a_pool_with_mbufs_out_keeps_them_valid() {
    let (_m, p) = pool(8, 0);
    let mut m = p.alloc().unwrap();
    drop(p);
    // The pool leaked itself: the mbuf still works and can be freed.
    assert!(m.set_len(60));
    m.data_mut().copy_from_slice(&frame(60));
    drop(m);
}

#[test]
fn mbuf_ring_moves_and_frees() {
    let (_m, p) = pool(64, 0);
    let r = MbufRing::new(16, false);
    let mut b = MbufBatch::with_burst(32);
    assert!(p.alloc_bulk(&mut b, 20));
    assert_eq!(r.enqueue_from(&mut b), 16);
    assert_eq!(b.len(), 4, "the unsent tail stays");
    let mut out = MbufBatch::with_burst(10);
    assert_eq!(r.dequeue_into(&mut out), 10);
    assert_eq!(r.len(), 6);
    drop(r);
    drop((b, out));
    assert_eq!(p.in_use(), 0, "a dropped ring frees what it held");
}

#[test]
fn pa_mode_keeps_every_element_inside_one_page() {
    use nicpoll_testkit::{Need, skip_if_missing};
    // 2048 elements of 2 KiB: 4 MiB, three 2 MiB pages with the ring.
    let needs = [
        Need::PhysicalAddresses,
        Need::Hugetlbfs,
        Need::FreeHugepages(4),
    ];
    let _hugepages = crate::memory::HUGEPAGE_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if skip_if_missing(&needs) {
        return;
    }
    let mem = DmaMemory::new(MemoryConfig {
        iova_mode: Some(IovaMode::Pa),
        file_prefix: format!("nptest{}", std::process::id()),
        ..MemoryConfig::default()
    })
    .unwrap_or_else(|e| panic!("PA mode with pagemap and hugepages available: {e}"));
    let cfg = MempoolConfig::new("pa", 2048);
    let p =
        Mempool::new(&mem, &cfg).unwrap_or_else(|e| panic!("a PA pool with free hugepages: {e}"));
    let r = p.region();
    for i in 0..p.size() as usize {
        assert!(
            r.is_iova_contiguous(i * p.stride(), p.stride()),
            "element {i} straddles a page"
        );
    }
    let m = p.alloc().unwrap();
    let off = m.buf_addr() as usize - r.as_ptr() as usize;
    assert_eq!(m.buf_iova(), r.iova(off));
    assert_ne!(m.buf_iova(), m.buf_addr() as u64, "PA is not the VA");
}

#[test]
fn raw_batch_transfers_keep_ownership_and_order() {
    let (_m, p) = pool(64, 0);
    let mut a = MbufBatch::with_burst(8);
    for i in 0..6u8 {
        let mut m = p.alloc().unwrap();
        assert!(m.set_len(1));
        m.data_mut()[0] = i;
        a.push(m).unwrap();
    }
    // Two leave `a` as raw pointers (a transmit path) ...
    let taken: Vec<usize> = a.take_front_raw(2).to_vec();
    assert_eq!(a.len(), 4);
    assert_eq!(a.as_slice()[0].data(), &[2]);
    assert_eq!(p.in_use(), 6, "taken, not freed");
    // ... and enter `b` through its spare slots (a receive path).
    let mut b = MbufBatch::with_burst(4);
    b.push(p.alloc().unwrap()).unwrap();
    let spare = b.spare_raw(3);
    assert_eq!(spare.len(), 3);
    spare[..2].copy_from_slice(&taken);
    // SAFETY: the two pointers came from `take_front_raw`: ours to hand over.
    unsafe { b.commit_raw(2) };
    assert_eq!(b.len(), 3);
    assert_eq!(
        (b.as_slice()[1].data(), b.as_slice()[2].data()),
        (&[0u8][..], &[1u8][..])
    );
    // Everything of `a` can leave, which empties it.
    let rest: Vec<usize> = a.take_front_raw(4).to_vec();
    assert!(a.is_empty());
    b.clear();
    assert_eq!(p.in_use(), 4, "the four taken from `a` are the caller's");
    for r in rest {
        // SAFETY: taken from `a` above and not used since.
        drop(unsafe { Mbuf::from_raw(std::ptr::NonNull::new(r as *mut MbufHeader).unwrap()) });
    }
    assert_eq!(p.in_use(), 0);
}

#[test]
#[should_panic(expected = "spare_raw")]
fn spare_raw_refuses_more_than_the_burst() {
    let mut b = MbufBatch::with_burst(4);
    let _ = b.spare_raw(5);
}

#[test]
fn rx_header_template_prepares_what_reset_port_queue_do() {
    use crate::mbuf::{RxHeaderTemplate, flags};
    let (_m, p) = pool(16, 0);
    let t = RxHeaderTemplate::new(7, 0xBEEF);
    // Every color (header position) of element, each dirtied first.
    let mut raw = [0usize; 8];
    // SAFETY: the elements are ours until given back below.
    assert!(unsafe { p.alloc_raw(&mut raw) });
    for &r in &raw {
        let h = std::ptr::NonNull::new(r as *mut MbufHeader).unwrap();
        // SAFETY: `r` is ours; the Mbufs below are turned back into raw pointers.
        let mut a = unsafe { Mbuf::from_raw(h) };
        assert!(a.set_data(3, 100));
        a.set_ol_flags(0xFF);
        a.set_vlan_tci(9);
        a.set_rss_hash(0x1234);
        a.set_timestamp(77);
        a.set_port(1);
        a.set_queue(2);
        // The reference: reset + set_port + set_queue, on a copy of the header.
        // SAFETY: a plain copy of a valid header (no Drop).
        let mut expect = unsafe { std::ptr::read(h.as_ptr()) };
        {
            // SAFETY: a header copy no pool knows of; never dropped (into_raw).
            let mut b = unsafe { Mbuf::from_raw(std::ptr::NonNull::from(&mut expect)) };
            b.reset();
            b.set_port(7);
            b.set_queue(0xBEEF);
            let _ = b.into_raw();
        }
        let _ = a.into_raw();
        // SAFETY: `r` is ours, no reference to its header is alive.
        let iova = unsafe { t.apply(h) };
        // SAFETY: a plain copy of a valid header.
        let got = unsafe { std::ptr::read(h.as_ptr()) };
        // The flags are left to the receiver.
        assert_eq!(
            got.ol_flags,
            0xFF | flags::RX_RSS_HASH | flags::RX_TIMESTAMP
        );
        expect.ol_flags = got.ol_flags;
        assert_eq!(format!("{got:?}"), format!("{expect:?}"));
        // SAFETY: as above; turned back into a raw pointer below.
        let m = unsafe { Mbuf::from_raw(h) };
        assert_eq!(iova, m.buf_iova() + m.default_headroom() as u64);
        assert_eq!(iova, m.data_iova(), "fresh data offset");
        assert_eq!((m.len(), m.port(), m.queue()), (0, 7, 0xBEEF));
        let _ = m.into_raw();
    }
    // SAFETY: ours, freed once.
    assert_eq!(unsafe { crate::mbuf::free_raw(&raw) }, 8);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn set_len_unchecked_sets_the_length() {
    let (_m, p) = pool(4, 0);
    let mut m = p.alloc().unwrap();
    let cap = m.capacity();
    // SAFETY: within the capacity.
    unsafe { m.set_len_unchecked(cap) };
    assert_eq!(m.len(), cap);
    assert_eq!(m.tailroom(), 0);
}

#[test]
fn free_raw_returns_every_mbuf_of_one_or_several_pools() {
    let (_m, a) = pool(64, 0);
    let (_n, b) = pool(64, 32);
    let lc = lcore::register(41).unwrap();
    // SAFETY: every caller below frees elements it owns, each exactly once.
    let free = |p: &[usize]| unsafe { crate::mbuf::free_raw(p) };
    // SAFETY: every caller below then owns the elements it gets.
    let get = |pool: &Mempool, out: &mut [usize]| unsafe { pool.alloc_raw(out) };
    // One pool: the single bulk put.
    let mut raw = [0usize; 32];
    assert!(get(&a, &mut raw));
    assert_eq!(a.in_use(), 32);
    assert_eq!(free(&raw), 32);
    assert_eq!(a.in_use(), 0);
    // Mixed pools, interleaved: the fallback, per run.
    let mut x = [0usize; 16];
    let mut y = [0usize; 16];
    assert!(get(&a, &mut x));
    assert!(get(&b, &mut y));
    let mut mixed = Vec::new();
    for i in 0..16 {
        mixed.push(x[i]);
        mixed.push(y[i]);
    }
    // One foreign element at the end only.
    assert_eq!(free(&mixed[..31]), 31);
    assert_eq!(free(&mixed[31..]), 1);
    assert_eq!((a.in_use(), b.in_use()), (0, 0));
    assert!(get(&a, &mut x));
    assert!(get(&b, &mut y[..1]));
    let own = x[15];
    x[15] = y[0];
    assert_eq!(free(&x), 16);
    assert_eq!(
        (a.in_use(), b.in_use()),
        (1, 0),
        "x's own 16th is still out"
    );
    assert_eq!(free(&[own]), 1);
    assert_eq!(a.in_use(), 0);
    assert_eq!(free(&[]), 0);
    // Empty slots (0) are skipped, first or among the others.
    assert!(get(&a, &mut x[..3]));
    let slots = [0, x[0], 0, x[1], x[2], 0];
    assert_eq!(free(&slots), 3);
    assert!(get(&a, &mut x[..2]));
    assert_eq!(free(&[x[0], 0, x[1]]), 2);
    assert_eq!(free(&[0, 0]), 0);
    assert_eq!((a.in_use(), b.in_use()), (0, 0));
    drop(lc);
}

/// A chain head given to `free_raw` (which reads no header in release
/// builds) would leak its other segments: debug builds refuse it. The way a
/// raw transmit path frees a chain, segment by segment after
/// `split_first`, gets every buffer back.
#[test]
fn free_raw_refuses_a_chain_head_in_debug_builds_and_takes_its_segments() {
    let (_m, p) = pool(64, 0);
    let head = chain_of(&p, &[100, 200, 300]);
    assert_eq!(p.in_use(), 3);
    // Apart, as a transmit path that puts one segment per descriptor does.
    let mut raw = Vec::new();
    let mut rest = Some(head);
    while let Some(m) = rest {
        let (first, more) = m.split_first();
        raw.push(first.into_raw().as_ptr() as usize);
        rest = more;
    }
    // SAFETY: three single segments this test owns, each freed once.
    assert_eq!(unsafe { crate::mbuf::free_raw(&raw) }, 3);
    assert_eq!(p.in_use(), 0);
    if cfg!(debug_assertions) {
        let head = chain_of(&p, &[100, 200]);
        let raw = [head.into_raw().as_ptr() as usize];
        // SAFETY: the test owns the chain; free_raw refuses it before
        // touching the pool (the chain stays out, deliberately).
        let r = std::panic::catch_unwind(|| unsafe { crate::mbuf::free_raw(&raw) });
        let msg = r.expect_err("free_raw must refuse a chain head");
        let msg = msg
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| msg.downcast_ref::<&str>().copied())
            .unwrap_or("");
        assert!(msg.contains("first segment of a chain"), "{msg}");
        assert_eq!(p.in_use(), 2);
    }
}

/// A `keep` closure that panics: the packet it was given is freed once (by
/// the unwinding), the batch keeps the ones kept before and the ones not yet
/// looked at, and nothing is freed twice.
#[test]
fn retain_mut_survives_a_panicking_closure() {
    let (_m, p) = pool(64, 0);
    let mut b = MbufBatch::with_burst(8);
    for i in 0..6 {
        let mut m = p.alloc().unwrap();
        assert!(m.set_len(i + 1));
        b.push(m).unwrap();
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        b.retain_mut(|m| match m.len() {
            2 => false,
            4 => panic!("a closure that panics"),
            _ => true,
        })
    }));
    assert!(r.is_err());
    // 2 freed by the closure's answer, 4 by the unwinding; 1, 3, 5, 6 left.
    assert_eq!(
        b.iter().map(|m| m.len()).collect::<Vec<_>>(),
        vec![1, 3, 5, 6]
    );
    assert_eq!(p.in_use(), 4);
    drop(b);
    assert_eq!(p.in_use(), 0);
    assert_eq!(p.stats().available, p.stats().size, "nothing freed twice");
}

#[test]
fn an_mbuf_leads_back_to_its_pool_while_the_pool_lives() {
    let (_mem, p) = pool(8, 0);
    let m = p.alloc().unwrap();
    let again = m.mempool().expect("the pool has a handle");
    assert_eq!(again.region().as_ptr(), p.region().as_ptr());
    assert_eq!(again.name(), p.name());
    drop(again);
    drop(p);
    // The pool was dropped with this mbuf out: its memory is kept (leaked),
    // but no handle can be made any more.
    assert!(m.mempool().is_none());
    let _ = m.into_raw();
}

/// Strides from 2 KiB to 64 KiB, the smallest power of two that holds the
/// buffer size (headroom + data room, DPDK's `--mbuf-size`) after the header
/// and its colors; DPDK's limit, 65535, gets the largest element.
#[test]
fn buffer_sizes_up_to_dpdks_limit_get_power_of_two_strides() {
    let stride = |buf_size: u32| {
        let mut c = MempoolConfig::new("s", 4);
        c.buf_size = buf_size;
        c.stride()
    };
    let room = |s: usize| s - crate::mbuf::ELEMENT_DATA_OFFSET;
    for (buf, want) in [
        (256u32, 2048usize),
        (1792, 2048),
        (1793, 4096),
        (2176, 4096), // DPDK's default --mbuf-size
        (9216 + 128, 16384),
        (9216, 16384),
        (8192 - 256, 8192),
        (8192 - 255, 16384),
        (16384, 32768),
        (65535 - 255, 65536),
        (65535, 65536),
    ] {
        let s = stride(buf).unwrap();
        assert_eq!(s, want, "buf_size {buf}");
        assert!(s.is_power_of_two());
        // The data room asked for (buf_size - 128) fits, but at the top.
        if buf as usize - 128 <= MAX_DATA_ROOM {
            assert!(room(s) >= buf as usize - 128, "buf_size {buf}");
        }
    }
    assert_eq!(room(65536), MAX_DATA_ROOM);
    assert_eq!(MAX_DATA_ROOM, 65152);
    let e = stride(65536).unwrap_err().to_string();
    assert!(e.contains("too large") && e.contains("65535"), "{e}");
}

/// Big elements from plain memory (4 KiB pages) are still aligned to their
/// stride, every header's offsets fit 16 bits, and a frame as big as the data
/// room goes in and comes out whole.
#[test]
fn big_elements_are_aligned_and_hold_their_data_room() {
    let mem = DmaMemory::plain();
    for buf_size in [4096u32, 9216, 16384, 65535] {
        let mut cfg = MempoolConfig::new("big", 6);
        cfg.buf_size = buf_size;
        let p = Mempool::new(&mem, &cfg).unwrap();
        let stride = p.stride();
        assert_eq!(p.region().as_ptr() as usize % stride, 0, "{buf_size}");
        let mut v: Vec<Mbuf> = (0..6).map(|_| p.alloc().unwrap()).collect();
        for m in &mut v {
            assert_eq!(m.element_addr() as usize % stride, 0);
            assert_eq!(m.capacity(), p.data_room());
            assert_eq!(m.buf_len(), m.default_headroom() + p.data_room());
            let f = frame(p.data_room());
            assert!(m.set_len(f.len()));
            m.data_mut().copy_from_slice(&f);
            assert!(!m.set_len(f.len() + 1));
        }
        for m in &v {
            assert_eq!(m.data(), &frame(p.data_room())[..]);
            assert_eq!(m.data_iova() - m.buf_iova(), m.default_headroom() as u64);
        }
        drop(v);
        assert_eq!(p.in_use(), 0);
    }
}

/// Build a chain of `lens` segments, each filled with the packet's bytes
/// `frame(total)` in order.
fn chain_of(p: &Mempool, lens: &[usize]) -> Mbuf {
    let total: usize = lens.iter().sum();
    let f = frame(total);
    let mut at = 0;
    let mut head: Option<Mbuf> = None;
    for &l in lens {
        let mut m = p.alloc().unwrap();
        assert!(m.set_len(l));
        m.data_mut().copy_from_slice(&f[at..at + l]);
        at += l;
        match head.as_mut() {
            None => head = Some(m),
            Some(h) => h.chain(m).unwrap(),
        }
    }
    head.unwrap()
}

fn bytes_of(m: &Mbuf) -> Vec<u8> {
    m.segments().flat_map(|s| s.iter().copied()).collect()
}

#[test]
fn a_chain_is_one_packet_of_several_segments() {
    let (_m, p) = pool(64, 0);
    let single = chain_of(&p, &[100]);
    assert_eq!(
        (single.nb_segs(), single.pkt_len(), single.is_chained()),
        (1, 100, false)
    );
    let mut c = chain_of(&p, &[1000, 1664, 7]);
    assert_eq!((c.nb_segs(), c.pkt_len(), c.len()), (3, 2671, 1000));
    assert!(c.is_chained());
    assert_eq!(p.in_use(), 4);
    assert_eq!(
        c.segments().map(<[u8]>::len).collect::<Vec<_>>(),
        vec![1000, 1664, 7]
    );
    assert_eq!(bytes_of(&c), frame(2671));
    // copy_out from any offset, across segment boundaries.
    for (off, n) in [(0, 2671), (999, 3), (1000, 1664), (2663, 100), (2671, 5)] {
        let mut dst = vec![0u8; n];
        let got = c.copy_out(off, &mut dst);
        let want = n.min(2671 - off.min(2671));
        assert_eq!(got, want, "copy_out({off}, {n})");
        assert_eq!(&dst[..got], &frame(2671)[off..off + got]);
    }
    // copy_in across a boundary, within the packet only.
    assert_eq!(c.copy_in(998, &[0xee; 4]), 4);
    assert_eq!(c.copy_in(2669, &[0xdd; 4]), 2);
    let b = bytes_of(&c);
    assert_eq!(&b[998..1002], &[0xee; 4]);
    assert_eq!(&b[2669..], &[0xdd; 2]);
    // The first segment's operations keep the packet length.
    assert!(c.prepend(14).is_some());
    assert_eq!((c.len(), c.pkt_len()), (1014, 2685));
    assert!(c.adj(14));
    assert!(c.set_len(900));
    assert_eq!(c.pkt_len(), 2571);
    assert!(c.set_data(c.headroom(), 1000));
    assert_eq!(c.pkt_len(), 2671);
    // The packet's end is the last segment's.
    assert_eq!(c.append(3).map(|b| b.len()), Some(3));
    assert_eq!(c.pkt_len(), 2674);
    assert_eq!(c.segments().last().unwrap().len(), 10);
    assert!(c.trim(10));
    assert!(!c.trim(1), "the last segment is empty now");
    assert_eq!(c.pkt_len(), 2664);
    drop(c);
    drop(single);
    assert_eq!(p.in_use(), 0, "dropping a chain frees every segment");
}

#[test]
fn chains_split_linearize_and_reset() {
    let (_m, p) = pool(64, 0);
    // split_first: the first segment alone, the rest a packet of its own.
    let c = chain_of(&p, &[10, 20, 30]);
    let (first, rest) = c.split_first();
    assert_eq!((first.nb_segs(), first.pkt_len()), (1, 10));
    let rest = rest.unwrap();
    assert_eq!((rest.nb_segs(), rest.pkt_len(), rest.len()), (2, 50, 20));
    assert_eq!(bytes_of(&rest), frame(60)[10..].to_vec());
    let (second, last) = rest.split_first();
    let last = last.unwrap();
    assert_eq!(
        (second.pkt_len(), last.pkt_len(), last.nb_segs()),
        (20, 30, 1)
    );
    assert!(last.split_first().1.is_none());
    assert_eq!(p.in_use(), 2, "each segment freed on its own");
    drop(first);
    assert_eq!(p.in_use(), 1);
    drop(second);
    assert_eq!(p.in_use(), 0);
    // linearize: into the first buffer when it fits.
    let mut c = chain_of(&p, &[100, 200, 300]);
    assert!(c.linearize());
    assert_eq!((c.nb_segs(), c.len(), c.pkt_len()), (1, 600, 600));
    assert_eq!(c.data(), &frame(600)[..]);
    assert_eq!(p.in_use(), 1);
    drop(c);
    let mut c = chain_of(&p, &[1600, 100]);
    assert!(!c.linearize(), "1700 bytes do not fit a 1664-byte room");
    assert_eq!((c.nb_segs(), c.pkt_len()), (2, 1700));
    // reset frees the other segments.
    c.reset();
    assert_eq!((c.nb_segs(), c.pkt_len()), (1, 0));
    assert_eq!(p.in_use(), 1);
    drop(c);
    assert_eq!(p.in_use(), 0);
}

#[test]
fn chains_have_at_most_max_segs_segments() {
    let (_m, p) = pool(600, 0);
    let mut head = p.alloc().unwrap();
    for _ in 1..crate::mbuf::MAX_SEGS {
        head.chain(p.alloc().unwrap()).unwrap();
    }
    assert_eq!(head.nb_segs(), crate::mbuf::MAX_SEGS);
    let extra = p.alloc().unwrap();
    let back = head.chain(extra).unwrap_err();
    drop(back);
    let mut asm = crate::mbuf::RxChain::new();
    asm.push(head).unwrap();
    assert!(asm.push(p.alloc().unwrap()).is_err());
    assert_eq!(asm.discard(), crate::mbuf::MAX_SEGS);
    assert!(asm.is_empty());
    assert_eq!(p.in_use(), 0);
}

/// The receive assembler appends in order, keeps its state across calls (a
/// frame straddling bursts) and frees what it discards.
#[test]
fn rx_chain_assembles_frames_segment_by_segment() {
    let (_m, p) = pool(64, 0);
    let f = frame(5000);
    let mut asm = crate::mbuf::RxChain::new();
    assert!(asm.finish().is_none());
    for piece in f.chunks(1664) {
        let mut m = p.alloc().unwrap();
        m.append(piece.len()).unwrap().copy_from_slice(piece);
        asm.push(m).unwrap();
    }
    assert_eq!((asm.nb_segs(), asm.pkt_len()), (4, 5000));
    let pkt = asm.finish().unwrap();
    assert!(asm.is_empty());
    assert_eq!(bytes_of(&pkt), f);
    assert_eq!(pkt.nb_segs(), 4);
    // A chain pushed whole keeps the tail at its end.
    let mut asm = crate::mbuf::RxChain::new();
    asm.push(chain_of(&p, &[1, 2])).unwrap();
    asm.push(chain_of(&p, &[3, 4])).unwrap();
    asm.push(chain_of(&p, &[5])).unwrap();
    let c = asm.finish().unwrap();
    assert_eq!(
        c.segments().map(<[u8]>::len).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(c.pkt_len(), 15);
    asm.push(p.alloc().unwrap()).unwrap();
    asm.push(p.alloc().unwrap()).unwrap();
    assert_eq!(asm.discard(), 2);
    drop((pkt, c));
    assert_eq!(p.in_use(), 0);
}

/// Segments may come from different pools; each goes back to its own.
#[test]
fn a_chain_across_pools_returns_each_segment_to_its_pool() {
    let (_m, a) = pool(16, 0);
    let (_n, b) = pool(16, 8);
    let mut c = a.alloc().unwrap();
    for i in 0..6 {
        let pool = if i % 2 == 0 { &b } else { &a };
        let mut s = pool.alloc().unwrap();
        s.set_len(10);
        c.chain(s).unwrap();
    }
    assert_eq!((a.in_use(), b.in_use()), (4, 3));
    let mut batch = MbufBatch::with_burst(4);
    batch.push(c).unwrap();
    assert_eq!(batch.clear_counting_bytes(), (1, 60));
    assert_eq!((a.in_use(), b.in_use()), (0, 0));
}

/// Pools carrying chains and single buffers side by side get every buffer
/// back, through every way a batch frees (clear, free_front, counting,
/// retain_mut, drop), an mbuf ring, and an lcore's cache.
#[test]
fn pools_mixing_chains_and_single_buffers_return_every_buffer() {
    let (_m, p) = pool(4096, 64);
    let p2 = p.clone();
    std::thread::spawn(move || {
        let _g = lcore::register(42).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let ring = MbufRing::new(64, false);
        let keep = MbufRing::new(256, false);
        let mut kept_segs = 0usize;
        for round in 0..300 {
            let mut b = MbufBatch::with_burst(32);
            let mut want_bytes = 0u64;
            let mut want_segs = 0usize;
            // A burst of singles, then chains in random places.
            assert!(p2.alloc_bulk_rx(&mut b, 20, 60, 0, 0));
            want_bytes += 20 * 60;
            want_segs += 20;
            for _ in 0..8 {
                let lens: Vec<usize> = (0..1 + rnd(6)).map(|_| 1 + rnd(1664)).collect();
                want_bytes += lens.iter().sum::<usize>() as u64;
                want_segs += lens.len();
                let c = chain_of(&p2, &lens);
                b.push(c).unwrap();
            }
            assert_eq!(p2.in_use() as usize, kept_segs + want_segs);
            match round % 5 {
                0 => assert_eq!(b.clear_counting_bytes(), (28, want_bytes)),
                1 => {
                    let k = rnd(28);
                    assert_eq!(b.free_front(k), k);
                    b.clear();
                }
                2 => {
                    let mut i = 0;
                    b.retain_mut(|_| {
                        i += 1;
                        i % 3 == 0
                    });
                    drop(b);
                }
                3 => {
                    let mut bytes = 0;
                    let n = ring.enqueue_from_counting(&mut b, &mut bytes);
                    assert_eq!(n, 28);
                    assert_eq!(bytes, want_bytes);
                    let mut back = MbufBatch::with_burst(32);
                    assert_eq!(ring.dequeue_into(&mut back), 28);
                    assert_eq!(
                        back.iter().map(|m| m.pkt_len() as u64).sum::<u64>(),
                        want_bytes
                    );
                    drop(back);
                }
                _ => {
                    // Left in a ring (until it is full; the rest is freed
                    // with the batch): the ring's drop frees them.
                    let segs: Vec<usize> = b.iter().map(Mbuf::nb_segs).collect();
                    let n = keep.enqueue_from(&mut b);
                    kept_segs += segs[..n].iter().sum::<usize>();
                    drop(b);
                }
            }
            assert_eq!(p2.in_use() as usize, kept_segs, "round {round}");
        }
        assert!(!keep.is_empty());
        drop((ring, keep));
        assert_eq!(p2.in_use(), 0, "{:?}", p2.stats());
        p2.flush_cache();
    })
    .join()
    .unwrap();
    let s = p.stats();
    assert_eq!((s.in_use, s.available), (0, 4096), "{s:?}");
}
