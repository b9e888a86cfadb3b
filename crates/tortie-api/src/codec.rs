//! Reading manifests (YAML or JSON; multi-document; `List` and `<Kind>List` wrappers) into
//! validated resources, and writing resources back as YAML or JSON.
//!
//! Decoding never stops at the first bad document: [`decode`] returns one result per object so
//! a caller can report exactly which documents were good and which were not.

use serde_json::{Map, Value};

use crate::error::{DecodeError, Origin};
use crate::kind::{CALICO_API_VERSION, Kind};
use crate::resource::Resource;

/// One decoded object and where it came from.
pub type Decoded = Result<(Origin, Resource), DecodeError>;

/// Decodes every object in `text`. `file` names the source in errors. Namespaced objects
/// without a namespace get `default_namespace`.
pub fn decode(file: &str, text: &str, default_namespace: &str) -> Vec<Decoded> {
    let docs = match split_documents(file, text) {
        Ok(d) => d,
        Err(e) => return vec![Err(e)],
    };
    let texts = yaml_document_texts(text, docs.len());
    let mut out = Vec::new();
    for (i, (origin, doc)) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let is_single = doc.get("items").is_none() && doc.is_object();
        let doc_text = texts.as_ref().and_then(|t| t.get(i)).filter(|_| is_single);
        match expand_list(&origin, doc) {
            Ok(items) => {
                for (origin, item) in items {
                    out.push(decode_object(
                        origin,
                        item,
                        doc_text.map(String::as_str),
                        default_namespace,
                    ));
                }
            }
            Err(e) => out.push(Err(e)),
        }
    }
    out
}

/// Splits YAML text into its documents' texts, if that split agrees with the parser's count.
fn yaml_document_texts(text: &str, expected: usize) -> Option<Vec<String>> {
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        return None;
    }
    let mut docs: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut seen_separator = false;
    for line in text.lines() {
        if line == "---" || line.starts_with("--- ") {
            if seen_separator || has_yaml_content(&current) {
                docs.push(std::mem::take(&mut current));
            } else {
                current.clear();
            }
            seen_separator = true;
            current.push_str(line.get(4..).unwrap_or(""));
            current.push('\n');
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if has_yaml_content(&current) || docs.is_empty() {
        docs.push(current);
    }
    let docs: Vec<String> = docs.into_iter().filter(|d| has_yaml_content(d)).collect();
    (docs.len() == expected).then_some(docs)
}

fn has_yaml_content(s: &str) -> bool {
    s.lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

/// Parses the documents of a YAML or JSON text into JSON values with their origins.
pub fn split_documents(file: &str, text: &str) -> Result<Vec<(Origin, Value)>, DecodeError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return split_json(file, text);
    }
    let values: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| DecodeError::Syntax {
            origin: Origin {
                file: file.to_string(),
                document: 0,
                line: 1,
                item: None,
            },
            format: "YAML",
            message: e.to_string(),
        })?;
    let starts = document_start_lines(text);
    Ok(values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let origin = Origin {
                file: file.to_string(),
                document: i,
                line: starts.get(i).copied().unwrap_or(1),
                item: None,
            };
            (origin, v)
        })
        .collect())
}

fn split_json(file: &str, text: &str) -> Result<Vec<(Origin, Value)>, DecodeError> {
    let mut out = Vec::new();
    let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let mut offset_line = 1;
    for (i, v) in stream.enumerate() {
        let origin = Origin {
            file: file.to_string(),
            document: i,
            line: offset_line,
            item: None,
        };
        match v {
            Ok(v) => out.push((origin, v)),
            Err(e) => {
                return Err(DecodeError::Syntax {
                    origin,
                    format: "JSON",
                    message: e.to_string(),
                });
            }
        }
        offset_line = 0; // later documents: line unknown without re-scanning
    }
    Ok(out)
}

/// The 1-based first content line of each YAML document.
fn document_start_lines(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pending = Some(1);
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.starts_with("---") {
            if let Some(p) = pending.take() {
                // Only count a document before the first separator if it has content.
                if p < lineno && has_content(text, p, lineno) {
                    starts.push(p);
                }
            }
            pending = Some(lineno + 1);
        }
    }
    if let Some(p) = pending {
        starts.push(p);
    }
    starts
}

fn has_content(text: &str, from: usize, to: usize) -> bool {
    text.lines()
        .skip(from - 1)
        .take(to - from)
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
}

fn header_error(origin: &Origin, message: impl Into<String>) -> DecodeError {
    DecodeError::Header {
        origin: origin.clone(),
        message: message.into(),
    }
}

fn expand_list(origin: &Origin, doc: Value) -> Result<Vec<(Origin, Value)>, DecodeError> {
    // calicoctl also accepts a top-level sequence of resources.
    if let Value::Array(items) = doc {
        return Ok(items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                (
                    Origin {
                        item: Some(i),
                        ..origin.clone()
                    },
                    item,
                )
            })
            .collect());
    }
    let Value::Object(map) = &doc else {
        return Err(header_error(
            origin,
            "a document must be a mapping with apiVersion and kind",
        ));
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    if !(kind == "List" || (kind.ends_with("List") && kind.len() > 4)) {
        return Ok(vec![(origin.clone(), doc)]);
    }
    let Some(Value::Array(items)) = map.get("items") else {
        return Err(header_error(
            origin,
            format!("field items: a {kind} needs an items list"),
        ));
    };
    let element_kind = kind.strip_suffix("List").unwrap_or("");
    let list_api = map.get("apiVersion").and_then(Value::as_str);
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut item = item.clone();
        if let Value::Object(m) = &mut item {
            // Typed lists may omit per-item apiVersion/kind.
            if !element_kind.is_empty() && !m.contains_key("kind") {
                m.insert("kind".into(), Value::String(element_kind.into()));
            }
            if let (Some(api), false) = (list_api, m.contains_key("apiVersion")) {
                m.insert("apiVersion".into(), Value::String(api.into()));
            }
        }
        let o = Origin {
            item: Some(i),
            ..origin.clone()
        };
        out.push((o, item));
    }
    Ok(out)
}

/// Decodes one manifest object: header, metadata, body, defaults, validation.
pub fn decode_object(
    origin: Origin,
    doc: Value,
    doc_text: Option<&str>,
    default_namespace: &str,
) -> Decoded {
    let Value::Object(mut map) = doc else {
        return Err(header_error(
            &origin,
            "a document must be a mapping with apiVersion and kind",
        ));
    };
    let api_version = match map.remove("apiVersion") {
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(header_error(
                &origin,
                format!("field apiVersion = {v}: must be a string"),
            ));
        }
        None => {
            return Err(header_error(
                &origin,
                format!("field apiVersion: missing (expected {CALICO_API_VERSION})"),
            ));
        }
    };
    let kind_name = match map.remove("kind") {
        Some(Value::String(s)) => s,
        Some(v) => {
            return Err(header_error(
                &origin,
                format!("field kind = {v}: must be a string"),
            ));
        }
        None => return Err(header_error(&origin, "field kind: missing")),
    };
    let kind = Kind::from_manifest(&api_version, &kind_name)
        .map_err(|m| header_error(&origin, format!("field kind/apiVersion: {m}")))?;
    let metadata = map
        .remove("metadata")
        .unwrap_or_else(|| Value::Object(Map::new()));
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let invalid = |errors| DecodeError::Invalid {
        origin: origin.clone(),
        kind,
        name: name.clone(),
        errors,
    };
    let decoded = match doc_text.and_then(|t| Resource::from_yaml(kind, t)) {
        Some(r) => r,
        None => Resource::from_parts(kind, metadata, map),
    };
    let mut res = decoded.map_err(invalid)?;
    if kind.namespaced() && res.meta().namespace.as_deref().is_none_or(str::is_empty) {
        res.meta_mut().namespace = Some(default_namespace.to_string());
    }
    res.default_and_validate().map_err(invalid)?;
    Ok((origin, res))
}

/// Output formats for resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// Renders one resource, or a `<Kind>List` when `as_list` is set.
pub fn encode(resources: &[Resource], as_list: Option<Kind>, format: Format) -> String {
    let value = match as_list {
        Some(kind) => {
            let mut m = Map::new();
            m.insert(
                "apiVersion".into(),
                Value::String(kind.info().api_version.into()),
            );
            m.insert("kind".into(), Value::String(format!("{}List", kind.name())));
            m.insert(
                "items".into(),
                Value::Array(resources.iter().map(Resource::to_value).collect()),
            );
            Value::Object(m)
        }
        None => match resources {
            [one] => one.to_value(),
            many => Value::Array(many.iter().map(Resource::to_value).collect()),
        },
    };
    encode_value(&value, format)
}

/// Renders a JSON value as YAML or pretty JSON (with a trailing newline).
pub fn encode_value(value: &Value, format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Yaml => serde_saphyr::to_string(value).unwrap_or_default(),
    }
}

/// What the datastore holds for a resource: its manifest as JSON, without
/// `metadata.resourceVersion` (the store's mod revision is the resource version).
pub fn to_stored(res: &Resource) -> Vec<u8> {
    let mut v = res.to_value();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    // Serialising a `Value` cannot fail.
    serde_json::to_vec(&v).unwrap_or_default()
}

/// Rebuilds a stored resource from its JSON value, without defaulting or validation (stored
/// objects were validated when written).
pub fn from_stored(value: Value) -> Result<Resource, String> {
    let Value::Object(mut map) = value else {
        return Err("stored value is not an object".into());
    };
    let api = map
        .remove("apiVersion")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let kind = map
        .remove("kind")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let kind = Kind::from_manifest(&api, &kind)?;
    let metadata = map
        .remove("metadata")
        .unwrap_or_else(|| Value::Object(Map::new()));
    Resource::from_parts(kind, metadata, map).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}
