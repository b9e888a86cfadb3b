//! Watch cases: order and completeness, resume, prefix isolation, compaction.

use std::time::Duration;

use tortie_store::{Revision, StoreError, WatchEvent};

use super::{Fixture, assert_quiet, event_key, next_event, write_n};

/// What a write did, to compare with the event the watch reports.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Put(String, Vec<u8>, Revision),
    Delete(String, Revision),
}

fn seen(event: WatchEvent) -> Seen {
    match event {
        WatchEvent::Put { kv } => Seen::Put(kv.key, kv.value, kv.mod_revision),
        WatchEvent::Delete { key, revision } => Seen::Delete(key, revision),
        WatchEvent::ResyncNeeded { compacted_revision } => {
            panic!("unexpected ResyncNeeded at {compacted_revision}")
        }
    }
}

pub async fn watch_delivers_every_write_in_order(fx: &Fixture) {
    let s = fx.store.as_ref();
    let start = s.revision().await.unwrap();
    let mut rx = s.watch("/w/", start).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let key = format!("/w/{}", i % 17);
        let value = i.to_be_bytes().to_vec();
        let write = if i % 5 == 4 {
            s.delete(&key, None)
                .await
                .map(|rev| Seen::Delete(key.clone(), rev))
        } else {
            s.update(&key, &value, None)
                .await
                .map(|rev| Seen::Put(key.clone(), value.clone(), rev))
        };
        match write {
            Ok(w) => expected.push(w),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    let mut got = Vec::with_capacity(expected.len());
    let mut last = start;
    while got.len() < expected.len() {
        let event = next_event(&mut rx).await;
        assert!(
            event.revision() > last,
            "revision {} after {last}",
            event.revision()
        );
        last = event.revision();
        got.push(seen(event));
    }
    assert_eq!(got, expected);
    assert_quiet(&mut rx, Duration::from_millis(100)).await;
}

pub async fn watch_resumes_from_past_revision(fx: &Fixture) {
    let s = fx.store.as_ref();
    let revs = write_n(s, "/r/", 10).await;
    let mut rx = s.watch("/r/", revs[4]).await.unwrap();
    for (i, rev) in revs.iter().enumerate().skip(5) {
        match next_event(&mut rx).await {
            WatchEvent::Put { kv } => {
                assert_eq!(kv.mod_revision, *rev);
                assert_eq!(kv.key, format!("/r/{i:04}"));
                assert_eq!(kv.value, format!("v{i}").into_bytes());
            }
            other => panic!("expected put at {rev}, got {other:?}"),
        }
    }
    assert_quiet(&mut rx, Duration::from_millis(100)).await;
    // Then it follows live writes.
    let live = s.update("/r/live", b"now", None).await.unwrap();
    assert_eq!(next_event(&mut rx).await.revision(), live);

    // A watch from the current revision sees only later writes.
    let now = s.revision().await.unwrap();
    let mut rx = s.watch("/r/", now).await.unwrap();
    assert_quiet(&mut rx, Duration::from_millis(100)).await;
    let later = s.delete("/r/0000", None).await.unwrap();
    assert_eq!(
        seen(next_event(&mut rx).await),
        Seen::Delete("/r/0000".to_owned(), later)
    );
}

pub async fn watch_ignores_other_prefixes(fx: &Fixture) {
    let s = fx.store.as_ref();
    let start = s.revision().await.unwrap();
    let mut rx = s.watch("/p/", start).await.unwrap();
    let mut all = s.watch("", start).await.unwrap();
    let mut mine = Vec::new();
    for key in ["/p/x", "/q/x", "/p2/x", "/p", "/p/y", "/P/z", "/p/x"] {
        let rev = s.update(key, b"v", None).await.unwrap();
        if key.starts_with("/p/") {
            mine.push((key.to_owned(), rev));
        }
    }
    for (key, rev) in &mine {
        let event = next_event(&mut rx).await;
        assert_eq!((event_key(&event), event.revision()), (key.as_str(), *rev));
    }
    assert_quiet(&mut rx, Duration::from_millis(200)).await;
    // The empty prefix watches everything.
    for _ in 0..7 {
        next_event(&mut all).await;
    }
}

pub async fn watch_from_compacted_revision_needs_resync(fx: &Fixture) {
    let s = fx.store.as_ref();
    let revs = write_n(s, "/c/", 10).await;
    let horizon = revs[7];
    s.compact(horizon).await.unwrap();

    // From below the horizon: ResyncNeeded, then the stream ends.
    let mut rx = s.watch("/c/", revs[4]).await.unwrap();
    match next_event(&mut rx).await {
        WatchEvent::ResyncNeeded { compacted_revision } => assert_eq!(compacted_revision, horizon),
        other => panic!("expected ResyncNeeded, got {other:?}"),
    }
    let end = tokio::time::timeout(super::EVENT_TIMEOUT, rx.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "stream must end after ResyncNeeded: {end:?}"
    );

    // From the horizon itself: exactly the later events.
    let mut rx = s.watch("/c/", horizon).await.unwrap();
    assert_eq!(next_event(&mut rx).await.revision(), revs[8]);
    assert_eq!(next_event(&mut rx).await.revision(), revs[9]);
    assert_quiet(&mut rx, Duration::from_millis(100)).await;

    // Current state is untouched by compaction.
    let list = s.list("/c/").await.unwrap();
    assert_eq!(list.items.len(), 10);
    assert_eq!(list.items[0].mod_revision, revs[0]);
}

pub async fn compaction_edge_cases(fx: &Fixture) {
    let s = fx.store.as_ref();
    let revs = write_n(s, "/e/", 5).await;
    let current = revs[4];
    match s.compact(current + 10).await {
        Err(StoreError::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!((requested, c), (current + 10, current));
        }
        other => panic!("compacting the future: {other:?}"),
    }
    s.compact(revs[2]).await.unwrap();
    s.compact(revs[2])
        .await
        .expect("compacting again is a no-op");
    s.compact(revs[1])
        .await
        .expect("compacting below the horizon is a no-op");
    s.compact(current)
        .await
        .expect("compacting at the current revision");
    // Writes and watches from the current revision keep working.
    let mut rx = s.watch("/e/", current).await.unwrap();
    let next = s.update("/e/0000", b"again", None).await.unwrap();
    assert_eq!(next_event(&mut rx).await.revision(), next);
}
