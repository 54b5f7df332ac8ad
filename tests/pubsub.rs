//! Live pub/sub: SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE on
//! `user.registered` and `user.unregistered`, byte-compatible with Redis.
//!
//! Raw sockets check Redis's exact shapes in RESP2 and RESP3 (confirmations,
//! `message`/`pmessage`, the subscribed-mode rules); the `redis` crate's PubSub and
//! push sender prove a real client works. The rest is about which pushes leave and
//! when: each committed event exactly once per subscriber, in commit order, only
//! after its commit, none for no-ops, errors or rolled-back ticks; a stalled
//! subscriber is dropped at its output limits while a reader keeps up; the index
//! forgets closed subscribers.
//!
//! Wherever the server decides a value (ids, seq, timestamps) the expectation comes
//! from the server's own replies, never from this file.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Barrier;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::reply::{info, register, unregister};
use common::{
    IO_TIMEOUT, TestServer, assert_bytes, big_register, bulk, fields, now_ms, resp, rfc3339_utc_ms,
    show, tight_max_pages,
};
use redis::{PushKind, Value};
use rusqlite::OptionalExtension;
use userbus::config::{MAX_FIELD_VALUE_BYTES, MAX_FIELDS};

const REGISTERED: &str = "user.registered";
const UNREGISTERED: &str = "user.unregistered";

/// PING's reply to a subscribed RESP2 client.
const SUBSCRIBED_PONG: &[u8] = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";

/// How long a test polls the server for a state it must reach.
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Bytes and frames
// ---------------------------------------------------------------------------

/// `REGISTER name [field value ...]` as a RESP request.
fn register_req(name: &str, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut args = vec!["REGISTER", name];
    for (k, v) in fields {
        args.push(k);
        args.push(v);
    }
    resp(&args)
}

/// An array (`*`) or push (`>`) of bulk strings followed by an optional integer:
/// the shape of every pub/sub confirmation and message.
fn frame_of(resp3: bool, bulks: &[&[u8]], count: Option<i64>) -> Vec<u8> {
    let n = bulks.len() + usize::from(count.is_some());
    let mut v = format!("{}{n}\r\n", if resp3 { '>' } else { '*' }).into_bytes();
    for b in bulks {
        v.extend_from_slice(&bulk(b));
    }
    if let Some(c) = count {
        v.extend_from_slice(format!(":{c}\r\n").as_bytes());
    }
    v
}

/// `[word, name, :count]`: a (p)(un)subscribe confirmation.
fn confirmation(resp3: bool, word: &str, name: &str, count: i64) -> Vec<u8> {
    frame_of(resp3, &[word.as_bytes(), name.as_bytes()], Some(count))
}

/// One parsed RESP2/RESP3 value.
#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
    Push(Vec<Resp>),
    Map(Vec<Resp>),
    Verbatim(String),
}

/// The complete value at the front of `buf` and its length, or `None` while it has
/// not all arrived. Malformed bytes fail the test.
fn parse(buf: &[u8]) -> Option<(Resp, usize)> {
    let nl = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..nl])
        .unwrap_or_else(|_| panic!("header is not UTF-8: {}", show(buf)));
    let after = nl + 2;
    let num = || -> i64 {
        line.parse()
            .unwrap_or_else(|_| panic!("bad RESP number in {}", show(buf)))
    };
    let value = match buf[0] {
        b'+' => (Resp::Simple(line.to_string()), after),
        b'-' => (Resp::Error(line.to_string()), after),
        b':' => (Resp::Int(num()), after),
        b'_' => (Resp::Nil, after),
        b'$' | b'=' => {
            let n = num();
            if n < 0 {
                return Some((Resp::Nil, after));
            }
            let end = after + n as usize;
            if buf.len() < end + 2 {
                return None;
            }
            assert_bytes(&buf[end..end + 2], b"\r\n", "end of a bulk string");
            let data = buf[after..end].to_vec();
            let v = if buf[0] == b'$' {
                Resp::Bulk(data)
            } else {
                Resp::Verbatim(String::from_utf8_lossy(&data[4..]).into_owned())
            };
            (v, end + 2)
        }
        b'*' | b'>' | b'%' | b'~' => {
            let n = num();
            if n < 0 {
                return Some((Resp::Nil, after));
            }
            let elements = if buf[0] == b'%' { 2 * n } else { n };
            let mut items = Vec::new();
            let mut pos = after;
            for _ in 0..elements {
                let (v, len) = parse(&buf[pos..])?;
                items.push(v);
                pos += len;
            }
            let v = match buf[0] {
                b'>' => Resp::Push(items),
                b'%' => Resp::Map(items),
                _ => Resp::Array(items),
            };
            (v, pos)
        }
        _ => panic!("not a RESP value: {}", show(buf)),
    };
    Some(value)
}

/// The bytes of a bulk string element.
fn bytes_of(v: &Resp) -> &[u8] {
    match v {
        Resp::Bulk(b) => b,
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

fn text_of(v: &Resp) -> String {
    String::from_utf8(bytes_of(v).to_vec()).expect("UTF-8 bulk")
}

// ---------------------------------------------------------------------------
// Events as subscribers see them
// ---------------------------------------------------------------------------

/// A decoded event payload.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    seq: i64,
    kind: String,
    id: i64,
    name: String,
    fields: BTreeMap<String, String>,
    at: String,
}

/// Decodes an event payload and checks it has exactly the documented keys and
/// types, with `at` in RFC 3339 UTC.
#[track_caller]
fn event(payload: &[u8]) -> Ev {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("payload is not JSON ({e}): {}", show(payload)));
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("payload is not an object: {}", show(payload)));
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["at", "fields", "id", "kind", "name", "seq"],
        "payload keys of {}",
        show(payload)
    );
    let int = |k: &str| {
        obj[k]
            .as_i64()
            .unwrap_or_else(|| panic!("{k} is not an integer in {}", show(payload)))
    };
    let string = |k: &str| {
        obj[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} is not a string in {}", show(payload)))
            .to_string()
    };
    let fields = obj["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("fields is not an object in {}", show(payload)))
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("field {k} is not a string in {}", show(payload)));
            (k.clone(), v.to_string())
        })
        .collect();
    let at = string("at");
    assert!(
        rfc3339_utc_ms(&at).is_some(),
        "at {at:?} is not RFC 3339 UTC"
    );
    Ev {
        seq: int("seq"),
        kind: string("kind"),
        id: int("id"),
        name: string("name"),
        fields,
        at,
    }
}

/// Checks what a client can know about an event from its own requests and replies.
#[track_caller]
fn assert_event(ev: &Ev, kind: &str, id: i64, name: &str, fields: &[(&str, &str)]) {
    assert_eq!(
        (ev.kind.as_str(), ev.id, ev.name.as_str(), &ev.fields),
        (kind, id, name, &common::fields(fields)),
        "event {ev:?}"
    );
}

#[track_caller]
fn assert_seq_increasing(events: &[Ev]) {
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq must strictly increase: {:?}",
        events.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
}

/// One pushed message: `message` (no pattern) or `pmessage`.
#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    pattern: Option<String>,
    channel: String,
    event: Ev,
}

/// Decodes a `message` or `pmessage` frame after checking its exact Redis shape:
/// an array in RESP2, a push in RESP3, of bulk strings.
#[track_caller]
fn delivery(raw: &[u8], v: &Resp, resp3: bool) -> Delivery {
    let items = match (v, resp3) {
        (Resp::Push(items), true) | (Resp::Array(items), false) => items,
        _ => panic!(
            "expected a {} message, got {}",
            if resp3 { "push" } else { "array" },
            show(raw)
        ),
    };
    let parts: Vec<&[u8]> = items.iter().map(bytes_of).collect();
    let (pattern, channel, payload) = match parts.as_slice() {
        [b"message", ch, payload] => (None, *ch, *payload),
        [b"pmessage", p, ch, payload] => (Some(*p), *ch, *payload),
        _ => panic!("not a message: {}", show(raw)),
    };
    assert_bytes(raw, &frame_of(resp3, &parts, None), "message frame");
    Delivery {
        pattern: pattern.map(|p| String::from_utf8_lossy(p).into_owned()),
        channel: String::from_utf8_lossy(channel).into_owned(),
        event: event(payload),
    }
}

// ---------------------------------------------------------------------------
// A raw connection
// ---------------------------------------------------------------------------

/// A raw socket that reads whole frames, as `nc` plus a careful eye would.
struct Wire {
    s: TcpStream,
    buf: Vec<u8>,
    resp3: bool,
}

impl Wire {
    /// A RESP2 connection.
    fn open(server: &TestServer) -> Wire {
        Wire {
            s: server.raw(),
            buf: Vec::new(),
            resp3: false,
        }
    }

    /// A RESP3 connection when `resp3`, else a RESP2 one.
    fn open_as(server: &TestServer, resp3: bool) -> Wire {
        if resp3 {
            Wire::open3(server)
        } else {
            Wire::open(server)
        }
    }

    /// A server with default settings and a connection to it (RESP3 when `resp3`).
    fn start(resp3: bool) -> (TestServer, Wire) {
        let server = TestServer::start();
        let w = Wire::open_as(&server, resp3);
        (server, w)
    }

    /// A connection that sent `HELLO 3` and read its map.
    fn open3(server: &TestServer) -> Wire {
        let mut w = Wire::open(server);
        w.send(&resp(&["HELLO", "3"]));
        match w.next() {
            Resp::Map(_) => {}
            other => panic!("HELLO 3 replied {other:?}"),
        }
        w.resp3 = true;
        w
    }

    fn send(&mut self, req: &[u8]) {
        self.s.write_all(req).expect("write request");
    }

    /// Reads more bytes; `false` at end of stream.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = self
            .s
            .read(&mut chunk)
            .unwrap_or_else(|e| panic!("reading a frame failed ({e}); have {}", show(&self.buf)));
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next complete frame: its exact bytes and its parsed form.
    fn frame(&mut self) -> (Vec<u8>, Resp) {
        loop {
            if let Some((v, len)) = parse(&self.buf) {
                return (self.buf.drain(..len).collect(), v);
            }
            assert!(
                self.fill(),
                "server closed while a frame was expected; have {}",
                show(&self.buf)
            );
        }
    }

    fn next(&mut self) -> Resp {
        self.frame().1
    }

    /// The next frame must be exactly `want`.
    #[track_caller]
    fn expect(&mut self, want: &[u8]) {
        let (got, _) = self.frame();
        assert_bytes(&got, want, "next frame");
    }

    #[track_caller]
    fn call(&mut self, req: &[u8], want: &[u8]) {
        self.send(req);
        let (got, _) = self.frame();
        assert_bytes(&got, want, &format!("reply to {}", show(req)));
    }

    #[track_caller]
    fn int(&mut self) -> i64 {
        match self.next() {
            Resp::Int(n) => n,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    /// REGISTER on this connection; returns the reply's integer.
    #[track_caller]
    fn register(&mut self, name: &str, fields: &[(&str, &str)]) -> i64 {
        self.send(&register_req(name, fields));
        self.int()
    }

    /// Reads the next frame, which must be a `message` or `pmessage` of the exact
    /// Redis shape for this connection's protocol, and decodes its payload.
    #[track_caller]
    fn message(&mut self) -> Delivery {
        let (raw, v) = self.frame();
        delivery(&raw, &v, self.resp3)
    }

    /// The next message, which must come on `channel`, through `pattern` when given.
    #[track_caller]
    fn event_via(&mut self, pattern: Option<&str>, channel: &str) -> Ev {
        let d = self.message();
        assert_eq!(
            (d.pattern.as_deref(), d.channel.as_str()),
            (pattern, channel),
            "delivery {d:?}"
        );
        d.event
    }

    /// The next message, which must come on `channel` without a pattern.
    #[track_caller]
    fn event_on(&mut self, channel: &str) -> Ev {
        self.event_via(None, channel)
    }

    /// The next `n` messages on `channel`, or through `pattern` when given.
    fn events(&mut self, n: usize, pattern: Option<&str>, channel: &str) -> Vec<Ev> {
        (0..n).map(|_| self.event_via(pattern, channel)).collect()
    }

    /// Reads until the server closes (a reset counts as closed): the complete frames
    /// that came first and the bytes of a frame cut short.
    fn until_closed(&mut self) -> (Vec<Resp>, Vec<u8>) {
        let mut frames = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some((v, len)) = parse(&self.buf) {
                self.buf.drain(..len);
                frames.push(v);
            }
            match self.s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading until close: {e}"),
            }
        }
        (frames, std::mem::take(&mut self.buf))
    }
}

// ---------------------------------------------------------------------------
// The `redis` crate side
// ---------------------------------------------------------------------------

/// LOOKUP's `created_at` (RESP2 flat array reply).
fn created_at(c: &mut redis::Connection, name: &str) -> String {
    let v: Vec<Value> = redis::cmd("LOOKUP").arg(name).query(c).expect("LOOKUP");
    let pos = v
        .iter()
        .position(|x| *x == Value::BulkString(b"created_at".to_vec()))
        .unwrap_or_else(|| panic!("no created_at in {v:?}"));
    match &v[pos + 1] {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8"),
        other => panic!("created_at is {other:?}"),
    }
}

fn stat(c: &mut redis::Connection, name: &str) -> u64 {
    info(c, "stats")
        .get(name)
        .unwrap_or_else(|| panic!("INFO stats has no {name}"))
        .parse()
        .expect("a number")
}

/// INFO stats' `pubsub_channels` and `pubsub_patterns`: the distinct channels and
/// patterns with at least one subscriber.
fn pubsub_counts(c: &mut redis::Connection) -> [String; 2] {
    let stats = info(c, "stats");
    ["pubsub_channels", "pubsub_patterns"].map(|k| stats[k].clone())
}

/// CLIENT LIST [args...] as one map per line.
fn client_list(c: &mut redis::Connection, args: &[&str]) -> Vec<BTreeMap<String, String>> {
    let text: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg(args)
        .query(c)
        .expect("CLIENT LIST");
    text.lines()
        .map(|l| {
            l.split(' ')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// Polls `check` until it holds, failing after DEADLINE.
#[track_caller]
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection (RESP3 when `resp3`) that sent `command`, SUBSCRIBE or PSUBSCRIBE,
/// for `names` and read each confirmation.
fn subscribed(server: &TestServer, resp3: bool, command: &str, names: &[&str]) -> Wire {
    let mut w = Wire::open_as(server, resp3);
    let mut req = vec![command];
    req.extend_from_slice(names);
    w.send(&resp(&req));
    let word = command.to_lowercase();
    for (i, name) in names.iter().enumerate() {
        w.expect(&confirmation(resp3, &word, name, i as i64 + 1));
    }
    w
}

/// A subscriber on `channels`, confirmed.
fn subscriber(server: &TestServer, resp3: bool, channels: &[&str]) -> Wire {
    subscribed(server, resp3, "SUBSCRIBE", channels)
}

/// A subscriber on `patterns`, confirmed.
fn psubscriber(server: &TestServer, resp3: bool, patterns: &[&str]) -> Wire {
    subscribed(server, resp3, "PSUBSCRIBE", patterns)
}

// ---------------------------------------------------------------------------
// Exact shapes, RESP2
// ---------------------------------------------------------------------------

#[test]
fn subscribe_confirms_each_channel_with_the_running_count() {
    let (_server, mut s) = Wire::start(false);
    s.send(b"SUBSCRIBE user.registered user.unregistered\r\n");
    s.expect(b"*3\r\n$9\r\nsubscribe\r\n$15\r\nuser.registered\r\n:1\r\n");
    s.expect(b"*3\r\n$9\r\nsubscribe\r\n$17\r\nuser.unregistered\r\n:2\r\n");
    // The count is channels plus patterns.
    s.call(
        &resp(&["PSUBSCRIBE", "user.*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$6\r\nuser.*\r\n:3\r\n",
    );
    // Subscribing again to what it has changes nothing, as in Redis.
    s.call(
        &resp(&["SUBSCRIBE", REGISTERED]),
        b"*3\r\n$9\r\nsubscribe\r\n$15\r\nuser.registered\r\n:3\r\n",
    );
    s.send(&resp(&["PSUBSCRIBE", "user.*", "*registered"]));
    s.expect(b"*3\r\n$10\r\npsubscribe\r\n$6\r\nuser.*\r\n:3\r\n");
    s.expect(b"*3\r\n$10\r\npsubscribe\r\n$11\r\n*registered\r\n:4\r\n");
}

#[test]
fn subscriber_gets_message_and_pmessage_after_commit() {
    let (server, mut s) = Wire::start(false);
    s.call(
        &resp(&["SUBSCRIBE", REGISTERED]),
        b"*3\r\n$9\r\nsubscribe\r\n$15\r\nuser.registered\r\n:1\r\n",
    );
    s.call(
        &resp(&["PSUBSCRIBE", "user.*"]),
        b"*3\r\n$10\r\npsubscribe\r\n$6\r\nuser.*\r\n:2\r\n",
    );

    let mut c = server.redis();
    let fields = [("email", "alice@example.com"), ("plan", "pro \"β\"")];
    let before = now_ms();
    let id = register(&mut c, "alice", &fields);
    let after = now_ms();
    assert!(id > 0, "REGISTER alice replied {id}");

    // The channel subscription's message first, then the pattern's, as Redis
    // publishes: the same payload in both.
    let (raw, v) = s.frame();
    let payload = match &v {
        Resp::Array(items) if items.len() == 3 => bytes_of(&items[2]).to_vec(),
        _ => panic!("expected a message, got {}", show(&raw)),
    };
    let mut want = b"*3\r\n$7\r\nmessage\r\n$15\r\nuser.registered\r\n".to_vec();
    want.extend_from_slice(&bulk(&payload));
    assert_bytes(&raw, &want, "message frame");

    let mut want = b"*4\r\n$8\r\npmessage\r\n$6\r\nuser.*\r\n$15\r\nuser.registered\r\n".to_vec();
    want.extend_from_slice(&bulk(&payload));
    s.expect(&want);

    let ev = event(&payload);
    assert_event(&ev, REGISTERED, id, "alice", &fields);
    assert!(ev.seq > 0, "seq {}", ev.seq);
    let at = rfc3339_utc_ms(&ev.at).expect("RFC 3339");
    assert!(
        (before..=after).contains(&at),
        "at {} is not between {before} and {after} (ms)",
        ev.at
    );
    assert_eq!(
        ev.at,
        created_at(&mut c, "alice"),
        "at vs LOOKUP created_at"
    );
    // The documented key order, strings escaped as JSON.
    let want = format!(
        r#"{{"seq":{},"kind":"user.registered","id":{id},"name":"alice","fields":{{"email":"alice@example.com","plan":"pro \"β\""}},"at":"{}"}}"#,
        ev.seq, ev.at
    );
    assert_eq!(String::from_utf8_lossy(&payload), want);
}

#[test]
fn unsubscribe_without_subscriptions_replies_nil_and_zero() {
    let (_server, mut s) = Wire::start(false);
    s.call(
        b"UNSUBSCRIBE\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    );
    s.call(
        &resp(&["PUNSUBSCRIBE"]),
        b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n",
    );
    // Naming what it does not have confirms each name with the count.
    s.send(&resp(&["UNSUBSCRIBE", REGISTERED, "nope"]));
    s.expect(b"*3\r\n$11\r\nunsubscribe\r\n$15\r\nuser.registered\r\n:0\r\n");
    s.expect(b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnope\r\n:0\r\n");
    // None of it entered subscribed mode.
    s.call(b"PING\r\n", b"+PONG\r\n");
    s.call(&resp(&["LOOKUP", "x"]), b"$-1\r\n");
}

#[test]
fn unsubscribe_without_arguments_leaves_every_channel() {
    let server = TestServer::start();
    let mut s = subscriber(&server, false, &[REGISTERED, UNREGISTERED]);
    s.call(
        &resp(&["PSUBSCRIBE", "user.*"]),
        &confirmation(false, "psubscribe", "user.*", 3),
    );
    // A channel it does not have: confirmed, count unchanged.
    s.call(
        &resp(&["UNSUBSCRIBE", "nope"]),
        &confirmation(false, "unsubscribe", "nope", 3),
    );

    // One reply per channel, counts falling; the pattern stays.
    s.send(b"UNSUBSCRIBE\r\n");
    let mut left = BTreeSet::new();
    for count in [2, 1] {
        match s.next() {
            Resp::Array(items) => {
                assert_eq!(items.len(), 3, "{items:?}");
                assert_eq!(text_of(&items[0]), "unsubscribe");
                left.insert(text_of(&items[1]));
                assert_eq!(items[2], Resp::Int(count), "{items:?}");
            }
            other => panic!("expected an unsubscribe confirmation, got {other:?}"),
        }
    }
    assert_eq!(
        left,
        BTreeSet::from([REGISTERED.to_string(), UNREGISTERED.to_string()])
    );
    // Still subscribed through the pattern: RESP2 rules still apply.
    s.call(b"PING\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    s.call(
        b"PUNSUBSCRIBE\r\n",
        &confirmation(false, "punsubscribe", "user.*", 0),
    );

    // Out of subscribed mode: normal commands and replies, and no more pushes.
    s.call(b"PING\r\n", b"+PONG\r\n");
    s.call(&resp(&["LOOKUP", "bob"]), b"$-1\r\n");
    let id = s.register("bob", &[]);
    assert!(id > 0, "REGISTER bob replied {id}");
    s.call(b"PING\r\n", b"+PONG\r\n");
    s.call(
        b"UNSUBSCRIBE\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    );
}

// ---------------------------------------------------------------------------
// RESP2 subscribed mode
// ---------------------------------------------------------------------------

#[test]
fn resp2_subscribed_client_may_only_run_pubsub_commands_ping_and_quit() {
    let server = TestServer::start();
    let mut s = subscriber(&server, false, &[REGISTERED]);
    s.call(
        &resp(&["LOOKUP", "x"]),
        b"-ERR Can't execute 'lookup': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
          RESET are allowed in this context\r\n",
    );
    // Refused, not run: the name stays free and no event is published.
    s.call(
        &register_req("carol", &[]),
        b"-ERR Can't execute 'register': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
          RESET are allowed in this context\r\n",
    );
    // The connection stays, and PING answers in the shape of a push.
    s.call(b"PING\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    s.call(&resp(&["PING", "hi"]), b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n");
    // Subscription commands still work.
    s.call(
        &resp(&["SUBSCRIBE", UNREGISTERED]),
        &confirmation(false, "subscribe", UNREGISTERED, 2),
    );

    let mut c = server.redis();
    let id = register(&mut c, "carol", &[]);
    assert!(
        id > 0,
        "carol was not registered by the refused REGISTER: {id}"
    );
    assert_event(&s.event_on(REGISTERED), REGISTERED, id, "carol", &[]);

    s.send(b"QUIT\r\n");
    let (frames, rest) = s.until_closed();
    assert_eq!(frames, [Resp::Simple("OK".into())]);
    assert_bytes(&rest, b"", "after QUIT's +OK");
}

#[test]
fn resp2_register_pipelined_after_subscribe_is_refused() {
    let server = TestServer::start();
    let mut watcher = subscriber(&server, false, &[REGISTERED]);
    // One packet: SUBSCRIBE, then REGISTER which runs in subscribed mode.
    let mut s = Wire::open(&server);
    let mut batch = resp(&["SUBSCRIBE", REGISTERED]);
    batch.extend(register_req("dave", &[]));
    batch.extend(b"PING\r\n");
    s.send(&batch);
    s.expect(&confirmation(false, "subscribe", REGISTERED, 1));
    s.expect(
        b"-ERR Can't execute 'register': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
          RESET are allowed in this context\r\n",
    );
    s.expect(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");

    // Nothing was published: the next event anyone sees is the next registration.
    let mut c = server.redis();
    let id = register(&mut c, "erin", &[]);
    assert_event(&watcher.event_on(REGISTERED), REGISTERED, id, "erin", &[]);
    assert_event(&s.event_on(REGISTERED), REGISTERED, id, "erin", &[]);
}

// ---------------------------------------------------------------------------
// RESP3
// ---------------------------------------------------------------------------

#[test]
fn resp3_confirmations_and_messages_are_push_frames() {
    let (server, mut s) = Wire::start(true);
    s.call(
        b"UNSUBSCRIBE\r\n",
        b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
    );
    s.call(
        b"PUNSUBSCRIBE\r\n",
        b">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n",
    );
    s.send(&resp(&["SUBSCRIBE", REGISTERED, UNREGISTERED]));
    s.expect(b">3\r\n$9\r\nsubscribe\r\n$15\r\nuser.registered\r\n:1\r\n");
    s.expect(b">3\r\n$9\r\nsubscribe\r\n$17\r\nuser.unregistered\r\n:2\r\n");
    s.call(
        &resp(&["PSUBSCRIBE", "user.*"]),
        b">3\r\n$10\r\npsubscribe\r\n$6\r\nuser.*\r\n:3\r\n",
    );

    let mut c = server.redis();
    let id = register(&mut c, "frank", &[("k", "v")]);
    // Wire::message checks the exact `>3`/`>4` shapes.
    let m = s.event_via(None, REGISTERED);
    assert_event(&m, REGISTERED, id, "frank", &[("k", "v")]);
    let p = s.event_via(Some("user.*"), REGISTERED);
    assert_eq!(p, m);

    assert_eq!(unregister(&mut c, "frank"), 1);
    let m = s.event_via(None, UNREGISTERED);
    assert_event(&m, UNREGISTERED, id, "frank", &[("k", "v")]);
    let p = s.event_via(Some("user.*"), UNREGISTERED);
    assert_eq!(p, m);

    s.call(
        &resp(&["UNSUBSCRIBE", REGISTERED]),
        b">3\r\n$11\r\nunsubscribe\r\n$15\r\nuser.registered\r\n:2\r\n",
    );
    s.call(
        &resp(&["PUNSUBSCRIBE", "user.*"]),
        b">3\r\n$12\r\npunsubscribe\r\n$6\r\nuser.*\r\n:1\r\n",
    );
}

#[test]
fn resp3_subscriber_runs_any_command_and_gets_normal_replies() {
    let server = TestServer::start();
    let mut s = subscriber(&server, true, &[REGISTERED]);
    s.call(&resp(&["LOOKUP", "gina"]), b"_\r\n");
    s.call(b"PING\r\n", b"+PONG\r\n");
    s.call(&resp(&["PING", "hi"]), b"$2\r\nhi\r\n");
    s.call(&resp(&["USERCOUNT"]), b":0\r\n");

    // Its own registration: the reply, then (after the commit) the push.
    let id = s.register("gina", &[("team", "blue")]);
    assert!(id > 0, "REGISTER gina replied {id}");
    assert_event(
        &s.event_on(REGISTERED),
        REGISTERED,
        id,
        "gina",
        &[("team", "blue")],
    );
    // Nothing else was pending: the next frame is the next reply, a RESP3 map.
    s.send(&resp(&["LOOKUP", "gina"]));
    match s.next() {
        Resp::Map(items) => assert!(
            items.contains(&Resp::Bulk(b"gina".to_vec())),
            "LOOKUP gina: {items:?}"
        ),
        other => panic!("LOOKUP gina replied {other:?}"),
    }
    s.call(&resp(&["USERCOUNT"]), b":1\r\n");
}

#[test]
fn resp3_subscribe_and_register_in_one_packet_get_confirmation_reply_then_push() {
    let (_server, mut s) = Wire::start(true);
    let mut batch = resp(&["SUBSCRIBE", REGISTERED]);
    batch.extend(register_req("hana", &[]));
    s.send(&batch);
    s.expect(&confirmation(true, "subscribe", REGISTERED, 1));
    let id = s.int();
    assert!(id > 0, "REGISTER hana replied {id}");
    assert_event(&s.event_on(REGISTERED), REGISTERED, id, "hana", &[]);
}

// ---------------------------------------------------------------------------
// The `redis` crate as a subscriber
// ---------------------------------------------------------------------------

#[test]
fn redis_crate_pubsub_receives_messages_and_pmessages_in_resp2() {
    let (server, mut publisher) = TestServer::start_redis();
    let mut con = server.redis();
    {
        let mut ps = con.as_pubsub();
        ps.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        // One name a call: the crate's RESP2 PubSub takes one confirmation as the
        // reply of each call.
        ps.subscribe(REGISTERED).expect("SUBSCRIBE");
        ps.subscribe(UNREGISTERED).expect("SUBSCRIBE");
        ps.psubscribe("user.*").expect("PSUBSCRIBE");
        let pong: Vec<String> = ps.ping().expect("PING");
        assert_eq!(pong, ["pong", ""]);
        let pong: Vec<String> = ps.ping_message("hi").expect("PING hi");
        assert_eq!(pong, ["pong", "hi"]);

        let id = register(&mut publisher, "ian", &[("lang", "rust")]);
        let m = ps.get_message().expect("message");
        assert_eq!(m.get_channel_name(), REGISTERED);
        assert!(!m.from_pattern());
        assert_event(
            &event(m.get_payload_bytes()),
            REGISTERED,
            id,
            "ian",
            &[("lang", "rust")],
        );
        let p = ps.get_message().expect("pmessage");
        assert_eq!(p.get_channel_name(), REGISTERED);
        assert_eq!(p.get_pattern::<String>().expect("pattern"), "user.*");
        assert_eq!(p.get_payload_bytes(), m.get_payload_bytes());

        assert_eq!(unregister(&mut publisher, "ian"), 1);
        let m = ps.get_message().expect("message");
        assert_eq!(m.get_channel_name(), UNREGISTERED);
        let payload: String = m.get_payload().expect("payload");
        assert_event(
            &event(payload.as_bytes()),
            UNREGISTERED,
            id,
            "ian",
            &[("lang", "rust")],
        );
        let p = ps.get_message().expect("pmessage");
        assert_eq!(p.get_pattern::<String>().expect("pattern"), "user.*");
        assert_eq!(p.get_channel_name(), UNREGISTERED);
        // Dropping the PubSub sends UNSUBSCRIBE and PUNSUBSCRIBE and waits for the
        // count to reach 0.
    }
    // Back to a normal connection.
    let id = register(&mut con, "jo", &[]);
    assert!(id > 0, "REGISTER jo replied {id}");
    let n: i64 = redis::cmd("USERCOUNT").query(&mut con).expect("USERCOUNT");
    assert_eq!(n, 1);
}

#[test]
fn redis_crate_pubsub_receives_pushes_in_resp3() {
    let (server, mut publisher) = TestServer::start_redis();
    let mut con = server.redis3();
    {
        let mut ps = con.as_pubsub();
        ps.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        ps.subscribe(&[REGISTERED, UNREGISTERED])
            .expect("SUBSCRIBE");
        ps.psubscribe("user.*").expect("PSUBSCRIBE");

        let id = register(&mut publisher, "kai", &[]);
        let m = ps.get_message().expect("message");
        assert_eq!(m.get_channel_name(), REGISTERED);
        assert!(!m.from_pattern());
        assert_event(&event(m.get_payload_bytes()), REGISTERED, id, "kai", &[]);
        let p = ps.get_message().expect("pmessage");
        assert_eq!(p.get_pattern::<String>().expect("pattern"), "user.*");
        assert_eq!(p.get_payload_bytes(), m.get_payload_bytes());

        assert_eq!(unregister(&mut publisher, "kai"), 1);
        let m = ps.get_message().expect("message");
        assert_eq!(m.get_channel_name(), UNREGISTERED);
        assert_event(&event(m.get_payload_bytes()), UNREGISTERED, id, "kai", &[]);
        let p = ps.get_message().expect("pmessage");
        assert_eq!(p.get_channel_name(), UNREGISTERED);
    }
    let n: i64 = redis::cmd("USERCOUNT").query(&mut con).expect("USERCOUNT");
    assert_eq!(n, 0);
}

#[test]
fn redis_crate_push_sender_gets_pushes_between_commands_in_resp3() {
    let (server, mut publisher) = TestServer::start_redis();
    let mut con = server.redis3();
    con.set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    let (tx, rx) = mpsc::channel();
    con.set_push_sender(tx);
    con.subscribe_resp3(REGISTERED).expect("SUBSCRIBE");
    con.psubscribe_resp3("user.*").expect("PSUBSCRIBE");

    // Any command works while subscribed; the confirmations reach the sender as
    // the client reads past them.
    let own = register(&mut con, "lena", &[("x", "1")]);
    let other = register(&mut publisher, "max", &[]);
    // The pushes came before this reply: the client has read them by now.
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");

    let pushes: Vec<redis::PushInfo> = rx.try_iter().collect();
    let kinds: Vec<&PushKind> = pushes.iter().map(|p| &p.kind).collect();
    assert_eq!(
        kinds,
        [
            &PushKind::Subscribe,
            &PushKind::PSubscribe,
            &PushKind::Message,
            &PushKind::PMessage,
            &PushKind::Message,
            &PushKind::PMessage,
        ],
        "{pushes:?}"
    );
    assert_eq!(
        pushes[0].data,
        [Value::BulkString(REGISTERED.into()), Value::Int(1)]
    );
    assert_eq!(
        pushes[1].data,
        [Value::BulkString(b"user.*".to_vec()), Value::Int(2)]
    );
    let payload = |v: &Value| match v {
        Value::BulkString(b) => event(b),
        other => panic!("payload {other:?}"),
    };
    assert_eq!(pushes[2].data[0], Value::BulkString(REGISTERED.into()));
    assert_event(
        &payload(&pushes[2].data[1]),
        REGISTERED,
        own,
        "lena",
        &[("x", "1")],
    );
    assert_eq!(pushes[3].data[0], Value::BulkString(b"user.*".to_vec()));
    assert_eq!(pushes[3].data[1], Value::BulkString(REGISTERED.into()));
    assert_eq!(pushes[3].data[2], pushes[2].data[1]);
    assert_event(&payload(&pushes[4].data[1]), REGISTERED, other, "max", &[]);
    assert_eq!(pushes[5].data[2], pushes[4].data[1]);
}

// ---------------------------------------------------------------------------
// Every committed event once, in commit order
// ---------------------------------------------------------------------------

/// Checks that `events` are the registrations `expected` (name, id), in that
/// order, with seq strictly increasing.
#[track_caller]
fn assert_registrations(who: &str, events: &[Ev], expected: &[(String, i64)]) {
    let got: Vec<(String, i64)> = events.iter().map(|e| (e.name.clone(), e.id)).collect();
    assert_eq!(got, expected, "{who}: names and ids");
    assert!(
        events.iter().all(|e| e.kind == REGISTERED),
        "{who}: kinds {events:?}"
    );
    assert_seq_increasing(events);
}

#[test]
fn pipelined_registrations_reach_every_subscriber_once_in_commit_order() {
    const N: usize = 200;
    let server = TestServer::start();
    let mut chan = subscriber(&server, false, &[REGISTERED]);
    let mut pat = psubscriber(&server, false, &["user.*"]);
    let mut chan3 = subscriber(&server, true, &[REGISTERED, UNREGISTERED]);

    let mut w = Wire::open(&server);
    let names: Vec<String> = (0..N).map(|i| format!("p{i:03}")).collect();
    let mut batch = Vec::new();
    for n in &names {
        batch.extend(register_req(n, &[("n", n)]));
    }
    w.send(&batch);
    let expected: Vec<(String, i64)> = names.iter().map(|n| (n.clone(), w.int())).collect();

    let seen = [
        ("channel", chan.events(N, None, REGISTERED)),
        ("pattern", pat.events(N, Some("user.*"), REGISTERED)),
        ("resp3", chan3.events(N, None, REGISTERED)),
    ];
    for (who, events) in &seen {
        assert_registrations(who, events, &expected);
        assert!(
            events.iter().all(|e| e.fields == fields(&[("n", &e.name)])),
            "{who}: fields"
        );
        assert_eq!(events, &seen[0].1, "{who} and channel saw different events");
    }

    // Nothing more was queued: the next message each gets is the next event.
    let id = w.register("sentinel", &[]);
    for s in [&mut chan, &mut chan3] {
        assert_event(&s.event_on(REGISTERED), REGISTERED, id, "sentinel", &[]);
    }
    assert_eq!(
        pat.events(1, Some("user.*"), REGISTERED)[0].name,
        "sentinel"
    );
}

#[test]
fn concurrent_registrations_reach_every_subscriber_once_in_commit_order() {
    const CLIENTS: usize = 4;
    const EACH: usize = 50;
    let server = TestServer::start();
    let mut subs = [
        subscriber(&server, false, &[REGISTERED]),
        subscriber(&server, true, &[REGISTERED]),
    ];
    let mut pat = psubscriber(&server, false, &["user.*"]);

    let barrier = Barrier::new(CLIENTS);
    let per_client: Vec<Vec<(String, i64)>> = std::thread::scope(|sc| {
        let writers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (server, barrier) = (&server, &barrier);
                sc.spawn(move || {
                    let mut w = Wire::open(server);
                    barrier.wait();
                    (0..EACH)
                        .map(|i| {
                            let name = format!("c{c}n{i:02}");
                            let id = w.register(&name, &[]);
                            (name, id)
                        })
                        .collect()
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });

    let mut seen: Vec<(&str, Vec<Ev>)> = vec![
        ("channel", subs[0].events(CLIENTS * EACH, None, REGISTERED)),
        ("resp3", subs[1].events(CLIENTS * EACH, None, REGISTERED)),
        (
            "pattern",
            pat.events(CLIENTS * EACH, Some("user.*"), REGISTERED),
        ),
    ];
    let mut all: Vec<(String, i64)> = per_client.iter().flatten().cloned().collect();
    all.sort();
    for (who, events) in &mut seen {
        assert_seq_increasing(events);
        let mut got: Vec<(String, i64)> = events.iter().map(|e| (e.name.clone(), e.id)).collect();
        // Each client's registrations in the order it made them.
        for (c, mine) in per_client.iter().enumerate() {
            let prefix = format!("c{c}n");
            let in_order: Vec<(String, i64)> = got
                .iter()
                .filter(|(n, _)| n.starts_with(&prefix))
                .cloned()
                .collect();
            assert_eq!(&in_order, mine, "{who}: client {c}'s events");
        }
        // Every registration exactly once.
        got.sort();
        assert_eq!(got, all, "{who}: every registration once");
    }
    assert_eq!(seen[0].1, seen[1].1, "RESP2 and RESP3 subscribers differ");
    assert_eq!(
        seen[0].1, seen[2].1,
        "channel and pattern subscribers differ"
    );

    let mut c = server.redis();
    let id = register(&mut c, "sentinel", &[]);
    for s in &mut subs {
        assert_event(&s.event_on(REGISTERED), REGISTERED, id, "sentinel", &[]);
    }
}

#[test]
fn unregister_events_go_to_user_unregistered_only() {
    let server = TestServer::start();
    let mut reg = subscriber(&server, false, &[REGISTERED]);
    let mut unreg = subscriber(&server, false, &[UNREGISTERED]);
    let mut all = psubscriber(&server, false, &["user.*"]);
    let mut un_pat = psubscriber(&server, true, &["*unregistered"]);
    let mut nobody = psubscriber(&server, false, &["user.x*", "users.*"]);

    let mut c = server.redis();
    let ivy = register(&mut c, "ivy", &[("role", "admin")]);
    assert_eq!(unregister(&mut c, "ivy"), 1);
    let jack = register(&mut c, "jack", &[]);
    assert_eq!(unregister(&mut c, "jack"), 1);

    // user.registered: the two registrations back to back, nothing in between.
    let evs = reg.events(2, None, REGISTERED);
    assert_event(&evs[0], REGISTERED, ivy, "ivy", &[("role", "admin")]);
    assert_event(&evs[1], REGISTERED, jack, "jack", &[]);
    // user.unregistered: the two removals, with the fields the user had.
    let evs = unreg.events(2, None, UNREGISTERED);
    assert_event(&evs[0], UNREGISTERED, ivy, "ivy", &[("role", "admin")]);
    assert_event(&evs[1], UNREGISTERED, jack, "jack", &[]);
    assert!(evs[0].seq < evs[1].seq);
    let evs = un_pat.events(2, Some("*unregistered"), UNREGISTERED);
    assert_eq!(
        evs.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["ivy", "jack"]
    );

    // The pattern on both: all four, in commit order.
    let got: Vec<(String, String)> = (0..4)
        .map(|_| {
            let d = all.message();
            assert_eq!(d.pattern.as_deref(), Some("user.*"));
            assert_eq!(d.channel, d.event.kind, "channel is the event's kind");
            (d.event.kind, d.event.name)
        })
        .collect();
    let want = [
        (REGISTERED, "ivy"),
        (UNREGISTERED, "ivy"),
        (REGISTERED, "jack"),
        (UNREGISTERED, "jack"),
    ];
    assert_eq!(
        got,
        want.map(|(k, n)| (k.to_string(), n.to_string())),
        "user.* subscriber"
    );

    // Patterns matching neither channel got nothing: the pong is the next frame.
    nobody.call(b"PING\r\n", SUBSCRIBED_PONG);
}

#[test]
fn taken_name_and_unknown_unregister_publish_nothing() {
    let server = TestServer::start();
    let mut s = subscriber(&server, false, &[REGISTERED, UNREGISTERED]);
    let mut p = psubscriber(&server, true, &["*"]);

    let mut c = server.redis();
    let kim = register(&mut c, "kim", &[]);
    assert_event(&s.event_on(REGISTERED), REGISTERED, kim, "kim", &[]);
    assert_eq!(p.message().event.name, "kim");

    // No-ops: a taken name, an unknown name, a name that cannot exist.
    assert_eq!(register(&mut c, "kim", &[("again", "yes")]), 0);
    assert_eq!(unregister(&mut c, "nobody"), 0);
    assert_eq!(unregister(&mut c, "no body"), 0);

    let lee = register(&mut c, "lee", &[]);
    assert_event(&s.event_on(REGISTERED), REGISTERED, lee, "lee", &[]);
    let d = p.message();
    assert_eq!(
        (d.pattern.as_deref(), d.channel.as_str()),
        (Some("*"), REGISTERED)
    );
    assert_event(&d.event, REGISTERED, lee, "lee", &[]);
}

// ---------------------------------------------------------------------------
// Pushes leave only after the commit
// ---------------------------------------------------------------------------

#[test]
fn rejected_registrations_publish_nothing() {
    let server = TestServer::start();
    let mut s = subscriber(&server, false, &[REGISTERED]);
    let mut p = psubscriber(&server, true, &["user.*"]);

    let too_long = "v".repeat(MAX_FIELD_VALUE_BYTES + 1);
    let many: Vec<(String, String)> = (0..=MAX_FIELDS)
        .map(|i| (format!("f{i}"), "v".to_string()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let rejected = [
        resp(&["REGISTER", ""]),
        resp(&["REGISTER", "has space"]),
        resp(&["REGISTER", "odd", "field"]),
        register_req("toolong", &[("bio", &too_long)]),
        register_req("toomany", &many),
        register_req("badfield", &[("has space", "v")]),
    ];
    // All in one packet with a good registration last: one tick that commits.
    let mut w = Wire::open(&server);
    let mut batch: Vec<u8> = rejected.concat();
    batch.extend(register_req("good", &[]));
    w.send(&batch);
    for req in &rejected {
        match w.next() {
            Resp::Error(e) => assert!(e.starts_with("ERR "), "{e}"),
            other => panic!("{} replied {other:?}", show(req)),
        }
    }
    let id = w.int();
    assert!(id > 0, "REGISTER good replied {id}");
    assert_event(&s.event_on(REGISTERED), REGISTERED, id, "good", &[]);
    assert_event(&p.message().event, REGISTERED, id, "good", &[]);
}

#[test]
fn rolled_back_registration_publishes_nothing() {
    let server = TestServer::start_with(|cfg| cfg.max_db_pages = tight_max_pages(), |b| b);
    let mut s = subscriber(&server, false, &[REGISTERED]);
    let mut p = psubscriber(&server, true, &["user.*"]);

    // One tick: the small registration alone would commit, the big one cannot, so
    // neither does and neither is published.
    let mut w = Wire::open(&server);
    let mut batch = register_req("small", &[]);
    batch.extend(big_register("big"));
    w.send(&batch);
    for what in ["small", "big"] {
        match w.next() {
            Resp::Error(e) => assert!(e.starts_with("ERR storage: "), "{what}: {e}"),
            other => panic!("REGISTER {what} replied {other:?}"),
        }
    }

    // The next tick commits, and its event is the next message each subscriber gets.
    let id = w.register("small", &[]);
    assert!(id > 0, "REGISTER small alone replied {id}");
    assert_event(&s.event_on(REGISTERED), REGISTERED, id, "small", &[]);
    assert_event(&p.message().event, REGISTERED, id, "small", &[]);
    w.call(&resp(&["LOOKUP", "big"]), b"$-1\r\n");
}

#[test]
fn subscribe_in_a_rolled_back_tick_leaves_no_subscription_behind() {
    let server = TestServer::start_with(|cfg| cfg.max_db_pages = tight_max_pages(), |b| b);
    let mut w = Wire::open(&server);
    // One tick on one connection: a write that cannot commit, then a SUBSCRIBE.
    let mut batch = big_register("big");
    batch.extend(resp(&["SUBSCRIBE", REGISTERED]));
    w.send(&batch);
    let first = w.next();
    assert!(
        matches!(&first, Resp::Error(e) if e.starts_with("ERR storage: ")),
        "REGISTER big replied {first:?}"
    );
    let second = w.next();
    let mut c = server.redis();
    let id = register(&mut c, "after", &[]);
    match second {
        // The reply said it failed: then it must not be subscribed.
        Resp::Error(e) => {
            w.call(b"PING\r\n", b"+PONG\r\n");
            assert_eq!(stat(&mut c, "pubsub_channels"), 0, "SUBSCRIBE replied {e}");
        }
        // Confirmed: then it is subscribed and gets the next event.
        other => {
            assert_eq!(
                other,
                Resp::Array(vec![
                    Resp::Bulk(b"subscribe".to_vec()),
                    Resp::Bulk(REGISTERED.into()),
                    Resp::Int(1)
                ])
            );
            assert_event(&w.event_on(REGISTERED), REGISTERED, id, "after", &[]);
        }
    }
}

#[test]
fn message_arrives_only_after_its_event_is_committed() {
    const N: usize = 20;
    let server = TestServer::start();
    let mut s = subscriber(&server, false, &[REGISTERED]);
    let db = rusqlite::Connection::open(&server.db).expect("open the database");
    db.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");

    // Pipelined and unread: the only thing this test has seen of each registration
    // when it checks the database is its push.
    let mut w = Wire::open(&server);
    let names: Vec<String> = (0..N).map(|i| format!("d{i:02}")).collect();
    for n in &names {
        w.send(&register_req(n, &[]));
    }
    for n in &names {
        let ev = s.event_on(REGISTERED);
        assert_eq!(&ev.name, n);
        let row: Option<(String, String, i64)> = db
            .query_row(
                "SELECT kind, name, user_id FROM events WHERE seq = ?1",
                [ev.seq],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .expect("read the events table");
        assert_eq!(
            row,
            Some((REGISTERED.to_string(), n.clone(), ev.id)),
            "event seq {} was pushed before it was committed",
            ev.seq
        );
    }
    for n in &names {
        assert!(w.int() > 0, "REGISTER {n}");
    }
}

#[test]
fn subscribe_racing_a_register_sees_the_whole_event_or_none() {
    const ROUNDS: usize = 30;
    let server = TestServer::start_fast(|_| {});
    let mut publisher = Wire::open(&server);

    // Both orders forced first, then the two racing from two threads.
    let mut sub = subscriber(&server, false, &[REGISTERED]);
    let id = publisher.register("before", &[]);
    assert_event(&sub.event_on(REGISTERED), REGISTERED, id, "before", &[]);
    drop(sub);
    publisher.register("unseen", &[]);
    let mut sub = subscriber(&server, false, &[REGISTERED]);
    sub.call(b"PING\r\n", SUBSCRIBED_PONG);
    drop(sub);

    for round in 0..ROUNDS {
        let name = format!("race{round:02}");
        let mut sub = Wire::open(&server);
        let barrier = Barrier::new(2);
        let id = std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                barrier.wait();
                publisher.register(&name, &[])
            });
            barrier.wait();
            sub.send(&resp(&["SUBSCRIBE", REGISTERED]));
            h.join().expect("publisher thread")
        });
        // The confirmation first in any case, then the event or nothing, then the
        // pong; every frame whole.
        sub.expect(&confirmation(false, "subscribe", REGISTERED, 1));
        sub.send(b"PING\r\n");
        let (raw, v) = sub.frame();
        // Subscribed after the event's tick: nothing before the pong.
        if raw != SUBSCRIBED_PONG {
            let d = delivery(&raw, &v, false);
            assert_eq!(
                (d.pattern.as_deref(), d.channel.as_str()),
                (None, REGISTERED)
            );
            assert_event(&d.event, REGISTERED, id, &name, &[]);
            sub.expect(SUBSCRIBED_PONG);
        }
    }
}

// ---------------------------------------------------------------------------
// Slow subscribers
// ---------------------------------------------------------------------------

/// A pipeline of `n` REGISTERs named `{prefix}{i:04}`, each with `fields` fields of
/// `value_bytes` bytes; returns the requests and the names.
fn big_batch(prefix: &str, n: usize, fields: usize, value_bytes: usize) -> (Vec<u8>, Vec<String>) {
    let value = "x".repeat(value_bytes);
    let keys: Vec<String> = (0..fields).map(|i| format!("f{i:02}")).collect();
    let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    let mut batch = Vec::new();
    for name in &names {
        batch.extend(register_req(name, &pairs));
    }
    (batch, names)
}

/// Sends `batch` from another thread (it may be larger than the socket buffers)
/// while reading `n` integer replies.
fn pipeline(w: &mut Wire, batch: &[u8], n: usize) -> Vec<i64> {
    let mut tx = w.s.try_clone().expect("clone socket");
    std::thread::scope(|sc| {
        let writer = sc.spawn(move || tx.write_all(batch).expect("write pipeline"));
        let ids = (0..n).map(|_| w.int()).collect();
        writer.join().expect("writer thread");
        ids
    })
}

/// Reads `n` messages on another thread as fast as they come; the payloads are
/// decoded afterwards so the reader never falls behind.
fn keep_reading(mut w: Wire, n: usize) -> std::thread::JoinHandle<(Wire, Vec<Ev>)> {
    std::thread::spawn(move || {
        let frames: Vec<(Vec<u8>, Resp)> = (0..n).map(|_| w.frame()).collect();
        let events = frames
            .iter()
            .map(|(raw, v)| {
                let d = delivery(raw, v, w.resp3);
                assert_eq!(
                    (d.pattern.as_deref(), d.channel.as_str()),
                    (None, REGISTERED)
                );
                d.event
            })
            .collect();
        (w, events)
    })
}

/// After a stalled subscriber was dropped: what it had received is a prefix of the
/// registrations, in order and whole, and then the stream ends.
#[track_caller]
fn assert_dropped_after_a_prefix(stalled: &mut Wire, names: &[String]) {
    let (frames, _cut_short) = stalled.until_closed();
    assert!(
        frames.len() < names.len(),
        "the stalled subscriber received all {} events",
        frames.len()
    );
    for (i, f) in frames.iter().enumerate() {
        match f {
            Resp::Array(items) if items.len() == 3 => {
                assert_eq!(text_of(&items[0]), "message");
                assert_eq!(text_of(&items[1]), REGISTERED);
                assert_eq!(event(bytes_of(&items[2])).name, names[i], "message {i}");
            }
            other => panic!("frame {i} of the stalled subscriber: {other:?}"),
        }
    }
}

#[test]
fn stalled_subscriber_is_dropped_at_the_hard_limit_while_a_reader_keeps_up() {
    // Each registration pushes about 128 KiB; together far more than the socket
    // buffers of a peer that never reads can hold, plus the limit.
    const USERS: usize = 100;
    const LIMIT: usize = 2 * 1024 * 1024;
    let server = TestServer::start_fast(|c| {
        c.pubsub_hard_limit_bytes = LIMIT;
        c.pubsub_soft_limit_bytes = LIMIT;
        c.pubsub_soft_limit_seconds = 3600;
    });
    let mut stalled = subscriber(&server, false, &[REGISTERED]);
    let reader = keep_reading(subscriber(&server, false, &[REGISTERED]), USERS);

    let (batch, names) = big_batch("big", USERS, MAX_FIELDS, 4000);
    let mut w = Wire::open(&server);
    let ids = pipeline(&mut w, &batch, USERS);
    assert!(ids.iter().all(|&id| id > 0), "REGISTER replies {ids:?}");

    let (mut reader, events) = reader.join().expect("reader thread");
    let expected: Vec<(String, i64)> = names.iter().cloned().zip(ids).collect();
    assert_registrations("reader", &events, &expected);

    let mut c = server.redis();
    assert_eq!(stat(&mut c, "slow_subscriber_disconnects"), 1);
    assert_dropped_after_a_prefix(&mut stalled, &names);

    // The server goes on serving, and the reader is still subscribed.
    let subs = client_list(&mut c, &["TYPE", "pubsub"]);
    assert_eq!(subs.len(), 1, "subscribers left: {subs:?}");
    let mut fresh = Wire::open(&server);
    fresh.call(b"PING\r\n", b"+PONG\r\n");
    let id = fresh.register("after", &[]);
    assert_event(&reader.event_on(REGISTERED), REGISTERED, id, "after", &[]);
}

#[test]
fn stalled_subscriber_is_dropped_with_small_limits_while_a_reader_keeps_up() {
    const USERS: usize = 2000;
    let server = TestServer::start_fast(|c| {
        c.pubsub_hard_limit_bytes = 64 * 1024;
        c.pubsub_soft_limit_bytes = 32 * 1024;
        c.pubsub_soft_limit_seconds = 1;
    });
    let mut stalled = subscriber(&server, false, &[REGISTERED]);
    let reader = keep_reading(subscriber(&server, false, &[REGISTERED]), USERS);

    let (batch, names) = big_batch("u", USERS, 1, 3 * 1024);
    let mut w = Wire::open(&server);
    let ids = pipeline(&mut w, &batch, USERS);
    assert!(ids.iter().all(|&id| id > 0), "REGISTER replies {ids:?}");

    let mut c = server.redis();
    assert_eq!(stat(&mut c, "slow_subscriber_disconnects"), 1);
    let (_reader, events) = reader.join().expect("reader thread");
    let expected: Vec<(String, i64)> = names.iter().cloned().zip(ids).collect();
    assert_registrations("reader", &events, &expected);
    assert_dropped_after_a_prefix(&mut stalled, &names);
}

#[test]
fn subscriber_over_the_soft_limit_is_dropped_only_after_the_soft_time() {
    // Longer than the burst takes to fill the socket buffers and pass the soft
    // limit, so a disconnect that ignored the time would come too early.
    const SOFT_TIME: Duration = Duration::from_secs(3);
    let server = TestServer::start_fast(|c| {
        c.pubsub_hard_limit_bytes = 1 << 30;
        c.pubsub_soft_limit_bytes = 64 * 1024;
        c.pubsub_soft_limit_seconds = SOFT_TIME.as_secs();
    });
    let mut stalled = subscriber(&server, false, &[REGISTERED]);
    let mut c = server.redis();

    // Far over the soft limit, never near the hard one.
    let (batch, names) = big_batch("soft", 45, MAX_FIELDS, 4000);
    let mut w = Wire::open(&server);
    let burst = Instant::now();
    pipeline(&mut w, &batch, names.len());

    // The limit is checked as pushes are queued: keep publishing until it bites.
    let mut i = 0;
    wait_for("the soft limit to disconnect the subscriber", || {
        i += 1;
        w.register(&format!("tick{i:04}"), &[]);
        if stat(&mut c, "slow_subscriber_disconnects") == 1 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(40));
        false
    });
    let elapsed = burst.elapsed();
    assert!(
        elapsed >= SOFT_TIME,
        "disconnected {elapsed:?} after the burst began, before the soft time"
    );
    assert_dropped_after_a_prefix(&mut stalled, &names);
}

// ---------------------------------------------------------------------------
// Introspection and cleanup
// ---------------------------------------------------------------------------

#[test]
fn client_list_type_pubsub_lists_only_subscribers_with_their_counts() {
    let (server, mut c) = TestServer::start_redis();
    let my_id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query(&mut c)
        .expect("CLIENT ID");

    let client_id = |w: &mut Wire| {
        w.send(&resp(&["CLIENT", "ID"]));
        w.int().to_string()
    };
    let mut two_channels = Wire::open(&server);
    let id1 = client_id(&mut two_channels);
    let mut one_pattern = Wire::open(&server);
    let id2 = client_id(&mut one_pattern);
    let mut mixed = Wire::open3(&server);
    let id3 = client_id(&mut mixed);
    let mut idle = Wire::open(&server);
    let id4 = client_id(&mut idle);

    two_channels.send(&resp(&["SUBSCRIBE", REGISTERED, UNREGISTERED]));
    two_channels.expect(&confirmation(false, "subscribe", REGISTERED, 1));
    two_channels.expect(&confirmation(false, "subscribe", UNREGISTERED, 2));
    one_pattern.call(
        &resp(&["PSUBSCRIBE", "user.*"]),
        &confirmation(false, "psubscribe", "user.*", 1),
    );
    mixed.call(
        &resp(&["SUBSCRIBE", REGISTERED]),
        &confirmation(true, "subscribe", REGISTERED, 1),
    );
    mixed.send(&resp(&["PSUBSCRIBE", "user.*", "*registered"]));
    mixed.expect(&confirmation(true, "psubscribe", "user.*", 2));
    mixed.expect(&confirmation(true, "psubscribe", "*registered", 3));

    let counts = |list: Vec<BTreeMap<String, String>>| -> BTreeMap<String, (String, String)> {
        list.into_iter()
            .map(|l| (l["id"].clone(), (l["sub"].clone(), l["psub"].clone())))
            .collect()
    };
    let pair = |s: &str, p: &str| (s.to_string(), p.to_string());
    assert_eq!(
        counts(client_list(&mut c, &["TYPE", "pubsub"])),
        BTreeMap::from([
            (id1.clone(), pair("2", "0")),
            (id2.clone(), pair("0", "1")),
            (id3.clone(), pair("1", "2")),
        ])
    );
    assert_eq!(
        counts(client_list(&mut c, &["TYPE", "normal"])),
        BTreeMap::from([
            (my_id.to_string(), pair("0", "0")),
            (id4.clone(), pair("0", "0")),
        ])
    );
    let everyone = counts(client_list(&mut c, &[]));
    assert_eq!(everyone.len(), 5, "{everyone:?}");
    assert_eq!(everyone[&id3], pair("1", "2"));

    // Distinct channels and patterns with at least one subscriber.
    assert_eq!(pubsub_counts(&mut c), ["2", "2"]);

    // Leaving every subscription makes a client normal again.
    two_channels.send(b"UNSUBSCRIBE\r\n");
    for count in [1, 0] {
        match two_channels.next() {
            Resp::Array(items) => assert_eq!(
                (&items[0], &items[2]),
                (&Resp::Bulk(b"unsubscribe".to_vec()), &Resp::Int(count))
            ),
            other => panic!("UNSUBSCRIBE replied {other:?}"),
        }
    }
    mixed.call(
        &resp(&["UNSUBSCRIBE", REGISTERED]),
        &confirmation(true, "unsubscribe", REGISTERED, 2),
    );
    assert_eq!(
        counts(client_list(&mut c, &["TYPE", "pubsub"])),
        BTreeMap::from([(id2, pair("0", "1")), (id3, pair("0", "2"))])
    );
    assert_eq!(pubsub_counts(&mut c), ["0", "2"]);
    assert!(
        counts(client_list(&mut c, &["TYPE", "normal"])).contains_key(&id1),
        "client {id1} is normal again"
    );
}

#[test]
fn closed_subscribers_leave_the_index() {
    let (server, mut c) = TestServer::start_redis();
    let mut dropped = subscriber(&server, false, &[REGISTERED, UNREGISTERED]);
    dropped.call(
        &resp(&["PSUBSCRIBE", "user.*"]),
        &confirmation(false, "psubscribe", "user.*", 3),
    );
    let mut quitter = psubscriber(&server, true, &["*"]);
    assert_eq!(pubsub_counts(&mut c), ["2", "2"]);

    // One leaves with QUIT, the other just closes its socket.
    quitter.send(b"QUIT\r\n");
    assert_eq!(quitter.until_closed().0, [Resp::Simple("OK".into())]);
    drop(dropped);
    wait_for("INFO to show no subscriptions", || {
        pubsub_counts(&mut c) == ["0", "0"]
    });
    assert_eq!(client_list(&mut c, &["TYPE", "pubsub"]), []);

    // A new connection (which may reuse a closed one's slot) receives nothing it
    // did not ask for, and publishing to nobody is harmless.
    let mut fresh = Wire::open(&server);
    let id = register(&mut c, "nora", &[]);
    assert!(id > 0, "REGISTER nora replied {id}");
    fresh.call(b"PING\r\n", b"+PONG\r\n");
    let mut late = subscriber(&server, false, &[REGISTERED]);
    let id = register(&mut c, "otto", &[]);
    assert_event(&late.event_on(REGISTERED), REGISTERED, id, "otto", &[]);
    fresh.call(b"PING\r\n", b"+PONG\r\n");
}
