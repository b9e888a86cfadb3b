//! Incremental label index: which endpoints match which selectors, kept up to
//! date as selectors and endpoint labels change, without rescanning every
//! endpoint (or every selector) on each change. This is the core of Felix's
//! `SelectorAndNamedPortIndex` / active-rules calculation.
//!
//! Every mutating call returns the membership changes it caused as
//! [`MatchChange`] values (sans-IO: the calculation graph turns them into
//! IP-set member deltas). Replaying the changes from an empty state always
//! reproduces [`LabelIndex::matches`]. Within one call the changes are sorted
//! (by endpoint for selector calls, by selector for endpoint calls) and each
//! (selector, endpoint) pair appears at most once.
//!
//! Labels passed to [`LabelIndex::update_labels`] are the endpoint's
//! *effective* labels: callers flatten profile inheritance first.
//!
//! # How it narrows work
//!
//! Each selector gets a plan from its label restrictions (see
//! [`crate::restriction`]): the labels it reads, and an *anchor* — one label
//! every match must carry, optionally with its allowed values (`k == v` →
//! (k, {v}); `k in {..}` → (k, set); `has(k)`, `contains`, `starts with`...
//! → k with any value). Among several required labels the anchor is the one
//! fewest endpoints satisfy when the selector is added. A selector with no
//! required label (`all()`, `k != "v"`, `!has(k)`, an `||` over different
//! keys) is *unrestricted*; an unsatisfiable one is filed nowhere.
//!
//! Endpoints are indexed by label key and by (key, value). Selectors are
//! filed in a bucket per anchor, and inside it by every key they read.
//!
//! * **Selector added/changed**: only the endpoints of its cheapest required
//!   label are evaluated: the (k, v) posting lists of a value set, or the
//!   distinct values of k filtered by the selector's top-level tests on k
//!   (`k starts with "web-"`, `k != "x"`, ...), or every endpoint carrying
//!   k. An unrestricted selector scans all endpoints. `O(C·e + M·log n)`
//!   for `C` candidates, evaluation cost `e`, `M` membership changes (plus
//!   one pass over k's distinct values for a filtered key).
//! * **Endpoint added**: evaluated against the selectors of the buckets its
//!   labels satisfy (two hash lookups per label: (k, any) and (k, v)) plus
//!   the unrestricted ones. `O(L + (K + U)·e)` for `L` labels, `K` anchored
//!   candidates and `U` unrestricted selectors.
//! * **Endpoint labels changed**: with `Δ` the keys whose value changed
//!   (added, removed or different), a selector's result can only change if
//!   it reads a key in `Δ`; it can only *start* matching if its anchor holds
//!   on the new labels, and only *stop* if its anchor held on the old ones.
//!   So the candidates are, in each bucket the new or the old labels
//!   satisfy, the selectors filed under a key in `Δ`. Changing a label no
//!   selector reads costs `O(L·|Δ|)` hash lookups and no evaluation at all;
//!   selectors anchored on other values are never looked at.
//! * **Deletions** walk the stored match set: `O(M·log n)`.
//!
//! Anchors are picked from the endpoint statistics of the moment; selectors
//! added before their endpoints are anchored blind (ties prefer a value
//! anchor with fewer values), so call [`LabelIndex::rebalance`] after a bulk
//! load. A `starts with`/`ends with`/`contains` test only anchors on the
//! presence of its key, so a selector with no better requirement is
//! evaluated for every new endpoint carrying that key (a prefix index would
//! be the next step if that shows up in practice).
//!
//! Memory is `O(Σ labels + Σ selector refs + Σ matches)`; each match is
//! stored twice (per selector and per endpoint) so both query directions and
//! deletions are cheap.

mod plan;
mod postings;

use std::collections::{BTreeMap, BTreeSet};

use crate::{LabelSet, Labels, Selector};
use plan::{Anchor, Plan};
use postings::{EndpointPostings, SelectorTriggers};

/// One membership change: `endpoint` started or stopped matching `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchChange<S, E> {
    /// The selector ID.
    pub selector: S,
    /// The endpoint ID.
    pub endpoint: E,
    /// True if the endpoint now matches, false if it stopped matching.
    pub started: bool,
}

#[derive(Debug)]
struct SelectorEntry<E> {
    selector: Selector,
    plan: Plan,
    matches: BTreeSet<E>,
}

#[derive(Debug)]
struct EndpointEntry<S> {
    labels: LabelSet,
    matched_by: BTreeSet<S>,
}

/// Incremental selector ↔ endpoint match index (see the module docs).
#[derive(Debug)]
pub struct LabelIndex<S, E> {
    selectors: BTreeMap<S, SelectorEntry<E>>,
    endpoints: BTreeMap<E, EndpointEntry<S>>,
    postings: EndpointPostings<E>,
    triggers: SelectorTriggers<S>,
}

impl<S: Ord + Clone, E: Ord + Clone> Default for LabelIndex<S, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Ord + Clone, E: Ord + Clone> LabelIndex<S, E> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            selectors: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            postings: EndpointPostings::new(),
            triggers: SelectorTriggers::new(),
        }
    }

    /// Adds selector `id`, or replaces its expression. Returns the
    /// membership changes, sorted by endpoint.
    pub fn update_selector(&mut self, id: S, selector: Selector) -> Vec<MatchChange<S, E>> {
        let old_matches = match self.selectors.get(&id) {
            Some(entry) if entry.selector == selector => return Vec::new(),
            Some(_) => self.remove_selector_entry(&id).map(|e| e.matches),
            None => None,
        }
        .unwrap_or_default();
        let plan = Plan::new(&selector, |key, values| self.endpoint_count(key, values));
        let matches = self.scan_candidates(&selector, &plan);
        let changes = diff_matches(&id, &old_matches, &matches);
        for c in &changes {
            if let Some(ep) = self.endpoints.get_mut(&c.endpoint) {
                if c.started {
                    ep.matched_by.insert(id.clone());
                } else {
                    ep.matched_by.remove(&id);
                }
            }
        }
        self.triggers.register(&id, &plan);
        self.selectors.insert(
            id,
            SelectorEntry {
                selector,
                plan,
                matches,
            },
        );
        changes
    }

    /// Re-picks every selector's anchor from the current endpoint
    /// statistics. Anchors are chosen when a selector is added; selectors
    /// added before the endpoints (or before label distributions settled)
    /// may sit in crowded buckets, which makes endpoint updates evaluate
    /// them needlessly. Call this after a bulk load. Membership is
    /// unchanged, so no changes are returned; cost `O(selectors)`.
    pub fn rebalance(&mut self) {
        let mut moves = Vec::new();
        for (id, entry) in &self.selectors {
            let plan = Plan::new(&entry.selector, |key, values| {
                self.endpoint_count(key, values)
            });
            if plan.anchor != entry.plan.anchor {
                moves.push((id.clone(), plan));
            }
        }
        for (id, plan) in moves {
            if let Some(entry) = self.selectors.get_mut(&id) {
                self.triggers.deregister(&id, &entry.plan);
                self.triggers.register(&id, &plan);
                entry.plan = plan;
            }
        }
    }

    /// Removes selector `id`; every endpoint it matched stops matching.
    pub fn delete_selector(&mut self, id: &S) -> Vec<MatchChange<S, E>> {
        let Some(entry) = self.remove_selector_entry(id) else {
            return Vec::new();
        };
        entry
            .matches
            .into_iter()
            .map(|ep_id| {
                if let Some(ep) = self.endpoints.get_mut(&ep_id) {
                    ep.matched_by.remove(id);
                }
                MatchChange {
                    selector: id.clone(),
                    endpoint: ep_id,
                    started: false,
                }
            })
            .collect()
    }

    /// Adds endpoint `id` with its (effective) labels, or replaces its
    /// labels. Returns the membership changes, sorted by selector.
    pub fn update_labels(
        &mut self,
        id: E,
        labels: BTreeMap<String, String>,
    ) -> Vec<MatchChange<S, E>> {
        let labels = LabelSet::from(&labels);
        let mut candidates = Vec::new();
        if let Some(entry) = self.endpoints.get_mut(&id) {
            if entry.labels == labels {
                return Vec::new();
            }
            let old = std::mem::replace(&mut entry.labels, labels);
            let changed = changed_labels(&old, &entry.labels);
            for &(key, old_v, new_v) in &changed {
                if let Some(v) = old_v {
                    self.postings.remove(&id, key, v);
                }
                if let Some(v) = new_v {
                    self.postings.insert(&id, key, v);
                }
            }
            // A selector can only start matching if its anchor holds on the
            // new labels, and only stop matching if it held on the old ones;
            // either way it reads a changed key.
            let keys: Vec<&str> = changed.iter().map(|c| c.0).collect();
            self.triggers
                .for_changed_keys(&entry.labels, &keys, &mut candidates);
            self.triggers.for_changed_keys(&old, &keys, &mut candidates);
        } else {
            self.postings.insert_all(&id, &labels);
            self.triggers.for_new_endpoint(&labels, &mut candidates);
            let entry = EndpointEntry {
                labels,
                matched_by: BTreeSet::new(),
            };
            self.endpoints.insert(id.clone(), entry);
        }
        let Some(entry) = self.endpoints.get(&id) else {
            return Vec::new();
        };
        candidates.sort_unstable();
        candidates.dedup();
        let changes = evaluate_candidates(&self.selectors, &id, entry, candidates);
        self.apply_endpoint_changes(&changes);
        changes
    }

    /// Removes endpoint `id`; every selector that matched it stops matching.
    pub fn delete_labels(&mut self, id: &E) -> Vec<MatchChange<S, E>> {
        let Some(entry) = self.endpoints.remove(id) else {
            return Vec::new();
        };
        self.postings.remove_all(id, &entry.labels);
        entry
            .matched_by
            .into_iter()
            .map(|sel_id| {
                if let Some(sel) = self.selectors.get_mut(&sel_id) {
                    sel.matches.remove(id);
                }
                MatchChange {
                    selector: sel_id,
                    endpoint: id.clone(),
                    started: false,
                }
            })
            .collect()
    }

    /// Endpoints currently matching selector `id`, in order (empty if the
    /// selector is unknown).
    pub fn matches(&self, id: &S) -> impl Iterator<Item = &E> + '_ {
        self.selectors
            .get(id)
            .into_iter()
            .flat_map(|e| e.matches.iter())
    }

    /// Number of endpoints matching selector `id`.
    pub fn num_matches(&self, id: &S) -> usize {
        self.selectors.get(id).map_or(0, |e| e.matches.len())
    }

    /// Selectors currently matching endpoint `id`, in order (empty if the
    /// endpoint is unknown).
    pub fn selectors_matching(&self, id: &E) -> impl Iterator<Item = &S> + '_ {
        self.endpoints
            .get(id)
            .into_iter()
            .flat_map(|e| e.matched_by.iter())
    }

    /// True if endpoint `ep` currently matches selector `sel`.
    pub fn is_match(&self, sel: &S, ep: &E) -> bool {
        self.selectors
            .get(sel)
            .is_some_and(|e| e.matches.contains(ep))
    }

    /// The selector stored under `id`.
    pub fn selector(&self, id: &S) -> Option<&Selector> {
        self.selectors.get(id).map(|e| &e.selector)
    }

    /// The labels stored for endpoint `id`.
    pub fn labels(&self, id: &E) -> Option<&LabelSet> {
        self.endpoints.get(id).map(|e| &e.labels)
    }

    /// Number of selectors in the index.
    pub fn num_selectors(&self) -> usize {
        self.selectors.len()
    }

    /// Number of endpoints in the index.
    pub fn num_endpoints(&self) -> usize {
        self.endpoints.len()
    }

    /// Number of selectors that require no label and so are evaluated
    /// against every new endpoint (a cost indicator).
    pub fn num_unrestricted_selectors(&self) -> usize {
        self.triggers.num_unrestricted()
    }

    /// Takes selector `id` out of the selector map and the trigger index,
    /// leaving endpoints' `matched_by` for the caller to fix.
    fn remove_selector_entry(&mut self, id: &S) -> Option<SelectorEntry<E>> {
        let entry = self.selectors.remove(id)?;
        self.triggers.deregister(id, &entry.plan);
        Some(entry)
    }

    /// Records changes for one endpoint on both sides of the membership.
    fn apply_endpoint_changes(&mut self, changes: &[MatchChange<S, E>]) {
        for c in changes {
            if let Some(ep) = self.endpoints.get_mut(&c.endpoint) {
                if c.started {
                    ep.matched_by.insert(c.selector.clone());
                } else {
                    ep.matched_by.remove(&c.selector);
                }
            }
            if let Some(sel) = self.selectors.get_mut(&c.selector) {
                if c.started {
                    sel.matches.insert(c.endpoint.clone());
                } else {
                    sel.matches.remove(&c.endpoint);
                }
            }
        }
    }

    /// Number of endpoints carrying `key` (with one of `values`, if given).
    fn endpoint_count(&self, key: &str, values: Option<&BTreeSet<String>>) -> usize {
        match values {
            Some(values) => values
                .iter()
                .filter_map(|v| self.postings.with_value(key, v))
                .map(BTreeSet::len)
                .sum(),
            None => self.postings.with_key(key).map_or(0, BTreeSet::len),
        }
    }

    /// Endpoints matching `selector`: an unrestricted selector is checked
    /// against every endpoint, any other only against the endpoints of its
    /// cheapest requirement.
    fn scan_candidates(&self, selector: &Selector, plan: &Plan) -> BTreeSet<E> {
        match plan.anchor {
            Anchor::Never => BTreeSet::new(),
            Anchor::Unrestricted => self
                .endpoints
                .iter()
                .filter(|(_, e)| selector.evaluate(&e.labels))
                .map(|(id, _)| id.clone())
                .collect(),
            Anchor::Key(_) | Anchor::Values(..) => self
                .narrowest_lists(plan)
                .into_iter()
                .flatten()
                .filter(|ep| {
                    self.endpoints
                        .get(*ep)
                        .is_some_and(|e| selector.evaluate(&e.labels))
                })
                .cloned()
                .collect(),
        }
    }

    /// The posting lists of the requirement that leaves the fewest
    /// endpoints to evaluate (their union holds every possible match).
    fn narrowest_lists(&self, plan: &Plan) -> Vec<&BTreeSet<E>> {
        let mut best: Option<(usize, Vec<&BTreeSet<E>>)> = None;
        for req in &plan.required {
            let key = req.key.as_str();
            let lists: Vec<&BTreeSet<E>> = match &req.values {
                Some(values) => values
                    .iter()
                    .filter_map(|v| self.postings.with_value(key, v))
                    .collect(),
                None if req.value_tests.is_empty() => {
                    self.postings.with_key(key).into_iter().collect()
                }
                None => self
                    .postings
                    .values_of(key)
                    .filter(|(value, _)| {
                        let one = OneLabel { key, value };
                        req.value_tests.iter().all(|t| t.evaluate(&one))
                    })
                    .map(|(_, eps)| eps)
                    .collect(),
            };
            let cost = lists.iter().map(|s| s.len()).sum::<usize>();
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, lists));
            }
        }
        best.map(|(_, lists)| lists).unwrap_or_default()
    }
}

/// A single label, for testing one candidate value against leaf tests.
struct OneLabel<'a> {
    key: &'a str,
    value: &'a str,
}

impl Labels for OneLabel<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == self.key).then_some(self.value)
    }
}

/// Evaluates `candidates` (sorted, distinct) against endpoint `id` and
/// returns the membership changes, in selector order, without applying them.
fn evaluate_candidates<S: Ord + Clone, E: Ord + Clone>(
    selectors: &BTreeMap<S, SelectorEntry<E>>,
    id: &E,
    entry: &EndpointEntry<S>,
    candidates: Vec<&S>,
) -> Vec<MatchChange<S, E>> {
    let mut changes = Vec::new();
    for sel_id in candidates {
        let Some(sel) = selectors.get(sel_id) else {
            continue;
        };
        let now = sel.selector.evaluate(&entry.labels);
        if now != entry.matched_by.contains(sel_id) {
            changes.push(MatchChange {
                selector: sel_id.clone(),
                endpoint: id.clone(),
                started: now,
            });
        }
    }
    changes
}

/// Keys whose value differs between `old` and `new`, with both values
/// (a merge of the two key-sorted sequences).
fn changed_labels<'a>(
    old: &'a LabelSet,
    new: &'a LabelSet,
) -> Vec<(&'a str, Option<&'a str>, Option<&'a str>)> {
    let mut out = Vec::new();
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let change = match (a.peek().copied(), b.peek().copied()) {
            (None, None) => return out,
            (Some((k, v)), None) => {
                a.next();
                (k, Some(v), None)
            }
            (None, Some((k, v))) => {
                b.next();
                (k, None, Some(v))
            }
            (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    a.next();
                    (ka, Some(va), None)
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                    (kb, None, Some(vb))
                }
                std::cmp::Ordering::Equal => {
                    a.next();
                    b.next();
                    if va == vb {
                        continue;
                    }
                    (ka, Some(va), Some(vb))
                }
            },
        };
        out.push(change);
    }
}

/// Changes turning membership `old` into `new` for selector `id`, sorted by
/// endpoint.
fn diff_matches<S: Clone, E: Ord + Clone>(
    id: &S,
    old: &BTreeSet<E>,
    new: &BTreeSet<E>,
) -> Vec<MatchChange<S, E>> {
    let stopped = old.difference(new).map(|e| (e, false));
    let started = new.difference(old).map(|e| (e, true));
    let mut changes: Vec<_> = stopped
        .chain(started)
        .map(|(e, started)| MatchChange {
            selector: id.clone(),
            endpoint: e.clone(),
            started,
        })
        .collect();
    changes.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
    changes
}

#[cfg(test)]
mod tests;
