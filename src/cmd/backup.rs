//! BACKUP: an online, consistent snapshot of the database into the backup
//! directory, and the server's record of its backups (INFO backup).
//!
//! # Format
//! `BACKUP name` → `:id`, the job's number, once the snapshot has started; the
//! copy then runs between ticks and `INFO backup` shows its progress and outcome
//! (`backup_in_progress`, `last_backup_id`, `last_backup_status`, ...).
//!
//! The snapshot is the state of the last commit before BACKUP ran. Clients write to
//! one place only: `--backup-dir DIR` (without it BACKUP is refused), and `name` is
//! a plain file name there that does not exist yet. One backup runs at a time.

use std::path::Path;
use std::time::Instant;

use super::{Ctx, Outcome, Spec};
use crate::config::SQLITE_BUSY_TIMEOUT;
use crate::protocol::Args;
use crate::store::Counts;
use crate::store::backup::{BackupError, Copy, Progress, Snapshot};

pub const SPEC: Spec = Spec {
    name: "backup",
    arity: 2,
    flags: &["admin", "noscript"],
    summary: "Writes a consistent snapshot of the database into the backup directory.",
    run,
};

/// Longest backup file name, in bytes (a file name's limit on common file systems).
pub const MAX_BACKUP_NAME_BYTES: usize = 255;

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Some(dir) = ctx.config.backup_dir.as_deref() else {
        ctx.out.error(
            "ERR BACKUP is off: start the server with --backup-dir DIR to take snapshots \
             into DIR (or run `userbus backup PATH` on the server's machine)",
        );
        return Outcome::Continue;
    };
    let name = match check_name(args.get(1).unwrap_or_default()) {
        Ok(name) => name,
        Err(why) => {
            ctx.out.error(&format!("ERR BACKUP file name {why}"));
            return Outcome::Continue;
        }
    };
    if let Some((id, running)) = ctx.backups.current() {
        ctx.out.error(&format!(
            "ERR a backup is already in progress (backup {id}, '{running}')"
        ));
        return Outcome::Continue;
    }
    if !dir.is_dir() {
        ctx.out.error(&format!(
            "ERR the backup directory {} is not a directory",
            dir.display()
        ));
        return Outcome::Continue;
    }
    let target = dir.join(name);
    let committed = ctx.store_view().committed_counts();
    match Copy::start(&ctx.config.db, &target, false, SQLITE_BUSY_TIMEOUT) {
        Ok(copy) => {
            let id = ctx.backups.start(name, copy, committed);
            log::info!(
                "backup {id}: copying the database into {} (event seq {}, {} users)",
                target.display(),
                committed.last_seq,
                committed.users
            );
            ctx.out.int(id as i64);
        }
        Err(BackupError::Exists(_)) => ctx.out.error(&format!(
            "ERR backup file '{name}' exists in the backup directory; BACKUP never replaces a file"
        )),
        Err(e) => ctx.out.error(&format!("ERR backup: {e}")),
    }
    Outcome::Continue
}

/// The name as a plain file name: 1 to `MAX_BACKUP_NAME_BYTES` bytes of ASCII
/// letters, digits, `.`, `_` and `-`, not starting with `.` (no path, no hidden
/// file, never `.` or `..`); the reason otherwise.
fn check_name(name: &[u8]) -> Result<&str, &'static str> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if name.is_empty() || name.len() > MAX_BACKUP_NAME_BYTES {
        return Err("must be 1 to 255 bytes");
    }
    if name.first() == Some(&b'.') || !name.iter().all(plain) {
        return Err(
            "must be a plain file name: letters, digits, '.', '_' or '-', not starting with '.'",
        );
    }
    std::str::from_utf8(name).map_err(|_| "must be ASCII")
}

/// A snapshot BACKUP started: the copy, fixed at the last commit before it.
#[derive(Debug)]
pub struct Job {
    /// Its number.
    pub id: u64,
    /// The copy under way.
    pub copy: Copy,
    /// The counts of the commit it copies.
    pub committed: Counts,
}

/// The one backup under way.
#[derive(Debug)]
struct Running {
    id: u64,
    name: String,
    progress: Progress,
    started: Instant,
    /// Waiting for the reactor to take it.
    job: Option<Job>,
}

/// How the last backup ended.
#[derive(Debug)]
struct Finished {
    id: u64,
    name: String,
    result: Result<Snapshot, String>,
    seconds: f64,
}

/// The server's backups: the one under way, how the last one ended, and totals.
#[derive(Debug, Default)]
pub struct Backups {
    next_id: u64,
    running: Option<Running>,
    last: Option<Finished>,
    completed: u64,
    failed: u64,
}

impl Backups {
    /// The backup under way, as (id, file name).
    pub fn current(&self) -> Option<(u64, &str)> {
        self.running.as_ref().map(|r| (r.id, r.name.as_str()))
    }

    /// True while a backup is under way: the loop must not wait in its poll.
    pub fn in_progress(&self) -> bool {
        self.running.is_some()
    }

    /// Records a started copy for the reactor to take; its number.
    fn start(&mut self, name: &str, copy: Copy, committed: Counts) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.running = Some(Running {
            id,
            name: name.to_string(),
            progress: Progress::default(),
            started: Instant::now(),
            job: Some(Job {
                id,
                copy,
                committed,
            }),
        });
        id
    }

    /// The copy BACKUP started, for the reactor to run.
    pub fn take_started(&mut self) -> Option<Job> {
        self.running.as_mut().and_then(|r| r.job.take())
    }

    /// Notes how far the copy is.
    pub fn note_progress(&mut self, progress: Progress) {
        if let Some(r) = &mut self.running {
            r.progress = progress;
        }
    }

    /// Records how backup `id` ended.
    pub fn finish(&mut self, id: u64, result: Result<Snapshot, BackupError>) {
        let Some(r) = self.running.take_if(|r| r.id == id) else {
            return;
        };
        match result {
            Ok(_) => self.completed += 1,
            Err(_) => self.failed += 1,
        }
        self.last = Some(Finished {
            id,
            name: r.name,
            result: result.map_err(|e| e.to_string()),
            seconds: r.started.elapsed().as_secs_f64(),
        });
    }

    /// The `# Backup` section of INFO.
    pub fn render(&self, dir: Option<&Path>, t: &mut String) {
        use std::fmt::Write;
        let _ = write!(
            t,
            "# Backup\r\nbackup_dir:{}\r\nbackup_in_progress:{}\r\nbackups_completed:{}\r\n\
             backups_failed:{}\r\n",
            dir.map(|d| d.display().to_string()).unwrap_or_default(),
            u8::from(self.running.is_some()),
            self.completed,
            self.failed,
        );
        if let Some(r) = &self.running {
            let _ = write!(
                t,
                "backup_id:{}\r\nbackup_file:{}\r\nbackup_pages_done:{}\r\n\
                 backup_pages_total:{}\r\nbackup_seconds:{:.3}\r\n",
                r.id,
                r.name,
                r.progress.done,
                r.progress.total,
                r.started.elapsed().as_secs_f64(),
            );
        }
        let Some(last) = &self.last else {
            return;
        };
        let _ = write!(
            t,
            "last_backup_id:{}\r\nlast_backup_file:{}\r\nlast_backup_seconds:{:.3}\r\n",
            last.id, last.name, last.seconds
        );
        let _ = match &last.result {
            Ok(s) => write!(
                t,
                "last_backup_status:ok\r\nlast_backup_seq:{}\r\nlast_backup_users:{}\r\n\
                 last_backup_pages:{}\r\nlast_backup_writer:{}\r\n",
                s.seq, s.users, s.pages, s.writer
            ),
            Err(e) => write!(
                t,
                "last_backup_status:err\r\nlast_backup_error:{}\r\n",
                e.replace(['\r', '\n'], " ")
            ),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_accepted() {
        for good in ["snap.db", "nightly-2026-12-06.db", "a", "A_1.sqlite3"] {
            assert_eq!(check_name(good.as_bytes()), Ok(good));
        }
        let long = "a".repeat(MAX_BACKUP_NAME_BYTES + 1);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../etc/passwd",
            "/tmp/x.db",
            "dir/x.db",
            "x\\y",
            "a b",
            "caf\u{e9}.db",
            "x\0y",
            long.as_str(),
        ] {
            assert!(check_name(bad.as_bytes()).is_err(), "{bad:?} accepted");
        }
    }
}
