//! Commands sent with the `redis` crate and its replies read as the client parsed
//! them, error replies included; INFO read as a map, and polled until a
//! condition holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use redis::{ConnectionLike, Value};

/// Sends `cmd` and returns the reply as the client parsed it, error replies included.
pub fn call_cmd(con: &mut redis::Connection, cmd: &redis::Cmd) -> Value {
    con.req_command(cmd).expect("a reply")
}

/// A command from its words.
pub fn cmd(words: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(words[0]);
    for w in &words[1..] {
        c.arg(*w);
    }
    c
}

/// Sends the command `words` and returns its reply, error replies included.
pub fn call(con: &mut redis::Connection, words: &[&str]) -> Value {
    call_cmd(con, &cmd(words))
}

/// `REGISTER name [field value ...]`.
pub fn register_cmd(name: &str, fields: &[(&str, &str)]) -> redis::Cmd {
    let mut c = redis::cmd("REGISTER");
    c.arg(name);
    for (k, v) in fields {
        c.arg(*k).arg(*v);
    }
    c
}

/// Registers `name` and returns the integer reply (0 for a taken name).
pub fn register(con: &mut redis::Connection, name: &str, fields: &[(&str, &str)]) -> i64 {
    match call_cmd(con, &register_cmd(name, fields)) {
        Value::Int(id) => id,
        other => panic!("REGISTER {name}: expected an integer, got {other:?}"),
    }
}

/// Registers a free `name` and returns the new user's id, which must be positive.
pub fn register_new(con: &mut redis::Connection, name: &str, fields: &[(&str, &str)]) -> i64 {
    match call_cmd(con, &register_cmd(name, fields)) {
        Value::Int(id) if id > 0 => id,
        other => panic!("REGISTER {name}: expected a new id, got {other:?}"),
    }
}

/// Unregisters `name` and returns the integer reply (0 for an unknown name).
pub fn unregister(con: &mut redis::Connection, name: &str) -> i64 {
    match call_cmd(con, redis::cmd("UNREGISTER").arg(name)) {
        Value::Int(n) => n,
        other => panic!("UNREGISTER {name}: expected an integer, got {other:?}"),
    }
}

/// LOOKUP's reply as the client parsed it: nil for an unknown name.
pub fn lookup(con: &mut redis::Connection, name: &str) -> Value {
    call_cmd(con, redis::cmd("LOOKUP").arg(name))
}

/// The full text of an error reply (`ERR ...`); panics on anything else.
pub fn error_text(v: &Value) -> String {
    match v {
        Value::ServerError(e) => match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_string(),
        },
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Asserts that the command `words` gets exactly the error reply `expected`.
#[track_caller]
pub fn assert_error_reply(con: &mut redis::Connection, words: &[&str], expected: &str) {
    assert_eq!(error_text(&call(con, words)), expected);
}

/// A bulk or simple string reply.
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8 bulk"),
        Value::SimpleString(s) => s.clone(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// A string reply of any spelling: bulk, simple or verbatim.
pub fn text_or_verbatim(v: &Value) -> String {
    match v {
        Value::VerbatimString { text, .. } => text.clone(),
        other => text(other),
    }
}

/// A bulk string reply as text (stream ids, field names and values are bulk strings).
pub fn bulk_text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).expect("UTF-8 bulk"),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

/// An integer reply.
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// A bulk string value, to compare replies with.
pub fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

/// Pairs of a RESP3 map, or of a RESP2 flat array (which must have even length).
pub fn pairs(v: &Value, resp3: bool) -> Vec<(Value, Value)> {
    match (v, resp3) {
        (Value::Map(p), true) => p.clone(),
        (Value::Array(items), false) => {
            assert!(items.len() % 2 == 0, "odd flat map: {v:?}");
            items
                .chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect()
        }
        _ => panic!(
            "expected a {} map, got {v:?}",
            if resp3 { "RESP3" } else { "RESP2 flat" }
        ),
    }
}

/// An INFO section as field -> value.
pub type Info = BTreeMap<String, String>;

/// How long [`wait_info`]'s callers wait when they have no bound of their own.
pub const INFO_WAIT: Duration = Duration::from_secs(60);

/// The `field:value` lines of `INFO section`.
pub fn info(c: &mut redis::Connection, section: &str) -> Info {
    let text: String = redis::cmd("INFO").arg(section).query(c).expect("INFO");
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// An INFO field as a number; -1 when it is missing or not one.
pub fn info_num(i: &Info, field: &str) -> i64 {
    i.get(field).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

/// Polls `INFO section` on `c` until `done` holds for it and returns it; fails
/// after `within`, naming `what` and the last one seen.
pub fn wait_info(
    c: &mut redis::Connection,
    section: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&Info) -> bool,
) -> Info {
    let deadline = Instant::now() + within;
    loop {
        let i = info(c, section);
        if done(&i) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "waited {within:?} for {what}; INFO {section}: {i:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Promotes the follower behind `c` (`REPLICAOF NO ONE`), which must answer OK.
pub fn promote(c: &mut redis::Connection) {
    let ok: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(c)
        .expect("REPLICAOF NO ONE");
    assert_eq!(ok, "OK");
}

/// Waits until the follower behind `c` applied up to `seq` (INFO replication).
pub fn wait_applied(c: &mut redis::Connection, seq: i64) -> Info {
    wait_info(
        c,
        "replication",
        INFO_WAIT,
        &format!("seq {seq} applied"),
        |i| info_num(i, "userbus_applied_seq") >= seq,
    )
}
