//! Device arguments in DPDK's syntax: `net_null0,size=64,copy=0`.
#![deny(unsafe_code)]

use crate::error::{Error, Result};

/// A parsed `--vdev` (or `-a` devargs) string: driver name, instance name and
/// `key=value` pairs, with helpers that reject unknown keys and bad values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevArgs {
    /// The whole string as given, for messages.
    pub spec: String,
    /// The device name (`net_null0`).
    pub name: String,
    /// The driver part of the name (`net_null`), i.e. the name without its
    /// trailing instance number.
    pub driver: String,
    /// Key/value pairs in order.
    pub args: Vec<(String, String)>,
}

impl DevArgs {
    /// Parse `name[,key=value...]`.
    pub fn parse(spec: &str) -> Result<DevArgs> {
        let bad = |reason: String| Error::DevArgs {
            device: spec.to_string(),
            reason,
        };
        let mut parts = spec.split(',');
        let name = parts.next().unwrap_or("").trim().to_string();
        if name.is_empty() {
            return Err(bad(
                "empty device name; expected e.g. net_null0,size=64".into()
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':' || c == '.')
        {
            return Err(bad(format!(
                "device name {name:?} has characters other than letters, digits, _ - : ."
            )));
        }
        let driver = name
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        let mut args: Vec<(String, String)> = Vec::new();
        for kv in parts {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(bad(format!("argument {kv:?} is not key=value")));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(bad(format!("argument {kv:?} has an empty key")));
            }
            if args.iter().any(|(ek, _)| ek == k) {
                return Err(bad(format!("key {k:?} is given twice")));
            }
            args.push((k.to_string(), v.to_string()));
        }
        Ok(DevArgs {
            spec: spec.to_string(),
            name,
            driver,
            args,
        })
    }

    /// Fail unless these arguments are for `driver` (`net_null`, ...), so a
    /// driver never takes another's device.
    pub fn expect_driver(&self, driver: &str) -> Result<()> {
        if self.driver != driver {
            return Err(Error::DevArgs {
                device: self.spec.clone(),
                reason: format!("not a {driver} device"),
            });
        }
        Ok(())
    }

    /// Fail on any key not in `known`, naming the accepted ones.
    pub fn check_keys(&self, known: &[&str]) -> Result<()> {
        for (k, _) in &self.args {
            if !known.contains(&k.as_str()) {
                return Err(Error::DevArgs {
                    device: self.spec.clone(),
                    reason: format!(
                        "unknown key {k:?} for {}; accepted keys: {}",
                        self.driver,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
            }
        }
        Ok(())
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An unsigned integer value (decimal or 0x hex) within `range`.
    pub fn get_u64(&self, key: &str, range: std::ops::RangeInclusive<u64>) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse::<u64>(),
        };
        match parsed {
            Ok(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(Error::DevArgs {
                device: self.spec.clone(),
                reason: format!(
                    "{key}={v:?} is not a number from {} to {}",
                    range.start(),
                    range.end()
                ),
            }),
        }
    }

    /// A boolean value: 0/1, yes/no, true/false, on/off.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.to_ascii_lowercase().as_str() {
            "1" | "yes" | "true" | "on" => Ok(Some(true)),
            "0" | "no" | "false" | "off" => Ok(Some(false)),
            _ => Err(Error::DevArgs {
                device: self.spec.clone(),
                reason: format!("{key}={v:?} is not a boolean; use 0 or 1"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_driver_takes_only_its_own_devices() {
        let a = DevArgs::parse("net_ring0,peer=net_ring1").unwrap();
        assert!(a.expect_driver("net_ring").is_ok());
        let e = a.expect_driver("net_null").unwrap_err().to_string();
        assert!(
            e.contains("net_ring0,peer=net_ring1") && e.contains("not a net_null device"),
            "{e}"
        );
    }

    #[test]
    fn parses_dpdk_syntax() {
        let d = DevArgs::parse("net_null0,size=64,copy=0").unwrap();
        assert_eq!(d.name, "net_null0");
        assert_eq!(d.driver, "net_null");
        assert_eq!(d.get("size"), Some("64"));
        assert_eq!(d.get_u64("size", 0..=9000).unwrap(), Some(64));
        assert_eq!(d.get_bool("copy").unwrap(), Some(false));
        assert_eq!(DevArgs::parse("net_ring12").unwrap().driver, "net_ring");
    }

    #[test]
    fn rejects_garbage() {
        for (spec, needle) in [
            ("", "empty device name"),
            ("net_null0,size", "not key=value"),
            ("net_null0,=3", "empty key"),
            ("net_null0,size=1,size=2", "twice"),
            ("net null0", "characters"),
        ] {
            let e = DevArgs::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
        }
        let d = DevArgs::parse("net_null0,sise=64,copy=maybe,size=0x10000").unwrap();
        let e = d.check_keys(&["size", "copy"]).unwrap_err().to_string();
        assert!(
            e.contains("unknown key \"sise\"") && e.contains("accepted keys: size, copy"),
            "{e}"
        );
        assert!(
            d.get_bool("copy")
                .unwrap_err()
                .to_string()
                .contains("not a boolean")
        );
        assert!(
            d.get_u64("size", 14..=9000)
                .unwrap_err()
                .to_string()
                .contains("from 14 to 9000")
        );
    }
}
