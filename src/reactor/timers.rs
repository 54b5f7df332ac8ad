//! Time: the poll timeout, due timers (accept back-off, blocked-read deadlines,
//! checkpoints, retention, HTTP sweeps) and the shutdown sequence.

use super::*;

impl Reactor {
    /// How long the next poll may wait: until the nearest timer, or not at all
    /// when connections have input left over from the last tick.
    pub(super) fn poll_timeout(&self) -> Option<Duration> {
        if !self.carry.is_empty() || self.durable_behind || self.sse_behind || self.accept_more {
            return Some(Duration::ZERO);
        }
        let first_deadline = self.waiters.iter().filter_map(|w| w.deadline).min();
        let first_retry = self
            .handlers
            .durable
            .iter()
            .filter_map(|h| h.retry_at)
            .min();
        [
            self.accept_paused_until,
            self.checkpoint_at,
            first_deadline,
            first_retry,
            self.trim_at,
            self.http_sweep_at,
            self.idle_sweep_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(Instant::now()))
    }

    /// Runs what is due: the end of an accept back-off, WAL checkpoints.
    pub(super) fn run_timers(&mut self) {
        let timed = self.accept_paused_until.is_some()
            || self.idle_sweep_at.is_some()
            || self.http_sweep_at.is_some()
            || self.trim_at.is_some()
            || self.checkpoint_at.is_some()
            || self.waiters.iter().any(|w| w.deadline.is_some());
        if !timed && !self.store.checkpoint_due() {
            // Nothing is due without a clock (the common tick): skip reading it.
            return;
        }
        let now = Instant::now();
        if let Some(until) = self.accept_paused_until
            && now >= until
        {
            self.accept_paused_until = None;
            self.accept_all();
        }
        if self
            .waiters
            .iter()
            .any(|w| w.deadline.is_some_and(|d| now >= d))
        {
            let (expired, waiting) = std::mem::take(&mut self.waiters)
                .into_iter()
                .partition(|w| w.deadline.is_some_and(|d| now >= d));
            self.waiters = waiting;
            let expired: Vec<Waiter> = expired;
            for w in &expired {
                self.unblock(w, Some(|out: &mut Reply<'_>| out.null_array()));
            }
            self.flush_touched();
        }
        if self.idle_sweep_at.is_some_and(|t| now >= t) {
            self.close_idle(now);
        }
        if self.http_sweep_at.is_some_and(|t| now >= t) {
            self.sweep_http(now);
        }
        if self.trim_at.is_some_and(|t| now >= t) {
            self.trim_events(now);
        }
        let due = self.checkpoint_at.is_some_and(|t| now >= t);
        if due || self.store.checkpoint_due() {
            self.checkpoint_at = if self.store.checkpoint() {
                None
            } else {
                Some(now + CHECKPOINT_RETRY)
            };
        }
    }

    /// Trims the event log to `--retain-events`, below every durable handler's
    /// offset; a full batch comes back at once for more.
    pub(super) fn trim_events(&mut self, now: Instant) {
        let Some(retention) = self.config.retain_events else {
            self.trim_at = None;
            return;
        };
        let floor = self
            .handlers
            .durable
            .iter()
            .map(|h| h.offset)
            .min()
            .unwrap_or(i64::MAX);
        let before = retention
            .max_age
            .map(|a| crate::clock::now_ms() - i64::try_from(a.as_millis()).unwrap_or(i64::MAX));
        match self
            .store
            .trim(retention.max_entries, before, floor, RETENTION_BATCH)
        {
            Ok(n) => {
                if n > 0 {
                    log::debug!("trimmed {n} events");
                    self.stats.trimmed_events += n as u64;
                }
                self.trim_at = Some(if n >= RETENTION_BATCH {
                    now
                } else {
                    now + RETENTION_INTERVAL
                });
            }
            Err(e) => {
                log::warn!("trimming the event log failed (will retry): {e}");
                self.trim_at = Some(now + RETENTION_INTERVAL);
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
    /// checkpoints.
    pub(super) fn finish(&mut self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        loop {
            let pending: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| c.phase != Phase::Closed && c.pending_output() > 0)
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
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        self.stats.connected_clients = 0;
        let _ = self.store.checkpoint();
        log::info!("stopped");
    }

    /// Closes connections idle past `--timeout`, as Redis does: without a reply.
    /// Subscribers, blocked readers and event streams wait by design and stay.
    pub(super) fn close_idle(&mut self, now: Instant) {
        let limit = Duration::from_secs(self.config.timeout);
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.phase == Phase::Open
                    && !c.blocked
                    && c.session.subscriptions() == 0
                    && c.http.as_ref().is_none_or(|h| h.sse.is_none())
                    && now.duration_since(c.session.last_active) >= limit
            })
            .map(|(k, _)| k)
            .collect();
        for k in idle {
            if let Some(conn) = self.conns.get_mut(k) {
                log::debug!(
                    "conn={} peer={} reason=idle for {}s",
                    conn.session.id,
                    conn.peer,
                    self.config.timeout
                );
                self.stats.idle_closes += 1;
                conn.phase = Phase::Closed;
                self.closing.push(k);
            }
        }
        self.close_finished();
        self.idle_sweep_at = Some(now + IDLE_SWEEP);
    }
}
