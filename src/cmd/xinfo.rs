//! XINFO: the `events` stream, its groups and their consumers.
//!
//! # Format
//! - `XINFO STREAM events` → map: `length`, `last-generated-id`, `entries-added`,
//!   `groups`, `first-entry`, `last-entry`
//! - `XINFO STREAM events FULL [COUNT n]` → Redis 7's full form, a map: `length`,
//!   `last-generated-id`, `max-deleted-entry-id`, `entries-added`,
//!   `recorded-first-entry-id`, `entries` (the first n), `groups`: per group a map
//!   `name`, `last-delivered-id`, `entries-read`, `lag`, `pel-count`, `pending`
//!   (its first n `[id, consumer, delivery-ms, deliveries]`), `consumers`: per
//!   consumer a map `name`, `seen-time`, `active-time` (-1: never), `pel-count`,
//!   `pending` (its first n `[id, delivery-ms, deliveries]`). n is 10 without
//!   COUNT (or below 0), and 0 means all. Redis's `radix-tree-*` counts describe
//!   its memory layout and have no counterpart here.
//! - `XINFO GROUPS events` → per group a map: `name`, `consumers`, `pending`,
//!   `last-delivered-id`, `entries-read`, `lag`
//! - `XINFO CONSUMERS events group` → per consumer a map: `name`, `pending`,
//!   `idle`, `inactive`

use super::{
    Ctx, Outcome, Spec, group_stream, int_arg, name_arg, no_such_group, not_an_integer,
    unknown_subcommand, wrong_arity,
};
use crate::events::stream::{write_entries, write_entry, write_id};
use crate::protocol::Args;
use crate::store::Delivery;

pub const SPEC: Spec = Spec {
    name: "xinfo",
    arity: -2,
    flags: &["readonly"],
    summary: "Describes the events stream, its consumer groups and their consumers.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let sub = args.get(1).unwrap_or_default().to_ascii_lowercase();
    let arity_ok = match sub.as_slice() {
        b"stream" => args.len() >= 3,
        b"groups" => args.len() == 3,
        b"consumers" => args.len() == 4,
        b"help" => {
            ctx.out.array(1);
            ctx.out
                .simple("XINFO STREAM events [FULL [COUNT n]], XINFO GROUPS events, XINFO CONSUMERS events <group>");
            return Outcome::Continue;
        }
        _ => {
            unknown_subcommand("xinfo", args.get(1).unwrap_or_default(), ctx);
            return Outcome::Continue;
        }
    };
    if !arity_ok {
        wrong_arity(&format!("xinfo|{}", String::from_utf8_lossy(&sub)), ctx);
        return Outcome::Continue;
    }
    let key = args.get(2).unwrap_or_default();
    if key == crate::events::stream::DEAD_KEY {
        ctx.out.error(
            "ERR XINFO describes the 'events' stream; read 'events.dead' with XLEN and XRANGE",
        );
        return Outcome::Continue;
    }
    if !group_stream(key, ctx) {
        return Outcome::Continue;
    }
    match sub.as_slice() {
        b"stream" if args.len() == 3 => stream(ctx),
        b"stream" => {
            if let Some(count) = full_count(args, ctx) {
                stream_full(count, ctx);
            }
        }
        b"groups" => groups(ctx),
        _ => {
            if let Some(group) = name_arg(args.get(3).unwrap_or_default(), "group", ctx) {
                consumers(group, ctx);
            }
        }
    }
    Outcome::Continue
}

fn stream(ctx: &mut Ctx<'_>) {
    let counts = ctx.store().counts();
    let store = ctx.store();
    let first = store.events_between(0, i64::MAX, 1, false);
    let last = store.events_between(0, i64::MAX, 1, true);
    let groups = store.groups().map(|g| g.len());
    let (first, last, groups) = match (first, last, groups) {
        (Ok(f), Ok(l), Ok(g)) => (f, l, g),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            ctx.storage_error(&e);
            return;
        }
    };
    let out = &mut ctx.out;
    out.map(6);
    out.bulk(b"length");
    out.int(counts.events);
    out.bulk(b"last-generated-id");
    write_id(out, counts.last_seq);
    out.bulk(b"entries-added");
    out.int(counts.last_seq);
    out.bulk(b"groups");
    out.int(groups as i64);
    for (name, row) in [
        (&b"first-entry"[..], first.first()),
        (b"last-entry", last.first()),
    ] {
        out.bulk(name);
        match row {
            Some(row) => write_entry(out, row.view()),
            None => out.null_array(),
        }
    }
}

/// Entries, and pending entries per group and per consumer, that XINFO STREAM
/// FULL lists without COUNT (Redis's default, which keeps the reply small).
const FULL_DEFAULT_COUNT: usize = 10;

/// Parses `FULL [COUNT n]` after `XINFO STREAM key`: how many of each list to show
/// (`usize::MAX` for COUNT 0). Replies the error and returns `None` on bad input.
fn full_count(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Option<usize> {
    let full = args.get(3).is_some_and(|a| a.eq_ignore_ascii_case(b"full"));
    let count = match (args.len(), args.get(4)) {
        (4, _) if full => return Some(FULL_DEFAULT_COUNT),
        (6, Some(word)) if full && word.eq_ignore_ascii_case(b"count") => args.get(5),
        _ => {
            ctx.out.error(&format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try XINFO HELP.",
                String::from_utf8_lossy(args.get(1).unwrap_or_default())
            ));
            return None;
        }
    };
    match count.and_then(int_arg) {
        Some(0) => Some(usize::MAX),
        Some(n) if n < 0 => Some(FULL_DEFAULT_COUNT),
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => {
            not_an_integer(ctx);
            None
        }
    }
}

fn stream_full(count: usize, ctx: &mut Ctx<'_>) {
    let counts = ctx.store().counts();
    let store = ctx.store();
    let first = store.events_between(0, i64::MAX, 1, false);
    let groups = store.groups_full(count);
    let (first, groups) = match (first, groups) {
        (Ok(f), Ok(g)) => (f, g),
        (Err(e), _) | (_, Err(e)) => {
            ctx.storage_error(&e);
            return;
        }
    };
    let mark = ctx.out.mark();
    let (store, out) = ctx.store_and_out();
    out.map(7);
    out.bulk(b"length");
    out.int(counts.events);
    out.bulk(b"last-generated-id");
    write_id(out, counts.last_seq);
    // Entries leave the log only by trimming, which Redis does not count as
    // deleting them.
    out.bulk(b"max-deleted-entry-id");
    write_id(out, 0);
    out.bulk(b"entries-added");
    out.int(counts.last_seq);
    out.bulk(b"recorded-first-entry-id");
    write_id(out, first.first().map_or(0, |e| e.seq));
    out.bulk(b"entries");
    let entries = write_entries(out, None, |out| {
        store.each_event_between(0, i64::MAX, count, false, |e| write_entry(out, e))
    });
    if let Err(e) = entries {
        ctx.out.truncate(mark);
        ctx.storage_error(&e);
        return;
    }
    out.bulk(b"groups");
    out.array(groups.len());
    for g in &groups {
        out.map(7);
        out.bulk(b"name");
        out.bulk(g.info.name.as_bytes());
        out.bulk(b"last-delivered-id");
        write_id(out, g.info.last_delivered);
        out.bulk(b"entries-read");
        out.int(g.info.entries_read);
        out.bulk(b"lag");
        out.int(g.info.lag(counts.last_seq));
        out.bulk(b"pel-count");
        out.int(g.info.pending);
        out.bulk(b"pending");
        out.array(g.pending.len());
        for p in &g.pending {
            write_delivery(out, p, true);
        }
        out.bulk(b"consumers");
        out.array(g.consumers.len());
        for c in &g.consumers {
            out.map(5);
            out.bulk(b"name");
            out.bulk(c.name.as_bytes());
            out.bulk(b"seen-time");
            out.int(c.seen_at);
            out.bulk(b"active-time");
            out.int(c.active_at.unwrap_or(-1));
            out.bulk(b"pel-count");
            out.int(c.pending_count);
            out.bulk(b"pending");
            out.array(c.pending.len());
            for p in &c.pending {
                write_delivery(out, p, false);
            }
        }
    }
}

/// `[id, consumer, delivery-ms, deliveries]` (a group's list), or without the
/// consumer (a consumer's own list).
fn write_delivery(out: &mut crate::protocol::Reply<'_>, p: &Delivery, with_consumer: bool) {
    out.array(if with_consumer { 4 } else { 3 });
    write_id(out, p.seq);
    if with_consumer {
        out.bulk(p.consumer.as_bytes());
    }
    out.int(p.delivered_at);
    out.int(p.deliveries);
}

fn groups(ctx: &mut Ctx<'_>) {
    let last_seq = ctx.store().counts().last_seq;
    let groups = match ctx.store().groups() {
        Ok(g) => g,
        Err(e) => {
            ctx.storage_error(&e);
            return;
        }
    };
    let out = &mut ctx.out;
    out.array(groups.len());
    for g in groups {
        out.map(6);
        out.bulk(b"name");
        out.bulk(g.name.as_bytes());
        out.bulk(b"consumers");
        out.int(g.consumers);
        out.bulk(b"pending");
        out.int(g.pending);
        out.bulk(b"last-delivered-id");
        write_id(out, g.last_delivered);
        out.bulk(b"entries-read");
        out.int(g.entries_read);
        out.bulk(b"lag");
        out.int(g.lag(last_seq));
    }
}

fn consumers(group: &str, ctx: &mut Ctx<'_>) {
    let now = crate::clock::now_ms();
    match ctx.store().consumers(group, now) {
        Ok(Some(list)) => {
            let out = &mut ctx.out;
            out.array(list.len());
            for c in list {
                out.map(4);
                out.bulk(b"name");
                out.bulk(c.name.as_bytes());
                out.bulk(b"pending");
                out.int(c.pending);
                out.bulk(b"idle");
                out.int(c.idle_ms);
                out.bulk(b"inactive");
                out.int(c.inactive_ms);
            }
        }
        Ok(None) => no_such_group(group, ctx),
        Err(e) => ctx.storage_error(&e),
    }
}
