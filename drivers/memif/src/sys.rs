//! The driver's unsafe code: shared-memory mappings (memfd, mmap, munmap), the
//! memif ring header and descriptors in memory the peer writes, and bounded
//! copies between that memory and mbufs.
//!
//! Memory shared with the peer is never behind a Rust reference: ring indices
//! are read and written through `AtomicU16::from_ptr` (an `UnsafeCell`-based
//! atomic, made for memory other agents write), the ring flags and the
//! descriptors with `read_volatile`/`write_volatile`, and packet bytes are
//! copied with raw-pointer copies after a bounds check against the region the
//! peer declared. Whatever the peer writes there, nothing here reads or writes
//! outside a mapping, and no value read from it is used as an address before
//! it has been checked against the region it points into.
//!
//! Ring layout (`memif_ring_t`, DPDK drivers/net/memif/memif.h:167-177 and
//! libmemif memif.h:165-176, 64-byte cache lines): the cookie (u32) at 0,
//! flags (u16) at 4, head (u16) at 6, tail (u16) at 64, and the descriptors
//! from 128. A descriptor (`memif_desc_t`, memif.h:155-162) is 16 bytes: flags
//! u16, region u16, length u32, offset u32, metadata u32.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

use nicpoll::mbuf::{Mbuf, MbufBatch, MbufHeader, RxHeaderTemplate};
use nicpoll::mempool::Mempool;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};

#[cfg(not(target_endian = "little"))]
compile_error!("the memif wire format is little-endian; this driver reads it natively");

/// Bytes of the ring header before the first descriptor.
pub const RING_HEADER_SIZE: usize = 128;
/// Bytes per descriptor.
pub const DESC_SIZE: usize = 16;
const DESC_SHIFT: u32 = DESC_SIZE.trailing_zeros();
const RING_FLAGS_OFFSET: usize = 4;
const RING_HEAD_OFFSET: usize = 6;
const RING_TAIL_OFFSET: usize = 64;
/// `MEMIF_RING_FLAG_MASK_INT` (memif.h:171): the receiver polls and wants no
/// interrupt.
pub const RING_FLAG_MASK_INT: u16 = 1;
/// `MEMIF_DESC_FLAG_NEXT` (memif.h:157): the frame goes on in the next slot.
pub const DESC_FLAG_NEXT: u16 = 1;

/// A read-write shared mapping of a file (a memfd or a hugetlbfs file),
/// unmapped when dropped.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide memory that this value only owns (it
// unmaps it once, in Drop); it hands out raw addresses, never references, and
// every access through them is volatile, atomic or a bounded raw copy whose
// synchronization the memif protocol (head/tail acquire/release) provides.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&self` methods only read the immutable pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// A new memfd of `len` bytes (sealed against shrinking, as DPDK's regions:
    /// rte_eth_memif.c:965-976, so the peer cannot fault on a page we cut
    /// away), mapped read-write. Returns the mapping and the fd to send.
    pub fn new_memfd(name: &str, len: usize) -> io::Result<(Mapping, OwnedFd)> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK)?;
        let m = Mapping::map(&fd, len)?;
        Ok((m, fd))
    }

    /// Map `len` bytes of a file the peer sent. Refused when the file is
    /// shorter than `len`: touching a page past its end would be SIGBUS.
    pub fn map_peer(fd: &OwnedFd, len: u64) -> io::Result<Mapping> {
        let st = rustix::fs::fstat(fd)?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size < len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the region is {len} bytes but its file only {size}"),
            ));
        }
        let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
        Mapping::map(fd, len)
    }

    fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty region"));
        }
        // SAFETY: no fixed address is asked for, so the kernel picks an unused
        // range that overlaps nothing Rust owns; the fd is open and borrowed for
        // the call only (the mapping keeps the file alive by itself).
        let p = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd.as_fd(),
                0,
            )
        }?;
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned 0"))?;
        Ok(Mapping { ptr, len })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: an empty mapping is refused at creation.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned, unmapped once; every RingView
        // and Region over it holds an Arc to this mapping, so none is left.
        if let Err(e) = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) } {
            log::warn!("memif: munmap of a {}-byte region: {e}", self.len);
        }
    }
}

/// What keeps a region's memory mapped while a [`Region`] points into it
/// (held, never read).
#[derive(Clone, Debug)]
#[allow(dead_code)]
enum Keep {
    /// A mapping of ours (a memfd we made, or a file the peer sent).
    Mapping(Arc<Mapping>),
    /// The memory of a mempool (zero-copy: the mbufs' own memory).
    Pool(Mempool),
}

/// One memif region as this process sees it: a base address and a length,
/// kept mapped by the value itself. Copies in and out are bounds-checked.
#[derive(Clone, Debug)]
pub struct Region {
    base: usize,
    len: usize,
    _keep: Keep,
}

// SAFETY: see Mapping; a pool's region lives as long as the pool handle kept here.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// A region over a whole mapping.
    pub fn of_mapping(m: Arc<Mapping>) -> Region {
        Region {
            base: m.ptr.as_ptr() as usize,
            len: m.len,
            _keep: Keep::Mapping(m),
        }
    }

    /// A region over a mempool's memory (every mbuf of the pool lies in it).
    pub fn of_pool(pool: &Mempool) -> Region {
        let r = pool.region();
        Region {
            base: r.as_ptr() as usize,
            len: r.len(),
            _keep: Keep::Pool(pool.clone()),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region has no bytes (never, for a mapped one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `len` bytes at `offset` lie inside the region.
    #[inline(always)]
    pub fn contains(&self, offset: u32, len: u32) -> bool {
        offset as u64 + len as u64 <= self.len as u64
    }

    /// The offset of `[addr, addr + len)` in the region, if it lies inside.
    #[inline(always)]
    pub fn offset_of(&self, addr: usize, len: usize) -> Option<u32> {
        let off = addr.wrapping_sub(self.base);
        if off <= self.len && len <= self.len - off {
            u32::try_from(off).ok()
        } else {
            None
        }
    }

    /// Copy `dst.len()` bytes from `offset`; false (nothing copied) when they
    /// do not lie inside the region.
    #[inline(always)]
    pub fn copy_out(&self, offset: u32, dst: &mut [u8]) -> bool {
        if !self.contains(offset, dst.len() as u32) || dst.len() > u32::MAX as usize {
            return false;
        }
        // SAFETY: the source range is inside the mapping (checked above) and
        // the mapping lives as long as `self`; the destination is a slice we
        // hold exclusively; the two cannot overlap (an mbuf is never inside a
        // region we copy from, and if the peer aliased it, bytes are bytes).
        // The peer does not write a buffer between publishing it and our index
        // release; if it breaks that rule we copy torn bytes, which u8 allows.
        unsafe {
            copy_bytes(
                (self.base + offset as usize) as *const u8,
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        true
    }

    /// Copy `src` to `offset`; false (nothing copied) when it does not fit.
    #[inline(always)]
    pub fn copy_in(&self, offset: u32, src: &[u8]) -> bool {
        if !self.contains(offset, src.len() as u32) || src.len() > u32::MAX as usize {
            return false;
        }
        // SAFETY: the destination range is inside the mapping (checked above),
        // which lives as long as `self`; nothing in this process holds a
        // reference into it; the source is a slice we borrow.
        unsafe {
            copy_bytes(
                src.as_ptr(),
                (self.base + offset as usize) as *mut u8,
                src.len(),
            )
        };
        true
    }

    /// Hint the CPU to fetch the cache line at `offset`. A hint only: an
    /// offset outside the region (a peer's garbage) fetches nothing useful
    /// and harms nothing, so it is not checked.
    #[inline(always)]
    pub fn prefetch(&self, offset: u32) {
        prefetch_read(self.base.wrapping_add(offset as usize));
    }
}

/// Copy `len` bytes between non-overlapping ranges, without a call: frames
/// of 16 to 64 bytes (the common case) in two or four overlapping 16-byte
/// moves, others with `rep movsb` (fast on CPUs with ERMS, and, unlike a
/// call to memcpy, it leaves the caller's registers alone, so a burst loop
/// that copies keeps its state in registers).
///
/// # Safety
/// `src` is readable and `dst` writable for `len` bytes, and they do not overlap.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    type Chunk = std::arch::x86_64::__m128i;
    #[cfg(not(target_arch = "x86_64"))]
    type Chunk = [u8; 16];
    // SAFETY: in every arm all offsets used are below `len`, reads and writes
    // are unaligned-tolerant, and the caller guarantees both ranges. (A
    // vector type rather than [u8; 16], which the compiler moves through the
    // stack.) `rep movsb` copies exactly `len` bytes forward (the ABI keeps
    // the direction flag clear) and touches no stack.
    unsafe {
        if (32..=64).contains(&len) {
            let a = ptr::read_unaligned(src as *const Chunk);
            let b = ptr::read_unaligned(src.add(16) as *const Chunk);
            let c = ptr::read_unaligned(src.add(len - 32) as *const Chunk);
            let d = ptr::read_unaligned(src.add(len - 16) as *const Chunk);
            ptr::write_unaligned(dst as *mut Chunk, a);
            ptr::write_unaligned(dst.add(16) as *mut Chunk, b);
            ptr::write_unaligned(dst.add(len - 32) as *mut Chunk, c);
            ptr::write_unaligned(dst.add(len - 16) as *mut Chunk, d);
        } else if (16..32).contains(&len) {
            let a = ptr::read_unaligned(src as *const Chunk);
            let b = ptr::read_unaligned(src.add(len - 16) as *const Chunk);
            ptr::write_unaligned(dst as *mut Chunk, a);
            ptr::write_unaligned(dst.add(len - 16) as *mut Chunk, b);
        } else {
            #[cfg(target_arch = "x86_64")]
            std::arch::asm!(
                "rep movsb",
                inout("rcx") len => _,
                inout("rdi") dst => _,
                inout("rsi") src => _,
                options(nostack, preserves_flags)
            );
            #[cfg(not(target_arch = "x86_64"))]
            ptr::copy_nonoverlapping(src, dst, len);
        }
    }
}

/// Prefetch the cache line holding `addr` for reading. A hint: any address,
/// mapped or not, is allowed.
#[inline(always)]
pub fn prefetch_read(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 never faults, whatever the address; SSE is part of
    // the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// What a copy-mode receive pass did with the descriptors it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCopied {
    /// Descriptors consumed (the ring's consumer index moves by this much).
    pub consumed: u16,
    /// Frames appended to the batch.
    pub got: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Descriptors dropped as bad (unknown region, outside it, too long).
    pub bad: u64,
    /// Chained frames dropped.
    pub chained: u64,
    /// The pass stopped inside a chained frame being dropped.
    pub in_chain: bool,
}

/// The ring and regions a copy-mode receive reads, and where it starts.
#[derive(Clone, Copy, Debug)]
pub struct RxSource<'a> {
    /// The ring.
    pub ring: &'a RingView,
    /// Every region of the connection, by index.
    pub regions: &'a [Region],
    /// The first slot to read.
    pub cur: u16,
    /// Slots published from `cur` on.
    pub avail: u16,
    /// Longest frame an mbuf takes (the pool's data room, at most 65535).
    pub room: u32,
}

/// Copy-mode receive: allocate `n` mbufs of `pool` straight into the spare
/// slots of `out` (`n <= out.spare()`, `n <= src.avail`), copy the frames
/// the descriptors from `src.cur` on describe into them, and append those
/// that pass the checks. Returns `None` (nothing allocated, nothing read,
/// `out` untouched) when the pool has fewer than `n`.
///
/// The loop that runs for every frame of a well-behaved peer takes single
/// descriptors (no chain flag) of a known region, inside it and no longer
/// than the room: two descriptor loads, the checks, one copy, and the header
/// in four stores (the [`RxHeaderTemplate`], flags, length). Anything else
/// (a chained frame, a bad descriptor, a chain a previous pass stopped in)
/// goes to [`rx_copy_checked`], which drops and counts it.
#[inline(never)]
pub fn rx_copy(
    pool: &Mempool,
    out: &mut MbufBatch,
    n: usize,
    tpl: &RxHeaderTemplate,
    src: &RxSource<'_>,
    in_chain: bool,
) -> Option<RxCopied> {
    let slots = out.spare_raw(n);
    // SAFETY: the pool fills `slots` with `n` elements that are ours from now
    // on (or with nothing, returning false); each is given back below, either
    // to `out` by commit_raw or to the pool by free_raw.
    if !unsafe { pool.alloc_raw(slots) } {
        return None;
    }
    let (descs, cur, room, tpl_copy) = (src.ring.descs(), src.cur, src.room, *tpl);
    let mut r = RxCopied {
        in_chain,
        ..RxCopied::default()
    };
    let (mut k, mut i) = (0usize, 0u16);
    // The region of the first descriptor: one region (the client's buffers,
    // or its shared pool) carries every frame of a burst. A descriptor with
    // flags, or of another region, ends this loop.
    let first = descs.get(cur);
    if let Some(reg) = src.regions.get(first.region as usize)
        && !in_chain
    {
        let single = (first.region as u32) << 16;
        let (base, reg_len) = (reg.base, reg.len as u64);
        let mut bytes = 0u64;
        // Walk the table by pointer, wrapping at its end, and warm the buffer
        // `ahead` slots further (a slot past what the peer published holds an
        // old or garbage offset: the prefetch of a wild address is only a
        // wasted hint).
        let (ring_start, ring_end) = descs.bounds();
        let ahead = if descs.mask >= 7 { 4 * 2 } else { 0 };
        let ring_words = (descs.mask + 1) * 2;
        let mut dp = descs.ptr(cur) as *const u64;
        let mut out_slot = slots.as_ptr();
        let slots_end = slots.as_ptr().wrapping_add(n);
        while out_slot != slots_end {
            // SAFETY: `dp` and `pf` point at descriptors of the table (each
            // step wraps at its end; `ahead` is less than the slot count),
            // read volatilely; `out_slot` is one of the `n` slots.
            let (w0, w1, p) = unsafe {
                let mut pf = dp.add(ahead);
                if pf >= ring_end {
                    pf = pf.sub(ring_words);
                }
                prefetch_read(base.wrapping_add(ptr::read_volatile(pf.add(1)) as u32 as usize));
                (
                    ptr::read_volatile(dp),
                    ptr::read_volatile(dp.add(1)),
                    *out_slot,
                )
            };
            let (len, off) = ((w0 >> 32) as u32, w1 as u32);
            if w0 as u32 != single || len > room || off as u64 + len as u64 > reg_len {
                break;
            }
            // SAFETY: `p` is an element the pool just handed us and no
            // reference to its header exists; the view does not take it
            // over (it stays in `slots` until committed). `len <= room`, the
            // data room every element of the pool has from its default data
            // offset on. The source lies inside the region (checked above),
            // which `src.regions` keeps mapped; the destination is the mbuf's
            // own buffer; they cannot overlap.
            unsafe {
                let hdr = NonNull::new_unchecked(p as *mut MbufHeader);
                tpl_copy.apply(hdr);
                let mut m = ManuallyDrop::new(Mbuf::from_raw(hdr));
                m.set_ol_flags(0);
                m.set_len_unchecked(len as usize);
                copy_bytes(
                    (base + off as usize) as *const u8,
                    m.data_mut().as_mut_ptr(),
                    len as usize,
                );
            }
            bytes += len as u64;
            out_slot = out_slot.wrapping_add(1);
            dp = dp.wrapping_add(2);
            if dp == ring_end {
                dp = ring_start;
            }
        }
        // SAFETY: both point into `slots`, `out_slot` at or after its start.
        k = unsafe { out_slot.offset_from(slots.as_ptr()) } as usize;
        i = k as u16;
        r.bytes = bytes;
    }
    if k < n && i < src.avail {
        rx_copy_checked(slots, &mut k, &mut i, tpl, src, &mut r);
    }
    if k < n {
        // SAFETY: the elements past `k` are ours and go back to their pool;
        // they leave `slots` (only the first `k` are committed).
        unsafe { pool.free_raw(&slots[k..n]) };
    }
    // SAFETY: the first `k` slots of the last spare_raw hold elements we
    // own, with headers prepared; no other method of `out` ran in between.
    unsafe { out.commit_raw(k) };
    r.consumed = i;
    r.got = k;
    Some(r)
}

/// The rest of [`rx_copy`]'s pass, descriptor by descriptor with every
/// check: chained frames and bad descriptors are dropped and counted, and
/// the mbuf they would have taken is used for the next frame.
#[cold]
#[inline(never)]
fn rx_copy_checked(
    slots: &mut [usize],
    k: &mut usize,
    i: &mut u16,
    tpl: &RxHeaderTemplate,
    src: &RxSource<'_>,
    r: &mut RxCopied,
) {
    let descs = src.ring.descs();
    while *k < slots.len() && *i < src.avail {
        let d = descs.get(src.cur.wrapping_add(*i));
        *i += 1;
        if r.in_chain {
            r.in_chain = d.flags & DESC_FLAG_NEXT != 0;
            continue;
        }
        if d.flags & DESC_FLAG_NEXT != 0 {
            r.chained += 1;
            r.in_chain = true;
            continue;
        }
        let Some(reg) = src.regions.get(d.region as usize) else {
            r.bad += 1;
            continue;
        };
        if d.length > src.room || !reg.contains(d.offset, d.length) {
            r.bad += 1;
            continue;
        }
        let p = slots[*k];
        // SAFETY: as in rx_copy: an element we own, its length checked
        // against the room, the source inside its region.
        unsafe {
            let hdr = NonNull::new_unchecked(p as *mut MbufHeader);
            tpl.apply(hdr);
            let mut m = ManuallyDrop::new(Mbuf::from_raw(hdr));
            m.set_ol_flags(0);
            m.set_len_unchecked(d.length as usize);
            copy_bytes(
                (reg.base + d.offset as usize) as *const u8,
                m.data_mut().as_mut_ptr(),
                d.length as usize,
            );
        }
        r.bytes += d.length as u64;
        *k += 1;
    }
}

/// What a copy-mode transmit pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxCopied {
    /// Frames written (from the front of the batch, which still holds them).
    pub sent: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Client, copy mode: copy the frames at the front of `pkts` into the
/// buffers of the slots from `head` on (at most `free` of them), slot `s`
/// owning the `bsize` bytes at `base + (s & mask) * bsize` of `region`, and
/// write their descriptors. Stops at the first frame that is empty or longer
/// than a buffer (the caller's checked loop takes those; so must it a
/// multi-segment mbuf, which [`free_front_unchained`] cannot free), and does
/// nothing when the buffers do not all lie inside the region. The frames stay in
/// `pkts`; the caller publishes the head and frees them.
///
/// Per frame: the mbuf's two header fields, one length check, one copy, two
/// descriptor stores; slot and buffer advance together, wrapping at the end
/// of the table.
#[inline(never)]
pub fn tx_copy(
    pkts: &MbufBatch,
    ring: &RingView,
    region: &Region,
    (base, bsize): (u32, u32),
    head: u16,
    free: u16,
) -> TxCopied {
    let mut t = TxCopied::default();
    let size = ring.size() as u64;
    if base as u64 + size * bsize as u64 > region.len as u64 || bsize == 0 {
        return t;
    }
    let descs = ring.descs();
    let (ring_start, ring_end) = descs.bounds();
    let mut dp = descs.ptr(head);
    let mut off = base + (head & ring.mask) as u32 * bsize;
    let n = pkts.len().min(free as usize);
    for m in &pkts.as_slice()[..n] {
        let data = m.data();
        let len = data.len();
        if len.wrapping_sub(1) >= bsize as usize || !one_segment(m) {
            break;
        }
        // SAFETY: the buffer at `off` (`bsize` bytes, inside the region as
        // checked above for every slot) takes `len <= bsize` bytes; the
        // region is kept mapped by `region`; the mbuf's data is a slice we
        // borrow, never inside a region we write. `dp` points at a
        // descriptor of the table (it wraps at its end).
        unsafe {
            copy_bytes(data.as_ptr(), (region.base + off as usize) as *mut u8, len);
            ptr::write_volatile(dp, (len as u64) << 32);
            ptr::write_volatile(dp.add(1), off as u64);
        }
        t.bytes += len as u64;
        t.sent += 1;
        dp = dp.wrapping_add(2);
        off += bsize;
        if std::ptr::eq(dp, ring_end) {
            dp = ring_start as *mut u64;
            off = base;
        }
    }
    t
}

/// Whether a fast loop ([`tx_copy`], [`tx_lend`]) may take `m`: a packet of
/// one segment. The fast loops send `m.data()` alone and free with
/// `free_raw`, which reads no header, so a chain must stop them and fall to
/// the checked loop (which counts it: `tx_multi_seg` is false).
#[inline(always)]
fn one_segment(m: &Mbuf) -> bool {
    !m.is_chained()
}

/// Free the first `n` mbufs of `pkts` (at most its length): one range test
/// per mbuf and one bulk put when they are all of one pool, the usual case
/// (the core's `free_raw`), rather than a header read per mbuf.
///
/// Only for mbufs a fast loop ([`tx_copy`]) took: `free_raw` reads no
/// header, so it must never see a packet of several segments (it would free
/// the first and lose the others), and the fast loops take only frames they
/// sent in one buffer (they stop at anything else, and must stop at a
/// multi-segment mbuf once the core has them). What the checked loops take
/// goes through the core's header-reading `MbufBatch::free_front`.
#[inline(always)]
pub fn free_front_unchained(pkts: &mut MbufBatch, n: usize) {
    let n = n.min(pkts.len());
    if n == 0 {
        return;
    }
    let ptrs = pkts.take_front_raw(n);
    // SAFETY: take_front_raw handed us ownership of these elements (they
    // left the batch); free_raw gives each back to its pool once.
    unsafe { nicpoll::mbuf::free_raw(ptrs) };
}

/// The slots of a table of in-flight mbufs (`Option<Mbuf>`, one per ring
/// slot) as raw element pointers, 0 for `None`.
#[inline(always)]
fn slots_raw(table: &mut [Option<Mbuf>]) -> &mut [usize] {
    // SAFETY: `Option<Mbuf>` has the layout of a pointer with `None` as 0
    // (Mbuf is a repr(transparent) NonNull, for which Option guarantees it),
    // which is the layout of usize; the borrow is carried over, so nothing
    // else sees the table while the raw view lives. Whoever writes through
    // the view keeps each non-zero entry an element it owns.
    unsafe { std::slice::from_raw_parts_mut(table.as_mut_ptr() as *mut usize, table.len()) }
}

/// Zero copy: give back to their pools the mbufs lent in slots `[from, to)`
/// (modulo the table's length, a power of two), in at most two bulk frees,
/// and empty those slots. The table holds single-segment mbufs only (what
/// [`tx_lend`] and the checked loop lend), as `free_raw` reads no header.
#[inline(always)]
pub fn release_in_flight(table: &mut [Option<Mbuf>], from: u16, to: u16) {
    let raw = slots_raw(table);
    let mask = raw.len() - 1;
    let n = to.wrapping_sub(from) as usize;
    if n == 0 || n > raw.len() {
        return;
    }
    let a = from as usize & mask;
    let first = n.min(raw.len() - a);
    for (start, len) in [(a, first), (0, n - first)] {
        if len == 0 {
            continue;
        }
        let chunk = &mut raw[start..start + len];
        // SAFETY: every non-zero entry is an mbuf the table owned; free_raw
        // skips zeros and gives each element back once, and the entries are
        // zeroed right after, so the table no longer claims them.
        unsafe { nicpoll::mbuf::free_raw(chunk) };
        chunk.fill(0);
    }
}

/// Zero copy: lend the frames at the front of `pkts` to the peer, each
/// slot's descriptor from `head` on (at most `free`) pointing at an mbuf's
/// own data in `region` (region index `index` on the wire), and move the
/// mbufs from the batch into `table` (one entry per slot). Stops at the first
/// frame that is empty or not inside the region (an mbuf of another pool:
/// the caller's checked loop copies it; so must a multi-segment mbuf, which
/// [`release_in_flight`] cannot free). Entries of the slots written must be
/// empty (the caller released them).
#[inline(never)]
pub fn tx_lend(
    pkts: &mut MbufBatch,
    ring: &RingView,
    table: &mut [Option<Mbuf>],
    (region, index): (&Region, u16),
    head: u16,
    free: u16,
) -> TxCopied {
    let mut t = TxCopied::default();
    let raw = slots_raw(table);
    if raw.len() != ring.size() as usize {
        return t;
    }
    let descs = ring.descs();
    let (base, reg_len) = (region.base, region.len);
    if reg_len > u32::MAX as usize {
        // Offsets are 32-bit: such a pool is refused at start.
        return t;
    }
    let mask = raw.len() - 1;
    let n = pkts.len().min(free as usize);
    let w0_region = (index as u64) << 16;
    let items = &pkts.as_slice()[..n];
    let (mut i, mut k, mut bytes) = (head as usize & mask, 0usize, 0u64);
    let table = raw.as_mut_ptr();
    while k < n {
        let m = &items[k];
        let data = m.data();
        let len = data.len();
        let off = (data.as_ptr() as usize).wrapping_sub(base);
        // 1 <= len <= reg_len, then off + len <= reg_len (so off < 2^32).
        if len.wrapping_sub(1) >= reg_len || off > reg_len - len || !one_segment(m) {
            break;
        }
        descs.set_words(i as u16, w0_region | (len as u64) << 32, off as u64);
        // SAFETY: `i` is masked to the table's length (a power of two: the
        // ring's size, checked above); the entry is empty (the caller's
        // contract) and now owns the mbuf, which leaves the batch below.
        unsafe { *table.add(i) = unsafe_mbuf_ptr(m) };
        bytes += len as u64;
        k += 1;
        i = (i + 1) & mask;
    }
    t.sent = k;
    t.bytes = bytes;
    // The table owns the lent mbufs now: they leave the batch unfreed.
    let _ = pkts.take_front_raw(t.sent);
    t
}

/// The element pointer of an mbuf, as a table of raw slots stores it.
#[inline(always)]
fn unsafe_mbuf_ptr(m: &Mbuf) -> usize {
    // SAFETY: Mbuf is a repr(transparent) NonNull: its one word is the
    // element pointer; only that word is read, ownership is not touched.
    unsafe { *(m as *const Mbuf as *const usize) }
}

/// One descriptor's fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    /// [`DESC_FLAG_NEXT`] or 0.
    pub flags: u16,
    /// Region index of the buffer.
    pub region: u16,
    /// Bytes in the buffer (the frame, or for empty receive slots the room).
    pub length: u32,
    /// Offset of the buffer in its region.
    pub offset: u32,
}

/// A memif ring inside a region: its header and `1 << log2` descriptors,
/// checked at construction to lie inside the region, which it keeps mapped.
#[derive(Clone, Debug)]
pub struct RingView {
    hdr: NonNull<u8>,
    /// The first descriptor (`hdr + RING_HEADER_SIZE`).
    descs: NonNull<u8>,
    mask: u16,
    log2: u8,
    region: Region,
}

// SAFETY: as Region: the view holds its region alive and accesses the shared
// memory only atomically or volatilely.
unsafe impl Send for RingView {}
// SAFETY: as above.
unsafe impl Sync for RingView {}

impl RingView {
    /// The bytes a ring of `1 << log2` slots takes.
    pub fn bytes(log2: u8) -> usize {
        RING_HEADER_SIZE + (DESC_SIZE << log2)
    }

    /// The ring at `offset` in `region`, or None when it would not lie inside
    /// it, is misaligned (descriptors are read 8 bytes at a time), or has more
    /// than 2^15 slots (head and tail are 16-bit counters).
    pub fn new(region: &Region, offset: u32, log2: u8) -> Option<RingView> {
        if log2 > 15 || !offset.is_multiple_of(16) {
            return None;
        }
        let bytes = RingView::bytes(log2) as u64;
        if offset as u64 + bytes > region.len as u64 {
            return None;
        }
        let hdr = NonNull::new((region.base + offset as usize) as *mut u8)?;
        let descs = NonNull::new((region.base + offset as usize + RING_HEADER_SIZE) as *mut u8)?;
        Some(RingView {
            hdr,
            descs,
            mask: ((1u32 << log2) - 1) as u16,
            log2,
            region: region.clone(),
        })
    }

    /// Slots in the ring.
    #[inline(always)]
    pub fn size(&self) -> u16 {
        // 1 << 15 at most, which fits; mask + 1 would overflow only for 2^16.
        self.mask.wrapping_add(1)
    }

    /// Index mask (`size - 1`).
    #[inline(always)]
    pub fn mask(&self) -> u16 {
        self.mask
    }

    /// log2 of the slot count.
    pub fn log2(&self) -> u8 {
        self.log2
    }

    #[inline(always)]
    fn index(&self, at: usize) -> &AtomicU16 {
        // SAFETY: `at` is 6 or 64, inside the 128-byte header, which lies in
        // the mapping (checked in `new`) kept alive by `self.region`; the
        // address is 2-aligned (the header is 16-aligned). AtomicU16 is an
        // UnsafeCell, so the peer writing it concurrently breaks no promise.
        unsafe { AtomicU16::from_ptr(self.hdr.as_ptr().add(at) as *mut u16) }
    }

    /// The head index (written by the producer on client-to-server rings, by
    /// the consumer's refill on server-to-client rings).
    #[inline(always)]
    pub fn head(&self, o: Ordering) -> u16 {
        self.index(RING_HEAD_OFFSET).load(o)
    }

    /// Store the head index.
    #[inline(always)]
    pub fn set_head(&self, v: u16, o: Ordering) {
        self.index(RING_HEAD_OFFSET).store(v, o)
    }

    /// The tail index.
    #[inline(always)]
    pub fn tail(&self, o: Ordering) -> u16 {
        self.index(RING_TAIL_OFFSET).load(o)
    }

    /// Store the tail index.
    #[inline(always)]
    pub fn set_tail(&self, v: u16, o: Ordering) {
        self.index(RING_TAIL_OFFSET).store(v, o)
    }

    /// The ring flags (the receiver's [`RING_FLAG_MASK_INT`]).
    #[inline(always)]
    pub fn flags(&self) -> u16 {
        // SAFETY: offset 4 of the header, 2-aligned, inside the mapping.
        unsafe { ptr::read_volatile(self.hdr.as_ptr().add(RING_FLAGS_OFFSET) as *const u16) }
    }

    /// Write the ring flags.
    pub fn set_flags(&self, v: u16) {
        // SAFETY: as in `flags`.
        unsafe { ptr::write_volatile(self.hdr.as_ptr().add(RING_FLAGS_OFFSET) as *mut u16, v) }
    }

    /// The cookie.
    pub fn cookie(&self) -> u32 {
        // SAFETY: offset 0 of the header, 4-aligned, inside the mapping.
        unsafe { ptr::read_volatile(self.hdr.as_ptr() as *const u32) }
    }

    /// Write the cookie.
    pub fn set_cookie(&self, v: u32) {
        // SAFETY: as in `cookie`.
        unsafe { ptr::write_volatile(self.hdr.as_ptr() as *mut u32, v) }
    }

    #[inline(always)]
    fn desc_ptr(&self, slot: u16) -> *mut u64 {
        // SAFETY: `slot & mask` is below the slot count, so the descriptor lies
        // inside the ring, which lies inside the mapping (checked in `new`).
        unsafe {
            self.descs
                .as_ptr()
                .add(((slot & self.mask) as usize) << DESC_SHIFT) as *mut u64
        }
    }

    /// Read descriptor `slot` (taken modulo the ring size).
    #[inline(always)]
    pub fn desc(&self, slot: u16) -> Desc {
        let p = self.desc_ptr(slot);
        // SAFETY: `p` points at a 16-byte descriptor inside the mapping,
        // 16-aligned (the ring offset was checked to be), read as two words.
        let (w0, w1) = unsafe { (ptr::read_volatile(p), ptr::read_volatile(p.add(1))) };
        Desc {
            flags: w0 as u16,
            region: (w0 >> 16) as u16,
            length: (w0 >> 32) as u32,
            offset: w1 as u32,
        }
    }

    /// The buffer offset of descriptor `slot` alone (for a prefetch).
    #[inline(always)]
    pub fn desc_offset(&self, slot: u16) -> u32 {
        // SAFETY: as in `desc`; the second word of the descriptor.
        unsafe { ptr::read_volatile(self.desc_ptr(slot).add(1)) as u32 }
    }

    /// Write descriptor `slot` whole (metadata 0).
    #[inline(always)]
    pub fn set_desc(&self, slot: u16, d: Desc) {
        let p = self.desc_ptr(slot);
        let w0 = d.flags as u64 | (d.region as u64) << 16 | (d.length as u64) << 32;
        // SAFETY: as in `desc`.
        unsafe {
            ptr::write_volatile(p, w0);
            ptr::write_volatile(p.add(1), d.offset as u64);
        }
    }

    /// Write the flags, region and length of descriptor `slot`, leaving its
    /// offset (the peer's choice on rings whose buffers it owns).
    #[inline(always)]
    pub fn set_desc_head(&self, slot: u16, flags: u16, region: u16, length: u32) {
        let p = self.desc_ptr(slot);
        let w0 = flags as u64 | (region as u64) << 16 | (length as u64) << 32;
        // SAFETY: as in `desc`.
        unsafe { ptr::write_volatile(p, w0) }
    }

    /// The region the ring lies in.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The descriptor table, for a burst loop: its address and mask in
    /// registers rather than read back from the view at every descriptor
    /// (the compiler cannot tell that the frame copies leave them alone).
    #[inline(always)]
    pub fn descs(&self) -> Descs<'_> {
        Descs {
            base: self.descs,
            mask: self.mask as usize,
            _ring: std::marker::PhantomData,
        }
    }
}

/// A ring's descriptor table, borrowed from its [`RingView`] (which keeps
/// the memory mapped).
#[derive(Clone, Copy, Debug)]
pub struct Descs<'a> {
    base: NonNull<u8>,
    mask: usize,
    _ring: std::marker::PhantomData<&'a RingView>,
}

impl Descs<'_> {
    /// The first descriptor and the end of the table.
    #[inline(always)]
    fn bounds(&self) -> (*const u64, *const u64) {
        let start = self.base.as_ptr() as *const u64;
        (start, start.wrapping_add((self.mask + 1) * 2))
    }

    #[inline(always)]
    fn ptr(&self, slot: u16) -> *mut u64 {
        // SAFETY: `slot & mask` is below the slot count, so the descriptor
        // lies inside the ring, inside the mapping (checked in RingView::new),
        // which the borrowed view keeps alive.
        unsafe {
            self.base
                .as_ptr()
                .add((slot as usize & self.mask) << DESC_SHIFT) as *mut u64
        }
    }

    /// Read descriptor `slot` (taken modulo the ring size).
    #[inline(always)]
    pub fn get(&self, slot: u16) -> Desc {
        let p = self.ptr(slot);
        // SAFETY: as in RingView::desc.
        let (w0, w1) = unsafe { (ptr::read_volatile(p), ptr::read_volatile(p.add(1))) };
        Desc {
            flags: w0 as u16,
            region: (w0 >> 16) as u16,
            length: (w0 >> 32) as u32,
            offset: w1 as u32,
        }
    }

    /// Descriptor `slot` as its two little-endian words: flags | region <<
    /// 16 | length << 32, and the offset (low half; metadata above).
    #[inline(always)]
    pub fn words(&self, slot: u16) -> (u64, u64) {
        let p = self.ptr(slot);
        // SAFETY: as in RingView::desc.
        unsafe { (ptr::read_volatile(p), ptr::read_volatile(p.add(1))) }
    }

    /// The buffer offset of descriptor `slot` alone (for a prefetch).
    #[inline(always)]
    pub fn offset(&self, slot: u16) -> u32 {
        // SAFETY: as in RingView::desc; the second word of the descriptor.
        unsafe { ptr::read_volatile(self.ptr(slot).add(1)) as u32 }
    }

    /// Write descriptor `slot` whole (metadata 0).
    #[inline(always)]
    pub fn set(&self, slot: u16, d: Desc) {
        let p = self.ptr(slot);
        let w0 = d.flags as u64 | (d.region as u64) << 16 | (d.length as u64) << 32;
        // SAFETY: as in RingView::desc.
        unsafe {
            ptr::write_volatile(p, w0);
            ptr::write_volatile(p.add(1), d.offset as u64);
        }
    }

    /// Write descriptor `slot` as its two words (see [`words`](Self::words)).
    #[inline(always)]
    pub fn set_words(&self, slot: u16, w0: u64, w1: u64) {
        let p = self.ptr(slot);
        // SAFETY: as in RingView::desc.
        unsafe {
            ptr::write_volatile(p, w0);
            ptr::write_volatile(p.add(1), w1);
        }
    }

    /// Write the flags, region and length of descriptor `slot`, leaving its
    /// offset.
    #[inline(always)]
    pub fn set_head(&self, slot: u16, flags: u16, region: u16, length: u32) {
        let w0 = flags as u64 | (region as u64) << 16 | (length as u64) << 32;
        // SAFETY: as in RingView::desc.
        unsafe { ptr::write_volatile(self.ptr(slot), w0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(len: usize) -> Region {
        let (m, _fd) = Mapping::new_memfd("memif-test", len).unwrap();
        Region::of_mapping(Arc::new(m))
    }

    #[test]
    fn copies_stay_inside_the_region() {
        let r = region(4096);
        let data: Vec<u8> = (0..200u8).collect();
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 60, 63, 64, 65, 128, 200] {
            assert!(r.copy_in(100, &data[..len]));
            let mut back = vec![0xee; len];
            assert!(r.copy_out(100, &mut back));
            assert_eq!(back, &data[..len], "len {len}");
        }
        let mut buf = [0u8; 64];
        assert!(r.copy_out(4096 - 64, &mut buf));
        assert!(!r.copy_out(4096 - 63, &mut buf), "one byte past the end");
        assert!(
            !r.copy_out(u32::MAX, &mut buf),
            "offset + length overflowing u32"
        );
        assert!(!r.copy_in(4090, &buf));
        assert_eq!(r.offset_of(r.base + 10, 20), Some(10));
        assert_eq!(r.offset_of(r.base + 4090, 20), None);
        assert_eq!(r.offset_of(r.base.wrapping_sub(1), 1), None);
    }

    #[test]
    fn rings_must_fit_and_be_aligned() {
        let r = region(RingView::bytes(4) * 2);
        assert!(RingView::new(&r, 0, 4).is_some());
        assert!(RingView::new(&r, RingView::bytes(4) as u32, 4).is_some());
        assert!(RingView::new(&r, RingView::bytes(4) as u32 + 16, 4).is_none());
        assert!(RingView::new(&r, 8, 4).is_none(), "misaligned");
        assert!(RingView::new(&r, 0, 16).is_none(), "2^16 slots");
        let ring = RingView::new(&r, 0, 4).unwrap();
        assert_eq!(ring.size(), 16);
        ring.set_desc(
            3,
            Desc {
                flags: 1,
                region: 2,
                length: 3,
                offset: 4,
            },
        );
        assert_eq!(ring.desc(19), ring.desc(3), "slots wrap at the ring size");
        assert_eq!(ring.desc(3).length, 3);
        ring.set_desc_head(3, 0, 0, 9);
        assert_eq!(
            ring.desc(3),
            Desc {
                flags: 0,
                region: 0,
                length: 9,
                offset: 4
            }
        );
        ring.set_head(7, Ordering::Release);
        ring.set_tail(5, Ordering::Release);
        ring.set_flags(RING_FLAG_MASK_INT);
        ring.set_cookie(crate::proto::COOKIE);
        let mut raw = [0u8; 128];
        assert!(r.copy_out(0, &mut raw));
        assert_eq!(&raw[0..8], &[0x20, 0x1f, 0xe3, 0x03, 1, 0, 7, 0]);
        assert_eq!(&raw[64..66], &[5, 0]);
    }

    #[test]
    fn a_short_peer_file_is_refused() {
        let (_m, fd) = Mapping::new_memfd("memif-short", 4096).unwrap();
        let e = Mapping::map_peer(&fd, 8192).unwrap_err();
        assert!(e.to_string().contains("only 4096"), "{e}");
        assert!(Mapping::map_peer(&fd, 4096).is_ok());
    }
}
