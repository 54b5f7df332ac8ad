//! The wire protocol: RESP requests (multibulk or inline) in, RESP2/RESP3 replies out.

pub mod reply;
pub mod request;

pub use reply::Reply;
pub use request::{Args, Parsed, ProtocolError, RequestParser, split_line};
