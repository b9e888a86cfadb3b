//! Validation of [`FelixConfigurationSpec`], mirroring Calico: the Go `validate` tags and
//! `validateFelixConfigSpec` (libcalico-go `validator/v3`) plus the CRD schema's patterns,
//! enums, bounds and CEL rules, which calicoctl also enforces.
//!
//! Calico leaves many numeric fields unchecked (MTUs, `vxlanPort`, `vxlanVNI`, `healthPort`,
//! map sizes...), so they are unchecked here too; Felix rejects bad values when it loads them.

use super::checks::{self, DurationRule as D, go_str};
use super::felix::{FelixConfigurationSpec, ProtoPort};
use crate::error::Errors;
use crate::meta::ObjectMeta;
use crate::numorstring::Port;
use crate::validate;

/// Highest Linux route-table index `routeTableRanges` may target (`routeTableMaxLinux`).
const ROUTE_TABLE_MAX_INDEX: i64 = 0xffff_ffff;
/// Most tables `routeTableRanges` may designate in total (`routeTableRangeMaxTables`).
const ROUTE_TABLE_MAX_TABLES: i64 = 0xffff;
/// `OpenstackRegion` becomes part of a namespace name `openstack-region-<region>` (63 max).
const OPENSTACK_REGION_MAX: usize = 63 - "openstack-region-".len();

const LOG_LEVELS: &[&str] = &["Trace", "Debug", "Info", "Warning", "Error", "Fatal"];
const ENABLED_DISABLED: &[&str] = &["Enabled", "Disabled"];

impl FelixConfigurationSpec {
    /// Validates the spec; `errs` is positioned at `spec`.
    pub(super) fn check(&self, meta: &ObjectMeta, errs: &mut Errors) {
        self.check_durations(errs);
        self.check_enums(errs);
        self.check_numbers(errs);
        self.check_strings(meta, errs);
        self.check_addresses(errs);
        self.check_ports(errs);
        self.check_route_tables(errs);
        self.check_bpf(errs);
    }

    fn check_durations(&self, errs: &mut Errors) {
        for (field, value, rule) in [
            (
                "dataplaneWatchdogTimeout",
                self.dataplane_watchdog_timeout.as_deref(),
                D::Any,
            ),
            (
                "routeRefreshInterval",
                self.route_refresh_interval.as_deref(),
                D::Whole,
            ),
            (
                "interfaceRefreshInterval",
                self.interface_refresh_interval.as_deref(),
                D::Whole,
            ),
            (
                "iptablesRefreshInterval",
                self.iptables_refresh_interval.as_deref(),
                D::Whole,
            ),
            (
                "iptablesPostWriteCheckInterval",
                self.iptables_post_write_check_interval.as_deref(),
                D::Whole,
            ),
            (
                "iptablesLockProbeInterval",
                self.iptables_lock_probe_interval.as_deref(),
                D::Whole,
            ),
            (
                "ipsetsRefreshInterval",
                self.ipsets_refresh_interval.as_deref(),
                D::Whole,
            ),
            (
                "xdpRefreshInterval",
                self.xdp_refresh_interval.as_deref(),
                D::Whole,
            ),
            ("netlinkTimeout", self.netlink_timeout.as_deref(), D::Whole),
            (
                "reportingInterval",
                self.reporting_interval.as_deref(),
                D::Whole,
            ),
            ("reportingTTL", self.reporting_ttl.as_deref(), D::Whole),
            (
                "endpointReportingDelay",
                self.endpoint_reporting_delay.as_deref(),
                D::Whole,
            ),
            (
                "usageReportingInitialDelay",
                self.usage_reporting_initial_delay.as_deref(),
                D::Whole,
            ),
            (
                "usageReportingInterval",
                self.usage_reporting_interval.as_deref(),
                D::Whole,
            ),
            (
                "debugSimulateCalcGraphHangAfter",
                self.debug_simulate_calc_graph_hang_after.as_deref(),
                D::Whole,
            ),
            (
                "debugSimulateDataplaneHangAfter",
                self.debug_simulate_dataplane_hang_after.as_deref(),
                D::Whole,
            ),
            (
                "debugSimulateDataplaneApplyDelay",
                self.debug_simulate_dataplane_apply_delay.as_deref(),
                D::Whole,
            ),
            (
                "nftablesRefreshInterval",
                self.nftables_refresh_interval.as_deref(),
                D::Any,
            ),
            (
                "bpfIPFragTimeout",
                self.bpf_ip_frag_timeout.as_deref(),
                D::Whole,
            ),
            (
                "bpfKubeProxyMinSyncPeriod",
                self.bpf_kube_proxy_min_sync_period.as_deref(),
                D::Whole,
            ),
            (
                "flowLogsFlushInterval",
                self.flow_logs_flush_interval.as_deref(),
                D::Whole,
            ),
            (
                "liveMigrationRouteConvergenceTime",
                self.live_migration_route_convergence_time.as_deref(),
                D::Decimal,
            ),
            (
                "wireguardKeepAlive",
                self.wireguard_keep_alive.as_deref(),
                D::Whole,
            ),
            (
                "localSubnetL2ReachabilityRefreshInterval",
                self.local_subnet_l2_reachability_refresh_interval
                    .as_deref(),
                D::Any,
            ),
        ] {
            checks::duration(errs, field, value, rule);
        }
        errs.at("healthTimeoutOverrides", |errs| {
            for (i, o) in self.health_timeout_overrides.iter().flatten().enumerate() {
                errs.idx(i, |errs| {
                    let name_ok = !o.name.is_empty()
                        && o.name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ' ' | '-'));
                    if !name_ok {
                        errs.add("name", &o.name, "must match ^[a-zA-Z0-9_ -]+$");
                    }
                    checks::duration(errs, "timeout", Some(&o.timeout), D::NonNegative);
                });
            }
        });
    }

    fn check_enums(&self, errs: &mut Errors) {
        type Table<'a> = [(&'static str, &'a Option<String>, &'static [&'static str])];
        // Pointer-typed fields: any value present, "" included, must be in the CRD enum.
        let pointers: &Table<'_> = &[
            (
                "iptablesBackend",
                &self.iptables_backend,
                &["Legacy", "NFT", "Auto"],
            ),
            (
                "prometheusMetricsClientAuth",
                &self.prometheus_metrics_client_auth,
                &[
                    "RequireAndVerifyClientCert",
                    "RequireAnyClientCert",
                    "VerifyClientCertIfGiven",
                    "NoClientCert",
                ],
            ),
            (
                "natOutgoingExclusions",
                &self.nat_outgoing_exclusions,
                &["IPPoolsOnly", "IPPoolsAndHostIPs"],
            ),
            (
                "programClusterRoutes",
                &self.program_cluster_routes,
                &[
                    "Enabled",
                    "Disabled",
                    "EnabledIPIPOnly",
                    "EnabledNoEncapOnly",
                ],
            ),
            (
                "nftablesMode",
                &self.nftables_mode,
                &["Disabled", "Enabled", "Auto"],
            ),
            (
                "nftablesFlowTableOffload",
                &self.nftables_flow_table_offload,
                &["All", "Disabled"],
            ),
            (
                "bpfOverlayHostSourceIP",
                &self.bpf_overlay_host_source_ip,
                &["TunnelAddress", "HostAddress"],
            ),
            (
                "bpfJITHardening",
                &self.bpf_jit_hardening,
                &["Auto", "Strict"],
            ),
            (
                "bpfConntrackMode",
                &self.bpf_conntrack_mode,
                &["Auto", "Userspace", "BPFProgram"],
            ),
            (
                "bpfConnectTimeLoadBalancing",
                &self.bpf_connect_time_load_balancing,
                &["TCP", "Enabled", "Disabled"],
            ),
            (
                "bpfHostNetworkedNATWithoutCTLB",
                &self.bpf_host_networked_nat_without_ctlb,
                ENABLED_DISABLED,
            ),
            (
                "istioAmbientMode",
                &self.istio_ambient_mode,
                ENABLED_DISABLED,
            ),
            (
                "flowLogsPolicyEvaluationMode",
                &self.flow_logs_policy_evaluation_mode,
                &["None", "Continuous"],
            ),
            (
                "bpfAttachType",
                &self.bpf_attach_type,
                &["TC", "TCX", "Netkit"],
            ),
            (
                "flowLogsLocalReporter",
                &self.flow_logs_local_reporter,
                &["Disabled", "Enabled"],
            ),
            (
                "awsSrcDstCheck",
                &self.aws_src_dst_check,
                &["DoNothing", "Enable", "Disable"],
            ),
            ("floatingIPs", &self.floating_ips, ENABLED_DISABLED),
            (
                "localSubnetL2Reachability",
                &self.local_subnet_l2_reachability,
                &["Disabled", "PodsAndLoadBalancers"],
            ),
            (
                "windowsManageFirewallRules",
                &self.windows_manage_firewall_rules,
                ENABLED_DISABLED,
            ),
        ];
        for &(field, value, allowed) in pointers {
            checks::one_of(errs, field, value.as_deref(), allowed);
        }

        // Plain `string` fields ("" means unset), exact spelling.
        let plain: &Table<'_> = &[
            ("ipForwarding", &self.ip_forwarding, ENABLED_DISABLED),
            (
                "bpfConntrackLogLevel",
                &self.bpf_conntrack_log_level,
                &["Off", "Debug"],
            ),
            (
                "bpfRedirectToPeer",
                &self.bpf_redirect_to_peer,
                ENABLED_DISABLED,
            ),
            ("bpfProfiling", &self.bpf_profiling, ENABLED_DISABLED),
            (
                "serviceLoopPrevention",
                &self.service_loop_prevention,
                &["Drop", "Reject", "Disabled"],
            ),
            (
                "workloadSourceSpoofing",
                &self.workload_source_spoofing,
                &["Disabled", "Any"],
            ),
        ];
        for &(field, value, allowed) in plain {
            checks::one_of(errs, field, go_str(value), allowed);
        }

        // Plain `string` fields with case-insensitive CRD patterns `^(?i)(A|B)?$`.
        let insensitive: &Table<'_> = &[
            (
                "chainInsertMode",
                &self.chain_insert_mode,
                &["Insert", "Append"],
            ),
            (
                "defaultEndpointToHostAction",
                &self.default_endpoint_to_host_action,
                &["Drop", "Accept", "Return"],
            ),
            (
                "iptablesFilterAllowAction",
                &self.iptables_filter_allow_action,
                &["Accept", "Return"],
            ),
            (
                "iptablesMangleAllowAction",
                &self.iptables_mangle_allow_action,
                &["Accept", "Return"],
            ),
            (
                "iptablesFilterDenyAction",
                &self.iptables_filter_deny_action,
                &["Drop", "Reject"],
            ),
            ("logSeverityFile", &self.log_severity_file, LOG_LEVELS),
            ("logSeverityScreen", &self.log_severity_screen, LOG_LEVELS),
            ("logSeveritySys", &self.log_severity_sys, LOG_LEVELS),
            (
                "nftablesFilterAllowAction",
                &self.nftables_filter_allow_action,
                &["Accept", "Return"],
            ),
            (
                "nftablesMangleAllowAction",
                &self.nftables_mangle_allow_action,
                &["Accept", "Return"],
            ),
            (
                "nftablesFilterDenyAction",
                &self.nftables_filter_deny_action,
                &["Drop", "Reject"],
            ),
            (
                "bpfLogLevel",
                &self.bpf_log_level,
                &["Off", "Info", "Debug"],
            ),
            (
                "bpfExternalServiceMode",
                &self.bpf_external_service_mode,
                &["Tunnel", "DSR"],
            ),
            (
                "bpfMapSizeConntrackScaling",
                &self.bpf_map_size_conntrack_scaling,
                &["Disabled", "DoubleIfFull"],
            ),
            (
                "bpfEnforceRPF",
                &self.bpf_enforce_rpf,
                &["Disabled", "Strict", "Loose"],
            ),
            (
                "routeSource",
                &self.route_source,
                &["WorkloadIPs", "CalicoIPAM"],
            ),
        ];
        for &(field, value, allowed) in insensitive {
            checks::one_of_ci(errs, field, go_str(value), allowed);
        }
    }

    fn check_numbers(&self, errs: &mut Errors) {
        const U32_MAX: i64 = 0xffff_ffff;
        const ROUTE_PRIORITY_MAX: i64 = 2_147_483_646;
        for (field, value, min, max) in [
            (
                "logActionRateLimitBurst",
                self.log_action_rate_limit_burst,
                0,
                9999,
            ),
            ("iptablesMarkMask", self.iptables_mark_mask, 0, U32_MAX),
            ("nftablesMarkMask", self.nftables_mark_mask, 0, U32_MAX),
            ("debugPort", self.debug_port, 0, 65535),
            (
                "bpfExtToServiceConnmark",
                self.bpf_ext_to_service_connmark,
                0,
                U32_MAX,
            ),
            (
                "bpfKubeProxyHealthzPort",
                self.bpf_kube_proxy_healthz_port,
                0,
                65535,
            ),
            (
                "bpfMapSizeConntrackCleanupQueue",
                self.bpf_map_size_conntrack_cleanup_queue,
                1,
                i64::MAX,
            ),
            (
                "ipv4NormalRoutePriority",
                self.ipv4_normal_route_priority,
                1,
                ROUTE_PRIORITY_MAX,
            ),
            (
                "ipv4ElevatedRoutePriority",
                self.ipv4_elevated_route_priority,
                1,
                ROUTE_PRIORITY_MAX,
            ),
            (
                "ipv6NormalRoutePriority",
                self.ipv6_normal_route_priority,
                1,
                ROUTE_PRIORITY_MAX,
            ),
            (
                "ipv6ElevatedRoutePriority",
                self.ipv6_elevated_route_priority,
                1,
                ROUTE_PRIORITY_MAX,
            ),
            (
                "wireguardListeningPort",
                self.wireguard_listening_port,
                1,
                65535,
            ),
            (
                "wireguardListeningPortV6",
                self.wireguard_listening_port_v6,
                1,
                65535,
            ),
            (
                "wireguardRoutingRulePriority",
                self.wireguard_routing_rule_priority,
                1,
                32765,
            ),
            ("goGCThreshold", self.go_gc_threshold, -1, i64::MAX),
            ("goMemoryLimitMB", self.go_memory_limit_mb, -1, i64::MAX),
            ("goMaxProcs", self.go_max_procs, -1, i64::MAX),
            (
                "bpfMaglevMaxEndpointsPerService",
                self.bpf_maglev_max_endpoints_per_service,
                1,
                3000,
            ),
            (
                "bpfMaglevMaxServices",
                self.bpf_maglev_max_services,
                1,
                3000,
            ),
        ] {
            checks::int_range(errs, field, value, min, max);
        }
    }

    fn check_strings(&self, meta: &ObjectMeta, errs: &mut Errors) {
        if let Some(sel) = self.node_selector.as_deref() {
            checks::max_len(errs, "nodeSelector", Some(sel), 1024);
            if meta.name == "default" || meta.name.starts_with("node.") {
                errs.add(
                    "nodeSelector",
                    sel,
                    "nodeSelector must not be set on the 'default' or per-node ('node.*') FelixConfiguration",
                );
            }
        }

        checks::key_value_list(
            errs,
            "featureDetectOverride",
            go_str(&self.feature_detect_override),
            |v| matches!(v, "true" | "false" | ""),
            "true|false|<empty>",
        );
        checks::key_value_list(
            errs,
            "featureGates",
            go_str(&self.feature_gates),
            |v| !v.is_empty() && !v.contains('='),
            "value",
        );

        if let Some(region) = go_str(&self.openstack_region) {
            if region.len() > OPENSTACK_REGION_MAX {
                errs.add(
                    "openstackRegion",
                    region,
                    format!("is too long (at most {OPENSTACK_REGION_MAX} characters)"),
                );
            } else if !validate::is_dns1123_label(region) {
                errs.add("openstackRegion", region, "must be a valid DNS label");
            }
        }

        if let Some(p) = go_str(&self.log_prefix)
            && !p.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '%' | ':' | ' ' | '/' | '_' | '-')
            })
        {
            errs.add(
                "logPrefix",
                p,
                "may contain only letters, digits and the characters % : / _ - and space",
            );
        }
        if let Some(r) = self.log_action_rate_limit.as_deref()
            && !is_rate_limit(r)
        {
            errs.add(
                "logActionRateLimit",
                r,
                "must be N/unit with N in 1-9999 and unit one of second, minute, hour, day (e.g. 10/second)",
            );
        }

        for (field, value) in [
            ("logDebugFilenameRegex", &self.log_debug_filename_regex),
            (
                "nftablesFlowTableDataIfacePattern",
                &self.nftables_flow_table_data_iface_pattern,
            ),
            ("bpfDataIfacePattern", &self.bpf_data_iface_pattern),
            ("bpfL3IfacePattern", &self.bpf_l3_iface_pattern),
            ("bpfDisableGROForIfaces", &self.bpf_disable_gro_for_ifaces),
            ("mtuIfacePattern", &self.mtu_iface_pattern),
        ] {
            checks::regexp(errs, field, go_str(value));
        }

        if let Some(f) = go_str(&self.iptables_nat_outgoing_interface_filter)
            && !checks::is_iface_filter(f)
        {
            errs.add(
                "iptablesNATOutgoingInterfaceFilter",
                f,
                "must be 1-15 letters, digits or the characters : . _ + - ('+' is a wildcard)",
            );
        }
        for (field, value) in [
            ("wireguardInterfaceName", &self.wireguard_interface_name),
            (
                "wireguardInterfaceNameV6",
                &self.wireguard_interface_name_v6,
            ),
        ] {
            if let Some(name) = go_str(value)
                && !checks::is_interface(name)
            {
                errs.add(
                    field,
                    name,
                    "must be 1-15 letters, digits or the characters _ . -",
                );
            }
        }
        if let Some(host) = go_str(&self.prometheus_metrics_host)
            && !checks::is_prometheus_host(host)
        {
            errs.add(
                "prometheusMetricsHost",
                host,
                "must be an IP address or host name of 1-64 letters, digits or the characters : . _ + -",
            );
        }
    }

    fn check_addresses(&self, errs: &mut Errors) {
        for (field, value, v6) in [
            ("natOutgoingAddress", &self.nat_outgoing_address, false),
            (
                "deviceRouteSourceAddress",
                &self.device_route_source_address,
                false,
            ),
            (
                "deviceRouteSourceAddressIPv6",
                &self.device_route_source_address_ipv6,
                true,
            ),
        ] {
            let value = go_str(value);
            checks::max_len(errs, field, value, 45);
            checks::ip_of_family(errs, field, value, v6);
        }
        checks::cidr_list(
            errs,
            "externalNodesList",
            self.external_nodes_list.as_deref(),
            true,
        );
        checks::cidr_list(
            errs,
            "bpfDSROptoutCIDRs",
            self.bpf_dsr_optout_cidrs.as_deref(),
            false,
        );
        checks::cidr_list(
            errs,
            "bpfExcludeCIDRsFromNAT",
            self.bpf_exclude_cidrs_from_nat.as_deref(),
            false,
        );
    }

    fn check_ports(&self, errs: &mut Errors) {
        for (field, list) in [
            (
                "failsafeInboundHostPorts",
                &self.failsafe_inbound_host_ports,
            ),
            (
                "failsafeOutboundHostPorts",
                &self.failsafe_outbound_host_ports,
            ),
        ] {
            errs.at(field, |errs| {
                for (i, p) in list.iter().flatten().enumerate() {
                    errs.idx(i, |errs| check_proto_port(p, errs));
                }
            });
        }

        if let Some(ranges) = &self.kube_node_port_ranges {
            if ranges.len() > 7 {
                errs.add(
                    "kubeNodePortRanges",
                    ranges.len(),
                    "node port ranges list is too long (max 7)",
                );
            }
            errs.at("kubeNodePortRanges", |errs| {
                for (i, p) in ranges.iter().enumerate() {
                    errs.idx(i, |errs| {
                        if p.is_named() {
                            errs.add(
                                "",
                                p.to_string(),
                                "node port ranges should not contain named ports",
                            );
                        } else {
                            check_port(p, "", errs);
                        }
                    });
                }
            });
        }
        if let Some(p) = &self.nat_port_range {
            check_port(p, "natPortRange", errs);
        }
        if let Some(p) = &self.bpf_psnat_ports {
            check_port(p, "bpfPSNATPorts", errs);
        }
    }

    fn check_route_tables(&self, errs: &mut Errors) {
        if self.route_table_range.is_some() && self.route_table_ranges.is_some() {
            errs.missing(
                "routeTableRange",
                "routeTableRange and routeTableRanges cannot both be set",
            );
        }
        if let Some(r) = self.route_table_range
            && !(r.min >= 1 && r.max >= r.min && r.max <= 250)
        {
            errs.add(
                "routeTableRange",
                format!("{}-{}", r.min, r.max),
                "must be a range of route table indices within 1..250",
            );
        }
        let Some(ranges) = &self.route_table_ranges else {
            return;
        };
        errs.at("routeTableRanges", |errs| {
            for (i, r) in ranges.iter().enumerate() {
                errs.idx(i, |errs| {
                    let shown = format!("{}-{}", r.min, r.max);
                    if r.min < 1 {
                        errs.add("min", r.min, "cannot target indices < 1");
                    }
                    if r.min > r.max {
                        errs.add("", &shown, "min value cannot be greater than max value");
                    }
                    if r.max > ROUTE_TABLE_MAX_INDEX {
                        errs.add(
                            "max",
                            r.max,
                            format!("max index too high (at most {ROUTE_TABLE_MAX_INDEX})"),
                        );
                    }
                });
            }
        });
        let total = ranges
            .iter()
            .fold(0i64, |acc, r| acc.saturating_add(r.len()));
        if total > ROUTE_TABLE_MAX_TABLES {
            errs.add(
                "routeTableRanges",
                total,
                format!("targets too many tables (at most {ROUTE_TABLE_MAX_TABLES} in total)"),
            );
        }
    }

    fn check_bpf(&self, errs: &mut Errors) {
        if let Some(t) = &self.bpf_conntrack_timeouts {
            errs.at("bpfConntrackTimeouts", |errs| {
                for (field, value) in t.entries() {
                    if let Some(v) = value
                        && !checks::is_bpf_conntrack_timeout(v)
                    {
                        errs.add(
                            field,
                            v,
                            "must be a duration such as 30s, 1h or 500ms, or Auto",
                        );
                    }
                }
            });
        }
        if let Some(filters) = &self.bpf_log_filters {
            errs.at("bpfLogFilters", |errs| {
                for key in filters.keys() {
                    if !checks::is_interface_name(key) {
                        errs.add(
                            key,
                            key,
                            "keys must be interface names (1-15 letters, digits, '_', '.', '-'), 'all', 'weps' or 'heps'",
                        );
                    }
                }
            });
        }
        if let Some(ifaces) = &self.bpf_force_track_packets_from_ifaces {
            errs.at("bpfForceTrackPacketsFromIfaces", |errs| {
                for (i, iface) in ifaces.iter().enumerate() {
                    if !checks::is_iface_filter(iface) {
                        errs.idx(i, |errs| {
                            errs.add(
                                "",
                                iface,
                                "must be 1-15 letters, digits or the characters : . _ + - ('+' is a wildcard)",
                            );
                        });
                    }
                }
            });
        }
    }
}

/// `failsafe*HostPorts` entries. Calico's `ProtoPort` validator (TCP, UDP or SCTP) is never
/// reached for these lists, and Felix treats an empty protocol as TCP and accepts any case, so
/// an empty protocol and any capitalisation are accepted; `net` must be a CIDR or IP.
fn check_proto_port(p: &ProtoPort, errs: &mut Errors) {
    if let Some(proto) = go_str(&p.protocol)
        && !["TCP", "UDP", "SCTP"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(proto))
    {
        errs.add(
            "protocol",
            proto,
            "protocol must be 'TCP' or 'UDP' or 'SCTP'",
        );
    }
    if let Some(net) = go_str(&p.net)
        && validate::parse_cidr(net).is_none()
    {
        errs.add("net", net, "not a valid CIDR or IP address");
    }
}

/// Calico's `numorstring.Port` validator: numeric ports must be 1-65535 and ordered.
fn check_port(p: &Port, field: &str, errs: &mut Errors) {
    if let Port::Range { min, max } = *p {
        if min > max {
            errs.add(field, p.to_string(), "port range invalid");
        } else if min < 1 {
            errs.add(
                field,
                p.to_string(),
                "port range invalid, port number must be between 1 and 65535",
            );
        }
    }
}

/// CRD pattern `^[1-9]\d{0,3}/(?:second|minute|hour|day)$`.
fn is_rate_limit(s: &str) -> bool {
    let Some((n, unit)) = s.split_once('/') else {
        return false;
    };
    (1..=4).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_digit())
        && !n.starts_with('0')
        && matches!(unit, "second" | "minute" | "hour" | "day")
}
