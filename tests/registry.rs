//! The registry commands — REGISTER, UNREGISTER, LOOKUP, USERS, USERCOUNT — seen by
//! real clients: the `redis` crate in RESP2 and RESP3, and raw sockets where the
//! exact bytes matter.
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::reply::{bulk, call_cmd, error_text, pairs, register, register_cmd, text, unregister};
use common::{
    TestServer, days_from_civil, exchange, fields, in_both_protocols, multibulk, now_ms, raw3,
};
use redis::Value;

fn usercount(con: &mut redis::Connection) -> i64 {
    match call_cmd(con, &redis::cmd("USERCOUNT")) {
        Value::Int(n) => n,
        other => panic!("USERCOUNT: expected an integer, got {other:?}"),
    }
}

fn lookup(con: &mut redis::Connection, name: &str) -> Value {
    call_cmd(con, redis::cmd("LOOKUP").arg(name))
}

/// A user as LOOKUP describes it, whatever the protocol spelled it as.
#[derive(Debug, PartialEq)]
struct User {
    id: i64,
    name: String,
    created_at: String,
    fields: BTreeMap<String, String>,
}

/// Checks the exact shape of a LOOKUP reply and decodes it.
fn user(v: &Value, resp3: bool) -> User {
    let top: BTreeMap<String, Value> = pairs(v, resp3)
        .into_iter()
        .map(|(k, v)| (text(&k), v))
        .collect();
    let keys: Vec<&str> = top.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["created_at", "fields", "id", "name"],
        "keys of {v:?}"
    );
    let id = match &top["id"] {
        Value::Int(id) => *id,
        other => panic!("id should be an integer, got {other:?}"),
    };
    let fields: BTreeMap<String, String> = pairs(&top["fields"], resp3)
        .into_iter()
        .map(|(k, v)| (text(&k), text(&v)))
        .collect();
    assert_eq!(
        fields.len(),
        pairs(&top["fields"], resp3).len(),
        "duplicate field names in {v:?}"
    );
    User {
        id,
        name: text(&top["name"]),
        created_at: text(&top["created_at"]),
        fields,
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS.mmmZ` (RFC 3339, UTC, milliseconds) to Unix ms.
fn parse_rfc3339_utc_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24 {
        return None;
    }
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ];
    for (i, c) in b.iter().enumerate() {
        match seps.iter().find(|(at, _)| *at == i) {
            Some((_, sep)) if c != sep => return None,
            None if !c.is_ascii_digit() => return None,
            _ => {}
        }
    }
    let num = |from: usize, to: usize| s[from..to].parse::<i64>().ok();
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// One USERS call: (next cursor, names).
fn users_page(con: &mut redis::Connection, args: &[&str]) -> (String, Vec<String>) {
    let mut c = redis::cmd("USERS");
    for a in args {
        c.arg(*a);
    }
    match call_cmd(con, &c) {
        Value::Array(items) if items.len() == 2 => {
            let cursor = match &items[0] {
                Value::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8 cursor"),
                other => panic!("cursor should be a bulk string, got {other:?}"),
            };
            let names = match &items[1] {
                Value::Array(names) => names.iter().map(text).collect(),
                other => panic!("names should be an array, got {other:?}"),
            };
            (cursor, names)
        }
        other => panic!("USERS {args:?}: expected [cursor, [names]], got {other:?}"),
    }
}

/// Iterates USERS from cursor 0 until the cursor is 0 again; `opts` go after the
/// cursor. Returns every name in the order returned.
fn users_all(con: &mut redis::Connection, opts: &[&str]) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let mut args = vec![cursor.as_str()];
        args.extend_from_slice(opts);
        let (next, names) = users_page(con, &args);
        all.extend(names);
        if next == "0" {
            return all;
        }
        cursor = next;
    }
    panic!("USERS iteration never returned cursor 0");
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Asserts that `names` has no duplicate and returns it sorted.
fn distinct_sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    let before = names.len();
    let mut deduped = names.clone();
    deduped.dedup();
    assert_eq!(deduped.len(), before, "duplicates in {names:?}");
    names
}

// ---------------------------------------------------------------- REGISTER ids

#[test]
fn register_returns_ids_from_one_increasing() {
    let (server, mut c2) = TestServer::start_redis();
    let mut c3 = server.redis3();
    let mut ids = vec![register(&mut c2, "alice", &[])];
    ids.push(register(&mut c3, "bob", &[]));
    ids.push(register(&mut c2, "carol", &[("k", "v")]));
    ids.push(register(&mut c3, "dave", &[]));
    assert_eq!(ids[0], 1, "ids start at 1: {ids:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing: {ids:?}");
    server.stop();
}

#[test]
fn register_replies_integer_bytes_on_raw_socket() {
    let (server, mut s) = TestServer::start_raw();
    exchange(
        &mut s,
        b"*4\r\n$8\r\nREGISTER\r\n$5\r\nalice\r\n$5\r\nemail\r\n$7\r\na@b.com\r\n",
        b":1\r\n",
    );
    // The same name again, inline as nc sends it.
    exchange(&mut s, b"REGISTER alice\r\n", b":0\r\n");
    exchange(&mut s, b"USERCOUNT\r\n", b":1\r\n");
    exchange(&mut s, b"UNREGISTER alice\r\n", b":1\r\n");
    exchange(&mut s, b"UNREGISTER alice\r\n", b":0\r\n");
    exchange(&mut s, b"USERCOUNT\r\n", b":0\r\n");
    server.stop();
}

#[test]
fn register_taken_name_replies_zero() {
    let (server, mut c) = TestServer::start_redis();
    let id = register(&mut c, "alice", &[("city", "Paris")]);
    let before = user(&lookup(&mut c, "alice"), false);
    // Not an error reply, and the first registration is left as it was.
    assert_eq!(
        call_cmd(&mut c, &register_cmd("alice", &[("city", "Rome")])),
        Value::Int(0)
    );
    let mut c3 = server.redis3();
    assert_eq!(
        call_cmd(&mut c3, &register_cmd("alice", &[])),
        Value::Int(0)
    );
    let after = user(&lookup(&mut c, "alice"), false);
    assert_eq!(after, before);
    assert_eq!(after.id, id);
    assert_eq!(after.fields, fields(&[("city", "Paris")]));
    assert_eq!(usercount(&mut c), 1);
    server.stop();
}

#[test]
fn register_taken_name_does_not_consume_an_id() {
    let (server, mut c) = TestServer::start_redis();
    let first = register(&mut c, "alice", &[]);
    assert_eq!(register(&mut c, "alice", &[]), 0);
    assert_eq!(register(&mut c, "alice", &[]), 0);
    let second = register(&mut c, "bob", &[]);
    // A no-op (like SETNX on an existing key) leaves no trace, in the id sequence
    // included.
    assert_eq!(second, first + 1);
    server.stop();
}

#[test]
fn reregistered_name_gets_a_new_id() {
    let (server, mut c) = TestServer::start_redis();
    let old = register(&mut c, "alice", &[("plan", "free")]);
    let other = register(&mut c, "bob", &[]);
    assert_eq!(unregister(&mut c, "alice"), 1);
    assert_eq!(lookup(&mut c, "alice"), Value::Nil);
    let new = register(&mut c, "alice", &[("plan", "pro")]);
    assert!(
        new > old && new > other,
        "ids are never reused: {old}, {other}, then {new}"
    );
    let u = user(&lookup(&mut c, "alice"), false);
    assert_eq!(u.id, new);
    assert_eq!(u.fields, fields(&[("plan", "pro")]), "old fields are gone");
    server.stop();
}

#[test]
fn unregister_replies_one_then_zero() {
    let (server, mut c) = TestServer::start_redis();
    register(&mut c, "alice", &[]);
    assert_eq!(unregister(&mut c, "alice"), 1);
    assert_eq!(unregister(&mut c, "alice"), 0);
    assert_eq!(unregister(&mut c, "never-seen"), 0);
    let mut c3 = server.redis3();
    assert_eq!(
        call_cmd(&mut c3, redis::cmd("UNREGISTER").arg("alice")),
        Value::Int(0)
    );
    assert_eq!(lookup(&mut c, "alice"), Value::Nil);
    server.stop();
}

#[test]
fn usercount_tracks_registers_and_unregisters() {
    let (server, mut c) = TestServer::start_redis();
    let mut other = server.redis3();
    assert_eq!(usercount(&mut c), 0);
    for name in ["a1", "a2", "a3"] {
        register(&mut c, name, &[]);
    }
    assert_eq!(usercount(&mut c), 3);
    assert_eq!(
        usercount(&mut other),
        3,
        "another connection sees the same count"
    );
    register(&mut other, "a2", &[]);
    assert_eq!(usercount(&mut c), 3, "a taken name adds nobody");
    unregister(&mut other, "a1");
    assert_eq!(usercount(&mut c), 2);
    unregister(&mut c, "nobody");
    assert_eq!(usercount(&mut c), 2, "an unknown name removes nobody");
    register(&mut c, "a1", &[]);
    assert_eq!(usercount(&mut other), 3);
    let _ = call_cmd(&mut c, &register_cmd("", &[]));
    assert_eq!(usercount(&mut c), 3, "a rejected REGISTER adds nobody");
    server.stop();
}

// ---------------------------------------------------------------- LOOKUP

#[test]
fn lookup_resp3_replies_map_with_nested_fields_map() {
    let server = TestServer::start();
    let mut c = server.redis3();
    let id = register(&mut c, "alice", &[("email", "a@b.com"), ("city", "Zürich")]);
    let v = lookup(&mut c, "alice");
    assert!(
        matches!(&v, Value::Map(p) if p.len() == 4),
        "a 4-entry map: {v:?}"
    );
    let u = user(&v, true);
    assert_eq!(u.id, id);
    assert_eq!(u.name, "alice");
    assert_eq!(
        u.fields,
        fields(&[("email", "a@b.com"), ("city", "Zürich")])
    );
    let Value::Map(p) = &v else { unreachable!() };
    let nested = p.iter().find(|(k, _)| *k == bulk("fields")).map(|(_, v)| v);
    assert!(
        matches!(nested, Some(Value::Map(f)) if f.len() == 2),
        "fields is a nested map: {v:?}"
    );
    server.stop();
}

#[test]
fn lookup_resp2_replies_flat_array_with_nested_fields_array() {
    let (server, mut c) = TestServer::start_redis();
    let id = register(&mut c, "bob", &[("email", "b@c.org"), ("tier", "gold")]);
    let v = lookup(&mut c, "bob");
    let Value::Array(items) = &v else {
        panic!("a flat array in RESP2: {v:?}")
    };
    assert_eq!(items.len(), 8, "four key/value pairs: {v:?}");
    let nested = items
        .chunks(2)
        .find(|kv| kv[0] == bulk("fields"))
        .map(|kv| &kv[1]);
    assert!(
        matches!(nested, Some(Value::Array(f)) if f.len() == 4),
        "fields is a nested flat array: {v:?}"
    );
    let u = user(&v, false);
    assert_eq!(u.id, id);
    assert_eq!(u.name, "bob");
    assert_eq!(u.fields, fields(&[("email", "b@c.org"), ("tier", "gold")]));
    server.stop();
}

#[test]
fn lookup_without_fields_replies_empty_fields() {
    let (server, mut c2) = TestServer::start_redis();
    let mut c3 = server.redis3();
    register(&mut c2, "carol", &[]);
    assert_eq!(user(&lookup(&mut c2, "carol"), false).fields, fields(&[]));
    assert_eq!(user(&lookup(&mut c3, "carol"), true).fields, fields(&[]));
    server.stop();
}

#[test]
fn lookup_unknown_name_replies_nil() {
    let (server, mut c2) = TestServer::start_redis();
    let mut c3 = server.redis3();
    assert_eq!(lookup(&mut c2, "ghost"), Value::Nil);
    assert_eq!(lookup(&mut c3, "ghost"), Value::Nil);
    // A name no one could register is unknown too, not an error.
    assert_eq!(lookup(&mut c2, "has space"), Value::Nil);
    // After HELLO 3 the null is RESP3's `_`.
    let mut s = raw3(&server);
    exchange(&mut s, b"LOOKUP ghost\r\n", b"_\r\n");
    server.stop();
}

#[test]
fn register_duplicate_field_keeps_last_value() {
    let (server, mut c) = TestServer::start_redis();
    register(
        &mut c,
        "alice",
        &[("color", "red"), ("size", "m"), ("color", "blue")],
    );
    let u = user(&lookup(&mut c, "alice"), false);
    assert_eq!(u.fields, fields(&[("color", "blue"), ("size", "m")]));
    server.stop();
}

#[test]
fn lookup_created_at_is_rfc3339_utc_near_now() {
    let server = TestServer::start();
    let mut c = server.redis3();
    let before = now_ms();
    register(&mut c, "alice", &[]);
    let after = now_ms();
    let u = user(&lookup(&mut c, "alice"), true);
    let at = parse_rfc3339_utc_ms(&u.created_at)
        .unwrap_or_else(|| panic!("not YYYY-MM-DDTHH:MM:SS.mmmZ: {:?}", u.created_at));
    // Same clock as the server; the slack only absorbs a clock step.
    assert!(
        before - 1000 <= at && at <= after + 1000,
        "created_at {} is not between {before} and {after} (ms)",
        u.created_at
    );
    // RESP2 shows the same instant.
    let mut c2 = server.redis();
    assert_eq!(
        user(&lookup(&mut c2, "alice"), false).created_at,
        u.created_at
    );
    server.stop();
}

#[test]
fn rfc3339_test_parser_agrees_with_known_instants() {
    assert_eq!(parse_rfc3339_utc_ms("1970-01-01T00:00:00.000Z"), Some(0));
    assert_eq!(
        parse_rfc3339_utc_ms("2026-11-30T08:02:05.123Z"),
        Some(1_796_025_725_123)
    );
    assert_eq!(parse_rfc3339_utc_ms("2026-11-30T08:02:05Z"), None);
    assert_eq!(parse_rfc3339_utc_ms("2026-11-30 08:02:05.123Z"), None);
    assert_eq!(parse_rfc3339_utc_ms("2026-11-30T08:02:05.123+01"), None);
}

// ---------------------------------------------------------------- validation

/// Sends `cmd`, asserts the exact error, then that the connection still works and
/// nothing was stored.
fn assert_rejected(con: &mut redis::Connection, cmd: &redis::Cmd, expected: &str) {
    let v = call_cmd(con, cmd);
    assert_eq!(
        error_text(&v),
        expected,
        "reply to {:?}",
        String::from_utf8_lossy(&cmd.get_packed_command())
    );
    assert_eq!(
        call_cmd(con, redis::cmd("PING").arg("still-here")),
        bulk("still-here"),
        "the connection continues after {expected:?}"
    );
}

#[test]
fn register_invalid_names_reply_errors_naming_the_rule() {
    let (server, mut c) = TestServer::start_redis();
    let length = "ERR invalid name: must be 1 to 64 bytes";
    let chars = "ERR invalid name: must not contain whitespace or control characters";
    let long = "a".repeat(65);
    let wide = "é".repeat(33); // 66 bytes, 33 characters
    for (name, expected) in [
        ("", length),
        (long.as_str(), length),
        (wide.as_str(), length),
        ("has space", chars),
        ("tab\there", chars),
        ("new\nline", chars),
        ("bell\u{7}", chars),
        ("del\u{7f}", chars),
        ("nbsp\u{a0}x", chars),
    ] {
        assert_rejected(&mut c, &register_cmd(name, &[]), expected);
    }
    assert_eq!(usercount(&mut c), 0);
    // The limits themselves are fine: 64 bytes, and 32 two-byte characters.
    assert!(register(&mut c, &"a".repeat(64), &[]) > 0);
    assert!(register(&mut c, &"é".repeat(32), &[]) > 0);
    assert!(register(&mut c, "zoë-ünïcode_ok.1", &[]) > 0);
    assert_eq!(usercount(&mut c), 3);
    server.stop();
}

#[test]
fn register_invalid_utf8_name_replies_error_and_connection_continues() {
    let (server, mut s) = TestServer::start_raw();
    let bad_name = multibulk(&[b"REGISTER", b"a\xffb"]);
    exchange(
        &mut s,
        &bad_name,
        b"-ERR invalid name: must be valid UTF-8\r\n",
    );
    exchange(&mut s, b"*1\r\n$9\r\nUSERCOUNT\r\n", b":0\r\n");
    exchange(&mut s, b"REGISTER ok\r\n", b":1\r\n");
    server.stop();
}

#[test]
fn register_invalid_utf8_field_value_replies_error() {
    let (server, mut s) = TestServer::start_raw();
    let bad_value = multibulk(&[b"REGISTER", b"alice", b"bio_", b"\xc3\x28"]);
    let error = b"-ERR invalid field value for 'bio_': must be valid UTF-8\r\n";
    exchange(&mut s, &bad_value, error);
    exchange(&mut s, b"USERCOUNT\r\n", b":0\r\n");
    exchange(&mut s, b"REGISTER alice bio_ fine\r\n", b":1\r\n");
    server.stop();
}

#[test]
fn register_odd_field_args_replies_wrong_number_of_arguments() {
    let (server, mut c) = TestServer::start_redis();
    let expected = "ERR wrong number of arguments for 'register' command";
    assert_rejected(
        &mut c,
        redis::cmd("REGISTER").arg("alice").arg("k"),
        expected,
    );
    assert_rejected(
        &mut c,
        redis::cmd("REGISTER")
            .arg("alice")
            .arg("k")
            .arg("v")
            .arg("k2"),
        expected,
    );
    assert_rejected(&mut c, &redis::cmd("REGISTER"), expected);
    assert_eq!(lookup(&mut c, "alice"), Value::Nil);
    server.stop();
}

#[test]
fn register_33_fields_replies_too_many_fields() {
    let (server, mut c) = TestServer::start_redis();
    let keys: Vec<String> = (0..33).map(|i| format!("f{i}")).collect();
    let kv: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    assert_rejected(
        &mut c,
        &register_cmd("alice", &kv),
        "ERR too many fields: at most 32",
    );
    assert_eq!(lookup(&mut c, "alice"), Value::Nil);
    let id = register(&mut c, "alice", &kv[..32]);
    assert!(id > 0);
    assert_eq!(user(&lookup(&mut c, "alice"), false).fields.len(), 32);
    server.stop();
}

#[test]
fn register_field_value_over_4096_bytes_replies_error() {
    let (server, mut c) = TestServer::start_redis();
    let big = "x".repeat(4097);
    assert_rejected(
        &mut c,
        &register_cmd("alice", &[("bio", &big)]),
        "ERR invalid field value for 'bio': at most 4096 bytes",
    );
    assert_eq!(usercount(&mut c), 0);
    let max = "y".repeat(4096);
    assert!(register(&mut c, "alice", &[("bio", &max), ("empty", "")]) > 0);
    let u = user(&lookup(&mut c, "alice"), false);
    assert_eq!(u.fields, fields(&[("bio", &max), ("empty", "")]));
    server.stop();
}

#[test]
fn register_bad_field_name_replies_error() {
    let (server, mut c) = TestServer::start_redis();
    let long = "k".repeat(65);
    for (key, expected) in [
        ("", "ERR invalid field name: must be 1 to 64 bytes"),
        (
            long.as_str(),
            "ERR invalid field name: must be 1 to 64 bytes",
        ),
        (
            "two words",
            "ERR invalid field name: must not contain whitespace or control characters",
        ),
        (
            "ctl\u{1}",
            "ERR invalid field name: must not contain whitespace or control characters",
        ),
    ] {
        assert_rejected(
            &mut c,
            &register_cmd("alice", &[("ok", "1"), (key, "v")]),
            expected,
        );
    }
    assert_eq!(usercount(&mut c), 0);
    server.stop();
}

#[test]
fn registry_commands_check_arity() {
    let (server, mut c) = TestServer::start_redis();
    for (cmd, name) in [
        (redis::cmd("LOOKUP"), "lookup"),
        (redis::cmd("LOOKUP").arg("a").arg("b").clone(), "lookup"),
        (redis::cmd("UNREGISTER"), "unregister"),
        (
            redis::cmd("UNREGISTER").arg("a").arg("b").clone(),
            "unregister",
        ),
        (redis::cmd("USERCOUNT").arg("x").clone(), "usercount"),
    ] {
        assert_rejected(
            &mut c,
            &cmd,
            &format!("ERR wrong number of arguments for '{name}' command"),
        );
    }
    server.stop();
}

// ---------------------------------------------------------------- USERS

#[test]
fn users_on_empty_registry_replies_cursor_zero_and_no_names() {
    let (server, mut c) = TestServer::start_redis();
    assert_eq!(users_page(&mut c, &["0"]), ("0".to_string(), vec![]));
    server.stop();
}

#[test]
fn users_iteration_returns_every_name_exactly_once() {
    let (server, mut c) = TestServer::start_redis();
    let names: Vec<String> = (0..37).map(|i| format!("user-{i:02}")).collect();
    for n in &names {
        register(&mut c, n, &[]);
    }
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(distinct_sorted(users_all(&mut c, &[])), expected);
    // RESP3 gives the same page shape (an array, not a map).
    let mut c3 = server.redis3();
    assert_eq!(distinct_sorted(users_all(&mut c3, &[])), expected);
    server.stop();
}

#[test]
fn users_count_limits_each_page() {
    let (server, mut c) = TestServer::start_redis();
    let names: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    for n in &names {
        register(&mut c, n, &[]);
    }
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut calls = 0;
    loop {
        let (next, page) = users_page(&mut c, &[&cursor, "COUNT", "3"]);
        calls += 1;
        assert!(page.len() <= 3, "COUNT 3 page has {page:?}");
        seen.extend(page);
        if next == "0" {
            break;
        }
        assert!(calls < 100, "iteration does not end");
        cursor = next;
    }
    assert!(
        calls >= 7,
        "20 names in pages of at most 3 need 7 calls, took {calls}"
    );
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(distinct_sorted(seen), expected);
    // A COUNT above the total examines everything in one call.
    let (next, page) = users_page(&mut c, &["0", "COUNT", "1000"]);
    assert_eq!(next, "0");
    assert_eq!(distinct_sorted(page), expected);
    // Options are case-insensitive and may come in either order.
    let (_, page) = users_page(&mut c, &["0", "match", "n1*", "count", "1000"]);
    assert_eq!(
        distinct_sorted(page),
        sorted(&[
            "n1", "n10", "n11", "n12", "n13", "n14", "n15", "n16", "n17", "n18", "n19"
        ])
    );
    server.stop();
}

#[test]
fn users_match_filters_with_glob() {
    let (server, mut c) = TestServer::start_redis();
    let names = [
        "alice", "adam", "abe", "bob", "rob", "bab", "carol", "zed", "xob", "obi",
    ];
    for n in names {
        register(&mut c, n, &[]);
    }
    for (pattern, want) in [
        ("a*", vec!["alice", "adam", "abe"]),
        ("?ob", vec!["bob", "rob", "xob"]),
        ("[ab]*", vec!["alice", "adam", "abe", "bob", "bab"]),
        ("*", names.to_vec()),
        ("nomatch*", vec![]),
    ] {
        for count in ["2", "100"] {
            let got = users_all(&mut c, &["MATCH", pattern, "COUNT", count]);
            assert_eq!(
                distinct_sorted(got),
                sorted(&want),
                "MATCH {pattern} COUNT {count}"
            );
        }
    }
    server.stop();
}

#[test]
fn users_invalid_cursor_replies_error() {
    let (server, mut c) = TestServer::start_redis();
    register(&mut c, "alice", &[]);
    for cursor in ["abc", "-1", "1.5", ""] {
        assert_rejected(
            &mut c,
            redis::cmd("USERS").arg(cursor),
            "ERR invalid cursor",
        );
    }
    server.stop();
}

#[test]
fn users_bad_count_replies_errors() {
    let (server, mut c) = TestServer::start_redis();
    register(&mut c, "alice", &[]);
    let users = |args: &[&str]| {
        let mut cmd = redis::cmd("USERS");
        for a in args {
            cmd.arg(*a);
        }
        cmd
    };
    assert_rejected(&mut c, &users(&["0", "COUNT", "0"]), "ERR syntax error");
    assert_rejected(&mut c, &users(&["0", "COUNT", "-5"]), "ERR syntax error");
    assert_rejected(
        &mut c,
        &users(&["0", "COUNT", "ten"]),
        "ERR value is not an integer or out of range",
    );
    assert_rejected(&mut c, &users(&["0", "COUNT"]), "ERR syntax error");
    assert_rejected(&mut c, &users(&["0", "LIMIT", "5"]), "ERR syntax error");
    server.stop();
}

#[test]
fn users_iteration_is_stable_under_concurrent_changes() {
    let server = TestServer::start();
    let mut reader = server.redis3();
    let mut writer = server.redis();
    // Stable and churning users interleave in registration order, so every page
    // holds some of each.
    let mut stable = Vec::new();
    let mut churn = Vec::new();
    for i in 0..40 {
        let s = format!("stable-{i:02}");
        register(&mut writer, &s, &[]);
        stable.push(s);
        if i % 2 == 0 {
            let c = format!("churn-{i:02}");
            register(&mut writer, &c, &[]);
            churn.push(c);
        }
    }
    let mut ever: BTreeSet<String> = stable.iter().chain(&churn).cloned().collect();
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut page_no = 0;
    loop {
        let (next, page) = users_page(&mut reader, &[&cursor, "COUNT", "7"]);
        seen.extend(page);
        if next == "0" {
            break;
        }
        cursor = next;
        // Between pages another connection removes one churning user, re-registers
        // the one removed before it (a new id), and adds a new user.
        let gone = &churn[page_no % churn.len()];
        assert_eq!(unregister(&mut writer, gone), 1);
        if page_no > 0 {
            let back = &churn[(page_no - 1) % churn.len()];
            assert!(register(&mut writer, back, &[]) > 0);
        }
        let fresh = format!("fresh-{page_no}");
        assert!(register(&mut writer, &fresh, &[]) > 0);
        ever.insert(fresh);
        page_no += 1;
        assert!(page_no < 200, "iteration does not end");
    }
    assert!(
        page_no >= 5,
        "the iteration spanned several pages: {page_no}"
    );
    for s in &stable {
        let n = seen.iter().filter(|x| *x == s).count();
        assert_eq!(n, 1, "{s} was present throughout and returned {n} times");
    }
    for name in &seen {
        assert!(ever.contains(name), "{name} was never registered");
    }
    server.stop();
}

// ---------------------------------------------------------------- pipelines

#[test]
fn pipelined_read_sees_earlier_write() {
    in_both_protocols(|_, mut c, resp3| {
        let name = if resp3 { "x3" } else { "x2" };
        let before = usercount(&mut c);
        let replies: Vec<Value> = redis::pipe()
            .cmd("REGISTER")
            .arg(name)
            .arg("k")
            .arg("v")
            .cmd("LOOKUP")
            .arg(name)
            .cmd("USERCOUNT")
            .query(&mut c)
            .expect("pipeline replies");
        assert_eq!(replies.len(), 3);
        let Value::Int(id) = replies[0] else {
            panic!("REGISTER reply: {:?}", replies[0])
        };
        assert!(id > 0);
        let u = user(&replies[1], resp3);
        assert_eq!(u.id, id);
        assert_eq!(u.name, name);
        assert_eq!(u.fields, fields(&[("k", "v")]));
        assert_eq!(replies[2], Value::Int(before + 1));

        let replies: Vec<Value> = redis::pipe()
            .cmd("UNREGISTER")
            .arg(name)
            .cmd("LOOKUP")
            .arg(name)
            .cmd("USERCOUNT")
            .cmd("REGISTER")
            .arg(name)
            .cmd("LOOKUP")
            .arg(name)
            .query(&mut c)
            .expect("pipeline replies");
        assert_eq!(replies[0], Value::Int(1));
        assert_eq!(replies[1], Value::Nil);
        assert_eq!(replies[2], Value::Int(before));
        let Value::Int(new_id) = replies[3] else {
            panic!("REGISTER reply: {:?}", replies[3])
        };
        assert!(new_id > id);
        assert_eq!(user(&replies[4], resp3).id, new_id);
    });
}

#[test]
fn pipelined_raw_requests_in_one_packet_see_each_other() {
    let (server, mut s) = TestServer::start_raw();
    exchange(
        &mut s,
        b"REGISTER p\r\n*2\r\n$8\r\nREGISTER\r\n$1\r\np\r\nUNREGISTER p\r\nUNREGISTER p\r\nUSERCOUNT\r\n",
        b":1\r\n:0\r\n:1\r\n:0\r\n:0\r\n",
    );
    server.stop();
}
