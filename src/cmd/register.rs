//! REGISTER: add a user.
//!
//! # Format
//! `REGISTER name [field value ...]` → `:id` of the new user (ids start at 1), or
//! `:0` when the name is taken (a normal outcome, like SETNX, not an error).
//!
//! Names are 1–64 bytes of UTF-8 without whitespace or control characters; at most
//! 32 fields, names by the same rules, values valid UTF-8 of at most 4096 bytes. A
//! field given twice keeps its last value. The user row and its `user.registered`
//! event row are written in the tick's transaction. A free name whose fields hold
//! a unique field's value (`--unique-field`) that another user holds is refused:
//! `-ERR field 'email' value already taken by user 'bob'`.

use std::collections::BTreeMap;

use super::{Ctx, Outcome, Spec, wrong_arity};
use crate::protocol::Args;
use crate::registry::{self, WriteError, check_fields, check_name};

pub const SPEC: Spec = Spec {
    name: "register",
    arity: -2,
    flags: &["write"],
    summary: "Registers a user with optional fields; returns its id, or 0 if the name is taken.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    if !args.len().is_multiple_of(2) {
        wrong_arity(SPEC.name, ctx);
        return Outcome::Continue;
    }
    let name = match check_name(args.get(1).unwrap_or_default()) {
        Ok(n) => n,
        Err(e) => {
            ctx.out.error(&format!("ERR {e}"));
            return Outcome::Continue;
        }
    };
    let Some(fields) = field_args(args, ctx) else {
        return Outcome::Continue;
    };
    let (store, events, stats) = ctx.registry();
    match registry::register(store, events, stats, name, fields) {
        Ok(Some(id)) => ctx.out.int(id),
        Ok(None) => ctx.out.int(0),
        Err(e) => write_error(&e, ctx),
    }
    Outcome::Continue
}

/// The `field value` pairs after the name (REGISTER, UPDATE), checked by the
/// registry's rules; `None` once the broken rule is replied.
pub(super) fn field_args(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Option<BTreeMap<String, String>> {
    let mut rest = args.iter_from(2);
    let pairs = std::iter::from_fn(|| Some((rest.next()?, rest.next()?)));
    match check_fields(args.len().saturating_sub(2) / 2, pairs) {
        Ok(fields) => Some(fields),
        Err(e) => {
            ctx.out.error(&format!("ERR {e}"));
            None
        }
    }
}

/// Replies a refused write: a storage failure as every command replies it, a
/// broken rule as `-ERR <why>`.
pub(super) fn write_error(e: &WriteError, ctx: &mut Ctx<'_>) {
    match e {
        WriteError::Storage(e) => ctx.storage_error(e),
        e => ctx.out.error(&format!("ERR {e}")),
    }
}
