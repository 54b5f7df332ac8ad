//! Reading the durable stream `events`: XLEN, XRANGE and XREVRANGE (bounds,
//! COUNT, exclusive ids), and XREAD without blocking, each checked through the
//! `redis` crate in RESP2 and RESP3 and byte for byte on raw sockets. What each
//! entry says (kind, user id, name, fields, time) is checked against what the
//! registrations replied.
mod common;

use common::reply::{call, register, unregister};
use common::stream::{
    DEAD, EVENTS, all_events, assert_consecutive, assert_event, create_group, entries_bytes, ids,
    nil_bytes, raw_both, read_bytes, read_events, read_ids, readgroup, redis_both, registered,
    reply_to, rfc3339_ms, serve_log, typed_ids, unregistered, xlen, xrange,
};
use common::{TestServer, exchange_resp, now_ms, resp};
use redis::streams::{StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{Commands, Value};

#[test]
fn xrange_lists_registrations_and_unregistrations_in_commit_order() {
    let (server, mut c) = TestServer::start_redis();
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

    for (mut con, proto) in redis_both(&server) {
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
        assert_eq!(typed_ids(&typed.ids), ids(&all), "{proto}");
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
    let (server, mut c) = TestServer::start_redis();
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
    assert_eq!(typed_ids(&first3.ids), id[..3]);
    assert_eq!(first3.ids[1].get::<String>("name").as_deref(), Some("u1"));
    let last: StreamRangeReply = c3.xrevrange_count(EVENTS, "+", "-", 1).expect("xrevrange");
    assert_eq!(typed_ids(&last.ids), id[4..]);
}

#[test]
fn xrange_replies_are_redis_stream_entries_byte_for_byte() {
    let (server, mut c) = TestServer::start_redis();
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
    for (mut s, _) in raw_both(&server) {
        exchange_resp(&mut s, &["XLEN", EVENTS], b":2\r\n");
        exchange_resp(&mut s, &["XRANGE", EVENTS, "-", "+"], &entries_bytes(&all));
        exchange_resp(
            &mut s,
            &["XREVRANGE", EVENTS, "+", "-", "COUNT", "1"],
            &entries_bytes(&all[1..]),
        );
        let after_last = format!("({}", all[1].id);
        exchange_resp(&mut s, &["XRANGE", EVENTS, &after_last, "+"], b"*0\r\n");
        // Nothing is dead yet: an empty stream, not an error.
        exchange_resp(&mut s, &["XLEN", DEAD], b":0\r\n");
        exchange_resp(&mut s, &["XRANGE", DEAD, "-", "+"], b"*0\r\n");
    }
}

#[test]
fn xrange_with_count_zero_or_negative_replies_a_null_array() {
    let (server, _c, _) = serve_log(&["alice"]);
    for (mut s, resp3) in raw_both(&server) {
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
    let (server, mut c, _) = serve_log(&["alice"]);
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

#[test]
fn xread_returns_the_entries_after_an_id() {
    let (server, _c, all) = serve_log(&["u0", "u1", "u2", "u3"]);
    let id = ids(&all);

    for (mut con, proto) in redis_both(&server) {
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
        assert_eq!(read_ids(&reply), id[..3], "{proto}");
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
    let (server, mut c) = TestServer::start_redis();
    register(&mut c, "alice", &[("plan", "pro")]);
    register(&mut c, "bob", &[]);
    let all = all_events(&mut c);
    for (mut s, resp3) in raw_both(&server) {
        exchange_resp(
            &mut s,
            &["XREAD", "COUNT", "1", "STREAMS", EVENTS, "0"],
            &read_bytes(EVENTS, &all[..1], resp3),
        );
        exchange_resp(
            &mut s,
            &["XREAD", "STREAMS", EVENTS, &all[0].id],
            &read_bytes(EVENTS, &all[1..], resp3),
        );
        exchange_resp(&mut s, &["XREAD", "STREAMS", EVENTS, "$"], nil_bytes(resp3));
        exchange_resp(
            &mut s,
            &["XREAD", "STREAMS", EVENTS, &all[1].id],
            nil_bytes(resp3),
        );
    }
}

#[test]
fn xread_and_xreadgroup_count_zero_means_no_limit() {
    let (_server, mut c, all) = serve_log(&["u0", "u1", "u2"]);
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
