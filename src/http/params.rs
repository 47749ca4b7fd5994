//! URL query strings and form bodies (`a=1&b=x%20y`): decoding what clients send and encoding what the
//! proxy sends to backends.

/// Decoded `name=value` pairs, in order. Bytes that do not decode to UTF-8 are replaced (U+FFFD), as Go's
/// `url.ParseQuery` would make them unusable anyway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(s: &str) -> Params {
        let mut p = Params::default();
        p.extend_from(s.as_bytes());
        p
    }

    /// Adds the pairs of another query string or form body (the URL's pairs come first).
    pub fn extend_from(&mut self, s: &[u8]) {
        for pair in s.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            self.0.push((decode(name), decode(value)));
        }
    }

    /// The first value of `name` (Go's `Query().Get`), `None` when absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, with "absent" and "empty" both `None`.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decoding with `+` as space (form encoding, which query strings also use).
pub fn decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => match (s.get(i + 1).copied().and_then(hex), s.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends `s` percent-encoded for use as a query-string value.
pub fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
}

pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    encode_into(&mut out, s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let p = Params::parse("db=my%20db&q=SELECT+1&empty=&flag&db=second&bad=%zz%4");
        assert_eq!(p.get("db"), Some("my db"));
        assert_eq!(p.get("q"), Some("SELECT 1"));
        assert_eq!(p.get("empty"), Some(""));
        assert_eq!(p.non_empty("empty"), None);
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.get("bad"), Some("%zz%4"));
        assert_eq!(p.get("missing"), None);
    }

    #[test]
    fn form_body_adds_pairs() {
        let mut p = Params::parse("db=a");
        p.extend_from(b"q=SHOW+DATABASES&db=b");
        assert_eq!(p.get("q"), Some("SHOW DATABASES"));
        assert_eq!(p.get("db"), Some("a"));
    }

    #[test]
    fn encoding_round_trips() {
        for s in ["plain", "a b&c=d", "ünï/cødé?", "\"quoted\";"] {
            assert_eq!(decode(encode(s).as_bytes()), s);
        }
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(decode(b"%ff"), "\u{fffd}");
    }
}
