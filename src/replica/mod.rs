//! The node's replication role: primary (takes writes, relays them into the
//! JetStream stream with `--nats`) or follower (`--follow`: applies the stream,
//! refuses writes with `-READONLY`), what `REPLICAOF NO ONE` asked, and what
//! `INFO replication` and `/metrics` show of it. The reactor's side is
//! `reactor::follow`; the stream's side `nats::consumer`.

use std::fmt::Write as _;
use std::time::Instant;

/// Redis's reply to a write on a replica.
pub const READONLY: &str = "READONLY You can't write against a read only replica.";

/// The commands that write users or the event log, refused on a follower.
/// Consumer-group commands (XGROUP, XREADGROUP, XACK, XCLAIM, XAUTOCLAIM) are
/// not among them: groups are node-local state. WEBHOOK is: a follower holds no
/// webhooks (only the primary delivers).
pub const USER_WRITES: [&str; 9] = [
    "register",
    "unregister",
    "update",
    "delfields",
    "xadd",
    "xdel",
    "xtrim",
    "xsetid",
    "webhook",
];

/// What the node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Takes writes.
    #[default]
    Primary,
    /// Applies the stream; refuses writes.
    Follower,
}

/// The role, a pending promotion, and the follower's figures.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    /// What the node is now.
    pub role: Role,
    /// True once `--nats` is on (a follower always has it).
    pub nats: bool,
    /// `REPLICAOF NO ONE` asked and not yet done.
    pub promote_asked: bool,
    /// Why the last promotion failed; the parked `REPLICAOF` clients get it.
    pub promotion_error: Option<String>,
    /// The follower's consumer state (`following`, `checking`, ...); empty on
    /// a primary that never followed.
    pub follow_state: &'static str,
    /// The stream followed.
    pub stream: String,
    /// True while the follower's NATS connection is up.
    pub connected: bool,
    /// The last seq applied (the local log's last seq).
    pub applied_seq: i64,
    /// The stream's last seq, as last seen.
    pub stream_last_seq: i64,
    /// Since when the follower has been behind the stream.
    pub behind_since: Option<Instant>,
    /// Events applied since start.
    pub applied_events: u64,
    /// Ticks that applied events (group commits).
    pub apply_commits: u64,
    /// Consumers recreated (gaps, stalls, reconnections).
    pub consumer_restarts: u64,
    /// Times this node was fenced (turned follower by another writer).
    pub fenced: u64,
    /// Local events discarded by fencing.
    pub discarded_events: u64,
    /// Promotions done.
    pub promotions: u64,
    /// The last error, for an operator.
    pub last_error: Option<String>,
}

impl Replica {
    /// True when writes of users and events are refused.
    pub fn read_only(&self) -> bool {
        self.role == Role::Follower
    }

    /// Events the stream holds that are not applied.
    pub fn lag_events(&self) -> i64 {
        if self.role == Role::Follower {
            (self.stream_last_seq - self.applied_seq).max(0)
        } else {
            0
        }
    }

    /// How long the follower has been behind, in whole seconds.
    pub fn lag_seconds(&self) -> u64 {
        self.behind_since.map_or(0, |t| t.elapsed().as_secs())
    }

    /// The `# Replication` section of INFO. `role` uses Redis's words, so that
    /// Redis tools read it.
    pub fn write_info(&self, t: &mut String) {
        let role = match self.role {
            Role::Primary => "master",
            Role::Follower => "slave",
        };
        let _ = write!(t, "# Replication\r\nrole:{role}\r\nconnected_slaves:0\r\n");
        if self.role == Role::Follower {
            let _ = write!(
                t,
                "master_host:nats\r\nmaster_link_status:{}\r\nslave_read_only:1\r\n",
                if self.connected && self.follow_state == "following" {
                    "up"
                } else {
                    "down"
                }
            );
        }
        let _ = write!(
            t,
            "userbus_follow_state:{}\r\nuserbus_follow_stream:{}\r\n\
             userbus_applied_seq:{}\r\nuserbus_stream_last_seq:{}\r\nuserbus_lag_events:{}\r\n\
             userbus_lag_seconds:{}\r\nuserbus_applied_events:{}\r\nuserbus_apply_commits:{}\r\n\
             userbus_consumer_restarts:{}\r\nuserbus_promotions:{}\r\nuserbus_fenced:{}\r\n\
             userbus_discarded_events:{}\r\nuserbus_promotion_pending:{}\r\n\
             userbus_replica_last_error:{}\r\n",
            if self.follow_state.is_empty() {
                "none"
            } else {
                self.follow_state
            },
            self.stream,
            self.applied_seq,
            self.stream_last_seq,
            self.lag_events(),
            self.lag_seconds(),
            self.applied_events,
            self.apply_commits,
            self.consumer_restarts,
            self.promotions,
            self.fenced,
            self.discarded_events,
            u8::from(self.promote_asked),
            self.last_error
                .as_deref()
                .unwrap_or("")
                .replace(['\r', '\n'], " "),
        );
    }

    /// The `userbus_replica_*` metrics in the Prometheus text format.
    pub fn write_metrics(&self, out: &mut String) {
        crate::metrics::write_samples(
            out,
            &[
                (
                    "userbus_replica_follower",
                    "gauge",
                    "1 while this node is a follower (read-only), 0 while primary.",
                    u64::from(self.role == Role::Follower),
                ),
                (
                    "userbus_replica_applied_seq",
                    "gauge",
                    "The last event seq applied (the local log's last seq).",
                    u64::try_from(self.applied_seq).unwrap_or(0),
                ),
                (
                    "userbus_replica_stream_last_seq",
                    "gauge",
                    "The stream's last seq as last seen by the follower.",
                    u64::try_from(self.stream_last_seq).unwrap_or(0),
                ),
                (
                    "userbus_replica_lag_events",
                    "gauge",
                    "Events the stream holds that the follower has not applied.",
                    u64::try_from(self.lag_events()).unwrap_or(0),
                ),
                (
                    "userbus_replica_lag_seconds",
                    "gauge",
                    "How long the follower has been behind the stream.",
                    self.lag_seconds(),
                ),
                (
                    "userbus_replica_applied_events_total",
                    "counter",
                    "Events applied from the stream.",
                    self.applied_events,
                ),
                (
                    "userbus_replica_apply_commits_total",
                    "counter",
                    "Group commits that applied events.",
                    self.apply_commits,
                ),
                (
                    "userbus_replica_consumer_restarts_total",
                    "counter",
                    "JetStream consumers recreated after a gap, a stall or a reconnection.",
                    self.consumer_restarts,
                ),
                (
                    "userbus_replica_promotions_total",
                    "counter",
                    "Promotions of this node to primary.",
                    self.promotions,
                ),
                (
                    "userbus_replica_fenced_total",
                    "counter",
                    "Times another writer in the stream turned this primary into a follower.",
                    self.fenced,
                ),
                (
                    "userbus_replica_discarded_events_total",
                    "counter",
                    "Local events discarded because they never reached the stream.",
                    self.discarded_events,
                ),
            ],
        );
    }
}
