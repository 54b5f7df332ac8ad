//! XLEN: entries in a stream.
//!
//! # Format
//! `XLEN events` → `:n` (entries in the event log); `XLEN events.dead` → `:n`
//! (dead letters).

use super::{Ctx, Outcome, Spec};
use crate::events::stream::{Stream, stream};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "xlen",
    arity: 2,
    flags: &["readonly", "fast"],
    summary: "Returns the number of entries in the events stream.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    match stream(args.get(1).unwrap_or_default()) {
        Ok(Stream::Events) => {
            let n = ctx.store().counts().events;
            ctx.out.int(n);
        }
        Ok(Stream::Dead) => match ctx.store().dead_letter_count() {
            Ok(n) => ctx.out.int(n),
            Err(e) => ctx.storage_error(&e),
        },
        Err(e) => ctx.out.error(&e),
    }
    Outcome::Continue
}
