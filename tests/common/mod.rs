//! Test harness: a real server on 127.0.0.1:0 with a temporary database, and small
//! helpers to talk to it over raw sockets the way `nc` does. `reply` reads the
//! replies of the `redis` crate; `stream` reads the durable stream `events`.
#![allow(dead_code)]

pub mod reply;
pub mod stream;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use userbus::config::MAX_FIELD_VALUE_BYTES;
use userbus::{Builder, Config, Durability, Server, ShutdownHandle};

/// How long a test waits for bytes that should come before calling it a hang.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running on its own thread in this process.
pub struct TestServer {
    /// The RESP address.
    pub addr: SocketAddr,
    /// The database file.
    pub db: PathBuf,
    /// The HTTP address, when the HTTP side is on (see `start_http`).
    pub http: Option<SocketAddr>,
    /// The settings it was started with, for `restart`.
    config: Config,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<userbus::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with default settings and a fresh database.
    pub fn start() -> TestServer {
        Self::start_with(|_| {}, |b| b)
    }

    /// A server that commits without fsync (`Durability::Normal`), for the tests
    /// that register a lot; `config` adjusts the other settings.
    pub fn start_fast(config: impl FnOnce(&mut Config)) -> TestServer {
        let fast = |cfg: &mut Config| {
            cfg.durability = Durability::Normal;
            config(cfg);
        };
        Self::start_with(fast, |b| b)
    }

    /// A server with default settings and a fresh database, and a RESP2 connection
    /// to it from the `redis` crate.
    pub fn start_redis() -> (TestServer, redis::Connection) {
        let server = Self::start();
        let c = server.redis();
        (server, c)
    }

    /// A server with default settings and a fresh database, and a raw socket to it.
    pub fn start_raw() -> (TestServer, TcpStream) {
        let server = Self::start();
        let s = server.raw();
        (server, s)
    }

    /// A fresh database; `config` adjusts the settings, `builder` adds callbacks.
    pub fn start_with(
        config: impl FnOnce(&mut Config),
        builder: impl FnOnce(Builder) -> Builder,
    ) -> TestServer {
        let (dir, db) = temp_db();
        let mut s = Self::start_at(&db, config, builder);
        s._dir = Some(dir);
        s
    }

    /// A server on an existing database path (for restarts); the caller owns the
    /// directory.
    pub fn start_at(
        db: &Path,
        config: impl FnOnce(&mut Config),
        builder: impl FnOnce(Builder) -> Builder,
    ) -> TestServer {
        let mut cfg = config_at(db);
        config(&mut cfg);
        Self::start_config(cfg, builder)
    }

    fn start_config(cfg: Config, builder: impl FnOnce(Builder) -> Builder) -> TestServer {
        let server = builder(Server::builder(cfg.clone()))
            .build()
            .expect("server builds");
        let addr = server.local_addr().expect("bound address");
        let http = server.http_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            db: cfg.db.clone(),
            http,
            config: cfg,
            handle,
            thread: Some(thread),
            _dir: None,
        }
    }

    /// Stops the server like `stop`, then starts it again on the same database with
    /// the same settings (a RESP port of 0 is a new port) and no callbacks. A
    /// temporary directory of the first server stays until the new one is dropped.
    pub fn restart(self) -> TestServer {
        self.restart_with(|b| b)
    }

    /// Like `restart`, with `builder` adding the new run's callbacks.
    pub fn restart_with(mut self, builder: impl FnOnce(Builder) -> Builder) -> TestServer {
        self.shutdown();
        let mut s = Self::start_config(self.config.clone(), builder);
        s._dir = self._dir.take();
        s
    }

    /// A server with the HTTP side on, default settings and a fresh database.
    pub fn start_http() -> TestServer {
        Self::start_http_with(|_| {})
    }

    /// A fresh database and the HTTP side on a free port (`http_port` 0 would
    /// disable it, so a port the kernel just handed out is passed instead);
    /// `config` adjusts the other settings.
    pub fn start_http_with(config: impl FnOnce(&mut Config)) -> TestServer {
        let port = free_port();
        let http = |cfg: &mut Config| {
            cfg.http_port = port;
            config(cfg);
        };
        Self::start_with(http, |b| b)
    }

    /// The HTTP address; panics when the server was started without HTTP.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .expect("invariant: the server was started with start_http")
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr())
    }

    /// A raw socket to the HTTP port.
    pub fn http_raw(&self) -> TcpStream {
        connect(self.http_addr())
    }

    /// A `redis` crate connection speaking RESP2.
    pub fn redis(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).expect("client");
        client.get_connection().expect("redis connection")
    }

    /// A `redis` crate connection speaking RESP3 (it sends HELLO 3).
    pub fn redis3(&self) -> redis::Connection {
        let client =
            redis::Client::open(format!("redis://{}/?protocol=resp3", self.addr)).expect("client");
        client.get_connection().expect("redis connection")
    }

    /// A `redis` crate connection speaking RESP3 when `resp3`, else RESP2.
    pub fn redis_proto(&self, resp3: bool) -> redis::Connection {
        if resp3 { self.redis3() } else { self.redis() }
    }

    /// A raw socket, as `nc` would open.
    pub fn raw(&self) -> TcpStream {
        connect(self.addr)
    }

    /// Stops the server (finish tick, commit, flush, close) and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.handle.shutdown();
            t.join()
                .expect("server thread panicked")
                .expect("server run failed");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.shutdown();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A temporary directory and the path of the database file `userbus.db` in it;
/// the directory goes when the returned `TempDir` is dropped.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("userbus.db");
    (dir, db)
}

/// Starts a server with default settings, runs `check` with a RESP2 and then a
/// RESP3 `redis` connection to it (and whether that one speaks RESP3), then stops
/// the server.
pub fn in_both_protocols(check: impl Fn(&TestServer, redis::Connection, bool)) {
    let server = TestServer::start();
    for resp3 in [false, true] {
        check(&server, server.redis_proto(resp3), resp3);
    }
    server.stop();
}

/// The settings a test server starts with: any free RESP port, no HTTP, the
/// database at `db`, everything else the default.
pub fn config_at(db: &Path) -> Config {
    Config {
        port: 0,
        http_port: 0,
        db: db.to_path_buf(),
        ..Config::default()
    }
}

/// The `userbus` binary without the `USERBUS_*` settings of the environment the
/// tests run in.
pub fn userbus() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_userbus"));
    for (k, _) in std::env::vars() {
        if k.starts_with("USERBUS_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `userbus` with `RUST_LOG=info`, no input and its output piped.
pub fn userbus_command() -> Command {
    let mut cmd = userbus();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info");
    cmd
}

/// Runs `userbus args...` to its end and returns what it printed.
pub fn run_userbus(args: &[&str]) -> Output {
    userbus().args(args).output().expect("run userbus")
}

/// Words of a command line, split on whitespace.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A socket to `addr` with the harness's read timeout and Nagle off.
pub fn connect(addr: impl ToSocketAddrs) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Pages a fresh database takes (the schema alone), measured once per test binary,
/// so database caps in tests follow schema changes.
pub fn fresh_db_pages() -> u64 {
    static PAGES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fresh.db");
        TestServer::start_at(&db, |_| {}, |b| b).stop();
        let conn = rusqlite::Connection::open(&db).expect("open fresh db");
        conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .expect("page_count") as u64
    })
}

/// A database cap with room for a small user but not for one with two maximal
/// field values (`big_register`).
pub fn tight_max_pages() -> u64 {
    fresh_db_pages() + 3
}

/// `REGISTER name a <value> b <value>` with both values as long as a field value
/// may be: a registration that cannot fit under `tight_max_pages`.
pub fn big_register(name: &str) -> Vec<u8> {
    let value = "v".repeat(MAX_FIELD_VALUE_BYTES);
    resp(&["REGISTER", name, "a", &value, "b", &value])
}

/// Sends `request` and reads exactly as many bytes as `expected` has, then
/// asserts they are equal (on a socket or a TLS stream).
pub fn exchange(s: &mut (impl Read + Write), request: &[u8], expected: &[u8]) {
    s.write_all(request).expect("write");
    let got = read_n(s, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
}

/// `exchange` for the RESP request of text `args`.
pub fn exchange_resp(s: &mut TcpStream, args: &[&str], expected: &[u8]) {
    exchange(s, &resp(args), expected);
}

/// Reads exactly `n` bytes (fails the test after IO_TIMEOUT).
pub fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read reply");
    buf
}

/// Reads until the server closes the connection; returns everything read.
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read until close");
    buf
}

/// Reads until what was read ends with `suffix` (a reply line with `b"\r\n"`).
pub fn read_until_suffix(s: &mut TcpStream, suffix: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(suffix) {
        s.read_exact(&mut byte).expect("read until suffix");
        got.push(byte[0]);
    }
    got
}

/// Bytes as a readable, escaped string for failure messages (long ones cut).
pub fn show(b: &[u8]) -> String {
    const MAX: usize = 400;
    if b.len() > MAX {
        format!("{}... ({} bytes)", b[..MAX].escape_ascii(), b.len())
    } else {
        b.escape_ascii().to_string()
    }
}

/// Asserts `got == want` byte for byte (binary-safe, unlike a lossy string
/// comparison), showing both escaped when they differ.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}\n  got:  {}\n  want: {}",
        show(got),
        show(want)
    );
}

/// A RESP request: a multibulk array of `args`.
pub fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend(bulk(a));
    }
    v
}

/// A RESP request of text `args`.
pub fn resp(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    multibulk(&args)
}

/// A bulk string: `$<len>\r\n<data>\r\n`.
pub fn bulk(data: impl AsRef<[u8]>) -> Vec<u8> {
    let data = data.as_ref();
    let mut v = format!("${}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// Reads one complete RESP2/RESP3 reply and returns its bytes.
pub fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut out = read_until_suffix(s, b"\r\n");
    let n = || -> i64 {
        std::str::from_utf8(&out[1..out.len() - 2])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("bad length line {:?}", String::from_utf8_lossy(&out)))
    };
    match out[0] {
        b'$' | b'=' | b'!' => {
            let len = n();
            if len >= 0 {
                out.extend(read_n(s, len as usize + 2));
            }
        }
        b'*' | b'~' | b'>' => {
            for _ in 0..n().max(0) {
                out.extend(read_frame(s));
            }
        }
        b'%' => {
            for _ in 0..2 * n().max(0) {
                out.extend(read_frame(s));
            }
        }
        _ => {}
    }
    out
}

/// A raw connection switched to RESP3.
pub fn raw3(server: &TestServer) -> TcpStream {
    let mut s = server.raw();
    s.write_all(&resp(&["HELLO", "3"])).expect("write");
    let hello = read_frame(&mut s);
    assert!(hello.starts_with(b"%"), "HELLO 3 replied {hello:?}");
    s
}

/// A raw connection that reads one-line replies (integers, errors, statuses).
pub struct Raw {
    /// The socket, for writing.
    pub w: TcpStream,
    /// The same socket, buffered for reading.
    pub r: BufReader<TcpStream>,
}

impl Raw {
    pub fn connect(addr: impl ToSocketAddrs) -> Raw {
        let s = connect(addr);
        Raw {
            r: BufReader::new(s.try_clone().expect("clone socket")),
            w: s,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write");
    }

    /// The next reply line, without its CRLF.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read reply");
        assert!(line.ends_with("\r\n"), "incomplete reply line {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// The next reply, which must be an integer.
    pub fn int(&mut self) -> i64 {
        let line = self.line();
        line.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected an integer reply, got {line:?}"))
    }

    /// Sends `bytes` and returns the next reply line.
    pub fn call(&mut self, bytes: &[u8]) -> String {
        self.send(bytes);
        self.line()
    }
}

/// A user's fields as a map, to compare with what the server stored.
pub fn fields(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The test's own clock, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` as Unix milliseconds.
pub fn rfc3339_utc_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || *b.last()? != b'Z' {
        return None;
    }
    for (i, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        if b[i] != sep {
            return None;
        }
    }
    let digits = |from: usize, to: usize| -> Option<i64> {
        let d = s.get(from..to)?;
        d.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| d.parse().ok())?
    };
    let (y, mo, d) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (h, mi, sec) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    let frac = &s[19..s.len() - 1];
    let ms = if frac.is_empty() {
        0
    } else {
        let f = frac.strip_prefix('.')?;
        if f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{f:0<3}")[..3].parse().ok()?
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}
