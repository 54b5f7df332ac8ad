//! `--durability replicated`: a write is acknowledged once its tick committed
//! locally and the JetStream relay's confirmed seq covers every event of the tick.
//!
//! ```text
//! request wrote events   -> its reply is held on its connection (conn/held.rs):
//!                           the flush stops there, later replies queue behind it
//! COMMIT ok, with events -> the tick joins the FIFO: (last seq, deadline, conns);
//!                           its events wait (no callbacks, pushes, wake-ups, SSE)
//! relay acks (step_relay)-> the ticks whose last seq is confirmed leave the FIFO:
//!                           their replies flush; the events up to the confirmed
//!                           seq go out (callbacks, pushes, XREAD, SSE, durable)
//! deadline passed        -> the tick's held replies become -NOREPLICAS; its
//!                           events stay in the log and go out if confirmed later
//! relay stopped          -> every held and new write gets -NOREPLICAS at once
//! ```
//! Ticks pipeline: the loop goes on with later ticks while earlier acks are in
//! flight. Reads are not held (other than behind a held write on the same
//! connection): they may see a write before JetStream acknowledged it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Events;

use super::Reactor;
use crate::config::SHUTDOWN_FLUSH_TIMEOUT;
use crate::conn::Conn;
use crate::events::Event;

/// The reply of a write JetStream did not acknowledge in time (Redis's text for
/// `WAIT`-style replication failures, `min-replicas-to-write`).
pub(super) const NOREPLICAS: &str = "NOREPLICAS Not enough good replicas to write.";
/// Held events kept in memory for their callbacks and pushes; past this they are
/// read back from the log when the stream confirms them.
const MAX_HELD_EVENTS: usize = 65_536;
/// Events read from the log per query when held events were not kept.
const RELEASE_READ_BATCH: usize = 1000;
/// NOREPLICAS replies are logged at most this often.
const NOREPLICAS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A committed tick whose write replies wait for the stream.
#[derive(Debug)]
struct HeldTick {
    /// Its last event: the stream's confirmed seq must reach it.
    last_seq: i64,
    committed_at: Instant,
    deadline: Instant,
    /// The connections holding its replies, by slab key and client id (a key
    /// may be reused once its connection closed).
    conns: Vec<(usize, u64)>,
}

/// The held ticks and events of `--durability replicated`.
#[derive(Debug)]
pub(super) struct Replication {
    timeout: Duration,
    /// Held ticks, oldest first (by seq, and so by deadline).
    ticks: VecDeque<HeldTick>,
    /// The connections that held a reply in the current tick.
    holders: Vec<(usize, u64)>,
    /// The last seq whose callbacks and pushes went out.
    released: i64,
    /// Held events kept for their release: from `released + 1` on, no gaps.
    events: VecDeque<Event>,
    /// When NOREPLICAS was last logged.
    warned_at: Option<Instant>,
}

impl Replication {
    /// Holds replies for `timeout` at most; events up to `released` (the log at
    /// start) went out before.
    pub(super) fn new(timeout: Duration, released: i64) -> Replication {
        Replication {
            timeout,
            ticks: VecDeque::new(),
            holders: Vec::new(),
            released,
            events: VecDeque::new(),
            warned_at: None,
        }
    }

    /// The request connection `k` just ran wrote events: its reply waits.
    pub(super) fn hold(&mut self, k: usize, conn: &mut Conn, keep_alive: Option<bool>) {
        conn.hold_reply(keep_alive);
        let holder = (k, conn.id());
        if self.holders.last() != Some(&holder) {
            self.holders.push(holder);
        }
    }

    /// The current tick rolled back: it holds nothing.
    pub(super) fn forget_tick(&mut self) {
        self.holders.clear();
    }

    /// The nearest deadline of a held tick.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.ticks.front().map(|t| t.deadline)
    }

    /// True while write replies wait.
    pub(super) fn holds(&self) -> bool {
        !self.ticks.is_empty()
    }

    /// Keeps the committed events of a held tick for their release (moving them
    /// out of `fresh`), when they follow what is kept and there is room.
    fn keep(&mut self, fresh: &mut Vec<Event>) {
        let Some(first) = fresh.first().map(|e| e.seq) else {
            return;
        };
        let next = self.events.back().map_or(self.released, |e| e.seq) + 1;
        if first == next && self.events.len() + fresh.len() <= MAX_HELD_EVENTS {
            self.events.extend(fresh.drain(..));
        }
    }
}

impl Reactor {
    /// The last seq readers of the log may be handed (event streams, durable
    /// handlers, blocked XREADs): with `--durability replicated`, the stream's
    /// confirmed seq; otherwise the committed log's end.
    pub(super) fn visible_seq(&self) -> i64 {
        let last = self.shared.store.committed_counts().last_seq;
        match (&self.replication, &self.relay) {
            (Some(_), Some(relay)) => last.min(relay.confirmed()),
            _ => last,
        }
    }

    /// After a commit with `events` (replicated): the tick's write replies wait
    /// for the stream, and its events too.
    pub(super) fn hold_tick(&mut self, events: &[Event]) {
        let Some(r) = self.replication.as_mut() else {
            return;
        };
        let Some(last_seq) = events.last().map(|e| e.seq) else {
            return;
        };
        let mut conns = std::mem::take(&mut r.holders);
        conns.retain(|&(k, id)| {
            self.conns
                .get_mut(k)
                .is_some_and(|c| c.id() == id && c.commit_held(last_seq))
        });
        if conns.is_empty() {
            r.holders = conns;
            return;
        }
        let now = self.tick_now;
        r.ticks.push_back(HeldTick {
            last_seq,
            committed_at: now,
            deadline: now + r.timeout,
            conns,
        });
        let stats = self.shared.stats.replication.get_or_insert_default();
        stats.held_ticks += 1;
        stats.waiting_ticks = r.ticks.len();
    }

    /// After the relay took its acks in (`fresh`: the last commit's events):
    /// keeps held events, lets out what the stream confirmed (replies, then the
    /// events' callbacks, pushes, wake-ups and streams), fails every held write
    /// when the relay stopped, and flushes.
    pub(super) fn release_held(&mut self, fresh: &mut Vec<Event>) {
        let confirmed = self.visible_seq();
        let Some(r) = self.replication.as_mut() else {
            return;
        };
        r.keep(fresh);
        let Some(relay) = &self.relay else {
            return;
        };
        let stopped = relay.is_stopped();
        let mut released = Vec::new();
        let now = Instant::now();
        let mut waits = Vec::new();
        while r.ticks.front().is_some_and(|t| t.last_seq <= confirmed) {
            let Some(tick) = r.ticks.pop_front() else {
                break;
            };
            waits.push(now.saturating_duration_since(tick.committed_at));
            released.extend(tick.conns);
        }
        if r.released < confirmed {
            self.release_events(confirmed);
        }
        for (k, id) in released {
            let Some(conn) = self.conns.get_mut(k) else {
                continue;
            };
            if conn.id() != id || !conn.release_held(confirmed) {
                continue;
            }
            self.note_touched(k);
        }
        let stats = self.shared.stats.replication.get_or_insert_default();
        for wait in waits {
            stats.wait_seconds.observe(wait.as_secs_f64());
        }
        if stopped {
            self.fail_held(i64::MAX, "the NATS relay stopped");
        }
        self.flush_held();
    }

    /// Gives the held replies whose deadline passed `-NOREPLICAS`.
    pub(super) fn replicated_timers(&mut self, now: Instant) {
        let Some(r) = &self.replication else {
            return;
        };
        let Some(due) = r
            .ticks
            .iter()
            .take_while(|t| t.deadline <= now)
            .last()
            .map(|t| t.last_seq)
        else {
            return;
        };
        let why = format!("JetStream did not acknowledge them within {:?}", r.timeout);
        self.fail_held(due, &why);
        self.flush_held();
    }

    /// At shutdown: waits a little for the acks of held writes, then gives the
    /// rest `-NOREPLICAS`.
    pub(super) fn settle_held(&mut self) {
        if !self.replication.as_ref().is_some_and(Replication::holds) {
            return;
        }
        let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
        let mut events = Events::with_capacity(64);
        while self.replication.as_ref().is_some_and(Replication::holds) {
            let now = Instant::now();
            if now >= deadline || self.relay.as_ref().is_none_or(|r| r.is_stopped()) {
                break;
            }
            if !self.poll_relay_only(&mut events, None, deadline) {
                break;
            }
            self.release_held(&mut Vec::new());
        }
        self.fail_held(i64::MAX, "the server is shutting down");
        self.flush_held();
    }

    /// Rewrites the held replies of the ticks up to `seq` as `-NOREPLICAS`.
    fn fail_held(&mut self, seq: i64, why: &str) {
        let Some(r) = self.replication.as_mut() else {
            return;
        };
        let mut failed = 0;
        while r.ticks.front().is_some_and(|t| t.last_seq <= seq) {
            let Some(tick) = r.ticks.pop_front() else {
                break;
            };
            for (k, id) in tick.conns {
                let Some(conn) = self.conns.get_mut(k) else {
                    continue;
                };
                if conn.id() != id {
                    continue;
                }
                let n = conn.fail_held(tick.last_seq, NOREPLICAS);
                if n > 0 && conn.is_http() {
                    *self.shared.stats.http_responses.entry(503).or_default() += n as u64;
                }
                failed += n;
                if conn.touch() {
                    self.touched.push(k);
                }
            }
        }
        let waiting = r.ticks.len();
        if failed > 0 {
            let now = Instant::now();
            if r.warned_at
                .is_none_or(|t| now.duration_since(t) >= NOREPLICAS_LOG_INTERVAL)
            {
                r.warned_at = Some(now);
                log::warn!(
                    "{failed} write(s) answered NOREPLICAS: {why}; they stay in the local log \
                     and reach the stream if NATS acknowledges them later"
                );
            }
        }
        let stats = self.shared.stats.replication.get_or_insert_default();
        stats.noreplicas += failed as u64;
        stats.waiting_ticks = waiting;
    }

    /// Flushes what was released or failed. A connection that was backpressured
    /// (held output counts) runs again when the flush brought it under the limit:
    /// no writable event will say so.
    fn flush_held(&mut self) {
        if let Some(r) = &self.replication {
            self.shared
                .stats
                .replication
                .get_or_insert_default()
                .waiting_ticks = r.ticks.len();
        }
        if self.touched.is_empty() {
            return;
        }
        let relieved: Vec<usize> = self
            .touched
            .iter()
            .copied()
            .filter(|&k| self.conns.get(k).is_some_and(Conn::backpressured))
            .collect();
        self.flush_touched();
        for k in relieved {
            if self
                .conns
                .get(k)
                .is_some_and(|c| c.is_open() && !c.backpressured())
            {
                self.carry_over(k);
            }
        }
    }

    /// The events after the last released one up to `upto` go out: handler
    /// callbacks and pushes (from memory, or read back from the log), blocked
    /// readers, event streams, durable handlers.
    fn release_events(&mut self, upto: i64) {
        let Some(r) = self.replication.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let mut next = r.released + 1;
        while next <= upto {
            if r.events.front().is_some_and(|e| e.seq == next) {
                let Some(e) = r.events.pop_front() else {
                    break;
                };
                next = e.seq + 1;
                out.push(e);
                continue;
            }
            // Not kept (over the memory bound): from the log.
            let end = r.events.front().map_or(upto, |e| (e.seq - 1).min(upto));
            match self
                .shared
                .store
                .events_between(next, end, RELEASE_READ_BATCH, false)
            {
                Ok(rows) if !rows.is_empty() => {
                    next = rows.last().map_or(end, |row| row.seq) + 1;
                    out.extend(rows.iter().map(Event::from_row));
                }
                Ok(_) => next = end + 1,
                Err(e) => {
                    log::warn!("replicated: cannot read the event log: {e}");
                    next = end + 1;
                }
            }
        }
        while r.events.front().is_some_and(|e| e.seq <= upto) {
            r.events.pop_front();
        }
        r.released = upto;
        for event in &out {
            self.shared.stats.handler_panics += self.handlers.dispatch(event) as u64;
            if !self.shared.pubsub.is_empty() {
                self.publish(event);
            }
        }
        if !self.blocked.is_empty() {
            self.wake_readers();
        }
        if !self.sse_conns.is_empty() {
            self.feed_sse(&out);
        }
        self.run_durable_handlers(&out);
    }
}
