//! CONFIG: read the server's settings.
//!
//! # Format
//! - `CONFIG GET pattern [pattern ...]` → map of matching setting → value
//!   (`save` and `appendonly` included, which redis-benchmark asks for)
//! - `CONFIG SET ...` → an error: settings are fixed at start
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
        let settings = ctx.config.settings();
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
        ctx.out
            .error("ERR CONFIG SET is not supported: userbus settings are fixed at start");
    } else if sub.eq_ignore_ascii_case(b"resetstat") {
        ctx.stats.reset_counters();
        ctx.out.ok();
    } else {
        unknown_subcommand("config", sub, ctx);
    }
    Outcome::Continue
}
