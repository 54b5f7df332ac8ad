//! The JetStream relay (`--nats`) against real nats-server processes: every
//! committed event lands in the stream once, in order, with stream seq == event
//! seq, across kill -9 of userbus and of the stream leader, NATS outages, a foreign
//! writer, bad settings; and a nats-py consumer reads it as a user on another
//! machine would.
//!
//! Without nats-server (or nats-py) these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::nats::{
    NatsAuth, NatsCluster, NatsServer, NatsTestClient, nats_available, nats_py_available,
    run_nats_py_consumer,
};
use common::process::UserbusProcess;
use common::reply::{self, info_num};
use common::stream::kinds_and_names;
use serde_json::Value;

/// How long the relay may take to drain after a disturbance (a leader election
/// takes 6-9 s on nats-server 2.9.10).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(45);
/// Kill rounds of the exactly-once test.
const KILL_ROUNDS: usize = 10;

/// A nats-server node and a directory for databases; `None` (skip) without
/// nats-server.
fn single_node() -> Option<(NatsServer, tempfile::TempDir)> {
    nats_available().then(|| (NatsServer::start(), tempfile::tempdir().expect("tempdir")))
}

/// Waits until INFO's numeric `field` reaches `at_least`.
fn wait_count(p: &UserbusProcess, field: &str, at_least: i64, what: &str) {
    p.wait_info("nats", what, |i| info_num(i, field) >= at_least);
}

/// The local event log: (seq, kind, name).
fn local_log(p: &UserbusProcess) -> Vec<(i64, String, String)> {
    kinds_and_names(&mut p.redis())
}

/// The stream holds exactly the local log: one message per event, stream seq ==
/// event seq, this writer's id, the event's subject and JSON.
fn assert_stream_is_the_log(c: &mut NatsTestClient, p: &UserbusProcess, stream: &str) {
    let writer = p.info("nats")["nats_writer"].clone();
    let log = local_log(p);
    let msgs = c.all_msgs(stream);
    assert_eq!(
        msgs.len(),
        log.len(),
        "stream holds {} messages, the log {} events",
        msgs.len(),
        log.len()
    );
    for (m, (seq, kind, name)) in msgs.iter().zip(&log) {
        assert_eq!(m.seq as i64, *seq, "stream seq == event seq");
        assert_eq!(m.msg_id(), Some(format!("{writer}-{seq}").as_str()));
        assert_eq!(m.subject, format!("userbus.{kind}"));
        let event: Value = m.json();
        assert_eq!(event["seq"], *seq);
        assert_eq!(event["kind"], kind.as_str());
        assert_eq!(event["name"], name.as_str());
    }
}

/// REGISTER and UNREGISTER from `threads` connections until stopped; errors
/// other than a dropped connection fail the test.
fn load(port: u16, tag: &str, threads: usize) -> (Arc<AtomicBool>, Vec<JoinHandle<usize>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let handles = (0..threads)
        .map(|t| {
            let stop = stop.clone();
            let tag = format!("{tag}-{t}");
            std::thread::spawn(move || {
                let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                    return 0;
                };
                let Ok(mut c) = client.get_connection() else {
                    return 0;
                };
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("{tag}-{done}");
                    let r: redis::RedisResult<i64> =
                        reply::register_cmd(&name, &[("plan", "pro")]).query(&mut c);
                    match r {
                        Ok(_) => {}
                        Err(e) if e.is_io_error() || e.is_connection_dropped() => break,
                        Err(e) => panic!("REGISTER {name}: {e}"),
                    }
                    if done % 3 == 0 {
                        let r = unregister(&mut c, &name);
                        match r {
                            Ok(_) => {}
                            Err(e) if e.is_io_error() || e.is_connection_dropped() => break,
                            Err(e) => panic!("UNREGISTER {name}: {e}"),
                        }
                    }
                    done += 1;
                }
                done
            })
        })
        .collect();
    (stop, handles)
}

fn unregister(c: &mut redis::Connection, name: &str) -> redis::RedisResult<i64> {
    redis::cmd("UNREGISTER").arg(name).query(c)
}

fn finish(load: (Arc<AtomicBool>, Vec<JoinHandle<usize>>)) -> usize {
    load.0.store(true, Ordering::Relaxed);
    load.1
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .sum()
}

fn register(p: &UserbusProcess, name: &str) -> i64 {
    reply::register(&mut p.redis(), name, &[])
}

#[test]
fn every_committed_event_lands_once_in_order_across_kill_9_rounds() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let db = dir.path().join("relay.db");
    let url = nats.url();
    let args = ["--nats", url.as_str(), "--durability", "normal"];
    let mut resumed_ahead = 0;
    for round in 0..KILL_ROUNDS {
        let mut p = UserbusProcess::start(&db, &args);
        let base = p.last_seq();
        let running = load(p.port, &format!("r{round}"), 3);
        // Kill at a different point of the relay's work each round: wait for a
        // few confirmations of this round's events, more each round.
        let want = base + 10 * (round as i64 + 1);
        wait_count(&p, "nats_confirmed_seq", want, "confirmations under load");
        p.kill9();
        let acknowledged = finish(running);
        assert!(acknowledged > 0, "round {round}: no load ran");
        // How the relay resumed: from its stored position, then from where the
        // stream was (ahead when acks of the last round were not stored before
        // the kill, which the relay must find on the stream, not publish twice).
        let positions: Vec<i64> = p
            .lines_with("after seq")
            .iter()
            .filter_map(|l| l.rsplit("after seq ").next()?.trim().parse().ok())
            .collect();
        println!("round {round}: stored position, then the stream's: {positions:?}");
        if let [stored, stream] = positions[..] {
            resumed_ahead += usize::from(stream > stored);
        }
    }
    let p = UserbusProcess::start(&db, &args);
    p.wait_relayed();
    let mut c = nats.client();
    assert_stream_is_the_log(&mut c, &p, "USERBUS");
    let log = local_log(&p);
    assert!(
        log.len() > 200,
        "the rounds committed only {} events",
        log.len()
    );
    assert!(
        resumed_ahead > 0,
        "no kill left acks unstored: the reconciling path went untested"
    );
}

#[test]
fn publishing_resumes_on_a_new_leader_after_the_stream_leader_is_killed() {
    if !nats_available() {
        return;
    }
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    let p = UserbusProcess::start(
        &dir.path().join("relay.db"),
        &["--nats", urls.as_str(), "--nats-replicas", "3"],
    );
    let running = load(p.port, "leader", 2);
    wait_count(&p, "nats_confirmed_seq", 50, "confirmations under load");
    let leader = cluster.wait_stream_leader("USERBUS", None);
    let before = p.info("nats")["nats_confirmed_seq"].parse::<i64>().unwrap();
    cluster.kill9(leader);
    let new_leader = cluster.wait_stream_leader("USERBUS", Some(leader));
    assert_ne!(new_leader, leader);
    // Publishing goes on under the new leader while the load runs.
    wait_count(
        &p,
        "nats_confirmed_seq",
        before + 50,
        "publishing on the new leader",
    );
    finish(running);
    p.wait_relayed();
    cluster.restart(leader);
    cluster.wait_current("USERBUS");
    let mut c = cluster.client(new_leader);
    assert_stream_is_the_log(&mut c, &p, "USERBUS");
}

#[test]
fn the_lag_grows_while_nats_is_down_and_drains_when_it_is_back() {
    let Some((mut nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let p = UserbusProcess::start(&dir.path().join("relay.db"), &["--nats", url.as_str()]);
    for i in 0..5 {
        register(&p, &format!("before{i}"));
    }
    p.wait_relayed();
    nats.stop();
    p.wait_info("nats", "the disconnection", |i| {
        i.get("nats_connected").map(String::as_str) == Some("0")
    });
    for i in 0..20 {
        assert!(register(&p, &format!("during{i}")) > 0);
    }
    let info = p.info("nats");
    assert_eq!(info["nats_lag_events"], "20", "{info:?}");
    // Local service is healthy all along.
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut p.redis()).unwrap(),
        "PONG"
    );
    nats.restart();
    p.wait_relayed();
    let info = p.info("nats");
    assert!(
        info["nats_reconnects"].parse::<u64>().unwrap() >= 1,
        "{info:?}"
    );
    let mut c = nats.client();
    assert_stream_is_the_log(&mut c, &p, "USERBUS");
}

#[test]
fn a_foreign_message_at_the_next_seq_stops_the_relay_and_local_service_goes_on() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let db = dir.path().join("relay.db");
    let url = nats.url();
    let args = ["--nats", url.as_str()];
    let mut p = UserbusProcess::start(&db, &args);
    for i in 0..3 {
        register(&p, &format!("u{i}"));
    }
    p.wait_relayed();
    p.stop();
    let mut c = nats.client();
    c.publish_foreign_after(3);
    let p = UserbusProcess::start(&db, &args);
    assert!(register(&p, "after") > 0);
    let info = p.wait_info("nats", "the relay to stop", |i| {
        i.get("nats_relay_state").map(String::as_str) == Some("stopped")
    });
    assert!(
        info["nats_last_error"].contains("another writer")
            && info["nats_last_error"].contains("someone-else-4"),
        "{info:?}"
    );
    assert_eq!(info["nats_confirmed_seq"], "3", "{info:?}");
    let stopped = p.lines_with("relay stopped");
    assert_eq!(stopped.len(), 1, "{}", p.log());
    assert!(stopped[0].contains("ERROR"), "{stopped:?}");
    // Registrations go on locally; the stream keeps the foreign message only.
    for i in 0..5 {
        assert!(register(&p, &format!("later{i}")) > 0);
    }
    assert_eq!(c.stream_info("USERBUS")["state"]["last_seq"], 4);
}

#[test]
fn a_bad_url_a_refused_connection_and_wrong_credentials_are_one_log_line_each() {
    if !nats_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A URL that does not parse: one error line at start, no relay.
    let p = UserbusProcess::start(
        &dir.path().join("a.db"),
        &["--nats", "nats://host:notaport"],
    );
    assert!(register(&p, "a") > 0);
    let bad = p.lines_with("--nats");
    assert_eq!(bad.len(), 1, "{}", p.log());
    assert!(
        bad[0].contains("ERROR") && bad[0].contains("notaport"),
        "{bad:?}"
    );
    assert_eq!(p.info("nats")["nats_enabled"], "0");

    // Nobody listens: retries, one warning.
    let port = common::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let p = UserbusProcess::start(&dir.path().join("b.db"), &["--nats", url.as_str()]);
    wait_count(&p, "nats_connect_failures", 3, "three failed attempts");
    assert!(register(&p, "b") > 0);
    let refused = p.lines_with("cannot connect");
    assert_eq!(refused.len(), 1, "{}", p.log());
    assert!(
        refused[0].contains("WARN") && refused[0].contains("refused"),
        "{refused:?}"
    );

    // Wrong password: retries, one warning naming the refusal.
    let nats = NatsServer::start_with(NatsAuth::user_password("relay", "right"));
    let url = nats.url();
    let p = UserbusProcess::start(
        &dir.path().join("c.db"),
        &[
            "--nats",
            url.as_str(),
            "--nats-user",
            "relay",
            "--nats-password",
            "wrong",
        ],
    );
    wait_count(&p, "nats_connect_failures", 3, "three refused attempts");
    assert!(register(&p, "c") > 0);
    let denied = p.lines_with("Authorization Violation");
    assert_eq!(denied.len(), 1, "{}", p.log());
    assert!(denied[0].contains("WARN"), "{denied:?}");
    assert!(!p.log().contains("wrong"), "the password reached the log");

    // The right password relays.
    let p = UserbusProcess::start(
        &dir.path().join("d.db"),
        &[
            "--nats",
            url.as_str(),
            "--nats-user",
            "relay",
            "--nats-password",
            "right",
        ],
    );
    register(&p, "d");
    p.wait_relayed();
}

#[test]
fn a_nats_py_consumer_on_another_machine_reads_every_event() {
    if !nats_py_available() {
        return;
    }
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let p = UserbusProcess::start(&dir.path().join("py.db"), &["--nats", url.as_str()]);
    for i in 0..10 {
        register(&p, &format!("py{i}"));
    }
    for i in 0..2 {
        let removed = unregister(&mut p.redis(), &format!("py{i}")).unwrap();
        assert_eq!(removed, 1);
    }
    p.wait_relayed();
    let writer = p.info("nats")["nats_writer"].clone();
    let got = run_nats_py_consumer(&url, "USERBUS", "userbus.>", 12);
    let log = local_log(&p);
    assert_eq!(got.len(), log.len());
    for (m, (seq, kind, name)) in got.iter().zip(&log) {
        assert_eq!(m["seq"], *seq, "{m}");
        assert_eq!(m["msg_id"], format!("{writer}-{seq}"), "{m}");
        assert_eq!(m["subject"], format!("userbus.{kind}"), "{m}");
        let event: Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
        assert_eq!(
            (event["seq"].clone(), event["name"].clone()),
            ((*seq).into(), name.as_str().into())
        );
    }
}

#[test]
fn retention_never_trims_what_the_relay_has_not_confirmed() {
    let Some((mut nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let p = UserbusProcess::start(
        &dir.path().join("retain.db"),
        &["--nats", url.as_str(), "--retain-events", "2"],
    );
    for i in 0..3 {
        register(&p, &format!("kept{i}"));
    }
    p.wait_relayed();
    // Confirmed events may go: the log is trimmed to 2.
    let xlen = |p: &UserbusProcess| -> i64 {
        redis::cmd("XLEN")
            .arg("events")
            .query(&mut p.redis())
            .unwrap()
    };
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while xlen(&p) > 2 {
        assert!(
            Instant::now() < deadline,
            "the confirmed events were not trimmed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    nats.stop();
    p.wait_info("nats", "the disconnection", |i| {
        i.get("nats_connected").map(String::as_str) == Some("0")
    });
    for i in 0..10 {
        register(&p, &format!("held{i}"));
    }
    // The trimmer runs every second; over a few of its rounds nothing unconfirmed
    // may go.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert!(xlen(&p) >= 10, "unconfirmed events were trimmed");
        std::thread::sleep(Duration::from_millis(100));
    }
    nats.restart();
    p.wait_relayed();
    // Every event reached the stream, in order, once.
    let writer = p.info("nats")["nats_writer"].clone();
    let msgs = nats.client().all_msgs("USERBUS");
    assert_eq!(msgs.len(), 13);
    for (i, m) in msgs.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(
            (m.seq, m.msg_id()),
            (seq, Some(format!("{writer}-{seq}").as_str()))
        );
    }
}

#[test]
fn a_database_restored_from_an_older_copy_stops_the_relay_instead_of_reusing_seqs() {
    let Some((nats, dir)) = single_node() else {
        return;
    };
    let url = nats.url();
    let args = ["--nats", url.as_str()];
    let db = dir.path().join("live.db");
    let mut p = UserbusProcess::start(&db, &args);
    for i in 0..3 {
        register(&p, &format!("old{i}"));
    }
    p.wait_relayed();
    p.stop();
    // A copy taken now, while the live database goes on to seq 5.
    let copy = dir.path().join("copy.db");
    for suffix in ["", "-wal", "-shm"] {
        let from = format!("{}{suffix}", db.display());
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{suffix}", copy.display())).unwrap();
        }
    }
    let mut p = UserbusProcess::start(&db, &args);
    for i in 0..2 {
        register(&p, &format!("new{i}"));
    }
    p.wait_relayed();
    p.stop();
    let p = UserbusProcess::start(&copy, &args);
    let info = p.wait_info("nats", "the relay to stop", |i| {
        i.get("nats_relay_state").map(String::as_str) == Some("stopped")
    });
    assert!(info["nats_last_error"].contains("older copy"), "{info:?}");
    // Local service goes on; the stream keeps the live database's five events.
    assert!(register(&p, "after") > 0);
    assert_eq!(nats.client().stream_info("USERBUS")["state"]["last_seq"], 5);
}
