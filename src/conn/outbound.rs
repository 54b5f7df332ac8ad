//! One outbound connection's bytes, for any client protocol: the non-blocking
//! socket, its TLS session once upgraded, the bytes read and not yet consumed, and
//! the bytes queued and not yet written.
//!
//! It moves bytes and never blocks: reads and writes stop at `WouldBlock`, and
//! what the bytes mean is the protocol's business (the NATS link, the webhook
//! transport). With TLS, records are read and decrypted until plaintext comes out
//! or the socket would block; plaintext is handed to the session a record's worth
//! at a time and its records written until the socket would block.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::error::Error;

/// The CA certificates in the PEM file `path`, for the flag `flag` that named it
/// (`--nats-ca`, `--webhook-ca`): at least one, or a configuration error naming both.
pub fn pem_roots(path: &Path, flag: &str) -> Result<rustls::RootCertStore, Error> {
    let bad = |what: &str, e: &dyn fmt::Display| {
        Error::Config(format!("{what} {flag} {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
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
    Ok(roots)
}

/// A rustls client configuration trusting `roots`, with the ring provider and
/// its safe default protocol versions.
pub fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Plaintext handed to a TLS session per write (about one record), so data is
/// encrypted no faster than the socket takes it.
const TLS_PLAINTEXT_CHUNK_BYTES: usize = 16 * 1024;

/// Why moving bytes failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundError {
    /// The TCP connect failed (refused, unreachable).
    Connect(String),
    /// The peer closed the connection.
    Closed,
    /// A read, write or registration failed (the text names which).
    Io(String),
    /// The TLS session failed (certificate, handshake, bad record).
    Tls(String),
}

impl fmt::Display for OutboundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboundError::Connect(e) => write!(f, "connect failed: {e}"),
            OutboundError::Closed => f.write_str("connection closed by the peer"),
            OutboundError::Io(e) => e.fmt(f),
            OutboundError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

/// A socket to one server and its buffers.
#[derive(Debug)]
pub struct Outbound {
    stream: TcpStream,
    tls: Option<Box<rustls::ClientConnection>>,
    /// Bytes read; those before `consumed` are done with.
    input: Vec<u8>,
    consumed: usize,
    /// Bytes queued; those before `sent` are written (or handed to TLS).
    out: Vec<u8>,
    sent: usize,
    /// What the socket is registered for, once registered.
    interest: Option<Interest>,
}

impl Outbound {
    /// Starts a non-blocking connect to `addr`; it completes (or fails) at a
    /// later readiness event, see [`Outbound::connect_done`].
    pub fn connect(addr: SocketAddr) -> Result<Outbound, OutboundError> {
        let stream = TcpStream::connect(addr).map_err(|e| OutboundError::Connect(e.to_string()))?;
        // Requests are small and their answers awaited: do not hold them back for
        // coalescing.
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("outbound: {addr}: set TCP_NODELAY failed: {e}");
        }
        Ok(Outbound {
            stream,
            tls: None,
            input: Vec::new(),
            consumed: 0,
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
            log::debug!("outbound: deregister failed: {e}");
        }
    }

    /// True once the TCP connect has completed; an error when it failed. A
    /// readiness event can come before completion (then `false`).
    pub fn connect_done(&mut self) -> Result<bool, OutboundError> {
        let failed = |e: io::Error| OutboundError::Connect(e.to_string());
        if let Some(e) = self.stream.take_error().map_err(failed)? {
            return Err(failed(e));
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(failed(e)),
        }
    }

    /// Upgrades to TLS, checking the server's certificate against `name`. The
    /// handshake runs in the following reads and flushes.
    pub fn start_tls(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<(), OutboundError> {
        let session = rustls::ClientConnection::new(config, name)
            .map_err(|e| OutboundError::Tls(e.to_string()))?;
        self.tls = Some(Box::new(session));
        Ok(())
    }

    /// True while a TLS handshake is under way.
    pub fn tls_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// One read into the input buffer: `Some(n)` bytes of plaintext, `None` when
    /// the socket would block. The peer closing is [`OutboundError::Closed`].
    pub fn read_some(&mut self) -> Result<Option<usize>, OutboundError> {
        // Consumed bytes go before each read; what remains is what the protocol
        // has not consumed yet, which its own limits bound.
        if self.consumed > 0 {
            self.input.drain(..self.consumed);
            self.consumed = 0;
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

    /// The bytes read and not yet consumed.
    pub fn input(&self) -> &[u8] {
        &self.input[self.consumed..]
    }

    /// Marks the first `n` bytes of [`Outbound::input`] as consumed.
    pub fn consume(&mut self, n: usize) {
        self.consumed = self.input.len().min(self.consumed + n);
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
    pub fn flush(&mut self) -> Result<(), OutboundError> {
        let io_err = |e: io::Error| OutboundError::Io(format!("write: {e}"));
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

fn read_plain(stream: &mut TcpStream, buf: &mut [u8]) -> Result<Option<usize>, OutboundError> {
    loop {
        match stream.read(buf) {
            Ok(0) => return Err(OutboundError::Closed),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(OutboundError::Io(format!("read: {e}"))),
        }
    }
}

/// Plaintext the session already holds, else records from the socket until some
/// plaintext comes out of them or the socket would block.
fn read_tls(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    buf: &mut [u8],
) -> Result<Option<usize>, OutboundError> {
    loop {
        match tls.reader().read(buf) {
            Ok(0) => return Err(OutboundError::Closed),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Err(OutboundError::Closed),
            Err(e) => return Err(OutboundError::Tls(e.to_string())),
        }
        match tls.read_tls(stream) {
            Ok(0) => return Err(OutboundError::Closed),
            Ok(_) => {
                tls.process_new_packets()
                    .map_err(|e| OutboundError::Tls(e.to_string()))?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(OutboundError::Io(format!("read: {e}"))),
        }
    }
}
