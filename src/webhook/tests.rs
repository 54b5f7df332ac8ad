//! The transport against real sockets: each test runs its own `mio::Poll` loop
//! (bounded by a deadline) against a scripted HTTP server on a loopback port,
//! served by blocking std threads, plain or through a rustls server whose
//! certificate an rcgen CA signed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::transport::{Done, Outcome, Request, Tls, Transport, TransportConfig, Url, tls_config};

/// Bound on any one wait in these tests.
const WAIT: Duration = Duration::from_secs(10);
/// The body cap the tests' transports keep.
const MAX_BODY: usize = 64;

/// What the scripted server does with a request.
#[derive(Clone)]
enum Answer {
    /// Writes these bytes and reads the next request on the same connection.
    Bytes(Vec<u8>),
    /// Writes these bytes, then closes the connection.
    BytesThenClose(Vec<u8>),
    /// Reads the request and never answers (holds the connection open).
    Silent,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection (0, 1, ...) carried it.
    conn: usize,
    /// Its head and body.
    bytes: Vec<u8>,
}

/// A loopback HTTP server answering the n-th request (over all connections) with
/// `answers[n]` (the last one again after the list).
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

type Wrap = Arc<dyn Fn(TcpStream) -> Box<dyn Stream> + Send + Sync>;

impl Server {
    fn start(answers: Vec<Answer>) -> Server {
        Server::start_with(answers, Arc::new(|s| Box::new(s) as Box<dyn Stream>))
    }

    fn start_with(answers: Vec<Answer>, wrap: Wrap) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for (conn, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let (answers, log, wrap) = (answers.clone(), Arc::clone(&log), Arc::clone(&wrap));
                std::thread::spawn(move || serve(wrap(stream), conn, &answers, &log));
            }
        });
        Server { addr, seen }
    }

    fn url(&self, scheme: &str, path: &str) -> Url {
        Url::parse(&format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(mut stream: Box<dyn Stream>, conn: usize, answers: &[Answer], log: &Mutex<Vec<Seen>>) {
    loop {
        let Some(bytes) = read_request(&mut stream) else {
            return;
        };
        let n = {
            let mut log = log.lock().unwrap();
            log.push(Seen { conn, bytes });
            log.len() - 1
        };
        match &answers[n.min(answers.len() - 1)] {
            Answer::Bytes(b) => {
                if stream.write_all(b).and_then(|()| stream.flush()).is_err() {
                    return;
                }
            }
            Answer::BytesThenClose(b) => {
                let _ = stream.write_all(b).and_then(|()| stream.flush());
                return;
            }
            Answer::Silent => {
                std::thread::sleep(WAIT);
                return;
            }
        }
    }
}

/// Reads one request (head, then a Content-Length body); `None` at the close.
fn read_request(stream: &mut dyn Stream) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        bytes.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    bytes.extend_from_slice(&body);
    Some(bytes)
}

fn ok(body: &str) -> Answer {
    Answer::Bytes(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn config(allow_private: bool) -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_millis(500),
        allow_private,
        tls: Tls::System,
        max_response_body: MAX_BODY,
    }
}

/// The test loop's waker token (the resolver fires the waker).
const WAKER: Token = Token(usize::MAX - 2);

/// A transport and the poll loop that drives it.
struct Driver {
    poll: Poll,
    events: Events,
    transport: Transport,
    /// Requests ended and not yet taken by `done`.
    ended: Vec<Done>,
}

impl Driver {
    fn new(config: TransportConfig) -> Driver {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER).unwrap());
        Driver {
            poll,
            events: Events::with_capacity(64),
            transport: Transport::new(config, waker),
            ended: Vec::new(),
        }
    }

    fn start(&mut self, endpoint: u64, url: Url) {
        let request = Request {
            url: Arc::new(url),
            headers: vec![("webhook-id", format!("msg_{endpoint}").into())],
            body: br#"{"kind":"user.registered"}"#.to_vec(),
        };
        self.transport
            .start(self.poll.registry(), endpoint, request, Instant::now());
    }

    /// Runs the loop until a request ends.
    fn done(&mut self) -> Done {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = Instant::now();
            self.transport
                .expire(self.poll.registry(), now, &mut self.ended);
            if !self.ended.is_empty() {
                return self.ended.remove(0);
            }
            assert!(now < deadline, "no Done in {WAIT:?}");
            let timeout = self
                .transport
                .next_deadline()
                .map_or(deadline, |d| d.min(deadline))
                .saturating_duration_since(now);
            self.poll.poll(&mut self.events, Some(timeout)).unwrap();
            for event in &self.events {
                if event.token() == WAKER {
                    self.transport
                        .woken(self.poll.registry(), Instant::now(), &mut self.ended);
                    continue;
                }
                assert!(Transport::owns(event.token()), "{:?}", event.token());
                self.transport
                    .ready(self.poll.registry(), event, Instant::now(), &mut self.ended);
            }
        }
    }

    fn run(&mut self, endpoint: u64, url: Url) -> Outcome {
        self.start(endpoint, url);
        let done = self.done();
        assert!(
            self.ended.is_empty(),
            "one request, one Done: {:?}",
            self.ended
        );
        assert_eq!(done.endpoint, endpoint);
        assert_eq!(self.transport.in_flight(), 0);
        done.outcome
    }
}

fn response(status: u16, body: &str) -> Outcome {
    Outcome::Response {
        status,
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn a_200_with_content_length_and_the_request_as_sent() {
    let server = Server::start(vec![ok("thanks")]);
    let mut d = Driver::new(config(true));
    assert_eq!(
        d.run(1, server.url("http", "/hook?a=1")),
        response(200, "thanks")
    );
    let seen = server.seen();
    let text = String::from_utf8(seen[0].bytes.clone()).unwrap();
    let port = server.addr.port();
    assert_eq!(
        text,
        format!(
            "POST /hook?a=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 26\r\n\
             Connection: keep-alive\r\nwebhook-id: msg_1\r\n\r\n{{\"kind\":\"user.registered\"}}"
        )
    );
}

#[test]
fn a_chunked_body_is_decoded() {
    let server = Server::start(vec![Answer::Bytes(
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            .to_vec(),
    )]);
    let mut d = Driver::new(config(true));
    assert_eq!(d.run(1, server.url("http", "/")), response(202, "abcde"));
    // Chunked framing keeps the connection.
    assert_eq!(d.run(1, server.url("http", "/")), response(202, "abcde"));
    assert!(server.seen().iter().all(|s| s.conn == 0));
}

#[test]
fn keep_alive_reuses_the_connection_per_endpoint() {
    let server = Server::start(vec![ok("a"), ok("b"), ok("c")]);
    let mut d = Driver::new(config(true));
    assert_eq!(d.run(1, server.url("http", "/")), response(200, "a"));
    assert_eq!(d.run(1, server.url("http", "/")), response(200, "b"));
    // Another endpoint has a connection of its own.
    assert_eq!(d.run(2, server.url("http", "/")), response(200, "c"));
    let conns: Vec<usize> = server.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0, 1]);
}

#[test]
fn a_connection_the_server_closed_while_idle_is_replaced_once() {
    let closing = |body: &str| {
        let Answer::Bytes(b) = ok(body) else {
            unreachable!()
        };
        Answer::BytesThenClose(b)
    };
    let server = Server::start(vec![closing("first"), ok("second")]);
    let mut d = Driver::new(config(true));
    assert_eq!(d.run(1, server.url("http", "/")), response(200, "first"));
    // The close lands while nothing polls: the transport still holds the
    // connection as idle, writes the request on it, and must resend it fresh.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.run(1, server.url("http", "/")), response(200, "second"));
    let conns: Vec<usize> = server.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 1]);

    // Noticed by a poll while idle: the next request opens a new connection.
    let server = Server::start(vec![closing("one"), ok("two")]);
    assert_eq!(d.run(3, server.url("http", "/")), response(200, "one"));
    let mut events = Events::with_capacity(8);
    let mut done = Vec::new();
    d.poll
        .poll(&mut events, Some(Duration::from_millis(200)))
        .unwrap();
    for event in &events {
        d.transport
            .ready(d.poll.registry(), event, Instant::now(), &mut done);
    }
    assert!(done.is_empty());
    assert_eq!(d.run(3, server.url("http", "/")), response(200, "two"));
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = Server::start(vec![Answer::Silent]);
    let mut d = Driver::new(config(true));
    let started = Instant::now();
    let outcome = d.run(1, server.url("http", "/"));
    assert!(
        matches!(&outcome, Outcome::Failed { reason } if reason.contains("no response within 500 ms")),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(d.transport.next_deadline(), None, "nothing left to time");
}

#[test]
fn a_tls_handshake_that_never_finishes_times_out_as_a_connect() {
    // The server takes the connection and never says a word of TLS.
    let server = Server::start(vec![Answer::Silent]);
    let mut config = config(true);
    config.connect_timeout = Duration::from_millis(300);
    let mut d = Driver::new(config);
    let outcome = d.run(1, server.url("https", "/"));
    assert!(
        matches!(&outcome, Outcome::Failed { reason } if reason.contains("timed out connecting to 127.0.0.1 after 300 ms")),
        "{outcome:?}"
    );
}

#[test]
fn endpoints_run_side_by_side_and_a_large_body_goes_out_whole() {
    let server = Server::start(vec![ok("done")]);
    let mut d = Driver::new(config(true));
    let big = vec![b'x'; 4 * 1024 * 1024];
    for endpoint in 1..=3 {
        let request = Request {
            url: Arc::new(server.url("http", "/")),
            headers: Vec::new(),
            body: big.clone(),
        };
        d.transport
            .start(d.poll.registry(), endpoint, request, Instant::now());
    }
    assert_eq!(d.transport.in_flight(), 3);
    let mut ended: Vec<u64> = (0..3)
        .map(|_| {
            let done = d.done();
            assert_eq!(done.outcome, response(200, "done"));
            done.endpoint
        })
        .collect();
    ended.sort_unstable();
    assert_eq!(ended, [1, 2, 3]);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.bytes.ends_with(&big)));
}

#[test]
fn a_refused_connect_fails() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut d = Driver::new(config(true));
    let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    let outcome = d.run(1, url);
    assert!(
        matches!(&outcome, Outcome::Failed { reason } if reason.contains("refused")),
        "{outcome:?}"
    );
}

#[test]
fn a_body_over_the_cap_is_cut_and_its_connection_closed() {
    let big = "x".repeat(MAX_BODY * 4);
    let server = Server::start(vec![ok(&big), ok("small")]);
    let mut d = Driver::new(config(true));
    assert_eq!(
        d.run(1, server.url("http", "/")),
        response(200, &big[..MAX_BODY])
    );
    assert_eq!(d.run(1, server.url("http", "/")), response(200, "small"));
    let conns: Vec<usize> = server.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 1]);
}

#[test]
fn statuses_are_reported_and_redirects_not_followed() {
    let server = Server::start(vec![
        Answer::Bytes(b"HTTP/1.1 410 Gone\r\nContent-Length: 4\r\n\r\ngone".to_vec()),
        Answer::Bytes(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
        ),
        Answer::BytesThenClose(b"HTTP/1.1 500 Oops\r\n\r\nto the close".to_vec()),
    ]);
    let mut d = Driver::new(config(true));
    assert_eq!(d.run(1, server.url("http", "/")), response(410, "gone"));
    assert_eq!(d.run(1, server.url("http", "/")), response(302, ""));
    assert_eq!(
        d.run(1, server.url("http", "/")),
        response(500, "to the close")
    );
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn a_response_that_breaks_http_fails_without_harm() {
    let server = Server::start(vec![
        Answer::BytesThenClose(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec()),
        ok("fine"),
    ]);
    let mut d = Driver::new(config(true));
    let outcome = d.run(1, server.url("http", "/"));
    assert!(
        matches!(&outcome, Outcome::Failed { reason } if reason.contains("bad response head")),
        "{outcome:?}"
    );
    assert_eq!(d.run(1, server.url("http", "/")), response(200, "fine"));
}

#[test]
fn private_targets_are_refused_unless_allowed() {
    let server = Server::start(vec![ok("")]);
    let mut d = Driver::new(config(false));
    let outcome = d.run(1, server.url("http", "/"));
    assert!(
        matches!(&outcome, Outcome::Refused { reason } if reason.contains("127.0.0.1")),
        "{outcome:?}"
    );
    let url = Url::parse(&format!("http://localhost:{}/", server.addr.port())).unwrap();
    let outcome = d.run(2, url);
    assert!(
        matches!(&outcome, Outcome::Refused { reason } if reason.contains("localhost resolves to a private address")),
        "{outcome:?}"
    );
    assert!(server.seen().is_empty());
}

#[test]
fn forget_drops_the_request_without_a_done() {
    let server = Server::start(vec![Answer::Silent]);
    let mut d = Driver::new(config(true));
    d.start(1, server.url("http", "/"));
    assert_eq!(d.transport.in_flight(), 1);
    d.transport.forget(d.poll.registry(), 1);
    assert_eq!(d.transport.in_flight(), 0);
    assert_eq!(d.transport.next_deadline(), None);
    // The endpoint starts over cleanly.
    let server = Server::start(vec![ok("back")]);
    assert_eq!(d.run(1, server.url("http", "/")), response(200, "back"));
}

#[test]
fn bad_caller_headers_fail_the_request() {
    let mut d = Driver::new(config(true));
    let url = Url::parse("http://127.0.0.1:9/").unwrap();
    for (name, value) in [
        ("x-a", "b\r\nInjected: 1"),
        ("bad name", "v"),
        ("Host", "evil"),
    ] {
        let request = Request {
            url: Arc::new(url.clone()),
            headers: vec![(name, value.into())],
            body: Vec::new(),
        };
        d.transport
            .start(d.poll.registry(), 1, request, Instant::now());
        let outcome = d.done().outcome;
        assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    }
}

/// A CA, a server certificate it signed for `localhost` and 127.0.0.1, and the
/// CA's PEM file.
struct Pki {
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    Pki {
        _dir: dir,
        ca_file,
        server: Arc::new(server),
    }
}

fn tls_server(pki: &Pki, answers: Vec<Answer>) -> Server {
    let config = Arc::clone(&pki.server);
    Server::start_with(
        answers,
        Arc::new(move |s| {
            let session = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
            Box::new(rustls::StreamOwned::new(session, s)) as Box<dyn Stream>
        }),
    )
}

#[test]
fn https_under_a_given_ca_by_name_and_by_address() {
    let pki = pki();
    let server = tls_server(&pki, vec![ok("sealed")]);
    let mut config = config(true);
    config.tls = Tls::Ready(tls_config(Some(&pki.ca_file)).unwrap());
    let mut d = Driver::new(config);
    // By name: resolved by the resolver thread, the name checked against the
    // certificate (and ::1 tried first where it comes first, refused, skipped).
    let url = Url::parse(&format!("https://localhost:{}/in", server.addr.port())).unwrap();
    assert_eq!(d.run(1, url.clone()), response(200, "sealed"));
    assert_eq!(d.run(1, url), response(200, "sealed"));
    assert_eq!(
        d.run(2, server.url("https", "/in")),
        response(200, "sealed")
    );
    let conns: Vec<usize> = server.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0, 1]);
}

#[test]
fn https_without_the_ca_fails_the_certificate_check() {
    let pki = pki();
    let server = tls_server(&pki, vec![ok("sealed")]);
    let mut d = Driver::new(config(true));
    let outcome = d.run(1, server.url("https", "/"));
    assert!(
        matches!(&outcome, Outcome::Failed { reason } if reason.contains("certificate")),
        "{outcome:?}"
    );
    assert!(server.seen().is_empty());
    // Plain HTTP to the TLS port is a failure too, not a hang.
    let outcome = d.run(2, server.url("http", "/"));
    assert!(matches!(&outcome, Outcome::Failed { .. }), "{outcome:?}");
}

#[test]
fn tls_config_reads_a_ca_file_and_says_what_is_wrong_with_one() {
    let pki = pki();
    assert!(tls_config(Some(&pki.ca_file)).is_ok());
    let missing = pki.ca_file.with_file_name("missing.pem");
    let e = tls_config(Some(&missing)).unwrap_err().to_string();
    assert!(e.contains("cannot read --webhook-ca"), "{e}");
    let empty = pki.ca_file.with_file_name("empty.pem");
    std::fs::write(&empty, "no certificates here").unwrap();
    let e = tls_config(Some(&empty)).unwrap_err().to_string();
    assert!(e.contains("no certificate in --webhook-ca"), "{e}");
}

#[test]
fn tokens_are_the_transports_own() {
    assert!(!Transport::owns(WAKER));
    assert!(Transport::owns(Token(super::transport::WEBHOOK_TOKEN_BASE)));
    assert!(!Transport::owns(Token(3)));
    assert!(!Transport::owns(Token(usize::MAX - 1)));
}
