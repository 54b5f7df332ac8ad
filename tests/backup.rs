//! Online snapshots: `userbus backup PATH` and the BACKUP command against a real
//! server process under REGISTER load, the snapshots opened with SQLite and served
//! by a server of their own; the refusals (an existing file, bad names, no
//! `--backup-dir`, no authentication).
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::process::UserbusProcess;
use common::reply::{call, error_text, info, int};
use common::run_userbus;
use redis::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use userbus::Durability;
use userbus::store::Store;

/// Connections registering while the snapshots are taken.
const WRITERS: usize = 4;
/// REGISTERs a writer pipelines before reading their replies.
const PIPELINE: usize = 16;
/// Users in the database before the server starts.
const PRELOADED: usize = 3000;
/// A field this size makes the preloaded database ~25 MB: thousands of pages,
/// so that BACKUP copies it in many steps between ticks.
const PAD_BYTES: usize = 4000;
/// How long a backup may take before the test fails.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn snapshots_under_register_load_are_consistent_and_a_server_on_one_resumes_after_its_seq() {
    let (dir, db, snaps) = db_and_snaps("live.db");
    let source_writer = preload(&db, PRELOADED);
    let snaps_arg = snaps.to_str().expect("utf-8 path");
    let mut server =
        UserbusProcess::start(&db, &["--durability", "normal", "--backup-dir", snaps_arg]);
    let load = Load::start(server.port);
    load.wait_for(200);

    // A process of its own, beside the running server.
    let cli_snap = dir.path().join("cli.db");
    let out = run_userbus(&[
        "backup",
        cli_snap.to_str().expect("utf-8"),
        "--db",
        db.to_str().expect("utf-8"),
    ]);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "userbus backup failed: {printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_seq = number_after(&printed, "event seq ");
    let cli_users = number_before(&printed, " users");
    load.wait_for(load.acked() + 200);

    // The command, inside the server.
    let mut c = server.redis();
    let id = int(&call(&mut c, &["BACKUP", "online.db"]));
    assert_eq!(id, 1);
    let (done, seen_running) = wait_for_backup(&mut c, id);
    assert_eq!(done["last_backup_status"], "ok", "{done:?}");
    assert!(
        seen_running,
        "INFO never showed the copy in progress: it did not run between ticks"
    );
    for line in server.lines_with("backup 1:") {
        println!("{line}");
    }
    let registered_after = load.acked();
    load.wait_for(registered_after + 200);
    let acked = load.stop();
    assert!(acked.len() > 400, "the load barely ran: {}", acked.len());

    let online = snaps.join("online.db");
    let cli = check_snapshot(&cli_snap, &source_writer);
    assert_eq!((cli.seq, cli.users), (cli_seq, cli_users), "{printed}");
    let cmd = check_snapshot(&online, &source_writer);
    assert_eq!(done["last_backup_seq"], cmd.seq.to_string());
    assert_eq!(done["last_backup_users"], cmd.users.to_string());
    assert_eq!(done["last_backup_writer"], cmd.writer);
    assert!(cmd.seq > cli.seq, "the second snapshot is not later");
    assert!(cli.users > PRELOADED as i64 && cmd.users > cli.users);
    assert_ne!(cli.writer, cmd.writer, "two snapshots share a writer id");

    // Both are prefixes of the log the server went on writing.
    server.stop();
    let live = events(&db);
    for snap in [&cli, &cmd] {
        assert!(live.len() as i64 > snap.seq);
        assert_eq!(&live[..snap.events.len()], &snap.events[..]);
    }
    // What the clients were told is in the live log; the snapshot holds the
    // acknowledged names up to its seq and no others.
    let live_names: BTreeMap<&str, i64> = live.iter().map(|(s, n)| (n.as_str(), *s)).collect();
    for name in &acked {
        assert!(live_names.contains_key(name.as_str()), "{name} lost");
    }

    // A server on a copy of the online snapshot.
    let restored = dir.path().join("restored.db");
    std::fs::copy(&online, &restored).expect("copy the snapshot");
    let server = UserbusProcess::start(&restored, &["--durability", "normal"]);
    let line = server.lines_with("restored from a snapshot");
    assert_eq!(line.len(), 1, "{}", server.log());
    assert!(
        line[0].contains(&format!(
            "of writer {source_writer} at event seq {}",
            cmd.seq
        )),
        "{}",
        line[0]
    );
    let mut c = server.redis();
    assert_eq!(int(&call(&mut c, &["USERCOUNT"])), cmd.users);
    assert_eq!(
        info(&mut c, "events")["events_last_seq"],
        cmd.seq.to_string()
    );
    let (_, last_name) = cmd.events.last().expect("events");
    for name in ["p0", &format!("p{}", PRELOADED - 1), last_name.as_str()] {
        assert!(
            matches!(call(&mut c, &["LOOKUP", name]), Value::Array(_)),
            "{name} missing on the restored server"
        );
    }
    let (_, first_later) = &live[cmd.events.len()];
    assert_eq!(call(&mut c, &["LOOKUP", first_later]), Value::Nil);
    assert!(int(&call(&mut c, &["REGISTER", "after-restore"])) > 0);
    assert_eq!(last_entry_id(&mut c), format!("{}-0", cmd.seq + 1));
}

#[test]
fn backup_of_a_trimmed_log_keeps_its_seq_and_the_restored_server_goes_on_from_it() {
    let (_dir, db, snaps) = db_and_snaps("trim.db");
    let server = UserbusProcess::start(
        &db,
        &[
            "--durability",
            "normal",
            "--retain-events",
            "5",
            "--backup-dir",
            snaps.to_str().expect("utf-8"),
        ],
    );
    let mut c = server.redis();
    for i in 0..20 {
        assert!(int(&call(&mut c, &["REGISTER", &format!("t{i}")])) > 0);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while int(&call(&mut c, &["XLEN", "events"])) > 5 {
        assert!(Instant::now() < deadline, "the log was not trimmed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let id = int(&call(&mut c, &["BACKUP", "trimmed.db"]));
    let (done, _) = wait_for_backup(&mut c, id);
    assert_eq!(
        (
            done["last_backup_seq"].as_str(),
            done["last_backup_users"].as_str()
        ),
        ("20", "20"),
        "{done:?}"
    );
    let server = UserbusProcess::start(&snaps.join("trimmed.db"), &["--durability", "normal"]);
    let mut c = server.redis();
    assert_eq!(int(&call(&mut c, &["XLEN", "events"])), 5);
    assert_eq!(int(&call(&mut c, &["USERCOUNT"])), 20);
    assert!(int(&call(&mut c, &["REGISTER", "t20"])) > 0);
    assert_eq!(last_entry_id(&mut c), "21-0");
}

#[test]
fn the_cli_refuses_to_overwrite_and_names_a_missing_database_or_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("live.db");
    preload(&db, 3);
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let target = dir.path().join("snap.db");
    std::fs::write(&target, b"keep me").expect("write");
    let run = |args: &[&str]| {
        let out = run_userbus(args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (ok, _, err) = run(&["backup", &path(&target), "--db", &path(&db)]);
    assert!(
        !ok && err.contains("exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"keep me");

    let (ok, out, err) = run(&["backup", &path(&target), "--db", &path(&db), "--force"]);
    assert!(ok, "{err}");
    assert!(out.contains("event seq 3, 3 users"), "{out}");
    let users: i64 = Connection::open(&target)
        .and_then(|c| c.query_row("SELECT count(*) FROM users", [], |r| r.get(0)))
        .expect("the snapshot opens");
    assert_eq!(users, 3);

    let missing = dir.path().join("missing.db");
    let (ok, _, err) = run(&[
        "backup",
        &path(&dir.path().join("x.db")),
        "--db",
        &path(&missing),
    ]);
    assert!(!ok && err.contains("no database at"), "{err}");
    assert!(!missing.exists(), "the missing database was created");

    let nowhere = dir.path().join("no-such-dir").join("x.db");
    let (ok, _, err) = run(&["backup", &path(&nowhere), "--db", &path(&db)]);
    assert!(!ok && err.contains("cannot create"), "{err}");
    let leftovers: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_command_needs_a_backup_dir_a_plain_new_name_and_authentication() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = UserbusProcess::start(&dir.path().join("off.db"), &[]);
    let mut c = server.redis();
    let off = error_text(&call(&mut c, &["BACKUP", "x.db"]));
    assert!(
        off.starts_with("ERR BACKUP is off") && off.contains("--backup-dir"),
        "{off}"
    );
    assert_eq!(info(&mut c, "backup")["backup_dir"], "");
    drop(server);

    let snaps = dir.path().join("snaps");
    let on = dir.path().join("on.db");
    let out = run_userbus(&[
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        "--db",
        on.to_str().expect("utf-8"),
        "--backup-dir",
        snaps.to_str().expect("utf-8"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served without its backup dir");
    assert!(
        err.contains("--backup-dir") && err.contains("is not a directory"),
        "{err}"
    );
    assert!(!on.exists(), "the database was created");
    std::fs::create_dir(&snaps).expect("mkdir");
    std::fs::write(snaps.join("taken.db"), b"keep me").expect("write");
    let server = UserbusProcess::start(
        &on,
        &[
            "--backup-dir",
            snaps.to_str().expect("utf-8"),
            "--requirepass",
            "secret",
        ],
    );
    let mut c = server.redis();
    let noauth = error_text(&call(&mut c, &["BACKUP", "x.db"]));
    assert!(noauth.starts_with("NOAUTH"), "{noauth}");
    assert_eq!(call(&mut c, &["AUTH", "secret"]), Value::Okay);
    for bad in [
        "../x.db",
        "/tmp/x.db",
        "sub/x.db",
        ".hidden",
        "..",
        "a b",
        "",
    ] {
        let e = error_text(&call(&mut c, &["BACKUP", bad]));
        assert!(e.starts_with("ERR BACKUP file name must"), "{bad:?}: {e}");
    }
    let taken = error_text(&call(&mut c, &["BACKUP", "taken.db"]));
    assert!(taken.contains("'taken.db' exists"), "{taken}");
    assert_eq!(
        std::fs::read(snaps.join("taken.db")).expect("read"),
        b"keep me"
    );
    let names: Vec<String> = std::fs::read_dir(&snaps)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["taken.db"], "a refused BACKUP left a file");
    let backup = info(&mut c, "backup");
    assert_eq!(backup["backup_dir"], snaps.to_str().expect("utf-8"));
    assert_eq!(backup["backup_in_progress"], "0");
    assert!(!backup.contains_key("last_backup_id"), "{backup:?}");
}

#[test]
fn a_second_backup_waits_its_turn_and_a_shutdown_abandons_the_copy_without_a_file() {
    let (_dir, db, snaps) = db_and_snaps("big.db");
    // ~50 MB: the copy takes a dozen steps or more.
    preload(&db, 6_000);
    let mut server = UserbusProcess::start(
        &db,
        &[
            "--durability",
            "normal",
            "--backup-dir",
            snaps.to_str().expect("utf-8"),
        ],
    );
    let mut c = server.redis();
    assert_eq!(int(&call(&mut c, &["BACKUP", "first.db"])), 1);
    let busy = error_text(&call(&mut c, &["BACKUP", "second.db"]));
    assert_eq!(
        busy,
        "ERR a backup is already in progress (backup 1, 'first.db')"
    );
    assert_eq!(info(&mut c, "backup")["backup_in_progress"], "1");
    server.stop();
    let left: Vec<String> = std::fs::read_dir(&snaps)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
    assert_eq!(
        server.lines_with("backup 1 failed: abandoned").len(),
        1,
        "{}",
        server.log()
    );
}

// ---------------------------------------------------------------------------
// Helpers.

/// A temporary directory, the path of a database `name` in it, and an empty
/// directory `snaps` beside it for `--backup-dir`.
fn db_and_snaps(name: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let snaps = dir.path().join("snaps");
    std::fs::create_dir(&snaps).expect("mkdir");
    let db = dir.path().join(name);
    (dir, db, snaps)
}

/// Creates the database at `db` with users `p0..p<n>` (each with a padding field);
/// returns its writer id.
fn preload(db: &Path, n: usize) -> String {
    let mut store = Store::open(db, Durability::Normal, 0).expect("open");
    let fields = BTreeMap::from([("pad".to_string(), "x".repeat(PAD_BYTES))]);
    for i in 0..n {
        store
            .register(&format!("p{i}"), &fields, 1_000)
            .expect("register")
            .expect("a new name");
        if i % 500 == 499 {
            store.finish_tick().expect("commit");
        }
    }
    store.finish_tick().expect("commit");
    store.writer_id().to_string()
}

/// Polls `INFO backup` until backup `id` ended; its fields, and whether a poll
/// saw the copy still under way.
fn wait_for_backup(c: &mut redis::Connection, id: i64) -> (BTreeMap<String, String>, bool) {
    let deadline = Instant::now() + BACKUP_TIMEOUT;
    let mut seen_running = false;
    loop {
        let fields = info(c, "backup");
        if fields.get("last_backup_id") == Some(&id.to_string()) {
            return (fields, seen_running);
        }
        seen_running |= fields.get("backup_in_progress").map(String::as_str) == Some("1")
            && fields["backup_pages_done"] != fields["backup_pages_total"];
        assert!(
            Instant::now() < deadline,
            "backup {id} did not end: {fields:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The id of the log's last entry.
fn last_entry_id(c: &mut redis::Connection) -> String {
    match call(c, &["XREVRANGE", "events", "+", "-", "COUNT", "1"]) {
        Value::Array(entries) => match entries.first() {
            Some(Value::Array(entry)) => match entry.first() {
                Some(Value::BulkString(id)) => String::from_utf8_lossy(id).into_owned(),
                other => panic!("entry id: {other:?}"),
            },
            other => panic!("entry: {other:?}"),
        },
        other => panic!("XREVRANGE: {other:?}"),
    }
}

/// The number written right after `label` in `text`.
fn number_after(text: &str, label: &str) -> i64 {
    let (_, rest) = text.split_once(label).unwrap_or_else(|| panic!("{text}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("{text}"))
}

/// The number written right before `label` in `text`.
fn number_before(text: &str, label: &str) -> i64 {
    let (head, _) = text.split_once(label).unwrap_or_else(|| panic!("{text}"));
    let digits: String = head
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .chars()
        .rev()
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("{text}"))
}

/// The log of the database at `db`, as (seq, name) in seq order.
fn events(db: &Path) -> Vec<(i64, String)> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let mut stmt = conn
        .prepare("SELECT seq, name FROM events ORDER BY seq")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<rusqlite::Result<_>>()
        .expect("rows")
}

/// What a snapshot file holds.
struct Snap {
    seq: i64,
    users: i64,
    writer: String,
    events: Vec<(i64, String)>,
}

/// Opens the snapshot at `path` with SQLite and checks it is one consistent
/// commit: one file, every user with its event and no event without its user,
/// seqs 1 to its recorded seq, a writer id of its own and the source's recorded.
fn check_snapshot(path: &Path, source_writer: &str) -> Snap {
    for suffix in ["-wal", "-journal"] {
        let beside = PathBuf::from(format!("{}{suffix}", path.display()));
        assert!(!beside.exists(), "{} beside the snapshot", beside.display());
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
    let meta = |key: &str| -> Option<String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .expect("meta")
    };
    assert_eq!(
        conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .expect("integrity_check"),
        "ok"
    );
    let seq = one("SELECT seq FROM sqlite_sequence WHERE name = 'events'");
    assert_eq!(meta("snapshot_seq"), Some(seq.to_string()));
    assert_eq!(meta("snapshot_source").as_deref(), Some(source_writer));
    let writer = meta("writer").expect("a writer id");
    assert_ne!(
        writer, source_writer,
        "the snapshot kept the source's writer id"
    );
    let users = one("SELECT count(*) FROM users");
    // Registrations only: one event per user, seqs without a gap.
    assert_eq!(one("SELECT count(*) FROM events"), seq);
    assert_eq!(one("SELECT coalesce(max(seq), 0) FROM events"), seq);
    assert_eq!(users, seq, "users and events disagree");
    let paired = one("SELECT count(*) FROM users u JOIN events e \
         ON e.user_id = u.id AND e.name = u.name AND e.kind = 'user.registered'");
    assert_eq!(paired, users, "a user without its event");
    Snap {
        seq,
        users,
        writer,
        events: events(path),
    }
}

/// Connections registering fresh names until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..WRITERS)
            .map(|w| {
                let (stop, acked) = (stop.clone(), acked.clone());
                std::thread::spawn(move || {
                    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                        .expect("client")
                        .get_connection()
                        .expect("connection");
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let mut pipe = redis::pipe();
                        let names: Vec<String> =
                            (n..n + PIPELINE).map(|i| format!("w{w}-{i}")).collect();
                        for name in &names {
                            pipe.cmd("REGISTER").arg(name).arg("plan").arg("pro");
                        }
                        let ids: Vec<i64> = pipe.query(&mut c).expect("REGISTER replies");
                        assert!(ids.iter().all(|&id| id > 0), "{ids:?}");
                        acked.lock().expect("lock").extend(names);
                        n += PIPELINE;
                    }
                })
            })
            .collect();
        Load {
            stop,
            acked,
            threads,
        }
    }

    /// Registrations acknowledged so far.
    fn acked(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Waits until at least `n` registrations were acknowledged.
    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "the load stalled at {}",
                self.acked()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the load; every name acknowledged.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a writer panicked");
        }
        let acked = self.acked.lock().expect("lock");
        acked.clone()
    }
}
