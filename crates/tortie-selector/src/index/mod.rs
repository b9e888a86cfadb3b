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
//! [`crate::restriction`]): the labels it requires (optionally with allowed
//! values) and the other labels it reads. Endpoints are indexed by label key
//! and by (key, value); selectors are indexed by the same keys/values they
//! require, plus by the keys they merely read.
//!
//! * **Selector added/changed**: candidates are the endpoints in the
//!   smallest posting list among its required labels (`k == v` → the
//!   (k, v) list; `k in {..}` → the union of its (k, v) lists; `has(k)`,
//!   `contains` etc. → the key list). A selector that requires no label (for
//!   example `all()`, `k != "v"`, `!has(k)`, an `||` over different keys)
//!   scans all endpoints. Cost `O(C·e + M·log n)` with `C` candidates, `e`
//!   the evaluation cost and `M` match changes.
//! * **Endpoint added**: candidate selectors are the unrestricted ones plus,
//!   for each of its labels, those requiring that key (any value) or that
//!   exact (key, value). Cost `O(L + (U + K)·e)` for `L` labels, `U`
//!   unrestricted selectors and `K` keyed candidates.
//! * **Endpoint labels changed**: only keys whose value changed (added,
//!   removed or different) matter. For each, the candidates are the
//!   selectors reading it without requiring it, those requiring it with any
//!   value, and those requiring its old or new value — selectors keyed on
//!   other values of that label are skipped. Unchanged labels cost one map
//!   comparison each.
//! * **Deletions** walk the stored match set: `O(M·log n)`.
//!
//! Memory is `O(Σ labels + Σ trigger registrations + Σ matches)`; each match
//! is stored twice (per selector and per endpoint) so both directions and
//! deletions are cheap.

mod plan;
mod postings;

use std::collections::{BTreeMap, BTreeSet};

use crate::Selector;
use plan::Plan;
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
    labels: BTreeMap<String, String>,
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
        let plan = Plan::new(&selector);
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
        let mut candidates = Vec::new();
        if let Some(entry) = self.endpoints.get_mut(&id) {
            if entry.labels == labels {
                return Vec::new();
            }
            let old = std::mem::replace(&mut entry.labels, labels);
            for (key, old_v, new_v) in changed_labels(&old, &entry.labels) {
                if let Some(v) = old_v {
                    self.postings.remove(&id, key, v);
                }
                if let Some(v) = new_v {
                    self.postings.insert(&id, key, v);
                }
                self.triggers
                    .for_changed_key(key, old_v, new_v, &mut candidates);
            }
        } else {
            self.postings.insert_all(&id, &labels);
            self.triggers.for_new_endpoint(&labels, &mut candidates);
            let entry = EndpointEntry {
                labels,
                matched_by: BTreeSet::new(),
            };
            self.endpoints.insert(id.clone(), entry);
        }
        let Some(entry) = self.endpoints.get_mut(&id) else {
            return Vec::new();
        };
        candidates.sort_unstable();
        candidates.dedup();
        reevaluate(&mut self.selectors, &id, entry, candidates)
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
    pub fn labels(&self, id: &E) -> Option<&BTreeMap<String, String>> {
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

    /// Endpoints matching `selector`, evaluating only the candidates of the
    /// cheapest required label.
    fn scan_candidates(&self, selector: &Selector, plan: &Plan) -> BTreeSet<E> {
        if !plan.satisfiable {
            return BTreeSet::new();
        }
        let matching = |ep: &&E| {
            self.endpoints
                .get(*ep)
                .is_some_and(|e| selector.evaluate(&e.labels))
        };
        match self.cheapest_required(plan) {
            None => self
                .endpoints
                .iter()
                .filter(|(_, e)| selector.evaluate(&e.labels))
                .map(|(id, _)| id.clone())
                .collect(),
            Some(lists) => lists
                .into_iter()
                .flat_map(|set| set.iter())
                .filter(matching)
                .cloned()
                .collect(),
        }
    }

    /// The posting lists of the required label with the fewest endpoints, or
    /// `None` if the plan requires no label.
    fn cheapest_required(&self, plan: &Plan) -> Option<Vec<&BTreeSet<E>>> {
        let mut best: Option<(usize, Vec<&BTreeSet<E>>)> = None;
        for (key, values) in &plan.required {
            let lists: Vec<&BTreeSet<E>> = match values {
                Some(values) => values
                    .iter()
                    .filter_map(|v| self.postings.with_value(key, v))
                    .collect(),
                None => self.postings.with_key(key).into_iter().collect(),
            };
            let cost = lists.iter().map(|s| s.len()).sum::<usize>();
            if best.as_ref().is_none_or(|(c, _)| cost < *c) {
                best = Some((cost, lists));
            }
        }
        best.map(|(_, lists)| lists)
    }
}

/// Re-evaluates `candidates` (sorted, distinct) against endpoint `id`,
/// updating both sides of the membership; returns the changes in order.
fn reevaluate<S: Ord + Clone, E: Ord + Clone>(
    selectors: &mut BTreeMap<S, SelectorEntry<E>>,
    id: &E,
    entry: &mut EndpointEntry<S>,
    candidates: Vec<&S>,
) -> Vec<MatchChange<S, E>> {
    let mut changes = Vec::new();
    for sel_id in candidates {
        let Some(sel) = selectors.get_mut(sel_id) else {
            continue;
        };
        let now = sel.selector.evaluate(&entry.labels);
        if now == entry.matched_by.contains(sel_id) {
            continue;
        }
        if now {
            entry.matched_by.insert(sel_id.clone());
            sel.matches.insert(id.clone());
        } else {
            entry.matched_by.remove(sel_id);
            sel.matches.remove(id);
        }
        changes.push(MatchChange {
            selector: sel_id.clone(),
            endpoint: id.clone(),
            started: now,
        });
    }
    changes
}

/// Keys whose value differs between `old` and `new`, with both values.
fn changed_labels<'a>(
    old: &'a BTreeMap<String, String>,
    new: &'a BTreeMap<String, String>,
) -> Vec<(&'a str, Option<&'a str>, Option<&'a str>)> {
    let mut out = Vec::new();
    for (k, v) in old {
        let nv = new.get(k).map(String::as_str);
        if nv != Some(v.as_str()) {
            out.push((k.as_str(), Some(v.as_str()), nv));
        }
    }
    for (k, v) in new {
        if !old.contains_key(k) {
            out.push((k.as_str(), None, Some(v.as_str())));
        }
    }
    out
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
