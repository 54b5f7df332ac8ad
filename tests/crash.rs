//! Crash safety: the real binary is killed with SIGKILL in the middle of concurrent
//! REGISTER/UNREGISTER load and consumer-group reads, restarted on the same database,
//! and checked against everything it acknowledged before it died.
//!
//! Each test runs [`ROUNDS`] kill/restart rounds on one database in one durability
//! mode. A kill -9 is a process crash, not a power loss, so both modes must keep every
//! acknowledged write. The kill moment is random; the seed is printed, and
//! `CRASH_SEED=<n>` replays a run's timing choices (the scheduling itself is not
//! replayable).
//!
//! What a client was told is a fact; what it was not told (a request written but
//! not answered before the kill) is unknown, and the first restart settles it: from
//! then on the ledger holds the exact state of every name the test ever sent, and
//! every later round must keep it.
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::UserbusProcess;
use common::{IO_TIMEOUT, multibulk};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// Kill/restart rounds per durability mode.
const ROUNDS: usize = 20;
/// Load connections issuing REGISTER/UNREGISTER.
const WRITERS: usize = 4;
/// The kill comes this long after the load started, at random in the range.
const KILL_AFTER_MS: std::ops::Range<u64> = 50..400;
/// Most commands one writer pipelines before reading their replies.
const MAX_PIPELINE: u64 = 24;
/// The consumer group the consumer thread reads with.
const GROUP: &str = "crashgrp";
/// The consumer's name in that group.
const CONSUMER: &str = "c1";

#[test]
fn kill_9_under_load_keeps_every_acknowledged_write_strict() {
    crash_rounds("strict");
}

#[test]
fn kill_9_under_load_keeps_every_acknowledged_write_normal() {
    crash_rounds("normal");
}

fn crash_rounds(durability: &str) {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(time_seed);
    println!("crash test ({durability}): seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crash.db");
    let started = Instant::now();
    let mut ledger = Ledger::default();
    let mut server = serve(&db, durability);
    create_group(server.port);
    for round in 0..ROUNDS {
        let delay = Duration::from_millis(rng.range(KILL_AFTER_MS));
        let load = Load::start(server.port, &format!("{durability}{round}"), &mut rng);
        std::thread::sleep(delay);
        server.kill9();
        let outcome = load.join();
        println!(
            "{durability} round {round}: killed after {} ms; {} registers and {} unregisters acknowledged, \
             {} unanswered; {} entries delivered, {} acknowledged",
            delay.as_millis(),
            outcome.registered.len(),
            outcome.unregistered.len(),
            outcome.unanswered(),
            outcome.delivered.len(),
            outcome.acked.len(),
        );
        assert!(
            outcome.errors.is_empty(),
            "round {round} (seed {seed}): error replies under load: {:?}",
            outcome.errors
        );
        server = serve(&db, durability);
        check_over_resp(server.port, &ledger, &outcome);
        ledger.absorb(outcome);
        check_database(&db, &mut ledger, Open::WhileServing);
        println!(
            "{durability} round {round}: restart verified: {} users present, {} events",
            ledger.present().count(),
            ledger.events.len()
        );
    }
    server.stop();
    check_database(&db, &mut ledger, Open::Stopped);
    println!(
        "crash test ({durability}): {ROUNDS} kills survived in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// The server process.

/// A `userbus serve` process on `db`.
fn serve(db: &Path, durability: &str) -> UserbusProcess {
    UserbusProcess::start(db, &["--durability", durability])
}

// ---------------------------------------------------------------------------
// RESP over raw sockets.

/// A raw connection whose replies are read line by line.
struct Raw {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Raw {
    /// `None` when the server is already gone.
    fn connect(port: u16) -> Option<Raw> {
        let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        s.set_nodelay(true).ok()?;
        Some(Raw {
            r: BufReader::new(s.try_clone().ok()?),
            w: s,
        })
    }

    /// One whole reply line without its CRLF; `None` once the connection is gone
    /// (a line cut short by the kill is no reply).
    fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.r.read_until(b'\n', &mut buf) {
            Ok(_) if buf.ends_with(b"\r\n") => {
                buf.truncate(buf.len() - 2);
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
            _ => None,
        }
    }

    /// A full RESP2 value; `None` once the connection is gone.
    fn value(&mut self) -> Option<Value> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        Some(match kind {
            ":" => Value::Int(rest.parse().ok()?),
            "+" => Value::Simple(rest.to_string()),
            "-" => Value::Error(rest.to_string()),
            "$" => {
                let Ok(n) = rest.parse::<usize>() else {
                    return Some(Value::Nil);
                };
                let mut buf = vec![0; n + 2];
                self.r.read_exact(&mut buf).ok()?;
                buf.truncate(n);
                Value::Bulk(buf)
            }
            "*" => {
                let Ok(n) = rest.parse::<usize>() else {
                    return Some(Value::Nil);
                };
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value()?);
                }
                Value::Array(items)
            }
            _ => Value::Error(format!("unexpected reply line {line:?}")),
        })
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Int(i64),
    Simple(String),
    Error(String),
    Bulk(Vec<u8>),
    Array(Vec<Value>),
}

impl Value {
    fn text(&self) -> Option<String> {
        match self {
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::Simple(s) => Some(s.clone()),
            _ => None,
        }
    }
}

fn create_group(port: u16) {
    let mut c = Raw::connect(port).expect("connect");
    c.w.write_all(&multibulk(&[
        b"XGROUP",
        b"CREATE",
        b"events",
        GROUP.as_bytes(),
        b"0",
    ]))
    .expect("write");
    assert_eq!(c.line().as_deref(), Some("+OK"), "XGROUP CREATE");
}

// ---------------------------------------------------------------------------
// The load.

/// What the clients of one round were told, and what they sent without an answer.
#[derive(Debug, Default)]
struct Outcome {
    /// REGISTERs answered `:id`.
    registered: Vec<(String, i64)>,
    /// REGISTERs sent (perhaps in part) and never answered.
    register_unknown: Vec<String>,
    /// UNREGISTERs answered `:1`.
    unregistered: Vec<String>,
    /// UNREGISTERs sent and never answered.
    unregister_unknown: Vec<String>,
    /// Entries XREADGROUP delivered to the consumer: seq and user name.
    delivered: Vec<(i64, String)>,
    /// Entries an XACK answered for in full.
    acked: Vec<i64>,
    /// Entries an XACK was sent for without an answer.
    ack_unknown: Vec<i64>,
    /// Replies that are neither acknowledgements nor expected refusals.
    errors: Vec<String>,
}

impl Outcome {
    fn unanswered(&self) -> usize {
        self.register_unknown.len() + self.unregister_unknown.len()
    }

    fn merge(&mut self, other: Outcome) {
        self.registered.extend(other.registered);
        self.register_unknown.extend(other.register_unknown);
        self.unregistered.extend(other.unregistered);
        self.unregister_unknown.extend(other.unregister_unknown);
        self.delivered.extend(other.delivered);
        self.acked.extend(other.acked);
        self.ack_unknown.extend(other.ack_unknown);
        self.errors.extend(other.errors);
    }
}

/// The client threads of one round; each runs until its connection dies.
struct Load {
    threads: Vec<std::thread::JoinHandle<Outcome>>,
}

impl Load {
    fn start(port: u16, tag: &str, rng: &mut Rng) -> Load {
        let mut threads = Vec::new();
        for w in 0..WRITERS {
            let prefix = format!("{tag}w{w}");
            let seed = rng.next();
            threads.push(std::thread::spawn(move || writer(port, &prefix, seed)));
        }
        let seed = rng.next();
        threads.push(std::thread::spawn(move || consumer(port, seed)));
        Load { threads }
    }

    fn join(self) -> Outcome {
        let mut all = Outcome::default();
        for t in self.threads {
            all.merge(t.join().expect("load thread panicked"));
        }
        all
    }
}

enum Op {
    Register(String),
    Unregister(String),
}

/// Pipelines REGISTERs of fresh names (each name is registered once, ever) and
/// UNREGISTERs of names this writer saw acknowledged, until the connection dies.
fn writer(port: u16, prefix: &str, seed: u64) -> Outcome {
    let mut out = Outcome::default();
    let mut rng = Rng::new(seed);
    let Some(mut c) = Raw::connect(port) else {
        return out;
    };
    let mut live: Vec<String> = Vec::new();
    let mut next = 0u64;
    loop {
        let depth = rng.range(1..MAX_PIPELINE + 1);
        let mut ops = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..depth {
            if !live.is_empty() && rng.range(0..10) < 3 {
                let i = rng.range(0..live.len() as u64) as usize;
                let name = live.swap_remove(i);
                bytes.extend(multibulk(&[b"UNREGISTER", name.as_bytes()]));
                ops.push(Op::Unregister(name));
            } else {
                let name = format!("{prefix}n{next}");
                let value = format!("v{}", rng.next());
                next += 1;
                bytes.extend(multibulk(&[
                    b"REGISTER",
                    name.as_bytes(),
                    b"tag",
                    value.as_bytes(),
                ]));
                ops.push(Op::Register(name));
            }
        }
        // A failed write may still have delivered a prefix: every op stays unknown.
        let written = c.w.write_all(&bytes).is_ok();
        let mut ops = ops.into_iter();
        if written {
            for op in ops.by_ref() {
                let Some(line) = c.line() else {
                    unknown(&mut out, op);
                    break;
                };
                match op {
                    Op::Register(name) => match line.strip_prefix(':').map(str::parse) {
                        Some(Ok(id)) => {
                            out.registered.push((name.clone(), id));
                            live.push(name);
                        }
                        _ => out.errors.push(format!("REGISTER {name}: {line}")),
                    },
                    Op::Unregister(name) => match line.as_str() {
                        ":1" => out.unregistered.push(name),
                        _ => out.errors.push(format!("UNREGISTER {name}: {line}")),
                    },
                }
            }
        }
        let rest: Vec<Op> = ops.collect();
        if !rest.is_empty() || !written {
            for op in rest {
                unknown(&mut out, op);
            }
            return out;
        }
    }
}

fn unknown(out: &mut Outcome, op: Op) {
    match op {
        Op::Register(name) => out.register_unknown.push(name),
        Op::Unregister(name) => out.unregister_unknown.push(name),
    }
}

/// Reads new entries as consumer `c1` of the group and acknowledges about half of
/// them, until the connection dies.
fn consumer(port: u16, seed: u64) -> Outcome {
    let mut out = Outcome::default();
    let mut rng = Rng::new(seed);
    let Some(mut c) = Raw::connect(port) else {
        return out;
    };
    loop {
        let read = multibulk(&[
            b"XREADGROUP",
            b"GROUP",
            GROUP.as_bytes(),
            CONSUMER.as_bytes(),
            b"COUNT",
            b"20",
            b"STREAMS",
            b"events",
            b">",
        ]);
        if c.w.write_all(&read).is_err() {
            return out;
        }
        let Some(reply) = c.value() else {
            return out;
        };
        let entries = match delivered_entries(&reply) {
            Ok(entries) => entries,
            Err(e) => {
                out.errors.push(e);
                return out;
            }
        };
        if entries.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        out.delivered.extend(entries.iter().cloned());
        let to_ack: Vec<i64> = entries
            .iter()
            .map(|(seq, _)| *seq)
            .filter(|_| rng.range(0..2) == 0)
            .collect();
        if to_ack.is_empty() {
            continue;
        }
        let ids: Vec<String> = to_ack.iter().map(|s| format!("{s}-0")).collect();
        let mut args: Vec<&[u8]> = vec![b"XACK", b"events", GROUP.as_bytes()];
        args.extend(ids.iter().map(|s| s.as_bytes()));
        if c.w.write_all(&multibulk(&args)).is_err() {
            out.ack_unknown.extend(to_ack);
            return out;
        }
        match c.line() {
            Some(line) if line == format!(":{}", to_ack.len()) => out.acked.extend(to_ack),
            Some(line) => {
                out.errors.push(format!("XACK {ids:?}: {line}"));
                return out;
            }
            None => {
                out.ack_unknown.extend(to_ack);
                return out;
            }
        }
    }
}

/// The (seq, name) of each entry in an XREADGROUP reply (nil: none).
fn delivered_entries(reply: &Value) -> Result<Vec<(i64, String)>, String> {
    let bad = || format!("unexpected XREADGROUP reply {reply:?}");
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams,
        _ => return Err(bad()),
    };
    let mut out = Vec::new();
    for stream in streams {
        let Value::Array(pair) = stream else {
            return Err(bad());
        };
        let [_, Value::Array(entries)] = pair.as_slice() else {
            return Err(bad());
        };
        for entry in entries {
            let Value::Array(entry) = entry else {
                return Err(bad());
            };
            let [id, Value::Array(fields)] = entry.as_slice() else {
                return Err(bad());
            };
            let seq = id
                .text()
                .and_then(|id| id.strip_suffix("-0").and_then(|s| s.parse().ok()))
                .ok_or_else(bad)?;
            let name = fields
                .chunks(2)
                .find(|kv| kv[0].text().as_deref() == Some("name"))
                .and_then(|kv| kv.get(1)?.text())
                .ok_or_else(bad)?;
            out.push((seq, name));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The ledger: the state every name and entry must be in.

/// What the database must hold for a name the test sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserState {
    /// Registered with this id and not unregistered.
    Present(i64),
    /// Registered with this id, then unregistered.
    Removed(i64),
    /// Never committed (a REGISTER that got no answer before a kill).
    Never,
    /// Not settled yet: the database decides, the next check records it.
    Unknown,
}

/// A committed event as the events table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventRow {
    kind: String,
    user_id: i64,
    name: String,
    fields: String,
}

#[derive(Debug, Default)]
struct Ledger {
    users: HashMap<String, UserState>,
    /// Every event seen by an earlier check: later checks must find it unchanged.
    events: BTreeMap<i64, EventRow>,
    /// Entries delivered to the consumer, by seq, with their user's name.
    delivered: BTreeMap<i64, String>,
    /// Entries that must be pending (delivered, no XACK sent).
    pending: HashSet<i64>,
    /// Entries an XACK was answered for: never pending again.
    acked: HashSet<i64>,
}

impl Ledger {
    fn present(&self) -> impl Iterator<Item = (&String, i64)> {
        self.users.iter().filter_map(|(n, s)| match s {
            UserState::Present(id) => Some((n, *id)),
            _ => None,
        })
    }

    /// Adds a round's facts and unknowns.
    fn absorb(&mut self, o: Outcome) {
        for name in o.register_unknown {
            self.users.insert(name, UserState::Unknown);
        }
        for (name, id) in o.registered {
            self.users.insert(name, UserState::Present(id));
        }
        for name in o.unregister_unknown {
            self.users.insert(name, UserState::Unknown);
        }
        for name in o.unregistered {
            let id = match self.users.get(&name) {
                Some(UserState::Present(id)) => *id,
                other => panic!("UNREGISTER {name} acknowledged for a user in state {other:?}"),
            };
            self.users.insert(name, UserState::Removed(id));
        }
        for (seq, name) in o.delivered {
            self.delivered.insert(seq, name);
            self.pending.insert(seq);
        }
        for seq in o.ack_unknown {
            self.pending.remove(&seq);
        }
        for seq in o.acked {
            self.pending.remove(&seq);
            self.acked.insert(seq);
        }
    }
}

/// Right after a restart, LOOKUP shows every acknowledged change of the round.
fn check_over_resp(port: u16, ledger: &Ledger, round: &Outcome) {
    let mut c = Raw::connect(port).expect("connect to the restarted server");
    let removed: HashSet<&String> = round.unregistered.iter().collect();
    let undecided: HashSet<&String> = round.unregister_unknown.iter().collect();
    let mut bytes = Vec::new();
    for (name, _) in &round.registered {
        bytes.extend(multibulk(&[b"LOOKUP", name.as_bytes()]));
    }
    bytes.extend(multibulk(&[b"USERCOUNT"]));
    c.w.write_all(&bytes).expect("write LOOKUPs");
    for (name, id) in &round.registered {
        let reply = c.value().expect("LOOKUP reply");
        if undecided.contains(name) {
            continue;
        }
        if removed.contains(name) {
            assert_eq!(
                reply,
                Value::Nil,
                "acknowledged UNREGISTER {name} is undone"
            );
            continue;
        }
        let Value::Array(items) = &reply else {
            panic!("acknowledged REGISTER {name} (id {id}) is lost: LOOKUP gave {reply:?}");
        };
        let got = items
            .chunks(2)
            .find(|kv| kv[0].text().as_deref() == Some("id"))
            .and_then(|kv| kv.get(1).cloned());
        assert_eq!(got, Some(Value::Int(*id)), "LOOKUP {name}: {reply:?}");
    }
    let count = c.value().expect("USERCOUNT reply");
    let Value::Int(count) = count else {
        panic!("USERCOUNT gave {count:?}");
    };
    // Earlier rounds' users are settled; this round's unknowns may have gone either way.
    let earlier = ledger.present().count() as i64;
    let acked_now = round.registered.len() as i64 - round.unregistered.len() as i64;
    let unknown_now = (round.register_unknown.len() + round.unregister_unknown.len()) as i64;
    assert!(
        (earlier + acked_now - unknown_now..=earlier + acked_now + unknown_now).contains(&count),
        "USERCOUNT {count}: expected {} within {unknown_now}",
        earlier + acked_now
    );
}

// ---------------------------------------------------------------------------
// The database, checked with SQLite directly.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    /// Read-only, next to the running server.
    WhileServing,
    /// After the server stopped.
    Stopped,
}

/// Checks the file against itself and against the ledger, then settles the ledger's
/// unknowns from it.
fn check_database(db: &Path, ledger: &mut Ledger, open: Open) {
    let conn = match open {
        Open::WhileServing => Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY),
        Open::Stopped => Connection::open(db),
    }
    .expect("open the database");
    let integrity: Vec<String> = rows(&conn, "PRAGMA integrity_check", |r| r.get(0));
    assert_eq!(integrity, ["ok"], "PRAGMA integrity_check");
    let tx = conn.unchecked_transaction().expect("read transaction");
    let users: HashMap<String, (i64, String)> =
        rows(&tx, "SELECT name, id, fields FROM users", |r| {
            Ok((r.get(0)?, (r.get(1)?, r.get(2)?)))
        })
        .into_iter()
        .collect();
    let events: BTreeMap<i64, EventRow> = rows(
        &tx,
        "SELECT seq, kind, user_id, name, fields FROM events ORDER BY seq",
        |r| {
            Ok((
                r.get(0)?,
                EventRow {
                    kind: r.get(1)?,
                    user_id: r.get(2)?,
                    name: r.get(3)?,
                    fields: r.get(4)?,
                },
            ))
        },
    )
    .into_iter()
    .collect();
    let high_water: i64 = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
            [],
            |r| r.get(0),
        )
        .optional()
        .expect("sqlite_sequence")
        .unwrap_or(0);
    let max_seq = events.keys().next_back().copied().unwrap_or(0);
    assert!(
        high_water >= max_seq,
        "AUTOINCREMENT high-water mark {high_water} below the last event {max_seq}"
    );
    check_events(&users, &events, ledger);
    check_users(&users, &events, ledger);
    check_groups(&tx, &events, ledger);
    drop(tx);
    ledger.events = events;
}

/// The outbox: each user has its registration and no removal after it, each removal
/// has no user, ids and seqs grow together, and no earlier event changed.
fn check_events(
    users: &HashMap<String, (i64, String)>,
    events: &BTreeMap<i64, EventRow>,
    ledger: &Ledger,
) {
    for (seq, old) in &ledger.events {
        assert_eq!(events.get(seq), Some(old), "committed event {seq} changed");
    }
    // New events come after every event an earlier check saw: no seq is reused.
    let old_max = ledger.events.keys().next_back().copied().unwrap_or(0);
    for seq in events.keys() {
        assert!(
            *seq > old_max || ledger.events.contains_key(seq),
            "event {seq} appeared below the earlier last seq {old_max}"
        );
    }
    let mut by_name: HashMap<&str, Vec<(i64, &EventRow)>> = HashMap::new();
    let mut last_seq = 0;
    let mut last_registered_id = 0;
    for (&seq, e) in events {
        assert!(seq > last_seq, "event seq {seq} after {last_seq}");
        last_seq = seq;
        match e.kind.as_str() {
            "user.registered" => {
                assert!(
                    e.user_id > last_registered_id,
                    "registration {seq} has user id {} after id {last_registered_id}",
                    e.user_id
                );
                last_registered_id = e.user_id;
            }
            "user.unregistered" => {}
            other => panic!("event {seq} has kind {other:?}"),
        }
        by_name.entry(&e.name).or_default().push((seq, e));
    }
    for (name, (id, fields)) in users {
        match by_name.get(name.as_str()).map(Vec::as_slice) {
            Some([(_, reg)]) if reg.kind == "user.registered" => {
                assert_eq!(reg.user_id, *id, "registration event of {name}");
                assert_eq!(&reg.fields, fields, "registration event of {name}");
            }
            other => panic!("user {name} (id {id}) has events {other:?}"),
        }
    }
    for (name, list) in &by_name {
        match list.as_slice() {
            [(_, reg)] if reg.kind == "user.registered" => {
                assert!(users.contains_key(*name), "{name} registered, no user row");
            }
            [(_, reg), (_, unreg)]
                if reg.kind == "user.registered" && unreg.kind == "user.unregistered" =>
            {
                assert_eq!(reg.user_id, unreg.user_id, "events of {name}");
                assert_eq!(reg.fields, unreg.fields, "events of {name}");
                assert!(
                    !users.contains_key(*name),
                    "{name} unregistered, user row left"
                );
            }
            other => panic!("{name} has events {other:?}"),
        }
    }
}

/// Every acknowledged change is there, nothing the ledger settled changed, and the
/// file decides what a kill left undecided.
fn check_users(
    users: &HashMap<String, (i64, String)>,
    events: &BTreeMap<i64, EventRow>,
    ledger: &mut Ledger,
) {
    // (registration's user id, unregistered) per name; check_events vouched for shapes.
    let mut history: HashMap<&str, (i64, bool)> = HashMap::new();
    for e in events.values() {
        let h = history.entry(&e.name).or_insert((e.user_id, false));
        h.1 |= e.kind == "user.unregistered";
    }
    for name in history.keys() {
        assert!(
            ledger.users.contains_key(*name),
            "{name} has events but was never sent by the test"
        );
    }
    for (name, state) in ledger.users.iter_mut() {
        let row = users.get(name).map(|(id, _)| *id);
        let past = history.get(name.as_str()).copied();
        match *state {
            UserState::Present(id) => assert_eq!(
                (row, past),
                (Some(id), Some((id, false))),
                "acknowledged REGISTER {name} (id {id}) is not in the database"
            ),
            UserState::Removed(id) => assert_eq!(
                (row, past),
                (None, Some((id, true))),
                "acknowledged UNREGISTER {name} (id {id}) is undone"
            ),
            UserState::Never => assert_eq!(
                (row, past),
                (None, None),
                "{name} appeared after a restart showed it was never committed"
            ),
            UserState::Unknown => {
                *state = match past {
                    Some((id, false)) => UserState::Present(id),
                    Some((id, true)) => UserState::Removed(id),
                    None => UserState::Never,
                };
            }
        }
    }
}

/// Consumer-group state: pending entries belong to a group and a consumer and name
/// a committed entry no later than the group's last delivery; what the consumer was
/// told is kept.
fn check_groups(conn: &Connection, events: &BTreeMap<i64, EventRow>, ledger: &Ledger) {
    let max_seq = events.keys().next_back().copied().unwrap_or(0);
    let groups: HashMap<String, i64> = rows(
        conn,
        "SELECT name, last_delivered FROM stream_groups",
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .into_iter()
    .collect();
    let last_delivered = *groups
        .get(GROUP)
        .unwrap_or_else(|| panic!("acknowledged group {GROUP} is gone: {groups:?}"));
    for (name, last) in &groups {
        assert!(
            *last <= max_seq,
            "group {name} delivered up to {last}, the log ends at {max_seq}"
        );
    }
    let consumers: HashSet<(String, String)> =
        rows(conn, "SELECT grp, name FROM stream_consumers", |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .into_iter()
        .collect();
    for (grp, name) in &consumers {
        assert!(
            groups.contains_key(grp),
            "consumer {name} of missing group {grp}"
        );
    }
    let pending: HashMap<i64, String> =
        rows(conn, "SELECT grp, seq, consumer FROM stream_pending", |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })
        .into_iter()
        .map(|(grp, seq, consumer): (String, i64, String)| {
            let Some(last) = groups.get(&grp) else {
                panic!("pending entry {seq} of missing group {grp}");
            };
            assert!(
                seq <= *last && seq <= max_seq,
                "pending entry {seq} of {grp}: last delivered {last}, log ends at {max_seq}"
            );
            assert!(
                events.contains_key(&seq),
                "pending entry {seq} has no event"
            );
            assert!(
                consumers.contains(&(grp.clone(), consumer.clone())),
                "pending entry {seq} of {grp} belongs to unknown consumer {consumer}"
            );
            assert_eq!(grp, GROUP, "pending entry of a group the test never made");
            (seq, consumer)
        })
        .collect();
    if let Some((&seq, _)) = ledger.delivered.last_key_value() {
        assert!(
            last_delivered >= seq,
            "entry {seq} was delivered, group's last delivered is {last_delivered}"
        );
    }
    for (seq, name) in &ledger.delivered {
        let event = events
            .get(seq)
            .unwrap_or_else(|| panic!("delivered entry {seq} is gone"));
        assert_eq!(&event.name, name, "delivered entry {seq}");
    }
    for seq in &ledger.pending {
        assert_eq!(
            pending.get(seq).map(String::as_str),
            Some(CONSUMER),
            "delivered, unacknowledged entry {seq} is not pending for {CONSUMER}"
        );
    }
    for seq in &ledger.acked {
        assert!(
            !pending.contains_key(seq),
            "acknowledged entry {seq} is pending again"
        );
    }
}

fn rows<T>(
    conn: &Connection,
    sql: &str,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    stmt.query_map([], f)
        .and_then(Iterator::collect)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

// ---------------------------------------------------------------------------
// A small PRNG (xorshift64*): the test only needs spread, not quality.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `r` (which must not be empty).
    fn range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.next() % (r.end - r.start)
    }
}

fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
