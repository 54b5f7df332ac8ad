//! Glob patterns as Redis matches them (`stringmatchlen`): `*`, `?`, `[abc]`,
//! `[^a-z]`, and `\` to escape. Used by `USERS MATCH`, `CONFIG GET` and, later,
//! pattern subscriptions.

/// True when `text` matches `pattern`.
///
/// Iterative, with one backtrack point (the last `*`): every other token consumes
/// exactly one byte, so retrying from the last star is enough, and hostile patterns
/// such as `*a*a*a...b` cost O(pattern x text), never exponential time.
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < text.len() {
        if pattern.get(pi) == Some(&b'*') {
            pi += 1;
            star = Some((pi, si));
            continue;
        }
        if let Some(next) = token_matches(pattern, pi, text[si]) {
            pi = next;
            si += 1;
            continue;
        }
        match star {
            Some((sp, ss)) => {
                pi = sp;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    while pattern.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi == pattern.len()
}

/// When the single-byte token at `pattern[pi]` matches `c`, the index after it.
fn token_matches(pattern: &[u8], pi: usize, c: u8) -> Option<usize> {
    match *pattern.get(pi)? {
        b'?' => Some(pi + 1),
        b'[' => {
            let mut p = pi + 1;
            let not = pattern.get(p) == Some(&b'^');
            if not {
                p += 1;
            }
            let mut hit = false;
            loop {
                match &pattern[p.min(pattern.len())..] {
                    // An unterminated class runs to the end of the pattern, as in Redis.
                    [] => break,
                    [b']', ..] => {
                        p += 1;
                        break;
                    }
                    [b'\\', e, ..] => {
                        hit |= *e == c;
                        p += 2;
                    }
                    [a, b'-', b, ..] if *b != b']' => {
                        let (lo, hi) = if a <= b { (*a, *b) } else { (*b, *a) };
                        hit |= lo <= c && c <= hi;
                        p += 3;
                    }
                    [a, ..] => {
                        hit |= *a == c;
                        p += 1;
                    }
                }
            }
            (hit != not).then_some(p)
        }
        b'\\' if pi + 1 < pattern.len() => (pattern[pi + 1] == c).then_some(pi + 2),
        lit => (lit == c).then_some(pi + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_like_redis() {
        let yes = [
            ("*", ""),
            ("*", "alice"),
            ("a*", "alice"),
            ("*ce", "alice"),
            ("a?ice", "alice"),
            ("[ab]lice", "blice"),
            ("[^x]lice", "alice"),
            ("[a-c]*", "bob"),
            ("user.*", "user.registered"),
            ("a\\*", "a*"),
            ("**b", "ab"),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        let no = [
            ("a*", "bob"),
            ("a?", "a"),
            ("[^a]lice", "alice"),
            ("a\\*", "ab"),
            ("user.*", "users"),
            ("", "a"),
        ];
        for (p, s) in no {
            assert!(!matches(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
    }

    #[test]
    fn hostile_patterns_finish() {
        let p = "*a".repeat(40) + "b";
        assert!(!matches(p.as_bytes(), "a".repeat(60).as_bytes()));
    }
}
