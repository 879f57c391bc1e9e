//! Every unsafe operation of the TAP driver: the TUN/TAP ioctls on
//! `/dev/net/tun` descriptors and the interface ioctls on a control socket.
//! Reads and writes of packets go through `std::fs::File` and need no unsafe.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// The TUN/TAP clone device.
pub(crate) const TUN_PATH: &str = "/dev/net/tun";

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An `ifreq` naming `name`, or EINVAL if it cannot be an interface name.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
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

fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn ioctl_ifreq(fd: RawFd, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request passed here (TUNSETIFF, TUNSETQUEUE, SIOCGIF*,
    // SIOCSIF*) reads and/or writes exactly one `struct ifreq`, which `ifr` is.
    cvt(unsafe { libc::ioctl(fd, req as _, ifr as *mut libc::ifreq) }).map(|_| ())
}

/// Why opening a TAP queue failed: which step, and the OS error.
#[derive(Debug)]
pub(crate) enum TapOpenError {
    /// `open("/dev/net/tun")` failed.
    Open(io::Error),
    /// `ioctl(TUNSETIFF)` failed.
    SetIff(io::Error),
}

/// Open `/dev/net/tun` non-blocking and attach it to TAP interface `name` as
/// one more queue (`IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE`), creating the
/// interface if it does not exist (a name with `%d` lets the kernel number
/// it). With `exclusive`, an existing interface is refused (EBUSY) instead of
/// joined. Returns the descriptor and the interface's name.
pub(crate) fn open_tap_queue(name: &str, exclusive: bool) -> Result<(File, String), TapOpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(TUN_PATH)
        .map_err(TapOpenError::Open)?;
    let mut ifr = ifreq(name).map_err(TapOpenError::SetIff)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    if exclusive {
        flags |= libc::IFF_TUN_EXCL;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    ioctl_ifreq(file.as_raw_fd(), libc::TUNSETIFF as libc::c_ulong, &mut ifr)
        .map_err(TapOpenError::SetIff)?;
    let actual = ifreq_name(&ifr);
    Ok((file, actual))
}

/// Attach (`IFF_ATTACH_QUEUE`) or detach (`IFF_DETACH_QUEUE`) a queue: a
/// detached queue gets no traffic but keeps the interface alive.
pub(crate) fn set_queue_attached(file: &File, attach: bool) -> io::Result<()> {
    // SAFETY: plain old data, all zeroes valid.
    let mut ifr: libc::ifreq = unsafe { zeroed() };
    ifr.ifr_ifru.ifru_flags = if attach {
        libc::IFF_ATTACH_QUEUE
    } else {
        libc::IFF_DETACH_QUEUE
    } as libc::c_short;
    ioctl_ifreq(
        file.as_raw_fd(),
        libc::TUNSETQUEUE as libc::c_ulong,
        &mut ifr,
    )
}

/// An AF_INET datagram socket for interface ioctls (needs no privilege to open).
pub(crate) struct Ctl(OwnedFd);

impl Ctl {
    /// Open the control socket.
    pub fn new() -> io::Result<Ctl> {
        // SAFETY: plain system call with no pointer arguments.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: socket() just returned this descriptor; we own it.
        Ok(Ctl(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// `SIOCGIFFLAGS`.
    pub fn flags(&self, name: &str) -> io::Result<u32> {
        let mut ifr = ifreq(name)?;
        ioctl_ifreq(self.0.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr)?;
        // SAFETY: SIOCGIFFLAGS filled the flags member.
        Ok(unsafe { ifr.ifr_ifru.ifru_flags } as u16 as u32)
    }

    /// Set the flags in `set` and clear those in `clear` (`SIOCSIFFLAGS`).
    pub fn change_flags(&self, name: &str, set: u32, clear: u32) -> io::Result<()> {
        let f = (self.flags(name)? | set) & !clear;
        let mut ifr = ifreq(name)?;
        ifr.ifr_ifru.ifru_flags = f as u16 as libc::c_short;
        ioctl_ifreq(self.0.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr)
    }

    /// `SIOCGIFHWADDR`: the Ethernet address.
    pub fn hwaddr(&self, name: &str) -> io::Result<[u8; 6]> {
        let mut ifr = ifreq(name)?;
        ioctl_ifreq(self.0.as_raw_fd(), libc::SIOCGIFHWADDR, &mut ifr)?;
        // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
        let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *d = *s as u8;
        }
        Ok(mac)
    }

    /// `SIOCSIFHWADDR`: set the Ethernet address.
    pub fn set_hwaddr(&self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        let mut ifr = ifreq(name)?;
        // SAFETY: plain old data, all zeroes valid.
        let mut sa: libc::sockaddr = unsafe { zeroed() };
        sa.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in sa.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_hwaddr = sa;
        ioctl_ifreq(self.0.as_raw_fd(), libc::SIOCSIFHWADDR, &mut ifr)
    }

    /// `SIOCGIFMTU`.
    pub fn mtu(&self, name: &str) -> io::Result<u32> {
        let mut ifr = ifreq(name)?;
        ioctl_ifreq(self.0.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr)?;
        // SAFETY: SIOCGIFMTU filled the mtu member.
        Ok(unsafe { ifr.ifr_ifru.ifru_mtu }.max(0) as u32)
    }
}

/// `size_of::<libc::ifreq>()`, for a layout check.
const _: () = assert!(size_of::<libc::ifreq>() == 40);

/// Test helpers: a raw AF_PACKET socket on an interface, and dropping a
/// capability from the calling thread.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A non-blocking raw socket bound to one interface.
    pub struct RawSocket {
        fd: OwnedFd,
        ifindex: i32,
    }

    impl RawSocket {
        /// Bind to `ifname`, receiving every protocol.
        pub fn open(ifname: &str) -> io::Result<RawSocket> {
            let mut ifr = ifreq(ifname)?;
            // SAFETY: plain system call.
            let fd = cvt(unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                    0,
                )
            })?;
            // SAFETY: we own the new descriptor.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            ioctl_ifreq(fd.as_raw_fd(), libc::SIOCGIFINDEX, &mut ifr)?;
            // SAFETY: SIOCGIFINDEX filled the ifindex member.
            let ifindex = unsafe { ifr.ifr_ifru.ifru_ifindex };
            // SAFETY: plain old data, all zeroes valid.
            let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = 0x0003u16.to_be(); // ETH_P_ALL
            sa.sll_ifindex = ifindex;
            // SAFETY: `sa` is a live sockaddr_ll of the length given.
            cvt(unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            })?;
            Ok(RawSocket { fd, ifindex })
        }

        /// Send one frame out of the interface.
        pub fn send(&self, frame: &[u8]) -> io::Result<()> {
            // SAFETY: plain old data.
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
                    0,
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

        /// Receive one incoming frame (outgoing ones are skipped), waiting up
        /// to `timeout`.
        pub fn recv(&self, buf: &mut [u8], timeout: std::time::Duration) -> Option<usize> {
            let deadline = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < deadline {
                // SAFETY: plain old data.
                let mut sa: libc::sockaddr_ll = unsafe { zeroed() };
                let mut sl = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: `buf`, `sa` and `sl` are live buffers of the lengths given.
                let r = unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut sa as *mut libc::sockaddr_ll).cast(),
                        &mut sl,
                    )
                };
                if r >= 0 {
                    if sa.sll_pkttype == libc::PACKET_OUTGOING {
                        continue;
                    }
                    return Some(r as usize);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            None
        }
    }

    /// Remove `cap` from the calling thread's effective capabilities (Linux
    /// credentials are per thread). The thread should exit afterwards.
    pub fn drop_effective_cap(cap: u32) -> io::Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        cvt(
            // SAFETY: capget writes two Data records for version 3, which `data` holds.
            unsafe { libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) }
                as libc::c_int,
        )?;
        data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        cvt(
            // SAFETY: capset reads the header and two Data records.
            unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) }
                as libc::c_int,
        )?;
        Ok(())
    }
}
