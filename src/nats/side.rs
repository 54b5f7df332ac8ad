//! Side requests: requests of their own that a state machine owning a NATS
//! connection (the relay, the follower's consumer) lets others send on it (the
//! durable handler offsets of `nats::offsets`, the webhook endpoints of
//! `nats::webhook_kv`). The owner keeps their ids in a
//! [`SideRequests`] and hands their replies over untouched: they never enter its
//! own accounting (the relay's publish window, its acks).

use super::client::Client;
use super::event::{PublishError, RequestId};
use super::headers::Status;

/// Side requests a connection's owner waits for at most; the oldest is
/// forgotten beyond it (its reply, if it ever comes, is dropped).
const MAX_SIDE_WAITING: usize = 1024;

/// A reply to a side request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideReply {
    /// The request it answers.
    pub id: RequestId,
    /// The server's status, for replies it generated (503: no responders).
    pub status: Option<Status>,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Requests sent on a connection that a state machine owns for its own
/// requests, and their replies, which the owner hands over untouched.
#[derive(Debug, Default)]
pub struct SideRequests {
    waiting: Vec<RequestId>,
    replies: Vec<SideReply>,
}

impl SideRequests {
    /// Sends a request with `headers` through `client` and waits for its reply.
    pub fn send(
        &mut self,
        client: &mut Client,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<RequestId, PublishError> {
        let id = client.request(subject, headers, payload)?;
        if self.waiting.len() >= MAX_SIDE_WAITING {
            self.waiting.remove(0);
        }
        self.waiting.push(id);
        Ok(id)
    }

    /// True when `id` is a side request's: its reply goes to [`Self::keep`].
    pub fn waits_for(&self, id: RequestId) -> bool {
        self.waiting.contains(&id)
    }

    /// Keeps the reply to side request `id`.
    pub fn keep(&mut self, id: RequestId, status: Option<Status>, payload: Vec<u8>) {
        self.forget(id);
        self.replies.push(SideReply {
            id,
            status,
            payload,
        });
    }

    /// Stops waiting for `id`.
    pub fn forget(&mut self, id: RequestId) {
        self.waiting.retain(|&w| w != id);
    }

    /// The replies kept since the last call.
    pub fn take(&mut self) -> Vec<SideReply> {
        std::mem::take(&mut self.replies)
    }
}

/// A connection side requests go through.
pub trait SideLink {
    /// True while connected (requests sent otherwise would wait for the next
    /// connection).
    fn side_connected(&self) -> bool;
    /// Sends a side request.
    fn side_request(&mut self, subject: &str, payload: &[u8]) -> Result<RequestId, PublishError> {
        self.side_request_with(subject, &[], payload)
    }
    /// Sends a side request with headers (a KV delete marker's `KV-Operation`).
    fn side_request_with(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<RequestId, PublishError>;
    /// Stops waiting for side request `id`.
    fn side_forget(&mut self, id: RequestId);
}

/// An owner's connection lent for side requests: its client and its
/// [`SideRequests`].
#[derive(Debug)]
pub struct Side<'a> {
    client: &'a mut Client,
    requests: &'a mut SideRequests,
}

impl<'a> Side<'a> {
    /// Lends `client` for side requests kept in `requests`.
    pub fn new(client: &'a mut Client, requests: &'a mut SideRequests) -> Side<'a> {
        Side { client, requests }
    }

    /// The replies to side requests that came since the last call.
    pub fn take_replies(&mut self) -> Vec<SideReply> {
        self.requests.take()
    }
}

impl SideLink for Side<'_> {
    fn side_connected(&self) -> bool {
        self.client.is_connected()
    }

    fn side_request_with(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<RequestId, PublishError> {
        self.requests.send(self.client, subject, headers, payload)
    }

    fn side_forget(&mut self, id: RequestId) {
        self.requests.forget(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_replies_are_kept_only_for_side_requests() {
        let reply = |id, payload: &[u8]| SideReply {
            id,
            status: None,
            payload: payload.to_vec(),
        };
        let mut side = SideRequests::default();
        side.waiting.push(4);
        assert!(side.waits_for(4) && !side.waits_for(5));
        side.keep(4, None, b"x".to_vec());
        assert!(!side.waits_for(4));
        assert_eq!(side.take(), [reply(4, b"x")]);
        assert!(side.take().is_empty());
        side.waiting.push(6);
        side.forget(6);
        assert!(!side.waits_for(6));
    }
}
