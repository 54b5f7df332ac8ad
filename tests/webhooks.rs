//! Webhooks: every committed event POSTed to the registered endpoints with the
//! Standard Webhooks headers and signature, in seq order per endpoint, retried on
//! the `--webhook-retry-schedule`, dead-lettered after the last attempt, disabled on
//! 410 or after `--webhook-disable-after`, and kept across kill -9. The receivers
//! are in tests/common/webhook.rs; one receiver verifies with the `standardwebhooks`
//! Python package. The servers are `userbus serve` processes, so the flags are the
//! ones an operator types.
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::process::UserbusProcess;
use common::reply::{self, call, error_text, info_num, int, pairs, text};
use common::webhook::{
    Answer, DELIVERY_WAIT, PyReceiver, REDIRECT_PATH, Received, Receiver, TestCa, always,
    assert_delivery, fail_first, standardwebhooks_available, summary, verify_signature,
};
use redis::Value;
use serde_json::json;

/// A retry schedule short enough for tests: 4 attempts in about 350 ms.
const FAST_RETRIES: &str = "50ms,100ms,200ms";

/// The error for a loopback or private target without `--webhook-allow-private`.
const PRIVATE_ERROR: &str =
    "ERR webhook target is a private address (start with --webhook-allow-private)";

/// A secret of 24 bytes (`whsec_` + base64), as the Standard Webhooks examples use.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The keys of each endpoint in WEBHOOK LIST, in their order.
const LIST_KEYS: [&str; 13] = [
    "id",
    "url",
    "events",
    "state",
    "reason",
    "position",
    "lag",
    "delivered",
    "failed",
    "retrying",
    "dead_letters",
    "last_status",
    "last_error",
];

// ---------------------------------------------------------------------------
// The server and its replies.

/// A `userbus serve` process on a database of its own, with the HTTP side on.
struct Node {
    p: UserbusProcess,
    db: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Private targets allowed (the receivers are on loopback), no fsync, the fast
    /// retry schedule unless `extra` sets one; then the `extra` flags.
    fn start(extra: &[&str]) -> Node {
        let mut args = vec!["--durability", "normal", "--webhook-allow-private"];
        if !extra.contains(&"--webhook-retry-schedule") {
            args.extend_from_slice(&["--webhook-retry-schedule", FAST_RETRIES]);
        }
        args.extend_from_slice(extra);
        Node::start_exactly(&args)
    }

    /// Only the flags `args` (and the database and ports).
    fn start_exactly(args: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("userbus.db");
        let p = UserbusProcess::start_with_http(&db, args);
        Node {
            p,
            db,
            args: args.iter().map(|a| a.to_string()).collect(),
            _dir: dir,
        }
    }

    /// A new process on the same database with the same flags, after `p.kill9()`.
    fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.p = UserbusProcess::start_with_http(&self.db, &args);
    }

    fn redis(&self) -> redis::Connection {
        self.p.redis()
    }
}

/// An endpoint as LIST shows it: its keys in order, integers as text.
#[derive(Debug, Clone)]
struct Endpoint(Vec<(String, String)>);

impl Endpoint {
    fn from_value(v: &Value, resp3: bool) -> Endpoint {
        Endpoint(
            pairs(v, resp3)
                .iter()
                .map(|(k, v)| (text(k), scalar(v)))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} in {self:?}"))
    }

    fn num(&self, key: &str) -> i64 {
        self.get(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not an integer in {self:?}"))
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// An integer or string reply as text.
fn scalar(v: &Value) -> String {
    match v {
        Value::Int(n) => n.to_string(),
        other => text(other),
    }
}

/// `WEBHOOK ADD url opts...`: the new id and the secret.
fn add(con: &mut redis::Connection, url: &str, opts: &[&str]) -> (i64, String) {
    let mut words = vec!["WEBHOOK", "ADD", url];
    words.extend_from_slice(opts);
    let reply = call(con, &words);
    let fields: Vec<(String, Value)> = match &reply {
        Value::Map(p) => p.iter().map(|(k, v)| (text(k), v.clone())).collect(),
        _ => pairs(&reply, false)
            .into_iter()
            .map(|(k, v)| (text(&k), v))
            .collect(),
    };
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["id", "secret"], "WEBHOOK ADD {url}: {reply:?}");
    (int(&fields[0].1), text(&fields[1].1))
}

/// `WEBHOOK LIST` over a RESP2 connection.
fn list(con: &mut redis::Connection) -> Vec<Endpoint> {
    list_in(con, false)
}

fn list_in(con: &mut redis::Connection, resp3: bool) -> Vec<Endpoint> {
    match call(con, &["WEBHOOK", "LIST"]) {
        Value::Array(items) => items
            .iter()
            .map(|v| Endpoint::from_value(v, resp3))
            .collect(),
        other => panic!("WEBHOOK LIST: {other:?}"),
    }
}

/// The endpoint `id` in LIST.
fn endpoint(con: &mut redis::Connection, id: i64) -> Endpoint {
    list(con)
        .into_iter()
        .find(|e| e.num("id") == id)
        .unwrap_or_else(|| panic!("webhook {id} not in LIST"))
}

/// Polls LIST until endpoint `id` satisfies `done`; fails naming `what`.
fn wait_endpoint(
    con: &mut redis::Connection,
    id: i64,
    what: &str,
    done: impl Fn(&Endpoint) -> bool,
) -> Endpoint {
    let deadline = Instant::now() + DELIVERY_WAIT;
    loop {
        let e = endpoint(con, id);
        if done(&e) {
            return e;
        }
        assert!(Instant::now() < deadline, "waited for {what}: {e:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `WEBHOOK DEADLETTERS id`: each entry's fields as text.
fn dead_letters(con: &mut redis::Connection, id: i64) -> Vec<Endpoint> {
    match call(con, &["WEBHOOK", "DEADLETTERS", &id.to_string()]) {
        Value::Array(items) => items
            .iter()
            .map(|v| Endpoint::from_value(v, false))
            .collect(),
        other => panic!("WEBHOOK DEADLETTERS {id}: {other:?}"),
    }
}

/// Registers `u<from>` .. `u<to - 1>` in one pipeline.
fn register_many(con: &mut redis::Connection, names: std::ops::Range<usize>) {
    let mut pipe = redis::pipe();
    for i in names.clone() {
        pipe.cmd("REGISTER").arg(format!("u{i}"));
    }
    let ids: Vec<i64> = pipe.query(con).expect("REGISTER pipeline");
    assert!(ids.iter().all(|&id| id > 0), "{names:?}: {ids:?}");
}

/// The seqs of `received`, in arrival order.
fn seqs(received: &[Received]) -> Vec<i64> {
    received.iter().map(Received::seq).collect()
}

/// The seqs of the requests answered with a 2xx, in arrival order.
fn delivered_seqs(received: &[Received]) -> Vec<i64> {
    received
        .iter()
        .filter(|r| r.succeeded())
        .map(Received::seq)
        .collect()
}

/// Waits until the requests on `path` include a successful one for every seq in
/// `want`, and returns the requests on `path`.
fn wait_delivered(receiver: &Receiver, path: &str, want: &[i64]) -> Vec<Received> {
    let want: BTreeSet<i64> = want.iter().copied().collect();
    let got = receiver.wait_until(
        &format!("seqs {want:?} delivered on {path}"),
        DELIVERY_WAIT,
        |all| {
            let done: BTreeSet<i64> = all
                .iter()
                .filter(|r| r.path == path && r.succeeded())
                .map(Received::seq)
                .collect();
            want.is_subset(&done)
        },
    );
    got.into_iter().filter(|r| r.path == path).collect()
}

// ---------------------------------------------------------------------------
// The receivers themselves.

#[test]
fn receiver_records_keep_alive_requests_and_answers_by_script() {
    use std::io::{BufRead, BufReader, Read, Write};
    let receiver = Receiver::start();
    receiver.script(fail_first(1, 500));
    let mut s = std::net::TcpStream::connect(receiver.addr()).expect("connect");
    s.set_read_timeout(Some(common::IO_TIMEOUT))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for want in ["HTTP/1.1 500 Internal Server Error", "HTTP/1.1 200 OK"] {
        s.write_all(
            b"POST /x HTTP/1.1\r\nHost: h\r\nX-Seq: 1\r\nContent-Length: 11\r\n\r\n{\"seq\":1}\r\n",
        )
        .expect("send");
        let mut line = String::new();
        r.read_line(&mut line).expect("status");
        assert_eq!(line.trim_end(), want);
        let mut rest = [0u8; 60];
        let mut head = String::new();
        while !head.ends_with("\r\n\r\n") {
            let n = r.read(&mut rest[..1]).expect("head");
            assert!(n == 1, "closed");
            head.push(rest[0] as char);
        }
        let mut body = [0u8; 2];
        r.read_exact(&mut body).expect("body");
    }
    let got = receiver.wait_for(2, DELIVERY_WAIT);
    assert_eq!(got[0].conn, got[1].conn, "one kept-alive connection");
    assert_eq!(got[1].header("x-seq"), Some("1"));
    assert_eq!(got[0].answer, Answer::Status(500));
    assert_eq!(seqs(&got), [1, 1]);
}

#[test]
fn rust_signature_check_agrees_with_standardwebhooks() {
    if !standardwebhooks_available() {
        return;
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, datetime\n\
             from standardwebhooks.webhooks import Webhook\n\
             t = datetime.datetime.fromtimestamp(1700000000, tz=datetime.timezone.utc)\n\
             print(Webhook(sys.argv[1]).sign('msg_1', t, b'{\"seq\":1}'))",
            SECRET,
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    let signature = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut r = Received {
        method: "POST".into(),
        path: "/".into(),
        version: 1,
        headers: vec![
            ("webhook-id".into(), "msg_1".into()),
            ("webhook-timestamp".into(), "1700000000".into()),
            ("webhook-signature".into(), format!("v1,bogus= {signature}")),
        ],
        body: br#"{"seq":1}"#.to_vec(),
        at: Instant::now(),
        conn: 0,
        answer: Answer::Close,
    };
    verify_signature(SECRET, &r).expect("python's signature verifies");
    r.body = br#"{"seq":2}"#.to_vec();
    assert!(verify_signature(SECRET, &r).is_err());
}

// ---------------------------------------------------------------------------
// Delivery.

#[test]
fn delivers_each_event_signed_with_the_standard_webhooks_headers() {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    let mut con = node.redis();
    let (id, secret) = add(&mut con, &receiver.url("/hook"), &["SECRET", SECRET]);
    assert!(id > 0);
    assert_eq!(secret, SECRET);
    let (generated_id, generated) = add(&mut con, &receiver.url("/generated"), &[]);
    assert_ne!(generated_id, id);
    let key = generated
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("generated secret {generated:?}"));
    assert!(common::nats::base64_decode(key).len() >= 24, "{generated}");

    // The bodies must be the event JSON byte for byte: the pub/sub payloads.
    let mut sub = node.redis();
    let mut pubsub = sub.as_pubsub();
    pubsub.psubscribe("user.*").expect("PSUBSCRIBE");
    reply::register_new(&mut con, "alice", &[("email", "a@example.com")]);
    call(&mut con, &["UPDATE", "alice", "email", "b@example.com"]);
    assert_eq!(reply::unregister(&mut con, "alice"), 1);
    let published: Vec<Vec<u8>> = (0..3)
        .map(|_| {
            pubsub
                .get_message()
                .expect("push")
                .get_payload()
                .expect("payload")
        })
        .collect();

    let got = wait_delivered(&receiver, "/hook", &[1, 2, 3]);
    assert_eq!(seqs(&got), [1, 2, 3], "{}", summary(&got));
    for (r, body) in got.iter().zip(&published) {
        assert_delivery(SECRET, r);
        assert_eq!(r.body_text(), String::from_utf8_lossy(body));
    }
    let kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kinds,
        ["user.registered", "user.updated", "user.unregistered"]
    );
    let ids: BTreeSet<&str> = got.iter().map(Received::webhook_id).collect();
    assert_eq!(ids.len(), 3, "one webhook-id per event: {ids:?}");
    // One connection, kept alive.
    assert!(
        got.iter().all(|r| r.conn == got[0].conn),
        "{}",
        summary(&got)
    );

    for r in wait_delivered(&receiver, "/generated", &[1, 2, 3]) {
        assert_delivery(&generated, &r);
        assert!(verify_signature(SECRET, &r).is_err(), "signed per endpoint");
    }
    let e = wait_endpoint(&mut con, id, "position 3", |e| e.num("position") == 3);
    assert_eq!((e.num("delivered"), e.num("lag")), (3, 0), "{e:?}");
    assert_eq!(e.num("last_status"), 200, "{e:?}");
}

#[test]
fn standardwebhooks_python_receiver_verifies_deliveries() {
    if !standardwebhooks_available() {
        return;
    }
    let node = Node::start(&["--webhook-retry-schedule", "50ms"]);
    let mut py = PyReceiver::start(SECRET);
    let mut con = node.redis();
    add(&mut con, &py.url(), &["SECRET", SECRET]);
    reply::register_new(&mut con, "alice", &[("email", "a@example.com")]);
    reply::register_new(&mut con, "bob", &[]);
    assert_eq!(reply::unregister(&mut con, "alice"), 1);
    let lines = py.next(3);
    for line in &lines {
        assert_eq!(line["ok"], json!(true), "{lines:?}");
    }
    let got: Vec<(i64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["payload"]["seq"].as_i64().unwrap_or_default(),
                l["payload"]["kind"].as_str().unwrap_or_default(),
                l["payload"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "user.registered", "alice"),
            (2, "user.registered", "bob"),
            (3, "user.unregistered", "alice")
        ]
    );

    // An endpoint whose secret the receiver does not share fails verification there.
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    add(&mut con, &py.url(), &["SECRET", other]);
    reply::register_new(&mut con, "carol", &[]);
    // carol's event once to the first endpoint, and one or two attempts (the
    // schedule's two) to the second, in any interleaving.
    let (mut verified, mut refused) = (Vec::new(), Vec::new());
    while verified.is_empty() || refused.is_empty() {
        let line = py.next(1).remove(0);
        if line["ok"] == json!(true) {
            verified.push(line);
        } else {
            refused.push(line);
        }
        assert!(
            verified.len() + refused.len() <= 3,
            "{verified:?} {refused:?}"
        );
    }
    assert_eq!(verified.len(), 1, "{verified:?}");
    assert_eq!(verified[0]["payload"]["name"], json!("carol"));
    for line in &refused {
        assert_eq!(
            line["error"],
            json!("No matching signature found"),
            "{line}"
        );
    }
}

#[test]
fn events_filter_delivers_only_the_listed_kinds() {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    let mut con = node.redis();
    let (gone, _) = add(
        &mut con,
        &receiver.url("/gone"),
        &["EVENTS", "user.unregistered"],
    );
    let (both, _) = add(
        &mut con,
        &receiver.url("/both"),
        &["EVENTS", "user.registered,user.updated"],
    );
    add(&mut con, &receiver.url("/all"), &["EVENTS", "*"]);
    reply::register_new(&mut con, "a", &[]);
    reply::register_new(&mut con, "b", &[]);
    call(&mut con, &["UPDATE", "a", "x", "1"]);
    assert_eq!(reply::unregister(&mut con, "a"), 1);
    reply::register_new(&mut con, "c", &[]);

    assert_eq!(seqs(&wait_delivered(&receiver, "/gone", &[4])), [4]);
    // The last event is a registration: once it came, the filtered ones were skipped.
    assert_eq!(
        seqs(&wait_delivered(&receiver, "/both", &[5])),
        [1, 2, 3, 5]
    );
    assert_eq!(
        seqs(&wait_delivered(&receiver, "/all", &[5])),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(seqs(&receiver.received_on("/gone")), [4]);
    // The receiver sees the request before the server reads its answer and
    // commits the count.
    let g = wait_endpoint(&mut con, gone, "1 delivered", |e| e.num("delivered") == 1);
    let b = endpoint(&mut con, both);
    assert_eq!(g.get("events"), "user.unregistered");
    assert_eq!(b.get("events"), "user.registered,user.updated");
}

#[test]
fn new_endpoint_gets_only_events_committed_after_it_was_added() {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    let mut con = node.redis();
    register_many(&mut con, 0..3);
    let (id, _) = add(&mut con, &receiver.url("/late"), &[]);
    let e = endpoint(&mut con, id);
    assert_eq!((e.num("position"), e.num("lag")), (3, 0), "{e:?}");
    register_many(&mut con, 3..5);
    let got = wait_delivered(&receiver, "/late", &[4, 5]);
    assert_eq!(seqs(&got), [4, 5]);
}

#[test]
fn replay_from_seq_redelivers_in_order_with_the_same_webhook_ids() {
    replay_from_seq(true);
}

/// The REPLAY arrives while the last delivery's answer is on its way back: the
/// rewind must win over that delivery's outcome, whichever tick each lands in.
#[test]
fn replay_as_the_last_delivery_completes_is_not_lost() {
    replay_from_seq(false);
}

/// Five events, the endpoint added after the first two; REPLAY from seq 2 once the
/// receiver got the last one (and, when `idle`, once LIST shows it done).
fn replay_from_seq(idle: bool) {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    let mut con = node.redis();
    register_many(&mut con, 0..2);
    let (id, _) = add(&mut con, &receiver.url("/r"), &["SECRET", SECRET]);
    register_many(&mut con, 2..6);
    let first = wait_delivered(&receiver, "/r", &[3, 4, 5, 6]);
    assert_eq!(seqs(&first), [3, 4, 5, 6]);
    if idle {
        wait_endpoint(&mut con, id, "position 6", |e| e.num("position") == 6);
    }

    // from-seq is inclusive and may reach before the endpoint was added.
    assert_eq!(
        call(&mut con, &["WEBHOOK", "REPLAY", &id.to_string(), "2"]),
        Value::Okay
    );
    let all = wait_until_count(&receiver, "/r", 4 + 5);
    let replayed = &all[4..];
    assert_eq!(seqs(replayed), [2, 3, 4, 5, 6], "{}", summary(&all));
    for r in replayed {
        assert_delivery(SECRET, r);
    }
    for (a, b) in first.iter().zip(&replayed[1..]) {
        assert_eq!(a.webhook_id(), b.webhook_id(), "seq {}", a.seq());
        assert_eq!(a.body, b.body);
    }
}

/// Waits for `n` requests on `path` and returns them.
fn wait_until_count(receiver: &Receiver, path: &str, n: usize) -> Vec<Received> {
    let got = receiver.wait_until(&format!("{n} requests on {path}"), DELIVERY_WAIT, |all| {
        all.iter().filter(|r| r.path == path).count() >= n
    });
    got.into_iter().filter(|r| r.path == path).collect()
}

// ---------------------------------------------------------------------------
// Retries, dead letters, disabling.

#[test]
fn retries_keep_seq_order_and_deliver_each_event_once() {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    // seq 1: the connection closed unanswered, twice (each time the first request
    // on a fresh connection: a failed attempt); seq 3: 500 twice; seq 4: 503 once;
    // seq 5: 500, then closed unanswered on the kept-alive connection, which the
    // transport resends at once on a fresh one (not an attempt of its own).
    let mut tries = std::collections::HashMap::<i64, usize>::new();
    receiver.script(Box::new(move |r, _| {
        let n = tries.entry(r.seq()).or_default();
        *n += 1;
        match (r.seq(), *n) {
            (1, 1 | 2) => Answer::Close,
            (3, 1 | 2) | (5, 1) => Answer::Status(500),
            (4, 1) => Answer::Status(503),
            (5, 2) => Answer::Close,
            _ => Answer::Status(200),
        }
    }));
    let mut con = node.redis();
    let (id, _) = add(&mut con, &receiver.url("/flaky"), &["SECRET", SECRET]);
    register_many(&mut con, 0..6);
    let got = wait_delivered(&receiver, "/flaky", &[1, 2, 3, 4, 5, 6]);
    let all = summary(&got);
    assert_eq!(delivered_seqs(&got), [1, 2, 3, 4, 5, 6], "{all}");
    let order = seqs(&got);
    assert!(
        order.is_sorted(),
        "a later event before an earlier one:\n{all}"
    );
    assert_eq!(order, [1, 1, 1, 2, 3, 3, 3, 4, 4, 5, 5, 5, 6], "{all}");
    for (i, pair) in got.windows(2).enumerate() {
        let (a, b) = (&pair[0], &pair[1]);
        assert_delivery(SECRET, b);
        if a.seq() != b.seq() {
            continue;
        }
        assert_eq!(a.webhook_id(), b.webhook_id(), "a retry keeps its id");
        let reused = got[..i].iter().any(|r| r.conn == a.conn);
        if a.answer == Answer::Close {
            assert_ne!(a.conn, b.conn, "a closed connection is not reused");
        }
        if a.answer != Answer::Close || !reused {
            // The first delay is 50 ms ± 20%; timers fire late, never early.
            let gap = b.at - a.at;
            assert!(
                gap >= Duration::from_millis(35),
                "retried after {gap:?}:\n{all}"
            );
        }
    }
    let e = wait_endpoint(&mut con, id, "position 6", |e| e.num("position") == 6);
    assert_eq!((e.num("delivered"), e.num("failed")), (6, 6), "{e:?}");
    assert_eq!((e.num("retrying"), e.num("dead_letters")), (0, 0), "{e:?}");
    assert_eq!(e.get("state"), "enabled");
}

#[test]
fn failing_first_requests_delay_but_never_reorder() {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    receiver.script(fail_first(3, 500));
    let mut con = node.redis();
    add(&mut con, &receiver.url("/f"), &[]);
    register_many(&mut con, 0..5);
    let got = wait_delivered(&receiver, "/f", &[1, 2, 3, 4, 5]);
    assert_eq!(seqs(&got), [1, 1, 1, 1, 2, 3, 4, 5], "{}", summary(&got));
}

#[test]
fn last_attempt_dead_letters_the_event_and_replay_redelivers_it() {
    let node = Node::start(&["--webhook-retry-schedule", "50ms,100ms"]);
    let receiver = Receiver::start();
    receiver.script(Box::new(|r, _| {
        if r.seq() == 1 {
            Answer::Status(500)
        } else {
            Answer::Status(200)
        }
    }));
    let mut con = node.redis();
    let (id, _) = add(&mut con, &receiver.url("/d"), &[]);
    register_many(&mut con, 0..2);
    let got = wait_delivered(&receiver, "/d", &[2]);
    assert_eq!(seqs(&got), [1, 1, 1, 2], "{}", summary(&got));
    let original = got[0].webhook_id().to_string();

    let e = wait_endpoint(&mut con, id, "position 2", |e| e.num("position") == 2);
    assert_eq!(e.num("dead_letters"), 1, "{e:?}");
    assert_eq!((e.num("delivered"), e.num("failed")), (1, 3), "{e:?}");
    assert_eq!(e.get("state"), "enabled", "{e:?}");
    let dead = dead_letters(&mut con, id);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let d = &dead[0];
    assert_eq!(
        d.keys(),
        ["seq", "attempts", "last_status", "last_error", "at"]
    );
    assert_eq!((d.num("seq"), d.num("attempts")), (1, 3), "{d:?}");
    assert_eq!(d.num("last_status"), 500, "{d:?}");
    assert!(
        d.get("at").ends_with('Z') && d.get("at").contains('T'),
        "{d:?}"
    );

    // REPLAY without from-seq re-queues the dead letters ahead of newer events.
    receiver.script(always(200));
    let mut pipe = redis::pipe();
    pipe.cmd("WEBHOOK")
        .arg("REPLAY")
        .arg(id)
        .cmd("REGISTER")
        .arg("late");
    let (requeued, _): (i64, i64) = pipe.query(&mut con).expect("REPLAY, REGISTER");
    assert_eq!(requeued, 1);
    let got = wait_delivered(&receiver, "/d", &[1, 3]);
    let after: Vec<&Received> = got[4..].iter().collect();
    assert_eq!(
        after.iter().map(|r| r.seq()).collect::<Vec<_>>(),
        [1, 3],
        "{}",
        summary(&got)
    );
    assert_eq!(after[0].webhook_id(), original);
}

#[test]
fn gone_410_disables_at_once_and_enable_resumes() {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    receiver.script(Box::new(|r, _| {
        if r.path == "/gone" && r.seq() == 1 {
            Answer::Status(410)
        } else {
            Answer::Status(200)
        }
    }));
    let mut con = node.redis();
    let (id, _) = add(&mut con, &receiver.url("/gone"), &[]);
    add(&mut con, &receiver.url("/witness"), &[]);
    register_many(&mut con, 0..1);
    let e = wait_endpoint(&mut con, id, "disabled", |e| e.get("state") == "disabled");
    assert_eq!(e.get("reason"), "410 Gone", "{e:?}");
    assert_eq!(e.num("last_status"), 410, "{e:?}");
    // The event that got the 410 is dead-lettered at once, without retries.
    assert_eq!((e.num("dead_letters"), e.num("retrying")), (1, 0), "{e:?}");
    register_many(&mut con, 1..3);
    wait_delivered(&receiver, "/witness", &[1, 2, 3]);
    assert_eq!(
        seqs(&receiver.received_on("/gone")),
        [1],
        "no retry of a 410, nothing while disabled"
    );

    receiver.script(always(200));
    assert_eq!(
        call(&mut con, &["WEBHOOK", "ENABLE", &id.to_string()]),
        Value::Okay
    );
    let e = endpoint(&mut con, id);
    assert_eq!((e.get("state"), e.get("reason")), ("enabled", ""), "{e:?}");
    let got = wait_delivered(&receiver, "/gone", &[2, 3]);
    let order = seqs(&got);
    // ENABLE does not rewind: it goes on after the dead-lettered event.
    assert_eq!(order, [1, 2, 3], "{}", summary(&got));
}

#[test]
fn failing_longer_than_disable_after_disables_with_a_reason() {
    let node = Node::start(&[
        "--webhook-retry-schedule",
        "50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms,50ms",
        "--webhook-disable-after",
        "300ms",
    ]);
    let receiver = Receiver::start();
    receiver.script(always(500));
    let mut con = node.redis();
    let (id, _) = add(&mut con, &receiver.url("/down"), &[]);
    register_many(&mut con, 0..2);
    let e = wait_endpoint(&mut con, id, "disabled", |e| e.get("state") == "disabled");
    assert!(e.get("reason").starts_with("failing since "), "{e:?}");
    assert!(e.num("failed") >= 2, "{e:?}");
    let line = node.p.wait_line(&["WARN", "disabled"], DELIVERY_WAIT);
    assert!(line.contains(&format!("webhook {id}")), "{line}");
    let before = receiver.received().len();
    // REPLAY from a seq re-enables it.
    receiver.script(always(200));
    assert_eq!(
        call(&mut con, &["WEBHOOK", "REPLAY", &id.to_string(), "1"]),
        Value::Okay
    );
    let got = wait_delivered(&receiver, "/down", &[1, 2]);
    assert_eq!(delivered_seqs(&got[before..]), [1, 2], "{}", summary(&got));
    assert_eq!(endpoint(&mut con, id).get("state"), "enabled");
}

#[test]
fn redirects_are_failed_attempts_and_not_followed() {
    let node = Node::start(&["--webhook-retry-schedule", "50ms"]);
    let receiver = Receiver::start();
    receiver.script(Box::new(|_, _| Answer::Redirect));
    let mut con = node.redis();
    let (id, _) = add(&mut con, &receiver.url("/moved"), &[]);
    register_many(&mut con, 0..1);
    let e = wait_endpoint(&mut con, id, "a dead letter", |e| {
        e.num("dead_letters") == 1
    });
    assert_eq!((e.num("failed"), e.num("last_status")), (2, 307), "{e:?}");
    let got = receiver.received();
    assert!(
        got.len() == 2 && got.iter().all(|r| r.path != REDIRECT_PATH),
        "followed a redirect:\n{}",
        summary(&got)
    );
}

#[test]
fn del_stops_deliveries() {
    let node = Node::start(&[]);
    let receiver = Receiver::start();
    let mut con = node.redis();
    let (id, _) = add(&mut con, &receiver.url("/del"), &[]);
    add(&mut con, &receiver.url("/witness"), &[]);
    register_many(&mut con, 0..1);
    wait_delivered(&receiver, "/del", &[1]);
    assert_eq!(
        call(&mut con, &["WEBHOOK", "DEL", &id.to_string()]),
        Value::Int(1)
    );
    assert_eq!(
        call(&mut con, &["WEBHOOK", "DEL", &id.to_string()]),
        Value::Int(0)
    );
    register_many(&mut con, 1..3);
    wait_delivered(&receiver, "/witness", &[3]);
    assert_eq!(seqs(&receiver.received_on("/del")), [1]);
    assert_eq!(list(&mut con).len(), 1);
}

// ---------------------------------------------------------------------------
// Crashes and slow receivers.

#[test]
fn kill_9_mid_delivery_loses_and_reorders_nothing() {
    const EVENTS: usize = 400;
    let mut node = Node::start(&[]);
    let receiver = Receiver::start();
    let mut con = node.redis();
    add(&mut con, &receiver.url("/a"), &[]);
    add(
        &mut con,
        &receiver.url("/b"),
        &["EVENTS", "user.registered"],
    );
    register_many(&mut con, 0..EVENTS);
    // Connections accepted before each restart came from the killed process.
    let mut runs = Vec::new();
    for at in [40, 200] {
        receiver.wait_until(&format!("{at} on /a"), DELIVERY_WAIT, |all| {
            all.iter().filter(|r| r.path == "/a").count() >= at
        });
        node.p.kill9();
        runs.push(receiver.connections());
        node.restart();
    }
    let all: Vec<i64> = (1..=EVENTS as i64).collect();
    for path in ["/a", "/b"] {
        let got = wait_delivered(&receiver, path, &all);
        let run_of = |r: &Received| runs.iter().filter(|&&b| r.conn >= b).count();
        let mut prev: Option<(i64, usize)> = None;
        for r in &got {
            let (seq, run) = (r.seq(), run_of(r));
            match prev {
                None => assert_eq!(seq, 1, "{path}: starts at 1"),
                Some((p, pr)) if pr == run => assert_eq!(seq, p + 1, "{path}: within a run"),
                Some((p, _)) => assert!(
                    seq == p || seq == p + 1,
                    "{path}: after a restart at most the in-flight event again; {p} then {seq}:\n{}",
                    summary(&got)
                ),
            }
            prev = Some((seq, run));
        }
        assert_eq!(prev.map(|p| p.0), Some(EVENTS as i64), "{path}");
        assert!(
            got.len() <= EVENTS + runs.len(),
            "{path}: {} requests",
            got.len()
        );
    }
}

#[test]
fn receiver_that_never_answers_does_not_slow_the_resp_port() {
    let node = Node::start(&["--webhook-timeout", "2s"]);
    let receiver = Receiver::start();
    receiver.script(Box::new(|_, before| {
        if before == 0 {
            Answer::Hold
        } else {
            Answer::Status(200)
        }
    }));
    let mut con = node.redis();
    let ping = |con: &mut redis::Connection| {
        let t = Instant::now();
        let pong: String = redis::cmd("PING").query(con).expect("PING");
        assert_eq!(pong, "PONG");
        t.elapsed()
    };
    let before = ping(&mut con);
    let (id, _) = add(&mut con, &receiver.url("/slow"), &[]);
    register_many(&mut con, 0..1);
    let held = receiver.wait_for(1, DELIVERY_WAIT);
    let held_conn = held[0].conn;
    // While the request is held: PING, REGISTER and HTTP all answer promptly.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        worst = worst.max(ping(&mut con));
    }
    let t = Instant::now();
    register_many(&mut con, 1..2);
    let register = t.elapsed();
    let (status, _) = node.p.http_request("GET", "/healthz", "", "");
    assert_eq!(status, 200);
    assert!(
        worst < Duration::from_secs(1) && register < Duration::from_secs(1),
        "PING took {worst:?} (before: {before:?}), REGISTER {register:?} while a webhook was held"
    );
    assert_eq!(receiver.received().len(), 1, "one in flight per endpoint");
    // The response timeout gives up on the held request and retries on a new
    // connection.
    let got = wait_delivered(&receiver, "/slow", &[1, 2]);
    assert_eq!(seqs(&got), [1, 1, 2], "{}", summary(&got));
    assert_ne!(got[1].conn, held_conn);
    receiver.release_holds();
    let e = wait_endpoint(&mut con, id, "position 2", |e| e.num("position") == 2);
    assert_eq!(e.num("failed"), 1, "{e:?}");
}

// ---------------------------------------------------------------------------
// https and private addresses.

#[test]
fn https_delivery_trusts_the_webhook_ca() {
    let ca = TestCa::new();
    let receiver = Receiver::start_https(&ca);
    let ca_file = ca.pem.to_string_lossy().into_owned();
    let node = Node::start(&["--webhook-ca", &ca_file]);
    let mut con = node.redis();
    add(&mut con, &receiver.url("/ip"), &["SECRET", SECRET]);
    register_many(&mut con, 0..2);
    let got = wait_delivered(&receiver, "/ip", &[1, 2]);
    assert_eq!(seqs(&got), [1, 2]);
    for r in &got {
        assert_delivery(SECRET, r);
    }

    // Without the CA the certificate is not trusted: nothing reaches the receiver.
    let untrusting = Node::start(&[]);
    let other = Receiver::start_https(&ca);
    let mut con = untrusting.redis();
    let (id, _) = add(&mut con, &other.url("/x"), &[]);
    register_many(&mut con, 0..1);
    let e = wait_endpoint(&mut con, id, "a failed attempt", |e| e.num("failed") >= 1);
    assert_eq!((e.num("delivered"), e.num("last_status")), (0, 0), "{e:?}");
    assert!(!e.get("last_error").is_empty(), "{e:?}");
    assert!(other.received().is_empty());
}

#[test]
fn host_names_are_resolved_for_http_and_https() {
    let ca = TestCa::new();
    let (plain, tls) = (Receiver::start(), Receiver::start_https(&ca));
    let ca_file = ca.pem.to_string_lossy().into_owned();
    let node = Node::start(&["--webhook-ca", &ca_file]);
    let mut con = node.redis();
    // `localhost` goes to the resolver thread; https checks the certificate for
    // the name.
    add(&mut con, &plain.localhost_url("/name"), &["SECRET", SECRET]);
    add(&mut con, &tls.localhost_url("/name"), &["SECRET", SECRET]);
    register_many(&mut con, 0..2);
    for receiver in [&plain, &tls] {
        let got = wait_delivered(receiver, "/name", &[1, 2]);
        assert_eq!(seqs(&got), [1, 2], "{}", receiver.url(""));
        for r in &got {
            assert_delivery(SECRET, r);
        }
    }
}

#[test]
fn private_targets_are_refused_without_allow_private() {
    let node = Node::start_exactly(&["--durability", "normal"]);
    let mut con = node.redis();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/",
        "http://192.168.0.1/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]:9/",
        "http://[fd00::1]/",
        "http://[::ffff:127.0.0.1]/",
        "https://127.0.0.1/",
    ] {
        assert_eq!(
            error_text(&call(&mut con, &["WEBHOOK", "ADD", url])),
            PRIVATE_ERROR,
            "{url}"
        );
    }
    let (status, body) = node.p.http_request(
        "POST",
        "/webhooks",
        "Content-Type: application/json\r\n",
        r#"{"url":"http://127.0.0.1:9/"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("private address"), "{body}");
    assert!(list(&mut con).is_empty());
}

// ---------------------------------------------------------------------------
// Bad input.

#[test]
fn webhook_subcommands_reject_bad_input() {
    let node = Node::start(&[]);
    let mut con = node.redis();
    let (id, _) = add(&mut con, "http://127.0.0.1:9/ok", &[]);
    let id = id.to_string();
    let long_url = format!("http://example.com/{}", "a".repeat(2048));
    let short_secret = format!("whsec_{}", "QUFB".repeat(6)); // 18 bytes
    let long_secret = format!("whsec_{}", "QUFB".repeat(22)); // 66 bytes
    let exact: &[(&[&str], &str)] = &[
        (
            &["WEBHOOK", "ADD"],
            "ERR wrong number of arguments for 'webhook|add' command",
        ),
        (
            &["WEBHOOK", "frob"],
            "ERR unknown subcommand 'frob'. Try WEBHOOK HELP.",
        ),
        (
            &[
                "WEBHOOK",
                "ADD",
                "http://127.0.0.1:9/",
                "EVENTS",
                "user.exploded",
            ],
            "ERR unknown event kind 'user.exploded'",
        ),
        (
            &[
                "WEBHOOK",
                "ADD",
                "http://127.0.0.1:9/",
                "EVENTS",
                "user.registered,nope",
            ],
            "ERR unknown event kind 'nope'",
        ),
        (&["WEBHOOK", "REPLAY", "999"], "ERR no such webhook"),
        (&["WEBHOOK", "REPLAY", "999", "1"], "ERR no such webhook"),
    ];
    for (words, want) in exact {
        assert_eq!(error_text(&call(&mut con, words)), *want, "{words:?}");
    }
    let prefixed: &[(&[&str], &str)] = &[
        (
            &["WEBHOOK", "ADD", "ftp://example.com/"],
            "ERR invalid url: ",
        ),
        (&["WEBHOOK", "ADD", "not a url"], "ERR invalid url: "),
        (&["WEBHOOK", "ADD", "http://"], "ERR invalid url: "),
        (
            &["WEBHOOK", "ADD", "http://u:p@example.com/"],
            "ERR invalid url: ",
        ),
        (
            &["WEBHOOK", "ADD", "http://example.com/#frag"],
            "ERR invalid url: ",
        ),
        (&["WEBHOOK", "ADD", &long_url], "ERR invalid url: "),
        (
            &["WEBHOOK", "ADD", "http://127.0.0.1:9/", "SECRET", "hunter2"],
            "ERR invalid secret: ",
        ),
        (
            &[
                "WEBHOOK",
                "ADD",
                "http://127.0.0.1:9/",
                "SECRET",
                "whsec_!!!!",
            ],
            "ERR invalid secret: ",
        ),
        (
            &[
                "WEBHOOK",
                "ADD",
                "http://127.0.0.1:9/",
                "SECRET",
                &short_secret,
            ],
            "ERR invalid secret: ",
        ),
        (
            &[
                "WEBHOOK",
                "ADD",
                "http://127.0.0.1:9/",
                "SECRET",
                &long_secret,
            ],
            "ERR invalid secret: ",
        ),
    ];
    for (words, want) in prefixed {
        let got = error_text(&call(&mut con, words));
        assert!(got.starts_with(want), "{words:?}: {got}");
    }
    // Texts the plan leaves open: an error, never a success.
    let errors: &[&[&str]] = &[
        &["WEBHOOK"],
        &["WEBHOOK", "DEL"],
        &["WEBHOOK", "DEL", "x"],
        &["WEBHOOK", "DEL", &id, "extra"],
        &["WEBHOOK", "LIST", "extra"],
        &["WEBHOOK", "REPLAY"],
        &["WEBHOOK", "REPLAY", "x"],
        &["WEBHOOK", "REPLAY", &id, "x"],
        &["WEBHOOK", "REPLAY", &id, "1", "2"],
        &["WEBHOOK", "DEADLETTERS"],
        &["WEBHOOK", "DEADLETTERS", "x"],
        &["WEBHOOK", "DEADLETTERS", &id, "x"],
        &["WEBHOOK", "DEADLETTERS", "999"],
        &["WEBHOOK", "ENABLE"],
        &["WEBHOOK", "ENABLE", "x"],
        &["WEBHOOK", "ENABLE", "999"],
        &["WEBHOOK", "ADD", "http://127.0.0.1:9/", "SECRET"],
        &["WEBHOOK", "ADD", "http://127.0.0.1:9/", "EVENTS"],
        &["WEBHOOK", "ADD", "http://127.0.0.1:9/", "COLOUR", "red"],
    ];
    for words in errors {
        let got = error_text(&call(&mut con, words));
        assert!(got.starts_with("ERR"), "{words:?}: {got}");
    }
    assert_eq!(call(&mut con, &["WEBHOOK", "DEL", "999"]), Value::Int(0));
    let help = match call(&mut con, &["WEBHOOK", "HELP"]) {
        Value::Array(lines) => lines.iter().map(text).collect::<Vec<_>>().join("\n"),
        other => panic!("WEBHOOK HELP: {other:?}"),
    };
    for sub in ["ADD", "DEL", "LIST", "REPLAY", "DEADLETTERS", "ENABLE"] {
        assert!(help.contains(sub), "HELP lacks {sub}:\n{help}");
    }
    // Nothing was added by the refused commands.
    assert_eq!(list(&mut con).len(), 1);
}

#[test]
fn http_routes_manage_webhooks_and_reject_bad_input() {
    let node = Node::start(&[]);
    let json_type = "Content-Type: application/json\r\n";
    let post = |path: &str, body: &str| node.p.http_request("POST", path, json_type, body);

    let (status, body) = post(
        "/webhooks",
        &format!(
            r#"{{"url":"http://127.0.0.1:9/h","secret":"{SECRET}","events":["user.registered"]}}"#
        ),
    );
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(created["secret"], json!(SECRET));
    let id = created["id"].as_i64().expect("id");

    let (status, body) = node.p.http_request("GET", "/webhooks", "", "");
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let one = &listed[0];
    let keys: Vec<&str> = one
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted_keys = LIST_KEYS.to_vec();
    sorted_keys.sort_unstable();
    let mut got_keys = keys.clone();
    got_keys.sort_unstable();
    assert_eq!(got_keys, sorted_keys, "{body}");
    assert_eq!(one["id"], json!(id));
    assert_eq!(one["url"], json!("http://127.0.0.1:9/h"));
    assert!(!body.contains(SECRET), "{body}");

    let (status, body) = node
        .p
        .http_request("GET", &format!("/webhooks/{id}"), "", "");
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&format!("/webhooks/{id}/replay"), "{}");
    assert_eq!((status, body.as_str()), (200, r#"{"requeued":0}"#));
    let (status, body) = post(&format!("/webhooks/{id}/replay"), r#"{"from_seq":1}"#);
    assert_eq!((status, body.as_str()), (200, r#"{"ok":true}"#));
    let (status, body) =
        node.p
            .http_request("GET", &format!("/webhooks/{id}/dead-letters"), "", "");
    assert_eq!((status, body.as_str()), (200, "[]"));

    // Bad input.
    for body in ["{", "[]", r#"{"url":5}"#, "{}", r#"{"url":"ftp://x/"}"#] {
        let (status, reply) = post("/webhooks", body);
        assert_eq!(status, 400, "{body}: {reply}");
        let v: serde_json::Value = serde_json::from_str(&reply).expect("JSON error");
        assert!(v["error"].is_string(), "{body}: {reply}");
    }
    for (body, needle) in [
        (
            r#"{"url":"http://127.0.0.1:9/","events":["user.exploded"]}"#,
            "user.exploded",
        ),
        (
            r#"{"url":"http://127.0.0.1:9/","secret":"hunter2"}"#,
            "secret",
        ),
        (
            r#"{"url":"http://127.0.0.1:9/","events":"user.registered"}"#,
            "",
        ),
    ] {
        let (status, reply) = post("/webhooks", body);
        assert_eq!(status, 400, "{body}: {reply}");
        assert!(reply.contains(needle), "{body}: {reply}");
    }
    let (status, reply) = node.p.http_request(
        "POST",
        "/webhooks",
        "Content-Type: text/plain\r\n",
        r#"{"url":"http://127.0.0.1:9/"}"#,
    );
    assert_eq!(status, 415, "{reply}");
    let (status, reply) = post("/webhooks/1/replay", r#"{"from_seq":"x"}"#);
    assert_eq!(status, 400, "{reply}");
    for (method, path) in [
        ("GET", "/webhooks/999"),
        ("DELETE", "/webhooks/999"),
        ("GET", "/webhooks/999/dead-letters"),
        ("POST", "/webhooks/999/replay"),
    ] {
        let (status, reply) = node.p.http_request(method, path, json_type, "{}");
        assert_eq!(status, 404, "{method} {path}: {reply}");
    }
    for (method, path) in [
        ("PUT", "/webhooks"),
        ("DELETE", "/webhooks"),
        ("PATCH", format!("/webhooks/{id}").as_str()),
        ("POST", format!("/webhooks/{id}").as_str()),
        ("GET", format!("/webhooks/{id}/replay").as_str()),
        ("DELETE", format!("/webhooks/{id}/dead-letters").as_str()),
    ] {
        let response = node.p.http(&format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ));
        assert!(
            response.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{method} {path}: {response}"
        );
        assert!(
            response.contains("\r\nAllow: "),
            "{method} {path}: {response}"
        );
        assert!(
            response.ends_with(r#"{"error":"method not allowed"}"#),
            "{method} {path}: {response}"
        );
    }

    let (status, _) = node
        .p
        .http_request("DELETE", &format!("/webhooks/{id}"), "", "");
    assert_eq!(status, 204);
    let (status, _) = node
        .p
        .http_request("DELETE", &format!("/webhooks/{id}"), "", "");
    assert_eq!(status, 404);
    let (status, body) = node.p.http_request("GET", "/webhooks", "", "");
    assert_eq!((status, body.as_str()), (200, "[]"));
}

// ---------------------------------------------------------------------------
// Visibility.

#[test]
fn list_shows_every_key_in_order_and_never_the_secret() {
    let node = Node::start(&[]);
    let mut con = node.redis();
    let (id, _) = add(
        &mut con,
        "http://127.0.0.1:9/x",
        &[
            "SECRET",
            SECRET,
            "EVENTS",
            "user.registered,user.unregistered",
        ],
    );
    let (_, generated) = add(&mut con, "http://127.0.0.1:9/y", &[]);
    let mut con3 = node.p.redis3();
    for (resp3, c) in [(false, &mut con), (true, &mut con3)] {
        let raw = format!("{:?}", call(c, &["WEBHOOK", "LIST"]));
        let endpoints = list_in(c, resp3);
        assert_eq!(endpoints.len(), 2);
        for e in &endpoints {
            assert_eq!(e.keys(), LIST_KEYS, "RESP3 {resp3}");
        }
        let e = &endpoints[0];
        assert_eq!(e.num("id"), id);
        assert_eq!(e.get("url"), "http://127.0.0.1:9/x");
        assert_eq!(e.get("events"), "user.registered,user.unregistered");
        assert_eq!((e.get("state"), e.get("reason")), ("enabled", ""));
        assert_eq!(endpoints[1].get("events"), "*");
        for secret in [SECRET, &generated, "whsec_"] {
            assert!(!raw.contains(secret), "LIST shows a secret: {raw}");
        }
    }
    let info = format!("{:?}", node.p.info("webhooks"));
    let (_, metrics) = node.p.http_request("GET", "/metrics", "", "");
    let (_, http_list) = node.p.http_request("GET", "/webhooks", "", "");
    for shown in [info, metrics, http_list, node.p.log()] {
        assert!(!shown.contains(SECRET) && !shown.contains(&generated));
    }
}

#[test]
fn info_and_metrics_count_deliveries_failures_and_dead_letters() {
    let node = Node::start(&["--webhook-retry-schedule", "50ms"]);
    let receiver = Receiver::start();
    receiver.script(Box::new(|r, _| {
        if r.path == "/bad" {
            Answer::Status(500)
        } else {
            Answer::Status(200)
        }
    }));
    let mut con = node.redis();
    let (ok, _) = add(&mut con, &receiver.url("/ok"), &[]);
    let (bad, _) = add(&mut con, &receiver.url("/bad"), &[]);
    register_many(&mut con, 0..2);
    wait_delivered(&receiver, "/ok", &[1, 2]);
    wait_endpoint(&mut con, ok, "2 delivered", |e| e.num("delivered") == 2);
    wait_endpoint(&mut con, bad, "2 dead letters", |e| {
        e.num("dead_letters") == 2 && e.num("position") == 2
    });

    let i = node.p.info("webhooks");
    let num = |k: &str| info_num(&i, k);
    assert_eq!((num("webhooks"), num("webhooks_enabled")), (2, 2), "{i:?}");
    assert_eq!(
        (
            num("webhook_deliveries"),
            num("webhook_failures"),
            num("webhook_dead_letters")
        ),
        (2, 4, 2),
        "{i:?}"
    );
    assert_eq!(
        i.get(&format!("webhook{ok}")).map(String::as_str),
        Some("state=enabled,delivered=2,failed=0,retrying=0,lag=0,last_status=200"),
        "{i:?}"
    );
    assert_eq!(
        i.get(&format!("webhook{bad}")).map(String::as_str),
        Some("state=enabled,delivered=0,failed=4,retrying=0,lag=0,last_status=500"),
        "{i:?}"
    );
    let text = node.p.http_get("/metrics", "");
    for (line, want) in [
        (
            format!("userbus_webhook_delivered_total{{webhook=\"{ok}\"}}"),
            2,
        ),
        (
            format!("userbus_webhook_delivered_total{{webhook=\"{bad}\"}}"),
            0,
        ),
        (
            format!("userbus_webhook_failed_total{{webhook=\"{bad}\"}}"),
            4,
        ),
        (format!("userbus_webhook_retrying{{webhook=\"{bad}\"}}"), 0),
        (format!("userbus_webhook_lag{{webhook=\"{ok}\"}}"), 0),
        (
            format!("userbus_webhook_last_status{{webhook=\"{ok}\"}}"),
            200,
        ),
        (
            format!("userbus_webhook_last_status{{webhook=\"{bad}\"}}"),
            500,
        ),
        (
            format!("userbus_webhook_dead_letters{{webhook=\"{bad}\"}}"),
            2,
        ),
        ("userbus_webhooks".to_string(), 2),
    ] {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{line} ")))
            .unwrap_or_else(|| panic!("no {line} in /metrics:\n{text}"));
        assert_eq!(
            value.trim().parse::<f64>().ok(),
            Some(want as f64),
            "{line}"
        );
    }
}

#[test]
fn serve_help_lists_the_webhook_flags() {
    let out = common::run_userbus(&["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--webhook-retry-schedule",
        "--webhook-timeout",
        "--webhook-disable-after",
        "--webhook-allow-private",
        "--webhook-ca",
        "USERBUS_WEBHOOK_RETRY_SCHEDULE",
        "USERBUS_WEBHOOK_ALLOW_PRIVATE",
    ] {
        assert!(help.contains(flag), "no {flag} in serve --help:\n{help}");
    }
}
