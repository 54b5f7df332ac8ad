//! The reactor's side of BACKUP: the copy the command started runs a few pages at
//! a time, with a whole turn of the loop (poll, tick, timers) between two steps,
//! until it is written or the server stops.
//!
//! rusqlite's `Backup` borrows the copy's two connections, so it cannot be kept in
//! the reactor from one turn to the next; instead the turns run inside the copy's
//! loop (`Copy::run`), for as long as the copy takes.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use mio::Events;

use super::Reactor;
use crate::cmd::BackupJob;
use crate::error::Result;
use crate::store::backup::BackupError;

/// Pages a step copies: 1 MiB at SQLite's 4 KiB pages (docs/OPERATIONS.md,
/// "Backups and restore", has the stalls measured).
const BACKUP_STEP_PAGES: i32 = 256;
/// Pages copied between two syncs of the snapshot file: 8 MiB, so that no sync,
/// the final one included, has more than that to write.
const BACKUP_SYNC_PAGES: u64 = 2048;

impl Reactor {
    /// Copies the snapshot `job` began, serving clients between its steps, then
    /// renames it into place; the outcome goes to INFO and the log. An error of the
    /// loop itself (the poll) ends the copy and is returned.
    pub(super) fn run_backup(&mut self, job: BackupJob, events: &mut Events) -> Result<()> {
        let BackupJob {
            id,
            mut copy,
            committed,
        } = job;
        let started = Instant::now();
        let mut failed = None;
        // The loop's stalls: each step (its sync apart), the syncs, and the end
        // (the last step, the final sync and the rename).
        let (mut steps, mut longest, mut step_began) = (0u64, Duration::ZERO, started);
        let mut longest_sync = Duration::ZERO;
        let copied = if self.stopping {
            Err(BackupError::Abandoned)
        } else {
            copy.run(BACKUP_STEP_PAGES, BACKUP_SYNC_PAGES, |progress| {
                steps += 1;
                let sync = progress.synced_in.unwrap_or_default();
                longest_sync = longest_sync.max(sync);
                longest = longest.max(step_began.elapsed().saturating_sub(sync));
                self.shared.backups.note_progress(progress);
                if let Err(e) = self.turn(events) {
                    failed = Some(e);
                    return ControlFlow::Break(());
                }
                step_began = Instant::now();
                if self.stopping {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        };
        let result = copied.and_then(|p| copy.finish(p.total, Some(committed)));
        let last_step = step_began.elapsed();
        match &result {
            Ok(s) => log::info!(
                "backup {id}: {} written: event seq {}, {} users, {} pages, writer {}, in {:.3} s; \
                 {} steps, the longest {:.1} ms, the longest sync {:.1} ms, the last step with \
                 the final sync and the rename {:.1} ms",
                s.path.display(),
                s.seq,
                s.users,
                s.pages,
                s.writer,
                started.elapsed().as_secs_f64(),
                steps + 1,
                longest.as_secs_f64() * 1e3,
                longest_sync.as_secs_f64() * 1e3,
                last_step.as_secs_f64() * 1e3,
            ),
            Err(e) => log::warn!("backup {id} failed: {e}"),
        }
        self.shared.backups.finish(id, result);
        failed.map_or(Ok(()), Err)
    }
}
