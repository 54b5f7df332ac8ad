//! A real `redis-server` as the reference userbus is compared with: started on a
//! free loopback port with a temporary directory and no persistence, and stopped
//! when dropped. Its `events` stream is written with XADD to hold exactly the
//! entries of a userbus log, so that the same request can be sent to both and the
//! replies compared byte for byte.
//!
//! Without `redis-server` the comparisons print a note and are skipped, unless
//! `USERBUS_REDIS_TEST=1` (CI), where a missing one fails them: `start()` returns
//! `None` then.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::stream::{EVENTS, Entry};
use super::{connect, free_port, resp};

/// How long redis-server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running redis-server.
pub struct RedisServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A fresh redis-server with `args` added to its command line (such as
    /// `--requirepass`), or `None` (with a note) where none is installed.
    pub fn start(args: &[&str]) -> Option<RedisServer> {
        let found = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            assert!(
                std::env::var("USERBUS_REDIS_TEST").as_deref() != Ok("1"),
                "redis-server is not installed and USERBUS_REDIS_TEST=1"
            );
            eprintln!("note: redis-server is not installed; skipping the comparison with Redis");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(server)
    }

    /// A raw client of it.
    pub fn client(&self) -> RawClient {
        RawClient::connect(("127.0.0.1", self.port))
    }

    /// A `redis` crate connection speaking RESP3 when `resp3`, else RESP2.
    pub fn redis_proto(&self, resp3: bool) -> redis::Connection {
        let query = if resp3 { "?protocol=resp3" } else { "" };
        redis::Client::open(format!("redis://127.0.0.1:{}/{query}", self.port))
            .expect("client")
            .get_connection()
            .expect("redis connection")
    }

    /// Its `major.minor` version, from INFO.
    pub fn version(&self) -> (u32, u32) {
        let reply = self.client().call(&["INFO", "server"]);
        let info = String::from_utf8_lossy(&reply).into_owned();
        let v = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or_else(|| panic!("INFO server has no redis_version: {info}"));
        let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    }

    /// Appends `entries` to its stream `events` with their ids and fields, so
    /// that it reads as the userbus log they came from. Pipelined: one write, then
    /// the replies.
    pub fn mirror(&self, entries: &[Entry]) {
        let mut c = self.client();
        for chunk in entries.chunks(10_000) {
            let mut batch = Vec::new();
            for e in chunk {
                let mut args = vec!["XADD", EVENTS, e.id.as_str()];
                for (k, v) in &e.fields {
                    args.push(k);
                    args.push(v);
                }
                batch.extend(resp(&args));
            }
            c.send(&batch);
            for e in chunk {
                let got = c.reply();
                let want = super::bulk(&e.id);
                assert_eq!(
                    got,
                    want,
                    "redis-server XADD {}: {}",
                    e.id,
                    String::from_utf8_lossy(&got)
                );
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw RESP client reading whole replies as bytes through a buffer (replies of
/// many megabytes too).
pub struct RawClient {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl RawClient {
    /// A connection to `addr` with the harness's read timeout.
    pub fn connect(addr: impl ToSocketAddrs) -> RawClient {
        let s = connect(addr);
        RawClient {
            r: BufReader::with_capacity(1 << 16, s.try_clone().expect("clone socket")),
            w: s,
        }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write");
    }

    /// Sends the request `args` and returns its whole reply.
    pub fn call(&mut self, args: &[&str]) -> Vec<u8> {
        self.send(&resp(args));
        self.reply()
    }

    /// The next whole reply (or push), RESP2 or RESP3.
    pub fn reply(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        frame(&mut self.r, &mut out);
        out
    }
}

/// Appends one complete frame read from `r` to `out`.
fn frame(r: &mut impl BufRead, out: &mut Vec<u8>) {
    let start = out.len();
    r.read_until(b'\n', out).expect("read a reply line");
    let line = &out[start..];
    assert!(
        line.ends_with(b"\r\n"),
        "incomplete reply line {:?}",
        String::from_utf8_lossy(line)
    );
    let kind = line[0];
    let len = || -> i64 {
        std::str::from_utf8(&line[1..line.len() - 2])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("bad length line {:?}", String::from_utf8_lossy(line)))
    };
    let (bytes, frames) = match kind {
        // `$-1` (a RESP2 nil) has no body.
        b'$' | b'=' | b'!' => (if len() >= 0 { len() + 2 } else { 0 }, 0),
        b'*' | b'~' | b'>' => (0, len().max(0)),
        b'%' => (0, 2 * len().max(0)),
        _ => (0, 0),
    };
    if bytes > 0 {
        let at = out.len();
        out.resize(at + bytes as usize, 0);
        r.read_exact(&mut out[at..]).expect("read a bulk");
    }
    for _ in 0..frames {
        frame(r, out);
    }
}
