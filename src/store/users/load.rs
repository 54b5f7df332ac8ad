//! Building the user index at start: from the image a clean stop left when it
//! still describes the database, else from the base image the imager thread
//! wrote and the events after it (`base`), else by scanning the users table.
//!
//! The scan of a start without a usable image (after a crash) does not run before
//! the server serves: the index starts empty and *warming*, and the loop reads the
//! table in slices between ticks ([`Warming`], `Store::warm_step`), in id order,
//! a few thousand rows at most and about a millisecond each. The users table has
//! no index on names (schema version 3 dropped it to keep REGISTER's inserts at the
//! end of one B-tree), so a name the index does not hold cannot be looked for in
//! SQLite without reading the table. While warming:
//!
//! - a name the index holds is authoritative: every write since start went
//!   through the index as it does once warm, and the scan never replaces an entry;
//! - a request whose answer needs a name the index does not hold (LOOKUP,
//!   REGISTER's "is it taken", UNREGISTER, UPDATE, DELFIELDS, LOOKUPBY's holder, a
//!   followed event) is answered `-LOADING`, as Redis answers while it loads, and
//!   retried by the client; nothing is written;
//! - the scan adds a row only when its name is absent. A name present is the same
//!   user (the loop is the only writer, and the index and the committed table
//!   agree on every name the index holds); a present name with another id is a
//!   table holding the name twice, which is logged (a blocking scan refuses it);
//! - a user removed since start is gone from the table, so the scan cannot bring
//!   it back; a user registered since start has an id above the scan's end.
//!
//! The slices run only with no tick's transaction open, so they read the
//! committed table. Counts do not come from the index while warming: the store
//! counted the table at open.

use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Users;
use super::base;
use super::image::{self, Stamp};
use crate::error::{Error, Result};
use crate::store::meta;

/// Rows a warming slice reads at most (`USERBUS_WARM_ROWS` overrides it).
const SLICE_ROWS: usize = 4096;

/// How long a warming slice may run; it stops at the first row after.
const SLICE_BUDGET: Duration = Duration::from_millis(1);

/// How long a start reads the users table before it serves
/// (`USERBUS_WARM_START_MS` overrides it): a table that loads within it is whole
/// before the first request.
const START_BUDGET: Duration = Duration::from_millis(500);

/// Events a base image may be behind whatever its users count: replaying this
/// many costs less than a start's budget (`START_BUDGET`).
const REPLAY_FLOOR_EVENTS: u64 = 10_000;

/// How long loading waits after a failed read before the next slice, so that a
/// read failing every time is not retried on every turn of the loop.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How a start without a usable image is loading the users table.
#[derive(Debug)]
pub struct Warming {
    /// The highest id loaded so far.
    after: i64,
    /// The highest id the table held at start: later ids were registered since.
    last: i64,
    started: Instant,
    /// When loading started, in Unix milliseconds.
    started_ms: i64,
    /// Rows a slice reads at most.
    rows: usize,
    /// Time between slices (zero: every turn of the loop); for tests.
    pause: Duration,
    next_at: Instant,
    /// Before the server serves, a name held twice stops the start, as it did
    /// when the whole table was read first; once serving, it is logged.
    pub(in crate::store) refuse_twice: bool,
}

/// How far the index has loaded, for INFO.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// When loading started, in Unix milliseconds.
    pub started_ms: i64,
    /// The share of the table's id range loaded, 0 to 100.
    pub percent: f64,
    /// Seconds since loading started.
    pub elapsed: Duration,
}

impl Warming {
    fn new(last: i64) -> Warming {
        let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
        let now = Instant::now();
        Warming {
            after: 0,
            last,
            started: now,
            started_ms: crate::clock::now_ms(),
            rows: env("USERBUS_WARM_ROWS").map_or(SLICE_ROWS, |n| n.max(1) as usize),
            pause: Duration::from_millis(env("USERBUS_WARM_PAUSE_MS").unwrap_or(0)),
            next_at: now,
            refuse_twice: true,
        }
    }

    /// How far loading got.
    pub fn progress(&self) -> Progress {
        let percent = if self.last <= 0 {
            100.0
        } else {
            self.after as f64 * 100.0 / self.last as f64
        };
        Progress {
            started_ms: self.started_ms,
            percent,
            elapsed: self.started.elapsed(),
        }
    }

    /// How long until the next slice is due (zero: now).
    pub fn due_in(&self, now: Instant) -> Duration {
        self.next_at.saturating_duration_since(now)
    }

    /// Time since loading started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// A slice's read failed: the next one waits [`RETRY_PAUSE`].
    pub(in crate::store) fn read_failed(&mut self) {
        self.next_at = Instant::now() + RETRY_PAUSE;
    }
}

/// The user index of the database at `path` (open on `conn`), whose writer id,
/// last event seq and next user id `stamp` gives, and, when it must come from
/// the users table, the [`Warming`] that loads it (the index is then empty).
///
/// The first choice is the image a clean stop wrote, read once: it is removed
/// whether it served or not, so it can never describe a later state of the
/// database. The second is the base image the imager thread wrote (`base`) and
/// the events after it; it stays, since more events only add to its replay.
pub(in crate::store) fn open_index(
    conn: &Connection,
    path: &Path,
    stamp: &Stamp,
) -> Result<(Users, Option<Warming>)> {
    let started = Instant::now();
    let image_path = image::path_for(path);
    // A stop killed while writing the image leaves its temporary file.
    let _ = std::fs::remove_file(image::tmp_path_for(&image_path));
    match image::read(&image_path, stamp) {
        Ok(Some(users)) => {
            log::info!(
                "user index: {} users from {} in {:?}",
                users.len(),
                image_path.display(),
                started.elapsed()
            );
            return Ok((users, None));
        }
        Ok(None) => {}
        Err(e) => log::warn!(
            "user index: {} is unreadable ({e}); loading the users table",
            image_path.display()
        ),
    }
    match from_base(conn, path, stamp) {
        Ok(Some(users)) => return Ok((users, None)),
        Ok(None) => {}
        Err(e) => log::warn!(
            "user index: the base image {} is not usable ({e}); loading the users table",
            base::path_for(path).display()
        ),
    }
    let last = stamp.next_id.saturating_sub(1);
    let bound = usize::try_from(last).unwrap_or(0);
    // Sized as a blocking scan sizes it: loading grows no table.
    let users = Users::with_capacity(stamp.next_id, bound);
    if last > 0 {
        log::info!("user index: no image to load; warming scan of the users table");
    }
    Ok((users, Some(Warming::new(last))))
}

/// The index from the base image and the events after it; `None` when there is
/// no base image or it does not serve this database (another writer or
/// history epoch, events after it trimmed, or more of them than users).
fn from_base(conn: &Connection, path: &Path, stamp: &Stamp) -> Result<Option<Users>> {
    let started = Instant::now();
    let base_path = base::path_for(path);
    // A crash while the thread wrote one leaves its temporary files.
    base::remove_temporary(&base_path);
    let Some(opened) = base::open(&base_path)? else {
        return Ok(None);
    };
    let now = base::Basis {
        writer: stamp.writer.clone(),
        epoch: meta::history_epoch(conn)?,
        seq: stamp.last_seq,
    };
    let at = &opened.header.basis;
    if at.writer != now.writer || at.epoch != now.epoch || at.seq > now.seq {
        log::info!(
            "user index: the base image was written at {at:?}, the database is at {now:?}; \
             not used"
        );
        return Ok(None);
    }
    let behind = now.seq - at.seq;
    let kept: i64 = conn.query_row(
        "SELECT count(*) FROM events WHERE seq > ?1",
        [at.seq],
        |r| r.get(0),
    )?;
    if kept != behind {
        log::info!(
            "user index: the base image is at seq {}, and {} of the {behind} events after \
             it were trimmed; not used",
            at.seq,
            behind - kept
        );
        return Ok(None);
    }
    let users_then = opened.header.users;
    if behind as u64 > users_then.max(REPLAY_FLOOR_EVENTS) {
        log::info!(
            "user index: the base image is {behind} events behind, more than its \
             {users_then} users; not used"
        );
        return Ok(None);
    }
    let seq = at.seq;
    // Each event adds a user at most; ids bound the count too.
    let capacity = users_then
        .saturating_add(behind as u64)
        .min(stamp.next_id.saturating_sub(1).max(0) as u64);
    let mut users = opened.read(stamp.next_id, usize::try_from(capacity).unwrap_or(0))?;
    let read_in = started.elapsed();
    let replayed = base::replay(conn, &mut users, seq, now.seq)?;
    users.shrink_sparse();
    log::info!(
        "user index: {} users from the base image {} at seq {seq} plus {replayed} events \
         in {:?} ({read_in:?} reading the image)",
        users.len(),
        base_path.display(),
        started.elapsed()
    );
    Ok(Some(users))
}

/// One slice of warming: loads the next rows of the table into `users`, within
/// [`SLICE_BUDGET`]. True when the whole table is loaded. A row that cannot be
/// read as a user is an error, as it is to a blocking scan.
pub(in crate::store) fn warm_slice(
    conn: &Connection,
    path: &Path,
    users: &mut Users,
    warming: &mut Warming,
    budget: Option<Duration>,
) -> Result<bool> {
    let started = Instant::now();
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, fields, created_at FROM users \
         WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
    )?;
    let mut rows = stmt.query(rusqlite::params![
        warming.after,
        warming.last,
        warming.rows as i64
    ])?;
    let (mut read, mut cut) = (0usize, false);
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if let Some(held) = insert_row(users, row, path)? {
            if warming.refuse_twice {
                return Err(twice(path, &held, id));
            }
            log::error!(
                "{}: the users table holds the name '{held}' twice (ids {} and {id}); \
                 the index keeps the first",
                path.display(),
                users.get(&held).map_or(0, |u| u.id),
            );
        }
        warming.after = id;
        read += 1;
        if read % 64 == 0 && budget.is_some_and(|b| started.elapsed() >= b) {
            cut = true;
            break;
        }
    }
    let done = (!cut && read < warming.rows) || warming.after >= warming.last;
    warming.next_at = Instant::now() + warming.pause;
    if done {
        users.shrink_sparse();
    }
    Ok(done)
}

/// How long a start reads the users table before it serves.
pub(in crate::store) fn start_budget() -> Duration {
    std::env::var("USERBUS_WARM_START_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(START_BUDGET, Duration::from_millis)
}

/// The budget of a slice between ticks.
pub(in crate::store) const fn slice_budget() -> Duration {
    SLICE_BUDGET
}

/// Builds the index from the users table; a name found twice (the table was
/// written by something else) is refused. Also used after a fenced node
/// discarded its tail.
pub(in crate::store) fn scan(conn: &Connection, path: &Path, next_id: i64) -> Result<Users> {
    // Ids are never reused, so the next id bounds the count: the tables are sized
    // once and never grow while loading, and shrink back if many users are gone.
    let bound = usize::try_from(next_id.saturating_sub(1)).unwrap_or(0);
    let mut users = Users::with_capacity(next_id, bound);
    let mut stmt = conn.prepare("SELECT id, name, fields, created_at FROM users")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        if let Some(name) = insert_row(&mut users, row, path)? {
            return Err(twice(path, &name, row.get(0)?));
        }
    }
    users.shrink_sparse();
    Ok(users)
}

/// The error of a users table that holds `name` twice, the second time at `id`.
fn twice(path: &Path, name: &str, id: i64) -> Error {
    Error::Config(format!(
        "{}: the users table holds the name '{name}' twice (id {id}); \
         names must be unique",
        path.display()
    ))
}

/// Adds the user of `row` (id, name, fields, created_at) to `users` unless its
/// name is there; `Some(name)` when it was.
fn insert_row(users: &mut Users, row: &rusqlite::Row<'_>, path: &Path) -> Result<Option<String>> {
    let id: i64 = row.get(0)?;
    // Borrowed from the row: no allocation per user.
    let name = text(row, 1, path, id)?;
    let fields = text(row, 2, path, id)?;
    let created_at: i64 = row.get(3)?;
    let unreadable = |e: serde_json::Error| {
        Error::Config(format!(
            "{}: user {id} ('{name}') has unreadable fields: {e}",
            path.display()
        ))
    };
    // Borrowed strings when the JSON has no escapes (the usual case), owned
    // ones otherwise.
    let loaded = match serde_json::from_str::<BTreeMap<&str, &str>>(fields) {
        Ok(map) => users.load(id, name, map.iter().map(|(k, v)| (*k, *v)), created_at),
        Err(_) => {
            let map: BTreeMap<String, String> = serde_json::from_str(fields).map_err(unreadable)?;
            let pairs = map.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            users.load(id, name, pairs, created_at)
        }
    };
    Ok((!loaded).then(|| name.to_string()))
}

/// Column `idx` of `row` (user `id`) as text, borrowed.
fn text<'r>(row: &'r rusqlite::Row<'_>, idx: usize, path: &Path, id: i64) -> Result<&'r str> {
    row.get_ref(idx)?.as_str().map_err(|e| {
        Error::Config(format!(
            "{}: user {id} has an unreadable column {idx}: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::Store;
    use crate::store::users::tests::map;

    /// A database of `n` users `u0..` (ids 1..=n), closed without an image.
    fn database(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.db");
        let mut store = Store::open(&path, Durability::Normal, 0).expect("open");
        for i in 0..n {
            let f = map(&[("k", &i.to_string())]);
            store
                .register(&format!("u{i}"), &f, i as i64)
                .expect("register")
                .expect("free");
        }
        store.finish_tick().expect("commit");
        (dir, path)
    }

    /// The store opened on `path` with nothing loaded yet, `rows` rows a slice.
    fn cold(path: &Path, rows: usize) -> Store {
        let mut store = Store::open_cold(path, Durability::Normal, 0).expect("open");
        let warming = store.warming.as_mut().expect("warming");
        warming.rows = rows;
        warming.refuse_twice = false;
        store
    }

    fn loading(store: &Store, name: &str) -> bool {
        store.lookup(name).is_err_and(|e| e.is_loading())
    }

    #[test]
    fn names_not_loaded_yet_are_loading_and_loaded_ones_answer() {
        let (_dir, path) = database(50);
        let mut store = cold(&path, 10);
        assert_eq!(store.user_count(), 50);
        assert!(loading(&store, "u0"));
        assert!(loading(&store, "nobody"));
        // REGISTER cannot tell a free name from one not loaded: nothing written.
        let e = store.register("u3", &map(&[]), 0).expect_err("loading");
        assert!(e.is_loading());
        let e = store.register("fresh", &map(&[]), 0).expect_err("loading");
        assert!(e.is_loading());
        assert!(
            store
                .unregister("u40", 0)
                .expect_err("loading")
                .is_loading()
        );
        assert!(!store.tick_has_writes());
        assert!(!store.warm_step().expect("slice"));
        let u3 = store.lookup("u3").expect("loaded").expect("there");
        assert_eq!((u3.id, u3.fields.to_map()), (4, map(&[("k", "3")])));
        assert!(loading(&store, "u10"));
        assert_eq!(store.user_count(), 50);
    }

    #[test]
    fn writes_while_loading_stay_and_the_scan_brings_back_no_removed_user() {
        let (_dir, path) = database(50);
        let mut store = cold(&path, 10);
        store.warm_step().expect("slice");
        // Loaded users change while the rest loads.
        assert!(store.unregister("u2", 0).expect("unregister").is_some());
        let after = map(&[("k", "new")]);
        assert!(
            store
                .update_fields("u5", &after, 0)
                .expect("update")
                .is_some()
        );
        assert_eq!(store.user_count(), 49);
        store.finish_tick().expect("commit");
        // A tick that rolls back leaves the count and index as committed.
        assert!(store.unregister("u7", 0).expect("unregister").is_some());
        assert_eq!(store.user_count(), 48);
        let failed = store.write(|c| c.execute("INSERT INTO no_such_table VALUES (1)", []));
        assert!(failed.is_err());
        assert!(store.finish_tick().is_err());
        assert_eq!(store.user_count(), 49);
        assert!(store.lookup("u7").expect("loaded").is_some());
        let mut slices = 1;
        while store.loading().is_some() {
            store.warm_step().expect("slice");
            slices += 1;
            assert_eq!(store.user_count(), 49);
        }
        assert!(slices >= 5, "{slices} slices");
        assert_eq!(store.user_count(), 49);
        assert!(store.lookup("u2").expect("warm").is_none());
        assert_eq!(
            store.lookup("u5").expect("warm").map(|u| u.fields.to_map()),
            Some(after)
        );
        for i in (0..50).filter(|&i| i != 2) {
            let u = store
                .lookup(&format!("u{i}"))
                .expect("warm")
                .expect("there");
            assert_eq!(u.id, i + 1);
        }
        // Warm: a free name registers, with the next id.
        let c = store.register("fresh", &map(&[]), 0).expect("register");
        assert_eq!(c.map(|c| c.user_id), Some(51));
        store.finish_tick().expect("commit");
        assert_eq!(store.user_count(), 50);
    }

    #[test]
    fn a_slice_waits_for_the_tick_and_a_partial_index_writes_no_image() {
        let (_dir, path) = database(30);
        let mut store = cold(&path, 10);
        store.warm_step().expect("slice");
        assert!(store.unregister("u1", 0).expect("unregister").is_some());
        // A tick is open: no slice reads the table under it.
        assert!(!store.warm_step().expect("slice"));
        assert!(loading(&store, "u10"));
        store.finish_tick().expect("commit");
        store.save_index();
        assert!(!image::path_for(&path).exists());
        store.finish_warming().expect("load");
        assert_eq!(store.user_count(), 29);
        store.save_index();
        assert!(image::path_for(&path).exists());
    }

    #[test]
    fn a_failed_read_puts_the_next_slice_off() {
        let (_dir, path) = database(30);
        let mut store = cold(&path, 10);
        store.warm_step().expect("slice");
        assert_eq!(store.warm_due_in(Instant::now()), Some(Duration::ZERO));
        store
            .conn
            .execute_batch("ALTER TABLE users RENAME TO users_away")
            .expect("rename");
        assert!(!store.warm_step().expect("a failed read is retried"));
        let due = store.warm_due_in(Instant::now()).expect("loading");
        assert!(due > Duration::from_millis(500), "next slice in {due:?}");
        store
            .conn
            .execute_batch("ALTER TABLE users_away RENAME TO users")
            .expect("rename back");
        store.finish_warming().expect("load");
        assert_eq!(store.user_count(), 30);
    }

    #[test]
    fn a_name_held_twice_keeps_the_first_while_loading() {
        let (_dir, path) = database(3);
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch("UPDATE users SET name = 'u0' WHERE id = 3")
                .expect("edit");
        }
        assert!(Store::open(&path, Durability::Normal, 0).is_err());
        let mut store = cold(&path, 10);
        while store.loading().is_some() {
            store.warm_step().expect("slice");
        }
        assert_eq!(store.lookup("u0").expect("warm").map(|u| u.id), Some(1));
    }
}
