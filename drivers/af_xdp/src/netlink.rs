//! rtnetlink messages for the XDP attach policy: which programs an interface
//! carries (`IFLA_XDP`), removing one we own (`IFLA_XDP_FD = -1` with
//! `IFLA_XDP_EXPECTED_FD`, so only that very program goes), attaching one the
//! old way (tests), and the promiscuous flag. Encoding and parsing only; the
//! socket is in [`crate::sys::netlink_route`].
#![deny(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use crate::sys;

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const IFLA_MTU: u16 = 4;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

/// XDP_FLAGS_SKB_MODE: generic XDP.
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// XDP_FLAGS_DRV_MODE: native (driver) XDP.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// XDP_FLAGS_HW_MODE: offloaded XDP.
pub(crate) const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
/// XDP_FLAGS_REPLACE: only if the attached program is IFLA_XDP_EXPECTED_FD.
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

const IFF_PROMISC: u32 = 0x100;

/// How a program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttachMode {
    /// Native, in the driver (XDP_ATTACHED_DRV).
    Native,
    /// Generic, on the skb path (XDP_ATTACHED_SKB).
    Generic,
    /// Offloaded to the NIC (XDP_ATTACHED_HW).
    Offload,
}

impl AttachMode {
    /// The XDP_FLAGS_*_MODE value for this mode.
    pub(crate) fn flags(self) -> u32 {
        match self {
            AttachMode::Native => XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => XDP_FLAGS_SKB_MODE,
            AttachMode::Offload => XDP_FLAGS_HW_MODE,
        }
    }

    /// As `ip link` shows it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native (xdpdrv)",
            AttachMode::Generic => "generic (xdpgeneric)",
            AttachMode::Offload => "offload (xdpoffload)",
        }
    }
}

/// The XDP programs attached to an interface, by mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkXdp {
    /// (mode, program id) for every attached program.
    pub(crate) progs: Vec<(AttachMode, u32)>,
    /// The interface MTU.
    pub(crate) mtu: Option<u32>,
}

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

/// A netlink message being built: header, ifinfomsg, attributes.
struct Msg {
    b: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, ifindex: u32, ifi_flags: u32, ifi_change: u32) -> Msg {
        let mut b = Vec::with_capacity(128);
        put_u32(&mut b, 0); // nlmsg_len, set in finish
        put_u16(&mut b, ty);
        put_u16(&mut b, flags | NLM_F_REQUEST);
        put_u32(&mut b, 1); // seq
        put_u32(&mut b, 0); // pid: the kernel
        // struct ifinfomsg
        b.push(libc::AF_UNSPEC as u8);
        b.push(0);
        put_u16(&mut b, 0); // ifi_type
        b.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        put_u32(&mut b, ifi_flags);
        put_u32(&mut b, ifi_change);
        Msg { b, nests: vec![] }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Msg {
        put_u16(&mut self.b, (4 + payload.len()) as u16);
        put_u16(&mut self.b, ty);
        self.b.extend_from_slice(payload);
        align4(&mut self.b);
        self
    }

    fn begin(&mut self, ty: u16) -> &mut Msg {
        self.nests.push(self.b.len());
        put_u16(&mut self.b, 0);
        put_u16(&mut self.b, ty | NLA_F_NESTED);
        self
    }

    fn end(&mut self) -> &mut Msg {
        let at = self.nests.pop().expect("balanced nesting");
        let len = (self.b.len() - at) as u16;
        self.b[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        let len = self.b.len() as u32;
        self.b[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.b)
    }
}

/// Walk the attributes in `b`: (type without flags, payload). Stops at the
/// first malformed one.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
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

/// An error the kernel explained in an extended ack.
#[derive(Debug)]
struct ExtAck {
    errno: i32,
    text: String,
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
pub(crate) fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<ExtAck>())
            .map(|x| x.errno)
    })
}

fn u32_of(p: &[u8]) -> Option<u32> {
    p.get(..4)
        .map(|v| u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
}

/// The error carried by an NLMSG_ERROR reply (`Ok(())` for an ack), with the
/// kernel's extended-ack text appended when there is one.
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

/// Split a reply into (type, flags, whole message) and check NLMSG_ERRORs.
fn first_message(reply: &[u8]) -> io::Result<(u16, u16, &[u8])> {
    if reply.len() < 16 {
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

/// Parse an RTM_NEWLINK message's XDP state and MTU.
fn parse_link(msg: &[u8]) -> LinkXdp {
    let mut out = LinkXdp::default();
    let Some(body) = msg.get(32..) else {
        return out;
    };
    for (ty, p) in attrs(body) {
        match ty {
            IFLA_MTU => out.mtu = u32_of(p),
            IFLA_XDP => {
                let mut attached = 0u8;
                let (mut any, mut drv, mut skb, mut hw) = (0, 0, 0, 0);
                for (t, v) in attrs(p) {
                    match t {
                        IFLA_XDP_ATTACHED => attached = v.first().copied().unwrap_or(0),
                        IFLA_XDP_PROG_ID => any = u32_of(v).unwrap_or(0),
                        IFLA_XDP_DRV_PROG_ID => drv = u32_of(v).unwrap_or(0),
                        IFLA_XDP_SKB_PROG_ID => skb = u32_of(v).unwrap_or(0),
                        IFLA_XDP_HW_PROG_ID => hw = u32_of(v).unwrap_or(0),
                        _ => {}
                    }
                }
                // XDP_ATTACHED_DRV 1, SKB 2, HW 3, MULTI 4 (per-mode ids given).
                match attached {
                    1 => drv = drv.max(any),
                    2 => skb = skb.max(any),
                    3 => hw = hw.max(any),
                    _ => {}
                }
                for (m, id) in [
                    (AttachMode::Native, drv),
                    (AttachMode::Generic, skb),
                    (AttachMode::Offload, hw),
                ] {
                    if id != 0 {
                        out.progs.push((m, id));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The XDP programs attached to interface `ifindex`.
pub(crate) fn link_xdp(ifindex: u32) -> io::Result<LinkXdp> {
    let req = Msg::new(RTM_GETLINK, 0, ifindex, 0, 0)
        .attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes())
        .finish();
    let reply = sys::netlink_route(&req)?;
    let (ty, _, msg) = first_message(&reply)?;
    if ty != RTM_NEWLINK {
        return Err(io::Error::other(format!(
            "unexpected netlink reply type {ty} to RTM_GETLINK"
        )));
    }
    Ok(parse_link(msg))
}

fn request_ack(req: &[u8]) -> io::Result<()> {
    let reply = sys::netlink_route(req)?;
    let (ty, _, _) = first_message(&reply)?;
    if ty != NLMSG_ERROR {
        return Err(io::Error::other(format!(
            "unexpected netlink reply type {ty}, expected an acknowledgement"
        )));
    }
    Ok(())
}

fn detach_request(ifindex: u32, mode: AttachMode, expected_fd: RawFd) -> Vec<u8> {
    Msg::new(RTM_SETLINK, NLM_F_ACK, ifindex, 0, 0)
        .begin(IFLA_XDP)
        .attr(IFLA_XDP_FD, &(-1i32).to_ne_bytes())
        .attr(
            IFLA_XDP_FLAGS,
            &(mode.flags() | XDP_FLAGS_REPLACE).to_ne_bytes(),
        )
        .attr(IFLA_XDP_EXPECTED_FD, &expected_fd.to_ne_bytes())
        .end()
        .finish()
}

/// Remove the program `expected_fd` refers to from `ifindex` in `mode`; the
/// kernel refuses (EEXIST) if another program is attached by now, and (EBUSY)
/// if it is held by a BPF link.
pub(crate) fn detach_xdp(ifindex: u32, mode: AttachMode, expected_fd: RawFd) -> io::Result<()> {
    request_ack(&detach_request(ifindex, mode, expected_fd))
}

/// Attach a program through netlink (not a link): it stays attached after its
/// loader exits. Tests use this to leave a stale program behind.
#[cfg(test)]
pub(crate) fn attach_xdp_netlink(ifindex: u32, prog_fd: RawFd, mode: AttachMode) -> io::Result<()> {
    let req = Msg::new(RTM_SETLINK, NLM_F_ACK, ifindex, 0, 0)
        .begin(IFLA_XDP)
        .attr(IFLA_XDP_FD, &prog_fd.to_ne_bytes())
        .attr(IFLA_XDP_FLAGS, &mode.flags().to_ne_bytes())
        .end()
        .finish();
    request_ack(&req)
}

/// Set or clear IFF_PROMISC on `ifindex`.
pub(crate) fn set_promiscuous(ifindex: u32, on: bool) -> io::Result<()> {
    let req = Msg::new(
        RTM_SETLINK,
        NLM_F_ACK,
        ifindex,
        if on { IFF_PROMISC } else { 0 },
        IFF_PROMISC,
    )
    .finish();
    request_ack(&req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_request_layout() {
        let r = detach_request(7, AttachMode::Generic, 9);
        assert_eq!(u32_of(&r).unwrap() as usize, r.len());
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), RTM_SETLINK);
        assert_eq!(i32::from_ne_bytes([r[20], r[21], r[22], r[23]]), 7);
        let a: Vec<(u16, Vec<u8>)> = attrs(&r[32..]).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, IFLA_XDP);
        let inner: Vec<(u16, u32)> = attrs(&a[0].1)
            .map(|(t, p)| (t, u32_of(p).unwrap()))
            .collect();
        assert_eq!(
            inner,
            vec![
                (IFLA_XDP_FD, u32::MAX),
                (IFLA_XDP_FLAGS, XDP_FLAGS_SKB_MODE | XDP_FLAGS_REPLACE),
                (IFLA_XDP_EXPECTED_FD, 9)
            ]
        );
    }

    #[test]
    fn parses_link_xdp_and_errors() {
        let mut m = Msg::new(RTM_NEWLINK, 0, 3, 0, 0);
        m.attr(IFLA_MTU, &1500u32.to_ne_bytes())
            .begin(IFLA_XDP)
            .attr(IFLA_XDP_ATTACHED, &[1])
            .attr(IFLA_XDP_PROG_ID, &42u32.to_ne_bytes())
            .end();
        let msg = m.finish();
        let l = parse_link(&msg);
        assert_eq!(l.mtu, Some(1500));
        assert_eq!(l.progs, vec![(AttachMode::Native, 42)]);

        // XDP_ATTACHED_MULTI with per-mode ids.
        let mut m = Msg::new(RTM_NEWLINK, 0, 3, 0, 0);
        m.begin(IFLA_XDP)
            .attr(IFLA_XDP_ATTACHED, &[4])
            .attr(IFLA_XDP_DRV_PROG_ID, &5u32.to_ne_bytes())
            .attr(IFLA_XDP_SKB_PROG_ID, &6u32.to_ne_bytes())
            .end();
        let l = parse_link(&m.finish());
        assert_eq!(
            l.progs,
            vec![(AttachMode::Native, 5), (AttachMode::Generic, 6)]
        );

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
        // Garbage does not panic.
        for cut in 0..e.len() {
            let _ = first_message(&e[..cut]);
            let _ = parse_link(&e[..cut]);
        }
    }
}
