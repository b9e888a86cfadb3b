//! [`NftManager`]: keeps the kernel's `inet tortie` table equal to the desired one.
//!
//! State: the table it last applied successfully (`None` = unknown, so the next apply is a
//! full atomic replace) and the kernel's listing right after that apply (to notice drift).
//! On start it knows nothing, so its first apply replaces whatever a previous agent left in
//! one transaction: the old rules enforce until the new ones commit.

use std::collections::BTreeMap;

use tortie_calc::dataplane::{DataplaneModel, IpSet};

use crate::diff;
use crate::nft::{NftError, NftRunner};
use crate::render::{render, render_moving};
use crate::table::{NftTable, TABLE};

/// How an apply changed the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// Nothing to do: the desired table equals the last applied one.
    Unchanged,
    /// A transaction touching only what changed.
    Incremental,
    /// An atomic replace of the whole table.
    Full,
}

/// What [`NftManager::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    pub mode: ApplyMode,
    /// An incremental transaction failed and a full replace was applied instead.
    pub retried_full: bool,
    /// The script that was committed (empty when unchanged).
    pub script: String,
}

impl ApplyStats {
    /// Commands in the committed script.
    pub fn commands(&self) -> usize {
        self.script.lines().filter(|l| !l.trim().is_empty()).count()
    }
}

/// Owns the `inet tortie` table.
#[derive(Debug)]
pub struct NftManager<R> {
    runner: R,
    /// The table as last committed; `None` when unknown.
    last_applied: Option<NftTable>,
    /// `nft list table` right after the last commit.
    last_listing: Option<String>,
    /// The table last asked for (kept across failures, for drift repair).
    desired: Option<NftTable>,
    /// The model's IP sets behind `last_applied` (to reuse unchanged sets' rendering).
    last_sets: Option<BTreeMap<String, IpSet>>,
}

impl<R: NftRunner> NftManager<R> {
    /// A manager that knows nothing about the kernel yet.
    pub fn new(runner: R) -> Self {
        NftManager {
            runner,
            last_applied: None,
            last_sets: None,
            last_listing: None,
            desired: None,
        }
    }

    /// The runner (tests inspect fakes through it).
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// The table last committed, if known.
    pub fn last_applied(&self) -> Option<&NftTable> {
        self.last_applied.as_ref()
    }

    /// The kernel listing read back after the last commit, if any.
    pub fn last_listing(&self) -> Option<&str> {
        self.last_listing.as_deref()
    }

    /// Renders `model`, commits the difference to what was last applied (everything when
    /// that is unknown) and reads the table back. An incremental failure is retried once as
    /// a full replace; if that fails too the error is returned and the next apply is full.
    /// If only the read-back fails, the commit stands, the error is returned and the next
    /// [`check_drift`](Self::check_drift) replaces the table (it has nothing to compare with).
    pub fn apply(&mut self, model: &DataplaneModel) -> Result<ApplyStats, NftError> {
        // Sets unchanged since the last commit are carried over, not rendered again; a changed
        // address set is patched in place and its delta handed to the diff. `desired` shares
        // the last table's sets: drop it first so they can be patched without a copy.
        self.desired = None;
        let (table, script) = match (&self.last_sets, self.last_applied.as_mut()) {
            (Some(sets), Some(prev)) => {
                let (table, deltas) = render_moving(model, sets, prev);
                let script = if deltas.is_empty() {
                    diff::script(Some(prev), &table)
                } else {
                    diff::script_with_deltas(prev, &table, &deltas)
                };
                (table, script)
            }
            _ => {
                let table = render(model);
                let script = diff::script(self.last_applied.as_ref(), &table);
                (table, script)
            }
        };
        self.desired = Some(table.clone());
        if script.is_empty() {
            self.last_applied = Some(table);
            self.last_sets = Some(model.ip_sets.clone());
            return Ok(ApplyStats {
                mode: ApplyMode::Unchanged,
                retried_full: false,
                script,
            });
        }
        let incremental = self.last_applied.is_some();
        let mode = if incremental {
            ApplyMode::Incremental
        } else {
            ApplyMode::Full
        };
        let (mode, retried_full, script) = match self.commit(&script) {
            Ok(()) => (mode, false, script),
            Err(e) if incremental => {
                tracing::warn!(error = %e, "incremental nft transaction failed; replacing the whole table");
                let full = diff::full_script(&table);
                self.commit(&full)?;
                (ApplyMode::Full, true, full)
            }
            Err(e) => return Err(e),
        };
        self.last_applied = Some(table);
        self.last_sets = Some(model.ip_sets.clone());
        self.read_back()?;
        tracing::debug!(?mode, retried_full, "nft table applied");
        Ok(ApplyStats {
            mode,
            retried_full,
            script,
        })
    }

    /// Runs `script`; on failure forgets what the kernel holds.
    fn commit(&mut self, script: &str) -> Result<(), NftError> {
        self.runner.run(script).inspect_err(|_| {
            self.last_applied = None;
            self.last_sets = None;
            self.last_listing = None;
        })
    }

    fn read_back(&mut self) -> Result<(), NftError> {
        match self.runner.list() {
            Ok(text) => {
                self.last_listing = Some(text);
                Ok(())
            }
            Err(e) => {
                self.last_listing = None;
                Err(e)
            }
        }
    }

    /// Lists the table and compares it with the listing taken after the last commit. If it
    /// differs, is gone, or the last apply failed, replaces the table with the desired one and
    /// returns `true`. Returns `false` when nothing was ever asked for.
    pub fn check_drift(&mut self) -> Result<bool, NftError> {
        let Some(desired) = self.desired.clone() else {
            return Ok(false);
        };
        let now = match self.runner.list() {
            Ok(text) => Some(text),
            Err(e) if e.is_missing() => None,
            Err(e) => return Err(e),
        };
        if self.last_applied.is_some() && now.is_some() && now == self.last_listing {
            return Ok(false);
        }
        tracing::warn!(
            table = TABLE,
            gone = now.is_none(),
            "nft table drifted from what was applied; replacing it"
        );
        self.commit(&diff::full_script(&desired))?;
        self.last_applied = Some(desired);
        self.read_back()?;
        Ok(true)
    }

    /// Deletes the table (for tests and explicit teardown; agent restarts leave it in place
    /// so that policy keeps enforcing). Succeeds if it is already gone.
    pub fn remove(&mut self) -> Result<(), NftError> {
        self.desired = None;
        self.last_applied = None;
        self.last_listing = None;
        self.runner
            .run(&format!("table {TABLE} {{}}\ndelete table {TABLE}\n"))
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
