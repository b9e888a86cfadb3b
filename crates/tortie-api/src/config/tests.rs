//! Tests for the configuration kinds.

use serde_json::{Value, json};

use super::checks::{is_bpf_conntrack_timeout, re2_syntax};
use super::*;
use crate::error::{Errors, FieldError};
use crate::meta::ObjectMeta;
use crate::resource::CalicoSpec;

/// Every JSON field name of Calico's `FelixConfigurationSpec`, in Calico's order.
const FELIX_FIELDS: [&str; 188] = [
    "nodeSelector",
    "useInternalDataplaneDriver",
    "dataplaneDriver",
    "dataplaneWatchdogTimeout",
    "ipv6Support",
    "routeRefreshInterval",
    "interfaceRefreshInterval",
    "iptablesRefreshInterval",
    "iptablesPostWriteCheckInterval",
    "iptablesLockProbeInterval",
    "featureDetectOverride",
    "featureGates",
    "ipsetsRefreshInterval",
    "maxIpsetSize",
    "iptablesBackend",
    "xdpRefreshInterval",
    "netlinkTimeout",
    "metadataAddr",
    "metadataPort",
    "openstackRegion",
    "interfacePrefix",
    "interfaceExclude",
    "chainInsertMode",
    "defaultEndpointToHostAction",
    "iptablesFilterAllowAction",
    "iptablesMangleAllowAction",
    "iptablesFilterDenyAction",
    "logPrefix",
    "logActionRateLimit",
    "logActionRateLimitBurst",
    "logFilePath",
    "logSeverityFile",
    "logSeverityScreen",
    "logSeveritySys",
    "logDebugFilenameRegex",
    "ipipEnabled",
    "ipipMTU",
    "vxlanEnabled",
    "vxlanMTU",
    "vxlanMTUV6",
    "vxlanPort",
    "vxlanVNI",
    "allowVXLANPacketsFromWorkloads",
    "allowIPIPPacketsFromWorkloads",
    "reportingInterval",
    "reportingTTL",
    "endpointReportingEnabled",
    "endpointReportingDelay",
    "endpointStatusPathPrefix",
    "iptablesMarkMask",
    "disableConntrackInvalidCheck",
    "healthEnabled",
    "healthHost",
    "healthPort",
    "healthTimeoutOverrides",
    "prometheusMetricsEnabled",
    "prometheusMetricsHost",
    "prometheusMetricsPort",
    "prometheusGoMetricsEnabled",
    "prometheusProcessMetricsEnabled",
    "prometheusWireGuardMetricsEnabled",
    "prometheusMetricsCAFile",
    "prometheusMetricsCertFile",
    "prometheusMetricsKeyFile",
    "prometheusMetricsClientAuth",
    "failsafeInboundHostPorts",
    "failsafeOutboundHostPorts",
    "kubeNodePortRanges",
    "policySyncPathPrefix",
    "usageReportingEnabled",
    "usageReportingInitialDelay",
    "usageReportingInterval",
    "natPortRange",
    "natOutgoingAddress",
    "natOutgoingExclusions",
    "deviceRouteSourceAddress",
    "deviceRouteSourceAddressIPv6",
    "deviceRouteProtocol",
    "removeExternalRoutes",
    "programClusterRoutes",
    "ipForwarding",
    "externalNodesList",
    "debugMemoryProfilePath",
    "debugDisableLogDropping",
    "debugSimulateCalcGraphHangAfter",
    "debugSimulateDataplaneHangAfter",
    "debugSimulateDataplaneApplyDelay",
    "debugHost",
    "debugPort",
    "iptablesNATOutgoingInterfaceFilter",
    "sidecarAccelerationEnabled",
    "xdpEnabled",
    "genericXDPEnabled",
    "nftablesMode",
    "nftablesFlowTableOffload",
    "nftablesFlowTableDataIfacePattern",
    "nftablesRefreshInterval",
    "nftablesFilterAllowAction",
    "nftablesMangleAllowAction",
    "nftablesFilterDenyAction",
    "nftablesMarkMask",
    "bpfEnabled",
    "bpfOverlayHostSourceIP",
    "bpfDisableUnprivileged",
    "bpfJITHardening",
    "bpfLogLevel",
    "bpfConntrackLogLevel",
    "bpfConntrackMode",
    "bpfConntrackTimeouts",
    "bpfIPFragTimeout",
    "bpfLogFilters",
    "bpfCTLBLogFilter",
    "bpfDataIfacePattern",
    "bpfL3IfacePattern",
    "bpfConnectTimeLoadBalancingEnabled",
    "bpfConnectTimeLoadBalancing",
    "bpfHostNetworkedNATWithoutCTLB",
    "bpfExternalServiceMode",
    "bpfDSROptoutCIDRs",
    "bpfExtToServiceConnmark",
    "bpfKubeProxyIptablesCleanupEnabled",
    "bpfKubeProxyMinSyncPeriod",
    "bpfKubeProxyHealthzPort",
    "bpfPSNATPorts",
    "bpfMapSizeNATFrontend",
    "bpfMapSizeNATBackend",
    "bpfMapSizeNATAffinity",
    "bpfMapSizeRoute",
    "bpfMapSizeConntrack",
    "bpfMapSizePerCpuConntrack",
    "bpfMapSizeConntrackScaling",
    "bpfMapSizeConntrackCleanupQueue",
    "bpfMapSizeIPSets",
    "bpfMapSizeIfState",
    "bpfHostConntrackBypass",
    "bpfIPFragmentReassemblyEnabled",
    "bpfEnforceRPF",
    "bpfPolicyDebugEnabled",
    "bpfForceTrackPacketsFromIfaces",
    "bpfDisableGROForIfaces",
    "bpfExcludeCIDRsFromNAT",
    "bpfExportBufferSizeMB",
    "istioAmbientMode",
    "istioDSCPMark",
    "cgroupV2Path",
    "flowLogsPolicyEvaluationMode",
    "bpfRedirectToPeer",
    "bpfAttachType",
    "flowLogsFlushInterval",
    "flowLogsCollectorDebugTrace",
    "flowLogsGoldmaneServer",
    "flowLogsLocalReporter",
    "bpfProfiling",
    "routeSource",
    "routeTableRanges",
    "routeTableRange",
    "routeSyncDisabled",
    "ipv4NormalRoutePriority",
    "ipv4ElevatedRoutePriority",
    "ipv6NormalRoutePriority",
    "ipv6ElevatedRoutePriority",
    "liveMigrationRouteConvergenceTime",
    "wireguardEnabled",
    "wireguardEnabledV6",
    "wireguardThreadingEnabled",
    "wireguardListeningPort",
    "wireguardListeningPortV6",
    "wireguardRoutingRulePriority",
    "wireguardInterfaceName",
    "wireguardInterfaceNameV6",
    "wireguardMTU",
    "wireguardMTUV6",
    "wireguardHostEncryptionEnabled",
    "wireguardKeepAlive",
    "awsSrcDstCheck",
    "serviceLoopPrevention",
    "workloadSourceSpoofing",
    "mtuIfacePattern",
    "floatingIPs",
    "localSubnetL2Reachability",
    "localSubnetL2ReachabilityRefreshInterval",
    "windowsManageFirewallRules",
    "goGCThreshold",
    "goMemoryLimitMB",
    "goMaxProcs",
    "requireMTUFile",
    "bpfMaglevMaxEndpointsPerService",
    "bpfMaglevMaxServices",
];

fn validate_as<S: CalicoSpec>(spec: &S, name: &str) -> Vec<FieldError> {
    let meta = ObjectMeta::named(name, None);
    let mut errs = Errors::new();
    errs.at("spec", |errs| spec.validate(&meta, errs));
    errs.into_vec()
}

fn felix(v: Value) -> FelixConfigurationSpec {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v} should decode: {e}"))
}

fn kcc(v: Value) -> KubeControllersConfigurationSpec {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v} should decode: {e}"))
}

fn assert_error_at(errs: &[FieldError], path: &str, input: &Value) {
    assert!(
        errs.iter().any(|e| e.path == path),
        "expected an error on {path} for {input}, got {errs:#?}"
    );
}

const FULL_FELIX: &str = r#"{
    "awsSrcDstCheck": "Disable",
    "bpfAttachType": "TCX",
    "bpfConnectTimeLoadBalancing": "TCP",
    "bpfConntrackTimeouts": {"creationGracePeriod": "10s", "tcpEstablished": "1h", "tcpFinsSeen": "Auto"},
    "bpfDSROptoutCIDRs": ["10.0.0.0/8", "fd00::/64"],
    "bpfEnabled": true,
    "bpfExternalServiceMode": "DSR",
    "bpfForceTrackPacketsFromIfaces": ["docker+"],
    "bpfHostNetworkedNATWithoutCTLB": "Enabled",
    "bpfKubeProxyIptablesCleanupEnabled": true,
    "bpfKubeProxyMinSyncPeriod": "1s",
    "bpfLogFilters": {"all": "tcp port 80", "eth0": "host 10.0.0.1"},
    "bpfLogLevel": "Info",
    "bpfMapSizeConntrack": 512000,
    "bpfMapSizePerCpuConntrack": 0,
    "bpfPSNATPorts": "20000:29999",
    "chainInsertMode": "insert",
    "defaultEndpointToHostAction": "Accept",
    "deviceRouteSourceAddress": "10.0.0.1",
    "deviceRouteSourceAddressIPv6": "fd00::1",
    "externalNodesList": ["203.0.113.0/24", "198.51.100.7"],
    "failsafeInboundHostPorts": [
        {"protocol": "TCP", "port": 22},
        {"protocol": "UDP", "port": 68, "net": "0.0.0.0/0"},
        {"port": 179}
    ],
    "failsafeOutboundHostPorts": [],
    "featureDetectOverride": "SNATFullyRandom=true,MASQFullyRandom=false,RestoreSupportsLock=",
    "featureGates": "BPFConnectTimeLoadBalancingWorkaround=enabled",
    "floatingIPs": "Disabled",
    "goGCThreshold": -1,
    "healthEnabled": true,
    "healthHost": "localhost",
    "healthPort": 9099,
    "healthTimeoutOverrides": [{"name": "InternalDataplaneMainLoop", "timeout": "1m30s"}],
    "interfaceExclude": "kube-ipvs0,/^veth/",
    "interfacePrefix": "cali",
    "ipipEnabled": true,
    "ipipMTU": 1440,
    "iptablesBackend": "NFT",
    "iptablesMarkMask": 4294901760,
    "iptablesNATOutgoingInterfaceFilter": "eth+",
    "iptablesRefreshInterval": "10s",
    "ipv6Support": false,
    "istioDSCPMark": 23,
    "kubeNodePortRanges": ["30000:32767", 8080],
    "liveMigrationRouteConvergenceTime": "2.5s",
    "logActionRateLimit": "10/second",
    "logActionRateLimitBurst": 5,
    "logPrefix": "calico-packet %t/%n",
    "logSeverityFile": "debug",
    "logSeverityScreen": "Info",
    "logSeveritySys": "Warning",
    "mtuIfacePattern": "^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)",
    "natOutgoingAddress": "192.0.2.10",
    "natPortRange": "32768:65535",
    "nftablesMode": "Enabled",
    "programClusterRoutes": "Enabled",
    "prometheusMetricsClientAuth": "NoClientCert",
    "prometheusMetricsEnabled": true,
    "prometheusMetricsHost": "0.0.0.0",
    "prometheusMetricsPort": 9091,
    "reportingInterval": "0s",
    "routeRefreshInterval": "1m30s",
    "routeSource": "CalicoIPAM",
    "routeTableRanges": [{"min": 1, "max": 250}, {"min": 1000, "max": 2000}],
    "serviceLoopPrevention": "Drop",
    "vxlanEnabled": true,
    "vxlanMTU": 1410,
    "vxlanMTUV6": 1390,
    "vxlanPort": 4789,
    "vxlanVNI": 4096,
    "wireguardEnabled": true,
    "wireguardInterfaceName": "wireguard.cali",
    "wireguardKeepAlive": "25s",
    "wireguardListeningPort": 51820,
    "wireguardMTU": 1440,
    "workloadSourceSpoofing": "Any",
    "xdpEnabled": true
}"#;

#[test]
fn felix_full_sample_is_accepted_and_round_trips() {
    let spec: FelixConfigurationSpec = serde_json::from_str(FULL_FELIX).expect("decodes");
    assert_eq!(spec.ipip_mtu, Some(1440));
    assert_eq!(spec.vxlan_vni, Some(4096));
    assert_eq!(spec.bpf_enabled, Some(true));
    assert_eq!(spec.istio_dscp_mark, Some(Dscp::Value(23)));
    assert_eq!(
        spec.failsafe_inbound_host_ports.as_ref().map(Vec::len),
        Some(3)
    );
    assert_eq!(spec.failsafe_outbound_host_ports, Some(vec![]));
    assert_eq!(validate_as(&spec, "default"), vec![]);

    let original: Value = serde_json::from_str(FULL_FELIX).expect("json");
    assert_eq!(serde_json::to_value(&spec).expect("encodes"), original);

    // Defaulting keeps explicit values and the result still validates.
    let mut defaulted = spec.clone();
    defaulted.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(defaulted.nftables_mode.as_deref(), Some("Enabled"));
    assert_eq!(defaulted.floating_ips.as_deref(), Some("Disabled"));
    assert_eq!(validate_as(&defaulted, "default"), vec![]);
}

#[test]
fn felix_knows_every_calico_field() {
    for name in FELIX_FIELDS {
        // `true` is the wrong type for most fields: that is fine, only "unknown field" is not.
        let err = serde_json::from_value::<FelixConfigurationSpec>(json!({ name: true }))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("unknown field"), "{name}: {err}");
    }
    // And nothing else: a fully populated spec serialises exactly these names.
    let spec: FelixConfigurationSpec = serde_json::from_str(FULL_FELIX).expect("decodes");
    let Value::Object(map) = serde_json::to_value(spec).expect("encodes") else {
        panic!()
    };
    assert!(map.keys().all(|k| FELIX_FIELDS.contains(&k.as_str())));
}

#[test]
fn felix_unknown_fields_are_rejected() {
    for v in [
        json!({"bpfEnable": true}),
        json!({"BPFEnabled": true}),
        json!({"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 22, "cidr": "10.0.0.0/8"}]}),
        json!({"routeTableRange": {"min": 1, "max": 2, "step": 1}}),
        json!({"bpfConntrackTimeouts": {"tcpFoo": "1s"}}),
        json!({"healthTimeoutOverrides": [{"name": "x", "timeout": "1s", "extra": 1}]}),
    ] {
        let err =
            serde_json::from_value::<FelixConfigurationSpec>(v.clone()).expect_err("must fail");
        assert!(err.to_string().contains("unknown field"), "{v}: {err}");
    }
}

#[test]
fn felix_wrong_shapes_are_rejected_when_decoding() {
    for v in [
        json!({"ipipMTU": "1440"}),
        json!({"bpfEnabled": "true"}),
        json!({"routeRefreshInterval": 90}),
        json!({"failsafeInboundHostPorts": [{"protocol": "TCP"}]}),
        json!({"failsafeInboundHostPorts": [{"port": 70000}]}),
        json!({"healthTimeoutOverrides": [{"name": "x"}]}),
        json!({"routeTableRange": {"min": 1}}),
        json!({"natPortRange": "10:5"}),
        json!({"istioDSCPMark": 256}),
        json!({"debugProfilePort": 1}),
    ] {
        assert!(
            serde_json::from_value::<FelixConfigurationSpec>(v.clone()).is_err(),
            "{v} should not decode"
        );
    }
}

#[test]
fn felix_invalid_values_name_the_field() {
    let cases = [
        (json!({"iptablesBackend": "nft"}), "spec.iptablesBackend"),
        (
            json!({"logSeverityScreen": "Verbose"}),
            "spec.logSeverityScreen",
        ),
        (json!({"logSeveritySys": "None"}), "spec.logSeveritySys"),
        (
            json!({"chainInsertMode": "Prepend"}),
            "spec.chainInsertMode",
        ),
        (
            json!({"defaultEndpointToHostAction": "Reject"}),
            "spec.defaultEndpointToHostAction",
        ),
        (
            json!({"iptablesFilterDenyAction": "Accept"}),
            "spec.iptablesFilterDenyAction",
        ),
        (json!({"nftablesMode": "auto"}), "spec.nftablesMode"),
        (
            json!({"bpfExternalServiceMode": "Direct"}),
            "spec.bpfExternalServiceMode",
        ),
        (json!({"bpfLogLevel": "Trace"}), "spec.bpfLogLevel"),
        (
            json!({"serviceLoopPrevention": "drop"}),
            "spec.serviceLoopPrevention",
        ),
        (json!({"awsSrcDstCheck": ""}), "spec.awsSrcDstCheck"),
        (
            json!({"routeRefreshInterval": "1.5s"}),
            "spec.routeRefreshInterval",
        ),
        (
            json!({"routeRefreshInterval": "90"}),
            "spec.routeRefreshInterval",
        ),
        (json!({"reportingTTL": "-1s"}), "spec.reportingTTL"),
        (
            json!({"iptablesLockProbeInterval": "100us"}),
            "spec.iptablesLockProbeInterval",
        ),
        (
            json!({"liveMigrationRouteConvergenceTime": "500us"}),
            "spec.liveMigrationRouteConvergenceTime",
        ),
        (
            json!({"natOutgoingAddress": "fd00::1"}),
            "spec.natOutgoingAddress",
        ),
        (
            json!({"natOutgoingAddress": "not-an-ip"}),
            "spec.natOutgoingAddress",
        ),
        (
            json!({"deviceRouteSourceAddressIPv6": "10.0.0.1"}),
            "spec.deviceRouteSourceAddressIPv6",
        ),
        (
            json!({"wireguardListeningPort": 0}),
            "spec.wireguardListeningPort",
        ),
        (
            json!({"wireguardRoutingRulePriority": 32766}),
            "spec.wireguardRoutingRulePriority",
        ),
        (json!({"debugPort": 70000}), "spec.debugPort"),
        (
            json!({"iptablesMarkMask": 4_294_967_296_i64}),
            "spec.iptablesMarkMask",
        ),
        (json!({"goGCThreshold": -2}), "spec.goGCThreshold"),
        (
            json!({"bpfMaglevMaxServices": 3001}),
            "spec.bpfMaglevMaxServices",
        ),
        (
            json!({"bpfMapSizeConntrackCleanupQueue": 0}),
            "spec.bpfMapSizeConntrackCleanupQueue",
        ),
        (
            json!({"ipv4NormalRoutePriority": 0}),
            "spec.ipv4NormalRoutePriority",
        ),
        (
            json!({"routeTableRange": {"min": 0, "max": 10}}),
            "spec.routeTableRange",
        ),
        (
            json!({"routeTableRange": {"min": 1, "max": 251}}),
            "spec.routeTableRange",
        ),
        (
            json!({"routeTableRanges": [{"min": 10, "max": 5}]}),
            "spec.routeTableRanges[0]",
        ),
        (
            json!({"routeTableRanges": [{"min": 0, "max": 5}]}),
            "spec.routeTableRanges[0].min",
        ),
        (
            json!({"routeTableRanges": [{"min": 1, "max": 4_294_967_296_i64}]}),
            "spec.routeTableRanges[0].max",
        ),
        (
            json!({"routeTableRanges": [{"min": 1, "max": 70000}]}),
            "spec.routeTableRanges",
        ),
        (
            json!({"routeTableRange": {"min": 1, "max": 250}, "routeTableRanges": [{"min": 1, "max": 250}]}),
            "spec.routeTableRange",
        ),
        (
            json!({"kubeNodePortRanges": ["http"]}),
            "spec.kubeNodePortRanges[0]",
        ),
        (
            json!({"kubeNodePortRanges": [0]}),
            "spec.kubeNodePortRanges[0]",
        ),
        (
            json!({"kubeNodePortRanges": [1, 2, 3, 4, 5, 6, 7, 8]}),
            "spec.kubeNodePortRanges",
        ),
        (json!({"natPortRange": 0}), "spec.natPortRange"),
        (json!({"bpfPSNATPorts": "0:100"}), "spec.bpfPSNATPorts"),
        (
            json!({"failsafeInboundHostPorts": [{"protocol": "ICMP", "port": 1}]}),
            "spec.failsafeInboundHostPorts[0].protocol",
        ),
        (
            json!({"failsafeOutboundHostPorts": [{"port": 53, "net": "nope"}]}),
            "spec.failsafeOutboundHostPorts[0].net",
        ),
        (
            json!({"externalNodesList": ["fd00::/64"]}),
            "spec.externalNodesList[0]",
        ),
        (
            json!({"bpfDSROptoutCIDRs": ["10.0.0.0/33"]}),
            "spec.bpfDSROptoutCIDRs[0]",
        ),
        (
            json!({"bpfExcludeCIDRsFromNAT": ["x"]}),
            "spec.bpfExcludeCIDRsFromNAT[0]",
        ),
        (
            json!({"openstackRegion": "Region_1"}),
            "spec.openstackRegion",
        ),
        (
            json!({"openstackRegion": "a".repeat(47)}),
            "spec.openstackRegion",
        ),
        (json!({"featureGates": "a=b=c"}), "spec.featureGates"),
        (json!({"featureGates": "a=b,,c=d"}), "spec.featureGates"),
        (
            json!({"featureDetectOverride": "SNATFullyRandom=yes"}),
            "spec.featureDetectOverride",
        ),
        (
            json!({"featureDetectOverride": "bad-key=true"}),
            "spec.featureDetectOverride",
        ),
        (json!({"mtuIfacePattern": "(eth"}), "spec.mtuIfacePattern"),
        (
            json!({"bpfDataIfacePattern": "eth**"}),
            "spec.bpfDataIfacePattern",
        ),
        (
            json!({"logDebugFilenameRegex": "[z-a]"}),
            "spec.logDebugFilenameRegex",
        ),
        (json!({"logPrefix": "bad;prefix"}), "spec.logPrefix"),
        (
            json!({"logActionRateLimit": "0/second"}),
            "spec.logActionRateLimit",
        ),
        (
            json!({"logActionRateLimit": "10/week"}),
            "spec.logActionRateLimit",
        ),
        (
            json!({"logActionRateLimitBurst": 10000}),
            "spec.logActionRateLimitBurst",
        ),
        (
            json!({"iptablesNATOutgoingInterfaceFilter": "this-is-way-too-long"}),
            "spec.iptablesNATOutgoingInterfaceFilter",
        ),
        (
            json!({"wireguardInterfaceName": "wg/0"}),
            "spec.wireguardInterfaceName",
        ),
        (
            json!({"prometheusMetricsHost": "bad host"}),
            "spec.prometheusMetricsHost",
        ),
        (
            json!({"bpfLogFilters": {"bad iface": "x"}}),
            "spec.bpfLogFilters.bad iface",
        ),
        (
            json!({"bpfForceTrackPacketsFromIfaces": ["ok", "docker*"]}),
            "spec.bpfForceTrackPacketsFromIfaces[1]",
        ),
        (
            json!({"bpfConntrackTimeouts": {"tcpEstablished": "forever"}}),
            "spec.bpfConntrackTimeouts.tcpEstablished",
        ),
        (
            json!({"healthTimeoutOverrides": [{"name": "bad/name", "timeout": "1s"}]}),
            "spec.healthTimeoutOverrides[0].name",
        ),
        (
            json!({"healthTimeoutOverrides": [{"name": "x", "timeout": "-1s"}]}),
            "spec.healthTimeoutOverrides[0].timeout",
        ),
        (json!({"nodeSelector": "all()"}), "spec.nodeSelector"),
        (
            json!({"nodeSelector": "x".repeat(1025)}),
            "spec.nodeSelector",
        ),
    ];
    for (input, path) in cases {
        let errs = validate_as(&felix(input.clone()), "default");
        assert_error_at(&errs, path, &input);
    }
}

#[test]
fn felix_errors_carry_the_value() {
    let errs = validate_as(&felix(json!({"iptablesBackend": "nft"})), "default");
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path, "spec.iptablesBackend");
    assert_eq!(errs[0].value, "\"nft\"");
    assert!(
        errs[0].reason.contains("Legacy, NFT, Auto"),
        "{}",
        errs[0].reason
    );
}

#[test]
fn felix_edge_values_are_accepted() {
    for input in [
        json!({"nodeSelector": "rack == 'a'"}),
        json!({"chainInsertMode": "APPEND", "logSeverityScreen": "trace", "bpfEnforceRPF": "loose"}),
        json!({"ipForwarding": "", "chainInsertMode": ""}),
        json!({"routeRefreshInterval": "0", "ipsetsRefreshInterval": "500ms", "xdpRefreshInterval": "1h"}),
        json!({"dataplaneWatchdogTimeout": "-5s", "nftablesRefreshInterval": "1.5us"}),
        json!({"liveMigrationRouteConvergenceTime": "1.5ms"}),
        json!({"failsafeInboundHostPorts": [{"protocol": "tcp", "port": 0}, {"protocol": "", "port": 22}]}),
        json!({"featureGates": "a=b,", "featureDetectOverride": "A=,B=true"}),
        json!({"kubeNodePortRanges": [1, 2, 3, 4, 5, 6, 7]}),
        json!({"natPortRange": "http", "istioDSCPMark": "EF"}),
        json!({"routeTableRanges": [{"min": 1, "max": 65535}]}),
        json!({"wireguardInterfaceName": "*", "iptablesMarkMask": 0, "debugPort": 0}),
        json!({"bpfConntrackTimeouts": {"tcpSynSent": "20s", "icmpTimeout": "1.5s", "udpTimeout": "Auto"}}),
        json!({"vxlanVNI": 0, "vxlanPort": 0, "ipipMTU": 100_000}),
    ] {
        let errs = validate_as(&felix(input.clone()), "node.worker-1");
        if input.get("nodeSelector").is_some() {
            assert!(
                errs.iter().any(|e| e.path == "spec.nodeSelector"),
                "{input}"
            );
            assert!(
                validate_as(&felix(input.clone()), "rack-a").is_empty(),
                "{input}"
            );
        } else {
            assert_eq!(errs, vec![], "{input}");
        }
    }
}

#[test]
fn felix_defaults_mirror_calico() {
    let mut spec = FelixConfigurationSpec::default();
    spec.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(
        serde_json::to_value(&spec).expect("encodes"),
        json!({
            "bpfConnectTimeLoadBalancing": "TCP",
            "bpfHostNetworkedNATWithoutCTLB": "Enabled",
            "bpfLogLevel": "",
            "floatingIPs": "Disabled",
            "nftablesFlowTableOffload": "Disabled",
            "nftablesMode": "Auto",
        })
    );
    assert_eq!(validate_as(&spec, "default"), vec![]);

    // The deprecated boolean overrides both CTLB settings.
    let mut spec = felix(
        json!({"bpfConnectTimeLoadBalancingEnabled": false, "bpfConnectTimeLoadBalancing": "TCP"}),
    );
    spec.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(
        spec.bpf_connect_time_load_balancing.as_deref(),
        Some("Disabled")
    );
    assert_eq!(
        spec.bpf_host_networked_nat_without_ctlb.as_deref(),
        Some("Disabled")
    );
    let mut spec = felix(json!({"bpfConnectTimeLoadBalancingEnabled": true}));
    spec.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(
        spec.bpf_connect_time_load_balancing.as_deref(),
        Some("Enabled")
    );
}

#[test]
fn felix_defaults_render_like_go() {
    let mut spec = felix(json!({
        "routeRefreshInterval": "90s",
        "iptablesLockProbeInterval": "50ms",
        "xdpRefreshInterval": "1h",
        "reportingInterval": "0",
        "ipsetsRefreshInterval": "1500ms",
        "healthTimeoutOverrides": [{"name": "x", "timeout": "120s"}],
        "chainInsertMode": "",
        "failsafeInboundHostPorts": [{"protocol": "", "port": 22, "net": ""}],
        "bpfLogLevel": "Debug",
    }));
    spec.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(spec.route_refresh_interval.as_deref(), Some("1m30s"));
    assert_eq!(spec.iptables_lock_probe_interval.as_deref(), Some("50ms"));
    assert_eq!(spec.xdp_refresh_interval.as_deref(), Some("1h0m0s"));
    assert_eq!(spec.reporting_interval.as_deref(), Some("0s"));
    assert_eq!(spec.ipsets_refresh_interval.as_deref(), Some("1.5s"));
    assert_eq!(
        spec.health_timeout_overrides
            .as_ref()
            .map(|h| h[0].timeout.as_str()),
        Some("2m0s")
    );
    assert_eq!(spec.chain_insert_mode, None);
    assert_eq!(
        spec.failsafe_inbound_host_ports,
        Some(vec![ProtoPort {
            protocol: None,
            port: 22,
            net: None
        }])
    );
    assert_eq!(spec.bpf_log_level.as_deref(), Some("Debug"));
    // Calico stores 1500ms as "1.5s", which its CRD pattern then rejects.
    let errs = validate_as(&spec, "default");
    assert_eq!(
        errs.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["spec.ipsetsRefreshInterval"]
    );
    // Empty override lists are dropped (a plain Go slice with omitempty)...
    let mut spec = felix(json!({"healthTimeoutOverrides": [], "failsafeOutboundHostPorts": []}));
    spec.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(spec.health_timeout_overrides, None);
    // ...but an empty failsafe list is meaningful ("no failsafe ports") and kept.
    assert_eq!(spec.failsafe_outbound_host_ports, Some(vec![]));
}

#[test]
fn go_durations_parse_and_render_like_go() {
    for (input, ns) in [
        ("0", 0),
        ("0s", 0),
        ("+5s", 5_000_000_000),
        ("-1.5h", -5_400_000_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("1h2m3s4ms5us6ns", 3_723_004_005_006),
        ("1\u{b5}s", 1_000),
        ("1\u{3bc}s", 1_000),
        ("9223372036854775807ns", i64::MAX),
        ("-9223372036854775808ns", i64::MIN),
        ("2562047h", 9_223_369_200_000_000_000),
    ] {
        assert_eq!(parse_go_duration(input), Ok(ns), "{input}");
    }
    for bad in [
        "",
        "5",
        "s",
        ".s",
        "1.5",
        "1d",
        "1 s",
        "--1s",
        "9223372036854775808ns",
        "2562048h",
        "1s2",
    ] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?} should not parse");
    }
    for (ns, text) in [
        (0, "0s"),
        (1, "1ns"),
        (1_500, "1.5\u{b5}s"),
        (1_500_000, "1.5ms"),
        (500_000_000, "500ms"),
        (90_000_000_000, "1m30s"),
        (3_600_000_000_000, "1h0m0s"),
        (-1_500_000_000, "-1.5s"),
        (i64::MIN, "-2562047h47m16.854775808s"),
    ] {
        assert_eq!(format_go_duration(ns), text, "{ns}");
    }
}

#[test]
fn regexp_syntax_follows_re2() {
    for ok in [
        "^((en|wl|ww|sl|ib)[Pcopsvx].*|(eth|wlan|wwan).*)",
        "(?i)foo",
        "(?i:a)(?-s:b)",
        "(?P<name>a)(?<other>b)",
        "a{2,3}b{2,}c{4}",
        "x{",
        "x{a}",
        "[[:alpha:]_-]+",
        "[]a]",
        "[^]a]",
        "\\d+\\.\\d*\\pL\\p{Greek}",
        "\\x41\\x{263a}\\101",
        "\\Q*+?\\E",
        "a*?b+?c??",
        "^*",
        "()",
        "a|",
    ] {
        assert_eq!(re2_syntax(ok), Ok(()), "{ok}");
    }
    for bad in [
        "(",
        ")",
        "[a",
        "a**",
        "a+*",
        "*a",
        "a|*",
        "(*)",
        "a{2,1}",
        "a{1001}",
        "\\",
        "\\y",
        "\\1",
        "[z-a]",
        "(?x)",
        "(?i-)",
        "[[:foo:]]",
        "(?P<>a)",
        "\\xZZ",
    ] {
        assert!(re2_syntax(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn bpf_conntrack_timeout_pattern() {
    for ok in [
        "Auto", "10s", "1h", "1.5s", "500ms", "100us", "1m30s", ".5s", "s",
    ] {
        assert!(is_bpf_conntrack_timeout(ok), "{ok}");
    }
    for bad in ["", "auto", "10", "1d", "1.5", "-1s", "1 s", "1ns"] {
        assert!(!is_bpf_conntrack_timeout(bad), "{bad}");
    }
}

const FULL_KCC: &str = r#"{
    "logSeverityScreen": "Info",
    "healthChecks": "Enabled",
    "etcdV3CompactionPeriod": "10m0s",
    "prometheusMetricsPort": 9094,
    "debugProfilePort": 6060,
    "controllers": {
        "node": {
            "reconcilerPeriod": "5m0s",
            "syncLabels": "Enabled",
            "leakGracePeriod": "15m0s",
            "hostEndpoint": {
                "autoCreate": "Enabled",
                "createDefaultHostEndpoint": "Disabled",
                "templates": [{
                    "generateName": "custom",
                    "interfaceCIDRs": ["10.0.0.0/8"],
                    "interfacePattern": "^eth",
                    "labels": {"env": "prod"},
                    "annotations": {"example.com/note": "x"},
                    "nodeSelector": "has(gpu)"
                }]
            }
        },
        "policy": {"reconcilerPeriod": "5m0s"},
        "workloadEndpoint": {"reconcilerPeriod": "5m0s"},
        "serviceAccount": {"reconcilerPeriod": "5m0s"},
        "namespace": {"reconcilerPeriod": "5m0s"},
        "loadBalancer": {"assignIPs": "RequestedServicesOnly"},
        "migration": {"policyNameMigrator": "Disabled"}
    }
}"#;

#[test]
fn kcc_full_sample_is_accepted_and_round_trips() {
    let spec: KubeControllersConfigurationSpec = serde_json::from_str(FULL_KCC).expect("decodes");
    assert_eq!(validate_as(&spec, "default"), vec![]);
    let original: Value = serde_json::from_str(FULL_KCC).expect("json");
    assert_eq!(serde_json::to_value(&spec).expect("encodes"), original);
    let mut defaulted = spec.clone();
    defaulted.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(
        defaulted, spec,
        "a fully specified, canonical spec is unchanged by defaulting"
    );
}

#[test]
fn kcc_defaults_mirror_calico() {
    let mut spec = kcc(json!({}));
    spec.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(
        serde_json::to_value(&spec).expect("encodes"),
        json!({"healthChecks": "Enabled", "prometheusMetricsPort": 9094, "controllers": {}})
    );
    let mut spec = kcc(json!({
        "etcdV3CompactionPeriod": "600s",
        "controllers": {"node": {"reconcilerPeriod": "300s"}, "loadBalancer": {}, "migration": {}, "policy": {}}
    }));
    spec.apply_defaults(&mut ObjectMeta::named("default", None));
    assert_eq!(
        serde_json::to_value(&spec).expect("encodes"),
        json!({
            "healthChecks": "Enabled",
            "etcdV3CompactionPeriod": "10m0s",
            "prometheusMetricsPort": 9094,
            "controllers": {
                "node": {"reconcilerPeriod": "5m0s", "leakGracePeriod": "15m0s"},
                "policy": {},
                "loadBalancer": {"assignIPs": "AllServices"},
                "migration": {"policyNameMigrator": "Enabled"}
            }
        })
    );
    assert_eq!(validate_as(&spec, "default"), vec![]);
}

#[test]
fn kcc_unknown_fields_are_rejected() {
    for v in [
        json!({"logLevel": "Info"}),
        json!({"controllers": {"nodes": {}}}),
        json!({"controllers": {"node": {"hostEndpoint": {"autoCreate": "Enabled", "template": []}}}}),
        json!({"controllers": {"policy": {"reconcilePeriod": "5m"}}}),
    ] {
        let err = serde_json::from_value::<KubeControllersConfigurationSpec>(v.clone())
            .expect_err("must fail");
        assert!(err.to_string().contains("unknown field"), "{v}: {err}");
    }
}

#[test]
fn kcc_invalid_values_name_the_field() {
    let template =
        |t: Value| json!({"controllers": {"node": {"hostEndpoint": {"templates": [t]}}}});
    let cases = [
        (
            json!({"logSeverityScreen": "Trace"}),
            "spec.logSeverityScreen",
        ),
        (json!({"healthChecks": "On"}), "spec.healthChecks"),
        (
            json!({"prometheusMetricsPort": 70000}),
            "spec.prometheusMetricsPort",
        ),
        (json!({"debugProfilePort": -1}), "spec.debugProfilePort"),
        (
            json!({"etcdV3CompactionPeriod": "10"}),
            "spec.etcdV3CompactionPeriod",
        ),
        (
            json!({"controllers": {"node": {"syncLabels": "yes"}}}),
            "spec.controllers.node.syncLabels",
        ),
        (
            json!({"controllers": {"node": {"leakGracePeriod": "soon"}}}),
            "spec.controllers.node.leakGracePeriod",
        ),
        (
            json!({"controllers": {"node": {"hostEndpoint": {"autoCreate": "enabled"}}}}),
            "spec.controllers.node.hostEndpoint.autoCreate",
        ),
        (
            json!({"controllers": {"node": {"hostEndpoint": {"createDefaultHostEndpoint": "Yes"}}}}),
            "spec.controllers.node.hostEndpoint.createDefaultHostEndpoint",
        ),
        (
            template(json!({"interfacePattern": "eth0"})),
            "spec.controllers.node.hostEndpoint.templates[0].generateName",
        ),
        (
            template(json!({"generateName": "Bad_Name", "interfacePattern": "eth0"})),
            "spec.controllers.node.hostEndpoint.templates[0].generateName",
        ),
        (
            template(json!({"generateName": "a"})),
            "spec.controllers.node.hostEndpoint.templates[0].interfaceCIDRs",
        ),
        (
            template(json!({"generateName": "a", "interfaceCIDRs": ["10.0.0.0/40"]})),
            "spec.controllers.node.hostEndpoint.templates[0].interfaceCIDRs[0]",
        ),
        (
            template(json!({"generateName": "a", "interfacePattern": "("})),
            "spec.controllers.node.hostEndpoint.templates[0].interfacePattern",
        ),
        (
            template(
                json!({"generateName": "a", "interfacePattern": "x", "labels": {"bad key": "v"}}),
            ),
            "spec.controllers.node.hostEndpoint.templates[0].labels.bad key",
        ),
        (
            template(
                json!({"generateName": "a", "interfacePattern": "x", "nodeSelector": "has(("}),
            ),
            "spec.controllers.node.hostEndpoint.templates[0].nodeSelector",
        ),
        (
            json!({"controllers": {"node": {"hostEndpoint": {"templates": [
                {"generateName": "a", "interfacePattern": "x"},
                {"generateName": "a", "interfacePattern": "y"}
            ]}}}}),
            "spec.controllers.node.hostEndpoint.templates[1].generateName",
        ),
        (
            json!({"controllers": {"namespace": {"reconcilerPeriod": "1"}}}),
            "spec.controllers.namespace.reconcilerPeriod",
        ),
        (
            json!({"controllers": {"loadBalancer": {"assignIPs": "Some"}}}),
            "spec.controllers.loadBalancer.assignIPs",
        ),
        (
            json!({"controllers": {"migration": {"policyNameMigrator": "on"}}}),
            "spec.controllers.migration.policyNameMigrator",
        ),
    ];
    for (input, path) in cases {
        let errs = validate_as(&kcc(input.clone()), "default");
        assert_error_at(&errs, path, &input);
    }
}
