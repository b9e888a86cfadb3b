//! core/v1 Secret: opaque values by key. The agent reads BGP passwords (`secretKeyRef` in
//! BGPPeer `password` and BGPConfiguration `nodeMeshPassword`) from the Secrets of its
//! `--secrets-namespace`, as calico-node reads them from its own namespace.
//!
//! Stored the way Kubernetes stores them:
//! - `data` holds base64 values (standard alphabet, padded); each must decode;
//! - `stringData` is write-only: on apply its entries are base64-encoded into `data`
//!   (replacing the same key) and the field is dropped, so reads (`get -o yaml`) show base64,
//!   never the plain text;
//! - `type` defaults to `Opaque`; the built-in types' required keys are checked.
//!
//! `Debug` names the keys, never the values.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::resource::Body;

/// The `type` of a Secret that names none.
pub const DEFAULT_SECRET_TYPE: &str = "Opaque";
/// Kubernetes' limit on the decoded size of a Secret's data (`MaxSecretSize`).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// Longest key (Kubernetes `IsConfigMapKey`).
const MAX_KEY_LEN: usize = 253;

/// Keys a Secret of a built-in type must have (Kubernetes `ValidateSecret`).
const REQUIRED_KEYS: &[(&str, &[&str])] = &[
    ("kubernetes.io/tls", &["tls.crt", "tls.key"]),
    ("kubernetes.io/ssh-auth", &["ssh-privatekey"]),
    ("kubernetes.io/dockerconfigjson", &[".dockerconfigjson"]),
    ("kubernetes.io/dockercfg", &[".dockercfg"]),
];

/// Body of a Secret.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretBody {
    /// Key → base64 of the value.
    #[serde(
        default,
        deserialize_with = "map_or_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub data: BTreeMap<String, String>,
    /// Key → plain-text value; merged into `data` on apply.
    #[serde(
        default,
        deserialize_with = "map_or_null",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub string_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
}

/// `data: null` (or an empty YAML mapping written as `data:`) is no data.
fn map_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(Option::<BTreeMap<String, String>>::deserialize(d)?.unwrap_or_default())
}

impl fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBody")
            .field("data", &self.data.keys().collect::<Vec<_>>())
            .field("string_data", &self.string_data.keys().collect::<Vec<_>>())
            .field("immutable", &self.immutable)
            .field("type", &self.type_)
            .finish()
    }
}

impl SecretBody {
    /// Every value, decoded. `Err` names the first key whose value is not base64 (validation
    /// rejects those, so only a record written around tortie can have one).
    pub fn decoded(&self) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.data
            .iter()
            .map(|(k, v)| {
                STANDARD
                    .decode(v)
                    .map(|bytes| (k.clone(), bytes))
                    .map_err(|e| format!("data[{k}] is not base64: {e}"))
            })
            .collect()
    }

    /// Sets `key` to `value` (stored base64-encoded in `data`).
    pub fn insert(&mut self, key: &str, value: &[u8]) {
        self.data.insert(key.to_string(), STANDARD.encode(value));
    }

    fn has(&self, key: &str) -> bool {
        self.data.contains_key(key)
    }
}

/// Kubernetes `IsConfigMapKey`: 1-253 of `[-._a-zA-Z0-9]`, not `.`, `..` or `..`-prefixed.
pub fn is_secret_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEY_LEN
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && k != "."
        && !k.starts_with("..")
}

fn check_key(errs: &mut Errors, field: &str, k: &str) {
    if !is_secret_key(k) {
        errs.add(
            field,
            k,
            "a key must be 1-253 of letters, digits, '-', '_' and '.', and not '.' or start with '..'",
        );
    }
}

impl Body for SecretBody {
    const KIND: Kind = Kind::Secret;

    /// `type: Opaque` when absent; `stringData` merged into `data` (the API server's
    /// conversion: stringData wins over data for the same key). A `stringData` key that is not
    /// valid stays there, so validation names it where the user wrote it.
    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {
        if self.type_.is_empty() {
            self.type_ = DEFAULT_SECRET_TYPE.to_string();
        }
        for (k, v) in std::mem::take(&mut self.string_data) {
            if is_secret_key(&k) {
                self.insert(&k, v.as_bytes());
            } else {
                self.string_data.insert(k, v);
            }
        }
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        let mut total = 0usize;
        errs.at("data", |errs| {
            for (k, v) in &self.data {
                let field = format!("[{k}]");
                check_key(errs, &field, k);
                // The value is secret: the error names the key, never echoes the value.
                match STANDARD.decode(v) {
                    Ok(bytes) => total += bytes.len(),
                    Err(e) => errs.missing(
                        &field,
                        format!(
                            "the value is not base64 ({e}); data values are base64 \
                             (standard alphabet, padded), or write plain text under stringData"
                        ),
                    ),
                }
            }
        });
        errs.at("stringData", |errs| {
            for k in self.string_data.keys() {
                check_key(errs, &format!("[{k}]"), k);
            }
        });
        if total > MAX_SECRET_BYTES {
            errs.add(
                "data",
                total,
                format!("a Secret holds at most {MAX_SECRET_BYTES} bytes of data"),
            );
        }
        self.validate_type(meta, errs);
    }
}

impl SecretBody {
    fn validate_type(&self, meta: &ObjectMeta, errs: &mut Errors) {
        let t = self.type_.as_str();
        match t {
            "kubernetes.io/basic-auth" if !self.has("username") && !self.has("password") => {
                errs.missing(
                    "data",
                    "a kubernetes.io/basic-auth Secret needs the key username or password",
                );
            }
            "kubernetes.io/service-account-token"
                if !meta
                    .annotations
                    .contains_key("kubernetes.io/service-account.name") =>
            {
                errs.missing(
                    "metadata.annotations",
                    "a kubernetes.io/service-account-token Secret needs the annotation \
                     kubernetes.io/service-account.name",
                );
            }
            _ => {
                let required = REQUIRED_KEYS
                    .iter()
                    .find(|(name, _)| *name == t)
                    .map_or(&[][..], |(_, keys)| *keys);
                for key in required {
                    if !self.has(key) {
                        errs.missing(
                            &format!("data[{key}]"),
                            format!("a {t} Secret needs this key"),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Format, decode, encode};
    use crate::resource::Resource;

    fn one(text: &str) -> Result<Resource, String> {
        let mut out = decode("t.yaml", text, "default");
        assert_eq!(out.len(), 1, "{out:?}");
        out.pop()
            .unwrap()
            .map(|(_, r)| r)
            .map_err(|e| e.to_string())
    }

    fn secret(r: &Resource) -> &SecretBody {
        match r {
            Resource::Secret(o) => &o.body,
            other => panic!("not a Secret: {other:?}"),
        }
    }

    #[test]
    fn parses_data_defaults_the_type_and_decodes() {
        let r = one("apiVersion: v1
kind: Secret
metadata: {name: bgp-secrets, namespace: calico-system}
data:
  rr-password: dmVyeS1zZWNyZXQ=
")
        .unwrap();
        assert_eq!(r.kind(), Kind::Secret);
        assert_eq!(r.namespace(), Some("calico-system"));
        assert_eq!(
            r.key(),
            "/calico/resources/v3/core/secrets/calico-system/bgp-secrets"
        );
        let s = secret(&r);
        assert_eq!(s.type_, "Opaque");
        assert_eq!(s.decoded().unwrap()["rr-password"], b"very-secret");
    }

    #[test]
    fn string_data_is_merged_into_data_and_wins() {
        let r = one("apiVersion: v1
kind: Secret
metadata: {name: s}
type: Opaque
data:
  a: b2xk
  keep: a2VlcA==
stringData:
  a: new
  b: plain text
")
        .unwrap();
        let s = secret(&r);
        assert!(s.string_data.is_empty(), "stringData is write-only");
        let d = s.decoded().unwrap();
        assert_eq!(d["a"], b"new");
        assert_eq!(d["b"], b"plain text");
        assert_eq!(d["keep"], b"keep");
        // What is stored and printed is base64 only.
        let yaml = encode(std::slice::from_ref(&r), None, Format::Yaml);
        assert!(!yaml.contains("plain text"), "{yaml}");
        assert!(!yaml.contains("stringData"), "{yaml}");
        assert!(yaml.contains("cGxhaW4gdGV4dA=="), "{yaml}");
        assert_eq!(one(&yaml).unwrap(), r, "round trip");
    }

    #[test]
    fn bad_base64_names_the_field_and_key_but_not_the_value() {
        let e = one("apiVersion: v1
kind: Secret
metadata: {name: s}
data:
  password: not*base64!
")
        .unwrap_err();
        assert!(e.contains("field data[password]: "), "{e}");
        assert!(e.contains("not base64"), "{e}");
        assert!(
            !e.contains("not*base64!"),
            "the value must not be echoed: {e}"
        );
    }

    #[test]
    fn keys_and_types_are_checked() {
        let e = one("apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {'bad/key': x}
")
        .unwrap_err();
        assert!(e.contains("field stringData[bad/key] = \"bad/key\""), "{e}");
        let e = one("apiVersion: v1
kind: Secret
metadata: {name: s}
type: kubernetes.io/tls
stringData: {tls.crt: x}
")
        .unwrap_err();
        assert!(e.contains("field data[tls.key]"), "{e}");
        let e = one("apiVersion: v1
kind: Secret
metadata: {name: s}
data: {password: 5}
")
        .unwrap_err();
        assert!(e.contains("data.password"), "{e}");
        let e = one("apiVersion: v1
kind: Secret
metadata: {name: s}
strinData: {password: x}
")
        .unwrap_err();
        assert!(e.contains("strinData"), "{e}");
    }

    #[test]
    fn debug_never_shows_values() {
        let r = one("apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {password: hunter2}
")
        .unwrap();
        let dbg = format!("{r:?}");
        assert!(dbg.contains("password"), "{dbg}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("aHVudGVyMg"),
            "{dbg}"
        );
    }
}
