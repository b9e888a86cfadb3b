//! The kinds tortie stores: names, aliases, API groups, scope and storage keys.

use std::fmt;

use crate::validate::NameRule;

/// API group/version of Calico's user-facing API.
pub const CALICO_API_VERSION: &str = "projectcalico.org/v3";
/// Kubernetes NetworkPolicy API group/version.
pub const K8S_NETWORKING_API_VERSION: &str = "networking.k8s.io/v1";
/// Kubernetes core API version.
pub const K8S_CORE_API_VERSION: &str = "v1";

/// Every kind tortie understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    IPPool,
    IPReservation,
    IPAMConfiguration,
    BGPConfiguration,
    BGPPeer,
    BGPFilter,
    NetworkPolicy,
    GlobalNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    Tier,
    NetworkSet,
    GlobalNetworkSet,
    HostEndpoint,
    WorkloadEndpoint,
    Profile,
    Node,
    FelixConfiguration,
    KubeControllersConfiguration,
    /// `networking.k8s.io/v1` NetworkPolicy.
    K8sNetworkPolicy,
    Namespace,
    Pod,
    ServiceAccount,
    /// core/v1 Secret: BGP passwords (`secretKeyRef`) are read from these.
    Secret,
}

/// Static facts about a kind.
#[derive(Debug)]
pub struct KindInfo {
    /// The `kind:` string in manifests.
    pub name: &'static str,
    pub api_version: &'static str,
    /// Lower-case plural, used in storage keys and as a CLI alias.
    pub plural: &'static str,
    /// Extra CLI aliases (lower-case), besides the lower-case name and plural.
    pub aliases: &'static [&'static str],
    pub namespaced: bool,
    pub name_rule: NameRule,
}

macro_rules! info {
    ($name:literal, $api:expr, $plural:literal, [$($alias:literal),*], $ns:literal, $rule:ident) => {
        KindInfo {
            name: $name,
            api_version: $api,
            plural: $plural,
            aliases: &[$($alias),*],
            namespaced: $ns,
            name_rule: NameRule::$rule,
        }
    };
}

const C: &str = CALICO_API_VERSION;

static INFOS: [KindInfo; 25] = [
    info!(
        "IPPool",
        C,
        "ippools",
        ["ipp", "ipps", "pool", "pools"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "IPReservation",
        C,
        "ipreservations",
        ["ipr", "iprs"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "IPAMConfiguration",
        C,
        "ipamconfigurations",
        ["ipamconfig", "ipamconfigs"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "BGPConfiguration",
        C,
        "bgpconfigurations",
        ["bgpconfig", "bgpconfigs"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "BGPPeer",
        C,
        "bgppeers",
        ["bgpp", "bgpps", "bp", "bps"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "BGPFilter",
        C,
        "bgpfilters",
        ["bgpf", "bgpfs"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "NetworkPolicy",
        C,
        "networkpolicies",
        [
            "policy",
            "policies",
            "np",
            "nps",
            "pol",
            "pols",
            "networkpolicy.projectcalico.org",
            "networkpolicies.projectcalico.org"
        ],
        true,
        Dns1123Subdomain
    ),
    info!(
        "GlobalNetworkPolicy",
        C,
        "globalnetworkpolicies",
        ["gnp", "gnps", "globalpolicy", "globalpolicies"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "StagedNetworkPolicy",
        C,
        "stagednetworkpolicies",
        ["snp", "snps"],
        true,
        Dns1123Subdomain
    ),
    info!(
        "StagedGlobalNetworkPolicy",
        C,
        "stagedglobalnetworkpolicies",
        ["sgnp", "sgnps"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "StagedKubernetesNetworkPolicy",
        C,
        "stagedkubernetesnetworkpolicies",
        ["sknp", "sknps"],
        true,
        Dns1123Subdomain
    ),
    info!("Tier", C, "tiers", [], false, Dns1123Label),
    info!(
        "NetworkSet",
        C,
        "networksets",
        ["netset", "netsets"],
        true,
        Dns1123Subdomain
    ),
    info!(
        "GlobalNetworkSet",
        C,
        "globalnetworksets",
        ["gns", "globalnetset", "globalnetsets"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "HostEndpoint",
        C,
        "hostendpoints",
        ["hep", "heps"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "WorkloadEndpoint",
        C,
        "workloadendpoints",
        ["wep", "weps"],
        true,
        Dns1123Subdomain
    ),
    info!("Profile", C, "profiles", ["pro", "pros"], false, Profile),
    info!("Node", C, "nodes", ["no", "nos"], false, Dns1123Subdomain),
    info!(
        "FelixConfiguration",
        C,
        "felixconfigurations",
        ["felixconfig", "felixconfigs"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "KubeControllersConfiguration",
        C,
        "kubecontrollersconfigurations",
        ["kcc"],
        false,
        Dns1123Subdomain
    ),
    info!(
        "NetworkPolicy",
        K8S_NETWORKING_API_VERSION,
        "networkpolicies",
        [
            "networkpolicy.networking.k8s.io",
            "networkpolicies.networking.k8s.io",
            "knp",
            "knps",
            "k8snetworkpolicy",
            "k8snetworkpolicies"
        ],
        true,
        Dns1123Subdomain
    ),
    info!(
        "Namespace",
        K8S_CORE_API_VERSION,
        "namespaces",
        ["ns"],
        false,
        Dns1123Label
    ),
    info!(
        "Pod",
        K8S_CORE_API_VERSION,
        "pods",
        ["po"],
        true,
        Dns1123Subdomain
    ),
    info!(
        "ServiceAccount",
        K8S_CORE_API_VERSION,
        "serviceaccounts",
        ["sa"],
        true,
        Dns1123Subdomain
    ),
    info!(
        "Secret",
        K8S_CORE_API_VERSION,
        "secrets",
        [],
        true,
        Dns1123Subdomain
    ),
];

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 25] = [
        Kind::IPPool,
        Kind::IPReservation,
        Kind::IPAMConfiguration,
        Kind::BGPConfiguration,
        Kind::BGPPeer,
        Kind::BGPFilter,
        Kind::NetworkPolicy,
        Kind::GlobalNetworkPolicy,
        Kind::StagedNetworkPolicy,
        Kind::StagedGlobalNetworkPolicy,
        Kind::StagedKubernetesNetworkPolicy,
        Kind::Tier,
        Kind::NetworkSet,
        Kind::GlobalNetworkSet,
        Kind::HostEndpoint,
        Kind::WorkloadEndpoint,
        Kind::Profile,
        Kind::Node,
        Kind::FelixConfiguration,
        Kind::KubeControllersConfiguration,
        Kind::K8sNetworkPolicy,
        Kind::Namespace,
        Kind::Pod,
        Kind::ServiceAccount,
        Kind::Secret,
    ];

    pub fn info(self) -> &'static KindInfo {
        &INFOS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }

    /// The API group (`projectcalico.org`, `networking.k8s.io`, or `core`).
    pub fn group(self) -> &'static str {
        match self.info().api_version.split_once('/') {
            Some((g, _)) => g,
            None => "core",
        }
    }

    /// Resolves a manifest's `apiVersion` + `kind`.
    pub fn from_manifest(api_version: &str, kind: &str) -> Result<Kind, String> {
        let mut kind_known = false;
        for k in Kind::ALL {
            let info = k.info();
            if info.name == kind {
                kind_known = true;
                if info.api_version == api_version {
                    return Ok(k);
                }
            }
        }
        if kind_known {
            let expected: Vec<&str> = Kind::ALL
                .iter()
                .filter(|k| k.info().name == kind)
                .map(|k| k.info().api_version)
                .collect();
            let hint = if api_version == "crd.projectcalico.org/v1" {
                " (crd.projectcalico.org/v1 is Calico's internal storage format; write projectcalico.org/v3)"
            } else {
                ""
            };
            Err(format!(
                "apiVersion {api_version:?} is not supported for kind {kind}; expected {}{hint}",
                expected.join(" or ")
            ))
        } else {
            Err(format!("unknown kind {kind:?}"))
        }
    }

    /// Resolves a CLI kind argument: case-insensitive name, plural or alias.
    /// A bare `networkpolicy` means Calico's NetworkPolicy, as in calicoctl.
    pub fn from_cli(arg: &str) -> Option<Kind> {
        let a = arg.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let info = k.info();
            let calico_bare = *k != Kind::K8sNetworkPolicy;
            (calico_bare && (info.name.to_ascii_lowercase() == a || info.plural == a))
                || info.aliases.contains(&a.as_str())
        })
    }

    /// Storage key prefix for the kind (ends with `/`).
    pub fn key_prefix(self) -> String {
        format!(
            "/calico/resources/v3/{}/{}/",
            self.group(),
            self.info().plural
        )
    }

    /// Storage key prefix for a kind within one namespace.
    pub fn namespace_prefix(self, namespace: &str) -> String {
        format!("{}{namespace}/", self.key_prefix())
    }

    /// Storage key of one object.
    pub fn key(self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("{}{ns}/{name}", self.key_prefix()),
            _ => format!("{}{name}", self.key_prefix()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::K8sNetworkPolicy => f.write_str("NetworkPolicy.networking.k8s.io"),
            k => f.write_str(k.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infos_line_up_with_variants() {
        for k in Kind::ALL {
            let expected = match k {
                Kind::K8sNetworkPolicy => "NetworkPolicy",
                _ => &format!("{k:?}"),
            };
            assert_eq!(k.info().name, expected);
        }
    }

    #[test]
    fn cli_names() {
        assert_eq!(Kind::from_cli("IPPools"), Some(Kind::IPPool));
        assert_eq!(Kind::from_cli("gnp"), Some(Kind::GlobalNetworkPolicy));
        assert_eq!(Kind::from_cli("networkpolicy"), Some(Kind::NetworkPolicy));
        assert_eq!(
            Kind::from_cli("NetworkPolicy.networking.k8s.io"),
            Some(Kind::K8sNetworkPolicy)
        );
        assert_eq!(
            Kind::from_cli("networkpolicies.projectcalico.org"),
            Some(Kind::NetworkPolicy)
        );
        assert_eq!(Kind::from_cli("wep"), Some(Kind::WorkloadEndpoint));
        assert_eq!(Kind::from_cli("secrets"), Some(Kind::Secret));
        assert_eq!(Kind::from_cli("Secret"), Some(Kind::Secret));
        assert_eq!(Kind::from_cli("bogus"), None);
    }

    #[test]
    fn keys() {
        assert_eq!(
            Kind::IPPool.key(None, "p1"),
            "/calico/resources/v3/projectcalico.org/ippools/p1"
        );
        assert_eq!(
            Kind::NetworkPolicy.key(Some("ns1"), "a"),
            "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/a"
        );
        assert_eq!(
            Kind::K8sNetworkPolicy.key(Some("ns1"), "a"),
            "/calico/resources/v3/networking.k8s.io/networkpolicies/ns1/a"
        );
        assert_eq!(
            Kind::Pod.key(Some("x"), "a"),
            "/calico/resources/v3/core/pods/x/a"
        );
        assert_eq!(
            Kind::Secret.key(Some("calico-system"), "bgp"),
            "/calico/resources/v3/core/secrets/calico-system/bgp"
        );
    }

    #[test]
    fn manifest_kinds() {
        assert_eq!(
            Kind::from_manifest("projectcalico.org/v3", "NetworkPolicy"),
            Ok(Kind::NetworkPolicy)
        );
        assert_eq!(
            Kind::from_manifest("networking.k8s.io/v1", "NetworkPolicy"),
            Ok(Kind::K8sNetworkPolicy)
        );
        assert!(
            Kind::from_manifest("projectcalico.org/v2", "IPPool")
                .unwrap_err()
                .contains("apiVersion")
        );
        assert!(
            Kind::from_manifest("projectcalico.org/v3", "Bogus")
                .unwrap_err()
                .contains("unknown kind")
        );
    }
}
