//! CHECK (the plumbing, addresses and endpoint still match `prevResult`) and GC (CNI 1.1:
//! release what the runtime no longer knows).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_ipam::Ipam;
use tortie_netlink::netlink_handle_in;
use tortie_store::{Store, StoreError};

use super::Context;
use super::add::namespaces;
use super::result::{addresses_of, prev_result};
use crate::ipam_plugin::{self, ipam_error};
use crate::spec::{CniError, code};
use crate::wep;
use crate::wiring::{self, Plan, error_chain};

/// CHECK: every mismatch is listed in one error.
pub async fn check(ctx: &Context, store: Arc<dyn Store>) -> Result<(), CniError> {
    let env = &ctx.inv.env;
    let Some(prev) = prev_result(ctx.inv.conf.prev_result.as_ref())? else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "CHECK needs prevResult",
        ));
    };
    let want = addresses_of(&prev, &env.ifname, &env.netns);
    let ipam = Ipam::new(store.clone());
    let have: BTreeSet<IpAddr> = ipam
        .ips_by_handle(&ctx.inv.handle())
        .await
        .map_err(ipam_error)?
        .into_iter()
        .collect();
    if have.is_empty() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("no addresses are allocated to {}", ctx.inv.handle()),
        ));
    }
    let mut problems: Vec<String> = want
        .iter()
        .filter(|n| !have.contains(&n.addr()))
        .map(|n| format!("{n} is not allocated to {}", ctx.inv.handle()))
        .collect();

    let (Some(host), Some(pod)) = (&ctx.host, &ctx.pod) else {
        return Err(CniError::new(
            code::INVALID_ENV,
            "CHECK needs the host and pod namespaces",
        ));
    };
    let ns = namespaces(host, pod)?;
    let plan = Plan::new(&ctx.host_veth(), &env.ifname, ctx.mtu, &want);
    problems.extend(wiring::inspect(&ns, &plan).await);
    problems.extend(check_wep(ctx, store.as_ref(), &plan.ips).await?);

    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::INTERNAL,
            format!(
                "the attachment does not match prevResult ({} problems)",
                problems.len()
            ),
        )
        .with_details(problems.join("; ")))
    }
}

async fn check_wep(
    ctx: &Context,
    store: &dyn Store,
    ips: &[IpNet],
) -> Result<Vec<String>, CniError> {
    let env = &ctx.inv.env;
    let Some(key) = wep::key_for(&ctx.inv.node, ctx.pod(), &env.container_id, &env.ifname) else {
        return Ok(vec!["cannot name the WorkloadEndpoint".to_string()]);
    };
    let kv = store.get(&key).await.map_err(|e| {
        CniError::new(code::TRY_AGAIN_LATER, format!("cannot read {key}"))
            .with_details(e.to_string())
    })?;
    let Some(spec) = kv.as_ref().and_then(|kv| wep::stored_spec(&kv.value)) else {
        return Ok(vec![format!("WorkloadEndpoint {key} is missing")]);
    };
    let mut problems = Vec::new();
    if spec.container_id != env.container_id {
        problems.push(format!(
            "WorkloadEndpoint {key} belongs to container {}",
            spec.container_id
        ));
    }
    let want: BTreeSet<String> = ips.iter().map(|n| n.to_string()).collect();
    let have: BTreeSet<String> = spec.ip_networks.iter().cloned().collect();
    if want != have {
        problems.push(format!(
            "WorkloadEndpoint {key} has ipNetworks {have:?}, expected {want:?}"
        ));
    }
    if spec.interface_name != ctx.host_veth() {
        problems.push(format!(
            "WorkloadEndpoint {key} names interface {}",
            spec.interface_name
        ));
    }
    Ok(problems)
}

/// GC: deletes this node's WorkloadEndpoints (and their host veths) whose container is not
/// in `cni.dev/valid-attachments` and whose addresses no other network holds, then releases
/// this network's addresses of invalid attachments through the IPAM GC (which keeps any
/// address whose Pod record still exists).
pub async fn gc(ctx: &Context, store: Arc<dyn Store>) -> Result<(), CniError> {
    let ipam = Ipam::new(store.clone());
    let valid: BTreeSet<&str> = ctx
        .inv
        .conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| a.container_id.as_str())
        .collect();
    let list = store
        .list(&Kind::WorkloadEndpoint.key_prefix())
        .await
        .map_err(|e| {
            CniError::new(code::TRY_AGAIN_LATER, "cannot list WorkloadEndpoints")
                .with_details(e.to_string())
        })?;
    let host_nl = match &ctx.host {
        Some(h) => Some(netlink_handle_in(h).map_err(|e| {
            CniError::new(code::IO, "cannot open netlink in the host namespace")
                .with_details(error_chain(&e))
        })?),
        None => None,
    };
    let mut errors = Vec::new();
    for kv in list.items {
        let Some(spec) = wep::stored_spec(&kv.value) else {
            continue;
        };
        let stale = spec.node == ctx.inv.node
            && matches!(spec.orchestrator.as_str(), "k8s" | "cni")
            && !spec.container_id.is_empty()
            && !valid.contains(spec.container_id.as_str());
        if !stale || held_elsewhere(&ipam, &spec.ip_networks, &ctx.inv.conf.name).await {
            continue;
        }
        match store.delete(&kv.key, Some(kv.mod_revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => errors.push(format!("delete {}: {e}", kv.key)),
        }
        if let Some(h) = &host_nl
            && spec
                .interface_name
                .starts_with(crate::naming::HOST_VETH_PREFIX)
            && let Err(e) = tortie_netlink::link::delete_link(h, &spec.interface_name).await
        {
            errors.push(format!(
                "delete host veth {}: {}",
                spec.interface_name,
                error_chain(&e)
            ));
        }
    }
    if let Err(e) = ipam_plugin::gc(&ctx.inv, &ipam).await {
        errors.push(format!("IPAM GC: {e}"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(
            CniError::new(code::INTERNAL, "GC could not remove everything")
                .with_details(errors.join("; ")),
        )
    }
}

/// Whether any of `nets` is still allocated to a handle of another network (that endpoint is
/// not this network's to collect).
async fn held_elsewhere(ipam: &Ipam, nets: &[String], network: &str) -> bool {
    let prefix = format!("{network}.");
    for n in nets {
        let Ok(net) = n.parse::<IpNet>() else {
            continue;
        };
        match ipam.ip_info(net.addr()).await {
            Ok(Some(info)) => {
                if info
                    .handle
                    .as_deref()
                    .is_some_and(|h| !h.starts_with(&prefix))
                {
                    return true;
                }
            }
            Ok(None) => {}
            // Unsure: leave it for a later GC.
            Err(_) => return true,
        }
    }
    false
}
