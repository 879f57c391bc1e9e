//! Which frames the port takes from the kernel: the flow rules of the default
//! mode (the interface's MAC and `mac=` addresses, by traffic type) and of
//! isolated mode (exactly the `flow=` rules), each with the hash QP it goes
//! to, and the sentence the port prints at start about what it takes.
#![deny(unsafe_code)]

use nicpoll::port::MacAddr;

use crate::flow::FlowRule;
use crate::options::FlowPattern;
use crate::verbs::{
    IBV_RX_HASH_DST_IPV4, IBV_RX_HASH_DST_IPV6, IBV_RX_HASH_DST_PORT_TCP, IBV_RX_HASH_DST_PORT_UDP,
    IBV_RX_HASH_SRC_IPV4, IBV_RX_HASH_SRC_IPV6, IBV_RX_HASH_SRC_PORT_TCP, IBV_RX_HASH_SRC_PORT_UDP,
};

/// The traffic types of the hash QPs (DPDK's `hash_rxq_init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashKind {
    /// TCP over IPv4.
    Tcp4,
    /// UDP over IPv4.
    Udp4,
    /// Other IPv4.
    Ip4,
    /// TCP over IPv6.
    Tcp6,
    /// UDP over IPv6.
    Udp6,
    /// Other IPv6.
    Ip6,
    /// Everything else (queue 0, no hash).
    Eth,
}

impl HashKind {
    /// Every kind.
    pub const ALL: [HashKind; 7] = [
        HashKind::Tcp4,
        HashKind::Udp4,
        HashKind::Ip4,
        HashKind::Tcp6,
        HashKind::Udp6,
        HashKind::Ip6,
        HashKind::Eth,
    ];

    /// The kinds with a hash QP for `nb_rxq` queues.
    pub fn for_queues(nb_rxq: u16) -> &'static [HashKind] {
        if nb_rxq > 1 {
            &HashKind::ALL
        } else {
            &HashKind::ALL[6..]
        }
    }

    /// The RX hash fields of its QP.
    pub fn fields(self) -> u64 {
        let v4 = IBV_RX_HASH_SRC_IPV4 | IBV_RX_HASH_DST_IPV4;
        let v6 = IBV_RX_HASH_SRC_IPV6 | IBV_RX_HASH_DST_IPV6;
        let tcp = IBV_RX_HASH_SRC_PORT_TCP | IBV_RX_HASH_DST_PORT_TCP;
        let udp = IBV_RX_HASH_SRC_PORT_UDP | IBV_RX_HASH_DST_PORT_UDP;
        match self {
            HashKind::Tcp4 => v4 | tcp,
            HashKind::Udp4 => v4 | udp,
            HashKind::Ip4 => v4,
            HashKind::Tcp6 => v6 | tcp,
            HashKind::Udp6 => v6 | udp,
            HashKind::Ip6 => v6,
            HashKind::Eth => 0,
        }
    }

    /// Its IP version.
    pub fn ipv6(self) -> Option<bool> {
        match self {
            HashKind::Tcp4 | HashKind::Udp4 | HashKind::Ip4 => Some(false),
            HashKind::Tcp6 | HashKind::Udp6 | HashKind::Ip6 => Some(true),
            HashKind::Eth => None,
        }
    }

    /// Its L4 protocol.
    pub fn tcp(self) -> Option<bool> {
        match self {
            HashKind::Tcp4 | HashKind::Tcp6 => Some(true),
            HashKind::Udp4 | HashKind::Udp6 => Some(false),
            _ => None,
        }
    }

    /// More specific rules must win: lower number, higher priority.
    pub fn priority(self) -> u16 {
        match self {
            HashKind::Tcp4 | HashKind::Udp4 | HashKind::Tcp6 | HashKind::Udp6 => 0,
            HashKind::Ip4 | HashKind::Ip6 => 1,
            HashKind::Eth => 2,
        }
    }
}

/// The kind of traffic a rule matches, for its hash QP and priority.
fn kind_of(ipv6: Option<bool>, tcp: Option<bool>) -> HashKind {
    match (ipv6, tcp) {
        (Some(false), Some(true)) => HashKind::Tcp4,
        (Some(false), Some(false)) => HashKind::Udp4,
        (Some(false), None) => HashKind::Ip4,
        (Some(true), Some(true)) => HashKind::Tcp6,
        (Some(true), Some(false)) => HashKind::Udp6,
        (Some(true), None) => HashKind::Ip6,
        (None, _) => HashKind::Eth,
    }
}

/// The default mode's rules: for each destination MAC (`None`: promiscuous,
/// any) and VLAN (`None`: any), one rule per traffic type in `kinds`.
pub fn default_rules(
    port: u8,
    macs: &[Option<[u8; 6]>],
    vlans: &[u16],
    kinds: &[HashKind],
) -> Vec<(HashKind, FlowRule)> {
    let vlans: Vec<Option<u16>> = if vlans.is_empty() {
        vec![None]
    } else {
        vlans.iter().map(|v| Some(*v)).collect()
    };
    let mut rules = Vec::new();
    for mac in macs {
        for vlan in &vlans {
            for kind in kinds {
                rules.push((
                    *kind,
                    FlowRule {
                        priority: kind.priority(),
                        port,
                        dst_mac: *mac,
                        vlan: *vlan,
                        ipv6: kind.ipv6(),
                        tcp: kind.tcp(),
                        ..FlowRule::default()
                    },
                ));
            }
        }
    }
    rules
}

/// Isolated mode's rules: each `flow=` pattern, once per IP version when it
/// names an IP protocol or port without saying which version. More specific
/// rules get the higher priority, as in the default mode.
pub fn isolated_rules(port: u8, flows: &[FlowPattern]) -> Vec<(HashKind, FlowRule)> {
    let mut rules = Vec::new();
    for f in flows {
        let versions: Vec<Option<bool>> = match f.ipv6 {
            Some(v) => vec![Some(v)],
            None if f.ip_proto.is_some() || f.tcp.is_some() => vec![Some(false), Some(true)],
            None => vec![None],
        };
        for ipv6 in versions {
            let kind = kind_of(ipv6, f.tcp);
            rules.push((
                kind,
                FlowRule {
                    priority: kind.priority(),
                    port,
                    dst_mac: f.dst_mac,
                    vlan: f.vlan,
                    ether_type: f.ether_type,
                    ipv6,
                    ip_proto: f.ip_proto,
                    tcp: f.tcp,
                    dst_port: f.dst_port,
                },
            ));
        }
    }
    rules
}

/// What the port takes from the kernel, said at start.
pub fn summary(
    netdev: &str,
    mac: MacAddr,
    extra_macs: &[MacAddr],
    vlans: &[u16],
    isolated: &[FlowPattern],
    promisc: bool,
) -> String {
    if !isolated.is_empty() {
        let rules: Vec<String> = isolated.iter().map(describe).collect();
        return format!(
            "isolated mode: only {} go to this port; every other frame stays with {netdev}",
            rules.join("; ")
        );
    }
    let mut macs = vec![mac.to_string()];
    macs.extend(extra_macs.iter().map(|m| m.to_string()));
    let vlan = if vlans.is_empty() {
        String::new()
    } else {
        format!(
            " tagged with VLAN {}",
            vlans
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut s = format!(
        "takes every unicast frame to {}{vlan} from {netdev} (its TCP and UDP, ARP replies, \
         IPv6 neighbour discovery: SSH to {netdev} stops while the port runs); broadcast and \
         multicast stay with the kernel",
        macs.join(", ")
    );
    if promisc {
        s.push_str("; promiscuous mode takes every frame, broadcast and multicast included");
    }
    s.push_str(". isolated=1 with flow= rules takes only what they name.");
    s
}

/// A pattern in words (`UDP port 4789 over IPv4 or IPv6`).
pub fn describe(f: &FlowPattern) -> String {
    let mut parts: Vec<String> = Vec::new();
    match (f.tcp, f.dst_port) {
        (Some(t), Some(p)) => parts.push(format!("{} port {p}", if t { "TCP" } else { "UDP" })),
        (Some(t), None) => parts.push((if t { "TCP" } else { "UDP" }).to_string()),
        _ => {}
    }
    if let Some(p) = f.ip_proto {
        parts.push(format!("IP protocol {p}"));
    }
    if let Some(et) = f.ether_type {
        parts.push(format!("EtherType {et:#06x}"));
    }
    parts.push(match f.ipv6 {
        Some(false) => "IPv4".into(),
        Some(true) => "IPv6".into(),
        None if f.tcp.is_some() || f.ip_proto.is_some() => "IPv4 or IPv6".into(),
        None if f.ether_type.is_none() => "any frame".into(),
        None => String::new(),
    });
    if let Some(m) = f.dst_mac {
        parts.push(format!("to {}", MacAddr(m)));
    }
    if let Some(v) = f.vlan {
        parts.push(format!("on VLAN {v}"));
    }
    parts.retain(|p| !p.is_empty());
    format!("frames of {}", parts.join(" "))
}
