//! RESET: return the connection to the state it had when it was accepted.
//!
//! # Format
//! `RESET` → `+RESET`.
//!
//! As Redis's RESET does, as far as userbus has the state: leaves subscribed mode
//! (every channel and pattern is dropped, with no unsubscribe replies), goes back
//! to RESP2, clears the client name (the library name and version set with CLIENT
//! SETINFO stay, as in Redis 7.2), and with a password configured makes the
//! connection unauthenticated again. It works in subscribed mode and before AUTH.
//! userbus has no transactions, WATCH, MONITOR, client tracking or other
//! databases, so there is nothing more to undo.

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "reset",
    arity: 1,
    flags: &[
        "noscript",
        "loading",
        "stale",
        "fast",
        "no-auth",
        "allow-busy",
    ],
    summary: "Resets the connection: subscriptions, protocol, name, authentication.",
    run,
};

fn run(_args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    for channel in std::mem::take(&mut ctx.session.channels) {
        ctx.pubsub.unsubscribe(ctx.key, &channel);
    }
    for pattern in std::mem::take(&mut ctx.session.patterns) {
        ctx.pubsub.punsubscribe(ctx.key, &pattern);
    }
    ctx.session.resp3 = false;
    ctx.out.set_resp3(false);
    ctx.session.name = None;
    ctx.session.authenticated = ctx.config.requirepass.is_none();
    ctx.out.simple("RESET");
    Outcome::Continue
}
