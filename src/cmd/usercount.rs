//! USERCOUNT: how many users are registered.
//!
//! # Format
//! `USERCOUNT` → `:n`

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "usercount",
    arity: 1,
    flags: &["readonly", "fast"],
    summary: "Returns the number of registered users.",
    run,
};

fn run(_args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    // The count includes this tick's uncommitted changes, so the reply depends on
    // the commit like any other storage read.
    let n = ctx.store().user_count();
    ctx.out.int(n);
    Outcome::Continue
}
