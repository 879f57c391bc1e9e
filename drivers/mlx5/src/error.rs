//! The crate's error type: one variant per thing that can be wrong on a
//! machine, each message ending with the usual fix.
#![deny(unsafe_code)]

use std::fmt;
use std::io;

/// Result alias for this crate.
pub type Result<T, E = Mlx5Error> = std::result::Result<T, E>;

/// What opening or running an mlx5 port can fail with.
#[derive(Debug)]
pub enum Mlx5Error {
    /// The device arguments are malformed or name an option we do not have.
    DevArgs {
        /// The device string as given.
        device: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
    /// dlopen of libibverbs failed: rdma-core's runtime is not installed.
    LibraryMissing {
        /// The library we tried (`libibverbs.so.1`).
        library: String,
        /// dlopen's message.
        reason: String,
    },
    /// libibverbs loaded but lacks a function we need.
    LibraryTooOld {
        /// The library.
        library: String,
        /// The missing symbol.
        symbol: String,
        /// dlsym's message.
        reason: String,
    },
    /// No RDMA device matches the interface or PCI address asked for.
    NoDevice {
        /// What was asked for (`iface=eth1`, `dev=0000:03:00.0`).
        wanted: String,
        /// Why nothing matches, with the fix.
        reason: String,
        /// The RDMA devices that exist, described.
        found: Vec<String>,
    },
    /// The device exists but could not be opened (`ibv_open_device`).
    OpenFailed {
        /// The RDMA device.
        device: String,
        /// The OS error.
        source: io::Error,
    },
    /// The port is an InfiniBand port, not Ethernet.
    NotEthernet {
        /// The RDMA device.
        device: String,
        /// IB port number.
        port: u8,
        /// `link_layer` as reported (1: InfiniBand).
        link_layer: u8,
    },
    /// The device or its provider cannot do RAW_PACKET queue pairs or flow
    /// steering (EOPNOTSUPP).
    RawPacketUnsupported {
        /// The RDMA device.
        device: String,
        /// The verb that was refused.
        op: &'static str,
    },
    /// The kernel refused a raw packet QP or flow rule (EPERM): no CAP_NET_RAW.
    NeedCapNetRaw {
        /// The RDMA device.
        device: String,
        /// The verb that was refused.
        op: &'static str,
    },
    /// Registering the mempool's memory failed.
    RegisterMemory {
        /// The RDMA device.
        device: String,
        /// Bytes we tried to register.
        bytes: usize,
        /// The OS error.
        source: io::Error,
    },
    /// Any other verbs call failed.
    Verbs {
        /// The RDMA device.
        device: String,
        /// The verb and its object.
        op: String,
        /// The OS error.
        source: io::Error,
        /// The usual fix, if there is one.
        hint: Option<&'static str>,
    },
}

impl Mlx5Error {
    /// Classify a failed verb: EPERM and EOPNOTSUPP get their own variants.
    pub fn from_verb(device: &str, op: &'static str, e: io::Error) -> Mlx5Error {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Mlx5Error::NeedCapNetRaw {
                device: device.to_string(),
                op,
            },
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Mlx5Error::RawPacketUnsupported {
                device: device.to_string(),
                op,
            },
            _ => Mlx5Error::Verbs {
                device: device.to_string(),
                op: op.to_string(),
                source: e,
                hint: None,
            },
        }
    }
}

impl fmt::Display for Mlx5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mlx5Error::DevArgs { device, reason } => write!(f, "device {device:?}: {reason}"),
            Mlx5Error::LibraryMissing { library, reason } => write!(
                f,
                "cannot load {library} ({reason}): rdma-core's verbs library is not installed; \
                 install the packages libibverbs1 and ibverbs-providers (Debian/Ubuntu; rdma-core \
                 and libibverbs on Fedora/RHEL) on the host, or in the container image (Containerfile: \
                 `RUN apt-get install -y --no-install-recommends libibverbs1 ibverbs-providers`)"
            ),
            Mlx5Error::LibraryTooOld {
                library,
                symbol,
                reason,
            } => write!(
                f,
                "{library} has no {symbol} ({reason}): it is not rdma-core's libibverbs; install \
                 libibverbs1 and ibverbs-providers (rdma-core 20 or newer)"
            ),
            Mlx5Error::NoDevice {
                wanted,
                reason,
                found,
            } => {
                write!(
                    f,
                    "no RDMA device matches {wanted}: {reason}; RDMA devices here: "
                )?;
                if found.is_empty() {
                    write!(
                        f,
                        "none (no /sys/class/infiniband entry: is mlx5_ib loaded, and in a pod, is the \
                         RDMA device shared into it?)"
                    )
                } else {
                    write!(f, "{}", found.join("; "))
                }
            }
            Mlx5Error::OpenFailed { device, source } => write!(
                f,
                "ibv_open_device({device}): {source}; the process needs read-write access to its \
                 /dev/infiniband/uverbsN (in a pod: request the RDMA shared device resource, e.g. \
                 rdma/rdma_shared_device_a, so the device plugin mounts it)"
            ),
            Mlx5Error::NotEthernet {
                device,
                port,
                link_layer,
            } => write!(
                f,
                "{device} port {port} has link layer {} ({link_layer}), not Ethernet: raw packet \
                 queues need a ConnectX port in Ethernet mode (mlxconfig -d DEV set LINK_TYPE_P1=2, \
                 then reset the adapter)",
                if *link_layer == 1 {
                    "InfiniBand"
                } else {
                    "unspecified"
                }
            ),
            Mlx5Error::RawPacketUnsupported { device, op } => write!(
                f,
                "{device}: {op} is not supported (EOPNOTSUPP): the device, its verbs provider, or \
                 a kernel or rdma-core too old for it cannot do raw packet queues and flow \
                 steering; needed: a ConnectX-4 or newer in Ethernet mode, Linux 4.14 or newer \
                 (mlx5_ib), rdma-core 20 or newer with its mlx5 provider (soft-RoCE rxe and siw \
                 cannot)"
            ),
            Mlx5Error::NeedCapNetRaw { device, op } => write!(
                f,
                "{device}: {op} was refused (EPERM): raw packet queue pairs and flow rules need \
                 CAP_NET_RAW; run as root, `setcap cap_net_raw,cap_ipc_lock+ep testpmd`, or add \
                 NET_RAW to the pod's securityContext.capabilities"
            ),
            Mlx5Error::RegisterMemory {
                device,
                bytes,
                source,
            } => write!(
                f,
                "{device}: ibv_reg_mr of the mempool ({bytes} bytes): {source}; registered memory \
                 is pinned and counts against RLIMIT_MEMLOCK: raise it (`ulimit -l unlimited`, \
                 systemd LimitMEMLOCK=infinity) or grant CAP_IPC_LOCK (pod: capabilities add \
                 IPC_LOCK)"
            ),
            Mlx5Error::Verbs {
                device,
                op,
                source,
                hint,
            } => {
                write!(f, "{device}: {op}: {source}")?;
                if let Some(h) = hint {
                    write!(f, "; {h}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Mlx5Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Mlx5Error::OpenFailed { source, .. }
            | Mlx5Error::RegisterMemory { source, .. }
            | Mlx5Error::Verbs { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// For the application: every mlx5 error becomes the core's device error,
/// keeping its message (`?` works in the port registry).
impl From<Mlx5Error> for nicpoll::Error {
    fn from(e: Mlx5Error) -> nicpoll::Error {
        match e {
            Mlx5Error::DevArgs { device, reason } => nicpoll::Error::DevArgs { device, reason },
            other => nicpoll::Error::DevArgs {
                device: crate::DRIVER.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

/// A core error (from DevArgs helpers) as ours.
impl From<nicpoll::Error> for Mlx5Error {
    fn from(e: nicpoll::Error) -> Mlx5Error {
        match e {
            nicpoll::Error::DevArgs { device, reason } => Mlx5Error::DevArgs { device, reason },
            other => Mlx5Error::DevArgs {
                device: crate::DRIVER.to_string(),
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_errno_classification() {
        let d = "mlx5_0";
        assert!(matches!(
            Mlx5Error::from_verb(
                d,
                "ibv_create_qp",
                io::Error::from_raw_os_error(libc::EPERM)
            ),
            Mlx5Error::NeedCapNetRaw { .. }
        ));
        assert!(matches!(
            Mlx5Error::from_verb(
                d,
                "ibv_create_qp",
                io::Error::from_raw_os_error(libc::EOPNOTSUPP)
            ),
            Mlx5Error::RawPacketUnsupported { .. }
        ));
        assert!(matches!(
            Mlx5Error::from_verb(
                d,
                "ibv_create_qp",
                io::Error::from_raw_os_error(libc::ENOMEM)
            ),
            Mlx5Error::Verbs { .. }
        ));
        let core: nicpoll::Error = Mlx5Error::NeedCapNetRaw {
            device: d.into(),
            op: "ibv_create_flow",
        }
        .into();
        assert!(core.to_string().contains("CAP_NET_RAW"), "{core}");
    }
}
