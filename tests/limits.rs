//! Limits that protect the server without dropping anything: output backpressure
//! for clients that do not read, and the per-tick accept budget under a burst of
//! connections.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use common::TestServer;

#[test]
fn a_client_that_does_not_read_is_paused_not_dropped() {
    let server = TestServer::start();
    let s = server.raw();
    let mut writer = s.try_clone().unwrap();
    // Far more reply bytes than the 4 MiB pending-output limit, sent without
    // reading: the server must stop reading this client, not drop replies.
    let value = "v".repeat(4096);
    let n = 3000;
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            let req = format!(
                "*2\r\n$4\r\nECHO\r\n${}\r\n{i:06}{value}\r\n",
                value.len() + 6
            );
            writer.write_all(req.as_bytes()).unwrap();
        }
    });
    // Meanwhile another client is served.
    let mut other = server.raw();
    common::exchange(&mut other, b"PING\r\n", b"+PONG\r\n");
    // Now read everything, in order.
    let mut r = BufReader::new(s);
    let mut header = String::new();
    for i in 0..n {
        header.clear();
        r.read_line(&mut header).unwrap();
        assert_eq!(header, "$4102\r\n", "reply {i}");
        let mut body = vec![0; 4102 + 2];
        r.read_exact(&mut body).unwrap();
        assert_eq!(
            &body[..6],
            format!("{i:06}").as_bytes(),
            "reply {i} in order"
        );
    }
    sender.join().unwrap();
}

/// Raises this process's soft open-files limit to its hard limit (both ends of
/// every connection live in this process); fails if that is below `need`.
fn raise_open_files(need: u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let hard: u64 = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l["Max open files".len()..].split_whitespace().nth(1))
        .and_then(|h| h.parse().ok())
        .unwrap_or(u64::MAX);
    let hard = hard.min(1 << 20);
    assert!(
        hard >= need,
        "this test needs {need} open files; the hard limit is {hard}"
    );
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
}

#[test]
fn a_burst_of_connections_beyond_the_accept_budget_is_served() {
    raise_open_files(3500);
    let server = TestServer::start();
    // More than one tick's accept budget (1000), all connected before any request.
    let mut conns: Vec<TcpStream> = (0..1500)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    for c in &mut conns {
        c.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
        c.write_all(b"PING\r\n").unwrap();
    }
    for c in &mut conns {
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"+PONG\r\n");
    }
}

#[test]
fn client_sockets_have_tcp_keepalive() {
    let (server, mut c) = TestServer::start_raw();
    common::exchange(&mut c, b"PING\r\n", b"+PONG\r\n");
    // The server's end of the connection runs the keepalive timer (iproute2's ss).
    let filter = format!("( sport = :{} )", server.addr.port());
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", &filter])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("timer:(keepalive"), "{text}");
}

#[test]
fn an_event_stream_that_does_not_read_is_dropped_at_the_subscriber_limit() {
    let server = TestServer::start_http_with(|c| {
        c.pubsub_hard_limit_bytes = 64 * 1024;
        c.pubsub_soft_limit_bytes = 32 * 1024;
        c.pubsub_soft_limit_seconds = 1;
        c.durability = userbus::Durability::Normal;
    });
    // A live stream that never reads.
    let mut stalled = server.http_raw();
    stalled
        .write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Registrations with large fields, far more than the limits, from one client.
    let mut w = server.raw();
    let v = "v".repeat(3000);
    let mut reqs = Vec::new();
    for i in 0..3000 {
        reqs.extend_from_slice(format!("REGISTER sse{i} f {v}\r\n").as_bytes());
    }
    let reader = {
        let mut r = w.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut got = 0;
            let mut buf = [0u8; 65536];
            while got < 3000 {
                let n = r.read(&mut buf).unwrap();
                got += buf[..n].iter().filter(|&&b| b == b'\n').count();
            }
        })
    };
    w.write_all(&reqs).unwrap();
    reader.join().unwrap();
    // The server dropped the stalled stream and counted it; others go on.
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    let mut c = server.redis();
    loop {
        let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
        if info.contains("slow_subscriber_disconnects:1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    common::exchange(&mut w, b"PING\r\n", b"+PONG\r\n");
}
