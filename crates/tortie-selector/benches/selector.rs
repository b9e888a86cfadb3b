//! Selector micro-benchmarks: parse and evaluation cost for typical
//! selectors, and the label index at 100k endpoints × 10k selectors (build,
//! one endpoint label update, one selector update).
//!
//! Run with `cargo bench -p tortie-selector`; total runtime is kept under
//! about two minutes (small sample counts, short measurement windows).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use tortie_selector::Selector;
use tortie_selector::index::LabelIndex;

const ENDPOINTS: u32 = 100_000;
const SELECTORS: u32 = 10_000;
const NAMESPACES: u32 = 200;
const APPS: u32 = 2_000;

/// Labels of endpoint `i`, shaped like a Kubernetes pod after Calico adds its
/// namespace/orchestrator/service-account labels: app `i % 2000` (50 pods
/// each) lives in namespace `app % 200`; a unique pod-template-hash.
fn endpoint_labels(i: u32) -> BTreeMap<String, String> {
    let app = i % APPS;
    let ns = app % NAMESPACES;
    let mut l = BTreeMap::new();
    l.insert("projectcalico.org/namespace".into(), format!("ns-{ns}"));
    l.insert("projectcalico.org/orchestrator".into(), "k8s".into());
    l.insert("projectcalico.org/serviceaccount".into(), "default".into());
    l.insert("pcns.team".into(), format!("team-{}", ns % 20));
    l.insert("app".into(), format!("app-{app}"));
    l.insert(
        "tier".into(),
        ["frontend", "backend", "db", "cache"][(i % 4) as usize].into(),
    );
    l.insert("version".into(), format!("v{}", i % 3));
    l.insert(
        "pod-template-hash".into(),
        format!("{:08x}", i.wrapping_mul(2_654_435_761)),
    );
    l
}

/// Selector `j`: a mix of policy-shaped selectors, mostly narrow. Two are
/// unrestricted (match nearly everything, checked against every new
/// endpoint).
fn selector_text(j: u32) -> String {
    let app = j % APPS;
    let ns = app % NAMESPACES;
    match j % 20 {
        0 if j == 0 => "!has(quarantine)".to_owned(),
        0 if j == 20 => "projectcalico.org/namespace != 'kube-system' || has(debug)".to_owned(),
        0..=7 => format!(
            "projectcalico.org/orchestrator == 'k8s' && projectcalico.org/namespace == 'ns-{ns}' && app == 'app-{app}'"
        ),
        8..=11 => format!(
            "app in {{'app-{app}', 'app-{}'}} && tier == 'db'",
            (app + 1) % APPS
        ),
        12..=15 => {
            format!("projectcalico.org/namespace == 'ns-{ns}' && has(app) && version != 'v1'")
        }
        16..=18 => format!(
            "pcns.team == 'team-{}' && app == 'app-{app}' && tier in {{'frontend', 'backend'}}",
            ns % 20
        ),
        _ => format!("app starts with 'app-{}' && tier == 'cache'", j % 97),
    }
}

fn selectors() -> Vec<Selector> {
    (0..SELECTORS)
        .map(|j| Selector::parse(&selector_text(j)).expect("bench selector parses"))
        .collect()
}

fn build(sels: &[Selector], eps: &[BTreeMap<String, String>]) -> LabelIndex<u32, u32> {
    let mut idx = LabelIndex::new();
    for (i, l) in eps.iter().enumerate() {
        black_box(idx.update_labels(i as u32, l.clone()));
    }
    for (j, s) in sels.iter().enumerate() {
        black_box(idx.update_selector(j as u32, s.clone()));
    }
    idx
}

fn bench_eval(c: &mut Criterion) {
    let pod = endpoint_labels(4_242);
    let cases = [
        ("eq", "app == 'app-242'"),
        (
            "k8s_policy",
            "projectcalico.org/orchestrator == 'k8s' && projectcalico.org/namespace == 'ns-42' && app == 'app-242'",
        ),
        (
            "in_and_has",
            "tier in {'db', 'cache', 'frontend'} && has(app) && !has(quarantine)",
        ),
        (
            "string_ops",
            "app starts with 'app-2' && pod-template-hash contains 'f'",
        ),
        ("or_miss", "a == 'x' || b == 'y' || c == 'z' || d == 'w'"),
    ];
    let mut g = c.benchmark_group("evaluate");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    for (name, text) in cases {
        let sel = Selector::parse(text).expect("parses");
        g.bench_function(name, |b| {
            b.iter(|| black_box(&sel).evaluate(black_box(&pod)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    // The selector Calico's own BenchmarkParse uses.
    let text = r#"! (a == "b"&&! c != "d") || !(a == "b" && !c != "d")"#;
    g.bench_function("calico_bench_selector", |b| {
        b.iter(|| Selector::parse(black_box(text)))
    });
    let sel = Selector::parse(text).expect("parses");
    g.bench_function("unique_id", |b| {
        b.iter(|| tortie_selector::make_unique_id("s", black_box(sel.canonical())))
    });
    g.finish();
}

fn bench_index(c: &mut Criterion) {
    let sels = selectors();
    let eps: Vec<_> = (0..ENDPOINTS).map(endpoint_labels).collect();

    let mut g = c.benchmark_group("index_100k_eps_10k_sels");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("build_endpoints_then_selectors", |b| {
        b.iter_batched(|| (), |()| build(&sels, &eps), BatchSize::PerIteration)
    });
    one_shot_selectors_first(&sels, &eps);

    let started = Instant::now();
    let mut idx = build(&sels, &eps);
    eprintln!(
        "built index in {:?}: {} endpoints, {} selectors ({} unrestricted), {} matches",
        started.elapsed(),
        idx.num_endpoints(),
        idx.num_selectors(),
        idx.num_unrestricted_selectors(),
        (0..SELECTORS).map(|j| idx.num_matches(&j)).sum::<usize>()
    );
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(200));
    bench_updates(&mut g, &mut idx);
    g.finish();
}

/// The opposite load order, timed once (too slow for repeated sampling):
/// anchors are picked blind when there are no endpoints yet; with and
/// without a `rebalance()` after the first 1% of endpoints.
fn one_shot_selectors_first(sels: &[Selector], eps: &[BTreeMap<String, String>]) {
    for rebalance in [false, true] {
        let started = Instant::now();
        let mut idx = LabelIndex::new();
        for (j, s) in sels.iter().enumerate() {
            black_box(idx.update_selector(j as u32, s.clone()));
        }
        for (i, l) in eps.iter().enumerate() {
            if rebalance && i == eps.len() / 100 {
                idx.rebalance();
            }
            black_box(idx.update_labels(i as u32, l.clone()));
        }
        eprintln!(
            "one-shot build, selectors then endpoints (rebalance after 1%: {rebalance}): {:?}",
            started.elapsed()
        );
    }
}

fn bench_updates(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    idx: &mut LabelIndex<u32, u32>,
) {
    // Each benchmark flips between two states so the index stays the same size.
    let ep = 4_242u32;
    let base = endpoint_labels(ep);
    let flip = |key: &str, value: &str| {
        let mut l = base.clone();
        l.insert(key.into(), value.into());
        [base.clone(), l]
    };
    let label_cases = [
        (
            "endpoint_update_unreferenced_label",
            flip("pod-template-hash", "deadbeef"),
        ),
        ("endpoint_update_version", flip("version", "v9")),
        ("endpoint_update_app", flip("app", "app-7")),
        (
            "endpoint_update_namespace",
            flip("projectcalico.org/namespace", "ns-9"),
        ),
    ];
    for (name, states) in label_cases {
        let mut n = 0usize;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    states[n % 2].clone()
                },
                |labels| idx.update_labels(ep, labels),
                BatchSize::SmallInput,
            )
        });
    }
    let narrow = [
        Selector::parse("projectcalico.org/namespace == 'ns-42' && app == 'app-242'").expect("p"),
        Selector::parse("projectcalico.org/namespace == 'ns-43' && app == 'app-243'").expect("p"),
    ];
    let broad = [
        Selector::parse("tier == 'db' && version != 'v1'").expect("p"),
        Selector::parse("tier == 'cache' && version != 'v1'").expect("p"),
    ];
    for (name, states) in [
        ("selector_update_narrow", narrow),
        ("selector_update_25pct", broad),
    ] {
        let mut n = 0usize;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1;
                    states[n % 2].clone()
                },
                |sel| idx.update_selector(SELECTORS + 1, sel),
                BatchSize::SmallInput,
            )
        });
    }
    idx.delete_selector(&(SELECTORS + 1));
}

criterion_group!(benches, bench_eval, bench_index);
criterion_main!(benches);
