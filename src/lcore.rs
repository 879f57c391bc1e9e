//! Lcores: the logical cores that run poll loops, their CPU sets, pinning, and
//! the per-thread lcore identity the mempool caches are keyed by.
//!
//! As in DPDK, `-l 0,1` makes lcore 0 (the main lcore: control, statistics)
//! and lcore 1 (forwarding); `-c 0x3` is the same as a mask; `--lcores 0@0,1@0`
//! maps lcore ids to CPU sets explicitly.
#![deny(unsafe_code)]

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Highest number of lcores (RTE_MAX_LCORE).
pub const MAX_LCORES: usize = 128;

thread_local! {
    static LCORE_ID: Cell<u32> = const { Cell::new(u32::MAX) };
}

static CLAIMED: [AtomicU64; MAX_LCORES / 64] = [const { AtomicU64::new(0) }; MAX_LCORES / 64];

/// The lcore id this thread holds, if it registered as one.
#[inline(always)]
pub fn current() -> Option<u32> {
    let id = LCORE_ID.with(|c| c.get());
    if id == u32::MAX { None } else { Some(id) }
}

/// Proof that this thread holds an lcore id; releases it when dropped.
#[derive(Debug)]
pub struct LcoreGuard {
    id: u32,
    // Not Send: the identity belongs to the thread that registered.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl LcoreGuard {
    /// The id held.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// Make the calling thread lcore `id`. Only one thread holds an id at a time, and
/// a thread holds at most one: the mempool caches rely on both.
pub fn register(id: u32) -> Result<LcoreGuard> {
    if id as usize >= MAX_LCORES {
        return Err(Error::Lcore {
            option: "lcore id",
            value: id.to_string(),
            reason: format!("lcore ids go from 0 to {}", MAX_LCORES - 1),
        });
    }
    if let Some(held) = current() {
        return Err(Error::Lcore {
            option: "lcore id",
            value: id.to_string(),
            reason: format!("this thread already is lcore {held}"),
        });
    }
    let word = &CLAIMED[id as usize / 64];
    let bit = 1u64 << (id % 64);
    // Acquire: see everything the previous holder did to the caches of this id.
    let prev = word.fetch_or(bit, Ordering::AcqRel);
    if prev & bit != 0 {
        return Err(Error::Lcore {
            option: "lcore id",
            value: id.to_string(),
            reason: "another thread already is this lcore".into(),
        });
    }
    LCORE_ID.with(|c| c.set(id));
    Ok(LcoreGuard {
        id,
        _not_send: std::marker::PhantomData,
    })
}

impl Drop for LcoreGuard {
    fn drop(&mut self) {
        LCORE_ID.with(|c| c.set(u32::MAX));
        // Release: the next holder sees this thread's cache contents.
        CLAIMED[self.id as usize / 64].fetch_and(!(1u64 << (self.id % 64)), Ordering::AcqRel);
    }
}

/// The CPUs this process may run on (sched_getaffinity), sorted.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None).map_err(|e| Error::Os {
        op: "sched_getaffinity (reading the CPUs this process may use)".into(),
        source: e.into(),
        hint: None,
    })?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| set.is_set(c))
        .collect())
}

/// Pin the calling thread to `cpus`.
pub fn pin_current(cpus: &[usize]) -> Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(|e| Error::Os {
        op: format!("sched_setaffinity to CPUs {cpus:?}"),
        source: e.into(),
        hint: Some("the CPUs must be in this container's cpuset (see `taskset -p $$`)"),
    })
}

/// One lcore: its id and the CPUs its thread is pinned to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lcore {
    /// Lcore id.
    pub id: u32,
    /// CPUs the thread may run on.
    pub cpus: Vec<usize>,
}

/// The lcores of a run; the first is the main lcore unless `main` says otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LcoreSet {
    /// All lcores, in the order given.
    pub lcores: Vec<Lcore>,
    /// Id of the main lcore.
    pub main: u32,
}

impl LcoreSet {
    /// The lcores other than the main one: the ones that forward.
    pub fn workers(&self) -> impl Iterator<Item = &Lcore> {
        self.lcores.iter().filter(move |l| l.id != self.main)
    }

    /// The main lcore.
    pub fn main_lcore(&self) -> &Lcore {
        self.lcores
            .iter()
            .find(|l| l.id == self.main)
            .expect("main lcore is in the set")
    }

    /// `-l` / `--lcores`-less default: every allowed CPU, lcore id = CPU number.
    pub fn from_cpus(cpus: &[usize]) -> LcoreSet {
        let lcores: Vec<Lcore> = cpus
            .iter()
            .filter(|&&c| c < MAX_LCORES)
            .map(|&c| Lcore {
                id: c as u32,
                cpus: vec![c],
            })
            .collect();
        let main = lcores.first().map(|l| l.id).unwrap_or(0);
        LcoreSet { lcores, main }
    }

    /// Check every CPU against the ones this process may use, and the main lcore id.
    pub fn validate(
        &mut self,
        option: &'static str,
        value: &str,
        allowed: &[usize],
        main: Option<u32>,
    ) -> Result<()> {
        let err = |reason: String| Error::Lcore {
            option,
            value: value.to_string(),
            reason,
        };
        if self.lcores.is_empty() {
            return Err(err("no lcore given".into()));
        }
        for l in &self.lcores {
            for c in &l.cpus {
                if !allowed.contains(c) {
                    return Err(err(format!(
                        "CPU {c} is not available to this process; the CPUs it may use are {}",
                        format_cpu_list(allowed)
                    )));
                }
            }
        }
        let mut ids: Vec<u32> = self.lcores.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(err("an lcore id appears twice".into()));
        }
        if let Some(m) = main {
            if !ids.contains(&m) {
                return Err(Error::Lcore {
                    option: "--main-lcore",
                    value: m.to_string(),
                    reason: format!("not one of the lcores given ({})", format_id_list(&ids)),
                });
            }
            self.main = m;
        }
        Ok(())
    }
}

fn parse_num(s: &str, option: &'static str, value: &str, form: &str) -> Result<usize> {
    s.trim().parse::<usize>().map_err(|_| Error::Lcore {
        option,
        value: value.to_string(),
        reason: format!("{s:?} is not a number; expected {form}"),
    })
}

/// The highest CPU number a kernel CPU list may name
/// ([`parse_kernel_cpu_list`]); Linux's `NR_CPUS` stays far below it.
pub const MAX_KERNEL_CPU: usize = 1 << 16;

/// Parse a CPU list such as `0-3,5,7-8` (DPDK's `-l`): lcore ids up to
/// [`MAX_LCORES`]` - 1`, in the order given, each once.
pub fn parse_cpu_list(value: &str, option: &'static str) -> Result<Vec<usize>> {
    parse_ranges(value, value, option, MAX_LCORES - 1, "lcore id")
}

/// Parse a CPU list as the kernel writes it (`/sys/devices/system/cpu/online`,
/// `Cpus_allowed_list`, cpuset files, `isolcpus=`): the grammar of
/// [`parse_cpu_list`], but an empty list is no CPU, empty parts are skipped,
/// CPU numbers go up to [`MAX_KERNEL_CPU`] (machines have more CPUs than we
/// have lcores), and the result is sorted. `what` names the list in errors.
pub fn parse_kernel_cpu_list(value: &str, what: &'static str) -> Result<Vec<usize>> {
    let parts: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let mut cpus = parse_ranges(&parts.join(","), value, what, MAX_KERNEL_CPU, "CPU number")?;
    cpus.sort_unstable();
    Ok(cpus)
}

/// The one parser of `A-B,C` lists: numbers up to `max` (a `max_name`), each
/// once, in the order given. Errors quote `shown` (the value as written).
fn parse_ranges(
    value: &str,
    shown: &str,
    option: &'static str,
    max: usize,
    max_name: &str,
) -> Result<Vec<usize>> {
    const FORM: &str = "a list like 0-3,5";
    let err = |reason: String| Error::Lcore {
        option,
        value: shown.to_string(),
        reason,
    };
    let mut out = Vec::new();
    if value.trim().is_empty() {
        return Err(err(format!("empty; expected {FORM}")));
    }
    // Which numbers are in `out` already: one bit each, so a long range costs
    // no quadratic search.
    let mut seen = vec![0u64; max / 64 + 1];
    for part in value.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                parse_num(a, option, shown, FORM)?,
                parse_num(b, option, shown, FORM)?,
            ),
            None => {
                let n = parse_num(part, option, shown, FORM)?;
                (n, n)
            }
        };
        if a > b {
            return Err(err(format!(
                "range {a}-{b} runs backwards; expected {FORM}"
            )));
        }
        if b > max {
            return Err(err(format!("{b} is above the highest {max_name} {max}")));
        }
        for c in a..=b {
            if seen[c / 64] & (1 << (c % 64)) == 0 {
                seen[c / 64] |= 1 << (c % 64);
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// Parse a hexadecimal core mask such as `0x6` or `f` (DPDK's `-c`).
pub fn parse_core_mask(value: &str) -> Result<Vec<usize>> {
    let hex = value
        .trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X");
    let bad = |reason: &str| Error::Lcore {
        option: "-c",
        value: value.to_string(),
        reason: format!("{reason}; expected a hexadecimal mask like 0x6"),
    };
    if hex.is_empty() || hex.len() > MAX_LCORES / 4 {
        return Err(bad("not a mask of 1 to 32 hex digits"));
    }
    let mut out = Vec::new();
    for (i, ch) in hex.chars().rev().enumerate() {
        let d = ch
            .to_digit(16)
            .ok_or_else(|| bad(&format!("{ch:?} is not a hex digit")))?;
        for bit in 0..4 {
            if d & (1 << bit) != 0 {
                out.push(i * 4 + bit);
            }
        }
    }
    if out.is_empty() {
        return Err(bad("the mask selects no core"));
    }
    Ok(out)
}

/// Parse DPDK's `--lcores` map: comma-separated groups `LCORES[@CPUS]`, where
/// each side is a number, a range, or a parenthesised list (`(0-1)@(2,3)`).
pub fn parse_lcores(value: &str) -> Result<LcoreSet> {
    const OPT: &str = "--lcores";
    let bad = |reason: String| Error::Lcore {
        option: OPT,
        value: value.to_string(),
        reason: format!("{reason}; expected groups like 0@0,1@1 or (0-1)@(2,3)"),
    };
    // Split on commas that are not inside parentheses.
    let mut groups = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, ch) in value.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(bad("unbalanced ')'".into()));
                }
            }
            ',' if depth == 0 => {
                groups.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad("unbalanced '('".into()));
    }
    groups.push(&value[start..]);
    let side = |s: &str| -> Result<Vec<usize>> {
        let s = s.trim();
        let inner = s
            .strip_prefix('(')
            .and_then(|x| x.strip_suffix(')'))
            .unwrap_or(s);
        parse_cpu_list(inner, OPT)
    };
    let mut lcores: Vec<Lcore> = Vec::new();
    for g in groups {
        if g.trim().is_empty() {
            return Err(bad("empty group".into()));
        }
        let (ids, cpus) = match g.split_once('@') {
            Some((l, c)) => (side(l)?, Some(side(c)?)),
            None => (side(g)?, None),
        };
        for id in ids {
            if lcores.iter().any(|l| l.id == id as u32) {
                return Err(bad(format!("lcore {id} appears twice")));
            }
            lcores.push(Lcore {
                id: id as u32,
                cpus: cpus.clone().unwrap_or_else(|| vec![id]),
            });
        }
    }
    let main = lcores[0].id;
    Ok(LcoreSet { lcores, main })
}

/// `0-3,5` style rendering of a CPU list.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

fn format_id_list(ids: &[u32]) -> String {
    format_cpu_list(&ids.iter().map(|&i| i as usize).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An lcore may own a CPU set (`--lcores 1@(0,1)`): the thread is pinned to
    /// all of it, as the kernel reports back (one CPU where only one is allowed).
    #[test]
    fn pinning_takes_a_whole_cpu_set() {
        let allowed = allowed_cpus().unwrap();
        let set: Vec<usize> = allowed.iter().copied().take(2).collect();
        let got = std::thread::spawn(move || {
            pin_current(&set).unwrap();
            (set, allowed_cpus().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(got.1, got.0);
        // The caller's own mask is untouched.
        assert_eq!(allowed_cpus().unwrap(), allowed);
        let e = pin_current(&[MAX_CPU_PROBE]).unwrap_err().to_string();
        assert!(
            e.contains("sched_setaffinity") && e.contains("cpuset"),
            "{e}"
        );
    }

    /// A CPU no machine of ours has (rustix's CpuSet holds 1024).
    const MAX_CPU_PROBE: usize = 1000;

    #[test]
    fn cpu_lists_ranges_and_errors() {
        assert_eq!(parse_cpu_list("0-2,5", "-l").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_cpu_list("1", "-l").unwrap(), vec![1]);
        for bad in ["", "a", "3-1", "1,,2", "0-", "200"] {
            let e = parse_cpu_list(bad, "-l").unwrap_err().to_string();
            assert!(e.starts_with("-l "), "{e}");
        }
    }

    #[test]
    fn kernel_cpu_lists_are_sorted_may_be_empty_and_go_past_the_lcores() {
        let p = |s| parse_kernel_cpu_list(s, "cpu list").ok();
        assert_eq!(p("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(p("\n"), Some(vec![]));
        assert_eq!(p("200-201"), Some(vec![200, 201]));
        assert_eq!(p("3-1"), None);
        assert_eq!(p("x"), None);
        assert_eq!(p("8,2-3,3"), Some(vec![2, 3, 8]));
        assert_eq!(p("65536"), Some(vec![65536]));
        assert_eq!(p("65537"), None);
    }

    #[test]
    fn core_masks() {
        assert_eq!(parse_core_mask("0x6").unwrap(), vec![1, 2]);
        assert_eq!(parse_core_mask("F").unwrap(), vec![0, 1, 2, 3]);
        assert!(
            parse_core_mask("0x0")
                .unwrap_err()
                .to_string()
                .contains("selects no core")
        );
        assert!(
            parse_core_mask("0xg")
                .unwrap_err()
                .to_string()
                .contains("hex")
        );
    }

    #[test]
    fn lcore_maps() {
        let s = parse_lcores("0@0,1@0").unwrap();
        assert_eq!(s.main, 0);
        assert_eq!(
            s.lcores[1],
            Lcore {
                id: 1,
                cpus: vec![0]
            }
        );
        let s = parse_lcores("(0-1)@(2,3),4").unwrap();
        assert_eq!(s.lcores.len(), 3);
        assert_eq!(s.lcores[0].cpus, vec![2, 3]);
        assert_eq!(
            s.lcores[2],
            Lcore {
                id: 4,
                cpus: vec![4]
            }
        );
        assert!(parse_lcores("0@0,0@1").is_err());
        assert!(parse_lcores("(0@1").is_err());
        assert!(parse_lcores("0@").is_err());
    }

    #[test]
    fn validation_rejects_cpus_we_do_not_have() {
        let mut s = LcoreSet::from_cpus(&[0, 1, 7]);
        let e = s
            .validate("-l", "0,1,7", &[0, 1], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("CPU 7 is not available"), "{e}");
        assert!(e.contains("0-1"), "{e}");
        let mut s = LcoreSet::from_cpus(&[0, 1]);
        s.validate("-l", "0,1", &[0, 1], Some(1)).unwrap();
        assert_eq!(s.main, 1);
        assert_eq!(s.workers().map(|l| l.id).collect::<Vec<_>>(), vec![0]);
        assert!(s.validate("-l", "0,1", &[0, 1], Some(5)).is_err());
    }

    #[test]
    fn registration_is_exclusive_and_released() {
        let g = register(100).unwrap();
        assert_eq!(current(), Some(100));
        assert!(register(101).is_err(), "one id per thread");
        let other = std::thread::spawn(|| register(100).map(|_| ()).is_err())
            .join()
            .unwrap();
        assert!(other, "one thread per id");
        drop(g);
        assert_eq!(current(), None);
        std::thread::spawn(|| register(100).map(|_| ()).unwrap())
            .join()
            .unwrap();
    }

    #[test]
    fn format_lists() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
    }
}
