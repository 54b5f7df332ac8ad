//! COMMAND: the command table, for clients' hand-shakes and for people.
//!
//! # Format
//! - `COMMAND` → one entry per command: `[name, arity, [flags], 0, 0, 0, [], [], [], []]`
//! - `COMMAND COUNT` → `:n`
//! - `COMMAND INFO [name ...]` → entries (nil for unknown names)
//! - `COMMAND DOCS [name ...]` → map of name → `{summary, since, group}`
//! - `COMMAND LIST` → the names

use super::{COMMANDS, Ctx, Outcome, Spec, find, unknown_subcommand};
use crate::protocol::{Args, Reply};

pub const SPEC: Spec = Spec {
    name: "command",
    arity: -1,
    flags: &["loading", "stale"],
    summary: "Describes the commands.",
    run,
};

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Some(sub) = args.get(1) else {
        ctx.out.array(COMMANDS.len());
        for spec in COMMANDS {
            info(spec, &mut ctx.out);
        }
        return Outcome::Continue;
    };
    let names: Vec<&[u8]> = args.iter_from(2).collect();
    if sub.eq_ignore_ascii_case(b"count") {
        ctx.out.int(COMMANDS.len() as i64);
    } else if sub.eq_ignore_ascii_case(b"list") {
        ctx.out.array(COMMANDS.len());
        for spec in COMMANDS {
            ctx.out.bulk(spec.name.as_bytes());
        }
    } else if sub.eq_ignore_ascii_case(b"info") {
        if names.is_empty() {
            ctx.out.array(COMMANDS.len());
            COMMANDS.iter().for_each(|s| info(s, &mut ctx.out));
        } else {
            ctx.out.array(names.len());
            for n in names {
                match find(n) {
                    Some(spec) => info(spec, &mut ctx.out),
                    None => ctx.out.null_array(),
                }
            }
        }
    } else if sub.eq_ignore_ascii_case(b"docs") {
        let specs: Vec<&Spec> = if names.is_empty() {
            COMMANDS.iter().collect()
        } else {
            names.into_iter().filter_map(find).collect()
        };
        ctx.out.map(specs.len());
        for spec in specs {
            ctx.out.bulk(spec.name.as_bytes());
            ctx.out.map(3);
            ctx.out.bulk(b"summary");
            ctx.out.bulk(spec.summary.as_bytes());
            ctx.out.bulk(b"since");
            ctx.out.bulk(b"0.1.0");
            ctx.out.bulk(b"group");
            ctx.out.bulk(b"userbus");
        }
    } else {
        unknown_subcommand("command", sub, ctx);
    }
    Outcome::Continue
}

fn info(spec: &Spec, out: &mut Reply<'_>) {
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.int(i64::from(spec.arity));
    out.array(spec.flags.len());
    for f in spec.flags {
        out.simple(f);
    }
    out.int(0);
    out.int(0);
    out.int(0);
    for _ in 0..4 {
        out.array(0);
    }
}
