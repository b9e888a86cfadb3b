//! The IPAM error type.
//!
//! Messages are lower-case, name the pool, address or handle involved, and never repeat the
//! text of a wrapped source error.

use std::net::IpAddr;

use tortie_api::ipam::AllowedUse;
use tortie_store::StoreError;

use crate::family::IpFamily;

/// Everything that can go wrong in IPAM.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// No selected pool had a free address (after claiming and, if allowed, borrowing).
    #[error("no free addresses in pools {}", pools.join(", "))]
    Exhausted { pools: Vec<String> },

    /// No enabled pool of the family matches the host, namespace and intended use.
    #[error(
        "no enabled {family} pool can be used by host {hostname} (check the pools' nodeSelector, namespaceSelector, allowedUses and assignmentMode)"
    )]
    NoMatchingPools { family: IpFamily, hostname: String },

    /// A pool named in the request does not exist.
    #[error("requested pool {pool} does not exist")]
    PoolNotFound { pool: String },

    /// A pool named in the request is disabled.
    #[error("requested pool {pool} is disabled")]
    PoolDisabled { pool: String },

    /// A pool named in the request is of the other address family.
    #[error("requested pool {pool} is not an {family} pool")]
    PoolWrongFamily { pool: String, family: IpFamily },

    /// A pool named in the request does not allow the intended use.
    #[error("requested pool {pool} does not allow use {intended_use:?}")]
    PoolUseNotAllowed {
        pool: String,
        intended_use: AllowedUse,
    },

    /// A specific address is not inside any enabled pool.
    #[error("address {ip} is not in any enabled pool")]
    NotInPool { ip: IpAddr },

    /// A specific address is already allocated.
    #[error("address {ip} is already in use by handle {handle}")]
    InUse { ip: IpAddr, handle: String },

    /// The handle ID cannot be stored.
    #[error("invalid handle {handle:?}: {reason}")]
    InvalidHandle {
        handle: String,
        reason: &'static str,
    },

    /// A request is malformed.
    #[error("invalid IPAM request: {reason}")]
    InvalidRequest { reason: String },

    /// A stored record cannot be decoded.
    #[error("invalid record at {key}: {reason}")]
    InvalidRecord { key: String, reason: String },

    /// A compare-and-swap loop kept losing races.
    #[error("gave up on {what} after {attempts} conflicting attempts")]
    TooManyRetries { what: String, attempts: usize },

    /// The datastore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IpamError {
    /// True for a store-level write conflict (the caller may retry).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            IpamError::Store(StoreError::Conflict { .. } | StoreError::NotFound { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhausted_text_is_exact() {
        let e = IpamError::Exhausted {
            pools: vec!["pool-a".into(), "pool-b".into()],
        };
        assert_eq!(e.to_string(), "no free addresses in pools pool-a, pool-b");
    }

    #[test]
    fn in_use_names_ip_and_handle() {
        let e = IpamError::InUse {
            ip: "10.0.0.1".parse().unwrap(),
            handle: "k8s-pod-network.abc".into(),
        };
        assert_eq!(
            e.to_string(),
            "address 10.0.0.1 is already in use by handle k8s-pod-network.abc"
        );
    }
}
