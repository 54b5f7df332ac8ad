//! `cargo bench`: the standard load scenarios against a server this process starts
//! on an ephemeral port with a temporary database, driven by the same library code
//! as `userbus bench`; then the storage limit, the rate at which the same REGISTER
//! rows go into a fresh database with no network and no reactor in the way.
//!
//! The storage limit uses the server's own storage layer (`store::Store`: the same
//! pragmas, schema, statements and JSON fields, the user row and its event row in
//! one transaction) with as many registrations per transaction as the server
//! averaged per commit in the matching scenario (INFO `commits` around the run).
//! `server / limit` near 1 means the reactor adds little to what SQLite costs.
//!
//! With two CPUs or more the run is pinned as `compare-redis.sh` pins its servers:
//! the server thread, and the storage limit after it, on CPU 1, the load on CPU 0.
//! The limit and the server then have one core each and the same core, so
//! `server / limit` compares like with like. `--no-pin` leaves placement to the
//! scheduler.
//!
//! Usage: `cargo bench [-- [--quick] [--json] [--no-pin] [FILTER ...]]`. A FILTER
//! keeps the scenarios whose name contains it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use userbus::bench::{self, Args, Report, Test};
use userbus::store::Store;
use userbus::{Config, Durability, Server, ShutdownHandle};

/// The server binary's allocator, so the in-process server runs as `userbus serve`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load connections in every scenario (as `compare-redis.sh` uses).
const CONNECTIONS: usize = 50;
/// Subscribers of the fan-out scenario.
const FANOUT_SUBSCRIBERS: usize = 100;
/// Keyspace of the lookup and mixed scenarios, and registrations that fill it.
const KEYSPACE: (u64, u64) = (100_000, 300_000);
/// The same, with `--quick`.
const KEYSPACE_QUICK: (u64, u64) = (10_000, 30_000);
/// Seconds each scenario runs, and `--quick`.
const SCENARIO_SECS: (f64, f64) = (4.0, 1.0);
/// Seconds each storage-limit measurement runs, and `--quick`.
const STORAGE_SECS: (f64, f64) = (3.0, 1.0);

/// The CPU the server thread and the storage limit run on when pinned.
const SERVER_CPU: usize = 1;
/// The CPU the load runs on when pinned.
const LOAD_CPU: usize = 0;

/// Pins the calling thread (and the threads it starts from now on) to `cpu`.
fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("CPU index within the CPU set");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .unwrap_or_else(|e| panic!("cannot pin to CPU {cpu}: {e}"));
}

/// Whether CPUs 0 and 1 are both ours to pin to.
fn can_pin() -> bool {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).is_ok_and(|set| {
        [LOAD_CPU, SERVER_CPU]
            .iter()
            .all(|&c| set.is_set(c).unwrap_or(false))
    })
}

/// A server on its own thread.
struct Running {
    addr: SocketAddr,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<userbus::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(durability: Durability, pin: bool) -> Running {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            port: 0,
            http_port: 0,
            db: dir.path().join("userbus.db"),
            durability,
            ..Config::default()
        };
        let server = Server::builder(config).build().expect("server builds");
        let addr = server.local_addr().expect("bound address");
        let handle = server.shutdown_handle();
        let thread = Some(std::thread::spawn(move || {
            if pin {
                pin_to(SERVER_CPU);
            }
            server.run()
        }));
        Running {
            addr,
            handle,
            thread,
            _dir: dir,
        }
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

/// One scenario.
struct Scenario {
    name: &'static str,
    durability: Durability,
    test: Test,
    pipeline: usize,
    keyspace: bool,
    subscribers: usize,
}

const SCENARIOS: &[Scenario] = &[
    Scenario::new("ping P=1", Durability::Normal, Test::Ping, 1),
    Scenario::new("ping P=16", Durability::Normal, Test::Ping, 16),
    Scenario::new("register strict P=1", Durability::Strict, Test::Register, 1),
    Scenario::new(
        "register strict P=16",
        Durability::Strict,
        Test::Register,
        16,
    ),
    Scenario::new("register normal P=1", Durability::Normal, Test::Register, 1),
    Scenario::new(
        "register normal P=16",
        Durability::Normal,
        Test::Register,
        16,
    ),
    Scenario::new("lookup P=16", Durability::Normal, Test::Lookup, 16).random(),
    Scenario::new("mixed P=1", Durability::Normal, Test::Mixed, 1).random(),
    Scenario::new(
        "fan-out 100 subs P=1",
        Durability::Normal,
        Test::Register,
        1,
    )
    .fanout(),
];

impl Scenario {
    const fn new(name: &'static str, durability: Durability, test: Test, pipeline: usize) -> Self {
        Scenario {
            name,
            durability,
            test,
            pipeline,
            keyspace: false,
            subscribers: 0,
        }
    }

    const fn random(mut self) -> Self {
        self.keyspace = true;
        self
    }

    const fn fanout(mut self) -> Self {
        self.subscribers = FANOUT_SUBSCRIBERS;
        self
    }
}

/// Command-line options (cargo passes `--bench` too; it is ignored).
struct Options {
    quick: bool,
    json: bool,
    pin: bool,
    filters: Vec<String>,
}

fn options() -> Options {
    let mut o = Options {
        quick: false,
        json: false,
        pin: true,
        filters: Vec::new(),
    };
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--json" => o.json = true,
            "--no-pin" => o.pin = false,
            s if s.starts_with('-') => {}
            s => o.filters.push(s.to_string()),
        }
    }
    o
}

/// A scenario's result.
struct Measured {
    scenario: &'static Scenario,
    report: Report,
}

/// The storage limit for one register scenario.
#[derive(serde::Serialize)]
struct Limit {
    scenario: &'static str,
    durability: String,
    batch: u64,
    rows_per_sec: f64,
    server_per_sec: f64,
    ratio: f64,
}

fn main() {
    let opts = options();
    let pick = |i: usize| opts.quick as usize * i;
    let secs = [SCENARIO_SECS.0, SCENARIO_SECS.1][pick(1)];
    let (keyspace, fill) = [KEYSPACE, KEYSPACE_QUICK][pick(1)];
    let storage_secs = [STORAGE_SECS.0, STORAGE_SECS.1][pick(1)];
    let chosen: Vec<&'static Scenario> = SCENARIOS
        .iter()
        .filter(|s| opts.filters.is_empty() || opts.filters.iter().any(|f| s.name.contains(f)))
        .collect();

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pin = opts.pin && can_pin();
    if pin {
        // The load threads start from this one and inherit its CPU.
        pin_to(LOAD_CPU);
    }
    let started = Instant::now();
    let mut measured = Vec::new();
    // One server per durability, fresh for this run; the keyspace is filled once,
    // before the first scenario that reads it.
    let mut servers: BTreeMap<&'static str, Running> = BTreeMap::new();
    let mut filled = false;
    for s in chosen {
        let key = if s.durability == Durability::Strict {
            "strict"
        } else {
            "normal"
        };
        let server = servers
            .entry(key)
            .or_insert_with(|| Running::start(s.durability, pin));
        let port = server.addr.port();
        if s.keyspace && !filled {
            eprintln!("filling {keyspace} names with {fill} registrations ...");
            let mut a = args(port, Test::Register, 16);
            a.keyspace = Some(keyspace);
            a.requests = Some(fill);
            run(&a);
            filled = true;
        }
        eprintln!("{} ...", s.name);
        let mut a = args(port, s.test, s.pipeline);
        a.duration = Some(secs);
        a.keyspace = s.keyspace.then_some(keyspace);
        a.subscribers = s.subscribers;
        measured.push(Measured {
            scenario: s,
            report: run(&a),
        });
    }
    drop(servers);

    if pin {
        // The storage limit gets the core the server had.
        pin_to(SERVER_CPU);
    }
    let mut limits = Vec::new();
    // Fan-out is bounded by the pushes, not by storage: it has no limit row.
    for m in measured
        .iter()
        .filter(|m| m.scenario.test == Test::Register && m.scenario.subscribers == 0)
    {
        let Some(batch) = m.report.writes_per_commit else {
            continue;
        };
        let batch = batch.round().max(1.0) as u64;
        eprintln!("storage limit for {} (batch {batch}) ...", m.scenario.name);
        let rows_per_sec = storage_limit(m.scenario.durability, batch, storage_secs);
        limits.push(Limit {
            scenario: m.scenario.name,
            durability: m.scenario.durability.to_string(),
            batch,
            rows_per_sec,
            server_per_sec: m.report.requests_per_sec,
            ratio: m.report.requests_per_sec / rows_per_sec,
        });
    }
    let took = started.elapsed();
    if opts.json {
        println!("{}", json(&measured, &limits, opts.quick, cores, pin, took));
    } else {
        print!("{}", table(&measured, &limits, cores, pin, took));
    }
}

fn args(port: u16, test: Test, pipeline: usize) -> Args {
    let mut a = Args::default();
    a.port = port;
    a.test = test;
    a.pipeline = pipeline;
    a.connections = CONNECTIONS;
    a.quiet = true;
    a
}

fn run(a: &Args) -> Report {
    bench::run(a).unwrap_or_else(|e| panic!("bench {:?} failed: {e}", a.test))
}

/// Registrations per second through the server's storage layer alone, `batch` per
/// transaction, for about `secs` seconds, with the server's checkpoints: the
/// checkpointer thread beside it, and the WAL's last frames at its bound.
fn storage_limit(durability: Durability, batch: u64, secs: f64) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("limit.db");
    let mut store = Store::open(&path, durability, 0).expect("open store");
    store
        .start_checkpointer(durability)
        .expect("start the checkpointer");
    let mut fields = BTreeMap::new();
    fields.insert(
        bench::workload::FIELD.0.to_string(),
        bench::workload::FIELD.1.to_string(),
    );
    let budget = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut rows = 0u64;
    let mut name = String::new();
    while started.elapsed() < budget {
        for _ in 0..batch {
            name.clear();
            let _ = write!(name, "limit-{rows}");
            // As REGISTER does per request (the store serializes the fields).
            let now = userbus::clock::now_ms();
            store
                .register(&name, &fields, now)
                .expect("insert")
                .expect("fresh name");
            rows += 1;
        }
        store.finish_tick().expect("commit");
        if store.checkpoint_due() {
            store.checkpoint();
        }
    }
    rows as f64 / started.elapsed().as_secs_f64()
}

fn table(
    measured: &[Measured],
    limits: &[Limit],
    cores: usize,
    pin: bool,
    took: Duration,
) -> String {
    let mut s = String::new();
    let placement = if pin {
        format!("server and storage limit on CPU {SERVER_CPU}, load on CPU {LOAD_CPU}")
    } else {
        "not pinned".to_string()
    };
    let _ = writeln!(
        s,
        "userbus scenarios: {CONNECTIONS} connections, in-process server, {cores} cores, {placement}\n"
    );
    let _ = writeln!(
        s,
        "{:<22} {:>12} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8}",
        "scenario", "requests/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors", "w/commit"
    );
    for m in measured {
        let r = &m.report;
        let l = &r.latency_ms;
        let wpc = r
            .writes_per_commit
            .map_or_else(|| "-".to_string(), |w| format!("{w:.1}"));
        let _ = writeln!(
            s,
            "{:<22} {:>12.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>8}",
            m.scenario.name,
            r.requests_per_sec,
            l.p50,
            l.p99,
            l.p999,
            l.max,
            r.errors + r.lost,
            wpc
        );
        if let Some(f) = &r.fanout {
            let _ = writeln!(
                s,
                "{:<22} {:>12} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7}",
                "  send -> push",
                f.pushes,
                f.latency_ms.p50,
                f.latency_ms.p99,
                f.latency_ms.p999,
                f.latency_ms.max,
                f.missing
            );
            let l = &f.after_reply_ms;
            let _ = writeln!(
                s,
                "{:<22} {:>12} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                "  reply -> push", "", l.p50, l.p99, l.p999, l.max
            );
        }
    }
    if !limits.is_empty() {
        let _ = writeln!(
            s,
            "\nstorage limit: the same rows through store::Store, no network, same batch\n"
        );
        let _ = writeln!(
            s,
            "{:<22} {:>6} {:>12} {:>12} {:>13}",
            "scenario", "batch", "limit rows/s", "server req/s", "server/limit"
        );
        for l in limits {
            let _ = writeln!(
                s,
                "{:<22} {:>6} {:>12.0} {:>12.0} {:>13.2}",
                l.scenario, l.batch, l.rows_per_sec, l.server_per_sec, l.ratio
            );
        }
    }
    let _ = writeln!(s, "\n(took {:.0} s)", took.as_secs_f64());
    s
}

fn json(
    measured: &[Measured],
    limits: &[Limit],
    quick: bool,
    cores: usize,
    pin: bool,
    took: Duration,
) -> String {
    let scenarios: Vec<serde_json::Value> = measured
        .iter()
        .map(|m| {
            serde_json::json!({
                "scenario": m.scenario.name,
                "durability": m.scenario.durability.to_string(),
                "report": m.report,
            })
        })
        .collect();
    let doc = serde_json::json!({
        "quick": quick,
        "pinned": pin,
        "cores": cores,
        "seconds": took.as_secs_f64(),
        "scenarios": scenarios,
        "storage_limit": limits,
    });
    serde_json::to_string_pretty(&doc).expect("JSON values serialize")
}
