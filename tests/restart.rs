//! Restarts of the real binary on the same database: after a clean stop the user
//! index comes back from the image the stop wrote, after a kill -9 from the users
//! table, and either way LOOKUP, USERCOUNT and the next ids are what they were.
mod common;

use std::path::Path;

use common::process::UserbusProcess;
use common::reply::register;
use common::temp_db;
use redis::{Connection, Value};

/// Users registered before the first stop.
const USERS: usize = 3_000;

/// The names the test ever used, registered or not.
fn names() -> Vec<String> {
    (0..USERS + 200).map(|i| format!("user-{i}")).collect()
}

/// Every name's LOOKUP reply and USERCOUNT.
fn snapshot(con: &mut Connection) -> (Vec<Value>, i64) {
    let replies = names()
        .iter()
        .map(|n| redis::cmd("LOOKUP").arg(n).query(con).expect("LOOKUP"))
        .collect();
    let count = redis::cmd("USERCOUNT").query(con).expect("USERCOUNT");
    (replies, count)
}

/// Registers `user-{from..to}` with fields (one with characters JSON escapes),
/// then unregisters every seventh of them.
fn write_users(con: &mut Connection, from: usize, to: usize) {
    let mut pipe = redis::pipe();
    for i in from..to {
        pipe.cmd("REGISTER")
            .arg(format!("user-{i}"))
            .arg("email")
            .arg(format!("u{i}@example.com"))
            .arg("note")
            .arg(format!("line \"{i}\"\\ é"));
    }
    for i in (from..to).step_by(7) {
        pipe.cmd("UNREGISTER").arg(format!("user-{i}"));
    }
    let _: Vec<Value> = pipe.query(con).expect("writes");
}

/// `userbus serve` on `db`, committing without fsync.
fn start(db: &Path) -> UserbusProcess {
    UserbusProcess::start(db, &["--durability", "normal"])
}

/// `start(db)`, asserting that one line of its log contains `says`.
fn start_saying(db: &Path, says: &str) -> UserbusProcess {
    let server = start(db);
    assert_eq!(server.lines_with(says).len(), 1, "{}", server.log());
    server
}

fn image_of(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-users");
    name.into()
}

#[test]
fn restarts_after_a_clean_stop_and_after_a_crash_serve_the_same_lookups() {
    let (_dir, db) = temp_db();
    let mut server = start(&db);
    let mut con = server.redis();
    write_users(&mut con, 0, USERS);
    let before = snapshot(&mut con);
    server.stop();
    assert!(image_of(&db).exists(), "a clean stop writes the image");

    // A clean stop: the index comes from the image, which is then gone.
    let mut server = start_saying(&db, "users from");
    assert!(
        server.lines_with("-users in").len() == 1,
        "the image served:\n{}",
        server.log()
    );
    assert!(!image_of(&db).exists(), "an image serves one start");
    let mut con = server.redis();
    assert_eq!(snapshot(&mut con), before);
    let after_clean = register(&mut con, "next-after-clean", &[]);
    assert_eq!(after_clean, USERS as i64 + 1, "ids go on where they were");
    write_users(&mut con, USERS, USERS + 200);
    let before_crash = snapshot(&mut con);
    server.kill9();
    assert!(!image_of(&db).exists(), "a crash leaves no image");

    // A crash: the index comes from the users table.
    let mut server = start_saying(&db, "users from the users table");
    let mut con = server.redis();
    assert_eq!(snapshot(&mut con), before_crash);
    assert_eq!(
        register(&mut con, "next-after-crash", &[]),
        USERS as i64 + 202
    );
    server.stop();
}

#[test]
fn an_image_of_another_state_of_the_database_is_not_used() {
    let (_dir, db) = temp_db();
    let mut server = start(&db);
    let mut con = server.redis();
    write_users(&mut con, 0, 100);
    server.stop();
    let image = std::fs::read(image_of(&db)).expect("image");

    // The database moves on after the image was read; the old image comes back.
    let mut server = start(&db);
    let mut con = server.redis();
    let _: Value = redis::cmd("UNREGISTER")
        .arg("user-1")
        .query(&mut con)
        .expect("UNREGISTER");
    let want = snapshot(&mut con);
    server.kill9();
    std::fs::write(image_of(&db), &image).expect("put the old image back");

    let mut server = start_saying(&db, "users from the users table");
    let mut con = server.redis();
    assert_eq!(snapshot(&mut con), want);
    server.stop();

    // A torn image is refused too, and the start scans.
    let image = std::fs::read(image_of(&db)).expect("image");
    std::fs::write(image_of(&db), &image[..image.len() / 2]).expect("tear the image");
    let server = start_saying(&db, "is unreadable");
    let mut con = server.redis();
    assert_eq!(snapshot(&mut con), want);
}

/// The reply to `cmd`, or the error's code (`LOADING` for `-LOADING ...`).
fn reply(con: &mut Connection, cmd: &redis::Cmd) -> Result<Value, String> {
    cmd.query(con)
        .map_err(|e| e.code().unwrap_or_default().to_string())
}

/// True for `-LOADING ...`.
fn is_loading(r: &Result<Value, String>) -> bool {
    matches!(r, Err(code) if code == "LOADING")
}

fn loading_flag(server: &UserbusProcess) -> String {
    server
        .info("persistence")
        .get("loading")
        .cloned()
        .unwrap_or_default()
}

/// After a kill -9 the server serves while the users table loads a few rows at
/// a time (slowed down here): loaded names answer, names not loaded yet are
/// `-LOADING` and write nothing, writes to loaded users stay, USERCOUNT is the
/// table's count throughout, and the loaded index equals the database.
#[test]
fn after_a_crash_the_server_serves_while_the_index_loads() {
    const N: usize = 2_000;
    let (_dir, db) = temp_db();
    let mut server = start(&db);
    let mut con = server.redis();
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("REGISTER")
            .arg(format!("w-{i}"))
            .arg("n")
            .arg(i.to_string());
    }
    let _: Vec<Value> = pipe.query(&mut con).expect("registers");
    server.kill9();

    // 4 rows every 3 ms: about 1.5 s of loading.
    let env = [
        ("USERBUS_WARM_START_MS", "0"),
        ("USERBUS_WARM_ROWS", "4"),
        ("USERBUS_WARM_PAUSE_MS", "3"),
    ];
    let mut server = UserbusProcess::start_with_env(&db, &["--durability", "normal"], &env);
    let mut con = server.redis();
    assert_eq!(loading_flag(&server), "1", "{}", server.log());
    let info = server.info("persistence");
    assert!(info.contains_key("loading_loaded_perc"), "{info:?}");
    let count =
        |con: &mut Connection| -> i64 { redis::cmd("USERCOUNT").query(con).expect("USERCOUNT") };
    assert_eq!(count(&mut con), N as i64);
    let last = format!("w-{}", N - 1);
    // The last user loads last: neither it nor a free name can be answered yet.
    let r = reply(&mut con, redis::cmd("LOOKUP").arg(&last));
    assert!(is_loading(&r), "{r:?}");
    assert!(is_loading(&reply(
        &mut con,
        redis::cmd("REGISTER").arg(&last)
    )));
    assert!(is_loading(&reply(
        &mut con,
        redis::cmd("REGISTER").arg("fresh")
    )));
    assert!(is_loading(&reply(
        &mut con,
        redis::cmd("UNREGISTER").arg(&last)
    )));
    assert!(is_loading(&reply(
        &mut con,
        redis::cmd("UPDATE").arg(&last).arg("n").arg("x")
    )));
    assert_eq!(count(&mut con), N as i64);
    let http = server.http_get(&format!("/users/{last}"), "");
    assert!(http.starts_with("HTTP/1.1 503"), "{http}");
    assert!(http.contains("Retry-After: 1"), "{http}");
    let metrics = server.http_get("/metrics", "");
    assert!(metrics.contains("\nuserbus_loading 1\n"), "{metrics}");

    // The first users load first: they answer and take writes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while is_loading(&reply(&mut con, redis::cmd("LOOKUP").arg("w-1"))) {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(
        reply(&mut con, redis::cmd("REGISTER").arg("w-0")),
        Ok(Value::Int(0)),
        "a loaded name is taken"
    );
    assert_eq!(
        reply(&mut con, redis::cmd("UNREGISTER").arg("w-0")),
        Ok(Value::Int(1))
    );
    let updated = reply(
        &mut con,
        redis::cmd("UPDATE").arg("w-1").arg("n").arg("new"),
    );
    assert!(updated.is_ok(), "{updated:?}");
    assert_eq!(count(&mut con), N as i64 - 1);
    assert_eq!(loading_flag(&server), "1", "still loading");

    // Until loaded, the count stays right; then every user answers.
    while loading_flag(&server) == "1" {
        assert_eq!(count(&mut con), N as i64 - 1);
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The log line is read from the server's stderr by another thread.
    server.wait_line(
        &["users from the users table in"],
        std::time::Duration::from_secs(10),
    );
    assert_eq!(server.lines_with("users from the users table in").len(), 1);
    let metrics = server.http_get("/metrics", "");
    assert!(metrics.contains("\nuserbus_loading 0\n"), "{metrics}");
    assert!(
        metrics.contains("\nuserbus_loading_loaded_ratio 1\n"),
        "{metrics}"
    );
    assert_eq!(count(&mut con), N as i64 - 1);
    let lookup = |con: &mut Connection, name: &str| -> Value {
        redis::cmd("LOOKUP").arg(name).query(con).expect("LOOKUP")
    };
    assert_eq!(
        lookup(&mut con, "w-0"),
        Value::Nil,
        "the scan brings back no removed user"
    );
    for i in 1..N {
        let Value::Array(user) = lookup(&mut con, &format!("w-{i}")) else {
            panic!("w-{i} is gone");
        };
        assert_eq!(
            user.get(1),
            Some(&Value::Int(i as i64 + 1)),
            "w-{i}: {user:?}"
        );
        let want = if i == 1 {
            "new".to_string()
        } else {
            i.to_string()
        };
        let fields = format!("{:?}", user.get(7));
        assert!(fields.contains(&format!("{want:?}")), "w-{i}: {user:?}");
    }
    assert_eq!(
        reply(&mut con, redis::cmd("REGISTER").arg("fresh")),
        Ok(Value::Int(N as i64 + 1))
    );
    assert_eq!(
        reply(&mut con, redis::cmd("REGISTER").arg(&last)),
        Ok(Value::Int(0))
    );
    server.stop();
    assert!(
        image_of(&db).exists(),
        "a stop once loaded writes the image"
    );
}

fn base_image_of(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-users-base");
    name.into()
}

/// A base image every 686 events (all of `imaged`'s writes: the image holds
/// them all, whichever ticks they commit in), looked for every 20 ms.
const IMAGE_EVERY_686: [(&str, &str); 3] = [
    ("USERBUS_BASE_IMAGE_EVENTS", "686"),
    ("USERBUS_BASE_IMAGE_INTERVAL_MS", "0"),
    ("USERBUS_BASE_IMAGE_POLL_MS", "20"),
];

/// Starts a server on a fresh database that writes a base image once 686
/// events are in, writes `user-0..user-600` (and unregisters every seventh: 686
/// events), and waits for the image; `args` go to `serve`.
fn imaged(db: &Path, args: &[&str]) -> UserbusProcess {
    let mut all = vec!["--durability", "normal"];
    all.extend_from_slice(args);
    let server = UserbusProcess::start_with_env(db, &all, &IMAGE_EVERY_686);
    let mut con = server.redis();
    write_users(&mut con, 0, 600);
    let info = server.wait_info("persistence", "a base image", |i| {
        i.get("index_images").is_some_and(|n| n != "0")
    });
    assert_eq!(info.get("index_image").map(String::as_str), Some("running"));
    let metrics = server.http_get("/metrics", "");
    assert!(
        metrics.contains("\nuserbus_index_image_written_total ")
            && metrics.contains("\nuserbus_index_image_last_users 514\n"),
        "{metrics}"
    );
    assert_eq!(
        info.get("index_image_last_users").map(String::as_str),
        Some("514")
    );
    assert!(base_image_of(db).exists());
    server
}

/// After the image: unregisters, updates (a set and a removal), registrations,
/// a name unregistered and registered again (a new id) and updated, all fewer
/// than the 686 events that call for the next image.
fn writes_after_the_image(con: &mut Connection) {
    let mut pipe = redis::pipe();
    for i in (1..600).step_by(11) {
        pipe.cmd("UNREGISTER").arg(format!("user-{i}"));
    }
    for i in (2..600).step_by(13) {
        pipe.cmd("UPDATE")
            .arg(format!("user-{i}"))
            .arg("email")
            .arg(format!("new-{i}@example.com"))
            .arg("plan")
            .arg("pro");
        pipe.cmd("DELFIELDS")
            .arg(format!("user-{}", i + 1))
            .arg("note");
    }
    for i in 600..700 {
        pipe.cmd("REGISTER")
            .arg(format!("user-{i}"))
            .arg("k")
            .arg("v");
    }
    pipe.cmd("REGISTER").arg("user-7").arg("again").arg("1");
    pipe.cmd("UPDATE").arg("user-7").arg("again").arg("2");
    pipe.cmd("UNREGISTER").arg("user-12");
    pipe.cmd("REGISTER").arg("user-12");
    let _: Vec<Value> = pipe.query(con).expect("writes");
}

/// After a kill -9 with a base image and later writes, the start loads the
/// image and replays the events after it before it serves: every user is as
/// acknowledged, and a new name registers at once, with the next id.
#[test]
fn after_a_crash_the_base_image_and_the_events_after_it_load_before_serving() {
    let (_dir, db) = temp_db();
    let mut server = imaged(&db, &[]);
    let mut con = server.redis();
    writes_after_the_image(&mut con);
    let before = snapshot(&mut con);
    let next: i64 = register(&mut con, "probe", &[]) + 1;
    let _: Value = redis::cmd("UNREGISTER")
        .arg("probe")
        .query(&mut con)
        .expect("UNREGISTER");
    assert_eq!(
        server
            .info("persistence")
            .get("index_images")
            .map(String::as_str),
        Some("1"),
        "no second image: the start replays the later events"
    );
    server.kill9();
    assert!(
        !image_of(&db).exists(),
        "a crash leaves no clean-stop image"
    );

    let mut server = start_saying(&db, "from the base image");
    assert!(
        server.lines_with("warming scan").is_empty(),
        "{}",
        server.log()
    );
    let mut con = server.redis();
    assert_eq!(loading_flag(&server), "0");
    assert_eq!(
        reply(&mut con, redis::cmd("REGISTER").arg("fresh")),
        Ok(Value::Int(next))
    );
    let _: Value = redis::cmd("UNREGISTER")
        .arg("fresh")
        .query(&mut con)
        .expect("UNREGISTER");
    assert_eq!(snapshot(&mut con), before);
    server.kill9();
    assert!(
        base_image_of(&db).exists(),
        "a base image serves more starts"
    );
    let mut server = start_saying(&db, "from the base image");
    let mut con = server.redis();
    assert_eq!(snapshot(&mut con), before);
    server.stop();
}

/// A corrupt base image is logged and ignored: the start scans the users table.
#[test]
fn a_corrupt_base_image_falls_back_to_the_warming_scan() {
    let (_dir, db) = temp_db();
    let mut server = imaged(&db, &[]);
    let mut con = server.redis();
    writes_after_the_image(&mut con);
    let before = snapshot(&mut con);
    server.kill9();
    let path = base_image_of(&db);
    let bytes = std::fs::read(&path).expect("base image");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("tear it");

    let server = start_saying(&db, "is not usable");
    server.wait_line(
        &["users from the users table in"],
        std::time::Duration::from_secs(10),
    );
    let mut con = server.redis();
    assert_eq!(snapshot(&mut con), before);
    assert_eq!(
        reply(&mut con, redis::cmd("REGISTER").arg("fresh")),
        Ok(Value::Int(1 + 600 + 100 + 2))
    );
}

/// Retention trimmed events after the base image: it cannot be brought up to
/// date, and the start scans the users table.
#[test]
fn a_base_image_older_than_the_retained_events_is_not_used() {
    let (_dir, db) = temp_db();
    let mut server = imaged(&db, &["--retain-events", "50"]);
    let mut con = server.redis();
    writes_after_the_image(&mut con);
    let before = snapshot(&mut con);
    server.wait_info("events", "retention", |i| {
        i.get("events_length")
            .is_some_and(|n| n.parse::<i64>().is_ok_and(|n| n <= 50))
    });
    server.kill9();

    let server = start_saying(&db, "were trimmed; not used");
    server.wait_line(
        &["users from the users table in"],
        std::time::Duration::from_secs(10),
    );
    let mut con = server.redis();
    assert_eq!(snapshot(&mut con), before);
}

/// A fenced primary discards the tail that never reached the stream; a base
/// image written before the discard holds users of that tail, and events with
/// the same seqs follow. After a crash, the start must not use it: no discarded
/// user comes back. (Needs nats-server; skipped without it unless
/// `USERBUS_NATS_TEST=1`.)
#[test]
fn a_base_image_from_before_a_discarded_tail_is_not_used() {
    use common::nats::{NatsServer, nats_available};
    use common::reply::info_num;
    if !nats_available() {
        return;
    }
    let nats = NatsServer::start();
    let url = nats.url();
    let (_dir, pdb) = temp_db();
    let fdb = pdb.with_file_name("f.db");
    let mut primary = UserbusProcess::start(&pdb, &["--nats", url.as_str()]);
    let mut con = primary.redis();
    for i in 0..20 {
        register(&mut con, &format!("a{i}"), &[]);
    }
    primary.wait_relayed();
    let follower = UserbusProcess::start(&fdb, &["--nats", url.as_str(), "--follow"]);
    follower.wait_applied(20);
    primary.stop();

    // Writes that never reach the stream, and a base image holding them (once
    // all 30 events are in).
    let env = [
        ("USERBUS_BASE_IMAGE_EVENTS", "30"),
        ("USERBUS_BASE_IMAGE_INTERVAL_MS", "0"),
        ("USERBUS_BASE_IMAGE_POLL_MS", "20"),
    ];
    let mut offline = UserbusProcess::start_with_env(&pdb, &[], &env);
    let mut con = offline.redis();
    for i in 0..10 {
        register(&mut con, &format!("lost{i}"), &[]);
    }
    offline.wait_info("persistence", "a base image at seq 30", |i| {
        info_num(i, "index_image_last_seq") == 30
    });
    offline.kill9();

    // The stream goes on past the image's seq with other events.
    let mut fcon = follower.redis();
    assert_eq!(
        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query::<String>(&mut fcon)
            .expect("promote"),
        "OK"
    );
    for i in 0..12 {
        register(&mut fcon, &format!("after{i}"), &[]);
    }
    follower.wait_relayed();

    // The old primary comes back fenced, discards seqs 21..30 and applies the
    // stream's 21..32; it writes no image of its own.
    let quiet = [("USERBUS_BASE_IMAGE_EVENTS", "0")];
    let mut old = UserbusProcess::start_with_env(&pdb, &["--nats", url.as_str()], &quiet);
    let i = old.wait_info("replication", "the old primary to follow", |i| {
        info_num(i, "userbus_applied_seq") >= 32
    });
    assert_eq!(info_num(&i, "userbus_discarded_events"), 10, "{i:?}");
    old.kill9();

    let server = UserbusProcess::start_with_env(&pdb, &["--durability", "normal"], &quiet);
    assert_eq!(
        server.lines_with("from the base image").len(),
        0,
        "{}",
        server.log()
    );
    assert_eq!(server.lines_with("not used").len(), 1, "{}", server.log());
    server.wait_line(
        &["users from the users table in"],
        std::time::Duration::from_secs(10),
    );
    let mut con = server.redis();
    for i in 0..10 {
        let lost: Value = redis::cmd("LOOKUP")
            .arg(format!("lost{i}"))
            .query(&mut con)
            .expect("LOOKUP");
        assert_eq!(lost, Value::Nil, "lost{i} came back");
    }
    for i in 0..12 {
        let after: Value = redis::cmd("LOOKUP")
            .arg(format!("after{i}"))
            .query(&mut con)
            .expect("LOOKUP");
        assert_ne!(after, Value::Nil, "after{i} is missing");
    }
    let count: i64 = redis::cmd("USERCOUNT").query(&mut con).expect("USERCOUNT");
    assert_eq!(count, 32);
}
