//! Kubernetes inputs: `networking.k8s.io/v1` NetworkPolicy and core/v1 Namespace, Pod and
//! ServiceAccount. Policy selects on these; a Kubernetes-API datastore would fill them later.
//!
//! NetworkPolicy is decoded strictly. Pod, Namespace and ServiceAccount keep the fields tortie
//! reads typed and carry every other field through unchanged, so real manifests round-trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::numorstring::is_port_name;
use crate::policy::{PolicyType, StagedAction};
use crate::resource::Body;
use crate::validate;

/// A Kubernetes label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    fn validate(&self, errs: &mut Errors) {
        errs.at("matchLabels", |errs| {
            for (k, v) in &self.match_labels {
                validate::label_key(errs, k);
                validate::label_value(errs, k, v);
            }
        });
        errs.at("matchExpressions", |errs| {
            for (i, r) in self.match_expressions.iter().enumerate() {
                errs.idx(i, |errs| {
                    errs.at("key", |errs| validate::label_key(errs, &r.key));
                    match r.operator.as_str() {
                        "In" | "NotIn" if r.values.is_empty() => {
                            errs.missing("values", "In and NotIn need at least one value");
                        }
                        "Exists" | "DoesNotExist" if !r.values.is_empty() => {
                            errs.add(
                                "values",
                                &r.values,
                                "Exists and DoesNotExist take no values",
                            );
                        }
                        "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                        other => errs.add(
                            "operator",
                            other,
                            "must be In, NotIn, Exists or DoesNotExist",
                        ),
                    }
                });
            }
        });
    }
}

/// An integer or a string (Kubernetes `IntOrString`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

/// A NetworkPolicy port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<i64>,
}

/// `ipBlock` peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// A NetworkPolicy peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyPeer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlock>,
}

/// An ingress rule (`from`) or egress rule (`to`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NetworkPolicyPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<NetworkPolicyPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<NetworkPolicyPeer>,
}

/// `networking.k8s.io/v1` NetworkPolicySpec (plus `stagedAction` for the staged kind).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_types: Vec<PolicyType>,
}

fn validate_port(errs: &mut Errors, p: &NetworkPolicyPort) {
    if let Some(proto) = &p.protocol {
        validate::one_of(errs, "protocol", proto, &["TCP", "UDP", "SCTP"]);
    }
    match &p.port {
        Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
            errs.add("port", n, "must be 1-65535");
        }
        Some(IntOrString::String(s)) if !is_port_name(s) => {
            errs.add("port", s, "must be a port number or an IANA service name");
        }
        _ => {}
    }
    if let Some(end) = p.end_port {
        match &p.port {
            Some(IntOrString::Int(start)) if end >= *start && end <= 65535 => {}
            Some(IntOrString::Int(start)) => {
                errs.add(
                    "endPort",
                    end,
                    format!("must be between port {start} and 65535"),
                );
            }
            _ => errs.add("endPort", end, "endPort requires a numeric port"),
        }
    }
}

fn validate_peer(errs: &mut Errors, p: &NetworkPolicyPeer) {
    if p.pod_selector.is_none() && p.namespace_selector.is_none() && p.ip_block.is_none() {
        errs.missing("", "a peer needs podSelector, namespaceSelector or ipBlock");
    }
    if p.ip_block.is_some() && (p.pod_selector.is_some() || p.namespace_selector.is_some()) {
        errs.add(
            "ipBlock",
            "ipBlock",
            "ipBlock cannot be combined with podSelector or namespaceSelector",
        );
    }
    if let Some(s) = &p.pod_selector {
        errs.at("podSelector", |errs| s.validate(errs));
    }
    if let Some(s) = &p.namespace_selector {
        errs.at("namespaceSelector", |errs| s.validate(errs));
    }
    if let Some(b) = &p.ip_block {
        errs.at("ipBlock", |errs| {
            let Some(net) = validate::strict_cidr(errs, "cidr", &b.cidr) else {
                return;
            };
            for (i, e) in b.except.iter().enumerate() {
                errs.at("except", |errs| {
                    errs.idx(i, |errs| {
                        if let Some(ex) = validate::strict_cidr(errs, "", e) {
                            let inside =
                                net.contains(&ex.network()) && ex.prefix_len() > net.prefix_len();
                            if !inside {
                                errs.add("", e, format!("must be strictly within cidr {}", b.cidr));
                            }
                        }
                    })
                });
            }
        });
    }
}

fn validate_k8s_rules(
    errs: &mut Errors,
    field: &str,
    peers_field: &str,
    rules: &[NetworkPolicyRule],
) {
    errs.at(field, |errs| {
        for (i, r) in rules.iter().enumerate() {
            errs.idx(i, |errs| {
                let (peers, wrong, wrong_name) = if peers_field == "from" {
                    (&r.from, &r.to, "to")
                } else {
                    (&r.to, &r.from, "from")
                };
                if !wrong.is_empty() {
                    errs.add(
                        wrong_name,
                        wrong.len(),
                        format!("{field} rules use {peers_field}, not {wrong_name}"),
                    );
                }
                errs.at(peers_field, |errs| {
                    for (j, p) in peers.iter().enumerate() {
                        errs.idx(j, |errs| validate_peer(errs, p));
                    }
                });
                errs.at("ports", |errs| {
                    for (j, p) in r.ports.iter().enumerate() {
                        errs.idx(j, |errs| validate_port(errs, p));
                    }
                });
            });
        }
    });
}

impl K8sNetworkPolicySpec {
    /// Kubernetes defaults `policyTypes` like Calico: Ingress, plus Egress when egress rules exist.
    pub fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {
        for rule in self.ingress.iter_mut().chain(self.egress.iter_mut()) {
            for p in &mut rule.ports {
                p.protocol.get_or_insert_with(|| "TCP".to_string());
            }
        }
        if self.policy_types.is_empty() {
            self.policy_types.push(PolicyType::Ingress);
            if !self.egress.is_empty() {
                self.policy_types.push(PolicyType::Egress);
            }
        }
    }

    /// Validates the spec; `errs` is positioned at `spec`.
    pub fn validate_spec(&self, _meta: &ObjectMeta, errs: &mut Errors, staged: bool) {
        if !staged && let Some(a) = self.staged_action {
            errs.add(
                "stagedAction",
                a,
                "stagedAction is only valid on StagedKubernetesNetworkPolicy",
            );
        }
        let others = self.pod_selector != LabelSelector::default()
            || !self.ingress.is_empty()
            || !self.egress.is_empty();
        if staged && self.staged_action == Some(StagedAction::Delete) && others {
            errs.add(
                "stagedAction",
                "Delete",
                "a Delete staged policy must not set podSelector or rules",
            );
        }
        errs.at("podSelector", |errs| self.pod_selector.validate(errs));
        validate_k8s_rules(errs, "ingress", "from", &self.ingress);
        validate_k8s_rules(errs, "egress", "to", &self.egress);
        let mut seen = Vec::new();
        for t in &self.policy_types {
            if seen.contains(t) {
                errs.add(
                    "policyTypes",
                    &self.policy_types,
                    "each type may appear once",
                );
            }
            seen.push(*t);
        }
    }
}

/// Body of a Kubernetes NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sNetworkPolicyBody {
    #[serde(default)]
    pub spec: K8sNetworkPolicySpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Body for K8sNetworkPolicyBody {
    const KIND: Kind = Kind::K8sNetworkPolicy;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        self.spec.apply_defaults(meta);
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        errs.at("spec", |errs| self.spec.validate_spec(meta, errs, false));
    }

    fn from_yaml(text: &str) -> Option<Result<(ObjectMeta, Self), crate::error::FieldError>> {
        Some(
            crate::resource::spec_from_yaml::<K8sNetworkPolicySpec>(text)
                .map(|(meta, spec, status)| (meta, K8sNetworkPolicyBody { spec, status })),
        )
    }
}

/// Body of a Namespace (labels live in metadata; spec/status are carried through).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamespaceBody {
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Body for NamespaceBody {
    const KIND: Kind = Kind::Namespace;

    fn validate(&self, _meta: &ObjectMeta, _errs: &mut Errors) {}
}

/// Body of a ServiceAccount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceAccountBody {
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Body for ServiceAccountBody {
    const KIND: Kind = Kind::ServiceAccount;

    fn validate(&self, _meta: &ObjectMeta, _errs: &mut Errors) {}
}

/// The parts of a Pod that networking reads; everything else is carried through.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init_containers: Vec<Container>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A container: only its ports matter to networking.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// A declared container port (named ports resolve against these).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// Body of a Pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodBody {
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Body for PodBody {
    const KIND: Kind = Kind::Pod;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        errs.at("spec", |errs| {
            for (field, list) in [
                ("containers", &self.spec.containers),
                ("initContainers", &self.spec.init_containers),
            ] {
                errs.at(field, |errs| {
                    for (i, c) in list.iter().enumerate() {
                        errs.idx(i, |errs| validate_container(errs, c));
                    }
                });
            }
        });
    }
}

fn validate_container(errs: &mut Errors, c: &Container) {
    errs.at("ports", |errs| {
        for (j, p) in c.ports.iter().enumerate() {
            errs.idx(j, |errs| {
                if !(1..=65535).contains(&p.container_port) {
                    errs.add("containerPort", p.container_port, "must be 1-65535");
                }
                if let Some(proto) = &p.protocol {
                    validate::one_of(errs, "protocol", proto, &["TCP", "UDP", "SCTP"]);
                }
                if let Some(n) = &p.name
                    && !is_port_name(n)
                {
                    errs.add(
                        "name",
                        n,
                        "must be an IANA service name (1-15 of a-z, 0-9, '-')",
                    );
                }
            });
        }
    });
}
