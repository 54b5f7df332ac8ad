//! The reactor's HTTP side: running the requests of connections accepted on the
//! HTTP port within the tick (same transaction, same group commit as RESP),
//! feeding event streams after each commit, and the once-a-second sweep for slow
//! requests (408) and stream heartbeats.

use std::time::{Duration, Instant};

use super::Reactor;
use crate::conn::NextHttp;
use crate::events::Event;
use crate::http::router::{Env, Routed, route};
use crate::http::sse;
use crate::http::{Method, REQUEST_TIMEOUT, Response};

/// How often HTTP deadlines and stream heartbeats are checked.
pub(super) const HTTP_SWEEP: Duration = Duration::from_secs(1);

impl Reactor {
    /// Parses and answers every complete request buffered on HTTP connection `k`.
    pub(super) fn run_http(&mut self, k: usize) {
        let now = self.tick_now;
        loop {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            let req = match conn.next_http_request(now) {
                NextHttp::Nothing => return,
                NextHttp::Request(req) => req,
                NextHttp::Failed(e) => {
                    log::debug!(
                        "conn={} peer={} reason=http {}: {}",
                        conn.id(),
                        conn.peer(),
                        e.status,
                        e.message
                    );
                    if conn.touch() {
                        self.touched.push(k);
                    }
                    *self
                        .shared
                        .stats
                        .http_responses
                        .entry(e.status)
                        .or_default() += 1;
                    conn.reply(false, |out| {
                        Response::error(e.status, &e.message).write(out, false, false)
                    });
                    conn.finish();
                    return;
                }
            };
            if conn.touch() {
                self.touched.push(k);
            }
            // The connection's session is the route's: the route reads none of it
            // but the one context wants it.
            let events_before = self.shared.events.len();
            let (routed, used_storage) = {
                let session = conn.session_mut();
                let mut env = Env::new(&mut self.shared, (), session, k);
                let routed = route(&req, &mut env);
                (routed, env.used_storage())
            };
            self.shared.stats.tick_requests += 1;
            match routed {
                Routed::Response(resp) => {
                    *self
                        .shared
                        .stats
                        .http_responses
                        .entry(resp.status)
                        .or_default() += 1;
                    conn.reply(used_storage, |out| {
                        resp.write(out, req.keep_alive, req.method == Method::Head)
                    });
                    if self.shared.events.len() > events_before
                        && let Some(r) = self.replication.as_mut()
                    {
                        r.hold(k, conn, Some(req.keep_alive));
                    }
                    if !req.keep_alive {
                        conn.finish();
                        return;
                    }
                }
                Routed::Events { from } => {
                    *self.shared.stats.http_responses.entry(200).or_default() += 1;
                    self.shared.stats.sse_streams += 1;
                    conn.reply(used_storage, sse::write_head);
                    conn.start_stream(from, Instant::now());
                    log::debug!(
                        "conn={} peer={} streams events from {from}",
                        conn.id(),
                        conn.peer()
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
        let last = self.visible_seq();
        let now = Instant::now();
        self.sse_behind = false;
        let mut i = 0;
        while i < self.sse_conns.len() {
            let k = self.sse_conns[i];
            i += 1;
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            let Some(state) = conn.stream_state() else {
                continue;
            };
            if !conn.is_open() || state.next_seq > last {
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
                    sse::write_event(conn.out_bytes(), event);
                }
                (batch.len(), batch.last().map(|e| e.seq))
            } else {
                let rows = match self.shared.store.events_between(
                    state.next_seq,
                    last,
                    sse::CATCH_UP_BATCH,
                    false,
                ) {
                    Ok(rows) => rows,
                    Err(e) => {
                        log::warn!("event stream conn={}: cannot read the log: {e}", conn.id());
                        continue;
                    }
                };
                for row in &rows {
                    sse::write_event(conn.out_bytes(), &Event::from_row(row));
                }
                (rows.len(), rows.last().map(|r| r.seq))
            };
            let next = last_sent.map_or(last + 1, |s| s + 1);
            conn.stream_advanced(next, (sent > 0).then_some(now));
            if next <= last {
                self.sse_behind = true;
            }
            if sent > 0 {
                self.shared.stats.sse_frames += sent as u64;
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
            if !conn.is_http() {
                continue;
            }
            any_http = true;
            if !conn.is_open() {
                continue;
            }
            if conn.request_overdue(now) {
                expired.push(k);
            }
            if conn.stream_idle(now, sse::HEARTBEAT) {
                idle_streams.push(k);
            }
        }
        for k in expired {
            if let Some(conn) = self.conns.get_mut(k) {
                log::debug!(
                    "conn={} peer={} reason=request not complete in {REQUEST_TIMEOUT:?}",
                    conn.id(),
                    conn.peer()
                );
                *self.shared.stats.http_responses.entry(408).or_default() += 1;
                Response::error(408, "request not complete in time").write(
                    conn.out_bytes(),
                    false,
                    false,
                );
                conn.finish();
                self.flush(k);
            }
        }
        for k in idle_streams {
            if let Some(conn) = self.conns.get_mut(k) {
                conn.stream_heartbeat(now);
                self.flush(k);
            }
        }
        if !self.sse_conns.is_empty() {
            self.feed_sse(&[]);
            self.flush_touched();
        }
        self.close_finished();
        self.timers.http_sweep_at = any_http.then_some(now + HTTP_SWEEP);
    }
}
