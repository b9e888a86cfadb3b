//! The embedded default [`Store`]: one SQLite file in WAL mode, shared by processes.
//!
//! The CLI, the CNI plugin and the agent may all open the same file at once. Writes run in
//! `BEGIN IMMEDIATE` transactions (SQLite's write lock, waited for up to the busy timeout), so
//! writers in different processes serialise and revisions stay gap-free and unique. Every
//! write also appends to an `events` log that watches read from; a polling thread per handle
//! notices commits made by other processes (see [`poller`]). The log is compacted
//! automatically to the last [`SqliteOptions::history_revisions`] revisions.
//!
//! rusqlite is synchronous: every database call runs on tokio's blocking pool, so the store
//! works from both current-thread and multi-thread runtimes. Each handle has one writer and
//! one reader connection, each behind a mutex.

mod db;
mod poller;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{mpsc, watch};

use self::db::{Batch, DbError, WriteOp};
use self::poller::{PollTarget, PollerSlot};
use crate::{
    KeyValue, ListResult, Revision, Store, StoreError, WATCH_BUFFER, WatchEvent, WatchStream,
};

/// Tunables of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// How long a write waits for another writer (in any process) before giving up with
    /// [`StoreError::Unavailable`].
    pub busy_timeout: Duration,
    /// How often watches look for commits made by other handles or processes.
    pub poll_interval: Duration,
    /// How many revisions of history the event log keeps for watchers.
    pub history_revisions: Revision,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            busy_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(10),
            history_revisions: 10_000,
        }
    }
}

/// A store in one SQLite file. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `file:PATH`, used in errors.
    name: String,
    options: SqliteOptions,
    poll: PollTarget,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
    poller: Arc<PollerSlot>,
}

impl SqliteStore {
    /// Opens (creating if needed, with mode 0600 and missing parent directories) the store
    /// file at `path` with default options.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens the store file at `path` with `options`.
    pub async fn open_with(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options))
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite open task failed: {e}")))?
    }

    /// The path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.poll.path
    }

    fn open_blocking(path: PathBuf, options: SqliteOptions) -> Result<Self, StoreError> {
        let name = format!("file:{}", path.display());
        prepare_file(&path).map_err(|reason| StoreError::Unavailable {
            datastore: name.clone(),
            reason,
        })?;
        let open = || -> Result<(Connection, Connection), DbError> {
            let mut writer = db::open_connection(&path, options.busy_timeout, false)?;
            db::init_schema(&mut writer)?;
            let reader = db::open_connection(&path, options.busy_timeout, false)?;
            Ok((writer, reader))
        };
        let (writer, reader) = open().map_err(|e| e.into_store_error(&name))?;
        let poll = PollTarget {
            path,
            busy_timeout: options.busy_timeout,
            interval: options.poll_interval,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                options,
                poll,
                writer: Mutex::new(writer),
                reader: Mutex::new(reader),
                poller: Arc::default(),
            }),
        })
    }

    /// Runs `f` on the blocking pool with this store's shared state.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, DbError> + Send + 'static,
    {
        run_blocking(Arc::clone(&self.inner), f).await
    }

    async fn write(&self, op: OwnedWrite) -> Result<Revision, StoreError> {
        let revision = self
            .blocking(move |inner| {
                let mut conn = lock(&inner.writer);
                db::write(&mut conn, &op.as_op(), inner.options.history_revisions)
            })
            .await?;
        self.inner.poller.publish(revision);
        Ok(revision)
    }
}

async fn run_blocking<T, F>(inner: Arc<Inner>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> Result<T, DbError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || f(&inner).map_err(|e| e.into_store_error(&inner.name)))
        .await
        .map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))?
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic mid-call leaves at worst an open transaction, which rusqlite rolls back on drop.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates missing parent directories (mode 0700) and the file itself (mode 0600).
fn prepare_file(path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if parent.exists() && !parent.is_dir() {
            return Err(format!(
                "{} exists and is not a directory",
                parent.display()
            ));
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| format!("cannot create directory {}: {e}", parent.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    Ok(())
}

/// A write request that can move to the blocking pool.
#[derive(Debug)]
enum OwnedWrite {
    Create(String, Vec<u8>),
    Update(String, Vec<u8>, Option<Revision>),
    Delete(String, Option<Revision>),
}

impl OwnedWrite {
    fn as_op(&self) -> WriteOp<'_> {
        match self {
            OwnedWrite::Create(key, value) => WriteOp::Create { key, value },
            OwnedWrite::Update(key, value, expected) => WriteOp::Update {
                key,
                value,
                expected: *expected,
            },
            OwnedWrite::Delete(key, expected) => WriteOp::Delete {
                key,
                expected: *expected,
            },
        }
    }
}

/// Feeds one watch until the consumer drops its stream, the log is compacted under it, or
/// the database fails (then the error is the last item).
async fn run_watch(
    inner: Arc<Inner>,
    prefix: Arc<str>,
    mut position: Revision,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
    mut latest: watch::Receiver<Revision>,
) {
    loop {
        // Mark the published revision seen before reading, so no commit can slip between.
        let target = *latest.borrow_and_update();
        let scan_prefix = Arc::clone(&prefix);
        let batch = run_blocking(Arc::clone(&inner), move |inner| {
            db::events_after(&mut lock(&inner.reader), &scan_prefix, position)
        })
        .await;
        match batch {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Ok(Batch::Compacted(compacted_revision)) => {
                let _ = tx
                    .send(Ok(WatchEvent::ResyncNeeded { compacted_revision }))
                    .await;
                return;
            }
            Ok(Batch::Events(events, scanned)) => {
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
impl Store for SqliteStore {
    fn describe(&self) -> String {
        self.inner.name.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| db::get(&lock(&inner.reader), &key))
            .await
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| db::list(&mut lock(&inner.reader), &prefix))
            .await
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.write(OwnedWrite::Create(key.to_owned(), value.to_vec()))
            .await
    }

    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.write(OwnedWrite::Update(key.to_owned(), value.to_vec(), expected))
            .await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.write(OwnedWrite::Delete(key.to_owned(), expected))
            .await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let latest =
            self.inner.poller.subscribe(&self.inner.poll).map_err(|e| {
                StoreError::Backend(format!("cannot start watch poller thread: {e}"))
            })?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(run_watch(
            Arc::clone(&self.inner),
            Arc::from(prefix),
            from,
            tx,
            latest,
        ));
        Ok(rx)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.blocking(|inner| db::current_revision(&lock(&inner.reader)))
            .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.blocking(move |inner| db::compact(&mut lock(&inner.writer), revision))
            .await?;
        self.inner.poller.nudge();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads of this process named like the watch poller.
    fn poller_threads() -> usize {
        let tasks = std::fs::read_dir("/proc/self/task").expect("procfs");
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("tortie-store-po"))
            .count()
    }

    /// Waits (bounded) until `poller_threads() == n`. A new thread briefly carries its
    /// parent's name, so counts are polled rather than read once.
    async fn wait_for_pollers(n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while poller_threads() != n {
            assert!(
                std::time::Instant::now() < deadline,
                "expected {n} poller threads, found {}",
                poller_threads()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn poller_thread_stops_when_watches_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).await.unwrap();
        let first = store.watch("/a/", 0).await.unwrap();
        let second = store.watch("/b/", 0).await.unwrap();
        wait_for_pollers(1).await;
        drop(first);
        store.create("/a/x", b"1").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            poller_threads(),
            1,
            "still watched through the second stream"
        );
        drop(second);
        store.create("/b/x", b"1").await.unwrap();
        wait_for_pollers(0).await;
        // A new watch starts a new poller and works.
        let mut rx = store.watch("/c/", 2).await.unwrap();
        let rev = store.create("/c/x", b"1").await.unwrap();
        let event = rx.recv().await.unwrap().unwrap();
        assert_eq!(event.revision(), rev);
    }
}
