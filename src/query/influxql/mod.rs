//! InfluxQL statement splitting and classification for the proxy: a hand-written lexer (comments,
//! strings, quoted identifiers, regex literals, numbers, durations, operators) and a shallow
//! classifier that extracts what routing and the safety policy need — the statement kind, the
//! measurements it reads (subqueries flattened), whether a WHERE compares `time`, `SELECT *`,
//! `INTO`, the `ON <db>` clause and the statement's own LIMIT/OFFSET. It is deliberately not a full
//! parser: expressions are never built, so valid InfluxQL of unusual shapes still classifies.
//! Invariants: the input is untrusted network text, so every UTF-8 string is handled without
//! panicking, in time linear in its length, and recursion happens only across subqueries, at most
//! `MAX_SUBQUERY_DEPTH` levels deep; every position reported (error positions, token bounds,
//! `limit_offset_spans`) is a byte offset into the text that was given, on a char boundary.
//!
//! Files: `lexer.rs` turns text into tokens (and pairs parentheses); `classify.rs` walks the tokens
//! of one statement; this file holds the public types and the two entry points, `split_statements`
//! and `classify`.

mod classify;
mod lexer;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Range;

use classify::Parser;
use lexer::{Lexer, Op, Tok, is_space_char, match_parens, trim_space};

/// How deeply subqueries may nest; deeper input is refused instead of recursed into.
pub const MAX_SUBQUERY_DEPTH: usize = 32;

/// What the proxy needs to know about one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub kind: Kind,
    /// Every measurement source the statement reads, in order of appearance, including the sources
    /// of subqueries (flattened) and of the SELECT inside EXPLAIN. Empty when there is no FROM.
    pub sources: Vec<Source>,
    pub has_subquery: bool,
    /// A WHERE clause (of the statement or any subquery) compares `time` (or "time") with an
    /// operator (=, !=, <>, <, <=, >, >=), on either side.
    pub has_time_condition: bool,
    /// A SELECT field list (outer or subquery) contains a bare `*` or `*::field`/`*::tag`.
    pub select_star: bool,
    /// SELECT ... INTO ...
    pub into: bool,
    /// The `ON <db>` clause, unquoted.
    pub on_db: Option<String>,
    /// The statement's own trailing LIMIT / OFFSET (not SLIMIT/SOFFSET, not those of a subquery).
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    /// Byte ranges in the statement text of the outer `LIMIT n` and `OFFSET n` clauses.
    pub limit_offset_spans: Vec<Range<usize>>,
}

impl Statement {
    /// The statement text with its own outer LIMIT/OFFSET clauses removed (whitespace tidied), for
    /// sending to several backends and applying LIMIT/OFFSET after merging their answers. `text`
    /// must be the text this statement was classified from; for any other text it is returned
    /// trimmed but otherwise unchanged.
    pub fn text_without_limit_offset(&self, text: &str) -> String {
        let mut spans: Vec<&Range<usize>> = self.limit_offset_spans.iter().collect();
        spans.sort_by_key(|r| r.start);
        let mut pieces = Vec::with_capacity(spans.len() + 1);
        let mut from = 0;
        for span in spans {
            match text.get(from..span.start) {
                Some(piece) if span.start <= span.end => pieces.push(piece),
                _ => return trim_space(text).to_string(),
            }
            from = span.end;
        }
        match text.get(from..) {
            Some(piece) => pieces.push(piece),
            None => return trim_space(text).to_string(),
        }
        join_pieces(&pieces)
    }
}

/// Glues the pieces left around removed clauses with one separator each. The separator is a
/// newline when the removed stretch held one, because a `--` comment before the cut must not
/// swallow what came after it.
fn join_pieces(pieces: &[&str]) -> String {
    let mut out = String::new();
    let mut newline = false;
    for piece in pieces {
        let rest = piece.trim_start_matches(is_space_char);
        let lead_newline = piece.get(..piece.len() - rest.len()).is_some_and(|s| s.contains('\n'));
        let body = rest.trim_end_matches(is_space_char);
        if body.is_empty() {
            newline |= piece.contains('\n');
            continue;
        }
        if !out.is_empty() {
            out.push(if newline || lead_newline { '\n' } else { ' ' });
        }
        out.push_str(body);
        newline = rest.get(body.len()..).is_some_and(|s| s.contains('\n'));
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Select,
    Show(ShowKind),
    /// CREATE <object>: object in upper case with single spaces, e.g. "DATABASE", "USER",
    /// "RETENTION POLICY", "CONTINUOUS QUERY", "SUBSCRIPTION".
    Create(String),
    /// DROP <object>, same convention: "MEASUREMENT", "DATABASE", "SERIES", "SHARD",
    /// "RETENTION POLICY", "USER", "CONTINUOUS QUERY", "SUBSCRIPTION".
    Drop(String),
    Delete,
    Alter,
    Grant,
    Revoke,
    Kill,
    SetPassword,
    Explain {
        analyze: bool,
    },
    /// Anything else: the first keyword, upper-cased.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShowKind {
    Databases,
    Measurements,
    RetentionPolicies,
    TagKeys,
    TagValues,
    FieldKeys,
    Series,
    MeasurementCardinality,
    SeriesCardinality,
    TagKeyCardinality,
    TagValuesCardinality,
    FieldKeyCardinality,
    Users,
    Grants,
    Queries,
    Stats,
    Diagnostics,
    Shards,
    ShardGroups,
    ContinuousQueries,
    Subscriptions,
    /// anything else after SHOW, upper-cased
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `cpu`, `"c\"pu"`, `db.rp.cpu`, `db..cpu`, `rp.cpu`, `"1h"."cpu.load"`: names unquoted and
    /// unescaped.
    Measurement { db: Option<String>, rp: Option<String>, name: String },
    /// `/cpu.*/`, `db.rp./cpu.*/`: the pattern between the slashes, with `\/` turned into `/`.
    Regex { db: Option<String>, rp: Option<String>, pattern: String },
}

/// Why a statement could not be classified; `position` is a byte offset into the statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub position: usize,
}

impl ParseError {
    fn new(message: impl Into<String>, position: usize) -> Self {
        ParseError { message: message.into(), position }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.message, self.position)
    }
}

impl std::error::Error for ParseError {}

/// Splits a query parameter into its statements: on every `;` that is not inside a string, a
/// quoted identifier, a regex literal or a comment. Slices are trimmed; statements that are empty
/// or only comments are dropped. Once a literal or comment is left unterminated, the rest of the
/// text is one statement, so that `classify` reports the problem instead of it being split away.
pub fn split_statements(q: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut from = 0;
    let mut significant = false;
    for next in Lexer::new(q) {
        match next {
            Ok(t) if t.tok == Tok::Op(Op::Semicolon) => {
                if significant {
                    push_statement(&mut out, q.get(from..t.start));
                }
                from = t.end;
                significant = false;
            }
            Ok(_) => significant = true,
            Err(_) => {
                significant = true;
                break;
            }
        }
    }
    if significant {
        push_statement(&mut out, q.get(from..));
    }
    out
}

fn push_statement<'a>(out: &mut Vec<&'a str>, piece: Option<&'a str>) {
    if let Some(s) = piece.map(trim_space).filter(|s| !s.is_empty()) {
        out.push(s);
    }
}

/// Classifies one statement (as returned by `split_statements`; trailing `;` are tolerated).
pub fn classify(statement: &str) -> Result<Statement, ParseError> {
    let mut toks = Lexer::new(statement).collect::<Result<Vec<_>, _>>()?;
    while toks.last().is_some_and(|t| t.tok == Tok::Op(Op::Semicolon)) {
        toks.pop();
    }
    // A second statement hidden behind the first would reach the backend unjudged.
    if let Some(t) = toks.iter().find(|t| t.tok == Tok::Op(Op::Semicolon)) {
        return Err(ParseError::new("unexpected ';' inside a statement (split the query first)", t.start));
    }
    if toks.is_empty() {
        return Err(ParseError::new("empty statement", 0));
    }
    let close = match_parens(&toks)?;
    Parser { text: statement, toks, close }.statement()
}
