//! Choosing a datastore: the `DatastoreUrl` syntax, its sources, and [`connect`].
//!
//! Syntax:
//! - `file:PATH` (also `file://PATH`): the embedded SQLite store; default
//!   `file:/var/lib/tortie/store.db`;
//! - `etcd://HOST:PORT[,HOST:PORT...]` (also `etcd+http://`): etcd v3 over plain HTTP;
//! - `memory:`: a fresh in-process store (tests only; nothing is shared between processes).
//!
//! Precedence in [`DatastoreUrl::from_env_or`]: the CLI flag, then `TORTIE_DATASTORE`, then
//! Calico's `DATASTORE_TYPE=etcdv3` with `ETCD_ENDPOINTS`, then the default. Parsing is pure;
//! only `from_env_or` reads the environment.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use crate::etcd::{DEFAULT_TIMEOUT, EtcdStore};
use crate::memory::MemoryStore;
use crate::sqlite::SqliteStore;
use crate::{Store, StoreError};

/// Where the default embedded store lives.
pub const DEFAULT_FILE: &str = "/var/lib/tortie/store.db";

/// Environment variable naming the datastore URL.
pub const ENV_DATASTORE: &str = "TORTIE_DATASTORE";

/// Calico's datastore type variable (`etcdv3` or `kubernetes`).
pub const ENV_CALICO_DATASTORE_TYPE: &str = "DATASTORE_TYPE";

/// Calico's comma-separated etcd endpoint list.
pub const ENV_CALICO_ETCD_ENDPOINTS: &str = "ETCD_ENDPOINTS";

/// Calico's default etcd endpoint when `DATASTORE_TYPE=etcdv3` names none.
const CALICO_DEFAULT_ETCD: &str = "http://127.0.0.1:2379";

const SYNTAX: &str = "expected file:PATH, etcd://HOST:PORT[,HOST:PORT...] or memory:";

/// A parsed datastore location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatastoreUrl {
    /// The embedded SQLite file at this path.
    File(PathBuf),
    /// etcd v3 endpoints, each normalised to `http://host:port`.
    Etcd(Vec<String>),
    /// A fresh in-process store.
    Memory,
}

impl Default for DatastoreUrl {
    fn default() -> Self {
        DatastoreUrl::File(PathBuf::from(DEFAULT_FILE))
    }
}

impl fmt::Display for DatastoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatastoreUrl::File(path) => write!(f, "file:{}", path.display()),
            DatastoreUrl::Etcd(endpoints) => {
                let hosts: Vec<&str> = endpoints
                    .iter()
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                write!(f, "etcd://{}", hosts.join(","))
            }
            DatastoreUrl::Memory => f.write_str("memory:"),
        }
    }
}

impl FromStr for DatastoreUrl {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn invalid(value: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidConfig {
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl DatastoreUrl {
    /// Parses one URL in the syntax described in the module docs.
    pub fn parse(value: &str) -> Result<Self, StoreError> {
        let trimmed = value.trim();
        if let Some(path) = trimmed.strip_prefix("file:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(invalid(
                    value,
                    "file: needs a path, e.g. file:/var/lib/tortie/store.db",
                ));
            }
            return Ok(DatastoreUrl::File(PathBuf::from(path)));
        }
        let etcd_hosts = trimmed
            .strip_prefix("etcd+http://")
            .or_else(|| trimmed.strip_prefix("etcd://"));
        if let Some(hosts) = etcd_hosts {
            return parse_endpoints(value, hosts.split(','), false).map(DatastoreUrl::Etcd);
        }
        if trimmed.starts_with("etcd+https://") {
            return Err(invalid(value, "TLS to etcd is not supported yet"));
        }
        if matches!(trimmed, "memory:" | "memory" | "memory://") {
            return Ok(DatastoreUrl::Memory);
        }
        Err(invalid(value, SYNTAX))
    }

    /// Resolves the datastore from the CLI flag and the process environment (see the module
    /// docs for precedence).
    pub fn from_env_or(cli_value: Option<&str>) -> Result<Self, StoreError> {
        Self::resolve(cli_value, |name| std::env::var(name).ok())
    }

    /// Like [`DatastoreUrl::from_env_or`] with the environment given as a lookup function.
    pub fn resolve(
        cli_value: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StoreError> {
        if let Some(value) = cli_value {
            return Self::parse(value);
        }
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(value) = set(ENV_DATASTORE) {
            return Self::parse(&value);
        }
        match set(ENV_CALICO_DATASTORE_TYPE) {
            None => Ok(Self::default()),
            Some(kind) if kind.trim() == "etcdv3" => {
                let endpoints = set(ENV_CALICO_ETCD_ENDPOINTS)
                    .unwrap_or_else(|| CALICO_DEFAULT_ETCD.to_owned());
                parse_endpoints(&endpoints, endpoints.split(','), true).map(DatastoreUrl::Etcd)
            }
            Some(kind) => Err(invalid(
                &format!("{ENV_CALICO_DATASTORE_TYPE}={kind}"),
                "only etcdv3 is supported (or set TORTIE_DATASTORE)",
            )),
        }
    }
}

/// Parses `host:port` items (with an optional `http://` when `allow_scheme`), normalised to
/// `http://host:port`. `value` is the whole setting, for errors.
fn parse_endpoints<'a>(
    value: &str,
    items: impl Iterator<Item = &'a str>,
    allow_scheme: bool,
) -> Result<Vec<String>, StoreError> {
    let mut endpoints = Vec::new();
    for item in items {
        let item = item.trim();
        if item.starts_with("https://") {
            return Err(invalid(
                value,
                format!("{item}: TLS to etcd is not supported yet"),
            ));
        }
        let hostport = match item.strip_prefix("http://") {
            Some(rest) if allow_scheme => rest,
            Some(_) => {
                return Err(invalid(
                    value,
                    format!("{item}: write HOST:PORT without a scheme"),
                ));
            }
            None => item,
        };
        let hostport = hostport.trim_end_matches('/');
        let Some((host, port)) = hostport.rsplit_once(':') else {
            return Err(invalid(value, format!("{item:?} is not HOST:PORT")));
        };
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(invalid(value, format!("{item:?} has no valid host")));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(invalid(value, format!("{item:?} has no valid port")));
        }
        endpoints.push(format!("http://{hostport}"));
    }
    if endpoints.is_empty() {
        return Err(invalid(value, "no etcd endpoints given"));
    }
    Ok(endpoints)
}

/// Opens the datastore `url` names.
pub async fn connect(url: &DatastoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        DatastoreUrl::File(path) => Arc::new(SqliteStore::open(path).await?),
        DatastoreUrl::Etcd(endpoints) => {
            Arc::new(EtcdStore::connect(endpoints, DEFAULT_TIMEOUT).await?)
        }
        DatastoreUrl::Memory => Arc::new(MemoryStore::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn etcd(hosts: &[&str]) -> DatastoreUrl {
        DatastoreUrl::Etcd(hosts.iter().map(|h| format!("http://{h}")).collect())
    }

    #[test]
    fn parses_file_urls() {
        let want = DatastoreUrl::File(PathBuf::from("/tmp/x.db"));
        assert_eq!(DatastoreUrl::parse("file:/tmp/x.db").unwrap(), want);
        assert_eq!(DatastoreUrl::parse("file:///tmp/x.db").unwrap(), want);
        assert_eq!(
            DatastoreUrl::parse("file:rel/x.db").unwrap(),
            DatastoreUrl::File(PathBuf::from("rel/x.db"))
        );
        assert_eq!(want.to_string(), "file:/tmp/x.db");
    }

    #[test]
    fn parses_etcd_urls() {
        let two = etcd(&["10.0.0.1:2379", "node-b:2379"]);
        assert_eq!(
            DatastoreUrl::parse("etcd://10.0.0.1:2379,node-b:2379").unwrap(),
            two
        );
        assert_eq!(
            DatastoreUrl::parse("etcd+http://10.0.0.1:2379, node-b:2379").unwrap(),
            two
        );
        assert_eq!(two.to_string(), "etcd://10.0.0.1:2379,node-b:2379");
        assert_eq!(
            DatastoreUrl::parse("etcd://[::1]:2379").unwrap(),
            etcd(&["[::1]:2379"])
        );
    }

    #[test]
    fn parses_memory_and_round_trips() {
        assert_eq!(
            DatastoreUrl::parse("memory:").unwrap(),
            DatastoreUrl::Memory
        );
        for text in ["memory:", "file:/a/b.db", "etcd://h:1,g:2"] {
            let url: DatastoreUrl = text.parse().unwrap();
            assert_eq!(url.to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_values_naming_them() {
        for bad in [
            "",
            "file:",
            "redis://x:1",
            "etcd://",
            "etcd://host",
            "etcd://host:notaport",
            "etcd://host:0",
            "etcd://:2379",
            "etcd://http://h:2379",
            "etcd+https://h:2379",
            "/var/lib/tortie/store.db",
        ] {
            match DatastoreUrl::parse(bad) {
                Err(StoreError::InvalidConfig { value, reason }) => {
                    assert_eq!(value, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn default_is_the_file_store() {
        let url = DatastoreUrl::resolve(None, env(&[])).unwrap();
        assert_eq!(url.to_string(), "file:/var/lib/tortie/store.db");
    }

    #[test]
    fn precedence_cli_then_tortie_env_then_calico_env() {
        let all = env(&[
            ("TORTIE_DATASTORE", "file:/env.db"),
            ("DATASTORE_TYPE", "etcdv3"),
            ("ETCD_ENDPOINTS", "http://a:2379,http://b:2379"),
        ]);
        assert_eq!(
            DatastoreUrl::resolve(Some("memory:"), &all).unwrap(),
            DatastoreUrl::Memory
        );
        assert_eq!(
            DatastoreUrl::resolve(None, &all).unwrap(),
            DatastoreUrl::File(PathBuf::from("/env.db"))
        );
        let calico = env(&[
            ("TORTIE_DATASTORE", " "),
            ("DATASTORE_TYPE", "etcdv3"),
            ("ETCD_ENDPOINTS", "http://a:2379,http://b:2379"),
        ]);
        assert_eq!(
            DatastoreUrl::resolve(None, calico).unwrap(),
            etcd(&["a:2379", "b:2379"])
        );
        let calico_default = env(&[("DATASTORE_TYPE", "etcdv3")]);
        assert_eq!(
            DatastoreUrl::resolve(None, calico_default).unwrap(),
            etcd(&["127.0.0.1:2379"])
        );
    }

    #[test]
    fn calico_env_errors_name_the_value() {
        let kube = env(&[("DATASTORE_TYPE", "kubernetes")]);
        let err = DatastoreUrl::resolve(None, kube).unwrap_err();
        assert!(
            err.to_string().contains("DATASTORE_TYPE=kubernetes"),
            "{err}"
        );
        let tls = env(&[
            ("DATASTORE_TYPE", "etcdv3"),
            ("ETCD_ENDPOINTS", "https://a:2379"),
        ]);
        let err = DatastoreUrl::resolve(None, tls).unwrap_err();
        assert!(err.to_string().contains("https://a:2379"), "{err}");
        let cli = DatastoreUrl::resolve(Some("bogus"), env(&[])).unwrap_err();
        assert!(cli.to_string().contains("\"bogus\""), "{cli}");
    }
}
