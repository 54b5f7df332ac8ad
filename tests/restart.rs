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
    let http = server.http(&format!(
        "GET /users/{last} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ));
    assert!(http.starts_with("HTTP/1.1 503"), "{http}");
    assert!(http.contains("Retry-After: 1"), "{http}");
    let metrics = server.http("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
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
    let metrics = server.http("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
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
