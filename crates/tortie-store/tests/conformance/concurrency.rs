//! Concurrent CAS writers: separate processes where the backend is shareable, tasks otherwise.
//!
//! Each worker increments every counter `INCREMENTS_PER_COUNTER` times with get + CAS update,
//! retrying on `Conflict`. Afterwards every counter must equal workers × increments (no lost
//! update), and a watch started before the workers must have seen every revision exactly once,
//! with each counter's values going up by one each time.
//!
//! Processes: the test re-executes its own binary with `--exact concurrent_writers_child`
//! and passes the datastore URL and worker id in environment variables.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tortie_store::{DatastoreUrl, Revision, Store, StoreError, WatchEvent};

use super::{Fixture, next_event};

const WORKERS: usize = 4;
const COUNTERS: usize = 3;
const INCREMENTS_PER_COUNTER: u64 = 100;
const PREFIX: &str = "/counters/";
const MAX_ATTEMPTS: usize = 100_000;

const ENV_URL: &str = "TORTIE_CONFORMANCE_CHILD_URL";
const ENV_WORKER: &str = "TORTIE_CONFORMANCE_CHILD_WORKER";

fn counter_key(i: usize) -> String {
    format!("{PREFIX}{i}")
}

/// One worker's job: all its increments, returning how many CAS conflicts it retried.
pub async fn counter_worker(store: &dyn Store, worker: usize) -> u64 {
    let mut conflicts = 0;
    for round in 0..INCREMENTS_PER_COUNTER as usize {
        for c in 0..COUNTERS {
            // Workers start on different counters to vary the contention pattern.
            let key = counter_key((c + worker + round) % COUNTERS);
            conflicts += increment(store, &key).await;
        }
    }
    conflicts
}

async fn increment(store: &dyn Store, key: &str) -> u64 {
    for attempt in 0..MAX_ATTEMPTS {
        let kv = store.get(key).await.unwrap().expect("counter exists");
        let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
        let next = (n + 1).to_string();
        match store
            .update(key, next.as_bytes(), Some(kv.mod_revision))
            .await
        {
            Ok(_) => return attempt as u64,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("increment of {key} failed: {e}"),
        }
    }
    panic!("{key}: no successful CAS in {MAX_ATTEMPTS} attempts");
}

/// Runs in a child process (see module docs); does nothing in a normal test run.
pub async fn child_main() {
    let (Ok(url), Ok(worker)) = (std::env::var(ENV_URL), std::env::var(ENV_WORKER)) else {
        return;
    };
    let url: DatastoreUrl = url.parse().expect("valid child datastore URL");
    let store = tortie_store::connect(&url).await.expect("child connects");
    let worker: usize = worker.parse().expect("numeric worker id");
    let conflicts = counter_worker(store.as_ref(), worker).await;
    println!("worker {worker}: {conflicts} conflicts retried");
}

pub async fn concurrent_writers(fx: &Fixture) {
    let s = fx.store.as_ref();
    for c in 0..COUNTERS {
        s.create(&counter_key(c), b"0").await.unwrap();
    }
    let start = s.revision().await.unwrap();
    let watch = s.watch(PREFIX, start).await.unwrap();
    let began = Instant::now();
    match &fx.url {
        Some(url) => run_processes(url).await,
        None => run_tasks(&fx.store).await,
    }
    let elapsed = began.elapsed();
    let total = WORKERS as u64 * INCREMENTS_PER_COUNTER;
    for c in 0..COUNTERS {
        let kv = s.get(&counter_key(c)).await.unwrap().unwrap();
        assert_eq!(
            std::str::from_utf8(&kv.value).unwrap(),
            total.to_string(),
            "counter {c} lost updates"
        );
    }
    let end = s.revision().await.unwrap();
    assert_eq!(
        (end - start) as u64,
        total * COUNTERS as u64,
        "one revision per successful CAS"
    );
    check_watch(watch, start, end).await;
    eprintln!(
        "{}: {WORKERS} {} x {} increments in {elapsed:?}",
        s.describe(),
        if fx.url.is_some() {
            "processes"
        } else {
            "tasks"
        },
        total * COUNTERS as u64 / WORKERS as u64,
    );
}

async fn run_tasks(store: &Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            counter_worker(store.as_ref(), worker).await
        }));
    }
    for task in tasks {
        task.await.expect("worker task");
    }
}

async fn run_processes(url: &str) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut children = Vec::new();
    for worker in 0..WORKERS {
        let child = tokio::process::Command::new(&exe)
            .args([
                "--exact",
                "--ignored",
                "concurrent_writers_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_URL, url)
            .env(ENV_WORKER, worker.to_string())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn child test process");
        children.push(child);
    }
    for (worker, child) in children.into_iter().enumerate() {
        let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("child finished within 300 s")
            .expect("child output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        // libtest may print "test ... " on the same line before the child's own output.
        for line in stdout
            .lines()
            .filter_map(|l| l.find("worker ").map(|i| &l[i..]))
        {
            eprintln!("{line}");
        }
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "worker {worker} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every revision in `(start, end]` exactly once, in order, each a +1 step of its counter.
async fn check_watch(mut watch: tortie_store::WatchStream, start: Revision, end: Revision) {
    let mut expected_rev = start;
    let mut values: BTreeMap<String, u64> = BTreeMap::new();
    while expected_rev < end {
        let event = next_event(&mut watch).await;
        expected_rev += 1;
        let WatchEvent::Put { kv } = event else {
            panic!("unexpected event {event:?}");
        };
        assert_eq!(
            kv.mod_revision, expected_rev,
            "watch skipped or repeated a revision"
        );
        let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
        let previous = values.insert(kv.key.clone(), n).unwrap_or(0);
        assert_eq!(n, previous + 1, "{} jumped from {previous} to {n}", kv.key);
    }
}
