//! RFC 6238 time-based one-time passwords: HMAC-SHA1, 30-second steps, 6 digits.
//!
//! This is the profile every authenticator app supports. Secrets are 20 random
//! bytes, shown to users as unpadded RFC 4648 base32 inside an `otpauth://` URI.

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Seconds per time step.
pub const STEP_SECONDS: i64 = 30;
/// Number of digits in a code.
pub const DIGITS: usize = 6;
/// Length of generated secrets, in bytes.
pub const SECRET_BYTES: usize = 20;
/// Largest window (in steps either side of now) that [`verify`] honours;
/// larger requests are clamped to it.
pub const MAX_WINDOW_STEPS: u64 = 10;

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Errors from TOTP operations. Messages never contain secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TotpError {
    #[error("system random number generator failed")]
    Rng,
    #[error("invalid base32: use RFC 4648 characters A-Z and 2-7")]
    InvalidBase32,
}

/// Generates a new 20-byte TOTP secret.
pub fn generate_secret() -> Result<Vec<u8>, TotpError> {
    let mut secret = vec![0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| TotpError::Rng)?;
    Ok(secret)
}

/// Encodes bytes as RFC 4648 base32, uppercase, without padding.
pub fn to_base32(secret: &[u8]) -> String {
    let mut out = String::with_capacity(secret.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for &byte in secret {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[((buffer >> bits) & 0x1f) as usize],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[((buffer << (5 - bits)) & 0x1f) as usize],
        ));
    }
    out
}

/// Decodes RFC 4648 base32, case-insensitively. Trailing `=` padding is
/// tolerated; any other character, an impossible length, or non-zero unused
/// trailing bits are rejected.
pub fn from_base32(s: &str) -> Result<Vec<u8>, TotpError> {
    let s = s.trim_end_matches('=');
    // Lengths whose last group cannot encode whole bytes.
    if matches!(s.len() % 8, 1 | 3 | 6) {
        return Err(TotpError::InvalidBase32);
    }
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits: u32 = 0;
    for c in s.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return Err(TotpError::InvalidBase32),
        };
        buffer = (buffer << 5) | u32::from(value);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
        buffer &= (1 << bits) - 1;
    }
    if buffer != 0 {
        return Err(TotpError::InvalidBase32);
    }
    Ok(out)
}

/// The time step for a Unix time (times before the epoch map to step 0).
fn step_at(unix_time: i64) -> u64 {
    u64::try_from(unix_time.max(0) / STEP_SECONDS).unwrap_or(0)
}

fn code_for_step(key: &hmac::Key, step: u64) -> [u8; DIGITS] {
    let tag = hmac::sign(key, &step.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    let mut value = binary % 1_000_000;
    let mut digits = [b'0'; DIGITS];
    for d in digits.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
    digits
}

fn key(secret: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret)
}

/// The 6-digit code for `secret` at `unix_time`.
pub fn code(secret: &[u8], unix_time: i64) -> String {
    let digits = code_for_step(&key(secret), step_at(unix_time));
    digits.iter().map(|&d| char::from(d)).collect()
}

/// Verifies `code` against the steps within `window_steps` (clamped to
/// [`MAX_WINDOW_STEPS`]) either side of `unix_time`.
///
/// Returns the matched time step. The caller must store it and reject any
/// later code whose step is not greater, to block replay. Every candidate is
/// compared in constant time, and all candidates are always computed.
pub fn verify(secret: &[u8], code: &str, unix_time: i64, window_steps: u64) -> Option<u64> {
    let code = code.as_bytes();
    if code.len() != DIGITS || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let window = window_steps.min(MAX_WINDOW_STEPS);
    let now = step_at(unix_time);
    let key = key(secret);
    let mut matched = None;
    for step in now.saturating_sub(window)..=now.saturating_add(window) {
        let expected = code_for_step(&key, step);
        if crate::secret::constant_time_eq(&expected, code) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// An `otpauth://totp/…` provisioning URI for authenticator apps (QR codes).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let issuer_enc = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer_enc}:{account}?secret={secret}&issuer={issuer_enc}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        account = percent_encode(account),
        secret = to_base32(secret),
    )
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "MY"),
            (b"fo", "MZXQ"),
            (b"foo", "MZXW6"),
            (b"foob", "MZXW6YQ"),
            (b"fooba", "MZXW6YTB"),
            (b"foobar", "MZXW6YTBOI"),
        ];
        for (raw, enc) in cases {
            assert_eq!(to_base32(raw), enc);
            assert_eq!(from_base32(enc).unwrap(), raw);
            assert_eq!(from_base32(&enc.to_lowercase()).unwrap(), raw);
        }
        assert_eq!(from_base32("MZXW6YQ=").unwrap(), b"foob");
    }

    #[test]
    fn base32_rejects_bad_input() {
        assert_eq!(from_base32("M"), Err(TotpError::InvalidBase32));
        assert_eq!(from_base32("MZ1"), Err(TotpError::InvalidBase32));
        assert_eq!(from_base32("MZ"), Err(TotpError::InvalidBase32)); // non-zero trailing bits
        assert_eq!(from_base32("MZ XW"), Err(TotpError::InvalidBase32));
    }

    #[test]
    fn uri_is_encoded() {
        let uri = otpauth_uri("Strata Cloud", "alice@example.com", b"12345678901234567890");
        assert_eq!(
            uri,
            "otpauth://totp/Strata%20Cloud:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Strata%20Cloud&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn negative_time_does_not_panic() {
        assert_eq!(code(b"k", -1), code(b"k", 0));
        assert_eq!(verify(b"k", &code(b"k", 0), i64::MIN, u64::MAX), Some(0));
    }
}
