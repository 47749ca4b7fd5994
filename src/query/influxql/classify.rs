//! The shallow classifier: walks the tokens of one statement and collects what routing and the safety
//! policy need (kind, sources with subqueries flattened, `time` in WHERE, `SELECT *`, INTO, ON,
//! the outer LIMIT/OFFSET spans), without ever building an expression tree.
//!
//! Invariants: recursion happens only across subqueries, at most `MAX_SUBQUERY_DEPTH` levels; every
//! token index is looked up with `get`, so no input can make it index out of bounds.

use std::ops::Range;

use super::lexer::{Op, Tok, Token, unescape_ident, unescape_regex};
use super::{Kind, MAX_SUBQUERY_DEPTH, ParseError, ShowKind, Source, Statement};

/// The words InfluxQL reserves. A bare reserved word is never a name, which is what lets a FROM
/// list end at `WHERE` without a grammar for everything that may follow it.
const RESERVED: &str = "\
    ALL ALTER ANALYZE AND ANY AS ASC BEGIN BY CARDINALITY CONTINUOUS CREATE DATABASE \
    DATABASES DEFAULT DELETE DESC DESTINATIONS DIAGNOSTICS DISTINCT DROP DURATION END \
    EVERY EXACT EXPLAIN FIELD FOR FROM GRANT GRANTS GROUP GROUPS IN INF INSERT INTO KEY \
    KEYS KILL LIMIT MEASUREMENT MEASUREMENTS NAME OFFSET ON OR ORDER PASSWORD POLICIES \
    POLICY PRIVILEGES QUERIES QUERY READ REPLICATION RESAMPLE RETENTION REVOKE SELECT \
    SERIES SET SHARD SHARDS SHOW SLIMIT SOFFSET STATS SUBSCRIPTION SUBSCRIPTIONS TAG TO \
    USER USERS VALUES WHERE WITH WRITE";

fn is_reserved(word: &str) -> bool {
    RESERVED.split_ascii_whitespace().any(|k| k.eq_ignore_ascii_case(word))
}

/// Findings that subqueries contribute to the statement as a whole.
#[derive(Default)]
struct Facts {
    sources: Vec<Source>,
    has_subquery: bool,
    time: bool,
    star: bool,
    into: bool,
}

/// Findings that belong to the outermost statement only.
#[derive(Default)]
struct Tail {
    on_db: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    spans: Vec<Range<usize>>,
}

impl Tail {
    fn record(&mut self, keyword: &str, n: u64, span: Range<usize>) {
        match keyword {
            "LIMIT" => self.limit = Some(n),
            "OFFSET" => self.offset = Some(n),
            _ => return,
        }
        self.spans.push(span);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clause {
    Fields,
    Into,
    Where,
    Other,
    /// After an outer LIMIT/OFFSET/SLIMIT/SOFFSET: only more of those (and `tz()`) may follow, as in
    /// InfluxQL's grammar. Anything else is an error, so that stripping LIMIT/OFFSET for a merge can
    /// never change what the rest of the statement means.
    Limits,
}

pub(super) struct Parser<'a> {
    pub(super) text: &'a str,
    pub(super) toks: Vec<Token>,
    /// See `match_parens`.
    pub(super) close: Vec<usize>,
}

impl Parser<'_> {
    pub(super) fn statement(&self) -> Result<Statement, ParseError> {
        let n = self.toks.len();
        let mut facts = Facts::default();
        let mut tail = Tail::default();
        let Some(first) = self.word(0) else {
            return Err(ParseError::new("expected a statement keyword such as SELECT or SHOW", self.pos(0)));
        };
        let kind = match first.to_uppercase().as_str() {
            "SELECT" => {
                self.select(0, n, 0, &mut facts, Some(&mut tail))?;
                Kind::Select
            }
            "EXPLAIN" => {
                let analyze = self.is_kw(1, "ANALYZE");
                let at = if analyze { 2 } else { 1 };
                if !self.is_kw(at, "SELECT") {
                    return Err(ParseError::new("expected SELECT after EXPLAIN", self.pos(at)));
                }
                // The wrapped SELECT's LIMIT is not the EXPLAIN's: its output is a plan.
                self.select(at, n, 0, &mut facts, None)?;
                Kind::Explain { analyze }
            }
            "SHOW" => {
                let (kind, next) = self.show_kind()?;
                self.clauses(next, n, &mut facts, &mut tail, true)?;
                Kind::Show(kind)
            }
            "CREATE" => {
                let (object, next) = self.object("CREATE")?;
                if object == "CONTINUOUS QUERY" {
                    self.continuous_query(next, &mut facts, &mut tail)?;
                } else {
                    self.clauses(next, n, &mut facts, &mut tail, false)?;
                }
                Kind::Create(object)
            }
            "DROP" => {
                let (object, next) = self.object("DROP")?;
                match object.as_str() {
                    "MEASUREMENT" => {
                        // The measurement dropped is what routing must find, like a source.
                        let (source, after) = self.source(next, n, "DROP MEASUREMENT")?;
                        facts.sources.push(source);
                        self.clauses(after, n, &mut facts, &mut tail, false)?;
                    }
                    "SERIES" => self.clauses(next, n, &mut facts, &mut tail, true)?,
                    _ => self.clauses(next, n, &mut facts, &mut tail, false)?,
                }
                Kind::Drop(object)
            }
            "DELETE" => {
                self.clauses(1, n, &mut facts, &mut tail, true)?;
                Kind::Delete
            }
            "ALTER" => {
                self.clauses(1, n, &mut facts, &mut tail, false)?;
                Kind::Alter
            }
            "GRANT" => {
                self.clauses(1, n, &mut facts, &mut tail, false)?;
                Kind::Grant
            }
            // REVOKE ... FROM names a user, not a source.
            "REVOKE" => {
                self.clauses(1, n, &mut facts, &mut tail, false)?;
                Kind::Revoke
            }
            // KILL QUERY n ON names a host, not a database: nothing to record.
            "KILL" => Kind::Kill,
            "SET" if self.is_kw(1, "PASSWORD") => Kind::SetPassword,
            other => Kind::Other(other.to_string()),
        };
        Ok(Statement {
            kind,
            sources: facts.sources,
            has_subquery: facts.has_subquery,
            has_time_condition: facts.time,
            select_star: facts.star,
            into: facts.into,
            on_db: tail.on_db,
            limit: tail.limit,
            offset: tail.offset,
            limit_offset_spans: tail.spans,
        })
    }

    /// Walks the SELECT whose keyword is token `at`, up to token `end` (exclusive). Only FROM
    /// recurses (into subqueries); every other clause is scanned flat, so parenthesised
    /// expressions of any depth cost no stack.
    fn select(
        &self,
        at: usize,
        end: usize,
        depth: usize,
        facts: &mut Facts,
        mut tail: Option<&mut Tail>,
    ) -> Result<(), ParseError> {
        let mut clause = Clause::Fields;
        let mut level = 0usize;
        let mut i = at + 1;
        while i < end {
            let Some(t) = self.toks.get(i) else { break };
            match t.tok {
                Tok::Op(Op::LParen) => level += 1,
                Tok::Op(Op::RParen) => level = level.saturating_sub(1),
                _ => {}
            }
            if level == 0 && clause == Clause::Limits {
                self.after_limits(i, true)?;
            }
            if level == 0 {
                match self
                    .keyword(i, &["INTO", "FROM", "WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET"])
                {
                    Some("INTO") if clause == Clause::Fields => {
                        facts.into = true;
                        clause = Clause::Into;
                    }
                    Some("FROM") if matches!(clause, Clause::Fields | Clause::Into) => {
                        i = self.source_list(i, end, depth, facts)?;
                        clause = Clause::Other;
                        continue;
                    }
                    Some("WHERE") => clause = Clause::Where,
                    Some("GROUP" | "ORDER") => clause = Clause::Other,
                    Some(kw @ ("LIMIT" | "OFFSET" | "SLIMIT" | "SOFFSET")) => {
                        let (n, span) = self.count(i, end, kw)?;
                        if let Some(tail) = tail.as_deref_mut() {
                            tail.record(kw, n, span);
                        }
                        clause = Clause::Limits;
                        i += 2;
                        continue;
                    }
                    _ => {
                        // fill() and tz() may follow WHERE without GROUP BY and end it.
                        if clause != Clause::Limits
                            && self.keyword(i, &["FILL", "TZ"]).is_some()
                            && self.is_op(i + 1, Op::LParen)
                        {
                            clause = Clause::Other;
                        }
                    }
                }
            }
            match clause {
                Clause::Fields if level == 0 && t.tok == Tok::Op(Op::Star) => {
                    // A bare `*` stands where a field starts; elsewhere it multiplies.
                    let prev = i.saturating_sub(1);
                    if self.is_op(prev, Op::Comma) || self.keyword(prev, &["SELECT", "DISTINCT"]).is_some() {
                        facts.star = true;
                    }
                }
                Clause::Where if self.is_time_comparison(i) => facts.time = true,
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }

    /// Reads the source list after the FROM at token `at`; returns the index after it.
    fn source_list(&self, at: usize, end: usize, depth: usize, facts: &mut Facts) -> Result<usize, ParseError> {
        let mut i = at + 1;
        loop {
            if i < end && self.is_op(i, Op::LParen) {
                let close = self.close.get(i).copied().unwrap_or(0);
                if close <= i || close >= end {
                    return Err(ParseError::new("unbalanced parentheses", self.pos(i)));
                }
                if !self.is_kw(i + 1, "SELECT") {
                    return Err(ParseError::new("expected SELECT after '(' in FROM", self.pos(i + 1)));
                }
                if depth >= MAX_SUBQUERY_DEPTH {
                    return Err(ParseError::new(
                        format!("subqueries nested more than {MAX_SUBQUERY_DEPTH} deep"),
                        self.pos(i),
                    ));
                }
                facts.has_subquery = true;
                self.select(i + 1, close, depth + 1, facts, None)?;
                i = close + 1;
            } else {
                let (source, next) = self.source(i, end, "FROM")?;
                facts.sources.push(source);
                i = next;
            }
            if i < end && self.is_op(i, Op::Comma) {
                i += 1;
            } else {
                return Ok(i);
            }
        }
    }

    /// Reads one possibly qualified measurement or regex starting at token `i`: `m`, `rp.m`,
    /// `db.rp.m`, `db..m`, each part bare or quoted, the last possibly a regex.
    fn source(&self, mut i: usize, end: usize, after: &str) -> Result<(Source, usize), ParseError> {
        let mut parts: Vec<Option<String>> = Vec::new();
        let mut regex = None;
        let mut want_part = true;
        while i < end && regex.is_none() {
            let Some(t) = self.toks.get(i) else { break };
            if want_part {
                match t.tok {
                    // An empty part, as the rp of `db..m`.
                    Tok::Op(Op::Dot) => parts.push(None),
                    Tok::Regex => {
                        regex = Some(unescape_regex(self.inner(t)));
                        want_part = false;
                    }
                    _ => match self.name(i) {
                        Some(name) => {
                            parts.push(Some(name));
                            want_part = false;
                        }
                        None => break,
                    },
                }
            } else if t.tok == Tok::Op(Op::Dot) {
                want_part = true;
            } else {
                break;
            }
            i += 1;
        }
        if want_part {
            return Err(ParseError::new(
                format!("expected a measurement, regex or subquery after {after}"),
                self.pos(i),
            ));
        }
        let last = match regex {
            Some(pattern) => Ok(pattern),
            None => match parts.pop() {
                Some(Some(name)) => Err(name),
                _ => {
                    return Err(ParseError::new(format!("expected a measurement name after {after}"), self.pos(i)));
                }
            },
        };
        let (db, rp) = match parts.len() {
            0 => (None, None),
            1 => (None, parts.pop().flatten()),
            2 => {
                let rp = parts.pop().flatten();
                (parts.pop().flatten(), rp)
            }
            _ => {
                return Err(ParseError::new(
                    "too many parts in measurement name (at most db.rp.measurement)",
                    self.pos(i.saturating_sub(1)),
                ));
            }
        };
        let source = match last {
            Ok(pattern) => Source::Regex { db, rp, pattern },
            Err(name) => Source::Measurement { db, rp, name },
        };
        Ok((source, i))
    }

    /// Token `i` stands after an outer LIMIT/OFFSET: it must be another of them, or (in a SELECT) the
    /// `tz(` ... `)` that may close the statement.
    fn after_limits(&self, i: usize, select: bool) -> Result<(), ParseError> {
        let ok = self.keyword(i, &["LIMIT", "OFFSET", "SLIMIT", "SOFFSET"]).is_some()
            || select && self.is_kw(i, "TZ") && self.is_op(i + 1, Op::LParen)
            || select && self.is_op(i, Op::RParen);
        if ok {
            return Ok(());
        }
        Err(ParseError::new("unexpected clause after LIMIT/OFFSET (they come last)", self.pos(i)))
    }

    /// Scans the clauses of a non-SELECT statement from token `start` to `end`: `ON db`, FROM lists
    /// (when `sources`), `WITH MEASUREMENT`, WHERE, LIMIT and OFFSET.
    fn clauses(
        &self,
        start: usize,
        end: usize,
        facts: &mut Facts,
        tail: &mut Tail,
        sources: bool,
    ) -> Result<(), ParseError> {
        let mut clause = Clause::Other;
        let mut level = 0usize;
        let mut i = start;
        while i < end {
            let Some(t) = self.toks.get(i) else { break };
            match t.tok {
                Tok::Op(Op::LParen) => level += 1,
                Tok::Op(Op::RParen) => level = level.saturating_sub(1),
                _ => {}
            }
            if level == 0 && clause == Clause::Limits {
                self.after_limits(i, false)?;
            }
            if level == 0 {
                match self.keyword(
                    i,
                    &["ON", "FROM", "WITH", "WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET"],
                ) {
                    Some("ON") if clause != Clause::Where && tail.on_db.is_none() => {
                        let Some(db) = self.any_name(i + 1).filter(|_| i + 1 < end) else {
                            return Err(ParseError::new("expected a database name after ON", self.pos(i + 1)));
                        };
                        tail.on_db = Some(db);
                        i += 2;
                        continue;
                    }
                    Some("FROM") if sources && clause != Clause::Where => {
                        i = self.source_list(i, end, 0, facts)?;
                        clause = Clause::Other;
                        continue;
                    }
                    Some("WITH") if sources && self.is_kw(i + 1, "MEASUREMENT") => {
                        if !(self.is_op(i + 2, Op::Eq) || self.is_op(i + 2, Op::EqRegex)) {
                            return Err(ParseError::new("expected = or =~ after WITH MEASUREMENT", self.pos(i + 2)));
                        }
                        let (source, next) = self.source(i + 3, end, "WITH MEASUREMENT")?;
                        facts.sources.push(source);
                        clause = Clause::Other;
                        i = next;
                        continue;
                    }
                    Some("WHERE") => clause = Clause::Where,
                    Some("GROUP" | "ORDER") => clause = Clause::Other,
                    Some(kw @ ("LIMIT" | "OFFSET" | "SLIMIT" | "SOFFSET")) => {
                        let (n, span) = self.count(i, end, kw)?;
                        tail.record(kw, n, span);
                        clause = Clause::Limits;
                        i += 2;
                        continue;
                    }
                    _ => {}
                }
            }
            if clause == Clause::Where && self.is_time_comparison(i) {
                facts.time = true;
            }
            i += 1;
        }
        Ok(())
    }

    /// `CREATE CONTINUOUS QUERY name ON db [RESAMPLE ...] BEGIN <select> END`: the body is read as
    /// a SELECT for its sources and INTO, but its LIMIT is not the statement's.
    fn continuous_query(&self, next: usize, facts: &mut Facts, tail: &mut Tail) -> Result<(), ParseError> {
        let n = self.toks.len();
        let Some(begin) = (next..n).find(|&k| self.is_kw(k, "BEGIN")) else {
            return self.clauses(next, n, facts, tail, false);
        };
        self.clauses(next, begin, facts, tail, false)?;
        let Some(end) = (begin + 1..n).rev().find(|&k| self.is_kw(k, "END")) else {
            return Err(ParseError::new("missing END after BEGIN", self.pos(begin)));
        };
        if !self.is_kw(begin + 1, "SELECT") {
            return Err(ParseError::new("expected SELECT after BEGIN", self.pos(begin + 1)));
        }
        self.select(begin + 1, end, 0, facts, None)
    }

    /// The SHOW variant and the index of the first token after its name.
    fn show_kind(&self) -> Result<(ShowKind, usize), ParseError> {
        let Some(w1) = self.word(1) else {
            return Err(ParseError::new("expected what to SHOW", self.pos(1)));
        };
        let cardinality = |k: usize| {
            if self.is_kw(k, "EXACT") && self.is_kw(k + 1, "CARDINALITY") {
                Some(k + 2)
            } else if self.is_kw(k, "CARDINALITY") {
                Some(k + 1)
            } else {
                None
            }
        };
        let upper = w1.to_uppercase();
        let other = |upper: String| (ShowKind::Other(upper), 2);
        Ok(match upper.as_str() {
            "DATABASES" => (ShowKind::Databases, 2),
            "MEASUREMENTS" => (ShowKind::Measurements, 2),
            "MEASUREMENT" => match cardinality(2) {
                Some(k) => (ShowKind::MeasurementCardinality, k),
                None => other(upper),
            },
            "RETENTION" if self.is_kw(2, "POLICIES") => (ShowKind::RetentionPolicies, 3),
            "TAG" if self.is_kw(2, "KEYS") => (ShowKind::TagKeys, 3),
            "TAG" if self.is_kw(2, "KEY") => match cardinality(3) {
                Some(k) => (ShowKind::TagKeyCardinality, k),
                None => other(upper),
            },
            "TAG" if self.is_kw(2, "VALUES") => match cardinality(3) {
                Some(k) => (ShowKind::TagValuesCardinality, k),
                None => (ShowKind::TagValues, 3),
            },
            "FIELD" if self.is_kw(2, "KEYS") => (ShowKind::FieldKeys, 3),
            "FIELD" if self.is_kw(2, "KEY") => match cardinality(3) {
                Some(k) => (ShowKind::FieldKeyCardinality, k),
                None => other(upper),
            },
            "SERIES" => match cardinality(2) {
                Some(k) => (ShowKind::SeriesCardinality, k),
                None => (ShowKind::Series, 2),
            },
            "USERS" => (ShowKind::Users, 2),
            "GRANTS" => (ShowKind::Grants, 2),
            "QUERIES" => (ShowKind::Queries, 2),
            "STATS" => (ShowKind::Stats, 2),
            "DIAGNOSTICS" => (ShowKind::Diagnostics, 2),
            "SHARDS" => (ShowKind::Shards, 2),
            "SHARD" if self.is_kw(2, "GROUPS") => (ShowKind::ShardGroups, 3),
            "CONTINUOUS" if self.is_kw(2, "QUERIES") => (ShowKind::ContinuousQueries, 3),
            "SUBSCRIPTIONS" => (ShowKind::Subscriptions, 2),
            _ => other(upper),
        })
    }

    /// The object of CREATE/DROP, upper-cased with single spaces, and the index after it.
    fn object(&self, verb: &str) -> Result<(String, usize), ParseError> {
        let Some(w) = self.word(1) else {
            return Err(ParseError::new(format!("expected what to {verb}"), self.pos(1)));
        };
        let upper = w.to_uppercase();
        Ok(match upper.as_str() {
            "RETENTION" if self.is_kw(2, "POLICY") => ("RETENTION POLICY".to_string(), 3),
            "CONTINUOUS" if self.is_kw(2, "QUERY") => ("CONTINUOUS QUERY".to_string(), 3),
            _ => (upper, 2),
        })
    }

    /// The integer after the LIMIT-like keyword at `i`, and the byte span of both.
    fn count(&self, i: usize, end: usize, keyword: &str) -> Result<(u64, Range<usize>), ParseError> {
        let (Some(kw), Some(num)) = (self.toks.get(i), self.toks.get(i + 1)) else {
            return Err(ParseError::new(format!("expected an integer after {keyword}"), self.pos(i + 1)));
        };
        if i + 1 >= end || num.tok != Tok::Integer {
            return Err(ParseError::new(format!("expected an integer after {keyword}"), num.start));
        }
        let n = self
            .slice(num)
            .parse::<u64>()
            .map_err(|_| ParseError::new(format!("{keyword} value out of range"), num.start))?;
        Ok((n, kw.start..num.end))
    }

    fn is_time_comparison(&self, i: usize) -> bool {
        let Some(t) = self.toks.get(i) else {
            return false;
        };
        let is_time = match t.tok {
            Tok::Word => self.slice(t).eq_ignore_ascii_case("time"),
            Tok::QuotedIdent => unescape_ident(self.inner(t)).eq_ignore_ascii_case("time"),
            _ => false,
        };
        is_time && (self.is_comparison(i + 1) || i.checked_sub(1).is_some_and(|p| self.is_comparison(p)))
    }

    fn is_comparison(&self, i: usize) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| matches!(t.tok, Tok::Op(Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq)))
    }

    fn slice(&self, t: &Token) -> &str {
        self.text.get(t.start..t.end).unwrap_or_default()
    }

    /// The text between a literal's delimiters.
    fn inner(&self, t: &Token) -> &str {
        self.text.get(t.start + 1..t.end.saturating_sub(1)).unwrap_or_default()
    }

    fn pos(&self, i: usize) -> usize {
        self.toks.get(i).map_or(self.text.len(), |t| t.start)
    }

    fn is_op(&self, i: usize, op: Op) -> bool {
        self.toks.get(i).is_some_and(|t| t.tok == Tok::Op(op))
    }

    /// The text of token `i` when it is a bare word.
    fn word(&self, i: usize) -> Option<&str> {
        self.toks.get(i).filter(|t| t.tok == Tok::Word).map(|t| self.slice(t))
    }

    fn is_kw(&self, i: usize, keyword: &str) -> bool {
        self.word(i).is_some_and(|w| w.eq_ignore_ascii_case(keyword))
    }

    /// The entry of `list` that token `i` spells as a bare word, ignoring case.
    fn keyword(&self, i: usize, list: &[&'static str]) -> Option<&'static str> {
        let w = self.word(i)?;
        list.iter().copied().find(|k| k.eq_ignore_ascii_case(w))
    }

    /// A name: a quoted identifier, or a bare word that is not reserved.
    fn name(&self, i: usize) -> Option<String> {
        let t = self.toks.get(i)?;
        match t.tok {
            Tok::Word => {
                let w = self.slice(t);
                (!is_reserved(w)).then(|| w.to_string())
            }
            Tok::QuotedIdent => Some(unescape_ident(self.inner(t))),
            _ => None,
        }
    }

    /// Like `name`, but a reserved bare word is accepted too: after ON nothing else can follow.
    fn any_name(&self, i: usize) -> Option<String> {
        match self.toks.get(i)?.tok {
            Tok::Word => self.word(i).map(str::to_string),
            _ => self.name(i),
        }
    }
}
