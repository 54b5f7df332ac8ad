//! Webhooks: every committed event delivered to the HTTP endpoints registered
//! with `WEBHOOK ADD`, signed as Standard Webhooks specifies, in seq order per
//! endpoint, retried with back-off, dead-lettered after the last attempt.
//!
//! - [`sign`]: secrets (`whsec_` + base64) and the `webhook-signature` header;
//! - [`engine`]: what each endpoint sends next and what an outcome does to it
//!   (plain decisions, no I/O); the reactor's side is `reactor/webhooks.rs`;
//! - [`admin`]: the checks and store calls behind `WEBHOOK ...` and `/webhooks`;
//! - [`status`]: what INFO `# Webhooks` and `/metrics` show;
//! - [`transport`]: the HTTP/1.1 client on the reactor: one keep-alive connection
//!   and one request in flight per endpoint, timeouts, capped response bodies
//!   (its bytes move through `conn::outbound`); [`response`] reads a response
//!   incrementally.
//! - [`url`]: an endpoint's URL; [`private`]: the addresses refused without
//!   `--webhook-allow-private`; [`resolve`]: the resolver thread for host names.

pub mod admin;
pub mod engine;
pub mod private;
pub mod resolve;
pub mod response;
pub mod sign;
pub mod status;
pub mod transport;
pub mod url;

#[cfg(test)]
mod tests;
