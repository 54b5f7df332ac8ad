//! SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE: live event pushes.
//!
//! # Format
//! - `SUBSCRIBE channel [channel ...]` → per channel a push
//!   `[subscribe, channel, :count]` (count = channels + patterns of this client)
//! - `PSUBSCRIBE pattern [pattern ...]` → `[psubscribe, pattern, :count]` each
//! - `UNSUBSCRIBE [channel ...]` → `[unsubscribe, channel, :count]` each; with no
//!   argument, every channel of this client, or `[unsubscribe, nil, :0]` when none
//! - `PUNSUBSCRIBE [pattern ...]` → the same for patterns
//!
//! Committed events arrive as `[message, channel, payload]` or
//! `[pmessage, pattern, channel, payload]`, payload the event's JSON. Channels are
//! `user.registered` and `user.unregistered`; any name may be subscribed, as in
//! Redis. In RESP2 a subscribed client may only run these four, PING, QUIT and
//! RESET; in RESP3 pushes are `>` frames and any command works.

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

pub const SUBSCRIBE: Spec = Spec {
    name: "subscribe",
    arity: -2,
    flags: &["pubsub", "loading", "stale"],
    summary: "Receives committed events on the given channels.",
    run: subscribe,
};

pub const PSUBSCRIBE: Spec = Spec {
    name: "psubscribe",
    arity: -2,
    flags: &["pubsub", "loading", "stale"],
    summary: "Receives committed events on channels matching the given patterns.",
    run: psubscribe,
};

pub const UNSUBSCRIBE: Spec = Spec {
    name: "unsubscribe",
    arity: -1,
    flags: &["pubsub", "loading", "stale"],
    summary: "Stops receiving the given channels (all when none is given).",
    run: unsubscribe,
};

pub const PUNSUBSCRIBE: Spec = Spec {
    name: "punsubscribe",
    arity: -1,
    flags: &["pubsub", "loading", "stale"],
    summary: "Stops receiving the given patterns (all when none is given).",
    run: punsubscribe,
};

/// Which of the two subscription kinds a command works on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Channel,
    Pattern,
}

fn subscribe(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    add(args, ctx, Kind::Channel)
}

fn psubscribe(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    add(args, ctx, Kind::Pattern)
}

fn unsubscribe(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    remove(args, ctx, Kind::Channel)
}

fn punsubscribe(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    remove(args, ctx, Kind::Pattern)
}

fn add(args: &Args<'_>, ctx: &mut Ctx<'_>, kind: Kind) -> Outcome {
    let word: &[u8] = if kind == Kind::Channel {
        b"subscribe"
    } else {
        b"psubscribe"
    };
    for name in args.iter_from(1) {
        let added = match kind {
            Kind::Channel => ctx.pubsub.subscribe(ctx.key, name),
            Kind::Pattern => ctx.pubsub.psubscribe(ctx.key, name),
        };
        if added {
            let list = match kind {
                Kind::Channel => &mut ctx.session.channels,
                Kind::Pattern => &mut ctx.session.patterns,
            };
            list.push(name.to_vec());
        }
        confirm(ctx, word, Some(name));
    }
    Outcome::Continue
}

fn remove(args: &Args<'_>, ctx: &mut Ctx<'_>, kind: Kind) -> Outcome {
    let word: &[u8] = if kind == Kind::Channel {
        b"unsubscribe"
    } else {
        b"punsubscribe"
    };
    let names: Vec<Vec<u8>> = if args.len() > 1 {
        args.iter_from(1).map(<[u8]>::to_vec).collect()
    } else {
        match kind {
            Kind::Channel => ctx.session.channels.clone(),
            Kind::Pattern => ctx.session.patterns.clone(),
        }
    };
    if names.is_empty() {
        confirm(ctx, word, None);
        return Outcome::Continue;
    }
    for name in &names {
        let removed = match kind {
            Kind::Channel => ctx.pubsub.unsubscribe(ctx.key, name),
            Kind::Pattern => ctx.pubsub.punsubscribe(ctx.key, name),
        };
        if removed {
            let list = match kind {
                Kind::Channel => &mut ctx.session.channels,
                Kind::Pattern => &mut ctx.session.patterns,
            };
            list.retain(|n| n != name);
        }
        confirm(ctx, word, Some(name));
    }
    Outcome::Continue
}

/// `[word, name|nil, :count]` as a push.
fn confirm(ctx: &mut Ctx<'_>, word: &[u8], name: Option<&[u8]>) {
    let count = ctx.session.subscriptions() as i64;
    ctx.out.push(3);
    ctx.out.bulk(word);
    match name {
        Some(n) => ctx.out.bulk(n),
        None => ctx.out.null(),
    }
    ctx.out.int(count);
}
