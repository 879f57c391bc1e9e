//! Being written: the iavf PMD and (feature `sim`) the simulated VF.
#[cfg(feature = "sim")]
pub mod sim;
