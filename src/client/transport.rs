//! The client's byte stream: plain TCP, or TLS (rustls) with `--tls`.
//!
//! [`client_config`] turns the `--tls` flags into a rustls configuration; the line
//! client and the load generator (`userbus bench --tls`) both build theirs here.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A connection to the server.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// What `--tls` needs: the CA to trust, and optionally a client certificate.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// PEM file of the CA that signed the server's certificate.
    pub cacert: std::path::PathBuf,
    /// PEM client certificate chain and key, for servers started with `--tls-ca`.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Transport {
    /// Wraps a connected socket, doing nothing or starting TLS for `host`.
    pub fn new(stream: TcpStream, host: &str, tls: Option<&TlsOptions>) -> io::Result<Transport> {
        match tls {
            None => Ok(Transport::Plain(stream)),
            Some(opts) => Transport::tls(stream, host, client_config(opts)?),
        }
    }

    /// Starts TLS for `host` over a connected, blocking socket with a configuration
    /// from [`client_config`], and finishes the handshake, so that a bad certificate
    /// fails here and not at the first command.
    pub fn tls(
        stream: TcpStream,
        host: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<Transport> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Transport::Tls(Box::new(tls)))
    }

    /// The socket and, for TLS, its session (with any plaintext it has buffered),
    /// for a caller that goes on driving them without blocking.
    pub fn into_parts(self) -> (TcpStream, Option<Box<rustls::ClientConnection>>) {
        match self {
            Transport::Plain(s) => (s, None),
            Transport::Tls(s) => {
                let (conn, sock) = s.into_parts();
                (sock, Some(Box::new(conn)))
            }
        }
    }

    /// The socket under the stream (for timeouts).
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(s) => &s.sock,
        }
    }
}

/// The rustls client configuration of the `--tls` flags: trust the CA of
/// `--cacert`, present `--cert`/`--key` when given. Errors name the flag and file.
pub fn client_config(opts: &TlsOptions) -> io::Result<Arc<rustls::ClientConfig>> {
    let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} {}: {e}", path.display()),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&opts.cacert)
        .map_err(|e| bad("cannot read --cacert", &opts.cacert, &e))?
    {
        let c = c.map_err(|e| bad("cannot parse --cacert", &opts.cacert, &e))?;
        roots
            .add(c)
            .map_err(|e| bad("bad certificate in --cacert", &opts.cacert, &e))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "no certificate in --cacert",
            &opts.cacert,
            &"expected PEM \"BEGIN CERTIFICATE\" blocks",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots);
    let config = match &opts.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad("cannot read --cert", cert, &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("cannot parse --cert", cert, &e))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| bad("cannot read --key", key, &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(io::Error::other)?
        }
    };
    Ok(Arc::new(config))
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}
