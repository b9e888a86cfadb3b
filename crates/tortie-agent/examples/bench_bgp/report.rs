//! The markdown tables: medians (min–max) over rounds, rates, and ratios to BIRD.

use std::fmt::Write as _;
use std::time::Duration;

use crate::cases::{B9Sample, B10Sample};
use crate::duts::Kind;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `median (min–max)` of the samples, or how many did not finish.
fn spread(v: &[Option<Duration>], timeout: Duration) -> (Option<f64>, String) {
    let mut done: Vec<f64> = v.iter().flatten().map(Duration::as_secs_f64).collect();
    let missing = v.len() - done.len();
    if done.is_empty() {
        return (None, format!("not done in {} s", timeout.as_secs()));
    }
    let (lo, hi) = (
        done.iter().copied().fold(f64::INFINITY, f64::min),
        done.iter().copied().fold(0.0, f64::max),
    );
    let med = median(&mut done);
    let mut s = if done.len() > 1 {
        format!("{med:.3} ({lo:.3}–{hi:.3})")
    } else {
        format!("{med:.3}")
    };
    if missing > 0 {
        let _ = write!(s, ", {missing} not done in {} s", timeout.as_secs());
    }
    (Some(med), s)
}

fn ratio(x: Option<f64>, base: Option<f64>) -> String {
    match (x, base) {
        (Some(x), Some(b)) if b > 0.0 => format!("{:.2}×", x / b),
        _ => "—".into(),
    }
}

pub fn b9_table(
    samples: &[B9Sample],
    kinds: &[Kind],
    n: usize,
    m: usize,
    timeout: Duration,
) -> String {
    let total = n * m;
    let of = |k: Kind| samples.iter().filter(move |s| s.kind == k);
    let med_of = |k: Kind, f: &dyn Fn(&B9Sample) -> f64| {
        let mut v: Vec<f64> = of(k).map(f).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    let bird_t = spread(
        &of(Kind::Bird).map(|s| s.elapsed).collect::<Vec<_>>(),
        timeout,
    )
    .0;
    let bird_rss = med_of(Kind::Bird, &|s| s.hwm_kib as f64);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n### B9: N = {n} feeders × M = {m} prefixes ({total} in all)\n"
    );
    let _ = writeln!(
        t,
        "| DUT | elapsed s, median (min–max) | prefixes/s | elapsed ÷ BIRD | peak RSS MiB | RSS ÷ BIRD | DUT CPU s | runs |"
    );
    let _ = writeln!(
        t,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut sorted = kinds.to_vec();
    sorted.sort();
    for k in sorted {
        let runs = of(k).count();
        if runs == 0 {
            continue;
        }
        let (med, text) = spread(&of(k).map(|s| s.elapsed).collect::<Vec<_>>(), timeout);
        let rate = med.map_or("—".into(), |e| format!("{:.0}", total as f64 / e));
        let (rss, rss_ratio, cpu) = if k == Kind::Nothing {
            ("—".into(), "—".into(), "—".into())
        } else {
            let rss = med_of(k, &|s| s.hwm_kib as f64);
            (
                rss.map_or("—".into(), |r| format!("{:.1}", r / 1024.0)),
                ratio(rss, bird_rss),
                med_of(k, &|s| s.cpu.as_secs_f64()).map_or("—".into(), |c| format!("{c:.2}")),
            )
        };
        let _ = writeln!(
            t,
            "| {} | {text} | {rate} | {} | {rss} | {rss_ratio} | {cpu} | {runs} |",
            k.label(),
            ratio(med, bird_t)
        );
        let short: Vec<usize> = of(k)
            .filter(|s| s.elapsed.is_none())
            .map(|s| s.got)
            .collect();
        if !short.is_empty() {
            let _ = writeln!(
                t,
                "|  ↳ monitor held at the timeout | {short:?} of {total} | | | | | | |"
            );
        }
    }
    t
}

pub fn b10_table(
    samples: &[B10Sample],
    kinds: &[Kind],
    routes: usize,
    timeout: Duration,
) -> String {
    let of = |k: Kind| samples.iter().filter(move |s| s.kind == k);
    let med_of = |k: Kind, f: &dyn Fn(&B10Sample) -> f64| {
        let mut v: Vec<f64> = of(k).map(f).collect();
        (!v.is_empty()).then(|| median(&mut v))
    };
    let rate = |t: Option<f64>| t.map(|t| routes as f64 / t);
    let bird_in = spread(
        &of(Kind::Bird).map(|s| s.install).collect::<Vec<_>>(),
        timeout,
    )
    .0;
    let bird_out = spread(
        &of(Kind::Bird).map(|s| s.withdraw).collect::<Vec<_>>(),
        timeout,
    )
    .0;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n### B10: {routes} IPv4 routes into the DUT's kernel table and out again\n"
    );
    let _ = writeln!(
        t,
        "| DUT | install s, median (min–max) | install routes/s | ÷ BIRD | withdraw s, median (min–max) | withdraw routes/s | ÷ BIRD | DUT CPU s install / withdraw | peak RSS MiB | kernel `proto` | runs |"
    );
    let _ = writeln!(
        t,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"
    );
    let mut sorted = kinds.to_vec();
    sorted.sort();
    for k in sorted {
        let runs = of(k).count();
        if runs == 0 {
            continue;
        }
        let (tin, tin_s) = spread(&of(k).map(|s| s.install).collect::<Vec<_>>(), timeout);
        let (tout, tout_s) = spread(&of(k).map(|s| s.withdraw).collect::<Vec<_>>(), timeout);
        let fmt_rate = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.0}"));
        let cpu_in = med_of(k, &|s| s.cpu_install.as_secs_f64()).unwrap_or_default();
        let cpu_out = med_of(k, &|s| s.cpu_withdraw.as_secs_f64()).unwrap_or_default();
        let rss = med_of(k, &|s| s.hwm_kib as f64).unwrap_or_default() / 1024.0;
        let protos = of(k)
            .map(|s| s.protocols.clone())
            .find(|p| !p.is_empty())
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "| {} | {tin_s} | {} | {} | {tout_s} | {} | {} | {cpu_in:.2} / {cpu_out:.2} | {rss:.1} | {protos} | {runs} |",
            k.label(),
            fmt_rate(rate(tin)),
            ratio(rate(tin), rate(bird_in)),
            fmt_rate(rate(tout)),
            ratio(rate(tout), rate(bird_out)),
        );
    }
    t
}
