//! XRANGE and XREVRANGE: read a span of the event log.
//!
//! # Format
//! - `XRANGE events start end [COUNT n]` → `[[id, [field, value, ...]], ...]`
//! - `XREVRANGE events end start [COUNT n]` → the same, newest first
//!
//! Ids are `<seq>-0`; `-` and `+` are the ends, `(id` excludes `id`. Without
//! COUNT every entry in the range is returned, as in Redis; entries are encoded
//! straight from the log into the output, whose limit then holds back the
//! connection's later requests until the client has read them. Entry fields:
//! `kind`, `id`, `name`, `fields` (JSON), `at` (RFC 3339). `events.dead` entries
//! carry `event` (the entry's id in `events`), `group`, `consumer`, `deliveries`,
//! `at` (when it was given up) and, while the event is in the log, its fields.

use super::{Ctx, Outcome, Spec, int_arg, not_an_integer, syntax_error};
use crate::events::stream::{
    Stream, range_end, range_start, stream, write_dead_entry, write_entries, write_entry,
};
use crate::protocol::Args;

pub const XRANGE: Spec = Spec {
    name: "xrange",
    arity: -4,
    flags: &["readonly"],
    summary: "Returns the events between two ids, oldest first.",
    run: xrange,
};

pub const XREVRANGE: Spec = Spec {
    name: "xrevrange",
    arity: -4,
    flags: &["readonly"],
    summary: "Returns the events between two ids, newest first.",
    run: xrevrange,
};

fn xrange(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    range(args, ctx, false)
}

fn xrevrange(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    range(args, ctx, true)
}

fn range(args: &Args<'_>, ctx: &mut Ctx<'_>, rev: bool) -> Outcome {
    let which = match stream(args.get(1).unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => {
            ctx.out.error(&e);
            return Outcome::Continue;
        }
    };
    let (a, b) = (
        args.get(2).unwrap_or_default(),
        args.get(3).unwrap_or_default(),
    );
    let (start, end) = if rev { (b, a) } else { (a, b) };
    let bounds = range_start(start).and_then(|lo| Ok((lo, range_end(end)?)));
    let (lo, hi) = match bounds {
        Ok(b) => b,
        Err(e) => {
            ctx.out.error(e);
            return Outcome::Continue;
        }
    };
    let mut count = usize::MAX;
    match (args.get(4), args.get(5), args.len()) {
        (None, _, _) => {}
        (Some(opt), Some(n), 6) if opt.eq_ignore_ascii_case(b"count") => match int_arg(n) {
            // Redis answers nil for a zero or negative COUNT.
            Some(n) if n <= 0 => {
                ctx.out.null_array();
                return Outcome::Continue;
            }
            Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
            None => {
                not_an_integer(ctx);
                return Outcome::Continue;
            }
        },
        _ => {
            syntax_error(ctx);
            return Outcome::Continue;
        }
    }
    if lo > hi {
        ctx.out.array(0);
        return Outcome::Continue;
    }
    if which == Stream::Dead {
        match ctx.store().dead_letters(lo, hi, count, rev) {
            Ok(rows) => {
                ctx.out.array(rows.len());
                for (dead, ev) in &rows {
                    write_dead_entry(&mut ctx.out, dead, ev.as_ref());
                }
            }
            Err(e) => ctx.storage_error(&e),
        }
        return Outcome::Continue;
    }
    let (store, out) = ctx.store_and_out();
    let res = write_entries(out, None, |out| {
        store.each_event_between(lo, hi, count, rev, |e| write_entry(out, e))
    });
    if let Err(e) = res {
        ctx.storage_error(&e);
    }
    Outcome::Continue
}
