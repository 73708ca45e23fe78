//! Certificate credentials and RFC 7523 client assertions.

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use strata_identity::assertion::{
    AssertionError, CertificateKey, PublicKeyAlg, parse_certificate_der, parse_certificate_pem,
    verify_client_assertion,
};

use crate::{b64url, fixture, fixture_der, make_jws};

const CLIENT: &str = "6f1c2a9e-0000-4000-8000-000000000001";
const AUD: &str = "https://login.strata.test/tenant-1/oauth2/v2.0/token";
const NOW: i64 = 1_750_000_000;
/// `openssl x509 -outform DER | openssl dgst -sha256 -binary`, base64url.
const EC_THUMBPRINT: &str = "El_AaLggHdZEx7LnwwmEXG_ilPBev4aMVEObooL3QQc";
const RSA_THUMBPRINT: &str = "Ons9ys65c_MO509StebojV4kPGJQbOHDoSDz8KzY1C8";

fn ec_signer() -> EcdsaKeyPair {
    EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &fixture_der("ec-p256.key.pem", "PRIVATE KEY"),
        &SystemRandom::new(),
    )
    .unwrap()
}

fn ec_cert() -> CertificateKey {
    parse_certificate_pem(&fixture("ec-p256.cert.pem")).unwrap()
}

fn rsa_signer() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(&fixture_der("rsa-2048.key.pem", "PRIVATE KEY")).unwrap()
}

fn rsa_cert() -> CertificateKey {
    parse_certificate_pem(&fixture("rsa-2048.cert.pem")).unwrap()
}

fn claims() -> Value {
    json!({
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": AUD,
        "exp": NOW + 300,
        "nbf": NOW,
        "iat": NOW,
        "jti": "a1b2c3d4",
    })
}

fn es256(header: &Value, payload: &Value) -> String {
    let kp = ec_signer();
    make_jws(header, payload, |m| {
        kp.sign(&SystemRandom::new(), m).unwrap().as_ref().to_vec()
    })
}

fn rsa(header: &Value, payload: &Value, padding: &'static dyn signature::RsaEncoding) -> String {
    let kp = rsa_signer();
    make_jws(header, payload, |m| {
        let mut sig = vec![0; kp.public().modulus_len()];
        kp.sign(padding, &SystemRandom::new(), m, &mut sig).unwrap();
        sig
    })
}

fn ec_assertion(payload: &Value) -> String {
    es256(
        &json!({"alg": "ES256", "typ": "JWT", "x5t#S256": EC_THUMBPRINT}),
        payload,
    )
}

#[test]
fn parses_ec_certificate() {
    let key = ec_cert();
    assert_eq!(key.alg, PublicKeyAlg::EcP256);
    assert_eq!(key.thumbprint, EC_THUMBPRINT);
    assert_eq!(key.public_key, ec_signer().public_key().as_ref());
    assert_eq!(key.public_key.len(), 65);
    // DER and PEM agree.
    let der = fixture_der("ec-p256.cert.pem", "CERTIFICATE");
    assert_eq!(parse_certificate_der(&der).unwrap(), key);
}

#[test]
fn parses_rsa_certificate() {
    let key = rsa_cert();
    assert_eq!(key.alg, PublicKeyAlg::Rsa);
    assert_eq!(key.thumbprint, RSA_THUMBPRINT);
    assert_eq!(key.public_key, rsa_signer().public_key().as_ref());
}

#[test]
fn rejects_unsupported_curve() {
    assert_eq!(
        parse_certificate_pem(&fixture("ec-p384.cert.pem")),
        Err(AssertionError::UnsupportedKey)
    );
}

#[test]
fn pem_with_explanatory_text_and_crlf() {
    let pem = fixture("ec-p256.cert.pem").replace('\n', "\r\n");
    let with_text = format!("subject=CN = test\r\nissuer=CN = test\r\n{pem}\r\n");
    assert_eq!(parse_certificate_pem(&with_text).unwrap(), ec_cert());
    // Two certificates are ambiguous.
    let two = format!(
        "{}{}",
        fixture("ec-p256.cert.pem"),
        fixture("rsa-2048.cert.pem")
    );
    assert_eq!(parse_certificate_pem(&two), Err(AssertionError::InvalidPem));
    // A private key is not a certificate.
    assert_eq!(
        parse_certificate_pem(&fixture("ec-p256.key.pem")),
        Err(AssertionError::InvalidPem)
    );
}

#[test]
fn der_rejects_structural_damage() {
    let der = fixture_der("ec-p256.cert.pem", "CERTIFICATE");
    let mut trailing = der.clone();
    trailing.push(0);
    assert_eq!(
        parse_certificate_der(&trailing),
        Err(AssertionError::InvalidCertificate)
    );
    for cut in [0, 1, 2, 3, 10, der.len() / 2, der.len() - 1] {
        assert_eq!(
            parse_certificate_der(&der[..cut]),
            Err(AssertionError::InvalidCertificate),
            "cut at {cut}"
        );
    }
    // Outer length claims more than the input holds.
    let mut long = der.clone();
    assert_eq!(long[1], 0x82);
    long[2] = 0xff;
    assert_eq!(
        parse_certificate_der(&long),
        Err(AssertionError::InvalidCertificate)
    );
    // Indefinite length.
    let mut indefinite = der.clone();
    indefinite[1] = 0x80;
    assert_eq!(
        parse_certificate_der(&indefinite),
        Err(AssertionError::InvalidCertificate)
    );
    // Not a certificate at all: a PKCS#8 private key.
    assert!(parse_certificate_der(&fixture_der("ec-p256.key.pem", "PRIVATE KEY")).is_err());
    // Oversized input.
    assert_eq!(
        parse_certificate_der(&vec![0x30; 64 * 1024]),
        Err(AssertionError::CertificateTooLarge)
    );
}

#[test]
fn every_single_byte_flip_is_handled() {
    // Flipping any byte must never panic; a flip inside the key changes or breaks it.
    let der = fixture_der("ec-p256.cert.pem", "CERTIFICATE");
    let good = ec_cert();
    for i in 0..der.len() {
        let mut d = der.clone();
        d[i] ^= 0xff;
        if let Ok(k) = parse_certificate_der(&d) {
            assert_ne!(k.thumbprint, good.thumbprint);
        }
    }
}

#[test]
fn ec_assertion_verifies() {
    let token = ec_assertion(&claims());
    let got = verify_client_assertion(&token, &ec_cert(), CLIENT, AUD, NOW).unwrap();
    assert_eq!(got.iss, CLIENT);
    assert_eq!(got.sub, CLIENT);
    assert_eq!(got.aud, AUD);
    assert_eq!(got.exp, NOW + 300);
    assert_eq!(got.jti, "a1b2c3d4");
    // No x5t#S256 header is fine too; so is an audience array.
    let mut c = claims();
    c["aud"] = json!(["https://other", AUD]);
    let token = es256(&json!({"alg": "ES256"}), &c);
    assert_eq!(
        verify_client_assertion(&token, &ec_cert(), CLIENT, AUD, NOW)
            .unwrap()
            .aud,
        AUD
    );
}

#[test]
fn rsa_assertions_verify_rs256_and_ps256() {
    let key = rsa_cert();
    let rs = rsa(
        &json!({"alg": "RS256", "x5t#S256": RSA_THUMBPRINT}),
        &claims(),
        &signature::RSA_PKCS1_SHA256,
    );
    assert!(verify_client_assertion(&rs, &key, CLIENT, AUD, NOW).is_ok());
    let ps = rsa(
        &json!({"alg": "PS256"}),
        &claims(),
        &signature::RSA_PSS_SHA256,
    );
    assert!(verify_client_assertion(&ps, &key, CLIENT, AUD, NOW).is_ok());
    // Header says PS256 but signature is PKCS#1: bad signature.
    let mixed = rsa(
        &json!({"alg": "PS256"}),
        &claims(),
        &signature::RSA_PKCS1_SHA256,
    );
    assert_eq!(
        verify_client_assertion(&mixed, &key, CLIENT, AUD, NOW),
        Err(AssertionError::BadSignature)
    );
    // RS512 and the like are not accepted.
    let rs512 = rsa(
        &json!({"alg": "RS512"}),
        &claims(),
        &signature::RSA_PKCS1_SHA512,
    );
    assert_eq!(
        verify_client_assertion(&rs512, &key, CLIENT, AUD, NOW),
        Err(AssertionError::UnsupportedAlgorithm)
    );
}

#[test]
fn algorithm_must_match_key_type() {
    let es = ec_assertion(&claims());
    assert_eq!(
        verify_client_assertion(&es, &rsa_cert(), CLIENT, AUD, NOW),
        Err(AssertionError::UnsupportedAlgorithm)
    );
    let rs = rsa(
        &json!({"alg": "RS256"}),
        &claims(),
        &signature::RSA_PKCS1_SHA256,
    );
    assert_eq!(
        verify_client_assertion(&rs, &ec_cert(), CLIENT, AUD, NOW),
        Err(AssertionError::UnsupportedAlgorithm)
    );
    let none = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none"}"#),
        b64url(claims().to_string().as_bytes())
    );
    assert_eq!(
        verify_client_assertion(&none, &ec_cert(), CLIENT, AUD, NOW),
        Err(AssertionError::UnsupportedAlgorithm)
    );
}

#[test]
fn claim_checks() {
    let key = ec_cert();
    let check = |edit: &dyn Fn(&mut Value), now: i64| {
        let mut c = claims();
        edit(&mut c);
        verify_client_assertion(&ec_assertion(&c), &key, CLIENT, AUD, now)
    };
    assert_eq!(
        check(&|c| c["iss"] = json!("someone-else"), NOW),
        Err(AssertionError::WrongIssuer)
    );
    assert_eq!(
        check(&|c| c["sub"] = json!("someone-else"), NOW),
        Err(AssertionError::WrongSubject)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!("https://evil"), NOW),
        Err(AssertionError::WrongAudience)
    );
    assert_eq!(
        check(&|c| c["aud"] = json!([]), NOW),
        Err(AssertionError::WrongAudience)
    );
    assert_eq!(check(&|_| {}, NOW + 300), Err(AssertionError::Expired));
    assert_eq!(check(&|_| {}, NOW + 10_000), Err(AssertionError::Expired));
    assert_eq!(
        check(&|c| c["exp"] = json!(NOW + 631), NOW),
        Err(AssertionError::ExpiryTooFar)
    );
    assert!(check(&|c| c["exp"] = json!(NOW + 630), NOW).is_ok());
    assert_eq!(
        check(&|c| c["exp"] = json!(i64::MAX), NOW),
        Err(AssertionError::ExpiryTooFar)
    );
    assert_eq!(
        check(&|c| c["nbf"] = json!(NOW + 31), NOW),
        Err(AssertionError::NotYetValid)
    );
    assert!(
        check(
            &|c| {
                c.as_object_mut().unwrap().remove("nbf");
            },
            NOW
        )
        .is_ok()
    );
    assert_eq!(
        check(&|c| c["jti"] = json!(""), NOW),
        Err(AssertionError::MissingJti)
    );
    assert_eq!(
        check(
            &|c| {
                c.as_object_mut().unwrap().remove("jti");
            },
            NOW
        ),
        Err(AssertionError::MissingJti)
    );
    assert_eq!(
        check(
            &|c| {
                c.as_object_mut().unwrap().remove("exp");
            },
            NOW
        ),
        Err(AssertionError::Malformed)
    );
    assert_eq!(
        check(&|c| c["exp"] = json!("soon"), NOW),
        Err(AssertionError::Malformed)
    );
    // Wrong expected client id / audience on the caller side.
    let token = ec_assertion(&claims());
    assert_eq!(
        verify_client_assertion(&token, &key, "other-client", AUD, NOW),
        Err(AssertionError::WrongIssuer)
    );
    assert_eq!(
        verify_client_assertion(&token, &key, CLIENT, "https://other", NOW),
        Err(AssertionError::WrongAudience)
    );
}

#[test]
fn tampering_and_wrong_certificate_rejected() {
    let key = ec_cert();
    let token = ec_assertion(&claims());
    let parts: Vec<&str> = token.split('.').collect();

    let mut forged = claims();
    forged["sub"] = json!("other");
    let payload_swapped = format!(
        "{}.{}.{}",
        parts[0],
        b64url(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        verify_client_assertion(&payload_swapped, &key, CLIENT, AUD, NOW),
        Err(AssertionError::BadSignature)
    );

    let mut sig = base64_decode(parts[2]);
    sig[5] ^= 0x40;
    let sig_flipped = format!("{}.{}.{}", parts[0], parts[1], b64url(&sig));
    assert_eq!(
        verify_client_assertion(&sig_flipped, &key, CLIENT, AUD, NOW),
        Err(AssertionError::BadSignature)
    );

    // Signed by a different P-256 key than the certificate's.
    let other = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .unwrap();
    let other = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        other.as_ref(),
        &SystemRandom::new(),
    )
    .unwrap();
    let foreign = make_jws(&json!({"alg": "ES256"}), &claims(), |m| {
        other
            .sign(&SystemRandom::new(), m)
            .unwrap()
            .as_ref()
            .to_vec()
    });
    assert_eq!(
        verify_client_assertion(&foreign, &key, CLIENT, AUD, NOW),
        Err(AssertionError::BadSignature)
    );

    // Header names a different certificate.
    let mismatch = es256(
        &json!({"alg": "ES256", "x5t#S256": RSA_THUMBPRINT}),
        &claims(),
    );
    assert_eq!(
        verify_client_assertion(&mismatch, &key, CLIENT, AUD, NOW),
        Err(AssertionError::KeyMismatch)
    );

    let big = format!("{}.{}.{}", parts[0], "A".repeat(9000), parts[2]);
    assert_eq!(
        verify_client_assertion(&big, &key, CLIENT, AUD, NOW),
        Err(AssertionError::TooLarge)
    );
    assert_eq!(
        verify_client_assertion("a.b", &key, CLIENT, AUD, NOW),
        Err(AssertionError::Malformed)
    );
}

#[test]
fn hand_built_certificate_with_ring_key() {
    // A minimal certificate-shaped DER around a freshly generated key:
    // SEQUENCE { tbs, sigAlg, BIT STRING } with a v1 TBSCertificate.
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let point = kp.public_key().as_ref();

    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match value.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(value);
        out
    }
    let ec_alg = tlv(
        0x30,
        &[
            tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]),
            tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]),
        ]
        .concat(),
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(point);
    let spki = tlv(0x30, &[ec_alg, tlv(0x03, &bits)].concat());
    let sig_alg = tlv(
        0x30,
        &tlv(0x06, &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03, 0x02]),
    );
    let name = tlv(0x30, &[]);
    let validity = tlv(
        0x30,
        &[tlv(0x17, b"250101000000Z"), tlv(0x17, b"350101000000Z")].concat(),
    );
    let tbs = tlv(
        0x30,
        &[
            tlv(0x02, &[0x01]),
            sig_alg.clone(),
            name.clone(),
            validity,
            name,
            spki,
        ]
        .concat(),
    );
    let cert = tlv(0x30, &[tbs, sig_alg, tlv(0x03, &[0x00])].concat());

    let key = parse_certificate_der(&cert).unwrap();
    assert_eq!(key.alg, PublicKeyAlg::EcP256);
    assert_eq!(key.public_key, point);
    let token = make_jws(&json!({"alg": "ES256"}), &claims(), |m| {
        kp.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    assert!(verify_client_assertion(&token, &key, CLIENT, AUD, NOW).is_ok());
}

#[test]
fn errors_never_echo_the_assertion() {
    let token = ec_assertion(&claims());
    let err = verify_client_assertion(&token, &rsa_cert(), CLIENT, AUD, NOW).unwrap_err();
    for piece in token.split('.') {
        assert!(!err.to_string().contains(piece));
    }
    assert_eq!(err.to_string(), err.to_string().to_lowercase());
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}
