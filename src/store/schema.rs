//! The database's shape: the tables, `SCHEMA_VERSION` (`PRAGMA user_version`),
//! the migrations from older versions, and the checks that opening a database
//! runs before the first tick.

use rusqlite::{Connection, OptionalExtension};

use super::webhooks::SCHEMA_V6;
use crate::error::{Error, Result};

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 6;

/// The users table since version 3: no UNIQUE index on names. The store's
/// in-memory index (`store::users`) keeps names unique, so a registration costs two
/// appends (its user row and its event row, each at the end of its B-tree) rather
/// than also a random insert into a name index. Rows are read by id (USERS) or all
/// at start.
const USERS_V3: &str = "
CREATE TABLE users (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,   -- unique: kept so by the server, checked at start
    fields     TEXT    NOT NULL,   -- JSON object of string values
    created_at INTEGER NOT NULL    -- Unix milliseconds
);
";

/// The events table, unchanged since version 1 (whose users table had a UNIQUE
/// name).
const EVENTS_V1: &str = "
CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT    NOT NULL,      -- user.registered | user.unregistered
    user_id INTEGER NOT NULL,
    name    TEXT    NOT NULL,
    fields  TEXT    NOT NULL,      -- the user's fields at the time of the event
    at      INTEGER NOT NULL       -- Unix milliseconds
);
";

/// Consumer groups of the `events` stream, their consumers and pending entries,
/// dead letters, and the offsets of durable handlers.
const SCHEMA_V2: &str = "
CREATE TABLE stream_groups (
    name           TEXT    PRIMARY KEY,
    last_delivered INTEGER NOT NULL,   -- seq of the last entry delivered to the group
    entries_read   INTEGER NOT NULL,   -- entries delivered to the group so far
    created_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE stream_consumers (
    grp       TEXT    NOT NULL,
    name      TEXT    NOT NULL,
    seen_at   INTEGER NOT NULL,        -- last interaction, Unix ms
    active_at INTEGER,                 -- last successful read or claim, Unix ms
    PRIMARY KEY (grp, name)
) WITHOUT ROWID;
CREATE TABLE stream_pending (
    grp          TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    consumer     TEXT    NOT NULL,
    delivered_at INTEGER NOT NULL,     -- last delivery, Unix ms
    deliveries   INTEGER NOT NULL,
    PRIMARY KEY (grp, seq)
) WITHOUT ROWID;
CREATE INDEX stream_pending_by_consumer ON stream_pending (grp, consumer, seq);
CREATE TABLE dead_letters (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,  -- entry id in events.dead
    event_seq  INTEGER NOT NULL,
    grp        TEXT    NOT NULL,
    consumer   TEXT    NOT NULL,
    deliveries INTEGER NOT NULL,
    at         INTEGER NOT NULL
);
CREATE TABLE handler_offsets (
    name TEXT    PRIMARY KEY,
    seq  INTEGER NOT NULL               -- last event the handler returned from
) WITHOUT ROWID;
";

/// Since version 4: facts about the database itself (`store::meta`), and its
/// writer id, made once here. SQLite's `randomblob` draws from its own generator,
/// which the OS seeds (`/dev/urandom`): 64 random bits tell writers apart without
/// a dependency or a round trip through Rust.
const SCHEMA_V4: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,            -- 'writer', 'relay:<stream>'
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('writer', lower(hex(randomblob(8))));
";

/// Since version 5: a `user.updated` event's fields before the change (NULL for
/// the other kinds), so that a consumer can diff and a fenced primary can undo it.
/// `fields` holds the fields after it.
const SCHEMA_V5: &str = "
ALTER TABLE events ADD COLUMN before_fields TEXT;
";

/// Version 2 to 3: rebuilds the users table without its UNIQUE name index.
const MIGRATE_V3: &str = "
ALTER TABLE users RENAME TO users_v2;
{USERS_V3}
INSERT INTO users (id, name, fields, created_at)
    SELECT id, name, fields, created_at FROM users_v2 ORDER BY id;
DROP TABLE users_v2;
";

/// The highest user id ever assigned, as AUTOINCREMENT remembers it (`None` before
/// the first user).
pub(super) fn highest_user_id(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = 'users'",
        [],
        |r| r.get(0),
    )
    .optional()
}

/// The highest event seq ever assigned, as AUTOINCREMENT remembers it (0 before
/// the first event): it stays when the oldest events are trimmed, so seqs never
/// repeat.
pub(super) fn last_event_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT seq FROM sqlite_sequence WHERE name = 'events'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(Option::unwrap_or_default)
}

/// Brings the database to `SCHEMA_VERSION`, in one transaction per step; a newer
/// schema is refused.
pub(super) fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        // A fresh database gets the current schema in one step.
        conn.execute_batch(&format!(
            "BEGIN; {USERS_V3} {EVENTS_V1} {SCHEMA_V2} {SCHEMA_V4} {SCHEMA_V5} {SCHEMA_V6} \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
        log::info!("created schema version {SCHEMA_VERSION}");
        return Ok(());
    }
    if version < 2 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V2} PRAGMA user_version = 2; COMMIT;"
        ))?;
        log::info!("migrated schema to version 2");
    }
    if version < 3 {
        // AUTOINCREMENT's counter goes with the old table: carry it over so ids
        // of removed users are never handed out again.
        let keep = highest_user_id(conn)?.map_or(String::new(), |h| {
            format!(
                "DELETE FROM sqlite_sequence WHERE name = 'users'; \
                 INSERT INTO sqlite_sequence (name, seq) VALUES ('users', {h});"
            )
        });
        let rebuild = MIGRATE_V3.replace("{USERS_V3}", USERS_V3);
        conn.execute_batch(&format!(
            "BEGIN; {rebuild} {keep} PRAGMA user_version = 3; COMMIT;"
        ))?;
        log::info!("migrated schema to version 3 (users without a name index)");
    }
    if version < 4 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V4} PRAGMA user_version = 4; COMMIT;"
        ))?;
        log::info!("migrated schema to version 4 (meta, with the writer id)");
    }
    if version < 5 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V5} PRAGMA user_version = 5; COMMIT;"
        ))?;
        log::info!("migrated schema to version 5 (events.before_fields, for user.updated)");
    }
    if version < 6 {
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA_V6} PRAGMA user_version = 6; COMMIT;"
        ))?;
        log::info!("migrated schema to version 6 (webhooks and their dead letters)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use std::path::Path;

    use super::*;
    use crate::config::Durability;
    use crate::store::Store;

    fn open(path: &Path) -> Store {
        Store::open(path, Durability::Normal, 0).expect("open")
    }

    fn user_version(path: &Path) -> i64 {
        let conn = Connection::open(path).expect("open");
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version")
    }

    #[test]
    fn a_version_3_database_gets_a_writer_id_and_keeps_its_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("v3.db");
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(&format!(
            "{} {} {}
             INSERT INTO users VALUES (1, 'alice', '{{}}', 1000);
             INSERT INTO events (kind, user_id, name, fields, at)
                 VALUES ('user.registered', 1, 'alice', '{{}}', 1000);
             INSERT INTO handler_offsets VALUES ('mailer', 1);
             PRAGMA user_version = 3;",
            USERS_V3, EVENTS_V1, SCHEMA_V2,
        ))
        .expect("version 3 schema");
        drop(conn);
        let mut store = open(&db);
        assert_eq!(user_version(&db), SCHEMA_VERSION);
        let id = store.writer_id().to_string();
        assert_eq!(id.len(), 16, "{id}");
        assert!(store.lookup("alice").expect("lookup").is_some());
        assert_eq!(store.committed_counts().last_seq, 1);
        assert_eq!(store.handler_offset("mailer").expect("offset"), 1);
        assert_eq!(store.relay_confirmed("USERBUS").expect("position"), 0);
        drop(store);
        assert_eq!(open(&db).writer_id(), id, "the migrated id changed");
    }

    #[test]
    fn a_version_4_database_gets_the_before_column_and_keeps_its_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("v4.db");
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(&format!(
            "{} {} {} {}
             INSERT INTO users VALUES (1, 'alice', '{{\"plan\":\"pro\"}}', 1000);
             INSERT INTO events (kind, user_id, name, fields, at)
                 VALUES ('user.registered', 1, 'alice', '{{\"plan\":\"pro\"}}', 1000);
             PRAGMA user_version = 4;",
            USERS_V3, EVENTS_V1, SCHEMA_V2, SCHEMA_V4,
        ))
        .expect("version 4 schema");
        drop(conn);
        let mut store = open(&db);
        assert_eq!(user_version(&db), SCHEMA_VERSION);
        let rows = store
            .events_between(0, i64::MAX, 10, false)
            .expect("read the log");
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].kind.as_str(), rows[0].before.as_deref()),
            ("user.registered", None)
        );
        let before: std::collections::BTreeMap<String, String> =
            [("plan".to_string(), "pro".to_string())].into();
        let after = [("plan".to_string(), "team".to_string())].into();
        let change = store
            .update_fields("alice", &after, 2000)
            .expect("update")
            .expect("known");
        assert_eq!(change.1, before);
        store.finish_tick().expect("commit");
        drop(store);
        let mut store = open(&db);
        let rows = store.events_between(2, 2, 1, false).expect("read");
        assert_eq!(rows[0].before.as_deref(), Some(r#"{"plan":"pro"}"#));
        assert_eq!(rows[0].fields, r#"{"plan":"team"}"#);
    }

    #[test]
    fn a_version_5_database_gets_the_webhook_tables_and_keeps_its_users() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("v5.db");
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(&format!(
            "{} {} {} {} {}
             INSERT INTO users VALUES (1, 'alice', '{{}}', 1000);
             INSERT INTO events (kind, user_id, name, fields, at)
                 VALUES ('user.registered', 1, 'alice', '{{}}', 1000);
             PRAGMA user_version = 5;",
            USERS_V3, EVENTS_V1, SCHEMA_V2, SCHEMA_V4, SCHEMA_V5,
        ))
        .expect("version 5 schema");
        drop(conn);
        let mut store = open(&db);
        assert_eq!(user_version(&db), SCHEMA_VERSION);
        assert!(store.lookup("alice").expect("lookup").is_some());
        assert!(store.webhooks().expect("no webhooks yet").is_empty());
        let id = store
            .webhook_add("https://example.com/hook", "whsec_x", "*", 2000)
            .expect("add");
        store.finish_tick().expect("commit");
        let w = store.webhook(id).expect("read").expect("added");
        assert_eq!(
            w.state.position, 1,
            "a new endpoint starts after the last event"
        );
    }
}
