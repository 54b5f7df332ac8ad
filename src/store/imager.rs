//! The imager: a thread with its own read-only SQLite connection that writes the
//! user index's base image (`users::base`) beside the database whenever enough
//! has changed since the last one, so that a start after a crash loads it and
//! replays the events after it instead of scanning the whole users table.
//!
//! It shares nothing with the reactor but this module's `State` (atomics, and
//! the last error's text): it reads the database, never the in-memory index,
//! and the request path stays on the loop. Each chunk of the users table it
//! reads is its own short read transaction, so it never keeps the checkpointer
//! from copying the WAL for long.
//!
//! **When.** The thread looks every `USERBUS_BASE_IMAGE_POLL_MS` (default 1 s)
//! at the database's last event seq, and writes an image once the events since
//! the last image reach an eighth of its users, bounded to
//! [`MIN_EVENTS`]..=[`MAX_EVENTS`] (`USERBUS_BASE_IMAGE_EVENTS` sets the number;
//! 0 writes none), and at least [`INTERVAL`] after the last one ended
//! (`USERBUS_BASE_IMAGE_INTERVAL_MS`). A database with no usable image gets one
//! as soon as that many events exist. The image a scan began is dropped when
//! the history epoch moved while it ran (a discarded tail).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::users::base::{self, Basis};
use super::{meta, schema};

/// Fewest events after the last image that make a new one worth writing.
pub const MIN_EVENTS: u64 = 10_000;
/// Most events after the last image before a new one is written: a start
/// replays about that many.
pub const MAX_EVENTS: u64 = 1_000_000;
/// Shortest time between the end of an image and the start of the next.
pub const INTERVAL: Duration = Duration::from_secs(30);
/// How often the thread looks at the database's last seq.
const POLL: Duration = Duration::from_secs(1);
/// Rows read in one read transaction (`USERBUS_BASE_IMAGE_CHUNK_ROWS`).
const CHUNK_ROWS: i64 = 20_000;

/// What the thread and the loop share.
#[derive(Debug, Default)]
struct State {
    /// Set by `stop`; the thread waits on `wake` for it between looks, and
    /// reads it between chunks.
    stop: Mutex<bool>,
    wake: Condvar,
    running: AtomicBool,
    images: AtomicU64,
    last_seq: AtomicU64,
    last_users: AtomicU64,
    last_at_ms: AtomicU64,
    last_micros: AtomicU64,
    failures: AtomicU64,
    /// Scans dropped because the history epoch moved while they ran.
    dropped: AtomicU64,
    /// Why the last attempt failed; `None` after one succeeded.
    last_error: Mutex<Option<String>>,
}

/// A snapshot of the imager's counters, for INFO and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageStats {
    /// The thread is running.
    pub running: bool,
    /// Base images written.
    pub images: u64,
    /// The event seq the last one was begun at (0 before the first).
    pub last_seq: u64,
    /// Users in the last one.
    pub last_users: u64,
    /// When the last one was written, in Unix milliseconds (0 before the first).
    pub last_at_ms: u64,
    /// How long writing the last one took, in microseconds.
    pub last_micros: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Images dropped because history was rewritten while they were written.
    pub dropped: u64,
    /// Why the last attempt failed; `None` when it succeeded.
    pub last_error: Option<String>,
}

/// When to write an image.
#[derive(Debug, Clone, Copy)]
struct Policy {
    /// A fixed number of events instead of a share of the users; 0: never.
    events: Option<u64>,
    interval: Duration,
    poll: Duration,
    chunk_rows: i64,
}

impl Policy {
    fn from_env() -> Policy {
        let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
        Policy {
            events: env("USERBUS_BASE_IMAGE_EVENTS"),
            interval: env("USERBUS_BASE_IMAGE_INTERVAL_MS").map_or(INTERVAL, Duration::from_millis),
            poll: env("USERBUS_BASE_IMAGE_POLL_MS").map_or(POLL, Duration::from_millis),
            chunk_rows: env("USERBUS_BASE_IMAGE_CHUNK_ROWS")
                .map_or(CHUNK_ROWS, |n| n.clamp(1, 1 << 30) as i64),
        }
    }

    /// Events after the last image, of `users` users, that call for the next.
    fn threshold(&self, users: u64) -> u64 {
        self.events
            .unwrap_or_else(|| (users / 8).clamp(MIN_EVENTS, MAX_EVENTS))
    }
}

/// The running imager thread; stopping it (or dropping it) joins it.
#[derive(Debug)]
pub struct Imager {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl Imager {
    /// Opens a read-only connection to the database at `db` and starts the
    /// thread, which writes `users::base::path_for(db)`.
    pub fn start(db: &Path) -> rusqlite::Result<Imager> {
        Imager::start_with(db, Policy::from_env())
    }

    fn start_with(db: &Path, policy: Policy) -> rusqlite::Result<Imager> {
        let conn = Connection::open(db)?;
        conn.busy_timeout(crate::config::SQLITE_BUSY_TIMEOUT)?;
        conn.execute_batch("PRAGMA query_only = 1")?;
        let state = Arc::new(State {
            running: AtomicBool::new(true),
            ..State::default()
        });
        let shared = Arc::clone(&state);
        let path = base::path_for(db);
        let thread =
            super::background::spawn("imager", move || run(&conn, &path, &shared, policy))?;
        Ok(Imager {
            state,
            thread: Some(thread),
        })
    }

    /// Stops the thread (an image being written is abandoned) and waits for it.
    pub fn stop(&mut self) {
        let s = &*self.state;
        super::background::stop(&s.stop, &s.wake, &mut self.thread, "imager");
        self.state.running.store(false, Ordering::Relaxed);
    }

    /// The counters as they are now.
    pub fn stats(&self) -> ImageStats {
        let s = &*self.state;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ImageStats {
            running: s.running.load(Ordering::Relaxed),
            images: load(&s.images),
            last_seq: load(&s.last_seq),
            last_users: load(&s.last_users),
            last_at_ms: load(&s.last_at_ms),
            last_micros: load(&s.last_micros),
            failures: load(&s.failures),
            dropped: load(&s.dropped),
            last_error: s.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

impl Drop for Imager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True once `stop` was called.
fn stopping(state: &State) -> bool {
    state.stop.lock().map_or(true, |s| *s)
}

/// Waits `pause` or until stopped; true when stopped.
fn wait(state: &State, pause: Duration) -> bool {
    let Ok(stop) = state.stop.lock() else {
        return true;
    };
    match state.wake.wait_timeout_while(stop, pause, |s| !*s) {
        Ok((stop, _)) => *stop,
        Err(_) => true,
    }
}

/// How an attempt ended.
enum Outcome {
    /// Written: its basis and users.
    Written(Basis, u64),
    /// The history epoch or writer moved during the scan: nothing written.
    Stale,
    /// Stopped during the scan: nothing written.
    Stopped,
}

fn run(conn: &Connection, path: &Path, state: &State, policy: Policy) {
    super::background::step_aside("imager");
    // The image already there, when it is one this thread would have written.
    let mut last: Option<(Basis, u64)> = match base::open(path) {
        Ok(Some(o)) => Some((o.header.basis, o.header.users)),
        _ => None,
    };
    let mut last_end: Option<Instant> = None;
    loop {
        if wait(state, policy.poll) {
            return;
        }
        let now = match read_basis(conn) {
            Ok(b) => b,
            Err(e) => {
                failed(state, format!("reading the database: {e}"));
                continue;
            }
        };
        let usable = last
            .as_ref()
            .filter(|(b, _)| b.writer == now.writer && b.epoch == now.epoch && b.seq <= now.seq);
        let (since, users) = match usable {
            Some((b, users)) => ((now.seq - b.seq) as u64, *users),
            None => (
                now.seq.max(0) as u64,
                schema::highest_user_id(conn).ok().flatten().unwrap_or(0) as u64,
            ),
        };
        let threshold = policy.threshold(users);
        if threshold == 0 || since == 0 || since < threshold {
            continue;
        }
        if last_end.is_some_and(|t| t.elapsed() < policy.interval) {
            continue;
        }
        let started = Instant::now();
        match write(conn, path, state, policy.chunk_rows) {
            Ok(Outcome::Written(basis, users)) => {
                let took = started.elapsed();
                log::info!(
                    "user index: base image of {users} users at seq {} written to {} in {took:?}",
                    basis.seq,
                    path.display()
                );
                state.images.fetch_add(1, Ordering::Relaxed);
                state
                    .last_seq
                    .store(basis.seq.max(0) as u64, Ordering::Relaxed);
                state.last_users.store(users, Ordering::Relaxed);
                state
                    .last_at_ms
                    .store(crate::clock::now_ms().max(0) as u64, Ordering::Relaxed);
                state.last_micros.store(
                    u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                if let Ok(mut e) = state.last_error.lock() {
                    *e = None;
                }
                last = Some((basis, users));
            }
            Ok(Outcome::Stale) => {
                log::info!("user index: history was rewritten during the base image; dropped");
                state.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Outcome::Stopped) => return,
            Err(e) => failed(state, e),
        }
        last_end = Some(Instant::now());
    }
}

fn failed(state: &State, why: String) {
    log::warn!("user index: cannot write the base image: {why}");
    state.failures.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut e) = state.last_error.lock() {
        *e = Some(why);
    }
}

/// The writer id, history epoch and last seq, in one read transaction.
fn read_basis(conn: &Connection) -> rusqlite::Result<Basis> {
    conn.execute_batch("BEGIN")?;
    let read = (|| -> rusqlite::Result<Basis> {
        Ok(Basis {
            writer: meta::value(conn, meta::WRITER_KEY)?.unwrap_or_default(),
            epoch: meta::history_epoch(conn)?,
            seq: schema::last_event_seq(conn)?,
        })
    })();
    let end = conn.execute_batch("COMMIT");
    let basis = read?;
    end?;
    Ok(basis)
}

/// Writes one base image: the basis, then the users table a chunk at a time.
fn write(
    conn: &Connection,
    path: &Path,
    state: &State,
    chunk_rows: i64,
) -> Result<Outcome, String> {
    let basis = read_basis(conn).map_err(|e| format!("reading the database: {e}"))?;
    let tmp: PathBuf = super::users::image::tmp_path_for(path);
    let mut out = base::Writer::create(path, &basis)
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let mut stmt = conn
        .prepare(
            "SELECT id, name, fields, created_at FROM users \
             WHERE id > ?1 ORDER BY id LIMIT ?2",
        )
        .map_err(|e| format!("reading the users table: {e}"))?;
    let mut after = 0i64;
    loop {
        if stopping(state) {
            return Ok(Outcome::Stopped);
        }
        let mut read = 0;
        // The statement's read transaction ends when its rows are done.
        let mut rows = stmt
            .query(rusqlite::params![after, chunk_rows])
            .map_err(|e| format!("reading the users table: {e}"))?;
        while let Some(row) = rows
            .next()
            .map_err(|e| format!("reading the users table: {e}"))?
        {
            let user = (|| {
                Ok::<_, rusqlite::Error>((
                    row.get::<_, i64>(0)?,
                    row.get_ref(1)?.as_str()?,
                    row.get_ref(2)?.as_str()?,
                    row.get::<_, i64>(3)?,
                ))
            })()
            .map_err(|e| format!("reading the users table after id {after}: {e}"))?;
            let (id, name, fields, created_at) = user;
            out.push(id, name, fields, created_at)
                .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
            after = id;
            read += 1;
        }
        if read < chunk_rows {
            break;
        }
    }
    let end = read_basis(conn).map_err(|e| format!("reading the database: {e}"))?;
    if end.writer != basis.writer || end.epoch != basis.epoch || end.seq < basis.seq {
        return Ok(Outcome::Stale);
    }
    match out
        .finish(|| stopping(state))
        .map_err(|e| format!("writing {}: {e}", path.display()))?
    {
        Some(users) => Ok(Outcome::Written(basis, users)),
        None => Ok(Outcome::Stopped),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Durability;
    use crate::store::Store;
    use crate::store::users::tests::map;

    /// Names the tests use, registered or not.
    const NAMES: usize = 400;

    /// Every name's user as the store answers it.
    type Answer = Option<(i64, i64, BTreeMap<String, String>)>;

    fn answers(store: &Store) -> Vec<Answer> {
        (0..NAMES)
            .map(|i| {
                store
                    .lookup(&format!("u{i}"))
                    .expect("loaded")
                    .map(|u| (u.id, u.created_at, u.fields.to_map()))
            })
            .collect()
    }

    /// The index a full scan of the users table builds, as answers.
    fn scanned(path: &Path) -> Vec<Answer> {
        let conn = Connection::open(path).expect("open");
        let next = schema::highest_user_id(&conn).expect("id").unwrap_or(0) + 1;
        let users = super::super::users::load::scan(&conn, path, next).expect("scan");
        (0..NAMES)
            .map(|i| {
                users
                    .get(&format!("u{i}"))
                    .map(|u| (u.id, u.created_at, u.fields.to_map()))
            })
            .collect()
    }

    /// A database of `u0..u299`, each with a field, committed.
    fn database() -> (tempfile::TempDir, PathBuf, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.db");
        let mut store = Store::open(&path, Durability::Normal, 0).expect("open");
        for i in 0..300 {
            let f = map(&[("k", &i.to_string())]);
            store
                .register(&format!("u{i}"), &f, 1_000 + i as i64)
                .expect("register")
                .expect("free");
        }
        store.finish_tick().expect("commit");
        (dir, path, store)
    }

    /// Writes a base image of the database at `path` as the thread does,
    /// `chunk` rows a read.
    fn write_image(path: &Path, chunk: i64) -> Basis {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch("PRAGMA query_only = 1")
            .expect("query_only");
        match write(&conn, &base::path_for(path), &State::default(), chunk) {
            Ok(Outcome::Written(basis, _)) => basis,
            Ok(_) => panic!("not written"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Unregisters, updates, registers, and registers again a name unregistered
    /// (which gets a new id), in several ticks.
    fn more_writes(store: &mut Store) {
        for i in (0..300).step_by(7) {
            store.unregister(&format!("u{i}"), 5).expect("unregister");
        }
        store.finish_tick().expect("commit");
        for i in (1..300).step_by(5) {
            let f = map(&[("k", "new"), ("x", &format!("\"{i}\" é"))]);
            if store.lookup(&format!("u{i}")).expect("loaded").is_some() {
                store
                    .update_fields(&format!("u{i}"), &f, 6)
                    .expect("update");
            }
        }
        store.finish_tick().expect("commit");
        for i in 300..NAMES - 10 {
            store
                .register(&format!("u{i}"), &map(&[]), 7)
                .expect("register");
        }
        store
            .register("u14", &map(&[("again", "1")]), 8)
            .expect("register")
            .expect("free");
        store.unregister("u301", 9).expect("unregister");
        store
            .update_fields("u14", &map(&[("again", "2")]), 10)
            .expect("update");
        store.finish_tick().expect("commit");
    }

    /// The store reopened after a crash (no clean-stop image).
    fn reopen(path: &Path) -> Store {
        Store::open_warming(path, Durability::Normal, 0).expect("open")
    }

    #[test]
    fn a_start_after_a_crash_loads_the_base_image_and_replays_the_events_after_it() {
        let (_dir, path, mut store) = database();
        let at = write_image(&path, 64);
        assert_eq!(at.seq, 300);
        more_writes(&mut store);
        let want = answers(&store);
        let next = store.users.next_id();
        drop(store);
        assert_eq!(scanned(&path), want);
        let mut store = reopen(&path);
        assert!(store.loading().is_none(), "whole from the start");
        assert_eq!(answers(&store), want);
        assert_eq!(store.user_count(), want.iter().flatten().count() as i64);
        let c = store.register("fresh", &map(&[]), 0).expect("register");
        assert_eq!(c.map(|c| c.user_id), Some(next));
        store.finish_tick().expect("commit");
        drop(store);
        assert!(
            base::path_for(&path).exists(),
            "it serves the next start too"
        );
        assert_eq!(answers(&reopen(&path)), want);
    }

    #[test]
    fn rows_read_after_later_commits_end_as_the_events_say() {
        let (_dir, path, mut store) = database();
        let conn = Connection::open(&path).expect("open");
        let at = read_basis(&conn).expect("basis");
        let rows = |conn: &Connection, from: i64, to: i64| -> Vec<(i64, String, String, i64)> {
            conn.prepare(
                "SELECT id, name, fields, created_at FROM users \
                 WHERE id BETWEEN ?1 AND ?2 ORDER BY id",
            )
            .expect("prepare")
            .query_map([from, to], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
        };
        // The first chunk is read at the basis, the rest after every change.
        let early = rows(&conn, 1, 150);
        more_writes(&mut store);
        let late = rows(&conn, 151, i64::MAX);
        let mut w = base::Writer::create(&base::path_for(&path), &at).expect("create");
        for (id, name, fields, created_at) in early.iter().chain(&late) {
            w.push(*id, name, fields, *created_at).expect("push");
        }
        w.finish(|| false).expect("finish");
        let want = answers(&store);
        drop(store);
        let store = reopen(&path);
        assert!(store.loading().is_none());
        assert_eq!(answers(&store), want);
    }

    #[test]
    fn a_discarded_tail_makes_older_base_images_unusable() {
        let (_dir, path, mut store) = database();
        write_image(&path, 1_000);
        let before = meta::history_epoch(&store.conn).expect("epoch");
        // Events after the image, discarded, then others with the same seqs.
        for i in 300..320 {
            store
                .register(&format!("u{i}"), &map(&[]), 0)
                .expect("register");
        }
        store.finish_tick().expect("commit");
        store.discard_after(290).expect("discard");
        assert_eq!(meta::history_epoch(&store.conn).expect("epoch"), before + 1);
        for i in 330..345 {
            store
                .register(&format!("u{i}"), &map(&[]), 0)
                .expect("register");
        }
        store.finish_tick().expect("commit");
        let want = answers(&store);
        drop(store);
        let mut store = Store::open_cold(&path, Durability::Normal, 0).expect("open");
        assert!(store.loading().is_some(), "the base image was not used");
        store.finish_warming().expect("load");
        assert_eq!(answers(&store), want);
        assert!(store.lookup("u305").expect("loaded").is_none());
        assert!(store.lookup("u295").expect("loaded").is_none());
    }

    #[test]
    fn a_base_image_older_than_the_retained_events_is_not_used() {
        let (_dir, path, mut store) = database();
        write_image(&path, 1_000);
        more_writes(&mut store);
        assert!(store.trim(Some(10), None, i64::MAX, 100_000).expect("trim") > 0);
        drop(store);
        let store = Store::open_cold(&path, Durability::Normal, 0).expect("open");
        assert!(store.loading().is_some(), "the base image was not used");
    }

    #[test]
    fn the_thread_writes_an_image_once_enough_changed_and_stops() {
        let (_dir, path, mut store) = database();
        let policy = Policy {
            events: Some(100),
            interval: Duration::ZERO,
            poll: Duration::from_millis(5),
            chunk_rows: 50,
        };
        let mut imager = Imager::start_with(&path, policy).expect("start");
        let deadline = Instant::now() + Duration::from_secs(20);
        while imager.stats().images == 0 {
            assert!(Instant::now() < deadline, "{:?}", imager.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        let stats = imager.stats();
        assert_eq!((stats.last_seq, stats.last_users), (300, 300));
        assert!(stats.running && stats.last_error.is_none());
        // 99 more events are not enough for the next; 100 are.
        for i in 300..399 {
            store
                .register(&format!("u{i}"), &map(&[]), 0)
                .expect("register");
        }
        store.finish_tick().expect("commit");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(imager.stats().images, 1);
        store.unregister("u0", 0).expect("unregister");
        store.finish_tick().expect("commit");
        while imager.stats().images == 1 {
            assert!(Instant::now() < deadline, "{:?}", imager.stats());
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(imager.stats().last_seq, 400);
        imager.stop();
        assert!(!imager.stats().running);
        let want = answers(&store);
        drop(store);
        assert_eq!(answers(&reopen(&path)), want);
    }
}
