//! The simulated VF's system calls: an `AF_PACKET` raw socket on a kernel
//! interface, used as the VF's wire (`Wire::Iface`). Non-blocking; the device
//! thread polls it.
//!
//! One of the two modules of the model with unsafe code (the other is `dma.rs`).
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ALL: u16 = 0x0003;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A raw packet socket bound to one interface, in promiscuous mode, that sees
/// only frames arriving at the interface (not the ones it sends).
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Open a socket on interface `ifname`. Needs CAP_NET_RAW.
    pub(crate) fn open(ifname: &str) -> io::Result<PacketSocket> {
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        // SAFETY: `name` is a live NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = ifindex as i32;
        // SAFETY: plain system call with integer arguments.
        let fd = cvt(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_ALL.to_be()),
            )
        })?;
        // SAFETY: `fd` is a descriptor we just created and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let s = PacketSocket { fd, ifindex };
        // Only what arrives at the interface: our own transmissions would
        // otherwise come back as received frames (Linux 4.20+; older kernels
        // report the PACKET_OUTGOING type, which `recv` skips too).
        let one: libc::c_int = 1;
        // SAFETY: `one` is a live c_int of the length given.
        let _ = unsafe {
            libc::setsockopt(
                s.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ETH_P_ALL.to_be();
        sa.sll_ifindex = ifindex;
        // SAFETY: `sa` is a live sockaddr_ll of the length given.
        cvt(unsafe {
            libc::bind(
                s.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        // A NIC port receives frames for MAC addresses the kernel does not own
        // only in promiscuous mode; the VF's own filters decide after that.
        // SAFETY: all-zero is a valid packet_mreq.
        let mut mr: libc::packet_mreq = unsafe { zeroed() };
        mr.mr_ifindex = ifindex;
        mr.mr_type = libc::PACKET_MR_PROMISC as u16;
        // SAFETY: `mr` is a live packet_mreq of the length given.
        cvt(unsafe {
            libc::setsockopt(
                s.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mr as *const libc::packet_mreq).cast(),
                size_of::<libc::packet_mreq>() as libc::socklen_t,
            )
        })?;
        Ok(s)
    }

    /// Send one frame. `Ok(false)` if the socket buffer is full (the frame is
    /// dropped by the caller, as a full wire would).
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<bool> {
        // SAFETY: all-zero is a valid sockaddr_ll.
        let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_ifindex = self.ifindex;
        sa.sll_halen = 6;
        // SAFETY: `frame` and `sa` are live buffers of the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r >= 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOBUFS) => Ok(false),
            _ => Err(e),
        }
    }

    /// Receive one frame into `buf`: `Ok(None)` when nothing is waiting. A frame
    /// longer than `buf` is reported with its full length (the caller drops it).
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
            let mut sl = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: `buf`, `sa` and `sl` are live buffers of the lengths given.
            let r = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (&mut sa as *mut libc::sockaddr_ll).cast(),
                    &mut sl,
                )
            };
            if r >= 0 {
                if sa.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                return Ok(Some(r as usize));
            }
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) => Ok(None),
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
    }
}
