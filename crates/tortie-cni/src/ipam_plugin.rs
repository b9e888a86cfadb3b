//! The `tortie-ipam` CNI IPAM plugin: ADD allocates from tortie's block IPAM, DEL releases,
//! CHECK verifies, GC releases what the runtime no longer knows, STATUS reports readiness.
//!
//! Handles follow Calico: `<network name>.<containerID>`. ADD is idempotent (a repeated ADD
//! for the same container returns the addresses it already has) and a failed ADD releases
//! everything it allocated. DEL of an unknown container succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use serde_json::Value;
use tortie_api::ipam::AllowedUse;
use tortie_ipam::{AssignIpRequest, AutoAssignRequest, GcPolicy, Ipam, IpamError};
use tortie_store::{Store, StoreError};

use crate::config::NetConf;
use crate::env::CniEnv;
use crate::spec::{CniError, CniResult, Command, IpConfig, code};

/// Pod annotation listing the IPv4 pools to use (JSON array of names or CIDRs).
pub const ANNOTATION_IPV4_POOLS: &str = "cni.projectcalico.org/ipv4pools";
/// Pod/Namespace annotation listing the IPv6 pools to use.
pub const ANNOTATION_IPV6_POOLS: &str = "cni.projectcalico.org/ipv6pools";
/// Pod annotation requesting specific addresses (JSON array).
pub const ANNOTATION_IP_ADDRS: &str = "cni.projectcalico.org/ipAddrs";

/// Everything a plugin run needs, resolved from stdin and the environment.
#[derive(Debug)]
pub struct Invocation {
    pub env: CniEnv,
    pub conf: NetConf,
    pub node: String,
}

impl Invocation {
    /// The IPAM handle for this attachment.
    pub fn handle(&self) -> String {
        handle_id(&self.conf.name, &self.env.container_id)
    }
}

/// Calico's handle ID for a container on a network.
pub fn handle_id(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

/// Maps an IPAM failure to a CNI error code and message.
pub fn ipam_error(e: IpamError) -> CniError {
    let msg = e.to_string();
    let c = match &e {
        IpamError::Exhausted { .. } => code::EXHAUSTED,
        IpamError::InUse { .. } | IpamError::NotInPool { .. } => code::ADDRESS_UNAVAILABLE,
        IpamError::Store(StoreError::Unavailable { .. }) => code::TRY_AGAIN_LATER,
        IpamError::Store(StoreError::Conflict { .. }) => code::TRY_AGAIN_LATER,
        _ => code::INTERNAL,
    };
    CniError::new(c, msg)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Runs one command. Returns the JSON to print on success (None for DEL/GC).
pub async fn run(inv: &Invocation, store: Arc<dyn Store>) -> Result<Option<Value>, CniError> {
    let ipam = Ipam::new(store.clone());
    match inv.env.command {
        Command::Add => add(inv, &ipam, store.as_ref()).await.map(Some),
        Command::Del => {
            ipam.release_by_handle(&inv.handle())
                .await
                .map_err(ipam_error)?;
            Ok(None)
        }
        Command::Check => check(inv, &ipam).await.map(|()| None),
        Command::Gc => gc(inv, &ipam).await.map(|()| None),
        Command::Status => status(store.as_ref()).await.map(|()| None),
        Command::Version => Ok(Some(
            serde_json::to_value(crate::spec::VersionInfo::current()).unwrap_or_default(),
        )),
    }
}

fn to_value(r: CniResult) -> Result<Value, CniError> {
    serde_json::to_value(r).map_err(|e| {
        CniError::new(code::INTERNAL, "cannot encode the result").with_details(e.to_string())
    })
}

fn result_of(inv: &Invocation, nets: &[IpNet]) -> Result<Value, CniError> {
    let ips = nets
        .iter()
        .map(|n| IpConfig {
            version: None,
            address: *n,
            gateway: None,
            interface: None,
        })
        .collect();
    let r = CniResult {
        cni_version: inv.conf.cni_version.clone(),
        interfaces: Vec::new(),
        ips,
        routes: Vec::new(),
        dns: Default::default(),
    };
    to_value(r.for_version(&inv.conf.cni_version))
}

async fn add(inv: &Invocation, ipam: &Ipam, store: &dyn Store) -> Result<Value, CniError> {
    let nets = assign(inv, ipam, store).await?;
    result_of(inv, &nets)
}

/// Allocates this attachment's addresses (handle `<network>.<containerID>`), honouring
/// requested IPs and pool annotations. Idempotent: if the handle already holds addresses they
/// are returned unchanged. On failure everything this call allocated is released. The
/// networks carry the block's prefix length.
pub async fn assign(
    inv: &Invocation,
    ipam: &Ipam,
    store: &dyn Store,
) -> Result<Vec<IpNet>, CniError> {
    let handle = inv.handle();
    let existing = ipam.ips_by_handle(&handle).await.map_err(ipam_error)?;
    if !existing.is_empty() {
        let mut nets = Vec::new();
        for ip in existing {
            if let Some(info) = ipam.ip_info(ip).await.map_err(ipam_error)? {
                nets.push(
                    IpNet::new(ip, info.block.prefix_len()).unwrap_or_else(|_| IpNet::from(ip)),
                );
            }
        }
        return Ok(nets);
    }
    let hints = PodHints::load(inv, store).await?;
    let attrs = attributes(inv);
    let outcome = allocate(inv, ipam, &hints, &attrs).await;
    if outcome.is_err() {
        // Roll back anything this call allocated before failing.
        let _ = ipam.release_by_handle(&handle).await;
    }
    outcome
}

fn attributes(inv: &Invocation) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("node".to_string(), inv.node.clone());
    a.insert("timestamp".to_string(), now_rfc3339());
    a.insert("containerID".to_string(), inv.env.container_id.clone());
    // Like Calico: a pod is recorded only when the runtime names both its namespace and name
    // (podman passes K8S_POD_NAME alone for plain containers).
    if let (Some(ns), Some(p)) = (inv.env.pod_namespace(), inv.env.pod_name()) {
        a.insert("namespace".to_string(), ns.to_string());
        a.insert("pod".to_string(), p.to_string());
    }
    a
}

fn parse_requested(s: &str) -> Result<IpAddr, CniError> {
    s.parse::<IpAddr>()
        .or_else(|_| s.parse::<IpNet>().map(|n| n.addr()))
        .map_err(|_| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("requested IP {s:?} is not an IP address"),
            )
        })
}

async fn allocate(
    inv: &Invocation,
    ipam: &Ipam,
    hints: &PodHints,
    attrs: &BTreeMap<String, String>,
) -> Result<Vec<IpNet>, CniError> {
    let handle = inv.handle();
    let mut requested = inv.conf.requested_ips(&inv.env.args);
    requested.extend(hints.ip_addrs.iter().cloned());
    if !requested.is_empty() {
        let mut out = Vec::new();
        for r in &requested {
            let req = AssignIpRequest {
                ip: parse_requested(r)?,
                handle: handle.clone(),
                attrs: attrs.clone(),
                hostname: inv.node.clone(),
            };
            out.push(ipam.assign_ip(&req).await.map_err(ipam_error)?);
        }
        return Ok(out);
    }
    let (v4, v6) = inv.conf.families();
    let pick = |hint: &Option<Vec<String>>, conf: &Vec<String>| {
        hint.clone().unwrap_or_else(|| conf.clone())
    };
    let req = AutoAssignRequest {
        num_v4: usize::from(v4),
        num_v6: usize::from(v6),
        handle,
        attrs: attrs.clone(),
        hostname: inv.node.clone(),
        ipv4_pools: pick(&hints.ipv4_pools, &inv.conf.ipam.ipv4_pools),
        ipv6_pools: pick(&hints.ipv6_pools, &inv.conf.ipam.ipv6_pools),
        namespace: inv.env.pod_namespace().map(str::to_string),
        max_blocks_per_host: None,
        intended_use: AllowedUse::Workload,
    };
    let res = ipam.auto_assign(&req).await.map_err(ipam_error)?;
    if (v4 && res.ipv4.is_empty()) || (v6 && res.ipv6.is_empty()) {
        return Err(CniError::new(
            code::EXHAUSTED,
            "IPAM returned fewer addresses than requested",
        ));
    }
    Ok(res.ipv4.into_iter().chain(res.ipv6).collect())
}

/// Pool and address hints from the Pod's and Namespace's annotations (pod wins).
#[derive(Debug, Default)]
struct PodHints {
    ipv4_pools: Option<Vec<String>>,
    ipv6_pools: Option<Vec<String>>,
    ip_addrs: Vec<String>,
}

fn annotation_list(v: &Value, key: &str) -> Result<Option<Vec<String>>, CniError> {
    let Some(s) = v
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    serde_json::from_str::<Vec<String>>(s)
        .map(Some)
        .map_err(|e| {
            CniError::new(
                code::INVALID_CONFIG,
                format!("annotation {key} = {s:?} is not a JSON list of strings"),
            )
            .with_details(e.to_string())
        })
}

impl PodHints {
    async fn load(inv: &Invocation, store: &dyn Store) -> Result<Self, CniError> {
        let mut hints = PodHints::default();
        let Some(ns) = inv.env.pod_namespace() else {
            return Ok(hints);
        };
        let read = |key: String| async move {
            match store.get(&key).await {
                Ok(Some(kv)) => Ok(serde_json::from_slice::<Value>(&kv.value).ok()),
                Ok(None) => Ok(None),
                Err(e) => Err(ipam_error(IpamError::Store(e))),
            }
        };
        let ns_obj = read(tortie_api::Kind::Namespace.key(None, ns)).await?;
        let pod_obj = match inv.env.pod_name() {
            Some(p) => read(tortie_api::Kind::Pod.key(Some(ns), p)).await?,
            None => None,
        };
        if let Some(pod) = &pod_obj {
            hints.ip_addrs = annotation_list(pod, ANNOTATION_IP_ADDRS)?.unwrap_or_default();
        }
        // Namespace first, then the pod, so the pod's annotations win.
        for obj in [ns_obj, pod_obj].into_iter().flatten() {
            if let Some(p) = annotation_list(&obj, ANNOTATION_IPV4_POOLS)? {
                hints.ipv4_pools = Some(p);
            }
            if let Some(p) = annotation_list(&obj, ANNOTATION_IPV6_POOLS)? {
                hints.ipv6_pools = Some(p);
            }
        }
        Ok(hints)
    }
}

async fn check(inv: &Invocation, ipam: &Ipam) -> Result<(), CniError> {
    let have: BTreeSet<IpAddr> = ipam
        .ips_by_handle(&inv.handle())
        .await
        .map_err(ipam_error)?
        .into_iter()
        .collect();
    if have.is_empty() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("no addresses are allocated to {}", inv.handle()),
        ));
    }
    if let Some(prev) = &inv.conf.prev_result {
        let want: Vec<IpNet> = prev
            .get("ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.get("address").and_then(Value::as_str))
            .filter_map(|s| s.parse().ok())
            .collect();
        for n in want {
            if !have.contains(&n.addr()) {
                return Err(CniError::new(
                    code::INTERNAL,
                    format!(
                        "prevResult address {n} is not allocated to {}",
                        inv.handle()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// GC: releases every handle of this network not in `cni.dev/valid-attachments`.
pub async fn gc(inv: &Invocation, ipam: &Ipam) -> Result<(), CniError> {
    let valid: BTreeSet<String> = inv
        .conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| handle_id(&inv.conf.name, &a.container_id))
        .collect();
    let policy = GcPolicy {
        grace: std::time::Duration::ZERO,
        valid_handles: Some(valid),
        handle_prefix: Some(format!("{}.", inv.conf.name)),
    };
    ipam.gc(&policy).await.map_err(ipam_error)?;
    Ok(())
}

/// STATUS: the datastore answers and at least one IP pool exists.
pub async fn status(store: &dyn Store) -> Result<(), CniError> {
    store.revision().await.map_err(|e| {
        CniError::new(code::NOT_AVAILABLE, "the IPAM datastore is not reachable")
            .with_details(e.to_string())
    })?;
    let pools = store
        .list(&tortie_api::Kind::IPPool.key_prefix())
        .await
        .map_err(|e| {
            CniError::new(code::NOT_AVAILABLE, "cannot list IP pools").with_details(e.to_string())
        })?;
    if pools.items.is_empty() {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            "no IP pools are configured",
        ));
    }
    Ok(())
}
