//! What the stream commands refuse, with Redis's error texts: ids that do not
//! parse, keys other than `events` and `events.dead`, writes to the stream (XADD,
//! XDEL, XTRIM, XSETID), consumer groups that do not exist, and `$` in XREADGROUP.
//! A refused request creates and changes nothing.
mod common;

use common::reply::{assert_error_reply, call, error_text};
use common::stream::{
    DEAD, EVENTS, INVALID_ID, REFUSED, all_events, create_group, ids, items, pending,
    serve_delivered, serve_log, xinfo_groups, xlen,
};
use common::{exchange, exchange_resp, raw3, resp, words};
use redis::{Commands, RedisResult, Value};

#[test]
fn malformed_stream_ids_get_redis_invalid_id_error() {
    let (server, mut c, all) = serve_delivered(&["alice"], "c");
    let id = all[0].id.clone();

    let bad: &[&[&str]] = &[
        &["XRANGE", EVENTS, "abc", "+"],
        &["XRANGE", EVENTS, "-", "1-x"],
        &["XRANGE", EVENTS, "1-", "+"],
        &["XRANGE", EVENTS, "-1", "+"],
        &["XRANGE", EVENTS, "(", "+"],
        &["XRANGE", EVENTS, "1-2-3", "+"],
        &["XREVRANGE", EVENTS, "+", "abc"],
        &["XREAD", "STREAMS", EVENTS, "abc"],
        &["XREAD", "BLOCK", "10", "STREAMS", EVENTS, "1-x"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, "abc"],
        &["XACK", EVENTS, "g", "abc"],
        &["XACK", EVENTS, "g", &id, "abc"],
        &["XGROUP", "CREATE", EVENTS, "g2", "abc"],
        &["XGROUP", "SETID", EVENTS, "g", "abc"],
        &["XPENDING", EVENTS, "g", "abc", "+", "10"],
        &["XAUTOCLAIM", EVENTS, "g", "c", "0", "abc"],
    ];
    for mut con in [server.redis(), server.redis3()] {
        for args in bad {
            assert_eq!(error_text(&call(&mut con, args)), INVALID_ID, "{args:?}");
        }
    }
    let mut raw = server.raw();
    exchange_resp(
        &mut raw,
        &["XRANGE", EVENTS, "abc", "+"],
        format!("-{INVALID_ID}\r\n").as_bytes(),
    );
    // The XACK with one bad id acknowledged nothing, and no group was created.
    assert_eq!(pending(&mut c, "g"), [(id, "c".to_string(), 1)]);
    assert_eq!(items(&xinfo_groups(&mut c)).len(), 1);
}

#[test]
fn stream_keys_other_than_events_get_a_clear_error() {
    let (_server, mut c, _) = serve_log(&["alice"]);
    for key in ["users", "events2", "EVENTS"] {
        let requests: &[&[&str]] = &[
            &["XLEN", key],
            &["XRANGE", key, "-", "+"],
            &["XREVRANGE", key, "+", "-"],
            &["XREAD", "STREAMS", key, "0"],
            &["XREAD", "BLOCK", "10", "STREAMS", key, "$"],
            &["XGROUP", "CREATE", key, "g", "0"],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", key, ">"],
            &["XINFO", "STREAM", key],
            &["XPENDING", key, "g"],
        ];
        for args in requests {
            let err = error_text(&call(&mut c, args));
            assert!(
                err.starts_with("ERR ")
                    && err.contains(&format!("'{key}'"))
                    && err.contains(EVENTS),
                "{args:?} replied {err:?}: the error should name the key and the stream that exists"
            );
        }
    }
    // Consumer groups read `events`, not the dead letters.
    let err = error_text(&call(&mut c, &["XGROUP", "CREATE", DEAD, "g", "0"]));
    assert!(err.starts_with("ERR ") && err.contains(EVENTS), "{err}");
    // Nothing was created or changed by the refused requests.
    assert_eq!(xlen(&mut c, EVENTS), 1);
    assert_eq!(xinfo_groups(&mut c), Value::Array(vec![]));
}

#[test]
fn xadd_and_other_stream_writes_are_refused() {
    let (server, mut c, all) = serve_log(&["alice"]);
    let id = all[0].id.clone();
    let mut raw = server.raw();
    let refused = format!("-{REFUSED}\r\n");
    let writes: &[&[&str]] = &[
        &["XADD", EVENTS, "*", "kind", "user.registered"],
        &["XADD", EVENTS, "99-0", "a", "b"],
        &["XADD", "users", "*", "a", "b"],
        &["XDEL", EVENTS, &id],
        &["XTRIM", EVENTS, "MAXLEN", "0"],
        &["XSETID", EVENTS, "99-0"],
    ];
    for args in writes {
        exchange(&mut raw, &resp(args), refused.as_bytes());
    }
    let mut c3 = server.redis3();
    let r: RedisResult<String> = c3.xadd(EVENTS, "*", &[("a", "b")]);
    let err = r.expect_err("XADD is refused");
    assert_eq!(err.code(), Some("ERR"), "{err}");
    assert!(err.to_string().contains(&REFUSED[4..]), "{err}");
    assert_eq!(xlen(&mut c, EVENTS), 1);
    assert_eq!(ids(&all_events(&mut c)), [id]);
}

#[test]
fn commands_on_a_missing_group_get_nogroup_errors() {
    let (server, mut c, all) = serve_log(&["a"]);
    let id = all[0].id.clone();
    let reading =
        "NOGROUP No such key 'events' or consumer group 'nope' in XREADGROUP with GROUP option";
    let plain = "NOGROUP No such key 'events' or consumer group 'nope'";
    let admin = "NOGROUP No such consumer group 'nope' for key name 'events'";
    let cases: &[(&[&str], &str)] = &[
        (
            &["XREADGROUP", "GROUP", "nope", "c", "STREAMS", EVENTS, ">"],
            reading,
        ),
        (
            &["XREADGROUP", "GROUP", "nope", "c", "STREAMS", EVENTS, "0"],
            reading,
        ),
        (
            &words("XREADGROUP GROUP nope c BLOCK 5000 STREAMS events >"),
            reading,
        ),
        (&["XPENDING", EVENTS, "nope"], plain),
        (&["XPENDING", EVENTS, "nope", "-", "+", "10"], plain),
        (&["XCLAIM", EVENTS, "nope", "c", "0", &id], plain),
        (&["XAUTOCLAIM", EVENTS, "nope", "c", "0", "0-0"], plain),
        (&["XINFO", "CONSUMERS", EVENTS, "nope"], admin),
        (&["XGROUP", "CREATECONSUMER", EVENTS, "nope", "c"], admin),
        (&["XGROUP", "DELCONSUMER", EVENTS, "nope", "c"], admin),
    ];
    for (mut s, mut con) in [
        (server.raw(), server.redis()),
        (raw3(&server), server.redis3()),
    ] {
        for (args, err) in cases {
            exchange(&mut s, &resp(args), format!("-{err}\r\n").as_bytes());
            assert_eq!(error_text(&call(&mut con, args)), *err, "{args:?}");
        }
        // As in Redis: acknowledging in or destroying a missing group is a 0.
        exchange_resp(&mut s, &["XACK", EVENTS, "nope", &id], b":0\r\n");
        exchange_resp(&mut s, &["XGROUP", "DESTROY", EVENTS, "nope"], b":0\r\n");
    }
    // None of that created a group.
    assert_eq!(xinfo_groups(&mut c), Value::Array(vec![]));
}

#[test]
fn xreadgroup_with_dollar_gets_the_redis_error() {
    let (_server, mut c, _) = serve_log(&["a"]);
    create_group(&mut c, "g", "0");
    assert_error_reply(
        &mut c,
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, "$"],
        "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the \
         history of this consumer by specifying a proper ID, or use the > ID to get new \
         messages. The $ ID would just return an empty result set.",
    );
}
