//! Calico's label-selector language, byte-compatible with libcalico-go's
//! `lib/selector`: lexing, parsing, canonical rendering, unique IDs and
//! evaluation, plus an incremental [`index::LabelIndex`] that tracks which
//! endpoints match which selectors as both change.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tortie_selector::Selector;
//!
//! let sel: Selector = "role in {'db', 'cache'} && ! has(legacy)".parse().unwrap();
//! assert_eq!(sel.to_string(), r#"(role in {"cache", "db"} && !has(legacy))"#);
//! let labels: BTreeMap<String, String> = [("role".into(), "db".into())].into();
//! assert!(sel.evaluate(&labels));
//! assert!(sel.unique_id().starts_with("s:"));
//! ```
//!
//! The crate is pure: no I/O, no clocks, no threads. Parsing never panics,
//! whatever the input.

mod ast;
mod error;
pub mod index;
mod labels;
mod lexer;
mod parser;
pub mod restriction;
mod selector;

pub use ast::Expr;
pub use error::{ParseError, ParseErrorKind};
pub use labels::{LabelSet, Labels, Overlay};
pub use lexer::{MAX_LABEL_LEN, is_valid_label};
pub use parser::{MAX_NESTING_DEPTH, parse_expr};
pub use selector::{Selector, make_unique_id};

#[cfg(test)]
mod tests;
