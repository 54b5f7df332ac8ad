//! `--durability replicated` against a real nats-server: a write's reply comes
//! once its event is in the JetStream stream; pipelined replies keep their order;
//! with NATS gone, writes get `-NOREPLICAS` after `--replication-timeout` while
//! the server stays responsive, and nothing is lost or doubled once NATS is back;
//! a killed stream leader of a 3-node cluster stalls writes, then they go on;
//! a stopped relay fails writes at once; HTTP writes wait too (503 on timeout);
//! the mode without `--nats` is an error at start.
//!
//! Without nats-server these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::nats::{NatsCluster, NatsServer, NatsTestClient, nats_available};
use common::process::UserbusProcess;
use common::reply::{info, wait_info};
use common::stream::kinds_and_names;
use common::{TestServer, read_n, resp};
use serde_json::Value;

/// How long the relay may take to connect or drain after NATS came back (its
/// reconnect back-off reaches 5 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The reply of a write JetStream did not acknowledge in time.
const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";

/// Waits until the relay behind `c` publishes.
fn wait_publishing(c: &mut redis::Connection) {
    wait_info(c, "nats", DRAIN_TIMEOUT, "the relay to publish", |i| {
        i.get("nats_relay_state").map(String::as_str) == Some("publishing")
    });
}

/// The stream's last seq (0 when it holds nothing).
fn stream_last_seq(c: &mut NatsTestClient) -> u64 {
    c.stream_info("USERBUS")["state"]["last_seq"]
        .as_u64()
        .expect("last_seq")
}

/// The stream holds exactly the local log, once each, stream seq == event seq.
fn assert_stream_is_the_log(nats: &mut NatsTestClient, c: &mut redis::Connection) {
    let log = kinds_and_names(c);
    let msgs = nats.all_msgs("USERBUS");
    let stream: Vec<(i64, String, String)> = msgs
        .iter()
        .map(|m| {
            let e: Value = m.json();
            (
                m.seq as i64,
                e["kind"].as_str().unwrap_or_default().to_string(),
                e["name"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(stream, log, "the stream against the local log");
}

/// A userbus process in replicated mode on `nats`, with `timeout`.
fn start_replicated(nats: &NatsServer, db: &std::path::Path, timeout: &str) -> UserbusProcess {
    let url = nats.url();
    UserbusProcess::start(
        db,
        &[
            "--nats",
            url.as_str(),
            "--durability",
            "replicated",
            "--replication-timeout",
            timeout,
        ],
    )
}

/// A nats-server, a directory, and a userbus process replicating to it with a
/// 5 s timeout whose relay publishes; `None` (skip) without nats-server.
fn publishing_node() -> Option<(NatsServer, tempfile::TempDir, UserbusProcess)> {
    if !nats_available() {
        return None;
    }
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = start_replicated(&nats, &dir.path().join("r.db"), "5s");
    wait_publishing(&mut p.redis());
    Some((nats, dir, p))
}

/// A raw RESP socket with a read timeout.
fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    s
}

#[test]
fn a_register_reply_comes_after_its_event_is_in_the_stream() {
    let Some((nats, _dir, p)) = publishing_node() else {
        return;
    };
    let mut c = p.redis();
    let mut js = nats.client();
    for i in 0..20u64 {
        let name = format!("u{i}");
        let id: i64 = redis::cmd("REGISTER").arg(&name).query(&mut c).unwrap();
        assert!(id > 0);
        // Right after the reply, with no wait: the stream holds the event.
        let seq = i + 1;
        assert!(stream_last_seq(&mut js) >= seq);
        let msg = js
            .stream_msg("USERBUS", seq)
            .expect("the event is in the stream");
        assert_eq!(msg.json()["name"], name.as_str());
    }
    let removed: i64 = redis::cmd("UNREGISTER").arg("u0").query(&mut c).unwrap();
    assert_eq!(removed, 1);
    let msg = js.stream_msg("USERBUS", 21).expect("the unregistration");
    assert_eq!(msg.json()["kind"], "user.unregistered");
    let i = info(&mut c, "nats");
    assert_eq!(i["replicated_held_ticks"], "21", "{i:?}");
    assert_eq!(i["replicated_noreplicas"], "0", "{i:?}");
    assert_eq!(info(&mut c, "persistence")["durability"], "replicated");
}

#[test]
fn pipelined_writes_and_reads_on_one_connection_keep_their_order() {
    let Some((nats, _dir, p)) = publishing_node() else {
        return;
    };
    let mut c = p.redis();
    let mut s = raw(p.port);
    let mut pipeline = Vec::new();
    let mut expected = Vec::new();
    for i in 0..50 {
        let name = format!("p{i}");
        pipeline.extend(resp(&["REGISTER", &name]));
        pipeline.extend(resp(&["LOOKUP", "nobody"]));
        pipeline.extend(resp(&["PING"]));
        pipeline.extend(resp(&["USERCOUNT"]));
        pipeline.extend(resp(&["REGISTER", &name]));
        expected.extend(format!(":{}\r\n$-1\r\n+PONG\r\n:{}\r\n:0\r\n", i + 1, i + 1).bytes());
    }
    s.write_all(&pipeline).unwrap();
    let got = read_n(&mut s, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    // Every registration the replies acknowledged is in the stream.
    let mut js = nats.client();
    assert_eq!(stream_last_seq(&mut js), 50);
    assert_stream_is_the_log(&mut js, &mut c);
}

#[test]
fn writes_get_noreplicas_while_nats_is_down_and_succeed_again_when_it_is_back() {
    if !nats_available() {
        return;
    }
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let p = start_replicated(&nats, &dir.path().join("r.db"), "1s");
    let mut c = p.redis();
    for i in 0..5 {
        let id: i64 = redis::cmd("REGISTER")
            .arg(format!("before{i}"))
            .query(&mut c)
            .unwrap();
        assert!(id > 0);
    }
    p.wait_relayed();
    let mut sub = raw(p.port);
    sub.write_all(&resp(&["SUBSCRIBE", "user.registered"]))
        .unwrap();
    let subscribed = b"*3\r\n$9\r\nsubscribe\r\n$15\r\nuser.registered\r\n:1\r\n";
    assert_eq!(read_n(&mut sub, subscribed.len()), subscribed);

    nats.kill9();
    // A pipeline of writes and non-writes: each write becomes NOREPLICAS, the
    // others keep their replies, in order.
    let mut s = raw(p.port);
    let started = Instant::now();
    let mut pipeline = resp(&["REGISTER", "during0"]);
    pipeline.extend(resp(&["PING"]));
    pipeline.extend(resp(&["REGISTER", "during1"]));
    pipeline.extend(resp(&["LOOKUP", "nobody"]));
    s.write_all(&pipeline).unwrap();
    // Meanwhile the server answers others at once, and their reads see the
    // held write (reads are not held).
    let mut other = p.redis();
    let ping_started = Instant::now();
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG");
    assert!(ping_started.elapsed() < Duration::from_millis(500));
    let seen: redis::Value = redis::cmd("LOOKUP")
        .arg("during0")
        .query(&mut other)
        .unwrap();
    assert!(format!("{seen:?}").contains("during0"), "{seen:?}");
    let expected = format!("-{NOREPLICAS}\r\n+PONG\r\n-{NOREPLICAS}\r\n$-1\r\n");
    let got = read_n(&mut s, expected.len());
    let took = started.elapsed();
    assert_eq!(String::from_utf8_lossy(&got), expected);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "NOREPLICAS after {took:?}"
    );
    let i = info(&mut other, "nats");
    assert_eq!(i["replicated_noreplicas"], "2", "{i:?}");
    // The subscriber got no push for writes the stream does not hold.
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        sub.read(&mut byte).is_err(),
        "a push came for an unacknowledged write"
    );
    let metrics = info(&mut other, "nats");
    assert!(metrics["replicated_held_ticks"].parse::<u64>().unwrap() >= 6);

    nats.restart();
    p.wait_relayed();
    // The writes that got NOREPLICAS stayed in the log and reached the stream;
    // their pushes went out once JetStream acknowledged them.
    sub.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for name in ["during0", "during1"] {
        let head = b"*3\r\n$7\r\nmessage\r\n$15\r\nuser.registered\r\n";
        assert_eq!(read_n(&mut sub, head.len()), head);
        let len_line = read_line(&mut sub);
        let len: usize = len_line.trim_start_matches('$').parse().unwrap();
        let payload = read_n(&mut sub, len + 2);
        let event: Value = serde_json::from_slice(&payload[..len]).unwrap();
        assert_eq!(event["name"], name);
    }
    let id: i64 = redis::cmd("REGISTER").arg("after").query(&mut c).unwrap();
    assert!(id > 0);
    let mut js = nats.client();
    assert_stream_is_the_log(&mut js, &mut c);
    assert_eq!(stream_last_seq(&mut js), 8);
}

#[test]
fn writes_stall_and_go_on_when_the_stream_leader_is_killed() {
    if nats_available() {
        kill_the_stream_leader_under_load(false);
    }
}

#[test]
fn writes_stall_and_go_on_when_the_stream_leader_the_relay_is_on_is_killed() {
    if nats_available() {
        kill_the_stream_leader_under_load(true);
    }
}

/// Moves `stream`'s leadership (step-downs) until node `i` leads it.
fn make_leader(cluster: &NatsCluster, stream: &str, i: usize) {
    for _ in 0..20 {
        let leader = cluster.wait_stream_leader(stream, None);
        if leader == i {
            return;
        }
        cluster.client(leader).api(
            &format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
            &serde_json::json!({}),
        );
        cluster.wait_stream_leader(stream, Some(leader));
    }
    panic!("node {i} did not become the leader of {stream}");
}

/// Two writers of REGISTER on a replicated node of a 3-node cluster (R=3); the
/// stream's leader is killed (with `on_relays_server`, the one the relay is
/// connected to); writes go on, every acknowledged one is in the stream, and
/// the longest a REGISTER waited is printed.
fn kill_the_stream_leader_under_load(on_relays_server: bool) {
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    let p = UserbusProcess::start(
        &dir.path().join("r.db"),
        &[
            "--nats",
            urls.as_str(),
            "--nats-replicas",
            "3",
            "--durability",
            "replicated",
            "--replication-timeout",
            "30s",
        ],
    );
    let mut c = p.redis();
    wait_publishing(&mut c);
    let relays_server = || {
        let server = info(&mut p.redis(), "nats")["nats_server"].clone();
        (0..cluster.len())
            .find(|&i| cluster.url(i) == server)
            .unwrap_or_else(|| panic!("the relay's server {server:?} is no node"))
    };
    if on_relays_server {
        make_leader(&cluster, "USERBUS", relays_server());
    }
    // Two writers; each REGISTER it got an id for is acknowledged.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (stop, acked, port) = (stop.clone(), acked.clone(), p.port);
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                let mut c = client.get_connection().unwrap();
                let (mut names, mut longest) = (Vec::new(), Duration::ZERO);
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{t}-{}", names.len());
                    let started = Instant::now();
                    let id: i64 = redis::cmd("REGISTER").arg(&name).query(&mut c).unwrap();
                    assert!(id > 0);
                    longest = longest.max(started.elapsed());
                    names.push(name);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                (names, longest)
            })
        })
        .collect();
    let wait_acked = |n: usize, what: &str| {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while acked.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "waited for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_acked(50, "writes before the kill");
    let leader = cluster.wait_stream_leader("USERBUS", None);
    let relay_on_leader = relays_server() == leader;
    assert!(relay_on_leader || !on_relays_server);
    cluster.kill9(leader);
    let new_leader = cluster.wait_stream_leader("USERBUS", Some(leader));
    let after = acked.load(Ordering::Relaxed) + 50;
    wait_acked(after, "writes on the new leader");
    stop.store(true, Ordering::Relaxed);
    let mut names = Vec::new();
    let mut longest = Duration::ZERO;
    for w in writers {
        let (n, l) = w.join().expect("writer");
        names.extend(n);
        longest = longest.max(l);
    }
    eprintln!(
        "leader kill under replicated load (the relay on the killed leader: {relay_on_leader}): \
         {} acknowledged writes; the longest stall {longest:?}",
        names.len()
    );
    assert!(longest < Duration::from_secs(30));
    // Every acknowledged write is in the stream, which is the local log.
    let mut js = cluster.client(new_leader);
    let stored: std::collections::HashSet<String> = js
        .all_msgs("USERBUS")
        .iter()
        .map(|m| m.json()["name"].as_str().unwrap_or_default().to_string())
        .collect();
    for name in &names {
        assert!(
            stored.contains(name),
            "{name} acknowledged, not in the stream"
        );
    }
    p.wait_relayed();
    assert_stream_is_the_log(&mut js, &mut c);
}

#[test]
fn a_stopped_relay_fails_held_and_new_writes_at_once() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let mut p = start_replicated(&nats, &db, "30s");
    let mut c = p.redis();
    for i in 0..3 {
        let _: i64 = redis::cmd("REGISTER")
            .arg(format!("u{i}"))
            .query(&mut c)
            .unwrap();
    }
    p.stop();
    // Another writer's message where this database's next event would go.
    let mut js = nats.client();
    js.publish_foreign_after(3);
    let p = start_replicated(&nats, &db, "30s");
    let mut c = p.redis();
    for i in 0..3 {
        let started = Instant::now();
        let r: redis::RedisResult<i64> = redis::cmd("REGISTER").arg(format!("n{i}")).query(&mut c);
        let e = r.expect_err("a write while the relay is stopped");
        assert_eq!(e.code(), Some("NOREPLICAS"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    let i = info(&mut c, "nats");
    assert_eq!(i["nats_relay_state"], "stopped", "{i:?}");
    assert_eq!(stream_last_seq(&mut js), 4);
}

#[test]
fn an_http_write_answers_after_the_ack_and_503_without_it() {
    if !nats_available() {
        return;
    }
    let mut nats = NatsServer::start();
    let url = nats.url();
    let server = TestServer::start_http_with(|cfg| {
        cfg.nats = Some(url.clone());
        cfg.durability = userbus::Durability::Replicated;
        cfg.replication_timeout = Duration::from_secs(1);
    });
    let mut c = server.redis();
    wait_publishing(&mut c);
    let mut h = server.http_raw();
    h.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut js = nats.client();
    h.write_all(post_user("alice").as_bytes()).unwrap();
    let (status, body) = read_response(&mut h);
    assert_eq!(status, 201, "{body}");
    let msg = js
        .stream_msg("USERBUS", 1)
        .expect("the event is in the stream");
    assert_eq!(msg.json()["name"], "alice");

    nats.kill9();
    let started = Instant::now();
    h.write_all(post_user("bob").as_bytes()).unwrap();
    h.write_all(b"GET /users/alice HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (status, body) = read_response(&mut h);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], NOREPLICAS);
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The connection goes on; the read held behind the write kept its response.
    let (status, body) = read_response(&mut h);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "alice");
    server.stop();
}

#[test]
fn with_nats_unreachable_at_start_writes_time_out_and_reads_work() {
    if !nats_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", common::free_port());
    let args = |timeout| {
        [
            "--nats",
            url.as_str(),
            "--durability",
            "replicated",
            "--replication-timeout",
            timeout,
        ]
    };
    let p = UserbusProcess::start(&dir.path().join("a.db"), &args("1s"));
    let mut c = p.redis();
    let started = Instant::now();
    let r: redis::RedisResult<i64> = redis::cmd("REGISTER").arg("early").query(&mut c);
    assert_eq!(r.expect_err("no NATS").code(), Some("NOREPLICAS"));
    assert!(started.elapsed() >= Duration::from_millis(900));
    drop(p);

    let mut p = UserbusProcess::start(&dir.path().join("b.db"), &args("30s"));
    let mut held = raw(p.port);
    held.write_all(&resp(&["REGISTER", "early"])).unwrap();
    let mut other = p.redis();
    wait_info(
        &mut other,
        "nats",
        DRAIN_TIMEOUT,
        "the write to be held",
        |i| i.get("replicated_waiting_ticks").map(String::as_str) == Some("1"),
    );
    // Reads answer at once, and see the write (it is in the local log).
    let count: i64 = redis::cmd("USERCOUNT").query(&mut other).unwrap();
    assert_eq!(count, 1);
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG");
    // A clean stop does not wait for the 30 s: the held write gets NOREPLICAS.
    let started = Instant::now();
    p.stop();
    assert!(started.elapsed() < Duration::from_secs(10));
    let expected = format!("-{NOREPLICAS}\r\n");
    assert_eq!(read_n(&mut held, expected.len()), expected.as_bytes());
}

#[test]
fn callbacks_event_streams_and_blocked_reads_wait_for_the_stream_ack() {
    if !nats_available() {
        return;
    }
    let mut nats = NatsServer::start();
    let url = nats.url();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = seen.clone();
    let http_port = common::free_port();
    let server = TestServer::start_with(
        |cfg| {
            cfg.http_port = http_port;
            cfg.nats = Some(url.clone());
            cfg.durability = userbus::Durability::Replicated;
            cfg.replication_timeout = Duration::from_secs(1);
        },
        move |b| {
            b.on_registered(move |e| {
                if let Ok(mut names) = record.lock() {
                    names.push(e.name.clone());
                }
            })
        },
    );
    let names = || seen.lock().unwrap().clone();
    let mut c = server.redis();
    let _: i64 = redis::cmd("REGISTER").arg("first").query(&mut c).unwrap();
    // The callback ran before the reply left.
    assert_eq!(names(), ["first"]);
    // An event stream after seq 1, and a read blocked after seq 1.
    let mut sse = server.http_raw();
    sse.write_all(b"GET /events?from=2 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = b"HTTP/1.1 200 OK\r\n";
    assert_eq!(read_n(&mut sse, head.len()), head);
    let mut xread = raw(server.addr.port());
    xread
        .write_all(&resp(&["XREAD", "BLOCK", "0", "STREAMS", "events", "1"]))
        .unwrap();
    // Sent before this round trip, so parked by the time it returns.
    let _: String = redis::cmd("PING").query(&mut c).unwrap();

    nats.kill9();
    let r: redis::RedisResult<i64> = redis::cmd("REGISTER").arg("second").query(&mut c);
    assert_eq!(r.expect_err("NATS is down").code(), Some("NOREPLICAS"));
    assert_eq!(
        names(),
        ["first"],
        "a callback ran for an unacknowledged write"
    );
    for (what, s) in [
        ("the event stream", &mut sse),
        ("the blocked XREAD", &mut xread),
    ] {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let got = match s.read(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(_) => String::new(),
        };
        assert!(
            !got.contains("second"),
            "{what} got an unacknowledged event: {got}"
        );
        s.set_read_timeout(Some(DRAIN_TIMEOUT)).unwrap();
    }

    nats.restart();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while names().len() < 2 {
        assert!(Instant::now() < deadline, "the callback never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(names(), ["first", "second"]);
    for (what, s) in [
        ("the event stream", &mut sse),
        ("the blocked XREAD", &mut xread),
    ] {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("second") {
            let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(n > 0, "{what} closed");
            got.extend_from_slice(&buf[..n]);
        }
    }
    server.stop();
}

#[test]
fn replicated_durability_without_nats_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let out = common::run_userbus(&[
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        "--durability",
        "replicated",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--durability replicated needs --nats"),
        "{stderr}"
    );
}

/// `POST /users` registering `name`, keep-alive.
fn post_user(name: &str) -> String {
    let body = format!("{{\"name\":\"{name}\"}}");
    format!(
        "POST /users HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One CRLF-terminated line, without the CRLF.
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        line.extend(read_n(s, 1));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).expect("UTF-8 line")
}

/// One HTTP response: its status and JSON body (`Null` when empty).
fn read_response(s: &mut TcpStream) -> (u16, Value) {
    let status_line = read_line(s);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut len = 0;
    loop {
        let line = read_line(s);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().expect("Content-Length");
        }
    }
    let body = read_n(s, len);
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).expect("JSON body")
    };
    (status, value)
}
