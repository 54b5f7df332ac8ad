//! The reactor's side of a follower (`--follow`) and of the role changes:
//! applying what the stream delivered in the tick's transaction (a group commit),
//! promotion by `REPLICAOF NO ONE`, and fencing, when the relay finds another
//! writer in the stream and this primary turns follower.
//!
//! ```text
//! Follower ──REPLICAOF NO ONE──▶ ask the stream's last seq ──applied it──▶ Primary
//!    ▲                                (10 s at most, else -ERR)         (relay from
//!    │                                                                   applied + 1)
//!    └──── relay: another writer's message at the next seq (fenced): discard the
//!          local tail after the relay's confirmed seq, follow from there ──────┘
//! ```
//! Applied events are committed with the tick and dispatched after it exactly as
//! local writes are (callbacks, pub/sub, XREAD wake-ups, SSE). Durable handlers
//! run on the primary only; a promotion first reads their offsets from the
//! JetStream KV bucket the old primary put them in (`reactor/offsets.rs`).

use std::time::{Duration, Instant};

use mio::Token;

use super::Reactor;
use super::relay::OptionsError;
use crate::cmd::PROMOTION_WAIT;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Event;
use crate::nats::client::Client;
use crate::nats::consumer::{Consumer, FeedStatus};
use crate::nats::relay::Relay;
use crate::replica::Role;
use crate::store::Store;
use crate::store::replica::Discarded;

/// The follower's NATS connection.
pub(super) const FOLLOW: Token = Token(usize::MAX - 8);
/// Events one tick applies at most (one group commit).
const MAX_APPLY_PER_TICK: usize = 4096;

/// A follower: its consumer, what the open tick applied, a promotion under way.
#[derive(Debug)]
pub(super) struct Follow {
    consumer: Consumer,
    /// The stream's last message applied: its seq and `Nats-Msg-Id`.
    last: Option<(i64, String)>,
    /// The last message the open tick applied, until its commit.
    applying: Option<(i64, String, usize)>,
    promotion: Option<Promotion>,
    /// Set once the consumer followed; a stop before that is an error at start.
    started: bool,
    status: FeedStatus,
    /// True while INFO's replica error is the consumer's: it goes when the
    /// consumer's does (the condition ended). An error set by the reactor
    /// itself stays.
    error_shown: bool,
}

/// A `REPLICAOF NO ONE` under way.
#[derive(Debug, Clone, Copy)]
struct Promotion {
    asked_at: Instant,
    deadline: Instant,
}

impl Follow {
    /// A follower of `config`'s stream from seq `next` on a connection of its
    /// own; `started` when it replaces a relay (a stop is then no error at
    /// start).
    fn new(config: &Config, store: &mut Store, next: i64, started: bool) -> Result<Follow> {
        let name = format!("userbus follower {}", store.writer_id());
        let options = match super::relay::client_options(config, name) {
            Ok(options) => options,
            Err(OptionsError::Absent) => {
                return Err(Error::Config("--follow needs --nats".into()));
            }
            Err(OptionsError::Unusable(why)) => return Err(Error::Config(why)),
            Err(OptionsError::Fatal(e)) => return Err(e),
        };
        let tip = event_at(store, next - 1);
        let stream = &config.nats_stream;
        Ok(Follow {
            consumer: Consumer::new(Client::new(options, FOLLOW), stream, next, tip),
            last: None,
            applying: None,
            promotion: None,
            started,
            status: FeedStatus::default(),
            error_shown: false,
        })
    }
}

/// The local event at `seq`, if the log still holds it.
fn event_at(store: &mut Store, seq: i64) -> Option<Event> {
    if seq < 1 {
        return None;
    }
    store
        .events_between(seq, seq, 1, false)
        .ok()?
        .first()
        .map(Event::from_row)
}

/// How long after a promotion a fenced node promotes itself again.
const REPROMOTE_WINDOW: Duration = Duration::from_secs(30);
/// Promotions a node makes on its own after the one asked for.
const MAX_REPROMOTIONS: u8 = 3;

/// A promotion the stream has not yet confirmed an event of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Promoted {
    /// The seq the node was promoted after.
    after: i64,
    /// When the operator's promotion took effect.
    at: Instant,
    /// Promotions made since on its own.
    repromotions: u8,
}

/// The follower `--follow` asks for, after making the database a prefix of the
/// stream as far as it knows: events past the relay's stored position never
/// reached the stream and are discarded (a snapshot keeps its events up to its
/// seq). A database with events and no position at all, and no snapshot, was
/// never relayed: it is refused rather than emptied.
pub(super) fn build(config: &Config, store: &mut Store) -> Result<Follow> {
    let stream = &config.nats_stream;
    let last = store.committed_counts().last_seq;
    let confirmed = store
        .relay_confirmed(stream)
        .map_err(|e| Error::Config(format!("cannot read the stream position: {e}")))?;
    let previous = store
        .follow_previous(stream)
        .map_err(|e| Error::Config(format!("cannot read the stream position: {e}")))?;
    // A snapshot (`userbus backup`) holds its source's events up to its seq; the
    // consumer checks the event at that seq against the stream before following,
    // so none of them is discarded for a relay position that lagged behind it.
    let snapshot = store
        .snapshot_origin()
        .map_err(|e| Error::Config(format!("cannot read the snapshot's origin: {e}")))?
        .filter(|_| previous.is_none())
        .map(|o| o.seq);
    if last > 0 && confirmed == 0 && previous.is_none() && snapshot.is_none() {
        return Err(Error::Config(format!(
            "--follow: this database holds {last} events that never reached stream \
             '{stream}'; a follower starts from an empty database, a snapshot, or a \
             database that relayed or followed this stream"
        )));
    }
    let keep = confirmed.max(snapshot.unwrap_or(0));
    if last > keep {
        discard_tail(store, keep, stream)?;
    }
    let next = store.committed_counts().last_seq + 1;
    let mut follow = Follow::new(config, store, next, false)?;
    log::info!(
        "nats: following stream '{stream}' on {} from seq {next}",
        crate::config::nats::mask_servers(config.nats.as_deref().unwrap_or_default())
    );
    follow.last = previous.filter(|(seq, _)| *seq == next - 1);
    Ok(follow)
}

/// Discards the local events after `keep`, loudly.
fn discard_tail(store: &mut Store, keep: i64, stream: &str) -> Result<()> {
    let done = store
        .discard_after(keep)
        .map_err(|e| Error::Config(format!("cannot discard the local tail: {e}")))?;
    if done.events > 0 {
        log::warn!(
            "{}; the database ends at seq {keep}",
            discarded(&done, stream)
        );
    }
    super::webhooks::cut_back(store, keep);
    Ok(())
}

/// What `discard_after` undid, for the log.
fn discarded(done: &Discarded, stream: &str) -> String {
    format!(
        "discarded {} local events (seq {} to {}) that never reached stream '{stream}': {} \
         registrations, {} unregistrations and {} updates undone",
        done.events, done.first, done.last, done.registrations, done.unregistrations, done.updates
    )
}

/// A primary resuming after it followed the stream: its relay chains its first
/// publish to the last message it applied.
pub(super) fn resume_chain(config: &Config, store: &mut Store, relay: Option<&mut Relay>) {
    let Some(relay) = relay else { return };
    match store.follow_previous(&config.nats_stream) {
        Ok(Some((seq, id))) => relay.set_previous(seq, id),
        Ok(None) => {}
        Err(e) => log::warn!("nats: cannot read the last followed message: {e}"),
    }
}

impl Reactor {
    /// Applies what the stream delivered (up to a tick's worth) into the tick's
    /// transaction; the events go out after the commit like local writes.
    pub(super) fn apply_followed(&mut self) {
        let Some(follow) = self.follow.as_mut() else {
            return;
        };
        // What arrived with this poll joins this tick's commit.
        follow.consumer.process(Instant::now());
        let batch = follow.consumer.take(MAX_APPLY_PER_TICK);
        if batch.is_empty() {
            return;
        }
        let store = &mut self.shared.store;
        let mut applied = 0;
        let mut last = None;
        for d in batch {
            match store.apply(&d.event) {
                Ok(()) => {
                    applied += 1;
                    last = Some((d.event.seq, d.msg_id));
                    self.shared.events.push(d.event);
                }
                Err(crate::store::replica::ApplyError::Misfit(why)) => {
                    follow.consumer.halt(&format!(
                        "stream event {} does not fit the local database: {why}",
                        d.event.seq
                    ));
                    break;
                }
                Err(crate::store::replica::ApplyError::Storage(e)) => {
                    log::warn!("follower: cannot apply event {}: {e}", d.event.seq);
                    break;
                }
            }
        }
        let Some((seq, msg_id)) = last else {
            return;
        };
        let stream = &self.shared.config.nats_stream;
        if let Err(e) = store.set_follow_position(stream, seq, &msg_id) {
            log::warn!("follower: cannot store the stream position: {e}");
        }
        follow.applying = Some((seq, msg_id, applied));
    }

    /// After the commit: the follower's feed, its status, a promotion under way;
    /// on a primary, whether the relay met another writer (fencing).
    pub(super) fn step_follow(&mut self) {
        if self.relay.as_ref().is_some_and(Relay::foreign_writer) {
            self.fence();
        } else if let (Some(p), Some(relay)) = (self.promoted, self.relay.as_ref())
            && relay.confirmed() > p.after
        {
            // The stream holds an event of ours: the promotion is settled.
            self.promoted = None;
        }
        let Some(follow) = self.follow.as_mut() else {
            return;
        };
        let now = Instant::now();
        let committed = self.shared.store.committed_counts().last_seq;
        if let Some((seq, id, n)) = follow.applying.take() {
            if committed >= seq {
                follow.last = Some((seq, id));
                let r = &mut self.shared.stats.replica;
                r.applied_events += n as u64;
                r.apply_commits += 1;
            } else {
                // The commit failed: ask again from what the database holds.
                let tip = event_at(&mut self.shared.store, committed);
                follow.consumer.restart_from(committed + 1, tip, now);
            }
        }
        follow.consumer.process(now);
        let mut cannot_start = false;
        if let Some(why) = follow.consumer.take_fatal() {
            self.shared.stats.replica.last_error = Some(why.clone());
            if !follow.started && self.shared.stats.replica.applied_events == 0 {
                self.fatal = Some(format!("--follow: {why}"));
                cannot_start = true;
            }
        }
        follow.consumer.status_into(&mut follow.status);
        if follow.status.state == "following" {
            follow.started = true;
        }
        self.follow_behind = follow.consumer.has_delivered();
        let r = &mut self.shared.stats.replica;
        r.follow_state = follow.status.state;
        r.connected = follow.status.connected;
        r.stream_last_seq = follow.status.stream_last.max(committed);
        r.applied_seq = committed;
        r.consumer_restarts = follow.status.recreated;
        match &follow.status.last_error {
            Some(e) => {
                if r.last_error.as_ref() != Some(e) {
                    r.last_error = Some(e.clone());
                }
                follow.error_shown = true;
            }
            None if follow.error_shown => {
                r.last_error = None;
                follow.error_shown = false;
            }
            None => {}
        }
        if r.lag_events() == 0 {
            r.behind_since = None;
        } else if r.behind_since.is_none() {
            r.behind_since = Some(now);
        }
        if cannot_start {
            self.begin_stop("the follower cannot start");
        }
        self.step_promotion(now);
        if let Some(follow) = self.follow.as_mut() {
            follow.consumer.flush(self.poll.registry(), now);
        }
    }

    /// Moves a `REPLICAOF NO ONE` on: ask the stream's end, wait until it is
    /// applied, then become primary; fail after `--promotion-timeout`.
    fn step_promotion(&mut self, now: Instant) {
        let Some(follow) = self.follow.as_mut() else {
            return;
        };
        if !self.shared.stats.replica.promote_asked {
            return;
        }
        let promotion = *follow.promotion.get_or_insert_with(|| {
            log::info!("REPLICAOF NO ONE: promoting once the stream is applied");
            Promotion {
                asked_at: now,
                deadline: now + self.shared.config.promotion_timeout,
            }
        });
        follow.consumer.ask_stream_end(now);
        let applied = self.shared.store.committed_counts().last_seq;
        let target = follow.consumer.stream_end_since(promotion.asked_at);
        let reached = target.is_some_and(|t| applied >= t);
        // Before the role changes: durable handlers resume where the old
        // primary's stopped (reactor/offsets.rs), then the webhook endpoints are
        // taken in (reactor/webhooks/kv.rs); one at a time, as both read their
        // replies on the consumer's connection.
        if reached
            && super::offsets::read_handler_offsets(
                &mut self.handler_kv,
                &mut follow.consumer,
                &mut self.handlers.durable,
                &mut self.shared.store,
                &self.shared.config.nats_stream,
                applied,
                promotion.asked_at,
            )
            && self.webhooks.read_kv(
                &mut follow.consumer,
                &mut self.shared.store,
                &self.shared.config.nats_stream,
                applied,
                promotion.asked_at,
            )
        {
            self.promote();
        } else if now >= promotion.deadline || follow.status.state == "stopped" {
            let timeout = crate::config::format_duration(self.shared.config.promotion_timeout);
            let why = if follow.status.state == "stopped" {
                format!(
                    "the follower stopped: {}",
                    follow.status.last_error.as_deref().unwrap_or("see the log")
                )
            } else if reached {
                format!(
                    "the durable handlers' offsets or the webhook endpoints were not read \
                     from JetStream within {timeout} (NATS unreachable?); still a follower"
                )
            } else if target.is_none() {
                format!(
                    "the stream's last seq was not learnt within {timeout} (NATS \
                     unreachable?); still a follower"
                )
            } else {
                format!(
                    "seq {applied} of {} applied within {timeout}; still a follower",
                    target.unwrap_or(0)
                )
            };
            log::warn!("REPLICAOF NO ONE failed: {why}");
            follow.promotion = None;
            let r = &mut self.shared.stats.replica;
            r.promote_asked = false;
            r.promotion_error = Some(why);
            self.wake_promotion_waiters();
        }
    }

    /// The follower becomes primary: the relay starts after the applied seq,
    /// chained to the last message applied; writes are taken from now on.
    fn promote(&mut self) {
        let Some(mut follow) = self.follow.take() else {
            return;
        };
        follow.consumer.shutdown(self.poll.registry());
        let applied = self.shared.store.committed_counts().last_seq;
        let config = &self.shared.config;
        let store = &mut self.shared.store;
        let relay = match super::relay::build(config, store) {
            Ok(relay) => relay,
            Err(e) => {
                log::error!("promotion: cannot start the relay: {e}");
                None
            }
        };
        self.relay = relay;
        if let Some(relay) = self.relay.as_mut() {
            if let Some((seq, id)) = follow.last.clone().filter(|(seq, _)| *seq == applied) {
                relay.set_previous(seq, id);
            } else {
                resume_chain(config, store, Some(relay));
            }
            self.relay_stored = relay.confirmed();
        }
        log::info!(
            "promoted to primary after seq {applied} of stream '{}' (chained to {}); writes are taken",
            config.nats_stream,
            follow
                .last
                .as_ref()
                .map_or("nothing", |(_, id)| id.as_str())
        );
        self.promoted = Some(match self.promoted {
            Some(p) if p.at.elapsed() < REPROMOTE_WINDOW => Promoted {
                after: applied,
                ..p
            },
            _ => Promoted {
                after: applied,
                at: Instant::now(),
                repromotions: 0,
            },
        });
        let r = &mut self.shared.stats.replica;
        r.role = Role::Primary;
        r.promote_asked = false;
        r.promotion_error = None;
        r.promotions += 1;
        r.follow_state = "promoted";
        r.behind_since = None;
        r.stream_last_seq = applied;
        self.follow_behind = false;
        self.durable_behind = !self.handlers.durable.is_empty();
        self.wake_promotion_waiters();
    }

    /// The relay found another writer's message where ours was due: another node
    /// is primary. Writes stop, the local tail the stream never got is discarded
    /// (its writes were never acknowledged under `--durability replicated`), and
    /// the node follows the stream from the relay's confirmed seq.
    fn fence(&mut self) {
        let Some(mut relay) = self.relay.take() else {
            return;
        };
        let keep = relay.confirmed();
        relay.shutdown(self.poll.registry());
        self.relay_behind = false;
        let stream = self.shared.config.nats_stream.clone();
        let last = self.shared.store.committed_counts().last_seq;
        self.shared.stats.replica.role = Role::Follower;
        log::error!(
            "fenced: stream '{stream}' holds another writer's message after seq {keep}; this \
             node stops taking writes (-READONLY) and follows the stream"
        );
        match self.shared.store.discard_after(keep) {
            Ok(done) => {
                if done.events > 0 {
                    log::error!("fenced: {}", discarded(&done, &stream));
                }
                self.shared.stats.replica.discarded_events += done.events as u64;
            }
            Err(e) => {
                log::error!(
                    "fenced: cannot discard the local tail after seq {keep} (the log ends at \
                     {last}): {e}; still read-only, not following"
                );
                self.shared.stats.replica.last_error = Some(format!("cannot discard: {e}"));
                return;
            }
        }
        debug_assert!(last >= keep);
        // As the stored offsets: a handler past the kept seq saw events that are
        // gone, and takes the stream's from there (at-least-once).
        for h in &mut self.handlers.durable {
            h.offset = h.offset.min(keep);
        }
        // INFO's copy: a follower runs no handler, which would refresh it.
        for (slot, h) in self
            .shared
            .stats
            .durable_offsets
            .iter_mut()
            .zip(&self.handlers.durable)
        {
            slot.1 = h.offset;
        }
        self.webhooks.cut_back(&mut self.shared.store, keep);
        self.shared.stats.replica.fenced += 1;
        self.shared.stats.replica.nats = true;
        match Follow::new(&self.shared.config, &mut self.shared.store, keep + 1, true) {
            Ok(follow) => self.follow = Some(follow),
            Err(e) => log::error!("fenced: cannot follow: {e}"),
        }
        // Fenced before the stream confirmed any event of this node's since its
        // promotion: the other writer's messages were most likely in flight when
        // the old primary died. Apply them and promote again, a few times at most
        // and only shortly after the promotion an operator asked for; a live
        // other primary wins otherwise, and this node stays a follower.
        if let Some(p) = self.promoted.take()
            && self.follow.is_some()
            && p.at.elapsed() < REPROMOTE_WINDOW
            && p.repromotions < MAX_REPROMOTIONS
        {
            log::warn!(
                "fenced {:.1} s after a promotion, before any event of ours reached the \
                 stream: promoting again once the stream is applied",
                p.at.elapsed().as_secs_f64()
            );
            self.promoted = Some(Promoted {
                repromotions: p.repromotions + 1,
                ..p
            });
            self.shared.stats.replica.promote_asked = true;
        }
    }

    /// Lets every parked `REPLICAOF NO ONE` run again (blocked readers woken
    /// with them go back to waiting).
    fn wake_promotion_waiters(&mut self) {
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.retain(|&k| {
            let Some(conn) = self.conns.get_mut(k) else {
                return false;
            };
            if !conn.wake(PROMOTION_WAIT + 1) {
                return conn.is_blocked();
            }
            if conn.is_open() && conn.enqueue() {
                self.carry.push(k);
            }
            false
        });
        self.blocked = blocked;
    }

    /// The follower's timers (connect attempts, answers that did not come, a
    /// stalled consumer, the periodic look at the stream's end).
    pub(super) fn follow_timers(&mut self, now: Instant) {
        let Some(follow) = self.follow.as_mut() else {
            return;
        };
        let promotion_due = follow.promotion.is_some_and(|p| now >= p.deadline);
        if promotion_due || follow.consumer.next_deadline().is_some_and(|d| now >= d) {
            follow.consumer.on_timer(self.poll.registry(), now);
            self.step_follow();
        }
    }

    /// When the follower next has something to do.
    pub(super) fn follow_deadline(&self) -> Option<Instant> {
        let follow = self.follow.as_ref()?;
        [
            follow.consumer.next_deadline(),
            follow.promotion.map(|p| p.deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Readiness of the follower's NATS connection.
    pub(super) fn follow_ready(&mut self, readable: bool, writable: bool) {
        if let Some(follow) = self.follow.as_mut() {
            follow
                .consumer
                .ready(self.poll.registry(), readable, writable, Instant::now());
        }
    }

    /// Closes the follower's NATS connection at shutdown.
    pub(super) fn stop_following(&mut self) {
        if let Some(follow) = self.follow.as_mut() {
            follow.consumer.shutdown(self.poll.registry());
        }
    }
}
