//! What a Redis client notices, checked against a real redis-server 7: the same
//! requests go to both and the replies are compared byte for byte, or, where they
//! carry the servers' own clocks, with those times checked and set aside. The
//! Redis side's `events` stream is written with XADD to hold exactly userbus's log.
//!
//! Covered: reads without COUNT return every entry (past the 1000 of XREAD and
//! the 100,000 of XRANGE that userbus once stopped at). Without redis-server the
//! comparisons are skipped with a note (see `common::reference`).
mod common;

use common::reference::{RawClient, RedisServer};
use common::stream::{EVENTS, Entry, all_events};
use common::{TestServer, resp, show};

/// Sends `args` to userbus (`ub`) and to Redis (`rd`); their replies must be the
/// same bytes. Returns userbus's.
fn same_reply(ub: &mut RawClient, rd: &mut RawClient, args: &[&str]) -> Vec<u8> {
    let (got, want) = (ub.call(args), rd.call(args));
    if got != want {
        let at = got
            .iter()
            .zip(&want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        let from = at.saturating_sub(200);
        panic!(
            "{args:?}: userbus and Redis differ at byte {at} of {} / {}:\n userbus: {}\n   redis: {}",
            got.len(),
            want.len(),
            show(&got[from..(at + 200).min(got.len())]),
            show(&want[from..(at + 200).min(want.len())]),
        );
    }
    got
}

/// Switches both connections to RESP3 (their HELLO replies name different
/// servers, so they are not compared).
fn hello3(ub: &mut RawClient, rd: &mut RawClient) {
    for c in [ub, rd] {
        let hello = c.call(&["HELLO", "3"]);
        assert!(hello.starts_with(b"%"), "HELLO 3: {}", show(&hello));
    }
}

/// Registers `u0`, `u1`, ... (`n` users) over one pipelined connection and
/// returns the log's entries.
fn register_many(server: &TestServer, n: usize) -> Vec<Entry> {
    let mut c = RawClient::connect(server.addr);
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut batch = Vec::new();
        for i in chunk {
            batch.extend(resp(&["REGISTER", &format!("u{i}")]));
        }
        c.send(&batch);
        for i in chunk {
            let reply = c.reply();
            assert!(reply.starts_with(b":"), "REGISTER u{i}: {}", show(&reply));
        }
    }
    all_events(&mut server.redis())
}

#[test]
fn reads_without_count_return_every_entry_as_redis_does() {
    let Some(redis) = RedisServer::start(&[]) else {
        return;
    };
    let server = TestServer::start_fast(|_| {});
    let all = register_many(&server, 100_050);
    assert_eq!(all.len(), 100_050);
    redis.mirror(&all);
    let (mut ub, mut rd) = (RawClient::connect(server.addr), redis.client());

    let range = same_reply(&mut ub, &mut rd, &["XRANGE", EVENTS, "-", "+"]);
    assert!(range.starts_with(b"*100050\r\n"), "{}", show(&range[..40]));
    for args in [
        &["XREVRANGE", EVENTS, "+", "-"][..],
        &["XRANGE", EVENTS, "-", "+", "COUNT", "100049"],
        &["XREAD", "STREAMS", EVENTS, "0"],
        &["XREAD", "COUNT", "0", "STREAMS", EVENTS, "0"],
        &["XREAD", "COUNT", "-1", "STREAMS", EVENTS, &all[10].id],
        &["XGROUP", "CREATE", EVENTS, "g", "0"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, ">"],
        &["XREADGROUP", "GROUP", "g", "c", "STREAMS", EVENTS, "0"],
        &["XPENDING", EVENTS, "g"],
    ] {
        same_reply(&mut ub, &mut rd, args);
    }
    let read = same_reply(&mut ub, &mut rd, &["XREAD", "STREAMS", EVENTS, "0"]);
    let head = b"*1\r\n*2\r\n$6\r\nevents\r\n*100050\r\n";
    assert!(read.starts_with(head), "{}", show(&read[..40]));

    hello3(&mut ub, &mut rd);
    for args in [
        &["XREAD", "STREAMS", EVENTS, &all[98_000].id][..],
        &["XRANGE", EVENTS, &all[90_000].id, "+"],
        &["XGROUP", "CREATE", EVENTS, "h", &all[99_000].id],
        &["XREADGROUP", "GROUP", "h", "c", "STREAMS", EVENTS, ">"],
    ] {
        same_reply(&mut ub, &mut rd, args);
    }
}
