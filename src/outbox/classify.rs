//! What a backend's answer to a write means for the record that was sent: the decision table of the
//! outbox (see the module doc of `outbox`). Pure functions of (status, body), so the table is tested
//! without a backend.

/// What a backend's answer means for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    Retry(String),
    Park(String),
    DropBadData(String),
    DropRejected(String),
}

/// How many lines of a batch a 400 answer says were not stored: InfluxDB lists each unparsable line
/// (`unable to parse`) and counts the points it dropped (`dropped=N`). `None` when the answer says
/// neither (then the whole batch counts as lost).
pub fn refused_lines(body: &[u8]) -> Option<u64> {
    let unparsable = memchr::memmem::find_iter(body, b"unable to parse").count() as u64;
    let dropped = memchr::memmem::rfind(body, b"dropped=").and_then(|i| {
        let digits: Vec<u8> = body[i + 8..].iter().copied().take_while(u8::is_ascii_digit).collect();
        std::str::from_utf8(&digits).ok()?.parse::<u64>().ok()
    });
    match (unparsable, dropped) {
        (0, None) => None,
        (n, d) => Some(n + d.unwrap_or(0)),
    }
}

/// The decision table of the module doc.
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let msg = || {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let text = text.strip_prefix("{\"error\":\"").and_then(|t| t.strip_suffix("\"}")).unwrap_or(text);
        format!("HTTP {status}: {}", text.chars().take(300).collect::<String>())
    };
    let says = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    match status {
        200..=299 => Outcome::Ack,
        404 if says(b"database not found") => Outcome::Park(msg()),
        500 if says(b"retention policy not found") => Outcome::Park(msg()),
        400 => Outcome::DropBadData(msg()),
        401 | 403 | 408 | 429 | 500..=599 => Outcome::Retry(msg()),
        _ => Outcome::DropRejected(msg()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204, b""), Outcome::Ack);
        assert!(matches!(classify(404, b"{\"error\":\"database not found: \\\"x\\\"\"}"), Outcome::Park(_)));
        assert!(matches!(classify(500, b"{\"error\":\"retention policy not found: r\"}"), Outcome::Park(_)));
        assert!(matches!(classify(500, b"{\"error\":\"timeout\"}"), Outcome::Retry(_)));
        assert!(matches!(classify(503, b""), Outcome::Retry(_)));
        assert!(matches!(classify(401, b""), Outcome::Retry(_)));
        assert!(matches!(classify(400, b"{\"error\":\"partial write\"}"), Outcome::DropBadData(_)));
        assert!(matches!(classify(413, b""), Outcome::DropRejected(_)));
        assert!(matches!(classify(404, b"404 page not found"), Outcome::DropRejected(_)));
        match classify(400, b"{\"error\":\"unable to parse 'x': missing fields\"}") {
            Outcome::DropBadData(m) => {
                assert_eq!(m, "HTTP 400: unable to parse 'x': missing fields")
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn refused_lines_are_read_from_the_answer() {
        let partial = b"{\"error\":\"partial write: unable to parse 'a': missing fields\\nunable to parse 'b': bad timestamp dropped=0\"}";
        assert_eq!(refused_lines(partial), Some(2));
        let conflict = b"{\"error\":\"partial write: field type conflict: input field \\\"v\\\" dropped=3\"}";
        assert_eq!(refused_lines(conflict), Some(3));
        assert_eq!(refused_lines(b"{\"error\":\"something else\"}"), None);
    }
}
