//! Webhooks: every committed event delivered to the HTTP endpoints registered
//! with `WEBHOOK ADD`, signed as Standard Webhooks specifies, in seq order per
//! endpoint, retried with back-off, dead-lettered after the last attempt.
//!
//! - [`sign`]: secrets (`whsec_` + base64) and the `webhook-signature` header;
//! - [`engine`]: what each endpoint sends next and what an outcome does to it
//!   (plain decisions, no I/O); the reactor's side is `reactor/webhooks.rs`;
//! - [`admin`]: the checks and store calls behind `WEBHOOK ...` and `/webhooks`.

pub mod admin;
pub mod engine;
pub mod sign;
