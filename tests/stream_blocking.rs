//! Blocking reads of the durable stream `events`: XREAD BLOCK and XREADGROUP BLOCK
//! time out with nil, wake with exactly the entry committed after them, answer the
//! requests pipelined behind them in order, do not stall other clients, and are
//! not woken by a tick that rolled back. A read is known to be parked when CLIENT
//! LIST shows it as its connection's last command; no test sleeps for it.
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::reply::{call, register};
use common::stream::{
    EVENTS, all_events, assert_event, create_group, name_raw, newest_event, nil_bytes,
    park_typed_read, park_xread, pending, pending_count, raw_both, read_bytes, read_events,
    read_ids, redis_both, registered, serve_log, wait_parked, xlen,
};
use common::{
    TestServer, big_register, bulk, exchange, exchange_resp, now_ms, raw3, read_frame, read_n,
    read_until_suffix, resp, tight_max_pages, words,
};
use redis::Commands;
use redis::streams::{StreamInfoStreamReply, StreamReadOptions, StreamReadReply};

#[test]
fn xread_block_without_new_entries_times_out_with_nil() {
    let (server, _c, all) = serve_log(&["alice"]);
    let last = all[0].id.clone();

    // Raw: nil after the timeout, and the request behind it is answered after it.
    for (mut s, resp3) in raw_both(&server) {
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
    for (mut con, proto) in redis_both(&server) {
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
    let (server, mut c, _) = serve_log(&["before"]);

    for (i, (reader, proto)) in redis_both(&server).into_iter().enumerate() {
        let name = format!("reader{i}");
        let opts = StreamReadOptions::default().block(5000);
        let blocked = park_typed_read(&server, reader, &name, "$", opts);
        let user = format!("woke{i}");
        let from = now_ms();
        let uid = register(&mut c, &user, &[("plan", "pro")]);
        let to = now_ms();
        let reply = blocked
            .join()
            .expect("reader thread")
            .unwrap_or_else(|| panic!("{proto}: the blocked XREAD timed out"));
        let newest = newest_event(&mut c);
        assert_event(
            &newest,
            &registered(uid, &user, &[("plan", "pro")]),
            from,
            to,
        );
        assert_eq!(reply.keys.len(), 1, "{proto}");
        assert_eq!(reply.keys[0].key, EVENTS, "{proto}");
        assert_eq!(
            read_ids(&reply),
            std::slice::from_ref(&newest.id),
            "{proto}"
        );
        assert_eq!(
            reply.keys[0].ids[0].get::<String>("name"),
            Some(user.clone()),
            "{proto}"
        );
    }

    // Raw, BLOCK 0 (forever): the exact reply.
    for (i, (mut s, resp3)) in raw_both(&server).into_iter().enumerate() {
        park_xread(&server, &mut s, &format!("raw{i}"));
        register(&mut c, &format!("raw{i}"), &[]);
        let newest = newest_event(&mut c);
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
    let (server, mut c, _) = serve_log(&["before"]);
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
    let newest = newest_event(&mut c);
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
    exchange_resp(&mut s, &["PING"], b"+PONG\r\n");
}

#[test]
fn blocked_readers_do_not_stall_others_and_all_wake_on_the_commit() {
    let (server, mut c) = TestServer::start_redis();
    let mut a = server.raw();
    let mut b = raw3(&server);
    let mut gone = server.raw();
    for (s, name) in [(&mut a, "a"), (&mut b, "b"), (&mut gone, "gone")] {
        park_xread(&server, s, name);
    }
    // A parked reader that goes away must not trouble the server.
    drop(gone);

    // Everyone else is served while three readers wait.
    let mut other = server.raw();
    exchange_resp(&mut other, &["PING"], b"+PONG\r\n");
    exchange_resp(&mut other, &["ECHO", "hi"], b"$2\r\nhi\r\n");
    exchange_resp(&mut other, &["USERCOUNT"], b":0\r\n");
    exchange_resp(&mut other, &["XLEN", EVENTS], b":0\r\n");
    exchange_resp(&mut other, &["XREAD", "STREAMS", EVENTS, "$"], b"*-1\r\n");

    let uid = register(&mut c, "x", &[]);
    let newest = newest_event(&mut c);
    assert_eq!(newest.field("id"), uid.to_string());
    assert_eq!(
        read_frame(&mut a),
        read_bytes(EVENTS, std::slice::from_ref(&newest), false)
    );
    assert_eq!(read_frame(&mut b), read_bytes(EVENTS, &[newest], true));

    // The server still serves, and a second registration is an ordinary one.
    register(&mut c, "y", &[]);
    exchange_resp(&mut other, &["XLEN", EVENTS], b":2\r\n");
    exchange_resp(&mut a, &["PING"], b"+PONG\r\n");
}

#[test]
fn xreadgroup_block_wakes_on_a_registration_and_leaves_it_pending() {
    let (server, mut c, _) = serve_log(&["old"]);
    create_group(&mut c, "g", "$");

    // Nothing new: nil after the timeout.
    for (mut s, resp3) in raw_both(&server) {
        let started = Instant::now();
        exchange_resp(
            &mut s,
            &words("XREADGROUP GROUP g idle BLOCK 100 STREAMS events >"),
            nil_bytes(resp3),
        );
        assert!(started.elapsed() >= Duration::from_millis(90));
    }

    for (i, (reader, proto)) in redis_both(&server).into_iter().enumerate() {
        let consumer = format!("c{i}");
        let opts = StreamReadOptions::default()
            .group("g", &consumer)
            .block(5000);
        let blocked = park_typed_read(&server, reader, &consumer, ">", opts);
        register(&mut c, &format!("new{i}"), &[]);
        let reply = blocked
            .join()
            .expect("reader thread")
            .unwrap_or_else(|| panic!("{proto}: the blocked XREADGROUP timed out"));
        let newest = newest_event(&mut c);
        assert_eq!(
            read_ids(&reply),
            std::slice::from_ref(&newest.id),
            "{proto}"
        );
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
    let newest = newest_event(&mut c);
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
fn a_rolled_back_tick_adds_no_entries_and_wakes_no_reader() {
    let server = TestServer::start_with(|cfg| cfg.max_db_pages = tight_max_pages(), |b| b);
    let mut c = server.redis();
    let mut reader = server.raw();
    park_xread(&server, &mut reader, "reader");

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
    exchange_resp(&mut reader, &["XLEN", EVENTS], b":1\r\n");
}
