//! Checks for the `http_head` fuzz target: request heads (`parse_head`), chunked request bodies
//! (`ChunkedDecoder`), response heads (`parse_response_head`) and response bodies (`BodyReader`).
//!
//! Input layout: the whole input is offered to both head parsers as it is (seeds are plain HTTP
//! requests and responses). Independently, the body decoders get `input[first byte..]` (the
//! "arbitrary split"), fed in pseudo-random pieces derived from the first and last bytes, the way a
//! connection receives them: bytes a call did not consume are offered again with the next piece.
//! Every piecewise run must agree with one call over the same bytes.
//!
//! Shared by `fuzz/fuzz_targets/http_head.rs` and `tests/fuzz_regressions.rs`: public API only.

use influx_proxy::defaults::{MAX_HEAD_BYTES, MAX_UPSTREAM_HEAD_BYTES};
use influx_proxy::http::client::{BodyReader, ClientError, ResponseHead, parse_response_head};
use influx_proxy::http::request::{ChunkError, ChunkedDecoder, HeadError, parse_head};

pub fn run(data: &[u8]) {
    let (Some(&first), Some(&last)) = (data.first(), data.last()) else {
        assert_eq!(parse_head(data), Ok(None));
        assert_eq!(parse_response_head(data), Ok(None));
        return;
    };
    let mut rng = Rng::new(first, last, data.len());
    let limit = match last % 4 {
        0 => usize::MAX,
        1 => 1 << 20,
        2 => usize::from(last / 4),
        _ => usize::from(first),
    };

    request_head(data, limit, &mut rng);
    let split = usize::from(first).min(data.len());
    chunked_body(&data[split..], limit, &mut rng);
    response(data, rng.next() & 1 == 1, &mut rng);
}

/// A small deterministic generator (splitmix64), so a replayed input takes the same path.
struct Rng(u64);

impl Rng {
    fn new(first: u8, last: u8, len: usize) -> Self {
        Rng((u64::from(first) << 40) ^ (u64::from(last) << 32) ^ len as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// The size of the next piece a socket read returns: mostly small, sometimes everything left.
    fn piece(&mut self, left: usize) -> usize {
        match self.next() % 8 {
            0 => left,
            1..=4 => 1 + self.below(left.min(8)),
            _ => 1 + self.below(left.min(512)),
        }
    }
}

fn request_head(data: &[u8], limit: usize, rng: &mut Rng) {
    match parse_head(data) {
        Ok(None) => assert!(data.len() <= MAX_HEAD_BYTES, "incomplete head of {} bytes not refused", data.len()),
        Ok(Some(head)) => {
            assert!(head.len > 0 && head.len <= data.len(), "head.len {} of {} bytes", head.len, data.len());
            assert!(head.len <= MAX_HEAD_BYTES);
            assert!(!(head.chunked && head.content_length.is_some()), "chunked and a length: {head:?}");
            assert_eq!(head.has_body(), head.chunked || head.content_length.is_some_and(|n| n > 0));
            // The head delimits itself: the same head alone parses the same, any shorter prefix of
            // it is "need more bytes" (a head split across reads parses like one read in one go).
            assert_eq!(parse_head(&data[..head.len]), Ok(Some(head.clone())), "head alone differs");
            let cut = rng.below(head.len);
            assert_eq!(parse_head(&data[..cut]), Ok(None), "prefix of {cut} bytes of a complete head");
            if head.chunked {
                chunked_body(&data[head.len..], limit, rng);
            }
        }
        Err(e) => {
            assert!(matches!(e.status(), 400 | 431 | 501), "{e:?}");
            assert!(!e.to_string().is_empty());
            if e == HeadError::TooLarge {
                assert!(data.len() > MAX_HEAD_BYTES || data.contains(&b'\n'), "431 for a short partial head");
            }
        }
    }
}

/// Outcome of decoding a whole body: the payload, the input consumed, done or not, or the error.
#[derive(Debug, PartialEq, Eq)]
enum Outcome<E> {
    Ok { out: Vec<u8>, consumed: usize, done: bool },
    Err(E),
}

fn chunked_body(body: &[u8], limit: usize, rng: &mut Rng) {
    // In one call.
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    let whole = match dec.decode(body, &mut out, limit) {
        Ok(n) => {
            assert!(n <= body.len(), "consumed {n} of {}", body.len());
            assert!(out.len() <= limit, "decoded {} bytes past the limit {limit}", out.len());
            if dec.is_done() {
                let before = out.len();
                assert_eq!(dec.decode(&body[n..], &mut out, limit), Ok(0), "consumed after the end");
                assert_eq!(out.len(), before);
            }
            Outcome::Ok { out, consumed: n, done: dec.is_done() }
        }
        Err(e) => {
            assert!(out.len() <= limit, "decoded {} bytes past the limit {limit} before {e:?}", out.len());
            assert!(!e.to_string().is_empty());
            Outcome::Err(e)
        }
    };

    // In pieces, keeping what was not consumed for the next call.
    let mut dec = ChunkedDecoder::new();
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let (mut pos, mut consumed) = (0, 0);
    let mut error: Option<ChunkError> = None;
    while pos < body.len() {
        let take = rng.piece(body.len() - pos);
        pending.extend_from_slice(&body[pos..pos + take]);
        pos += take;
        let was_done = dec.is_done();
        let before = out.len();
        match dec.decode(&pending, &mut out, limit) {
            Ok(n) => {
                assert!(n <= pending.len(), "consumed {n} of {} offered", pending.len());
                assert!(out.len() <= limit, "decoded {} bytes past the limit {limit}", out.len());
                if was_done {
                    assert_eq!((n, out.len()), (0, before), "decoded after is_done()");
                }
                pending.drain(..n);
                consumed += n;
            }
            Err(e) => {
                assert!(!was_done, "error after is_done()");
                assert!(out.len() <= limit);
                error = Some(e);
                break;
            }
        }
    }
    let pieces = match error {
        Some(e) => Outcome::Err(e),
        None => Outcome::Ok { out, consumed, done: dec.is_done() },
    };
    assert_eq!(whole, pieces, "one call and piecewise decoding disagree (limit {limit})");
}

fn response(data: &[u8], request_was_head: bool, rng: &mut Rng) {
    let head = match parse_response_head(data) {
        Ok(None) => {
            assert!(data.len() <= MAX_UPSTREAM_HEAD_BYTES, "incomplete head of {} bytes not refused", data.len());
            return;
        }
        Err(e) => {
            assert!(matches!(e, ClientError::BadHead(_)), "{e:?}");
            assert!(!e.to_string().is_empty());
            return;
        }
        Ok(Some(head)) => head,
    };
    assert!(head.len > 0 && head.len <= data.len(), "head.len {} of {} bytes", head.len, data.len());
    assert!(!(head.chunked && head.content_length.is_some()), "chunked and a length: {head:?}");
    for (name, _) in &head.headers {
        assert!(head.header(name).is_some(), "header {name:?} not found again");
        assert!(head.header(&name.to_ascii_uppercase()).is_some());
    }
    assert_eq!(parse_response_head(&data[..head.len]), Ok(Some(head.clone())), "head alone differs");
    let cut = rng.below(head.len);
    assert_eq!(parse_response_head(&data[..cut]), Ok(None), "prefix of {cut} bytes of a complete head");

    let body = &data[head.len..];
    let whole = read_body(&head, request_was_head, body, None);
    let pieces = read_body(&head, request_was_head, body, Some(rng));
    assert_eq!(whole, pieces, "one read and piecewise reads disagree");

    // What the framing rules say the body is.
    let no_body = request_was_head || head.status < 200 || head.status == 204 || head.status == 304;
    match &whole {
        Outcome::Ok { out, consumed, done } => {
            if no_body {
                assert_eq!((out.len(), *consumed, *done), (0, 0, true), "a body where none is allowed");
            } else if head.chunked {
                let mut dec = ChunkedDecoder::new();
                let mut want = Vec::new();
                let n = dec.decode(body, &mut want, usize::MAX).expect("BodyReader accepted it");
                assert_eq!((out, *consumed, *done), (&want, n, dec.is_done()));
            } else if let Some(n) = head.content_length {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                assert_eq!(out.as_slice(), &body[..n.min(body.len())], "Content-Length body");
                assert_eq!(*done, body.len() >= n);
            } else {
                assert_eq!(out.as_slice(), body, "read-until-close body");
            }
        }
        Outcome::Err(e) => {
            assert!(head.chunked && !no_body, "{e:?} without chunked framing");
            assert!(matches!(e, ClientError::BadBody(_)), "{e:?}");
        }
    }
}

/// Reads `body` through a `BodyReader` in one call (`rng` is `None`) or in pieces, then signals EOF.
fn read_body(head: &ResponseHead, was_head: bool, body: &[u8], rng: Option<&mut Rng>) -> Outcome<ClientError> {
    let mut reader = BodyReader::new(head, was_head);
    let mut out = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let (mut pos, mut consumed) = (0, 0);
    let mut rng = rng;
    while pos < body.len() {
        let take = match rng.as_deref_mut() {
            Some(r) => r.piece(body.len() - pos),
            None => body.len() - pos,
        };
        pending.extend_from_slice(&body[pos..pos + take]);
        pos += take;
        let was_done = reader.is_done();
        let before = out.len();
        match reader.read(&pending, &mut out) {
            Ok(n) => {
                assert!(n <= pending.len(), "consumed {n} of {} offered", pending.len());
                assert!(out.len() - before <= n, "more payload than input consumed");
                if was_done {
                    assert_eq!((n, out.len()), (0, before), "read after is_done()");
                }
                pending.drain(..n);
                consumed += n;
            }
            Err(e) => return Outcome::Err(e),
        }
    }
    let done = reader.is_done();
    // EOF: fine when the body is complete or runs to the close, truncation otherwise.
    let until_close = reader.until_close();
    match reader.eof() {
        Ok(()) => {
            assert!(done || until_close, "EOF accepted mid-body");
            assert!(reader.is_done());
        }
        Err(e) => {
            assert!(!done && !until_close, "EOF refused: {e:?}");
            assert_eq!(e, ClientError::Truncated);
        }
    }
    Outcome::Ok { out, consumed, done }
}
