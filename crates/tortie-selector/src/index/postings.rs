//! The two inverted indexes behind [`super::LabelIndex`].
//!
//! * [`EndpointPostings`]: label key → endpoints carrying it, and
//!   (key, value) → endpoints carrying that exact pair. Used to find the
//!   candidate endpoints of a new or changed selector.
//! * [`SelectorTriggers`]: the reverse direction. Each selector is filed
//!   under its anchor (one required key, or key and value set, or
//!   "unrestricted"), and within that bucket under every label key it reads.
//!   An endpoint's labels select the buckets whose anchor it satisfies; the
//!   changed keys select the selectors inside them to re-evaluate.
//!
//! Invariant: no empty set is ever left in a map, so map sizes reflect live
//! data and memory is released when labels go away.

use std::collections::{BTreeSet, HashMap};

use super::plan::{Anchor, Plan};
use crate::LabelSet;

/// Applies `f` to `map[key]` if present; `f` returns true when the entry
/// became empty, and the entry is then dropped.
fn remove_from<K>(map: &mut HashMap<String, K>, key: &str, f: impl FnOnce(&mut K) -> bool) {
    if let Some(inner) = map.get_mut(key)
        && f(inner)
    {
        map.remove(key);
    }
}

/// `map[key]`, inserted empty first if missing (allocating the key only
/// then).
fn get_or_default<'m, K: Default>(map: &'m mut HashMap<String, K>, key: &str) -> &'m mut K {
    if !map.contains_key(key) {
        map.insert(key.to_owned(), K::default());
    }
    // Two lookups instead of `entry`, which would allocate the key on every
    // call; the entry exists at this point.
    map.get_mut(key).expect("entry inserted above")
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
        let postings = get_or_default(&mut self.by_key, key);
        postings.with_key.insert(ep.clone());
        get_or_default(&mut postings.by_value, value).insert(ep.clone());
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

    pub(super) fn insert_all(&mut self, ep: &E, labels: &LabelSet) {
        for (k, v) in labels.iter() {
            self.insert(ep, k, v);
        }
    }

    pub(super) fn remove_all(&mut self, ep: &E, labels: &LabelSet) {
        for (k, v) in labels.iter() {
            self.remove(ep, k, v);
        }
    }

    /// Endpoints carrying `key` (any value).
    pub(super) fn with_key(&self, key: &str) -> Option<&BTreeSet<E>> {
        self.by_key.get(key).map(|p| &p.with_key)
    }

    /// The distinct values of `key` with the endpoints carrying each.
    pub(super) fn values_of(&self, key: &str) -> impl Iterator<Item = (&str, &BTreeSet<E>)> {
        self.by_key
            .get(key)
            .into_iter()
            .flat_map(|p| p.by_value.iter().map(|(v, eps)| (v.as_str(), eps)))
    }

    /// Endpoints carrying `key == value`.
    pub(super) fn with_value(&self, key: &str, value: &str) -> Option<&BTreeSet<E>> {
        self.by_key.get(key).and_then(|p| p.by_value.get(value))
    }
}

/// Selectors grouped by anchor, each group sub-indexed by referenced key.
#[derive(Debug)]
struct Bucket<S> {
    /// Every selector with this anchor.
    all: BTreeSet<S>,
    /// Referenced label key → selectors with this anchor that read it.
    by_ref: HashMap<String, BTreeSet<S>>,
}

impl<S> Default for Bucket<S> {
    fn default() -> Self {
        Self {
            all: BTreeSet::new(),
            by_ref: HashMap::new(),
        }
    }
}

impl<S: Ord + Clone> Bucket<S> {
    fn insert(&mut self, id: &S, refs: &[String]) {
        self.all.insert(id.clone());
        for key in refs {
            self.by_ref
                .entry(key.clone())
                .or_default()
                .insert(id.clone());
        }
    }

    /// Removes `id`; returns true when the bucket became empty.
    fn remove(&mut self, id: &S, refs: &[String]) -> bool {
        self.all.remove(id);
        for key in refs {
            remove_from(&mut self.by_ref, key, |set| {
                set.remove(id);
                set.is_empty()
            });
        }
        self.all.is_empty()
    }

    fn push_refs<'a>(&'a self, changed: &[&str], out: &mut Vec<&'a S>) {
        for key in changed {
            if let Some(set) = self.by_ref.get(*key) {
                out.extend(set);
            }
        }
    }
}

/// Selectors by anchor: the one required label (and value set) each
/// selector is filed under, chosen when it is added (see [`Anchor`]).
#[derive(Debug)]
pub(super) struct SelectorTriggers<S> {
    /// Anchor `key in {values}`: key → value → bucket.
    by_value: HashMap<String, HashMap<String, Bucket<S>>>,
    /// Anchor `has(key)`: key → bucket.
    by_key: HashMap<String, Bucket<S>>,
    /// Satisfiable selectors that require no label.
    unrestricted: Bucket<S>,
}

impl<S: Ord + Clone> SelectorTriggers<S> {
    pub(super) fn new() -> Self {
        Self {
            by_value: HashMap::new(),
            by_key: HashMap::new(),
            unrestricted: Bucket::default(),
        }
    }

    pub(super) fn num_unrestricted(&self) -> usize {
        self.unrestricted.all.len()
    }

    pub(super) fn register(&mut self, id: &S, plan: &Plan) {
        let refs = &plan.refs;
        match &plan.anchor {
            Anchor::Never => {}
            Anchor::Unrestricted => self.unrestricted.insert(id, refs),
            Anchor::Key(key) => self.by_key.entry(key.clone()).or_default().insert(id, refs),
            Anchor::Values(key, values) => {
                let by_value = self.by_value.entry(key.clone()).or_default();
                for v in values {
                    by_value.entry(v.clone()).or_default().insert(id, refs);
                }
            }
        }
    }

    pub(super) fn deregister(&mut self, id: &S, plan: &Plan) {
        let refs = &plan.refs;
        match &plan.anchor {
            Anchor::Never => {}
            Anchor::Unrestricted => {
                self.unrestricted.remove(id, refs);
            }
            Anchor::Key(key) => remove_from(&mut self.by_key, key, |b| b.remove(id, refs)),
            Anchor::Values(key, values) => remove_from(&mut self.by_value, key, |by_value| {
                for v in values {
                    remove_from(by_value, v, |b| b.remove(id, refs));
                }
                by_value.is_empty()
            }),
        }
    }

    /// The buckets whose anchor an endpoint with `labels` satisfies.
    fn buckets<'a, 'l>(
        &'a self,
        labels: &'l LabelSet,
    ) -> impl Iterator<Item = &'a Bucket<S>> + use<'a, 'l, S> {
        let keyed = labels.iter().flat_map(move |(k, v)| {
            let any = self.by_key.get(k);
            let exact = self.by_value.get(k).and_then(|m| m.get(v));
            any.into_iter().chain(exact)
        });
        std::iter::once(&self.unrestricted).chain(keyed)
    }

    /// Pushes every selector that could match a new endpoint with `labels`
    /// (a superset; duplicates possible).
    pub(super) fn for_new_endpoint<'a>(&'a self, labels: &LabelSet, out: &mut Vec<&'a S>) {
        for bucket in self.buckets(labels) {
            out.extend(&bucket.all);
        }
    }

    /// Pushes the selectors whose anchor holds on `labels` and that read one
    /// of the `changed` keys. Called with an endpoint's new labels (selectors
    /// that may start matching) and its old ones (that may stop).
    pub(super) fn for_changed_keys<'a>(
        &'a self,
        labels: &LabelSet,
        changed: &[&str],
        out: &mut Vec<&'a S>,
    ) {
        for bucket in self.buckets(labels) {
            bucket.push_refs(changed, out);
        }
    }
}
