//! Test harness: a real server on 127.0.0.1:0 with a temporary database, and small
//! helpers to talk to it over raw sockets the way `nc` does.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use userbus::{Builder, Config, Server, ShutdownHandle};

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
    handle: ShutdownHandle,
    thread: Option<JoinHandle<userbus::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with default settings and a fresh database.
    pub fn start() -> TestServer {
        Self::start_with(|_| {}, |b| b)
    }

    /// A fresh database; `config` adjusts the settings, `builder` adds callbacks.
    pub fn start_with(
        config: impl FnOnce(&mut Config),
        builder: impl FnOnce(Builder) -> Builder,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("userbus.db");
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
        let mut cfg = Config {
            port: 0,
            http_port: 0,
            db: db.to_path_buf(),
            ..Config::default()
        };
        config(&mut cfg);
        let server = builder(Server::builder(cfg))
            .build()
            .expect("server builds");
        let addr = server.local_addr().expect("bound address");
        let http = server.http_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.run());
        TestServer {
            addr,
            db: db.to_path_buf(),
            http,
            handle,
            thread: Some(thread),
            _dir: None,
        }
    }

    /// A server with the HTTP side on, default settings and a fresh database.
    pub fn start_http() -> TestServer {
        Self::start_http_with(|_| {}, |b| b)
    }

    /// Like `start_with`, with the HTTP side on a free port (`http_port` 0 would
    /// disable it, so a port the kernel just handed out is passed instead).
    pub fn start_http_with(
        config: impl FnOnce(&mut Config),
        builder: impl FnOnce(Builder) -> Builder,
    ) -> TestServer {
        let port = free_port();
        Self::start_with(
            |cfg| {
                cfg.http_port = port;
                config(cfg);
            },
            builder,
        )
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
        let s = TcpStream::connect(self.http_addr()).expect("connect http");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        s
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

    /// A raw socket, as `nc` would open.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        s
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

/// Sends `request` and reads exactly as many bytes as `expected` has, then
/// asserts they are equal.
pub fn exchange(s: &mut TcpStream, request: &[u8], expected: &[u8]) {
    s.write_all(request).expect("write");
    let got = read_n(s, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
}

/// Reads exactly `n` bytes (fails the test after IO_TIMEOUT).
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
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
