//! Typed objects and the [`Resource`] enum over every kind.
//!
//! A manifest is `apiVersion`, `kind`, `metadata` and a kind-specific body. Calico kinds have
//! a body of `spec` (and an optional `status` that is kept but not validated); Kubernetes kinds
//! define their own body. Bodies reject unknown fields for Calico kinds, as Calico's strict
//! decoder does; Kubernetes bodies keep unknown fields so real Pod manifests round-trip.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Errors, FieldError};
use crate::kind::Kind;
use crate::meta::ObjectMeta;

/// Behaviour every kind's body provides.
pub trait Body:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq + Send + Sync
{
    const KIND: Kind;

    /// Fills in defaults exactly as Calico does on create.
    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {}

    /// Validates the body; paths are relative to the document root.
    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors);

    /// Decodes a whole manifest straight from one YAML document's text, so that scalars land
    /// in typed fields the way Calico's YAML decoder puts them (an unquoted `1.0` label value
    /// stays the string "1.0"). `None` means this kind decodes through JSON values instead.
    fn from_yaml(_text: &str) -> Option<Result<(ObjectMeta, Self), FieldError>> {
        None
    }
}

/// Deserialises `T`, prefixing any error with the field path where it happened.
#[derive(Debug)]
pub struct PathTracked<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for PathTracked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut track = serde_path_to_error::Track::new();
        match T::deserialize(serde_path_to_error::Deserializer::new(d, &mut track)) {
            Ok(t) => Ok(PathTracked(t)),
            Err(e) => Err(D::Error::custom(format!("field {}: {e}", track.path()))),
        }
    }
}

/// The whole manifest of a kind whose body is `{spec, status}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecManifest<S> {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    spec: Option<S>,
    #[serde(default)]
    status: Option<Value>,
}

/// serde lists every known field after an unknown one; for big kinds that drowns the message.
fn shorten_expected_list(msg: &str) -> String {
    const KEEP: usize = 240;
    match msg.find(", expected one of ") {
        Some(i) if msg.len() > KEEP => {
            let tail = msg[i..]
                .find(" at line ")
                .map(|j| &msg[i + j..])
                .unwrap_or("");
            format!("{} (not a field of this kind){tail}", &msg[..i])
        }
        _ => msg.to_string(),
    }
}

/// Decodes `{apiVersion, kind, metadata, spec, status}` from YAML text.
pub fn spec_from_yaml<S: DeserializeOwned + Default>(
    text: &str,
) -> Result<(ObjectMeta, S, Option<Value>), FieldError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    match serde_saphyr::from_str_with_options::<PathTracked<SpecManifest<S>>>(text, options) {
        Ok(PathTracked(m)) => Ok((m.metadata, m.spec.unwrap_or_default(), m.status)),
        Err(e) => Err(FieldError {
            path: String::new(),
            value: String::new(),
            reason: shorten_expected_list(&e.to_string()),
        }),
    }
}

/// A Calico spec type: the body is `{spec, status?}`.
pub trait CalicoSpec:
    Serialize + DeserializeOwned + Clone + Default + std::fmt::Debug + PartialEq + Send + Sync
{
    const KIND: Kind;
    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {}
    /// Validates the spec; `errs` is positioned at `spec`.
    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors);
}

/// The `{spec, status}` body of a Calico kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithSpec<S> {
    #[serde(default)]
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl<S: CalicoSpec> Body for WithSpec<S> {
    const KIND: Kind = S::KIND;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        self.spec.apply_defaults(meta);
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        errs.at("spec", |errs| self.spec.validate(meta, errs));
    }

    fn from_yaml(text: &str) -> Option<Result<(ObjectMeta, Self), FieldError>> {
        Some(
            spec_from_yaml::<S>(text).map(|(meta, spec, status)| (meta, WithSpec { spec, status })),
        )
    }
}

/// One object of kind `B::KIND`.
#[derive(Debug, Clone, PartialEq)]
pub struct Object<B> {
    pub metadata: ObjectMeta,
    pub body: B,
}

impl<S: CalicoSpec> Object<WithSpec<S>> {
    /// A new object with the given name, namespace and spec.
    pub fn new(name: &str, namespace: Option<&str>, spec: S) -> Self {
        Object {
            metadata: ObjectMeta::named(name, namespace),
            body: WithSpec { spec, status: None },
        }
    }

    pub fn spec(&self) -> &S {
        &self.body.spec
    }
}

fn field_error(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> FieldError {
    let inner = e.path().to_string();
    let path = match (prefix, inner.as_str()) {
        (p, ".") => p.to_string(),
        ("", i) => i.to_string(),
        (p, i) if i.starts_with('[') => format!("{p}{i}"),
        (p, i) => format!("{p}.{i}"),
    };
    let msg = e.into_inner().to_string();
    // serde_json appends " at line X column Y" when deserialising from text; not from a Value.
    FieldError {
        path,
        value: String::new(),
        reason: msg,
    }
}

impl<B: Body> Object<B> {
    /// Builds an object from the parts of a manifest (metadata and body fields already split).
    pub fn from_parts(metadata: Value, body: Map<String, Value>) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let metadata: Option<ObjectMeta> = serde_path_to_error::deserialize(metadata)
            .map_err(|e| errors.push(field_error(e, "metadata")))
            .ok();
        let body: Option<B> = serde_path_to_error::deserialize(Value::Object(body))
            .map_err(|e| errors.push(field_error(e, "")))
            .ok();
        match (metadata, body) {
            (Some(metadata), Some(body)) if errors.is_empty() => Ok(Object { metadata, body }),
            _ => Err(errors),
        }
    }

    /// Decodes from one YAML document's text, if the kind supports it.
    pub fn from_yaml(text: &str) -> Option<Result<Self, Vec<FieldError>>> {
        B::from_yaml(text).map(|r| {
            r.map(|(metadata, body)| Object { metadata, body })
                .map_err(|e| vec![e])
        })
    }

    /// Fills defaults then validates; returns every field error.
    pub fn default_and_validate(&mut self) -> Result<(), Vec<FieldError>> {
        self.body.apply_defaults(&mut self.metadata);
        let mut errs = Errors::new();
        let info = B::KIND.info();
        self.metadata
            .validate(&mut errs, info.namespaced, info.name_rule);
        self.body.validate(&self.metadata, &mut errs);
        let singleton = matches!(
            B::KIND,
            Kind::IPAMConfiguration | Kind::KubeControllersConfiguration
        );
        if singleton && self.metadata.name != "default" {
            errs.at("metadata", |errs| {
                errs.add(
                    "name",
                    &self.metadata.name,
                    format!("{} is a singleton and must be named default", B::KIND),
                );
            });
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.into_vec())
        }
    }

    /// Renders the full manifest as a JSON value (`apiVersion`, `kind`, `metadata`, body).
    pub fn to_value(&self) -> Value {
        let info = B::KIND.info();
        let mut m = Map::new();
        m.insert("apiVersion".into(), Value::String(info.api_version.into()));
        m.insert("kind".into(), Value::String(info.name.into()));
        m.insert(
            "metadata".into(),
            serde_json::to_value(&self.metadata).unwrap_or(Value::Null),
        );
        if let Ok(Value::Object(body)) = serde_json::to_value(&self.body) {
            m.extend(body);
        }
        Value::Object(m)
    }
}

macro_rules! resources {
    ($($variant:ident => $body:ty),* $(,)?) => {
        /// A resource of any kind.
        #[derive(Debug, Clone, PartialEq)]
        #[expect(clippy::large_enum_variant, reason = "resources are created per manifest, not in hot paths")]
        pub enum Resource {
            $($variant(Object<$body>),)*
        }

        impl Resource {
            pub fn kind(&self) -> Kind {
                match self { $(Resource::$variant(_) => <$body as Body>::KIND,)* }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self { $(Resource::$variant(o) => &o.metadata,)* }
            }

            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self { $(Resource::$variant(o) => &mut o.metadata,)* }
            }

            pub fn to_value(&self) -> Value {
                match self { $(Resource::$variant(o) => o.to_value(),)* }
            }

            /// Fills defaults then validates.
            pub fn default_and_validate(&mut self) -> Result<(), Vec<FieldError>> {
                match self { $(Resource::$variant(o) => o.default_and_validate(),)* }
            }

            /// Decodes a resource of `kind` from one YAML document's text, if the kind
            /// supports direct YAML decoding.
            pub fn from_yaml(kind: Kind, text: &str) -> Option<Result<Self, Vec<FieldError>>> {
                $(if kind == <$body as Body>::KIND {
                    return Object::<$body>::from_yaml(text).map(|r| r.map(Resource::$variant));
                })*
                None
            }

            /// Builds a resource of `kind` from metadata and body fields (no defaults, no
            /// validation).
            pub fn from_parts(kind: Kind, metadata: Value, body: Map<String, Value>) -> Result<Self, Vec<FieldError>> {
                $(if kind == <$body as Body>::KIND {
                    return Object::<$body>::from_parts(metadata, body).map(Resource::$variant);
                })*
                Err(vec![FieldError { path: "kind".into(), value: kind.to_string(), reason: "kind has no decoder".into() }])
            }
        }
    };
}

use crate::bgp::{BGPConfigurationSpec, BGPFilterSpec, BGPPeerSpec};
use crate::config::{FelixConfigurationSpec, KubeControllersConfigurationSpec};
use crate::endpoint::{
    GlobalNetworkSetSpec, HostEndpointSpec, NetworkSetSpec, NodeSpec, WorkloadEndpointSpec,
};
use crate::ipam::{IPAMConfigurationSpec, IPPoolSpec, IPReservationSpec};
use crate::k8s::{K8sNetworkPolicyBody, NamespaceBody, PodBody, ServiceAccountBody};
use crate::policy::{
    GlobalNetworkPolicySpec, NetworkPolicySpec, ProfileSpec, StagedGlobalNetworkPolicySpec,
    StagedKubernetesNetworkPolicySpec, StagedNetworkPolicySpec, TierSpec,
};
use crate::secret::SecretBody;

resources! {
    IPPool => WithSpec<IPPoolSpec>,
    IPReservation => WithSpec<IPReservationSpec>,
    IPAMConfiguration => WithSpec<IPAMConfigurationSpec>,
    BGPConfiguration => WithSpec<BGPConfigurationSpec>,
    BGPPeer => WithSpec<BGPPeerSpec>,
    BGPFilter => WithSpec<BGPFilterSpec>,
    NetworkPolicy => WithSpec<NetworkPolicySpec>,
    GlobalNetworkPolicy => WithSpec<GlobalNetworkPolicySpec>,
    StagedNetworkPolicy => WithSpec<StagedNetworkPolicySpec>,
    StagedGlobalNetworkPolicy => WithSpec<StagedGlobalNetworkPolicySpec>,
    StagedKubernetesNetworkPolicy => WithSpec<StagedKubernetesNetworkPolicySpec>,
    Tier => WithSpec<TierSpec>,
    NetworkSet => WithSpec<NetworkSetSpec>,
    GlobalNetworkSet => WithSpec<GlobalNetworkSetSpec>,
    HostEndpoint => WithSpec<HostEndpointSpec>,
    WorkloadEndpoint => WithSpec<WorkloadEndpointSpec>,
    Profile => WithSpec<ProfileSpec>,
    Node => WithSpec<NodeSpec>,
    FelixConfiguration => WithSpec<FelixConfigurationSpec>,
    KubeControllersConfiguration => WithSpec<KubeControllersConfigurationSpec>,
    K8sNetworkPolicy => K8sNetworkPolicyBody,
    Namespace => NamespaceBody,
    Pod => PodBody,
    ServiceAccount => ServiceAccountBody,
    Secret => SecretBody,
}

impl Resource {
    pub fn name(&self) -> &str {
        &self.meta().name
    }

    pub fn namespace(&self) -> Option<&str> {
        if self.kind().namespaced() {
            self.meta().namespace.as_deref()
        } else {
            None
        }
    }

    /// The storage key (namespaced kinds default to namespace `default`).
    pub fn key(&self) -> String {
        let ns = self.namespace().unwrap_or("default");
        self.kind().key(Some(ns), self.name())
    }

    /// `Kind/name` or `Kind/ns/name`, for messages.
    pub fn display_id(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }
}
