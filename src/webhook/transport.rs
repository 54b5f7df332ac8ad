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
//! the next request starts from idle when the response allowed it. The steps
//! are in `transport/steps.rs`; this file holds the API and the state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Interest, Registry, Token, Waker};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

pub use super::private::is_private;
use super::resolve::{Answer, Resolver};
use super::response::ResponseReader;
pub use super::url::Url;
use crate::conn::outbound::Outbound;
use crate::error::Error;

mod steps;

/// The first token of the transport's connections; they take
/// `[WEBHOOK_TOKEN_BASE, WEBHOOK_TOKEN_BASE + 2^32)`, far above the reactor's
/// connection keys and below its fixed tokens.
pub const WEBHOOK_TOKEN_BASE: usize = usize::MAX / 2;
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
    /// The TLS client configuration for `https`.
    pub tls: Tls,
    /// Response body bytes kept; a longer body is cut here and its connection
    /// closed.
    pub max_response_body: usize,
}

/// Where the TLS client configuration of `https` endpoints comes from.
#[derive(Debug, Clone)]
pub enum Tls {
    /// Built at start: from `--webhook-ca`, so that a bad file stops the start.
    Ready(Arc<rustls::ClientConfig>),
    /// The system's roots, read at the first `https` connection: a server
    /// without `https` endpoints never reads the bundle.
    System,
}

impl Tls {
    /// [`Tls::Ready`] with the CA certificates in `ca_file` (read now, an error
    /// when bad), or [`Tls::System`] without one.
    pub fn new(ca_file: Option<&Path>) -> Result<Tls, Error> {
        match ca_file {
            Some(path) => Ok(Tls::Ready(tls_config(Some(path))?)),
            None => Ok(Tls::System),
        }
    }

    /// The configuration, built from the system's roots on first use.
    fn config(&mut self) -> Result<Arc<rustls::ClientConfig>, Error> {
        match self {
            Tls::Ready(config) => Ok(Arc::clone(config)),
            Tls::System => {
                let config = tls_config(None)?;
                *self = Tls::Ready(Arc::clone(&config));
                Ok(config)
            }
        }
    }
}

/// The rustls client configuration for `https` endpoints: trusts the CA
/// certificates in `ca_file` (PEM), or, without one, the system's roots from the
/// first PEM bundle found (`SSL_CERT_FILE` first, then the usual paths). No system
/// roots is a warning (only endpoints under a given CA would work), a bad
/// `ca_file` an error.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => roots = crate::conn::outbound::pem_roots(path, "--webhook-ca")?,
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
    crate::conn::outbound::client_config(roots)
}

/// One request to send: always a `POST` to the URL's path and query.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where it goes; shared with the endpoint, which parses its URL once.
    pub url: Arc<Url>,
    /// Headers besides `Host`, `Content-Length` and `Connection`, which the
    /// transport writes (and refuses from the caller). Names are fixed; fixed
    /// values are borrowed.
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
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
    url: Arc<Url>,
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
    /// The poll's waker, which the resolver thread fires when it answers.
    waker: Arc<Waker>,
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
    /// first needs it, and wakes the poll through `waker` when it answers (then
    /// [`Transport::woken`] takes the answers).
    pub fn new(config: TransportConfig, waker: Arc<Waker>) -> Transport {
        Transport {
            config,
            waker,
            resolver: None,
            endpoints: HashMap::new(),
            conns: HashMap::new(),
            tickets: HashMap::new(),
            next_conn: 0,
            next_ticket: 0,
            answers: Vec::new(),
            early: Vec::new(),
        }
    }

    /// True for the transport's tokens, its connections'
    /// (`[WEBHOOK_TOKEN_BASE, WEBHOOK_TOKEN_BASE + 2^32)`).
    pub fn owns(token: Token) -> bool {
        conn_id(token).is_some()
    }

    /// The poll's waker fired: takes the resolver's answers, and starts or ends
    /// the requests that waited for them (those that ended go to `done`).
    pub fn woken(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Done>) {
        self.resolved(registry, now, done);
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
    u32::try_from(token.0.checked_sub(WEBHOOK_TOKEN_BASE)?).ok()
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
