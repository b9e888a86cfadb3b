//! Parse errors: what went wrong and the 0-based byte offset where it did.
//!
//! Messages follow the project style (lower case, no trailing period) and end
//! with ` at position N`, e.g. `expected operator after label "app" at
//! position 4`. Calico's own messages carry no position; we only promise to
//! reject exactly the inputs Calico rejects, not to reproduce its wording.

/// A selector that failed to lex or parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at position {position}")]
pub struct ParseError {
    /// 0-based byte offset into the input where the problem was detected.
    pub position: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    pub(crate) fn new(position: usize, kind: ParseErrorKind) -> Self {
        Self { position, kind }
    }
}

/// The reason a selector was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A quoted literal with no closing quote.
    #[error("unterminated string")]
    UnterminatedString,
    /// A single `=` (only `==` and `!=` exist).
    #[error("expected \"==\"")]
    LoneEquals,
    /// A single `&`.
    #[error("expected \"&&\"")]
    LoneAmpersand,
    /// A single `|`.
    #[error("expected \"||\"")]
    LonePipe,
    /// A label name was required but the input had none (or a character
    /// outside `[A-Za-z0-9_./-]`).
    #[error("expected label name")]
    ExpectedLabel,
    /// A label name longer than 512 bytes.
    #[error("label too long ({len} bytes, at most 512)")]
    LabelTooLong {
        /// Length of the offending label in bytes.
        len: usize,
    },
    /// `has(label` without the closing parenthesis.
    #[error("no closing \")\" after has(")]
    UnclosedHas,
    /// `all(` without the closing parenthesis.
    #[error("no closing \")\" after all(")]
    UnclosedAll,
    /// `global(` without the closing parenthesis.
    #[error("no closing \")\" after global(")]
    UnclosedGlobal,
    /// A label followed by something that is not an operator.
    #[error("expected operator after label {label:?}")]
    ExpectedOperator {
        /// The label that needed an operator.
        label: String,
    },
    /// An operator that needs a string literal on its right was followed by
    /// something else.
    #[error("expected string literal after {operator}")]
    ExpectedString {
        /// The operator, quoted.
        operator: String,
    },
    /// `in` / `not in` not followed by `{`.
    #[error("expected set literal after {operator}")]
    ExpectedSetLiteral {
        /// The operator, quoted.
        operator: String,
    },
    /// A set literal that is not closed by `}`.
    #[error("expected \"}}\" but found {found}")]
    ExpectedRBrace {
        /// Description of the token found instead.
        found: String,
    },
    /// A parenthesised expression that is not closed by `)`.
    #[error("expected \")\" but found {found}")]
    ExpectedRParen {
        /// Description of the token found instead.
        found: String,
    },
    /// A token that cannot start an expression.
    #[error("unexpected {found}")]
    UnexpectedToken {
        /// Description of the token found.
        found: String,
    },
    /// A complete expression followed by more input.
    #[error("unexpected {found} after end of expression")]
    TrailingInput {
        /// Description of the first token after the expression.
        found: String,
    },
    /// Parentheses nested deeper than [`crate::MAX_NESTING_DEPTH`].
    #[error("parentheses nested deeper than {max}")]
    TooDeep {
        /// The nesting limit.
        max: usize,
    },
}
