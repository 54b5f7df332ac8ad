//! Handler callbacks: an embedding program's `on_registered`, `on_unregistered`
//! and `on_event` see exactly the committed events, in commit order; no-ops and
//! rolled-back ticks produce none; a panicking callback hurts nobody else.
//!
//! Callbacks run after the tick's commit and before its replies are flushed, so once
//! a client holds its reply the callbacks for that request have already run: the
//! tests read the recorded events right after the reply, without waiting.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::reply::{register, unregister};
use common::{Raw, TestServer, big_register, resp, temp_db, tight_max_pages};
use userbus::{Event, EventKind};

/// Events a callback saw, in the order it saw them.
type Log = Arc<Mutex<Vec<Event>>>;

fn new_log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

/// A callback that appends every event it is given to `log`.
fn recorder(log: &Log) -> impl FnMut(&Event) + Send + 'static {
    let log = log.clone();
    move |e: &Event| log.lock().expect("log lock").push(e.clone())
}

fn events(log: &Log) -> Vec<Event> {
    log.lock().expect("log lock").clone()
}

/// What a client can know about an event from its own requests and replies.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    kind: EventKind,
    name: String,
    user_id: i64,
    fields: BTreeMap<String, String>,
}

fn seen(e: &Event) -> Seen {
    Seen {
        kind: e.kind,
        name: e.name.clone(),
        user_id: e.user_id,
        fields: e.fields.clone(),
    }
}

fn expect(kind: EventKind, name: &str, user_id: i64, fields: &[(&str, &str)]) -> Seen {
    Seen {
        kind,
        name: name.to_string(),
        user_id,
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn assert_seq_increasing(events: &[Event]) {
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq must strictly increase: {:?}",
        events.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
}

/// The durable event log, read straight from the database file.
fn stored_events(db: &Path) -> Vec<Event> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT seq, kind, user_id, name, fields, at FROM events ORDER BY seq")
        .expect("prepare");
    stmt.query_map([], |r| {
        let kind: String = r.get(1)?;
        let fields: String = r.get(4)?;
        Ok(Event {
            seq: r.get(0)?,
            kind: match kind.as_str() {
                "user.registered" => EventKind::Registered,
                "user.unregistered" => EventKind::Unregistered,
                other => panic!("unknown event kind {other}"),
            },
            user_id: r.get(2)?,
            name: r.get(3)?,
            fields: serde_json::from_str(&fields).expect("fields JSON"),
            before: None,
            at_ms: r.get(5)?,
        })
    })
    .expect("query")
    .collect::<rusqlite::Result<Vec<_>>>()
    .expect("rows")
}

fn handler_panics(c: &mut redis::Connection) -> String {
    let text: String = redis::cmd("INFO").arg("stats").query(c).expect("INFO");
    text.lines()
        .find_map(|l| l.strip_prefix("handler_panics:"))
        .unwrap_or_else(|| panic!("no handler_panics in INFO stats:\n{text}"))
        .trim()
        .to_string()
}

#[test]
fn callbacks_see_exactly_the_committed_events_in_commit_order() {
    let (_dir, db) = temp_db();
    let (all, registered, unregistered) = (new_log(), new_log(), new_log());
    let server = TestServer::start_at(
        &db,
        |_| {},
        |b| {
            b.on_event(recorder(&all))
                .on_registered(recorder(&registered))
                .on_unregistered(recorder(&unregistered))
        },
    );
    let started_ms = userbus::clock::now_ms();
    let mut c = server.redis();
    let mut raw = Raw::connect(server.addr);
    let mut expected = Vec::new();

    let alice = register(&mut c, "alice", &[("plan", "pro"), ("city", "Oslo")]);
    expected.push(expect(
        EventKind::Registered,
        "alice",
        alice,
        &[("plan", "pro"), ("city", "Oslo")],
    ));
    // The reply comes after the callbacks of its tick.
    assert_eq!(events(&all).iter().map(seen).collect::<Vec<_>>(), expected);

    raw.send(&resp(&["REGISTER", "bob"]));
    let bob = raw.int();
    expected.push(expect(EventKind::Registered, "bob", bob, &[]));
    assert_eq!(events(&all).iter().map(seen).collect::<Vec<_>>(), expected);

    assert_eq!(register(&mut c, "alice", &[("plan", "free")]), 0);

    // Three changes in one write, hence one tick: their events keep request order.
    let mut batch = resp(&["REGISTER", "carol", "x", "y"]);
    batch.extend(resp(&["UNREGISTER", "bob"]));
    batch.extend(resp(&["REGISTER", "dave"]));
    raw.send(&batch);
    let carol = raw.int();
    assert_eq!(raw.int(), 1, "UNREGISTER bob");
    let dave = raw.int();
    expected.push(expect(EventKind::Registered, "carol", carol, &[("x", "y")]));
    expected.push(expect(EventKind::Unregistered, "bob", bob, &[]));
    expected.push(expect(EventKind::Registered, "dave", dave, &[]));

    assert_eq!(unregister(&mut c, "ghost"), 0);
    assert_eq!(unregister(&mut c, "alice"), 1);
    // An unregistration carries the fields the user had.
    expected.push(expect(
        EventKind::Unregistered,
        "alice",
        alice,
        &[("plan", "pro"), ("city", "Oslo")],
    ));
    let finished_ms = userbus::clock::now_ms();

    let all = events(&all);
    assert_eq!(all.iter().map(seen).collect::<Vec<_>>(), expected);
    assert_seq_increasing(&all);
    for e in &all {
        assert!(
            (started_ms..=finished_ms).contains(&e.at_ms),
            "event time {} outside the test's {started_ms}..={finished_ms}",
            e.at_ms
        );
    }
    let by_kind = |kind| -> Vec<Event> { all.iter().filter(|e| e.kind == kind).cloned().collect() };
    assert_eq!(events(&registered), by_kind(EventKind::Registered));
    assert_eq!(events(&unregistered), by_kind(EventKind::Unregistered));

    drop(c);
    drop(raw);
    server.stop();
    // Exactly what was committed: the durable log holds the same events.
    assert_eq!(stored_events(&db), all);
}

#[test]
fn a_taken_name_or_an_unknown_name_produces_no_event() {
    let all = new_log();
    let server = TestServer::start_with(|_| {}, |b| b.on_event(recorder(&all)));
    let mut c = server.redis();
    assert_eq!(register(&mut c, "alice", &[]), 1);
    assert_eq!(events(&all).len(), 1);

    assert_eq!(register(&mut c, "alice", &[("plan", "pro")]), 0);
    assert_eq!(unregister(&mut c, "nobody"), 0);
    let mut raw = Raw::connect(server.addr);
    let mut batch = resp(&["REGISTER", "alice"]);
    batch.extend(resp(&["UNREGISTER", "nobody"]));
    raw.send(&batch);
    assert_eq!((raw.int(), raw.int()), (0, 0));

    let all = events(&all);
    assert_eq!(
        all.iter().map(seen).collect::<Vec<_>>(),
        [expect(EventKind::Registered, "alice", 1, &[])]
    );
    drop(c);
    drop(raw);
    server.stop();
}

#[test]
fn a_panicking_callback_is_isolated() {
    let (panicker, registered, all) = (new_log(), new_log(), new_log());
    let server = TestServer::start_with(
        |_| {},
        |b| {
            let log = panicker.clone();
            b.on_registered(move |e| {
                log.lock().expect("log lock").push(e.clone());
                // The lock is released before the panic, so the log stays usable.
                if e.name.starts_with("boom") {
                    panic!("callback refuses {}", e.name);
                }
            })
            .on_registered(recorder(&registered))
            .on_event(recorder(&all))
        },
    );
    let mut c = server.redis();
    assert_eq!(register(&mut c, "alice", &[]), 1);
    assert_eq!(
        register(&mut c, "boom", &[]),
        2,
        "the panic must not cost the reply"
    );
    let pong: String = redis::cmd("PING")
        .query(&mut c)
        .expect("PING after the panic");
    assert_eq!(pong, "PONG");

    // Two panics in one tick: the rest of that tick's dispatch still happens.
    let mut raw = Raw::connect(server.addr);
    let mut batch = resp(&["REGISTER", "boom2"]);
    batch.extend(resp(&["REGISTER", "boom3"]));
    batch.extend(resp(&["REGISTER", "carol"]));
    raw.send(&batch);
    assert_eq!((raw.int(), raw.int(), raw.int()), (3, 4, 5));
    assert_eq!(unregister(&mut c, "boom"), 1);

    let names = |log: &Log| -> Vec<String> { events(log).into_iter().map(|e| e.name).collect() };
    let registrations = ["alice", "boom", "boom2", "boom3", "carol"];
    assert_eq!(
        names(&panicker),
        registrations,
        "called again after its panics"
    );
    assert_eq!(names(&registered), registrations);
    let all = events(&all);
    assert_eq!(
        all.iter().map(seen).collect::<Vec<_>>(),
        [
            expect(EventKind::Registered, "alice", 1, &[]),
            expect(EventKind::Registered, "boom", 2, &[]),
            expect(EventKind::Registered, "boom2", 3, &[]),
            expect(EventKind::Registered, "boom3", 4, &[]),
            expect(EventKind::Registered, "carol", 5, &[]),
            expect(EventKind::Unregistered, "boom", 2, &[]),
        ]
    );
    assert_seq_increasing(&all);
    assert_eq!(handler_panics(&mut c), "3");
    let count: i64 = redis::cmd("USERCOUNT").query(&mut c).expect("USERCOUNT");
    assert_eq!(count, 4);
    drop(c);
    drop(raw);
    server.stop();
}

#[test]
fn events_of_a_rolled_back_tick_never_reach_callbacks() {
    let (_dir, db) = temp_db();
    let (all, registered) = (new_log(), new_log());
    let server = TestServer::start_at(
        &db,
        |cfg| cfg.max_db_pages = tight_max_pages(),
        |b| {
            b.on_event(recorder(&all))
                .on_registered(recorder(&registered))
        },
    );
    let mut raw = Raw::connect(server.addr);

    // One tick: the small registration alone would commit, the big one cannot, so
    // neither does.
    let mut batch = resp(&["REGISTER", "small"]);
    batch.extend(big_register("big"));
    raw.send(&batch);
    for what in ["small", "big"] {
        let reply = raw.line();
        assert!(
            reply.starts_with("-ERR storage: "),
            "REGISTER {what} replied {reply:?}"
        );
    }
    assert_eq!(events(&all), []);
    assert_eq!(events(&registered), []);

    // The next tick commits, and only its event goes out.
    raw.send(&resp(&["REGISTER", "small"]));
    let small = raw.int();
    let all_events = events(&all);
    assert_eq!(
        all_events.iter().map(seen).collect::<Vec<_>>(),
        [expect(EventKind::Registered, "small", small, &[])]
    );
    assert_eq!(events(&registered), all_events);
    drop(raw);
    server.stop();
    assert_eq!(stored_events(&db), all_events);
}
