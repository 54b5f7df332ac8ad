//! The server list in rotation: which server to try next and when.
//!
//! Servers are tried in turn. Each failed attempt on a server doubles that
//! server's wait before its next attempt (from the minimum up to the maximum),
//! and each wait is scaled by a random factor in [0.5, 1] so that many clients
//! cut off together do not come back together. A server that was connected and
//! dropped waits the minimum; a successful connection resets its count.
//!
//! A host name is resolved with the system resolver (which blocks) when an attempt
//! needs an address and none is cached, so at most once per round of its
//! addresses; an IP address never touches the resolver.

use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::event::ConnError;
use super::url::ServerAddr;

/// One server's place in the rotation.
#[derive(Debug)]
struct Slot {
    addr: ServerAddr,
    /// Addresses the host resolved to; the next attempt uses `resolved[next]`.
    resolved: Vec<SocketAddr>,
    next: usize,
    /// Failed attempts since the last connection.
    failures: u32,
    /// No attempt before this.
    not_before: Option<Instant>,
}

/// What a failed attempt changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait before this server's next attempt.
    pub delay: Duration,
    /// Failed attempts in a row on this server.
    pub failures: u32,
    /// True when the wait grew with this failure (false once at the maximum).
    pub grew: bool,
}

/// The servers, the one last tried, and the back-off state of each.
#[derive(Debug)]
pub struct Servers {
    slots: Vec<Slot>,
    current: Option<usize>,
    min_delay: Duration,
    max_delay: Duration,
    rng: Rng,
}

impl Servers {
    /// The rotation over `addrs`, every server due at once.
    pub fn new(addrs: Vec<ServerAddr>, min_delay: Duration, max_delay: Duration) -> Servers {
        let min_delay = min_delay.max(Duration::from_millis(1));
        Servers {
            slots: addrs
                .into_iter()
                .map(|addr| Slot {
                    addr,
                    resolved: Vec::new(),
                    next: 0,
                    failures: 0,
                    not_before: None,
                })
                .collect(),
            current: None,
            min_delay,
            max_delay: max_delay.max(min_delay),
            rng: Rng::new(),
        }
    }

    /// The server at `i`.
    pub fn addr(&self, i: usize) -> &ServerAddr {
        &self.slots[i].addr
    }

    /// The next server in turn that may be tried at `now`; it becomes current.
    pub fn due(&mut self, now: Instant) -> Option<usize> {
        let n = self.slots.len();
        let start = self.current.map_or(0, |c| c + 1);
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.slots[i].not_before.is_none_or(|t| t <= now))?;
        self.current = Some(i);
        Some(i)
    }

    /// When the earliest server may be tried again (`None` without servers).
    pub fn next_try(&self, now: Instant) -> Option<Instant> {
        self.slots.iter().map(|s| s.not_before.unwrap_or(now)).min()
    }

    /// The socket address for an attempt on server `i`, resolving its host if no
    /// address is cached.
    pub fn socket_addr(&mut self, i: usize) -> Result<SocketAddr, ConnError> {
        let slot = &mut self.slots[i];
        if let Ok(ip) = slot.addr.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, slot.addr.port));
        }
        if slot.next >= slot.resolved.len() {
            slot.resolved = (slot.addr.host.as_str(), slot.addr.port)
                .to_socket_addrs()
                .map_err(|e| ConnError::Resolve(e.to_string()))?
                .collect();
            slot.next = 0;
        }
        let addr = *slot
            .resolved
            .get(slot.next)
            .ok_or_else(|| ConnError::Resolve("no addresses".into()))?;
        slot.next += 1;
        Ok(addr)
    }

    /// Records a failed attempt on server `i` at `now`.
    pub fn failed(&mut self, i: usize, now: Instant) -> Backoff {
        let before = self.step(self.slots[i].failures);
        let slot = &mut self.slots[i];
        slot.failures = slot.failures.saturating_add(1);
        let failures = slot.failures;
        let step = self.step(failures);
        let delay = step.mul_f64(self.rng.unit_interval() * 0.5 + 0.5);
        self.slots[i].not_before = Some(now + delay);
        Backoff {
            delay,
            failures,
            grew: failures == 1 || step > before,
        }
    }

    /// Records a connection to server `i`.
    pub fn connected(&mut self, i: usize) {
        self.slots[i].failures = 0;
        self.slots[i].not_before = None;
    }

    /// Records that the connection to server `i` dropped at `now`: it waits the
    /// minimum before the next attempt.
    pub fn dropped(&mut self, i: usize, now: Instant) {
        let delay = self.min_delay.mul_f64(self.rng.unit_interval() * 0.5 + 0.5);
        self.slots[i].failures = 0;
        self.slots[i].not_before = Some(now + delay);
    }

    /// Random bytes for names (the inbox).
    pub fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// The un-jittered wait after `failures` failures.
    fn step(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.min_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }
}

/// SplitMix64 seeded from std's per-process random keys: jitter and inbox names
/// need unpredictability across processes, not cryptographic strength.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = RandomState::new().hash_one((std::process::id(), Instant::now()));
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit_interval(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Servers {
        let addrs = (0..n)
            .map(|i| ServerAddr {
                host: "127.0.0.1".into(),
                port: 4000 + i as u16,
                tls: false,
                credentials: None,
            })
            .collect();
        Servers::new(addrs, Duration::from_millis(100), Duration::from_secs(2))
    }

    #[test]
    fn servers_are_tried_in_turn_each_with_its_own_backoff() {
        let mut s = servers(3);
        let t0 = Instant::now();
        assert_eq!(s.due(t0), Some(0));
        s.failed(0, t0);
        assert_eq!(s.due(t0), Some(1));
        s.failed(1, t0);
        assert_eq!(s.due(t0), Some(2));
        s.failed(2, t0);
        assert_eq!(s.due(t0), None);
        let next = s.next_try(t0).unwrap();
        assert!(next >= t0 + Duration::from_millis(50) && next <= t0 + Duration::from_millis(100));
        assert!(s.due(t0 + Duration::from_millis(100)).is_some());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let mut s = servers(1);
        let t0 = Instant::now();
        let mut steps = Vec::new();
        for _ in 0..8 {
            let b = s.failed(0, t0);
            steps.push(b);
        }
        for (k, b) in steps.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << k)).min(Duration::from_secs(2));
            assert!(b.delay >= full / 2 && b.delay <= full, "{k}: {b:?}");
            assert_eq!(b.failures, k as u32 + 1);
        }
        // 100, 200, 400, 800, 1600 ms grow; then the 2 s cap holds.
        assert_eq!(
            steps.iter().map(|b| b.grew).collect::<Vec<_>>(),
            [true, true, true, true, true, true, false, false]
        );
        s.connected(0);
        assert_eq!(s.due(t0), Some(0));
        assert_eq!(s.failed(0, t0).failures, 1);
    }

    #[test]
    fn a_dropped_server_waits_the_minimum_and_others_go_first() {
        let mut s = servers(2);
        let t0 = Instant::now();
        assert_eq!(s.due(t0), Some(0));
        s.connected(0);
        s.dropped(0, t0);
        assert_eq!(s.due(t0), Some(1));
        s.failed(1, t0);
        assert_eq!(s.due(t0), None);
        assert_eq!(s.due(t0 + Duration::from_millis(100)), Some(0));
    }

    #[test]
    fn ip_addresses_skip_the_resolver_and_names_resolve() {
        let mut s = servers(1);
        assert_eq!(s.socket_addr(0).unwrap(), "127.0.0.1:4000".parse().unwrap());
        let mut named = Servers::new(
            vec![ServerAddr {
                host: "localhost".into(),
                port: 4222,
                tls: false,
                credentials: None,
            }],
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        assert_eq!(named.socket_addr(0).unwrap().port(), 4222);
    }
}
