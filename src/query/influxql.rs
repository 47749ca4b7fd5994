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

use std::fmt;
use std::ops::Range;

/// How deeply subqueries may nest; deeper input is refused instead of recursed into.
pub const MAX_SUBQUERY_DEPTH: usize = 32;

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

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// An unquoted identifier or keyword.
    Word,
    QuotedIdent,
    Str,
    Integer,
    /// A number with a fractional part.
    Number,
    Duration,
    Regex,
    /// A bound parameter, `$name` or `$"name"`.
    Param,
    Op(Op),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    LParen,
    RParen,
    Comma,
    Semicolon,
    Dot,
    DoubleColon,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    EqRegex,
    NotEqRegex,
    Star,
    Slash,
    /// Arithmetic and bitwise operators and stray punctuation: nothing here depends on which.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_space_char(c: char) -> bool {
    c.is_ascii() && is_space(c as u8)
}

/// Trims exactly the whitespace the lexer skips: Unicode spaces lex as part of a word, so trimming
/// them could change a name.
fn trim_space(s: &str) -> &str {
    s.trim_matches(is_space_char)
}

/// Bytes of non-ASCII characters count as word characters: the lexer then never cuts inside a
/// character, and odd names survive to be judged by the backend rather than here.
fn is_word_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_word_char(b: u8) -> bool {
    is_word_start(b) || b.is_ascii_digit()
}

/// Yields significant tokens (comments and whitespace skipped); stops after the first error.
struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Whether a `/` here starts a regex literal rather than being division. InfluxQL's scanner is
    /// told by its parser; this lexer decides from the previous token instead.
    regex_ok: bool,
    done: bool,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer { src: text.as_bytes(), pos: 0, regex_ok: false, done: false }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            while self.at(self.pos).is_some_and(is_space) {
                self.pos += 1;
            }
            let rest = self.src.get(self.pos..).unwrap_or_default();
            if rest.starts_with(b"--") {
                self.pos += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            } else if rest.starts_with(b"/*") {
                let body = rest.get(2..).unwrap_or_default();
                match body.windows(2).position(|w| w == b"*/") {
                    Some(k) => self.pos += k + 4,
                    None => return Err(ParseError::new("unterminated block comment", self.pos)),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn scan_token(&self) -> Result<Option<Token>, ParseError> {
        let start = self.pos;
        let Some(first) = self.at(start) else {
            return Ok(None);
        };
        let quoted = |tok: Tok, quote: u8, what: &str| {
            self.quoted_end(start, quote)
                .map(|end| (tok, end))
                .ok_or_else(|| ParseError::new(format!("unterminated {what}"), start))
        };
        let (tok, end) = match first {
            b'\'' => quoted(Tok::Str, b'\'', "string literal")?,
            b'"' => quoted(Tok::QuotedIdent, b'"', "quoted identifier")?,
            b'/' if self.regex_ok => quoted(Tok::Regex, b'/', "regex literal")?,
            b'0'..=b'9' => self.number(start),
            b'.' if self.at(start + 1).is_some_and(|b| b.is_ascii_digit()) => self.number(start),
            b'$' => self.param(start),
            b if is_word_start(b) => (Tok::Word, self.word_end(start)),
            _ => self.operator(start, first),
        };
        Ok(Some(Token { tok, start, end }))
    }

    /// End (exclusive) of the literal opening at `start`, or None when it never closes. A
    /// backslash always takes the next byte with it; strings also accept a doubled quote.
    fn quoted_end(&self, start: usize, quote: u8) -> Option<usize> {
        let mut i = start + 1;
        loop {
            match self.at(i)? {
                b'\\' => i += 2,
                b if b == quote => {
                    if quote == b'\'' && self.at(i + 1) == Some(b'\'') {
                        i += 2;
                    } else {
                        return Some(i + 1);
                    }
                }
                _ => i += 1,
            }
        }
    }

    fn word_end(&self, mut i: usize) -> usize {
        while self.at(i).is_some_and(is_word_char) {
            i += 1;
        }
        i
    }

    /// Integers, decimals and durations; a duration is a number with letters glued on (`10s`,
    /// `1700000000000ms`, `1h30m`), its unit left for the backend to validate.
    fn number(&self, start: usize) -> (Tok, usize) {
        let digits = |mut i: usize| {
            while self.at(i).is_some_and(|b| b.is_ascii_digit()) {
                i += 1;
            }
            i
        };
        let mut end = digits(start);
        let mut tok = Tok::Integer;
        if self.at(end) == Some(b'.') && self.at(end + 1).is_some_and(|b| b.is_ascii_digit()) {
            end = digits(end + 1);
            tok = Tok::Number;
        }
        if self.at(end).is_some_and(is_word_start) {
            end = self.word_end(end);
            tok = Tok::Duration;
        }
        (tok, end)
    }

    fn param(&self, start: usize) -> (Tok, usize) {
        match self.at(start + 1) {
            Some(b'"') => match self.quoted_end(start + 1, b'"') {
                Some(end) => (Tok::Param, end),
                // The lone `$` stands alone; the quote after it then reports itself unterminated.
                None => (Tok::Op(Op::Other), start + 1),
            },
            Some(b) if is_word_char(b) => (Tok::Param, self.word_end(start + 1)),
            _ => (Tok::Op(Op::Other), start + 1),
        }
    }

    fn operator(&self, start: usize, first: u8) -> (Tok, usize) {
        let (op, len) = match (first, self.at(start + 1)) {
            (b'=', Some(b'~')) => (Op::EqRegex, 2),
            (b'!', Some(b'~')) => (Op::NotEqRegex, 2),
            (b'!', Some(b'=')) | (b'<', Some(b'>')) => (Op::NotEq, 2),
            (b'<', Some(b'=')) => (Op::LtEq, 2),
            (b'>', Some(b'=')) => (Op::GtEq, 2),
            (b':', Some(b':')) => (Op::DoubleColon, 2),
            (b'=', _) => (Op::Eq, 1),
            (b'<', _) => (Op::Lt, 1),
            (b'>', _) => (Op::Gt, 1),
            (b'(', _) => (Op::LParen, 1),
            (b')', _) => (Op::RParen, 1),
            (b',', _) => (Op::Comma, 1),
            (b';', _) => (Op::Semicolon, 1),
            (b'.', _) => (Op::Dot, 1),
            (b'*', _) => (Op::Star, 1),
            (b'/', _) => (Op::Slash, 1),
            // Only ASCII reaches here (other bytes start words), so one byte is one character.
            _ => (Op::Other, 1),
        };
        (Tok::Op(op), start + len)
    }

    /// A regex may follow where division cannot: after FROM, `,` and `.` (source lists and
    /// `db.rp./re/`), `=~`/`!~`, and where InfluxQL also takes regexes — after SELECT/DISTINCT,
    /// `(` and `,` (fields, `mean(/re/)`) and BY (`GROUP BY /re/`). After an operand, `/` divides.
    fn regex_may_follow(&self, t: &Token) -> bool {
        match t.tok {
            Tok::Op(Op::LParen | Op::Comma | Op::Dot | Op::EqRegex | Op::NotEqRegex) => true,
            Tok::Word => {
                let w = self.src.get(t.start..t.end).unwrap_or_default();
                [b"FROM".as_slice(), b"SELECT", b"DISTINCT", b"BY"].iter().any(|k| w.eq_ignore_ascii_case(k))
            }
            _ => false,
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Result<Token, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.skip_trivia().and_then(|()| self.scan_token()) {
            Ok(Some(t)) => {
                self.pos = t.end;
                self.regex_ok = self.regex_may_follow(&t);
                Some(Ok(t))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Pairs every `(` with its `)`: index of the closing token for each opening one (other entries
/// unused). Done once, iteratively, so no later step has to trust or recurse on nesting.
fn match_parens(toks: &[Token]) -> Result<Vec<usize>, ParseError> {
    let mut close = vec![0; toks.len()];
    let mut open = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t.tok {
            Tok::Op(Op::LParen) => open.push(i),
            Tok::Op(Op::RParen) => match open.pop() {
                Some(o) => {
                    if let Some(c) = close.get_mut(o) {
                        *c = i;
                    }
                }
                None => {
                    return Err(ParseError::new("unbalanced parentheses: unmatched ')'", t.start));
                }
            },
            _ => {}
        }
    }
    match open.first().and_then(|&o| toks.get(o)) {
        Some(t) => Err(ParseError::new("unbalanced parentheses: unclosed '('", t.start)),
        None => Ok(close),
    }
}

// ---------------------------------------------------------------------------------------------
// Classifier

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

struct Parser<'a> {
    text: &'a str,
    toks: Vec<Token>,
    /// See `match_parens`.
    close: Vec<usize>,
}

impl Parser<'_> {
    fn statement(&self) -> Result<Statement, ParseError> {
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

/// Undoes the backslash escapes of a quoted identifier (`\"`, `\\`, `\'`, `\n`); any other
/// backslash is kept as written.
fn unescape_ident(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(e @ ('\\' | '"' | '\'')) => out.push(e),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Only `\/` belongs to the literal; every other escape is regex syntax and stays.
fn unescape_regex(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('/') => out.push('/'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ShowKind as S;

    /// One expected classification; every field of `Statement` but the spans is checked.
    struct Row {
        q: &'static str,
        kind: Kind,
        sources: Vec<Source>,
        time: bool,
        star: bool,
        into: bool,
        sub: bool,
        on: Option<&'static str>,
        limit: Option<u64>,
        offset: Option<u64>,
    }

    fn row(q: &'static str, kind: Kind, sources: &[Source]) -> Row {
        Row {
            q,
            kind,
            sources: sources.to_vec(),
            time: false,
            star: false,
            into: false,
            sub: false,
            on: None,
            limit: None,
            offset: None,
        }
    }

    impl Row {
        fn time(mut self) -> Self {
            self.time = true;
            self
        }
        fn star(mut self) -> Self {
            self.star = true;
            self
        }
        fn into(mut self) -> Self {
            self.into = true;
            self
        }
        fn sub(mut self) -> Self {
            self.sub = true;
            self
        }
        fn on(mut self, db: &'static str) -> Self {
            self.on = Some(db);
            self
        }
        fn limit(mut self, n: u64) -> Self {
            self.limit = Some(n);
            self
        }
        fn offset(mut self, n: u64) -> Self {
            self.offset = Some(n);
            self
        }
    }

    fn opt(s: Option<&str>) -> Option<String> {
        s.map(str::to_string)
    }
    fn m(name: &str) -> Source {
        mq(None, None, name)
    }
    fn mq(db: Option<&str>, rp: Option<&str>, name: &str) -> Source {
        Source::Measurement { db: opt(db), rp: opt(rp), name: name.to_string() }
    }
    fn re(pattern: &str) -> Source {
        req(None, None, pattern)
    }
    fn req(db: Option<&str>, rp: Option<&str>, pattern: &str) -> Source {
        Source::Regex { db: opt(db), rp: opt(rp), pattern: pattern.to_string() }
    }
    fn sel() -> Kind {
        Kind::Select
    }
    fn show(k: ShowKind) -> Kind {
        Kind::Show(k)
    }
    fn create(o: &str) -> Kind {
        Kind::Create(o.to_string())
    }
    fn drop_(o: &str) -> Kind {
        Kind::Drop(o.to_string())
    }
    fn explain(analyze: bool) -> Kind {
        Kind::Explain { analyze }
    }

    fn table() -> Vec<Row> {
        vec![
            // --- SELECT: fields, functions, math, casts ---
            row("SELECT value FROM cpu", sel(), &[m("cpu")]),
            row("select * from cpu", sel(), &[m("cpu")]).star(),
            row("select value from cpu where time < now()", sel(), &[m("cpu")]).time(),
            row(
                "SELECT mean(\"value\") FROM \"cpu\" WHERE time > now() - 1h GROUP BY time(10s), \"host\" fill(null) ORDER BY time DESC LIMIT 10 SLIMIT 5 tz('Europe/Paris')",
                sel(),
                &[m("cpu")],
            )
            .time()
            .limit(10),
            row(
                "SELECT mean(\"usage_idle\") FROM \"autogen\".\"cpu\" WHERE (\"host\" = 'a') AND time >= 1700000000000ms and time <= 1700003600000ms GROUP BY time(10s), \"host\" fill(null)",
                sel(),
                &[mq(None, Some("autogen"), "cpu")],
            )
            .time(),
            row("SELECT count(*) FROM cpu WHERE time > now() - 5m", sel(), &[m("cpu")]).time(),
            row("SELECT a*2 FROM cpu WHERE time > 0", sel(), &[m("cpu")]).time(),
            row("SELECT a * 2, b / 3 FROM cpu WHERE time > 0", sel(), &[m("cpu")]).time(),
            row("SELECT (a + b) / 2 AS avg FROM cpu", sel(), &[m("cpu")]),
            row("SELECT *::field FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")])
                .star()
                .time(),
            row("SELECT *::tag, value FROM cpu", sel(), &[m("cpu")]).star(),
            row("SELECT value, * FROM cpu", sel(), &[m("cpu")]).star(),
            row("SELECT DISTINCT * FROM cpu", sel(), &[m("cpu")]).star(),
            row("SELECT \"value\"::float FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
            row("SELECT a%2, a&1, a|1, a^1 FROM cpu", sel(), &[m("cpu")]),
            row("SELECT 1", sel(), &[]),
            row("SELECT now()", sel(), &[]),
            row(
                "SELECT derivative(mean(value), 1s) FROM cpu WHERE time > now() - 1h GROUP BY time(10s)",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("SELECT top(value, host, 3) FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
            row("SELECT DISTINCT(host) FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
            row(
                "SELECT percentile(value, 95) AS p95 FROM cpu WHERE time > now() - 1h",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("SELECT /^usage/ FROM cpu WHERE time > now() - 1h", sel(), &[m("cpu")]).time(),
            row(
                "SELECT mean(/^usage/) FROM cpu WHERE time > now() - 1h GROUP BY /host/",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("SELECT \"a\"+\"b\" FROM cpu WHERE time>now()-1h", sel(), &[m("cpu")]).time(),
            row("SELECT \"from\" FROM \"select\" WHERE time > 0", sel(), &[m("select")]).time(),
            row("select value from CPU where TIME > now() - 1H", sel(), &[m("CPU")]).time(),
            row("SELECT value FROM cpu WHERE time > 1.5", sel(), &[m("cpu")]).time(),
            row("SELECT value FROM cpu WHERE value > .5", sel(), &[m("cpu")]),
            // --- time conditions ---
            row("SELECT value FROM cpu WHERE now() - 1h < time", sel(), &[m("cpu")]).time(),
            row("SELECT value FROM cpu WHERE \"time\" >= 1700000000000ms", sel(), &[m("cpu")]).time(),
            row("SELECT value FROM cpu WHERE TIME <> 0", sel(), &[m("cpu")]).time(),
            row("SELECT value FROM cpu WHERE time != 0", sel(), &[m("cpu")]).time(),
            row(
                "SELECT value FROM cpu WHERE time = '2024-01-01T00:00:00Z'",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("SELECT value FROM cpu WHERE host = 'time'", sel(), &[m("cpu")]),
            row("SELECT value FROM cpu WHERE host =~ /^web/ AND value > 2", sel(), &[m("cpu")]),
            row(
                "SELECT value FROM cpu WHERE host !~ /a;b/ AND time > now() - 1h",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("SELECT time FROM cpu GROUP BY time(1h)", sel(), &[m("cpu")]),
            row("SELECT value FROM cpu WHERE (time > now() - 1h)", sel(), &[m("cpu")]).time(),
            row(
                "SELECT value FROM cpu WHERE value > 1 OR (host = 'a' AND time < now())",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row(
                "SELECT value FROM cpu WHERE time > $start AND host = $host",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("SELECT value FROM cpu WHERE time > now() - 1h fill(0)", sel(), &[m("cpu")]).time(),
            row(
                "SELECT value FROM cpu WHERE time > now() - 1h tz('America/Chicago')",
                sel(),
                &[m("cpu")],
            )
            .time(),
            // --- LIMIT / OFFSET / SLIMIT / SOFFSET ---
            row("SELECT value FROM cpu LIMIT 10 OFFSET 20", sel(), &[m("cpu")])
                .limit(10)
                .offset(20),
            row(
                "SELECT value FROM cpu WHERE time > now() - 1h SLIMIT 3 SOFFSET 1",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("SELECT value FROM cpu ORDER BY time DESC LIMIT 1", sel(), &[m("cpu")]).limit(1),
            row("SELECT value FROM cpu OFFSET 5", sel(), &[m("cpu")]).offset(5),
            row(
                "SELECT value FROM cpu WHERE time > now()-1h GROUP BY * LIMIT 100 OFFSET 10 SLIMIT 2 SOFFSET 1",
                sel(),
                &[m("cpu")],
            )
            .time()
            .limit(100)
            .offset(10),
            row("select value from cpu limit 0", sel(), &[m("cpu")]).limit(0),
            // --- sources: regexes, lists, qualified and quoted names ---
            row("SELECT value FROM /cpu.*/ WHERE time > now() - 1h", sel(), &[re("cpu.*")]).time(),
            row("SELECT value FROM /a\\/b/", sel(), &[re("a/b")]),
            row("SELECT value FROM /a;b\\d/", sel(), &[re("a;b\\d")]),
            row("SELECT value FROM db.rp./^cpu/", sel(), &[req(Some("db"), Some("rp"), "^cpu")]),
            row("SELECT value FROM \"db\"..\"/x/\"", sel(), &[mq(Some("db"), None, "/x/")]),
            row("SELECT value FROM db../x/", sel(), &[req(Some("db"), None, "x")]),
            row(
                "SELECT value FROM cpu, mem, \"disk\" WHERE time > now() - 1h",
                sel(),
                &[m("cpu"), m("mem"), m("disk")],
            )
            .time(),
            row("SELECT value FROM cpu, /mem.*/", sel(), &[m("cpu"), re("mem.*")]),
            row("SELECT value FROM /a/,/b/", sel(), &[re("a"), re("b")]),
            row("SELECT value FROM \"c\\\"pu\"", sel(), &[m("c\"pu")]),
            row("SELECT value FROM db..cpu", sel(), &[mq(Some("db"), None, "cpu")]),
            row(
                "SELECT value FROM \"1h\".\"cpu.load\"",
                sel(),
                &[mq(None, Some("1h"), "cpu.load")],
            ),
            row(
                "SELECT value FROM \"db\".\"rp\".\"cpu\"",
                sel(),
                &[mq(Some("db"), Some("rp"), "cpu")],
            ),
            row("SELECT value FROM rp.cpu", sel(), &[mq(None, Some("rp"), "cpu")]),
            row("SELECT value FROM \"weird name\" WHERE time > 0", sel(), &[m("weird name")]).time(),
            row("SELECT value FROM \"météo\"", sel(), &[m("météo")]),
            row("SELECT value FROM _cpu_stats", sel(), &[m("_cpu_stats")]),
            // --- subqueries ---
            row(
                "SELECT max(value) FROM (SELECT value FROM cpu WHERE time > now() - 1h)",
                sel(),
                &[m("cpu")],
            )
            .sub()
            .time(),
            row(
                "SELECT mean(max) FROM (SELECT max(value) FROM (SELECT value FROM cpu WHERE time > now() - 1h) GROUP BY time(1m)) WHERE time > now() - 1h",
                sel(),
                &[m("cpu")],
            )
            .sub()
            .time(),
            row(
                "SELECT * FROM (SELECT value FROM cpu) WHERE time > now() - 1h",
                sel(),
                &[m("cpu")],
            )
            .star()
            .sub()
            .time(),
            row("SELECT value FROM (SELECT * FROM cpu WHERE time > 0)", sel(), &[m("cpu")])
                .star()
                .sub()
                .time(),
            row("SELECT a FROM (SELECT a FROM cpu LIMIT 5) LIMIT 2", sel(), &[m("cpu")])
                .sub()
                .limit(2),
            row(
                "SELECT a FROM (SELECT a FROM cpu), mem WHERE time > 0",
                sel(),
                &[m("cpu"), m("mem")],
            )
            .sub()
            .time(),
            row(
                "SELECT a FROM mem, (SELECT a FROM /c.*/, db..cpu OFFSET 3)",
                sel(),
                &[m("mem"), re("c.*"), mq(Some("db"), None, "cpu")],
            )
            .sub(),
            row(
                "SELECT sum(x) FROM (SELECT count(a) AS x FROM (SELECT a FROM (SELECT a FROM cpu WHERE time > now() - 1d)))",
                sel(),
                &[m("cpu")],
            )
            .sub()
            .time(),
            // --- INTO ---
            row(
                "SELECT mean(value) INTO \"db\".\"rp\".\"m\" FROM cpu WHERE time > now() - 1h GROUP BY time(1m)",
                sel(),
                &[m("cpu")],
            )
            .into()
            .time(),
            row(
                "SELECT * INTO \"archive\".\"autogen\".:MEASUREMENT FROM /.*/ WHERE time > now() - 1d GROUP BY *",
                sel(),
                &[re(".*")],
            )
            .into()
            .star()
            .time(),
            row("SELECT value INTO cpu_copy FROM cpu", sel(), &[m("cpu")]).into(),
            row(
                "SELECT a FROM (SELECT a INTO x FROM cpu WHERE time > 0)",
                sel(),
                &[m("cpu")],
            )
            .into()
            .sub()
            .time(),
            // --- comments ---
            row("SELECT value FROM cpu -- trailing comment", sel(), &[m("cpu")]),
            row(
                "SELECT value /* block ; comment */ FROM cpu WHERE time > now() - 1h",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row("/* leading */ SELECT value FROM cpu", sel(), &[m("cpu")]),
            row(
                "SELECT value FROM cpu /* c */ WHERE /* x */ time > now() - 1h",
                sel(),
                &[m("cpu")],
            )
            .time(),
            row(
                "SELECT value FROM cpu WHERE time > now() - 1h -- ; no split\n LIMIT 3",
                sel(),
                &[m("cpu")],
            )
            .time()
            .limit(3),
            row("-- comment\nSHOW DATABASES", show(S::Databases), &[]),
            row("SELECT value FROM /*c*/ /x/", sel(), &[re("x")]),
            row("SELECT value FROM cpu;", sel(), &[m("cpu")]),
            // --- EXPLAIN ---
            row(
                "EXPLAIN SELECT value FROM cpu WHERE time > now() - 1h",
                explain(false),
                &[m("cpu")],
            )
            .time(),
            row("EXPLAIN ANALYZE SELECT * FROM cpu", explain(true), &[m("cpu")]).star(),
            row("explain analyze select value from cpu limit 10", explain(true), &[m("cpu")]),
            row(
                "EXPLAIN SELECT a FROM (SELECT a FROM mem WHERE time > 0)",
                explain(false),
                &[m("mem")],
            )
            .sub()
            .time(),
            // --- SHOW ---
            row("SHOW DATABASES", show(S::Databases), &[]),
            row("SHOW MEASUREMENTS", show(S::Measurements), &[]),
            row("SHOW MEASUREMENTS LIMIT 100", show(S::Measurements), &[]).limit(100),
            row(
                "SHOW MEASUREMENTS WITH MEASUREMENT =~ /cp/ LIMIT 100",
                show(S::Measurements),
                &[re("cp")],
            )
            .limit(100),
            row(
                "SHOW MEASUREMENTS ON \"telegraf\" WITH MEASUREMENT = cpu WHERE host = 'a' LIMIT 5 OFFSET 10",
                show(S::Measurements),
                &[m("cpu")],
            )
            .on("telegraf")
            .limit(5)
            .offset(10),
            row(
                "SHOW MEASUREMENTS WHERE time > now() - 1h",
                show(S::Measurements),
                &[],
            )
            .time(),
            row("show measurements on db0 limit 2 offset 1", show(S::Measurements), &[])
                .on("db0")
                .limit(2)
                .offset(1),
            row("SHOW MEASUREMENT CARDINALITY", show(S::MeasurementCardinality), &[]),
            row(
                "SHOW MEASUREMENT EXACT CARDINALITY ON db FROM cpu WHERE host = 'a'",
                show(S::MeasurementCardinality),
                &[m("cpu")],
            )
            .on("db"),
            row("SHOW RETENTION POLICIES on \"telegraf\"", show(S::RetentionPolicies), &[])
                .on("telegraf"),
            row("SHOW RETENTION POLICIES", show(S::RetentionPolicies), &[]),
            row("SHOW TAG KEYS", show(S::TagKeys), &[]),
            row("SHOW TAG KEYS FROM \"cpu\"", show(S::TagKeys), &[m("cpu")]),
            row(
                "SHOW TAG KEYS ON \"db\" FROM \"cpu\", /mem/ WHERE host = 'a' LIMIT 3 OFFSET 1",
                show(S::TagKeys),
                &[m("cpu"), re("mem")],
            )
            .on("db")
            .limit(3)
            .offset(1),
            row(
                "SHOW TAG VALUES FROM \"cpu\" WITH KEY = \"host\"",
                show(S::TagValues),
                &[m("cpu")],
            ),
            row("SHOW TAG VALUES WITH KEY =~ /ho/", show(S::TagValues), &[]),
            row(
                "SHOW TAG VALUES ON db FROM cpu WITH KEY IN (\"host\", \"region\") WHERE time > now() - 1h LIMIT 10",
                show(S::TagValues),
                &[m("cpu")],
            )
            .on("db")
            .time()
            .limit(10),
            row("SHOW TAG VALUES WITH KEY = \"time\"", show(S::TagValues), &[]),
            row("SHOW TAG KEY CARDINALITY", show(S::TagKeyCardinality), &[]),
            row(
                "SHOW TAG KEY EXACT CARDINALITY FROM cpu",
                show(S::TagKeyCardinality),
                &[m("cpu")],
            ),
            row(
                "SHOW TAG VALUES CARDINALITY WITH KEY = \"host\"",
                show(S::TagValuesCardinality),
                &[],
            ),
            row(
                "SHOW TAG VALUES EXACT CARDINALITY ON db FROM cpu WITH KEY = \"host\"",
                show(S::TagValuesCardinality),
                &[m("cpu")],
            )
            .on("db"),
            row("SHOW FIELD KEYS", show(S::FieldKeys), &[]),
            row("SHOW FIELD KEYS FROM \"cpu\"", show(S::FieldKeys), &[m("cpu")]),
            row(
                "SHOW FIELD KEYS ON \"db\" FROM \"rp\".\"cpu\" LIMIT 1 OFFSET 2",
                show(S::FieldKeys),
                &[mq(None, Some("rp"), "cpu")],
            )
            .on("db")
            .limit(1)
            .offset(2),
            row("SHOW FIELD KEY CARDINALITY", show(S::FieldKeyCardinality), &[]),
            row(
                "SHOW FIELD KEY EXACT CARDINALITY ON db FROM cpu",
                show(S::FieldKeyCardinality),
                &[m("cpu")],
            )
            .on("db"),
            row("SHOW SERIES", show(S::Series), &[]),
            row(
                "SHOW SERIES ON db FROM cpu WHERE host = 'a' LIMIT 10 OFFSET 5",
                show(S::Series),
                &[m("cpu")],
            )
            .on("db")
            .limit(10)
            .offset(5),
            row(
                "SHOW SERIES FROM /c.*/ WHERE time > now() - 1h",
                show(S::Series),
                &[re("c.*")],
            )
            .time(),
            row("SHOW SERIES CARDINALITY", show(S::SeriesCardinality), &[]),
            row(
                "SHOW SERIES EXACT CARDINALITY ON db FROM cpu",
                show(S::SeriesCardinality),
                &[m("cpu")],
            )
            .on("db"),
            row("SHOW USERS", show(S::Users), &[]),
            row("SHOW GRANTS FOR \"jdoe\"", show(S::Grants), &[]),
            row("SHOW QUERIES", show(S::Queries), &[]),
            row("SHOW STATS", show(S::Stats), &[]),
            row("SHOW STATS FOR 'indexes'", show(S::Stats), &[]),
            row("SHOW DIAGNOSTICS", show(S::Diagnostics), &[]),
            row("SHOW SHARDS", show(S::Shards), &[]),
            row("SHOW SHARD GROUPS", show(S::ShardGroups), &[]),
            row("SHOW CONTINUOUS QUERIES", show(S::ContinuousQueries), &[]),
            row("SHOW SUBSCRIPTIONS", show(S::Subscriptions), &[]),
            row("SHOW FOO BAR", show(S::Other("FOO".to_string())), &[]),
            row("show measurement", show(S::Other("MEASUREMENT".to_string())), &[]),
            // --- CREATE ---
            row("CREATE DATABASE \"db\"", create("DATABASE"), &[]),
            row(
                "CREATE DATABASE db WITH DURATION 3d REPLICATION 1 SHARD DURATION 1h NAME \"rp3d\"",
                create("DATABASE"),
                &[],
            ),
            row("CREATE USER \"jdoe\" WITH PASSWORD '1337password'", create("USER"), &[]),
            row(
                "create user admin with password 'p;w''s' with all privileges",
                create("USER"),
                &[],
            ),
            row(
                "CREATE RETENTION POLICY \"one_day\" ON \"db\" DURATION 1d REPLICATION 1 DEFAULT",
                create("RETENTION POLICY"),
                &[],
            )
            .on("db"),
            row(
                "CREATE CONTINUOUS QUERY \"cq\" ON \"db\" BEGIN SELECT mean(value) INTO \"rp2\".\"m\" FROM cpu GROUP BY time(1h) END",
                create("CONTINUOUS QUERY"),
                &[m("cpu")],
            )
            .on("db")
            .into(),
            row(
                "CREATE CONTINUOUS QUERY cq ON db RESAMPLE EVERY 1m FOR 1h BEGIN SELECT count(*) INTO m2 FROM cpu GROUP BY time(1m), * END",
                create("CONTINUOUS QUERY"),
                &[m("cpu")],
            )
            .on("db")
            .into(),
            row(
                "CREATE SUBSCRIPTION \"sub0\" ON \"db\".\"autogen\" DESTINATIONS ALL 'udp://example.com:9090'",
                create("SUBSCRIPTION"),
                &[],
            )
            .on("db"),
            // --- DROP ---
            row("DROP DATABASE \"db\"", drop_("DATABASE"), &[]),
            row("DROP MEASUREMENT \"cpu\"", drop_("MEASUREMENT"), &[m("cpu")]),
            row("drop measurement x", drop_("MEASUREMENT"), &[m("x")]),
            row(
                "DROP SERIES FROM \"cpu\" WHERE \"host\" = 'a'",
                drop_("SERIES"),
                &[m("cpu")],
            ),
            row("DROP SERIES WHERE host = 'a'", drop_("SERIES"), &[]),
            row("DROP SHARD 1", drop_("SHARD"), &[]),
            row("DROP RETENTION POLICY \"rp\" ON \"db\"", drop_("RETENTION POLICY"), &[]).on("db"),
            row("DROP USER \"jdoe\"", drop_("USER"), &[]),
            row("DROP CONTINUOUS QUERY \"cq\" ON \"db\"", drop_("CONTINUOUS QUERY"), &[]).on("db"),
            row("DROP SUBSCRIPTION \"sub0\" ON \"db\".\"autogen\"", drop_("SUBSCRIPTION"), &[])
                .on("db"),
            // --- DELETE ---
            row(
                "DELETE FROM \"cpu\" WHERE time < '2020-01-01T00:00:00Z'",
                Kind::Delete,
                &[m("cpu")],
            )
            .time(),
            row("DELETE WHERE time < now() - 30d", Kind::Delete, &[]).time(),
            row("DELETE FROM /cpu.*/", Kind::Delete, &[re("cpu.*")]),
            row("delete from cpu where host = 'a'", Kind::Delete, &[m("cpu")]),
            // --- ALTER, GRANT, REVOKE, KILL, SET PASSWORD, others ---
            row(
                "ALTER RETENTION POLICY \"rp\" ON \"db\" DURATION 3w SHARD DURATION 2h DEFAULT",
                Kind::Alter,
                &[],
            )
            .on("db"),
            row("GRANT ALL TO \"jdoe\"", Kind::Grant, &[]),
            row("GRANT READ ON \"db\" TO \"jdoe\"", Kind::Grant, &[]).on("db"),
            row("REVOKE ALL PRIVILEGES FROM \"jdoe\"", Kind::Revoke, &[]),
            row("REVOKE WRITE ON \"db\" FROM \"jdoe\"", Kind::Revoke, &[]).on("db"),
            row("KILL QUERY 36", Kind::Kill, &[]),
            row("KILL QUERY 53 ON \"myhost:8088\"", Kind::Kill, &[]),
            row("SET PASSWORD FOR \"jdoe\" = 'new;pw'", Kind::SetPassword, &[]),
            row("INSERT cpu value=1", Kind::Other("INSERT".to_string()), &[]),
            row("set x", Kind::Other("SET".to_string()), &[]),
            row("BEGIN", Kind::Other("BEGIN".to_string()), &[]),
        ]
    }

    #[test]
    fn table_classifies() {
        let rows = table();
        assert!(rows.len() >= 120, "only {} rows", rows.len());
        for r in &rows {
            let st = classify(r.q).unwrap_or_else(|e| panic!("{:?}: {e}", r.q));
            assert_eq!(st.kind, r.kind, "kind of {:?}", r.q);
            assert_eq!(st.sources, r.sources, "sources of {:?}", r.q);
            assert_eq!(st.has_time_condition, r.time, "time of {:?}", r.q);
            assert_eq!(st.select_star, r.star, "star of {:?}", r.q);
            assert_eq!(st.into, r.into, "into of {:?}", r.q);
            assert_eq!(st.has_subquery, r.sub, "subquery of {:?}", r.q);
            assert_eq!(st.on_db.as_deref(), r.on, "on_db of {:?}", r.q);
            assert_eq!(st.limit, r.limit, "limit of {:?}", r.q);
            assert_eq!(st.offset, r.offset, "offset of {:?}", r.q);
            let clauses = usize::from(r.limit.is_some()) + usize::from(r.offset.is_some());
            assert_eq!(st.limit_offset_spans.len(), clauses, "spans of {:?}", r.q);
            // Every statement survives being split on its own.
            assert_eq!(split_statements(r.q), vec![r.q.trim_end_matches(';')], "split {:?}", r.q);
        }
    }

    #[test]
    fn split_respects_literals_and_comments() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT 1; SELECT 2", &["SELECT 1", "SELECT 2"]),
            ("  SHOW DATABASES ;; ; \n", &["SHOW DATABASES"]),
            ("", &[]),
            (" ; ;", &[]),
            ("SELECT a FROM b WHERE c = 'x;y'; SHOW USERS", &["SELECT a FROM b WHERE c = 'x;y'", "SHOW USERS"]),
            ("SELECT a FROM b WHERE c = 'it''s;'; S", &["SELECT a FROM b WHERE c = 'it''s;'", "S"]),
            ("SELECT a FROM b WHERE c = '\\';'; S", &["SELECT a FROM b WHERE c = '\\';'", "S"]),
            ("SELECT \"a;b\" FROM \"c\\\";d\"; S", &["SELECT \"a;b\" FROM \"c\\\";d\"", "S"]),
            ("SELECT a FROM /a;b/; S", &["SELECT a FROM /a;b/", "S"]),
            ("SELECT a FROM /a\\/;b/; S", &["SELECT a FROM /a\\/;b/", "S"]),
            ("SELECT a FROM x, /a;b/; S", &["SELECT a FROM x, /a;b/", "S"]),
            ("SELECT a FROM x WHERE h =~ /a;b/; S", &["SELECT a FROM x WHERE h =~ /a;b/", "S"]),
            ("SELECT a FROM x WHERE h !~ /a;b/; S", &["SELECT a FROM x WHERE h !~ /a;b/", "S"]),
            ("SHOW MEASUREMENTS WITH MEASUREMENT =~ /a;b/; S", &["SHOW MEASUREMENTS WITH MEASUREMENT =~ /a;b/", "S"]),
            // Division is no regex: the `;` after it splits.
            ("SELECT a / 2 FROM x; SELECT b / 3 FROM y", &["SELECT a / 2 FROM x", "SELECT b / 3 FROM y"]),
            ("SELECT count(a)/2 FROM x;S", &["SELECT count(a)/2 FROM x", "S"]),
            ("SELECT a FROM x -- c;d\n; S", &["SELECT a FROM x -- c;d", "S"]),
            ("SELECT a /* ; */ FROM x; S", &["SELECT a /* ; */ FROM x", "S"]),
            ("SELECT 1; -- only a comment", &["SELECT 1"]),
            ("SELECT 1; /* only */ ; S", &["SELECT 1", "S"]),
            // Unterminated: the rest stays one statement for classify to reject.
            ("SELECT 'a; DROP DATABASE x", &["SELECT 'a; DROP DATABASE x"]),
            ("S; SELECT a FROM /x; y", &["S", "SELECT a FROM /x; y"]),
            ("S; /* x; y", &["S", "/* x; y"]),
        ];
        for (q, want) in cases {
            assert_eq!(split_statements(q), *want, "split {q:?}");
        }
    }

    fn err(q: &str) -> ParseError {
        match classify(q) {
            Ok(st) => panic!("{q:?} classified as {st:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn errors() {
        let e = err("SELECT a FROM b WHERE c = 'x");
        assert_eq!(e.to_string(), "unterminated string literal at 26");
        let cases: &[(&str, &str)] = &[
            ("SELECT \"val FROM cpu", "unterminated quoted identifier"),
            ("SELECT value FROM /cpu", "unterminated regex literal"),
            ("SELECT value /* FROM cpu", "unterminated block comment"),
            ("SELECT 'a\\'", "unterminated string literal"),
            ("", "empty statement"),
            ("   \n\t", "empty statement"),
            ("-- only a comment", "empty statement"),
            (";", "empty statement"),
            ("SELECT value FROM", "expected a measurement"),
            ("SELECT value FROM WHERE time > 0", "expected a measurement"),
            ("SELECT value FROM cpu,", "expected a measurement"),
            ("SELECT value FROM db.", "expected a measurement"),
            ("SELECT value FROM a.b.c.d", "too many parts"),
            ("DELETE FROM WHERE time < 0", "expected a measurement"),
            ("SHOW TAG KEYS FROM", "expected a measurement"),
            ("SELECT (value FROM cpu", "unbalanced parentheses"),
            ("SELECT value) FROM cpu", "unbalanced parentheses"),
            ("SELECT a FROM (SHOW DATABASES)", "expected SELECT"),
            ("SELECT a FROM ()", "expected SELECT"),
            ("SELECT value FROM cpu LIMIT x", "expected an integer after LIMIT"),
            ("SELECT value FROM cpu OFFSET", "expected an integer after OFFSET"),
            ("SELECT value FROM cpu LIMIT 1.5", "expected an integer after LIMIT"),
            ("SELECT value FROM cpu LIMIT 99999999999999999999999", "out of range"),
            ("SELECT 1; SELECT 2", "unexpected ';'"),
            ("SHOW", "expected what to SHOW"),
            ("CREATE", "expected what to CREATE"),
            ("DROP", "expected what to DROP"),
            ("DROP MEASUREMENT", "expected a measurement"),
            ("(SELECT 1)", "expected a statement keyword"),
            ("\"SELECT\" 1", "expected a statement keyword"),
            ("EXPLAIN SHOW DATABASES", "expected SELECT after EXPLAIN"),
            ("SHOW DATABASES ON", "expected a database name"),
            ("SHOW MEASUREMENTS WITH MEASUREMENT cpu", "expected = or =~"),
            ("CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT a INTO b FROM c", "missing END"),
            ("CREATE CONTINUOUS QUERY cq ON db BEGIN SHOW DATABASES END", "expected SELECT"),
        ];
        for (q, want) in cases {
            let e = err(q);
            assert!(e.message.contains(want), "{q:?}: got {e}, want {want:?}");
            assert!(e.position <= q.len(), "{q:?}: position {}", e.position);
        }
    }

    fn nested(depth: usize) -> String {
        let mut q = String::from("SELECT a FROM ");
        for _ in 0..depth {
            q.push_str("(SELECT a FROM ");
        }
        q.push_str("cpu WHERE time > 0");
        q.push_str(&")".repeat(depth));
        q
    }

    #[test]
    fn nesting_is_capped() {
        let ok = classify(&nested(MAX_SUBQUERY_DEPTH)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.sources, vec![m("cpu")]);
        assert!(ok.has_subquery && ok.has_time_condition);
        assert!(err(&nested(MAX_SUBQUERY_DEPTH + 1)).message.contains("nested"));
        // Far deeper input fails cleanly instead of exhausting the stack.
        assert!(err(&nested(100_000)).message.contains("nested"));
        let parens = format!("SELECT {}a{} FROM cpu", "(".repeat(200_000), ")".repeat(200_000));
        assert_eq!(classify(&parens).map(|s| s.sources), Ok(vec![m("cpu")]));
        assert!(err(&"(".repeat(200_000)).message.contains("unbalanced"));
        assert!(err(&format!("SELECT {}", "(".repeat(200_000))).message.contains("unbalanced"));
    }

    #[test]
    fn large_inputs_stay_linear() {
        let many = format!("SELECT a FROM {}m WHERE time > 0", "m, ".repeat(50_000));
        let st = classify(&many).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st.sources.len(), 50_001);
        let q = "SELECT a FROM b WHERE time > 0;".repeat(20_000);
        assert_eq!(split_statements(&q).len(), 20_000);
        let quotes = "'".repeat(100_001);
        assert!(classify(&quotes).is_err());
        assert_eq!(split_statements(&quotes).len(), 1);
        let slashes = format!("SELECT a FROM {}", "/".repeat(100_001));
        let _ = classify(&slashes);
    }

    #[test]
    fn strips_outer_limit_and_offset() {
        let cases: &[(&str, &str)] = &[
            (
                "SELECT value FROM cpu WHERE time > now() - 1h LIMIT 10 OFFSET 5",
                "SELECT value FROM cpu WHERE time > now() - 1h",
            ),
            (
                "SELECT a FROM (SELECT a FROM cpu LIMIT 5) LIMIT 2 OFFSET 1 SLIMIT 3",
                "SELECT a FROM (SELECT a FROM cpu LIMIT 5) SLIMIT 3",
            ),
            ("SELECT a FROM cpu OFFSET 4 tz('UTC')", "SELECT a FROM cpu tz('UTC')"),
            ("SHOW MEASUREMENTS LIMIT 100", "SHOW MEASUREMENTS"),
            ("SHOW TAG VALUES FROM cpu WITH KEY = host LIMIT 3 OFFSET 2", "SHOW TAG VALUES FROM cpu WITH KEY = host"),
            ("  SELECT a FROM cpu  ", "SELECT a FROM cpu"),
            ("SELECT a FROM cpu LIMIT 10 -- note\ntz('UTC')", "SELECT a FROM cpu -- note\ntz('UTC')"),
            ("SELECT a FROM cpu -- x\nLIMIT 1", "SELECT a FROM cpu -- x"),
            ("SELECT a FROM cpu -- x\nLIMIT 1\nOFFSET 2 tz('UTC')", "SELECT a FROM cpu -- x\ntz('UTC')"),
            ("SELECT a FROM \"m\u{e9}t\u{e9}o\"\tLIMIT\t7\tOFFSET /* c */ 8", "SELECT a FROM \"m\u{e9}t\u{e9}o\""),
        ];
        for (q, want) in cases {
            let st = classify(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
            let stripped = st.text_without_limit_offset(q);
            assert_eq!(stripped, *want, "stripping {q:?}");
            let again = classify(&stripped).unwrap_or_else(|e| panic!("{stripped:?}: {e}"));
            assert_eq!((again.limit, again.offset), (None, None), "{stripped:?}");
            assert_eq!(again.sources, st.sources);
        }
        // Spans from another text never cut it apart.
        let st = classify("SELECT a FROM cpu LIMIT 10").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(st.text_without_limit_offset(" short "), "short");
        assert_eq!(st.limit_offset_spans, vec![18..26]);
    }

    /// Mutations of `q`: every prefix, every single-byte deletion and every insertion of a
    /// troublesome character, as long as the result is valid UTF-8.
    fn mutations(q: &str) -> Vec<String> {
        let bytes = q.as_bytes();
        let mut out = Vec::new();
        for i in 0..=bytes.len() {
            if let Some(prefix) = q.get(..i) {
                out.push(prefix.to_string());
            }
            if i < bytes.len() {
                let mut v = bytes.to_vec();
                v.remove(i);
                if let Ok(s) = String::from_utf8(v) {
                    out.push(s);
                }
            }
            if q.is_char_boundary(i) {
                for c in ["'", "\"", "/", "\\", "(", ")", ";", "*", "-", "\u{e9}"] {
                    let (a, b) = q.split_at(i);
                    out.push(format!("{a}{c}{b}"));
                }
            }
        }
        out
    }

    fn exercise(q: &str) {
        let parts = split_statements(q);
        for p in &parts {
            assert!(!p.is_empty());
            let offset = p.as_ptr() as usize - q.as_ptr() as usize;
            assert!(offset + p.len() <= q.len(), "slice of {q:?} out of bounds");
        }
        if let Ok(st) = classify(q) {
            for span in &st.limit_offset_spans {
                assert!(q.get(span.clone()).is_some(), "bad span {span:?} in {q:?}");
            }
            let _ = st.text_without_limit_offset(q);
        } else if let Err(e) = classify(q) {
            assert!(e.position <= q.len() && q.is_char_boundary(e.position), "{q:?}: {e}");
        }
    }

    #[test]
    fn never_panics_on_mutations() {
        let mut samples: Vec<String> = table().iter().map(|r| r.q.to_string()).collect();
        samples.extend(
            [
                "SELECT a FROM x WHERE c = 'it''s' AND d =~ /a\\/b/ -- c\n/* d */ LIMIT 1",
                "SELECT a FROM \"c\\\"pu\" WHERE $x > 1 AND \"µ\" = 5µs",
            ]
            .map(str::to_string),
        );
        let mut runs = 0usize;
        for q in &samples {
            for m in mutations(q) {
                exercise(&m);
                runs += 1;
            }
        }
        assert!(runs > 50_000, "only {runs} mutations");
    }

    #[test]
    fn never_panics_on_random_token_soup() {
        const PIECES: &[&str] = &[
            "SELECT ",
            "FROM ",
            "WHERE ",
            "INTO ",
            "LIMIT ",
            "OFFSET ",
            "SHOW ",
            "TAG ",
            "KEYS ",
            "WITH ",
            "MEASUREMENT ",
            "ON ",
            "CREATE ",
            "DROP ",
            "EXPLAIN ",
            "ANALYZE ",
            "BEGIN ",
            "END ",
            "time",
            " ",
            "\n",
            "*",
            "(",
            ")",
            ",",
            ".",
            "..",
            ";",
            "'",
            "''",
            "\"",
            "\\",
            "/",
            "//",
            "=~",
            "!~",
            "=",
            "<>",
            "<",
            ">=",
            "--",
            "/*",
            "*/",
            "::",
            ":",
            "$",
            "$x",
            "1",
            "10s",
            ".5",
            "cpu",
            "\"q\"",
            "/re/",
            "é",
            "µs",
            "\u{0}",
            "\u{a0}",
            "\u{1f600}",
        ];
        // A fixed linear congruential generator: reproducible without external crates.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize
        };
        for _ in 0..30_000 {
            let len = next() % 24;
            let q: String = (0..len).map(|_| PIECES[next() % PIECES.len()]).collect();
            exercise(&q);
        }
    }

    #[test]
    fn display_of_parse_error() {
        let e = ParseError { message: "unterminated string literal".to_string(), position: 17 };
        assert_eq!(e.to_string(), "unterminated string literal at 17");
    }

    /// Regression (found by fuzzing): clauses after LIMIT/OFFSET were read as part of nothing, so
    /// stripping LIMIT/OFFSET for a merge changed the statement's meaning.
    #[test]
    fn clauses_after_limit_are_errors() {
        for q in [
            "SELECT a LIMIT 1 FROM cpu",
            "SELECT OFFSET 1 FROM cpu",
            "SELECT LIMIT 1 *",
            "SHOW TAG KEYS WHERE a = 'b' LIMIT 1 ON secret",
            "SHOW MEASUREMENTS LIMIT 1 WHERE time > 0",
        ] {
            let e = classify(q).expect_err(q);
            assert!(e.message.contains("after LIMIT/OFFSET"), "{q}: {e}");
        }
        for q in [
            "SELECT v FROM cpu WHERE time > 0 LIMIT 10 OFFSET 2 SLIMIT 1 SOFFSET 1 tz('Europe/Paris')",
            "SHOW MEASUREMENTS LIMIT 100 OFFSET 5",
        ] {
            assert!(classify(q).is_ok(), "{q}");
        }
    }
}
