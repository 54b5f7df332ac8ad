//! UNREGISTER: remove a user.
//!
//! # Format
//! `UNREGISTER name` → `:1` removed, `:0` unknown. The removal and its
//! `user.unregistered` event are written in the tick's transaction.

use super::{Ctx, Outcome, Spec};
use crate::events::{Event, EventKind};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "unregister",
    arity: 2,
    flags: &["write"],
    summary: "Removes a user; returns 1 if it existed, else 0.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    // A name that breaks the naming rules cannot be registered, so it is unknown.
    let Ok(name) = super::check_name(args.get(1).unwrap_or_default()) else {
        ctx.out.int(0);
        return Outcome::Continue;
    };
    let now = crate::clock::now_ms();
    match ctx.store().unregister(name, now) {
        Ok(Some((change, fields))) => {
            ctx.out.int(1);
            ctx.stats.tick_unregistrations += 1;
            ctx.events.push(Event {
                seq: change.seq,
                kind: EventKind::Unregistered,
                user_id: change.user_id,
                name: name.to_string(),
                fields: serde_json::from_str(&fields).unwrap_or_default(),
                at_ms: now,
            });
        }
        Ok(None) => ctx.out.int(0),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}
