//! REGISTER: add a user.
//!
//! # Format
//! `REGISTER name [field value ...]` → `:id` of the new user (ids start at 1), or
//! `:0` when the name is taken (a normal outcome, like SETNX, not an error).
//!
//! Names are 1–64 bytes of UTF-8 without whitespace or control characters; at most
//! 32 fields, names by the same rules, values valid UTF-8 of at most 4096 bytes. A
//! field given twice keeps its last value. The user row and its `user.registered`
//! event row are written in the tick's transaction.

use std::collections::BTreeMap;

use super::{Ctx, Outcome, Spec, check_field_name, check_name, wrong_arity};
use crate::config::{MAX_FIELD_VALUE_BYTES, MAX_FIELDS};
use crate::events::{Event, EventKind};
use crate::protocol::Args;

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
            ctx.out.error(e);
            return Outcome::Continue;
        }
    };
    let fields = match parse_fields(args) {
        Ok(f) => f,
        Err(e) => {
            ctx.out.error(&e);
            return Outcome::Continue;
        }
    };
    // Sorted keys make the stored JSON canonical.
    let fields_json = serde_json::to_string(&fields).unwrap_or_else(|_| "{}".to_string());
    let now = crate::clock::now_ms();
    match ctx.store().register(name, &fields_json, now) {
        Ok(Some(change)) => {
            ctx.out.int(change.user_id);
            ctx.stats.tick_registrations += 1;
            ctx.events.push(Event {
                seq: change.seq,
                kind: EventKind::Registered,
                user_id: change.user_id,
                name: name.to_string(),
                fields,
                at_ms: now,
            });
        }
        Ok(None) => ctx.out.int(0),
        Err(e) => ctx.storage_error(&e),
    }
    Outcome::Continue
}

fn parse_fields(args: &Args<'_>) -> Result<BTreeMap<String, String>, String> {
    let pairs = (args.len() - 2) / 2;
    if pairs > MAX_FIELDS {
        return Err(format!("ERR too many fields: at most {MAX_FIELDS}"));
    }
    let mut fields = BTreeMap::new();
    let mut it = args.iter_from(2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k = check_field_name(k).map_err(str::to_string)?;
        if v.len() > MAX_FIELD_VALUE_BYTES {
            return Err(format!(
                "ERR invalid field value for '{k}': at most {MAX_FIELD_VALUE_BYTES} bytes"
            ));
        }
        let v = std::str::from_utf8(v)
            .map_err(|_| format!("ERR invalid field value for '{k}': must be valid UTF-8"))?;
        fields.insert(k.to_string(), v.to_string());
    }
    Ok(fields)
}
