//! The InfluxQL lexer: significant tokens of a statement with their byte offsets (comments and
//! whitespace skipped), and the parenthesis pairing every later step relies on.
//!
//! Invariants: the input is untrusted, so every byte is handled without panicking, in one pass; token
//! bounds always fall on char boundaries of the given text (non-ASCII bytes are word characters, so a
//! token never cuts inside a character); lexing stops at the first error.

use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tok {
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
pub(super) enum Op {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) start: usize,
    pub(super) end: usize,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

pub(super) fn is_space_char(c: char) -> bool {
    c.is_ascii() && is_space(c as u8)
}

/// Trims exactly the whitespace the lexer skips: Unicode spaces lex as part of a word, so trimming
/// them could change a name.
pub(super) fn trim_space(s: &str) -> &str {
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
pub(super) struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    /// Whether a `/` here starts a regex literal rather than being division. InfluxQL's scanner is
    /// told by its parser; this lexer decides from the previous token instead.
    regex_ok: bool,
    done: bool,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str) -> Self {
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
pub(super) fn match_parens(toks: &[Token]) -> Result<Vec<usize>, ParseError> {
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

/// Undoes the backslash escapes of a quoted identifier (`\"`, `\\`, `\'`, `\n`); any other
/// backslash is kept as written.
pub(super) fn unescape_ident(inner: &str) -> String {
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
pub(super) fn unescape_regex(inner: &str) -> String {
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
