//! One connection to one NATS server: the bytes it moves ([`Outbound`]: the
//! socket, its TLS session once upgraded, the input and output buffers) and the
//! parser that reads NATS operations out of its input.
//!
//! The link never blocks: reads and writes stop at `WouldBlock`, and what the
//! operations mean is the client's business ([`super::client`]).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;

use super::event::ConnError;
use super::proto::{Parser, ServerOp};
use crate::conn::outbound::{self, Outbound, OutboundError};
use crate::error::Error;

/// The rustls client configuration for `tls://` servers and servers whose INFO
/// requires TLS: trusts the CA certificates in `ca_file` (PEM), ring provider.
pub fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, Error> {
    outbound::client_config(outbound::pem_roots(ca_file, "--nats-ca")?)
}

/// A socket to one server, its buffers and the NATS parser over its input.
#[derive(Debug)]
pub struct Link {
    bytes: Outbound,
    parser: Parser,
}

impl From<OutboundError> for ConnError {
    fn from(e: OutboundError) -> Self {
        match e {
            OutboundError::Connect(e) => ConnError::Connect(e),
            OutboundError::Closed => ConnError::Closed,
            OutboundError::Io(e) => ConnError::Io(e),
            OutboundError::Tls(e) => ConnError::Tls(e),
        }
    }
}

impl Link {
    /// Starts a non-blocking connect to `addr`; it completes (or fails) at a
    /// later readiness event, see [`Link::connect_done`].
    pub fn connect(addr: SocketAddr) -> Result<Link, ConnError> {
        Ok(Link {
            bytes: Outbound::connect(addr)?,
            parser: Parser::new(),
        })
    }

    /// Registers the socket for `interest`, or reregisters it when that changed.
    pub fn set_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.bytes.set_interest(registry, token, interest)
    }

    /// Takes the socket out of the poll (before it is dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        self.bytes.deregister(registry);
    }

    /// True once the TCP connect has completed; an error when it failed. A
    /// readiness event can come before completion (then `false`).
    pub fn connect_done(&mut self) -> Result<bool, ConnError> {
        Ok(self.bytes.connect_done()?)
    }

    /// Upgrades to TLS (after the server's plaintext INFO), checking the server's
    /// certificate against `host`.
    pub fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> Result<(), ConnError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| ConnError::Tls(format!("server name {host:?}: {e}")))?;
        Ok(self.bytes.start_tls(config, name)?)
    }

    /// True while a TLS handshake is under way.
    pub fn tls_handshaking(&self) -> bool {
        self.bytes.tls_handshaking()
    }

    /// Sets the parser's payload limit (INFO's `max_payload`).
    pub fn set_max_payload(&mut self, bytes: usize) {
        self.parser.set_max_payload(bytes);
    }

    /// One read into the input buffer: `Some(n)` bytes of plaintext, `None` when
    /// the socket would block. The server closing is an error. What stays unread
    /// is at most one partial operation, which the parser's limits bound.
    pub fn read_some(&mut self) -> Result<Option<usize>, ConnError> {
        Ok(self.bytes.read_some()?)
    }

    /// The next complete operation in the input buffer, if there is one.
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, ConnError> {
        match self.parser.parse(self.bytes.input()) {
            Ok(Some((op, n))) => {
                self.bytes.consume(n);
                Ok(Some(op))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(ConnError::Protocol(e)),
        }
    }

    /// The output buffer, for the encoders to append to.
    pub fn out(&mut self) -> &mut Vec<u8> {
        self.bytes.out()
    }

    /// Queued bytes not yet written (or handed to TLS).
    pub fn unsent(&self) -> usize {
        self.bytes.unsent()
    }

    /// True while queued bytes or TLS records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.bytes.wants_write()
    }

    /// Writes until everything is out or the socket would block.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        Ok(self.bytes.flush()?)
    }
}
