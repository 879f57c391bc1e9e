//! Every unsafe operation of the TAP driver: the TUN/TAP ioctls on
//! `/dev/net/tun` descriptors (the interface ioctls are the core's,
//! `nicpoll::netdev`).
//! Reads and writes of packets go through `std::fs::File` and need no unsafe.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::mem::zeroed;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use nicpoll::netdev;

/// The TUN/TAP clone device.
pub(crate) const TUN_PATH: &str = "/dev/net/tun";

/// `ioctl(fd, req, ifr)` for the TUN/TAP requests, which take one `ifreq`.
fn tun_ioctl(file: &File, req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: TUNSETIFF and TUNSETQUEUE (the only requests passed here) read
    // and write exactly one `struct ifreq`, with the flags member set by the
    // caller.
    unsafe { netdev::ioctl_ifreq(file.as_fd(), req, ifr) }
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
    let mut ifr = netdev::ifreq(name).map_err(TapOpenError::SetIff)?;
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
    if exclusive {
        flags |= libc::IFF_TUN_EXCL;
    }
    ifr.ifr_ifru.ifru_flags = flags as libc::c_short;
    tun_ioctl(&file, libc::TUNSETIFF as libc::c_ulong, &mut ifr).map_err(TapOpenError::SetIff)?;
    let actual = netdev::ifreq_name(&ifr);
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
    tun_ioctl(file, libc::TUNSETQUEUE as libc::c_ulong, &mut ifr)
}
