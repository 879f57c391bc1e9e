//! vfio-user messages on a unix stream socket, read and written whole: the
//! 16-byte header (message id u16, command u16, size u32 counting the header,
//! flags u32, error u32; QEMU's `docs/interop/vfio-user.rst`, "Header"), the
//! payload, and the file descriptors that travel with it as `SCM_RIGHTS`.
#![forbid(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Size of the header.
pub const HEADER_LEN: usize = 16;
/// Flags: the message type (bits 0-3): 0 command, 1 reply.
pub const FLAG_TYPE_MASK: u32 = 0xF;
/// Flags type: a reply.
pub const FLAG_REPLY: u32 = 0x1;
/// Flags: no reply wanted.
pub const FLAG_NO_REPLY: u32 = 1 << 4;
/// Flags: the reply reports an error (the header's error field has the errno).
pub const FLAG_ERROR: u32 = 1 << 5;
/// Most file descriptors one message may carry (QEMU sends up to 16).
pub const MAX_FDS: usize = 16;
/// How long the rest of a message may take to arrive once its header came.
pub const PAYLOAD_PATIENCE: Duration = Duration::from_secs(10);

/// vfio-user command numbers (`docs/interop/vfio-user.rst`, "Commands").
pub mod cmd {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    pub const DEVICE_SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
    pub const DMA_READ: u16 = 11;
    pub const DMA_WRITE: u16 = 12;
    pub const DEVICE_RESET: u16 = 13;
    pub const DIRTY_PAGES: u16 = 14;
    pub const REGION_WRITE_MULTI: u16 = 15;
    pub const DEVICE_FEATURE: u16 = 16;
    pub const MIG_DATA_READ: u16 = 17;
    pub const MIG_DATA_WRITE: u16 = 18;

    /// The command's name for logs.
    pub fn name(c: u16) -> &'static str {
        match c {
            VERSION => "VERSION",
            DMA_MAP => "DMA_MAP",
            DMA_UNMAP => "DMA_UNMAP",
            DEVICE_GET_INFO => "DEVICE_GET_INFO",
            DEVICE_GET_REGION_INFO => "DEVICE_GET_REGION_INFO",
            DEVICE_GET_REGION_IO_FDS => "DEVICE_GET_REGION_IO_FDS",
            DEVICE_GET_IRQ_INFO => "DEVICE_GET_IRQ_INFO",
            DEVICE_SET_IRQS => "DEVICE_SET_IRQS",
            REGION_READ => "REGION_READ",
            REGION_WRITE => "REGION_WRITE",
            DMA_READ => "DMA_READ",
            DMA_WRITE => "DMA_WRITE",
            DEVICE_RESET => "DEVICE_RESET",
            DIRTY_PAGES => "DIRTY_PAGES",
            REGION_WRITE_MULTI => "REGION_WRITE_MULTI",
            DEVICE_FEATURE => "DEVICE_FEATURE",
            MIG_DATA_READ => "MIG_DATA_READ",
            MIG_DATA_WRITE => "MIG_DATA_WRITE",
            _ => "unknown",
        }
    }
}

/// A message header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Message id (echoed in the reply).
    pub id: u16,
    /// Command number.
    pub command: u16,
    /// Whole message size, header included.
    pub size: u32,
    /// Type and flag bits.
    pub flags: u32,
    /// errno of an error reply.
    pub error: u32,
}

impl Header {
    /// Decode 16 bytes (little-endian: the protocol uses the host's order,
    /// and this server runs on x86-64 as QEMU does).
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Header {
            id: u16_at(0),
            command: u16_at(2),
            size: u32_at(4),
            flags: u32_at(8),
            error: u32_at(12),
        }
    }

    /// Encode.
    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    /// Whether a command asks for no reply.
    pub fn no_reply(&self) -> bool {
        self.flags & FLAG_NO_REPLY != 0
    }

    /// The error reply to this command: the header alone, with `errno`.
    pub fn error_reply(&self, errno: i32) -> Header {
        Header {
            id: self.id,
            command: self.command,
            size: HEADER_LEN as u32,
            flags: FLAG_REPLY | FLAG_ERROR,
            error: errno as u32,
        }
    }
}

/// A whole message.
#[derive(Debug)]
pub struct Message {
    /// Its header.
    pub header: Header,
    /// What follows the header (`header.size - 16` bytes).
    pub payload: Vec<u8>,
    /// The file descriptors that came with it.
    pub fds: Vec<OwnedFd>,
}

/// Why a message could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The socket failed.
    Io(io::Error),
    /// The peer closed the connection (or stalled past [`PAYLOAD_PATIENCE`])
    /// in the middle of a message: `got` of `wanted` bytes had arrived.
    Truncated { got: usize, wanted: usize },
    /// The header's size is under 16 or above the limit: the rest of the
    /// stream cannot be framed.
    BadSize(Header),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Truncated { got, wanted } => write!(
                f,
                "the peer went away in the middle of a message ({got} of {wanted} bytes)"
            ),
            ReadError::BadSize(h) => write!(
                f,
                "a message header (command {} {}, id {}) gives a size of {} bytes: no message \
                 boundary can be trusted after it",
                h.command,
                cmd::name(h.command),
                h.id,
                h.size
            ),
        }
    }
}

/// Read one message whole, its size limited to `max_size` bytes. `Ok(None)`:
/// the peer closed the connection between messages. A message that came with
/// more descriptors than [`MAX_FDS`] keeps the first ones (the rest are lost
/// in the kernel) and `truncated_fds` is set.
pub fn read_message(
    sock: &UnixStream,
    max_size: usize,
    truncated_fds: &mut bool,
) -> Result<Option<Message>, ReadError> {
    let mut head = [0u8; HEADER_LEN];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut fds = Vec::new();
    let mut got = 0;
    while got < HEADER_LEN {
        let r = loop {
            match rustix::net::recvmsg(
                sock,
                &mut [IoSliceMut::new(&mut head[got..])],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            ) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        let r = r.map_err(|e| ReadError::Io(e.into()))?;
        *truncated_fds |= r.flags.contains(ReturnFlags::CTRUNC);
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        if r.bytes == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ReadError::Truncated {
                    got,
                    wanted: HEADER_LEN,
                })
            };
        }
        got += r.bytes;
    }
    let header = Header::parse(&head);
    let size = header.size as usize;
    if size < HEADER_LEN || size > max_size {
        return Err(ReadError::BadSize(header));
    }
    let mut payload = vec![0u8; size - HEADER_LEN];
    read_rest(sock, &mut payload).map_err(|e| match e {
        RestError::Io(e) => ReadError::Io(e),
        RestError::Short(n) => ReadError::Truncated {
            got: HEADER_LEN + n,
            wanted: size,
        },
    })?;
    Ok(Some(Message {
        header,
        payload,
        fds,
    }))
}

enum RestError {
    Io(io::Error),
    /// Only this many bytes came.
    Short(usize),
}

/// Read `buf.len()` bytes that should already be on their way: without
/// waiting while they are there, then waiting at most [`PAYLOAD_PATIENCE`]
/// for each further piece.
fn read_rest(sock: &UnixStream, buf: &mut [u8]) -> Result<(), RestError> {
    let mut got = 0;
    while got < buf.len() {
        match rustix::net::recv(sock, &mut buf[got..], RecvFlags::DONTWAIT) {
            Ok((0, _)) => return Err(RestError::Short(got)),
            Ok((n, _)) => got += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => {
                if !wait_readable(sock.as_fd(), PAYLOAD_PATIENCE).map_err(RestError::Io)? {
                    return Err(RestError::Short(got));
                }
            }
            Err(e) => return Err(RestError::Io(e.into())),
        }
    }
    Ok(())
}

/// Wait up to `timeout` for `fd` to become readable (or hung up).
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let t = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&t)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Write one message whole: `header`, `payload`, and `fds` with its first
/// byte.
pub fn write_message(
    sock: &UnixStream,
    header: &Header,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let head = header.bytes();
    let total = HEADER_LEN + payload.len();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} file descriptors do not fit one message", fds.len()),
        ));
    }
    let mut sent = 0;
    while sent < total {
        let slices: [IoSlice<'_>; 2] = if sent < HEADER_LEN {
            [IoSlice::new(&head[sent..]), IoSlice::new(payload)]
        } else {
            [
                IoSlice::new(&payload[sent - HEADER_LEN..]),
                IoSlice::new(&[]),
            ]
        };
        let r = if sent == 0 {
            rustix::net::sendmsg(sock, &slices, &mut control, SendFlags::NOSIGNAL)
        } else {
            rustix::net::sendmsg(
                sock,
                &slices,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )
        };
        match r {
            Ok(n) => sent += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn header_round_trip() {
        let h = Header {
            id: 0x1234,
            command: cmd::REGION_WRITE,
            size: 40,
            flags: FLAG_NO_REPLY,
            error: 0,
        };
        assert_eq!(Header::parse(&h.bytes()), h);
        assert!(h.no_reply());
        let e = h.error_reply(22);
        assert_eq!((e.id, e.size, e.flags, e.error), (0x1234, 16, 0x21, 22));
    }

    #[test]
    fn messages_with_descriptors_go_whole() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = tempfile::tempfile().unwrap();
        let h = Header {
            id: 7,
            command: cmd::DMA_MAP,
            size: 48,
            flags: 0,
            error: 0,
        };
        write_message(&a, &h, &[9u8; 32], &[f.as_fd()]).unwrap();
        let mut trunc = false;
        let m = read_message(&b, 4096, &mut trunc).unwrap().unwrap();
        assert_eq!(m.header, h);
        assert_eq!(m.payload, vec![9u8; 32]);
        assert_eq!(m.fds.len(), 1);
        assert!(!trunc);
        // A size beyond the limit, a size under the header, a peer gone mid-way.
        let big = Header { size: 1 << 30, ..h };
        write_message(&a, &big, &[], &[]).unwrap();
        assert!(matches!(
            read_message(&b, 4096, &mut trunc),
            Err(ReadError::BadSize(_))
        ));
        (&a).write_all(&Header { size: 100, ..h }.bytes()).unwrap();
        (&a).write_all(&[1, 2, 3]).unwrap();
        drop(a);
        match read_message(&b, 4096, &mut trunc) {
            Err(ReadError::Truncated { got, wanted }) => assert_eq!((got, wanted), (19, 100)),
            other => panic!("{other:?}"),
        }
        assert!(read_message(&b, 4096, &mut trunc).unwrap().is_none());
    }
}
