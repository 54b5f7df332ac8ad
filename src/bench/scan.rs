//! The reply scanner: finds where each RESP reply ends and classifies it, without
//! building the reply and without allocating.
//!
//! The load generator does not need reply values, only "one more reply came back,
//! and was it an error, a miss or a value". The scanner keeps one counter, the
//! elements still owed by the reply in progress: a scalar pays one, an aggregate of
//! `n` pays one and owes `n` more (a map owes `2n`). A bulk string's body is skipped
//! by count, so a body split across reads is never buffered nor rescanned; only an
//! incomplete header line (`$1234\r`) is left in the buffer for the next call.
//!
//! RESP2 and RESP3 types are both understood, so the scanner also works against a
//! server that was switched to RESP3.

/// What a complete top-level reply was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A value: a simple or bulk string, a non-zero integer, an aggregate.
    Value,
    /// The integer zero: a taken name for REGISTER, an unknown one for UNREGISTER.
    Zero,
    /// A nil (`$-1`, `*-1`, `_`): an unknown name for LOOKUP.
    Nil,
    /// An error reply (`-...` or a RESP3 blob error).
    Error,
}

/// The peer sent bytes that are not RESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub String);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed reply: {}", self.0)
    }
}

impl std::error::Error for ScanError {}

/// Longest header line accepted (`$`, `*`, `:` lines and simple strings are short;
/// an error line may carry a message).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Incremental reply scanner; one per connection.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    /// Elements the reply in progress still owes (0: between replies).
    owed: u64,
    /// Bytes of a bulk body (plus its CRLF) still to skip.
    skip: usize,
    /// The reply in progress, as classified by its first element.
    outcome: Option<Outcome>,
}

impl Scanner {
    /// A scanner between replies.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// True when no reply is in progress.
    pub fn idle(&self) -> bool {
        self.owed == 0 && self.skip == 0 && self.outcome.is_none()
    }

    /// Scans `buf` up to the end of the next complete reply. Returns the bytes
    /// consumed and the reply's outcome, or `None` when `buf` ran out first; in that
    /// case the unconsumed rest of `buf` (at most one partial line) must be passed
    /// again, followed by the new bytes.
    pub fn next(&mut self, buf: &[u8]) -> Result<(usize, Option<Outcome>), ScanError> {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len() - pos);
                self.skip -= n;
                pos += n;
                if self.skip > 0 {
                    return Ok((pos, None));
                }
                if let Some(done) = self.paid() {
                    return Ok((pos, Some(done)));
                }
                continue;
            }
            let rest = &buf[pos..];
            let Some(eol) = memchr::memchr(b'\n', rest) else {
                if rest.len() > MAX_LINE_BYTES {
                    return Err(ScanError(format!(
                        "a line longer than {MAX_LINE_BYTES} bytes"
                    )));
                }
                return Ok((pos, None));
            };
            if eol == 0 || rest[eol - 1] != b'\r' {
                return Err(ScanError("a line not ended by CRLF".into()));
            }
            let line = &rest[..eol - 1];
            pos += eol + 1;
            let (&kind, body) = line
                .split_first()
                .ok_or_else(|| ScanError("an empty line".into()))?;
            let first = self.owed == 0;
            match kind {
                b'+' | b',' | b'(' | b'#' => self.start(first, Outcome::Value),
                b'-' => self.start(first, Outcome::Error),
                b'_' => self.start(first, Outcome::Nil),
                b':' => self.start(
                    first,
                    if body == b"0" {
                        Outcome::Zero
                    } else {
                        Outcome::Value
                    },
                ),
                b'$' | b'=' | b'!' => {
                    let len = number(body)?;
                    if len < 0 {
                        self.start(first, Outcome::Nil);
                    } else {
                        self.start(
                            first,
                            if kind == b'!' {
                                Outcome::Error
                            } else {
                                Outcome::Value
                            },
                        );
                        self.skip = usize::try_from(len)
                            .ok()
                            .and_then(|l| l.checked_add(2))
                            .ok_or_else(|| ScanError(format!("bulk length {len}")))?;
                        // The element is paid once its body is skipped.
                        continue;
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = number(body)?;
                    if n < 0 {
                        self.start(first, Outcome::Nil);
                    } else {
                        let n = n as u64;
                        let children = if matches!(kind, b'%' | b'|') {
                            n.checked_mul(2)
                                .ok_or_else(|| ScanError(format!("map length {n}")))?
                        } else {
                            n
                        };
                        if kind == b'|' {
                            // Attributes annotate the element after them and are
                            // no element themselves: only their pairs are owed.
                            self.owed += children;
                            continue;
                        }
                        self.start(first, Outcome::Value);
                        self.owed += children;
                    }
                }
                other => {
                    return Err(ScanError(format!(
                        "unexpected type byte {:?}",
                        char::from(other)
                    )));
                }
            }
            if let Some(done) = self.paid() {
                return Ok((pos, Some(done)));
            }
        }
    }

    /// Notes the first element of a reply (which classifies it) and makes the
    /// element owed; later elements are owed by their aggregate already.
    fn start(&mut self, first: bool, outcome: Outcome) {
        if first {
            self.outcome = Some(outcome);
            self.owed += 1;
        }
    }

    /// One element was paid; the reply's outcome when that completed it.
    fn paid(&mut self) -> Option<Outcome> {
        self.owed = self.owed.saturating_sub(1);
        if self.owed == 0 {
            self.outcome.take()
        } else {
            None
        }
    }
}

/// A header line's length, checked.
fn number(digits: &[u8]) -> Result<i64, ScanError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= -1)
        .ok_or_else(|| {
            ScanError(format!(
                "bad length {:?}",
                String::from_utf8_lossy(&digits[..digits.len().min(20)])
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` fed in chunks of `step` bytes the way a connection does;
    /// returns the outcomes and the bytes left over.
    fn scan_chunked(input: &[u8], step: usize) -> (Vec<Outcome>, usize) {
        let mut s = Scanner::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            buf.extend_from_slice(chunk);
            let mut pos = 0;
            loop {
                let (used, o) = s.next(&buf[pos..]).expect("valid RESP");
                pos += used;
                match o {
                    Some(o) => out.push(o),
                    None => break,
                }
            }
            buf.drain(..pos);
        }
        (out, buf.len())
    }

    fn scan_all(input: &[u8]) -> Vec<Outcome> {
        let whole = scan_chunked(input, input.len().max(1));
        for step in 1..input.len().min(40) {
            assert_eq!(
                scan_chunked(input, step),
                whole,
                "fed {step} bytes at a time"
            );
        }
        assert_eq!(whole.1, 0, "bytes left over");
        whole.0
    }

    #[test]
    fn simple_replies_are_counted_and_classified() {
        assert_eq!(
            scan_all(b"+PONG\r\n:7\r\n:0\r\n-ERR nope\r\n$-1\r\n*-1\r\n"),
            vec![
                Outcome::Value,
                Outcome::Value,
                Outcome::Zero,
                Outcome::Error,
                Outcome::Nil,
                Outcome::Nil
            ]
        );
    }

    #[test]
    fn bulk_bodies_may_contain_crlf_and_split_anywhere() {
        assert_eq!(
            scan_all(b"$6\r\na\r\nb\r\n\r\n$0\r\n\r\n+OK\r\n"),
            vec![Outcome::Value, Outcome::Value, Outcome::Value]
        );
    }

    #[test]
    fn nested_lookup_reply_is_one_reply() {
        let lookup = b"*8\r\n$2\r\nid\r\n:1\r\n$4\r\nname\r\n$5\r\nalice\r\n\
                       $10\r\ncreated_at\r\n$3\r\nnow\r\n$6\r\nfields\r\n\
                       *2\r\n$5\r\nemail\r\n$3\r\na@b\r\n";
        let mut two = lookup.to_vec();
        two.extend_from_slice(b"*0\r\n*1\r\n*0\r\n");
        assert_eq!(scan_all(&two), vec![Outcome::Value; 3]);
    }

    #[test]
    fn pubsub_message_is_one_reply() {
        let push = b"*3\r\n$7\r\nmessage\r\n$15\r\nuser.registered\r\n$2\r\n{}\r\n";
        assert_eq!(scan_all(push), vec![Outcome::Value]);
    }

    #[test]
    fn resp3_types_are_understood() {
        let input = b"%1\r\n+id\r\n:1\r\n_\r\n>2\r\n+a\r\n+b\r\n,1.5\r\n#t\r\n(12\r\n\
                      !3\r\nERR\r\n=5\r\ntxt:x\r\n~1\r\n:0\r\n|1\r\n+k\r\n+v\r\n:5\r\n";
        assert_eq!(
            scan_all(input),
            vec![
                Outcome::Value,
                Outcome::Nil,
                Outcome::Value,
                Outcome::Value,
                Outcome::Value,
                Outcome::Value,
                Outcome::Error,
                Outcome::Value,
                Outcome::Value,
                Outcome::Value,
            ]
        );
    }

    #[test]
    fn incomplete_header_is_left_unconsumed() {
        let mut s = Scanner::new();
        assert_eq!(s.next(b"+PONG\r\n$12").unwrap(), (7, Some(Outcome::Value)));
        assert_eq!(s.next(b"$12").unwrap(), (0, None));
        assert!(s.idle());
    }

    #[test]
    fn partial_bulk_body_is_consumed_not_kept() {
        let mut s = Scanner::new();
        assert_eq!(s.next(b"$10\r\nabc").unwrap(), (8, None));
        assert!(!s.idle());
        assert_eq!(s.next(b"defghij\r\n").unwrap(), (9, Some(Outcome::Value)));
        assert!(s.idle());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Scanner::new().next(b"hello\r\n").is_err());
        assert!(Scanner::new().next(b"$-5\r\n").is_err());
        assert!(Scanner::new().next(b"$x\r\n").is_err());
        assert!(Scanner::new().next(b"+OK\n").is_err());
        assert!(
            Scanner::new()
                .next(&vec![b'+'; MAX_LINE_BYTES + 1])
                .is_err()
        );
    }
}
