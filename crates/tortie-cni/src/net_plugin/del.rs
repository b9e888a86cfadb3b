//! DEL (calico-reference §5.4): every step runs whatever fails before it; "already gone" is
//! success. Also the rollback of a failed ADD.
//!
//! Ownership: if the WorkloadEndpoint names another container ID, a newer sandbox of the
//! same pod owns the endpoint and the host veth, so only this container's pod interface and
//! addresses are removed.

use std::sync::Arc;

use tortie_ipam::Ipam;
use tortie_netlink::{NetNs, netlink_handle_in};
use tortie_store::{Store, StoreError};

use super::Context;
use crate::ipam_plugin::ipam_error;
use crate::spec::{CniError, code};
use crate::wep;
use crate::wiring::{self, error_chain};

/// Prefix of errors that come from the datastore (they make DEL answer "try again later").
const DATASTORE: &str = "datastore: ";

/// How many times a WorkloadEndpoint delete is retried on a concurrent change.
const WEP_DELETE_ATTEMPTS: usize = 5;

/// DEL: succeeds when everything is gone.
pub async fn del(ctx: &Context, store: Arc<dyn Store>) -> Result<(), CniError> {
    let errors = match tokio::time::timeout(super::COMMAND_TIMEOUT, teardown(ctx, store)).await {
        Ok(e) => e,
        Err(_) => vec![format!("{DATASTORE}DEL did not finish in time")],
    };
    if errors.is_empty() {
        return Ok(());
    }
    let c = if errors.iter().any(|e| e.starts_with(DATASTORE)) {
        code::TRY_AGAIN_LATER
    } else {
        code::INTERNAL
    };
    Err(CniError::new(
        c,
        format!(
            "DEL could not remove everything ({} problems)",
            errors.len()
        ),
    )
    .with_details(errors.join("; ")))
}

/// Whether the stored endpoint (if any) belongs to `container_id`.
enum Owner {
    /// No endpoint: nothing else claims the host veth.
    Nobody,
    /// The endpoint is ours; delete it at this revision.
    Us { revision: i64 },
    /// A newer sandbox's endpoint.
    Other,
    /// The datastore could not tell.
    Unknown,
}

async fn owner(store: &dyn Store, key: &str, container_id: &str) -> Result<Owner, StoreError> {
    Ok(match store.get(key).await? {
        None => Owner::Nobody,
        Some(kv) => match wep::stored_spec(&kv.value) {
            Some(s) if !s.container_id.is_empty() && s.container_id != container_id => Owner::Other,
            _ => Owner::Us {
                revision: kv.mod_revision,
            },
        },
    })
}

/// Removes everything of this attachment; returns every failure.
pub async fn teardown(ctx: &Context, store: Arc<dyn Store>) -> Vec<String> {
    let env = &ctx.inv.env;
    let mut errors = Vec::new();
    let key = wep::key_for(&ctx.inv.node, ctx.pod(), &env.container_id, &env.ifname);
    let own = match &key {
        Some(k) => match owner(store.as_ref(), k, &env.container_id).await {
            Ok(o) => o,
            Err(e) => {
                errors.push(format!("{DATASTORE}read WorkloadEndpoint {k}: {e}"));
                Owner::Unknown
            }
        },
        None => Owner::Nobody,
    };

    errors.extend(unplumb(ctx, matches!(own, Owner::Nobody | Owner::Us { .. })).await);

    let ipam = Ipam::new(store.clone());
    if let Err(e) = ipam.release_by_handle(&ctx.inv.handle()).await {
        let e = ipam_error(e);
        errors.push(format!(
            "{DATASTORE}release addresses of {}: {e}",
            ctx.inv.handle()
        ));
    }

    if let (Some(k), Owner::Us { revision }) = (&key, own)
        && let Err(e) = delete_wep(store.as_ref(), k, revision, &env.container_id).await
    {
        errors.push(format!("{DATASTORE}delete WorkloadEndpoint {k}: {e}"));
    }
    errors
}

/// Deletes the pod interface (when the pod namespace exists) and, if `host_too`, the host
/// veth and its routes (when the host namespace exists).
async fn unplumb(ctx: &Context, host_too: bool) -> Vec<String> {
    let handle = |ns: &NetNs| {
        netlink_handle_in(ns)
            .map_err(|e| format!("open netlink in {}: {}", ns.label(), error_chain(&e)))
    };
    let mut errors = Vec::new();
    let pod_nl = match ctx.pod.as_ref().map(handle).transpose() {
        Ok(h) => h,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    match ctx.host.as_ref().map(handle).transpose() {
        Ok(Some(host_nl)) => errors.extend(
            wiring::unwire(
                &host_nl,
                pod_nl.as_ref(),
                &ctx.host_veth(),
                &ctx.inv.env.ifname,
                host_too,
            )
            .await,
        ),
        Ok(None) => {
            // The host namespace is gone, and the host veth with it; the pod side may remain.
            if let Some(pod_nl) = &pod_nl
                && let Err(e) = tortie_netlink::link::delete_link(pod_nl, &ctx.inv.env.ifname).await
            {
                errors.push(format!(
                    "delete {} in the pod: {}",
                    ctx.inv.env.ifname,
                    error_chain(&e)
                ));
            }
        }
        Err(e) => errors.push(e),
    }
    errors
}

/// Deletes the endpoint if it is still ours, retrying on concurrent writes.
async fn delete_wep(
    store: &dyn Store,
    key: &str,
    mut revision: i64,
    container_id: &str,
) -> Result<(), StoreError> {
    for _ in 0..WEP_DELETE_ATTEMPTS {
        match store.delete(key, Some(revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => return Ok(()),
            Err(StoreError::Conflict { .. }) => match owner(store, key, container_id).await? {
                Owner::Us { revision: r } => revision = r,
                _ => return Ok(()),
            },
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Backend(format!(
        "the endpoint kept changing; gave up after {WEP_DELETE_ATTEMPTS} attempts"
    )))
}
