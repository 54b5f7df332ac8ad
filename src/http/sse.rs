//! Server-Sent Events: `GET /events` streams the durable log as
//! `id: <seq>` / `event: <kind>` / `data: <event JSON>` frames, starting at
//! `Last-Event-ID` + 1 (a reconnect), `?from=<seq>`, the `?last=<n>` newest
//! events, or live. A stream behind the log catches up from SQLite a batch at a
//! time, paced by what the client reads; a live stream that stops reading is
//! dropped at the subscriber output limits.

use std::time::{Duration, Instant};

use crate::events::Event;

/// Idle time after which a comment line keeps the stream (and proxies) alive.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events read from the log per catch-up step.
pub const CATCH_UP_BATCH: usize = 500;
/// Unsent bytes above which a catching-up stream waits for the client to read.
pub const CATCH_UP_MAX_PENDING: usize = 256 * 1024;

/// Where an event stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseState {
    /// The next sequence number to send.
    pub next_seq: i64,
    /// When something was last written (for heartbeats).
    pub last_write: Instant,
}

/// The response head that opens the stream, and a first comment.
pub fn write_head(out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
          Connection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n: userbus events\n\n",
    );
}

/// One event frame.
pub fn write_event(out: &mut Vec<u8>, event: &Event) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(itoa::Buffer::new().format(event.seq).as_bytes());
    out.extend_from_slice(b"\nevent: ");
    out.extend_from_slice(event.kind.as_str().as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // The JSON has no raw newlines (serde escapes them), so one data line holds it.
    event.write_json(out);
    out.extend_from_slice(b"\n\n");
}

/// A heartbeat comment.
pub fn write_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(b": keep-alive\n\n");
}
