//! Bytes on raw sockets, the way `nc` or a hand-written client sends and reads
//! them: RESP requests, exact replies, whole frames, and a line-reading client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use super::{IO_TIMEOUT, TestServer};

/// Words of a command line, split on whitespace.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// A socket to `addr` with the harness's read timeout and Nagle off.
pub fn connect(addr: impl ToSocketAddrs) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Sends `request` and reads exactly as many bytes as `expected` has, then
/// asserts they are equal (on a socket or a TLS stream).
pub fn exchange(s: &mut (impl Read + Write), request: &[u8], expected: &[u8]) {
    s.write_all(request).expect("write");
    let got = read_n(s, expected.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(request)
    );
}

/// `exchange` for the RESP request of text `args`.
pub fn exchange_resp(s: &mut TcpStream, args: &[&str], expected: &[u8]) {
    exchange(s, &resp(args), expected);
}

/// Reads exactly `n` bytes (fails the test after IO_TIMEOUT).
pub fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read reply");
    buf
}

/// Reads until the server closes the connection; returns everything read.
pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read until close");
    buf
}

/// Reads until what was read ends with `suffix` (a reply line with `b"\r\n"`).
pub fn read_until_suffix(s: &mut TcpStream, suffix: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(suffix) {
        s.read_exact(&mut byte).expect("read until suffix");
        got.push(byte[0]);
    }
    got
}

/// Bytes as a readable, escaped string for failure messages (long ones cut).
pub fn show(b: &[u8]) -> String {
    const MAX: usize = 400;
    if b.len() > MAX {
        format!("{}... ({} bytes)", b[..MAX].escape_ascii(), b.len())
    } else {
        b.escape_ascii().to_string()
    }
}

/// Asserts `got == want` byte for byte (binary-safe, unlike a lossy string
/// comparison), showing both escaped when they differ.
#[track_caller]
pub fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}\n  got:  {}\n  want: {}",
        show(got),
        show(want)
    );
}

/// A RESP request: a multibulk array of `args`.
pub fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend(bulk(a));
    }
    v
}

/// A RESP request of text `args`.
pub fn resp(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    multibulk(&args)
}

/// A bulk string: `$<len>\r\n<data>\r\n`.
pub fn bulk(data: impl AsRef<[u8]>) -> Vec<u8> {
    let data = data.as_ref();
    let mut v = format!("${}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// Reads one complete RESP2/RESP3 reply and returns its bytes.
pub fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut out = read_until_suffix(s, b"\r\n");
    let n = || -> i64 {
        std::str::from_utf8(&out[1..out.len() - 2])
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("bad length line {:?}", String::from_utf8_lossy(&out)))
    };
    match out[0] {
        b'$' | b'=' | b'!' => {
            let len = n();
            if len >= 0 {
                out.extend(read_n(s, len as usize + 2));
            }
        }
        b'*' | b'~' | b'>' => {
            for _ in 0..n().max(0) {
                out.extend(read_frame(s));
            }
        }
        b'%' => {
            for _ in 0..2 * n().max(0) {
                out.extend(read_frame(s));
            }
        }
        _ => {}
    }
    out
}

/// A raw connection switched to RESP3.
pub fn raw3(server: &TestServer) -> TcpStream {
    let mut s = server.raw();
    s.write_all(&resp(&["HELLO", "3"])).expect("write");
    let hello = read_frame(&mut s);
    assert!(hello.starts_with(b"%"), "HELLO 3 replied {hello:?}");
    s
}

/// A raw connection that reads one-line replies (integers, errors, statuses).
pub struct Raw {
    /// The socket, for writing.
    pub w: TcpStream,
    /// The same socket, buffered for reading.
    pub r: BufReader<TcpStream>,
}

impl Raw {
    /// A connection to `addr` with the harness's read timeout.
    pub fn connect(addr: impl ToSocketAddrs) -> Raw {
        let s = connect(addr);
        Raw {
            r: BufReader::new(s.try_clone().expect("clone socket")),
            w: s,
        }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("write");
    }

    /// The next reply line, without its CRLF.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("read reply");
        assert!(line.ends_with("\r\n"), "incomplete reply line {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// The next reply, which must be an integer.
    pub fn int(&mut self) -> i64 {
        let line = self.line();
        line.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected an integer reply, got {line:?}"))
    }

    /// Sends `bytes` and returns the next reply line.
    pub fn call(&mut self, bytes: &[u8]) -> String {
        self.send(bytes);
        self.line()
    }
}
