//! The reactor's RESP side: reading a connection's input and running its
//! requests in arrival order within the tick, and CLIENT LIST, which needs every
//! connection.

use std::time::Instant;

use super::{CROSS_PROTOCOL_LOG_INTERVAL, Reactor};
use crate::cmd::{self, ClientFilter, Ctx, Outcome};
use crate::conn::{Conn, Next, ReadEnd};

impl Reactor {
    /// Reads what a connection sent and runs its complete requests.
    pub(super) fn serve(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if !conn.is_open() {
            return;
        }
        let mut eof = false;
        if conn.is_blocked() || conn.backpressured() {
            // Input waits in the socket until the blocking command completes, or
            // until the peer has read (the writable event requeues it).
            conn.defer_input();
            if conn.is_blocked() {
                return;
            }
        } else {
            match conn.read(&mut self.scratch) {
                Ok((end, n)) => {
                    self.shared.stats.net_input_bytes += n as u64;
                    eof = end == ReadEnd::Eof;
                }
                Err(e) => {
                    log::debug!(
                        "conn={} peer={} reason=read error: {e}",
                        conn.id(),
                        conn.peer()
                    );
                    conn.abort();
                    self.closing.push(k);
                    return;
                }
            }
        }
        self.run_requests(k);
        if self.conns.get(k).is_some_and(Conn::tls_wants_write) {
            // Handshake messages and alerts go out with this tick's flush.
            self.note_touched(k);
        }
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        let unparsed = conn.unparsed_input();
        let limit = self.shared.config.max_query_buffer_bytes;
        if unparsed > limit && conn.is_open() {
            log::warn!(
                "conn={} peer={} reason=query buffer of {unparsed} bytes over the {limit} byte limit; closed",
                conn.id(),
                conn.peer(),
            );
            self.shared.stats.query_buffer_closes += 1;
            conn.abort();
            self.closing.push(k);
            return;
        }
        if eof && conn.is_open() {
            // The peer will send nothing more: answer what it sent, then close.
            log::debug!("conn={} peer={} reason=peer closed", conn.id(), conn.peer());
            conn.finish();
            self.note_touched(k);
        } else if conn.has_more_input() && !conn.backpressured() && conn.is_open() {
            self.carry_over(k);
        }
    }

    /// Parses and runs every complete request buffered on connection `k`.
    pub(super) fn run_requests(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.is_http() {
            self.run_http(k);
            return;
        }
        if !conn.has_input() {
            return;
        }
        if conn.touch() {
            self.touched.push(k);
        }
        let now = self.tick_now;
        loop {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            let outcome = match conn.next_request() {
                Next::Nothing => return,
                Next::Request(running) => {
                    running.session.last_active = now;
                    let events_before = self.shared.events.len();
                    let mut ctx = Ctx::new(&mut self.shared, running.out, running.session, k);
                    ctx.woken_after = running.woken_after;
                    let outcome = cmd::execute(&running.args, &mut ctx);
                    let used_storage = ctx.used_storage();
                    conn.request_done(&outcome, used_storage);
                    if self.shared.events.len() > events_before
                        && let Some(r) = self.replication.as_mut()
                    {
                        r.hold(k, conn, None);
                    }
                    self.shared.stats.tick_requests += 1;
                    outcome
                }
                Next::ProtocolError(e) => {
                    self.shared.stats.protocol_errors += 1;
                    log::debug!(
                        "conn={} peer={} reason=protocol error: {e}",
                        conn.id(),
                        conn.peer()
                    );
                    return;
                }
            };
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => {
                    conn.finish();
                    return;
                }
                Outcome::Drop => {
                    let now = Instant::now();
                    let stats = &mut self.shared.stats;
                    if stats
                        .cross_protocol_logged_at
                        .is_none_or(|t| now.duration_since(t) >= CROSS_PROTOCOL_LOG_INTERVAL)
                    {
                        stats.cross_protocol_logged_at = Some(now);
                        log::warn!(
                            "conn={} peer={} reason=HTTP request on the RESP port \
                             (possible cross-protocol attack); connection dropped",
                            conn.id(),
                            conn.peer()
                        );
                    }
                    conn.finish();
                    return;
                }
                Outcome::ClientList(filter) => self.client_list(k, &filter),
                Outcome::Block(_) => {
                    self.blocked.push(k);
                    return;
                }
            }
        }
    }

    /// Writes the CLIENT LIST (or CLIENT INFO) reply for connection `k`.
    pub(super) fn client_list(&mut self, k: usize, filter: &ClientFilter) {
        let mut text = String::new();
        for (key, c) in self.conns.iter() {
            let wanted = match filter {
                ClientFilter::All => true,
                ClientFilter::This => key == k,
                ClientFilter::Ids(ids) => ids.contains(&c.id()),
                ClientFilter::PubSub(subscribed) => {
                    (c.session().subscriptions() > 0) == *subscribed
                }
            };
            if wanted && !c.is_closed() {
                text.push_str(&cmd::describe_client(
                    c.session(),
                    Some(c.peer()),
                    c.local(),
                ));
            }
        }
        if let Some(conn) = self.conns.get_mut(k) {
            conn.out().verbatim(&text);
        }
    }
}
