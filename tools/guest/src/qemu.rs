//! QEMU's command line for one guest: q35 under TCG, the kernel booted as an ELF
//! through its PVH entry, qboot as firmware when QEMU has it (about 0.5 s faster
//! to the kernel than SeaBIOS), the console on the serial port.

use std::path::{Path, PathBuf};

use crate::{Emulator, Mode, Net, Nic, NicModel};

/// Everything the command line is made of, with paths as QEMU sees them (the
/// same as the host's: the chroot shows each folder at its own path).
pub(crate) struct QemuPlan<'a> {
    pub emulator: Emulator,
    pub mode: Mode,
    pub mem_mb: u32,
    pub smp: u32,
    pub cpu: Option<&'a str>,
    pub hugepages: u32,
    pub append: &'a [String],
    pub nics: &'a [Nic],
    /// Absolute paths of the vfio-user sockets, with each device's properties.
    pub vfio_user: Vec<(PathBuf, &'a [(String, String)])>,
    pub run_dir: &'a Path,
    pub pcap: Option<&'a Path>,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub bios: Option<&'a Path>,
    pub extra: &'a [String],
}

/// A value inside QEMU's `key=value,...` option syntax: commas are doubled.
fn opt(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// A JSON string literal.
fn json(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The guest's PCI address of emulated NIC `i`.
pub(crate) fn nic_bdf(i: usize) -> String {
    format!("0000:00:{:02x}.0", 3 + i)
}

/// The guest's PCI address of vfio-user device `j`.
pub(crate) fn vfio_user_bdf(j: usize) -> String {
    format!("0000:00:{:02x}.0", 0x10 + j)
}

/// QEMU's arguments (without the program name).
pub(crate) fn args(p: &QemuPlan) -> Vec<String> {
    let mut a: Vec<String> = [
        "-accel",
        "tcg",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]
    .map(String::from)
    .to_vec();
    a.extend([
        "-m".into(),
        p.mem_mb.to_string(),
        "-smp".into(),
        p.smp.to_string(),
    ]);
    let mut machine = String::from("q35");
    if p.emulator == Emulator::Qemu11 {
        // vfio-user reaches guest memory through the file descriptors of a
        // shared memory backend.
        a.extend([
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={}M,share=on", p.mem_mb),
        ]);
        machine.push_str(",memory-backend=mem");
    }
    a.extend(["-machine".into(), machine]);
    // no_timer_check: under TCG on a busy host the kernel's boot-time check of
    // the IO-APIC timer can miss its window and panic ("timer doesn't work
    // through Interrupt-remapped IO-APIC", arch/x86/kernel/apic/io_apic.c).
    let mut cmdline = format!(
        "console=ttyS0 quiet panic=-1 no_timer_check hugepages={}",
        p.hugepages
    );
    if p.mode == Mode::Type1 {
        // Interrupt remapping: vfio_iommu_type1 refuses a platform without it
        // (vfio_iommu_type1.c, allow_unsafe_interrupts). A vfio-user device behind
        // the vIOMMU needs caching mode, so QEMU hears of every mapping.
        let caching = if p.vfio_user.is_empty() {
            ""
        } else {
            ",caching-mode=on"
        };
        a.extend([
            "-device".into(),
            format!("intel-iommu,intremap=on{caching}"),
        ]);
        cmdline.push_str(" intel_iommu=on");
    }
    if let Some(cpu) = p.cpu {
        a.extend(["-cpu".into(), cpu.to_string()]);
    }
    if let Some(bios) = p.bios {
        a.extend(["-bios".into(), bios.to_string_lossy().into_owned()]);
    }
    for (i, nic) in p.nics.iter().enumerate() {
        let id = format!("n{i}");
        let netdev = match &nic.net {
            Net::User => format!("user,id={id},restrict=on"),
            Net::Dgram(peer) => format!(
                "dgram,id={id},local.type=unix,local.path={},remote.type=unix,remote.path={}",
                opt(&p.run_dir.join(format!("nic{i}.sock"))),
                opt(peer)
            ),
            Net::Tap { ifname, .. } => {
                format!("tap,id={id},ifname={ifname},script=no,downscript=no")
            }
            Net::SocketListen(port) => format!("socket,id={id},listen=127.0.0.1:{port}"),
            Net::SocketConnect(port) => format!("socket,id={id},connect=127.0.0.1:{port}"),
        };
        a.extend(["-netdev".into(), netdev]);
        let mut device = match nic.model {
            NicModel::E1000e => "e1000e".to_string(),
            NicModel::Virtio if p.mode == Mode::Type1 => {
                "virtio-net-pci,disable-legacy=on,iommu_platform=on".to_string()
            }
            NicModel::Virtio => "virtio-net-pci,disable-legacy=on".to_string(),
        };
        device.push_str(&format!(",romfile=,netdev={id},addr={:x}.0", 3 + i));
        for prop in &nic.props {
            device.push(',');
            device.push_str(prop);
        }
        a.extend(["-device".into(), device]);
        if let Some(dir) = p.pcap {
            a.extend([
                "-object".into(),
                format!(
                    "filter-dump,id=f{i},netdev={id},file={}",
                    opt(&dir.join(format!("nic{i}.pcap")))
                ),
            ]);
        }
    }
    for (j, (socket, props)) in p.vfio_user.iter().enumerate() {
        let mut device = format!(
            "{{\"driver\":\"vfio-user-pci\",\"socket\":{{\"type\":\"unix\",\"path\":{}}},\"addr\":\"{:x}.0\"",
            json(&socket.to_string_lossy()),
            0x10 + j
        );
        for (k, v) in props.iter() {
            device.push_str(&format!(",{}:{v}", json(k)));
        }
        device.push('}');
        a.extend(["-device".into(), device]);
    }
    for extra in p.append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    a.extend([
        "-kernel".into(),
        p.kernel.to_string_lossy().into_owned(),
        "-initrd".into(),
        p.initrd.to_string_lossy().into_owned(),
        "-append".into(),
        cmdline,
    ]);
    a.extend(p.extra.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan<'a>(emulator: Emulator, mode: Mode, nics: &'a [Nic]) -> QemuPlan<'a> {
        QemuPlan {
            emulator,
            mode,
            mem_mb: 1024,
            smp: 2,
            cpu: None,
            hugepages: 64,
            append: &[],
            nics,
            vfio_user: Vec::new(),
            run_dir: Path::new("/c/run/1"),
            pcap: None,
            kernel: Path::new("/c/kernel/vmlinux"),
            initrd: Path::new("/c/run/1/initrd"),
            bios: None,
            extra: &[],
        }
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn type1_has_an_iommu_with_interrupt_remapping_and_virtio_behind_it() {
        let nics = [
            Nic::virtio().net(Net::Dgram("/tmp/a,b/peer.sock".into())),
            Nic::e1000e(),
        ];
        let a = args(&plan(Emulator::Host, Mode::Type1, &nics));
        assert_eq!(after(&a, "-device")[0], "intel-iommu,intremap=on");
        assert!(after(&a, "-append")[0].contains("intel_iommu=on"));
        assert_eq!(
            after(&a, "-netdev")[0],
            "dgram,id=n0,local.type=unix,local.path=/c/run/1/nic0.sock,remote.type=unix,remote.path=/tmp/a,,b/peer.sock"
        );
        assert_eq!(
            after(&a, "-device")[1],
            "virtio-net-pci,disable-legacy=on,iommu_platform=on,romfile=,netdev=n0,addr=3.0"
        );
        assert_eq!(
            after(&a, "-device")[2],
            "e1000e,romfile=,netdev=n1,addr=4.0"
        );
        assert_eq!(after(&a, "-machine"), ["q35"]);
        assert!(!a.iter().any(|x| x.contains("memfd")));
    }

    #[test]
    fn vfio_user_devices_get_shared_memory_json_and_caching_mode() {
        let props = [("x-msg-timeout".to_string(), "5000".to_string())];
        let mut p = plan(Emulator::Qemu11, Mode::Type1, &[]);
        p.vfio_user = vec![(PathBuf::from("/tmp/s\"ock"), &props[..])];
        let a = args(&p);
        assert_eq!(after(&a, "-machine"), ["q35,memory-backend=mem"]);
        assert_eq!(
            after(&a, "-object"),
            ["memory-backend-memfd,id=mem,size=1024M,share=on"]
        );
        assert_eq!(
            after(&a, "-device"),
            [
                "intel-iommu,intremap=on,caching-mode=on",
                r#"{"driver":"vfio-user-pci","socket":{"type":"unix","path":"/tmp/s\"ock"},"addr":"10.0","x-msg-timeout":5000}"#
            ]
        );
    }

    #[test]
    fn noiommu_has_no_iommu_and_bdfs_follow_the_slots() {
        let nics: Vec<Nic> = (0..13).map(|_| Nic::e1000e()).collect();
        let a = args(&plan(Emulator::Host, Mode::NoIommu, &nics));
        assert!(!a.iter().any(|x| x.contains("intel")));
        assert_eq!(nic_bdf(0), "0000:00:03.0");
        assert_eq!(nic_bdf(12), "0000:00:0f.0");
        assert!(after(&a, "-device")[12].ends_with("addr=f.0"));
        assert_eq!(vfio_user_bdf(1), "0000:00:11.0");
    }
}
