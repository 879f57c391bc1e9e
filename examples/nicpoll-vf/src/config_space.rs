//! The VF's PCI configuration space, as an X710, X722 or E810 VF presents it
//! through VFIO: Intel's vendor id and the flavour's VF device id (Linux
//! `iavf_devids.h`: `IAVF_DEV_ID_VF` 0x154C, `IAVF_DEV_ID_X722_VF` 0x37CD,
//! `IAVF_DEV_ID_ADAPTIVE_VF` 0x1889 for E810 VFs), class 0x020000 (Ethernet controller), no INTx
//! pin (a VF has none: PCIe SR-IOV 1.1 §3.4.1.15), BAR0 the 64 KiB register
//! file and BAR3 the MSI-X table and PBA (both 64-bit prefetchable, as the
//! VFs show them in `lspci`), an MSI-X capability at 0x70 and a PCI Express
//! capability at 0xA0 (endpoint, Function Level Reset capable: PCIe base
//! §7.5.3.3), and the extended capabilities a VF has: AER at 0x100 and ARI
//! at 0x150.
//!
//! Writes go through per-byte masks: read-only bytes keep their value,
//! write-1-to-clear status bits clear, BAR address bits follow the BAR's
//! size. Setting "Initiate Function Level Reset" (Device Control bit 15)
//! resets the function ([`Written::flr`]).
#![forbid(unsafe_code)]

use nicpoll_iavf::sim::PfModel;

/// Size of the configuration space (PCIe: 4 KiB).
pub const CONFIG_LEN: usize = 4096;
/// BAR0: the VF's register file.
pub const BAR0_LEN: u64 = 0x1_0000;
/// BAR3: MSI-X table at 0, PBA at [`MSIX_PBA_OFFSET`].
pub const BAR3_LEN: u64 = 0x4000;
/// Where the PBA starts in BAR3.
pub const MSIX_PBA_OFFSET: u64 = 0x2000;

const MSIX_CAP: usize = 0x70;
const PCIE_CAP: usize = 0xA0;
const AER_CAP: usize = 0x100;
const ARI_CAP: usize = 0x150;

const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
/// Command: memory space enable.
pub const CMD_MEMORY: u16 = 1 << 1;
/// Command: bus master enable.
pub const CMD_BUS_MASTER: u16 = 1 << 2;
const CMD_INTX_DISABLE: u16 = 1 << 10;
/// MSI-X Message Control: enable.
const MSIX_ENABLE: u16 = 1 << 15;
/// MSI-X Message Control: function mask.
const MSIX_MASKALL: u16 = 1 << 14;
/// PCIe Device Control: initiate function level reset.
const DEVCTL_BCR_FLR: u16 = 1 << 15;

/// What a config write changed that the device must act on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// The function is to be reset.
    pub flr: bool,
    /// Bus Master Enable changed to this.
    pub bus_master: Option<bool>,
}

/// The configuration space of one VF.
pub struct ConfigSpace {
    bytes: Vec<u8>,
    /// Bits software may write.
    writable: Vec<u8>,
    /// Bits a write of 1 clears.
    w1c: Vec<u8>,
    /// The values after a reset.
    initial: Vec<u8>,
}

impl ConfigSpace {
    /// The config space of a VF of `pf` with `vectors` MSI-X vectors.
    pub fn new(pf: PfModel, vectors: u16) -> ConfigSpace {
        let mut c = ConfigSpace {
            bytes: vec![0; CONFIG_LEN],
            writable: vec![0; CONFIG_LEN],
            w1c: vec![0; CONFIG_LEN],
            initial: Vec::new(),
        };
        c.put16(0x00, 0x8086);
        c.put16(0x02, pf.vf_device_id());
        // Status: capability list.
        c.put16(STATUS, 1 << 4);
        c.mask16(
            COMMAND,
            CMD_MEMORY | CMD_BUS_MASTER | (1 << 6) | (1 << 8) | CMD_INTX_DISABLE,
        );
        // Status errors (master/target abort, parity, SERR): write 1 to clear.
        c.w1c16(STATUS, 0xF900);
        c.bytes[0x08] = 0x01; // revision
        c.bytes[0x0B] = 0x02; // class: network controller
        c.bytes[0x0A] = 0x00; // subclass: Ethernet
        c.mask8(0x0C, 0xFF); // cache line size
        // BAR0 and BAR3: memory, 64-bit, prefetchable.
        c.put32(0x10, 0b1100);
        c.mask32(0x10, !(BAR0_LEN as u32 - 1));
        c.mask32(0x14, 0xFFFF_FFFF);
        c.put32(0x1C, 0b1100);
        c.mask32(0x1C, !(BAR3_LEN as u32 - 1));
        c.mask32(0x20, 0xFFFF_FFFF);
        c.put16(0x2C, 0x8086); // subsystem vendor
        c.put16(0x2E, 0x0000); // subsystem id
        c.bytes[0x34] = MSIX_CAP as u8;
        c.mask8(0x3C, 0xFF); // interrupt line
        // MSI-X: table size N-1, table in BAR3 at 0, PBA in BAR3 at 0x2000.
        c.bytes[MSIX_CAP] = 0x11;
        c.bytes[MSIX_CAP + 1] = PCIE_CAP as u8;
        c.put16(MSIX_CAP + 2, vectors.saturating_sub(1) & 0x7FF);
        c.mask16(MSIX_CAP + 2, MSIX_ENABLE | MSIX_MASKALL);
        c.put32(MSIX_CAP + 4, 3);
        c.put32(MSIX_CAP + 8, MSIX_PBA_OFFSET as u32 | 3);
        // PCI Express v2, endpoint; Device Capabilities: max payload 2048,
        // extended tags, role-based error reporting, FLR.
        c.bytes[PCIE_CAP] = 0x10;
        c.bytes[PCIE_CAP + 1] = 0;
        c.put16(PCIE_CAP + 2, 0x0002);
        c.put32(PCIE_CAP + 4, 0x4 | (1 << 5) | (1 << 15) | (1 << 28));
        // Device Control: relaxed ordering, no snoop, MPS/MRRS fields;
        // FLR initiate reads back 0.
        c.put16(PCIE_CAP + 8, 0x2810);
        c.mask16(PCIE_CAP + 8, 0x7FFF);
        c.w1c16(PCIE_CAP + 10, 0x000F);
        // Device Capabilities 2 / Control 2: completion timeout disable.
        c.put32(PCIE_CAP + 0x24, 1 << 4);
        c.mask16(PCIE_CAP + 0x28, 0x001F);
        // AER (v2), then ARI (v1), the end of the list.
        c.put32(AER_CAP, 0x0002_0001 | ((ARI_CAP as u32) << 20));
        c.w1c32(AER_CAP + 0x04, 0x03FF_F030); // uncorrectable status
        c.mask32(AER_CAP + 0x08, 0x03FF_F030); // uncorrectable mask
        c.mask32(AER_CAP + 0x0C, 0x03FF_F030); // severity
        c.put32(AER_CAP + 0x0C, 0x0046_2030);
        c.w1c32(AER_CAP + 0x10, 0x0000_F1C1); // correctable status
        c.mask32(AER_CAP + 0x14, 0x0000_F1C1); // correctable mask
        c.put32(ARI_CAP, 0x0001_000E);
        c.initial = c.bytes.clone();
        c
    }

    fn put16(&mut self, o: usize, v: u16) {
        self.bytes[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(&mut self, o: usize, v: u32) {
        self.bytes[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn mask8(&mut self, o: usize, m: u8) {
        self.writable[o] = m;
    }
    fn mask16(&mut self, o: usize, m: u16) {
        self.writable[o..o + 2].copy_from_slice(&m.to_le_bytes());
    }
    fn mask32(&mut self, o: usize, m: u32) {
        self.writable[o..o + 4].copy_from_slice(&m.to_le_bytes());
    }
    fn w1c16(&mut self, o: usize, m: u16) {
        self.w1c[o..o + 2].copy_from_slice(&m.to_le_bytes());
    }
    fn w1c32(&mut self, o: usize, m: u32) {
        self.w1c[o..o + 4].copy_from_slice(&m.to_le_bytes());
    }

    fn get16(&self, o: usize) -> u16 {
        u16::from_le_bytes([self.bytes[o], self.bytes[o + 1]])
    }

    /// Read `data.len()` bytes at `offset` (the caller checked the range).
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        data.copy_from_slice(&self.bytes[offset..offset + data.len()]);
    }

    /// Write `data` at `offset` through the masks (the caller checked the
    /// range); returns what the device must act on.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Written {
        let bus_master_before = self.bus_master();
        let mut flr = false;
        for (i, &v) in data.iter().enumerate() {
            let o = offset + i;
            // The FLR bit is a command, not a stored value.
            if o == PCIE_CAP + 9 && v & (DEVCTL_BCR_FLR >> 8) as u8 != 0 {
                flr = true;
            }
            let w = self.writable[o];
            let c = self.w1c[o] & v;
            self.bytes[o] = ((self.bytes[o] & !w) | (v & w)) & !c;
        }
        let bus_master = self.bus_master();
        Written {
            flr,
            bus_master: (bus_master != bus_master_before).then_some(bus_master),
        }
    }

    /// What a function-level reset does to the config space: every register
    /// back to its reset value (the BARs of a VF live in its PF's SR-IOV
    /// capability and keep their addresses; the emulator owns them anyway).
    pub fn reset(&mut self) {
        let bars: Vec<u8> = self.bytes[0x10..0x28].to_vec();
        self.bytes.copy_from_slice(&self.initial);
        self.bytes[0x10..0x28].copy_from_slice(&bars);
    }

    /// Bus Master Enable.
    pub fn bus_master(&self) -> bool {
        self.get16(COMMAND) & CMD_BUS_MASTER != 0
    }

    /// MSI-X enabled (Message Control bit 15).
    #[cfg(test)]
    fn msix_enabled(&self) -> bool {
        self.get16(MSIX_CAP + 2) & MSIX_ENABLE != 0
    }

    #[cfg(test)]
    fn set_byte(&mut self, o: usize, v: u8) {
        self.bytes[o] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r32(c: &ConfigSpace, o: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(o, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identity_and_capabilities() {
        let c = ConfigSpace::new(PfModel::X710, 5);
        assert_eq!(r32(&c, 0), 0x154C_8086);
        assert_eq!(r32(&c, 8) >> 8, 0x02_0000, "class");
        assert_eq!(r32(&c, 0x3C) >> 8 & 0xFF, 0, "no INTx pin");
        // The capability list: MSI-X, then PCIe, then the end.
        assert_eq!(r32(&c, 0x34) & 0xFF, 0x70);
        assert_eq!(r32(&c, 0x70) & 0xFFFF, 0xA011);
        assert_eq!(r32(&c, 0x70) >> 16 & 0x7FF, 4, "5 vectors");
        assert_eq!(r32(&c, 0x74), 3, "table: BAR3 + 0");
        assert_eq!(r32(&c, 0x78), 0x2003, "PBA: BAR3 + 0x2000");
        assert_eq!(r32(&c, 0xA0) & 0xFF, 0x10);
        assert_ne!(r32(&c, 0xA4) & (1 << 28), 0, "FLR capable");
        assert_eq!(r32(&c, 0x100) & 0xFFFF, 1, "AER");
        assert_eq!(r32(&c, 0x100) >> 20, 0x150);
        assert_eq!(r32(&c, 0x150) & 0xFFFF, 0xE, "ARI");
        assert_eq!(ConfigSpace::new(PfModel::E810, 17).get16(2), 0x1889);
        assert_eq!(ConfigSpace::new(PfModel::X722, 5).get16(2), 0x37CD);
    }

    #[test]
    fn writes_follow_the_masks() {
        let mut c = ConfigSpace::new(PfModel::X710, 5);
        // Ids are read-only; BAR sizing reads back the size.
        c.write(0, &[0xFF; 4]);
        assert_eq!(r32(&c, 0), 0x154C_8086);
        c.write(0x10, &[0xFF; 4]);
        assert_eq!(r32(&c, 0x10), 0xFFFF_000C);
        c.write(0x1C, &[0xFF; 4]);
        assert_eq!(r32(&c, 0x1C), 0xFFFF_C00C);
        // Bus master on, then off.
        let w = c.write(4, &6u16.to_le_bytes());
        assert_eq!(w.bus_master, Some(true));
        assert!(c.bus_master());
        assert_eq!(c.write(4, &6u16.to_le_bytes()).bus_master, None);
        // Status error bits clear on a 1.
        c.set_byte(7, 0x80);
        c.write(6, &[0x00, 0x80]);
        assert_eq!(c.get16(6) & 0x8000, 0);
        // FLR: reported, reads back 0, and resets the command register.
        let w = c.write(0xA8, &0x8000u16.to_le_bytes());
        assert!(w.flr);
        assert_eq!(c.get16(0xA8) & 0x8000, 0);
        c.write(0x72, &0x8000u16.to_le_bytes());
        assert!(c.msix_enabled());
        c.reset();
        assert!(!c.bus_master() && !c.msix_enabled());
        assert_eq!(r32(&c, 0x10), 0xFFFF_000C, "BARs kept");
    }
}
