//! The JetStream API the relay uses, as request bodies and typed responses:
//! creating the stream (`$JS.API.STREAM.CREATE.<name>`) or checking an existing
//! one (`$JS.API.STREAM.INFO.<name>`), reading one stored message by sequence
//! (`$JS.API.STREAM.MSG.GET.<name>`), and reading publish acks.
//!
//! Every API answer is JSON; a refusal carries
//! `{"error":{"code":<http-like>,"err_code":<jetstream>,"description":..}}`, and the
//! `err_code` is what a caller tells refusals apart by ([`ERR_WRONG_LAST_SEQUENCE`]
//! and friends, with the name they have in nats-server's `server/errors.json`).
//! A request that reaches no responder comes back as a `503` status message instead
//! (no stream leader listens yet, or JetStream is off).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::headers::{self, Headers, Status};

/// Header naming a message for de-duplication within the stream's window.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Header refusing the publish unless the stream's last sequence is this one.
pub const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// Header refusing the publish unless the stream's last message has this id.
pub const EXPECTED_LAST_MSG_ID: &str = "Nats-Expected-Last-Msg-Id";

/// nats-server's `StreamDefaultDuplicatesWindow` (`server/stream.go`).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

// err_codes, with their names in nats-server 2.9.10's `server/errors.json`.
/// `JSStreamNotFoundErr` (404): "stream not found".
pub const ERR_STREAM_NOT_FOUND: u16 = 10059;
/// `JSStreamNameExistErr` (400): "stream name already in use with a different
/// configuration" (a CREATE whose config differs from the existing stream's).
pub const ERR_STREAM_NAME_IN_USE: u16 = 10058;
/// `JSStreamWrongLastSequenceErrF` (400): "wrong last sequence: {seq}", with the
/// stream's actual last sequence.
pub const ERR_WRONG_LAST_SEQUENCE: u16 = 10071;
/// `JSStreamWrongLastMsgIDErrF` (400): "wrong last msg ID: {id}", with the
/// stream's last message id as the server knows it (empty when it does not; see
/// the module's tests).
pub const ERR_WRONG_LAST_MSG_ID: u16 = 10070;
/// `JSStreamSequenceNotMatchErr` (503): "expected stream sequence does not match"
/// (clustered: a proposal raced another; retry).
pub const ERR_SEQUENCE_NOT_MATCH: u16 = 10063;
/// `JSNoMessageFoundErr` (404): "no message found" (MSG.GET of a missing seq).
pub const ERR_NO_MESSAGE_FOUND: u16 = 10037;
/// `JSClusterNotAvailErr` (503): "JetStream system temporarily unavailable".
pub const ERR_CLUSTER_NOT_AVAILABLE: u16 = 10008;
/// `JSInsufficientResourcesErr` (503): "insufficient resources".
pub const ERR_INSUFFICIENT_RESOURCES: u16 = 10023;
/// `JSStreamReplicasNotSupportedErr` (500): "replicas > 1 not supported in
/// non-clustered mode".
pub const ERR_REPLICAS_NOT_SUPPORTED: u16 = 10074;
/// `JSStreamMessageExceedsMaximumErr` (400): "message size exceeds maximum allowed".
pub const ERR_MESSAGE_TOO_LARGE: u16 = 10054;

/// The subject of a CREATE of `stream`.
pub fn stream_create_subject(stream: &str) -> String {
    format!("$JS.API.STREAM.CREATE.{stream}")
}

/// The subject of an INFO of `stream`.
pub fn stream_info_subject(stream: &str) -> String {
    format!("$JS.API.STREAM.INFO.{stream}")
}

/// The subject of the advisory a new leader of `stream` publishes once elected.
pub fn stream_leader_elected_subject(stream: &str) -> String {
    format!("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}")
}

/// The subject of a MSG.GET from `stream`.
pub fn stream_msg_get_subject(stream: &str) -> String {
    format!("$JS.API.STREAM.MSG.GET.{stream}")
}

/// True for a name JetStream accepts and a subject can carry: not empty, no `.`,
/// `*`, `>`, path separators, whitespace or control bytes.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && !name.bytes().any(|b| {
            matches!(b, b'.' | b'*' | b'>' | b'/' | b'\\')
                || b.is_ascii_whitespace()
                || b.is_ascii_control()
        })
}

/// A refusal from the JetStream API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ApiError {
    /// The HTTP-like status (400, 404, 503, ...).
    pub code: u16,
    /// The JetStream error code (`ERR_*`).
    pub err_code: u16,
    /// The server's text.
    pub description: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (err_code {}, code {})",
            self.description, self.err_code, self.code
        )
    }
}

/// Why a JetStream request did not give what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsError {
    /// The API refused.
    Api(ApiError),
    /// A `503` status: nobody listens (no stream leader yet, or no JetStream).
    NoResponders,
    /// Another status message in place of an answer.
    Status(Status),
    /// An answer that does not parse.
    InvalidResponse(String),
}

impl JsError {
    /// The JetStream error code of an API refusal.
    pub fn err_code(&self) -> Option<u16> {
        match self {
            JsError::Api(e) => Some(e.err_code),
            _ => None,
        }
    }
}

impl fmt::Display for JsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsError::Api(e) => e.fmt(f),
            JsError::NoResponders => f.write_str("no responders (503): no JetStream leader"),
            JsError::Status(s) => write!(f, "status {s}"),
            JsError::InvalidResponse(e) => write!(f, "unreadable JetStream answer: {e}"),
        }
    }
}

impl std::error::Error for JsError {}

/// The payload of an answer, or the error its status or `error` member says.
fn answer<'de, T: Deserialize<'de>>(
    status: Option<&Status>,
    payload: &'de [u8],
) -> Result<T, JsError> {
    match status {
        None => {}
        Some(s) if s.code == Status::NO_RESPONDERS => return Err(JsError::NoResponders),
        Some(s) => return Err(JsError::Status(s.clone())),
    }
    #[derive(Deserialize)]
    struct Refusal {
        error: Option<ApiError>,
    }
    let bad = |e: serde_json::Error| JsError::InvalidResponse(e.to_string());
    if let Some(e) = serde_json::from_slice::<Refusal>(payload)
        .map_err(bad)?
        .error
    {
        return Err(JsError::Api(e));
    }
    serde_json::from_slice(payload).map_err(bad)
}

/// The subject of a CREATE of an ephemeral consumer on `stream`.
pub fn consumer_create_subject(stream: &str) -> String {
    format!("$JS.API.CONSUMER.CREATE.{stream}")
}

/// The subject of a DELETE of consumer `name` on `stream`.
pub fn consumer_delete_subject(stream: &str, name: &str) -> String {
    format!("$JS.API.CONSUMER.DELETE.{stream}.{name}")
}

/// The body of a CREATE of an ordered push consumer on `stream`, as nats.go
/// makes one: ephemeral, no acks, in memory, one replica, delivering to
/// `deliver_subject` from stream seq `start`, with flow control and idle
/// heartbeats every `heartbeat`.
pub fn ordered_consumer_request(
    stream: &str,
    deliver_subject: &str,
    start: u64,
    heartbeat: Duration,
) -> Vec<u8> {
    let config = serde_json::json!({
        "stream_name": stream,
        "config": {
            "deliver_subject": deliver_subject,
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": start.max(1),
            "ack_policy": "none",
            "max_deliver": 1,
            "replay_policy": "instant",
            "flow_control": true,
            "idle_heartbeat": u64::try_from(heartbeat.as_nanos()).unwrap_or(u64::MAX),
            "mem_storage": true,
            "num_replicas": 1,
        }
    });
    config.to_string().into_bytes()
}

/// Reads a consumer CREATE answer: the consumer's name.
pub fn parse_consumer_create(status: Option<&Status>, payload: &[u8]) -> Result<String, JsError> {
    #[derive(Deserialize)]
    struct Created {
        name: String,
    }
    answer::<Created>(status, payload).map(|c| c.name)
}

/// Where a message a push consumer delivered sits, from its `$JS.ACK` reply
/// subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckInfo {
    /// The stream sequence.
    pub stream_seq: u64,
    /// The consumer sequence (1, 2, ... per delivery; a jump is a lost message).
    pub consumer_seq: u64,
    /// When the stream stored it, in Unix nanoseconds.
    pub stored_ns: i64,
    /// Messages the consumer has still to deliver after it.
    pub pending: u64,
}

/// Reads a `$JS.ACK` reply subject: `$JS.ACK.<stream>.<consumer>.<delivered>.
/// <stream seq>.<consumer seq>.<time>.<pending>` (nats-server 2.9), or the form
/// with a domain and account hash after `ACK` and a random token at the end.
///
/// It runs for every message a follower applies: no allocation, one pass.
pub fn parse_ack_subject(subject: &str) -> Option<AckInfo> {
    // The numbers end at token 10 at most; `n` counts every token.
    let mut tokens: [&[u8]; 11] = [&[]; 11];
    let mut n = 0;
    for token in subject.as_bytes().split(|&b| b == b'.') {
        if let Some(slot) = tokens.get_mut(n) {
            *slot = token;
        }
        n += 1;
    }
    if n < 9 || tokens[0] != b"$JS" || tokens[1] != b"ACK" {
        return None;
    }
    let at = if n == 9 { 4 } else { 6 };
    if at + 4 >= n {
        return None;
    }
    Some(AckInfo {
        stream_seq: ack_number(tokens[at + 1])?,
        consumer_seq: ack_number(tokens[at + 2])?,
        stored_ns: i64::try_from(ack_number(tokens[at + 3])?).ok()?,
        pending: ack_number(tokens[at + 4])?,
    })
}

/// A token of decimal digits (nothing else, not empty), without overflow.
fn ack_number(token: &[u8]) -> Option<u64> {
    if token.is_empty() {
        return None;
    }
    token.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A stream's configuration as JetStream 2.9 spells it (durations in
/// nanoseconds, `-1` for no limit). Fields this module does not name are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    /// The stream's name.
    pub name: String,
    /// The subjects it stores.
    pub subjects: Vec<String>,
    /// `limits`, `interest` or `workqueue`.
    pub retention: String,
    /// Most consumers (`-1`: no limit).
    pub max_consumers: i64,
    /// Most messages kept (`-1`: no limit).
    pub max_msgs: i64,
    /// Most bytes kept (`-1`: no limit).
    pub max_bytes: i64,
    /// Oldest message kept, in ns (`0`: no limit).
    pub max_age: i64,
    /// Most messages kept per subject (`-1`: no limit).
    pub max_msgs_per_subject: i64,
    /// Largest message accepted (`-1`: no limit).
    pub max_msg_size: i64,
    /// What a limit discards: `old` or `new`.
    pub discard: String,
    /// `file` or `memory`.
    pub storage: String,
    /// Copies kept.
    pub num_replicas: u32,
    /// True when publishes get no ack.
    pub no_ack: bool,
    /// How long a `Nats-Msg-Id` is remembered, in ns.
    pub duplicate_window: u64,
    /// Set when the stream mirrors another (it then refuses publishes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<serde_json::Value>,
    /// True once sealed (no more writes).
    pub sealed: bool,
    /// True when messages cannot be deleted.
    pub deny_delete: bool,
    /// True when the stream cannot be purged.
    pub deny_purge: bool,
}

/// What the relay asks of its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream's name.
    pub name: String,
    /// Its subjects (`<prefix>.>`).
    pub subjects: Vec<String>,
    /// Copies to keep.
    pub replicas: u32,
    /// The de-duplication window.
    pub duplicate_window: Duration,
}

impl StreamSpec {
    /// A file-backed stream without age, size or count limits.
    pub fn new(name: &str, subjects: &[&str], replicas: u32) -> StreamSpec {
        StreamSpec {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            replicas,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
        }
    }

    /// The configuration a CREATE sends: every field nats-server 2.9.10 reads
    /// without a default of its own spelled out.
    pub fn config(&self) -> StreamConfig {
        StreamConfig {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            retention: "limits".into(),
            max_consumers: -1,
            max_msgs: -1,
            max_bytes: -1,
            max_age: 0,
            max_msgs_per_subject: -1,
            max_msg_size: -1,
            discard: "old".into(),
            storage: "file".into(),
            num_replicas: self.replicas,
            no_ack: false,
            duplicate_window: u64::try_from(self.duplicate_window.as_nanos()).unwrap_or(u64::MAX),
            mirror: None,
            sealed: false,
            deny_delete: false,
            deny_purge: false,
        }
    }

    /// The body of `$JS.API.STREAM.CREATE.<name>`.
    pub fn create_request(&self) -> Vec<u8> {
        serde_json::to_vec(&self.config())
            .expect("invariant: a stream config holds only strings and numbers")
    }

    /// Checks an existing stream against this spec: same subjects, file storage,
    /// at least the replicas asked, limits retention, acks on, not sealed, not a
    /// mirror. Limits an operator set (age, size) are the operator's business.
    pub fn check(&self, existing: &StreamConfig) -> Result<(), Mismatch> {
        let mut problems = Vec::new();
        let mut have = existing.subjects.clone();
        let mut want = self.subjects.clone();
        have.sort();
        want.sort();
        if have != want {
            problems.push(format!("subjects {have:?} (needs {want:?})"));
        }
        if existing.storage != "file" {
            problems.push(format!("storage {} (needs file)", existing.storage));
        }
        if existing.num_replicas < self.replicas {
            problems.push(format!(
                "replicas {} (needs {})",
                existing.num_replicas, self.replicas
            ));
        }
        if existing.retention != "limits" {
            problems.push(format!("retention {} (needs limits)", existing.retention));
        }
        if existing.no_ack {
            problems.push("no_ack set (needs acks)".into());
        }
        if existing.sealed {
            problems.push("sealed".into());
        }
        if existing.mirror.is_some() {
            problems.push("a mirror (refuses publishes)".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Mismatch {
                stream: existing.name.clone(),
                problems,
            })
        }
    }
}

/// An existing stream that does not fit what is asked; displays as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The stream's name.
    pub stream: String,
    /// Each difference, as text.
    pub problems: Vec<String>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "JetStream stream {} exists with an incompatible configuration: {}",
            self.stream,
            self.problems.join("; ")
        )
    }
}

impl std::error::Error for Mismatch {}

/// A stream's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Sequence of the oldest message (0 when empty).
    pub first_seq: u64,
    /// Sequence of the newest message (0 when none was ever stored).
    pub last_seq: u64,
    /// Time of the newest message (RFC 3339).
    pub last_ts: String,
}

/// One peer of a clustered stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PeerInfo {
    /// The server's name.
    pub name: String,
    /// True when it is caught up.
    pub current: bool,
}

/// Where a clustered stream lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ClusterInfo {
    /// The cluster's name.
    pub name: Option<String>,
    /// The stream leader's server name (none during an election).
    pub leader: Option<String>,
    /// The other peers.
    pub replicas: Vec<PeerInfo>,
}

/// The answer to STREAM.INFO and STREAM.CREATE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct StreamInfo {
    /// The configuration in force.
    pub config: StreamConfig,
    /// Its counters.
    pub state: StreamState,
    /// Its cluster placement, when clustered.
    pub cluster: Option<ClusterInfo>,
}

/// Reads a STREAM.INFO or STREAM.CREATE answer.
pub fn parse_stream_info(status: Option<&Status>, payload: &[u8]) -> Result<StreamInfo, JsError> {
    answer(status, payload)
}

/// The body of `$JS.API.STREAM.MSG.GET.<name>` for the message at `seq`.
pub fn msg_get_request(seq: u64) -> Vec<u8> {
    format!("{{\"seq\":{seq}}}").into_bytes()
}

/// A message read back from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub seq: u64,
    /// Its headers as published.
    pub headers: Headers,
    /// Its payload.
    pub data: Vec<u8>,
    /// When it was stored (RFC 3339).
    pub time: String,
}

impl StoredMsg {
    /// Its `Nats-Msg-Id`.
    pub fn msg_id(&self) -> Option<&str> {
        self.headers.get(MSG_ID)
    }
}

/// Reads a STREAM.MSG.GET answer (headers and data come base64-encoded).
pub fn parse_msg_get(status: Option<&Status>, payload: &[u8]) -> Result<StoredMsg, JsError> {
    #[derive(Deserialize)]
    struct Raw {
        subject: String,
        seq: u64,
        #[serde(default)]
        hdrs: String,
        #[serde(default)]
        data: String,
        #[serde(default)]
        time: String,
    }
    #[derive(Deserialize)]
    struct Answer {
        message: Raw,
    }
    let m = answer::<Answer>(status, payload)?.message;
    let bad = |what: &str| JsError::InvalidResponse(format!("{what} is not base64"));
    let block = base64_decode(&m.hdrs).ok_or_else(|| bad("hdrs"))?;
    let data = base64_decode(&m.data).ok_or_else(|| bad("data"))?;
    Ok(StoredMsg {
        subject: m.subject,
        seq: m.seq,
        headers: headers::decode(&block).1,
        data,
        time: m.time,
    })
}

/// A publish the stream stored (or had stored already).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PubAck {
    /// The stream that stored it.
    pub stream: String,
    /// Its stream sequence (for a duplicate: the sequence of the first copy).
    pub seq: u64,
    /// True when its `Nats-Msg-Id` was seen within the duplicate window: nothing
    /// new was stored.
    pub duplicate: bool,
}

/// Reads the answer to a publish into a stream: the ack, or the refusal. A
/// refusal names the stream with seq 0 (`{"error":..,"stream":"S","seq":0}`).
pub fn parse_pub_ack(status: Option<&Status>, payload: &[u8]) -> Result<PubAck, JsError> {
    answer(status, payload)
}

/// Decodes standard base64 (Go's `[]byte` JSON encoding), padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover sextet cannot end valid base64.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ordered_consumer_asks_what_nats_go_asks() {
        let body: serde_json::Value = serde_json::from_slice(&ordered_consumer_request(
            "USERBUS",
            "_FOLLOW.x.1",
            42,
            Duration::from_secs(2),
        ))
        .expect("JSON");
        let c = &body["config"];
        assert_eq!(body["stream_name"], "USERBUS");
        assert_eq!(c["deliver_subject"], "_FOLLOW.x.1");
        assert_eq!(
            (c["deliver_policy"].as_str(), c["opt_start_seq"].as_u64()),
            (Some("by_start_sequence"), Some(42))
        );
        assert_eq!(c["ack_policy"], "none");
        assert_eq!(c["flow_control"], true);
        assert_eq!(c["idle_heartbeat"], 2_000_000_000u64);
        assert_eq!(c["mem_storage"], true);
    }

    #[test]
    fn ack_subjects_of_both_forms_give_the_sequences() {
        let old = "$JS.ACK.USERBUS.abc.1.42.7.1700000000000000000.3";
        assert_eq!(
            parse_ack_subject(old),
            Some(AckInfo {
                stream_seq: 42,
                consumer_seq: 7,
                stored_ns: 1_700_000_000_000_000_000,
                pending: 3
            })
        );
        let new = "$JS.ACK.hub.ACC.USERBUS.abc.1.42.7.1700000000000000000.3.xyz";
        assert_eq!(parse_ack_subject(new).map(|a| a.stream_seq), Some(42));
        assert_eq!(parse_ack_subject("_INBOX.x.1"), None);
        assert_eq!(parse_ack_subject("$JS.ACK.S.c.1.x.7.1.3"), None);
        // An empty or signed number, one past u64, a token short of the new form.
        assert_eq!(parse_ack_subject("$JS.ACK.S.c.1..7.1.3"), None);
        assert_eq!(parse_ack_subject("$JS.ACK.S.c.1.+42.7.1.3"), None);
        assert_eq!(
            parse_ack_subject("$JS.ACK.S.c.1.18446744073709551616.7.1.3"),
            None
        );
        assert_eq!(parse_ack_subject("$JS.ACK.hub.ACC.S.c.1.42.7.1"), None);
        let long = "$JS.ACK.hub.ACC.S.c.1.18446744073709551615.7.1.3.xyz.more";
        assert_eq!(
            parse_ack_subject(long).map(|a| a.stream_seq),
            Some(u64::MAX)
        );
    }

    use super::*;

    // Payloads nats-server 2.9.10 answered on a raw socket, pasted unchanged.

    /// STREAM.CREATE of `REC` (the body `StreamSpec::create_request` sends); the
    /// same bytes came back for a second identical CREATE.
    const CREATED: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{"name":"REC","subjects":["rec.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T15:24:03.973928741Z","state":{"messages":0,"bytes":0,"first_seq":0,"first_ts":"0001-01-01T00:00:00Z","last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0},"did_create":true}"#;
    /// STREAM.CREATE of `REC` again with other subjects.
    const CREATE_DIFFERENT: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_create_response","error":{"code":400,"err_code":10058,"description":"stream name already in use with a different configuration"}}"#;
    /// STREAM.INFO of a missing stream.
    const INFO_MISSING: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0}"#;
    /// STREAM.INFO of an R3 stream on a 3-node cluster, one message stored.
    const INFO_R3: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","total":0,"offset":0,"limit":0,"config":{"name":"R3","subjects":["r3.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":3,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T15:35:05.864093945Z","state":{"messages":1,"bytes":101,"first_seq":1,"first_ts":"2026-12-06T15:35:07.565363916Z","last_seq":1,"last_ts":"2026-12-06T15:35:07.565363916Z","num_subjects":1,"consumer_count":0},"cluster":{"name":"C","leader":"n3","replicas":[{"name":"n1","current":true,"active":500245379,"peer":"fjFyEjc1"},{"name":"n2","current":true,"active":500239855,"peer":"44jzkV9D"}]}}"#;
    /// STREAM.MSG.GET `{"seq":2}`: published with Nats-Msg-Id w-2, expected last
    /// sequence 1 and expected last msg id w-1.
    const MSG_2: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"rec.a","seq":2,"hdrs":"TkFUUy8xLjANCk5hdHMtTXNnLUlkOiB3LTINCk5hdHMtRXhwZWN0ZWQtTGFzdC1TZXF1ZW5jZTogMQ0KTmF0cy1FeHBlY3RlZC1MYXN0LU1zZy1JZDogdy0xDQoNCg==","data":"eyJzZXEiOjJ9","time":"2026-12-06T15:24:07.177576706Z"}}"#;
    /// STREAM.MSG.GET `{"seq":9}` past the end.
    const MSG_MISSING: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}"#;
    /// Publish acks: stored, duplicate, wrong expected sequence, wrong expected
    /// msg id, and (after a restart with the last message older than the
    /// duplicate window) wrong expected msg id with no id known.
    const ACK: &[u8] = br#"{"stream":"REC", "seq":1}"#;
    const ACK_DUPLICATE: &[u8] = br#"{"stream":"REC", "seq":2,"duplicate": true}"#;
    const ACK_WRONG_SEQ: &[u8] = br#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 2"},"stream":"REC","seq":0}"#;
    const ACK_WRONG_ID: &[u8] = br#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: w-2"},"stream":"REC","seq":0}"#;
    const ACK_WRONG_ID_FORGOTTEN: &[u8] = br#"{"error":{"code":400,"err_code":10070,"description":"wrong last msg ID: "},"stream":"W","seq":0}"#;

    fn spec() -> StreamSpec {
        StreamSpec::new("REC", &["rec.>"], 1)
    }

    #[test]
    fn create_request_is_the_config_the_server_echoes() {
        let body = spec().create_request();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"name":"REC","subjects":["rec.>"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"no_ack":false,"duplicate_window":120000000000,"sealed":false,"deny_delete":false,"deny_purge":false}"#
        );
        let info = parse_stream_info(None, CREATED).unwrap();
        assert_eq!(info.config, spec().config());
        assert_eq!(spec().check(&info.config), Ok(()));
        assert_eq!(
            info.state,
            StreamState {
                last_ts: "0001-01-01T00:00:00Z".into(),
                ..StreamState::default()
            }
        );
    }

    #[test]
    fn refusals_carry_their_err_code() {
        let e = parse_stream_info(None, CREATE_DIFFERENT).unwrap_err();
        assert_eq!(e.err_code(), Some(ERR_STREAM_NAME_IN_USE));
        assert_eq!(
            e.to_string(),
            "stream name already in use with a different configuration (err_code 10058, code 400)"
        );
        let e = parse_stream_info(None, INFO_MISSING).unwrap_err();
        assert_eq!(
            e,
            JsError::Api(ApiError {
                code: 404,
                err_code: ERR_STREAM_NOT_FOUND,
                description: "stream not found".into()
            })
        );
        assert_eq!(
            parse_msg_get(None, MSG_MISSING).unwrap_err().err_code(),
            Some(ERR_NO_MESSAGE_FOUND)
        );
    }

    #[test]
    fn clustered_stream_info() {
        let info = parse_stream_info(None, INFO_R3).unwrap();
        assert_eq!(info.config.num_replicas, 3);
        assert_eq!(info.state.messages, 1);
        assert_eq!((info.state.first_seq, info.state.last_seq), (1, 1));
        let cluster = info.cluster.unwrap();
        assert_eq!(cluster.leader.as_deref(), Some("n3"));
        assert_eq!(cluster.replicas.len(), 2);
        assert!(cluster.replicas.iter().all(|p| p.current));
        assert_eq!(
            StreamSpec::new("R3", &["r3.>"], 3).check(&info.config),
            Ok(())
        );
    }

    #[test]
    fn status_answers_are_errors_of_their_own() {
        let no_one = Status {
            code: Status::NO_RESPONDERS,
            description: String::new(),
        };
        assert_eq!(
            parse_pub_ack(Some(&no_one), b""),
            Err(JsError::NoResponders)
        );
        let timeout = Status {
            code: Status::REQUEST_TIMEOUT,
            description: "Request Timeout".into(),
        };
        assert_eq!(
            parse_stream_info(Some(&timeout), b""),
            Err(JsError::Status(timeout))
        );
        assert!(matches!(
            parse_pub_ack(None, b"not json"),
            Err(JsError::InvalidResponse(_))
        ));
    }

    #[test]
    fn mismatch_is_one_line_naming_every_difference() {
        let mut have = spec().config();
        assert_eq!(spec().check(&have), Ok(()));
        have.num_replicas = 3;
        assert_eq!(
            spec().check(&have),
            Ok(()),
            "more replicas than asked is fine"
        );
        have.subjects = vec!["other.>".into(), "rec.>".into()];
        have.storage = "memory".into();
        have.retention = "workqueue".into();
        let e = StreamSpec::new("REC", &["rec.>"], 5)
            .check(&have)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "JetStream stream REC exists with an incompatible configuration: \
             subjects [\"other.>\", \"rec.>\"] (needs [\"rec.>\"]); storage memory (needs file); \
             replicas 3 (needs 5); retention workqueue (needs limits)"
        );
        let mut sealed = spec().config();
        sealed.sealed = true;
        sealed.no_ack = true;
        sealed.mirror = Some(serde_json::json!({"name": "ELSEWHERE"}));
        assert_eq!(spec().check(&sealed).unwrap_err().problems.len(), 3);
    }

    #[test]
    fn msg_get_reads_the_stored_headers() {
        let m = parse_msg_get(None, MSG_2).unwrap();
        assert_eq!(m.subject, "rec.a");
        assert_eq!(m.seq, 2);
        assert_eq!(m.msg_id(), Some("w-2"));
        assert_eq!(m.headers.get(EXPECTED_LAST_SEQUENCE), Some("1"));
        assert_eq!(m.headers.get(EXPECTED_LAST_MSG_ID), Some("w-1"));
        assert_eq!(m.data, b"{\"seq\":2}");
        assert_eq!(m.time, "2026-12-06T15:24:07.177576706Z");
        assert_eq!(msg_get_request(2), b"{\"seq\":2}");
        assert_eq!(stream_msg_get_subject("REC"), "$JS.API.STREAM.MSG.GET.REC");
    }

    #[test]
    fn pub_acks_and_their_refusals() {
        assert_eq!(
            parse_pub_ack(None, ACK),
            Ok(PubAck {
                stream: "REC".into(),
                seq: 1,
                duplicate: false
            })
        );
        assert_eq!(
            parse_pub_ack(None, ACK_DUPLICATE),
            Ok(PubAck {
                stream: "REC".into(),
                seq: 2,
                duplicate: true
            })
        );
        let e = parse_pub_ack(None, ACK_WRONG_SEQ).unwrap_err();
        assert_eq!(e.err_code(), Some(ERR_WRONG_LAST_SEQUENCE));
        assert_eq!(
            e.to_string(),
            "wrong last sequence: 2 (err_code 10071, code 400)"
        );
        let e = parse_pub_ack(None, ACK_WRONG_ID).unwrap_err();
        assert_eq!(e.err_code(), Some(ERR_WRONG_LAST_MSG_ID));
        let JsError::Api(e) = parse_pub_ack(None, ACK_WRONG_ID_FORGOTTEN).unwrap_err() else {
            panic!("not an API error");
        };
        assert_eq!(e.description, "wrong last msg ID: ");
    }

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("eQ==").unwrap(), b"y");
        assert_eq!(base64_decode("eQ").unwrap(), b"y");
        assert_eq!(base64_decode("eXo=").unwrap(), b"yz");
        assert_eq!(base64_decode("eyJzZXEiOjJ9").unwrap(), b"{\"seq\":2}");
        assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert_eq!(base64_decode("e"), None);
        assert_eq!(base64_decode("e!=="), None);
    }

    #[test]
    fn err_codes_are_those_of_nats_server_2_9_10() {
        // (err_code, code, description) from server/errors.json at v2.9.10.
        let table = [
            (ERR_STREAM_NOT_FOUND, 404, "stream not found"),
            (
                ERR_STREAM_NAME_IN_USE,
                400,
                "stream name already in use with a different configuration",
            ),
            (ERR_WRONG_LAST_SEQUENCE, 400, "wrong last sequence: {seq}"),
            (ERR_WRONG_LAST_MSG_ID, 400, "wrong last msg ID: {id}"),
            (
                ERR_SEQUENCE_NOT_MATCH,
                503,
                "expected stream sequence does not match",
            ),
            (ERR_NO_MESSAGE_FOUND, 404, "no message found"),
            (
                ERR_CLUSTER_NOT_AVAILABLE,
                503,
                "JetStream system temporarily unavailable",
            ),
            (ERR_INSUFFICIENT_RESOURCES, 503, "insufficient resources"),
            (
                ERR_REPLICAS_NOT_SUPPORTED,
                500,
                "replicas > 1 not supported in non-clustered mode",
            ),
            (
                ERR_MESSAGE_TOO_LARGE,
                400,
                "message size exceeds maximum allowed",
            ),
        ];
        let codes: std::collections::HashSet<u16> = table.iter().map(|t| t.0).collect();
        assert_eq!(codes.len(), table.len());
        assert!(table.iter().all(|t| (10_000..11_000).contains(&t.0)));
    }

    #[test]
    fn stream_names() {
        assert!(valid_stream_name("USERBUS"));
        assert!(valid_stream_name("user-bus_2"));
        for bad in ["", "a.b", "a*", "a>", "a b", "a/b"] {
            assert!(!valid_stream_name(bad), "{bad:?}");
        }
        assert_eq!(stream_create_subject("S"), "$JS.API.STREAM.CREATE.S");
        assert_eq!(stream_info_subject("S"), "$JS.API.STREAM.INFO.S");
    }
}
