//! The wire protocol over raw sockets, as `nc` or a hand-written client speaks it:
//! multibulk and inline requests, Redis's inline quoting, every protocol error
//! (reply, flush, close), declared counts that never allocate, pipelines split at
//! every byte, QUIT and half-close, RESP3 nulls, and many clients at once.
//! Every assertion is on exact bytes; where the server decides a value (ids,
//! timestamps) the expectation comes from the server, never from this file.
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Barrier;
use std::time::Instant;

use common::{IO_TIMEOUT, TestServer, assert_bytes, bulk, multibulk, read_n, read_to_close, show};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// True when `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The reply and close a protocol error gets.
fn protocol_error(msg: &str) -> Vec<u8> {
    format!("-ERR Protocol error: {msg}\r\n").into_bytes()
}

/// Sends `request`, reads exactly as many bytes as `want` has and compares them
/// byte for byte (binary-safe, unlike a lossy string comparison).
#[track_caller]
fn exchange_exact(s: &mut TcpStream, request: &[u8], want: &[u8]) {
    s.write_all(request).expect("write");
    let got = read_n(s, want.len());
    assert_bytes(&got, want, &format!("reply to {}", show(request)));
}

/// Reads until the server closes and asserts it sent exactly `want` first.
#[track_caller]
fn assert_reply_then_close(s: &mut TcpStream, want: &[u8], what: &str) {
    let got = read_to_close(s);
    assert_bytes(&got, want, what);
}

/// Sends `request` on a fresh connection and asserts the server answers exactly
/// `want`, then closes the connection.
#[track_caller]
fn assert_request_closes_with(server: &TestServer, request: &[u8], want: &[u8]) {
    let mut s = server.raw();
    s.write_all(request).expect("write");
    assert_reply_then_close(&mut s, want, &format!("reply to {}", show(request)));
}

/// Writes `request` from another thread while this one reads `n` bytes, so a
/// request and reply larger than the socket buffers cannot deadlock.
fn write_while_reading(s: &mut TcpStream, request: &[u8], n: usize) -> Vec<u8> {
    let mut w = s.try_clone().expect("clone socket");
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || w.write_all(request).expect("write"));
        let got = read_n(s, n);
        writer.join().expect("writer thread");
        got
    })
}

/// The length of the complete RESP2/RESP3 reply at the front of `buf`, or `None`
/// while it has not all arrived.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let nl = buf.windows(2).position(|w| w == b"\r\n")?;
    let after = nl + 2;
    let count = || -> i64 {
        std::str::from_utf8(&buf[1..nl])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad RESP length in {}", show(buf)))
    };
    match buf[0] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(after),
        b'$' | b'=' | b'!' => {
            let n = count();
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = count();
            if n < 0 {
                return Some(after);
            }
            let elements = if buf[0] == b'%' { 2 * n } else { n };
            let mut pos = after;
            for _ in 0..elements {
                pos += reply_len(&buf[pos..])?;
            }
            Some(pos)
        }
        _ => panic!("not a RESP reply: {}", show(buf)),
    }
}

/// Reads `n` complete replies; bytes read past them stay in `pending`.
fn read_replies(s: &mut TcpStream, pending: &mut Vec<u8>, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut chunk = [0u8; 4096];
    while out.len() < n {
        if let Some(len) = reply_len(pending) {
            out.push(pending.drain(..len).collect());
            continue;
        }
        let got = s.read(&mut chunk).expect("read replies");
        assert!(
            got > 0,
            "server closed after {} of {n} replies; pending {}",
            out.len(),
            show(pending)
        );
        pending.extend_from_slice(&chunk[..got]);
    }
    out
}

/// The id in a REGISTER reply for a fresh name: `:<n>` with `n > 0`.
#[track_caller]
fn fresh_id(reply: &[u8]) -> i64 {
    let id = reply
        .strip_prefix(b":")
        .and_then(|r| r.strip_suffix(b"\r\n"))
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {}", show(reply)));
    assert!(id > 0, "a fresh REGISTER got {}", show(reply));
    id
}

/// Asks `INFO clients` until the server counts `n` connected clients: the proof
/// that it closed the others. Fails after the harness's I/O timeout.
fn wait_for_clients(s: &mut TcpStream, n: usize) {
    let want = format!("connected_clients:{n}\r\n");
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut pending = Vec::new();
    loop {
        s.write_all(b"INFO clients\r\n").expect("write");
        let info = read_replies(s, &mut pending, 1).remove(0);
        if contains(&info, want.as_bytes()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still not {n} clients: {}",
            show(&info)
        );
    }
}

/// While `half_received` hold requests the server has only part of, another client
/// is served; once they close, the server notices, frees them (one client left)
/// and still serves.
fn assert_others_served_then_freed(server: &TestServer, half_received: [TcpStream; 2]) {
    let mut other = server.raw();
    exchange_exact(&mut other, b"PING\r\n", b"+PONG\r\n");
    drop(half_received);
    wait_for_clients(&mut other, 1);
    exchange_exact(&mut other, b"PING\r\n", b"+PONG\r\n");
}

/// Sends `request`, half-closes (no more requests follow) and asserts the server
/// answers exactly `want`, then closes.
#[track_caller]
fn assert_half_closed_answer(s: &mut TcpStream, request: &[u8], want: &[u8], what: &str) {
    s.write_all(request).expect("write");
    s.shutdown(Shutdown::Write).expect("half-close");
    assert_reply_then_close(s, want, what);
}

// ---------------------------------------------------------------------------
// Inline and multibulk requests
// ---------------------------------------------------------------------------

#[test]
fn inline_and_multibulk_requests_get_identical_replies() {
    let (_server, mut s) = TestServer::start_raw();
    // (inline line, the same request as multibulk arguments, the reply)
    type Case<'a> = (&'a [u8], &'a [&'a [u8]], &'a [u8]);
    let cases: &[Case] = &[
        (b"PING\r\n", &[b"PING"], b"+PONG\r\n"),
        (b"ping\n", &[b"ping"], b"+PONG\r\n"),
        (b"PING hello\r\n", &[b"PING", b"hello"], b"$5\r\nhello\r\n"),
        (b"ECHO hi\r\n", &[b"ECHO", b"hi"], b"$2\r\nhi\r\n"),
        (b"eChO hi\n", &[b"eChO", b"hi"], b"$2\r\nhi\r\n"),
        (b"  ECHO \t hi  \r\n", &[b"ECHO", b"hi"], b"$2\r\nhi\r\n"),
        (b"ECHO \"\"\r\n", &[b"ECHO", b""], b"$0\r\n\r\n"),
    ];
    for (inline, args, want) in cases {
        exchange_exact(&mut s, inline, want);
        exchange_exact(&mut s, &multibulk(args), want);
    }
}

#[test]
fn inline_quoting_follows_redis_sdssplitargs() {
    let (_server, mut s) = TestServer::start_raw();
    // (inline argument as typed, the argument the server must see)
    let cases: &[(&[u8], &[u8])] = &[
        (br#""a\nb""#, b"a\nb"),
        (br#""\r\t\b\a""#, b"\r\t\x08\x07"),
        (br#""\x41\x7a\xFF\x00""#, b"Az\xff\x00"),
        (br#""say \"hi\"""#, br#"say "hi""#),
        (br#""back\\slash""#, br"back\slash"),
        (br#""\q""#, b"q"),
        (br#""\xZZ""#, b"xZZ"),
        (br#""\x4""#, b"x4"),
        (br#""a b""#, b"a b"),
        (br"'it\'s'", b"it's"),
        (br"'a\nb'", br"a\nb"),
        (br#"'a"b'"#, br#"a"b"#),
        (br#""a'b""#, b"a'b"),
        (br#""""#, b""),
        (b"''", b""),
        (br#"foo"bar baz""#, b"foobar baz"),
        (b"foo'bar baz'", b"foobar baz"),
    ];
    for (typed, arg) in cases {
        let mut line = b"ECHO ".to_vec();
        line.extend_from_slice(typed);
        line.extend_from_slice(b"\r\n");
        let want = bulk(arg);
        exchange_exact(&mut s, &line, &want);
        exchange_exact(&mut s, &multibulk(&[b"ECHO", arg]), &want);
    }
    // A quoted message works for PING too, and `""` is an argument of its own.
    exchange_exact(
        &mut s,
        b"PING \"hello world\"\r\n",
        b"$11\r\nhello world\r\n",
    );
    exchange_exact(
        &mut s,
        b"ECHO \"\" \"\"\r\n",
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    );
}

#[test]
fn empty_and_whitespace_only_lines_get_no_reply() {
    let (_server, mut s) = TestServer::start_raw();
    // Had any of these lines been answered, its reply would arrive before +PONG.
    exchange_exact(
        &mut s,
        b"\r\n\n   \r\n\t \t\n \x0b\x0c \r\nPING\r\n",
        b"+PONG\r\n",
    );
    // The same lines arriving one at a time.
    for line in [&b"\r\n"[..], b"\n", b"   \r\n", b"\t\n"] {
        s.write_all(line).expect("write");
    }
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn empty_and_negative_multibulk_get_no_reply_and_the_connection_continues() {
    let (_server, mut s) = TestServer::start_raw();
    exchange_exact(&mut s, b"*0\r\n*-1\r\n*-5\r\nPING\r\n", b"+PONG\r\n");
    // Arriving alone, between requests.
    s.write_all(b"*0\r\n").expect("write");
    exchange_exact(&mut s, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
}

#[test]
fn multibulk_arguments_are_binary_safe() {
    let (_server, mut s) = TestServer::start_raw();
    let every_byte: Vec<u8> = (0..=255).collect();
    exchange_exact(
        &mut s,
        &multibulk(&[b"ECHO", &every_byte]),
        &bulk(&every_byte),
    );
    exchange_exact(
        &mut s,
        &multibulk(&[b"PING", b"*1\r\n$4\r\nPING\r\n"]),
        &bulk(b"*1\r\n$4\r\nPING\r\n"),
    );
}

#[test]
fn inline_line_under_the_limit_is_served() {
    let (_server, mut s) = TestServer::start_raw();
    let arg = vec![b'a'; 60 * 1024];
    let mut line = b"ECHO ".to_vec();
    line.extend_from_slice(&arg);
    line.extend_from_slice(b"\r\n");
    let want = bulk(&arg);
    let got = write_while_reading(&mut s, &line, want.len());
    assert_bytes(&got, &want, "ECHO of 60 KiB inline");
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// Command errors that keep the connection
// ---------------------------------------------------------------------------

#[test]
fn unknown_command_quotes_each_arg_followed_by_a_space() {
    let (_server, mut s) = TestServer::start_raw();
    let want = b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n";
    exchange_exact(&mut s, b"foo a b\r\n", want);
    exchange_exact(&mut s, &multibulk(&[b"foo", b"a", b"b"]), want);
    // The name keeps the case it was sent in; the connection stays open.
    exchange_exact(
        &mut s,
        b"FoO 'x y'\r\nPING\r\n",
        b"-ERR unknown command 'FoO', with args beginning with: 'x y' \r\n+PONG\r\n",
    );
}

#[test]
fn unknown_command_without_args_keeps_the_space_after_the_colon() {
    let (_server, mut s) = TestServer::start_raw();
    let want = b"-ERR unknown command 'foo', with args beginning with: \r\n";
    exchange_exact(&mut s, b"foo\r\n", want);
    exchange_exact(&mut s, &multibulk(&[b"foo"]), want);
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn unknown_command_args_are_cut_at_128_bytes_as_redis_does() {
    let (_server, mut s) = TestServer::start_raw();
    // Redis appends `'%.*s' ` with 128 minus what it has so far, while that is
    // under 128: 100 a's (103 bytes with quotes and space), then 25 b's, then stop.
    let a = vec![b'a'; 100];
    let b = vec![b'b'; 100];
    let want = format!(
        "-ERR unknown command 'foo', with args beginning with: '{}' '{}' \r\n",
        "a".repeat(100),
        "b".repeat(25)
    );
    exchange_exact(&mut s, &multibulk(&[b"foo", &a, &b, b"c"]), want.as_bytes());
    // One long argument: 128 bytes of it.
    let long = vec![b'z'; 300];
    let want = format!(
        "-ERR unknown command 'foo', with args beginning with: '{}' \r\n",
        "z".repeat(128)
    );
    exchange_exact(&mut s, &multibulk(&[b"foo", &long, b"c"]), want.as_bytes());
    // A long command name: `'%.128s'`.
    let name = vec![b'x'; 200];
    let want = format!(
        "-ERR unknown command '{}', with args beginning with: \r\n",
        "x".repeat(128)
    );
    exchange_exact(&mut s, &multibulk(&[&name]), want.as_bytes());
}

#[test]
fn unknown_command_args_with_crlf_become_spaces_in_the_error() {
    let (_server, mut s) = TestServer::start_raw();
    exchange_exact(
        &mut s,
        &multibulk(&[b"foo", b"a\r\nb", b"\n"]),
        b"-ERR unknown command 'foo', with args beginning with: 'a  b' ' ' \r\n",
    );
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn unknown_command_error_passes_non_utf8_bytes_through_as_redis_does() {
    let (_server, mut s) = TestServer::start_raw();
    // Redis formats the name with `'%.128s'` and each argument with `'%.*s' `
    // over the raw bytes: nothing is re-encoded.
    exchange_exact(
        &mut s,
        &multibulk(&[b"foo", b"\xffok\xfe"]),
        b"-ERR unknown command 'foo', with args beginning with: '\xffok\xfe' \r\n",
    );
    exchange_exact(
        &mut s,
        &multibulk(&[b"f\xe9\xe9"]),
        b"-ERR unknown command 'f\xe9\xe9', with args beginning with: \r\n",
    );
    // The 128-byte cut may fall inside a UTF-8 sequence: Redis keeps the byte.
    let mut arg = vec![b'a'; 127];
    arg.extend_from_slice("\u{e9}".as_bytes());
    let mut want = b"-ERR unknown command 'foo', with args beginning with: '".to_vec();
    want.extend_from_slice(&arg[..128]);
    want.extend_from_slice(b"' \r\n");
    exchange_exact(&mut s, &multibulk(&[b"foo", &arg]), &want);
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn unknown_command_error_cuts_an_argument_at_nul_as_redis_does() {
    let (_server, mut s) = TestServer::start_raw();
    exchange_exact(
        &mut s,
        &multibulk(&[b"foo", b"a\x00b", b"c"]),
        b"-ERR unknown command 'foo', with args beginning with: 'a' 'c' \r\n",
    );
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn wrong_arity_replies_error_and_keeps_the_connection() {
    let (_server, mut s) = TestServer::start_raw();
    let echo = b"-ERR wrong number of arguments for 'echo' command\r\n";
    exchange_exact(&mut s, b"ECHO\r\n", echo);
    exchange_exact(&mut s, b"echo a b\r\n", echo);
    exchange_exact(&mut s, &multibulk(&[b"ECHO"]), echo);
    exchange_exact(&mut s, &multibulk(&[b"Echo", b"a", b"b"]), echo);
    exchange_exact(
        &mut s,
        b"PING a b\r\n",
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
    exchange_exact(
        &mut s,
        b"LOOKUP\r\n",
        b"-ERR wrong number of arguments for 'lookup' command\r\n",
    );
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// Protocol errors: reply as Redis does, flush, close
// ---------------------------------------------------------------------------

#[test]
fn multibulk_length_not_a_number_replies_error_then_closes() {
    let server = TestServer::start();
    let want = protocol_error("invalid multibulk length");
    for request in [&b"*x\r\n"[..], b"*1x\r\n", b"*\r\n", b"*+1\r\n", b"* 1\r\n"] {
        assert_request_closes_with(&server, request, &want);
    }
    // Beyond i64: not a number either.
    assert_request_closes_with(&server, b"*99999999999999999999\r\n", &want);
}

#[test]
fn multibulk_length_over_limit_replies_error_then_closes() {
    let server = TestServer::start_with(|c| c.max_multibulk_len = 4, |b| b);
    // At the limit the request is served.
    let mut s = server.raw();
    exchange_exact(
        &mut s,
        &multibulk(&[b"PING", b"a", b"b", b"c"]),
        b"-ERR wrong number of arguments for 'ping' command\r\n",
    );
    // One over: refused from the header alone.
    let want = protocol_error("invalid multibulk length");
    assert_request_closes_with(&server, b"*5\r\n", &want);
    // The default limit refuses a count past 1 Mi elements the same way.
    let server = TestServer::start();
    assert_request_closes_with(&server, b"*1048577\r\n", &want);
}

#[test]
fn bulk_length_negative_or_not_a_number_replies_error_then_closes() {
    let server = TestServer::start();
    let want = protocol_error("invalid bulk length");
    for request in [
        &b"*1\r\n$-1\r\n"[..],
        b"*1\r\n$abc\r\n",
        b"*1\r\n$1x\r\n",
        b"*1\r\n$\r\n",
        b"*2\r\n$4\r\nECHO\r\n$-5\r\n",
    ] {
        assert_request_closes_with(&server, request, &want);
    }
}

#[test]
fn bulk_over_limit_replies_error_then_closes() {
    let server = TestServer::start_with(|c| c.max_bulk_bytes = 16, |b| b);
    let mut s = server.raw();
    let sixteen = [b'x'; 16];
    exchange_exact(&mut s, &multibulk(&[b"ECHO", &sixteen]), &bulk(sixteen));
    // Refused from the header, before any payload arrives.
    let want = protocol_error("invalid bulk length");
    assert_request_closes_with(&server, b"*2\r\n$4\r\nECHO\r\n$17\r\n", &want);
    // The default limit: 1 MiB.
    let server = TestServer::start();
    assert_request_closes_with(&server, b"*2\r\n$4\r\nECHO\r\n$1048577\r\n", &want);
}

#[test]
fn element_without_dollar_replies_expected_dollar_then_closes() {
    let server = TestServer::start();
    for (request, got) in [
        (&b"*1\r\nx\r\n"[..], 'x'),
        (b"*2\r\n$4\r\nECHO\r\nhello\r\n", 'h'),
        (b"*2\r\n$4\r\nECHO\r\n:3\r\n", ':'),
    ] {
        let want = protocol_error(&format!("expected '$', got '{got}'"));
        assert_request_closes_with(&server, request, &want);
    }
}

#[test]
fn unbalanced_quotes_reply_error_then_close() {
    let server = TestServer::start();
    let want = protocol_error("unbalanced quotes in request");
    for request in [
        &b"ECHO \"abc\r\n"[..],
        b"ECHO 'abc\r\n",
        b"ECHO 'a'b\r\n",
        b"ECHO \"a\"b\r\n",
        b"ECHO \"a\\\"\r\n",
        b"\"\r\n",
    ] {
        assert_request_closes_with(&server, request, &want);
    }
}

#[test]
fn inline_line_over_64_kib_without_newline_replies_error_then_closes() {
    let (_server, mut s) = TestServer::start_raw();
    // One byte over the limit, and no newline: the server cannot wait any longer.
    s.write_all(&vec![b'a'; 64 * 1024 + 1]).expect("write");
    assert_reply_then_close(
        &mut s,
        &protocol_error("too big inline request"),
        "64 KiB + 1 without newline",
    );
}

#[test]
fn inline_line_over_64_kib_with_newline_replies_error_then_closes() {
    let (_server, mut s) = TestServer::start_raw();
    let mut line = b"ECHO ".to_vec();
    line.extend_from_slice(&vec![b'a'; 64 * 1024]);
    line.extend_from_slice(b"\r\n");
    s.write_all(&line).expect("write");
    assert_reply_then_close(
        &mut s,
        &protocol_error("too big inline request"),
        "64 KiB + 5 with its newline",
    );
}

#[test]
fn header_lines_over_64_kib_reply_error_then_close() {
    let server = TestServer::start();
    let digits = vec![b'1'; 64 * 1024 + 1];
    for (header, error) in [
        (&b"*"[..], "too big mbulk count string"),
        (b"*1\r\n$", "too big bulk count string"),
    ] {
        let mut request = header.to_vec();
        request.extend_from_slice(&digits);
        assert_request_closes_with(&server, &request, &protocol_error(error));
    }
}

#[test]
fn requests_before_a_protocol_error_are_answered_in_order_first() {
    let (server, mut s) = TestServer::start_raw();
    s.write_all(b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*2\r\n$4\r\nECHO\r\n$2\r\nyo\r\n*x\r\n")
        .expect("write");
    let mut want = b"+PONG\r\n$2\r\nhi\r\n$2\r\nyo\r\n".to_vec();
    want.extend(protocol_error("invalid multibulk length"));
    assert_reply_then_close(&mut s, &want, "three requests, then *x");

    let mut s = server.raw();
    s.write_all(b"PING\r\nECHO 'a'b\r\n").expect("write");
    let mut want = b"+PONG\r\n".to_vec();
    want.extend(protocol_error("unbalanced quotes in request"));
    assert_reply_then_close(&mut s, &want, "PING, then unbalanced quotes");
}

#[test]
fn requests_after_a_protocol_error_get_no_reply() {
    let (_server, mut s) = TestServer::start_raw();
    s.write_all(b"*1\r\n$abc\r\nPING\r\n*1\r\n$4\r\nPING\r\n")
        .expect("write");
    assert_reply_then_close(
        &mut s,
        &protocol_error("invalid bulk length"),
        "$abc followed by PINGs",
    );
}

#[test]
fn http_request_to_the_resp_port_is_dropped_without_running_anything() {
    let server = TestServer::start();
    // What a web page's `fetch("http://localhost:7878/", {method: "POST", body})`
    // sends: the body's lines must never run as commands.
    let mut s = server.raw();
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: localhost:7878\r\nContent-Type: text/plain\r\n\
          Content-Length: 18\r\n\r\nREGISTER mallory\r\n",
    )
    .expect("write");
    assert_reply_then_close(&mut s, b"", "POST to the RESP port");
    let mut s = server.raw();
    s.write_all(b"Host: localhost:7878\r\nREGISTER mallory\r\n")
        .expect("write");
    assert_reply_then_close(&mut s, b"", "Host: to the RESP port");
    let mut other = server.raw();
    exchange_exact(&mut other, b"USERCOUNT\r\n", b":0\r\n");
}

#[test]
fn protocol_error_closes_only_its_own_connection() {
    let (server, mut other) = TestServer::start_raw();
    exchange_exact(&mut other, b"PING\r\n", b"+PONG\r\n");
    assert_request_closes_with(
        &server,
        b"*x\r\n",
        &protocol_error("invalid multibulk length"),
    );
    exchange_exact(&mut other, b"ECHO still-here\r\n", b"$10\r\nstill-here\r\n");
}

// ---------------------------------------------------------------------------
// Declared counts never allocate
// ---------------------------------------------------------------------------

#[test]
fn declared_counts_without_their_data_leave_the_server_serving_others() {
    let (server, mut count) = TestServer::start_raw();
    count.write_all(b"*1048576\r\n").expect("write");
    let mut length = server.raw();
    length
        .write_all(b"*2\r\n$4\r\nECHO\r\n$1000000\r\n")
        .expect("write");
    assert_others_served_then_freed(&server, [count, length]);
    let mut fresh = server.raw();
    exchange_exact(&mut fresh, b"PING\r\n", b"+PONG\r\n");
}

#[test]
fn declared_counts_far_beyond_memory_are_not_allocated() {
    // With limits this high, allocating from a declared count (16 PiB of argument
    // slots, 1 PiB of payload) fails outright and aborts the process: the server
    // must wait for bytes instead.
    const HUGE: usize = 1 << 50;
    let server = TestServer::start_with(
        |c| {
            c.max_multibulk_len = HUGE;
            c.max_bulk_bytes = HUGE;
        },
        |b| b,
    );
    let mut count = server.raw();
    count
        .write_all(format!("*{HUGE}\r\n").as_bytes())
        .expect("write");
    let mut length = server.raw();
    length
        .write_all(format!("*2\r\n$4\r\nECHO\r\n${HUGE}\r\nsome bytes").as_bytes())
        .expect("write");
    assert_others_served_then_freed(&server, [count, length]);
}

#[test]
fn declared_bulk_waits_for_its_bytes_then_replies() {
    // The largest bulk the default limits take.
    let n = userbus::config::Limits::default().max_bulk_bytes;
    let (server, mut s) = TestServer::start_raw();
    s.write_all(format!("*2\r\n$4\r\nECHO\r\n${n}\r\n").as_bytes())
        .expect("write");
    // Another client is served while this one's payload is outstanding.
    let mut other = server.raw();
    exchange_exact(&mut other, b"PING\r\n", b"+PONG\r\n");
    let payload: Vec<u8> = (0..n as u32).map(|i| (i % 251) as u8).collect();
    let mut rest = payload.clone();
    rest.extend_from_slice(b"\r\n");
    let want = bulk(&payload);
    let got = write_while_reading(&mut s, &rest, want.len());
    assert_bytes(&got, &want, "ECHO of the largest bulk");
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
}

// ---------------------------------------------------------------------------
// Pipelines
// ---------------------------------------------------------------------------

/// Index, among the replies of [`mixed_pipeline`], of the fresh REGISTER's id.
const FRESH_REGISTER_REPLY: usize = 2;

/// A buffer of mixed multibulk and inline requests around a fresh user `name`,
/// as (request bytes, replies it gets). It leaves the registry as it found it.
/// The user `fixed` must exist.
fn mixed_pipeline(name: &str) -> Vec<(Vec<u8>, usize)> {
    let n = name.as_bytes();
    vec![
        (multibulk(&[b"PING"]), 1),
        (multibulk(&[b"ECHO", b"\x00\r\n\xff*1\r\n$"]), 1),
        (b"\r\n".to_vec(), 0),
        (
            format!("REGISTER {name} email \"a b\\x21\"\r\n").into_bytes(),
            1,
        ),
        (multibulk(&[b"REGISTER", n]), 1),
        (b"lookup fixed\n".to_vec(), 1),
        (b"*0\r\n".to_vec(), 0),
        (multibulk(&[b"USERCOUNT"]), 1),
        (b"foo a  'b c'\r\n".to_vec(), 1),
        (multibulk(&[b"UNREGISTER", n]), 1),
        (format!("LOOKUP {name}\r\n").into_bytes(), 1),
        (b"PING \"hi there\"\r\n".to_vec(), 1),
    ]
}

/// What the spec fixes for each reply of [`mixed_pipeline`]; `None` where the
/// server decides (the id, `fixed`'s creation time).
fn mixed_pipeline_spec() -> Vec<Option<Vec<u8>>> {
    vec![
        Some(b"+PONG\r\n".to_vec()),
        Some(bulk(b"\x00\r\n\xff*1\r\n$")),
        None,
        Some(b":0\r\n".to_vec()),
        None,
        Some(b":2\r\n".to_vec()),
        Some(b"-ERR unknown command 'foo', with args beginning with: 'a' 'b c' \r\n".to_vec()),
        Some(b":1\r\n".to_vec()),
        Some(b"$-1\r\n".to_vec()),
        Some(bulk(b"hi there")),
    ]
}

/// The request bytes of a pipeline, in one buffer.
fn requests(steps: &[(Vec<u8>, usize)]) -> Vec<u8> {
    steps.iter().flat_map(|(r, _)| r.iter().copied()).collect()
}

/// Checks one run of the pipeline against the one-request-at-a-time reference:
/// identical bytes, except the fresh id, which must be new.
#[track_caller]
fn check_mixed(got: &[Vec<u8>], reference: &[Vec<u8>], last_id: &mut i64, what: &str) {
    assert_eq!(got.len(), reference.len(), "{what}: reply count");
    let id = fresh_id(&got[FRESH_REGISTER_REPLY]);
    assert!(
        id > *last_id,
        "{what}: id {id} is not fresh (last {last_id})"
    );
    *last_id = id;
    for (i, (g, r)) in got.iter().zip(reference).enumerate() {
        if i != FRESH_REGISTER_REPLY {
            assert_bytes(g, r, &format!("{what}: reply {i}"));
        }
    }
}

#[test]
fn pipeline_gives_the_same_replies_in_one_write_split_anywhere_or_bytewise() {
    let server = TestServer::start_fast(|_| {});
    let mut s = server.raw();
    let mut pending = Vec::new();
    s.write_all(b"REGISTER fixed team blue\r\n").expect("write");
    let mut last_id = fresh_id(&read_replies(&mut s, &mut pending, 1)[0]);

    // The reference: every request on its own, waiting for its replies.
    let mut reference = Vec::new();
    for (request, replies) in mixed_pipeline("ref-0000") {
        s.write_all(&request).expect("write");
        reference.extend(read_replies(&mut s, &mut pending, replies));
    }
    let spec = mixed_pipeline_spec();
    assert_eq!(reference.len(), spec.len());
    for (i, (r, want)) in reference.iter().zip(&spec).enumerate() {
        if let Some(want) = want {
            assert_bytes(r, want, &format!("one at a time: reply {i}"));
        }
    }
    assert!(
        reference[4].starts_with(b"*8\r\n$2\r\nid\r\n:"),
        "LOOKUP fixed: {}",
        show(&reference[4])
    );
    last_id = last_id.max(fresh_id(&reference[FRESH_REGISTER_REPLY]));
    let total_replies = reference.len();

    // (a) One write.
    let buf: Vec<u8> = requests(&mixed_pipeline("one-0000"));
    s.write_all(&buf).expect("write");
    let got = read_replies(&mut s, &mut pending, total_replies);
    check_mixed(&got, &reference, &mut last_id, "one write");

    // (b) Two writes, split at every offset. Before the second write, wait for
    // the replies to the requests the first one completed: the server has then
    // read the partial request behind them too and must resume it.
    let len = requests(&mixed_pipeline("cut-0000")).len();
    for cut in 1..len {
        let steps = mixed_pipeline(&format!("cut-{cut:04}"));
        let buf = requests(&steps);
        assert_eq!(buf.len(), len);
        let mut end = 0;
        let mut before = 0;
        for (request, replies) in &steps {
            end += request.len();
            if end <= cut {
                before += replies;
            }
        }
        s.write_all(&buf[..cut]).expect("write");
        let mut got = read_replies(&mut s, &mut pending, before);
        s.write_all(&buf[cut..]).expect("write");
        got.extend(read_replies(&mut s, &mut pending, total_replies - before));
        check_mixed(&got, &reference, &mut last_id, &format!("split at {cut}"));
    }

    // (c) One byte per write.
    let buf: Vec<u8> = requests(&mixed_pipeline("one-byte"));
    for b in &buf {
        s.write_all(std::slice::from_ref(b)).expect("write");
    }
    let got = read_replies(&mut s, &mut pending, total_replies);
    check_mixed(&got, &reference, &mut last_id, "one byte per write");

    // Nothing more was sent than the replies counted.
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
    assert!(pending.is_empty(), "extra bytes: {}", show(&pending));
}

#[test]
fn ten_thousand_pings_in_one_write_get_ten_thousand_pongs() {
    let (_server, mut s) = TestServer::start_raw();
    let request = b"PING\r\n".repeat(10_000);
    let want = b"+PONG\r\n".repeat(10_000);
    let got = write_while_reading(&mut s, &request, want.len());
    assert_bytes(&got, &want, "10,000 PINGs");
    exchange_exact(&mut s, b"ECHO after\r\n", b"$5\r\nafter\r\n");
}

#[test]
fn ten_thousand_numbered_requests_are_answered_in_order() {
    let (_server, mut s) = TestServer::start_raw();
    let mut request = Vec::new();
    let mut want = Vec::new();
    for i in 0..10_000 {
        let msg = format!("n{i}");
        if i % 2 == 0 {
            request.extend(format!("ECHO {msg}\r\n").into_bytes());
        } else {
            request.extend(multibulk(&[b"PING", msg.as_bytes()]));
        }
        want.extend(bulk(msg.as_bytes()));
    }
    let got = write_while_reading(&mut s, &request, want.len());
    assert_bytes(&got, &want, "10,000 numbered requests");
}

#[test]
fn fifty_concurrent_clients_get_their_pipelined_replies_in_order() {
    const CLIENTS: usize = 50;
    const REQUESTS: usize = 200;
    let server = TestServer::start();
    let start = Barrier::new(CLIENTS);
    std::thread::scope(|scope| {
        for t in 0..CLIENTS {
            let (server, start) = (&server, &start);
            scope.spawn(move || {
                let mut s = server.raw();
                let mut request = Vec::new();
                let mut want = Vec::new();
                for i in 0..REQUESTS {
                    let msg = format!("client-{t}-request-{i}");
                    match i % 4 {
                        0 => {
                            request.extend(multibulk(&[b"ECHO", msg.as_bytes()]));
                            want.extend(bulk(msg.as_bytes()));
                        }
                        1 => {
                            request.extend(format!("ECHO {msg}\r\n").into_bytes());
                            want.extend(bulk(msg.as_bytes()));
                        }
                        2 => {
                            request.extend(format!("PING \"{msg}\"\r\n").into_bytes());
                            want.extend(bulk(msg.as_bytes()));
                        }
                        _ => {
                            request.extend(multibulk(&[b"PING"]));
                            want.extend(b"+PONG\r\n");
                        }
                    }
                }
                start.wait();
                s.write_all(&request).expect("write");
                let got = read_n(&mut s, want.len());
                assert_bytes(&got, &want, &format!("client {t}"));
            });
        }
    });
}

// ---------------------------------------------------------------------------
// Closing: QUIT and half-close
// ---------------------------------------------------------------------------

#[test]
fn quit_replies_ok_then_closes() {
    let server = TestServer::start();
    assert_request_closes_with(&server, b"QUIT\r\n", b"+OK\r\n");
    assert_request_closes_with(&server, &multibulk(&[b"quit"]), b"+OK\r\n");
}

#[test]
fn quit_answers_earlier_requests_and_ignores_later_ones() {
    let server = TestServer::start();
    assert_request_closes_with(
        &server,
        b"PING\r\nECHO bye\r\nQUIT\r\nPING\r\n*1\r\n$4\r\nPING\r\n",
        b"+PONG\r\n$3\r\nbye\r\n+OK\r\n",
    );
}

#[test]
fn half_closed_peer_gets_every_reply_then_the_server_closes() {
    let (_server, mut s) = TestServer::start_raw();
    assert_half_closed_answer(
        &mut s,
        b"PING\r\n*2\r\n$4\r\nECHO\r\n$3\r\nbye\r\nECHO \"x y\"\r\n",
        b"+PONG\r\n$3\r\nbye\r\n$3\r\nx y\r\n",
        "replies to a half-closed peer",
    );
}

#[test]
fn half_close_after_answered_requests_is_noticed() {
    // The server stops reading at a short read; the end of stream that comes
    // later, alone or behind more requests, must still reach it.
    let (server, mut s) = TestServer::start_raw();
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
    assert_half_closed_answer(&mut s, b"", b"", "half-close alone");

    let mut s = server.raw();
    exchange_exact(&mut s, b"PING\r\n", b"+PONG\r\n");
    let what = "a request then half-close";
    assert_half_closed_answer(&mut s, b"ECHO last\r\n", b"$4\r\nlast\r\n", what);
}

#[test]
fn half_closed_peer_with_a_partial_request_gets_the_complete_ones_answered() {
    let (_server, mut s) = TestServer::start_raw();
    let partial = b"PING\r\n*2\r\n$4\r\nECHO\r\n$3\r\nbyt";
    let what = "partial request then half-close";
    assert_half_closed_answer(&mut s, partial, b"+PONG\r\n", what);
}

#[test]
fn half_closed_peer_gets_a_large_pipeline_answered() {
    let (_server, mut s) = TestServer::start_raw();
    let request = b"ECHO 0123456789abcdef\r\n".repeat(5_000);
    let want = b"$16\r\n0123456789abcdef\r\n".repeat(5_000);
    let mut w = s.try_clone().expect("clone socket");
    let got = std::thread::scope(|scope| {
        scope.spawn(move || {
            w.write_all(&request).expect("write");
            w.shutdown(Shutdown::Write).expect("half-close");
        });
        read_to_close(&mut s)
    });
    assert_eq!(got.len(), want.len(), "reply length");
    assert_bytes(&got, &want, "5,000 ECHOs then half-close");
}

// ---------------------------------------------------------------------------
// RESP3
// ---------------------------------------------------------------------------

#[test]
fn lookup_of_unknown_name_is_null_bulk_in_resp2_and_null_in_resp3() {
    let (_server, mut s) = TestServer::start_raw();
    let mut pending = Vec::new();
    exchange_exact(&mut s, b"LOOKUP nobody\r\n", b"$-1\r\n");

    s.write_all(b"HELLO 3\r\n").expect("write");
    let hello = read_replies(&mut s, &mut pending, 1).remove(0);
    assert!(
        hello.starts_with(b"%7\r\n$6\r\nserver\r\n$7\r\nuserbus\r\n"),
        "HELLO 3: {}",
        show(&hello)
    );
    assert!(
        contains(&hello, b"$5\r\nproto\r\n:3\r\n"),
        "HELLO 3 names protocol 3: {}",
        show(&hello)
    );
    exchange_exact(&mut s, b"LOOKUP nobody\r\n", b"_\r\n");
    exchange_exact(&mut s, &multibulk(&[b"LOOKUP", b"nobody"]), b"_\r\n");

    s.write_all(b"HELLO 2\r\n").expect("write");
    let hello = read_replies(&mut s, &mut pending, 1).remove(0);
    assert!(
        hello.starts_with(b"*14\r\n$6\r\nserver\r\n") && contains(&hello, b"$5\r\nproto\r\n:2\r\n"),
        "HELLO 2: {}",
        show(&hello)
    );
    exchange_exact(&mut s, b"LOOKUP nobody\r\n", b"$-1\r\n");
    assert!(pending.is_empty(), "extra bytes: {}", show(&pending));
}
