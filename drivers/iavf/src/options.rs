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

/// The widest vector loops a port's queues may run (devarg `simd`), as
/// DPDK's EAL option `--force-max-simd-bitwidth` caps its drivers' paths.
/// Each queue runs the widest loops the CPU has within it
/// ([`Loops::choose`](crate::ring::Loops::choose)): AVX2, else SSE4.1, else
/// scalar.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxSimd {
    /// The scalar loops only (`simd=0` or `simd=64`).
    Scalar,
    /// At most the SSE4.1 loops (`simd=128`).
    Sse,
    /// The best loops the CPU has (`simd=1`, `256` or `512`; the default).
    #[default]
    Best,
}

impl MaxSimd {
    /// The value of the `simd` devarg (or `IAVF_BENCH_SIMD`); None if it is
    /// not one of the accepted widths.
    pub fn parse(v: &str) -> Option<MaxSimd> {
        match v.trim() {
            "0" | "64" => Some(MaxSimd::Scalar),
            "128" => Some(MaxSimd::Sse),
            "1" | "256" | "512" => Some(MaxSimd::Best),
            _ => None,
        }
    }
}

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
    /// The widest vector receive and transmit loops the queues may run
    /// (`simd`, as DPDK's `--force-max-simd-bitwidth`: `0` or `64` scalar,
    /// `128` at most SSE4.1, `1`, `256` or `512` the best the CPU has, the
    /// default). Every kind delivers the same packets.
    pub simd: MaxSimd,
    /// How long to wait for the device and the PF.
    pub timeouts: Timeouts,
}

impl Default for IavfOptions {
    fn default() -> Self {
        IavfOptions {
            promisc: false,
            watchdog: Some(Duration::from_millis(100)),
            rx_free_thresh: 32,
            simd: MaxSimd::Best,
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
            simd: match args.get("simd") {
                None => d.simd,
                Some(v) => MaxSimd::parse(v).ok_or_else(|| nicpoll::Error::DevArgs {
                    device: args.spec.clone(),
                    reason: format!(
                        "simd={v:?} is not a SIMD width; use 0 or 64 (scalar loops), 128 (at \
                         most SSE4.1) or 1, 256 or 512 (the best loops this CPU has: AVX2, \
                         else SSE4.1)"
                    ),
                })?,
            },
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
        assert_eq!(o.simd, MaxSimd::Scalar);
        let d =
            IavfOptions::from_devargs(&DevArgs::parse("net_iavf_sim0,peer=x").unwrap()).unwrap();
        assert_eq!(d, IavfOptions::default());
        for bad in [
            "x,promisc=maybe",
            "x,watchdog_ms=-1",
            "x,rx_free_thresh=0",
            "x,simd=avx",
            "x,simd=2",
            "x,simd=32",
        ] {
            assert!(
                IavfOptions::from_devargs(&DevArgs::parse(bad).unwrap()).is_err(),
                "{bad}"
            );
        }
    }

    /// `simd` takes DPDK's `--force-max-simd-bitwidth` values (and 0/1, as
    /// before); anything else is refused with the accepted values named.
    #[test]
    fn simd_widths_as_dpdk_bitwidths() {
        let simd = |v: &str| {
            IavfOptions::from_devargs(&DevArgs::parse(&format!("x,simd={v}")).unwrap())
                .map(|o| o.simd)
        };
        for (v, want) in [
            ("0", MaxSimd::Scalar),
            ("64", MaxSimd::Scalar),
            ("128", MaxSimd::Sse),
            ("1", MaxSimd::Best),
            ("256", MaxSimd::Best),
            ("512", MaxSimd::Best),
        ] {
            assert_eq!(simd(v).unwrap(), want, "simd={v}");
        }
        assert_eq!(IavfOptions::default().simd, MaxSimd::Best);
        for bad in ["avx", "sse", "2", "127", "-1"] {
            let e = simd(bad).unwrap_err().to_string();
            assert!(
                e.contains("x,simd=")
                    && e.contains(&format!("simd={bad:?}"))
                    && e.contains("0 or 64")
                    && e.contains("128")
                    && e.contains("256"),
                "simd={bad}: {e}"
            );
        }
    }
}
