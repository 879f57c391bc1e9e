//! Flow rules as `ibv_create_flow` reads them: an `ibv_flow_attr` followed by
//! its specs, encoded from a [`FlowRule`] at the mirrors' offsets. Plain bytes,
//! no calls (the FFI layer hands the buffer to the library).
#![deny(unsafe_code)]

use std::mem::{offset_of, size_of};

use crate::verbs::ffi::*;

/// One flow rule: an Ethernet match plus optional L3/L4 matches, steered to a
/// hash QP. `None` fields match anything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRule {
    /// Lower wins.
    pub priority: u16,
    /// IB port number (1-based).
    pub port: u8,
    /// Destination MAC to match (`None`: any).
    pub dst_mac: Option<[u8; 6]>,
    /// VLAN id to match (`None`: any, tagged or not).
    pub vlan: Option<u16>,
    /// EtherType to match, for non-IP protocols (IP is matched by `ipv6`).
    pub ether_type: Option<u16>,
    /// Match IPv4 (`Some(false)`) or IPv6 (`Some(true)`).
    pub ipv6: Option<bool>,
    /// IP protocol / IPv6 next header to match, other than TCP and UDP
    /// (those are `tcp`); needs `ipv6`.
    pub ip_proto: Option<u8>,
    /// Match TCP (`Some(true)`) or UDP (`Some(false)`); needs `ipv6`.
    pub tcp: Option<bool>,
    /// TCP/UDP destination port to match; needs `tcp`.
    pub dst_port: Option<u16>,
}

impl FlowRule {
    /// `ibv_flow_attr` followed by its specs, as `ibv_create_flow` reads them,
    /// written field by field at the mirrors' offsets (padding stays zero).
    /// Multi-byte match values are in network byte order. Returned in u64
    /// words so the buffer is 8-aligned.
    pub fn encode(&self) -> Vec<u64> {
        let eth = size_of::<IbvFlowSpecEth>();
        let l3 = match (self.ipv6, self.ip_proto) {
            (Some(false), None) => size_of::<IbvFlowSpecIpv4>(),
            (Some(false), Some(_)) => size_of::<IbvFlowSpecIpv4Ext>(),
            (Some(true), _) => size_of::<IbvFlowSpecIpv6>(),
            (None, _) => 0,
        };
        let l4 = if self.tcp.is_some() {
            size_of::<IbvFlowSpecTcpUdp>()
        } else {
            0
        };
        let total = size_of::<IbvFlowAttr>() + eth + l3 + l4;
        let mut b = vec![0u8; total.div_ceil(8) * 8];
        let put = |b: &mut [u8], at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        let n_specs = 1 + (l3 != 0) as u8 + (l4 != 0) as u8;
        // ibv_flow_attr
        put(
            &mut b,
            offset_of!(IbvFlowAttr, type_),
            &IBV_FLOW_ATTR_NORMAL.to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(IbvFlowAttr, size),
            &(total as u16).to_ne_bytes(),
        );
        put(
            &mut b,
            offset_of!(IbvFlowAttr, priority),
            &self.priority.to_ne_bytes(),
        );
        put(&mut b, offset_of!(IbvFlowAttr, num_of_specs), &[n_specs]);
        put(&mut b, offset_of!(IbvFlowAttr, port), &[self.port]);
        // ibv_flow_spec_eth
        let e = size_of::<IbvFlowAttr>();
        put(
            &mut b,
            e + offset_of!(IbvFlowSpecEth, type_),
            &IBV_FLOW_SPEC_ETH.to_ne_bytes(),
        );
        put(
            &mut b,
            e + offset_of!(IbvFlowSpecEth, size),
            &(eth as u16).to_ne_bytes(),
        );
        let val = e + offset_of!(IbvFlowSpecEth, val);
        let mask = e + offset_of!(IbvFlowSpecEth, mask);
        if let Some(mac) = self.dst_mac {
            put(&mut b, val + offset_of!(IbvFlowEthFilter, dst_mac), &mac);
            put(
                &mut b,
                mask + offset_of!(IbvFlowEthFilter, dst_mac),
                &[0xff; 6],
            );
        }
        if let Some(vid) = self.vlan {
            put(
                &mut b,
                val + offset_of!(IbvFlowEthFilter, vlan_tag),
                &(vid & 0x0fff).to_be_bytes(),
            );
            put(
                &mut b,
                mask + offset_of!(IbvFlowEthFilter, vlan_tag),
                &0x0fffu16.to_be_bytes(),
            );
        }
        // The kernel matches the IP version itself for an L3 spec (mlx5_ib
        // fs.c parse_flow_attr); an EtherType is given only without one.
        if let (Some(et), None) = (self.ether_type, self.ipv6) {
            put(
                &mut b,
                val + offset_of!(IbvFlowEthFilter, ether_type),
                &et.to_be_bytes(),
            );
            put(
                &mut b,
                mask + offset_of!(IbvFlowEthFilter, ether_type),
                &0xffffu16.to_be_bytes(),
            );
        }
        let mut at = e + eth;
        match (self.ipv6, self.ip_proto) {
            (Some(false), None) => {
                put(&mut b, at, &IBV_FLOW_SPEC_IPV4.to_ne_bytes());
                put(
                    &mut b,
                    at + offset_of!(IbvFlowSpecIpv4, size),
                    &(l3 as u16).to_ne_bytes(),
                );
            }
            (Some(false), Some(proto)) => {
                put(&mut b, at, &IBV_FLOW_SPEC_IPV4_EXT.to_ne_bytes());
                put(
                    &mut b,
                    at + offset_of!(IbvFlowSpecIpv4Ext, size),
                    &(l3 as u16).to_ne_bytes(),
                );
                let p = offset_of!(IbvFlowIpv4ExtFilter, proto);
                put(
                    &mut b,
                    at + offset_of!(IbvFlowSpecIpv4Ext, val) + p,
                    &[proto],
                );
                put(
                    &mut b,
                    at + offset_of!(IbvFlowSpecIpv4Ext, mask) + p,
                    &[0xff],
                );
            }
            (Some(true), proto) => {
                put(&mut b, at, &IBV_FLOW_SPEC_IPV6.to_ne_bytes());
                put(
                    &mut b,
                    at + offset_of!(IbvFlowSpecIpv6, size),
                    &(l3 as u16).to_ne_bytes(),
                );
                if let Some(proto) = proto {
                    let p = offset_of!(IbvFlowIpv6Filter, next_hdr);
                    put(&mut b, at + offset_of!(IbvFlowSpecIpv6, val) + p, &[proto]);
                    put(&mut b, at + offset_of!(IbvFlowSpecIpv6, mask) + p, &[0xff]);
                }
            }
            (None, _) => {}
        }
        at += l3;
        if let Some(tcp) = self.tcp {
            let ty = if tcp {
                IBV_FLOW_SPEC_TCP
            } else {
                IBV_FLOW_SPEC_UDP
            };
            put(&mut b, at, &ty.to_ne_bytes());
            put(
                &mut b,
                at + offset_of!(IbvFlowSpecTcpUdp, size),
                &(l4 as u16).to_ne_bytes(),
            );
            if let Some(port) = self.dst_port {
                let d = offset_of!(IbvFlowTcpUdpFilter, dst_port);
                put(
                    &mut b,
                    at + offset_of!(IbvFlowSpecTcpUdp, val) + d,
                    &port.to_be_bytes(),
                );
                put(
                    &mut b,
                    at + offset_of!(IbvFlowSpecTcpUdp, mask) + d,
                    &0xffffu16.to_be_bytes(),
                );
            }
        }
        b.chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_rule_encoding_is_attr_then_contiguous_specs() {
        let rule = FlowRule {
            priority: 1,
            port: 1,
            dst_mac: Some([2, 0, 0, 0, 0, 1]),
            vlan: Some(100),
            ipv6: Some(false),
            tcp: Some(true),
            ..FlowRule::default()
        };
        let words = rule.encode();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let total = 20 + 40 + 24 + 16;
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]) as usize, total);
        assert_eq!(u16::from_le_bytes([bytes[10], bytes[11]]), 1, "priority");
        assert_eq!(bytes[12], 3, "num_of_specs");
        assert_eq!(bytes[13], 1, "port");
        // eth spec at 20: type, size, dst mac, mask
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 0x20);
        assert_eq!(u16::from_le_bytes([bytes[24], bytes[25]]), 40);
        assert_eq!(&bytes[26..32], &[2, 0, 0, 0, 0, 1]);
        // vlan_tag val at 20+6+14, network order
        assert_eq!(&bytes[40..42], &100u16.to_be_bytes());
        assert_eq!(&bytes[42..48], &[0xff; 6], "dst mac mask");
        assert_eq!(&bytes[56..58], &0x0fffu16.to_be_bytes(), "vlan mask");
        assert_eq!(u32::from_le_bytes(bytes[60..64].try_into().unwrap()), 0x30);
        assert_eq!(u32::from_le_bytes(bytes[84..88].try_into().unwrap()), 0x40);
        let plain = FlowRule {
            priority: 2,
            port: 1,
            dst_mac: None,
            vlan: None,
            ..FlowRule::default()
        }
        .encode();
        let b: Vec<u8> = plain.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(b[12], 1);
        assert!(b[26..60].iter().all(|x| *x == 0), "promiscuous: zero masks");
        // An IP protocol other than TCP/UDP over IPv4 needs the extended spec;
        // a port goes in network order with a full mask.
        let proto = FlowRule {
            port: 1,
            ipv6: Some(false),
            ip_proto: Some(47),
            ..FlowRule::default()
        }
        .encode();
        let b: Vec<u8> = proto.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(u32::from_le_bytes(b[60..64].try_into().unwrap()), 0x32);
        assert_eq!(u16::from_le_bytes([b[64], b[65]]), 32);
        assert_eq!(
            (b[60 + 8 + 8], b[60 + 20 + 8]),
            (47, 0xff),
            "proto value, mask"
        );
        let udp = FlowRule {
            port: 1,
            ipv6: Some(true),
            tcp: Some(false),
            dst_port: Some(4789),
            ..FlowRule::default()
        }
        .encode();
        let b: Vec<u8> = udp.iter().flat_map(|w| w.to_le_bytes()).collect();
        let l4 = 20 + 40 + size_of::<IbvFlowSpecIpv6>();
        assert_eq!(u32::from_le_bytes(b[l4..l4 + 4].try_into().unwrap()), 0x41);
        assert_eq!(&b[l4 + 6..l4 + 8], &4789u16.to_be_bytes());
        assert_eq!(&b[l4 + 10..l4 + 12], &[0xff, 0xff]);
        let et = FlowRule {
            port: 1,
            ether_type: Some(0x88b5),
            ..FlowRule::default()
        }
        .encode();
        let b: Vec<u8> = et.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&b[20 + 6 + 12..20 + 6 + 14], &[0x88, 0xb5]);
        assert_eq!(&b[20 + 22 + 12..20 + 22 + 14], &[0xff, 0xff]);
    }
}
