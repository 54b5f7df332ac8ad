//! XREAD: read the event log from an id on, optionally waiting for new entries.
//!
//! # Format
//! `XREAD [COUNT n] [BLOCK ms] STREAMS events <id|$>` →
//! `[[events, [[id, [field, value, ...]], ...]]]` in RESP2, `{events: [...]}` in
//! RESP3, or nil (`*-1` / `_`) when there is nothing after the id.
//!
//! Without COUNT every entry after the id is returned, as in Redis; entries are
//! encoded straight from the log into the output, whose limit then holds back
//! the connection's later requests until the client has read them.
//!
//! With `BLOCK ms` and nothing to return, the connection waits (its later requests
//! wait behind it) until a commit adds entries or `ms` pass (`BLOCK 0` waits
//! forever); the wait never blocks the loop. `$` means "after the last entry now".
//! `events.dead` can be read too, without BLOCK (it is answered at once).

use std::time::Duration;

use super::{Ctx, Outcome, Spec, int_arg, syntax_error};
use crate::events::stream::{EVENTS_KEY, Stream, read_after, stream, write_entries, write_entry};
use crate::protocol::Args;

pub const SPEC: Spec = Spec {
    name: "xread",
    arity: -4,
    flags: &["readonly", "blocking"],
    summary: "Reads events after an id, optionally blocking until there are some.",
    run,
};

/// A blocking read that found nothing: the reactor parks the connection and runs
/// the command again after a commit that grows the log past `after`, or replies
/// nil when the timeout passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// Wake when the committed log's last sequence number exceeds this.
    pub after: i64,
    /// How long to wait; `None` waits forever.
    pub timeout: Option<Duration>,
}

/// What XREAD and XREADGROUP say before and after `STREAMS`.
pub struct ReadRequest<'b> {
    /// Most entries to return (`usize::MAX` without COUNT).
    pub count: usize,
    /// `BLOCK`: `Some(None)` waits forever, `Some(Some(t))` up to `t`.
    pub block: Option<Option<Duration>>,
    /// `NOACK` (XREADGROUP only).
    pub noack: bool,
    /// The stream key.
    pub key: &'b [u8],
    /// The id after it.
    pub id: &'b [u8],
}

/// Parses `[COUNT n] [BLOCK ms] [NOACK] STREAMS key id` from `args[start..]` for
/// `cmd` (NOACK only when `noack_allowed`); replies the error and returns `None` on
/// bad input.
pub fn read_request<'b>(
    args: &Args<'b>,
    start: usize,
    cmd: &str,
    noack_allowed: bool,
    ctx: &mut Ctx<'_>,
) -> Option<ReadRequest<'b>> {
    let mut count = usize::MAX;
    let mut block = None;
    let mut noack = false;
    let mut i = start;
    loop {
        let Some(opt) = args.get(i) else {
            syntax_error(ctx);
            return None;
        };
        if opt.eq_ignore_ascii_case(b"streams") {
            i += 1;
            break;
        }
        if noack_allowed && opt.eq_ignore_ascii_case(b"noack") {
            noack = true;
            i += 1;
            continue;
        }
        let value = args.get(i + 1);
        if opt.eq_ignore_ascii_case(b"count") {
            match value.and_then(int_arg) {
                // COUNT 0 (or less) means no COUNT, as in Redis.
                Some(n) if n <= 0 => count = usize::MAX,
                Some(n) => count = usize::try_from(n).unwrap_or(usize::MAX),
                None => {
                    super::not_an_integer(ctx);
                    return None;
                }
            }
        } else if opt.eq_ignore_ascii_case(b"block") {
            match value.and_then(int_arg) {
                Some(ms) if ms < 0 => {
                    ctx.out.error("ERR timeout is negative");
                    return None;
                }
                Some(0) => block = Some(None),
                Some(ms) => block = Some(Some(Duration::from_millis(ms as u64))),
                None => {
                    ctx.out
                        .error("ERR timeout is not an integer or out of range");
                    return None;
                }
            }
        } else {
            syntax_error(ctx);
            return None;
        }
        i += 2;
    }
    let rest = args.len() - i;
    if rest == 0 || !rest.is_multiple_of(2) {
        let what = if noack_allowed { "'>'" } else { "'$'" };
        ctx.out.error(&format!(
            "ERR Unbalanced '{cmd}' list of streams: for each stream key an ID or {what} must be specified."
        ));
        return None;
    }
    if rest != 2 {
        ctx.out.error(&format!(
            "ERR userbus streams are read one at a time: {} ... STREAMS events <id>",
            cmd.to_ascii_uppercase()
        ));
        return None;
    }
    Some(ReadRequest {
        count,
        block,
        noack,
        key: args.get(i).unwrap_or_default(),
        id: args.get(i + 1).unwrap_or_default(),
    })
}

fn run(args: &Args<'_>, ctx: &mut Ctx<'_>) -> Outcome {
    let Some(ReadRequest {
        count,
        block,
        key,
        id,
        ..
    }) = read_request(args, 1, "xread", false, ctx)
    else {
        return Outcome::Continue;
    };

    if id == b">" {
        ctx.out.error(
            "ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.",
        );
        return Outcome::Continue;
    }
    let which = match stream(key) {
        Ok(s) => s,
        Err(e) => {
            ctx.out.error(&e);
            return Outcome::Continue;
        }
    };
    // A re-run after a wake keeps the `$` its first run resolved.
    let last_seq = match ctx.woken_after {
        Some(after) => after,
        None => ctx.store().counts().last_seq,
    };
    let after = match read_after(id, last_seq) {
        Ok(a) => a,
        Err(e) => {
            ctx.out.error(e);
            return Outcome::Continue;
        }
    };
    if which == Stream::Dead && id == b"$" {
        // Nothing is ever after the newest dead letter for a read that does not wait.
        ctx.out.null_array();
        return Outcome::Continue;
    }
    if which == Stream::Dead {
        // Dead letters are read without waiting: BLOCK does not apply to them.
        match ctx
            .store()
            .dead_letters(after.saturating_add(1), i64::MAX, count, false)
        {
            Ok(rows) if !rows.is_empty() => {
                crate::events::stream::write_read_header(
                    &mut ctx.out,
                    crate::events::stream::DEAD_KEY,
                );
                ctx.out.array(rows.len());
                for (dead, ev) in &rows {
                    crate::events::stream::write_dead_entry(&mut ctx.out, dead, ev.as_ref());
                }
            }
            Ok(_) => ctx.out.null_array(),
            Err(e) => ctx.storage_error(&e),
        }
        return Outcome::Continue;
    }
    if after < ctx.store().counts().last_seq {
        let (store, out) = ctx.store_and_out();
        let res = write_entries(out, Some(EVENTS_KEY), |out| {
            store.each_event_between(after.saturating_add(1), i64::MAX, count, false, |e| {
                write_entry(out, e)
            })
        });
        match res {
            Ok(0) => {}
            Ok(_) => return Outcome::Continue,
            Err(e) => {
                ctx.storage_error(&e);
                return Outcome::Continue;
            }
        }
    }
    match block {
        Some(timeout) => Outcome::Block(Wait { after, timeout }),
        _ => {
            ctx.out.null_array();
            Outcome::Continue
        }
    }
}
