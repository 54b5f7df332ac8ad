//! Test harness: a real server on 127.0.0.1:0 with a temporary database, the
//! `userbus` binary, and the requests tests share. `wire` talks to a server over
//! raw sockets the way `nc` does, `reply` reads the replies of the `redis` crate,
//! `stream` reads the durable stream `events`, `clock` reads times, `nats`
//! runs nats-server processes and reads their JetStream streams, `reference`
//! runs a redis-server to compare replies with, `webhook` receives webhook
//! deliveries and checks their signatures.
#![allow(dead_code)]

mod clock;
pub mod nats;
pub mod process;
pub mod reference;
pub mod reply;
pub mod stream;
pub mod webhook;
mod wire;

// Each test binary compiles this module and uses a part of what it re-exports.
#[allow(unused_imports)]
pub use clock::{days_from_civil, now_ms, rfc3339_utc_ms};
#[allow(unused_imports)]
pub use wire::{
    Raw, assert_bytes, bulk, connect, exchange, exchange_resp, multibulk, raw3, read_frame, read_n,
    read_to_close, read_until_suffix, resp, show, words,
};

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use userbus::config::MAX_FIELD_VALUE_BYTES;
use userbus::{Builder, Config, Durability, Event, Server, ShutdownHandle};

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

    /// A fresh database, `--nats url` and following when `follow`; `config`
    /// adjusts the other settings, and the durable handler `name` sends
    /// `report(event)` for each event it is called with to the returned receiver.
    pub fn start_nats_handler<T: Send + 'static>(
        url: &str,
        follow: bool,
        name: &'static str,
        config: impl FnOnce(&mut Config),
        report: impl Fn(&Event) -> T + Send + 'static,
    ) -> (TestServer, Receiver<T>) {
        let (tx, rx) = channel();
        let server = Self::start_with(
            |c| {
                c.nats = Some(url.to_string());
                c.follow = follow;
                config(c);
            },
            move |b| {
                b.durable_handler(name, move |e| {
                    let _ = tx.send(report(e));
                })
            },
        );
        (server, rx)
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

    /// `GET path` on the HTTP port with extra header lines (each ending in CRLF),
    /// on a connection of its own: the whole response, head and body.
    pub fn http_get(&self, path: &str, headers: &str) -> String {
        http_get(self.http_addr(), path, headers)
    }

    /// `method path` on the HTTP port with extra header lines (each ending in
    /// CRLF) and `body`, on a connection of its own: the status and the body.
    pub fn http_request(
        &self,
        method: &str,
        path: &str,
        headers: &str,
        body: &str,
    ) -> (u16, String) {
        http_request(self.http_addr(), method, path, headers, body)
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

/// Sends `request` (which asks the server to close) on a connection of its own
/// to `addr` and returns the whole response, head and body.
pub fn http_once(addr: impl std::net::ToSocketAddrs, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.write_all(request.as_bytes()).expect("send request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read response");
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path` with extra header lines (each ending in CRLF) on a connection of
/// its own to `addr`: the whole response, head and body.
pub fn http_get(addr: impl std::net::ToSocketAddrs, path: &str, headers: &str) -> String {
    http_once(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// `method path` with extra header lines (each ending in CRLF) and `body` on a
/// connection of its own to `addr`: the status and the body.
pub fn http_request(
    addr: impl std::net::ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let response = http_once(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
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

/// True when `python3` imports `module`.
pub fn python3_imports(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `found`, for a test that needs an outside program: when it is missing, a note
/// naming what is `missing` and the test skips, unless the environment variable
/// `gate` is `1` (CI), where it fails.
pub fn found_or_skip(found: bool, missing: &str, gate: &str) -> bool {
    if !found {
        assert!(
            std::env::var(gate).as_deref() != Ok("1"),
            "{missing} and {gate}=1"
        );
        eprintln!("note: {missing}; skipping this test");
    }
    found
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

/// A user's fields as a map, to compare with what the server stored.
pub fn fields(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
