//! UPDATE and DELFIELDS: set or remove a user's fields, keeping its id.
//!
//! # Format
//! `UPDATE name field value [field value ...]` → `:1`, or `:0` when the user is
//! unknown. Fields are added or given the new value; the others stay. `:1` also
//! when every value was already the user's (nothing is written, no event).
//!
//! `DELFIELDS name field [field ...]` → `:n`, the number of fields removed
//! (absent fields are not counted; `:0` for an unknown user).
//!
//! Fields follow REGISTER's rules (names 1–64 bytes without whitespace or control
//! characters, values UTF-8 of at most 4096 bytes), and the user may have at most
//! 32 fields after the change (`-ERR too many fields: at most 32`). A value of a
//! unique field (`--unique-field`) that another user holds is refused:
//! `-ERR field 'email' value already taken by user 'bob'`. A change writes the
//! user row and its `user.updated` event in the tick's transaction.

use super::register::{field_args, write_error};
use super::{Ctx, Outcome, Spec, wrong_arity};
use crate::protocol::Args;
use crate::registry::{self, FieldChanges, Updated, check_name};

pub const UPDATE: Spec = Spec {
    name: "update",
    arity: -4,
    flags: &["write"],
    summary: "Sets or replaces fields of a user; returns 1, or 0 if the user is unknown.",
    run: run_update,
};

pub const DELFIELDS: Spec = Spec {
    name: "delfields",
    arity: -3,
    flags: &["write"],
    summary: "Removes fields of a user; returns how many were removed.",
    run: run_delfields,
};

fn run_update(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    if !args.len().is_multiple_of(2) {
        wrong_arity(UPDATE.name, ctx);
        return Outcome::Continue;
    }
    let Some(set) = field_args(args, ctx) else {
        return Outcome::Continue;
    };
    let changes = FieldChanges {
        set,
        remove: Vec::new(),
    };
    run(args, &changes, ctx, |_| 1);
    Outcome::Continue
}

fn run_delfields(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    // A field name that breaks the naming rules cannot be set, so it is absent.
    let remove = args
        .iter_from(2)
        .filter_map(|f| registry::check_field_name(f).ok())
        .map(str::to_string)
        .collect();
    let changes = FieldChanges {
        set: Default::default(),
        remove,
    };
    run(args, &changes, ctx, |removed| removed as i64);
    Outcome::Continue
}

/// Applies `changes` to the user named by the first argument and replies
/// `reply(fields removed)`, `:0` for an unknown user, or the error.
fn run(args: &Args<'_>, changes: &FieldChanges, ctx: &mut Ctx<'_>, reply: fn(usize) -> i64) {
    // A name that breaks the naming rules cannot be registered, so it is unknown.
    let Ok(name) = check_name(args.get(1).unwrap_or_default()) else {
        ctx.out.int(0);
        return;
    };
    let (store, events, stats) = ctx.registry();
    match registry::update(store, events, stats, name, changes) {
        Ok(Updated::Unknown) => ctx.out.int(0),
        Ok(Updated::Unchanged) => ctx.out.int(reply(0)),
        Ok(Updated::Changed { removed }) => ctx.out.int(reply(removed)),
        Err(e) => write_error(&e, ctx),
    }
}
