//! One-use tokens that start an event stream on a server with a password.
//!
//! A browser's `EventSource` cannot send `Authorization`, so `POST /events/token`
//! (itself behind the Bearer check) hands out a random token that
//! `GET /events?token=…` accepts once, within [`TOKEN_TTL`]. A token is never a
//! cookie: nothing is sent by the browser on its own, so no other route, and no
//! other service on the same host, can be reached with it, and the writes keep
//! needing the password itself. A token sits in a URL, where proxies may log it;
//! being spent by its first stream and dead after a minute keeps such a copy
//! worthless.

use std::fmt::Write;
use std::time::{Duration, Instant};

/// How long a token may wait for the stream it starts.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Tokens held at once; issuing one more forgets the oldest.
pub const MAX_TOKENS: usize = 1024;
/// Random bytes in a token (shown as twice as many hex digits).
const TOKEN_BYTES: usize = 16;

/// The tokens issued and not yet used or expired.
#[derive(Debug, Default)]
pub struct StreamTokens {
    /// Each token and when it stops being accepted, oldest first.
    issued: Vec<(String, Instant)>,
}

impl StreamTokens {
    /// A new token, accepted once until `now` + [`TOKEN_TTL`]; fails only when
    /// the system's random source cannot be read.
    pub fn issue(&mut self, now: Instant) -> std::io::Result<String> {
        let mut bytes = [0u8; TOKEN_BYTES];
        crate::auth::random_fill(&mut bytes)?;
        let mut token = String::with_capacity(2 * TOKEN_BYTES);
        for b in bytes {
            let _ = write!(token, "{b:02x}");
        }
        self.issued.retain(|(_, until)| *until > now);
        if self.issued.len() >= MAX_TOKENS {
            self.issued.remove(0);
        }
        self.issued.push((token.clone(), now + TOKEN_TTL));
        Ok(token)
    }

    /// True when `token` was issued, is unused and has not expired; it is spent.
    pub fn redeem(&mut self, token: &str, now: Instant) -> bool {
        self.issued.retain(|(_, until)| *until > now);
        // Every held token is compared in full, so timing says nothing about
        // which one (or how much of one) a guess matched.
        let mut found = None;
        for (i, (t, _)) in self.issued.iter().enumerate() {
            if crate::auth::password_matches(token.as_bytes(), t) {
                found = Some(i);
            }
        }
        found.map(|i| self.issued.remove(i)).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_once() {
        let mut tokens = StreamTokens::default();
        let now = Instant::now();
        let t = tokens.issue(now).unwrap();
        assert_eq!(t.len(), 2 * TOKEN_BYTES);
        assert!(!tokens.redeem("nope", now));
        assert!(tokens.redeem(&t, now));
        assert!(!tokens.redeem(&t, now));
    }

    #[test]
    fn a_token_expires_after_its_ttl() {
        let mut tokens = StreamTokens::default();
        let now = Instant::now();
        let late = tokens.issue(now).unwrap();
        let early = tokens.issue(now).unwrap();
        assert_ne!(late, early);
        assert!(tokens.redeem(&early, now + TOKEN_TTL - Duration::from_millis(1)));
        assert!(!tokens.redeem(&late, now + TOKEN_TTL));
    }

    #[test]
    fn issuing_past_the_cap_forgets_the_oldest() {
        let mut tokens = StreamTokens::default();
        let now = Instant::now();
        let first = tokens.issue(now).unwrap();
        for _ in 0..MAX_TOKENS {
            tokens.issue(now).unwrap();
        }
        assert!(!tokens.redeem(&first, now));
        assert_eq!(tokens.issued.len(), MAX_TOKENS);
    }
}
