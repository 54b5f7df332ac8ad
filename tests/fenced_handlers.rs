//! A primary with a durable handler fenced by a second primary writing to the
//! same stream, against a real nats-server: the fenced node's handler offset
//! comes back to the seq the stream confirmed (the discarded events do not count
//! as handled), locally and in the KV bucket, and once the node is promoted
//! again its handler runs for every event it had not handled, the other
//! writer's included, and never again for a discarded one.
//!
//! Without nats-server these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`.
mod common;

use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::TestServer;
use common::nats::{NatsServer, NatsTestClient, nats_available};
use common::reply::{info, info_num, promote, register, wait_applied, wait_info};

/// How long catching up, a promotion or a handler call may take.
const WAIT: Duration = Duration::from_secs(30);
/// The bucket of the default stream `USERBUS`.
const BUCKET: &str = "USERBUS_handlers";

/// The offset of durable handler `mail` in `INFO events`.
fn local_offset(c: &mut redis::Connection) -> i64 {
    let events = info(c, "events");
    let line = events.get("durable_handler").expect("the handler's line");
    line.strip_prefix("mail:offset=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("durable_handler:{line}"))
}

/// The bucket's offset of `mail`; `None` while it holds none.
fn kv_offset(client: &mut NatsTestClient) -> Option<i64> {
    client
        .kv_last(BUCKET, "mail")
        .and_then(|m| m.text().parse().ok())
}

/// Handler calls until one with seq `last`.
fn calls_until(rx: &Receiver<(i64, String)>, last: i64) -> Vec<(i64, String)> {
    let mut got = Vec::new();
    while got.last().is_none_or(|(seq, _)| *seq != last) {
        got.push(
            rx.recv_timeout(WAIT).unwrap_or_else(|_| {
                panic!("no handler call for seq {last}; calls so far: {got:?}")
            }),
        );
    }
    got
}

#[test]
fn a_fenced_node_forgets_the_discarded_events_and_handles_the_streams_once_promoted() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let mut client = nats.client();
    // `a`'s durable handler `mail` reports each event's seq and name.
    let (a, a_calls) =
        TestServer::start_nats_handler(&url, false, "mail", |_| {}, |e| (e.seq, e.name.clone()));
    let mut ac = a.redis();
    for i in 1..=5 {
        register(&mut ac, &format!("u{i}"), &[]);
    }
    let first: Vec<i64> = calls_until(&a_calls, 5).iter().map(|c| c.0).collect();
    assert_eq!(first, [1, 2, 3, 4, 5]);
    client.wait_kv(BUCKET, "mail", WAIT, "offset 5", |m| {
        m.text().parse::<i64>() == Ok(5)
    });
    // Past the put interval: the next offset is put as soon as it moves.
    std::thread::sleep(Duration::from_millis(1200));

    // A second primary, promoted while `a` runs; its event takes seq 6.
    let b = TestServer::start_with(
        |c| {
            c.nats = Some(url.clone());
            c.follow = true;
        },
        |b| b,
    );
    let mut bc = b.redis();
    wait_applied(&mut bc, 5);
    promote(&mut bc);
    assert_eq!(register(&mut bc, "new1", &[]), 6);
    wait_info(&mut bc, "nats", WAIT, "b's event in the stream", |i| {
        info_num(i, "nats_confirmed_seq") >= 6
    });
    // `a` commits and handles its own seq 6, then meets `b`'s in the stream.
    assert_eq!(register(&mut ac, "old1", &[]), 6);
    assert_eq!(calls_until(&a_calls, 6), [(6, "old1".to_string())]);
    let i = wait_info(&mut ac, "replication", WAIT, "a to be fenced", |i| {
        i.get("role").map(String::as_str) == Some("slave")
            && info_num(i, "userbus_applied_seq") >= 6
    });
    assert_eq!(info_num(&i, "userbus_fenced"), 1, "{i:?}");
    assert_eq!(info_num(&i, "userbus_discarded_events"), 1, "{i:?}");
    // The discarded event is not handled any more: not locally, not in the
    // bucket a promoted node resumes from.
    assert_eq!(local_offset(&mut ac), 5);
    std::thread::sleep(Duration::from_millis(300));
    let stored = kv_offset(&mut client);
    assert!(
        stored.is_some_and(|s| s <= 5),
        "the bucket holds {stored:?}"
    );

    // `b` writes on; `a` follows and handles nothing while it follows.
    assert_eq!(register(&mut bc, "new2", &[]), 7);
    assert_eq!(register(&mut bc, "new3", &[]), 8);
    wait_applied(&mut ac, 8);
    assert!(
        a_calls.recv_timeout(Duration::from_millis(300)).is_err(),
        "a durable handler ran on a follower"
    );
    drop(bc);
    b.stop();

    // Promoted again: every event it had not handled, `b`'s too, and its own.
    promote(&mut ac);
    assert_eq!(register(&mut ac, "a-after", &[]), 9);
    let calls = calls_until(&a_calls, 9);
    assert!(
        calls.iter().all(|(_, name)| name != "old1"),
        "a discarded event handled after the fence: {calls:?}"
    );
    let mut seqs: Vec<i64> = calls.iter().map(|c| c.0).collect();
    seqs.dedup();
    assert_eq!(seqs, [6, 7, 8, 9], "{calls:?}");
    let names: Vec<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    for name in ["new1", "new2", "new3", "a-after"] {
        assert!(names.contains(&name), "{name} not handled: {calls:?}");
    }
    assert_eq!(local_offset(&mut ac), 9);
}
