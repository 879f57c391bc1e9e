//! Turning OS errors from VFIO calls into messages that say what to fix.

use std::fmt::Display;
use std::io;
use std::path::Path;

use crate::error::Error;

/// The capability no-IOMMU VFIO needs, and how a pod gets it.
pub(crate) const RAWIO_HINT: &str = "no-IOMMU VFIO needs the CAP_SYS_RAWIO capability: run as \
     root, or in the pod's container securityContext add `capabilities: add: [\"SYS_RAWIO\"]` \
     (with \"IPC_LOCK\") or set `privileged: true`";

/// Pinning DMA memory: RLIMIT_MEMLOCK or CAP_IPC_LOCK.
pub(crate) const MEMLOCK_HINT: &str = "pinning DMA memory for the IOMMU counts against \
     RLIMIT_MEMLOCK: run as root or with CAP_IPC_LOCK (in a pod add \"IPC_LOCK\" to \
     securityContext.capabilities.add), or raise the limit (`ulimit -l unlimited`)";

/// vfio_iommu_type1 refuses platforms without interrupt remapping.
pub(crate) const INTREMAP_HINT: &str = "vfio_iommu_type1 refuses an IOMMU without interrupt \
     remapping (see dmesg): enable it (intel_iommu=on with interrupt remapping; a QEMU vIOMMU: \
     -device intel-iommu,intremap=on), or accept the risk with `modprobe vfio_iommu_type1 \
     allow_unsafe_interrupts=1`";

pub(crate) fn io_error(
    op: &'static str,
    object: impl Display,
    source: io::Error,
    hint: Option<String>,
) -> Error {
    Error::Vfio {
        op,
        object: object.to_string(),
        source,
        hint,
    }
}

fn access_hint(path: &Path) -> String {
    format!(
        "{} is not accessible to this process: run as root or give this user access \
         (chown/chmod, or a udev rule); in a pod the SR-IOV device plugin mounts the VFIO nodes \
         of the devices it allocated (check the pod's resources requests and the PCIDEVICE_* \
         variables), or run the pod `privileged: true`",
        path.display()
    )
}

/// Opening `/dev/vfio/vfio`.
pub(crate) fn open_container(path: &Path, e: io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => Some(format!(
            "{} does not exist: load VFIO (`modprobe vfio-pci`; in a VM without a vIOMMU \
             `modprobe vfio enable_unsafe_noiommu_mode=1` first); in a pod the device plugin \
             mounts it with each VFIO device",
            path.display()
        )),
        Some(libc::EACCES | libc::EPERM) => Some(access_hint(path)),
        _ => None,
    };
    io_error("open", path.display(), e, hint)
}

/// Opening a group node.
pub(crate) fn open_group(path: &Path, group: u32, noiommu: bool, e: io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) if noiommu => Some(RAWIO_HINT.to_string()),
        Some(libc::EACCES) => Some(access_hint(path)),
        Some(libc::EPERM) => Some(access_hint(path)),
        Some(libc::ENOENT) => Some(missing_group_hint(group)),
        Some(libc::EBUSY) => Some(
            "another process has this VFIO group open (a running nicpoll, DPDK application or \
             VM): a group belongs to one process at a time"
                .to_string(),
        ),
        _ => None,
    };
    io_error("open", path.display(), e, hint)
}

pub(crate) fn missing_group_hint(group: u32) -> String {
    format!(
        "the group's device node is missing: on a host, check that the device is bound to \
         vfio-pci (`ls /dev/vfio`); in a pod, the SR-IOV device plugin must mount it (request \
         the device's resource; the node's /dev/vfio/noiommu-{group} appears in the pod as \
         /dev/vfio/{group})"
    )
}

/// A group ioctl where EPERM means the no-IOMMU capability.
pub(crate) fn group_ioctl(
    op: &'static str,
    object: impl Display,
    noiommu: bool,
    e: io::Error,
) -> Error {
    let hint = (e.raw_os_error() == Some(libc::EPERM) && noiommu).then(|| RAWIO_HINT.to_string());
    io_error(op, object, e, hint)
}

/// VFIO_SET_IOMMU.
pub(crate) fn set_iommu(
    op: &'static str,
    object: impl Display,
    noiommu: bool,
    e: io::Error,
) -> Error {
    let hint = match (e.raw_os_error(), noiommu) {
        (Some(libc::EPERM), true) => Some(RAWIO_HINT.to_string()),
        (Some(libc::EPERM), false) => Some(INTREMAP_HINT.to_string()),
        _ => None,
    };
    io_error(op, object, e, hint)
}

/// VFIO_IOMMU_MAP_DMA of `mapping` (what, addresses and size).
pub(crate) fn map_dma(mapping: impl Display, e: io::Error) -> Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOMEM) => Some(MEMLOCK_HINT.to_string()),
        Some(libc::ENOSPC) => Some(
            "the container has too many DMA mappings (vfio_iommu_type1 dma_entry_limit, 65535 by \
             default): use larger hugepages (fewer, larger regions) or raise the module parameter"
                .to_string(),
        ),
        Some(libc::EEXIST) => {
            Some("the range overlaps a mapping already made in this container".to_string())
        }
        Some(libc::EINVAL) => Some(
            "the IOVA is outside the IOMMU's aperture or not aligned to its page size".to_string(),
        ),
        Some(libc::EFAULT) => Some("the virtual range is not mapped memory".to_string()),
        _ => None,
    };
    io_error("VFIO_IOMMU_MAP_DMA", mapping, e, hint)
}
