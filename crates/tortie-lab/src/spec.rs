//! Values users type on the `lab` command line: `80/tcp` port specs, `k=v` label lists,
//! `NS/NAME` pod references. Parsing is pure.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A transport protocol the lab serves and probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`, `UDP`).
    pub fn k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!("unknown protocol {other:?} (expected tcp or udp)")),
        }
    }
}

/// One port and protocol, written `80/tcp` (a bare `80` means TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortProto {
    pub port: u16,
    pub protocol: Protocol,
}

impl PortProto {
    pub fn new(port: u16, protocol: Protocol) -> Self {
        PortProto { port, protocol }
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

impl FromStr for PortProto {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
        let port = parse_port(port)?;
        Ok(PortProto::new(port, proto.parse()?))
    }
}

impl Serialize for PortProto {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortProto {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a port number 1-65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("invalid port {:?} (expected 1-65535)", s.trim())),
    }
}

/// Parses `80/tcp,81/udp,...` into a sorted list without duplicates.
pub fn parse_port_protos(s: &str) -> Result<Vec<PortProto>, String> {
    let mut out = Vec::new();
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        out.push(item.parse::<PortProto>()?);
    }
    if out.is_empty() {
        return Err("give at least one PORT/PROTOCOL, e.g. 80/tcp".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Parses a comma-separated list with `item`, sorted, without duplicates.
pub fn parse_list<T: Ord>(
    s: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for i in s.split(',').filter(|i| !i.trim().is_empty()) {
        out.push(item(i.trim())?);
    }
    if out.is_empty() {
        return Err("the list is empty".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Parses `k=v,k2=v2`. Keys must be non-empty and unique; values may be empty. Whether keys
/// and values are valid Kubernetes labels is checked when the Pod record is validated.
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').filter(|i| !i.trim().is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(format!("label {item:?} is not KEY=VALUE"));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(format!("label {item:?} has an empty key"));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("label key {k:?} is given twice"));
        }
    }
    Ok(out)
}

/// A `80/tcp,81/udp` list as one command-line value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortProtoList(pub Vec<PortProto>);

impl FromStr for PortProtoList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_port_protos(s).map(PortProtoList)
    }
}

/// A `k=v,k2=v2` list as one command-line value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelList(pub BTreeMap<String, String>);

impl FromStr for LabelList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_labels(s).map(LabelList)
    }
}

/// A pod named `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for PodRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && !p.starts_with(['-', '.'])
                && !p.ends_with(['-', '.'])
        };
        match s.split_once('/') {
            Some((ns, name)) if ok(ns) && ok(name) && !name.contains('/') => Ok(PodRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            _ => Err(format!(
                "{s:?} is not NAMESPACE/NAME (lower-case letters, digits, '-' and '.')"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_specs_parse_sorted_and_deduplicated() {
        let got = parse_port_protos("81/udp, 80/tcp,80,81/TCP,80/udp").unwrap();
        let want = vec![
            PortProto::new(80, Protocol::Tcp),
            PortProto::new(80, Protocol::Udp),
            PortProto::new(81, Protocol::Tcp),
            PortProto::new(81, Protocol::Udp),
        ];
        assert_eq!(got, want);
        assert_eq!(
            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["80/tcp", "80/udp", "81/tcp", "81/udp"]
        );
    }

    #[test]
    fn serve_specs_reject_bad_input() {
        for bad in ["", "0/tcp", "70000/tcp", "80/sctp", "x/tcp", "80/", ","] {
            assert!(parse_port_protos(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn port_proto_serde_is_a_string() {
        let p = PortProto::new(53, Protocol::Udp);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"53/udp\"");
        assert_eq!(serde_json::from_str::<PortProto>(&json).unwrap(), p);
    }

    #[test]
    fn labels_parse() {
        let got = parse_labels("app=web, tier=front,empty=").unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got["app"], "web");
        assert_eq!(got["tier"], "front");
        assert_eq!(got["empty"], "");
        assert!(parse_labels("").unwrap().is_empty());
    }

    #[test]
    fn labels_reject_bad_input() {
        assert!(parse_labels("app").is_err());
        assert!(parse_labels("=x").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
    }

    #[test]
    fn pod_refs() {
        let p: PodRef = "x/a".parse().unwrap();
        assert_eq!((p.namespace.as_str(), p.name.as_str()), ("x", "a"));
        assert_eq!(p.to_string(), "x/a");
        for bad in ["a", "/a", "x/", "x/a/b", "X/a", "x/-a", "x/a b"] {
            assert!(bad.parse::<PodRef>().is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn lists_parse() {
        assert_eq!(parse_list("81,80,80", parse_port).unwrap(), vec![80, 81]);
        assert!(parse_list("", parse_port).is_err());
    }
}
