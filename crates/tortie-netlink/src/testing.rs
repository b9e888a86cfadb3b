//! For tests that need root to make network namespaces: one place that decides whether they
//! run, skip, or (under `CI=true`, where every test must really run) fail.

/// Whether this process's effective UID is 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether `CI=true` is set.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `true` when root. Otherwise prints why `what` is skipped and returns `false`; under
/// `CI=true` it panics instead, so a root test can never pass vacuously in CI.
pub fn root_or_skip(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !in_ci(),
        "{what}: needs root (network namespaces), and CI=true forbids skipping"
    );
    eprintln!("skipping {what}: needs root (network namespaces)");
    false
}
