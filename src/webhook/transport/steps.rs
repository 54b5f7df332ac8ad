//! The transport's steps: a request's way from `start` through resolution,
//! connect, TLS handshake, the request written and the response read, to its
//! outcome, and an idle connection's watch for the server closing it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::{Interest, Registry};
use rustls::pki_types::ServerName;

use super::{
    Conn, Done, Endpoint, Flight, Outcome, Phase, Request, Stage, Transport, Url, conn_token,
    failed, is_private,
};
use crate::conn::outbound::{Outbound, OutboundError};
use crate::webhook::resolve::{Answer, Resolver};
use crate::webhook::response::{Fed, Response, ResponseReader};

impl Transport {
    /// Sets up the flight for `request` and takes it as far as it goes now; an
    /// outcome when it ended at once.
    pub(super) fn begin(
        &mut self,
        registry: &Registry,
        ep: &mut Endpoint,
        request: Request,
        now: Instant,
    ) -> Option<Outcome> {
        let wire = encode(&request);
        let url = request.url;
        ep.flight = Some(Flight {
            url: Arc::clone(&url),
            wire: Vec::new(),
            stage: Stage::Connecting,
            deadline: now + self.config.connect_timeout,
            addrs: Vec::new(),
            resent: false,
        });
        let wire = match wire {
            Ok(wire) => wire,
            Err(e) => return Some(failed(e)),
        };
        if let Some(flight) = ep.flight.as_mut() {
            flight.wire = wire;
        }
        if let Some(conn) = &ep.conn {
            if conn.phase == Phase::Ready && conn.serves(&url) {
                self.exchange(ep, true, now);
                return self.step(registry, ep, now);
            }
            self.close(registry, ep);
        }
        if let Some(ip) = url.host_ip() {
            let addr = SocketAddr::new(ip, url.port);
            if let Some(refused) = self.refuse(&url, &[addr]) {
                return Some(refused);
            }
            if let Some(flight) = ep.flight.as_mut() {
                flight.addrs.push(addr);
            }
            return self.connect_next(registry, ep, now);
        }
        if self.resolver.is_none() {
            match Resolver::start(Arc::clone(&self.waker)) {
                Ok(r) => self.resolver = Some(r),
                Err(e) => return Some(failed(format!("cannot start the resolver: {e}"))),
            }
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let asked = self
            .resolver
            .as_mut()
            .is_some_and(|r| r.ask(ticket, &url.host, url.port));
        if !asked {
            return Some(failed("the resolver thread is gone"));
        }
        self.tickets.insert(ticket, ep.id);
        if let Some(flight) = ep.flight.as_mut() {
            flight.stage = Stage::Resolving { ticket };
        }
        None
    }

    /// Takes the resolver's answers to the flights still waiting for them.
    pub(super) fn resolved(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Done>) {
        let Some(resolver) = self.resolver.as_mut() else {
            return;
        };
        let mut answers = std::mem::take(&mut self.answers);
        resolver.answers(&mut answers);
        for Answer { ticket, result } in answers.drain(..) {
            let Some(endpoint) = self.tickets.remove(&ticket) else {
                continue;
            };
            let Some(mut ep) = self.endpoints.remove(&endpoint) else {
                continue;
            };
            let waiting =
                |f: &&Flight| matches!(f.stage, Stage::Resolving { ticket: t } if t == ticket);
            let outcome = match (result, ep.flight.as_ref().filter(waiting)) {
                (_, None) => None,
                (Err(e), Some(f)) => Some(failed(format!("cannot resolve {}: {e}", f.url.host))),
                (Ok(addrs), Some(f)) => {
                    let url = Arc::clone(&f.url);
                    let allowed: Vec<SocketAddr> = addrs
                        .iter()
                        .copied()
                        .filter(|a| self.config.allow_private || !is_private(a.ip()))
                        .collect();
                    if allowed.is_empty() {
                        self.refuse(&url, &addrs)
                    } else {
                        if let Some(flight) = ep.flight.as_mut() {
                            flight.stage = Stage::Connecting;
                            // Tried from the front: keep the resolver's order.
                            flight.addrs = allowed.into_iter().rev().collect();
                        }
                        self.connect_next(registry, &mut ep, now)
                    }
                }
            };
            self.report(&mut ep, outcome, done);
            self.keep(ep);
        }
        self.answers = answers;
    }

    /// Refused when every address is private and that is not allowed.
    fn refuse(&self, url: &Url, addrs: &[SocketAddr]) -> Option<Outcome> {
        if self.config.allow_private {
            return None;
        }
        let private = addrs.iter().find(|a| is_private(a.ip()))?;
        if addrs.iter().all(|a| is_private(a.ip())) {
            let reason = if url.host_ip().is_some() {
                format!("{} is a private address", private.ip())
            } else {
                format!(
                    "{} resolves to a private address ({})",
                    url.host,
                    private.ip()
                )
            };
            return Some(Outcome::Refused { reason });
        }
        None
    }

    /// Connects to the next address the flight has not tried.
    fn connect_next(
        &mut self,
        registry: &Registry,
        ep: &mut Endpoint,
        now: Instant,
    ) -> Option<Outcome> {
        let mut last_error = None;
        while let Some(addr) = ep.flight.as_mut().and_then(|f| f.addrs.pop()) {
            match self.open(registry, ep, addr) {
                Ok(()) => return self.step(registry, ep, now),
                Err(e) => last_error = Some(format!("{addr}: {e}")),
            }
        }
        Some(failed(
            last_error.unwrap_or_else(|| "no address to connect to".to_string()),
        ))
    }

    /// Opens a connection to `addr` for the flight's URL.
    fn open(
        &mut self,
        registry: &Registry,
        ep: &mut Endpoint,
        addr: SocketAddr,
    ) -> Result<(), OutboundError> {
        let Some(flight) = ep.flight.as_mut() else {
            return Ok(());
        };
        let url = &flight.url;
        let mut bytes = Outbound::connect(addr)?;
        if url.https {
            let name = match url.host_ip() {
                Some(ip) => ServerName::IpAddress(ip.into()),
                None => ServerName::try_from(url.host.clone())
                    .map_err(|e| OutboundError::Tls(format!("server name {}: {e}", url.host)))?,
            };
            let tls = self
                .config
                .tls
                .config()
                .map_err(|e| OutboundError::Tls(e.to_string()))?;
            bytes.start_tls(tls, name)?;
        }
        let id = self.conn_id_free();
        bytes
            .set_interest(
                registry,
                conn_token(id),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| OutboundError::Io(format!("register: {e}")))?;
        log::debug!("webhook {}: connecting to {addr} ({})", ep.id, url.as_str());
        flight.stage = Stage::Connecting;
        self.conns.insert(id, ep.id);
        ep.conn = Some(Conn {
            id,
            bytes,
            addr,
            https: url.https,
            host: url.host.clone(),
            port: url.port,
            phase: Phase::Connecting,
            idle_since: None,
        });
        Ok(())
    }

    /// Hands the flight's request to the ready connection.
    fn exchange(&self, ep: &mut Endpoint, reused: bool, now: Instant) {
        let (Some(conn), Some(flight)) = (ep.conn.as_mut(), ep.flight.as_mut()) else {
            return;
        };
        conn.idle_since = None;
        conn.bytes.out().extend_from_slice(&flight.wire);
        flight.stage = Stage::Exchanging {
            reader: ResponseReader::new(self.config.max_response_body),
            reused,
        };
        flight.deadline = now + self.config.response_timeout;
    }

    /// Drives one endpoint after a readiness event on its connection.
    pub(super) fn drive(
        &mut self,
        registry: &Registry,
        endpoint: u64,
        now: Instant,
        done: &mut Vec<Done>,
    ) {
        let Some(mut ep) = self.endpoints.remove(&endpoint) else {
            return;
        };
        let outcome = self.step(registry, &mut ep, now);
        self.report(&mut ep, outcome, done);
        self.keep(ep);
    }

    /// Moves the endpoint's connection as far as it goes without blocking, then
    /// registers it for what it waits for. An outcome when the request ended.
    fn step(&mut self, registry: &Registry, ep: &mut Endpoint, now: Instant) -> Option<Outcome> {
        let mut answered = None;
        loop {
            let conn = ep.conn.as_mut()?;
            let Some(flight) = ep.flight.as_mut() else {
                if !idle_alive(conn) {
                    log::debug!("webhook: idle connection to {} closed", conn.addr);
                    self.close(registry, ep);
                }
                break;
            };
            if matches!(flight.stage, Stage::Finished(_) | Stage::Resolving { .. }) {
                break;
            }
            match conn.phase {
                Phase::Connecting => match conn.bytes.connect_done() {
                    Ok(false) => break,
                    Ok(true) => {
                        conn.phase = if conn.https {
                            Phase::Handshaking
                        } else {
                            Phase::Ready
                        };
                        if conn.phase == Phase::Ready {
                            self.exchange(ep, false, now);
                        }
                    }
                    Err(e) => {
                        let addr = conn.addr;
                        log::debug!("webhook: connect to {addr} failed: {e}");
                        self.close(registry, ep);
                        if ep.flight.as_ref().is_some_and(|f| !f.addrs.is_empty()) {
                            return self.connect_next(registry, ep, now);
                        }
                        return Some(failed(format!("{addr}: {e}")));
                    }
                },
                Phase::Handshaking => {
                    if let Err(e) = handshake(&mut conn.bytes) {
                        let addr = conn.addr;
                        self.close(registry, ep);
                        return Some(failed(format!("{addr}: {e}")));
                    }
                    if conn.bytes.tls_handshaking() {
                        break;
                    }
                    conn.phase = Phase::Ready;
                    self.exchange(ep, false, now);
                }
                Phase::Ready => {
                    let Stage::Exchanging { reader, reused } = &mut flight.stage else {
                        break;
                    };
                    match read_response(&mut conn.bytes, reader) {
                        Ok(None) => break,
                        Ok(Some(response)) => {
                            let Response {
                                status,
                                body,
                                reusable,
                            } = response;
                            // Bytes after the response, or a request not wholly
                            // written, leave the connection in an unknown state.
                            if reusable
                                && conn.bytes.input().is_empty()
                                && !conn.bytes.wants_write()
                            {
                                conn.idle_since = Some(now);
                            } else {
                                self.close(registry, ep);
                            }
                            answered = Some(Outcome::Response { status, body });
                            break;
                        }
                        Err(e) => {
                            let addr = conn.addr;
                            // A server may close an idle keep-alive connection just as
                            // the request goes out: when a reused connection fails
                            // before any byte of the response, the request is sent
                            // once more on a fresh connection to the same address.
                            let resend = *reused && !reader.started() && !flight.resent;
                            self.close(registry, ep);
                            if !resend {
                                return Some(failed(format!("{addr}: {e}")));
                            }
                            log::debug!(
                                "webhook: reused connection to {addr} failed ({e}); resending"
                            );
                            if let Some(flight) = ep.flight.as_mut() {
                                flight.resent = true;
                                flight.deadline = now + self.config.connect_timeout;
                                flight.addrs = vec![addr];
                            }
                            return self.connect_next(registry, ep, now);
                        }
                    }
                }
            }
        }
        if let Some(conn) = ep.conn.as_mut() {
            let interest = conn.interest();
            if let Err(e) = conn
                .bytes
                .set_interest(registry, conn_token(conn.id), interest)
            {
                let addr = conn.addr;
                self.close(registry, ep);
                if answered.is_none() && ep.flight.is_some() {
                    answered = Some(failed(format!("{addr}: register: {e}")));
                }
            }
        }
        answered
    }

    /// Puts an ended request's outcome in `done`.
    pub(super) fn report(
        &mut self,
        ep: &mut Endpoint,
        outcome: Option<Outcome>,
        done: &mut Vec<Done>,
    ) {
        if let Some(outcome) = outcome
            && ep.flight.take().is_some()
        {
            done.push(Done {
                endpoint: ep.id,
                outcome,
            });
        }
    }

    /// Keeps an endpoint that still has a connection or a request.
    pub(super) fn keep(&mut self, ep: Endpoint) {
        if ep.conn.is_some() || ep.flight.is_some() {
            self.endpoints.insert(ep.id, ep);
        }
    }

    /// Closes the endpoint's connection, if it has one.
    pub(super) fn close(&mut self, registry: &Registry, ep: &mut Endpoint) {
        if let Some(mut conn) = ep.conn.take() {
            conn.bytes.deregister(registry);
            self.conns.remove(&conn.id);
        }
    }

    /// A connection id no open connection uses.
    fn conn_id_free(&mut self) -> u32 {
        loop {
            let id = self.next_conn;
            self.next_conn = self.next_conn.wrapping_add(1);
            if !self.conns.contains_key(&id) {
                return id;
            }
        }
    }
}

/// Encodes the request: `POST`, the transport's headers, the caller's, the body.
fn encode(request: &Request) -> Result<Vec<u8>, String> {
    let url = &request.url;
    let mut wire = Vec::with_capacity(256 + request.body.len());
    wire.extend_from_slice(b"POST ");
    wire.extend_from_slice(url.path_and_query.as_bytes());
    wire.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    wire.extend_from_slice(url.host_header().as_bytes());
    wire.extend_from_slice(b"\r\nContent-Length: ");
    wire.extend_from_slice(itoa::Buffer::new().format(request.body.len()).as_bytes());
    wire.extend_from_slice(b"\r\nConnection: keep-alive\r\n");
    for (name, value) in &request.headers {
        let is_token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !is_token {
            return Err(format!("invalid header name {name:?}"));
        }
        if ["host", "content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            return Err(format!("header {name} is the transport's to write"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("header {name} has a line break in its value"));
        }
        wire.extend_from_slice(name.as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    wire.extend_from_slice(&request.body);
    Ok(wire)
}

/// Moves the TLS handshake on: its records out, the server's in.
fn handshake(bytes: &mut Outbound) -> Result<(), OutboundError> {
    bytes.flush()?;
    while bytes.tls_handshaking() {
        if bytes.read_some()?.is_none() {
            break;
        }
    }
    bytes.flush()
}

/// Writes the request and reads what has arrived of the response: the response
/// once complete, `None` while it is not.
fn read_response(
    bytes: &mut Outbound,
    reader: &mut ResponseReader,
) -> Result<Option<Response>, String> {
    bytes.flush().map_err(|e| e.to_string())?;
    loop {
        match bytes.read_some() {
            Ok(Some(_)) => {
                let Fed { consumed, done } =
                    reader.feed(bytes.input()).map_err(|e| e.to_string())?;
                bytes.consume(consumed);
                if done.is_some() {
                    return Ok(done);
                }
            }
            Ok(None) => return Ok(None),
            Err(OutboundError::Closed) => {
                return reader.closed().map(Some).map_err(|e| e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Reads an idle connection: false when the server closed it or sent bytes no
/// request asked for.
fn idle_alive(conn: &mut Conn) -> bool {
    matches!(conn.bytes.read_some(), Ok(None))
}
