//! `cargo bench --bench nats`: events into NATS JetStream, against nats-server
//! processes this bench starts itself (one node for R=1, a 3-node cluster on
//! loopback for R=3).
//!
//! For each replica count:
//! 1. **The limit.** What JetStream accepts from one connection through the
//!    project's own client (`nats::client::Client` on a mio loop of the bench's
//!    own), with the relay's messages: subject `userbus.user.registered`, the
//!    event JSON as payload, the chained `Nats-Msg-Id` / `Nats-Expected-Last-*`
//!    headers, and the relay's window (`nats::relay::MAX_IN_FLIGHT` publishes in
//!    flight, acks matched by request id, the window refilled once per wake-up as
//!    a tick does). `--window N` adds rows with other windows.
//! 2. **The relay under load.** An in-process server with `nats` set, REGISTER at
//!    pipeline 16 over 50 connections (`userbus::bench`, as `scenarios.rs` runs
//!    it): REGISTER/s, the relay's events/s into JetStream over the same interval
//!    (INFO `nats_confirmed_seq` before and after), the time the lag takes to
//!    drain after the load stops; and, just before, the same REGISTER run against
//!    a server without the relay, for the ratio.
//! 3. **Latencies.** Publish → JetStream ack from the server's histogram
//!    `userbus_nats_ack_seconds` (`/metrics`; reported as the bucket that holds
//!    p50 and p99), at a paced REGISTER load that does not saturate (a live
//!    event is published right after its commit, so there it is commit → ack)
//!    and under the P=16 load; commit → receipt at a nats-py ordered consumer
//!    (`benches/nats_receipt.py`; from the event's `at`, so an upper bound) at
//!    the paced load.
//!
//! With two CPUs or more the server thread (and the limit's publisher, which
//! stands in for it) runs on CPU 1 and the load on CPU 0, as `scenarios.rs`
//! places them; nats-server and the nats-py consumer are left to the scheduler
//! (started from a thread with every CPU, so they do not inherit the load's).
//! The CPU columns are cores used (CPU-seconds per second, from `/proc`) by the
//! server thread (or the limit's publisher), the load, and all nats-servers.
//!
//! With `--replicated` it measures `--durability replicated` instead: REGISTER
//! over 50 connections at P=1 and at P=16 against in-process servers in turn,
//! strict without the relay, strict with it, replicated (each reply after
//! JetStream's ack) and strict again, each after a warm-up at P=16;
//! requests/s, p50 and p99 of each, and the ratios to the mean of the two
//! strict runs.
//!
//! Without `nats-server` the bench prints a note and exits; without nats-py it
//! skips the receipt latency.
//!
//! Usage: `cargo bench --bench nats [-- [--quick] [--json] [--no-pin] [--window N]
//! [--durability strict|normal] [--nats-cpu CPU] [--replicated] [FILTER ...]]`. `--window` adds
//! limit rows with other windows; `--nats-cpu` pins every nats-server to one CPU
//! (a diagnostic); a FILTER keeps the measurements whose name (`nats r1`,
//! `nats r3`) contains it, as `scenarios.rs` filters its scenarios.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use serde::Serialize;

use userbus::bench::dial::{Dialer, info_field};
use userbus::bench::{self, Args, Report, Test};
use userbus::nats::client::{Client, Options as ClientOptions};
use userbus::nats::event::{Event as NatsEvent, RequestId};
use userbus::nats::jetstream::{self, StreamSpec};
use userbus::nats::relay::{MAX_IN_FLIGHT, msg_id};
use userbus::nats::url::parse_servers;
use userbus::{Config, Durability, Event, EventKind, Server, ShutdownHandle};

// The nats-server harness of the tests (tests/common/nats/): nodes on ephemeral
// ports with temporary stores, and clusters ready for R=3 streams.
#[allow(dead_code)]
#[path = "../tests/common/nats/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../tests/common/nats/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/common/nats/message.rs"]
mod message;
#[allow(dead_code)]
#[path = "../tests/common/nats/process.rs"]
mod process;

/// The server binary's allocator, so the in-process server runs as `userbus serve`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load connections and pipeline depth of the REGISTER runs.
const CONNECTIONS: usize = 50;
const PIPELINE: usize = 16;
/// The paced load: REGISTERs per second in all, over this many connections at P=1.
const PACED_RATE: f64 = 1000.0;
const PACED_CONNECTIONS: usize = 4;
/// Seconds each measured phase runs, and `--quick`.
const PHASE_SECS: (f64, f64) = (5.0, 1.0);
/// Seconds the limit publishes before it starts counting, and `--quick`.
const WARMUP_SECS: (f64, f64) = (1.0, 0.3);
/// Longest wait for the relay's lag to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How often INFO is read while waiting for the lag to drain.
const DRAIN_POLL: Duration = Duration::from_millis(20);
/// Bound on connecting, creating and deleting a stream, the relay's first publish.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// The relay's subject for `user.registered` events, under the default prefix.
const SUBJECT: &str = "userbus.user.registered";
/// The limit's stream (deleted after each measurement: it takes the relay's
/// subjects).
const LIMIT_STREAM: &str = "BENCH_LIMIT";
/// The token of the limit's NATS connection.
const NATS: Token = Token(0);

/// The CPU the server thread (and the limit's publisher) runs on when pinned.
const SERVER_CPU: usize = 1;
/// The CPU the load runs on when pinned.
const LOAD_CPU: usize = 0;
/// Thread names, for the CPU figures.
const SERVER_THREAD: &str = "userbus-server";
const LIMIT_THREAD: &str = "nats-limit";

/// Pins the calling thread (and the threads it starts from now on) to `cpu`.
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("CPU index within the CPU set");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .unwrap_or_else(|e| panic!("cannot pin to CPU {cpu}: {e}"));
}

/// The CPUs this process could use before `main` pinned it.
static ALL_CPUS: std::sync::OnceLock<nix::sched::CpuSet> = std::sync::OnceLock::new();

/// Runs `f` on a thread with `ALL_CPUS`, so that the processes `f` starts
/// (nats-server, python3) do not inherit the load's pinning.
fn unpinned<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(set) = ALL_CPUS.get() {
                    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), set)
                        .unwrap_or_else(|e| panic!("cannot unpin: {e}"));
                }
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Whether CPUs 0 and 1 are both ours to pin to.
fn can_pin() -> bool {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).is_ok_and(|set| {
        [LOAD_CPU, SERVER_CPU]
            .iter()
            .all(|&c| set.is_set(c).unwrap_or(false))
    })
}

/// The measurements a FILTER argument picks by name, and their replica counts.
const REPLICAS: &[(&str, u32)] = &[("nats r1", 1), ("nats r3", 3)];

/// Command-line options (cargo passes `--bench` too; it is ignored).
struct Options {
    quick: bool,
    json: bool,
    pin: bool,
    windows: Vec<usize>,
    replicas: Vec<u32>,
    /// Pins every nats-server to this CPU (a diagnostic: where the reactor's
    /// CPU goes).
    nats_cpu: Option<usize>,
    durability: Durability,
    /// Measure `--durability replicated` against strict instead.
    replicated: bool,
}

fn options() -> Options {
    let mut o = Options {
        quick: false,
        json: false,
        pin: true,
        windows: vec![MAX_IN_FLIGHT],
        replicas: Vec::new(),
        nats_cpu: None,
        durability: Durability::default(),
        replicated: false,
    };
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = true,
            "--no-pin" => o.pin = false,
            "--replicated" => o.replicated = true,
            "--window" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 && !o.windows.contains(&n) => o.windows.push(n),
                Some(n) if n > 0 => {}
                _ => panic!("--window takes a number of publishes in flight"),
            },
            "--nats-cpu" => {
                let cpu = args.next().and_then(|n| n.parse().ok());
                o.nats_cpu = Some(cpu.expect("--nats-cpu takes a CPU number"));
            }
            "--durability" => {
                let d = args.next().and_then(|d| d.parse().ok());
                o.durability = d.expect("--durability takes strict or normal");
            }
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    // As scenarios.rs filters (`cargo bench -- FILTER` reaches both benches).
    o.replicas = REPLICAS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .map(|&(_, r)| r)
        .collect();
    o
}

/// The pids of this process's nats-server children.
fn nats_server_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse().ok()?;
            let (comm, _, ppid) = stat_of(&format!("/proc/{pid}/stat"))?;
            (ppid == me && comm == "nats-server").then_some(pid)
        })
        .collect()
}

/// Pins every thread of every nats-server child to `cpu` (threads they start
/// later inherit it).
fn pin_nats_servers(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("CPU index within the CPU set");
    for pid in nats_server_pids() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for tid in tasks
            .flatten()
            .filter_map(|t| t.file_name().to_str()?.parse().ok())
        {
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set).unwrap_or_else(
                |e| panic!("cannot pin nats-server thread {tid} to CPU {cpu}: {e}"),
            );
        }
    }
}

/// Whether `program args` runs and exits 0.
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// One node or a cluster, for as long as it is in scope.
enum Nats {
    One(process::NatsServer),
    Cluster(cluster::NatsCluster),
}

impl Nats {
    fn start(replicas: u32) -> Nats {
        if replicas == 1 {
            Nats::One(process::NatsServer::start())
        } else {
            Nats::Cluster(cluster::NatsCluster::start(replicas as usize))
        }
    }

    /// `--nats` for every node.
    fn urls(&self) -> String {
        match self {
            Nats::One(s) => s.url(),
            Nats::Cluster(c) => c.urls(),
        }
    }

    /// A test client on a running node.
    fn client(&self) -> client::NatsTestClient {
        match self {
            Nats::One(s) => s.client(),
            Nats::Cluster(c) => c.any_client(),
        }
    }
}

fn main() {
    let opts = options();
    let pick = |pair: (f64, f64)| if opts.quick { pair.1 } else { pair.0 };
    let secs = pick(PHASE_SECS);
    let warmup = pick(WARMUP_SECS);
    if opts.replicas.is_empty() {
        eprintln!("nats: no measurement matches the filters (nats r1, nats r3)");
        return;
    }
    if !runs("nats-server", &["--version"]) {
        let note = "nats-server is not installed (Debian: apt-get install nats-server); \
                    skipping the NATS bench";
        eprintln!("note: {note}");
        if opts.json {
            println!("{}", serde_json::json!({ "skipped": note }));
        }
        return;
    }
    let nats_py = runs("python3", &["-c", "import nats"]);
    if !nats_py {
        eprintln!("note: python3 cannot import nats (pip install nats-py); no receipt latency");
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pin = opts.pin && can_pin();
    if let Ok(set) = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        let _ = ALL_CPUS.set(set);
    }
    if pin {
        // The load threads start from this one and inherit its CPU.
        pin_to(LOAD_CPU);
    }
    let started = Instant::now();
    if opts.replicated {
        replicated_main(&opts, (secs, warmup), pin, cores, started);
        return;
    }
    let mut results = Vec::new();
    for &replicas in &opts.replicas {
        eprintln!("R={replicas}: starting nats-server ...");
        let nats = unpinned(|| Nats::start(replicas));
        if let Some(cpu) = opts.nats_cpu {
            pin_nats_servers(cpu);
        }
        let urls = nats.urls();
        let mut limits = Vec::new();
        for &window in &opts.windows {
            eprintln!("R={replicas}: the limit, window {window} ...");
            limits.push(limit_on_thread(&urls, replicas, window, warmup, secs, pin));
        }
        eprintln!("R={replicas}: REGISTER P={PIPELINE} without the relay ...");
        let off = register_load(&Running::start(None, opts.durability, pin), secs);
        eprintln!("R={replicas}: the relay ...");
        let relay = relay_run(&urls, replicas, opts.durability, secs, pin, nats_py);
        drop(nats);
        results.push(PerReplicas::new(replicas, limits, off, relay));
    }
    let took = started.elapsed();
    if opts.json {
        let doc = serde_json::json!({
            "quick": opts.quick,
            "pinned": pin,
            "nats_cpu": opts.nats_cpu,
            "cores": cores,
            "seconds": took.as_secs_f64(),
            "durability": opts.durability.to_string(),
            "results": results,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        );
    } else {
        print!(
            "{}",
            table(&results, cores, pin, opts.nats_cpu, opts.durability, took)
        );
    }
}

/// Everything measured against one replica count.
#[derive(Serialize)]
struct PerReplicas {
    replicas: u32,
    limits: Vec<Limit>,
    off: Load,
    relay: RelayRun,
    /// REGISTER/s with the relay over without it (goal: at least 0.8).
    register_on_off: f64,
    /// The relay's events/s under the load over the limit with the relay's
    /// window (goal: at least 0.8).
    relay_over_limit: f64,
}

impl PerReplicas {
    fn new(replicas: u32, limits: Vec<Limit>, off: Load, relay: RelayRun) -> PerReplicas {
        let limit = limits
            .iter()
            .find(|l| l.window == MAX_IN_FLIGHT)
            .map_or(f64::NAN, |l| l.msgs_per_sec);
        PerReplicas {
            register_on_off: relay.load.report.requests_per_sec / off.report.requests_per_sec,
            relay_over_limit: relay.relay_events_per_sec / limit,
            replicas,
            limits,
            off,
            relay,
        }
    }
}

/// Cores used (CPU-seconds per second) by the parts of the run.
#[derive(Serialize, Default, Clone, Copy)]
struct Cpu {
    /// The server thread, or the limit's publisher.
    server: f64,
    /// The load threads.
    load: f64,
    /// Every nats-server process.
    nats_server: f64,
}

/// CPU time so far, in clock ticks, by part.
#[derive(Default)]
struct CpuTicks {
    /// This process, with the threads that ended.
    process: u64,
    /// The server thread, or the limit's publisher.
    server: u64,
    nats_server: u64,
}

/// `utime + stime`, `comm` and parent pid of a `/proc/.../stat`.
fn stat_of(path: &str) -> Option<(String, u64, u32)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (head, tail) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = tail.split_whitespace().collect();
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((comm, ticks, ppid))
}

impl CpuTicks {
    fn now() -> CpuTicks {
        let mut t = CpuTicks {
            process: stat_of("/proc/self/stat").map_or(0, |s| s.1),
            ..CpuTicks::default()
        };
        if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
            for e in dir.flatten() {
                if let Some((comm, ticks, _)) = stat_of(&format!("{}/stat", e.path().display()))
                    && (comm == SERVER_THREAD || comm == LIMIT_THREAD)
                {
                    t.server += ticks;
                }
            }
        }
        for pid in nats_server_pids() {
            t.nats_server += stat_of(&format!("/proc/{pid}/stat")).map_or(0, |s| s.1);
        }
        t
    }

    /// Cores used between `self` and now, over `secs` of wall time. The load is
    /// the rest of this process (its main thread only waits meanwhile).
    fn cores_since(&self, secs: f64) -> Cpu {
        static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
        let tck = *TCK.get_or_init(|| {
            Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .unwrap_or(100.0)
        });
        let n = CpuTicks::now();
        let server = n.server.saturating_sub(self.server);
        let per = |ticks: u64| ticks as f64 / tck / secs;
        Cpu {
            server: per(server),
            load: per(n
                .process
                .saturating_sub(self.process)
                .saturating_sub(server)),
            nats_server: per(n.nats_server.saturating_sub(self.nats_server)),
        }
    }
}

/// The limit for one replica count and window.
#[derive(Serialize)]
struct Limit {
    window: usize,
    payload_bytes: usize,
    messages: u64,
    msgs_per_sec: f64,
    /// Publish → ack, milliseconds.
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    /// Acks handled per wake-up of the publisher's poll loop.
    acks_per_wakeup: f64,
    cpu: Cpu,
}

/// Runs the limit on a thread of its own, on the server's CPU when pinned.
fn limit_on_thread(
    urls: &str,
    replicas: u32,
    window: usize,
    warmup: f64,
    secs: f64,
    pin: bool,
) -> Limit {
    let urls = urls.to_string();
    std::thread::Builder::new()
        .name(LIMIT_THREAD.into())
        .spawn(move || {
            if pin {
                pin_to(SERVER_CPU);
            }
            let mut p = Publisher::connect(&urls).unwrap_or_else(|e| panic!("limit: {e}"));
            let spec = StreamSpec::new(LIMIT_STREAM, &["userbus.>"], replicas);
            p.api(
                &jetstream::stream_create_subject(LIMIT_STREAM),
                &spec.create_request(),
            )
            .unwrap_or_else(|e| panic!("limit: create stream: {e}"));
            let limit = p
                .measure(window, warmup, secs)
                .unwrap_or_else(|e| panic!("limit: {e}"));
            p.api(&format!("$JS.API.STREAM.DELETE.{LIMIT_STREAM}"), b"")
                .unwrap_or_else(|e| panic!("limit: delete stream: {e}"));
            limit
        })
        .expect("spawn the limit's thread")
        .join()
        .unwrap_or_else(|_| panic!("the limit's thread panicked"))
}

/// The limit's publisher: the project's NATS client on a poll loop of its own.
struct Publisher {
    poll: Poll,
    events: Events,
    client: Client,
}

impl Publisher {
    fn connect(urls: &str) -> Result<Publisher, String> {
        let servers = parse_servers(urls).map_err(|e| e.to_string())?;
        let mut options = ClientOptions::new(servers);
        options.name = "userbus bench".into();
        let mut p = Publisher {
            poll: Poll::new().map_err(|e| e.to_string())?,
            events: Events::with_capacity(64),
            client: Client::new(options, NATS),
        };
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while Instant::now() < deadline {
            p.turn(Duration::from_millis(100));
            while let Some(event) = p.client.poll_event() {
                if let NatsEvent::Connected { .. } = event {
                    return Ok(p);
                }
            }
        }
        Err(format!("not connected to {urls} in {SETUP_TIMEOUT:?}"))
    }

    /// Writes what is queued, waits up to `wait` for readiness, handles it and
    /// the client's timers.
    fn turn(&mut self, wait: Duration) {
        let now = Instant::now();
        self.client.flush(self.poll.registry(), now);
        let wait = self
            .client
            .next_deadline()
            .map_or(wait, |d| d.saturating_duration_since(now).min(wait));
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            assert!(e.kind() == std::io::ErrorKind::Interrupted, "poll: {e}");
            return;
        }
        let now = Instant::now();
        for ev in self.events.iter() {
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            self.client
                .ready(self.poll.registry(), readable, ev.is_writable(), now);
        }
        if self.client.next_deadline().is_some_and(|d| d <= now) {
            self.client.on_timer(self.poll.registry(), now);
        }
    }

    /// A JetStream API request that must succeed; its answer, unread.
    fn api(&mut self, subject: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let id = self
            .client
            .request(subject, &[], body)
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while Instant::now() < deadline {
            self.turn(Duration::from_millis(100));
            while let Some(event) = self.client.poll_event() {
                match event {
                    NatsEvent::Reply {
                        id: got,
                        status,
                        payload,
                        ..
                    } if got == id => {
                        let text = String::from_utf8_lossy(&payload);
                        if status.is_some() || text.contains("\"error\"") {
                            return Err(format!("{subject}: {status:?} {text}"));
                        }
                        return Ok(payload);
                    }
                    NatsEvent::Disconnected { reason, .. } => return Err(reason.to_string()),
                    _ => {}
                }
            }
        }
        Err(format!("{subject}: no answer in {SETUP_TIMEOUT:?}"))
    }

    /// Publishes the relay's messages with `window` in flight for `warmup`, then
    /// counts the acks of the next `secs`.
    fn measure(&mut self, window: usize, warmup: f64, secs: f64) -> Result<Limit, String> {
        let writer = format!("bench{}", bench::workload::run_id());
        let name_prefix = bench::workload::run_id();
        let mut fields = BTreeMap::new();
        let (k, v) = bench::workload::FIELD;
        fields.insert(k.to_string(), v.to_string());
        let mut in_flight: VecDeque<(i64, RequestId, Instant)> = VecDeque::new();
        let (mut next, mut confirmed) = (1i64, 0i64);
        let mut payload = Vec::with_capacity(256);
        let mut payload_bytes = 0;
        let counting_from = Instant::now() + Duration::from_secs_f64(warmup);
        let mut counting: Option<(Instant, i64, CpuTicks)> = None;
        let (mut wakeups, mut acks) = (0u64, 0u64);
        let mut ack_us: Vec<u32> = Vec::new();
        loop {
            let now = Instant::now();
            if counting.is_none() && now >= counting_from {
                counting = Some((now, confirmed, CpuTicks::now()));
            }
            if let Some((from, base, ticks)) = &counting
                && now.duration_since(*from).as_secs_f64() >= secs
            {
                let elapsed = now.duration_since(*from).as_secs_f64();
                let messages = (confirmed - base) as u64;
                ack_us.sort_unstable();
                let pct = |p: f64| {
                    let i = ((ack_us.len() as f64 * p).ceil() as usize).saturating_sub(1);
                    ack_us.get(i).map_or(0.0, |&u| f64::from(u) / 1000.0)
                };
                let limit = Limit {
                    window,
                    payload_bytes,
                    messages,
                    msgs_per_sec: messages as f64 / elapsed,
                    ack_p50_ms: pct(0.50),
                    ack_p99_ms: pct(0.99),
                    acks_per_wakeup: acks as f64 / wakeups.max(1) as f64,
                    cpu: ticks.cores_since(elapsed),
                };
                self.settle(&mut in_flight)?;
                return Ok(limit);
            }
            // As the relay's publish(): one message per committed event.
            while in_flight.len() < window {
                let event = Event {
                    seq: next,
                    kind: EventKind::Registered,
                    user_id: next,
                    name: format!("{name_prefix}-{next}"),
                    fields: fields.clone(),
                    before: None,
                    at_ms: userbus::clock::now_ms(),
                };
                payload.clear();
                event.write_json(&mut payload);
                payload_bytes = payload.len();
                let id = msg_id(&writer, next);
                let expected = (next - 1).to_string();
                let previous = msg_id(&writer, next - 1);
                let mut headers = vec![
                    (jetstream::MSG_ID, id.as_str()),
                    (jetstream::EXPECTED_LAST_SEQUENCE, expected.as_str()),
                ];
                if next > 1 {
                    headers.push((jetstream::EXPECTED_LAST_MSG_ID, previous.as_str()));
                }
                let request = self
                    .client
                    .request(SUBJECT, &headers, &payload)
                    .map_err(|e| format!("publish {next}: {e}"))?;
                in_flight.push_back((next, request, now));
                next += 1;
            }
            self.turn(Duration::from_millis(100));
            wakeups += u64::from(counting.is_some());
            let now = Instant::now();
            while let Some(event) = self.client.poll_event() {
                match event {
                    NatsEvent::Reply {
                        id,
                        status,
                        payload,
                        ..
                    } => {
                        let Some(pos) = in_flight.iter().position(|f| f.1 == id) else {
                            continue;
                        };
                        let seq = in_flight[pos].0;
                        match jetstream::parse_pub_ack(status.as_ref(), &payload) {
                            Ok(ack) if ack.seq == seq as u64 && !ack.duplicate => {}
                            other => return Err(format!("publish {seq}: {other:?}")),
                        }
                        for (_, _, sent) in in_flight.drain(..=pos) {
                            if counting.is_some() {
                                acks += 1;
                                let us = now.duration_since(sent).as_micros();
                                ack_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                            }
                        }
                        confirmed = seq;
                    }
                    NatsEvent::Disconnected { reason, .. } => {
                        return Err(format!("disconnected: {reason}"));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Waits for the acks of what is still in flight.
    fn settle(
        &mut self,
        in_flight: &mut VecDeque<(i64, RequestId, Instant)>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while !in_flight.is_empty() {
            if Instant::now() >= deadline {
                return Err(format!("{} acks missing", in_flight.len()));
            }
            self.turn(Duration::from_millis(100));
            while let Some(event) = self.client.poll_event() {
                if let NatsEvent::Reply { id, .. } = event
                    && let Some(pos) = in_flight.iter().position(|f| f.1 == id)
                {
                    in_flight.drain(..=pos);
                }
            }
        }
        Ok(())
    }
}

/// A server on its own thread, relaying to `nats` when given.
struct Running {
    addr: SocketAddr,
    http: Option<SocketAddr>,
    dialer: Dialer,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<userbus::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(nats: Option<(&str, u32)>, durability: Durability, pin: bool) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let http_port = match nats {
            // A free port a moment ago (0 would turn the HTTP side off).
            Some(_) => TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port(),
            None => 0,
        };
        let config = Config {
            port: 0,
            http_port,
            db: dir.path().join("userbus.db"),
            durability,
            nats: nats.map(|(urls, _)| urls.to_string()),
            nats_replicas: nats.map_or(1, |(_, r)| r),
            ..Config::default()
        };
        let server = Server::builder(config).build().expect("server builds");
        let addr = server.local_addr().expect("bound address");
        let http = server.http_addr();
        let handle = server.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name(SERVER_THREAD.into())
            .spawn(move || {
                if pin {
                    pin_to(SERVER_CPU);
                }
                server.run()
            })
            .expect("spawn the server thread");
        let (dialer, _) = Dialer::resolve("127.0.0.1", addr.port(), None).expect("dial the server");
        Running {
            addr,
            http,
            dialer,
            handle,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// A numeric field of INFO `section`.
    fn info(&self, section: &str, field: &str) -> u64 {
        info_field(&self.dialer, section, field)
            .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
    }

    /// Waits until the relay has confirmed every committed event; the time it
    /// took, or `None` after `limit`.
    fn drain(&self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            let last = self.info("events", "events_last_seq");
            if self.info("nats", "nats_confirmed_seq") >= last {
                return Some(started.elapsed());
            }
            if started.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(DRAIN_POLL);
        }
    }

    /// Registers one user and waits until the relay published it: the relay
    /// has created the stream and runs.
    fn publish_first_event(&self) {
        let mut a = register_args(self, 1, 1);
        a.requests = Some(1);
        run(&a);
        self.drain(SETUP_TIMEOUT)
            .expect("the relay publishes its first event");
    }

    /// The bucket counts of `userbus_nats_ack_seconds` (cumulative, by bound).
    fn ack_buckets(&self) -> Vec<(f64, u64)> {
        let http = self
            .http
            .expect("invariant: the relay's server has HTTP on");
        let mut s = TcpStream::connect(http).expect("connect to /metrics");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .expect("ask for /metrics");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read /metrics");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("userbus_nats_ack_seconds_bucket{le=\"")?;
                let (le, count) = rest.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Which bucket of the ack histogram holds p50 and p99 between two readings.
#[derive(Serialize, Default)]
struct AckBuckets {
    acks: u64,
    /// The upper bound of the bucket that holds p50 (p99), in milliseconds;
    /// infinite past the last bound.
    p50_le_ms: f64,
    p99_le_ms: f64,
}

fn ack_percentiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> AckBuckets {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| {
            let was = before.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
            (le, n.saturating_sub(was))
        })
        .collect();
    let total = diff.last().map_or(0, |d| d.1);
    let bound = |p: f64| {
        let rank = (total as f64 * p).ceil() as u64;
        diff.iter()
            .find(|d| d.1 >= rank.max(1))
            .map_or(f64::INFINITY, |d| d.0 * 1000.0)
    };
    AckBuckets {
        acks: total,
        p50_le_ms: bound(0.50),
        p99_le_ms: bound(0.99),
    }
}

/// A REGISTER run and the CPU it took.
#[derive(Serialize)]
struct Load {
    report: Report,
    cpu: Cpu,
}

fn register_args(server: &Running, connections: usize, pipeline: usize) -> Args {
    let mut a = Args::default();
    a.port = server.addr.port();
    a.test = Test::Register;
    a.connections = connections;
    a.pipeline = pipeline;
    a.quiet = true;
    a
}

fn run(a: &Args) -> Report {
    bench::run(a).unwrap_or_else(|e| panic!("bench {:?} failed: {e}", a.test))
}

/// REGISTER at P=16 over 50 connections for `secs`.
fn register_load(server: &Running, secs: f64) -> Load {
    let mut a = register_args(server, CONNECTIONS, PIPELINE);
    a.duration = Some(secs);
    let ticks = CpuTicks::now();
    let started = Instant::now();
    let report = run(&a);
    let cpu = ticks.cores_since(started.elapsed().as_secs_f64());
    Load { report, cpu }
}

/// The paced run: latencies where nothing waits in a queue.
#[derive(Serialize)]
struct Paced {
    rate: f64,
    register_per_sec: f64,
    /// Commit → JetStream ack.
    ack: AckBuckets,
    /// Commit → receipt at nats-py; `None` without nats-py.
    receipt: Option<serde_json::Value>,
}

/// The relay's measurements against one replica count.
#[derive(Serialize)]
struct RelayRun {
    paced: Paced,
    load: Load,
    /// Events the stream confirmed during the load, per second.
    relay_events_per_sec: f64,
    /// Events committed and not yet confirmed when the load stopped.
    lag_at_end: u64,
    /// Seconds from the end of the load until the lag was 0 (`None`: not
    /// within `DRAIN_TIMEOUT`).
    drain_secs: Option<f64>,
    /// The relay's rate while it drained (REGISTER idle).
    drain_events_per_sec: Option<f64>,
    /// Cores used while it drained: the server thread's is the relay's own.
    drain_cpu: Cpu,
    /// Publish → ack under the load.
    load_ack: AckBuckets,
}

fn relay_run(
    urls: &str,
    replicas: u32,
    durability: Durability,
    secs: f64,
    pin: bool,
    nats_py: bool,
) -> RelayRun {
    let server = Running::start(Some((urls, replicas)), durability, pin);
    server.publish_first_event();

    let receipt =
        nats_py.then(|| unpinned(|| Receipt::start(urls, &Config::default().nats_stream)));
    let before = server.ack_buckets();
    let mut a = register_args(&server, PACED_CONNECTIONS, 1);
    a.rate = Some(PACED_RATE);
    a.duration = Some(secs);
    let paced = run(&a);
    server.drain(DRAIN_TIMEOUT).expect("the paced load drains");
    let paced = Paced {
        rate: PACED_RATE,
        register_per_sec: paced.requests_per_sec,
        ack: ack_percentiles(&before, &server.ack_buckets()),
        receipt: receipt.map(Receipt::finish),
    };

    let before = server.ack_buckets();
    let confirmed = server.info("nats", "nats_confirmed_seq");
    let started = Instant::now();
    let load = register_load(&server, secs);
    let confirmed_after = server.info("nats", "nats_confirmed_seq");
    let last = server.info("events", "events_last_seq");
    let load_secs = started.elapsed().as_secs_f64();
    let load_ack = ack_percentiles(&before, &server.ack_buckets());
    let lag_at_end = last.saturating_sub(confirmed_after);
    let ticks = CpuTicks::now();
    let drain = server.drain(DRAIN_TIMEOUT);
    let drain_cpu = ticks.cores_since(drain.map_or(f64::NAN, |d| d.as_secs_f64()));
    RelayRun {
        paced,
        relay_events_per_sec: (confirmed_after - confirmed) as f64 / load_secs,
        lag_at_end,
        drain_secs: drain.map(|d| d.as_secs_f64()),
        drain_events_per_sec: drain.map(|d| lag_at_end as f64 / d.as_secs_f64()),
        drain_cpu,
        load_ack,
        load,
    }
}

/// `benches/nats_receipt.py`, subscribed and waiting for events.
struct Receipt {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Receipt {
    fn start(urls: &str, stream: &str) -> Receipt {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/nats_receipt.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([urls, stream, "userbus.>"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read nats_receipt.py");
        assert_eq!(line.trim(), "ready", "nats_receipt.py did not subscribe");
        Receipt { child, stdout }
    }

    /// Its figures, once it saw no message for a second.
    fn finish(mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read nats_receipt.py");
        let status = self.child.wait().expect("nats_receipt.py ends");
        assert!(status.success(), "nats_receipt.py failed ({status})");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("nats_receipt.py: {line:?}: {e}"))
    }
}

/// `<= X ms` for a bucket's bound; past the last bound, `> 5000 ms`.
fn le_ms(v: f64) -> String {
    if v.is_finite() {
        format!("<= {v} ms")
    } else {
        "> 5000 ms".into()
    }
}

/// One row of the rates table.
fn rate_row(s: &mut String, what: &str, rate: f64, ratio: Option<f64>, cpu: Option<&Cpu>) {
    let ratio = ratio.map_or_else(String::new, |r| format!("{r:.2}"));
    let _ = write!(s, "  {what:<30} {rate:>10.0} {ratio:>7}");
    if let Some(c) = cpu {
        let _ = write!(
            s,
            "   {:>6.2} {:>6.2} {:>6.2}",
            c.server, c.load, c.nats_server
        );
    }
    s.push('\n');
}

fn table(
    results: &[PerReplicas],
    cores: usize,
    pin: bool,
    nats_cpu: Option<usize>,
    durability: Durability,
    took: Duration,
) -> String {
    let mut s = String::new();
    let placement = if pin {
        format!(
            "server thread (and the limit's publisher) on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}"
        )
    } else {
        "not pinned".to_string()
    };
    let nats_placement = nats_cpu.map_or_else(
        || "nats-server and nats-py left to the scheduler".to_string(),
        |c| format!("nats-server pinned to CPU {c}, nats-py left to the scheduler"),
    );
    let _ = writeln!(
        s,
        "userbus -> NATS JetStream: nats-server {}, {cores} cores, {placement}, {nats_placement}; \
         REGISTER {CONNECTIONS} connections P={PIPELINE}, durability {}",
        nats_server_version(),
        durability
    );
    for r in results {
        let rr = &r.relay;
        let limit = r.limits.iter().find(|l| l.window == MAX_IN_FLIGHT);
        let limit_rate = limit.map_or(f64::NAN, |l| l.msgs_per_sec);
        let (on, off) = (
            rr.load.report.requests_per_sec,
            r.off.report.requests_per_sec,
        );
        let _ = writeln!(
            s,
            "\nR={:<29} {:>10} {:>7}   {:>6} {:>6} {:>6}",
            r.replicas, "per sec", "ratio", "server", "load", "nats"
        );
        for l in &r.limits {
            let what = format!("limit msgs, window {}", l.window);
            rate_row(&mut s, &what, l.msgs_per_sec, None, Some(&l.cpu));
        }
        if let Some(l) = limit {
            let _ = writeln!(
                s,
                "  (limit: {} B event JSON and the 3 headers a message; {:.0} acks per wake-up)",
                l.payload_bytes, l.acks_per_wakeup
            );
        }
        rate_row(&mut s, "REGISTER, relay off", off, None, Some(&r.off.cpu));
        rate_row(
            &mut s,
            "REGISTER, relay on",
            on,
            Some(r.register_on_off),
            Some(&rr.load.cpu),
        );
        rate_row(
            &mut s,
            "relay events during REGISTER",
            rr.relay_events_per_sec,
            Some(r.relay_over_limit),
            None,
        );
        match (rr.drain_secs, rr.drain_events_per_sec) {
            (Some(d), Some(rate)) => {
                rate_row(
                    &mut s,
                    "relay events, draining after",
                    rate,
                    Some(rate / limit_rate),
                    Some(&rr.drain_cpu),
                );
                let _ = writeln!(
                    s,
                    "  (lag {} events when the load stopped, drained in {d:.1} s)",
                    rr.lag_at_end
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "  lag {} events when the load stopped: not drained in {DRAIN_TIMEOUT:?}",
                    rr.lag_at_end
                );
            }
        }
        let commits = |r: &Report| r.commits.map(|c| c as f64 / r.seconds);
        if let (Some(c_off), Some(c_on)) = (commits(&r.off.report), commits(&rr.load.report)) {
            let _ = writeln!(
                s,
                "  (commits/s: relay off {c_off:.0}, {:.0} REGISTERs a commit; relay on {c_on:.0}, \
                 {:.0} REGISTERs and {:.0} relayed events a commit)",
                off / c_off,
                on / c_on,
                rr.relay_events_per_sec / c_on
            );
        }
        let _ = writeln!(
            s,
            "  ratios: REGISTER on/off {:.2}, relay/limit {:.2} (goals >= 0.8)",
            r.register_on_off, r.relay_over_limit
        );
        let p = &rr.paced;
        let _ = writeln!(s, "  {:<46} {:>12} {:>12}", "latency", "p50", "p99");
        let _ = writeln!(
            s,
            "  {:<46} {:>12} {:>12}",
            format!("commit -> JetStream ack, paced {:.0}/s", p.register_per_sec),
            le_ms(p.ack.p50_le_ms),
            le_ms(p.ack.p99_le_ms)
        );
        let ms = |v: &serde_json::Value| {
            v.as_f64()
                .map_or_else(|| "-".to_string(), |m| format!("{m:.1} ms"))
        };
        match &p.receipt {
            Some(v) => {
                let _ = writeln!(
                    s,
                    "  {:<46} {:>12} {:>12}",
                    "commit -> nats-py receipt (from `at`), paced",
                    ms(&v["p50_ms"]),
                    ms(&v["p99_ms"])
                );
            }
            None => {
                let _ = writeln!(s, "  commit -> nats-py receipt: skipped (no nats-py)");
            }
        }
        let _ = writeln!(
            s,
            "  {:<46} {:>12} {:>12}",
            format!("publish -> JetStream ack, REGISTER P={PIPELINE}"),
            le_ms(rr.load_ack.p50_le_ms),
            le_ms(rr.load_ack.p99_le_ms)
        );
        if let Some(l) = limit {
            let _ = writeln!(
                s,
                "  {:<46} {:>12} {:>12}",
                "publish -> JetStream ack, limit",
                format!("{:.2} ms", l.ack_p50_ms),
                format!("{:.2} ms", l.ack_p99_ms)
            );
        }
    }
    let _ = writeln!(
        s,
        "\n(cores used: server = the server thread or the limit's publisher, load = the \
         REGISTER load, nats = every nats-server; took {:.0} s)",
        took.as_secs_f64()
    );
    s
}

/// `v2.9.10`, from `nats-server --version`.
fn nats_server_version() -> String {
    Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace().last().map(str::to_string)
        })
        .unwrap_or_default()
}

/// The REGISTER runs of one mode against one replica count.
#[derive(Serialize)]
struct ModeRuns {
    replicas: u32,
    mode: &'static str,
    /// One report per pipeline depth of `REPLICATED_PIPELINES`.
    runs: Vec<Report>,
}

/// The pipeline depths of the replicated comparison.
const REPLICATED_PIPELINES: [usize; 2] = [1, PIPELINE];

/// `--replicated`: strict without the relay, strict with it, replicated.
fn replicated_main(
    opts: &Options,
    (secs, warmup): (f64, f64),
    pin: bool,
    cores: usize,
    started: Instant,
) {
    let mut results = Vec::new();
    for &replicas in &opts.replicas {
        eprintln!("R={replicas}: starting nats-server ...");
        let nats = unpinned(|| Nats::start(replicas));
        let urls = nats.urls();
        // Strict first and last: the machine's drift over the run shows, and the
        // ratios are to the mean of the two.
        for (mode, relay, durability) in [
            ("strict", false, Durability::Strict),
            ("strict + relay", true, Durability::Strict),
            ("replicated", true, Durability::Replicated),
            ("strict (again)", false, Durability::Strict),
        ] {
            if relay {
                // A fresh database is a new writer: it starts on an empty stream.
                let mut c = nats.client();
                if c.try_stream_info("USERBUS").is_some() {
                    c.delete_stream("USERBUS");
                }
            }
            let server =
                Running::start(relay.then_some((urls.as_str(), replicas)), durability, pin);
            if relay {
                server.publish_first_event();
            }
            // Connections, page cache and allocator warmed before anything counts.
            let mut a = register_args(&server, CONNECTIONS, PIPELINE);
            a.duration = Some(warmup);
            run(&a);
            let mut runs = Vec::new();
            for pipeline in REPLICATED_PIPELINES {
                eprintln!("R={replicas}: {mode}, REGISTER P={pipeline} ...");
                let mut a = register_args(&server, CONNECTIONS, pipeline);
                a.duration = Some(secs);
                runs.push(run(&a));
            }
            results.push(ModeRuns {
                replicas,
                mode,
                runs,
            });
        }
        drop(nats);
    }
    if opts.json {
        let doc = serde_json::json!({
            "quick": opts.quick,
            "pinned": pin,
            "cores": cores,
            "seconds": started.elapsed().as_secs_f64(),
            "results": results,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        );
        return;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "REGISTER, {CONNECTIONS} connections, {secs} s a run: nats-server {}, {cores} cores, {}",
        nats_server_version(),
        if pin {
            "server thread on CPU 1, load on CPU 0"
        } else {
            "not pinned"
        }
    );
    let _ = writeln!(
        s,
        "{:>2} {:<15} {:>3} {:>10} {:>9} {:>9} {:>9} {:>7}",
        "R", "mode", "P", "req/s", "vs strict", "p50 ms", "p99 ms", "errors"
    );
    for m in &results {
        let strict: Vec<&ModeRuns> = results
            .iter()
            .filter(|b| b.replicas == m.replicas && b.mode.starts_with("strict ("))
            .chain(
                results
                    .iter()
                    .filter(|b| b.replicas == m.replicas && b.mode == "strict"),
            )
            .collect();
        for (i, r) in m.runs.iter().enumerate() {
            let rates: Vec<f64> = strict
                .iter()
                .filter_map(|b| b.runs.get(i))
                .map(|b| b.requests_per_sec)
                .collect();
            let base = rates.iter().sum::<f64>() / rates.len() as f64;
            let _ = writeln!(
                s,
                "{:>2} {:<15} {:>3} {:>10.0} {:>9.2} {:>9.3} {:>9.3} {:>7}",
                m.replicas,
                m.mode,
                r.pipeline,
                r.requests_per_sec,
                r.requests_per_sec / base,
                r.latency_ms.p50,
                r.latency_ms.p99,
                r.errors
            );
        }
    }
    let _ = writeln!(s, "took {:.0} s", started.elapsed().as_secs_f64());
    print!("{s}");
}
