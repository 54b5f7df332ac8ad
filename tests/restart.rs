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
