//! Recursive-descent parser from tokens to [`Expr`], mirroring libcalico-go's
//! `selector/parser`.
//!
//! Grammar (precedence `!` > `&&` > `||`):
//!
//! ```text
//! selector := ε | or
//! or       := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!"* primary          -- odd count => one Not, even => none
//! primary  := has(L) | all() | global() | "(" or ")"
//!           | L ("==" | "!=" | contains | starts with | ends with) STRING
//!           | L ("in" | "not in") "{" [ STRING ("," STRING)* [","] ] "}"
//! ```
//!
//! Shape of the result, matching Calico so canonical strings agree: a single
//! operand of `&&`/`||` is returned bare (never a one-element `And`/`Or`);
//! parentheses leave no node of their own, so `!(!has(a))` is
//! `Not(Not(Has))` while `!!has(a)` is just `Has`.
//!
//! Invariant: the parser never panics and its recursion is bounded by
//! [`MAX_NESTING_DEPTH`] levels of parentheses.

use std::collections::BTreeSet;

use crate::ast::Expr;
use crate::error::{ParseError, ParseErrorKind};
use crate::lexer::{Tok, Token, tokenize};

/// Deepest parenthesis nesting accepted. Calico has no explicit limit (Go
/// stacks grow); we bound it so parsing, printing, evaluation and drop of a
/// parsed tree use bounded stack. Real selectors nest a handful of levels.
pub const MAX_NESTING_DEPTH: usize = 256;

/// Parses a selector string into an expression; the empty (or all-blank)
/// selector parses as [`Expr::All`].
pub fn parse_expr(input: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(input)?;
    let mut parser = Parser { tokens, next: 0 };
    if parser.peek().tok == Tok::Eof {
        return Ok(Expr::All);
    }
    let expr = parser.or(0)?;
    let tail = parser.peek();
    if tail.tok != Tok::Eof {
        return Err(ParseError::new(
            tail.pos,
            ParseErrorKind::TrailingInput {
                found: tail.tok.describe(),
            },
        ));
    }
    Ok(expr)
}

struct Parser<'a> {
    /// Always ends with `Tok::Eof`.
    tokens: Vec<Token<'a>>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Token<'a> {
        // `tokens` ends with Eof and `next` never moves past it.
        self.tokens[self.next.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token<'a> {
        let t = self.peek();
        if t.tok != Tok::Eof {
            self.next += 1;
        }
        t
    }

    fn or(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut operands = vec![self.and(depth)?];
        while self.peek().tok == Tok::Or {
            self.bump();
            operands.push(self.and(depth)?);
        }
        Ok(collapse(operands, Expr::Or))
    }

    fn and(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut operands = vec![self.unary(depth)?];
        while self.peek().tok == Tok::And {
            self.bump();
            operands.push(self.unary(depth)?);
        }
        Ok(collapse(operands, Expr::And))
    }

    fn unary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let mut negated = false;
        while self.peek().tok == Tok::Not {
            self.bump();
            negated = !negated;
        }
        let operand = self.primary(depth)?;
        Ok(if negated {
            Expr::Not(Box::new(operand))
        } else {
            operand
        })
    }

    fn primary(&mut self, depth: usize) -> Result<Expr, ParseError> {
        let t = self.bump();
        match t.tok {
            Tok::Has(label) => Ok(Expr::Has {
                label: label.to_owned(),
            }),
            Tok::All => Ok(Expr::All),
            Tok::Global => Ok(Expr::Global),
            Tok::Label(label) => self.comparison(label),
            Tok::LParen => self.parenthesised(t.pos, depth),
            other => Err(ParseError::new(
                t.pos,
                ParseErrorKind::UnexpectedToken {
                    found: other.describe(),
                },
            )),
        }
    }

    fn parenthesised(&mut self, open: usize, depth: usize) -> Result<Expr, ParseError> {
        if depth >= MAX_NESTING_DEPTH {
            return Err(ParseError::new(
                open,
                ParseErrorKind::TooDeep {
                    max: MAX_NESTING_DEPTH,
                },
            ));
        }
        let inner = self.or(depth + 1)?;
        let close = self.bump();
        if close.tok != Tok::RParen {
            return Err(ParseError::new(
                close.pos,
                ParseErrorKind::ExpectedRParen {
                    found: close.tok.describe(),
                },
            ));
        }
        Ok(inner)
    }

    /// `label <op> <operand>`; the label token has been consumed.
    fn comparison(&mut self, label: &str) -> Result<Expr, ParseError> {
        let op = self.bump();
        let label = label.to_owned();
        match op.tok {
            Tok::Eq => Ok(Expr::Eq {
                label,
                value: self.string(op)?,
            }),
            Tok::Ne => Ok(Expr::Ne {
                label,
                value: self.string(op)?,
            }),
            Tok::Contains => Ok(Expr::Contains {
                label,
                value: self.string(op)?,
            }),
            Tok::StartsWith => Ok(Expr::StartsWith {
                label,
                value: self.string(op)?,
            }),
            Tok::EndsWith => Ok(Expr::EndsWith {
                label,
                value: self.string(op)?,
            }),
            Tok::In => Ok(Expr::In {
                label,
                values: self.set(op)?,
            }),
            Tok::NotIn => Ok(Expr::NotIn {
                label,
                values: self.set(op)?,
            }),
            _ => Err(ParseError::new(
                op.pos,
                ParseErrorKind::ExpectedOperator { label },
            )),
        }
    }

    fn string(&mut self, op: Token<'a>) -> Result<String, ParseError> {
        let t = self.bump();
        match t.tok {
            Tok::Str(s) => Ok(s.to_owned()),
            _ => Err(ParseError::new(
                t.pos,
                ParseErrorKind::ExpectedString {
                    operator: op.tok.describe(),
                },
            )),
        }
    }

    /// `{ "a", "b", }` — possibly empty, optional trailing comma.
    fn set(&mut self, op: Token<'a>) -> Result<BTreeSet<String>, ParseError> {
        let open = self.bump();
        if open.tok != Tok::LBrace {
            return Err(ParseError::new(
                open.pos,
                ParseErrorKind::ExpectedSetLiteral {
                    operator: op.tok.describe(),
                },
            ));
        }
        let mut values = BTreeSet::new();
        while let Tok::Str(s) = self.peek().tok {
            self.bump();
            values.insert(s.to_owned());
            if self.peek().tok == Tok::Comma {
                self.bump();
            } else {
                break;
            }
        }
        let close = self.bump();
        if close.tok != Tok::RBrace {
            return Err(ParseError::new(
                close.pos,
                ParseErrorKind::ExpectedRBrace {
                    found: close.tok.describe(),
                },
            ));
        }
        Ok(values)
    }
}

/// One operand stays bare; several become an n-ary node.
fn collapse(mut operands: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    if operands.len() == 1 {
        operands.pop().unwrap_or(Expr::All)
    } else {
        make(operands)
    }
}
