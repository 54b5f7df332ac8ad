//! A tick's replies on one connection, as blocks of its output that remember
//! whether they depended on storage. When the tick's commit fails, the blocks that
//! did are replaced by the storage error and the others (a SUBSCRIBE that took
//! effect, a PING) stay, in order.

/// The replies the current tick wrote on a connection.
#[derive(Debug, Default)]
pub(super) struct TickReplies {
    /// The current tick has touched the connection.
    begun: bool,
    /// Where each request's reply starts in the output, and whether it used
    /// storage. Cleared, not dropped, between ticks to keep its memory.
    blocks: Vec<(usize, bool)>,
    /// Whether any of `blocks` used storage.
    used_storage: bool,
}

impl TickReplies {
    /// Starts the tick's bookkeeping; false when it had started already.
    #[inline]
    pub(super) fn begin(&mut self) -> bool {
        if self.begun {
            return false;
        }
        self.begun = true;
        self.blocks.clear();
        self.used_storage = false;
        true
    }

    /// Ends the tick: its replies are final.
    pub(super) fn end(&mut self) {
        self.begun = false;
    }

    /// A reply starts at `at` in the output; `used_storage` ties it to the commit.
    #[inline]
    pub(super) fn record(&mut self, at: usize, used_storage: bool) {
        self.blocks.push((at, used_storage));
        self.used_storage |= used_storage;
    }

    /// Where the last recorded reply starts.
    pub(super) fn last_start(&self) -> Option<usize> {
        self.blocks.last().map(|&(at, _)| at)
    }

    /// Rewrites `out` after a failed commit: every block that used storage becomes
    /// what `replace` writes, the others keep their bytes. `replace` returns false
    /// to stop there (an HTTP connection closes after its error response, so what
    /// followed is dropped). Returns false when nothing depended on storage.
    pub(super) fn roll_back(
        &mut self,
        out: &mut Vec<u8>,
        mut replace: impl FnMut(&mut Vec<u8>) -> bool,
    ) -> bool {
        if !self.begun || !self.used_storage {
            return false;
        }
        // Everything before the first storage reply is already right where it is.
        let Some(first) = self.blocks.iter().position(|&(_, storage)| storage) else {
            return false;
        };
        let cut = self.blocks[first].0;
        let tail = out.split_off(cut);
        let ends = self.blocks[first + 1..]
            .iter()
            .map(|&(at, _)| at)
            .chain(std::iter::once(cut + tail.len()));
        for (&(at, storage), end) in self.blocks[first..].iter().zip(ends) {
            if storage {
                if !replace(out) {
                    break;
                }
            } else {
                out.extend_from_slice(&tail[at - cut..end - cut]);
            }
        }
        // The tick goes on in the blocks of the rewritten output; nothing more can
        // be replaced twice.
        self.used_storage = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticked(parts: &[(&[u8], bool)]) -> (TickReplies, Vec<u8>) {
        let mut out = b"old".to_vec();
        let mut t = TickReplies::default();
        assert!(t.begin());
        assert!(!t.begin());
        for (bytes, storage) in parts {
            t.record(out.len(), *storage);
            out.extend_from_slice(bytes);
        }
        (t, out)
    }

    #[test]
    fn storage_replies_become_the_error_and_the_others_stay() {
        let (mut t, mut out) = ticked(&[
            (b"+PONG\r\n", false),
            (b":1\r\n", true),
            (b"+OK\r\n", false),
            (b":2\r\n", true),
        ]);
        assert!(t.roll_back(&mut out, |o| {
            o.extend_from_slice(b"-ERR x\r\n");
            true
        }));
        assert_eq!(out, b"old+PONG\r\n-ERR x\r\n+OK\r\n-ERR x\r\n");
    }

    #[test]
    fn a_stop_drops_what_followed() {
        let (mut t, mut out) = ticked(&[(b"a", true), (b"b", false)]);
        assert!(t.roll_back(&mut out, |o| {
            o.push(b'E');
            false
        }));
        assert_eq!(out, b"oldE");
    }

    #[test]
    fn a_tick_without_storage_is_left_alone() {
        let (mut t, mut out) = ticked(&[(b"a", false)]);
        assert!(!t.roll_back(&mut out, |_| true));
        assert_eq!(out, b"olda");
        let mut idle = TickReplies::default();
        assert!(!idle.roll_back(&mut out, |_| true));
    }
}
