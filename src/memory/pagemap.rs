//! Physical addresses from `/proc/self/pagemap`, for IOVA mode PA (VFIO no-IOMMU,
//! where a device is given physical addresses).
//!
//! The file holds one native-endian 64-bit entry per base page of the process's
//! address space (Documentation/admin-guide/mm/pagemap.rst): bit 63 "present",
//! bit 62 "swapped", bits 0..=54 the page frame number. Since Linux 4.2 the PFN
//! reads as 0 unless the reader has CAP_SYS_ADMIN, which is how we tell that
//! physical addresses are unavailable. Reading needs no unsafe code: `pread`.
#![deny(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::page::base_page_size;
use crate::error::{Error, Result};

const PAGEMAP: &str = "/proc/self/pagemap";
const PRESENT: u64 = 1 << 63;
const SWAPPED: u64 = 1 << 62;
const PFN_MASK: u64 = (1 << 55) - 1;

/// An open `/proc/self/pagemap`, to translate many addresses with one open.
pub(crate) struct Pagemap {
    file: File,
    base_page: usize,
}

impl Pagemap {
    /// Open this process's pagemap.
    pub(crate) fn open() -> Result<Pagemap> {
        let file = File::open(PAGEMAP).map_err(|source| Error::Io {
            op: "open",
            path: PAGEMAP.into(),
            source,
            hint: Some(
                "IOVA mode PA reads physical addresses from /proc/self/pagemap (a kernel with \
                 CONFIG_PROC_PAGE_MONITOR and /proc mounted); otherwise use --iova-mode=va with an IOMMU",
            ),
        })?;
        Ok(Pagemap {
            file,
            base_page: base_page_size(),
        })
    }

    /// The physical address of virtual address `va`, whose page must be populated
    /// (touched or mapped with MAP_POPULATE) and must not move (hugetlbfs, or locked
    /// memory while no one migrates it). `what` names the memory in errors.
    pub(crate) fn physical_address(&self, va: usize, what: &str) -> Result<u64> {
        let mut entry = [0u8; 8];
        let offset = (va / self.base_page) as u64 * 8;
        self.file
            .read_exact_at(&mut entry, offset)
            .map_err(|source| Error::Io {
                op: "read",
                path: PAGEMAP.into(),
                source,
                hint: None,
            })?;
        decode(u64::from_ne_bytes(entry), va, self.base_page, what)
    }
}

/// Turn a pagemap entry for the base page holding `va` into `va`'s physical address.
fn decode(entry: u64, va: usize, base_page: usize, what: &str) -> Result<u64> {
    if entry & PRESENT == 0 {
        let why = if entry & SWAPPED != 0 {
            "the page is swapped out"
        } else {
            "the page is not present (never touched)"
        };
        return Err(Error::Os {
            op: format!("translate {what} at {va:#x} through {PAGEMAP}"),
            source: io::Error::other(why),
            hint: Some(
                "DMA memory must be populated and locked before its physical address is read",
            ),
        });
    }
    let pfn = entry & PFN_MASK;
    if pfn == 0 {
        return Err(Error::NoPhysicalAddresses {
            what: format!("{what} at {va:#x}"),
        });
    }
    Ok(pfn * base_page as u64 + (va % base_page) as u64)
}

/// The physical address of virtual address `va` (its page must be populated).
/// Fails with [`Error::NoPhysicalAddresses`] when the kernel hides PFNs from us.
pub(crate) fn physical_address(va: usize) -> Result<u64> {
    Pagemap::open()?.physical_address(va, "virtual address")
}

/// Check that this process can read physical addresses, before IOVA mode PA is
/// accepted: touch a page of a fresh allocation and translate it.
pub(crate) fn check_physical_addresses_readable() -> Result<()> {
    let page = base_page_size();
    // Two pages so that one whole page lies inside; a large zeroed allocation
    // may be fresh untouched mmap memory, hence the explicit write.
    let mut probe = vec![0u8; 2 * page];
    let index = page;
    probe[index] = 1;
    // Keep the write: the optimizer must assume black_box reads the buffer.
    let probe = std::hint::black_box(probe);
    physical_address(probe.as_ptr() as usize + index).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn entries_decode() {
        let entry = PRESENT | 0x12345;
        assert_eq!(
            decode(entry, 0x7f00_0000_0abc, PAGE, "x").unwrap(),
            0x12345abc
        );
        // Flags above the PFN (soft-dirty, exclusive, file) are not part of it.
        let entry = PRESENT | (1 << 61) | (1 << 56) | (1 << 55) | 7;
        assert_eq!(decode(entry, 0x1000, PAGE, "x").unwrap(), 7 * 4096);
    }

    #[test]
    fn hidden_pfn_and_absent_pages_are_errors() {
        let err = decode(PRESENT, 0x1000, PAGE, "ring").unwrap_err();
        assert!(matches!(&err, Error::NoPhysicalAddresses { what } if what == "ring at 0x1000"));
        assert!(err.to_string().contains("CAP_SYS_ADMIN"), "{err}");
        let err = decode(0, 0x2000, PAGE, "ring").unwrap_err();
        assert!(err.to_string().contains("not present"), "{err}");
        let err = decode(SWAPPED | 5, 0x2000, PAGE, "ring").unwrap_err();
        assert!(err.to_string().contains("swapped"), "{err}");
    }

    /// Whether this process sees PFNs: CAP_SYS_ADMIN (bit 21) in its effective set,
    /// in the initial user namespace (a rootless container's root does not count).
    fn has_cap_sys_admin() -> bool {
        let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let init_userns =
            uid_map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 21) != 0)
            && init_userns
    }

    #[test]
    fn probe_matches_capabilities() {
        let result = check_physical_addresses_readable();
        if has_cap_sys_admin() {
            result.unwrap();
        } else {
            assert!(
                matches!(result, Err(Error::NoPhysicalAddresses { .. })),
                "{result:?}"
            );
        }
    }
}
