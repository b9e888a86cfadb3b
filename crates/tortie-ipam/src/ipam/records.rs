//! Typed reads and CAS writes of IPAM records, and loading of the resources IPAM consults
//! (pools, reservations, IPAMConfiguration, Node and Namespace labels).
//!
//! Handle counts change only through [`Ipam::increment_handle`] and
//! [`Ipam::decrement_handle`], each a CAS loop on the handle record; a handle whose counts
//! reach zero is deleted.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tortie_api::{Kind, Resource, codec};
use tortie_store::{KeyValue, Revision, StoreError};

use super::{Ipam, MAX_RETRIES, is_race};
use crate::config::IpamConfig;
use crate::error::IpamError;
use crate::family::IpFamily;
use crate::keys;
use crate::model::{AllocationBlock, BlockAffinity, IpamHandle};
use crate::pool::{Pool, Reservations};

/// A decoded record and its revisions.
#[derive(Debug, Clone)]
pub(crate) struct Versioned<T> {
    pub value: T,
    pub rev: Revision,
    pub create_rev: Revision,
}

pub(crate) fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<Versioned<T>, IpamError> {
    let value = serde_json::from_slice(&kv.value).map_err(|e| IpamError::InvalidRecord {
        key: kv.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        value,
        rev: kv.mod_revision,
        create_rev: kv.create_revision,
    })
}

pub(crate) fn encode<T: Serialize>(key: &str, value: &T) -> Result<Vec<u8>, IpamError> {
    serde_json::to_vec(value).map_err(|e| IpamError::InvalidRecord {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// The labels in a stored manifest's `metadata.labels`.
fn labels_of(kv: &KeyValue) -> BTreeMap<String, String> {
    let v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn stored_resource(kv: &KeyValue) -> Option<Resource> {
    let v: Value = serde_json::from_slice(&kv.value).ok()?;
    match codec::from_stored(v) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(key = %kv.key, error = %e, "ignoring undecodable resource");
            None
        }
    }
}

impl Ipam {
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, IpamError> {
        match self.store.get(key).await? {
            Some(kv) => decode(&kv).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) async fn create_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Result<Revision, StoreError>, IpamError> {
        let bytes = encode(key, value)?;
        Ok(self.store.create(key, &bytes).await)
    }

    pub(crate) async fn update_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        rev: Revision,
    ) -> Result<Result<Revision, StoreError>, IpamError> {
        let bytes = encode(key, value)?;
        Ok(self.store.update(key, &bytes, Some(rev)).await)
    }

    pub(crate) async fn get_block(
        &self,
        cidr: &IpNet,
    ) -> Result<Option<Versioned<AllocationBlock>>, IpamError> {
        let b = self
            .get_json::<AllocationBlock>(&keys::block_key(cidr))
            .await?;
        Ok(b.filter(|b| !b.value.deleted))
    }

    /// CAS-writes a block at `rev`.
    pub(crate) async fn put_block(
        &self,
        block: &AllocationBlock,
        rev: Revision,
    ) -> Result<Result<Revision, StoreError>, IpamError> {
        self.update_json(&keys::block_key(&block.cidr), block, rev)
            .await
    }

    /// Every decodable block of `family`, by CIDR (undecodable ones are skipped with a
    /// warning; `check` reports them).
    pub(crate) async fn list_blocks(
        &self,
        family: IpFamily,
    ) -> Result<BTreeMap<IpNet, Versioned<AllocationBlock>>, IpamError> {
        let list = self.store.list(&keys::block_prefix(family)).await?;
        let mut out = BTreeMap::new();
        for kv in &list.items {
            match decode::<AllocationBlock>(kv) {
                Ok(b) if !b.value.deleted => {
                    out.insert(b.value.cidr, b);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "skipping block"),
            }
        }
        Ok(out)
    }

    /// `host`'s affinities of `family`, by CIDR.
    pub(crate) async fn list_host_affinities(
        &self,
        host: &str,
        family: IpFamily,
    ) -> Result<Vec<(IpNet, Versioned<BlockAffinity>)>, IpamError> {
        let list = self
            .store
            .list(&keys::host_affinity_prefix(host, family))
            .await?;
        let mut out = Vec::new();
        for kv in &list.items {
            let Some((_, cidr)) = keys::parse_affinity_key(&kv.key) else {
                continue;
            };
            match decode::<BlockAffinity>(kv) {
                Ok(a) => out.push((cidr, a)),
                Err(e) => tracing::warn!(error = %e, "skipping affinity"),
            }
        }
        Ok(out)
    }

    /// Adds `n` to `handle`'s count for block `cidr`, creating the handle if needed.
    pub(crate) async fn increment_handle(
        &self,
        handle: &str,
        cidr: &IpNet,
        n: u64,
    ) -> Result<(), IpamError> {
        let key = keys::handle_key(handle);
        for _ in 0..MAX_RETRIES {
            let written = match self.get_json::<IpamHandle>(&key).await? {
                None => {
                    let h = IpamHandle {
                        handle_id: handle.to_string(),
                        block: BTreeMap::from([(cidr.to_string(), n)]),
                        deleted: false,
                    };
                    self.create_json(&key, &h).await?
                }
                Some(mut v) => {
                    *v.value.block.entry(cidr.to_string()).or_insert(0) += n;
                    self.update_json(&key, &v.value, v.rev).await?
                }
            };
            match written {
                Ok(_) => return Ok(()),
                Err(e) if is_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("incrementing handle {handle}"),
            attempts: MAX_RETRIES,
        })
    }

    /// Subtracts up to `n` from `handle`'s count for `cidr`; drops the entry at zero and
    /// deletes the handle when no entries are left. A missing handle is fine.
    pub(crate) async fn decrement_handle(
        &self,
        handle: &str,
        cidr: &IpNet,
        n: u64,
    ) -> Result<(), IpamError> {
        let key = keys::handle_key(handle);
        let cidr_key = cidr.to_string();
        for _ in 0..MAX_RETRIES {
            let Some(mut v) = self.get_json::<IpamHandle>(&key).await? else {
                return Ok(());
            };
            let Some(count) = v.value.block.get_mut(&cidr_key) else {
                return Ok(());
            };
            *count = count.saturating_sub(n);
            if *count == 0 {
                v.value.block.remove(&cidr_key);
            }
            let written = if v.value.block.is_empty() {
                self.store.delete(&key, Some(v.rev)).await
            } else {
                self.update_json(&key, &v.value, v.rev).await?
            };
            match written {
                Ok(_) => return Ok(()),
                Err(e) if is_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("decrementing handle {handle}"),
            attempts: MAX_RETRIES,
        })
    }

    /// Every decodable IPPool, sorted by name.
    pub(crate) async fn load_pools(&self) -> Result<Vec<Pool>, IpamError> {
        let list = self.store.list(&Kind::IPPool.key_prefix()).await?;
        let mut pools = Vec::new();
        for kv in &list.items {
            if let Some(Resource::IPPool(o)) = stored_resource(kv) {
                match Pool::from_spec(&o.metadata.name, o.spec()) {
                    Ok(p) => pools.push(p),
                    Err(e) => tracing::warn!(pool = %o.metadata.name, error = %e, "ignoring pool"),
                }
            }
        }
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools)
    }

    /// The union of every IPReservation.
    pub(crate) async fn load_reservations(&self) -> Result<Reservations, IpamError> {
        let list = self.store.list(&Kind::IPReservation.key_prefix()).await?;
        let mut nets = Vec::new();
        for kv in &list.items {
            if let Some(Resource::IPReservation(o)) = stored_resource(kv) {
                nets.extend(
                    o.spec()
                        .reserved_cidrs
                        .iter()
                        .filter_map(|c| Reservations::parse_entry(c)),
                );
            }
        }
        Ok(Reservations::new(nets))
    }

    /// IPAMConfiguration `default`, or the defaults.
    pub(crate) async fn load_config(&self) -> Result<IpamConfig, IpamError> {
        let key = Kind::IPAMConfiguration.key(None, "default");
        Ok(match self.store.get(&key).await? {
            Some(kv) => match stored_resource(&kv) {
                Some(Resource::IPAMConfiguration(o)) => IpamConfig::from_spec(o.spec()),
                _ => IpamConfig::default(),
            },
            None => IpamConfig::default(),
        })
    }

    /// Labels of the stored resource at `key` (empty if absent).
    pub(crate) async fn load_labels(
        &self,
        key: &str,
    ) -> Result<BTreeMap<String, String>, IpamError> {
        Ok(self
            .store
            .get(key)
            .await?
            .map(|kv| labels_of(&kv))
            .unwrap_or_default())
    }

    /// The block that holds (or would hold) `ip`: its pool's block, or an existing block of
    /// another size containing it.
    pub(crate) async fn find_block_of(
        &self,
        pools: &[Pool],
        ip: std::net::IpAddr,
    ) -> Result<Option<Versioned<AllocationBlock>>, IpamError> {
        if let Some(p) = pools.iter().find(|p| p.net.contains(&ip))
            && let Some(b) = self.get_block(&p.block_for(ip)).await?
        {
            return Ok(Some(b));
        }
        let blocks = self.list_blocks(IpFamily::of(ip)).await?;
        Ok(blocks.into_values().find(|b| b.value.cidr.contains(&ip)))
    }
}
