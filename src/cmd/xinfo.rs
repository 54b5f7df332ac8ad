//! XINFO: the `events` stream, its groups and their consumers.
//!
//! # Format
//! - `XINFO STREAM events` → map: `length`, `last-generated-id`, `entries-added`,
//!   `groups`, `first-entry`, `last-entry`
//! - `XINFO GROUPS events` → per group a map: `name`, `consumers`, `pending`,
//!   `last-delivered-id`, `entries-read`, `lag`
//! - `XINFO CONSUMERS events group` → per consumer a map: `name`, `pending`,
//!   `idle`, `inactive`

use super::{
    Ctx, Outcome, Spec, group_stream, name_arg, no_such_group, unknown_subcommand, wrong_arity,
};
use crate::events::stream::{write_entry, write_id};
use crate::protocol::Args;

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
                .simple("XINFO STREAM|GROUPS events, XINFO CONSUMERS events <group>");
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
        b"stream" => stream(ctx),
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
