//! A monotonic nanosecond clock shared by every process on the machine
//! (CLOCK_MONOTONIC, read through the vDSO: no system call), so a timestamp one
//! testpmd writes into a packet is comparable with the clock of another.
#![deny(unsafe_code)]

/// Nanoseconds on CLOCK_MONOTONIC.
#[inline(always)]
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic() {
        let a = super::now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::now_ns();
        assert!(b - a >= 2_000_000, "{a} {b}");
    }
}
