//! Namespaces, commands and nft listings for the root tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use tortie_netlink::NetNs;

pub fn is_root() -> bool {
    tortie_netlink::testing::root_or_skip("creating network namespaces and nft tables")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Namespaces this test created; deleted on drop, even on panic (which also removes the
/// veths and nft tables inside them).
pub struct Namespaces(Vec<String>);

impl Namespaces {
    pub fn new() -> Self {
        Namespaces(Vec::new())
    }

    /// Adds `tortie-dpt-<pid>-<n>` and returns its name.
    pub fn add(&mut self) -> String {
        let name = format!(
            "tortie-dpt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        self.0.push(name.clone());
        name
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

pub fn path(ns: &str) -> PathBuf {
    NetNs::path_of(ns)
}

pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn nft_in(ns: &str, args: &[&str]) -> String {
    let mut a = vec![
        "--net".to_string() + "=" + &path(ns).display().to_string(),
        "--".into(),
        "nft".into(),
    ];
    a.extend(args.iter().map(|s| s.to_string()));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    run("nsenter", &a)
}

// Listings, normalised: `nft -j` objects without handles, set elements sorted, rules per
// chain in order.

pub fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.remove("handle");
            for x in o.values_mut() {
                strip_handles(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

#[derive(Debug, PartialEq)]
pub struct Normalised {
    objects: BTreeSet<String>,
    rules: BTreeMap<String, Vec<String>>,
}

pub fn normalised(ns: &str) -> Normalised {
    let text = nft_in(ns, &["-j", "list", "table", "inet", "tortie"]);
    let mut v: Value = serde_json::from_str(&text).expect("nft json");
    strip_handles(&mut v);
    let mut n = Normalised {
        objects: BTreeSet::new(),
        rules: BTreeMap::new(),
    };
    for mut obj in v["nftables"].as_array().cloned().unwrap_or_default() {
        if obj.get("metainfo").is_some() {
            continue;
        }
        if let Some(rule) = obj.get("rule") {
            let chain = rule["chain"].as_str().unwrap_or_default().to_string();
            n.rules.entry(chain).or_default().push(rule.to_string());
            continue;
        }
        for kind in ["set", "map"] {
            if let Some(Value::Array(elems)) = obj.get_mut(kind).and_then(|s| s.get_mut("elem")) {
                elems.sort_by_key(|e| e.to_string());
            }
        }
        n.objects.insert(obj.to_string());
    }
    n
}
