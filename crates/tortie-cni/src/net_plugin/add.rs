//! ADD (calico-reference §5.2): allocate, plumb, record, answer; on any failure, a full DEL.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tortie_ipam::Ipam;
use tortie_netlink::{NetNs, netlink_handle_in};
use tortie_store::Store;

use super::result::{Attachment, build, prev_result};
use super::{COMMAND_TIMEOUT, Context, del};
use crate::ipam_plugin;
use crate::spec::{CniError, code};
use crate::wep::{self, PodInfo, WepInput, labels_from_args};
use crate::wiring::{self, Namespaces, Plan};

/// Opens netlink handles in both namespaces.
pub fn namespaces(host: &NetNs, pod: &NetNs) -> Result<Namespaces, CniError> {
    let nl = |ns: &NetNs| {
        netlink_handle_in(ns).map_err(|e| {
            CniError::new(code::IO, format!("cannot open netlink in {}", ns.label()))
                .with_details(wiring::error_chain(&e))
        })
    };
    Ok(Namespaces {
        host_nl: nl(host)?,
        host: host.clone(),
        pod_nl: nl(pod)?,
        pod: pod.clone(),
    })
}

/// ADD. Any failure after the first side effect triggers DEL of the attachment; its own
/// failures are appended to the error's details.
pub async fn add(ctx: &Context, store: Arc<dyn Store>) -> Result<Value, CniError> {
    let (Some(host), Some(pod)) = (&ctx.host, &ctx.pod) else {
        return Err(CniError::new(
            code::INVALID_ENV,
            "ADD needs the host and pod namespaces",
        ));
    };
    let prev = prev_result(ctx.inv.conf.prev_result.as_ref())?;
    let ns = namespaces(host, pod)?;
    let outcome =
        match tokio::time::timeout(COMMAND_TIMEOUT, steps(ctx, &ns, store.clone(), prev)).await {
            Ok(r) => r,
            Err(_) => Err(CniError::new(
                code::TRY_AGAIN_LATER,
                format!("ADD did not finish within {}s", COMMAND_TIMEOUT.as_secs()),
            )),
        };
    let err = match outcome {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let rollback = tokio::time::timeout(COMMAND_TIMEOUT, del::teardown(ctx, store)).await;
    let left = match rollback {
        Ok(errs) => errs,
        Err(_) => vec!["the rollback timed out".to_string()],
    };
    if left.is_empty() {
        Err(err)
    } else {
        let details = if err.details.is_empty() {
            format!("rollback incomplete: {}", left.join("; "))
        } else {
            format!("{}; rollback incomplete: {}", err.details, left.join("; "))
        };
        Err(err.with_details(details))
    }
}

async fn steps(
    ctx: &Context,
    ns: &Namespaces,
    store: Arc<dyn Store>,
    prev: Option<crate::spec::CniResult>,
) -> Result<Value, CniError> {
    let env = &ctx.inv.env;
    let pod = ctx.pod();
    // Read the Pod record before allocating, so a datastore failure leaves nothing behind.
    let pod_info: Option<PodInfo> = match pod {
        Some((pns, name)) => PodInfo::load(store.as_ref(), pns, name).await?,
        None => None,
    };
    let ipam = Ipam::new(store.clone());
    let nets = ipam_plugin::assign(&ctx.inv, &ipam, store.as_ref()).await?;
    if nets.is_empty() {
        return Err(CniError::new(code::EXHAUSTED, "IPAM assigned no address"));
    }
    let host_veth = ctx.host_veth();
    let plan = Plan::new(&host_veth, &env.ifname, ctx.mtu, &nets);
    let wired = wiring::wire(ns, &plan).await.map_err(|e| {
        CniError::new(code::INTERNAL, "cannot plumb the pod network").with_details(e)
    })?;

    let arg_labels: BTreeMap<String, String> = labels_from_args(ctx.inv.conf.args.as_ref());
    let endpoint = wep::build(&WepInput {
        node: &ctx.inv.node,
        pod,
        network: &ctx.inv.conf.name,
        container_id: &env.container_id,
        endpoint: &env.ifname,
        interface_name: &host_veth,
        mac: &wired.pod_mac,
        ips: &plan.ips,
        pod_info: pod_info.as_ref(),
        arg_labels: &arg_labels,
    })?;
    if pod.is_none() {
        // Outside Kubernetes the endpoint's profile is the network's: create it once.
        let profile = wep::network_profile(&ctx.inv.conf.name);
        let pkey = profile.key();
        match store
            .create(&pkey, &tortie_api::codec::to_stored(&profile))
            .await
        {
            Ok(_) | Err(tortie_store::StoreError::AlreadyExists { .. }) => {}
            Err(e) => {
                return Err(CniError::new(
                    code::TRY_AGAIN_LATER,
                    format!("cannot create the network's profile {pkey}"),
                )
                .with_details(e.to_string()));
            }
        }
    }
    let bytes =
        tortie_api::codec::to_stored(&tortie_api::Resource::WorkloadEndpoint(endpoint.clone()));
    let key = wep::key(&endpoint);
    store.update(&key, &bytes, None).await.map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            format!("cannot write the WorkloadEndpoint {key}"),
        )
        .with_details(e.to_string())
    })?;

    let result = build(
        ctx.version(),
        prev,
        &Attachment {
            host_veth: &host_veth,
            ifname: &env.ifname,
            pod_mac: &wired.pod_mac,
            sandbox: &env.netns,
            ips: &plan.ips,
        },
    );
    serde_json::to_value(result).map_err(|e| {
        CniError::new(code::INTERNAL, "cannot encode the result").with_details(e.to_string())
    })
}
