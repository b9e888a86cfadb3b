//! Registering this node's `Node` record: create it, or update only the fields the agent
//! owns (`spec.bgp.ipv4Address`/`ipv6Address` and the `CalicoNodeIP` entries of
//! `spec.addresses`), keeping labels, annotations and every other field as others set them.
//! Writes are CAS on the record's revision and retried on conflict.

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_api::endpoint::{NodeAddress, NodeBgpSpec, NodeSpec};
use tortie_api::resource::{Object, Resource};
use tortie_store::{Store, StoreError};

/// The `spec.addresses` type the agent writes.
pub const NODE_IP_TYPE: &str = "CalicoNodeIP";

/// Attempts of the read-modify-write before giving up.
pub const MAX_ATTEMPTS: usize = 5;

/// What the agent registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRegistration {
    pub name: String,
    /// Underlay IPv4 address with prefix, e.g. `198.18.0.11/24`.
    pub ipv4: Option<IpNet>,
    /// Underlay IPv6 address with prefix.
    pub ipv6: Option<IpNet>,
}

/// A registration failure.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("datastore error on {key}")]
    Store {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error("existing record {key} cannot be decoded: {reason}")]
    Decode { key: String, reason: String },
    #[error("{key} kept changing underneath; gave up after {attempts} attempts")]
    Contended { key: String, attempts: usize },
}

/// Sets the agent-owned fields of `spec`; returns whether anything changed. Pure.
pub fn apply_registration(spec: &mut NodeSpec, reg: &NodeRegistration) -> bool {
    let before = spec.clone();
    if reg.ipv4.is_some() || reg.ipv6.is_some() {
        let bgp = spec.bgp.get_or_insert_with(NodeBgpSpec::default);
        if let Some(v4) = reg.ipv4 {
            bgp.ipv4_address = v4.to_string();
        }
        if let Some(v6) = reg.ipv6 {
            bgp.ipv6_address = v6.to_string();
        }
    }
    let ours: Vec<String> = [reg.ipv4, reg.ipv6]
        .into_iter()
        .flatten()
        .map(|n| n.to_string())
        .collect();
    spec.addresses
        .retain(|a| a.type_ != NODE_IP_TYPE || ours.contains(&a.address));
    for address in ours {
        let present = spec
            .addresses
            .iter()
            .any(|a| a.type_ == NODE_IP_TYPE && a.address == address);
        if !present {
            spec.addresses.push(NodeAddress {
                address,
                type_: NODE_IP_TYPE.to_string(),
            });
        }
    }
    *spec != before
}

/// Creates or updates the Node record. Returns whether a write happened.
pub async fn register(store: &dyn Store, reg: &NodeRegistration) -> Result<bool, RegisterError> {
    let key = Kind::Node.key(None, &reg.name);
    let store_err = |source| RegisterError::Store {
        key: key.clone(),
        source,
    };
    for _ in 0..MAX_ATTEMPTS {
        let existing = store.get(&key).await.map_err(store_err)?;
        let Some(kv) = existing else {
            let mut spec = NodeSpec::default();
            apply_registration(&mut spec, reg);
            let res = Resource::Node(Object::new(&reg.name, None, spec));
            match store
                .create(&key, &tortie_api::codec::to_stored(&res))
                .await
            {
                Ok(_) => return Ok(true),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(store_err(e)),
            }
        };
        let decoded = serde_json::from_slice(&kv.value)
            .map_err(|e| e.to_string())
            .and_then(tortie_api::codec::from_stored);
        let mut node = match decoded {
            Ok(Resource::Node(node)) => node,
            Ok(other) => {
                return Err(RegisterError::Decode {
                    key,
                    reason: format!("holds a {}", other.kind()),
                });
            }
            Err(reason) => return Err(RegisterError::Decode { key, reason }),
        };
        if !apply_registration(&mut node.body.spec, reg) {
            return Ok(false);
        }
        let bytes = tortie_api::codec::to_stored(&Resource::Node(node));
        match store.update(&key, &bytes, Some(kv.mod_revision)).await {
            Ok(_) => return Ok(true),
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(RegisterError::Contended {
        key,
        attempts: MAX_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tortie_store::memory::MemoryStore;

    fn reg(v4: &str) -> NodeRegistration {
        NodeRegistration {
            name: "n1".into(),
            ipv4: Some(v4.parse().unwrap()),
            ipv6: None,
        }
    }

    #[tokio::test]
    async fn creates_then_updates_keeping_labels_and_other_addresses() {
        let store = MemoryStore::new();
        assert!(register(&store, &reg("198.18.0.11/24")).await.unwrap());
        assert!(!register(&store, &reg("198.18.0.11/24")).await.unwrap());
        let key = Kind::Node.key(None, "n1");
        // Someone labels the node and adds an address.
        let kv = store.get(&key).await.unwrap().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        v["metadata"]["labels"] = serde_json::json!({"rack": "r1"});
        v["spec"]["addresses"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"address": "203.0.113.7/32", "type": "ExternalIP"}));
        store
            .update(
                &key,
                &serde_json::to_vec(&v).unwrap(),
                Some(kv.mod_revision),
            )
            .await
            .unwrap();
        assert!(register(&store, &reg("198.18.0.21/24")).await.unwrap());
        let kv = store.get(&key).await.unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(v["metadata"]["labels"]["rack"], "r1");
        assert_eq!(v["spec"]["bgp"]["ipv4Address"], "198.18.0.21/24");
        assert_eq!(
            v["spec"]["addresses"],
            serde_json::json!([
                {"address": "203.0.113.7/32", "type": "ExternalIP"},
                {"address": "198.18.0.21/24", "type": "CalicoNodeIP"},
            ])
        );
        assert!(v["metadata"].get("resourceVersion").is_none());
    }

    #[tokio::test]
    async fn refuses_to_overwrite_an_undecodable_record() {
        let store = MemoryStore::new();
        let key = Kind::Node.key(None, "n1");
        store.create(&key, b"not json").await.unwrap();
        let err = register(&store, &reg("198.18.0.11/24")).await.unwrap_err();
        assert!(matches!(err, RegisterError::Decode { .. }), "{err}");
    }
}
