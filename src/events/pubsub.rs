//! Live pub/sub: who listens to which channel or pattern, and the fan-out of
//! committed events to them (at-most-once: a subscriber that is not connected, or is
//! dropped at its output-buffer limit, misses what happens meanwhile and resumes from
//! the durable log).
//!
//! The index maps channels and patterns to connection keys; each connection keeps
//! its own list too (in its session) so that closing it removes exactly its entries.

use std::collections::{HashMap, HashSet};

/// The subscription index.
#[derive(Debug, Default)]
pub struct PubSub {
    channels: HashMap<Vec<u8>, Vec<usize>>,
    patterns: Vec<(Vec<u8>, Vec<usize>)>,
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

    /// The connections subscribed to `channel` itself.
    pub fn subscribers(&self, channel: &[u8]) -> &[usize] {
        self.channels.get(channel).map_or(&[][..], Vec::as_slice)
    }

    /// The patterns matching `channel`, each with its subscribers.
    pub fn matching<'a>(
        &'a self,
        channel: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [usize])> + 'a {
        self.patterns
            .iter()
            .filter(move |(p, _)| crate::glob::matches(p, channel))
            .map(|(p, subs)| (p.as_slice(), subs.as_slice()))
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

    /// Connections with at least one channel or pattern. Counted from the index
    /// when asked (a metrics scrape), so subscribing keeps no count of its own.
    pub fn connection_count(&self) -> usize {
        let channels = self.channels.values().flatten();
        let patterns = self.patterns.iter().flat_map(|(_, subs)| subs);
        channels.chain(patterns).collect::<HashSet<_>>().len()
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
        assert!(ps.psubscribe(1, b"user.*"));
        assert_eq!(ps.connection_count(), 2);
        assert!(ps.punsubscribe(1, b"user.*"));
        assert!(!ps.punsubscribe(1, b"user.*"));
        assert_eq!(ps.connection_count(), 2);
        assert_eq!(ps.subscribers(b"user.registered"), &[1]);
        assert_eq!(
            ps.matching(b"user.registered").collect::<Vec<_>>(),
            vec![(&b"user.*"[..], &[2][..])]
        );
        assert!(ps.subscribers(b"user.unregistered").is_empty());
        assert!(ps.unsubscribe(1, b"user.registered"));
        assert!(!ps.unsubscribe(1, b"user.registered"));
        assert_eq!(ps.connection_count(), 1);
        assert!(ps.punsubscribe(2, b"user.*"));
        assert!(ps.is_empty());
        assert_eq!(ps.connection_count(), 0);
    }
}
