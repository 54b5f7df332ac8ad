//! UNREGISTER: remove a user.
//!
//! # Format
//! `UNREGISTER name` → `:1` removed, `:0` unknown. The removal and its
//! `user.unregistered` event are written in the tick's transaction.

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;
use crate::registry::{self, check_name};

pub const SPEC: Spec = Spec {
    name: "unregister",
    arity: 2,
    flags: &["write"],
    summary: "Removes a user; returns 1 if it existed, else 0.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    // A name that breaks the naming rules cannot be registered, so it is unknown.
    let Ok(name) = check_name(args.get(1).unwrap_or_default()) else {
        ctx.out.int(0);
        return Outcome::Continue;
    };
    let (store, events, stats) = ctx.registry();
    match registry::unregister(store, events, stats, name) {
        Ok(removed) => ctx.out.int(i64::from(removed)),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}
