//! Consumer groups on the durable stream `events`: XGROUP (CREATE, SETID,
//! CREATECONSUMER, DELCONSUMER, DESTROY), XREADGROUP (new entries with `>`, a
//! consumer's own history with an id, NOACK), XACK, XPENDING and XINFO, and the
//! groups' state across a restart. Real clients: the `redis` crate in RESP2 and
//! RESP3, raw sockets where the exact bytes matter.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use common::reply::{assert_error_reply, bulk_text, call, int, register, unregister};
use common::stream::{
    EVENTS, all_events, assert_consecutive, consumers, create_group, entry, group_info, ids, items,
    named_pairs, nil_bytes, pending, pending_count, raw_both, read_bytes, read_ids, readgroup,
    redis_both, seq_of, serve_log, typed_read, xinfo_groups,
};
use common::{bulk, exchange_resp, read_frame, resp};
use redis::streams::{
    StreamInfoGroupsReply, StreamInfoStreamReply, StreamPendingCountReply, StreamPendingReply,
    StreamReadOptions,
};
use redis::{Commands, RedisResult, Value};

#[test]
fn xgroup_create_from_zero_dollar_or_an_id_and_busygroup_on_duplicate() {
    let (server, mut c, old) = serve_log(&["a", "b"]);

    let mut raw = server.raw();
    let from0 = ["XGROUP", "CREATE", EVENTS, "from0", "0"];
    exchange_resp(&mut raw, &from0, b"+OK\r\n");
    let busy = b"-BUSYGROUP Consumer Group name already exists\r\n";
    exchange_resp(&mut raw, &from0, busy);
    exchange_resp(
        &mut raw,
        &["XGROUP", "CREATE", EVENTS, "fromnow", "$", "MKSTREAM"],
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
    let (server, mut c, all) = serve_log(&["u0", "u1", "u2", "u3", "u4", "u5", "u6"]);
    let all = ids(&all);
    create_group(&mut c, "g", "0");
    create_group(&mut c, "h", "0");

    let mut c1 = server.redis();
    let mut c2 = server.redis3();
    let (mut got1, mut got2) = (Vec::<String>::new(), Vec::<String>::new());
    let read = |con: &mut redis::Connection, consumer: &str, count: usize| -> Vec<String> {
        let opts = StreamReadOptions::default()
            .group("g", consumer)
            .count(count);
        typed_read(con, ">", &opts)
            .map(|r| {
                assert_eq!(r.keys.len(), 1);
                assert_eq!(r.keys[0].key, EVENTS);
                read_ids(&r)
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
    let reply = typed_read(&mut c3, ">", &opts).expect("entries");
    assert_eq!(read_ids(&reply), all);
    assert_eq!(pending_count(&mut c, "g"), 7);
    assert_eq!(pending_count(&mut c, "h"), 7);
}

#[test]
fn xpending_reports_pending_entries_by_consumer_with_delivery_counts() {
    let (server, mut c, all) = serve_log(&["u0", "u1", "u2"]);
    let id = ids(&all);
    create_group(&mut c, "g", "0");

    // Nothing pending yet.
    for (mut s, resp3) in raw_both(&server) {
        let empty: &[u8] = if resp3 {
            b"*4\r\n:0\r\n_\r\n_\r\n_\r\n"
        } else {
            b"*4\r\n:0\r\n$-1\r\n$-1\r\n*-1\r\n"
        };
        exchange_resp(&mut s, &["XPENDING", EVENTS, "g"], empty);
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
    for (mut s, _) in raw_both(&server) {
        exchange_resp(&mut s, &["XPENDING", EVENTS, "g"], &summary_bytes);
    }

    for (mut con, proto) in redis_both(&server) {
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
    let (server, mut c, all) = serve_log(&["u0", "u1", "u2", "u3"]);
    let id = ids(&all);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "c", &["COUNT", "3"], ">").expect("entries");

    let mut raw = server.raw();
    exchange_resp(&mut raw, &["XACK", EVENTS, "g", &id[0], &id[1]], b":2\r\n");
    // Already acknowledged, never delivered, duplicated in one request.
    exchange_resp(&mut raw, &["XACK", EVENTS, "g", &id[0]], b":0\r\n");
    exchange_resp(&mut raw, &["XACK", EVENTS, "g", &id[3]], b":0\r\n");
    exchange_resp(&mut raw, &["XACK", EVENTS, "nogroup", &id[2]], b":0\r\n");
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
    let (server, mut c, all) = serve_log(&["u0", "u1", "u2"]);
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
    for (mut s, resp3) in raw_both(&server) {
        exchange_resp(
            &mut s,
            &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", EVENTS, &id[2]],
            &read_bytes(EVENTS, &[], resp3),
        );
        exchange_resp(
            &mut s,
            &["XREADGROUP", "GROUP", "g", "c2", "STREAMS", EVENTS, ">"],
            nil_bytes(resp3),
        );
    }
}

#[test]
fn xreadgroup_noack_leaves_nothing_pending() {
    let (server, mut c, all) = serve_log(&["u0", "u1", "u2"]);
    create_group(&mut c, "g", "0");
    let mut c3 = server.redis3();
    let opts = StreamReadOptions::default().group("g", "c").noack();
    let reply = typed_read(&mut c3, ">", &opts).expect("entries");
    assert_eq!(read_ids(&reply), ids(&all));
    assert_eq!(pending_count(&mut c, "g"), 0);
    assert_eq!(pending(&mut c, "g"), []);
    assert_eq!(readgroup(&mut c, "g", "c", &[], "0"), Some(vec![]));
    assert_eq!(readgroup(&mut c, "g", "c", &["NOACK"], ">"), None);
    let info = group_info(&mut c, "g");
    assert_eq!(bulk_text(&info["last-delivered-id"]), all[2].id);
    assert_eq!(int(&info["pending"]), 0);
}

#[test]
fn xinfo_describes_the_stream_its_groups_and_their_consumers() {
    let (server, mut c, _) = serve_log(&["u0", "u1", "u2"]);
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
    for (mut s, resp3) in raw_both(&server) {
        let map = if resp3 { "%6\r\n" } else { "*12\r\n" };
        let mut expected = b"*2\r\n".to_vec();
        for body in [&g, &h] {
            expected.extend_from_slice(map.as_bytes());
            expected.extend_from_slice(body);
        }
        exchange_resp(&mut s, &["XINFO", "GROUPS", EVENTS], &expected);
    }

    // name, consumers, pending, last-delivered-id, entries-read, lag
    type GroupRow = (String, usize, usize, String, Option<usize>, Option<usize>);
    for (mut con, proto) in redis_both(&server) {
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

        let got = consumers(&mut con, "g");
        assert_eq!(got, [("c1".into(), 2), ("c2".into(), 0)], "{proto}");
        let raw_consumers = call(&mut con, &["XINFO", "CONSUMERS", EVENTS, "g"]);
        for one in items(&raw_consumers) {
            let fields: Vec<String> = named_pairs(one).into_iter().map(|(k, _)| k).collect();
            assert_eq!(&fields[..3], ["name", "pending", "idle"], "{proto}");
            let map: BTreeMap<String, Value> = named_pairs(one).into_iter().collect();
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
        let map: BTreeMap<String, Value> =
            named_pairs(&call(&mut con, &["XINFO", "STREAM", EVENTS]))
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
    let (server, mut c, all) = serve_log(&["u0", "u1", "u2"]);
    let id = ids(&all);
    create_group(&mut c, "g", "0");
    readgroup(&mut c, "g", "c1", &["COUNT", "2"], ">").expect("entries");
    readgroup(&mut c, "g", "c2", &[], ">").expect("entries");

    let mut raw = server.raw();
    exchange_resp(
        &mut raw,
        &["XGROUP", "DELCONSUMER", EVENTS, "g", "c1"],
        b":2\r\n",
    );
    exchange_resp(
        &mut raw,
        &["XGROUP", "DELCONSUMER", EVENTS, "g", "nobody"],
        b":0\r\n",
    );
    assert_eq!(pending(&mut c, "g"), [(id[2].clone(), "c2".to_string(), 1)]);
    let names: Vec<String> = consumers(&mut c, "g").into_iter().map(|(n, _)| n).collect();
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
    let (server, mut c, all) = serve_log(&["a", "b"]);
    create_group(&mut c, "g", "0");
    create_group(&mut c, "keep", "0");
    readgroup(&mut c, "g", "c", &[], ">").expect("entries");
    readgroup(&mut c, "keep", "c", &["COUNT", "1"], ">").expect("entries");

    let mut raw = server.raw();
    exchange_resp(&mut raw, &["XGROUP", "DESTROY", EVENTS, "g"], b":1\r\n");
    exchange_resp(&mut raw, &["XGROUP", "DESTROY", EVENTS, "g"], b":0\r\n");
    assert_error_reply(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, ">"],
        "NOGROUP No such key 'events' or consumer group 'g' in XREADGROUP with GROUP option",
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
    let (_server, mut c, all) = serve_log(&["u0", "u1", "u2"]);
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
    assert_error_reply(
        &mut c,
        &["XGROUP", "SETID", EVENTS, "nope", "0"],
        "NOGROUP No such consumer group 'nope' for key name 'events'",
    );
}

#[test]
fn xreadgroup_pending_survives_restart() {
    let (server, mut c, all) = serve_log(&["u0", "u1", "u2", "u3"]);
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
    let before_groups = xinfo_groups(&mut c);
    drop(c);
    let server = server.restart();
    let mut c = server.redis();
    assert_eq!(pending(&mut c, "g"), before_pending);
    assert_eq!(xinfo_groups(&mut c), before_groups);
    let got = consumers(&mut c, "g");
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
