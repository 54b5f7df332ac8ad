//! The NATS client protocol: an incremental parser of the operations the server
//! sends, and encoders of the ones the client sends.
//!
//! # Server operations
//! ```text
//! INFO {json}
//! MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n
//! HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>\r\n<headers><payload>\r\n
//! PING | PONG | +OK | -ERR '<text>'
//! ```
//! Operation names are case-insensitive. Arguments are separated by runs of spaces
//! or tabs: nats-server 2.9.10 writes a JetStream ack with an empty reply field as
//! `MSG <inbox> 1  25` (two spaces), and ends INFO's line with a space before CRLF.
//! A control line ends in CRLF (a bare LF is accepted); a payload is followed by
//! exactly CRLF.
//!
//! # Client operations
//! `CONNECT {json}`, `PUB <subject> [reply-to] <#bytes>`, `HPUB <subject>
//! [reply-to] <#header bytes> <#total bytes>`, `SUB <subject> <sid>`,
//! `UNSUB <sid> [max]`, `PING`, `PONG`.
//!
//! # Progress and limits
//! The parser keeps its place: a control line's newline search resumes where the
//! last one stopped, and once a `MSG`/`HMSG` line is read its arguments are kept
//! and the payload awaited by length alone. Nothing is allocated from a length the
//! server declared before the bytes it announces have arrived. A control line is
//! at most [`MAX_CONTROL_LINE_BYTES`] (INFO: [`MAX_INFO_BYTES`], since a cluster's
//! INFO lists every client URL); a message at most INFO's `max_payload`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::headers::{self, HeaderError, Headers, Status};

/// Longest control line accepted from the server, INFO excepted (the server's own
/// default for client lines).
pub const MAX_CONTROL_LINE_BYTES: usize = 4096;
/// Longest INFO line accepted.
pub const MAX_INFO_BYTES: usize = 64 * 1024;
/// The message size limit until the server's INFO says otherwise (nats-server's
/// default `max_payload`).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Bytes of a bad line quoted in an error.
const MAX_QUOTED_BYTES: usize = 64;

/// Bytes the server sent that break the protocol; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtoError {
    /// A line that starts with no known operation (quoted, escaped).
    UnknownOp(String),
    /// A control line longer than the limit without its newline.
    ControlLineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// `MSG` or `HMSG` with the wrong number of arguments or a bad number.
    InvalidArgs {
        /// The operation.
        op: &'static str,
        /// The line (quoted, escaped).
        line: String,
    },
    /// A message larger than INFO's `max_payload`.
    PayloadTooLarge {
        /// The size the server announced.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A payload not followed by CRLF.
    MissingPayloadEnd,
    /// INFO's JSON does not parse.
    InvalidInfo(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::UnknownOp(line) => write!(f, "unknown operation in \"{line}\""),
            ProtoError::ControlLineTooLong { limit } => {
                write!(f, "control line longer than {limit} bytes")
            }
            ProtoError::InvalidArgs { op, line } => write!(f, "invalid {op} arguments \"{line}\""),
            ProtoError::PayloadTooLarge { bytes, limit } => {
                write!(f, "message of {bytes} bytes over max_payload {limit}")
            }
            ProtoError::MissingPayloadEnd => f.write_str("payload not followed by CRLF"),
            ProtoError::InvalidInfo(e) => write!(f, "invalid INFO: {e}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// The server's INFO: who it is and what it allows. Unknown fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    /// The server's unique id.
    pub server_id: String,
    /// Its name (`--name`, else its id).
    pub server_name: String,
    /// Its version (`2.9.10`).
    pub version: String,
    /// Protocol level (1 for servers that know headers).
    pub proto: i32,
    /// The address it listens on.
    pub host: String,
    /// The port it listens on.
    pub port: u16,
    /// True when it accepts `HPUB` and sends `HMSG`.
    pub headers: bool,
    /// Largest message (headers and payload) it accepts.
    pub max_payload: u64,
    /// True when CONNECT must carry credentials.
    pub auth_required: bool,
    /// True when the connection must upgrade to TLS after this INFO.
    pub tls_required: bool,
    /// True when TLS is offered but not required.
    pub tls_available: bool,
    /// True when JetStream is enabled.
    pub jetstream: bool,
    /// Our connection's id on the server.
    pub client_id: u64,
    /// Our address as the server sees it.
    pub client_ip: String,
    /// The cluster's name, when clustered.
    pub cluster: Option<String>,
    /// Client URLs of the cluster's servers (`host:port`).
    pub connect_urls: Vec<String>,
    /// True when the server is in lame duck mode (about to shut down).
    pub ldm: bool,
}

/// A message delivered on a subscription (`MSG` or `HMSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The subject it was published to.
    pub subject: String,
    /// The subscription it matched.
    pub sid: u64,
    /// Where an answer goes.
    pub reply: Option<String>,
    /// The status of a message the server generated (503, 408, 100).
    pub status: Option<Status>,
    /// Its headers (none for `MSG`).
    pub headers: Headers,
    /// The payload, after the header block.
    pub payload: Vec<u8>,
}

/// One operation from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO {json}`.
    Info(Box<ServerInfo>),
    /// `MSG` or `HMSG`.
    Msg(Msg),
    /// `PING`: answer `PONG`.
    Ping,
    /// `PONG`: the answer to our `PING`.
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR '<text>'`, the text without its quotes.
    Err(String),
}

/// The arguments of a `MSG`/`HMSG` line, kept while its payload arrives.
#[derive(Debug)]
struct MsgHead {
    subject: String,
    sid: u64,
    reply: Option<String>,
    /// `None` for `MSG`.
    header_bytes: Option<usize>,
    total_bytes: usize,
}

/// Where the parser is inside the current operation.
#[derive(Debug)]
enum State {
    /// In a control line; bytes before `scanned` hold no newline.
    Line { scanned: usize },
    /// A `MSG`/`HMSG` line was read; its payload starts at `start`.
    Payload { head: MsgHead, start: usize },
}

/// What a control line turned out to be.
enum Control {
    Op(ServerOp),
    Msg(MsgHead),
}

/// The incremental parser of one connection.
#[derive(Debug)]
pub struct Parser {
    max_payload: usize,
    state: State,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    /// A parser between operations, with the default payload limit.
    pub fn new() -> Parser {
        Parser {
            max_payload: DEFAULT_MAX_PAYLOAD_BYTES,
            state: State::Line { scanned: 0 },
        }
    }

    /// Sets the payload limit (INFO's `max_payload`).
    pub fn set_max_payload(&mut self, bytes: usize) {
        self.max_payload = bytes;
    }

    /// Looks for one complete operation at the front of `buf`: `Ok(None)` when it
    /// is not complete yet, else the operation and the bytes it took.
    ///
    /// `buf` must start where the previous operation ended (or where the previous
    /// call's did, when that one returned `None`) and may only have grown at the
    /// back since. After an error the parser's state is unspecified.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(ServerOp, usize)>, ProtoError> {
        if let State::Line { scanned } = self.state {
            let from = scanned.min(buf.len());
            let Some(nl) = memchr::memchr(b'\n', &buf[from..]).map(|i| i + from) else {
                if buf.len() > line_limit(buf) {
                    return Err(ProtoError::ControlLineTooLong {
                        limit: line_limit(buf),
                    });
                }
                self.state = State::Line { scanned: buf.len() };
                return Ok(None);
            };
            let line = &buf[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > line_limit(line) {
                return Err(ProtoError::ControlLineTooLong {
                    limit: line_limit(line),
                });
            }
            self.state = State::Line { scanned: 0 };
            match self.control(line)? {
                Control::Op(op) => return Ok(Some((op, nl + 1))),
                Control::Msg(head) => {
                    self.state = State::Payload {
                        head,
                        start: nl + 1,
                    }
                }
            }
        }
        let state = std::mem::replace(&mut self.state, State::Line { scanned: 0 });
        let State::Payload { head, start } = state else {
            self.state = state;
            return Ok(None);
        };
        // `total_bytes` is at most max_payload and `start` at most a control line,
        // so the sums cannot overflow.
        let end = start + head.total_bytes;
        let Some(trailer) = buf.get(end..end + 2) else {
            self.state = State::Payload { head, start };
            return Ok(None);
        };
        if trailer != b"\r\n" {
            return Err(ProtoError::MissingPayloadEnd);
        }
        let body = &buf[start..end];
        let (status, headers, payload) = match head.header_bytes {
            None => (None, Headers::new(), body.to_vec()),
            Some(h) => {
                let (block, payload) = body.split_at(h);
                let (status, headers) = headers::decode(block);
                (status, headers, payload.to_vec())
            }
        };
        let msg = Msg {
            subject: head.subject,
            sid: head.sid,
            reply: head.reply,
            status,
            headers,
            payload,
        };
        Ok(Some((ServerOp::Msg(msg), end + 2)))
    }

    /// Reads one control line (without its line ending).
    fn control(&self, line: &[u8]) -> Result<Control, ProtoError> {
        let line = line.trim_ascii_end();
        let (op, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
            Some(i) => (&line[..i], line[i..].trim_ascii_start()),
            None => (line, &[][..]),
        };
        let is = |name: &str| op.eq_ignore_ascii_case(name.as_bytes());
        let simple = if is("PING") {
            ServerOp::Ping
        } else if is("PONG") {
            ServerOp::Pong
        } else if is("+OK") {
            ServerOp::Ok
        } else if is("-ERR") {
            let text = rest
                .strip_prefix(b"'")
                .and_then(|t| t.strip_suffix(b"'"))
                .unwrap_or(rest);
            ServerOp::Err(String::from_utf8_lossy(text).into_owned())
        } else if is("INFO") {
            let info: ServerInfo =
                serde_json::from_slice(rest).map_err(|e| ProtoError::InvalidInfo(e.to_string()))?;
            ServerOp::Info(Box::new(info))
        } else if is("MSG") {
            return self.msg_head("MSG", line, rest, false).map(Control::Msg);
        } else if is("HMSG") {
            return self.msg_head("HMSG", line, rest, true).map(Control::Msg);
        } else {
            return Err(ProtoError::UnknownOp(quote(line)));
        };
        Ok(Control::Op(simple))
    }

    /// The arguments of `MSG` (`subject sid [reply] size`) or `HMSG` (`subject sid
    /// [reply] header-size total-size`).
    fn msg_head(
        &self,
        op: &'static str,
        line: &[u8],
        rest: &[u8],
        with_headers: bool,
    ) -> Result<MsgHead, ProtoError> {
        let bad = || ProtoError::InvalidArgs {
            op,
            line: quote(line),
        };
        let mut args: [&[u8]; 5] = [&[]; 5];
        let mut n = 0;
        for arg in rest.split(|&b| b == b' ' || b == b'\t') {
            if arg.is_empty() {
                continue;
            }
            *args.get_mut(n).ok_or_else(bad)? = arg;
            n += 1;
        }
        let sizes = if with_headers { 2 } else { 1 };
        let reply = match n.checked_sub(sizes + 2) {
            Some(0) => None,
            Some(1) => Some(String::from_utf8_lossy(args[2]).into_owned()),
            _ => return Err(bad()),
        };
        let total_bytes = size(args[n - 1]).ok_or_else(bad)?;
        let header_bytes = if with_headers {
            let h = size(args[n - 2]).ok_or_else(bad)?;
            if h > total_bytes {
                return Err(bad());
            }
            Some(h)
        } else {
            None
        };
        if total_bytes > self.max_payload {
            return Err(ProtoError::PayloadTooLarge {
                bytes: total_bytes,
                limit: self.max_payload,
            });
        }
        Ok(MsgHead {
            subject: String::from_utf8_lossy(args[0]).into_owned(),
            sid: size(args[1]).ok_or_else(bad)? as u64,
            reply,
            header_bytes,
            total_bytes,
        })
    }
}

/// The limit for a control line starting with `prefix`.
fn line_limit(prefix: &[u8]) -> usize {
    match prefix.get(..4) {
        Some(op) if op.eq_ignore_ascii_case(b"INFO") => MAX_INFO_BYTES,
        _ => MAX_CONTROL_LINE_BYTES,
    }
}

/// A plain decimal number (digits only, no overflow).
fn size(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        } else {
            None
        }
    })
}

/// The start of `bytes` escaped for an error message.
fn quote(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(MAX_QUOTED_BYTES)];
    let mut s = cut.escape_ascii().to_string();
    if bytes.len() > cut.len() {
        s.push_str("...");
    }
    s
}

/// The CONNECT options this client sends.
#[derive(Debug, Clone, Serialize)]
pub struct Connect<'a> {
    /// `+OK` after every operation: off.
    pub verbose: bool,
    /// Strict subject checks by the server: off.
    pub pedantic: bool,
    /// True on a TLS connection.
    pub tls_required: bool,
    /// The client's name, shown in the server's connection list.
    pub name: &'a str,
    /// The implementation language.
    pub lang: &'a str,
    /// The client's version.
    pub version: &'a str,
    /// Protocol level 1: the server may send async INFO.
    pub protocol: u8,
    /// Receive our own publications on our own subscriptions.
    pub echo: bool,
    /// `HPUB`/`HMSG` in use.
    pub headers: bool,
    /// A request to a subject without subscribers gets a `503` status message.
    pub no_responders: bool,
    /// User name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// Password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<&'a str>,
    /// Token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<&'a str>,
}

/// An operation that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// An empty subject, or one holding whitespace or a control byte (either would
    /// break the line's framing).
    InvalidSubject(String),
    /// A header name or value that would break the header block.
    InvalidHeader(HeaderError),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::InvalidSubject(s) => write!(f, "invalid subject {s:?}"),
            EncodeError::InvalidHeader(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Checks that `subject` can go on a control line.
pub fn check_subject(subject: &str) -> Result<(), EncodeError> {
    if subject.is_empty()
        || subject
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(EncodeError::InvalidSubject(subject.to_string()));
    }
    Ok(())
}

/// Appends `CONNECT {json}`.
pub fn connect(out: &mut Vec<u8>, options: &Connect<'_>) {
    out.extend_from_slice(b"CONNECT ");
    serde_json::to_writer(&mut *out, options)
        .expect("invariant: CONNECT holds only strings and booleans");
    out.extend_from_slice(b"\r\n");
}

/// Appends `PUB` (no headers) or `HPUB` (with `headers`); nothing on an error.
pub fn publish(
    out: &mut Vec<u8>,
    subject: &str,
    reply: Option<&str>,
    headers: &[(&str, &str)],
    payload: &[u8],
) -> Result<(), EncodeError> {
    check_subject(subject)?;
    if let Some(reply) = reply {
        check_subject(reply)?;
    }
    let mark = out.len();
    out.extend_from_slice(if headers.is_empty() {
        b"PUB "
    } else {
        b"HPUB "
    });
    out.extend_from_slice(subject.as_bytes());
    if let Some(reply) = reply {
        out.push(b' ');
        out.extend_from_slice(reply.as_bytes());
    }
    let mut num = itoa::Buffer::new();
    if headers.is_empty() {
        out.push(b' ');
        out.extend_from_slice(num.format(payload.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        let header_bytes = headers::encoded_len(headers);
        out.push(b' ');
        out.extend_from_slice(num.format(header_bytes).as_bytes());
        out.push(b' ');
        out.extend_from_slice(num.format(header_bytes + payload.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Err(e) = headers::encode(out, headers) {
            out.truncate(mark);
            return Err(EncodeError::InvalidHeader(e));
        }
    }
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `SUB <subject> <sid>`; nothing on an error.
pub fn subscribe(out: &mut Vec<u8>, subject: &str, sid: u64) -> Result<(), EncodeError> {
    check_subject(subject)?;
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject.as_bytes());
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(sid).as_bytes());
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Appends `UNSUB <sid> [max]`: with `max`, the server ends the subscription after
/// that many more messages.
pub fn unsubscribe(out: &mut Vec<u8>, sid: u64, max: Option<u64>) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"UNSUB ");
    out.extend_from_slice(num.format(sid).as_bytes());
    if let Some(max) = max {
        out.push(b' ');
        out.extend_from_slice(num.format(max).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `PING`.
pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// Appends `PONG`.
pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Every transcript below is bytes nats-server 2.9.10 (Debian's build, go1.19.8)
    // sent to a raw socket, pasted unchanged.

    /// INFO of a single JetStream server (`nats-server -js -p -1`); note the space
    /// before CRLF.
    const INFO_JS: &[u8] = b"INFO {\"server_id\":\"NBDST6AYYW6UDMWC5ZIAYZDJSQV56GFN6ZPWECOZ72YCNJOTFEYYPPTK\",\"server_name\":\"NBDST6AYYW6UDMWC5ZIAYZDJSQV56GFN6ZPWECOZ72YCNJOTFEYYPPTK\",\"version\":\"2.9.10\",\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":45271,\"headers\":true,\"max_payload\":1048576,\"jetstream\":true,\"client_id\":4,\"client_ip\":\"127.0.0.1\"} \r\n";
    /// INFO with `--user/--pass`.
    const INFO_AUTH: &[u8] = b"INFO {\"server_id\":\"NB3M4M3COIUZIETT6EG7TD7LVCQG5QURUYOYEH2SLIHKXZON2FOOLSL7\",\"server_name\":\"NB3M4M3COIUZIETT6EG7TD7LVCQG5QURUYOYEH2SLIHKXZON2FOOLSL7\",\"version\":\"2.9.10\",\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":39947,\"headers\":true,\"auth_required\":true,\"max_payload\":1048576,\"client_id\":4,\"client_ip\":\"127.0.0.1\"} \r\n";
    /// INFO with `--tls`.
    const INFO_TLS: &[u8] = b"INFO {\"server_id\":\"NBNZV6IGIZYU6O27AL63GYOWBTE7PPS5QMMKR5CSIOI5RXQJPMDANXM4\",\"server_name\":\"NBNZV6IGIZYU6O27AL63GYOWBTE7PPS5QMMKR5CSIOI5RXQJPMDANXM4\",\"version\":\"2.9.10\",\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":43985,\"headers\":true,\"tls_required\":true,\"max_payload\":1048576,\"client_id\":4,\"client_ip\":\"127.0.0.1\"} \r\n";
    /// The async INFO node n1 of a 3-node cluster sent after the node n3 was
    /// killed.
    const INFO_CLUSTER: &[u8] = b"INFO {\"server_id\":\"NC5KALBRON67QMB534NX5KYLKF72TOZRVMP63TL26JHNDWJQ2ZJEXNF4\",\"server_name\":\"n1\",\"version\":\"2.9.10\",\"proto\":1,\"go\":\"go1.19.8\",\"host\":\"127.0.0.1\",\"port\":14221,\"headers\":true,\"max_payload\":1048576,\"jetstream\":true,\"client_id\":18,\"client_ip\":\"127.0.0.1\",\"cluster\":\"C\",\"connect_urls\":[\"127.0.0.1:14221\",\"127.0.0.1:14222\"]} \r\n";

    /// A session in verbose mode: CONNECT+PING, two SUBs and two PUBs to `foo`,
    /// then an op the server does not know.
    const VERBOSE: &[u8] = b"+OK\r\nPONG\r\n+OK\r\n+OK\r\n+OK\r\nMSG foo 1 5\r\nhello\r\n+OK\r\nMSG foo 1 reply.x 0\r\n\r\n-ERR 'Unknown Protocol Operation'\r\n";
    /// HPUB with a repeated header, with and without payload and reply.
    const HMSGS: &[u8] = b"HMSG bar.x 2 57 62\r\nNATS/1.0\r\nNats-Msg-Id: a1\r\nX-Multi: one\r\nX-Multi: two\r\n\r\nworld\r\nHMSG bar.y 2 reply.y 57 57\r\nNATS/1.0\r\nNats-Msg-Id: a1\r\nX-Multi: one\r\nX-Multi: two\r\n\r\n\r\n";
    /// A request nobody answers (CONNECT with headers and no_responders).
    const NO_RESPONDERS: &[u8] = b"HMSG _INBOX.abc.7 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
    /// JetStream publish acks: success, duplicate, wrong last sequence, wrong
    /// last msg id; the server's PING in between.
    const ACKS: &[u8] = b"MSG _INBOX.abc.12 1  25\r\n{\"stream\":\"REC\", \"seq\":1}\r\nPING\r\nMSG _INBOX.abc.14 1  43\r\n{\"stream\":\"REC\", \"seq\":2,\"duplicate\": true}\r\nMSG _INBOX.abc.15 1  101\r\n{\"error\":{\"code\":400,\"err_code\":10071,\"description\":\"wrong last sequence: 2\"},\"stream\":\"REC\",\"seq\":0}\r\nMSG _INBOX.abc.16 1  101\r\n{\"error\":{\"code\":400,\"err_code\":10070,\"description\":\"wrong last msg ID: w-2\"},\"stream\":\"REC\",\"seq\":0}\r\n";
    /// A pull consumer's delivery (reply `$JS.ACK...`) and its expired request.
    const PULL: &[u8] = b"HMSG rec.a 3 $JS.ACK.REC.C1.1.1.1.1796570646376562136.1 62 71\r\nNATS/1.0\r\nNats-Msg-Id: w-1\r\nNats-Expected-Last-Sequence: 0\r\n\r\n{\"seq\":1}\r\nHMSG _INBOX.pull.1 3  81 81\r\nNATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\nNats-Pending-Bytes: 0\r\n\r\n\r\n";
    /// A push consumer's idle heartbeat.
    const HEARTBEAT: &[u8] = b"HMSG hb.deliver 4  75 75\r\nNATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: 0\r\nNats-Last-Stream: 2\r\n\r\n\r\n";
    /// Wrong credentials, and a PUB over max_payload.
    const ERRORS: &[u8] = b"-ERR 'Authorization Violation'\r\n-ERR 'Maximum Payload Violation'\r\n";

    /// Parses `buf` from `*start` as far as it goes, like a connection does after
    /// each read.
    fn feed(
        p: &mut Parser,
        buf: &[u8],
        start: &mut usize,
        out: &mut Vec<ServerOp>,
    ) -> Result<(), ProtoError> {
        while let Some((op, n)) = p.parse(&buf[*start..])? {
            assert!(n > 0);
            *start += n;
            out.push(op);
        }
        Ok(())
    }

    fn parse_all(bytes: &[u8]) -> Vec<ServerOp> {
        let (mut p, mut start, mut out) = (Parser::new(), 0, Vec::new());
        feed(&mut p, bytes, &mut start, &mut out).unwrap();
        assert_eq!(start, bytes.len(), "left over: {:?}", &bytes[start..]);
        out
    }

    fn msg(
        subject: &str,
        sid: u64,
        reply: Option<&str>,
        status: Option<(u16, &str)>,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> ServerOp {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.append(*n, *v);
        }
        ServerOp::Msg(Msg {
            subject: subject.into(),
            sid,
            reply: reply.map(Into::into),
            status: status.map(|(code, d)| Status {
                code,
                description: d.into(),
            }),
            headers: h,
            payload: payload.to_vec(),
        })
    }

    fn info(bytes: &[u8]) -> ServerInfo {
        match parse_all(bytes).as_slice() {
            [ServerOp::Info(i)] => (**i).clone(),
            other => panic!("not one INFO: {other:?}"),
        }
    }

    #[test]
    fn info_of_a_jetstream_server() {
        let i = info(INFO_JS);
        assert_eq!(i.version, "2.9.10");
        assert_eq!(i.proto, 1);
        assert_eq!(i.port, 45271);
        assert!(i.headers && i.jetstream);
        assert!(!i.auth_required && !i.tls_required);
        assert_eq!(i.max_payload, 1_048_576);
        assert_eq!(i.client_id, 4);
        assert_eq!(i.cluster, None);
    }

    #[test]
    fn info_flags_auth_tls_and_cluster_urls() {
        assert!(info(INFO_AUTH).auth_required);
        assert!(info(INFO_TLS).tls_required);
        let c = info(INFO_CLUSTER);
        assert_eq!(c.server_name, "n1");
        assert_eq!(c.cluster.as_deref(), Some("C"));
        assert_eq!(c.connect_urls, ["127.0.0.1:14221", "127.0.0.1:14222"]);
    }

    fn verbose_ops() -> Vec<ServerOp> {
        vec![
            ServerOp::Ok,
            ServerOp::Pong,
            ServerOp::Ok,
            ServerOp::Ok,
            ServerOp::Ok,
            msg("foo", 1, None, None, &[], b"hello"),
            ServerOp::Ok,
            msg("foo", 1, Some("reply.x"), None, &[], b""),
            ServerOp::Err("Unknown Protocol Operation".into()),
        ]
    }

    #[test]
    fn verbose_session() {
        assert_eq!(parse_all(VERBOSE), verbose_ops());
    }

    #[test]
    fn headers_repeat_and_reply_with_empty_payload() {
        let multi = [
            ("Nats-Msg-Id", "a1"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
        ];
        assert_eq!(
            parse_all(HMSGS),
            [
                msg("bar.x", 2, None, None, &multi, b"world"),
                msg("bar.y", 2, Some("reply.y"), None, &multi, b""),
            ]
        );
    }

    #[test]
    fn status_messages_503_408_100() {
        assert_eq!(
            parse_all(NO_RESPONDERS),
            [msg("_INBOX.abc.7", 1, None, Some((503, "")), &[], b"")]
        );
        let pull = parse_all(PULL);
        assert_eq!(
            pull[0],
            msg(
                "rec.a",
                3,
                Some("$JS.ACK.REC.C1.1.1.1.1796570646376562136.1"),
                None,
                &[("Nats-Msg-Id", "w-1"), ("Nats-Expected-Last-Sequence", "0")],
                b"{\"seq\":1}"
            )
        );
        assert_eq!(
            pull[1],
            msg(
                "_INBOX.pull.1",
                3,
                None,
                Some((408, "Request Timeout")),
                &[("Nats-Pending-Messages", "3"), ("Nats-Pending-Bytes", "0")],
                b""
            )
        );
        assert_eq!(
            parse_all(HEARTBEAT),
            [msg(
                "hb.deliver",
                4,
                None,
                Some((100, "Idle Heartbeat")),
                &[("Nats-Last-Consumer", "0"), ("Nats-Last-Stream", "2")],
                b""
            )]
        );
    }

    #[test]
    fn acks_with_two_spaces_before_the_size() {
        let ops = parse_all(ACKS);
        assert_eq!(ops.len(), 5);
        assert_eq!(
            ops[0],
            msg(
                "_INBOX.abc.12",
                1,
                None,
                None,
                &[],
                b"{\"stream\":\"REC\", \"seq\":1}"
            )
        );
        assert_eq!(ops[1], ServerOp::Ping);
        let ServerOp::Msg(m) = &ops[3] else {
            panic!("{:?}", ops[3])
        };
        assert_eq!(m.subject, "_INBOX.abc.15");
        assert_eq!(m.payload.len(), 101);
    }

    #[test]
    fn err_text_loses_its_quotes() {
        assert_eq!(
            parse_all(ERRORS),
            [
                ServerOp::Err("Authorization Violation".into()),
                ServerOp::Err("Maximum Payload Violation".into()),
            ]
        );
    }

    /// Every recorded transcript, one after the other.
    fn everything() -> Vec<u8> {
        [
            INFO_JS,
            VERBOSE,
            HMSGS,
            NO_RESPONDERS,
            ACKS,
            PULL,
            HEARTBEAT,
            INFO_CLUSTER,
            ERRORS,
        ]
        .concat()
    }

    #[test]
    fn split_at_every_byte_boundary_parses_the_same() {
        let bytes = everything();
        let whole = parse_all(&bytes);
        for split in 0..=bytes.len() {
            let (mut p, mut start, mut out) = (Parser::new(), 0, Vec::new());
            feed(&mut p, &bytes[..split], &mut start, &mut out).unwrap();
            feed(&mut p, &bytes, &mut start, &mut out).unwrap();
            assert_eq!(out, whole, "split at {split}");
            assert_eq!(start, bytes.len());
        }
    }

    #[test]
    fn one_byte_at_a_time_parses_the_same() {
        let bytes = everything();
        let (mut p, mut start, mut out) = (Parser::new(), 0, Vec::new());
        for end in 0..=bytes.len() {
            feed(&mut p, &bytes[..end], &mut start, &mut out).unwrap();
        }
        assert_eq!(out, parse_all(&bytes));
    }

    #[test]
    fn op_names_are_case_insensitive_and_lf_alone_ends_a_line() {
        assert_eq!(
            parse_all(b"msg foo 1 2\r\nhi\r\nHmSg foo 1 12 12\r\nNATS/1.0\r\n\r\n\r\nping\npong\r\n+ok\r\n-err 'x'\r\n"),
            [
                msg("foo", 1, None, None, &[], b"hi"),
                msg("foo", 1, None, None, &[], b""),
                ServerOp::Ping,
                ServerOp::Pong,
                ServerOp::Ok,
                ServerOp::Err("x".into()),
            ]
        );
    }

    fn first_error(bytes: &[u8], max_payload: usize) -> ProtoError {
        let (mut p, mut start, mut out) = (Parser::new(), 0, Vec::new());
        p.set_max_payload(max_payload);
        feed(&mut p, bytes, &mut start, &mut out).unwrap_err()
    }

    #[test]
    fn unknown_ops_are_errors() {
        assert_eq!(
            first_error(b"HELLO world\r\n", 1024),
            ProtoError::UnknownOp("HELLO world".into())
        );
        assert_eq!(
            first_error(b"\r\n", 1024),
            ProtoError::UnknownOp(String::new())
        );
        assert_eq!(
            first_error(b"PINGX\r\n", 1024),
            ProtoError::UnknownOp("PINGX".into())
        );
    }

    #[test]
    fn control_line_over_the_limit_is_an_error_even_before_its_newline() {
        let mut line = b"MSG ".to_vec();
        line.resize(MAX_CONTROL_LINE_BYTES, b'a');
        let mut p = Parser::new();
        assert_eq!(p.parse(&line), Ok(None));
        line.push(b'a');
        assert_eq!(
            p.parse(&line),
            Err(ProtoError::ControlLineTooLong {
                limit: MAX_CONTROL_LINE_BYTES
            })
        );
        // INFO may be longer: a cluster's lists every URL.
        let urls: Vec<String> = (0..300).map(|i| format!("10.0.0.{i}:4222")).collect();
        let big = format!(
            "INFO {{\"connect_urls\":{}}}\r\n",
            serde_json::to_string(&urls).unwrap()
        );
        assert!(big.len() > MAX_CONTROL_LINE_BYTES);
        assert_eq!(info(big.as_bytes()).connect_urls.len(), 300);
    }

    #[test]
    fn payload_over_max_payload_is_refused_at_the_control_line() {
        assert_eq!(
            first_error(b"MSG a 1 11\r\n", 10),
            ProtoError::PayloadTooLarge {
                bytes: 11,
                limit: 10
            }
        );
        assert_eq!(
            first_error(b"HMSG a 1 4 11\r\n", 10),
            ProtoError::PayloadTooLarge {
                bytes: 11,
                limit: 10
            }
        );
        assert_eq!(
            first_error(b"MSG a 1 99999999999999999999999999\r\n", 10),
            ProtoError::InvalidArgs {
                op: "MSG",
                line: "MSG a 1 99999999999999999999999999".into()
            }
        );
    }

    #[test]
    fn bad_msg_arguments() {
        for line in [
            &b"MSG a 1\r\n"[..],
            b"MSG a 1 b c 5\r\n",
            b"MSG a x 5\r\n",
            b"MSG a 1 -5\r\n",
            b"MSG a 1 +5\r\n",
            b"HMSG a 1 5\r\n",
            b"HMSG a 1 6 5\r\n",
            b"HMSG a 1 r 2 3 4\r\n",
        ] {
            assert!(
                matches!(first_error(line, 1024), ProtoError::InvalidArgs { .. }),
                "{:?}",
                line.escape_ascii().to_string()
            );
        }
        assert_eq!(
            first_error(b"MSG a 1 2\r\nhiXY", 1024),
            ProtoError::MissingPayloadEnd
        );
        assert!(matches!(
            first_error(b"INFO {nope\r\n", 1024),
            ProtoError::InvalidInfo(_)
        ));
    }

    #[test]
    fn connect_as_the_server_reads_it() {
        let mut out = Vec::new();
        connect(
            &mut out,
            &Connect {
                verbose: false,
                pedantic: false,
                tls_required: false,
                name: "userbus",
                lang: "rust",
                version: "0.1.0",
                protocol: 1,
                echo: true,
                headers: true,
                no_responders: true,
                user: Some("alice"),
                pass: Some("secret"),
                auth_token: None,
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONNECT {\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\"name\":\"userbus\",\
             \"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1,\"echo\":true,\"headers\":true,\
             \"no_responders\":true,\"user\":\"alice\",\"pass\":\"secret\"}\r\n"
        );
    }

    #[test]
    fn client_ops_exact_bytes() {
        let mut out = Vec::new();
        publish(&mut out, "foo", None, &[], b"hello").unwrap();
        publish(&mut out, "foo", Some("_INBOX.x.1"), &[], b"").unwrap();
        publish(
            &mut out,
            "rec.a",
            Some("_INBOX.x.2"),
            &[("Nats-Msg-Id", "w-1"), ("Nats-Expected-Last-Sequence", "0")],
            b"{\"seq\":1}",
        )
        .unwrap();
        subscribe(&mut out, "_INBOX.x.*", 1).unwrap();
        unsubscribe(&mut out, 7, None);
        unsubscribe(&mut out, 7, Some(3));
        ping(&mut out);
        pong(&mut out);
        assert_eq!(
            out.escape_ascii().to_string(),
            b"PUB foo 5\r\nhello\r\nPUB foo _INBOX.x.1 0\r\n\r\n\
              HPUB rec.a _INBOX.x.2 62 71\r\nNATS/1.0\r\nNats-Msg-Id: w-1\r\nNats-Expected-Last-Sequence: 0\r\n\r\n{\"seq\":1}\r\n\
              SUB _INBOX.x.* 1\r\nUNSUB 7\r\nUNSUB 7 3\r\nPING\r\nPONG\r\n"
                .escape_ascii()
                .to_string()
        );
    }

    #[test]
    fn encoders_refuse_what_breaks_framing() {
        let mut out = Vec::new();
        for bad in ["", "a b", "a\tb", "a\r\nPUB x"] {
            assert_eq!(
                publish(&mut out, bad, None, &[], b""),
                Err(EncodeError::InvalidSubject(bad.into()))
            );
            assert!(publish(&mut out, "ok", Some(bad), &[], b"").is_err());
            assert!(subscribe(&mut out, bad, 1).is_err());
        }
        assert!(matches!(
            publish(&mut out, "ok", None, &[("Bad Name", "v")], b""),
            Err(EncodeError::InvalidHeader(_))
        ));
        assert!(out.is_empty());
    }

    /// An `HPUB` as the server delivers it on subscription `sid`.
    fn as_delivered(hpub: &[u8], sid: u64) -> Vec<u8> {
        let text = hpub.strip_prefix(b"HPUB ").unwrap();
        let space = text.iter().position(|&b| b == b' ').unwrap();
        [
            b"HMSG ",
            &text[..space],
            format!(" {sid}").as_bytes(),
            &text[space..],
        ]
        .concat()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            split in 0usize..600,
        ) {
            let split = split.min(bytes.len());
            let (mut p, mut start, mut out) = (Parser::new(), 0, Vec::new());
            p.set_max_payload(256);
            if feed(&mut p, &bytes[..split], &mut start, &mut out).is_ok() {
                let _ = feed(&mut p, &bytes, &mut start, &mut out);
            }
        }

        #[test]
        fn mutated_transcripts_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = everything();
            for (at, b) in flips {
                let at = at % bytes.len();
                bytes[at] = b;
            }
            let (mut p, mut start, mut out) = (Parser::new(), 0, Vec::new());
            let _ = feed(&mut p, &bytes, &mut start, &mut out);
        }

        #[test]
        fn published_headers_come_back_as_sent(
            subject in "[a-z]{1,8}(\\.[a-z0-9]{1,8}){0,3}",
            sid in 1u64..1_000_000,
            reply in proptest::option::of("_INBOX\\.[A-Za-z0-9]{4}\\.[0-9]{1,4}"),
            names in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,12}", 0..5),
            value in "[ -~]{0,20}",
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            split in 0usize..512,
        ) {
            let value = value.trim();
            let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value)).collect();
            let mut out = Vec::new();
            publish(&mut out, &subject, reply.as_deref(), &pairs, &payload).unwrap();
            let bytes = if pairs.is_empty() {
                let text = out.strip_prefix(b"PUB ").unwrap();
                let space = text.iter().position(|&b| b == b' ').unwrap();
                [b"MSG ", &text[..space], format!(" {sid}").as_bytes(), &text[space..]].concat()
            } else {
                as_delivered(&out, sid)
            };
            let split = split.min(bytes.len());
            let (mut p, mut start, mut ops) = (Parser::new(), 0, Vec::new());
            feed(&mut p, &bytes[..split], &mut start, &mut ops).unwrap();
            feed(&mut p, &bytes, &mut start, &mut ops).unwrap();
            prop_assert_eq!(start, bytes.len());
            prop_assert_eq!(ops, vec![msg(&subject, sid, reply.as_deref(), None, &pairs, &payload)]);
        }
    }
}
