//! XPENDING: what a consumer group was given and has not acknowledged.
//!
//! # Format
//! - `XPENDING events group` → `[count, lowest-id, highest-id, [[consumer, "n"], ...]]`
//!   (`[0, nil, nil, nil]` when nothing is pending)
//! - `XPENDING events group [IDLE ms] start end count [consumer]` →
//!   `[[id, consumer, idle-ms, deliveries], ...]`

use super::{Ctx, Outcome, Spec, group_stream, int_arg, name_arg, no_group, syntax_error};
use crate::events::stream::{range_end, range_start, write_id};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "xpending",
    arity: -3,
    flags: &["readonly"],
    summary: "Lists a consumer group's pending (unacknowledged) entries.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    if !group_stream(args.get(1).unwrap_or_default(), ctx) {
        return Outcome::Continue;
    }
    let Some(group) = name_arg(args.get(2).unwrap_or_default(), "group", ctx) else {
        return Outcome::Continue;
    };
    if args.len() == 3 {
        match ctx.store().group_pending_summary(group) {
            Ok(Some((n, lo, hi, per))) => {
                ctx.out.array(4);
                ctx.out.int(n);
                if n == 0 {
                    ctx.out.null();
                    ctx.out.null();
                    ctx.out.null_array();
                } else {
                    write_id(&mut ctx.out, lo.unwrap_or(0));
                    write_id(&mut ctx.out, hi.unwrap_or(0));
                    ctx.out.array(per.len());
                    for (consumer, count) in per {
                        ctx.out.array(2);
                        ctx.out.bulk(consumer.as_bytes());
                        ctx.out.bulk_int(count);
                    }
                }
            }
            Ok(None) => no_group(group, ctx, ""),
            Err(e) => ctx.storage_error(&e),
        }
        return Outcome::Continue;
    }
    let mut i = 3;
    let mut min_idle = 0;
    if args.get(3).is_some_and(|a| a.eq_ignore_ascii_case(b"idle")) {
        match args.get(4).and_then(int_arg) {
            Some(ms) => min_idle = ms,
            None => {
                super::not_an_integer(ctx);
                return Outcome::Continue;
            }
        }
        i = 5;
    }
    let left = args.len().saturating_sub(i);
    if left != 3 && left != 4 {
        syntax_error(ctx);
        return Outcome::Continue;
    }
    let lo = range_start(args.get(i).unwrap_or_default());
    let hi = range_end(args.get(i + 1).unwrap_or_default());
    let (lo, hi) = match (lo, hi) {
        (Ok(lo), Ok(hi)) => (lo, hi),
        (Err(e), _) | (_, Err(e)) => {
            ctx.out.error(e);
            return Outcome::Continue;
        }
    };
    let Some(count) = args.get(i + 2).and_then(int_arg) else {
        super::not_an_integer(ctx);
        return Outcome::Continue;
    };
    let consumer = match args.get(i + 3) {
        Some(c) => match name_arg(c, "consumer", ctx) {
            Some(c) => Some(c),
            None => return Outcome::Continue,
        },
        None => None,
    };
    let count = usize::try_from(count).unwrap_or(0);
    let now = crate::clock::now_ms();
    match ctx
        .store()
        .group_pending(group, lo, hi, count, consumer, min_idle, now)
    {
        Ok(Some(rows)) => {
            ctx.out.array(rows.len());
            for p in rows {
                ctx.out.array(4);
                write_id(&mut ctx.out, p.seq);
                ctx.out.bulk(p.consumer.as_bytes());
                ctx.out.int(p.idle_ms);
                ctx.out.int(p.deliveries);
            }
        }
        Ok(None) => no_group(group, ctx, ""),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}
