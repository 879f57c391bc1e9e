//! What the run needs, derived from its devices: vfio-pci, no-IOMMU mode, mlx5,
//! hugepages (how much a missing piece matters).

use nicpoll::pci::{NOIOMMU_GROUP_NAME, PciAddress};

use super::Status;
use super::devices::{Dev, Kind};
use super::host::Host;

/// How much a run needs something: a missing one FAILs, WARNs, or does not matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    Yes,
    Maybe,
    No,
}

impl Need {
    pub(super) fn missing(self) -> Status {
        match self {
            Need::Yes => Status::Fail,
            Need::Maybe => Status::Warn,
            Need::No => Status::Pass,
        }
    }
}

/// What the IOMMU situation is.
pub(super) struct Iommu {
    /// `/sys/class/iommu/*` entries (dmar0, amd-iommu ...), or groups that are not no-IOMMU.
    pub(super) units: Vec<String>,
}

impl Iommu {
    pub(super) fn read(host: &Host<'_>) -> Iommu {
        let mut units = host.list("/sys/class/iommu");
        if units.is_empty() {
            let real_groups = host
                .list("/sys/kernel/iommu_groups")
                .into_iter()
                .filter(|g| {
                    host.read_trimmed(&format!("/sys/kernel/iommu_groups/{g}/name"))
                        .as_deref()
                        != Some(NOIOMMU_GROUP_NAME)
                })
                .count();
            if real_groups > 0 {
                units.push(format!(
                    "{real_groups} IOMMU group(s) in /sys/kernel/iommu_groups"
                ));
            }
        }
        Iommu { units }
    }

    pub(super) fn present(&self) -> bool {
        !self.units.is_empty()
    }
}

/// The run's needs, derived from its devices.
pub(super) struct Scope {
    /// vfio-pci: a device needs it (Yes), no device given (Maybe), only others (No).
    pub(super) vfio: Need,
    /// No-IOMMU VFIO: devices need vfio and the machine has no IOMMU (or their
    /// groups are no-IOMMU ones).
    pub(super) noiommu: Need,
    /// mlx5 devices (CAP_NET_RAW for verbs raw packet queues).
    pub(super) mlx5: Need,
    /// Hugepage memory will be used.
    pub(super) hugepages: bool,
    pub(super) iommu: Iommu,
    /// The devices that need vfio-pci, for messages.
    pub(super) vfio_devices: Vec<PciAddress>,
    pub(super) mlx5_devices: Vec<PciAddress>,
}

impl Scope {
    /// `unknown_is_maybe`: with no device at all, things a device would need are
    /// Maybe (doctor) rather than No (start of a run without PCI devices).
    pub(super) fn new(
        host: &Host<'_>,
        devs: &[Dev],
        hugepages: bool,
        unknown_is_maybe: bool,
    ) -> Scope {
        let iommu = Iommu::read(host);
        let pick = |k: Kind| -> Vec<PciAddress> {
            devs.iter()
                .filter(|d| d.kind() == Some(k))
                .map(|d| d.addr)
                .collect()
        };
        let vfio_devices = pick(Kind::Vfio);
        let mlx5_devices = pick(Kind::Mlx5);
        let none = if devs.is_empty() && unknown_is_maybe {
            Need::Maybe
        } else {
            Need::No
        };
        let need = |v: &[PciAddress]| if v.is_empty() { none } else { Need::Yes };
        let vfio = need(&vfio_devices);
        let noiommu = match vfio {
            Need::Yes if !iommu.present() || devs.iter().any(Dev::noiommu_group) => Need::Yes,
            Need::Yes => Need::No,
            Need::Maybe if !iommu.present() => Need::Maybe,
            _ => Need::No,
        };
        Scope {
            vfio,
            noiommu,
            mlx5: need(&mlx5_devices),
            hugepages,
            iommu,
            vfio_devices,
            mlx5_devices,
        }
    }

    pub(super) fn vfio_users(&self) -> String {
        if self.vfio_devices.is_empty() {
            "Intel and virtio devices need it".to_string()
        } else {
            format!("needed by {}", join(&self.vfio_devices))
        }
    }
}

pub(super) fn join(addrs: &[PciAddress]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
