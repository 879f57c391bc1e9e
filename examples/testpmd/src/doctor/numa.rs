//! NUMA: each device's node against our CPUs' nodes and the nodes with free
//! hugepages.

use std::collections::BTreeMap;

use nicpoll::lcore::format_cpu_list;
use nicpoll::memory::hugepage::{self, HugepageSize};

use super::cpu::{our_cpus, parse_kernel_cpus};
use super::devices::Dev;
use super::host::Host;
use super::{Finding, Status};

/// NUMA nodes and their CPUs (`/sys/devices/system/node/nodeN/cpulist`).
pub(super) fn numa_nodes(host: &Host<'_>) -> BTreeMap<u32, Vec<usize>> {
    host.list("/sys/devices/system/node")
        .iter()
        .filter_map(|n| {
            let id: u32 = n.strip_prefix("node")?.parse().ok()?;
            let cpus = host
                .read(&format!("/sys/devices/system/node/{n}/cpulist"))
                .and_then(|l| parse_kernel_cpus(&l))
                .unwrap_or_default();
            Some((id, cpus))
        })
        .collect()
}

/// Free pages of `size` on node `id`, if the node shows the pool.
pub(super) fn node_free_pages(host: &Host<'_>, id: u32, size: HugepageSize) -> Option<u64> {
    host.read_trimmed(&format!(
        "/sys/devices/system/node/node{id}/hugepages/hugepages-{}kB/free_hugepages",
        size.kib()
    ))?
    .parse()
    .ok()
}

/// `numa BDF`: the device's node vs our CPUs' nodes vs the nodes with free
/// hugepages (of the default size).
pub(super) fn check_numa(host: &Host<'_>, dev: &Dev) -> Option<Finding> {
    let d = dev.info.as_ref().ok()?;
    let name = format!("numa {}", dev.addr);
    let nodes = numa_nodes(host);
    let Some(node) = d.numa_node else {
        return Some(Finding::pass(
            name,
            "the device has no NUMA node (numa_node -1: one node, or a VM that shows no affinity)",
        ));
    };
    if nodes.len() <= 1 {
        return Some(Finding::pass(
            name,
            format!("node {node}, the machine's only NUMA node"),
        ));
    }
    let cpus = our_cpus(host).map(|(c, _)| c).unwrap_or_default();
    let cpu_nodes: Vec<u32> = nodes
        .iter()
        .filter(|(_, nc)| nc.iter().any(|c| cpus.contains(c)))
        .map(|(id, _)| *id)
        .collect();
    let size = hugepage::meminfo_in(&host.root)
        .ok()
        .and_then(|m| m.default_size);
    let huge_nodes: Vec<u32> = match size {
        Some(s) => nodes
            .keys()
            .copied()
            .filter(|id| node_free_pages(host, *id, s).unwrap_or(0) > 0)
            .collect(),
        None => Vec::new(),
    };
    let ids = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let found = format!(
        "device on node {node}; our CPUs on node(s) {}; free hugepages on node(s) {}",
        ids(&cpu_nodes),
        ids(&huge_nodes)
    );
    let cpu_ok = cpu_nodes.contains(&node);
    let huge_ok = huge_nodes.contains(&node);
    if cpu_ok && huge_ok {
        return Some(Finding::pass(name, format!("{found}: local")));
    }
    let mut far = Vec::new();
    if !cpu_ok {
        far.push("no CPU of ours is on the device's node");
    }
    if !huge_ok {
        far.push("the device's node has no free hugepages");
    }
    let node_cpus = nodes
        .get(&node)
        .map(|c| format_cpu_list(c))
        .unwrap_or_default();
    let kib = size.map_or(2048, HugepageSize::kib);
    Some(
        Finding::new(
            name,
            Status::Warn,
            format!("{found}: {} (every packet crosses the interconnect)", far.join("; ")),
        )
        .fix(format!(
            "{}CPUs {node_cpus} and hugepages of node {node}: in Kubernetes the kubelet's topology manager \
             (topologyManagerPolicy: single-numa-node) with the static CPU manager; on a host, -l from {node_cpus} and \
             echo N > /sys/devices/system/node/node{node}/hugepages/hugepages-{kib}kB/nr_hugepages; in a VM the hypervisor places vCPUs, memory and VFs",
            if host.in_pod { "" } else { "use " }
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::testing::*;

    #[test]
    fn numa_locality() {
        let t = Tree::good();
        let name = "numa 0000:00:07.0";
        expect_saying(&t.vf(), name, Status::Pass, "", "no NUMA node");
        // Two nodes: CPUs 0-3 and 4-7, device on node 1, hugepages on node 0.
        t.status(0x1ff_ffff_ffff, "1-3")
            .write("sys/devices/system/node/node0/cpulist", "0-3\n")
            .write("sys/devices/system/node/node1/cpulist", "4-7\n")
            .write(
                "sys/devices/system/node/node1/hugepages/hugepages-1048576kB/free_hugepages",
                "0\n",
            )
            .device(&FakeDev {
                numa: 1,
                ..FakeDev::default()
            });
        let f = expect_saying(
            &t.vf(),
            name,
            Status::Warn,
            "single-numa-node",
            "device on node 1; our CPUs on node(s) 0; free hugepages on node(s) 0",
        );
        assert!(
            f.fix.as_deref().unwrap().contains(
                "/sys/devices/system/node/node1/hugepages/hugepages-1048576kB/nr_hugepages"
            )
        );
        t.status(0x1ff_ffff_ffff, "4-6").write(
            "sys/devices/system/node/node1/hugepages/hugepages-1048576kB/free_hugepages",
            "4\n",
        );
        expect_saying(&t.vf(), name, Status::Pass, "", "local");
    }
}
