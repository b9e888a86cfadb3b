//! Label sources a selector can be evaluated against.
//!
//! [`Labels`] is a read-only key → value lookup. Implementations are provided
//! for `BTreeMap<String, String>`, `HashMap<String, String>`, references, and
//! [`Overlay`], which layers an endpoint's own labels over the labels it
//! inherits from its profiles (the endpoint wins, as in Felix).

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
