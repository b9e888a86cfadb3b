//! The stored IPAM records, as JSON in Calico's etcd shapes (libcalico-go `backend/model`):
//! [`AllocationBlock`], [`BlockAffinity`] and [`IpamHandle`]; plus tortie's own GC
//! observation records.
//!
//! Decoding is lenient the way Go's `encoding/json` is: `null` lists and maps read as empty,
//! unknown fields are ignored, so records written by Calico load unchanged.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

/// The `affinity` value of a block owned by `node`.
pub fn host_affinity(node: &str) -> String {
    format!("host:{node}")
}

/// Reads `null` as `T::default()`.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// One IPAM block: a CIDR carved from a pool, with one slot per address.
///
/// Invariants (checked by [`AllocationBlock::validate`]): `allocations.len()` is the block
/// size; `unallocated` lists exactly the free ordinals, each once; every allocation indexes
/// an existing attribute; `sequenceNumberForAllocation` has an entry only for allocated
/// ordinals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationBlock {
    pub cidr: IpNet,
    /// `host:<node>`, `virtual:<name>`, or `null` when unaffined.
    #[serde(default)]
    pub affinity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_claim_time: Option<String>,
    /// Deprecated in Calico and ignored; kept so records round-trip.
    #[serde(default)]
    pub strict_affinity: bool,
    /// Per ordinal: `None` = free, `Some(i)` = allocated with `attributes[i]`.
    #[serde(default, deserialize_with = "null_default")]
    pub allocations: Vec<Option<usize>>,
    /// Free ordinals, FIFO: allocation takes from the front, release appends at the back.
    #[serde(default, deserialize_with = "null_default")]
    pub unallocated: Vec<usize>,
    #[serde(default, deserialize_with = "null_default")]
    pub attributes: Vec<AllocationAttribute>,
    /// Bumped on every write of the block.
    #[serde(default)]
    pub sequence_number: u64,
    /// Ordinal (as a decimal string) → the block's sequence number when it was allocated.
    #[serde(default, deserialize_with = "null_default")]
    pub sequence_number_for_allocation: BTreeMap<String, u64>,
    /// Calico's tombstone for CAS-safe deletes in the Kubernetes datastore.
    #[serde(default)]
    pub deleted: bool,
}

/// Who holds an allocation: the handle and free-form attributes (`namespace`, `pod`, `node`,
/// `timestamp`, `type`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationAttribute {
    #[serde(rename = "handle_id", default, skip_serializing_if = "Option::is_none")]
    pub handle_id: Option<String>,
    #[serde(
        rename = "secondary",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub secondary: BTreeMap<String, String>,
    #[serde(
        rename = "alternate",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub alternate: BTreeMap<String, String>,
    #[serde(
        rename = "releasedAt",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub released_at: Option<String>,
}

/// The life cycle of a block affinity (two-phase claim and release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AffinityState {
    /// Claim in progress; treated as absent for ownership and routing.
    Pending,
    /// The host owns the block.
    Confirmed,
    /// Release in progress.
    PendingDeletion,
}

impl std::fmt::Display for AffinityState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AffinityState::Pending => "pending",
            AffinityState::Confirmed => "confirmed",
            AffinityState::PendingDeletion => "pendingDeletion",
        })
    }
}

/// A host's affinity to a block. The key carries host and CIDR; `node` and `cidr` repeat them
/// (Calico's etcd records may omit them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockAffinity {
    pub state: AffinityState,
    #[serde(default)]
    pub node: String,
    #[serde(rename = "type", default = "default_affinity_type")]
    pub affinity_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpNet>,
    #[serde(default)]
    pub deleted: bool,
}

fn default_affinity_type() -> String {
    "host".to_string()
}

impl BlockAffinity {
    /// A host affinity in `state`.
    pub fn host(node: &str, cidr: IpNet, state: AffinityState) -> Self {
        Self {
            state,
            node: node.to_string(),
            affinity_type: default_affinity_type(),
            cidr: Some(cidr),
            deleted: false,
        }
    }
}

/// The secondary index from a handle to the blocks holding its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamHandle {
    #[serde(rename = "handleID")]
    pub handle_id: String,
    /// Block CIDR (`10.0.0.0/26`) → number of the handle's addresses in it.
    #[serde(default, deserialize_with = "null_default")]
    pub block: BTreeMap<String, u64>,
    #[serde(default)]
    pub deleted: bool,
}

impl IpamHandle {
    /// Total addresses recorded.
    pub fn total(&self) -> u64 {
        self.block.values().sum()
    }
}

/// tortie's record of when an allocation was first seen orphaned (GC grace period).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeakObservation {
    pub ip: IpAddr,
    pub handle: String,
    pub sequence_number: u64,
    pub first_seen: String,
}

/// tortie's record of when a block was first seen empty (two-observation release).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EmptyBlockObservation {
    pub cidr: IpNet,
    /// The block's create revision: a re-created block is a different block.
    pub create_revision: i64,
    pub sequence_number: u64,
    pub first_seen: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_calico_block_with_nulls() {
        let json = r#"{"cidr":"10.0.0.0/30","affinity":"host:n1","strictAffinity":false,
            "allocations":[0,null,null,null],"unallocated":[1,2,3],
            "attributes":[{"handle_id":"h","secondary":{"node":"n1"}}],
            "sequenceNumber":3,"sequenceNumberForAllocation":{"0":2},"deleted":false}"#;
        let b: AllocationBlock = serde_json::from_str(json).unwrap();
        assert_eq!(b.allocations, vec![Some(0), None, None, None]);
        assert_eq!(b.attributes[0].handle_id.as_deref(), Some("h"));
        let nulls = r#"{"cidr":"10.0.0.0/30","affinity":null,"allocations":[null,null,null,null],
            "unallocated":[0,1,2,3],"attributes":null,"sequenceNumberForAllocation":null}"#;
        let b: AllocationBlock = serde_json::from_str(nulls).unwrap();
        assert!(b.attributes.is_empty());
        let out = serde_json::to_value(&b).unwrap();
        assert_eq!(out["affinity"], serde_json::Value::Null);
        assert_eq!(out["cidr"], "10.0.0.0/30");
    }

    #[test]
    fn affinity_and_handle_shapes() {
        let a = BlockAffinity::host(
            "n1",
            "10.0.0.0/26".parse().unwrap(),
            AffinityState::PendingDeletion,
        );
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["state"], "pendingDeletion");
        assert_eq!(v["type"], "host");
        let calico: BlockAffinity = serde_json::from_str(r#"{"state":"confirmed"}"#).unwrap();
        assert_eq!(calico.affinity_type, "host");
        let h: IpamHandle =
            serde_json::from_str(r#"{"handleID":"h","block":{"10.0.0.0/26":2}}"#).unwrap();
        assert_eq!(h.total(), 2);
    }
}
