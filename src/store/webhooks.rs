//! Webhook endpoints (schema version 6): each endpoint's url, secret and filter,
//! its delivery state (position, the attempts at the event being retried, when
//! the next attempt is due, why it is disabled, its counters), and its dead
//! letters. Every write goes into the tick's transaction, so a delivery's outcome
//! is stored with the tick that saw it, and a restart resumes at the stored
//! position.
//!
//! The administrative writes (add, delete, rewind, requeue, enable) also note the
//! endpoint's id; once the tick commits, the reactor takes those ids
//! ([`Store::take_webhook_changes`]) and reloads the endpoints from here, so a
//! change reaches the deliveries only once it is durable.
//!
//! At a promotion, [`Store::webhooks_adopt`] takes in the endpoints the old
//! primary kept in JetStream (`nats::webhook_kv`): same ids, its configuration,
//! the furthest position.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use super::{StorageError, Store};

/// An endpoint's delivery state: what changes as its deliveries go on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookState {
    /// Why the endpoint is disabled (`410 Gone`, `failing since ...`, `private
    /// address`); `None` while it is enabled.
    pub disabled: Option<String>,
    /// The last seq done: delivered, dead-lettered, or skipped by the filter.
    pub position: i64,
    /// The seq the attempts below were made at (0: none).
    pub attempt_seq: i64,
    /// Failed attempts at `attempt_seq`.
    pub attempts: i64,
    /// When the next attempt at `attempt_seq` is due, Unix ms.
    pub next_attempt_at: i64,
    /// The first failure since the last success, Unix ms.
    pub failing_since: Option<i64>,
    /// Events delivered (a 2xx answer).
    pub delivered: i64,
    /// Attempts that failed.
    pub failed: i64,
    /// The last answer's HTTP status (0: none yet, or a transport failure).
    pub last_status: i64,
    /// The last failure's text (empty after a success).
    pub last_error: String,
}

/// One endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    /// Its id.
    pub id: i64,
    /// Where events are posted.
    pub url: String,
    /// The secret as written (`whsec_...`).
    pub secret: String,
    /// The event kinds it receives: `*`, or kinds separated by commas.
    pub events: String,
    /// When it was added, Unix ms.
    pub created_at: i64,
    /// Its delivery state.
    pub state: WebhookState,
    /// Dead letters not requeued.
    pub dead_letters: i64,
    /// Seqs of dead letters requeued by `WEBHOOK REPLAY id`, ascending.
    pub requeued: Vec<i64>,
}

/// One dead letter: an event whose last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDeadLetter {
    /// The event.
    pub seq: i64,
    /// Attempts made.
    pub attempts: i64,
    /// The last answer's HTTP status (0: a transport failure).
    pub last_status: i64,
    /// The last failure's text.
    pub last_error: String,
    /// When it was dead-lettered, Unix ms.
    pub at: i64,
}

/// An endpoint as the primary carries it to the other nodes (the value of its
/// key in the `<stream>_webhooks` bucket): its configuration and how far it
/// delivered. Its counters, retry state and dead letters stay on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedWebhook {
    /// Its id, the same on every node.
    pub id: i64,
    /// Where events are posted.
    pub url: String,
    /// The secret as written (`whsec_...`).
    pub secret: String,
    /// The event kinds it receives: `*`, or kinds separated by commas.
    pub events: String,
    /// Why it is disabled; `None` while it is enabled.
    #[serde(default)]
    pub disabled: Option<String>,
    /// The last seq done (delivered, dead-lettered, or skipped by the filter).
    pub position: i64,
    /// Dead letters requeued by `WEBHOOK REPLAY id` and not delivered yet.
    #[serde(default)]
    pub requeued: Vec<i64>,
}

/// What a promotion takes in from the bucket ([`Store::webhooks_adopt`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookAdoption {
    /// The endpoints the bucket holds.
    pub endpoints: Vec<CarriedWebhook>,
    /// Local endpoints to keep as they are (their key could not be read).
    pub keep: Vec<i64>,
    /// The highest id the bucket names, deleted keys included: no later
    /// `WEBHOOK ADD` here takes an id the old primary gave out.
    pub max_id: i64,
}

/// What [`Store::webhooks_adopt`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Endpoints added or updated from the bucket.
    pub taken: usize,
    /// Local endpoints deleted (not in the bucket).
    pub deleted: usize,
}

/// Schema version 6: the endpoints and their dead letters.
pub(super) const SCHEMA_V6: &str = "
CREATE TABLE webhooks (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    url             TEXT    NOT NULL,
    secret          TEXT    NOT NULL,   -- whsec_ + base64
    events          TEXT    NOT NULL,   -- '*' or kinds separated by commas
    created_at      INTEGER NOT NULL,   -- Unix ms
    disabled        TEXT,               -- why; NULL while enabled
    position        INTEGER NOT NULL,   -- last seq done
    attempt_seq     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    failing_since   INTEGER,
    delivered       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE webhook_dead_letters (
    webhook     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,
    last_status INTEGER NOT NULL,
    last_error  TEXT    NOT NULL,
    at          INTEGER NOT NULL,       -- Unix ms
    requeued    INTEGER NOT NULL DEFAULT 0,  -- 1: WEBHOOK REPLAY asked for it again
    PRIMARY KEY (webhook, seq)
) WITHOUT ROWID;
";

const COLUMNS: &str = "id, url, secret, events, created_at, disabled, position, attempt_seq, \
                       attempts, next_attempt_at, failing_since, delivered, failed, \
                       last_status, last_error";
const INSERT: &str = "INSERT INTO webhooks (url, secret, events, created_at, position) \
                      VALUES (?1, ?2, ?3, ?4, ?5)";
const SAVE: &str = "UPDATE webhooks SET disabled = ?2, position = ?3, attempt_seq = ?4, \
                    attempts = ?5, next_attempt_at = ?6, failing_since = ?7, delivered = ?8, \
                    failed = ?9, last_status = ?10, last_error = ?11 WHERE id = ?1";
const COUNT_DEAD: &str =
    "SELECT count(*) FROM webhook_dead_letters WHERE webhook = ?1 AND requeued = 0";
const REQUEUED: &str =
    "SELECT seq FROM webhook_dead_letters WHERE webhook = ?1 AND requeued = 1 ORDER BY seq";
const UPSERT_DEAD: &str = "INSERT INTO webhook_dead_letters \
                           (webhook, seq, attempts, last_status, last_error, at, requeued) \
                           VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0) \
                           ON CONFLICT (webhook, seq) DO UPDATE SET \
                           attempts = excluded.attempts, last_status = excluded.last_status, \
                           last_error = excluded.last_error, at = excluded.at, requeued = 0";

fn row(r: &Row<'_>) -> rusqlite::Result<WebhookRow> {
    Ok(WebhookRow {
        id: r.get(0)?,
        url: r.get(1)?,
        secret: r.get(2)?,
        events: r.get(3)?,
        created_at: r.get(4)?,
        state: WebhookState {
            disabled: r.get(5)?,
            position: r.get(6)?,
            attempt_seq: r.get(7)?,
            attempts: r.get(8)?,
            next_attempt_at: r.get(9)?,
            failing_since: r.get(10)?,
            delivered: r.get(11)?,
            failed: r.get(12)?,
            last_status: r.get(13)?,
            last_error: r.get(14)?,
        },
        dead_letters: 0,
        requeued: Vec::new(),
    })
}

/// Fills in a row's dead-letter count and requeued seqs.
fn with_dead_letters(conn: &Connection, mut w: WebhookRow) -> rusqlite::Result<WebhookRow> {
    w.dead_letters = conn
        .prepare_cached(COUNT_DEAD)?
        .query_row(params![w.id], |r| r.get(0))?;
    w.requeued = conn
        .prepare_cached(REQUEUED)?
        .query_map(params![w.id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(w)
}

impl Store {
    /// Adds an endpoint that starts after the last event the tick sees; its id.
    pub fn webhook_add(
        &mut self,
        url: &str,
        secret: &str,
        events: &str,
        now_ms: i64,
    ) -> Result<i64, StorageError> {
        let position = self.counts().last_seq;
        let id = self.write(|c| {
            c.prepare_cached(INSERT)?
                .execute(params![url, secret, events, now_ms, position])?;
            Ok(c.last_insert_rowid())
        })?;
        self.webhook_changes.push(id);
        Ok(id)
    }

    /// Deletes an endpoint and its dead letters; false when there is none.
    pub fn webhook_delete(&mut self, id: i64) -> Result<bool, StorageError> {
        let found = self.write(|c| {
            c.execute(
                "DELETE FROM webhook_dead_letters WHERE webhook = ?1",
                params![id],
            )?;
            Ok(c.execute("DELETE FROM webhooks WHERE id = ?1", params![id])? > 0)
        })?;
        if found {
            self.webhook_changes.push(id);
        }
        Ok(found)
    }

    /// Every endpoint, by id.
    pub fn webhooks(&mut self) -> Result<Vec<WebhookRow>, StorageError> {
        self.read(|c| {
            let rows: Vec<WebhookRow> = c
                .prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY id"))?
                .query_map([], row)?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter().map(|w| with_dead_letters(c, w)).collect()
        })
    }

    /// One endpoint; `None` when there is no such id.
    pub fn webhook(&mut self, id: i64) -> Result<Option<WebhookRow>, StorageError> {
        self.read(|c| {
            let w = c
                .prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = ?1"))?
                .query_row(params![id], row)
                .optional()?;
            w.map(|w| with_dead_letters(c, w)).transpose()
        })
    }

    /// `WEBHOOK REPLAY id from-seq`: the endpoint delivers every matching event
    /// from `from_seq` on again, enabled; false when there is no such id.
    pub fn webhook_rewind(&mut self, id: i64, from_seq: i64) -> Result<bool, StorageError> {
        let position = from_seq.saturating_sub(1).max(0);
        let found = self.write(|c| {
            Ok(c.execute(
                "UPDATE webhooks SET position = ?2, disabled = NULL, attempt_seq = 0, \
                 attempts = 0, next_attempt_at = 0, failing_since = NULL WHERE id = ?1",
                params![id, position],
            )? > 0)
        })?;
        if found {
            self.webhook_changes.push(id);
        }
        Ok(found)
    }

    /// `WEBHOOK REPLAY id`: the endpoint's dead letters are delivered again,
    /// before anything newer; how many, or `None` when there is no such id.
    pub fn webhook_requeue_dead(&mut self, id: i64) -> Result<Option<i64>, StorageError> {
        let n = self.write(|c| {
            let exists: Option<i64> = c
                .query_row("SELECT id FROM webhooks WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()?;
            if exists.is_none() {
                return Ok(None);
            }
            let n = c.execute(
                "UPDATE webhook_dead_letters SET requeued = 1 \
                 WHERE webhook = ?1 AND requeued = 0",
                params![id],
            )?;
            Ok(Some(n as i64))
        })?;
        if n.is_some() {
            self.webhook_changes.push(id);
        }
        Ok(n)
    }

    /// `WEBHOOK ENABLE id`: enabled again where it stopped, its failure clock
    /// reset; false when there is no such id.
    pub fn webhook_enable(&mut self, id: i64) -> Result<bool, StorageError> {
        let found = self.write(|c| {
            Ok(c.execute(
                "UPDATE webhooks SET disabled = NULL, failing_since = NULL, \
                 next_attempt_at = 0 WHERE id = ?1",
                params![id],
            )? > 0)
        })?;
        if found {
            self.webhook_changes.push(id);
        }
        Ok(found)
    }

    /// Up to `count` of the endpoint's dead letters (not requeued), oldest event
    /// first.
    pub fn webhook_dead_letters(
        &mut self,
        id: i64,
        count: usize,
    ) -> Result<Vec<WebhookDeadLetter>, StorageError> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        self.read(|c| {
            c.prepare_cached(
                "SELECT seq, attempts, last_status, last_error, at FROM webhook_dead_letters \
                 WHERE webhook = ?1 AND requeued = 0 ORDER BY seq LIMIT ?2",
            )?
            .query_map(params![id, limit], |r| {
                Ok(WebhookDeadLetter {
                    seq: r.get(0)?,
                    attempts: r.get(1)?,
                    last_status: r.get(2)?,
                    last_error: r.get(3)?,
                    at: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    /// Stores an endpoint's delivery state (the deliveries' own write: it is not
    /// a change to reload).
    pub fn webhook_save(&mut self, id: i64, s: &WebhookState) -> Result<(), StorageError> {
        self.write(|c| {
            c.prepare_cached(SAVE)?
                .execute(params![
                    id,
                    s.disabled,
                    s.position,
                    s.attempt_seq,
                    s.attempts,
                    s.next_attempt_at,
                    s.failing_since,
                    s.delivered,
                    s.failed,
                    s.last_status,
                    s.last_error
                ])
                .map(drop)
        })
    }

    /// Adds (or, for a requeued one that failed again, replaces) a dead letter.
    pub fn webhook_dead_letter(
        &mut self,
        id: i64,
        d: &WebhookDeadLetter,
    ) -> Result<(), StorageError> {
        self.write(|c| {
            c.prepare_cached(UPSERT_DEAD)?
                .execute(params![
                    id,
                    d.seq,
                    d.attempts,
                    d.last_status,
                    d.last_error,
                    d.at
                ])
                .map(drop)
        })
    }

    /// Removes a requeued dead letter that was delivered.
    pub fn webhook_dead_letter_done(&mut self, id: i64, seq: i64) -> Result<(), StorageError> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM webhook_dead_letters WHERE webhook = ?1 AND seq = ?2")?
                .execute(params![id, seq])
                .map(drop)
        })
    }

    /// At a promotion, between ticks: the endpoints become those of `adoption`
    /// (same ids; their url, secret, kinds and state; requeued dead letters
    /// added), each at the furthest of its local position and the carried one,
    /// never past `applied` (the last seq the node holds); local endpoints
    /// neither carried nor kept are deleted. Committed at once; the changes are
    /// reloaded like a WEBHOOK command's.
    pub fn webhooks_adopt(
        &mut self,
        adoption: &WebhookAdoption,
        applied: i64,
        now_ms: i64,
    ) -> Result<Adopted, StorageError> {
        self.committed_at_once(|s| s.adopt(adoption, applied, now_ms))
    }

    /// Runs `writes` between ticks and commits them at once, or (after a
    /// failed write) rolls them back: no tick is left open either way.
    fn committed_at_once<T>(
        &mut self,
        writes: impl FnOnce(&mut Store) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if self.tick_has_writes() {
            return Err(StorageError::new(
                super::StorageErrorKind::Other,
                "a tick transaction is open",
            ));
        }
        let done = writes(self);
        let committed = self.finish_tick();
        let done = done?;
        committed?;
        Ok(done)
    }

    fn adopt(
        &mut self,
        adoption: &WebhookAdoption,
        applied: i64,
        now_ms: i64,
    ) -> Result<Adopted, StorageError> {
        let local = self.webhooks()?;
        let mut done = Adopted::default();
        let mut changed = Vec::new();
        for row in &local {
            let carried = adoption.endpoints.iter().any(|c| c.id == row.id);
            if !carried && !adoption.keep.contains(&row.id) && self.webhook_delete(row.id)? {
                done.deleted += 1;
            }
        }
        for c in &adoption.endpoints {
            let old = local.iter().find(|r| r.id == c.id);
            let position = old
                .map_or(c.position, |r| r.state.position.max(c.position))
                .min(applied)
                .max(0);
            self.write(|conn| {
                match old {
                    // Another position, or enabled again: the attempts start over.
                    Some(r) => conn.execute(
                        "UPDATE webhooks SET url = ?2, secret = ?3, events = ?4, disabled = ?5, \
                         position = ?6, \
                         attempt_seq = CASE WHEN position = ?6 THEN attempt_seq ELSE 0 END, \
                         attempts = CASE WHEN position = ?6 THEN attempts ELSE 0 END, \
                         next_attempt_at = CASE WHEN position = ?6 THEN next_attempt_at ELSE 0 END, \
                         failing_since = CASE WHEN ?5 IS NULL THEN failing_since END \
                         WHERE id = ?1",
                        params![r.id, c.url, c.secret, c.events, c.disabled, position],
                    )?,
                    None => conn.execute(
                        "INSERT INTO webhooks (id, url, secret, events, created_at, disabled, \
                         position) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![
                            c.id, c.url, c.secret, c.events, now_ms, c.disabled, position
                        ],
                    )?,
                };
                let mut requeue = conn.prepare_cached(
                    "INSERT INTO webhook_dead_letters \
                     (webhook, seq, attempts, last_status, last_error, at, requeued) \
                     VALUES (?1, ?2, 0, 0, 'requeued on the former primary', ?3, 1) \
                     ON CONFLICT (webhook, seq) DO UPDATE SET requeued = 1",
                )?;
                for &seq in c.requeued.iter().filter(|&&s| s <= applied) {
                    requeue.execute(params![c.id, seq, now_ms])?;
                }
                Ok(())
            })?;
            changed.push(c.id);
            done.taken += 1;
        }
        // AUTOINCREMENT's counter: ids the old primary gave out stay its own.
        let max_id = adoption.max_id;
        self.write(|conn| {
            let raised = conn.execute(
                "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'webhooks'",
                params![max_id],
            )?;
            if raised == 0 && max_id > 0 {
                conn.execute(
                    "INSERT INTO sqlite_sequence (name, seq) VALUES ('webhooks', ?1)",
                    params![max_id],
                )?;
            }
            Ok(())
        })?;
        self.webhook_changes.extend(changed);
        Ok(done)
    }

    /// After the log was cut back to `keep` (a fenced or restarted primary's
    /// tail discarded), between ticks: no endpoint stays past `keep`, so the
    /// events that take those seqs from the stream are delivered; the attempts
    /// and dead letters of the discarded events go. Committed at once; how many
    /// endpoints moved back.
    pub fn webhooks_cut_back(&mut self, keep: i64) -> Result<usize, StorageError> {
        self.committed_at_once(|s| s.cut_back(keep))
    }

    fn cut_back(&mut self, keep: i64) -> Result<usize, StorageError> {
        let ids = self.write(|c| {
            c.execute(
                "UPDATE webhooks SET attempt_seq = 0, attempts = 0, next_attempt_at = 0 \
                 WHERE attempt_seq > ?1",
                params![keep],
            )?;
            c.execute(
                "DELETE FROM webhook_dead_letters WHERE seq > ?1",
                params![keep],
            )?;
            let ids: Vec<i64> = c
                .prepare("SELECT id FROM webhooks WHERE position > ?1")?
                .query_map(params![keep], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            c.execute(
                "UPDATE webhooks SET position = ?1 WHERE position > ?1",
                params![keep],
            )?;
            Ok(ids)
        })?;
        self.webhook_changes.extend_from_slice(&ids);
        Ok(ids.len())
    }

    /// The endpoints that committed administrative writes changed since the
    /// last call (see the module's doc).
    pub fn take_webhook_changes(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.webhook_committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("w.db"), Durability::Normal, 0).expect("open")
    }

    #[test]
    fn endpoints_and_their_state_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = store(&dir);
        let id = s
            .webhook_add("http://10.0.0.1/hook", "whsec_x", "*", 1000)
            .expect("add");
        assert!(s.take_webhook_changes().is_empty(), "not committed yet");
        s.finish_tick().expect("commit");
        assert_eq!(s.take_webhook_changes(), vec![id]);
        let state = WebhookState {
            position: 7,
            attempt_seq: 8,
            attempts: 2,
            next_attempt_at: 5000,
            failing_since: Some(4000),
            delivered: 6,
            failed: 3,
            last_status: 503,
            last_error: "HTTP 503".into(),
            ..WebhookState::default()
        };
        s.webhook_save(id, &state).expect("save");
        let dead = WebhookDeadLetter {
            seq: 3,
            attempts: 8,
            last_status: 500,
            last_error: "HTTP 500".into(),
            at: 4500,
        };
        s.webhook_dead_letter(id, &dead).expect("dead letter");
        s.finish_tick().expect("commit");
        assert!(
            s.take_webhook_changes().is_empty(),
            "deliveries are no change"
        );
        drop(s);
        let mut s = store(&dir);
        let w = s.webhook(id).expect("read").expect("there");
        assert_eq!(
            (w.url.as_str(), w.events.as_str()),
            ("http://10.0.0.1/hook", "*")
        );
        assert_eq!(w.state, state);
        assert_eq!(w.dead_letters, 1);
        assert_eq!(s.webhook_dead_letters(id, 10).expect("list"), vec![dead]);
        assert_eq!(s.webhook_requeue_dead(id).expect("requeue"), Some(1));
        assert_eq!(s.webhook_requeue_dead(99).expect("requeue"), None);
        let w = s.webhook(id).expect("read").expect("there");
        assert_eq!((w.dead_letters, w.requeued.clone()), (0, vec![3]));
        s.webhook_dead_letter_done(id, 3).expect("done");
        assert!(s.webhook_rewind(id, 2).expect("rewind"));
        let w = s.webhook(id).expect("read").expect("there");
        assert_eq!((w.state.position, w.state.attempts), (1, 0));
        assert!(w.requeued.is_empty());
        assert!(s.webhook_delete(id).expect("delete"));
        assert!(!s.webhook_delete(id).expect("delete"));
        s.finish_tick().expect("commit");
        assert_eq!(s.take_webhook_changes(), vec![id, id, id]);
        assert!(s.webhooks().expect("list").is_empty());
    }

    #[test]
    fn a_promotion_takes_in_the_carried_endpoints_with_their_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = store(&dir);
        let stale = s
            .webhook_add("http://10.0.0.1/old", "whsec_x", "*", 1)
            .expect("add");
        let mine = s
            .webhook_add("http://10.0.0.1/mine", "whsec_x", "*", 1)
            .expect("add");
        let ahead = s
            .webhook_add("http://10.0.0.1/ahead", "whsec_x", "*", 1)
            .expect("add");
        let kept = s
            .webhook_add("http://10.0.0.1/kept", "whsec_x", "*", 1)
            .expect("add");
        s.webhook_save(
            ahead,
            &WebhookState {
                position: 30,
                attempt_seq: 31,
                attempts: 2,
                ..WebhookState::default()
            },
        )
        .expect("save");
        s.finish_tick().expect("commit");
        s.take_webhook_changes();
        let carried = |id, url: &str, position, requeued: Vec<i64>| CarriedWebhook {
            id,
            url: url.into(),
            secret: "whsec_y".into(),
            events: "user.registered".into(),
            disabled: None,
            position,
            requeued,
        };
        let adoption = WebhookAdoption {
            endpoints: vec![
                carried(mine, "http://10.0.0.1/moved", 12, vec![3, 99]),
                carried(ahead, "http://10.0.0.1/ahead", 20, vec![]),
                carried(9, "http://10.0.0.1/new", 50, vec![]),
            ],
            keep: vec![kept],
            max_id: 11,
        };
        assert!(s.webhooks().expect("list").len() == 4 && stale == 1);
        let done = s.webhooks_adopt(&adoption, 40, 5).expect("adopt");
        assert_eq!(
            done,
            Adopted {
                taken: 3,
                deleted: 1
            }
        );
        let mut changes = s.take_webhook_changes();
        changes.sort_unstable();
        assert_eq!(changes, vec![stale, mine, ahead, 9]);
        let rows = s.webhooks().expect("list");
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![mine, ahead, kept, 9]);
        let mine_row = &rows[0];
        assert_eq!(
            (
                mine_row.url.as_str(),
                mine_row.secret.as_str(),
                mine_row.events.as_str()
            ),
            ("http://10.0.0.1/moved", "whsec_y", "user.registered")
        );
        assert_eq!(mine_row.state.position, 12);
        assert_eq!(
            mine_row.requeued,
            vec![3],
            "a seq past the applied one is not there"
        );
        // The local position was further: kept, with its attempts.
        assert_eq!((rows[1].state.position, rows[1].state.attempts), (30, 2));
        // Never past the applied seq.
        assert_eq!(rows[3].state.position, 40);
        assert_eq!(rows[2].url, "http://10.0.0.1/kept");
        let next = s
            .webhook_add("http://10.0.0.1/next", "whsec_x", "*", 1)
            .expect("add");
        assert_eq!(next, 12, "ids the bucket names are not given out again");
    }

    #[test]
    fn a_cut_back_log_takes_the_positions_and_dead_letters_past_it_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = store(&dir);
        let ahead = s
            .webhook_add("http://10.0.0.1/a", "whsec_x", "*", 1)
            .expect("add");
        let behind = s
            .webhook_add("http://10.0.0.1/b", "whsec_x", "*", 1)
            .expect("add");
        let state = |position, attempt_seq| WebhookState {
            position,
            attempt_seq,
            attempts: 1,
            ..WebhookState::default()
        };
        s.webhook_save(ahead, &state(30, 31)).expect("save");
        s.webhook_save(behind, &state(10, 11)).expect("save");
        for seq in [5, 25] {
            let dead = WebhookDeadLetter {
                seq,
                attempts: 3,
                last_status: 500,
                last_error: "HTTP 500".into(),
                at: 1,
            };
            s.webhook_dead_letter(ahead, &dead).expect("dead letter");
        }
        s.finish_tick().expect("commit");
        s.take_webhook_changes();
        assert_eq!(s.webhooks_cut_back(20).expect("cut back"), 1);
        assert_eq!(s.take_webhook_changes(), vec![ahead]);
        let a = s.webhook(ahead).expect("read").expect("there");
        assert_eq!(
            (a.state.position, a.state.attempt_seq, a.dead_letters),
            (20, 0, 1)
        );
        let b = s.webhook(behind).expect("read").expect("there");
        assert_eq!((b.state.position, b.state.attempt_seq), (10, 11));
    }

    #[test]
    fn a_failed_tick_forgets_its_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = store(&dir);
        s.webhook_add("http://10.0.0.1/", "whsec_x", "*", 1)
            .expect("add");
        // A write that fails loses the whole tick.
        assert!(
            s.write(|c| c.execute_batch("SELECT * FROM no_such_table"))
                .is_err()
        );
        assert!(s.finish_tick().is_err());
        assert!(s.take_webhook_changes().is_empty());
    }
}
