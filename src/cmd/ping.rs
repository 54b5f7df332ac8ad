//! PING: liveness.
//!
//! # Format
//! `PING [message]` → `+PONG`, or the message as a bulk string.

use super::{Ctx, Outcome, Spec, wrong_arity};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "ping",
    arity: -1,
    flags: &["fast", "stale"],
    summary: "Returns PONG, or the message given.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1).unwrap_or_default()),
        _ => wrong_arity(SPEC.name, ctx),
    }
    Outcome::Continue
}
