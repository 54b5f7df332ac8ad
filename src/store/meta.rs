//! Facts about the database itself, in the `meta` table: the writer id it got when
//! it was created, the epoch of its history (moved by every rewrite of it), and
//! the JetStream relay's confirmed position in each stream.
//! [`value`] and [`put`] read and write a row for every module that keeps a fact
//! there (a follower's position, a snapshot's origin).
//!
//! The relay's position lives here rather than in `handler_offsets`: durable
//! handlers name their rows freely, so no name there is safe from a handler, while
//! `meta` is written by the store alone.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;

use super::{StorageError, Store};
use crate::error::{Error, Result};

/// The row holding the writer id.
pub(super) const WRITER_KEY: &str = "writer";
/// The rows holding the relay's confirmed positions: this, then the stream name.
const RELAY_KEY_PREFIX: &str = "relay:";
/// Longest writer id accepted from the file, in bytes (the schema makes 16).
const MAX_WRITER_ID_BYTES: usize = 64;

const SELECT_VALUE: &str = "SELECT value FROM meta WHERE key = ?1";
const UPSERT_VALUE: &str = "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                            ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// The `meta` key of the relay's confirmed position in `stream`.
pub(super) fn relay_key(stream: &str) -> String {
    format!("{RELAY_KEY_PREFIX}{stream}")
}

/// The value of the `meta` row `key`; `None` when there is no such row.
pub(super) fn value(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(SELECT_VALUE)?
        .query_row(params![key], |r| r.get(0))
        .optional()
}

/// Sets the `meta` row `key` to `value`, adding the row if needed.
pub(super) fn put(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(UPSERT_VALUE)?
        .execute(params![key, value])
        .map(drop)
}

/// The row counting rewrites of the database's history (see [`history_epoch`]).
const HISTORY_EPOCH_KEY: &str = "history_epoch";

/// How many times the database's history was rewritten (a discarded tail): 0
/// before the first. A base image of the user index (`users::base`) serves only
/// the epoch it was written in, since events it would replay may be gone and
/// their seqs given again to others.
pub(super) fn history_epoch(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1")?
        .query_row(params![HISTORY_EPOCH_KEY], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// Moves the history epoch on; in the transaction that rewrites history.
pub(super) fn bump_history_epoch(conn: &Connection) -> rusqlite::Result<()> {
    let next = history_epoch(conn)? + 1;
    put(conn, HISTORY_EPOCH_KEY, &next.to_string())
}

/// Reads the writer id the schema made. It goes into message ids and headers,
/// so a row edited into something else (empty, too long, not letters, digits or
/// `_`) is refused rather than sent.
pub(super) fn load_writer_id(conn: &Connection, path: &Path) -> Result<String> {
    let Some(id) = value(conn, WRITER_KEY)? else {
        return Err(Error::Config(format!(
            "{}: the meta table has no 'writer' row (the database was edited by hand?)",
            path.display()
        )));
    };
    let usable = !id.is_empty()
        && id.len() <= MAX_WRITER_ID_BYTES
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !usable {
        return Err(Error::Config(format!(
            "{}: the writer id in the meta table is '{}'; it must be 1 to \
             {MAX_WRITER_ID_BYTES} letters, digits or '_'",
            path.display(),
            id.escape_debug()
        )));
    }
    Ok(id)
}

impl Store {
    /// The database's writer id: random, made when the database was created (or
    /// upgraded to schema version 4), the same on every open. A copy of the file
    /// keeps it, so two servers started from copies of one database share it; a
    /// snapshot written by `store::backup` gets a new one.
    pub fn writer_id(&self) -> &str {
        &self.writer
    }

    /// The last event seq the relay had confirmed into JetStream stream `stream`,
    /// as the tick sees it (0 before the first). One primary-key lookup, so
    /// cheap enough to read at each trim.
    pub fn relay_confirmed(&mut self, stream: &str) -> Result<i64> {
        let Some(value) = value(&self.conn, &relay_key(stream))? else {
            return Ok(0);
        };
        value.parse().map_err(|_| {
            Error::Config(format!(
                "the relay's position in stream '{stream}' is stored as '{}', not a number \
                 (the meta table was edited by hand?)",
                value.escape_debug()
            ))
        })
    }

    /// Stores the relay's confirmed position in stream `stream` as part of the
    /// tick's transaction (opening it if needed): it is durable once the tick
    /// commits, and lost with the tick's other writes if the tick fails, as any
    /// write is. Called once a tick with the highest seq confirmed, it adds one
    /// row write to that tick's commit and no commit of its own.
    pub fn set_relay_confirmed(
        &mut self,
        stream: &str,
        seq: i64,
    ) -> std::result::Result<(), StorageError> {
        let key = relay_key(stream);
        self.write(|c| put(c, &key, &seq.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Durability;

    fn open(path: &Path) -> Store {
        Store::open(path, Durability::Normal, 0).expect("open")
    }

    #[test]
    fn writer_id_is_random_hex_and_stable_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        let first = open(&a).writer_id().to_string();
        assert_eq!(first.len(), 16, "{first}");
        assert!(
            first
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{first}"
        );
        assert_eq!(open(&a).writer_id(), first, "the id changed on reopen");
        assert_ne!(open(&b).writer_id(), first, "two databases share an id");
        // A copy is the same database: it keeps the id.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&a, &copy).expect("copy");
        assert_eq!(open(&copy).writer_id(), first);
    }

    #[test]
    fn an_edited_writer_id_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("edited.db");
        drop(open(&db));
        for (sql, word) in [
            (
                "UPDATE meta SET value = 'a-b\nc' WHERE key = 'writer'",
                "writer id",
            ),
            ("DELETE FROM meta WHERE key = 'writer'", "no 'writer' row"),
        ] {
            Connection::open(&db)
                .and_then(|c| c.execute_batch(sql))
                .expect("edit");
            match Store::open(&db, Durability::Normal, 0) {
                Err(Error::Config(msg)) => assert!(msg.contains(word), "{msg}"),
                Err(other) => panic!("expected a configuration error, got {other}"),
                Ok(_) => panic!("opened with {sql}"),
            }
        }
    }

    #[test]
    fn relay_position_commits_with_the_tick_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("relay.db");
        let mut store = open(&db);
        assert_eq!(store.relay_confirmed("USERBUS").expect("read"), 0);
        store.set_relay_confirmed("USERBUS", 41).expect("write");
        assert!(store.tick_has_writes(), "the write joins the tick");
        assert_eq!(store.relay_confirmed("USERBUS").expect("read"), 41);
        store.finish_tick().expect("commit");
        store.set_relay_confirmed("USERBUS", 42).expect("write");
        store.set_relay_confirmed("OTHER", 7).expect("write");
        store.finish_tick().expect("commit");
        drop(store);
        let mut store = open(&db);
        assert_eq!(store.relay_confirmed("USERBUS").expect("read"), 42);
        assert_eq!(store.relay_confirmed("OTHER").expect("read"), 7);
    }

    #[test]
    fn a_failed_tick_loses_the_relay_position_with_its_other_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir.path().join("rollback.db"));
        store.set_relay_confirmed("USERBUS", 5).expect("write");
        store.finish_tick().expect("commit");
        store.set_relay_confirmed("USERBUS", 9).expect("write");
        assert!(
            store
                .write(|c| c.execute_batch("INSERT INTO no_such_table VALUES (1)"))
                .is_err()
        );
        assert!(store.set_relay_confirmed("USERBUS", 10).is_err());
        assert!(store.finish_tick().is_err());
        assert_eq!(store.relay_confirmed("USERBUS").expect("read"), 5);
    }

    #[test]
    fn a_durable_handler_cannot_take_the_relays_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir.path().join("names.db"));
        store.set_relay_confirmed("USERBUS", 3).expect("write");
        store.finish_tick().expect("commit");
        for name in ["relay:USERBUS", "writer", "nats:USERBUS"] {
            assert_eq!(store.handler_offset(name).expect("offset"), 0);
            store.set_handler_offset(name, 99).expect("store");
        }
        assert_eq!(store.relay_confirmed("USERBUS").expect("read"), 3);
        let id = store.writer_id().to_string();
        drop(store);
        assert_eq!(open(&dir.path().join("names.db")).writer_id(), id);
    }

    #[test]
    fn trimming_below_the_relay_position_keeps_every_unconfirmed_event() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = open(&dir.path().join("trim.db"));
        for i in 0..10 {
            store
                .register(&format!("u{i}"), &BTreeMap::new(), 1000)
                .expect("register")
                .expect("new name");
        }
        store.set_relay_confirmed("USERBUS", 4).expect("write");
        store.finish_tick().expect("commit");
        let floor = store.relay_confirmed("USERBUS").expect("read");
        // Keep none by count: only the floor holds events back.
        let removed = store.trim(Some(0), None, floor, 1000).expect("trim");
        assert_eq!(removed, 4);
        let left: Vec<i64> = store
            .events_between(0, i64::MAX, 100, false)
            .expect("read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(left, (5..=10).collect::<Vec<_>>());
    }
}
