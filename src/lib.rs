//! userbus: an event-driven user registry on a single-threaded reactor.
//!
//! One thread, one hand-written `mio` poll loop: clients speak RESP (or inline
//! lines) on TCP, users and their events persist in SQLite with one transaction per
//! tick, and committed events reach the handler callbacks an embedding program
//! registered.
//!
//! # Modules, from the bytes up
//! - [`protocol`]: request parsing (RESP multibulk and inline) and reply encoding.
//! - [`cmd`]: the command table; one command a file.
//! - [`registry`]: naming rules and register/unregister, shared by RESP and HTTP.
//! - [`conn`]: one connection's buffers, parse progress and interest.
//! - [`reactor`]: the poll loop, the tick, group commit, timers.
//! - [`store`]: SQLite schema, statements and the tick's transaction.
//! - [`users`]: the in-memory index of users (unique names, LOOKUP's read path).
//! - [`stream`]: the event log as the Redis stream `events`.
//! - [`groups`]: consumer groups, pending entries and dead letters in SQLite.
//! - [`http`]: the HTTP side: REST routes, metrics, health, Server-Sent Events.
//! - [`events`]: the event type and handler dispatch.
//! - [`pubsub`]: live subscriptions and the fan-out of committed events.
//! - [`server`]: the builder an embedding program uses.
//! - [`tls`]: the rustls server configuration (sessions live in [`conn`]).
//! - [`client`]: `userbus cli`, the line client (its own RESP reader and
//!   redis-cli's reply formatting).
//! - [`bench`]: the load generator behind `userbus bench` and `cargo bench` (a
//!   client of its own: a `mio` reactor per load thread, a reply scanner, HDR
//!   latency histograms).
//! - [`config`]: every setting and limit; [`error`]: the error type;
//!   [`auth`]: the password check; [`metrics`]: counters; [`glob`]: Redis-style patterns; [`clock`]: time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod bench;
pub mod client;
pub mod clock;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod error;
pub mod events;
pub mod glob;
pub mod groups;
pub mod http;
pub mod metrics;
// Wired into the reactor by the JetStream relay.
#[cfg_attr(not(test), allow(dead_code))]
mod nats;
pub mod protocol;
pub mod pubsub;
pub mod reactor;
pub mod registry;
pub mod server;
pub mod store;
pub mod stream;
pub mod tls;
pub mod users;

pub use config::{Config, Durability};
pub use error::{Error, Result};
pub use events::{Event, EventKind};
pub use reactor::ShutdownHandle;
pub use server::{Builder, Server};
