//! Consistent snapshots of a live database through SQLite's online backup API:
//! `userbus backup PATH` (a process of its own) and the BACKUP command (inside
//! the server, a few pages between ticks).
//!
//! A [`Copy`] opens the database read-only on a connection of its own and starts a
//! read transaction at once. In WAL mode that transaction is one snapshot: every
//! page the backup copies, in one step or in many, comes from the same committed
//! state, while the server goes on committing (SQLite restarts a backup whose
//! source changed between steps only when the source connection sees the change,
//! and a connection inside a read transaction does not).
//!
//! The pages go to a temporary file beside the target (`.<name>.<pid>-<nanos>.partial`),
//! which is then given its own identity (a fresh writer id and the snapshot's
//! origin in `meta`), turned into a single self-contained file (rollback journal,
//! no `-wal`), synced, and only then renamed to the target. A crash at any point
//! leaves the target absent (or, with overwrite, the old one) and at most a
//! `.partial` file.
//!
//! The snapshot's event seq is the events table's AUTOINCREMENT high-water mark
//! (`sqlite_sequence`), the same number `Store::open` takes as its last seq: it
//! stays when retention trimmed the events, or all of them, so a node started on
//! the snapshot writes its next event at that seq + 1. It is also kept in `meta`
//! (`snapshot_seq`), beside when it was taken (`snapshot_at`, Unix ms) and the
//! writer id of the database it came from (`snapshot_source`: the first part of the
//! `Nats-Msg-Id` of the events it holds).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags, params};

use super::{Counts, SCHEMA_VERSION, meta, schema};

/// The `meta` row with the snapshot's event seq.
pub const SNAPSHOT_SEQ_KEY: &str = "snapshot_seq";
/// The `meta` row with when the snapshot was taken, Unix milliseconds.
pub const SNAPSHOT_AT_KEY: &str = "snapshot_at";
/// The `meta` row with the writer id of the database the snapshot was taken of.
pub const SNAPSHOT_SOURCE_KEY: &str = "snapshot_source";

/// Pages of the copy's destination SQLite keeps in memory: small, so that copied
/// pages reach the file (and a periodic sync) soon instead of piling up.
const DEST_CACHE_PAGES: i64 = 256;

/// Why a snapshot was not made.
#[derive(Debug)]
#[non_exhaustive]
pub enum BackupError {
    /// The target exists and overwriting it was not asked for.
    Exists(PathBuf),
    /// There is no database at the source path.
    NoDatabase(PathBuf),
    /// The target path names no file.
    BadTarget(PathBuf),
    /// The source database is not at this build's schema version.
    Schema {
        /// The version found in the source.
        found: i64,
    },
    /// A file operation on the target's directory failed.
    Io {
        /// What was being done.
        action: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// SQLite failed reading the source or writing the copy.
    Sqlite(rusqlite::Error),
    /// The copy does not hold what the server had committed when it started.
    Inconsistent(String),
    /// The server stopped before the copy ended.
    Abandoned,
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Exists(p) => write!(
                f,
                "{} exists; a backup never replaces a file unless told to (--force)",
                p.display()
            ),
            BackupError::NoDatabase(p) => write!(f, "no database at {}", p.display()),
            BackupError::BadTarget(p) => write!(f, "{} does not name a file", p.display()),
            BackupError::Schema { found } if *found > SCHEMA_VERSION => write!(
                f,
                "the database is at schema version {found}, newer than this userbus \
                 ({SCHEMA_VERSION}); back it up with the userbus that serves it"
            ),
            BackupError::Schema { found } => write!(
                f,
                "the database is at schema version {found}, this userbus writes \
                 {SCHEMA_VERSION}: start `userbus serve` on it once (it migrates at start), \
                 then back it up"
            ),
            BackupError::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            BackupError::Sqlite(e) => write!(f, "sqlite: {e}"),
            BackupError::Inconsistent(msg) => write!(f, "inconsistent snapshot: {msg}"),
            BackupError::Abandoned => write!(f, "abandoned: the server stopped"),
        }
    }
}

impl std::error::Error for BackupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackupError::Io { source, .. } => Some(source),
            BackupError::Sqlite(e) => Some(e),
            _ => None,
        }
    }
}

/// Makes a file operation's error a [`BackupError::Io`] saying what was being
/// done (`action`) to which file.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

impl From<rusqlite::Error> for BackupError {
    fn from(e: rusqlite::Error) -> Self {
        BackupError::Sqlite(e)
    }
}

/// A finished snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Where it is.
    pub path: PathBuf,
    /// The last event seq it holds (0 when no event was ever written).
    pub seq: i64,
    /// The users it holds.
    pub users: i64,
    /// Its own writer id, new.
    pub writer: String,
    /// The writer id of the database it was taken of.
    pub source_writer: String,
    /// When its read snapshot was taken, Unix milliseconds.
    pub taken_at_ms: i64,
    /// Its size in SQLite pages.
    pub pages: u64,
}

/// How far a copy is, after its last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Pages copied.
    pub done: u64,
    /// Pages the source holds.
    pub total: u64,
    /// How long the sync after this step took, when there was one.
    pub synced_in: Option<Duration>,
    /// The step copied nothing: a lock was taken (it is retried).
    pub busy: bool,
}

/// A snapshot being written: the source held at one read snapshot, the
/// destination a temporary file beside the target. Dropped unfinished, it removes
/// the temporary file.
pub struct Copy {
    source: Connection,
    dest: Connection,
    /// The temporary file, open to sync what SQLite wrote to it.
    file: File,
    temp: PathBuf,
    target: PathBuf,
    overwrite: bool,
    source_writer: String,
    taken_at_ms: i64,
    /// The temporary file was renamed to the target (or is gone).
    published: bool,
}

impl fmt::Debug for Copy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Copy")
            .field("temp", &self.temp)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Copy {
    /// Starts a snapshot of the database at `db` into `target`: opens it read-only,
    /// fixes the read snapshot, creates the temporary file. A `target` that exists
    /// is refused unless `overwrite`. `busy` is how long opening may wait for a
    /// lock another connection holds.
    pub fn start(
        db: &Path,
        target: &Path,
        overwrite: bool,
        busy: Duration,
    ) -> Result<Copy, BackupError> {
        let Some(name) = target.file_name() else {
            return Err(BackupError::BadTarget(target.to_path_buf()));
        };
        if !overwrite && fs::symlink_metadata(target).is_ok() {
            return Err(BackupError::Exists(target.to_path_buf()));
        }
        if !db.is_file() {
            return Err(BackupError::NoDatabase(db.to_path_buf()));
        }
        let source = Connection::open_with_flags(
            db,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        source.busy_timeout(busy)?;
        // The first read fixes the snapshot every step copies from.
        source.execute_batch("BEGIN")?;
        let found: i64 = source.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found != SCHEMA_VERSION {
            return Err(BackupError::Schema { found });
        }
        let source_writer = writer(&source)?;
        let taken_at_ms = crate::clock::now_ms();
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let temp = dir.join(format!(
            ".{}.{}-{nanos}.partial",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io_error("create", &temp))?;
        // A crash leaves a temporary file nobody reads: no journal and no sync
        // while copying; the finished file is synced before it is renamed.
        let dest = Connection::open(&temp).and_then(|c| {
            c.execute_batch(&format!(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; \
                 PRAGMA cache_size = {DEST_CACHE_PAGES};"
            ))?;
            Ok(c)
        });
        let dest = match dest {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_file(&temp);
                return Err(e.into());
            }
        };
        let copy = Copy {
            source,
            dest,
            file,
            temp,
            target: target.to_path_buf(),
            overwrite,
            source_writer,
            taken_at_ms,
            published: false,
        };
        Ok(copy)
    }

    /// The temporary file being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Copies every page: `pages_per_step` a step (negative: all in one step),
    /// syncing the temporary file after every `sync_pages` pages copied (0: only
    /// at the end). `between` runs after each step that did not finish, with the
    /// progress; it breaks to abandon the copy.
    pub fn run(
        &mut self,
        pages_per_step: i32,
        sync_pages: u64,
        mut between: impl FnMut(Progress) -> ControlFlow<()>,
    ) -> Result<Progress, BackupError> {
        let backup = Backup::new(&self.source, &mut self.dest)?;
        let mut synced = 0;
        loop {
            let step = backup.step(pages_per_step)?;
            let p = backup.progress();
            let total = u64::try_from(p.pagecount).unwrap_or(0);
            let mut progress = Progress {
                done: total.saturating_sub(u64::try_from(p.remaining).unwrap_or(0)),
                total,
                synced_in: None,
                busy: matches!(step, StepResult::Busy | StepResult::Locked),
            };
            if step == StepResult::Done {
                return Ok(progress);
            }
            if sync_pages > 0 && progress.done >= synced + sync_pages {
                // Bounds the dirty data the final sync waits for.
                let began = std::time::Instant::now();
                self.file
                    .sync_data()
                    .map_err(io_error("sync", &self.temp))?;
                progress.synced_in = Some(began.elapsed());
                synced = progress.done;
            }
            // More, or Busy/Locked (retried at the next step).
            if between(progress).is_break() {
                return Err(BackupError::Abandoned);
            }
        }
    }

    /// Makes the copied pages a snapshot and puts it at the target: ends the read
    /// snapshot, gives the copy a fresh writer id and its origin in `meta`, makes it
    /// one file, syncs it and renames it. `committed`, when known (the server's
    /// committed counts when the copy started), is checked against the copy and
    /// spares counting its users.
    pub fn finish(
        mut self,
        pages: u64,
        committed: Option<Counts>,
    ) -> Result<Snapshot, BackupError> {
        // The server's checkpoints may now move past the snapshot.
        self.source.execute_batch("COMMIT")?;
        let seq = schema::last_event_seq(&self.dest)?;
        let users = match committed {
            Some(c) if c.last_seq != seq => {
                return Err(BackupError::Inconsistent(format!(
                    "the copy's last event seq is {seq}, the server had committed {}",
                    c.last_seq
                )));
            }
            Some(c) => c.users,
            None => self
                .dest
                .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?,
        };
        self.dest.execute_batch("BEGIN")?;
        self.dest.execute(
            "UPDATE meta SET value = lower(hex(randomblob(8))) WHERE key = ?1",
            params![meta::WRITER_KEY],
        )?;
        meta::put(&self.dest, SNAPSHOT_SEQ_KEY, &seq.to_string())?;
        meta::put(&self.dest, SNAPSHOT_AT_KEY, &self.taken_at_ms.to_string())?;
        meta::put(&self.dest, SNAPSHOT_SOURCE_KEY, &self.source_writer)?;
        self.dest.execute_batch("COMMIT")?;
        let writer = writer(&self.dest)?;
        // The copied header says WAL: back to a rollback journal, so the snapshot
        // is one file with nothing beside it (`Store::open` turns WAL on again).
        let mode: String = self
            .dest
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(BackupError::Inconsistent(format!(
                "the copy stayed in journal mode {mode}"
            )));
        }
        let dest = std::mem::replace(&mut self.dest, Connection::open_in_memory()?);
        dest.close().map_err(|(_, e)| e)?;
        self.file.sync_all().map_err(io_error("sync", &self.temp))?;
        self.publish()?;
        let dir = self
            .target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("sync the directory", dir))?;
        Ok(Snapshot {
            path: self.target.clone(),
            seq,
            users,
            writer,
            source_writer: self.source_writer.clone(),
            taken_at_ms: self.taken_at_ms,
            pages,
        })
    }

    /// Renames the temporary file to the target; without overwrite, through a hard
    /// link, which fails rather than replace a file that appeared meanwhile.
    fn publish(&mut self) -> Result<(), BackupError> {
        if self.overwrite {
            fs::rename(&self.temp, &self.target).map_err(io_error("rename to", &self.target))?;
        } else {
            match fs::hard_link(&self.temp, &self.target) {
                Ok(()) => {
                    fs::remove_file(&self.temp).map_err(io_error("remove", &self.temp))?;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(BackupError::Exists(self.target.clone()));
                }
                // A file system without hard links: check, then rename.
                Err(_) if fs::symlink_metadata(&self.target).is_ok() => {
                    return Err(BackupError::Exists(self.target.clone()));
                }
                Err(_) => {
                    fs::rename(&self.temp, &self.target)
                        .map_err(io_error("rename to", &self.target))?;
                }
            }
        }
        self.published = true;
        Ok(())
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes a snapshot of the database at `db` to `target`, for a process of its
/// own (`userbus backup`), which stalls no loop while it copies. It syncs every
/// `CLI_SYNC_PAGES` rather than once at the end: one sync of the whole file keeps
/// the disk busy long enough that a server's checkpoint waits behind it.
pub fn snapshot(db: &Path, target: &Path, overwrite: bool) -> Result<Snapshot, BackupError> {
    let mut copy = Copy::start(db, target, overwrite, CLI_BUSY_TIMEOUT)?;
    let progress = copy.run(CLI_STEP_PAGES, CLI_SYNC_PAGES, |p| {
        if p.busy {
            std::thread::sleep(Duration::from_millis(10));
        }
        ControlFlow::Continue(())
    })?;
    copy.finish(progress.total, None)
}

/// How long `userbus backup` waits for a lock the server holds (a WAL restart).
const CLI_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pages `userbus backup` copies a step, and between two syncs: 8 MiB.
const CLI_STEP_PAGES: i32 = 2048;
/// See `CLI_STEP_PAGES`.
const CLI_SYNC_PAGES: u64 = 2048;

/// The writer id in the `meta` table of `conn`'s database (a row the schema
/// makes: its absence fails as a query that found no row).
fn writer(conn: &Connection) -> rusqlite::Result<String> {
    meta::value(conn, meta::WRITER_KEY)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// Where a database that is a snapshot came from (its `meta` rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The last event seq the snapshot held.
    pub seq: i64,
    /// When it was taken, Unix milliseconds.
    pub taken_at_ms: i64,
    /// The writer id of the database it was taken of.
    pub source_writer: String,
}

impl crate::store::Store {
    /// The snapshot this database was restored from, if it was.
    pub fn snapshot_origin(&self) -> Result<Option<Origin>, crate::store::StorageError> {
        Ok(origin(&self.conn)?)
    }
}

/// The snapshot origin recorded in the database; `None` for a database that was
/// never restored from a snapshot (or whose rows do not read as one).
pub(super) fn origin(conn: &Connection) -> rusqlite::Result<Option<Origin>> {
    let (Some(seq), Some(at), Some(source)) = (
        meta::value(conn, SNAPSHOT_SEQ_KEY)?,
        meta::value(conn, SNAPSHOT_AT_KEY)?,
        meta::value(conn, SNAPSHOT_SOURCE_KEY)?,
    ) else {
        return Ok(None);
    };
    Ok(match (seq.parse(), at.parse()) {
        (Ok(seq), Ok(taken_at_ms)) => Some(Origin {
            seq,
            taken_at_ms,
            source_writer: source,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Durability;
    use crate::store::Store;

    fn open(path: &Path) -> Store {
        Store::open(path, Durability::Normal, 0).expect("open")
    }

    fn register(store: &mut Store, names: std::ops::Range<usize>) {
        for i in names {
            store
                .register(&format!("u{i}"), &BTreeMap::new(), 1000)
                .expect("register")
                .expect("new name");
        }
        store.finish_tick().expect("commit");
    }

    #[test]
    fn a_snapshot_of_a_trimmed_log_resumes_after_its_seq_with_a_new_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, snap) = (dir.path().join("live.db"), dir.path().join("snap.db"));
        let mut store = open(&db);
        register(&mut store, 0..10);
        // Every event trimmed: only the high-water mark remembers seq 10.
        assert_eq!(store.trim(Some(0), None, i64::MAX, 1000).expect("trim"), 10);
        store.finish_tick().expect("commit");
        let source_writer = store.writer_id().to_string();
        let taken = snapshot(&db, &snap, false).expect("snapshot");
        assert_eq!((taken.seq, taken.users), (10, 10));
        assert_eq!(taken.source_writer, source_writer);
        assert_ne!(taken.writer, source_writer);
        assert!(taken.pages > 0);
        // One file: no journal or WAL beside it, no temporary file left.
        let names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap") || n.ends_with(".partial"))
            .collect();
        assert_eq!(names, ["snap.db"]);

        let mut copy = open(&snap);
        assert_eq!(copy.writer_id(), taken.writer);
        assert_eq!(copy.committed_counts().last_seq, 10);
        assert_eq!(copy.committed_counts().events, 0);
        assert_eq!(copy.user_count(), 10);
        let change = copy
            .register("next", &BTreeMap::new(), 2000)
            .expect("register")
            .expect("new name");
        assert_eq!(change.seq, 11);
        copy.finish_tick().expect("commit");
        let origin = copy.read(origin).expect("read").expect("an origin");
        assert_eq!(origin.seq, 10);
        assert_eq!(origin.source_writer, source_writer);
        assert_eq!(origin.taken_at_ms, taken.taken_at_ms);
        // The source is untouched.
        drop(store);
        assert_eq!(open(&db).writer_id(), source_writer);
    }

    #[test]
    fn an_empty_database_snapshots_at_seq_zero() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, snap) = (dir.path().join("empty.db"), dir.path().join("snap.db"));
        drop(open(&db));
        let taken = snapshot(&db, &snap, false).expect("snapshot");
        assert_eq!((taken.seq, taken.users), (0, 0));
        let mut copy = open(&snap);
        let change = copy
            .register("first", &BTreeMap::new(), 1)
            .expect("register")
            .expect("new name");
        assert_eq!((change.seq, change.user_id), (1, 1));
    }

    #[test]
    fn an_existing_target_is_kept_unless_overwrite_is_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, snap) = (dir.path().join("live.db"), dir.path().join("snap.db"));
        let mut store = open(&db);
        register(&mut store, 0..3);
        fs::write(&snap, b"precious").expect("write");
        match snapshot(&db, &snap, false) {
            Err(BackupError::Exists(p)) => assert_eq!(p, snap),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(fs::read(&snap).expect("read"), b"precious");
        let taken = snapshot(&db, &snap, true).expect("overwrite");
        assert_eq!(taken.users, 3);
        assert_eq!(open(&snap).user_count(), 3);
    }

    #[test]
    fn steps_between_commits_copy_the_snapshot_of_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, snap) = (dir.path().join("live.db"), dir.path().join("snap.db"));
        let mut store = open(&db);
        for batch in 0..20 {
            register(&mut store, batch * 100..(batch + 1) * 100);
        }
        let at_start = store.committed_counts();
        let mut copy = Copy::start(&db, &snap, false, Duration::ZERO).expect("start");
        let mut next = 2000;
        let progress = copy
            .run(2, 0, |_| {
                // The server commits between the steps.
                register(&mut store, next..next + 5);
                next += 5;
                ControlFlow::Continue(())
            })
            .expect("run");
        assert!(next > 2010, "the copy took one step");
        let taken = copy.finish(progress.total, Some(at_start)).expect("finish");
        assert_eq!((taken.seq, taken.users), (2000, 2000));
        let copy = open(&snap);
        assert_eq!(copy.user_count(), 2000);
        assert!(copy.lookup("u1999").expect("lookup").is_some());
        assert!(copy.lookup("u2000").expect("lookup").is_none());
    }

    #[test]
    fn an_abandoned_copy_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, snap) = (dir.path().join("live.db"), dir.path().join("snap.db"));
        let mut store = open(&db);
        register(&mut store, 0..500);
        let mut copy = Copy::start(&db, &snap, false, Duration::ZERO).expect("start");
        let temp = copy.temp_path().to_path_buf();
        assert!(temp.exists());
        let res = copy.run(1, 0, |_| ControlFlow::Break(()));
        assert!(matches!(res, Err(BackupError::Abandoned)), "{res:?}");
        drop(copy);
        assert!(!temp.exists() && !snap.exists());
    }

    #[test]
    fn missing_database_and_old_schema_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snap = dir.path().join("snap.db");
        let err = snapshot(&dir.path().join("none.db"), &snap, false).expect_err("no db");
        assert!(err.to_string().contains("no database at"), "{err}");
        let old = dir.path().join("old.db");
        Connection::open(&old)
            .and_then(|c| c.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 3;"))
            .expect("old schema");
        let err = snapshot(&old, &snap, false).expect_err("old schema");
        assert!(err.to_string().contains("schema version 3"), "{err}");
        assert!(!snap.exists());
    }
}
