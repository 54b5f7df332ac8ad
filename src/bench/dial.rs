//! Opening the connections of a run: resolving the host to the one address every
//! connection uses, the blocking connect (and, with `--tls`, the handshake) that
//! makes a bad address or certificate fail before the load starts, the SUBSCRIBE
//! hand-shake of fan-out subscribers, and INFO reads before and after the run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;

use super::{CONNECT_TIMEOUT, Error, FANOUT_CHANNEL, scan};
use crate::client::transport::Transport;

/// Opens the connections of a run: one address, and TLS when asked for.
#[derive(Debug, Clone)]
pub struct Dialer {
    /// The server's address.
    pub addr: SocketAddr,
    /// The host name as given, which a TLS server's certificate must match.
    pub host: String,
    /// The TLS configuration, with `--tls`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Dialer {
    /// Resolves `host` and keeps the first of its addresses that takes a connection
    /// (`localhost` may name `::1` first while the server listens on 127.0.0.1);
    /// returns that connection too.
    pub fn resolve(
        host: &str,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<(Dialer, Transport), Error> {
        let target = format!("{host}:{port}");
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|source| Error::Resolve {
                target: target.clone(),
                source,
            })?
            .collect();
        let mut failure = Error::Resolve {
            target,
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        };
        for addr in addrs {
            let dialer = Dialer {
                addr,
                host: host.to_string(),
                tls: tls.clone(),
            };
            match dialer.open() {
                Ok(t) => return Ok((dialer, t)),
                Err(e) => failure = e,
            }
        }
        Err(failure)
    }

    /// Opens one blocking connection with Nagle off, past its TLS handshake when
    /// there is one.
    pub fn open(&self) -> Result<Transport, Error> {
        let addr = self.addr;
        let failed = |source| Error::Connect { addr, source };
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(failed)?;
        s.set_nodelay(true).map_err(failed)?;
        let Some(config) = &self.tls else {
            return Ok(Transport::Plain(s));
        };
        s.set_read_timeout(Some(CONNECT_TIMEOUT)).map_err(failed)?;
        s.set_write_timeout(Some(CONNECT_TIMEOUT)).map_err(failed)?;
        let t = Transport::tls(s, &self.host, Arc::clone(config)).map_err(|e| {
            failed(std::io::Error::new(
                e.kind(),
                format!("TLS handshake failed: {e}"),
            ))
        })?;
        t.socket().set_read_timeout(None).map_err(failed)?;
        t.socket().set_write_timeout(None).map_err(failed)?;
        Ok(t)
    }
}

/// Opens a connection that subscribed to [`FANOUT_CHANNEL`] (its confirmation read).
pub fn subscribe(dialer: &Dialer) -> Result<Transport, Error> {
    let mut s = dialer.open()?;
    let io = |e: std::io::Error| Error::Subscribe(e.to_string());
    s.socket()
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(io)?;
    let req = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{FANOUT_CHANNEL}\r\n",
        FANOUT_CHANNEL.len()
    );
    s.write_all(req.as_bytes()).map_err(io)?;
    let mut scanner = scan::Scanner::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).map_err(io)?;
        if n == 0 {
            return Err(Error::Subscribe("the server closed the connection".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let (used, outcome) = scanner
            .next(&buf)
            .map_err(|e| Error::Subscribe(e.to_string()))?;
        match outcome {
            Some(scan::Outcome::Value) if used == buf.len() => break,
            Some(scan::Outcome::Value) => {
                return Err(Error::Subscribe("unexpected bytes after the reply".into()));
            }
            Some(_) => {
                return Err(Error::Subscribe(format!(
                    "the server refused: {}",
                    String::from_utf8_lossy(&buf).trim_end()
                )));
            }
            None => {}
        }
    }
    s.socket().set_read_timeout(None).map_err(io)?;
    Ok(s)
}

/// Reads one numeric `field` of an INFO `section` over a fresh connection; `None`
/// when the server does not report it (or is not userbus).
pub fn info_field(dialer: &Dialer, section: &str, field: &str) -> Option<u64> {
    let mut s = dialer.open().ok()?;
    s.socket().set_read_timeout(Some(CONNECT_TIMEOUT)).ok()?;
    s.write_all(format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len()).as_bytes())
        .ok()?;
    let mut r = BufReader::new(s);
    let mut header = String::new();
    r.read_line(&mut header).ok()?;
    let len: usize = header.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0; len + 2];
    r.read_exact(&mut body).ok()?;
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}
