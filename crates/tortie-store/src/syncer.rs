//! `Syncer`: turns list + watch of a prefix into a gap-free, duplicate-free update stream.
//!
//! Output order: a snapshot (`Set` per key, sorted), one `InSync`, then deltas. After a watch
//! failure the syncer resumes watching from the last revision it saw; if the store says that
//! revision is compacted (`ResyncNeeded`) it lists again and emits only the difference from
//! what it has already emitted, so consumers never need to reset.
//!
//! Invariants:
//! - `emitted` mirrors exactly the keys (and their mod revisions) the consumer has been told
//!   about; a `Set` is emitted only for a key whose revision is newer than the mirrored one,
//!   a `Deleted` only for a mirrored key;
//! - `InSync` is emitted once, after the first complete snapshot;
//! - `Status(Unreachable)` and `Status(Reachable)` alternate, starting with `Unreachable`;
//! - retries back off exponentially between `min_backoff` and `max_backoff`;
//! - the task stops when the [`SyncerHandle`] or the receiver is dropped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{KeyValue, ListResult, Revision, Store, StoreError, WatchEvent, WatchStream};

/// One update from a [`Syncer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncUpdate {
    /// The key now has this value (created or changed).
    Set(KeyValue),
    /// The key is gone; `revision` is the deletion (or the re-list that noticed it).
    Deleted { key: String, revision: Revision },
    /// The snapshot is complete; everything after this is a delta. Sent once.
    InSync,
    /// The datastore became unreachable or reachable again.
    Status(SyncStatus),
}

/// Datastore reachability as seen by the syncer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStatus {
    /// A list or watch failed; the syncer keeps retrying.
    Unreachable { reason: String },
    /// A list or watch succeeded after an outage.
    Reachable,
}

/// Tunables of a [`Syncer`].
#[derive(Debug, Clone)]
pub struct SyncerConfig {
    /// Capacity of the output channel.
    pub capacity: usize,
    /// First retry delay after a failure.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for SyncerConfig {
    fn default() -> Self {
        Self {
            capacity: 1024,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Lists then watches one prefix of a store. Build it, then [`Syncer::start`] it.
#[derive(Debug)]
pub struct Syncer {
    store: Arc<dyn Store>,
    prefix: String,
    config: SyncerConfig,
}

/// Owns a running syncer task; dropping it stops the task.
#[derive(Debug)]
pub struct SyncerHandle {
    task: JoinHandle<()>,
}

impl Drop for SyncerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Syncer {
    /// A syncer for every key under `prefix`, with default config.
    pub fn new(store: Arc<dyn Store>, prefix: impl Into<String>) -> Self {
        Self {
            store,
            prefix: prefix.into(),
            config: SyncerConfig::default(),
        }
    }

    /// Replaces the config.
    #[must_use]
    pub fn with_config(mut self, config: SyncerConfig) -> Self {
        self.config = config;
        self
    }

    /// Spawns the syncer on the current tokio runtime.
    pub fn start(self) -> (SyncerHandle, mpsc::Receiver<SyncUpdate>) {
        let (tx, rx) = mpsc::channel(self.config.capacity.max(1));
        let backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff);
        let run = Run {
            store: self.store,
            prefix: self.prefix,
            tx,
            emitted: BTreeMap::new(),
            in_sync: false,
            unreachable: false,
            backoff,
        };
        let task = tokio::spawn(run.run());
        (SyncerHandle { task }, rx)
    }
}

/// The consumer went away; stop.
struct Closed;

/// How one watch stream ended.
enum WatchEnd {
    /// The store cannot resume from our revision: list again.
    Resync,
    /// The watch failed; retry from `position` after a backoff.
    Failed(StoreError),
}

/// State of the running syncer task.
struct Run {
    store: Arc<dyn Store>,
    prefix: String,
    tx: mpsc::Sender<SyncUpdate>,
    emitted: BTreeMap<String, Revision>,
    in_sync: bool,
    unreachable: bool,
    backoff: Backoff,
}

impl Run {
    async fn run(mut self) {
        let _ = self.run_until_closed().await;
    }

    async fn run_until_closed(&mut self) -> Result<(), Closed> {
        // `None` means "list before watching".
        let mut position: Option<Revision> = None;
        loop {
            let from = match position {
                Some(from) => from,
                None => match self.store.list(&self.prefix).await {
                    Ok(list) => {
                        self.reachable().await?;
                        self.backoff.reset();
                        self.apply_list(list).await?
                    }
                    Err(e) => {
                        self.failed(e).await?;
                        continue;
                    }
                },
            };
            position = Some(from);
            let stream = match self.store.watch(&self.prefix, from).await {
                Ok(stream) => stream,
                Err(e) => {
                    self.failed(e).await?;
                    continue;
                }
            };
            self.reachable().await?;
            let (end, progressed) = self.follow(stream, &mut position).await?;
            if progressed {
                self.backoff.reset();
            }
            match end {
                WatchEnd::Resync => {
                    tracing::debug!(prefix = %self.prefix, "watch needs resync; listing again");
                    position = None;
                    if !progressed {
                        tokio::time::sleep(self.backoff.next_delay()).await;
                    }
                }
                WatchEnd::Failed(e) => self.failed(e).await?,
            }
        }
    }

    /// Emits the difference between a fresh list and what was emitted, in key order, then
    /// `InSync` if this is the first snapshot. Returns the list's revision.
    async fn apply_list(&mut self, list: ListResult) -> Result<Revision, Closed> {
        let mut changes: BTreeMap<String, SyncUpdate> = self
            .emitted
            .keys()
            .map(|key| {
                let deleted = SyncUpdate::Deleted {
                    key: key.clone(),
                    revision: list.revision,
                };
                (key.clone(), deleted)
            })
            .collect();
        for kv in list.items {
            if self.emitted.get(&kv.key) == Some(&kv.mod_revision) {
                changes.remove(&kv.key);
            } else {
                changes.insert(kv.key.clone(), SyncUpdate::Set(kv));
            }
        }
        for (key, update) in changes {
            match &update {
                SyncUpdate::Set(kv) => self.emitted.insert(key, kv.mod_revision),
                _ => self.emitted.remove(&key),
            };
            self.send(update).await?;
        }
        if !self.in_sync {
            self.in_sync = true;
            self.send(SyncUpdate::InSync).await?;
        }
        Ok(list.revision)
    }

    /// Applies watch events until the stream ends. Returns how it ended and whether any event
    /// arrived.
    async fn follow(
        &mut self,
        mut stream: WatchStream,
        position: &mut Option<Revision>,
    ) -> Result<(WatchEnd, bool), Closed> {
        let mut progressed = false;
        loop {
            let event = tokio::select! {
                event = stream.recv() => event,
                () = self.tx.closed() => return Err(Closed),
            };
            let event = match event {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Ok((WatchEnd::Failed(e), progressed)),
                None => {
                    let e = StoreError::Backend("watch stream ended".to_owned());
                    return Ok((WatchEnd::Failed(e), progressed));
                }
            };
            match event {
                WatchEvent::ResyncNeeded { .. } => return Ok((WatchEnd::Resync, progressed)),
                WatchEvent::Put { kv } => {
                    *position = Some(kv.mod_revision);
                    let newer = self
                        .emitted
                        .get(&kv.key)
                        .is_none_or(|seen| *seen < kv.mod_revision);
                    if newer {
                        self.emitted.insert(kv.key.clone(), kv.mod_revision);
                        self.send(SyncUpdate::Set(kv)).await?;
                    }
                }
                WatchEvent::Delete { key, revision } => {
                    *position = Some(revision);
                    if self.emitted.remove(&key).is_some() {
                        self.send(SyncUpdate::Deleted { key, revision }).await?;
                    }
                }
            }
            progressed = true;
        }
    }

    /// Records a failure: reports the outage once, then waits out the backoff.
    async fn failed(&mut self, error: StoreError) -> Result<(), Closed> {
        tracing::warn!(prefix = %self.prefix, %error, "syncer retrying");
        if matches!(error, StoreError::Unavailable { .. }) && !self.unreachable {
            self.unreachable = true;
            let reason = error.to_string();
            self.send(SyncUpdate::Status(SyncStatus::Unreachable { reason }))
                .await?;
        }
        let delay = self.backoff.next_delay();
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.tx.closed() => Err(Closed),
        }
    }

    /// Reports the end of an outage, if there was one.
    async fn reachable(&mut self) -> Result<(), Closed> {
        if self.unreachable {
            self.unreachable = false;
            self.send(SyncUpdate::Status(SyncStatus::Reachable)).await?;
        }
        Ok(())
    }

    async fn send(&self, update: SyncUpdate) -> Result<(), Closed> {
        self.tx.send(update).await.map_err(|_| Closed)
    }
}

/// Exponential backoff between two bounds.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            next: min,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(35));
        let delays: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [10, 20, 35, 35]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
    }
}
