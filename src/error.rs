//! The core crate's one error type.
//!
//! Every variant names the operation, the object it failed on and, where the
//! operating system said why, its error; the message ends with the usual fix.
#![deny(unsafe_code)]

use std::io;
use std::path::PathBuf;

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hugetlbfs mount or a hugepage size could not be found.
    #[error(
        "no usable hugetlbfs mount{}: {reason}; mount one with `mount -t hugetlbfs nodev /dev/hugepages`, \
         or run software ports with --no-huge",
        dir.as_ref().map(|d| format!(" at {}", d.display())).unwrap_or_default()
    )]
    NoHugetlbfs {
        /// The directory that was asked for, if any.
        dir: Option<PathBuf>,
        /// Why it is not usable.
        reason: String,
    },

    /// Not enough free hugepages for an allocation.
    #[error(
        "not enough free {page_kib} KiB hugepages for {what}: need {needed}, {free} free; \
         reserve more with `echo {suggest} > /sys/kernel/mm/hugepages/hugepages-{page_kib}kB/nr_hugepages` \
         (for 2 MiB pages also `echo {suggest} > /proc/sys/vm/nr_hugepages`), or use --no-huge for software ports"
    )]
    NoFreeHugepages {
        /// What the memory was for.
        what: String,
        /// Page size in KiB.
        page_kib: u64,
        /// Pages needed.
        needed: u64,
        /// Pages free.
        free: u64,
        /// A pool size that would do.
        suggest: u64,
    },

    /// The memory limit given with -m / --socket-mem would be exceeded.
    #[error(
        "memory limit reached allocating {what}: {requested} bytes requested, {used} of {limit} bytes \
         already in use; raise -m/--socket-mem or lower --total-num-mbufs/--rxd/--txd"
    )]
    MemoryLimit {
        /// What the memory was for.
        what: String,
        /// Bytes requested.
        requested: usize,
        /// Bytes already allocated.
        used: usize,
        /// The limit.
        limit: usize,
    },

    /// A system call on a file failed (open, ftruncate, mmap, mlock, pagemap ...).
    #[error("{op} {}: {source}{}", path.display(), hint_suffix(hint))]
    Io {
        /// The operation.
        op: &'static str,
        /// The file it was done on.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
        /// The usual fix, if there is one.
        hint: Option<&'static str>,
    },

    /// A system call not tied to a file failed.
    #[error("{op}: {source}{}", hint_suffix(hint))]
    Os {
        /// The operation and its object.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
        /// The usual fix, if there is one.
        hint: Option<&'static str>,
    },

    /// Physical addresses are not readable (no-IOMMU and --iova-mode=pa need them).
    #[error(
        "physical addresses are unavailable in /proc/self/pagemap (read PFN 0 for {what}); \
         IOVA mode PA needs CAP_SYS_ADMIN (run as root or give the pod `privileged: true`), \
         or use --iova-mode=va with an IOMMU"
    )]
    NoPhysicalAddresses {
        /// What was being mapped.
        what: String,
    },

    /// A mempool could not be created or used.
    #[error("mempool {pool}: {reason}")]
    Mempool {
        /// The pool's name.
        pool: String,
        /// What is wrong, with the fix.
        reason: String,
    },

    /// A core list, core mask or lcore map is malformed or names cores we may not use.
    #[error("{option} {value:?}: {reason}")]
    Lcore {
        /// The option that carried it (`-l`, `-c`, `--lcores`, `--main-lcore`).
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and the accepted form.
        reason: String,
    },

    /// Device arguments (`--vdev name,key=value`) are malformed or not accepted.
    #[error("device {device:?}: {reason}")]
    DevArgs {
        /// The device string as given.
        device: String,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// A port operation failed.
    #[error("port {port} ({name}): {op}: {reason}")]
    Port {
        /// Port id.
        port: u16,
        /// Port name (`net_null0`, a PCI address, an interface).
        name: String,
        /// The operation (`configure`, `start`, ...).
        op: &'static str,
        /// What is wrong and the fix.
        reason: String,
    },

    /// The forwarding configuration cannot be built.
    #[error("forwarding configuration: {0}")]
    FwdConfig(String),

    /// A VFIO system call failed (open of a container or group node, an ioctl,
    /// pread/pwrite of a device region, mmap of a BAR).
    #[error("VFIO {op} {object}: {source}{}", owned_hint_suffix(hint))]
    Vfio {
        /// The operation (`open`, `VFIO_SET_IOMMU(NOIOMMU)`, `VFIO_IOMMU_MAP_DMA`, ...).
        op: &'static str,
        /// What it was done on (a file, a group, a PCI address, a DMA range).
        object: String,
        /// The OS error.
        #[source]
        source: io::Error,
        /// The usual fix, naming the capability, file or setting involved.
        hint: Option<String>,
    },

    /// VFIO cannot be used as asked, though no system call failed (group not
    /// viable, API version, no usable IOMMU type, IOVA mode mismatch, ...).
    #[error("VFIO {object}: {reason}")]
    VfioSetup {
        /// The group, device or memory concerned.
        object: String,
        /// What is wrong and the fix.
        reason: String,
    },

    /// A PCI device cannot be found, parsed, bound or used.
    #[error("PCI device {device}: {reason}")]
    Pci {
        /// The PCI address as given or normalised.
        device: String,
        /// What is wrong and the fix.
        reason: String,
    },
}

fn owned_hint_suffix(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("; {h}"),
        None => String::new(),
    }
}

fn hint_suffix(hint: &Option<&'static str>) -> String {
    match hint {
        Some(h) => format!("; {h}"),
        None => String::new(),
    }
}

impl Error {
    /// Build an [`Error::Port`]: `op` on port `port` (named `name`) failed
    /// for `reason` (which says the fix).
    pub fn port(port: u16, name: &str, op: &'static str, reason: String) -> Self {
        Error::Port {
            port,
            name: name.to_string(),
            op,
            reason,
        }
    }

    /// Build an [`Error::Io`] from the last OS error.
    pub fn last_os(op: &'static str, path: impl Into<PathBuf>, hint: Option<&'static str>) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source: io::Error::last_os_error(),
            hint,
        }
    }
}
