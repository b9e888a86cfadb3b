//! The CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`), read into a value so plugin logic never touches the process env.

use std::collections::BTreeMap;

use crate::spec::{CniError, Command, code};

/// The parsed CNI environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `IP`, ...).
    pub args: BTreeMap<String, String>,
    pub path: String,
}

impl CniEnv {
    /// Reads from a variable lookup (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command: Command = get("CNI_COMMAND")
            .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set"))?
            .parse()?;
        let need = |k: &str| -> Result<String, CniError> {
            match get(k) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => Err(CniError::new(
                    code::INVALID_ENV,
                    format!("{k} is required for this command"),
                )),
            }
        };
        let container_id = match command {
            Command::Add | Command::Del | Command::Check => need("CNI_CONTAINERID")?,
            _ => get("CNI_CONTAINERID").unwrap_or_default(),
        };
        let ifname = match command {
            Command::Add | Command::Del | Command::Check => need("CNI_IFNAME")?,
            _ => get("CNI_IFNAME").unwrap_or_default(),
        };
        let netns = match command {
            Command::Add | Command::Check => need("CNI_NETNS")?,
            _ => get("CNI_NETNS").unwrap_or_default(),
        };
        Ok(CniEnv {
            command,
            container_id,
            netns,
            ifname,
            args: parse_args(&get("CNI_ARGS").unwrap_or_default())?,
            path: get("CNI_PATH").unwrap_or_default(),
        })
    }

    pub fn pod_namespace(&self) -> Option<&str> {
        self.args
            .get("K8S_POD_NAMESPACE")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.args
            .get("K8S_POD_NAME")
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// Parses `K1=V1;K2=V2`.
pub fn parse_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for part in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS entry {part:?} is not KEY=VALUE"),
            ));
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env() {
        let vars: BTreeMap<&str, &str> = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web",
            ),
        ]
        .into();
        let env = CniEnv::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.pod_namespace(), Some("ns"));
        assert_eq!(env.pod_name(), Some("web"));
    }

    #[test]
    fn missing_container_id_is_invalid_env() {
        let e =
            CniEnv::from_lookup(|k| (k == "CNI_COMMAND").then(|| "DEL".to_string())).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("CNI_CONTAINERID"));
    }

    #[test]
    fn bad_args() {
        assert!(parse_args("A=1;B").is_err());
        assert_eq!(parse_args("").unwrap().len(), 0);
    }
}
