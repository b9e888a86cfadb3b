//! calicoctl-style column tables for `get` (`-o ps` and `-o wide`).

use tortie_api::{Kind, Resource};

/// Renders rows as left-aligned columns separated by three spaces, like calicoctl.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.len());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn join(v: &[String]) -> String {
    v.join(",")
}

fn order(o: Option<f64>) -> String {
    o.map(|v| v.to_string()).unwrap_or_default()
}

/// The columns for `kind` (calicoctl's `ps` and `wide` sets). The single source of the
/// header: `cells` produces values in this order.
fn header(kind: Kind, wide: bool) -> Vec<&'static str> {
    use Kind::*;
    match kind {
        IPPool if wide => vec![
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
            "ASSIGNMENTMODE",
        ],
        IPPool => vec!["NAME", "CIDR", "SELECTOR"],
        NetworkPolicy | GlobalNetworkPolicy | StagedNetworkPolicy | StagedGlobalNetworkPolicy
            if wide =>
        {
            vec!["NAME", "TIER", "ORDER", "SELECTOR"]
        }
        NetworkPolicy | GlobalNetworkPolicy | StagedNetworkPolicy | StagedGlobalNetworkPolicy => {
            vec!["NAME", "TIER"]
        }
        Tier => vec!["NAME", "ORDER"],
        Profile if wide => vec!["NAME", "LABELS"],
        Node if wide => vec!["NAME", "ASN", "IPV4", "IPV6"],
        WorkloadEndpoint if wide => vec![
            "NAME",
            "WORKLOAD",
            "NODE",
            "NETWORKS",
            "INTERFACE",
            "PROFILES",
            "NATS",
        ],
        WorkloadEndpoint => vec!["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        HostEndpoint if wide => vec!["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        HostEndpoint => vec!["NAME", "NODE"],
        BGPPeer => vec!["NAME", "PEERIP", "NODE", "ASN"],
        // kubectl's columns (without AGE); values are never shown.
        Secret => vec!["NAME", "TYPE", "DATA"],
        NetworkSet | GlobalNetworkSet if wide => vec!["NAME", "NETS"],
        _ => vec!["NAME"],
    }
}

/// One row's values, in the order of [`header`] for the resource's kind.
fn cells(r: &Resource, wide: bool) -> Vec<String> {
    let name = r.name().to_string();
    match r {
        Resource::IPPool(o) => {
            let s = o.spec();
            if !wide {
                return vec![name, s.cidr.clone(), s.node_selector.clone()];
            }
            let mode = |m: Option<tortie_api::ipam::EncapMode>| {
                format!("{:?}", m.unwrap_or(tortie_api::ipam::EncapMode::Never))
            };
            let assignment = s
                .assignment_mode
                .unwrap_or(tortie_api::ipam::AssignmentMode::Automatic);
            vec![
                name,
                s.cidr.clone(),
                s.nat_outgoing.to_string(),
                mode(s.ipip_mode),
                mode(s.vxlan_mode),
                s.disabled.to_string(),
                s.disable_bgp_export.to_string(),
                s.node_selector.clone(),
                format!("{assignment:?}"),
            ]
        }
        Resource::NetworkPolicy(o) => policy_cells(
            name,
            &o.spec().tier,
            o.spec().order,
            &o.spec().selector,
            wide,
        ),
        Resource::GlobalNetworkPolicy(o) => policy_cells(
            name,
            &o.spec().tier,
            o.spec().order,
            &o.spec().selector,
            wide,
        ),
        Resource::StagedNetworkPolicy(o) => {
            let p = &o.spec().0;
            policy_cells(name, &p.tier, p.order, &p.selector, wide)
        }
        Resource::StagedGlobalNetworkPolicy(o) => {
            let p = &o.spec().0;
            policy_cells(name, &p.tier, p.order, &p.selector, wide)
        }
        Resource::Tier(o) => vec![name, order(o.spec().order)],
        Resource::Profile(o) if wide => {
            let labels: Vec<String> = o
                .spec()
                .labels_to_apply
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            vec![name, join(&labels)]
        }
        Resource::Node(o) if wide => {
            let bgp = o.spec().bgp.clone().unwrap_or_default();
            let asn = bgp.as_number.map(|a| a.0.to_string()).unwrap_or_default();
            vec![name, asn, bgp.ipv4_address, bgp.ipv6_address]
        }
        Resource::WorkloadEndpoint(o) => {
            let s = o.spec();
            let workload = if s.workload.is_empty() {
                &s.pod
            } else {
                &s.workload
            };
            let base = [
                workload.clone(),
                s.node.clone(),
                join(&s.ip_networks),
                s.interface_name.clone(),
            ];
            if !wide {
                return base.to_vec();
            }
            let nats: Vec<String> = s
                .ip_nats
                .iter()
                .map(|n| format!("{}:{}", n.internal_ip, n.external_ip))
                .collect();
            let mut v = vec![name];
            v.extend(base);
            v.push(join(&s.profiles));
            v.push(join(&nats));
            v
        }
        Resource::HostEndpoint(o) => {
            let s = o.spec();
            if wide {
                vec![
                    name,
                    s.node.clone(),
                    s.interface_name.clone(),
                    join(&s.expected_ips),
                    join(&s.profiles),
                ]
            } else {
                vec![name, s.node.clone()]
            }
        }
        Resource::BGPPeer(o) => {
            let s = o.spec();
            let node = if !s.node.is_empty() {
                s.node.clone()
            } else if !s.node_selector.is_empty() {
                s.node_selector.clone()
            } else {
                "(global)".to_string()
            };
            let asn = s.as_number.map(|a| a.0.to_string()).unwrap_or_default();
            vec![name, s.peer_ip.clone(), node, asn]
        }
        Resource::Secret(o) => vec![name, o.body.type_.clone(), o.body.data.len().to_string()],
        Resource::NetworkSet(o) if wide => vec![name, join(&o.spec().nets)],
        Resource::GlobalNetworkSet(o) if wide => vec![name, join(&o.spec().nets)],
        _ => vec![name],
    }
}

fn policy_cells(
    name: String,
    tier: &str,
    ord: Option<f64>,
    selector: &str,
    wide: bool,
) -> Vec<String> {
    let mut v = vec![name, tier.to_string()];
    if wide {
        v.push(order(ord));
        v.push(selector.to_string());
    }
    v
}

/// Renders a `get` table for `kind`.
pub fn render(kind: Kind, resources: &[Resource], wide: bool, all_namespaces: bool) -> String {
    let with_ns = kind.namespaced() && all_namespaces;
    let mut header = header(kind, wide);
    if with_ns {
        header.insert(0, "NAMESPACE");
    }
    let rows: Vec<Vec<String>> = resources
        .iter()
        .map(|r| {
            let mut c = cells(r, wide);
            if with_ns {
                c.insert(0, r.namespace().unwrap_or_default().to_string());
            }
            c
        })
        .collect();
    columns(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_as_many_cells_as_header_columns() {
        let decoded = tortie_api::decode("t", FIXTURES, "default");
        assert_eq!(decoded.len(), 10);
        for d in decoded {
            let (_, r) = d.expect("valid");
            for wide in [false, true] {
                assert_eq!(
                    cells(&r, wide).len(),
                    header(r.kind(), wide).len(),
                    "{:?} wide={wide}",
                    r.kind()
                );
            }
        }
    }

    const FIXTURES: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: p}
spec: {cidr: 10.0.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: g}
spec: {selector: all()}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: t}
spec: {order: 5}
---
apiVersion: projectcalico.org/v3
kind: Profile
metadata: {name: pr}
spec: {labelsToApply: {a: b}}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: n}
spec: {bgp: {ipv4Address: 10.0.0.1/24}}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h}
spec: {node: n, interfaceName: eth0}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: b}
spec: {peerIP: 10.0.0.2, asNumber: 64512}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: s}
spec: {nets: [10.1.0.0/16]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: n-k8s-p-eth0, namespace: d}
spec: {node: n, orchestrator: k8s, pod: p, endpoint: eth0}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: calico-system}
stringData: {password: x}
";

    #[test]
    fn secrets_show_type_and_key_count_never_values() {
        let text = "apiVersion: v1
kind: Secret
metadata: {name: bgp-passwords, namespace: calico-system}
data: {a: eA==}
stringData: {b: hunter2}
";
        let (_, r) = tortie_api::decode("t", text, "default")
            .pop()
            .expect("one")
            .expect("valid");
        let out = render(Kind::Secret, &[r], false, true);
        assert_eq!(
            out,
            "NAMESPACE       NAME            TYPE     DATA\n\
             calico-system   bgp-passwords   Opaque   2\n"
        );
    }
}
