//! Answer bytes waiting for a client: the sink every handler appends to. The connection writes them
//! out as the socket allows and trims what was written, so a slow client holds at most about
//! `MAX_CLIENT_OUTPUT_BYTES` (producers check `room` first).

use std::io::Write;

use crate::defaults::{MAX_CLIENT_OUTPUT_BYTES, OUTPUT_KEEP_BYTES};
use crate::net::{SocketResult, write_from};

/// Answer bytes waiting for the client. Handlers only append; the connection writes and trims.
#[derive(Debug, Default)]
pub struct Output {
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    pos: usize,
}

impl Output {
    /// Bytes not yet written to the client.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How much more may be appended before the connection stops reading (backpressure).
    pub fn room(&self) -> usize {
        MAX_CLIENT_OUTPUT_BYTES.saturating_sub(self.pending())
    }

    /// The bytes not yet written.
    pub fn unsent(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// The buffer to append an answer to (append only: what is in it is owed to the client).
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes what is pending; false when the peer is gone. `wrote` reports whether bytes moved.
    pub fn flush(&mut self, stream: &mut impl Write, wrote: &mut bool) -> bool {
        let before = self.pos;
        let r = write_from(stream, &self.buf, &mut self.pos);
        *wrote = self.pos > before;
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > OUTPUT_KEEP_BYTES {
                self.buf = Vec::new();
            }
        } else if self.pos >= OUTPUT_KEEP_BYTES {
            // A client slower than a relayed answer never empties the buffer: drop what it has taken,
            // or the buffer would grow by the whole answer.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        !matches!(r, SocketResult::Closed | SocketResult::Error(_))
    }
}
