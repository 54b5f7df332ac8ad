//! The reactor's HTTP side: running the requests of connections accepted on the
//! HTTP port within the tick (same transaction, same group commit as RESP),
//! feeding event streams after each commit, and the once-a-second sweep for slow
//! requests (408) and stream heartbeats.

use std::time::{Duration, Instant};

use super::Reactor;
use crate::conn::Phase;
use crate::events::Event;
use crate::http::router::{Env, Routed, route};
use crate::http::sse::{self, SseState};
use crate::http::{Method, REQUEST_TIMEOUT, Response, parse_request};

/// How often HTTP deadlines and stream heartbeats are checked.
pub(super) const HTTP_SWEEP: Duration = Duration::from_secs(1);

impl Reactor {
    /// Parses and answers every complete request buffered on HTTP connection `k`.
    pub(super) fn run_http(&mut self, k: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            let has_input = conn.has_input();
            let Some(http) = conn.http.as_mut() else {
                return;
            };
            if conn.phase != Phase::Open || http.sse.is_some() {
                return;
            }
            if !has_input {
                http.deadline = None;
                return;
            }
            if conn.backpressured() {
                conn.more_input = true;
                return;
            }
            if conn.tick.is_none() {
                conn.mark_tick();
                self.touched.push(k);
            }
            let reply_start = conn.wbuf.len();
            let req = match parse_request(&conn.rbuf[conn.rhead..]) {
                Ok(Some(req)) => req,
                Ok(None) => {
                    if let Some(http) = conn.http.as_mut() {
                        http.deadline
                            .get_or_insert(Instant::now() + REQUEST_TIMEOUT);
                    }
                    return;
                }
                Err(e) => {
                    log::debug!(
                        "conn={} peer={} reason=http {}: {}",
                        conn.session.id,
                        conn.peer,
                        e.status,
                        e.message
                    );
                    *self.stats.http_responses.entry(e.status).or_default() += 1;
                    Response::error(e.status, &e.message).write(&mut conn.wbuf, false, false);
                    conn.tick_replies.push((reply_start, false));
                    conn.phase = Phase::Closing;
                    return;
                }
            };
            conn.rhead += req.len;
            conn.session.last_active = self.tick_now;
            if let Some(http) = conn.http.as_mut() {
                http.deadline = None;
            }
            let mut env = Env {
                store: &mut self.store,
                events: &mut self.tick_events,
                stats: &mut self.stats,
                config: &self.config,
                pubsub: &self.pubsub,
                used_storage: false,
            };
            let routed = route(&req, &mut env);
            let used_storage = env.used_storage;
            self.stats.tick_requests += 1;
            if let Some(mark) = conn.tick.as_mut() {
                mark.used_storage |= used_storage;
            }
            conn.tick_replies.push((reply_start, used_storage));
            match routed {
                Routed::Response(resp) => {
                    *self.stats.http_responses.entry(resp.status).or_default() += 1;
                    resp.write(&mut conn.wbuf, req.keep_alive, req.method == Method::Head);
                    if !req.keep_alive {
                        conn.phase = Phase::Closing;
                        return;
                    }
                }
                Routed::Events { from } => {
                    *self.stats.http_responses.entry(200).or_default() += 1;
                    self.stats.sse_streams += 1;
                    sse::write_head(&mut conn.wbuf);
                    if let Some(http) = conn.http.as_mut() {
                        http.sse = Some(SseState {
                            next_seq: from,
                            last_write: Instant::now(),
                        });
                    }
                    log::debug!(
                        "conn={} peer={} streams events from {from}",
                        conn.session.id,
                        conn.peer
                    );
                    self.sse_conns.push(k);
                    self.sse_behind = true;
                    return;
                }
            }
        }
    }

    /// Writes the committed events each stream has not had yet: a batch per tick
    /// for streams catching up (while the client keeps reading), everything new for
    /// live ones. `fresh` is what the last commit added to the log (empty outside a
    /// tick): a stream that had everything before it is fed from it without a read.
    pub(super) fn feed_sse(&mut self, fresh: &[Event]) {
        let last = self.store.committed_counts().last_seq;
        let now = Instant::now();
        self.sse_behind = false;
        let mut i = 0;
        while i < self.sse_conns.len() {
            let k = self.sse_conns[i];
            i += 1;
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            let Some(state) = conn.http.as_ref().and_then(|h| h.sse) else {
                continue;
            };
            if conn.phase != Phase::Open || state.next_seq > last {
                continue;
            }
            if conn.pending_output() > sse::CATCH_UP_MAX_PENDING {
                // The flush requeues nothing for streams: the next commit or sweep
                // comes back here.
                continue;
            }
            // The same events, at most a batch, from memory or from the log.
            let (sent, last_sent) = if let Some(batch) =
                super::committed_tail(fresh, last, state.next_seq, sse::CATCH_UP_BATCH)
            {
                for event in batch {
                    sse::write_event(&mut conn.wbuf, event);
                }
                (batch.len(), batch.last().map(|e| e.seq))
            } else {
                let rows = match self.store.events_between(
                    state.next_seq,
                    last,
                    sse::CATCH_UP_BATCH,
                    false,
                ) {
                    Ok(rows) => rows,
                    Err(e) => {
                        log::warn!(
                            "event stream conn={}: cannot read the log: {e}",
                            conn.session.id
                        );
                        continue;
                    }
                };
                for row in &rows {
                    sse::write_event(&mut conn.wbuf, &Event::from_row(row));
                }
                (rows.len(), rows.last().map(|r| r.seq))
            };
            let next = last_sent.map_or(last + 1, |s| s + 1);
            if let Some(s) = conn.http.as_mut().and_then(|h| h.sse.as_mut()) {
                s.next_seq = next;
                if sent > 0 {
                    s.last_write = now;
                }
            }
            if next <= last {
                self.sse_behind = true;
            }
            if sent > 0 {
                self.stats.pushes += sent as u64;
                self.note_touched(k);
            }
        }
    }

    /// Answers 408 to requests that took too long to arrive, sends heartbeats on
    /// idle streams, and keeps streams that wait on a slow reader moving.
    pub(super) fn sweep_http(&mut self, now: Instant) {
        let mut any_http = false;
        let mut expired = Vec::new();
        let mut idle_streams = Vec::new();
        for (k, conn) in self.conns.iter() {
            let Some(http) = &conn.http else { continue };
            any_http = true;
            if conn.phase != Phase::Open {
                continue;
            }
            if http.deadline.is_some_and(|d| now >= d) {
                expired.push(k);
            }
            if http
                .sse
                .is_some_and(|s| now.duration_since(s.last_write) >= sse::HEARTBEAT)
            {
                idle_streams.push(k);
            }
        }
        for k in expired {
            if let Some(conn) = self.conns.get_mut(k) {
                log::debug!(
                    "conn={} peer={} reason=request not complete in {REQUEST_TIMEOUT:?}",
                    conn.session.id,
                    conn.peer
                );
                *self.stats.http_responses.entry(408).or_default() += 1;
                Response::error(408, "request not complete in time").write(
                    &mut conn.wbuf,
                    false,
                    false,
                );
                conn.phase = Phase::Closing;
                self.flush(k);
            }
        }
        for k in idle_streams {
            if let Some(conn) = self.conns.get_mut(k) {
                sse::write_heartbeat(&mut conn.wbuf);
                if let Some(s) = conn.http.as_mut().and_then(|h| h.sse.as_mut()) {
                    s.last_write = now;
                }
                self.flush(k);
            }
        }
        if !self.sse_conns.is_empty() {
            self.feed_sse(&[]);
            self.flush_touched();
        }
        self.close_finished();
        self.http_sweep_at = any_http.then_some(now + HTTP_SWEEP);
    }
}
