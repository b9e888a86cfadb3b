//! The two inverted indexes behind [`super::LabelIndex`].
//!
//! * [`EndpointPostings`]: label key → endpoints carrying it, and
//!   (key, value) → endpoints carrying that exact pair. Used to find the
//!   candidate endpoints of a new or changed selector.
//! * [`SelectorTriggers`]: the reverse direction, label key / (key, value) →
//!   selectors whose result may depend on it, built from each selector's
//!   [`Plan`]. Used to find the selectors to re-evaluate when an endpoint's
//!   labels change.
//!
//! Invariant: no empty set is ever left in a map, so map sizes reflect live
//! data and memory is released when labels go away.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::plan::Plan;

/// Applies `f` to `map[key]` if present; `f` returns true when the entry
/// became empty, and the entry is then dropped.
fn remove_from<K>(map: &mut HashMap<String, K>, key: &str, f: impl FnOnce(&mut K) -> bool) {
    if let Some(inner) = map.get_mut(key)
        && f(inner)
    {
        map.remove(key);
    }
}

/// Endpoints by label key and by (key, value).
#[derive(Debug)]
pub(super) struct EndpointPostings<E> {
    by_key: HashMap<String, KeyPostings<E>>,
}

#[derive(Debug)]
struct KeyPostings<E> {
    with_key: BTreeSet<E>,
    by_value: HashMap<String, BTreeSet<E>>,
}

impl<E> Default for KeyPostings<E> {
    fn default() -> Self {
        Self {
            with_key: BTreeSet::new(),
            by_value: HashMap::new(),
        }
    }
}

impl<E: Ord + Clone> EndpointPostings<E> {
    pub(super) fn new() -> Self {
        Self {
            by_key: HashMap::new(),
        }
    }

    pub(super) fn insert(&mut self, ep: &E, key: &str, value: &str) {
        let postings = self.by_key.entry(key.to_owned()).or_default();
        postings.with_key.insert(ep.clone());
        postings
            .by_value
            .entry(value.to_owned())
            .or_default()
            .insert(ep.clone());
    }

    pub(super) fn remove(&mut self, ep: &E, key: &str, value: &str) {
        remove_from(&mut self.by_key, key, |postings| {
            postings.with_key.remove(ep);
            remove_from(&mut postings.by_value, value, |set| {
                set.remove(ep);
                set.is_empty()
            });
            postings.with_key.is_empty()
        });
    }

    pub(super) fn insert_all(&mut self, ep: &E, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.insert(ep, k, v);
        }
    }

    pub(super) fn remove_all(&mut self, ep: &E, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.remove(ep, k, v);
        }
    }

    /// Endpoints carrying `key` (any value).
    pub(super) fn with_key(&self, key: &str) -> Option<&BTreeSet<E>> {
        self.by_key.get(key).map(|p| &p.with_key)
    }

    /// Endpoints carrying `key == value`.
    pub(super) fn with_value(&self, key: &str, value: &str) -> Option<&BTreeSet<E>> {
        self.by_key.get(key).and_then(|p| p.by_value.get(value))
    }
}

/// Selectors by the labels that can change their result.
#[derive(Debug)]
pub(super) struct SelectorTriggers<S> {
    /// Selectors requiring `key` with one of a set of values: key → value → selectors.
    by_value: HashMap<String, HashMap<String, BTreeSet<S>>>,
    /// Selectors requiring `key` with any value.
    by_key: HashMap<String, BTreeSet<S>>,
    /// Selectors referencing `key` without requiring it.
    by_ref: HashMap<String, BTreeSet<S>>,
    /// Satisfiable selectors with no required label.
    unrestricted: BTreeSet<S>,
}

impl<S: Ord + Clone> SelectorTriggers<S> {
    pub(super) fn new() -> Self {
        Self {
            by_value: HashMap::new(),
            by_key: HashMap::new(),
            by_ref: HashMap::new(),
            unrestricted: BTreeSet::new(),
        }
    }

    pub(super) fn num_unrestricted(&self) -> usize {
        self.unrestricted.len()
    }

    pub(super) fn register(&mut self, id: &S, plan: &Plan) {
        if !plan.satisfiable {
            return;
        }
        for (key, values) in &plan.required {
            match values {
                Some(values) => {
                    let by_value = self.by_value.entry(key.clone()).or_default();
                    for v in values {
                        by_value.entry(v.clone()).or_default().insert(id.clone());
                    }
                }
                None => {
                    self.by_key.entry(key.clone()).or_default().insert(id.clone());
                }
            }
        }
        for key in &plan.other_refs {
            self.by_ref.entry(key.clone()).or_default().insert(id.clone());
        }
        if plan.is_unrestricted() {
            self.unrestricted.insert(id.clone());
        }
    }

    pub(super) fn deregister(&mut self, id: &S, plan: &Plan) {
        if !plan.satisfiable {
            return;
        }
        let drop_id = |set: &mut BTreeSet<S>| {
            set.remove(id);
            set.is_empty()
        };
        for (key, values) in &plan.required {
            match values {
                Some(values) => remove_from(&mut self.by_value, key, |by_value| {
                    for v in values {
                        remove_from(by_value, v, drop_id);
                    }
                    by_value.is_empty()
                }),
                None => remove_from(&mut self.by_key, key, drop_id),
            }
        }
        for key in &plan.other_refs {
            remove_from(&mut self.by_ref, key, drop_id);
        }
        self.unrestricted.remove(id);
    }

    /// Pushes every selector that could match an endpoint with `labels`
    /// (superset; duplicates possible).
    pub(super) fn for_new_endpoint<'a>(
        &'a self,
        labels: &BTreeMap<String, String>,
        out: &mut Vec<&'a S>,
    ) {
        out.extend(&self.unrestricted);
        for (k, v) in labels {
            if let Some(set) = self.by_key.get(k) {
                out.extend(set);
            }
            if let Some(set) = self.by_value.get(k).and_then(|m| m.get(v)) {
                out.extend(set);
            }
        }
    }

    /// Pushes every selector whose result may differ when `key` goes from
    /// `old` to `new` (superset; duplicates possible).
    pub(super) fn for_changed_key<'a>(
        &'a self,
        key: &str,
        old: Option<&str>,
        new: Option<&str>,
        out: &mut Vec<&'a S>,
    ) {
        if let Some(set) = self.by_ref.get(key) {
            out.extend(set);
        }
        if let Some(set) = self.by_key.get(key) {
            out.extend(set);
        }
        for value in [old, new].into_iter().flatten() {
            if let Some(set) = self.by_value.get(key).and_then(|m| m.get(value)) {
                out.extend(set);
            }
        }
    }
}
