//! Finding a modern virtio device's structures: the vendor-specific
//! capabilities in PCI config space (virtio 1.0 §4.1.4) name a BAR, an offset
//! and a length for the common configuration, the notification area (with its
//! offset multiplier), the ISR status and the device-specific configuration.

use nicpoll::vfio::VfioDevice;
use nicpoll::{Error, Result};

/// Virtio's PCI vendor id.
pub const VIRTIO_VENDOR_ID: u16 = 0x1af4;
/// A modern (virtio 1.0, non-transitional) network device: 0x1040 + type 1.
pub const VIRTIO_NET_MODERN_ID: u16 = 0x1041;
/// A transitional network device (legacy and, usually, modern interfaces).
pub const VIRTIO_NET_TRANSITIONAL_ID: u16 = 0x1000;

const PCI_STATUS: u64 = 0x06;
const PCI_STATUS_CAP_LIST: u16 = 0x10;
const PCI_CAPABILITY_LIST: u64 = 0x34;
const PCI_CAP_ID_VNDR: u8 = 0x09;
/// Most capabilities a well-formed list can hold in 256 bytes of config space.
const MAX_CAPS: usize = 48;

/// `cfg_type` of `struct virtio_pci_cap`.
pub mod cfg_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
    /// PCI configuration access (not used: we map the BARs).
    pub const PCI: u8 = 5;
}

/// Where one structure lives: a BAR, an offset into it, a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapRef {
    /// BAR index (0..=5).
    pub bar: u8,
    /// Offset into the BAR.
    pub offset: u32,
    /// Length in bytes.
    pub length: u32,
}

/// The structures of a modern virtio PCI device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtioCaps {
    /// `VIRTIO_PCI_CAP_COMMON_CFG`.
    pub common: CapRef,
    /// `VIRTIO_PCI_CAP_NOTIFY_CFG`.
    pub notify: CapRef,
    /// `notify_off_multiplier`: queue `q`'s doorbell is at
    /// `notify.offset + queue_notify_off(q) * multiplier`.
    pub notify_multiplier: u32,
    /// `VIRTIO_PCI_CAP_ISR_CFG`.
    pub isr: CapRef,
    /// `VIRTIO_PCI_CAP_DEVICE_CFG` (network devices have one: MAC, status).
    pub device: Option<CapRef>,
}

/// Read access to PCI config space.
pub trait ConfigSpace {
    /// Read `buf.len()` bytes at `offset`.
    fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
}

impl ConfigSpace for VfioDevice {
    fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        VfioDevice::read_config(self, offset, buf)
    }
}

/// A config space image (tests, and anything read ahead).
impl ConfigSpace for [u8] {
    fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = offset as usize;
        let src = self
            .get(start..start + buf.len())
            .ok_or_else(|| Error::VfioSetup {
                object: "config space image".into(),
                reason: format!("read of {} bytes at {offset:#x} is outside it", buf.len()),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

fn legacy_only(device: &str) -> Error {
    Error::Pci {
        device: device.to_string(),
        reason: "virtio device without the virtio 1.0 PCI capabilities (a legacy-only device): \
                 nicpoll drives modern virtio 1.0 devices only; give QEMU \
                 `-device virtio-net-pci,disable-legacy=on` (or disable-modern=off), or use a \
                 hypervisor that offers virtio 1.0"
            .into(),
    }
}

/// Walk the capability list of `cfg` and find the virtio structures. `device`
/// names the device in errors. The first capability of each type is used, as
/// the spec asks; capabilities naming a BAR above 5 are skipped.
pub fn parse_caps(cfg: &(impl ConfigSpace + ?Sized), device: &str) -> Result<VirtioCaps> {
    let mut b2 = [0u8; 2];
    cfg.read_config(PCI_STATUS, &mut b2)?;
    if u16::from_le_bytes(b2) & PCI_STATUS_CAP_LIST == 0 {
        return Err(legacy_only(device));
    }
    let mut b1 = [0u8; 1];
    cfg.read_config(PCI_CAPABILITY_LIST, &mut b1)?;
    let mut ptr = b1[0] & 0xfc;
    let (mut common, mut notify, mut isr, mut dev) = (None, None, None, None);
    let mut notify_multiplier = 0;
    let mut seen = 0;
    while ptr != 0 {
        seen += 1;
        if seen > MAX_CAPS || ptr < 0x40 {
            return Err(Error::Pci {
                device: device.to_string(),
                reason: format!(
                    "the PCI capability list is malformed (entry at {ptr:#x} after {} entries)",
                    seen - 1
                ),
            });
        }
        let mut cap = [0u8; 20];
        let len = if ptr as usize + 20 <= 256 { 20 } else { 16 };
        cfg.read_config(ptr as u64, &mut cap[..len])?;
        let (id, next, cap_len, ty, bar) = (cap[0], cap[1], cap[2], cap[3], cap[4]);
        if id == PCI_CAP_ID_VNDR && cap_len >= 16 && bar <= 5 {
            let r = CapRef {
                bar,
                offset: u32::from_le_bytes(cap[8..12].try_into().expect("4 bytes")),
                length: u32::from_le_bytes(cap[12..16].try_into().expect("4 bytes")),
            };
            match ty {
                cfg_type::COMMON if common.is_none() => common = Some(r),
                cfg_type::NOTIFY if notify.is_none() && cap_len >= 20 && len == 20 => {
                    notify = Some(r);
                    notify_multiplier =
                        u32::from_le_bytes(cap[16..20].try_into().expect("4 bytes"));
                }
                cfg_type::ISR if isr.is_none() => isr = Some(r),
                cfg_type::DEVICE if dev.is_none() => dev = Some(r),
                _ => {}
            }
        }
        ptr = next & 0xfc;
    }
    match (common, notify, isr) {
        (Some(common), Some(notify), Some(isr)) => Ok(VirtioCaps {
            common,
            notify,
            notify_multiplier,
            isr,
            device: dev,
        }),
        (None, None, None) => Err(legacy_only(device)),
        _ => Err(Error::Pci {
            device: device.to_string(),
            reason: format!(
                "incomplete virtio capabilities: common configuration {}, notifications {}, ISR \
                 {}; the device is not a conforming virtio 1.0 PCI device",
                if common.is_some() { "found" } else { "missing" },
                if notify.is_some() { "found" } else { "missing" },
                if isr.is_some() { "found" } else { "missing" },
            ),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A vendor capability at `at`, linked to `next`.
    pub(crate) fn put_cap(
        cfg: &mut [u8],
        at: usize,
        next: u8,
        ty: u8,
        bar: u8,
        off: u32,
        len: u32,
    ) {
        cfg[at] = PCI_CAP_ID_VNDR;
        cfg[at + 1] = next;
        cfg[at + 2] = if ty == cfg_type::NOTIFY { 20 } else { 16 };
        cfg[at + 3] = ty;
        cfg[at + 4] = bar;
        cfg[at + 8..at + 12].copy_from_slice(&off.to_le_bytes());
        cfg[at + 12..at + 16].copy_from_slice(&len.to_le_bytes());
    }

    /// Config space shaped like QEMU's virtio-net-pci (disable-legacy=on): an
    /// MSI-X capability first, then the virtio ones in BAR 4.
    pub(crate) fn qemu_like() -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[0..2].copy_from_slice(&VIRTIO_VENDOR_ID.to_le_bytes());
        c[2..4].copy_from_slice(&VIRTIO_NET_MODERN_ID.to_le_bytes());
        c[6..8].copy_from_slice(&PCI_STATUS_CAP_LIST.to_le_bytes());
        c[0x34] = 0x98;
        // MSI-X at 0x98 -> 0x84.
        c[0x98] = 0x11;
        c[0x99] = 0x84;
        put_cap(&mut c, 0x84, 0x70, cfg_type::PCI, 0, 0, 0);
        put_cap(&mut c, 0x70, 0x60, cfg_type::NOTIFY, 4, 0x3000, 0x1000);
        c[0x70 + 16..0x70 + 20].copy_from_slice(&4u32.to_le_bytes());
        put_cap(&mut c, 0x60, 0x50, cfg_type::DEVICE, 4, 0x2000, 0x1000);
        put_cap(&mut c, 0x50, 0x40, cfg_type::ISR, 4, 0x1000, 0x1000);
        put_cap(&mut c, 0x40, 0x00, cfg_type::COMMON, 4, 0x0000, 0x1000);
        c
    }

    #[test]
    fn finds_qemus_structures() {
        let c = qemu_like();
        let caps = parse_caps(&c[..], "0000:00:03.0").unwrap();
        assert_eq!(
            caps.common,
            CapRef {
                bar: 4,
                offset: 0,
                length: 0x1000
            }
        );
        assert_eq!(caps.notify.offset, 0x3000);
        assert_eq!(caps.notify_multiplier, 4);
        assert_eq!(caps.isr.offset, 0x1000);
        assert_eq!(caps.device.unwrap().offset, 0x2000);
    }

    #[test]
    fn first_of_each_type_wins_and_bad_bars_are_skipped() {
        let mut c = qemu_like();
        // 0xa0: a common cfg naming BAR 7 (skipped), then a second common (ignored).
        c[0x99] = 0xa0;
        put_cap(&mut c, 0xa0, 0xb0, cfg_type::COMMON, 7, 0x500, 0x100);
        put_cap(&mut c, 0xb0, 0x84, cfg_type::COMMON, 2, 0x600, 0x100);
        let caps = parse_caps(&c[..], "x").unwrap();
        assert_eq!(caps.common.bar, 2, "the first usable one, in list order");
        // A capability too short to be a virtio_pci_cap is ignored.
        let mut c = qemu_like();
        c[0x40 + 2] = 8;
        let e = parse_caps(&c[..], "x").unwrap_err().to_string();
        assert!(e.contains("common configuration missing"), "{e}");
    }

    #[test]
    fn legacy_only_devices_are_refused_with_the_fix() {
        let mut c = qemu_like();
        c[0x34] = 0x98;
        c[0x99] = 0; // only MSI-X
        let e = parse_caps(&c[..], "0000:00:04.0").unwrap_err().to_string();
        assert!(
            e.contains("0000:00:04.0")
                && e.contains("legacy-only")
                && e.contains("disable-legacy=on"),
            "{e}"
        );
        let mut c = qemu_like();
        c[6] = 0;
        assert!(
            parse_caps(&c[..], "x")
                .unwrap_err()
                .to_string()
                .contains("legacy-only")
        );
    }

    #[test]
    fn capability_loops_end_in_an_error() {
        let mut c = qemu_like();
        c[0x41] = 0x98; // common -> MSI-X -> ... -> common
        let e = parse_caps(&c[..], "x").unwrap_err().to_string();
        assert!(e.contains("malformed"), "{e}");
        let mut c = qemu_like();
        c[0x34] = 0x10; // into the header
        assert!(
            parse_caps(&c[..], "x")
                .unwrap_err()
                .to_string()
                .contains("malformed")
        );
    }
}
