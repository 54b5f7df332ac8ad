//! Followers (`--follow`), promotion (`REPLICAOF NO ONE`) and fencing against
//! real nats-server processes: a follower catches up from an empty database and
//! follows live writes with the primary's seqs and ids; it refuses writes
//! (READONLY, HTTP 503) and reports INFO replication; a promoted follower's writes
//! continue the stream; an old primary restarted after a promotion turns follower
//! and ends as a prefix of the stream.
//!
//! Without nats-server these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`.
mod common;

use std::time::{Duration, Instant};

use common::nats::{NatsCluster, NatsServer, nats_available};
use common::process::UserbusProcess;
use common::reply::{self, info_num};
use common::stream::{Entry, all_events, wait_parked_on};
use redis::Value;
use tempfile::TempDir;

/// How long a promotion, a push, a blocked read or a callback may take.
const WAIT: Duration = Duration::from_secs(30);

/// A nats-server node and a directory for databases; `None` (skip) without
/// nats-server.
fn single_node() -> Option<(NatsServer, TempDir)> {
    nats_available().then(|| (NatsServer::start(), tempfile::tempdir().expect("tempdir")))
}

/// A primary relaying to `url`, on `p.db` in `dir`.
fn start_primary(dir: &TempDir, url: &str) -> UserbusProcess {
    UserbusProcess::start(&dir.path().join("p.db"), &["--nats", url])
}

/// A follower of `url` on `f.db` in `dir`, once it applied up to `seq`.
fn start_follower(dir: &TempDir, url: &str, seq: i64) -> UserbusProcess {
    let f = UserbusProcess::start(&dir.path().join("f.db"), &["--nats", url, "--follow"]);
    f.wait_applied(seq);
    f
}

/// Waits until the follower `f` reports its link to NATS down.
fn wait_link_down(f: &UserbusProcess) {
    f.wait_info("replication", "the follower to lose NATS", |i| {
        i.get("master_link_status").map(String::as_str) == Some("down")
    });
}

fn register(p: &UserbusProcess, name: &str) -> i64 {
    reply::register(&mut p.redis(), name, &[("plan", "pro")])
}

fn unregister(p: &UserbusProcess, name: &str) -> i64 {
    reply::unregister(&mut p.redis(), name)
}

/// The event log, every entry of `events`.
fn log(p: &UserbusProcess) -> Vec<Entry> {
    all_events(&mut p.redis())
}

/// LOOKUP's reply; `None` for nil.
fn lookup(p: &UserbusProcess, name: &str) -> Option<Value> {
    let v = reply::lookup(&mut p.redis(), name);
    (v != Value::Nil).then_some(v)
}

/// `REPLICAOF NO ONE` on `p`, with a bound on how long it may take.
fn promote(p: &UserbusProcess) -> redis::RedisResult<String> {
    let mut c = p.redis();
    c.set_read_timeout(Some(WAIT)).unwrap();
    redis::cmd("REPLICAOF").arg("NO").arg("ONE").query(&mut c)
}

#[test]
fn a_follower_catches_up_from_empty_then_follows_live_writes_with_the_same_ids() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let primary = start_primary(&dir, &url);
    for i in 0..50 {
        register(&primary, &format!("early{i}"));
    }
    for i in 0..10 {
        assert_eq!(unregister(&primary, &format!("early{i}")), 1);
    }
    primary.wait_relayed();
    let follower = start_follower(&dir, &url, 60);
    // Live: writes on the primary reach the follower, one at a time and in bulk.
    let mut sub = follower.redis();
    sub.set_read_timeout(Some(WAIT)).unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("user.registered").unwrap();
    let id = register(&primary, "live");
    let msg = pubsub.get_message().expect("a push on the follower");
    let payload: String = msg.get_payload().unwrap();
    let pushed: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(
        (pushed["name"].as_str(), pushed["id"].as_i64()),
        (Some("live"), Some(id))
    );
    for i in 0..500 {
        register(&primary, &format!("bulk{i}"));
    }
    let last = primary.last_seq();
    let i = follower.wait_applied(last);
    assert_eq!(info_num(&i, "userbus_lag_events"), 0, "{i:?}");
    assert_eq!(i["role"], "slave");
    // The same log, seqs and users on both.
    assert_eq!(log(&follower), log(&primary));
    for name in ["early0", "early20", "live", "bulk499"] {
        assert_eq!(lookup(&follower, name), lookup(&primary, name), "{name}");
    }
    let count =
        |p: &UserbusProcess| -> i64 { redis::cmd("USERCOUNT").query(&mut p.redis()).unwrap() };
    assert_eq!(count(&follower), count(&primary));
    // A blocked XREAD on the follower wakes with the next applied event.
    let mut reader = follower.redis();
    reader.set_read_timeout(Some(WAIT)).unwrap();
    let _: String = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("reader")
        .query(&mut reader)
        .unwrap();
    let waiter = std::thread::spawn(move || {
        let got: redis::Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(20_000)
            .arg("STREAMS")
            .arg("events")
            .arg("$")
            .query(&mut reader)
            .expect("XREAD");
        got
    });
    wait_parked_on(&mut follower.redis(), "reader", "xread");
    register(&primary, "wakes");
    let got = waiter.join().unwrap();
    assert!(format!("{got:?}").contains("wakes"), "{got:?}");
}

#[test]
fn a_follower_refuses_writes_and_reports_info_replication() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let primary = start_primary(&dir, &url);
    register(&primary, "ann");
    primary.wait_relayed();
    let follower = UserbusProcess::start_with_http(
        &dir.path().join("f.db"),
        &["--nats", url.as_str(), "--follow"],
    );
    let i = follower.wait_applied(1);
    for field in [
        "role",
        "userbus_follow_state",
        "userbus_follow_stream",
        "userbus_applied_seq",
        "userbus_stream_last_seq",
        "userbus_lag_events",
        "userbus_lag_seconds",
    ] {
        assert!(i.contains_key(field), "{field} missing: {i:?}");
    }
    assert_eq!(i["role"], "slave");
    assert_eq!(i["userbus_follow_stream"], "USERBUS");
    assert_eq!(primary.info("replication")["role"], "master");
    let mut c = follower.redis();
    for cmd in [
        redis::cmd("REGISTER").arg("bob").clone(),
        redis::cmd("UNREGISTER").arg("ann").clone(),
    ] {
        let err = cmd.query::<i64>(&mut c).expect_err("a write on a follower");
        assert_eq!(err.code(), Some("READONLY"), "{err}");
        assert!(
            err.to_string()
                .contains("You can't write against a read only replica."),
            "{err}"
        );
    }
    // Reads and node-local consumer groups work.
    assert!(lookup(&follower, "ann").is_some());
    let created: String = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("events")
        .arg("g")
        .arg("0")
        .query(&mut c)
        .expect("XGROUP CREATE on a follower");
    assert_eq!(created, "OK");
    // REPLICAOF host port is refused, naming NATS.
    let err = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg("6379")
        .query::<String>(&mut c)
        .expect_err("REPLICAOF host port");
    assert!(err.to_string().contains("--follow"), "{err}");
    // HTTP: reads answer, writes get 503 with a JSON error.
    let get = follower.http("GET /users/ann HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(get.starts_with("HTTP/1.1 200"), "{get}");
    let body = r#"{"name":"carl"}"#;
    let post = follower.http(&format!(
        "POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    assert!(post.starts_with("HTTP/1.1 503"), "{post}");
    assert!(post.contains("{\"error\":\"read only replica"), "{post}");
    let delete =
        follower.http("DELETE /users/ann HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(delete.starts_with("HTTP/1.1 503"), "{delete}");
    // Metrics.
    let metrics = follower.http("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(metrics.contains("userbus_replica_follower 1"), "{metrics}");
    assert!(
        metrics.contains("userbus_replica_applied_seq 1"),
        "{metrics}"
    );
    // On a primary, REPLICAOF NO ONE is +OK at once.
    assert_eq!(promote(&primary).unwrap(), "OK");
}

#[test]
fn follow_without_nats_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_userbus(&[
        "serve",
        "--port",
        "0",
        "--http-port",
        "0",
        "--db",
        dir.path().join("x.db").to_str().unwrap(),
        "--follow",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--follow needs --nats"), "{stderr}");
}

#[test]
fn a_promoted_follower_continues_the_stream_and_the_old_primary_turns_follower() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let pdb = dir.path().join("p.db");
    let mut primary = UserbusProcess::start(&pdb, &["--nats", url.as_str()]);
    for i in 0..20 {
        register(&primary, &format!("a{i}"));
    }
    unregister(&primary, "a3");
    primary.wait_relayed();
    let follower = start_follower(&dir, &url, 21);
    // A clean stop stores the relay's position, so what is discarded below is
    // exactly the tail written after it.
    primary.stop();
    // Writes on the old primary's database that never reached the stream: made
    // by a primary without NATS (the same database); then the old primary comes
    // back with --nats after the promotion.
    let mut offline = UserbusProcess::start(&pdb, &[]);
    for i in 0..5 {
        register(&offline, &format!("lost{i}"));
    }
    unregister(&offline, "a4");
    offline.kill9();

    let started = Instant::now();
    assert_eq!(promote(&follower).unwrap(), "OK");
    println!("promotion took {:?}", started.elapsed());
    assert_eq!(follower.info("replication")["role"], "master");
    let id = register(&follower, "after");
    assert!(id > 20, "{id}");
    follower.wait_relayed();
    // The stream continues with the next seqs, chained to the old primary's.
    let msgs = nats.client().all_msgs("USERBUS");
    assert_eq!(msgs.len(), 22);
    let writer = follower.info("nats")["nats_writer"].clone();
    assert_eq!(msgs[21].seq, 22);
    assert_eq!(msgs[21].msg_id(), Some(format!("{writer}-22").as_str()));
    assert_ne!(
        msgs[20].msg_id().unwrap().split('-').next(),
        Some(writer.as_str())
    );

    // The old primary restarts as primary: the stream fences it, it discards
    // what never reached the stream and follows.
    let old = UserbusProcess::start(&pdb, &["--nats", url.as_str()]);
    let i = old.wait_info("replication", "the old primary to turn follower", |i| {
        i.get("role").map(String::as_str) == Some("slave")
            && info_num(i, "userbus_applied_seq") >= 22
    });
    assert_eq!(info_num(&i, "userbus_fenced"), 1, "{i:?}");
    assert_eq!(info_num(&i, "userbus_discarded_events"), 6, "{i:?}");
    let discarded = old.lines_with("discarded 6 local events");
    assert_eq!(discarded.len(), 1, "{}", old.log());
    assert!(discarded[0].contains("seq 22 to 27"), "{discarded:?}");
    assert_eq!(
        log(&old),
        log(&follower),
        "the old primary is a prefix of the stream"
    );
    assert!(lookup(&old, "lost0").is_none());
    assert!(
        lookup(&old, "a4").is_some(),
        "an undone unregistration puts the user back"
    );
    assert_eq!(lookup(&old, "after"), lookup(&follower, "after"));
    let err = redis::cmd("REGISTER")
        .arg("x")
        .query::<i64>(&mut old.redis())
        .expect_err("the fenced node is read-only");
    assert_eq!(err.code(), Some("READONLY"));
    // It keeps following.
    register(&follower, "later");
    old.wait_applied(23);
    assert_eq!(log(&old), log(&follower));
}

#[test]
fn promotion_fails_with_an_error_when_nats_is_gone() {
    let Some((mut nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let primary = start_primary(&dir, &url);
    register(&primary, "ann");
    primary.wait_relayed();
    let follower = start_follower(&dir, &url, 1);
    nats.stop();
    wait_link_down(&follower);
    let err = promote(&follower).expect_err("promotion without NATS");
    assert!(err.to_string().contains("promotion failed"), "{err}");
    assert_eq!(follower.info("replication")["role"], "slave");
    // NATS back: the promotion goes through.
    nats.restart();
    assert_eq!(promote(&follower).unwrap(), "OK");
    assert!(register(&follower, "bob") > 0);
}

#[test]
fn the_replica_error_of_a_missing_stream_goes_once_the_stream_appears() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let follower = UserbusProcess::start(&dir.path().join("f.db"), &["--nats", &url, "--follow"]);
    follower.wait_info("replication", "the follower to wait for the stream", |i| {
        i.get("userbus_replica_last_error").map(String::as_str) == Some("stream missing")
    });
    let primary = start_primary(&dir, &url);
    register(&primary, "ann");
    let i = follower.wait_applied(1);
    assert_eq!(i["userbus_replica_last_error"], "", "{i:?}");
    assert_eq!(i["master_link_status"], "up", "{i:?}");
}

#[test]
fn a_short_promotion_timeout_fails_the_promotion_in_time_when_nats_is_unreachable() {
    // No nats-server needed: nothing listens on the port.
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("nats://127.0.0.1:{}", common::free_port());
    let follower = UserbusProcess::start(
        &dir.path().join("f.db"),
        &["--nats", &url, "--follow", "--promotion-timeout", "300ms"],
    );
    let started = Instant::now();
    let err = promote(&follower).expect_err("promotion without NATS");
    let took = started.elapsed();
    let text = err.to_string();
    assert!(
        text.contains("promotion failed")
            && text.contains("the stream's last seq was not learnt within 300ms"),
        "{text}"
    );
    assert!(
        took < Duration::from_secs(5),
        "REPLICAOF NO ONE took {took:?}"
    );
    assert_eq!(follower.info("replication")["role"], "slave");
    let mut c = follower.redis();
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("promotion-timeout")
        .query(&mut c)
        .expect("CONFIG GET");
    assert_eq!(cfg, ["promotion-timeout", "300ms"]);
}

#[test]
fn a_trimmed_stream_and_no_snapshot_is_an_error_at_start() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let primary = start_primary(&dir, &url);
    for i in 0..5 {
        register(&primary, &format!("u{i}"));
    }
    primary.wait_relayed();
    // Purge everything below seq 4.
    let mut c = nats.client();
    c.api(
        "$JS.API.STREAM.PURGE.USERBUS",
        &serde_json::json!({ "seq": 4 }),
    );
    let out = common::userbus_command()
        .args(["serve", "--port", "0", "--http-port", "0", "--db"])
        .arg(dir.path().join("f.db"))
        .args(["--nats", url.as_str(), "--follow"])
        .output()
        .expect("run userbus");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("starts at seq 4") && stderr.contains("snapshot"),
        "{stderr}"
    );
}

#[test]
fn a_follower_promoted_on_a_cluster_after_the_primary_is_killed_keeps_every_relayed_write() {
    if !nats_available() {
        return;
    }
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    let args = ["--nats", urls.as_str(), "--nats-replicas", "3"];
    let mut primary = UserbusProcess::start(&dir.path().join("p.db"), &args);
    let follower = UserbusProcess::start(
        &dir.path().join("f.db"),
        &[&args[..], &["--follow"]].concat(),
    );
    for i in 0..200 {
        register(&primary, &format!("c{i}"));
    }
    primary.wait_relayed();
    let relayed = primary.last_seq();
    primary.kill9();
    assert_eq!(promote(&follower).unwrap(), "OK");
    assert_eq!(follower.last_seq(), relayed);
    for i in 0..200 {
        assert!(lookup(&follower, &format!("c{i}")).is_some(), "c{i}");
    }
    assert!(register(&follower, "next") > 0);
    follower.wait_relayed();
    let info = cluster.any_client().stream_info("USERBUS");
    assert_eq!(info["state"]["last_seq"], relayed + 1);
}

#[test]
fn a_follower_resumes_after_nats_restarts() {
    let Some((mut nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let primary = start_primary(&dir, &url);
    register(&primary, "before");
    primary.wait_relayed();
    let follower = start_follower(&dir, &url, 1);
    nats.stop();
    wait_link_down(&follower);
    for i in 0..20 {
        register(&primary, &format!("during{i}"));
    }
    nats.restart();
    primary.wait_relayed();
    let i = follower.wait_applied(21);
    assert_eq!(i["master_link_status"], "up", "{i:?}");
    assert_eq!(log(&follower), log(&primary));
}

#[test]
fn two_primaries_one_keeps_writing_and_the_other_turns_follower() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let old = start_primary(&dir, &url);
    for i in 0..5 {
        register(&old, &format!("u{i}"));
    }
    old.wait_relayed();
    let new = start_follower(&dir, &url, 5);
    // Promoted while the old primary still runs: two primaries.
    assert_eq!(promote(&new).unwrap(), "OK");
    register(&new, "new1");
    new.wait_relayed();
    // The old one commits locally, then its publish is refused: it is fenced.
    assert!(register(&old, "old1") > 0);
    let i = old.wait_info("replication", "the old primary to turn follower", |i| {
        i.get("role").map(String::as_str) == Some("slave")
            && info_num(i, "userbus_applied_seq") >= 6
    });
    assert_eq!(info_num(&i, "userbus_discarded_events"), 1, "{i:?}");
    assert!(lookup(&old, "old1").is_none());
    assert!(lookup(&old, "new1").is_some());
    // The new one keeps writing, and the old one follows it.
    register(&new, "new2");
    old.wait_applied(7);
    assert_eq!(log(&old), log(&new));
    assert_eq!(new.info("replication")["role"], "master");
    assert_eq!(nats.client().all_msgs("USERBUS").len(), 7);
}

#[test]
fn callbacks_run_on_a_follower_and_durable_handlers_only_once_it_is_primary() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let primary = start_primary(&dir, &url);
    for i in 0..3 {
        register(&primary, &format!("u{i}"));
    }
    primary.wait_relayed();
    let (callback_tx, callbacks) = std::sync::mpsc::channel();
    let (durable_tx, durable) = std::sync::mpsc::channel();
    let nats_url = url.clone();
    let follower = common::TestServer::start_with(
        move |c| {
            c.nats = Some(nats_url);
            c.follow = true;
        },
        move |b| {
            b.on_event(move |e| {
                let _ = callback_tx.send(e.name.clone());
            })
            .durable_handler("mail", move |e| {
                let _ = durable_tx.send(e.name.clone());
            })
        },
    );
    let mut c = follower.redis();
    reply::wait_applied(&mut c, 3);
    let got: Vec<String> = (0..3)
        .map(|_| callbacks.recv_timeout(WAIT).expect("a callback"))
        .collect();
    assert_eq!(got, ["u0", "u1", "u2"]);
    assert!(
        durable.try_recv().is_err(),
        "a durable handler ran on a follower"
    );
    let ok: String = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c)
        .unwrap();
    assert_eq!(ok, "OK");
    // Primary now: the handler resumes from its offset (at-least-once).
    let got: Vec<String> = (0..3)
        .map(|_| durable.recv_timeout(WAIT).expect("a durable handler call"))
        .collect();
    assert_eq!(got, ["u0", "u1", "u2"]);
}

#[test]
fn a_follower_bootstraps_from_a_backup_and_the_trimmed_stream_tail() {
    let Some((mut nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let db = dir.path().join("p.db");
    let primary = UserbusProcess::start(&db, &["--nats", url.as_str()]);
    for i in 0..30 {
        register(&primary, &format!("before{i}"));
    }
    unregister(&primary, "before0");
    primary.wait_relayed();
    // Ten more while NATS is down: the snapshot holds events the stream does not
    // have yet, past the relay position it records.
    nats.stop();
    for i in 0..10 {
        register(&primary, &format!("unrelayed{i}"));
    }
    let snap = dir.path().join("snap.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_userbus"))
        .args([
            "backup",
            snap.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ])
        .output()
        .expect("userbus backup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    nats.restart();
    for i in 0..20 {
        register(&primary, &format!("after{i}"));
    }
    primary.wait_relayed();
    let end = primary.last_seq();
    assert_eq!(end, 61);
    // The stream no longer holds seq 32 to 34, just past the snapshot's relay
    // position: only the snapshot's own events bridge the gap.
    let purged = nats.client().api(
        "$JS.API.STREAM.PURGE.USERBUS",
        &serde_json::json!({"seq": 35}),
    );
    assert_eq!(purged["success"], true, "{purged}");
    let info = nats.client().stream_info("USERBUS");
    assert_eq!(info["state"]["first_seq"], 35, "{info}");
    let follower = UserbusProcess::start(&snap, &["--nats", url.as_str(), "--follow"]);
    follower.wait_applied(end);
    assert_eq!(log(&follower), log(&primary));
    assert!(lookup(&follower, "before0").is_none());
    assert_eq!(lookup(&follower, "before7"), lookup(&primary, "before7"));
    assert_eq!(
        lookup(&follower, "unrelayed9"),
        lookup(&primary, "unrelayed9")
    );
    assert_eq!(lookup(&follower, "after19"), lookup(&primary, "after19"));
    // It keeps following live writes.
    register(&primary, "live");
    follower.wait_applied(end + 1);
    assert_eq!(lookup(&follower, "live"), lookup(&primary, "live"));
}
