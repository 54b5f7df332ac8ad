//! The HTTP port as its clients see it: `curl`-style raw requests, a real HTTP
//! client (`ureq`), an event-stream reader and a Prometheus parser.
//!
//! Raw sockets pin the exact bytes of every limit and refusal (431, 414, 413, 408,
//! 501, 400), that the connection closes after it, and that a connection beside it
//! goes on unharmed; they also drive keep-alive, pipelining, `Connection: close`,
//! HTTP/1.0 and HEAD. `ureq` drives the happy paths of the user routes. Writes over
//! HTTP are checked against what RESP clients see (pub/sub pushes, XRANGE), and
//! `/events` against the durable log, with `Last-Event-ID` and `?from=` resumes.
//!
//! Wherever the server decides a value (ids, seqs, timestamps) the expectation comes
//! from the server's own replies, never from this file.
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::reply::{call, info, register_new};
use common::stream::{Entry, all_events};
use common::{IO_TIMEOUT, TestServer, assert_bytes, bulk, exchange_resp, read_frame, show};
use redis::Value as Redis;
use serde_json::{Value, json};
use userbus::config::{MAX_FIELD_VALUE_BYTES, MAX_FIELDS, MAX_NAME_BYTES};
use userbus::http::{
    MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADERS, MAX_TARGET_BYTES, REQUEST_TIMEOUT,
};

const REGISTERED: &str = "user.registered";
const UNREGISTERED: &str = "user.unregistered";

/// `GET /healthz` on a keep-alive connection, as the server answers it.
const HEALTHZ_OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
    Content-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";

/// The head of an event stream and its opening comment.
const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\nConnection: keep-alive\r\nX-Accel-Buffering: no\r\n\r\n\
    : userbus events\n\n";

// ---------------------------------------------------------------------------
// Bytes on the wire
// ---------------------------------------------------------------------------

/// A response as the server writes it: its headers in the server's order.
fn response(
    status_line: &str,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: {}\r\n",
        body.len(),
        if keep_alive { "keep-alive" } else { "close" }
    );
    for (k, v) in extra {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A JSON error response `{"error": message}`.
fn json_error(status_line: &str, message: &str, keep_alive: bool) -> Vec<u8> {
    let body = json!({ "error": message }).to_string();
    response(
        status_line,
        "application/json",
        body.as_bytes(),
        keep_alive,
        &[],
    )
}

/// Reads until the server closes the connection. A reset after the response counts
/// as closed: the kernel resets when the peer closes with input left unread.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !out.is_empty() => return out,
            Err(e) => panic!(
                "waiting for the server to close: {e}; read so far: {}",
                show(&out)
            ),
        }
    }
}

/// Asserts that a keep-alive connection still answers `GET /healthz`.
#[track_caller]
fn assert_serves(s: &mut TcpStream) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let mut got = vec![0; HEALTHZ_OK.len()];
    s.read_exact(&mut got).expect("healthz reply");
    assert_bytes(&got, HEALTHZ_OK, "a keep-alive connection beside it");
}

/// Sends `request` (which ends the connection: `Connection: close`) on a fresh
/// connection and asserts the exact response, up to the server's close.
#[track_caller]
fn assert_answers(server: &TestServer, request: &[u8], want: &[u8], what: &str) {
    let mut s = server.http_raw();
    s.write_all(request).expect("write");
    assert_bytes(&read_until_closed(&mut s), want, what);
}

/// `GET /healthz` answered on a connection that closes after it.
fn healthz_closing() -> Vec<u8> {
    response("200 OK", "text/plain; charset=utf-8", b"ok\n", false, &[])
}

/// Sends `request` on a fresh connection and asserts the exact refusal, that the
/// server closes after it, and that a keep-alive connection opened before it is
/// still served afterwards.
#[track_caller]
fn assert_refused(server: &TestServer, request: &[u8], want: &[u8]) {
    let mut bystander = server.http_raw();
    assert_serves(&mut bystander);
    let mut s = server.http_raw();
    // The server may refuse before it has read everything and close: a failed
    // write is part of being refused.
    let _ = s.write_all(request);
    let got = read_until_closed(&mut s);
    assert_bytes(&got, want, &format!("reply to {}", show(request)));
    assert_serves(&mut bystander);
}

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", show(&self.body)))
    }
}

/// Reads one response; `head` for a response to HEAD (no body follows).
fn read_response(r: &mut impl BufRead, head: bool) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header line");
        let l = line.trim_end_matches("\r\n");
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(": ")
            .unwrap_or_else(|| panic!("not a header: {l:?}"));
        headers.push((k.to_string(), v.to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if !head {
        let len: usize = resp
            .header("Content-Length")
            .expect("Content-Length")
            .parse()
            .expect("numeric Content-Length");
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).expect("body");
    }
    resp
}

/// A request with a JSON body.
fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

// ---------------------------------------------------------------------------
// A real HTTP client, the redis crate, and the event stream
// ---------------------------------------------------------------------------

/// A `ureq` agent that hands back 4xx and 5xx responses instead of errors.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(IO_TIMEOUT))
        .build()
        .into()
}

/// Status, `Location` and JSON body (`Null` when empty) of a ureq response.
fn outcome(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut resp = resp.expect("an HTTP response");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

fn create(agent: &ureq::Agent, server: &TestServer, body: &Value) -> (u16, Value) {
    outcome(
        agent
            .post(server.url("/users"))
            .header("Content-Type", "application/json")
            .send(body.to_string()),
    )
}

/// Every name `GET /users` lists, following the cursor to 0 with pages of `limit`;
/// also returns how many pages it took and the first page's `last_seq`.
fn list_all(
    agent: &ureq::Agent,
    server: &TestServer,
    limit: usize,
    pattern: Option<&str>,
) -> (Vec<String>, usize, i64) {
    let mut names = Vec::new();
    let mut cursor = 0;
    let mut pages = 0;
    let mut last_seq = None;
    loop {
        let mut url = server.url(&format!("/users?cursor={cursor}&limit={limit}"));
        if let Some(p) = pattern {
            url.push_str(&format!("&match={p}"));
        }
        let (status, page) = outcome(agent.get(&url).call());
        assert_eq!(status, 200, "{url}: {page}");
        pages += 1;
        let batch = page["users"].as_array().expect("users array");
        assert!(batch.len() <= limit, "page over its limit: {page}");
        names.extend(batch.iter().map(|n| n.as_str().expect("name").to_string()));
        last_seq.get_or_insert(page["last_seq"].as_i64().expect("last_seq"));
        cursor = page["next_cursor"].as_i64().expect("next_cursor");
        if cursor == 0 {
            return (names, pages, last_seq.unwrap_or(0));
        }
        assert!(pages < 1000, "the cursor never came back to 0");
    }
}

/// One event-stream frame.
#[derive(Debug)]
struct Frame {
    id: i64,
    event: String,
    data: Value,
}

/// A raw `GET /events` connection, read frame by frame.
struct EventStream {
    r: BufReader<TcpStream>,
}

impl EventStream {
    /// Sends `GET <target>` with `headers` and checks the exact stream head.
    fn open(server: &TestServer, target: &str, headers: &str) -> EventStream {
        let mut s = server.http_raw();
        write!(s, "GET {target} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").expect("write");
        let mut r = BufReader::new(s);
        let mut head = vec![0; SSE_HEAD.len()];
        r.read_exact(&mut head).expect("stream head");
        assert_bytes(&head, SSE_HEAD, &format!("head of GET {target}"));
        EventStream { r }
    }

    /// The next frame; comments (heartbeats) are skipped.
    fn next(&mut self) -> Frame {
        let (mut id, mut event, mut data) = (None, None, None);
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("an event frame");
            assert!(n > 0, "the stream ended");
            let line = line.strip_suffix('\n').expect("lines end in \\n");
            if line.is_empty() {
                if id.is_none() && event.is_none() && data.is_none() {
                    continue; // the end of a comment
                }
                return Frame {
                    id: id.expect("frame has id:"),
                    event: event.expect("frame has event:"),
                    data: data.expect("frame has data:"),
                };
            }
            if line.starts_with(':') {
                continue;
            }
            let (k, v) = line
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a field line: {line:?}"));
            match k {
                "id" => id = Some(v.parse::<i64>().expect("numeric id")),
                "event" => event = Some(v.to_string()),
                "data" => {
                    assert!(data.is_none(), "one data line per frame");
                    data = Some(serde_json::from_str(v).expect("data is JSON"));
                }
                other => panic!("unexpected field {other:?}"),
            }
        }
    }
}

/// Asserts a frame is the event `seq` of `kind` for user `name` with id `id`.
#[track_caller]
fn assert_frame(f: &Frame, seq: i64, kind: &str, id: i64, name: &str) {
    assert_eq!(f.id, seq, "{f:?}");
    assert_eq!(f.event, kind, "{f:?}");
    assert_eq!(f.data["seq"], seq, "{f:?}");
    assert_eq!(f.data["kind"], kind, "{f:?}");
    assert_eq!(f.data["id"], id, "{f:?}");
    assert_eq!(f.data["name"], name, "{f:?}");
    assert!(f.data["at"].is_string(), "{f:?}");
}

/// The `seq` of the newest event, from XRANGE.
fn newest_seq(con: &mut redis::Connection) -> i64 {
    all_events(con).last().map_or(0, Entry::seq)
}

// ---------------------------------------------------------------------------
// Limits and refusals: exact status, JSON error, close, neighbours unharmed
// ---------------------------------------------------------------------------

/// A GET of `/healthz` whose head is exactly `len` bytes, padded in one header.
fn head_of_len(len: usize) -> Vec<u8> {
    let start = "GET /healthz HTTP/1.1\r\nConnection: close\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = len - start.len() - end.len();
    format!("{start}{}{end}", "a".repeat(pad)).into_bytes()
}

#[test]
fn head_over_16_kib_is_refused_with_431_and_close() {
    let server = TestServer::start_http();
    let refusal = json_error(
        "431 Request Header Fields Too Large",
        "request head too large",
        false,
    );
    // Complete but one byte too long.
    assert_refused(&server, &head_of_len(MAX_HEAD_BYTES + 1), &refusal);
    // Never complete: refused once it outgrows the limit, not left to time out.
    let mut endless = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    endless.resize(MAX_HEAD_BYTES + 100, b'a');
    assert_refused(&server, &endless, &refusal);
    // Exactly at the limit is served.
    let at_limit = head_of_len(MAX_HEAD_BYTES);
    let what = "a head of exactly MAX_HEAD_BYTES";
    assert_answers(&server, &at_limit, &healthz_closing(), what);
}

/// A GET of `/healthz` with `n` headers, the last one `Connection: close`.
fn with_headers(n: usize) -> Vec<u8> {
    let mut req = "GET /healthz HTTP/1.1\r\n".to_string();
    for i in 0..n - 1 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.into_bytes()
}

#[test]
fn more_than_64_headers_are_refused_with_431_and_close() {
    let server = TestServer::start_http();
    assert_refused(
        &server,
        &with_headers(MAX_HEADERS + 1),
        &json_error(
            "431 Request Header Fields Too Large",
            &format!("more than {MAX_HEADERS} headers"),
            false,
        ),
    );
    let at_limit = with_headers(MAX_HEADERS);
    let what = "exactly MAX_HEADERS headers";
    assert_answers(&server, &at_limit, &healthz_closing(), what);
}

#[test]
fn target_over_4096_bytes_is_refused_with_414_and_close() {
    let server = TestServer::start_http();
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(MAX_TARGET_BYTES)
    );
    assert_refused(
        &server,
        long.as_bytes(),
        &json_error("414 URI Too Long", "request target too long", false),
    );
    // A target of exactly the limit is routed (to a 404: no such route).
    let at_limit = format!(
        "GET /{} HTTP/1.1\r\nConnection: close\r\n\r\n",
        "a".repeat(MAX_TARGET_BYTES - 1)
    );
    let not_found = json_error("404 Not Found", "no such route", false);
    let what = "a target of exactly MAX_TARGET_BYTES";
    assert_answers(&server, at_limit.as_bytes(), &not_found, what);
}

#[test]
fn body_over_256_kib_is_refused_with_413_before_it_is_sent() {
    let server = TestServer::start_http();
    let refusal = json_error(
        "413 Content Too Large",
        &format!("body over {MAX_BODY_BYTES} bytes"),
        false,
    );
    // The head alone is enough: the server does not wait for the body.
    let head = format!(
        "POST /users HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    assert_refused(&server, head.as_bytes(), &refusal);
    // A length no integer holds is just as oversized.
    assert_refused(
        &server,
        b"POST /users HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
        &refusal,
    );
}

#[test]
fn body_over_256_kib_sent_in_full_still_gets_its_413() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    let len = MAX_BODY_BYTES + 40_000;
    let mut req =
        format!("POST /users HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").into_bytes();
    req.resize(req.len() + len, b' ');
    let _ = s.write_all(&req);
    let got = read_until_closed(&mut s);
    assert_bytes(
        &got,
        &json_error(
            "413 Content Too Large",
            &format!("body over {MAX_BODY_BYTES} bytes"),
            false,
        ),
        "an oversized body sent in full",
    );
}

#[test]
fn body_of_exactly_256_kib_is_accepted() {
    let server = TestServer::start_http();
    // Valid JSON padded with trailing whitespace to the limit.
    let mut body = br#"{"name":"padded"}"#.to_vec();
    body.resize(MAX_BODY_BYTES, b' ');
    let mut req = format!(
        "POST /users HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let created = response(
        "201 Created",
        "application/json",
        br#"{"id":1,"name":"padded"}"#,
        false,
        &[("Location", "/users/padded")],
    );
    assert_answers(&server, &req, &created, "a body of exactly MAX_BODY_BYTES");
}

#[test]
fn transfer_encoding_is_refused_with_501_and_close() {
    let server = TestServer::start_http();
    let refusal = json_error(
        "501 Not Implemented",
        "Transfer-Encoding is not supported; send Content-Length",
        false,
    );
    assert_refused(
        &server,
        b"POST /users HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          d\r\n{\"name\":\"x\"}\r\n0\r\n\r\n",
        &refusal,
    );
    // The classic smuggling pair: both framings on one request.
    assert_refused(
        &server,
        b"POST /users HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        &refusal,
    );
    // Any value, any case.
    assert_refused(
        &server,
        b"GET /healthz HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
        &refusal,
    );
    // No user came in through any of them.
    let (status, _) = outcome(agent().get(server.url("/users/x")).call());
    assert_eq!(status, 404);
}

#[test]
fn duplicate_content_length_is_refused_with_400_and_close() {
    let server = TestServer::start_http();
    let refusal = json_error("400 Bad Request", "duplicate Content-Length", false);
    for (a, b) in [("2", "2"), ("2", "13")] {
        let req = format!(
            "POST /users HTTP/1.1\r\nContent-Length: {a}\r\nContent-Length: {b}\r\n\r\n\
             {{\"name\":\"x\"}}"
        );
        assert_refused(&server, req.as_bytes(), &refusal);
    }
}

#[test]
fn non_digit_content_length_is_refused_with_400_and_close() {
    let server = TestServer::start_http();
    let refusal = json_error("400 Bad Request", "Content-Length must be digits", false);
    for value in ["+2", "-1", "2, 2", "0x2", "2 2", "two", ""] {
        let req = format!("POST /users HTTP/1.1\r\nContent-Length: {value}\r\n\r\n{{}}");
        assert_refused(&server, req.as_bytes(), &refusal);
    }
}

#[test]
fn malformed_request_is_refused_with_400_and_close() {
    let server = TestServer::start_http();
    assert_refused(
        &server,
        b"HELLO\r\n\r\n",
        &json_error("400 Bad Request", "malformed request: invalid token", false),
    );
    assert_refused(
        &server,
        b"GET / HTTP/9.9\r\n\r\n",
        &json_error(
            "400 Bad Request",
            "malformed request: invalid HTTP version",
            false,
        ),
    );
}

#[test]
fn slow_request_gets_408_and_close_even_while_trickling() {
    let server = TestServer::start_http();
    let mut idle = server.http_raw();
    assert_serves(&mut idle);
    let mut slow = server.http_raw();
    // The read timeout paces the trickle: a byte a second until the server answers.
    slow.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(
                    started.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(5),
                    "no 408 after {:?}",
                    started.elapsed()
                );
                if got.is_empty() {
                    // Each byte is progress, but the deadline counts from the first.
                    let _ = slow.write_all(b"a");
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset && !got.is_empty() => break,
            Err(e) => panic!("reading the 408: {e}"),
        }
    }
    let elapsed = started.elapsed();
    assert_bytes(
        &got,
        &json_error("408 Request Timeout", "request not complete in time", false),
        "a request trickling in past REQUEST_TIMEOUT",
    );
    assert!(
        elapsed >= REQUEST_TIMEOUT,
        "408 after {elapsed:?}, before REQUEST_TIMEOUT"
    );
    // The deadline is checked once a second.
    assert!(
        elapsed < REQUEST_TIMEOUT + Duration::from_secs(3),
        "408 only after {elapsed:?}"
    );
    // A keep-alive connection with no request in flight is not a slow request.
    assert_serves(&mut idle);
}

// ---------------------------------------------------------------------------
// Connections: keep-alive, pipelining, close, HTTP/1.0, HEAD, 404, 405
// ---------------------------------------------------------------------------

#[test]
fn keep_alive_serves_requests_one_after_another() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    for _ in 0..5 {
        assert_serves(&mut s);
    }
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    let mut batch = String::new();
    batch.push_str(&post("/users", r#"{"name":"pip","fields":{"k":"v"}}"#));
    batch.push_str("GET /users/pip HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.push_str(&post("/users", r#"{"name":"pip"}"#));
    batch.push_str("DELETE /users/pip HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.push_str("GET /users/pip HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.push_str("HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.push_str("GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
    batch.push_str("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    s.write_all(batch.as_bytes()).expect("write");
    let mut r = BufReader::new(s);
    let mut statuses = Vec::new();
    let created = read_response(&mut r, false);
    statuses.push(created.status);
    let id = created.json()["id"].as_i64().expect("id");
    let fetched = read_response(&mut r, false);
    statuses.push(fetched.status);
    assert_eq!(fetched.json()["id"], id);
    assert_eq!(fetched.json()["fields"], json!({"k": "v"}));
    for head in [false, false, false, true, false, false] {
        statuses.push(read_response(&mut r, head).status);
    }
    assert_eq!(statuses, [201, 200, 409, 204, 404, 200, 404, 200]);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("close after the last");
    assert_bytes(&rest, b"", "nothing after the Connection: close response");
}

#[test]
fn request_split_across_writes_is_answered_once_complete() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    let req = post("/users", r#"{"name":"split"}"#);
    let (a, b) = req.split_at(req.len() / 2);
    s.write_all(a.as_bytes()).expect("write");
    // A full round trip on another connection lets the server's loop go by, so the
    // halves most likely arrive in different reads.
    assert_serves(&mut server.http_raw());
    s.write_all(b.as_bytes()).expect("write");
    let resp = read_response(&mut BufReader::new(s), false);
    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["name"], "split");
}

#[test]
fn connection_close_is_honoured_after_the_response() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        .expect("write");
    // One response, then the close: the pipelined second request is not answered.
    assert_bytes(
        &read_until_closed(&mut s),
        &response("200 OK", "text/plain; charset=utf-8", b"ok\n", false, &[]),
        "Connection: close",
    );
}

#[test]
fn http_1_0_closes_by_default_and_keeps_alive_when_asked() {
    let server = TestServer::start_http();
    let ok_close = response("200 OK", "text/plain; charset=utf-8", b"ok\n", false, &[]);
    let mut s = server.http_raw();
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .expect("write");
    assert_bytes(&read_until_closed(&mut s), &ok_close, "HTTP/1.0");

    let mut s = server.http_raw();
    s.write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .expect("write");
    let mut got = vec![0; HEALTHZ_OK.len()];
    s.read_exact(&mut got).expect("reply");
    assert_bytes(&got, HEALTHZ_OK, "HTTP/1.0 with Connection: keep-alive");
    s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        .expect("write");
    assert_bytes(&read_until_closed(&mut s), &ok_close, "then HTTP/1.0 again");
}

#[test]
fn head_sends_the_headers_of_get_without_the_body() {
    let server = TestServer::start_http();
    let mut redis = server.redis();
    register_new(&mut redis, "hd", &[]);
    let mut s = server.http_raw();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for path in [
        "/",
        "/healthz",
        "/users/hd",
        "/users",
        "/metrics",
        "/nowhere",
    ] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
        let get = read_response(&mut r, false);
        write!(s, "HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
        let head = read_response(&mut r, true);
        assert_eq!(head.status, get.status, "HEAD {path}");
        assert_eq!(head.header("Content-Type"), get.header("Content-Type"));
        if path != "/metrics" {
            // (the metrics change between two requests)
            assert_eq!(
                head.header("Content-Length"),
                Some(get.body.len().to_string().as_str()),
                "HEAD {path}"
            );
        }
    }
    // HEAD /events answers the stream's head and does not become a stream: the
    // next request on the connection is answered.
    s.write_all(b"HEAD /events HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let head = read_response(&mut r, true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Type"), Some("text/event-stream"));
    assert_serves(&mut s);
}

#[test]
fn unknown_path_is_404_with_a_json_error() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for path in ["/nowhere", "/users2", "/healthz/x", "/user/a"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").expect("write");
        let resp = read_response(&mut r, false);
        assert_eq!(resp.status, 404, "GET {path}");
        assert_eq!(resp.json(), json!({"error": "no such route"}), "GET {path}");
    }
    s.write_all(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let want = json_error("404 Not Found", "no such route", true);
    let mut got = vec![0; want.len()];
    r.read_exact(&mut got).expect("reply");
    assert_bytes(&got, &want, "GET /nowhere");
}

#[test]
fn wrong_method_is_405_with_allow_and_keeps_the_connection() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    for (req, allow) in [
        (
            "PUT /users HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            "GET, HEAD, POST",
        ),
        ("DELETE /users HTTP/1.1\r\n\r\n", "GET, HEAD, POST"),
        (
            "POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET, HEAD",
        ),
        ("DELETE /metrics HTTP/1.1\r\n\r\n", "GET, HEAD"),
        (
            "POST /events HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET, HEAD",
        ),
        ("PUT / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", "GET, HEAD"),
        (
            "POST /users/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            "PUT /users/a HTTP/1.1\r\nContent-Length: 3\r\n\r\n{ }",
            "GET, HEAD, PATCH, DELETE",
        ),
    ] {
        s.write_all(req.as_bytes()).expect("write");
        let want = response(
            "405 Method Not Allowed",
            "application/json",
            br#"{"error":"method not allowed"}"#,
            true,
            &[("Allow", allow)],
        );
        let mut got = vec![0; want.len()];
        s.read_exact(&mut got).expect("reply");
        assert_bytes(&got, &want, req);
        // The body was consumed with the request: the connection is in step.
        assert_serves(&mut s);
    }
}

// ---------------------------------------------------------------------------
// The user routes through a real HTTP client
// ---------------------------------------------------------------------------

#[test]
fn users_are_created_read_and_deleted_over_http() {
    let server = TestServer::start_http();
    let agent = agent();
    let resp = agent
        .post(server.url("/users"))
        .header("Content-Type", "application/json")
        .send(json!({"name": "alice", "fields": {"email": "a@example.com"}}).to_string())
        .expect("POST");
    assert_eq!(resp.status(), 201);
    let location = resp
        .headers()
        .get("location")
        .expect("Location")
        .to_str()
        .expect("ASCII")
        .to_string();
    assert_eq!(location, "/users/alice");
    let (_, created) = outcome(Ok(resp));
    let id = created["id"].as_i64().expect("id");
    assert_eq!(created, json!({"id": id, "name": "alice"}));

    let (status, user) = outcome(agent.get(server.url(&location)).call());
    assert_eq!(status, 200);
    assert_eq!(user["id"], id);
    assert_eq!(user["name"], "alice");
    assert_eq!(user["fields"], json!({"email": "a@example.com"}));
    let at = user["created_at"].as_str().expect("created_at");
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "created_at is RFC 3339 in UTC with milliseconds: {at}"
    );

    let again = create(&agent, &server, &json!({"name": "alice"}));
    assert_eq!(again, (409, json!({"error": "name taken"})));

    let (status, body) = outcome(agent.delete(server.url("/users/alice")).call());
    assert_eq!((status, body), (204, Value::Null));
    let gone = outcome(agent.delete(server.url("/users/alice")).call());
    assert_eq!(gone, (404, json!({"error": "no such user"})));
    let gone = outcome(agent.get(server.url("/users/alice")).call());
    assert_eq!(gone, (404, json!({"error": "no such user"})));
    // The name is free again, under a new id.
    let (status, body) = create(&agent, &server, &json!({"name": "alice"}));
    assert_eq!(status, 201);
    assert!(body["id"].as_i64().expect("id") > id);
}

#[test]
fn bad_json_is_400_and_invalid_users_are_422() {
    let server = TestServer::start_http();
    let agent = agent();
    let send = |body: &str| {
        outcome(
            agent
                .post(server.url("/users"))
                .header("Content-Type", "application/json")
                .send(body.to_string()),
        )
    };
    for bad in ["{", "", "name=alice", "{\"name\": \"a\",}"] {
        let (status, body) = send(bad);
        assert_eq!(status, 400, "{bad:?}: {body}");
        let msg = body["error"].as_str().expect("error");
        assert!(msg.starts_with("invalid JSON: "), "{bad:?}: {msg}");
    }
    let too_long = "n".repeat(MAX_NAME_BYTES + 1);
    let many: serde_json::Map<String, Value> = (0..=MAX_FIELDS)
        .map(|i| (format!("f{i}"), json!("v")))
        .collect();
    let big_value = "v".repeat(MAX_FIELD_VALUE_BYTES + 1);
    for (body, error) in [
        (json!(["alice"]), "the body must be a JSON object"),
        (json!({"fields": {}}), "\"name\" must be a string"),
        (json!({"name": 7}), "\"name\" must be a string"),
        (json!({"name": ""}), "invalid name: must be 1 to 64 bytes"),
        (
            json!({"name": too_long}),
            "invalid name: must be 1 to 64 bytes",
        ),
        (
            json!({"name": "a b"}),
            "invalid name: must not contain whitespace or control characters",
        ),
        (
            json!({"name": "a", "fields": ["x"]}),
            "\"fields\" must be an object of strings",
        ),
        (
            json!({"name": "a", "fields": {"age": 3}}),
            "field 'age' must be a string",
        ),
    ] {
        assert_eq!(
            send(&body.to_string()),
            (422, json!({ "error": error })),
            "{body}"
        );
    }
    for body in [
        json!({"name": "a", "fields": many}),
        json!({"name": "a", "fields": {"k": big_value}}),
        json!({"name": "a", "fields": {"a b": "v"}}),
    ] {
        let (status, reply) = send(&body.to_string());
        assert_eq!(status, 422, "{reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    // None of them made a user.
    let (names, _, last_seq) = list_all(&agent, &server, 100, None);
    assert_eq!((names.len(), last_seq), (0, 0));
}

#[test]
fn names_are_percent_encoded_in_location_and_decoded_in_paths() {
    let server = TestServer::start_http();
    let agent = agent();
    let name = "zoë/ops?x#1%";
    let resp = agent
        .post(server.url("/users"))
        .send(json!({ "name": name }).to_string())
        .expect("POST");
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ASCII")
        .to_string();
    assert_eq!(location, "/users/zo%C3%AB%2Fops%3Fx%231%25");
    let (status, user) = outcome(agent.get(server.url(&location)).call());
    assert_eq!(status, 200);
    assert_eq!(user["name"], name);
    // Over RESP the same user goes by its plain name.
    let mut redis = server.redis();
    assert_ne!(call(&mut redis, &["LOOKUP", name]), Redis::Nil);
    // A malformed escape is a bad request, not a missing user.
    let bad = outcome(agent.get(server.url("/users/a%G1")).call());
    assert_eq!(
        bad,
        (
            400,
            json!({"error": "malformed percent-encoding in the name"})
        )
    );
    let (status, _) = outcome(agent.delete(server.url(&location)).call());
    assert_eq!(status, 204);
    assert_eq!(call(&mut redis, &["LOOKUP", name]), Redis::Nil);
}

#[test]
fn user_list_pages_with_the_cursor_until_it_is_zero() {
    let server = TestServer::start_http();
    let agent = agent();
    let mut redis = server.redis();
    let mut want = BTreeSet::new();
    for i in 0..23 {
        let name = format!("u{i:02}");
        register_new(&mut redis, &name, &[]);
        want.insert(name);
    }
    // A user that comes and goes leaves no hole in the listing.
    register_new(&mut redis, "gone", &[]);
    assert_eq!(call(&mut redis, &["UNREGISTER", "gone"]), Redis::Int(1));
    let (names, pages, last_seq) = list_all(&agent, &server, 5, None);
    let got: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(names.len(), got.len(), "a name listed twice: {names:?}");
    assert_eq!(got, want);
    assert!(pages >= 5, "23 users in pages of 5 took {pages} pages");
    assert_eq!(last_seq, newest_seq(&mut redis));
    // One big page holds them all and says there is no more.
    let (status, page) = outcome(agent.get(server.url("/users?limit=1000")).call());
    assert_eq!(status, 200);
    assert_eq!(page["users"].as_array().map(Vec::len), Some(23));
    assert_eq!(page["next_cursor"], 0);
    for bad in ["cursor=-1", "cursor=x", "limit=0", "limit=x"] {
        let (status, body) = outcome(agent.get(server.url(&format!("/users?{bad}"))).call());
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}

#[test]
fn user_list_filters_with_a_match_glob() {
    let server = TestServer::start_http();
    let agent = agent();
    let mut redis = server.redis();
    for name in ["ann", "anna", "bob", "annika", "ben", "xan"] {
        register_new(&mut redis, name, &[]);
    }
    let sorted = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    let (names, _, _) = list_all(&agent, &server, 2, Some("ann*"));
    assert_eq!(
        sorted(names),
        sorted(vec!["ann".into(), "anna".into(), "annika".into()])
    );
    let (names, _, _) = list_all(&agent, &server, 100, Some("b%5Beo%5D%3F"));
    assert_eq!(sorted(names), sorted(vec!["bob".into(), "ben".into()]));
    let (names, _, _) = list_all(&agent, &server, 3, Some("*an*"));
    assert_eq!(names.len(), 4, "{names:?}");
    let (names, _, _) = list_all(&agent, &server, 3, Some("nobody*"));
    assert!(names.is_empty(), "{names:?}");
}

// ---------------------------------------------------------------------------
// One server, two protocols: same events, same ticks
// ---------------------------------------------------------------------------

#[test]
fn http_writes_produce_the_same_events_as_resp() {
    let server = TestServer::start_http();
    let agent = agent();
    let mut redis = server.redis();
    let mut sub = server.redis();
    let mut ps = sub.as_pubsub();
    ps.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    ps.subscribe(REGISTERED).expect("SUBSCRIBE");
    ps.subscribe(UNREGISTERED).expect("SUBSCRIBE");

    let resp_id = register_new(&mut redis, "viaresp", &[("from", "resp")]);
    let (status, body) = create(
        &agent,
        &server,
        &json!({"name": "viahttp", "fields": {"from": "http"}}),
    );
    assert_eq!(status, 201);
    let http_id = body["id"].as_i64().expect("id");
    assert_eq!(http_id, resp_id + 1, "one id sequence for both ports");

    let first: Value = serde_json::from_slice(ps.get_message().expect("push").get_payload_bytes())
        .expect("JSON payload");
    assert_eq!(first["name"], "viaresp");
    let m = ps.get_message().expect("push");
    assert_eq!(m.get_channel_name(), REGISTERED);
    let pushed: Value = serde_json::from_slice(m.get_payload_bytes()).expect("JSON payload");
    assert_eq!(pushed["kind"], REGISTERED);
    assert_eq!(pushed["name"], "viahttp");
    assert_eq!(pushed["id"], http_id);
    assert_eq!(pushed["fields"], json!({"from": "http"}));
    assert_eq!(
        pushed["seq"].as_i64(),
        Some(first["seq"].as_i64().expect("seq") + 1)
    );

    let (status, _) = outcome(agent.delete(server.url("/users/viahttp")).call());
    assert_eq!(status, 204);
    let m = ps.get_message().expect("push");
    assert_eq!(m.get_channel_name(), UNREGISTERED);
    let removed: Value = serde_json::from_slice(m.get_payload_bytes()).expect("JSON payload");
    assert_eq!(removed["name"], "viahttp");
    assert_eq!(removed["id"], http_id);

    // The durable log has the same three events, with the pushed seqs.
    let log = all_events(&mut redis);
    let summary: Vec<(i64, &str, &str, &str)> = log
        .iter()
        .map(|e| (e.seq(), e.field("kind"), e.field("name"), e.field("fields")))
        .collect();
    let s1 = first["seq"].as_i64().expect("seq");
    assert_eq!(
        summary,
        [
            (s1, REGISTERED, "viaresp", r#"{"from":"resp"}"#),
            (s1 + 1, REGISTERED, "viahttp", r#"{"from":"http"}"#),
            (s1 + 2, UNREGISTERED, "viahttp", r#"{"from":"http"}"#),
        ]
    );
    assert_eq!(log[1].field("id"), http_id.to_string());
    assert_eq!(log[1].field("at"), pushed["at"].as_str().expect("at"));
    // And each side reads what the other wrote.
    let (status, user) = outcome(agent.get(server.url("/users/viaresp")).call());
    assert_eq!((status, user["id"].as_i64()), (200, Some(resp_id)));
}

#[test]
fn http_and_resp_writes_arriving_together_stay_consistent() {
    let server = TestServer::start_http();
    let mut resp = server.raw();
    let mut http = server.http_raw();
    const EACH: usize = 10;
    let mut resp_batch = String::new();
    let mut http_batch = String::new();
    for i in 0..EACH {
        resp_batch.push_str(&format!("REGISTER r{i}\r\n"));
        http_batch.push_str(&post("/users", &format!(r#"{{"name":"h{i}"}}"#)));
    }
    // Both ports race for one name; exactly one may win it.
    resp_batch.push_str("REGISTER both\r\n");
    http_batch.push_str(&post("/users", r#"{"name":"both"}"#));
    // Written back to back, so they usually land in the same tick.
    resp.write_all(resp_batch.as_bytes()).expect("write");
    http.write_all(http_batch.as_bytes()).expect("write");

    let mut ids = Vec::new();
    let mut resp_r = BufReader::new(resp);
    let mut both_winners = 0;
    for i in 0..=EACH {
        let mut line = String::new();
        resp_r.read_line(&mut line).expect("RESP reply");
        let id: i64 = line
            .strip_prefix(':')
            .and_then(|l| l.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("REGISTER reply {line:?}"));
        if i == EACH {
            both_winners += usize::from(id > 0);
        } else {
            assert!(id > 0, "REGISTER r{i} replied {id}");
        }
        if id > 0 {
            ids.push(id);
        }
    }
    let mut http_r = BufReader::new(http);
    for i in 0..=EACH {
        let r = read_response(&mut http_r, false);
        if i == EACH && r.status == 409 {
            continue;
        }
        assert_eq!(r.status, 201, "POST h{i}: {}", show(&r.body));
        if i == EACH {
            both_winners += 1;
        }
        ids.push(r.json()["id"].as_i64().expect("id"));
    }
    assert_eq!(
        both_winners, 1,
        "'both' registered by both ports or neither"
    );
    let total = 2 * EACH + 1;
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), total, "ids handed out twice: {ids:?}");

    // The log has one event per acknowledged registration, seqs without gaps.
    let mut redis = server.redis();
    let log = all_events(&mut redis);
    let seqs: Vec<i64> = log.iter().map(Entry::seq).collect();
    assert_eq!(seqs, (1..=total as i64).collect::<Vec<_>>());
    let logged: BTreeSet<i64> = log
        .iter()
        .map(|e| e.field("id").parse().expect("id"))
        .collect();
    assert_eq!(logged, unique);
    assert_eq!(call(&mut redis, &["USERCOUNT"]), Redis::Int(total as i64));
    let (names, _, last_seq) = list_all(&agent(), &server, 1000, None);
    assert_eq!((names.len(), last_seq), (total, total as i64));
}

// ---------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------

#[test]
fn events_stream_starts_live_and_sends_new_events() {
    let server = TestServer::start_http();
    let mut redis = server.redis();
    let before = register_new(&mut redis, "before", &[]);
    assert!(before > 0);
    let mut stream = EventStream::open(&server, "/events", "");
    // The stream started after `before`: the first frame is the next event.
    let id = register_new(&mut redis, "live", &[("plan", "pro")]);
    let f = stream.next();
    assert_frame(&f, 2, REGISTERED, id, "live");
    assert_eq!(f.data["fields"], json!({"plan": "pro"}));
    assert_eq!(call(&mut redis, &["UNREGISTER", "live"]), Redis::Int(1));
    assert_frame(&stream.next(), 3, UNREGISTERED, id, "live");
    // Writes over HTTP reach the stream too.
    let (status, body) = create(&agent(), &server, &json!({"name": "web"}));
    assert_eq!(status, 201);
    let web = body["id"].as_i64().expect("id");
    assert_frame(&stream.next(), 4, REGISTERED, web, "web");
}

/// A server with its HTTP side on and `n` users `u1`.. registered: the server, the
/// RESP2 connection that registered them, and their ids (their seqs are 1..=n).
fn serve_users(n: usize) -> (TestServer, redis::Connection, Vec<i64>) {
    let server = TestServer::start_http();
    let mut redis = server.redis();
    let ids = (1..=n)
        .map(|i| register_new(&mut redis, &format!("u{i}"), &[]))
        .collect();
    (server, redis, ids)
}

#[test]
fn events_resume_after_last_event_id() {
    let (server, mut redis, ids) = serve_users(4);
    let mut stream = EventStream::open(&server, "/events", "Last-Event-ID: 2\r\n");
    assert_frame(&stream.next(), 3, REGISTERED, ids[2], "u3");
    assert_frame(&stream.next(), 4, REGISTERED, ids[3], "u4");
    // Nothing else was queued: the next frame is the next new event.
    let id = register_new(&mut redis, "u5", &[]);
    assert_frame(&stream.next(), 5, REGISTERED, id, "u5");
    // A stream id in `N-0` form works too (as XRANGE prints it).
    let mut stream = EventStream::open(&server, "/events", "Last-Event-ID: 4-0\r\n");
    assert_frame(&stream.next(), 5, REGISTERED, id, "u5");
    // Caught up: a reconnect at the head waits for the next event.
    let mut stream = EventStream::open(&server, "/events", "Last-Event-ID: 5\r\n");
    let id = register_new(&mut redis, "u6", &[]);
    assert_frame(&stream.next(), 6, REGISTERED, id, "u6");
}

#[test]
fn events_from_query_starts_at_that_seq() {
    let (server, mut redis, ids) = serve_users(3);
    let mut stream = EventStream::open(&server, "/events?from=2", "");
    assert_frame(&stream.next(), 2, REGISTERED, ids[1], "u2");
    assert_frame(&stream.next(), 3, REGISTERED, ids[2], "u3");
    let id = register_new(&mut redis, "u4", &[]);
    assert_frame(&stream.next(), 4, REGISTERED, id, "u4");
    // From the start of the log.
    let mut stream = EventStream::open(&server, "/events?from=0", "");
    assert_frame(&stream.next(), 1, REGISTERED, ids[0], "u1");
    // Last-Event-ID (a browser's reconnect) wins over the page's ?from=.
    let mut stream = EventStream::open(&server, "/events?from=1", "Last-Event-ID: 3\r\n");
    assert_frame(&stream.next(), 4, REGISTERED, id, "u4");
}

#[test]
fn events_last_query_replays_the_newest_events_then_goes_live() {
    let (server, mut redis, ids) = serve_users(5);
    let mut stream = EventStream::open(&server, "/events?last=2", "");
    assert_frame(&stream.next(), 4, REGISTERED, ids[3], "u4");
    assert_frame(&stream.next(), 5, REGISTERED, ids[4], "u5");
    let id = register_new(&mut redis, "u6", &[]);
    assert_frame(&stream.next(), 6, REGISTERED, id, "u6");
    // More than the log holds: all of it.
    let mut stream = EventStream::open(&server, "/events?last=100", "");
    assert_frame(&stream.next(), 1, REGISTERED, ids[0], "u1");
    // None: live, like no parameter.
    let mut stream = EventStream::open(&server, "/events?last=0", "");
    let id = register_new(&mut redis, "u7", &[]);
    assert_frame(&stream.next(), 7, REGISTERED, id, "u7");
    // A reconnect's Last-Event-ID wins over the page's ?last=.
    let mut stream = EventStream::open(&server, "/events?last=5", "Last-Event-ID: 6\r\n");
    assert_frame(&stream.next(), 7, REGISTERED, id, "u7");
}

#[test]
fn events_with_a_bad_resume_point_are_400() {
    let server = TestServer::start_http();
    let mut s = server.http_raw();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    for (req, error) in [
        (
            "GET /events HTTP/1.1\r\nLast-Event-ID: abc\r\n\r\n",
            "Last-Event-ID must be a seq",
        ),
        ("GET /events?from=x HTTP/1.1\r\n\r\n", "from must be a seq"),
        (
            "GET /events?last=x HTTP/1.1\r\n\r\n",
            "last must be a non-negative count of events",
        ),
        (
            "GET /events?last=-1 HTTP/1.1\r\n\r\n",
            "last must be a non-negative count of events",
        ),
        (
            "GET /events?from=1&last=2 HTTP/1.1\r\n\r\n",
            "give from or last, not both",
        ),
    ] {
        s.write_all(req.as_bytes()).expect("write");
        let resp = read_response(&mut r, false);
        assert_eq!(resp.status, 400, "{req}");
        assert_eq!(resp.json(), json!({ "error": error }));
    }
    assert_serves(&mut s);
}

#[test]
fn events_stream_is_readable_by_a_real_http_client() {
    let server = TestServer::start_http();
    let mut redis = server.redis();
    let id = register_new(&mut redis, "seen", &[]);
    let resp = agent()
        .get(server.url("/events?from=1"))
        .call()
        .expect("GET /events");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().ok(),
        Some("text/event-stream")
    );
    let mut lines = BufReader::new(resp.into_body().into_reader()).lines();
    let mut frame = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        if line.starts_with(':') || (line.is_empty() && frame.is_empty()) {
            continue;
        }
        if line.is_empty() {
            break;
        }
        frame.push(line);
    }
    assert_eq!(frame[0], "id: 1");
    assert_eq!(frame[1], format!("event: {REGISTERED}"));
    let data: Value =
        serde_json::from_str(frame[2].strip_prefix("data: ").expect("data line")).expect("JSON");
    assert_eq!(
        (data["id"].as_i64(), data["name"].as_str()),
        (Some(id), Some("seen"))
    );
}

// ---------------------------------------------------------------------------
// Health and metrics
// ---------------------------------------------------------------------------

#[test]
fn healthz_is_200_ok() {
    let server = TestServer::start_http();
    assert_serves(&mut server.http_raw());
    let (status, body) = {
        let mut r = agent().get(server.url("/healthz")).call().expect("GET");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().expect("body"),
        )
    };
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn failing_storage_turns_healthz_and_writes_into_503() {
    let server = TestServer::start_http_with(|cfg| cfg.max_db_pages = common::tight_max_pages());
    let agent = agent();
    let mut redis = server.redis();
    register_new(&mut redis, "small", &[]);
    assert_serves(&mut server.http_raw());
    // Two maximal field values do not fit under the cap: the commit fails.
    let a = "a".repeat(MAX_FIELD_VALUE_BYTES);
    let b = "b".repeat(MAX_FIELD_VALUE_BYTES);
    let reply = call(&mut redis, &["REGISTER", "big", "a", &a, "b", &b]);
    assert!(
        matches!(&reply, Redis::ServerError(e) if e.code() == "ERR"),
        "REGISTER over the cap: {reply:?}"
    );

    let mut s = server.http_raw();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let health = read_response(&mut r, false);
    assert_eq!(health.status, 503);
    assert_eq!(health.header("Content-Type"), Some("application/json"));
    let reason = health.json()["error"]
        .as_str()
        .expect("a reason")
        .to_string();
    assert!(reason.starts_with("storage failing"), "{reason}");

    // A write that needs the space gets 503 too, and its connection is closed
    // (responses after it cannot claim anything).
    let big = json!({"name": "big2", "fields": {"a": a, "b": b}}).to_string();
    s.write_all(post("/users", &big).as_bytes()).expect("write");
    let resp = read_response(&mut r, false);
    assert_eq!(resp.status, 503, "{}", show(&resp.body));
    let error = resp.json()["error"].as_str().expect("error").to_string();
    assert!(error.starts_with("storage: "), "{error}");
    assert_eq!(resp.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty(), "after the 503: {}", show(&rest));

    // Metrics say so as well, and nothing was registered.
    let (status, _) = outcome(agent.get(server.url("/users/big2")).call());
    assert_eq!(status, 404);
    let metrics = scrape(&server);
    assert_eq!(value(&metrics, "userbus_storage_ok", &[]), 0.0);
    assert_eq!(value(&metrics, "userbus_registrations_total", &[]), 1.0);
}

/// `GET /metrics`, parsed; also checks the exposition line by line.
fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let mut resp = agent().get(server.url("/metrics")).call().expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().ok(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.body_mut().read_to_string().expect("body");
    // The crate skips what it cannot read; make sure there is nothing to skip,
    // and that every sample's family was declared with HELP and TYPE first.
    let mut helped = BTreeSet::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        match prometheus_parse::LineInfo::parse(line) {
            prometheus_parse::LineInfo::Doc { metric_name, .. } => {
                helped.insert(metric_name.to_string());
            }
            prometheus_parse::LineInfo::Type {
                metric_alias,
                metric_name,
                ..
            } => {
                typed.insert(metric_alias.unwrap_or(metric_name));
            }
            prometheus_parse::LineInfo::Sample {
                metric_name, value, ..
            } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| metric_name.strip_suffix(s).filter(|f| typed.contains(*f)))
                    .unwrap_or(metric_name);
                assert!(
                    typed.contains(family),
                    "{metric_name} has no TYPE before it"
                );
                assert!(
                    helped.contains(family),
                    "{metric_name} has no HELP before it"
                );
                assert!(value.parse::<f64>().is_ok(), "value of {line:?}");
            }
            prometheus_parse::LineInfo::Empty => {}
            other => panic!("line {line:?} is not exposition format: {other:?}"),
        }
    }
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse")
}

/// The value of the sample `metric` with exactly `labels`.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{metric} is not a number: {other:?}"),
    }
}

#[test]
fn metrics_parse_as_prometheus_exposition_and_count_what_happened() {
    let server = TestServer::start_http();
    let mut redis = server.redis();
    register_new(&mut redis, "m1", &[]);
    let (status, _) = create(&agent(), &server, &json!({"name": "m2"}));
    assert_eq!(status, 201);
    assert_eq!(call(&mut redis, &["UNREGISTER", "m1"]), Redis::Int(1));
    assert_eq!(
        call(&mut redis, &["XGROUP", "CREATE", "events", "mailer", "0"]),
        Redis::Okay
    );
    let (status, _) = outcome(agent().get(server.url("/nowhere")).call());
    assert_eq!(status, 404);

    let m = scrape(&server);
    assert_eq!(value(&m, "userbus_registrations_total", &[]), 2.0);
    assert_eq!(value(&m, "userbus_unregistrations_total", &[]), 1.0);
    assert_eq!(value(&m, "userbus_users", &[]), 1.0);
    assert_eq!(value(&m, "userbus_events", &[]), 3.0);
    assert_eq!(value(&m, "userbus_events_last_seq", &[]), 3.0);
    assert_eq!(value(&m, "userbus_storage_ok", &[]), 1.0);
    for (metric, label, want) in [
        // RESP commands by name (HTTP requests are counted by status instead).
        ("userbus_commands_total", ("command", "register"), 1.0),
        ("userbus_commands_total", ("command", "unregister"), 1.0),
        ("userbus_http_responses_total", ("status", "201"), 1.0),
        ("userbus_http_responses_total", ("status", "404"), 1.0),
        ("userbus_errors_total", ("kind", "http_4xx"), 1.0),
        ("userbus_errors_total", ("kind", "protocol"), 0.0),
        // The group has been given nothing of the three events yet.
        ("userbus_group_lag", ("group", "mailer"), 3.0),
        ("userbus_group_pending", ("group", "mailer"), 0.0),
    ] {
        assert_eq!(value(&m, metric, &[label]), want, "{metric} {label:?}");
    }
    // Connections: the two redis connections and ureq's pooled one, at least.
    assert!(value(&m, "userbus_connections", &[]) >= 2.0);
    assert!(value(&m, "userbus_connections_accepted_total", &[]) >= 3.0);
    assert_eq!(value(&m, "userbus_connections_rejected_total", &[]), 0.0);
    for name in [
        "userbus_net_input_bytes_total",
        "userbus_net_output_bytes_total",
        "userbus_commits_total",
    ] {
        assert!(value(&m, name, &[]) > 0.0, "{name}");
    }
    for name in [
        "userbus_subscribed_channels",
        "userbus_subscribed_patterns",
        "userbus_slow_consumer_disconnects_total",
        "userbus_uptime_seconds",
    ] {
        assert!(value(&m, name, &[]) >= 0.0, "{name}");
    }
    // Histograms: cumulative buckets up to +Inf.
    for name in [
        "userbus_tick_seconds",
        "userbus_commit_seconds",
        "userbus_requests_per_commit",
    ] {
        let h = m
            .samples
            .iter()
            .find(|s| s.metric == name)
            .unwrap_or_else(|| panic!("no histogram {name}"));
        let prometheus_parse::Value::Histogram(buckets) = &h.value else {
            panic!("{name} is not a histogram: {:?}", h.value)
        };
        assert!(buckets.len() > 5, "{name}: {buckets:?}");
        assert!(buckets.last().is_some_and(|b| b.less_than.is_infinite()));
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
            "{name} buckets are cumulative: {buckets:?}"
        );
        let count = value(&m, &format!("{name}_count"), &[]);
        assert_eq!(buckets.last().map(|b| b.count), Some(count), "{name}");
        assert!(count >= 1.0, "{name} observed nothing");
    }
}

#[test]
fn pubsub_pushes_and_event_stream_frames_are_counted_apart() {
    let server = TestServer::start_http();
    let mut redis = server.redis();
    // One subscriber of the channel, one of the channel and a pattern (two pushes
    // per event), and an event stream (one frame per event).
    let mut one = server.raw();
    exchange_resp(
        &mut one,
        &["SUBSCRIBE", REGISTERED],
        &subscribed("subscribe", REGISTERED, 1),
    );
    let mut two = server.raw();
    exchange_resp(
        &mut two,
        &["SUBSCRIBE", REGISTERED],
        &subscribed("subscribe", REGISTERED, 1),
    );
    exchange_resp(
        &mut two,
        &["PSUBSCRIBE", "user.*"],
        &subscribed("psubscribe", "user.*", 2),
    );
    let mut stream = EventStream::open(&server, "/events", "");
    let m = scrape(&server);
    assert_eq!(value(&m, "userbus_subscribed_connections", &[]), 2.0);

    for name in ["p1", "p2"] {
        register_new(&mut redis, name, &[]);
    }
    for _ in 0..2 {
        read_frame(&mut one);
        stream.next();
    }
    for _ in 0..4 {
        read_frame(&mut two);
    }
    let m = scrape(&server);
    assert_eq!(value(&m, "userbus_pubsub_pushes_total", &[]), 6.0);
    assert_eq!(value(&m, "userbus_sse_frames_total", &[]), 2.0);
    assert_eq!(value(&m, "userbus_subscribed_connections", &[]), 2.0);
    let stats = info(&mut redis, "stats");
    assert_eq!(
        (
            stats["pubsub_pushes"].as_str(),
            stats["sse_frames"].as_str()
        ),
        ("6", "2")
    );
    assert_eq!(info(&mut redis, "clients")["pubsub_clients"], "2");

    // A connection counts while it holds a channel or a pattern.
    exchange_resp(
        &mut two,
        &["UNSUBSCRIBE"],
        &subscribed("unsubscribe", REGISTERED, 1),
    );
    assert_eq!(
        value(&scrape(&server), "userbus_subscribed_connections", &[]),
        2.0
    );
    exchange_resp(&mut two, &["RESET"], b"+RESET\r\n");
    exchange_resp(
        &mut one,
        &["UNSUBSCRIBE"],
        &subscribed("unsubscribe", REGISTERED, 0),
    );
    assert_eq!(
        value(&scrape(&server), "userbus_subscribed_connections", &[]),
        0.0
    );
    assert_eq!(info(&mut redis, "clients")["pubsub_clients"], "0");
}

/// A (un)subscribe confirmation in RESP2: `[word, name, :count]`.
fn subscribed(word: &str, name: &str, count: i64) -> Vec<u8> {
    let mut out = b"*3\r\n".to_vec();
    out.extend(bulk(word));
    out.extend(bulk(name));
    out.extend(format!(":{count}\r\n").into_bytes());
    out
}
