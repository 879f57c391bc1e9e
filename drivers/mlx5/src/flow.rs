//! Flow rules as `ibv_create_flow` reads them: an `ibv_flow_attr` followed by
//! its specs, encoded from a [`FlowRule`] at the mirrors' offsets. Plain bytes,
//! no calls (the FFI layer hands the buffer to the library).
#![deny(unsafe_code)]

use std::mem::{offset_of, size_of};

use crate::verbs::ffi::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRule {
    /// Lower wins.
    pub priority: u16,
    /// IB port number (1-based).
    pub port: u8,
    /// Destination MAC to match (`None`: any).
    pub dst_mac: Option<[u8; 6]>,
    /// VLAN id to match (`None`: any, tagged or not).
    pub vlan: Option<u16>,
    /// Match IPv4 (`Some(false)`) or IPv6 (`Some(true)`).
    pub ipv6: Option<bool>,
    /// Match TCP (`Some(true)`) or UDP (`Some(false)`).
    pub tcp: Option<bool>,
}

impl FlowRule {
    /// `ibv_flow_attr` followed by its specs, as `ibv_create_flow` reads them,
    /// written field by field at the mirrors' offsets (padding stays zero).
    /// Returned in u64 words so the buffer is 8-aligned.
    pub fn encode(&self) -> Vec<u64> {
        let eth = size_of::<IbvFlowSpecEth>();
        let l3 = match self.ipv6 {
            Some(false) => size_of::<IbvFlowSpecIpv4>(),
            Some(true) => size_of::<IbvFlowSpecIpv6>(),
            None => 0,
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
        // L3 and L4 specs match the protocol only (all-zero value and mask).
        let mut at = e + eth;
        if let Some(v6) = self.ipv6 {
            let (ty, size) = if v6 {
                (IBV_FLOW_SPEC_IPV6, size_of::<IbvFlowSpecIpv6>())
            } else {
                (IBV_FLOW_SPEC_IPV4, size_of::<IbvFlowSpecIpv4>())
            };
            put(&mut b, at, &ty.to_ne_bytes());
            put(
                &mut b,
                at + offset_of!(IbvFlowSpecIpv4, size),
                &(size as u16).to_ne_bytes(),
            );
            at += size;
        }
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
                &(size_of::<IbvFlowSpecTcpUdp>() as u16).to_ne_bytes(),
            );
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
            ipv6: None,
            tcp: None,
        }
        .encode();
        let b: Vec<u8> = plain.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(b[12], 1);
        assert!(b[26..60].iter().all(|x| *x == 0), "promiscuous: zero masks");
    }

}
