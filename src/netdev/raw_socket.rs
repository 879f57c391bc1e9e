//! [`RawSocket`]: an AF_PACKET socket on one interface that sends and
//! receives whole frames, one system call each: a received frame's VLAN tag,
//! which the kernel takes out of the data, is put back where it was on the
//! wire. Not a fast path (net_af_packet
//! has its rings for that): a far end for tests, and the simulated VF's wire.
#![deny(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

use super::{ETH_P_ALL, sys};

/// A non-blocking raw socket bound to one interface, receiving every protocol.
/// Opening needs CAP_NET_RAW (EPERM otherwise).
#[derive(Debug)]
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: u32,
}

/// One frame [`RawSocket::try_recv`] read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    /// The frame's whole length; more than the buffer held if it was cut.
    pub len: usize,
    /// The interface sent it (`PACKET_OUTGOING`) rather than received it.
    pub outgoing: bool,
}

/// One frame [`RawSocket::recv_frame`] read, whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's bytes.
    pub data: Vec<u8>,
    /// The interface sent it (`PACKET_OUTGOING`) rather than received it.
    pub outgoing: bool,
}

/// How long [`RawSocket::send`] waits for room in a full socket buffer.
const SEND_PATIENCE: Duration = Duration::from_secs(1);

/// Above any frame an interface of ours carries (jumbo frames included).
const MAX_FRAME: usize = 16384;

impl RawSocket {
    /// A socket on interface `ifname`.
    pub fn open(ifname: &str) -> io::Result<RawSocket> {
        // Protocol 0 until bound: a packet socket opened for ETH_P_ALL takes
        // frames from every interface from socket(2) on, and those queued
        // before bind(2) would be read as this interface's (packet(7)).
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::RAW,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        let ifindex = rustix::net::netdevice::name_to_index(&fd, ifname)?;
        // The kernel moves a received frame's VLAN tag out of the data
        // (skb_vlan_untag); PACKET_AUXDATA hands it back with the frame.
        sys::enable_auxdata(fd.as_fd())?;
        sys::bind_link(fd.as_fd(), ifindex, ETH_P_ALL)?;
        Ok(RawSocket { fd, ifindex })
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Put the interface in promiscuous mode for as long as the socket is
    /// open (a `PACKET_MR_PROMISC` membership, which the kernel counts and
    /// drops with the socket), so frames for other MAC addresses arrive too.
    pub fn set_promiscuous(&self) -> io::Result<()> {
        sys::add_promisc_membership(self.fd.as_fd(), self.ifindex)
    }

    /// See only frames arriving at the interface, not the ones it sends
    /// (`PACKET_IGNORE_OUTGOING`, Linux 4.20+; on older kernels the receive
    /// calls tell them apart by [`Received::outgoing`]).
    pub fn ignore_outgoing(&self) -> io::Result<()> {
        sys::ignore_outgoing(self.fd.as_fd())
    }

    /// Wait up to `timeout` for a frame to arrive (`poll(2)`, asleep in the
    /// kernel meanwhile): whether one is waiting. An interrupted wait returns
    /// `Ok(false)`.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        let mut fds = [rustix::event::PollFd::new(
            &self.fd,
            rustix::event::PollFlags::IN,
        )];
        let t = rustix::time::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&t)) {
            Ok(n) => Ok(n > 0),
            Err(rustix::io::Errno::INTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Send one frame: `Ok(false)` if the socket buffer is full (EAGAIN,
    /// ENOBUFS), as a full wire drops it.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<bool> {
        match sys::send_link(self.fd.as_fd(), self.ifindex, frame) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::ENOBUFS)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Send one frame, waiting (up to a second) for room in a full socket
    /// buffer.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + SEND_PATIENCE;
        loop {
            if self.try_send(frame)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
            }
            std::thread::yield_now();
        }
    }

    /// Receive one frame into `buf` if one is waiting (`Ok(None)` if not), as
    /// it was on the wire: a VLAN tag the kernel took out goes back after the
    /// MAC addresses (counted in the length).
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        loop {
            return match sys::recv_link(self.fd.as_fd(), buf) {
                Ok((len, kind, tag)) => Ok(Some(Received {
                    len: match tag {
                        Some(t) => reinsert_tag(buf, len, t),
                        None => len,
                    },
                    outgoing: kind == libc::PACKET_OUTGOING,
                })),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(None),
                    Some(libc::EINTR) => continue,
                    _ => Err(e),
                },
            };
        }
    }

    /// Receive one frame arriving at the interface (the ones it sends are
    /// skipped) into `buf`, waiting up to `timeout`: the bytes written.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.try_recv(buf) {
                Ok(Some(r)) if !r.outgoing => return Some(r.len.min(buf.len())),
                Ok(Some(_)) => continue,
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        None
    }

    /// Receive one frame seen on the interface, either direction, waiting up
    /// to `timeout` (`Ok(None)` after it).
    pub fn recv_frame(&self, timeout: Duration) -> io::Result<Option<Frame>> {
        let mut buf = vec![0u8; MAX_FRAME];
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.try_recv(&mut buf)? {
                buf.truncate(r.len.min(MAX_FRAME));
                return Ok(Some(Frame {
                    data: buf,
                    outgoing: r.outgoing,
                }));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Put the 4-byte VLAN tag `(tci, tpid)` back after the MAC addresses of the
/// `len`-byte frame in `buf` (bytes pushed off the end of `buf` are cut, as a
/// frame longer than the buffer is); returns the frame's length with it.
fn reinsert_tag(buf: &mut [u8], len: usize, (tci, tpid): sys::VlanTag) -> usize {
    const MACS: usize = 12;
    if len < MACS || buf.len() < MACS + 4 {
        return len + 4;
    }
    let kept = len.min(buf.len() - 4);
    buf.copy_within(MACS..kept, MACS + 4);
    buf[MACS..MACS + 2].copy_from_slice(&tpid.to_be_bytes());
    buf[MACS + 2..MACS + 4].copy_from_slice(&tci.to_be_bytes());
    len + 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A frame sent on the loopback interface is seen by another socket
    /// leaving (outgoing) and arriving: the kernel's own delivery, told apart
    /// by the packet type. (The kernel does not show a socket the copy of its
    /// own frames leaving.)
    #[test]
    fn a_frame_sent_on_loopback_is_seen_leaving_and_arriving() {
        if let Err(e) = nicpoll_testkit::raw_socket_permission() {
            nicpoll_testkit::skip(format!(
                "AF_PACKET sockets need CAP_NET_RAW (run as root): {e}"
            ));
            return;
        }
        let s = RawSocket::open("lo").unwrap();
        let watch = RawSocket::open("lo").unwrap();
        assert_eq!(s.ifindex(), super::super::if_index("lo").unwrap());
        // To lo's all-zero address, IEEE 802 local experimental ethertype,
        // tagged so other traffic on lo is told apart.
        let tag = (std::process::id() as u64) << 32 | u64::from(line!());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.extend_from_slice(&tag.to_be_bytes());
        frame.resize(60, 0xa5);
        s.send(&frame).unwrap();
        let (mut left, mut arrived) = (false, false);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(left && arrived) && Instant::now() < deadline {
            if let Some(f) = watch.recv_frame(Duration::from_millis(100)).unwrap()
                && f.data == frame
            {
                left |= f.outgoing;
                arrived |= !f.outgoing;
            }
        }
        assert!(left && arrived, "left {left}, arrived {arrived}");
        // `recv` takes only arriving frames, cut to the buffer.
        assert!(s.try_send(&frame).unwrap());
        let mut small = [0u8; 20];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = s.recv(&mut small, Duration::from_millis(100));
            if n == Some(20) && small[14..20] == frame[14..20] {
                break;
            }
            assert!(Instant::now() < deadline, "our frame did not arrive");
        }
        assert!(RawSocket::open("nicpoll-none0").is_err());
    }

    /// A veth pair `<a>`/`<b>`, up with IPv6 off (so the kernel sends nothing
    /// on it), deleted when dropped; its name locked host-wide meanwhile.
    struct Veth {
        a: &'static str,
        _lock: nicpoll_testkit::NameLock,
    }

    impl Veth {
        fn create(a: &'static str, b: &'static str) -> Veth {
            let _lock = nicpoll_testkit::lock_name(a);
            let ip = |args: &[&str]| {
                std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run ip(8) {args:?}: {e}"))
            };
            let _ = ip(&["link", "del", a]);
            let o = ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
            assert!(
                o.status.success(),
                "ip link add {a}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let pair = Veth { a, _lock };
            for end in [a, b] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6"), "1");
                let o = ip(&["link", "set", end, "up"]);
                assert!(
                    o.status.success(),
                    "ip link set {end} up: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            pair
        }
    }

    impl Drop for Veth {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", self.a])
                .output();
        }
    }

    /// A socket opened on a quiet interface while another one is busy holds
    /// no frame of the busy one: it takes frames only once bound. (Opened for
    /// ETH_P_ALL, it would queue every interface's frames until bind(2) and
    /// hand them out as its own; this made an af_packet test fail in CI.)
    #[test]
    fn a_new_socket_holds_no_frame_of_another_interface() {
        if nicpoll_testkit::skip_if_missing(&nicpoll_testkit::VETH) {
            return;
        }
        let quiet = Veth::create("nprawquieta", "nprawquietb");
        let busy = Veth::create("nprawbusya", "nprawbusyb");
        let stop = AtomicBool::new(false);
        let (opened, foreign) = std::thread::scope(|s| {
            s.spawn(|| {
                let sender = RawSocket::open(busy.a).unwrap();
                let mut frame = vec![0xffu8; 12];
                frame.extend_from_slice(&[0x88, 0xb5]);
                frame.resize(60, 0x5a);
                while !stop.load(Ordering::Relaxed) {
                    let _ = sender.try_send(&frame);
                }
            });
            let (mut opened, mut foreign) = (0u32, 0u32);
            let mut buf = [0u8; 128];
            // Closing a packet socket waits out an RCU grace period, so
            // openings come at tens a second, not thousands.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && opened < 200 && foreign == 0 {
                let s = RawSocket::open(quiet.a).unwrap();
                opened += 1;
                while s.try_recv(&mut buf).unwrap().is_some() {
                    foreign += 1;
                }
            }
            stop.store(true, Ordering::Relaxed);
            (opened, foreign)
        });
        assert_eq!(
            foreign, 0,
            "{foreign} frames of {} in socket {opened} bound to {}",
            busy.a, quiet.a
        );
        assert!(opened >= 10, "only {opened} sockets opened in 2 s");
    }

    #[test]
    fn a_tag_goes_back_after_the_mac_addresses() {
        let mut buf = [0u8; 24];
        let frame: Vec<u8> = (0..18).collect();
        buf[..18].copy_from_slice(&frame);
        assert_eq!(reinsert_tag(&mut buf, 18, (0x2064, 0x8100)), 22);
        assert_eq!(&buf[..12], &frame[..12]);
        assert_eq!(&buf[12..16], &[0x81, 0x00, 0x20, 0x64]);
        assert_eq!(&buf[16..22], &frame[12..18]);
        // Longer than the buffer: cut, the whole length reported.
        let mut small = [0u8; 16];
        small.copy_from_slice(&frame[..16]);
        assert_eq!(reinsert_tag(&mut small, 30, (7, 0x88a8)), 34);
        assert_eq!(&small[12..16], &[0x88, 0xa8, 0x00, 0x07]);
    }
}
