//! NATS message headers: the block `HMSG` carries and `HPUB` sends.
//!
//! # Format
//! ```text
//! NATS/1.0[ <status>[ <description>]]\r\n
//! <Name>: <value>\r\n
//! ...
//! \r\n
//! ```
//! The status line carries the server's own signals on a message: `503` (no
//! responders), `408` (a pull request expired), `100` (an idle heartbeat or a flow
//! control request). A name may repeat; every value is kept, in order.
//!
//! nats-server 2.9.10 checks only that a published block starts with `NATS/1.0`
//! and forwards the rest as it came (a line without a colon reaches subscribers),
//! so decoding is lenient: a line it cannot read is skipped, never an error that
//! would cost the connection.

use std::fmt;

/// The version line every header block starts with.
pub const VERSION_LINE: &str = "NATS/1.0";

/// The status of a message the server generated (`NATS/1.0 503`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The three-digit code: 503 no responders, 408 request timeout, 100 idle
    /// heartbeat or flow control.
    pub code: u16,
    /// The text after the code (`Request Timeout`), empty when there is none.
    pub description: String,
}

impl Status {
    /// `503`: nobody subscribes to the subject a request went to (for JetStream:
    /// no stream leader is listening yet).
    pub const NO_RESPONDERS: u16 = 503;
    /// `408`: a pull request expired.
    pub const REQUEST_TIMEOUT: u16 = 408;
    /// `100`: an idle heartbeat or a flow-control request of a push consumer.
    pub const CONTROL: u16 = 100;
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.description.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {}", self.code, self.description)
        }
    }
}

/// The `Name: value` pairs of a header block, in the order they came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds one value for `name` (after any it already has).
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The first value of `name`, compared without regard to ASCII case.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Decodes a header block (the first `#header bytes` of an `HMSG` payload, or a
/// stored message's `hdrs`): its status, if any, and its pairs.
pub fn decode(block: &[u8]) -> (Option<Status>, Headers) {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let status = lines.next().and_then(status_of);
    let mut headers = Headers::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        // A folded continuation line (obsolete MIME) or a line without a colon
        // carries nothing we can attribute; skip it.
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() {
                headers.append(name, value.trim());
            }
        }
    }
    (status, headers)
}

/// The status of a version line: `NATS/1.0 503` or `NATS/1.0 408 Request Timeout`.
fn status_of(line: &str) -> Option<Status> {
    let rest = line.strip_prefix(VERSION_LINE)?.trim_start();
    let (code, description) = match rest.split_once([' ', '\t']) {
        Some((code, description)) => (code, description.trim()),
        None => (rest, ""),
    };
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Status {
        code: code.parse().ok()?,
        description: description.to_string(),
    })
}

/// Why a header cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderError {
    /// A name that is empty or holds a colon, whitespace or a control byte.
    InvalidName(String),
    /// A value holding CR or LF (it would end the line early).
    InvalidValue(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::InvalidName(n) => write!(f, "invalid header name {n:?}"),
            HeaderError::InvalidValue(v) => write!(f, "invalid header value {v:?}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Appends the header block for `headers` (version line, pairs, blank line) to
/// `out`; on an error nothing is appended.
pub fn encode(out: &mut Vec<u8>, headers: &[(&str, &str)]) -> Result<(), HeaderError> {
    for (name, value) in headers {
        if name.is_empty()
            || name
                .bytes()
                .any(|b| b == b':' || b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(HeaderError::InvalidName((*name).to_string()));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(HeaderError::InvalidValue((*value).to_string()));
        }
    }
    out.extend_from_slice(VERSION_LINE.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Bytes `encode` appends for `headers` (valid or not).
pub fn encoded_len(headers: &[(&str, &str)]) -> usize {
    headers
        .iter()
        .fold(VERSION_LINE.len() + 4, |n, (name, value)| {
            n + name.len() + value.len() + 4
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_responders_status_line_alone() {
        // nats-server 2.9.10, a request to a subject nobody subscribes to.
        let (status, headers) = decode(b"NATS/1.0 503\r\n\r\n");
        assert_eq!(
            status,
            Some(Status {
                code: Status::NO_RESPONDERS,
                description: String::new()
            })
        );
        assert!(headers.is_empty());
    }

    #[test]
    fn request_timeout_with_description_and_headers() {
        // nats-server 2.9.10, an expired pull request.
        let (status, headers) = decode(
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n",
        );
        let status = status.unwrap();
        assert_eq!(status.code, Status::REQUEST_TIMEOUT);
        assert_eq!(status.description, "Request Timeout");
        assert_eq!(headers.get("nats-pending-messages"), Some("3"));
        assert_eq!(headers.get("Nats-Pending-Bytes"), Some("0"));
        let (status, _) = decode(b"NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Stream: 2\r\n\r\n");
        assert_eq!(status.map(|s| s.code), Some(Status::CONTROL));
    }

    #[test]
    fn repeated_names_keep_every_value_in_order() {
        let (status, headers) =
            decode(b"NATS/1.0\r\nNats-Msg-Id: a1\r\nX-Multi: one\r\nX-Multi: two\r\n\r\n");
        assert_eq!(status, None);
        assert_eq!(headers.get("Nats-Msg-Id"), Some("a1"));
        assert_eq!(
            headers.get_all("x-multi").collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(headers.len(), 3);
    }

    #[test]
    fn lines_without_colon_are_skipped_and_values_trimmed() {
        // nats-server 2.9.10 forwards this block as published.
        let (_, headers) = decode(b"NATS/1.0\r\nA:b\r\nC:  d  \r\nE;f\r\n\r\n");
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("A", "b"), ("C", "d")]);
    }

    #[test]
    fn a_block_without_version_line_has_no_status() {
        let (status, headers) = decode(b"bogus\r\nK: v\r\n\r\n");
        assert_eq!(status, None);
        assert_eq!(headers.get("K"), Some("v"));
        assert_eq!(decode(b"NATS/1.0 5x3\r\n\r\n").0, None);
    }

    #[test]
    fn encode_writes_the_block_and_its_length() {
        let mut out = Vec::new();
        let h = [("Nats-Msg-Id", "w-2"), ("Nats-Expected-Last-Sequence", "1")];
        encode(&mut out, &h).unwrap();
        assert_eq!(
            out,
            b"NATS/1.0\r\nNats-Msg-Id: w-2\r\nNats-Expected-Last-Sequence: 1\r\n\r\n"
        );
        assert_eq!(encoded_len(&h), out.len());
        assert_eq!(encoded_len(&[]), b"NATS/1.0\r\n\r\n".len());
    }

    proptest::proptest! {
        #[test]
        fn any_block_decodes_without_panic(
            block in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let _ = decode(&block);
        }
    }

    #[test]
    fn encode_refuses_names_and_values_that_break_the_block() {
        let mut out = Vec::new();
        for bad in ["", "A:B", "A B", "A\r"] {
            assert_eq!(
                encode(&mut out, &[(bad, "v")]),
                Err(HeaderError::InvalidName(bad.into()))
            );
        }
        assert!(matches!(
            encode(&mut out, &[("A", "x\r\nB: y")]),
            Err(HeaderError::InvalidValue(_))
        ));
        assert!(out.is_empty());
    }
}
