//! Sysctls of a network namespace.
//!
//! `/proc/sys/net` shows the namespace of the task that opens it, so the writes happen on a
//! thread inside the namespace ([`NetNs::run`]). Keys are paths under `/proc/sys` with `/`
//! separators (`net/ipv4/conf/cali1234/proxy_arp`), because interface names may contain dots.

use std::path::Path;

use crate::{Error, NetNs};

/// The `/proc/sys` path of a per-interface setting, e.g.
/// `iface_key("ipv4", "conf", "cali0ab", "proxy_arp")` = `net/ipv4/conf/cali0ab/proxy_arp`.
pub fn iface_key(family: &str, section: &str, iface: &str, setting: &str) -> String {
    format!("net/{family}/{section}/{iface}/{setting}")
}

fn full_path(key: &str) -> Result<std::path::PathBuf, Error> {
    let key = key.trim_start_matches('/');
    if key.is_empty()
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::Invalid {
            what: "sysctl key".to_string(),
            reason: format!("{key:?} is not a path under /proc/sys"),
        });
    }
    Ok(Path::new("/proc/sys").join(key))
}

/// Writes every `(key, value)` inside `ns`, in order, stopping at the first failure.
pub fn write_sysctls(ns: &NetNs, entries: &[(String, String)]) -> Result<(), Error> {
    let paths = entries
        .iter()
        .map(|(k, v)| full_path(k).map(|p| (k, p, v)))
        .collect::<Result<Vec<_>, _>>()?;
    ns.run(|| {
        for (key, path, value) in paths {
            std::fs::write(&path, value.as_bytes()).map_err(|source| Error::Sysctl {
                path: key.clone(),
                source,
            })?;
        }
        Ok(())
    })?
}

/// Reads one sysctl inside `ns` (trailing newline removed).
pub fn read_sysctl(ns: &NetNs, key: &str) -> Result<String, Error> {
    let path = full_path(key)?;
    ns.run(|| {
        std::fs::read_to_string(&path)
            .map(|s| s.trim_end().to_string())
            .map_err(|source| Error::Sysctl {
                path: key.to_string(),
                source,
            })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            iface_key("ipv4", "conf", "vxlan.calico", "proxy_arp"),
            "net/ipv4/conf/vxlan.calico/proxy_arp"
        );
        assert!(full_path("net/ipv4/../../etc").is_err());
        assert!(full_path("").is_err());
        assert_eq!(
            full_path("/net/ipv4/ip_forward").expect("path"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
