//! WEBHOOK: the HTTP endpoints committed events are delivered to.
//!
//! # Format
//! - `WEBHOOK ADD url [SECRET whsec_...] [EVENTS kind[,kind...]]` → map `id`,
//!   `secret` (the secret is shown this once); kinds `user.registered`,
//!   `user.unregistered`, `user.updated`, `*` (all, also when absent)
//! - `WEBHOOK DEL id` → `:1` deleted, `:0` no such endpoint
//! - `WEBHOOK LIST` → per endpoint a map `id`, `url`, `events`, `state`,
//!   `reason`, `position`, `lag`, `delivered`, `failed`, `retrying`,
//!   `dead_letters`, `last_status`, `last_error` (never the secret)
//! - `WEBHOOK REPLAY id from-seq` → `+OK`: every matching event from `from-seq`
//!   on is delivered again, in order, and the endpoint is enabled
//! - `WEBHOOK REPLAY id` → `:n`, the dead letters requeued (delivered before
//!   anything newer)
//! - `WEBHOOK DEADLETTERS id [count]` → per dead letter a map `seq`, `attempts`,
//!   `last_status`, `last_error`, `at`
//! - `WEBHOOK ENABLE id` → `+OK`: enabled again where it stopped
//! - `WEBHOOK HELP` → the subcommands
//!
//! Unknown ids answer `-ERR no such webhook` (DEL: `:0`). Endpoints live in
//! SQLite and change in the tick's transaction; deliveries see a change once it
//! is committed. WEBHOOK is a write: a follower answers `-READONLY`. With
//! `--nats` the primary also keeps the endpoints in a JetStream KV bucket, which
//! a promoted follower takes in (`nats::webhook_kv`, `reactor::webhooks`).

use super::{Ctx, Outcome, Spec, int_arg, not_an_integer, syntax_error, unknown_subcommand};
use crate::protocol::Args;
use crate::webhook::admin::{self, AddError, Value};

pub const SPEC: Spec = Spec {
    name: "webhook",
    arity: -2,
    flags: &["write"],
    summary: "Adds, lists, replays and removes the HTTP endpoints events are delivered to.",
    run,
};

/// Dead letters DEADLETTERS lists without a count.
const DEFAULT_DEAD_LETTERS: usize = 100;

const HELP: [&str; 8] = [
    "WEBHOOK <subcommand> [<arg> ...]. Subcommands are:",
    "ADD <url> [SECRET whsec_...] [EVENTS kind[,kind...]]",
    "DEL <id>",
    "LIST",
    "REPLAY <id> [from-seq]",
    "DEADLETTERS <id> [count]",
    "ENABLE <id>",
    "HELP",
];

const NO_SUCH_WEBHOOK: &str = "ERR no such webhook";

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let sub = args.get(1).unwrap_or_default().to_ascii_lowercase();
    let (min, max) = match sub.as_slice() {
        b"add" => (3, 7),
        b"del" | b"enable" => (3, 3),
        b"list" | b"help" => (2, 2),
        b"replay" | b"deadletters" => (3, 4),
        _ => {
            unknown_subcommand("webhook", args.get(1).unwrap_or_default(), ctx);
            return Outcome::Continue;
        }
    };
    if args.len() < min || args.len() > max {
        super::wrong_arity(&format!("webhook|{}", String::from_utf8_lossy(&sub)), ctx);
        return Outcome::Continue;
    }
    if sub == b"help" {
        ctx.out.array(HELP.len());
        for line in HELP {
            ctx.out.simple(line);
        }
        return Outcome::Continue;
    }
    if sub == b"add" {
        add(args, ctx);
        return Outcome::Continue;
    }
    if sub == b"list" {
        list(ctx);
        return Outcome::Continue;
    }
    let Some(id) = int_arg(args.get(2).unwrap_or_default()) else {
        not_an_integer(ctx);
        return Outcome::Continue;
    };
    let extra = match args.get(3) {
        None => None,
        Some(a) => match int_arg(a) {
            Some(n) if n >= 0 => Some(n),
            _ => {
                not_an_integer(ctx);
                return Outcome::Continue;
            }
        },
    };
    match sub.as_slice() {
        b"del" => match ctx.store().webhook_delete(id) {
            Ok(found) => ctx.out.int(i64::from(found)),
            Err(e) => ctx.storage_error(&e),
        },
        b"enable" => match ctx.store().webhook_enable(id) {
            Ok(true) => ctx.out.ok(),
            Ok(false) => ctx.out.error(NO_SUCH_WEBHOOK),
            Err(e) => ctx.storage_error(&e),
        },
        b"replay" => match extra {
            Some(from) => match ctx.store().webhook_rewind(id, from) {
                Ok(true) => ctx.out.ok(),
                Ok(false) => ctx.out.error(NO_SUCH_WEBHOOK),
                Err(e) => ctx.storage_error(&e),
            },
            None => match ctx.store().webhook_requeue_dead(id) {
                Ok(Some(n)) => ctx.out.int(n),
                Ok(None) => ctx.out.error(NO_SUCH_WEBHOOK),
                Err(e) => ctx.storage_error(&e),
            },
        },
        _ => dead_letters(id, extra, ctx),
    }
    Outcome::Continue
}

fn add(args: &Args<'_>, ctx: &mut Ctx<'_>) {
    let Ok(url) = std::str::from_utf8(args.get(2).unwrap_or_default()) else {
        ctx.out.error("ERR invalid url: not UTF-8");
        return;
    };
    let (mut secret, mut events) = (None, None);
    let mut i = 3;
    while let Some(opt) = args.get(i) {
        let Some(value) = args.get(i + 1) else {
            syntax_error(ctx);
            return;
        };
        let slot = if opt.eq_ignore_ascii_case(b"secret") && secret.is_none() {
            &mut secret
        } else if opt.eq_ignore_ascii_case(b"events") && events.is_none() {
            &mut events
        } else {
            syntax_error(ctx);
            return;
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
        i += 2;
    }
    let kinds: Vec<&str> = events
        .as_deref()
        .map(|e| e.split(',').collect())
        .unwrap_or_default();
    let allow_private = ctx.config.webhook_allow_private;
    match admin::add(ctx.store(), url, secret.as_deref(), &kinds, allow_private) {
        Ok(added) => {
            ctx.out.map(2);
            ctx.out.bulk(b"id");
            ctx.out.int(added.id);
            ctx.out.bulk(b"secret");
            ctx.out.bulk(added.secret.as_bytes());
        }
        Err(AddError::Storage(e)) => ctx.storage_error(&e),
        Err(e) => ctx.out.error(&format!("ERR {e}")),
    }
}

fn list(ctx: &mut Ctx<'_>) {
    let last = ctx.store().counts().last_seq;
    let rows = match ctx.store().webhooks() {
        Ok(rows) => rows,
        Err(e) => return ctx.storage_error(&e),
    };
    ctx.out.array(rows.len());
    for row in &rows {
        let fields = admin::describe(row, last);
        ctx.out.map(fields.len());
        for (k, v) in fields {
            ctx.out.bulk(k.as_bytes());
            match v {
                Value::Int(n) => ctx.out.int(n),
                Value::Text(t) => ctx.out.bulk(t.as_bytes()),
            }
        }
    }
}

fn dead_letters(id: i64, count: Option<i64>, ctx: &mut Ctx<'_>) {
    match ctx.store().webhook(id) {
        Ok(Some(_)) => {}
        Ok(None) => return ctx.out.error(NO_SUCH_WEBHOOK),
        Err(e) => return ctx.storage_error(&e),
    }
    let count = count.map_or(DEFAULT_DEAD_LETTERS, |n| {
        usize::try_from(n).unwrap_or(usize::MAX)
    });
    let rows = match ctx.store().webhook_dead_letters(id, count) {
        Ok(rows) => rows,
        Err(e) => return ctx.storage_error(&e),
    };
    ctx.out.array(rows.len());
    for d in rows {
        ctx.out.map(5);
        ctx.out.bulk(b"seq");
        ctx.out.int(d.seq);
        ctx.out.bulk(b"attempts");
        ctx.out.int(d.attempts);
        ctx.out.bulk(b"last_status");
        ctx.out.int(d.last_status);
        ctx.out.bulk(b"last_error");
        ctx.out.bulk(d.last_error.as_bytes());
        ctx.out.bulk(b"at");
        ctx.out.bulk(crate::clock::rfc3339(d.at).as_bytes());
    }
}
