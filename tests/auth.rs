//! Authentication and connection limits: passwords over RESP and HTTP, protected
//! mode, Redis's pre-authentication limits, the query-buffer limit, idle timeouts
//! and maxclients.
mod common;

use std::io::{Read, Write};

use std::time::{Duration, Instant};

use common::{TestServer, config_at, exchange, read_to_close};

const SECRET: &str = "s3cret-pass";
/// The reply to a command that needs a password before it.
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
/// The reply to a wrong password.
const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";

fn with_password() -> TestServer {
    TestServer::start_with(|c| c.requirepass = Some(SECRET.into()), |b| b)
}

#[test]
fn commands_before_auth_get_noauth_except_auth_hello_quit() {
    let server = with_password();
    let mut s = server.raw();
    exchange(&mut s, b"REGISTER alice\r\n", NOAUTH);
    exchange(&mut s, b"LOOKUP alice\r\n", NOAUTH);
    // As in Redis 7, PING is no exception.
    exchange(&mut s, b"PING\r\n", NOAUTH);
    exchange(&mut s, b"AUTH wrong\r\n", WRONGPASS);
    exchange(&mut s, b"AUTH someone s3cret-pass\r\n", WRONGPASS);
    exchange(&mut s, b"USERCOUNT\r\n", NOAUTH);
    exchange(&mut s, b"AUTH s3cret-pass\r\n", b"+OK\r\n");
    exchange(&mut s, b"REGISTER alice\r\n", b":1\r\n");
    let mut t = server.raw();
    exchange(&mut t, b"AUTH default s3cret-pass\r\n", b"+OK\r\n");
    exchange(&mut t, b"USERCOUNT\r\n", b":1\r\n");
    exchange(&mut t, b"QUIT\r\n", b"+OK\r\n");
}

#[test]
fn hello_authenticates_or_refuses() {
    let server = with_password();
    let mut s = std::io::BufReader::new(server.raw());
    let mut line = String::new();
    let mut reply = |s: &mut std::io::BufReader<std::net::TcpStream>, req: &str| {
        s.get_mut().write_all(req.as_bytes()).unwrap();
        line.clear();
        std::io::BufRead::read_line(s, &mut line).unwrap();
        line.clone()
    };
    assert!(reply(&mut s, "HELLO 3\r\n").starts_with("-NOAUTH HELLO must be called"));
    assert!(reply(&mut s, "HELLO 3 AUTH default nope\r\n").starts_with("-WRONGPASS"));
    assert_eq!(
        reply(&mut s, &format!("HELLO 3 AUTH default {SECRET}\r\n")),
        "%7\r\n"
    );
}

#[test]
fn redis_crate_connects_with_the_password_in_its_url() {
    let server = with_password();
    for proto in ["", "?protocol=resp3"] {
        let url = format!("redis://:{SECRET}@{}/{proto}", server.addr);
        let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
        let n: i64 = redis::cmd("USERCOUNT").query(&mut c).unwrap();
        assert_eq!(n, 0);
    }
    let url = format!("redis://:wrong@{}/", server.addr);
    let err = redis::Client::open(url)
        .unwrap()
        .get_connection()
        .err()
        .expect("a wrong password fails the hand-shake");
    assert!(err.to_string().to_lowercase().contains("auth"), "{err}");
}

#[test]
fn password_file_is_read_from_its_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-a-file\nignored\n").unwrap();
    let server = TestServer::start_with(|c| c.password_file = Some(file.clone()), |b| b);
    let mut s = server.raw();
    exchange(&mut s, b"USERCOUNT\r\n", NOAUTH);
    exchange(&mut s, b"AUTH from-a-file\r\n", b"+OK\r\n");
    exchange(&mut s, b"USERCOUNT\r\n", b":0\r\n");
}

#[test]
fn unauthenticated_clients_get_redis_limits() {
    let server = with_password();
    let mut s = server.raw();
    s.write_all(b"*11\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut s),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    let mut s = server.raw();
    s.write_all(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut s),
        b"-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    // After AUTH the normal limits apply.
    let mut s = server.raw();
    exchange(&mut s, b"AUTH s3cret-pass\r\n", b"+OK\r\n");
    let big = "v".repeat(20_000);
    let req = format!("*2\r\n$4\r\nECHO\r\n${}\r\n{big}\r\n", big.len());
    let want = format!("${}\r\n{big}\r\n", big.len());
    exchange(&mut s, req.as_bytes(), want.as_bytes());
}

#[test]
fn http_requires_the_bearer_token_except_healthz() {
    let server = TestServer::start_http_with(|c| c.requirepass = Some(SECRET.into()));
    let get = |path: &str, auth: Option<&str>| -> String {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        server.http_get(path, &auth)
    };
    assert!(get("/healthz", None).starts_with("HTTP/1.1 200"));
    // The page loads, and asks for the password for what it reads.
    assert!(get("/", None).starts_with("HTTP/1.1 200"));
    let denied = get("/users", None);
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(denied.contains("WWW-Authenticate: Bearer"));
    assert!(get("/users", Some("Bearer nope")).starts_with("HTTP/1.1 401"));
    assert!(get("/users", Some(&format!("Bearer {SECRET}"))).starts_with("HTTP/1.1 200"));
}

/// `POST /events/token` with `auth` (an `Authorization` value): status and body.
fn stream_token(server: &TestServer, auth: Option<&str>) -> (u16, String) {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    server.http_request("POST", "/events/token", &auth, "")
}

#[test]
fn event_stream_token_starts_one_stream_and_nothing_else() {
    let server = TestServer::start_http_with(|c| c.requirepass = Some(SECRET.into()));
    let bearer = format!("Bearer {SECRET}");
    // The token itself needs the password.
    assert_eq!(stream_token(&server, None).0, 401);
    assert_eq!(stream_token(&server, Some("Bearer nope")).0, 401);
    let (status, body) = stream_token(&server, Some(&bearer));
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["expires_in"], 60, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    assert_eq!(token.len(), 32, "{token}");

    // Not a key to the other routes, nor to the password's own routes.
    for (method, path) in [
        ("GET", "/users"),
        ("POST", "/users"),
        ("DELETE", "/users/alice"),
        ("GET", "/metrics"),
        ("POST", "/events/token"),
        ("HEAD", "/events"),
    ] {
        let (status, _) = server.http_request(
            method,
            &format!("{path}?token={token}"),
            "",
            "{\"name\":\"x\"}",
        );
        assert_eq!(status, 401, "{method} {path} with a stream token");
    }
    // A wrong token, or none, is refused like a wrong password.
    for target in ["/events?token=nope", "/events?token=", "/events"] {
        let resp = server.http_get(target, "");
        assert!(resp.starts_with("HTTP/1.1 401"), "{target}: {resp}");
        assert!(resp.contains("WWW-Authenticate: Bearer"), "{resp}");
    }

    // The token starts one stream; the stream then runs as any other.
    let mut s = server.http_raw();
    write!(
        s,
        "GET /events?last=1&token={token} HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .expect("write");
    let mut head = [0u8; 15];
    s.read_exact(&mut head).expect("stream head");
    assert_eq!(&head, b"HTTP/1.1 200 OK");
    // Spent: a second start (a reconnect reusing the URL) needs a new token.
    let again = server.http_get(&format!("/events?token={token}"), "");
    assert!(again.starts_with("HTTP/1.1 401"), "{again}");
    // Every refused password or token counted; requests that offered neither did not.
    let metrics = server.http_get("/metrics", &format!("Authorization: {bearer}\r\n"));
    assert!(
        metrics.contains("\nuserbus_errors_total{kind=\"auth\"} 10\n"),
        "{metrics}"
    );
}

#[test]
fn protected_mode_refuses_a_network_address_without_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = userbus::Config {
        bind: "0.0.0.0".parse().unwrap(),
        ..config_at(&dir.path().join("db"))
    };
    let err = userbus::Server::builder(config.clone())
        .build()
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("protected mode") && msg.contains("--requirepass"),
        "{msg}"
    );
    // Either a password or an explicit opt-out lets it start.
    let ok = userbus::Server::builder(userbus::Config {
        protected_mode: false,
        ..config.clone()
    })
    .build();
    assert!(ok.is_ok());
    drop(ok);
    let ok = userbus::Server::builder(userbus::Config {
        requirepass: Some("x".into()),
        ..config
    })
    .build();
    assert!(ok.is_ok());
}

#[test]
fn query_buffer_over_its_limit_closes_the_connection() {
    let server = TestServer::start_with(|c| c.max_query_buffer_bytes = 64 * 1024, |b| b);
    let mut s = server.raw();
    // A request array that never completes: many small bulks, growing the buffer.
    let mut req = b"*100000\r\n".to_vec();
    for _ in 0..20_000 {
        req.extend_from_slice(b"$1\r\nx\r\n");
    }
    // The server may close while we are still writing.
    let _ = s.write_all(&req);
    let mut rest = Vec::new();
    let closed = matches!(s.read_to_end(&mut rest), Ok(_) | Err(_));
    assert!(
        closed && rest.is_empty(),
        "no reply, just a close: {rest:?}"
    );
    let mut c = server.redis();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).unwrap();
    assert!(info.contains("query_buffer_closes:1"), "{info}");
}

#[test]
fn idle_clients_are_closed_after_the_timeout_but_subscribers_stay() {
    let server = TestServer::start_with(|c| c.timeout = 1, |b| b);
    let mut idle = server.raw();
    exchange(&mut idle, b"PING\r\n", b"+PONG\r\n");
    let mut sub = server.raw();
    exchange(
        &mut sub,
        b"SUBSCRIBE user.registered\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$15\r\nuser.registered\r\n:1\r\n",
    );
    let started = Instant::now();
    assert!(read_to_close(&mut idle).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The subscriber outlived the idle client and still gets events.
    let mut c = server.redis();
    let _: i64 = redis::cmd("REGISTER").arg("late").query(&mut c).unwrap();
    let mut buf = [0u8; 256];
    let n = sub.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"*3\r\n$7\r\nmessage\r\n"));
}

#[test]
fn maxclients_refuses_the_next_client_with_an_error() {
    let server = TestServer::start_with(|c| c.maxclients = 2, |b| b);
    let mut a = server.raw();
    let mut b = server.raw();
    exchange(&mut a, b"PING\r\n", b"+PONG\r\n");
    exchange(&mut b, b"PING\r\n", b"+PONG\r\n");
    let mut c = server.raw();
    assert_eq!(
        read_to_close(&mut c),
        b"-ERR max number of clients reached\r\n"
    );
    drop(a);
    // A slot frees once the server has seen the close.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut d = server.raw();
        d.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = d.read(&mut buf).unwrap_or(0);
        if &buf[..n] == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}
