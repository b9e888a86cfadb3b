//! TEMPORARY STUB (lead): replaced by the full FelixConfiguration module.
use serde::{Deserialize, Serialize};
use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::resource::CalicoSpec;
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FelixConfigurationSpec {}
impl CalicoSpec for FelixConfigurationSpec { const KIND: Kind = Kind::FelixConfiguration; fn validate(&self, _m: &ObjectMeta, _e: &mut Errors) {} }
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KubeControllersConfigurationSpec {}
impl CalicoSpec for KubeControllersConfigurationSpec { const KIND: Kind = Kind::KubeControllersConfiguration; fn validate(&self, _m: &ObjectMeta, _e: &mut Errors) {} }
