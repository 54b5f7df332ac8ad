//! ECHO: returns its argument.
//!
//! # Format
//! `ECHO message` → the message as a bulk string.

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "echo",
    arity: 2,
    flags: &["fast"],
    summary: "Returns the given string.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    ctx.out.bulk(args.get(1).unwrap_or_default());
    Outcome::Continue
}
