//! Netlink requests: build a message ([`Request`]: header, the family's fixed
//! header, attributes, nested attributes), send it on a netlink socket
//! ([`Socket`]: rtnetlink, RDMA netlink, ...) and read the reply, dumps
//! included ([`Socket::exchange`]; [`route`] and [`request_ack`] for one
//! rtnetlink request), and read what the kernel says ([`messages`],
//! attributes, errors with their extended-ack text, on any message of a
//! reply with [`Message::check`]).
//!
//! Layouts from Linux's `include/uapi/linux/netlink.h` (`struct nlmsghdr`,
//! `struct nlattr`, `struct nlmsgerr`) and `include/uapi/linux/rtnetlink.h`
//! (`struct ifinfomsg`, `struct ndmsg`); every field in host byte order.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{
    AddressFamily, Protocol, RawProtocol, RecvFlags, SendFlags, SocketFlags, SocketType,
};

use super::sys;

/// `RTM_NEWLINK`: a link's state (the reply to [`RTM_GETLINK`]).
pub const RTM_NEWLINK: u16 = 16;
/// `RTM_GETLINK`: ask for a link's state.
pub const RTM_GETLINK: u16 = 18;
/// `RTM_SETLINK`: change a link.
pub const RTM_SETLINK: u16 = 19;
/// `RTM_NEWNEIGH`: add a neighbour or FDB entry.
pub const RTM_NEWNEIGH: u16 = 28;
/// `RTM_DELNEIGH`: remove a neighbour or FDB entry.
pub const RTM_DELNEIGH: u16 = 29;
/// `NLMSG_ERROR`: an error, or with errno 0 an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST` (every request carries it; [`Request::new`] sets it).
pub const NLM_F_REQUEST: u16 = 1;
/// `NLM_F_MULTI`: one of several messages answering a dump.
pub const NLM_F_MULTI: u16 = 2;
/// `NLM_F_ACK`: acknowledge the request.
pub const NLM_F_ACK: u16 = 4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`): every object, in several
/// messages ending with `NLMSG_DONE`.
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_EXCL`: fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`: create the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_ACK_TLVS`: an error carries extended-ack attributes.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the extended-ack text.
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLA_F_NESTED`: the attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type bits (without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`).
pub const NLA_TYPE_MASK: u16 = 0x3fff;
/// Where a message's payload starts (`NLMSG_HDRLEN`).
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct ifinfomsg`: link messages' attributes start after it.
pub const IFINFOMSG_LEN: usize = 16;
/// Size of `struct ndmsg`: neighbour messages' attributes start after it.
pub const NDMSG_LEN: usize = 12;

/// `NETLINK_ROUTE`, for [`Socket::open`].
pub const NETLINK_ROUTE: u32 = 0;
/// `NETLINK_RDMA`, for [`Socket::open`].
pub const NETLINK_RDMA: u32 = 20;

/// How long a socket waits for each of the kernel's replies.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a dump may return (a bound on the loop that reads it).
const MAX_REPLY: usize = 16 << 20;

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_ne_bytes());
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_ne_bytes());
}

fn align4(b: &mut Vec<u8>) {
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
}

/// A netlink request being built: `struct nlmsghdr`, the family's fixed
/// header, then attributes.
#[derive(Clone, Debug)]
pub struct Request {
    b: Vec<u8>,
    nests: Vec<usize>,
}

impl Request {
    /// A message of type `ty` with `flags` (`NLM_F_REQUEST` added), sequence
    /// 1, addressed to the kernel; the family header comes next
    /// ([`body`](Self::body)).
    pub fn new(ty: u16, flags: u16) -> Request {
        let mut b = Vec::with_capacity(128);
        put_u32(&mut b, 0); // nlmsg_len, set in finish
        put_u16(&mut b, ty);
        put_u16(&mut b, flags | NLM_F_REQUEST);
        put_u32(&mut b, 1); // seq
        put_u32(&mut b, 0); // pid: the kernel
        Request { b, nests: vec![] }
    }

    /// A link request (`struct ifinfomsg`, `AF_UNSPEC`) on `ifindex`, setting
    /// the `ifi_flags` bits selected by `ifi_change`.
    pub fn link(ty: u16, flags: u16, ifindex: u32, ifi_flags: u32, ifi_change: u32) -> Request {
        let mut r = Request::new(ty, flags);
        let mut h = Vec::with_capacity(IFINFOMSG_LEN);
        h.push(libc::AF_UNSPEC as u8);
        h.push(0);
        put_u16(&mut h, 0); // ifi_type
        h.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        put_u32(&mut h, ifi_flags);
        put_u32(&mut h, ifi_change);
        r.body(&h);
        r
    }

    /// A neighbour request (`struct ndmsg`) on `ifindex`: `family`
    /// (`AF_BRIDGE` for FDB entries), `state` (`NUD_*`), `ntf_flags`
    /// (`NTF_SELF`: the device's own table).
    pub fn neigh(
        ty: u16,
        flags: u16,
        family: u8,
        ifindex: u32,
        state: u16,
        ntf_flags: u8,
    ) -> Request {
        let mut r = Request::new(ty, flags);
        let mut h = Vec::with_capacity(NDMSG_LEN);
        h.extend_from_slice(&[family, 0, 0, 0]); // ndm_family, pad1, pad2
        h.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        put_u16(&mut h, state);
        h.push(ntf_flags);
        h.push(0); // ndm_type
        r.body(&h);
        r
    }

    /// Append the family's fixed header (or any bytes), padded to 4.
    pub fn body(&mut self, bytes: &[u8]) -> &mut Request {
        self.b.extend_from_slice(bytes);
        align4(&mut self.b);
        self
    }

    /// Append attribute `ty` with `payload`, padded to 4.
    pub fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Request {
        put_u16(&mut self.b, (4 + payload.len()) as u16);
        put_u16(&mut self.b, ty);
        self.b.extend_from_slice(payload);
        align4(&mut self.b);
        self
    }

    /// Open nested attribute `ty`; the attributes up to [`end`](Self::end)
    /// go inside it.
    pub fn begin(&mut self, ty: u16) -> &mut Request {
        self.nests.push(self.b.len());
        put_u16(&mut self.b, 0);
        put_u16(&mut self.b, ty | NLA_F_NESTED);
        self
    }

    /// Close the innermost nested attribute. Panics without a `begin`.
    pub fn end(&mut self) -> &mut Request {
        let at = self.nests.pop().expect("balanced nesting");
        let len = (self.b.len() - at) as u16;
        self.b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// The message's bytes, its length set.
    pub fn finish(&mut self) -> Vec<u8> {
        let len = self.b.len() as u32;
        self.b[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.b)
    }
}

/// Walk the attributes in `b`: (type without flags, payload). Stops at the
/// first malformed one.
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let cur = b;
        if cur.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([cur[0], cur[1]]) as usize;
        let ty = u16::from_ne_bytes([cur[2], cur[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > cur.len() {
            return None;
        }
        b = &cur[((len + 3) & !3).min(cur.len())..];
        Some((ty, &cur[4..len]))
    })
}

/// The first four bytes of `p` as a host-order u32 (an attribute's value).
pub fn u32_of(p: &[u8]) -> Option<u32> {
    p.get(..4)
        .map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
}

/// One message of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// What follows the header (the family header, then attributes).
    pub payload: &'a [u8],
    /// The whole message, header included.
    pub whole: &'a [u8],
}

impl Message<'_> {
    /// The error this message carries if it is an `NLMSG_ERROR` (with the
    /// kernel's extended-ack text when there is one); `Ok(())` for an
    /// acknowledgement and for every other message. A dump can end in an
    /// error after its data (or be one error): check each message.
    pub fn check(&self) -> io::Result<()> {
        if self.ty == NLMSG_ERROR {
            check_error(self.whole, self.flags)
        } else {
            Ok(())
        }
    }
}

/// Walk the messages of a reply (several in a dump). Stops at the first
/// malformed one.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(at..)?;
        if rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32_of(rest)? as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        at += (len + 3) & !3;
        Some(Message {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            payload: &rest[NLMSG_HDRLEN..len],
            whole: &rest[..len],
        })
    })
}

/// An error the kernel explained in an extended ack.
#[derive(Debug)]
pub struct ExtAck {
    /// The errno.
    pub errno: i32,
    /// The kernel's text.
    pub text: String,
}

impl std::fmt::Display for ExtAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({})",
            io::Error::from_raw_os_error(self.errno),
            self.text
        )
    }
}

impl std::error::Error for ExtAck {}

/// The errno of an error from this module (plain or with an extended ack).
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<ExtAck>())
            .map(|x| x.errno)
    })
}

/// The error carried by an NLMSG_ERROR message (`Ok(())` for an ack), with
/// the kernel's extended-ack text when there is one.
fn check_error(msg: &[u8], flags: u16) -> io::Result<()> {
    let Some(code) = msg.get(16..20) else {
        return Err(io::Error::other("truncated netlink error message"));
    };
    let errno = -i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
    if errno == 0 {
        return Ok(());
    }
    let os = io::Error::from_raw_os_error(errno);
    // With NETLINK_CAP_ACK the request is echoed without payload: TLVs follow
    // the 16-byte header copy.
    if flags & NLM_F_ACK_TLVS != 0
        && let Some(tlvs) = msg.get(36..)
    {
        for (ty, p) in attrs(tlvs) {
            if ty == NLMSGERR_ATTR_MSG {
                let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                let text = String::from_utf8_lossy(&p[..end]).into_owned();
                return Err(io::Error::new(os.kind(), ExtAck { errno, text }));
            }
        }
    }
    Err(os)
}

/// The first message of a reply as (type, flags, the whole message), or the
/// error an NLMSG_ERROR carries.
pub fn first_message(reply: &[u8]) -> io::Result<(u16, u16, &[u8])> {
    if reply.len() < NLMSG_HDRLEN {
        return Err(io::Error::other("short netlink reply"));
    }
    let len = (u32_of(reply).unwrap_or(0) as usize).min(reply.len());
    let ty = u16::from_ne_bytes([reply[4], reply[5]]);
    let flags = u16::from_ne_bytes([reply[6], reply[7]]);
    let msg = &reply[..len];
    if ty == NLMSG_ERROR {
        check_error(msg, flags)?;
    }
    Ok((ty, flags, msg))
}

/// A netlink socket to the kernel, for one request after another.
#[derive(Debug)]
pub struct Socket(OwnedFd);

impl Socket {
    /// A socket of netlink family `protocol` ([`NETLINK_ROUTE`],
    /// [`NETLINK_RDMA`], ...), asking for extended acknowledgements.
    pub fn open(protocol: u32) -> io::Result<Socket> {
        let protocol = RawProtocol::new(protocol).map(Protocol::from_raw);
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            protocol,
        )?;
        // Extended acks give the kernel's reason as text; capped acks leave
        // the request out of the error. Both are optional.
        let _ = sys::set_netlink_opt(fd.as_fd(), libc::NETLINK_EXT_ACK, true);
        let _ = sys::set_netlink_opt(fd.as_fd(), libc::NETLINK_CAP_ACK, true);
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(REPLY_TIMEOUT),
        )?;
        Ok(Socket(fd))
    }

    /// An rtnetlink socket.
    pub fn route() -> io::Result<Socket> {
        Socket::open(NETLINK_ROUTE)
    }

    /// Send `req` and return what the kernel answers: one datagram, or for a
    /// dump (`NLM_F_DUMP`) every datagram up to the `NLMSG_DONE` (or an
    /// error), one after the other; read with [`messages`]. Each wait for the
    /// kernel is at most 5 s, and a dump at most 16 MiB.
    pub fn exchange(&self, req: &[u8]) -> io::Result<Vec<u8>> {
        rustix::net::sendto(
            &self.0,
            req,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )?;
        let dump = req
            .get(6..8)
            .is_some_and(|f| u16::from_ne_bytes([f[0], f[1]]) & NLM_F_DUMP == NLM_F_DUMP);
        let mut out = self.datagram()?;
        if !dump {
            return Ok(out);
        }
        let mut from = 0;
        loop {
            let ended = messages(&out[from..])
                .any(|m| m.ty == NLMSG_DONE || m.ty == NLMSG_ERROR || m.flags & NLM_F_MULTI == 0);
            if ended || messages(&out[from..]).next().is_none() {
                return Ok(out);
            }
            if out.len() > MAX_REPLY {
                return Err(io::Error::other(format!(
                    "a netlink dump longer than {MAX_REPLY} bytes"
                )));
            }
            from = out.len();
            out.extend_from_slice(&self.datagram()?);
        }
    }

    /// One datagram, whole: its size peeked first.
    fn datagram(&self) -> io::Result<Vec<u8>> {
        let (_, size) = rustix::net::recv(
            &self.0,
            &mut [0u8; 0][..],
            RecvFlags::PEEK | RecvFlags::TRUNC,
        )?;
        let mut buf = vec![0u8; size];
        let (_, got) = rustix::net::recv(&self.0, &mut buf[..], RecvFlags::empty())?;
        buf.truncate(got);
        Ok(buf)
    }
}

/// Send one rtnetlink request and return the kernel's reply (the answer, or
/// an NLMSG_ERROR carrying the errno and extended-ack text).
pub fn route(req: &[u8]) -> io::Result<Vec<u8>> {
    Socket::route()?.exchange(req)
}

/// Send a request made with `NLM_F_ACK` and wait for its acknowledgement (or
/// the error, with the kernel's text).
pub fn request_ack(req: &[u8]) -> io::Result<()> {
    let reply = route(req)?;
    let (ty, _, _) = first_message(&reply)?;
    if ty != NLMSG_ERROR {
        return Err(io::Error::other(format!(
            "unexpected netlink reply type {ty}, expected an acknowledgement"
        )));
    }
    Ok(())
}

/// Set the link flags of `ifindex` selected by `change` to those in `flags`
/// (`RTM_SETLINK`; `IFF_PROMISC` for promiscuous mode). Needs CAP_NET_ADMIN.
pub fn set_link_flags(ifindex: u32, flags: u32, change: u32) -> io::Result<()> {
    request_ack(&Request::link(RTM_SETLINK, NLM_F_ACK, ifindex, flags, change).finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_the_kernels_text_and_garbage_does_not_panic() {
        // An error with an extended-ack message.
        let mut e = vec![0u8; 36];
        e[0..4].copy_from_slice(&44u32.to_ne_bytes());
        e[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        e[6..8].copy_from_slice(&NLM_F_ACK_TLVS.to_ne_bytes());
        e[16..20].copy_from_slice(&(-libc::EBUSY).to_ne_bytes());
        let text = b"busy!\0\0\0";
        put_u16(&mut e, 4 + 6);
        put_u16(&mut e, NLMSGERR_ATTR_MSG);
        e.extend_from_slice(text);
        let n = e.len() as u32;
        e[0..4].copy_from_slice(&n.to_ne_bytes());
        let err = first_message(&e).unwrap_err();
        assert_eq!(errno(&err), Some(libc::EBUSY));
        assert!(err.to_string().contains("busy!"), "{err}");
        // An ack.
        e[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(first_message(&e).is_ok());
        // Garbage does not panic, and a reply cut short is an error.
        for cut in 0..e.len() {
            let _ = first_message(&e[..cut]);
            for m in messages(&e[..cut]) {
                let _ = m.check();
            }
        }
        assert!(first_message(&e[..8]).is_err(), "shorter than a header");
        assert!(first_message(&e[..18]).is_err(), "no room for the errno");
        // Without extended-ack attributes the errno is the OS error itself.
        let plain = Request::new(NLMSG_ERROR, 0)
            .body(&(-libc::EPERM).to_ne_bytes())
            .body(&[0; 16])
            .finish();
        let err = first_message(&plain).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let m = messages(&plain).next().unwrap();
        assert_eq!(m.check().unwrap_err().raw_os_error(), Some(libc::EPERM));
    }

    /// An error after data in one reply, as a dump that fails part way ends:
    /// [`Message::check`] finds it on whichever message it is.
    #[test]
    fn each_message_of_a_reply_is_checked() {
        let mut reply = Request::new(RTM_NEWLINK, NLM_F_MULTI)
            .body(&[0; IFINFOMSG_LEN])
            .finish();
        reply.extend(
            Request::new(NLMSG_ERROR, 0)
                .body(&(-libc::EMSGSIZE).to_ne_bytes())
                .body(&[0; 16])
                .finish(),
        );
        let results: Vec<Option<i32>> = messages(&reply)
            .map(|m| m.check().err().map(|e| errno(&e).unwrap()))
            .collect();
        assert_eq!(results, vec![None, Some(libc::EMSGSIZE)]);
    }

    /// The layouts against libc's `ifinfomsg` and `ndmsg` and the constants
    /// against libc's.
    #[test]
    fn headers_match_the_kernels_structures() {
        assert_eq!(size_of::<libc::nlmsghdr>(), NLMSG_HDRLEN);
        assert_eq!(size_of::<libc::ifinfomsg>(), IFINFOMSG_LEN);
        assert_eq!(NDMSG_LEN, 12, "struct ndmsg: u8, u8, u16, i32, u16, u8, u8");
        for (ours, theirs) in [
            (RTM_NEWLINK, libc::RTM_NEWLINK),
            (RTM_GETLINK, libc::RTM_GETLINK),
            (RTM_SETLINK, libc::RTM_SETLINK),
            (RTM_NEWNEIGH, libc::RTM_NEWNEIGH),
            (RTM_DELNEIGH, libc::RTM_DELNEIGH),
        ] {
            assert_eq!(ours, theirs);
        }
        for (ours, theirs) in [
            (NLMSG_ERROR, libc::NLMSG_ERROR),
            (NLM_F_REQUEST, libc::NLM_F_REQUEST),
            (NLM_F_ACK, libc::NLM_F_ACK),
            (NLM_F_EXCL, libc::NLM_F_EXCL),
            (NLM_F_CREATE, libc::NLM_F_CREATE),
            (NLA_F_NESTED, libc::NLA_F_NESTED),
        ] {
            assert_eq!(ours as libc::c_int, theirs);
        }
        let r = Request::link(RTM_SETLINK, NLM_F_ACK, 7, 0x100, 0x100).finish();
        assert_eq!(r.len(), NLMSG_HDRLEN + IFINFOMSG_LEN);
        assert_eq!(u32_of(&r), Some(r.len() as u32));
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(i32::from_ne_bytes([r[20], r[21], r[22], r[23]]), 7);
        assert_eq!(u32_of(&r[24..]), Some(0x100), "ifi_flags");
        assert_eq!(u32_of(&r[28..]), Some(0x100), "ifi_change");
    }

    /// `bridge fdb add MAC dev IF self`, as the mlx5 driver sends it (DPDK's
    /// `mlx5_nl_mac_addr_modify`): byte for byte the 40-byte request written
    /// out by hand from the structures.
    #[test]
    fn an_fdb_request_is_the_kernels_layout() {
        const NDA_LLADDR: u16 = 2;
        const NTF_SELF: u8 = 0x02;
        const NUD_NOARP: u16 = 0x40;
        const NUD_PERMANENT: u16 = 0x80;
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let r = Request::neigh(
            RTM_NEWNEIGH,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            libc::AF_BRIDGE as u8,
            9,
            NUD_NOARP | NUD_PERMANENT,
            NTF_SELF,
        )
        .attr(NDA_LLADDR, &mac)
        .finish();
        let mut want = [0u8; 40];
        want[0..4].copy_from_slice(&40u32.to_ne_bytes());
        want[4..6].copy_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        want[6..8].copy_from_slice(
            &((libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL)
                as u16)
                .to_ne_bytes(),
        );
        want[8..12].copy_from_slice(&1u32.to_ne_bytes());
        want[16] = libc::AF_BRIDGE as u8;
        want[20..24].copy_from_slice(&9i32.to_ne_bytes());
        want[24..26].copy_from_slice(&(NUD_NOARP | NUD_PERMANENT).to_ne_bytes());
        want[26] = NTF_SELF;
        want[28..30].copy_from_slice(&10u16.to_ne_bytes());
        want[30..32].copy_from_slice(&NDA_LLADDR.to_ne_bytes());
        want[32..38].copy_from_slice(&mac);
        assert_eq!(r, want);
    }

    /// A real round trip: the kernel answers RTM_GETLINK on the loopback
    /// interface with its RTM_NEWLINK, and refuses a link that is not there
    /// with ENODEV.
    #[test]
    fn the_kernel_answers_a_link_request() {
        let lo = super::super::if_index("lo").unwrap();
        let reply = route(&Request::link(RTM_GETLINK, 0, lo, 0, 0).finish()).unwrap();
        let (ty, _, msg) = first_message(&reply).unwrap();
        assert_eq!(ty, RTM_NEWLINK);
        let index = i32::from_ne_bytes([msg[20], msg[21], msg[22], msg[23]]);
        assert_eq!(index as u32, lo);
        // IFLA_IFNAME (3) names it.
        let name = attrs(&msg[NLMSG_HDRLEN + IFINFOMSG_LEN..])
            .find(|(t, _)| *t == libc::IFLA_IFNAME)
            .map(|(_, p)| p.split(|&c| c == 0).next().unwrap().to_vec());
        assert_eq!(name.as_deref(), Some(&b"lo"[..]));
        let missing = route(&Request::link(RTM_GETLINK, 0, u32::MAX >> 1, 0, 0).finish()).unwrap();
        let e = first_message(&missing).unwrap_err();
        assert_eq!(errno(&e), Some(libc::ENODEV), "{e}");
        let checked: Vec<_> = messages(&missing).map(|m| m.check()).collect();
        assert_eq!(checked.len(), 1);
        let e = checked[0].as_ref().unwrap_err();
        assert_eq!(errno(e), Some(libc::ENODEV), "{e}");
        assert!(messages(&reply).all(|m| m.check().is_ok()));
    }

    /// A dump of every link, over several datagrams if need be, ends with
    /// NLMSG_DONE and holds every interface /sys/class/net lists before and
    /// after it; the socket serves a second request.
    #[test]
    fn a_link_dump_lists_every_interface() {
        let names_in = |reply: &[u8]| -> Vec<String> {
            messages(reply)
                .filter(|m| m.ty == RTM_NEWLINK)
                .filter_map(|m| {
                    let (_, p) = attrs(m.payload.get(IFINFOMSG_LEN..)?)
                        .find(|(t, _)| *t == libc::IFLA_IFNAME)?;
                    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
                    Some(String::from_utf8_lossy(&p[..end]).into_owned())
                })
                .collect()
        };
        let sys = || -> Vec<String> {
            std::fs::read_dir("/sys/class/net")
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let sock = Socket::route().unwrap();
        let dump = Request::link(RTM_GETLINK, NLM_F_DUMP, 0, 0, 0).finish();
        let before = sys();
        let reply = sock.exchange(&dump).unwrap();
        let after = sys();
        assert_eq!(messages(&reply).last().map(|m| m.ty), Some(NLMSG_DONE));
        for m in messages(&reply) {
            m.check()
                .unwrap_or_else(|e| panic!("message type {}: {e}", m.ty));
        }
        let names = names_in(&reply);
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
        assert!(
            messages(&reply)
                .filter(|m| m.ty == RTM_NEWLINK)
                .all(|m| m.flags & NLM_F_MULTI != 0)
        );
        // Other tests' interfaces come and go meanwhile: those there before
        // and after were there during the dump.
        for n in before.iter().filter(|n| after.contains(n)) {
            assert!(names.contains(n), "{n} missing from {names:?}");
        }
        assert!(names_in(&sock.exchange(&dump).unwrap()).contains(&"lo".to_string()));
    }
}
