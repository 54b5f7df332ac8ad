//! Failover under `--durability replicated` on a real 3-node nats-server cluster:
//! a primary and a follower, REGISTER and UNREGISTER load on concurrent
//! connections, kill -9 of the primary, `REPLICAOF NO ONE` on the follower, and
//! then every acknowledged write is on the promoted node, nothing is there that no
//! client asked for, and its log is the stream. The old primary comes back as a
//! follower (in some rounds with its database deleted: a lost disk) and ends as a
//! prefix of the stream. (Killing the stream's leader under replicated load is in
//! tests/replicated.rs.)
//!
//! Without nats-server these tests print a note and pass, unless
//! `USERBUS_NATS_TEST=1`. `USERBUS_FAILOVER_ROUNDS` sets the rounds (10).
mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::nats::{NatsCluster, nats_available};
use common::process::UserbusProcess;
use common::reply::{self, info_num, register_cmd};
use common::stream::kinds_and_names;

/// How long catching up, promoting or draining may take.
const WAIT: Duration = Duration::from_secs(60);
/// Client connections writing at once.
const WRITERS: usize = 4;
const STREAM: &str = "USERBUS";

/// What a client knows of a name after its last write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// REGISTER was acknowledged, and no UNREGISTER after it.
    Present,
    /// UNREGISTER was acknowledged (`:1`).
    Absent,
    /// The last write got an error or no reply: it may or may not have happened.
    Unknown,
}

/// `REPLICAOF NO ONE`, bounded.
fn promote(p: &UserbusProcess) -> String {
    let mut c = p.redis();
    c.set_read_timeout(Some(WAIT)).unwrap();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut c)
        .unwrap_or_else(|e| panic!("REPLICAOF NO ONE: {e}\n{}", p.log()))
}

/// The event log as (seq, kind, name).
fn event_log(p: &UserbusProcess) -> Vec<(i64, String, String)> {
    kinds_and_names(&mut p.redis())
}

/// The stream's messages as (seq, kind, name).
fn stream_log(cluster: &NatsCluster) -> Vec<(i64, String, String)> {
    cluster
        .any_client()
        .all_msgs(STREAM)
        .iter()
        .map(|m| {
            let v = m.json();
            (
                v["seq"].as_i64().expect("seq"),
                v["kind"].as_str().expect("kind").to_string(),
                v["name"].as_str().expect("name").to_string(),
            )
        })
        .collect()
}

/// The fields every write of these tests registers with.
const PLAN: &[(&str, &str)] = &[("plan", "pro")];

fn lookup_exists(p: &UserbusProcess, name: &str) -> bool {
    reply::lookup(&mut p.redis(), name) != redis::Value::Nil
}

/// What a writer thread wrote, and its longest wait between two replies.
type Written = (Vec<(String, Known)>, Duration);

/// Writes on `port` from [`WRITERS`] connections until `stop`, or until a write
/// fails (the primary died): REGISTER of fresh names, and UNREGISTER of every
/// third name written. Each thread returns what each name it wrote is known to
/// be, and the longest wait between two of its replies.
fn load(port: u16, prefix: String, stop: Arc<AtomicBool>) -> Vec<thread::JoinHandle<Written>> {
    (0..WRITERS)
        .map(|t| {
            let stop = Arc::clone(&stop);
            let prefix = prefix.clone();
            thread::spawn(move || {
                let mut known = Vec::new();
                let mut longest = Duration::ZERO;
                let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                    return (known, longest);
                };
                let Ok(mut c) = client.get_connection() else {
                    return (known, longest);
                };
                let mut last_reply = Instant::now();
                let _ = c.set_read_timeout(Some(WAIT));
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("{prefix}-{t}-{i}");
                    i += 1;
                    let r: redis::RedisResult<i64> = register_cmd(&name, PLAN).query(&mut c);
                    match r {
                        Ok(_) => {
                            longest = longest.max(last_reply.elapsed());
                            last_reply = Instant::now();
                            known.push((name.clone(), Known::Present));
                        }
                        Err(_) => {
                            known.push((name, Known::Unknown));
                            break;
                        }
                    }
                    if i % 3 == 0 {
                        let r: redis::RedisResult<i64> =
                            redis::cmd("UNREGISTER").arg(&name).query(&mut c);
                        match r {
                            Ok(1) => {
                                longest = longest.max(last_reply.elapsed());
                                last_reply = Instant::now();
                                known.push((name, Known::Absent));
                            }
                            Ok(n) => panic!("UNREGISTER {name} of a present user: {n}"),
                            Err(_) => {
                                known.push((name, Known::Unknown));
                                break;
                            }
                        }
                    }
                }
                (known, longest)
            })
        })
        .collect()
}

fn db_files(db: &Path) -> Vec<PathBuf> {
    ["", "-wal", "-shm"]
        .iter()
        .map(|s| PathBuf::from(format!("{}{s}", db.display())))
        .collect()
}

/// Every acknowledged write is on `node`, and every registration in its log was
/// asked for by a client.
fn check_acknowledged(
    node: &UserbusProcess,
    known: &HashMap<String, Known>,
    attempted: &HashSet<String>,
) {
    for (name, k) in known {
        match k {
            Known::Present => assert!(lookup_exists(node, name), "acknowledged {name} lost"),
            Known::Absent => assert!(
                !lookup_exists(node, name),
                "acknowledged UNREGISTER of {name} lost"
            ),
            Known::Unknown => {}
        }
    }
    for (seq, kind, name) in event_log(node) {
        assert!(
            attempted.contains(&name),
            "event {seq} ({kind} {name}) was never asked for"
        );
    }
}

#[test]
fn replicated_failover_rounds_lose_no_acknowledged_write() {
    if !nats_available() {
        return;
    }
    let rounds: usize = std::env::var("USERBUS_FAILOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    let base = [
        "--nats",
        urls.as_str(),
        "--nats-replicas",
        "3",
        "--durability",
        "replicated",
    ];
    let follow: Vec<&str> = [&base[..], &["--follow"]].concat();
    let dbs = [dir.path().join("a.db"), dir.path().join("b.db")];
    let mut primary = UserbusProcess::start(&dbs[0], &base);
    let mut follower = UserbusProcess::start(&dbs[1], &follow);
    let (mut p_db, mut f_db) = (0, 1);
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut attempted: HashSet<String> = HashSet::new();
    let mut failovers = Vec::new();
    for round in 0..rounds {
        let start = primary.last_seq();
        let stop = Arc::new(AtomicBool::new(false));
        let writers = load(primary.port, format!("r{round}"), Arc::clone(&stop));
        // Let the load reach the primary, then take it down under that load.
        primary.wait_info("events", "writes under way", |i| {
            info_num(i, "events_last_seq") >= start + 50
        });
        primary.kill9();
        let died = Instant::now();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            for (name, k) in w.join().expect("writer thread").0 {
                attempted.insert(name.clone());
                known.insert(name, k);
            }
        }
        assert_eq!(promote(&follower), "OK");
        // The first write the promoted node accepts ends the failover. One that
        // meets the old primary's last publishes, still in flight when it died,
        // may get an error (its outcome unknown) while the node re-promotes.
        let deadline = Instant::now() + WAIT;
        for k in 0.. {
            let name = format!("r{round}-first{k}");
            attempted.insert(name.clone());
            match try_register(&follower, &name) {
                Ok(id) => {
                    assert!(id > 0);
                    known.insert(name, Known::Present);
                    break;
                }
                Err(e) => {
                    known.insert(name, Known::Unknown);
                    assert!(
                        Instant::now() < deadline,
                        "no write accepted after the promotion: {e}\n{}",
                        follower.log()
                    );
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
        failovers.push(died.elapsed());
        check_acknowledged(&follower, &known, &attempted);
        // The old primary comes back as a follower; every third round, its disk
        // was lost.
        if round % 3 == 2 {
            for f in db_files(&dbs[p_db]) {
                let _ = std::fs::remove_file(f);
            }
        }
        let old = UserbusProcess::start(&dbs[p_db], &follow);
        let promoted = std::mem::replace(&mut follower, old);
        primary = promoted;
        std::mem::swap(&mut p_db, &mut f_db);
        primary.wait_info("nats", "the promoted node's relay to drain", |i| {
            info_num(i, "nats_lag_events") == 0
        });
        follower.wait_applied(primary.last_seq());
        let log = event_log(&primary);
        assert_eq!(
            log,
            stream_log(&cluster),
            "round {round}: the log is not the stream"
        );
        assert_eq!(
            event_log(&follower),
            log,
            "round {round}: the old primary is not the stream"
        );
    }
    eprintln!(
        "failover (kill -9 of the primary to the first write accepted by the promoted \
         node): {:?}",
        failovers
    );
}

/// REGISTER `name` on `p`: the id, or the error's text.
fn try_register(p: &UserbusProcess, name: &str) -> Result<i64, String> {
    register_cmd(name, PLAN)
        .query(&mut p.redis())
        .map_err(|e| e.to_string())
}

#[test]
fn a_node_fenced_right_after_its_promotion_applies_the_late_event_and_promotes_again() {
    if !nats_available() {
        return;
    }
    let nats = common::nats::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let args = ["--nats", url.as_str(), "--durability", "replicated"];
    let old = UserbusProcess::start(&dir.path().join("old.db"), &args);
    let new = UserbusProcess::start(
        &dir.path().join("new.db"),
        &[&args[..], &["--follow"]].concat(),
    );
    for i in 0..5 {
        try_register(&old, &format!("u{i}")).expect("REGISTER on the primary");
    }
    new.wait_applied(5);
    assert_eq!(promote(&new), "OK");
    // The old primary's write lands first: what a publish in flight when it died
    // would do.
    assert_eq!(try_register(&old, "late"), Ok(6));
    // The promoted node's first write meets it: not acknowledged, and the node
    // applies it and promotes itself again.
    let first = try_register(&new, "refused");
    assert!(first.is_err(), "{first:?}");
    let deadline = Instant::now() + WAIT;
    let id = loop {
        match try_register(&new, "accepted") {
            Ok(id) => break id,
            Err(e) => {
                assert!(Instant::now() < deadline, "{e}\n{}", new.log());
                thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert_eq!(id, 7);
    assert!(new.log().contains("promoting again"), "{}", new.log());
    assert_eq!(new.info("replication")["role"], "master");
    // The old primary's next write meets the new one's event: it is fenced.
    assert!(try_register(&old, "too-late").is_err());
    old.wait_info("replication", "the old primary to turn follower", |i| {
        i.get("role").map(String::as_str) == Some("slave")
            && info_num(i, "userbus_applied_seq") >= 7
    });
    assert!(lookup_exists(&new, "late"));
    assert!(!lookup_exists(&new, "refused"));
    assert!(!lookup_exists(&old, "too-late"));
    assert_eq!(event_log(&old), event_log(&new));
}
