//! The conformance suite against a real etcd, plus etcd-specific failure cases.
//!
//! Each test starts its own etcd on 127.0.0.1 (see `support/etcd_server.rs`). Without the
//! etcd binary the tests skip, except under `CI=true` where they fail.

#[macro_use]
mod conformance;
#[path = "support/etcd_server.rs"]
mod etcd_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conformance::Fixture;
use tortie_store::etcd::EtcdStore;
use tortie_store::{DatastoreUrl, Store, StoreError, SyncStatus, SyncUpdate, Syncer, SyncerConfig};

async fn fixture() -> Option<Fixture> {
    let server = etcd_server::start_or_skip("etcd conformance").await?;
    let store = server
        .connect(Duration::from_secs(5))
        .await
        .expect("connect to test etcd");
    Some(Fixture {
        store: Arc::new(store),
        url: Some(server.url()),
        guard: Some(Box::new(server)),
    })
}

conformance_suite!(fixture());

/// A 127.0.0.1 port with nothing listening.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn connect_to_dead_endpoint_is_unavailable_within_timeout() {
    let started = Instant::now();
    let err = EtcdStore::connect(&[dead_endpoint()], Duration::from_secs(2))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(
        err.to_string().contains("127.0.0.1"),
        "error names the datastore: {err}"
    );
}

/// An endpoint that accepts TCP connections but never speaks (a hung server): the timeout,
/// not the kernel, has to end the attempt.
#[tokio::test]
async fn connect_to_silent_endpoint_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let started = Instant::now();
    let err = EtcdStore::connect(&[endpoint], Duration::from_secs(2))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(
        elapsed >= Duration::from_millis(1500),
        "gave up early: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    drop(listener);
}

#[tokio::test]
async fn connect_via_url_with_default_timeout_gives_up() {
    let url: DatastoreUrl = dead_endpoint()
        .replace("http://", "etcd://")
        .parse()
        .unwrap();
    let started = Instant::now();
    let err = tortie_store::connect(&url).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(elapsed < Duration::from_secs(13), "took {elapsed:?}");
    eprintln!("dead etcd endpoint reported after {elapsed:?}: {err}");
}

/// Killing etcd under a live store: requests fail with Unavailable within the timeout,
/// watches end with an error, and a syncer reports the outage.
#[tokio::test]
async fn server_loss_is_reported() {
    let Some(mut server) = etcd_server::start_or_skip("server loss").await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(server.connect(Duration::from_secs(2)).await.unwrap());
    store.create("/x/a", b"a").await.unwrap();
    let mut watch = store.watch("/x/", 0).await.unwrap();
    conformance::next_event(&mut watch).await;
    let config = SyncerConfig {
        capacity: 16,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
    };
    let (_handle, mut updates) = Syncer::new(Arc::clone(&store), "/x/")
        .with_config(config)
        .start();
    assert!(matches!(updates.recv().await, Some(SyncUpdate::Set(_))));
    assert_eq!(updates.recv().await, Some(SyncUpdate::InSync));

    server.kill();
    let started = Instant::now();
    let err = store.get("/x/a").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    match tokio::time::timeout(Duration::from_secs(30), watch.recv()).await {
        Ok(Some(Err(e))) => assert!(matches!(e, StoreError::Unavailable { .. }), "{e}"),
        other => panic!("expected the watch to fail, got {other:?}"),
    }
    match tokio::time::timeout(Duration::from_secs(30), updates.recv()).await {
        Ok(Some(SyncUpdate::Status(SyncStatus::Unreachable { reason }))) => {
            eprintln!("syncer reported: {reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}
