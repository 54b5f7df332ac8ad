//! Webhooks: committed events delivered to HTTP endpoints, signed and retried
//! (Standard Webhooks).
//!
//! - [`transport`]: the HTTP/1.1 client on the reactor: one keep-alive connection
//!   and one request in flight per endpoint, timeouts, capped response bodies
//!   (its bytes move through `conn::outbound`); [`response`] reads a response
//!   incrementally.
//! - [`url`]: an endpoint's URL; [`private`]: the addresses refused without
//!   `--webhook-allow-private`; [`resolve`]: the resolver thread for host names.

pub mod private;
pub mod resolve;
pub mod response;
pub mod transport;
pub mod url;

#[cfg(test)]
mod tests;
