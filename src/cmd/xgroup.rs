//! XGROUP: manage the consumer groups of the `events` stream.
//!
//! # Format
//! - `XGROUP CREATE events group <id|$> [MKSTREAM] [ENTRIESREAD n]` → `+OK`, or
//!   `-BUSYGROUP Consumer Group name already exists`
//! - `XGROUP DESTROY events group` → `:1` destroyed, `:0` no such group
//! - `XGROUP SETID events group <id|$> [ENTRIESREAD n]` → `+OK`
//! - `XGROUP CREATECONSUMER events group consumer` → `:1` created, `:0` existed
//! - `XGROUP DELCONSUMER events group consumer` → `:n` pending entries it had
//!
//! Groups, consumers and pending entries live in SQLite and change in the tick's
//! transaction, so they survive restarts exactly as acknowledged.

use super::{
    Ctx, Outcome, Spec, group_stream, name_arg, no_such_group, syntax_error, unknown_subcommand,
    wrong_arity,
};
use crate::events::stream::read_after;
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "xgroup",
    arity: -2,
    flags: &["write"],
    summary: "Creates, destroys and configures consumer groups of the events stream.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let sub = args.get(1).unwrap_or_default().to_ascii_lowercase();
    let (min, max) = match sub.as_slice() {
        b"create" => (5, 8),
        b"setid" => (5, 7),
        b"destroy" => (4, 4),
        b"createconsumer" | b"delconsumer" => (5, 5),
        b"help" => {
            ctx.out.array(1);
            ctx.out.simple(
                "XGROUP CREATE|DESTROY|SETID|CREATECONSUMER|DELCONSUMER events <group> ...",
            );
            return Outcome::Continue;
        }
        _ => {
            unknown_subcommand("xgroup", args.get(1).unwrap_or_default(), ctx);
            return Outcome::Continue;
        }
    };
    if args.len() < min || args.len() > max {
        wrong_arity(&format!("xgroup|{}", String::from_utf8_lossy(&sub)), ctx);
        return Outcome::Continue;
    }
    if !group_stream(args.get(2).unwrap_or_default(), ctx) {
        return Outcome::Continue;
    }
    let Some(group) = name_arg(args.get(3).unwrap_or_default(), "group", ctx) else {
        return Outcome::Continue;
    };
    let now = crate::clock::now_ms();
    match sub.as_slice() {
        b"create" | b"setid" => {
            // MKSTREAM is accepted and means nothing: the events stream always exists.
            let mut i = 5;
            while let Some(opt) = args.get(i) {
                if sub == b"create" && opt.eq_ignore_ascii_case(b"mkstream") {
                    i += 1;
                } else if opt.eq_ignore_ascii_case(b"entriesread") && args.get(i + 1).is_some() {
                    i += 2;
                } else {
                    syntax_error(ctx);
                    return Outcome::Continue;
                }
            }
            let last_seq = ctx.store().counts().last_seq;
            let last = match read_after(args.get(4).unwrap_or_default(), last_seq) {
                Ok(s) => s,
                Err(e) => {
                    ctx.out.error(e);
                    return Outcome::Continue;
                }
            };
            let res = if sub == b"create" {
                ctx.store().group_create(group, last, now).map(|created| {
                    if created {
                        Ok(())
                    } else {
                        Err("BUSYGROUP Consumer Group name already exists")
                    }
                })
            } else {
                ctx.store()
                    .group_set_id(group, last)
                    .map(|found| if found { Ok(()) } else { Err("") })
            };
            match res {
                Ok(Ok(())) => ctx.out.ok(),
                Ok(Err("")) => no_such_group(group, ctx),
                Ok(Err(e)) => ctx.out.error(e),
                Err(e) => ctx.storage_error(&e),
            }
        }
        b"destroy" => match ctx.store().group_destroy(group) {
            Ok(found) => ctx.out.int(i64::from(found)),
            Err(e) => ctx.storage_error(&e),
        },
        _ => {
            let Some(consumer) = name_arg(args.get(4).unwrap_or_default(), "consumer", ctx) else {
                return Outcome::Continue;
            };
            let res = if sub == b"createconsumer" {
                ctx.store()
                    .consumer_create(group, consumer, now)
                    .map(|r| r.map(i64::from))
            } else {
                ctx.store().consumer_delete(group, consumer)
            };
            match res {
                Ok(Some(n)) => ctx.out.int(n),
                Ok(None) => no_such_group(group, ctx),
                Err(e) => ctx.storage_error(&e),
            }
        }
    }
    Outcome::Continue
}
