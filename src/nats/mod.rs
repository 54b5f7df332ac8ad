//! NATS: the client the JetStream relay publishes through, written on the reactor
//! (a mio socket speaking the NATS text protocol; no async runtime, no threads).
//!
//! # Modules, from the bytes up
//! - [`proto`]: the incremental parser of the server's operations (INFO, MSG,
//!   HMSG, PING, PONG, +OK, -ERR) and the encoders of the client's (CONNECT, PUB,
//!   HPUB, SUB, UNSUB, PING, PONG); [`headers`]: the header block with its status
//!   line (503 no responders, 408 request timeout, 100 heartbeat).
//! - [`jetstream`]: the JetStream API bodies and answers the relay needs (stream
//!   create, info and compatibility check, message get, publish acks, err_codes).
//! - [`url`]: `--nats` server lists with credentials.
//! - [`link`]: the NATS parser over one socket's bytes (`conn::outbound` moves
//!   them: the socket, its TLS session and buffers; [`link::tls_config`]
//!   builds the rustls configuration from `--nats-ca`); `servers`: the rotation over
//!   the list with back-off; [`client`]: the connection's state machine;
//!   [`event`]: what it reports.
//! - [`relay`]: the primary's relay into the stream; [`consumer`]: a follower's
//!   ordered push consumer reading it back; [`offsets`]: durable handler offsets
//!   in a KV bucket, through the relay's or the consumer's connection lent as a
//!   [`side::Side`]; [`webhook_kv`]: the webhook endpoints in a KV bucket, the
//!   same way.
//!
//! # The state machine
//! ```text
//! Disconnected{retry_at} ──due──▶ Connecting ──TCP up──▶ AwaitingInfo ──INFO──┐
//!        ▲                                                                     │
//!        │                       ┌───────── TlsHandshake ◀── tls:// or ◀──────┤
//!        │                       ▼           (rustls)        tls_required      │
//!        │                  Handshaking (CONNECT + PING sent) ◀──── plain ─────┘
//!        │                       │ PONG: replay SUBs, send queued publishes
//!        │                       ▼
//!        └── any error ──── Connected (keepalive PINGs, PONGs to the server's)
//! ```
//! Every step before `Connected` shares one connect timeout. A failed attempt
//! backs that server off (doubling from the minimum to the maximum, jittered) and
//! moves on to the next listed server that is due; a dropped connection waits the
//! minimum. `-ERR` ends the connection, except a permissions violation, after
//! which the server keeps it.
//!
//! # The interface to the reactor
//! The client owns its socket and registers it under the token it was given;
//! nothing it does blocks (except resolving a host name, see `servers`):
//! - [`client::Client::new`]`(options, token)`; the first attempt is due at once;
//! - [`client::Client::ready`]`(registry, readable, writable, now)` for each
//!   readiness event of the token; [`client::Client::on_timer`]`(registry, now)`
//!   once [`client::Client::next_deadline`] has passed;
//! - [`client::Client::subscribe`], [`client::Client::publish`] and
//!   [`client::Client::request`] queue; [`client::Client::flush`]`(registry, now)`
//!   writes what they queued, so the reactor calls it before it polls again;
//! - [`client::Client::poll_event`] drains [`event::Event`]s: `Connected`,
//!   `Disconnected`, `ConnectFailed`, `Message`, `Reply` (matched to a request by
//!   the last token of this client's `_INBOX.<random>.<id>`), `ServerError`.
//!
//! A publish queued while not connected goes out after the next connection's
//! subscriptions; what was queued on a connection that drops is lost, and a
//! request's reply may then never come, so the caller keeps its own timeouts.
pub mod client;
pub mod consumer;
pub mod event;
pub mod headers;
pub mod jetstream;
pub mod link;
pub mod offsets;
pub mod proto;
pub mod relay;
mod servers;
pub mod side;
pub mod url;
pub mod webhook_kv;

#[cfg(test)]
mod tests;
