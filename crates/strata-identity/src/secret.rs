//! High-entropy client secrets and random tokens.
//!
//! Client secrets carry 256 bits of entropy, so a single SHA-256 is the right
//! stored hash for them (argon2 would add cost without adding security).

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// Prefix of every generated client secret (helps secret scanners).
pub const SECRET_PREFIX: &str = "stsec_";
/// Prefix of every stored secret hash.
pub const HASH_PREFIX: &str = "sha256:";
/// Largest number of random bytes [`random_token`] produces.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Errors from secret generation. Messages never contain secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("system random number generator failed")]
    Rng,
    #[error("random token length must be between 1 and {MAX_TOKEN_BYTES} bytes")]
    InvalidLength,
}

fn random_bytes(n: usize) -> Result<Vec<u8>, SecretError> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| SecretError::Rng)?;
    Ok(buf)
}

/// Generates a client secret: `stsec_` followed by 43 base64url characters
/// (32 random bytes).
pub fn generate() -> Result<String, SecretError> {
    let bytes = random_bytes(32)?;
    Ok(format!("{SECRET_PREFIX}{}", crate::b64::encode(&bytes)))
}

/// The stored form of a secret: `sha256:` + base64url(SHA-256(secret)).
pub fn hash(secret: &str) -> String {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    format!("{HASH_PREFIX}{}", crate::b64::encode(d.as_ref()))
}

/// Verifies a presented secret against its stored hash in constant time.
pub fn verify(secret: &str, stored: &str) -> bool {
    constant_time_eq(hash(secret).as_bytes(), stored.as_bytes())
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A base64url (unpadded) string of `bytes` random bytes, for nonces, `jti`
/// values and join tokens. `bytes` must be in `1..=1024`.
pub fn random_token(bytes: usize) -> Result<String, SecretError> {
    if bytes == 0 || bytes > MAX_TOKEN_BYTES {
        return Err(SecretError::InvalidLength);
    }
    Ok(crate::b64::encode(&random_bytes(bytes)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_shape() {
        let s = generate().unwrap();
        assert!(s.starts_with(SECRET_PREFIX));
        assert_eq!(s.len(), SECRET_PREFIX.len() + 43);
        assert_ne!(s, generate().unwrap());
    }

    #[test]
    fn hash_and_verify() {
        let s = generate().unwrap();
        let h = hash(&s);
        assert!(h.starts_with(HASH_PREFIX));
        assert_eq!(h.len(), HASH_PREFIX.len() + 43);
        assert!(verify(&s, &h));
        assert!(!verify("stsec_wrong", &h));
        assert!(!verify(&s, "sha256:"));
        // Known vector: SHA-256("abc").
        assert_eq!(
            hash("abc"),
            "sha256:ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn random_tokens() {
        assert_eq!(random_token(16).unwrap().len(), 22);
        assert_eq!(random_token(0), Err(SecretError::InvalidLength));
        assert_eq!(
            random_token(MAX_TOKEN_BYTES + 1),
            Err(SecretError::InvalidLength)
        );
        assert!(random_token(MAX_TOKEN_BYTES).is_ok());
    }
}
