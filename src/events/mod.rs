//! Events: what a committed user change looks like to the rest of the world.
//!
//! Events are collected during a tick and leave only after its commit, in commit
//! (sequence) order, to three kinds of listener:
//! - [`handlers`]: the callbacks an embedding program registered, and durable
//!   handlers that follow the stored log;
//! - [`pubsub`]: live subscribers of channels and patterns (at-most-once);
//! - [`stream`]: readers of the durable log as the Redis stream `events`
//!   (XREAD, consumer groups).

use std::collections::BTreeMap;

pub mod handlers;
pub mod pubsub;
pub mod stream;

pub use handlers::{Handlers, call_isolated};
pub use pubsub::PubSub;

use crate::store::event_log::{REGISTERED, UNREGISTERED, UPDATED};
use crate::store::{EventRef, EventRow};

/// What happened to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `user.registered`
    Registered,
    /// `user.unregistered`
    Unregistered,
    /// `user.updated`: fields set or removed (`UPDATE`, `DELFIELDS`, `PATCH`).
    Updated,
}

impl EventKind {
    /// The kind as it appears in the events table and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => REGISTERED,
            EventKind::Unregistered => UNREGISTERED,
            EventKind::Updated => UPDATED,
        }
    }
}

/// One committed user change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Durable position in the event log; never repeats.
    pub seq: i64,
    /// What happened.
    pub kind: EventKind,
    /// The user's id.
    pub user_id: i64,
    /// The user's name.
    pub name: String,
    /// The user's fields (at registration, when it was removed, or after an update).
    pub fields: BTreeMap<String, String>,
    /// A `user.updated` event's fields before the change; `None` for the other kinds.
    pub before: Option<BTreeMap<String, String>>,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
}

impl Event {
    /// An update's fields that were added or changed value, with their new values
    /// (empty for the other kinds).
    pub fn set_fields(&self) -> BTreeMap<&str, &str> {
        let Some(before) = &self.before else {
            return BTreeMap::new();
        };
        self.fields
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(*v))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// An update's fields that were removed, in name order (empty for the other
    /// kinds).
    pub fn removed_fields(&self) -> Vec<&str> {
        let Some(before) = &self.before else {
            return Vec::new();
        };
        before
            .keys()
            .filter(|k| !self.fields.contains_key(*k))
            .map(String::as_str)
            .collect()
    }

    /// The event's JSON payload:
    /// `{"seq":1,"kind":"user.registered","id":1,"name":"alice","fields":{},"at":"..."}`;
    /// a `user.updated` event also has `set` (added or changed fields) and
    /// `removed` before `fields`, and `before` after it.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(128);
        self.write_json(&mut out);
        // serde_json writes UTF-8, and the rest is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends [`Event::to_json`]'s text to `out`, with no allocation of its own
    /// (pushes and event streams write it straight into an output buffer).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Written by hand to keep the documented key order; serde_json escapes the
        // strings. Serializing a string into a Vec cannot fail.
        let mut num = itoa::Buffer::new();
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(num.format(self.seq).as_bytes());
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\",\"id\":");
        out.extend_from_slice(num.format(self.user_id).as_bytes());
        out.extend_from_slice(b",\"name\":");
        let _ = serde_json::to_writer(&mut *out, &self.name);
        if self.before.is_some() {
            out.extend_from_slice(b",\"set\":");
            let _ = serde_json::to_writer(&mut *out, &self.set_fields());
            out.extend_from_slice(b",\"removed\":");
            let _ = serde_json::to_writer(&mut *out, &self.removed_fields());
        }
        out.extend_from_slice(b",\"fields\":");
        let _ = serde_json::to_writer(&mut *out, &self.fields);
        if let Some(before) = &self.before {
            out.extend_from_slice(b",\"before\":");
            let _ = serde_json::to_writer(&mut *out, before);
        }
        out.extend_from_slice(b",\"at\":\"");
        crate::clock::with_rfc3339(self.at_ms, |at| out.extend_from_slice(at));
        out.extend_from_slice(b"\"}");
    }
}

/// Why an event's JSON could not be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(pub String);

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable event JSON: {}", self.0)
    }
}

impl std::error::Error for JsonError {}

impl Event {
    /// Reads back the JSON [`Event::write_json`] writes (a follower reads it from
    /// the JetStream stream). Unknown keys are ignored, and so are an update's `set`
    /// and `removed`, which follow from `before` and `fields`; a missing key (`before`
    /// for `user.updated`), an unknown kind or a time not in `write_json`'s form is
    /// an error.
    pub fn from_json(json: &[u8]) -> Result<Event, JsonError> {
        #[derive(serde::Deserialize)]
        struct Wire {
            seq: i64,
            kind: String,
            id: i64,
            name: String,
            fields: BTreeMap<String, String>,
            #[serde(default)]
            before: Option<BTreeMap<String, String>>,
            at: String,
        }
        let w: Wire = serde_json::from_slice(json).map_err(|e| JsonError(e.to_string()))?;
        let kind = match w.kind.as_str() {
            REGISTERED => EventKind::Registered,
            UNREGISTERED => EventKind::Unregistered,
            UPDATED => EventKind::Updated,
            other => return Err(JsonError(format!("unknown kind '{other}'"))),
        };
        let before = match (kind, w.before) {
            (EventKind::Updated, None) => {
                return Err(JsonError("a user.updated event without 'before'".into()));
            }
            (EventKind::Updated, before) => before,
            _ => None,
        };
        let at_ms = crate::clock::parse_rfc3339(&w.at)
            .ok_or_else(|| JsonError(format!("time '{}' is not RFC 3339 UTC", w.at)))?;
        Ok(Event {
            seq: w.seq,
            kind,
            user_id: w.id,
            name: w.name,
            fields: w.fields,
            before,
            at_ms,
        })
    }

    /// The event an event-log row records.
    pub fn from_row(row: &EventRow) -> Event {
        Event::from_ref(row.view())
    }

    /// The event a borrowed event-log row records.
    pub fn from_ref(row: EventRef<'_>) -> Event {
        Event {
            seq: row.seq,
            kind: match row.kind {
                UNREGISTERED => EventKind::Unregistered,
                UPDATED => EventKind::Updated,
                _ => EventKind::Registered,
            },
            user_id: row.user_id,
            name: row.name.to_string(),
            fields: serde_json::from_str(row.fields).unwrap_or_default(),
            before: (row.kind == UPDATED).then(|| {
                row.before
                    .and_then(|b| serde_json::from_str(b).ok())
                    .unwrap_or_default()
            }),
            at_ms: row.at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_payload_has_the_documented_shape() {
        let e = Event {
            seq: 3,
            kind: EventKind::Registered,
            user_id: 2,
            name: "al\"ice".into(),
            fields: [("email".to_string(), "a@x".to_string())].into(),
            before: None,
            at_ms: 0,
        };
        assert_eq!(
            e.to_json(),
            r#"{"seq":3,"kind":"user.registered","id":2,"name":"al\"ice","fields":{"email":"a@x"},"at":"1970-01-01T00:00:00.000Z"}"#
        );
    }

    #[test]
    fn json_reads_back_into_the_same_event() {
        for (kind, name) in [
            (EventKind::Registered, "al\"ice\u{e9}"),
            (EventKind::Unregistered, "bob"),
        ] {
            let e = Event {
                seq: 42,
                kind,
                user_id: 7,
                name: name.into(),
                fields: [("plan".to_string(), "pro \n \u{1f600}".to_string())].into(),
                before: None,
                at_ms: 1_796_025_725_123,
            };
            assert_eq!(Event::from_json(e.to_json().as_bytes()), Ok(e));
        }
        for bad in [
            &b"{}"[..],
            br#"{"seq":1,"kind":"user.renamed","id":1,"name":"a","fields":{},"at":"1970-01-01T00:00:00.000Z"}"#,
            br#"{"seq":1,"kind":"user.registered","id":1,"name":"a","fields":{},"at":"yesterday"}"#,
            b"not json",
            br#"{"seq":1,"kind":"user.updated","id":1,"name":"a","fields":{},"at":"1970-01-01T00:00:00.000Z"}"#,
        ] {
            assert!(Event::from_json(bad).is_err(), "{bad:?}");
        }
    }

    fn update_event() -> Event {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Event {
            seq: 9,
            kind: EventKind::Updated,
            user_id: 4,
            name: "ann".into(),
            fields: map(&[("email", "new@x"), ("plan", "pro"), ("tz", "CET")]),
            before: Some(map(&[
                ("city", "Oslo"),
                ("email", "old@x"),
                ("plan", "pro"),
            ])),
            at_ms: 0,
        }
    }

    #[test]
    fn an_update_carries_what_was_set_and_removed_and_the_fields_before() {
        assert_eq!(
            update_event().to_json(),
            r#"{"seq":9,"kind":"user.updated","id":4,"name":"ann","set":{"email":"new@x","tz":"CET"},"removed":["city"],"fields":{"email":"new@x","plan":"pro","tz":"CET"},"before":{"city":"Oslo","email":"old@x","plan":"pro"},"at":"1970-01-01T00:00:00.000Z"}"#
        );
    }

    #[test]
    fn an_update_reads_back_into_the_same_event() {
        let e = update_event();
        assert_eq!(Event::from_json(e.to_json().as_bytes()), Ok(e));
    }
}
