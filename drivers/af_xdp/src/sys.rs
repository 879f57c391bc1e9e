//! AF_XDP sockets, their four shared-memory rings, the UMEM over the port's
//! mempool, and the burst functions that move mbufs through them; plus the
//! small netlink and interface-name syscalls the control plane needs. This is
//! one of the crate's two unsafe modules (with [`crate::bpf`]).
//!
//! # Memory the kernel shares with us
//!
//! - **Ring indices** (producer, consumer, flags) are `u32`s in the ring
//!   mappings that the kernel reads and writes concurrently. They are accessed
//!   only through `AtomicU32::from_ptr` (an `UnsafeCell`-based atomic, never a
//!   plain reference): acquire loads of the other side's index, release stores
//!   of ours, as libxdp's `xsk.h` does with `__atomic_*`.
//! - **Descriptors** are read and written with `read_volatile`/`write_volatile`
//!   through raw pointers, only in the slots the index protocol gives us.
//! - **UMEM chunks** are pool elements. Which chunks the kernel may use is kept
//!   in a per-queue [`Ledger`] (one byte per element): a chunk is marked when it
//!   is posted (fill or TX ring) and unmarked when the kernel hands it back (RX
//!   or completion ring). Only a marked chunk becomes an `Mbuf` again,
//!   so a bogus address from the kernel can never create a second owner. When a
//!   socket is closed, whatever is still marked is returned to the pool, because
//!   only then can the kernel no longer touch it.
//!
//! # UMEM layout
//!
//! The whole pool (`size × stride` bytes from the region start) is registered
//! as the UMEM, chunk size = the pool stride, so a chunk is a pool element. It
//! is registered in unaligned-chunk mode although every chunk we post is an
//! aligned element: in aligned mode the kernel keeps its per-buffer state in an
//! array indexed by chunk, and with an 8192-entry fill ring it walked 8192 of
//! those (about 1 MiB) per ring cycle, a cache miss per frame on the CPU that
//! runs the copy (`xp_alloc` went from 5.7 % to 8.6 % of the veth benchmark's
//! samples); in unaligned mode it reuses a few, last-in first-out. RX
//! descriptors then carry the frame's offset in their top 16 bits (see
//! `RxSide::rx_burst`). The kernel places a received frame at `chunk + UMEM
//! headroom + XDP_PACKET_HEADROOM (256)`. The pool puts a fresh mbuf's data at
//! [`ELEMENT_DATA_OFFSET`] (384) from the element start whatever the header's
//! cache color, so the UMEM headroom is [`UMEM_HEADROOM`] = 384 − 256 = 128 and
//! every frame lands exactly at its mbuf's default data offset; the receive
//! room per chunk is the pool's `data_room()` (1664 bytes for 2 KiB elements,
//! 3712 for 4 KiB ones).
//!
//! The headers (at element + color × 64, ending by element + 256) are never
//! written by the kernel: in front of a frame it writes at most XDP metadata
//! (32 bytes at most, so from element + 352), and only if an XDP program asks
//! for it, which ours does not (foreign programs are refused). The RX
//! descriptor address is authoritative: the mbuf's data offset is computed
//! from it.
//!
//! Pool elements are known by their header pointers (what `alloc_raw`,
//! `free_raw` and `Mbuf::from_raw` use); the ledger records, per element, where
//! its header is, so a UMEM address leads back to the right header without
//! assuming the pool's coloring scheme.

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::net::sockopt;

use nicpoll::mbuf::{COLORS, ELEMENT_DATA_OFFSET, HEADER_SIZE, MbufHeader, RxChain};
use nicpoll::{Mbuf, MbufBatch, Mempool};

/// AF_XDP address family.
const AF_XDP: libc::c_int = 44;

/// Bind flag: share the UMEM of `sxdp_shared_umem_fd`.
pub(crate) const XDP_SHARED_UMEM: u16 = 1 << 0;
/// Bind flag: force copy mode.
pub(crate) const XDP_COPY: u16 = 1 << 1;
/// Unaligned mode: RX descriptor addresses carry the frame's offset from the
/// chunk in their top 16 bits.
const XSK_UNALIGNED_BUF_OFFSET_SHIFT: u32 = 48;
const XSK_UNALIGNED_BUF_ADDR_MASK: u64 = (1 << XSK_UNALIGNED_BUF_OFFSET_SHIFT) - 1;
/// Bind flag: force zero-copy mode.
#[allow(dead_code)]
pub(crate) const XDP_ZEROCOPY: u16 = 1 << 2;
/// Bind flag: the kernel sets NEED_WAKEUP in ring flags instead of being kicked
/// after every operation.
pub(crate) const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;
/// Bind flag: multi-buffer packets, one descriptor per buffer (Linux 6.6,
/// `include/uapi/linux/if_xdp.h`); the sockets sharing the UMEM inherit it.
pub(crate) const XDP_USE_SG: u16 = 1 << 4;
/// Descriptor option: the packet continues in the next descriptor.
const XDP_PKT_CONTD: u32 = 1 << 0;
/// Most descriptors one transmitted packet may take in copy mode on every
/// kernel (CONFIG_MAX_SKB_FRAGS + 1, whose smallest setting is 17; the
/// kernel's Documentation/networking/af_xdp.rst asks for 18 at most).
pub(crate) const MAX_TX_FRAGS: usize = 18;
const XDP_RING_NEED_WAKEUP: u32 = 1 << 0;

const XDP_PGOFF_RX_RING: u64 = 0;
const XDP_PGOFF_TX_RING: u64 = 0x8000_0000;
const XDP_UMEM_PGOFF_FILL_RING: u64 = 0x1_0000_0000;
const XDP_UMEM_PGOFF_COMPLETION_RING: u64 = 0x1_8000_0000;

/// Headroom the kernel keeps in front of every received frame, after the UMEM
/// headroom (`XDP_PACKET_HEADROOM`).
pub(crate) const XDP_PACKET_HEADROOM: usize = 256;
/// Largest XDP metadata the kernel may copy in front of a frame.
const XDP_MAX_METADATA: usize = 32;
/// An unaligned-mode RX descriptor address: (UMEM address in the chunk, the
/// frame's offset from that chunk's start).
#[inline(always)]
fn split_rx_addr(addr: u64) -> (u64, usize) {
    (
        addr & XSK_UNALIGNED_BUF_ADDR_MASK,
        (addr >> XSK_UNALIGNED_BUF_OFFSET_SHIFT) as usize,
    )
}

/// UMEM headroom: frames land at the mbuf's default data offset.
pub(crate) const UMEM_HEADROOM: usize = ELEMENT_DATA_OFFSET - XDP_PACKET_HEADROOM;
// Every header position ends before anything the kernel may write.
const _: () = assert!(COLORS * HEADER_SIZE <= ELEMENT_DATA_OFFSET - XDP_MAX_METADATA);
/// Largest frame the kernel can place in a chunk of `stride` bytes.
pub(crate) const fn rx_frame_room(stride: usize) -> usize {
    stride - ELEMENT_DATA_OFFSET
}
/// Elements handled per bulk get/put on the slow paths (refill, reclaim).
const SCRATCH: usize = 512;

#[repr(C)]
struct SockaddrXdp {
    family: u16,
    flags: u16,
    ifindex: u32,
    queue_id: u32,
    shared_umem_fd: u32,
}
const _: () = assert!(size_of::<SockaddrXdp>() == 16);

/// Where a ring's parts are in its mapping (`struct xdp_ring_offset`).
#[derive(Clone, Copy, Debug, Default)]
struct RingOffset {
    producer: u64,
    consumer: u64,
    desc: u64,
    flags: u64,
}

impl RingOffset {
    /// From `XDP_MMAP_OFFSETS`; `None` on kernels before 5.4, whose rings have
    /// no flags word (hence no need_wakeup).
    fn from_kernel(o: &rustix::net::xdp::XdpRingOffset) -> Option<RingOffset> {
        Some(RingOffset {
            producer: o.producer,
            consumer: o.consumer,
            desc: o.desc,
            flags: o.flags?,
        })
    }
}

/// An RX or TX ring descriptor (`struct xdp_desc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct XdpDesc {
    addr: u64,
    len: u32,
    options: u32,
}
const _: () = assert!(size_of::<XdpDesc>() == 16);

/// The kernel's per-socket counters (`struct xdp_statistics`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct XskStats {
    /// Frames dropped for other reasons than a full RX ring (no fill buffer,
    /// frame larger than the chunk).
    pub(crate) rx_dropped: u64,
    /// Fill-ring entries the kernel rejected.
    pub(crate) rx_invalid_descs: u64,
    /// TX descriptors the kernel rejected.
    pub(crate) tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub(crate) rx_ring_full: u64,
    /// Times the kernel found the fill ring empty.
    pub(crate) rx_fill_ring_empty_descs: u64,
    /// Times the kernel found the TX ring empty when woken.
    pub(crate) tx_ring_empty_descs: u64,
}
impl XskStats {
    /// From `XDP_STATISTICS`; counters a kernel before 5.9 lacks are 0.
    fn from_kernel(s: &rustix::net::xdp::XdpStatistics) -> XskStats {
        XskStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full.unwrap_or(0),
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs.unwrap_or(0),
            tx_ring_empty_descs: s.tx_ring_empty_descs.unwrap_or(0),
        }
    }

    /// Field-wise sum.
    pub(crate) fn add(&self, o: &XskStats) -> XskStats {
        XskStats {
            rx_dropped: self.rx_dropped + o.rx_dropped,
            rx_invalid_descs: self.rx_invalid_descs + o.rx_invalid_descs,
            tx_invalid_descs: self.tx_invalid_descs + o.tx_invalid_descs,
            rx_ring_full: self.rx_ring_full + o.rx_ring_full,
            rx_fill_ring_empty_descs: self.rx_fill_ring_empty_descs + o.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: self.tx_ring_empty_descs + o.tx_ring_empty_descs,
        }
    }

    /// Field-wise saturating difference.
    pub(crate) fn since(&self, b: &XskStats) -> XskStats {
        XskStats {
            rx_dropped: self.rx_dropped.saturating_sub(b.rx_dropped),
            rx_invalid_descs: self.rx_invalid_descs.saturating_sub(b.rx_invalid_descs),
            tx_invalid_descs: self.tx_invalid_descs.saturating_sub(b.tx_invalid_descs),
            rx_ring_full: self.rx_ring_full.saturating_sub(b.rx_ring_full),
            rx_fill_ring_empty_descs: self
                .rx_fill_ring_empty_descs
                .saturating_sub(b.rx_fill_ring_empty_descs),
            tx_ring_empty_descs: self
                .tx_ring_empty_descs
                .saturating_sub(b.tx_ring_empty_descs),
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `setsockopt` with a plain-data value.
fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is valid for size_of::<T>() bytes of reads for the call; the
    // kernel copies the value and keeps no pointer to it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v as *const T as *const libc::c_void,
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a fresh fd
    // nothing else owns.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) })?;
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One mmap of a ring (memmap2: unmapped on drop). The ring views that point
/// into it belong to queues that hold the socket, and so this mapping, alive.
type Mapping = memmap2::MmapRaw;

/// Map `len` bytes of the socket's ring at `pgoff`: MAP_SHARED | MAP_POPULATE,
/// read-write, where the kernel chooses.
fn map_ring(fd: &OwnedFd, len: usize, pgoff: u64) -> io::Result<Mapping> {
    memmap2::MmapOptions::new()
        .offset(pgoff)
        .len(len)
        .populate()
        .map_raw(fd)
}

/// Raw pointers into one ring mapping.
#[derive(Clone, Copy)]
struct RingPtrs {
    producer: *mut u32,
    consumer: *mut u32,
    flags: *mut u32,
    descs: *mut u8,
    mask: u32,
    size: u32,
}

impl RingPtrs {
    fn new(m: &Mapping, off: &RingOffset, size: u32) -> RingPtrs {
        let b = m.as_mut_ptr();
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this very ring and
        // the mapping covers `desc + size * entry` bytes, so every `add` stays
        // inside the mapping.
        unsafe {
            RingPtrs {
                producer: b.add(off.producer as usize).cast(),
                consumer: b.add(off.consumer as usize).cast(),
                flags: b.add(off.flags as usize).cast(),
                descs: b.add(off.desc as usize),
                mask: size - 1,
                size,
            }
        }
    }

    #[inline(always)]
    fn load(p: *mut u32, o: Ordering) -> u32 {
        // SAFETY: `p` is an aligned u32 inside a live ring mapping (the view's
        // owner keeps the socket alive); the kernel accesses it atomically too.
        // AtomicU32 is an UnsafeCell, so concurrent kernel writes break no
        // aliasing rule.
        unsafe { AtomicU32::from_ptr(p) }.load(o)
    }

    #[inline(always)]
    fn store(p: *mut u32, v: u32) {
        // SAFETY: as in `load`; only this side ever writes this index.
        unsafe { AtomicU32::from_ptr(p) }.store(v, Ordering::Release)
    }
}

/// Our producer side of a ring (fill, TX), with libxdp's cached indices.
struct ProdRing<T> {
    r: RingPtrs,
    /// Our producer index (the kernel only reads it).
    prod: u32,
    /// Kernel consumer index + size, as last read.
    cached_cons: u32,
    _t: PhantomData<T>,
}

impl<T: Copy> ProdRing<T> {
    fn new(r: RingPtrs) -> ProdRing<T> {
        let prod = RingPtrs::load(r.producer, Ordering::Relaxed);
        let cons = RingPtrs::load(r.consumer, Ordering::Acquire);
        ProdRing {
            r,
            prod,
            cached_cons: cons.wrapping_add(r.size),
            _t: PhantomData,
        }
    }

    /// Free slots, re-reading the kernel's consumer only if fewer than `want`
    /// are known to be free.
    #[inline(always)]
    fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.prod);
        if free >= want {
            return free;
        }
        self.cached_cons =
            RingPtrs::load(self.r.consumer, Ordering::Acquire).wrapping_add(self.r.size);
        self.cached_cons.wrapping_sub(self.prod)
    }

    /// Write entry `i` past the producer (a slot `free` reported).
    #[inline(always)]
    fn write(&mut self, i: u32, v: T) {
        let slot = self.prod.wrapping_add(i) & self.r.mask;
        // SAFETY: slot < size, so the entry lies inside the mapping; the slot is
        // free (the kernel's consumer has passed it) and not yet published, so the
        // kernel does not read it now.
        unsafe { ptr::write_volatile((self.r.descs as *mut T).add(slot as usize), v) }
    }

    /// Publish `n` written entries.
    #[inline(always)]
    fn submit(&mut self, n: u32) {
        self.prod = self.prod.wrapping_add(n);
        RingPtrs::store(self.r.producer, self.prod);
    }

    /// Whether the kernel asked to be woken up for this ring.
    #[inline(always)]
    fn needs_wakeup(&self) -> bool {
        RingPtrs::load(self.r.flags, Ordering::Relaxed) & XDP_RING_NEED_WAKEUP != 0
    }

    /// Whether the kernel has not consumed everything published.
    #[inline(always)]
    fn pending(&self) -> bool {
        RingPtrs::load(self.r.consumer, Ordering::Acquire) != self.prod
    }
}

/// Our consumer side of a ring (RX, completion), with a cached producer.
struct ConsRing<T> {
    r: RingPtrs,
    cons: u32,
    cached_prod: u32,
    _t: PhantomData<T>,
}

impl<T: Copy> ConsRing<T> {
    fn new(r: RingPtrs) -> ConsRing<T> {
        let cons = RingPtrs::load(r.consumer, Ordering::Relaxed);
        ConsRing {
            r,
            cons,
            cached_prod: cons,
            _t: PhantomData,
        }
    }

    /// Entries ready, up to `max`; re-reads the kernel's producer only when the
    /// cached view is empty.
    #[inline(always)]
    fn peek(&mut self, max: u32) -> u32 {
        let mut avail = self.cached_prod.wrapping_sub(self.cons);
        if avail == 0 {
            self.cached_prod = RingPtrs::load(self.r.producer, Ordering::Acquire);
            avail = self.cached_prod.wrapping_sub(self.cons);
        }
        avail.min(max)
    }

    /// Entry `i` past the consumer (one `peek` reported).
    #[inline(always)]
    fn read(&self, i: u32) -> T {
        let slot = self.cons.wrapping_add(i) & self.r.mask;
        // SAFETY: slot < size, inside the mapping; the kernel published it (acquire
        // load of the producer in `peek`) and will not rewrite it before we
        // release it.
        unsafe { ptr::read_volatile((self.r.descs as *const T).add(slot as usize)) }
    }

    /// Hand `n` read entries back to the kernel.
    #[inline(always)]
    fn release(&mut self, n: u32) {
        self.cons = self.cons.wrapping_add(n);
        RingPtrs::store(self.r.consumer, self.cons);
    }
}

/// Which pool elements one queue has handed to the kernel, and where each
/// one's header is: one byte per element, 0 when the kernel does not have it,
/// else 1 + the header's offset in the element in 64-byte units.
pub(crate) struct Ledger {
    pool: Mempool,
    base: usize,
    /// Bytes registered (elements × stride).
    len: u64,
    shift: u32,
    slots: Box<[u8]>,
    held: u32,
}

impl Ledger {
    fn new(pool: &Mempool) -> Ledger {
        let n = pool.size() as usize;
        assert!(
            pool.stride() / HEADER_SIZE < 255,
            "header offsets fit a byte"
        );
        Ledger {
            pool: pool.clone(),
            base: pool.region().as_ptr() as usize,
            len: (n * pool.stride()) as u64,
            shift: pool.stride().trailing_zeros(),
            slots: vec![0u8; n].into(),
            held: 0,
        }
    }

    /// Whether the header pointer `hdr` belongs to this pool.
    #[inline(always)]
    fn contains(&self, hdr: usize) -> bool {
        (hdr.wrapping_sub(self.base) as u64) < self.len
    }

    /// UMEM offset of the element holding `hdr` (an element of this pool).
    #[cfg(test)]
    fn element_offset(&self, hdr: usize) -> u64 {
        ((hdr - self.base) as u64 >> self.shift) << self.shift
    }

    /// Mark the element whose header is `hdr` as the kernel's; return the
    /// element's UMEM offset.
    #[inline(always)]
    fn give(&mut self, hdr: usize) -> u64 {
        let off = (hdr - self.base) as u64;
        let i = (off >> self.shift) as usize;
        let within = off as usize & ((1 << self.shift) - 1);
        debug_assert!(
            within.is_multiple_of(HEADER_SIZE),
            "header not 64-byte aligned"
        );
        debug_assert!(self.slots[i] == 0, "element posted twice");
        self.slots[i] = (within / HEADER_SIZE) as u8 + 1;
        self.held += 1;
        (i as u64) << self.shift
    }

    /// UMEM offset of the element holding UMEM address `addr`.
    #[inline(always)]
    fn chunk_start(&self, addr: u64) -> usize {
        ((addr >> self.shift) << self.shift) as usize
    }

    /// Take back the element holding UMEM address `addr`, if it is one we gave;
    /// returns its header pointer.
    #[inline(always)]
    fn take(&mut self, addr: u64) -> Option<usize> {
        if addr >= self.len {
            return None;
        }
        let i = (addr >> self.shift) as usize;
        let v = self.slots[i];
        if v == 0 {
            return None;
        }
        self.slots[i] = 0;
        self.held -= 1;
        Some(self.base + (i << self.shift) + (v as usize - 1) * HEADER_SIZE)
    }

    /// Return every element still marked to the pool.
    ///
    /// Only for when the kernel can no longer touch them: the socket that had
    /// them is closed (see `XskShared::drop`).
    fn release_all(&mut self) {
        let mut buf = [0usize; 64];
        let mut k = 0;
        for i in 0..self.slots.len() {
            let v = self.slots[i];
            if v == 0 {
                continue;
            }
            self.slots[i] = 0;
            buf[k] = self.base + (i << self.shift) + (v as usize - 1) * HEADER_SIZE;
            k += 1;
            if k == buf.len() {
                // SAFETY: each pointer is the header of an element of this pool
                // that this ledger took from it (alloc_raw or an Mbuf it consumed)
                // and no one else owns; the socket that could use it is closed.
                unsafe { self.pool.free_raw(&buf[..k]) };
                k = 0;
            }
        }
        // SAFETY: as above.
        unsafe { self.pool.free_raw(&buf[..k]) };
        self.held = 0;
    }
}

/// What a socket needs for its creation.
pub(crate) struct XskSetup<'a> {
    /// Interface index.
    pub(crate) ifindex: u32,
    /// Interface queue to bind to.
    pub(crate) queue_id: u32,
    /// The port's mempool: its memory is the UMEM.
    pub(crate) pool: &'a Mempool,
    /// RX ring size (0: no RX ring).
    pub(crate) rx_size: u32,
    /// TX ring size (0: no TX ring).
    pub(crate) tx_size: u32,
    /// Fill ring size.
    pub(crate) fill_size: u32,
    /// Completion ring size.
    pub(crate) comp_size: u32,
    /// XDP_COPY, XDP_ZEROCOPY or 0 (zero copy if the driver can, else copy).
    pub(crate) copy_flags: u16,
    /// Bind with XDP_USE_SG (multi-buffer packets).
    pub(crate) sg: bool,
    /// Longest packet a receive queue delivers; longer ones are counted.
    pub(crate) max_len: usize,
    /// Another socket of this port whose UMEM this one shares (XDP_SHARED_UMEM).
    pub(crate) share: Option<&'a XskShared>,
}

/// The step of socket creation that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum XskStep {
    Socket,
    UmemReg,
    RingSize(&'static str),
    MmapOffsets,
    Mmap(&'static str),
    Bind,
}

/// A failed socket creation.
#[derive(Debug)]
pub(crate) struct XskError {
    pub(crate) step: XskStep,
    pub(crate) source: io::Error,
}

fn step(s: XskStep) -> impl FnOnce(io::Error) -> XskError {
    move |source| XskError { step: s, source }
}

/// One AF_XDP socket: the fd, its ring mappings, and the pool whose memory it
/// uses. Shared by the port and the queue(s) using it; dropping the last handle
/// unmaps and closes, then returns to the pool every element the queues left
/// with the kernel.
pub(crate) struct XskShared {
    maps: Vec<Mapping>,
    fd: Option<OwnedFd>,
    zero_copy: bool,
    /// Keeps the UMEM memory alive as long as the socket.
    _pool: Mempool,
    /// Ledgers of queues dropped while the socket was still open.
    orphans: Mutex<Vec<Ledger>>,
}

// SAFETY: the mappings are only unmapped in Drop (exclusive access); the fd is
// used for syscalls that are thread-safe; the orphan list is behind a mutex.
unsafe impl Send for XskShared {}
// SAFETY: as above: `&self` methods only make syscalls on the fd or lock the mutex.
unsafe impl Sync for XskShared {}

/// The receive half of a socket: RX ring and fill ring.
pub(crate) struct RxSide {
    rx: ConsRing<XdpDesc>,
    fill: ProdRing<u64>,
    ledger: Option<Ledger>,
    /// Fill entries we owe the kernel (earlier refills the pool could not serve).
    deficit: u32,
    /// Kick the socket (recvfrom) whenever a burst finds nothing (busy polling).
    busy_poll: bool,
    /// Longest packet delivered; longer ones are counted.
    max_len: usize,
    /// A multi-buffer packet whose last descriptor has not come yet.
    chain: RxChain,
    /// That packet lost a buffer (a bad descriptor): drop it at its end.
    broken: bool,
    fd: RawFd,
    scratch: Box<[usize; SCRATCH]>,
    shared: Arc<XskShared>,
}

/// The transmit half of a socket: TX ring and completion ring.
pub(crate) struct TxSide {
    tx: ProdRing<XdpDesc>,
    comp: ConsRing<u64>,
    ledger: Option<Ledger>,
    /// Bound with XDP_USE_SG: a chain goes out as one descriptor per buffer.
    sg: bool,
    fd: RawFd,
    /// Bytes of data room in a chunk after the default headroom (for copies).
    copy_room: usize,
    scratch: Box<[usize; SCRATCH]>,
    shared: Arc<XskShared>,
}

// SAFETY: the raw pointers point into mappings owned by `shared`, which this
// value keeps alive; each ring half is used only by the one owner of this value
// (the kernel is the other side), so moving it to another thread is fine.
unsafe impl Send for RxSide {}
// SAFETY: as for RxSide.
unsafe impl Send for TxSide {}

/// A created socket and its halves.
pub(crate) struct XskParts {
    pub(crate) shared: Arc<XskShared>,
    pub(crate) rx: Option<RxSide>,
    pub(crate) tx: Option<TxSide>,
}

impl XskShared {
    /// Create, configure and bind a socket; map its rings.
    pub(crate) fn create(s: &XskSetup<'_>) -> Result<XskParts, XskError> {
        let fd = socket(AF_XDP, libc::SOCK_RAW, 0).map_err(step(XskStep::Socket))?;
        let pool = s.pool;
        if s.share.is_none() {
            let reg = rustix::net::xdp::XdpUmemReg {
                addr: pool.region().as_ptr() as u64,
                len: (pool.size() as usize * pool.stride()) as u64,
                chunk_size: pool.stride() as u32,
                headroom: UMEM_HEADROOM as u32,
                flags: rustix::net::xdp::XdpUmemRegFlags::XDP_UMEM_UNALIGNED_CHUNK_FLAG,
                tx_metadata_len: 0,
            };
            debug_assert!(reg.len as usize <= pool.region().len());
            // The kernel pins these pages and may write any chunk we post. They
            // stay valid as long as this socket: it holds a handle on the pool,
            // and the pool never frees its memory with elements outstanding.
            sockopt::set_xdp_umem_reg(&fd, reg).map_err(|e| step(XskStep::UmemReg)(e.into()))?;
        }
        let ring = |set: rustix::io::Result<()>, what: &'static str| {
            set.map_err(|e| step(XskStep::RingSize(what))(e.into()))
        };
        ring(
            sockopt::set_xdp_umem_fill_ring_size(&fd, s.fill_size),
            "fill",
        )?;
        ring(
            sockopt::set_xdp_umem_completion_ring_size(&fd, s.comp_size),
            "completion",
        )?;
        if s.rx_size > 0 {
            ring(sockopt::set_xdp_rx_ring_size(&fd, s.rx_size), "rx")?;
        }
        if s.tx_size > 0 {
            ring(sockopt::set_xdp_tx_ring_size(&fd, s.tx_size), "tx")?;
        }
        let kernel_off =
            sockopt::xdp_mmap_offsets(&fd).map_err(|e| step(XskStep::MmapOffsets)(e.into()))?;
        let offsets = [
            &kernel_off.rx,
            &kernel_off.tx,
            &kernel_off.fr,
            &kernel_off.cr,
        ]
        .map(RingOffset::from_kernel);
        let [Some(off_rx), Some(off_tx), Some(off_fr), Some(off_cr)] = offsets else {
            // Kernels before 5.4 have no ring flags, hence no need_wakeup.
            return Err(XskError {
                step: XskStep::MmapOffsets,
                source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            });
        };
        let map = |what: &'static str, o: &RingOffset, n: u32, entry: usize, pgoff| {
            map_ring(&fd, o.desc as usize + n as usize * entry, pgoff)
                .map_err(step(XskStep::Mmap(what)))
        };
        let fill_map = map("fill", &off_fr, s.fill_size, 8, XDP_UMEM_PGOFF_FILL_RING)?;
        let comp_map = map(
            "completion",
            &off_cr,
            s.comp_size,
            8,
            XDP_UMEM_PGOFF_COMPLETION_RING,
        )?;
        let rx_map = if s.rx_size > 0 {
            Some(map("rx", &off_rx, s.rx_size, 16, XDP_PGOFF_RX_RING)?)
        } else {
            None
        };
        let tx_map = if s.tx_size > 0 {
            Some(map("tx", &off_tx, s.tx_size, 16, XDP_PGOFF_TX_RING)?)
        } else {
            None
        };
        let (flags, shared_fd) = match s.share {
            // The mode (copy, zero copy, need_wakeup) comes with the shared UMEM;
            // the kernel refuses other flags here.
            Some(o) => (XDP_SHARED_UMEM, o.raw_fd() as u32),
            None => (
                s.copy_flags | XDP_USE_NEED_WAKEUP | if s.sg { XDP_USE_SG } else { 0 },
                0,
            ),
        };
        let sa = SockaddrXdp {
            family: AF_XDP as u16,
            flags,
            ifindex: s.ifindex,
            queue_id: s.queue_id,
            shared_umem_fd: shared_fd,
        };
        // SAFETY: `sa` is a sockaddr_xdp of the stated length, read during the call.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const SockaddrXdp as *const libc::sockaddr,
                size_of::<SockaddrXdp>() as libc::socklen_t,
            )
        })
        .map_err(step(XskStep::Bind))?;
        let zero_copy = sockopt::xdp_options(&fd)
            .is_ok_and(|o| o.contains(rustix::net::xdp::XdpOptionsFlags::XDP_OPTIONS_ZEROCOPY));

        let fill = RingPtrs::new(&fill_map, &off_fr, s.fill_size);
        let comp = RingPtrs::new(&comp_map, &off_cr, s.comp_size);
        let rx = rx_map
            .as_ref()
            .map(|m| RingPtrs::new(m, &off_rx, s.rx_size));
        let tx = tx_map
            .as_ref()
            .map(|m| RingPtrs::new(m, &off_tx, s.tx_size));
        let raw = fd.as_raw_fd();
        let mut maps = vec![fill_map, comp_map];
        maps.extend(rx_map);
        maps.extend(tx_map);
        let shared = Arc::new(XskShared {
            maps,
            fd: Some(fd),
            zero_copy,
            _pool: pool.clone(),
            orphans: Mutex::new(Vec::new()),
        });
        let rx = rx.map(|r| RxSide {
            rx: ConsRing::new(r),
            fill: ProdRing::new(fill),
            ledger: Some(Ledger::new(pool)),
            deficit: 0,
            busy_poll: false,
            max_len: s.max_len,
            chain: RxChain::new(),
            broken: false,
            fd: raw,
            scratch: Box::new([0; SCRATCH]),
            shared: shared.clone(),
        });
        let tx = tx.map(|t| TxSide {
            tx: ProdRing::new(t),
            comp: ConsRing::new(comp),
            ledger: Some(Ledger::new(pool)),
            sg: s.sg,
            fd: raw,
            copy_room: pool.data_room(),
            scratch: Box::new([0; SCRATCH]),
            shared: shared.clone(),
        });
        Ok(XskParts { shared, rx, tx })
    }

    /// The socket's descriptor (for the XSKMAP and XDP_SHARED_UMEM).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1)
    }

    /// Whether the kernel bound the socket in zero-copy mode.
    pub(crate) fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// The kernel's counters for this socket.
    pub(crate) fn statistics(&self) -> io::Result<XskStats> {
        let fd = self.fd.as_ref().expect("open until dropped");
        Ok(XskStats::from_kernel(&sockopt::xdp_statistics(fd)?))
    }

    /// Preferred busy polling, as DPDK's busy_budget: SO_PREFER_BUSY_POLL,
    /// SO_BUSY_POLL (µs) and SO_BUSY_POLL_BUDGET (packets per poll).
    pub(crate) fn set_busy_poll(&self, usecs: u32, budget: u32) -> io::Result<()> {
        let fd = self.fd.as_ref().expect("open until dropped");
        setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PREFER_BUSY_POLL,
            &1 as &libc::c_int,
        )?;
        setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            &(usecs as libc::c_int),
        )?;
        setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL_BUDGET,
            &(budget as libc::c_int),
        )
    }
}

impl Drop for XskShared {
    fn drop(&mut self) {
        // The mappings hold references to the socket file: unmap them first so
        // that closing the fd really releases the socket. Release unbinds it and
        // waits (synchronize_net) until no receive path still uses it.
        self.maps.clear();
        drop(self.fd.take());
        if self.zero_copy {
            // In zero-copy mode the driver gives its posted buffers up in deferred
            // work after the release; give it time before the chunks become mbufs.
            std::thread::sleep(Duration::from_millis(100));
        }
        let orphans = std::mem::take(&mut *self.orphans.lock().unwrap_or_else(|e| e.into_inner()));
        for mut l in orphans {
            l.release_all();
        }
    }
}

/// What one receive burst did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RxOutcome {
    pub(crate) packets: u32,
    pub(crate) bytes: u64,
    pub(crate) errors: u32,
    pub(crate) nombuf: u32,
}

impl RxSide {
    /// Turn on the busy-polling kick (see [`XskShared::set_busy_poll`]).
    pub(crate) fn set_busy_poll(&mut self, on: bool) {
        self.busy_poll = on;
    }

    /// Post up to `want` fresh chunks on the fill ring; returns how many.
    #[inline]
    fn refill(&mut self, want: u32) -> u32 {
        let k = want.min(self.fill.free(want)).min(SCRATCH as u32) as usize;
        if k == 0 {
            return 0;
        }
        let ledger = self.ledger.as_mut().expect("present until drop");
        let buf = &mut self.scratch[..k];
        // SAFETY: we own the elements returned and give each back exactly once:
        // they are marked in the ledger and go to the kernel, and come back as an
        // Mbuf (rx_burst) or through Ledger::release_all once the socket is closed.
        if !unsafe { ledger.pool.alloc_raw(buf) } {
            return 0;
        }
        for (i, &e) in buf.iter().enumerate() {
            let a = ledger.give(e);
            self.fill.write(i as u32, a);
        }
        self.fill.submit(k as u32);
        k as u32
    }

    /// Fill the fill ring with `n` chunks before the queue starts; false if the
    /// pool could not provide them.
    pub(crate) fn prime(&mut self, n: u32) -> bool {
        let mut left = n;
        while left > 0 {
            let k = self.refill(left);
            if k == 0 {
                return false;
            }
            left -= k;
        }
        true
    }

    /// Move up to `out.spare()` received frames into `out` as mbufs stamped with
    /// `port` and `queue`, and post as many fresh chunks. At most one syscall:
    /// recvfrom(MSG_DONTWAIT) when nothing arrived and the kernel asked for a
    /// wakeup on the fill ring, or busy polling is on.
    #[inline]
    pub(crate) fn rx_burst(&mut self, out: &mut MbufBatch, port: u16, queue: u16) -> RxOutcome {
        let mut o = RxOutcome::default();
        let spare = out.spare() as u32;
        let n = if spare == 0 { 0 } else { self.rx.peek(spare) };
        if n > 0 {
            let ledger = self.ledger.as_mut().expect("present until drop");
            let base = ledger.base;
            for i in 0..n {
                let d = self.rx.read(i);
                // Unaligned-chunk mode: the chunk we posted in the low 48 bits,
                // the frame's offset from it in the high 16. Kernels before
                // 6.15 put the chunk + UMEM headroom in the low bits (fixed by
                // "xsk: Fix offset calculation in unaligned mode"), so the
                // chunk is taken as the element that address falls in.
                let (chunk, offset) = split_rx_addr(d.addr);
                let m = ledger.take(chunk).and_then(|hdr| {
                    // SAFETY: the ledger had this element marked as posted by us
                    // and the kernel handed it back on the RX ring, so the kernel
                    // is done with it and nothing else owns it; `hdr` is its
                    // header, as the pool gave it.
                    let mut m =
                        unsafe { Mbuf::from_raw(NonNull::new_unchecked(hdr as *mut MbufHeader)) };
                    // Data offset from the buffer start (right after the header).
                    let frame = base + ledger.chunk_start(chunk) + offset;
                    let data_off = frame.wrapping_sub(hdr + HEADER_SIZE);
                    m.reset();
                    // A bad length or offset: dropped here (not a chunk we
                    // posted: never made an mbuf of).
                    m.set_data(data_off, d.len as usize).then_some(m)
                });
                if d.options & XDP_PKT_CONTD == 0 && self.chain.is_empty() && !self.broken {
                    match m {
                        Some(mut m) if d.len as usize <= self.max_len => {
                            m.set_port(port);
                            m.set_queue(queue);
                            o.packets += 1;
                            o.bytes += u64::from(d.len);
                            // n <= spare, so this cannot fail.
                            let _ = out.push(m);
                        }
                        _ => o.errors += 1,
                    }
                    continue;
                }
                // A buffer of a multi-buffer packet (XDP_USE_SG).
                match m {
                    Some(m) if !self.broken => {
                        if let Err(m) = self.chain.push(m) {
                            drop(m);
                            self.broken = true;
                        }
                    }
                    m => {
                        drop(m);
                        self.broken = true;
                    }
                }
                if d.options & XDP_PKT_CONTD != 0 {
                    continue;
                }
                if self.broken || self.chain.pkt_len() > self.max_len {
                    self.chain.discard();
                    self.broken = false;
                    o.errors += 1;
                    continue;
                }
                let Some(mut m) = self.chain.finish() else {
                    continue;
                };
                m.set_port(port);
                m.set_queue(queue);
                o.packets += 1;
                o.bytes += m.pkt_len() as u64;
                let _ = out.push(m);
            }
            self.rx.release(n);
        }
        let want = n + self.deficit;
        if want > 0 {
            let mut posted = self.refill(want);
            if posted < want && want - posted > 32 {
                posted += self.refill(32);
            }
            let deficit = want - posted;
            o.nombuf = deficit.saturating_sub(self.deficit);
            self.deficit = deficit;
        }
        if n == 0 && spare > 0 && (self.busy_poll || self.fill.needs_wakeup()) {
            kick_rx(self.fd);
        }
        o
    }
}

impl Drop for RxSide {
    fn drop(&mut self) {
        if let Some(l) = self.ledger.take() {
            self.shared
                .orphans
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(l);
        }
    }
}

/// What one transmit burst did.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TxOutcome {
    /// Packets taken from the batch (sent or dropped).
    pub(crate) taken: u32,
    /// Packets put on the TX ring.
    pub(crate) packets: u32,
    pub(crate) bytes: u64,
    /// Packets dropped: empty, or from another pool and too large for a chunk.
    pub(crate) errors: u32,
}

impl TxSide {
    /// Return completed chunks to the pool.
    #[inline]
    fn reclaim(&mut self) {
        let ledger = self.ledger.as_mut().expect("present until drop");
        loop {
            let k = self.comp.peek(SCRATCH as u32);
            if k == 0 {
                break;
            }
            let mut f = 0;
            for i in 0..k {
                if let Some(e) = ledger.take(self.comp.read(i)) {
                    self.scratch[f] = e;
                    f += 1;
                }
            }
            self.comp.release(k);
            // SAFETY: each element was marked as posted by us and the kernel
            // completed it, so it is done reading it and nothing else owns it.
            unsafe { ledger.pool.free_raw(&self.scratch[..f]) };
            if (k as usize) < SCRATCH {
                break;
            }
        }
    }

    /// Put as many packets from the front of `pkts` on the TX ring as fit.
    /// Mbufs of the port's pool go out in place (the descriptor points at their
    /// data in the UMEM); others are copied into a chunk of ours. A chain goes
    /// out as one descriptor per segment (XDP_PKT_CONTD on all but the last)
    /// when the socket is bound with XDP_USE_SG, else copied into one chunk if
    /// it fits. At most one syscall: sendto(MSG_DONTWAIT) when the kernel asked
    /// for a wakeup and something is waiting on the ring.
    #[inline]
    pub(crate) fn tx_burst(&mut self, pkts: &mut MbufBatch) -> TxOutcome {
        self.reclaim();
        let mut o = TxOutcome::default();
        // Descriptors written (the next one's index past the producer).
        let mut descs = 0u32;
        let len = pkts.len() as u32;
        if len > 0 {
            let room = self.tx.free(len);
            let ledger = self.ledger.as_mut().expect("present until drop");
            while descs < room && !pkts.is_empty() {
                let m = &pkts.as_slice()[0];
                if m.is_chained() {
                    match post_chain(
                        &mut self.tx,
                        ledger,
                        &mut self.scratch[..],
                        self.copy_room,
                        self.sg,
                        pkts,
                        descs,
                        room - descs,
                    ) {
                        ChainPost::Posted { descs: k, bytes } => {
                            descs += k;
                            o.packets += 1;
                            o.bytes += bytes as u64;
                        }
                        ChainPost::Wait => break,
                        ChainPost::Drop => o.errors += 1,
                    }
                    o.taken += 1;
                    continue;
                }
                let hdr = m.buf_addr() as usize - HEADER_SIZE;
                let dlen = m.len();
                let addr = if dlen == 0 {
                    // The kernel would consume an empty descriptor without ever
                    // completing it (an invalid descriptor): drop it here.
                    drop(pkts.pop_front());
                    o.taken += 1;
                    o.errors += 1;
                    continue;
                } else if ledger.contains(hdr) {
                    ledger.give(hdr);
                    let addr = (m.data().as_ptr() as usize - ledger.base) as u64;
                    let m = pkts.pop_front().expect("checked non-empty");
                    // The element now belongs to the kernel until it completes.
                    let _ = m.into_raw();
                    addr
                } else if dlen > self.copy_room {
                    drop(pkts.pop_front());
                    o.taken += 1;
                    o.errors += 1;
                    continue;
                } else {
                    let mut one = [0usize; 1];
                    // SAFETY: we own the element returned; it is marked in the
                    // ledger and comes back through the completion ring or
                    // Ledger::release_all.
                    if !unsafe { ledger.pool.alloc_raw(&mut one) } {
                        break;
                    }
                    let off = ledger.give(one[0]) + ELEMENT_DATA_OFFSET as u64;
                    let dst = ledger.base + off as usize;
                    // SAFETY: the fresh element is ours alone (the kernel gets it
                    // when the descriptor is published) and has copy_room >= dlen
                    // bytes from its data offset; the source is the mbuf's own data,
                    // in another element.
                    unsafe { ptr::copy_nonoverlapping(m.data().as_ptr(), dst as *mut u8, dlen) };
                    drop(pkts.pop_front());
                    off
                };
                self.tx.write(
                    descs,
                    XdpDesc {
                        addr,
                        len: dlen as u32,
                        options: 0,
                    },
                );
                descs += 1;
                o.packets += 1;
                o.taken += 1;
                o.bytes += dlen as u64;
            }
            if descs > 0 {
                self.tx.submit(descs);
            }
        }
        if self.tx.needs_wakeup() && (descs > 0 || self.tx.pending()) {
            kick_tx(self.fd);
        }
        o
    }
}

/// What became of a chain offered to the TX ring.
enum ChainPost {
    /// Taken from the batch and on the ring as `descs` descriptors (not yet
    /// submitted).
    Posted { descs: u32, bytes: usize },
    /// Left in the batch: too few free descriptors, or the pool is short of
    /// chunks for the copies.
    Wait,
    /// Taken from the batch and freed: too long for one chunk without
    /// XDP_USE_SG, or for the most descriptors a packet may take.
    Drop,
}

/// Put the chain at the front of `pkts` on the TX ring from descriptor `at`
/// on, in at most `room` descriptors: each non-empty segment of the port's
/// pool in place, each other one copied into a chunk of ours; without
/// XDP_USE_SG, or with more segments than [`MAX_TX_FRAGS`], the whole packet
/// copied into as few chunks as it takes. Nothing is written or taken unless
/// all of it fits (the chunks for the copies are taken at once first).
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
fn post_chain(
    tx: &mut ProdRing<XdpDesc>,
    ledger: &mut Ledger,
    scratch: &mut [usize],
    copy_room: usize,
    sg: bool,
    pkts: &mut MbufBatch,
    at: u32,
    room: u32,
) -> ChainPost {
    let m = &pkts.as_slice()[0];
    let total = m.pkt_len();
    let segs = m.segments().filter(|s| !s.is_empty()).count();
    // A segment's data lies in its element: in the UMEM if it is ours. A
    // foreign one is copied into a chunk, so it must fit one.
    let foreign = |s: &&[u8]| !s.is_empty() && !ledger.contains(s.as_ptr() as usize);
    let in_place =
        sg && segs <= MAX_TX_FRAGS && m.segments().filter(foreign).all(|s| s.len() <= copy_room);
    let (descs, copies) = if in_place {
        (segs, m.segments().filter(foreign).count())
    } else {
        let k = total.div_ceil(copy_room);
        (k, k)
    };
    if descs == 0 || descs > MAX_TX_FRAGS || (!sg && descs > 1) {
        drop(pkts.pop_front());
        return ChainPost::Drop;
    }
    if descs > room as usize || copies > scratch.len() {
        return ChainPost::Wait;
    }
    let chunks = &mut scratch[..copies];
    // SAFETY: we own the elements returned; each is marked in the ledger
    // below and comes back through the completion ring or
    // Ledger::release_all.
    if copies > 0 && !unsafe { ledger.pool.alloc_raw(chunks) } {
        return ChainPost::Wait;
    }
    let m = pkts.pop_front().expect("checked non-empty");
    let mut descriptors = [(0u64, 0u32); MAX_TX_FRAGS];
    if in_place {
        let mut next_copy = 0;
        let mut k = 0;
        let mut rest = Some(m);
        while let Some(p) = rest {
            let (seg, r) = p.split_first();
            rest = r;
            let n = seg.len();
            if n == 0 {
                continue;
            }
            let hdr = seg.buf_addr() as usize - HEADER_SIZE;
            let addr = if ledger.contains(hdr) {
                ledger.give(hdr);
                let addr = (seg.data().as_ptr() as usize - ledger.base) as u64;
                // The element now belongs to the kernel until it completes.
                let _ = seg.into_raw();
                addr
            } else {
                let off = ledger.give(chunks[next_copy]) + ELEMENT_DATA_OFFSET as u64;
                next_copy += 1;
                // SAFETY: the fresh element is ours alone (the kernel gets it
                // when the descriptor is published) and has copy_room >= n
                // bytes from its data offset (checked above: a larger foreign
                // segment makes the packet repacked instead); the source is
                // the segment's own data, in another element.
                unsafe {
                    ptr::copy_nonoverlapping(
                        seg.data().as_ptr(),
                        (ledger.base + off as usize) as *mut u8,
                        n,
                    )
                };
                off
            };
            descriptors[k] = (addr, n as u32);
            k += 1;
        }
        debug_assert_eq!(k, descs);
    } else {
        for (k, &chunk) in chunks.iter().enumerate() {
            let off = ledger.give(chunk) + ELEMENT_DATA_OFFSET as u64;
            let from = k * copy_room;
            let n = (total - from).min(copy_room);
            // SAFETY: the fresh element is ours alone until the descriptor is
            // published, with copy_room >= n bytes from its data offset.
            let dst = unsafe {
                std::slice::from_raw_parts_mut((ledger.base + off as usize) as *mut u8, n)
            };
            m.copy_out(from, dst);
            descriptors[k] = (off, n as u32);
        }
        drop(m);
    }
    for (k, &(addr, len)) in descriptors[..descs].iter().enumerate() {
        tx.write(
            at + k as u32,
            XdpDesc {
                addr,
                len,
                options: if k + 1 < descs { XDP_PKT_CONTD } else { 0 },
            },
        );
    }
    ChainPost::Posted {
        descs: descs as u32,
        bytes: total,
    }
}

impl Drop for TxSide {
    fn drop(&mut self) {
        self.reclaim();
        if let Some(l) = self.ledger.take() {
            self.shared
                .orphans
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(l);
        }
    }
}

/// Wake the kernel's transmit path (copy mode transmits inside this call).
#[inline]
fn kick_tx(fd: RawFd) {
    // SAFETY: a zero-length sendto with no buffer and no address; `fd` is the
    // socket kept open by the caller's handle on it. Errors (EAGAIN, EBUSY,
    // ENOBUFS: the kernel is still busy) are retried by the next burst.
    unsafe { libc::sendto(fd, ptr::null(), 0, libc::MSG_DONTWAIT, ptr::null(), 0) };
}

/// Wake the driver's receive path, or busy-poll it (kernels >= 5.11).
#[inline]
fn kick_rx(fd: RawFd) {
    // SAFETY: a zero-length, non-blocking recvfrom with no buffer or address; `fd`
    // is the socket kept open by the caller's handle on it.
    unsafe {
        libc::recvfrom(
            fd,
            ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use nicpoll::memory::DmaMemory;
    use nicpoll::mempool::MempoolConfig;

    #[test]
    fn layout_constants() {
        assert_eq!(UMEM_HEADROOM, 128);
        assert_eq!(UMEM_HEADROOM + XDP_PACKET_HEADROOM, ELEMENT_DATA_OFFSET);
        assert_eq!(rx_frame_room(2048), 1664);
        assert_eq!(rx_frame_room(4096), 3712);
    }

    #[test]
    fn ledger_gives_and_takes_only_what_it_gave() {
        let mem = DmaMemory::plain();
        let pool = Mempool::new(&mem, &MempoolConfig::new("ledger", 130)).unwrap();
        assert_eq!(rx_frame_room(pool.stride()), pool.data_room());
        let mut l = Ledger::new(&pool);
        let mut raw = [0usize; 6];
        // SAFETY: the elements are handed back below through the ledger.
        assert!(unsafe { pool.alloc_raw(&mut raw) });
        let offs: Vec<u64> = raw.iter().map(|&h| l.give(h)).collect();
        assert_eq!(l.held, 6);
        for (&o, &h) in offs.iter().zip(&raw) {
            assert_eq!(o % pool.stride() as u64, 0);
            assert_eq!(l.element_offset(h), o);
            // An address inside the chunk maps back to the element's header,
            // whatever its color.
            assert_eq!(l.take(o + ELEMENT_DATA_OFFSET as u64), Some(h));
            l.give(h);
        }
        // RX addresses in unaligned mode, as kernels since 6.15 write them
        // (chunk | offset << 48) and as earlier ones did (chunk + headroom in
        // the low bits): both name the element and a frame at its data offset.
        for addr in [
            offs[2] | (ELEMENT_DATA_OFFSET as u64) << 48,
            (offs[2] + UMEM_HEADROOM as u64) | (ELEMENT_DATA_OFFSET as u64) << 48,
        ] {
            let (chunk, off) = split_rx_addr(addr);
            assert_eq!(
                l.chunk_start(chunk) + off,
                offs[2] as usize + ELEMENT_DATA_OFFSET
            );
            assert_eq!(l.take(chunk), Some(raw[2]));
            l.give(raw[2]);
        }
        // Garbage in the low bits names no element of ours.
        assert_eq!(l.take(split_rx_addr(u64::MAX).0), None);
        assert_eq!(l.take(offs[0] + 448), Some(raw[0]));
        assert_eq!(l.take(offs[0] + 448), None, "taken twice");
        assert_eq!(l.take(u64::MAX), None, "outside the UMEM");
        assert_eq!(l.take(l.len), None, "one past the end");
        assert!(l.contains(raw[1]) && !l.contains(raw[1] + l.len as usize));
        assert_eq!(pool.in_use(), 6);
        // SAFETY: raw[0] came back from the ledger above and is ours.
        unsafe { pool.free_raw(&raw[..1]) };
        l.release_all();
        assert_eq!(pool.in_use(), 0);
        assert_eq!(l.held, 0);
    }
}
