//! The XDP program of a port: the XSKMAP, the redirect program named
//! [`PROG_NAME`], and the BPF link that attaches it, plus the policy for an
//! interface that already carries a program.
//!
//! - Nothing attached: attach ours.
//! - Ours (by name) attached through netlink, i.e. not held by a link: a
//!   leftover of an older run; it is removed with `IFLA_XDP_EXPECTED_FD`, so only
//!   that very program goes. (Ours is always attached through a link, which the
//!   kernel detaches when its last descriptor closes, crash or SIGKILL included,
//!   so a leftover of ours can only come from an older build or a manual attach.)
//! - Ours held by a live BPF link: another nicpoll port (this process or another)
//!   is using the interface: refuse.
//! - Anything else: refuse, naming the program, and change nothing.
#![deny(unsafe_code)]

use std::ffi::CStr;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::bpf;
use crate::netlink::{self, AttachMode};

/// The name our program carries in the kernel (`ip link` shows it).
pub const PROG_NAME: &str = "nicpoll_xsk";
const MAP_NAME: &str = "nicpoll_xsks";
/// How long a live link to our program may take to go away (the last
/// reference to a closed link can be a forked child that has not exec'd yet).
const LIVE_LINK_WAIT: Duration = Duration::from_secs(1);
/// bpf_redirect_map is not a GPL-only helper, so the program carries the
/// crate's own licence.
const LICENSE: &CStr = c"MIT OR Apache-2.0";

/// What to ask for: the `xdp_mode=` device argument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native if the driver has it, else generic (the kernel decides).
    #[default]
    Auto,
    /// Generic (skb) XDP: works on every interface, always copy mode.
    Skb,
    /// Native (driver) XDP; refused where the driver has none.
    Native,
}

impl XdpMode {
    /// Parse `skb|generic`, `native|drv`, `auto`.
    pub fn parse(s: &str) -> Option<XdpMode> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(XdpMode::Auto),
            "skb" | "generic" => Some(XdpMode::Skb),
            "native" | "drv" | "driver" => Some(XdpMode::Native),
            _ => None,
        }
    }

    fn link_flags(self) -> u32 {
        match self {
            XdpMode::Auto => 0,
            XdpMode::Skb => netlink::XDP_FLAGS_SKB_MODE,
            XdpMode::Native => netlink::XDP_FLAGS_DRV_MODE,
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Skb => "skb",
            XdpMode::Native => "native",
        })
    }
}

/// What running AF_XDP needs, for error messages.
pub(crate) const PERM_HINT: &str = "AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF (CAP_SYS_ADMIN on \
     kernels before 5.8), and CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK for the UMEM: run as root, \
     or give the pod securityContext.capabilities.add: [\"NET_ADMIN\", \"NET_RAW\", \"BPF\", \"IPC_LOCK\"] \
     (\"SYS_ADMIN\" instead of \"BPF\" where the runtime does not know it)";

fn is_perm(e: &io::Error) -> bool {
    matches!(netlink::errno(e), Some(libc::EPERM) | Some(libc::EACCES))
}

/// Our program attached to an interface. Dropping it closes the link first,
/// which detaches the program; the program and the map go with their last fd.
pub(crate) struct XdpAttachment {
    link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    /// The kernel id of our program.
    pub(crate) prog_id: u32,
    /// The mode the kernel attached it in.
    pub(crate) mode: AttachMode,
    /// The program is multi-buffer aware (`BPF_F_XDP_HAS_FRAGS`): frames in
    /// several buffers reach it, and can go to a socket bound with XDP_USE_SG.
    pub(crate) frags: bool,
}

impl fmt::Debug for XdpAttachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpAttachment")
            .field("link_fd", &self.link.as_raw_fd())
            .field("prog_id", &self.prog_id)
            .field("mode", &self.mode)
            .finish()
    }
}

impl XdpAttachment {
    /// Point interface queue `queue` at socket `fd`.
    pub(crate) fn insert(&self, queue: u32, fd: i32) -> io::Result<()> {
        bpf::map_update_u32(&self.map, queue, fd as u32)
    }

    /// Empty interface queue `queue`'s slot (its traffic goes to the kernel stack).
    pub(crate) fn remove(&self, queue: u32) -> io::Result<()> {
        bpf::map_delete_u32(&self.map, queue)
    }
}

/// The BPF link holding an XDP program on `ifindex`, if any.
fn xdp_link_on(ifindex: u32, prog_id: u32) -> io::Result<Option<u32>> {
    let mut id = 0;
    while let Some(next) = bpf::link_next_id(id)? {
        id = next;
        let fd = match bpf::link_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let info = bpf::link_info(&fd)?;
        if info.link_type == bpf::BPF_LINK_TYPE_XDP
            && info.ifindex == ifindex
            && info.prog_id == prog_id
        {
            return Ok(Some(info.id));
        }
    }
    Ok(None)
}

/// Why an interface cannot be taken.
enum Refusal {
    /// Our program, held by a live link or vanishing while we look: maybe a
    /// link closed a moment ago (a forked child may hold it until it execs, and
    /// the kernel unlists a closing link before it detaches the program).
    Transient(String),
    Other(String),
}

impl From<String> for Refusal {
    fn from(s: String) -> Refusal {
        Refusal::Other(s)
    }
}

/// Look at what `ifname` carries; remove a stale program of ours or refuse.
/// A live link to our program is given a moment to go away.
fn clear_or_refuse(ifname: &str, ifindex: u32) -> Result<(), String> {
    let deadline = Instant::now() + LIVE_LINK_WAIT;
    loop {
        match try_clear(ifname, ifindex) {
            Ok(()) => return Ok(()),
            Err(Refusal::Transient(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Refusal::Transient(m) | Refusal::Other(m)) => return Err(m),
        }
    }
}

/// One look: nothing is changed unless every attached program is a removable
/// one of ours.
fn try_clear(ifname: &str, ifindex: u32) -> Result<(), Refusal> {
    let state = netlink::link_xdp(ifindex).map_err(|e| {
        format!("cannot read the XDP state of {ifname} (rtnetlink RTM_GETLINK): {e}")
    })?;
    let mut stale = Vec::new();
    for &(mode, id) in &state.progs {
        let fd = match bpf::prog_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) if is_perm(&e) => {
                return Err(Refusal::Other(format!(
                    "{ifname} carries XDP program id {id} and it cannot be inspected ({e}); {PERM_HINT}"
                )));
            }
            Err(e) => {
                return Err(Refusal::Other(format!(
                    "inspecting XDP program id {id} on {ifname}: {e}"
                )));
            }
        };
        let info = bpf::prog_info(&fd)
            .map_err(|e| format!("inspecting XDP program id {id} on {ifname}: {e}"))?;
        let link = xdp_link_on(ifindex, id)
            .map_err(|e| format!("listing BPF links to see who holds program id {id}: {e}"))?;
        if info.name != PROG_NAME {
            let how = match link {
                Some(l) => format!(
                    "it is held by BPF link id {l}, so a running process (or a pinned link) owns it: \
                     stop that process, or `bpftool link detach id {l}`"
                ),
                None => format!(
                    "it was attached through netlink: remove it with `ip link set dev {ifname} {} off` \
                     if nothing needs it",
                    match mode {
                        AttachMode::Native => "xdpdrv",
                        AttachMode::Generic => "xdpgeneric",
                        AttachMode::Offload => "xdpoffload",
                    }
                ),
            };
            return Err(Refusal::Other(format!(
                "{ifname} already carries an XDP program that is not nicpoll's: id {id}, name {:?}, \
                 {} mode; it is left untouched. {how}; or use another interface",
                info.name,
                mode.name()
            )));
        }
        if let Some(l) = link {
            return Err(Refusal::Transient(format!(
                "{ifname} already carries nicpoll's XDP program (id {id}) through live BPF link id {l}: \
                 another net_af_xdp port, in this process or another one, uses the interface. Use one \
                 port with queue_count= covering all queues, or stop the other process"
            )));
        }
        stale.push((mode, id, fd));
    }
    for (mode, id, fd) in stale {
        netlink::detach_xdp(ifindex, mode, fd.as_raw_fd()).map_err(|e| {
            let hint = if is_perm(&e) { PERM_HINT } else { "" };
            let msg = format!(
                "removing the stale nicpoll XDP program id {id} from {ifname} failed: {e}. {hint}"
            );
            match netlink::errno(&e) {
                // Gone or replaced meanwhile (EEXIST: "does not match expected"),
                // or held by a link after all (EBUSY): look again.
                Some(libc::EEXIST) | Some(libc::EBUSY) | Some(libc::ENOENT) => {
                    Refusal::Transient(msg)
                }
                _ => Refusal::Other(msg),
            }
        })?;
        log::warn!(
            "{ifname}: removed a stale nicpoll XDP program (id {id}, {} mode) left attached by an \
             earlier run",
            mode.name()
        );
    }
    Ok(())
}

/// Attach our program to `ifname` with an XSKMAP of `entries` slots (interface
/// queue index → socket).
pub(crate) fn attach(
    ifname: &str,
    ifindex: u32,
    mode: XdpMode,
    entries: u32,
) -> Result<XdpAttachment, String> {
    clear_or_refuse(ifname, ifindex)?;
    let map = bpf::create_xskmap(MAP_NAME, entries).map_err(|e| {
        if is_perm(&e) {
            format!("creating the XSKMAP: {e}; {PERM_HINT}")
        } else {
            format!("creating the XSKMAP ({entries} entries): {e}")
        }
    })?;
    // Multi-buffer aware where the kernel knows the flag (5.18): without it
    // a driver refuses native XDP above about a page of MTU (veth: "Peer MTU
    // is too large to set XDP") and jumbo frames cannot reach the socket.
    let insns = bpf::redirect_program(map.as_raw_fd());
    let (prog, frags) = match bpf::load_xdp(PROG_NAME, &insns, LICENSE, bpf::BPF_F_XDP_HAS_FRAGS) {
        Ok(p) => (Ok(p), true),
        Err(e) if e.source.raw_os_error() == Some(libc::EINVAL) => {
            (bpf::load_xdp(PROG_NAME, &insns, LICENSE, 0), false)
        }
        Err(e) => (Err(e), true),
    };
    let prog = prog.map_err(|e| {
        if is_perm(&e.source) {
            format!("loading the XDP program: {}; {PERM_HINT}", e.source)
        } else {
            format!(
                "loading the XDP program: {}; verifier log:\n{}",
                e.source,
                if e.log.is_empty() { "(empty)" } else { &e.log }
            )
        }
    })?;
    let link = bpf::link_create_xdp(&prog, ifindex, mode.link_flags()).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => PERM_HINT.to_string(),
            Some(libc::EOPNOTSUPP) => format!(
                "the driver of {ifname} has no native XDP: use xdp_mode=skb (or auto)"
            ),
            Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
                "another XDP program was attached to {ifname} meanwhile (`ip -d link show {ifname}`)"
            ),
            Some(libc::EINVAL) | Some(libc::ERANGE) => format!(
                "the driver refused the program in {mode} mode; a common cause is an MTU too large \
                 for native XDP (see `ip -d link show {ifname}`, lower the MTU) — or use xdp_mode=skb"
            ),
            Some(libc::ENODEV) => format!("{ifname} has disappeared"),
            _ => "BPF links for XDP need Linux 5.9 or later".to_string(),
        };
        format!("attaching the XDP program to {ifname} ({mode} mode): {e}; {hint}")
    })?;
    let prog_id = bpf::prog_info(&prog)
        .map(|i| i.id)
        .map_err(|e| format!("reading back our XDP program's id: {e}"))?;
    let actual = netlink::link_xdp(ifindex)
        .ok()
        .and_then(|s| s.progs.iter().find(|p| p.1 == prog_id).map(|p| p.0))
        .unwrap_or(match mode {
            XdpMode::Skb => AttachMode::Generic,
            _ => AttachMode::Native,
        });
    Ok(XdpAttachment {
        link,
        _prog: prog,
        map,
        prog_id,
        mode: actual,
        frags,
    })
}

/// Load a program for tests: `name` with the XDP_PASS body, or ours.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A minimal XDP_PASS program called `name`.
    pub(crate) fn load_pass(name: &str) -> OwnedFd {
        bpf::load_xdp(name, &bpf::pass_program(), LICENSE, 0)
            .unwrap_or_else(|e| panic!("load {name}: {} {}", e.source, e.log))
    }

    /// Our redirect program with its own (empty) XSKMAP, as an older run left it.
    pub(crate) fn load_ours() -> OwnedFd {
        let map = bpf::create_xskmap(MAP_NAME, 1).expect("xskmap");
        bpf::load_xdp(
            PROG_NAME,
            &bpf::redirect_program(map.as_raw_fd()),
            LICENSE,
            0,
        )
        .unwrap_or_else(|e| panic!("load ours: {} {}", e.source, e.log))
    }

    /// Attach through a link the caller keeps.
    pub(crate) fn attach_link(prog: &OwnedFd, ifindex: u32, mode: XdpMode) -> OwnedFd {
        bpf::link_create_xdp(prog, ifindex, mode.link_flags()).expect("link create")
    }

    /// The id of the program behind `fd`.
    pub(crate) fn prog_id(fd: &OwnedFd) -> u32 {
        bpf::prog_info(fd).expect("prog info").id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(XdpMode::parse("SKB"), Some(XdpMode::Skb));
        assert_eq!(XdpMode::parse("generic"), Some(XdpMode::Skb));
        assert_eq!(XdpMode::parse("native"), Some(XdpMode::Native));
        assert_eq!(XdpMode::parse("drv"), Some(XdpMode::Native));
        assert_eq!(XdpMode::parse("auto"), Some(XdpMode::Auto));
        assert_eq!(XdpMode::parse("hw"), None);
        assert!(PROG_NAME.len() < bpf::OBJ_NAME_LEN);
    }
}
