//! Time: the poll timeout, due timers (accept back-off, blocked-read deadlines,
//! checkpoints, retention, HTTP sweeps) and the shutdown sequence.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::Events;

use super::{
    CHECKPOINT_RETRY, EVENTS_CAPACITY, IDLE_SWEEP, RETENTION_BATCH, RETENTION_INTERVAL, Reactor,
    SHUTDOWN_FLUSH_TIMEOUT,
};

impl Reactor {
    /// How long the next poll may wait: until the nearest timer, or not at all
    /// when connections have input left over from the last tick.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        if !self.carry.is_empty()
            || self.durable_behind
            || self.sse_behind
            || self.accept_more
            || self.relay_behind
            || self.shared.backups.in_progress()
            || self.follow_behind
            || self.webhooks.behind()
        {
            return Some(Duration::ZERO);
        }
        let first_deadline = self
            .blocked
            .iter()
            .filter_map(|&k| self.conns.get(k)?.block_deadline())
            .min();
        let first_retry = self
            .handlers
            .durable
            .iter()
            .filter_map(|h| h.retry_at)
            .min();
        let relay = self.relay.as_ref().and_then(|r| r.next_deadline());
        let held = self.replication.as_ref().and_then(|r| r.next_deadline());
        [
            self.timers.next(),
            first_deadline,
            first_retry,
            relay,
            held,
            self.follow_deadline(),
            self.kv_deadline(),
            self.webhooks
                .next_deadline(self.shared.stats.replica.read_only()),
            self.shared
                .store
                .warm_due_in(Instant::now())
                .map(|d| Instant::now() + d),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Runs what is due: the end of an accept back-off, WAL checkpoints.
    pub(super) fn run_timers(&mut self) {
        let timed = self.timers.any()
            || self.relay.is_some()
            || self.follow.is_some()
            || self.webhooks.active()
            || self.blocked.iter().any(|&k| {
                self.conns
                    .get(k)
                    .is_some_and(|c| c.block_deadline().is_some())
            });
        if !timed && !self.shared.store.checkpoint_due() {
            // Nothing is due without a clock (the common tick): skip reading it.
            return;
        }
        let now = Instant::now();
        self.relay_timers(now);
        self.replicated_timers(now);
        self.follow_timers(now);
        self.webhook_timers(now);
        if let Some(until) = self.timers.accept_paused_until
            && now >= until
        {
            self.timers.accept_paused_until = None;
            self.accept_all();
        }
        if !self.blocked.is_empty() && self.time_out_readers(now) {
            self.flush_touched();
        }
        if self.timers.idle_sweep_at.is_some_and(|t| now >= t) {
            self.close_idle(now);
        }
        if self.timers.http_sweep_at.is_some_and(|t| now >= t) {
            self.sweep_http(now);
        }
        if self.timers.trim_at.is_some_and(|t| now >= t) {
            self.trim_events(now);
        }
        let due = self.timers.checkpoint_at.is_some_and(|t| now >= t);
        if due || self.shared.store.checkpoint_due() {
            self.timers.checkpoint_at = if self.shared.store.checkpoint() {
                None
            } else {
                Some(now + CHECKPOINT_RETRY)
            };
        }
    }

    /// Trims the event log to `--retain-events`, below every durable handler's
    /// offset; a full batch comes back at once for more.
    pub(super) fn trim_events(&mut self, now: Instant) {
        let Some(retention) = self.shared.config.retain_events else {
            self.timers.trim_at = None;
            return;
        };
        let floor = self
            .handlers
            .durable
            .iter()
            .map(|h| h.offset)
            // Nor past what the JetStream relay has not confirmed.
            .chain(self.relay.as_ref().map(|_| self.relay_stored))
            // Nor past what an enabled webhook endpoint has not passed.
            .chain(self.webhooks.floor())
            .min()
            .unwrap_or(i64::MAX);
        let before = retention
            .max_age
            .map(|a| crate::clock::now_ms() - i64::try_from(a.as_millis()).unwrap_or(i64::MAX));
        match self
            .shared
            .store
            .trim(retention.max_entries, before, floor, RETENTION_BATCH)
        {
            Ok(n) => {
                if n > 0 {
                    log::debug!("trimmed {n} events");
                    self.shared.stats.trimmed_events += n as u64;
                }
                self.timers.trim_at = Some(if n >= RETENTION_BATCH {
                    now
                } else {
                    now + RETENTION_INTERVAL
                });
            }
            Err(e) => {
                log::warn!("trimming the event log failed (will retry): {e}");
                self.timers.trim_at = Some(now + RETENTION_INTERVAL);
            }
        }
    }

    pub(super) fn drain_signals(&mut self) {
        if let Some(rx) = &mut self.signals {
            let mut buf = [0u8; 64];
            while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
        }
    }

    /// Stops accepting; the current tick still finishes and commits.
    pub(super) fn begin_stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        log::info!("{why}: shutting down ({} clients)", self.conns.len());
        self.stopping = true;
        for mut l in self.listeners.iter_mut().filter_map(Option::take) {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    /// Flushes the last replies (for a bounded time), closes every connection,
    /// stops the checkpointer thread, checkpoints.
    pub(super) fn finish(&mut self) {
        self.settle_held();
        self.settle_kv_writers();
        self.store_relay_position();
        if let Some(relay) = self.relay.as_mut() {
            relay.shutdown(self.poll.registry());
        }
        self.stop_following();
        let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let pending: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.is_closed() && c.pending_output() > 0)
                .map(|(k, _)| k)
                .collect();
            let now = Instant::now();
            if pending.is_empty() || now >= deadline {
                break;
            }
            for k in pending {
                self.flush(k);
            }
            self.close_finished();
            if let Err(e) = self.poll.poll(&mut events, Some(deadline - now))
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
        }
        for mut conn in self.conns.drain() {
            conn.deregister(self.poll.registry());
        }
        self.shared.stats.connected_clients = 0;
        self.shared.store.stop_checkpointer();
        self.shared.store.stop_imager();
        let _ = self.shared.store.checkpoint();
        self.shared.store.save_index();
        log::info!("stopped");
    }

    /// Closes connections idle past `--timeout`, as Redis does: without a reply.
    /// Subscribers, blocked readers and event streams wait by design and stay.
    pub(super) fn close_idle(&mut self, now: Instant) {
        let limit = Duration::from_secs(self.shared.config.timeout);
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.is_open()
                    && !c.is_blocked()
                    && !c.is_subscriber()
                    && now.duration_since(c.session().last_active) >= limit
            })
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            if let Some(conn) = self.conns.get_mut(k) {
                log::debug!(
                    "conn={} peer={} reason=idle for {}s",
                    conn.id(),
                    conn.peer(),
                    self.shared.config.timeout
                );
                self.shared.stats.idle_closes += 1;
                conn.abort();
                self.closing.push(k);
            }
        }
        self.close_finished();
        self.timers.idle_sweep_at = Some(now + IDLE_SWEEP);
    }
}
