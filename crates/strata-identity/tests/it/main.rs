//! Integration tests for `strata-identity`, one binary with a module per area.

// clippy.toml's allow-*-in-tests covers only `#[test]` fns; the shared
// helpers in this test-only crate may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod assertion;
mod fuzz;
mod jwt;
mod password;
mod secret;
mod totp;
mod x509;

use base64::Engine as _;

/// Decodes the first PEM block of `label` in a fixture file to DER.
pub fn fixture_der(name: &str, label: &str) -> Vec<u8> {
    let pem = fixture(name);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).unwrap() + begin.len();
    let stop = pem.find(&end).unwrap();
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Reads a fixture file as text.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/tests/it/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap()
}

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Builds a compact JWS from JSON header and payload, signing with `sign`.
pub fn make_jws(
    header: &serde_json::Value,
    payload: &serde_json::Value,
    sign: impl FnOnce(&[u8]) -> Vec<u8>,
) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(payload.to_string().as_bytes())
    );
    let sig = sign(input.as_bytes());
    format!("{input}.{}", b64url(&sig))
}
