//! Syncer cases: snapshot, InSync, deltas, recovery without gaps or duplicates.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tortie_store::{Revision, Store, SyncStatus, SyncUpdate, Syncer, SyncerConfig};

use super::flaky::FlakyStore;
use super::{EVENT_TIMEOUT, Fixture};

fn config() -> SyncerConfig {
    SyncerConfig {
        capacity: 64,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    }
}

async fn next(rx: &mut mpsc::Receiver<SyncUpdate>) -> SyncUpdate {
    match tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await {
        Ok(Some(update)) => update,
        Ok(None) => panic!("syncer stopped"),
        Err(_) => panic!("no syncer update within {EVENT_TIMEOUT:?}"),
    }
}

async fn quiet(rx: &mut mpsc::Receiver<SyncUpdate>) {
    if let Ok(update) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        panic!("expected no syncer update, got {update:?}");
    }
}

/// `Set(key)` with value and revision checked.
fn assert_set(update: &SyncUpdate, key: &str, value: &[u8], rev: Revision) {
    match update {
        SyncUpdate::Set(kv) => {
            assert_eq!(
                (kv.key.as_str(), kv.value.as_slice(), kv.mod_revision),
                (key, value, rev)
            );
        }
        other => panic!("expected Set({key}), got {other:?}"),
    }
}

pub async fn syncer_snapshot_in_sync_then_deltas(fx: &Fixture) {
    let s = fx.store.as_ref();
    let rb = s.create("/s/b", b"b").await.unwrap();
    let ra = s.create("/s/a", b"a").await.unwrap();
    s.create("/other/x", b"x").await.unwrap();

    let (_handle, mut rx) = Syncer::new(Arc::clone(&fx.store), "/s/")
        .with_config(config())
        .start();
    assert_set(&next(&mut rx).await, "/s/a", b"a", ra);
    assert_set(&next(&mut rx).await, "/s/b", b"b", rb);
    assert_eq!(next(&mut rx).await, SyncUpdate::InSync);

    let rc = s.create("/s/c", b"c").await.unwrap();
    s.update("/other/x", b"y", None).await.unwrap();
    let ra2 = s.update("/s/a", b"a2", Some(ra)).await.unwrap();
    let rd = s.delete("/s/b", None).await.unwrap();
    assert_set(&next(&mut rx).await, "/s/c", b"c", rc);
    assert_set(&next(&mut rx).await, "/s/a", b"a2", ra2);
    assert_eq!(
        next(&mut rx).await,
        SyncUpdate::Deleted {
            key: "/s/b".to_owned(),
            revision: rd
        }
    );
    quiet(&mut rx).await;
}

pub async fn syncer_recovers_after_outage_and_compaction(fx: &Fixture) {
    let s = fx.store.as_ref();
    let ra = s.create("/s/a", b"a").await.unwrap();
    let rb = s.create("/s/b", b"b").await.unwrap();
    s.create("/s/c", b"c").await.unwrap();
    let flaky = FlakyStore::new(Arc::clone(&fx.store));
    let (_handle, mut rx) = Syncer::new(flaky.clone() as Arc<dyn Store>, "/s/")
        .with_config(config())
        .start();
    for _ in 0..3 {
        next(&mut rx).await;
    }
    assert_eq!(next(&mut rx).await, SyncUpdate::InSync);

    // Outage: the syncer's watch breaks and reconnecting fails.
    flaky.set_down(true);
    flaky.break_watches();
    match next(&mut rx).await {
        SyncUpdate::Status(SyncStatus::Unreachable { reason }) => {
            assert!(reason.contains("unavailable"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // Meanwhile: /s/a unchanged, /s/b changed twice, /s/c deleted, /s/d created; then the
    // history the syncer would resume from is compacted away.
    let rb2 = s.update("/s/b", b"b2", Some(rb)).await.unwrap();
    let rb3 = s.update("/s/b", b"b3", Some(rb2)).await.unwrap();
    s.delete("/s/c", None).await.unwrap();
    let rd = s.create("/s/d", b"d").await.unwrap();
    s.update("/other/z", b"z", None).await.unwrap();
    let current = s.revision().await.unwrap();
    s.compact(current - 1).await.unwrap();
    flaky.set_down(false);

    assert_eq!(
        next(&mut rx).await,
        SyncUpdate::Status(SyncStatus::Reachable)
    );
    // Only the differences, in key order: nothing for /s/a.
    assert_set(&next(&mut rx).await, "/s/b", b"b3", rb3);
    match next(&mut rx).await {
        SyncUpdate::Deleted { key, revision } => {
            assert_eq!(key, "/s/c");
            assert!(
                revision >= current,
                "re-list revision {revision} < {current}"
            );
        }
        other => panic!("expected Deleted(/s/c), got {other:?}"),
    }
    assert_set(&next(&mut rx).await, "/s/d", b"d", rd);
    quiet(&mut rx).await;

    // Deltas flow again, from the re-list revision on.
    let ra2 = s.update("/s/a", b"a2", Some(ra)).await.unwrap();
    assert_set(&next(&mut rx).await, "/s/a", b"a2", ra2);
    quiet(&mut rx).await;
}

pub async fn syncer_stops_when_handle_dropped(fx: &Fixture) {
    let s = fx.store.as_ref();
    s.create("/s/a", b"a").await.unwrap();
    let (handle, mut rx) = Syncer::new(Arc::clone(&fx.store), "/s/")
        .with_config(config())
        .start();
    next(&mut rx).await;
    assert_eq!(next(&mut rx).await, SyncUpdate::InSync);
    drop(handle);
    // The task is cancelled: the channel closes without further updates.
    s.create("/s/b", b"b").await.unwrap();
    match tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await {
        Ok(None) => {}
        other => panic!("expected the syncer channel to close, got {other:?}"),
    }
}
