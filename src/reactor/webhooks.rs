//! The reactor's side of webhooks: the endpoints loaded from the store, the
//! transport's tokens and deadlines, and the tick's part in deliveries.
//!
//! ```text
//! poll            transport.ready / expire → outcomes (Done) wait in `done`
//! tick, first     persist_webhooks: each outcome applied (engine::Endpoint::apply)
//!                 and its state, dead letters stored in the tick's transaction
//!                 (before the tick's commands, whose WEBHOOK writes win)
//! COMMIT          failed: every endpoint is reloaded from the store
//! tick, post      step_webhooks: committed WEBHOOK changes reloaded; each idle,
//!                 enabled endpoint given its next committed event (one in flight)
//! ```
//! A request for the next event leaves only after the outcome of the previous one
//! is committed, so after kill -9 an endpoint resumes at its stored position and
//! at most the one request in flight is delivered again. Only a primary
//! delivers; it keeps its endpoints in a JetStream KV bucket (`kv`), which a
//! promotion takes in, so a promoted follower carries on.
//!
//! Events gone from the log before delivery (trimmed, XDEL) are skipped with a
//! warning; retention keeps the events an enabled endpoint has not passed
//! (`floor`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Registry;

use super::Reactor;
use crate::config::Config;
use crate::config::webhook::MAX_WEBHOOK_RESPONSE_BYTES;
use crate::error::Result;
use crate::events::Event;
use crate::store::{StorageError, Store};
use crate::webhook::engine::{Attempt, Endpoint, Policy, Verdict};
use crate::webhook::transport::{Done, Outcome, Request, Tls, Transport, TransportConfig};

mod kv;
mod scan;

pub(super) use kv::cut_back;

use scan::next_event;

/// How long deliveries pause after their state could not be stored (a failed
/// write or commit): resending at once would only repeat the request.
const STORAGE_PAUSE: Duration = Duration::from_secs(1);

/// The endpoints and their transport.
pub(super) struct Webhooks {
    endpoints: BTreeMap<i64, Endpoint>,
    transport: Transport,
    /// Outcomes reported since the last tick, applied in the next.
    done: Vec<Done>,
    policy: Policy,
    /// Requeued dead letters whose event is gone from the log: rows to remove.
    gone: Vec<(i64, i64)>,
    /// The last commit failed: reload every endpoint from the store.
    reload_all: bool,
    /// No request leaves before this (storage failing, see `STORAGE_PAUSE`).
    paused_until: Option<Instant>,
    /// Outcomes to apply or events to look at: the next poll must not wait.
    behind: bool,
    /// The figures changed since `stats.webhooks` was refreshed.
    changed: bool,
    /// The endpoints in JetStream (`--nats`).
    kv: kv::WebhookKv,
}

impl Webhooks {
    /// The transport `config` asks for, and the endpoints stored in `store`.
    pub(super) fn new(
        config: &Config,
        store: &mut Store,
        waker: std::sync::Arc<mio::Waker>,
    ) -> Result<Webhooks> {
        let tls = Tls::new(config.webhook_ca.as_deref())?;
        let transport = Transport::new(
            TransportConfig {
                connect_timeout: config.webhook_timeout,
                response_timeout: config.webhook_timeout,
                allow_private: config.webhook_allow_private,
                tls,
                max_response_body: MAX_WEBHOOK_RESPONSE_BYTES,
            },
            waker,
        );
        let mut webhooks = Webhooks {
            endpoints: BTreeMap::new(),
            transport,
            done: Vec::new(),
            policy: Policy {
                schedule: config.webhook_retry_schedule.0.clone(),
                disable_after: config.webhook_disable_after,
            },
            gone: Vec::new(),
            reload_all: false,
            paused_until: None,
            behind: true,
            changed: true,
            kv: kv::WebhookKv::default(),
        };
        for row in store
            .webhooks()
            .map_err(|e| crate::Error::Config(format!("cannot read the webhooks: {e}")))?
        {
            webhooks.load(row);
        }
        if !webhooks.endpoints.is_empty() {
            log::info!(
                "webhooks: {} endpoints ({} enabled)",
                webhooks.endpoints.len(),
                webhooks.endpoints.values().filter(|e| e.enabled()).count()
            );
        }
        Ok(webhooks)
    }

    fn load(&mut self, row: crate::store::WebhookRow) {
        let id = row.id;
        match Endpoint::from_row(row) {
            Ok(e) => {
                self.endpoints.insert(id, e);
            }
            Err(why) => log::error!("webhook {id}: cannot be used ({why}); it delivers nothing"),
        }
    }

    /// The next time something is due: a transport deadline, or a retry (not
    /// before a pause ends: a retry due during it would wake every poll).
    pub(super) fn next_deadline(&self, read_only: bool) -> Option<Instant> {
        // A read-only node (a follower, a fenced primary) starts no request, so a
        // retry due in its rows is no reason to wake: only requests in flight are.
        if read_only {
            return self.transport.next_deadline();
        }
        if self.paused_until.is_some() {
            return [self.transport.next_deadline(), self.paused_until]
                .into_iter()
                .flatten()
                .min();
        }
        let now_ms = crate::clock::now_ms();
        let retry = self
            .endpoints
            .values()
            .filter(|e| e.enabled() && e.in_flight.is_none() && e.retrying())
            .map(|e| e.state.next_attempt_at)
            .min()
            .map(|at| {
                let wait = u64::try_from(at.saturating_sub(now_ms)).unwrap_or(0);
                Instant::now() + Duration::from_millis(wait)
            });
        [self.transport.next_deadline(), retry]
            .into_iter()
            .flatten()
            .min()
    }

    /// True when the next poll must not wait.
    pub(super) fn behind(&self) -> bool {
        self.behind
    }

    /// True when there are endpoints, or requests in flight.
    pub(super) fn active(&self) -> bool {
        !self.endpoints.is_empty() || self.transport.in_flight() > 0
    }

    /// The lowest seq an enabled endpoint still needs from the log.
    pub(super) fn floor(&self) -> Option<i64> {
        self.endpoints
            .values()
            .filter(|e| e.enabled())
            .map(|e| {
                let dead = e.requeued.front().map_or(i64::MAX, |&s| s - 1);
                e.state.position.min(dead)
            })
            .min()
    }

    /// Forgets endpoint `id`'s request in flight, if any.
    fn forget(&mut self, registry: &Registry, id: i64) {
        if let Some(e) = self.endpoints.get_mut(&id)
            && e.in_flight.take().is_some()
        {
            self.transport.forget(registry, id as u64);
        }
    }

    /// Applies committed administrative changes (and, after a failed commit,
    /// everything) from the store.
    fn reload(&mut self, registry: &Registry, store: &mut Store) {
        let mut ids = store.take_webhook_changes();
        if std::mem::take(&mut self.reload_all) {
            ids = self.endpoints.keys().copied().collect();
            match store.webhooks() {
                Ok(rows) => ids.extend(rows.iter().map(|r| r.id)),
                Err(e) => {
                    log::warn!("webhooks: cannot reload the endpoints: {e}");
                    self.reload_all = true;
                    return;
                }
            }
        }
        if ids.is_empty() {
            return;
        }
        ids.sort_unstable();
        ids.dedup();
        self.kv.note_changed(&ids);
        for id in ids {
            match store.webhook(id) {
                Ok(Some(row)) => {
                    let keep = self.endpoints.get(&id).is_some_and(|old| {
                        // An ENABLE of an endpoint that delivers: nothing changes.
                        old.in_flight.is_some()
                            && row.state.disabled.is_none()
                            && old.enabled()
                            && row.state.position == old.state.position
                            && old.requeued.iter().eq(row.requeued.iter())
                    });
                    match self.endpoints.get_mut(&id) {
                        Some(old) if keep => {
                            // ENABLE also restarts the failure clock.
                            old.state.failing_since = row.state.failing_since;
                        }
                        _ => {
                            self.forget(registry, id);
                            self.load(row);
                        }
                    }
                }
                Ok(None) => {
                    self.forget(registry, id);
                    self.endpoints.remove(&id);
                }
                Err(e) => {
                    log::warn!("webhook {id}: cannot reload it: {e}");
                    self.reload_all = true;
                }
            }
        }
        self.changed = true;
        self.behind = true;
    }

    /// The figures for INFO and `/metrics`, when they changed.
    fn refresh(&mut self, into: &mut Vec<crate::webhook::status::Status>) {
        if std::mem::take(&mut self.changed) {
            into.clear();
            into.extend(self.endpoints.values().map(Endpoint::status));
        }
    }
}

impl Reactor {
    /// A readiness event for one of the transport's tokens.
    pub(super) fn webhook_ready(&mut self, ev: &mio::event::Event) {
        let w = &mut self.webhooks;
        w.transport
            .ready(self.poll.registry(), ev, Instant::now(), &mut w.done);
        if !w.done.is_empty() {
            w.behind = true;
        }
    }

    /// The poll's waker fired (it is shared with shutdown): the resolver may
    /// have answered.
    pub(super) fn webhook_woken(&mut self) {
        let w = &mut self.webhooks;
        w.transport
            .woken(self.poll.registry(), Instant::now(), &mut w.done);
        if !w.done.is_empty() {
            w.behind = true;
        }
    }

    /// The transport's deadlines (timeouts, idle connections, answers known at
    /// start); retries that came due.
    pub(super) fn webhook_timers(&mut self, now: Instant) {
        let read_only = self.shared.stats.replica.read_only();
        let w = &mut self.webhooks;
        if w.transport.next_deadline().is_some_and(|d| d <= now) {
            w.transport.expire(self.poll.registry(), now, &mut w.done);
        }
        if !w.done.is_empty() || w.next_deadline(read_only).is_some_and(|d| d <= now) {
            w.behind = true;
        }
    }

    /// At the start of the tick: applies the outcomes that came in and stores
    /// what they changed in the tick's transaction.
    pub(super) fn persist_webhooks(&mut self) {
        let w = &mut self.webhooks;
        let outcomes = !w.done.is_empty() || !w.gone.is_empty();
        if !outcomes {
            return;
        }
        let registry = self.poll.registry();
        let store = &mut self.shared.store;
        let now_ms = crate::clock::now_ms();
        let mut failed: Option<StorageError> = None;
        for d in std::mem::take(&mut w.done) {
            let id = d.endpoint as i64;
            let Some(e) = w.endpoints.get_mut(&id) else {
                continue; // deleted while in flight
            };
            let Some(seq) = e.in_flight else {
                continue; // reloaded while in flight: sent again
            };
            let attempt = match d.outcome {
                Outcome::Response { status, .. } => Attempt::Answered(status),
                Outcome::Failed { reason } => Attempt::Failed(reason),
                Outcome::Refused { reason } => Attempt::Refused(reason),
            };
            let verdict = e.apply(
                seq,
                &attempt,
                &w.policy,
                now_ms,
                crate::webhook::sign::random_unit(),
            );
            w.changed = true;
            let res = match &verdict {
                Verdict::Delivered { from_dead } => {
                    log::debug!("webhook {id}: event {seq} delivered");
                    if *from_dead {
                        store.webhook_dead_letter_done(id, seq)
                    } else {
                        Ok(())
                    }
                }
                Verdict::Retry { at_ms } => {
                    log::debug!(
                        "webhook {id}: event {seq} failed ({}), attempt {} again in {}ms",
                        e.state.last_error,
                        e.state.attempts + 1,
                        at_ms - now_ms
                    );
                    Ok(())
                }
                Verdict::DeadLetter(dead) => {
                    log::warn!(
                        "webhook {id}: event {seq} failed {} times (last: {}); it is a dead letter",
                        dead.attempts,
                        dead.last_error
                    );
                    store.webhook_dead_letter(id, dead)
                }
                Verdict::Disabled { why, dead } => {
                    log::warn!("webhook {id} ({}) disabled: {why}", e.url);
                    w.transport.forget(registry, id as u64);
                    match dead {
                        Some(dead) => store.webhook_dead_letter(id, dead),
                        None => Ok(()),
                    }
                }
            };
            if let Err(err) = res {
                failed.get_or_insert(err);
            }
        }
        for (id, seq) in std::mem::take(&mut w.gone) {
            if let Err(err) = store.webhook_dead_letter_done(id, seq) {
                failed.get_or_insert(err);
            }
        }
        // The positions that skipped events moved ride along.
        if failed.is_none() {
            for e in w.endpoints.values_mut().filter(|e| e.dirty) {
                match store.webhook_save(e.id, &e.state) {
                    Ok(()) => e.dirty = false,
                    Err(err) => {
                        failed.get_or_insert(err);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            log::warn!("webhooks: cannot store the deliveries' state: {e}");
            w.reload_all = true;
            w.paused_until = Some(Instant::now() + STORAGE_PAUSE);
        }
    }

    /// After the commit: `ok` is whether it succeeded.
    pub(super) fn webhooks_committed(&mut self, ok: bool) {
        if !ok {
            self.webhooks.reload_all = true;
            self.webhooks.paused_until = Some(Instant::now() + STORAGE_PAUSE);
        }
    }

    /// After the commit: takes in committed changes, then gives every idle,
    /// enabled endpoint its next committed event. `fresh` is what the last
    /// commit added.
    pub(super) fn step_webhooks(&mut self, fresh: &[Event]) {
        let registry = self.poll.registry();
        let w = &mut self.webhooks;
        w.reload(registry, &mut self.shared.store);
        w.behind = false;
        if self.shared.stats.replica.read_only() || w.endpoints.is_empty() {
            w.refresh(&mut self.shared.stats.webhooks);
            return;
        }
        let now = Instant::now();
        if w.paused_until.is_some_and(|t| now < t) {
            w.refresh(&mut self.shared.stats.webhooks);
            return;
        }
        w.paused_until = None;
        let last = self.visible_seq();
        let w = &mut self.webhooks;
        let store = &mut self.shared.store;
        let writer = store.writer_id().to_string();
        let now_ms = crate::clock::now_ms();
        for e in w.endpoints.values_mut() {
            let Some(event) = next_event(e, store, fresh, last, &mut w.gone, &mut w.behind, now_ms)
            else {
                continue;
            };
            let mut body = Vec::with_capacity(256);
            event.write_json(&mut body);
            let headers = e.headers(&writer, event.seq, now_ms / 1000, &body);
            e.sent(event.seq);
            w.changed = true;
            match &e.target {
                Ok(url) => {
                    let url = Arc::clone(url);
                    let request = Request { url, headers, body };
                    w.transport.start(registry, e.id as u64, request, now);
                }
                Err(why) => w.done.push(Done {
                    endpoint: e.id as u64,
                    outcome: Outcome::Failed {
                        reason: format!("invalid url: {why}"),
                    },
                }),
            }
        }
        if !w.done.is_empty() || !w.gone.is_empty() {
            w.behind = true;
        }
        w.refresh(&mut self.shared.stats.webhooks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;
    use crate::store::WebhookState;

    #[test]
    fn a_storage_pause_holds_back_the_retries_that_are_due() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("n.db"), Durability::Normal, 0).expect("open");
        let id = store
            .webhook_add(
                "http://example.com/",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "*",
                0,
            )
            .expect("add");
        let retrying = WebhookState {
            attempt_seq: 1,
            attempts: 1,
            next_attempt_at: 1,
            ..WebhookState::default()
        };
        store.webhook_save(id, &retrying).expect("save");
        store.finish_tick().expect("commit");
        let poll = mio::Poll::new().expect("poll");
        let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
        let mut w = Webhooks::new(&Config::default(), &mut store, waker.into()).expect("webhooks");
        assert!(w.next_deadline(false).is_some_and(|d| d <= Instant::now()));
        assert_eq!(
            w.next_deadline(true),
            None,
            "a read-only node starts no request: a due retry does not wake it"
        );
        let until = Instant::now() + STORAGE_PAUSE;
        w.paused_until = Some(until);
        assert_eq!(
            w.next_deadline(false),
            Some(until),
            "no poll wakes before it"
        );
    }
}
