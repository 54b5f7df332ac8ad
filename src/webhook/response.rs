//! An HTTP/1.1 response read incrementally from a webhook connection: the head
//! through httparse (1xx interim responses skipped), then the body as its framing
//! says (Content-Length, chunked, or up to the close), kept up to a cap.
//!
//! The reader keeps its progress: bytes it consumed are never looked at again,
//! and a head or chunk line that is not complete yet is left for the next read
//! (bounded by [`MAX_HEAD_BYTES`] and [`MAX_CHUNK_LINE_BYTES`]). Nothing the peer
//! sends makes it panic; what breaks HTTP is a [`ResponseError`].

use std::fmt;

/// Longest response head (status line and headers), in bytes.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most response headers.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line or trailer line, in bytes.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Most trailer bytes after the last chunk.
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// The status line or a header broke HTTP.
    Head(httparse::Error),
    /// The head was longer than [`MAX_HEAD_BYTES`].
    HeadTooLarge,
    /// `101 Switching Protocols`, which nothing asked for.
    UnexpectedUpgrade,
    /// Content-Length was not a number, or two disagreed.
    ContentLength,
    /// A chunk-size line, a chunk's end or the trailers broke the chunked coding.
    Chunked(&'static str),
    /// The connection closed before the body's end.
    Truncated,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Head(e) => write!(f, "bad response head: {e}"),
            ResponseError::HeadTooLarge => {
                write!(f, "response head longer than {MAX_HEAD_BYTES} bytes")
            }
            ResponseError::UnexpectedUpgrade => f.write_str("unexpected 101 Switching Protocols"),
            ResponseError::ContentLength => f.write_str("bad Content-Length in the response"),
            ResponseError::Chunked(what) => write!(f, "bad chunked body: {what}"),
            ResponseError::Truncated => f.write_str("connection closed inside the response"),
        }
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The final status code.
    pub status: u16,
    /// The body, at most the cap.
    pub body: Vec<u8>,
    /// The connection can carry the next request: HTTP/1.1 without
    /// `Connection: close`, a body framed by Content-Length or chunked and read
    /// whole (not cut at the cap).
    pub reusable: bool,
}

/// Where the reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a (final or interim) head.
    Head,
    /// `remaining` body bytes to go.
    Length { remaining: u64 },
    /// Reading a chunk-size line.
    ChunkSize,
    /// Inside a chunk with `remaining` bytes to go.
    ChunkData { remaining: u64 },
    /// Expecting the CRLF that ends a chunk's data.
    ChunkEnd,
    /// Reading trailer lines after the last chunk, `seen` bytes so far.
    Trailers { seen: usize },
    /// Reading until the peer closes.
    UntilClose,
}

/// One response being read.
#[derive(Debug)]
pub struct ResponseReader {
    state: State,
    max_body: usize,
    status: u16,
    keep_alive: bool,
    body: Vec<u8>,
    /// Any byte of a response arrived.
    started: bool,
}

/// What one [`ResponseReader::feed`] did.
#[derive(Debug)]
pub struct Fed {
    /// Bytes of the input it consumed.
    pub consumed: usize,
    /// The response, once complete.
    pub done: Option<Response>,
}

impl ResponseReader {
    /// A reader that keeps at most `max_body` bytes of the body.
    pub fn new(max_body: usize) -> ResponseReader {
        ResponseReader {
            state: State::Head,
            max_body,
            status: 0,
            keep_alive: false,
            body: Vec::new(),
            started: false,
        }
    }

    /// True once any byte of the response has arrived.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Reads what it can of `input` (the bytes not consumed before): how much it
    /// consumed, and the response once complete. A body over the cap completes
    /// the response at the cap, not reusable.
    pub fn feed(&mut self, input: &[u8]) -> Result<Fed, ResponseError> {
        if !input.is_empty() {
            self.started = true;
        }
        let mut at = 0;
        loop {
            let rest = &input[at..];
            let step = match self.state {
                State::Head => self.head(rest)?,
                State::Length { remaining } => {
                    let n = take(rest.len(), remaining);
                    self.keep(&rest[..n]);
                    let remaining = remaining - n as u64;
                    self.state = State::Length { remaining };
                    Step {
                        consumed: n,
                        complete: remaining == 0,
                    }
                }
                State::ChunkSize => match line(rest, MAX_CHUNK_LINE_BYTES)? {
                    None => Step::NEED_MORE,
                    Some((text, consumed)) => {
                        let size = chunk_size(text)?;
                        self.state = if size == 0 {
                            State::Trailers { seen: 0 }
                        } else {
                            State::ChunkData { remaining: size }
                        };
                        Step {
                            consumed,
                            complete: false,
                        }
                    }
                },
                State::ChunkData { remaining } => {
                    let n = take(rest.len(), remaining);
                    self.keep(&rest[..n]);
                    let remaining = remaining - n as u64;
                    self.state = if remaining == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData { remaining }
                    };
                    Step {
                        consumed: n,
                        complete: false,
                    }
                }
                State::ChunkEnd => match line(rest, 2)
                    .map_err(|_| ResponseError::Chunked("no CRLF after chunk data"))?
                {
                    None => Step::NEED_MORE,
                    Some((b"", consumed)) => {
                        self.state = State::ChunkSize;
                        Step {
                            consumed,
                            complete: false,
                        }
                    }
                    Some(_) => return Err(ResponseError::Chunked("no CRLF after chunk data")),
                },
                State::Trailers { seen } => match line(rest, MAX_CHUNK_LINE_BYTES)? {
                    None => Step::NEED_MORE,
                    Some((text, consumed)) => {
                        let seen = seen + consumed;
                        if seen > MAX_TRAILER_BYTES {
                            return Err(ResponseError::Chunked("trailers too long"));
                        }
                        self.state = State::Trailers { seen };
                        Step {
                            consumed,
                            complete: text.is_empty(),
                        }
                    }
                },
                State::UntilClose => {
                    self.keep(rest);
                    Step {
                        consumed: rest.len(),
                        complete: false,
                    }
                }
            };
            at += step.consumed;
            if step.complete || self.body.len() > self.max_body {
                return Ok(Fed {
                    consumed: at,
                    done: Some(self.finish(step.complete)),
                });
            }
            if step.consumed == 0 || at == input.len() {
                return Ok(Fed {
                    consumed: at,
                    done: None,
                });
            }
        }
    }

    /// The peer closed: complete for a body read until the close, else an error.
    pub fn closed(&mut self) -> Result<Response, ResponseError> {
        match self.state {
            State::UntilClose => Ok(self.finish(false)),
            _ => Err(ResponseError::Truncated),
        }
    }

    /// Parses a head at the front of `input`; an interim (1xx) one is consumed
    /// and skipped.
    fn head(&mut self, input: &[u8]) -> Result<Step, ResponseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(input).map_err(ResponseError::Head)? {
            httparse::Status::Partial if input.len() > MAX_HEAD_BYTES => {
                return Err(ResponseError::HeadTooLarge);
            }
            httparse::Status::Partial => return Ok(Step::NEED_MORE),
            httparse::Status::Complete(len) => len,
        };
        let status = parsed.code.unwrap_or(0);
        if status == 101 {
            return Err(ResponseError::UnexpectedUpgrade);
        }
        if (100..200).contains(&status) {
            return Ok(Step {
                consumed: len,
                complete: false,
            });
        }
        self.status = status;
        let mut close = parsed.version != Some(1);
        let mut chunked = false;
        let mut other_coding = false;
        let mut length: Option<u64> = None;
        for h in parsed.headers.iter() {
            if h.name.eq_ignore_ascii_case("connection") {
                close |= has_token(h.value, "close");
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // Only the last coding frames the body.
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                chunked = trim(last).eq_ignore_ascii_case(b"chunked");
                other_coding = !chunked;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let n = parse_length(h.value)?;
                if length.is_some_and(|l| l != n) {
                    return Err(ResponseError::ContentLength);
                }
                length = Some(n);
            }
        }
        self.keep_alive = !close;
        self.state = if status == 204 || status == 304 {
            return Ok(Step {
                consumed: len,
                complete: true,
            });
        } else if chunked {
            State::ChunkSize
        } else if other_coding {
            self.keep_alive = false;
            State::UntilClose
        } else {
            match length {
                Some(0) => {
                    return Ok(Step {
                        consumed: len,
                        complete: true,
                    });
                }
                Some(remaining) => State::Length { remaining },
                None => {
                    self.keep_alive = false;
                    State::UntilClose
                }
            }
        };
        Ok(Step {
            consumed: len,
            complete: false,
        })
    }

    fn keep(&mut self, bytes: &[u8]) {
        // One byte over the cap marks the body as cut; `finish` drops it.
        let room = (self.max_body + 1).saturating_sub(self.body.len());
        self.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn finish(&mut self, complete: bool) -> Response {
        let cut = self.body.len() > self.max_body;
        self.body.truncate(self.max_body);
        Response {
            status: self.status,
            body: std::mem::take(&mut self.body),
            reusable: complete && !cut && self.keep_alive,
        }
    }
}

/// What one state's step did.
struct Step {
    consumed: usize,
    complete: bool,
}

impl Step {
    const NEED_MORE: Step = Step {
        consumed: 0,
        complete: false,
    };
}

/// How many of `available` bytes to take when `remaining` are wanted.
fn take(available: usize, remaining: u64) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// The line at the front of `input` without its CRLF (or bare LF), and the bytes
/// it takes with its end; `None` while it is incomplete.
fn line(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, ResponseError> {
    match memchr::memchr(b'\n', input) {
        Some(i) if i > max => Err(ResponseError::Chunked("line too long")),
        Some(i) => {
            let text = &input[..i];
            Ok(Some((text.strip_suffix(b"\r").unwrap_or(text), i + 1)))
        }
        None if input.len() > max => Err(ResponseError::Chunked("line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line's size (hex, extensions after `;` ignored).
fn chunk_size(text: &[u8]) -> Result<u64, ResponseError> {
    let digits = trim(text.split(|&b| b == b';').next().unwrap_or(b""));
    if digits.is_empty() {
        return Err(ResponseError::Chunked("empty chunk size"));
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char)
            .to_digit(16)
            .ok_or(ResponseError::Chunked("chunk size is not hex"))?;
        n.checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(ResponseError::Chunked("chunk size too large"))
    })
}

fn parse_length(value: &[u8]) -> Result<u64, ResponseError> {
    let v = trim(value);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(ResponseError::ContentLength);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ResponseError::ContentLength)
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_bytes_in_any_pieces_end_or_fail_without_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            step in 1usize..64,
            max_body in 0usize..64,
        ) {
            let mut prefix = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            prefix.extend_from_slice(&bytes);
            let _ = read_in(&bytes, step, max_body);
            let _ = read_in(&prefix, step, max_body);
        }

        #[test]
        fn chunked_bodies_decode_the_same_in_any_pieces(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            step in 1usize..32,
        ) {
            let mut wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for c in &chunks {
                wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            let r = read_in(&wire, step, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(r.body, chunks.concat());
            prop_assert!(r.reusable);
        }
    }

    /// Feeds `bytes` in pieces of `step` bytes, as reads would bring them.
    fn read_in(
        bytes: &[u8],
        step: usize,
        max_body: usize,
    ) -> Result<Option<Response>, ResponseError> {
        let mut reader = ResponseReader::new(max_body);
        let mut buf: Vec<u8> = Vec::new();
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            let fed = reader.feed(&buf)?;
            buf.drain(..fed.consumed);
            if let Some(r) = fed.done {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn read_whole(bytes: &[u8]) -> Response {
        for step in [1, 3, 7, bytes.len()] {
            let r = read_in(bytes, step, 1024).unwrap();
            assert!(r.is_some(), "complete in steps of {step}");
        }
        read_in(bytes, bytes.len(), 1024).unwrap().unwrap()
    }

    #[test]
    fn content_length_body_keeps_the_connection() {
        let r = read_whole(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(
            (r.status, r.body.as_slice(), r.reusable),
            (200, &b"hello"[..], true)
        );
    }

    #[test]
    fn chunked_body_is_decoded_with_extensions_and_trailers() {
        let r = read_whole(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
        );
        assert_eq!(r.body, b"hello 0123456789");
        assert!(r.reusable);
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = read_whole(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
              HTTP/1.1 204 No Content\r\n\r\n",
        );
        assert_eq!((r.status, r.reusable), (204, true));
    }

    #[test]
    fn connection_close_http_1_0_and_unframed_bodies_are_not_reusable() {
        let r = read_whole(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(!r.reusable);
        let r = read_whole(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(!r.reusable);
        let mut reader = ResponseReader::new(1024);
        let fed = reader.feed(b"HTTP/1.1 410 Gone\r\n\r\nbye").unwrap();
        assert!(fed.done.is_none());
        let r = reader.closed().unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.reusable),
            (410, &b"bye"[..], false)
        );
    }

    #[test]
    fn a_body_over_the_cap_is_cut_and_closes() {
        let r = read_in(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            4,
            4,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.body.as_slice(), r.reusable), (&b"0123"[..], false));
        let r = read_in(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n0123", 100, 4)
            .unwrap()
            .unwrap();
        assert!(r.reusable, "exactly the cap is whole");
        let r = read_in(
            b"HTTP/1.1 500 x\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n012345678\r\n",
            5,
            4,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.reusable),
            (500, &b"0123"[..], false)
        );
    }

    #[test]
    fn closed_inside_a_framed_body_is_truncated() {
        let mut reader = ResponseReader::new(1024);
        assert!(!reader.started());
        reader
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
            .unwrap();
        assert!(reader.started());
        assert_eq!(reader.closed(), Err(ResponseError::Truncated));
        assert_eq!(
            ResponseReader::new(1).closed(),
            Err(ResponseError::Truncated)
        );
    }

    #[test]
    fn broken_responses_are_errors_not_panics() {
        let bad: &[&[u8]] = &[
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        ];
        for b in bad {
            let got = read_in(b, b.len(), 1024);
            assert!(got.is_err(), "{:?} -> {got:?}", String::from_utf8_lossy(b));
        }
        let huge = [
            b"HTTP/1.1 200 OK\r\nX: ".as_slice(),
            &[b'a'; MAX_HEAD_BYTES],
        ]
        .concat();
        assert_eq!(
            read_in(&huge, huge.len(), 10).unwrap_err(),
            ResponseError::HeadTooLarge
        );
        let long = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".as_slice(),
            &[b'a'; MAX_CHUNK_LINE_BYTES],
        ]
        .concat();
        assert!(read_in(&long, long.len(), 10).is_err());
    }
}
