//! Events: what a committed user change looks like to the rest of the world, and
//! the dispatch to the handler callbacks an embedding program registered.
//!
//! Events are collected during a tick and leave only after its commit, in commit
//! (sequence) order. A panicking callback is logged and isolated.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The kind string of a registration event.
pub const REGISTERED: &str = "user.registered";
/// The kind string of an unregistration event.
pub const UNREGISTERED: &str = "user.unregistered";

/// What happened to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `user.registered`
    Registered,
    /// `user.unregistered`
    Unregistered,
}

impl EventKind {
    /// The kind as it appears in the events table and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => REGISTERED,
            EventKind::Unregistered => UNREGISTERED,
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
    /// The user's fields (at registration, or when it was removed).
    pub fields: BTreeMap<String, String>,
    /// When, in Unix milliseconds.
    pub at_ms: i64,
}

impl Event {
    /// The event's JSON payload:
    /// `{"seq":1,"kind":"user.registered","id":1,"name":"alice","fields":{},"at":"..."}`.
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
        out.extend_from_slice(b",\"fields\":");
        let _ = serde_json::to_writer(&mut *out, &self.fields);
        out.extend_from_slice(b",\"at\":\"");
        crate::clock::with_rfc3339(self.at_ms, |at| out.extend_from_slice(at));
        out.extend_from_slice(b"\"}");
    }
}

impl Event {
    /// The event an event-log row records.
    pub fn from_row(row: &crate::store::EventRow) -> Event {
        Event {
            seq: row.seq,
            kind: if row.kind == UNREGISTERED {
                EventKind::Unregistered
            } else {
                EventKind::Registered
            },
            user_id: row.user_id,
            name: row.name.clone(),
            fields: serde_json::from_str(&row.fields).unwrap_or_default(),
            at_ms: row.at,
        }
    }
}

/// A handler callback.
pub type Handler = Box<dyn FnMut(&Event) + Send + 'static>;

/// A handler whose position in the event log is stored in SQLite: it is called
/// for every committed event after its offset, and the offset advances only after
/// it returns, so a crash or restart resumes where it stopped (at-least-once).
pub struct DurableHandler {
    /// Its name, the key of its stored offset.
    pub name: String,
    /// The callback.
    pub callback: Handler,
    /// The last event it returned from.
    pub offset: i64,
    /// After a panic, when to try the same event again.
    pub retry_at: Option<std::time::Instant>,
    /// Panics in a row on the same event (for the back-off).
    pub failures: u32,
}

impl std::fmt::Debug for DurableHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableHandler")
            .field("name", &self.name)
            .field("offset", &self.offset)
            .field("failures", &self.failures)
            .finish()
    }
}

/// Runs `h` on `event`, containing a panic; true when it returned normally.
pub fn call_isolated(h: &mut Handler, event: &Event) -> bool {
    // The callback only sees a shared event; whatever state it keeps is its own.
    catch_unwind(AssertUnwindSafe(|| h(event))).is_ok()
}

/// The callbacks registered per event kind.
#[derive(Default)]
pub struct Handlers {
    registered: Vec<Handler>,
    unregistered: Vec<Handler>,
    any: Vec<Handler>,
    /// Durable handlers, run from the stored log rather than from the tick.
    pub durable: Vec<DurableHandler>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("registered", &self.registered.len())
            .field("unregistered", &self.unregistered.len())
            .field("any", &self.any.len())
            .finish()
    }
}

impl Handlers {
    /// Adds a callback for `user.registered`.
    pub fn on_registered(&mut self, h: Handler) {
        self.registered.push(h);
    }

    /// Adds a callback for `user.unregistered`.
    pub fn on_unregistered(&mut self, h: Handler) {
        self.unregistered.push(h);
    }

    /// Adds a callback for every event.
    pub fn on_event(&mut self, h: Handler) {
        self.any.push(h);
    }

    /// Adds a durable handler named `name` (its offset starts at the end of the log
    /// the first time the name is seen).
    pub fn durable(&mut self, name: String, h: Handler) {
        self.durable.push(DurableHandler {
            name,
            callback: h,
            offset: 0,
            retry_at: None,
            failures: 0,
        });
    }

    /// Runs the callbacks for `event`; returns how many panicked.
    pub fn dispatch(&mut self, event: &Event) -> usize {
        let specific = match event.kind {
            EventKind::Registered => &mut self.registered,
            EventKind::Unregistered => &mut self.unregistered,
        };
        let mut panics = 0;
        for h in specific.iter_mut().chain(self.any.iter_mut()) {
            if !call_isolated(h, event) {
                panics += 1;
                log::error!(
                    "event handler panicked on {} seq={} (isolated; the server goes on)",
                    event.kind.as_str(),
                    event.seq
                );
            }
        }
        panics
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
            at_ms: 0,
        };
        assert_eq!(
            e.to_json(),
            r#"{"seq":3,"kind":"user.registered","id":2,"name":"al\"ice","fields":{"email":"a@x"},"at":"1970-01-01T00:00:00.000Z"}"#
        );
    }
}
