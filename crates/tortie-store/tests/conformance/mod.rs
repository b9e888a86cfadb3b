//! The one conformance suite every `Store` backend must pass, unchanged.
//!
//! A backend's test file builds a [`Fixture`] (a fresh, empty store) and expands
//! [`conformance_suite!`], which generates one `#[tokio::test]` per case below. Cases assume
//! nothing about absolute revision numbers, only about order and equality.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub mod concurrency;
pub mod flaky;
pub mod kv;
pub mod sync;
pub mod watch;

use std::sync::Arc;
use std::time::Duration;

use tortie_store::{Revision, Store, WatchEvent, WatchStream};

pub use concurrency::concurrent_writers;
pub use kv::*;
pub use sync::*;
pub use watch::*;

/// How long any single expected event may take before a case fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A fresh, empty store for one test case.
pub struct Fixture {
    pub store: Arc<dyn Store>,
    /// A datastore URL that another process can open to reach the same data, if any.
    pub url: Option<String>,
    /// Keeps temp dirs / servers alive for the fixture's lifetime.
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Fixture {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            url: None,
            guard: None,
        }
    }
}

/// Generates one test per conformance case. `$fixture` is an expression evaluating to a
/// future of `Option<Fixture>` (`None` = backend unavailable here, skip).
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::conformance_suite!(@cases $fixture;
            create_get_list_by_prefix,
            create_existing_fails,
            update_cas_success_and_conflict,
            writes_to_missing_keys_fail,
            unconditional_upsert,
            delete_cas,
            revision_is_monotonic,
            values_are_opaque_bytes,
            watch_delivers_every_write_in_order,
            watch_resumes_from_past_revision,
            watch_ignores_other_prefixes,
            watch_from_compacted_revision_needs_resync,
            compaction_edge_cases,
            syncer_snapshot_in_sync_then_deltas,
            syncer_recovers_after_outage_and_compaction,
            syncer_stops_when_handle_dropped,
            concurrent_writers,
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn multi_thread_runtime() {
            let Some(fx) = $fixture.await else { return };
            conformance::create_get_list_by_prefix(&fx).await;
            conformance::watch_delivers_every_write_in_order(&fx).await;
        }

        /// Entry point of the child processes of `concurrent_writers` (run with `--ignored`);
        /// not a test of its own, so a normal run does not count it as one.
        #[tokio::test]
        #[ignore = "child-process entry point of concurrent_writers"]
        async fn concurrent_writers_child() {
            conformance::concurrency::child_main().await;
        }
    };
    (@cases $fixture:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let Some(fx) = $fixture.await else { return };
                conformance::$case(&fx).await;
            }
        )*
    };
}

/// The next watch item, failing the test on timeout, stream end or error.
pub async fn next_event(rx: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch stream ended unexpectedly"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Asserts nothing arrives on the watch for a short while.
pub async fn assert_quiet(rx: &mut WatchStream, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, rx.recv()).await {
        panic!("expected no watch event, got {item:?}");
    }
}

/// The key an event is about.
pub fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put { kv } => &kv.key,
        WatchEvent::Delete { key, .. } => key,
        WatchEvent::ResyncNeeded { .. } => "",
    }
}

/// Writes `n` distinct keys under `prefix`, returning their revisions.
pub async fn write_n(store: &dyn Store, prefix: &str, n: usize) -> Vec<Revision> {
    let mut revs = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("{prefix}{i:04}");
        revs.push(
            store
                .update(&key, format!("v{i}").as_bytes(), None)
                .await
                .unwrap(),
        );
    }
    revs
}
