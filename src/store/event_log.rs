//! The event log: appending an event row, reading rows between sequence numbers,
//! trimming the oldest (retention), and the stored offsets of durable handlers.

use rusqlite::{Connection, OptionalExtension, params};

use super::{StorageError, StorageErrorKind, Store, Txn};
use crate::error::Result;

/// The kind column of a registration event; also its pub/sub channel.
pub const REGISTERED: &str = "user.registered";
/// The kind column of an unregistration event; also its pub/sub channel.
pub const UNREGISTERED: &str = "user.unregistered";
/// The kind column of an update event (fields set or removed); also its pub/sub
/// channel.
pub const UPDATED: &str = "user.updated";

const INSERT_EVENT: &str = "INSERT INTO events (kind, user_id, name, fields, at, before_fields) \
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const SELECT_EVENTS_ASC: &str = "SELECT seq, kind, user_id, name, fields, at, before_fields \
                                 FROM events WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq LIMIT ?3";
const SELECT_EVENTS_DESC: &str = "SELECT seq, kind, user_id, name, fields, at, before_fields \
                                  FROM events WHERE seq BETWEEN ?1 AND ?2 \
                                  ORDER BY seq DESC LIMIT ?3";

/// The columns of an [`EventRow`], in the order [`event_row`] reads them.
pub(super) const EVENT_COLUMNS: &str = "seq, kind, user_id, name, fields, at, before_fields";

/// One row of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Sequence number: the stream entry id is `<seq>-0`.
    pub seq: i64,
    /// `user.registered`, `user.unregistered` or `user.updated`.
    pub kind: String,
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub name: String,
    /// The user's fields as JSON.
    pub fields: String,
    /// Unix milliseconds.
    pub at: i64,
    /// A `user.updated` event's fields before the change, as JSON (`None` for the
    /// other kinds).
    pub before: Option<String>,
}

impl EventRow {
    /// The row as an [`EventRef`], which the stream's encoders take.
    pub fn view(&self) -> EventRef<'_> {
        EventRef {
            seq: self.seq,
            kind: &self.kind,
            user_id: self.user_id,
            name: &self.name,
            fields: &self.fields,
            at: self.at,
            before: self.before.as_deref(),
        }
    }
}

/// One row of the event log, borrowed: from an [`EventRow`], or from SQLite
/// while a read visits its rows (nothing is copied out then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'r> {
    /// Sequence number: the stream entry id is `<seq>-0`.
    pub seq: i64,
    /// `user.registered`, `user.unregistered` or `user.updated`.
    pub kind: &'r str,
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub name: &'r str,
    /// The user's fields as JSON.
    pub fields: &'r str,
    /// Unix milliseconds.
    pub at: i64,
    /// A `user.updated` event's fields before the change, as JSON.
    pub before: Option<&'r str>,
}

impl EventRef<'_> {
    /// The row, copied out.
    pub fn to_row(&self) -> EventRow {
        EventRow {
            seq: self.seq,
            kind: self.kind.to_string(),
            user_id: self.user_id,
            name: self.name.to_string(),
            fields: self.fields.to_string(),
            at: self.at,
            before: self.before.map(str::to_string),
        }
    }
}

/// Reads an [`EventRef`] from a row selected as [`EVENT_COLUMNS`].
pub(super) fn event_ref<'r>(r: &'r rusqlite::Row<'_>) -> rusqlite::Result<EventRef<'r>> {
    let text = |i: usize| -> rusqlite::Result<&'r str> {
        r.get_ref(i)?.as_str().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
        })
    };
    Ok(EventRef {
        seq: r.get(0)?,
        kind: text(1)?,
        user_id: r.get(2)?,
        name: text(3)?,
        fields: text(4)?,
        at: r.get(5)?,
        before: match r.get_ref(6)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(text(6)?),
        },
    })
}

/// Reads an [`EventRow`] from a row selected as [`EVENT_COLUMNS`].
pub(super) fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    event_ref(r).map(|e| e.to_row())
}

/// Appends one event row (`before`: an update's fields before it); returns its
/// sequence number.
pub(super) fn append(
    conn: &Connection,
    kind: &str,
    user_id: i64,
    name: &str,
    fields: &str,
    at: i64,
    before: Option<&str>,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(INSERT_EVENT)?
        .execute(params![kind, user_id, name, fields, at, before])?;
    Ok(conn.last_insert_rowid())
}

impl Store {
    /// Up to `count` events with `lo <= seq <= hi`, ascending (or descending when
    /// `rev`).
    pub fn events_between(
        &mut self,
        lo: i64,
        hi: i64,
        count: usize,
        rev: bool,
    ) -> std::result::Result<Vec<EventRow>, StorageError> {
        let mut rows = Vec::new();
        self.each_event_between(lo, hi, count, rev, |e| rows.push(e.to_row()))?;
        Ok(rows)
    }

    /// Visits up to `count` events with `lo <= seq <= hi`, ascending (or
    /// descending when `rev`), as SQLite lends them: a read of any length holds
    /// one row at a time. Returns how many `f` saw.
    pub fn each_event_between(
        &mut self,
        lo: i64,
        hi: i64,
        count: usize,
        rev: bool,
        mut f: impl FnMut(EventRef<'_>),
    ) -> std::result::Result<usize, StorageError> {
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
                let mut rows = s.query(params![lo, hi, limit])?;
                let mut n = 0;
                while let Some(row) = rows.next()? {
                    f(event_ref(row)?);
                    n += 1;
                }
                Ok(n)
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
            return Err(StorageError::new(
                StorageErrorKind::Other,
                "a tick transaction is open",
            ));
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

    /// Counts an event the tick wrote.
    pub(super) fn note_event(&mut self, seq: i64) {
        self.tick.events += 1;
        self.tick.last_seq = self.tick.last_seq.max(seq);
    }
}
