//! SELECT: userbus has one database, 0.
//!
//! # Format
//! `SELECT 0` → `+OK`; any other index → `-ERR DB index is out of range`.

use super::{Ctx, Outcome, Spec, int_arg, not_an_integer};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "select",
    arity: 2,
    flags: &["fast"],
    summary: "Selects database 0, the only one.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    match int_arg(args.get(1).unwrap_or_default()) {
        Some(0) => ctx.out.ok(),
        Some(_) => ctx.out.error("ERR DB index is out of range"),
        None => not_an_integer(ctx),
    }
    Outcome::Continue
}
