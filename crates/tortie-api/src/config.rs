//! Calico's configuration kinds: `FelixConfiguration` and `KubeControllersConfiguration`.
//!
//! Both mirror Calico v3's Go types field for field (JSON names included) and reject unknown
//! fields. Defaulting reproduces what Calico stores on create/update (libcalico-go's explicit
//! defaults, the CRD schema defaults and Go's JSON round trip); validation reproduces the Go
//! validators plus the CRD schema rules that calicoctl applies.
//!
//! Layout:
//! * `config/felix.rs`: [`FelixConfigurationSpec`] and its nested types, defaulting;
//! * `config/felix_validate.rs`: its validation;
//! * `config/kube.rs`: [`KubeControllersConfigurationSpec`] and its nested types;
//! * `config/checks.rs`: shared checks (Go durations, RE2 syntax, enums, ranges).

mod checks;
mod felix;
mod felix_validate;
mod kube;
#[cfg(test)]
mod tests;

pub use checks::{format_go_duration, parse_go_duration};
pub use felix::{
    BPFConntrackTimeouts, Dscp, FelixConfigurationSpec, HealthTimeoutOverride, ProtoPort,
    RouteTableIDRange, RouteTableRange,
};
pub use kube::{
    AutoHostEndpointConfig, ControllersConfig, HostEndpointTemplate,
    KubeControllersConfigurationSpec, LoadBalancerControllerConfig, MigrationControllerConfig,
    NamespaceControllerConfig, NodeControllerConfig, PolicyControllerConfig, ReconcilerConfig,
    ServiceAccountControllerConfig, WorkloadEndpointControllerConfig,
};
