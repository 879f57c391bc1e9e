//! The SSE4.1 loops (built with SSSE3 too, which SSE4.1 implies to the
//! compiler, so both are checked): four descriptors per step,
//! as DPDK's `iavf_rxtx_vec_sse.c` does, each taking exactly what the
//! scalar loops would, for CPUs without AVX2 (older CPUs, and virtual CPUs
//! such as QEMU's `qemu64`). They are built for the fewest memory accesses
//! per packet (what an emulator charges for most): one load per receive
//! descriptor, mbuf pointers moved and slots cleared two at a time, each
//! transmit descriptor built in a register and written with one store.

use std::arch::x86_64::*;
use std::sync::atomic::{Ordering, fence};

use nicpoll::mbuf::header_offsets as off;

use super::avx2::received;
use crate::desc::{
    RX_CLEAN_RSS_MASK, RX_CLEAN_RSS_WANT, RX_PLEN_SHIFT, RxDesc, TX_BSZ_SHIFT, TX_MAX_BUF,
    TX_WHOLE_PACKET_QW1, TxDesc,
};

const _: () = assert!(std::mem::size_of::<RxDesc>() == 32);
const _: () = assert!(std::mem::size_of::<TxDesc>() == 16);
// Every bit the receive test looks at is in qword 1's low half, the length
// (with the header-split fields above it) is its high half shifted by 6.
const _: () = assert!(RX_CLEAN_RSS_MASK >> 32 == 0);
const _: () = assert!(RX_PLEN_SHIFT == 32 + 6);

/// The sum of the four 32-bit lanes.
#[target_feature(enable = "sse4.1")]
#[inline]
fn lane_sum(v: __m128i) -> u64 {
    _mm_cvtsi128_si32(v) as u32 as u64
        + _mm_extract_epi32::<1>(v) as u32 as u64
        + _mm_extract_epi32::<2>(v) as u32 as u64
        + _mm_extract_epi32::<3>(v) as u32 as u64
}

/// `v`, which the compiler can no longer tie to the memory it was loaded
/// from: values taken out of it come from the register (an extract)
/// instead of a second load, one memory access fewer each.
#[inline(always)]
fn in_register(mut v: __m128i) -> __m128i {
    // SAFETY: an empty instruction template: nothing runs, `v` is unchanged.
    unsafe {
        std::arch::asm!("/* {0} */", inout(xmm_reg) v, options(pure, nomem, nostack, preserves_flags));
    }
    v
}

/// [`MbufSlots::tx_fill`](super::MbufSlots::tx_fill)'s run loop four
/// packets at a time: from `src`, groups of four whose lengths are all
/// in `min_len..=max_len` and none a chain, each packet one data
/// descriptor (its data IOVA, EOP, ICRC, its length) at `desc[i]` and its
/// pointer in `slots[i]`. Returns (packets taken, a multiple of 4 and at
/// most `max`; their bytes). The first group with a length out of range or
/// a chain is left whole.
///
/// # Safety
/// The CPU has SSE4.1 and SSSE3. `src` holds `max` mbuf elements the caller
/// owns (ownership of those taken moves to the slots); `desc` points to
/// `max` writable ring descriptors (16-aligned) the device does not read
/// before the next tail write, `slots` to `max` writable empty slots;
/// `1 <= min_len <= max_len <= TX_MAX_BUF`.
#[target_feature(enable = "sse4.1,ssse3")]
pub(super) unsafe fn tx_fill(
    src: *const usize,
    desc: *mut TxDesc,
    slots: *mut usize,
    max: usize,
    min_len: usize,
    max_len: usize,
) -> (usize, u64) {
    debug_assert!(1 <= min_len && min_len <= max_len && max_len <= TX_MAX_BUF);
    // One 16-byte load at `buf_iova` gets [buf_iova, data_off | data_len
    // << 16 | port << 32 | queue << 48].
    const _: () = assert!(off::DATA_OFF == off::BUF_IOVA + 8);
    const _: () = assert!(off::DATA_LEN == off::DATA_OFF + 2);
    // Per pair of packets, qwords 0 and qwords 1 side by side: the data
    // offset (qword 1's low 16 bits) added to the IOVA, and the length
    // moved to the descriptor's size field (bit 34) by a shift of 18 and a
    // mask, with the command bits.
    let off_mask = _mm_set1_epi64x(0xFFFF);
    let len_mask = _mm_set1_epi64x(0xFFFF << TX_BSZ_SHIFT);
    let qw1 = _mm_set1_epi64x(TX_WHOLE_PACKET_QW1 as i64);
    let describe2 = |q0: __m128i, q1: __m128i| {
        let addr = _mm_add_epi64(q0, _mm_and_si128(q1, off_mask));
        let cmd = _mm_or_si128(_mm_and_si128(_mm_slli_epi64::<18>(q1), len_mask), qw1);
        (_mm_unpacklo_epi64(addr, cmd), _mm_unpackhi_epi64(addr, cmd))
    };
    // `len - min_len <= max_len - min_len` as unsigned 32-bit numbers is,
    // with the sign bit flipped on both sides, a signed compare (SSE has no
    // unsigned one): `len + (MIN - min_len) > limit` refuses.
    let bias = _mm_set1_epi32(i32::MIN.wrapping_sub(min_len as i32));
    let limit = _mm_set1_epi32(((max_len - min_len) as i32).wrapping_add(i32::MIN));
    let mut lens = _mm_setzero_si128();
    let end = max & !3;
    let mut k = 0;
    while k < end {
        // SAFETY: `k + 3 < max`: `src`, `desc` and `slots` entries
        // `k..k + 4` are in bounds (the caller's contract); each element's
        // header is ours to read (16 bytes from `buf_iova` and `next`,
        // inside it).
        unsafe {
            let p = src.add(k);
            // The pointers are taken out of these registers, not loaded
            // again (what the compiler would do otherwise).
            let p01 = in_register(_mm_loadu_si128(p as *const __m128i));
            let p23 = in_register(_mm_loadu_si128(p.add(2) as *const __m128i));
            let hdr = [
                _mm_cvtsi128_si64(p01) as usize as *const u8,
                _mm_extract_epi64::<1>(p01) as usize as *const u8,
                _mm_cvtsi128_si64(p23) as usize as *const u8,
                _mm_extract_epi64::<1>(p23) as usize as *const u8,
            ];
            // A chain takes a descriptor per segment: the caller's path.
            let next = |i: usize| (hdr[i].add(off::NEXT) as *const usize).read();
            if next(0) | next(1) | next(2) | next(3) != 0 {
                break;
            }
            let h = |i: usize| _mm_loadu_si128(hdr[i].add(off::BUF_IOVA) as *const __m128i);
            let (h0, h1, h2, h3) = (h(0), h(1), h(2), h(3));
            let (q0_01, q1_01) = (_mm_unpacklo_epi64(h0, h1), _mm_unpackhi_epi64(h0, h1));
            let (q0_23, q1_23) = (_mm_unpacklo_epi64(h2, h3), _mm_unpackhi_epi64(h2, h3));
            // Dword 0 of each qword 1 (data_off | data_len << 16), the four
            // side by side, then the four lengths.
            let w =
                _mm_shuffle_ps::<0b10_00_10_00>(_mm_castsi128_ps(q1_01), _mm_castsi128_ps(q1_23));
            let l4 = _mm_srli_epi32::<16>(_mm_castps_si128(w));
            let bad = _mm_cmpgt_epi32(_mm_add_epi32(l4, bias), limit);
            if _mm_testz_si128(bad, bad) == 0 {
                break;
            }
            let (d0, d1) = describe2(q0_01, q1_01);
            let (d2, d3) = describe2(q0_23, q1_23);
            // One volatile 16-byte store per descriptor (16-aligned).
            let d = desc.add(k) as *mut __m128i;
            d.write_volatile(d0);
            d.add(1).write_volatile(d1);
            d.add(2).write_volatile(d2);
            d.add(3).write_volatile(d3);
            debug_assert!(
                (0..4).all(|i| *slots.add(k + i) == 0),
                "transmit slot still held"
            );
            _mm_storeu_si128(slots.add(k) as *mut __m128i, p01);
            _mm_storeu_si128(slots.add(k + 2) as *mut __m128i, p23);
            lens = _mm_add_epi32(lens, l4);
        }
        k += 4;
    }
    // Each lane below 2^24 (at most 1024 groups of lengths below 2^14).
    (k, lane_sum(lens))
}

/// [`MbufSlots::rx_clean`](super::MbufSlots::rx_clean)'s hashed loop
/// four at a time: from descriptor 0 at `base`, groups of four while all
/// four are clean whole frames with a hash ([`RxDesc::is_clean_eop_rss`]),
/// of lengths in `lo..=lo + span`, in held slots: each mbuf gets its
/// length, hash and flags, moves from `slots[k]` to `dst[k]`, and its slot
/// is emptied. Returns (descriptors taken, a multiple of 4 and at most
/// `max`; their bytes). The first group that fails is left whole.
///
/// Each descriptor's first 16 bytes (qwords 0 and 1) are read in one
/// aligned 16-byte load. Without AVX such a load is not promised to be
/// atomic, only each of its 8-byte halves (Intel SDM vol. 3A §9.1.1), so a
/// descriptor's hash could be read from before the device wrote it while
/// its DD bit is read from after. The four are therefore read last first,
/// as DPDK's SSE paths read them (`iavf_rxtx_vec_sse.c`): the device writes
/// descriptors back in ring order, so once the last one's DD is seen the
/// three read after it are whole; the last one's hash is read again after
/// the fence, as the scalar loop reads every hash after the status.
///
/// # Safety
/// The CPU has SSE4.1 and SSSE3. `base` points to `max` ring descriptors
/// (32-aligned), `slots` to `max` slots and `dst` to `max` writable
/// pointers; every non-zero slot is an element the caller owns whose header
/// was prepared by a receive refill, with room for `lo + span` bytes;
/// `lo + span < 2^16`.
#[target_feature(enable = "sse4.1,ssse3")]
pub(super) unsafe fn rx_clean(
    base: *const RxDesc,
    slots: *mut usize,
    dst: *mut usize,
    max: usize,
    lo: usize,
    span: usize,
) -> (usize, u64) {
    debug_assert!(lo + span <= u16::MAX as usize);
    let mask = _mm_set1_epi32(RX_CLEAN_RSS_MASK as i32);
    let want = _mm_set1_epi32(RX_CLEAN_RSS_WANT as i32);
    // `len - lo <= span` as unsigned 32-bit numbers, as a signed compare
    // with the sign bit flipped on both sides: `len + (MIN - lo) > limit`
    // refuses (a length is below 2^26, `lo + span` below 2^16).
    let bias = _mm_set1_epi32(i32::MIN.wrapping_sub(lo as i32));
    let limit = _mm_set1_epi32((span as i32).wrapping_add(i32::MIN));
    let zero = _mm_setzero_si128();
    let mut lens = zero;
    let end = max & !3;
    let mut k = 0;
    while k < end {
        // SAFETY: `k + 3 < max`: descriptors, slots and spare slots
        // `k..k + 4` are in bounds (the caller's contract); a descriptor
        // is 32-aligned, so its first 16 bytes are a 16-aligned load.
        unsafe {
            let p = base.add(k) as *const __m128i;
            // Last first (see above); volatile loads keep their order.
            let d3 = p.add(6).read_volatile();
            let d2 = p.add(4).read_volatile();
            let d1 = p.add(2).read_volatile();
            let d0 = p.read_volatile();
            // Dwords 2 and 3 (qword 1) of the four: [d0, d1, d0, d1] and
            // [d2, d3, d2, d3], then the four status dwords and the four
            // high dwords.
            let hi01 = _mm_unpackhi_epi32(d0, d1);
            let hi23 = _mm_unpackhi_epi32(d2, d3);
            let status = _mm_unpacklo_epi64(hi01, hi23);
            // Zero where clean.
            let unclean = _mm_xor_si128(_mm_and_si128(status, mask), want);
            // The length with the header-split fields above it (`q1 >>
            // 38`): a range check on it checks both
            // (`RxDesc::pkt_len_unsplit`).
            let len = _mm_srli_epi32::<6>(_mm_unpackhi_epi64(hi01, hi23));
            let out_of_range = _mm_cmpgt_epi32(_mm_add_epi32(len, bias), limit);
            let held01 = _mm_loadu_si128(slots.add(k) as *const __m128i);
            let held23 = _mm_loadu_si128(slots.add(k + 2) as *const __m128i);
            let empty = _mm_or_si128(_mm_cmpeq_epi64(held01, zero), _mm_cmpeq_epi64(held23, zero));
            let bad = _mm_or_si128(_mm_or_si128(out_of_range, empty), unclean);
            if _mm_testz_si128(bad, bad) == 0 {
                break;
            }
            // Written back before anything of the frames is read.
            fence(Ordering::Acquire);
            // The last one's hash (qword 0's upper half), read after its DD.
            let hash3 = (p.add(6) as *const u32).add(1).read_volatile();
            _mm_storeu_si128(dst.add(k) as *mut __m128i, held01);
            _mm_storeu_si128(dst.add(k + 2) as *mut __m128i, held23);
            _mm_storeu_si128(slots.add(k) as *mut __m128i, zero);
            _mm_storeu_si128(slots.add(k + 2) as *mut __m128i, zero);
            lens = _mm_add_epi32(lens, len);
            // The refill prepared the rest of each header; the flags are
            // ours to write whole. Pointers, lengths and the first three
            // hashes come from the registers.
            received(
                _mm_cvtsi128_si64(held01) as usize,
                _mm_cvtsi128_si32(len),
                _mm_extract_epi32::<1>(d0),
            );
            received(
                _mm_extract_epi64::<1>(held01) as usize,
                _mm_extract_epi32::<1>(len),
                _mm_extract_epi32::<1>(d1),
            );
            received(
                _mm_cvtsi128_si64(held23) as usize,
                _mm_extract_epi32::<2>(len),
                _mm_extract_epi32::<1>(d2),
            );
            received(
                _mm_extract_epi64::<1>(held23) as usize,
                _mm_extract_epi32::<3>(len),
                hash3 as i32,
            );
        }
        k += 4;
    }
    // Each lane below 2^26 (at most 1024 groups of lengths below 2^16).
    (k, lane_sum(lens))
}
