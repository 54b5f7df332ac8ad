//! The WAL checkpointer thread: it starts with the server, copies what the server
//! commits into the database (INFO counts it), keeps the WAL file bounded while
//! the server writes without pause, and is joined when the server stops.
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::reply::{Info, info, wait_info};
use common::{TestServer, big_register, read_until_suffix};
use userbus::config::CHECKPOINT_WAL_LIMIT_FRAMES;

/// Threads of this process named `checkpointer` (this binary runs one test, so
/// they are the server's).
fn checkpointer_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "checkpointer")
        .count()
}

/// The WAL file's size now (0 when there is none).
fn wal_bytes(db: &std::path::Path) -> u64 {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    std::fs::metadata(name).map_or(0, |m| m.len())
}

/// Polls INFO persistence until `done` holds for it, for up to 10 s.
fn wait_for(c: &mut redis::Connection, what: &str, done: impl Fn(&Info) -> bool) -> Info {
    wait_info(c, "persistence", Duration::from_secs(10), what, done)
}

fn number(p: &Info, key: &str) -> u64 {
    p[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key}: {:?}", p[key]))
}

#[test]
fn the_checkpointer_runs_with_the_server_bounds_the_wal_and_is_joined_at_stop() {
    let server = TestServer::start_fast(|_| {});
    // The thread names itself once it runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    while checkpointer_threads() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(checkpointer_threads(), 1);
    let mut c = server.redis();
    let p = info(&mut c, "persistence");
    assert_eq!(p["checkpointer"], "running");
    assert_eq!(p["checkpoint_last_error"], "none");

    // Writes are copied into the database once the loop goes quiet.
    let mut s = server.raw();
    for i in 0..20 {
        s.write_all(&big_register(&format!("first{i}"))).unwrap();
        assert_eq!(read_until_suffix(&mut s, b"\r\n").first(), Some(&b':'));
    }
    let p = wait_for(&mut c, "a checkpoint after the writes", |p| {
        number(p, "checkpoints") >= 1 && number(p, "checkpoint_pages") > 0
    });
    assert_eq!(p["checkpoint_failures"], "0");

    // Writing without pause well past the bound: the WAL starts over instead of
    // growing (the bound, plus what one tick and one checkpoint add).
    let limit = CHECKPOINT_WAL_LIMIT_FRAMES * 4096;
    let bound = limit * 3 / 2;
    let (batch, batches) = (100, 100);
    let mut largest = 0;
    for b in 0..batches {
        let mut out = Vec::new();
        for i in 0..batch {
            out.extend_from_slice(&big_register(&format!("load{b}-{i}")));
        }
        s.write_all(&out).unwrap();
        for _ in 0..batch {
            assert_eq!(read_until_suffix(&mut s, b"\r\n").first(), Some(&b':'));
        }
        largest = largest.max(wal_bytes(&server.db));
    }
    // Each registration puts two rows of ~8 KiB in the log.
    assert!((batch * batches) as u64 * 16 * 1024 > 2 * limit);
    assert!(
        largest <= bound,
        "the WAL reached {largest} bytes (bound {bound})"
    );
    let p = info(&mut c, "persistence");
    assert!(number(&p, "wal_bytes_max") <= bound, "{p:?}");
    assert_eq!(p["checkpoint_last_error"], "none");

    server.stop();
    assert_eq!(checkpointer_threads(), 0, "the thread was joined");
}
