//! Kubernetes-style object metadata shared by every kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Errors;
use crate::validate;

/// `metadata` of a resource. Mirrors Kubernetes `ObjectMeta`; unknown keys are rejected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed_fields: Vec<Value>,
}

impl ObjectMeta {
    /// A metadata block with just a name (and namespace).
    pub fn named(name: &str, namespace: Option<&str>) -> Self {
        Self {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            ..Self::default()
        }
    }

    /// Validates name, namespace, labels and annotations.
    pub fn validate(&self, errs: &mut Errors, namespaced: bool, name_rule: validate::NameRule) {
        errs.at("metadata", |errs| {
            if self.name.is_empty() {
                errs.missing("name", "a name is required");
            } else {
                name_rule.check(errs, "name", &self.name);
            }
            match (&self.namespace, namespaced) {
                (Some(ns), true) if !ns.is_empty() => {
                    validate::dns1123_label(errs, "namespace", ns);
                }
                (Some(ns), false) if !ns.is_empty() => {
                    errs.add(
                        "namespace",
                        ns,
                        "this kind is cluster-scoped and takes no namespace",
                    );
                }
                _ => {}
            }
            errs.at("labels", |errs| {
                for (k, v) in &self.labels {
                    validate::label_key(errs, k);
                    validate::label_value(errs, k, v);
                }
            });
            errs.at("annotations", |errs| {
                for k in self.annotations.keys() {
                    validate::label_key(errs, k);
                }
            });
        });
    }
}
