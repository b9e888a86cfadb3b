//! The WorkloadEndpoint the CNI plugin writes for each attachment (calico-reference §1.7).
//!
//! Built from plain inputs ([`WepInput`]) into a validated `tortie_api` object, so a bad
//! endpoint fails here, never in the agent. Labels come from the orchestrator's Pod record
//! (`/calico/resources/v3/core/pods/<ns>/<name>`); when there is none, from the CNI
//! conventions' `args.cni.labels` list of `{"key", "value"}` in the network config.

use std::collections::BTreeMap;
use std::time::SystemTime;

use ipnet::IpNet;
use serde_json::Value;
use tortie_api::endpoint::{
    EndpointPort, NAMESPACE_LABEL, ORCHESTRATOR_LABEL, WorkloadEndpointSpec,
};
use tortie_api::k8s::PodBody;
use tortie_api::numorstring::Protocol;
use tortie_api::resource::WithSpec;
use tortie_api::{Kind, Object, ObjectMeta};
use tortie_store::Store;

use crate::spec::{CniError, code};

/// A WorkloadEndpoint object.
pub type WorkloadEndpoint = Object<WithSpec<WorkloadEndpointSpec>>;

/// Label carrying the pod's service account.
pub const SERVICE_ACCOUNT_LABEL: &str = "projectcalico.org/serviceaccount";

/// What the Pod record contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodInfo {
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    pub ports: Vec<EndpointPort>,
}

impl PodInfo {
    /// Reads the networking-relevant parts of a stored Pod manifest.
    pub fn from_manifest(v: &Value) -> Result<PodInfo, String> {
        let meta: ObjectMeta = v
            .get("metadata")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| format!("metadata: {e}"))?
            .unwrap_or_default();
        let body: PodBody = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        let ports = body
            .spec
            .containers
            .iter()
            .chain(&body.spec.init_containers)
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                let name = p.name.clone().unwrap_or_default();
                let host_port = p.host_port.and_then(|h| u16::try_from(h).ok());
                // Calico keeps named ports (for named-port policy) and host ports.
                if name.is_empty() && host_port.is_none() {
                    return None;
                }
                Some(EndpointPort {
                    name,
                    protocol: Protocol::Name(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    port: u16::try_from(p.container_port).ok()?,
                    host_port,
                    host_ip: p.host_ip.clone().filter(|s| !s.is_empty()),
                })
            })
            .collect();
        Ok(PodInfo {
            labels: meta.labels,
            service_account: body.spec.service_account_name.filter(|s| !s.is_empty()),
            ports,
        })
    }

    /// Loads the Pod record; `Ok(None)` if there is none.
    pub async fn load(store: &dyn Store, ns: &str, pod: &str) -> Result<Option<PodInfo>, CniError> {
        let key = Kind::Pod.key(Some(ns), pod);
        let kv = store.get(&key).await.map_err(|e| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("cannot read the Pod record {key}"),
            )
            .with_details(e.to_string())
        })?;
        let Some(kv) = kv else {
            return Ok(None);
        };
        let v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("the Pod record {key} is not JSON"),
            )
            .with_details(e.to_string())
        })?;
        PodInfo::from_manifest(&v).map(Some).map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("the Pod record {key} is invalid"),
            )
            .with_details(e)
        })
    }
}

/// Labels from the CNI conventions' `args.cni.labels` (`[{"key": k, "value": v}, ...]`).
pub fn labels_from_args(args: Option<&Value>) -> BTreeMap<String, String> {
    args.and_then(|a| a.pointer("/cni/labels"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                l.get("key")?.as_str()?.to_string(),
                l.get("value")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Everything a WorkloadEndpoint is built from.
#[derive(Debug, Clone)]
pub struct WepInput<'a> {
    pub node: &'a str,
    /// `Some((namespace, pod))` under Kubernetes; `None` for a bare container (orchestrator
    /// `cni`, namespace `default`, profile = the network name).
    pub pod: Option<(&'a str, &'a str)>,
    pub network: &'a str,
    pub container_id: &'a str,
    /// CNI_IFNAME, the endpoint segment of the name.
    pub endpoint: &'a str,
    /// Host-side veth.
    pub interface_name: &'a str,
    /// Pod-side MAC.
    pub mac: &'a str,
    /// Pod addresses; any prefix length, stored as /32 and /128.
    pub ips: &'a [IpNet],
    /// Pod record, when there is one.
    pub pod_info: Option<&'a PodInfo>,
    /// Fallback labels when there is no Pod record.
    pub arg_labels: &'a BTreeMap<String, String>,
}

/// The namespace a WorkloadEndpoint for `pod` lives in.
pub fn wep_namespace<'a>(pod: Option<(&'a str, &str)>) -> &'a str {
    pod.map(|(ns, _)| ns).unwrap_or("default")
}

/// Builds and validates the endpoint.
pub fn build(input: &WepInput<'_>) -> Result<WorkloadEndpoint, CniError> {
    let namespace = wep_namespace(input.pod);
    let sa = input.pod_info.and_then(|p| p.service_account.clone());
    let (orchestrator, pod_name, profiles) = match input.pod {
        Some((ns, pod)) => {
            let mut profiles = vec![format!("kns.{ns}")];
            if let Some(sa) = &sa {
                profiles.push(format!("ksa.{ns}.{sa}"));
            }
            ("k8s", pod.to_string(), profiles)
        }
        None => ("cni", String::new(), vec![input.network.to_string()]),
    };
    let spec = WorkloadEndpointSpec {
        orchestrator: orchestrator.to_string(),
        node: input.node.to_string(),
        container_id: input.container_id.to_string(),
        pod: pod_name,
        endpoint: input.endpoint.to_string(),
        service_account_name: sa.clone().unwrap_or_default(),
        ip_networks: input
            .ips
            .iter()
            .map(|n| IpNet::from(n.addr()).to_string())
            .collect(),
        profiles,
        interface_name: input.interface_name.to_string(),
        mac: input.mac.to_string(),
        ports: input.pod_info.map(|p| p.ports.clone()).unwrap_or_default(),
        ..WorkloadEndpointSpec::default()
    };
    let name = spec.expected_name().ok_or_else(|| {
        CniError::new(code::INVALID_CONFIG, "cannot name the WorkloadEndpoint").with_details(
            format!("node {:?}, endpoint {:?}", input.node, input.endpoint),
        )
    })?;
    let mut wep = WorkloadEndpoint::new(&name, Some(namespace), spec);
    let mut labels = match input.pod_info {
        Some(p) => p.labels.clone(),
        None => input.arg_labels.clone(),
    };
    labels.insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
    labels.insert(ORCHESTRATOR_LABEL.to_string(), orchestrator.to_string());
    if let Some(sa) = sa.filter(|s| s.len() < 63) {
        labels.insert(SERVICE_ACCOUNT_LABEL.to_string(), sa);
    }
    wep.metadata.labels = labels;
    wep.metadata.creation_timestamp =
        Some(humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
    wep.default_and_validate().map_err(|errs| {
        CniError::new(code::INVALID_CONFIG, "the WorkloadEndpoint is invalid").with_details(
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    Ok(wep)
}

/// The store key of an endpoint.
pub fn key(wep: &WorkloadEndpoint) -> String {
    Kind::WorkloadEndpoint.key(wep.metadata.namespace.as_deref(), &wep.metadata.name)
}

/// The store key of the endpoint named by the same inputs, without building it.
pub fn key_for(
    node: &str,
    pod: Option<(&str, &str)>,
    container_id: &str,
    endpoint: &str,
) -> Option<String> {
    let spec = WorkloadEndpointSpec {
        orchestrator: if pod.is_some() { "k8s" } else { "cni" }.to_string(),
        node: node.to_string(),
        container_id: container_id.to_string(),
        pod: pod.map(|(_, p)| p.to_string()).unwrap_or_default(),
        endpoint: endpoint.to_string(),
        ..WorkloadEndpointSpec::default()
    };
    let name = spec.expected_name()?;
    Some(Kind::WorkloadEndpoint.key(Some(wep_namespace(pod)), &name))
}

/// Decodes a stored endpoint's spec.
pub fn stored_spec(value: &[u8]) -> Option<WorkloadEndpointSpec> {
    let v: Value = serde_json::from_slice(value).ok()?;
    serde_json::from_value(v.get("spec")?.clone()).ok()
}

#[cfg(test)]
#[path = "wep_tests.rs"]
mod tests;

/// The profile Calico's CNI plugin creates for a network used outside Kubernetes (if it does
/// not exist yet): everything on the network carries the label `<network>` and may reach the
/// others; egress is open. Without it, such endpoints would be denied everything (a missing
/// profile fails closed).
pub fn network_profile(network: &str) -> tortie_api::Resource {
    use tortie_api::policy::ProfileSpec;
    use tortie_api::rule::{Action, EntityRule, Rule};
    let allow = |source: EntityRule| Rule {
        action: Action::Allow,
        ip_version: None,
        protocol: None,
        not_protocol: None,
        icmp: None,
        not_icmp: None,
        source,
        destination: EntityRule::default(),
        http: None,
        metadata: None,
    };
    let spec = ProfileSpec {
        ingress: vec![allow(EntityRule {
            selector: format!("has({network})"),
            ..EntityRule::default()
        })],
        egress: vec![allow(EntityRule::default())],
        labels_to_apply: BTreeMap::from([(network.to_string(), String::new())]),
    };
    tortie_api::Resource::Profile(Object::new(network, None, spec))
}
