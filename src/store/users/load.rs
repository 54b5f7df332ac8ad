//! Building the user index at start: from the image a clean stop left when it
//! still describes the database, else by scanning the users table.

use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use super::Users;
use super::image::{self, Stamp};
use crate::error::{Error, Result};

/// The user index of the database at `path`, whose writer id, last event seq and
/// next user id `stamp` gives. The image is read once: it is removed whether it
/// served or not, so it can never describe a later state of the database.
pub(in crate::store) fn open_index(conn: &Connection, path: &Path, stamp: &Stamp) -> Result<Users> {
    let started = Instant::now();
    let image_path = image::path_for(path);
    // A stop killed while writing the image leaves its temporary file.
    let _ = std::fs::remove_file(image::tmp_path_for(&image_path));
    match image::read(&image_path, stamp) {
        Ok(Some(users)) => {
            log::info!(
                "user index: {} users from {} in {:?}",
                users.len(),
                image_path.display(),
                started.elapsed()
            );
            return Ok(users);
        }
        Ok(None) => {}
        Err(e) => log::warn!(
            "user index: {} is unreadable ({e}); scanning the users table",
            image_path.display()
        ),
    }
    let users = scan(conn, path, stamp.next_id)?;
    log::info!(
        "user index: {} users from the users table in {:?}",
        users.len(),
        started.elapsed()
    );
    Ok(users)
}

/// Builds the index from the users table; a name found twice (the table was
/// written by something else) is refused. Also used after a fenced node
/// discarded its tail.
pub(in crate::store) fn scan(conn: &Connection, path: &Path, next_id: i64) -> Result<Users> {
    // Ids are never reused, so the next id bounds the count: the tables are sized
    // once and never grow while loading, and shrink back if many users are gone.
    let bound = usize::try_from(next_id.saturating_sub(1)).unwrap_or(0);
    let mut users = Users::with_capacity(next_id, bound);
    let mut stmt = conn.prepare("SELECT id, name, fields, created_at FROM users")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        // Borrowed from the row: no allocation per user.
        let name = text(row, 1, path, id)?;
        let fields = text(row, 2, path, id)?;
        let created_at: i64 = row.get(3)?;
        let unreadable = |e: serde_json::Error| {
            Error::Config(format!(
                "{}: user {id} ('{name}') has unreadable fields: {e}",
                path.display()
            ))
        };
        // Borrowed strings when the JSON has no escapes (the usual case), owned
        // ones otherwise.
        let loaded = match serde_json::from_str::<BTreeMap<&str, &str>>(fields) {
            Ok(map) => users.load(id, name, map.iter().map(|(k, v)| (*k, *v)), created_at),
            Err(_) => {
                let map: BTreeMap<String, String> =
                    serde_json::from_str(fields).map_err(unreadable)?;
                let pairs = map.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                users.load(id, name, pairs, created_at)
            }
        };
        if !loaded {
            return Err(Error::Config(format!(
                "{}: the users table holds the name '{name}' twice (id {id}); \
                 names must be unique",
                path.display()
            )));
        }
    }
    users.shrink_sparse();
    Ok(users)
}

/// Column `idx` of `row` (user `id`) as text, borrowed.
fn text<'r>(row: &'r rusqlite::Row<'_>, idx: usize, path: &Path, id: i64) -> Result<&'r str> {
    row.get_ref(idx)?.as_str().map_err(|e| {
        Error::Config(format!(
            "{}: user {id} has an unreadable column {idx}: {e}",
            path.display()
        ))
    })
}
