//! userbus: an event-driven user registry on a single-threaded reactor.
//!
//! One thread, one hand-written `mio` poll loop: clients speak RESP (or inline
//! lines) on TCP, users and their events persist in SQLite with one transaction per
//! tick, and committed events reach the handler callbacks an embedding program
//! registered.
//!
//! # The embedding API
//! [`Server::builder`] takes a [`Config`] (with [`Durability`] and the limits in
//! [`config`]) and gives a [`Builder`] for handler callbacks, which receive each
//! committed [`Event`] (its [`EventKind`]); [`Server::run`] serves until a signal or
//! a [`ShutdownHandle`] stops it. Failures are an [`Error`]. That is the whole
//! public surface: the modules below are the crate's own (`cargo doc
//! --document-private-items` shows them).
//!
//! Cargo feature `tools` (default): the `userbus` binary with `userbus cli` and
//! `userbus bench`, and the crates only they use (clap, rustyline, indicatif,
//! hdrhistogram, plotters). An embedding program depends on
//! `userbus = { version = "0.1", default-features = false }`.
//!
//! # Modules, from the bytes up
//! - `protocol`: request parsing (RESP multibulk and inline) and reply encoding.
//! - `cmd`: the one request context (RESP and HTTP) and the command table; one
//!   command a file.
//! - `registry`: naming rules and register/unregister, shared by RESP and HTTP.
//! - `conn`: one connection as a state machine: buffers, what it speaks, its
//!   blocking wait, the tick's reply blocks, interest.
//! - `session`: a client's settings (protocol, name, subscriptions, auth).
//! - `reactor`: the poll loop, the tick, group commit, timers.
//! - `store`: SQLite: schema and migrations, the tick's transaction and batched
//!   writes, the in-memory users index, the event log, consumer groups, pending
//!   entries and dead letters.
//! - `http`: the HTTP side: REST routes, metrics, health, Server-Sent Events.
//! - `events`: the event type, handler dispatch, live subscriptions (pub/sub)
//!   and the event log seen as the Redis stream `events`.
//! - `server`: the builder an embedding program uses.
//! - `nats`: a NATS client on the reactor (protocol, JetStream API, the
//!   connection state machine), for the JetStream relay.
//! - `replica`: the node's role (primary or `--follow`er), READONLY, promotion
//!   and what INFO replication shows; the follower's reactor side is
//!   `reactor/follow.rs`, its feed `nats::consumer`.
//! - `tls`: the rustls server configuration (sessions live in `conn`).
//! - `webhook`: webhook endpoints: Standard Webhooks signing, the delivery
//!   engine's decisions, the HTTP/1.1 client on the reactor, the `WEBHOOK` and
//!   `/webhooks` checks; the reactor's side is `reactor/webhooks.rs`, the
//!   endpoints' rows `store::webhooks`.
//! - `client`: `userbus cli`, the line client (its own RESP reader and
//!   redis-cli's reply formatting); `tools` feature.
//! - `bench`: the load generator behind `userbus bench` and `cargo bench` (a
//!   client of its own: a `mio` reactor per load thread, a reply scanner, HDR
//!   latency histograms); `tools` feature.
//! - [`config`]: every setting and the limits an operator sets (docs/OPERATIONS.md
//!   lists the fixed ones that live beside their code); `error`: the error type;
//!   `auth`: the password check; `metrics`: counters; `glob`: Redis-style patterns;
//!   `clock`: time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The embedding API: `config` and the items re-exported below.
pub mod config;
mod error;
mod server;

// Reached by tests/, benches/ and fuzz/, which are crates of their own: the
// parsers and limits that proptest, libFuzzer and tests/http.rs drive (`protocol`,
// `http`), `store::SCHEMA_VERSION` (tests/durability.rs), `store::Store` (cargo
// bench's storage ceiling, fuzz/command_args) and `clock::now_ms`. Public so those
// crates link them, hidden from the docs because they are not the embedding API and
// change without notice.
#[doc(hidden)]
pub mod clock;
#[doc(hidden)]
pub mod http;
#[doc(hidden)]
pub mod protocol;
#[doc(hidden)]
pub mod store;

// The tools: `userbus cli` and `userbus bench` (the `tools` feature). Public for the
// binary and for `cargo bench`, which are crates of their own.
#[cfg(feature = "tools")]
pub mod bench;
#[cfg(feature = "tools")]
pub mod client;

pub(crate) mod auth;
pub(crate) mod cmd;
pub(crate) mod conn;
pub(crate) mod events;
pub(crate) mod glob;
pub(crate) mod metrics;
pub(crate) mod reactor;
pub(crate) mod registry;
pub(crate) mod replica;
pub(crate) mod session;
pub(crate) mod tls;
pub(crate) mod webhook;
// The relay and the follower's consumer use most of the NATS client; header
// iteration and a few error codes are used by its own tests only. Public, hidden
// from the docs, for benches/nats.rs, which measures what JetStream accepts
// through this client.
#[doc(hidden)]
#[cfg_attr(not(test), allow(dead_code))]
pub mod nats;

pub use config::{Config, Durability};
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use reactor::ShutdownHandle;
pub use server::{Builder, Server};

/// The command layer as `fuzz/fuzz_targets/command_args.rs` drives it: the command
/// table, everything a command's context holds, and the argument helpers. Public
/// only for that fuzz target (a crate of its own); not the embedding API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cmd::{Backups, COMMANDS, Ctx, Outcome, Shared, execute};
    pub use crate::events::PubSub;
    pub use crate::metrics::Stats;
    pub use crate::session::Session;

    /// Name and field checks (`crate::registry`).
    pub mod registry {
        pub use crate::registry::{check_field_name, check_fields, check_name};
    }

    /// Redis-style patterns (`crate::glob`).
    pub mod glob {
        pub use crate::glob::matches;
    }

    /// Stream key and id parsing (`crate::events::stream`).
    pub mod stream {
        pub use crate::events::stream::{
            exact_id, id_text, range_end, range_start, read_after, stream,
        };
    }
}
