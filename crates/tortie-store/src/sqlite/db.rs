//! Synchronous SQL for the SQLite backend: schema, reads, writes, compaction.
//!
//! Invariants of the file (shared by every process that opens it):
//! - `meta.revision` is the revision of the last committed write; a write reads it inside a
//!   `BEGIN IMMEDIATE` transaction (which holds the database write lock), so two writers, in
//!   one process or in several, can never allocate the same revision;
//! - `events` holds one row per revision in `(meta.compacted, meta.revision]`, fewer only where
//!   compaction removed them: every row with `rev <= meta.compacted` is gone;
//! - `kv` is the state after applying every event; `kv.mod_rev` is the revision of the
//!   key's last event.
//!
//! Keys are stored as BLOBs so prefix ranges compare bytewise, exactly like Rust strings.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::{KeyValue, ListResult, Revision, StoreError, WATCH_BATCH, WatchEvent};

/// Version of the on-disk layout written in `meta.schema`.
const SCHEMA_VERSION: i64 = 1;

/// Automatic compaction runs when the new revision is a multiple of this.
const AUTO_COMPACT_EVERY: Revision = 64;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    value BLOB,
    create_rev INTEGER NOT NULL
);
";

/// An error inside the backend before it is given the datastore's name.
#[derive(Debug)]
pub(super) enum DbError {
    /// A semantic outcome (conflict, not found, ...), passed through unchanged.
    Store(StoreError),
    /// SQLite failed; `context` says what we were doing.
    Sql {
        context: &'static str,
        source: rusqlite::Error,
    },
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError::Store(e)
    }
}

impl DbError {
    /// Names the datastore and classifies SQLite's error: a lock held past the busy timeout
    /// or an unopenable file means unavailable, anything else is a backend fault.
    pub(super) fn into_store_error(self, datastore: &str) -> StoreError {
        match self {
            DbError::Store(e) => e,
            DbError::Sql { context, source } => {
                let unavailable = matches!(
                    source.sqlite_error_code(),
                    Some(
                        rusqlite::ErrorCode::DatabaseBusy
                            | rusqlite::ErrorCode::DatabaseLocked
                            | rusqlite::ErrorCode::CannotOpen
                            | rusqlite::ErrorCode::PermissionDenied
                            | rusqlite::ErrorCode::ReadOnly
                            | rusqlite::ErrorCode::SystemIoFailure
                            | rusqlite::ErrorCode::DiskFull
                    )
                );
                if unavailable {
                    StoreError::Unavailable {
                        datastore: datastore.to_owned(),
                        reason: format!("{context}: {source}"),
                    }
                } else {
                    StoreError::Backend(format!("{datastore}: {context}: {source}"))
                }
            }
        }
    }
}

/// Attaches context to a rusqlite result.
trait Context<T> {
    fn ctx(self, context: &'static str) -> Result<T, DbError>;
}

impl<T> Context<T> for rusqlite::Result<T> {
    fn ctx(self, context: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Sql { context, source })
    }
}

/// One write request.
#[derive(Debug)]
pub(super) enum WriteOp<'a> {
    Create {
        key: &'a str,
        value: &'a [u8],
    },
    Update {
        key: &'a str,
        value: &'a [u8],
        expected: Option<Revision>,
    },
    Delete {
        key: &'a str,
        expected: Option<Revision>,
    },
}

/// What a watcher gets from one look at the event log.
#[derive(Debug)]
pub(super) enum Batch {
    /// Matching events, and the revision up to which the log was scanned.
    Events(Vec<WatchEvent>, Revision),
    /// The watcher's position is below the compaction horizon.
    Compacted(Revision),
}

/// Opens a connection with the busy timeout and pragmas every connection needs.
pub(super) fn open_connection(
    path: &Path,
    busy_timeout: Duration,
    read_only: bool,
) -> Result<Connection, DbError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).ctx("opening database file")?;
    conn.busy_timeout(busy_timeout)
        .ctx("setting busy timeout")?;
    if !read_only {
        // WAL lets readers in other processes proceed while one process writes; NORMAL
        // sync is durable across process crashes (an OS crash may lose the last commits).
        let mode = switch_to_wal(&conn, busy_timeout)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "database refused WAL journal mode (got {mode})"
            ))
            .into());
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .ctx("setting synchronous mode")?;
    }
    Ok(conn)
}

/// Sets WAL journal mode, waiting for other openers of a new file.
///
/// Switching a fresh file to WAL takes an exclusive lock, and SQLite returns `SQLITE_BUSY` for
/// it at once instead of calling the busy handler, so several processes opening the same new
/// file together would fail. Retry for up to the busy timeout; a file already in WAL mode
/// answers at once.
fn switch_to_wal(conn: &Connection, busy_timeout: Duration) -> Result<String, DbError> {
    let deadline = std::time::Instant::now() + busy_timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)) {
            Ok(mode) => return Ok(mode),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(DbError::Sql {
                    context: "switching to WAL mode",
                    source,
                });
            }
        }
    }
}

/// Creates the tables if missing and checks the schema version. A file that already has
/// them is only read (no write lock: every CNI invocation opens the store, and must not
/// queue behind other writers just to find the schema in place).
pub(super) fn init_schema(conn: &mut Connection) -> Result<(), DbError> {
    let existing: Option<i64> = conn
        .query_row("SELECT schema FROM meta WHERE id = 1", [], |r| r.get(0))
        .ok();
    if let Some(version) = existing {
        return check_schema_version(version);
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("locking database to create schema")?;
    tx.execute_batch(SCHEMA).ctx("creating tables")?;
    tx.execute(
        "INSERT OR IGNORE INTO meta (id, schema, revision, compacted) VALUES (1, ?1, 0, 0)",
        [SCHEMA_VERSION],
    )
    .ctx("initialising meta row")?;
    let version: i64 = tx
        .query_row("SELECT schema FROM meta WHERE id = 1", [], |r| r.get(0))
        .ctx("reading schema version")?;
    check_schema_version(version)?;
    tx.commit().ctx("committing schema")
}

fn check_schema_version(version: i64) -> Result<(), DbError> {
    if version != SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "unsupported schema version {version} (this build understands {SCHEMA_VERSION})"
        ))
        .into());
    }
    Ok(())
}

/// The smallest byte string greater than every string starting with `prefix`, if any.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `(lower, upper)` bounds for a key range query; upper is `None` when unbounded.
fn prefix_bounds(prefix: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    (prefix.as_bytes().to_vec(), prefix_end(prefix.as_bytes()))
}

fn key_string(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

fn read_meta(conn: &Connection) -> Result<(Revision, Revision), DbError> {
    conn.query_row(
        "SELECT revision, compacted FROM meta WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .ctx("reading revision")
}

/// The current revision.
pub(super) fn current_revision(conn: &Connection) -> Result<Revision, DbError> {
    Ok(read_meta(conn)?.0)
}

/// Reads one key.
pub(super) fn get(conn: &Connection, key: &str) -> Result<Option<KeyValue>, DbError> {
    conn.query_row(
        "SELECT value, create_rev, mod_rev FROM kv WHERE key = ?1",
        [key.as_bytes()],
        |r| {
            Ok(KeyValue {
                key: key.to_owned(),
                value: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        },
    )
    .optional()
    .ctx("reading key")
}

/// Lists a prefix and the revision, from one read snapshot.
pub(super) fn list(conn: &mut Connection, prefix: &str) -> Result<ListResult, DbError> {
    let tx = conn.transaction().ctx("starting read")?;
    let (revision, _) = read_meta(&tx)?;
    let (lower, upper) = prefix_bounds(prefix);
    // Two statements rather than `?2 IS NULL OR ...`, so SQLite bounds the index range scan.
    let (sql, upper) = match upper {
        Some(upper) => (
            "SELECT key, value, create_rev, mod_rev FROM kv
             WHERE key >= ?1 AND key < ?2 ORDER BY key",
            upper,
        ),
        None => (
            "SELECT key, value, create_rev, mod_rev FROM kv
             WHERE key >= ?1 AND ?2 IS NOT NULL ORDER BY key",
            Vec::new(),
        ),
    };
    let mut stmt = tx.prepare_cached(sql).ctx("preparing list")?;
    let rows = stmt
        .query_map(params![lower, upper], |r| {
            Ok(KeyValue {
                key: key_string(r.get(0)?)?,
                value: r.get(1)?,
                create_revision: r.get(2)?,
                mod_revision: r.get(3)?,
            })
        })
        .ctx("listing keys")?;
    let items = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("reading list rows")?;
    Ok(ListResult { items, revision })
}

/// Checks the CAS condition of an update or delete against the key's current revisions.
fn check_expected(
    key: &str,
    current: Option<(Revision, Revision)>,
    expected: Option<Revision>,
) -> Result<(), StoreError> {
    match (current, expected) {
        (None, _) => Err(StoreError::NotFound {
            key: key.to_owned(),
        }),
        (Some((_, actual)), Some(expected)) if actual != expected => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Applies one write in its own immediate transaction; returns the new revision.
pub(super) fn write(
    conn: &mut Connection,
    op: &WriteOp<'_>,
    history_revisions: Revision,
) -> Result<Revision, DbError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("locking database for write")?;
    let (revision, compacted) = read_meta(&tx)?;
    let key = match op {
        WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => {
            *key
        }
    };
    let current: Option<(Revision, Revision)> = tx
        .query_row(
            "SELECT create_rev, mod_rev FROM kv WHERE key = ?1",
            [key.as_bytes()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .ctx("reading key for write")?;
    let new = revision + 1;
    match op {
        WriteOp::Create { value, .. } => {
            if current.is_some() {
                return Err(StoreError::AlreadyExists {
                    key: key.to_owned(),
                }
                .into());
            }
            put_row(&tx, key, value, new, new)?;
        }
        WriteOp::Update {
            value, expected, ..
        } => {
            if expected.is_some() {
                check_expected(key, current, *expected)?;
            }
            let create = current.map_or(new, |(create, _)| create);
            put_row(&tx, key, value, create, new)?;
        }
        WriteOp::Delete { expected, .. } => {
            check_expected(key, current, *expected)?;
            let create = current.map_or(new, |(create, _)| create);
            tx.execute("DELETE FROM kv WHERE key = ?1", [key.as_bytes()])
                .ctx("deleting key")?;
            tx.execute(
                "INSERT INTO events (rev, key, value, create_rev) VALUES (?1, ?2, NULL, ?3)",
                params![new, key.as_bytes(), create],
            )
            .ctx("logging delete")?;
        }
    }
    tx.execute("UPDATE meta SET revision = ?1 WHERE id = 1", [new])
        .ctx("bumping revision")?;
    let horizon = new - history_revisions;
    if new % AUTO_COMPACT_EVERY == 0 && horizon > compacted {
        compact_rows(&tx, horizon)?;
    }
    tx.commit().ctx("committing write")?;
    Ok(new)
}

fn put_row(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    value: &[u8],
    create: Revision,
    new: Revision,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO kv (key, value, create_rev, mod_rev) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev",
        params![key.as_bytes(), value, create, new],
    )
    .ctx("writing key")?;
    tx.execute(
        "INSERT INTO events (rev, key, value, create_rev) VALUES (?1, ?2, ?3, ?4)",
        params![new, key.as_bytes(), value, create],
    )
    .ctx("logging put")?;
    Ok(())
}

fn compact_rows(tx: &rusqlite::Transaction<'_>, revision: Revision) -> Result<(), DbError> {
    tx.execute("DELETE FROM events WHERE rev <= ?1", [revision])
        .ctx("deleting compacted events")?;
    tx.execute(
        "UPDATE meta SET compacted = MAX(compacted, ?1) WHERE id = 1",
        [revision],
    )
    .ctx("moving compaction horizon")?;
    Ok(())
}

/// Discards events at and below `revision`. Compacting below the horizon is a no-op.
pub(super) fn compact(conn: &mut Connection, revision: Revision) -> Result<(), DbError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("locking database for compaction")?;
    let (current, compacted) = read_meta(&tx)?;
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        }
        .into());
    }
    if revision > compacted {
        compact_rows(&tx, revision)?;
    }
    tx.commit().ctx("committing compaction")
}

/// Reads up to `WATCH_BATCH` events with revision `> after` under `prefix`, from one snapshot.
pub(super) fn events_after(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
) -> Result<Batch, DbError> {
    let tx = conn.transaction().ctx("starting read")?;
    let (current, compacted) = read_meta(&tx)?;
    if after < compacted {
        return Ok(Batch::Compacted(compacted));
    }
    let (lower, upper) = prefix_bounds(prefix);
    let mut stmt = tx
        .prepare_cached(
            "SELECT rev, key, value, create_rev FROM events
             WHERE rev > ?1 AND rev <= ?2 AND key >= ?3 AND (?4 IS NULL OR key < ?4)
             ORDER BY rev LIMIT ?5",
        )
        .ctx("preparing event scan")?;
    let rows = stmt
        .query_map(
            params![after, current, lower, upper, WATCH_BATCH as i64],
            |r| {
                let revision: Revision = r.get(0)?;
                let key = key_string(r.get(1)?)?;
                let value: Option<Vec<u8>> = r.get(2)?;
                Ok(match value {
                    Some(value) => WatchEvent::Put {
                        kv: KeyValue {
                            key,
                            value,
                            create_revision: r.get(3)?,
                            mod_revision: revision,
                        },
                    },
                    None => WatchEvent::Delete { key, revision },
                })
            },
        )
        .ctx("scanning events")?;
    let events = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("reading events")?;
    let scanned = match events.last() {
        Some(last) if events.len() == WATCH_BATCH => last.revision(),
        _ => current.max(after),
    };
    Ok(Batch::Events(events, scanned))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), Some(b"/a0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
