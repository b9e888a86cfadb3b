//! Store benchmarks: put, get, list of 1000 keys, and watch latency (write → event received),
//! for the memory, SQLite and etcd backends.
//!
//! etcd is started locally on 127.0.0.1 like in the tests (skipped with a note when the
//! binary is missing). Both file-backed stores keep their data on the same disk-backed temp
//! dir, so fsync costs are real. Sample sizes are small to keep the whole run short.

#[path = "../tests/support/etcd_server.rs"]
mod etcd_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tortie_store::memory::MemoryStore;
use tortie_store::sqlite::SqliteStore;
use tortie_store::{Store, WatchStream};

const VALUE: [u8; 256] = [0x5a; 256];
const LIST_KEYS: usize = 1000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Waits for the event at `rev` on `rx`.
async fn await_revision(rx: &mut WatchStream, rev: i64) {
    loop {
        let event = rx.recv().await.expect("watch open").expect("watch ok");
        if event.revision() >= rev {
            return;
        }
    }
}

/// put / get / list / watch for one store. `watcher` is the handle the watch runs on
/// (the same store, or a second handle on the same data).
fn bench_store(
    c: &mut Criterion,
    rt: &Runtime,
    name: &str,
    store: &Arc<dyn Store>,
    watcher: &Arc<dyn Store>,
    watch_label: &str,
) {
    let mut group = c.benchmark_group("store");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    let mut i = 0u64;
    group.bench_function(BenchmarkId::new("put", name), |b| {
        b.iter(|| {
            i += 1;
            let key = format!("/bench/put/{}", i % 1000);
            rt.block_on(store.update(&key, &VALUE, None)).unwrap()
        });
    });

    rt.block_on(store.update("/bench/get/k", &VALUE, None))
        .unwrap();
    group.bench_function(BenchmarkId::new("get", name), |b| {
        b.iter(|| rt.block_on(store.get("/bench/get/k")).unwrap());
    });

    rt.block_on(async {
        for k in 0..LIST_KEYS {
            store
                .update(&format!("/bench/list/{k:05}"), &VALUE, None)
                .await
                .unwrap();
        }
    });
    group.bench_function(BenchmarkId::new("list_1000", name), |b| {
        b.iter(|| {
            let list = rt.block_on(store.list("/bench/list/")).unwrap();
            assert_eq!(list.items.len(), LIST_KEYS);
        });
    });

    let start = rt.block_on(store.revision()).unwrap();
    let mut rx = rt.block_on(watcher.watch("/bench/watch/", start)).unwrap();
    group.bench_function(BenchmarkId::new(watch_label, name), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let began = Instant::now();
                    let rev = store.update("/bench/watch/k", &VALUE, None).await.unwrap();
                    await_revision(&mut rx, rev).await;
                    total += began.elapsed();
                }
                total
            })
        });
    });
    group.finish();
}

fn memory(c: &mut Criterion) {
    let rt = runtime();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    bench_store(c, &rt, "memory", &store, &store, "watch_latency");
}

fn sqlite(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir_in("/tmp").expect("temp dir");
    let path = dir.path().join("bench.db");
    let store: Arc<dyn Store> = Arc::new(rt.block_on(SqliteStore::open(&path)).unwrap());
    bench_store(c, &rt, "sqlite", &store, &store, "watch_latency");
    // A second handle stands in for another process: its watch learns of commits by polling.
    let other: Arc<dyn Store> = Arc::new(rt.block_on(SqliteStore::open(&path)).unwrap());
    let mut group = c.benchmark_group("store");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    let start = rt.block_on(store.revision()).unwrap();
    let mut rx = rt.block_on(other.watch("/bench/xwatch/", start)).unwrap();
    group.bench_function(
        BenchmarkId::new("watch_latency_other_handle", "sqlite"),
        |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let began = Instant::now();
                        let rev = store.update("/bench/xwatch/k", &VALUE, None).await.unwrap();
                        await_revision(&mut rx, rev).await;
                        total += began.elapsed();
                    }
                    total
                })
            });
        },
    );
    group.finish();
}

fn etcd(c: &mut Criterion) {
    if etcd_server::etcd_binary().is_none() {
        eprintln!(
            "skipping etcd benchmarks: no etcd binary at {}",
            etcd_server::etcd_path().display()
        );
        return;
    }
    let rt = runtime();
    let base = std::path::Path::new("/tmp");
    let Some(server) = rt.block_on(etcd_server::start_or_skip_in("etcd bench", base)) else {
        return;
    };
    let store: Arc<dyn Store> =
        Arc::new(rt.block_on(server.connect(Duration::from_secs(5))).unwrap());
    bench_store(c, &rt, "etcd", &store, &store, "watch_latency");
    drop(store);
    drop(server);
}

criterion_group!(benches, memory, sqlite, etcd);
criterion_main!(benches);
