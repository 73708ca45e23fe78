//! Property tests: parsers and verifiers never panic on arbitrary input.

use proptest::prelude::*;
use strata_identity::assertion::{
    parse_certificate_der, parse_certificate_pem, verify_client_assertion,
};
use strata_identity::jwt::{Jwks, SigningKey, Verifier};
use strata_identity::totp;

use crate::fixture_der;

fn verifier() -> Verifier {
    let (key, _) = SigningKey::generate("k".into()).unwrap();
    Verifier::new(
        "iss".into(),
        "aud".into(),
        &Jwks {
            keys: vec![key.public_jwk()],
        },
    )
    .unwrap()
}

/// Tokens built from JWS-ish pieces, so that more inputs get past the splitter.
fn jwsish() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        "[A-Za-z0-9_-]{0,120}",
        Just("eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ".to_owned()), // {"alg":"ES256","kid":"k"}
        Just("eyJhbGciOiJub25lIn0".to_owned()),                // {"alg":"none"}
    ];
    (part.clone(), part.clone(), part).prop_map(|(a, b, c)| format!("{a}.{b}.{c}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn verifier_never_panics(s in any::<String>(), t in jwsish(), now in any::<i64>()) {
        let v = verifier();
        let _ = v.verify(&s, now);
        let _ = v.verify(&t, now);
    }

    #[test]
    fn certificate_der_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_certificate_der(&bytes);
        let mut framed = vec![0x30, 0x82, (bytes.len() >> 8) as u8, bytes.len() as u8];
        framed.extend_from_slice(&bytes);
        let _ = parse_certificate_der(&framed);
    }

    #[test]
    fn mutated_certificate_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut der = fixture_der("rsa-2048.cert.pem", "CERTIFICATE");
        for (i, b) in edits {
            let i = i.index(der.len());
            der[i] = b;
        }
        let _ = parse_certificate_der(&der);
        let keep = cut.index(der.len());
        let _ = parse_certificate_der(&der[..keep]);
    }

    #[test]
    fn certificate_pem_never_panics(s in any::<String>()) {
        let _ = parse_certificate_pem(&s);
        let _ = parse_certificate_pem(&format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----"));
    }

    #[test]
    fn client_assertion_never_panics(t in jwsish(), s in any::<String>(), now in any::<i64>()) {
        let key = parse_certificate_der(&fixture_der("ec-p256.cert.pem", "CERTIFICATE")).unwrap();
        let _ = verify_client_assertion(&t, &key, "c", "a", now);
        let _ = verify_client_assertion(&s, &key, "c", "a", now);
    }

    #[test]
    fn from_base32_never_panics(s in any::<String>(), b in "[A-Za-z2-7=]{0,40}") {
        let _ = totp::from_base32(&s);
        if let Ok(bytes) = totp::from_base32(&b) {
            prop_assert_eq!(totp::to_base32(&bytes), b.trim_end_matches('=').to_uppercase());
        }
    }
}
