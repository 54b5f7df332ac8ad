//! TLS: RESP and HTTP over rustls on their own ports, with certificates made at run
//! time (rcgen), optional client certificates, and bad peers that must not disturb
//! the server.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use common::{TestServer, config_at, connect, exchange, free_port, userbus, words};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A throwaway CA with a server certificate for localhost/127.0.0.1 and a client
/// certificate, all written as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client.example".into()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let write = |name: &str, pem: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, pem).unwrap();
            p
        };
        Pki {
            ca: write("ca.pem", ca.pem()),
            server_cert: write("server.pem", server.pem()),
            server_key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            _dir: dir,
        }
    }

    /// A client configuration trusting the CA, presenting the client certificate
    /// when `with_cert`.
    fn client(&self, with_cert: bool) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_cert {
            let chain = CertificateDer::pem_file_iter(&self.client_cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&self.client_key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(config)
    }
}

/// A fresh PKI and a server with RESP over TLS and HTTPS on free ports, its
/// certificate from that PKI; clients must present a certificate when `client_ca`.
fn start(client_ca: bool) -> (Pki, TestServer) {
    let pki = Pki::new();
    let (tls, https) = (free_port(), free_port());
    let server = TestServer::start_with(
        |c| {
            c.tls_port = tls;
            c.https_port = https;
            c.tls_cert = Some(pki.server_cert.clone());
            c.tls_key = Some(pki.server_key.clone());
            c.tls_ca = client_ca.then(|| pki.ca.clone());
        },
        |b| b,
    );
    (pki, server)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS client of `port` on 127.0.0.1, checking the certificate for localhost.
fn connect_tls(port: u16, config: Arc<rustls::ClientConfig>) -> Tls {
    let sock = connect(("127.0.0.1", port));
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// A TLS client of `server`'s RESP port trusting `pki`'s CA, presenting the
/// client certificate when `with_cert`.
fn tls_client(pki: &Pki, server: &TestServer, with_cert: bool) -> Tls {
    connect_tls(server_tls_port(server), pki.client(with_cert))
}

#[test]
fn resp_over_tls_serves_commands_and_shares_the_registry() {
    let (pki, server) = start(false);
    let mut s = tls_client(&pki, &server, false);
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n");
    exchange(
        &mut s,
        b"*2\r\n$8\r\nREGISTER\r\n$5\r\nalice\r\n",
        b":1\r\n",
    );
    // A large reply crosses several TLS records.
    let big = "x".repeat(100_000);
    let want = format!("${}\r\n{big}\r\n", big.len());
    let req = format!("*2\r\n$4\r\nECHO\r\n${}\r\n{big}\r\n", big.len());
    exchange(&mut s, req.as_bytes(), want.as_bytes());
    // The plain port sees the same registry.
    let mut c = server.redis();
    let n: i64 = redis::cmd("USERCOUNT").query(&mut c).unwrap();
    assert_eq!(n, 1);
    exchange(&mut s, b"QUIT\r\n", b"+OK\r\n");
    let mut rest = Vec::new();
    // The server ends with close_notify: a clean end of stream.
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
}

#[test]
fn https_serves_the_routes() {
    let (pki, server) = start(false);
    let mut s = connect_tls(server_https_port(&server), pki.client(false));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nok\n"), "{out}");
}

#[test]
fn client_certificates_are_required_with_a_ca() {
    let (pki, server) = start(true);
    let mut ok = tls_client(&pki, &server, true);
    exchange(&mut ok, b"PING\r\n", b"+PONG\r\n");
    let mut denied = tls_client(&pki, &server, false);
    let res = denied
        .write_all(b"PING\r\n")
        .and_then(|()| denied.read(&mut [0u8; 16]));
    assert!(
        matches!(res, Err(_) | Ok(0)),
        "a client without a certificate must not be served: {res:?}"
    );
    // The server goes on serving the one with a certificate.
    exchange(&mut ok, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn plain_text_on_the_tls_port_is_dropped_without_harm() {
    let (pki, server) = start(false);
    let port = server_tls_port(&server);
    let mut raw = connect(("127.0.0.1", port));
    raw.write_all(b"PING\r\nPING\r\nPING\r\n").unwrap();
    let mut junk = Vec::new();
    let _ = raw.read_to_end(&mut junk);
    assert!(!junk.windows(5).any(|w| w == b"+PONG"), "no command ran");
    let mut s = connect_tls(port, pki.client(false));
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn tls_ports_need_a_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = userbus::Server::builder(userbus::Config {
        tls_port: free_port(),
        ..config_at(&dir.path().join("db"))
    })
    .build()
    .err()
    .expect("refused");
    assert!(err.to_string().contains("--tls-cert"), "{err}");
    let missing = userbus::Server::builder(userbus::Config {
        tls_port: free_port(),
        tls_cert: Some(dir.path().join("nope.pem")),
        tls_key: Some(dir.path().join("nope.key")),
        ..config_at(&dir.path().join("db"))
    })
    .build()
    .err()
    .expect("refused");
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
}

/// The port of the RESP-over-TLS listener.
fn server_tls_port(server: &TestServer) -> u16 {
    config_port(server, "tls-port")
}

/// The port of the HTTPS listener.
fn server_https_port(server: &TestServer) -> u16 {
    config_port(server, "https-port")
}

/// The bound port of the listener `key`, as CONFIG GET reports it; the listener
/// must be on.
fn config_port(server: &TestServer, key: &str) -> u16 {
    let mut c = server.redis();
    let kv: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(key)
        .query(&mut c)
        .unwrap();
    let port = kv.get(1).and_then(|p| p.parse::<u16>().ok());
    port.filter(|&p| p != 0).expect("listener on")
}

#[test]
fn the_line_client_speaks_tls() {
    let (pki, server) = start(true);
    let flags = tls_flags(&pki, &server);
    let cert = pki.client_cert.to_str().unwrap();
    let key = pki.client_key.to_str().unwrap();
    let run = |extra: &[&str]| {
        userbus()
            .arg("cli")
            .args(&flags)
            .args(extra)
            .output()
            .expect("run the cli")
    };
    let ok = run(&["--cert", cert, "--key", key, "REGISTER", "tls-user"]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "(integer) 1\n");
    // Without the client certificate the server refuses the handshake.
    let denied = run(&["PING"]);
    assert!(!denied.status.success(), "{denied:?}");
}

/// The flags that point a client at `server`'s TLS port through `localhost`,
/// trusting `pki`'s CA: `--tls --cacert <ca> -h localhost -p <port>`.
fn tls_flags(pki: &Pki, server: &TestServer) -> Vec<String> {
    let ca = pki.ca.to_str().expect("UTF-8 path");
    let port = server_tls_port(server).to_string();
    ["--tls", "--cacert", ca, "-h", "localhost", "-p", &port]
        .map(String::from)
        .to_vec()
}

/// Runs `userbus bench --json -q`, then `flags`, then the words of `line`.
fn bench(flags: &[String], line: &str) -> Output {
    userbus()
        .args(["bench", "-q", "--json"])
        .args(flags)
        .args(words(line))
        .output()
        .expect("run userbus bench")
}

fn bench_report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_load_generator_speaks_tls() {
    let (pki, server) = start(false);
    let flags = tls_flags(&pki, &server);
    let out = bench(&flags, "-t register -n 2000 -P 16");
    let r = bench_report(&out);
    assert_eq!(r["requests"], 2000, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["tls"], true, "{r}");
    // Over TLS the run still reads the server's commits (INFO over TLS too).
    assert!(r["commits"].as_u64().is_some_and(|c| c > 0), "{r}");
    let n: i64 = redis::cmd("USERCOUNT").query(&mut server.redis()).unwrap();
    assert_eq!(n, 2000);

    // Large pipelines of large replies cross many records both ways.
    let r = bench_report(&bench(&flags, "-t lookup -n 5000 -c 3 -P 500 -r 2000"));
    assert_eq!(r["requests"], 5000, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
}

#[test]
fn the_load_generator_needs_a_ca_and_checks_the_certificate() {
    let (_pki, server) = start(false);
    let port = server_tls_port(&server).to_string();
    let without_ca = ["--tls", "-h", "localhost", "-p", &port].map(String::from);
    let out = bench(&without_ca, "-n 10");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cacert"), "{err}");

    // A CA that did not sign the server's certificate: refused at connect.
    let other = Pki::new();
    let out = bench(&tls_flags(&other, &server), "-n 10");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS handshake failed"), "{err}");
}

#[test]
fn the_load_generator_presents_a_client_certificate() {
    let (pki, server) = start(true);
    let cert = pki.client_cert.to_str().unwrap();
    let key = pki.client_key.to_str().unwrap();
    let mut with_cert = tls_flags(&pki, &server);
    with_cert.extend(["--cert", cert, "--key", key].map(String::from));
    let r = bench_report(&bench(&with_cert, "-n 500 -c 5"));
    assert_eq!(r["requests"], 500, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    // Without one, the server ends the handshake: no request completes.
    let out = bench(&tls_flags(&pki, &server), "-n 10 -c 1");
    assert!(!out.status.success(), "{out:?}");
}
