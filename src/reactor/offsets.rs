//! The reactor's side of durable handler offsets in JetStream (`nats::offsets`):
//! the primary puts each handler's offset into the KV bucket through the relay's
//! connection after each tick (once a second per handler at most, and once more
//! at a clean shutdown); a promotion reads them through the follower's
//! connection before its `+OK`, so the handlers resume where the old primary's
//! stopped (at-least-once). The webhook endpoints' writer
//! (`webhooks::kv`) shares the relay's connection: its replies are taken here
//! once a tick for both.

use std::time::Instant;

use mio::Events;

use super::{Reactor, SHUTDOWN_FLUSH_TIMEOUT};
use crate::events::handlers::DurableHandler;
use crate::nats::consumer::Consumer;
use crate::nats::offsets::{OffsetReader, OffsetWriter, WriterStatus, resume_offset};
use crate::nats::relay::Relay;
use crate::store::Store;

/// The writer while this node relays, the reader while a promotion reads.
#[derive(Debug, Default)]
pub(super) struct HandlerKv {
    writer: Option<OffsetWriter>,
    /// The reader of the promotion asked at that instant.
    reader: Option<(Instant, OffsetReader)>,
    /// The promotion (asked at that instant) whose offsets are read and set: the
    /// webhook endpoints are read after them, on the same connection, and must
    /// not see a new reader take their replies.
    read_for: Option<Instant>,
}

impl Reactor {
    /// After the relay's step: takes in the buckets' answers and puts the
    /// handler offsets and webhook endpoints that changed (`now_all`: without
    /// waiting for the interval).
    pub(super) fn step_kv_writers(&mut self, now_all: bool) {
        let config = &self.shared.config;
        let stats = &mut self.shared.stats;
        let Some(relay) = self.relay.as_mut() else {
            // Fenced or a follower: a later relay starts writers of its own.
            self.handler_kv.writer = None;
            stats.handler_offsets = None;
            self.webhooks.stop_kv(&mut stats.webhook_kv);
            return;
        };
        // No side request of either writer is out, and the relay's step flushed.
        if self.handlers.durable.is_empty() && self.webhooks.kv_idle() {
            return;
        }
        let now = Instant::now();
        let reached = relay.is_publishing();
        // Offsets and positions put are never past what the stream confirmed: a
        // fenced node discards the rest, and a node promoted later must not skip
        // the other writer's events at those seqs.
        let confirmed = relay.confirmed();
        let mut side = relay.side();
        // Both writers' replies come on this connection: taken once, offered to each.
        let replies = side.take_replies();
        self.webhooks.step_kv(
            &mut side,
            &replies,
            (reached, confirmed),
            config,
            now_all,
            &mut stats.webhook_kv,
        );
        if self.handlers.durable.is_empty() {
            relay.flush(self.poll.registry(), now);
            return;
        }
        let writer = self.handler_kv.writer.get_or_insert_with(|| {
            OffsetWriter::new(
                &config.nats_stream,
                config.nats_replicas,
                self.handlers.durable.iter().map(|h| h.name.as_str()),
            )
        });
        for reply in &replies {
            writer.answer(&mut side, reply, now);
        }
        writer.set_offsets(
            self.handlers
                .durable
                .iter()
                .map(|h| h.offset.min(confirmed)),
        );
        writer.step(&mut side, reached, now, now_all);
        relay.flush(self.poll.registry(), now);
        let status = stats
            .handler_offsets
            .get_or_insert_with(WriterStatus::default);
        writer.status_into(status);
    }

    /// When a writer or a promotion's reader next has something to do.
    pub(super) fn kv_deadline(&self) -> Option<Instant> {
        let writer = self
            .handler_kv
            .writer
            .as_ref()
            .and_then(OffsetWriter::next_deadline);
        // A reader left by a promotion that failed is no longer stepped.
        let promoting = self.shared.stats.replica.promote_asked;
        let reader = self
            .handler_kv
            .reader
            .as_ref()
            .filter(|_| promoting)
            .and_then(|(_, r)| r.next_deadline());
        let webhooks = self.webhooks.kv_deadline(promoting);
        writer.into_iter().chain(reader).chain(webhooks).min()
    }

    /// At a clean shutdown: puts every offset and webhook position that moved
    /// since its last put and waits for the acks, for `SHUTDOWN_FLUSH_TIMEOUT`
    /// at most (not at all when the relay does not publish: disconnected,
    /// reconciling or stopped).
    pub(super) fn settle_kv_writers(&mut self) {
        if !writing(self.relay.as_ref()) {
            return;
        }
        let deadline = Instant::now() + SHUTDOWN_FLUSH_TIMEOUT;
        let mut events = Events::with_capacity(64);
        loop {
            self.step_kv_writers(true);
            let writer = self.handler_kv.writer.as_ref();
            let handlers = writer.is_some_and(OffsetWriter::pending);
            let webhooks = self.webhooks.kv_pending();
            if !handlers && !webhooks {
                return;
            }
            let now = Instant::now();
            if now >= deadline || !writing(self.relay.as_ref()) {
                if let Some(writer) = writer.filter(|_| handlers) {
                    log::warn!(
                        "nats: durable handler offsets not all stored in KV bucket '{}' at \
                         shutdown; a promoted node may run the last events again",
                        writer.bucket()
                    );
                }
                if let Some(bucket) = self.webhooks.kv_bucket().filter(|_| webhooks) {
                    log::warn!(
                        "nats: webhook endpoints not all stored in KV bucket '{bucket}' at \
                         shutdown; a promoted node may deliver the last events again"
                    );
                }
                return;
            }
            let wake = self.kv_deadline();
            if !self.poll_relay_only(&mut events, wake, deadline) {
                return;
            }
        }
    }
}

/// True when `relay` publishes (it is connected then; puts are made only then).
fn writing(relay: Option<&Relay>) -> bool {
    relay.is_some_and(Relay::is_publishing)
}

/// A promotion whose stream is applied: reads each durable handler's offset
/// from the bucket through the follower's connection, then sets each handler's
/// offset to [`resume_offset`] of its own, the bucket's and `applied`, and
/// stores it. True once done (at once without durable handlers, and again for
/// the same promotion); until then the promotion waits (and fails at its own
/// deadline).
pub(super) fn read_handler_offsets(
    kv: &mut HandlerKv,
    consumer: &mut Consumer,
    durable: &mut [DurableHandler],
    store: &mut Store,
    stream: &str,
    applied: i64,
    asked_at: Instant,
) -> bool {
    let now = Instant::now();
    if durable.is_empty() || kv.read_for == Some(asked_at) {
        return true;
    }
    if kv.reader.as_ref().is_none_or(|(at, _)| *at != asked_at) {
        let names = durable.iter().map(|h| h.name.as_str());
        kv.reader = Some((asked_at, OffsetReader::new(stream, names, now)));
    }
    let Some((_, reader)) = kv.reader.as_mut() else {
        return false;
    };
    let mut side = consumer.side();
    for reply in side.take_replies() {
        reader.answer(&reply, now);
    }
    reader.step(&mut side, now);
    let Some(values) = reader.values() else {
        return false;
    };
    kv.reader = None;
    kv.read_for = Some(asked_at);
    for (h, stored) in durable.iter_mut().zip(values) {
        let offset = resume_offset(h.offset, stored, applied);
        log::info!(
            "durable handler '{}' resumes after event {offset} (local offset {}, KV bucket {})",
            h.name,
            h.offset,
            stored.map_or_else(|| "none".to_string(), |v| v.to_string())
        );
        if offset != h.offset {
            h.offset = offset;
            if let Err(e) = store.set_handler_offset(&h.name, offset) {
                log::warn!("durable handler '{}': cannot store its offset: {e}", h.name);
            }
        }
    }
    true
}
