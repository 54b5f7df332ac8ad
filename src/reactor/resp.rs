//! The reactor's RESP side: reading a connection's input and running its
//! requests in arrival order within the tick, and CLIENT LIST, which needs every
//! connection.

use super::*;

impl Reactor {
    /// Reads what a connection sent and runs its complete requests.
    pub(super) fn serve(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        let mut eof = false;
        if conn.blocked {
            // Input waits in the socket until the blocking command completes.
            conn.more_input = true;
            return;
        }
        if conn.backpressured() {
            // Come back when the peer has read (the writable event requeues it).
            conn.more_input = true;
        } else {
            match conn.read(&mut self.scratch) {
                Ok((end, n)) => {
                    self.stats.net_input_bytes += n as u64;
                    conn.more_input = end == ReadEnd::Budget;
                    eof = end == ReadEnd::Eof;
                }
                Err(e) => {
                    log::debug!(
                        "conn={} peer={} reason=read error: {e}",
                        conn.session.id,
                        conn.peer
                    );
                    conn.phase = Phase::Closed;
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
        let unparsed = conn.rbuf.len() - conn.rhead;
        if unparsed > self.config.max_query_buffer_bytes && conn.phase == Phase::Open {
            log::warn!(
                "conn={} peer={} reason=query buffer of {unparsed} bytes over the {} byte limit; closed",
                conn.session.id,
                conn.peer,
                self.config.max_query_buffer_bytes
            );
            self.stats.query_buffer_closes += 1;
            conn.phase = Phase::Closed;
            self.closing.push(k);
            return;
        }
        if eof && conn.phase == Phase::Open {
            // The peer will send nothing more: answer what it sent, then close.
            log::debug!(
                "conn={} peer={} reason=peer closed",
                conn.session.id,
                conn.peer
            );
            conn.phase = Phase::Closing;
            self.note_touched(k);
        } else if conn.more_input && !conn.backpressured() && conn.phase == Phase::Open {
            conn.queued = true;
            self.carry.push(k);
        }
    }

    /// Parses and runs every complete request buffered on connection `k`.
    pub(super) fn run_requests(&mut self, k: usize) {
        if self.conns.get(k).is_some_and(|c| c.http.is_some()) {
            self.run_http(k);
            return;
        }
        loop {
            let Some(conn) = self.conns.get_mut(k) else {
                return;
            };
            if conn.phase != Phase::Open || conn.blocked || !conn.has_input() {
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
            let Conn {
                rbuf,
                rhead,
                parser,
                wbuf,
                session,
                tick,
                tick_replies,
                phase,
                peer,
                ..
            } = conn;
            let reply_start = wbuf.len();
            let input = &rbuf[*rhead..];
            let outcome = match parser.parse(input) {
                Ok(Parsed::Incomplete) => return,
                Ok(Parsed::Empty { consumed }) => {
                    *rhead += consumed;
                    Outcome::Continue
                }
                Ok(Parsed::Request { consumed }) => {
                    let args = parser.args(input);
                    session.last_active = self.tick_now;
                    let mut used_storage = false;
                    let resp3 = session.resp3;
                    let mut ctx = Ctx::new(
                        Reply::new(wbuf, resp3),
                        session,
                        &mut self.store,
                        &mut used_storage,
                        &mut self.tick_events,
                        &self.config,
                        &mut self.stats,
                        &mut self.pubsub,
                        k,
                    );
                    let outcome = cmd::execute(&args, &mut ctx);
                    if let Outcome::Block(wait) = &outcome {
                        // Leave the command in place: it runs again when woken.
                        let deadline = match &session.block {
                            Some(b) => b.deadline,
                            None => wait.timeout.map(|t| Instant::now() + t),
                        };
                        session.block = Some(BlockState {
                            deadline,
                            after: wait.after,
                        });
                        self.waiters.push(Waiter {
                            key: k,
                            client_id: session.id,
                            after: wait.after,
                            deadline,
                            consumed,
                        });
                    } else {
                        session.block = None;
                        *rhead += consumed;
                    }
                    if let Some(mark) = tick {
                        mark.used_storage |= used_storage;
                    }
                    tick_replies.push((reply_start, used_storage));
                    self.stats.tick_requests += 1;
                    parser.set_unauthenticated(!session.authenticated);
                    outcome
                }
                Err(e) => {
                    self.stats.protocol_errors += 1;
                    log::debug!("conn={} peer={peer} reason=protocol error: {e}", session.id);
                    Reply::new(wbuf, session.resp3).error(&format!("ERR Protocol error: {e}"));
                    tick_replies.push((reply_start, false));
                    *phase = Phase::Closing;
                    return;
                }
            };
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => {
                    conn.phase = Phase::Closing;
                    return;
                }
                Outcome::Drop => {
                    let now = Instant::now();
                    if self
                        .stats
                        .cross_protocol_logged_at
                        .is_none_or(|t| now.duration_since(t) >= CROSS_PROTOCOL_LOG_INTERVAL)
                    {
                        self.stats.cross_protocol_logged_at = Some(now);
                        log::warn!(
                            "conn={} peer={} reason=HTTP request on the RESP port \
                             (possible cross-protocol attack); connection dropped",
                            conn.session.id,
                            conn.peer
                        );
                    }
                    conn.phase = Phase::Closing;
                    return;
                }
                Outcome::ClientList(filter) => self.client_list(k, &filter),
                Outcome::Block(_) => {
                    conn.blocked = true;
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
                ClientFilter::Ids(ids) => ids.contains(&c.session.id),
                ClientFilter::PubSub(subscribed) => (c.session.subscriptions() > 0) == *subscribed,
            };
            if wanted && c.phase != Phase::Closed {
                text.push_str(&cmd::describe_client(&c.session, Some(c.peer), c.local));
            }
        }
        if let Some(conn) = self.conns.get_mut(k) {
            let resp3 = conn.session.resp3;
            Reply::new(&mut conn.wbuf, resp3).verbatim(&text);
        }
    }
}
