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
    cfg.buf_size = 5000;
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
        // SAFETY: `a` owns the element; no reference to its header is alive.
        unsafe { (*h.as_ptr()).packet_type = 5 };
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
