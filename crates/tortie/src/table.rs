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

fn row(kind: Kind, r: &Resource, wide: bool) -> (Vec<&'static str>, Vec<String>) {
    let name = r.name().to_string();
    match r {
        Resource::IPPool(o) => {
            let s = o.spec();
            let mode = |m: Option<tortie_api::ipam::EncapMode>| {
                format!("{:?}", m.unwrap_or(tortie_api::ipam::EncapMode::Never))
            };
            if wide {
                (
                    vec![
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
                    vec![
                        name,
                        s.cidr.clone(),
                        s.nat_outgoing.to_string(),
                        mode(s.ipip_mode),
                        mode(s.vxlan_mode),
                        s.disabled.to_string(),
                        s.disable_bgp_export.to_string(),
                        s.node_selector.clone(),
                        format!(
                            "{:?}",
                            s.assignment_mode
                                .unwrap_or(tortie_api::ipam::AssignmentMode::Automatic)
                        ),
                    ],
                )
            } else {
                (
                    vec!["NAME", "CIDR", "SELECTOR"],
                    vec![name, s.cidr.clone(), s.node_selector.clone()],
                )
            }
        }
        Resource::NetworkPolicy(o) => policy_row(
            name,
            &o.spec().tier,
            o.spec().order,
            &o.spec().selector,
            wide,
        ),
        Resource::GlobalNetworkPolicy(o) => policy_row(
            name,
            &o.spec().tier,
            o.spec().order,
            &o.spec().selector,
            wide,
        ),
        Resource::StagedNetworkPolicy(o) => policy_row(
            name,
            &o.spec().0.tier,
            o.spec().0.order,
            &o.spec().0.selector,
            wide,
        ),
        Resource::StagedGlobalNetworkPolicy(o) => policy_row(
            name,
            &o.spec().0.tier,
            o.spec().0.order,
            &o.spec().0.selector,
            wide,
        ),
        Resource::Tier(o) => (vec!["NAME", "ORDER"], vec![name, order(o.spec().order)]),
        Resource::Profile(o) if wide => {
            let labels: Vec<String> = o
                .spec()
                .labels_to_apply
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            (vec!["NAME", "LABELS"], vec![name, join(&labels)])
        }
        Resource::Node(o) if wide => {
            let bgp = o.spec().bgp.clone().unwrap_or_default();
            let asn = bgp.as_number.map(|a| a.0.to_string()).unwrap_or_default();
            (
                vec!["NAME", "ASN", "IPV4", "IPV6"],
                vec![name, asn, bgp.ipv4_address, bgp.ipv6_address],
            )
        }
        Resource::WorkloadEndpoint(o) => {
            let s = o.spec();
            let workload = if s.workload.is_empty() {
                s.pod.clone()
            } else {
                s.workload.clone()
            };
            let base = vec![
                workload,
                s.node.clone(),
                join(&s.ip_networks),
                s.interface_name.clone(),
            ];
            if wide {
                let nats: Vec<String> = s
                    .ip_nats
                    .iter()
                    .map(|n| format!("{}:{}", n.internal_ip, n.external_ip))
                    .collect();
                let mut v = vec![name];
                v.extend(base);
                v.push(join(&s.profiles));
                v.push(join(&nats));
                (
                    vec![
                        "NAME",
                        "WORKLOAD",
                        "NODE",
                        "NETWORKS",
                        "INTERFACE",
                        "PROFILES",
                        "NATS",
                    ],
                    v,
                )
            } else {
                (vec!["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"], base)
            }
        }
        Resource::HostEndpoint(o) => {
            let s = o.spec();
            if wide {
                (
                    vec!["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
                    vec![
                        name,
                        s.node.clone(),
                        s.interface_name.clone(),
                        join(&s.expected_ips),
                        join(&s.profiles),
                    ],
                )
            } else {
                (vec!["NAME", "NODE"], vec![name, s.node.clone()])
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
            (
                vec!["NAME", "PEERIP", "NODE", "ASN"],
                vec![name, s.peer_ip.clone(), node, asn],
            )
        }
        Resource::NetworkSet(o) if wide => (vec!["NAME", "NETS"], vec![name, join(&o.spec().nets)]),
        Resource::GlobalNetworkSet(o) if wide => {
            (vec!["NAME", "NETS"], vec![name, join(&o.spec().nets)])
        }
        _ => {
            let _ = kind;
            (vec!["NAME"], vec![name])
        }
    }
}

fn policy_row(
    name: String,
    tier: &str,
    ord: Option<f64>,
    selector: &str,
    wide: bool,
) -> (Vec<&'static str>, Vec<String>) {
    if wide {
        (
            vec!["NAME", "TIER", "ORDER", "SELECTOR"],
            vec![name, tier.to_string(), order(ord), selector.to_string()],
        )
    } else {
        (vec!["NAME", "TIER"], vec![name, tier.to_string()])
    }
}

/// Renders a `get` table for `kind`.
pub fn render(kind: Kind, resources: &[Resource], wide: bool, all_namespaces: bool) -> String {
    let with_ns = kind.namespaced() && all_namespaces;
    let mut header: Vec<&str> = Vec::new();
    let mut rows = Vec::new();
    for r in resources {
        let (h, mut cells) = row(kind, r, wide);
        if with_ns {
            cells.insert(0, r.namespace().unwrap_or_default().to_string());
        }
        header = h;
        rows.push(cells);
    }
    if header.is_empty() {
        header = row_header(kind, wide);
    }
    if with_ns {
        header.insert(0, "NAMESPACE");
    }
    columns(&header, &rows)
}

fn row_header(kind: Kind, wide: bool) -> Vec<&'static str> {
    match kind {
        Kind::IPPool if wide => vec![
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
        Kind::IPPool => vec!["NAME", "CIDR", "SELECTOR"],
        Kind::NetworkPolicy
        | Kind::GlobalNetworkPolicy
        | Kind::StagedNetworkPolicy
        | Kind::StagedGlobalNetworkPolicy
            if wide =>
        {
            vec!["NAME", "TIER", "ORDER", "SELECTOR"]
        }
        Kind::NetworkPolicy
        | Kind::GlobalNetworkPolicy
        | Kind::StagedNetworkPolicy
        | Kind::StagedGlobalNetworkPolicy => vec!["NAME", "TIER"],
        Kind::Tier => vec!["NAME", "ORDER"],
        Kind::WorkloadEndpoint if wide => vec![
            "NAME",
            "WORKLOAD",
            "NODE",
            "NETWORKS",
            "INTERFACE",
            "PROFILES",
            "NATS",
        ],
        Kind::WorkloadEndpoint => vec!["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        Kind::HostEndpoint if wide => vec!["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        Kind::HostEndpoint => vec!["NAME", "NODE"],
        Kind::BGPPeer => vec!["NAME", "PEERIP", "NODE", "ASN"],
        Kind::Node if wide => vec!["NAME", "ASN", "IPV4", "IPV6"],
        _ => vec!["NAME"],
    }
}
