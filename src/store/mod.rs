//! Storage: one SQLite connection and the tick's transaction over it.
//!
//! The first write of a tick opens a transaction; the reactor commits it once, after
//! every request of the tick ran (group commit). A failed write rolls the whole tick
//! back at once and the store remembers why, so every later storage request of the
//! same tick fails the same way and the reactor can replace the tick's replies.
//!
//! [`Store`] is the one type; its methods are spread by subject:
//! - [`error`]: [`StorageError`] and the kinds of failure;
//! - `schema`: the tables, [`SCHEMA_VERSION`], migrations;
//! - `batch`: the tick's user writes (registrations batched, unregistrations);
//! - [`users`]: the in-memory index of users (unique names, LOOKUP's read path),
//!   built at open from its image or the users table (after a crash, the table
//!   loads in slices while the server serves: `users::load`);
//! - [`unique`]: the in-memory indexes of unique fields (`--unique-field`);
//! - `updates`: fields set and removed (UPDATE, DELFIELDS), LOOKUPBY's read;
//! - [`event_log`]: the event log: append, read between seqs, trim, handler offsets;
//! - [`meta`]: the database's writer id and the JetStream relay's confirmed
//!   positions;
//! - [`backup`]: consistent snapshots through SQLite's online backup API, and
//!   the origin a database restored from one records;
//! - [`groups`]: consumer groups, their consumers, `>` reads and XACK;
//! - [`pending`]: pending entries, claims and dead letters;
//! - [`replica`]: a follower applying the stream's events, a fenced primary
//!   discarding its tail;
//! - [`checkpointer`]: the WAL checkpointer thread and its own connection;
//! - [`imager`]: the thread that writes the user index's base image, which a
//!   start after a crash loads instead of scanning the users table;
//! - [`webhooks`]: webhook endpoints, their delivery state and dead letters.

use rusqlite::{Connection, params};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{
    CHECKPOINT_WAL_FRAMES, CHECKPOINT_WAL_LIMIT_FRAMES, Durability, SQLITE_BUSY_TIMEOUT,
    SQLITE_CACHE_KIB,
};
use crate::error::{Error, Result};

mod background;
pub mod backup;
mod batch;
pub mod checkpointer;
pub mod error;
pub mod event_log;
pub mod groups;
mod growing;
pub mod imager;
pub mod meta;
pub mod pending;
pub mod replica;
mod schema;
pub mod unique;
mod updates;
pub mod users;
pub mod webhooks;

use batch::{BatchSql, Queued};
pub use checkpointer::{CheckpointStats, Checkpointer};
pub use error::{StorageError, StorageErrorKind};
pub use event_log::{EventRef, EventRow};
pub use groups::{ConsumerFull, ConsumerInfo, Delivery, GroupFull, GroupInfo};
pub use imager::{ImageStats, Imager};
pub use pending::{ClaimOptions, DeadLetter, Delivered, Pending};
pub use schema::SCHEMA_VERSION;
use users::{UserRef, Users};
pub use webhooks::{
    Adopted, CarriedWebhook, WebhookAdoption, WebhookDeadLetter, WebhookRow, WebhookState,
};

/// A user's fields by name.
pub type FieldMap = BTreeMap<String, String>;

const SCAN_USERS: &str = "SELECT id, name FROM users WHERE id > ?1 ORDER BY id LIMIT ?2";

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
    /// Why the last commit (or a write of the tick) failed; `None` after one
    /// succeeded.
    last_error: Option<StorageErrorKind>,
    /// The database size cap in pages (0 = none).
    max_pages: u64,
    /// Every user, by name, as the tick sees them (while `warming`, those loaded
    /// so far and those written since start).
    users: Users,
    /// Loading the users table after a start without a usable image; `None`
    /// once the index holds every user (`users::load`).
    warming: Option<users::load::Warming>,
    /// Users the open tick added less those it removed: the tick's count while
    /// warming, when the index's size is not the count.
    tick_user_delta: i64,
    /// The unique fields' values, as the tick sees them.
    unique: unique::Unique,
    /// The tick's registrations not yet written (see `flush`).
    queued: Vec<Queued>,
    batch_sql: BatchSql,
    /// The database's writer id (`meta`), read once at open.
    writer: String,
    /// The database's file, beside which the user index's image goes.
    path: PathBuf,
    /// The checkpointer thread, once started; without it the store checkpoints
    /// on its own connection (`checkpoint_due`).
    checkpointer: Option<Checkpointer>,
    /// The imager thread (base images of the user index), once started.
    imager: Option<Imager>,
    /// Webhook endpoints the tick's administrative writes changed (`webhooks`).
    webhook_changes: Vec<i64>,
    /// Webhook endpoints committed changes changed, until the reactor takes them.
    webhook_committed: Vec<i64>,
}

/// The events table's row count, on a read-only connection of its own (see
/// `open_cold`).
fn count_events(path: &Path) -> rusqlite::Result<i64> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))
}

/// Gives a connection to the database the settings the loop's connection and the
/// checkpointer's share: the busy timeout, `synchronous` as `durability` asks,
/// and no automatic checkpoint: checkpoints run between ticks (see
/// `Store::checkpoint`) or on the checkpointer thread, never inside a commit.
fn configure(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(SQLITE_BUSY_TIMEOUT)?;
    let sync = match durability {
        Durability::Strict | Durability::Replicated => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA wal_autocheckpoint = 0;"
    ))
}

impl Store {
    /// Opens (creating or migrating) the database at `path`, with its whole user
    /// index: without a usable image, the users table is read before this returns.
    pub fn open(path: &Path, durability: Durability, max_pages: u64) -> Result<Store> {
        let mut store = Store::open_cold(path, durability, max_pages)?;
        store.finish_warming()?;
        Ok(store)
    }

    /// Opens the database at `path` as [`Store::open`] does, but without a usable
    /// image the users table is read for at most `users::load`'s start budget
    /// (half a second, all of a table of a few hundred thousand users); the rest
    /// loads a slice at a time while the server serves ([`Store::warm_step`];
    /// `users::load` says what is answered meanwhile).
    pub fn open_warming(path: &Path, durability: Durability, max_pages: u64) -> Result<Store> {
        let mut store = Store::open_cold(path, durability, max_pages)?;
        let started = std::time::Instant::now();
        let budget = users::load::start_budget();
        while store.warming.is_some() {
            let left = budget.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            store.warm(Some(left))?;
        }
        if let Some(w) = store.warming.as_mut() {
            w.refuse_twice = false;
        }
        if let Some(p) = store.loading() {
            log::info!(
                "user index: {:.1}% of the users table loaded in {:?}; \
                 serving while the rest loads",
                p.percent,
                p.elapsed
            );
        }
        Ok(store)
    }

    fn open_cold(path: &Path, durability: Durability, max_pages: u64) -> Result<Store> {
        let conn = Connection::open(path).map_err(|e| {
            Error::Config(format!(
                "cannot open the database {}: {e} (does the directory exist and is it writable?)",
                path.display()
            ))
        })?;
        configure(&conn, durability)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Config(format!(
                "{} cannot use WAL journal mode (got {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA foreign_keys = OFF")?;
        // Set after `wal_autocheckpoint`, which would replace it.
        let wal_frames = Arc::new(AtomicU64::new(0));
        let frames = Arc::clone(&wal_frames);
        let mut conn = conn;
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            frames.store(u64::try_from(pages).unwrap_or(0), Ordering::Relaxed);
            Ok(())
        }))?;
        conn.execute_batch(&format!("PRAGMA cache_size = -{SQLITE_CACHE_KIB}"))?;
        conn.set_prepared_statement_cache_capacity(64);
        schema::migrate(&conn)?;
        // The cap limits data, not the schema: it applies once migrations ran.
        if max_pages > 0 {
            let _: i64 =
                conn.query_row(&format!("PRAGMA max_page_count = {max_pages}"), [], |r| {
                    r.get(0)
                })?;
        }
        let writer = meta::load_writer_id(&conn, path)?;
        let last_seq = schema::last_event_seq(&conn)?;
        let stamp = users::image::Stamp {
            writer: writer.clone(),
            last_seq,
            next_id: schema::highest_user_id(&conn)?.unwrap_or(0) + 1,
        };
        // Counting the events reads the whole table (over a second at 20M): it
        // runs on a connection of its own while this one loads the user index.
        // Nothing writes before the store is open, so both see the same state.
        let (loaded, events) = std::thread::scope(|s| {
            let counter = std::thread::Builder::new()
                .name("count-events".into())
                .spawn_scoped(s, || count_events(path));
            let loaded = users::load::open_index(&conn, path, &stamp);
            let events = counter.ok().and_then(|t| t.join().ok());
            (loaded, events)
        });
        let (users, warming) = loaded?;
        let user_rows = if warming.is_some() {
            conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?
        } else {
            users.len() as i64
        };
        let events = match events {
            Some(Ok(n)) => n,
            other => {
                if let Some(Err(e)) = other {
                    log::debug!("counting the events on a second connection failed: {e}");
                }
                conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?
            }
        };
        let counts = Counts {
            users: user_rows,
            events,
            last_seq,
        };
        if let Some(o) = backup::origin(&conn)? {
            log::info!(
                "{} was restored from a snapshot of writer {} at event seq {}, taken {}; \
                 this database is writer {writer} and its last event seq is {}",
                path.display(),
                o.source_writer,
                o.seq,
                crate::clock::rfc3339(o.taken_at_ms),
                counts.last_seq
            );
        }
        Ok(Store {
            conn,
            txn: Txn::Idle,
            committed: counts,
            tick: counts,
            commits_since_checkpoint: 0,
            wal_frames,
            last_error: None,
            max_pages,
            users,
            warming,
            tick_user_delta: 0,
            unique: unique::Unique::default(),
            queued: Vec::new(),
            batch_sql: BatchSql::new(),
            writer,
            path: path.to_path_buf(),
            checkpointer: None,
            imager: None,
            webhook_changes: Vec::new(),
            webhook_committed: Vec::new(),
        })
    }

    /// Writes the user index's image beside the database (`users::image`), so that
    /// the next start reads it instead of scanning the users table. For a clean
    /// stop, after the last tick; does nothing while a tick is open.
    pub fn save_index(&self) {
        if self.txn != Txn::Idle {
            return;
        }
        if self.warming.is_some() {
            // An image of part of the users would serve the next start wrongly.
            log::info!("user index: still loading at stop, no image written");
            return;
        }
        let started = std::time::Instant::now();
        let stamp = users::image::Stamp {
            writer: self.writer.clone(),
            last_seq: self.committed.last_seq,
            next_id: self.users.next_id(),
        };
        let path = users::image::path_for(&self.path);
        match users::image::write(&self.users, &stamp, &path) {
            Ok(()) => log::info!(
                "user index: {} users written to {} in {:?}",
                self.users.len(),
                path.display(),
                started.elapsed()
            ),
            Err(e) => log::warn!(
                "user index: cannot write {} ({e}); the next start scans the users table",
                path.display()
            ),
        }
    }

    /// Starts the checkpointer thread on its own connection to the file this
    /// store opened. From then on the store checkpoints only when the
    /// thread asks it to (the WAL past its bound), and the WAL file is truncated
    /// to that bound when the log starts over.
    pub fn start_checkpointer(
        &mut self,
        durability: Durability,
    ) -> std::result::Result<(), StorageError> {
        if self.checkpointer.is_none() {
            let limit = CHECKPOINT_WAL_LIMIT_FRAMES * 4096;
            let _: i64 =
                self.conn
                    .query_row(&format!("PRAGMA journal_size_limit = {limit}"), [], |r| {
                        r.get(0)
                    })?;
            self.checkpointer = Some(Checkpointer::start(
                &self.path,
                durability,
                Arc::clone(&self.wal_frames),
            )?);
        }
        Ok(())
    }

    /// Stops the checkpointer thread and waits for it; the store checkpoints on
    /// its own connection again.
    pub fn stop_checkpointer(&mut self) {
        if let Some(mut c) = self.checkpointer.take() {
            c.stop();
        }
    }

    /// Starts the imager thread on its own read-only connection to the file this
    /// store opened (`imager`).
    pub fn start_imager(&mut self) -> std::result::Result<(), StorageError> {
        if self.imager.is_none() {
            self.imager = Some(Imager::start(&self.path)?);
        }
        Ok(())
    }

    /// Stops the imager thread and waits for it; an image it was writing is
    /// abandoned (the last one written stays).
    pub fn stop_imager(&mut self) {
        if let Some(mut i) = self.imager.take() {
            i.stop();
        }
    }

    /// The imager thread's counters; `None` when it was never started.
    pub fn image_stats(&self) -> Option<ImageStats> {
        self.imager.as_ref().map(Imager::stats)
    }

    /// The checkpointer thread's counters; `None` when it was never started.
    pub fn checkpoint_stats(&self) -> Option<CheckpointStats> {
        self.checkpointer.as_ref().map(Checkpointer::stats)
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
        if self.warming.is_some() {
            self.committed.users + self.tick_user_delta
        } else {
            self.users.len() as i64
        }
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
        self.last_error.is_none()
    }

    /// The kind of the failure that made the store unhealthy; `None` while healthy.
    pub fn last_error(&self) -> Option<StorageErrorKind> {
        self.last_error
    }

    /// The user named `name`, as the tick sees it; no query (the in-memory index).
    /// While the index loads, a name it does not hold yet is a
    /// [`StorageError::loading`].
    pub fn lookup(&self, name: &str) -> std::result::Result<Option<UserRef<'_>>, StorageError> {
        self.readable()?;
        self.indexed(name)
    }

    /// The user named `name` in the index, or `None` when the index answers that
    /// there is none; while it loads, a name it does not hold yet is a
    /// [`StorageError::loading`] (`users::load`).
    fn indexed(&self, name: &str) -> std::result::Result<Option<UserRef<'_>>, StorageError> {
        match self.users.get(name) {
            None if self.warming.is_some() => Err(StorageError::loading()),
            found => Ok(found),
        }
    }

    /// While the index loads, a name it does not hold yet may be in the table: a
    /// [`StorageError::loading`]. Once loaded it costs no lookup, since the write
    /// that follows looks the name up itself.
    fn check_loaded(&self, name: &str) -> std::result::Result<(), StorageError> {
        if self.warming.is_some() && self.users.get(name).is_none() {
            return Err(StorageError::loading());
        }
        Ok(())
    }

    /// How far the user index has loaded; `None` once it holds every user.
    pub fn loading(&self) -> Option<users::load::Progress> {
        self.warming.as_ref().map(users::load::Warming::progress)
    }

    /// How long until the next slice of loading is due; `None` once loaded.
    pub fn warm_due_in(&self, now: std::time::Instant) -> Option<std::time::Duration> {
        self.warming.as_ref().map(|w| w.due_in(now))
    }

    /// Loads the next slice of the users table into the index (about a
    /// millisecond), between ticks only: it does nothing while a tick is open.
    /// True when this slice finished loading. An unreadable row is an error (the
    /// server stops, as a blocking load stops the start); a failed read is
    /// logged and retried by a slice a moment later.
    pub fn warm_step(&mut self) -> Result<bool> {
        match self.warm(Some(users::load::slice_budget())) {
            Err(Error::Storage(e)) => {
                log::warn!("user index: loading failed, retrying: {e}");
                if let Some(w) = self.warming.as_mut() {
                    w.read_failed();
                }
                Ok(false)
            }
            other => other,
        }
    }

    /// Loads the rest of the users table at once (a follower, which applies
    /// events by name from its first tick).
    pub fn finish_warming(&mut self) -> Result<()> {
        if let Some(w) = self.warming.as_mut() {
            w.refuse_twice = true;
        }
        while self.warming.is_some() {
            self.warm(None)?;
        }
        Ok(())
    }

    fn warm(&mut self, budget: Option<std::time::Duration>) -> Result<bool> {
        if self.txn != Txn::Idle {
            return Ok(false);
        }
        let Some(warming) = self.warming.as_mut() else {
            return Ok(false);
        };
        match users::load::warm_slice(&self.conn, &self.path, &mut self.users, warming, budget) {
            Ok(false) => Ok(false),
            Ok(true) => {
                log::info!(
                    "user index: {} users from the users table in {:?}",
                    self.users.len(),
                    warming.elapsed()
                );
                self.warming = None;
                Ok(true)
            }
            Err(e) => Err(e),
        }
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
                    self.tick_user_delta = 0;
                    self.users.commit();
                    self.unique.commit();
                    self.webhook_committed.append(&mut self.webhook_changes);
                    self.commits_since_checkpoint += 1;
                    self.last_error = None;
                    Ok(())
                }
                Err(e) => {
                    let err = StorageError::from(e);
                    log::error!(
                        "commit failed ({}), the tick is rolled back: {err}",
                        err.kind()
                    );
                    // SQLite may already have rolled back; a second rollback is harmless.
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.forget_tick();
                    self.last_error = Some(err.kind());
                    Err(err)
                }
            },
        }
    }

    /// True when the log has grown enough that a checkpoint should run now, busy
    /// or not (`CHECKPOINT_WAL_FRAMES`); with the checkpointer thread, only when it
    /// asks for the WAL's last frames (see `checkpointer`).
    pub fn checkpoint_due(&self) -> bool {
        if let Some(c) = &self.checkpointer {
            return c.finish_wanted();
        }
        self.commits_since_checkpoint > 0
            && self.wal_frames.load(Ordering::Relaxed) >= CHECKPOINT_WAL_FRAMES
    }

    /// Copies committed WAL frames into the database without waiting for anyone
    /// (a PASSIVE checkpoint). Runs between ticks, never inside a commit; with the
    /// checkpointer thread, only the short one it asks for at the WAL's bound
    /// (otherwise nothing). Returns false when it failed (it is retried later).
    pub fn checkpoint(&mut self) -> bool {
        if self.txn != Txn::Idle {
            return true;
        }
        if let Some(c) = &self.checkpointer {
            if !c.finish_wanted() {
                return true;
            }
        } else if self.commits_since_checkpoint == 0 {
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
                if let Some(c) = &self.checkpointer {
                    c.finished(started.elapsed());
                }
                true
            }
            Err(e) => {
                log::warn!("checkpoint failed (will retry): {e}");
                if let Some(c) = &self.checkpointer {
                    c.resume();
                }
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
                    self.last_error = Some(err.kind());
                    Err(err)
                }
            },
        }
    }

    /// The tick's changes are gone from the database: forget them in memory too.
    fn forget_tick(&mut self) {
        self.tick = self.committed;
        self.tick_user_delta = 0;
        self.queued.clear();
        self.users.rollback();
        self.unique.rollback();
        self.webhook_changes.clear();
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
            log::error!(
                "write failed ({}), the tick is rolled back: {err}",
                err.kind()
            );
            let _ = self.conn.execute_batch("ROLLBACK");
            self.txn = Txn::Failed(err.clone());
            self.forget_tick();
            self.last_error = Some(err.kind());
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
