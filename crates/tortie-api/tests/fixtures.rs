//! Calico's documented manifests are accepted and round-trip; manifests Calico's validator
//! rejects are rejected with an error naming the field.

use std::path::{Path, PathBuf};

use tortie_api::codec::{Format, decode, encode};

fn files(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {}", root.display());
    out
}

#[test]
fn valid_manifests_are_accepted_and_round_trip() {
    let mut failures = Vec::new();
    let mut count = 0;
    for path in files("valid") {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let decoded = decode(&name, &text, "default");
        if decoded.is_empty() {
            failures.push(format!("{name}: no resources decoded"));
        }
        for d in decoded {
            count += 1;
            let (_, res) = match d {
                Ok(x) => x,
                Err(e) => {
                    failures.push(format!("{e}"));
                    continue;
                }
            };
            for format in [Format::Yaml, Format::Json] {
                let text = encode(std::slice::from_ref(&res), None, format);
                let again: Vec<_> = decode("round-trip", &text, "default");
                match again.as_slice() {
                    [Ok((_, r2))] if *r2 == res => {}
                    [Ok((_, r2))] => failures.push(format!(
                        "{name}: {format:?} round trip changed the resource:\n--- first\n{res:?}\n--- second\n{r2:?}\n--- text\n{text}"
                    )),
                    other => failures.push(format!("{name}: {format:?} round trip failed: {other:?}\n{text}")),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn expected_error(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect-error:"))
        .map(|s| s.trim().to_string())
}

#[test]
fn invalid_manifests_are_rejected_naming_the_field() {
    let mut failures = Vec::new();
    for path in files("invalid") {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("read fixture");
        let Some(expect) = expected_error(&text) else {
            failures.push(format!("{name}: fixture has no '# expect-error:' line"));
            continue;
        };
        let errors: Vec<String> = decode(&name, &text, "default")
            .into_iter()
            .filter_map(|d| d.err())
            .map(|e| e.to_string())
            .collect();
        if errors.is_empty() {
            failures.push(format!(
                "{name}: accepted, but Calico rejects it (expected error naming {expect:?})"
            ));
        } else if !errors.iter().any(|e| e.contains(&expect)) {
            failures.push(format!(
                "{name}: error does not name {expect:?}: {}",
                errors.join(" | ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
