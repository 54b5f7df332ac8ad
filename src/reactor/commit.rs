//! The end of a tick's work: the group commit, then what may only happen after
//! it: handler callbacks, pushes to subscribers, waking blocked readers, feeding
//! durable handlers; or, when it fails, replacing the replies that depended on it.

use std::time::Instant;

use super::{
    CHECKPOINT_IDLE, DURABLE_BATCH, DURABLE_RETRY_MAX, DURABLE_RETRY_MIN, PUBSUB_TICK_SLACK_BYTES,
    Reactor, committed_tail,
};
use crate::events::Event;

impl Reactor {
    /// Feeds each durable handler the committed events after its offset, a batch a
    /// tick, and stores how far it got. A panic stops that handler at the event
    /// that panicked and retries it after a back-off. `fresh` is what the last
    /// commit added: a handler that had everything before it is fed without a read.
    pub(super) fn run_durable_handlers(&mut self, fresh: &[Event]) {
        if self.handlers.durable.is_empty() {
            return;
        }
        let last = self.visible_seq();
        let now = Instant::now();
        self.durable_behind = false;
        for h in &mut self.handlers.durable {
            if h.offset >= last || h.retry_at.is_some_and(|t| now < t) {
                continue;
            }
            let from = h.offset.saturating_add(1);
            let read;
            let batch = match committed_tail(fresh, last, from, DURABLE_BATCH) {
                Some(batch) => batch,
                None => match self
                    .shared
                    .store
                    .events_between(from, last, DURABLE_BATCH, false)
                {
                    Ok(rows) => {
                        read = rows.iter().map(Event::from_row).collect::<Vec<_>>();
                        &read[..]
                    }
                    Err(e) => {
                        log::warn!("durable handler '{}': cannot read the log: {e}", h.name);
                        h.retry_at = Some(now + DURABLE_RETRY_MAX);
                        continue;
                    }
                },
            };
            let start = h.offset;
            for event in batch {
                if crate::events::call_isolated(&mut h.callback, event) {
                    h.offset = event.seq;
                    h.failures = 0;
                    h.retry_at = None;
                } else {
                    h.failures += 1;
                    let wait = (DURABLE_RETRY_MIN * 2u32.saturating_pow(h.failures.min(16) - 1))
                        .min(DURABLE_RETRY_MAX);
                    self.shared.stats.handler_panics += 1;
                    log::error!(
                        "durable handler '{}' panicked on event {} (retry in {wait:?})",
                        h.name,
                        event.seq
                    );
                    h.retry_at = Some(now + wait);
                    break;
                }
            }
            // Events missing from the log (trimmed) are skipped over, not waited for.
            if batch.is_empty() {
                h.offset = last;
            }
            if h.offset != start
                && let Err(e) = self.shared.store.set_handler_offset(&h.name, h.offset)
            {
                // Go back to what is stored, so retention cannot trim events the
                // handler would need after a crash; they run again (at-least-once).
                log::warn!("durable handler '{}': cannot store its offset: {e}", h.name);
                h.offset = start;
                h.retry_at = Some(now + DURABLE_RETRY_MAX);
            }
            if h.offset < last && h.retry_at.is_none() {
                self.durable_behind = true;
            }
        }
        // Runs every tick: refresh the offsets in place; names are copied only when
        // the set of handlers differs (the first tick).
        let offsets = &mut self.shared.stats.durable_offsets;
        if offsets.len() != self.handlers.durable.len() {
            offsets.clear();
            offsets.extend(
                self.handlers
                    .durable
                    .iter()
                    .map(|h| (h.name.clone(), h.offset)),
            );
        } else {
            for (slot, h) in offsets.iter_mut().zip(&self.handlers.durable) {
                slot.1 = h.offset;
            }
        }
    }

    /// Ends the tick's transaction; on success the tick's events go out, on failure
    /// every reply that depended on storage is replaced by the storage error.
    pub(super) fn commit(&mut self) {
        // Only a tick that wrote has a commit worth timing.
        let started = self.shared.store.tick_has_writes().then(Instant::now);
        match self.shared.store.finish_tick() {
            Ok(()) => {
                self.shared.stats.finish_tick(true);
                self.relay_committed(true);
                self.webhooks_committed(true);
                if let Some(started) = started {
                    let done = Instant::now();
                    let took = done - started;
                    self.shared.stats.commit_seconds.observe(took.as_secs_f64());
                    self.shared
                        .stats
                        .requests_per_commit
                        .observe(self.shared.stats.tick_requests as f64);
                    self.shared.stats.commits += 1;
                    self.timers.checkpoint_at = Some(done + CHECKPOINT_IDLE);
                    log::trace!("commit in {took:?}");
                }
                let events = std::mem::take(&mut self.shared.events);
                if self.replication.is_some() && !events.is_empty() {
                    // Out once the stream confirms them (reactor/replicated.rs).
                    self.shared.stats.events += events.len() as u64;
                    self.hold_tick(&events);
                } else {
                    for event in &events {
                        self.shared.stats.events += 1;
                        self.shared.stats.handler_panics += self.handlers.dispatch(event) as u64;
                        if !self.shared.pubsub.is_empty() {
                            self.publish(event);
                        }
                    }
                }
                let woke = !events.is_empty() && !self.blocked.is_empty();
                // Kept for the event streams; the tick clears them after.
                self.shared.events = events;
                if woke {
                    self.wake_readers();
                }
            }
            Err(e) => {
                self.shared.stats.failed_commits += 1;
                self.shared.stats.finish_tick(false);
                self.relay_committed(false);
                self.webhooks_committed(false);
                self.shared.events.clear();
                if let Some(r) = self.replication.as_mut() {
                    r.forget_tick();
                }
                let reply = format!("ERR storage: {e}");
                let touched = std::mem::take(&mut self.touched);
                for &k in &touched {
                    // A read that blocked this tick already got its error reply:
                    // it is consumed and the connection goes on.
                    if self
                        .conns
                        .get_mut(k)
                        .is_some_and(|conn| conn.roll_back_tick(&reply))
                    {
                        self.blocked.retain(|&b| b != k);
                        self.carry_over(k);
                    }
                }
                self.touched = touched;
            }
        }
    }

    /// Lets the blocked readers that the last commit may satisfy run again.
    pub(super) fn wake_readers(&mut self) {
        let last_seq = self.visible_seq();
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.retain(|&k| {
            let Some(conn) = self.conns.get_mut(k) else {
                return false;
            };
            if !conn.wake(last_seq) {
                return conn.is_blocked();
            }
            if conn.is_open() && conn.enqueue() {
                self.carry.push(k);
            }
            false
        });
        self.blocked = blocked;
    }

    /// Answers the blocked readers whose deadline passed with a nil reply;
    /// true when one was.
    pub(super) fn time_out_readers(&mut self, now: Instant) -> bool {
        let mut answered = false;
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.retain(|&k| {
            let Some(conn) = self.conns.get_mut(k) else {
                return false;
            };
            if !conn.time_out(now) {
                return conn.is_blocked();
            }
            answered = true;
            if conn.touch() {
                self.touched.push(k);
            }
            if conn.is_open() && conn.enqueue() {
                self.carry.push(k);
            }
            false
        });
        self.blocked = blocked;
        answered
    }

    /// Pushes a committed event to its channel's subscribers and to the pattern
    /// subscribers it matches; drops subscribers past their output limits.
    pub(super) fn publish(&mut self, event: &Event) {
        // Out of `self` while the pushes need the rest of it (dropping a slow
        // subscriber changes no subscription: that happens when it is closed).
        let pubsub = std::mem::take(&mut self.shared.pubsub);
        let mut payload = std::mem::take(&mut self.push_payload);
        payload.clear();
        let channel = event.kind.as_str().as_bytes();
        let direct = pubsub.subscribers(channel).iter().map(|&k| (k, None));
        let by_pattern = pubsub
            .matching(channel)
            .flat_map(|(p, keys)| keys.iter().map(move |&k| (k, Some(p))));
        let hard = self.shared.config.pubsub_limits().hard_bytes;
        let memory_guard = hard
            .saturating_mul(2)
            .max(hard.saturating_add(PUBSUB_TICK_SLACK_BYTES));
        for (k, pattern) in direct.chain(by_pattern) {
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            if !conn.is_open() {
                continue;
            }
            if payload.is_empty() {
                event.write_json(&mut payload);
            }
            let mut out = conn.out();
            match pattern {
                None => {
                    out.push(3);
                    out.bulk(b"message");
                }
                Some(p) => {
                    out.push(4);
                    out.bulk(b"pmessage");
                    out.bulk(p);
                }
            }
            out.bulk(channel);
            out.bulk(&payload);
            self.shared.stats.pushes += 1;
            // The limits are judged after the flush, on what the peer did not take;
            // this only bounds memory within one tick.
            if conn.pending_output() > memory_guard {
                self.drop_slow_subscriber(k);
                continue;
            }
            self.note_touched(k);
        }
        self.push_payload = payload;
        self.shared.pubsub = pubsub;
    }

    /// Disconnects a subscriber that fell behind its output limits.
    pub(super) fn drop_slow_subscriber(&mut self, k: usize) {
        let Some(conn) = self.conns.get_mut(k) else {
            return;
        };
        log::warn!(
            "conn={} peer={} reason=subscriber output buffer limit ({} bytes unsent); \
             disconnected, it can resume from the durable log",
            conn.id(),
            conn.peer(),
            conn.pending_output()
        );
        self.shared.stats.slow_subscriber_disconnects += 1;
        conn.abort();
        self.closing.push(k);
    }
}
