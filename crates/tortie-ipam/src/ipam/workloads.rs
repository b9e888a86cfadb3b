//! The evidence that an allocation is live: stored Pods and WorkloadEndpoints.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;
use tortie_api::Kind;
use tortie_store::KeyValue;

use super::Ipam;
use crate::check::WorkloadEndpointInfo;
use crate::error::IpamError;

/// Reads `namespace`, `pod` and `ipNetworks` from a stored WorkloadEndpoint manifest.
fn parse_wep(kv: &KeyValue) -> Option<WorkloadEndpointInfo> {
    let v: Value = serde_json::from_slice(&kv.value).ok()?;
    let rest = kv.key.strip_prefix(&Kind::WorkloadEndpoint.key_prefix())?;
    let key_ns = rest.split_once('/').map(|(ns, _)| ns).unwrap_or_default();
    let namespace = v
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(key_ns)
        .to_string();
    let spec = v.get("spec");
    let field = |f: &str| spec.and_then(|s| s.get(f)).and_then(Value::as_str);
    let pod = field("pod")
        .or_else(|| field("workload"))
        .unwrap_or_default();
    let ips = spec
        .and_then(|s| s.get("ipNetworks"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|s| {
            s.parse::<IpNet>()
                .map(|n| n.addr())
                .or_else(|_| s.parse::<IpAddr>())
                .ok()
        })
        .collect();
    Some(WorkloadEndpointInfo {
        key: kv.key.clone(),
        namespace,
        pod: pod.to_string(),
        ips,
    })
}

impl Ipam {
    /// Every WorkloadEndpoint under `prefix` (all of them, or one namespace's).
    pub(crate) async fn load_workload_endpoints(
        &self,
        prefix: &str,
    ) -> Result<Vec<WorkloadEndpointInfo>, IpamError> {
        let list = self.store.list(prefix).await?;
        Ok(list.items.iter().filter_map(parse_wep).collect())
    }

    /// `(namespace, name)` of every stored Pod.
    pub(crate) async fn load_pods(&self) -> Result<BTreeSet<(String, String)>, IpamError> {
        let prefix = Kind::Pod.key_prefix();
        let list = self.store.list(&prefix).await?;
        Ok(list
            .items
            .iter()
            .filter_map(|kv| {
                let (ns, name) = kv.key.strip_prefix(&prefix)?.split_once('/')?;
                Some((ns.to_string(), name.to_string()))
            })
            .collect())
    }

    /// True if a Pod record or a WorkloadEndpoint for pod `ns/pod` exists now.
    pub(crate) async fn workload_exists(&self, ns: &str, pod: &str) -> Result<bool, IpamError> {
        if self
            .store
            .get(&Kind::Pod.key(Some(ns), pod))
            .await?
            .is_some()
        {
            return Ok(true);
        }
        let weps = self
            .load_workload_endpoints(&Kind::WorkloadEndpoint.namespace_prefix(ns))
            .await?;
        Ok(weps.iter().any(|w| w.pod == pod))
    }
}
