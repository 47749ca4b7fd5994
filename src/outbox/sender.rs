//! The sender of an outbox: picks the next sealed record (adopted logs first, parked targets in turn),
//! POSTs it gzipped on the outbox's own keep-alive connection, reads the answer within the backend's
//! timeout and acts on it as `classify` says.
//!
//! Invariants: at most one record is in flight per outbox; a record is acknowledged in its log only
//! after a 2xx (or a decision to drop it, which is counted); any failure keeps the record at the front
//! of its log and schedules a retry with a backoff that doubles up to the backend's `rewriteinterval`.

use std::time::Instant;

use mio::Registry;

use super::classify::{Outcome, classify, refused_lines};
use super::log::{Front, Log};
use super::{Cx, Outbox, Source};
use crate::defaults::{FIRST_RETRY_BACKOFF, MAX_UPSTREAM_ERROR_BODY, READ_CHUNK};
use crate::http::client::UpstreamRequest;
use crate::upstream::BackendState;
use crate::upstream::conn::{Conn, Exchange, LentBody};

/// Records moved to parked logs per `pump`.
const MAX_MOVES_PER_PUMP: usize = 16;

pub(super) struct InFlight {
    source: Source,
    front: Front,
    lines: u64,
    bytes: u64,
    pub(super) deadline: Instant,
    ex: Exchange,
    answer: Vec<u8>,
    /// The connection had served earlier requests (see `Conn::exchanges`).
    reused: bool,
    /// The body is the record's payload, sent from the log rather than copied (uncompressed sends).
    lent: bool,
}

impl Outbox {
    /// Starts the next send if nothing is in flight and the backend may be sent to.
    pub fn pump(&mut self, cx: &mut Cx) {
        if self.inflight.is_some() {
            return;
        }
        let main_ready = self.retry_at.is_none_or(|t| cx.now >= t) && self.reachable();
        let Some((source, front)) = self.next_record(cx.now, main_ready) else {
            self.logs.retain_mut(|l| !l.remove_if_drained());
            return;
        };
        self.start_send(cx, source, front);
    }

    /// Picks the record to send next. Records of parked targets met on the way are moved to their
    /// parked log.
    fn next_record(&mut self, now: Instant, main_ready: bool) -> Option<(Source, Front)> {
        self.parked_turn = !self.parked_turn;
        let parked_due = self.reachable().then(|| self.parked.iter().position(|p| now >= p.retry_at)).flatten();
        if let Some(i) = parked_due
            && (self.parked_turn || !main_ready)
        {
            match self.parked[i].log.front() {
                Some(f) => return Some((Source::Parked(i), f)),
                None => {
                    let p = self.parked.swap_remove(i);
                    self.unpark(p);
                    self.publish_parked();
                }
            }
        }
        if !main_ready {
            return None;
        }
        // Moving records copies them: a few per call keeps a long parked backlog from stalling the
        // worker; the next tick moves on.
        let mut moves = 0;
        for i in 0..self.logs.len() {
            while let Some(f) = self.logs[i].front() {
                let target = self.logs[i].record(&f).0;
                let Some(p) = self.parked.iter().position(|p| p.target == target) else {
                    return Some((Source::Main(i), f));
                };
                if moves == MAX_MOVES_PER_PUMP {
                    return None;
                }
                moves += 1;
                if let Err(e) = self.move_to_parked(Source::Main(i), f, p) {
                    self.backoff_after(now, format!("cannot park a batch: {e}"));
                    return None;
                }
            }
        }
        None
    }

    pub(super) fn log_of(&mut self, source: Source) -> Option<&mut Log> {
        match source {
            Source::Main(i) => self.logs.get_mut(i),
            Source::Parked(i) => self.parked.get_mut(i).map(|p| &mut p.log),
        }
    }

    fn start_send(&mut self, cx: &mut Cx, source: Source, front: Front) {
        let backend = self.backend.clone();
        if self.conn.is_none() {
            match Conn::connect(&backend, self.token, cx.registry) {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    self.backoff_after(cx.now, format!("connect to {}: {e}", backend.url));
                    return;
                }
            }
        }
        let level = backend.gzip;
        let refused = front.is_gzip() && self.refused_gzip == Some((source, front));
        // Split borrows: the record is read from the log while the request is written into the conn.
        let Outbox { logs, parked, conn, .. } = self;
        let log = match source {
            Source::Main(i) => &logs[i],
            Source::Parked(i) => &parked[i].log,
        };
        let Some(conn) = conn.as_mut() else { return };
        let (target, payload) = log.record(&front);
        let lines = log.record_lines(&front);
        // The body: the record's payload as stored (it stays in the log until acknowledged, so it is
        // lent), or bytes made here (in a buffer the next compression reuses, so they are copied). A
        // gzip record goes as it is stored, whatever the level now, unless the backend refused that
        // as a whole. A failed compression cannot happen with libdeflate's bound-sized buffer; plain
        // bytes are still right if it did.
        let made = if front.is_gzip() {
            if refused { cx.deflate.recompress(level, payload) } else { None }
        } else {
            match log.record_gzip(&front, level) {
                Some(gz) => Some((gz, true)),
                None if level > 0 => cx.deflate.gzip(level, payload).map(|gz| (gz, true)),
                None => None,
            }
        };
        let (body, gzipped, lent) = match made {
            Some((bytes, gzipped)) => (bytes, gzipped, false),
            None => (payload, front.is_gzip(), true),
        };
        conn.begin_request(cx.registry);
        let auth = backend.auth.as_ref().map(|a| crate::http::basic_auth(&a.username, &a.password));
        let mut headers = [("Content-Type", "text/plain; charset=utf-8"), ("", ""), ("", "")];
        let mut n = 1;
        if gzipped {
            headers[n] = ("Content-Encoding", "gzip");
            n += 1;
        }
        if let Some(auth) = &auth {
            headers[n] = ("Authorization", auth);
            n += 1;
        }
        let request = UpstreamRequest {
            query: target,
            headers: &headers[..n],
            ..UpstreamRequest::post("/write", &backend.host, body)
        };
        if lent {
            request.write_head_to(&mut conn.out);
            conn.lend_body(body.len());
        } else {
            request.write_to(&mut conn.out);
        }
        let reused = conn.exchanges > 0;
        self.inflight = Some(InFlight {
            source,
            front,
            lines,
            bytes: front.payload_len() as u64,
            deadline: cx.now + backend.timeout,
            ex: Exchange::default(),
            answer: Vec::new(),
            reused,
            lent,
        });
        self.on_event(cx);
    }

    /// Readiness on the connection (or a nudge after starting a send).
    pub fn on_event(&mut self, cx: &mut Cx) {
        let Outbox { conn, inflight, logs, parked, .. } = self;
        let Some(conn) = conn.as_mut() else {
            return;
        };
        let Some(f) = inflight.as_mut() else {
            // Idle keep-alive connection: anything readable is the backend closing it (or junk).
            if !matches!(conn.fill(READ_CHUNK), Ok(fill) if !fill.closed && fill.read == 0) {
                self.drop_conn(cx.registry);
            }
            return;
        };
        let log = match f.source {
            Source::Main(i) => logs.get(i),
            Source::Parked(i) => parked.get(i).map(|p| &p.log),
        };
        // The lent body; should the record be gone, the length check in `Conn::flush` fails the send.
        let lent = match log {
            Some(log) if f.lent => log.lent_payload(&f.front),
            _ => LentBody::default(),
        };
        // An answer to a write is small; a backend streaming more than a few MB is not answering a
        // write, and the send timeout will deal with it. The bound keeps this event handler short.
        let mut step = conn.drive(&mut f.ex, &mut f.answer, READ_CHUNK, cx.registry, lent);
        for _ in 0..64 {
            match step {
                Ok(d) if !d.done && !d.blocked => {
                    f.answer.truncate(MAX_UPSTREAM_ERROR_BODY);
                    step = conn.drive(&mut f.ex, &mut f.answer, READ_CHUNK, cx.registry, lent);
                }
                _ => break,
            }
        }
        f.answer.truncate(MAX_UPSTREAM_ERROR_BODY);
        match step {
            // Still reading after all those rounds: this is no answer to a write. Failing now is
            // better than leaving bytes in the socket with no event to come for them.
            Ok(d) if !d.done && !d.blocked => self.fail(cx, "endless answer to a write".into()),
            Ok(d) if !d.done => {}
            Ok(_) => {
                let Some(f) = self.inflight.take() else {
                    return;
                };
                if !f.ex.reusable {
                    self.drop_conn(cx.registry);
                }
                let status = f.ex.status();
                self.handle_answer(cx, f, status);
            }
            Err(e) => self.fail(cx, e.to_string()),
        }
    }

    fn handle_answer(&mut self, cx: &mut Cx, f: InFlight, status: u16) {
        let outcome = classify(status, &f.answer);
        let name = self.backend.name.clone();
        // A 400 naming no line to a gzip record: the backend could not read the gzip (its reader is
        // stricter than the proxy's in a few corners of the format); or a 413: it found the body too
        // large. The proxy took those lines: send them again, decompressed and compressed its way.
        let refused_whole = match &outcome {
            Outcome::DropBadData(msg) if refused_lines(&f.answer).is_none() => Some(msg),
            Outcome::DropRejected(msg) if status == 413 => Some(msg),
            _ => None,
        };
        if let Some(msg) = refused_whole
            && f.front.is_gzip()
            && self.refused_gzip != Some((f.source, f.front))
        {
            ::log::warn!(
                "backend {name} could not read a batch of {} lines stored gzip ({msg}); sending it decompressed \
                 and compressed again by the proxy",
                f.lines
            );
            self.refused_gzip = Some((f.source, f.front));
            self.start_send(cx, f.source, f.front);
            return;
        }
        if !matches!(outcome, Outcome::Retry(_)) {
            self.refused_gzip = None;
        }
        let c = &self.backend.state.counters;
        match outcome {
            Outcome::Ack => {
                if self.retired {
                    self.backend.state.set_up(true, None);
                }
                BackendState::add(&c.lines_sent, f.lines);
                BackendState::add(&c.bytes_sent, f.bytes);
                BackendState::add(&c.batches_sent, 1);
                self.ack(f.source, &f.front);
                if let Source::Parked(i) = f.source
                    && let Some(p) = self.parked.get_mut(i)
                {
                    p.retry_at = cx.now;
                }
                if let Some(what) = self.failing.take() {
                    ::log::info!("backend {name}: writes succeed again (after: {what})");
                    self.backend.state.set_error("");
                }
                self.backoff = FIRST_RETRY_BACKOFF;
                self.retry_at = None;
            }
            Outcome::Retry(msg) => {
                BackendState::add(&c.retries, 1);
                if let Source::Parked(i) = f.source
                    && let Some(p) = self.parked.get_mut(i)
                {
                    // A parked target retries on its own clock, or it would be picked again at once.
                    p.retry_at = cx.now + self.backoff;
                }
                self.backoff_after(cx.now, msg);
            }
            Outcome::Park(msg) => {
                let target = String::from_utf8_lossy(self.log_of(f.source).map_or(&[][..], |l| l.record(&f.front).0))
                    .into_owned();
                match f.source {
                    Source::Parked(i) => {
                        if let Some(p) = self.parked.get_mut(i) {
                            p.retry_at = cx.now + self.backend.rewrite_interval;
                        }
                    }
                    Source::Main(_) => {
                        ::log::warn!(
                            "backend {name}: {msg}; parking writes to {target} until the backend accepts them \
                             (other databases keep flowing)"
                        );
                        if let Err(e) = self.park(f.source, f.front) {
                            self.backoff_after(cx.now, format!("cannot park a batch: {e}"));
                        }
                    }
                }
            }
            Outcome::DropBadData(msg) => {
                // InfluxDB stored the batch's good lines; only the ones it names are lost.
                let refused = refused_lines(&f.answer).unwrap_or(f.lines).min(f.lines);
                BackendState::add(&c.dropped_bad_data, refused);
                ::log::warn!(
                    "backend {name}: refused {refused} of a batch of {} lines as bad data (it kept the others; \
                     the batch is not retried): {msg}",
                    f.lines
                );
                self.backend.state.set_error(&msg);
                self.ack(f.source, &f.front);
            }
            Outcome::DropRejected(msg) => {
                BackendState::add(&c.dropped_rejected, f.lines);
                ::log::error!("backend {name}: dropped a batch of {} lines it rejected: {msg}", f.lines);
                self.backend.state.set_error(&msg);
                self.ack(f.source, &f.front);
            }
        }
        self.pump(cx);
    }

    fn ack(&mut self, source: Source, front: &Front) {
        let Outbox { logs, parked, lag, backend, .. } = self;
        match source {
            Source::Main(i) => {
                if let Some(log) = logs.get_mut(i) {
                    lag.done(&backend.state.lag, log.record(front).0, log.is_recovered(front));
                    log.ack(front);
                }
            }
            Source::Parked(i) => {
                if let Some(p) = parked.get_mut(i) {
                    p.log.ack(front);
                }
            }
        }
    }

    /// Network-level failure of the send in flight.
    pub(super) fn fail(&mut self, cx: &mut Cx, why: String) {
        self.drop_conn(cx.registry);
        let Some(f) = self.inflight.take() else {
            return;
        };
        if f.reused && f.ex.head.is_none() {
            // Probably a keep-alive connection the backend closed while idle: retry once, fresh.
            self.start_send(cx, f.source, f.front);
            if let Some(nf) = &mut self.inflight {
                nf.reused = false;
            }
            return;
        }
        BackendState::add(&self.backend.state.counters.retries, 1);
        if let Source::Parked(i) = f.source {
            if let Some(p) = self.parked.get_mut(i) {
                p.retry_at = cx.now + self.backend.rewrite_interval;
            }
            return;
        }
        self.backoff_after(cx.now, format!("{}: {why}", self.backend.url));
    }

    fn backoff_after(&mut self, now: Instant, why: String) {
        if self.failing.as_deref() != Some(&why) {
            ::log::warn!(
                "backend {}: write failed, data kept and retried (next in {} ms, at most every {} ms): {why}",
                self.backend.name,
                self.backoff.as_millis(),
                self.backend.rewrite_interval.as_millis()
            );
            self.failing = Some(why.clone());
        }
        self.backend.state.set_error(&why);
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.backend.rewrite_interval);
    }

    /// Forgets the send in flight and its connection (after a bug was caught): the record stays in the
    /// log and is sent again.
    pub fn reset_sender(&mut self, registry: &Registry) {
        self.inflight = None;
        self.drop_conn(registry);
    }

    fn drop_conn(&mut self, registry: &Registry) {
        if let Some(mut c) = self.conn.take() {
            c.deregister(registry);
        }
    }
}
