//! LOOKUP: read a user.
//!
//! # Format
//! `LOOKUP name` → nil when unknown; else, in RESP3, the map
//! `{id: :1, name: "alice", created_at: "2026-11-30T08:00:00.000Z", fields: {k: v}}`
//! and in RESP2 the same as flat arrays:
//! `["id", 1, "name", "alice", "created_at", "...", "fields", [k, v, ...]]`.

use std::collections::BTreeMap;

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

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
    match ctx.store().lookup(name) {
        Ok(Some(user)) => {
            let fields: BTreeMap<String, String> =
                serde_json::from_str(&user.fields).unwrap_or_default();
            let out = &mut ctx.out;
            out.map(4);
            out.bulk(b"id");
            out.int(user.id);
            out.bulk(b"name");
            out.bulk(user.name.as_bytes());
            out.bulk(b"created_at");
            out.bulk(crate::clock::rfc3339(user.created_at).as_bytes());
            out.bulk(b"fields");
            out.map(fields.len());
            for (k, v) in &fields {
                out.bulk(k.as_bytes());
                out.bulk(v.as_bytes());
            }
        }
        Ok(None) => ctx.out.null(),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}
