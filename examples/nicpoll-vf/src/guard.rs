//! What a client may send: every message is checked whole before the
//! `vfio_user` crate sees it.
//!
//! The crate (0.1.7) parses messages straight off the socket and trusts them:
//! an unknown or unsupported command is refused before its payload is read,
//! so the payload is then taken for the next header and the stream loses its
//! framing (`Server::handle_command`, the `UnsupportedCommand` and
//! `UnknownCommand` paths); a VERSION shorter than its fixed part underflows a
//! size, and one whose capabilities are not NUL-terminated JSON panics
//! (`CString::from_vec_with_nul(..).unwrap()`); a SET_IRQS with boolean data
//! leaves the data unread; a REGION_READ or REGION_WRITE of any `count`
//! allocates that much. [`check`] turns each of these into a refusal the
//! server answers itself with an errno (and counts), so the crate only ever
//! receives well-formed messages of the commands it handles, and the stream
//! stays in step.
#![forbid(unsafe_code)]

use crate::msg::{FLAG_ERROR, FLAG_NO_REPLY, FLAG_TYPE_MASK, HEADER_LEN, Message, cmd};

/// Largest data a REGION_READ or REGION_WRITE may carry (the protocol's
/// default `max_data_xfer_size`, which the crate announces too).
pub const MAX_DATA_XFER: usize = 1 << 20;
/// Largest message accepted: a REGION_WRITE of [`MAX_DATA_XFER`] bytes.
/// Anything larger cannot be framed (the connection is closed).
pub const MAX_MESSAGE: usize = HEADER_LEN + 16 + MAX_DATA_XFER;

/// `VFIO_IRQ_SET_DATA_NONE` ... `VFIO_IRQ_SET_ACTION_TRIGGER` (linux/vfio.h).
pub mod irq_flags {
    pub const DATA_NONE: u32 = 1 << 0;
    pub const DATA_BOOL: u32 = 1 << 1;
    pub const DATA_EVENTFD: u32 = 1 << 2;
    pub const ACTION_MASK: u32 = 1 << 3;
    pub const ACTION_UNMASK: u32 = 1 << 4;
    pub const ACTION_TRIGGER: u32 = 1 << 5;
    pub const DATA: u32 = DATA_NONE | DATA_BOOL | DATA_EVENTFD;
    pub const ACTION: u32 = ACTION_MASK | ACTION_UNMASK | ACTION_TRIGGER;
}

/// DMA_UNMAP flag "unmap everything", as QEMU sends it: Linux's
/// `VFIO_DMA_UNMAP_FLAG_ALL` (1 << 1). The crate names that bit
/// `GET_DIRTY_PAGE_INFO` and puts its own `UNMAP_ALL` at 1 << 2: the server
/// reads the raw bits.
pub const DMA_UNMAP_FLAG_ALL: u32 = 1 << 1;
/// DMA_UNMAP flag "get the dirty bitmap" (Linux `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`):
/// not supported (no migration).
pub const DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;

/// What kind of bad message it was (the counters are per kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// A command number the protocol does not define, or one a client must
    /// not send (a reply, DMA_READ/WRITE which go server to client).
    Unknown,
    /// A command the server does not offer (REGION_WRITE_MULTI, IO fds,
    /// dirty pages, migration, device features, boolean IRQ data).
    Unsupported,
    /// Wrong size or fields for its command.
    Malformed,
    /// A region access outside the region or above the transfer limit.
    OutOfRange,
    /// File descriptors where the command takes none, or too many.
    Fds,
}

impl Bad {
    /// Every kind, for counters.
    pub const ALL: [Bad; 5] = [
        Bad::Unknown,
        Bad::Unsupported,
        Bad::Malformed,
        Bad::OutOfRange,
        Bad::Fds,
    ];

    /// The counter's name.
    pub fn name(self) -> &'static str {
        match self {
            Bad::Unknown => "unknown",
            Bad::Unsupported => "unsupported",
            Bad::Malformed => "malformed",
            Bad::OutOfRange => "out_of_range",
            Bad::Fds => "bad_fds",
        }
    }
}

/// A refused message: the errno answered (unless it asked for no reply), and
/// why, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The kind, for the counters.
    pub kind: Bad,
    /// errno of the error reply.
    pub errno: i32,
    /// What was wrong.
    pub why: String,
}

fn refuse(kind: Bad, errno: i32, why: impl Into<String>) -> Refusal {
    Refusal {
        kind,
        errno,
        why: why.into(),
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// Check `m` against the protocol and the device's `region_sizes` (indexed
/// by VFIO region index). `Ok`: the crate may have it (VERSION may have been
/// given the empty capability object the crate needs). The caller then
/// forwards it asking for a reply whatever the client asked (so the crate's
/// replies, error replies of posted writes included, stay one per message),
/// and drops the reply the client did not want.
pub fn check(m: &mut Message, region_sizes: &[u64], irq_counts: &[u32]) -> Result<(), Refusal> {
    let h = m.header;
    let p = &m.payload;
    let len = p.len();
    if h.flags & FLAG_TYPE_MASK != 0 {
        return Err(refuse(
            Bad::Unknown,
            libc::EINVAL,
            format!(
                "message type {} (flags {:#x}): a client sends commands (type 0) only",
                h.flags & FLAG_TYPE_MASK,
                h.flags
            ),
        ));
    }
    if h.flags & !(FLAG_TYPE_MASK | FLAG_NO_REPLY) != 0 || h.flags & FLAG_ERROR != 0 {
        return Err(refuse(
            Bad::Malformed,
            libc::EINVAL,
            format!("unknown flag bits {:#x} in a command", h.flags),
        ));
    }
    let takes_fds = matches!(h.command, cmd::DMA_MAP | cmd::DEVICE_SET_IRQS);
    if !takes_fds && !m.fds.is_empty() {
        return Err(refuse(
            Bad::Fds,
            libc::EINVAL,
            format!(
                "{} file descriptor(s) with {}, which takes none",
                m.fds.len(),
                cmd::name(h.command)
            ),
        ));
    }
    let needs_reply = matches!(
        h.command,
        cmd::VERSION
            | cmd::DEVICE_GET_INFO
            | cmd::DEVICE_GET_REGION_INFO
            | cmd::DEVICE_GET_IRQ_INFO
            | cmd::REGION_READ
    );
    if needs_reply && h.no_reply() {
        return Err(refuse(
            Bad::Malformed,
            libc::EINVAL,
            format!("{} with no reply wanted", cmd::name(h.command)),
        ));
    }
    let exact = |want: usize| -> Result<(), Refusal> {
        if len == want {
            Ok(())
        } else {
            Err(refuse(
                Bad::Malformed,
                libc::EINVAL,
                format!(
                    "{} of {} bytes: its payload is {want} bytes",
                    cmd::name(h.command),
                    HEADER_LEN + len
                ),
            ))
        }
    };
    match h.command {
        cmd::VERSION => {
            if len < 4 {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    format!("VERSION of {} bytes: no version numbers", HEADER_LEN + len),
                ));
            }
            if len == 4 {
                // The capabilities are optional; the crate needs them.
                m.payload.extend_from_slice(b"{}\0");
                m.header.size += 3;
                return Ok(());
            }
            let json = &p[4..];
            let Some((&0, text)) = json.split_last() else {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    "VERSION capabilities are not NUL-terminated",
                ));
            };
            if text.contains(&0) {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    "VERSION capabilities hold a NUL byte",
                ));
            }
            if serde_json::from_slice::<serde_json::Value>(text)
                .map(|v| !v.is_object())
                .unwrap_or(true)
            {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    format!(
                        "VERSION capabilities are not a JSON object: {:?}",
                        String::from_utf8_lossy(&text[..text.len().min(80)])
                    ),
                ));
            }
            Ok(())
        }
        cmd::DMA_MAP => {
            exact(32)?;
            let (flags, address, size) = (u32_at(p, 4), u64_at(p, 16), u64_at(p, 24));
            if flags & !3 != 0 {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    format!("DMA_MAP flags {flags:#x}: only READ (1) and WRITE (2) exist"),
                ));
            }
            if size == 0 || address.checked_add(size).is_none() {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    format!("DMA_MAP of {size:#x} bytes at {address:#x}"),
                ));
            }
            if m.fds.len() > 1 {
                return Err(refuse(
                    Bad::Fds,
                    libc::EINVAL,
                    format!("DMA_MAP with {} file descriptors (0 or 1)", m.fds.len()),
                ));
            }
            Ok(())
        }
        cmd::DMA_UNMAP => {
            exact(24)?;
            let flags = u32_at(p, 4);
            if flags & DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
                return Err(refuse(
                    Bad::Unsupported,
                    libc::ENOTSUP,
                    "DMA_UNMAP asking for a dirty bitmap (no migration support)",
                ));
            }
            if flags & !DMA_UNMAP_FLAG_ALL != 0 {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    format!("DMA_UNMAP flags {flags:#x}"),
                ));
            }
            Ok(())
        }
        cmd::DEVICE_GET_INFO | cmd::DEVICE_GET_IRQ_INFO => {
            exact(16)?;
            if h.command == cmd::DEVICE_GET_IRQ_INFO && u32_at(p, 8) as usize >= irq_counts.len() {
                return Err(refuse(
                    Bad::OutOfRange,
                    libc::EINVAL,
                    format!("DEVICE_GET_IRQ_INFO of IRQ index {}", u32_at(p, 8)),
                ));
            }
            Ok(())
        }
        cmd::DEVICE_GET_REGION_INFO => {
            exact(32)?;
            let (argsz, index) = (u32_at(p, 0), u32_at(p, 8));
            if (index as usize) >= region_sizes.len() {
                return Err(refuse(
                    Bad::OutOfRange,
                    libc::EINVAL,
                    format!("DEVICE_GET_REGION_INFO of region {index}"),
                ));
            }
            if (argsz as usize) < 32 {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    format!("DEVICE_GET_REGION_INFO with argsz {argsz} (< 32)"),
                ));
            }
            Ok(())
        }
        cmd::DEVICE_SET_IRQS => {
            let flags = u32_at(p.get(..20).map_or(&[0u8; 20][..], |s| s), 4);
            if flags & irq_flags::DATA_BOOL != 0 {
                return Err(refuse(
                    Bad::Unsupported,
                    libc::ENOTSUP,
                    "DEVICE_SET_IRQS with boolean data",
                ));
            }
            exact(20)?;
            let (index, start, count) = (u32_at(p, 8), u32_at(p, 12), u32_at(p, 16));
            let one = |bits: u32| bits.count_ones() == 1;
            if flags & !(irq_flags::DATA | irq_flags::ACTION) != 0
                || !one(flags & irq_flags::DATA)
                || !one(flags & irq_flags::ACTION)
            {
                return Err(refuse(
                    Bad::Malformed,
                    libc::EINVAL,
                    format!("DEVICE_SET_IRQS flags {flags:#x}: one DATA and one ACTION flag"),
                ));
            }
            let Some(&n) = irq_counts.get(index as usize) else {
                return Err(refuse(
                    Bad::OutOfRange,
                    libc::EINVAL,
                    format!("DEVICE_SET_IRQS of IRQ index {index}"),
                ));
            };
            let whole_index_off = flags & irq_flags::DATA_NONE != 0 && start == 0 && count == 0;
            if !whole_index_off && u64::from(start) + u64::from(count) > u64::from(n) {
                return Err(refuse(
                    Bad::OutOfRange,
                    libc::EINVAL,
                    format!(
                        "DEVICE_SET_IRQS of vectors {start}..{} of IRQ index {index}, which has {n}",
                        u64::from(start) + u64::from(count)
                    ),
                ));
            }
            let fds_ok = if flags & irq_flags::DATA_EVENTFD != 0 {
                m.fds.is_empty() || m.fds.len() == count as usize
            } else {
                m.fds.is_empty()
            };
            if !fds_ok {
                return Err(refuse(
                    Bad::Fds,
                    libc::EINVAL,
                    format!(
                        "DEVICE_SET_IRQS of {count} vector(s) with {} file descriptor(s)",
                        m.fds.len()
                    ),
                ));
            }
            Ok(())
        }
        cmd::REGION_READ | cmd::REGION_WRITE => {
            if len < 16 {
                return exact(16);
            }
            let (offset, region, count) = (u64_at(p, 0), u32_at(p, 8), u32_at(p, 12) as usize);
            let data = if h.command == cmd::REGION_WRITE {
                count
            } else {
                0
            };
            exact(16 + data)?;
            if count == 0 || count > MAX_DATA_XFER {
                return Err(refuse(
                    Bad::OutOfRange,
                    libc::EINVAL,
                    format!(
                        "{} of {count} bytes (1 to {MAX_DATA_XFER})",
                        cmd::name(h.command)
                    ),
                ));
            }
            let size = region_sizes.get(region as usize).copied().unwrap_or(0);
            if offset
                .checked_add(count as u64)
                .is_none_or(|end| end > size)
            {
                return Err(refuse(
                    Bad::OutOfRange,
                    libc::EINVAL,
                    format!(
                        "{} of {count} bytes at {offset:#x} of region {region}, which has \
                         {size:#x} bytes",
                        cmd::name(h.command)
                    ),
                ));
            }
            Ok(())
        }
        cmd::DEVICE_RESET => exact(0),
        cmd::DEVICE_GET_REGION_IO_FDS
        | cmd::DIRTY_PAGES
        | cmd::REGION_WRITE_MULTI
        | cmd::DEVICE_FEATURE
        | cmd::MIG_DATA_READ
        | cmd::MIG_DATA_WRITE => Err(refuse(
            Bad::Unsupported,
            libc::ENOTSUP,
            format!("{} is not supported", cmd::name(h.command)),
        )),
        cmd::DMA_READ | cmd::DMA_WRITE => Err(refuse(
            Bad::Unknown,
            libc::EINVAL,
            format!("{} goes from server to client", cmd::name(h.command)),
        )),
        other => Err(refuse(
            Bad::Unknown,
            libc::ENOSYS,
            format!("unknown command {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::Header;

    const SIZES: [u64; 9] = [0x10000, 0, 0, 0x4000, 0, 0, 0, 0x1000, 0];
    const IRQS: [u32; 5] = [0, 0, 5, 1, 1];

    fn m(command: u16, flags: u32, payload: Vec<u8>) -> Message {
        Message {
            header: Header {
                id: 1,
                command,
                size: (HEADER_LEN + payload.len()) as u32,
                flags,
                error: 0,
            },
            payload,
            fds: Vec::new(),
        }
    }

    fn access(offset: u64, region: u32, count: u32, data: usize) -> Vec<u8> {
        let mut p = offset.to_le_bytes().to_vec();
        p.extend_from_slice(&region.to_le_bytes());
        p.extend_from_slice(&count.to_le_bytes());
        p.resize(16 + data, 0xAB);
        p
    }

    fn kind(mut msg: Message) -> Option<Bad> {
        check(&mut msg, &SIZES, &IRQS).err().map(|r| r.kind)
    }

    #[test]
    fn what_qemu_sends_passes() {
        let mut v = 0u32.to_le_bytes().to_vec();
        v.extend_from_slice(br#"{"capabilities":{"max_msg_fds":16,"write_multiple":true}}"#);
        v.push(0);
        assert_eq!(kind(m(cmd::VERSION, 0, v)), None);
        assert_eq!(kind(m(cmd::REGION_READ, 0, access(0x8800, 0, 4, 0))), None);
        assert_eq!(
            kind(m(cmd::REGION_WRITE, FLAG_NO_REPLY, access(0x8400, 0, 4, 4))),
            None
        );
        assert_eq!(kind(m(cmd::REGION_READ, 0, access(0xffc, 7, 4, 0))), None);
        assert_eq!(kind(m(cmd::DEVICE_RESET, 0, vec![])), None);
        let mut irq = vec![0u8; 20];
        irq[4..8]
            .copy_from_slice(&(irq_flags::DATA_NONE | irq_flags::ACTION_TRIGGER).to_le_bytes());
        irq[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(kind(m(cmd::DEVICE_SET_IRQS, 0, irq)), None, "MSI-X off");
    }

    #[test]
    fn a_version_without_capabilities_gets_an_empty_object() {
        let mut msg = m(cmd::VERSION, 0, vec![0, 0, 0, 0]);
        check(&mut msg, &SIZES, &IRQS).unwrap();
        assert_eq!(&msg.payload[4..], b"{}\0");
        assert_eq!(msg.header.size as usize, HEADER_LEN + 7);
    }

    #[test]
    fn bad_messages_are_refused_by_kind() {
        assert_eq!(kind(m(99, 0, vec![1, 2, 3])), Some(Bad::Unknown));
        assert_eq!(kind(m(cmd::DMA_READ, 0, vec![0; 16])), Some(Bad::Unknown));
        assert_eq!(
            kind(m(cmd::REGION_READ, 1, access(0, 0, 4, 0))),
            Some(Bad::Unknown)
        );
        assert_eq!(
            kind(m(cmd::REGION_WRITE_MULTI, 0, vec![0; 32])),
            Some(Bad::Unsupported)
        );
        // VERSION: too short, no NUL, NUL inside, not JSON.
        assert_eq!(kind(m(cmd::VERSION, 0, vec![0, 0])), Some(Bad::Malformed));
        assert_eq!(
            kind(m(cmd::VERSION, 0, b"\0\0\0\0{}".to_vec())),
            Some(Bad::Malformed)
        );
        assert_eq!(
            kind(m(cmd::VERSION, 0, b"\0\0\0\0{\0}\0".to_vec())),
            Some(Bad::Malformed)
        );
        assert_eq!(
            kind(m(cmd::VERSION, 0, b"\0\0\0\0[1]\0".to_vec())),
            Some(Bad::Malformed)
        );
        // Region accesses out of the region, too large, of zero bytes.
        assert_eq!(
            kind(m(cmd::REGION_READ, 0, access(0xfffe, 0, 4, 0))),
            Some(Bad::OutOfRange)
        );
        assert_eq!(
            kind(m(cmd::REGION_READ, 0, access(u64::MAX, 0, 4, 0))),
            Some(Bad::OutOfRange)
        );
        assert_eq!(
            kind(m(cmd::REGION_READ, 0, access(0, 1, 4, 0))),
            Some(Bad::OutOfRange)
        );
        assert_eq!(
            kind(m(cmd::REGION_READ, 0, access(0, 0, 0, 0))),
            Some(Bad::OutOfRange)
        );
        assert_eq!(
            kind(m(cmd::REGION_READ, 0, access(0, 0, u32::MAX, 0))),
            Some(Bad::OutOfRange)
        );
        // A write whose data is not the count it claims.
        assert_eq!(
            kind(m(cmd::REGION_WRITE, 0, access(0, 0, 8, 4))),
            Some(Bad::Malformed)
        );
        // A read that wants no reply.
        assert_eq!(
            kind(m(cmd::REGION_READ, FLAG_NO_REPLY, access(0, 0, 4, 0))),
            Some(Bad::Malformed)
        );
        // DMA_MAP: size zero, wrapping, unknown flags.
        let map = |flags: u32, addr: u64, size: u64| {
            let mut p = vec![0u8; 32];
            p[4..8].copy_from_slice(&flags.to_le_bytes());
            p[16..24].copy_from_slice(&addr.to_le_bytes());
            p[24..32].copy_from_slice(&size.to_le_bytes());
            m(cmd::DMA_MAP, 0, p)
        };
        assert_eq!(kind(map(3, 0, 4096)), None);
        assert_eq!(kind(map(3, 0, 0)), Some(Bad::Malformed));
        assert_eq!(kind(map(3, u64::MAX - 10, 4096)), Some(Bad::Malformed));
        assert_eq!(kind(map(8, 0, 4096)), Some(Bad::Malformed));
        // Descriptors where none belong.
        let mut r = m(cmd::DEVICE_RESET, 0, vec![]);
        r.fds.push(std::fs::File::open("/dev/null").unwrap().into());
        assert_eq!(kind(r), Some(Bad::Fds));
        // SET_IRQS beyond the vectors, boolean data, two actions.
        let irq = |flags: u32, index: u32, start: u32, count: u32, extra: usize| {
            let mut p = vec![0u8; 20 + extra];
            p[4..8].copy_from_slice(&flags.to_le_bytes());
            p[8..12].copy_from_slice(&index.to_le_bytes());
            p[12..16].copy_from_slice(&start.to_le_bytes());
            p[16..20].copy_from_slice(&count.to_le_bytes());
            m(cmd::DEVICE_SET_IRQS, 0, p)
        };
        let ev = irq_flags::DATA_EVENTFD | irq_flags::ACTION_TRIGGER;
        assert_eq!(kind(irq(ev, 2, 4, 1, 0)), None);
        assert_eq!(kind(irq(ev, 2, 4, 2, 0)), Some(Bad::OutOfRange));
        assert_eq!(kind(irq(ev, 9, 0, 1, 0)), Some(Bad::OutOfRange));
        assert_eq!(
            kind(irq(
                irq_flags::DATA_BOOL | irq_flags::ACTION_TRIGGER,
                2,
                0,
                1,
                1
            )),
            Some(Bad::Unsupported)
        );
        assert_eq!(
            kind(irq(ev | irq_flags::ACTION_MASK, 2, 0, 1, 0)),
            Some(Bad::Malformed)
        );
        // DMA_UNMAP with a dirty bitmap.
        let mut u = vec![0u8; 24];
        u[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(kind(m(cmd::DMA_UNMAP, 0, u)), Some(Bad::Unsupported));
    }
}
