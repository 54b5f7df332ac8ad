//! XACK: acknowledge entries a group's consumers processed.
//!
//! # Format
//! `XACK events group id [id ...]` → `:n` entries that were pending and no
//! longer are (`:0` for an unknown group, as in Redis).

use super::{Ctx, Outcome, Spec, group_stream, name_arg};
use crate::events::stream::exact_id;
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "xack",
    arity: -4,
    flags: &["write", "fast"],
    summary: "Acknowledges pending entries of a consumer group.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    if !group_stream(args.get(1).unwrap_or_default(), ctx) {
        return Outcome::Continue;
    }
    let Some(group) = name_arg(args.get(2).unwrap_or_default(), "group", ctx) else {
        return Outcome::Continue;
    };
    let seqs: Result<Vec<i64>, _> = args.iter_from(3).map(exact_id).collect();
    match seqs {
        Ok(seqs) => match ctx.store().group_ack(group, &seqs) {
            Ok(n) => ctx.out.int(n),
            Err(e) => ctx.storage_error(&e),
        },
        Err(e) => ctx.out.error(e),
    }
    Outcome::Continue
}
