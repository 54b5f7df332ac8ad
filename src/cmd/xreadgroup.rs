//! XREADGROUP: read the `events` stream as a member of a consumer group.
//!
//! # Format
//! `XREADGROUP GROUP group consumer [COUNT n] [BLOCK ms] [NOACK] STREAMS events <>|id>`
//! → the XREAD reply shape. With `>`, entries never delivered to the group (all
//! of them without COUNT, as in Redis, encoded straight from the log), which
//! become pending for this consumer until XACK (not with NOACK); with nothing new
//! and BLOCK, the connection waits for a commit. With an id, this consumer's own
//! pending entries after it, each counted as delivered again (an entry trimmed from
//! the log comes back as `[id, nil]`); that form never blocks.
//!
//! With `--max-deliveries N`, a pending entry about to be delivered after N
//! deliveries is acknowledged and appended to `events.dead` instead.

use super::xread::{ReadRequest, read_request};
use super::{Ctx, Outcome, Spec, Wait, group_stream, name_arg, no_group, syntax_error};
use crate::events::stream::{
    exact_id, write_delivered, write_entries, write_entry, write_read_header,
};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "xreadgroup",
    arity: -7,
    flags: &["write", "blocking"],
    summary: "Reads events as a consumer of a group; delivered entries stay pending until XACK.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    if !args
        .get(1)
        .unwrap_or_default()
        .eq_ignore_ascii_case(b"group")
    {
        syntax_error(ctx);
        return Outcome::Continue;
    }
    let Some(group) = name_arg(args.get(2).unwrap_or_default(), "group", ctx) else {
        return Outcome::Continue;
    };
    let Some(consumer) = name_arg(args.get(3).unwrap_or_default(), "consumer", ctx) else {
        return Outcome::Continue;
    };
    let Some(ReadRequest {
        count,
        block,
        noack,
        key,
        id,
    }) = read_request(args, 4, "xreadgroup", true, ctx)
    else {
        return Outcome::Continue;
    };

    if !group_stream(key, ctx) {
        return Outcome::Continue;
    }
    let now = crate::clock::now_ms();
    if id == b">" {
        let (store, out) = ctx.store_and_out();
        let mut found = true;
        let res = write_entries(out, Some(key), |out| {
            let n = store
                .group_read_new(group, consumer, count, noack, now, |e| write_entry(out, e))?;
            found = n.is_some();
            Ok(n.unwrap_or(0))
        });
        match res {
            Ok(n) if n > 0 => {}
            Ok(_) if !found => no_group(group, ctx, " in XREADGROUP with GROUP option"),
            Ok(_) => match block {
                Some(timeout) => {
                    let after = ctx.store().counts().last_seq;
                    return Outcome::Block(Wait { after, timeout });
                }
                None => ctx.out.null_array(),
            },
            Err(e) => ctx.storage_error(&e),
        }
        return Outcome::Continue;
    }
    if id == b"$" {
        ctx.out.error(
            "ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the \
             history of this consumer by specifying a proper ID, or use the > ID to get new \
             messages. The $ ID would just return an empty result set.",
        );
        return Outcome::Continue;
    }
    let after = match exact_id(id) {
        Ok(a) => a,
        Err(e) => {
            ctx.out.error(e);
            return Outcome::Continue;
        }
    };
    let max = ctx.config.max_deliveries;
    match ctx
        .store()
        .group_read_pending(group, consumer, after, count, max, now)
    {
        Ok(Some(rows)) => {
            write_read_header(&mut ctx.out, key);
            write_delivered(&mut ctx.out, &rows);
        }
        Ok(None) => no_group(group, ctx, " in XREADGROUP with GROUP option"),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}
