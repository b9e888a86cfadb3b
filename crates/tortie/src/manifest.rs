//! Reading manifests from files, directories and standard input.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tortie_api::codec::{Decoded, decode};

/// Expands `-f` arguments: `-` is stdin; a directory contributes its `.yaml`, `.yml` and
/// `.json` files (sorted, not recursive).
pub fn expand(paths: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if p == "-" {
            out.push(PathBuf::from("-"));
        } else if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading directory {p}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    matches!(
                        f.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            files.sort();
            out.extend(files);
        } else if path.exists() {
            out.push(path.to_path_buf());
        } else {
            bail!("file {p} does not exist");
        }
    }
    if out.is_empty() {
        bail!("no manifest files found in {}", paths.join(", "));
    }
    Ok(out)
}

/// Reads and decodes every object in the given files.
pub fn read_all(paths: &[String], default_ns: &str) -> anyhow::Result<Vec<Decoded>> {
    let mut out = Vec::new();
    for path in expand(paths)? {
        let (name, text) = if path.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading standard input")?;
            ("-".to_string(), s)
        } else {
            let s = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            (path.display().to_string(), s)
        };
        let decoded = decode(&name, &text, default_ns);
        if decoded.is_empty() {
            bail!("{name}: no resources found");
        }
        out.extend(decoded);
    }
    Ok(out)
}
