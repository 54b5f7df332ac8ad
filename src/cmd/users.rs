//! USERS: page through the registered names, SCAN-style.
//!
//! # Format
//! `USERS [cursor] [COUNT n] [MATCH pattern]` → `[next-cursor, [name ...]]`.
//!
//! Start with cursor 0 and repeat with the returned cursor until it is 0 again.
//! The cursor is the id of the last user examined, so a user present for the whole
//! iteration is returned exactly once however many register or leave meanwhile.
//! `COUNT` (default 10, at most 10000) is how many users a call examines; `MATCH`
//! filters those with a Redis glob, so a page may be empty while the cursor is not 0.

use super::{Ctx, Outcome, Spec, int_arg, not_an_integer, syntax_error};
use crate::config::MAX_USERS_PAGE;
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "users",
    arity: -1,
    flags: &["readonly"],
    summary: "Iterates over registered user names with a cursor.",
    run,
};

const DEFAULT_COUNT: usize = 10;

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let mut i = 1;
    let mut cursor = 0i64;
    if let Some(first) = args.get(1)
        && !first.eq_ignore_ascii_case(b"count")
        && !first.eq_ignore_ascii_case(b"match")
    {
        match int_arg(first) {
            Some(c) if c >= 0 => cursor = c,
            _ => {
                ctx.out.error("ERR invalid cursor");
                return Outcome::Continue;
            }
        }
        i = 2;
    }
    let mut count = DEFAULT_COUNT;
    let mut pattern: Option<&[u8]> = None;
    while let Some(opt) = args.get(i) {
        let Some(value) = args.get(i + 1) else {
            syntax_error(ctx);
            return Outcome::Continue;
        };
        if opt.eq_ignore_ascii_case(b"count") {
            match int_arg(value) {
                Some(n) if n >= 1 => count = (n as usize).min(MAX_USERS_PAGE),
                Some(_) => {
                    syntax_error(ctx);
                    return Outcome::Continue;
                }
                None => {
                    not_an_integer(ctx);
                    return Outcome::Continue;
                }
            }
        } else if opt.eq_ignore_ascii_case(b"match") {
            pattern = Some(value);
        } else {
            syntax_error(ctx);
            return Outcome::Continue;
        }
        i += 2;
    }
    let page = match crate::registry::users_page(ctx.store(), cursor, count, pattern) {
        Ok(page) => page,
        Err(e) => {
            ctx.storage_error(&e);
            return Outcome::Continue;
        }
    };
    ctx.out.array(2);
    ctx.out.bulk_int(page.next);
    ctx.out.array(page.names.len());
    for name in &page.names {
        ctx.out.bulk(name.as_bytes());
    }
    Outcome::Continue
}
