//! Pending entries of consumer groups: re-reading a consumer's own entries, the
//! XPENDING views, XCLAIM/XAUTOCLAIM moving idle entries to another consumer, and
//! dead letters.
//!
//! Redis Streams semantics: explicit ids re-read a consumer's own pending entries;
//! XCLAIM/XAUTOCLAIM move idle pending entries to another consumer. With a
//! delivery limit, an entry about to be delivered again after reaching it is
//! acknowledged and appended to `events.dead` instead.

use rusqlite::{Connection, OptionalExtension, params};

use super::event_log::{EVENT_COLUMNS, event_row};
use super::groups::{Res, group_exists, touch_consumer};
use super::{EventRow, Store};

/// One pending entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The entry's seq.
    pub seq: i64,
    /// Who has it.
    pub consumer: String,
    /// Milliseconds since its last delivery.
    pub idle_ms: i64,
    /// Deliveries so far.
    pub deliveries: i64,
}

/// A dead letter: an entry given up on after too many deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in `events.dead`.
    pub seq: i64,
    /// The event's seq in `events`.
    pub event_seq: i64,
    /// The group that gave up.
    pub group: String,
    /// The consumer that had it last.
    pub consumer: String,
    /// How often it was delivered.
    pub deliveries: i64,
    /// When it was given up, Unix ms.
    pub at: i64,
}

/// What a delivery of pending entries produced: each entry, or `None` for an
/// entry whose event was trimmed from the log.
pub type Delivered = Vec<(i64, Option<EventRow>)>;

/// Options of XCLAIM beyond its ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimOptions {
    /// Set the idle time to this (IDLE ms) instead of 0.
    pub idle_ms: Option<i64>,
    /// Set the delivery time to this (TIME unix-ms).
    pub time_ms: Option<i64>,
    /// Set the delivery count to this (RETRYCOUNT n).
    pub retry_count: Option<i64>,
    /// Create the pending entry if it does not exist (FORCE).
    pub force: bool,
    /// Do not count a delivery; return ids only (JUSTID).
    pub just_id: bool,
}

/// The event `seq`, unless it was trimmed from the log.
fn event(c: &Connection, seq: i64) -> rusqlite::Result<Option<EventRow>> {
    c.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"
    ))?
    .query_row(params![seq], event_row)
    .optional()
}

/// Moves `seq` from the group's pending entries to `events.dead`.
fn bury(
    c: &Connection,
    group: &str,
    consumer: &str,
    seq: i64,
    deliveries: i64,
    now: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached("DELETE FROM stream_pending WHERE grp = ?1 AND seq = ?2")?
        .execute(params![group, seq])?;
    c.prepare_cached(
        "INSERT INTO dead_letters (event_seq, grp, consumer, deliveries, at) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![seq, group, consumer, deliveries, now])?;
    log::info!(
        "event {seq} dead-lettered in group '{group}' after {deliveries} deliveries (last to '{consumer}')"
    );
    Ok(())
}

impl Store {
    /// XREADGROUP with an id: the consumer's own pending entries after `after`,
    /// delivered again (counted). Entries past `max_deliveries` (0 = no limit) are
    /// dead-lettered instead and come back without their event, like entries
    /// trimmed from the log. `None` without the group.
    pub fn group_read_pending(
        &mut self,
        group: &str,
        consumer: &str,
        after: i64,
        count: usize,
        max_deliveries: u64,
        now: i64,
    ) -> Res<Option<Delivered>> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        self.write(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            touch_consumer(c, group, consumer, now, false)?;
            let pending = c
                .prepare_cached(
                    "SELECT seq, deliveries FROM stream_pending \
                     WHERE grp = ?1 AND consumer = ?2 AND seq > ?3 ORDER BY seq LIMIT ?4",
                )?
                .query_map(params![group, consumer, after, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut out = Vec::with_capacity(pending.len());
            for (seq, deliveries) in pending {
                out.push(redeliver(
                    c,
                    group,
                    consumer,
                    seq,
                    deliveries,
                    max_deliveries,
                    now,
                )?);
            }
            Ok(Some(out))
        })
    }

    /// XPENDING summary: `None` without the group, else (count, lowest, highest,
    /// per-consumer counts).
    #[allow(clippy::type_complexity)]
    pub fn group_pending_summary(
        &mut self,
        group: &str,
    ) -> Res<Option<(i64, Option<i64>, Option<i64>, Vec<(String, i64)>)>> {
        self.read(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            let (n, lo, hi) = c
                .prepare_cached(
                    "SELECT count(*), min(seq), max(seq) FROM stream_pending WHERE grp = ?1",
                )?
                .query_row(params![group], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let per = c
                .prepare_cached(
                    "SELECT consumer, count(*) FROM stream_pending WHERE grp = ?1 \
                     GROUP BY consumer ORDER BY consumer",
                )?
                .query_map(params![group], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((n, lo, hi, per)))
        })
    }

    /// XPENDING extended form: `None` without the group.
    #[allow(clippy::too_many_arguments)]
    pub fn group_pending(
        &mut self,
        group: &str,
        lo: i64,
        hi: i64,
        count: usize,
        consumer: Option<&str>,
        min_idle_ms: i64,
        now: i64,
    ) -> Res<Option<Vec<Pending>>> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        self.read(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            let rows = c
                .prepare_cached(
                    "SELECT seq, consumer, ?6 - delivered_at, deliveries FROM stream_pending \
                     WHERE grp = ?1 AND seq BETWEEN ?2 AND ?3 \
                     AND (?4 IS NULL OR consumer = ?4) AND ?6 - delivered_at >= ?7 \
                     ORDER BY seq LIMIT ?5",
                )?
                .query_map(
                    params![group, lo, hi, consumer, limit, now, min_idle_ms],
                    |r| {
                        Ok(Pending {
                            seq: r.get(0)?,
                            consumer: r.get(1)?,
                            idle_ms: r.get::<_, i64>(2)?.max(0),
                            deliveries: r.get(3)?,
                        })
                    },
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(rows))
        })
    }

    /// XCLAIM: `None` without the group, else the claimed entries (entries whose
    /// event was trimmed are dropped from the pending list and not returned).
    #[allow(clippy::too_many_arguments)]
    pub fn group_claim(
        &mut self,
        group: &str,
        consumer: &str,
        min_idle_ms: i64,
        seqs: &[i64],
        opts: &ClaimOptions,
        max_deliveries: u64,
        now: i64,
    ) -> Res<Option<Delivered>> {
        self.write(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            touch_consumer(c, group, consumer, now, false)?;
            let mut out = Vec::new();
            for &seq in seqs {
                let current: Option<(i64, i64, String)> = c
                    .prepare_cached(
                        "SELECT delivered_at, deliveries, consumer FROM stream_pending \
                         WHERE grp = ?1 AND seq = ?2",
                    )?
                    .query_row(params![group, seq], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()?;
                let Some(ev) = event(c, seq)? else {
                    // The event is gone from the log: drop it from the group too.
                    c.prepare_cached("DELETE FROM stream_pending WHERE grp = ?1 AND seq = ?2")?
                        .execute(params![group, seq])?;
                    continue;
                };
                // FORCE makes an entry pending as if delivered once already, as
                // Redis does (the claim then counts another delivery).
                let (deliveries, owner) = match current {
                    Some((at, d, owner)) if now - at >= min_idle_ms => (d, owner),
                    Some(_) => continue,
                    None if opts.force => (1, consumer.to_string()),
                    None => continue,
                };
                out.extend(claim_one(
                    c,
                    group,
                    consumer,
                    &owner,
                    ev,
                    deliveries,
                    opts,
                    max_deliveries,
                    now,
                )?);
            }
            if !out.is_empty() {
                touch_consumer(c, group, consumer, now, true)?;
            }
            Ok(Some(out))
        })
    }

    /// XAUTOCLAIM: `None` without the group, else (next start seq or 0 when the
    /// scan finished, claimed entries, seqs that left the pending entries because
    /// their events were trimmed or because they were dead-lettered).
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    pub fn group_autoclaim(
        &mut self,
        group: &str,
        consumer: &str,
        min_idle_ms: i64,
        start: i64,
        count: usize,
        opts: &ClaimOptions,
        max_deliveries: u64,
        now: i64,
    ) -> Res<Option<(i64, Delivered, Vec<i64>)>> {
        // Like Redis, examine at most ten times COUNT pending entries per call.
        let scan = i64::try_from(count.saturating_mul(10)).unwrap_or(i64::MAX);
        self.write(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            touch_consumer(c, group, consumer, now, false)?;
            let candidates = c
                .prepare_cached(
                    "SELECT seq, delivered_at, deliveries, consumer FROM stream_pending \
                     WHERE grp = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                )?
                .query_map(params![group, start, scan + 1], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut claimed = Vec::new();
            let mut deleted = Vec::new();
            let mut next = 0;
            for (i, (seq, at, deliveries, owner)) in candidates.iter().enumerate() {
                let (seq, at, deliveries) = (*seq, *at, *deliveries);
                // COUNT bounds the reply, deleted ids included, as in Redis.
                if claimed.len() + deleted.len() >= count || i as i64 >= scan {
                    next = seq;
                    break;
                }
                if now - at < min_idle_ms {
                    continue;
                }
                let Some(ev) = event(c, seq)? else {
                    c.prepare_cached("DELETE FROM stream_pending WHERE grp = ?1 AND seq = ?2")?
                        .execute(params![group, seq])?;
                    deleted.push(seq);
                    continue;
                };
                // A dead-lettered entry left the group's pending entries as an
                // entry deleted from a Redis stream leaves them: a deleted id.
                match claim_one(
                    c,
                    group,
                    consumer,
                    owner,
                    ev,
                    deliveries,
                    opts,
                    max_deliveries,
                    now,
                )? {
                    Some(entry) => claimed.push(entry),
                    None => deleted.push(seq),
                }
            }
            if !claimed.is_empty() {
                touch_consumer(c, group, consumer, now, true)?;
            }
            Ok(Some((next, claimed, deleted)))
        })
    }

    /// Dead letters with `lo <= seq <= hi`, ascending or descending.
    pub fn dead_letters(
        &mut self,
        lo: i64,
        hi: i64,
        count: usize,
        rev: bool,
    ) -> Res<Vec<(DeadLetter, Option<EventRow>)>> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        let order = if rev { "DESC" } else { "ASC" };
        self.read(|c| {
            let rows = c
                .prepare_cached(&format!(
                    "SELECT seq, event_seq, grp, consumer, deliveries, at FROM dead_letters \
                     WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq {order} LIMIT ?3"
                ))?
                .query_map(params![lo, hi, limit], |r| {
                    Ok(DeadLetter {
                        seq: r.get(0)?,
                        event_seq: r.get(1)?,
                        group: r.get(2)?,
                        consumer: r.get(3)?,
                        deliveries: r.get(4)?,
                        at: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|d| {
                    let ev = event(c, d.event_seq)?;
                    Ok((d, ev))
                })
                .collect()
        })
    }

    /// Dead letters in all.
    pub fn dead_letter_count(&mut self) -> Res<i64> {
        self.read(|c| {
            c.prepare_cached("SELECT count(*) FROM dead_letters")?
                .query_row([], |r| r.get(0))
        })
    }
}

/// Delivers a consumer's pending entry again, or dead-letters it past the limit
/// (then `(seq, None)`, as for an entry trimmed from the log).
fn redeliver(
    c: &Connection,
    group: &str,
    consumer: &str,
    seq: i64,
    deliveries: i64,
    max_deliveries: u64,
    now: i64,
) -> rusqlite::Result<(i64, Option<EventRow>)> {
    let Some(ev) = event(c, seq)? else {
        // Trimmed: Redis reports the id with a nil entry and keeps it pending.
        return Ok((seq, None));
    };
    if max_deliveries > 0 && deliveries >= max_deliveries as i64 {
        bury(c, group, consumer, seq, deliveries, now)?;
        // Gone from the consumer's history as an entry deleted from a Redis
        // stream is: its id with a nil body, so that a reply that was due
        // entries is never empty while some remain.
        return Ok((seq, None));
    }
    c.prepare_cached(
        "UPDATE stream_pending SET delivered_at = ?3, deliveries = deliveries + 1 \
         WHERE grp = ?1 AND seq = ?2",
    )?
    .execute(params![group, seq, now])?;
    Ok((seq, Some(ev)))
}

/// Moves one pending (or, forced, new) entry from `owner` to `consumer`; past the
/// delivery limit it is dead-lettered under `owner`, who had it last.
#[allow(clippy::too_many_arguments)]
fn claim_one(
    c: &Connection,
    group: &str,
    consumer: &str,
    owner: &str,
    ev: EventRow,
    deliveries: i64,
    opts: &ClaimOptions,
    max_deliveries: u64,
    now: i64,
) -> rusqlite::Result<Option<(i64, Option<EventRow>)>> {
    let seq = ev.seq;
    if !opts.just_id && max_deliveries > 0 && deliveries >= max_deliveries as i64 {
        bury(c, group, owner, seq, deliveries, now)?;
        return Ok(None);
    }
    let delivered_at = match (opts.time_ms, opts.idle_ms) {
        (Some(t), _) => t,
        (None, Some(idle)) => now - idle,
        (None, None) => now,
    };
    let count = opts.retry_count.unwrap_or(if opts.just_id {
        deliveries
    } else {
        deliveries + 1
    });
    c.prepare_cached(
        "INSERT OR REPLACE INTO stream_pending (grp, seq, consumer, delivered_at, deliveries) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![group, seq, consumer, delivered_at, count])?;
    Ok(Some((seq, (!opts.just_id).then_some(ev))))
}
