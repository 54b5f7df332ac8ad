//! Connection and admin commands — PING, ECHO, HELLO, AUTH, SELECT, COMMAND,
//! CLIENT, CONFIG, INFO, QUIT — as real clients' hand-shakes use them: the `redis`
//! crate in RESP2 and RESP3, and raw sockets where the exact bytes matter.
mod common;

use std::collections::BTreeMap;
use std::io::Write;

use common::reply::{
    assert_error_reply, bulk, call, call_cmd, error_text, int, pairs, text_or_verbatim,
};
use common::{TestServer, exchange, in_both_protocols, read_to_close, read_until_suffix};
use redis::Value;

/// A map reply keyed by its string keys.
fn map(v: &Value, resp3: bool) -> BTreeMap<String, Value> {
    pairs(v, resp3)
        .into_iter()
        .map(|(k, v)| (text_or_verbatim(&k), v))
        .collect()
}

fn client_id(con: &mut redis::Connection) -> i64 {
    int(&call(con, &["CLIENT", "ID"]))
}

/// `field:value` lines of INFO text.
fn info_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
        .collect()
}

// ---------------------------------------------------------------- PING, ECHO, QUIT

#[test]
fn ping_replies_pong_or_its_message() {
    let (server, mut s) = TestServer::start_raw();
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n");
    exchange(&mut s, b"*1\r\n$4\r\nping\r\n", b"+PONG\r\n");
    exchange(&mut s, b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n", b"$2\r\nhi\r\n");
    exchange(
        &mut s,
        b"PING a b\r\n",
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
    let mut c3 = server.redis3();
    assert_eq!(call(&mut c3, &["PING"]), Value::SimpleString("PONG".into()));
    assert_eq!(call(&mut c3, &["PING", "hello"]), bulk("hello"));
    server.stop();
}

#[test]
fn echo_returns_its_argument_binary_safe() {
    let (server, mut s) = TestServer::start_raw();
    exchange(
        &mut s,
        b"*2\r\n$4\r\nECHO\r\n$5\r\na\x00\xff\r\n\r\n",
        b"$5\r\na\x00\xff\r\n\r\n",
    );
    exchange(
        &mut s,
        b"ECHO\r\n",
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    );
    let mut c = server.redis();
    assert_eq!(call(&mut c, &["ECHO", "hello world"]), bulk("hello world"));
    assert_eq!(call(&mut c, &["ECHO", ""]), bulk(""));
    server.stop();
}

#[test]
fn quit_replies_ok_then_closes() {
    let (server, mut s) = TestServer::start_raw();
    s.write_all(b"QUIT\r\nPING\r\n").expect("write");
    // The request after QUIT is never answered.
    assert_eq!(read_to_close(&mut s), b"+OK\r\n");
    server.stop();
}

#[test]
fn unknown_command_replies_error_naming_it() {
    let (server, mut s) = TestServer::start_raw();
    exchange(
        &mut s,
        b"FOO a b\r\n",
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
    );
    exchange(
        &mut s,
        b"*1\r\n$3\r\nBAR\r\n",
        b"-ERR unknown command 'BAR', with args beginning with: \r\n",
    );
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n");
    server.stop();
}

// ---------------------------------------------------------------- HELLO, AUTH

#[test]
fn hello_without_arguments_describes_server_in_current_protocol() {
    let (server, mut c2) = TestServer::start_redis();
    let v = call(&mut c2, &["HELLO"]);
    let m = map(&v, false);
    assert_eq!(m["proto"], Value::Int(2), "{v:?}");
    assert_eq!(int(&m["id"]), client_id(&mut c2));
    for key in ["server", "version", "mode", "role", "modules"] {
        assert!(m.contains_key(key), "HELLO lacks {key}: {v:?}");
    }
    let mut c3 = server.redis3();
    let v = call(&mut c3, &["HELLO"]);
    let m = map(&v, true);
    assert_eq!(m["proto"], Value::Int(3), "{v:?}");
    assert_eq!(int(&m["id"]), client_id(&mut c3));
    server.stop();
}

#[test]
fn hello_switches_protocol_both_ways() {
    let (server, mut c) = TestServer::start_redis();
    assert!(call(&mut c, &["REGISTER", "alice"]) != Value::Nil);
    assert!(matches!(
        call(&mut c, &["LOOKUP", "alice"]),
        Value::Array(_)
    ));
    // HELLO's own reply already speaks the version it picked.
    let v = call(&mut c, &["HELLO", "3"]);
    assert_eq!(map(&v, true)["proto"], Value::Int(3));
    assert!(matches!(call(&mut c, &["LOOKUP", "alice"]), Value::Map(_)));
    let v = call(&mut c, &["HELLO", "2"]);
    assert_eq!(map(&v, false)["proto"], Value::Int(2));
    assert!(matches!(
        call(&mut c, &["LOOKUP", "alice"]),
        Value::Array(_)
    ));
    server.stop();
}

#[test]
fn hello_3_makes_nulls_resp3_on_the_wire() {
    let (server, mut s) = TestServer::start_raw();
    exchange(&mut s, b"CLIENT GETNAME\r\n", b"$-1\r\n");
    s.write_all(b"HELLO 3\r\nPING\r\n").expect("write");
    let hello = read_until_suffix(&mut s, b"+PONG\r\n");
    assert_eq!(hello.first(), Some(&b'%'), "a RESP3 map: {hello:?}");
    exchange(&mut s, b"CLIENT GETNAME\r\n", b"_\r\n");
    exchange(&mut s, b"LOOKUP nobody\r\n", b"_\r\n");
    server.stop();
}

#[test]
fn hello_unsupported_version_replies_noproto() {
    let (server, mut c) = TestServer::start_redis();
    for ver in ["4", "1", "0"] {
        assert_error_reply(
            &mut c,
            &["HELLO", ver],
            "NOPROTO unsupported protocol version",
        );
    }
    assert_error_reply(
        &mut c,
        &["HELLO", "three"],
        "ERR Protocol version is not an integer or out of range",
    );
    // Still RESP2.
    assert_eq!(
        map(&call(&mut c, &["HELLO"]), false)["proto"],
        Value::Int(2)
    );
    server.stop();
}

#[test]
fn hello_setname_sets_client_name() {
    let (server, mut c) = TestServer::start_redis();
    let v = call(&mut c, &["HELLO", "3", "SETNAME", "foo"]);
    assert_eq!(map(&v, true)["proto"], Value::Int(3));
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), bulk("foo"));
    let v = call(
        &mut c,
        &["HELLO", "2", "AUTH", "default", "any", "SETNAME", "bar"],
    );
    assert_eq!(map(&v, false)["proto"], Value::Int(2));
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), bulk("bar"));
    assert_error_reply(
        &mut c,
        &["HELLO", "3", "SETNAME", "a b"],
        "ERR Client names cannot contain spaces, newlines or special characters.",
    );
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), bulk("bar"));
    server.stop();
}

#[test]
fn hello_bad_option_replies_syntax_error_and_keeps_protocol() {
    let (server, mut c) = TestServer::start_redis();
    assert_error_reply(
        &mut c,
        &["HELLO", "3", "FOO"],
        "ERR Syntax error in HELLO option 'FOO'",
    );
    assert_error_reply(
        &mut c,
        &["HELLO", "3", "SETNAME"],
        "ERR Syntax error in HELLO option 'SETNAME'",
    );
    assert_error_reply(
        &mut c,
        &["HELLO", "3", "SETNAME", "x", "AUTH", "u"],
        "ERR Syntax error in HELLO option 'AUTH'",
    );
    // A rejected HELLO changes nothing: still RESP2, still unnamed.
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), Value::Nil);
    assert_eq!(
        map(&call(&mut c, &["HELLO"]), false)["proto"],
        Value::Int(2)
    );
    server.stop();
}

#[test]
fn auth_without_configured_password_behaves_as_redis() {
    let (server, mut c) = TestServer::start_redis();
    assert_error_reply(
        &mut c,
        &["AUTH", "secret"],
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?",
    );
    assert_eq!(call(&mut c, &["AUTH", "default", "anything"]), Value::Okay);
    assert_error_reply(
        &mut c,
        &["AUTH", "bob", "pw"],
        "WRONGPASS invalid username-password pair or user is disabled.",
    );
    assert_error_reply(
        &mut c,
        &["HELLO", "3", "AUTH", "bob", "pw"],
        "WRONGPASS invalid username-password pair or user is disabled.",
    );
    server.stop();
}

// ---------------------------------------------------------------- SELECT

#[test]
fn select_0_replies_ok_other_index_errors() {
    let (server, mut c) = TestServer::start_redis();
    assert_eq!(call(&mut c, &["SELECT", "0"]), Value::Okay);
    assert_error_reply(&mut c, &["SELECT", "1"], "ERR DB index is out of range");
    assert_error_reply(
        &mut c,
        &["SELECT", "x"],
        "ERR value is not an integer or out of range",
    );
    let mut s = server.raw();
    exchange(&mut s, b"SELECT 0\r\n", b"+OK\r\n");
    server.stop();
}

// ---------------------------------------------------------------- COMMAND

/// The names of a COMMAND / COMMAND INFO reply's entries.
fn entry_names(v: &Value) -> Vec<String> {
    let Value::Array(entries) = v else {
        panic!("COMMAND replies an array: {v:?}")
    };
    entries
        .iter()
        .map(|e| match e {
            Value::Array(fields) if fields.len() >= 3 => text_or_verbatim(&fields[0]),
            other => panic!("a command entry is [name, arity, flags, ...]: {other:?}"),
        })
        .collect()
}

#[test]
fn command_lists_every_command_and_count_agrees() {
    in_both_protocols(|_, mut c, _| {
        let all = call(&mut c, &["COMMAND"]);
        let names = entry_names(&all);
        for want in [
            "ping",
            "echo",
            "quit",
            "hello",
            "select",
            "command",
            "client",
            "config",
            "info",
            "register",
            "unregister",
            "lookup",
            "users",
            "usercount",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "COMMAND lacks {want}: {names:?}"
            );
        }
        let count = int(&call(&mut c, &["COMMAND", "COUNT"]));
        assert_eq!(count, names.len() as i64);
    });
}

#[test]
fn command_docs_replies_map_containing_register() {
    in_both_protocols(|_, mut c, resp3| {
        let v = call(&mut c, &["COMMAND", "DOCS"]);
        let docs = map(&v, resp3);
        let register = docs
            .get("register")
            .unwrap_or_else(|| panic!("COMMAND DOCS lacks register: {v:?}"));
        let summary = text_or_verbatim(&map(register, resp3)["summary"]);
        assert!(!summary.is_empty());
        let v = call(&mut c, &["COMMAND", "DOCS", "register", "nonexistent"]);
        let docs = map(&v, resp3);
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["register"], "{v:?}");
    });
}

#[test]
fn command_info_describes_known_and_nil_for_unknown() {
    in_both_protocols(|_, mut c, _| {
        let v = call(
            &mut c,
            &["COMMAND", "INFO", "register", "nonexistent", "LOOKUP"],
        );
        let Value::Array(entries) = &v else {
            panic!("COMMAND INFO replies an array: {v:?}")
        };
        assert_eq!(entries.len(), 3, "{v:?}");
        assert_eq!(entries[1], Value::Nil, "unknown command is nil: {v:?}");
        let (Value::Array(register), Value::Array(lookup)) = (&entries[0], &entries[2]) else {
            panic!("entries: {v:?}")
        };
        assert_eq!(text_or_verbatim(&register[0]), "register");
        // Redis arity: REGISTER name [field value ...] needs at least 2 words,
        // LOOKUP name exactly 2.
        assert_eq!(register[1], Value::Int(-2));
        assert_eq!(text_or_verbatim(&lookup[0]), "lookup");
        assert_eq!(lookup[1], Value::Int(2));
        let flags: Vec<String> = match &register[2] {
            Value::Array(f) | Value::Set(f) => f.iter().map(text_or_verbatim).collect(),
            other => panic!("flags: {other:?}"),
        };
        assert!(
            flags.iter().any(|f| f == "write"),
            "REGISTER writes: {flags:?}"
        );
    });
}

#[test]
fn unknown_subcommands_reply_error_naming_them() {
    let (server, mut c) = TestServer::start_redis();
    for (words, expected) in [
        (
            &["CLIENT", "FOO"][..],
            "ERR unknown subcommand 'FOO'. Try CLIENT HELP.",
        ),
        (
            &["COMMAND", "FOO"][..],
            "ERR unknown subcommand 'FOO'. Try COMMAND HELP.",
        ),
        (
            &["CONFIG", "FOO"][..],
            "ERR unknown subcommand 'FOO'. Try CONFIG HELP.",
        ),
    ] {
        assert_error_reply(&mut c, words, expected);
    }
    assert_error_reply(
        &mut c,
        &["CLIENT"],
        "ERR wrong number of arguments for 'client' command",
    );
    let mut s = server.raw();
    exchange(
        &mut s,
        b"CLIENT foo\r\n",
        b"-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n",
    );
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n");
    server.stop();
}

// ---------------------------------------------------------------- CLIENT

#[test]
fn client_id_is_distinct_per_connection() {
    let server = TestServer::start();
    let mut conns = [server.redis(), server.redis3(), server.redis()];
    let ids: Vec<i64> = conns.iter_mut().map(client_id).collect();
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "ids {ids:?}");
    // A connection keeps its id.
    assert_eq!(client_id(&mut conns[0]), ids[0]);
    let mut s = server.raw();
    s.write_all(b"CLIENT ID\r\n").expect("write");
    let reply = read_until_suffix(&mut s, b"\r\n");
    let raw_id: i64 = std::str::from_utf8(&reply[1..reply.len() - 2])
        .expect("digits")
        .parse()
        .expect("an integer");
    assert_eq!(reply[0], b':');
    assert!(!ids.contains(&raw_id), "{raw_id} reused from {ids:?}");
    server.stop();
}

#[test]
fn client_setname_getname_roundtrip() {
    let (server, mut c) = TestServer::start_redis();
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), Value::Nil);
    assert_eq!(
        call(&mut c, &["CLIENT", "SETNAME", "worker-1"]),
        Value::Okay
    );
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), bulk("worker-1"));
    for bad in ["has space", "new\nline", "tab\t"] {
        assert_error_reply(
            &mut c,
            &["CLIENT", "SETNAME", bad],
            "ERR Client names cannot contain spaces, newlines or special characters.",
        );
    }
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), bulk("worker-1"));
    // Another connection has its own name.
    let mut other = server.redis3();
    assert_eq!(call(&mut other, &["CLIENT", "GETNAME"]), Value::Nil);
    // An empty name clears it.
    assert_eq!(call(&mut c, &["CLIENT", "SETNAME", ""]), Value::Okay);
    assert_eq!(call(&mut c, &["CLIENT", "GETNAME"]), Value::Nil);
    server.stop();
}

#[test]
fn client_setinfo_lib_name_and_ver_show_in_client_info() {
    let (server, mut c) = TestServer::start_redis();
    assert_eq!(
        call(&mut c, &["CLIENT", "SETINFO", "lib-name", "mylib"]),
        Value::Okay
    );
    assert_eq!(
        call(&mut c, &["CLIENT", "SETINFO", "LIB-VER", "1.2.3"]),
        Value::Okay
    );
    assert_error_reply(
        &mut c,
        &["CLIENT", "SETINFO", "colour", "red"],
        "ERR Unrecognized option 'colour'",
    );
    let err = error_text(&call(&mut c, &["CLIENT", "SETINFO", "lib-name", "my lib"]));
    assert!(err.starts_with("ERR "), "{err}");
    let line = text_or_verbatim(&call(&mut c, &["CLIENT", "INFO"]));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(fields.contains(&"lib-name=mylib"), "{line}");
    assert!(fields.contains(&"lib-ver=1.2.3"), "{line}");
    server.stop();
}

#[test]
fn client_list_contains_this_client_id_and_name() {
    let (server, mut c2) = TestServer::start_redis();
    let mut c3 = server.redis3();
    let id2 = client_id(&mut c2);
    let id3 = client_id(&mut c3);
    call(&mut c2, &["CLIENT", "SETNAME", "two"]);
    call(&mut c3, &["CLIENT", "SETNAME", "three"]);
    for (c, resp3) in [(&mut c2, false), (&mut c3, true)] {
        let v = call(c, &["CLIENT", "LIST"]);
        if resp3 {
            assert!(matches!(v, Value::VerbatimString { .. }), "{v:?}");
        } else {
            assert!(matches!(v, Value::BulkString(_)), "{v:?}");
        }
        let list = text_or_verbatim(&v);
        let line_of = |id: i64| {
            list.lines()
                .find(|l| l.split_whitespace().next() == Some(&format!("id={id}")))
                .unwrap_or_else(|| panic!("no line for id={id} in {list}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        let l2 = line_of(id2);
        assert!(l2.contains(&"name=two") && l2.contains(&"resp=2"), "{l2:?}");
        let l3 = line_of(id3);
        assert!(
            l3.contains(&"name=three") && l3.contains(&"resp=3"),
            "{l3:?}"
        );
    }
    server.stop();
}

#[test]
fn client_list_id_lists_only_those_clients() {
    let (server, mut c) = TestServer::start_redis();
    let mut other = server.redis();
    let other_id = client_id(&mut other);
    let list = text_or_verbatim(&call_cmd(
        &mut c,
        redis::cmd("CLIENT").arg("LIST").arg("ID").arg(other_id),
    ));
    let ids: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, [format!("id={other_id}")], "{list}");
    server.stop();
}

// ---------------------------------------------------------------- CONFIG

#[test]
fn config_get_save_and_appendonly() {
    in_both_protocols(|_, mut c, resp3| {
        let save = map(&call(&mut c, &["CONFIG", "GET", "save"]), resp3);
        assert_eq!(save.keys().collect::<Vec<_>>(), ["save"]);
        text_or_verbatim(&save["save"]);
        let aof = map(&call(&mut c, &["CONFIG", "GET", "appendonly"]), resp3);
        assert_eq!(aof.keys().collect::<Vec<_>>(), ["appendonly"]);
        let value = text_or_verbatim(&aof["appendonly"]);
        assert!(value == "yes" || value == "no", "appendonly {value:?}");
        // Several patterns at once, as redis-benchmark sends them.
        let both = map(
            &call(&mut c, &["CONFIG", "GET", "save", "appendonly"]),
            resp3,
        );
        assert_eq!(both.keys().collect::<Vec<_>>(), ["appendonly", "save"]);
        let none = map(&call(&mut c, &["CONFIG", "GET", "no-such-setting"]), resp3);
        assert!(none.is_empty());
    });
}

#[test]
fn config_get_star_contains_port_and_durability() {
    let (server, mut c) = TestServer::start_redis();
    let all = map(&call(&mut c, &["CONFIG", "GET", "*"]), false);
    for key in ["port", "durability", "save", "appendonly"] {
        assert!(all.contains_key(key), "CONFIG GET * lacks {key}: {all:?}");
    }
    // The issue fixes the default durability.
    assert_eq!(text_or_verbatim(&all["durability"]), "strict");
    let d = map(&call(&mut c, &["CONFIG", "GET", "dur*"]), false);
    assert_eq!(text_or_verbatim(&d["durability"]), "strict");
    server.stop();
}

#[test]
fn config_get_durability_reports_normal_when_configured() {
    let server = TestServer::start_with(|cfg| cfg.durability = userbus::Durability::Normal, |b| b);
    let mut c = server.redis();
    let d = map(&call(&mut c, &["CONFIG", "GET", "durability"]), false);
    assert_eq!(text_or_verbatim(&d["durability"]), "normal");
    server.stop();
}

#[test]
fn config_get_port_reports_the_bound_port() {
    let (server, mut c) = TestServer::start_redis();
    let port = map(&call(&mut c, &["CONFIG", "GET", "port"]), false);
    assert_eq!(
        text_or_verbatim(&port["port"]),
        server.addr.port().to_string()
    );
    server.stop();
}

#[test]
fn config_get_without_pattern_replies_arity_error() {
    let (server, mut c) = TestServer::start_redis();
    assert_error_reply(
        &mut c,
        &["CONFIG", "GET"],
        "ERR wrong number of arguments for 'config|get' command",
    );
    assert_error_reply(
        &mut c,
        &["CONFIG"],
        "ERR wrong number of arguments for 'config' command",
    );
    assert_eq!(call(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
    server.stop();
}

// ---------------------------------------------------------------- INFO

#[test]
fn info_replies_every_section() {
    in_both_protocols(|server, mut c, resp3| {
        let v = call(&mut c, &["INFO"]);
        if resp3 {
            assert!(matches!(v, Value::VerbatimString { .. }), "{v:?}");
        }
        let info = text_or_verbatim(&v);
        for section in [
            "# Server",
            "# Clients",
            "# Stats",
            "# Persistence",
            "# Keyspace",
        ] {
            assert!(
                info.lines().any(|l| l == section),
                "INFO lacks {section}: {info}"
            );
        }
        let fields = info_fields(&info);
        assert_eq!(fields["tcp_port"], server.addr.port().to_string());
        assert_eq!(fields["durability"], "strict");
    });
}

#[test]
fn info_section_replies_only_that_section() {
    let (server, mut c) = TestServer::start_redis();
    let info = text_or_verbatim(&call(&mut c, &["INFO", "keyspace"]));
    let headers: Vec<&str> = info.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headers, ["# Keyspace"]);
    let info = text_or_verbatim(&call(&mut c, &["INFO", "SERVER", "clients"]));
    let headers: Vec<&str> = info.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headers, ["# Server", "# Clients"]);
    server.stop();
}

#[test]
fn info_keyspace_users_matches_usercount() {
    let (server, mut c) = TestServer::start_redis();
    let users = |c: &mut redis::Connection| {
        let info = text_or_verbatim(&call(c, &["INFO", "keyspace"]));
        info_fields(&info)["users"].parse::<i64>().expect("users:N")
    };
    assert_eq!(users(&mut c), 0);
    for name in ["a", "b", "c", "d"] {
        call(&mut c, &["REGISTER", name]);
    }
    call(&mut c, &["UNREGISTER", "b"]);
    let count = int(&call(&mut c, &["USERCOUNT"]));
    assert_eq!(count, 3);
    assert_eq!(users(&mut c), count);
    let mut other = server.redis3();
    assert_eq!(users(&mut other), count);
    server.stop();
}
