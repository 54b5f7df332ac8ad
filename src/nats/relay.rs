//! The JetStream relay: every committed event, in seq order, into one JetStream
//! stream, exactly once, so that the stream's sequence is the event's seq.
//!
//! # The exactly-once argument
//! Each event `seq` is published on `<prefix>.<kind>` with three headers:
//! `Nats-Msg-Id: <writer>-<seq>`, `Nats-Expected-Last-Sequence: <seq-1>` and, when
//! the previous message is known to be ours, `Nats-Expected-Last-Msg-Id:
//! <writer>-<seq-1>`. JetStream stores a message only when the stream's last
//! sequence is `seq-1` (so stream seq == event seq: no gap, no double) and its last
//! message is our previous one (so another writer's message never sits between
//! two of ours). A publish whose fate is unknown (timeout, lost connection) is sent
//! again with the same id: within the duplicate window JetStream answers
//! `duplicate`; after it, the expected-sequence check refuses it, and the relay
//! reads the stream's last message to see whether it is ours. Only events that
//! committed locally are ever published (the relay reads the committed log), and
//! the confirmed position is kept in SQLite, so a restart resumes where the stream
//! is: a stream ahead of the stored position is checked by its last message, which
//! the chain of expected ids ties to every message before it.
//!
//! # States
//! ```text
//! Idle ──connected──▶ Checking (STREAM.INFO) ──missing──▶ Creating (STREAM.CREATE)
//!                          │ found, compatible                │ created
//!                          ▼                                  ▼
//!                      Reconciling (stream last seq vs confirmed; MSG.GET of the last)
//!                          │ ours / equal
//!                          ▼
//!                      Publishing (a window of publishes in flight, acks in order)
//!  refusal ──▶ Reconciling        503 / timeout ──▶ Backoff ──▶ Reconciling
//!  gap, foreign writer, incompatible stream ──▶ Stopped (loud; local service goes on)
//! ```
//!
//! # A new stream leader
//! Publishes and API requests sent while the stream has no leader get no answer
//! at all: only the leader answers. The relay subscribes to the advisory a newly
//! elected leader publishes and, on it, asks again at once (reconciling, which
//! resends the window from the stream's end) instead of waiting out
//! [`ACK_TIMEOUT`]; the ids make a resend of a stored message a duplicate.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use mio::Registry;

use super::client::Client;
use super::event::{Event as NatsEvent, RequestId, Sid};
use super::headers::Status;
use super::jetstream::{
    self, ERR_CLUSTER_NOT_AVAILABLE, ERR_INSUFFICIENT_RESOURCES, ERR_NO_MESSAGE_FOUND,
    ERR_SEQUENCE_NOT_MATCH, ERR_STREAM_NOT_FOUND, ERR_WRONG_LAST_MSG_ID, ERR_WRONG_LAST_SEQUENCE,
    JsError, StreamSpec,
};
use super::side::{Side, SideRequests};
use crate::events::Event;

/// Publishes in flight at most (acks outstanding).
pub const MAX_IN_FLIGHT: usize = 256;
/// How long a publish or an API request may wait for its answer.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait after JetStream had no leader or no resources; doubles to the max.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What the relay publishes to and as whom.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// The stream's name.
    pub stream: String,
    /// Subjects are `<prefix>.<kind>`; the stream holds `<prefix>.>`.
    pub subject_prefix: String,
    /// Replicas the stream is created with (and must have at least).
    pub replicas: u32,
    /// This database's writer id, the first part of every `Nats-Msg-Id`.
    pub writer: String,
}

/// One publish waiting for its ack.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    seq: i64,
    request: RequestId,
    sent_at: Instant,
}

/// Where the relay is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not connected.
    Idle,
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
    /// STREAM.INFO asked to find where the stream is against `confirmed`.
    Reconciling {
        request: RequestId,
        sent_at: Instant,
    },
    /// MSG.GET of the stream's last message `seq` asked.
    Probing {
        request: RequestId,
        seq: i64,
        sent_at: Instant,
    },
    /// Publishing from `confirmed + 1`.
    Publishing,
    /// Waiting before reconciling again (no leader, no resources, a timeout).
    Backoff { until: Instant },
    /// Stopped for good: a gap, another writer, an incompatible stream.
    Stopped,
}

/// What INFO and `/metrics` show of the relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// The server connected to, if any.
    pub server: Option<String>,
    /// The stream.
    pub stream: String,
    /// This database's writer id (the first part of every `Nats-Msg-Id`).
    pub writer: String,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// The last seq the stream is known to hold.
    pub confirmed: i64,
    /// `idle`, `checking`, `creating`, `reconciling`, `publishing`, `backoff`,
    /// `stopped`.
    pub state: &'static str,
    /// Connections after the first.
    pub reconnects: u64,
    /// True while connected.
    pub connected: bool,
    /// The last error, for an operator.
    pub last_error: Option<String>,
    /// Events committed locally and not yet confirmed by the stream.
    pub lag_events: i64,
    /// Since when the stream has been behind the local log.
    pub behind_since: Option<Instant>,
    /// Messages stored (acks that were not duplicates).
    pub published: u64,
    /// Publishes sent again (after a timeout, a lost connection, no leader).
    pub retries: u64,
}

/// The relay and the client it publishes through.
#[derive(Debug)]
pub struct Relay {
    client: Client,
    opts: RelayOptions,
    spec: StreamSpec,
    state: State,
    /// The last seq the stream is known to hold (all of `1..=confirmed` ours or
    /// accepted as the stream's history).
    confirmed: i64,
    /// Whether the next publish may name the previous message's id: false right
    /// after a server forgot its last id (see `reconcile`).
    chain_known: bool,
    window: VecDeque<InFlight>,
    /// The server of the current connection.
    connected_to: Option<String>,
    /// The last connection failure logged, so that retries do not repeat it.
    reported: Option<String>,
    connect_failures: u64,
    retry_wait: Duration,
    last_error: Option<String>,
    published: u64,
    retries: u64,
    /// Publish-to-ack times of the acks since the last `drain_ack_times`.
    ack_times: Vec<Duration>,
    /// Reused for each message's subject.
    subject: String,
    /// Reused for each event's JSON.
    payload: Vec<u8>,
    /// Reused for each message's header values.
    header_values: String,
    /// The stream's message at a seq this writer did not publish but accepts as
    /// its history (a promoted follower's last applied message): its seq and id,
    /// which the next publish chains to.
    previous: Option<(i64, String)>,
    /// Stopped because another writer's message holds the next seq (see
    /// [`Relay::foreign_writer`]).
    foreign: bool,
    /// Requests of others on this connection (durable handler offsets), kept
    /// out of the publish window; their replies wait in it for them.
    side: SideRequests,
    /// The subscription to the stream's leader-elected advisory (`None` when
    /// the stream's name makes no valid subject).
    leader_elected: Option<Sid>,
}

impl Relay {
    /// A relay over `client` that resumes after `confirmed`.
    pub fn new(mut client: Client, opts: RelayOptions, confirmed: i64) -> Relay {
        let subjects = format!("{}.>", opts.subject_prefix);
        let spec = StreamSpec::new(&opts.stream, &[subjects.as_str()], opts.replicas);
        let leader_elected = client
            .subscribe(&jetstream::stream_leader_elected_subject(&opts.stream))
            .ok();
        Relay {
            client,
            opts,
            spec,
            state: State::Idle,
            confirmed,
            chain_known: true,
            window: VecDeque::new(),
            connected_to: None,
            reported: None,
            connect_failures: 0,
            retry_wait: RETRY_MIN,
            last_error: None,
            published: 0,
            retries: 0,
            ack_times: Vec::new(),
            subject: String::new(),
            payload: Vec::new(),
            header_values: String::new(),
            previous: None,
            foreign: false,
            side: SideRequests::default(),
            leader_elected,
        }
    }

    /// The stream's message at `seq` (the last one before this writer's first)
    /// has id `id`, another writer's: the publish of `seq + 1` names it as the
    /// expected last id, and a stream ending there counts as ours.
    pub fn set_previous(&mut self, seq: i64, id: String) {
        self.previous = Some((seq, id));
    }

    /// True when the relay stopped because the stream holds another writer's
    /// event where ours was due: another userbus node writes the stream now, and
    /// this one must not (fencing; see `reactor::follow`). A message that is no
    /// event of that seq stops the relay without this.
    pub fn foreign_writer(&self) -> bool {
        self.state == State::Stopped && self.foreign
    }

    /// The last seq the stream is known to hold.
    pub fn confirmed(&self) -> i64 {
        self.confirmed
    }

    /// True when the relay stopped for good (a gap, another writer, an
    /// incompatible stream): nothing more will be confirmed.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// True once the relay reached its stream and publishes (or waits for
    /// events to publish).
    pub fn is_publishing(&self) -> bool {
        self.state == State::Publishing
    }

    /// The connection lent for requests that are not the relay's (durable
    /// handler offsets): they never enter its own accounting, and their replies
    /// wait in it for [`Side::take_replies`].
    pub fn side(&mut self) -> Side<'_> {
        Side::new(&mut self.client, &mut self.side)
    }

    /// Readiness of the client's socket.
    pub fn ready(&mut self, registry: &Registry, readable: bool, writable: bool, now: Instant) {
        self.client.ready(registry, readable, writable, now);
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
            | State::Creating { sent_at, .. }
            | State::Reconciling { sent_at, .. }
            | State::Probing { sent_at, .. } => Some(*sent_at + ACK_TIMEOUT),
            State::Publishing => self.window.front().map(|f| f.sent_at + ACK_TIMEOUT),
            State::Backoff { until } => Some(*until),
            State::Idle | State::Stopped => None,
        };
        [own, self.client.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due: the client's timers, answers that did not come, the end
    /// of a back-off.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        self.client.on_timer(registry, now);
        let overdue = |sent_at: Instant| now >= sent_at + ACK_TIMEOUT;
        match self.state {
            State::Checking { sent_at, .. }
            | State::Creating { sent_at, .. }
            | State::Reconciling { sent_at, .. }
            | State::Probing { sent_at, .. }
                if overdue(sent_at) =>
            {
                self.fail_soft("JetStream API request timed out", now);
            }
            State::Publishing if self.window.front().is_some_and(|f| overdue(f.sent_at)) => {
                self.fail_soft("publish ack timed out", now);
            }
            State::Backoff { until } if now >= until => self.reconcile(now),
            _ => {}
        }
    }

    /// Handles what the client reported: connections, acks, API answers.
    pub fn process(&mut self, now: Instant) {
        while let Some(event) = self.client.poll_event() {
            match event {
                NatsEvent::Connected { server, .. } => {
                    self.connected_to = Some(server);
                    self.reported = None;
                    if self.state != State::Stopped {
                        self.window.clear();
                        self.check_stream(now);
                    }
                }
                NatsEvent::Disconnected { server, reason } => {
                    log::warn!("nats: connection to {server} lost: {reason}");
                    self.connected_to = None;
                    self.last_error = Some(format!("connection to {server} lost: {reason}"));
                    if self.state != State::Stopped {
                        self.window.clear();
                        self.state = State::Idle;
                    }
                }
                NatsEvent::ConnectFailed {
                    server,
                    reason,
                    retry_in,
                } => {
                    self.connect_failures += 1;
                    let text = format!("cannot connect to {server}: {reason}");
                    // One line per distinct failure, not one per retry.
                    if self.reported.as_deref() != Some(text.as_str()) {
                        log::warn!("nats: {text} (retrying, the next in {retry_in:?})");
                        self.reported = Some(text.clone());
                    } else {
                        log::debug!("nats: {text}");
                    }
                    self.last_error = Some(text);
                }
                NatsEvent::ServerError(text) => {
                    // A refused connection (bad credentials) is reported by the
                    // ConnectFailed that follows; an error the server keeps the
                    // connection after (a permissions violation) is reported here.
                    if self.client.is_connected() {
                        log::warn!("nats: server error: {text}");
                    }
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
                NatsEvent::Message { sid, .. } if Some(sid) == self.leader_elected => {
                    self.on_leader_elected(now);
                }
                NatsEvent::Message { .. } => {}
            }
        }
    }

    /// The next seq to publish and how many the window takes now; `None` when
    /// the relay is not publishing.
    pub fn wants(&self) -> Option<(i64, usize)> {
        if self.state != State::Publishing {
            return None;
        }
        let room = MAX_IN_FLIGHT - self.window.len();
        let next = self.window.back().map_or(self.confirmed, |f| f.seq) + 1;
        (room > 0).then_some((next, room))
    }

    /// Publishes committed events, which must start at `wants().0` and follow
    /// each other; a gap in them (a trimmed log) stops the relay.
    pub fn publish(&mut self, events: &[Event], now: Instant) {
        for event in events {
            let Some((next, _)) = self.wants() else {
                return;
            };
            if event.seq != next {
                self.stop(&format!(
                    "the local event log has no event {next} (it resumes at {}): the stream \
                     would get a gap",
                    event.seq
                ));
                return;
            }
            self.subject.clear();
            self.subject.push_str(&self.opts.subject_prefix);
            self.subject.push('.');
            self.subject.push_str(event.kind.as_str());
            self.payload.clear();
            event.write_json(&mut self.payload);
            // The three header values back to back in one reused buffer: this id,
            // the expected last sequence, the expected last id.
            let values = &mut self.header_values;
            values.clear();
            let _ = write!(values, "{}-{}", self.opts.writer, event.seq);
            let id_end = values.len();
            let _ = write!(values, "{}", event.seq - 1);
            let seq_end = values.len();
            match &self.previous {
                Some((seq, id)) if *seq == event.seq - 1 => values.push_str(id),
                _ => {
                    let _ = write!(values, "{}-{}", self.opts.writer, event.seq - 1);
                }
            }
            let values = &self.header_values;
            let headers = [
                (jetstream::MSG_ID, &values[..id_end]),
                (jetstream::EXPECTED_LAST_SEQUENCE, &values[id_end..seq_end]),
                (jetstream::EXPECTED_LAST_MSG_ID, &values[seq_end..]),
            ];
            let chained = event.seq > 1 && self.chain_known;
            let headers = if chained { &headers[..] } else { &headers[..2] };
            // Once this one is stored, the server knows our last id again.
            self.chain_known = true;
            match self.client.request(&self.subject, headers, &self.payload) {
                Ok(request) => self.window.push_back(InFlight {
                    seq: event.seq,
                    request,
                    sent_at: now,
                }),
                Err(e) => {
                    // Over max_payload, or the output buffer is full: try again later.
                    self.fail_soft(&format!("cannot publish event {}: {e}", event.seq), now);
                    return;
                }
            }
        }
    }

    /// Brings `status` up to date; strings are copied only when they changed (it
    /// runs every tick).
    pub fn status_into(&self, status: &mut RelayStatus) {
        if status.server != self.connected_to {
            status.server = self.connected_to.clone();
        }
        if status.stream != self.opts.stream {
            status.stream = self.opts.stream.clone();
        }
        if status.writer != self.opts.writer {
            status.writer = self.opts.writer.clone();
        }
        status.connect_failures = self.connect_failures;
        if status.last_error != self.last_error {
            status.last_error = self.last_error.clone();
        }
        status.confirmed = self.confirmed;
        status.state = match self.state {
            State::Idle => "idle",
            State::Checking { .. } => "checking",
            State::Creating { .. } => "creating",
            State::Reconciling { .. } | State::Probing { .. } => "reconciling",
            State::Publishing => "publishing",
            State::Backoff { .. } => "backoff",
            State::Stopped => "stopped",
        };
        status.connected = self.client.is_connected();
        status.reconnects = self.client.reconnects();
        status.published = self.published;
        status.retries = self.retries;
    }

    /// Hands each publish-to-ack time since the last call to `f`.
    pub fn drain_ack_times(&mut self, mut f: impl FnMut(Duration)) {
        for t in self.ack_times.drain(..) {
            f(t);
        }
    }

    /// The stream holds our events past `last`, the newest this database has
    /// (it was restored from an older copy): new events would get seqs the
    /// stream already gave to others, so the relay stops.
    pub fn ahead_of(&mut self, last: i64) {
        if self.state != State::Stopped {
            self.stop(&format!(
                "stream '{}' holds this writer's events up to seq {} but the local log ends at {last} (a database restored from an older copy?)",
                self.opts.stream, self.confirmed
            ));
        }
    }

    /// The local log lacks event `from` (trimmed before the relay got to it):
    /// the stream cannot have it, so the relay stops rather than skip it.
    pub fn missing(&mut self, from: i64) {
        self.stop(&format!(
            "the local event log no longer holds event {from}: the stream would get a gap"
        ));
    }

    fn check_stream(&mut self, now: Instant) {
        let subject = jetstream::stream_info_subject(&self.opts.stream);
        match self.client.request(&subject, &[], b"") {
            Ok(request) => {
                self.state = State::Checking {
                    request,
                    sent_at: now,
                }
            }
            Err(e) => self.fail_soft(&format!("cannot ask for the stream: {e}"), now),
        }
    }

    /// Asks where the stream is, to publish from there.
    fn reconcile(&mut self, now: Instant) {
        self.window.clear();
        if !self.client.is_connected() {
            self.state = State::Idle;
            return;
        }
        let subject = jetstream::stream_info_subject(&self.opts.stream);
        match self.client.request(&subject, &[], b"") {
            Ok(request) => {
                self.state = State::Reconciling {
                    request,
                    sent_at: now,
                }
            }
            Err(e) => self.fail_soft(&format!("cannot ask for the stream: {e}"), now),
        }
    }

    /// The stream has a new leader: what waits for an answer the old one (or
    /// none) was to give is asked again now. Acks of publishes stored before
    /// the election may still come; reconciling reads where the stream is
    /// either way.
    fn on_leader_elected(&mut self, now: Instant) {
        match self.state {
            State::Publishing if !self.window.is_empty() => {
                log::debug!(
                    "nats: stream '{}' has a new leader; resending {} publish(es) from seq {}",
                    self.opts.stream,
                    self.window.len(),
                    self.confirmed + 1
                );
                self.retries += self.window.len() as u64;
                self.reconcile(now);
            }
            State::Reconciling { .. } | State::Probing { .. } | State::Backoff { .. } => {
                log::debug!(
                    "nats: stream '{}' has a new leader; reconciling now",
                    self.opts.stream
                );
                self.reconcile(now);
            }
            State::Checking { .. } => self.check_stream(now),
            State::Idle | State::Creating { .. } | State::Publishing | State::Stopped => {}
        }
    }

    fn answer(&mut self, id: RequestId, status: Option<&Status>, payload: &[u8], now: Instant) {
        match self.state.clone() {
            State::Checking { request, .. } if request == id => {
                match jetstream::parse_stream_info(status, payload) {
                    Ok(info) => match self.spec.check(&info.config) {
                        Ok(()) => self.at_stream_end(info.state.last_seq, now),
                        Err(m) => self.stop(&format!(
                            "stream '{}' is not compatible: {m}",
                            self.opts.stream
                        )),
                    },
                    Err(e) if e.err_code() == Some(ERR_STREAM_NOT_FOUND) => {
                        let subject = jetstream::stream_create_subject(&self.opts.stream);
                        let body = self.spec.create_request();
                        match self.client.request(&subject, &[], &body) {
                            Ok(request) => {
                                self.state = State::Creating {
                                    request,
                                    sent_at: now,
                                }
                            }
                            Err(e) => {
                                self.fail_soft(&format!("cannot create the stream: {e}"), now)
                            }
                        }
                    }
                    Err(e) if retryable(&e) => self.fail_soft(&format!("stream info: {e}"), now),
                    Err(e) => self.stop(&format!("stream info: {e}")),
                }
            }
            State::Creating { request, .. } if request == id => {
                match jetstream::parse_stream_info(status, payload) {
                    Ok(info) => {
                        log::info!(
                            "nats: created stream '{}' (subjects {}.>, {} replica(s))",
                            self.opts.stream,
                            self.opts.subject_prefix,
                            self.opts.replicas
                        );
                        self.at_stream_end(info.state.last_seq, now);
                    }
                    Err(e) if retryable(&e) => self.fail_soft(&format!("stream create: {e}"), now),
                    Err(e) => {
                        self.stop(&format!("cannot create stream '{}': {e}", self.opts.stream))
                    }
                }
            }
            State::Reconciling { request, .. } if request == id => {
                match jetstream::parse_stream_info(status, payload) {
                    Ok(info) => self.at_stream_end(info.state.last_seq, now),
                    Err(e) if retryable(&e) => self.fail_soft(&format!("stream info: {e}"), now),
                    Err(e) => self.stop(&format!("stream info: {e}")),
                }
            }
            State::Probing { request, seq, .. } if request == id => {
                let accepted = self
                    .previous
                    .as_ref()
                    .filter(|(at, _)| *at == seq)
                    .map(|(_, id)| id.clone());
                match jetstream::parse_msg_get(status, payload) {
                    Ok(msg)
                        if msg.msg_id() == Some(msg_id(&self.opts.writer, seq).as_str())
                            || (accepted.is_some() && msg.msg_id() == accepted.as_deref()) =>
                    {
                        // Ours; the chain of expected ids makes every message
                        // between the confirmed one and it ours too.
                        self.confirmed = seq;
                        self.chain_known = true;
                        self.resume();
                    }
                    Ok(msg) => {
                        self.stop(&format!(
                            "stream '{}' holds a message of another writer at seq {seq} \
                             (Nats-Msg-Id {:?}); this database's writer is {}",
                            self.opts.stream,
                            msg.msg_id().unwrap_or(""),
                            self.opts.writer
                        ));
                        // Another userbus node's event (a promoted follower): this
                        // node is fenced. Anything else in the stream is no
                        // writer to follow: the relay just stops.
                        self.foreign = Event::from_json(&msg.data).is_ok_and(|e| e.seq == seq);
                    }
                    Err(e) if retryable(&e) => self.fail_soft(&format!("msg get: {e}"), now),
                    Err(e) => self.stop(&format!("cannot read stream message {seq}: {e}")),
                }
            }
            State::Publishing => self.ack(id, status, payload, now),
            // An answer to something no longer waited for (after a timeout or a
            // reconnect): the state it would change has moved on.
            _ => {}
        }
    }

    /// The stream's last seq is `last`: publish from the confirmed position, or
    /// check the stream's tail when it is ahead, or stop when it is behind.
    fn at_stream_end(&mut self, last: u64, now: Instant) {
        let last = i64::try_from(last).unwrap_or(i64::MAX);
        if last == self.confirmed {
            self.resume();
        } else if last > self.confirmed {
            let subject = jetstream::stream_msg_get_subject(&self.opts.stream);
            let body = jetstream::msg_get_request(last as u64);
            match self.client.request(&subject, &[], &body) {
                Ok(request) => {
                    self.state = State::Probing {
                        request,
                        seq: last,
                        sent_at: now,
                    }
                }
                Err(e) => self.fail_soft(&format!("cannot read the stream's tail: {e}"), now),
            }
        } else {
            self.stop(&format!(
                "stream '{}' ends at seq {last} but held seq {} already: messages were \
                 removed from it; the relay will not publish a gap",
                self.opts.stream, self.confirmed
            ));
        }
    }

    fn resume(&mut self) {
        self.window.clear();
        self.retry_wait = RETRY_MIN;
        if self.state != State::Publishing {
            log::info!(
                "nats: publishing to stream '{}' after seq {}",
                self.opts.stream,
                self.confirmed
            );
        }
        self.state = State::Publishing;
    }

    fn ack(&mut self, id: RequestId, status: Option<&Status>, payload: &[u8], now: Instant) {
        let Some(pos) = self.window.iter().position(|f| f.request == id) else {
            return;
        };
        let seq = self.window[pos].seq;
        match jetstream::parse_pub_ack(status, payload) {
            Ok(ack) if ack.seq == seq as u64 => {
                if !ack.duplicate {
                    self.published += 1;
                }
                // Acks come in publish order; one for a later publish confirms the
                // earlier ones as well (the stream stored them in order).
                for f in self.window.drain(..=pos) {
                    self.ack_times
                        .push(now.saturating_duration_since(f.sent_at));
                }
                self.confirmed = seq;
                self.chain_known = true;
                self.last_error = None;
                self.retry_wait = RETRY_MIN;
            }
            Ok(ack) => self.stop(&format!(
                "stream '{}' stored event {seq} at seq {} (duplicate: {}): another writer \
                 or a gap",
                self.opts.stream, ack.seq, ack.duplicate
            )),
            Err(e) => match e.err_code() {
                Some(ERR_WRONG_LAST_SEQUENCE | ERR_WRONG_LAST_MSG_ID | ERR_SEQUENCE_NOT_MATCH) => {
                    // Nothing later in the window can be trusted: find out where the
                    // stream is and go on from there.
                    if e.err_code() == Some(ERR_WRONG_LAST_MSG_ID)
                        && matches!(&e, JsError::Api(a) if a.description.trim_end().ends_with(':'))
                    {
                        // The server forgot its last id (a restart after the
                        // duplicate window): the next publish checks the
                        // sequence alone, once the tail is confirmed ours.
                        self.chain_known = false;
                    }
                    log::debug!("nats: publish of event {seq} refused ({e}); reconciling");
                    self.retries += self.window.len() as u64;
                    self.reconcile(now);
                }
                _ if retryable(&e) => {
                    self.fail_soft(&format!("publish of event {seq}: {e}"), now);
                }
                Some(ERR_NO_MESSAGE_FOUND) | Some(_) | None => {
                    self.stop(&format!("publish of event {seq} refused: {e}"));
                }
            },
        }
    }

    /// A failure worth retrying: back off, then reconcile.
    fn fail_soft(&mut self, why: &str, now: Instant) {
        if self.state == State::Stopped {
            return;
        }
        log::debug!("nats: {why}; retrying in {:?}", self.retry_wait);
        self.last_error = Some(why.to_string());
        self.retries += self.window.len() as u64;
        self.window.clear();
        self.state = State::Backoff {
            until: now + self.retry_wait,
        };
        self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
    }

    /// Stops for good, loudly.
    fn stop(&mut self, why: &str) {
        log::error!("nats: relay stopped: {why}; local service goes on");
        self.last_error = Some(why.to_string());
        self.window.clear();
        self.state = State::Stopped;
    }
}

/// `<writer>-<seq>`.
pub fn msg_id(writer: &str, seq: i64) -> String {
    format!("{writer}-{seq}")
}

/// No leader yet, no resources, a status in place of an answer: worth a retry.
fn retryable(e: &JsError) -> bool {
    match e {
        JsError::NoResponders | JsError::Status(_) => true,
        JsError::Api(a) => {
            matches!(
                a.err_code,
                ERR_CLUSTER_NOT_AVAILABLE | ERR_INSUFFICIENT_RESOURCES
            ) || a.code == 503
        }
        JsError::InvalidResponse(_) => false,
    }
}
