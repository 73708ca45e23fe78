//! TOTP (RFC 6238).

use proptest::prelude::*;
use strata_identity::totp;

const RFC_SECRET: &[u8] = b"12345678901234567890";

#[test]
fn rfc6238_sha1_vectors() {
    let vectors = [
        (59, "287082"),
        (1_111_111_109, "081804"),
        (1_111_111_111, "050471"),
        (1_234_567_890, "005924"),
        (2_000_000_000, "279037"),
        (20_000_000_000, "353130"),
    ];
    for (t, expected) in vectors {
        assert_eq!(totp::code(RFC_SECRET, t), expected, "t={t}");
        assert_eq!(
            totp::verify(RFC_SECRET, expected, t, 0),
            Some((t / 30) as u64),
            "t={t}"
        );
    }
}

#[test]
fn window_behaviour() {
    let secret = RFC_SECRET;
    let t = 1_111_111_111;
    let step = (t / 30) as u64;
    let now = totp::code(secret, t);
    let prev = totp::code(secret, t - 30);
    let next = totp::code(secret, t + 30);
    let two_back = totp::code(secret, t - 60);
    let mut all = vec![&now, &prev, &next, &two_back];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "fixture codes must be distinct");

    assert_eq!(totp::verify(secret, &now, t, 0), Some(step));
    assert_eq!(totp::verify(secret, &prev, t, 0), None);
    assert_eq!(totp::verify(secret, &prev, t, 1), Some(step - 1));
    assert_eq!(totp::verify(secret, &next, t, 1), Some(step + 1));
    assert_eq!(totp::verify(secret, &two_back, t, 1), None);
    assert_eq!(totp::verify(secret, &two_back, t, 2), Some(step - 2));
    // Any time inside the same step matches the same step.
    assert_eq!(totp::verify(secret, &now, step as i64 * 30, 0), Some(step));
    assert_eq!(
        totp::verify(secret, &now, step as i64 * 30 + 29, 0),
        Some(step)
    );
    // Huge windows are clamped rather than looping for ever.
    assert_eq!(totp::verify(secret, &now, t, u64::MAX), Some(step));
    // Wrong secret and malformed codes.
    assert_eq!(totp::verify(b"another secret value", &now, t, 0), None);
    for bad in ["", "12345", "1234567", "12345a", " 12345", "\u{ff11}23456"] {
        assert_eq!(totp::verify(secret, bad, t, 1), None, "{bad}");
    }
}

#[test]
fn generated_secret_shape() {
    let a = totp::generate_secret().unwrap();
    assert_eq!(a.len(), 20);
    assert_ne!(a, totp::generate_secret().unwrap());
}

#[test]
fn otpauth_uri_round_trips_secret() {
    let secret = totp::generate_secret().unwrap();
    let uri = totp::otpauth_uri("Strata", "alice", &secret);
    assert!(uri.starts_with("otpauth://totp/Strata:alice?secret="));
    let b32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert_eq!(totp::from_base32(b32).unwrap(), secret);
    assert_eq!(b32.len(), 32);
}

proptest! {
    #[test]
    fn base32_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let enc = totp::to_base32(&bytes);
        prop_assert!(!enc.contains('='));
        prop_assert_eq!(totp::from_base32(&enc).unwrap(), bytes.clone());
        prop_assert_eq!(totp::from_base32(&enc.to_lowercase()).unwrap(), bytes);
    }

    #[test]
    fn code_is_six_digits(secret in proptest::collection::vec(any::<u8>(), 0..40), t in any::<i64>()) {
        let c = totp::code(&secret, t);
        prop_assert_eq!(c.len(), 6);
        prop_assert!(c.bytes().all(|b| b.is_ascii_digit()));
        prop_assert!(totp::verify(&secret, &c, t, 0).is_some());
    }
}
