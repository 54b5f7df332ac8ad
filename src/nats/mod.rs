//! NATS: the client connection the JetStream relay publishes through, written on
//! the reactor (a mio socket speaking the NATS text protocol; no runtime, no
//! threads).
//!
//! - [`headers`]: the header block of `HPUB`/`HMSG`, with its status line.
//! - [`proto`]: the incremental parser of server operations and the encoders of
//!   client operations.
pub mod headers;
pub mod jetstream;
pub mod proto;
pub mod url;
