//! A connection's write replies held back until JetStream acknowledged their
//! events (`--durability replicated`). Each held reply is a range of the output;
//! the first one is the watermark the flush stops at, so every later reply on the
//! connection (reads, pushes) waits behind it and replies leave in request order.
//! A held reply is released when the stream confirmed its tick, or rewritten as
//! `-NOREPLICAS` when its tick timed out.

use std::collections::VecDeque;

/// The tick of a held reply before its commit gave it a seq.
const UNCOMMITTED: i64 = i64::MAX;

/// One write reply waiting for the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeldReply {
    /// The last event seq of its tick (`UNCOMMITTED` until the commit).
    seq: i64,
    /// Where the reply starts and ends in the output.
    start: usize,
    end: usize,
    /// HTTP: whether the response kept the connection alive; `None` for RESP.
    keep_alive: Option<bool>,
}

/// The held replies of one connection, in output order (and so in tick order).
#[derive(Debug, Default)]
pub(super) struct HeldReplies {
    replies: VecDeque<HeldReply>,
}

impl HeldReplies {
    /// How far the output may be written: up to the first held reply.
    pub(super) fn limit(&self, len: usize) -> usize {
        self.replies.front().map_or(len, |r| r.start)
    }

    /// The reply at `start..end` of the output is a write of the current tick.
    pub(super) fn hold(&mut self, start: usize, end: usize, keep_alive: Option<bool>) {
        debug_assert!(self.replies.back().is_none_or(|r| r.end <= start));
        self.replies.push_back(HeldReply {
            seq: UNCOMMITTED,
            start,
            end,
            keep_alive,
        });
    }

    /// The current tick committed with `seq` as its last event; true when it
    /// held a reply here.
    pub(super) fn commit(&mut self, seq: i64) -> bool {
        let mut any = false;
        for r in self.replies.iter_mut().rev() {
            if r.seq != UNCOMMITTED {
                break;
            }
            r.seq = seq;
            any = true;
        }
        any
    }

    /// The current tick rolled back: its replies are rewritten by the rollback,
    /// nothing of it is held.
    pub(super) fn forget_uncommitted(&mut self) {
        while self.replies.back().is_some_and(|r| r.seq == UNCOMMITTED) {
            self.replies.pop_back();
        }
    }

    /// The stream holds every event up to `confirmed`: the replies of those
    /// ticks may go. True when one was released.
    pub(super) fn release(&mut self, confirmed: i64) -> bool {
        let before = self.replies.len();
        while self.replies.front().is_some_and(|r| r.seq <= confirmed) {
            self.replies.pop_front();
        }
        self.replies.len() != before
    }

    /// The ticks up to `seq` timed out: each of their replies in `out` becomes
    /// what `write` writes for it (given its `keep_alive`), and the later ones
    /// move with the bytes. Returns how many were rewritten.
    pub(super) fn fail(
        &mut self,
        seq: i64,
        out: &mut Vec<u8>,
        mut write: impl FnMut(&mut Vec<u8>, Option<bool>),
    ) -> usize {
        let mut failed = 0;
        let mut replacement = Vec::new();
        while let Some(r) = self.replies.front().copied() {
            if r.seq > seq {
                break;
            }
            self.replies.pop_front();
            replacement.clear();
            write(&mut replacement, r.keep_alive);
            out.splice(r.start..r.end, replacement.iter().copied());
            let grown = replacement.len() as isize - (r.end - r.start) as isize;
            for later in &mut self.replies {
                later.start = later.start.saturating_add_signed(grown);
                later.end = later.end.saturating_add_signed(grown);
            }
            failed += 1;
        }
        failed
    }

    /// The first `n` bytes of the output were written and dropped from it.
    pub(super) fn shift(&mut self, n: usize) {
        for r in &mut self.replies {
            r.start -= n;
            r.end -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flush_stops_at_the_first_held_reply_until_its_tick_is_confirmed() {
        let mut held = HeldReplies::default();
        assert_eq!(held.limit(10), 10);
        held.hold(4, 8, None);
        assert!(held.commit(7));
        held.hold(12, 16, None);
        assert!(held.commit(9));
        assert!(!held.commit(10));
        assert_eq!(held.limit(20), 4);
        assert!(!held.release(6));
        assert!(held.release(7));
        assert_eq!(held.limit(20), 12);
        held.shift(10);
        assert_eq!(held.limit(10), 2);
        assert!(held.release(9));
        assert_eq!(held.limit(5), 5);
    }

    #[test]
    fn a_timed_out_reply_is_rewritten_and_the_rest_stays_in_order() {
        let mut out = b"+PONG\r\n:1\r\n$1\r\na\r\n:2\r\n".to_vec();
        let mut held = HeldReplies::default();
        held.hold(7, 11, None);
        held.commit(3);
        held.hold(18, 22, Some(true));
        held.commit(4);
        let failed = held.fail(3, &mut out, |o, keep_alive| {
            assert_eq!(keep_alive, None);
            o.extend_from_slice(b"-NOREPLICAS x\r\n");
        });
        assert_eq!(failed, 1);
        assert_eq!(&out[..], b"+PONG\r\n-NOREPLICAS x\r\n$1\r\na\r\n:2\r\n");
        assert_eq!(held.limit(out.len()), 29);
        assert_eq!(&out[29..], b":2\r\n");
    }

    #[test]
    fn a_rolled_back_tick_holds_nothing() {
        let mut held = HeldReplies::default();
        held.hold(0, 4, None);
        held.commit(1);
        held.hold(4, 8, None);
        held.forget_uncommitted();
        assert!(held.release(1));
        assert_eq!(held.limit(5), 5);
    }
}
