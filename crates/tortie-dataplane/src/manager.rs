//! [`NftManager`]: keeps the kernel's `inet tortie` table equal to the desired one.
//!
//! State: the table it last applied successfully (`None` = unknown, so the next apply is a
//! full atomic replace) and a drift baseline: the namespace's nftables generation right after
//! its last commit, and, once a drift check has run, the table's listing with the generation
//! it was taken at. A commit does not list the table (listing costs as much as the commit and
//! grows with the sets); the next drift check does, and only when the generation has moved.
//! On start it knows nothing, so its first apply replaces whatever a previous agent left in
//! one transaction: the old rules enforce until the new ones commit.

use std::collections::BTreeMap;

use tortie_calc::dataplane::{DataplaneModel, IpSet};

use crate::diff;
use crate::nft::{NftError, NftRunner, SetElements};
use crate::render::{SetDelta, render, render_moving};
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
    /// The change was only address set members, applied as netlink element updates without
    /// running `nft` (`script` is its nft equivalent).
    pub elements_only: bool,
    /// The script that was committed (empty when unchanged).
    pub script: String,
}

impl ApplyStats {
    /// Commands in the committed script.
    pub fn commands(&self) -> usize {
        self.script.lines().filter(|l| !l.trim().is_empty()).count()
    }
}

/// What a drift check compares the kernel with.
#[derive(Debug)]
enum Baseline {
    /// Nothing: the next drift check replaces the table.
    Unknown,
    /// The last commit produced this nftables generation; the table was not listed since.
    Committed { generation: u32 },
    /// The table's listing, taken when the namespace was at `generation` (if known).
    Listing {
        text: String,
        generation: Option<u32>,
    },
}

/// Owns the `inet tortie` table.
#[derive(Debug)]
pub struct NftManager<R> {
    runner: R,
    /// The table as last committed; `None` when unknown.
    last_applied: Option<NftTable>,
    /// What the drift check compares the kernel with.
    baseline: Baseline,
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
            baseline: Baseline::Unknown,
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

    /// The kernel listing the drift check compares with, once taken after the last commit
    /// (by [`check_drift`](Self::check_drift), or by `apply` when the runner cannot read the
    /// nftables generation).
    pub fn last_listing(&self) -> Option<&str> {
        match &self.baseline {
            Baseline::Listing { text, .. } => Some(text),
            Baseline::Unknown | Baseline::Committed { .. } => None,
        }
    }

    /// Renders `model` and commits the difference to what was last applied (everything when
    /// that is unknown), then notes the nftables generation its commit produced: the table is
    /// not listed here but at the next [`check_drift`](Self::check_drift). An incremental
    /// failure is retried once as a full replace; if that fails too the error is returned and
    /// the next apply is full. A runner that cannot read the generation gets the table read
    /// back right away instead; if only that read-back fails, the commit stands, the error is
    /// returned and the next `check_drift` replaces the table (it has nothing to compare with).
    pub fn apply(&mut self, model: &DataplaneModel) -> Result<ApplyStats, NftError> {
        // Sets unchanged since the last commit are carried over, not rendered again; a changed
        // address set is patched in place and its delta handed to the diff. `desired` shares
        // the last table's sets: drop it first so they can be patched without a copy.
        self.desired = None;
        let mut elements = None;
        let (table, script) = match (&self.last_sets, self.last_applied.as_mut()) {
            (Some(sets), Some(prev)) => {
                let (table, deltas) = render_moving(model, sets, prev);
                if deltas.is_empty() {
                    let script = diff::script(Some(prev), &table);
                    (table, script)
                } else {
                    let (script, only_elements) = diff::script_with_deltas(prev, &table, &deltas);
                    if only_elements {
                        elements = Some(element_updates(&deltas));
                    }
                    (table, script)
                }
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
                elements_only: false,
                script,
            });
        }
        let incremental = self.last_applied.is_some();
        let mode = if incremental {
            ApplyMode::Incremental
        } else {
            ApplyMode::Full
        };
        let committed = match &elements {
            Some(changes) => self.commit_elements(changes, &script),
            None => self.commit(&script).map(|()| false),
        };
        let (mode, retried_full, elements_only, script) = match committed {
            Ok(elements_only) => (mode, false, elements_only, script),
            Err(e) if incremental => {
                tracing::warn!(error = %e, "incremental nft transaction failed; replacing the whole table");
                let full = diff::full_script(&table);
                self.commit(&full)?;
                (ApplyMode::Full, true, false, full)
            }
            Err(e) => return Err(e),
        };
        self.last_applied = Some(table);
        self.last_sets = Some(model.ip_sets.clone());
        match self.runner.generation() {
            Some(generation) => self.baseline = Baseline::Committed { generation },
            None => self.read_back()?,
        }
        tracing::debug!(?mode, retried_full, elements_only, "nft table applied");
        Ok(ApplyStats {
            mode,
            retried_full,
            elements_only,
            script,
        })
    }

    /// Applies element changes without a script if the runner can (`Ok(true)`), else runs
    /// `script`, their equivalent (`Ok(false)`); on failure forgets what the kernel holds.
    fn commit_elements(&mut self, changes: &[SetElements], script: &str) -> Result<bool, NftError> {
        match self.runner.update_elements(changes) {
            Ok(true) => Ok(true),
            Ok(false) => self.commit(script).map(|()| false),
            Err(e) => {
                self.forget();
                Err(e)
            }
        }
    }

    /// Runs `script`; on failure forgets what the kernel holds.
    fn commit(&mut self, script: &str) -> Result<(), NftError> {
        self.runner.run(script).inspect_err(|_| self.forget())
    }

    /// After a failed commit: nothing is known about the kernel.
    fn forget(&mut self) {
        self.last_applied = None;
        self.last_sets = None;
        self.baseline = Baseline::Unknown;
    }

    /// Lists the table as the new baseline, with the generation read just before (a change
    /// after that read shows up as a generation move at the next check).
    fn read_back(&mut self) -> Result<(), NftError> {
        let generation = self.runner.generation();
        match self.runner.list() {
            Ok(text) => {
                self.baseline = Baseline::Listing { text, generation };
                Ok(())
            }
            Err(e) => {
                self.baseline = Baseline::Unknown;
                Err(e)
            }
        }
    }

    /// Checks that the kernel still holds what was last committed; if not (the table was
    /// flushed, edited or deleted, or the last apply failed), replaces it with the desired one
    /// and returns `true`. Returns `false` when nothing was ever asked for.
    ///
    /// When the nftables generation has not moved since the baseline, nothing changed and
    /// nothing is listed. Right after a commit the baseline is only a generation: if it has
    /// not moved the table is listed as the baseline; if it has, something else committed
    /// since and there is no listing to compare with, so the table is replaced (atomically,
    /// as any repair). Otherwise the listing is compared with the baseline listing.
    pub fn check_drift(&mut self) -> Result<bool, NftError> {
        let Some(desired) = self.desired.clone() else {
            return Ok(false);
        };
        let mut gone = false;
        if self.last_applied.is_some() {
            match &mut self.baseline {
                Baseline::Committed { generation } => {
                    if self.runner.generation() == Some(*generation) {
                        self.read_back()?;
                        return Ok(false);
                    }
                }
                Baseline::Listing { text, generation } => {
                    let current = self.runner.generation();
                    if current.is_some() && current == *generation {
                        return Ok(false);
                    }
                    match self.runner.list() {
                        Ok(now) if now == *text => {
                            *generation = current;
                            return Ok(false);
                        }
                        Ok(_) => {}
                        Err(e) if e.is_missing() => gone = true,
                        Err(e) => return Err(e),
                    }
                }
                Baseline::Unknown => {}
            }
        }
        tracing::warn!(
            table = TABLE,
            gone,
            "nft table drifted from what was applied (or cannot be compared); replacing it"
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
        self.baseline = Baseline::Unknown;
        self.runner
            .run(&format!("table {TABLE} {{}}\ndelete table {TABLE}\n"))
    }
}

/// The deltas as address element updates.
fn element_updates(deltas: &BTreeMap<String, SetDelta>) -> Vec<SetElements> {
    deltas
        .iter()
        .map(|(set, d)| SetElements {
            set: set.clone(),
            removed: d.removed.iter().copied().collect(),
            added: d.added.iter().copied().collect(),
        })
        .collect()
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
