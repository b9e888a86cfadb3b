//! [`Store`] on etcd v3 through `etcd-client`.
//!
//! Mapping:
//! - `create` is a transaction guarded by `create_revision(key) == 0`;
//! - `update`/`delete` with an expected revision are transactions guarded by
//!   `mod_revision(key) == expected && create_revision(key) > 0` (the second compare stops a
//!   CAS against 0 from creating a missing key); the `else` branch reads the key so a failure
//!   can say whether it was absent (`NotFound`) or changed (`Conflict` with the actual revision);
//! - `watch(prefix, from)` is an etcd watch with `start_revision = from + 1`; etcd's
//!   "compacted" cancellation becomes [`WatchEvent::ResyncNeeded`];
//! - `compact(r)` discards history at and below `r` (etcd's compaction at `r + 1`, or at `r`
//!   when `r` is the current revision, since etcd cannot compact at a future revision).
//!
//! Nothing waits without a bound: connecting probes the cluster within the configured timeout,
//! and every unary RPC and watch creation is wrapped in the same timeout. Transport failures
//! and timeouts are reported as [`StoreError::Unavailable`].

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use tokio::sync::mpsc;

use crate::{
    KeyValue, ListResult, Revision, Store, StoreError, WATCH_BUFFER, WatchEvent, WatchStream,
};

/// Default bound on connecting and on every request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 keep-alive interval on the connection (watches notice a dead peer within about
/// this plus the timeout). etcd rejects pings more often than every 5 s.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// A store backed by an etcd v3 cluster. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// `etcd://host:port,...`, used in errors.
    name: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to `endpoints` (`http://host:port` or `host:port`) and checks that the cluster
    /// answers, all within `timeout`; fails with [`StoreError::Unavailable`] otherwise.
    pub async fn connect(endpoints: &[String], timeout: Duration) -> Result<Self, StoreError> {
        let name = format!(
            "etcd://{}",
            endpoints
                .iter()
                .map(|e| e.trim_start_matches("http://"))
                .collect::<Vec<_>>()
                .join(",")
        );
        if endpoints.is_empty() {
            return Err(StoreError::InvalidConfig {
                value: name,
                reason: "no etcd endpoints given".to_owned(),
            });
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, timeout);
        let attempt = async {
            let client = Client::connect(endpoints, Some(options))
                .await
                .map_err(|e| classify(&name, "connecting", e))?;
            let store = Self {
                client,
                name: name.clone(),
                timeout,
            };
            // The client connects lazily: a first request proves the cluster is there.
            store.revision().await?;
            Ok(store)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&name, "connecting", timeout)),
        }
    }

    /// Runs one request with the store's timeout, mapping its error.
    async fn call<T>(
        &self,
        what: &'static str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result.map_err(|e| classify(&self.name, what, e)),
            Err(_) => Err(timed_out(&self.name, what, self.timeout)),
        }
    }

    /// A guarded put or delete: runs `op` if `compares` hold, else reads the key to explain why
    /// not. Returns the new revision.
    async fn guarded(
        &self,
        what: &'static str,
        key: &str,
        compares: Vec<Compare>,
        op: TxnOp,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![op])
            .or_else(vec![TxnOp::get(key, None)]);
        let mut kv = self.client.kv_client();
        let response = self.call(what, kv.txn(txn)).await?;
        if response.succeeded() {
            return Ok(header_revision(response.header()));
        }
        let actual = response.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        Err(match (actual, expected) {
            (Some(_), None) => StoreError::AlreadyExists {
                key: key.to_owned(),
            },
            (Some(actual), Some(expected)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual,
            },
            (None, _) => StoreError::NotFound {
                key: key.to_owned(),
            },
        })
    }
}

/// Sorts an etcd client error into unavailable (transport, timeouts) or backend.
fn classify(datastore: &str, what: &str, error: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    let unavailable = match &error {
        E::TransportError(_) | E::IoError(_) | E::EndpointError(_) => true,
        E::GRpcStatus(status) => {
            let code = status.code() as i32;
            matches!(
                code,
                grpc_code::UNAVAILABLE | grpc_code::DEADLINE_EXCEEDED | grpc_code::CANCELLED
            ) || (code == grpc_code::UNKNOWN && is_transport_message(status.message()))
        }
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable {
            datastore: datastore.to_owned(),
            reason: format!("{what}: {error}"),
        }
    } else {
        StoreError::Backend(format!("{datastore}: {what}: {error}"))
    }
}

/// Whether a gRPC `Unknown` status is really a lost connection (tonic reports some broken
/// connections that way).
fn is_transport_message(message: &str) -> bool {
    [
        "transport error",
        "connect",
        "broken pipe",
        "connection reset",
    ]
    .iter()
    .any(|needle| message.to_ascii_lowercase().contains(needle))
}

/// gRPC status codes (the numbering is fixed by the gRPC spec).
mod grpc_code {
    pub(super) const CANCELLED: i32 = 1;
    pub(super) const UNKNOWN: i32 = 2;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const UNAVAILABLE: i32 = 14;
}

fn timed_out(datastore: &str, what: &str, timeout: Duration) -> StoreError {
    StoreError::Unavailable {
        datastore: datastore.to_owned(),
        reason: format!("{what}: no answer within {} ms", timeout.as_millis()),
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, etcd_client::ResponseHeader::revision)
}

fn to_key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_string(kv.key())?,
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn key_string(key: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(key.to_vec())
        .map_err(|e| StoreError::Backend(format!("etcd returned a non-UTF-8 key: {e}")))
}

/// Forwards etcd watch responses to the consumer until either side goes away.
async fn forward_watch(
    mut stream: etcd_client::WatchStream,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
    name: String,
) {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = tx.closed() => return,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                let reason = "watch stream closed by the server".to_owned();
                let _ = tx
                    .send(Err(StoreError::Unavailable {
                        datastore: name,
                        reason,
                    }))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(classify(&name, "watching", e))).await;
                return;
            }
        };
        if response.compact_revision() > 0 {
            // etcd keeps revision `compact_revision` itself; we report the last one discarded.
            let compacted_revision = response.compact_revision() - 1;
            let _ = tx
                .send(Ok(WatchEvent::ResyncNeeded { compacted_revision }))
                .await;
            return;
        }
        if response.canceled() {
            let reason = format!("watch cancelled: {}", response.cancel_reason());
            let _ = tx
                .send(Err(StoreError::Unavailable {
                    datastore: name,
                    reason,
                }))
                .await;
            return;
        }
        for event in response.events() {
            if tx.send(to_watch_event(event)).await.is_err() {
                return;
            }
        }
    }
}

fn to_watch_event(event: &etcd_client::Event) -> Result<WatchEvent, StoreError> {
    let kv = event
        .kv()
        .ok_or_else(|| StoreError::Backend("etcd watch event without a key".to_owned()))?;
    Ok(match event.event_type() {
        EventType::Put => WatchEvent::Put {
            kv: to_key_value(kv)?,
        },
        EventType::Delete => WatchEvent::Delete {
            key: key_string(kv.key())?,
            revision: kv.mod_revision(),
        },
    })
}

#[async_trait]
impl Store for EtcdStore {
    fn describe(&self) -> String {
        self.name.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.client.kv_client();
        let response = self.call("get", kv.get(key, None)).await?;
        response.kvs().first().map(to_key_value).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix();
        let response = self.call("list", kv.get(prefix, Some(options))).await?;
        let items = response
            .kvs()
            .iter()
            .map(to_key_value)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ListResult {
            items,
            revision: header_revision(response.header()),
        })
    }

    async fn list_keys(&self, prefix: &str) -> Result<crate::KeyList, StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_prefix().with_keys_only();
        let response = self
            .call("list keys", kv.get(prefix, Some(options)))
            .await?;
        let keys = response
            .kvs()
            .iter()
            .map(|k| {
                Ok((
                    k.key_str()
                        .map_err(|e| StoreError::Backend(e.to_string()))?
                        .to_owned(),
                    k.mod_revision(),
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(crate::KeyList {
            keys,
            revision: header_revision(response.header()),
        })
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        let compares = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        let op = TxnOp::put(key, value, None);
        self.guarded("create", key, compares, op, None).await
    }

    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let Some(expected) = expected else {
            let mut kv = self.client.kv_client();
            let response = self.call("put", kv.put(key, value, None)).await?;
            return Ok(header_revision(response.header()));
        };
        let compares = vec![
            Compare::mod_revision(key, CompareOp::Equal, expected),
            Compare::create_revision(key, CompareOp::Greater, 0),
        ];
        let op = TxnOp::put(key, value, None);
        self.guarded("update", key, compares, op, Some(expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let mut compares = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let op = TxnOp::delete(key, None);
        // Without an expected revision a failed guard can only mean the key is absent.
        let expected_for_error = expected.or(Some(0));
        self.guarded("delete", key, compares, op, expected_for_error)
            .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from + 1);
        let mut client = self.client.watch_client();
        let stream = self
            .call("watch", client.watch(prefix, Some(options)))
            .await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(forward_watch(stream, tx, self.name.clone()));
        Ok(rx)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_count_only();
        let response = self.call("revision", kv.get("\0", Some(options))).await?;
        Ok(header_revision(response.header()))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let current = self.revision().await?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        let target = if revision < current {
            revision + 1
        } else {
            revision
        };
        if target <= 0 {
            return Ok(());
        }
        let mut kv = self.client.kv_client();
        match self.call("compact", kv.compact(target, None)).await {
            Ok(_) => Ok(()),
            // Compacting at or below the horizon again is a no-op, as in the other backends.
            Err(StoreError::Backend(message)) if message.contains("has been compacted") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
