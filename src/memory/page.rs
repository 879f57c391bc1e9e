//! The base (not huge) page size, which regions and the pagemap reader both
//! need.
#![deny(unsafe_code)]

/// The size of a base (not huge) page: `sysconf(_SC_PAGESIZE)`, which
/// rustix reads from the auxiliary vector without a call.
pub(crate) fn base_page_size() -> usize {
    rustix::param::page_size()
}
