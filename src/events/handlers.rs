//! Handler callbacks an embedding program registered: per kind, for every event,
//! and durable handlers that follow the stored log with an offset of their own.
//!
//! Callbacks run on the reactor thread after the commit, in commit (sequence)
//! order. A panicking callback is logged and isolated.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{Event, EventKind};

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
    updated: Vec<Handler>,
    any: Vec<Handler>,
    /// Durable handlers, run from the stored log rather than from the tick.
    pub durable: Vec<DurableHandler>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("registered", &self.registered.len())
            .field("unregistered", &self.unregistered.len())
            .field("updated", &self.updated.len())
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

    /// Adds a callback for `user.updated`.
    pub fn on_updated(&mut self, h: Handler) {
        self.updated.push(h);
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
            EventKind::Updated => &mut self.updated,
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
