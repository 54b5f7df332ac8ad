//! Configuration: every setting of the server, and its limits, named, with units
//! and defaults. `userbus serve` fills [`Config`] from flags and `USERBUS_*`
//! environment variables (the `tools` feature); an embedding program builds it
//! directly.
//!
//! Not every fixed limit is here: those that only one piece of code enforces live
//! beside it (HTTP's in `src/http/`, the reactor's sweeps and batches, a
//! connection's buffer sizes in `src/conn/`, the store's batch sizes, the
//! commands' default counts). docs/OPERATIONS.md, "Where each limit lives", lists
//! every one with its file and value.
//!
//! The NATS settings are fields here too; their checks and the relay's credentials
//! are in `config/nats.rs`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub(crate) mod nats;
pub mod webhook;

pub use nats::NatsCredentials;
use nats::mask_servers;
#[cfg(feature = "tools")]
use nats::{parse_nats_stream, parse_nats_subject_prefix};
pub use webhook::RetrySchedule;
#[cfg(feature = "tools")]
use webhook::parse_positive_duration;
use webhook::{DEFAULT_WEBHOOK_DISABLE_AFTER, DEFAULT_WEBHOOK_TIMEOUT};

/// Default RESP port.
pub const DEFAULT_PORT: u16 = 7878;
/// Default HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 7879;
/// Default database file.
pub const DEFAULT_DB: &str = "./userbus.db";
/// Default address to listen on: loopback only.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Default RESP-over-TLS port: 0, off.
pub const DEFAULT_TLS_PORT: u16 = 0;
/// Default HTTPS port: 0, off.
pub const DEFAULT_HTTPS_PORT: u16 = 0;
/// Default idle timeout, in seconds: 0, never.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 0;
/// Default protected mode: on (without a password, loopback addresses only).
pub const DEFAULT_PROTECTED_MODE: bool = true;
/// Default database size cap, in SQLite pages: 0, no cap.
pub const DEFAULT_MAX_DB_PAGES: u64 = 0;
/// Default deliveries before a consumer group dead-letters an entry: 0, never.
pub const DEFAULT_MAX_DELIVERIES: u64 = 0;
/// Default JetStream stream the relay publishes into.
pub const DEFAULT_NATS_STREAM: &str = "USERBUS";
/// Default first tokens of the relay's subjects (`userbus.user.registered`, ...).
pub const DEFAULT_NATS_SUBJECT_PREFIX: &str = "userbus";
/// Default copies JetStream keeps of the stream: 1, no replication.
pub const DEFAULT_NATS_REPLICAS: u32 = 1;
/// Most copies of a stream JetStream keeps.
pub const MAX_NATS_REPLICAS: u32 = 5;
/// Longest JetStream stream name, in bytes (nats-server's `JSMaxNameLen`).
pub const MAX_NATS_STREAM_NAME_BYTES: usize = 255;
/// Default time a replicated write waits for JetStream's ack before its client
/// gets `-NOREPLICAS` (`--replication-timeout`).
pub const DEFAULT_REPLICATION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `REPLICAOF NO ONE` waits for the stream's end, for applying it and
/// for the handlers' offsets before it fails (`--promotion-timeout`).
pub const DEFAULT_PROMOTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest bulk string a request may carry (Redis's `proto-max-bulk-len` is 512 MiB;
/// the largest thing userbus stores, a user with 32 fields of 4 KiB, is 128 KiB).
pub const MAX_BULK_BYTES: usize = 512 * 1024;
/// Unparsed input a connection may hold (Redis's `client-query-buffer-limit`); a
/// connection over it is closed.
pub const MAX_QUERY_BUFFER_BYTES: usize = 1024 * 1024;
/// Before authentication: most elements in a request array (Redis's rule).
pub const MAX_UNAUTH_MULTIBULK_LEN: usize = 10;
/// Before authentication: largest bulk string (Redis's rule).
pub const MAX_UNAUTH_BULK_BYTES: usize = 16 * 1024;
/// Before authentication: unsent reply bytes after which the connection is closed.
pub const MAX_UNAUTH_OUTPUT_BYTES: usize = 16 * 1024;
/// Connections accepted per listener per tick; the rest wait for the next tick.
pub const ACCEPT_BUDGET: usize = 1000;
/// TCP keepalive probe interval for client connections (Redis's `tcp-keepalive`).
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(300);
/// Most elements a request array may declare.
pub const MAX_MULTIBULK_LEN: usize = 1024 * 1024;
/// Longest inline line, and longest `*`/`$` header line (Redis's PROTO_INLINE_MAX_SIZE).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;
/// Most connections served at once.
pub const MAX_CLIENTS: usize = 10_000;

/// Longest user name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Most fields a user may have.
pub const MAX_FIELDS: usize = 32;
/// Longest field name, in bytes.
pub const MAX_FIELD_NAME_BYTES: usize = 64;
/// Longest field value, in bytes.
pub const MAX_FIELD_VALUE_BYTES: usize = 4096;
/// Largest `COUNT` a `USERS` page honours; larger requests get pages this size.
pub const MAX_USERS_PAGE: usize = 10_000;

/// Bytes read from one connection per tick before its requests run; the rest waits
/// for the next tick so one fast sender cannot starve the others.
pub const READ_BUDGET_BYTES: usize = 256 * 1024;
/// Unsent reply bytes above which a connection's further requests wait (backpressure)
/// until the peer reads.
pub const MAX_PENDING_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// A subscriber whose unsent pushes exceed this is disconnected at once (Redis's
/// `client-output-buffer-limit pubsub` hard limit).
pub const PUBSUB_HARD_LIMIT_BYTES: usize = 32 * 1024 * 1024;
/// A subscriber over this for `PUBSUB_SOFT_LIMIT_TIME` is disconnected.
pub const PUBSUB_SOFT_LIMIT_BYTES: usize = 8 * 1024 * 1024;
/// See `PUBSUB_SOFT_LIMIT_BYTES`.
pub const PUBSUB_SOFT_LIMIT_TIME: Duration = Duration::from_secs(60);
/// How long to stop accepting after `accept` fails for lack of descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// WAL frames (pages) after which a passive checkpoint runs on the store's own
/// connection, when no checkpointer thread runs beside it (a `Store` used alone,
/// as the storage limit in `cargo bench` does), busy or not: 8192 frames is 32 MiB at SQLite's 4 KiB pages. A checkpoint stalls
/// the loop while it copies the frames and syncs the database, mostly for its two
/// syncs at small loads: with 2048 frames, REGISTER at pipeline 1 spent ~6% of its
/// time in them and its p99 was 2.4× Redis's; with 8192 it is below Redis's, and a
/// checkpoint under pipelined load takes ~60 ms instead of ~25 ms (docs/BENCHMARKS.md).
pub const CHECKPOINT_WAL_FRAMES: u64 = 8192;
/// Idle time after the last commit before the loop looks again whether a checkpoint
/// is due (with the checkpointer thread: whether the thread asked it to copy the
/// WAL's last frames; without it, a passive checkpoint of its own).
pub const CHECKPOINT_IDLE: Duration = Duration::from_millis(200);
/// How often the event log is trimmed to `--retain-events`.
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(1);
/// Most entries one trim removes (a full batch trims again at the next tick).
pub const RETENTION_BATCH: usize = 10_000;
/// How long to wait before retrying a checkpoint that failed.
pub const CHECKPOINT_RETRY: Duration = Duration::from_secs(1);
/// How often the checkpointer thread looks at the WAL's size
/// (`src/store/checkpointer.rs`).
pub const CHECKPOINT_POLL: Duration = Duration::from_millis(10);
/// WAL frames the loop commits before the checkpointer thread copies them (or
/// fewer, once the loop has gone quiet for a poll): 2048 frames is 8 MiB at 4 KiB
/// pages, a few checkpoints a second under a saturating load.
pub const CHECKPOINT_BATCH_FRAMES: u64 = 2048;
/// The WAL's bound in frames (64 MiB at 4 KiB pages): past it, the loop checkpoints
/// the last few frames itself so that the log starts over, and the file is
/// truncated back to this size (`journal_size_limit`).
pub const CHECKPOINT_WAL_LIMIT_FRAMES: u64 = 16384;
/// Most frames the loop's own checkpoint may be left to copy once the WAL is past
/// its bound (1 MiB): the thread checkpoints without pause until it is this close,
/// then hands over.
pub const CHECKPOINT_FINISH_FRAMES: u64 = 256;
/// Longest time SQLite waits on a lock held by another process (the loop must not stall).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_millis(5);

/// SQLite's page cache, in KiB (a ceiling: it fills only as pages are used). The
/// default 2 MiB makes a large event log re-read pages from the OS.
pub const SQLITE_CACHE_KIB: u64 = 32 * 1024;
/// How long shutdown waits for peers to read their last replies.
pub const SHUTDOWN_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How much a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: an acknowledged write survives power loss.
    #[default]
    Strict,
    /// `synchronous=NORMAL`: survives a process crash; the last ticks may be lost on
    /// power loss.
    Normal,
    /// `synchronous=FULL` as `Strict`, and a write is acknowledged only once
    /// JetStream (`--nats`) acknowledged every event of its tick: it survives the
    /// loss of the machine. Needs `--nats`.
    Replicated,
}

impl Durability {
    /// True when a write waits for JetStream's ack before its reply.
    pub fn replicated(self) -> bool {
        self == Durability::Replicated
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(Durability::Strict),
            "normal" => Ok(Durability::Normal),
            "replicated" => Ok(Durability::Replicated),
            _ => Err(format!(
                "durability must be 'strict', 'normal' or 'replicated', not '{s}'"
            )),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Strict => "strict",
            Durability::Normal => "normal",
            Durability::Replicated => "replicated",
        })
    }
}

/// How much of the event log to keep: the newest `max_entries` and/or the entries
/// younger than `max_age`. Written `100000`, `7d`, or `100000,7d` (units s, m, h, d).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many entries.
    pub max_entries: Option<u64>,
    /// Drop entries older than this.
    pub max_age: Option<Duration>,
}

impl FromStr for Retention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut r = Retention::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let unit = part.trim_start_matches(|c: char| c.is_ascii_digit());
            let digits = &part[..part.len() - unit.len()];
            let n: u64 = digits.parse().map_err(|_| {
                format!("'{part}': expected a count such as 100000 or an age such as 7d")
            })?;
            let secs = match unit {
                "" => {
                    r.max_entries = Some(n);
                    continue;
                }
                "s" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86_400,
                _ => return Err(format!("'{part}': age units are s, m, h and d")),
            };
            r.max_age = Some(Duration::from_secs(n.saturating_mul(secs)));
        }
        if r == Retention::default() {
            return Err("give a count (100000), an age (7d) or both (100000,7d)".into());
        }
        Ok(r)
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.max_entries {
            parts.push(n.to_string());
        }
        if let Some(a) = self.max_age {
            parts.push(format!("{}s", a.as_secs()));
        }
        f.write_str(&parts.join(","))
    }
}

/// Parses a duration as the flags write one: a whole number with a unit, `ms`,
/// `s`, `m`, `h` or `d` (`5s`, `1500ms`, `2m`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let unit = t.trim_start_matches(|c: char| c.is_ascii_digit());
    let digits = &t[..t.len() - unit.len()];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}': expected a duration such as 5s, 1500ms or 2m"))?;
    let millis = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{s}': duration units are ms, s, m, h and d")),
    };
    Ok(Duration::from_millis(n.saturating_mul(millis)))
}

/// A duration as `parse_duration` reads it back: `5s`, or `1500ms` when it is
/// not a whole number of seconds.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `--replication-timeout`: a duration above zero.
#[cfg(feature = "tools")]
fn parse_replication_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the replication timeout must be above zero".into());
    }
    Ok(d)
}

/// `--promotion-timeout`: a duration above zero.
#[cfg(feature = "tools")]
fn parse_promotion_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the promotion timeout must be above zero".into());
    }
    Ok(d)
}

/// Output limits for subscribers (Redis's `client-output-buffer-limit pubsub`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubSubLimits {
    /// Unsent bytes that disconnect at once.
    pub hard_bytes: usize,
    /// Unsent bytes that disconnect when exceeded for `soft_time`.
    pub soft_bytes: usize,
    /// See `soft_bytes`.
    pub soft_time: Duration,
}

/// Protocol limits a request parser enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in bytes.
    pub max_bulk_bytes: usize,
    /// Most elements in a request array.
    pub max_multibulk_len: usize,
    /// Longest inline line or header line, in bytes.
    pub max_inline_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_bytes: MAX_BULK_BYTES,
            max_multibulk_len: MAX_MULTIBULK_LEN,
            max_inline_bytes: MAX_INLINE_BYTES,
        }
    }
}

/// Everything `userbus serve` can be told.
///
/// The flag definitions below are the source of every default: each names a
/// constant of this module, which [`Config::default`] uses too, and `--help`, the
/// README's flag table (checked by `tests/readme.rs`) and `userbus --help`'s summary
/// follow from them. The flags exist with the `tools` feature; an embedding program
/// fills the struct in code.
///
/// `Debug` shows every setting but the secrets: passwords and tokens print as
/// `"***"`, credentials in `--nats` URLs as `***@`.
#[derive(Clone)]
#[cfg_attr(feature = "tools", derive(clap::Args))]
pub struct Config {
    /// Address to listen on (RESP and HTTP).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_BIND", value_name = "ADDR", default_value_t = DEFAULT_BIND))]
    pub bind: IpAddr,
    /// RESP port (0 picks a free port).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_PORT", value_name = "PORT", default_value_t = DEFAULT_PORT))]
    pub port: u16,
    /// HTTP port (0 disables the HTTP side).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_HTTP_PORT", value_name = "PORT", default_value_t = DEFAULT_HTTP_PORT))]
    pub http_port: u16,
    /// SQLite database file (created when missing).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_DB", value_name = "PATH", default_value = DEFAULT_DB))]
    pub db: PathBuf,
    /// strict (fsync per commit), normal, or replicated (strict, and JetStream
    /// acknowledged it; needs --nats).
    ///
    /// strict: every acknowledged write survives power loss (fsync per commit);
    /// normal: survives a process crash, the last commits may be lost on power loss;
    /// replicated: SQLite as in strict mode, and a write's reply waits until
    /// JetStream (--nats) acknowledged every event of its tick, so it survives the
    /// loss of the machine (-NOREPLICAS after --replication-timeout).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_DURABILITY", value_name = "MODE", default_value_t = Durability::default()))]
    pub durability: Durability,
    /// With --durability replicated: how long a write waits for JetStream's ack
    /// before its reply becomes -NOREPLICAS (5s, 1500ms, 1m).
    ///
    /// The write stays in the local log and its events still reach the stream
    /// once NATS acknowledges them: after -NOREPLICAS its outcome is unknown.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_REPLICATION_TIMEOUT", value_name = "DURATION", default_value = "5s", value_parser = parse_replication_timeout))]
    pub replication_timeout: Duration,
    /// Most clients connected at once.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_MAXCLIENTS", value_name = "N", default_value_t = MAX_CLIENTS))]
    pub maxclients: usize,
    /// Largest bulk string in a request, in bytes.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_MAX_BULK_BYTES", value_name = "N", default_value_t = MAX_BULK_BYTES))]
    pub max_bulk_bytes: usize,
    /// Most elements in a request array.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_MAX_MULTIBULK_LEN", value_name = "N", default_value_t = MAX_MULTIBULK_LEN))]
    pub max_multibulk_len: usize,
    /// Longest inline command line, in bytes.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_MAX_INLINE_BYTES", value_name = "N", default_value_t = MAX_INLINE_BYTES))]
    pub max_inline_bytes: usize,
    /// Unparsed input one connection may hold, in bytes.
    ///
    /// Over it the connection is closed.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_MAX_QUERY_BUFFER_BYTES", value_name = "N", default_value_t = MAX_QUERY_BUFFER_BYTES))]
    pub max_query_buffer_bytes: usize,
    /// Close connections idle for this many seconds (0 = never).
    ///
    /// Subscribers, blocked readers and event streams are exempt.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_TIMEOUT", value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS))]
    pub timeout: u64,
    /// The password clients must give (AUTH, HELLO ... AUTH, HTTP Bearer token).
    #[cfg_attr(
        feature = "tools",
        arg(
            long,
            env = "USERBUS_PASSWORD",
            value_name = "PASS",
            hide_env_values = true
        )
    )]
    pub requirepass: Option<String>,
    /// Read the password from the first line of this file instead.
    #[cfg_attr(
        feature = "tools",
        arg(
            long,
            env = "USERBUS_PASSWORD_FILE",
            value_name = "PATH",
            conflicts_with = "requirepass"
        )
    )]
    pub password_file: Option<PathBuf>,
    /// Without a password, refuse to listen on a non-loopback address.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_PROTECTED_MODE", value_name = "yes|no", default_value = yes_no(DEFAULT_PROTECTED_MODE), value_parser = parse_yes_no, action = clap::ArgAction::Set))]
    pub protected_mode: bool,
    /// RESP over TLS on this port (0 = off).
    ///
    /// Needs --tls-cert and --tls-key.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_TLS_PORT", value_name = "PORT", default_value_t = DEFAULT_TLS_PORT))]
    pub tls_port: u16,
    /// HTTPS on this port (0 = off).
    ///
    /// Needs --tls-cert and --tls-key.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_HTTPS_PORT", value_name = "PORT", default_value_t = DEFAULT_HTTPS_PORT))]
    pub https_port: u16,
    /// Server certificate chain (PEM).
    #[cfg_attr(
        feature = "tools",
        arg(long, env = "USERBUS_TLS_CERT", value_name = "PEM")
    )]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[cfg_attr(
        feature = "tools",
        arg(long, env = "USERBUS_TLS_KEY", value_name = "PEM")
    )]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[cfg_attr(
        feature = "tools",
        arg(long, env = "USERBUS_TLS_CA", value_name = "PEM")
    )]
    pub tls_ca: Option<PathBuf>,
    /// Cap on the database size in SQLite pages (0 = no cap).
    ///
    /// Writes past it fail with a storage error instead of filling the disk.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_MAX_DB_PAGES", value_name = "N", default_value_t = DEFAULT_MAX_DB_PAGES))]
    pub max_db_pages: u64,
    /// Deliveries after which a consumer group dead-letters an entry (0 = never).
    ///
    /// The next delivery attempt acknowledges the entry and appends it to the
    /// stream `events.dead` instead.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_MAX_DELIVERIES", value_name = "N", default_value_t = DEFAULT_MAX_DELIVERIES))]
    pub max_deliveries: u64,
    /// Trim the event log to a count and/or an age: 1000000, 30d or 1000000,30d.
    ///
    /// By default everything is kept. Entries a durable handler has not processed
    /// yet, or the NATS relay has not confirmed, are never trimmed.
    #[cfg_attr(
        feature = "tools",
        arg(long, env = "USERBUS_RETAIN_EVENTS", value_name = "SPEC")
    )]
    pub retain_events: Option<Retention>,
    /// A subscriber with more unsent pushes than this is disconnected at once.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_PUBSUB_HARD_LIMIT_BYTES", value_name = "N", default_value_t = PUBSUB_HARD_LIMIT_BYTES))]
    pub pubsub_hard_limit_bytes: usize,
    /// A subscriber over this many unsent bytes for --pubsub-soft-limit-seconds is
    /// disconnected.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_PUBSUB_SOFT_LIMIT_BYTES", value_name = "N", default_value_t = PUBSUB_SOFT_LIMIT_BYTES))]
    pub pubsub_soft_limit_bytes: usize,
    /// See --pubsub-soft-limit-bytes.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_PUBSUB_SOFT_LIMIT_SECONDS", value_name = "N", default_value_t = PUBSUB_SOFT_LIMIT_TIME.as_secs()))]
    pub pubsub_soft_limit_seconds: u64,
    /// Relay every committed event into NATS JetStream at these servers (off when
    /// absent).
    ///
    /// A comma-separated list, nats://host:4222,host2:4222 or tls://host:4222;
    /// an entry may carry credentials (nats://user:password@host, nats://token@host).
    #[cfg_attr(
        feature = "tools",
        arg(
            long,
            env = "USERBUS_NATS",
            value_name = "URLS",
            hide_env_values = true
        )
    )]
    pub nats: Option<String>,
    /// The JetStream stream the relay publishes into (created when missing).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_NATS_STREAM", value_name = "NAME", default_value = DEFAULT_NATS_STREAM, value_parser = parse_nats_stream))]
    pub nats_stream: String,
    /// First tokens of the relay's subjects: PREFIX.user.registered, ...
    ///
    /// The stream captures PREFIX.> (every subject under the prefix).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_NATS_SUBJECT_PREFIX", value_name = "PREFIX", default_value = DEFAULT_NATS_SUBJECT_PREFIX, value_parser = parse_nats_subject_prefix))]
    pub nats_subject_prefix: String,
    /// Copies JetStream keeps of the stream, 1 to 5 (when it creates it).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_NATS_REPLICAS", value_name = "N", default_value_t = DEFAULT_NATS_REPLICAS, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_NATS_REPLICAS))))]
    pub nats_replicas: u32,
    /// The user the relay authenticates to NATS as (with --nats-password).
    #[cfg_attr(
        feature = "tools",
        arg(
            long,
            env = "USERBUS_NATS_USER",
            value_name = "USER",
            requires = "nats_password"
        )
    )]
    pub nats_user: Option<String>,
    /// The password of --nats-user.
    #[cfg_attr(
        feature = "tools",
        arg(
            long,
            env = "USERBUS_NATS_PASSWORD",
            value_name = "PASS",
            hide_env_values = true,
            requires = "nats_user"
        )
    )]
    pub nats_password: Option<String>,
    /// The token the relay authenticates to NATS with.
    #[cfg_attr(
        feature = "tools",
        arg(
            long,
            env = "USERBUS_NATS_TOKEN",
            value_name = "TOKEN",
            hide_env_values = true,
            conflicts_with_all = ["nats_user", "nats_password"]
        )
    )]
    pub nats_token: Option<String>,
    /// Read the NATS credentials from the first line of this file instead:
    /// user:password, or a token.
    #[cfg_attr(
        feature = "tools",
        arg(
            long,
            env = "USERBUS_NATS_CREDENTIALS_FILE",
            value_name = "PATH",
            conflicts_with_all = ["nats_user", "nats_password", "nats_token"]
        )
    )]
    pub nats_credentials_file: Option<PathBuf>,
    /// The CA certificates (PEM) that tls:// NATS servers must be signed by.
    ///
    /// Needed for tls:// servers and servers that require TLS: no other roots
    /// are trusted.
    #[cfg_attr(
        feature = "tools",
        arg(long, env = "USERBUS_NATS_CA", value_name = "PEM")
    )]
    pub nats_ca: Option<PathBuf>,
    /// The directory BACKUP writes snapshots into, by plain file name (BACKUP is
    /// refused without it).
    #[cfg_attr(
        feature = "tools",
        arg(long, env = "USERBUS_BACKUP_DIR", value_name = "DIR")
    )]
    pub backup_dir: Option<PathBuf>,
    /// Run as a read-only follower of the --nats stream: apply what the primary
    /// relays into it, refuse writes (-READONLY) until REPLICAOF NO ONE promotes
    /// this node.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_FOLLOW"))]
    pub follow: bool,
    /// How long REPLICAOF NO ONE waits for the stream's last seq, for applying
    /// it and for the durable handlers' offsets before it fails and the node
    /// stays a follower (10s, 1500ms, 1m).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_PROMOTION_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_promotion_timeout))]
    pub promotion_timeout: Duration,
    /// Make a field unique: REGISTER and UPDATE refuse a value another user holds,
    /// and LOOKUPBY finds a user by it. Repeat the flag (or separate names by
    /// commas) for several fields.
    ///
    /// Values compare exactly (no case folding). A database that already holds a
    /// value twice is refused at start.
    #[cfg_attr(
        feature = "tools",
        arg(
            long = "unique-field",
            env = "USERBUS_UNIQUE_FIELD",
            value_name = "NAME",
            value_delimiter = ','
        )
    )]
    pub unique_fields: Vec<String>,
    /// Delays between the attempts at delivering an event to a webhook: after
    /// the last one fails, the event becomes one of the endpoint's dead letters.
    ///
    /// Each delay gets ±20% jitter. `0` means one attempt and no retry.
    /// Given twice, the last one counts.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_WEBHOOK_RETRY_SCHEDULE", value_name = "DELAYS", default_value = webhook::DEFAULT_WEBHOOK_RETRY_SCHEDULE, overrides_with = "webhook_retry_schedule"))]
    pub webhook_retry_schedule: RetrySchedule,
    /// How long a webhook delivery may take to connect, and to answer once the
    /// request is written; past it the attempt failed.
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_WEBHOOK_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration))]
    pub webhook_timeout: Duration,
    /// A webhook endpoint whose deliveries fail this long without one success
    /// is disabled (WEBHOOK ENABLE or REPLAY turns it back on).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_WEBHOOK_DISABLE_AFTER", value_name = "DURATION", default_value = "5d", value_parser = parse_positive_duration))]
    pub webhook_disable_after: Duration,
    /// Allow webhook targets on loopback and private addresses (refused by
    /// default: a webhook must not reach into the server's own network).
    #[cfg_attr(feature = "tools", arg(long, env = "USERBUS_WEBHOOK_ALLOW_PRIVATE"))]
    pub webhook_allow_private: bool,
    /// The CA certificates (PEM) https webhook targets must be signed by,
    /// instead of the system's roots.
    #[cfg_attr(
        feature = "tools",
        arg(long, env = "USERBUS_WEBHOOK_CA", value_name = "PEM")
    )]
    pub webhook_ca: Option<PathBuf>,
}

impl Default for Config {
    /// The flags' defaults, without reading the environment.
    fn default() -> Self {
        Config {
            bind: DEFAULT_BIND,
            port: DEFAULT_PORT,
            http_port: DEFAULT_HTTP_PORT,
            db: PathBuf::from(DEFAULT_DB),
            durability: Durability::default(),
            replication_timeout: DEFAULT_REPLICATION_TIMEOUT,
            maxclients: MAX_CLIENTS,
            max_bulk_bytes: MAX_BULK_BYTES,
            max_multibulk_len: MAX_MULTIBULK_LEN,
            max_inline_bytes: MAX_INLINE_BYTES,
            max_db_pages: DEFAULT_MAX_DB_PAGES,
            max_query_buffer_bytes: MAX_QUERY_BUFFER_BYTES,
            tls_port: DEFAULT_TLS_PORT,
            https_port: DEFAULT_HTTPS_PORT,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            timeout: DEFAULT_IDLE_TIMEOUT_SECS,
            requirepass: None,
            password_file: None,
            protected_mode: DEFAULT_PROTECTED_MODE,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            retain_events: None,
            pubsub_hard_limit_bytes: PUBSUB_HARD_LIMIT_BYTES,
            pubsub_soft_limit_bytes: PUBSUB_SOFT_LIMIT_BYTES,
            pubsub_soft_limit_seconds: PUBSUB_SOFT_LIMIT_TIME.as_secs(),
            nats: None,
            nats_stream: DEFAULT_NATS_STREAM.to_string(),
            nats_subject_prefix: DEFAULT_NATS_SUBJECT_PREFIX.to_string(),
            nats_replicas: DEFAULT_NATS_REPLICAS,
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_credentials_file: None,
            nats_ca: None,
            backup_dir: None,
            follow: false,
            promotion_timeout: DEFAULT_PROMOTION_TIMEOUT,
            unique_fields: Vec::new(),
            webhook_retry_schedule: RetrySchedule::default(),
            webhook_timeout: DEFAULT_WEBHOOK_TIMEOUT,
            webhook_disable_after: DEFAULT_WEBHOOK_DISABLE_AFTER,
            webhook_allow_private: false,
            webhook_ca: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Taken apart field by field so that a new field cannot be left out.
        let Config {
            bind,
            port,
            http_port,
            db,
            durability,
            replication_timeout,
            maxclients,
            max_bulk_bytes,
            max_multibulk_len,
            max_inline_bytes,
            max_query_buffer_bytes,
            timeout,
            requirepass,
            password_file,
            protected_mode,
            tls_port,
            https_port,
            tls_cert,
            tls_key,
            tls_ca,
            max_db_pages,
            max_deliveries,
            retain_events,
            pubsub_hard_limit_bytes,
            pubsub_soft_limit_bytes,
            pubsub_soft_limit_seconds,
            nats,
            nats_stream,
            nats_subject_prefix,
            nats_replicas,
            nats_user,
            nats_password,
            nats_token,
            nats_credentials_file,
            nats_ca,
            backup_dir,
            follow,
            promotion_timeout,
            unique_fields,
            webhook_retry_schedule,
            webhook_timeout,
            webhook_disable_after,
            webhook_allow_private,
            webhook_ca,
        } = self;
        f.debug_struct("Config")
            .field("bind", bind)
            .field("port", port)
            .field("http_port", http_port)
            .field("db", db)
            .field("durability", durability)
            .field("replication_timeout", replication_timeout)
            .field("maxclients", maxclients)
            .field("max_bulk_bytes", max_bulk_bytes)
            .field("max_multibulk_len", max_multibulk_len)
            .field("max_inline_bytes", max_inline_bytes)
            .field("max_query_buffer_bytes", max_query_buffer_bytes)
            .field("timeout", timeout)
            .field("requirepass", &redacted(requirepass))
            .field("password_file", password_file)
            .field("protected_mode", protected_mode)
            .field("tls_port", tls_port)
            .field("https_port", https_port)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("tls_ca", tls_ca)
            .field("max_db_pages", max_db_pages)
            .field("max_deliveries", max_deliveries)
            .field("retain_events", retain_events)
            .field("pubsub_hard_limit_bytes", pubsub_hard_limit_bytes)
            .field("pubsub_soft_limit_bytes", pubsub_soft_limit_bytes)
            .field("pubsub_soft_limit_seconds", pubsub_soft_limit_seconds)
            .field("nats", &nats.as_deref().map(mask_servers))
            .field("nats_stream", nats_stream)
            .field("nats_subject_prefix", nats_subject_prefix)
            .field("nats_replicas", nats_replicas)
            .field("nats_user", nats_user)
            .field("nats_password", &redacted(nats_password))
            .field("nats_token", &redacted(nats_token))
            .field("nats_credentials_file", nats_credentials_file)
            .field("nats_ca", nats_ca)
            .field("backup_dir", backup_dir)
            .field("follow", follow)
            .field("promotion_timeout", promotion_timeout)
            .field("unique_fields", unique_fields)
            .field("webhook_retry_schedule", webhook_retry_schedule)
            .field("webhook_timeout", webhook_timeout)
            .field("webhook_disable_after", webhook_disable_after)
            .field("webhook_allow_private", webhook_allow_private)
            .field("webhook_ca", webhook_ca)
            .finish()
    }
}

/// A secret as `Debug` shows it: whether it is there, never what it is.
fn redacted(secret: &Option<String>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

/// A string setting given with a value; an empty one counts as not given, as an
/// empty `USERBUS_*` variable does for `--requirepass`.
fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// A path setting as `CONFIG GET` shows it (empty when unset).
fn path_setting(path: Option<&std::path::Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// `yes` or `no`, as `--protected-mode` is written.
#[cfg(feature = "tools")]
const fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

/// Parses `yes`/`no` (and `true`/`false`) as Redis configuration does.
#[cfg(feature = "tools")]
fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(format!("expected yes or no, not '{s}'")),
    }
}

impl Config {
    /// The password clients must give: `--requirepass`, or the first line of
    /// `--password-file`. `Ok(None)` when there is none.
    pub fn password(&self) -> Result<Option<String>, String> {
        if let Some(p) = &self.requirepass {
            return Ok((!p.is_empty()).then(|| p.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --password-file {}: {e}", path.display()))?;
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        if line.is_empty() {
            return Err(format!("--password-file {} is empty", path.display()));
        }
        Ok(Some(line.to_string()))
    }

    /// Checks the settings that depend on one another, and the values an
    /// embedding program set without the flags' parsers. The error is one line
    /// naming the flags; `--backup-dir` must be a directory. (A bad `--nats` URL
    /// is not checked here: the relay reports it and the server serves without it.)
    pub fn validate(&self) -> Result<(), String> {
        if self.durability.replicated() && !self.nats_enabled() {
            return Err(
                "--durability replicated needs --nats: a write is acknowledged once the \
                 JetStream stream holds its events"
                    .into(),
            );
        }
        if self.replication_timeout.is_zero() {
            return Err("--replication-timeout must be above zero".into());
        }
        if self.promotion_timeout.is_zero() {
            return Err("--promotion-timeout must be above zero".into());
        }
        if self.follow && given(&self.nats).is_none() {
            return Err(
                "--follow needs --nats: a follower applies the JetStream stream the primary \
                 relays into"
                    .into(),
            );
        }
        self.validate_nats()?;
        for field in &self.unique_fields {
            if let Err(e) = crate::registry::check_field_name(field.as_bytes()) {
                return Err(format!("--unique-field '{field}': {e}"));
            }
        }
        if self.webhook_timeout.is_zero() || self.webhook_disable_after.is_zero() {
            return Err("--webhook-timeout and --webhook-disable-after must be above zero".into());
        }
        if let Some(dir) = &self.backup_dir
            && !dir.is_dir()
        {
            return Err(format!(
                "--backup-dir {} is not a directory (create it, or leave BACKUP off)",
                dir.display()
            ));
        }
        Ok(())
    }

    /// The parser limits this configuration asks for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_bulk_bytes: self.max_bulk_bytes,
            max_multibulk_len: self.max_multibulk_len,
            max_inline_bytes: self.max_inline_bytes,
        }
    }

    /// The subscriber output limits this configuration asks for.
    pub fn pubsub_limits(&self) -> PubSubLimits {
        PubSubLimits {
            hard_bytes: self.pubsub_hard_limit_bytes,
            soft_bytes: self.pubsub_soft_limit_bytes,
            soft_time: Duration::from_secs(self.pubsub_soft_limit_seconds),
        }
    }

    /// The settings `CONFIG GET` reports, as (name, value) pairs.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("bind", self.bind.to_string()),
            ("port", self.port.to_string()),
            ("http-port", self.http_port.to_string()),
            ("tls-port", self.tls_port.to_string()),
            ("https-port", self.https_port.to_string()),
            ("db", self.db.display().to_string()),
            ("durability", self.durability.to_string()),
            (
                "replication-timeout",
                format_duration(self.replication_timeout),
            ),
            ("promotion-timeout", format_duration(self.promotion_timeout)),
            ("maxclients", self.maxclients.to_string()),
            ("proto-max-bulk-len", self.max_bulk_bytes.to_string()),
            ("max-multibulk-len", self.max_multibulk_len.to_string()),
            ("max-inline-bytes", self.max_inline_bytes.to_string()),
            ("max-db-pages", self.max_db_pages.to_string()),
            (
                "client-query-buffer-limit",
                self.max_query_buffer_bytes.to_string(),
            ),
            ("timeout", self.timeout.to_string()),
            (
                "protected-mode",
                if self.protected_mode { "yes" } else { "no" }.to_string(),
            ),
            // Never reveal the password itself.
            (
                "requirepass",
                if self.requirepass.is_some() || self.password_file.is_some() {
                    "(set)"
                } else {
                    ""
                }
                .to_string(),
            ),
            ("max-deliveries", self.max_deliveries.to_string()),
            (
                "retain-events",
                self.retain_events
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            ),
            (
                "client-output-buffer-limit",
                format!(
                    "pubsub {} {} {}",
                    self.pubsub_hard_limit_bytes,
                    self.pubsub_soft_limit_bytes,
                    self.pubsub_soft_limit_seconds
                ),
            ),
            (
                "nats",
                self.nats.as_deref().map(mask_servers).unwrap_or_default(),
            ),
            ("nats-stream", self.nats_stream.clone()),
            ("nats-subject-prefix", self.nats_subject_prefix.clone()),
            ("nats-replicas", self.nats_replicas.to_string()),
            ("nats-user", self.nats_user.clone().unwrap_or_default()),
            // Never the secrets themselves.
            (
                "nats-password",
                if given(&self.nats_password).is_some() {
                    "(set)"
                } else {
                    ""
                }
                .to_string(),
            ),
            (
                "nats-token",
                if given(&self.nats_token).is_some() {
                    "(set)"
                } else {
                    ""
                }
                .to_string(),
            ),
            (
                "nats-credentials-file",
                path_setting(self.nats_credentials_file.as_deref()),
            ),
            ("nats-ca", path_setting(self.nats_ca.as_deref())),
            ("backup-dir", path_setting(self.backup_dir.as_deref())),
            ("unique-field", self.unique_fields.join(",")),
            (
                "webhook-retry-schedule",
                self.webhook_retry_schedule.to_string(),
            ),
            ("webhook-timeout", format_duration(self.webhook_timeout)),
            (
                "webhook-disable-after",
                format_duration(self.webhook_disable_after),
            ),
            (
                "webhook-allow-private",
                if self.webhook_allow_private {
                    "yes"
                } else {
                    "no"
                }
                .to_string(),
            ),
            ("webhook-ca", path_setting(self.webhook_ca.as_deref())),
            // Every acknowledged write is committed to SQLite before its reply, which
            // is what redis-benchmark asks about with these two.
            ("appendonly", "yes".to_string()),
            (
                "appendfsync",
                match self.durability {
                    Durability::Strict | Durability::Replicated => "always",
                    Durability::Normal => "everysec",
                }
                .to_string(),
            ),
            ("save", String::new()),
            ("databases", "1".to_string()),
        ]
    }
}

#[cfg(all(test, feature = "tools"))]
mod tests {
    use clap::Parser;

    use super::*;

    /// `userbus serve`'s flags alone.
    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        config: Config,
    }

    /// True (and says the test is skipped) when a `USERBUS_*` variable would set
    /// a flag, so that parsing would not show the flags' defaults.
    fn flags_set_by_environment() -> bool {
        let set = std::env::vars().any(|(k, _)| k.starts_with("USERBUS_"));
        if set {
            eprintln!("skipped: a USERBUS_* variable would set a flag");
        }
        set
    }

    /// The configuration `userbus serve ARGS` parses to.
    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Serve::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|s| s.config)
    }

    #[test]
    fn default_is_what_the_flags_default_to() {
        if flags_set_by_environment() {
            return;
        }
        let parsed = parse(&[]).expect("no flags parse");
        assert_eq!(format!("{:?}", parsed), format!("{:?}", Config::default()));
    }

    #[test]
    fn nats_flags_parse_and_refuse_bad_values_and_conflicts() {
        if flags_set_by_environment() {
            return;
        }
        let config = parse(&[
            "--nats",
            "nats://a:4222,b",
            "--nats-stream",
            "EVENTS",
            "--nats-subject-prefix",
            "acme.users",
            "--nats-replicas",
            "3",
            "--nats-token",
            "t",
            "--nats-ca",
            "ca.pem",
        ])
        .expect("parses");
        assert_eq!(config.nats.as_deref(), Some("nats://a:4222,b"));
        assert_eq!(config.nats_stream, "EVENTS");
        assert_eq!(config.nats_subject_prefix, "acme.users");
        assert_eq!(config.nats_replicas, 3);
        assert_eq!(config.nats_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.validate(), Ok(()));
        for bad in [
            &["--nats-stream", "A.B"][..],
            &["--nats-subject-prefix", "a.>"],
            &["--nats-replicas", "0"],
            &["--nats-replicas", "6"],
            &[
                "--nats-token",
                "t",
                "--nats-user",
                "u",
                "--nats-password",
                "p",
            ],
            &["--nats-credentials-file", "f", "--nats-token", "t"],
            &["--nats-user", "u"],
            &["--nats-password", "p"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn durations_read_as_the_flags_write_them() {
        for (text, ms) in [("5s", 5000), ("1500ms", 1500), ("2m", 120_000), ("3", 3000)] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "s", "5x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn replicated_durability_needs_nats_and_a_timeout() {
        if flags_set_by_environment() {
            return;
        }
        let alone = parse(&["--durability", "replicated"]).expect("parses");
        assert!(
            alone.validate().is_err_and(|e| e.contains("--nats")),
            "{:?}",
            alone.validate()
        );
        let config = parse(&[
            "--durability",
            "replicated",
            "--nats",
            "nats://a:4222",
            "--replication-timeout",
            "1500ms",
        ])
        .expect("parses");
        assert_eq!(config.durability, Durability::Replicated);
        assert_eq!(config.replication_timeout, Duration::from_millis(1500));
        assert_eq!(config.validate(), Ok(()));
        assert!(parse(&["--replication-timeout", "0s"]).is_err());
    }

    #[test]
    fn the_promotion_timeout_is_ten_seconds_unless_given() {
        if flags_set_by_environment() {
            return;
        }
        let config = parse(&["--follow", "--nats", "nats://a:4222"]).expect("parses");
        assert_eq!(config.promotion_timeout, DEFAULT_PROMOTION_TIMEOUT);
        let config = parse(&["--promotion-timeout", "750ms"]).expect("parses");
        assert_eq!(config.promotion_timeout, Duration::from_millis(750));
        assert!(parse(&["--promotion-timeout", "0s"]).is_err());
    }
}
