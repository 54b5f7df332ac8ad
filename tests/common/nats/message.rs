//! What the test client reads: header blocks as nats-server sends them, messages
//! as a JetStream stream stores them, and the base64 the JetStream API wraps them in.

use serde_json::Value;

/// A message's header block: the status line's code and description (a
/// no-responders reply is `503`), then the fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// The status after `NATS/1.0`, when the block has one.
    pub status: Option<u16>,
    /// The words after the status.
    pub description: String,
    /// `Name: value` fields in the order they came.
    pub fields: Vec<(String, String)>,
}

impl Headers {
    /// The first value of the field `name` (compared without case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parses a header block as nats-server sends it (`NATS/1.0[ code[ text]]\r\n`,
    /// fields, an empty line).
    pub fn parse(block: &[u8]) -> Headers {
        let text = String::from_utf8_lossy(block);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let rest = first
            .strip_prefix("NATS/1.0")
            .unwrap_or_else(|| panic!("header block without NATS/1.0: {text:?}"))
            .trim();
        let (code, description) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = (!code.is_empty()).then(|| {
            code.parse()
                .unwrap_or_else(|_| panic!("bad status in header block: {text:?}"))
        });
        let fields = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("header line without ':' in {text:?}"));
                (k.trim().to_string(), v.trim().to_string())
            })
            .collect();
        Headers {
            status,
            description: description.trim().to_string(),
            fields,
        }
    }

    /// The block HPUB sends for `fields`.
    pub(super) fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
        let mut out = b"NATS/1.0\r\n".to_vec();
        for (k, v) in fields {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// A message as a JetStream stream stores it (`$JS.API.STREAM.MSG.GET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    /// The subject it was published on.
    pub subject: String,
    /// Its stream sequence.
    pub seq: u64,
    /// Its headers (empty when it was published without).
    pub headers: Headers,
    /// Its payload.
    pub data: Vec<u8>,
}

impl StoredMsg {
    /// The message in a `$JS.API.STREAM.MSG.GET` reply (`message` with base64
    /// `hdrs` and `data`, both left out when empty); `None` when it has none.
    pub fn from_api(reply: &Value) -> Option<StoredMsg> {
        let m = reply.get("message")?;
        let field = |k: &str| base64_decode(m[k].as_str().unwrap_or_default());
        let hdrs = field("hdrs");
        Some(StoredMsg {
            subject: m["subject"].as_str()?.to_string(),
            seq: m["seq"].as_u64()?,
            headers: if hdrs.is_empty() {
                Headers::default()
            } else {
                Headers::parse(&hdrs)
            },
            data: field("data"),
        })
    }

    /// The payload as text (lossy), for assertions and messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The payload parsed as JSON; panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.data)
            .unwrap_or_else(|e| panic!("message {} is not JSON ({e}): {}", self.seq, self.text()))
    }

    /// The `Nats-Msg-Id` header.
    pub fn msg_id(&self) -> Option<&str> {
        self.headers.get("Nats-Msg-Id")
    }
}

/// Decodes standard base64 (RFC 4648, `=` padding), as JetStream's API encodes
/// `data` and `hdrs`; panics on anything else.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {text:?}"),
        }
    };
    let digits = text.trim_end_matches('=').as_bytes();
    assert!(
        text.len().is_multiple_of(4) && text.len() - digits.len() <= 2,
        "bad base64 length or padding: {text:?}"
    );
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        // 4 digits carry 3 bytes, 3 carry 2, 2 carry 1.
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}
