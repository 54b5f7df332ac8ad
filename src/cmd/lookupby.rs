//! LOOKUPBY: read a user by the value of a unique field.
//!
//! # Format
//! `LOOKUPBY field value` → the user, as LOOKUP replies it, or nil when no user
//! holds `value`. `field` must be a unique field (`--unique-field`), else
//! `-ERR field 'x' is not a unique field (see --unique-field)`. Values compare as
//! exact bytes (no case folding). Served from memory, like LOOKUP.

use super::lookup::write_user;
use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "lookupby",
    arity: 3,
    flags: &["readonly", "fast"],
    summary: "Returns the user holding a value of a unique field, or nil.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let field = String::from_utf8_lossy(args.get(1).unwrap_or_default());
    let (store, out) = ctx.store_and_out();
    if !store.is_unique_field(&field) {
        let field: String = field.chars().take(128).collect();
        out.error(&format!(
            "ERR field '{field}' is not a unique field (see --unique-field)"
        ));
        return Outcome::Continue;
    }
    // A value that is not UTF-8 cannot have been stored.
    let Ok(value) = std::str::from_utf8(args.get(2).unwrap_or_default()) else {
        out.null();
        return Outcome::Continue;
    };
    match store.lookup_by(&field, value) {
        Ok(Some(user)) => write_user(out, &user),
        Ok(None) => out.null(),
        Err(e) => super::ctx::storage_error(out, &e),
    }
    Outcome::Continue
}
