//! The registry's operations, shared by the RESP commands and the HTTP routes: the
//! naming rules, and registering, updating or unregistering a user together with
//! its event.
//!
//! Error texts here carry no protocol prefix; RESP replies add `ERR `, HTTP puts
//! them in a JSON body.

use std::collections::BTreeMap;

use crate::config::{MAX_FIELD_NAME_BYTES, MAX_FIELD_VALUE_BYTES, MAX_FIELDS, MAX_NAME_BYTES};
use crate::events::{Event, EventKind};
use crate::metrics::Stats;
use crate::store::unique::Taken;
use crate::store::{StorageError, Store};

/// Why a write that checks the registry's rules was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// Storage failed; the tick is lost.
    Storage(StorageError),
    /// A unique field's value is held by another user (`--unique-field`).
    Taken(Taken),
    /// The change would leave the user more than `MAX_FIELDS` fields.
    TooManyFields,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Storage(e) => write!(f, "storage: {e}"),
            WriteError::Taken(t) => t.fmt(f),
            WriteError::TooManyFields => write!(f, "too many fields: at most {MAX_FIELDS}"),
        }
    }
}

impl From<StorageError> for WriteError {
    fn from(e: StorageError) -> Self {
        WriteError::Storage(e)
    }
}

/// Checks a user name: 1 to 64 bytes of UTF-8, no whitespace or control characters.
pub fn check_name(raw: &[u8]) -> Result<&str, &'static str> {
    check_token(
        raw,
        MAX_NAME_BYTES,
        "invalid name: must be 1 to 64 bytes",
        "invalid name: must be valid UTF-8",
        "invalid name: must not contain whitespace or control characters",
    )
}

/// Checks a field name with the same rules as user names.
pub fn check_field_name(raw: &[u8]) -> Result<&str, &'static str> {
    check_token(
        raw,
        MAX_FIELD_NAME_BYTES,
        "invalid field name: must be 1 to 64 bytes",
        "invalid field name: must be valid UTF-8",
        "invalid field name: must not contain whitespace or control characters",
    )
}

fn check_token<'b>(
    raw: &'b [u8],
    max: usize,
    too_long: &'static str,
    not_utf8: &'static str,
    bad_char: &'static str,
) -> Result<&'b str, &'static str> {
    if raw.is_empty() || raw.len() > max {
        return Err(too_long);
    }
    // ASCII, the usual case: whitespace and control characters are the bytes up to
    // the space, and DEL.
    if raw.is_ascii() {
        if raw.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(bad_char);
        }
        return std::str::from_utf8(raw).map_err(|_| not_utf8);
    }
    let s = std::str::from_utf8(raw).map_err(|_| not_utf8)?;
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad_char);
    }
    Ok(s)
}

/// Checks `count` (field, value) pairs: at most 32, names by the naming rules,
/// values UTF-8 of at most 4096 bytes. A field given twice keeps its last value.
pub fn check_fields<'a>(
    count: usize,
    pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<BTreeMap<String, String>, String> {
    if count > MAX_FIELDS {
        return Err(format!("too many fields: at most {MAX_FIELDS}"));
    }
    let mut fields = BTreeMap::new();
    for (k, v) in pairs {
        let k = check_field_name(k).map_err(str::to_string)?;
        if v.len() > MAX_FIELD_VALUE_BYTES {
            return Err(format!(
                "invalid field value for '{k}': at most {MAX_FIELD_VALUE_BYTES} bytes"
            ));
        }
        let v = std::str::from_utf8(v)
            .map_err(|_| format!("invalid field value for '{k}': must be valid UTF-8"))?;
        fields.insert(k.to_string(), v.to_string());
    }
    Ok(fields)
}

/// Registers `name` (already checked) in the tick's transaction and queues its
/// event. `Ok(None)` when the name is taken; [`WriteError::Taken`] when a unique
/// field's value is another user's (checked only for a free name).
pub fn register(
    store: &mut Store,
    events: &mut Vec<Event>,
    stats: &mut Stats,
    name: &str,
    fields: BTreeMap<String, String>,
) -> Result<Option<i64>, WriteError> {
    let now = crate::clock::now_ms();
    // Refused for a free name only; the conflict is asked first, being rare
    // (and never there without unique fields).
    if let Some(taken) = store.unique_conflict(name, &fields)
        && store.lookup(name)?.is_none()
    {
        return Err(WriteError::Taken(taken));
    }
    let Some(change) = store.register(name, &fields, now)? else {
        return Ok(None);
    };
    stats.tick_registrations += 1;
    events.push(Event {
        seq: change.seq,
        kind: EventKind::Registered,
        user_id: change.user_id,
        name: name.to_string(),
        fields,
        before: None,
        at_ms: now,
    });
    Ok(Some(change.user_id))
}

/// What an update changes: fields to set, then fields to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldChanges {
    /// Fields to add or give a new value (already checked).
    pub set: BTreeMap<String, String>,
    /// Fields to remove (absent ones are ignored).
    pub remove: Vec<String>,
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Updated {
    /// No such user.
    Unknown,
    /// The user exists and already had those fields: nothing written, no event.
    Unchanged,
    /// The fields changed, with a `user.updated` event; how many fields went.
    Changed {
        /// Fields removed.
        removed: usize,
    },
}

/// Sets and removes fields of `name` (already checked) in the tick's transaction
/// and queues its `user.updated` event, unless nothing changes. The user keeps
/// its id. The result may hold at most `MAX_FIELDS` fields, and no unique value
/// another user holds.
pub fn update(
    store: &mut Store,
    events: &mut Vec<Event>,
    stats: &mut Stats,
    name: &str,
    changes: &FieldChanges,
) -> Result<Updated, WriteError> {
    let Some(user) = store.lookup(name)? else {
        return Ok(Updated::Unknown);
    };
    let before = user.fields.to_map();
    let mut after = before.clone();
    for (k, v) in &changes.set {
        after.insert(k.clone(), v.clone());
    }
    let mut removed = 0;
    for k in &changes.remove {
        removed += usize::from(after.remove(k).is_some());
    }
    if after == before {
        return Ok(Updated::Unchanged);
    }
    if after.len() > MAX_FIELDS {
        return Err(WriteError::TooManyFields);
    }
    if let Some(taken) = store.unique_conflict(name, &after) {
        return Err(WriteError::Taken(taken));
    }
    let now = crate::clock::now_ms();
    let Some((change, before)) = store.update_fields(name, &after, now)? else {
        return Ok(Updated::Unknown);
    };
    stats.tick_updates += 1;
    events.push(Event {
        seq: change.seq,
        kind: EventKind::Updated,
        user_id: change.user_id,
        name: name.to_string(),
        fields: after,
        before: Some(before),
        at_ms: now,
    });
    Ok(Updated::Changed { removed })
}

/// Unregisters `name` in the tick's transaction and queues its event. `Ok(false)`
/// when there was no such user.
pub fn unregister(
    store: &mut Store,
    events: &mut Vec<Event>,
    stats: &mut Stats,
    name: &str,
) -> Result<bool, StorageError> {
    let now = crate::clock::now_ms();
    let Some((change, fields)) = store.unregister(name, now)? else {
        return Ok(false);
    };
    stats.tick_unregistrations += 1;
    events.push(Event {
        seq: change.seq,
        kind: EventKind::Unregistered,
        user_id: change.user_id,
        name: name.to_string(),
        fields,
        before: None,
        at_ms: now,
    });
    Ok(true)
}

/// One step of a USERS iteration (RESP `USERS`, HTTP `GET /users`).
#[derive(Debug)]
pub struct UsersPage {
    /// The cursor to continue from; 0 when the iteration is complete.
    pub next: i64,
    /// The names examined that match the pattern, in id order.
    pub names: Vec<String>,
}

/// Examines up to `count` users after cursor `cursor` (a user id) and keeps those
/// whose names match `pattern`. A page may be empty while the cursor is not 0.
pub fn users_page(
    store: &mut Store,
    cursor: i64,
    count: usize,
    pattern: Option<&[u8]>,
) -> Result<UsersPage, StorageError> {
    let rows = store.scan(cursor, count)?;
    let next = if rows.len() < count {
        0
    } else {
        rows.last().map_or(0, |(id, _)| *id)
    };
    let names = rows
        .into_iter()
        .map(|(_, name)| name)
        .filter(|name| pattern.is_none_or(|p| crate::glob::matches(p, name.as_bytes())))
        .collect();
    Ok(UsersPage { next, names })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_path_follows_the_character_rule() {
        for b in 0u8..128 {
            let c = char::from(b);
            let refused = c.is_whitespace() || c.is_control();
            let name = [b'a', b, b'z'];
            assert_eq!(check_name(&name).is_err(), refused, "byte {b:#04x}");
        }
        assert!(check_name("é\u{85}".as_bytes()).is_err(), "NEL is refused");
        assert_eq!(check_name("名前".as_bytes()), Ok("名前"));
    }
}
