//! Durable handler offsets in the JetStream KV bucket `<stream>_handlers`, against
//! a real nats-server: the primary puts each handler's offset there (the bucket
//! is a KV bucket nats clients read, nats-py included); a follower promoted after
//! the primary stopped resumes its handlers after the bucket's offsets, never
//! before them and never past what it applied (at-least-once). INFO nats and
//! `/metrics` show the bucket's writer: its state, puts, pending keys and a
//! standing error.
//!
//! Without nats-server these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`.
mod common;

use std::process::Command;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::nats::{NatsCluster, NatsServer, NatsTestClient, nats_available, nats_py_available};
use common::process::UserbusProcess;
use common::reply::{info_num, promote, register, wait_applied, wait_info};
use common::{TestServer, free_port};
use serde_json::json;
use userbus::Durability;

/// How long catching up, storing an offset or promoting may take.
const WAIT: Duration = Duration::from_secs(30);
/// The bucket of the default stream `USERBUS`.
const BUCKET: &str = "USERBUS_handlers";

/// The last value of `key` in the bucket, read as `nats kv get` reads it; `None`
/// when the key or the bucket is missing (a cluster does not answer a MSG.GET
/// from a missing stream).
fn kv_get(client: &mut NatsTestClient, key: &str) -> Option<String> {
    client.kv_last(BUCKET, key).map(|m| m.text())
}

/// Polls the bucket until `key` holds `want`.
fn wait_kv(client: &mut NatsTestClient, key: &str, want: &str) {
    client.wait_kv(BUCKET, key, WAIT, want, |m| m.text() == want);
}

/// The next `n` seqs a handler was called with.
fn recv_seqs(rx: &Receiver<i64>, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| rx.recv_timeout(WAIT).expect("a durable handler call"))
        .collect()
}

/// A server with `--nats url`, following when `follow`, with the durable
/// handler `name` reporting each event's seq.
fn node(url: &str, follow: bool, name: &'static str) -> (TestServer, Receiver<i64>) {
    TestServer::start_nats_handler(url, follow, name, |_| {}, |e| e.seq)
}

#[test]
fn offsets_reach_the_kv_bucket_and_a_promoted_follower_resumes_after_them() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    // A name with '.', ' ' and '*': its key is one token.
    let name = "mail.v1 *";
    let key = "mail=2Ev1=20=2A";
    let (primary, primary_seqs) = node(&url, false, name);
    let mut p = primary.redis();
    let started = Instant::now();
    for i in 1..=20 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    assert_eq!(recv_seqs(&primary_seqs, 20), (1..=20).collect::<Vec<_>>());
    let mut client = nats.client();
    wait_kv(&mut client, key, "20");
    // Once a second at most: the bucket's stream counts every put.
    let puts = client.stream_info(&format!("KV_{BUCKET}"))["state"]["last_seq"]
        .as_u64()
        .expect("last_seq");
    let most = started.elapsed().as_secs() + 2;
    assert!(
        (1..=most).contains(&puts),
        "{puts} puts for 20 events within {:?}",
        started.elapsed()
    );
    // The bucket is a KV bucket as nats clients make one.
    let config = client.stream_info(&format!("KV_{BUCKET}"))["config"].clone();
    assert_eq!(config["subjects"], json!([format!("$KV.{BUCKET}.>")]));
    assert_eq!(config["max_msgs_per_subject"], 1);
    assert_eq!(config["allow_rollup_hdrs"], true);
    assert_eq!(config["deny_delete"], true);
    assert_eq!(config["num_replicas"], 1);
    if nats_py_available() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/nats_py/kv_get.py");
        let out = Command::new("python3")
            .args([script, &url, BUCKET, key])
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "kv_get.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "20");
    }

    let (follower, follower_seqs) = node(&url, true, name);
    let mut f = follower.redis();
    wait_applied(&mut f, 20);
    for i in 21..=25 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    assert_eq!(recv_seqs(&primary_seqs, 5), (21..=25).collect::<Vec<_>>());
    wait_applied(&mut f, 25);
    assert!(
        follower_seqs.try_recv().is_err(),
        "a durable handler ran on a follower"
    );
    drop(p);
    primary.stop();
    // A clean stop puts the last offset without waiting for the interval.
    let stored: i64 = kv_get(&mut client, key)
        .expect("the key")
        .parse()
        .expect("an offset");
    assert_eq!(stored, 25);

    promote(&mut f);
    for i in 26..=28 {
        assert_eq!(register(&mut f, &format!("u{i}"), &[]), i);
    }
    // Resumes after the bucket's offset: nothing before it again, nothing
    // after it skipped.
    assert_eq!(
        recv_seqs(&follower_seqs, 3),
        ((stored + 1)..=28).collect::<Vec<_>>()
    );
    assert!(
        follower_seqs
            .recv_timeout(Duration::from_millis(300))
            .is_err()
    );
    // The promoted node puts its own offsets.
    wait_kv(&mut client, key, "28");
}

/// A primary on `url` relaying to `stream` (subjects `<prefix>.>`), with the
/// HTTP side on and the durable handler `mail`.
fn primary_with_http(url: &str, stream: &str, prefix: &str) -> TestServer {
    let (url, stream, prefix) = (url.to_string(), stream.to_string(), prefix.to_string());
    let port = free_port();
    TestServer::start_with(
        move |c| {
            c.nats = Some(url);
            c.nats_stream = stream;
            c.nats_subject_prefix = prefix;
            c.http_port = port;
        },
        |b| b.durable_handler("mail", |_| {}),
    )
}

#[test]
fn info_and_metrics_show_the_buckets_writer_and_a_standing_error() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let server = primary_with_http(&url, "USERBUS", "userbus");
    let mut c = server.redis();
    for i in 1..=3 {
        register(&mut c, &format!("u{i}"), &[]);
    }
    let i = wait_info(&mut c, "nats", WAIT, "offset 3 in the bucket", |i| {
        i.get("nats_handler_offsets_state").map(String::as_str) == Some("ready")
            && info_num(i, "nats_handler_offsets_pending") == 0
            && info_num(i, "nats_handler_offsets_puts") >= 1
    });
    assert_eq!(i["nats_handler_offsets_bucket"], BUCKET);
    assert_eq!(i["nats_handler_offsets_last_error"], "");
    wait_kv(&mut nats.client(), "mail", "3");
    let metrics = server.http_get("/metrics", "");
    for line in [
        "userbus_nats_handler_offsets_ready 1",
        "userbus_nats_handler_offsets_failing 0",
        "userbus_nats_handler_offsets_pending 0",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("# TYPE userbus_nats_handler_offsets_puts_total counter"),
        "{metrics}"
    );

    // A stream that holds the bucket's name but is no bucket: the offsets
    // stay local, and INFO and /metrics say why.
    nats.client()
        .create_stream("KV_OTHER_handlers", &["elsewhere.>"], 1);
    let other = primary_with_http(&url, "OTHER", "other");
    let mut c = other.redis();
    register(&mut c, "v1", &[]);
    let i = wait_info(&mut c, "nats", WAIT, "the bucket found unusable", |i| {
        i.get("nats_handler_offsets_state").map(String::as_str) == Some("unusable")
    });
    assert_eq!(i["nats_handler_offsets_bucket"], "OTHER_handlers");
    assert!(
        i["nats_handler_offsets_last_error"].contains("no KV bucket 'OTHER_handlers'"),
        "{i:?}"
    );
    assert_eq!(info_num(&i, "nats_handler_offsets_pending"), 1);
    let metrics = other.http_get("/metrics", "");
    for line in [
        "userbus_nats_handler_offsets_ready 0",
        "userbus_nats_handler_offsets_failing 1",
        "userbus_nats_handler_offsets_pending 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
}

#[test]
fn a_promotion_takes_the_buckets_offset_over_its_own_never_past_what_it_applied() {
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = UserbusProcess::start(&dir.path().join("p.db"), &["--nats", url.as_str()]);
    let mut p = primary.redis();
    for i in 1..=5 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    // What an old primary left: "mail" confirmed up to 2 (it may have run 3 and
    // 4 within its last interval), "ahead" past the stream's end (a primary
    // whose handler ran on events the stream never got), no key for "fresh".
    let mut client = nats.client();
    client.api(
        &format!("$JS.API.STREAM.CREATE.KV_{BUCKET}"),
        &json!({
            "name": format!("KV_{BUCKET}"), "subjects": [format!("$KV.{BUCKET}.>")],
            "max_msgs_per_subject": 1, "allow_rollup_hdrs": true, "deny_delete": true,
            "discard": "new", "storage": "file", "num_replicas": 1,
        }),
    );
    for (key, value) in [("mail", "2"), ("ahead", "999")] {
        let ack = client
            .js_publish(&format!("$KV.{BUCKET}.{key}"), &[], value.as_bytes())
            .expect("put");
        assert!(ack.get("error").is_none(), "{ack}");
    }
    let names = ["mail", "ahead", "fresh"];
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in names {
        let (tx, rx) = channel::<i64>();
        txs.push(tx);
        rxs.push(rx);
    }
    let url2 = url.clone();
    let follower = TestServer::start_with(
        move |c| {
            c.nats = Some(url2);
            c.follow = true;
        },
        move |mut b| {
            for (name, tx) in names.into_iter().zip(txs) {
                b = b.durable_handler(name, move |e| {
                    let _ = tx.send(e.seq);
                });
            }
            b
        },
    );
    let mut f = follower.redis();
    wait_applied(&mut f, 5);
    drop(p);
    drop(primary);
    promote(&mut f);
    assert_eq!(register(&mut f, "u6", &[]), 6);
    assert_eq!(recv_seqs(&rxs[0], 4), [3, 4, 5, 6], "mail resumes after 2");
    assert_eq!(recv_seqs(&rxs[1], 1), [6], "ahead resumes after 5");
    assert_eq!(recv_seqs(&rxs[2], 6), [1, 2, 3, 4, 5, 6], "fresh keeps 0");
    for rx in &rxs {
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    }
    wait_kv(&mut client, "fresh", "6");
    wait_kv(&mut client, "ahead", "6");
}

#[test]
fn a_promotion_on_a_cluster_without_a_bucket_keeps_local_offsets_and_creates_it_r3() {
    if !nats_available() {
        return;
    }
    let cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let dir = tempfile::tempdir().expect("tempdir");
    // A primary without durable handlers: no bucket.
    let primary = UserbusProcess::start(
        &dir.path().join("p.db"),
        &["--nats", urls.as_str(), "--nats-replicas", "3"],
    );
    let mut p = primary.redis();
    for i in 1..=3 {
        register(&mut p, &format!("u{i}"), &[]);
    }
    let replicated = |c: &mut userbus::Config| {
        c.nats_replicas = 3;
        c.durability = Durability::Replicated;
    };
    let (follower, rx) =
        TestServer::start_nats_handler(&urls, true, "welcome-mail", replicated, |e| e.seq);
    let mut f = follower.redis();
    wait_applied(&mut f, 3);
    drop(p);
    drop(primary);
    // A clustered JetStream does not answer a MSG.GET from a missing stream: the
    // promotion asks whether the bucket exists first, and does not wait.
    let started = Instant::now();
    promote(&mut f);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(recv_seqs(&rx, 3), [1, 2, 3], "the local offset, 0, is kept");
    for i in 4..=5 {
        assert_eq!(register(&mut f, &format!("u{i}"), &[]), i);
    }
    assert_eq!(recv_seqs(&rx, 2), [4, 5]);
    let mut client = cluster.any_client();
    wait_kv(&mut client, "welcome-mail", "5");
    let info = client.stream_info(&format!("KV_{BUCKET}"));
    assert_eq!(info["config"]["num_replicas"], 3, "{info}");
}
