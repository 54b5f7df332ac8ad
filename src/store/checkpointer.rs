//! The WAL checkpointer: a thread with its own SQLite connection to the database
//! file that copies committed WAL frames into the database (PASSIVE checkpoints),
//! so the reactor's commits never wait for that copy or its syncs.
//!
//! It shares nothing with the reactor but a few atomics (this module's `State`):
//! the WAL's size after the loop's last commit (from the WAL hook), and what it
//! reports back (counters, the last duration, the last error, the WAL file's size).
//! It never touches the reactor's state, and the request path stays on the loop.
//!
//! **Bounding the WAL.** A PASSIVE checkpoint copies the frames committed before it
//! began; SQLite starts the log over only when a write transaction begins after a
//! checkpoint copied every frame. Under sustained load the loop commits while each
//! checkpoint runs, so that moment never comes by itself and the file would grow
//! without end. A RESTART checkpoint here would hold the writer lock through its
//! copy and syncs, and the loop's writes would wait on it (and fail after the
//! 5 ms busy timeout). Instead, once the WAL is past `CHECKPOINT_WAL_LIMIT_FRAMES`,
//! the thread checkpoints without pause until one leaves at most
//! `CHECKPOINT_FINISH_FRAMES` behind (or stops leaving less each time), then
//! pauses and asks the loop to *finish*: a PASSIVE checkpoint of that remainder on
//! the loop's own connection between two ticks, after which the loop's next write
//! restarts the log (and `journal_size_limit` truncates the file). That costs the
//! loop one short checkpoint per `CHECKPOINT_WAL_LIMIT_FRAMES` of log, takes no
//! lock another connection holds, and never waits for a reader.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::error::StorageErrorKind;
use crate::config::{
    CHECKPOINT_BATCH_FRAMES, CHECKPOINT_FINISH_FRAMES, CHECKPOINT_POLL, CHECKPOINT_RETRY,
    CHECKPOINT_WAL_LIMIT_FRAMES, Durability,
};

/// How many times a checkpoint that found the checkpoint lock taken (another
/// process checkpointing) is retried at once before it counts as failed.
const BUSY_RETRIES: u32 = 3;
/// The pause between those retries.
const BUSY_PAUSE: Duration = Duration::from_millis(10);

/// What the thread and the loop share: atomics only, except the stop flag.
#[derive(Debug, Default)]
struct State {
    /// Set by `stop`; the thread waits on `wake` for it between checkpoints.
    stop: Mutex<bool>,
    wake: Condvar,
    /// Frames in the WAL after the loop's last commit (the loop's WAL hook).
    wal_frames: Arc<AtomicU64>,
    /// The thread asks the loop to checkpoint the last few frames itself.
    finish_wanted: AtomicBool,
    running: AtomicBool,
    checkpoints: AtomicU64,
    pages: AtomicU64,
    last_micros: AtomicU64,
    max_micros: AtomicU64,
    failures: AtomicU64,
    /// 0 after a checkpoint succeeded, else 1 + the kind's index in
    /// `StorageErrorKind::ALL`.
    last_error: AtomicU8,
    wal_bytes: AtomicU64,
    wal_bytes_max: AtomicU64,
    finishes: AtomicU64,
    finish_last_micros: AtomicU64,
    finish_max_micros: AtomicU64,
}

/// A snapshot of the checkpointer's counters, for INFO, `/metrics` and `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckpointStats {
    /// The thread is running.
    pub running: bool,
    /// Checkpoints the thread completed.
    pub checkpoints: u64,
    /// WAL frames (pages) they copied into the database.
    pub pages: u64,
    /// How long the last one took, in microseconds.
    pub last_micros: u64,
    /// The longest one, in microseconds.
    pub max_micros: u64,
    /// Checkpoints that failed.
    pub failures: u64,
    /// Why the last attempt failed; `None` when it succeeded.
    pub last_error: Option<StorageErrorKind>,
    /// The WAL file's size at the last look, in bytes.
    pub wal_bytes: u64,
    /// The largest size seen, in bytes.
    pub wal_bytes_max: u64,
    /// Short checkpoints the loop ran to let the WAL start over (see the module).
    pub finishes: u64,
    /// How long the last of those stalled the loop, in microseconds.
    pub finish_last_micros: u64,
    /// The longest of those, in microseconds.
    pub finish_max_micros: u64,
}

/// The running checkpointer thread; stopping it (or dropping it) joins it.
#[derive(Debug)]
pub struct Checkpointer {
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `path` and starts the thread, which reads
    /// the WAL's size from `wal_frames` (kept by the loop's WAL hook).
    pub fn start(
        path: &Path,
        durability: Durability,
        wal_frames: Arc<AtomicU64>,
    ) -> rusqlite::Result<Checkpointer> {
        let conn = Connection::open(path)?;
        // A checkpoint syncs the WAL before copying and the database after, in
        // either mode; `synchronous` only has to match the loop's for its name.
        super::configure(&conn, durability)?;
        let state = Arc::new(State {
            wal_frames,
            running: AtomicBool::new(true),
            ..State::default()
        });
        let wal_path = wal_path(path);
        let shared = Arc::clone(&state);
        let thread =
            super::background::spawn("checkpointer", move || run(conn, &shared, &wal_path))?;
        Ok(Checkpointer {
            state,
            thread: Some(thread),
        })
    }

    /// Stops the thread after its current checkpoint and waits for it.
    pub fn stop(&mut self) {
        let s = &*self.state;
        super::background::stop(&s.stop, &s.wake, &mut self.thread, "checkpointer");
        self.state.running.store(false, Ordering::Relaxed);
    }

    /// True when the thread asks the loop to checkpoint the WAL's last frames.
    pub fn finish_wanted(&self) -> bool {
        self.state.finish_wanted.load(Ordering::Relaxed)
    }

    /// Records the loop's checkpoint of the last frames (it took `took`); the
    /// thread resumes.
    pub fn finished(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.state.finishes.fetch_add(1, Ordering::Relaxed);
        self.state
            .finish_last_micros
            .store(micros, Ordering::Relaxed);
        self.state
            .finish_max_micros
            .fetch_max(micros, Ordering::Relaxed);
        self.state.finish_wanted.store(false, Ordering::Relaxed);
    }

    /// The loop's checkpoint of the last frames failed: the thread resumes and
    /// asks again later.
    pub fn resume(&self) {
        self.state.finish_wanted.store(false, Ordering::Relaxed);
    }

    /// The counters as they are now.
    pub fn stats(&self) -> CheckpointStats {
        let s = &*self.state;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CheckpointStats {
            running: s.running.load(Ordering::Relaxed),
            checkpoints: load(&s.checkpoints),
            pages: load(&s.pages),
            last_micros: load(&s.last_micros),
            max_micros: load(&s.max_micros),
            failures: load(&s.failures),
            last_error: decode_kind(s.last_error.load(Ordering::Relaxed)),
            wal_bytes: load(&s.wal_bytes),
            wal_bytes_max: load(&s.wal_bytes_max),
            finishes: load(&s.finishes),
            finish_last_micros: load(&s.finish_last_micros),
            finish_max_micros: load(&s.finish_max_micros),
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The WAL file beside the database at `db`.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn encode_kind(kind: Option<StorageErrorKind>) -> u8 {
    kind.and_then(|k| StorageErrorKind::ALL.iter().position(|&a| a == k))
        .map_or(0, |i| i as u8 + 1)
}

fn decode_kind(code: u8) -> Option<StorageErrorKind> {
    StorageErrorKind::ALL
        .get(usize::from(code).checked_sub(1)?)
        .copied()
}

/// One PASSIVE checkpoint: (frames in the log, frames now in the database).
fn checkpoint(conn: &Connection) -> rusqlite::Result<(u64, u64)> {
    let mut attempt = 0;
    loop {
        let res = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match res {
            // busy = 1: another connection held the checkpoint lock.
            Ok((busy, _, _)) if busy != 0 && attempt < BUSY_RETRIES => {}
            Ok((0, log, done)) => {
                return Ok((
                    u64::try_from(log).unwrap_or(0),
                    u64::try_from(done).unwrap_or(0),
                ));
            }
            Ok(_) => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some("another connection holds the checkpoint lock".into()),
                ));
            }
            Err(e)
                if StorageErrorKind::of(&e) == StorageErrorKind::Locked
                    && attempt < BUSY_RETRIES => {}
            Err(e) => return Err(e),
        }
        attempt += 1;
        std::thread::sleep(BUSY_PAUSE);
    }
}

/// The thread: wait, checkpoint when the WAL grew by a batch or the loop went
/// quiet, report, until stopped.
fn run(conn: Connection, state: &State, wal_path: &Path) {
    super::background::step_aside("checkpointer");
    // Frames known to be in the database (the last checkpoint's count).
    let mut done = 0u64;
    let mut seen = 0u64;
    // Past the WAL's bound and still far from the end: no pause, no batch.
    let mut hurry = false;
    // What the last checkpoint past the bound left to copy.
    let mut last_rest = u64::MAX;
    let mut pause = CHECKPOINT_POLL;
    loop {
        {
            let Ok(stop) = state.stop.lock() else { break };
            let Ok((stop, _)) = state.wake.wait_timeout_while(stop, pause, |s| !*s) else {
                break;
            };
            if *stop {
                break;
            }
        }
        pause = CHECKPOINT_POLL;
        if state.finish_wanted.load(Ordering::Relaxed) {
            continue;
        }
        let frames = state.wal_frames.load(Ordering::Relaxed);
        let quiet = frames == seen;
        seen = frames;
        if frames < done {
            // The log started over.
            done = 0;
        }
        let behind = frames - done;
        // After a failure the thread tries again whatever the counts say: the log
        // may have started over to the very size it had.
        let failing = state.last_error.load(Ordering::Relaxed) != 0;
        if !failing && (behind == 0 || (behind < CHECKPOINT_BATCH_FRAMES && !quiet && !hurry)) {
            continue;
        }
        hurry = false;
        let started = Instant::now();
        match checkpoint(&conn) {
            Ok((log, copied)) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let before = if copied < done { 0 } else { done };
                state.checkpoints.fetch_add(1, Ordering::Relaxed);
                state
                    .pages
                    .fetch_add(copied.saturating_sub(before), Ordering::Relaxed);
                state.last_micros.store(micros, Ordering::Relaxed);
                state.max_micros.fetch_max(micros, Ordering::Relaxed);
                state.last_error.store(0, Ordering::Relaxed);
                if copied <= before && copied < log {
                    // A reader's snapshot holds the rest back: copying again at
                    // once would only find the same.
                    pause = CHECKPOINT_RETRY;
                }
                done = copied;
                log::trace!("checkpoint: {copied}/{log} frames in {micros} us");
                if log >= CHECKPOINT_WAL_LIMIT_FRAMES {
                    let rest = log.saturating_sub(copied);
                    // Past the bound: catch up at once, so that the loop's share
                    // stays small; hand over once it is small, or once catching
                    // up stopped shrinking it (the loop writes as fast as a
                    // checkpoint copies), so that the bound holds either way.
                    if rest <= CHECKPOINT_FINISH_FRAMES || rest >= last_rest {
                        state.finish_wanted.store(true, Ordering::Relaxed);
                        last_rest = u64::MAX;
                    } else if copied > before {
                        pause = Duration::ZERO;
                        hurry = true;
                        last_rest = rest;
                    }
                } else {
                    last_rest = u64::MAX;
                }
            }
            Err(e) => {
                let kind = StorageErrorKind::of(&e);
                log::warn!("checkpoint failed ({kind}), will retry: {e}");
                state.failures.fetch_add(1, Ordering::Relaxed);
                state
                    .last_error
                    .store(encode_kind(Some(kind)), Ordering::Relaxed);
                pause = CHECKPOINT_RETRY;
            }
        }
        if let Ok(meta) = std::fs::metadata(wal_path) {
            state.wal_bytes.store(meta.len(), Ordering::Relaxed);
            state.wal_bytes_max.fetch_max(meta.len(), Ordering::Relaxed);
        }
    }
    state.running.store(false, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_survive_the_atomic() {
        assert_eq!(decode_kind(encode_kind(None)), None);
        for kind in StorageErrorKind::ALL {
            assert_eq!(decode_kind(encode_kind(Some(kind))), Some(kind));
        }
    }

    #[test]
    fn the_wal_sits_beside_the_database() {
        assert_eq!(
            wal_path(Path::new("/var/lib/userbus/userbus.db")),
            Path::new("/var/lib/userbus/userbus.db-wal")
        );
    }
}
