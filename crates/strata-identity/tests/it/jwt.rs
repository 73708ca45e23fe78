//! ES256 access tokens and JWKS.

use serde_json::json;
use strata_identity::jwt::{Claims, Jwks, SigningKey, TokenError, Verifier};

use crate::{b64url, fixture, fixture_der, make_jws};

const ISS: &str = "https://login.strata.test/tenant-1/v2.0";
const AUD: &str = "https://management.strata.test";
const NOW: i64 = 1_750_000_000;

fn claims(now: i64) -> Claims {
    Claims {
        iss: ISS.into(),
        sub: "prn-1234".into(),
        aud: AUD.into(),
        exp: now + 3600,
        nbf: now,
        iat: now,
        jti: "jti-1".into(),
        tid: "tenant-1".into(),
        ptype: "user".into(),
        name: "Alice Example".into(),
        amr: vec!["pwd".into(), "mfa".into()],
    }
}

fn setup() -> (SigningKey, Verifier) {
    let (key, _) = SigningKey::generate("key-1".into()).unwrap();
    let jwks = Jwks {
        keys: vec![key.public_jwk()],
    };
    let verifier = Verifier::new(ISS.into(), AUD.into(), &jwks).unwrap();
    (key, verifier)
}

/// Replaces one base64url part of a token with `f(decoded)`.
fn edit_part(token: &str, index: usize, f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut bytes = base64_decode(&parts[index]);
    f(&mut bytes);
    parts[index] = b64url(&bytes);
    parts.join(".")
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

#[test]
fn sign_then_verify() {
    let (key, verifier) = setup();
    let c = claims(NOW);
    let token = key.sign(&c).unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&base64_decode(token.split('.').next().unwrap())).unwrap();
    assert_eq!(
        header,
        json!({"alg": "ES256", "typ": "JWT", "kid": "key-1"})
    );
    assert_eq!(verifier.verify(&token, NOW).unwrap(), c);
    // Within leeway at both ends.
    assert_eq!(verifier.verify(&token, NOW - 30).unwrap(), c);
    assert_eq!(verifier.verify(&token, NOW + 3600 + 29).unwrap(), c);
}

#[test]
fn amr_defaults_to_empty() {
    let (key, pkcs8) = SigningKey::generate("k".into()).unwrap();
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let mut payload = serde_json::to_value(claims(NOW)).unwrap();
    payload.as_object_mut().unwrap().remove("amr");
    let token = make_jws(&json!({"alg": "ES256", "kid": "k"}), &payload, |m| {
        signer
            .sign(&ring::rand::SystemRandom::new(), m)
            .unwrap()
            .as_ref()
            .to_vec()
    });
    let v = Verifier::new(
        ISS.into(),
        AUD.into(),
        &Jwks {
            keys: vec![key.public_jwk()],
        },
    )
    .unwrap();
    assert!(v.verify(&token, NOW).unwrap().amr.is_empty());
}

#[test]
fn time_checks() {
    let (key, verifier) = setup();
    let token = key.sign(&claims(NOW)).unwrap();
    assert_eq!(
        verifier.verify(&token, NOW + 3600 + 30),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verifier.verify(&token, NOW + 100_000),
        Err(TokenError::Expired)
    );
    assert_eq!(
        verifier.verify(&token, NOW - 31),
        Err(TokenError::NotYetValid)
    );
    let mut future = claims(NOW);
    future.nbf = NOW + 600;
    let token = key.sign(&future).unwrap();
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::NotYetValid));
    assert!(verifier.verify(&token, NOW + 600).is_ok());
}

#[test]
fn issuer_and_audience_checks() {
    let (key, verifier) = setup();
    let mut c = claims(NOW);
    c.iss = "https://evil.example".into();
    assert_eq!(
        verifier.verify(&key.sign(&c).unwrap(), NOW),
        Err(TokenError::WrongIssuer)
    );
    let mut c = claims(NOW);
    c.aud = "https://other.strata.test".into();
    assert_eq!(
        verifier.verify(&key.sign(&c).unwrap(), NOW),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn tampering_rejected() {
    let (key, verifier) = setup();
    let token = key.sign(&claims(NOW)).unwrap();

    let payload_tampered = edit_part(&token, 1, |p| {
        let mut v: serde_json::Value = serde_json::from_slice(p).unwrap();
        v["sub"] = json!("prn-admin");
        *p = serde_json::to_vec(&v).unwrap();
    });
    assert_eq!(
        verifier.verify(&payload_tampered, NOW),
        Err(TokenError::BadSignature)
    );

    let sig_tampered = edit_part(&token, 2, |s| s[10] ^= 0x01);
    assert_eq!(
        verifier.verify(&sig_tampered, NOW),
        Err(TokenError::BadSignature)
    );

    let sig_short = edit_part(&token, 2, |s| s.truncate(63));
    assert_eq!(
        verifier.verify(&sig_short, NOW),
        Err(TokenError::BadSignature)
    );

    let header_tampered = edit_part(&token, 0, |h| {
        *h = br#"{"alg":"ES256","kid":"key-1","typ":"JWT","x":1}"#.to_vec();
    });
    assert_eq!(
        verifier.verify(&header_tampered, NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn algorithm_confusion_rejected() {
    let (key, verifier) = setup();
    let token = key.sign(&claims(NOW)).unwrap();
    let payload = token.split('.').nth(1).unwrap();

    let none = format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    assert_eq!(
        verifier.verify(&none, NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );
    let none_kid = format!("{}.{payload}.", b64url(br#"{"alg":"none","kid":"key-1"}"#));
    assert_eq!(
        verifier.verify(&none_kid, NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );

    // HS256 "signed" with the public key as the HMAC secret (classic confusion attack).
    let jwk = key.public_jwk();
    let hs_header = b64url(br#"{"alg":"HS256","typ":"JWT","kid":"key-1"}"#);
    let input = format!("{hs_header}.{payload}");
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, jwk.x.as_bytes());
    let tag = ring::hmac::sign(&hmac_key, input.as_bytes());
    let hs = format!("{input}.{}", b64url(tag.as_ref()));
    assert_eq!(
        verifier.verify(&hs, NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );

    for alg in ["RS256", "ES384", "PS256", "es256", "EdDSA"] {
        let h = b64url(format!(r#"{{"alg":"{alg}","kid":"key-1"}}"#).as_bytes());
        let t = format!("{h}.{payload}.{}", token.split('.').nth(2).unwrap());
        assert_eq!(
            verifier.verify(&t, NOW),
            Err(TokenError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
}

#[test]
fn unknown_and_missing_kid_rejected() {
    let (_, verifier) = setup();
    let (other, _) = SigningKey::generate("key-2".into()).unwrap();
    let token = other.sign(&claims(NOW)).unwrap();
    assert_eq!(verifier.verify(&token, NOW), Err(TokenError::UnknownKey));

    let (key, verifier) = setup();
    let token = key.sign(&claims(NOW)).unwrap();
    let no_kid = edit_part(&token, 0, |h| {
        *h = br#"{"alg":"ES256","typ":"JWT"}"#.to_vec()
    });
    assert_eq!(verifier.verify(&no_kid, NOW), Err(TokenError::UnknownKey));
    // Same key id, different key: signature fails.
    let (impostor, _) = SigningKey::generate("key-1".into()).unwrap();
    assert_eq!(
        verifier.verify(&impostor.sign(&claims(NOW)).unwrap(), NOW),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn malformed_rejected() {
    let (key, verifier) = setup();
    let token = key.sign(&claims(NOW)).unwrap();
    for bad in [
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{token}."),
        format!("{token}=="),
        token.replace('.', "!"),
        format!(
            "{}.%%%.{}",
            token.split('.').next().unwrap(),
            token.split('.').nth(2).unwrap()
        ),
        format!("{}.{}.{}", b64url(b"not json"), "e30", "AAAA"),
    ] {
        assert_eq!(
            verifier.verify(&bad, NOW),
            Err(TokenError::Malformed),
            "{bad}"
        );
    }
    // Validly signed but the claims do not have the right shape.
    let (_, pkcs8) = SigningKey::generate("k".into()).unwrap();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &pkcs8,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let key = SigningKey::from_pkcs8("k".into(), &pkcs8).unwrap();
    let v = Verifier::new(
        ISS.into(),
        AUD.into(),
        &Jwks {
            keys: vec![key.public_jwk()],
        },
    )
    .unwrap();
    let sign = |m: &[u8]| {
        kp.sign(&ring::rand::SystemRandom::new(), m)
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let missing_exp = make_jws(
        &json!({"alg":"ES256","kid":"k"}),
        &json!({"iss": ISS, "aud": AUD}),
        sign,
    );
    assert_eq!(v.verify(&missing_exp, NOW), Err(TokenError::Malformed));
    let mut c = serde_json::to_value(claims(NOW)).unwrap();
    c["aud"] = json!([AUD]);
    let array_aud = make_jws(&json!({"alg":"ES256","kid":"k"}), &c, sign);
    assert_eq!(v.verify(&array_aud, NOW), Err(TokenError::Malformed));
    let crit = make_jws(
        &json!({"alg":"ES256","kid":"k","crit":["b64"],"b64":false}),
        &serde_json::to_value(claims(NOW)).unwrap(),
        sign,
    );
    assert_eq!(v.verify(&crit, NOW), Err(TokenError::Malformed));
    let wrong_typ = make_jws(
        &json!({"alg":"ES256","kid":"k","typ":"client-authentication+jwt"}),
        &serde_json::to_value(claims(NOW)).unwrap(),
        sign,
    );
    assert_eq!(v.verify(&wrong_typ, NOW), Err(TokenError::Malformed));
}

#[test]
fn oversized_rejected() {
    let (key, verifier) = setup();
    let mut c = claims(NOW);
    c.name = "x".repeat(9000);
    assert_eq!(key.sign(&c), Err(TokenError::TooLarge));
    let big = format!(
        "{}.{}.{}",
        "a".repeat(3000),
        "b".repeat(3000),
        "c".repeat(3000)
    );
    assert_eq!(verifier.verify(&big, NOW), Err(TokenError::TooLarge));
}

#[test]
fn key_rotation() {
    let (old, _) = SigningKey::generate("2025-01".into()).unwrap();
    let (new, _) = SigningKey::generate("2025-07".into()).unwrap();
    let old_token = old.sign(&claims(NOW)).unwrap();
    let new_token = new.sign(&claims(NOW)).unwrap();

    let both = Jwks {
        keys: vec![old.public_jwk(), new.public_jwk()],
    };
    let v = Verifier::new(ISS.into(), AUD.into(), &both).unwrap();
    assert!(v.verify(&old_token, NOW).is_ok());
    assert!(v.verify(&new_token, NOW).is_ok());

    // JWKS survives a JSON round trip (as served and fetched).
    let json = serde_json::to_string(&both).unwrap();
    let parsed: Jwks = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, both);

    let only_new = Jwks {
        keys: vec![new.public_jwk()],
    };
    let v = Verifier::new(ISS.into(), AUD.into(), &only_new).unwrap();
    assert_eq!(v.verify(&old_token, NOW), Err(TokenError::UnknownKey));
    assert!(v.verify(&new_token, NOW).is_ok());
}

#[test]
fn persisted_key_reloads() {
    let (key, pkcs8) = SigningKey::generate("k".into()).unwrap();
    let token = key.sign(&claims(NOW)).unwrap();
    let reloaded = SigningKey::from_pkcs8("k".into(), &pkcs8).unwrap();
    assert_eq!(reloaded.kid(), "k");
    let v = Verifier::new(
        ISS.into(),
        AUD.into(),
        &Jwks {
            keys: vec![reloaded.public_jwk()],
        },
    )
    .unwrap();
    assert!(v.verify(&token, NOW).is_ok());
    assert!(v.verify(&reloaded.sign(&claims(NOW)).unwrap(), NOW).is_ok());
}

#[test]
fn errors_and_debug_never_echo_secrets() {
    let (key, pkcs8) = SigningKey::generate("k".into()).unwrap();
    let dbg = format!("{key:?} {:?}", key.clone());
    assert!(!dbg.contains(&b64url(&pkcs8)[..12]));
    let (_, verifier) = setup();
    let token = key.sign(&claims(NOW)).unwrap();
    let err = verifier.verify(&token, NOW).unwrap_err();
    for piece in token.split('.') {
        assert!(!err.to_string().contains(piece));
        assert!(!format!("{err:?}").contains(piece));
    }
    assert!(!format!("{verifier:?}").contains(&token));
}

/// The `jsonwebtoken` crate, given only the JWKS JSON, accepts our tokens.
#[test]
fn independent_verification_with_jsonwebtoken() {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (key, _) = SigningKey::generate("key-1".into()).unwrap();
    let c = claims(now);
    let token = key.sign(&c).unwrap();

    let jwks_json = serde_json::to_string(&Jwks {
        keys: vec![key.public_jwk()],
    })
    .unwrap();
    let jwks: serde_json::Value = serde_json::from_str(&jwks_json).unwrap();
    let jwk = &jwks["keys"][0];
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["use"], "sig");
    assert_eq!(jwk["alg"], "ES256");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.kid.as_deref(), jwk["kid"].as_str());

    let decoding_key =
        DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[ISS]);
    validation.set_audience(&[AUD]);
    let decoded = decode::<Claims>(&token, &decoding_key, &validation).unwrap();
    assert_eq!(decoded.claims, c);

    // A tampered token is rejected by jsonwebtoken too.
    let tampered = edit_part(&token, 2, |s| s[0] ^= 1);
    assert!(decode::<Claims>(&tampered, &decoding_key, &validation).is_err());
}

/// The other direction: a token made by `jsonwebtoken` with an OpenSSL-generated
/// key verifies with our `Verifier`, and that key loads as a `SigningKey`.
#[test]
fn verifies_tokens_from_jsonwebtoken() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

    let pkcs8 = fixture_der("ec-p256.key.pem", "PRIVATE KEY");
    let ours = SigningKey::from_pkcs8("fixture".into(), &pkcs8).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("fixture".into());
    let encoding_key = EncodingKey::from_ec_pem(fixture("ec-p256.key.pem").as_bytes()).unwrap();
    let c = claims(NOW);
    let token = encode(&header, &c, &encoding_key).unwrap();
    let v = Verifier::new(
        ISS.into(),
        AUD.into(),
        &Jwks {
            keys: vec![ours.public_jwk()],
        },
    )
    .unwrap();
    assert_eq!(v.verify(&token, NOW).unwrap(), c);
}
