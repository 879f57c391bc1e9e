//! The kernel requests the bifurcated model needs besides verbs, over netlink
//! (rtnetlink and RDMA netlink), through rustix's safe socket calls:
//!
//! - an FDB entry for an extra MAC (`bridge fdb add M dev IF self`), so a VF's
//!   vport accepts it, as DPDK's `mlx5_nl_mac_addr_modify` does;
//! - the interface's IFF_PROMISC flag (DPDK's `mlx5_nl_promisc`: RTM_NEWLINK
//!   with `ifi_change = IFF_PROMISC`), without which even a trusted VF gets no
//!   foreign unicast;
//! - whether a VF is trusted, read from its PF (`IFLA_VFINFO_LIST` /
//!   `IFLA_VF_TRUST`, what `ip link show PF` prints as `trust on`);
//! - which IB port of an RDMA device carries an interface (RDMA netlink
//!   `RDMA_NLDEV_CMD_PORT_GET`, `RDMA_NLDEV_ATTR_NDEV_INDEX`), as DPDK's
//!   `mlx5_nl_ifindex` finds it.
//!
//! Constants are the uapi's (`linux/rtnetlink.h`, `linux/if_link.h`,
//! `linux/neighbour.h`, `rdma/rdma_netlink.h`). The port reaches all of this
//! through the [`Kernel`] trait so the tests can stand a fake kernel in.
//!
//! A core netlink module shared by the drivers is being written; until it is
//! on main this one stays the driver's own, in this file.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, netlink,
    sockopt::{Timeout, set_socket_timeout},
};

/// What the port asks of the kernel besides verbs.
pub trait Kernel: Send + Sync {
    /// Add (`true`) or remove an FDB entry for `mac` on the interface.
    fn fdb(&self, ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()>;
    /// Set or clear the interface's IFF_PROMISC flag.
    fn set_promisc(&self, ifindex: u32, on: bool) -> io::Result<()>;
    /// Whether VF `vf` of the PF `pf_ifindex` is trusted (`None`: the PF does
    /// not say).
    fn vf_trust(&self, pf_ifindex: u32, vf: u32) -> io::Result<Option<bool>>;
    /// The IB port of `ibdev` whose network interface is `ifindex` (`None`:
    /// no port names it).
    fn rdma_port(&self, ibdev: &str, ifindex: u32) -> io::Result<Option<u8>>;
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct Netlink;

impl Kernel for Netlink {
    fn fdb(&self, ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()> {
        let msg = fdb_request(ifindex, mac, add);
        let sock = open(None)?;
        let replies = exchange(&sock, &msg)?;
        ack_of(&replies)
    }

    fn set_promisc(&self, ifindex: u32, on: bool) -> io::Result<()> {
        let msg = promisc_request(ifindex, on);
        let sock = open(None)?;
        let replies = exchange(&sock, &msg)?;
        ack_of(&replies)
    }

    fn vf_trust(&self, pf_ifindex: u32, vf: u32) -> io::Result<Option<bool>> {
        let msg = getlink_vf_request(pf_ifindex);
        let sock = open(None)?;
        let replies = exchange(&sock, &msg)?;
        for m in messages(&replies) {
            if m.ty == NLMSG_ERROR {
                ack_of(m.whole)?;
            } else if m.ty == RTM_NEWLINK {
                return Ok(vf_trust_in(m.payload, vf));
            }
        }
        Ok(None)
    }

    fn rdma_port(&self, ibdev: &str, ifindex: u32) -> io::Result<Option<u8>> {
        let sock = open(Some(netlink::RDMA))?;
        let replies = exchange(&sock, &rdma_request(RDMA_NLDEV_CMD_GET, None))?;
        let Some(dev_index) = rdma_dev_index(&replies, ibdev)? else {
            return Ok(None);
        };
        let replies = exchange(
            &sock,
            &rdma_request(RDMA_NLDEV_CMD_PORT_GET, Some(dev_index)),
        )?;
        rdma_port_of(&replies, dev_index, ifindex)
    }
}

// ---------------------------------------------------------------------------
// uapi constants

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_MULTI: u16 = 2;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const AF_BRIDGE: u8 = 7;
const AF_UNSPEC: u8 = 0;
const NDA_LLADDR: u16 = 2;
const NTF_SELF: u8 = 0x02;
const NUD_NOARP: u16 = 0x40;
const NUD_PERMANENT: u16 = 0x80;
/// `IFF_PROMISC` (`linux/if.h`).
pub const IFF_PROMISC: u32 = 0x100;
const IFLA_VFINFO_LIST: u16 = 22;
const IFLA_EXT_MASK: u16 = 29;
const IFLA_VF_INFO: u16 = 1;
const IFLA_VF_TRUST: u16 = 9;
const RTEXT_FILTER_VF: u32 = 1;
const NLA_TYPE_MASK: u16 = 0x3fff;
const RDMA_NL_NLDEV: u16 = 5;
const RDMA_NLDEV_CMD_GET: u16 = 1;
const RDMA_NLDEV_CMD_PORT_GET: u16 = 5;
const RDMA_NLDEV_ATTR_DEV_INDEX: u16 = 1;
const RDMA_NLDEV_ATTR_DEV_NAME: u16 = 2;
const RDMA_NLDEV_ATTR_PORT_INDEX: u16 = 3;
const RDMA_NLDEV_ATTR_NDEV_INDEX: u16 = 50;

/// How long a reply may take before the request counts as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Most reply bytes read for one request (a dump of a few dozen ports or
/// devices fits many times over).
const MAX_REPLY: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Encoding

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request: header, fixed body, attributes (type, payload).
fn request(ty: u16, flags: u16, body: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(body);
    m.resize(align4(m.len()), 0);
    for (at, payload) in attrs {
        m.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&at.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
    }
    let len = m.len() as u32;
    m[0..4].copy_from_slice(&len.to_ne_bytes());
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    m
}

/// `struct ifinfomsg`: family, pad, type, index, flags, change.
fn ifinfomsg(ifindex: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0] = AF_UNSPEC;
    b[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// `bridge fdb add|del MAC dev IF self`: RTM_NEWNEIGH/RTM_DELNEIGH with
/// NTF_SELF on the interface.
fn fdb_request(ifindex: u32, mac: [u8; 6], add: bool) -> Vec<u8> {
    // struct ndmsg: family, pad1, pad2, ifindex, state, flags, type.
    let mut nd = [0u8; 12];
    nd[0] = AF_BRIDGE;
    nd[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    nd[8..10].copy_from_slice(&(NUD_NOARP | NUD_PERMANENT).to_ne_bytes());
    nd[10] = NTF_SELF;
    let (ty, flags) = if add {
        (
            RTM_NEWNEIGH,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        (RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK)
    };
    request(ty, flags, &nd, &[(NDA_LLADDR, &mac)])
}

/// RTM_NEWLINK changing only IFF_PROMISC.
fn promisc_request(ifindex: u32, on: bool) -> Vec<u8> {
    let body = ifinfomsg(ifindex, if on { IFF_PROMISC } else { 0 }, IFF_PROMISC);
    request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, &body, &[])
}

/// RTM_GETLINK of one interface with its VF list.
fn getlink_vf_request(ifindex: u32) -> Vec<u8> {
    let body = ifinfomsg(ifindex, 0, 0);
    request(
        RTM_GETLINK,
        NLM_F_REQUEST,
        &body,
        &[(IFLA_EXT_MASK, &RTEXT_FILTER_VF.to_ne_bytes())],
    )
}

/// An RDMA netlink dump (`RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op)`), of one device's
/// ports when `dev_index` is given.
fn rdma_request(op: u16, dev_index: Option<u32>) -> Vec<u8> {
    let ty = (RDMA_NL_NLDEV << 10) + op;
    let idx = dev_index.map(|i| i.to_ne_bytes());
    let attrs: Vec<(u16, &[u8])> = idx
        .as_ref()
        .map(|b| vec![(RDMA_NLDEV_ATTR_DEV_INDEX, &b[..])])
        .unwrap_or_default();
    request(ty, NLM_F_REQUEST | NLM_F_DUMP, &[], &attrs)
}

// ---------------------------------------------------------------------------
// Parsing

/// One message of a reply.
struct Msg<'a> {
    ty: u16,
    flags: u16,
    /// After the header.
    payload: &'a [u8],
    /// Header included.
    whole: &'a [u8],
}

fn messages(buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + NLMSG_HDRLEN > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            return None;
        }
        let m = Msg {
            ty: u16::from_ne_bytes([buf[at + 4], buf[at + 5]]),
            flags: u16::from_ne_bytes([buf[at + 6], buf[at + 7]]),
            payload: &buf[at + NLMSG_HDRLEN..at + len],
            whole: &buf[at..at + len],
        };
        at += align4(len);
        Some(m)
    })
}

/// The attributes in `buf` as (type without flags, payload).
fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at + 4 > buf.len() {
            return None;
        }
        let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & NLA_TYPE_MASK;
        if len < 4 || at + len > buf.len() {
            return None;
        }
        let a = (ty, &buf[at + 4..at + len]);
        at += align4(len);
        Some(a)
    })
}

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

/// The result an NLMSG_ERROR acknowledgement carries (the first message of
/// `buf` must be one).
fn ack_of(buf: &[u8]) -> io::Result<()> {
    let Some(m) = messages(buf).next() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink reply",
        ));
    };
    if m.ty != NLMSG_ERROR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected netlink reply type {}", m.ty),
        ));
    }
    match m
        .payload
        .get(..4)
        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
    {
        Some(0) => Ok(()),
        Some(err) => Err(io::Error::from_raw_os_error(-err)),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short netlink error message",
        )),
    }
}

/// IFLA_VF_TRUST of VF `vf` in an RTM_NEWLINK payload (ifinfomsg, attributes).
fn vf_trust_in(payload: &[u8], vf: u32) -> Option<bool> {
    let list = attrs(payload.get(16..)?)
        .find(|(t, _)| *t == IFLA_VFINFO_LIST)?
        .1;
    for (t, info) in attrs(list) {
        if t != IFLA_VF_INFO {
            continue;
        }
        if let Some((_, trust)) = attrs(info).find(|(t, _)| *t == IFLA_VF_TRUST) {
            // struct ifla_vf_trust { __u32 vf; __u32 setting; }
            if u32_of(trust)? == vf {
                return Some(u32_of(trust.get(4..)?)? != 0);
            }
        }
    }
    None
}

fn rdma_errors(replies: &[u8]) -> io::Result<()> {
    for m in messages(replies) {
        if m.ty == NLMSG_ERROR {
            ack_of(m.whole)?;
        }
    }
    Ok(())
}

/// The index of the RDMA device named `ibdev` in a `RDMA_NLDEV_CMD_GET` dump.
fn rdma_dev_index(replies: &[u8], ibdev: &str) -> io::Result<Option<u32>> {
    rdma_errors(replies)?;
    for m in messages(replies).filter(|m| m.ty != NLMSG_DONE && m.ty != NLMSG_ERROR) {
        let mut index = None;
        let mut named = false;
        for (t, p) in attrs(m.payload) {
            match t {
                RDMA_NLDEV_ATTR_DEV_INDEX => index = u32_of(p),
                RDMA_NLDEV_ATTR_DEV_NAME => {
                    named = p.split(|b| *b == 0).next() == Some(ibdev.as_bytes())
                }
                _ => {}
            }
        }
        if named && index.is_some() {
            return Ok(index);
        }
    }
    Ok(None)
}

/// The port whose network interface is `ifindex` in a `RDMA_NLDEV_CMD_PORT_GET`
/// dump of device `dev_index`.
fn rdma_port_of(replies: &[u8], dev_index: u32, ifindex: u32) -> io::Result<Option<u8>> {
    rdma_errors(replies)?;
    for m in messages(replies).filter(|m| m.ty != NLMSG_DONE && m.ty != NLMSG_ERROR) {
        let (mut dev, mut port, mut ndev) = (None, None, None);
        for (t, p) in attrs(m.payload) {
            match t {
                RDMA_NLDEV_ATTR_DEV_INDEX => dev = u32_of(p),
                RDMA_NLDEV_ATTR_PORT_INDEX => port = u32_of(p),
                RDMA_NLDEV_ATTR_NDEV_INDEX => ndev = u32_of(p),
                _ => {}
            }
        }
        if dev == Some(dev_index) && ndev == Some(ifindex) {
            return Ok(port.and_then(|p| u8::try_from(p).ok()));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------
// The socket

/// A netlink socket; `None` is NETLINK_ROUTE (protocol 0).
fn open(protocol: Option<rustix::net::Protocol>) -> io::Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        protocol,
    )?;
    set_socket_timeout(&fd, Timeout::Recv, Some(REPLY_TIMEOUT))?;
    Ok(fd)
}

/// Send `msg` to the kernel and read its reply: one message, or a multi-part
/// dump up to NLMSG_DONE (or an error).
fn exchange(sock: &OwnedFd, msg: &[u8]) -> io::Result<Vec<u8>> {
    rustix::net::sendto(
        sock,
        msg,
        SendFlags::empty(),
        &netlink::SocketAddrNetlink::new(0, 0),
    )?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (n, _) = rustix::net::recv(sock, &mut buf[..], RecvFlags::empty())?;
        let chunk = &buf[..n];
        all.extend_from_slice(chunk);
        let mut last_multi = false;
        let mut finished = false;
        for m in messages(chunk) {
            last_multi = m.flags & NLM_F_MULTI != 0;
            if m.ty == NLMSG_DONE || m.ty == NLMSG_ERROR {
                finished = true;
            }
        }
        if finished || !last_multi || n == 0 || all.len() > MAX_REPLY {
            return Ok(all);
        }
    }
}

#[cfg(test)]
#[path = "netlink_header_test.rs"]
mod header_test;

#[cfg(test)]
mod tests {
    use super::*;

    fn error_reply(errno: i32) -> Vec<u8> {
        let mut b = (-errno).to_ne_bytes().to_vec();
        b.extend_from_slice(&[0u8; 16]);
        request(NLMSG_ERROR, 0, &b, &[])
    }

    #[test]
    fn acks_are_read() {
        assert!(ack_of(&error_reply(0)).is_ok());
        assert_eq!(
            ack_of(&error_reply(libc::EPERM))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EPERM)
        );
        assert!(ack_of(&error_reply(0)[..8]).is_err());
    }

    #[test]
    fn fdb_request_is_an_ndmsg_with_the_mac() {
        let m = fdb_request(7, [2, 0, 0, 0, 0, 9], true);
        assert_eq!(m.len(), 40);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWNEIGH);
        assert_eq!(m[16], AF_BRIDGE);
        assert_eq!(&m[20..24], &7i32.to_ne_bytes());
        assert_eq!(m[26], NTF_SELF);
        assert_eq!(&m[32..38], &[2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn vf_trust_and_rdma_ports_are_parsed() {
        // RTM_NEWLINK: ifinfomsg, IFLA_VFINFO_LIST { IFLA_VF_INFO { IFLA_VF_TRUST {vf, setting} } x2 }
        let trust = |vf: u32, on: u32| {
            let mut t = vf.to_ne_bytes().to_vec();
            t.extend_from_slice(&on.to_ne_bytes());
            request(0, 0, &[], &[(IFLA_VF_TRUST, &t)])[NLMSG_HDRLEN..].to_vec()
        };
        let infos: Vec<u8> = [trust(0, 0), trust(1, 1)]
            .iter()
            .flat_map(|t| request(0, 0, &[], &[(IFLA_VF_INFO, t)])[NLMSG_HDRLEN..].to_vec())
            .collect();
        let msg = request(
            RTM_NEWLINK,
            0,
            &ifinfomsg(3, 0, 0),
            &[(IFLA_VFINFO_LIST | 0x8000, &infos)],
        );
        let m = messages(&msg).next().unwrap();
        assert_eq!(vf_trust_in(m.payload, 0), Some(false));
        assert_eq!(vf_trust_in(m.payload, 1), Some(true));
        assert_eq!(vf_trust_in(m.payload, 2), None);
        // A device dump, then a port dump of device 4: port 2 is ifindex 9.
        let dev = |i: u32, name: &[u8]| {
            request(
                (RDMA_NL_NLDEV << 10) + 1,
                NLM_F_MULTI,
                &[],
                &[
                    (RDMA_NLDEV_ATTR_DEV_INDEX, &i.to_ne_bytes()),
                    (RDMA_NLDEV_ATTR_DEV_NAME, name),
                ],
            )
        };
        let mut devs = dev(3, b"mlx5_0\0");
        devs.extend(dev(4, b"mlx5_bond_0\0"));
        devs.extend(request(NLMSG_DONE, NLM_F_MULTI, &[0; 4], &[]));
        assert_eq!(rdma_dev_index(&devs, "mlx5_bond_0").unwrap(), Some(4));
        assert_eq!(rdma_dev_index(&devs, "mlx5_9").unwrap(), None);
        let port = |p: u32, nd: u32| {
            request(
                (RDMA_NL_NLDEV << 10) + 5,
                NLM_F_MULTI,
                &[],
                &[
                    (RDMA_NLDEV_ATTR_DEV_INDEX, &4u32.to_ne_bytes()),
                    (RDMA_NLDEV_ATTR_PORT_INDEX, &p.to_ne_bytes()),
                    (RDMA_NLDEV_ATTR_NDEV_INDEX, &nd.to_ne_bytes()),
                ],
            )
        };
        let mut ports = port(1, 8);
        ports.extend(port(2, 9));
        assert_eq!(rdma_port_of(&ports, 4, 9).unwrap(), Some(2));
        assert_eq!(rdma_port_of(&ports, 4, 10).unwrap(), None);
        assert_eq!(
            rdma_port_of(&error_reply(libc::EOPNOTSUPP), 4, 9)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EOPNOTSUPP)
        );
    }
    fn ifindex(name: &str) -> u32 {
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn fdb_entries_are_added_and_removed_on_a_veth() {
        // bridge(8) reads the FDB back: the kernel's view, not our parser's.
        let mut needs = nicpoll_testkit::VETH.to_vec();
        needs.push(nicpoll_testkit::Need::Command("bridge"));
        if nicpoll_testkit::skip_if_missing(&needs) {
            return;
        }
        let pair = nicpoll::port::testing::VethPair::create("npmlx5fdb");
        let ifindex = ifindex(&pair.a);
        let mac = [0x02, 0x6e, 0x70, 0x00, 0x00, 0x09];
        let show = || {
            std::process::Command::new("bridge")
                .args(["fdb", "show", "dev", &pair.a])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .expect("bridge(8) runs")
        };
        Netlink.fdb(ifindex, mac, true).expect("RTM_NEWNEIGH");
        assert_eq!(
            Netlink.fdb(ifindex, mac, true).unwrap_err().raw_os_error(),
            Some(libc::EEXIST),
            "NLM_F_EXCL: a second add is refused"
        );
        let out = show();
        assert!(out.contains("02:6e:70:00:00:09"), "bridge fdb show: {out}");
        Netlink.fdb(ifindex, mac, false).expect("RTM_DELNEIGH");
        let out = show();
        assert!(!out.contains("02:6e:70:00:00:09"), "bridge fdb show: {out}");
        assert!(Netlink.fdb(ifindex, mac, false).is_err(), "already removed");
    }

    #[test]
    fn promiscuous_flag_is_set_and_cleared_on_a_veth() {
        if nicpoll_testkit::skip_if_missing(&nicpoll_testkit::VETH) {
            return;
        }
        let pair = nicpoll::port::testing::VethPair::create("npmlx5pr");
        let flags = || {
            let s = std::fs::read_to_string(format!("/sys/class/net/{}/flags", pair.a)).unwrap();
            u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap()
        };
        assert_eq!(flags() & IFF_PROMISC, 0);
        Netlink
            .set_promisc(ifindex(&pair.a), true)
            .expect("RTM_NEWLINK");
        assert_ne!(flags() & IFF_PROMISC, 0, "the kernel reports IFF_PROMISC");
        Netlink
            .set_promisc(ifindex(&pair.a), false)
            .expect("RTM_NEWLINK");
        assert_eq!(flags() & IFF_PROMISC, 0);
        // A veth has no VFs: the kernel's RTM_NEWLINK carries no VF list.
        assert_eq!(Netlink.vf_trust(ifindex(&pair.a), 0).unwrap(), None);
    }
}
