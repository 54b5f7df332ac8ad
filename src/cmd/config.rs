//! CONFIG: read the server's settings.
//!
//! # Format
//! - `CONFIG GET pattern [pattern ...]` → map of matching setting → value
//!   (`save` and `appendonly` included, which redis-benchmark asks for)
//! - `CONFIG SET max-db-pages N` → `+OK` (0 lifts the cap); other settings are
//!   fixed at start and get an error
//! - `CONFIG RESETSTAT` → `+OK`, counters (INFO stats, /metrics) start again from 0

use super::{Ctx, Outcome, Spec, unknown_subcommand, wrong_arity};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "config",
    arity: -2,
    flags: &["admin"],
    summary: "Reads the server's settings.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let sub = args.get(1).unwrap_or_default();
    if sub.eq_ignore_ascii_case(b"get") {
        if args.len() < 3 {
            wrong_arity("config|get", ctx);
            return Outcome::Continue;
        }
        let mut settings = ctx.config.settings();
        // Settings changeable at run time report their current value.
        let pages = ctx.store_view().max_pages().to_string();
        if let Some(s) = settings.iter_mut().find(|(n, _)| *n == "max-db-pages") {
            s.1 = pages;
        }
        let hits: Vec<&(&str, String)> = settings
            .iter()
            .filter(|(name, _)| {
                args.iter_from(2)
                    .any(|p| crate::glob::matches(&p.to_ascii_lowercase(), name.as_bytes()))
            })
            .collect();
        ctx.out.map(hits.len());
        for (name, value) in hits {
            ctx.out.bulk(name.as_bytes());
            ctx.out.bulk(value.as_bytes());
        }
    } else if sub.eq_ignore_ascii_case(b"set") {
        set(args, ctx);
    } else if sub.eq_ignore_ascii_case(b"resetstat") {
        ctx.stats.reset_counters();
        ctx.out.ok();
    } else {
        unknown_subcommand("config", sub, ctx);
    }
    Outcome::Continue
}

fn set(args: &Args<'_>, ctx: &mut Ctx<'_>) {
    let (Some(name), Some(value), 4) = (args.get(2), args.get(3), args.len()) else {
        wrong_arity("config|set", ctx);
        return;
    };
    if !name.eq_ignore_ascii_case(b"max-db-pages") {
        ctx.out.error(&format!(
            "ERR CONFIG SET '{}' is not supported: only max-db-pages changes at run time; \
             restart with the flag for the others",
            String::from_utf8_lossy(name)
        ));
        return;
    }
    let Some(pages) = super::int_arg(value).and_then(|n| u64::try_from(n).ok()) else {
        super::not_an_integer(ctx);
        return;
    };
    match ctx.store().set_max_pages(pages) {
        Ok(_) => ctx.out.ok(),
        Err(e) => ctx.storage_error(&e),
    }
}
