//! Change detection for SQLite watches: one polling thread per store handle.
//!
//! Another process's commit cannot wake us, so a thread with its own read-only connection
//! reads `meta.revision` every `poll_interval` and publishes it on a `tokio::sync::watch`
//! channel; every watch task of the handle waits on that channel. Writes made through this
//! handle publish their revision at once, so local watchers don't wait for the next poll.
//!
//! Invariants:
//! - at most one poller runs per handle; it is started by the first watch and stops at the
//!   first tick with no subscribed watch task (subscribing and stopping both happen under the
//!   `slot` lock, so a new watch never subscribes to a poller that is about to exit);
//! - the published revision never goes down.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::db;
use crate::Revision;

/// The handle's poller, if one is running.
#[derive(Debug, Default)]
pub(super) struct PollerSlot {
    slot: Mutex<Option<Arc<watch::Sender<Revision>>>>,
}

/// What the polling thread needs to open its own connection.
#[derive(Debug, Clone)]
pub(super) struct PollTarget {
    pub path: PathBuf,
    pub busy_timeout: Duration,
    pub interval: Duration,
}

impl PollerSlot {
    /// Subscribes to revision changes, starting the polling thread if none runs.
    pub(super) fn subscribe(
        self: &Arc<Self>,
        target: &PollTarget,
    ) -> std::io::Result<watch::Receiver<Revision>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = slot.as_ref() {
            return Ok(sender.subscribe());
        }
        let sender = Arc::new(watch::Sender::new(0));
        let receiver = sender.subscribe();
        let this = Arc::clone(self);
        let thread_sender = Arc::clone(&sender);
        let target = target.clone();
        std::thread::Builder::new()
            .name("tortie-store-poll".to_owned())
            .spawn(move || this.run(&target, &thread_sender))?;
        *slot = Some(sender);
        Ok(receiver)
    }

    /// Publishes a revision written through this handle.
    pub(super) fn publish(&self, revision: Revision) {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = slot.as_ref() {
            raise(sender, revision);
        }
    }

    /// Wakes every watcher without a new revision (e.g. after compaction).
    pub(super) fn nudge(&self) {
        let slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = slot.as_ref() {
            sender.send_modify(|_| {});
        }
    }

    /// The polling loop; returns when no watch task is subscribed any more.
    fn run(&self, target: &PollTarget, sender: &watch::Sender<Revision>) {
        let mut conn = None;
        loop {
            std::thread::sleep(target.interval);
            if sender.receiver_count() == 0 {
                let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
                if sender.receiver_count() == 0 {
                    *slot = None;
                    return;
                }
            }
            if conn.is_none() {
                match db::open_connection(&target.path, target.busy_timeout, true) {
                    Ok(c) => conn = Some(c),
                    Err(e) => {
                        tracing::warn!(path = %target.path.display(), error = ?e, "watch poller cannot open database");
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_ref() else { continue };
            match db::current_revision(c) {
                Ok(revision) => raise(sender, revision),
                Err(e) => {
                    tracing::warn!(path = %target.path.display(), error = ?e, "watch poller cannot read revision");
                    conn = None;
                }
            }
        }
    }
}

/// Publishes `revision` if it is newer than the last published one.
fn raise(sender: &watch::Sender<Revision>, revision: Revision) {
    sender.send_if_modified(|current| {
        if revision > *current {
            *current = revision;
            true
        } else {
            false
        }
    });
}
