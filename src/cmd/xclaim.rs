//! XCLAIM and XAUTOCLAIM: take over pending entries another consumer sat on.
//!
//! # Format
//! - `XCLAIM events group consumer min-idle-ms id [id ...] [IDLE ms] [TIME unix-ms]
//!   [RETRYCOUNT n] [FORCE] [JUSTID] [LASTID id]` → the claimed entries (ids only
//!   with JUSTID, which also does not count a delivery)
//! - `XAUTOCLAIM events group consumer min-idle-ms start [COUNT n] [JUSTID]` →
//!   `[next-start-id, [entries], [deleted ids]]`; `0-0` as next start means the
//!   scan is complete
//!
//! With `--max-deliveries N`, an entry about to be delivered after N deliveries is
//! acknowledged and appended to `events.dead` instead of being claimed. XAUTOCLAIM
//! lists such an entry with the deleted ids, as Redis lists an entry deleted from
//! the stream (and as XREADGROUP history shows it: `[id, nil]`); XCLAIM leaves it
//! out, as Redis leaves out a deleted one.

use super::{Ctx, Outcome, Spec, group_stream, int_arg, name_arg, no_group, syntax_error};
use crate::events::stream::{exact_id, range_start, write_delivered, write_id};
use crate::protocol::Args;
use crate::store::{ClaimOptions, Delivered};

pub const XCLAIM: Spec = Spec {
    name: "xclaim",
    arity: -6,
    flags: &["write", "fast"],
    summary: "Takes over idle pending entries of a consumer group.",
    run: xclaim,
};

pub const XAUTOCLAIM: Spec = Spec {
    name: "xautoclaim",
    arity: -6,
    flags: &["write", "fast"],
    summary: "Scans a group's pending entries and takes over the idle ones.",
    run: xautoclaim,
};

/// The arguments both commands start with: (group, consumer, min-idle).
fn head<'b>(args: &Args<'b>, ctx: &mut Ctx<'_>) -> Option<(&'b str, &'b str, i64)> {
    if !group_stream(args.get(1).unwrap_or_default(), ctx) {
        return None;
    }
    let group = name_arg(args.get(2).unwrap_or_default(), "group", ctx)?;
    let consumer = name_arg(args.get(3).unwrap_or_default(), "consumer", ctx)?;
    match args.get(4).and_then(int_arg) {
        Some(ms) => Some((group, consumer, ms.max(0))),
        None => {
            ctx.out
                .error("ERR Invalid min-idle-time argument for XCLAIM");
            None
        }
    }
}

fn xclaim(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Some((group, consumer, min_idle)) = head(args, ctx) else {
        return Outcome::Continue;
    };
    let mut seqs = Vec::new();
    let mut i = 5;
    while let Some(a) = args.get(i) {
        match exact_id(a) {
            Ok(seq) => seqs.push(seq),
            Err(_) => break,
        }
        i += 1;
    }
    let mut opts = ClaimOptions::default();
    while let Some(opt) = args.get(i) {
        let value = args.get(i + 1).and_then(int_arg);
        let lower = opt.to_ascii_lowercase();
        match (lower.as_slice(), value) {
            (b"force", _) => opts.force = true,
            (b"justid", _) => opts.just_id = true,
            (b"idle", Some(ms)) => {
                opts.idle_ms = Some(ms.max(0));
                i += 1;
            }
            (b"time", Some(t)) => {
                opts.time_ms = Some(t);
                i += 1;
            }
            (b"retrycount", Some(n)) => {
                opts.retry_count = Some(n.max(0));
                i += 1;
            }
            // LASTID moves the group's last-delivered id in Redis; the log is
            // append-only here and the group's position is its own, so it is
            // accepted and ignored.
            (b"lastid", _) if args.get(i + 1).is_some() => i += 1,
            (b"idle" | b"time" | b"retrycount", None) => {
                ctx.out.error(&format!(
                    "ERR Invalid {} option argument for XCLAIM",
                    String::from_utf8_lossy(&lower).to_uppercase()
                ));
                return Outcome::Continue;
            }
            _ => {
                ctx.out.error(&format!(
                    "ERR Unrecognized XCLAIM option '{}'",
                    String::from_utf8_lossy(opt)
                ));
                return Outcome::Continue;
            }
        }
        i += 1;
    }
    let now = crate::clock::now_ms();
    let max = ctx.config.max_deliveries;
    match ctx
        .store()
        .group_claim(group, consumer, min_idle, &seqs, &opts, max, now)
    {
        Ok(Some(rows)) => write_claimed(ctx, &rows, opts.just_id),
        Ok(None) => no_group(group, ctx, ""),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}

fn xautoclaim(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Some((group, consumer, min_idle)) = head(args, ctx) else {
        return Outcome::Continue;
    };
    let start = match range_start(args.get(5).unwrap_or_default()) {
        Ok(s) => s,
        Err(e) => {
            ctx.out.error(e);
            return Outcome::Continue;
        }
    };
    let mut count = 100usize;
    let mut opts = ClaimOptions::default();
    let mut i = 6;
    while let Some(opt) = args.get(i) {
        if opt.eq_ignore_ascii_case(b"justid") {
            opts.just_id = true;
            i += 1;
        } else if opt.eq_ignore_ascii_case(b"count") {
            match args.get(i + 1).and_then(int_arg) {
                Some(n) if (1..=1024 * 1024).contains(&n) => count = n as usize,
                _ => {
                    ctx.out.error("ERR COUNT must be > 0");
                    return Outcome::Continue;
                }
            }
            i += 2;
        } else {
            syntax_error(ctx);
            return Outcome::Continue;
        }
    }
    let now = crate::clock::now_ms();
    let max = ctx.config.max_deliveries;
    match ctx
        .store()
        .group_autoclaim(group, consumer, min_idle, start, count, &opts, max, now)
    {
        Ok(Some((next, rows, deleted))) => {
            ctx.out.array(3);
            if next == 0 {
                ctx.out.bulk(b"0-0");
            } else {
                write_id(&mut ctx.out, next);
            }
            write_claimed(ctx, &rows, opts.just_id);
            ctx.out.array(deleted.len());
            for seq in deleted {
                write_id(&mut ctx.out, seq);
            }
        }
        Ok(None) => no_group(group, ctx, ""),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}

fn write_claimed(ctx: &mut Ctx<'_>, rows: &Delivered, just_id: bool) {
    if just_id {
        ctx.out.array(rows.len());
        for (seq, _) in rows {
            write_id(&mut ctx.out, *seq);
        }
    } else {
        write_delivered(&mut ctx.out, rows);
    }
}
