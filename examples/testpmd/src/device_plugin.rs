//! The environment the SR-IOV network device plugin gives a pod: what
//! testpmd's entrypoint mode and `testpmd doctor` read (the core knows no
//! device plugin).
//!
//! For each resource the pod asked for (e.g. `intel.com/intel_x710vfio`), the
//! plugin sets
//!
//! - `PCIDEVICE_<RESOURCE>` = the allocated devices' PCI addresses, comma
//!   separated; `<RESOURCE>` is the resource name upper-cased with `.` and `/`
//!   replaced by `_` (`PCIDEVICE_INTEL_COM_INTEL_X710VFIO=0000:03:02.1,0000:03:04.3`);
//! - `PCIDEVICE_<RESOURCE>_INFO` = JSON keyed by PCI address, each value a map of
//!   info providers (`generic`, `vfio`, `rdma`, ...) to string maps:
//!   `{"0000:03:02.1":{"generic":{"deviceID":"0000:03:02.1"},"vfio":{"dev-mount":"/dev/vfio/169","mount":"/dev/vfio/vfio"}}}`.
//!
//! The `vfio` provider's `dev-mount` is the group node inside the container. In a
//! VM whose vfio runs in no-IOMMU mode the node's `/dev/vfio/noiommu-N` appears in
//! the pod as `/dev/vfio/N`. Older documentation spells the keys `vfio-dev-mount`
//! and `vfio-mount`; both spellings are read.
#![deny(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use nicpoll::pci::PciAddress;

/// The device plugin's environment (`PCIDEVICE_*`) is malformed: which
/// variable, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePluginEnvError {
    /// The variable.
    pub var: String,
    /// What is wrong with it.
    pub reason: String,
}

impl std::fmt::Display for DevicePluginEnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "environment variable {}: {}", self.var, self.reason)
    }
}

impl std::error::Error for DevicePluginEnvError {}

type Result<T> = std::result::Result<T, DevicePluginEnvError>;

const PREFIX: &str = "PCIDEVICE_";
const INFO_SUFFIX: &str = "_INFO";

/// One device the plugin allocated to this pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginDevice {
    /// Its PCI address (normalised).
    pub address: PciAddress,
    /// The VFIO group node inside the container (`vfio.dev-mount`), if given.
    pub vfio_dev_mount: Option<PathBuf>,
    /// The VFIO container node (`vfio.mount`, normally `/dev/vfio/vfio`), if given.
    pub vfio_mount: Option<PathBuf>,
    /// Every provider's key/value pairs as the plugin gave them (`generic.deviceID`,
    /// `rdma.rdma_cm`, ...); empty without an `_INFO` variable.
    pub info: ProviderInfo,
}

/// One `PCIDEVICE_<RESOURCE>` variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginResource {
    /// The variable's name (`PCIDEVICE_INTEL_COM_SRIOV`).
    pub var: String,
    /// The part after `PCIDEVICE_` (`INTEL_COM_SRIOV`).
    pub name: String,
    /// Its devices, in the variable's order.
    pub devices: Vec<PluginDevice>,
    /// Entries that are not PCI addresses (auxiliary devices such as
    /// `mlx5_core.sf.4`), kept as given.
    pub other_ids: Vec<String>,
}

/// All `PCIDEVICE_*` resources of the environment, sorted by variable name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicePluginEnv {
    /// The resources.
    pub resources: Vec<PluginResource>,
}

/// The variable name the plugin uses for a resource name
/// (`intel.com/intel_x710vfio` → `PCIDEVICE_INTEL_COM_INTEL_X710VFIO`; the
/// tests look resources up by it).
#[cfg(test)]
fn env_var_for_resource(resource: &str) -> String {
    format!(
        "{PREFIX}{}",
        resource.replace(['.', '/'], "_").to_uppercase()
    )
}

impl DevicePluginEnv {
    /// Parse a set of variables (the environment, or a test's).
    pub fn from_vars<I, K, V>(vars: I) -> Result<DevicePluginEnv>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut lists = BTreeMap::new();
        let mut infos = BTreeMap::new();
        for (k, v) in vars {
            let (k, v) = (k.as_ref(), v.as_ref());
            let Some(rest) = k.strip_prefix(PREFIX) else {
                continue;
            };
            if let Some(base) = rest.strip_suffix(INFO_SUFFIX) {
                infos.insert(base.to_string(), (k.to_string(), v.to_string()));
            } else {
                lists.insert(rest.to_string(), (k.to_string(), v.to_string()));
            }
        }
        let mut resources = Vec::new();
        for (name, (var, value)) in lists {
            let info = match infos.get(&name) {
                Some((info_var, json)) => parse_info(info_var, json)?,
                None => BTreeMap::new(),
            };
            let mut devices = Vec::new();
            let mut other_ids = Vec::new();
            for id in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match PciAddress::parse(id) {
                    Ok(address) => {
                        let info = info.get(&address).cloned().unwrap_or_default();
                        let vfio = info.get("vfio");
                        let get = |a: &str, b: &str| {
                            vfio.and_then(|m| m.get(a).or_else(|| m.get(b)))
                                .filter(|s| !s.is_empty())
                                .map(PathBuf::from)
                        };
                        devices.push(PluginDevice {
                            address,
                            vfio_dev_mount: get("dev-mount", "vfio-dev-mount"),
                            vfio_mount: get("mount", "vfio-mount"),
                            info,
                        });
                    }
                    Err(_) if looks_like_pci(id) => {
                        return Err(DevicePluginEnvError {
                            var: var.clone(),
                            reason: format!(
                                "{id:?} is not a valid PCI address (expected DDDD:BB:DD.F); \
                                 check the device plugin's resource configuration"
                            ),
                        });
                    }
                    Err(_) => {
                        log::debug!("{var}: {id:?} is not a PCI address; kept as another id");
                        other_ids.push(id.to_string());
                    }
                }
            }
            resources.push(PluginResource {
                var,
                name,
                devices,
                other_ids,
            });
        }
        Ok(DevicePluginEnv { resources })
    }

    /// The resource whose plugin name is `resource` (`intel.com/sriov`) or whose
    /// variable suffix is `resource` (`INTEL_COM_SRIOV`): how the tests read a
    /// parse back.
    #[cfg(test)]
    pub fn resource(&self, resource: &str) -> Option<&PluginResource> {
        let var = env_var_for_resource(resource);
        self.resources
            .iter()
            .find(|r| r.var == var || r.name == resource)
    }

    /// Every allocated PCI device with the variable that named it first, in
    /// variable then list order, without repeats.
    pub fn devices(&self) -> Vec<(&str, &PluginDevice)> {
        let mut seen = std::collections::BTreeSet::new();
        self.resources
            .iter()
            .flat_map(|r| r.devices.iter().map(|d| (r.var.as_str(), d)))
            .filter(|(_, d)| seen.insert(d.address))
            .collect()
    }

    /// What the plugin said about one device, if it allocated it.
    pub fn device(&self, address: &PciAddress) -> Option<&PluginDevice> {
        self.resources
            .iter()
            .flat_map(|r| r.devices.iter())
            .find(|d| d.address == *address)
    }
}

/// A string with the shape `x:y.z` is meant as a PCI address: a malformed one is an
/// error, not an auxiliary device name.
fn looks_like_pci(id: &str) -> bool {
    id.contains(':') && id.contains('.')
}

/// What the plugin says about one device: provider name (`generic`, `vfio`,
/// `rdma`, ...) -> key -> value.
pub type ProviderInfo = BTreeMap<String, BTreeMap<String, String>>;

fn parse_info(var: &str, json: &str) -> Result<BTreeMap<PciAddress, ProviderInfo>> {
    let bad = |reason: String| DevicePluginEnvError {
        var: var.to_string(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| bad(format!("not valid JSON ({e}): {}", excerpt(json))))?;
    let top = value.as_object().ok_or_else(|| {
        bad(format!(
            "expected a JSON object keyed by PCI address, got {}",
            excerpt(json)
        ))
    })?;
    let mut out = BTreeMap::new();
    for (key, providers) in top {
        let Ok(address) = PciAddress::parse(key) else {
            log::debug!("{var}: key {key:?} is not a PCI address; ignored");
            continue;
        };
        let providers = providers.as_object().ok_or_else(|| {
            bad(format!(
                "the value for {key} must be an object of providers"
            ))
        })?;
        let mut map = BTreeMap::new();
        for (provider, fields) in providers {
            let fields = fields
                .as_object()
                .ok_or_else(|| bad(format!("{key}.{provider} must be an object of strings")))?;
            let mut kv = BTreeMap::new();
            for (k, v) in fields {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                kv.insert(k.clone(), s);
            }
            map.insert(provider.clone(), kv);
        }
        out.insert(address, map);
    }
    Ok(out)
}

fn excerpt(s: &str) -> String {
    let mut e: String = s.chars().take(80).collect();
    if e.len() < s.len() {
        e.push_str("...");
    }
    format!("{e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resource_names_become_variable_names() {
        assert_eq!(
            env_var_for_resource("intel.com/intel_x710vfio"),
            "PCIDEVICE_INTEL_COM_INTEL_X710VFIO"
        );
        assert_eq!(
            env_var_for_resource("openshift.io/intelnics_radio_downlink"),
            "PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_DOWNLINK"
        );
    }

    #[test]
    fn parses_lists_and_info() {
        let env = DevicePluginEnv::from_vars(vars(&[
            ("PATH", "/bin"),
            (
                "PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK",
                "0000:00:07.0,00:08.0",
            ),
            (
                "PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_UPLINK_INFO",
                r#"{"0000:00:07.0":{"generic":{"deviceID":"0000:00:07.0"},"vfio":{"dev-mount":"/dev/vfio/0","mount":"/dev/vfio/vfio"}},
                   "0000:00:08.0":{"vfio":{"vfio-dev-mount":"/dev/vfio/1","vfio-mount":"/dev/vfio/vfio"}}}"#,
            ),
            ("PCIDEVICE_OPENSHIFT_IO_INTELNICS_RADIO_DOWNLINK", "0000:00:09.0"),
        ]))
        .unwrap();
        assert_eq!(env.resources.len(), 2);
        let up = env.resource("openshift.io/intelnics_radio_uplink").unwrap();
        assert_eq!(up.devices.len(), 2);
        let d0 = &up.devices[0];
        assert_eq!(d0.address.to_string(), "0000:00:07.0");
        assert_eq!(d0.vfio_dev_mount, Some(PathBuf::from("/dev/vfio/0")));
        assert_eq!(d0.vfio_mount, Some(PathBuf::from("/dev/vfio/vfio")));
        assert_eq!(d0.info["generic"]["deviceID"], "0000:00:07.0");
        // The older key spelling, and a short address normalised.
        let d1 = &up.devices[1];
        assert_eq!(d1.address.to_string(), "0000:00:08.0");
        assert_eq!(d1.vfio_dev_mount, Some(PathBuf::from("/dev/vfio/1")));
        let down = env
            .resource("OPENSHIFT_IO_INTELNICS_RADIO_DOWNLINK")
            .unwrap();
        assert_eq!(down.devices[0].vfio_dev_mount, None);
        assert!(down.devices[0].info.is_empty());
        let all: Vec<String> = env
            .devices()
            .iter()
            .map(|(_, d)| d.address.to_string())
            .collect();
        assert_eq!(all, ["0000:00:09.0", "0000:00:07.0", "0000:00:08.0"]);
        assert!(env.device(&"0000:00:08.0".parse().unwrap()).is_some());
    }

    #[test]
    fn keeps_other_ids_and_skips_blanks() {
        let env = DevicePluginEnv::from_vars(vars(&[(
            "PCIDEVICE_NVIDIA_COM_SF",
            "mlx5_core.sf.4, ,0000:3b:00.2",
        )]))
        .unwrap();
        let r = &env.resources[0];
        assert_eq!(r.other_ids, ["mlx5_core.sf.4"]);
        assert_eq!(r.devices.len(), 1);
    }

    #[test]
    fn malformed_values_name_the_variable() {
        let e = DevicePluginEnv::from_vars(vars(&[("PCIDEVICE_X", "0000:00:20.0")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PCIDEVICE_X") && e.contains("0000:00:20.0"),
            "{e}"
        );
        let e = DevicePluginEnv::from_vars(vars(&[
            ("PCIDEVICE_X", "0000:00:03.0"),
            ("PCIDEVICE_X_INFO", "{not json"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("PCIDEVICE_X_INFO") && e.contains("not valid JSON"),
            "{e}"
        );
        let e = DevicePluginEnv::from_vars(vars(&[
            ("PCIDEVICE_X", "0000:00:03.0"),
            ("PCIDEVICE_X_INFO", r#"["0000:00:03.0"]"#),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("keyed by PCI address"), "{e}");
        let e = DevicePluginEnv::from_vars(vars(&[
            ("PCIDEVICE_X", "0000:00:03.0"),
            ("PCIDEVICE_X_INFO", r#"{"0000:00:03.0":{"vfio":"x"}}"#),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("0000:00:03.0.vfio"), "{e}");
    }

    #[test]
    fn empty_environment_has_no_resources() {
        let env = DevicePluginEnv::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert!(env.resources.is_empty() && env.devices().is_empty());
    }
}
