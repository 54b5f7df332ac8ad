//! Storage faults: a full database and a database locked by another process fail
//! the affected writes with a clear error, never acknowledge them, keep reads and
//! the loop going, and recover without a restart.
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::reply::{info, wait_info};
use common::{TestServer, big_register, exchange, read_until_suffix};

/// Sends `big_register(name)` and returns its reply line.
fn register_big(s: &mut std::net::TcpStream, name: &str) -> String {
    s.write_all(&big_register(name)).unwrap();
    read_line(s)
}

/// The next reply line, CRLF included.
fn read_line(s: &mut std::net::TcpStream) -> String {
    String::from_utf8_lossy(&read_until_suffix(s, b"\r\n")).into_owned()
}

fn healthz(server: &TestServer) -> String {
    server.http_get("/healthz", "")
}

#[test]
fn a_full_database_fails_writes_keeps_reads_and_recovers_without_restart() {
    let server = TestServer::start_http_with(|c| c.max_db_pages = common::fresh_db_pages() + 6);
    let mut s = server.raw();
    let mut acknowledged = Vec::new();
    let mut failed = None;
    for i in 0..50 {
        let name = format!("u{i}");
        let reply = register_big(&mut s, &name);
        if reply.starts_with(':') {
            acknowledged.push(name);
        } else {
            assert!(reply.starts_with("-ERR storage: "), "{reply}");
            assert!(reply.contains("full"), "{reply}");
            failed = Some(name);
            break;
        }
    }
    let failed = failed.expect("the cap was reached");
    assert!(!acknowledged.is_empty());
    // Reads keep working; the refused user is not there.
    exchange(
        &mut s,
        format!("LOOKUP {failed}\r\n").as_bytes(),
        b"$-1\r\n",
    );
    let count = format!(":{}\r\n", acknowledged.len());
    exchange(&mut s, b"USERCOUNT\r\n", count.as_bytes());
    assert!(healthz(&server).starts_with("HTTP/1.1 503"));
    // Space returns (the cap is lifted): writes succeed again, health recovers.
    exchange(&mut s, b"CONFIG SET max-db-pages 0\r\n", b"+OK\r\n");
    let reply = register_big(&mut s, &failed);
    assert!(reply.starts_with(':'), "{reply}");
    assert!(healthz(&server).starts_with("HTTP/1.1 200"));
    let count = format!(":{}\r\n", acknowledged.len() + 1);
    exchange(&mut s, b"USERCOUNT\r\n", count.as_bytes());
}

#[test]
fn a_database_locked_by_another_process_fails_writes_quickly_then_recovers() {
    let (server, mut s) = TestServer::start_raw();
    exchange(&mut s, b"REGISTER before\r\n", b":1\r\n");
    let other = rusqlite::Connection::open(&server.db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    s.write_all(b"REGISTER during\r\n").unwrap();
    let reply = read_line(&mut s);
    assert!(
        reply.starts_with("-ERR storage: ") && reply.contains("locked"),
        "{reply}"
    );
    // The loop did not wait on the lock for long.
    assert!(started.elapsed() < Duration::from_secs(2));
    // Other clients and reads are served meanwhile (WAL readers do not wait).
    let mut t = server.raw();
    exchange(&mut t, b"PING\r\n", b"+PONG\r\n");
    exchange(&mut t, b"LOOKUP during\r\n", b"$-1\r\n");
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    exchange(&mut s, b"REGISTER during\r\n", b":2\r\n");
}

/// `GET path` on the HTTP port: the whole response, head and body.
fn http_get(server: &TestServer, path: &str) -> String {
    server.http_get(path, "")
}

#[test]
fn a_full_database_is_named_disk_full_in_info_healthz_and_metrics() {
    let server = TestServer::start_http_with(|c| c.max_db_pages = common::fresh_db_pages() + 6);
    let mut s = server.raw();
    let mut c = server.redis();
    let last_error =
        |c: &mut redis::Connection| info(c, "persistence")["storage_last_error"].clone();
    let gauge = |kind: &str, v: u8| format!("\nuserbus_storage_error{{kind=\"{kind}\"}} {v}\n");
    assert_eq!(last_error(&mut c), "none");
    let metrics = http_get(&server, "/metrics");
    assert!(metrics.contains(&gauge("disk_full", 0)), "{metrics}");

    let refused = (0..50)
        .map(|i| register_big(&mut s, &format!("u{i}")))
        .find(|reply| !reply.starts_with(':'))
        .expect("the cap was reached");
    assert!(refused.starts_with("-ERR storage: "), "{refused}");
    assert_eq!(last_error(&mut c), "disk_full");
    let health = http_get(&server, "/healthz");
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(
        health.ends_with(
            "\r\n\r\n{\"error\":\"storage failing (disk_full): the last commit did not succeed\"}"
        ),
        "{health}"
    );
    let metrics = http_get(&server, "/metrics");
    assert!(metrics.contains(&gauge("disk_full", 1)), "{metrics}");
    assert!(metrics.contains(&gauge("locked", 0)), "{metrics}");
    assert!(metrics.contains("\nuserbus_storage_ok 0\n"), "{metrics}");

    // A commit that succeeds clears the kind.
    exchange(&mut s, b"CONFIG SET max-db-pages 0\r\n", b"+OK\r\n");
    let reply = register_big(&mut s, "after");
    assert!(reply.starts_with(':'), "{reply}");
    assert_eq!(last_error(&mut c), "none");
    let metrics = http_get(&server, "/metrics");
    assert!(metrics.contains(&gauge("disk_full", 0)), "{metrics}");
}

#[test]
fn a_database_locked_by_another_process_is_named_locked() {
    let server = TestServer::start();
    let mut s = server.raw();
    let mut c = server.redis();
    let other = rusqlite::Connection::open(&server.db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    s.write_all(b"REGISTER during\r\n").unwrap();
    let reply = read_line(&mut s);
    assert!(reply.starts_with("-ERR storage: "), "{reply}");
    assert_eq!(info(&mut c, "persistence")["storage_last_error"], "locked");
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    exchange(&mut s, b"REGISTER during\r\n", b":1\r\n");
    assert_eq!(info(&mut c, "persistence")["storage_last_error"], "none");
}

#[test]
fn a_checkpoint_that_cannot_run_is_named_in_info_and_healthz_then_recovers() {
    let server = TestServer::start_http();
    let mut s = server.raw();
    let mut c = server.redis();
    exchange(&mut s, b"REGISTER before\r\n", b":1\r\n");
    // A reader holds its snapshot while the server writes past it...
    let reader = rusqlite::Connection::open(&server.db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    exchange(&mut s, b"REGISTER after\r\n", b":2\r\n");
    // ...and another process's RESTART checkpoint waits for that reader, holding
    // the checkpoint lock: the server's checkpoints find it taken.
    // (It may find the server's own checkpoint running: then it tries again.)
    std::thread::sleep(Duration::from_millis(100));
    let db = server.db.clone();
    let other = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.busy_timeout(Duration::from_secs(30)).unwrap();
        for _ in 0..100 {
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
                .unwrap();
            if busy == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    wait_checkpoint_error(&mut c, "locked");
    let failures: u64 = info(&mut c, "persistence")["checkpoint_failures"]
        .parse()
        .unwrap();
    assert!(failures >= 1);
    let health = healthz(&server);
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    assert!(health.contains("checkpoints failing (locked)"), "{health}");
    // The reader lets go, the other checkpoint finishes, and so do the server's.
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    assert!(other.join().unwrap(), "the other checkpoint never ran");
    exchange(&mut s, b"REGISTER later\r\n", b":3\r\n");
    wait_checkpoint_error(&mut c, "none");
    assert!(healthz(&server).starts_with("HTTP/1.1 200"));
}

/// Waits up to 10 s until INFO persistence names `error` as the last
/// checkpoint error.
fn wait_checkpoint_error(c: &mut redis::Connection, error: &str) {
    let what = format!("checkpoint_last_error {error}");
    wait_info(c, "persistence", Duration::from_secs(10), &what, |i| {
        i.get("checkpoint_last_error").map(String::as_str) == Some(error)
    });
}
