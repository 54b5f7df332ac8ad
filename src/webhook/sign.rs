//! Standard Webhooks signing: secrets written `whsec_` + base64 of their bytes,
//! and the `webhook-signature` header, `v1,` + base64 of HMAC-SHA256 over
//! `{id}.{timestamp}.{body}` keyed with the secret's decoded bytes. Base64 is
//! the standard alphabet with padding, as the specification's libraries write it.

use ring::hmac;

/// What a secret's text starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Fewest bytes a secret may hold (the specification's minimum).
pub const MIN_SECRET_BYTES: usize = 24;
/// Most bytes a secret may hold.
pub const MAX_SECRET_BYTES: usize = 64;
/// Bytes of a generated secret.
pub const GENERATED_SECRET_BYTES: usize = 32;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A webhook secret: the key bytes of the HMAC.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Reads `whsec_<base64>`; the error says what is wrong, for
    /// `-ERR invalid secret: ...`.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let Some(b64) = text.strip_prefix(SECRET_PREFIX) else {
            return Err(format!("must start with '{SECRET_PREFIX}'"));
        };
        let bytes = decode(b64).ok_or("the part after 'whsec_' must be base64")?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(format!(
                "must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes, not {}",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// A new secret of `GENERATED_SECRET_BYTES` random bytes.
    pub fn generate() -> Result<Secret, String> {
        let mut bytes = vec![0; GENERATED_SECRET_BYTES];
        crate::auth::random_fill(&mut bytes).map_err(|e| e.to_string())?;
        Ok(Secret(bytes))
    }

    /// The secret as written: `whsec_` + base64.
    pub fn text(&self) -> String {
        format!("{SECRET_PREFIX}{}", encode(&self.0))
    }

    /// The `webhook-signature` header's value for one attempt:
    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(itoa::Buffer::new().format(timestamp).as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", encode(ctx.sign().as_ref()))
    }
}

/// A random number in `0..1`, for retry jitter; 0.5 when the system's
/// generator fails (no jitter then).
pub fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    match crate::auth::random_fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

/// Base64 (standard alphabet, padded).
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64 (standard alphabet; padding required for a partial last
/// group, as `encode` writes it); `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let t = text.as_bytes();
    if !t.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() / 4 * 3);
    let groups = t.len() / 4;
    for (g, quad) in t.chunks(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && g + 1 != groups) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            let v = ALPHABET.iter().position(|&a| a == c)?;
            n = n << 6 | v as u32;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_signs_the_same() {
        // The specification's published vector (its reference libraries test it).
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn base64_round_trips_every_length() {
        for n in 0..70u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            assert_eq!(decode(&encode(&bytes)), Some(bytes));
        }
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"f"), "Zg==");
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9v!mFy", "Zm-v"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets_are_checked_and_generated_ones_read_back() {
        let made = Secret::generate().expect("random");
        let text = made.text();
        assert!(text.starts_with("whsec_") && text.len() > 6 + 40, "{text}");
        assert_eq!(Secret::parse(&text), Ok(made.clone()));
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_not base64").is_err());
        // 18 bytes: too short.
        assert!(Secret::parse(&format!("whsec_{}", encode(&[1; 18]))).is_err());
        assert!(Secret::parse(&format!("whsec_{}", encode(&[1; 65]))).is_err());
        assert!(Secret::parse(&format!("whsec_{}", encode(&[1; 64]))).is_ok());
        assert_eq!(format!("{made:?}"), "Secret(***)");
    }

    #[test]
    fn random_unit_stays_in_range() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r), "{r}");
        }
    }
}
