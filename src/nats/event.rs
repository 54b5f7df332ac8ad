//! What the client reports to the reactor ([`Event`]), why a connection ended
//! ([`ConnError`]) and why a publish was refused ([`PublishError`]).

use std::fmt;
use std::time::Duration;

use super::headers::{Headers, Status};
use super::proto::{EncodeError, ProtoError, ServerInfo};

/// A subscription's id.
pub type Sid = u64;
/// A request's id: its reply comes as [`Event::Reply`] with the same id.
pub type RequestId = u64;

/// Why a connection attempt failed or a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnError {
    /// The host name did not resolve.
    Resolve(String),
    /// The TCP connect failed (refused, unreachable).
    Connect(String),
    /// A step of the connect did not finish within the connect timeout.
    Timeout(&'static str),
    /// The server closed the connection.
    Closed,
    /// A read or write failed.
    Io(String),
    /// The server's bytes broke the protocol.
    Protocol(ProtoError),
    /// The server's first line was not INFO.
    ExpectedInfo,
    /// The server requires TLS and no CA was given (`--nats-ca`).
    TlsNotConfigured,
    /// A `tls://` server whose INFO offers no TLS.
    TlsNotOffered,
    /// The TLS session failed (certificate, handshake).
    Tls(String),
    /// The server said `-ERR` (`Authorization Violation`, ...).
    Server(String),
    /// Our PINGs went unanswered.
    StaleConnection,
}

impl ConnError {
    /// True when the server refused our credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, ConnError::Server(t) if t.starts_with("Authorization Violation")
            || t.starts_with("Authentication"))
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Resolve(e) => write!(f, "cannot resolve host: {e}"),
            ConnError::Connect(e) => write!(f, "connect failed: {e}"),
            ConnError::Timeout(step) => write!(f, "timed out waiting for {step}"),
            ConnError::Closed => f.write_str("connection closed by the server"),
            ConnError::Io(e) => e.fmt(f),
            ConnError::Protocol(e) => write!(f, "protocol error: {e}"),
            ConnError::ExpectedInfo => {
                f.write_str("protocol error: the server did not start with INFO")
            }
            ConnError::TlsNotConfigured => f.write_str(
                "the server requires TLS; give the CA that signed its certificate (--nats-ca)",
            ),
            ConnError::TlsNotOffered => f.write_str("tls:// given but the server offers no TLS"),
            ConnError::Tls(e) => write!(f, "TLS: {e}"),
            ConnError::Server(text) => write!(f, "server error '{text}'"),
            ConnError::StaleConnection => f.write_str("stale connection: PINGs unanswered"),
        }
    }
}

impl std::error::Error for ConnError {}

/// Why a publish was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// A subject or header that cannot be sent.
    Invalid(EncodeError),
    /// Headers and payload over the server's `max_payload`.
    TooLarge {
        /// Bytes of headers and payload.
        bytes: usize,
        /// The server's limit.
        limit: usize,
    },
    /// The output buffer is at `max_buffered_bytes` (the server is slow or away).
    BufferFull {
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Invalid(e) => e.fmt(f),
            PublishError::TooLarge { bytes, limit } => {
                write!(
                    f,
                    "message of {bytes} bytes over the server's max_payload {limit}"
                )
            }
            PublishError::BufferFull { limit } => {
                write!(f, "NATS output buffer full ({limit} bytes)")
            }
        }
    }
}

impl std::error::Error for PublishError {}

/// What happened on the connection, drained with [`Client::poll_event`](super::client::Client::poll_event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Connected (again): subscriptions are replayed, queued publishes sent.
    Connected {
        /// The server (`nats://host:port`).
        server: String,
        /// Its INFO.
        info: Box<ServerInfo>,
    },
    /// A connection ended. Requests in flight will get no reply; publishes
    /// queued before it may or may not have reached the server.
    Disconnected {
        /// The server.
        server: String,
        /// Why.
        reason: ConnError,
    },
    /// An attempt to connect failed; the next server in turn is tried.
    ConnectFailed {
        /// The server.
        server: String,
        /// Why.
        reason: ConnError,
        /// When this server will be tried again.
        retry_in: Duration,
    },
    /// A message on one of the caller's subscriptions.
    Message {
        /// The subscription.
        sid: Sid,
        /// Its subject.
        subject: String,
        /// Where an answer goes.
        reply: Option<String>,
        /// The server's status, for messages it generated.
        status: Option<Status>,
        /// Its headers.
        headers: Headers,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// The reply to [`Client::request`](super::client::Client::request) `id` (a `503` status: no responders).
    Reply {
        /// The request.
        id: RequestId,
        /// The server's status, for replies it generated.
        status: Option<Status>,
        /// Its headers.
        headers: Headers,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// The server said `-ERR '<text>'`.
    ServerError(String),
}
