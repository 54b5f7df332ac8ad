//! LOOKUP: read a user.
//!
//! # Format
//! `LOOKUP name` → nil when unknown; else, in RESP3, the map
//! `{id: :1, name: "alice", created_at: "2026-11-30T08:00:00.000Z", fields: {k: v}}`
//! and in RESP2 the same as flat arrays:
//! `["id", 1, "name", "alice", "created_at", "...", "fields", [k, v, ...]]`.

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;
use crate::store::users::UserRef;

pub const SPEC: Spec = Spec {
    name: "lookup",
    arity: 2,
    flags: &["readonly", "fast"],
    summary: "Returns a user's id, name, creation time and fields, or nil.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Ok(name) = crate::registry::check_name(args.get(1).unwrap_or_default()) else {
        ctx.out.null();
        return Outcome::Continue;
    };
    let (store, out) = ctx.store_and_out();
    match store.lookup(name) {
        Ok(Some(user)) => write_user(out, &user),
        Ok(None) => out.null(),
        Err(e) => super::ctx::storage_error(out, &e),
    }
    Outcome::Continue
}

/// Writes a user as LOOKUP replies it (LOOKUPBY replies the same).
pub(super) fn write_user(out: &mut crate::protocol::Reply<'_>, user: &UserRef<'_>) {
    out.map(4);
    out.bulk(b"id");
    out.int(user.id);
    out.bulk(b"name");
    out.bulk(user.name.as_bytes());
    out.bulk(b"created_at");
    crate::clock::with_rfc3339(user.created_at, |b| out.bulk(b));
    out.bulk(b"fields");
    out.map(user.fields.len());
    for (k, v) in user.fields.iter() {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
}
