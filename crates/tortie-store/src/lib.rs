//! Revisioned key-value storage for tortie resources.
//!
//! One [`Store`] trait, three backends:
//! - [`sqlite::SqliteStore`]: the embedded default, a single SQLite file in WAL mode that the
//!   CLI, the CNI plugin and the agent may open at once from separate processes;
//! - [`etcd::EtcdStore`]: etcd v3;
//! - [`memory::MemoryStore`]: in-process, for unit tests.
//!
//! Invariants every backend keeps (checked by the shared conformance suite):
//! - the store has one global, strictly increasing revision; every successful write bumps it
//!   and stamps the written key with it (`mod_revision`);
//! - `update` and `delete` with `Some(rev)` succeed only if the key's current `mod_revision`
//!   equals `rev` (compare-and-swap), else [`StoreError::Conflict`];
//! - `watch(prefix, from)` delivers every change with revision `> from` under the prefix in
//!   revision order, then live changes; if `from` is older than the compaction horizon the
//!   stream yields [`WatchEvent::ResyncNeeded`] and ends.

pub mod datastore;
pub mod etcd;
pub mod hooked;
pub mod memory;
pub mod sqlite;
pub mod syncer;

use async_trait::async_trait;

pub use datastore::{DatastoreUrl, connect};
pub use syncer::{SyncStatus, SyncUpdate, Syncer, SyncerConfig, SyncerHandle};

/// Capacity of the channel behind every [`WatchStream`].
pub(crate) const WATCH_BUFFER: usize = 1024;

/// Most events a local backend copies out of its history in one step.
pub(crate) const WATCH_BATCH: usize = 512;

/// A global store revision. Revisions start at 1; 0 means "before everything".
pub type Revision = i64;

/// One stored key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Revision of the last write to the key; the CAS token.
    pub mod_revision: Revision,
}

/// The result of a list: the items (sorted by key) and the store revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    pub revision: Revision,
}

/// Keys (with their mod revisions) under a prefix, sorted, and the revision they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList {
    pub keys: Vec<(String, Revision)>,
    pub revision: Revision,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or updated; `kv.mod_revision` is the event's revision.
    Put { kv: KeyValue },
    /// The key was deleted at `revision`.
    Delete { key: String, revision: Revision },
    /// The watch cannot resume from the requested revision (it was compacted, or the backend
    /// lost history). The consumer must list again and start a new watch. The stream ends.
    ResyncNeeded { compacted_revision: Revision },
}

impl WatchEvent {
    /// The revision of this event (the compaction horizon for `ResyncNeeded`).
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put { kv } => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::ResyncNeeded { compacted_revision } => *compacted_revision,
        }
    }
}

/// A stream of watch events. Dropping it cancels the watch.
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>;

/// Errors from any backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    #[error("conflict on {key}: expected revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        /// The current mod revision, 0 when the key is absent.
        actual: Revision,
    },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("datastore {datastore} is unavailable: {reason}")]
    Unavailable { datastore: String, reason: String },
    #[error("invalid datastore setting {value:?}: {reason}")]
    InvalidConfig { value: String, reason: String },
    #[error("datastore backend error: {0}")]
    Backend(String),
}

/// The revisioned key-value interface every backend implements.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A short human description, e.g. `file:/var/lib/tortie/store.db`.
    fn describe(&self) -> String;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Lists every key starting with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError>;

    /// Lists the keys under `prefix` without their values (cheaper where the backend allows).
    async fn list_keys(&self, prefix: &str) -> Result<KeyList, StoreError> {
        let l = self.list(prefix).await?;
        Ok(KeyList {
            keys: l
                .items
                .into_iter()
                .map(|kv| (kv.key, kv.mod_revision))
                .collect(),
            revision: l.revision,
        })
    }

    /// Creates `key`; fails with `AlreadyExists` if present. Returns the new revision.
    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError>;

    /// Writes `key`. With `expected = Some(rev)` the write happens only if the key's current
    /// mod revision is `rev` (`Conflict` otherwise, `NotFound` if absent); with `None` it is an
    /// unconditional upsert. Returns the new revision.
    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`, with the same CAS rule as `update`. Returns the deletion's revision.
    /// Deleting an absent key is `NotFound`.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError>;

    /// Watches `prefix` for changes with revision strictly greater than `from`.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;

    /// The current store revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// Discards history at and below `revision`; later watches from below it get
    /// `ResyncNeeded`. Compacting at or below the current horizon is a no-op; a revision
    /// above the current one is [`StoreError::FutureRevision`]. (etcd cannot discard the
    /// current revision's own event, so there `compact(current)` keeps it.)
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
}
