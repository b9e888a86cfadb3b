//! Field validators shared by the kinds, mirroring Calico's v3 validator.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Errors;

/// Which naming rule a kind's `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// Lower-case alphanumerics, `-` and `.`, at most 253 characters.
    Dns1123Subdomain,
    /// Lower-case alphanumerics and `-`, at most 63 characters (tiers, namespaces).
    Dns1123Label,
    /// Profiles: `[A-Za-z0-9_.-]+` (Kubernetes generates `kns.<ns>` and `ksa.<ns>.<sa>`).
    Profile,
}

impl NameRule {
    pub fn check(self, errs: &mut Errors, field: &str, name: &str) {
        match self {
            NameRule::Dns1123Subdomain => dns1123_subdomain(errs, field, name),
            NameRule::Dns1123Label => dns1123_label(errs, field, name),
            NameRule::Profile => {
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if !ok {
                    errs.add(field, name, "must start with a letter or digit and consist of letters, digits, '_', '.' or '-'");
                }
            }
        }
    }
}

fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Kubernetes DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_lower_alnum(c) || c == '-')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

pub fn dns1123_label(errs: &mut Errors, field: &str, s: &str) {
    if !is_dns1123_label(s) {
        errs.add(
            field,
            s,
            "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending \
             with a letter or digit, at most 63 characters",
        );
    }
}

/// Kubernetes DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars().all(|c| is_lower_alnum(c) || c == '-' || c == '.')
        && s.starts_with(is_lower_alnum)
        && s.ends_with(is_lower_alnum)
}

pub fn dns1123_subdomain(errs: &mut Errors, field: &str, s: &str) {
    if !is_dns1123_subdomain(s) {
        errs.add(
            field,
            s,
            "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and \
             ending with a letter or digit, at most 253 characters",
        );
    }
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A Kubernetes label key: `[prefix/]name`.
pub fn label_key(errs: &mut Errors, key: &str) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(is_dns1123_subdomain);
    if !prefix_ok || !is_qualified_name_part(name) {
        errs.add(
            key,
            key,
            "invalid key: expected an optional DNS subdomain prefix and '/', then a name of at \
             most 63 letters, digits, '-', '_' or '.'",
        );
    }
}

/// A Kubernetes label value: empty, or a qualified-name part.
pub fn label_value(errs: &mut Errors, key: &str, value: &str) {
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.add(
            key,
            value,
            "invalid label value: at most 63 letters, digits, '-', '_' or '.', starting and \
             ending with a letter or digit",
        );
    }
}

/// Parses a CIDR, accepting a bare IP as a host prefix. Returns the network as written.
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net);
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Validates a CIDR (or bare IP) field; returns the parsed network.
pub fn cidr(errs: &mut Errors, field: &str, s: &str) -> Option<IpNet> {
    let net = parse_cidr(s);
    if net.is_none() {
        errs.add(
            field,
            s,
            "not a valid CIDR (expected e.g. 10.0.0.0/16 or fd00::/64)",
        );
    }
    net
}

/// Validates a strict CIDR (network/prefix, no bare IP).
pub fn strict_cidr(errs: &mut Errors, field: &str, s: &str) -> Option<IpNet> {
    match s.parse::<IpNet>() {
        Ok(n) => Some(n),
        Err(_) => {
            errs.add(
                field,
                s,
                "not a valid CIDR (expected e.g. 10.0.0.0/16 or fd00::/64)",
            );
            None
        }
    }
}

/// Validates an IP address field.
pub fn ip(errs: &mut Errors, field: &str, s: &str) -> Option<IpAddr> {
    let ip = s.parse::<IpAddr>().ok();
    if ip.is_none() {
        errs.add(field, s, "not a valid IP address");
    }
    ip
}

/// Validates a selector expression.
pub fn selector(errs: &mut Errors, field: &str, s: &str) {
    if let Err(e) = tortie_selector::Selector::parse(s) {
        errs.add(field, s, format!("invalid selector: {e}"));
    }
}

/// Linux interface names: 1–15 characters, no '/', whitespace or ':' .
pub fn interface_name(errs: &mut Errors, field: &str, s: &str) {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !ok {
        errs.add(
            field,
            s,
            "not a valid interface name (1-15 letters, digits, '-', '_', '.', '@')",
        );
    }
}

/// A MAC address `aa:bb:cc:dd:ee:ff`.
pub fn mac(errs: &mut Errors, field: &str, s: &str) {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        errs.add(field, s, "not a valid MAC address");
    }
}

/// Checks that `s` is one of `allowed`.
pub fn one_of(errs: &mut Errors, field: &str, s: &str, allowed: &[&str]) {
    if !allowed.contains(&s) {
        errs.add(field, s, format!("must be one of {}", allowed.join(", ")));
    }
}

/// Go-style durations such as `90s`, `1m30s`, `500ms`, `1h`.
pub fn duration(errs: &mut Errors, field: &str, s: &str) {
    if parse_duration_secs(s).is_none() {
        errs.add(
            field,
            s,
            "not a valid duration (expected e.g. 90s, 5m, 1h30m, 500ms)",
        );
    }
}

/// Parses a Go duration string into seconds.
pub fn parse_duration_secs(s: &str) -> Option<f64> {
    if s == "0" {
        return Some(0.0);
    }
    let mut rest = s;
    let mut total = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// Label keys Calico sets itself; users may not set them on network sets.
pub const RESERVED_LABELS: [&str; 3] = [
    "projectcalico.org/namespace",
    "projectcalico.org/orchestrator",
    "projectcalico.org/serviceaccount",
];

/// Rejects reserved label keys in `labels` (reported at `metadata.labels`).
pub fn no_reserved_labels(errs: &mut Errors, labels: &std::collections::BTreeMap<String, String>) {
    for k in labels.keys() {
        if RESERVED_LABELS.contains(&k.as_str()) {
            errs.add_abs(
                "metadata.labels",
                k,
                "this label is reserved for Calico's own use",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_subdomain("default-ipv4-ippool"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("Upper"));
        assert!(!is_dns1123_subdomain("-lead"));
        assert!(!is_dns1123_label("a.b"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("90s"), Some(90.0));
        assert_eq!(parse_duration_secs("1m30s"), Some(90.0));
        assert_eq!(parse_duration_secs("500ms"), Some(0.5));
        assert_eq!(parse_duration_secs("abc"), None);
        assert_eq!(parse_duration_secs("5"), None);
    }

    #[test]
    fn label_keys() {
        let mut e = Errors::new();
        label_key(&mut e, "app");
        label_key(&mut e, "projectcalico.org/name");
        assert!(e.is_empty());
        label_key(&mut e, "bad key");
        label_key(&mut e, "Bad_/x");
        assert_eq!(e.into_vec().len(), 2);
    }
}
