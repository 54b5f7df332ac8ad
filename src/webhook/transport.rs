//! The webhook HTTP/1.1 client on the reactor: one request in flight per
//! endpoint, one connection per endpoint kept alive between requests, connect
//! and response timeouts, bodies read up to a cap, and every target address
//! checked against the private ranges first.
//!
//! The delivery engine calls [`Transport::start`] and gets a [`Done`] back from
//! [`Transport::ready`] or [`Transport::expire`]; the transport never blocks the
//! loop (host names are resolved by [`super::resolve`]'s thread) and nothing a
//! peer sends ends anything but that peer's request. Redirects are not followed:
//! a 3xx is a status like any other.
//!
//! An endpoint's life: no connection → (resolve) → connect → (TLS handshake) →
//! write the request and read the response → idle keep-alive (or closed), and
//! the next request starts from idle when the response allowed it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

pub use super::private::is_private;
use super::resolve::{Answer, Resolver};
use super::response::{Fed, Response, ResponseReader};
pub use super::url::Url;
use crate::conn::outbound::{Outbound, OutboundError};
use crate::error::Error;

/// The first token of the transport's connections; they take
/// `[WEBHOOK_TOKEN_BASE, WEBHOOK_TOKEN_BASE + 2^32)`, far above the reactor's
/// connection keys and below its fixed tokens.
pub const WEBHOOK_TOKEN_BASE: usize = usize::MAX / 2;
/// The resolver's waker token, for [`Transport::new`] (the reactor's fixed tokens
/// take `usize::MAX - 1` to `usize::MAX - 8`).
pub const WEBHOOK_WAKER: Token = Token(usize::MAX - 9);
/// How many connection tokens there are.
const TOKEN_SPAN: u64 = 1 << 32;
/// An idle keep-alive connection is closed after this long without a request
/// (servers commonly close theirs after 5 to 120 s).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// CA bundles looked for when no `--webhook-ca` is given, after `SSL_CERT_FILE`.
const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The transport's settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// From the first step (resolution or connect) to a connection ready for the
    /// request (TCP connected, TLS handshake done).
    pub connect_timeout: Duration,
    /// From the request handed to a ready connection to the response's end.
    pub response_timeout: Duration,
    /// Private and loopback targets are allowed (`--webhook-allow-private`).
    pub allow_private: bool,
    /// The TLS client configuration for `https` ([`tls_config`]).
    pub tls: Arc<rustls::ClientConfig>,
    /// Response body bytes kept; a longer body is cut here and its connection
    /// closed.
    pub max_response_body: usize,
}

/// The rustls client configuration for `https` endpoints: trusts the CA
/// certificates in `ca_file` (PEM), or, without one, the system's roots from the
/// first PEM bundle found (`SSL_CERT_FILE` first, then the usual paths). No system
/// roots is a warning (only endpoints under a given CA would work), a bad
/// `ca_file` an error.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |what: &str, e: &dyn std::fmt::Display| {
                Error::Config(format!("{what} --webhook-ca {}: {e}", path.display()))
            };
            for c in CertificateDer::pem_file_iter(path).map_err(|e| bad("cannot read", &e))? {
                let c = c.map_err(|e| bad("cannot parse", &e))?;
                roots.add(c).map_err(|e| bad("bad certificate in", &e))?;
            }
            if roots.is_empty() {
                return Err(bad(
                    "no certificate in",
                    &"expected PEM \"BEGIN CERTIFICATE\" blocks",
                ));
            }
        }
        None => {
            let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
            let candidates = env
                .into_iter()
                .chain(SYSTEM_CA_FILES.iter().map(std::path::PathBuf::from));
            for path in candidates {
                let Ok(certs) = CertificateDer::pem_file_iter(&path) else {
                    continue;
                };
                let (added, ignored) = roots.add_parsable_certificates(certs.flatten());
                log::debug!(
                    "webhook: {added} CA certificates from {} ({ignored} ignored)",
                    path.display()
                );
                if added > 0 {
                    break;
                }
            }
            if roots.is_empty() {
                log::warn!(
                    "webhook: no system CA certificates found (set SSL_CERT_FILE or \
                     --webhook-ca); https endpoints will fail their certificate check"
                );
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One request to send: always a `POST` to the URL's path and query.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where it goes.
    pub url: Url,
    /// Headers besides `Host`, `Content-Length` and `Connection`, which the
    /// transport writes (and refuses from the caller).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A request's end, for the endpoint it was started for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The endpoint given to [`Transport::start`].
    pub endpoint: u64,
    /// What became of the request.
    pub outcome: Outcome,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered (any status; a 3xx is not followed).
    Response {
        /// The final status code.
        status: u16,
        /// The body, cut at `max_response_body`.
        body: Vec<u8>,
    },
    /// No answer: resolve or connect failure, reset, timeout, TLS error, or a
    /// response that broke HTTP.
    Failed {
        /// What went wrong, for logs and `last_error`.
        reason: String,
    },
    /// The target is a private address and `allow_private` is off.
    Refused {
        /// Which address.
        reason: String,
    },
}

/// Where an endpoint's connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The TCP connect is under way.
    Connecting,
    /// The TLS handshake is under way.
    Handshaking,
    /// Ready for a request (or carrying one).
    Ready,
}

/// An endpoint's one connection.
#[derive(Debug)]
struct Conn {
    id: u32,
    bytes: Outbound,
    addr: SocketAddr,
    /// What it was opened for: scheme, host and port.
    https: bool,
    host: String,
    port: u16,
    phase: Phase,
    /// When it went idle (no request on it).
    idle_since: Option<Instant>,
}

impl Conn {
    fn serves(&self, url: &Url) -> bool {
        self.https == url.https && self.host == url.host && self.port == url.port
    }

    fn interest(&self) -> Interest {
        if self.phase == Phase::Connecting || self.bytes.wants_write() {
            // Connect completion shows as WRITABLE.
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }
}

/// Where the request in flight is.
#[derive(Debug)]
enum Stage {
    /// Waiting for the resolver's answer with this ticket.
    Resolving { ticket: u64 },
    /// Waiting for the connection to become ready.
    Connecting,
    /// Written (or being written) on a ready connection; reading the response.
    Exchanging {
        reader: ResponseReader,
        /// On a connection an earlier request used.
        reused: bool,
    },
    /// Known at [`Transport::start`]; reported at the next `ready` or `expire`.
    Finished(Outcome),
}

/// The request in flight for an endpoint.
#[derive(Debug)]
struct Flight {
    url: Url,
    /// The encoded request, kept to send again on a fresh connection.
    wire: Vec<u8>,
    stage: Stage,
    /// When the current stage times out.
    deadline: Instant,
    /// Resolved addresses not tried yet.
    addrs: Vec<SocketAddr>,
    /// The one resend on a fresh connection was used.
    resent: bool,
}

/// An endpoint's connection and request.
#[derive(Debug)]
struct Endpoint {
    id: u64,
    conn: Option<Conn>,
    flight: Option<Flight>,
}

/// The webhook HTTP client: every endpoint's connection and request.
#[derive(Debug)]
pub struct Transport {
    config: TransportConfig,
    waker_token: Token,
    resolver: Option<Resolver>,
    endpoints: HashMap<u64, Endpoint>,
    /// Connection id → endpoint.
    conns: HashMap<u32, u64>,
    /// Resolver ticket → endpoint.
    tickets: HashMap<u64, u64>,
    next_conn: u32,
    next_ticket: u64,
    answers: Vec<Answer>,
    /// Requests answered at `start` (a second one in flight for an endpoint),
    /// reported at the next `expire`.
    early: Vec<(Instant, Done)>,
}

impl Transport {
    /// A transport with no endpoints; the resolver thread starts when a host name
    /// first needs it, and answers at `waker_token` (normally [`WEBHOOK_WAKER`]).
    pub fn new(config: TransportConfig, waker_token: Token) -> io::Result<Transport> {
        Ok(Transport {
            config,
            waker_token,
            resolver: None,
            endpoints: HashMap::new(),
            conns: HashMap::new(),
            tickets: HashMap::new(),
            next_conn: 0,
            next_ticket: 0,
            answers: Vec::new(),
            early: Vec::new(),
        })
    }

    /// True for the transport's tokens: its connections'
    /// (`[WEBHOOK_TOKEN_BASE, WEBHOOK_TOKEN_BASE + 2^32)`) and [`WEBHOOK_WAKER`].
    pub fn owns(token: Token) -> bool {
        token == WEBHOOK_WAKER || conn_id(token).is_some()
    }

    /// Starts `request` for `endpoint`. At most one request is in flight per
    /// endpoint (the engine's rule; a second is answered `Failed`). Reuses the
    /// endpoint's idle keep-alive connection when scheme, host and port match.
    pub fn start(&mut self, registry: &Registry, endpoint: u64, request: Request, now: Instant) {
        let mut ep = self.endpoints.remove(&endpoint).unwrap_or(Endpoint {
            id: endpoint,
            conn: None,
            flight: None,
        });
        if ep.flight.is_some() {
            debug_assert!(false, "webhook {endpoint}: a second request in flight");
            // The one in flight goes on; this one is reported failed at once.
            self.endpoints.insert(endpoint, ep);
            let outcome = failed("a request is already in flight");
            self.early.push((now, Done { endpoint, outcome }));
            return;
        }
        if let Some(outcome) = self.begin(registry, &mut ep, request, now)
            && let Some(flight) = ep.flight.as_mut()
        {
            flight.stage = Stage::Finished(outcome);
            flight.deadline = now;
        }
        self.endpoints.insert(endpoint, ep);
    }

    /// Handles a readiness event for one of the transport's tokens (see
    /// [`Transport::owns`]); requests that ended go to `done`.
    pub fn ready(
        &mut self,
        registry: &Registry,
        event: &Event,
        now: Instant,
        done: &mut Vec<Done>,
    ) {
        if event.token() == self.waker_token {
            self.resolved(registry, now, done);
            return;
        }
        let Some(endpoint) = conn_id(event.token()).and_then(|id| self.conns.get(&id)) else {
            return;
        };
        let endpoint = *endpoint;
        self.drive(registry, endpoint, now, done);
    }

    /// Ends the requests whose stage timed out (and reports those known at
    /// start), and closes connections idle for [`IDLE_CONNECTION_TIMEOUT`].
    pub fn expire(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Done>) {
        done.extend(self.early.drain(..).map(|(_, d)| d));
        let due: Vec<u64> = self
            .endpoints
            .iter()
            .filter(|(_, ep)| ep_deadline(ep).is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(mut ep) = self.endpoints.remove(&id) else {
                continue;
            };
            if let Some(flight) = ep.flight.take_if(|f| f.deadline <= now) {
                let outcome = match flight.stage {
                    Stage::Finished(outcome) => outcome,
                    Stage::Resolving { ticket } => {
                        self.tickets.remove(&ticket);
                        failed(format!("timed out resolving {}", flight.url.host))
                    }
                    Stage::Connecting => {
                        self.close(registry, &mut ep);
                        failed(format!(
                            "timed out connecting to {} after {} ms",
                            flight.url.host,
                            self.config.connect_timeout.as_millis()
                        ))
                    }
                    Stage::Exchanging { .. } => {
                        self.close(registry, &mut ep);
                        failed(format!(
                            "no response within {} ms",
                            self.config.response_timeout.as_millis()
                        ))
                    }
                };
                done.push(Done {
                    endpoint: id,
                    outcome,
                });
            } else if ep.flight.is_none()
                && ep
                    .conn
                    .as_ref()
                    .and_then(|c| c.idle_since)
                    .is_some_and(|t| t + IDLE_CONNECTION_TIMEOUT <= now)
            {
                self.close(registry, &mut ep);
            }
            self.keep(ep);
        }
    }

    /// When [`Transport::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let early = self.early.iter().map(|(at, _)| *at);
        self.endpoints
            .values()
            .filter_map(ep_deadline)
            .chain(early)
            .min()
    }

    /// Drops the endpoint's connection and request, with no [`Done`] (the
    /// endpoint was deleted or disabled).
    pub fn forget(&mut self, registry: &Registry, endpoint: u64) {
        if let Some(mut ep) = self.endpoints.remove(&endpoint) {
            if let Some(Flight {
                stage: Stage::Resolving { ticket },
                ..
            }) = ep.flight
            {
                self.tickets.remove(&ticket);
            }
            self.close(registry, &mut ep);
        }
    }

    /// Requests started and not yet reported.
    pub fn in_flight(&self) -> usize {
        self.early.len()
            + self
                .endpoints
                .values()
                .filter(|ep| ep.flight.is_some())
                .count()
    }

    // ---- the steps -----------------------------------------------------------------

    /// Sets up the flight for `request` and takes it as far as it goes now; an
    /// outcome when it ended at once.
    fn begin(
        &mut self,
        registry: &Registry,
        ep: &mut Endpoint,
        request: Request,
        now: Instant,
    ) -> Option<Outcome> {
        let wire = encode(&request);
        let url = request.url;
        ep.flight = Some(Flight {
            url: url.clone(),
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
            match Resolver::start(registry, self.waker_token) {
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
    fn resolved(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Done>) {
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
            let outcome = match (result, ep.flight.as_ref()) {
                (_, None) => None,
                (Err(e), Some(f)) => Some(failed(format!("cannot resolve {}: {e}", f.url.host))),
                (Ok(addrs), Some(f)) => {
                    let url = f.url.clone();
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
            bytes.start_tls(Arc::clone(&self.config.tls), name)?;
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
    fn drive(&mut self, registry: &Registry, endpoint: u64, now: Instant, done: &mut Vec<Done>) {
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
                            return Some(Outcome::Response { status, body });
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
        let conn = ep.conn.as_mut()?;
        let interest = conn.interest();
        if let Err(e) = conn
            .bytes
            .set_interest(registry, conn_token(conn.id), interest)
        {
            let addr = conn.addr;
            self.close(registry, ep);
            return ep
                .flight
                .as_ref()
                .map(|_| failed(format!("{addr}: register: {e}")));
        }
        None
    }

    /// Puts an ended request's outcome in `done`.
    fn report(&mut self, ep: &mut Endpoint, outcome: Option<Outcome>, done: &mut Vec<Done>) {
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
    fn keep(&mut self, ep: Endpoint) {
        if ep.conn.is_some() || ep.flight.is_some() {
            self.endpoints.insert(ep.id, ep);
        }
    }

    /// Closes the endpoint's connection, if it has one.
    fn close(&mut self, registry: &Registry, ep: &mut Endpoint) {
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

fn failed(reason: impl Into<String>) -> Outcome {
    Outcome::Failed {
        reason: reason.into(),
    }
}

fn conn_token(id: u32) -> Token {
    Token(WEBHOOK_TOKEN_BASE + id as usize)
}

fn conn_id(token: Token) -> Option<u32> {
    let offset = token.0.checked_sub(WEBHOOK_TOKEN_BASE)?;
    u32::try_from(offset)
        .ok()
        .filter(|_| (offset as u64) < TOKEN_SPAN)
}

/// When the endpoint next needs `expire`: its request's deadline, else its idle
/// connection's.
fn ep_deadline(ep: &Endpoint) -> Option<Instant> {
    match &ep.flight {
        Some(f) => Some(f.deadline),
        None => ep
            .conn
            .as_ref()
            .and_then(|c| c.idle_since)
            .map(|t| t + IDLE_CONNECTION_TIMEOUT),
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
