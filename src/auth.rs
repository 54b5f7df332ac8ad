//! Authentication: the one shared secret (`--requirepass`), compared in constant
//! time so that response timing says nothing about how much of a guess was right.

/// True when `given` equals `expected`. Takes the same time for every `given` of a
/// given length, and does not stop at the first differing byte; the length itself
/// is not secret (Redis makes the same choice).
pub fn password_matches(given: &[u8], expected: &str) -> bool {
    let expected = expected.as_bytes();
    let mut diff = given.len() ^ expected.len();
    for (i, &g) in given.iter().enumerate() {
        // Compare against the expected byte, or against itself past its end, so
        // every byte of the guess costs the same work.
        let e = expected.get(i).copied().unwrap_or(!g);
        diff |= usize::from(g ^ e);
    }
    diff == 0
}

/// Fills `buf` from the system's secure random generator (ring's, which reads
/// the kernel's `getrandom`): stream tokens and webhook secrets.
pub fn random_fill(buf: &mut [u8]) -> std::io::Result<()> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| std::io::Error::other("the system's random generator failed"))
}

/// Redis's reply to a command that needs authentication.
pub const NOAUTH: &str = "NOAUTH Authentication required.";
/// Redis's reply to a wrong secret.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

#[cfg(test)]
mod tests {
    use super::password_matches;

    #[test]
    fn matches_only_the_exact_secret() {
        assert!(password_matches(b"s3cret", "s3cret"));
        assert!(!password_matches(b"s3cre", "s3cret"));
        assert!(!password_matches(b"s3crett", "s3cret"));
        assert!(!password_matches(b"S3cret", "s3cret"));
        assert!(!password_matches(b"", "s3cret"));
        assert!(password_matches(b"", ""));
    }
}
