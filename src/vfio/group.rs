//! VFIO groups: finding a device's group node, telling a no-IOMMU group from an
//! IOMMU one, opening it and checking it is viable.
//!
//! Where the node is:
//! - a host with an IOMMU: `/dev/vfio/N`;
//! - a host (a VM) whose vfio runs in no-IOMMU mode: `/dev/vfio/noiommu-N`;
//! - a pod on such a VM: `/dev/vfio/N`, because the SR-IOV device plugin mounts
//!   the node's `noiommu-N` there. The group's sysfs name (`vfio-noiommu`) still
//!   tells; without it, the container decides: one that offers only
//!   `VFIO_NOIOMMU_IOMMU` can only be used in no-IOMMU mode.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_bindings::bindings::vfio as sys;

use super::errors;
use super::ioctl::{VfioFd, VfioOps};
use crate::error::{Error, Result};
use crate::pci::{PciAddress, Sysfs};

/// Where a group's node is, and what is known of its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupNode {
    pub number: u32,
    pub path: PathBuf,
    /// `Some(true)`: a no-IOMMU group (node `noiommu-N`, or sysfs name
    /// `vfio-noiommu`); `None`: not known from names (decided by the container).
    pub noiommu: Option<bool>,
}

/// Find group `number`'s node under `dev_dir`.
pub(crate) fn locate(
    ops: &dyn VfioOps,
    sysfs: &Sysfs,
    dev_dir: &Path,
    number: u32,
) -> Result<GroupNode> {
    let noiommu_path = dev_dir.join(format!("noiommu-{number}"));
    if ops.exists(&noiommu_path) {
        return Ok(GroupNode {
            number,
            path: noiommu_path,
            noiommu: Some(true),
        });
    }
    let path = dev_dir.join(number.to_string());
    if ops.exists(&path) {
        let name = crate::pci::read_trimmed(&sysfs.iommu_group_dir(number).join("name"));
        let noiommu = (name.as_deref() == Some(crate::pci::NOIOMMU_GROUP_NAME)).then_some(true);
        return Ok(GroupNode {
            number,
            path,
            noiommu,
        });
    }
    let mode = match sysfs.noiommu_mode_enabled() {
        Some(true) => " (vfio is in no-IOMMU mode)",
        _ => "",
    };
    Err(Error::Vfio {
        op: "open",
        object: format!(
            "group {number}: neither {} nor {} exists{mode}",
            path.display(),
            noiommu_path.display()
        ),
        source: std::io::Error::from_raw_os_error(libc::ENOENT),
        hint: Some(errors::missing_group_hint(number)),
    })
}

/// An open group, attached to the context's container.
#[derive(Debug)]
pub(crate) struct Group {
    pub number: u32,
    pub path: PathBuf,
    pub fd: VfioFd,
}

/// Open a group node and check it is viable (every device of the group bound to
/// vfio-pci or to no driver).
pub(crate) fn open(
    ops: &Arc<dyn VfioOps>,
    sysfs: &Sysfs,
    node: &GroupNode,
    noiommu: bool,
) -> Result<VfioFd> {
    let fd = ops
        .open(&node.path)
        .map_err(|e| errors::open_group(&node.path, node.number, noiommu, e))?;
    let fd = VfioFd::new(ops.clone(), fd);
    let flags = ops.group_status(fd.as_fd()).map_err(|e| {
        errors::group_ioctl("VFIO_GROUP_GET_STATUS", node.path.display(), noiommu, e)
    })?;
    if flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
        let members = sysfs.iommu_group_members(node.number);
        let list: Vec<String> = members
            .iter()
            .map(|(a, d)| format!("{a} ({})", d.as_deref().unwrap_or("no driver")))
            .collect();
        let others: Vec<&PciAddress> = members
            .iter()
            .filter(|(_, d)| {
                d.as_deref()
                    .is_some_and(|d| d != crate::pci::VFIO_PCI_DRIVER)
            })
            .map(|(a, _)| a)
            .collect();
        return Err(Error::VfioSetup {
            object: format!("group {} ({})", node.number, node.path.display()),
            reason: format!(
                "not viable: every device of an IOMMU group must be bound to vfio-pci or to no \
                 driver, and the group has {}{}",
                if list.is_empty() {
                    "devices this process cannot see".to_string()
                } else {
                    list.join(", ")
                },
                match others.first() {
                    Some(a) => format!(
                        "; bind the others too ({}) or unbind them (`echo {a} > \
                         /sys/bus/pci/devices/{a}/driver/unbind`)",
                        crate::pci::bind_command(a)
                    ),
                    None => String::new(),
                }
            ),
        });
    }
    Ok(fd)
}
