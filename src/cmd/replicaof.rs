//! REPLICAOF and SLAVEOF: promotion of a follower; replication itself goes
//! through the NATS JetStream stream, never from node to node.
//!
//! # Format
//! `REPLICAOF NO ONE` (or `SLAVEOF NO ONE`) → `+OK`. On a primary at once. On a
//! follower (`--follow`), the connection waits (its later requests wait behind
//! it) until the node has applied everything the stream held when it was asked
//! and is primary; `-ERR promotion failed: ...` when NATS does not answer in
//! time (see `reactor::follow`).
//!
//! `REPLICAOF host port` → `-ERR ...`: a node follows the stream with `--follow
//! --nats URL`, not another node.

use super::{Ctx, Outcome, Spec, Wait};
use crate::protocol::Args;
use crate::replica::Role;

pub const REPLICAOF: Spec = Spec {
    name: "replicaof",
    arity: 3,
    flags: &["admin", "noscript", "stale"],
    summary: "REPLICAOF NO ONE promotes a follower to primary once it applied the whole stream.",
    run,
};

pub const SLAVEOF: Spec = Spec {
    name: "slaveof",
    summary: "The old name of REPLICAOF.",
    ..REPLICAOF
};

/// The `after` of a promotion's wait: no commit reaches it, only the promotion's
/// wake-up (`reactor::follow`) ends the wait.
pub const PROMOTION_WAIT: i64 = i64::MAX - 1;

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let (a, b) = (
        args.get(1).unwrap_or_default(),
        args.get(2).unwrap_or_default(),
    );
    if !(a.eq_ignore_ascii_case(b"no") && b.eq_ignore_ascii_case(b"one")) {
        ctx.out.error(
            "ERR REPLICAOF host port is not supported: userbus nodes replicate through the \
             NATS JetStream stream; start a follower with `userbus serve --follow --nats URL` \
             and promote it with REPLICAOF NO ONE",
        );
        return Outcome::Continue;
    }
    let replica = &mut ctx.stats.replica;
    if replica.role == Role::Primary {
        ctx.out.ok();
        return Outcome::Continue;
    }
    if ctx.woken_after.is_none() {
        // A new request: a new promotion (or joins the one under way).
        replica.promotion_error = None;
        replica.promote_asked = true;
    } else if let Some(e) = &replica.promotion_error {
        let text = format!("ERR promotion failed: {e}");
        ctx.out.error(&text);
        return Outcome::Continue;
    }
    Outcome::Block(Wait {
        after: PROMOTION_WAIT,
        timeout: None,
    })
}
