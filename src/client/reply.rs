//! The line client's side of the wire: requests encoded as RESP arrays, and a small
//! blocking parser that reads one RESP2 or RESP3 reply into a [`Value`].
//!
//! The server is a peer like any other: its bytes are never trusted to be well
//! formed. Lengths are checked, nothing is allocated from a declared count before
//! the bytes it announces arrive, and nesting is bounded so that a hostile reply
//! cannot exhaust the stack.

use std::fmt;
use std::io::{self, BufRead, Read};

use crate::protocol::request::parse_int;

/// Longest header or simple line (`+`, `-`, `:`, `*<n>`, ...) accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Largest bulk string accepted (Redis's `proto-max-bulk-len`).
pub const MAX_BULK_BYTES: usize = 512 * 1024 * 1024;
/// Deepest nesting of aggregates accepted.
pub const MAX_DEPTH: usize = 64;
/// Most elements reserved up front for an aggregate; more grow as they arrive.
const MAX_PREALLOCATED: usize = 1024;

/// One reply, as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+text`.
    Status(Vec<u8>),
    /// `-ERR text` or a RESP3 blob error `!len`.
    Error(Vec<u8>),
    /// `:n`.
    Integer(i64),
    /// `$len` and its bytes.
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3 `_`.
    Nil,
    /// RESP3 `,text`, kept as the server spelled it.
    Double(Vec<u8>),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `(digits`.
    BigNumber(Vec<u8>),
    /// RESP3 `=len` verbatim text, without its `txt:` format prefix.
    Verbatim(Vec<u8>),
    /// `*n`.
    Array(Vec<Value>),
    /// RESP3 `~n`.
    Set(Vec<Value>),
    /// RESP3 `>n`: an out-of-band push.
    Push(Vec<Value>),
    /// RESP3 `%n`: key-value pairs in the server's order.
    Map(Vec<(Value, Value)>),
}

/// Why a reply could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The server closed the connection.
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// The bytes are not RESP (or exceed a `MAX_*` limit).
    Protocol(String),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => f.write_str("Server closed the connection"),
            ReadError::Io(e) => f.write_str(&describe_io(e)),
            ReadError::Protocol(msg) => write!(f, "Protocol error, {msg}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => ReadError::Closed,
            _ => ReadError::Io(e),
        }
    }
}

/// An I/O error as a person reads it: the OS message without Rust's
/// ` (os error N)` suffix, the way redis-cli words it.
pub fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Encodes `args` as a RESP array of bulk strings, the form every request takes.
pub fn encode_request(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one complete reply, blocking until it has arrived.
pub fn read_value(r: &mut impl BufRead) -> Result<Value, ReadError> {
    read_at(r, 0)
}

fn read_at(r: &mut impl BufRead, depth: usize) -> Result<Value, ReadError> {
    if depth > MAX_DEPTH {
        return Err(ReadError::Protocol(format!(
            "replies nested deeper than {MAX_DEPTH}"
        )));
    }
    let line = read_line(r)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(ReadError::Protocol("got an empty line as reply".into()));
    };
    let rest = rest.to_vec();
    Ok(match kind {
        b'+' => Value::Status(rest),
        b'-' => Value::Error(rest),
        b':' => Value::Integer(integer(&rest)?),
        b',' => Value::Double(rest),
        b'(' => Value::BigNumber(rest),
        b'_' => Value::Nil,
        b'#' => match rest.as_slice() {
            b"t" => Value::Boolean(true),
            b"f" => Value::Boolean(false),
            _ => return Err(bad_header(kind, &rest)),
        },
        b'$' => match length(kind, &rest)? {
            None => Value::Nil,
            Some(n) => Value::Bulk(read_blob(r, n)?),
        },
        b'!' => Value::Error(read_blob(r, required(kind, &rest)?)?),
        b'=' => {
            let text = read_blob(r, required(kind, &rest)?)?;
            // `txt:` or `mkd:`: three letters and a colon name the format.
            match text.get(3) {
                Some(b':') => Value::Verbatim(text.get(4..).unwrap_or_default().to_vec()),
                _ => Value::Verbatim(text),
            }
        }
        b'*' => match length(kind, &rest)? {
            None => Value::Nil,
            Some(n) => Value::Array(read_elements(r, n, depth)?),
        },
        b'~' => Value::Set(read_elements(r, required(kind, &rest)?, depth)?),
        b'>' => Value::Push(read_elements(r, required(kind, &rest)?, depth)?),
        b'%' => Value::Map(read_pairs(r, required(kind, &rest)?, depth)?),
        b'|' => {
            // Attributes describe the reply that follows; the client has no use
            // for them, so they are read and dropped.
            read_pairs(r, required(kind, &rest)?, depth)?;
            return read_at(r, depth);
        }
        other => {
            return Err(ReadError::Protocol(format!(
                "got \"{}\" as reply type byte",
                other.escape_ascii()
            )));
        }
    })
}

/// One CRLF-terminated line, without the CRLF.
fn read_line(r: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut line = Vec::new();
    let limit = MAX_LINE_BYTES as u64 + 2;
    r.take(limit).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(ReadError::Closed);
    }
    if !line.ends_with(b"\r\n") {
        if line.len() as u64 >= limit {
            return Err(ReadError::Protocol(format!(
                "reply line longer than {MAX_LINE_BYTES} bytes"
            )));
        }
        if line.ends_with(b"\n") {
            return Err(ReadError::Protocol("line ends without CR".into()));
        }
        return Err(ReadError::Closed);
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

/// `len` bytes and the CRLF after them.
fn read_blob(r: &mut impl BufRead, len: usize) -> Result<Vec<u8>, ReadError> {
    if len > MAX_BULK_BYTES {
        return Err(ReadError::Protocol(format!(
            "bulk of {len} bytes is over {MAX_BULK_BYTES}"
        )));
    }
    let mut data = Vec::new();
    // `take` grows the buffer as bytes arrive instead of trusting `len` up front.
    r.take(len as u64 + 2).read_to_end(&mut data)?;
    if data.len() < len + 2 {
        return Err(ReadError::Closed);
    }
    if !data.ends_with(b"\r\n") {
        return Err(ReadError::Protocol("bulk not terminated by CRLF".into()));
    }
    data.truncate(len);
    Ok(data)
}

fn read_elements(r: &mut impl BufRead, n: usize, depth: usize) -> Result<Vec<Value>, ReadError> {
    let mut items = Vec::with_capacity(n.min(MAX_PREALLOCATED));
    for _ in 0..n {
        items.push(read_at(r, depth + 1)?);
    }
    Ok(items)
}

fn read_pairs(
    r: &mut impl BufRead,
    n: usize,
    depth: usize,
) -> Result<Vec<(Value, Value)>, ReadError> {
    let mut pairs = Vec::with_capacity(n.min(MAX_PREALLOCATED));
    for _ in 0..n {
        let key = read_at(r, depth + 1)?;
        let value = read_at(r, depth + 1)?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn integer(text: &[u8]) -> Result<i64, ReadError> {
    parse_int(text).ok_or_else(|| bad_header(b':', text))
}

/// A length header: `None` for the RESP2 null (`-1`).
fn length(kind: u8, text: &[u8]) -> Result<Option<usize>, ReadError> {
    match parse_int(text) {
        Some(-1) => Ok(None),
        Some(n) => usize::try_from(n)
            .map(Some)
            .map_err(|_| bad_header(kind, text)),
        None => Err(bad_header(kind, text)),
    }
}

/// A length header of a RESP3 type, which has no null form.
fn required(kind: u8, text: &[u8]) -> Result<usize, ReadError> {
    length(kind, text)?.ok_or_else(|| bad_header(kind, text))
}

fn bad_header(kind: u8, text: &[u8]) -> ReadError {
    ReadError::Protocol(format!(
        "bad header \"{}{}\"",
        kind.escape_ascii(),
        text.escape_ascii()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Value, ReadError> {
        read_value(&mut &bytes[..])
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn requests_are_resp_arrays() {
        assert_eq!(
            encode_request(&[b"ECHO".to_vec(), b"a b".to_vec(), Vec::new()]),
            b"*3\r\n$4\r\nECHO\r\n$3\r\na b\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn resp2_values_parse() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Value::Status(b"OK".to_vec()));
        assert_eq!(
            parse(b"-ERR x\r\n").unwrap(),
            Value::Error(b"ERR x".to_vec())
        );
        assert_eq!(parse(b":-7\r\n").unwrap(), Value::Integer(-7));
        assert_eq!(parse(b"$3\r\na\r\n\r\n").unwrap(), bulk("a\r\n"));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Value::Nil);
        assert_eq!(parse(b"*-1\r\n").unwrap(), Value::Nil);
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n").unwrap(),
            Value::Array(vec![bulk("a"), Value::Array(vec![Value::Integer(1)])])
        );
    }

    #[test]
    fn resp3_values_parse() {
        assert_eq!(parse(b"_\r\n").unwrap(), Value::Nil);
        assert_eq!(parse(b"#t\r\n").unwrap(), Value::Boolean(true));
        assert_eq!(parse(b",1.5\r\n").unwrap(), Value::Double(b"1.5".to_vec()));
        assert_eq!(
            parse(b"(123\r\n").unwrap(),
            Value::BigNumber(b"123".to_vec())
        );
        assert_eq!(
            parse(b"=6\r\ntxt:hi\r\n").unwrap(),
            Value::Verbatim(b"hi".to_vec())
        );
        assert_eq!(
            parse(b"!5\r\nERR x\r\n").unwrap(),
            Value::Error(b"ERR x".to_vec())
        );
        assert_eq!(
            parse(b"%1\r\n+k\r\n~1\r\n:1\r\n").unwrap(),
            Value::Map(vec![(
                Value::Status(b"k".to_vec()),
                Value::Set(vec![Value::Integer(1)])
            )])
        );
        assert_eq!(
            parse(b"|1\r\n+ttl\r\n:3\r\n>1\r\n+x\r\n").unwrap(),
            Value::Push(vec![Value::Status(b"x".to_vec())])
        );
    }

    #[test]
    fn truncated_replies_are_a_closed_connection() {
        for cut in [&b""[..], b"+OK", b"$5\r\nab", b"*2\r\n:1\r\n", b"$2\r\nab"] {
            assert!(matches!(parse(cut), Err(ReadError::Closed)), "{cut:?}");
        }
    }

    #[test]
    fn malformed_replies_are_protocol_errors() {
        for bad in [
            &b"?x\r\n"[..],
            b":1x\r\n",
            b"$-2\r\n",
            b"~-1\r\n",
            b"#x\r\n",
            b"$1\r\nabc\r\n",
            b"+OK\n",
            b"\r\n",
        ] {
            assert!(matches!(parse(bad), Err(ReadError::Protocol(_))), "{bad:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(matches!(parse(&deep), Err(ReadError::Protocol(_))));
    }

    #[test]
    fn a_declared_count_does_not_allocate() {
        // The reply ends long before the count it declares; nothing was reserved.
        assert!(matches!(
            parse(b"*1000000000\r\n:1\r\n"),
            Err(ReadError::Closed)
        ));
        assert!(matches!(
            parse(b"$536870913\r\n"),
            Err(ReadError::Protocol(_))
        ));
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn os_errors_lose_their_number() {
        let e = io::Error::from_raw_os_error(111);
        assert_eq!(describe_io(&e), "Connection refused");
    }
}
