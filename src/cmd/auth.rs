//! AUTH: authenticate the connection.
//!
//! # Format
//! `AUTH password` or `AUTH username password` → `+OK`.
//!
//! Without a configured password the `default` user accepts any password, as in
//! Redis; the one-argument form then says that no password is configured.

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "auth",
    arity: -2,
    flags: &["fast", "no-auth"],
    summary: "Authenticates the connection.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    match args.len() {
        2 => ctx.out.error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        3 if args.get(1) == Some(b"default") => ctx.out.ok(),
        3 => ctx
            .out
            .error("WRONGPASS invalid username-password pair or user is disabled."),
        _ => ctx.out.error("ERR syntax error"),
    }
    Outcome::Continue
}
