//! Webhook endpoints across a failover, against a real nats-server: the primary
//! keeps each endpoint (url, secret, kinds, state, position) in the JetStream KV
//! bucket `<stream>_webhooks`; a follower promoted after the primary was killed
//! takes them in with their ids, and delivers every event the stream holds at
//! least once, in order, none skipped, signed with the same secret. An endpoint
//! deleted before the failover stays deleted. INFO nats and `/metrics` show the
//! bucket's writer.
//!
//! Without nats-server these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`.
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::TestServer;
use common::nats::{NatsServer, NatsTestClient, StoredMsg, nats_available};
use common::process::UserbusProcess;
use common::reply::{call, error_text, int, pairs, promote, register, text, wait_applied};
use common::webhook::{Answer, Received, Receiver, verify_signature};
use redis::Value;
use serde_json::json;

/// How long a delivery, a put or a promotion may take.
const WAIT: Duration = Duration::from_secs(30);
/// The bucket of the default stream `USERBUS`.
const BUCKET: &str = "USERBUS_webhooks";
/// A secret of 24 bytes (`whsec_` + base64).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The flags of both nodes: NATS, receivers on loopback, and a first retry far
/// enough away that a failed event is still the next one when the primary dies.
fn args(url: &str) -> Vec<String> {
    [
        "--nats",
        url,
        "--durability",
        "normal",
        "--webhook-allow-private",
        "--webhook-retry-schedule",
        "30s",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn start(db: &std::path::Path, args: &[String], follow: bool) -> UserbusProcess {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    if follow {
        args.push("--follow");
    }
    UserbusProcess::start_with_http(db, &args)
}

/// `WEBHOOK ADD url opts...`: the id.
fn add(con: &mut redis::Connection, url: &str, opts: &[&str]) -> i64 {
    let mut words = vec!["WEBHOOK", "ADD", url];
    words.extend_from_slice(opts);
    let reply = call(con, &words);
    let fields = pairs(&reply, false);
    assert_eq!(text(&fields[0].0), "id", "WEBHOOK ADD: {reply:?}");
    int(&fields[0].1)
}

/// `WEBHOOK LIST`: per endpoint, its fields as text.
fn list(con: &mut redis::Connection) -> Vec<BTreeMap<String, String>> {
    match call(con, &["WEBHOOK", "LIST"]) {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                pairs(v, false)
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::Int(n) => n.to_string(),
                            other => text(other),
                        };
                        (text(k), v)
                    })
                    .collect()
            })
            .collect(),
        other => panic!("WEBHOOK LIST: {other:?}"),
    }
}

/// The last message on `key` in the bucket; `None` when there is none.
fn kv_msg(client: &mut NatsTestClient, key: i64) -> Option<StoredMsg> {
    client.kv_last(BUCKET, &key.to_string())
}

/// Polls until the bucket's stream exists. nats-server 2.9.10 can crash on a
/// MSG.GET that races the stream's creation, so keys are read only after this.
fn wait_bucket(client: &mut NatsTestClient) {
    let deadline = Instant::now() + WAIT;
    loop {
        let info = client.try_api(
            &format!("$JS.API.STREAM.INFO.KV_{BUCKET}"),
            &json!({}),
            Duration::from_secs(2),
        );
        if info.as_ref().is_ok_and(|i| i.get("error").is_none()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no bucket after {WAIT:?}: {info:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the bucket until `key`'s last message satisfies `done`; returns it.
fn wait_kv(
    client: &mut NatsTestClient,
    key: i64,
    what: &str,
    done: impl Fn(&StoredMsg) -> bool,
) -> StoredMsg {
    client.wait_kv(BUCKET, &key.to_string(), WAIT, what, done)
}

/// The node that sent `r`: its `webhook-id` without the `_<seq>` at its end.
fn sender(r: &Received) -> String {
    let id = r.webhook_id();
    id.rsplit_once('_').map_or(id, |(s, _)| s).to_string()
}

/// The seqs of the 2xx-answered requests on `path`.
fn delivered(received: &[Received], path: &str) -> Vec<i64> {
    received
        .iter()
        .filter(|r| r.path == path && r.succeeded())
        .map(Received::seq)
        .collect()
}

#[test]
fn a_promoted_follower_delivers_from_where_the_killed_primary_stopped() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let args = args(&nats.url());
    let mut primary = start(&dir.path().join("a.db"), &args, false);
    let follower = start(&dir.path().join("b.db"), &args, true);
    let receiver = Receiver::start();
    // While `failing`, events after 10 are answered 503: the primary dies with
    // them undelivered, waiting for their retry.
    let failing = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&failing);
    receiver.script(Box::new(move |r, _| {
        if flag.load(Ordering::SeqCst) && r.seq() > 10 {
            Answer::Status(503)
        } else {
            Answer::Status(200)
        }
    }));
    let mut p = primary.redis();
    let id = add(&mut p, &receiver.url("/hook"), &["SECRET", SECRET]);
    let gone = add(&mut p, &receiver.url("/gone"), &[]);
    assert_eq!(
        call(&mut p, &["WEBHOOK", "DEL", &gone.to_string()]),
        Value::Int(1)
    );
    for i in 1..=10 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    receiver.wait_until("events 1 to 10", WAIT, |r| {
        delivered(r, "/hook").len() >= 10
    });
    failing.store(true, Ordering::SeqCst);
    for i in 11..=15 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    receiver.wait_until("an attempt at event 11", WAIT, |r| {
        r.iter().any(|x| x.path == "/hook" && x.seq() == 11)
    });
    primary.wait_relayed();
    follower.wait_applied(15);
    let mut f = follower.redis();
    let refused = call(
        &mut f,
        &["WEBHOOK", "ADD", &receiver.url("/f"), "SECRET", SECRET],
    );
    assert!(error_text(&refused).starts_with("READONLY"), "{refused:?}");

    primary.kill9();
    failing.store(false, Ordering::SeqCst);
    promote(&mut f);
    for i in 16..=20 {
        assert_eq!(register(&mut f, &format!("u{i}"), &[]), i);
    }
    let got = receiver.wait_until("every event delivered", WAIT, |r| {
        let done = delivered(r, "/hook");
        (1..=20).all(|s| done.contains(&s))
    });
    // In order per node: each sends an event only once the one before is done
    // (a retry repeats a seq, a failover goes back to the bucket's position).
    let mut by_node: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in got.iter().filter(|r| r.path == "/hook") {
        by_node.entry(sender(r)).or_default().push(r.seq());
    }
    assert_eq!(by_node.len(), 2, "{by_node:?}");
    for seqs in by_node.values() {
        assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{by_node:?}");
    }
    // The promoted node signs with the endpoint's secret.
    let old = sender(&got[0]);
    for r in got.iter().filter(|r| sender(r) != old) {
        verify_signature(SECRET, r).expect("a valid signature");
    }
    assert!(receiver.received_on("/gone").is_empty());

    // The last outcome is stored in the tick after the receiver answered.
    let deadline = Instant::now() + WAIT;
    let endpoints = loop {
        let endpoints = list(&mut f);
        if endpoints.iter().any(|e| e["position"] == "20") || Instant::now() >= deadline {
            break endpoints;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0]["id"], id.to_string());
    assert_eq!(endpoints[0]["url"], receiver.url("/hook"));
    assert_eq!(endpoints[0]["state"], "enabled");
    assert_eq!(endpoints[0]["position"], "20");
    // No id the old primary gave out is given out again.
    let next = add(&mut f, &receiver.url("/next"), &[]);
    assert!(next > gone, "{next} after {gone}");
    // The promoted node writes the bucket from now on.
    let mut client = nats.client();
    wait_bucket(&mut client);
    wait_kv(&mut client, next, "the new endpoint", |m| {
        m.json()["url"] == receiver.url("/next")
    });
}

#[test]
fn the_bucket_holds_each_endpoint_its_state_and_a_delete_marker() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut primary = start(&dir.path().join("a.db"), &args(&nats.url()), false);
    let receiver = Receiver::start();
    // `/dead` answers 410 Gone (which disables its endpoint) while `gone`.
    let gone = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&gone);
    receiver.script(Box::new(move |r, _| {
        if r.path == "/dead" && flag.load(Ordering::SeqCst) {
            Answer::Status(410)
        } else {
            Answer::Status(200)
        }
    }));
    let mut p = primary.redis();
    let id = add(
        &mut p,
        &receiver.url("/hook"),
        &["SECRET", SECRET, "EVENTS", "user.registered"],
    );
    for i in 1..=3 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    receiver.wait_until("3 deliveries", WAIT, |r| delivered(r, "/hook").len() >= 3);
    let mut client = nats.client();
    wait_bucket(&mut client);
    let m = wait_kv(&mut client, id, "position 3", |m| m.json()["position"] == 3);
    assert_eq!(
        m.json(),
        json!({
            "id": id,
            "url": receiver.url("/hook"),
            "secret": SECRET,
            "events": "user.registered",
            "disabled": null,
            "position": 3,
            "requeued": [],
        })
    );
    let config = client.stream_info(&format!("KV_{BUCKET}"))["config"].clone();
    assert_eq!(config["subjects"], json!([format!("$KV.{BUCKET}.>")]));
    assert_eq!(config["max_msgs_per_subject"], 1);
    assert_eq!(config["num_replicas"], 1);

    // A disable goes to the bucket at once, with its reason.
    let dead = add(&mut p, &receiver.url("/dead"), &[]);
    register(&mut p, "u4", &[]);
    let m = wait_kv(&mut client, dead, "disabled", |m| {
        m.json()["disabled"].is_string()
    });
    let why = m.json()["disabled"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(why.contains("410"), "{why}");
    // ENABLE too.
    gone.store(false, Ordering::SeqCst);
    assert_eq!(
        call(&mut p, &["WEBHOOK", "ENABLE", &dead.to_string()]),
        Value::Okay
    );
    wait_kv(&mut client, dead, "enabled", |m| {
        m.json()["disabled"].is_null()
    });

    // DEL leaves a delete marker, as `nats kv del` does.
    assert_eq!(
        call(&mut p, &["WEBHOOK", "DEL", &id.to_string()]),
        Value::Int(1)
    );
    let m = wait_kv(&mut client, id, "a delete marker", |m| {
        m.headers.get("KV-Operation").is_some()
    });
    assert_eq!(m.headers.get("KV-Operation"), Some("DEL"));

    let info = primary.wait_info("nats", "the writer settled", |i| {
        i.get("nats_webhook_kv_pending").map(String::as_str) == Some("0")
    });
    assert_eq!(info["nats_webhook_kv_bucket"], BUCKET);
    assert_eq!(info["nats_webhook_kv_state"], "ready");
    assert_eq!(info["nats_webhook_kv_last_error"], "");
    let puts: u64 = info["nats_webhook_kv_puts"].parse().expect("puts");
    assert!(puts >= 4, "{info:?}");
    let metrics = primary.http_get("/metrics", "");
    assert!(
        metrics.contains("\nuserbus_nats_webhook_kv_ready 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nuserbus_nats_webhook_kv_pending 0\n"));

    // A clean stop puts the last position without waiting for the interval.
    register(&mut p, "u5", &[]);
    receiver.wait_until("event 5", WAIT, |r| delivered(r, "/dead").contains(&5));
    drop(p);
    primary.stop();
    let m = kv_msg(&mut client, dead).expect("the key");
    assert_eq!(m.json()["position"], json!(5), "{}", m.text());
}

#[test]
fn a_node_fenced_right_after_its_promotion_skips_no_event_of_the_stream() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let args = args(&nats.url());
    let old = start(&dir.path().join("old.db"), &args, false);
    let new = start(&dir.path().join("new.db"), &args, true);
    let receiver = Receiver::start();
    let mut o = old.redis();
    add(&mut o, &receiver.url("/hook"), &["SECRET", SECRET]);
    for i in 1..=5 {
        register(&mut o, &format!("u{i}"), &[]);
    }
    receiver.wait_until("events 1 to 5", WAIT, |r| delivered(r, "/hook").len() >= 5);
    old.wait_relayed();
    new.wait_applied(5);
    promote(&mut new.redis());
    // The old primary's write lands in the stream first, as a publish in flight
    // when it died would. The promoted node meets it (its relay's first look at
    // the stream, or the refused publish of its own seq 6, committed locally and
    // perhaps delivered): it is fenced, discards its seq 6, applies the old
    // primary's and promotes itself again.
    register(&mut o, "late", &[]);
    old.wait_relayed();
    let mut n = new.redis();
    let _ = call(&mut n, &["REGISTER", "refused"]);
    new.wait_line(&["promoting again"], WAIT);
    let deadline = Instant::now() + WAIT;
    let seq = loop {
        match call(&mut n, &["REGISTER", "accepted"]) {
            Value::Int(seq) => break seq,
            other => assert!(Instant::now() < deadline, "{other:?}\n{}", new.log()),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // 7, or 8 when the node took 'refused' once promoted again.
    assert!((7..=8).contains(&seq), "{seq}");
    // Every event the stream holds reached the receiver, 'late' at seq 6: from
    // the old primary (still delivering until it is fenced in turn; the bucket
    // then holds its position) or from the promoted node, whose own seq 6 was
    // discarded and its position moved back.
    let name_of = |r: &Received| r.json()["name"].as_str().unwrap_or_default().to_string();
    let old_writer = sender(&receiver.received()[0]);
    let got = receiver.wait_until("every event, 'late' at 6", WAIT, |rs| {
        let done = delivered(rs, "/hook");
        (1..=seq).all(|s| done.contains(&s))
            && rs
                .iter()
                .any(|r| r.succeeded() && r.seq() == 6 && name_of(r) == "late")
    });
    let accepted = got
        .iter()
        .find(|r| r.succeeded() && r.seq() == seq)
        .expect("the last event");
    assert_ne!(
        sender(accepted),
        old_writer,
        "the promoted node delivers its own"
    );
    assert_eq!(name_of(accepted), "accepted");
}

/// An in-process server on `url` (following when `follow`) with the durable
/// handler `mail` reporting each event's seq.
fn node_with_handler(url: &str, follow: bool) -> (TestServer, std::sync::mpsc::Receiver<i64>) {
    let allow_private = |c: &mut userbus::Config| c.webhook_allow_private = true;
    TestServer::start_nats_handler(url, follow, "mail", allow_private, |e| e.seq)
}

#[test]
fn a_promotion_reads_the_handler_offsets_then_the_webhook_endpoints() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let (primary, _primary_seqs) = node_with_handler(&url, false);
    let (follower, follower_seqs) = node_with_handler(&url, true);
    let receiver = Receiver::start();
    let mut p = primary.redis();
    let id = add(&mut p, &receiver.url("/hook"), &["SECRET", SECRET]);
    for i in 1..=3 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    receiver.wait_until("events 1 to 3", WAIT, |r| delivered(r, "/hook").len() >= 3);
    let mut f = follower.redis();
    wait_applied(&mut f, 3);
    drop(p);
    // A clean stop puts the last offset and position.
    primary.stop();
    promote(&mut f);
    assert_eq!(register(&mut f, "u4", &[]), 4);
    assert_eq!(
        follower_seqs
            .recv_timeout(WAIT)
            .expect("the handler resumes"),
        4
    );
    let got = receiver.wait_until("event 4", WAIT, |r| delivered(r, "/hook").contains(&4));
    let from_promoted: Vec<i64> = got
        .iter()
        .filter(|r| sender(r) != sender(&got[0]))
        .map(Received::seq)
        .collect();
    assert_eq!(from_promoted, [4], "nothing delivered before it again");
    let endpoints = list(&mut f);
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0]["id"], id.to_string());
}
