//! Taking over a consumer group's pending entries: XCLAIM (min-idle, JUSTID,
//! FORCE) and XAUTOCLAIM (a cursor walk), a killed consumer replaced across a
//! restart with every registration processed, and entries delivered past
//! `max_deliveries` moved to the dead letters of `events.dead`, whichever command
//! delivered them.
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::reply::{call, int, register};
use common::stream::{
    DEAD, EVENTS, Entry, all_events, assert_consecutive, create_group, entries_bytes, gone_bytes,
    group_info, ids, pending, pending_count, read_bytes, read_ids, read_reply, readgroup,
    redis_both, rfc3339_ms, serve_delivered, serve_delivered_with, serve_log, serve_log_with,
    typed_ids, typed_read, xlen, xrange,
};
use common::{IO_TIMEOUT, TestServer, bulk, exchange_resp};
use redis::Commands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamClaimReply, StreamId,
    StreamPendingCountReply, StreamPendingReply, StreamReadOptions,
};
use userbus::Config;

/// XAUTOCLAIM through the typed API: `group`'s entries idle at least `min_idle` ms,
/// from `start`, for `consumer`.
fn autoclaim(
    con: &mut redis::Connection,
    group: &str,
    consumer: &str,
    min_idle: usize,
    start: &str,
    opts: StreamAutoClaimOptions,
) -> StreamAutoClaimReply {
    con.xautoclaim_options(EVENTS, group, consumer, min_idle, start, opts)
        .expect("xautoclaim")
}

#[test]
fn xclaim_takes_over_entries_idle_long_enough() {
    let (server, mut c, all) = serve_delivered(&["u0", "u1", "u2"], "c1");
    let id = ids(&all);

    // Not idle for an hour: nothing moves.
    let mut raw = server.raw();
    exchange_resp(
        &mut raw,
        &["XCLAIM", EVENTS, "g", "c2", "3600000", &id[0]],
        b"*0\r\n",
    );
    assert_eq!(
        pending(&mut c, "g")[0],
        (id[0].clone(), "c1".to_string(), 1)
    );

    // Min-idle 0: claimed, delivered (full entry), counted.
    for (mut con, proto) in redis_both(&server) {
        let claimed: StreamClaimReply =
            con.xclaim(EVENTS, "g", "c2", 0, &[&id[0]]).expect("xclaim");
        assert_eq!(claimed.ids.len(), 1, "{proto}");
        assert_eq!(claimed.ids[0].id, id[0], "{proto}");
        assert_eq!(claimed.ids[0].get::<String>("name").as_deref(), Some("u0"));
    }
    let xclaim = ["XCLAIM", EVENTS, "g", "c2", "0", &id[0]];
    exchange_resp(&mut raw, &xclaim, &entries_bytes(&all[..1]));
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
    let justid = ["XCLAIM", EVENTS, "g", "c3", "0", &id[1], "JUSTID"];
    let mut expected = b"*1\r\n".to_vec();
    expected.extend(bulk(&id[1]));
    exchange_resp(&mut raw, &justid, &expected);
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
    let (server, mut c, all) = serve_delivered(&["u0", "u1", "u2", "u3", "u4"], "dead");
    let id = ids(&all);

    // Not idle long enough: a full scan, nothing claimed.
    let mut raw = server.raw();
    exchange_resp(
        &mut raw,
        &["XAUTOCLAIM", EVENTS, "g", "c2", "3600000", "0-0"],
        b"*3\r\n$3\r\n0-0\r\n*0\r\n*0\r\n",
    );

    // Page by page.
    let mut c3 = server.redis3();
    let opts = StreamAutoClaimOptions::default().count(2);
    let page = autoclaim(&mut c3, "g", "c2", 0, "0-0", opts);
    assert_eq!(page.next_stream_id, id[2]);
    assert_eq!(typed_ids(&page.claimed), id[..2]);
    assert_eq!(page.claimed[1].get::<String>("name").as_deref(), Some("u1"));
    assert!(page.deleted_ids.is_empty());

    let mut expected = b"*3\r\n".to_vec();
    expected.extend(bulk(&id[4]));
    expected.extend_from_slice(b"*2\r\n");
    expected.extend(bulk(&id[2]));
    expected.extend(bulk(&id[3]));
    expected.extend_from_slice(b"*0\r\n");
    let justid = [
        "XAUTOCLAIM",
        EVENTS,
        "g",
        "c2",
        "0",
        &id[2],
        "COUNT",
        "2",
        "JUSTID",
    ];
    exchange_resp(&mut raw, &justid, &expected);

    let mut expected = b"*3\r\n$3\r\n0-0\r\n".to_vec();
    expected.extend(entries_bytes(&all[4..]));
    expected.extend_from_slice(b"*0\r\n");
    exchange_resp(
        &mut raw,
        &["XAUTOCLAIM", EVENTS, "g", "c2", "0", &id[4], "COUNT", "2"],
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
    let opts = StreamAutoClaimOptions::default().with_justid();
    let all_at_once = autoclaim(&mut c, "g", "c3", 0, "0", opts);
    assert_eq!(all_at_once.next_stream_id, "0-0");
    assert_eq!(typed_ids(&all_at_once.claimed), id);
    assert!(
        pending(&mut c, "g")
            .iter()
            .all(|(_, owner, _)| owner == "c3")
    );
}

#[test]
fn xclaim_force_creates_pending_entries_counted_as_redis_does() {
    let (_server, mut c, all) = serve_log(&["a", "b"]);
    let id = ids(&all);
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

/// What the consumer of `a_killed_consumer_is_replaced_...` does with entries it
/// was given: notes each user's name, then acknowledges the entry in `mailer`,
/// where it must have been pending.
fn process(con: &mut redis::Connection, delivered: &[StreamId], processed: &mut Vec<String>) {
    for e in delivered {
        processed.push(e.get("name").expect("name"));
        let n: usize = con.xack(EVENTS, "mailer", &[&e.id]).expect("xack");
        assert_eq!(n, 1);
    }
}

#[test]
fn a_killed_consumer_is_replaced_and_every_registration_is_processed() {
    let (server, mut producer) = TestServer::start_redis();
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
    let first = typed_read(&mut a, ">", &opts).expect("entries");
    process(&mut a, &first.keys[0].ids, &mut processed);
    let opts = StreamReadOptions::default().group("mailer", "a").count(4);
    let taken = typed_read(&mut a, ">", &opts).expect("entries");
    let abandoned: Vec<String> = read_ids(&taken);
    assert_eq!(abandoned.len(), 4);
    drop(a);

    // More registrations while nobody consumes, then the server restarts.
    produce(&mut producer, 10..15);
    drop(producer);
    let server = server.restart();
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
        let opts = StreamAutoClaimOptions::default().count(3);
        let page = autoclaim(&mut b, "mailer", "b", min_idle, &cursor, opts);
        claimed.extend(typed_ids(&page.claimed));
        process(&mut b, &page.claimed, &mut processed);
        if page.next_stream_id == "0-0" {
            break;
        }
        cursor = page.next_stream_id;
    }
    assert_eq!(claimed, abandoned);
    loop {
        let opts = StreamReadOptions::default().group("mailer", "b").count(4);
        let Some(reply) = typed_read(&mut b, ">", &opts) else {
            break;
        };
        process(&mut b, &reply.keys[0].ids, &mut processed);
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
    let server = TestServer::start_with(|cfg| cfg.max_deliveries = 2, |b| b);
    let mut c = server.redis();
    register(&mut c, "a", &[("plan", "pro")]);
    register(&mut c, "b", &[]);
    let all = all_events(&mut c);
    create_group(&mut c, "g", "0");
    create_group(&mut c, "other", "0");

    assert_eq!(readgroup(&mut c, "g", "c1", &[], ">"), Some(all.clone()));
    assert_eq!(readgroup(&mut c, "g", "c1", &[], "0"), Some(all.clone()));
    assert_eq!(xlen(&mut c, DEAD), 0);
    // Delivered twice: the next delivery is refused and both become dead letters,
    // read back as ids with nil bodies (as Redis replies for deleted entries).
    exchange_resp(
        &mut server.raw(),
        &["XREADGROUP", "GROUP", "g", "c1", "STREAMS", EVENTS, "0"],
        &gone_bytes(EVENTS, &ids(&all), false),
    );
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
    for (mut con, _) in redis_both(&server) {
        let v = call(&mut con, &["XREAD", "STREAMS", DEAD, "0"]);
        assert_eq!(read_reply(&v), Some((DEAD.to_string(), dead.clone())));
        let v = call(&mut con, &["XREAD", "STREAMS", DEAD, &dead[0].id]);
        assert_eq!(read_reply(&v), Some((DEAD.to_string(), dead[1..].to_vec())));
        let mut rev = xrange(&mut con, &["XREVRANGE", DEAD, "+", "-"]);
        rev.reverse();
        assert_eq!(rev, dead);
    }
    let mut s = server.raw();
    exchange_resp(
        &mut s,
        &["XREAD", "STREAMS", DEAD, "0"],
        &read_bytes(DEAD, &dead, false),
    );
    exchange_resp(&mut s, &["XLEN", DEAD], b":2\r\n");

    // Dead letters are durable.
    drop(c);
    drop(s);
    let server = server.restart();
    let mut c = server.redis();
    assert_eq!(xrange(&mut c, &["XRANGE", DEAD, "-", "+"]), dead);
    assert_eq!(pending_count(&mut c, "g"), 0);
}

#[test]
fn an_entry_claimed_past_max_deliveries_goes_to_events_dead() {
    let config = |cfg: &mut Config| cfg.max_deliveries = 2;
    let (server, mut c, all) = serve_delivered_with(config, &["u0", "u1", "u2"], "c1");
    let id = ids(&all);
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
    let page = autoclaim(
        &mut c3,
        "g",
        "c3",
        0,
        "0-0",
        StreamAutoClaimOptions::default(),
    );
    assert_eq!(page.next_stream_id, "0-0");
    assert_eq!(typed_ids(&page.claimed), [id[2].clone()]);
    // Gone from the group as an entry deleted from a Redis stream: a deleted id.
    assert_eq!(page.deleted_ids, [id[1].clone()]);
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
    exchange_resp(
        &mut server.raw(),
        &["XREADGROUP", "GROUP", "g", "c3", "STREAMS", EVENTS, "0"],
        &gone_bytes(EVENTS, std::slice::from_ref(&id[2]), false),
    );
    assert_eq!(xlen(&mut c, DEAD), 3);
    assert_eq!(pending_count(&mut c, "g"), 0);
}

#[test]
fn a_dead_letter_names_the_consumer_that_last_had_the_entry() {
    let (_server, mut c, all) = serve_log_with(|cfg| cfg.max_deliveries = 2, &["a", "b"]);
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
