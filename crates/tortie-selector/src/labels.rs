//! Label sources a selector can be evaluated against.
//!
//! [`Labels`] is a read-only key → value lookup. Implementations are provided
//! for `BTreeMap<String, String>`, `HashMap<String, String>`, references,
//! [`LabelSet`] (a compact immutable form the label index stores, two heap
//! blocks per endpoint instead of two per label, so evaluating many cold
//! endpoints touches few cache lines), and [`Overlay`], which layers an
//! endpoint's own labels over the labels it inherits from its profiles (the
//! endpoint wins, as in Felix).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;

/// A read-only set of labels.
pub trait Labels {
    /// The value of label `key`, or `None` if it is absent.
    fn get(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<&str> {
        BTreeMap::get(self, key).map(String::as_str)
    }
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn get(&self, key: &str) -> Option<&str> {
        HashMap::get(self, key).map(String::as_str)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get(&self, key: &str) -> Option<&str> {
        (**self).get(key)
    }
}

/// An immutable label set stored compactly: all keys and values in one
/// string buffer, sorted by key, with one offset table.
///
/// Invariant: `ends` holds two offsets per label (end of key, end of value)
/// into `buf`, labels are in strictly increasing key order, and every offset
/// lies on a `char` boundary (keys and values are whole strings), so the
/// slicing in `entry` cannot fail.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet {
    buf: Box<str>,
    ends: Box<[usize]>,
}

impl LabelSet {
    /// Number of labels.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    /// True if there are no labels.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Label `i` (in key order) as (key, value).
    fn entry(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 { 0 } else { self.ends[2 * i - 1] };
        let key_end = self.ends[2 * i];
        let value_end = self.ends[2 * i + 1];
        (&self.buf[start..key_end], &self.buf[key_end..value_end])
    }

    /// The labels as (key, value), in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        (0..self.len()).map(|i| self.entry(i))
    }

    /// Copies the labels into a map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl Labels for LabelSet {
    fn get(&self, key: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (k, v) = self.entry(mid);
            match k.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }
}

impl From<&BTreeMap<String, String>> for LabelSet {
    fn from(map: &BTreeMap<String, String>) -> Self {
        let mut buf = String::with_capacity(map.iter().map(|(k, v)| k.len() + v.len()).sum());
        let mut ends = Vec::with_capacity(map.len() * 2);
        for (k, v) in map {
            buf.push_str(k);
            ends.push(buf.len());
            buf.push_str(v);
            ends.push(buf.len());
        }
        LabelSet {
            buf: buf.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

impl From<BTreeMap<String, String>> for LabelSet {
    fn from(map: BTreeMap<String, String>) -> Self {
        LabelSet::from(&map)
    }
}

impl fmt::Debug for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Two label layers: lookups try `upper` first and fall back to `lower`.
///
/// For an endpoint, `upper` is its own labels and `lower` its profiles'
/// `labelsToApply`. Several profiles nest, earlier ones winning:
///
/// ```
/// # use std::collections::BTreeMap;
/// # use tortie_selector::{Labels, Overlay};
/// let ep: BTreeMap<String, String> = [("app".into(), "web".into())].into();
/// let p1: BTreeMap<String, String> = [("app".into(), "x".into()), ("env".into(), "prod".into())].into();
/// let p2: BTreeMap<String, String> = [("env".into(), "dev".into()), ("team".into(), "a".into())].into();
/// let profiles = Overlay::new(&p1, &p2);
/// let labels = Overlay::new(&ep, &profiles);
/// assert_eq!(labels.get("app"), Some("web"));
/// assert_eq!(labels.get("env"), Some("prod"));
/// assert_eq!(labels.get("team"), Some("a"));
/// ```
#[derive(Clone, Copy)]
pub struct Overlay<'a> {
    upper: &'a dyn Labels,
    lower: &'a dyn Labels,
}

impl<'a> Overlay<'a> {
    /// Layers `upper` (e.g. endpoint labels) over `lower` (e.g. profile
    /// labels).
    pub fn new(upper: &'a dyn Labels, lower: &'a dyn Labels) -> Self {
        Self { upper, lower }
    }
}

impl Labels for Overlay<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.upper.get(key).or_else(|| self.lower.get(key))
    }
}

impl fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlay").finish_non_exhaustive()
    }
}
