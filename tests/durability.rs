//! Durability: what a client was told is what the database holds — across a
//! restart, when storage fails (the whole tick rolls back and every reply of it says
//! so), across SIGTERM/SIGINT of the real binary, and against a database written by a
//! newer schema. Also the binary's command line (`--help`, flags, environment).
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Instant;

use common::reply::{info, register, unregister};
use common::{
    IO_TIMEOUT, Raw, TestServer, config_at, fields, multibulk, temp_db, tight_max_pages,
    userbus_command,
};
use userbus::config::MAX_FIELD_VALUE_BYTES;
use userbus::{Error, Server};

/// A cap that lets a handful of users with two maximal field values in (pages beyond a
/// fresh database; each such user takes about 4 more, for the user row and
/// its event row).
fn fill_max_pages() -> u64 {
    common::fresh_db_pages() + 25
}
/// Maximal field values per "big" registration.
const BIG_FIELDS: usize = 2;

// ---------------------------------------------------------------------------
// Raw RESP over a socket, as `nc` would send it.

/// `REGISTER name field value ...` as RESP.
fn register_cmd(name: &str, fields: &[(String, String)]) -> Vec<u8> {
    let mut args: Vec<&[u8]> = vec![b"REGISTER", name.as_bytes()];
    for (k, v) in fields {
        args.push(k.as_bytes());
        args.push(v.as_bytes());
    }
    multibulk(&args)
}

/// `n` fields whose values are as long as a value may be.
fn big_fields(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let fill = char::from(b'a' + (i % 26) as u8);
            (
                format!("f{i}"),
                fill.to_string().repeat(MAX_FIELD_VALUE_BYTES),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The redis crate as the client.

/// A RESP2 `redis` connection to the server on `port`.
///
/// No read timeout, as in the harness: the `redis` crate does not retry a read that
/// fails with EINTR, and a socket with `SO_RCVTIMEO` fails that way whenever the
/// process is stopped and resumed (or frozen and thawed), which made such tests
/// flaky here.
fn redis_at(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    client.get_connection().expect("redis connection")
}

/// A user as LOOKUP shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    id: i64,
    created_at: String,
    fields: BTreeMap<String, String>,
}

fn lookup(c: &mut redis::Connection, name: &str) -> Option<Found> {
    let user: Option<HashMap<String, redis::Value>> = redis::cmd("LOOKUP")
        .arg(name)
        .query(c)
        .unwrap_or_else(|e| panic!("LOOKUP {name}: {e:?}"));
    user.map(|m| {
        let field = |k: &str| m.get(k).unwrap_or_else(|| panic!("LOOKUP {name}: no {k}"));
        assert_eq!(
            redis::from_redis_value_ref::<String>(field("name")).unwrap(),
            name
        );
        Found {
            id: redis::from_redis_value_ref(field("id")).expect("id"),
            created_at: redis::from_redis_value_ref(field("created_at")).expect("created_at"),
            fields: redis::from_redis_value_ref(field("fields")).expect("fields"),
        }
    })
}

fn usercount(c: &mut redis::Connection) -> i64 {
    redis::cmd("USERCOUNT").query(c).expect("USERCOUNT")
}

/// Every registered name, walking USERS until the cursor comes back to 0.
fn all_names(c: &mut redis::Connection) -> Vec<String> {
    let mut names = Vec::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, page): (String, Vec<String>) = redis::cmd("USERS")
            .arg(&cursor)
            .arg("COUNT")
            .arg(1000)
            .query(c)
            .expect("USERS");
        names.extend(page);
        if next == "0" {
            return names;
        }
        cursor = next;
    }
}

// ---------------------------------------------------------------------------
// Restart on the same database.

#[test]
fn acknowledged_changes_survive_a_restart_and_ids_are_never_reused() {
    let (server, mut c) = TestServer::start_redis();
    let alice_fields = [("plan", "pro"), ("city", "Oslo"), ("note", "two words")];
    assert_eq!(register(&mut c, "alice", &alice_fields), 1);
    assert_eq!(register(&mut c, "bob", &[]), 2);
    assert_eq!(register(&mut c, "carol", &[("x", "y")]), 3);
    assert_eq!(register(&mut c, "dave", &[("plan", "free")]), 4);
    assert_eq!(register(&mut c, "alice", &[("plan", "other")]), 0);
    assert_eq!(unregister(&mut c, "bob"), 1);
    // The highest id leaves too: a store that reused ids would hand 4 out again.
    assert_eq!(unregister(&mut c, "dave"), 1);
    assert_eq!(unregister(&mut c, "ghost"), 0);
    let alice_before = lookup(&mut c, "alice").expect("alice before restart");
    let carol_before = lookup(&mut c, "carol").expect("carol before restart");
    drop(c);

    let server = server.restart();
    let mut c = server.redis();
    assert_eq!(lookup(&mut c, "alice"), Some(alice_before.clone()));
    assert_eq!(alice_before.id, 1);
    assert_eq!(alice_before.fields, fields(&alice_fields));
    assert_eq!(lookup(&mut c, "carol"), Some(carol_before));
    assert_eq!(lookup(&mut c, "bob"), None);
    assert_eq!(lookup(&mut c, "dave"), None);
    assert_eq!(usercount(&mut c), 2);
    assert_eq!(all_names(&mut c), ["alice", "carol"]);
    assert_eq!(register(&mut c, "alice", &[]), 0, "alice is still taken");
    // Ids go on from the highest ever handed out; taken names use none up.
    let erin = register(&mut c, "erin", &[]);
    assert_eq!(erin, 5, "1..=4 were handed out before");
    let bob = register(&mut c, "bob", &[]);
    assert_eq!(bob, 6, "a returning name gets a new id");
    assert_eq!(usercount(&mut c), 4);
    drop(c);

    // And once more, so the second run's changes are durable as well.
    let server = server.restart();
    let mut c = server.redis();
    assert_eq!(usercount(&mut c), 4);
    assert_eq!(lookup(&mut c, "erin").map(|u| u.id), Some(erin));
    assert_eq!(lookup(&mut c, "bob").map(|u| u.id), Some(bob));
    assert_eq!(register(&mut c, "frank", &[]), 7);
    drop(c);
    server.stop();
}

#[test]
fn a_pipelined_burst_survives_a_restart() {
    const N: usize = 300;
    let server = TestServer::start();
    let mut raw = Raw::connect(server.addr);
    let burst: Vec<u8> = (0..N)
        .flat_map(|i| register_cmd(&format!("burst{i}"), &[("i".into(), i.to_string())]))
        .collect();
    raw.send(&burst);
    let ids: Vec<String> = (0..N).map(|_| raw.line()).collect();
    let expected: Vec<String> = (1..=N).map(|id| format!(":{id}")).collect();
    assert_eq!(ids, expected);
    drop(raw);

    let server = server.restart();
    let mut c = server.redis();
    assert_eq!(usercount(&mut c), N as i64);
    for i in [0, 1, N / 2, N - 1] {
        let user = lookup(&mut c, &format!("burst{i}")).expect("registered in the burst");
        assert_eq!(user.id, i as i64 + 1);
        assert_eq!(user.fields, fields(&[("i", &i.to_string())]));
    }
    drop(c);
    server.stop();
}

// ---------------------------------------------------------------------------
// The rollback path: writes that do not fit fail, and only they.

#[test]
fn a_full_database_fails_only_the_registrations_it_did_not_acknowledge() {
    let (_dir, db) = temp_db();
    let server = TestServer::start_at(&db, |cfg| cfg.max_db_pages = fill_max_pages(), |b| b);
    let mut raw = Raw::connect(server.addr);
    let big = big_fields(BIG_FIELDS);

    let mut acked: Vec<(String, i64)> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for i in 0..200 {
        let name = format!("big{i}");
        let reply = raw.call(&register_cmd(&name, &big));
        if let Some(id) = reply.strip_prefix(':') {
            let id: i64 = id.parse().expect("an id");
            assert!(id > 0, "REGISTER {name} of a new name replied {reply}");
            acked.push((name, id));
        } else {
            assert!(
                reply.starts_with("-ERR storage: "),
                "REGISTER {name} replied {reply:?}"
            );
            failed.push(name);
            if failed.len() == 3 {
                break;
            }
        }
    }
    assert_eq!(failed.len(), 3, "the page cap was never reached");
    assert!(acked.len() >= 2, "the page cap let only {acked:?} in");
    assert!(
        acked.windows(2).all(|w| w[0].1 < w[1].1),
        "ids must increase: {acked:?}"
    );

    // The server goes on: requests that need no storage, and reads.
    assert_eq!(raw.call(b"PING\r\n"), "+PONG");
    let mut c = server.redis();
    for (name, id) in &acked {
        let user = lookup(&mut c, name).unwrap_or_else(|| panic!("acknowledged {name} is gone"));
        assert_eq!(user.id, *id);
        assert_eq!(user.fields, big.iter().cloned().collect());
    }
    for name in &failed {
        assert_eq!(lookup(&mut c, name), None, "{name} was refused but exists");
    }
    assert_eq!(usercount(&mut c), acked.len() as i64);
    let names: Vec<&str> = acked.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(all_names(&mut c), names);
    let persistence = info(&mut c, "persistence");
    assert_eq!(persistence["storage_ok"], "0", "{persistence:?}");
    assert_eq!(persistence["failed_commits"], "3", "{persistence:?}");

    // An UNREGISTER may or may not fit (its event row needs room too); either way
    // its reply must match what the database holds afterwards.
    let (gone, gone_id) = acked[0].clone();
    let reply = raw.call(&multibulk(&[b"UNREGISTER", gone.as_bytes()]));
    let removed = match reply.as_str() {
        ":1" => true,
        r if r.starts_with("-ERR storage: ") => false,
        other => panic!("UNREGISTER {gone} replied {other:?}"),
    };
    assert_eq!(lookup(&mut c, &gone).is_none(), removed, "reply {reply}");
    let expected_count = acked.len() as i64 - i64::from(removed);
    assert_eq!(usercount(&mut c), expected_count);
    let persistence = info(&mut c, "persistence");
    let ok = if removed { "1" } else { "0" };
    assert_eq!(
        persistence["storage_ok"], ok,
        "after {reply}: {persistence:?}"
    );
    drop(c);
    drop(raw);
    server.stop();

    // The operator lifts the cap and restarts: exactly the acknowledged state is
    // there, and writes work again with ids that never go back.
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut c = server.redis();
    assert_eq!(usercount(&mut c), expected_count);
    for (name, id) in &acked {
        let present = !(removed && *name == gone);
        assert_eq!(lookup(&mut c, name).map(|u| u.id), present.then_some(*id));
    }
    for name in &failed {
        assert_eq!(lookup(&mut c, name), None, "{name} was refused but exists");
    }
    let mut raw = Raw::connect(server.addr);
    let reply = raw.call(&register_cmd("after-restart", &big));
    let id: i64 = reply
        .strip_prefix(':')
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("REGISTER after lifting the cap replied {reply:?}"));
    let max_acked = acked.iter().map(|(_, id)| *id).max().unwrap_or(0);
    assert!(
        id > max_acked && id > gone_id,
        "new id {id} after {acked:?}"
    );
    assert_eq!(info(&mut c, "persistence")["storage_ok"], "1");
    drop(c);
    drop(raw);
    server.stop();
}

#[test]
fn a_failed_write_fails_every_request_of_its_tick() {
    let server = TestServer::start_with(|cfg| cfg.max_db_pages = tight_max_pages(), |b| b);
    let mut raw = Raw::connect(server.addr);
    let big = big_fields(BIG_FIELDS);

    // One write, so the server reads and runs all three in one tick: the small
    // REGISTER alone would fit, the big one does not, and the tick is one
    // transaction.
    let mut batch = register_cmd("small", &[("plan".into(), "free".into())]);
    batch.extend(register_cmd("big", &big));
    batch.extend(multibulk(&[b"USERCOUNT"]));
    raw.send(&batch);
    let replies = [raw.line(), raw.line(), raw.line()];
    for (reply, what) in replies
        .iter()
        .zip(["small REGISTER", "big REGISTER", "USERCOUNT"])
    {
        assert!(
            reply.starts_with("-ERR storage: "),
            "{what} in the failed tick replied {reply:?} (all: {replies:?})"
        );
    }

    let mut c = server.redis();
    assert_eq!(lookup(&mut c, "small"), None);
    assert_eq!(lookup(&mut c, "big"), None);
    assert_eq!(usercount(&mut c), 0);

    // On its own the small one fits (so it failed above only for its tick's sake),
    // and the big one still does not.
    assert_eq!(
        raw.call(&register_cmd("small", &[("plan".into(), "free".into())])),
        ":1"
    );
    let reply = raw.call(&register_cmd("big", &big));
    assert!(reply.starts_with("-ERR storage: "), "big alone: {reply:?}");
    assert_eq!(lookup(&mut c, "big"), None);
    let small = lookup(&mut c, "small").expect("small registered on its own");
    assert_eq!(small.id, 1);
    assert_eq!(small.fields, fields(&[("plan", "free")]));
    assert_eq!(usercount(&mut c), 1);
    assert_eq!(raw.call(b"PING\r\n"), "+PONG");
    drop(c);
    drop(raw);
    server.stop();
}

// ---------------------------------------------------------------------------
// The binary.

/// A `userbus` process whose output (stderr and stdout, merged) is read line by
/// line on helper threads.
struct Bin {
    child: Option<Child>,
    lines: Receiver<String>,
    log: String,
}

impl Bin {
    /// Starts `userbus args...` with `envs`, without any `USERBUS_*` setting of ours.
    fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Bin {
        let mut child = userbus_command()
            .args(args)
            .envs(envs.iter().copied())
            .spawn()
            .expect("spawn userbus");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        forward_lines(stdout, tx.clone());
        forward_lines(stderr, tx);
        Bin {
            child: Some(child),
            lines,
            log: String::new(),
        }
    }

    /// `userbus serve` on `db` with ports picked by the OS; returns once the startup
    /// line names the RESP address, and that port.
    fn serve(db: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (Bin, u16) {
        let db = db.to_str().expect("utf-8 path");
        let mut args = vec!["serve", "--port", "0", "--http-port", "0", "--db", db];
        args.extend_from_slice(extra);
        let mut bin = Bin::spawn(&args, envs);
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let line = bin
                .next_line(deadline)
                .unwrap_or_else(|| panic!("userbus exited before listening; stderr:\n{}", bin.log));
            if let Some((_, rest)) = line.split_once("resp=127.0.0.1:") {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let port = digits.parse().expect("port in the startup line");
                return (bin, port);
            }
        }
    }

    /// The next output line, or `None` once the process closed its output.
    fn next_line(&mut self, deadline: Instant) -> Option<String> {
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => {
                self.log.push_str(&line);
                self.log.push('\n');
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!("userbus went quiet without exiting; stderr:\n{}", self.log)
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit; returns its status and everything it printed.
    fn wait(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.next_line(deadline).is_some() {}
        let status = self
            .child
            .take()
            .expect("running")
            .wait()
            .expect("wait for userbus");
        (status, std::mem::take(&mut self.log))
    }
}

/// Sends each line `from` yields to `to` until either end goes away.
fn forward_lines(from: impl Read + Send + 'static, to: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if to.send(line).is_err() {
                break;
            }
        }
    });
}

impl Drop for Bin {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Registers users, signals the server with one connection idle and one in the
/// middle of a pipelined burst, and checks that it exits 0 and that everything it
/// acknowledged is there after a restart.
fn signal_stops_cleanly_and_keeps_every_acknowledged_write(signal: &str) {
    let (_dir, db) = temp_db();
    let (bin, port) = Bin::serve(&db, &[], &[]);

    let mut c = redis_at(port);
    let mut acked: Vec<(String, i64)> = Vec::new();
    for i in 0..20 {
        let name = format!("before{i}");
        let id: i64 = redis::cmd("REGISTER")
            .arg(&name)
            .arg("i")
            .arg(i)
            .query(&mut c)
            .expect("REGISTER");
        acked.push((name, id));
    }
    let mut idle = Raw::connect(("127.0.0.1", port));
    assert_eq!(idle.call(b"PING\r\n"), "+PONG");

    // A burst in flight when the signal lands: whatever part of it the server
    // acknowledges must be durable; the rest may be dropped.
    let mut busy = Raw::connect(("127.0.0.1", port));
    let burst: Vec<u8> = (0..500)
        .flat_map(|i| register_cmd(&format!("burst{i}"), &[]))
        .collect();
    busy.send(&burst);
    bin.signal(signal);
    let (status, log) = bin.wait();
    assert!(
        status.success(),
        "exit {status:?} after SIG{signal}; stderr:\n{log}"
    );

    let mut tail = Vec::new();
    // A reset instead of a clean close is fine: the replies read before it count.
    let _ = busy.r.read_to_end(&mut tail);
    let tail = String::from_utf8_lossy(&tail);
    // A reply cut short by the close acknowledges nothing.
    let complete = tail.rfind("\r\n").map_or("", |end| &tail[..end + 2]);
    for (i, line) in complete.split_terminator("\r\n").enumerate() {
        let id: i64 = line
            .strip_prefix(':')
            .and_then(|id| id.parse().ok())
            .unwrap_or_else(|| panic!("burst reply {i} was {line:?}"));
        acked.push((format!("burst{i}"), id));
    }
    let mut rest = Vec::new();
    let closed = idle.r.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)),
        "the idle connection should see a clean close, got {closed:?} {rest:?}"
    );
    drop(c);

    let (bin, port) = Bin::serve(&db, &[], &[]);
    let mut c = redis_at(port);
    for (name, id) in &acked {
        let user = lookup(&mut c, name).unwrap_or_else(|| panic!("acknowledged {name} is gone"));
        assert_eq!(user.id, *id, "{name}");
    }
    assert_eq!(usercount(&mut c), acked.len() as i64);
    drop(c);
    bin.signal(signal);
    let (status, log) = bin.wait();
    assert!(status.success(), "exit {status:?}; stderr:\n{log}");
}

#[test]
fn sigterm_stops_cleanly_and_keeps_every_acknowledged_write() {
    signal_stops_cleanly_and_keeps_every_acknowledged_write("TERM");
}

#[test]
fn sigint_stops_cleanly_and_keeps_every_acknowledged_write() {
    signal_stops_cleanly_and_keeps_every_acknowledged_write("INT");
}

const SERVE_FLAGS: [&str; 5] = ["--bind", "--port", "--http-port", "--db", "--durability"];

#[test]
fn serve_help_explains_every_flag() {
    let (status, text) = Bin::spawn(&["serve", "--help"], &[]).wait();
    assert!(status.success(), "{status:?}");
    for flag in SERVE_FLAGS {
        assert!(text.contains(flag), "serve --help lacks {flag}:\n{text}");
    }
    for env in ["USERBUS_PORT", "USERBUS_DB", "USERBUS_DURABILITY"] {
        assert!(text.contains(env), "serve --help lacks {env}:\n{text}");
    }
}

#[test]
fn top_level_help_names_the_serve_command() {
    let (status, text) = Bin::spawn(&["--help"], &[]).wait();
    assert!(status.success(), "{status:?}");
    assert!(text.contains("serve"), "--help lacks serve:\n{text}");
}

#[test]
fn top_level_help_explains_every_flag() {
    let (status, text) = Bin::spawn(&["--help"], &[]).wait();
    assert!(status.success(), "{status:?}");
    for flag in SERVE_FLAGS {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

fn config_get(c: &mut redis::Connection, name: &str) -> String {
    let map: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(c)
        .expect("CONFIG GET");
    map.get(name)
        .unwrap_or_else(|| panic!("CONFIG GET {name}: {map:?}"))
        .clone()
}

#[test]
fn durability_comes_from_the_environment_and_the_flag_wins() {
    let (_dir, db) = temp_db();
    for (extra, envs, expected) in [
        (&[][..], &[][..], "strict"),
        (&[][..], &[("USERBUS_DURABILITY", "normal")][..], "normal"),
        (
            &["--durability", "strict"][..],
            &[("USERBUS_DURABILITY", "normal")][..],
            "strict",
        ),
        (&["--durability", "NORMAL"][..], &[][..], "normal"),
    ] {
        let (bin, port) = Bin::serve(&db, extra, envs);
        let mut c = redis_at(port);
        assert_eq!(
            config_get(&mut c, "durability"),
            expected,
            "flags {extra:?} env {envs:?}"
        );
        drop(c);
        bin.signal("TERM");
        let (status, log) = bin.wait();
        assert!(status.success(), "{status:?}\n{log}");
    }
}

#[test]
fn an_unknown_durability_is_refused_with_a_clear_message() {
    let (_dir, db) = temp_db();
    let db = db.to_str().expect("utf-8 path");
    let args = ["serve", "--port", "0", "--http-port", "0", "--db", db];
    for (extra, envs) in [
        (&["--durability", "bogus"][..], &[][..]),
        (&[][..], &[("USERBUS_DURABILITY", "bogus")][..]),
    ] {
        let all: Vec<&str> = args.iter().chain(extra).copied().collect();
        let (status, log) = Bin::spawn(&all, envs).wait();
        assert!(!status.success(), "accepted durability bogus: {log}");
        for word in ["bogus", "durability", "strict", "normal"] {
            assert!(log.contains(word), "message lacks {word:?}:\n{log}");
        }
    }
    assert!(
        !Path::new(db).exists(),
        "refused settings must not create the db"
    );
}

/// Writes `user_version` into a fresh SQLite file.
fn newer_schema_db(path: &Path) -> i64 {
    let version = userbus::store::SCHEMA_VERSION + 1;
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(&format!("PRAGMA user_version = {version}"))
        .expect("set user_version");
    version
}

fn user_version(path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version")
}

#[test]
fn the_binary_refuses_a_database_with_a_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("future.db");
    let version = newer_schema_db(&db);
    let path = db.to_str().expect("utf-8 path");
    let (status, log) = Bin::spawn(
        &["serve", "--port", "0", "--http-port", "0", "--db", path],
        &[],
    )
    .wait();
    assert!(!status.success(), "served a newer schema:\n{log}");
    assert!(
        log.contains(&format!("schema version {version}")),
        "the error should name the schema version:\n{log}"
    );
    assert_eq!(
        user_version(&db),
        version,
        "the file must be left as it was"
    );
}

#[test]
fn the_library_refuses_a_database_with_a_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("future.db");
    let version = newer_schema_db(&db);
    match Server::builder(config_at(&db)).build() {
        Err(Error::SchemaTooNew { found, supported }) => {
            assert_eq!(found, version);
            assert_eq!(supported, userbus::store::SCHEMA_VERSION);
        }
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("a newer schema was opened"),
    }
    assert_eq!(
        user_version(&db),
        version,
        "the file must be left as it was"
    );
}

// ---------------------------------------------------------------------------
// Schema migrations.

/// A version-2 database as an earlier build left it: users with a UNIQUE name
/// index, `alice` (id 1) and `carol` (id 3), `bob` (id 2) and `dave` (id 4)
/// registered and removed, so AUTOINCREMENT's counter (4) is above the highest id.
fn version_2_db(path: &Path) {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
             fields TEXT NOT NULL, created_at INTEGER NOT NULL);
         CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,
             user_id INTEGER NOT NULL, name TEXT NOT NULL, fields TEXT NOT NULL, at INTEGER NOT NULL);
         CREATE TABLE stream_groups (name TEXT PRIMARY KEY, last_delivered INTEGER NOT NULL,
             entries_read INTEGER NOT NULL, created_at INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE stream_consumers (grp TEXT NOT NULL, name TEXT NOT NULL,
             seen_at INTEGER NOT NULL, active_at INTEGER, PRIMARY KEY (grp, name)) WITHOUT ROWID;
         CREATE TABLE stream_pending (grp TEXT NOT NULL, seq INTEGER NOT NULL,
             consumer TEXT NOT NULL, delivered_at INTEGER NOT NULL, deliveries INTEGER NOT NULL,
             PRIMARY KEY (grp, seq)) WITHOUT ROWID;
         CREATE INDEX stream_pending_by_consumer ON stream_pending (grp, consumer, seq);
         CREATE TABLE dead_letters (seq INTEGER PRIMARY KEY AUTOINCREMENT,
             event_seq INTEGER NOT NULL, grp TEXT NOT NULL, consumer TEXT NOT NULL,
             deliveries INTEGER NOT NULL, at INTEGER NOT NULL);
         CREATE TABLE handler_offsets (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
         INSERT INTO users VALUES (1, 'alice', '{\"email\":\"a@example.com\"}', 1000);
         INSERT INTO users VALUES (2, 'bob', '{}', 2000);
         INSERT INTO users VALUES (3, 'carol', '{}', 3000);
         INSERT INTO users VALUES (4, 'dave', '{}', 4000);
         DELETE FROM users WHERE id IN (2, 4);
         PRAGMA user_version = 2;",
    )
    .expect("version 2 schema");
}

#[test]
fn a_version_2_database_is_migrated_with_its_users_and_id_counter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("v2.db");
    version_2_db(&db);
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut c = redis_at(server.addr.port());
    let alice = lookup(&mut c, "alice").expect("alice survives the migration");
    assert_eq!(alice.id, 1);
    assert_eq!(alice.fields, fields(&[("email", "a@example.com")]));
    assert_eq!(lookup(&mut c, "carol").map(|u| u.id), Some(3));
    assert_eq!(lookup(&mut c, "bob"), None);
    assert_eq!(usercount(&mut c), 2);
    // The name stays taken, and a new user gets an id above every id ever used.
    let taken: i64 = redis::cmd("REGISTER").arg("alice").query(&mut c).unwrap();
    assert_eq!(taken, 0);
    let erin: i64 = redis::cmd("REGISTER").arg("erin").query(&mut c).unwrap();
    assert_eq!(erin, 5);
    drop(c);
    server.stop();
    assert_eq!(user_version(&db), userbus::store::SCHEMA_VERSION);
    let conn = rusqlite::Connection::open(&db).expect("open");
    let indexes: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'",
            [],
            |r| r.get(0),
        )
        .expect("count indexes");
    assert_eq!(indexes, 0, "the users table keeps no name index");
}

#[test]
fn a_name_stored_twice_by_another_writer_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("twice.db");
    TestServer::start_at(&db, |_| {}, |b| b).stop();
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(
        "INSERT INTO users (name, fields, created_at) VALUES ('zed', '{}', 1), ('zed', '{}', 2);",
    )
    .expect("insert a duplicate behind the server's back");
    drop(conn);
    match Server::builder(config_at(&db)).build() {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("'zed' twice"),
                "the error should name the duplicate: {text}"
            );
        }
        Ok(_) => panic!("a users table with a duplicate name was served"),
    }
}

/// One write, so one tick as far as the server can read it: registrations in a
/// run longer than the server writes at once, an UNREGISTER of one of them and a
/// stream read in the middle. Every reply, the log and the rows after a restart
/// must agree with the order the requests were sent in.
#[test]
fn registrations_written_together_keep_their_order_ids_and_events() {
    const N: usize = 2500;
    let (_dir, db) = temp_db();
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut raw = Raw::connect(server.addr);
    let mut batch = Vec::new();
    for i in 0..N {
        batch.extend(register_cmd(
            &format!("n{i}"),
            &[("i".into(), i.to_string())],
        ));
        if i == N / 2 {
            batch.extend(multibulk(&[b"UNREGISTER", b"n7"]));
            batch.extend(multibulk(&[b"XLEN", b"events"]));
        }
    }
    raw.send(&batch);
    let mut ids = Vec::new();
    for i in 0..N {
        ids.push(raw.line());
        if i == N / 2 {
            assert_eq!(raw.line(), ":1", "UNREGISTER n7");
            // Events so far: every registration up to here, and the removal.
            assert_eq!(raw.line(), format!(":{}", N / 2 + 2), "XLEN mid-batch");
        }
    }
    let want: Vec<String> = (1..=N).map(|id| format!(":{id}")).collect();
    assert_eq!(ids, want, "ids follow the order of the requests");
    drop(raw);
    server.stop();

    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut c = server.redis();
    assert_eq!(usercount(&mut c), (N - 1) as i64);
    assert_eq!(lookup(&mut c, "n7"), None);
    let last = lookup(&mut c, &format!("n{}", N - 1)).expect("the last one");
    assert_eq!(last.id, N as i64);
    assert_eq!(last.fields, fields(&[("i", &(N - 1).to_string())]));
    drop(c);
    server.stop();

    let conn = rusqlite::Connection::open(&db).expect("open");
    type Row = (i64, String, i64, String, String);
    let events: Vec<Row> = conn
        .prepare("SELECT seq, kind, user_id, name, fields FROM events ORDER BY seq")
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .expect("events");
    let mut expected = Vec::new();
    for i in 0..N {
        let json = format!("{{\"i\":\"{i}\"}}");
        expected.push((
            0,
            "user.registered".into(),
            i as i64 + 1,
            format!("n{i}"),
            json,
        ));
        if i == N / 2 {
            let json = "{\"i\":\"7\"}".to_string();
            expected.push((0, "user.unregistered".into(), 8, "n7".into(), json));
        }
    }
    for (seq, e) in expected.iter_mut().enumerate() {
        e.0 = seq as i64 + 1;
    }
    assert_eq!(events, expected, "one event per change, numbered in order");
    // A registration's event carries the time its user row does.
    let mismatched: i64 = conn
        .query_row(
            "SELECT count(*) FROM users JOIN events ON events.user_id = users.id \
             WHERE events.kind = 'user.registered' AND events.at != users.created_at",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(mismatched, 0, "event times match their users' created_at");
}
