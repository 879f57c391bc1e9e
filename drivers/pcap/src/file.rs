//! Classic pcap files: loading a capture into memory for replay ([`RxFile`]) and
//! writing one record per transmitted packet ([`TxFile`]).
//!
//! The global header is read and written through `pcap-file`; the 16-byte record
//! headers are walked here, because a replay needs what that crate does not give:
//! the byte offset of a truncated or corrupt record, the lenient length checks
//! libpcap applies (a record may be longer than the header's snaplen, and a
//! capture cut with `-s` has `orig_len > incl_len`), and no per-record check of
//! the timestamp, which replay does not use.
//!
//! Layout (all fields in the byte order the magic number reveals):
//!
//! ```text
//! file header, 24 bytes: magic u32 | major u16 | minor u16 | thiszone i32 | sigfigs u32 | snaplen u32 | linktype u32
//! record header, 16 bytes: ts_sec u32 | ts_frac u32 (µs or ns) | incl_len u32 | orig_len u32, then incl_len bytes
//! ```
#![deny(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::PcapHeader;
use pcap_file::{DataLink, Endianness, TsResolution};

/// LINKTYPE_ETHERNET (DLT_EN10MB): the only link type a port replays.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// libpcap's MAXIMUM_SNAPLEN: no valid record is longer, and the snaplen our
/// transmit files declare (tcpdump's default).
pub const MAX_SNAPLEN: u32 = 262_144;
/// Default upper bound on an `rx_pcap` file, which is loaded whole into memory.
pub const DEFAULT_MAX_RX_FILE_BYTES: u64 = 1 << 30;
/// Buffer of a transmit file: one write(2) per this many bytes of records.
pub const TX_BUFFER_BYTES: usize = 1 << 20;

const FILE_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const MAGIC_PCAPNG: u32 = 0x0a0d_0d0a;
const MAGIC_KUZNETZOV: u32 = 0xa1b2_cd34;
/// The link-type field's low 26 bits; the upper ones may carry FCS information.
const LINKTYPE_MASK: u32 = 0x03ff_ffff;

/// What can be wrong with a pcap file. Every message names the file.
#[derive(Debug)]
pub enum PcapFileError {
    /// The file could not be opened, read, created or written.
    Io {
        /// What was being done (`open rx_pcap`, `write tx_pcap`...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// An `rx_pcap` file larger than the in-memory limit.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size in bytes (at least; the limit + 1 when it cannot be told).
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Not a classic pcap file (pcapng, an unknown magic, a short header, a
    /// version other than 2.x).
    NotPcap {
        /// The file.
        path: PathBuf,
        /// What was found instead, and how to convert it.
        reason: String,
    },
    /// A link type other than Ethernet.
    LinkType {
        /// The file.
        path: PathBuf,
        /// The LINKTYPE_ value found.
        linktype: u32,
    },
    /// A record cut short by the end of the file, or with an impossible length.
    /// The records before it are loaded and delivered.
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record's header in the file.
        offset: u64,
        /// Packets loaded before it.
        packets: usize,
        /// What is wrong with the record.
        reason: String,
    },
}

impl fmt::Display for PcapFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PcapFileError::Io { op, path, source } => {
                write!(f, "{op} {}: {source}", path.display())
            }
            PcapFileError::TooLarge { path, size, limit } => write!(
                f,
                "{}: {size} bytes is more than the {limit}-byte limit for rx_pcap files \
                 (net_pcap loads the capture into memory); split it, e.g. `editcap -c 1000000 IN OUT`",
                path.display()
            ),
            PcapFileError::NotPcap { path, reason } => {
                write!(f, "{}: not a classic pcap file: {reason}", path.display())
            }
            PcapFileError::LinkType { path, linktype } => write!(
                f,
                "{}: link type {linktype} ({:?}) is not Ethernet; net_pcap replays only \
                 LINKTYPE_ETHERNET (1) captures: capture on an Ethernet interface \
                 (`tcpdump -i any` writes LINUX_SLL)",
                path.display(),
                DataLink::from(*linktype)
            ),
            PcapFileError::Corrupt {
                path,
                offset,
                packets,
                reason,
            } => write!(
                f,
                "{}: truncated or corrupt record at byte offset {offset}: {reason}; \
                 the {packets} packets before it are delivered",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PcapFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PcapFileError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A capture loaded into memory: the file's bytes and an index of its records.
#[derive(Debug)]
pub struct RxFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// (offset of the packet data in `bytes`, captured length), in file order.
    frames: Vec<(u32, u32)>,
    resolution: TsResolution,
    endianness: Endianness,
    /// Records captured shorter than they were on the wire (`-s` snaplen).
    snapped: usize,
    error: Option<PcapFileError>,
}

impl RxFile {
    /// Read and index `path`, refusing files larger than `max_bytes` (at most
    /// 4 GiB - 1: record offsets are 32-bit). A truncated or corrupt record does
    /// not fail the load: see [`RxFile::error`].
    pub fn load(path: &Path, max_bytes: u64) -> Result<RxFile, PcapFileError> {
        let limit = max_bytes.min(u32::MAX as u64);
        let io = |op, source| PcapFileError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(|e| io("open rx_pcap", e))?;
        let meta = file.metadata().map_err(|e| io("stat rx_pcap", e))?;
        if meta.is_file() && meta.len() > limit {
            return Err(PcapFileError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                limit,
            });
        }
        let mut bytes = Vec::with_capacity(if meta.is_file() {
            meta.len() as usize
        } else {
            0
        });
        // The file may grow while we read it, or be a pipe: never read past the limit.
        file.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io("read rx_pcap", e))?;
        if bytes.len() as u64 > limit {
            return Err(PcapFileError::TooLarge {
                path: path.to_path_buf(),
                size: limit + 1,
                limit,
            });
        }
        RxFile::parse(path, bytes)
    }

    /// Index a capture already in memory; `path` names it in messages.
    pub fn parse(path: &Path, mut bytes: Vec<u8>) -> Result<RxFile, PcapFileError> {
        let not_pcap = |reason: String| PcapFileError::NotPcap {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() > u32::MAX as usize {
            return Err(PcapFileError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                limit: u32::MAX as u64,
            });
        }
        if bytes.len() < 4 {
            return Err(not_pcap(format!(
                "the file has {} bytes, less than the {FILE_HEADER_LEN}-byte pcap file header",
                bytes.len()
            )));
        }
        let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        match magic {
            MAGIC_US | MAGIC_NS => {}
            m if m.swap_bytes() == MAGIC_US || m.swap_bytes() == MAGIC_NS => {}
            MAGIC_PCAPNG => {
                return Err(not_pcap(
                    "it is pcapng; convert it with `editcap -F pcap IN OUT` (or `tshark -F pcap -r IN -w OUT`)"
                        .into(),
                ));
            }
            m if m == MAGIC_KUZNETZOV || m.swap_bytes() == MAGIC_KUZNETZOV => {
                return Err(not_pcap(
                    "it is the modified (Kuznetzov) pcap format; convert it with `editcap -F pcap IN OUT`"
                        .into(),
                ));
            }
            m => {
                return Err(not_pcap(format!(
                    "unknown magic number 0x{m:08x} (pcap files start with a1b2c3d4 or a1b23c4d in either byte order)"
                )));
            }
        }
        if bytes.len() < FILE_HEADER_LEN {
            return Err(not_pcap(format!(
                "the file header is truncated: {} of {FILE_HEADER_LEN} bytes",
                bytes.len()
            )));
        }
        let (_, header) = PcapHeader::from_slice(&bytes)
            .map_err(|e| not_pcap(format!("bad file header: {e}")))?;
        if header.version_major != 2 {
            return Err(not_pcap(format!(
                "pcap version {}.{}; only version 2.x is read",
                header.version_major, header.version_minor
            )));
        }
        let endianness = header.endianness;
        let rd = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            match endianness {
                Endianness::Big => u32::from_be_bytes(a),
                Endianness::Little => u32::from_le_bytes(a),
            }
        };
        let linktype = rd(&bytes[20..24]) & LINKTYPE_MASK;
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapFileError::LinkType {
                path: path.to_path_buf(),
                linktype,
            });
        }

        let mut frames = Vec::new();
        let mut snapped = 0;
        let mut error = None;
        let mut off = FILE_HEADER_LEN;
        while off < bytes.len() {
            let left = bytes.len() - off;
            let corrupt = |reason: String| PcapFileError::Corrupt {
                path: path.to_path_buf(),
                offset: off as u64,
                packets: frames.len(),
                reason,
            };
            if left < RECORD_HEADER_LEN {
                error = Some(corrupt(format!(
                    "the record header is truncated: {left} of {RECORD_HEADER_LEN} bytes before the end of the file"
                )));
                break;
            }
            let incl_len = rd(&bytes[off + 8..]);
            let orig_len = rd(&bytes[off + 12..]);
            if incl_len > MAX_SNAPLEN {
                error = Some(corrupt(format!(
                    "captured length {incl_len} is more than {MAX_SNAPLEN} bytes, libpcap's maximum"
                )));
                break;
            }
            if (left - RECORD_HEADER_LEN) < incl_len as usize {
                error = Some(corrupt(format!(
                    "the packet data is truncated: the record holds {incl_len} bytes, the file ends after {}",
                    left - RECORD_HEADER_LEN
                )));
                break;
            }
            if orig_len > incl_len {
                snapped += 1;
            }
            frames.push(((off + RECORD_HEADER_LEN) as u32, incl_len));
            off += RECORD_HEADER_LEN + incl_len as usize;
        }
        if error.is_some() {
            // Keep only what is replayed.
            bytes.truncate(off);
            bytes.shrink_to_fit();
        }
        Ok(RxFile {
            path: path.to_path_buf(),
            bytes,
            frames,
            resolution: header.ts_resolution,
            endianness,
            snapped,
            error,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of packets loaded.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no packet was loaded.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The index: (offset in [`RxFile::bytes`], length) of each packet.
    #[inline(always)]
    pub fn frames(&self) -> &[(u32, u32)] {
        &self.frames
    }

    /// The file's bytes (up to the first bad record).
    #[inline(always)]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Packet `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let (off, len) = self.frames[i];
        &self.bytes[off as usize..off as usize + len as usize]
    }

    /// Timestamp resolution of the file.
    pub fn resolution(&self) -> TsResolution {
        self.resolution
    }

    /// Byte order of the file.
    pub fn endianness(&self) -> Endianness {
        self.endianness
    }

    /// Records captured shorter than the frame was on the wire; they are
    /// delivered as captured.
    pub fn snapped(&self) -> usize {
        self.snapped
    }

    /// The truncated or corrupt record the file ends in, if any
    /// ([`PcapFileError::Corrupt`]): the packets before it are loaded.
    pub fn error(&self) -> Option<&PcapFileError> {
        self.error.as_ref()
    }

    /// Byte offset of the bad record, if any.
    pub fn error_offset(&self) -> Option<u64> {
        match &self.error {
            Some(PcapFileError::Corrupt { offset, .. }) => Some(*offset),
            _ => None,
        }
    }
}

/// A pcap file being written: nanosecond timestamps, this machine's byte order,
/// Ethernet, snaplen 262144 (what tcpdump writes, so tcpdump, tshark and
/// libpcap read it).
#[derive(Debug)]
pub struct TxFile {
    path: PathBuf,
    w: BufWriter<File>,
    /// A write failed: the file may end in a partial record, so nothing more is
    /// written to it.
    broken: bool,
    /// The first write error, until it is reported.
    pending: Option<io::Error>,
}

impl TxFile {
    /// Create (or truncate) `path` and write the file header, flushed at once so
    /// the file is a valid, empty capture from the start.
    pub fn create(path: &Path) -> Result<TxFile, PcapFileError> {
        let io = |op, source| PcapFileError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(|e| io("create tx_pcap", e))?;
        let mut w = BufWriter::with_capacity(TX_BUFFER_BYTES, file);
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: MAX_SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::native(),
        };
        header.write_to(&mut w).map_err(|e| match e {
            pcap_file::PcapError::IoError(source) => io("write tx_pcap", source),
            other => io("write tx_pcap", io::Error::other(other.to_string())),
        })?;
        w.flush().map_err(|e| io("write tx_pcap", e))?;
        Ok(TxFile {
            path: path.to_path_buf(),
            w,
            broken: false,
            pending: None,
        })
    }

    /// A writer on an already open file with a small buffer, without a file
    /// header: lets tests make writes fail (`/dev/full`).
    #[cfg(test)]
    pub(crate) fn on_file(path: &Path, file: File, capacity: usize) -> TxFile {
        TxFile {
            path: path.to_path_buf(),
            w: BufWriter::with_capacity(capacity, file),
            broken: false,
            pending: None,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record stamped `ts` (since the Unix epoch). Returns false,
    /// writing nothing, once any write to this file has failed. A syscall happens
    /// only when the buffer ([`TX_BUFFER_BYTES`]) fills.
    #[inline]
    pub fn write_record(&mut self, ts: Duration, data: &[u8]) -> bool {
        self.write_record_parts(ts, data.len(), std::iter::once(data))
    }

    /// As [`write_record`](Self::write_record), the record's `len` bytes
    /// given in parts (a multi-segment packet's segments).
    #[inline]
    pub fn write_record_parts<'a>(
        &mut self,
        ts: Duration,
        len: usize,
        parts: impl Iterator<Item = &'a [u8]>,
    ) -> bool {
        if self.broken {
            return false;
        }
        let len = len as u32;
        let mut h = [0u8; RECORD_HEADER_LEN];
        // Seconds wrap in 2106, as in every classic pcap file.
        h[0..4].copy_from_slice(&(ts.as_secs() as u32).to_ne_bytes());
        h[4..8].copy_from_slice(&ts.subsec_nanos().to_ne_bytes());
        h[8..12].copy_from_slice(&len.to_ne_bytes());
        h[12..16].copy_from_slice(&len.to_ne_bytes());
        let mut r = self.w.write_all(&h);
        let mut written = 0usize;
        for part in parts {
            if r.is_err() {
                break;
            }
            written += part.len();
            r = self.w.write_all(part);
        }
        debug_assert!(r.is_err() || written == len as usize);
        if let Err(e) = r {
            self.fail(e);
            return false;
        }
        true
    }

    fn fail(&mut self, e: io::Error) {
        self.broken = true;
        if self.pending.is_none() {
            self.pending = Some(e);
        }
    }

    /// Write out the buffer; a failure is kept for [`TxFile::flush`] to report.
    pub fn write_out(&mut self) {
        if !self.broken
            && let Err(e) = self.w.flush()
        {
            self.fail(e);
        }
    }

    /// Write out the buffer. Returns the first write error not reported yet
    /// (once), whether it happened now or in an earlier [`TxFile::write_record`].
    pub fn flush(&mut self) -> Result<(), PcapFileError> {
        self.write_out();
        match self.pending.take() {
            None => Ok(()),
            Some(source) => Err(PcapFileError::Io {
                op: "write tx_pcap",
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_header_is_nanosecond_native_ethernet() {
        let dir = std::env::temp_dir().join(format!("nicpoll-pcap-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("hdr.pcap");
        let mut t = TxFile::create(&p).unwrap();
        assert!(t.write_record(Duration::new(5, 7), &[1, 2, 3]));
        t.flush().unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(b.len(), 24 + 16 + 3);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), MAGIC_NS);
        assert_eq!(
            u32::from_ne_bytes(b[16..20].try_into().unwrap()),
            MAX_SNAPLEN
        );
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 1);
        let f = RxFile::parse(&p, b).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f.frame(0), &[1, 2, 3]);
        assert_eq!(f.resolution(), TsResolution::NanoSecond);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn short_and_foreign_files_are_named() {
        let p = Path::new("/x/y.pcap");
        for (bytes, needle) in [
            (vec![], "0 bytes"),
            (
                vec![0xa1, 0xb2, 0xc3, 0xd4, 0, 2],
                "file header is truncated: 6 of 24",
            ),
            (0x0a0d0d0au32.to_be_bytes().to_vec(), "pcapng"),
            (0xa1b2cd34u32.to_le_bytes().to_vec(), "Kuznetzov"),
            (b"GIF89a".to_vec(), "unknown magic number 0x47494638"),
        ] {
            let e = RxFile::parse(p, bytes).unwrap_err().to_string();
            assert!(e.contains("/x/y.pcap") && e.contains(needle), "{e}");
        }
        let mut v1 = MAGIC_US.to_le_bytes().to_vec();
        v1.extend_from_slice(&[1, 0, 0, 0]);
        v1.resize(24, 0);
        let e = RxFile::parse(p, v1).unwrap_err().to_string();
        assert!(e.contains("version 1.0"), "{e}");
    }
}
