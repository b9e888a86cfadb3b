//! Watches the host namespace's interfaces and addresses for host endpoints that name
//! `expectedIPs` instead of an interface (Felix's interface monitor does the same job).
//!
//! A netlink socket subscribed to link and address changes; on any notification (coalesced
//! for [`SETTLE`]) and at least every [`REREAD`], the interfaces are dumped again and
//! published on a `watch` channel when they differ.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::watch;
use tortie_netlink::NetNs;
use tortie_netlink::monitor::{self, Interfaces};

/// Notifications arriving within this time of the first are read as one change.
pub const SETTLE: Duration = Duration::from_millis(50);
/// Longest time between two reads (a missed notification is repaired by then).
pub const REREAD: Duration = Duration::from_secs(30);
/// Wait before trying again after the watch could not start or a read failed.
pub const RETRY: Duration = Duration::from_secs(5);
/// Longest the first policy apply waits for the first reading (a restarted agent must not
/// replace the previous agent's rules with ones that miss host endpoints by address).
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(5);

/// Publishes the interfaces of the namespace at `netns` (the agent's own when `None`) on `tx`
/// (`None` until the first reading) until every receiver is gone.
pub async fn watch(netns: Option<PathBuf>, tx: watch::Sender<Option<Interfaces>>) {
    loop {
        if let Err(e) = watch_once(netns.as_deref(), &tx).await {
            tracing::warn!(error = %e, retry_in = ?RETRY, "watching host interfaces failed");
        }
        if tx.is_closed() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY) => {}
            () = tx.closed() => return,
        }
    }
}

async fn watch_once(
    netns: Option<&std::path::Path>,
    tx: &watch::Sender<Option<Interfaces>>,
) -> anyhow::Result<()> {
    let ns = match netns {
        Some(p) => NetNs::open(p)?,
        None => NetNs::current()?,
    };
    let (handle, mut events) = monitor::interface_events(&ns)?;
    loop {
        let now = monitor::interfaces(&handle).await?;
        tx.send_if_modified(|cur| {
            let changed = cur.as_ref() != Some(&now);
            if changed {
                tracing::debug!(interfaces = now.len(), "host interfaces changed");
                *cur = Some(now);
            }
            changed
        });
        tokio::select! {
            ev = events.next() => {
                if ev.is_none() {
                    anyhow::bail!("the netlink notification stream ended");
                }
                // Coalesce a burst (an interface coming up brings several messages).
                let settle = tokio::time::sleep(SETTLE);
                tokio::pin!(settle);
                for _ in 0..10_000 {
                    tokio::select! {
                        () = &mut settle => break,
                        ev = events.next() => if ev.is_none() { break },
                    }
                }
            }
            () = tokio::time::sleep(REREAD) => {}
            () = tx.closed() => return Ok(()),
        }
    }
}
