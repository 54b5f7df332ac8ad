//! The request parser: RESP multibulk arrays and inline lines, incrementally.
//!
//! The parser owns the progress of the frame it is in the middle of, so bytes that
//! arrive in many small reads are examined once: a bulk whose header was read waits
//! for its payload by length alone, and an inline line resumes its newline search
//! where the last one stopped. Arguments are ranges into the frame (multibulk) or
//! into a scratch buffer (inline, whose quoting rewrites the bytes); nothing is
//! allocated from a count the peer declared before the bytes it announces arrive.
//!
//! The acceptance rules and error texts follow Redis's `processMultibulkBuffer` and
//! `processInlineBuffer` so that clients see exactly what a Redis server would say.

use std::fmt;
use std::ops::Range;

use crate::config::{Limits, MAX_UNAUTH_BULK_BYTES, MAX_UNAUTH_MULTIBULK_LEN};

/// A request the peer sent that breaks the protocol. The connection replies
/// `-ERR Protocol error: <Display>` and is closed after that reply is flushed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*<n>` with a count that is not an integer or exceeds the multibulk limit.
    InvalidMultibulkLength,
    /// `$<n>` with a length that is not an integer, negative, or over the bulk limit.
    InvalidBulkLength,
    /// An array element that does not start with `$`.
    ExpectedDollar(u8),
    /// An inline line whose quotes do not close (or close in the middle of a word).
    UnbalancedQuotes,
    /// An inline line longer than the inline limit.
    TooBigInline,
    /// A `*` header line longer than the inline limit without its CRLF.
    TooBigMultibulkCount,
    /// A `$` header line longer than the inline limit without its CRLF.
    TooBigBulkCount,
    /// Before authentication, an array of more than 10 elements.
    UnauthenticatedMultibulkLength,
    /// Before authentication, a bulk string over 16 KiB.
    UnauthenticatedBulkLength,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedDollar(b) => write!(f, "expected '$', got '{}'", *b as char),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::TooBigMultibulkCount => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::UnauthenticatedMultibulkLength => {
                f.write_str("unauthenticated multibulk length")
            }
            ProtocolError::UnauthenticatedBulkLength => f.write_str("unauthenticated bulk length"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// What one call to [`RequestParser::parse`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The frame is not complete yet; call again with more bytes (the same prefix).
    Incomplete,
    /// A frame with no arguments (an empty line, `*0`): consume it, reply nothing.
    Empty {
        /// Bytes of the buffer the frame took.
        consumed: usize,
    },
    /// A request; its arguments are available from [`RequestParser::args`].
    Request {
        /// Bytes of the buffer the frame took.
        consumed: usize,
    },
}

/// Where the parser is inside the current frame.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Between frames.
    Start,
    /// Inside `*<count>`: `remaining` elements still to come, the next one at `pos`;
    /// `bulk` is the announced length of the element whose header was already read.
    Multibulk {
        remaining: usize,
        pos: usize,
        bulk: Option<usize>,
    },
    /// Inside an inline line; bytes before `scanned` hold no newline.
    Inline { scanned: usize },
}

/// Where the arguments of the last complete request live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Frame,
    Scratch,
}

/// The incremental request parser of one connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    /// Until the client authenticates, Redis's tighter limits apply.
    unauthenticated: bool,
    state: State,
    args: Vec<Range<usize>>,
    scratch: Vec<u8>,
    source: Source,
}

/// The arguments of one request: `args.get(0)` is the command name.
#[derive(Debug, Clone, Copy)]
pub struct Args<'a> {
    data: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// Builds arguments over `data` (used by tests and by the parser).
    pub fn new(data: &'a [u8], ranges: &'a [Range<usize>]) -> Self {
        Args { data, ranges }
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// True when there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The argument at `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        let r = self.ranges.get(i)?;
        self.data.get(r.clone())
    }

    /// Iterates over the arguments from `start`.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.ranges
            .get(start..)
            .unwrap_or(&[])
            .iter()
            .map(move |r| data.get(r.clone()).unwrap_or(&[]))
    }
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            unauthenticated: false,
            state: State::Start,
            args: Vec::new(),
            scratch: Vec::new(),
            source: Source::Frame,
        }
    }

    /// Applies (or lifts) the limits for clients that have not authenticated yet.
    pub fn set_unauthenticated(&mut self, yes: bool) {
        self.unauthenticated = yes;
    }

    /// True when the parser is between frames (no partial frame is buffered).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Start)
    }

    /// Looks for one complete frame at the front of `buf`.
    ///
    /// `buf` must start where the previous call's frame ended (or at the same place
    /// as the previous call when that one returned `Incomplete`), and may only have
    /// grown at the back since.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        if let State::Start = self.state
            && buf.first() == Some(&b'*')
            && let Some(consumed) = self.parse_whole_multibulk(buf)
        {
            return Ok(Parsed::Request { consumed });
        }
        self.parse_general(buf)
    }

    /// `parse` for every frame, whole or in pieces, valid or not.
    fn parse_general(&mut self, buf: &[u8]) -> Result<Parsed, ProtocolError> {
        if let State::Start = self.state {
            match buf.first() {
                None => return Ok(Parsed::Incomplete),
                Some(b'*') => {
                    let Some(line_end) = find_cr(buf, 1) else {
                        if buf.len() > self.limits.max_inline_bytes {
                            return Err(ProtocolError::TooBigMultibulkCount);
                        }
                        return Ok(Parsed::Incomplete);
                    };
                    // The CR must be followed by its LF before the header counts.
                    if line_end + 2 > buf.len() {
                        return Ok(Parsed::Incomplete);
                    }
                    let count = parse_int(&buf[1..line_end])
                        .filter(|&n| n <= self.limits.max_multibulk_len as i64)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if self.unauthenticated && count > MAX_UNAUTH_MULTIBULK_LEN as i64 {
                        return Err(ProtocolError::UnauthenticatedMultibulkLength);
                    }
                    if count <= 0 {
                        return Ok(Parsed::Empty {
                            consumed: line_end + 2,
                        });
                    }
                    self.args.clear();
                    self.source = Source::Frame;
                    self.state = State::Multibulk {
                        remaining: count as usize,
                        pos: line_end + 2,
                        bulk: None,
                    };
                }
                Some(_) => self.state = State::Inline { scanned: 0 },
            }
        }
        match self.state {
            State::Start => Ok(Parsed::Incomplete),
            State::Inline { scanned } => self.parse_inline(buf, scanned),
            State::Multibulk {
                remaining,
                pos,
                bulk,
            } => self.parse_multibulk(buf, remaining, pos, bulk),
        }
    }

    /// The arguments of the request the last `parse` returned, over the same `buf`.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> Args<'a> {
        match self.source {
            Source::Frame => Args::new(buf, &self.args),
            Source::Scratch => Args::new(&self.scratch, &self.args),
        }
    }

    /// The common case in one pass: a multibulk frame that is complete in `buf`,
    /// with plain decimal counts within every limit. Anything else (a partial
    /// frame, a sign, a leading zero, a count over a limit, a malformed header)
    /// returns `None` with the parser still between frames, and the general path
    /// judges the frame from its start, errors and all.
    fn parse_whole_multibulk(&mut self, buf: &[u8]) -> Option<usize> {
        let (count, cr) = plain_uint(buf, 1)?;
        let max_count = if self.unauthenticated {
            MAX_UNAUTH_MULTIBULK_LEN.min(self.limits.max_multibulk_len)
        } else {
            self.limits.max_multibulk_len
        };
        if count == 0 || count > max_count as u64 {
            return None;
        }
        let max_bulk = if self.unauthenticated {
            MAX_UNAUTH_BULK_BYTES.min(self.limits.max_bulk_bytes)
        } else {
            self.limits.max_bulk_bytes
        };
        self.args.clear();
        let mut pos = cr + 2;
        for _ in 0..count {
            if buf.get(pos) != Some(&b'$') {
                return None;
            }
            let (len, cr) = plain_uint(buf, pos + 1)?;
            if len > max_bulk as u64 {
                return None;
            }
            // `len` is at most max_bulk_bytes, so the sums cannot overflow.
            let start = cr + 2;
            let end = start + len as usize;
            if end + 2 > buf.len() {
                return None;
            }
            self.args.push(start..end);
            // Like Redis, the two bytes after a header or a payload go unchecked.
            pos = end + 2;
        }
        self.source = Source::Frame;
        Some(pos)
    }

    fn parse_multibulk(
        &mut self,
        buf: &[u8],
        mut remaining: usize,
        mut pos: usize,
        mut bulk: Option<usize>,
    ) -> Result<Parsed, ProtocolError> {
        while remaining > 0 {
            let len = match bulk {
                Some(len) => len,
                None => {
                    let Some(&first) = buf.get(pos) else {
                        return self.suspend(remaining, pos, None);
                    };
                    let Some(line_end) = find_cr(buf, pos) else {
                        if buf.len() - pos > self.limits.max_inline_bytes {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        return self.suspend(remaining, pos, None);
                    };
                    if line_end + 2 > buf.len() {
                        return self.suspend(remaining, pos, None);
                    }
                    if first != b'$' {
                        return Err(ProtocolError::ExpectedDollar(first));
                    }
                    let len = parse_int(&buf[pos + 1..line_end])
                        .filter(|&n| n >= 0 && n <= self.limits.max_bulk_bytes as i64)
                        .ok_or(ProtocolError::InvalidBulkLength)?
                        as usize;
                    if self.unauthenticated && len > MAX_UNAUTH_BULK_BYTES {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    pos = line_end + 2;
                    len
                }
            };
            // `len` is bounded by max_bulk_bytes, so the sums cannot overflow.
            let end = pos + len;
            if end + 2 > buf.len() {
                return self.suspend(remaining, pos, Some(len));
            }
            self.args.push(pos..end);
            // Like Redis, the two bytes after the payload are skipped unchecked.
            pos = end + 2;
            remaining -= 1;
            bulk = None;
        }
        self.state = State::Start;
        Ok(Parsed::Request { consumed: pos })
    }

    fn suspend(
        &mut self,
        remaining: usize,
        pos: usize,
        bulk: Option<usize>,
    ) -> Result<Parsed, ProtocolError> {
        self.state = State::Multibulk {
            remaining,
            pos,
            bulk,
        };
        Ok(Parsed::Incomplete)
    }

    fn parse_inline(&mut self, buf: &[u8], scanned: usize) -> Result<Parsed, ProtocolError> {
        let Some(nl) = memchr::memchr(b'\n', &buf[scanned..]).map(|i| i + scanned) else {
            // A final CR may be the start of the line's CRLF: it does not count, so a
            // line at the limit parses the same however its bytes arrive.
            let line = buf.len() - usize::from(buf.last() == Some(&b'\r'));
            if line > self.limits.max_inline_bytes {
                return Err(ProtocolError::TooBigInline);
            }
            self.state = State::Inline { scanned: buf.len() };
            return Ok(Parsed::Incomplete);
        };
        self.state = State::Start;
        let mut line_end = nl;
        if line_end > 0 && buf[line_end - 1] == b'\r' {
            line_end -= 1;
        }
        if line_end > self.limits.max_inline_bytes {
            return Err(ProtocolError::TooBigInline);
        }
        self.args.clear();
        self.scratch.clear();
        self.source = Source::Scratch;
        split_args(&buf[..line_end], &mut self.scratch, &mut self.args)?;
        if self.args.is_empty() {
            Ok(Parsed::Empty { consumed: nl + 1 })
        } else {
            Ok(Parsed::Request { consumed: nl + 1 })
        }
    }
}

/// Bytes of a header line scanned one by one before a vector search takes over.
const SHORT_SCAN_BYTES: usize = 16;

/// The index of the first `\r` at or after `from`.
fn find_cr(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    // Header lines are short (`*3`, `$5`): a plain scan finds their CR sooner than
    // a vector search is set up.
    let head = rest.get(..SHORT_SCAN_BYTES).unwrap_or(rest);
    if let Some(i) = head.iter().position(|&b| b == b'\r') {
        return Some(from + i);
    }
    let tail = rest.get(SHORT_SCAN_BYTES..)?;
    memchr::memchr(b'\r', tail).map(|i| i + from + SHORT_SCAN_BYTES)
}

/// The plain decimal number at `from` that runs up to a CR followed by one more
/// byte: its value and the CR's index. `None` for anything else (no digits, a
/// sign, a leading zero, more than 18 digits, another byte before the CR, or a
/// line not complete in `buf`); where such a number exists, `parse_int` of the
/// same bytes gives the same value.
fn plain_uint(buf: &[u8], from: usize) -> Option<(u64, usize)> {
    let first = buf.get(from)?.wrapping_sub(b'0');
    if first > 9 {
        return None;
    }
    let mut value = u64::from(first);
    let mut i = from + 1;
    loop {
        let b = *buf.get(i)?;
        if b == b'\r' {
            break;
        }
        let digit = b.wrapping_sub(b'0');
        if digit > 9 || value == 0 || i - from >= 18 {
            return None;
        }
        value = value * 10 + u64::from(digit);
        i += 1;
    }
    // The CR's LF must be there too before the line counts.
    if i + 2 > buf.len() {
        return None;
    }
    Some((value, i))
}

/// Parses a decimal integer the way Redis's `string2ll` does: an optional `-`, no
/// `+`, no spaces, no leading zeros, no overflow.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !neg => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        v = if neg {
            v.checked_mul(10)?.checked_sub(digit)?
        } else {
            v.checked_mul(10)?.checked_add(digit)?
        };
    }
    Some(v)
}

/// Splits one line (without its line ending) into arguments with the quoting rules
/// of inline commands (Redis's `sdssplitargs`): the line client uses it so that a
/// line it sends as a RESP array carries exactly the arguments the server would have
/// parsed from the same line sent inline.
pub fn split_line(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut out = Vec::new();
    let mut ranges = Vec::new();
    split_args(line, &mut out, &mut ranges)?;
    Ok(ranges
        .into_iter()
        .filter_map(|r| out.get(r).map(<[u8]>::to_vec))
        .collect())
}

/// Splits an inline line into arguments with Redis's `sdssplitargs` rules, writing
/// the unquoted bytes to `out` and their ranges to `args`.
fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    args: &mut Vec<Range<usize>>,
) -> Result<(), ProtocolError> {
    // A NUL ends the line for sdssplitargs (it works on C strings).
    let line = match memchr::memchr(0, line) {
        Some(i) => &line[..i],
        None => line,
    };
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(());
        }
        let start = out.len();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            let c = at(p);
            if in_dq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && at(p + 2).is_ascii_hexdigit()
                    && at(p + 3).is_ascii_hexdigit()
                {
                    out.push(hex_val(at(p + 2)) * 16 + hex_val(at(p + 3)));
                    p += 4;
                    continue;
                } else if c == b'\\' && at(p + 1) != 0 {
                    out.push(match at(p + 1) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    p += 2;
                    continue;
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                out.push(c);
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    out.push(b'\'');
                    p += 2;
                    continue;
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    p += 1;
                    break;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                out.push(c);
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => out.push(c),
                }
            }
            p += 1;
        }
        args.push(start..out.len());
    }
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser() -> RequestParser {
        RequestParser::new(Limits::default())
    }

    fn one(input: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        let mut p = parser();
        match p.parse(input)? {
            Parsed::Request { consumed } => {
                assert_eq!(consumed, input.len());
                Ok(p.args(input).iter_from(0).map(<[u8]>::to_vec).collect())
            }
            Parsed::Empty { .. } => Ok(vec![]),
            Parsed::Incomplete => panic!("incomplete: {input:?}"),
        }
    }

    fn strs(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_parses() {
        assert_eq!(
            one(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n").unwrap(),
            strs(&["PING", "hi"])
        );
        assert_eq!(one(b"*1\r\n$0\r\n\r\n").unwrap(), strs(&[""]));
    }

    #[test]
    fn multibulk_split_at_every_byte_gives_the_same_request() {
        let frame = b"*3\r\n$8\r\nREGISTER\r\n$5\r\nalice\r\n$0\r\n\r\n";
        for cut in 0..frame.len() {
            let mut p = parser();
            assert_eq!(p.parse(&frame[..cut]).unwrap(), Parsed::Incomplete);
            let got = p.parse(frame).unwrap();
            assert_eq!(
                got,
                Parsed::Request {
                    consumed: frame.len()
                }
            );
            let args: Vec<_> = p.args(frame).iter_from(0).map(<[u8]>::to_vec).collect();
            assert_eq!(args, strs(&["REGISTER", "alice", ""]));
        }
    }

    #[test]
    fn empty_and_negative_multibulk_is_skipped() {
        let mut p = parser();
        assert_eq!(p.parse(b"*0\r\n").unwrap(), Parsed::Empty { consumed: 4 });
        assert_eq!(p.parse(b"*-1\r\n").unwrap(), Parsed::Empty { consumed: 5 });
    }

    #[test]
    fn bad_multibulk_lengths_are_errors() {
        for bad in [&b"*x\r\n"[..], b"*1x\r\n", b"*+1\r\n", b"*01\r\n", b"*\r\n"] {
            assert_eq!(
                one(bad),
                Err(ProtocolError::InvalidMultibulkLength),
                "{bad:?}"
            );
        }
        assert_eq!(
            one(b"*99999999999\r\n"),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn bad_bulks_are_errors() {
        assert_eq!(
            parser().parse(b"*1\r\nx\r\n"),
            Err(ProtocolError::ExpectedDollar(b'x'))
        );
        assert_eq!(
            parser().parse(b"*1\r\n$-1\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            parser().parse(b"*1\r\n$abc\r\n"),
            Err(ProtocolError::InvalidBulkLength)
        );
        let over = format!("*1\r\n${}\r\n", Limits::default().max_bulk_bytes + 1);
        assert_eq!(
            parser().parse(over.as_bytes()),
            Err(ProtocolError::InvalidBulkLength)
        );
    }

    #[test]
    fn declared_count_does_not_allocate() {
        let mut p = parser();
        assert_eq!(p.parse(b"*1048576\r\n").unwrap(), Parsed::Incomplete);
        assert!(p.args.capacity() < 1024);
    }

    #[test]
    fn inline_splits_on_whitespace() {
        assert_eq!(
            one(b"REGISTER  alice\temail a@b\r\n").unwrap(),
            strs(&["REGISTER", "alice", "email", "a@b"])
        );
        assert_eq!(one(b"PING\n").unwrap(), strs(&["PING"]));
        assert_eq!(one(b"   \r\n").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(one(b"\n").unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn inline_quotes_follow_redis() {
        assert_eq!(
            one(b"ECHO \"a b\\n\\x41\\\"\" 'it\\'s' \"\"\r\n").unwrap(),
            vec![
                b"ECHO".to_vec(),
                b"a b\nA\"".to_vec(),
                b"it's".to_vec(),
                b"".to_vec()
            ]
        );
        assert_eq!(
            one(b"ECHO foo\"bar baz\"\r\n").unwrap(),
            strs(&["ECHO", "foobar baz"])
        );
        assert_eq!(one(b"ECHO \\x41\r\n").unwrap(), strs(&["ECHO", "\\x41"]));
    }

    #[test]
    fn inline_unbalanced_quotes_are_errors() {
        for bad in [
            &b"ECHO \"abc\r\n"[..],
            b"ECHO 'abc\r\n",
            b"ECHO \"a\"b\r\n",
            b"ECHO 'a'b\r\n",
        ] {
            assert_eq!(one(bad), Err(ProtocolError::UnbalancedQuotes), "{bad:?}");
        }
    }

    #[test]
    fn split_line_matches_the_inline_parser() {
        for line in [
            &b"REGISTER  alice\temail a@b"[..],
            b"ECHO \"a b\\n\\x41\\\"\" 'it\\'s' \"\"",
            b"ECHO foo\"bar baz\"",
            b"   ",
            b"",
        ] {
            let mut framed = line.to_vec();
            framed.extend_from_slice(b"\r\n");
            assert_eq!(split_line(line), one(&framed), "{line:?}");
        }
        assert_eq!(
            split_line(b"ECHO \"x\\ty\""),
            Ok(vec![b"ECHO".to_vec(), b"x\ty".to_vec()])
        );
        assert_eq!(
            split_line(b"REGISTER \"a b"),
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn inline_over_limit_is_an_error() {
        let big = vec![b'a'; Limits::default().max_inline_bytes + 1];
        assert_eq!(parser().parse(&big), Err(ProtocolError::TooBigInline));
        let mut line = big.clone();
        line.extend_from_slice(b"\r\n");
        assert_eq!(parser().parse(&line), Err(ProtocolError::TooBigInline));
    }

    #[test]
    fn inline_resumes_without_rescanning() {
        let mut p = parser();
        assert_eq!(p.parse(b"PI").unwrap(), Parsed::Incomplete);
        assert!(matches!(p.state, State::Inline { scanned: 2 }));
        assert_eq!(
            p.parse(b"PING\r\n").unwrap(),
            Parsed::Request { consumed: 6 }
        );
    }

    #[test]
    fn unauthenticated_limits_are_tighter() {
        let mut p = parser();
        p.set_unauthenticated(true);
        assert_eq!(
            p.parse(b"*11\r\n"),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        let mut p = parser();
        p.set_unauthenticated(true);
        assert_eq!(
            p.parse(b"*1\r\n$16385\r\n"),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
        let mut p = parser();
        p.set_unauthenticated(true);
        assert_eq!(
            p.parse(b"*2\r\n$4\r\nAUTH\r\n$1\r\np\r\n").unwrap(),
            Parsed::Request { consumed: 21 }
        );
    }

    /// Every way through `parse` agrees with the general path alone.
    #[test]
    fn whole_frame_path_agrees_with_the_general_path() {
        let limits = Limits {
            max_bulk_bytes: 8,
            max_multibulk_len: 4,
            ..Limits::default()
        };
        let frames: &[&[u8]] = &[
            b"*1\r\n$4\r\nPING\r\n",
            b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$8\r\n12345678\r\n",
            b"*1\r\n$4\r\nPINGxx",
            b"*1\r\n$4\r\nPING\r",
            b"*1\r\n$4\r\nPI",
            b"*1\r\n$4\r",
            b"*1\r\n$",
            b"*1\r",
            b"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n",
            b"*5\r\n$1\r\na\r\n",
            b"*1\r\n$9\r\n123456789\r\n",
            b"*01\r\n$1\r\na\r\n",
            b"*1\r\n$01\r\na\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$+1\r\na\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*1\r\n:1\r\n",
            b"*1\r\n$1x\r\na\r\n",
            b"*1x\r\n",
            b"*\r\n",
            b"*1\r\n$\r\n\r\n",
            b"*1\r\n$0\r\n\r\n",
            b"*1\n$1\r\na\r\n",
            b"*99999999999999999999\r\n",
            b"*1\r\n$99999999999999999999\r\n",
            b"*1\r\n$1\r\nab\r\n",
            b"*2\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n$1\r\nc\r\n",
        ];
        for unauthenticated in [false, true] {
            for frame in frames {
                let mut fast = RequestParser::new(limits);
                fast.set_unauthenticated(unauthenticated);
                let mut general = RequestParser::new(limits);
                general.set_unauthenticated(unauthenticated);
                let a = fast.parse(frame);
                let b = general.parse_general(frame);
                assert_eq!(a, b, "{frame:?}");
                if let Ok(Parsed::Request { .. }) = a {
                    let args_a: Vec<_> = fast.args(frame).iter_from(0).collect();
                    let args_b: Vec<_> = general.args(frame).iter_from(0).collect();
                    assert_eq!(args_a, args_b, "{frame:?}");
                }
                assert_eq!(fast.is_idle(), general.is_idle(), "{frame:?}");
            }
        }
        let mut p = RequestParser::new(Limits::default());
        p.set_unauthenticated(true);
        assert_eq!(
            p.parse(b"*11\r\n$1\r\na\r\n"),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
    }

    #[test]
    fn find_cr_finds_the_first_cr_anywhere() {
        for at in 0..40 {
            let mut buf = vec![b'1'; 48];
            buf[at] = b'\r';
            buf[at + 3] = b'\r';
            for from in 0..=at {
                assert_eq!(find_cr(&buf, from), Some(at), "at {at} from {from}");
            }
            assert_eq!(find_cr(&buf[..at], 0), None);
        }
        assert_eq!(find_cr(b"abc", 3), None);
        assert_eq!(find_cr(b"abc", 4), None);
    }

    #[test]
    fn parse_int_is_strict() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"+1",
            b"01",
            b" 1",
            b"1 ",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}
