//! `KubeControllersConfiguration`: settings of calico-kube-controllers. Calico accepts only
//! one such resource, named `default` (checked with the other singletons in `resource.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::checks::{self, DurationRule as D, canonicalize_duration, drop_empty, go_str};
use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::resource::CalicoSpec;
use crate::validate;

/// Kubernetes' limit on the total size of annotation keys and values.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

const ENABLED_DISABLED: &[&str] = &["Enabled", "Disabled"];

/// Spec of a `KubeControllersConfiguration` (Calico `KubeControllersConfigurationSpec`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeControllersConfigurationSpec {
    /// `None`, `Debug`, `Info`, `Warning`, `Error`, `Fatal` or `Panic`. Default: Info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// `Enabled` or `Disabled`; Calico fills in `Enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_checks: Option<String>,
    /// Go duration; `0` disables compaction. Default: 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_v3_compaction_period: Option<String>,
    /// 0-65535, `0` disables; Calico fills in 9094.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<i64>,
    /// Always present (Calico writes `controllers: {}` when empty).
    #[serde(default)]
    pub controllers: ControllersConfig,
    /// 0-65535; profiling is off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_profile_port: Option<i32>,
}

/// Which controllers run, and their settings; an absent controller is disabled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllersConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_endpoint: Option<WorkloadEndpointControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespaceControllerConfig>,
    /// Calico's docs spell this `loadbalancer`; Go's decoder matches keys case-insensitively.
    #[serde(
        default,
        alias = "loadbalancer",
        skip_serializing_if = "Option::is_none"
    )]
    pub load_balancer: Option<LoadBalancerControllerConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationControllerConfig>,
}

/// The node controller: cleans up after deleted nodes, syncs labels, optionally creates host
/// endpoints, and garbage-collects leaked IPs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeControllerConfig {
    /// Go duration. Default: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
    /// `Enabled` or `Disabled`. Default: Enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_labels: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_endpoint: Option<AutoHostEndpointConfig>,
    /// Go duration; `0` disables IP garbage collection. Calico fills in 15m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leak_grace_period: Option<String>,
}

/// Automatic host endpoints for Kubernetes nodes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoHostEndpointConfig {
    /// `Enabled` or `Disabled`. Default: Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_create: Option<String>,
    /// `Enabled` or `Disabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_default_host_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<Vec<HostEndpointTemplate>>,
}

/// A template for generated host endpoints (Calico `Template`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEndpointTemplate {
    /// Required, unique among templates: suffix of the generated host endpoint names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// Only node addresses within these CIDRs become expected IPs.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "interfaceCIDRs"
    )]
    pub interface_cidrs: Option<Vec<String>>,
    /// Regular expression over node interface names: one host endpoint per match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Selector over nodes; all nodes when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
}

/// Settings shared by the controllers that only reconcile periodically.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconcilerConfig {
    /// Go duration. Default: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_period: Option<String>,
}

/// The policy controller (etcd datastore only).
pub type PolicyControllerConfig = ReconcilerConfig;
/// The workload endpoint controller (etcd datastore only).
pub type WorkloadEndpointControllerConfig = ReconcilerConfig;
/// The service account controller (etcd datastore only).
pub type ServiceAccountControllerConfig = ReconcilerConfig;
/// The namespace controller (etcd datastore only).
pub type NamespaceControllerConfig = ReconcilerConfig;

/// The LoadBalancer IPAM controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerControllerConfig {
    /// `AllServices` or `RequestedServicesOnly`; Calico fills in `AllServices`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "assignIPs")]
    pub assign_ips: Option<String>,
}

/// Migration controllers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationControllerConfig {
    /// `Enabled` or `Disabled`; Calico fills in `Enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name_migrator: Option<String>,
}

impl CalicoSpec for KubeControllersConfigurationSpec {
    const KIND: Kind = Kind::KubeControllersConfiguration;

    /// What Calico does on create and update: Go's JSON round trip (canonical durations,
    /// empty strings, lists and maps dropped), libcalico-go's defaults
    /// (`prometheusMetricsPort: 9094`, `node.leakGracePeriod: 15m0s`,
    /// `loadBalancer.assignIPs: AllServices`) and the CRD schema defaults
    /// (`healthChecks: Enabled`, `migration.policyNameMigrator: Enabled`).
    ///
    /// libcalico-go also means to default each template's `nodeSelector` to `all()`, but
    /// it edits a copy, so nothing is stored; neither is anything here.
    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {
        self.normalize();
        self.prometheus_metrics_port.get_or_insert(9094);
        self.health_checks.get_or_insert_with(|| "Enabled".into());
        let c = &mut self.controllers;
        if let Some(node) = &mut c.node {
            node.leak_grace_period.get_or_insert_with(|| "15m0s".into());
        }
        if let Some(lb) = &mut c.load_balancer {
            lb.assign_ips.get_or_insert_with(|| "AllServices".into());
        }
        if let Some(m) = &mut c.migration {
            m.policy_name_migrator
                .get_or_insert_with(|| "Enabled".into());
        }
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        checks::one_of(
            errs,
            "logSeverityScreen",
            go_str(&self.log_severity_screen),
            &[
                "None", "Debug", "Info", "Warning", "Error", "Fatal", "Panic",
            ],
        );
        checks::one_of(
            errs,
            "healthChecks",
            go_str(&self.health_checks),
            ENABLED_DISABLED,
        );
        checks::duration(
            errs,
            "etcdV3CompactionPeriod",
            self.etcd_v3_compaction_period.as_deref(),
            D::Any,
        );
        checks::int_range(
            errs,
            "prometheusMetricsPort",
            self.prometheus_metrics_port,
            0,
            65535,
        );
        checks::int_range(
            errs,
            "debugProfilePort",
            self.debug_profile_port.map(i64::from),
            0,
            65535,
        );
        errs.at("controllers", |errs| self.controllers.validate(errs));
    }
}

impl KubeControllersConfigurationSpec {
    fn normalize(&mut self) {
        drop_empty(&mut self.log_severity_screen);
        drop_empty(&mut self.health_checks);
        canonicalize_duration(&mut self.etcd_v3_compaction_period);
        let c = &mut self.controllers;
        if let Some(node) = &mut c.node {
            canonicalize_duration(&mut node.reconciler_period);
            canonicalize_duration(&mut node.leak_grace_period);
            drop_empty(&mut node.sync_labels);
            if let Some(hep) = &mut node.host_endpoint {
                drop_empty(&mut hep.auto_create);
                drop_empty(&mut hep.create_default_host_endpoint);
                if hep.templates.as_ref().is_some_and(Vec::is_empty) {
                    hep.templates = None;
                }
                for t in hep.templates.iter_mut().flatten() {
                    drop_empty(&mut t.generate_name);
                    drop_empty(&mut t.interface_pattern);
                    drop_empty(&mut t.node_selector);
                    if t.interface_cidrs.as_ref().is_some_and(Vec::is_empty) {
                        t.interface_cidrs = None;
                    }
                    if t.labels.as_ref().is_some_and(BTreeMap::is_empty) {
                        t.labels = None;
                    }
                    if t.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
                        t.annotations = None;
                    }
                }
            }
        }
        for r in [
            &mut c.policy,
            &mut c.workload_endpoint,
            &mut c.service_account,
            &mut c.namespace,
        ]
        .into_iter()
        .flatten()
        {
            canonicalize_duration(&mut r.reconciler_period);
        }
        if let Some(lb) = &mut c.load_balancer {
            drop_empty(&mut lb.assign_ips);
        }
        if let Some(m) = &mut c.migration {
            drop_empty(&mut m.policy_name_migrator);
        }
    }
}

impl ControllersConfig {
    fn validate(&self, errs: &mut Errors) {
        if let Some(node) = &self.node {
            errs.at("node", |errs| node.validate(errs));
        }
        for (field, r) in [
            ("policy", &self.policy),
            ("workloadEndpoint", &self.workload_endpoint),
            ("serviceAccount", &self.service_account),
            ("namespace", &self.namespace),
        ] {
            if let Some(r) = r {
                errs.at(field, |errs| {
                    checks::duration(
                        errs,
                        "reconcilerPeriod",
                        r.reconciler_period.as_deref(),
                        D::Any,
                    );
                });
            }
        }
        if let Some(lb) = &self.load_balancer {
            errs.at("loadBalancer", |errs| {
                checks::one_of(
                    errs,
                    "assignIPs",
                    go_str(&lb.assign_ips),
                    &["AllServices", "RequestedServicesOnly"],
                );
            });
        }
        if let Some(m) = &self.migration {
            errs.at("migration", |errs| {
                checks::one_of(
                    errs,
                    "policyNameMigrator",
                    go_str(&m.policy_name_migrator),
                    ENABLED_DISABLED,
                );
            });
        }
    }
}

impl NodeControllerConfig {
    fn validate(&self, errs: &mut Errors) {
        checks::duration(
            errs,
            "reconcilerPeriod",
            self.reconciler_period.as_deref(),
            D::Any,
        );
        checks::duration(
            errs,
            "leakGracePeriod",
            self.leak_grace_period.as_deref(),
            D::Any,
        );
        checks::one_of(
            errs,
            "syncLabels",
            go_str(&self.sync_labels),
            ENABLED_DISABLED,
        );
        let Some(hep) = &self.host_endpoint else {
            return;
        };
        errs.at("hostEndpoint", |errs| {
            checks::one_of(
                errs,
                "autoCreate",
                go_str(&hep.auto_create),
                ENABLED_DISABLED,
            );
            checks::one_of(
                errs,
                "createDefaultHostEndpoint",
                go_str(&hep.create_default_host_endpoint),
                ENABLED_DISABLED,
            );
            let Some(templates) = &hep.templates else {
                return;
            };
            errs.at("templates", |errs| {
                let mut seen = std::collections::BTreeSet::new();
                for (i, t) in templates.iter().enumerate() {
                    errs.idx(i, |errs| {
                        if let Some(name) = go_str(&t.generate_name)
                            && !seen.insert(name)
                        {
                            errs.add("generateName", name, "Template name must be unique");
                        }
                        t.validate(errs);
                    });
                }
            });
        });
    }
}

impl HostEndpointTemplate {
    fn validate(&self, errs: &mut Errors) {
        match go_str(&self.generate_name) {
            None => errs.missing("generateName", "Template name must be specified"),
            Some(name) if name.len() > 253 => {
                errs.add(
                    "generateName",
                    name,
                    "Template name must be shorter than 253 characters",
                );
            }
            Some(name) => validate::dns1123_subdomain(errs, "generateName", name),
        }
        if self.interface_cidrs.as_ref().is_none_or(Vec::is_empty)
            && go_str(&self.interface_pattern).is_none()
        {
            errs.missing(
                "interfaceCIDRs",
                "InterfaceCIDRs or InterfacePattern must be specified",
            );
        }
        checks::cidr_list(
            errs,
            "interfaceCIDRs",
            self.interface_cidrs.as_deref(),
            false,
        );
        checks::regexp(errs, "interfacePattern", go_str(&self.interface_pattern));
        if let Some(labels) = &self.labels {
            errs.at("labels", |errs| {
                for (k, v) in labels {
                    validate::label_key(errs, k);
                    validate::label_value(errs, k, v);
                }
            });
        }
        if let Some(annotations) = &self.annotations {
            errs.at("annotations", |errs| {
                for k in annotations.keys() {
                    validate::label_key(errs, &k.to_lowercase());
                }
            });
            let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
            if size > ANNOTATIONS_MAX_BYTES {
                errs.add(
                    "annotations",
                    size,
                    format!(
                        "total size of annotations is too large by {} bytes",
                        size - ANNOTATIONS_MAX_BYTES
                    ),
                );
            }
        }
        if let Some(sel) = go_str(&self.node_selector) {
            validate::selector(errs, "nodeSelector", sel);
        }
    }
}
