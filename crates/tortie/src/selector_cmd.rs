//! `tortie selector check`: parse, canonicalise and evaluate a selector.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use tortie_selector::Selector;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The selector expression, e.g. 'app == "web" && has(tier)'.
    pub expr: String,
    /// Labels to evaluate against: k=v,k2=v2 or a JSON object.
    #[arg(long)]
    pub labels: Option<String>,
    /// Output format: text (default) or json.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

/// Parses `k=v,k2=v2` or a JSON object of strings.
pub fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let t = s.trim();
    if t.starts_with('{') {
        return serde_json::from_str(t)
            .context("--labels: expected a JSON object of string values");
    }
    let mut out = BTreeMap::new();
    for part in t.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("--labels: {part:?} is not key=value");
        };
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let sel = match Selector::parse(&args.expr) {
        Ok(s) => s,
        Err(e) => {
            if args.output == "json" {
                let v = serde_json::json!({"error": e.to_string(), "position": e.position});
                println!("{v}");
            }
            eprintln!("error: invalid selector {:?}: {e}", args.expr);
            return Ok(ExitCode::FAILURE);
        }
    };
    let matches = match &args.labels {
        Some(l) => Some(sel.evaluate(&parse_labels(l)?)),
        None => None,
    };
    if args.output == "json" {
        let mut v = serde_json::json!({"canonical": sel.to_string()});
        if let Some(m) = matches {
            v["matches"] = serde_json::Value::Bool(m);
        }
        println!("{v}");
    } else {
        println!("canonical: {sel}");
        println!("id:        {}", sel.unique_id());
        if let Some(m) = matches {
            println!("matches:   {m}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
