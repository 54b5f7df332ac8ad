//! `userbus serve` as a process of its own, for what only a process can show:
//! kill -9, restarts on the same database, and the log lines it writes.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::reply::{self, INFO_WAIT, Info, info_num};
use super::userbus_command;

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `userbus serve`; its output lines are kept (see [`UserbusProcess::log`]).
pub struct UserbusProcess {
    child: Option<Child>,
    /// The RESP port it listens on.
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl UserbusProcess {
    /// An INFO section as field -> value.
    pub fn info(&self, section: &str) -> Info {
        reply::info(&mut self.redis(), section)
    }

    /// Polls INFO `section` until `done` holds, or fails naming `what` with the
    /// last one seen (the server's log is printed as the test unwinds).
    pub fn wait_info(&self, section: &str, what: &str, done: impl Fn(&Info) -> bool) -> Info {
        reply::wait_info(&mut self.redis(), section, INFO_WAIT, what, done)
    }

    /// Waits until, as a follower, it applied up to `seq`.
    pub fn wait_applied(&self, seq: i64) -> Info {
        reply::wait_applied(&mut self.redis(), seq)
    }

    /// Waits until its relay publishes and has confirmed every committed event.
    pub fn wait_relayed(&self) -> Info {
        self.wait_info("nats", "the relay to drain", |i| {
            i.get("nats_lag_events").map(String::as_str) == Some("0")
                && i.get("nats_relay_state").map(String::as_str) == Some("publishing")
        })
    }

    /// The seq of the last committed event (INFO events), which must be there.
    pub fn last_seq(&self) -> i64 {
        let i = self.info("events");
        let seq = info_num(&i, "events_last_seq");
        assert!(seq >= 0, "no events_last_seq in {i:?}");
        seq
    }

    /// Starts `userbus serve --port 0 --http-port 0 --db <db> <args>` and returns
    /// once its ready line names the RESP port.
    pub fn start(db: &Path, args: &[&str]) -> UserbusProcess {
        UserbusProcess::start_on(db, args, 0)
    }

    /// As [`UserbusProcess::start`], with the HTTP side on a free port.
    #[allow(dead_code)]
    pub fn start_with_http(db: &Path, args: &[&str]) -> UserbusProcess {
        UserbusProcess::start_on(db, args, super::free_port())
    }

    /// As [`UserbusProcess::start_with_http`], with `env` set for the process.
    #[allow(dead_code)]
    pub fn start_with_env(db: &Path, args: &[&str], env: &[(&str, &str)]) -> UserbusProcess {
        UserbusProcess::start_cmd(db, args, super::free_port(), env)
    }

    fn start_on(db: &Path, args: &[&str], http_port: u16) -> UserbusProcess {
        UserbusProcess::start_cmd(db, args, http_port, &[])
    }

    fn start_cmd(db: &Path, args: &[&str], http_port: u16, env: &[(&str, &str)]) -> UserbusProcess {
        let mut child = userbus_command()
            .envs(env.iter().copied())
            .args(["serve", "--port", "0", "--http-port"])
            .arg(http_port.to_string())
            .arg("--db")
            .arg(db)
            .args(args)
            .spawn()
            .expect("spawn userbus");
        let lines = Arc::new(Mutex::new(Vec::new()));
        keep_lines(child.stdout.take().expect("stdout"), lines.clone());
        keep_lines(child.stderr.take().expect("stderr"), lines.clone());
        let mut p = UserbusProcess {
            child: Some(child),
            port: 0,
            lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        p.port = loop {
            if let Some(port) = p.log().lines().find_map(|l| listen_port(l, "resp=")) {
                break port;
            }
            let exited = p.child.as_mut().and_then(|c| c.try_wait().ok()).flatten();
            if let Some(status) = exited {
                panic!("userbus exited ({status}) before listening:\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "userbus did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        p
    }

    /// Everything it wrote so far, one line each.
    pub fn log(&self) -> String {
        let lines = self.lines.lock().expect("log lock");
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }

    /// The lines it wrote that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let lines = self.lines.lock().expect("log lock");
        lines
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until a line it wrote contains every one of `needles` and returns it;
    /// fails after `within` with the log.
    pub fn wait_line(&self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .lines_with(needles[0])
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)));
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} within {within:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The HTTP port its ready line names; panics when the HTTP side is off.
    pub fn http_port(&self) -> u16 {
        self.log()
            .lines()
            .find_map(|l| listen_port(l, "http="))
            .expect("http port in the ready line")
    }

    /// Sends `request` to the HTTP port on a connection of its own and returns
    /// the whole response (the request asks the server to close).
    pub fn http(&self, request: &str) -> String {
        super::http_once(("127.0.0.1", self.http_port()), request)
    }

    /// `GET path` on the HTTP port with extra header lines (each ending in
    /// CRLF), on a connection of its own: the whole response, head and body.
    pub fn http_get(&self, path: &str, headers: &str) -> String {
        super::http_get(("127.0.0.1", self.http_port()), path, headers)
    }

    /// A `redis` crate connection.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))
            .expect("client")
            .get_connection()
            .expect("redis connection")
    }

    /// A `redis` crate connection speaking RESP3 (it sends HELLO 3).
    pub fn redis3(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/?protocol=resp3", self.port))
            .expect("client")
            .get_connection()
            .expect("redis connection")
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
        super::http_request(("127.0.0.1", self.http_port()), method, path, headers, body)
    }

    /// SIGKILL, then reap the process.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 userbus");
            child.wait().expect("reap userbus");
        }
    }

    /// SIGTERM (a clean stop); asserts it exits 0.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        let status = child.wait().expect("wait for userbus");
        assert!(status.success(), "userbus exited with {status} on SIGTERM");
    }
}

impl Drop for UserbusProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("userbus log:\n{}", self.log());
        }
    }
}

/// The port a ready line names after `side` (`... resp=127.0.0.1:PORT http=...`).
fn listen_port(line: &str, side: &str) -> Option<u16> {
    let (_, rest) = line.split_once(&format!("{side}127.0.0.1:"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Keeps each line `from` yields; drains to the end so the child never blocks.
fn keep_lines(from: impl Read + Send + 'static, to: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut lines) = to.lock() {
                lines.push(line);
            }
        }
    });
}
