//! An endpoint's next event: its requeued dead letters first, then the first
//! committed event after its position that its filter lets through, read from
//! the last commit's events when they hold it, else from the log.

use crate::events::Event;
use crate::reactor::committed_tail;
use crate::store::Store;
use crate::webhook::engine::{Endpoint, Target};

/// How many events are read from the log, in turn, per endpoint and tick while
/// looking for the next one its filter lets through: the first event is most
/// often the one, and decoding a whole batch for each delivery would cost more
/// than the delivery itself; a filter that passes over many events still moves
/// up to `1 + 16 + 256` events a tick.
const READS: [usize; 3] = [1, 16, 256];

/// The event endpoint `e` sends next, up to `last`; `None` when it has none
/// (or is disabled, or busy, or its retry is not yet due at `now_ms`). Events
/// its filter skips move its position; requeued dead letters gone from the log
/// go to `gone`.
pub(super) fn next_event(
    e: &mut Endpoint,
    store: &mut Store,
    fresh: &[Event],
    last: i64,
    gone: &mut Vec<(i64, i64)>,
    behind: &mut bool,
    now_ms: i64,
) -> Option<Event> {
    loop {
        match e.target()? {
            // A retry waits for its time without a read.
            Target::Dead(seq) if e.due_at(seq) > now_ms => return None,
            Target::Dead(seq) => match store.events_between(seq, seq, 1, false) {
                Ok(rows) if !rows.is_empty() => return Some(Event::from_row(&rows[0])),
                Ok(_) => {
                    log::warn!(
                        "webhook {}: dead letter {seq} is no longer in the event log; dropped",
                        e.id
                    );
                    e.drop_requeued(seq);
                    gone.push((e.id, seq));
                }
                Err(err) => {
                    log::warn!("webhook {}: cannot read the event log: {err}", e.id);
                    return None;
                }
            },
            Target::After(position) => {
                if position >= last {
                    return None;
                }
                if e.retrying() && e.state.next_attempt_at > now_ms {
                    return None;
                }
                return after(e, store, fresh, position + 1, last, behind);
            }
        }
    }
}

/// The first event from `from` to `last` that `e`'s filter lets through, read
/// in `READS`; the events passed over move its position.
fn after(
    e: &mut Endpoint,
    store: &mut Store,
    fresh: &[Event],
    mut from: i64,
    last: i64,
    behind: &mut bool,
) -> Option<Event> {
    for limit in READS {
        let read;
        let batch = match committed_tail(fresh, last, from, limit) {
            Some(batch) => batch,
            None => match store.events_between(from, last, limit, false) {
                Ok(rows) => {
                    read = rows.iter().map(Event::from_row).collect::<Vec<_>>();
                    &read[..]
                }
                Err(err) => {
                    log::warn!("webhook {}: cannot read the event log: {err}", e.id);
                    return None;
                }
            },
        };
        let first = batch.first().map_or(last + 1, |ev| ev.seq);
        if first > from {
            log::warn!(
                "webhook {}: events {from} to {} are no longer in the event log; skipped",
                e.id,
                first - 1
            );
        }
        if let Some(ev) = batch.iter().find(|ev| e.filter.matches(ev.kind)) {
            e.skip_to(ev.seq - 1);
            return Some(ev.clone());
        }
        let end = batch.last().map_or(last, |ev| ev.seq);
        e.skip_to(end);
        if end >= last {
            return None;
        }
        from = end + 1;
    }
    // More to look through: next tick, not now.
    *behind = true;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now_ms;
    use crate::config::Durability;
    use crate::metrics::Stats;
    use crate::store::{WebhookRow, WebhookState};

    /// A store holding events 1..=4: registered a, b, unregistered a, registered c.
    fn store_with_events(dir: &tempfile::TempDir) -> Store {
        let mut store = Store::open(&dir.path().join("n.db"), Durability::Normal, 0).expect("open");
        let (mut events, mut stats) = (Vec::new(), Stats::new(0, []));
        for name in ["a", "b"] {
            crate::registry::register(
                &mut store,
                &mut events,
                &mut stats,
                name,
                Default::default(),
            )
            .expect("register");
        }
        crate::registry::unregister(&mut store, &mut events, &mut stats, "a").expect("unregister");
        crate::registry::register(&mut store, &mut events, &mut stats, "c", Default::default())
            .expect("register");
        store.finish_tick().expect("commit");
        store
    }

    fn endpoint(events: &str, position: i64) -> Endpoint {
        Endpoint::from_row(WebhookRow {
            id: 1,
            url: "http://example.com/".into(),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            events: events.into(),
            created_at: 0,
            state: WebhookState {
                position,
                ..WebhookState::default()
            },
            dead_letters: 0,
            requeued: Vec::new(),
        })
        .expect("valid")
    }

    #[test]
    fn the_next_event_passes_over_what_the_filter_leaves_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = store_with_events(&dir);
        let (mut gone, mut behind) = (Vec::new(), false);
        let mut e = endpoint("user.unregistered", 0);
        let next = next_event(&mut e, &mut store, &[], 4, &mut gone, &mut behind, now_ms());
        assert_eq!(next.map(|ev| ev.seq), Some(3));
        assert_eq!(e.state.position, 2, "1 and 2 passed over");
        e.skip_to(3);
        assert_eq!(
            next_event(&mut e, &mut store, &[], 4, &mut gone, &mut behind, now_ms()),
            None
        );
        assert_eq!(e.state.position, 4, "4 passed over: nothing left");
        assert!(!behind);
        // Busy or disabled: nothing.
        let mut e = endpoint("*", 0);
        e.sent(1);
        assert_eq!(
            next_event(&mut e, &mut store, &[], 4, &mut gone, &mut behind, now_ms()),
            None
        );
    }

    #[test]
    fn a_filter_passes_over_a_bounded_stretch_a_tick() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(&dir.path().join("n.db"), Durability::Normal, 0).expect("open");
        let (mut events, mut stats) = (Vec::new(), Stats::new(0, []));
        for i in 0..300 {
            let name = format!("u{i}");
            crate::registry::register(
                &mut store,
                &mut events,
                &mut stats,
                &name,
                Default::default(),
            )
            .expect("register");
        }
        store.finish_tick().expect("commit");
        let (mut gone, mut behind) = (Vec::new(), false);
        let mut e = endpoint("user.unregistered", 0);
        let next = next_event(
            &mut e,
            &mut store,
            &[],
            300,
            &mut gone,
            &mut behind,
            now_ms(),
        );
        assert_eq!(next, None);
        let stretch: usize = READS.iter().sum();
        assert_eq!(e.state.position, stretch as i64);
        assert!(behind, "more to look through");
        behind = false;
        let next = next_event(
            &mut e,
            &mut store,
            &[],
            300,
            &mut gone,
            &mut behind,
            now_ms(),
        );
        assert_eq!((next, e.state.position, behind), (None, 300, false));
    }

    #[test]
    fn requeued_dead_letters_come_first_and_gone_ones_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = store_with_events(&dir);
        let (mut gone, mut behind) = (Vec::new(), false);
        let mut e = endpoint("*", 4);
        e.requeued = [2, 9].into();
        let next = next_event(&mut e, &mut store, &[], 4, &mut gone, &mut behind, now_ms());
        assert_eq!(next.map(|ev| ev.seq), Some(2));
        e.drop_requeued(2);
        // 9 is not in the log: dropped, and the endpoint is done.
        assert_eq!(
            next_event(&mut e, &mut store, &[], 4, &mut gone, &mut behind, now_ms()),
            None
        );
        assert_eq!(gone, [(1, 9)]);
        assert!(e.requeued.is_empty());
    }

    #[test]
    fn a_requeued_dead_letter_waits_for_its_retry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = store_with_events(&dir);
        let (mut gone, mut behind) = (Vec::new(), false);
        let mut e = endpoint("*", 4);
        e.requeued = [2].into();
        e.state.attempt_seq = 2;
        e.state.attempts = 1;
        e.state.next_attempt_at = i64::MAX;
        assert_eq!(
            next_event(&mut e, &mut store, &[], 4, &mut gone, &mut behind, now_ms()),
            None
        );
        e.state.next_attempt_at = 0;
        let next = next_event(&mut e, &mut store, &[], 4, &mut gone, &mut behind, now_ms());
        assert_eq!(next.map(|ev| ev.seq), Some(2));
    }
}
