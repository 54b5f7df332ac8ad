//! `--unique-field`: REGISTER, UPDATE, POST and PATCH refuse a value another user
//! holds, two registrations racing in one tick for one value end with one
//! winner, LOOKUPBY and `GET /users?<field>=<value>` find the holder, the index
//! stays right across updates, removals and restarts, and a database that already
//! holds a value twice is refused at start.

mod common;

use std::io::Write;

use common::{TestServer, exchange_resp, read_n, resp, temp_db, userbus_command};
use serde_json::{Value, json};
use userbus::{Config, Server};

fn email(cfg: &mut Config) {
    cfg.unique_fields = vec!["email".to_string()];
}

fn query<T: redis::FromRedisValue>(c: &mut redis::Connection, args: &[&str]) -> T {
    common::reply::cmd(args)
        .query(c)
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// LOOKUPBY's reply: the holder's name, or None for nil.
fn holder(c: &mut redis::Connection, field: &str, value: &str) -> Option<String> {
    let v: redis::Value = query(c, &["LOOKUPBY", field, value]);
    match v {
        redis::Value::Nil => None,
        redis::Value::Array(items) => match &items[3] {
            redis::Value::BulkString(b) => Some(String::from_utf8(b.clone()).expect("UTF-8")),
            other => panic!("name {other:?}"),
        },
        other => panic!("LOOKUPBY replied {other:?}"),
    }
}

#[test]
fn a_taken_value_is_refused_with_one_clear_error() {
    let server = TestServer::start_with(email, |b| b);
    let mut s = server.raw();
    exchange_resp(&mut s, &["REGISTER", "bob", "email", "b@x"], b":1\r\n");
    let taken = b"-ERR field 'email' value already taken by user 'bob'\r\n";
    exchange_resp(&mut s, &["REGISTER", "ann", "email", "b@x"], taken);
    // Exact bytes: another case is another value.
    exchange_resp(&mut s, &["REGISTER", "ann", "email", "B@x"], b":2\r\n");
    exchange_resp(&mut s, &["UPDATE", "ann", "email", "b@x"], taken);
    exchange_resp(
        &mut s,
        &["UPDATE", "ann", "plan", "pro", "email", "b@x"],
        taken,
    );
    // A taken name stays :0 whatever its fields.
    exchange_resp(&mut s, &["REGISTER", "bob", "email", "B@x"], b":0\r\n");
    // Her own value is hers to keep; other fields are not unique.
    exchange_resp(
        &mut s,
        &["UPDATE", "ann", "email", "B@x", "plan", "pro"],
        b":1\r\n",
    );
    exchange_resp(&mut s, &["REGISTER", "cy", "plan", "pro"], b":3\r\n");
    exchange_resp(
        &mut s,
        &["LOOKUPBY", "plan", "pro"],
        b"-ERR field 'plan' is not a unique field (see --unique-field)\r\n",
    );
    exchange_resp(
        &mut s,
        &["LOOKUPBY", "email"],
        b"-ERR wrong number of arguments for 'lookupby' command\r\n",
    );
    let mut c = server.redis();
    let config: Vec<String> = query(&mut c, &["CONFIG", "GET", "unique-field"]);
    assert_eq!(config, ["unique-field", "email"]);
    assert_eq!(holder(&mut c, "email", "b@x").as_deref(), Some("bob"));
    assert_eq!(holder(&mut c, "email", "B@x").as_deref(), Some("ann"));
    assert_eq!(holder(&mut c, "email", "nobody@x"), None);
    // The refusals wrote nothing.
    assert_eq!(query::<i64>(&mut c, &["XLEN", "events"]), 4);
    server.stop();
}

#[test]
fn lookupby_replies_as_lookup_in_both_protocols() {
    let server = TestServer::start_with(email, |b| b);
    let mut c = server.redis();
    let _: i64 = query(&mut c, &["REGISTER", "ann", "email", "a@x", "plan", "pro"]);
    for resp3 in [false, true] {
        let mut c = server.redis_proto(resp3);
        let by: redis::Value = query(&mut c, &["LOOKUPBY", "email", "a@x"]);
        let direct: redis::Value = query(&mut c, &["LOOKUP", "ann"]);
        assert_eq!(by, direct, "resp3={resp3}");
    }
    server.stop();
}

#[test]
fn moved_and_freed_values_follow_updates_removals_and_a_restart() {
    let (dir, db) = temp_db();
    let server = TestServer::start_at(&db, email, |b| b);
    let mut c = server.redis();
    let _: i64 = query(&mut c, &["REGISTER", "ann", "email", "a@x"]);
    let _: i64 = query(&mut c, &["REGISTER", "bob", "email", "b@x"]);
    let _: i64 = query(&mut c, &["REGISTER", "cy", "email", "c@x"]);
    // ann moves to a new value: her old one is free for bob.
    assert_eq!(query::<i64>(&mut c, &["UPDATE", "ann", "email", "a2@x"]), 1);
    assert_eq!(query::<i64>(&mut c, &["UPDATE", "bob", "email", "a@x"]), 1);
    // cy drops the field, then leaves: neither value is held.
    assert_eq!(query::<i64>(&mut c, &["DELFIELDS", "cy", "email"]), 1);
    assert_eq!(query::<i64>(&mut c, &["UNREGISTER", "cy"]), 1);
    let check = |c: &mut redis::Connection| {
        assert_eq!(holder(c, "email", "a@x").as_deref(), Some("bob"));
        assert_eq!(holder(c, "email", "a2@x").as_deref(), Some("ann"));
        assert_eq!(holder(c, "email", "b@x"), None);
        assert_eq!(holder(c, "email", "c@x"), None);
    };
    check(&mut c);
    drop(c);
    let server = server.restart();
    let mut c = server.redis();
    check(&mut c);
    let refused: redis::RedisResult<i64> = redis::cmd("REGISTER")
        .arg(&["dan", "email", "a2@x"])
        .query(&mut c);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        query::<i64>(&mut c, &["REGISTER", "dan", "email", "b@x"]),
        4
    );
    server.stop();
    drop(dir);
}

#[test]
fn a_refused_register_after_restart_is_an_error() {
    let (dir, db) = temp_db();
    let server = TestServer::start_at(&db, email, |b| b);
    let mut s = server.raw();
    exchange_resp(&mut s, &["REGISTER", "ann", "email", "a@x"], b":1\r\n");
    drop(s);
    let server = server.restart();
    let mut s = server.raw();
    exchange_resp(
        &mut s,
        &["REGISTER", "bob", "email", "a@x"],
        b"-ERR field 'email' value already taken by user 'ann'\r\n",
    );
    exchange_resp(&mut s, &["REGISTER", "bob", "email", "b@x"], b":2\r\n");
    server.stop();
    drop(dir);
}

#[test]
fn two_registrations_racing_in_one_tick_have_one_winner() {
    let server = TestServer::start_http_with(|cfg| {
        cfg.durability = userbus::Durability::Normal;
        email(cfg);
    });
    let mut rounds = 0;
    // Rounds go on until both REGISTERs of a round were seen to run in one tick
    // (a commit of two requests: nothing else talks to the server meanwhile).
    while rounds < 100 || !shared_a_tick(&server) {
        assert!(rounds < 2000, "no round ran both registrations in one tick");
        let value = format!("race{rounds}@x");
        let mut a = server.raw();
        let mut b = server.raw();
        let ra = resp(&["REGISTER", &format!("a{rounds}"), "email", &value]);
        let rb = resp(&["REGISTER", &format!("b{rounds}"), "email", &value]);
        // Both sent before either is read: they arrive in the same poll more
        // often than not, and then run in the same tick's transaction.
        a.write_all(&ra).expect("send a");
        b.write_all(&rb).expect("send b");
        let first = read_reply_line(&mut a);
        let second = read_reply_line(&mut b);
        let wins = [&first, &second]
            .iter()
            .filter(|r| r.starts_with(':'))
            .count();
        assert_eq!(wins, 1, "round {rounds}: {first:?} {second:?}");
        let loser = if first.starts_with(':') {
            &second
        } else {
            &first
        };
        assert!(
            loser.starts_with("-ERR field 'email' value already taken by user '"),
            "{loser:?}"
        );
        rounds += 1;
    }
    let mut c = server.redis();
    assert_eq!(query::<i64>(&mut c, &["USERCOUNT"]), rounds);
    server.stop();
}

/// True when some commit served more than one request (`/metrics`: the sum of
/// requests per commit above the number of commits).
fn shared_a_tick(server: &TestServer) -> bool {
    let text = server.http_get("/metrics", "");
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    value("userbus_requests_per_commit_sum") > value("userbus_requests_per_commit_count")
}

/// One reply line (`:n` or `-ERR ...`), read byte by byte.
fn read_reply_line(s: &mut std::net::TcpStream) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.extend(read_n(s, 1));
    }
    String::from_utf8(line).expect("UTF-8")
}

/// Pipelined on one connection, REGISTERs of one tick see each other's values.
#[test]
fn a_pipeline_sees_its_own_earlier_values() {
    let server = TestServer::start_with(email, |b| b);
    let mut s = server.raw();
    let mut batch = resp(&["REGISTER", "ann", "email", "x@x"]);
    batch.extend(resp(&["REGISTER", "bob", "email", "x@x"]));
    batch.extend(resp(&["UPDATE", "ann", "email", "y@x"]));
    batch.extend(resp(&["REGISTER", "bob", "email", "x@x"]));
    s.write_all(&batch).expect("send");
    let want = b":1\r\n-ERR field 'email' value already taken by user 'ann'\r\n:1\r\n:2\r\n";
    assert_eq!(read_n(&mut s, want.len()), want);
    server.stop();
}

// ---------------------------------------------------------------------------
// HTTP

fn http(server: &TestServer, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, body) =
        server.http_request(method, path, "Content-Type: application/json\r\n", body);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn http_looks_up_by_a_unique_field_and_refuses_taken_values() {
    let server = TestServer::start_http_with(|cfg| {
        cfg.unique_fields = vec!["email".to_string(), "phone".to_string()];
    });
    let (status, _) = http(
        &server,
        "POST",
        "/users",
        r#"{"name":"ann","fields":{"email":"a+1@x","phone":"1"}}"#,
    );
    assert_eq!(status, 201);
    let (status, user) = http(&server, "GET", "/users?email=a%2B1%40x", "");
    assert_eq!(status, 200);
    let (_, direct) = http(&server, "GET", "/users/ann", "");
    assert_eq!(user, direct);
    assert_eq!(http(&server, "GET", "/users?phone=1", "").1["name"], "ann");
    assert_eq!(http(&server, "GET", "/users?email=b@x", "").0, 404);
    // A key that is no unique field is the list as before.
    let (status, list) = http(&server, "GET", "/users?plan=x", "");
    assert_eq!(status, 200);
    assert_eq!(list["users"], json!(["ann"]));

    let (status, err) = http(
        &server,
        "POST",
        "/users",
        r#"{"name":"bob","fields":{"email":"a+1@x"}}"#,
    );
    assert_eq!(status, 409);
    assert_eq!(
        err["error"],
        "field 'email' value already taken by user 'ann'"
    );
    let (status, _) = http(
        &server,
        "POST",
        "/users",
        r#"{"name":"bob","fields":{"phone":"2"}}"#,
    );
    assert_eq!(status, 201);
    let (status, err) = http(&server, "PATCH", "/users/bob", r#"{"phone":"1"}"#);
    assert_eq!(status, 409);
    assert_eq!(
        err["error"],
        "field 'phone' value already taken by user 'ann'"
    );
    server.stop();
}

// ---------------------------------------------------------------------------
// Start

/// A database where two users, then a third, share an email (written without
/// the flag).
fn duplicated_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, db) = temp_db();
    let server = TestServer::start_at(&db, |_| {}, |b| b);
    let mut c = server.redis();
    for (name, mail) in [
        ("ann", "a@x"),
        ("bob", "same@x"),
        ("cy", "c@x"),
        ("dan", "same@x"),
        ("eve", "same@x"),
    ] {
        let _: i64 = query(&mut c, &["REGISTER", name, "email", mail]);
    }
    server.stop();
    (dir, db)
}

#[test]
fn a_database_with_duplicate_values_is_refused_at_start() {
    let (_dir, db) = duplicated_db();
    let mut cfg = common::config_at(&db);
    email(&mut cfg);
    let err = match Server::builder(cfg).build() {
        Ok(_) => panic!("a database holding a value twice was accepted"),
        Err(e) => e.to_string(),
    };
    for part in ["'email'", "'same@x'", "'bob'", "'dan'"] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    assert!(!err.contains("'eve'"), "{err}");
    // Other fields, or none, start fine.
    let mut cfg = common::config_at(&db);
    cfg.unique_fields = vec!["plan".to_string()];
    drop(Server::builder(cfg).build().expect("no duplicates in plan"));
}

#[test]
fn the_binary_takes_unique_fields_from_the_environment() {
    let (_dir, db) = duplicated_db();
    let out = userbus_command()
        .args(["serve", "--port", "0", "--http-port", "0", "--db"])
        .arg(&db)
        .env("USERBUS_UNIQUE_FIELD", "phone,email")
        .output()
        .expect("run userbus");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unique field 'email' has the value 'same@x'"),
        "{stderr}"
    );
    let out = userbus_command()
        .args([
            "serve",
            "--port",
            "0",
            "--unique-field",
            "bad field",
            "--db",
        ])
        .arg(&db)
        .output()
        .expect("run userbus");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--unique-field 'bad field'"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
