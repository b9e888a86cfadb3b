//! In-process [`Store`]: a `BTreeMap` of keys plus an in-memory change history.
//!
//! Used by unit tests of other crates and as the reference behaviour for the conformance suite.
//!
//! Invariants:
//! - `State::revision` is the revision of the last write; every write increments it by one and
//!   appends exactly one event to `history`;
//! - `history` holds every event with revision `> compacted`, in revision order (a bounded
//!   number of them: older events are compacted automatically once the limit is exceeded);
//! - watchers never hold the state lock while sending: each watch is a task that copies a batch
//!   of events under the lock, releases it, then sends, so a slow consumer only slows itself.
//!
//! Clones of a [`MemoryStore`] share the same data.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::{
    KeyValue, ListResult, Revision, Store, StoreError, WATCH_BATCH, WATCH_BUFFER, WatchEvent,
    WatchStream,
};

/// Default number of events kept for watchers before automatic compaction.
pub const DEFAULT_HISTORY_EVENTS: usize = 100_000;

/// An in-process revisioned store. Cheap to clone; clones share data.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Carries the latest revision; watchers wait on it for new events.
    latest: watch::Sender<Revision>,
}

#[derive(Debug)]
struct State {
    kvs: BTreeMap<String, KeyValue>,
    history: VecDeque<WatchEvent>,
    revision: Revision,
    compacted: Revision,
    history_limit: usize,
}

/// What a watcher gets from one look at the history.
enum Batch {
    /// Matching events, and the revision up to which the history was scanned.
    Events(Vec<WatchEvent>, Revision),
    /// The watcher's position is below the compaction horizon.
    Compacted(Revision),
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store with the default history limit.
    pub fn new() -> Self {
        Self::with_history_limit(DEFAULT_HISTORY_EVENTS)
    }

    /// An empty store that keeps at most `events` events of history (at least one).
    pub fn with_history_limit(events: usize) -> Self {
        let state = State {
            kvs: BTreeMap::new(),
            history: VecDeque::new(),
            revision: 0,
            compacted: 0,
            history_limit: events.max(1),
        };
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                latest: watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }

    /// Applies a write (Some = put, None = delete) at the next revision, records its event and
    /// wakes watchers.
    fn commit(
        &self,
        mut state: MutexGuard<'_, State>,
        key: &str,
        value: Option<&[u8]>,
    ) -> Revision {
        let revision = state.revision + 1;
        state.revision = revision;
        let event = match value {
            Some(value) => {
                let create_revision = state.kvs.get(key).map_or(revision, |kv| kv.create_revision);
                let kv = KeyValue {
                    key: key.to_owned(),
                    value: value.to_vec(),
                    create_revision,
                    mod_revision: revision,
                };
                state.kvs.insert(key.to_owned(), kv.clone());
                WatchEvent::Put { kv }
            }
            None => {
                state.kvs.remove(key);
                WatchEvent::Delete {
                    key: key.to_owned(),
                    revision,
                }
            }
        };
        state.history.push_back(event);
        if state.history.len() > state.history_limit {
            let horizon = revision - state.history_limit as Revision;
            state.compact_to(horizon);
        }
        drop(state);
        self.inner.latest.send_replace(revision);
        revision
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-written in a way that
        // matters to callers (every write is a single insert/remove plus a push), so recover.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Copies up to `WATCH_BATCH` events with revision `> after` under `prefix`.
    fn events_after(&self, prefix: &str, after: Revision) -> Batch {
        let state = self.lock();
        if after < state.compacted {
            return Batch::Compacted(state.compacted);
        }
        let start = state.history.partition_point(|e| e.revision() <= after);
        let mut events = Vec::new();
        let mut scanned = state.revision.max(after);
        for event in state.history.iter().skip(start) {
            if events.len() == WATCH_BATCH {
                scanned = event.revision() - 1;
                break;
            }
            let key = match event {
                WatchEvent::Put { kv } => &kv.key,
                WatchEvent::Delete { key, .. } => key,
                WatchEvent::ResyncNeeded { .. } => continue,
            };
            if key.starts_with(prefix) {
                events.push(event.clone());
            }
        }
        Batch::Events(events, scanned)
    }
}

impl State {
    /// Drops history at and below `revision` and moves the horizon there.
    fn compact_to(&mut self, revision: Revision) {
        while self
            .history
            .front()
            .is_some_and(|e| e.revision() <= revision)
        {
            self.history.pop_front();
        }
        self.compacted = self.compacted.max(revision);
    }

    fn check_expected(&self, key: &str, expected: Option<Revision>) -> Result<(), StoreError> {
        let current = self.kvs.get(key).map(|kv| kv.mod_revision);
        match (current, expected) {
            (None, _) => Err(StoreError::NotFound {
                key: key.to_owned(),
            }),
            (Some(actual), Some(expected)) if actual != expected => Err(StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual,
            }),
            _ => Ok(()),
        }
    }
}

/// Feeds one watch until the consumer drops its stream or the history is compacted under it.
async fn run_watch(
    inner: Arc<Inner>,
    prefix: String,
    mut position: Revision,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
) {
    let mut latest = inner.latest.subscribe();
    loop {
        // Mark the current revision seen before reading, so no write can slip between.
        let target = *latest.borrow_and_update();
        match inner.events_after(&prefix, position) {
            Batch::Compacted(compacted_revision) => {
                let _ = tx
                    .send(Ok(WatchEvent::ResyncNeeded { compacted_revision }))
                    .await;
                return;
            }
            Batch::Events(events, scanned) => {
                for event in events {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                position = scanned;
            }
        }
        if position < target {
            continue;
        }
        tokio::select! {
            changed = latest.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory:".to_owned()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().kvs.get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let state = self.lock();
        let items = state
            .kvs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok(ListResult {
            items,
            revision: state.revision,
        })
    }

    async fn list_keys(&self, prefix: &str) -> Result<crate::KeyList, StoreError> {
        let state = self.lock();
        let keys = state
            .kvs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, kv)| (k.clone(), kv.mod_revision))
            .collect();
        Ok(crate::KeyList {
            keys,
            revision: state.revision,
        })
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        let state = self.lock();
        if state.kvs.contains_key(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        Ok(self.commit(state, key, Some(value)))
    }

    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let state = self.lock();
        if expected.is_some() {
            state.check_expected(key, expected)?;
        }
        Ok(self.commit(state, key, Some(value)))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        let state = self.lock();
        state.check_expected(key, expected)?;
        Ok(self.commit(state, key, None))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(run_watch(
            Arc::clone(&self.inner),
            prefix.to_owned(),
            from,
            tx,
        ));
        Ok(rx)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.lock().revision)
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.lock();
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        state.compact_to(revision);
        drop(state);
        // Wake watchers so that laggards below the horizon learn about it promptly.
        self.inner.latest.send_modify(|_| {});
        Ok(())
    }
}
