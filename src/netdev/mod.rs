//! Kernel network interfaces, for the drivers that use them (net_af_packet,
//! net_af_xdp, net_tap, the simulated iavf VF's wire) and their tests: one
//! copy of what each used to carry.
//!
//! - [`Netdev`]: the interface ioctls (index, flags, hardware address, MTU)
//!   on a control socket that needs no privilege to open;
//! - [`RawSocket`]: an AF_PACKET socket on one interface that sends and
//!   receives whole frames, one system call each (a far end in tests, the
//!   simulated VF's wire);
//! - [`netlink`]: netlink requests (building, sending on a socket of any
//!   netlink family, reading replies, dumps, acknowledgements and the
//!   kernel's extended-ack text), with link and neighbour (FDB) headers;
//! - [`ifreq`], [`ifreq_name`] and [`ioctl_ifreq`] for a driver's own
//!   `ifreq` ioctls (net_tap's `TUNSETIFF`).
//!
//! rustix's safe calls are used where it has them (interface index, socket
//! creation, socket timeouts, netlink addresses); the rest is in `sys`, the
//! module's only unsafe code (see docs/DECISIONS.md).
#![deny(unsafe_code)]

pub mod netlink;
mod raw_socket;
mod sys;

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

pub use raw_socket::{Frame, RawSocket, Received};
pub use sys::{ifreq, ifreq_name, ioctl_ifreq};

/// `ETH_P_ALL`: every protocol.
pub const ETH_P_ALL: u16 = 0x0003;

/// A control socket for interface ioctls (`AF_INET`, `SOCK_DGRAM`: any socket
/// serves, and this one needs no privilege), as `ip link` and glibc use.
#[derive(Debug)]
pub struct Netdev(OwnedFd);

impl Netdev {
    /// Open the control socket.
    pub fn open() -> io::Result<Netdev> {
        let fd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC,
            None,
        )?;
        Ok(Netdev(fd))
    }

    /// `SIOCGIFINDEX`: the index of interface `name` (ENODEV if there is none).
    pub fn index(&self, name: &str) -> io::Result<u32> {
        Ok(rustix::net::netdevice::name_to_index(&self.0, name)?)
    }

    /// `SIOCGIFFLAGS`: the interface flags (`IFF_UP`, `IFF_PROMISC`, ...).
    pub fn flags(&self, name: &str) -> io::Result<u32> {
        sys::get_flags(self.0.as_fd(), name)
    }

    /// Set the flags in `set` and clear those in `clear` (`SIOCGIFFLAGS`, then
    /// `SIOCSIFFLAGS`). Needs CAP_NET_ADMIN.
    pub fn change_flags(&self, name: &str, set: u32, clear: u32) -> io::Result<()> {
        let f = (self.flags(name)? | set) & !clear;
        sys::set_flags(self.0.as_fd(), name, f)
    }

    /// `SIOCGIFHWADDR`: the hardware type (`ARPHRD_ETHER` for Ethernet) and
    /// the first six bytes of the address.
    pub fn hwaddr(&self, name: &str) -> io::Result<(u16, [u8; 6])> {
        sys::get_hwaddr(self.0.as_fd(), name)
    }

    /// `SIOCSIFHWADDR`: set the Ethernet address. Needs CAP_NET_ADMIN.
    pub fn set_hwaddr(&self, name: &str, mac: [u8; 6]) -> io::Result<()> {
        sys::set_hwaddr(self.0.as_fd(), name, mac)
    }

    /// `SIOCGIFMTU`: the interface MTU.
    pub fn mtu(&self, name: &str) -> io::Result<u32> {
        sys::get_mtu(self.0.as_fd(), name)
    }

    /// `SIOCSIFMTU`: set the interface MTU. Needs CAP_NET_ADMIN.
    pub fn set_mtu(&self, name: &str, mtu: u32) -> io::Result<()> {
        sys::set_mtu(self.0.as_fd(), name, mtu)
    }
}

/// The index of interface `name`, or the OS error (ENODEV if there is none),
/// as `if_nametoindex(3)`.
pub fn if_index(name: &str) -> io::Result<u32> {
    Netdev::open()?.index(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_interface_reads_back() {
        let n = Netdev::open().unwrap();
        let lo = n.index("lo").unwrap();
        assert_eq!(if_index("lo").unwrap(), lo);
        // The kernel's own view: /sys/class/net/lo/{ifindex,mtu,flags}.
        let sys = |f: &str| std::fs::read_to_string(format!("/sys/class/net/lo/{f}")).unwrap();
        assert_eq!(sys("ifindex").trim().parse::<u32>().unwrap(), lo);
        assert_eq!(
            sys("mtu").trim().parse::<u32>().unwrap(),
            n.mtu("lo").unwrap()
        );
        let flags = u32::from_str_radix(sys("flags").trim().trim_start_matches("0x"), 16).unwrap();
        // sysfs shows `dev->flags`; the ioctl adds the operational state
        // (IFF_RUNNING), as Linux's dev_get_flags() does.
        let ours = n.flags("lo").unwrap();
        assert_eq!(ours & !(libc::IFF_RUNNING as u32), flags);
        assert_ne!(ours & libc::IFF_UP as u32, 0);
        assert_eq!(n.hwaddr("lo").unwrap(), (libc::ARPHRD_LOOPBACK, [0; 6]));
    }

    #[test]
    fn bad_names_are_errors_not_panics() {
        let n = Netdev::open().unwrap();
        for bad in ["", "a-name-longer-than-ifnamsiz", "nul\0", "nicpoll-none0"] {
            assert!(n.index(bad).is_err(), "{bad:?}");
            assert!(n.flags(bad).is_err(), "{bad:?}");
            assert!(n.mtu(bad).is_err(), "{bad:?}");
            assert!(n.hwaddr(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            n.mtu("nicpoll-none0").unwrap_err().raw_os_error(),
            Some(libc::ENODEV)
        );
        let ifr = ifreq("eth7").unwrap();
        assert_eq!(ifreq_name(&ifr), "eth7");
        assert_eq!(
            ifreq("0123456789abcdef").unwrap_err().raw_os_error(),
            Some(libc::EINVAL),
            "IFNAMSIZ (16) bytes leave no room for the NUL"
        );
    }
}
