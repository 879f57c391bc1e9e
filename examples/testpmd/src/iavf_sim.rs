//! `--vdev net_iavf_simN`: a simulated X710 (or X722, or E810) VF
//! (nicpoll-iavf's device model) driven by the real iavf PMD.
//!
//! Device arguments: `peer=net_iavf_simM` (back to back with that VF; both name
//! each other or one names the other), `iface=IF` (the VF's wire is a kernel
//! interface through AF_PACKET), `loopback=1`, `mac=`, `queues=` (queue pairs
//! the PF grants, default 4), `trusted=`, `spoofchk=`, `pf=` (the PF as Linux
//! 6.12 drives it: `i40e`, the default, `x722` or `ice`), and the PMD's own keys
//! (`promisc`, `watchdog_ms`, `rx_free_thresh`, `simd`). A lab VF defaults to trusted,
//! spoof checking off and promiscuous on, so io forwarding between two of them
//! works the way it does between two null or ring ports; `trusted=0,spoofchk=1,
//! promisc=0` gives the untrusted VF a cloud tenant gets.
//!
//! The VFs of one `pf=` flavour and one `pf_id=` (default 0) are VFs of one
//! simulated PF, served by its one polling thread (`iavf-sim-<pf><id>`), as
//! one adapter serves all its VFs: the demo's two VFs and its forwarding core
//! are two busy threads, not three. VFs given different `pf_id=`s get a
//! thread each.

use std::sync::{Arc, Mutex};

use nicpoll::memory::DmaMemory;
use nicpoll::port::{DevArgs, MacAddr};
use nicpoll::{Error, Result};
use nicpoll_iavf::sim::{PfModel, SimConfig, SimPf, Wire};
use nicpoll_iavf::{DmaMap, IavfPort};

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_iavf_sim";
const SIM_KEYS: &[&str] = &[
    "peer", "iface", "loopback", "mac", "queues", "trusted", "spoofchk", "pf", "pf_id",
];

/// The simulated PFs of this process, by flavour and `pf_id=`.
static PFS: Mutex<Vec<((PfModel, u8), SimPf)>> = Mutex::new(Vec::new());

/// The simulated PF `id` of flavour `model`, started on first use.
fn simulated_pf(model: PfModel, id: u8) -> Result<SimPf> {
    let mut pfs = PFS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, pf)) = pfs.iter().find(|(k, _)| *k == (model, id)) {
        return Ok(pf.clone());
    }
    let pf = SimPf::new(&format!("{model}{id}"), model)?;
    pfs.push(((model, id), pf.clone()));
    Ok(pf)
}

/// Create the simulated VF and its port.
pub fn create(d: &DevArgs, port_id: u16) -> Result<Box<dyn nicpoll::Port>> {
    let known: Vec<&str> = SIM_KEYS
        .iter()
        .chain(nicpoll_iavf::DEVARGS_KEYS)
        .copied()
        .collect();
    d.check_keys(&known)?;
    let bad = |reason: String| Error::DevArgs {
        device: d.spec.clone(),
        reason,
    };
    let wire = match (d.get("peer"), d.get("iface"), d.get_bool("loopback")?) {
        (Some(_), Some(_), _) | (Some(_), _, Some(true)) | (_, Some(_), Some(true)) => {
            return Err(bad("give one of peer=, iface= and loopback=1".into()));
        }
        (Some(p), None, _) => {
            if p == d.name || p.is_empty() {
                return Err(bad(format!("peer={p:?}: name another net_iavf_sim device")));
            }
            // Both ends use the same link name, whichever names the other.
            let (a, b) = if d.name.as_str() < p {
                (d.name.as_str(), p)
            } else {
                (p, d.name.as_str())
            };
            Wire::Peer(format!("{a}+{b}"))
        }
        (None, Some(i), _) => Wire::Iface(i.to_string()),
        (None, None, Some(true)) => Wire::Loopback,
        (None, None, _) => Wire::None,
    };
    let mac = match d.get("mac") {
        Some(m) => m
            .parse::<MacAddr>()
            .map_err(|e| bad(format!("mac=: {e}")))?,
        None => MacAddr([0x02, 0x00, 0x00, 0x00, 0x71, port_id as u8]),
    };
    let pf = match d.get("pf") {
        Some(p) => p.parse::<PfModel>().map_err(|e| bad(format!("pf=: {e}")))?,
        None => PfModel::default(),
    };
    let pf_id = d.get_u64("pf_id", 0..=255)?.unwrap_or(0) as u8;
    let cfg = SimConfig {
        pf,
        name: d.name.clone(),
        mac,
        queue_pairs: d.get_u64("queues", 1..=16)?.map(|q| q as u16).unwrap_or(4),
        trusted: d.get_bool("trusted")?.unwrap_or(true),
        spoofchk: d.get_bool("spoofchk")?.unwrap_or(false),
        wire,
        ..SimConfig::default()
    };
    let vf = Arc::new(simulated_pf(pf, pf_id)?.add_vf(cfg)?);
    // The PMD sees only its own keys; promiscuous is on unless asked otherwise.
    let mut pmd_args = DevArgs {
        spec: d.spec.clone(),
        name: d.name.clone(),
        driver: d.driver.clone(),
        args: d
            .args
            .iter()
            .filter(|(k, _)| nicpoll_iavf::DEVARGS_KEYS.contains(&k.as_str()))
            .cloned()
            .collect(),
    };
    if pmd_args.get("promisc").is_none() {
        pmd_args.args.push(("promisc".into(), "1".into()));
    }
    // Descriptor rings live in plain memory: the model reads them through the
    // IOVAs the driver maps into it, as a device behind an IOMMU would.
    let mem = Arc::new(DmaMemory::plain());
    let port = IavfPort::new(
        vf.bar(),
        vf.clone() as Arc<dyn DmaMap>,
        mem,
        &d.name,
        &pmd_args,
        port_id,
    )?;
    Ok(Box::new(port))
}
