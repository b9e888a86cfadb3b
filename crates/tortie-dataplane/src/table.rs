//! The nftables table as plain data, and how each part is written in the nft language.
//!
//! [`NftTable`] holds what one `inet tortie` table should contain: named sets, verdict maps
//! and chains with their rules as nft-language text. It is what [`render`](crate::render::render) produces
//! and what [`crate::diff`] compares; nothing here touches the kernel.
//!
//! Invariants the writers rely on (upheld by the renderer):
//! - every object name is a plain nft identifier ([`nft_name`]); nft 1.0.6 (Debian 12) accepts
//!   no quoted chain or set names anywhere, so names that are not identifiers are rewritten,
//!   never quoted;
//! - every set, map and chain a rule or map element references exists in the same table;
//! - elements of interval sets do not overlap (they are aggregated), so an element can be
//!   deleted exactly as it was added.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Address family of the table.
pub const TABLE_FAMILY: &str = "inet";
/// Name of the table.
pub const TABLE_NAME: &str = "tortie";
/// `inet tortie`, as commands name the table.
pub const TABLE: &str = "inet tortie";

/// Longest object name we write as is; longer ones are shortened with a hash. (The kernel
/// allows 255 bytes since Linux 4.15; staying well below keeps listings readable.)
pub const MAX_NAME_LEN: usize = 128;
/// nft rejects comments longer than this (bytes).
pub const MAX_COMMENT_LEN: usize = 128;
/// The kernel's log prefix limit is 128 bytes including the terminating NUL.
pub const MAX_LOG_PREFIX_LEN: usize = 127;

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetDef {
    /// nft type, e.g. `ipv4_addr` or `ipv4_addr . inet_proto . inet_service`.
    pub type_: String,
    /// `flags interval` (sets of CIDRs).
    pub interval: bool,
    /// Elements as nft literals (`10.0.0.0/8`, `10.244.1.10 . 6 . 80`). Shared, so that an
    /// unchanged set is carried from one rendering to the next without copying or comparing
    /// its elements (`Arc` equality checks the pointer first).
    pub elements: Arc<BTreeSet<String>>,
}

/// A named verdict map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapDef {
    /// nft key type, e.g. `ifname`.
    pub key_type: String,
    /// Key literal (as written, e.g. `"calia1"` with its quotes) → verdict (`goto fw-calia1`).
    pub elements: BTreeMap<String, String>,
}

/// A chain: base chains carry their hook specification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainDef {
    /// `type filter hook forward priority filter; policy accept;` for base chains.
    pub hook: Option<String>,
    /// Rules as nft statements, in order.
    pub rules: Vec<String>,
}

/// The whole `inet tortie` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NftTable {
    pub sets: BTreeMap<String, SetDef>,
    pub maps: BTreeMap<String, MapDef>,
    pub chains: BTreeMap<String, ChainDef>,
}

impl NftTable {
    /// The `table inet tortie { ... }` block that creates the table with everything in it.
    /// Sets and maps come first; nft resolves jumps and map verdicts to chains declared
    /// anywhere in the same block.
    pub fn definition(&self) -> String {
        let mut out = format!("table {TABLE} {{\n");
        for (name, s) in &self.sets {
            let _ = writeln!(out, "\tset {name} {{");
            for line in set_body(s) {
                let _ = writeln!(out, "\t\t{line}");
            }
            if !s.elements.is_empty() {
                let _ = writeln!(out, "\t\telements = {{ {} }}", join(s.elements.iter()));
            }
            out.push_str("\t}\n");
        }
        for (name, m) in &self.maps {
            let _ = writeln!(out, "\tmap {name} {{");
            let _ = writeln!(out, "\t\ttype {} : verdict", m.key_type);
            if !m.elements.is_empty() {
                let _ = writeln!(out, "\t\telements = {{ {} }}", map_elements(&m.elements));
            }
            out.push_str("\t}\n");
        }
        for (name, c) in &self.chains {
            let _ = writeln!(out, "\tchain {name} {{");
            if let Some(h) = &c.hook {
                let _ = writeln!(out, "\t\t{h}");
            }
            for r in &c.rules {
                let _ = writeln!(out, "\t\t{r}");
            }
            out.push_str("\t}\n");
        }
        out.push_str("}\n");
        out
    }
}

/// The declaration lines of a set (without elements).
pub(crate) fn set_body(s: &SetDef) -> Vec<String> {
    let mut v = vec![format!("type {}", s.type_)];
    if s.interval {
        // No `auto-merge`: merged elements could no longer be deleted one by one.
        v.push("flags interval".to_string());
    }
    v
}

/// `a, b, c`.
pub(crate) fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items
        .into_iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"k" : goto c, ...`.
pub(crate) fn map_elements<'a>(
    items: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> String {
    items
        .into_iter()
        .map(|(k, v)| format!("{k} : {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether nft's scanner reads `s` as one plain identifier that is not a keyword.
///
/// nft identifiers are `[a-zA-Z_.][a-zA-Z0-9/\-_.]*`, but keywords (`tcp`, `ip6`,
/// `auto-merge`, ...) are not names; every name we generate carries a prefix with a `-`
/// (`pi-`, `s4-`, `fw-`), and no keyword starts with one of those. We therefore accept only
/// names that start with a letter, contain a `-` and use the identifier alphabet.
pub fn is_plain_name(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    first.is_ascii_alphabetic()
        && s.len() <= MAX_NAME_LEN
        && s.contains('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
}

/// The nft name for one of our objects: `raw` itself when it is a plain identifier
/// ([`is_plain_name`]), otherwise its allowed characters (others become `_`), shortened,
/// plus `_` and 16 hex digits of SHA-256 of `raw` so that distinct names stay distinct.
pub fn nft_name(raw: &str) -> String {
    if is_plain_name(raw) {
        return raw.to_string();
    }
    let mut clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME_LEN - 40)
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_alphabetic()) {
        clean.insert_str(0, "x-");
    }
    if !clean.contains('-') {
        clean.push('-');
    }
    let digest = Sha256::digest(raw.as_bytes());
    let mut hex = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(hex, "{b:02x}");
    }
    format!("{clean}_{hex}")
}

/// A quoted nft string with at most `max` bytes of content. nft strings have no escapes, so
/// `"` becomes `'`, control characters become spaces, and `$` (variable expansion in some
/// positions) becomes `_` when `no_dollar`.
fn quoted(s: &str, max: usize, no_dollar: bool) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 2);
    out.push('"');
    let mut len = 0;
    for c in s.chars() {
        let c = match c {
            '"' => '\'',
            '$' if no_dollar => '_',
            c if c.is_control() => ' ',
            c => c,
        };
        if len + c.len_utf8() > max {
            break;
        }
        len += c.len_utf8();
        out.push(c);
    }
    out.push('"');
    out
}

/// `comment "..."` (at most 128 bytes).
pub fn comment(s: &str) -> String {
    format!("comment {}", quoted(s, MAX_COMMENT_LEN, false))
}

/// A quoted log prefix (at most 127 bytes, no `$`).
pub fn log_prefix(s: &str) -> String {
    quoted(s, MAX_LOG_PREFIX_LEN, true)
}

/// A quoted interface name for a map key, or `None` if nft could not match it exactly
/// (longer than 15 bytes, or containing `"`, `*`, `\` or control characters).
pub fn ifname_literal(iface: &str) -> Option<String> {
    let ok = !iface.is_empty()
        && iface.len() <= 15
        && !iface
            .chars()
            .any(|c| c == '"' || c == '*' || c == '\\' || c.is_control() || c.is_whitespace());
    ok.then(|| format!("\"{iface}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_through() {
        for n in [
            "pi-knp/x/allow",
            "pri-kns.default",
            "s4-Ab_3-x",
            "fw-calia1",
        ] {
            assert!(is_plain_name(n), "{n}");
            assert_eq!(nft_name(n), n);
        }
    }

    #[test]
    fn other_names_are_rewritten_and_stay_distinct() {
        for n in ["pi-a:b", "tcp", "ip6", "1abc", "pi-a\\b", "", "fw-cali@x"] {
            let m = nft_name(n);
            assert!(is_plain_name(&m), "{n} -> {m}");
            assert_ne!(m, n);
        }
        assert_ne!(nft_name("pi-a:b"), nft_name("pi-a@b"));
        let long = format!("pi-{}", "a".repeat(300));
        let m = nft_name(&long);
        assert!(m.len() <= MAX_NAME_LEN, "{}", m.len());
        assert!(is_plain_name(&m));
    }

    #[test]
    fn comments_are_bounded_and_unquoted() {
        assert_eq!(comment("a \"b\"\n"), "comment \"a 'b' \"");
        let c = comment(&"é".repeat(100));
        assert_eq!(c.len(), "comment \"\"".len() + 128);
        assert_eq!(log_prefix("x $y: "), "\"x _y: \"");
        assert_eq!(log_prefix(&"p".repeat(200)).len(), 127 + 2);
    }

    #[test]
    fn interface_literals() {
        assert_eq!(ifname_literal("calia1").as_deref(), Some("\"calia1\""));
        assert_eq!(ifname_literal("cali*"), None);
        assert_eq!(ifname_literal("a\"b"), None);
        assert_eq!(ifname_literal("0123456789abcdef"), None);
    }
}
