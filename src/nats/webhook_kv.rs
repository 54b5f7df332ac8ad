//! Webhook endpoints in a JetStream key-value bucket, so that a promoted
//! follower carries on the old primary's deliveries (at-least-once).
//!
//! # The bucket
//! Named `<stream>_webhooks` (`USERBUS_webhooks`), made as the durable
//! handlers' bucket is ([`offsets::bucket_create_request`]: one value per key,
//! file storage, `--nats-replicas` copies), so `nats kv get` reads it. One key
//! per endpoint: its id in decimal. The value is a [`CarriedWebhook`] as JSON:
//! url, secret, event kinds, why it is disabled (`null` while enabled), its
//! position (the last seq delivered, dead-lettered or filtered out) and the
//! dead letters `WEBHOOK REPLAY` requeued. A deleted endpoint's key holds a
//! delete marker (`KV-Operation: DEL`), as `nats kv del` leaves. The secret is
//! in the value: whoever may read `$KV.<bucket>.>` (or the stream
//! `KV_<bucket>` through the JetStream API) reads it.
//!
//! # Writing, on the primary
//! [`offsets::OffsetWriter::for_bucket`] through the relay's connection: a
//! configuration change (ADD, DEL, ENABLE, REPLAY, a disable) at once, a
//! position that moved once per [`offsets::PUT_INTERVAL`] at most, everything
//! at a clean shutdown ([`value`] builds the value).
//!
//! # Reading, at a promotion: [`WebhookReader`]
//! `STREAM.INFO` of the bucket first (a clustered JetStream does not answer a
//! MSG.GET from a missing stream), then the bucket is walked with
//! `$JS.API.STREAM.MSG.GET.KV_<bucket>` and `{"seq": n, "next_by_subj":
//! "$KV.<bucket>.>"}` (the first message at or after `n`), from seq 1 until
//! "no message found": one request per key, as the bucket keeps one message a
//! key. A missing bucket reads as nothing to take in; another failure is asked
//! again shortly, within the promotion's own deadline.

use std::collections::BTreeMap;
use std::time::Instant;

use super::jetstream::{self, parse_msg_get};
use super::offsets::{self, KV_OPERATION, READ_RETRY, Read, bucket_stream, drive};
use super::side::{SideLink, SideReply};
use crate::store::{CarriedWebhook, WebhookAdoption};

/// The most requeued dead letters an endpoint's value carries (the value stays
/// well below JetStream's default 1 MB message limit); the others stay dead
/// letters on the node that requeued them.
pub const MAX_CARRIED_REQUEUED: usize = 10_000;

/// The bucket of `stream`'s webhook endpoints.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_webhooks")
}

/// The key of endpoint `id`: its id in decimal, written in `buf` (keys are
/// looked at every tick, so nothing is allocated).
pub fn key(id: i64, buf: &mut itoa::Buffer) -> &str {
    buf.format(id)
}

/// The value of an endpoint's key: `carried` as JSON, its requeued dead
/// letters cut at [`MAX_CARRIED_REQUEUED`].
pub fn value(carried: &CarriedWebhook) -> Vec<u8> {
    let json = if carried.requeued.len() > MAX_CARRIED_REQUEUED {
        let mut cut = carried.clone();
        cut.requeued.truncate(MAX_CARRIED_REQUEUED);
        serde_json::to_vec(&cut)
    } else {
        serde_json::to_vec(carried)
    };
    json.expect("invariant: strings and integers serialize")
}

/// The body of a MSG.GET of the first message at or after `seq` on `subjects`.
pub fn next_by_subject_request(seq: u64, subjects: &str) -> Vec<u8> {
    serde_json::json!({ "seq": seq, "next_by_subj": subjects })
        .to_string()
        .into_bytes()
}

/// What one key of the bucket says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    /// The endpoint, as the primary last put it.
    Endpoint(CarriedWebhook),
    /// Deleted (a delete or purge marker).
    Deleted,
    /// A value that is no endpoint: the local endpoint stays as it is.
    Unreadable,
}

/// A promotion's reader of the webhook endpoints from the bucket: whether the
/// bucket exists, then every key, walking the bucket's messages in order.
#[derive(Debug)]
pub struct WebhookReader {
    stream: String,
    /// `$KV.<bucket>.`, the keys' prefix.
    prefix: String,
    /// `$KV.<bucket>.>`.
    subjects: String,
    /// The bucket's STREAM.INFO: `Done(Some(_))` found, `Done(None)` missing.
    bucket: Read,
    /// The walk's MSG.GET: `Done(_)` once past the last message.
    walk: Read,
    /// The seq the walk asks from next.
    next_seq: u64,
    keys: BTreeMap<i64, Key>,
    /// Whether the link was connected at the last step (reads are due only then).
    connected: bool,
}

impl WebhookReader {
    /// A reader of `stream`'s bucket of webhook endpoints.
    pub fn new(stream: &str, now: Instant) -> WebhookReader {
        let bucket = bucket_name(stream);
        WebhookReader {
            stream: bucket_stream(&bucket),
            prefix: format!("$KV.{bucket}."),
            subjects: format!("$KV.{bucket}.>"),
            bucket: Read::Due { at: now },
            walk: Read::Due { at: now },
            next_seq: 1,
            keys: BTreeMap::new(),
            connected: false,
        }
    }

    /// Sends the requests that are due, and asks again for unanswered ones.
    pub fn step(&mut self, link: &mut impl SideLink, now: Instant) {
        self.connected = link.side_connected();
        if !offsets::drive_bucket(&mut self.bucket, link, &self.stream, now) {
            return;
        }
        let api = jetstream::stream_msg_get_subject(&self.stream);
        let body = next_by_subject_request(self.next_seq, &self.subjects);
        drive(&mut self.walk, link, &api, &body, &self.subjects, now);
    }

    /// Takes in a reply to one of its requests (others are ignored).
    pub fn answer(&mut self, reply: &SideReply, now: Instant) {
        let retry = Read::Due {
            at: now + READ_RETRY,
        };
        if offsets::answer_bucket(&mut self.bucket, &self.stream, reply, now) {
            return;
        }
        if !matches!(self.walk, Read::Waiting { request, .. } if request == reply.id) {
            return;
        }
        self.walk = match parse_msg_get(reply.status.as_ref(), &reply.payload) {
            Ok(msg) => {
                self.take(
                    &msg.subject,
                    msg.headers.get(KV_OPERATION).is_some(),
                    &msg.data,
                );
                self.next_seq = msg.seq + 1;
                Read::Due { at: now }
            }
            Err(e) if offsets::no_message(&e) => Read::Done(None),
            Err(e) => {
                log::debug!(
                    "nats: reading {} at seq {}: {e}; asking again",
                    self.subjects,
                    self.next_seq
                );
                retry
            }
        };
    }

    /// Notes one message of the bucket (a later one of a key replaces it).
    fn take(&mut self, subject: &str, marker: bool, data: &[u8]) {
        let Some(id) = subject
            .strip_prefix(&self.prefix)
            .and_then(|k| k.parse::<i64>().ok())
        else {
            log::warn!("nats: {subject} is no webhook endpoint's key; ignored");
            return;
        };
        let key = if marker {
            Key::Deleted
        } else {
            match serde_json::from_slice::<CarriedWebhook>(data) {
                Ok(c) if c.id == id => Key::Endpoint(c),
                Ok(c) => {
                    log::warn!("nats: {subject} holds endpoint {}, not {id}; ignored", c.id);
                    Key::Unreadable
                }
                Err(e) => {
                    log::warn!(
                        "nats: {subject} holds no webhook endpoint ({e}); the local one, if any, \
                         is kept"
                    );
                    Key::Unreadable
                }
            }
        };
        self.keys.insert(id, key);
    }

    /// What the promotion takes in, once the bucket is read: `Some(None)` when
    /// there is no bucket (the local endpoints stay as they are).
    pub fn adoption(&self) -> Option<Option<WebhookAdoption>> {
        match (self.bucket, self.walk) {
            (Read::Done(None), _) => Some(None),
            (Read::Done(Some(_)), Read::Done(_)) => {
                let mut adoption = WebhookAdoption {
                    max_id: self.keys.keys().copied().max().unwrap_or(0),
                    ..WebhookAdoption::default()
                };
                for (&id, key) in &self.keys {
                    match key {
                        Key::Endpoint(c) => adoption.endpoints.push(c.clone()),
                        Key::Unreadable => adoption.keep.push(id),
                        Key::Deleted => {}
                    }
                }
                Some(Some(adoption))
            }
            _ => None,
        }
    }

    /// When a request is next due (while connected: a connection wakes the
    /// reactor anyway) or times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        let walk = Some(&self.walk).filter(|_| self.bucket == Read::Done(Some(1)));
        std::iter::once(&self.bucket)
            .chain(walk)
            .filter_map(|r| offsets::deadline(r, self.connected))
            .min()
    }

    /// The request the walk waits for, if any (for tests).
    #[cfg(test)]
    fn waiting(&self) -> Option<super::event::RequestId> {
        match self.walk {
            Read::Waiting { request, .. } => Some(request),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::offsets::tests::{FakeLink, reply};

    /// STREAM.INFO of an existing bucket (trimmed).
    const INFO: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","config":{"name":"KV_S_webhooks","subjects":["$KV.S_webhooks.\u003e"]},"state":{"messages":2}}"#;
    const INFO_MISSING: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0}"#;
    const NO_MORE: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}"#;

    fn carried(id: i64, position: i64) -> CarriedWebhook {
        CarriedWebhook {
            id,
            url: "http://10.0.0.1/hook".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            events: "*".into(),
            disabled: None,
            position,
            requeued: vec![2],
        }
    }

    /// A MSG.GET answer of `subject` at `seq`, with `data` and, for a marker,
    /// the `KV-Operation: DEL` header.
    fn got(subject: &str, seq: u64, data: &[u8], marker: bool) -> Vec<u8> {
        let b64 = |bytes: &[u8]| {
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
                }
            }
            out
        };
        let hdrs = if marker {
            format!(
                ",\"hdrs\":\"{}\"",
                b64(b"NATS/1.0\r\nKV-Operation: DEL\r\n\r\n")
            )
        } else {
            String::new()
        };
        format!(
            "{{\"message\":{{\"subject\":\"{subject}\",\"seq\":{seq},\"data\":\"{}\"{hdrs},\"time\":\"2026-12-07T00:00:00Z\"}}}}",
            b64(data)
        )
        .into_bytes()
    }

    #[test]
    fn names_keys_and_values() {
        assert_eq!(bucket_name("USERBUS"), "USERBUS_webhooks");
        assert_eq!(key(12, &mut itoa::Buffer::new()), "12");
        let v: serde_json::Value = serde_json::from_slice(&value(&carried(3, 9))).expect("JSON");
        assert_eq!(v["id"], 3);
        assert_eq!(v["position"], 9);
        assert_eq!(v["disabled"], serde_json::Value::Null);
        assert_eq!(v["requeued"], serde_json::json!([2]));
        let mut many = carried(3, 9);
        many.requeued = (1..=MAX_CARRIED_REQUEUED as i64 + 5).collect();
        let v: CarriedWebhook = serde_json::from_slice(&value(&many)).expect("JSON");
        assert_eq!(v.requeued.len(), MAX_CARRIED_REQUEUED);
        assert_eq!(
            next_by_subject_request(4, "$KV.B.>"),
            br#"{"next_by_subj":"$KV.B.>","seq":4}"#
        );
    }

    #[test]
    fn the_walk_reads_every_key_once_and_markers_delete() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut r = WebhookReader::new("S", t0);
        r.step(&mut link, t0);
        let (id, subject, _) = link.last();
        assert_eq!(subject, "$JS.API.STREAM.INFO.KV_S_webhooks");
        r.answer(&reply(id, INFO), t0);
        assert_eq!(r.adoption(), None);
        r.step(&mut link, t0);
        let (id, subject, body) = link.last();
        assert_eq!(subject, "$JS.API.STREAM.MSG.GET.KV_S_webhooks");
        assert_eq!(body, r#"{"next_by_subj":"$KV.S_webhooks.>","seq":1}"#);
        let one = value(&carried(1, 5));
        r.answer(&reply(id, &got("$KV.S_webhooks.1", 4, &one, false)), t0);
        r.step(&mut link, t0);
        let (id, _, body) = link.last();
        assert!(body.contains(r#""seq":5"#), "{body}");
        r.answer(&reply(id, &got("$KV.S_webhooks.7", 6, b"", true)), t0);
        r.step(&mut link, t0);
        let (id, ..) = link.last();
        r.answer(&reply(id, &got("$KV.S_webhooks.9", 8, b"{nope", false)), t0);
        r.step(&mut link, t0);
        let (id, ..) = link.last();
        r.answer(&reply(id, NO_MORE), t0);
        assert_eq!(r.waiting(), None);
        let adoption = r.adoption().expect("read").expect("a bucket");
        assert_eq!(adoption.endpoints, vec![carried(1, 5)]);
        assert_eq!(adoption.keep, vec![9]);
        assert_eq!(adoption.max_id, 9);
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn without_a_bucket_nothing_is_taken_in_and_failures_are_asked_again() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut r = WebhookReader::new("S", t0);
        r.step(&mut link, t0);
        let (id, ..) = link.last();
        r.answer(&reply(id, INFO_MISSING), t0);
        r.step(&mut link, t0);
        assert_eq!(link.sent.len(), 1, "no key is asked");
        assert_eq!(r.adoption(), Some(None));

        let mut r = WebhookReader::new("S", t0);
        r.step(&mut link, t0);
        let (id, ..) = link.last();
        r.answer(&reply(id, INFO), t0);
        r.step(&mut link, t0);
        let (id, ..) = link.last();
        r.answer(
            &reply(id, br#"{"error":{"code":503,"err_code":10008}}"#),
            t0,
        );
        assert_eq!(r.next_deadline(), Some(t0 + READ_RETRY));
        r.step(&mut link, t0 + READ_RETRY);
        let (again, _, body) = link.last();
        assert_ne!(again, id);
        assert!(body.contains(r#""seq":1"#), "{body}");
        // Unanswered: forgotten and asked again.
        r.step(&mut link, t0 + READ_RETRY + offsets::ANSWER_TIMEOUT);
        assert!(link.forgotten.contains(&again));
        assert_ne!(r.waiting(), Some(again));
    }
}
