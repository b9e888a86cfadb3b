//! Network configuration: the CNI conflist entry with Calico's keys, so a Calico user's config
//! works with only `"type"` changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::spec::{CniError, code};

/// Where Calico keeps the node name when the config gives none.
pub const DEFAULT_NODENAME_FILE: &str = "/var/lib/calico/nodename";

/// `true`/`false` as a JSON bool or Calico's string form (`"true"`).
fn bool_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum B {
        Bool(bool),
        Str(String),
    }
    match Option::<B>::deserialize(d)? {
        None => Ok(None),
        Some(B::Bool(b)) => Ok(Some(b)),
        Some(B::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "expected \"true\" or \"false\", got {s:?}"
            ))),
        },
    }
}

/// The `ipam` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default, deserialize_with = "bool_or_string")]
    pub assign_ipv4: Option<bool>,
    #[serde(default, deserialize_with = "bool_or_string")]
    pub assign_ipv6: Option<bool>,
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// tortie's datastore URL (overrides the top-level keys).
    #[serde(default)]
    pub datastore: Option<String>,
}

/// Runtime-supplied configuration (`capabilities`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// The `ips` capability: specific addresses, with or without a prefix length.
    #[serde(default)]
    pub ips: Vec<String>,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// The network configuration a plugin receives on stdin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub type_: String,
    #[serde(default)]
    pub nodename: Option<String>,
    #[serde(default)]
    pub nodename_file: Option<String>,
    #[serde(default)]
    pub nodename_file_optional: bool,
    #[serde(default)]
    pub datastore: Option<String>,
    #[serde(default)]
    pub datastore_type: Option<String>,
    #[serde(default)]
    pub etcd_endpoints: Option<String>,
    #[serde(default)]
    pub log_level: Option<String>,
    #[serde(default)]
    pub log_file_path: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ipam: IpamConf,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Everything else (policy, kubernetes, ...), kept but unused here.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl NetConf {
    /// Parses stdin; errors are CNI decode errors naming the problem.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode the network configuration")
                .with_details(e.to_string())
        })
    }

    /// Whether to assign IPv4 (Calico default: yes) and IPv6 (default: no).
    pub fn families(&self) -> (bool, bool) {
        (
            self.ipam.assign_ipv4.unwrap_or(true),
            self.ipam.assign_ipv6.unwrap_or(false),
        )
    }

    /// Specific IPs asked for through the `ips` capability, `args.cni.ips`, or `IP=` in CNI_ARGS.
    pub fn requested_ips(&self, cni_args: &BTreeMap<String, String>) -> Vec<String> {
        let mut out = self.runtime_config.ips.clone();
        if let Some(ips) = self
            .args
            .as_ref()
            .and_then(|a| a.pointer("/cni/ips"))
            .and_then(Value::as_array)
        {
            out.extend(ips.iter().filter_map(Value::as_str).map(str::to_string));
        }
        if let Some(ip) = cni_args.get("IP") {
            out.extend(ip.split(',').filter(|s| !s.is_empty()).map(str::to_string));
        }
        out
    }

    /// The datastore URL: `ipam.datastore`, `datastore`, Calico's `datastore_type: etcdv3` +
    /// `etcd_endpoints`, then `TORTIE_DATASTORE` from `env`, then the default.
    pub fn datastore_url(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, CniError> {
        if let Some(d) = self.ipam.datastore.as_ref().or(self.datastore.as_ref()) {
            return Ok(d.clone());
        }
        match self.datastore_type.as_deref() {
            Some("etcdv3") => {
                let eps = self.etcd_endpoints.as_deref().unwrap_or("");
                let hosts: Vec<&str> = eps
                    .split(',')
                    .map(|e| {
                        e.trim()
                            .trim_start_matches("http://")
                            .trim_start_matches("https://")
                            .trim_end_matches('/')
                    })
                    .filter(|e| !e.is_empty())
                    .collect();
                if hosts.is_empty() {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        "datastore_type etcdv3 needs etcd_endpoints",
                    ));
                }
                Ok(format!("etcd://{}", hosts.join(",")))
            }
            Some("kubernetes") => Err(CniError::new(
                code::INVALID_CONFIG,
                "datastore_type \"kubernetes\" is not supported yet; use etcdv3 or tortie's \"datastore\" key",
            )),
            Some(other) if !other.is_empty() => Err(CniError::new(
                code::INVALID_CONFIG,
                format!("unknown datastore_type {other:?}"),
            )),
            _ => Ok(env("TORTIE_DATASTORE")
                .unwrap_or_else(|| "file:/var/lib/tortie/store.db".to_string())),
        }
    }

    /// The node name: `nodename`, then the nodename file, then `TORTIE_NODENAME`, then the host name.
    pub fn node_name(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, CniError> {
        if let Some(n) = self.nodename.as_ref().filter(|n| !n.is_empty()) {
            return Ok(n.clone());
        }
        let file = self
            .nodename_file
            .as_deref()
            .unwrap_or(DEFAULT_NODENAME_FILE);
        if let Ok(s) = std::fs::read_to_string(file)
            && !s.trim().is_empty()
        {
            return Ok(s.trim().to_string());
        }
        if self.nodename_file.is_some() && !self.nodename_file_optional {
            return Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!("nodename file {file} does not exist yet"),
            ));
        }
        if let Some(n) = env("TORTIE_NODENAME").filter(|n| !n.is_empty()) {
            return Ok(n);
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_lowercase())
            .map_err(|e| {
                CniError::new(code::IO, "cannot determine the node name")
                    .with_details(e.to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALICO: &str = r#"{"name":"k8s-pod-network","cniVersion":"1.0.0","type":"calico",
        "log_level":"info","datastore_type":"etcdv3","etcd_endpoints":"http://127.0.0.1:2379,http://10.0.0.2:2379/",
        "nodename":"node-1","mtu":1450,"ipam":{"type":"calico-ipam","assign_ipv4":"true","assign_ipv6":"true",
        "ipv4_pools":["pool-a"]},"policy":{"type":"k8s"},"kubernetes":{"kubeconfig":"/x"}}"#;

    #[test]
    fn accepts_calico_config() {
        let c = NetConf::parse(CALICO.as_bytes()).unwrap();
        assert_eq!(c.families(), (true, true));
        assert_eq!(c.ipam.ipv4_pools, ["pool-a"]);
        assert_eq!(
            c.datastore_url(|_| None).unwrap(),
            "etcd://127.0.0.1:2379,10.0.0.2:2379"
        );
        assert_eq!(c.node_name(|_| None).unwrap(), "node-1");
        assert!(c.other.contains_key("policy"));
    }

    #[test]
    fn requested_ips_from_all_sources() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["10.0.0.5/24"]},"args":{"cni":{"ips":["10.0.0.6"]}}}"#).unwrap();
        let args = [("IP".to_string(), "10.0.0.7".to_string())].into();
        assert_eq!(
            c.requested_ips(&args),
            ["10.0.0.5/24", "10.0.0.6", "10.0.0.7"]
        );
    }

    #[test]
    fn bad_values_are_clear() {
        let e = NetConf::parse(br#"{"ipam":{"assign_ipv4":"maybe"}}"#).unwrap_err();
        assert_eq!(e.code, code::DECODE);
        assert!(e.details.contains("maybe"), "{e:?}");
        let c = NetConf::parse(br#"{"datastore_type":"etcdv3"}"#).unwrap();
        assert_eq!(
            c.datastore_url(|_| None).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }
}
