//! XADD, XDEL, XTRIM, XSETID: refused. The event log is written by registrations
//! only, in the same transaction as the user change, so nothing else may add to,
//! remove from or renumber it.
//!
//! # Format
//! `XADD ...`, `XDEL ...`, `XTRIM ...`, `XSETID ...` →
//! `-ERR the events stream is written by registrations only`

use super::{Ctx, Outcome, Spec};
use crate::protocol::Args;

const FLAGS: &[&str] = &["write"];

pub const XADD: Spec = Spec {
    name: "xadd",
    arity: -2,
    flags: FLAGS,
    summary: "Refused: the events stream is written by registrations only.",
    run,
};

pub const XDEL: Spec = Spec {
    name: "xdel",
    ..XADD
};

pub const XTRIM: Spec = Spec {
    name: "xtrim",
    ..XADD
};

pub const XSETID: Spec = Spec {
    name: "xsetid",
    ..XADD
};

fn run(_args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    ctx.out
        .error("ERR the events stream is written by registrations only");
    Outcome::Continue
}
