//! Policy kinds: NetworkPolicy, GlobalNetworkPolicy, their staged variants, Tier and Profile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::k8s::K8sNetworkPolicySpec;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::resource::CalicoSpec;
use crate::rule::{Action, Direction, Rule, validate_rules};
use crate::validate;

/// The tier policies land in when none is named.
pub const DEFAULT_TIER: &str = "default";
/// Order of the default tier, and of tiers with no order.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

/// Ingress or Egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

/// `stagedAction` of staged policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StagedAction {
    Set,
    Delete,
    Learn,
    Ignore,
}

/// Fields common to NetworkPolicy and GlobalNetworkPolicy (and their staged forms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default)]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// GlobalNetworkPolicy: NetworkPolicy plus cluster-wide fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_action: Option<StagedAction>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default)]
    pub selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub do_not_track: bool,
    #[serde(
        default,
        rename = "preDNAT",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub pre_dnat: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub apply_on_forward: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub performance_hints: Vec<String>,
}

/// StagedNetworkPolicy: a NetworkPolicy previewed, never enforced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StagedNetworkPolicySpec(pub NetworkPolicySpec);

/// StagedGlobalNetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StagedGlobalNetworkPolicySpec(pub GlobalNetworkPolicySpec);

/// StagedKubernetesNetworkPolicy: a Kubernetes NetworkPolicy spec plus `stagedAction`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StagedKubernetesNetworkPolicySpec(pub K8sNetworkPolicySpec);

/// Calico's `types` defaulting: Egress-only if there are egress rules and no ingress
/// rules, both if both, otherwise Ingress.
pub fn default_types(ingress: &[Rule], egress: &[Rule]) -> Vec<PolicyType> {
    match (ingress.is_empty(), egress.is_empty()) {
        (true, false) => vec![PolicyType::Egress],
        (false, false) => vec![PolicyType::Ingress, PolicyType::Egress],
        _ => vec![PolicyType::Ingress],
    }
}

/// Label Calico puts on every policy naming its tier.
pub const TIER_LABEL: &str = "projectcalico.org/tier";

fn default_tier(tier: &mut String) {
    if tier.is_empty() {
        *tier = DEFAULT_TIER.to_string();
    }
}

fn label_tier(meta: &mut ObjectMeta, tier: &str) {
    meta.labels.insert(TIER_LABEL.to_string(), tier.to_string());
}

struct Common<'a> {
    tier: &'a str,
    order: Option<f64>,
    ingress: &'a [Rule],
    egress: &'a [Rule],
    selector: &'a str,
    types: Option<&'a [PolicyType]>,
    service_account_selector: &'a str,
    performance_hints: &'a [String],
    staged_action: Option<StagedAction>,
}

/// Policy names: no reserved prefixes, and a '.' only after a `<tier>.` prefix.
pub fn validate_policy_name(errs: &mut Errors, name: &str, tier: &str, namespaced: bool) {
    // Namespaced policies may carry the legacy Kubernetes-policy name form.
    if namespaced && name.starts_with("knp.default.") {
        return;
    }
    for reserved in ["knp.default.", "ossg."] {
        if name.starts_with(reserved) {
            errs.add_abs(
                "metadata.name",
                name,
                format!("the prefix {reserved:?} is reserved"),
            );
            return;
        }
    }
    let rest = name.strip_prefix(&format!("{tier}.")).unwrap_or(name);
    if rest.contains('.') {
        errs.add_abs(
            "metadata.name",
            name,
            format!("a policy name may contain '.' only after the tier prefix \"{tier}.\""),
        );
    }
}

fn validate_common(c: &Common<'_>, staged: bool, errs: &mut Errors) {
    if !staged && let Some(a) = c.staged_action {
        errs.add(
            "stagedAction",
            a,
            "stagedAction is only valid on staged policy kinds",
        );
    }
    if staged && c.staged_action == Some(StagedAction::Delete) {
        let others = !c.selector.is_empty()
            || !c.ingress.is_empty()
            || !c.egress.is_empty()
            || !c.service_account_selector.is_empty()
            || c.order.is_some()
            || c.types.is_some();
        if others {
            errs.add(
                "stagedAction",
                "Delete",
                "a Delete staged policy must not set selector, rules, order or types",
            );
        }
    }
    validate::dns1123_label(errs, "tier", c.tier);
    if let Some(o) = c.order
        && !o.is_finite()
    {
        errs.add("order", o, "must be a finite number");
    }
    if !c.selector.is_empty() {
        validate::selector(errs, "selector", c.selector);
    }
    if !c.service_account_selector.is_empty() {
        validate::selector(errs, "serviceAccountSelector", c.service_account_selector);
    }
    let types = c.types.unwrap_or_default();
    if c.types.is_some_and(<[PolicyType]>::is_empty) {
        errs.add(
            "types",
            types,
            "must list Ingress, Egress or both (omit it to default)",
        );
    }
    let mut seen = Vec::new();
    for t in types {
        if seen.contains(t) {
            errs.add("types", types, "each type may appear once");
        }
        seen.push(*t);
    }
    if !c.ingress.is_empty() && !types.is_empty() && !types.contains(&PolicyType::Ingress) {
        errs.add(
            "types",
            types,
            "ingress rules are present but types does not include Ingress",
        );
    }
    if !c.egress.is_empty() && !types.is_empty() && !types.contains(&PolicyType::Egress) {
        errs.add(
            "types",
            types,
            "egress rules are present but types does not include Egress",
        );
    }
    for (field, sel) in [
        ("selector", c.selector),
        ("serviceAccountSelector", c.service_account_selector),
    ] {
        if sel.contains("global()") {
            errs.add(field, sel, "global() is only valid in namespaceSelector");
        }
    }
    let mut hints = Vec::new();
    for h in c.performance_hints {
        validate::one_of(errs, "performanceHints", h, &["AssumeNeededOnEveryNode"]);
        if hints.contains(&h) {
            errs.add("performanceHints", h, "duplicate hint");
        }
        hints.push(h);
    }
    validate_rules(errs, "ingress", c.ingress, Direction::Ingress);
    validate_rules(errs, "egress", c.egress, Direction::Egress);
}

impl CalicoSpec for NetworkPolicySpec {
    const KIND: Kind = Kind::NetworkPolicy;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        default_tier(&mut self.tier);
        label_tier(meta, &self.tier);
        if self.types.is_none() {
            self.types = Some(default_types(&self.ingress, &self.egress));
        }
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        validate_common(&self.common(), false, errs);
        validate_policy_name(errs, &_meta.name, &self.tier, true);
    }
}

impl NetworkPolicySpec {
    fn common(&self) -> Common<'_> {
        Common {
            tier: &self.tier,
            order: self.order,
            ingress: &self.ingress,
            egress: &self.egress,
            selector: &self.selector,
            types: self.types.as_deref(),
            service_account_selector: &self.service_account_selector,
            performance_hints: &self.performance_hints,
            staged_action: self.staged_action,
        }
    }
}

impl GlobalNetworkPolicySpec {
    fn common(&self) -> Common<'_> {
        Common {
            tier: &self.tier,
            order: self.order,
            ingress: &self.ingress,
            egress: &self.egress,
            selector: &self.selector,
            types: self.types.as_deref(),
            service_account_selector: &self.service_account_selector,
            performance_hints: &self.performance_hints,
            staged_action: self.staged_action,
        }
    }

    fn validate_global(&self, errs: &mut Errors) {
        if !self.namespace_selector.is_empty() {
            validate::selector(errs, "namespaceSelector", &self.namespace_selector);
            if self.namespace_selector.contains("global()") {
                errs.add(
                    "namespaceSelector",
                    &self.namespace_selector,
                    "global() is not valid in a policy's namespaceSelector",
                );
            }
        }
        if self.do_not_track && !self.apply_on_forward {
            errs.add(
                "doNotTrack",
                true,
                "doNotTrack requires applyOnForward: true",
            );
        }
        if self.pre_dnat {
            if !self.apply_on_forward {
                errs.add("preDNAT", true, "preDNAT requires applyOnForward: true");
            }
            if self.do_not_track {
                errs.add("preDNAT", true, "preDNAT and doNotTrack cannot both be set");
            }
            if !self.egress.is_empty() {
                errs.add(
                    "egress",
                    self.egress.len(),
                    "preDNAT policies cannot have egress rules",
                );
            }
            if self
                .types
                .as_deref()
                .unwrap_or_default()
                .contains(&PolicyType::Egress)
            {
                errs.add(
                    "types",
                    &self.types,
                    "preDNAT policies cannot have the Egress type",
                );
            }
        }
    }
}

impl CalicoSpec for GlobalNetworkPolicySpec {
    const KIND: Kind = Kind::GlobalNetworkPolicy;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        default_tier(&mut self.tier);
        label_tier(meta, &self.tier);
        if self.types.is_none() {
            self.types = Some(default_types(&self.ingress, &self.egress));
        }
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        validate_common(&self.common(), false, errs);
        validate_policy_name(errs, &_meta.name, &self.tier, false);
        self.validate_global(errs);
    }
}

impl CalicoSpec for StagedNetworkPolicySpec {
    const KIND: Kind = Kind::StagedNetworkPolicy;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        let p = &mut self.0;
        p.staged_action.get_or_insert(StagedAction::Set);
        if p.staged_action == Some(StagedAction::Delete) {
            default_tier(&mut p.tier);
            label_tier(meta, &p.tier);
        } else {
            p.apply_defaults(meta);
        }
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        validate_common(&self.0.common(), true, errs);
        validate_policy_name(errs, &_meta.name, &self.0.tier, true);
    }
}

impl CalicoSpec for StagedGlobalNetworkPolicySpec {
    const KIND: Kind = Kind::StagedGlobalNetworkPolicy;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        let p = &mut self.0;
        p.staged_action.get_or_insert(StagedAction::Set);
        if p.staged_action == Some(StagedAction::Delete) {
            default_tier(&mut p.tier);
            label_tier(meta, &p.tier);
        } else {
            p.apply_defaults(meta);
        }
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        validate_common(&self.0.common(), true, errs);
        validate_policy_name(errs, &_meta.name, &self.0.tier, false);
        self.0.validate_global(errs);
    }
}

impl CalicoSpec for StagedKubernetesNetworkPolicySpec {
    const KIND: Kind = Kind::StagedKubernetesNetworkPolicy;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        self.0.staged_action.get_or_insert(StagedAction::Set);
        self.0.apply_defaults(meta);
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        self.0.validate_spec(meta, errs, true);
    }
}

/// Built-in tiers and their fixed order and default action.
pub fn builtin_tier(name: &str) -> Option<(f64, Action)> {
    match name {
        DEFAULT_TIER => Some((DEFAULT_TIER_ORDER, Action::Deny)),
        "kube-admin" => Some((1_000.0, Action::Pass)),
        "kube-baseline" => Some((10_000_000.0, Action::Pass)),
        _ => None,
    }
}

/// Tier: a group of policies evaluated in `order`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TierSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_action: Option<Action>,
}

impl CalicoSpec for TierSpec {
    const KIND: Kind = Kind::Tier;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        match builtin_tier(&meta.name) {
            Some((order, action)) => {
                self.order.get_or_insert(order);
                self.default_action.get_or_insert(action);
            }
            None => {
                self.default_action.get_or_insert(Action::Deny);
                self.order.get_or_insert(DEFAULT_TIER_ORDER);
            }
        }
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        if let Some(o) = self.order
            && !o.is_finite()
        {
            errs.add("order", o, "must be a finite number");
        }
        if let Some(a) = self.default_action
            && !matches!(a, Action::Deny | Action::Pass)
        {
            errs.add("defaultAction", format!("{a:?}"), "must be Deny or Pass");
        }
        if let Some((order, action)) = builtin_tier(&meta.name) {
            if self.order != Some(order) {
                errs.add(
                    "order",
                    self.order,
                    format!("the {} tier's order is fixed at {order}", meta.name),
                );
            }
            if self.default_action != Some(action) {
                errs.add(
                    "defaultAction",
                    self.default_action,
                    format!(
                        "the {} tier's defaultAction is fixed at {action:?}",
                        meta.name
                    ),
                );
            }
        }
    }
}

/// Profile: rules and labels inherited by endpoints that name it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Rule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels_to_apply: BTreeMap<String, String>,
}

impl CalicoSpec for ProfileSpec {
    const KIND: Kind = Kind::Profile;

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        if meta.name == "projectcalico-default-allow" {
            errs.add_abs(
                "metadata.name",
                &meta.name,
                "profile projectcalico-default-allow is built in and cannot be written",
            );
        }
        validate_rules(errs, "ingress", &self.ingress, Direction::Ingress);
        validate_rules(errs, "egress", &self.egress, Direction::Egress);
        errs.at("labelsToApply", |errs| {
            for (k, v) in &self.labels_to_apply {
                validate::label_key(errs, k);
                validate::label_value(errs, k, v);
            }
        });
    }
}
