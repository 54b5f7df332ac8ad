//! The durable stream `events` as stream clients see it: XLEN, XRANGE/XREVRANGE,
//! XREAD (with BLOCK), consumer groups (XGROUP, XREADGROUP, XACK, XPENDING, XCLAIM,
//! XAUTOCLAIM, XINFO), their state across restarts, dead letters into `events.dead`
//! and ticks that roll back. Real clients: the `redis` crate in RESP2 and RESP3, raw
//! sockets where the exact bytes matter.
//!
//! Entry ids, user ids and times are the server's to decide: tests read them back
//! and check their shape and relations (ids `<seq>-0`, consecutive; the user id
//! REGISTER replied; `at` between the request and its reply), never assume them.
//! A blocking read is known to be parked when CLIENT LIST shows it as its
//! connection's last command; no test sleeps to let the server catch up.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::reply::{bulk_text, call, error_text, int, register, unregister};
use common::{
    IO_TIMEOUT, TestServer, bulk, exchange, now_ms, read_n, read_until_suffix, resp, rfc3339_utc_ms,
};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamClaimReply,
    StreamInfoConsumersReply, StreamInfoGroupsReply, StreamInfoStreamReply,
    StreamPendingCountReply, StreamPendingReply, StreamRangeReply, StreamReadOptions,
    StreamReadReply,
};
use redis::{Commands, RedisResult, Value};
use userbus::config::MAX_FIELD_VALUE_BYTES;

const EVENTS: &str = "events";
const DEAD: &str = "events.dead";
const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";
const REFUSED: &str = "ERR the events stream is written by registrations only";

// ---------------------------------------------------------------------------
// Talking to the server with the redis crate, replies as the client parsed them.

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A map reply as (key, value) pairs: a RESP3 map or a RESP2 flat array.
fn pairs(v: &Value) -> Vec<(String, Value)> {
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

fn xlen(con: &mut redis::Connection, key: &str) -> i64 {
    int(&call(con, &["XLEN", key]))
}

/// Names the connection, so CLIENT LIST can tell when it is parked.
fn name_connection(con: &mut redis::Connection, name: &str) {
    assert_eq!(call(con, &["CLIENT", "SETNAME", name]), Value::Okay);
}

fn create_group(con: &mut redis::Connection, group: &str, id: &str) {
    assert_eq!(
        call(con, &["XGROUP", "CREATE", EVENTS, group, id]),
        Value::Okay,
        "XGROUP CREATE events {group} {id}"
    );
}

// ---------------------------------------------------------------------------
// Stream entries.

/// One stream entry: its id and its fields in the order the server sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    id: String,
    fields: Vec<(String, String)>,
}

impl Entry {
    fn seq(&self) -> i64 {
        seq_of(&self.id)
    }

    fn field(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("entry {} has no field {name:?}: {self:?}", self.id))
    }

    fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The sequence number of an entry id, which must be `<seq>-0`.
fn seq_of(id: &str) -> i64 {
    let (seq, rest) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("stream id {id:?} is not <seq>-0"));
    assert_eq!(rest, "0", "stream id {id:?} is not <seq>-0");
    seq.parse()
        .unwrap_or_else(|_| panic!("stream id {id:?} is not <seq>-0"))
}

/// `[id, [field, value, ...]]`, all bulk strings.
fn entry(v: &Value) -> Entry {
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

fn entries(v: &Value) -> Vec<Entry> {
    items(v).iter().map(entry).collect()
}

fn ids(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

/// An XREAD/XREADGROUP reply: `None` for nil, else the stream key and its entries
/// (`[[key, entries]]` in RESP2, `{key: entries}` in RESP3).
fn read_reply(v: &Value) -> Option<(String, Vec<Entry>)> {
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
fn read_events(v: &Value) -> Option<Vec<Entry>> {
    read_reply(v).map(|(key, list)| {
        assert_eq!(key, EVENTS, "reply names the stream it read");
        list
    })
}

fn xrange(con: &mut redis::Connection, args: &[&str]) -> Vec<Entry> {
    entries(&call(con, args))
}

fn all_events(con: &mut redis::Connection) -> Vec<Entry> {
    xrange(con, &["XRANGE", EVENTS, "-", "+"])
}

/// `XREADGROUP GROUP group consumer [opts ...] STREAMS events id`.
fn readgroup(
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
fn pending(con: &mut redis::Connection, group: &str) -> Vec<(String, String, i64)> {
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

fn pending_count(con: &mut redis::Connection, group: &str) -> i64 {
    int(&items(&call(con, &["XPENDING", EVENTS, group]))[0])
}

/// A group's XINFO GROUPS map.
fn group_info(con: &mut redis::Connection, group: &str) -> BTreeMap<String, Value> {
    let v = call(con, &["XINFO", "GROUPS", EVENTS]);
    items(&v)
        .iter()
        .map(|g| pairs(g).into_iter().collect::<BTreeMap<_, _>>())
        .find(|g| g.get("name").map(bulk_text).as_deref() == Some(group))
        .unwrap_or_else(|| panic!("XINFO GROUPS lists no group {group}: {v:?}"))
}

// ---------------------------------------------------------------------------
// What an `events` entry must say.

/// An event as a test expects it.
struct Want<'a> {
    kind: &'a str,
    id: i64,
    name: &'a str,
    fields: &'a [(&'a str, &'a str)],
}

fn registered<'a>(id: i64, name: &'a str, fields: &'a [(&'a str, &'a str)]) -> Want<'a> {
    Want {
        kind: "user.registered",
        id,
        name,
        fields,
    }
}

fn unregistered<'a>(id: i64, name: &'a str, fields: &'a [(&'a str, &'a str)]) -> Want<'a> {
    Want {
        kind: "user.unregistered",
        id,
        name,
        fields,
    }
}

/// Parses RFC 3339 UTC (`2026-01-02T03:04:05.678Z`, fraction optional) to Unix ms.
fn rfc3339_ms(at: &str) -> i64 {
    rfc3339_utc_ms(at).unwrap_or_else(|| panic!("`at` is not RFC 3339 UTC: {at:?}"))
}

/// Checks an `events` entry: fields `kind`, `id`, `name`, `fields` (a JSON object
/// of strings), `at` (RFC 3339, between `from` and `to`, with a second of slack
/// for clock granularity), in that order.
fn assert_event(e: &Entry, want: &Want<'_>, from: i64, to: i64) {
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
fn assert_consecutive(entries: &[Entry]) {
    let seqs: Vec<i64> = entries.iter().map(Entry::seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "ids must be consecutive: {:?}",
        ids(entries)
    );
}

// ---------------------------------------------------------------------------
// Raw sockets: requests as RESP, replies as exact bytes.

/// A request written as one line, split on spaces.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// An entry as Redis writes it: `*2 id *2n field value ...`.
fn entry_bytes(e: &Entry) -> Vec<u8> {
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
fn entries_bytes(list: &[Entry]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", list.len()).into_bytes();
    for e in list {
        out.extend(entry_bytes(e));
    }
    out
}

/// XREAD's reply: `*1 *2 key entries` in RESP2, `%1 key entries` in RESP3.
fn read_bytes(key: &str, list: &[Entry], resp3: bool) -> Vec<u8> {
    let mut out = if resp3 {
        b"%1\r\n".to_vec()
    } else {
        b"*1\r\n*2\r\n".to_vec()
    };
    out.extend(bulk(key));
    out.extend(entries_bytes(list));
    out
}

fn nil_bytes(resp3: bool) -> &'static [u8] {
    if resp3 { b"_\r\n" } else { b"*-1\r\n" }
}

/// Reads one complete RESP2/RESP3 reply and returns its bytes.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut out = read_until_suffix(s, b"\r\n");
    let n = || -> i64 {
        std::str::from_utf8(&out[1..out.len() - 2])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("bad length line {:?}", String::from_utf8_lossy(&out)))
    };
    match out[0] {
        b'$' | b'=' | b'!' => {
            let len = n();
            if len >= 0 {
                out.extend(read_n(s, len as usize + 2));
            }
        }
        b'*' | b'~' | b'>' => {
            for _ in 0..n().max(0) {
                out.extend(read_frame(s));
            }
        }
        b'%' => {
            for _ in 0..2 * n().max(0) {
                out.extend(read_frame(s));
            }
        }
        _ => {}
    }
    out
}

/// Sends `request` and returns the whole reply, as text (for comparisons that
/// must not wait for bytes a wrong reply lacks).
fn reply_to(s: &mut TcpStream, request: &[u8]) -> String {
    s.write_all(request).expect("write");
    String::from_utf8_lossy(&read_frame(s)).into_owned()
}

/// A raw connection switched to RESP3.
fn raw3(server: &TestServer) -> TcpStream {
    let mut s = server.raw();
    s.write_all(&resp(&["HELLO", "3"])).expect("write");
    let hello = read_frame(&mut s);
    assert!(hello.starts_with(b"%"), "HELLO 3 replied {hello:?}");
    s
}

/// Names a raw connection, so CLIENT LIST can tell when it is parked.
fn name_raw(s: &mut TcpStream, name: &str) {
    exchange(s, &resp(&["CLIENT", "SETNAME", name]), b"+OK\r\n");
}

/// Waits until the connection named `name` has run `command` (CLIENT LIST shows a
/// command as its connection's last once it ran): a blocking read that ran and
/// found nothing is parked, and `$` is resolved.
fn wait_parked(server: &TestServer, name: &str, command: &str) {
    let mut admin = server.redis();
    let (name_field, cmd_field) = (format!(" name={name} "), format!(" cmd={command} "));
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut admin)
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

/// A registration that cannot fit under a small page cap.
fn big_register(name: &str) -> Vec<u8> {
    let value = "v".repeat(MAX_FIELD_VALUE_BYTES);
    resp(&["REGISTER", name, "a", &value, "b", &value])
}

// ===========================================================================
// Reading the log: XLEN, XRANGE, XREVRANGE.

#[test]
fn xrange_lists_registrations_and_unregistrations_in_commit_order() {
    let server = TestServer::start();
    let mut c = server.redis();
    let from = now_ms();
    let alice_fields = [("plan", "pro"), ("city", "Oslo")];
    let alice = register(&mut c, "alice", &alice_fields);
    let bob = register(&mut c, "bob", &[]);
    assert_eq!(unregister(&mut c, "alice"), 1);
    // Neither a no-op unregistration nor a refused registration is an event.
    assert_eq!(unregister(&mut c, "nobody"), 0);
    match call(&mut c, &["REGISTER", "bob"]) {
        Value::Int(0) => {}
        Value::ServerError(e) if e.code() == "EXISTS" => {}
        other => panic!("REGISTER of a taken name replied {other:?}"),
    }
    let carol = register(&mut c, "carol", &[("x", "y")]);
    let to = now_ms();
    let want = [
        registered(alice, "alice", &alice_fields),
        registered(bob, "bob", &[]),
        unregistered(alice, "alice", &alice_fields),
        registered(carol, "carol", &[("x", "y")]),
    ];

    for (mut con, proto) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")] {
        assert_eq!(xlen(&mut con, EVENTS), 4, "{proto}");
        let all = all_events(&mut con);
        assert_eq!(all.len(), 4, "{proto}: {all:?}");
        assert_consecutive(&all);
        for (e, w) in all.iter().zip(&want) {
            assert_event(e, w, from, to);
        }
        let ats: Vec<i64> = all.iter().map(|e| rfc3339_ms(e.field("at"))).collect();
        assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{proto}: {ats:?}");

        // The client's typed stream API reads the same entries.
        let typed: StreamRangeReply = con.xrange_all(EVENTS).expect("xrange_all");
        let typed_ids: Vec<String> = typed.ids.iter().map(|s| s.id.clone()).collect();
        assert_eq!(typed_ids, ids(&all), "{proto}");
        let names: Vec<Option<String>> = typed.ids.iter().map(|s| s.get("name")).collect();
        assert_eq!(
            names,
            ["alice", "bob", "alice", "carol"].map(|n| Some(n.to_string())),
            "{proto}"
        );
        let len: usize = con.xlen(EVENTS).expect("xlen");
        assert_eq!(len, 4, "{proto}");
    }
}

#[test]
fn xrange_and_xrevrange_honour_count_and_inclusive_and_exclusive_bounds() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..5 {
        register(&mut c, &format!("u{i}"), &[("i", &i.to_string())]);
    }
    let all = all_events(&mut c);
    assert_eq!(all.len(), 5);
    assert_consecutive(&all);
    let id: Vec<String> = ids(&all);
    let seq: Vec<String> = all.iter().map(|e| e.seq().to_string()).collect();
    let mut range = |args: &[&str]| ids(&xrange(&mut c, args));

    assert_eq!(range(&["XRANGE", EVENTS, "-", "+", "COUNT", "2"]), id[..2]);
    assert_eq!(range(&["XRANGE", EVENTS, &id[1], &id[3]]), id[1..4]);
    assert_eq!(range(&["XRANGE", EVENTS, &id[2], &id[2]]), id[2..3]);
    assert_eq!(
        range(&["XRANGE", EVENTS, &id[3], &id[1]]),
        [] as [String; 0]
    );
    // An id without its sequence part means `<n>-0` as a start.
    assert_eq!(range(&["XRANGE", EVENTS, &seq[1], &seq[2]]), id[1..3]);
    // `n-1` lies between `n-0` and `(n+1)-0`.
    let between = format!("{}-1", seq[1]);
    assert_eq!(range(&["XRANGE", EVENTS, &between, "+"]), id[2..]);
    // `(` excludes the id itself.
    let (after1, before3) = (format!("({}", id[1]), format!("({}", id[3]));
    assert_eq!(range(&["XRANGE", EVENTS, &after1, "+"]), id[2..]);
    assert_eq!(range(&["XRANGE", EVENTS, &after1, &before3]), id[2..3]);
    assert_eq!(
        range(&["XRANGE", EVENTS, &format!("({}", id[4]), "+"]),
        [] as [String; 0]
    );
    // As in Redis, an exclusive end without a sequence part is `(n-<max>`, which
    // still includes `n-0`.
    assert_eq!(
        range(&["XRANGE", EVENTS, "-", &format!("({}", seq[3])]),
        id[..4]
    );
    assert_eq!(range(&["XRANGE", EVENTS, "-", "+", "COUNT", "100"]), id[..]);

    let mut reversed = id.clone();
    reversed.reverse();
    assert_eq!(range(&["XREVRANGE", EVENTS, "+", "-"]), reversed);
    assert_eq!(
        range(&["XREVRANGE", EVENTS, "+", "-", "COUNT", "2"]),
        reversed[..2]
    );
    assert_eq!(
        range(&["XREVRANGE", EVENTS, &id[3], &id[1]]),
        reversed[1..4]
    );
    let (before4, after0) = (format!("({}", id[4]), format!("({}", id[0]));
    assert_eq!(
        range(&["XREVRANGE", EVENTS, &before4, &after0]),
        reversed[1..4]
    );

    // Same entries either way, content included.
    let mut rev = xrange(&mut c, &["XREVRANGE", EVENTS, "+", "-"]);
    rev.reverse();
    assert_eq!(rev, all);

    // The typed API, RESP3.
    let mut c3 = server.redis3();
    let first3: StreamRangeReply = c3.xrange_count(EVENTS, "-", "+", 3).expect("xrange");
    let got: Vec<String> = first3.ids.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, id[..3]);
    assert_eq!(first3.ids[1].get::<String>("name").as_deref(), Some("u1"));
    let last: StreamRangeReply = c3.xrevrange_count(EVENTS, "+", "-", 1).expect("xrevrange");
    let got: Vec<String> = last.ids.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, id[4..]);
}

#[test]
fn xrange_replies_are_redis_stream_entries_byte_for_byte() {
    let server = TestServer::start();
    let mut c = server.redis();
    let from = now_ms();
    let alice = register(&mut c, "alice", &[("plan", "pro")]);
    let bob = register(&mut c, "bob", &[]);
    let to = now_ms();
    let all = all_events(&mut c);
    assert_event(
        &all[0],
        &registered(alice, "alice", &[("plan", "pro")]),
        from,
        to,
    );
    assert_event(&all[1], &registered(bob, "bob", &[]), from, to);

    // The same bytes in RESP2 and RESP3: entries are arrays of bulk strings.
    for mut s in [server.raw(), raw3(&server)] {
        exchange(&mut s, &resp(&["XLEN", EVENTS]), b":2\r\n");
        exchange(
            &mut s,
            &resp(&["XRANGE", EVENTS, "-", "+"]),
            &entries_bytes(&all),
        );
        exchange(
            &mut s,
            &resp(&["XREVRANGE", EVENTS, "+", "-", "COUNT", "1"]),
            &entries_bytes(&all[1..]),
        );
        let after_last = format!("({}", all[1].id);
        exchange(
            &mut s,
            &resp(&["XRANGE", EVENTS, &after_last, "+"]),
            b"*0\r\n",
        );
        // Nothing is dead yet: an empty stream, not an error.
        exchange(&mut s, &resp(&["XLEN", DEAD]), b":0\r\n");
        exchange(&mut s, &resp(&["XRANGE", DEAD, "-", "+"]), b"*0\r\n");
    }
}

#[test]
fn malformed_stream_ids_get_redis_invalid_id_error() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "alice", &[]);
    create_group(&mut c, "g", "0");
    let delivered = readgroup(&mut c, "g", "c", &[], ">").expect("an entry");
    let id = delivered[0].id.clone();

    let bad: &[&[&str]] = &[
        &["XRANGE", EVENTS, "abc", "+"],
        &["XRANGE", EVENTS, "-", "1-x"],
        &["XRANGE", EVENTS, "1-", "+"],
        &["XRANGE", EVENTS, "-1", "+"],
        &["XRANGE", EVENTS, "(", "+"],
        &["XRANGE", EVENTS, "1-2-3", "+"],
        &["XREVRANGE", EVENTS, "+", "abc"],
        &["XREAD", "STREAMS", EVENTS, "abc"],
        &["XREAD", "BLOCK", "10", "STREAMS", EVENTS, "1-x"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, "abc"],
        &["XACK", EVENTS, "g", "abc"],
        &["XACK", EVENTS, "g", &id, "abc"],
        &["XGROUP", "CREATE", EVENTS, "g2", "abc"],
        &["XGROUP", "SETID", EVENTS, "g", "abc"],
        &["XPENDING", EVENTS, "g", "abc", "+", "10"],
        &["XAUTOCLAIM", EVENTS, "g", "c", "0", "abc"],
    ];
    for mut con in [server.redis(), server.redis3()] {
        for args in bad {
            assert_eq!(error_text(&call(&mut con, args)), INVALID_ID, "{args:?}");
        }
    }
    let mut raw = server.raw();
    exchange(
        &mut raw,
        &resp(&["XRANGE", EVENTS, "abc", "+"]),
        format!("-{INVALID_ID}\r\n").as_bytes(),
    );
    // The XACK with one bad id acknowledged nothing, and no group was created.
    assert_eq!(pending(&mut c, "g"), [(id, "c".to_string(), 1)]);
    assert_eq!(items(&call(&mut c, &["XINFO", "GROUPS", EVENTS])).len(), 1);
}

#[test]
fn stream_keys_other_than_events_get_a_clear_error() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "alice", &[]);
    for key in ["users", "events2", "EVENTS"] {
        let requests: &[&[&str]] = &[
            &["XLEN", key],
            &["XRANGE", key, "-", "+"],
            &["XREVRANGE", key, "+", "-"],
            &["XREAD", "STREAMS", key, "0"],
            &["XREAD", "BLOCK", "10", "STREAMS", key, "$"],
            &["XGROUP", "CREATE", key, "g", "0"],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", key, ">"],
            &["XINFO", "STREAM", key],
            &["XPENDING", key, "g"],
        ];
        for args in requests {
            let err = error_text(&call(&mut c, args));
            assert!(
                err.starts_with("ERR ")
                    && err.contains(&format!("'{key}'"))
                    && err.contains(EVENTS),
                "{args:?} replied {err:?}: the error should name the key and the stream that exists"
            );
        }
    }
    // Consumer groups read `events`, not the dead letters.
    let err = error_text(&call(&mut c, &["XGROUP", "CREATE", DEAD, "g", "0"]));
    assert!(err.starts_with("ERR ") && err.contains(EVENTS), "{err}");
    // Nothing was created or changed by the refused requests.
    assert_eq!(xlen(&mut c, EVENTS), 1);
    assert_eq!(
        call(&mut c, &["XINFO", "GROUPS", EVENTS]),
        Value::Array(vec![])
    );
}

#[test]
fn xadd_and_other_stream_writes_are_refused() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "alice", &[]);
    let id = all_events(&mut c)[0].id.clone();
    let mut raw = server.raw();
    let refused = format!("-{REFUSED}\r\n");
    let writes: &[&[&str]] = &[
        &["XADD", EVENTS, "*", "kind", "user.registered"],
        &["XADD", EVENTS, "99-0", "a", "b"],
        &["XADD", "users", "*", "a", "b"],
        &["XDEL", EVENTS, &id],
        &["XTRIM", EVENTS, "MAXLEN", "0"],
        &["XSETID", EVENTS, "99-0"],
    ];
    for args in writes {
        exchange(&mut raw, &resp(args), refused.as_bytes());
    }
    let mut c3 = server.redis3();
    let r: RedisResult<String> = c3.xadd(EVENTS, "*", &[("a", "b")]);
    let err = r.expect_err("XADD is refused");
    assert_eq!(err.code(), Some("ERR"), "{err}");
    assert!(err.to_string().contains(&REFUSED[4..]), "{err}");
    assert_eq!(xlen(&mut c, EVENTS), 1);
    assert_eq!(ids(&all_events(&mut c)), [id]);
}

#[test]
fn xrange_with_count_zero_or_negative_replies_a_null_array() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "alice", &[]);
    for (mut s, resp3) in [(server.raw(), false), (raw3(&server), true)] {
        for args in [
            ["XRANGE", EVENTS, "-", "+", "COUNT", "0"],
            ["XRANGE", EVENTS, "-", "+", "COUNT", "-1"],
            ["XREVRANGE", EVENTS, "+", "-", "COUNT", "0"],
        ] {
            assert_eq!(
                reply_to(&mut s, &resp(&args)),
                String::from_utf8_lossy(nil_bytes(resp3)),
                "{args:?}"
            );
        }
    }
}

#[test]
fn range_bounds_accept_minus_and_plus_in_either_position() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "alice", &[]);
    let mut s = server.raw();
    // `-` is the smallest id and `+` the largest, whichever side they are on.
    for args in [
        ["XREVRANGE", EVENTS, "-", "+"],
        ["XRANGE", EVENTS, "+", "-"],
        ["XRANGE", EVENTS, "-", "-"],
        ["XREVRANGE", EVENTS, "+", "+"],
    ] {
        assert_eq!(reply_to(&mut s, &resp(&args)), "*0\r\n", "{args:?}");
    }
    assert_eq!(xlen(&mut c, EVENTS), 1);
}

// ===========================================================================
// XREAD.

#[test]
fn xread_returns_the_entries_after_an_id() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..4 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    let id = ids(&all);

    for (mut con, proto) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")] {
        let read = |con: &mut redis::Connection, args: &[&str]| read_events(&call(con, args));
        assert_eq!(
            read(&mut con, &["XREAD", "STREAMS", EVENTS, "0"]).as_deref(),
            Some(&all[..]),
            "{proto}"
        );
        assert_eq!(
            read(&mut con, &["XREAD", "STREAMS", EVENTS, "0-0"]).as_deref(),
            Some(&all[..]),
            "{proto}"
        );
        assert_eq!(
            read(&mut con, &["XREAD", "COUNT", "2", "STREAMS", EVENTS, "0"]).as_deref(),
            Some(&all[..2]),
            "{proto}"
        );
        assert_eq!(
            read(&mut con, &["XREAD", "STREAMS", EVENTS, &id[1]]).as_deref(),
            Some(&all[2..]),
            "{proto}"
        );
        let seq1 = all[1].seq().to_string();
        assert_eq!(
            read(&mut con, &["XREAD", "STREAMS", EVENTS, &seq1]).as_deref(),
            Some(&all[2..]),
            "{proto}"
        );
        assert_eq!(
            read(&mut con, &["XREAD", "STREAMS", EVENTS, &id[3]]),
            None,
            "{proto}"
        );
        assert_eq!(
            read(&mut con, &["XREAD", "STREAMS", EVENTS, "$"]),
            None,
            "{proto}"
        );
        // A BLOCK read with entries to return answers at once.
        assert_eq!(
            read(
                &mut con,
                &["XREAD", "BLOCK", "5000", "STREAMS", EVENTS, &id[2]]
            )
            .as_deref(),
            Some(&all[3..]),
            "{proto}"
        );

        // The typed API.
        let opts = StreamReadOptions::default().count(3);
        let reply: Option<StreamReadReply> = con
            .xread_options(&[EVENTS], &["0"], &opts)
            .expect("xread_options");
        let reply = reply.expect("entries");
        assert_eq!(reply.keys.len(), 1, "{proto}");
        assert_eq!(reply.keys[0].key, EVENTS, "{proto}");
        let got: Vec<String> = reply.keys[0].ids.iter().map(|s| s.id.clone()).collect();
        assert_eq!(got, id[..3], "{proto}");
        assert_eq!(
            reply.keys[0].ids[2].get::<String>("name").as_deref(),
            Some("u2"),
            "{proto}"
        );
        let none: Option<StreamReadReply> = con
            .xread_options(&[EVENTS], &["$"], &StreamReadOptions::default())
            .expect("xread_options");
        assert!(none.is_none(), "{proto}: {none:?}");
    }
}

#[test]
fn xread_replies_have_redis_shapes_byte_for_byte() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "alice", &[("plan", "pro")]);
    register(&mut c, "bob", &[]);
    let all = all_events(&mut c);
    for (mut s, resp3) in [(server.raw(), false), (raw3(&server), true)] {
        exchange(
            &mut s,
            &resp(&["XREAD", "COUNT", "1", "STREAMS", EVENTS, "0"]),
            &read_bytes(EVENTS, &all[..1], resp3),
        );
        exchange(
            &mut s,
            &resp(&["XREAD", "STREAMS", EVENTS, &all[0].id]),
            &read_bytes(EVENTS, &all[1..], resp3),
        );
        exchange(
            &mut s,
            &resp(&["XREAD", "STREAMS", EVENTS, "$"]),
            nil_bytes(resp3),
        );
        exchange(
            &mut s,
            &resp(&["XREAD", "STREAMS", EVENTS, &all[1].id]),
            nil_bytes(resp3),
        );
    }
}

#[test]
fn xread_and_xreadgroup_count_zero_means_no_limit() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    assert_eq!(
        read_events(&call(
            &mut c,
            &["XREAD", "COUNT", "0", "STREAMS", EVENTS, "0"]
        )),
        Some(all.clone())
    );
    create_group(&mut c, "g", "0");
    assert_eq!(readgroup(&mut c, "g", "c", &["COUNT", "0"], ">"), Some(all));
}

// ===========================================================================
// XREAD BLOCK.

#[test]
fn xread_block_without_new_entries_times_out_with_nil() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "alice", &[]);
    let last = all_events(&mut c)[0].id.clone();

    // Raw: nil after the timeout, and the request behind it is answered after it.
    for (mut s, resp3) in [(server.raw(), false), (raw3(&server), true)] {
        for id in ["$", last.as_str()] {
            let mut batch = resp(&["XREAD", "BLOCK", "100", "STREAMS", EVENTS, id]);
            batch.extend(resp(&["PING"]));
            let started = Instant::now();
            let mut expected = nil_bytes(resp3).to_vec();
            expected.extend_from_slice(b"+PONG\r\n");
            exchange(&mut s, &batch, &expected);
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(90),
                "BLOCK 100 answered after {waited:?}"
            );
        }
    }

    // The redis crate, both protocols.
    for (mut con, proto) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")] {
        let started = Instant::now();
        let reply: Option<StreamReadReply> = con
            .xread_options(&[EVENTS], &["$"], &StreamReadOptions::default().block(100))
            .expect("xread_options");
        let waited = started.elapsed();
        assert!(reply.is_none(), "{proto}: {reply:?}");
        assert!(
            waited >= Duration::from_millis(90),
            "{proto}: BLOCK 100 answered after {waited:?}"
        );
        // The connection is usable afterwards.
        assert_eq!(xlen(&mut con, EVENTS), 1, "{proto}");
    }
}

#[test]
fn xread_block_wakes_with_exactly_the_entry_committed_after_it() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "before", &[]);

    for (i, (mut reader, proto)) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")]
        .into_iter()
        .enumerate()
    {
        let name = format!("reader{i}");
        name_connection(&mut reader, &name);
        let blocked = thread::spawn(move || {
            let opts = StreamReadOptions::default().block(5000);
            let reply: Option<StreamReadReply> = reader
                .xread_options(&[EVENTS], &["$"], &opts)
                .expect("xread_options");
            reply
        });
        wait_parked(&server, &name, "xread");
        let user = format!("woke{i}");
        let from = now_ms();
        let uid = register(&mut c, &user, &[("plan", "pro")]);
        let to = now_ms();
        let reply = blocked
            .join()
            .expect("reader thread")
            .unwrap_or_else(|| panic!("{proto}: the blocked XREAD timed out"));
        let newest = all_events(&mut c).pop().expect("an entry");
        assert_event(
            &newest,
            &registered(uid, &user, &[("plan", "pro")]),
            from,
            to,
        );
        assert_eq!(reply.keys.len(), 1, "{proto}");
        assert_eq!(reply.keys[0].key, EVENTS, "{proto}");
        let got: Vec<String> = reply.keys[0].ids.iter().map(|s| s.id.clone()).collect();
        assert_eq!(got, std::slice::from_ref(&newest.id), "{proto}");
        assert_eq!(
            reply.keys[0].ids[0].get::<String>("name"),
            Some(user.clone()),
            "{proto}"
        );
    }

    // Raw, BLOCK 0 (forever): the exact reply.
    for (i, (mut s, resp3)) in [(server.raw(), false), (raw3(&server), true)]
        .into_iter()
        .enumerate()
    {
        let name = format!("raw{i}");
        name_raw(&mut s, &name);
        s.write_all(&resp(&["XREAD", "BLOCK", "0", "STREAMS", EVENTS, "$"]))
            .expect("write");
        wait_parked(&server, &name, "xread");
        register(&mut c, &format!("raw{i}"), &[]);
        let newest = all_events(&mut c).pop().expect("an entry");
        assert_eq!(newest.field("name"), format!("raw{i}"));
        assert_eq!(
            read_frame(&mut s),
            read_bytes(EVENTS, &[newest], resp3),
            "resp3={resp3}"
        );
    }
}

#[test]
fn requests_pipelined_behind_a_blocked_xread_are_answered_after_it_in_order() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "before", &[]);
    let mut s = server.raw();
    name_raw(&mut s, "reader");

    let mut batch = resp(&["XREAD", "BLOCK", "0", "STREAMS", EVENTS, "$"]);
    batch.extend(resp(&["PING"]));
    batch.extend(resp(&["ECHO", "behind"]));
    batch.extend(resp(&["XLEN", EVENTS]));
    s.write_all(&batch).expect("write");
    wait_parked(&server, "reader", "xread");
    // Parked: what came behind the XREAD has not run.
    s.set_nonblocking(true).expect("nonblocking");
    let mut probe = [0u8; 1];
    match s.peek(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("a parked connection was answered early: {other:?}"),
    }
    s.set_nonblocking(false).expect("blocking");

    register(&mut c, "after", &[]);
    let newest = all_events(&mut c).pop().expect("an entry");
    assert_eq!(newest.field("name"), "after");
    let mut expected = read_bytes(EVENTS, &[newest], false);
    expected.extend_from_slice(b"+PONG\r\n");
    expected.extend(bulk("behind"));
    expected.extend_from_slice(b":2\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_n(&mut s, expected.len())),
        String::from_utf8_lossy(&expected)
    );
    // And the connection goes on as usual.
    exchange(&mut s, &resp(&["PING"]), b"+PONG\r\n");
}

#[test]
fn blocked_readers_do_not_stall_others_and_all_wake_on_the_commit() {
    let server = TestServer::start();
    let mut c = server.redis();
    let mut a = server.raw();
    let mut b = raw3(&server);
    let mut gone = server.raw();
    for (s, name) in [(&mut a, "a"), (&mut b, "b"), (&mut gone, "gone")] {
        name_raw(s, name);
        s.write_all(&resp(&["XREAD", "BLOCK", "0", "STREAMS", EVENTS, "$"]))
            .expect("write");
        wait_parked(&server, name, "xread");
    }
    // A parked reader that goes away must not trouble the server.
    drop(gone);

    // Everyone else is served while three readers wait.
    let mut other = server.raw();
    exchange(&mut other, &resp(&["PING"]), b"+PONG\r\n");
    exchange(&mut other, &resp(&["ECHO", "hi"]), b"$2\r\nhi\r\n");
    exchange(&mut other, &resp(&["USERCOUNT"]), b":0\r\n");
    exchange(&mut other, &resp(&["XLEN", EVENTS]), b":0\r\n");
    exchange(
        &mut other,
        &resp(&["XREAD", "STREAMS", EVENTS, "$"]),
        b"*-1\r\n",
    );

    let uid = register(&mut c, "x", &[]);
    let newest = all_events(&mut c).pop().expect("an entry");
    assert_eq!(newest.field("id"), uid.to_string());
    assert_eq!(
        read_frame(&mut a),
        read_bytes(EVENTS, std::slice::from_ref(&newest), false)
    );
    assert_eq!(read_frame(&mut b), read_bytes(EVENTS, &[newest], true));

    // The server still serves, and a second registration is an ordinary one.
    register(&mut c, "y", &[]);
    exchange(&mut other, &resp(&["XLEN", EVENTS]), b":2\r\n");
    exchange(&mut a, &resp(&["PING"]), b"+PONG\r\n");
}

// ===========================================================================
// Consumer groups.

#[test]
fn xgroup_create_from_zero_dollar_or_an_id_and_busygroup_on_duplicate() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "a", &[]);
    register(&mut c, "b", &[]);
    let old = all_events(&mut c);

    let mut raw = server.raw();
    exchange(
        &mut raw,
        &resp(&["XGROUP", "CREATE", EVENTS, "from0", "0"]),
        b"+OK\r\n",
    );
    exchange(
        &mut raw,
        &resp(&["XGROUP", "CREATE", EVENTS, "from0", "0"]),
        b"-BUSYGROUP Consumer Group name already exists\r\n",
    );
    exchange(
        &mut raw,
        &resp(&["XGROUP", "CREATE", EVENTS, "fromnow", "$", "MKSTREAM"]),
        b"+OK\r\n",
    );
    create_group(&mut c, "fromfirst", &old[0].id);
    let r: RedisResult<()> = c.xgroup_create(EVENTS, "typed", "0");
    r.expect("xgroup_create");
    let r: RedisResult<()> = c.xgroup_create(EVENTS, "typed", "$");
    let err = r.expect_err("a second group of that name");
    assert_eq!(err.code(), Some("BUSYGROUP"), "{err}");

    assert_eq!(readgroup(&mut c, "from0", "c", &[], ">"), Some(old.clone()));
    assert_eq!(
        readgroup(&mut c, "fromfirst", "c", &[], ">"),
        Some(old[1..].to_vec())
    );
    assert_eq!(readgroup(&mut c, "fromnow", "c", &[], ">"), None);

    register(&mut c, "new", &[]);
    let new = all_events(&mut c)[2..].to_vec();
    for group in ["from0", "fromnow", "fromfirst"] {
        assert_eq!(
            readgroup(&mut c, group, "c", &[], ">"),
            Some(new.clone()),
            "{group}"
        );
        assert_eq!(readgroup(&mut c, group, "c", &[], ">"), None, "{group}");
    }
}

#[test]
fn xreadgroup_delivers_each_entry_to_one_consumer_of_a_group() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..7 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = ids(&all_events(&mut c));
    create_group(&mut c, "g", "0");
    create_group(&mut c, "h", "0");

    let mut c1 = server.redis();
    let mut c2 = server.redis3();
    let (mut got1, mut got2) = (Vec::<String>::new(), Vec::<String>::new());
    let read = |con: &mut redis::Connection, consumer: &str, count: usize| -> Vec<String> {
        let opts = StreamReadOptions::default()
            .group("g", consumer)
            .count(count);
        let reply: Option<StreamReadReply> = con
            .xread_options(&[EVENTS], &[">"], &opts)
            .expect("xreadgroup");
        reply
            .map(|r| {
                assert_eq!(r.keys.len(), 1);
                assert_eq!(r.keys[0].key, EVENTS);
                r.keys[0].ids.iter().map(|s| s.id.clone()).collect()
            })
            .unwrap_or_default()
    };
    loop {
        let a = read(&mut c1, "c1", 2);
        let b = read(&mut c2, "c2", 1);
        if a.is_empty() && b.is_empty() {
            break;
        }
        got1.extend(a);
        got2.extend(b);
    }
    assert!(!got1.is_empty() && !got2.is_empty(), "{got1:?} {got2:?}");
    let (set1, set2): (BTreeSet<_>, BTreeSet<_>) = (got1.iter().collect(), got2.iter().collect());
    assert!(
        set1.is_disjoint(&set2),
        "delivered to both: {got1:?} {got2:?}"
    );
    assert_eq!(got1.len() + got2.len(), all.len(), "{got1:?} {got2:?}");
    let union: BTreeSet<_> = set1.union(&set2).cloned().collect();
    assert_eq!(union, all.iter().collect());
    assert!(got1.windows(2).all(|w| seq_of(&w[0]) < seq_of(&w[1])));
    assert!(got2.windows(2).all(|w| seq_of(&w[0]) < seq_of(&w[1])));

    // Each consumer holds exactly what it was given.
    let owners: Vec<(String, String)> = pending(&mut c, "g")
        .into_iter()
        .map(|(id, owner, n)| {
            assert_eq!(n, 1, "{id}");
            (id, owner)
        })
        .collect();
    let mut expected: Vec<(String, String)> = got1
        .iter()
        .map(|id| (id.clone(), "c1".to_string()))
        .chain(got2.iter().map(|id| (id.clone(), "c2".to_string())))
        .collect();
    expected.sort_by_key(|(id, _)| seq_of(id));
    assert_eq!(owners, expected);

    // Another group gets everything, independently.
    let mut c3 = server.redis3();
    let opts = StreamReadOptions::default().group("h", "solo");
    let reply: Option<StreamReadReply> = c3
        .xread_options(&[EVENTS], &[">"], &opts)
        .expect("xreadgroup");
    let got: Vec<String> = reply.expect("entries").keys[0]
        .ids
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(got, all);
    assert_eq!(pending_count(&mut c, "g"), 7);
    assert_eq!(pending_count(&mut c, "h"), 7);
}

#[test]
fn xpending_reports_pending_entries_by_consumer_with_delivery_counts() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let id = ids(&all_events(&mut c));
    create_group(&mut c, "g", "0");

    // Nothing pending yet.
    for (mut s, empty) in [
        (server.raw(), &b"*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n"[..]),
        (raw3(&server), &b"*4\r\n:0\r\n_\r\n_\r\n_\r\n"[..]),
    ] {
        exchange(&mut s, &resp(&["XPENDING", EVENTS, "g"]), empty);
    }
    let summary: StreamPendingReply = c.xpending(EVENTS, "g").expect("xpending");
    assert_eq!(summary.count(), 0);

    readgroup(&mut c, "g", "c1", &["COUNT", "2"], ">").expect("two entries");
    readgroup(&mut c, "g", "c2", &[], ">").expect("one entry");

    let mut summary_bytes = b"*4\r\n:3\r\n".to_vec();
    summary_bytes.extend(bulk(&id[0]));
    summary_bytes.extend(bulk(&id[2]));
    summary_bytes.extend_from_slice(b"*2\r\n*2\r\n");
    summary_bytes.extend(bulk("c1"));
    summary_bytes.extend(bulk("2"));
    summary_bytes.extend_from_slice(b"*2\r\n");
    summary_bytes.extend(bulk("c2"));
    summary_bytes.extend(bulk("1"));
    for mut s in [server.raw(), raw3(&server)] {
        exchange(&mut s, &resp(&["XPENDING", EVENTS, "g"]), &summary_bytes);
    }

    for (mut con, proto) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")] {
        let StreamPendingReply::Data(data) = con.xpending(EVENTS, "g").expect("xpending") else {
            panic!("{proto}: entries are pending")
        };
        assert_eq!(data.count, 3, "{proto}");
        assert_eq!(
            (data.start_id.as_str(), data.end_id.as_str()),
            (&*id[0], &*id[2])
        );
        let per: Vec<(String, usize)> = data
            .consumers
            .iter()
            .map(|c| (c.name.clone(), c.pending))
            .collect();
        assert_eq!(
            per,
            [("c1".to_string(), 2), ("c2".to_string(), 1)],
            "{proto}"
        );

        let ext: StreamPendingCountReply = con
            .xpending_count(EVENTS, "g", "-", "+", 10)
            .expect("xpending_count");
        let got: Vec<(String, String, usize)> = ext
            .ids
            .iter()
            .map(|p| (p.id.clone(), p.consumer.clone(), p.times_delivered))
            .collect();
        assert_eq!(
            got,
            [
                (id[0].clone(), "c1".to_string(), 1),
                (id[1].clone(), "c1".to_string(), 1),
                (id[2].clone(), "c2".to_string(), 1),
            ],
            "{proto}"
        );
        let mine: StreamPendingCountReply = con
            .xpending_consumer_count(EVENTS, "g", "-", "+", 10, "c2")
            .expect("xpending_consumer_count");
        let got: Vec<&str> = mine.ids.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(got, [id[2].as_str()], "{proto}");
        let first: StreamPendingCountReply = con
            .xpending_count(EVENTS, "g", "-", "+", 1)
            .expect("xpending_count");
        assert_eq!(first.ids.len(), 1, "{proto}");
        let tail: StreamPendingCountReply = con
            .xpending_count(EVENTS, "g", format!("({}", id[0]), "+", 10)
            .expect("xpending_count");
        let got: Vec<&str> = tail.ids.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(got, [id[1].as_str(), id[2].as_str()], "{proto}");
    }

    // IDLE filters by time since the last delivery.
    let idle_all = call(
        &mut c,
        &["XPENDING", EVENTS, "g", "IDLE", "0", "-", "+", "10"],
    );
    assert_eq!(items(&idle_all).len(), 3);
    let idle_none = call(
        &mut c,
        &["XPENDING", EVENTS, "g", "IDLE", "3600000", "-", "+", "10"],
    );
    assert_eq!(items(&idle_none).len(), 0);
    // Exact bytes of one extended row, idle time aside.
    let mut s = server.raw();
    s.write_all(&resp(&["XPENDING", EVENTS, "g", "-", "+", "1", "c2"]))
        .expect("write");
    let frame = read_frame(&mut s);
    let mut head = b"*1\r\n*4\r\n".to_vec();
    head.extend(bulk(&id[2]));
    head.extend(bulk("c2"));
    head.push(b':');
    assert!(
        frame.starts_with(&head),
        "{:?}",
        String::from_utf8_lossy(&frame)
    );
    assert!(
        frame.ends_with(b"\r\n:1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&frame)
    );
}

#[test]
fn xack_acknowledges_pending_entries_and_counts_only_those() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..4 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let id = ids(&all_events(&mut c));
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "c", &["COUNT", "3"], ">").expect("entries");

    let mut raw = server.raw();
    exchange(
        &mut raw,
        &resp(&["XACK", EVENTS, "g", &id[0], &id[1]]),
        b":2\r\n",
    );
    // Already acknowledged, never delivered, duplicated in one request.
    exchange(&mut raw, &resp(&["XACK", EVENTS, "g", &id[0]]), b":0\r\n");
    exchange(&mut raw, &resp(&["XACK", EVENTS, "g", &id[3]]), b":0\r\n");
    exchange(
        &mut raw,
        &resp(&["XACK", EVENTS, "nogroup", &id[2]]),
        b":0\r\n",
    );
    assert_eq!(pending(&mut c, "g"), [(id[2].clone(), "c".to_string(), 1)]);

    let mut c3 = server.redis3();
    let n: usize = c3.xack(EVENTS, "g", &[&id[2], &id[2]]).expect("xack");
    assert_eq!(n, 1);
    assert_eq!(pending_count(&mut c, "g"), 0);
    let summary: StreamPendingReply = c3.xpending(EVENTS, "g").expect("xpending");
    assert_eq!(summary.count(), 0);
    // Acknowledged entries are not delivered again by `>` nor by history.
    assert_eq!(
        readgroup(&mut c, "g", "c", &[], ">").map(|e| ids(&e)),
        Some(vec![id[3].clone()])
    );
    let n: usize = c3.xack(EVENTS, "g", &[&id[3]]).expect("xack");
    assert_eq!(n, 1);
    assert_eq!(readgroup(&mut c, "g", "c", &[], "0"), Some(vec![]));
}

#[test]
fn xreadgroup_with_an_id_rereads_own_pending_entries_and_counts_deliveries() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    let id = ids(&all);
    create_group(&mut c, "g", "0");
    assert_eq!(
        readgroup(&mut c, "g", "c1", &["COUNT", "2"], ">"),
        Some(all[..2].to_vec())
    );
    assert_eq!(
        readgroup(&mut c, "g", "c2", &[], ">"),
        Some(all[2..].to_vec())
    );

    // Own history only, full entries, each read counted.
    let mut c3 = server.redis3();
    assert_eq!(
        readgroup(&mut c3, "g", "c1", &[], "0"),
        Some(all[..2].to_vec())
    );
    assert_eq!(
        readgroup(&mut c, "g", "c1", &[], "0-0"),
        Some(all[..2].to_vec())
    );
    assert_eq!(
        readgroup(&mut c, "g", "c1", &[], &id[0]),
        Some(all[1..2].to_vec())
    );
    assert_eq!(
        readgroup(&mut c, "g", "c1", &["COUNT", "1"], "0"),
        Some(all[..1].to_vec())
    );
    assert_eq!(
        pending(&mut c, "g"),
        [
            (id[0].clone(), "c1".to_string(), 4),
            (id[1].clone(), "c1".to_string(), 4),
            (id[2].clone(), "c2".to_string(), 1),
        ]
    );
    // History never blocks and never hands out new entries; `>` has nothing new.
    assert_eq!(
        readgroup(&mut c, "g", "c1", &["BLOCK", "5000"], &id[1]),
        Some(vec![])
    );
    assert_eq!(readgroup(&mut c, "g", "stranger", &[], "0"), Some(vec![]));
    assert_eq!(readgroup(&mut c, "g", "c1", &[], ">"), None);

    // Empty history, exact bytes.
    for (mut s, resp3) in [(server.raw(), false), (raw3(&server), true)] {
        exchange(
            &mut s,
            &resp(&["XREADGROUP", "GROUP", "g", "c2", "STREAMS", EVENTS, &id[2]]),
            &read_bytes(EVENTS, &[], resp3),
        );
        exchange(
            &mut s,
            &resp(&["XREADGROUP", "GROUP", "g", "c2", "STREAMS", EVENTS, ">"]),
            nil_bytes(resp3),
        );
    }
}

#[test]
fn xreadgroup_noack_leaves_nothing_pending() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    create_group(&mut c, "g", "0");
    let mut c3 = server.redis3();
    let opts = StreamReadOptions::default().group("g", "c").noack();
    let reply: Option<StreamReadReply> = c3
        .xread_options(&[EVENTS], &[">"], &opts)
        .expect("xreadgroup");
    let got: Vec<String> = reply.expect("entries").keys[0]
        .ids
        .iter()
        .map(|s| s.id.clone())
        .collect();
    assert_eq!(got, ids(&all));
    assert_eq!(pending_count(&mut c, "g"), 0);
    assert_eq!(pending(&mut c, "g"), []);
    assert_eq!(readgroup(&mut c, "g", "c", &[], "0"), Some(vec![]));
    assert_eq!(readgroup(&mut c, "g", "c", &["NOACK"], ">"), None);
    let info = group_info(&mut c, "g");
    assert_eq!(bulk_text(&info["last-delivered-id"]), all[2].id);
    assert_eq!(int(&info["pending"]), 0);
}

#[test]
fn xreadgroup_block_wakes_on_a_registration_and_leaves_it_pending() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "old", &[]);
    create_group(&mut c, "g", "$");

    // Nothing new: nil after the timeout.
    for (mut s, resp3) in [(server.raw(), false), (raw3(&server), true)] {
        let started = Instant::now();
        exchange(
            &mut s,
            &resp(&words("XREADGROUP GROUP g idle BLOCK 100 STREAMS events >")),
            nil_bytes(resp3),
        );
        assert!(started.elapsed() >= Duration::from_millis(90));
    }

    for (i, (mut reader, proto)) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")]
        .into_iter()
        .enumerate()
    {
        let consumer = format!("c{i}");
        name_connection(&mut reader, &consumer);
        let group_consumer = consumer.clone();
        let blocked = thread::spawn(move || {
            let opts = StreamReadOptions::default()
                .group("g", &group_consumer)
                .block(5000);
            let reply: Option<StreamReadReply> = reader
                .xread_options(&[EVENTS], &[">"], &opts)
                .expect("xreadgroup");
            reply
        });
        wait_parked(&server, &consumer, "xreadgroup");
        register(&mut c, &format!("new{i}"), &[]);
        let reply = blocked
            .join()
            .expect("reader thread")
            .unwrap_or_else(|| panic!("{proto}: the blocked XREADGROUP timed out"));
        let newest = all_events(&mut c).pop().expect("an entry");
        let got: Vec<String> = reply.keys[0].ids.iter().map(|s| s.id.clone()).collect();
        assert_eq!(got, std::slice::from_ref(&newest.id), "{proto}");
        assert!(
            pending(&mut c, "g").contains(&(newest.id.clone(), consumer.clone(), 1)),
            "{proto}: {:?}",
            pending(&mut c, "g")
        );
    }

    // Raw BLOCK 0 with a request behind it.
    let mut s = server.raw();
    name_raw(&mut s, "rawc");
    let mut batch = resp(&words("XREADGROUP GROUP g rawc BLOCK 0 STREAMS events >"));
    batch.extend(resp(&["PING"]));
    s.write_all(&batch).expect("write");
    wait_parked(&server, "rawc", "xreadgroup");
    register(&mut c, "rawnew", &[]);
    let newest = all_events(&mut c).pop().expect("an entry");
    let mut expected = read_bytes(EVENTS, std::slice::from_ref(&newest), false);
    expected.extend_from_slice(b"+PONG\r\n");
    assert_eq!(
        String::from_utf8_lossy(&read_n(&mut s, expected.len())),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(pending_count(&mut c, "g"), 3);
    assert!(pending(&mut c, "g").contains(&(newest.id, "rawc".to_string(), 1)));
}

#[test]
fn xclaim_takes_over_entries_idle_long_enough() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[("n", &i.to_string())]);
    }
    let all = all_events(&mut c);
    let id = ids(&all);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "c1", &[], ">").expect("entries");

    // Not idle for an hour: nothing moves.
    let mut raw = server.raw();
    exchange(
        &mut raw,
        &resp(&["XCLAIM", EVENTS, "g", "c2", "3600000", &id[0]]),
        b"*0\r\n",
    );
    assert_eq!(
        pending(&mut c, "g")[0],
        (id[0].clone(), "c1".to_string(), 1)
    );

    // Min-idle 0: claimed, delivered (full entry), counted.
    for (mut con, proto) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")] {
        let claimed: StreamClaimReply =
            con.xclaim(EVENTS, "g", "c2", 0, &[&id[0]]).expect("xclaim");
        assert_eq!(claimed.ids.len(), 1, "{proto}");
        assert_eq!(claimed.ids[0].id, id[0], "{proto}");
        assert_eq!(claimed.ids[0].get::<String>("name").as_deref(), Some("u0"));
    }
    let xclaim_raw = resp(&["XCLAIM", EVENTS, "g", "c2", "0", &id[0]]);
    exchange(&mut raw, &xclaim_raw, &entries_bytes(&all[..1]));
    assert_eq!(
        pending(&mut c, "g")[0],
        (id[0].clone(), "c2".to_string(), 4)
    );

    // JUSTID: ids only, no delivery counted; unknown or acknowledged ids are skipped.
    let n: usize = c.xack(EVENTS, "g", &[&id[2]]).expect("xack");
    assert_eq!(n, 1);
    let opts = StreamClaimOptions::default().with_justid();
    let claimed: Vec<String> = c
        .xclaim_options(EVENTS, "g", "c3", 0, &[&id[1], &id[2]], opts)
        .expect("xclaim JUSTID");
    assert_eq!(claimed, [id[1].clone()]);
    let justid = resp(&["XCLAIM", EVENTS, "g", "c3", "0", &id[1], "JUSTID"]);
    let mut expected = b"*1\r\n".to_vec();
    expected.extend(bulk(&id[1]));
    exchange(&mut raw, &justid, &expected);
    assert_eq!(
        pending(&mut c, "g"),
        [
            (id[0].clone(), "c2".to_string(), 4),
            (id[1].clone(), "c3".to_string(), 1),
        ]
    );
    // The new owner can re-read it; the old one no longer has it.
    assert_eq!(readgroup(&mut c, "g", "c1", &[], "0"), Some(vec![]));
    assert_eq!(
        readgroup(&mut c, "g", "c3", &[], "0"),
        Some(all[1..2].to_vec())
    );
}

#[test]
fn xautoclaim_walks_the_pending_entries_with_a_cursor_until_0_0() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..5 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    let id = ids(&all);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "dead", &[], ">").expect("entries");

    // Not idle long enough: a full scan, nothing claimed.
    let mut raw = server.raw();
    exchange(
        &mut raw,
        &resp(&["XAUTOCLAIM", EVENTS, "g", "c2", "3600000", "0-0"]),
        b"*3\r\n$3\r\n0-0\r\n*0\r\n*0\r\n",
    );

    // Page by page.
    let mut c3 = server.redis3();
    let page: StreamAutoClaimReply = c3
        .xautoclaim_options(
            EVENTS,
            "g",
            "c2",
            0,
            "0-0",
            StreamAutoClaimOptions::default().count(2),
        )
        .expect("xautoclaim");
    assert_eq!(page.next_stream_id, id[2]);
    let got: Vec<String> = page.claimed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, id[..2]);
    assert_eq!(page.claimed[1].get::<String>("name").as_deref(), Some("u1"));
    assert!(page.deleted_ids.is_empty());

    let mut expected = b"*3\r\n".to_vec();
    expected.extend(bulk(&id[4]));
    expected.extend_from_slice(b"*2\r\n");
    expected.extend(bulk(&id[2]));
    expected.extend(bulk(&id[3]));
    expected.extend_from_slice(b"*0\r\n");
    exchange(
        &mut raw,
        &resp(&[
            "XAUTOCLAIM",
            EVENTS,
            "g",
            "c2",
            "0",
            &id[2],
            "COUNT",
            "2",
            "JUSTID",
        ]),
        &expected,
    );

    let mut expected = b"*3\r\n$3\r\n0-0\r\n".to_vec();
    expected.extend(entries_bytes(&all[4..]));
    expected.extend_from_slice(b"*0\r\n");
    exchange(
        &mut raw,
        &resp(&["XAUTOCLAIM", EVENTS, "g", "c2", "0", &id[4], "COUNT", "2"]),
        &expected,
    );

    // Everything moved to c2; JUSTID did not count deliveries.
    let counts: Vec<i64> = pending(&mut c, "g")
        .into_iter()
        .map(|(_, owner, n)| {
            assert_eq!(owner, "c2");
            n
        })
        .collect();
    assert_eq!(counts, [2, 2, 1, 1, 2]);

    // RESP2 through the typed API: one call takes the rest (default COUNT).
    let all_at_once: StreamAutoClaimReply = c
        .xautoclaim_options(
            EVENTS,
            "g",
            "c3",
            0,
            "0",
            StreamAutoClaimOptions::default().with_justid(),
        )
        .expect("xautoclaim");
    assert_eq!(all_at_once.next_stream_id, "0-0");
    let got: Vec<String> = all_at_once.claimed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, id);
    assert!(
        pending(&mut c, "g")
            .iter()
            .all(|(_, owner, _)| owner == "c3")
    );
}

#[test]
fn xinfo_describes_the_stream_its_groups_and_their_consumers() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    unregister(&mut c, "u0");
    let all = all_events(&mut c);
    let id = ids(&all);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "c1", &["COUNT", "3"], ">").expect("entries");
    let n: usize = c.xack(EVENTS, "g", &[&id[0]]).expect("xack");
    assert_eq!(n, 1);
    create_group(&mut c, "h", "$");
    assert_eq!(
        call(&mut c, &["XGROUP", "CREATECONSUMER", EVENTS, "g", "c2"]),
        Value::Int(1)
    );
    assert_eq!(
        call(&mut c, &["XGROUP", "CREATECONSUMER", EVENTS, "g", "c2"]),
        Value::Int(0)
    );

    // XINFO GROUPS, exact (no times in it): g has 2 pending and one entry to go.
    let group = |name: &str, consumers: i64, pending: i64, last: &str, read: i64, lag: i64| {
        let mut out = Vec::new();
        for (k, v) in [
            ("name", bulk(name)),
            ("consumers", format!(":{consumers}\r\n").into_bytes()),
            ("pending", format!(":{pending}\r\n").into_bytes()),
            ("last-delivered-id", bulk(last)),
            ("entries-read", format!(":{read}\r\n").into_bytes()),
            ("lag", format!(":{lag}\r\n").into_bytes()),
        ] {
            out.extend(bulk(k));
            out.extend(v);
        }
        out
    };
    let g = group("g", 2, 2, &id[2], 3, 1);
    let h = group("h", 0, 0, &id[3], 4, 0);
    for (mut s, resp3) in [(server.raw(), false), (raw3(&server), true)] {
        let map = if resp3 { "%6\r\n" } else { "*12\r\n" };
        let mut expected = b"*2\r\n".to_vec();
        for body in [&g, &h] {
            expected.extend_from_slice(map.as_bytes());
            expected.extend_from_slice(body);
        }
        exchange(&mut s, &resp(&["XINFO", "GROUPS", EVENTS]), &expected);
    }

    // name, consumers, pending, last-delivered-id, entries-read, lag
    type GroupRow = (String, usize, usize, String, Option<usize>, Option<usize>);
    for (mut con, proto) in [(server.redis(), "RESP2"), (server.redis3(), "RESP3")] {
        let groups: StreamInfoGroupsReply = con.xinfo_groups(EVENTS).expect("xinfo_groups");
        let got: Vec<GroupRow> = groups
            .groups
            .iter()
            .map(|g| {
                (
                    g.name.clone(),
                    g.consumers,
                    g.pending,
                    g.last_delivered_id.clone(),
                    g.entries_read,
                    g.lag,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("g".into(), 2, 2, id[2].clone(), Some(3), Some(1)),
                ("h".into(), 0, 0, id[3].clone(), Some(4), Some(0)),
            ],
            "{proto}"
        );

        let consumers: StreamInfoConsumersReply =
            con.xinfo_consumers(EVENTS, "g").expect("xinfo_consumers");
        let got: Vec<(String, usize)> = consumers
            .consumers
            .iter()
            .map(|c| (c.name.clone(), c.pending))
            .collect();
        assert_eq!(got, [("c1".into(), 2), ("c2".into(), 0)], "{proto}");
        let raw_consumers = call(&mut con, &["XINFO", "CONSUMERS", EVENTS, "g"]);
        for one in items(&raw_consumers) {
            let fields: Vec<String> = pairs(one).into_iter().map(|(k, _)| k).collect();
            assert_eq!(&fields[..3], ["name", "pending", "idle"], "{proto}");
            let map: BTreeMap<String, Value> = pairs(one).into_iter().collect();
            assert!(int(&map["idle"]) >= 0, "{proto}");
        }

        let stream: StreamInfoStreamReply = con.xinfo_stream(EVENTS).expect("xinfo_stream");
        assert_eq!(stream.length, 4, "{proto}");
        assert_eq!(stream.groups, 2, "{proto}");
        assert_eq!(stream.last_generated_id, id[3], "{proto}");
        assert_eq!(stream.first_entry.id, id[0], "{proto}");
        assert_eq!(stream.last_entry.id, id[3], "{proto}");
        assert_eq!(
            stream.last_entry.get::<String>("kind").as_deref(),
            Some("user.unregistered"),
            "{proto}"
        );
        let map: BTreeMap<String, Value> = pairs(&call(&mut con, &["XINFO", "STREAM", EVENTS]))
            .into_iter()
            .collect();
        assert_eq!(entry(&map["first-entry"]), all[0], "{proto}");
        assert_eq!(entry(&map["last-entry"]), all[3], "{proto}");
        assert_eq!(int(&map["length"]), 4, "{proto}");
    }

    // Delivering the rest brings g's lag to 0.
    readgroup(&mut c, "g", "c2", &[], ">").expect("the last entry");
    let info = group_info(&mut c, "g");
    assert_eq!(int(&info["lag"]), 0);
    assert_eq!(int(&info["entries-read"]), 4);
    assert_eq!(bulk_text(&info["last-delivered-id"]), id[3]);
}

#[test]
fn xgroup_delconsumer_returns_and_drops_its_pending_entries() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let id = ids(&all_events(&mut c));
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "c1", &["COUNT", "2"], ">").expect("entries");
    readgroup(&mut c, "g", "c2", &[], ">").expect("entries");

    let mut raw = server.raw();
    exchange(
        &mut raw,
        &resp(&["XGROUP", "DELCONSUMER", EVENTS, "g", "c1"]),
        b":2\r\n",
    );
    exchange(
        &mut raw,
        &resp(&["XGROUP", "DELCONSUMER", EVENTS, "g", "nobody"]),
        b":0\r\n",
    );
    assert_eq!(pending(&mut c, "g"), [(id[2].clone(), "c2".to_string(), 1)]);
    let consumers: StreamInfoConsumersReply =
        c.xinfo_consumers(EVENTS, "g").expect("xinfo_consumers");
    let names: Vec<&str> = consumers
        .consumers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["c2"]);
    // Its entries are gone from the group, not handed out again.
    assert_eq!(readgroup(&mut c, "g", "c1", &[], "0"), Some(vec![]));
    assert_eq!(readgroup(&mut c, "g", "c3", &[], ">"), None);
    let mut c3 = server.redis3();
    let n: usize = c3
        .xgroup_delconsumer(EVENTS, "g", "c2")
        .expect("delconsumer");
    assert_eq!(n, 1);
    assert_eq!(pending_count(&mut c, "g"), 0);
}

#[test]
fn xgroup_destroy_forgets_the_group_and_its_pending_entries() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "a", &[]);
    register(&mut c, "b", &[]);
    let all = all_events(&mut c);
    create_group(&mut c, "g", "0");
    create_group(&mut c, "keep", "0");
    readgroup(&mut c, "g", "c", &[], ">").expect("entries");
    readgroup(&mut c, "keep", "c", &["COUNT", "1"], ">").expect("entries");

    let mut raw = server.raw();
    exchange(
        &mut raw,
        &resp(&["XGROUP", "DESTROY", EVENTS, "g"]),
        b":1\r\n",
    );
    exchange(
        &mut raw,
        &resp(&["XGROUP", "DESTROY", EVENTS, "g"]),
        b":0\r\n",
    );
    assert_eq!(
        error_text(&call(
            &mut c,
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, ">"]
        )),
        "NOGROUP No such key 'events' or consumer group 'g' in XREADGROUP with GROUP option"
    );
    let groups: StreamInfoGroupsReply = c.xinfo_groups(EVENTS).expect("xinfo_groups");
    let names: Vec<&str> = groups.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["keep"]);
    // The other group is untouched.
    assert_eq!(
        pending(&mut c, "keep"),
        [(all[0].id.clone(), "c".into(), 1)]
    );

    // A group of the same name starts afresh.
    let mut c3 = server.redis3();
    let destroyed: bool = c3.xgroup_destroy(EVENTS, "keep").expect("destroy");
    assert!(destroyed);
    create_group(&mut c, "g", "0");
    assert_eq!(pending_count(&mut c, "g"), 0);
    assert_eq!(readgroup(&mut c, "g", "c", &[], "0"), Some(vec![]));
    assert_eq!(readgroup(&mut c, "g", "c", &[], ">"), Some(all));
}

#[test]
fn xgroup_setid_moves_the_group_position() {
    let server = TestServer::start();
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    create_group(&mut c, "g", "$");
    assert_eq!(readgroup(&mut c, "g", "c", &[], ">"), None);
    assert_eq!(
        call(&mut c, &["XGROUP", "SETID", EVENTS, "g", &all[0].id]),
        Value::Okay
    );
    assert_eq!(
        readgroup(&mut c, "g", "c", &[], ">"),
        Some(all[1..].to_vec())
    );
    let r: RedisResult<()> = c.xgroup_setid(EVENTS, "g", "0");
    r.expect("setid");
    assert_eq!(
        readgroup(&mut c, "g", "c", &["NOACK"], ">"),
        Some(all.clone())
    );
    assert_eq!(
        call(&mut c, &["XGROUP", "SETID", EVENTS, "g", "$"]),
        Value::Okay
    );
    assert_eq!(readgroup(&mut c, "g", "c", &[], ">"), None);
    assert_eq!(
        error_text(&call(&mut c, &["XGROUP", "SETID", EVENTS, "nope", "0"])),
        "NOGROUP No such consumer group 'nope' for key name 'events'"
    );
}

#[test]
fn commands_on_a_missing_group_get_nogroup_errors() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "a", &[]);
    let id = all_events(&mut c)[0].id.clone();
    let reading =
        "NOGROUP No such key 'events' or consumer group 'nope' in XREADGROUP with GROUP option";
    let plain = "NOGROUP No such key 'events' or consumer group 'nope'";
    let admin = "NOGROUP No such consumer group 'nope' for key name 'events'";
    let cases: &[(&[&str], &str)] = &[
        (
            &["XREADGROUP", "GROUP", "nope", "c", "STREAMS", EVENTS, ">"],
            reading,
        ),
        (
            &["XREADGROUP", "GROUP", "nope", "c", "STREAMS", EVENTS, "0"],
            reading,
        ),
        (
            &words("XREADGROUP GROUP nope c BLOCK 5000 STREAMS events >"),
            reading,
        ),
        (&["XPENDING", EVENTS, "nope"], plain),
        (&["XPENDING", EVENTS, "nope", "-", "+", "10"], plain),
        (&["XCLAIM", EVENTS, "nope", "c", "0", &id], plain),
        (&["XAUTOCLAIM", EVENTS, "nope", "c", "0", "0-0"], plain),
        (&["XINFO", "CONSUMERS", EVENTS, "nope"], admin),
        (&["XGROUP", "CREATECONSUMER", EVENTS, "nope", "c"], admin),
        (&["XGROUP", "DELCONSUMER", EVENTS, "nope", "c"], admin),
    ];
    for (mut s, mut con) in [
        (server.raw(), server.redis()),
        (raw3(&server), server.redis3()),
    ] {
        for (args, err) in cases {
            exchange(&mut s, &resp(args), format!("-{err}\r\n").as_bytes());
            assert_eq!(error_text(&call(&mut con, args)), *err, "{args:?}");
        }
        // As in Redis: acknowledging in or destroying a missing group is a 0.
        exchange(&mut s, &resp(&["XACK", EVENTS, "nope", &id]), b":0\r\n");
        exchange(
            &mut s,
            &resp(&["XGROUP", "DESTROY", EVENTS, "nope"]),
            b":0\r\n",
        );
    }
    // None of that created a group.
    assert_eq!(
        call(&mut c, &["XINFO", "GROUPS", EVENTS]),
        Value::Array(vec![])
    );
}

#[test]
fn xreadgroup_with_dollar_gets_the_redis_error() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "a", &[]);
    create_group(&mut c, "g", "0");
    assert_eq!(
        error_text(&call(
            &mut c,
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, "$"]
        )),
        "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the \
         history of this consumer by specifying a proper ID, or use the > ID to get new \
         messages. The $ ID would just return an empty result set."
    );
}

#[test]
fn xclaim_force_creates_pending_entries_counted_as_redis_does() {
    let server = TestServer::start();
    let mut c = server.redis();
    register(&mut c, "a", &[]);
    register(&mut c, "b", &[]);
    let id = ids(&all_events(&mut c));
    create_group(&mut c, "g", "$");
    call(&mut c, &["XCLAIM", EVENTS, "g", "c", "0", &id[0], "FORCE"]);
    call(
        &mut c,
        &["XCLAIM", EVENTS, "g", "c", "0", &id[1], "FORCE", "JUSTID"],
    );
    // Measured on Redis 7.0: FORCE creates the entry delivered once, and the claim
    // counts one more unless JUSTID.
    assert_eq!(
        pending(&mut c, "g"),
        [
            (id[0].clone(), "c".to_string(), 2),
            (id[1].clone(), "c".to_string(), 1),
        ]
    );
}

// ===========================================================================
// Group state across restarts.

#[test]
fn xreadgroup_pending_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("userbus.db");
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut c = server.redis();
    for i in 0..4 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    create_group(&mut c, "g", "0");
    create_group(&mut c, "later", "$");
    readgroup(&mut c, "g", "c1", &["COUNT", "3"], ">").expect("entries");
    let n: usize = c.xack(EVENTS, "g", &[&all[0].id]).expect("xack");
    assert_eq!(n, 1);
    readgroup(&mut c, "g", "c1", &[], "0").expect("history");
    readgroup(&mut c, "g", "c2", &[], ">").expect("the last entry");
    let before_pending = pending(&mut c, "g");
    assert_eq!(
        before_pending,
        [
            (all[1].id.clone(), "c1".to_string(), 2),
            (all[2].id.clone(), "c1".to_string(), 2),
            (all[3].id.clone(), "c2".to_string(), 1),
        ]
    );
    let before_groups = call(&mut c, &["XINFO", "GROUPS", EVENTS]);
    drop(c);
    server.stop();

    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut c = server.redis();
    assert_eq!(pending(&mut c, "g"), before_pending);
    assert_eq!(call(&mut c, &["XINFO", "GROUPS", EVENTS]), before_groups);
    let consumers: StreamInfoConsumersReply =
        c.xinfo_consumers(EVENTS, "g").expect("xinfo_consumers");
    let got: Vec<(String, usize)> = consumers
        .consumers
        .iter()
        .map(|c| (c.name.clone(), c.pending))
        .collect();
    assert_eq!(got, [("c1".into(), 2), ("c2".into(), 1)]);

    // `>` does not hand the read entries out again; history does, counted.
    assert_eq!(readgroup(&mut c, "g", "c3", &[], ">"), None);
    assert_eq!(readgroup(&mut c, "later", "c3", &[], ">"), None);
    let mut c3 = server.redis3();
    assert_eq!(
        readgroup(&mut c3, "g", "c1", &[], "0"),
        Some(all[1..3].to_vec())
    );
    assert_eq!(
        pending(&mut c, "g"),
        [
            (all[1].id.clone(), "c1".to_string(), 3),
            (all[2].id.clone(), "c1".to_string(), 3),
            (all[3].id.clone(), "c2".to_string(), 1),
        ]
    );
    // New registrations continue the log and reach both groups once.
    register(&mut c, "u4", &[]);
    let now = all_events(&mut c);
    assert_consecutive(&now);
    assert_eq!(now[..4], all[..]);
    assert_eq!(
        readgroup(&mut c, "g", "c3", &[], ">"),
        Some(now[4..].to_vec())
    );
    assert_eq!(
        readgroup(&mut c, "later", "c3", &[], ">"),
        Some(now[4..].to_vec())
    );
}

#[test]
fn a_killed_consumer_is_replaced_and_every_registration_is_processed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("userbus.db");
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut producer = server.redis();
    let mut registered: Vec<String> = Vec::new();
    let mut produce = |producer: &mut redis::Connection, range: std::ops::Range<usize>| {
        for i in range {
            let name = format!("user{i}");
            register(producer, &name, &[("n", &i.to_string())]);
            registered.push(name);
        }
    };
    produce(&mut producer, 0..10);
    create_group(&mut producer, "mailer", "0");

    // Consumer A processes three, then takes four more and dies before acking.
    let mut processed: Vec<String> = Vec::new();
    let mut a = server.redis();
    let opts = StreamReadOptions::default().group("mailer", "a").count(3);
    let first: Option<StreamReadReply> = a.xread_options(&[EVENTS], &[">"], &opts).expect("read");
    for e in &first.expect("entries").keys[0].ids {
        processed.push(e.get("name").expect("name"));
        let n: usize = a.xack(EVENTS, "mailer", &[&e.id]).expect("xack");
        assert_eq!(n, 1);
    }
    let opts = StreamReadOptions::default().group("mailer", "a").count(4);
    let taken: Option<StreamReadReply> = a.xread_options(&[EVENTS], &[">"], &opts).expect("read");
    let abandoned: Vec<String> = taken.expect("entries").keys[0]
        .ids
        .iter()
        .map(|e| e.id.clone())
        .collect();
    assert_eq!(abandoned.len(), 4);
    drop(a);

    // More registrations while nobody consumes, then the server restarts.
    produce(&mut producer, 10..15);
    drop(producer);
    server.stop();
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut producer = server.redis();
    produce(&mut producer, 15..20);

    // Consumer B (RESP3) waits until A's entries are idle, claims them page by page,
    // then goes on with new entries.
    let mut b = server.redis3();
    let min_idle = 20;
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let idle: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(EVENTS)
            .arg("mailer")
            .arg("IDLE")
            .arg(min_idle)
            .arg("-")
            .arg("+")
            .arg(100)
            .query(&mut b)
            .expect("xpending idle");
        if idle.ids.len() == abandoned.len() {
            let got: Vec<&str> = idle.ids.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(
                got,
                abandoned.iter().map(String::as_str).collect::<Vec<_>>()
            );
            assert!(idle.ids.iter().all(|p| p.consumer == "a"));
            break;
        }
        assert!(Instant::now() < deadline, "A's entries never became idle");
        thread::sleep(Duration::from_millis(5));
    }
    let mut cursor = "0-0".to_string();
    let mut claimed = Vec::new();
    loop {
        let page: StreamAutoClaimReply = b
            .xautoclaim_options(
                EVENTS,
                "mailer",
                "b",
                min_idle,
                &cursor,
                StreamAutoClaimOptions::default().count(3),
            )
            .expect("xautoclaim");
        for e in &page.claimed {
            processed.push(e.get("name").expect("name"));
            claimed.push(e.id.clone());
            let n: usize = b.xack(EVENTS, "mailer", &[&e.id]).expect("xack");
            assert_eq!(n, 1);
        }
        if page.next_stream_id == "0-0" {
            break;
        }
        cursor = page.next_stream_id;
    }
    assert_eq!(claimed, abandoned);
    loop {
        let opts = StreamReadOptions::default().group("mailer", "b").count(4);
        let reply: Option<StreamReadReply> =
            b.xread_options(&[EVENTS], &[">"], &opts).expect("read");
        let Some(reply) = reply else { break };
        for e in &reply.keys[0].ids {
            processed.push(e.get("name").expect("name"));
            let n: usize = b.xack(EVENTS, "mailer", &[&e.id]).expect("xack");
            assert_eq!(n, 1);
        }
    }

    // Every registration processed (here exactly once), nothing left pending.
    let mut sorted = processed.clone();
    sorted.sort();
    let mut expected = registered.clone();
    expected.sort();
    assert_eq!(sorted, expected, "processed in order: {processed:?}");
    let summary: StreamPendingReply = b.xpending(EVENTS, "mailer").expect("xpending");
    assert_eq!(summary.count(), 0);
    let info = group_info(&mut producer, "mailer");
    assert_eq!(int(&info["pending"]), 0);
    assert_eq!(int(&info["lag"]), 0);
    assert_eq!(int(&info["entries-read"]), 20);
}

// ===========================================================================
// Dead letters.

/// Checks an `events.dead` entry: `event`, `group`, `consumer`, `deliveries`, `at`,
/// then the event's `kind`, `id`, `name`, `fields`.
fn assert_dead(dead: &Entry, event: &Entry, group: &str, consumer: &str, deliveries: i64) {
    assert_eq!(
        dead.field_names(),
        [
            "event",
            "group",
            "consumer",
            "deliveries",
            "at",
            "kind",
            "id",
            "name",
            "fields"
        ],
        "dead letter {}",
        dead.id
    );
    assert_eq!(dead.field("event"), event.id);
    assert_eq!(dead.field("group"), group);
    assert_eq!(dead.field("consumer"), consumer);
    assert_eq!(dead.field("deliveries"), deliveries.to_string());
    let at = rfc3339_ms(dead.field("at"));
    assert!(at >= rfc3339_ms(event.field("at")), "{dead:?} {event:?}");
    for k in ["kind", "id", "name", "fields"] {
        assert_eq!(
            dead.field(k),
            event.field(k),
            "{k} of dead letter {}",
            dead.id
        );
    }
}

#[test]
fn an_entry_reread_past_max_deliveries_goes_to_events_dead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("userbus.db");
    let server = TestServer::start_at(&db, |cfg| cfg.max_deliveries = 2, |b| b);
    let mut c = server.redis();
    register(&mut c, "a", &[("plan", "pro")]);
    register(&mut c, "b", &[]);
    let all = all_events(&mut c);
    create_group(&mut c, "g", "0");
    create_group(&mut c, "other", "0");

    assert_eq!(readgroup(&mut c, "g", "c1", &[], ">"), Some(all.clone()));
    assert_eq!(readgroup(&mut c, "g", "c1", &[], "0"), Some(all.clone()));
    assert_eq!(xlen(&mut c, DEAD), 0);
    // Delivered twice: the next delivery is refused and both become dead letters.
    assert_eq!(readgroup(&mut c, "g", "c1", &[], "0"), Some(vec![]));
    assert_eq!(xlen(&mut c, DEAD), 2);
    assert_eq!(pending_count(&mut c, "g"), 0);
    let n: usize = c
        .xack(EVENTS, "g", &[&all[0].id, &all[1].id])
        .expect("xack");
    assert_eq!(n, 0);
    // The log and the other group are untouched.
    assert_eq!(all_events(&mut c), all);
    assert_eq!(readgroup(&mut c, "other", "x", &[], ">"), Some(all.clone()));

    let dead = xrange(&mut c, &["XRANGE", DEAD, "-", "+"]);
    assert_eq!(dead.len(), 2);
    assert_consecutive(&dead);
    for (d, e) in dead.iter().zip(&all) {
        assert_dead(d, e, "g", "c1", 2);
    }
    // XREAD and XREVRANGE read it too, in both protocols.
    for mut con in [server.redis(), server.redis3()] {
        let v = call(&mut con, &["XREAD", "STREAMS", DEAD, "0"]);
        assert_eq!(read_reply(&v), Some((DEAD.to_string(), dead.clone())));
        let v = call(&mut con, &["XREAD", "STREAMS", DEAD, &dead[0].id]);
        assert_eq!(read_reply(&v), Some((DEAD.to_string(), dead[1..].to_vec())));
        let mut rev = xrange(&mut con, &["XREVRANGE", DEAD, "+", "-"]);
        rev.reverse();
        assert_eq!(rev, dead);
    }
    let mut s = server.raw();
    exchange(
        &mut s,
        &resp(&["XREAD", "STREAMS", DEAD, "0"]),
        &read_bytes(DEAD, &dead, false),
    );
    exchange(&mut s, &resp(&["XLEN", DEAD]), b":2\r\n");

    // Dead letters are durable.
    drop(c);
    drop(s);
    server.stop();
    let server = TestServer::start_at(&db, |cfg| cfg.max_deliveries = 2, |b| b);
    let mut c = server.redis();
    assert_eq!(xrange(&mut c, &["XRANGE", DEAD, "-", "+"]), dead);
    assert_eq!(pending_count(&mut c, "g"), 0);
}

#[test]
fn an_entry_claimed_past_max_deliveries_goes_to_events_dead() {
    let server = TestServer::start_with(|cfg| cfg.max_deliveries = 2, |b| b);
    let mut c = server.redis();
    for i in 0..3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let all = all_events(&mut c);
    let id = ids(&all);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "c1", &[], ">").expect("entries");
    // A second delivery of the first two by claiming; the third stays at one.
    let claimed: StreamClaimReply = c
        .xclaim(EVENTS, "g", "c2", 0, &[&id[0], &id[1]])
        .expect("xclaim");
    assert_eq!(claimed.ids.len(), 2);
    assert_eq!(
        pending(&mut c, "g"),
        [
            (id[0].clone(), "c2".to_string(), 2),
            (id[1].clone(), "c2".to_string(), 2),
            (id[2].clone(), "c1".to_string(), 1),
        ]
    );

    // A third delivery by XCLAIM is refused: dead letter instead.
    let claimed: StreamClaimReply = c.xclaim(EVENTS, "g", "c3", 0, &[&id[0]]).expect("xclaim");
    assert!(claimed.ids.is_empty(), "{claimed:?}");
    assert_eq!(xlen(&mut c, DEAD), 1);
    // By XAUTOCLAIM too: id[1] goes dead, id[2] (one delivery) is claimed.
    let mut c3 = server.redis3();
    let page: StreamAutoClaimReply = c3
        .xautoclaim_options(
            EVENTS,
            "g",
            "c3",
            0,
            "0-0",
            StreamAutoClaimOptions::default(),
        )
        .expect("xautoclaim");
    assert_eq!(page.next_stream_id, "0-0");
    let got: Vec<String> = page.claimed.iter().map(|s| s.id.clone()).collect();
    assert_eq!(got, [id[2].clone()]);
    assert_eq!(xlen(&mut c, DEAD), 2);
    assert_eq!(pending(&mut c, "g"), [(id[2].clone(), "c3".to_string(), 2)]);
    let n: usize = c.xack(EVENTS, "g", &[&id[0], &id[1]]).expect("xack");
    assert_eq!(n, 0);

    let dead = xrange(&mut c, &["XRANGE", DEAD, "-", "+"]);
    let events: Vec<&str> = dead.iter().map(|d| d.field("event")).collect();
    assert_eq!(events, [id[0].as_str(), id[1].as_str()]);
    for d in &dead {
        assert_eq!(d.field("group"), "g");
        assert_eq!(d.field("deliveries"), "2");
    }
    // XREADGROUP history of the last one, now at its limit, buries it as well.
    assert_eq!(readgroup(&mut c, "g", "c3", &[], "0"), Some(vec![]));
    assert_eq!(xlen(&mut c, DEAD), 3);
    assert_eq!(pending_count(&mut c, "g"), 0);
}

#[test]
fn a_dead_letter_names_the_consumer_that_last_had_the_entry() {
    let server = TestServer::start_with(|cfg| cfg.max_deliveries = 2, |b| b);
    let mut c = server.redis();
    register(&mut c, "a", &[]);
    register(&mut c, "b", &[]);
    let all = all_events(&mut c);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "owner", &[], ">").expect("entries");
    readgroup(&mut c, "g", "owner", &[], "0").expect("history");
    call(&mut c, &["XCLAIM", EVENTS, "g", "claimer", "0", &all[0].id]);
    call(
        &mut c,
        &["XAUTOCLAIM", EVENTS, "g", "autoclaimer", "0", "0-0"],
    );
    let dead = xrange(&mut c, &["XRANGE", DEAD, "-", "+"]);
    assert_eq!(dead.len(), 2);
    for (d, e) in dead.iter().zip(&all) {
        assert_dead(d, e, "g", "owner", 2);
    }
}

// ===========================================================================
// Rolled-back ticks.

#[test]
fn a_rolled_back_tick_adds_no_entries_and_wakes_no_reader() {
    let server =
        TestServer::start_with(|cfg| cfg.max_db_pages = common::fresh_db_pages() + 3, |b| b);
    let mut c = server.redis();
    let mut reader = server.raw();
    name_raw(&mut reader, "reader");
    reader
        .write_all(&resp(&["XREAD", "BLOCK", "0", "STREAMS", EVENTS, "$"]))
        .expect("write");
    wait_parked(&server, "reader", "xread");

    // One write, so one tick: the small registration would fit, the big one does
    // not, and the tick is one transaction.
    let mut writer = server.raw();
    let mut batch = resp(&["REGISTER", "small"]);
    batch.extend(big_register("big"));
    writer.write_all(&batch).expect("write");
    for what in ["small", "big"] {
        let line = String::from_utf8_lossy(&read_until_suffix(&mut writer, b"\r\n")).into_owned();
        assert!(
            line.starts_with("-ERR storage: "),
            "REGISTER {what} replied {line:?}"
        );
    }
    assert_eq!(xlen(&mut c, EVENTS), 0);
    assert_eq!(all_events(&mut c), []);
    assert_eq!(
        read_events(&call(&mut c, &["XREAD", "STREAMS", EVENTS, "0"])),
        None
    );
    let stream: StreamInfoStreamReply = c.xinfo_stream(EVENTS).expect("xinfo_stream");
    assert_eq!(stream.length, 0);

    // The parked reader is still parked, and the next commit wakes it with exactly
    // that commit's entry.
    let from = now_ms();
    let uid = register(&mut c, "after", &[]);
    let to = now_ms();
    let all = all_events(&mut c);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_event(&all[0], &registered(uid, "after", &[]), from, to);
    assert_eq!(read_frame(&mut reader), read_bytes(EVENTS, &all, false));
    exchange(&mut reader, &resp(&["XLEN", EVENTS]), b":1\r\n");
}
