//! Device arguments: `net_mlx5,iface=NAME` or `net_mlx5,dev=BDF`, or a bare PCI
//! address as `-a BDF[,key=value...]` gives it.
#![deny(unsafe_code)]

use nicpoll::port::{DevArgs, MacAddr};

use crate::error::{Mlx5Error, Result};

/// Driver name in `--vdev` strings.
pub const DRIVER: &str = "net_mlx5";

/// Keys we implement.
pub const KEYS: &[&str] = &[
    "iface",
    "dev",
    "mac",
    "vlan",
    "txq_inline_max",
    "isolated",
    "flow",
    "dv_flow_en",
    "rxq_cqe_comp_en",
    "mprq_en",
    "rx_vec_en",
    "tx_vec_en",
    "txq_mpw_en",
    "rxq_pkt_pad_en",
];

/// DPDK mlx5 keys accepted with the one value that describes what this
/// backend does (plain verbs flows, no CQE compression, no striding RQ, no
/// vector or multi-packet paths, no padding), so a DPDK command line that
/// states them still runs; any other value is refused by name.
const DPDK_KEYS_AS_WE_DO: &[(&str, &str)] = &[
    ("dv_flow_en", "0"),
    ("rxq_cqe_comp_en", "0"),
    ("mprq_en", "0"),
    ("rx_vec_en", "0"),
    ("tx_vec_en", "0"),
    ("txq_mpw_en", "0"),
    ("rxq_pkt_pad_en", "0"),
];

/// DPDK mlx5 device arguments this plain-verbs backend does not implement,
/// refused by name (they need Direct Verbs / DevX, which write WQEs and CQEs
/// directly, or steering modes plain verbs lack).
const DPDK_KEYS_NOT_HERE: &[&str] = &[
    "mprq_log_stride_num",
    "mprq_log_stride_size",
    "mprq_max_memcpy_len",
    "rxqs_min_mprq",
    "txq_inline",
    "txq_inline_min",
    "txq_inline_mpw",
    "txqs_min_inline",
    "txqs_max_vec",
    "txq_mpw_hdr_dseg_en",
    "txq_max_inline_len",
    "tx_pp",
    "tx_skew",
    "vf_nl_en",
    "l3_vxlan_en",
    "dv_xmeta_en",
    "dv_esw_en",
    "lacp_by_user",
    "mr_ext_memseg_en",
    "representor",
    "max_dump_files_num",
    "lro_timeout_usec",
    "hp_buf_log_sz",
    "reclaim_mem_mode",
    "sys_mem_en",
    "decap_en",
    "allow_duplicate_pattern",
    "delay_drop",
    "class",
];

/// Default `txq_inline_max`: frames up to this many bytes are copied into the
/// work request (IBV_SEND_INLINE) instead of being read by DMA.
pub const DEFAULT_INLINE: u16 = 128;
/// Largest `txq_inline_max` accepted (the provider may grant less).
pub const MAX_INLINE: u16 = 960;
/// Most extra MAC addresses (`mac=`).
pub const MAX_MACS: usize = 8;
/// Most VLANs (`vlan=`).
pub const MAX_VLANS: usize = 16;
/// Most rules in `flow=`.
pub const MAX_FLOWS: usize = 16;

/// One `flow=` rule of isolated mode: what a frame must carry to be steered
/// to the port (`None`: anything). Items of a rule are joined by `/`, rules
/// by `+`: `flow=eth_type:0x88b5+udp_dst:4789/dst_mac:02:00:00:00:00:09`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowPattern {
    /// `dst_mac:M`.
    pub dst_mac: Option<[u8; 6]>,
    /// `vlan:N`.
    pub vlan: Option<u16>,
    /// `eth_type:N` (0x0800 and 0x86dd are the same as `ipv4`, `ipv6`).
    pub ether_type: Option<u16>,
    /// `ipv4` (`Some(false)`) or `ipv6` (`Some(true)`); `None`: either for IP
    /// items.
    pub ipv6: Option<bool>,
    /// `ip_proto:N` (6 and 17 are `tcp`, `udp`).
    pub ip_proto: Option<u8>,
    /// `tcp` / `tcp_dst:N` (`Some(true)`) or `udp` / `udp_dst:N` (`Some(false)`).
    pub tcp: Option<bool>,
    /// The destination port of `tcp_dst:`/`udp_dst:`.
    pub dst_port: Option<u16>,
}

impl FlowPattern {
    /// Parse one rule (items joined by `/`).
    pub fn parse(rule: &str) -> std::result::Result<FlowPattern, String> {
        let mut p = FlowPattern::default();
        let num = |key: &str, v: &str, max: u64| -> std::result::Result<u64, String> {
            let n = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            };
            n.ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("{key}:{v} is not a number from 0 to {max}"))
        };
        let set_l4 = |p: &mut FlowPattern, tcp: bool| -> std::result::Result<(), String> {
            if p.tcp.is_some_and(|t| t != tcp) {
                return Err("a rule matches TCP or UDP, not both".into());
            }
            p.tcp = Some(tcp);
            Ok(())
        };
        let set_ip = |p: &mut FlowPattern, v6: bool| -> std::result::Result<(), String> {
            if p.ipv6.is_some_and(|x| x != v6) {
                return Err("a rule matches IPv4 or IPv6, not both".into());
            }
            p.ipv6 = Some(v6);
            Ok(())
        };
        for item in rule.split('/') {
            let (key, v) = item.split_once(':').unwrap_or((item, ""));
            match (key, v) {
                ("ipv4", "") => set_ip(&mut p, false)?,
                ("ipv6", "") => set_ip(&mut p, true)?,
                ("tcp", "") => set_l4(&mut p, true)?,
                ("udp", "") => set_l4(&mut p, false)?,
                ("tcp_dst" | "udp_dst", v) => {
                    set_l4(&mut p, key == "tcp_dst")?;
                    p.dst_port = Some(num(key, v, u16::MAX as u64)? as u16);
                }
                ("ip_proto", v) => match num(key, v, 255)? as u8 {
                    6 => set_l4(&mut p, true)?,
                    17 => set_l4(&mut p, false)?,
                    n => p.ip_proto = Some(n),
                },
                ("eth_type", v) => match num(key, v, u16::MAX as u64)? as u16 {
                    0x0800 => set_ip(&mut p, false)?,
                    0x86dd => set_ip(&mut p, true)?,
                    n => p.ether_type = Some(n),
                },
                ("vlan", v) => {
                    let id = num(key, v, 4094)? as u16;
                    if id == 0 {
                        return Err("vlan:0 is not a VLAN id (1 to 4094)".into());
                    }
                    p.vlan = Some(id);
                }
                ("dst_mac", v) => {
                    let mac: MacAddr = v.parse().map_err(|e: String| format!("dst_mac: {e}"))?;
                    p.dst_mac = Some(mac.0);
                }
                _ => {
                    return Err(format!(
                        "{item:?} is not a flow item; items: eth_type:N, ipv4, ipv6, ip_proto:N, \
                         tcp, udp, tcp_dst:PORT, udp_dst:PORT, dst_mac:MAC, vlan:ID, joined by /"
                    ));
                }
            }
        }
        if p.ether_type.is_some() && (p.ipv6.is_some() || p.ip_proto.is_some() || p.tcp.is_some()) {
            return Err("eth_type: names a non-IP protocol; it cannot go with IP items".into());
        }
        if p.ip_proto.is_some() && p.tcp.is_some() {
            return Err("ip_proto: and tcp/udp name two protocols".into());
        }
        Ok(p)
    }
}

/// Which device to drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// By kernel network interface name.
    Iface(String),
    /// By PCI address (normalised `0000:03:00.0`).
    Pci(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Iface(n) => write!(f, "iface={n}"),
            Selector::Pci(b) => write!(f, "dev={b}"),
        }
    }
}

/// Options of an mlx5 port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlx5Options {
    /// The device.
    pub select: Selector,
    /// Extra destination MACs steered to the port, besides the interface's own.
    pub macs: Vec<MacAddr>,
    /// If not empty, only frames tagged with one of these VLAN ids are steered
    /// (untagged and other VLANs stay with the kernel).
    pub vlans: Vec<u16>,
    /// Inline frames up to this length on transmit.
    pub txq_inline_max: u16,
    /// Isolated mode: steer only what `flows` names; the kernel keeps the rest.
    pub isolated: bool,
    /// The rules of isolated mode.
    pub flows: Vec<FlowPattern>,
}

impl Mlx5Options {
    /// Options selecting `select`, defaults otherwise.
    pub fn new(select: Selector) -> Mlx5Options {
        Mlx5Options {
            select,
            macs: Vec::new(),
            vlans: Vec::new(),
            txq_inline_max: DEFAULT_INLINE,
            isolated: false,
            flows: Vec::new(),
        }
    }

    /// Read options from device arguments (see [`is_mlx5_devargs`] for the
    /// names accepted).
    pub fn from_devargs(args: &DevArgs) -> Result<Mlx5Options> {
        let bad = |reason: String| Mlx5Error::DevArgs {
            device: args.spec.clone(),
            reason,
        };
        for (k, _) in &args.args {
            if DPDK_KEYS_NOT_HERE.contains(&k.as_str()) {
                return Err(bad(format!(
                    "{k} is a DPDK mlx5 option that nicpoll's plain-verbs mlx5 backend does not \
                     implement; accepted keys: {}",
                    KEYS.join(", ")
                )));
            }
        }
        args.check_keys(KEYS)?;
        for (k, want) in DPDK_KEYS_AS_WE_DO {
            if let Some(v) = args.get(k)
                && v != *want
            {
                return Err(bad(format!(
                    "{k}={v}: nicpoll's plain-verbs mlx5 backend does what {k}={want} says and \
                     cannot do otherwise (it needs Direct Verbs)"
                )));
            }
        }
        let bare_pci = normalize_pci(&args.name);
        let select = match (bare_pci, args.get("iface"), args.get("dev")) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(bad(
                    "a PCI address device takes neither iface= nor dev= (it already names the device)"
                        .into(),
                ));
            }
            (Some(b), None, None) => Selector::Pci(b),
            (None, Some(_), Some(_)) => {
                return Err(bad("give iface= or dev=, not both".into()));
            }
            (None, Some(i), None) => {
                if i.is_empty() || i.len() > 15 || i.contains('/') {
                    return Err(bad(format!("iface={i:?} is not an interface name")));
                }
                Selector::Iface(i.to_string())
            }
            (None, None, Some(d)) => {
                Selector::Pci(normalize_pci(d).ok_or_else(|| {
                    bad(format!("dev={d:?} is not a PCI address like 0000:03:00.0"))
                })?)
            }
            (None, None, None) => {
                return Err(bad(
                    "say which device: net_mlx5,iface=IFNAME or net_mlx5,dev=0000:03:00.0 \
                     (or -a 0000:03:00.0)"
                        .into(),
                ));
            }
        };
        if !is_mlx5_devargs(args) && !matches!(select, Selector::Pci(_)) {
            return Err(bad(format!("not a {DRIVER} device")));
        }
        let mut o = Mlx5Options::new(select);
        if let Some(list) = args.get("mac") {
            for m in list.split('+') {
                let mac: MacAddr = m.parse().map_err(|e: String| bad(format!("mac=: {e}")))?;
                if mac.is_multicast() || mac.0 == [0; 6] {
                    return Err(bad(format!(
                        "mac={mac}: only unicast addresses can be steered (multicast and broadcast \
                         stay with the kernel)"
                    )));
                }
                if !o.macs.contains(&mac) {
                    o.macs.push(mac);
                }
            }
            if o.macs.len() > MAX_MACS {
                return Err(bad(format!("mac=: at most {MAX_MACS} addresses")));
            }
        }
        if let Some(list) = args.get("vlan") {
            for v in list.split('+') {
                let id: u16 = v
                    .parse()
                    .ok()
                    .filter(|id| (1..=4094).contains(id))
                    .ok_or_else(|| bad(format!("vlan={v:?} is not a VLAN id from 1 to 4094")))?;
                if !o.vlans.contains(&id) {
                    o.vlans.push(id);
                }
            }
            if o.vlans.len() > MAX_VLANS {
                return Err(bad(format!("vlan=: at most {MAX_VLANS} ids")));
            }
        }
        if let Some(n) = args.get_u64("txq_inline_max", 0..=MAX_INLINE as u64)? {
            o.txq_inline_max = n as u16;
        }
        o.isolated = match args.get("isolated") {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => return Err(bad(format!("isolated={v:?}: 0 or 1"))),
        };
        if let Some(list) = args.get("flow") {
            for rule in list.split('+') {
                let p = FlowPattern::parse(rule).map_err(|e| bad(format!("flow=: {e}")))?;
                if !o.flows.contains(&p) {
                    o.flows.push(p);
                }
            }
            if o.flows.len() > MAX_FLOWS {
                return Err(bad(format!("flow=: at most {MAX_FLOWS} rules")));
            }
        }
        match (o.isolated, o.flows.is_empty()) {
            (true, true) => {
                return Err(bad(
                    "isolated=1 steers only what flow= names: give at least one rule, e.g. \
                     flow=udp_dst:4789 (the kernel keeps everything else)"
                        .into(),
                ));
            }
            (false, false) => {
                return Err(bad(
                    "flow= rules need isolated=1 (without it the port takes every unicast frame \
                     to the interface's MAC already)"
                        .into(),
                ));
            }
            _ => {}
        }
        if o.isolated && (!o.macs.is_empty() || !o.vlans.is_empty()) {
            return Err(bad(
                "in isolated mode name MACs and VLANs in the flow= rules (dst_mac:M, vlan:N) \
                 instead of mac= and vlan="
                    .into(),
            ));
        }
        Ok(o)
    }
}

/// Whether `args` names this driver: `net_mlx5`, `net_mlx5_N`, `eth_mlx5...`,
/// or a bare PCI address (which the caller has checked is an mlx5 device, see
/// [`crate::is_mlx5_pci`]). Note that DevArgs' `driver` strips trailing digits
/// (`net_mlx5` → `net_mlx`), so match on this rather than on `driver`.
pub fn is_mlx5_devargs(args: &DevArgs) -> bool {
    let n = args.name.replacen("eth_", "net_", 1);
    match n.strip_prefix(DRIVER) {
        Some(rest) => rest.chars().all(|c| c.is_ascii_digit() || c == '_'),
        None => false,
    }
}

/// `03:00.0` or `0000:03:00.0` (any case) → `0000:03:00.0`; None if not a BDF.
pub fn normalize_pci(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [b, df] => ("0000", *b, *df),
        [d, b, df] => (*d, *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let hex = |x: &str, max: usize| {
        !x.is_empty() && x.len() <= max && x.chars().all(|c| c.is_ascii_hexdigit())
    };
    if !hex(dom, 4) || !hex(bus, 2) || !hex(dev, 2) || !hex(func, 1) {
        return None;
    }
    let dom = u32::from_str_radix(dom, 16).ok()?;
    let bus = u32::from_str_radix(bus, 16).ok()?;
    let dev = u32::from_str_radix(dev, 16).ok()?;
    let func = u32::from_str_radix(func, 16).ok()?;
    if dev > 0x1f || func > 7 {
        return None;
    }
    Some(format!("{dom:04x}:{bus:02x}:{dev:02x}.{func:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<Mlx5Options> {
        Mlx5Options::from_devargs(&DevArgs::parse(spec).unwrap())
    }

    #[test]
    fn pci_addresses() {
        assert_eq!(normalize_pci("03:00.0").as_deref(), Some("0000:03:00.0"));
        assert_eq!(
            normalize_pci("0000:AF:1f.7").as_deref(),
            Some("0000:af:1f.7")
        );
        for bad in [
            "",
            "eth0",
            "03:00",
            "0000:03:00.8",
            "0000:03:20.0",
            "1:2:3:4.0",
            "03:0g.0",
        ] {
            assert_eq!(normalize_pci(bad), None, "{bad}");
        }
    }

    #[test]
    fn accepted_forms() {
        let o = parse("net_mlx5,iface=ens1f0v0").unwrap();
        assert_eq!(o.select, Selector::Iface("ens1f0v0".into()));
        assert_eq!(o.txq_inline_max, DEFAULT_INLINE);
        let o = parse("net_mlx5_1,dev=03:00.1,txq_inline_max=0").unwrap();
        assert_eq!(o.select, Selector::Pci("0000:03:00.1".into()));
        assert_eq!(o.txq_inline_max, 0);
        let o = parse("0000:03:00.0,mac=02:00:00:00:00:02+02:00:00:00:00:03,vlan=100+200").unwrap();
        assert_eq!(o.select, Selector::Pci("0000:03:00.0".into()));
        assert_eq!(o.macs.len(), 2);
        assert_eq!(o.vlans, vec![100, 200]);
        assert!(is_mlx5_devargs(&DevArgs::parse("net_mlx5").unwrap()));
        assert!(is_mlx5_devargs(&DevArgs::parse("eth_mlx5_0").unwrap()));
        assert!(!is_mlx5_devargs(&DevArgs::parse("net_mlx4").unwrap()));
        assert!(!is_mlx5_devargs(&DevArgs::parse("net_mlx5x").unwrap()));
        let o = parse("net_mlx5,iface=e,dv_flow_en=0,rxq_cqe_comp_en=0,mprq_en=0").unwrap();
        assert!(!o.isolated);
        let o = parse(
            "net_mlx5,iface=e,isolated=1,flow=eth_type:0x88b5+udp_dst:4789/vlan:7+ip_proto:47/ipv6+tcp_dst:80/dst_mac:02:00:00:00:00:09+eth_type:0x0800",
        )
        .unwrap();
        assert!(o.isolated);
        assert_eq!(
            o.flows,
            vec![
                FlowPattern {
                    ether_type: Some(0x88b5),
                    ..FlowPattern::default()
                },
                FlowPattern {
                    tcp: Some(false),
                    dst_port: Some(4789),
                    vlan: Some(7),
                    ..FlowPattern::default()
                },
                FlowPattern {
                    ip_proto: Some(47),
                    ipv6: Some(true),
                    ..FlowPattern::default()
                },
                FlowPattern {
                    tcp: Some(true),
                    dst_port: Some(80),
                    dst_mac: Some([2, 0, 0, 0, 0, 9]),
                    ..FlowPattern::default()
                },
                FlowPattern {
                    ipv6: Some(false),
                    ..FlowPattern::default()
                },
            ]
        );
    }

    #[test]
    fn refused_forms_say_why() {
        for (spec, needle) in [
            ("net_mlx5", "say which device"),
            ("net_mlx5,iface=a,dev=03:00.0", "not both"),
            ("net_mlx5,dev=eth0", "not a PCI address"),
            ("0000:03:00.0,iface=eth0", "neither iface= nor dev="),
            ("net_mlx5,iface=eth0,mprq_en=1", "mprq_en=0 says"),
            ("net_mlx5,iface=eth0,bogus=1", "unknown key \"bogus\""),
            ("net_mlx5,iface=eth0,mac=01:00:5e:00:00:01", "only unicast"),
            ("net_mlx5,iface=eth0,mac=zz", "mac=:"),
            ("net_mlx5,iface=eth0,vlan=4095", "VLAN id from 1 to 4094"),
            ("net_mlx5,iface=eth0,txq_inline_max=5000", "from 0 to 960"),
            ("net_null0,iface=eth0", "not a net_mlx5 device"),
            ("net_mlx5,iface=eth0,isolated=1", "give at least one rule"),
            ("net_mlx5,iface=eth0,flow=udp", "need isolated=1"),
            ("net_mlx5,iface=eth0,isolated=1,flow=tcp/udp", "TCP or UDP"),
            (
                "net_mlx5,iface=eth0,isolated=1,flow=ipv4/ipv6",
                "IPv4 or IPv6",
            ),
            (
                "net_mlx5,iface=eth0,isolated=1,flow=eth_type:0x88b5/udp",
                "non-IP",
            ),
            (
                "net_mlx5,iface=eth0,isolated=1,flow=udp_dst:70000",
                "from 0 to 65535",
            ),
            (
                "net_mlx5,iface=eth0,isolated=1,flow=bogus",
                "not a flow item",
            ),
            (
                "net_mlx5,iface=eth0,isolated=1,flow=udp,vlan=5",
                "in isolated mode",
            ),
            ("net_mlx5,iface=eth0,isolated=2,flow=udp", "0 or 1"),
            ("net_mlx5,iface=eth0,dv_flow_en=1", "dv_flow_en=0 says"),
        ] {
            let e = parse(spec).unwrap_err();
            assert!(matches!(e, Mlx5Error::DevArgs { .. }), "{spec}: {e:?}");
            assert!(e.to_string().contains(needle), "{spec}: {e}");
        }
    }
}
