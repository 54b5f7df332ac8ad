//! Webhook receivers for tests: a small HTTP/1.1 server on a loopback ephemeral port
//! (plain, or https with a certificate from a throwaway CA) that records every
//! request and answers by a script the test sets; the Standard Webhooks signature
//! checked in Rust; and `tests/webhook_py/receiver.py`, which checks it with the
//! `standardwebhooks` Python package as a third party would.
//!
//! The Python receiver is gated like nats-py: without the module its test prints a
//! note and passes, unless `USERBUS_WEBHOOK_TEST=1` (CI), where it fails; ask
//! [`standardwebhooks_available`] first.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

use super::nats::base64_decode;

/// How long a test waits for deliveries when it has no bound of its own: longer
/// than any retry schedule the tests set.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(30);

/// Where [`Answer::Redirect`] points.
pub const REDIRECT_PATH: &str = "/elsewhere";

/// Longest request head the receiver reads; userbus's heads are a few hundred bytes.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Answers with this status (and a two-byte body) and keeps the connection.
    Status(u16),
    /// Never answers: holds the connection open until [`Receiver::release_holds`]
    /// or the receiver's end, then closes it.
    Hold,
    /// Closes the connection without an answer.
    Close,
    /// Answers `307 Temporary Redirect` to [`REDIRECT_PATH`] on the same receiver
    /// and keeps the connection.
    Redirect,
}

/// One request the receiver read, in arrival order.
#[derive(Debug, Clone)]
pub struct Received {
    /// `POST`, ...
    pub method: String,
    /// The request target, e.g. `/hook`.
    pub path: String,
    /// The HTTP/1 minor version: 1 for `HTTP/1.1`.
    pub version: u8,
    /// Header fields in the order they came, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (its `Content-Length` bytes).
    pub body: Vec<u8>,
    /// When the whole request had arrived.
    pub at: Instant,
    /// Which accepted connection it came on, counting from 0.
    pub conn: usize,
    /// What the script answered.
    pub answer: Answer,
}

impl Received {
    /// The request line as sent, e.g. `POST /hook HTTP/1.1`.
    pub fn request_line(&self) -> String {
        format!("{} {} HTTP/1.{}", self.method, self.path, self.version)
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body_text()))
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The event's `seq` in the body.
    pub fn seq(&self) -> i64 {
        self.json()["seq"]
            .as_i64()
            .unwrap_or_else(|| panic!("no seq in {:?}", self.body_text()))
    }

    /// The `webhook-id` header, which must be there.
    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
            .unwrap_or_else(|| panic!("no webhook-id in {:?}", self.headers))
    }

    /// True when the script answered with a 2xx status.
    pub fn succeeded(&self) -> bool {
        matches!(self.answer, Answer::Status(s) if (200..300).contains(&s))
    }
}

/// Decides each request's answer; sees the request and how many came before it.
pub type Script = Box<dyn FnMut(&Received, usize) -> Answer + Send>;

/// Answers `status` to the first `n` requests, then 200.
pub fn fail_first(n: usize, status: u16) -> Script {
    Box::new(move |_, before| {
        if before < n {
            Answer::Status(status)
        } else {
            Answer::Status(200)
        }
    })
}

/// Answers `status` to every request.
pub fn always(status: u16) -> Script {
    Box::new(move |_, _| Answer::Status(status))
}

/// Answers `status` to the first `n` requests for each event (by `seq`), then 200.
pub fn fail_each_event(n: usize, status: u16) -> Script {
    let mut seen: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    Box::new(move |r, _| {
        let tries = seen.entry(r.seq()).or_default();
        *tries += 1;
        if *tries <= n {
            Answer::Status(status)
        } else {
            Answer::Status(200)
        }
    })
}

struct State {
    received: Vec<Received>,
    script: Script,
    /// A clone of every accepted socket, to shut them down when the receiver goes.
    sockets: Vec<TcpStream>,
    /// Raised by `release_holds`: held requests older than it are let go.
    releases: u64,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A recording HTTP/1.1 receiver on 127.0.0.1 (and on ::1 at the same port when
/// it can); plain, or https with
/// [`Receiver::start_https`]. Each connection has a thread of its own and keeps
/// alive until the peer closes it or the script says otherwise.
pub struct Receiver {
    addr: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// A plain HTTP receiver answering 200 at once.
    pub fn start() -> Receiver {
        Receiver::start_with(None)
    }

    /// An https receiver answering 200 at once, its certificate (for 127.0.0.1 and
    /// localhost) signed by `ca`.
    pub fn start_https(ca: &TestCa) -> Receiver {
        Receiver::start_with(Some(ca.server.clone()))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                received: Vec::new(),
                script: always(200),
                sockets: Vec::new(),
                releases: 0,
                stopped: false,
            }),
            changed: Condvar::new(),
        });
        let https = tls.is_some();
        // `localhost` may resolve to ::1 first: listen there too when the host has it.
        if let Ok(v6) = TcpListener::bind(("::1", addr.port())) {
            let shared = shared.clone();
            let tls = tls.clone();
            std::thread::spawn(move || accept_loop(v6, shared, tls));
        }
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, shared, tls))
        };
        Receiver {
            addr,
            https,
            shared,
            accept: Some(accept),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://`) followed by `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// The same with `localhost` as host, which userbus must resolve.
    pub fn localhost_url(&self, path: &str) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://localhost:{}{path}", self.addr.port())
    }

    /// Answers the requests from now on by `script`.
    pub fn script(&self, script: Script) {
        self.shared.lock().script = script;
    }

    /// Lets every held request go: their connections close without an answer.
    pub fn release_holds(&self) {
        self.shared.lock().releases += 1;
        self.shared.changed.notify_all();
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// The requests so far whose path is `path`.
    pub fn received_on(&self, path: &str) -> Vec<Received> {
        let state = self.shared.lock();
        state
            .received
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.lock().sockets.len()
    }

    /// Waits until at least `n` requests came and returns them all; fails after
    /// `within` with what did come.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        self.wait_until(&format!("{n} requests"), within, |r| r.len() >= n)
    }

    /// Waits until `done` holds for the requests so far and returns them; fails
    /// after `within`, naming `what` and listing what came.
    pub fn wait_until(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        let mut state = self.shared.lock();
        loop {
            if done(&state.received) {
                return state.received.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let seen = summary(&state.received);
                drop(state);
                panic!("waited {within:?} for {what}; the receiver got:\n{seen}");
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopped = true;
            for s in &state.sockets {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
        // Wakes the blocking accepts, which then see `stopped`.
        let _ = TcpStream::connect(self.addr);
        let _ = TcpStream::connect(("::1", self.addr.port()));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// One line per request: connection, method, path, seq and answer.
pub fn summary(received: &[Received]) -> String {
    received
        .iter()
        .map(|r| {
            let seq = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["seq"].as_i64());
            format!(
                "  conn {} {} {} seq {seq:?} id {:?} -> {:?}\n",
                r.conn,
                r.method,
                r.path,
                r.header("webhook-id"),
                r.answer
            )
        })
        .collect()
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) {
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        let conn = {
            let mut state = shared.lock();
            if state.stopped {
                return;
            }
            let Ok(clone) = sock.try_clone() else {
                continue;
            };
            state.sockets.push(clone);
            state.sockets.len() - 1
        };
        let shared = shared.clone();
        let tls = tls.clone();
        std::thread::spawn(move || {
            let _ = sock.set_nodelay(true);
            let Ok(end) = sock.try_clone() else { return };
            match tls {
                None => serve_connection(sock, conn, &shared),
                Some(config) => {
                    if let Ok(session) = rustls::ServerConnection::new(config) {
                        serve_connection(rustls::StreamOwned::new(session, sock), conn, &shared);
                    }
                }
            }
            // The clone kept for the receiver's end would hold the socket open:
            // the peer must see the close now.
            let _ = end.shutdown(Shutdown::Both);
        });
    }
}

/// Reads requests off one connection until it closes, answering each by the script.
fn serve_connection(mut stream: impl Read + Write, conn: usize, shared: &Shared) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some((mut request, close)) = read_request(&mut stream, &mut buf) else {
            return;
        };
        request.conn = conn;
        let (answer, releases) = {
            let mut state = shared.lock();
            let before = state.received.len();
            let answer = (state.script)(&request, before);
            request.answer = answer;
            state.received.push(request);
            (answer, state.releases)
        };
        shared.changed.notify_all();
        match answer {
            Answer::Status(status) => {
                let response = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
                    reason(status)
                );
                if stream.write_all(response.as_bytes()).is_err() || stream.flush().is_err() {
                    return;
                }
                if close {
                    return;
                }
            }
            Answer::Redirect => {
                let response = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: {REDIRECT_PATH}\r\ncontent-length: 0\r\n\r\n"
                );
                if stream.write_all(response.as_bytes()).is_err() || stream.flush().is_err() {
                    return;
                }
            }
            Answer::Close => return,
            Answer::Hold => {
                let mut state = shared.lock();
                while !state.stopped && state.releases == releases {
                    state = shared
                        .changed
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
                return;
            }
        }
    }
}

/// Reads one whole request (head and `Content-Length` body) from `stream`, keeping
/// bytes of the next one in `buf`; with whether the peer asked to close. `None` when
/// the connection ends or sends what is not HTTP.
fn read_request(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<(Received, bool)> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        if let httparse::Status::Complete(head) = req.parse(buf).ok()? {
            let method = req.method?.to_string();
            let path = req.path?.to_string();
            let version = req.version?;
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let field = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let length: usize = field("content-length").map_or(Some(0), |v| v.parse().ok())?;
            let close = field("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            while buf.len() < head + length {
                let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head..head + length].to_vec();
            buf.drain(..head + length);
            let received = Received {
                method,
                path,
                version,
                headers,
                body,
                at: Instant::now(),
                conn: 0,
                answer: Answer::Close,
            };
            return Some((received, close));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return None;
        }
        let n = stream.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        410 => "Gone",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// A throwaway CA (its certificate in a PEM file, for `--webhook-ca`) and a server
/// configuration for 127.0.0.1 and localhost signed by it.
pub struct TestCa {
    _dir: tempfile::TempDir,
    /// The CA certificate as PEM.
    pub pem: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl TestCa {
    /// A new CA and server certificate.
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("self-signed CA");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.pem()).expect("write ca.pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::try_from(key.serialize_der()).expect("server key DER"),
            )
            .expect("server config");
        TestCa {
            _dir: dir,
            pem,
            server: Arc::new(server),
        }
    }
}

/// Checks `r`'s `webhook-signature` against `secret` (`whsec_` + base64) the way
/// Standard Webhooks defines it: some `v1,<base64>` in the space-separated list is
/// HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` keyed with the
/// secret's decoded bytes.
pub fn verify_signature(secret: &str, r: &Received) -> Result<(), String> {
    let key = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| format!("secret {secret:?} does not start with whsec_"))?;
    let key = base64(key).ok_or_else(|| format!("secret {secret:?} is not base64"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let id = r.header("webhook-id").ok_or("no webhook-id")?;
    let timestamp = r
        .header("webhook-timestamp")
        .ok_or("no webhook-timestamp")?;
    let signatures = r
        .header("webhook-signature")
        .ok_or("no webhook-signature")?;
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let valid = signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(base64)
        .any(|sig| ring::hmac::verify(&key, &signed, &sig).is_ok());
    if valid {
        Ok(())
    } else {
        Err(format!("no v1 signature in {signatures:?} matches"))
    }
}

/// `text` decoded when it is padded standard base64; `None` otherwise.
fn base64(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=');
    let well_formed = text.len().is_multiple_of(4)
        && text.len() - digits.len() <= 2
        && digits
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/');
    well_formed.then(|| base64_decode(text))
}

/// Asserts what every delivery carries: `POST`, the Standard Webhooks headers with a
/// valid signature for `secret`, a timestamp within a minute of now, the JSON
/// content type, a `userbus/` user agent, and an event JSON body.
#[track_caller]
pub fn assert_delivery(secret: &str, r: &Received) {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    let agent = r.header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("userbus/"), "user-agent {agent:?}");
    assert!(!r.webhook_id().is_empty(), "{r:?}");
    let ts: u64 = r
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("webhook-timestamp not seconds: {r:?}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    assert!(ts.abs_diff(now) <= 60, "webhook-timestamp {ts}, now {now}");
    if let Err(e) = verify_signature(secret, r) {
        panic!("bad signature: {e}\n{r:?}");
    }
    let event = r.json();
    for key in ["seq", "kind", "id", "name", "fields", "at"] {
        assert!(event.get(key).is_some(), "no {key} in the event {event}");
    }
}

/// True when `python3` imports `standardwebhooks`. When it does not: false with a
/// note, or a panic under `USERBUS_WEBHOOK_TEST=1`.
pub fn standardwebhooks_available() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let found = *FOUND.get_or_init(|| super::python3_imports("standardwebhooks"));
    super::found_or_skip(
        found,
        "python3 cannot import standardwebhooks (pip install standardwebhooks)",
        "USERBUS_WEBHOOK_TEST",
    )
}

/// `tests/webhook_py/receiver.py` running: it verifies each delivery with
/// `standardwebhooks` and prints one JSON line per request.
pub struct PyReceiver {
    child: Option<Child>,
    lines: std::io::Lines<BufReader<ChildStdout>>,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
}

impl PyReceiver {
    /// Starts the receiver with `secret` and waits for the port it prints.
    pub fn start(secret: &str) -> PyReceiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhook_py/receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(secret)
            .args(["--timeout", &DELIVERY_WAIT.as_secs().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("receiver.py printed no port"));
        let port = first
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("receiver.py's first line: {first:?}"));
        PyReceiver {
            child: Some(child),
            lines,
            port,
        }
    }

    /// `http://127.0.0.1:PORT/hook`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The next `n` lines it prints, as JSON: `{"ok": true, "id", "timestamp",
    /// "payload"}` for a verified delivery, `{"ok": false, "error"}` otherwise.
    /// The script exits by itself after its time limit, which ends the lines.
    pub fn next(&mut self, n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let line = self
                    .lines
                    .next()
                    .and_then(Result::ok)
                    .unwrap_or_else(|| panic!("receiver.py stopped after {i} of {n} lines"));
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("receiver.py printed {line:?}: {e}"))
            })
            .collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
