//! `FlakyStore`: wraps a real store and can simulate an outage.
//!
//! While "down", every call fails with `Unavailable`; `break_watches` ends every open watch
//! stream with an `Unavailable` error (as a lost connection would). Everything else is
//! delegated, so compaction and `ResyncNeeded` come from the real backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tortie_store::{KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

#[derive(Debug)]
pub struct FlakyStore {
    inner: Arc<dyn Store>,
    down: AtomicBool,
    /// Bumped by `break_watches`; forwarders stop when it changes.
    generation: watch::Sender<u64>,
}

impl FlakyStore {
    pub fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            down: AtomicBool::new(false),
            generation: watch::Sender::new(0),
        })
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    pub fn break_watches(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable {
                datastore: "flaky".to_owned(),
                reason: "simulated outage".to_owned(),
            })
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn describe(&self) -> String {
        format!("flaky({})", self.inner.describe())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        self.check()?;
        self.inner.list(prefix).await
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.create(key, value).await
    }

    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe first: a break while the inner watch is being set up must still count.
        let mut generation = self.generation.subscribe();
        self.check()?;
        let mut upstream = self.inner.watch(prefix, from).await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = upstream.recv() => item,
                    _ = generation.changed() => {
                        let e = StoreError::Unavailable {
                            datastore: "flaky".to_owned(),
                            reason: "simulated connection loss".to_owned(),
                        };
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let Some(item) = item else { return };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.check()?;
        self.inner.compact(revision).await
    }
}
