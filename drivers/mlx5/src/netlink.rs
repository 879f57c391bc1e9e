//! The kernel requests the bifurcated model needs besides verbs, over netlink
//! (rtnetlink and RDMA netlink):
//!
//! - an FDB entry for an extra MAC (`bridge fdb add M dev IF self`), so a VF's
//!   vport accepts it, as DPDK's `mlx5_nl_mac_addr_modify` does;
//! - the interface's IFF_PROMISC flag (`ifi_change = IFF_PROMISC`, as DPDK's
//!   `mlx5_nl_promisc`; sent as RTM_SETLINK where DPDK sends RTM_NEWLINK, which
//!   Linux handles alike for an existing link: `net/core/rtnetlink.c`
//!   rtnl_setlink and __rtnl_newlink both call do_setlink), without which even
//!   a trusted VF gets no foreign unicast;
//! - whether a VF is trusted, read from its PF (`IFLA_VFINFO_LIST` /
//!   `IFLA_VF_TRUST`, what `ip link show PF` prints as `trust on`);
//! - which IB port of an RDMA device carries an interface (RDMA netlink
//!   `RDMA_NLDEV_CMD_PORT_GET`, `RDMA_NLDEV_ATTR_NDEV_INDEX`), as DPDK's
//!   `mlx5_nl_ifindex` finds it.
//!
//! Constants are the uapi's (`linux/rtnetlink.h`, `linux/if_link.h`,
//! `linux/neighbour.h`, `rdma/rdma_netlink.h`). Messages are built, sent and
//! read by the core's `nicpoll::netdev::netlink`; this file holds what is
//! the driver's own: which requests, and what it reads in the answers. The
//! port reaches all of this through the [`Kernel`] trait so the tests can
//! stand a fake kernel in.
#![deny(unsafe_code)]

use std::io;

use nicpoll::netdev::netlink::{
    IFINFOMSG_LEN, NETLINK_RDMA, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLMSG_DONE,
    NLMSG_ERROR, NLMSG_HDRLEN, RTM_DELNEIGH, RTM_GETLINK, RTM_NEWLINK, RTM_NEWNEIGH, Request,
    Socket, attrs, first_message, messages, request_ack, route, set_link_flags, u32_of,
};
#[cfg(test)]
use nicpoll::netdev::netlink::{NLA_TYPE_MASK, NLM_F_MULTI, NLM_F_REQUEST};

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

/// The real kernel. Its errors carry the kernel's extended-ack text when it
/// gives one: read the errno with `nicpoll::netdev::netlink::errno`.
#[derive(Debug, Default)]
pub struct Netlink;

impl Kernel for Netlink {
    fn fdb(&self, ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()> {
        request_ack(&fdb_request(ifindex, mac, add))
    }

    fn set_promisc(&self, ifindex: u32, on: bool) -> io::Result<()> {
        set_link_flags(ifindex, if on { IFF_PROMISC } else { 0 }, IFF_PROMISC)
    }

    fn vf_trust(&self, pf_ifindex: u32, vf: u32) -> io::Result<Option<bool>> {
        let reply = route(&getlink_vf_request(pf_ifindex))?;
        let (ty, _, msg) = first_message(&reply)?;
        if ty != RTM_NEWLINK {
            return Ok(None);
        }
        Ok(vf_trust_in(&msg[NLMSG_HDRLEN..], vf))
    }

    fn rdma_port(&self, ibdev: &str, ifindex: u32) -> io::Result<Option<u8>> {
        let sock = Socket::open(NETLINK_RDMA)?;
        let replies = sock.exchange(&rdma_request(RDMA_NLDEV_CMD_GET, None))?;
        let Some(dev_index) = rdma_dev_index(&replies, ibdev)? else {
            return Ok(None);
        };
        let replies = sock.exchange(&rdma_request(RDMA_NLDEV_CMD_PORT_GET, Some(dev_index)))?;
        rdma_port_of(&replies, dev_index, ifindex)
    }
}

// ---------------------------------------------------------------------------
// uapi constants (netlink's own are the core's)

const AF_BRIDGE: u8 = 7;
#[cfg(test)]
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
const RDMA_NL_NLDEV: u16 = 5;
const RDMA_NLDEV_CMD_GET: u16 = 1;
const RDMA_NLDEV_CMD_PORT_GET: u16 = 5;
const RDMA_NLDEV_ATTR_DEV_INDEX: u16 = 1;
const RDMA_NLDEV_ATTR_DEV_NAME: u16 = 2;
const RDMA_NLDEV_ATTR_PORT_INDEX: u16 = 3;
const RDMA_NLDEV_ATTR_NDEV_INDEX: u16 = 50;

// ---------------------------------------------------------------------------
// Requests

/// `bridge fdb add|del MAC dev IF self`: RTM_NEWNEIGH/RTM_DELNEIGH with
/// NTF_SELF on the interface (DPDK's `mlx5_nl_mac_addr_modify`).
fn fdb_request(ifindex: u32, mac: [u8; 6], add: bool) -> Vec<u8> {
    let (ty, flags) = if add {
        (RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
    } else {
        (RTM_DELNEIGH, NLM_F_ACK)
    };
    let state = NUD_NOARP | NUD_PERMANENT;
    Request::neigh(ty, flags, AF_BRIDGE, ifindex, state, NTF_SELF)
        .attr(NDA_LLADDR, &mac)
        .finish()
}

/// RTM_GETLINK of one interface with its VF list.
fn getlink_vf_request(ifindex: u32) -> Vec<u8> {
    Request::link(RTM_GETLINK, 0, ifindex, 0, 0)
        .attr(IFLA_EXT_MASK, &RTEXT_FILTER_VF.to_ne_bytes())
        .finish()
}

/// An RDMA netlink dump (`RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, op)`), of one device's
/// ports when `dev_index` is given.
fn rdma_request(op: u16, dev_index: Option<u32>) -> Vec<u8> {
    let mut r = Request::new((RDMA_NL_NLDEV << 10) + op, NLM_F_DUMP);
    if let Some(i) = dev_index {
        r.attr(RDMA_NLDEV_ATTR_DEV_INDEX, &i.to_ne_bytes());
    }
    r.finish()
}

// ---------------------------------------------------------------------------
// Answers

/// IFLA_VF_TRUST of VF `vf` in an RTM_NEWLINK payload (ifinfomsg, attributes).
fn vf_trust_in(payload: &[u8], vf: u32) -> Option<bool> {
    let list = attrs(payload.get(IFINFOMSG_LEN..)?)
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

/// The messages of a dump that carry data, once none of them is an error.
fn dump_data(replies: &[u8]) -> io::Result<impl Iterator<Item = &[u8]>> {
    for m in messages(replies) {
        m.check()?;
    }
    Ok(messages(replies)
        .filter(|m| m.ty != NLMSG_DONE && m.ty != NLMSG_ERROR)
        .map(|m| m.payload))
}

/// The index of the RDMA device named `ibdev` in a `RDMA_NLDEV_CMD_GET` dump.
fn rdma_dev_index(replies: &[u8], ibdev: &str) -> io::Result<Option<u32>> {
    for payload in dump_data(replies)? {
        let mut index = None;
        let mut named = false;
        for (t, p) in attrs(payload) {
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
    for payload in dump_data(replies)? {
        let (mut dev, mut port, mut ndev) = (None, None, None);
        for (t, p) in attrs(payload) {
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

#[cfg(test)]
#[path = "netlink_header_test.rs"]
mod header_test;

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of type `ty` holding `body` then `attrs` (built with the
    /// core's `Request`, as the kernel would lay it out).
    fn request(ty: u16, flags: u16, body: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut r = Request::new(ty, flags);
        r.body(body);
        for (t, p) in attrs {
            r.attr(*t, p);
        }
        r.finish()
    }

    fn error_reply(errno: i32) -> Vec<u8> {
        let mut b = (-errno).to_ne_bytes().to_vec();
        b.extend_from_slice(&[0u8; 16]);
        request(NLMSG_ERROR, 0, &b, &[])
    }

    fn ifinfomsg(ifindex: u32, flags: u32, change: u32) -> Vec<u8> {
        Request::link(0, 0, ifindex, flags, change).finish()[NLMSG_HDRLEN..].to_vec()
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
