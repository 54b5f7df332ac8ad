//! AUTH: authenticate the connection.
//!
//! # Format
//! `AUTH password` or `AUTH username password` → `+OK`.
//!
//! With `--requirepass` (or `USERBUS_PASSWORD`, `--password-file`), the right
//! secret authenticates the connection and a wrong one gets `-WRONGPASS invalid
//! username-password pair or user is disabled.`; the comparison takes constant
//! time. Until then every command but AUTH, HELLO, QUIT and RESET (the commands
//! flagged `no-auth`, as in Redis; PING too is refused) gets
//! `-NOAUTH Authentication required.` Without a password, as in Redis, the
//! `default` user accepts any password and the one-argument form says that none is
//! configured.

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
    if ctx.config.requirepass.is_none() && args.len() == 2 {
        ctx.out.error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
        return Outcome::Continue;
    }
    let (user, pass) = match (args.get(1), args.get(2), args.len()) {
        (Some(pass), None, 2) => (&b"default"[..], pass),
        (Some(user), Some(pass), 3) => (user, pass),
        _ => {
            ctx.out.error("ERR syntax error");
            return Outcome::Continue;
        }
    };
    match check(ctx, user, pass) {
        Ok(()) => ctx.out.ok(),
        Err(e) => ctx.out.error(e),
    }
    Outcome::Continue
}

/// Checks credentials for `user` (only `default` exists) and marks the session
/// authenticated on success. Shared with `HELLO ... AUTH`.
pub fn check(ctx: &mut Ctx<'_>, user: &[u8], pass: &[u8]) -> Result<(), &'static str> {
    let Some(secret) = ctx.config.requirepass.as_deref() else {
        // No password: the default user accepts anything, as in Redis; the
        // one-argument form says so.
        return if user == b"default" {
            Ok(())
        } else {
            Err(crate::auth::WRONGPASS)
        };
    };
    if user == b"default" && crate::auth::password_matches(pass, secret) {
        ctx.session.authenticated = true;
        Ok(())
    } else {
        ctx.stats.auth_failures += 1;
        Err(crate::auth::WRONGPASS)
    }
}
