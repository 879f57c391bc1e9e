//! Device arguments of an iavf port (`-a 0000:03:02.0,promisc=1`).
#![deny(unsafe_code)]

use std::time::Duration;

use nicpoll::Result;
use nicpoll::port::DevArgs;

use crate::vf::Timeouts;

/// The keys [`IavfOptions::from_devargs`] reads. A registry that also passes
/// keys meant for a simulated device (`peer=`, `iface=`, ...) checks the union
/// with `DevArgs::check_keys`; unknown keys are not refused here.
pub const DEVARGS_KEYS: &[&str] = &["promisc", "watchdog_ms", "rx_free_thresh", "simd"];

/// Options of an iavf port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IavfOptions {
    /// Turn promiscuous mode on at creation (`promisc=1`).
    pub promisc: bool,
    /// Period of the control thread that drains the PF's events and recovers
    /// from VF resets (`watchdog_ms`, default 100; 0: none, the application
    /// calls `poll_events`, `stats` or `link` itself).
    pub watchdog: Option<Duration>,
    /// Refill the receive ring once this many descriptors are free
    /// (`rx_free_thresh`, default 32 as DPDK's `IAVF_DEFAULT_RX_FREE_THRESH`).
    pub rx_free_thresh: u16,
    /// Run the receive and transmit loops with AVX2 when the CPU has it
    /// (`simd`, default 1; `simd=0`: the scalar loops, as DPDK's
    /// `--force-max-simd-bitwidth=64`). Both deliver the same packets.
    pub simd: bool,
    /// How long to wait for the device and the PF.
    pub timeouts: Timeouts,
}

impl Default for IavfOptions {
    fn default() -> Self {
        IavfOptions {
            promisc: false,
            watchdog: Some(Duration::from_millis(100)),
            rx_free_thresh: 32,
            simd: true,
            timeouts: Timeouts::default(),
        }
    }
}

impl IavfOptions {
    /// Read the keys of [`DEVARGS_KEYS`]; other keys are left to the caller.
    pub fn from_devargs(args: &DevArgs) -> Result<IavfOptions> {
        let d = IavfOptions::default();
        let watchdog = match args.get_u64("watchdog_ms", 0..=60_000)? {
            None => d.watchdog,
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        Ok(IavfOptions {
            promisc: args.get_bool("promisc")?.unwrap_or(d.promisc),
            watchdog,
            rx_free_thresh: args
                .get_u64("rx_free_thresh", 1..=4064)?
                .map(|v| v as u16)
                .unwrap_or(d.rx_free_thresh),
            simd: args.get_bool("simd")?.unwrap_or(d.simd),
            timeouts: d.timeouts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let o = IavfOptions::from_devargs(
            &DevArgs::parse("0000:03:02.0,promisc=1,watchdog_ms=0,rx_free_thresh=64,simd=0")
                .unwrap(),
        )
        .unwrap();
        assert!(o.promisc);
        assert_eq!(o.watchdog, None);
        assert_eq!(o.rx_free_thresh, 64);
        assert!(!o.simd);
        let d =
            IavfOptions::from_devargs(&DevArgs::parse("net_iavf_sim0,peer=x").unwrap()).unwrap();
        assert_eq!(d, IavfOptions::default());
        for bad in [
            "x,promisc=maybe",
            "x,watchdog_ms=-1",
            "x,rx_free_thresh=0",
            "x,simd=avx",
        ] {
            assert!(
                IavfOptions::from_devargs(&DevArgs::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }
}
