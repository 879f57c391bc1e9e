//! The descriptors the VF shares with the device: the legacy 32-byte receive
//! descriptor (DPDK `base/iavf_type.h` `union iavf_32byte_rx_desc`), the
//! 16-byte transmit data descriptor (`struct iavf_tx_desc`) and the 32-byte
//! admin queue descriptor (`base/iavf_adminq_cmd.h` `struct iavf_aq_desc`; the
//! queue that uses it is [`crate::adminq`]).
//!
//! Typed `#[repr(C)]` little-endian structures with size asserts; every field
//! is reached through an accessor, so no call site twiddles bits. They live in
//! DMA memory and are read and written only through [`crate::ring`], whole and
//! volatile.
#![deny(unsafe_code)]

/// Receive descriptor, 32 bytes: read format (software → device) and
/// write-back format (device → software) share the memory.
///
/// Read: qword 0 packet buffer address, qword 1 header buffer address (0: no
/// header split; its bit 0 overlaps DD, so writing 0 clears DD), qwords 2-3 zero.
#[repr(C, align(32))]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct RxDesc {
    pub(crate) qw0: u64,
    pub(crate) qw1: u64,
    pub(crate) qw2: u64,
    pub(crate) qw3: u64,
}

const _: () = assert!(size_of::<RxDesc>() == 32);
const _: () = assert!(align_of::<RxDesc>() == 32);

/// Status bits of a receive write-back (qword 1 bits 0-18).
pub mod rx_status {
    /// Descriptor done: the device wrote it back.
    pub const DD: u32 = 1 << 0;
    /// Last descriptor of a packet.
    pub const EOF: u32 = 1 << 1;
    /// L2TAG1 holds a stripped VLAN tag.
    pub const L2TAG1P: u32 = 1 << 2;
    /// The device checked L3/L4 checksums.
    pub const L3L4P: u32 = 1 << 3;
    /// FLTSTAT (bits 12-13) shift.
    pub const FLTSTAT_SHIFT: u32 = 12;
    /// FLTSTAT value: qword 0 bits 32-63 hold the RSS hash.
    pub const FLTSTAT_RSS_HASH: u32 = 3;
}

/// Error bits of a receive write-back (qword 1 bits 19-26, shifted down).
pub mod rx_error {
    /// Receive error (CRC, ...).
    pub const RXE: u8 = 1 << 0;
    /// Header buffer overflow.
    pub const HBO: u8 = 1 << 2;
    /// IP header checksum error.
    pub const IPE: u8 = 1 << 3;
    /// L4 checksum error.
    pub const L4E: u8 = 1 << 4;
    /// Outer IP checksum error.
    pub const EIPE: u8 = 1 << 5;
    /// Frame larger than the buffer chain allows.
    pub const OVERSIZE: u8 = 1 << 6;
    /// Errors that make the frame unusable (checksum errors only flag it).
    pub const FATAL: u8 = RXE | HBO | OVERSIZE;
}

const RX_STATUS_MASK: u64 = (1 << 19) - 1;
const RX_ERROR_SHIFT: u32 = 19;
const RX_PTYPE_SHIFT: u32 = 30;
/// Qword 1 of a clean whole frame with an RSS hash, under
/// [`RX_CLEAN_RSS_MASK`]: DD, EOF, FLTSTAT = hash, no stripped VLAN tag, no
/// error bit ([`RxDesc::is_clean_eop_rss`], and the vector receive loop).
pub(crate) const RX_CLEAN_RSS_WANT: u64 = (rx_status::DD | rx_status::EOF) as u64
    | ((rx_status::FLTSTAT_RSS_HASH as u64) << rx_status::FLTSTAT_SHIFT);
/// The qword 1 bits [`RX_CLEAN_RSS_WANT`] is compared under: a frame whose tag
/// the device stripped (L2TAG1P) leaves the fast loops, whose stores do not
/// write the tag, for the one-at-a-time path that does.
pub(crate) const RX_CLEAN_RSS_MASK: u64 =
    RX_CLEAN_RSS_WANT | rx_status::L2TAG1P as u64 | (0xFF << RX_ERROR_SHIFT);
pub(crate) const RX_PLEN_SHIFT: u32 = 38;
const RX_PLEN_MASK: u64 = 0x3FFF;
const RX_HLEN_SHIFT: u32 = 52;
const RX_HLEN_MASK: u64 = 0x7FF;
const RX_SPH: u64 = 1 << 63;

impl RxDesc {
    /// Read format: hand a buffer at IOVA `pkt_addr` to the device.
    #[inline(always)]
    pub fn read_format(pkt_addr: u64) -> RxDesc {
        RxDesc {
            qw0: pkt_addr.to_le(),
            qw1: 0,
            qw2: 0,
            qw3: 0,
        }
    }

    /// Write-back format, as a device writes it (for tests and device models).
    pub fn writeback(pkt_len: u16, status: u32, error: u8, rss_hash: u32) -> RxDesc {
        let qw1 = (status as u64 & RX_STATUS_MASK)
            | ((error as u64) << RX_ERROR_SHIFT)
            | ((pkt_len as u64 & RX_PLEN_MASK) << RX_PLEN_SHIFT);
        RxDesc {
            qw0: ((rss_hash as u64) << 32).to_le(),
            qw1: qw1.to_le(),
            qw2: 0,
            qw3: 0,
        }
    }

    /// The 32 bytes as they lie in memory (for device models and tests).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, w) in [self.qw0, self.qw1, self.qw2, self.qw3].iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&u64::from_le(*w).to_le_bytes());
        }
        b
    }

    /// A descriptor from its 32 bytes in memory (for device models and tests).
    pub fn from_bytes(b: &[u8; 32]) -> RxDesc {
        let q =
            |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes")).to_le();
        RxDesc {
            qw0: q(0),
            qw1: q(1),
            qw2: q(2),
            qw3: q(3),
        }
    }

    #[inline(always)]
    fn q0(&self) -> u64 {
        u64::from_le(self.qw0)
    }

    #[inline(always)]
    fn q1(&self) -> u64 {
        u64::from_le(self.qw1)
    }

    /// Read format: the packet buffer address.
    pub fn pkt_addr(&self) -> u64 {
        self.q0()
    }

    /// Read format: the header buffer address (0).
    pub fn hdr_addr(&self) -> u64 {
        self.q1()
    }

    /// Write-back status bits ([`rx_status`]).
    #[inline(always)]
    pub fn status(&self) -> u32 {
        (self.q1() & RX_STATUS_MASK) as u32
    }

    /// The device is done with this descriptor.
    #[inline(always)]
    pub fn is_done(&self) -> bool {
        self.status() & rx_status::DD != 0
    }

    /// The common case in one test: written back (DD), the whole frame in this
    /// descriptor (EOF), no stripped VLAN tag (L2TAG1P) and no error bit at
    /// all (not even a checksum error).
    #[inline(always)]
    pub fn is_clean_eop(&self) -> bool {
        const MASK: u64 =
            (rx_status::DD | rx_status::EOF | rx_status::L2TAG1P) as u64 | (0xFF << RX_ERROR_SHIFT);
        self.q1() & MASK == (rx_status::DD | rx_status::EOF) as u64
    }

    /// [`is_clean_eop`](Self::is_clean_eop), and qword 0 holds the RSS hash
    /// (FLTSTAT): the common case with RSS on, in one test.
    #[inline(always)]
    pub fn is_clean_eop_rss(&self) -> bool {
        self.q1() & RX_CLEAN_RSS_MASK == RX_CLEAN_RSS_WANT
    }

    /// Last descriptor of its packet.
    #[inline(always)]
    pub fn is_eop(&self) -> bool {
        self.status() & rx_status::EOF != 0
    }

    /// Write-back error bits ([`rx_error`]).
    #[inline(always)]
    pub fn errors(&self) -> u8 {
        (self.q1() >> RX_ERROR_SHIFT) as u8
    }

    /// Packet type (8 bits).
    #[inline(always)]
    pub fn ptype(&self) -> u8 {
        (self.q1() >> RX_PTYPE_SHIFT) as u8
    }

    /// Bytes written to the packet buffer (14 bits; CRC stripped).
    #[inline(always)]
    pub fn pkt_len(&self) -> u16 {
        ((self.q1() >> RX_PLEN_SHIFT) & RX_PLEN_MASK) as u16
    }

    /// The packet length field together with the header-split fields above
    /// it (HLEN, SPH; zero without header split): equal to
    /// [`pkt_len`](Self::pkt_len) when those are zero, larger otherwise. A
    /// range check on it checks both at once (the receive fast path).
    #[inline(always)]
    pub fn pkt_len_unsplit(&self) -> u64 {
        self.q1() >> RX_PLEN_SHIFT
    }

    /// Bytes written to the header buffer (header split only).
    pub fn hdr_len(&self) -> u16 {
        ((self.q1() >> RX_HLEN_SHIFT) & RX_HLEN_MASK) as u16
    }

    /// Header split happened.
    pub fn sph(&self) -> bool {
        self.q1() & RX_SPH != 0
    }

    /// The RSS hash, when FLTSTAT says qword 0 holds one.
    #[inline(always)]
    pub fn rss_hash(&self) -> Option<u32> {
        let fltstat = (self.status() >> rx_status::FLTSTAT_SHIFT) & 3;
        (fltstat == rx_status::FLTSTAT_RSS_HASH).then(|| (self.q0() >> 32) as u32)
    }

    /// A stripped VLAN tag, if any.
    #[inline(always)]
    pub fn l2tag1(&self) -> Option<u16> {
        (self.status() & rx_status::L2TAG1P != 0).then(|| (self.q0() >> 16) as u16)
    }
}

impl std::fmt::Debug for RxDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RxDesc {{ qw0: {:#018x}, qw1: {:#018x}, dd: {}, eop: {}, len: {}, err: {:#x} }}",
            self.q0(),
            self.q1(),
            self.is_done(),
            self.is_eop(),
            self.pkt_len(),
            self.errors()
        )
    }
}

/// Transmit data descriptor, 16 bytes: buffer address and
/// `cmd_type_offset_bsz`.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct TxDesc {
    pub(crate) addr: u64,
    pub(crate) cmd_type_offset_bsz: u64,
}

const _: () = assert!(size_of::<TxDesc>() == 16);

/// Transmit command bits (`IAVF_TX_DESC_CMD_*`, before the shift by 4).
pub mod tx_cmd {
    /// End of packet.
    pub const EOP: u16 = 0x001;
    /// Report status: the device writes DTYPE = DESC_DONE back.
    pub const RS: u16 = 0x002;
    /// Insert the CRC (always set).
    pub const ICRC: u16 = 0x004;
}

/// DTYPE of a data descriptor.
pub const TX_DTYPE_DATA: u8 = 0x0;
/// DTYPE the device writes back when an RS descriptor is done.
pub const TX_DTYPE_DESC_DONE: u8 = 0xF;
/// Largest buffer one descriptor carries (14 bits).
pub const TX_MAX_BUF: usize = 0x3FFF;
/// Shortest frame the hardware sends: anything shorter is a malicious-driver
/// event, after which an i40e PF disables the VF (Linux's iavf pads to
/// `IAVF_MIN_TX_LEN`, DPDK refuses below `IAVF_TX_MIN_PKT_LEN`; both 17).
pub const TX_MIN_LEN: usize = 17;

const TX_CMD_SHIFT: u32 = 4;
const TX_CMD_MASK: u64 = 0xFFF;
pub(crate) const TX_BSZ_SHIFT: u32 = 34;
/// Qword 1 of a data descriptor for a whole packet without RS, but for its
/// length: DTYPE data, EOP, ICRC ([`TxDesc::packet_fitting`], and the vector
/// transmit loop).
pub(crate) const TX_WHOLE_PACKET_QW1: u64 =
    TX_DTYPE_DATA as u64 | (((tx_cmd::EOP | tx_cmd::ICRC) as u64) << TX_CMD_SHIFT);
const TX_BSZ_MASK: u64 = 0x3FFF;

impl TxDesc {
    /// A data descriptor for one whole packet of `len` bytes at IOVA `addr`
    /// (EOP and ICRC set), with RS if `report` is true.
    #[inline(always)]
    pub fn packet(addr: u64, len: u16, report: bool) -> TxDesc {
        let cmd = tx_cmd::EOP | tx_cmd::ICRC | if report { tx_cmd::RS } else { 0 };
        let qw1 = TX_DTYPE_DATA as u64
            | ((cmd as u64) << TX_CMD_SHIFT)
            | ((len as u64 & TX_BSZ_MASK) << TX_BSZ_SHIFT);
        TxDesc {
            addr: addr.to_le(),
            cmd_type_offset_bsz: qw1.to_le(),
        }
    }

    /// [`packet`](Self::packet) without RS for a `len` the caller checked is
    /// at most [`TX_MAX_BUF`] (a longer one would spill into the L2TAG1
    /// field): one mask less on the transmit fast path.
    #[inline(always)]
    pub fn packet_fitting(addr: u64, len: usize) -> TxDesc {
        debug_assert!(len <= TX_MAX_BUF);
        let qw1 = TX_WHOLE_PACKET_QW1 | ((len as u64) << TX_BSZ_SHIFT);
        TxDesc {
            addr: addr.to_le(),
            cmd_type_offset_bsz: qw1.to_le(),
        }
    }

    /// A data descriptor for one segment of a multi-segment packet: ICRC on
    /// every one, EOP on the last only (the device gathers the buffers up to
    /// EOP into one frame). `len` at most [`TX_MAX_BUF`].
    #[inline]
    pub fn segment(addr: u64, len: usize, last: bool) -> TxDesc {
        debug_assert!(len <= TX_MAX_BUF);
        let cmd = tx_cmd::ICRC | if last { tx_cmd::EOP } else { 0 };
        let qw1 = TX_DTYPE_DATA as u64
            | ((cmd as u64) << TX_CMD_SHIFT)
            | ((len as u64 & TX_BSZ_MASK) << TX_BSZ_SHIFT);
        TxDesc {
            addr: addr.to_le(),
            cmd_type_offset_bsz: qw1.to_le(),
        }
    }

    /// The same descriptor with RS (report status) set.
    #[inline(always)]
    pub fn with_rs(self) -> TxDesc {
        TxDesc {
            addr: self.addr,
            cmd_type_offset_bsz: (self.qw1() | ((tx_cmd::RS as u64) << TX_CMD_SHIFT)).to_le(),
        }
    }

    /// What a device writes back on an RS descriptor it finished (for tests
    /// and device models): DTYPE = DESC_DONE.
    pub fn done() -> TxDesc {
        TxDesc {
            addr: 0,
            cmd_type_offset_bsz: (TX_DTYPE_DESC_DONE as u64).to_le(),
        }
    }

    /// The 16 bytes as they lie in memory (for device models and tests).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&u64::from_le(self.addr).to_le_bytes());
        b[8..16].copy_from_slice(&self.qw1().to_le_bytes());
        b
    }

    /// A descriptor from its 16 bytes in memory (for device models and tests).
    pub fn from_bytes(b: &[u8; 16]) -> TxDesc {
        TxDesc {
            addr: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")).to_le(),
            cmd_type_offset_bsz: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")).to_le(),
        }
    }

    #[inline(always)]
    fn qw1(&self) -> u64 {
        u64::from_le(self.cmd_type_offset_bsz)
    }

    /// Buffer address.
    pub fn addr(&self) -> u64 {
        u64::from_le(self.addr)
    }

    /// DTYPE (4 bits).
    #[inline(always)]
    pub fn dtype(&self) -> u8 {
        (self.qw1() & 0xF) as u8
    }

    /// Whether the device wrote DESC_DONE back.
    #[inline(always)]
    pub fn is_done(&self) -> bool {
        self.dtype() == TX_DTYPE_DESC_DONE
    }

    /// Command bits ([`tx_cmd`]).
    pub fn cmd(&self) -> u16 {
        ((self.qw1() >> TX_CMD_SHIFT) & TX_CMD_MASK) as u16
    }

    /// Buffer size in bytes.
    pub fn buf_size(&self) -> u16 {
        ((self.qw1() >> TX_BSZ_SHIFT) & TX_BSZ_MASK) as u16
    }
}

impl std::fmt::Debug for TxDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TxDesc {{ addr: {:#x}, dtype: {:#x}, cmd: {:#x}, len: {} }}",
            self.addr(),
            self.dtype(),
            self.cmd(),
            self.buf_size()
        )
    }
}

/// Admin queue opcode for a VF's message to its PF.
pub const AQC_SEND_MSG_TO_PF: u16 = 0x0801;
/// Admin queue opcode for a PF's message to a VF (what ARQ entries carry).
pub const AQC_SEND_MSG_TO_VF: u16 = 0x0802;

/// Admin queue descriptor flag bits (`IAVF_AQ_FLAG_*`).
pub mod aq_flags {
    /// Descriptor done.
    pub const DD: u16 = 0x0001;
    /// Command completed.
    pub const CMP: u16 = 0x0002;
    /// Error: `retval` says which.
    pub const ERR: u16 = 0x0004;
    /// The buffer is larger than 512 bytes.
    pub const LB: u16 = 0x0200;
    /// The firmware reads the buffer (host → firmware data).
    pub const RD: u16 = 0x0400;
    /// The descriptor has a buffer.
    pub const BUF: u16 = 0x1000;
    /// Suppress the completion interrupt.
    pub const SI: u16 = 0x2000;
}

/// Admin queue descriptor (`struct iavf_aq_desc`), 32 bytes, little-endian.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct AqDesc {
    pub(crate) flags: u16,
    opcode: u16,
    datalen: u16,
    retval: u16,
    cookie_high: u32,
    cookie_low: u32,
    param0: u32,
    param1: u32,
    addr_high: u32,
    addr_low: u32,
}

const _: () = assert!(size_of::<AqDesc>() == 32);

impl AqDesc {
    /// A `send_msg_to_pf` command carrying virtchnl opcode `v_op`, with an
    /// indirect buffer `(iova, len)` if there is a payload (`iavf_aq_send_msg_to_pf`).
    pub fn send_msg_to_pf(v_op: u32, buf: Option<(u64, u16)>) -> AqDesc {
        let mut d = AqDesc {
            flags: aq_flags::SI,
            opcode: AQC_SEND_MSG_TO_PF,
            cookie_high: v_op,
            ..AqDesc::default()
        };
        if let Some((iova, len)) = buf {
            d.flags |= aq_flags::BUF | aq_flags::RD | if len > 512 { aq_flags::LB } else { 0 };
            d.datalen = len;
            d.set_addr(iova);
        }
        d.to_le()
    }

    /// An ARQ slot armed with a buffer of `size` bytes at `iova`.
    pub fn arq_buffer(iova: u64, size: u16) -> AqDesc {
        let mut d = AqDesc {
            flags: aq_flags::BUF | if size > 512 { aq_flags::LB } else { 0 },
            datalen: size,
            ..AqDesc::default()
        };
        d.set_addr(iova);
        d.to_le()
    }

    /// A PF's message as it lands on the ARQ (for tests and device models).
    pub fn pf_message(v_op: u32, v_retval: i32, len: u16, buf_iova: u64) -> AqDesc {
        let mut d = AqDesc {
            flags: aq_flags::DD | aq_flags::CMP | if len > 0 { aq_flags::BUF } else { 0 },
            opcode: AQC_SEND_MSG_TO_VF,
            datalen: len,
            cookie_high: v_op,
            cookie_low: v_retval as u32,
            ..AqDesc::default()
        };
        d.set_addr(buf_iova);
        d.to_le()
    }

    fn set_addr(&mut self, iova: u64) {
        self.addr_high = (iova >> 32) as u32;
        self.addr_low = iova as u32;
    }

    /// Convert every field to little-endian (a no-op on x86).
    fn to_le(self) -> AqDesc {
        AqDesc {
            flags: self.flags.to_le(),
            opcode: self.opcode.to_le(),
            datalen: self.datalen.to_le(),
            retval: self.retval.to_le(),
            cookie_high: self.cookie_high.to_le(),
            cookie_low: self.cookie_low.to_le(),
            param0: self.param0.to_le(),
            param1: self.param1.to_le(),
            addr_high: self.addr_high.to_le(),
            addr_low: self.addr_low.to_le(),
        }
    }

    /// Flag bits ([`aq_flags`]).
    pub fn flags(&self) -> u16 {
        u16::from_le(self.flags)
    }
    /// Admin queue opcode.
    pub fn opcode(&self) -> u16 {
        u16::from_le(self.opcode)
    }
    /// Buffer length (sent) or received length.
    pub fn datalen(&self) -> u16 {
        u16::from_le(self.datalen)
    }
    /// Admin-queue status (`enum iavf_admin_queue_err`).
    pub fn retval(&self) -> u16 {
        u16::from_le(self.retval)
    }
    /// The virtchnl opcode (cookie high).
    pub fn v_opcode(&self) -> u32 {
        u32::from_le(self.cookie_high)
    }
    /// The virtchnl status (cookie low).
    pub fn v_retval(&self) -> i32 {
        u32::from_le(self.cookie_low) as i32
    }
    /// Buffer IOVA.
    pub fn addr(&self) -> u64 {
        ((u32::from_le(self.addr_high) as u64) << 32) | u32::from_le(self.addr_low) as u64
    }

    /// The descriptor's 32 bytes as they lie in memory (for device models).
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..2].copy_from_slice(&self.flags().to_le_bytes());
        b[2..4].copy_from_slice(&self.opcode().to_le_bytes());
        b[4..6].copy_from_slice(&self.datalen().to_le_bytes());
        b[6..8].copy_from_slice(&self.retval().to_le_bytes());
        b[8..12].copy_from_slice(&self.v_opcode().to_le_bytes());
        b[12..16].copy_from_slice(&(self.v_retval() as u32).to_le_bytes());
        b[16..20].copy_from_slice(&u32::from_le(self.param0).to_le_bytes());
        b[20..24].copy_from_slice(&u32::from_le(self.param1).to_le_bytes());
        b[24..28].copy_from_slice(&u32::from_le(self.addr_high).to_le_bytes());
        b[28..32].copy_from_slice(&u32::from_le(self.addr_low).to_le_bytes());
        b
    }

    /// A descriptor from its 32 bytes in memory (for device models).
    pub fn from_bytes(b: &[u8; 32]) -> AqDesc {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        AqDesc {
            flags: u16_at(0),
            opcode: u16_at(2),
            datalen: u16_at(4),
            retval: u16_at(6),
            cookie_high: u32_at(8),
            cookie_low: u32_at(12),
            param0: u32_at(16),
            param1: u32_at(20),
            addr_high: u32_at(24),
            addr_low: u32_at(28),
        }
        .to_le()
    }

    /// Set the completion fields as firmware does on an ATQ descriptor (tests).
    pub fn completed(mut self, retval: u16) -> AqDesc {
        let f = self.flags()
            | aq_flags::DD
            | aq_flags::CMP
            | if retval != 0 { aq_flags::ERR } else { 0 };
        self.flags = f.to_le();
        self.retval = retval.to_le();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_read_format_clears_dd() {
        let d = RxDesc::read_format(0x1234_5000);
        assert_eq!(d.pkt_addr(), 0x1234_5000);
        assert_eq!(d.hdr_addr(), 0);
        assert!(!d.is_done());
        assert_eq!(d.qw2 | d.qw3, 0);
    }

    #[test]
    fn rx_writeback_fields_decode_at_their_bits() {
        let status = rx_status::DD
            | rx_status::EOF
            | (rx_status::FLTSTAT_RSS_HASH << rx_status::FLTSTAT_SHIFT);
        let d = RxDesc::writeback(1514, status, 0, 0xDEAD_BEEF);
        let q1 = u64::from_le(d.qw1);
        assert_eq!(q1 & 1, 1, "DD is bit 0");
        assert_eq!((q1 >> 1) & 1, 1, "EOF is bit 1");
        assert_eq!((q1 >> 38) & 0x3FFF, 1514, "length at bits 38-51");
        assert!(d.is_done() && d.is_eop());
        assert_eq!(d.pkt_len(), 1514);
        assert_eq!(d.errors(), 0);
        assert_eq!(d.rss_hash(), Some(0xDEAD_BEEF));
        assert_eq!(d.l2tag1(), None);
        let bad = RxDesc::writeback(64, rx_status::DD, rx_error::RXE | rx_error::OVERSIZE, 0);
        assert!(!bad.is_eop());
        assert_eq!(
            bad.errors() & rx_error::FATAL,
            rx_error::RXE | rx_error::OVERSIZE
        );
        assert_eq!(
            (u64::from_le(bad.qw1) >> 19) & 0xFF,
            0x41,
            "errors at bits 19-26"
        );
        assert_eq!(bad.rss_hash(), None);
        let full = RxDesc::writeback(0x3FFF, rx_status::DD | rx_status::EOF, 0, 0);
        assert_eq!(full.pkt_len(), 16383);
        let raw = RxDesc {
            qw0: 0,
            qw1: ((0x5Au64 << 30) | (7u64 << 52) | (1 << 63)).to_le(),
            qw2: 0,
            qw3: 0,
        };
        assert_eq!((raw.ptype(), raw.hdr_len(), raw.sph()), (0x5A, 7, true));
        assert_eq!(d.pkt_len_unsplit(), 1514, "no split bits: the length");
        assert!(
            raw.pkt_len_unsplit() > 0x3FFF,
            "split bits: out of any range"
        );
        assert!(d.is_clean_eop() && !bad.is_clean_eop());
        let csum = RxDesc::writeback(64, rx_status::DD | rx_status::EOF, rx_error::L4E, 0);
        assert!(!csum.is_clean_eop(), "any error bit leaves the fast path");
        assert!(!RxDesc::writeback(64, rx_status::EOF, 0, 0).is_clean_eop());
        assert_eq!(RxDesc::from_bytes(&d.to_bytes()), d);
        assert_eq!(
            &d.to_bytes()[4..8],
            &0xDEAD_BEEFu32.to_le_bytes(),
            "hash in qword 0 bits 32-63"
        );
    }

    #[test]
    fn tx_packet_descriptor_layout() {
        let d = TxDesc::packet(0xABCD_0000, 60, false);
        let q1 = u64::from_le(d.cmd_type_offset_bsz);
        assert_eq!(q1 & 0xF, 0, "DTYPE data");
        assert_eq!((q1 >> 4) & 0xFFF, 0x005, "EOP|ICRC");
        assert_eq!(q1 >> 34, 60, "size at bits 34-47");
        assert_eq!(d.addr(), 0xABCD_0000);
        let rs = TxDesc::packet(0x1000, 1514, true);
        assert_eq!(rs.cmd(), tx_cmd::EOP | tx_cmd::RS | tx_cmd::ICRC);
        assert_eq!(rs.buf_size(), 1514);
        assert!(!rs.is_done());
        assert!(TxDesc::done().is_done());
        let with = TxDesc::packet(0x1000, 1514, false).with_rs();
        assert_eq!(with, rs, "with_rs sets RS and nothing else");
        assert_eq!(TxDesc::from_bytes(&rs.to_bytes()), rs);
        assert_eq!(&rs.to_bytes()[0..8], &0x1000u64.to_le_bytes());
    }

    #[test]
    fn aq_descriptor_layout() {
        let d = AqDesc::send_msg_to_pf(6, Some((0x1_2345_6000, 136)));
        assert_eq!(d.opcode(), 0x0801);
        assert_eq!(d.flags(), aq_flags::SI | aq_flags::BUF | aq_flags::RD);
        assert_eq!(d.datalen(), 136);
        assert_eq!(d.v_opcode(), 6);
        assert_eq!(d.addr(), 0x1_2345_6000);
        // addr_high at 0x18, addr_low at 0x1C (high word first).
        assert_eq!(u32::from_le(d.addr_high), 1);
        assert_eq!(u32::from_le(d.addr_low), 0x2345_6000);
        let big = AqDesc::send_msg_to_pf(6, Some((0, 1000)));
        assert_ne!(big.flags() & aq_flags::LB, 0);
        let bare = AqDesc::send_msg_to_pf(2, None);
        assert_eq!(bare.flags(), aq_flags::SI);
        assert_eq!(bare.datalen(), 0);
        let arq = AqDesc::arq_buffer(0x8000, 4096);
        assert_eq!(arq.flags(), aq_flags::BUF | aq_flags::LB);
        assert_eq!(arq.datalen(), 4096);
        let m = AqDesc::pf_message(17, -5, 16, 0x9000);
        assert_eq!((m.v_opcode(), m.v_retval(), m.datalen()), (17, -5, 16));
        let b = d.to_bytes();
        assert_eq!(&b[2..4], &[0x01, 0x08], "opcode at 0x02");
        assert_eq!(&b[8..12], &6u32.to_le_bytes(), "virtchnl opcode at 0x08");
        assert_eq!(&b[24..28], &1u32.to_le_bytes(), "address high at 0x18");
        assert_eq!(AqDesc::from_bytes(&b), d);
    }

    #[test]
    fn aq_field_offsets() {
        let d = AqDesc {
            flags: 1,
            opcode: 2,
            datalen: 3,
            retval: 4,
            cookie_high: 5,
            cookie_low: 6,
            param0: 7,
            param1: 8,
            addr_high: 9,
            addr_low: 10,
        };
        let base = &d as *const AqDesc as usize;
        assert_eq!(std::ptr::addr_of!(d.opcode) as usize - base, 0x02);
        assert_eq!(std::ptr::addr_of!(d.retval) as usize - base, 0x06);
        assert_eq!(std::ptr::addr_of!(d.cookie_high) as usize - base, 0x08);
        assert_eq!(std::ptr::addr_of!(d.cookie_low) as usize - base, 0x0C);
        assert_eq!(std::ptr::addr_of!(d.param0) as usize - base, 0x10);
        assert_eq!(std::ptr::addr_of!(d.addr_high) as usize - base, 0x18);
        assert_eq!(std::ptr::addr_of!(d.addr_low) as usize - base, 0x1C);
    }
}
