//! Following the event stream: an `XREAD ... BLOCK` or `XREADGROUP ... BLOCK ...
//! STREAMS ... >` that the line client repeats until Ctrl-C, like `tail -f`.
//!
//! XREAD is re-sent with each stream's id moved to the last entry it returned, so
//! an entry committed while the previous reply was being printed is not skipped (a
//! `$` would skip it). XREADGROUP with `>` already means "what this consumer has
//! not seen" and is re-sent as it is. A read that timed out (nil) is re-sent
//! silently.

use std::ops::Range;

use super::reply::Value;

/// A blocking stream read to repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    argv: Vec<Vec<u8>>,
    /// Where the stream keys are in `argv`; their ids follow them in the same order.
    keys: Range<usize>,
    group: bool,
}

impl Follow {
    /// The follow for `argv` when it is a blocking stream read that can be
    /// repeated: `XREAD [COUNT n] BLOCK ms STREAMS key... id...`, or XREADGROUP
    /// with BLOCK whose ids are all `>`. Anything else is an ordinary command.
    pub fn detect(argv: &[Vec<u8>]) -> Option<Follow> {
        let name = argv.first()?;
        let group = if name.eq_ignore_ascii_case(b"xreadgroup") {
            true
        } else if name.eq_ignore_ascii_case(b"xread") {
            false
        } else {
            return None;
        };
        let mut block = false;
        let mut i = 1;
        loop {
            let opt = argv.get(i)?;
            if opt.eq_ignore_ascii_case(b"streams") {
                break;
            } else if opt.eq_ignore_ascii_case(b"block") {
                block = true;
                i += 2;
            } else if opt.eq_ignore_ascii_case(b"count") {
                i += 2;
            } else if group && opt.eq_ignore_ascii_case(b"group") {
                i += 3;
            } else if group && opt.eq_ignore_ascii_case(b"noack") {
                i += 1;
            } else {
                return None;
            }
        }
        let rest = argv.len() - (i + 1);
        if !block || rest == 0 || !rest.is_multiple_of(2) {
            return None;
        }
        let keys = i + 1..i + 1 + rest / 2;
        if group && !argv[keys.end..].iter().all(|id| id == b">") {
            // Re-reading a consumer's pending history would print it forever.
            return None;
        }
        Some(Follow {
            argv: argv.to_vec(),
            keys,
            group,
        })
    }

    /// The request to send next.
    pub fn request(&self) -> &[Vec<u8>] {
        &self.argv
    }

    /// Moves each stream's id to the last entry `reply` returned for it.
    pub fn advance(&mut self, reply: &Value) {
        if self.group {
            return;
        }
        // RESP2: [[key, entries], ...]; RESP3: {key: entries, ...}.
        let streams: Vec<(&Value, &Value)> = match reply {
            Value::Array(items) => items
                .iter()
                .filter_map(|s| match s {
                    Value::Array(pair) => match pair.as_slice() {
                        [key, entries] => Some((key, entries)),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            _ => return,
        };
        for (key, entries) in streams {
            let (Some(key), Some(id)) = (text(key), last_id(entries)) else {
                continue;
            };
            let ids_at = self.keys.end - self.keys.start;
            if let Some(pos) = self.argv[self.keys.clone()].iter().position(|k| k == key) {
                self.argv[self.keys.start + pos + ids_at] = id.to_vec();
            }
        }
    }
}

fn last_id(entries: &Value) -> Option<&[u8]> {
    let Value::Array(entries) = entries else {
        return None;
    };
    match entries.last()? {
        Value::Array(entry) => text(entry.first()?),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bulk(b) | Value::Status(b) | Value::Verbatim(b) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<Vec<u8>> {
        line.split(' ').map(|s| s.as_bytes().to_vec()).collect()
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    fn entry(id: &str) -> Value {
        Value::Array(vec![bulk(id), Value::Array(vec![bulk("kind"), bulk("x")])])
    }

    #[test]
    fn only_blocking_reads_are_followed() {
        assert!(Follow::detect(&argv("XREAD BLOCK 0 STREAMS events $")).is_some());
        assert!(Follow::detect(&argv("xread count 5 block 100 streams events 0")).is_some());
        assert!(Follow::detect(&argv("XREAD STREAMS events 0")).is_none());
        assert!(Follow::detect(&argv("XREAD BLOCK 0 STREAMS events")).is_none());
        assert!(Follow::detect(&argv("XREAD BLOCK 0 STREAMS")).is_none());
        assert!(Follow::detect(&argv("XRANGE events - +")).is_none());
        assert!(
            Follow::detect(&argv("XREADGROUP GROUP g c NOACK BLOCK 0 STREAMS events >")).is_some()
        );
        assert!(Follow::detect(&argv("XREADGROUP GROUP g c BLOCK 0 STREAMS events 0")).is_none());
        assert!(Follow::detect(&argv("XREADGROUP BLOCK 0 STREAMS events >")).is_some());
    }

    #[test]
    fn xread_resumes_after_the_last_entry_in_resp2_and_resp3() {
        let mut f = Follow::detect(&argv("XREAD BLOCK 0 STREAMS events other $ 0")).unwrap();
        f.advance(&Value::Array(vec![Value::Array(vec![
            bulk("events"),
            Value::Array(vec![entry("3-0"), entry("4-0")]),
        ])]));
        assert_eq!(
            f.request(),
            argv("XREAD BLOCK 0 STREAMS events other 4-0 0")
        );
        f.advance(&Value::Map(vec![(
            bulk("other"),
            Value::Array(vec![entry("9-0")]),
        )]));
        assert_eq!(
            f.request(),
            argv("XREAD BLOCK 0 STREAMS events other 4-0 9-0")
        );
        f.advance(&Value::Nil);
        assert_eq!(
            f.request(),
            argv("XREAD BLOCK 0 STREAMS events other 4-0 9-0")
        );
    }

    #[test]
    fn xreadgroup_is_resent_unchanged() {
        let line = "XREADGROUP GROUP g c BLOCK 0 STREAMS events >";
        let mut f = Follow::detect(&argv(line)).unwrap();
        f.advance(&Value::Array(vec![Value::Array(vec![
            bulk("events"),
            Value::Array(vec![entry("3-0")]),
        ])]));
        assert_eq!(f.request(), argv(line));
    }
}
