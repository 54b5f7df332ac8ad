//! The tick's user writes. Registrations are queued and written together, in
//! multi-row statements, before the tick's next other statement or its commit;
//! an unregistration writes the queue first, then its own two rows.

use rusqlite::params;
use std::collections::BTreeMap;

use super::{Change, FieldMap, StorageError, Store, event_log};

// Ids come from the in-memory index (the next after the highest ever used, which
// AUTOINCREMENT's counter remembers), so a taken name never uses one up. Event
// sequence numbers likewise come from the counts. A tick's registrations are
// written together: users in statements of up to `BATCH_SIZES[0]` rows, then
// their events in one statement that copies the user rows.
/// Rows per multi-row INSERT: a batch is cut into the largest sizes that fit.
const BATCH_SIZES: [usize; 4] = [64, 16, 4, 1];
/// Registrations held before they are written even though the tick goes on.
const MAX_QUEUED: usize = 1024;

// UNREGISTER's user row; its event row is appended by `event_log::append`.
const DELETE_USER: &str = "DELETE FROM users WHERE id = ?1";

/// A registration written to SQLite at the tick's next statement or commit.
#[derive(Debug)]
pub(super) struct Queued {
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
pub(super) struct BatchSql {
    users: [String; BATCH_SIZES.len()],
    /// The events of users just written, copied from their rows: `?1` is the
    /// first event's seq minus the first user's id, `?2..=?3` the users' ids.
    copy_events: String,
}

impl BatchSql {
    pub(super) fn new() -> BatchSql {
        BatchSql {
            users: BATCH_SIZES
                .map(|n| multi_insert("INSERT INTO users (id, name, fields, created_at)", 4, n)),
            copy_events: format!(
                "INSERT INTO events (kind, seq, user_id, name, fields, at) \
                 SELECT '{}', id + ?1, id, name, fields, created_at FROM users \
                 WHERE id BETWEEN ?2 AND ?3 ORDER BY id",
                event_log::REGISTERED
            ),
        }
    }
}

impl Store {
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
        self.check_loaded(name)?;
        self.begin()?;
        let Some(user_id) = self.users.add(name, fields, now_ms) else {
            return Ok(None);
        };
        self.tick_user_delta += 1;
        if !self.unique.is_empty() {
            self.unique.change(name, None, Some(fields));
        }
        // Sorted keys make the stored JSON canonical; a string map always serializes.
        let json = serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_string());
        let seq = self.tick.last_seq + 1;
        self.queue_registration(user_id, seq, name, json, now_ms)?;
        Ok(Some(Change { user_id, seq }))
    }

    /// Queues the rows of registration `seq` of user `id`, already in the index,
    /// for the tick's next statement or its commit (a follower queues the
    /// stream's registrations with their own ids and seqs).
    pub(super) fn queue_registration(
        &mut self,
        id: i64,
        seq: i64,
        name: &str,
        json: String,
        at: i64,
    ) -> std::result::Result<(), StorageError> {
        self.queued.push(Queued {
            id,
            seq,
            name: name.to_string(),
            json,
            at,
        });
        self.note_event(seq);
        if self.queued.len() >= MAX_QUEUED {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the queued registrations: users in statements of `BATCH_SIZES`
    /// rows, then their events, copied from the user rows just written (no text
    /// is bound twice) by one statement per run of consecutive ids and seqs; a
    /// tick's registrations form one run, since every other event flushes them
    /// first.
    pub(super) fn flush(&mut self) -> std::result::Result<(), StorageError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let queued = std::mem::take(&mut self.queued);
        let res = (|| {
            let mut rest = &queued[..];
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
            for run in queued.chunk_by(|a, b| b.id == a.id + 1 && b.seq == a.seq + 1) {
                let (first, last) = (&run[0], &run[run.len() - 1]);
                let copied = copy.execute(params![first.seq - first.id, first.id, last.id])?;
                if copied != run.len() {
                    return Err(rusqlite::Error::StatementChangedRows(copied));
                }
            }
            Ok(())
        })();
        // Keep the allocation for the next tick.
        self.queued = queued;
        self.queued.clear();
        self.guard(res)
    }

    /// Before any other statement of the tick: the queued rows go first, so every
    /// statement sees the tick's registrations.
    pub(super) fn settle(&mut self) -> std::result::Result<(), StorageError> {
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
        self.check_loaded(name)?;
        self.begin()?;
        self.flush()?;
        // Out of the index first: a failed write below rolls the index back too.
        let Some((user_id, fields)) = self.users.remove(name) else {
            return Ok(None);
        };
        self.tick_user_delta -= 1;
        self.unique.change(name, Some(&fields), None);
        let json = serde_json::to_string(&fields).unwrap_or_else(|_| "{}".to_string());
        let res = (|| {
            self.conn
                .prepare_cached(DELETE_USER)?
                .execute(params![user_id])?;
            event_log::append(
                &self.conn,
                event_log::UNREGISTERED,
                user_id,
                name,
                &json,
                now_ms,
                None,
            )
        })();
        let seq = self.guard(res)?;
        self.note_event(seq);
        Ok(Some((Change { user_id, seq }, fields)))
    }
}
