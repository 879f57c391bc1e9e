//! `net_memifN` device arguments, with DPDK's names and defaults
//! (rte_eth_memif.c v24.11, rte_pmd_memif_probe and its `memif_set_*` helpers;
//! defaults in rte_eth_memif.h:16-18).
#![deny(unsafe_code)]

use std::fmt;

use nicpoll::port::{DevArgs, MacAddr};
use nicpoll::{Error, Result};

use crate::proto::{MAX_LOG2_RING_SIZE, SECRET_SIZE};

/// Accepted keys (DPDK 24.11's list; owner-uid/owner-gid are new in 24.11).
pub const KEYS: &[&str] = &[
    "id",
    "role",
    "bsize",
    "rsize",
    "socket",
    "socket-abstract",
    "owner-uid",
    "owner-gid",
    "mac",
    "zero-copy",
    "secret",
];

/// `ETH_MEMIF_DEFAULT_SOCKET_FILENAME`.
pub const DEFAULT_SOCKET: &str = "/run/memif.sock";
/// `ETH_MEMIF_DEFAULT_PKT_BUFFER_SIZE`.
pub const DEFAULT_BSIZE: u16 = 2048;
/// `ETH_MEMIF_DEFAULT_RING_SIZE` (log2: 1024 slots).
pub const DEFAULT_RSIZE: u8 = 10;
/// Longest unix socket path (`sun_path` holds 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Which end of the connection a port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Listens on the socket; maps the client's memory.
    Server,
    /// Connects to the socket; owns the shared memory. DPDK's default.
    Client,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Client => "client",
        })
    }
}

/// The control socket's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SocketSpec {
    /// The path (or, for an abstract socket, the name after the NUL byte).
    pub path: String,
    /// In Linux's abstract namespace (no file; per network namespace).
    pub abstract_ns: bool,
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.abstract_ns {
            write!(f, "@{} (abstract)", self.path)
        } else {
            f.write_str(&self.path)
        }
    }
}

/// The options of a memif port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifOptions {
    /// `role=server|client` (DPDK's deprecated master/slave too); default client.
    pub role: Role,
    /// `id=`: the interface id that pairs a client with a server on one socket; default 0.
    pub id: u32,
    /// `socket=` and `socket-abstract=yes|no` (DPDK's default is abstract).
    pub socket: SocketSpec,
    /// `owner-uid=`: owner to give the server's socket file.
    pub owner_uid: Option<u32>,
    /// `owner-gid=`: group to give the server's socket file.
    pub owner_gid: Option<u32>,
    /// `bsize=`: bytes per shared buffer (client); default 2048.
    pub bsize: u16,
    /// `rsize=`: log2 of the slots per ring (client); default 10.
    pub rsize: u8,
    /// `mac=`: the port's address; default derived from the port id.
    pub mac: Option<MacAddr>,
    /// `secret=`: up to 23 bytes the server checks; default none.
    pub secret: String,
    /// `zero-copy=yes|no` (client): share the mempool's memory instead of copying.
    pub zero_copy: bool,
}

impl Default for MemifOptions {
    fn default() -> Self {
        MemifOptions {
            role: Role::Client,
            id: 0,
            socket: SocketSpec {
                path: DEFAULT_SOCKET.to_string(),
                abstract_ns: true,
            },
            owner_uid: None,
            owner_gid: None,
            bsize: DEFAULT_BSIZE,
            rsize: DEFAULT_RSIZE,
            mac: None,
            secret: String::new(),
            zero_copy: false,
        }
    }
}

/// yes/no as DPDK spells it, and the usual boolean spellings.
fn yes_no(args: &DevArgs, key: &str) -> Result<Option<bool>> {
    let Some(v) = args.get(key) else {
        return Ok(None);
    };
    match v.to_ascii_lowercase().as_str() {
        "yes" | "y" | "1" | "true" | "on" => Ok(Some(true)),
        "no" | "n" | "0" | "false" | "off" => Ok(Some(false)),
        _ => Err(Error::DevArgs {
            device: args.spec.clone(),
            reason: format!("{key}={v:?} is neither yes nor no"),
        }),
    }
}

impl MemifOptions {
    /// Read the options from `net_memifN,key=value,...`.
    pub fn from_devargs(args: &DevArgs) -> Result<MemifOptions> {
        args.check_keys(KEYS)?;
        let bad = |reason: String| Error::DevArgs {
            device: args.spec.clone(),
            reason,
        };
        let d = MemifOptions::default();
        let role = match args.get("role").map(|r| r.to_ascii_lowercase()) {
            None => d.role,
            Some(r) if r == "server" || r == "master" => Role::Server,
            Some(r) if r == "client" || r == "slave" => Role::Client,
            Some(r) => return Err(bad(format!("role={r:?} is not server or client"))),
        };
        let id = args
            .get_u64("id", 0..=u64::from(u32::MAX))?
            .map(|v| v as u32)
            .unwrap_or(d.id);
        let bsize = args
            .get_u64("bsize", 1..=0xffff)?
            .map(|v| v as u16)
            .unwrap_or(d.bsize);
        let rsize = args
            .get_u64("rsize", 1..=u64::from(MAX_LOG2_RING_SIZE))?
            .map(|v| v as u8)
            .unwrap_or(d.rsize);
        let abstract_ns = yes_no(args, "socket-abstract")?.unwrap_or(d.socket.abstract_ns);
        let path = args.get("socket").unwrap_or(DEFAULT_SOCKET).to_string();
        if path.is_empty() {
            return Err(bad(
                "socket= needs a path, e.g. socket=/run/memif.sock".into()
            ));
        }
        if path.len() > MAX_SOCKET_PATH - usize::from(abstract_ns) {
            return Err(bad(format!(
                "socket={path:?} is {} bytes; a unix socket address holds at most {} \
                 (use a shorter path)",
                path.len(),
                MAX_SOCKET_PATH - usize::from(abstract_ns)
            )));
        }
        if path.contains('\0') {
            return Err(bad("socket= must not contain a NUL byte".into()));
        }
        let owner = |key: &str| -> Result<Option<u32>> {
            Ok(args
                .get_u64(key, 0..=u64::from(u32::MAX - 1))?
                .map(|v| v as u32))
        };
        let mac = match args.get("mac") {
            None => None,
            Some(m) => Some(
                m.parse::<MacAddr>()
                    .map_err(|e| bad(format!("mac=: {e}")))?,
            ),
        };
        let secret = args.get("secret").unwrap_or("").to_string();
        if secret.len() >= SECRET_SIZE {
            return Err(bad(format!(
                "secret= is {} bytes; memif carries at most {} (DPDK would cut it silently, \
                 so the peers might not agree)",
                secret.len(),
                SECRET_SIZE - 1
            )));
        }
        let zero_copy = yes_no(args, "zero-copy")?.unwrap_or(d.zero_copy);
        Ok(MemifOptions {
            role,
            id,
            socket: SocketSpec { path, abstract_ns },
            owner_uid: owner("owner-uid")?,
            owner_gid: owner("owner-gid")?,
            bsize,
            rsize,
            mac,
            secret,
            zero_copy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MemifOptions> {
        MemifOptions::from_devargs(&DevArgs::parse(s).unwrap())
    }

    #[test]
    fn dpdk_defaults() {
        let o = parse("net_memif0").unwrap();
        assert_eq!(o, MemifOptions::default());
        assert_eq!(o.role, Role::Client);
        assert_eq!(o.socket.path, "/run/memif.sock");
        assert!(
            o.socket.abstract_ns,
            "DPDK uses an abstract socket by default"
        );
        assert_eq!((o.bsize, o.rsize, o.id), (2048, 10, 0));
    }

    #[test]
    fn every_key() {
        let o = parse(
            "net_memif3,role=server,id=7,socket=/tmp/x.sock,socket-abstract=no,bsize=1024,\
             rsize=12,mac=02:00:00:00:00:09,secret=abc,zero-copy=yes,owner-uid=1000,owner-gid=100",
        )
        .unwrap();
        assert_eq!(o.role, Role::Server);
        assert_eq!(o.id, 7);
        assert_eq!(o.socket.to_string(), "/tmp/x.sock");
        assert_eq!((o.bsize, o.rsize), (1024, 12));
        assert_eq!(o.mac, Some(MacAddr([2, 0, 0, 0, 0, 9])));
        assert_eq!(o.secret, "abc");
        assert!(o.zero_copy);
        assert_eq!((o.owner_uid, o.owner_gid), (Some(1000), Some(100)));
        assert_eq!(parse("net_memif0,role=master").unwrap().role, Role::Server);
        assert_eq!(parse("net_memif0,role=slave").unwrap().role, Role::Client);
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        for (spec, needle) in [
            ("net_memif0,role=peer", "role=\"peer\""),
            ("net_memif0,rsize=15", "rsize"),
            ("net_memif0,rsize=0", "rsize"),
            ("net_memif0,bsize=0", "bsize"),
            ("net_memif0,bsize=65536", "bsize"),
            ("net_memif0,id=-1", "id"),
            ("net_memif0,zero-copy=maybe", "neither yes nor no"),
            ("net_memif0,mac=zz", "mac="),
            ("net_memif0,secret=123456789012345678901234", "at most 23"),
            ("net_memif0,sokcet=/x", "unknown key \"sokcet\""),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        let long = format!("net_memif0,socket=/{}", "a".repeat(107));
        assert!(parse(&long).unwrap_err().to_string().contains("at most"));
    }
}
