//! Consumer groups over the `events` stream, persisted in SQLite inside the tick's
//! transaction: each group's last delivered entry and its consumers, and the reads
//! that hand out new entries (`>`) and take acknowledgements (XACK). Pending
//! entries, claims and dead letters are in [`super::pending`].
//!
//! Redis Streams semantics: `>` reads hand out entries never delivered to the group
//! and record them as pending until XACK.

use rusqlite::{Connection, OptionalExtension, params};

use super::event_log::{EVENT_COLUMNS, event_ref};
use super::{EventRef, StorageError, Store};

/// A storage result.
pub(super) type Res<T> = Result<T, StorageError>;

/// A group's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its name.
    pub name: String,
    /// Seq of the last entry delivered to it.
    pub last_delivered: i64,
    /// Entries delivered to it so far.
    pub entries_read: i64,
    /// Consumers it knows.
    pub consumers: i64,
    /// Entries delivered and not yet acknowledged.
    pub pending: i64,
}

impl GroupInfo {
    /// Entries of the log the group has not been given yet, with `last_seq` the
    /// log's newest sequence number.
    pub fn lag(&self, last_seq: i64) -> i64 {
        (last_seq - self.last_delivered).max(0)
    }
}

/// One consumer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Its pending entries.
    pub pending: i64,
    /// Milliseconds since it last interacted.
    pub idle_ms: i64,
    /// Milliseconds since its last successful read or claim (-1: never).
    pub inactive_ms: i64,
}

/// A pending entry as XINFO STREAM FULL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The entry's seq.
    pub seq: i64,
    /// Who has it.
    pub consumer: String,
    /// When it was last delivered, Unix ms.
    pub delivered_at: i64,
    /// Deliveries so far.
    pub deliveries: i64,
}

/// A consumer as XINFO STREAM FULL describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerFull {
    /// Its name.
    pub name: String,
    /// When it last interacted, Unix ms.
    pub seen_at: i64,
    /// When it last read or claimed something, Unix ms (`None`: never).
    pub active_at: Option<i64>,
    /// Its pending entries in all.
    pub pending_count: i64,
    /// Its first pending entries, by id.
    pub pending: Vec<Delivery>,
}

/// A group as XINFO STREAM FULL describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupFull {
    /// What XINFO GROUPS says of it.
    pub info: GroupInfo,
    /// Its first pending entries, by id.
    pub pending: Vec<Delivery>,
    /// Its consumers, by name.
    pub consumers: Vec<ConsumerFull>,
}

/// True when the group exists.
pub(super) fn group_exists(c: &Connection, group: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM stream_groups WHERE name = ?1")?
        .exists(params![group])
}

/// Records that `consumer` interacted now (creating it), and was active if `active`.
pub(super) fn touch_consumer(
    c: &Connection,
    group: &str,
    consumer: &str,
    now: i64,
    active: bool,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO stream_consumers (grp, name, seen_at, active_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (grp, name) DO UPDATE SET seen_at = ?3, \
         active_at = coalesce(?4, active_at)",
    )?
    .execute(params![group, consumer, now, active.then_some(now)])?;
    Ok(())
}

impl Store {
    /// XGROUP CREATE: false when the group exists.
    pub fn group_create(&mut self, group: &str, last_delivered: i64, now: i64) -> Res<bool> {
        self.write(|c| {
            if group_exists(c, group)? {
                return Ok(false);
            }
            let read: i64 = c
                .prepare_cached("SELECT count(*) FROM events WHERE seq <= ?1")?
                .query_row(params![last_delivered], |r| r.get(0))?;
            c.prepare_cached(
                "INSERT INTO stream_groups (name, last_delivered, entries_read, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![group, last_delivered, read, now])?;
            Ok(true)
        })
    }

    /// XGROUP DESTROY: false when there was no such group.
    pub fn group_destroy(&mut self, group: &str) -> Res<bool> {
        self.write(|c| {
            c.prepare_cached("DELETE FROM stream_pending WHERE grp = ?1")?
                .execute(params![group])?;
            c.prepare_cached("DELETE FROM stream_consumers WHERE grp = ?1")?
                .execute(params![group])?;
            Ok(
                c.prepare_cached("DELETE FROM stream_groups WHERE name = ?1")?
                    .execute(params![group])?
                    > 0,
            )
        })
    }

    /// XGROUP SETID: false when there is no such group.
    pub fn group_set_id(&mut self, group: &str, last_delivered: i64) -> Res<bool> {
        self.write(|c| {
            Ok(c.prepare_cached(
                "UPDATE stream_groups SET last_delivered = ?2, \
                 entries_read = (SELECT count(*) FROM events WHERE seq <= ?2) WHERE name = ?1",
            )?
            .execute(params![group, last_delivered])?
                > 0)
        })
    }

    /// XGROUP CREATECONSUMER: `None` without the group, else whether it was new.
    pub fn consumer_create(&mut self, group: &str, consumer: &str, now: i64) -> Res<Option<bool>> {
        self.write(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            let n = c
                .prepare_cached(
                    "INSERT INTO stream_consumers (grp, name, seen_at, active_at) \
                     VALUES (?1, ?2, ?3, NULL) ON CONFLICT DO NOTHING",
                )?
                .execute(params![group, consumer, now])?;
            Ok(Some(n > 0))
        })
    }

    /// XGROUP DELCONSUMER: `None` without the group, else the pending entries the
    /// consumer had (now dropped).
    pub fn consumer_delete(&mut self, group: &str, consumer: &str) -> Res<Option<i64>> {
        self.write(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            let pending = c
                .prepare_cached("DELETE FROM stream_pending WHERE grp = ?1 AND consumer = ?2")?
                .execute(params![group, consumer])?;
            c.prepare_cached("DELETE FROM stream_consumers WHERE grp = ?1 AND name = ?2")?
                .execute(params![group, consumer])?;
            Ok(Some(pending as i64))
        })
    }

    /// XREADGROUP with `>`: visits up to `count` entries never delivered to the
    /// group, as SQLite lends them, and records each as pending for `consumer`
    /// (not with `noack`). `None` without the group, else how many `f` saw.
    pub fn group_read_new(
        &mut self,
        group: &str,
        consumer: &str,
        count: usize,
        noack: bool,
        now: i64,
        mut f: impl FnMut(EventRef<'_>),
    ) -> Res<Option<usize>> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        self.write(|c| {
            let last: Option<i64> = c
                .prepare_cached("SELECT last_delivered FROM stream_groups WHERE name = ?1")?
                .query_row(params![group], |r| r.get(0))
                .optional()?;
            let Some(last) = last else { return Ok(None) };
            let mut select = c.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            let mut pend = if noack {
                None
            } else {
                Some(c.prepare_cached(
                    "INSERT OR REPLACE INTO stream_pending \
                     (grp, seq, consumer, delivered_at, deliveries) VALUES (?1, ?2, ?3, ?4, 1)",
                )?)
            };
            let mut rows = select.query(params![last, limit])?;
            let (mut n, mut newest) = (0usize, last);
            while let Some(row) = rows.next()? {
                let e = event_ref(row)?;
                if let Some(pend) = pend.as_mut() {
                    pend.execute(params![group, e.seq, consumer, now])?;
                }
                newest = e.seq;
                n += 1;
                f(e);
            }
            drop(rows);
            touch_consumer(c, group, consumer, now, n > 0)?;
            if n > 0 {
                c.prepare_cached(
                    "UPDATE stream_groups SET last_delivered = ?2, entries_read = entries_read + ?3 \
                     WHERE name = ?1",
                )?
                .execute(params![group, newest, n as i64])?;
            }
            Ok(Some(n))
        })
    }

    /// XACK: how many of `seqs` were pending in the group (and no longer are).
    pub fn group_ack(&mut self, group: &str, seqs: &[i64]) -> Res<i64> {
        self.write(|c| {
            let mut del =
                c.prepare_cached("DELETE FROM stream_pending WHERE grp = ?1 AND seq = ?2")?;
            let mut n = 0;
            for seq in seqs {
                n += del.execute(params![group, seq])? as i64;
            }
            Ok(n)
        })
    }

    /// XINFO GROUPS.
    pub fn groups(&mut self) -> Res<Vec<GroupInfo>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT g.name, g.last_delivered, g.entries_read, \
                 (SELECT count(*) FROM stream_consumers s WHERE s.grp = g.name), \
                 (SELECT count(*) FROM stream_pending p WHERE p.grp = g.name) \
                 FROM stream_groups g ORDER BY g.name",
            )?
            .query_map([], |r| {
                Ok(GroupInfo {
                    name: r.get(0)?,
                    last_delivered: r.get(1)?,
                    entries_read: r.get(2)?,
                    consumers: r.get(3)?,
                    pending: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    /// XINFO CONSUMERS: `None` without the group.
    pub fn consumers(&mut self, group: &str, now: i64) -> Res<Option<Vec<ConsumerInfo>>> {
        self.read(|c| {
            if !group_exists(c, group)? {
                return Ok(None);
            }
            let rows = c
                .prepare_cached(
                    "SELECT s.name, (SELECT count(*) FROM stream_pending p \
                     WHERE p.grp = s.grp AND p.consumer = s.name), \
                     ?2 - s.seen_at, coalesce(?2 - s.active_at, -1) \
                     FROM stream_consumers s WHERE s.grp = ?1 ORDER BY s.name",
                )?
                .query_map(params![group, now], |r| {
                    Ok(ConsumerInfo {
                        name: r.get(0)?,
                        pending: r.get(1)?,
                        idle_ms: r.get::<_, i64>(2)?.max(0),
                        inactive_ms: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some(rows))
        })
    }

    /// XINFO STREAM FULL: every group with its first `count` pending entries, and
    /// its consumers each with their first `count` pending entries.
    pub fn groups_full(&mut self, count: usize) -> Res<Vec<GroupFull>> {
        let limit = i64::try_from(count).unwrap_or(i64::MAX);
        let groups = self.groups()?;
        self.read(|c| {
            let mut out = Vec::with_capacity(groups.len());
            for info in groups {
                let pending = c
                    .prepare_cached(
                        "SELECT seq, consumer, delivered_at, deliveries FROM stream_pending \
                         WHERE grp = ?1 ORDER BY seq LIMIT ?2",
                    )?
                    .query_map(params![info.name, limit], delivery)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let listed = c
                    .prepare_cached(
                        "SELECT s.name, s.seen_at, s.active_at, (SELECT count(*) FROM \
                         stream_pending p WHERE p.grp = s.grp AND p.consumer = s.name) \
                         FROM stream_consumers s WHERE s.grp = ?1 ORDER BY s.name",
                    )?
                    .query_map(params![info.name], |r| {
                        Ok(ConsumerFull {
                            name: r.get(0)?,
                            seen_at: r.get(1)?,
                            active_at: r.get(2)?,
                            pending_count: r.get(3)?,
                            pending: Vec::new(),
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut consumers = Vec::with_capacity(listed.len());
                for mut consumer in listed {
                    consumer.pending = c
                        .prepare_cached(
                            "SELECT seq, consumer, delivered_at, deliveries FROM stream_pending \
                             WHERE grp = ?1 AND consumer = ?2 ORDER BY seq LIMIT ?3",
                        )?
                        .query_map(params![info.name, consumer.name, limit], delivery)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    consumers.push(consumer);
                }
                out.push(GroupFull {
                    info,
                    pending,
                    consumers,
                });
            }
            Ok(out)
        })
    }
}

/// Reads a [`Delivery`] from `seq, consumer, delivered_at, deliveries`.
fn delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        seq: r.get(0)?,
        consumer: r.get(1)?,
        delivered_at: r.get(2)?,
        deliveries: r.get(3)?,
    })
}
