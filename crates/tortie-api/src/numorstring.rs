//! Calico's "number or string" field types: protocols, ports and AS numbers.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IP protocol, by name (`TCP`, `UDP`, `ICMP`, `ICMPv6`, `SCTP`, `UDPLite`) or number 1–255.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    Name(String),
    Number(u8),
}

/// Protocol names Calico accepts (case-sensitive).
pub const PROTOCOL_NAMES: [&str; 6] = ["TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite"];

impl Protocol {
    /// The protocol number, if the name is known.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Number(n) => Some(*n),
            Protocol::Name(s) => match s.to_ascii_lowercase().as_str() {
                "tcp" => Some(6),
                "udp" => Some(17),
                "icmp" => Some(1),
                "icmpv6" => Some(58),
                "sctp" => Some(132),
                "udplite" => Some(136),
                _ => None,
            },
        }
    }

    /// True for protocols that have ports (TCP, UDP, SCTP, UDPLite).
    pub fn supports_ports(&self) -> bool {
        matches!(self.number(), Some(6 | 17 | 132 | 136))
    }

    pub fn is_valid(&self) -> bool {
        match self {
            Protocol::Number(n) => *n >= 1,
            Protocol::Name(s) => PROTOCOL_NAMES.contains(&s.as_str()),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Name(s) => f.write_str(s),
            Protocol::Number(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Name(n) => s.serialize_str(n),
            Protocol::Number(n) => s.serialize_u8(*n),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(i64),
    Str(String),
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => u8::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .map(Protocol::Number)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("protocol number {n} is out of range 1-255"))
                }),
            NumOrStr::Str(s) => match s.parse::<u8>() {
                Ok(n) if n >= 1 => Ok(Protocol::Number(n)),
                _ => Ok(Protocol::Name(s)),
            },
        }
    }
}

/// A port match: a number, an inclusive range `min:max`, or a named port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    Range { min: u16, max: u16 },
    Named(String),
}

impl Port {
    pub fn single(p: u16) -> Port {
        Port::Range { min: p, max: p }
    }

    pub fn is_named(&self) -> bool {
        matches!(self, Port::Named(_))
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Range { min, max } if min == max => write!(f, "{min}"),
            Port::Range { min, max } => write!(f, "{min}:{max}"),
            Port::Named(n) => f.write_str(n),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Range { min, max } if min == max => s.serialize_u16(*min),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

fn parse_port_num(s: &str) -> Result<u16, String> {
    s.trim()
        .parse::<u32>()
        .ok()
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("port {s:?} is not a number in 0-65535"))
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => u16::try_from(n)
                .map(Port::single)
                .map_err(|_| D::Error::custom(format!("port {n} is out of range 0-65535"))),
            NumOrStr::Str(s) => {
                if let Some((a, b)) = s.split_once(':') {
                    let min = parse_port_num(a).map_err(D::Error::custom)?;
                    let max = parse_port_num(b).map_err(D::Error::custom)?;
                    if min > max {
                        return Err(D::Error::custom(format!(
                            "port range {s:?}: minimum {min} is greater than maximum {max}"
                        )));
                    }
                    Ok(Port::Range { min, max })
                } else if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
                    parse_port_num(&s)
                        .map(Port::single)
                        .map_err(D::Error::custom)
                } else if is_port_name(&s) {
                    Ok(Port::Named(s))
                } else {
                    Err(D::Error::custom(format!(
                        "port {s:?} is not a number, a range min:max, or a valid port name"
                    )))
                }
            }
        }
    }
}

/// Valid named-port names: 1–15 chars of `[a-z0-9-]`, at least one letter, no leading,
/// trailing or doubled `-` (IANA service name rules, as Kubernetes applies them).
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.chars().any(|c| c.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// A BGP AS number: a plain number, or `asdot` notation `high.low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AsNumber(pub u32);

impl Serialize for AsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for AsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let bad = |v: &dyn fmt::Display| {
            D::Error::custom(format!(
                "AS number {v} is out of range 0-4294967295 (or asdot high.low)"
            ))
        };
        match NumOrStr::deserialize(d)? {
            NumOrStr::Num(n) => u32::try_from(n).map(AsNumber).map_err(|_| bad(&n)),
            NumOrStr::Str(s) => {
                if let Some((hi, lo)) = s.split_once('.') {
                    let hi: u16 = hi.parse().map_err(|_| bad(&s))?;
                    let lo: u16 = lo.parse().map_err(|_| bad(&s))?;
                    Ok(AsNumber((u32::from(hi) << 16) | u32::from(lo)))
                } else {
                    s.parse::<u32>().map(AsNumber).map_err(|_| bad(&s))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p: Vec<Port> = serde_json::from_str(r#"[80, "8000:8080", "http", "443"]"#).unwrap();
        assert_eq!(p[0], Port::single(80));
        assert_eq!(
            p[1],
            Port::Range {
                min: 8000,
                max: 8080
            }
        );
        assert_eq!(p[2], Port::Named("http".into()));
        assert_eq!(p[3], Port::single(443));
        assert!(serde_json::from_str::<Port>(r#""9:1""#).is_err());
        assert!(serde_json::from_str::<Port>("70000").is_err());
        assert!(serde_json::from_str::<Port>(r#""bad name!""#).is_err());
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"[80,"8000:8080","http",443]"#
        );
    }

    #[test]
    fn as_numbers() {
        assert_eq!(
            serde_json::from_str::<AsNumber>("64512").unwrap(),
            AsNumber(64512)
        );
        assert_eq!(
            serde_json::from_str::<AsNumber>(r#""1.10""#).unwrap(),
            AsNumber(65546)
        );
        assert!(serde_json::from_str::<AsNumber>("-1").is_err());
    }

    #[test]
    fn protocols() {
        let p: Protocol = serde_json::from_str(r#""TCP""#).unwrap();
        assert_eq!(p.number(), Some(6));
        assert!(serde_json::from_str::<Protocol>("0").is_err());
        assert_eq!(
            serde_json::from_str::<Protocol>("17").unwrap(),
            Protocol::Number(17)
        );
    }
}
