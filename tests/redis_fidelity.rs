//! What a Redis client notices, checked against a real redis-server 7: the same
//! requests go to both and the replies are compared byte for byte, or, where they
//! carry the servers' own clocks, with those times checked and set aside. The
//! Redis side's `events` stream is written with XADD to hold exactly userbus's log.
//!
//! Covered: reads without COUNT return every entry (past the 1000 of XREAD and
//! the 100,000 of XRANGE that userbus once stopped at); `XINFO STREAM events FULL`;
//! a dead-lettered entry in a consumer's history and in XAUTOCLAIM's deleted ids,
//! which read as an entry deleted from a Redis stream does; what is answered
//! before AUTH; RESET. Without redis-server the comparisons are skipped with a note
//! (see `common::reference`).
mod common;

use common::reference::{RawClient, RedisServer};
use common::reply::{bulk_text, call};
use common::stream::{
    DEAD, EVENTS, Entry, all_events, gone_bytes, serve_log, serve_log_with, xlen,
};
use common::{TestServer, bulk, now_ms, resp, show};
use redis::Value;

/// Sends `args` to userbus (`ub`) and to Redis (`rd`); their replies must be the
/// same bytes. Returns userbus's.
fn same_reply(ub: &mut RawClient, rd: &mut RawClient, args: &[&str]) -> Vec<u8> {
    let (got, want) = (ub.call(args), rd.call(args));
    if got != want {
        let at = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let from = at.saturating_sub(200);
        panic!(
            "{args:?}: userbus and Redis differ at byte {at} of {} / {}:\n userbus: {}\n   redis: {}",
            got.len(),
            want.len(),
            show(&got[from..(at + 200).min(got.len())]),
            show(&want[from..(at + 200).min(want.len())]),
        );
    }
    got
}

/// Switches both connections to RESP3 (their HELLO replies name different
/// servers, so they are not compared).
fn hello3(ub: &mut RawClient, rd: &mut RawClient) {
    for c in [ub, rd] {
        let hello = c.call(&["HELLO", "3"]);
        assert!(hello.starts_with(b"%"), "HELLO 3: {}", show(&hello));
    }
}

/// Registers `u0`, `u1`, ... (`n` users) over one pipelined connection and
/// returns the log's entries.
fn register_many(server: &TestServer, n: usize) -> Vec<Entry> {
    let mut c = RawClient::connect(server.addr);
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut batch = Vec::new();
        for i in chunk {
            batch.extend(resp(&["REGISTER", &format!("u{i}")]));
        }
        c.send(&batch);
        for i in chunk {
            let reply = c.reply();
            assert!(reply.starts_with(b":"), "REGISTER u{i}: {}", show(&reply));
        }
    }
    all_events(&mut server.redis())
}

#[test]
fn reads_without_count_return_every_entry_as_redis_does() {
    let Some(redis) = RedisServer::start(&[]) else {
        return;
    };
    let server = TestServer::start_fast(|_| {});
    let all = register_many(&server, 100_050);
    assert_eq!(all.len(), 100_050);
    redis.mirror(&all);
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());

    let range = same_reply(&mut ub, &mut rd, &["XRANGE", EVENTS, "-", "+"]);
    assert!(range.starts_with(b"*100050\r\n"), "{}", show(&range[..40]));
    for args in [
        &["XREVRANGE", EVENTS, "+", "-"][..],
        &["XRANGE", EVENTS, "-", "+", "COUNT", "100049"],
        &["XREAD", "STREAMS", EVENTS, "0"],
        &["XREAD", "COUNT", "0", "STREAMS", EVENTS, "0"],
        &["XREAD", "COUNT", "-1", "STREAMS", EVENTS, &all[10].id],
        &["XGROUP", "CREATE", EVENTS, "g", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, ">"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, "0"],
        &["XPENDING", EVENTS, "g"],
    ] {
        same_reply(&mut ub, &mut rd, args);
    }
    let read = same_reply(&mut ub, &mut rd, &["XREAD", "STREAMS", EVENTS, "0"]);
    let head = b"*1\r\n*2\r\n$6\r\nevents\r\n*100050\r\n";
    assert!(read.starts_with(head), "{}", show(&read[..40]));

    hello3(&mut ub, &mut rd);
    for args in [
        &["XREAD", "STREAMS", EVENTS, &all[98_000].id][..],
        &["XRANGE", EVENTS, &all[90_000].id, "+"],
        &["XGROUP", "CREATE", EVENTS, "h", &all[99_000].id],
        &["XREADGROUP", "GROUP", "h", "c", "STREAMS", EVENTS, ">"],
    ] {
        same_reply(&mut ub, &mut rd, args);
    }
}

// ---------------------------------------------------------------------------
// XINFO STREAM FULL

/// A map reply (a RESP3 map or a RESP2 flat array) with each value passed
/// through `f` by its key; `None` drops the pair.
fn edit_map(v: Value, mut f: impl FnMut(&str, Value) -> Option<Value>) -> Value {
    match v {
        Value::Map(pairs) => Value::Map(
            pairs
                .into_iter()
                .filter_map(|(k, v)| f(&bulk_text(&k), v).map(|v| (k, v)))
                .collect(),
        ),
        Value::Array(flat) => {
            assert!(
                flat.len().is_multiple_of(2),
                "a flat map has pairs: {flat:?}"
            );
            let mut out = Vec::new();
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let Some(v) = f(&bulk_text(&k), v) {
                    out.push(k);
                    out.push(v);
                }
            }
            Value::Array(out)
        }
        other => panic!("expected a map, got {other:?}"),
    }
}

/// An array reply with each element passed through `f`.
fn edit_each(v: Value, f: impl FnMut(Value) -> Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.into_iter().map(f).collect()),
        other => panic!("expected an array, got {other:?}"),
    }
}

/// A time the server took from its own clock (Unix ms, or -1 for never): checked
/// to be about now, then set to 0 so that two servers' replies compare.
fn clock(v: Value) -> Value {
    match v {
        Value::Int(-1) => Value::Int(-1),
        Value::Int(ms) => {
            assert!(
                (ms - now_ms()).abs() < 60_000,
                "a time of the server's clock: {ms}"
            );
            Value::Int(0)
        }
        other => panic!("expected a time in ms, got {other:?}"),
    }
}

/// The element `i` of an array reply passed through `clock`.
fn clock_at(v: Value, i: usize) -> Value {
    let mut n = 0;
    edit_each(v, |x| {
        n += 1;
        if n - 1 == i { clock(x) } else { x }
    })
}

/// An `XINFO STREAM key FULL` reply with its times set aside and without what
/// only one of the two servers says: Redis's `radix-tree-*` (its memory layout),
/// and, unless `active_time`, the consumers' `active-time` (Redis 7.2 on).
fn full_form(v: Value, active_time: bool) -> Value {
    edit_map(v, |k, v| match k {
        "radix-tree-keys" | "radix-tree-nodes" => None,
        "groups" => Some(edit_each(v, |g| {
            edit_map(g, |k, v| match k {
                "pending" => Some(edit_each(v, |p| clock_at(p, 2))),
                "consumers" => Some(edit_each(v, |c| {
                    edit_map(c, |k, v| match k {
                        "seen-time" => Some(clock(v)),
                        "active-time" if !active_time => None,
                        "active-time" => Some(clock(v)),
                        "pending" => Some(edit_each(v, |p| clock_at(p, 1))),
                        _ => Some(v),
                    })
                })),
                _ => Some(v),
            })
        })),
        _ => Some(v),
    })
}

#[test]
fn xinfo_stream_full_lists_entries_groups_consumers_and_pending_as_redis_does() {
    let Some(redis) = RedisServer::start(&[]) else {
        return;
    };
    // More entries than FULL shows by default (10).
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    let (server, _c, all) = serve_log(&names);
    redis.mirror(&all);
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
    for args in [
        &["XGROUP", "CREATE", EVENTS, "mailer", "0"][..],
        // At 0: Redis 7.0 says nil for the entries read by (and the lag of) a group
        // created in the middle of a stream; userbus counts them.
        &["XGROUP", "CREATE", EVENTS, "audit", "0"],
        &[
            "XREADGROUP",
            "GROUP",
            "audit",
            "x",
            "COUNT",
            "1",
            "STREAMS",
            EVENTS,
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "mailer",
            "alice",
            "COUNT",
            "11",
            "STREAMS",
            EVENTS,
            ">",
        ],
        &[
            "XREADGROUP",
            "GROUP",
            "mailer",
            "bob",
            "STREAMS",
            EVENTS,
            ">",
        ],
        &["XGROUP", "CREATECONSUMER", EVENTS, "mailer", "carol"],
        &["XACK", EVENTS, "mailer", &all[0].id],
        &["XCLAIM", EVENTS, "mailer", "bob", "0", &all[1].id],
    ] {
        same_reply(&mut ub, &mut rd, args);
    }

    let (major, minor) = redis.version();
    let active_time = (major, minor) >= (7, 2);
    for resp3 in [false, true] {
        let (mut u, mut r) = (server.redis_proto(resp3), redis.redis_proto(resp3));
        for count in [None, Some("2"), Some("0"), Some("-1"), Some("100")] {
            let mut args = vec!["XINFO", "STREAM", EVENTS, "FULL"];
            args.extend(count.map(|n| ["COUNT", n]).into_iter().flatten());
            let (got, want) = (call(&mut u, &args), call(&mut r, &args));
            assert_eq!(
                full_form(got, active_time),
                full_form(want, true),
                "{args:?} resp3={resp3}"
            );
        }
    }
    // What userbus says that Redis 7.0 does not: when each consumer last read.
    let v = call(&mut server.redis(), &["XINFO", "STREAM", EVENTS, "FULL"]);
    let text = format!("{v:?}");
    assert!(text.contains("active-time"), "{text}");

    for args in [
        &["XINFO", "STREAM", EVENTS, "FULL", "COUNT"][..],
        &["XINFO", "STREAM", EVENTS, "FULLER"],
        &["XINFO", "Stream", EVENTS, "FULL", "LIMIT", "1"],
        &["XINFO", "STREAM", EVENTS, "FULL", "COUNT", "x"],
    ] {
        let reply = same_reply(&mut ub, &mut rd, args);
        assert!(reply.starts_with(b"-ERR"), "{args:?}: {}", show(&reply));
    }
}

// ---------------------------------------------------------------------------
// Dead letters in a consumer's history

/// A Redis mirroring `all`, and a connection to `server` and one to that Redis (in
/// RESP3 when `resp3`), on both of which consumer `w` of a new group `group` has
/// read every entry once; `None` when there is no redis-server to compare with.
fn group_read_once(
    server: &TestServer,
    all: &[Entry],
    resp3: bool,
    group: &str,
) -> Option<(RedisServer, RawClient, RawClient)> {
    let redis = RedisServer::start(&[])?;
    redis.mirror(all);
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
    if resp3 {
        hello3(&mut ub, &mut rd);
    }
    same_reply(&mut ub, &mut rd, &["XGROUP", "CREATE", EVENTS, group, "0"]);
    let read = ["XREADGROUP", "GROUP", group, "w", "STREAMS", EVENTS, ">"];
    same_reply(&mut ub, &mut rd, &read);
    Some((redis, ub, rd))
}

#[test]
fn a_dead_lettered_entry_comes_back_with_a_nil_body_as_redis_returns_a_deleted_one() {
    // Each entry may be delivered once; the history read would be the second.
    let (server, _c, all) = serve_log_with(|cfg| cfg.max_deliveries = 1, &["a", "b", "c"]);
    let (a, b, c) = (&all[0].id, &all[1].id, &all[2].id);
    for (resp3, group) in [(false, "g2"), (true, "g3")] {
        let Some((_redis, mut ub, mut rd)) = group_read_once(&server, &all, resp3, group) else {
            return;
        };
        // userbus gives up on a and b at this delivery; in Redis they are deleted.
        assert_eq!(rd.call(&["XDEL", EVENTS, a, b]), b":2\r\n");
        let history = [
            "XREADGROUP",
            "GROUP",
            group,
            "w",
            "COUNT",
            "2",
            "STREAMS",
            EVENTS,
            "0",
        ];
        let got = same_reply(&mut ub, &mut rd, &history);
        let want = gone_bytes(EVENTS, &[a.clone(), b.clone()], resp3);
        assert_eq!(show(&got), show(&want));

        // They are acknowledged and in events.dead; c is still pending, and is given
        // up on at its own next delivery.
        assert_eq!(ub.call(&["XPENDING", EVENTS, group])[..4], *b"*4\r\n");
        let pending = ub.call(&["XPENDING", EVENTS, group, "-", "+", "10"]);
        let mut head = b"*1\r\n*4\r\n".to_vec();
        head.extend(bulk(c));
        assert!(pending.starts_with(&head), "{}", show(&pending));
        let history = ["XREADGROUP", "GROUP", group, "w", "STREAMS", EVENTS, "0"];
        let want = gone_bytes(EVENTS, std::slice::from_ref(c), resp3);
        assert_eq!(show(&ub.call(&history)), show(&want));
        // Nothing is pending any more: an empty history, as Redis answers one.
        assert_eq!(ub.call(&["XACK", EVENTS, group, a, b, c]), b":0\r\n");
        assert_eq!(rd.call(&["XACK", EVENTS, group, a, b, c]), b":3\r\n");
        same_reply(&mut ub, &mut rd, &history);
    }
    assert_eq!(xlen(&mut server.redis(), DEAD), 6);
}

#[test]
fn xautoclaim_lists_a_dead_lettered_entry_as_redis_lists_a_deleted_one() {
    // Each entry may be delivered twice; a claim after two would be the third.
    let (server, _c, all) = serve_log_with(|cfg| cfg.max_deliveries = 2, &["a", "b", "c", "d"]);
    let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    for (resp3, group) in [(false, "g2"), (true, "g3")] {
        let Some((_redis, mut ub, mut rd)) = group_read_once(&server, &all, resp3, group) else {
            return;
        };
        // A second delivery of a, b and d; c has had one.
        let second = ["XCLAIM", EVENTS, group, "x", "0", ids[0], ids[1], ids[3]];
        same_reply(&mut ub, &mut rd, &second);
        // userbus gives up on a, b and d at this claim; in Redis they are deleted.
        assert_eq!(
            rd.call(&["XDEL", EVENTS, ids[0], ids[1], ids[3]]),
            b":3\r\n"
        );
        // COUNT 1: a deleted id counts against it as a claimed entry does.
        let claim = ["XAUTOCLAIM", EVENTS, group, "v", "0", "0-0", "COUNT", "1"];
        let got = same_reply(&mut ub, &mut rd, &claim);
        let want = format!("*3\r\n$3\r\n{}\r\n*0\r\n*1\r\n$3\r\n{}\r\n", ids[1], ids[0]);
        assert_eq!(show(&got), show(want.as_bytes()));
        // The scan goes on from b: b is gone, c is claimed, d is gone.
        let rest = ["XAUTOCLAIM", EVENTS, group, "v", "0", ids[1], "COUNT", "3"];
        let got = same_reply(&mut ub, &mut rd, &rest);
        let mut deleted = format!("*2\r\n${}\r\n{}\r\n", ids[1].len(), ids[1]);
        deleted.push_str(&format!("${}\r\n{}\r\n", ids[3].len(), ids[3]));
        assert!(
            got.starts_with(b"*3\r\n$3\r\n0-0\r\n*1\r\n"),
            "{}",
            show(&got)
        );
        assert!(got.ends_with(deleted.as_bytes()), "{}", show(&got));
        for args in [
            &["XPENDING", EVENTS, group][..],
            &["XAUTOCLAIM", EVENTS, group, "v", "0", "0-0", "JUSTID"],
        ] {
            same_reply(&mut ub, &mut rd, args);
        }
    }
    assert_eq!(xlen(&mut server.redis(), DEAD), 6);
}

// ---------------------------------------------------------------------------
// RESET

#[test]
fn reset_leaves_subscribed_mode_and_clears_the_connection_as_redis_does() {
    let Some(redis) = RedisServer::start(&[]) else {
        return;
    };
    let server = TestServer::start();
    for resp3 in [false, true] {
        let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
        if resp3 {
            hello3(&mut ub, &mut rd);
        }
        for args in [
            &["CLIENT", "SETNAME", "worker"][..],
            &["SUBSCRIBE", "user.registered", "user.unregistered"],
        ] {
            same_reply(&mut ub, &mut rd, args);
        }
        // SUBSCRIBE replies once per channel.
        assert_eq!(ub.reply(), rd.reply());
        same_reply(&mut ub, &mut rd, &["PSUBSCRIBE", "user.*"]);
        if !resp3 {
            // In subscribed mode, RESP2 allows RESET among a few others.
            let refused = same_reply(&mut ub, &mut rd, &["XLEN", EVENTS]);
            assert!(refused.ends_with(b"RESET are allowed in this context\r\n"));
        }
        // RESET: one reply, no unsubscribe confirmations.
        assert_eq!(same_reply(&mut ub, &mut rd, &["RESET"]), b"+RESET\r\n");
        // Back to RESP2 (a nil is `$-1`), unnamed, out of subscribed mode.
        assert_eq!(
            same_reply(&mut ub, &mut rd, &["CLIENT", "GETNAME"]),
            b"$-1\r\n"
        );
        assert_eq!(same_reply(&mut ub, &mut rd, &["PING"]), b"+PONG\r\n");
        // Nothing is pushed to it any more.
        common::reply::register(&mut server.redis(), &format!("r{resp3}"), &[]);
        assert_eq!(ub.call(&["PING"]), b"+PONG\r\n");
        // And nothing is left to unsubscribe from.
        same_reply(&mut ub, &mut rd, &["UNSUBSCRIBE"]);
        same_reply(&mut ub, &mut rd, &["PUNSUBSCRIBE"]);
    }
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
    let reply = same_reply(&mut ub, &mut rd, &["RESET", "now"]);
    assert_eq!(
        reply,
        b"-ERR wrong number of arguments for 'reset' command\r\n"
    );
    let info = String::from_utf8_lossy(&ub.call(&["INFO", "clients"])).into_owned();
    assert!(info.contains("pubsub_clients:0\r\n"), "{info}");
}

// ---------------------------------------------------------------------------
// Before AUTH

/// A redis-server and a userbus that both require the password `s3cret`; `None`
/// when there is no redis-server to compare with.
fn both_with_password() -> Option<(RedisServer, TestServer)> {
    let redis = RedisServer::start(&["--requirepass", "s3cret"])?;
    let server = TestServer::start_with(|cfg| cfg.requirepass = Some("s3cret".into()), |b| b);
    Some((redis, server))
}

#[test]
fn before_auth_only_auth_hello_quit_and_reset_are_answered_as_redis_does() {
    let Some((redis, server)) = both_with_password() else {
        return;
    };
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
    for args in [
        &["PING"][..],
        &["PING", "hi"],
        &["PING", "a", "b"],
        &["ECHO", "x"],
        &["ECHO"],
        &["SELECT", "0"],
        &["CLIENT", "SETNAME", "w"],
        &["COMMAND", "COUNT"],
        &["XLEN", EVENTS],
        &["SUBSCRIBE", "user.registered"],
        &["NOSUCH", "x"],
        &["AUTH"],
        &["AUTH", "a", "b", "c"],
        &["AUTH", "wrong"],
        &["AUTH", "default", "wrong"],
        &["AUTH", "someone", "s3cret"],
        &["HELLO", "4"],
        &["HELLO", "x"],
        &["HELLO", "2", "FOO"],
        &["HELLO", "3", "AUTH", "default"],
        &["HELLO", "3", "AUTH", "default", "wrong"],
        &["HELLO", "2", "SETNAME", "w", "AUTH", "default", "wrong"],
        &["RESET"],
        &["PING"],
    ] {
        let reply = same_reply(&mut ub, &mut rd, args);
        assert!(reply.starts_with(b"-") || args == ["RESET"], "{args:?}");
    }
    // HELLO without AUTH: the text of Redis 7.2 on, which added `<proto>`.
    for args in [
        &["HELLO"][..],
        &["HELLO", "3"],
        &["HELLO", "2", "SETNAME", "w"],
    ] {
        let (got, want) = (ub.call(args), rd.call(args));
        let want = String::from_utf8_lossy(&want).replace("HELLO AUTH", "HELLO <proto> AUTH");
        assert_eq!(show(&got), show(want.as_bytes()), "{args:?}");
        assert!(got.starts_with(b"-NOAUTH HELLO must be called"), "{args:?}");
    }
    // QUIT says OK and closes.
    assert_eq!(same_reply(&mut ub, &mut rd, &["QUIT"]), b"+OK\r\n");

    // HELLO with the secret authenticates (the maps name different servers).
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
    for c in [&mut ub, &mut rd] {
        let hello = c.call(&["HELLO", "2", "AUTH", "default", "s3cret"]);
        assert!(
            hello.starts_with(b"*14\r\n$6\r\nserver\r\n"),
            "{}",
            show(&hello)
        );
    }
    assert_eq!(same_reply(&mut ub, &mut rd, &["PING"]), b"+PONG\r\n");
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
    assert_eq!(
        same_reply(&mut ub, &mut rd, &["AUTH", "default", "s3cret"]),
        b"+OK\r\n"
    );
    assert_eq!(same_reply(&mut ub, &mut rd, &["PING"]), b"+PONG\r\n");
}

#[test]
fn reset_logs_out_when_a_password_is_required_as_redis_does() {
    let Some((redis, server)) = both_with_password() else {
        return;
    };
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());
    // RESET needs no authentication.
    assert_eq!(same_reply(&mut ub, &mut rd, &["RESET"]), b"+RESET\r\n");
    assert_eq!(
        same_reply(&mut ub, &mut rd, &["AUTH", "s3cret"]),
        b"+OK\r\n"
    );
    same_reply(&mut ub, &mut rd, &["CLIENT", "SETNAME", "w"]);
    assert_eq!(same_reply(&mut ub, &mut rd, &["RESET"]), b"+RESET\r\n");
    let refused = same_reply(&mut ub, &mut rd, &["CLIENT", "GETNAME"]);
    assert!(refused.starts_with(b"-NOAUTH"), "{}", show(&refused));
    assert_eq!(
        same_reply(&mut ub, &mut rd, &["AUTH", "s3cret"]),
        b"+OK\r\n"
    );
    assert_eq!(
        same_reply(&mut ub, &mut rd, &["CLIENT", "GETNAME"]),
        b"$-1\r\n"
    );
    // A request pipelined behind RESET already needs AUTH again.
    let mut pipelined = resp(&["RESET"]);
    pipelined.extend(resp(&["CLIENT", "GETNAME"]));
    for c in [&mut ub, &mut rd] {
        c.send(&pipelined);
        assert_eq!(c.reply(), b"+RESET\r\n");
        let refused = c.reply();
        assert!(refused.starts_with(b"-NOAUTH"), "{}", show(&refused));
    }
}
