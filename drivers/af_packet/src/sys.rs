//! Every system call of the AF_PACKET driver and every access to the memory it
//! shares with the kernel: the socket options, the mapping of the rings, and
//! the TPACKET_V3 receive and transmit rings (the interface ioctls are the
//! core's, `nicpoll::netdev`).
//!
//! Ring memory is written by the kernel while we run. No Rust reference ever
//! covers it: status words are read and written through atomics (acquire to
//! take a block or frame from the kernel, release to hand it back), the other
//! header fields with volatile accesses through raw pointers, and packet bytes
//! are copied with `ptr::copy_nonoverlapping` between a raw ring pointer and an
//! mbuf the caller owns, only while the status word says the block or frame is
//! ours. Every offset the kernel gives us is bounds-checked against the block
//! before it is used, so a corrupt ring costs a counted drop, never a wild read.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// `ETH_P_ALL`: every protocol.
pub(crate) const ETH_P_ALL: u16 = 0x0003;
/// Size of `struct tpacket3_hdr`, aligned to TPACKET_ALIGNMENT: where transmit
/// data starts in a frame (no PACKET_TX_HAS_OFF) and the least a frame header takes.
pub(crate) const TPACKET3_HDR: usize = 48;
/// `TPACKET3_HDRLEN`: the header plus the `sockaddr_ll` the kernel writes after it.
pub(crate) const TPACKET3_HDRLEN: usize = TPACKET3_HDR + size_of::<libc::sockaddr_ll>();
/// Size of `struct tpacket_block_desc` rounded to 8 (`BLK_HDR_LEN`): the first
/// frame of a block never starts before this.
pub(crate) const BLOCK_HDR: usize = 48;

const _: () = assert!(size_of::<libc::tpacket3_hdr>() == TPACKET3_HDR);
const _: () = assert!(size_of::<libc::tpacket_block_desc>() == BLOCK_HDR);
const _: () = assert!(libc::TPACKET3_HDRLEN == TPACKET3_HDRLEN);

// Field offsets, checked against libc's struct layouts.
const BLK_STATUS: usize = std::mem::offset_of!(libc::tpacket_block_desc, hdr);
const BLK_NUM_PKTS: usize = BLK_STATUS + std::mem::offset_of!(libc::tpacket_hdr_v1, num_pkts);
const BLK_FIRST: usize =
    BLK_STATUS + std::mem::offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt);
const F_NEXT: usize = std::mem::offset_of!(libc::tpacket3_hdr, tp_next_offset);
const F_SNAPLEN: usize = std::mem::offset_of!(libc::tpacket3_hdr, tp_snaplen);
const F_LEN: usize = std::mem::offset_of!(libc::tpacket3_hdr, tp_len);
const F_STATUS: usize = std::mem::offset_of!(libc::tpacket3_hdr, tp_status);
const F_MAC: usize = std::mem::offset_of!(libc::tpacket3_hdr, tp_mac);
const F_HV1: usize = std::mem::offset_of!(libc::tpacket3_hdr, hv1);
const F_RXHASH: usize = F_HV1 + std::mem::offset_of!(libc::tpacket_hdr_variant1, tp_rxhash);
const F_VLAN_TCI: usize = F_HV1 + std::mem::offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci);
const F_VLAN_TPID: usize = F_HV1 + std::mem::offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid);
const F_PKTTYPE: usize = TPACKET3_HDR + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype);

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The system page size.
pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

/// The size and shape of one ring, as `struct tpacket_req3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes per block (a multiple of the page size).
    pub block_size: u32,
    /// Blocks in the ring.
    pub block_nr: u32,
    /// Bytes per frame (a multiple of 16).
    pub frame_size: u32,
    /// Frames in the ring (`block_nr * block_size / frame_size`).
    pub frame_nr: u32,
    /// Receive only: milliseconds after which the kernel hands over a block
    /// that is not full.
    pub retire_tov_ms: u32,
    /// Receive only: ask the kernel to fill `tp_rxhash`.
    pub fill_rxhash: bool,
}

impl Geometry {
    /// Bytes the ring takes in the mapping.
    pub fn bytes(&self) -> usize {
        self.block_size as usize * self.block_nr as usize
    }

    fn req3(&self) -> libc::tpacket_req3 {
        libc::tpacket_req3 {
            tp_block_size: self.block_size,
            tp_block_nr: self.block_nr,
            tp_frame_size: self.frame_size,
            tp_frame_nr: self.frame_nr,
            tp_retire_blk_tov: self.retire_tov_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: if self.fill_rxhash {
                libc::TP_FT_REQ_FILL_RXHASH
            } else {
                0
            },
        }
    }
}

/// An AF_PACKET raw socket and, once set up, the mapping of its rings.
pub(crate) struct PacketSocket {
    // Field order matters: the mapping goes before the descriptor closes.
    /// The rings' shared mapping (memmap2: unmapped when dropped). Accessed
    /// only through the atomic and volatile accessors of `RxRing`/`TxRing`,
    /// each ring having one owner (`rx_taken`/`tx_taken`); every ring view
    /// holds an Arc on this socket, so the mapping outlives them.
    map: Option<memmap2::MmapRaw>,
    rx: Option<Geometry>,
    tx: Option<Geometry>,
    rx_taken: AtomicBool,
    tx_taken: AtomicBool,
    fd: OwnedFd,
}

impl std::fmt::Debug for PacketSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSocket")
            .field("fd", &self.fd.as_raw_fd())
            .field("rx", &self.rx)
            .field("tx", &self.tx)
            .finish()
    }
}

impl PacketSocket {
    /// A raw packet socket bound to nothing and listening to no protocol, so
    /// it receives nothing until [`PacketSocket::bind`] (EPERM without CAP_NET_RAW).
    pub fn new() -> io::Result<PacketSocket> {
        // SAFETY: plain system call with no pointer arguments.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        Ok(PacketSocket {
            map: None,
            rx: None,
            tx: None,
            rx_taken: AtomicBool::new(false),
            tx_taken: AtomicBool::new(false),
            // SAFETY: socket() just returned this descriptor and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A second descriptor of this socket, as a child process holds one
    /// between its fork and its exec (tests).
    #[cfg(test)]
    pub fn duplicate(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }

    fn setsockopt<T: Copy>(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        val: &T,
    ) -> io::Result<()> {
        // SAFETY: `val` is a live, initialized `T` (a C integer or `#[repr(C)]`
        // struct, as each caller passes) of exactly the length given.
        cvt(unsafe {
            libc::setsockopt(
                self.raw(),
                level,
                name,
                (val as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Set an integer `SOL_PACKET` option.
    pub fn set_packet_opt(&self, name: libc::c_int, val: libc::c_int) -> io::Result<()> {
        self.setsockopt(libc::SOL_PACKET, name, &val)
    }

    /// Switch to TPACKET_V3 (before the rings are set up).
    pub fn set_v3(&self) -> io::Result<()> {
        self.set_packet_opt(
            libc::PACKET_VERSION,
            libc::tpacket_versions::TPACKET_V3 as libc::c_int,
        )
    }

    /// Set up the receive and/or transmit ring and map them (receive ring first,
    /// as the kernel lays them out).
    pub fn set_rings(&mut self, rx: Option<Geometry>, tx: Option<Geometry>) -> io::Result<()> {
        assert!(self.map.is_none(), "rings are set up once");
        if let Some(g) = rx {
            self.setsockopt(libc::SOL_PACKET, libc::PACKET_RX_RING, &g.req3())?;
        }
        if let Some(mut g) = tx {
            // The kernel refuses these fields on a V3 transmit ring.
            g.retire_tov_ms = 0;
            g.fill_rxhash = false;
            self.setsockopt(libc::SOL_PACKET, libc::PACKET_TX_RING, &g.req3())?;
        }
        let len = rx.map_or(0, |g| g.bytes()) + tx.map_or(0, |g| g.bytes());
        if len == 0 {
            return Ok(());
        }
        // MAP_SHARED | MAP_POPULATE, read-write, where the kernel chooses.
        self.map = Some(
            memmap2::MmapOptions::new()
                .len(len)
                .populate()
                .map_raw(self.raw())?,
        );
        self.rx = rx;
        self.tx = tx;
        Ok(())
    }

    /// Bind to interface `ifindex`, receiving protocol `proto` (0: receive nothing).
    pub fn bind(&self, ifindex: i32, proto: u16) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto.to_be();
        sa.sll_ifindex = ifindex;
        // SAFETY: `sa` is a live sockaddr_ll of the length given.
        cvt(unsafe {
            libc::bind(
                self.raw(),
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
        .map(|_| ())
    }

    /// Join (or create) a fanout group: `id | type_flags << 16`.
    pub fn join_fanout(&self, arg: u32) -> io::Result<()> {
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)
    }

    /// The fanout group this socket is in, as `id | type << 16 | flags << 24`.
    pub fn fanout(&self) -> io::Result<u32> {
        let mut v: u32 = 0;
        let mut len = size_of::<u32>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live and describe a 4-byte buffer.
        cvt(unsafe {
            libc::getsockopt(
                self.raw(),
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                (&mut v as *mut u32).cast(),
                &mut len,
            )
        })?;
        Ok(v)
    }

    /// Attach a classic BPF program that drops everything (`ret #0`), so the
    /// socket queues nothing while a fanout group is being assembled.
    pub fn attach_drop_all(&self) -> io::Result<()> {
        let mut insn = [libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let prog = libc::sock_fprog {
            len: 1,
            filter: insn.as_mut_ptr(),
        };
        // The kernel copies the program during the call; `insn` outlives it.
        self.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
    }

    /// Remove the filter `attach_drop_all` put on.
    pub fn detach_filter(&self) -> io::Result<()> {
        let zero: libc::c_int = 0;
        self.setsockopt(libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &zero)
    }

    /// `PACKET_STATISTICS`: (packets, drops) since the last call — the kernel
    /// resets them on every read.
    pub fn take_stats(&self) -> io::Result<(u32, u32)> {
        // SAFETY: plain old data, all zeroes valid.
        let mut st: libc::tpacket_stats_v3 = unsafe { zeroed() };
        let mut len = size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live and describe the buffer.
        cvt(unsafe {
            libc::getsockopt(
                self.raw(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
                &mut len,
            )
        })?;
        Ok((st.tp_packets, st.tp_drops))
    }

    /// Add or drop a `PACKET_MR_PROMISC` membership on interface `ifindex`. The
    /// kernel counts memberships (dev_set_promiscuity) and drops this socket's
    /// when it closes, so the interface goes back to the state it was in.
    pub fn promisc_membership(&self, ifindex: i32, add: bool) -> io::Result<()> {
        // SAFETY: plain old data, all zeroes valid.
        let mut mr: libc::packet_mreq = unsafe { zeroed() };
        mr.mr_ifindex = ifindex;
        mr.mr_type = libc::PACKET_MR_PROMISC as u16;
        let opt = if add {
            libc::PACKET_ADD_MEMBERSHIP
        } else {
            libc::PACKET_DROP_MEMBERSHIP
        };
        self.setsockopt(libc::SOL_PACKET, opt, &mr)
    }
}

/// Atomically load the ring status word at `p`.
///
/// # Safety
/// `p` must be a 4-aligned status word inside a live ring mapping.
#[inline(always)]
unsafe fn load_status(p: *mut u8) -> u32 {
    // SAFETY: per the contract. `AtomicU32` is an UnsafeCell, so the shared
    // reference tolerates the kernel's concurrent writes; it lives only for
    // this call.
    unsafe { AtomicU32::from_ptr(p.cast()) }.load(Ordering::Acquire)
}

/// Atomically store `v` into the ring status word at `p`, publishing every
/// earlier access to the block or frame (Release).
///
/// # Safety
/// As for [`load_status`].
#[inline(always)]
unsafe fn store_status(p: *mut u8, v: u32) {
    // SAFETY: as in `load_status`.
    unsafe { AtomicU32::from_ptr(p.cast()) }.store(v, Ordering::Release)
}

/// The receive ring of one socket: TPACKET_V3 blocks, read by one queue.
pub(crate) struct RxRing {
    sock: std::sync::Arc<PacketSocket>,
    base: *mut u8,
    block_size: usize,
    block_nr: u32,
    /// The block being read (or the next one to look at).
    blk: u32,
    /// Frames of `blk` not read yet (0: `blk` is not ours yet).
    left: u32,
    /// Offset in `blk` of the next frame's header.
    off: u32,
    /// Bumped on every `advance`, so a stale `RxFrame` cannot be copied from.
    seq: u32,
}

// SAFETY: the ring is owned by exactly one queue (see `PacketSocket::rx_taken`)
// and moves with it; the kernel side is synchronized through the status words.
unsafe impl Send for RxRing {}

/// The header of one received frame, read from the ring.
#[derive(Debug)]
pub(crate) struct RxFrame {
    /// Bytes captured in the ring (`tp_snaplen`).
    pub snaplen: u32,
    /// Bytes the frame had on the wire (`tp_len`); more than `snaplen` when the
    /// kernel truncated it to fit the block.
    pub len: u32,
    /// `tp_status` (TP_STATUS_VLAN_VALID...).
    pub status: u32,
    /// The flow hash the kernel computed (if asked for).
    pub rxhash: u32,
    /// The VLAN tag the kernel took off the frame (with TP_STATUS_VLAN_VALID).
    pub vlan_tci: u16,
    /// The TPID of that tag (with TP_STATUS_VLAN_TPID_VALID).
    pub vlan_tpid: u16,
    /// `sll_pkttype` (PACKET_HOST, PACKET_OUTGOING...).
    pub pkttype: u8,
    data: usize,
    next: u32,
    seq: u32,
}

impl RxRing {
    /// Take the receive ring of `sock`; `None` if it has none or it is taken.
    pub fn new(sock: &std::sync::Arc<PacketSocket>) -> Option<RxRing> {
        let g = sock.rx?;
        let map = sock.map.as_ref()?;
        if sock.rx_taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(RxRing {
            sock: sock.clone(),
            base: map.as_mut_ptr(),
            block_size: g.block_size as usize,
            block_nr: g.block_nr,
            blk: 0,
            left: 0,
            off: 0,
            seq: 0,
        })
    }

    #[inline(always)]
    fn block(&self, blk: u32) -> *mut u8 {
        debug_assert!(blk < self.block_nr);
        // SAFETY: blk < block_nr, so the block lies inside the receive ring,
        // which is the start of the mapping.
        unsafe { self.base.add(blk as usize * self.block_size) }
    }

    /// Frames left in the current block; opens the next block when the kernel
    /// has handed it over. 0: nothing to read now.
    #[inline]
    pub fn pending(&mut self) -> u32 {
        loop {
            if self.left > 0 {
                return self.left;
            }
            let b = self.block(self.blk);
            // SAFETY: the block descriptor's status word is inside the block,
            // 8-aligned (blocks are page-aligned).
            let st = unsafe { load_status(b.add(BLK_STATUS)) };
            if st & libc::TP_STATUS_USER == 0 {
                return 0;
            }
            // SAFETY: the acquire load above saw TP_STATUS_USER, so the kernel
            // has finished writing this block and won't touch it until we
            // release it; the fields lie inside the block descriptor.
            let (n, first) = unsafe {
                (
                    ptr::read_volatile(b.add(BLK_NUM_PKTS).cast::<u32>()),
                    ptr::read_volatile(b.add(BLK_FIRST).cast::<u32>()),
                )
            };
            if n == 0 || (first as usize) < BLOCK_HDR || first as usize >= self.block_size {
                // An empty (or malformed) block: give it straight back.
                self.release_block();
                continue;
            }
            self.left = n;
            self.off = first;
        }
    }

    #[inline(always)]
    fn release_block(&mut self) {
        let b = self.block(self.blk);
        // SAFETY: the status word is inside the block; the Release store orders
        // every read of the block before the kernel may reuse it.
        unsafe { store_status(b.add(BLK_STATUS), libc::TP_STATUS_KERNEL) };
        self.left = 0;
        self.blk = if self.blk + 1 == self.block_nr {
            0
        } else {
            self.blk + 1
        };
        self.seq = self.seq.wrapping_add(1);
    }

    /// The header of the next frame. Call only when `pending() > 0`. `None` if
    /// the header's offsets fall outside the block (the rest of the block is
    /// then skipped and handed back; count it as an error).
    #[inline]
    pub fn frame(&mut self) -> Option<RxFrame> {
        if self.left == 0 {
            return None;
        }
        let off = self.off as usize;
        if off + TPACKET3_HDRLEN > self.block_size {
            self.release_block();
            return None;
        }
        // SAFETY: off + TPACKET3_HDRLEN <= block_size, so the header and the
        // sockaddr_ll after it are inside the block, which is ours (pending()
        // saw TP_STATUS_USER and we have not released it).
        let f = unsafe { self.block(self.blk).add(off) };
        // SAFETY: as above; every field lies inside the checked header.
        let (next, snaplen, len, status, mac, rxhash, tci, tpid, pkttype) = unsafe {
            (
                ptr::read_volatile(f.add(F_NEXT).cast::<u32>()),
                ptr::read_volatile(f.add(F_SNAPLEN).cast::<u32>()),
                ptr::read_volatile(f.add(F_LEN).cast::<u32>()),
                ptr::read_volatile(f.add(F_STATUS).cast::<u32>()),
                ptr::read_volatile(f.add(F_MAC).cast::<u16>()),
                ptr::read_volatile(f.add(F_RXHASH).cast::<u32>()),
                ptr::read_volatile(f.add(F_VLAN_TCI).cast::<u32>()),
                ptr::read_volatile(f.add(F_VLAN_TPID).cast::<u16>()),
                ptr::read_volatile(f.add(F_PKTTYPE)),
            )
        };
        let data = off + mac as usize;
        if data + snaplen as usize > self.block_size {
            self.release_block();
            return None;
        }
        Some(RxFrame {
            snaplen,
            len,
            status,
            rxhash,
            vlan_tci: tci as u16,
            vlan_tpid: tpid,
            pkttype,
            data,
            next,
            seq: self.seq,
        })
    }

    /// Copy `dst.len()` bytes of frame `f`'s data starting at byte `from` into
    /// `dst`. Returns false (copying nothing) if `f` is not the current frame
    /// or the range is not inside its captured bytes.
    #[inline]
    pub fn copy(&self, f: &RxFrame, from: usize, dst: &mut [u8]) -> bool {
        if f.seq != self.seq || self.left == 0 || from + dst.len() > f.snaplen as usize {
            return false;
        }
        // SAFETY: `f` was read from the current block, which is still ours
        // (same seq, not released), and `frame()` checked data + snaplen <=
        // block_size, so the source range is inside the block; `dst` is a
        // distinct buffer the caller owns.
        unsafe {
            ptr::copy_nonoverlapping(
                self.block(self.blk).add(f.data + from),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        true
    }

    /// Move past frame `f` (the current one); hands the block back to the
    /// kernel after its last frame.
    #[inline]
    pub fn advance(&mut self, f: RxFrame) {
        if f.seq != self.seq || self.left == 0 {
            return;
        }
        self.left -= 1;
        if self.left == 0 {
            self.release_block();
        } else {
            self.off = self.off.wrapping_add(f.next);
            self.seq = self.seq.wrapping_add(1);
        }
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        self.sock.rx_taken.store(false, Ordering::Release);
    }
}

/// The transmit ring of one socket: fixed-size TPACKET_V3 frames (like V2),
/// filled by one queue and flushed with one `sendto` per burst.
pub(crate) struct TxRing {
    sock: std::sync::Arc<PacketSocket>,
    base: *mut u8,
    block_size: usize,
    frame_size: usize,
    frames_per_block: u32,
    frame_nr: u32,
    head: u32,
}

// SAFETY: owned by exactly one queue (see `PacketSocket::tx_taken`); the kernel
// side is synchronized through the frame status words.
unsafe impl Send for TxRing {}

impl TxRing {
    /// Take the transmit ring of `sock`; `None` if it has none or it is taken.
    pub fn new(sock: &std::sync::Arc<PacketSocket>) -> Option<TxRing> {
        let g = sock.tx?;
        let map = sock.map.as_ref()?;
        if sock.tx_taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        let rx_bytes = sock.rx.map_or(0, |r| r.bytes());
        Some(TxRing {
            sock: sock.clone(),
            // SAFETY: the transmit ring follows the receive ring in the mapping,
            // whose length is rx_bytes + g.bytes().
            base: unsafe { map.as_mut_ptr().add(rx_bytes) },
            block_size: g.block_size as usize,
            frame_size: g.frame_size as usize,
            frames_per_block: g.block_size / g.frame_size,
            frame_nr: g.frame_nr,
            head: 0,
        })
    }

    /// The largest frame a slot holds.
    pub fn capacity(&self) -> usize {
        self.frame_size - TPACKET3_HDR
    }

    #[inline(always)]
    fn frame(&self, i: u32) -> *mut u8 {
        let (blk, k) = (i / self.frames_per_block, i % self.frames_per_block);
        // SAFETY: i < frame_nr = block_nr * frames_per_block, so the frame lies
        // inside the transmit ring.
        unsafe {
            self.base
                .add(blk as usize * self.block_size + k as usize * self.frame_size)
        }
    }

    /// Whether the next slot is still owned by the kernel (ring full).
    #[inline]
    pub fn full(&self) -> bool {
        let f = self.frame(self.head);
        // SAFETY: the status word is inside the frame header; frames are
        // 16-aligned (frame_size is a multiple of TPACKET_ALIGNMENT).
        let st = unsafe { load_status(f.add(F_STATUS)) };
        st & (libc::TP_STATUS_SEND_REQUEST | libc::TP_STATUS_SENDING) != 0
    }

    /// Put one frame in the next slot and mark it for sending. False (nothing
    /// done) if the slot is still the kernel's or `data` is longer than `capacity()`.
    #[inline]
    pub fn push(&mut self, data: &[u8]) -> bool {
        self.push_parts(data.len(), std::iter::once(data))
    }

    /// As [`push`](Self::push), the frame's `len` bytes given in parts (the
    /// segments of a chain), gathered into the slot; parts beyond `len` bytes
    /// are cut.
    #[inline]
    pub fn push_parts<'a>(&mut self, len: usize, parts: impl Iterator<Item = &'a [u8]>) -> bool {
        if len > self.capacity() || self.full() {
            return false;
        }
        let f = self.frame(self.head);
        let mut at = 0usize;
        for part in parts {
            let n = part.len().min(len - at);
            // SAFETY: the acquire load in full() saw the slot available, so
            // the kernel is done with it until we set TP_STATUS_SEND_REQUEST;
            // at + n <= len <= capacity, so the bytes lie inside the frame;
            // `part` is the caller's buffer, distinct from the ring.
            unsafe { ptr::copy_nonoverlapping(part.as_ptr(), f.add(TPACKET3_HDR + at), n) };
            at += n;
        }
        // SAFETY: header fields inside the frame, which is ours (see above).
        unsafe {
            ptr::write_volatile(f.add(F_NEXT).cast::<u32>(), 0);
            ptr::write_volatile(f.add(F_LEN).cast::<u32>(), at as u32);
            ptr::write_volatile(f.add(F_SNAPLEN).cast::<u32>(), at as u32);
        }
        // SAFETY: status word inside the frame; the Release store publishes the
        // writes above to the kernel.
        unsafe { store_status(f.add(F_STATUS), libc::TP_STATUS_SEND_REQUEST) };
        self.head = if self.head + 1 == self.frame_nr {
            0
        } else {
            self.head + 1
        };
        true
    }

    /// Ask the kernel to send every frame marked for sending, without waiting.
    #[inline]
    pub fn kick(&self) -> io::Result<()> {
        // SAFETY: a zero-length send with no buffer and no address.
        let r = unsafe {
            libc::sendto(
                self.sock.raw(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Drop for TxRing {
    fn drop(&mut self) {
        self.sock.tx_taken.store(false, Ordering::Release);
    }
}
