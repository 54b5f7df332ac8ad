//! A follower's feed: the JetStream stream the primary relays into, delivered in
//! seq order from the local log's next seq by an ordered push consumer, parsed
//! back into events for the reactor to apply.
//!
//! # The consumer
//! As nats.go makes an ordered consumer: ephemeral, no acks, in memory, one
//! replica, delivering by start sequence to a subject of its own, with flow
//! control and idle heartbeats. The stream seq of each message comes from its
//! `$JS.ACK` reply subject; its consumer seq must be the last one plus 1. A jump
//! in consumer seqs (a lost message), a heartbeat naming a later consumer seq, no
//! message nor heartbeat for [`STALL_AFTER`], a lost connection or a consumer the
//! server dropped all lead to the same repair: a new consumer, from the seq after
//! the last one handed over, on a new deliver subject (what the old one still
//! sends is ignored).
//!
//! # States
//! ```text
//! Idle ──connected──▶ Checking (STREAM.INFO: trimmed? local log a prefix?)
//!                        │ missing: Waiting, asked again every second
//!                        │ local last seq > 0 and in the stream
//!                        ▼
//!                     Verifying (MSG.GET of the local last seq == the local event)
//!                        ▼
//!                     Creating (CONSUMER.CREATE) ──▶ Following ──gap/stall──▶ Creating
//!  trimmed stream, a local log that is not a prefix, an unreadable event ──▶ Stopped
//! ```
//! Flow-control requests are answered as soon as they are read while fewer
//! than [`MAX_BUFFERED`] events wait for the reactor, else once it has taken
//! half of them, so the stream never outruns the applying by more than that
//! and the server's window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Registry;

use super::client::Client;
use super::event::{Event as NatsEvent, RequestId, Sid};
use super::headers::{Headers, Status};
use super::jetstream::{self, ERR_STREAM_NOT_FOUND, JsError};
use super::side::{Side, SideRequests};
use crate::events::Event;

/// Idle heartbeat asked of the consumer.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Nothing delivered, not even a heartbeat, for this long: a new consumer.
pub const STALL_AFTER: Duration = Duration::from_secs(7);
/// How long an API request may wait for its answer.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before asking again after a failure or for a missing stream.
const RETRY_WAIT: Duration = Duration::from_secs(1);
/// How often the stream's end is asked while following (for the lag).
const INFO_INTERVAL: Duration = Duration::from_secs(1);
/// Delivered events held for the reactor before flow control holds the stream
/// back.
pub const MAX_BUFFERED: usize = 16_384;
/// Header of a heartbeat: the last consumer seq delivered.
const LAST_CONSUMER: &str = "Nats-Last-Consumer";
/// Header of a heartbeat when the consumer waits for a flow-control answer.
const CONSUMER_STALLED: &str = "Nats-Consumer-Stalled";

/// One event of the stream, ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The event (its seq is the stream seq).
    pub event: Event,
    /// Its `Nats-Msg-Id` (the next primary chains to the last one applied).
    pub msg_id: String,
    /// When the stream stored it, in Unix milliseconds.
    pub stored_ms: i64,
}

/// Where the consumer is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not connected.
    Idle,
    /// STREAM.INFO asked before following.
    Checking {
        request: RequestId,
        sent_at: Instant,
    },
    /// The stream is missing (or the check failed): ask again at `until`.
    Waiting { until: Instant },
    /// MSG.GET of the local log's last seq asked.
    Verifying {
        request: RequestId,
        seq: i64,
        sent_at: Instant,
    },
    /// CONSUMER.CREATE asked.
    Creating {
        request: RequestId,
        sent_at: Instant,
    },
    /// Messages flow.
    Following,
    /// Stopped for good: the stream and the local log disagree.
    Stopped,
}

/// What INFO and `/metrics` show of the consumer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedStatus {
    /// `idle`, `checking`, `waiting`, `verifying`, `creating`, `following`,
    /// `stopped`.
    pub state: &'static str,
    /// True while connected.
    pub connected: bool,
    /// The stream's last seq, as last seen.
    pub stream_last: i64,
    /// Consumers created after the first (gaps, stalls, reconnections).
    pub recreated: u64,
    /// Why it stopped, or the last error.
    pub last_error: Option<String>,
}

/// The follower's consumer and the client it reads through.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    stream: String,
    state: State,
    /// The next stream seq wanted (all before it were handed over or applied).
    next: i64,
    /// The local event at `next - 1`, to check against the stream at start.
    tip: Option<Event>,
    /// The deliver subject's stem; a generation number follows it.
    deliver_stem: String,
    generation: u64,
    sub: Option<Sid>,
    /// The current consumer's name, to delete it when replaced.
    name: Option<String>,
    last_consumer_seq: u64,
    last_activity: Instant,
    delivered: VecDeque<Delivered>,
    /// A flow-control request held until the reactor took what was delivered.
    flow_reply: Option<String>,
    /// The stream's last seq and when it was learnt.
    stream_last: i64,
    stream_last_at: Option<Instant>,
    /// A STREAM.INFO asked for the stream's end, not for the state machine.
    end_request: Option<(RequestId, Instant)>,
    next_info_at: Option<Instant>,
    recreated: u64,
    last_error: Option<String>,
    /// Set once when stopping: the reason, for the reactor to act on.
    fatal: Option<String>,
    /// Requests of others on this connection (a promotion reading durable
    /// handler offsets); their replies wait in it for them.
    side: SideRequests,
}

impl Consumer {
    /// A consumer over `client` that delivers `stream` from seq `next`; `tip` is
    /// the local event at `next - 1` (`None` when there is none or the log no
    /// longer holds it).
    pub fn new(client: Client, stream: &str, next: i64, tip: Option<Event>) -> Consumer {
        let inbox = client.inbox_prefix();
        let random = inbox.trim_start_matches("_INBOX.").trim_end_matches('.');
        let deliver_stem = format!("_FOLLOW.{random}");
        Consumer {
            client,
            stream: stream.to_string(),
            state: State::Idle,
            next,
            tip,
            deliver_stem,
            generation: 0,
            sub: None,
            name: None,
            last_consumer_seq: 0,
            last_activity: Instant::now(),
            delivered: VecDeque::new(),
            flow_reply: None,
            stream_last: 0,
            stream_last_at: None,
            end_request: None,
            next_info_at: None,
            recreated: 0,
            last_error: None,
            fatal: None,
            side: SideRequests::default(),
        }
    }

    /// Readiness of the client's socket: reads what came and hands it over at
    /// once, so that a flow-control request read with it is answered now, not
    /// after the tick applied and committed the messages before it; the server
    /// then keeps sending while the reactor applies.
    pub fn ready(&mut self, registry: &Registry, readable: bool, writable: bool, now: Instant) {
        self.client.ready(registry, readable, writable, now);
        self.process(now);
        self.client.flush(registry, now);
    }

    /// Writes what the client queued.
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        self.client.flush(registry, now);
    }

    /// Closes the connection.
    pub fn shutdown(&mut self, registry: &Registry) {
        self.client.shutdown(registry);
    }

    /// When `on_timer` next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let own = match &self.state {
            State::Checking { sent_at, .. }
            | State::Verifying { sent_at, .. }
            | State::Creating { sent_at, .. } => Some(*sent_at + API_TIMEOUT),
            State::Waiting { until } => Some(*until),
            State::Following => Some(self.last_activity + STALL_AFTER),
            State::Idle | State::Stopped => None,
        };
        let end = self.end_request.map(|(_, at)| at + API_TIMEOUT);
        [own, end, self.next_info_at, self.client.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due: the client's timers, answers that did not come, a
    /// stalled consumer, the periodic look at the stream's end.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        self.client.on_timer(registry, now);
        match self.state {
            State::Checking { sent_at, .. }
            | State::Verifying { sent_at, .. }
            | State::Creating { sent_at, .. }
                if now >= sent_at + API_TIMEOUT =>
            {
                self.retry_later("JetStream API request timed out", now);
            }
            State::Waiting { until } if now >= until => self.check_stream(now),
            State::Following if now >= self.last_activity + STALL_AFTER => {
                log::warn!(
                    "nats: follower: nothing from the stream for {STALL_AFTER:?}; a new consumer from seq {}",
                    self.next
                );
                self.create(now);
            }
            _ => {}
        }
        if self
            .end_request
            .is_some_and(|(_, at)| now >= at + API_TIMEOUT)
        {
            self.end_request = None;
        }
        if self.next_info_at.is_some_and(|t| now >= t) {
            self.next_info_at = None;
            self.ask_stream_end(now);
        }
    }

    /// Handles what the client reported.
    pub fn process(&mut self, now: Instant) {
        while let Some(event) = self.client.poll_event() {
            match event {
                NatsEvent::Connected { server, .. } => {
                    log::info!("nats: follower connected to {server}");
                    if self.state != State::Stopped {
                        self.check_stream(now);
                    }
                }
                NatsEvent::Disconnected { server, reason } => {
                    log::warn!("nats: follower: connection to {server} lost: {reason}");
                    self.last_error = Some(format!("connection to {server} lost: {reason}"));
                    self.end_request = None;
                    if self.state != State::Stopped {
                        self.drop_consumer();
                        self.state = State::Idle;
                    }
                }
                NatsEvent::ConnectFailed { server, reason, .. } => {
                    let text = format!("cannot connect to {server}: {reason}");
                    if self.last_error.as_deref() != Some(text.as_str()) {
                        log::warn!("nats: follower: {text} (retrying)");
                    }
                    self.last_error = Some(text);
                }
                NatsEvent::ServerError(text) => {
                    log::warn!("nats: follower: server error: {text}");
                    self.last_error = Some(format!("server error: {text}"));
                }
                NatsEvent::Reply {
                    id,
                    status,
                    payload,
                    ..
                } if self.side.waits_for(id) => self.side.keep(id, status, payload),
                NatsEvent::Reply {
                    id,
                    status,
                    payload,
                    ..
                } => self.answer(id, status.as_ref(), &payload, now),
                NatsEvent::Message {
                    sid,
                    subject: _,
                    reply,
                    status,
                    headers,
                    payload,
                } if Some(sid) == self.sub => {
                    self.message(reply, status, &headers, &payload, now);
                }
                NatsEvent::Message { .. } => {}
            }
        }
    }

    /// Up to `max` delivered events, in seq order.
    pub fn take(&mut self, max: usize) -> Vec<Delivered> {
        let n = self.delivered.len().min(max);
        let taken: Vec<Delivered> = self.delivered.drain(..n).collect();
        if self.delivered.len() < MAX_BUFFERED / 2
            && let Some(reply) = self.flow_reply.take()
        {
            self.answer_flow(&reply);
        }
        taken
    }

    /// True when delivered events wait for the reactor.
    pub fn has_delivered(&self) -> bool {
        !self.delivered.is_empty()
    }

    /// Starts again from seq `next` (the local log ends before it: an apply
    /// failed, or a tail was discarded); `tip` is the local event at `next - 1`.
    pub fn restart_from(&mut self, next: i64, tip: Option<Event>, now: Instant) {
        self.next = next;
        self.tip = tip;
        self.delivered.clear();
        self.fatal = None;
        if self.client.is_connected() {
            self.check_stream(now);
        } else {
            self.drop_consumer();
            self.state = State::Idle;
        }
    }

    /// Asks the stream's last seq now (promotion waits for it).
    pub fn ask_stream_end(&mut self, now: Instant) {
        if !self.client.is_connected() || self.end_request.is_some() {
            return;
        }
        let subject = jetstream::stream_info_subject(&self.stream);
        if let Ok(request) = self.client.request(&subject, &[], b"") {
            self.end_request = Some((request, now));
        }
    }

    /// The stream's last seq, when it was learnt after `since`.
    pub fn stream_end_since(&self, since: Instant) -> Option<i64> {
        self.stream_last_at
            .filter(|&at| at >= since)
            .map(|_| self.stream_last)
    }

    /// The connection lent for requests that are not the consumer's (durable
    /// handler offsets): they never enter its own accounting, and their replies
    /// wait in it for [`Side::take_replies`].
    pub fn side(&mut self) -> Side<'_> {
        Side::new(&mut self.client, &mut self.side)
    }

    /// The reason it stopped, once (the reactor acts on it).
    pub fn take_fatal(&mut self) -> Option<String> {
        self.fatal.take()
    }

    /// Stops for good, loudly: what it delivered does not fit the local log.
    pub fn halt(&mut self, why: &str) {
        self.stop(why);
    }

    /// Brings `status` up to date.
    pub fn status_into(&self, status: &mut FeedStatus) {
        status.state = match self.state {
            State::Idle => "idle",
            State::Checking { .. } => "checking",
            State::Waiting { .. } => "waiting",
            State::Verifying { .. } => "verifying",
            State::Creating { .. } => "creating",
            State::Following => "following",
            State::Stopped => "stopped",
        };
        status.connected = self.client.is_connected();
        status.stream_last = self.stream_last;
        status.recreated = self.recreated;
        if status.last_error != self.last_error {
            status.last_error = self.last_error.clone();
        }
    }

    fn check_stream(&mut self, now: Instant) {
        self.drop_consumer();
        let subject = jetstream::stream_info_subject(&self.stream);
        match self.client.request(&subject, &[], b"") {
            Ok(request) => {
                self.state = State::Checking {
                    request,
                    sent_at: now,
                }
            }
            Err(e) => self.retry_later(&format!("cannot ask for the stream: {e}"), now),
        }
    }

    fn answer(&mut self, id: RequestId, status: Option<&Status>, payload: &[u8], now: Instant) {
        if let Some((request, asked)) = self.end_request
            && request == id
        {
            self.end_request = None;
            if let Ok(info) = jetstream::parse_stream_info(status, payload) {
                // As of when it was asked: a promotion counts only answers to
                // questions asked after it began.
                self.learn_end(info.state.last_seq, asked);
            }
            if self.state == State::Following {
                self.next_info_at = Some(now + INFO_INTERVAL);
            }
            return;
        }
        match self.state.clone() {
            State::Checking { request, .. } if request == id => {
                match jetstream::parse_stream_info(status, payload) {
                    Ok(info) => {
                        self.learn_end(info.state.last_seq, now);
                        self.at_stream(info.state.first_seq, info.state.last_seq, now);
                    }
                    Err(e) if e.err_code() == Some(ERR_STREAM_NOT_FOUND) => {
                        if self.next > 1 {
                            self.stop(&format!(
                                "stream '{}' does not exist, but the local log holds events up \
                                 to seq {}",
                                self.stream,
                                self.next - 1
                            ));
                        } else {
                            if self.last_error.as_deref() != Some("stream missing") {
                                log::info!(
                                    "nats: follower: stream '{}' does not exist yet; waiting for the primary to create it",
                                    self.stream
                                );
                            }
                            self.last_error = Some("stream missing".into());
                            self.state = State::Waiting {
                                until: now + RETRY_WAIT,
                            };
                        }
                    }
                    Err(e) => self.retry_later(&format!("stream info: {e}"), now),
                }
            }
            State::Verifying { request, seq, .. } if request == id => {
                match jetstream::parse_msg_get(status, payload) {
                    Ok(msg) => {
                        let theirs = Event::from_json(&msg.data);
                        match (&theirs, &self.tip) {
                            (Ok(e), Some(ours)) if e == ours => self.create(now),
                            (Ok(_), None) => self.create(now),
                            (theirs, ours) => self.stop(&format!(
                                "the local log is not a prefix of stream '{}': at seq {seq} \
                                 the stream holds {} but the local log {}",
                                self.stream,
                                theirs
                                    .as_ref()
                                    .map_or_else(|e| e.to_string(), Event::to_json),
                                ours.as_ref().map_or("nothing".into(), Event::to_json),
                            )),
                        }
                    }
                    Err(e) if retryable(&e) => {
                        self.retry_later(&format!("msg get: {e}"), now);
                    }
                    Err(e) => self.stop(&format!("cannot read stream message {seq}: {e}")),
                }
            }
            State::Creating { request, .. } if request == id => {
                match jetstream::parse_consumer_create(status, payload) {
                    Ok(name) => {
                        log::debug!(
                            "nats: follower: consumer {name} delivers from seq {}",
                            self.next
                        );
                        self.name = Some(name);
                        self.last_activity = now;
                        self.last_error = None;
                        self.state = State::Following;
                        self.next_info_at = Some(now + INFO_INTERVAL);
                    }
                    Err(e) => self.retry_later(&format!("consumer create: {e}"), now),
                }
            }
            _ => {}
        }
    }

    /// The stream runs `first..=last`: follow it, after checking that the local
    /// log fits it.
    fn at_stream(&mut self, first: u64, last: u64, now: Instant) {
        let (first, last) = (to_i64(first), to_i64(last));
        let local = self.next - 1;
        if local > last {
            self.stop(&format!(
                "the local log ends at seq {local} but stream '{}' at {last}: the local log \
                 holds events the stream does not",
                self.stream
            ));
        } else if last >= self.next && first > self.next {
            self.stop(&format!(
                "stream '{}' starts at seq {first} but this database ends at {local}: the \
                 events in between are gone from the stream; start from a snapshot \
                 (`userbus backup` on a node that has them) instead of this database",
                self.stream
            ));
        } else if local > 0 && first <= local {
            let subject = jetstream::stream_msg_get_subject(&self.stream);
            let body = jetstream::msg_get_request(local as u64);
            match self.client.request(&subject, &[], &body) {
                Ok(request) => {
                    self.state = State::Verifying {
                        request,
                        seq: local,
                        sent_at: now,
                    }
                }
                Err(e) => self.retry_later(&format!("cannot read the stream: {e}"), now),
            }
        } else {
            self.create(now);
        }
    }

    /// A new consumer from `next`, on a new deliver subject.
    fn create(&mut self, now: Instant) {
        if self.generation > 0 {
            self.recreated += 1;
        }
        self.drop_consumer();
        self.generation += 1;
        let deliver = format!("{}.{}", self.deliver_stem, self.generation);
        match self.client.subscribe(&deliver) {
            Ok(sid) => self.sub = Some(sid),
            Err(e) => {
                self.stop(&format!("cannot subscribe to {deliver}: {e}"));
                return;
            }
        }
        self.last_consumer_seq = 0;
        let subject = jetstream::consumer_create_subject(&self.stream);
        let body = jetstream::ordered_consumer_request(
            &self.stream,
            &deliver,
            self.next.max(1) as u64,
            HEARTBEAT,
        );
        match self.client.request(&subject, &[], &body) {
            Ok(request) => {
                self.state = State::Creating {
                    request,
                    sent_at: now,
                }
            }
            Err(e) => self.retry_later(&format!("cannot create a consumer: {e}"), now),
        }
    }

    /// Ends the current consumer's subscription and deletes it on the server (its
    /// answer is not waited for).
    fn drop_consumer(&mut self) {
        if let Some(sid) = self.sub.take() {
            self.client.unsubscribe(sid);
        }
        self.flow_reply = None;
        if let Some(name) = self.name.take()
            && self.client.is_connected()
        {
            let subject = jetstream::consumer_delete_subject(&self.stream, &name);
            let _ = self.client.request(&subject, &[], b"");
        }
    }

    fn message(
        &mut self,
        reply: Option<String>,
        status: Option<Status>,
        headers: &Headers,
        payload: &[u8],
        now: Instant,
    ) {
        if self.state != State::Following {
            return;
        }
        self.last_activity = now;
        if let Some(status) = status {
            if status.code != Status::CONTROL {
                log::debug!("nats: follower: consumer status {status}; a new consumer");
                self.create(now);
                return;
            }
            if let Some(reply) = reply {
                // A flow-control request: answered once the reactor keeps up.
                if self.delivered.len() < MAX_BUFFERED {
                    self.answer_flow(&reply);
                } else {
                    self.flow_reply = Some(reply);
                }
                return;
            }
            if let Some(stalled) = headers.get(CONSUMER_STALLED) {
                let stalled = stalled.to_string();
                self.answer_flow(&stalled);
            }
            let last = headers
                .get(LAST_CONSUMER)
                .and_then(|v| v.parse::<u64>().ok());
            if last.is_some_and(|l| l > self.last_consumer_seq) {
                log::debug!(
                    "nats: follower: heartbeat names consumer seq {:?} after {}; a new consumer",
                    last,
                    self.last_consumer_seq
                );
                self.create(now);
            }
            return;
        }
        let Some(ack) = reply.as_deref().and_then(jetstream::parse_ack_subject) else {
            return;
        };
        if ack.consumer_seq != self.last_consumer_seq + 1 {
            log::debug!(
                "nats: follower: consumer seq {} after {}; a new consumer from seq {}",
                ack.consumer_seq,
                self.last_consumer_seq,
                self.next
            );
            self.create(now);
            return;
        }
        self.last_consumer_seq = ack.consumer_seq;
        let seq = to_i64(ack.stream_seq);
        if seq < self.next {
            return;
        }
        if seq > self.next {
            self.stop(&format!(
                "stream '{}' has no message {} (the next is {seq}): it was removed",
                self.stream, self.next
            ));
            return;
        }
        let event = match Event::from_json(payload) {
            Ok(e) if e.seq == seq => e,
            Ok(e) => {
                self.stop(&format!(
                    "stream message {seq} carries event {}: the stream seq is not the event seq",
                    e.seq
                ));
                return;
            }
            Err(e) => {
                self.stop(&format!("stream message {seq}: {e}"));
                return;
            }
        };
        self.next = seq + 1;
        self.learn_end(ack.stream_seq + ack.pending, now);
        self.delivered.push_back(Delivered {
            event,
            msg_id: headers.get(jetstream::MSG_ID).unwrap_or("").to_string(),
            stored_ms: ack.stored_ns / 1_000_000,
        });
    }

    fn answer_flow(&mut self, reply: &str) {
        let _ = self.client.publish(reply, None, &[], b"");
    }

    fn learn_end(&mut self, last: u64, at: Instant) {
        self.stream_last = to_i64(last);
        self.stream_last_at = Some(at);
    }

    fn retry_later(&mut self, why: &str, now: Instant) {
        if self.state == State::Stopped {
            return;
        }
        log::debug!("nats: follower: {why}; again in {RETRY_WAIT:?}");
        self.last_error = Some(why.to_string());
        self.drop_consumer();
        self.state = State::Waiting {
            until: now + RETRY_WAIT,
        };
    }

    fn stop(&mut self, why: &str) {
        log::error!("nats: follower stopped: {why}");
        self.drop_consumer();
        self.last_error = Some(why.to_string());
        self.fatal = Some(why.to_string());
        self.delivered.clear();
        self.state = State::Stopped;
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// No leader yet, a status in place of an answer: worth a retry.
fn retryable(e: &JsError) -> bool {
    match e {
        JsError::NoResponders | JsError::Status(_) => true,
        JsError::Api(a) => a.code == 503,
        _ => false,
    }
}
