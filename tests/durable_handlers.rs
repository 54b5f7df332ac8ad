//! Durable handlers and event retention: handlers resume from their stored offset
//! after a restart without skipping a committed event; retention trims the log but
//! never past a durable handler that has not caught up.
mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::TestServer;
use common::reply::register;
use common::stream::{EVENTS, xlen};
use userbus::config::Retention;
use userbus::{Builder, Event, EventKind};

/// Waits for `n` events from a channel-fed handler (fails after a deadline).
fn recv_n(rx: &mpsc::Receiver<Event>, n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("event {i} of {n} did not arrive: {e}"))
        })
        .collect()
}

/// A builder step adding the durable handler `name`, which sends every event it is
/// given to the returned channel.
fn forwarding(name: &'static str) -> (impl FnOnce(Builder) -> Builder, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let add = move |b: Builder| {
        b.durable_handler(name, move |e| {
            let _ = tx.send(e.clone());
        })
    };
    (add, rx)
}

/// Registers `name` on a new connection and asserts the handler behind `rx` is
/// given that registration next.
fn assert_handler_gets(server: &TestServer, rx: &mpsc::Receiver<Event>, name: &str) {
    let mut c = server.redis();
    register(&mut c, name, &[]);
    assert_eq!(recv_n(rx, 1)[0].name, name);
}

#[test]
fn durable_handler_sees_every_event_once_in_order() {
    let (handler, rx) = forwarding("audit");
    let server = TestServer::start_with(|_| {}, handler);
    let mut c = server.redis();
    for name in ["a", "b", "c"] {
        register(&mut c, name, &[]);
    }
    let _: i64 = redis::cmd("UNREGISTER").arg("b").query(&mut c).unwrap();
    let got = recv_n(&rx, 4);
    let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "b"]);
    assert_eq!(got[3].kind, EventKind::Unregistered);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    server.stop();
}

#[test]
fn durable_handler_resumes_after_restart_without_skipping() {
    // First run: the handler exists (so its offset is stored) but panics on every
    // event, as if the process died between the commit and the handler's return.
    let server = TestServer::start_with(
        |_| {},
        |b| b.durable_handler("welcome", |e| panic!("mail server down for {}", e.name)),
    );
    let mut c = server.redis();
    register(&mut c, "alice", &[]);
    register(&mut c, "bob", &[]);
    // The handler panicked and was retried; the server still serves.
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    drop(c);

    // Second run: the same handler, now working, gets both events.
    let (handler, rx) = forwarding("welcome");
    let server = server.restart_with(handler);
    let got = recv_n(&rx, 2);
    let names: Vec<&str> = got.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_handler_gets(&server, &rx, "carol");

    // Third run: everything was processed, nothing is delivered twice.
    let (handler, rx) = forwarding("welcome");
    let server = server.restart_with(handler);
    assert_handler_gets(&server, &rx, "dave");
    server.stop();
}

#[test]
fn a_new_durable_handler_starts_at_the_end_of_the_log() {
    let (server, mut c) = TestServer::start_redis();
    register(&mut c, "old", &[]);
    drop(c);

    let (handler, rx) = forwarding("late");
    let server = server.restart_with(handler);
    assert_handler_gets(&server, &rx, "new");
    server.stop();
}

/// Polls XLEN until it equals `want` (retention runs on a timer).
fn wait_for_xlen(c: &mut redis::Connection, want: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = xlen(c, EVENTS);
        if n == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "XLEN stayed {n}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn retention_keeps_the_newest_entries_and_seq_never_repeats() {
    let server = TestServer::start_with(
        |cfg| {
            cfg.retain_events = Some(Retention {
                max_entries: Some(3),
                max_age: None,
            })
        },
        |b| b,
    );
    let mut c = server.redis();
    for i in 0..8 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    wait_for_xlen(&mut c, 3);
    let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("events")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    let ids: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["6-0", "7-0", "8-0"]);
    // Reading from below the first retained id returns what is left, as Redis does
    // after trimming.
    let read: redis::Value = redis::cmd("XREAD")
        .arg("STREAMS")
        .arg("events")
        .arg("0")
        .query(&mut c)
        .unwrap();
    assert!(format!("{read:?}").contains("6-0"));
    assert!(!format!("{read:?}").contains("\"5-0\""));
    register(&mut c, "after-trim", &[]);
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg("events")
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(last[0].0, "9-0");
    let info: String = redis::cmd("INFO").arg("events").query(&mut c).unwrap();
    assert!(info.contains("trimmed_events:5"), "{info}");
    server.stop();
}

#[test]
fn retention_never_trims_what_a_durable_handler_has_not_processed() {
    let keep_one = |cfg: &mut userbus::Config| {
        cfg.retain_events = Some(Retention {
            max_entries: Some(1),
            max_age: None,
        })
    };
    // The handler fails on everything, so its offset stays before "a".
    let server =
        TestServer::start_with(keep_one, |b| b.durable_handler("stuck", |_| panic!("down")));
    let mut c = server.redis();
    for name in ["a", "b", "c"] {
        register(&mut c, name, &[]);
    }
    // Give the trimmer a few rounds; nothing may go.
    let info = |c: &mut redis::Connection| -> String {
        redis::cmd("INFO").arg("events").query(c).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < deadline {
        assert_eq!(xlen(&mut c, EVENTS), 3, "{}", info(&mut c));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(info(&mut c).contains("durable_handler:stuck:offset=0,lag=3"));
    drop(c);

    // Once the handler works, it processes all three and the log is trimmed.
    let (handler, rx) = forwarding("stuck");
    let server = server.restart_with(handler);
    let names: Vec<String> = recv_n(&rx, 3).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let mut c = server.redis();
    wait_for_xlen(&mut c, 1);
    drop(c);
    server.stop();
}

#[test]
fn retention_flag_parses_counts_and_ages() {
    let r: Retention = "1000,7d".parse().unwrap();
    assert_eq!(r.max_entries, Some(1000));
    assert_eq!(r.max_age, Some(Duration::from_secs(7 * 86_400)));
    let r: Retention = "90m".parse().unwrap();
    assert_eq!(r.max_entries, None);
    assert_eq!(r.max_age, Some(Duration::from_secs(5400)));
    assert!("".parse::<Retention>().is_err());
    assert!("7w".parse::<Retention>().is_err());
    assert!("x".parse::<Retention>().is_err());
}
