//! The server starts, answers PING over a raw socket and over the redis crate.
mod common;

use common::{TestServer, exchange};

#[test]
fn ping_answers_on_raw_socket_and_redis_client() {
    let (server, mut s) = TestServer::start_raw();
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n");
    let mut c = server.redis();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
    server.stop();
}
