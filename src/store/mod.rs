//! Storage: one SQLite connection, the schema, cached statements and the tick's
//! transaction.
//!
//! The first write of a tick opens a transaction; the reactor commits it once, after
//! every request of the tick ran (group commit). A failed write rolls the whole tick
//! back at once and the store remembers why, so every later storage request of the
//! same tick fails the same way and the reactor can replace the tick's replies.

use rusqlite::{Connection, OptionalExtension, params};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{CHECKPOINT_WAL_FRAMES, Durability, SQLITE_BUSY_TIMEOUT, SQLITE_CACHE_KIB};
use crate::error::{Error, Result};

pub mod groups;
pub mod users;

pub use groups::{ClaimOptions, ConsumerInfo, DeadLetter, Delivered, GroupInfo};
use users::{UserRef, Users};

/// A user's fields by name.
pub type FieldMap = BTreeMap<String, String>;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// The users table since version 3: no UNIQUE index on names. The store's
/// in-memory index (`crate::users`) keeps names unique, so a registration costs two
/// appends (its user row and its event row, each at the end of its B-tree) rather
/// than also a random insert into a name index. Rows are read by id (USERS) or all
/// at start.
const USERS_V3: &str = "
CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,   -- unique: kept so by the server, checked at start
    fields     TEXT    NOT NULL,   -- JSON object of string values
    created_at INTEGER NOT NULL    -- Unix milliseconds
);
";

/// The events table, unchanged since version 1 (whose users table had a UNIQUE
/// name).
const EVENTS_V1: &str = "
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT    NOT NULL,      -- user.registered | user.unregistered
    user_id INTEGER NOT NULL,
    name    TEXT    NOT NULL,
    fields  TEXT    NOT NULL,      -- the user's fields at the time of the event
    at      INTEGER NOT NULL       -- Unix milliseconds
);
";

/// Consumer groups of the `events` stream, their consumers and pending entries,
/// dead letters, and the offsets of durable handlers.
const SCHEMA_V2: &str = "
CREATE TABLE stream_groups (
    name           TEXT    PRIMARY KEY,
    last_delivered INTEGER NOT NULL,   -- seq of the last entry delivered to the group
    entries_read   INTEGER NOT NULL,   -- entries delivered to the group so far
    created_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE stream_consumers (
    grp       TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    seen_at   INTEGER NOT NULL,        -- last interaction, Unix ms
    active_at INTEGER,                 -- last successful read or claim, Unix ms
    PRIMARY KEY (grp, name)
) WITHOUT ROWID;
CREATE TABLE stream_pending (
    grp          TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    consumer     TEXT    NOT NULL,
    delivered_at INTEGER NOT NULL,     -- last delivery, Unix ms
    deliveries   INTEGER NOT NULL,
    PRIMARY KEY (grp, seq)
) WITHOUT ROWID;
CREATE INDEX stream_pending_by_consumer ON stream_pending (grp, consumer, seq);
CREATE TABLE dead_letters (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- entry id in events.dead
    event_seq  INTEGER NOT NULL,
    grp        TEXT    NOT NULL,
    consumer   TEXT    NOT NULL,
    deliveries INTEGER NOT NULL,
    at         INTEGER NOT NULL
);
CREATE TABLE handler_offsets (
    name TEXT    PRIMARY KEY,
    seq  INTEGER NOT NULL               -- last event the handler returned from
) WITHOUT ROWID;
";

/// Version 2 to 3: rebuilds the users table without its UNIQUE name index.
const MIGRATE_V3: &str = "
ALTER TABLE users RENAME TO users_v2;
{USERS_V3}
INSERT INTO users (id, name, fields, created_at)
    SELECT id, name, fields, created_at FROM users_v2 ORDER BY id;
DROP TABLE users_v2;
";

// Ids come from the in-memory index (the next after the highest ever used, which
// AUTOINCREMENT's counter remembers), so a taken name never uses one up. Event
// sequence numbers likewise come from the counts. A tick's registrations are
// written together: users in statements of up to `BATCH_SIZES[0]` rows, then
// their events in one statement that copies the user rows.
/// Rows per multi-row INSERT: a batch is cut into the largest sizes that fit.
const BATCH_SIZES: [usize; 4] = [64, 16, 4, 1];
/// Registrations held before they are written even though the tick goes on.
const MAX_PENDING: usize = 1024;

// UNREGISTER's rows, one statement each.
const DELETE_USER: &str = "DELETE FROM users WHERE id = ?1";
const INSERT_EVENT: &str =
    "INSERT INTO events (kind, user_id, name, fields, at) VALUES (?1, ?2, ?3, ?4, ?5)";
const SELECT_EVENTS_ASC: &str = "SELECT seq, kind, user_id, name, fields, at FROM events \
                                 WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq LIMIT ?3";
const SELECT_EVENTS_DESC: &str = "SELECT seq, kind, user_id, name, fields, at FROM events \
                                  WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq DESC LIMIT ?3";
const SCAN_USERS: &str = "SELECT id, name FROM users WHERE id > ?1 ORDER BY id LIMIT ?2";

/// A storage failure as clients see it: `-ERR storage: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError(pub String);

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError(e.to_string())
    }
}

/// A user change and its event row, written in the same transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The user's id.
    pub user_id: i64,
    /// The event's sequence number.
    pub seq: i64,
}

/// Sizes kept in memory so that reading them costs no query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Registered users.
    pub users: i64,
    /// Entries in the event log.
    pub events: i64,
    /// The highest event sequence number ever assigned (0 before the first).
    pub last_seq: i64,
}

/// A registration written to SQLite at the tick's next statement or commit.
#[derive(Debug)]
struct Pending {
    id: i64,
    seq: i64,
    name: String,
    json: String,
    at: i64,
}

/// `INSERT INTO <table> (<cols>) VALUES (...), (...)` for `rows` rows of `per_row`
/// parameters.
fn multi_insert(head: &str, per_row: usize, rows: usize) -> String {
    let mut sql = String::from(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { " VALUES (" } else { ", (" });
        for p in 0..per_row {
            if p > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("?{}", r * per_row + p + 1));
        }
        sql.push(')');
    }
    sql
}

/// The statements that write batches of registrations: users, one per batch size,
/// and their events.
#[derive(Debug)]
struct BatchSql {
    users: [String; BATCH_SIZES.len()],
    /// The events of users just written, copied from their rows: `?1` is the
    /// first event's seq minus the first user's id, `?2..=?3` the users' ids.
    copy_events: String,
}

impl BatchSql {
    fn new() -> BatchSql {
        BatchSql {
            users: BATCH_SIZES
                .map(|n| multi_insert("INSERT INTO users (id, name, fields, created_at)", 4, n)),
            copy_events: format!(
                "INSERT INTO events (kind, seq, user_id, name, fields, at) \
                 SELECT '{}', id + ?1, id, name, fields, created_at FROM users \
                 WHERE id BETWEEN ?2 AND ?3 ORDER BY id",
                crate::events::REGISTERED
            ),
        }
    }
}

/// One row of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Sequence number: the stream entry id is `<seq>-0`.
    pub seq: i64,
    /// `user.registered` or `user.unregistered`.
    pub kind: String,
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub name: String,
    /// The user's fields as JSON.
    pub fields: String,
    /// Unix milliseconds.
    pub at: i64,
}

/// The state of the tick's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Txn {
    /// No write yet this tick.
    Idle,
    /// A write opened the tick's transaction.
    Open,
    /// A write failed and the transaction was rolled back; the tick is lost.
    Failed(StorageError),
}

/// The database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    txn: Txn,
    /// Counts as committed.
    committed: Counts,
    /// The event log's counts as the tick sees them (its own uncommitted writes
    /// included). Its `users` is not kept up: the index counts users (`counts`).
    tick: Counts,
    commits_since_checkpoint: u64,
    /// Frames in the WAL after the last commit, as SQLite's WAL hook reports it.
    wal_frames: Arc<AtomicU64>,
    healthy: bool,
    /// The database size cap in pages (0 = none).
    max_pages: u64,
    /// Every user, by name, as the tick sees them.
    users: Users,
    /// The tick's registrations not yet written (see `flush`).
    pending: Vec<Pending>,
    batch_sql: BatchSql,
}

impl Store {
    /// Opens (creating or migrating) the database at `path`.
    pub fn open(path: &Path, durability: Durability, max_pages: u64) -> Result<Store> {
        let conn = Connection::open(path).map_err(|e| {
            Error::Config(format!(
                "cannot open the database {}: {e} (does the directory exist and is it writable?)",
                path.display()
            ))
        })?;
        conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Config(format!(
                "{} cannot use WAL journal mode (got {mode})",
                path.display()
            )));
        }
        let sync = match durability {
            Durability::Strict => "FULL",
            Durability::Normal => "NORMAL",
        };
        // Checkpoints run between ticks (see `checkpoint`), never inside a commit.
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 0; PRAGMA foreign_keys = OFF;"
        ))?;
        // Set after the pragma, which would replace it.
        let wal_frames = Arc::new(AtomicU64::new(0));
        let frames = Arc::clone(&wal_frames);
        let mut conn = conn;
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(u64::try_from(pages).unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }))?;
        conn.execute_batch(&format!("PRAGMA cache_size = -{SQLITE_CACHE_KIB}"))?;
        conn.set_prepared_statement_cache_capacity(64);
        migrate(&conn)?;
        // The cap limits data, not the schema: it applies once migrations ran.
        if max_pages > 0 {
            let _: i64 =
                conn.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |r| {
                    r.get(0)
                })?;
        }
        let users = load_users(&conn, path)?;
        let counts = Counts {
            users: users.len() as i64,
            events: conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?,
            // AUTOINCREMENT's high-water mark: sequence numbers never repeat, even
            // after the oldest events are trimmed.
            last_seq: conn
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0),
        };
        Ok(Store {
            conn,
            txn: Txn::Idle,
            committed: counts,
            tick: counts,
            commits_since_checkpoint: 0,
            wal_frames,
            healthy: true,
            max_pages,
            users,
            pending: Vec::new(),
            batch_sql: BatchSql::new(),
        })
    }

    /// The database size cap in pages (0 = none).
    pub fn max_pages(&self) -> u64 {
        self.max_pages
    }

    /// Changes the database size cap at run time (0 lifts it): after a disk-full
    /// episode caused by the cap, writes succeed again without a restart.
    pub fn set_max_pages(&mut self, pages: u64) -> std::result::Result<u64, StorageError> {
        // SQLite's own ceiling stands for "no cap"; it never goes below the
        // current size.
        let asked = if pages == 0 { 4_294_967_294 } else { pages };
        let set: i64 =
            self.conn
                .query_row(&format!("PRAGMA max_page_count = {asked}"), [], |r| {
                    r.get(0)
                })?;
        self.max_pages = if pages == 0 { 0 } else { set as u64 };
        Ok(self.max_pages)
    }

    /// Users, as this tick sees them (its own uncommitted changes included).
    pub fn user_count(&self) -> i64 {
        self.users.len() as i64
    }

    /// Counts as this tick sees them.
    pub fn counts(&self) -> Counts {
        Counts {
            users: self.user_count(),
            ..self.tick
        }
    }

    /// Counts as committed.
    pub fn committed_counts(&self) -> Counts {
        self.committed
    }

    /// False after a commit failed, until one succeeds again.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Adds a user and its `user.registered` event; `None` when the name is taken.
    ///
    /// The rows are written with the tick's other registrations, in a few
    /// multi-row statements, before the tick's next other statement or its commit;
    /// a failure there loses the whole tick, as any failed write does.
    pub fn register(
        &mut self,
        name: &str,
        fields: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> std::result::Result<Option<Change>, StorageError> {
        self.begin()?;
        let Some(user_id) = self.users.add(name, fields, now_ms) else {
            return Ok(None);
        };
        // Sorted keys make the stored JSON canonical; a string map always serializes.
        let json = serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_string());
        let seq = self.tick.last_seq + 1;
        self.pending.push(Pending {
            id: user_id,
            seq,
            name: name.to_string(),
            json,
            at: now_ms,
        });
        self.note_event(seq);
        if self.pending.len() >= MAX_PENDING {
            self.flush()?;
        }
        Ok(Some(Change { user_id, seq }))
    }

    /// Writes the pending registrations: users in statements of `BATCH_SIZES`
    /// rows, then their events, copied from the user rows just written (no text
    /// is bound twice) by one statement per run of consecutive ids and seqs; a
    /// tick's registrations form one run, since every other event flushes them
    /// first.
    fn flush(&mut self) -> std::result::Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let res = (|| {
            let mut rest = &pending[..];
            // The largest sizes first; the last size is 1, so nothing is left over.
            for (i, &n) in BATCH_SIZES.iter().enumerate() {
                while rest.len() >= n {
                    let (rows, tail) = rest.split_at(n);
                    let mut users = self.conn.prepare_cached(&self.batch_sql.users[i])?;
                    for (r, p) in rows.iter().enumerate() {
                        let b = r * 4;
                        users.raw_bind_parameter(b + 1, p.id)?;
                        users.raw_bind_parameter(b + 2, &p.name)?;
                        users.raw_bind_parameter(b + 3, &p.json)?;
                        users.raw_bind_parameter(b + 4, p.at)?;
                    }
                    users.raw_execute()?;
                    rest = tail;
                }
            }
            let mut copy = self.conn.prepare_cached(&self.batch_sql.copy_events)?;
            for run in pending.chunk_by(|a, b| b.id == a.id + 1 && b.seq == a.seq + 1) {
                let (first, last) = (&run[0], &run[run.len() - 1]);
                let copied = copy.execute(params![first.seq - first.id, first.id, last.id])?;
                if copied != run.len() {
                    return Err(rusqlite::Error::StatementChangedRows(copied));
                }
            }
            Ok(())
        })();
        // Keep the allocation for the next tick.
        self.pending = pending;
        self.pending.clear();
        self.guard(res)
    }

    /// Before any other statement of the tick: the pending rows go first, so every
    /// statement sees the tick's registrations.
    fn settle(&mut self) -> std::result::Result<(), StorageError> {
        self.readable()?;
        self.flush()
    }

    /// Removes a user and writes its `user.unregistered` event; `None` when unknown.
    /// On success also returns the fields the user had.
    pub fn unregister(
        &mut self,
        name: &str,
        now_ms: i64,
    ) -> std::result::Result<Option<(Change, FieldMap)>, StorageError> {
        self.begin()?;
        self.flush()?;
        // Out of the index first: a failed write below rolls the index back too.
        let Some((user_id, fields)) = self.users.remove(name) else {
            return Ok(None);
        };
        let json = serde_json::to_string(&fields).unwrap_or_else(|_| "{}".to_string());
        let res = (|| {
            self.conn
                .prepare_cached(DELETE_USER)?
                .execute(params![user_id])?;
            self.conn.prepare_cached(INSERT_EVENT)?.execute(params![
                crate::events::UNREGISTERED,
                user_id,
                name,
                json,
                now_ms
            ])?;
            Ok(self.conn.last_insert_rowid())
        })();
        let seq = self.guard(res)?;
        self.note_event(seq);
        Ok(Some((Change { user_id, seq }, fields)))
    }

    /// The user named `name`, as the tick sees it; no query (the in-memory index).
    pub fn lookup(&self, name: &str) -> std::result::Result<Option<UserRef<'_>>, StorageError> {
        self.readable()?;
        Ok(self.users.get(name))
    }

    /// Up to `count` users with ids above `after`, in id order, as (id, name).
    pub fn scan(
        &mut self,
        after: i64,
        count: usize,
    ) -> std::result::Result<Vec<(i64, String)>, StorageError> {
        self.settle()?;
        let res = self
            .conn
            .prepare_cached(SCAN_USERS)
            .and_then(|mut s| {
                s.query_map(params![after, count as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(StorageError::from);
        self.guard_read(res)
    }

    /// Up to `count` events with `lo <= seq <= hi`, ascending (or descending when
    /// `rev`).
    pub fn events_between(
        &mut self,
        lo: i64,
        hi: i64,
        count: usize,
        rev: bool,
    ) -> std::result::Result<Vec<EventRow>, StorageError> {
        self.settle()?;
        let sql = if rev {
            SELECT_EVENTS_DESC
        } else {
            SELECT_EVENTS_ASC
        };
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        let res = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| {
                s.query_map(params![lo, hi, limit], |r| {
                    Ok(EventRow {
                        seq: r.get(0)?,
                        kind: r.get(1)?,
                        user_id: r.get(2)?,
                        name: r.get(3)?,
                        fields: r.get(4)?,
                        at: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(StorageError::from);
        self.guard_read(res)
    }

    /// The stored offset of durable handler `name`; a new name is stored at the
    /// end of the log and that is returned. Runs outside any tick (at start).
    pub fn handler_offset(&mut self, name: &str) -> Result<i64> {
        let last = self.committed.last_seq;
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM handler_offsets WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(seq) = found {
            return Ok(seq);
        }
        self.conn.execute(
            "INSERT INTO handler_offsets (name, seq) VALUES (?1, ?2)",
            params![name, last],
        )?;
        Ok(last)
    }

    /// Stores durable handler `name`'s offset, in a transaction of its own (between
    /// ticks: the tick's transaction is closed).
    pub fn set_handler_offset(
        &mut self,
        name: &str,
        seq: i64,
    ) -> std::result::Result<(), StorageError> {
        if self.txn != Txn::Idle {
            return Err(StorageError("a tick transaction is open".into()));
        }
        self.conn
            .prepare_cached(
                "INSERT INTO handler_offsets (name, seq) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET seq = ?2",
            )?
            .execute(params![name, seq])?;
        Ok(())
    }

    /// Trims the event log: removes up to `batch` of the oldest entries beyond the
    /// newest `keep` or older than `before_ms`, never above `floor`, and commits.
    /// Runs between ticks. Returns how many entries went.
    pub fn trim(
        &mut self,
        keep: Option<u64>,
        before_ms: Option<i64>,
        floor: i64,
        batch: usize,
    ) -> std::result::Result<usize, StorageError> {
        if self.txn != Txn::Idle {
            return Ok(0);
        }
        let keep = keep.map(|k| i64::try_from(k).unwrap_or(i64::MAX));
        let batch = i64::try_from(batch).unwrap_or(i64::MAX);
        let removed = self.write(|c| {
            // The highest seq outside the newest `keep` entries (none: -1).
            let count_cut: i64 = match keep {
                Some(k) => c
                    .prepare_cached("SELECT seq FROM events ORDER BY seq DESC LIMIT 1 OFFSET ?1")?
                    .query_row(params![k], |r| r.get(0))
                    .optional()?
                    .unwrap_or(-1),
                None => -1,
            };
            c.prepare_cached(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events \
                 WHERE (seq <= ?1 OR at < ?2) AND seq <= ?3 ORDER BY seq LIMIT ?4)",
            )?
            .execute(params![
                count_cut,
                before_ms.unwrap_or(i64::MIN),
                floor,
                batch
            ])
        })?;
        self.tick.events -= removed as i64;
        self.finish_tick()?;
        Ok(removed)
    }

    fn note_event(&mut self, seq: i64) {
        self.tick.events += 1;
        self.tick.last_seq = self.tick.last_seq.max(seq);
    }

    /// True when this tick wrote something (or tried to).
    pub fn tick_has_writes(&self) -> bool {
        self.txn != Txn::Idle
    }

    /// Ends the tick: commits its transaction. `Err` means nothing the tick wrote is
    /// in the database, and none of its replies may claim success.
    pub fn finish_tick(&mut self) -> std::result::Result<(), StorageError> {
        if self.txn == Txn::Open {
            // A failure marks the tick failed, which the match below reports.
            let _ = self.flush();
        }
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Idle => Ok(()),
            Txn::Failed(e) => {
                self.forget_tick();
                Err(e)
            }
            Txn::Open => match self.conn.execute_batch("COMMIT") {
                Ok(()) => {
                    self.committed = self.counts();
                    self.users.commit();
                    self.commits_since_checkpoint += 1;
                    self.healthy = true;
                    Ok(())
                }
                Err(e) => {
                    let err = StorageError::from(e);
                    log::error!("commit failed, the tick is rolled back: {err}");
                    // SQLite may already have rolled back; a second rollback is harmless.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.forget_tick();
                    self.healthy = false;
                    Err(err)
                }
            },
        }
    }

    /// True when the log has grown enough that a checkpoint should run now, busy
    /// or not (`CHECKPOINT_WAL_FRAMES`).
    pub fn checkpoint_due(&self) -> bool {
        self.commits_since_checkpoint > 0
            && self.wal_frames.load(Ordering::Relaxed) >= CHECKPOINT_WAL_FRAMES
    }

    /// Copies committed WAL frames into the database without waiting for anyone
    /// (a PASSIVE checkpoint). Runs between ticks, never inside a commit. Returns
    /// false when it failed (it is retried later).
    pub fn checkpoint(&mut self) -> bool {
        if self.txn != Txn::Idle || self.commits_since_checkpoint == 0 {
            return true;
        }
        let started = std::time::Instant::now();
        match self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            }) {
            Ok((log_frames, done)) => {
                self.commits_since_checkpoint = 0;
                if done >= log_frames {
                    // Every frame is in the database: the next commit restarts the log.
                    self.wal_frames.store(0, Ordering::Relaxed);
                }
                log::trace!(
                    "checkpoint: {done}/{log_frames} frames in {:?}",
                    started.elapsed()
                );
                true
            }
            Err(e) => {
                log::warn!("checkpoint failed (will retry): {e}");
                false
            }
        }
    }

    /// Runs `f` as part of the tick's transaction (opening it if needed). A
    /// failure loses the whole tick.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> std::result::Result<T, StorageError> {
        self.begin()?;
        self.flush()?;
        let res = f(&self.conn);
        self.guard(res)
    }

    /// Runs the read-only `f`, inside the tick's transaction when one is open.
    pub fn read<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> std::result::Result<T, StorageError> {
        self.settle()?;
        let res = f(&self.conn).map_err(StorageError::from);
        self.guard_read(res)
    }

    fn begin(&mut self) -> std::result::Result<(), StorageError> {
        match &self.txn {
            Txn::Open => Ok(()),
            Txn::Failed(e) => Err(e.clone()),
            Txn::Idle => match self.conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => {
                    self.txn = Txn::Open;
                    Ok(())
                }
                Err(e) => {
                    let err = StorageError::from(e);
                    self.txn = Txn::Failed(err.clone());
                    self.healthy = false;
                    Err(err)
                }
            },
        }
    }

    /// The tick's changes are gone from the database: forget them in memory too.
    fn forget_tick(&mut self) {
        self.tick = self.committed;
        self.pending.clear();
        self.users.rollback();
    }

    fn readable(&self) -> std::result::Result<(), StorageError> {
        match &self.txn {
            Txn::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// A failed write loses the whole tick: roll back now, remember why.
    fn guard<T>(
        &mut self,
        res: std::result::Result<T, rusqlite::Error>,
    ) -> std::result::Result<T, StorageError> {
        res.map_err(|e| {
            let err = StorageError::from(e);
            log::error!("write failed, the tick is rolled back: {err}");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.txn = Txn::Failed(err.clone());
            self.forget_tick();
            self.healthy = false;
            err
        })
    }

    /// A failed read inside the tick's transaction loses the tick too (the
    /// transaction's state is unknown); outside one it fails only its request.
    fn guard_read<T>(
        &mut self,
        res: std::result::Result<T, StorageError>,
    ) -> std::result::Result<T, StorageError> {
        match res {
            Err(e) if self.txn == Txn::Open => {
                let _ = self.conn.execute_batch("ROLLBACK");
                self.txn = Txn::Failed(e.clone());
                self.forget_tick();
                Err(e)
            }
            other => other,
        }
    }
}

/// Builds the in-memory index from the users table; a name found twice (the table
/// was written by something else) is refused.
fn load_users(conn: &Connection, path: &Path) -> Result<Users> {
    let mut users = Users::new(highest_user_id(conn)?.unwrap_or(0) + 1);
    let mut stmt = conn.prepare("SELECT id, name, fields, created_at FROM users")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let name: String = row.get(1)?;
        let fields: String = row.get(2)?;
        let fields: BTreeMap<String, String> = serde_json::from_str(&fields).map_err(|e| {
            Error::Config(format!(
                "{}: user {id} ('{name}') has unreadable fields: {e}",
                path.display()
            ))
        })?;
        if !users.load(id, &name, &fields, row.get(3)?) {
            return Err(Error::Config(format!(
                "{}: the users table holds the name '{name}' twice (id {id}); \
                 names must be unique",
                path.display()
            )));
        }
    }
    Ok(users)
}

/// The highest user id ever assigned, as AUTOINCREMENT remembers it (`None` before
/// the first user).
fn highest_user_id(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = 'users'",
        [],
        |r| r.get(0),
    )
    .optional()
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        // A fresh database gets the current schema in one step.
        conn.execute_batch(&format!(
            "BEGIN; {USERS_V3} {EVENTS_V1} {SCHEMA_V2} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
        log::info!("created schema version {SCHEMA_VERSION}");
        return Ok(());
    }
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V2} PRAGMA user_version = 2; COMMIT;"
        ))?;
        log::info!("migrated schema to version 2");
    }
    if version < 3 {
        // AUTOINCREMENT's counter goes with the old table: carry it over so ids
        // of removed users are never handed out again.
        let keep = highest_user_id(conn)?.map_or(String::new(), |h| {
            format!(
                "DELETE FROM sqlite_sequence WHERE name = 'users'; \
                 INSERT INTO sqlite_sequence (name, seq) VALUES ('users', {h});"
            )
        });
        let rebuild = MIGRATE_V3.replace("{USERS_V3}", USERS_V3);
        conn.execute_batch(&format!(
            "BEGIN; {rebuild} {keep} PRAGMA user_version = 3; COMMIT;"
        ))?;
        log::info!("migrated schema to version 3 (users without a name index)");
    }
    Ok(())
}
