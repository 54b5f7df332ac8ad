//! PING: liveness.
//!
//! # Format
//! `PING [message]` → `+PONG`, or the message as a bulk string; a subscribed RESP2
//! client gets `[pong, message-or-empty]`.

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
    if args.len() <= 2 && !ctx.session.resp3 && ctx.session.subscriptions() > 0 {
        // A subscribed RESP2 client gets PING's reply in the shape of a push.
        ctx.out.array(2);
        ctx.out.bulk(b"pong");
        ctx.out.bulk(args.get(1).unwrap_or_default());
        return Outcome::Continue;
    }
    match args.len() {
        1 => ctx.out.simple("PONG"),
        2 => ctx.out.bulk(args.get(1).unwrap_or_default()),
        _ => wrong_arity(SPEC.name, ctx),
    }
    Outcome::Continue
}
