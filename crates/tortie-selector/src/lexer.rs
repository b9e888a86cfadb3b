//! Tokenizer for the selector language, byte-compatible with libcalico-go's
//! `selector/tokenizer`.
//!
//! The whole input is tokenized before parsing starts (as Calico does), so a
//! lexical error anywhere wins over a grammar error earlier in the input.
//! Lexing is context-sensitive in exactly one way: directly after a label
//! token only an operator is accepted (`contains`, `starts with`, `ends with`,
//! `not in`, `in`, or the punctuation operators), and the keyword functions
//! `has(`, `all(`, `global(` are only recognised when *not* directly after a
//! label.
//!
//! Invariants: only ASCII space and tab are whitespace; every token carries
//! the 0-based byte offset where it starts; slices handed out always start and
//! end on ASCII bytes, so they are valid `&str` boundaries for any UTF-8 input.

use crate::error::{ParseError, ParseErrorKind};

/// Maximum length, in bytes, of a label name (Calico's `MaxLabelLength`).
pub const MAX_LABEL_LEN: usize = 512;

/// One lexical token; string payloads borrow from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    Label(&'a str),
    Str(&'a str),
    LBrace,
    RBrace,
    Comma,
    Eq,
    Ne,
    In,
    NotIn,
    Not,
    Contains,
    StartsWith,
    EndsWith,
    All,
    Global,
    Has(&'a str),
    LParen,
    RParen,
    And,
    Or,
    Eof,
}

impl Tok<'_> {
    /// Human-readable description used in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Label(l) => format!("label {l:?}"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::LBrace => "\"{\"".to_owned(),
            Tok::RBrace => "\"}\"".to_owned(),
            Tok::Comma => "\",\"".to_owned(),
            Tok::Eq => "\"==\"".to_owned(),
            Tok::Ne => "\"!=\"".to_owned(),
            Tok::In => "\"in\"".to_owned(),
            Tok::NotIn => "\"not in\"".to_owned(),
            Tok::Not => "\"!\"".to_owned(),
            Tok::Contains => "\"contains\"".to_owned(),
            Tok::StartsWith => "\"starts with\"".to_owned(),
            Tok::EndsWith => "\"ends with\"".to_owned(),
            Tok::All => "\"all()\"".to_owned(),
            Tok::Global => "\"global()\"".to_owned(),
            Tok::Has(l) => format!("\"has({l})\""),
            Tok::LParen => "\"(\"".to_owned(),
            Tok::RParen => "\")\"".to_owned(),
            Tok::And => "\"&&\"".to_owned(),
            Tok::Or => "\"||\"".to_owned(),
            Tok::Eof => "end of selector".to_owned(),
        }
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) tok: Tok<'a>,
    pub(crate) pos: usize,
}

/// True for the bytes allowed in a label name: `[A-Za-z0-9_./-]`.
pub(crate) fn is_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b'-')
}

/// True if `s` is a valid label name (1–512 bytes of the label charset).
pub fn is_valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LABEL_LEN && s.bytes().all(is_label_byte)
}

/// Tokenizes `input`; the returned vector always ends with [`Tok::Eof`].
pub(crate) fn tokenize(input: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let mut lexer = Lexer {
        input,
        bytes: input.as_bytes(),
        pos: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

struct Lexer<'a> {
    input: &'a str,
    bytes: &'a [u8],
    pos: usize,
    tokens: Vec<Token<'a>>,
}

impl<'a> Lexer<'a> {
    fn run(&mut self) -> Result<(), ParseError> {
        loop {
            self.skip_ws();
            let start = self.pos;
            let Some(&b) = self.bytes.get(start) else {
                self.push(Tok::Eof, start);
                return Ok(());
            };
            let tok = match b {
                b'(' => self.single(Tok::LParen),
                b')' => self.single(Tok::RParen),
                b'{' => self.single(Tok::LBrace),
                b'}' => self.single(Tok::RBrace),
                b',' => self.single(Tok::Comma),
                b'"' | b'\'' => self.string(b)?,
                b'=' => self.double(b"==", Tok::Eq, ParseErrorKind::LoneEquals)?,
                b'&' => self.double(b"&&", Tok::And, ParseErrorKind::LoneAmpersand)?,
                b'|' => self.double(b"||", Tok::Or, ParseErrorKind::LonePipe)?,
                b'!' if self.rest().starts_with(b"!=") => {
                    self.pos += 2;
                    Tok::Ne
                }
                b'!' => self.single(Tok::Not),
                _ => self.word()?,
            };
            self.push(tok, start);
        }
    }

    fn push(&mut self, tok: Tok<'a>, pos: usize) {
        self.tokens.push(Token { tok, pos });
    }

    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }

    fn err(&self, pos: usize, kind: ParseErrorKind) -> ParseError {
        ParseError::new(pos, kind)
    }

    fn skip_ws(&mut self) {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn single(&mut self, tok: Tok<'a>) -> Tok<'a> {
        self.pos += 1;
        tok
    }

    fn double(
        &mut self,
        pat: &[u8],
        tok: Tok<'a>,
        err: ParseErrorKind,
    ) -> Result<Tok<'a>, ParseError> {
        if self.rest().starts_with(pat) {
            self.pos += pat.len();
            Ok(tok)
        } else {
            Err(self.err(self.pos, err))
        }
    }

    /// A quoted literal: no escapes, ends at the next identical quote.
    fn string(&mut self, quote: u8) -> Result<Tok<'a>, ParseError> {
        let open = self.pos;
        let body = open + 1;
        match self.bytes[body..].iter().position(|&c| c == quote) {
            Some(len) => {
                self.pos = body + len + 1;
                Ok(Tok::Str(&self.input[body..body + len]))
            }
            None => Err(self.err(open, ParseErrorKind::UnterminatedString)),
        }
    }

    /// Everything that is not punctuation: operators after a label, keyword
    /// functions, or a label.
    fn word(&mut self) -> Result<Tok<'a>, ParseError> {
        if let Some(Token {
            tok: Tok::Label(label),
            ..
        }) = self.tokens.last().copied()
        {
            return self.operator(label);
        }
        if self.cut(b"has(") {
            return self.has();
        }
        if self.cut(b"all(") {
            self.close_paren(ParseErrorKind::UnclosedAll)?;
            return Ok(Tok::All);
        }
        if self.cut(b"global(") {
            self.close_paren(ParseErrorKind::UnclosedGlobal)?;
            return Ok(Tok::Global);
        }
        Ok(Tok::Label(self.identifier()?))
    }

    /// Operators that are only valid directly after a label.
    fn operator(&mut self, label: &str) -> Result<Tok<'a>, ParseError> {
        let candidates: [(&[&[u8]], Tok<'a>); 5] = [
            (&[b"contains"], Tok::Contains),
            (&[b"starts", b"with"], Tok::StartsWith),
            (&[b"ends", b"with"], Tok::EndsWith),
            (&[b"not", b"in"], Tok::NotIn),
            (&[b"in"], Tok::In),
        ];
        for (words, tok) in candidates {
            if let Some(end) = self.match_words(words) {
                self.pos = end;
                return Ok(tok);
            }
        }
        Err(self.err(
            self.pos,
            ParseErrorKind::ExpectedOperator {
                label: label.to_owned(),
            },
        ))
    }

    /// Matches `words` separated by any run of spaces/tabs (possibly empty),
    /// followed by a word boundary; returns the end offset on success.
    fn match_words(&self, words: &[&[u8]]) -> Option<usize> {
        let mut p = self.pos;
        for (i, word) in words.iter().enumerate() {
            if !self.bytes[p..].starts_with(word) {
                return None;
            }
            p += word.len();
            if i + 1 < words.len() {
                while matches!(self.bytes.get(p), Some(b' ' | b'\t')) {
                    p += 1;
                }
            }
        }
        match self.bytes.get(p) {
            Some(&b) if is_label_byte(b) => None,
            _ => Some(p),
        }
    }

    fn cut(&mut self, pat: &[u8]) -> bool {
        if self.rest().starts_with(pat) {
            self.pos += pat.len();
            true
        } else {
            false
        }
    }

    fn has(&mut self) -> Result<Tok<'a>, ParseError> {
        self.skip_ws();
        let label = self.identifier()?;
        self.close_paren(ParseErrorKind::UnclosedHas)?;
        Ok(Tok::Has(label))
    }

    fn close_paren(&mut self, kind: ParseErrorKind) -> Result<(), ParseError> {
        self.skip_ws();
        if self.cut(b")") {
            Ok(())
        } else {
            Err(self.err(self.pos, kind))
        }
    }

    fn identifier(&mut self) -> Result<&'a str, ParseError> {
        let start = self.pos;
        let len = self
            .rest()
            .iter()
            .take_while(|&&b| is_label_byte(b))
            .count();
        if len == 0 {
            return Err(self.err(start, ParseErrorKind::ExpectedLabel));
        }
        if len > MAX_LABEL_LEN {
            return Err(self.err(start, ParseErrorKind::LabelTooLong { len }));
        }
        self.pos += len;
        Ok(&self.input[start..start + len])
    }
}
