//! nats-server child processes (`Node`, which `cluster` builds on) and the
//! single-server harness `NatsServer`. Each node logs into a file beside its
//! store; the log is printed when a test panics with the node in scope, and
//! quoted in a failure to start.
//!
//! A node is ready when its client port answers INFO, CONNECT and PING with PONG.
//! Every wait polls a condition against a deadline.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::client::NatsTestClient;

/// Bound on a node's start, its stop, and a cluster's readiness.
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a wait checks its condition again.
pub(super) const POLL: Duration = Duration::from_millis(20);

/// The `cluster_name` of every test cluster.
const CLUSTER_NAME: &str = "userbus-test";

/// How a server's clients must authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// Anyone may connect.
    #[default]
    None,
    /// `--user` and `--pass`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `--auth`: a token in CONNECT's `auth_token`.
    Token(String),
}

impl NatsAuth {
    /// `user` and `password`.
    pub fn user_password(user: &str, password: &str) -> NatsAuth {
        NatsAuth::UserPassword {
            user: user.into(),
            password: password.into(),
        }
    }

    /// What goes before `@` in a URL, with the `@`.
    fn url_prefix(&self) -> String {
        match self {
            NatsAuth::None => String::new(),
            NatsAuth::UserPassword { user, password } => format!("{user}:{password}@"),
            NatsAuth::Token(t) => format!("{t}@"),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            NatsAuth::None => vec![],
            NatsAuth::UserPassword { user, password } => {
                vec![
                    "--user".into(),
                    user.clone(),
                    "--pass".into(),
                    password.clone(),
                ]
            }
            NatsAuth::Token(t) => vec!["--auth".into(), t.clone()],
        }
    }
}

/// The routing part of a cluster node's command line.
pub(super) struct Route {
    pub(super) port: u16,
    pub(super) peers: Vec<u16>,
}

/// One nats-server: its settings, which survive restarts, and its process.
pub(super) struct Node {
    pub(super) name: String,
    /// The client port: chosen by the server (`-p -1`) at the first start, then kept.
    port: Option<u16>,
    route: Option<Route>,
    auth: NatsAuth,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// Where this run's part of the log starts.
    log_from: u64,
}

impl Node {
    pub(super) fn new(dir: &Path, name: &str, route: Option<Route>, auth: NatsAuth) -> Node {
        Node {
            name: name.into(),
            port: None,
            route,
            auth,
            store: dir.join(format!("{name}-store")),
            log: dir.join(format!("{name}.log")),
            child: None,
            log_from: 0,
        }
    }

    /// Spawns the process; `wait_ready` waits for it.
    pub(super) fn launch(&mut self) -> Result<(), String> {
        assert!(
            self.child.is_none(),
            "invariant: {} is not running",
            self.name
        );
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("log {}: {e}", self.log.display()))?;
        self.log_from = log.metadata().map_or(0, |m| m.len());
        let port = self.port.map_or("-1".to_string(), |p| p.to_string());
        let mut cmd = Command::new("nats-server");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            "-n",
            &self.name,
            "-js",
            "-sd",
        ])
        .arg(&self.store)
        .args(self.auth.args());
        if let Some(r) = &self.route {
            let peers: Vec<String> = r
                .peers
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", CLUSTER_NAME, "--cluster"])
                .arg(format!("nats://127.0.0.1:{}", r.port))
                .args(["--routes", &peers.join(",")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("nats-server does not run: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the server logged its client port and answers PING, or fails
    /// (killing it) when it exits or `START_TIMEOUT` passes.
    pub(super) fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_alive()?;
            if self.port.is_none() {
                self.port = client_port(&self.run_log());
            }
            if self.port.is_some() && NatsTestClient::connect(&self.url_with_auth()).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill9();
                return Err(format!(
                    "{} not ready in {START_TIMEOUT:?}{}",
                    self.name,
                    self.tail()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    pub(super) fn start(&mut self) -> Result<(), String> {
        self.launch()?;
        self.wait_ready()
    }

    /// `Err` with the log when the process has exited.
    pub(super) fn check_alive(&mut self) -> Result<(), String> {
        let child = self.child.as_mut().expect("invariant: started");
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => {
                self.child = None;
                Err(format!("{} exited ({status}){}", self.name, self.tail()))
            }
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    pub(super) fn running(&self) -> bool {
        self.child.is_some()
    }

    pub(super) fn port(&self) -> u16 {
        self.port.expect("invariant: started once")
    }

    pub(super) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    pub(super) fn url_with_auth(&self) -> String {
        format!("nats://{}127.0.0.1:{}", self.auth.url_prefix(), self.port())
    }

    pub(super) fn client(&self) -> NatsTestClient {
        NatsTestClient::connect(&self.url_with_auth())
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name))
    }

    pub(super) fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to `START_TIMEOUT` before a SIGKILL and a panic.
    pub(super) fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // The shell's builtin: std sends only SIGKILL, and /bin/kill may be absent.
        let _ = Command::new("sh")
            .args(["-c", "kill -TERM \"$0\"", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + START_TIMEOUT;
        while c.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "{} ignored SIGTERM for {START_TIMEOUT:?}{}",
                    self.name,
                    self.tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Everything the server logged, across restarts.
    pub(super) fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// What the current run logged so far.
    fn run_log(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = File::open(&self.log) {
            use std::io::{Read, Seek, SeekFrom};
            let _ = f.seek(SeekFrom::Start(self.log_from));
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// The last lines of the log, to append to a failure.
    fn tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(40);
        format!("; log of {}:\n{}", self.name, lines[from..].join("\n"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- nats-server {} log ----\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}

/// The port in nats-server's "Listening for client connections on HOST:PORT".
fn client_port(log: &str) -> Option<u16> {
    log.lines()
        .find_map(|l| l.split("Listening for client connections on ").nth(1))
        .and_then(|at| at.trim().rsplit(':').next()?.parse().ok())
}

/// `n` distinct loopback ports free a moment ago (held together so they differ).
pub(super) fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// One JetStream nats-server on an ephemeral loopback port with a temporary store.
pub struct NatsServer {
    node: Node,
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// A server anyone may connect to.
    pub fn start() -> NatsServer {
        Self::start_with(NatsAuth::None)
    }

    /// A server whose clients must authenticate as `auth` says.
    pub fn start_with(auth: NatsAuth) -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = Node::new(dir.path(), "n0", None, auth);
        if let Err(e) = node.start() {
            panic!("nats-server did not start: {e}");
        }
        NatsServer { node, dir }
    }

    /// `nats://127.0.0.1:PORT`, without credentials.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// `url()` with the credentials in it (`user:pass@` or `token@`).
    pub fn url_with_auth(&self) -> String {
        self.node.url_with_auth()
    }

    /// The client port; the same across restarts.
    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// A client connected with the server's credentials.
    pub fn client(&self) -> NatsTestClient {
        self.node.client()
    }

    /// The JetStream store directory; it survives restarts.
    pub fn store_dir(&self) -> &Path {
        &self.node.store
    }

    /// The temporary directory holding the store and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged, across restarts.
    pub fn log(&self) -> String {
        self.node.log_text()
    }

    /// True between a start and a `kill9` or `stop`.
    pub fn running(&self) -> bool {
        self.node.running()
    }

    /// SIGKILL, and waits for the process to go.
    pub fn kill9(&mut self) {
        self.node.kill9();
    }

    /// SIGTERM, and waits for the server to shut down.
    pub fn stop(&mut self) {
        self.node.stop();
    }

    /// Starts the server again on the same port with the same store, stopping it
    /// first (SIGTERM) when it runs, and waits until it is ready.
    pub fn restart(&mut self) {
        self.node.stop();
        if let Err(e) = self.node.start() {
            panic!("nats-server did not restart: {e}");
        }
    }
}
