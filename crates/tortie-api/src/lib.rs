//! tortie's resource model: Calico `projectcalico.org/v3` kinds, Kubernetes NetworkPolicy,
//! the core/v1 inputs policy selects on and core/v1 Secrets (BGP passwords); defaulting and
//! validation as Calico does them; and a YAML/JSON codec whose errors name the file,
//! document, field path and value.
//!
//! Pure: no I/O.

pub mod bgp;
pub mod codec;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod ipam;
pub mod k8s;
pub mod kind;
pub mod meta;
pub mod numorstring;
pub mod policy;
pub mod resource;
pub mod rule;
pub mod secret;
pub mod validate;

pub use codec::{Format, decode, encode};
pub use error::{DecodeError, FieldError, Origin};
pub use kind::Kind;
pub use meta::ObjectMeta;
pub use resource::{Object, Resource, WithSpec};
