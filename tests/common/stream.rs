//! The durable stream `events` as the stream tests read it: a server with
//! registrations already in its log, entries decoded from the `redis` crate's
//! replies, what an entry must say, the exact bytes Redis writes for entries, and
//! the wait for a blocking read to park.
//!
//! Entry ids, user ids and times are the server's to decide: these helpers read
//! them back and check their shape and relations (ids `<seq>-0`, consecutive; the
//! user id REGISTER replied; `at` between the request and its reply), never assume
//! them. A blocking read is known to be parked when CLIENT LIST shows it as its
//! connection's last command; nothing here sleeps to let the server catch up.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::streams::{StreamId, StreamInfoConsumersReply, StreamReadOptions, StreamReadReply};
use redis::{Commands, Value};
use userbus::Config;

use super::reply::{bulk_text, call, int, register};
use super::{IO_TIMEOUT, TestServer, bulk, exchange, raw3, read_frame, resp, rfc3339_utc_ms};

/// The stream of every committed event.
pub const EVENTS: &str = "events";
/// The stream of entries delivered too often to a consumer group.
pub const DEAD: &str = "events.dead";
/// Redis's error for an id that does not parse.
pub const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";
/// The error for XADD and the other writes to a stream.
pub const REFUSED: &str = "ERR the events stream is written by registrations only";

// ---------------------------------------------------------------------------
// Servers with a log.

/// A fresh server with one registration (no fields) per name in its log, a RESP2
/// connection to it, and the log's entries.
pub fn serve_log(names: &[&str]) -> (TestServer, redis::Connection, Vec<Entry>) {
    serve_log_with(|_| {}, names)
}

/// Like `serve_log`, with `config` adjusting the settings.
pub fn serve_log_with(
    config: impl FnOnce(&mut Config),
    names: &[&str],
) -> (TestServer, redis::Connection, Vec<Entry>) {
    let server = TestServer::start_with(config, |b| b);
    let mut c = server.redis();
    for name in names {
        register(&mut c, name, &[]);
    }
    let all = all_events(&mut c);
    (server, c, all)
}

/// `serve_log(names)` with a consumer group `g` created at the start of the log
/// and every entry delivered to its `consumer`, so all are pending there once.
pub fn serve_delivered(
    names: &[&str],
    consumer: &str,
) -> (TestServer, redis::Connection, Vec<Entry>) {
    serve_delivered_with(|_| {}, names, consumer)
}

/// Like `serve_delivered`, with `config` adjusting the settings.
pub fn serve_delivered_with(
    config: impl FnOnce(&mut Config),
    names: &[&str],
    consumer: &str,
) -> (TestServer, redis::Connection, Vec<Entry>) {
    let (server, mut c, all) = serve_log_with(config, names);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", consumer, &[], ">").expect("entries");
    (server, c, all)
}

/// A `redis` crate connection in each protocol, with the protocol's name.
pub fn redis_both(server: &TestServer) -> [(redis::Connection, &'static str); 2] {
    [(server.redis(), "RESP2"), (server.redis3(), "RESP3")]
}

/// A raw connection in each protocol, with whether it speaks RESP3.
pub fn raw_both(server: &TestServer) -> [(TcpStream, bool); 2] {
    [(server.raw(), false), (raw3(server), true)]
}

// ---------------------------------------------------------------------------
// Talking to the server with the redis crate, replies as the client parsed them.

/// The elements of an array reply.
pub fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A map reply as (key, value) pairs: a RESP3 map or a RESP2 flat array.
pub fn named_pairs(v: &Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (bulk_text(k), v.clone())).collect(),
        Value::Array(a) => {
            assert!(a.len().is_multiple_of(2), "a flat map has pairs: {a:?}");
            a.chunks(2)
                .map(|p| (bulk_text(&p[0]), p[1].clone()))
                .collect()
        }
        other => panic!("expected a map, got {other:?}"),
    }
}

/// `XLEN key`.
pub fn xlen(con: &mut redis::Connection, key: &str) -> i64 {
    int(&call(con, &["XLEN", key]))
}

/// Names the connection, so CLIENT LIST can tell when it is parked.
pub fn name_connection(con: &mut redis::Connection, name: &str) {
    assert_eq!(call(con, &["CLIENT", "SETNAME", name]), Value::Okay);
}

/// `XINFO GROUPS events` as the client parsed it.
pub fn xinfo_groups(con: &mut redis::Connection) -> Value {
    call(con, &["XINFO", "GROUPS", EVENTS])
}

/// `XGROUP CREATE events group id`, which must succeed.
pub fn create_group(con: &mut redis::Connection, group: &str, id: &str) {
    assert_eq!(
        call(con, &["XGROUP", "CREATE", EVENTS, group, id]),
        Value::Okay,
        "XGROUP CREATE events {group} {id}"
    );
}

/// XREAD, or XREADGROUP when `opts` name a group, of `events` from `id`, through the
/// client's typed API.
pub fn typed_read(
    con: &mut redis::Connection,
    id: &str,
    opts: &StreamReadOptions,
) -> Option<StreamReadReply> {
    con.xread_options(&[EVENTS], &[id], opts)
        .expect("xread_options")
}

/// (name, pending entries) of each consumer of `group`, from the typed XINFO
/// CONSUMERS.
pub fn consumers(con: &mut redis::Connection, group: &str) -> Vec<(String, usize)> {
    let reply: StreamInfoConsumersReply =
        con.xinfo_consumers(EVENTS, group).expect("xinfo_consumers");
    reply
        .consumers
        .iter()
        .map(|c| (c.name.clone(), c.pending))
        .collect()
}

/// The ids of stream entries as the client's typed API read them.
pub fn typed_ids(entries: &[StreamId]) -> Vec<String> {
    entries.iter().map(|s| s.id.clone()).collect()
}

/// The entry ids of the first stream of a typed XREAD/XREADGROUP reply.
pub fn read_ids(reply: &StreamReadReply) -> Vec<String> {
    typed_ids(&reply.keys[0].ids)
}

// ---------------------------------------------------------------------------
// Stream entries.

/// One stream entry: its id and its fields in the order the server sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `<seq>-0`.
    pub id: String,
    /// (field, value) in the server's order.
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// The sequence number of the id.
    pub fn seq(&self) -> i64 {
        seq_of(&self.id)
    }

    /// The value of field `name`, which must be there.
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("entry {} has no field {name:?}: {self:?}", self.id))
    }

    /// The field names in the server's order.
    pub fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The sequence number of an entry id, which must be `<seq>-0`.
pub fn seq_of(id: &str) -> i64 {
    let (seq, rest) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("stream id {id:?} is not <seq>-0"));
    assert_eq!(rest, "0", "stream id {id:?} is not <seq>-0");
    seq.parse()
        .unwrap_or_else(|_| panic!("stream id {id:?} is not <seq>-0"))
}

/// `[id, [field, value, ...]]`, all bulk strings.
pub fn entry(v: &Value) -> Entry {
    let [id, fields] = items(v) else {
        panic!("an entry is [id, fields], got {v:?}")
    };
    let flat = items(fields);
    assert!(
        flat.len().is_multiple_of(2),
        "fields come in pairs: {flat:?}"
    );
    Entry {
        id: bulk_text(id),
        fields: flat
            .chunks(2)
            .map(|p| (bulk_text(&p[0]), bulk_text(&p[1])))
            .collect(),
    }
}

/// An array of entries.
pub fn entries(v: &Value) -> Vec<Entry> {
    items(v).iter().map(entry).collect()
}

/// The ids of `entries`, in order.
pub fn ids(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

/// An XREAD/XREADGROUP reply: `None` for nil, else the stream key and its entries
/// (`[[key, entries]]` in RESP2, `{key: entries}` in RESP3).
pub fn read_reply(v: &Value) -> Option<(String, Vec<Entry>)> {
    match v {
        Value::Nil => None,
        Value::Map(m) => {
            let [(key, list)] = m.as_slice() else {
                panic!("one stream per reply, got {v:?}")
            };
            Some((bulk_text(key), entries(list)))
        }
        Value::Array(a) => {
            let [one] = a.as_slice() else {
                panic!("one stream per reply, got {v:?}")
            };
            let [key, list] = items(one) else {
                panic!("a stream is [key, entries], got {one:?}")
            };
            Some((bulk_text(key), entries(list)))
        }
        other => panic!("expected a stream read reply, got {other:?}"),
    }
}

/// The entries of an XREAD/XREADGROUP reply on `events`; `None` for nil.
pub fn read_events(v: &Value) -> Option<Vec<Entry>> {
    read_reply(v).map(|(key, list)| {
        assert_eq!(key, EVENTS, "reply names the stream it read");
        list
    })
}

/// The entries an XRANGE or XREVRANGE request (`args`, command included) replies.
pub fn xrange(con: &mut redis::Connection, args: &[&str]) -> Vec<Entry> {
    entries(&call(con, args))
}

/// Every entry of `events`.
pub fn all_events(con: &mut redis::Connection) -> Vec<Entry> {
    xrange(con, &["XRANGE", EVENTS, "-", "+"])
}

/// Every entry of `events` as (seq, kind, name), to compare a log with a
/// JetStream stream.
pub fn kinds_and_names(con: &mut redis::Connection) -> Vec<(i64, String, String)> {
    all_events(con)
        .iter()
        .map(|e| {
            (
                e.seq(),
                e.field("kind").to_string(),
                e.field("name").to_string(),
            )
        })
        .collect()
}

/// The newest entry of `events`, which must have one.
pub fn newest_event(con: &mut redis::Connection) -> Entry {
    all_events(con).pop().expect("an entry")
}

/// `XREADGROUP GROUP group consumer [opts ...] STREAMS events id`.
pub fn readgroup(
    con: &mut redis::Connection,
    group: &str,
    consumer: &str,
    opts: &[&str],
    id: &str,
) -> Option<Vec<Entry>> {
    let mut args = vec!["XREADGROUP", "GROUP", group, consumer];
    args.extend_from_slice(opts);
    args.extend(["STREAMS", EVENTS, id]);
    read_events(&call(con, &args))
}

/// (id, owner, deliveries) of every pending entry of `group`, by id.
pub fn pending(con: &mut redis::Connection, group: &str) -> Vec<(String, String, i64)> {
    let v = call(con, &["XPENDING", EVENTS, group, "-", "+", "1000"]);
    items(&v)
        .iter()
        .map(|p| {
            let [id, owner, idle, deliveries] = items(p) else {
                panic!("a pending entry is [id, consumer, idle, deliveries], got {p:?}")
            };
            assert!(int(idle) >= 0, "idle time {idle:?}");
            (bulk_text(id), bulk_text(owner), int(deliveries))
        })
        .collect()
}

/// How many entries `group` has pending, from the XPENDING summary.
pub fn pending_count(con: &mut redis::Connection, group: &str) -> i64 {
    int(&items(&call(con, &["XPENDING", EVENTS, group]))[0])
}

/// A group's XINFO GROUPS map.
pub fn group_info(con: &mut redis::Connection, group: &str) -> BTreeMap<String, Value> {
    let v = xinfo_groups(con);
    items(&v)
        .iter()
        .map(|g| named_pairs(g).into_iter().collect::<BTreeMap<_, _>>())
        .find(|g| g.get("name").map(bulk_text).as_deref() == Some(group))
        .unwrap_or_else(|| panic!("XINFO GROUPS lists no group {group}: {v:?}"))
}

// ---------------------------------------------------------------------------
// What an `events` entry must say.

/// An event as a test expects it.
pub struct Want<'a> {
    /// `user.registered` or `user.unregistered`.
    pub kind: &'a str,
    /// The user id REGISTER replied.
    pub id: i64,
    /// The user's name.
    pub name: &'a str,
    /// The user's fields.
    pub fields: &'a [(&'a str, &'a str)],
}

/// A `user.registered` event.
pub fn registered<'a>(id: i64, name: &'a str, fields: &'a [(&'a str, &'a str)]) -> Want<'a> {
    Want {
        kind: "user.registered",
        id,
        name,
        fields,
    }
}

/// A `user.unregistered` event.
pub fn unregistered<'a>(id: i64, name: &'a str, fields: &'a [(&'a str, &'a str)]) -> Want<'a> {
    Want {
        kind: "user.unregistered",
        id,
        name,
        fields,
    }
}

/// Parses RFC 3339 UTC (`2026-01-02T03:04:05.678Z`, fraction optional) to Unix ms.
pub fn rfc3339_ms(at: &str) -> i64 {
    rfc3339_utc_ms(at).unwrap_or_else(|| panic!("`at` is not RFC 3339 UTC: {at:?}"))
}

/// Checks an `events` entry: fields `kind`, `id`, `name`, `fields` (a JSON object
/// of strings), `at` (RFC 3339, between `from` and `to`, with a second of slack
/// for clock granularity), in that order.
pub fn assert_event(e: &Entry, want: &Want<'_>, from: i64, to: i64) {
    assert_eq!(
        e.field_names(),
        ["kind", "id", "name", "fields", "at"],
        "fields of entry {}",
        e.id
    );
    assert_eq!(e.field("kind"), want.kind, "kind of {}", e.id);
    assert_eq!(e.field("id"), want.id.to_string(), "user id of {}", e.id);
    assert_eq!(e.field("name"), want.name, "name of {}", e.id);
    let got: BTreeMap<String, String> = serde_json::from_str(e.field("fields"))
        .unwrap_or_else(|err| panic!("fields of {} are not a JSON object: {err}", e.id));
    let expected: BTreeMap<String, String> = want
        .fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, expected, "fields of {}", e.id);
    let at = rfc3339_ms(e.field("at"));
    assert!(
        at >= from - 1000 && at <= to + 1000,
        "`at` of {} is {} ({at}), outside the request window {from}..{to}",
        e.id,
        e.field("at")
    );
}

/// Ids are `<seq>-0` and consecutive.
pub fn assert_consecutive(entries: &[Entry]) {
    let seqs: Vec<i64> = entries.iter().map(Entry::seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "ids must be consecutive: {:?}",
        ids(entries)
    );
}

// ---------------------------------------------------------------------------
// Raw sockets: requests as RESP, replies as exact bytes.

/// An entry as Redis writes it: `*2 id *2n field value ...`.
pub fn entry_bytes(e: &Entry) -> Vec<u8> {
    let mut out = b"*2\r\n".to_vec();
    out.extend(bulk(&e.id));
    out.extend(format!("*{}\r\n", 2 * e.fields.len()).into_bytes());
    for (k, v) in &e.fields {
        out.extend(bulk(k));
        out.extend(bulk(v));
    }
    out
}

/// An array of entries, as XRANGE replies.
pub fn entries_bytes(list: &[Entry]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", list.len()).into_bytes();
    for e in list {
        out.extend(entry_bytes(e));
    }
    out
}

/// XREAD's reply: `*1 *2 key entries` in RESP2, `%1 key entries` in RESP3.
pub fn read_bytes(key: &str, list: &[Entry], resp3: bool) -> Vec<u8> {
    let mut out = if resp3 {
        b"%1\r\n".to_vec()
    } else {
        b"*1\r\n*2\r\n".to_vec()
    };
    out.extend(bulk(key));
    out.extend(entries_bytes(list));
    out
}

/// XREADGROUP's reply of history entries that are gone (trimmed from the log, or
/// dead-lettered), each `[id, nil]`, as Redis replies for deleted entries.
pub fn gone_bytes(key: &str, ids: &[String], resp3: bool) -> Vec<u8> {
    let mut out = if resp3 {
        b"%1\r\n".to_vec()
    } else {
        b"*1\r\n*2\r\n".to_vec()
    };
    out.extend(bulk(key));
    out.extend(format!("*{}\r\n", ids.len()).into_bytes());
    for id in ids {
        out.extend(b"*2\r\n");
        out.extend(bulk(id));
        out.extend(nil_bytes(resp3));
    }
    out
}

/// A nil reply: `*-1` in RESP2, `_` in RESP3.
pub fn nil_bytes(resp3: bool) -> &'static [u8] {
    if resp3 { b"_\r\n" } else { b"*-1\r\n" }
}

/// Sends `request` and returns the whole reply, as text (for comparisons that
/// must not wait for bytes a wrong reply lacks).
pub fn reply_to(s: &mut TcpStream, request: &[u8]) -> String {
    s.write_all(request).expect("write");
    String::from_utf8_lossy(&read_frame(s)).into_owned()
}

/// Names a raw connection, so CLIENT LIST can tell when it is parked.
pub fn name_raw(s: &mut TcpStream, name: &str) {
    exchange(s, &resp(&["CLIENT", "SETNAME", name]), b"+OK\r\n");
}

/// Names a raw connection `name`, sends it `XREAD BLOCK 0 STREAMS events $` and
/// waits until that read is parked.
pub fn park_xread(server: &TestServer, s: &mut TcpStream, name: &str) {
    name_raw(s, name);
    s.write_all(&resp(&["XREAD", "BLOCK", "0", "STREAMS", EVENTS, "$"]))
        .expect("write");
    wait_parked(server, name, "xread");
}

/// Names `reader` `name`, starts the blocking read `opts` of `events` from `id` on it
/// in a thread, and waits until that read is parked; the thread returns its reply.
pub fn park_typed_read(
    server: &TestServer,
    mut reader: redis::Connection,
    name: &str,
    id: &'static str,
    opts: StreamReadOptions,
) -> JoinHandle<Option<StreamReadReply>> {
    name_connection(&mut reader, name);
    let command = if opts.read_only() {
        "xread"
    } else {
        "xreadgroup"
    };
    let blocked = thread::spawn(move || typed_read(&mut reader, id, &opts));
    wait_parked(server, name, command);
    blocked
}

/// Waits until the connection named `name` has run `command` (CLIENT LIST shows a
/// command as its connection's last once it ran): a blocking read that ran and
/// found nothing is parked, and `$` is resolved.
pub fn wait_parked(server: &TestServer, name: &str, command: &str) {
    wait_parked_on(&mut server.redis(), name, command);
}

/// Like `wait_parked`, asking CLIENT LIST on `admin`, a connection to any server.
pub fn wait_parked_on(admin: &mut redis::Connection, name: &str, command: &str) {
    let (name_field, cmd_field) = (format!(" name={name} "), format!(" cmd={command} "));
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(admin)
            .expect("CLIENT LIST");
        if list
            .lines()
            .any(|l| l.contains(&name_field) && l.contains(&cmd_field))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never ran {command}: {list}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}
