//! VF settings: trust and spoof checking, PF-side settings a VF (or a VM)
//! cannot see; what to check, nothing is run.

use std::fs;

use super::devices::{Dev, VIRTIO};
use super::host::Host;
use super::{Finding, Status};

/// `vf-trust BDF`: trust and spoof checking are PF-side settings of a VF. On the
/// host (the device has a physfn) say what to look at; in a VM say it cannot be
/// seen. Nothing is run.
pub(super) fn check_vf_settings(host: &Host<'_>, dev: &Dev) -> Option<Finding> {
    let d = dev.info.as_ref().ok()?;
    let name = format!("vf-trust {}", dev.addr);
    if d.vendor == VIRTIO {
        return Some(Finding::pass(
            name,
            "a virtio device, not an SR-IOV VF: no trust or spoof checking to set",
        ));
    }
    let why = "spoof checking drops frames sent with another source MAC (io forwarding sends them), \
               and an untrusted VF gets no promiscuous or multicast-all mode";
    if let Some(pf) = d.physfn {
        let pf_dir = format!("/sys/bus/pci/devices/{pf}");
        let pf_name = host
            .list(&format!("{pf_dir}/net"))
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("<PF {pf}>"));
        let vf = host
            .list(&pf_dir)
            .into_iter()
            .filter_map(|n| n.strip_prefix("virtfn").map(str::to_string))
            .find(|n| {
                fs::read_link(host.path(format!("{pf_dir}/virtfn{n}")))
                    .ok()
                    .and_then(|t| t.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .as_deref()
                    == Some(dev.addr.to_string().as_str())
            })
            .unwrap_or_else(|| "N".to_string());
        return Some(
            Finding::new(
                name,
                Status::Warn,
                format!(
                    "VF {vf} of PF {pf} ({pf_name}): trust and spoof checking are not in sysfs, so not checked ({why}); \
                     `ip link show {pf_name}` should list `vf {vf} ... spoof checking off, ... trust on`"
                ),
            )
            .fix(format!("ip link set {pf_name} vf {vf} spoofchk off trust on")),
        );
    }
    if host
        .path(format!("/sys/bus/pci/devices/{}/sriov_totalvfs", dev.addr))
        .exists()
    {
        return Some(Finding::pass(
            name,
            "a physical function (it has sriov_totalvfs): trust and spoof checking are settings of VFs",
        ));
    }
    Some(
        Finding::new(
            name,
            Status::Warn,
            format!(
                "no physfn: a VF passed into this VM, whose trust and spoof checking cannot be seen from here ({why}); \
                 they are set on the hypervisor, on the PF"
            ),
        )
        .fix(
            "on the hypervisor: ip link set PF vf N spoofchk off trust on (OpenStack: port_security_enabled=False \
             and binding:profile {\"trusted\": \"true\"}; or the network's SR-IOV settings)",
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Env;
    use crate::doctor::testing::*;

    #[test]
    fn vf_trust_and_spoof_checking() {
        let t = Tree::good();
        let name = "vf-trust 0000:00:07.0";
        expect_saying(
            &t.vf(),
            name,
            Status::Warn,
            "on the hypervisor: ip link set PF vf N spoofchk off trust on",
            "cannot be seen",
        );
        // On the host: the VF's PF and index.
        t.device(&FakeDev {
            bdf: "0000:3b:00.0",
            driver: Some("i40e"),
            group: Some((40, false)),
            ..FakeDev::default()
        })
        .mkdir("sys/bus/pci/devices/0000:3b:00.0/net/ens1f0")
        .link(
            "sys/bus/pci/devices/0000:3b:00.0",
            &format!("sys/bus/pci/devices/{VF}/physfn"),
        )
        .link(
            &format!("sys/bus/pci/devices/{VF}"),
            "sys/bus/pci/devices/0000:3b:00.0/virtfn2",
        )
        .write("sys/bus/pci/devices/0000:3b:00.0/sriov_totalvfs", "64\n");
        expect_saying(
            &t.vf(),
            name,
            Status::Warn,
            "ip link set ens1f0 vf 2 spoofchk off trust on",
            "`ip link show ens1f0` should list `vf 2 ... spoof checking off",
        );
        // A PF, and virtio, have no VF settings.
        expect(
            &t.checks(&Env::new(), &["3b:00.0"]),
            "vf-trust 0000:3b:00.0",
            Status::Pass,
            "",
        );
        let t = Tree::good();
        t.device(&FakeDev {
            vendor: VIRTIO,
            device: 0x1041,
            ..FakeDev::default()
        });
        expect(&t.vf(), name, Status::Pass, "");
    }
}
