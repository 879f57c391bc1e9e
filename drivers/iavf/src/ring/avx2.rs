//! The AVX2 loops: four descriptors per step, as DPDK's `iavf_rxtx_vec_avx2.c`
//! does, each taking exactly what the scalar loops would.

use std::arch::x86_64::*;
use std::sync::atomic::{Ordering, fence};

use nicpoll::mbuf::{flags, header_offsets as off};

use crate::desc::{
    RX_CLEAN_RSS_MASK, RX_CLEAN_RSS_WANT, RX_PLEN_SHIFT, RxDesc, TX_BSZ_SHIFT, TX_MAX_BUF,
    TX_WHOLE_PACKET_QW1, TxDesc,
};

const _: () = assert!(std::mem::size_of::<RxDesc>() == 32);
const _: () = assert!(std::mem::size_of::<TxDesc>() == 16);

/// [`MbufSlots::tx_fill`](super::MbufSlots::tx_fill)'s run loop four
/// packets at a time: from `src`, groups of four whose lengths are all
/// in `min_len..=max_len` and none a chain, each packet one data
/// descriptor (its data IOVA, EOP, ICRC, its length) at `desc[i]` and its
/// pointer in `slots[i]`. Returns (packets taken, a multiple of 4 and at
/// most `max`; their bytes). The first group with a length out of range or
/// a chain is left whole.
///
/// # Safety
/// The CPU has AVX2. `src` holds `max` mbuf elements the caller owns
/// (ownership of those taken moves to the slots); `desc` points to `max`
/// writable ring descriptors (16-aligned) the device does not read before
/// the next tail write, `slots` to `max` writable empty slots;
/// `1 <= min_len <= max_len <= TX_MAX_BUF`.
#[target_feature(enable = "avx2")]
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
    // Per 128-bit lane (one packet): the data offset (bytes 8-9) moved to
    // bytes 0-1 with the rest zeroed (added to the IOVA in the low qword),
    // and the length moved to the descriptor's size field (bit 34) by a
    // shift of 18 and a mask, in the high qword.
    let off_down = _mm256_setr_epi8(
        8, 9, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        8, 9, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let len_mask = _mm256_set_epi64x(0xFFFF << TX_BSZ_SHIFT, 0, 0xFFFF << TX_BSZ_SHIFT, 0);
    let qw1 = _mm256_set1_epi64x(TX_WHOLE_PACKET_QW1 as i64);
    // `len - min_len <= max_len - min_len` as unsigned numbers, on `len <<
    // 34` and with the sign bit flipped on both sides: a signed compare.
    let lo = (min_len as i64) << TX_BSZ_SHIFT;
    let bias = _mm256_set1_epi64x(i64::MIN.wrapping_sub(lo));
    let limit = _mm256_set1_epi64x((((max_len - min_len) as i64) << TX_BSZ_SHIFT) ^ i64::MIN);
    let mut lens = _mm256_setzero_si256();
    let end = max & !3;
    let mut k = 0;
    while k < end {
        // SAFETY: `k + 3 < max`: `src`, `desc` and `slots` entries
        // `k..k + 4` are in bounds (the caller's contract); each element's
        // header is ours to read (16 bytes from `buf_iova`, inside it).
        unsafe {
            let p = src.add(k);
            let held = _mm256_loadu_si256(p as *const __m256i);
            let h = |i: usize| (*p.add(i) as *const u8).add(off::BUF_IOVA) as *const __m128i;
            // A chain takes a descriptor per segment: the caller's path.
            let next = |i: usize| ((*p.add(i) as *const u8).add(off::NEXT) as *const usize).read();
            if next(0) | next(1) | next(2) | next(3) != 0 {
                break;
            }
            let h01 = _mm256_loadu2_m128i(h(1), h(0));
            let h23 = _mm256_loadu2_m128i(h(3), h(2));
            let l01 = _mm256_and_si256(_mm256_slli_epi64::<18>(h01), len_mask);
            let l23 = _mm256_and_si256(_mm256_slli_epi64::<18>(h23), len_mask);
            // The four lengths side by side (packets 0, 2, 1, 3).
            let l4 = _mm256_unpackhi_epi64(l01, l23);
            let bad = _mm256_cmpgt_epi64(_mm256_add_epi64(l4, bias), limit);
            if _mm256_testz_si256(bad, bad) == 0 {
                break;
            }
            // Address: buf_iova + data_off; qword 1: command and length.
            let a01 = _mm256_add_epi64(h01, _mm256_shuffle_epi8(h01, off_down));
            let a23 = _mm256_add_epi64(h23, _mm256_shuffle_epi8(h23, off_down));
            let d01 = _mm256_blend_epi32::<0b1100_1100>(a01, _mm256_or_si256(l01, qw1));
            let d23 = _mm256_blend_epi32::<0b1100_1100>(a23, _mm256_or_si256(l23, qw1));
            // One volatile 16-byte store per descriptor (they are only
            // 16-aligned).
            let d = desc.add(k) as *mut __m128i;
            d.write_volatile(_mm256_castsi256_si128(d01));
            d.add(1).write_volatile(_mm256_extracti128_si256::<1>(d01));
            d.add(2).write_volatile(_mm256_castsi256_si128(d23));
            d.add(3).write_volatile(_mm256_extracti128_si256::<1>(d23));
            debug_assert!(
                (0..4).all(|i| *slots.add(k + i) == 0),
                "transmit slot still held"
            );
            _mm256_storeu_si256(slots.add(k) as *mut __m256i, held);
            lens = _mm256_add_epi64(lens, l4);
        }
        k += 4;
    }
    // The lane sums, at bit 34: below 2^60 (at most 4096 packets, of less
    // than 2^14 bytes).
    let s = _mm_add_epi64(
        _mm256_castsi256_si128(lens),
        _mm256_extracti128_si256::<1>(lens),
    );
    let sum = (_mm_cvtsi128_si64(s) as u64).wrapping_add(_mm_extract_epi64::<1>(s) as u64);
    (k, sum >> TX_BSZ_SHIFT)
}

/// A received frame's header fields (the refill prepared the rest): its
/// length and hash, each stored straight from a vector lane (the
/// extracts become `vpextrw`/`vpextrd` to memory), and its flags whole.
///
/// # Safety
/// `hdr` is the header of an element the caller owns (no reference to it
/// alive); `len` fits its data room.
#[inline(always)]
pub(super) unsafe fn received(hdr: usize, len: i32, hash: i32) {
    let h = hdr as *mut u8;
    // SAFETY: the caller's guarantee; the fields lie at their (aligned)
    // offsets in the 64-aligned header.
    unsafe {
        h.add(off::DATA_LEN).cast::<u16>().write(len as u16);
        h.add(off::RSS_HASH).cast::<u32>().write(hash as u32);
        h.add(off::OL_FLAGS).cast::<u64>().write(flags::RX_RSS_HASH);
    }
}

/// [`MbufSlots::rx_clean`](super::MbufSlots::rx_clean)'s hashed loop
/// four at a time: from descriptor 0 at `base`, groups of four while all
/// four are clean whole frames with a hash ([`RxDesc::is_clean_eop_rss`]),
/// of lengths in `lo..=lo + span`, in held slots: each mbuf gets its
/// length, hash and flags, moves from `slots[k]` to `dst[k]`, and its slot
/// is emptied. Returns (descriptors taken, a multiple of 4 and at most
/// `max`; their bytes). The first group that fails is left whole.
///
/// A descriptor's first 16 bytes (qwords 0 and 1) are read in one aligned
/// 16-byte load: atomic on CPUs with AVX (Intel SDM vol. 3A §9.1.1;
/// DPDK's vector paths rely on it too), so the hash read belongs to the
/// status read with DD, as the scalar loop's two loads with a fence do.
///
/// # Safety
/// The CPU has AVX2. `base` points to `max` ring descriptors (32-aligned),
/// `slots` to `max` slots and `dst` to `max` writable pointers; every
/// non-zero slot is an element the caller owns whose header was prepared
/// by a receive refill, with room for `lo + span` bytes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn rx_clean(
    base: *const RxDesc,
    slots: *mut usize,
    dst: *mut usize,
    max: usize,
    lo: usize,
    span: usize,
) -> (usize, u64) {
    let mask = _mm256_set1_epi64x(RX_CLEAN_RSS_MASK as i64);
    let want = _mm256_set1_epi64x(RX_CLEAN_RSS_WANT as i64);
    // `len - lo <= span` as unsigned numbers is, with the sign bit
    // flipped on both sides, a signed compare (AVX2 has no unsigned one):
    // `len + (MIN - lo) <= span + MIN`.
    let bias = _mm256_set1_epi64x(i64::MIN.wrapping_sub(lo as i64));
    let limit = _mm256_set1_epi64x((span as i64).wrapping_add(i64::MIN));
    let zero = _mm256_setzero_si256();
    let mut lens = zero;
    let end = max & !3;
    let mut k = 0;
    while k < end {
        // SAFETY: `k + 3 < max`: descriptors, slots and spare slots
        // `k..k + 4` are in bounds (the caller's contract); a descriptor
        // is 32-aligned, so its first 16 bytes are a 16-aligned load.
        unsafe {
            let p = base.add(k) as *const __m128i;
            let d0 = p.read_volatile();
            let d1 = p.add(2).read_volatile();
            let d2 = p.add(4).read_volatile();
            let d3 = p.add(6).read_volatile();
            // [d0 | d2] and [d1 | d3], then qwords 0 and qwords 1 of the four.
            let d02 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(d0), d2);
            let d13 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(d1), d3);
            let q0 = _mm256_unpacklo_epi64(d02, d13);
            let q1 = _mm256_unpackhi_epi64(d02, d13);
            // Zero where clean.
            let unclean = _mm256_xor_si256(_mm256_and_si256(q1, mask), want);
            // The length with the header-split fields above it: a range
            // check on it checks both (`RxDesc::pkt_len_unsplit`).
            let len = _mm256_srli_epi64::<{ RX_PLEN_SHIFT as i32 }>(q1);
            let out_of_range = _mm256_cmpgt_epi64(_mm256_add_epi64(len, bias), limit);
            let held = _mm256_loadu_si256(slots.add(k) as *const __m256i);
            let empty = _mm256_cmpeq_epi64(held, zero);
            let bad = _mm256_or_si256(_mm256_or_si256(out_of_range, empty), unclean);
            if _mm256_testz_si256(bad, bad) == 0 {
                break;
            }
            // Written back before anything of the frames is read.
            fence(Ordering::Acquire);
            let h = [
                *slots.add(k),
                *slots.add(k + 1),
                *slots.add(k + 2),
                *slots.add(k + 3),
            ];
            _mm256_storeu_si256(dst.add(k) as *mut __m256i, held);
            _mm256_storeu_si256(slots.add(k) as *mut __m256i, zero);
            lens = _mm256_add_epi64(lens, len);
            // Per frame one qword: the length in its low 32 bits, the
            // hash (qword 0's upper half) in its high ones.
            let lh = _mm256_blend_epi32::<0b1010_1010>(len, q0);
            let lo2 = _mm256_castsi256_si128(lh);
            let hi2 = _mm256_extracti128_si256::<1>(lh);
            // The refill prepared the rest of each header; the flags are
            // ours to write whole.
            received(
                h[0],
                _mm_extract_epi16::<0>(lo2),
                _mm_extract_epi32::<1>(lo2),
            );
            received(
                h[1],
                _mm_extract_epi16::<4>(lo2),
                _mm_extract_epi32::<3>(lo2),
            );
            received(
                h[2],
                _mm_extract_epi16::<0>(hi2),
                _mm_extract_epi32::<1>(hi2),
            );
            received(
                h[3],
                _mm_extract_epi16::<4>(hi2),
                _mm_extract_epi32::<3>(hi2),
            );
        }
        k += 4;
    }
    // The four lanes' sums (each below 2^40: lengths of 26 bits at most).
    let s = _mm_add_epi64(
        _mm256_castsi256_si128(lens),
        _mm256_extracti128_si256::<1>(lens),
    );
    let bytes = (_mm_cvtsi128_si64(s) as u64).wrapping_add(_mm_extract_epi64::<1>(s) as u64);
    (k, bytes)
}
