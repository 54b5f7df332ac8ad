//! Connection I/O around the tick: accepting, flushing output with the interest
//! it calls for, and deferred closes.

use std::io;
use std::time::Instant;

use mio::Token;

use super::TCP_KEEPALIVE;
use super::{ACCEPT_BACKOFF, ACCEPT_BUDGET, ACCEPT_WARN_INTERVAL, MAX_UNAUTH_OUTPUT_BYTES};
use super::{EMFILE, ENFILE, ENOBUFS, ENOMEM, HTTP_SWEEP, Listener, MAX_CONN_TOKEN, Reactor};
use crate::conn::Conn;

impl Reactor {
    /// Flushes every connection whose output grew, then removes finished ones.
    pub(super) fn flush_touched(&mut self) {
        let mut touched = std::mem::take(&mut self.touched);
        for &k in &touched {
            if let Some(conn) = self.conns.get_mut(k) {
                conn.end_tick();
            }
            self.flush(k);
        }
        touched.clear();
        self.touched = touched;
        self.close_finished();
    }

    pub(super) fn note_touched(&mut self, k: usize) {
        if let Some(conn) = self.conns.get_mut(k)
            && conn.touch()
        {
            self.touched.push(k);
        }
    }

    /// Writes what connection `k` has pending and updates its interest.
    pub(super) fn flush(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        if conn.is_closed() {
            return;
        }
        match conn.flush() {
            Ok(n) => self.shared.stats.net_output_bytes += n as u64,
            Err(e) => {
                log::debug!(
                    "conn={} peer={} reason=write error: {e}",
                    conn.id(),
                    conn.peer()
                );
                conn.abort();
            }
        }
        if !conn.session().authenticated && conn.pending_output() > MAX_UNAUTH_OUTPUT_BYTES {
            log::warn!(
                "conn={} peer={} reason=unauthenticated client output over {MAX_UNAUTH_OUTPUT_BYTES} bytes",
                conn.id(),
                conn.peer()
            );
            conn.abort();
        }
        if conn.is_open()
            && conn.is_subscriber()
            && conn.pubsub_output_exceeded(&self.shared.config.pubsub_limits(), Instant::now())
        {
            self.drop_slow_subscriber(k);
            return;
        }
        if conn.is_closed() {
            self.closing.push(k);
            return;
        }
        if let Err(e) = conn.update_interest(self.poll.registry(), Token(k)) {
            log::debug!("conn={} reason=reregister failed: {e}", conn.id());
            conn.abort();
            self.closing.push(k);
        }
    }

    /// Removes the connections that finished this tick.
    pub(super) fn close_finished(&mut self) {
        for k in self.closing.drain(..) {
            if self.conns.get(k).is_some_and(Conn::is_closed) {
                let mut conn = self.conns.remove(k);
                conn.deregister(self.poll.registry());
                conn.linger_close();
                if conn.is_blocked() {
                    self.blocked.retain(|&b| b != k);
                }
                if conn.is_streaming() {
                    self.sse_conns.retain(|&s| s != k);
                }
                for ch in &conn.session().channels {
                    self.shared.pubsub.unsubscribe(k, ch);
                }
                for p in &conn.session().patterns {
                    self.shared.pubsub.punsubscribe(k, p);
                }
                self.shared.stats.connected_clients -= 1;
                log::debug!("conn={} peer={} closed", conn.id(), conn.peer());
            }
        }
    }

    /// Accepts on every listener.
    pub(super) fn accept_all(&mut self) {
        for which in Listener::ALL {
            self.accept(which);
        }
    }

    /// Accepts until a listener would block or descriptors run out.
    pub(super) fn accept(&mut self, which: Listener) {
        if self.timers.accept_paused_until.is_some() {
            return;
        }
        let http = which.http();
        let index = Listener::ALL.iter().position(|&l| l == which).unwrap_or(0);
        for _ in 0..ACCEPT_BUDGET {
            let Some(listener) = &self.listeners[index] else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    self.shared.stats.connections_received += 1;
                    if self.conns.len() >= self.shared.config.maxclients
                        || self.conns.vacant_key() >= MAX_CONN_TOKEN
                    {
                        self.shared.stats.rejected_connections += 1;
                        log::warn!("peer={peer} reason=max number of clients reached");
                        // Best effort: a fresh socket's send buffer takes this at once.
                        let msg: &[u8] = if http {
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                              Content-Length: 42\r\nConnection: close\r\n\r\n\
                              {\"error\":\"max number of clients reached\"}"
                        } else {
                            b"-ERR max number of clients reached\r\n"
                        };
                        let _ = io::Write::write(&mut stream, msg);
                        continue;
                    }
                    if let Err(e) = stream.set_nodelay(true) {
                        log::debug!("peer={peer} reason=set TCP_NODELAY failed: {e}");
                    }
                    let k = self.conns.vacant_key();
                    let id = self.next_client_id;
                    if let Err(e) = socket2::SockRef::from(&stream)
                        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))
                    {
                        log::debug!("peer={peer} reason=set TCP keepalive failed: {e}");
                    }
                    let mut conn = Conn::new(stream, peer, id, self.shared.config.limits());
                    if let Err(e) = conn.register(self.poll.registry(), Token(k)) {
                        log::warn!("peer={peer} reason=register failed: {e}");
                        continue;
                    }
                    self.next_client_id += 1;
                    if self.shared.config.requirepass.is_some() {
                        conn.require_auth();
                    }
                    if which.tls() {
                        let Some(cfg) = &self.tls_config else {
                            conn.deregister(self.poll.registry());
                            continue;
                        };
                        match rustls::ServerConnection::new(cfg.clone()) {
                            Ok(t) => conn.use_tls(t),
                            Err(e) => {
                                log::warn!("peer={peer} reason=TLS session failed: {e}");
                                conn.deregister(self.poll.registry());
                                continue;
                            }
                        }
                    }
                    if http {
                        conn.speak_http();
                        self.shared.stats.http_connections += 1;
                        self.timers
                            .http_sweep_at
                            .get_or_insert(Instant::now() + HTTP_SWEEP);
                    }
                    self.conns.insert(conn);
                    self.shared.stats.connected_clients += 1;
                    log::debug!("conn={id} peer={peer} accepted");
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        if matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM)) {
                            let now = Instant::now();
                            if self
                                .accept_warned_at
                                .is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_INTERVAL)
                            {
                                log::warn!(
                                    "accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?} \
                                     at a time until descriptors free up"
                                );
                                self.accept_warned_at = Some(now);
                            }
                            self.timers.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                            return;
                        }
                        // The peer gave up before we got to it (ECONNABORTED and such).
                        log::debug!("accept failed: {e}");
                    }
                },
            }
        }
        // The budget ran out with connections possibly still queued; edge-triggered
        // readiness will not say so again, so come back next tick.
        self.accept_more = true;
    }
}
