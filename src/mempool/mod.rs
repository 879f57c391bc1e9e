//! Mempools: fixed-size packet buffers in DMA memory, a shared free ring plus a
//! cache per lcore, bulk get and put.
//!
//! Element layout: one power-of-two stride per pool (2 KiB to 64 KiB, header
//! included), elements aligned to it, so no buffer straddles a page it could
//! fit in and the whole pool can be registered as one AF_XDP UMEM or RDMA
//! memory region. 64 KiB is AF_XDP's largest chunk (`XDP_UMEM_MAX_CHUNK_SHIFT`,
//! Linux `include/net/xdp_sock.h`) and holds DPDK's largest mbuf (a 16-bit
//! data room) but for 255 bytes: see [`MAX_DATA_ROOM`].
//!
//! The per-lcore cache is what makes the fast path cheap: a thread registered as
//! an lcore ([`crate::lcore`]) gets and puts mbufs in its own LIFO cache with no
//! atomic read-modify-write; only refills and flushes (one per many bursts) touch
//! the shared ring. Threads that are not lcores use the ring directly.

pub mod ring;
#[cfg(test)]
mod tests;

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::error::{Error, Result};
use crate::lcore::{self, MAX_LCORES};
use crate::mbuf::{
    COLORS, DEFAULT_HEADROOM, ELEMENT_DATA_OFFSET, HEADER_SIZE, Mbuf, MbufBatch, MbufHeader,
};
use crate::memory::{DmaMemory, DmaRegion};
use ring::{PtrRing, Sync};

/// Largest per-lcore cache (testpmd's `--mbcache` limit).
pub const MAX_CACHE_SIZE: u32 = 512;
/// Smallest element stride.
pub const MIN_STRIDE: usize = 2048;
/// Largest element stride.
pub const MAX_STRIDE: usize = 64 * 1024;
/// Largest `buf_size` (headroom + data room) a pool takes: DPDK's limit
/// (`--mbuf-size`, a 16-bit `buf_len`).
pub const MAX_BUF_SIZE: usize = u16::MAX as usize;
/// Largest data room of an element (a [`MAX_STRIDE`] element): a `buf_size`
/// above `MAX_DATA_ROOM + 128` gets this much, 255 bytes short of DPDK's 65407
/// at `--mbuf-size=65535`, since a segment's offsets are 16-bit and the
/// header's color takes up to 192 bytes of the element.
pub const MAX_DATA_ROOM: usize = MAX_STRIDE - ELEMENT_DATA_OFFSET;

/// Default per-lcore cache size (testpmd's DEF_MBUF_CACHE).
pub const DEFAULT_CACHE_SIZE: u32 = 250;

/// How to build a pool.
#[derive(Clone, Debug)]
pub struct MempoolConfig {
    /// Name, for messages and statistics.
    pub name: String,
    /// Number of buffers.
    pub count: u32,
    /// Headroom plus data room (DPDK's mbuf "data room size", which includes
    /// RTE_PKTMBUF_HEADROOM): the data room asked for is this minus 128. The
    /// element stride is the smallest power of two from 2 KiB to 64 KiB whose
    /// data room (the stride minus [`ELEMENT_DATA_OFFSET`]) holds it, or 64 KiB
    /// (see [`MAX_DATA_ROOM`]).
    pub buf_size: u32,
    /// Per-lcore cache size, 0 to disable.
    pub cache_size: u32,
}

impl MempoolConfig {
    /// A pool of `count` buffers with the default 2 KiB stride and cache.
    pub fn new(name: &str, count: u32) -> MempoolConfig {
        MempoolConfig {
            name: name.to_string(),
            count,
            buf_size: (2048 - ELEMENT_DATA_OFFSET) as u32 + DEFAULT_HEADROOM as u32,
            cache_size: DEFAULT_CACHE_SIZE,
        }
    }

    /// The element stride this configuration gets, or why none fits.
    pub fn stride(&self) -> Result<usize> {
        if self.buf_size as usize > MAX_BUF_SIZE {
            return Err(Error::Mempool {
                pool: self.name.clone(),
                reason: format!(
                    "buffer size {} is too large: at most {MAX_BUF_SIZE} bytes (headroom + data \
                     room, as DPDK's --mbuf-size)",
                    self.buf_size
                ),
            });
        }
        let need = ELEMENT_DATA_OFFSET - DEFAULT_HEADROOM as usize + self.buf_size as usize;
        Ok(need.next_power_of_two().clamp(MIN_STRIDE, MAX_STRIDE))
    }
}

/// One lcore's cache: a LIFO stack of free elements only that lcore touches.
struct LcoreCache {
    /// Number of cached elements. Written only by the owning lcore (plain
    /// stores); read by anyone for the pool's counters.
    len: AtomicU32,
    objs: UnsafeCell<Box<[usize]>>,
}

/// The pool's shared state. Elements point at it, so it must outlive them: if a
/// pool is dropped with elements still out, this is leaked rather than freed.
pub struct PoolInner {
    name: String,
    /// Shared, so that a DMA mapping can keep the memory allocated for as long
    /// as a device may reach it, even after the pool is gone.
    region: Arc<DmaRegion>,
    /// The region's start and length, copied here for the free path's range
    /// test (no pointer chase through the `Arc`).
    base: usize,
    len: usize,
    stride: usize,
    count: u32,
    /// Bytes from a fresh mbuf's data start to the element end (same for all).
    data_room: u32,
    cache_size: u32,
    flush_threshold: u32,
    ring: PtrRing,
    caches: Box<[CachePadded<LcoreCache>]>,
    /// Failed bulk gets (a refill found the ring short), for diagnostics.
    get_fails: AtomicU64,
    /// The pool's handle, for [`Mbuf::mempool`](crate::mbuf::Mbuf::mempool).
    handle: std::sync::OnceLock<std::sync::Weak<PoolHandle>>,
}

// SAFETY: the ring is thread-safe; each cache is touched only by the thread that
// currently holds its lcore id (lcore ids are handed out exclusively), and its
// `len` is an atomic for the readers of counters.
unsafe impl std::marker::Sync for PoolInner {}
// SAFETY: as above; the region is Send.
unsafe impl Send for PoolInner {}

impl PoolInner {
    /// A handle on the pool, unless its last handle is already gone.
    pub(crate) fn handle(&self) -> Option<Mempool> {
        let shared = self.handle.get()?.upgrade()?;
        Some(Mempool { shared })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Start address and length of the memory holding every element.
    #[inline(always)]
    pub(crate) fn span(&self) -> (usize, usize) {
        (self.base, self.len)
    }

    /// Get exactly `out.len()` elements or none. The common case (an lcore
    /// whose cache holds enough) inline; anything else in
    /// [`get_bulk_slow`](Self::get_bulk_slow).
    #[inline]
    pub(crate) fn get_bulk(&self, out: &mut [usize]) -> bool {
        let n = out.len() as u32;
        if let Some(id) = lcore::current()
            && self.cache_size != 0
            && n <= self.cache_size
        {
            let cache = &self.caches[id as usize];
            let len = cache.len.load(Ordering::Relaxed);
            if len >= n {
                // SAFETY: this thread holds lcore `id`, so it alone touches
                // this cache.
                let objs = unsafe { &*cache.objs.get() };
                // The most recently freed (cache-hot) elements: the top `n` of
                // the stack, in one block copy (their order within the burst
                // does not matter; a reversed copy costs about twice the
                // instructions).
                let top = len as usize;
                out.copy_from_slice(&objs[top - n as usize..top]);
                cache.len.store(len - n, Ordering::Release);
                return true;
            }
        }
        self.get_bulk_slow(out)
    }

    /// [`get_bulk`](Self::get_bulk) off its fast path: no lcore, no cache, a
    /// get larger than the cache, or a cache to refill from the ring.
    #[cold]
    #[inline(never)]
    fn get_bulk_slow(&self, out: &mut [usize]) -> bool {
        let n = out.len() as u32;
        let Some(id) = lcore::current() else {
            return self.ring.dequeue_bulk(out);
        };
        if self.cache_size == 0 || n > self.cache_size {
            return self.ring.dequeue_bulk(out);
        }
        let cache = &self.caches[id as usize];
        // SAFETY: this thread holds lcore `id`, so it alone touches this cache.
        let objs = unsafe { &mut *cache.objs.get() };
        let mut len = cache.len.load(Ordering::Relaxed);
        if len < n {
            // Refill to the cache size plus what is asked, in one ring operation.
            let want = (self.cache_size + n - len) as usize;
            let got = self
                .ring
                .dequeue_burst(&mut objs[len as usize..len as usize + want]);
            len += got as u32;
            if len < n {
                cache.len.store(len, Ordering::Release);
                self.get_fails.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        // Hand out the most recently freed (cache-hot) elements: the top `n`
        // of the stack, in one block copy (their order within the burst does
        // not matter; a reversed copy costs about twice the instructions).
        let top = len as usize;
        out.copy_from_slice(&objs[top - n as usize..top]);
        cache.len.store(len - n, Ordering::Release);
        true
    }

    /// Give elements back. The common case (an lcore whose cache has room
    /// below its flush threshold) inline; anything else in
    /// [`put_bulk_slow`](Self::put_bulk_slow).
    #[inline]
    pub(crate) fn put_bulk(&self, ptrs: &[usize]) {
        debug_assert!(
            ptrs.iter()
                // SAFETY: (debug builds) elements given back are readable.
                .all(|&p| unsafe { (*(p as *const MbufHeader)).next.is_null() }),
            "mempool {}: an element given back still links to a segment",
            self.name
        );
        let n = ptrs.len();
        if let Some(id) = lcore::current()
            && self.cache_size != 0
            && n <= self.cache_size as usize
        {
            let cache = &self.caches[id as usize];
            let len = cache.len.load(Ordering::Relaxed) as usize;
            if len + n <= self.flush_threshold as usize {
                // SAFETY: this thread holds lcore `id`, so it alone touches
                // this cache.
                let objs = unsafe { &mut *cache.objs.get() };
                objs[len..len + n].copy_from_slice(ptrs);
                cache.len.store((len + n) as u32, Ordering::Release);
                return;
            }
        }
        self.put_bulk_slow(ptrs)
    }

    /// [`put_bulk`](Self::put_bulk) off its fast path: no lcore, no cache, a
    /// put larger than the cache, or a cache to flush to the ring first.
    #[cold]
    #[inline(never)]
    fn put_bulk_slow(&self, ptrs: &[usize]) {
        let n = ptrs.len() as u32;
        let Some(id) = lcore::current() else {
            let ok = self.ring.enqueue_bulk(ptrs);
            debug_assert!(ok, "mempool ring overflow: an element was freed twice");
            return;
        };
        if self.cache_size == 0 || n > self.cache_size {
            let ok = self.ring.enqueue_bulk(ptrs);
            debug_assert!(ok, "mempool ring overflow: an element was freed twice");
            return;
        }
        let cache = &self.caches[id as usize];
        // SAFETY: this thread holds lcore `id`, so it alone touches this cache.
        let objs = unsafe { &mut *cache.objs.get() };
        let mut len = cache.len.load(Ordering::Relaxed) as usize;
        let n = ptrs.len();
        if len + n > self.flush_threshold as usize {
            // Return the oldest (coldest) elements to the ring and keep the ones
            // just freed, which are still in this CPU's cache.
            let old = (len + n - self.cache_size as usize).min(len);
            // Uncount them here before the ring counts them: a pool's last
            // handle frees it when ring + caches hold every element, so
            // they must never be counted twice (counted in neither for a
            // moment, the pool only leaks if dropped just then).
            cache.len.store((len - old) as u32, Ordering::Release);
            let ok = self.ring.enqueue_bulk(&objs[..old]);
            debug_assert!(ok, "mempool ring overflow: an element was freed twice");
            objs.copy_within(old..len, 0);
            len -= old;
        }
        objs[len..len + n].copy_from_slice(ptrs);
        len += n;
        cache.len.store(len as u32, Ordering::Release);
    }

    fn cached(&self) -> u64 {
        self.caches
            .iter()
            .map(|c| c.len.load(Ordering::Acquire) as u64)
            .sum()
    }

    fn available(&self) -> u64 {
        // The ring first, then the caches: an element a flush moves from a
        // cache to the ring leaves the cache first, so this never counts it
        // twice (see `put_bulk_slow`).
        self.ring.len() as u64 + self.cached()
    }

    /// Initialise an element's header for a fresh allocation.
    #[inline(always)]
    fn init_header(&self, p: usize) {
        let h = p as *mut MbufHeader;
        // SAFETY: `p` is an element this pool owns and just handed out.
        unsafe {
            (*h).data_off = (*h).default_data_off;
            (*h).data_len = 0;
            (*h).ol_flags = 0;
            (*h).vlan_tci = 0;
        }
    }
}

/// A handle on a pool of packet buffers. Cloning it is cheap (an `Arc`); the
/// pool lives until the last handle is dropped.
#[derive(Clone)]
pub struct Mempool {
    shared: Arc<PoolHandle>,
}

/// Owner of the boxed [`PoolInner`], so that it can be leaked instead of freed.
struct PoolHandle {
    inner: NonNull<PoolInner>,
}

// SAFETY: PoolInner is Send + Sync; the handle only owns the box.
unsafe impl Send for PoolHandle {}
// SAFETY: as above.
unsafe impl std::marker::Sync for PoolHandle {}

impl Drop for PoolHandle {
    fn drop(&mut self) {
        // SAFETY: `inner` came from Box::into_raw and is still live.
        let inner = unsafe { self.inner.as_ref() };
        let available = inner.available();
        if available == inner.count as u64 {
            // SAFETY: no element is outstanding, so nothing points at the pool any more.
            drop(unsafe { Box::from_raw(self.inner.as_ptr()) });
        } else {
            log::error!(
                "mempool {}: dropped with {} of {} mbufs still in use; leaking its memory to stay safe",
                inner.name,
                inner.count as u64 - available,
                inner.count
            );
        }
    }
}

/// Counters of a pool, as `show mempool` would print them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MempoolStats {
    /// Buffers in the pool.
    pub size: u64,
    /// Free buffers (shared ring plus every lcore cache).
    pub available: u64,
    /// Buffers handed out and not yet returned.
    pub in_use: u64,
    /// Of the free ones, how many sit in lcore caches.
    pub cached: u64,
    /// Bulk gets that failed because the pool ran dry.
    pub get_fails: u64,
}

impl Mempool {
    /// Carve a pool out of DMA memory.
    pub fn new(mem: &DmaMemory, cfg: &MempoolConfig) -> Result<Mempool> {
        let stride = cfg.stride()?;
        if cfg.count == 0 {
            return Err(Error::Mempool {
                pool: cfg.name.clone(),
                reason: "a pool needs at least one mbuf".into(),
            });
        }
        if cfg.cache_size > MAX_CACHE_SIZE {
            return Err(Error::Mempool {
                pool: cfg.name.clone(),
                reason: format!(
                    "cache size {} is above the limit {MAX_CACHE_SIZE} (--mbcache accepts 0..=512)",
                    cfg.cache_size
                ),
            });
        }
        let bytes = cfg.count as usize * stride;
        let region =
            Arc::new(mem.alloc_aligned(&format!("mempool {}", cfg.name), bytes, stride)?);
        if !(region.as_ptr() as usize).is_multiple_of(stride) {
            return Err(Error::Mempool {
                pool: cfg.name.clone(),
                reason: format!(
                    "its memory at {:p} is not aligned to the {stride}-byte element stride",
                    region.as_ptr()
                ),
            });
        }
        let data_room = (stride - ELEMENT_DATA_OFFSET) as u32;
        // DPDK flushes above 1.5x the cache size; the cache array holds that plus
        // one maximal put before the flush.
        let flush_threshold = cfg.cache_size + cfg.cache_size / 2;
        let cache_cap = (flush_threshold + MAX_CACHE_SIZE.max(cfg.cache_size) + 1) as usize;
        let caches = (0..MAX_LCORES)
            .map(|_| {
                CachePadded::new(LcoreCache {
                    len: AtomicU32::new(0),
                    objs: UnsafeCell::new(
                        vec![0usize; if cfg.cache_size > 0 { cache_cap } else { 0 }].into(),
                    ),
                })
            })
            .collect();
        let inner = Box::new(PoolInner {
            name: cfg.name.clone(),
            stride,
            count: cfg.count,
            data_room,
            cache_size: cfg.cache_size,
            flush_threshold: flush_threshold.max(1),
            ring: PtrRing::new(cfg.count as usize, Sync::Multi, Sync::Multi),
            caches,
            get_fails: AtomicU64::new(0),
            handle: std::sync::OnceLock::new(),
            base: region.as_ptr() as usize,
            len: region.len(),
            region,
        });
        let inner = NonNull::from(Box::leak(inner));
        // SAFETY: just created; nothing else refers to it yet.
        let pool = unsafe { inner.as_ref() };
        let mut ptrs = Vec::with_capacity(cfg.count as usize);
        for i in 0..cfg.count as usize {
            let elem_off = (i % COLORS) * HEADER_SIZE;
            let off = i * stride + elem_off;
            let p = pool.region.as_ptr() as usize + off;
            let default_data_off = (ELEMENT_DATA_OFFSET - elem_off - HEADER_SIZE) as u16;
            let hdr = MbufHeader {
                pool: inner.as_ptr(),
                buf_iova: pool.region.iova(off + HEADER_SIZE),
                data_off: default_data_off,
                data_len: 0,
                port: 0,
                queue: 0,
                // At most 65472 (a 64 KiB element): every offset in it is 16-bit.
                buf_len: (stride - elem_off - HEADER_SIZE) as u16,
                elem_off: elem_off as u8,
                nb_segs: 1,
                rss_hash: 0,
                ol_flags: 0,
                timestamp: 0,
                vlan_tci: 0,
                default_data_off,
                pkt_len: 0,
                next: std::ptr::null_mut(),
            };
            // SAFETY: `p` is inside the region, aligned to the stride (>= 64), and
            // nothing else uses the element yet.
            unsafe { std::ptr::write(p as *mut MbufHeader, hdr) };
            ptrs.push(p);
        }
        let ok = pool.ring.enqueue_bulk(&ptrs);
        debug_assert!(ok);
        let shared = Arc::new(PoolHandle { inner });
        let _ = pool.handle.set(Arc::downgrade(&shared));
        Ok(Mempool { shared })
    }

    #[inline(always)]
    fn inner(&self) -> &PoolInner {
        // SAFETY: the handle keeps the pool alive.
        unsafe { self.shared.inner.as_ref() }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// Number of buffers.
    pub fn size(&self) -> u32 {
        self.inner().count
    }

    /// Element stride in bytes (a power of two from 2048 to 65536).
    pub fn stride(&self) -> usize {
        self.inner().stride
    }

    /// Largest packet a fresh mbuf holds: the stride minus [`ELEMENT_DATA_OFFSET`].
    pub fn data_room(&self) -> usize {
        self.inner().data_room as usize
    }

    /// The DMA region holding every element (for UMEM / memory-region
    /// registration, and DMA mappings, which hold it as long as they last).
    pub fn region(&self) -> &Arc<DmaRegion> {
        &self.inner().region
    }

    /// Free buffers right now.
    pub fn available(&self) -> u64 {
        self.inner().available()
    }

    /// Buffers handed out and not yet returned.
    pub fn in_use(&self) -> u64 {
        self.inner().count as u64 - self.available()
    }

    /// All counters at once.
    pub fn stats(&self) -> MempoolStats {
        let inner = self.inner();
        let cached = inner.cached();
        let available = inner.ring.len() as u64 + cached;
        MempoolStats {
            size: inner.count as u64,
            available,
            in_use: inner.count as u64 - available,
            cached,
            get_fails: inner.get_fails.load(Ordering::Relaxed),
        }
    }

    /// One fresh mbuf, or `None` if the pool is empty.
    pub fn alloc(&self) -> Option<Mbuf> {
        let mut p = [0usize; 1];
        if !self.inner().get_bulk(&mut p) {
            return None;
        }
        self.inner().init_header(p[0]);
        // SAFETY: the pool just handed us this element.
        Some(unsafe { Mbuf::from_raw(NonNull::new_unchecked(p[0] as *mut MbufHeader)) })
    }

    /// Append exactly `n` fresh mbufs to `batch`, or none. `n` must not exceed
    /// `batch.spare()`; returns false if the pool is short or `n` does not fit.
    #[inline]
    pub fn alloc_bulk(&self, batch: &mut MbufBatch, n: usize) -> bool {
        if n > batch.spare() {
            return false;
        }
        let inner = self.inner();
        let slots = batch.raw_spare(n);
        if !inner.get_bulk(slots) {
            return false;
        }
        for &p in slots.iter() {
            inner.init_header(p);
        }
        batch.commit_back(n);
        true
    }

    /// As [`Mempool::alloc_bulk`], and set each new mbuf's length, port and
    /// queue in the same pass over the headers (what a receive path does next
    /// anyway). False, and nothing allocated, if `len` does not fit the data room.
    /// Always inlined: a receive burst's own loop (a driver with a second call
    /// site, as net_null's chain path, would otherwise get a call per burst).
    #[inline(always)]
    pub fn alloc_bulk_rx(
        &self,
        batch: &mut MbufBatch,
        n: usize,
        len: u16,
        port: u16,
        queue: u16,
    ) -> bool {
        let inner = self.inner();
        if n > batch.spare() || len as u32 > inner.data_room {
            return false;
        }
        let slots = batch.raw_spare(n);
        if !inner.get_bulk(slots) {
            return false;
        }
        for &p in slots.iter() {
            let h = p as *mut MbufHeader;
            // SAFETY: `p` is an element this pool just handed out; we own it.
            unsafe {
                (*h).data_off = (*h).default_data_off;
                (*h).data_len = len;
                (*h).port = port;
                (*h).queue = queue;
                (*h).ol_flags = 0;
                (*h).vlan_tci = 0;
            }
        }
        batch.commit_back(n);
        true
    }

    /// Allocate `n` raw elements for a driver's receive ring, without
    /// resetting their headers (the driver sets offset and length on receive).
    ///
    /// # Safety
    /// The caller owns the returned elements and must give each back exactly once,
    /// through [`Mbuf::from_raw`] or [`Mempool::free_raw`].
    #[inline]
    pub unsafe fn alloc_raw(&self, out: &mut [usize]) -> bool {
        self.inner().get_bulk(out)
    }

    /// Return raw elements obtained from [`Mempool::alloc_raw`] or [`Mbuf::into_raw`].
    ///
    /// # Safety
    /// Each pointer must be an element of this pool that the caller owns.
    #[inline]
    pub unsafe fn free_raw(&self, ptrs: &[usize]) {
        self.inner().put_bulk(ptrs)
    }

    /// Move every buffer in this thread's cache back to the shared ring, so other
    /// threads can use them (an lcore does this before it exits).
    pub fn flush_cache(&self) {
        let Some(id) = lcore::current() else { return };
        let inner = self.inner();
        let cache = &inner.caches[id as usize];
        // SAFETY: this thread holds lcore `id`.
        let objs = unsafe { &mut *cache.objs.get() };
        let len = cache.len.load(Ordering::Relaxed) as usize;
        let ok = inner.ring.enqueue_bulk(&objs[..len]);
        debug_assert!(ok);
        cache.len.store(0, Ordering::Release);
    }
}

impl fmt::Debug for Mempool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.name())
            .field("stats", &self.stats())
            .finish()
    }
}

/// A bounded ring of mbufs between threads (what the `ring` driver's queues
/// are made of). Dropping it frees what it still holds.
pub struct MbufRing {
    ring: PtrRing,
}

impl MbufRing {
    /// A ring for up to `capacity` mbufs (rounded up to a power of two). `multi`
    /// allows several producers and consumers at once.
    pub fn new(capacity: usize, multi: bool) -> MbufRing {
        let s = if multi { Sync::Multi } else { Sync::Single };
        MbufRing {
            ring: PtrRing::new(capacity, s, s),
        }
    }

    /// Move as many packets as fit from the front of `batch` into the ring.
    #[inline]
    pub fn enqueue_from(&self, batch: &mut MbufBatch) -> usize {
        let n = self.ring.enqueue_burst(batch.raw_held());
        batch.forget_front(n);
        n
    }

    /// As [`MbufRing::enqueue_from`], adding the byte count of what went in to `bytes`.
    #[inline]
    pub fn enqueue_from_counting(&self, batch: &mut MbufBatch, bytes: &mut u64) -> usize {
        // Lengths are read before the enqueue: once in the ring, a packet belongs
        // to the consumer and may already be changing.
        let mut cumulative = [0u64; crate::mbuf::MAX_BURST + 1];
        for (i, m) in batch.as_slice().iter().enumerate() {
            cumulative[i + 1] = cumulative[i] + m.pkt_len() as u64;
        }
        let n = self.ring.enqueue_burst(batch.raw_held());
        *bytes += cumulative[n];
        batch.forget_front(n);
        n
    }

    /// Move up to `batch.spare()` packets from the ring to the back of `batch`.
    #[inline]
    pub fn dequeue_into(&self, batch: &mut MbufBatch) -> usize {
        let spare = batch.spare();
        if spare == 0 {
            return 0;
        }
        let n = self.ring.dequeue_burst(batch.raw_spare(spare));
        batch.commit_back(n);
        n
    }

    /// Packets held now.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// How many packets fit.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }
}

impl Drop for MbufRing {
    fn drop(&mut self) {
        let mut buf = [0usize; 64];
        loop {
            let n = self.ring.dequeue_burst(&mut buf);
            if n == 0 {
                break;
            }
            crate::mbuf::free_raw_bulk(&buf[..n]);
        }
    }
}

impl fmt::Debug for MbufRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MbufRing")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}
