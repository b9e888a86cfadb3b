//! The task that executes [`LabelWrite`] effects against the store and reports each outcome.
//!
//! Owned by the main loop: it ends when the main loop drops its sender.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tortie_store::{Revision, Store, StoreError};

use crate::labels::LabelWrite;
use crate::model::PodId;

/// How long one write may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Capacity of both channels.
pub const CHANNEL_CAPACITY: usize = 256;

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Ok,
    /// The endpoint changed (or vanished) since it was read; the syncer brings the new one.
    Conflict,
    Failed(String),
}

impl WriteOutcome {
    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            WriteOutcome::Ok => "ok",
            WriteOutcome::Conflict => "conflict",
            WriteOutcome::Failed(_) => "error",
        }
    }
}

/// One reported write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteResult {
    pub key: String,
    pub expected: Revision,
    pub pod: PodId,
    pub outcome: WriteOutcome,
}

/// Spawns the writer. Returns the sender of writes and the receiver of results.
pub fn spawn(
    store: Arc<dyn Store>,
) -> (
    mpsc::Sender<LabelWrite>,
    mpsc::Receiver<WriteResult>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = mpsc::channel::<LabelWrite>(CHANNEL_CAPACITY);
    let (res_tx, res_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let task = tokio::spawn(async move {
        while let Some(w) = rx.recv().await {
            let write = store.update(&w.key, &w.value, Some(w.expected));
            let outcome = match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                Ok(Ok(_)) => WriteOutcome::Ok,
                Ok(Err(StoreError::Conflict { .. } | StoreError::NotFound { .. })) => {
                    WriteOutcome::Conflict
                }
                Ok(Err(e)) => WriteOutcome::Failed(e.to_string()),
                Err(_) => {
                    WriteOutcome::Failed(format!("no answer within {}s", WRITE_TIMEOUT.as_secs()))
                }
            };
            let result = WriteResult {
                key: w.key,
                expected: w.expected,
                pod: w.pod,
                outcome,
            };
            if res_tx.send(result).await.is_err() {
                break;
            }
        }
    });
    (tx, res_rx, task)
}
