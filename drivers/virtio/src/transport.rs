//! The virtio PCI transport (virtio 1.0 §4.1): the common configuration
//! structure, doorbells, the ISR and the network device's configuration, all
//! reached through the [`Bar`] trait, and the initialisation sequence
//! (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK) with its checks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nicpoll::bar::Bar;
use nicpoll::{Error, Result};

use crate::pci::{CapRef, VirtioCaps};

/// Feature bits this driver knows (virtio 1.0 §5.1.3 and §6).
pub mod feature {
    /// Device handles partial checksums (not taken).
    pub const NET_CSUM: u64 = 1 << 0;
    /// Driver handles partial checksums (not taken).
    pub const NET_GUEST_CSUM: u64 = 1 << 1;
    /// The device has a MAC address in its configuration.
    pub const NET_MAC: u64 = 1 << 5;
    /// Merged receive buffers: a frame may take several receive buffers, the
    /// first one's header saying how many (`num_buffers`). Taken when offered:
    /// frames longer than an mbuf arrive as chains.
    pub const NET_MRG_RXBUF: u64 = 1 << 15;
    /// The configuration's status field (link up) is valid.
    pub const NET_STATUS: u64 = 1 << 16;
    /// A control virtqueue exists.
    pub const NET_CTRL_VQ: u64 = 1 << 17;
    /// Receive filtering (promiscuous, all-multicast) through the control queue.
    pub const NET_CTRL_RX: u64 = 1 << 18;
    /// Multiple queue pairs, set through the control queue.
    pub const NET_MQ: u64 = 1 << 22;
    /// Ring event index (not taken: notification is suppressed by flags).
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// Virtio 1.0 (modern): required.
    pub const VERSION_1: u64 = 1 << 32;
    /// The device reaches memory through the platform's IOMMU (taken when offered).
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// The configuration reports speed and duplex.
    pub const NET_SPEED_DUPLEX: u64 = 1 << 63;

    /// What this driver takes when offered.
    pub const WANTED: u64 = VERSION_1
        | ACCESS_PLATFORM
        | NET_MAC
        | NET_STATUS
        | NET_CTRL_VQ
        | NET_CTRL_RX
        | NET_MQ
        | NET_MRG_RXBUF
        | NET_SPEED_DUPLEX;

    /// Names of the bits above, for logs.
    pub fn names(bits: u64) -> String {
        const NAMES: &[(u64, &str)] = &[
            (NET_CSUM, "CSUM"),
            (NET_GUEST_CSUM, "GUEST_CSUM"),
            (NET_MAC, "MAC"),
            (NET_MRG_RXBUF, "MRG_RXBUF"),
            (NET_STATUS, "STATUS"),
            (NET_CTRL_VQ, "CTRL_VQ"),
            (NET_CTRL_RX, "CTRL_RX"),
            (NET_MQ, "MQ"),
            (RING_EVENT_IDX, "RING_EVENT_IDX"),
            (VERSION_1, "VERSION_1"),
            (ACCESS_PLATFORM, "ACCESS_PLATFORM"),
            (NET_SPEED_DUPLEX, "SPEED_DUPLEX"),
        ];
        let mut v: Vec<&str> = NAMES
            .iter()
            .filter(|(b, _)| bits & b != 0)
            .map(|(_, n)| *n)
            .collect();
        let rest = NAMES.iter().fold(bits, |acc, (b, _)| acc & !b);
        let extra = (rest != 0).then(|| format!("{rest:#x}"));
        if let Some(e) = &extra {
            v.push(e);
        }
        v.join("|")
    }
}

/// `device_status` bits (virtio 1.0 §2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 128;
}

/// Offsets in the common configuration structure (`struct virtio_pci_common_cfg`).
pub mod common {
    /// le32 rw: which 32 feature bits `DEVICE_FEATURE` shows.
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    /// le32 ro.
    pub const DEVICE_FEATURE: usize = 0x04;
    /// le32 rw.
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    /// le32 rw.
    pub const DRIVER_FEATURE: usize = 0x0c;
    /// le16 rw: MSI-X vector of configuration changes.
    pub const MSIX_CONFIG: usize = 0x10;
    /// le16 ro: number of virtqueues.
    pub const NUM_QUEUES: usize = 0x12;
    /// u8 rw.
    pub const DEVICE_STATUS: usize = 0x14;
    /// u8 ro: changes whenever the device configuration does.
    pub const CONFIG_GENERATION: usize = 0x15;
    /// le16 rw: which queue the fields below describe.
    pub const QUEUE_SELECT: usize = 0x16;
    /// le16 rw: the device's maximum, or what the driver chose.
    pub const QUEUE_SIZE: usize = 0x18;
    /// le16 rw.
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    /// le16 rw.
    pub const QUEUE_ENABLE: usize = 0x1c;
    /// le16 ro.
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    /// le64 rw: descriptor table.
    pub const QUEUE_DESC: usize = 0x20;
    /// le64 rw: available ring.
    pub const QUEUE_DRIVER: usize = 0x28;
    /// le64 rw: used ring.
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Size of the structure.
    pub const LEN: usize = 0x38;
}

/// Offsets in the network device configuration (`struct virtio_net_config`).
pub mod netcfg {
    /// 6 bytes (VIRTIO_NET_F_MAC).
    pub const MAC: usize = 0;
    /// le16 (VIRTIO_NET_F_STATUS).
    pub const STATUS: usize = 6;
    /// le16 (VIRTIO_NET_F_MQ).
    pub const MAX_VIRTQUEUE_PAIRS: usize = 8;
    /// le16 (VIRTIO_NET_F_MTU).
    pub const MTU: usize = 10;
    /// le32 in Mbit/s (VIRTIO_NET_F_SPEED_DUPLEX).
    pub const SPEED: usize = 12;
    /// u8: 1 full, 0 half (VIRTIO_NET_F_SPEED_DUPLEX).
    pub const DUPLEX: usize = 16;
    /// `status`: link up.
    pub const S_LINK_UP: u16 = 1;
}

/// `VIRTIO_MSI_NO_VECTOR`: no interrupt for this event (we poll).
pub const NO_VECTOR: u16 = 0xffff;

/// One structure inside a BAR: offsets are relative to it and checked against
/// its length (a driver bug otherwise, so a panic as in `Bar`).
pub struct Regs<B: Bar> {
    bar: Arc<B>,
    base: usize,
    len: usize,
}

impl<B: Bar> Clone for Regs<B> {
    fn clone(&self) -> Self {
        Regs {
            bar: self.bar.clone(),
            base: self.base,
            len: self.len,
        }
    }
}

impl<B: Bar> std::fmt::Debug for Regs<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Regs({:#x}+{:#x})", self.base, self.len)
    }
}

impl<B: Bar> Regs<B> {
    /// The structure `cap` describes, in `bar`; it must lie inside the BAR and be
    /// at least `min_len` bytes.
    pub fn new(
        bar: Arc<B>,
        cap: &CapRef,
        min_len: usize,
        what: &str,
        dev: &str,
    ) -> Result<Regs<B>> {
        let (base, len) = (cap.offset as usize, cap.length as usize);
        if len < min_len || base.checked_add(len).is_none_or(|e| e > bar.len()) {
            return Err(Error::Pci {
                device: dev.to_string(),
                reason: format!(
                    "virtio {what} at BAR{} offset {base:#x}, {len} bytes, does not fit the \
                     {:#x}-byte BAR or is shorter than {min_len} bytes",
                    cap.bar,
                    bar.len()
                ),
            });
        }
        Ok(Regs { bar, base, len })
    }

    /// Length of the structure.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the structure is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn at(&self, off: usize, size: usize) -> usize {
        assert!(
            off + size <= self.len,
            "register {off:#x} outside the structure"
        );
        self.base + off
    }

    /// 8-bit read.
    pub fn r8(&self, off: usize) -> u8 {
        self.bar.read8(self.at(off, 1))
    }
    /// 16-bit read.
    pub fn r16(&self, off: usize) -> u16 {
        self.bar.read16(self.at(off, 2))
    }
    /// 32-bit read.
    pub fn r32(&self, off: usize) -> u32 {
        self.bar.read32(self.at(off, 4))
    }
    /// 8-bit write.
    pub fn w8(&self, off: usize, v: u8) {
        self.bar.write8(self.at(off, 1), v)
    }
    /// 16-bit write.
    pub fn w16(&self, off: usize, v: u16) {
        self.bar.write16(self.at(off, 2), v)
    }
    /// 32-bit write.
    pub fn w32(&self, off: usize, v: u32) {
        self.bar.write32(self.at(off, 4), v)
    }
    /// 64-bit write as two 32-bit halves, low first (virtio 1.0 §4.1.3.1).
    pub fn w64(&self, off: usize, v: u64) {
        self.w32(off, v as u32);
        self.w32(off + 4, (v >> 32) as u32);
    }
}

/// A queue's doorbell: one 16-bit write of the queue index.
pub struct Notifier<B: Bar> {
    bar: Arc<B>,
    offset: usize,
    queue: u16,
}

impl<B: Bar> std::fmt::Debug for Notifier<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Notifier(queue {} at {:#x})", self.queue, self.offset)
    }
}

impl<B: Bar> Notifier<B> {
    /// Ring the doorbell.
    #[inline(always)]
    pub fn notify(&self) {
        self.bar.write16(self.offset, self.queue);
    }
}

/// Where a queue's rings are, for [`Transport::setup_queue`].
#[derive(Clone, Copy, Debug)]
pub struct QueueAddrs {
    /// Size chosen (a power of two, at most the device's).
    pub size: u16,
    /// Descriptor table IOVA.
    pub desc: u64,
    /// Available ring IOVA.
    pub avail: u64,
    /// Used ring IOVA.
    pub used: u64,
}

/// The device's registers.
pub struct Transport<B: Bar> {
    name: String,
    common: Regs<B>,
    notify: Regs<B>,
    notify_multiplier: u32,
    isr: Regs<B>,
    device: Option<Regs<B>>,
}

impl<B: Bar> std::fmt::Debug for Transport<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("device", &self.name)
            .field("common", &self.common)
            .field("notify", &self.notify)
            .field("notify_multiplier", &self.notify_multiplier)
            .finish()
    }
}

const RESET_TIMEOUT: Duration = Duration::from_secs(2);

impl<B: Bar> Transport<B> {
    /// The structures `caps` names, in the BARs `bar(index)` returns.
    pub fn new(
        name: &str,
        caps: &VirtioCaps,
        mut bar: impl FnMut(u8) -> Result<Arc<B>>,
    ) -> Result<Transport<B>> {
        let common = Regs::new(
            bar(caps.common.bar)?,
            &caps.common,
            common::LEN,
            "common configuration",
            name,
        )?;
        let notify = Regs::new(
            bar(caps.notify.bar)?,
            &caps.notify,
            2,
            "notification area",
            name,
        )?;
        let isr = Regs::new(bar(caps.isr.bar)?, &caps.isr, 1, "ISR status", name)?;
        let device = match &caps.device {
            Some(c) => Some(Regs::new(bar(c.bar)?, c, 6, "device configuration", name)?),
            None => None,
        };
        Ok(Transport {
            name: name.to_string(),
            common,
            notify,
            notify_multiplier: caps.notify_multiplier,
            isr,
            device,
        })
    }

    fn err(&self, reason: String) -> Error {
        Error::Pci {
            device: self.name.clone(),
            reason,
        }
    }

    /// `device_status`.
    pub fn status(&self) -> u8 {
        self.common.r8(common::DEVICE_STATUS)
    }

    /// Add `bits` to `device_status`.
    pub fn add_status(&self, bits: u8) {
        let s = self.status();
        self.common.w8(common::DEVICE_STATUS, s | bits);
    }

    /// Reset the device (status 0) and wait until it reads back 0: after this it
    /// no longer touches any queue memory.
    pub fn reset(&self) -> Result<()> {
        self.common.w8(common::DEVICE_STATUS, 0);
        let t = Instant::now();
        while self.status() != 0 {
            if t.elapsed() > RESET_TIMEOUT {
                return Err(self.err(format!(
                    "the device did not complete its reset within {RESET_TIMEOUT:?} (status {:#x})",
                    self.status()
                )));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }

    /// The 64 feature bits the device offers.
    pub fn device_features(&self) -> u64 {
        self.common.w32(common::DEVICE_FEATURE_SELECT, 0);
        let lo = self.common.r32(common::DEVICE_FEATURE) as u64;
        self.common.w32(common::DEVICE_FEATURE_SELECT, 1);
        let hi = self.common.r32(common::DEVICE_FEATURE) as u64;
        hi << 32 | lo
    }

    fn set_driver_features(&self, f: u64) {
        self.common.w32(common::DRIVER_FEATURE_SELECT, 0);
        self.common.w32(common::DRIVER_FEATURE, f as u32);
        self.common.w32(common::DRIVER_FEATURE_SELECT, 1);
        self.common.w32(common::DRIVER_FEATURE, (f >> 32) as u32);
    }

    /// Reset, ACKNOWLEDGE, DRIVER, negotiate, FEATURES_OK (virtio 1.0 §3.1.1
    /// steps 1-6). Returns (offered, accepted). Fails, marking the device FAILED,
    /// when VIRTIO_F_VERSION_1 is not offered or FEATURES_OK does not stick.
    pub fn negotiate(&self, wanted: u64) -> Result<(u64, u64)> {
        self.reset()?;
        self.add_status(status::ACKNOWLEDGE);
        self.add_status(status::DRIVER);
        let offered = self.device_features();
        if offered & feature::VERSION_1 == 0 {
            self.add_status(status::FAILED);
            return Err(self.err(format!(
                "the device does not offer VIRTIO_F_VERSION_1 (offers {}): a legacy virtio device; \
                 nicpoll drives virtio 1.0 devices (QEMU: disable-legacy=on or disable-modern=off)",
                feature::names(offered)
            )));
        }
        let mut accepted = offered & wanted;
        // MQ and CTRL_RX only work through the control queue (§5.1.3.1).
        if accepted & feature::NET_CTRL_VQ == 0 {
            accepted &= !(feature::NET_MQ | feature::NET_CTRL_RX);
        }
        self.set_driver_features(accepted);
        self.add_status(status::FEATURES_OK);
        if self.status() & status::FEATURES_OK == 0 {
            self.add_status(status::FAILED);
            return Err(self.err(format!(
                "the device refused the features {} (FEATURES_OK did not stick)",
                feature::names(accepted)
            )));
        }
        Ok((offered, accepted))
    }

    /// Set DRIVER_OK: the device is live. Fails if it asks for a reset.
    pub fn driver_ok(&self) -> Result<()> {
        self.add_status(status::DRIVER_OK);
        let s = self.status();
        if s & status::DEVICE_NEEDS_RESET != 0 || s & status::DRIVER_OK == 0 {
            return Err(self.err(format!(
                "the device did not accept DRIVER_OK (status {s:#x})"
            )));
        }
        Ok(())
    }

    /// Give up on the device (FAILED), e.g. after a setup error.
    pub fn fail(&self) {
        self.add_status(status::FAILED);
    }

    /// `num_queues`.
    pub fn num_queues(&self) -> u16 {
        self.common.r16(common::NUM_QUEUES)
    }

    /// The device's largest size for queue `q` (0: the queue does not exist).
    pub fn max_queue_size(&self, q: u16) -> u16 {
        self.common.w16(common::QUEUE_SELECT, q);
        self.common.r16(common::QUEUE_SIZE)
    }

    /// No configuration-change interrupt (we poll).
    pub fn disable_config_interrupt(&self) {
        self.common.w16(common::MSIX_CONFIG, NO_VECTOR);
    }

    /// Program queue `q` with `a` and enable it; returns its doorbell.
    pub fn setup_queue(&self, q: u16, a: &QueueAddrs) -> Result<Notifier<B>> {
        self.common.w16(common::QUEUE_SELECT, q);
        let max = self.common.r16(common::QUEUE_SIZE);
        if max == 0 || a.size > max || !a.size.is_power_of_two() {
            return Err(self.err(format!(
                "queue {q}: size {} is not possible (the device's largest is {max})",
                a.size
            )));
        }
        self.common.w16(common::QUEUE_SIZE, a.size);
        self.common.w16(common::QUEUE_MSIX_VECTOR, NO_VECTOR);
        self.common.w64(common::QUEUE_DESC, a.desc);
        self.common.w64(common::QUEUE_DRIVER, a.avail);
        self.common.w64(common::QUEUE_DEVICE, a.used);
        let off = self.common.r16(common::QUEUE_NOTIFY_OFF) as usize;
        let at = off * self.notify_multiplier as usize;
        if at + 2 > self.notify.len() {
            return Err(self.err(format!(
                "queue {q}: doorbell at {at:#x} (notify_off {off} x {}) is outside the \
                 {}-byte notification area",
                self.notify_multiplier,
                self.notify.len()
            )));
        }
        self.common.w16(common::QUEUE_ENABLE, 1);
        Ok(Notifier {
            bar: self.notify.bar.clone(),
            offset: self.notify.base + at,
            queue: q,
        })
    }

    /// Read the ISR status (clears it).
    pub fn isr(&self) -> u8 {
        self.isr.r8(0)
    }

    /// A consistent read of the device configuration: `f` reads the fields it
    /// needs (each with its natural width, §4.1.3.1), retried while
    /// `config_generation` changes; `None` if the device has no configuration
    /// structure or it is shorter than `len` bytes.
    pub fn read_device_config<T>(&self, len: usize, f: impl Fn(&Regs<B>) -> T) -> Option<T> {
        let dev = self.device.as_ref()?;
        if len > dev.len() {
            return None;
        }
        loop {
            let g = self.common.r8(common::CONFIG_GENERATION);
            let v = f(dev);
            if self.common.r8(common::CONFIG_GENERATION) == g {
                return Some(v);
            }
        }
    }
}
