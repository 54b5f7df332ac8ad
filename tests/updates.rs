//! UPDATE, DELFIELDS and `PATCH /users/{name}` against a real server: replies and
//! errors byte for byte, the user keeping its id, and the `user.updated` event in
//! the stream `events`, on its pub/sub channel, in handler callbacks (per kind,
//! any kind, durable), and across a restart.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::mpsc;

use common::stream::all_events;
use common::{IO_TIMEOUT, TestServer, exchange_resp, fields, temp_db};
use serde_json::{Value, json};
use userbus::{Event, EventKind};

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    common::reply::cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// LOOKUP's RESP2 reply as (id, fields).
fn lookup(c: &mut redis::Connection, name: &str) -> Option<(i64, BTreeMap<String, String>)> {
    let v: redis::Value = redis::cmd("LOOKUP").arg(name).query(c).expect("LOOKUP");
    let redis::Value::Array(items) = v else {
        return None;
    };
    let id = match &items[1] {
        redis::Value::Int(id) => *id,
        other => panic!("id {other:?}"),
    };
    let redis::Value::Array(flat) = &items[7] else {
        panic!("fields {items:?}")
    };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8"),
        other => panic!("bulk {other:?}"),
    };
    Some((
        id,
        flat.chunks(2).map(|p| (text(&p[0]), text(&p[1]))).collect(),
    ))
}

#[test]
fn update_and_delfields_change_fields_and_keep_the_id() {
    let server = TestServer::start();
    let mut c = server.redis();
    assert_eq!(
        int(
            &mut c,
            &["REGISTER", "alice", "email", "a@x", "city", "Oslo"]
        ),
        1
    );
    assert_eq!(int(&mut c, &["REGISTER", "bob"]), 2);
    assert_eq!(
        int(&mut c, &["UPDATE", "alice", "email", "b@x", "plan", "pro"]),
        1
    );
    assert_eq!(
        lookup(&mut c, "alice"),
        Some((
            1,
            fields(&[("city", "Oslo"), ("email", "b@x"), ("plan", "pro")])
        ))
    );
    assert_eq!(int(&mut c, &["UPDATE", "nobody", "a", "b"]), 0);
    assert_eq!(int(&mut c, &["UPDATE", "bad name", "a", "b"]), 0);
    // Unchanged values: 1, and no event.
    assert_eq!(int(&mut c, &["XLEN", "events"]), 3);
    assert_eq!(int(&mut c, &["UPDATE", "alice", "plan", "pro"]), 1);
    assert_eq!(int(&mut c, &["XLEN", "events"]), 3);
    // DELFIELDS counts what it removed; absent fields and users count 0.
    assert_eq!(
        int(&mut c, &["DELFIELDS", "alice", "city", "plan", "nope"]),
        2
    );
    assert_eq!(int(&mut c, &["DELFIELDS", "alice", "city", "bad field"]), 0);
    assert_eq!(int(&mut c, &["DELFIELDS", "nobody", "email"]), 0);
    assert_eq!(int(&mut c, &["XLEN", "events"]), 4);
    assert_eq!(
        lookup(&mut c, "alice"),
        Some((1, fields(&[("email", "b@x")])))
    );
    assert_eq!(int(&mut c, &["DELFIELDS", "alice", "email"]), 1);
    assert_eq!(lookup(&mut c, "alice"), Some((1, BTreeMap::new())));
    assert_eq!(int(&mut c, &["USERCOUNT"]), 2);
    // The ids go on after the update's event.
    assert_eq!(int(&mut c, &["REGISTER", "carol"]), 3);
    server.stop();
}

#[test]
fn update_errors_follow_register_byte_for_byte() {
    let server = TestServer::start();
    let mut s = server.raw();
    let many: Vec<String> = (0..32).map(|i| format!("f{i:02}")).collect();
    let mut register = vec!["REGISTER", "full"];
    for f in &many {
        register.push(f);
        register.push("v");
    }
    exchange_resp(&mut s, &register, b":1\r\n");
    for (args, want) in [
        (
            &["UPDATE", "full"][..],
            &b"-ERR wrong number of arguments for 'update' command\r\n"[..],
        ),
        (
            &["UPDATE", "full", "a"],
            b"-ERR wrong number of arguments for 'update' command\r\n",
        ),
        (
            &["UPDATE", "full", "a", "b", "c"],
            b"-ERR wrong number of arguments for 'update' command\r\n",
        ),
        (
            &["DELFIELDS", "full"],
            b"-ERR wrong number of arguments for 'delfields' command\r\n",
        ),
        (
            &["UPDATE", "full", "bad field", "v"],
            b"-ERR invalid field name: must not contain whitespace or control characters\r\n",
        ),
        (
            &["UPDATE", "full", "f33", "v"],
            b"-ERR too many fields: at most 32\r\n",
        ),
        // Replacing a value of a user at the limit is fine.
        (&["UPDATE", "full", "f00", "w"], b":1\r\n"),
        (&["DELFIELDS", "full", "f00"], b":1\r\n"),
        (&["UPDATE", "full", "f33", "v"], b":1\r\n"),
    ] {
        exchange_resp(&mut s, args, want);
    }
    let long = "x".repeat(4097);
    exchange_resp(
        &mut s,
        &["UPDATE", "full", "f01", &long],
        b"-ERR invalid field value for 'f01': at most 4096 bytes\r\n",
    );
    exchange_resp(&mut s, &["UPDATE", "full", "f01", &long[1..]], b":1\r\n");
    server.stop();
}

/// A builder step sending every event the callback gets into the returned channel.
type Add = Box<dyn FnOnce(userbus::Builder) -> userbus::Builder>;

fn recorder() -> (mpsc::Sender<Event>, mpsc::Receiver<Event>) {
    mpsc::channel()
}

#[test]
fn update_events_reach_the_stream_subscribers_and_callbacks() {
    let (updated_tx, updated) = recorder();
    let (any_tx, any) = recorder();
    let (durable_tx, durable) = recorder();
    let add: Add = Box::new(move |b| {
        b.on_updated(move |e| {
            let _ = updated_tx.send(e.clone());
        })
        .on_event(move |e| {
            let _ = any_tx.send(e.clone());
        })
        .durable_handler("audit", move |e| {
            let _ = durable_tx.send(e.clone());
        })
    });
    let server = TestServer::start_with(|_| {}, add);
    let mut c = server.redis();
    let mut sub = server.redis();
    let mut ps = sub.as_pubsub();
    ps.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    ps.subscribe("user.updated").expect("SUBSCRIBE");

    assert_eq!(
        int(&mut c, &["REGISTER", "ann", "email", "a@x", "city", "Oslo"]),
        1
    );
    assert_eq!(
        int(&mut c, &["UPDATE", "ann", "email", "b@x", "tz", "CET"]),
        1
    );
    assert_eq!(int(&mut c, &["DELFIELDS", "ann", "city"]), 1);

    // The stream: the entry of an update carries set, removed and before.
    let log = all_events(&mut c);
    assert_eq!(log.len(), 3);
    let up = &log[1];
    assert_eq!(up.seq(), 2);
    assert_eq!(
        up.field_names(),
        [
            "kind", "id", "name", "fields", "at", "set", "removed", "before"
        ]
    );
    assert_eq!(up.field("kind"), "user.updated");
    assert_eq!(up.field("id"), "1");
    assert_eq!(
        up.field("fields"),
        r#"{"city":"Oslo","email":"b@x","tz":"CET"}"#
    );
    assert_eq!(up.field("set"), r#"{"email":"b@x","tz":"CET"}"#);
    assert_eq!(up.field("removed"), "[]");
    assert_eq!(up.field("before"), r#"{"city":"Oslo","email":"a@x"}"#);
    assert_eq!(log[2].field("removed"), r#"["city"]"#);
    assert_eq!(log[2].field("set"), "{}");
    // Registrations keep their five fields.
    assert_eq!(log[0].fields.len(), 5);

    // Pub/sub: one push per update on user.updated, payload as documented.
    let m = ps.get_message().expect("push");
    assert_eq!(m.get_channel_name(), "user.updated");
    let first: Value = serde_json::from_slice(m.get_payload_bytes()).expect("JSON");
    assert_eq!(first["seq"], 2);
    assert_eq!(first["kind"], "user.updated");
    assert_eq!(first["id"], 1);
    assert_eq!(first["name"], "ann");
    assert_eq!(first["set"], json!({"email": "b@x", "tz": "CET"}));
    assert_eq!(first["removed"], json!([]));
    assert_eq!(
        first["fields"],
        json!({"city": "Oslo", "email": "b@x", "tz": "CET"})
    );
    assert_eq!(first["before"], json!({"city": "Oslo", "email": "a@x"}));
    let second: Value =
        serde_json::from_slice(ps.get_message().expect("push").get_payload_bytes()).expect("JSON");
    assert_eq!(second["removed"], json!(["city"]));
    assert_eq!(second["fields"], json!({"email": "b@x", "tz": "CET"}));

    // Callbacks: on_updated sees the two updates, on_event all three, and so
    // does the durable handler, each with the fields before.
    let got: Vec<Event> = (0..2)
        .map(|_| updated.recv_timeout(IO_TIMEOUT).expect("on_updated"))
        .collect();
    assert!(got.iter().all(|e| e.kind == EventKind::Updated));
    assert_eq!(
        got[0].before,
        Some(fields(&[("city", "Oslo"), ("email", "a@x")]))
    );
    assert_eq!(got[1].fields, fields(&[("email", "b@x"), ("tz", "CET")]));
    assert_eq!(got[1].removed_fields(), ["city"]);
    let kinds = |rx: &mpsc::Receiver<Event>| -> Vec<EventKind> {
        (0..3)
            .map(|_| rx.recv_timeout(IO_TIMEOUT).expect("event").kind)
            .collect()
    };
    let want = [
        EventKind::Registered,
        EventKind::Updated,
        EventKind::Updated,
    ];
    assert_eq!(kinds(&any), want);
    assert_eq!(kinds(&durable), want);
    assert!(
        updated.try_recv().is_err(),
        "a registration reached on_updated"
    );
    server.stop();
}

#[test]
fn a_no_op_update_emits_nothing() {
    let (tx, rx) = recorder();
    let add: Add = Box::new(move |b| {
        b.on_event(move |e| {
            let _ = tx.send(e.clone());
        })
    });
    let server = TestServer::start_with(|_| {}, add);
    let mut c = server.redis();
    assert_eq!(int(&mut c, &["REGISTER", "ann", "plan", "pro"]), 1);
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).expect("event").kind,
        EventKind::Registered
    );
    assert_eq!(int(&mut c, &["UPDATE", "ann", "plan", "pro"]), 1);
    assert_eq!(int(&mut c, &["DELFIELDS", "ann", "nope"]), 0);
    assert_eq!(int(&mut c, &["UNREGISTER", "ann"]), 1);
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).expect("event").kind,
        EventKind::Unregistered,
        "the no-op update made an event"
    );
    assert_eq!(all_events(&mut c).len(), 2);
    server.stop();
}

#[test]
fn updates_survive_a_restart() {
    let (dir, db) = temp_db();
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut c = server.redis();
    assert_eq!(int(&mut c, &["REGISTER", "ann", "plan", "free"]), 1);
    assert_eq!(int(&mut c, &["UPDATE", "ann", "plan", "pro"]), 1);
    drop(c);
    let server = server.restart();
    let mut c = server.redis();
    assert_eq!(lookup(&mut c, "ann"), Some((1, fields(&[("plan", "pro")]))));
    let log = all_events(&mut c);
    assert_eq!(log[1].field("before"), r#"{"plan":"free"}"#);
    assert_eq!(int(&mut c, &["UPDATE", "ann", "plan", "team"]), 1);
    assert_eq!(all_events(&mut c)[2].seq(), 3);
    server.stop();
    drop(dir);
}

// ---------------------------------------------------------------------------
// PATCH /users/{name}

/// Sends one HTTP request on a connection of its own; returns (status, body).
fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &str,
) -> (u16, String) {
    let ctype = ctype.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
    server.http_request(method, path, &ctype, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[test]
fn patch_merges_fields_and_answers_the_user() {
    let server = TestServer::start_http_with(|_| {});
    let mut c = server.redis();
    assert_eq!(
        int(&mut c, &["REGISTER", "ann", "email", "a@x", "city", "Oslo"]),
        1
    );
    let merge = Some("application/merge-patch+json");
    let (status, body) = http(
        &server,
        "PATCH",
        "/users/ann",
        merge,
        r#"{"email":"b@x","city":null,"tz":"CET"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let user = json_of(&body);
    let (_, got) = http(&server, "GET", "/users/ann", None, "");
    assert_eq!(user, json_of(&got), "PATCH answers as GET does");
    assert_eq!(user["id"], 1);
    assert_eq!(user["fields"], json!({"email": "b@x", "tz": "CET"}));
    // application/json too, and the GET shape's "fields" wrapper.
    let (status, body) = http(
        &server,
        "PATCH",
        "/users/ann",
        Some("application/json; charset=utf-8"),
        r#"{"fields":{"tz":null}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["fields"], json!({"email": "b@x"}));
    // A no-op patch answers the user and makes no event.
    let (status, _) = http(&server, "PATCH", "/users/ann", merge, "{}");
    assert_eq!(status, 200);
    let log = all_events(&mut c);
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].field("removed"), r#"["city"]"#);

    for (ctype, path, body, want, says) in [
        (merge, "/users/nobody", "{}", 404, "no such user"),
        (Some("text/plain"), "/users/ann", "{}", 415, "Content-Type"),
        (None, "/users/ann", "{}", 415, "merge-patch"),
        (
            merge,
            "/users/ann",
            r#"{"n":1}"#,
            400,
            "field 'n' must be a string",
        ),
        (merge, "/users/ann", r#"{"n":{"a":"b"}}"#, 400, "or null"),
        (merge, "/users/ann", "[1]", 400, "JSON object"),
        (merge, "/users/ann", "{", 400, "invalid JSON"),
        (
            merge,
            "/users/ann",
            r#"{"bad field":"v"}"#,
            422,
            "invalid field name",
        ),
    ] {
        let (status, got) = http(&server, "PATCH", path, ctype, body);
        assert_eq!(status, want, "{ctype:?} {path} {body}: {got}");
        let error = json_of(&got)["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(says), "{body}: {error}");
    }
    assert_eq!(
        lookup(&mut c, "ann"),
        Some((1, fields(&[("email", "b@x")])))
    );
    server.stop();
}

// ---------------------------------------------------------------------------
// Followers and the JetStream relay (real nats-server; skipped without it unless
// USERBUS_NATS_TEST=1)

/// Polls `f` until it holds, or fails naming `what`.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn followers_apply_updates_refuse_them_and_the_relay_publishes_user_updated() {
    use common::nats::{NatsServer, nats_available};
    use common::process::UserbusProcess;
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = nats.url();
    let args = ["--nats", url.as_str(), "--unique-field", "email"];
    let primary = UserbusProcess::start(&dir.path().join("p.db"), &args);
    let mut c = primary.redis();
    assert_eq!(
        int(&mut c, &["REGISTER", "ann", "email", "a@x", "plan", "free"]),
        1
    );
    assert_eq!(int(&mut c, &["UPDATE", "ann", "email", "b@x"]), 1);
    assert_eq!(int(&mut c, &["DELFIELDS", "ann", "plan"]), 1);
    let follower = UserbusProcess::start_with_http(
        &dir.path().join("f.db"),
        &[
            "--nats",
            url.as_str(),
            "--follow",
            "--unique-field",
            "email",
        ],
    );
    let mut f = follower.redis();
    wait_for("the follower to apply 3 events", || {
        int(&mut f, &["XLEN", "events"]) == 3
    });
    assert_eq!(all_events(&mut f), all_events(&mut c));
    assert_eq!(
        lookup(&mut f, "ann"),
        Some((1, fields(&[("email", "b@x")])))
    );
    let by: redis::Value = redis::cmd("LOOKUPBY")
        .arg(&["email", "b@x"])
        .query(&mut f)
        .expect("LOOKUPBY");
    let direct: redis::Value = redis::cmd("LOOKUP")
        .arg("ann")
        .query(&mut f)
        .expect("LOOKUP");
    assert_eq!(by, direct);
    // Writes are refused on the follower.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", follower.port)).expect("connect");
    raw.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let readonly = b"-READONLY You can't write against a read only replica.\r\n";
    exchange_resp(&mut raw, &["UPDATE", "ann", "plan", "pro"], readonly);
    exchange_resp(&mut raw, &["DELFIELDS", "ann", "email"], readonly);
    let out = follower.http(
        "PATCH /users/ann HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    // The stream: one message per event, on <prefix>.<kind>, with the payload.
    let msgs = nats.client().all_msgs("USERBUS");
    let subjects: Vec<&str> = msgs.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "userbus.user.registered",
            "userbus.user.updated",
            "userbus.user.updated"
        ]
    );
    let second: Value = serde_json::from_slice(&msgs[1].data).expect("JSON");
    assert_eq!(second["set"], json!({"email": "b@x"}));
    assert_eq!(second["before"], json!({"email": "a@x", "plan": "free"}));
}

#[test]
fn replicated_durability_holds_an_update_that_made_an_event() {
    use common::process::UserbusProcess;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens there: no event is ever acknowledged.
    let url = format!("nats://127.0.0.1:{}", common::free_port());
    let p = UserbusProcess::start(
        &dir.path().join("r.db"),
        &[
            "--nats",
            url.as_str(),
            "--durability",
            "replicated",
            "--replication-timeout",
            "1s",
        ],
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let noreplicas = b"-NOREPLICAS Not enough good replicas to write.\r\n";
    // The registration stays in the local log, unacknowledged.
    exchange_resp(&mut s, &["REGISTER", "ann", "plan", "free"], noreplicas);
    let started = Instant::now();
    exchange_resp(&mut s, &["UPDATE", "ann", "plan", "pro"], noreplicas);
    exchange_resp(&mut s, &["DELFIELDS", "ann", "plan"], noreplicas);
    assert!(started.elapsed() >= Duration::from_millis(1800), "not held");
    // Nothing to change: nothing to wait for.
    let started = Instant::now();
    exchange_resp(&mut s, &["UPDATE", "nobody", "plan", "pro"], b":0\r\n");
    exchange_resp(&mut s, &["DELFIELDS", "ann", "plan"], b":0\r\n");
    assert!(started.elapsed() < Duration::from_millis(900), "held");
}

#[test]
fn consumer_groups_and_event_streams_carry_updates() {
    let server = TestServer::start_http_with(|_| {});
    let mut c = server.redis();
    let _: String = redis::cmd("XGROUP")
        .arg(&["CREATE", "events", "mail", "0"])
        .query(&mut c)
        .expect("XGROUP CREATE");
    assert_eq!(int(&mut c, &["REGISTER", "ann", "plan", "free"]), 1);
    assert_eq!(int(&mut c, &["UPDATE", "ann", "plan", "pro"]), 1);
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg(&["GROUP", "mail", "w1", "STREAMS", "events", ">"])
        .query(&mut c)
        .expect("XREADGROUP");
    let (_, got) = common::stream::read_reply(&v).expect("entries");
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].field("kind"), "user.updated");
    assert_eq!(got[1].field("before"), r#"{"plan":"free"}"#);
    assert_eq!(got[1].field("set"), r#"{"plan":"pro"}"#);
    assert_eq!(int(&mut c, &["XACK", "events", "mail", &got[1].id]), 1);

    // Server-Sent Events from the start of the log.
    let mut s = server.http_raw();
    s.write_all(b"GET /events?from=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("\"before\"") {
        let n = s.read(&mut buf).expect("read the event stream");
        assert!(
            n > 0,
            "the stream closed: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    let frame = text
        .split("\n\n")
        .find(|f| f.contains("id: 2\n"))
        .unwrap_or_else(|| panic!("no frame of event 2 in {text}"));
    assert!(frame.contains("event: user.updated\n"), "{frame}");
    let data = frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let payload = json_of(data);
    assert_eq!(payload["set"], json!({"plan": "pro"}));
    assert_eq!(payload["before"], json!({"plan": "free"}));
    server.stop();
}
