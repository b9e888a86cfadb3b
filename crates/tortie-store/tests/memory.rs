//! The conformance suite against `MemoryStore` (concurrent writers run as tasks).

#[macro_use]
mod conformance;

use std::sync::Arc;

use conformance::Fixture;
use tortie_store::memory::MemoryStore;

async fn fixture() -> Option<Fixture> {
    Some(Fixture::new(Arc::new(MemoryStore::new())))
}

conformance_suite!(fixture());

/// A watcher that falls behind the bounded history gets `ResyncNeeded`, not a gap.
#[tokio::test]
async fn history_limit_compacts_automatically() {
    use tortie_store::{Store, WatchEvent};
    let store = MemoryStore::with_history_limit(10);
    for i in 0..25 {
        store
            .update("/k", format!("{i}").as_bytes(), None)
            .await
            .unwrap();
    }
    let mut rx = store.watch("/", 0).await.unwrap();
    assert_eq!(
        conformance::next_event(&mut rx).await,
        WatchEvent::ResyncNeeded {
            compacted_revision: 15
        }
    );
    let mut rx = store.watch("/", 15).await.unwrap();
    assert_eq!(conformance::next_event(&mut rx).await.revision(), 16);
}
