//! Durable handler offsets in a JetStream key-value bucket, so that a handler on
//! a promoted follower resumes where the old primary's stopped (at-least-once).
//!
//! # The bucket
//! Named `<stream>_handlers` (`USERBUS_handlers`): the stream
//! `KV_<bucket>` with subjects `$KV.<bucket>.>`, made as `nats kv add` and the
//! NATS clients' KV APIs make one (one value per key, rollups allowed, deletes
//! denied, discard new, file storage, direct gets allowed, `--nats-replicas`
//! copies), so `nats kv get`, nats.go and nats-py read it. One key per durable
//! handler: its name, with every byte outside `[A-Za-z0-9_-]` written `=XX` in
//! hex so that the key stays one NATS token ([`key`]: `mail.v2` is `mail=2Ev2`);
//! the value is the offset (the last seq the handler returned from) in decimal.
//!
//! # Requests on another machine's connection
//! The primary writes through the relay's NATS connection and a promotion reads
//! through the follower's, each lent as a [`super::side::Side`]: the
//! connection's owner keeps the ids of these requests and hands their replies
//! over untouched; they never enter the relay's publish window, nor its ack
//! accounting.
//!
//! # Writing, on the primary: [`OffsetWriter`]
//! ```text
//! Unchecked ──relay publishing──▶ Checking (STREAM.INFO) ──missing──▶ Creating (STREAM.CREATE)
//!     ▲                              │ found, subjects fit               │ created
//!     │                              ▼                                   ▼
//!     │                            Ready: per key, a put when the offset moved, one in
//!     │                                   flight, at most once per PUT_INTERVAL (and once
//!     │                                   more at a clean shutdown, without the wait)
//!     └── Backoff ◀── failure, timeout;   no responders to a put (bucket gone) ──▶ Unchecked
//!  a stream of that name with other subjects ──▶ Unusable (logged at error level)
//! ```
//! A failed or unanswered put is logged and sent again at the next interval;
//! nothing here stops the relay.
//!
//! # Reading, at a promotion: [`OffsetReader`]
//! `STREAM.INFO` of the bucket first (a clustered JetStream does not answer a
//! MSG.GET from a missing stream), then `$JS.API.STREAM.MSG.GET.KV_<bucket>` with
//! `{"last_by_subj": "$KV.<bucket>.<key>"}` for each handler. A missing key or
//! bucket reads as nothing; another failure is
//! asked again shortly, within the promotion's own deadline. The handler then
//! resumes after [`resume_offset`]: the furthest of its local offset and the
//! bucket's, never past the applied seq.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::event::RequestId;
use super::jetstream::{
    self, ERR_NO_MESSAGE_FOUND, ERR_STREAM_NOT_FOUND, JsError, parse_msg_get, parse_pub_ack,
    parse_stream_info,
};
use super::side::{SideLink, SideReply};

/// How often at most a handler's offset is put into the bucket.
pub const PUT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a put or an API request may wait for its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after the bucket could not be checked or created; doubles.
const BUCKET_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between attempts at the bucket.
const BUCKET_RETRY_MAX: Duration = Duration::from_secs(30);
/// Wait before asking again for a key whose read failed (no leader, ...).
pub(super) const READ_RETRY: Duration = Duration::from_millis(250);
/// Header nats KV clients mark a deleted or purged key with.
pub(super) const KV_OPERATION: &str = "KV-Operation";

/// The bucket of `stream`'s durable handler offsets.
pub fn bucket_name(stream: &str) -> String {
    format!("{stream}_handlers")
}

/// The JetStream stream behind `bucket`.
pub fn bucket_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The key of durable handler `name`: bytes outside `[A-Za-z0-9_-]` as `=XX`
/// (hex), so that it is one NATS token and a valid KV key; `=` for an empty name.
pub fn key(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            key.push(char::from(b));
        } else {
            let _ = write!(key, "={b:02X}");
        }
    }
    if key.is_empty() {
        key.push('=');
    }
    key
}

/// The subject a handler's offset is put on: `$KV.<bucket>.<key>`.
pub fn key_subject(bucket: &str, name: &str) -> String {
    format!("$KV.{bucket}.{}", key(name))
}

/// The body of `$JS.API.STREAM.CREATE.KV_<bucket>`: the stream `nats kv add`
/// makes for a bucket with a history of 1 (nats-server 2.9.10 echoes it back).
pub fn bucket_create_request(bucket: &str, replicas: u32) -> Vec<u8> {
    let config = serde_json::json!({
        "name": bucket_stream(bucket),
        "subjects": [format!("$KV.{bucket}.>")],
        "retention": "limits",
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": -1,
        "max_age": 0,
        "max_msgs_per_subject": 1,
        "max_msg_size": -1,
        "discard": "new",
        "storage": "file",
        "num_replicas": replicas,
        "duplicate_window": 120_000_000_000u64,
        "allow_rollup_hdrs": true,
        "deny_delete": true,
        "allow_direct": true,
    });
    config.to_string().into_bytes()
}

/// The body of a MSG.GET of the last message on `subject`.
pub fn last_by_subject_request(subject: &str) -> Vec<u8> {
    serde_json::json!({ "last_by_subj": subject })
        .to_string()
        .into_bytes()
}

/// Where a durable handler resumes on a promoted node: after the furthest of
/// its local offset and the bucket's (`None`: no key, keep the local one), never
/// past `applied`, the last seq the node holds. It never skips an event the
/// stream holds that no node confirmed it processed; the events after the
/// bucket's value that the old primary processed within its last interval run
/// again (at-least-once).
pub fn resume_offset(local: i64, stored: Option<i64>, applied: i64) -> i64 {
    local.max(stored.unwrap_or(local)).min(applied)
}

/// Where the writer is with the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// Not checked yet (or to check again).
    Unchecked,
    /// STREAM.INFO asked.
    Checking {
        request: RequestId,
        sent_at: Instant,
    },
    /// STREAM.CREATE asked.
    Creating {
        request: RequestId,
        sent_at: Instant,
    },
    /// Puts flow.
    Ready,
    /// Waiting before checking again.
    Backoff { until: Instant },
    /// A stream of the bucket's name that is not this bucket: nothing is put.
    Unusable,
}

/// What INFO and `/metrics` show of the writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStatus {
    /// The bucket's name.
    pub bucket: String,
    /// `unchecked`, `checking`, `creating`, `ready`, `backoff` or `unusable`.
    pub state: &'static str,
    /// Puts the bucket acknowledged.
    pub puts: u64,
    /// Handlers whose offset the bucket does not hold yet (in flight or due).
    pub pending: u64,
    /// The standing failure, until a put or the bucket check succeeds.
    pub last_error: Option<String>,
}

/// What a key is to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    /// A value.
    Value(Vec<u8>),
    /// Nothing: a delete marker (`KV-Operation: DEL`), as `nats kv del` puts.
    Deleted,
}

/// A put waiting for its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Put {
    request: RequestId,
    value: Want,
    sent_at: Instant,
}

/// One key.
#[derive(Debug, Clone)]
struct Slot {
    name: String,
    subject: String,
    /// What to put.
    want: Want,
    /// The last value the bucket acknowledged from this writer.
    stored: Option<Want>,
    in_flight: Option<Put>,
    last_sent: Option<Instant>,
    /// Put at the next step, without waiting for the interval (a configuration
    /// change).
    urgent: bool,
}

impl Slot {
    fn new(bucket: &str, name: &str, want: Want) -> Slot {
        Slot {
            name: name.to_string(),
            subject: key_subject(bucket, name),
            want,
            stored: None,
            in_flight: None,
            last_sent: None,
            urgent: false,
        }
    }

    /// True while the bucket does not hold what the slot wants.
    fn unsettled(&self) -> bool {
        self.stored.as_ref() != Some(&self.want) || self.in_flight.is_some()
    }
}

/// The primary's writer of keys into a bucket: the durable handlers' offsets
/// ([`OffsetWriter::new`]), or values given key by key
/// ([`OffsetWriter::for_bucket`], the webhook endpoints of `nats::webhook_kv`).
#[derive(Debug)]
pub struct OffsetWriter {
    bucket: String,
    replicas: u32,
    /// What the bucket holds, for the log: `durable handler offsets`.
    contents: &'static str,
    /// What one key holds, for the log: `the offset of durable handler`.
    item: &'static str,
    state: Bucket,
    slots: Vec<Slot>,
    retry_wait: Duration,
    /// The last failure logged, so that retries do not repeat it.
    reported: Option<String>,
    /// Whether the link was connected at the last step (deadlines only then).
    connected: bool,
    /// Whether the relay published at the last step (puts only then).
    reached: bool,
    puts: u64,
}

impl OffsetWriter {
    /// A writer of the offsets of the handlers `names` (in the order offsets are
    /// given to [`OffsetWriter::set_offsets`]) into `stream`'s bucket, created
    /// with `replicas` copies when missing.
    pub fn new<'a>(
        stream: &str,
        replicas: u32,
        names: impl IntoIterator<Item = &'a str>,
    ) -> OffsetWriter {
        let bucket = bucket_name(stream);
        let mut writer = OffsetWriter::for_bucket(
            bucket,
            replicas,
            "durable handler offsets",
            "the offset of durable handler",
        );
        writer.slots = names
            .into_iter()
            .map(|name| Slot::new(&writer.bucket, name, Want::Value(b"0".to_vec())))
            .collect();
        writer
    }

    /// A writer into `bucket` (created with `replicas` copies when missing) of
    /// the keys given to [`OffsetWriter::put`] and [`OffsetWriter::delete`];
    /// `contents` and `item` name what it holds in the log (`webhook
    /// endpoints`, `webhook endpoint`).
    pub fn for_bucket(
        bucket: String,
        replicas: u32,
        contents: &'static str,
        item: &'static str,
    ) -> OffsetWriter {
        OffsetWriter {
            bucket,
            replicas,
            contents,
            item,
            slots: Vec::new(),
            state: Bucket::Unchecked,
            retry_wait: BUCKET_RETRY_MIN,
            reported: None,
            connected: false,
            reached: false,
            puts: 0,
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Puts the bucket acknowledged.
    pub fn puts(&self) -> u64 {
        self.puts
    }

    /// Brings `status` up to date; strings are copied only when they changed (it
    /// runs every tick).
    pub fn status_into(&self, status: &mut WriterStatus) {
        if status.bucket != self.bucket {
            status.bucket = self.bucket.clone();
        }
        status.state = match self.state {
            Bucket::Unchecked => "unchecked",
            Bucket::Checking { .. } => "checking",
            Bucket::Creating { .. } => "creating",
            Bucket::Ready => "ready",
            Bucket::Backoff { .. } => "backoff",
            Bucket::Unusable => "unusable",
        };
        status.puts = self.puts;
        status.pending = self.slots.iter().filter(|s| s.unsettled()).count() as u64;
        if status.last_error != self.reported {
            status.last_error = self.reported.clone();
        }
    }

    /// The handlers' current offsets, in the order of their names.
    pub fn set_offsets(&mut self, offsets: impl IntoIterator<Item = i64>) {
        for (slot, offset) in self.slots.iter_mut().zip(offsets) {
            // Runs every tick: the decimal is written on the stack and copied
            // only when it changed.
            let mut buf = [0u8; 24];
            let len = {
                let mut rest = &mut buf[..];
                let _ = std::io::Write::write_fmt(&mut rest, format_args!("{offset}"));
                24 - rest.len()
            };
            let digits = &buf[..len];
            if !matches!(&slot.want, Want::Value(v) if v.as_slice() == digits) {
                slot.want = Want::Value(digits.to_vec());
            }
        }
    }

    /// Key `name` is to hold `value`: put at the next step with `at_once` (a
    /// configuration change), within [`PUT_INTERVAL`] otherwise.
    pub fn put(&mut self, name: &str, value: Vec<u8>, at_once: bool) {
        self.set(name, Want::Value(value), at_once);
    }

    /// When key `name`'s next put may leave: its last one's time plus
    /// [`PUT_INTERVAL`], or, while one is in flight, its timeout (its answer
    /// comes sooner, and the caller asks again then); `None` for at once.
    pub fn put_due_at(&self, name: &str) -> Option<Instant> {
        let slot = self.slots.iter().find(|s| s.name == name)?;
        match (&slot.in_flight, slot.last_sent) {
            (Some(p), _) => Some(p.sent_at + ANSWER_TIMEOUT),
            (None, Some(t)) => Some(t + PUT_INTERVAL),
            (None, None) => None,
        }
    }

    /// Key `name` is to be deleted (a delete marker), at the next step.
    pub fn delete(&mut self, name: &str) {
        self.set(name, Want::Deleted, true);
    }

    fn set(&mut self, name: &str, want: Want, at_once: bool) {
        let slot = match self.slots.iter().position(|s| s.name == name) {
            Some(i) => &mut self.slots[i],
            None => {
                self.slots.push(Slot::new(&self.bucket, name, want.clone()));
                self.slots.last_mut().expect("invariant: just pushed")
            }
        };
        slot.want = want;
        slot.urgent |= at_once;
    }

    /// True while an offset differs from what the bucket acknowledged and the
    /// bucket is usable.
    pub fn pending(&self) -> bool {
        self.state != Bucket::Unusable && self.slots.iter().any(Slot::unsettled)
    }

    /// Sends what is due while `stream_reached` (the relay publishes: this node
    /// writes the stream): the bucket check, and the puts of offsets that moved,
    /// each once per [`PUT_INTERVAL`] at most, or at once with `now_all` (a clean
    /// shutdown). A relay that reconciles or stopped may have met another writer:
    /// its node's offsets wait rather than overwrite the new primary's.
    pub fn step(
        &mut self,
        link: &mut impl SideLink,
        stream_reached: bool,
        now: Instant,
        now_all: bool,
    ) {
        self.expire(link, now);
        self.connected = link.side_connected();
        self.reached = stream_reached;
        if !self.connected {
            return;
        }
        match self.state {
            Bucket::Unchecked if stream_reached => {
                let subject = jetstream::stream_info_subject(&bucket_stream(&self.bucket));
                match link.side_request(&subject, b"") {
                    Ok(request) => {
                        self.state = Bucket::Checking {
                            request,
                            sent_at: now,
                        }
                    }
                    Err(e) => self.back_off(&format!("cannot ask for it: {e}"), now),
                }
            }
            Bucket::Ready if stream_reached => {
                for i in 0..self.slots.len() {
                    let slot = &self.slots[i];
                    let due = slot.stored.as_ref() != Some(&slot.want)
                        && slot.in_flight.is_none()
                        && (now_all
                            || slot.urgent
                            || slot.last_sent.is_none_or(|t| now >= t + PUT_INTERVAL));
                    if !due {
                        continue;
                    }
                    let value = slot.want.clone();
                    let sent = match &value {
                        Want::Value(v) => link.side_request(&slot.subject, v),
                        Want::Deleted => {
                            link.side_request_with(&slot.subject, &[(KV_OPERATION, "DEL")], b"")
                        }
                    };
                    let slot = &mut self.slots[i];
                    slot.last_sent = Some(now);
                    slot.urgent = false;
                    match sent {
                        Ok(request) => {
                            slot.in_flight = Some(Put {
                                request,
                                value,
                                sent_at: now,
                            })
                        }
                        Err(e) => {
                            let why = format!("cannot put {} '{}': {e}", self.item, slot.name);
                            self.report(&why);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Takes in a reply to one of its requests (others are ignored); a missing
    /// bucket is created through `link`.
    pub fn answer(&mut self, link: &mut impl SideLink, reply: &SideReply, now: Instant) {
        let status = reply.status.as_ref();
        match self.state {
            Bucket::Checking { request, .. } if request == reply.id => {
                match parse_stream_info(status, &reply.payload) {
                    Ok(info) => {
                        let subjects = format!("$KV.{}.>", self.bucket);
                        if info.config.subjects.contains(&subjects) {
                            log::info!("nats: {} go to KV bucket '{}'", self.contents, self.bucket);
                            self.ready();
                        } else {
                            let why = format!(
                                "stream '{}' exists with subjects {:?}, not {subjects}: it is \
                                 no KV bucket '{}'; {} stay local",
                                bucket_stream(&self.bucket),
                                info.config.subjects,
                                self.bucket,
                                self.contents
                            );
                            log::error!("nats: {why}");
                            self.reported = Some(why);
                            self.state = Bucket::Unusable;
                        }
                    }
                    Err(e) if e.err_code() == Some(ERR_STREAM_NOT_FOUND) => {
                        let stream = bucket_stream(&self.bucket);
                        let body = bucket_create_request(&self.bucket, self.replicas);
                        match link.side_request(&jetstream::stream_create_subject(&stream), &body) {
                            Ok(request) => {
                                self.state = Bucket::Creating {
                                    request,
                                    sent_at: now,
                                }
                            }
                            Err(e) => self.back_off(&format!("cannot create it: {e}"), now),
                        }
                    }
                    Err(e) => self.back_off(&format!("stream info: {e}"), now),
                }
                return;
            }
            Bucket::Creating { request, .. } if request == reply.id => {
                match parse_stream_info(status, &reply.payload) {
                    Ok(_) => {
                        log::info!(
                            "nats: created KV bucket '{}' ({} replica(s)) for {}",
                            self.bucket,
                            self.replicas,
                            self.contents
                        );
                        self.ready();
                    }
                    Err(e) => self.back_off(&format!("create: {e}"), now),
                }
                return;
            }
            _ => {}
        }
        let Some(i) = self
            .slots
            .iter()
            .position(|s| s.in_flight.as_ref().is_some_and(|p| p.request == reply.id))
        else {
            return;
        };
        let slot = &mut self.slots[i];
        let Some(put) = slot.in_flight.take() else {
            return;
        };
        match parse_pub_ack(status, &reply.payload) {
            Ok(_) => {
                self.puts += 1;
                self.reported = None;
                if put.value == Want::Deleted && slot.want == Want::Deleted {
                    // Nothing more to put for a deleted key.
                    self.slots.remove(i);
                } else {
                    slot.stored = Some(put.value);
                }
            }
            Err(JsError::NoResponders) => {
                let why = format!(
                    "no responders on {} (the bucket is gone, or has no leader); checking it \
                     again",
                    slot.subject
                );
                self.report(&why);
                if self.state == Bucket::Ready {
                    self.state = Bucket::Unchecked;
                }
            }
            Err(e) => {
                let why = format!(
                    "the put of {} '{}' was refused: {e}; retrying",
                    self.item, slot.name
                );
                self.report(&why);
            }
        }
    }

    /// When something is next due: an answer's timeout, the end of a back-off,
    /// a put waiting for its interval (only while connected: a reconnection
    /// wakes the reactor anyway).
    pub fn next_deadline(&self) -> Option<Instant> {
        let own = match self.state {
            Bucket::Checking { sent_at, .. } | Bucket::Creating { sent_at, .. } => {
                Some(sent_at + ANSWER_TIMEOUT)
            }
            Bucket::Backoff { until } => Some(until),
            _ => None,
        };
        let puts_flow = self.connected && self.reached && self.state == Bucket::Ready;
        let slots = self
            .slots
            .iter()
            .filter_map(|s| match (&s.in_flight, s.last_sent) {
                (Some(p), _) => Some(p.sent_at + ANSWER_TIMEOUT),
                (None, Some(t)) if puts_flow && s.stored.as_ref() != Some(&s.want) => {
                    Some(if s.urgent { t } else { t + PUT_INTERVAL })
                }
                _ => None,
            });
        own.into_iter().chain(slots).min()
    }

    /// Gives up on answers older than [`ANSWER_TIMEOUT`] and ends a back-off.
    fn expire(&mut self, link: &mut impl SideLink, now: Instant) {
        match self.state {
            Bucket::Checking { request, sent_at } | Bucket::Creating { request, sent_at }
                if now >= sent_at + ANSWER_TIMEOUT =>
            {
                link.side_forget(request);
                self.back_off("no answer", now);
            }
            Bucket::Backoff { until } if now >= until => self.state = Bucket::Unchecked,
            _ => {}
        }
        let mut timed_out = None;
        for slot in &mut self.slots {
            if let Some(put) = &slot.in_flight
                && now >= put.sent_at + ANSWER_TIMEOUT
            {
                link.side_forget(put.request);
                slot.in_flight = None;
                timed_out = Some(slot.name.clone());
            }
        }
        if let Some(name) = timed_out {
            self.report(&format!(
                "the put of {} '{name}' was not acknowledged within {ANSWER_TIMEOUT:?}; \
                 retrying",
                self.item
            ));
        }
    }

    fn ready(&mut self) {
        self.state = Bucket::Ready;
        self.retry_wait = BUCKET_RETRY_MIN;
        self.reported = None;
    }

    /// The bucket could not be checked or created: try again after a wait.
    fn back_off(&mut self, why: &str, now: Instant) {
        self.report(&format!(
            "KV bucket '{}': {why}; retrying in {:?}",
            self.bucket, self.retry_wait
        ));
        self.state = Bucket::Backoff {
            until: now + self.retry_wait,
        };
        self.retry_wait = (self.retry_wait * 2).min(BUCKET_RETRY_MAX);
    }

    /// Logs a failure once per distinct text (retries repeat it at debug level).
    fn report(&mut self, why: &str) {
        if self.reported.as_deref() == Some(why) {
            log::debug!("nats: {why}");
        } else {
            log::warn!("nats: {why}");
            self.reported = Some(why.to_string());
        }
    }
}

/// Where one key's read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// To ask at `at`.
    Due { at: Instant },
    /// Asked.
    Waiting {
        request: RequestId,
        sent_at: Instant,
    },
    /// Answered: the value, or `None` for no key (or no bucket).
    Done(Option<i64>),
}

/// A promotion's reader of the handlers' offsets from the bucket: first whether
/// the bucket exists (a clustered JetStream does not answer a MSG.GET from a
/// missing stream), then each key.
#[derive(Debug)]
pub struct OffsetReader {
    stream: String,
    /// The bucket's STREAM.INFO: `Done(Some(_))` found, `Done(None)` missing.
    bucket: Read,
    reads: Vec<(String, Read)>,
    /// Whether the link was connected at the last step (reads are due only then).
    connected: bool,
}

/// Sends `read`'s request when it is due, asks again when its answer did not
/// come in time.
pub(super) fn drive(
    read: &mut Read,
    link: &mut impl SideLink,
    subject: &str,
    body: &[u8],
    what: &str,
    now: Instant,
) {
    if let Read::Waiting { request, sent_at } = *read
        && now >= sent_at + ANSWER_TIMEOUT
    {
        link.side_forget(request);
        log::warn!("nats: no answer for {what} within {ANSWER_TIMEOUT:?}; asking again");
        *read = Read::Due { at: now };
    }
    if !matches!(*read, Read::Due { at } if now >= at) || !link.side_connected() {
        return;
    }
    *read = match link.side_request(subject, body) {
        Ok(request) => Read::Waiting {
            request,
            sent_at: now,
        },
        Err(e) => {
            log::warn!("nats: cannot ask for {what}: {e}");
            Read::Due {
                at: now + READ_RETRY,
            }
        }
    };
}

/// Drives the read of the bucket's STREAM.INFO (`stream` is the bucket's
/// stream); true once the bucket is found, when its keys are read.
pub(super) fn drive_bucket(
    bucket: &mut Read,
    link: &mut impl SideLink,
    stream: &str,
    now: Instant,
) -> bool {
    let info = jetstream::stream_info_subject(stream);
    drive(bucket, link, &info, b"", stream, now);
    *bucket == Read::Done(Some(1))
}

/// Takes in `reply` if it answers the bucket's STREAM.INFO; true when it did.
pub(super) fn answer_bucket(
    bucket: &mut Read,
    stream: &str,
    reply: &SideReply,
    now: Instant,
) -> bool {
    if !matches!(*bucket, Read::Waiting { request, .. } if request == reply.id) {
        return false;
    }
    *bucket = match parse_stream_info(reply.status.as_ref(), &reply.payload) {
        Ok(_) => Read::Done(Some(1)),
        Err(e) if e.err_code() == Some(ERR_STREAM_NOT_FOUND) => Read::Done(None),
        Err(e) => {
            log::debug!("nats: stream info of {stream}: {e}; asking again");
            Read::Due {
                at: now + READ_RETRY,
            }
        }
    };
    true
}

/// True when a MSG.GET's error `e` says there is no such message: the key, or
/// the whole bucket, holds nothing.
pub(super) fn no_message(e: &JsError) -> bool {
    matches!(
        e.err_code(),
        Some(ERR_NO_MESSAGE_FOUND | ERR_STREAM_NOT_FOUND)
    )
}

/// When `read` next wants the reactor: when it is due (only while
/// `connected`: a connection wakes the reactor anyway) or its answer is late.
pub(super) fn deadline(read: &Read, connected: bool) -> Option<Instant> {
    match *read {
        Read::Due { at } if connected => Some(at),
        Read::Waiting { sent_at, .. } => Some(sent_at + ANSWER_TIMEOUT),
        Read::Due { .. } | Read::Done(_) => None,
    }
}

impl OffsetReader {
    /// A reader of the keys of handlers `names` in `stream`'s bucket.
    pub fn new<'a>(
        stream: &str,
        names: impl IntoIterator<Item = &'a str>,
        now: Instant,
    ) -> OffsetReader {
        let bucket = bucket_name(stream);
        OffsetReader {
            stream: bucket_stream(&bucket),
            bucket: Read::Due { at: now },
            reads: names
                .into_iter()
                .map(|n| (key_subject(&bucket, n), Read::Due { at: now }))
                .collect(),
            connected: false,
        }
    }

    /// Sends the requests that are due, and asks again for unanswered ones.
    pub fn step(&mut self, link: &mut impl SideLink, now: Instant) {
        self.connected = link.side_connected();
        if !drive_bucket(&mut self.bucket, link, &self.stream, now) {
            return;
        }
        let api = jetstream::stream_msg_get_subject(&self.stream);
        for (subject, read) in &mut self.reads {
            drive(
                read,
                link,
                &api,
                &last_by_subject_request(subject),
                subject,
                now,
            );
        }
    }

    /// Takes in a reply to one of its requests (others are ignored).
    pub fn answer(&mut self, reply: &SideReply, now: Instant) {
        let retry = Read::Due {
            at: now + READ_RETRY,
        };
        if answer_bucket(&mut self.bucket, &self.stream, reply, now) {
            return;
        }
        let Some((subject, read)) = self
            .reads
            .iter_mut()
            .find(|(_, r)| matches!(r, Read::Waiting { request, .. } if *request == reply.id))
        else {
            return;
        };
        *read = match parse_msg_get(reply.status.as_ref(), &reply.payload) {
            Ok(msg) if msg.headers.get(KV_OPERATION).is_some() => Read::Done(None),
            Ok(msg) => match std::str::from_utf8(&msg.data)
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
            {
                Some(v) if v >= 0 => Read::Done(Some(v)),
                _ => {
                    log::warn!(
                        "nats: {subject} holds {:?}, not an offset; the local offset is kept",
                        String::from_utf8_lossy(&msg.data)
                    );
                    Read::Done(None)
                }
            },
            Err(e) if no_message(&e) => Read::Done(None),
            Err(e) => {
                log::debug!("nats: reading {subject}: {e}; asking again");
                retry
            }
        };
    }

    /// Each handler's value in the bucket (in the order of the names), once
    /// every read is answered; all `None` when there is no bucket.
    pub fn values(&self) -> Option<Vec<Option<i64>>> {
        if self.bucket == Read::Done(None) {
            return Some(vec![None; self.reads.len()]);
        }
        self.reads
            .iter()
            .map(|(_, r)| match r {
                Read::Done(v) => Some(*v),
                _ => None,
            })
            .collect()
    }

    /// When a request is next due (while connected: a connection wakes the
    /// reactor anyway) or times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Keys are read once the bucket is found.
        let keys = self.reads.iter().map(|(_, r)| r);
        let keys = keys.filter(|_| self.bucket == Read::Done(Some(1)));
        std::iter::once(&self.bucket)
            .chain(keys)
            .filter_map(|r| deadline(r, self.connected))
            .min()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::nats::event::PublishError;
    use crate::nats::headers::Status;

    // Answers nats-server 2.9.10 gave on a raw connection, pasted unchanged.

    /// STREAM.CREATE with `bucket_create_request("S_handlers", 1)`'s config.
    const CREATED: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{"name":"KV_S_handlers","subjects":["$KV.S_handlers.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":1,"max_msg_size":-1,"discard":"new","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":true,"mirror_direct":false,"sealed":false,"deny_delete":true,"deny_purge":false,"allow_rollup_hdrs":true},"created":"2026-12-06T19:29:43.295403208Z","state":{"messages":0,"bytes":0,"first_seq":0,"first_ts":"0001-01-01T00:00:00Z","last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0},"did_create":true}"#;
    /// STREAM.INFO of a missing stream.
    const INFO_MISSING: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0}"#;
    /// A put on `$KV.S_handlers.mail`.
    const PUT_ACK: &[u8] = br#"{"stream":"KV_S_handlers", "seq":1}"#;
    /// MSG.GET `last_by_subj` of a key holding `43`.
    const GOT_43: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"$KV.S_handlers.mail","seq":2,"data":"NDM=","time":"2026-12-06T19:29:43.302935349Z"}}"#;
    /// MSG.GET `last_by_subj` of a key never put.
    const NO_KEY: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}"#;
    /// MSG.GET `last_by_subj` in a bucket that does not exist.
    const NO_BUCKET: &[u8] = br#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10059,"description":"stream not found"}}"#;

    /// A connection that records what is sent.
    #[derive(Default)]
    pub(in crate::nats) struct FakeLink {
        pub(in crate::nats) connected: bool,
        pub(in crate::nats) sent: Vec<(RequestId, String, Vec<u8>)>,
        pub(in crate::nats) forgotten: Vec<RequestId>,
        /// Requests that carried a delete marker.
        pub(in crate::nats) deletes: Vec<RequestId>,
    }

    impl SideLink for FakeLink {
        fn side_connected(&self) -> bool {
            self.connected
        }

        fn side_request_with(
            &mut self,
            subject: &str,
            headers: &[(&str, &str)],
            payload: &[u8],
        ) -> Result<RequestId, PublishError> {
            let id = self.sent.len() as RequestId + 100;
            self.sent.push((id, subject.to_string(), payload.to_vec()));
            if headers.contains(&(KV_OPERATION, "DEL")) {
                self.deletes.push(id);
            }
            Ok(id)
        }

        fn side_forget(&mut self, id: RequestId) {
            self.forgotten.push(id);
        }
    }

    impl FakeLink {
        pub(in crate::nats) fn up() -> FakeLink {
            FakeLink {
                connected: true,
                ..FakeLink::default()
            }
        }

        /// The last request sent: its id, subject and payload as text.
        pub(in crate::nats) fn last(&self) -> (RequestId, String, String) {
            let (id, subject, payload) = self.sent.last().expect("a request was sent");
            (
                *id,
                subject.clone(),
                String::from_utf8_lossy(payload).into_owned(),
            )
        }
    }

    pub(in crate::nats) fn reply(id: RequestId, payload: &[u8]) -> SideReply {
        SideReply {
            id,
            status: None,
            payload: payload.to_vec(),
        }
    }

    fn no_responders(id: RequestId) -> SideReply {
        SideReply {
            id,
            status: Some(Status {
                code: Status::NO_RESPONDERS,
                description: String::new(),
            }),
            payload: Vec::new(),
        }
    }

    /// A writer for stream `S` with one handler `mail`, its bucket created.
    fn ready_writer(link: &mut FakeLink, now: Instant) -> OffsetWriter {
        let mut w = OffsetWriter::new("S", 1, ["mail"]);
        w.step(link, true, now, false);
        let (id, ..) = link.last();
        w.answer(link, &reply(id, INFO_MISSING), now);
        let (id, subject, _) = link.last();
        assert_eq!(subject, "$JS.API.STREAM.CREATE.KV_S_handlers");
        w.answer(link, &reply(id, CREATED), now);
        assert_eq!(w.state, Bucket::Ready);
        w
    }

    #[test]
    fn keys_are_one_token_and_names_follow_the_stream() {
        assert_eq!(key("mail"), "mail");
        assert_eq!(key("Mail_v-2"), "Mail_v-2");
        assert_eq!(key("mail.v1 *"), "mail=2Ev1=20=2A");
        assert_eq!(key("a>b=c"), "a=3Eb=3Dc");
        assert_eq!(key("é"), "=C3=A9");
        assert_eq!(key(""), "=");
        assert_ne!(key("a.b"), key("a=2Eb"), "'=' is escaped too");
        assert_eq!(bucket_name("USERBUS"), "USERBUS_handlers");
        assert_eq!(bucket_stream("USERBUS_handlers"), "KV_USERBUS_handlers");
        assert_eq!(key_subject("B", "x.y"), "$KV.B.x=2Ey");
    }

    #[test]
    fn the_bucket_is_created_as_the_server_echoes_it() {
        let sent: serde_json::Value =
            serde_json::from_slice(&bucket_create_request("S_handlers", 1)).expect("JSON");
        let echoed: serde_json::Value = serde_json::from_slice(CREATED).expect("JSON");
        for (field, value) in sent.as_object().expect("an object") {
            assert_eq!(&echoed["config"][field], value, "{field}");
        }
        assert_eq!(
            last_by_subject_request("$KV.B.k"),
            br#"{"last_by_subj":"$KV.B.k"}"#
        );
    }

    #[test]
    fn nothing_is_asked_before_the_relay_reaches_its_stream_or_while_disconnected() {
        let now = Instant::now();
        let mut w = OffsetWriter::new("S", 1, ["mail"]);
        w.set_offsets([5]);
        let mut down = FakeLink::default();
        w.step(&mut down, true, now, false);
        let mut link = FakeLink::up();
        w.step(&mut link, false, now, false);
        assert!(down.sent.is_empty() && link.sent.is_empty());
        assert_eq!(w.next_deadline(), None);
        w.step(&mut link, true, now, false);
        assert_eq!(link.last().1, "$JS.API.STREAM.INFO.KV_S_handlers");
    }

    #[test]
    fn offsets_are_put_when_they_move_once_a_second_at_most_one_in_flight() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut w = ready_writer(&mut link, t0);
        let sent = link.sent.len();
        w.set_offsets([7]);
        w.step(&mut link, true, t0, false);
        let (id, subject, payload) = link.last();
        assert_eq!(
            (subject.as_str(), payload.as_str()),
            ("$KV.S_handlers.mail", "7")
        );
        // Moved again, but the put is in flight and the interval has not passed.
        w.set_offsets([9]);
        w.step(&mut link, true, t0 + Duration::from_millis(10), false);
        assert_eq!(link.sent.len(), sent + 1);
        w.answer(&mut link, &reply(id, PUT_ACK), t0);
        assert_eq!(w.puts(), 1);
        w.step(&mut link, true, t0 + Duration::from_millis(500), false);
        assert_eq!(link.sent.len(), sent + 1, "within the interval");
        assert_eq!(w.next_deadline(), Some(t0 + PUT_INTERVAL));
        w.step(&mut link, true, t0 + PUT_INTERVAL, false);
        let (id, _, payload) = link.last();
        assert_eq!(payload, "9");
        w.answer(&mut link, &reply(id, PUT_ACK), t0 + PUT_INTERVAL);
        assert!(!w.pending());
        // Unchanged: nothing to put, nothing to wait for.
        w.step(&mut link, true, t0 + PUT_INTERVAL * 3, false);
        assert_eq!(link.sent.len(), sent + 2);
        assert_eq!(w.next_deadline(), None);
        // A clean shutdown puts at once.
        w.set_offsets([10]);
        w.step(&mut link, true, t0 + PUT_INTERVAL * 3, false);
        w.set_offsets([11]);
        let (id, ..) = link.last();
        w.answer(&mut link, &reply(id, PUT_ACK), t0 + PUT_INTERVAL * 3);
        assert!(w.pending());
        w.step(&mut link, true, t0 + PUT_INTERVAL * 3, true);
        assert_eq!(link.last().2, "11");
        // A relay that is not publishing (reconciling, stopped): no puts.
        let (id, ..) = link.last();
        w.answer(&mut link, &reply(id, PUT_ACK), t0 + PUT_INTERVAL * 3);
        w.set_offsets([12]);
        let sent = link.sent.len();
        w.step(&mut link, false, t0 + PUT_INTERVAL * 5, true);
        assert_eq!(link.sent.len(), sent);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn keys_given_one_by_one_go_at_once_on_a_change_and_a_delete_leaves_a_marker() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut link = FakeLink::up();
        let mut w = OffsetWriter::for_bucket("S_webhooks".into(), 1, "webhooks", "webhook");
        w.step(&mut link, true, t0, false);
        let (id, subject, _) = link.last();
        assert_eq!(subject, "$JS.API.STREAM.INFO.KV_S_webhooks");
        w.answer(&mut link, &reply(id, INFO_MISSING), t0);
        let (id, subject, body) = link.last();
        assert_eq!(subject, "$JS.API.STREAM.CREATE.KV_S_webhooks");
        assert!(
            body.contains(r#""subjects":["$KV.S_webhooks.>"]"#),
            "{body}"
        );
        w.answer(&mut link, &reply(id, CREATED), t0);
        assert_eq!(w.put_due_at("1"), None, "a key not held goes at once");
        w.put("1", b"a".to_vec(), true);
        w.step(&mut link, true, t0, false);
        let (id, subject, payload) = link.last();
        assert_eq!(
            (subject.as_str(), payload.as_str()),
            ("$KV.S_webhooks.1", "a")
        );
        assert_eq!(w.put_due_at("1"), Some(t0 + ANSWER_TIMEOUT), "in flight");
        w.answer(&mut link, &reply(id, PUT_ACK), t0);
        assert_eq!(w.put_due_at("1"), Some(t0 + PUT_INTERVAL));
        // A position: within the interval, it waits.
        let sent = link.sent.len();
        w.put("1", b"b".to_vec(), false);
        w.step(&mut link, true, t0 + ms(10), false);
        assert_eq!(link.sent.len(), sent);
        assert_eq!(w.next_deadline(), Some(t0 + PUT_INTERVAL));
        // A configuration change: at once.
        w.put("1", b"c".to_vec(), true);
        assert_eq!(w.next_deadline(), Some(t0));
        w.step(&mut link, true, t0 + ms(20), false);
        let (id, _, payload) = link.last();
        assert_eq!(payload, "c");
        w.answer(&mut link, &reply(id, PUT_ACK), t0 + ms(20));
        assert!(!w.pending());
        w.delete("1");
        w.step(&mut link, true, t0 + ms(30), false);
        let (id, subject, payload) = link.last();
        assert_eq!(
            (subject.as_str(), payload.as_str()),
            ("$KV.S_webhooks.1", "")
        );
        assert_eq!(link.deletes, [id]);
        assert!(w.pending());
        w.answer(&mut link, &reply(id, PUT_ACK), t0 + ms(30));
        assert!(!w.pending());
        assert!(
            w.slots.is_empty(),
            "a deleted key is forgotten once the marker is stored"
        );
        assert_eq!(w.puts(), 3);
    }

    #[test]
    fn an_unanswered_put_is_forgotten_and_sent_again() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut w = ready_writer(&mut link, t0);
        w.set_offsets([3]);
        w.step(&mut link, true, t0, false);
        let (id, ..) = link.last();
        assert_eq!(w.next_deadline(), Some(t0 + ANSWER_TIMEOUT));
        w.step(&mut link, true, t0 + ANSWER_TIMEOUT, false);
        assert!(link.forgotten.contains(&id));
        let (again, _, payload) = link.last();
        assert_ne!(again, id);
        assert_eq!(payload, "3");
        // The late reply of the forgotten put changes nothing.
        w.answer(&mut link, &reply(id, PUT_ACK), t0 + ANSWER_TIMEOUT);
        assert!(w.pending());
        w.answer(&mut link, &reply(again, PUT_ACK), t0 + ANSWER_TIMEOUT);
        assert!(!w.pending());
    }

    #[test]
    fn no_responders_to_a_put_checks_the_bucket_again() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut w = ready_writer(&mut link, t0);
        w.set_offsets([3]);
        w.step(&mut link, true, t0, false);
        let (id, ..) = link.last();
        w.answer(&mut link, &no_responders(id), t0);
        assert_eq!(w.state, Bucket::Unchecked);
        w.step(&mut link, true, t0, false);
        assert_eq!(link.last().1, "$JS.API.STREAM.INFO.KV_S_handlers");
    }

    #[test]
    fn a_failed_check_backs_off_and_another_stream_of_the_name_is_left_alone() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut w = OffsetWriter::new("S", 1, ["mail"]);
        w.set_offsets([1]);
        w.step(&mut link, true, t0, false);
        let (id, ..) = link.last();
        w.answer(&mut link, &no_responders(id), t0);
        assert_eq!(w.next_deadline(), Some(t0 + BUCKET_RETRY_MIN));
        w.step(&mut link, true, t0 + BUCKET_RETRY_MIN, false);
        let (id, subject, _) = link.last();
        assert_eq!(subject, "$JS.API.STREAM.INFO.KV_S_handlers");
        let other = br#"{"config":{"name":"KV_S_handlers","subjects":["elsewhere.>"]},"state":{}}"#;
        w.answer(&mut link, &reply(id, other), t0);
        assert_eq!(w.state, Bucket::Unusable);
        assert!(!w.pending());
        let sent = link.sent.len();
        w.step(&mut link, true, t0 + BUCKET_RETRY_MAX, false);
        assert_eq!(link.sent.len(), sent);
    }

    #[test]
    fn the_status_shows_the_state_puts_pending_keys_and_a_standing_error() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut status = WriterStatus::default();
        let mut w = ready_writer(&mut link, t0);
        w.set_offsets([3]);
        w.status_into(&mut status);
        assert_eq!(
            status,
            WriterStatus {
                bucket: "S_handlers".into(),
                state: "ready",
                puts: 0,
                pending: 1,
                last_error: None,
            }
        );
        w.step(&mut link, true, t0, false);
        let (id, ..) = link.last();
        w.step(&mut link, true, t0 + ANSWER_TIMEOUT, false);
        w.status_into(&mut status);
        let error = status.last_error.clone().expect("the timed-out put");
        assert!(error.contains("not acknowledged"), "{error}");
        assert!(link.forgotten.contains(&id));
        let (again, ..) = link.last();
        w.answer(&mut link, &reply(again, PUT_ACK), t0 + ANSWER_TIMEOUT);
        w.status_into(&mut status);
        assert_eq!((status.puts, status.pending), (1, 0));
        assert_eq!(
            status.last_error, None,
            "a put that succeeds ends the error"
        );
        let mut other = OffsetWriter::new("S", 1, ["mail"]);
        other.step(&mut link, true, t0, false);
        let (id, ..) = link.last();
        let foreign =
            br#"{"config":{"name":"KV_S_handlers","subjects":["elsewhere.>"]},"state":{}}"#;
        other.answer(&mut link, &reply(id, foreign), t0);
        other.status_into(&mut status);
        assert_eq!(status.state, "unusable");
        assert!(
            status
                .last_error
                .is_some_and(|e| e.contains("no KV bucket"))
        );
    }

    #[test]
    fn a_reader_gets_values_missing_keys_and_asks_again_after_a_failure() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut r = OffsetReader::new("S", ["mail", "gone", "new", "bad"], t0);
        r.step(&mut link, t0);
        let (id, subject, _) = link.last();
        assert_eq!(subject, "$JS.API.STREAM.INFO.KV_S_handlers");
        assert_eq!(r.next_deadline(), Some(t0 + ANSWER_TIMEOUT));
        r.answer(&reply(id, CREATED), t0);
        r.step(&mut link, t0);
        assert_eq!(link.sent.len(), 5);
        let (id, subject, body) = link.sent[1].clone();
        assert_eq!(subject, "$JS.API.STREAM.MSG.GET.KV_S_handlers");
        assert_eq!(body, br#"{"last_by_subj":"$KV.S_handlers.mail"}"#);
        r.answer(&reply(id, GOT_43), t0);
        r.answer(&reply(link.sent[2].0, NO_BUCKET), t0);
        r.answer(&no_responders(link.sent[3].0), t0);
        let garbage = br#"{"message":{"subject":"$KV.S_handlers.bad","seq":3,"data":"eA=="}}"#;
        r.answer(&reply(link.sent[4].0, garbage), t0);
        assert_eq!(r.values(), None, "one read failed");
        assert_eq!(r.next_deadline(), Some(t0 + READ_RETRY));
        r.step(&mut link, t0 + READ_RETRY);
        let (id, _, body) = link.last();
        assert_eq!(body, r#"{"last_by_subj":"$KV.S_handlers.new"}"#);
        r.answer(&reply(id, NO_KEY), t0);
        assert_eq!(r.values(), Some(vec![Some(43), None, None, None]));
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn without_a_bucket_every_key_reads_as_missing() {
        let t0 = Instant::now();
        let mut link = FakeLink::up();
        let mut r = OffsetReader::new("S", ["mail", "other"], t0);
        r.step(&mut link, t0);
        let (id, ..) = link.last();
        r.answer(&reply(id, INFO_MISSING), t0);
        r.step(&mut link, t0);
        assert_eq!(link.sent.len(), 1, "no key is asked");
        assert_eq!(r.values(), Some(vec![None, None]));
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn an_unanswered_read_is_asked_again_and_nothing_is_due_while_disconnected() {
        let t0 = Instant::now();
        let mut down = FakeLink::default();
        let mut r = OffsetReader::new("S", ["mail"], t0);
        r.step(&mut down, t0);
        assert!(down.sent.is_empty());
        assert_eq!(r.next_deadline(), None);
        let mut link = FakeLink::up();
        r.step(&mut link, t0);
        let (id, ..) = link.last();
        r.step(&mut link, t0 + ANSWER_TIMEOUT);
        assert_eq!(link.forgotten, [id]);
        assert_eq!(link.sent.len(), 2);
    }

    #[test]
    fn a_handler_resumes_after_the_furthest_offset_never_past_the_applied_seq() {
        assert_eq!(resume_offset(0, Some(20), 25), 20);
        assert_eq!(resume_offset(22, Some(20), 25), 22);
        assert_eq!(resume_offset(7, None, 25), 7);
        assert_eq!(resume_offset(0, Some(999), 25), 25);
        assert_eq!(resume_offset(30, None, 25), 25);
    }
}
