//! QUIT: close the connection after the reply.
//!
//! # Format
//! `QUIT` → `+OK`, then the server closes the connection.

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "quit",
    arity: -1,
    flags: &["fast", "no-auth"],
    summary: "Closes the connection.",
    run,
};

fn run(_args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    ctx.out.ok();
    Outcome::Close
}
