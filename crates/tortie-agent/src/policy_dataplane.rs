//! The policy dataplane boundary: the main loop hands it a whole desired
//! [`DataplaneModel`]; the implementation makes the kernel match (incrementally) and can check
//! that nobody changed its rules since. Calls are blocking (they run `nft`), so the loop runs
//! them on a blocking thread.

use std::fmt;
use std::sync::{Arc, Mutex};

use tortie_calc::dataplane::DataplaneModel;

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyApplyReport {
    /// The whole table was (re)built rather than patched.
    pub full: bool,
    /// Size of the transaction sent to the kernel, in bytes.
    pub script_bytes: usize,
}

/// Programs policy into the kernel.
pub trait PolicyDataplane: Send + fmt::Debug {
    /// Makes the kernel match `model`.
    fn apply(&mut self, model: &DataplaneModel) -> Result<PolicyApplyReport, String>;
    /// Checks the kernel still holds what was last applied; restores it if not. `Ok(true)`
    /// when something had to be restored.
    fn check_drift(&mut self) -> Result<bool, String>;
}

/// Does nothing (agents in tests that only look at routes).
#[derive(Debug, Clone, Default)]
pub struct NoPolicy;

impl PolicyDataplane for NoPolicy {
    fn apply(&mut self, _model: &DataplaneModel) -> Result<PolicyApplyReport, String> {
        Ok(PolicyApplyReport::default())
    }

    fn check_drift(&mut self) -> Result<bool, String> {
        Ok(false)
    }
}

/// Records every model it is given.
#[derive(Debug, Clone, Default)]
pub struct RecordingPolicy {
    pub applied: Arc<Mutex<Vec<DataplaneModel>>>,
}

impl PolicyDataplane for RecordingPolicy {
    fn apply(&mut self, model: &DataplaneModel) -> Result<PolicyApplyReport, String> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(model.clone());
        Ok(PolicyApplyReport::default())
    }

    fn check_drift(&mut self) -> Result<bool, String> {
        Ok(false)
    }
}

/// The real policy dataplane: the `inet tortie` nftables table in the host namespace.
#[derive(Debug)]
pub struct NftPolicy {
    manager: tortie_dataplane::NftManager<tortie_dataplane::NftCommand>,
}

impl NftPolicy {
    /// Programs the namespace at `host_netns`, or the agent's own when `None`.
    pub fn new(host_netns: Option<&std::path::Path>) -> Self {
        let runner = match host_netns {
            Some(p) => tortie_dataplane::NftCommand::in_netns(p),
            None => tortie_dataplane::NftCommand::new(),
        };
        NftPolicy {
            manager: tortie_dataplane::NftManager::new(runner),
        }
    }
}

impl PolicyDataplane for NftPolicy {
    fn apply(&mut self, model: &DataplaneModel) -> Result<PolicyApplyReport, String> {
        let stats = self
            .manager
            .apply(model)
            .map_err(|e| crate::dataplane::error_chain(&e))?;
        Ok(PolicyApplyReport {
            full: stats.mode == tortie_dataplane::ApplyMode::Full || stats.retried_full,
            script_bytes: stats.script.len(),
        })
    }

    fn check_drift(&mut self) -> Result<bool, String> {
        self.manager
            .check_drift()
            .map_err(|e| crate::dataplane::error_chain(&e))
    }
}
