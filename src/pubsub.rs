//! Live pub/sub: who listens to which channel or pattern, and the fan-out of
//! committed events to them (at-most-once: a subscriber that is not connected, or is
//! dropped at its output-buffer limit, misses what happens meanwhile and resumes from
//! the durable log).
//!
//! The index maps channels and patterns to connection keys; each connection keeps
//! its own list too (in its session) so that closing it removes exactly its entries.

use std::collections::HashMap;

/// The subscription index.
#[derive(Debug, Default)]
pub struct PubSub {
    channels: HashMap<Vec<u8>, Vec<usize>>,
    patterns: Vec<(Vec<u8>, Vec<usize>)>,
}

/// Where one event goes: exact-channel subscribers and (pattern, subscriber) pairs.
#[derive(Debug, Default)]
pub struct Targets<'a> {
    /// Connections subscribed to the channel itself.
    pub direct: &'a [usize],
    /// Patterns matching the channel, with their subscribers.
    pub patterns: Vec<(&'a [u8], &'a [usize])>,
}

impl PubSub {
    /// Adds `key` to `channel`; false when it was already there.
    pub fn subscribe(&mut self, key: usize, channel: &[u8]) -> bool {
        let subs = self.channels.entry(channel.to_vec()).or_default();
        if subs.contains(&key) {
            return false;
        }
        subs.push(key);
        true
    }

    /// Removes `key` from `channel`; false when it was not there.
    pub fn unsubscribe(&mut self, key: usize, channel: &[u8]) -> bool {
        let Some(subs) = self.channels.get_mut(channel) else {
            return false;
        };
        let Some(i) = subs.iter().position(|&k| k == key) else {
            return false;
        };
        subs.swap_remove(i);
        if subs.is_empty() {
            self.channels.remove(channel);
        }
        true
    }

    /// Adds `key` to `pattern`; false when it was already there.
    pub fn psubscribe(&mut self, key: usize, pattern: &[u8]) -> bool {
        match self.patterns.iter_mut().find(|(p, _)| p == pattern) {
            Some((_, subs)) if subs.contains(&key) => false,
            Some((_, subs)) => {
                subs.push(key);
                true
            }
            None => {
                self.patterns.push((pattern.to_vec(), vec![key]));
                true
            }
        }
    }

    /// Removes `key` from `pattern`; false when it was not there.
    pub fn punsubscribe(&mut self, key: usize, pattern: &[u8]) -> bool {
        let Some(pi) = self.patterns.iter().position(|(p, _)| p == pattern) else {
            return false;
        };
        let subs = &mut self.patterns[pi].1;
        let Some(i) = subs.iter().position(|&k| k == key) else {
            return false;
        };
        subs.swap_remove(i);
        if subs.is_empty() {
            self.patterns.swap_remove(pi);
        }
        true
    }

    /// Where an event on `channel` goes.
    pub fn targets(&self, channel: &[u8]) -> Targets<'_> {
        Targets {
            direct: self.channels.get(channel).map_or(&[][..], Vec::as_slice),
            patterns: self
                .patterns
                .iter()
                .filter(|(p, _)| crate::glob::matches(p, channel))
                .map(|(p, subs)| (p.as_slice(), subs.as_slice()))
                .collect(),
        }
    }

    /// True when nobody listens.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.patterns.is_empty()
    }

    /// Distinct channels with at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Distinct patterns with at least one subscriber.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_come_and_go() {
        let mut ps = PubSub::default();
        assert!(ps.subscribe(1, b"user.registered"));
        assert!(!ps.subscribe(1, b"user.registered"));
        assert!(ps.psubscribe(2, b"user.*"));
        let t = ps.targets(b"user.registered");
        assert_eq!(t.direct, &[1]);
        assert_eq!(t.patterns, vec![(&b"user.*"[..], &[2][..])]);
        assert!(ps.targets(b"user.unregistered").direct.is_empty());
        assert!(ps.unsubscribe(1, b"user.registered"));
        assert!(!ps.unsubscribe(1, b"user.registered"));
        assert!(ps.punsubscribe(2, b"user.*"));
        assert!(ps.is_empty());
    }
}
