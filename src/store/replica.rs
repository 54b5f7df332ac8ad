//! A follower's writes: events read from the JetStream stream applied into the
//! tick's transaction with the seqs and user ids the primary gave them, and the
//! other direction, a fenced primary discarding its local tail that never reached
//! the stream, so that the database ends as a prefix of the stream.
//!
//! Applying checks that each event fits (the next seq; a registration's name
//! free; an unregistration's or an update's user there with that id; no unique
//! field value another user holds) before it writes anything: an event that does
//! not fit is refused, never forced in.

use rusqlite::{OptionalExtension, params};
use std::fmt;

use super::{StorageError, StorageErrorKind, Store, Txn, event_log, meta, schema};
use crate::events::{Event, EventKind};

const INSERT_USER: &str =
    "INSERT INTO users (id, name, fields, created_at) VALUES (?1, ?2, ?3, ?4)";
const DELETE_USER: &str = "DELETE FROM users WHERE id = ?1";
const UPDATE_USER: &str = "UPDATE users SET fields = ?2 WHERE id = ?1";
const INSERT_EVENT: &str = "INSERT INTO events (seq, kind, user_id, name, fields, at, before_fields) \
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// The `meta` row of a follower's last applied message: `<seq> <Nats-Msg-Id>`.
const PREVIOUS_KEY_PREFIX: &str = "previous:";

/// Why an event was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The event does not fit the database (a gap, a taken name, an unknown
    /// user): following must stop, loudly.
    Misfit(String),
    /// Storage failed; the tick is lost, as any failed write loses it.
    Storage(StorageError),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Misfit(why) => f.write_str(why),
            ApplyError::Storage(e) => write!(f, "storage: {e}"),
        }
    }
}

impl From<StorageError> for ApplyError {
    fn from(e: StorageError) -> Self {
        ApplyError::Storage(e)
    }
}

/// What [`Store::discard_after`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Discarded {
    /// Events removed from the log.
    pub events: i64,
    /// The first and last seq removed (0 when none).
    pub first: i64,
    /// See `first`.
    pub last: i64,
    /// Registrations undone (their users deleted).
    pub registrations: i64,
    /// Unregistrations undone (their users put back).
    pub unregistrations: i64,
    /// Updates undone (their users' fields put back as they were before).
    pub updates: i64,
}

impl Store {
    /// Applies `event`, read from the stream, into the tick's transaction: its
    /// user change and its event row, with its own seq and user id. It must be
    /// the next seq; the index changes as REGISTER, UNREGISTER or UPDATE would
    /// change it (an update sets the user's fields to the event's `fields`).
    pub fn apply(&mut self, event: &Event) -> Result<(), ApplyError> {
        let next = self.tick.last_seq + 1;
        if event.seq != next {
            return Err(ApplyError::Misfit(format!(
                "event {} does not follow the local log, which ends at {}",
                event.seq, self.tick.last_seq
            )));
        }
        // A follower loads its index before it applies (`finish_warming`); this
        // keeps a misfit from being judged on a partial index.
        self.check_loaded(&event.name)?;
        let json = serde_json::to_string(&event.fields).unwrap_or_else(|_| "{}".to_string());
        match event.kind {
            EventKind::Registered if event.before.is_none() => {
                self.check_unique(event)?;
                self.begin()?;
                // One probe: the index refuses a taken name and changes nothing.
                if !self
                    .users
                    .add_with_id(event.user_id, &event.name, &event.fields, event.at_ms)
                {
                    return Err(self.registered_already(event));
                }
                self.tick_user_delta += 1;
                if !self.unique.is_empty() {
                    self.unique.change(&event.name, None, Some(&event.fields));
                }
                // Written with the tick's other registrations, as REGISTER's are
                // (store/batch.rs); a failure there loses the tick and rolls the
                // index back.
                self.queue_registration(event.user_id, event.seq, &event.name, json, event.at_ms)?;
                return Ok(());
            }
            EventKind::Registered => {
                if self.users.get(&event.name).is_some() {
                    return Err(self.registered_already(event));
                }
                self.check_unique(event)?;
                self.begin()?;
                self.flush()?;
                let res = (|| {
                    self.conn.prepare_cached(INSERT_USER)?.execute(params![
                        event.user_id,
                        event.name,
                        json,
                        event.at_ms
                    ])?;
                    self.insert_event(event, event_log::REGISTERED, &json)
                })();
                self.guard(res)?;
                self.users
                    .add_with_id(event.user_id, &event.name, &event.fields, event.at_ms);
                self.tick_user_delta += 1;
                self.unique.change(&event.name, None, Some(&event.fields));
            }
            EventKind::Unregistered => {
                self.known_user(event, "unregisters")?;
                self.begin()?;
                self.flush()?;
                // Out of the index first: a failed write rolls the index back too.
                if let Some((_, fields)) = self.users.remove(&event.name) {
                    self.unique.change(&event.name, Some(&fields), None);
                    self.tick_user_delta -= 1;
                }
                let res = (|| {
                    self.conn
                        .prepare_cached(DELETE_USER)?
                        .execute(params![event.user_id])?;
                    self.insert_event(event, event_log::UNREGISTERED, &json)
                })();
                self.guard(res)?;
            }
            EventKind::Updated => {
                self.known_user(event, "updates")?;
                self.check_unique(event)?;
                self.begin()?;
                self.flush()?;
                // In the index first: a failed write rolls the index back too.
                if let Some((_, before)) = self.users.replace(&event.name, &event.fields) {
                    self.unique
                        .change(&event.name, Some(&before), Some(&event.fields));
                }
                let res = (|| {
                    self.conn
                        .prepare_cached(UPDATE_USER)?
                        .execute(params![event.user_id, json])?;
                    self.insert_event(event, event_log::UPDATED, &json)
                })();
                self.guard(res)?;
            }
        }
        self.note_event(event.seq);
        Ok(())
    }

    /// The refusal of a registration whose name is taken.
    fn registered_already(&self, event: &Event) -> ApplyError {
        ApplyError::Misfit(format!(
            "event {} registers '{}', which is registered already (id {})",
            event.seq,
            event.name,
            self.users.get(&event.name).map_or(0, |u| u.id)
        ))
    }

    /// Refuses an event whose user is not registered with its id.
    fn known_user(&self, event: &Event, verb: &str) -> Result<(), ApplyError> {
        match self.users.get(&event.name) {
            Some(u) if u.id == event.user_id => Ok(()),
            found => Err(ApplyError::Misfit(format!(
                "event {} {verb} '{}' (id {}), which is {}",
                event.seq,
                event.name,
                event.user_id,
                found.map_or("not registered".to_string(), |u| format!(
                    "registered with id {}",
                    u.id
                ))
            ))),
        }
    }

    /// Refuses an event that gives its user a unique value another user holds
    /// (this node's `--unique-field` does not hold in the stream).
    fn check_unique(&self, event: &Event) -> Result<(), ApplyError> {
        match self.unique.conflict(&event.name, &event.fields) {
            None => Ok(()),
            Some(taken) => Err(ApplyError::Misfit(format!(
                "event {} gives '{}' a value of the unique field '{}' that user '{}' holds \
                 (this node's --unique-field does not hold in the stream)",
                event.seq, event.name, taken.field, taken.holder
            ))),
        }
    }

    fn insert_event(&self, event: &Event, kind: &str, json: &str) -> rusqlite::Result<()> {
        let before = event
            .before
            .as_ref()
            .map(|b| serde_json::to_string(b).unwrap_or_else(|_| "{}".to_string()));
        self.conn.prepare_cached(INSERT_EVENT)?.execute(params![
            event.seq,
            kind,
            event.user_id,
            event.name,
            json,
            event.at_ms,
            before
        ])?;
        Ok(())
    }

    /// Stores, in the tick's transaction, that everything up to `seq` is in
    /// stream `stream` (the relay's position, which a follower keeps at its
    /// applied seq) and that the stream's message at `seq` has id `msg_id`: a
    /// node promoted later, or restarted as primary, chains its first publish to
    /// it.
    pub fn set_follow_position(
        &mut self,
        stream: &str,
        seq: i64,
        msg_id: &str,
    ) -> Result<(), StorageError> {
        let relay = meta::relay_key(stream);
        let previous = format!("{PREVIOUS_KEY_PREFIX}{stream}");
        let value = format!("{seq} {msg_id}");
        self.write(|c| {
            meta::put(c, &relay, &seq.to_string())?;
            meta::put(c, &previous, &value)
        })
    }

    /// The last message this database applied from `stream` as a follower: its
    /// seq and `Nats-Msg-Id`; `None` when it never followed it.
    pub fn follow_previous(&mut self, stream: &str) -> Result<Option<(i64, String)>, StorageError> {
        let value = meta::value(&self.conn, &format!("{PREVIOUS_KEY_PREFIX}{stream}"))?;
        Ok(value.and_then(|v| {
            let (seq, id) = v.split_once(' ')?;
            Some((seq.parse().ok()?, id.to_string()))
        }))
    }

    /// Removes every event after `keep` and undoes the user changes they made, in
    /// reverse order (a registration's user is deleted, an unregistration's user
    /// put back with its id, name and fields, an update's fields put back as they
    /// were before it), in one transaction of its own;
    /// then rebuilds the index. Consumer-group positions, pending entries and
    /// durable handler offsets past `keep` come back to `keep`. Runs between
    /// ticks.
    pub fn discard_after(&mut self, keep: i64) -> Result<Discarded, StorageError> {
        if self.txn != Txn::Idle {
            return Err(StorageError::new(
                StorageErrorKind::Other,
                "a tick transaction is open",
            ));
        }
        let mut done = Discarded::default();
        if keep >= self.committed.last_seq {
            return Ok(done);
        }
        let res = self.write(|c| {
            let rows = c
                .prepare(&format!(
                    "SELECT {} FROM events WHERE seq > ?1 ORDER BY seq DESC",
                    event_log::EVENT_COLUMNS
                ))?
                .query_map(params![keep], event_log::event_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for row in &rows {
                if row.kind == event_log::UNREGISTERED {
                    // Its registration's time, when the log still holds it.
                    let created: Option<i64> = c
                        .query_row(
                            "SELECT at FROM events WHERE kind = ?1 AND user_id = ?2 \
                             AND seq < ?3 ORDER BY seq DESC LIMIT 1",
                            params![event_log::REGISTERED, row.user_id, row.seq],
                            |r| r.get(0),
                        )
                        .optional()?;
                    c.execute(
                        INSERT_USER,
                        params![row.user_id, row.name, row.fields, created.unwrap_or(row.at)],
                    )?;
                    done.unregistrations += 1;
                } else if row.kind == event_log::UPDATED {
                    c.execute(
                        UPDATE_USER,
                        params![row.user_id, row.before.as_deref().unwrap_or("{}")],
                    )?;
                    done.updates += 1;
                } else {
                    c.execute(DELETE_USER, params![row.user_id])?;
                    done.registrations += 1;
                }
            }
            done.events = rows.len() as i64;
            done.first = rows.last().map_or(0, |r| r.seq);
            done.last = rows.first().map_or(0, |r| r.seq);
            c.execute("DELETE FROM events WHERE seq > ?1", params![keep])?;
            // Seqs after `keep` will be given again: base images go stale.
            meta::bump_history_epoch(c)?;
            c.execute(
                "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'events'",
                params![keep],
            )?;
            c.execute(
                "UPDATE stream_groups SET last_delivered = ?1 WHERE last_delivered > ?1",
                params![keep],
            )?;
            c.execute("DELETE FROM stream_pending WHERE seq > ?1", params![keep])?;
            c.execute(
                "UPDATE handler_offsets SET seq = ?1 WHERE seq > ?1",
                params![keep],
            )?;
            c.query_row("SELECT count(*) FROM events", [], |r| r.get::<_, i64>(0))
        });
        let events = res?;
        self.finish_tick()?;
        let next_id = schema::highest_user_id(&self.conn)
            .map_err(|e| StorageError::new(StorageErrorKind::Other, e.to_string()))?
            .unwrap_or(0)
            + 1;
        self.users = super::users::load::scan(&self.conn, &self.path, next_id)
            .map_err(|e| StorageError::new(StorageErrorKind::Other, e.to_string()))?;
        self.warming = None;
        self.tick_user_delta = 0;
        self.reload_unique()?;
        self.committed.users = self.users.len() as i64;
        self.committed.events = events;
        self.committed.last_seq = keep;
        self.tick = self.committed;
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::Durability;

    fn open(path: &Path) -> Store {
        Store::open(path, Durability::Normal, 0).expect("open")
    }

    /// Fields with one, `plan`.
    fn plan(value: &str) -> BTreeMap<String, String> {
        [("plan".to_string(), value.to_string())].into()
    }

    fn event(seq: i64, kind: EventKind, id: i64, name: &str, plan_value: &str) -> Event {
        Event {
            seq,
            kind,
            user_id: id,
            name: name.into(),
            fields: plan(plan_value),
            before: None,
            at_ms: 1000 + seq,
        }
    }

    fn update(seq: i64, id: i64, name: &str, before: &str, after: &str) -> Event {
        Event {
            kind: EventKind::Updated,
            before: Some(plan(before)),
            ..event(seq, EventKind::Updated, id, name, after)
        }
    }

    fn log(store: &mut Store) -> Vec<Event> {
        store
            .events_between(0, i64::MAX, 1000, false)
            .expect("read")
            .iter()
            .map(Event::from_row)
            .collect()
    }

    #[test]
    fn applied_events_keep_their_seqs_and_ids_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("f.db");
        let mut store = open(&db);
        let events = [
            event(1, EventKind::Registered, 5, "ann", "free"),
            event(2, EventKind::Registered, 9, "bob", "pro"),
            event(3, EventKind::Unregistered, 5, "ann", "free"),
        ];
        for e in &events {
            store.apply(e).expect("apply");
        }
        store.set_follow_position("S", 3, "w-3").expect("position");
        store.finish_tick().expect("commit");
        assert_eq!(log(&mut store), events);
        drop(store);
        let mut store = open(&db);
        assert_eq!(store.committed_counts().last_seq, 3);
        assert_eq!(store.lookup("bob").expect("lookup").map(|u| u.id), Some(9));
        assert!(store.lookup("ann").expect("lookup").is_none());
        assert_eq!(
            store.follow_previous("S").expect("read"),
            Some((3, "w-3".into()))
        );
        assert_eq!(store.relay_confirmed("S").expect("read"), 3);
        // A registration after promotion gets an id after every applied one.
        let change = store
            .register("cy", &BTreeMap::new(), 0)
            .expect("register")
            .expect("new");
        assert_eq!((change.user_id, change.seq), (10, 4));
    }

    #[test]
    fn events_that_do_not_fit_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir.path().join("misfit.db"));
        store
            .apply(&event(1, EventKind::Registered, 1, "ann", "a"))
            .expect("apply");
        for bad in [
            event(3, EventKind::Registered, 2, "bob", "gap"),
            event(1, EventKind::Registered, 2, "bob", "again"),
            event(2, EventKind::Registered, 2, "ann", "taken"),
            event(2, EventKind::Unregistered, 7, "ann", "wrong id"),
            event(2, EventKind::Unregistered, 2, "zed", "unknown"),
        ] {
            assert!(
                matches!(store.apply(&bad), Err(ApplyError::Misfit(_))),
                "{bad:?}"
            );
        }
        store.finish_tick().expect("commit");
        assert_eq!(log(&mut store).len(), 1);
    }

    #[test]
    fn discarding_the_tail_undoes_its_user_changes_in_reverse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("fenced.db");
        let mut store = open(&db);
        store
            .register("keep", &plan("k"), 10)
            .expect("r")
            .expect("new");
        store
            .register("gone", &plan("g"), 20)
            .expect("r")
            .expect("new");
        store.finish_tick().expect("commit");
        let kept = log(&mut store);
        // The tail: a new user, the removal of an old one, a user added and removed.
        store
            .register("tail", &plan("t"), 30)
            .expect("r")
            .expect("new");
        store.unregister("gone", 40).expect("u").expect("known");
        store
            .register("brief", &plan("b"), 50)
            .expect("r")
            .expect("new");
        store.unregister("brief", 60).expect("u").expect("known");
        store.finish_tick().expect("commit");
        let done = store.discard_after(2).expect("discard");
        assert_eq!(
            done,
            Discarded {
                events: 4,
                first: 3,
                last: 6,
                registrations: 2,
                unregistrations: 2,
                updates: 0
            }
        );
        assert_eq!(log(&mut store), kept);
        assert_eq!(store.committed_counts().last_seq, 2);
        assert_eq!(store.user_count(), 2);
        let gone = store
            .lookup("gone")
            .expect("lookup")
            .map(|u| (u.id, u.created_at, u.fields.to_map()));
        assert_eq!(gone, Some((2, 20, plan("g"))));
        assert!(store.lookup("tail").expect("lookup").is_none());
        // The stream's events apply after the kept prefix, and it all reopens.
        store
            .apply(&event(3, EventKind::Registered, 8, "other", "o"))
            .expect("apply");
        store.finish_tick().expect("commit");
        drop(store);
        let store = open(&db);
        assert_eq!(store.committed_counts().last_seq, 3);
        assert_eq!(store.user_count(), 3);
    }

    #[test]
    fn an_applied_update_sets_the_fields_and_keeps_the_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("up.db");
        let mut store = open(&db);
        store
            .set_unique_fields(&["plan".to_string()])
            .expect("unique");
        let events = [
            event(1, EventKind::Registered, 5, "ann", "free"),
            update(2, 5, "ann", "free", "pro"),
            event(3, EventKind::Registered, 6, "bob", "free"),
        ];
        for e in &events {
            store.apply(e).expect("apply");
        }
        // Not ann's id, not registered, a value ann holds: refused.
        for bad in [
            update(4, 9, "ann", "pro", "x"),
            update(4, 7, "zed", "pro", "x"),
            update(4, 6, "bob", "free", "pro"),
        ] {
            assert!(
                matches!(store.apply(&bad), Err(ApplyError::Misfit(_))),
                "{bad:?}"
            );
        }
        store.finish_tick().expect("commit");
        assert_eq!(log(&mut store), events);
        drop(store);
        let mut store = open(&db);
        store
            .set_unique_fields(&["plan".to_string()])
            .expect("unique");
        let ann = store
            .lookup("ann")
            .expect("lookup")
            .map(|u| (u.id, u.created_at, u.fields.to_map()));
        assert_eq!(ann, Some((5, 1001, plan("pro"))));
        assert_eq!(
            store.lookup_by("plan", "pro").expect("read").map(|u| u.id),
            Some(5)
        );
    }

    #[test]
    fn discarding_an_update_puts_the_fields_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir.path().join("fenced-up.db"));
        store
            .set_unique_fields(&["plan".to_string()])
            .expect("unique");
        store
            .register("ann", &plan("a"), 10)
            .expect("r")
            .expect("new");
        store.finish_tick().expect("commit");
        // The tail: two updates of ann, then bob takes her first value.
        store
            .update_fields("ann", &plan("b"), 20)
            .expect("u")
            .expect("known");
        store
            .update_fields("ann", &BTreeMap::new(), 30)
            .expect("u")
            .expect("known");
        store
            .register("bob", &plan("a"), 40)
            .expect("r")
            .expect("new");
        store.finish_tick().expect("commit");
        let done = store.discard_after(1).expect("discard");
        assert_eq!((done.events, done.updates, done.registrations), (3, 2, 1));
        let ann = store
            .lookup("ann")
            .expect("lookup")
            .map(|u| u.fields.to_map());
        assert_eq!(ann, Some(plan("a")));
        assert!(store.lookup("bob").expect("lookup").is_none());
        assert_eq!(
            store.lookup_by("plan", "a").expect("read").map(|u| u.id),
            Some(1)
        );
        assert!(store.lookup_by("plan", "b").expect("read").is_none());
    }
}
