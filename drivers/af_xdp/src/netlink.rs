//! rtnetlink messages for the XDP attach policy: which programs an interface
//! carries (`IFLA_XDP`), removing one we own (`IFLA_XDP_FD = -1` with
//! `IFLA_XDP_EXPECTED_FD`, so only that very program goes), attaching one the
//! old way (tests), and the promiscuous flag. The XDP attributes only: the
//! messages are built, sent and read by the core's `nicpoll::netdev::netlink`.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

pub(crate) use nicpoll::netdev::netlink::errno;
use nicpoll::netdev::netlink::{
    IFINFOMSG_LEN, NLM_F_ACK, NLMSG_HDRLEN, RTM_GETLINK, RTM_NEWLINK, RTM_SETLINK, Request, attrs,
    first_message, request_ack, route, set_link_flags, u32_of,
};

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

/// Parse an RTM_NEWLINK message's XDP state and MTU.
fn parse_link(msg: &[u8]) -> LinkXdp {
    let mut out = LinkXdp::default();
    let Some(body) = msg.get(NLMSG_HDRLEN + IFINFOMSG_LEN..) else {
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
    let req = Request::link(RTM_GETLINK, 0, ifindex, 0, 0)
        .attr(IFLA_EXT_MASK, &RTEXT_FILTER_SKIP_STATS.to_ne_bytes())
        .finish();
    let reply = route(&req)?;
    let (ty, _, msg) = first_message(&reply)?;
    if ty != RTM_NEWLINK {
        return Err(io::Error::other(format!(
            "unexpected netlink reply type {ty} to RTM_GETLINK"
        )));
    }
    Ok(parse_link(msg))
}

fn detach_request(ifindex: u32, mode: AttachMode, expected_fd: RawFd) -> Vec<u8> {
    Request::link(RTM_SETLINK, NLM_F_ACK, ifindex, 0, 0)
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
    let req = Request::link(RTM_SETLINK, NLM_F_ACK, ifindex, 0, 0)
        .begin(IFLA_XDP)
        .attr(IFLA_XDP_FD, &prog_fd.to_ne_bytes())
        .attr(IFLA_XDP_FLAGS, &mode.flags().to_ne_bytes())
        .end()
        .finish();
    request_ack(&req)
}

/// Set or clear IFF_PROMISC on `ifindex`.
pub(crate) fn set_promiscuous(ifindex: u32, on: bool) -> io::Result<()> {
    set_link_flags(ifindex, if on { IFF_PROMISC } else { 0 }, IFF_PROMISC)
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
    fn parses_link_xdp() {
        let mut m = Request::link(RTM_NEWLINK, 0, 3, 0, 0);
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
        let mut m = Request::link(RTM_NEWLINK, 0, 3, 0, 0);
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

        // Garbage does not panic (the errors: `nicpoll::netdev::netlink`).
        for cut in 0..msg.len() {
            let _ = parse_link(&msg[..cut]);
        }
    }
}
