//! The envelope parser on malformed input, and tampering with any byte of a real envelope.

use strata_kms::envelope::{Envelope, EnvelopeError, MAX_ENVELOPE_LEN};
use strata_kms::{DataKey, ErrorCode};

use crate::common::*;

fn header(id: &str, version: u32) -> Vec<u8> {
    let mut b = vec![1u8];
    b.extend_from_slice(&(id.len() as u16).to_be_bytes());
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(&version.to_be_bytes());
    b
}

fn check(bytes: &[u8], expect: Result<(), EnvelopeError>) {
    let got = Envelope::from_bytes(bytes).map(|e| {
        assert_eq!(e.to_bytes(), bytes, "canonical: re-encodes to the input");
    });
    assert_eq!(got, expect, "input {bytes:02x?}");
}

#[test]
fn parser_rejects_malformed_input() {
    let ok = [header("k", 1), vec![0; 12], vec![0; 16]].concat();
    check(&ok, Ok(()));
    check(&[header("k", 1), vec![0; 12], vec![7; 48]].concat(), Ok(()));
    check(&[], Err(EnvelopeError::Empty));
    check(&[2], Err(EnvelopeError::UnsupportedFormat(2)));
    check(&[0, 0, 1, b'k'], Err(EnvelopeError::UnsupportedFormat(0)));
    check(&[1], Err(EnvelopeError::Truncated("key id length")));
    check(&[1, 0], Err(EnvelopeError::Truncated("key id length")));
    check(&[1, 0, 0], Err(EnvelopeError::KeyIdLength(0)));
    check(&[1, 0x04, 0x01], Err(EnvelopeError::KeyIdLength(1025)));
    check(&[1, 0, 2, b'k'], Err(EnvelopeError::Truncated("key id")));
    check(
        &[1, 0, 1, 0xff, 0, 0, 0, 1],
        Err(EnvelopeError::KeyIdNotUtf8),
    );
    check(
        &[1, 0, 1, b'k', 0, 0, 0],
        Err(EnvelopeError::Truncated("key version")),
    );
    check(&header("k", 0), Err(EnvelopeError::ZeroVersion));
    check(
        &[header("k", 1), vec![0; 11]].concat(),
        Err(EnvelopeError::Truncated("nonce")),
    );
    check(
        &[header("k", 1), vec![0; 12], vec![0; 15]].concat(),
        Err(EnvelopeError::Truncated("authentication tag")),
    );
    let huge = [header("k", 1), vec![0; MAX_ENVELOPE_LEN]].concat();
    assert_eq!(
        Envelope::from_bytes(&huge),
        Err(EnvelopeError::TooLarge(huge.len()))
    );
    assert_eq!(Envelope::decode("not base64!"), Err(EnvelopeError::Base64));
}

#[test]
fn storage_form_is_base64_in_json() {
    let root = root();
    let pmk = pmk(&root);
    let (dek, env) = pmk.create_data_key(DISK_A).unwrap();
    let json = serde_json::to_string(&env).unwrap();
    assert_eq!(json, format!("\"{}\"", env.encode()));
    let back: Envelope = serde_json::from_str(&json).unwrap();
    assert_eq!(back, env);
    assert_eq!(back.key(), pmk.key_ref());
    let opened = pmk.unwrap_data_key(DISK_A, &back).unwrap();
    assert_eq!(opened.expose_secret(), dek.expose_secret());
    assert!(serde_json::from_str::<Envelope>("\"AAAA\"").is_err());
    // Debug shows the key reference, not the ciphertext.
    let debug = format!("{env:?}");
    assert!(debug.contains("platformKey"), "{debug}");
    assert!(!debug.contains(&env.encode()), "{debug}");
}

/// Flipping any bit of any byte of a stored DEK envelope: it either no longer parses, names
/// another key, or fails authentication. Never opens.
#[test]
fn tampering_with_any_byte_is_detected() {
    let root = root();
    let pmk = pmk(&root);
    let (_, env) = pmk.create_data_key(DISK_A).unwrap();
    let bytes = env.to_bytes();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut t = bytes.clone();
            t[i] ^= bit;
            let code = match Envelope::from_bytes(&t) {
                Err(_) => ErrorCode::MalformedEnvelope,
                Ok(e) => match pmk.unwrap_data_key(DISK_A, &e) {
                    Ok(_) => panic!("byte {i} bit {bit:#x} flipped and the envelope still opened"),
                    Err(e) => e.code(),
                },
            };
            seen.insert(code);
        }
    }
    // Header edits are caught by the parser or the key check; body edits by GCM.
    let seen: Vec<_> = seen.into_iter().collect();
    assert_eq!(
        seen,
        [
            ErrorCode::WrongKey,
            ErrorCode::MalformedEnvelope,
            ErrorCode::AuthenticationFailed
        ]
    );
    // Truncation and extension too.
    for cut in 0..bytes.len() {
        if let Ok(e) = Envelope::from_bytes(&bytes[..cut]) {
            assert!(pmk.unwrap_data_key(DISK_A, &e).is_err());
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    let e = Envelope::from_bytes(&longer).unwrap();
    assert_eq!(
        pmk.unwrap_data_key(DISK_A, &e).unwrap_err().code(),
        ErrorCode::AuthenticationFailed
    );
    // A DataKey is never built from a failed open.
    let _: Option<DataKey> = None;
}
