//! The reactor's side of webhook endpoints in JetStream (`nats::webhook_kv`):
//! while this node relays, every endpoint's configuration and position go into
//! the KV bucket through the relay's connection (a configuration change at
//! once, a moved position once a second at most, everything at a clean
//! shutdown); a promotion reads the bucket through the follower's connection
//! before its `+OK` and takes the endpoints in, so the promoted node delivers
//! from where the old primary's deliveries stood (at-least-once).

use std::collections::BTreeMap;
use std::time::Instant;

use super::Webhooks;
use crate::config::Config;
use crate::nats::consumer::Consumer;
use crate::nats::offsets::{OffsetWriter, WriterStatus};
use crate::nats::side::{SideLink, SideReply};
use crate::nats::webhook_kv::{self, WebhookReader};
use crate::store::{CarriedWebhook, Store};
use crate::webhook::engine::Endpoint;

/// What the writer was last given for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Given {
    position: i64,
    requeued: usize,
    disabled: Option<String>,
}

impl Given {
    fn of(e: &Endpoint, confirmed: i64) -> Given {
        Given {
            position: e.state.position.min(confirmed),
            requeued: e.requeued.len(),
            disabled: e.state.disabled.clone(),
        }
    }
}

/// The writer while this node relays, the reader while a promotion reads.
#[derive(Debug, Default)]
pub(in crate::reactor) struct WebhookKv {
    writer: Option<OffsetWriter>,
    /// Per endpoint, what the writer holds for it.
    given: BTreeMap<i64, Given>,
    /// Endpoints a committed WEBHOOK command changed: put at once.
    changed: Vec<i64>,
    /// When a position that moved may next be given to the writer.
    next_give: Option<Instant>,
    /// The reader of the promotion asked at that instant.
    reader: Option<(Instant, WebhookReader)>,
}

impl WebhookKv {
    /// Notes endpoints a committed command changed (only while writing: a
    /// writer that starts puts every endpoint anyway).
    pub(super) fn note_changed(&mut self, ids: &[i64]) {
        if self.writer.is_some() {
            self.changed.extend_from_slice(ids);
        }
    }
}

/// The value of endpoint `e`'s key, its position never past the stream's
/// `confirmed` seq.
fn carried(e: &Endpoint, confirmed: i64) -> CarriedWebhook {
    CarriedWebhook {
        id: e.id,
        url: e.url.clone(),
        secret: e.secret.text(),
        events: e.filter.text(),
        disabled: e.state.disabled.clone(),
        position: e.state.position.min(confirmed),
        requeued: e.requeued.iter().copied().collect(),
    }
}

impl Webhooks {
    /// Without a relay (a follower, fenced): the writer stops; a later relay
    /// starts one of its own.
    pub(in crate::reactor) fn stop_kv(&mut self, status: &mut Option<WriterStatus>) {
        let kv = &mut self.kv;
        kv.writer = None;
        kv.given.clear();
        kv.changed.clear();
        kv.next_give = None;
        *status = None;
    }

    /// While this node relays: takes in the bucket's answers among `replies`,
    /// gives the writer what changed and lets it send what is due on `link`
    /// (`now_all`: without waiting for the interval). `relay`: whether the relay
    /// publishes, and the stream's confirmed seq, past which no position is put.
    pub(in crate::reactor) fn step_kv(
        &mut self,
        link: &mut impl SideLink,
        replies: &[SideReply],
        (reached, confirmed): (bool, i64),
        config: &Config,
        now_all: bool,
        status: &mut Option<WriterStatus>,
    ) {
        if self.kv_idle() {
            return;
        }
        let kv = &mut self.kv;
        let now = Instant::now();
        let writer = kv.writer.get_or_insert_with(|| {
            OffsetWriter::for_bucket(
                webhook_kv::bucket_name(&config.nats_stream),
                config.nats_replicas,
                "webhook endpoints",
                "webhook endpoint",
            )
        });
        for reply in replies {
            writer.answer(link, reply, now);
        }
        kv.next_give = None;
        kv.changed.sort_unstable();
        kv.changed.dedup();
        for (&id, e) in &self.endpoints {
            let given = kv.given.get(&id);
            let at_once = kv.changed.binary_search(&id).is_ok()
                || given.is_none_or(|g| g.disabled != e.state.disabled);
            let moved = given.is_none_or(|g| {
                g.position != e.state.position.min(confirmed) || g.requeued != e.requeued.len()
            });
            if !at_once && !moved {
                continue;
            }
            let mut digits = itoa::Buffer::new();
            let key = webhook_kv::key(id, &mut digits);
            // A position moves with every delivery: its value is built only when
            // the writer may send it, not at every tick.
            let wait = writer.put_due_at(key).filter(|&t| t > now);
            if let Some(t) = wait.filter(|_| !at_once && !now_all) {
                kv.next_give = Some(kv.next_give.map_or(t, |n| n.min(t)));
                continue;
            }
            writer.put(key, webhook_kv::value(&carried(e, confirmed)), at_once);
            kv.given.insert(id, Given::of(e, confirmed));
        }
        kv.changed.clear();
        // Every endpoint was given above (a new one at once): only more given
        // than there are endpoints means some were deleted.
        if kv.given.len() > self.endpoints.len() {
            let endpoints = &self.endpoints;
            kv.given.retain(|id, _| {
                let kept = endpoints.contains_key(id);
                if !kept {
                    writer.delete(webhook_kv::key(*id, &mut itoa::Buffer::new()));
                }
                kept
            });
        }
        writer.step(link, reached, now, now_all);
        writer.status_into(status.get_or_insert_with(WriterStatus::default));
    }

    /// True while there is nothing to write: no writer, and no endpoint to
    /// start one for.
    pub(in crate::reactor) fn kv_idle(&self) -> bool {
        self.kv.writer.is_none() && self.endpoints.is_empty()
    }

    /// True while the writer has puts the bucket has not acknowledged.
    pub(in crate::reactor) fn kv_pending(&self) -> bool {
        self.kv.writer.as_ref().is_some_and(OffsetWriter::pending)
    }

    /// The writer's bucket, for the log.
    pub(in crate::reactor) fn kv_bucket(&self) -> Option<&str> {
        self.kv.writer.as_ref().map(OffsetWriter::bucket)
    }

    /// When the writer, or a promotion's reader (`promoting`), next has
    /// something to do.
    pub(in crate::reactor) fn kv_deadline(&self, promoting: bool) -> Option<Instant> {
        let writer = self
            .kv
            .writer
            .as_ref()
            .and_then(OffsetWriter::next_deadline);
        let writer = writer.into_iter().chain(self.kv.next_give).min();
        // A reader left by a promotion that failed is no longer stepped.
        let reader = self
            .kv
            .reader
            .as_ref()
            .filter(|_| promoting)
            .and_then(|(_, r)| r.next_deadline());
        writer.into_iter().chain(reader).min()
    }

    /// The log was cut back to `keep` (fenced): no endpoint stays past it, so
    /// the stream's events at those seqs are delivered after a promotion.
    pub(in crate::reactor) fn cut_back(&mut self, store: &mut Store, keep: i64) {
        cut_back(store, keep);
        self.reload_all = true;
        self.behind = true;
    }

    /// A promotion whose stream is applied: reads the bucket through the
    /// follower's connection, then takes its endpoints in (same ids, their
    /// configuration, each at the furthest of its local position and the
    /// bucket's, never past `applied`; local endpoints the bucket deleted go),
    /// and reloads every endpoint. True once done; until then the promotion
    /// waits (and fails at its own deadline).
    pub(in crate::reactor) fn read_kv(
        &mut self,
        consumer: &mut Consumer,
        store: &mut Store,
        stream: &str,
        applied: i64,
        asked_at: Instant,
    ) -> bool {
        let now = Instant::now();
        let kv = &mut self.kv;
        if kv.reader.as_ref().is_none_or(|(at, _)| *at != asked_at) {
            kv.reader = Some((asked_at, WebhookReader::new(stream, now)));
        }
        let Some((_, reader)) = kv.reader.as_mut() else {
            return false;
        };
        let mut side = consumer.side();
        for reply in side.take_replies() {
            reader.answer(&reply, now);
        }
        reader.step(&mut side, now);
        let Some(adoption) = reader.adoption() else {
            return false;
        };
        kv.reader = None;
        let Some(adoption) = adoption else {
            log::info!(
                "webhooks: no KV bucket '{}'; the local endpoints stay as they are",
                webhook_kv::bucket_name(stream)
            );
            return true;
        };
        match store.webhooks_adopt(&adoption, applied, crate::clock::now_ms()) {
            Ok(done) => log::info!(
                "webhooks: {} endpoint(s) taken from KV bucket '{}', {} local one(s) deleted",
                done.taken,
                webhook_kv::bucket_name(stream),
                done.deleted
            ),
            // The node keeps the endpoints it had; the bucket is not read again.
            Err(e) => log::error!(
                "webhooks: cannot store the endpoints of KV bucket '{}': {e}; the local ones \
                 stay",
                webhook_kv::bucket_name(stream)
            ),
        }
        self.reload_all = true;
        self.behind = true;
        true
    }
}

/// Moves every endpoint stored past `keep` back to it (see
/// [`Store::webhooks_cut_back`]), loudly.
pub(in crate::reactor) fn cut_back(store: &mut Store, keep: i64) {
    match store.webhooks_cut_back(keep) {
        Ok(0) => {}
        Ok(n) => log::warn!(
            "webhooks: {n} endpoint(s) moved back to seq {keep} with the log; the events \
             that take those seqs are delivered to them"
        ),
        Err(e) => log::error!("webhooks: cannot move the endpoints back to seq {keep}: {e}"),
    }
}
