//! One connection to one server: the socket, its TLS session once upgraded, the
//! bytes read and not yet parsed, and the bytes queued and not yet written.
//!
//! The link moves bytes and never blocks: reads and writes stop at `WouldBlock`,
//! and what the bytes mean is the client's business ([`super::client`]). With TLS,
//! records are read and decrypted until plaintext comes out or the socket would
//! block; plaintext is handed to the session a record's worth at a time and its
//! records written until the socket would block.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use super::event::ConnError;
use super::proto::{Parser, ServerOp};
use crate::error::Error;

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Plaintext handed to a TLS session per write (about one record), so data is
/// encrypted no faster than the socket takes it.
const TLS_PLAINTEXT_CHUNK_BYTES: usize = 16 * 1024;

/// The rustls client configuration for `tls://` servers and servers whose INFO
/// requires TLS: trusts the CA certificates in `ca_file` (PEM), ring provider.
pub fn tls_config(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, Error> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!("{what} --nats-ca {}: {e}", ca_file.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_file).map_err(|e| bad("cannot read", &e))? {
        let c = c.map_err(|e| bad("cannot parse", &e))?;
        roots.add(c).map_err(|e| bad("bad certificate in", &e))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "no certificate in",
            &"expected PEM \"BEGIN CERTIFICATE\" blocks",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A socket to one server and its buffers.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    /// Bytes read; those before `parsed` are consumed.
    input: Vec<u8>,
    parsed: usize,
    parser: Parser,
    /// Bytes queued; those before `sent` are written (or handed to TLS).
    out: Vec<u8>,
    sent: usize,
    /// What the socket is registered for, once registered.
    interest: Option<Interest>,
}

impl Link {
    /// Starts a non-blocking connect to `addr`; it completes (or fails) at a
    /// later readiness event, see [`Link::connect_done`].
    pub fn connect(addr: SocketAddr) -> Result<Link, ConnError> {
        let stream = TcpStream::connect(addr).map_err(|e| ConnError::Connect(e.to_string()))?;
        // Acks are small and awaited: do not hold them back for coalescing.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("nats: {addr}: set TCP_NODELAY failed: {e}");
        }
        Ok(Link {
            stream,
            tls: None,
            input: Vec::new(),
            parsed: 0,
            parser: Parser::new(),
            out: Vec::new(),
            sent: 0,
            interest: None,
        })
    }

    /// Registers the socket for `interest`, or reregisters it when that changed.
    pub fn set_interest(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match self.interest {
            Some(now) if now == interest => return Ok(()),
            Some(_) => registry.reregister(&mut self.stream, token, interest)?,
            None => registry.register(&mut self.stream, token, interest)?,
        }
        self.interest = Some(interest);
        Ok(())
    }

    /// Takes the socket out of the poll (before it is dropped).
    pub fn deregister(&mut self, registry: &Registry) {
        if self.interest.take().is_some()
            && let Err(e) = registry.deregister(&mut self.stream)
        {
            log::debug!("nats: deregister failed: {e}");
        }
    }

    /// True once the TCP connect has completed; an error when it failed. A
    /// readiness event can come before completion (then `false`).
    pub fn connect_done(&mut self) -> Result<bool, ConnError> {
        let failed = |e: io::Error| ConnError::Connect(e.to_string());
        if let Some(e) = self.stream.take_error().map_err(failed)? {
            return Err(failed(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(failed(e)),
        }
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
        let session = rustls::ClientConnection::new(config, name)
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        self.tls = Some(Box::new(session));
        Ok(())
    }

    /// True while a TLS handshake is under way.
    pub fn tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Sets the parser's payload limit (INFO's `max_payload`).
    pub fn set_max_payload(&mut self, bytes: usize) {
        self.parser.set_max_payload(bytes);
    }

    /// One read into the input buffer: `Some(n)` bytes of plaintext, `None` when
    /// the socket would block. The server closing is an error.
    pub fn read_some(&mut self) -> Result<Option<usize>, ConnError> {
        // Consumed bytes go before each read; what remains is at most one partial
        // operation, which the parser's limits bound.
        if self.parsed > 0 {
            self.input.drain(..self.parsed);
            self.parsed = 0;
        }
        let filled = self.input.len();
        self.input.resize(filled + READ_CHUNK_BYTES, 0);
        let got = match self.tls.as_mut() {
            None => read_plain(&mut self.stream, &mut self.input[filled..]),
            Some(tls) => read_tls(tls, &mut self.stream, &mut self.input[filled..]),
        };
        self.input
            .truncate(filled + got.as_ref().map_or(0, |n| n.unwrap_or(0)));
        got
    }

    /// The next complete operation in the input buffer, if there is one.
    pub fn next_op(&mut self) -> Result<Option<ServerOp>, ConnError> {
        match self.parser.parse(&self.input[self.parsed..]) {
            Ok(Some((op, n))) => {
                self.parsed += n;
                Ok(Some(op))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(ConnError::Protocol(e)),
        }
    }

    /// The output buffer, for the encoders to append to.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Queued bytes not yet written (or handed to TLS).
    pub fn unsent(&self) -> usize {
        self.out.len() - self.sent
    }

    /// True while queued bytes or TLS records wait for the socket.
    pub fn wants_write(&self) -> bool {
        self.sent < self.out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes until everything is out or the socket would block.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        let io_err = |e: io::Error| ConnError::Io(format!("write: {e}"));
        loop {
            if let Some(tls) = self.tls.as_mut() {
                if tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(_) => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(io_err(e)),
                    }
                }
                if self.sent == self.out.len() || tls.is_handshaking() {
                    break;
                }
                let end = self.out.len().min(self.sent + TLS_PLAINTEXT_CHUNK_BYTES);
                let n = tls
                    .writer()
                    .write(&self.out[self.sent..end])
                    .map_err(io_err)?;
                if n == 0 && !tls.wants_write() {
                    break;
                }
                self.sent += n;
            } else {
                if self.sent == self.out.len() {
                    break;
                }
                match self.stream.write(&self.out[self.sent..]) {
                    Ok(0) => return Err(io_err(ErrorKind::WriteZero.into())),
                    Ok(n) => self.sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        } else if self.sent > self.out.len() / 2 {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        Ok(())
    }
}

fn read_plain(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Option<usize>, ConnError> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Err(ConnError::Closed),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ConnError::Io(format!("read: {e}"))),
        }
    }
}

/// Plaintext the session already holds, else records from the socket until some
/// plaintext comes out of them or the socket would block.
fn read_tls(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    buf: &mut [u8],
) -> Result<Option<usize>, ConnError> {
    loop {
        match tls.reader().read(buf) {
            Ok(0) => return Err(ConnError::Closed),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(ConnError::Closed),
            Err(e) => return Err(ConnError::Tls(e.to_string())),
        }
        match tls.read_tls(stream) {
            Ok(0) => return Err(ConnError::Closed),
            Ok(_) => {
                tls.process_new_packets()
                    .map_err(|e| ConnError::Tls(e.to_string()))?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ConnError::Io(format!("read: {e}"))),
        }
    }
}
