//! A [`Store`] decorator that runs a hook before every call: the one mechanism behind test
//! doubles that count calls, inject failures, gate listings or force interleavings, so none
//! of them has to re-implement the whole trait by delegation.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;

use crate::memory::MemoryStore;
use crate::{KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

/// The store call about to be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    Get,
    List,
    Create,
    Update,
    Delete,
    Watch,
    Revision,
    Compact,
}

impl StoreOp {
    /// True for calls that change data.
    pub fn is_write(self) -> bool {
        matches!(self, StoreOp::Create | StoreOp::Update | StoreOp::Delete)
    }
}

/// What a [`HookedStore`] runs around the inner store's calls.
#[async_trait]
pub trait StoreHook: Send + Sync + fmt::Debug {
    /// Runs before every call; an error fails the call without reaching the inner store.
    async fn before(&self, _op: StoreOp) -> Result<(), StoreError> {
        Ok(())
    }

    /// Called with the number of items each successful `list` returned.
    fn listed(&self, _items: usize) {}
}

/// Wraps a store with a hook. Derefs to the hook, so a test reads its counters or flips its
/// switches through the store handle. `list_keys` keeps the trait's default (a `list`), so
/// the hook sees it as a listing.
#[derive(Debug)]
pub struct HookedStore<H> {
    inner: Arc<dyn Store>,
    hook: H,
}

impl<H: StoreHook> HookedStore<H> {
    pub fn new(inner: Arc<dyn Store>, hook: H) -> Self {
        HookedStore { inner, hook }
    }
}

impl<H: StoreHook + Default> Default for HookedStore<H> {
    /// A fresh in-memory store with a default hook.
    fn default() -> Self {
        HookedStore::new(Arc::new(MemoryStore::new()), H::default())
    }
}

impl<H> Deref for HookedStore<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.hook
    }
}

#[async_trait]
impl<H: StoreHook> Store for HookedStore<H> {
    fn describe(&self) -> String {
        format!("hooked({})", self.inner.describe())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.hook.before(StoreOp::Get).await?;
        self.inner.get(key).await
    }

    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        self.hook.before(StoreOp::List).await?;
        let r = self.inner.list(prefix).await?;
        self.hook.listed(r.items.len());
        Ok(r)
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.hook.before(StoreOp::Create).await?;
        self.inner.create(key, value).await
    }

    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.hook.before(StoreOp::Update).await?;
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.hook.before(StoreOp::Delete).await?;
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.hook.before(StoreOp::Watch).await?;
        self.inner.watch(prefix, from).await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.hook.before(StoreOp::Revision).await?;
        self.inner.revision().await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.hook.before(StoreOp::Compact).await?;
        self.inner.compact(revision).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Probe {
        ops: AtomicUsize,
        items: AtomicUsize,
        refuse_writes: AtomicBool,
    }

    #[async_trait]
    impl StoreHook for Probe {
        async fn before(&self, op: StoreOp) -> Result<(), StoreError> {
            self.ops.fetch_add(1, Ordering::SeqCst);
            if op.is_write() && self.refuse_writes.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("refused".into()));
            }
            Ok(())
        }

        fn listed(&self, items: usize) {
            self.items.fetch_add(items, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn hook_sees_every_call_and_can_refuse() {
        let s = HookedStore::<Probe>::default();
        s.create("/a", b"1").await.unwrap();
        s.create("/b", b"2").await.unwrap();
        assert_eq!(s.list("/").await.unwrap().items.len(), 2);
        assert_eq!(s.list_keys("/").await.unwrap().keys.len(), 2);
        assert_eq!(s.items.load(Ordering::SeqCst), 4);
        s.refuse_writes.store(true, Ordering::SeqCst);
        assert!(s.update("/a", b"x", None).await.is_err());
        assert_eq!(s.get("/a").await.unwrap().unwrap().value, b"1");
        assert_eq!(s.ops.load(Ordering::SeqCst), 6);
    }
}
