//! The durable event log seen as a Redis stream named `events`: entry ids are
//! `<seq>-0`, entry fields `kind`, `id`, `name`, `fields` (JSON) and `at`
//! (RFC 3339). This module maps stream ids onto sequence numbers and encodes
//! entries; the commands live in `cmd/x*.rs`.

use crate::protocol::Reply;
use crate::store::DeadLetter;
use crate::store::{EventRef, EventRow};

/// The stream of committed events.
pub const EVENTS_KEY: &[u8] = b"events";
/// The stream of dead letters (entries delivered too often to a group).
pub const DEAD_KEY: &[u8] = b"events.dead";

/// Redis's reply to an id it cannot parse.
pub const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// Which stream a command named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `events`
    Events,
    /// `events.dead` (empty until dead letters are produced)
    Dead,
}

/// Resolves a key, or the error naming the streams that exist.
pub fn stream(key: &[u8]) -> Result<Stream, String> {
    match key {
        EVENTS_KEY => Ok(Stream::Events),
        DEAD_KEY => Ok(Stream::Dead),
        _ => Err(format!(
            "ERR no such stream '{}': userbus streams are 'events' and 'events.dead'",
            String::from_utf8_lossy(key)
        )),
    }
}

/// Parses `ms` or `ms-seq` as Redis stream ids are written.
fn parse_id(arg: &[u8]) -> Option<(u64, Option<u64>)> {
    let text = std::str::from_utf8(arg).ok()?;
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    match text.split_once('-') {
        Some((ms, seq)) => Some((num(ms)?, Some(num(seq)?))),
        None => Some((num(text)?, None)),
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The lowest sequence number an XRANGE start argument includes
/// (`-`, `id`, `(id`).
pub fn range_start(arg: &[u8]) -> Result<i64, &'static str> {
    match arg {
        b"-" => return Ok(0),
        // A start of `+` (as XREVRANGE - + gives) is past every entry.
        b"+" => return Ok(i64::MAX),
        _ => {}
    }
    let (exclusive, id) = match arg.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    let (ms, seq) = parse_id(id).ok_or(INVALID_ID)?;
    let ms = clamp(ms);
    // Entries are `<n>-0`: anything above `ms-0` starts at the next number.
    Ok(if exclusive || seq.unwrap_or(0) > 0 {
        ms.saturating_add(1)
    } else {
        ms
    })
}

/// The highest sequence number an XRANGE end argument includes (`+`, `id`, `(id`).
pub fn range_end(arg: &[u8]) -> Result<i64, &'static str> {
    match arg {
        b"+" => return Ok(i64::MAX),
        // An end of `-` is before every entry.
        b"-" => return Ok(-1),
        _ => {}
    }
    let (exclusive, id) = match arg.strip_prefix(b"(") {
        Some(rest) => (true, rest),
        None => (false, arg),
    };
    let (ms, seq) = parse_id(id).ok_or(INVALID_ID)?;
    let ms = clamp(ms);
    // Only `(n-0` (or `(n` with an explicit 0) excludes entry n itself.
    Ok(if exclusive && seq == Some(0) {
        ms - 1
    } else {
        ms
    })
}

/// XREAD's id: entries strictly after it are returned; the result is the last
/// sequence number *not* wanted.
pub fn read_after(arg: &[u8], last_seq: i64) -> Result<i64, &'static str> {
    if arg == b"$" {
        return Ok(last_seq);
    }
    let (ms, _) = parse_id(arg).ok_or(INVALID_ID)?;
    Ok(clamp(ms))
}

/// A stream id as text: `<seq>-0`.
pub fn id_text(seq: i64) -> String {
    with_id(seq, |id| String::from_utf8_lossy(id).into_owned())
}

/// Writes a stream id as a bulk string.
pub fn write_id(out: &mut Reply<'_>, seq: i64) {
    with_id(seq, |id| out.bulk(id));
}

/// Runs `f` on [`id_text`]'s bytes, written on the stack.
fn with_id<R>(seq: i64, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut num = itoa::Buffer::new();
    let digits = num.format(seq).as_bytes();
    // An i64 takes at most 20 characters.
    let mut id = [0u8; 22];
    let len = digits.len() + 2;
    id[..digits.len()].copy_from_slice(digits);
    id[digits.len()..len].copy_from_slice(b"-0");
    f(&id[..len])
}

/// Parses a single id (no `-`/`+`/`(`), as XACK and XCLAIM take them.
pub fn exact_id(arg: &[u8]) -> Result<i64, &'static str> {
    let (ms, _) = parse_id(arg).ok_or(INVALID_ID)?;
    Ok(clamp(ms))
}

/// Writes one entry: `[id, [kind, .., id, .., name, .., fields, .., at, ..]]`; a
/// `user.updated` entry goes on with `set, .., removed, .., before, ..` (JSON, as
/// in the event's payload).
pub fn write_entry(out: &mut Reply<'_>, row: EventRef<'_>) {
    out.array(2);
    write_id(out, row.seq);
    out.array(if row.before.is_some() { 16 } else { 10 });
    out.bulk(b"kind");
    out.bulk(row.kind.as_bytes());
    out.bulk(b"id");
    out.bulk_int(row.user_id);
    out.bulk(b"name");
    out.bulk(row.name.as_bytes());
    out.bulk(b"fields");
    out.bulk(row.fields.as_bytes());
    out.bulk(b"at");
    crate::clock::with_rfc3339(row.at, |b| out.bulk(b));
    if let Some(before) = row.before {
        let event = crate::events::Event::from_ref(row);
        // Serializing string maps and lists cannot fail.
        let set = serde_json::to_string(&event.set_fields()).unwrap_or_default();
        let removed = serde_json::to_string(&event.removed_fields()).unwrap_or_default();
        out.bulk(b"set");
        out.bulk(set.as_bytes());
        out.bulk(b"removed");
        out.bulk(removed.as_bytes());
        out.bulk(b"before");
        out.bulk(before.as_bytes());
    }
}

/// Writes one `events.dead` entry: `[id, [event, <id>, group, .., consumer, ..,
/// deliveries, .., at, .., kind, .., id, .., name, .., fields, ..]]` (the last four
/// while the event is still in the log).
pub fn write_dead_entry(out: &mut Reply<'_>, dead: &DeadLetter, event: Option<&EventRow>) {
    out.array(2);
    write_id(out, dead.seq);
    out.array(if event.is_some() { 18 } else { 10 });
    out.bulk(b"event");
    write_id(out, dead.event_seq);
    out.bulk(b"group");
    out.bulk(dead.group.as_bytes());
    out.bulk(b"consumer");
    out.bulk(dead.consumer.as_bytes());
    out.bulk(b"deliveries");
    out.bulk_int(dead.deliveries);
    out.bulk(b"at");
    crate::clock::with_rfc3339(dead.at, |b| out.bulk(b));
    if let Some(ev) = event {
        out.bulk(b"kind");
        out.bulk(ev.kind.as_bytes());
        out.bulk(b"id");
        out.bulk_int(ev.user_id);
        out.bulk(b"name");
        out.bulk(ev.name.as_bytes());
        out.bulk(b"fields");
        out.bulk(ev.fields.as_bytes());
    }
}

/// Writes entries that may have been trimmed from the log: `[id, nil]` for those.
pub fn write_delivered(out: &mut Reply<'_>, rows: &[(i64, Option<EventRow>)]) {
    out.array(rows.len());
    for (seq, row) in rows {
        match row {
            Some(row) => write_entry(out, row.view()),
            None => {
                out.array(2);
                write_id(out, *seq);
                out.null_array();
            }
        }
    }
}

/// Writes the `[[key, entries]]` (RESP2) or `{key: entries}` (RESP3) frame of
/// XREAD and XREADGROUP; the caller writes the entries array after it.
pub fn write_read_header(out: &mut Reply<'_>, key: &[u8]) {
    if out.resp3() {
        out.map(1);
    } else {
        out.array(1);
        out.array(2);
    }
    out.bulk(key);
}

/// Writes an array of the entries `entries` writes (returning how many), its
/// header put in ahead of them once their number is known, so that entries are
/// encoded as they are read. With `key` it is an XREAD/XREADGROUP reply
/// (`[[key, [entry ...]]]` in RESP2, `{key: [entry ...]}` in RESP3) and no entries
/// write nothing, for the caller to reply nil or wait; without, a plain array (as
/// XRANGE replies). On an error, what was written is taken back.
pub fn write_entries<E>(
    out: &mut Reply<'_>,
    key: Option<&[u8]>,
    entries: impl FnOnce(&mut Reply<'_>) -> Result<usize, E>,
) -> Result<usize, E> {
    let mark = out.mark();
    match entries(out) {
        Ok(0) if key.is_some() => Ok(0),
        Ok(n) => {
            out.insert(mark, |out| {
                if let Some(key) = key {
                    write_read_header(out, key);
                }
                out.array(n);
            });
            Ok(n)
        }
        Err(e) => {
            out.truncate(mark);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_sequence_numbers() {
        assert_eq!(range_start(b"-"), Ok(0));
        assert_eq!(range_start(b"5"), Ok(5));
        assert_eq!(range_start(b"5-0"), Ok(5));
        assert_eq!(range_start(b"5-1"), Ok(6));
        assert_eq!(range_start(b"(5"), Ok(6));
        assert_eq!(range_start(b"(5-0"), Ok(6));
        assert_eq!(range_end(b"+"), Ok(i64::MAX));
        assert_eq!(range_end(b"5"), Ok(5));
        assert_eq!(range_end(b"5-3"), Ok(5));
        assert_eq!(range_end(b"(5-0"), Ok(4));
        assert_eq!(range_end(b"(5-1"), Ok(5));
        assert_eq!(read_after(b"$", 9), Ok(9));
        assert_eq!(read_after(b"7-0", 9), Ok(7));
        assert_eq!(read_after(b"0", 9), Ok(0));
        assert_eq!(range_start(b"+"), Ok(i64::MAX));
        assert_eq!(range_end(b"-"), Ok(-1));
        for bad in [&b"x"[..], b"1-x", b"-1", b"1-", b"", b"(-", b"1-2-3"] {
            assert_eq!(range_start(bad), Err(INVALID_ID), "{bad:?}");
        }
    }

    #[test]
    fn written_ids_are_the_id_text() {
        for seq in [0, 7, 1_234_567, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_id(&mut Reply::new(&mut out, false), seq);
            let text = id_text(seq);
            assert_eq!(out, format!("${}\r\n{text}\r\n", text.len()).into_bytes());
        }
    }
}
