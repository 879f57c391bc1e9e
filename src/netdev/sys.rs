//! The unsafe half of [`crate::netdev`]: the calls rustix has no safe form
//! for. Interface ioctls that carry a `struct ifreq` (flags, hardware
//! address, MTU), the `struct sockaddr_ll` of AF_PACKET sockets (bind, send,
//! receive), and the AF_PACKET and netlink socket options. Each function
//! passes the kernel exactly one object of the type the request names, and
//! keeps it alive across the call.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An `ifreq` naming interface `name` (the union zeroed), or EINVAL if `name`
/// cannot be an interface name (empty, `IFNAMSIZ` bytes or longer, or with a
/// NUL).
pub fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: ifreq is plain old data for which all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// `ioctl(fd, req, ifr)` for a request that reads and/or writes one
/// `struct ifreq`.
///
/// # Safety
/// `req` must be such a request (`SIOCGIF*`, `SIOCSIF*`, `TUNSETIFF`,
/// `TUNSETQUEUE`, ...), with the union member it reads set as the request
/// expects.
pub unsafe fn ioctl_ifreq(
    fd: BorrowedFd<'_>,
    req: libc::c_ulong,
    ifr: &mut libc::ifreq,
) -> io::Result<()> {
    // SAFETY: the caller guarantees `req` reads and writes at most one ifreq,
    // which `ifr` is for the duration of the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), req as _, ifr as *mut libc::ifreq) }).map(|_| ())
}

/// `SIOCGIFFLAGS`.
pub fn get_flags(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name)?;
    // SAFETY: SIOCGIFFLAGS writes the flags member of one ifreq.
    unsafe { ioctl_ifreq(fd, libc::SIOCGIFFLAGS, &mut ifr) }?;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags } as u16 as u32)
}

/// `SIOCSIFFLAGS`: set the low 16 bits of `flags`.
pub fn set_flags(fd: BorrowedFd<'_>, name: &str, flags: u32) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_flags = flags as u16 as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the flags member of one ifreq, set above.
    unsafe { ioctl_ifreq(fd, libc::SIOCSIFFLAGS, &mut ifr) }
}

/// `SIOCGIFHWADDR`: the hardware type (`ARPHRD_*`) and the first six bytes of
/// the address.
pub fn get_hwaddr(fd: BorrowedFd<'_>, name: &str) -> io::Result<(u16, [u8; 6])> {
    let mut ifr = ifreq(name)?;
    // SAFETY: SIOCGIFHWADDR writes the hwaddr member of one ifreq.
    unsafe { ioctl_ifreq(fd, libc::SIOCGIFHWADDR, &mut ifr) }?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok((sa.sa_family, mac))
}

/// `SIOCSIFHWADDR`: set an Ethernet address.
pub fn set_hwaddr(fd: BorrowedFd<'_>, name: &str, mac: [u8; 6]) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    // SAFETY: plain old data, all zeroes valid.
    let mut sa: libc::sockaddr = unsafe { zeroed() };
    sa.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in sa.sa_data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_hwaddr = sa;
    // SAFETY: SIOCSIFHWADDR reads the hwaddr member of one ifreq, set above.
    unsafe { ioctl_ifreq(fd, libc::SIOCSIFHWADDR, &mut ifr) }
}

/// `SIOCGIFMTU`.
pub fn get_mtu(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name)?;
    // SAFETY: SIOCGIFMTU writes the mtu member of one ifreq.
    unsafe { ioctl_ifreq(fd, libc::SIOCGIFMTU, &mut ifr) }?;
    // SAFETY: SIOCGIFMTU filled the mtu member.
    Ok(unsafe { ifr.ifr_ifru.ifru_mtu }.max(0) as u32)
}

/// `SIOCSIFMTU`.
pub fn set_mtu(fd: BorrowedFd<'_>, name: &str, mtu: u32) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    ifr.ifr_ifru.ifru_mtu = mtu.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: SIOCSIFMTU reads the mtu member of one ifreq, set above.
    unsafe { ioctl_ifreq(fd, libc::SIOCSIFMTU, &mut ifr) }
}

/// The name an `ifreq` carries (the kernel's, after `TUNSETIFF` with `%d`).
pub fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `sockaddr_ll` for interface `ifindex` and protocol `proto` (host order).
fn link_addr(ifindex: u32, proto: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
    let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto.to_be();
    sa.sll_ifindex = ifindex as i32;
    sa
}

/// `bind(2)` an AF_PACKET socket to interface `ifindex`, protocol `proto`.
pub fn bind_link(fd: BorrowedFd<'_>, ifindex: u32, proto: u16) -> io::Result<()> {
    let sa = link_addr(ifindex, proto);
    // SAFETY: `sa` is a live sockaddr_ll of the length given.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// `sendto(2)` one frame out of interface `ifindex`, without blocking.
pub fn send_link(fd: BorrowedFd<'_>, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let mut sa = link_addr(ifindex, 0);
    sa.sll_halen = 6;
    // SAFETY: `frame` and `sa` are live buffers of the lengths given.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT,
            (&sa as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// What the kernel took out of a received frame: its VLAN tag (TCI, TPID),
/// from the `PACKET_AUXDATA` control message.
pub type VlanTag = (u16, u16);

/// `recvmsg(2)` one frame without blocking (`MSG_TRUNC`): its whole length
/// (more than `buf` holds if it was cut), its packet type (`PACKET_*`), and,
/// if the socket asked for `PACKET_AUXDATA`, the VLAN tag the kernel took out
/// of its data (`skb_vlan_untag` moves a received 802.1Q/802.1ad tag into the
/// skb's metadata).
pub fn recv_link(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, u8, Option<VlanTag>)> {
    // SAFETY: plain old data.
    let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
    // Room for one control message carrying a tpacket_auxdata, u64-aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain old data; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = (&mut sa as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 8]>() as _;
    // SAFETY: `msg` points at `sa`, `iov` (into `buf`, `buf.len()` bytes) and
    // `control`, all live and of the lengths given.
    let r = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r as usize, sa.sll_pkttype, vlan_tag(&msg)))
}

/// The VLAN tag a `PACKET_AUXDATA` control message of `msg` reports, if any.
fn vlan_tag(msg: &libc::msghdr) -> Option<VlanTag> {
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR stay in
    // its control buffer, and a PACKET_AUXDATA message of that length carries
    // a tpacket_auxdata (read unaligned: the buffer promises no alignment for
    // the payload).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == libc::PACKET_AUXDATA
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0
                    && aux.tp_vlan_tpid != 0
                {
                    aux.tp_vlan_tpid
                } else {
                    0x8100
                };
                return Some((aux.tp_vlan_tci, tpid));
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

/// `setsockopt(2)` with a plain-data value.
fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` is a live, initialized `T` (a C integer or a `#[repr(C)]`
    // struct, as each caller below passes) of exactly the length given.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// `PACKET_ADD_MEMBERSHIP` of type `PACKET_MR_PROMISC` on `ifindex`: the
/// interface is promiscuous while the socket is open.
pub fn add_promisc_membership(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: all-zero is a valid packet_mreq.
    let mut mr: libc::packet_mreq = unsafe { zeroed() };
    mr.mr_ifindex = ifindex as i32;
    mr.mr_type = libc::PACKET_MR_PROMISC as u16;
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)
}

/// `PACKET_IGNORE_OUTGOING` (Linux 4.20+): the socket no longer sees what
/// the interface sends.
pub fn ignore_outgoing(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &(1 as libc::c_int),
    )
}

/// `PACKET_AUXDATA`: every received frame comes with a `tpacket_auxdata`
/// (its VLAN tag among others) as a control message.
pub fn enable_auxdata(fd: BorrowedFd<'_>) -> io::Result<()> {
    setsockopt(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_AUXDATA,
        &(1 as libc::c_int),
    )
}

/// A `SOL_NETLINK` integer option (`NETLINK_EXT_ACK`, `NETLINK_CAP_ACK`).
pub fn set_netlink_opt(fd: BorrowedFd<'_>, name: libc::c_int, on: bool) -> io::Result<()> {
    setsockopt(fd, libc::SOL_NETLINK, name, &(libc::c_int::from(on)))
}

const _: () = assert!(size_of::<libc::ifreq>() == 40);
const _: () = assert!(size_of::<libc::sockaddr_ll>() == 20);
