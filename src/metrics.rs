//! Counters, gauges and histograms the server keeps about itself, for INFO and for
//! `GET /metrics` (Prometheus text exposition format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use crate::events::PubSub;
use crate::store::{Counts, GroupInfo, StorageErrorKind};

/// A histogram with fixed upper bounds, as Prometheus exposes them.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending; `+Inf` is implied).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Bucket bounds for durations, in seconds.
const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Bucket bounds for publish-to-ack times of the JetStream relay: finer in the
/// millisecond range where a local or LAN JetStream answers.
const ACK_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0, 5.0,
];
/// Bucket bounds for requests per commit.
const BATCH: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// What `--durability replicated` counts: writes held for JetStream's ack.
#[derive(Debug, Clone)]
pub struct ReplicationStats {
    /// Ticks whose write replies waited for JetStream.
    pub held_ticks: u64,
    /// Such ticks waiting now.
    pub waiting_ticks: usize,
    /// Write replies that became `-NOREPLICAS` (or an HTTP 503).
    pub noreplicas: u64,
    /// Commit-to-release times of held ticks, seconds.
    pub wait_seconds: Histogram,
}

impl Default for ReplicationStats {
    fn default() -> Self {
        ReplicationStats {
            held_ticks: 0,
            waiting_ticks: 0,
            noreplicas: 0,
            wait_seconds: Histogram::new(ACK_SECONDS),
        }
    }
}

/// The server's counters. Plain integers: one thread owns them.
#[derive(Debug, Clone)]
pub struct Stats {
    /// When the server started.
    pub started: Instant,
    /// The RESP port actually bound.
    pub tcp_port: u16,
    /// Connections open now.
    pub connected_clients: usize,
    /// Connections accepted since start.
    pub connections_received: u64,
    /// Connections refused at `maxclients`.
    pub rejected_connections: u64,
    /// Commands run (known commands with a valid arity).
    pub commands: u64,
    /// Requests naming no known command.
    pub unknown_commands: u64,
    /// Connections dropped for sending HTTP to the RESP port.
    pub cross_protocol_attempts: u64,
    /// When a cross-protocol attempt was last logged (at most once a minute).
    pub cross_protocol_logged_at: Option<Instant>,
    /// Wrong passwords (AUTH, HELLO AUTH, HTTP Bearer).
    pub auth_failures: u64,
    /// Connections closed for holding more unparsed input than allowed.
    pub query_buffer_closes: u64,
    /// Connections closed for idling past `--timeout`.
    pub idle_closes: u64,
    /// Protocol errors (each closed its connection).
    pub protocol_errors: u64,
    /// Users registered (committed).
    pub registrations: u64,
    /// Users unregistered (committed).
    pub unregistrations: u64,
    /// Users whose fields changed (committed `user.updated` events).
    pub updates: u64,
    /// Registrations and unregistrations of the open tick, not yet committed.
    pub tick_registrations: u64,
    /// See `tick_registrations`.
    pub tick_unregistrations: u64,
    /// See `tick_registrations`.
    pub tick_updates: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Ticks whose writes were rolled back.
    pub failed_commits: u64,
    /// Events produced (committed).
    pub events: u64,
    /// Subscribers disconnected at their output-buffer limit.
    pub slow_subscriber_disconnects: u64,
    /// Messages pushed to pub/sub subscribers.
    pub pushes: u64,
    /// Events sent on event streams (`GET /events`), one frame each.
    pub sse_frames: u64,
    /// Durable handlers and their offsets, as of the last tick.
    pub durable_offsets: Vec<(String, i64)>,
    /// The JetStream relay as of the last tick (with `--nats`).
    pub nats: Option<crate::nats::relay::RelayStatus>,
    /// The writer of durable handler offsets into the KV bucket `<stream>_handlers`
    /// as of the last tick (with `--nats`, durable handlers, and this node relaying).
    pub handler_offsets: Option<crate::nats::offsets::WriterStatus>,
    /// The writer of webhook endpoints into the KV bucket `<stream>_webhooks` as
    /// of the last tick (with `--nats`, endpoints, and this node relaying).
    pub webhook_kv: Option<crate::nats::offsets::WriterStatus>,
    /// Writes held for JetStream (with `--durability replicated`).
    pub replication: Option<ReplicationStats>,
    /// The webhook endpoints' figures, as of the last tick that changed them.
    pub webhooks: Vec<crate::webhook::status::Status>,
    /// The replication role, a pending promotion and the follower's figures
    /// (INFO replication, `userbus_replica_*`).
    pub replica: crate::replica::Replica,
    /// Events removed by retention.
    pub trimmed_events: u64,
    /// Handler callbacks that panicked.
    pub handler_panics: u64,
    /// Calls per command, indexed like `command_names`.
    pub command_calls: Vec<u64>,
    /// The commands' names, as `/metrics` labels their calls.
    pub command_names: Vec<&'static str>,
    /// HTTP responses by status code.
    pub http_responses: BTreeMap<u16, u64>,
    /// HTTP connections accepted.
    pub http_connections: u64,
    /// Event streams (`GET /events`) opened.
    pub sse_streams: u64,
    /// Requests run in the current tick.
    pub tick_requests: u64,
    /// Tick durations, seconds.
    pub tick_seconds: Histogram,
    /// Commit durations, seconds.
    pub commit_seconds: Histogram,
    /// Publish-to-ack times of the JetStream relay (a live event is published
    /// right after its commit, so this is commit to JetStream ack).
    pub nats_ack_seconds: Histogram,
    /// Requests per commit.
    pub requests_per_commit: Histogram,
    /// Bytes read from clients.
    pub net_input_bytes: u64,
    /// Bytes written to clients.
    pub net_output_bytes: u64,
}

impl Stats {
    /// Fresh counters, with a call counter for each of `command_names` (the
    /// command table's names, in its order).
    pub fn new(tcp_port: u16, command_names: impl IntoIterator<Item = &'static str>) -> Self {
        let command_names: Vec<&'static str> = command_names.into_iter().collect();
        Stats {
            started: Instant::now(),
            tcp_port,
            connected_clients: 0,
            connections_received: 0,
            rejected_connections: 0,
            commands: 0,
            unknown_commands: 0,
            cross_protocol_attempts: 0,
            auth_failures: 0,
            query_buffer_closes: 0,
            idle_closes: 0,
            cross_protocol_logged_at: None,
            protocol_errors: 0,
            registrations: 0,
            unregistrations: 0,
            updates: 0,
            tick_registrations: 0,
            tick_unregistrations: 0,
            tick_updates: 0,
            commits: 0,
            failed_commits: 0,
            events: 0,
            slow_subscriber_disconnects: 0,
            pushes: 0,
            sse_frames: 0,
            durable_offsets: Vec::new(),
            nats: None,
            handler_offsets: None,
            webhook_kv: None,
            replication: None,
            webhooks: Vec::new(),
            replica: crate::replica::Replica::default(),
            trimmed_events: 0,
            handler_panics: 0,
            command_calls: vec![0; command_names.len()],
            command_names,
            http_responses: BTreeMap::new(),
            http_connections: 0,
            sse_streams: 0,
            tick_requests: 0,
            tick_seconds: Histogram::new(SECONDS),
            commit_seconds: Histogram::new(SECONDS),
            nats_ack_seconds: Histogram::new(ACK_SECONDS),
            requests_per_commit: Histogram::new(BATCH),
            net_input_bytes: 0,
            net_output_bytes: 0,
        }
    }

    /// Zeroes the counters (CONFIG RESETSTAT); gauges and start time stay.
    pub fn reset_counters(&mut self) {
        let fresh = Stats::new(self.tcp_port, std::mem::take(&mut self.command_names));
        *self = Stats {
            started: self.started,
            connected_clients: self.connected_clients,
            durable_offsets: std::mem::take(&mut self.durable_offsets),
            nats: self.nats.take(),
            webhooks: std::mem::take(&mut self.webhooks),
            handler_offsets: self.handler_offsets.take(),
            webhook_kv: self.webhook_kv.take(),
            replication: self.replication.as_ref().map(|r| ReplicationStats {
                waiting_ticks: r.waiting_ticks,
                ..ReplicationStats::default()
            }),
            replica: std::mem::take(&mut self.replica),
            tick_registrations: self.tick_registrations,
            tick_unregistrations: self.tick_unregistrations,
            tick_updates: self.tick_updates,
            tick_requests: self.tick_requests,
            cross_protocol_logged_at: self.cross_protocol_logged_at,
            ..fresh
        };
    }

    /// Folds the tick's counts in after its commit (or drops them after a rollback).
    pub fn finish_tick(&mut self, committed: bool) {
        if committed {
            self.registrations += self.tick_registrations;
            self.unregistrations += self.tick_unregistrations;
            self.updates += self.tick_updates;
        }
        self.tick_registrations = 0;
        self.tick_unregistrations = 0;
        self.tick_updates = 0;
    }
}

/// What `/metrics` reports from beyond the counters.
pub struct View<'a> {
    /// The counters.
    pub stats: &'a Stats,
    /// Committed sizes.
    pub counts: Counts,
    /// Consumer groups.
    pub groups: &'a [GroupInfo],
    /// Subscriptions.
    pub pubsub: &'a PubSub,
    /// Why the last commit failed; `None` when it succeeded.
    pub storage_error: Option<StorageErrorKind>,
    /// While the user index loads after a start without its image: the share of
    /// the users table loaded, 0 to 100; `None` once loaded.
    pub loading_percent: Option<f64>,
    /// The imager thread's counters (base images of the user index); `None`
    /// when it never started.
    pub index_image: Option<crate::store::ImageStats>,
}

/// Writes each `(name, kind, help, value)` sample with its HELP and TYPE lines.
pub(crate) fn write_samples(out: &mut String, samples: &[(&str, &str, &str, u64)]) {
    for (name, kind, help, value) in samples {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

/// The Prometheus text exposition of everything the server counts.
pub fn prometheus(v: &View<'_>) -> String {
    let s = v.stats;
    let mut out = String::with_capacity(8192);
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP userbus_{name} {help}\n# TYPE userbus_{name} {kind}\nuserbus_{name} {value}"
        );
    };
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        s.started.elapsed().as_secs_f64(),
    );
    metric(
        "connections",
        "gauge",
        "Connections open now (RESP and HTTP).",
        s.connected_clients as f64,
    );
    metric(
        "connections_accepted_total",
        "counter",
        "Connections accepted.",
        s.connections_received as f64,
    );
    metric(
        "connections_rejected_total",
        "counter",
        "Connections refused at maxclients.",
        s.rejected_connections as f64,
    );
    metric(
        "http_connections_accepted_total",
        "counter",
        "Connections accepted on the HTTP port.",
        s.http_connections as f64,
    );
    metric(
        "registrations_total",
        "counter",
        "Users registered (committed).",
        s.registrations as f64,
    );
    metric(
        "unregistrations_total",
        "counter",
        "Users unregistered (committed).",
        s.unregistrations as f64,
    );
    metric(
        "updates_total",
        "counter",
        "Users whose fields changed (committed user.updated events).",
        s.updates as f64,
    );
    metric("users", "gauge", "Registered users.", v.counts.users as f64);
    metric(
        "loading",
        "gauge",
        "1 while the user index loads (names not loaded yet answer LOADING), else 0.",
        if v.loading_percent.is_some() {
            1.0
        } else {
            0.0
        },
    );
    metric(
        "loading_loaded_ratio",
        "gauge",
        "The share of the users table the user index has loaded, 0 to 1.",
        v.loading_percent.map_or(1.0, |p| p / 100.0),
    );
    metric(
        "events",
        "gauge",
        "Entries in the event log.",
        v.counts.events as f64,
    );
    metric(
        "events_last_seq",
        "gauge",
        "Sequence number of the newest event.",
        v.counts.last_seq as f64,
    );
    metric(
        "events_trimmed_total",
        "counter",
        "Events removed by retention.",
        s.trimmed_events as f64,
    );
    metric(
        "commits_total",
        "counter",
        "Tick transactions committed.",
        s.commits as f64,
    );
    metric(
        "storage_ok",
        "gauge",
        "1 while the last commit succeeded, 0 after a failed one.",
        f64::from(u8::from(v.storage_error.is_none())),
    );
    if let Some(i) = &v.index_image {
        metric(
            "index_image_written_total",
            "counter",
            "Base images of the user index written (a start after a crash loads the last).",
            i.images as f64,
        );
        metric(
            "index_image_failures_total",
            "counter",
            "Attempts to write a base image of the user index that failed.",
            i.failures as f64,
        );
        metric(
            "index_image_last_seq",
            "gauge",
            "The event seq the last base image of the user index was begun at.",
            i.last_seq as f64,
        );
        metric(
            "index_image_last_users",
            "gauge",
            "Users in the last base image of the user index.",
            i.last_users as f64,
        );
        metric(
            "index_image_last_timestamp_seconds",
            "gauge",
            "When the last base image of the user index was written (Unix seconds).",
            i.last_at_ms as f64 / 1000.0,
        );
        metric(
            "index_image_last_duration_seconds",
            "gauge",
            "How long writing the last base image of the user index took.",
            i.last_micros as f64 / 1e6,
        );
    }
    metric(
        "subscribed_channels",
        "gauge",
        "Channels with at least one subscriber.",
        v.pubsub.channel_count() as f64,
    );
    metric(
        "subscribed_patterns",
        "gauge",
        "Patterns with at least one subscriber.",
        v.pubsub.pattern_count() as f64,
    );
    metric(
        "subscribed_connections",
        "gauge",
        "Connections subscribed to at least one channel or pattern.",
        v.pubsub.connection_count() as f64,
    );
    metric(
        "pubsub_pushes_total",
        "counter",
        "Messages pushed to pub/sub subscribers.",
        s.pushes as f64,
    );
    metric(
        "sse_frames_total",
        "counter",
        "Events sent on event streams (GET /events).",
        s.sse_frames as f64,
    );
    metric(
        "slow_consumer_disconnects_total",
        "counter",
        "Subscribers and event streams dropped at their output limits.",
        s.slow_subscriber_disconnects as f64,
    );
    metric(
        "sse_streams_total",
        "counter",
        "Event streams opened.",
        s.sse_streams as f64,
    );
    metric(
        "handler_panics_total",
        "counter",
        "Handler callbacks that panicked.",
        s.handler_panics as f64,
    );
    metric(
        "net_input_bytes_total",
        "counter",
        "Bytes read from clients.",
        s.net_input_bytes as f64,
    );
    metric(
        "net_output_bytes_total",
        "counter",
        "Bytes written to clients.",
        s.net_output_bytes as f64,
    );

    let _ = writeln!(
        out,
        "# HELP userbus_storage_error 1 for the kind of failure of the last commit while storage is failing, 0 for the other kinds.\n# TYPE userbus_storage_error gauge"
    );
    for kind in StorageErrorKind::ALL {
        let _ = writeln!(
            out,
            "userbus_storage_error{{kind=\"{kind}\"}} {}",
            u8::from(v.storage_error == Some(kind))
        );
    }
    let _ = writeln!(
        out,
        "# HELP userbus_commands_total Commands run, by name.\n# TYPE userbus_commands_total counter"
    );
    for (name, n) in s.command_names.iter().zip(&s.command_calls) {
        let _ = writeln!(out, "userbus_commands_total{{command=\"{name}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP userbus_errors_total Errors, by kind.\n# TYPE userbus_errors_total counter"
    );
    for (kind, n) in [
        ("protocol", s.protocol_errors),
        ("unknown_command", s.unknown_commands),
        ("failed_commit", s.failed_commits),
        ("cross_protocol", s.cross_protocol_attempts),
        ("auth", s.auth_failures),
        ("query_buffer", s.query_buffer_closes),
        ("idle_timeout", s.idle_closes),
        (
            "http_4xx",
            s.http_responses.range(400..500).map(|(_, n)| n).sum(),
        ),
        (
            "http_5xx",
            s.http_responses.range(500..600).map(|(_, n)| n).sum(),
        ),
    ] {
        let _ = writeln!(out, "userbus_errors_total{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP userbus_http_responses_total HTTP responses, by status.\n# TYPE userbus_http_responses_total counter"
    );
    for (status, n) in &s.http_responses {
        let _ = writeln!(
            out,
            "userbus_http_responses_total{{status=\"{status}\"}} {n}"
        );
    }
    for (name, help, f) in [
        (
            "group_lag",
            "Entries of the log a consumer group has not been given yet.",
            (|g: &GroupInfo, last: i64| g.lag(last)) as fn(&GroupInfo, i64) -> i64,
        ),
        (
            "group_pending",
            "Entries a consumer group was given and has not acknowledged.",
            |g: &GroupInfo, _| g.pending,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP userbus_{name} {help}\n# TYPE userbus_{name} gauge"
        );
        for g in v.groups {
            let _ = writeln!(
                out,
                "userbus_{name}{{group=\"{}\"}} {}",
                escape_label(&g.name),
                f(g, v.counts.last_seq)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP userbus_durable_handler_lag Events a durable handler has not processed yet.\n# TYPE userbus_durable_handler_lag gauge"
    );
    for (name, offset) in &s.durable_offsets {
        let _ = writeln!(
            out,
            "userbus_durable_handler_lag{{handler=\"{}\"}} {}",
            escape_label(name),
            (v.counts.last_seq - offset).max(0)
        );
    }
    if let Some(n) = &s.nats {
        let lag_seconds = n.behind_since.map_or(0, |since| since.elapsed().as_secs());
        write_samples(
            &mut out,
            &[
                (
                    "userbus_nats_connected",
                    "gauge",
                    "1 while connected to a NATS server.",
                    u64::from(n.connected),
                ),
                (
                    "userbus_nats_relay_stopped",
                    "gauge",
                    "1 when the relay stopped on a gap, another writer or an incompatible stream.",
                    u64::from(n.state == "stopped"),
                ),
                (
                    "userbus_nats_confirmed_seq",
                    "gauge",
                    "The last event seq the JetStream stream is known to hold.",
                    u64::try_from(n.confirmed).unwrap_or(0),
                ),
                (
                    "userbus_nats_lag_events",
                    "gauge",
                    "Committed events the stream does not hold yet.",
                    u64::try_from(n.lag_events).unwrap_or(0),
                ),
                (
                    "userbus_nats_lag_seconds",
                    "gauge",
                    "How long the stream has been behind the local log.",
                    lag_seconds,
                ),
                (
                    "userbus_nats_connect_failures_total",
                    "counter",
                    "NATS connection attempts that failed.",
                    n.connect_failures,
                ),
                (
                    "userbus_nats_reconnects_total",
                    "counter",
                    "NATS connections after the first.",
                    n.reconnects,
                ),
                (
                    "userbus_nats_published_total",
                    "counter",
                    "Events the stream stored.",
                    n.published,
                ),
                (
                    "userbus_nats_retries_total",
                    "counter",
                    "Publishes sent again.",
                    n.retries,
                ),
            ],
        );
    }
    if let Some(h) = &s.handler_offsets {
        write_samples(
            &mut out,
            &[
                (
                    "userbus_nats_handler_offsets_ready",
                    "gauge",
                    "1 while durable handler offsets are put into the KV bucket.",
                    u64::from(h.state == "ready"),
                ),
                (
                    "userbus_nats_handler_offsets_failing",
                    "gauge",
                    "1 while the last put or bucket check of handler offsets failed.",
                    u64::from(h.last_error.is_some()),
                ),
                (
                    "userbus_nats_handler_offsets_puts_total",
                    "counter",
                    "Durable handler offsets the KV bucket acknowledged.",
                    h.puts,
                ),
                (
                    "userbus_nats_handler_offsets_pending",
                    "gauge",
                    "Durable handlers whose offset the KV bucket does not hold yet.",
                    h.pending,
                ),
            ],
        );
    }
    if let Some(h) = &s.webhook_kv {
        write_samples(
            &mut out,
            &[
                (
                    "userbus_nats_webhook_kv_ready",
                    "gauge",
                    "1 while webhook endpoints are put into the KV bucket.",
                    u64::from(h.state == "ready"),
                ),
                (
                    "userbus_nats_webhook_kv_failing",
                    "gauge",
                    "1 while the last put or bucket check of webhook endpoints failed.",
                    u64::from(h.last_error.is_some()),
                ),
                (
                    "userbus_nats_webhook_kv_puts_total",
                    "counter",
                    "Webhook endpoint values and deletes the KV bucket acknowledged.",
                    h.puts,
                ),
                (
                    "userbus_nats_webhook_kv_pending",
                    "gauge",
                    "Webhook endpoints whose value the KV bucket does not hold yet.",
                    h.pending,
                ),
            ],
        );
    }
    if let Some(r) = &s.replication {
        write_samples(
            &mut out,
            &[
                (
                    "userbus_replicated_held_ticks_total",
                    "counter",
                    "Ticks whose write replies waited for JetStream's ack.",
                    r.held_ticks,
                ),
                (
                    "userbus_replicated_waiting_ticks",
                    "gauge",
                    "Ticks whose write replies wait for JetStream's ack now.",
                    r.waiting_ticks as u64,
                ),
                (
                    "userbus_noreplicas_total",
                    "counter",
                    "Write replies that became NOREPLICAS (not acknowledged in time).",
                    r.noreplicas,
                ),
            ],
        );
        r.wait_seconds.write(
            &mut out,
            "userbus_replicated_wait_seconds",
            "Time from a held tick's commit to JetStream's ack of its last event.",
        );
    }
    if s.replica.nats {
        s.replica.write_metrics(&mut out);
    }
    crate::webhook::status::write_metrics(&s.webhooks, v.counts.last_seq, &mut out);
    s.tick_seconds
        .write(&mut out, "userbus_tick_seconds", "Duration of a tick.");
    s.commit_seconds
        .write(&mut out, "userbus_commit_seconds", "Duration of a commit.");
    if s.nats.is_some() {
        s.nats_ack_seconds.write(
            &mut out,
            "userbus_nats_ack_seconds",
            "Time from a relay publish to its JetStream ack.",
        );
    }
    s.requests_per_commit.write(
        &mut out,
        "userbus_requests_per_commit",
        "Requests that shared one commit.",
    );
    out
}

/// Escapes a label value for the exposition format.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
