//! Certificate credentials for service principals: RFC 7523 `private_key_jwt`
//! client assertions, verified against the public key of a registered X.509
//! certificate.
//!
//! The certificate is used only as a container for the public key: trust comes
//! from the certificate having been registered on the service principal, so
//! its signature and chain are not checked here. Its SHA-256 thumbprint
//! (`x5t#S256`) identifies it.

use ring::digest;
use ring::signature::{self, UnparsedPublicKey};
use serde::Deserialize;

use crate::der::{self, DerError, Reader};
use crate::jose::{self, JoseError};

/// Clock skew tolerated, in seconds.
pub const LEEWAY_SECONDS: i64 = 30;
/// Longest assertion lifetime accepted (`exp` at most this far ahead, plus
/// [`LEEWAY_SECONDS`]).
pub const MAX_LIFETIME_SECONDS: i64 = 600;
/// Largest certificate accepted, in DER bytes.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_PRIME256V1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

/// The public-key algorithm of a certificate credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublicKeyAlg {
    /// ECDSA on P-256; assertions must use ES256.
    EcP256,
    /// RSA, 2048 to 8192 bits; assertions must use RS256 or PS256.
    Rsa,
}

/// The public key extracted from a certificate credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateKey {
    pub alg: PublicKeyAlg,
    /// In ring's expected encoding: the uncompressed point (65 bytes) for EC,
    /// the `RSAPublicKey` DER for RSA.
    pub public_key: Vec<u8>,
    /// base64url SHA-256 of the certificate DER (`x5t#S256`).
    pub thumbprint: String,
}

/// The verified claims of a client assertion. The caller must reject a `jti`
/// it has seen before (until `exp`) to block replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    /// The audience that matched.
    pub aud: String,
    pub exp: i64,
    pub jti: String,
}

/// Errors from certificate parsing and assertion verification. Messages
/// never contain the assertion or key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AssertionError {
    #[error("certificate pem is invalid: expected exactly one BEGIN/END CERTIFICATE block")]
    InvalidPem,
    #[error("certificate is too large")]
    CertificateTooLarge,
    #[error("certificate der is malformed")]
    InvalidCertificate,
    #[error("certificate key type is not supported: use an EC P-256 or RSA 2048-8192 bit key")]
    UnsupportedKey,
    #[error("assertion is too large")]
    TooLarge,
    #[error("assertion is malformed")]
    Malformed,
    #[error("assertion algorithm is not supported for this key")]
    UnsupportedAlgorithm,
    #[error("assertion was made for a different certificate")]
    KeyMismatch,
    #[error("assertion signature is invalid")]
    BadSignature,
    #[error("assertion issuer must be the client id")]
    WrongIssuer,
    #[error("assertion subject must be the client id")]
    WrongSubject,
    #[error("assertion audience is not accepted")]
    WrongAudience,
    #[error("assertion has expired")]
    Expired,
    #[error("assertion expiry is too far in the future")]
    ExpiryTooFar,
    #[error("assertion is not yet valid")]
    NotYetValid,
    #[error("assertion has no jti")]
    MissingJti,
}

impl From<DerError> for AssertionError {
    fn from(_: DerError) -> Self {
        AssertionError::InvalidCertificate
    }
}

impl From<JoseError> for AssertionError {
    fn from(e: JoseError) -> Self {
        match e {
            JoseError::TooLarge => AssertionError::TooLarge,
            JoseError::Malformed => AssertionError::Malformed,
        }
    }
}

/// Parses a PEM file holding exactly one `CERTIFICATE` block (explanatory
/// text before and after it is ignored, RFC 7468) and extracts its key.
pub fn parse_certificate_pem(pem: &str) -> Result<CertificateKey, AssertionError> {
    if pem.len() > MAX_CERTIFICATE_BYTES * 2 {
        return Err(AssertionError::CertificateTooLarge);
    }
    let start = pem.find(PEM_BEGIN).ok_or(AssertionError::InvalidPem)?;
    let body_start = start + PEM_BEGIN.len();
    let body_len = pem[body_start..]
        .find(PEM_END)
        .ok_or(AssertionError::InvalidPem)?;
    let body = &pem[body_start..body_start + body_len];
    if pem[body_start + body_len..].contains(PEM_BEGIN) || body.contains("-----") {
        return Err(AssertionError::InvalidPem);
    }
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| AssertionError::InvalidPem)?;
    parse_certificate_der(&der)
}

/// Walks `Certificate → TBSCertificate → SubjectPublicKeyInfo` and extracts
/// an EC P-256 or RSA public key. Rejects trailing data, lengths beyond the
/// input and any structure other than an X.509 certificate.
pub fn parse_certificate_der(der: &[u8]) -> Result<CertificateKey, AssertionError> {
    if der.len() > MAX_CERTIFICATE_BYTES {
        return Err(AssertionError::CertificateTooLarge);
    }
    let mut top = Reader::new(der);
    let certificate = top.expect(der::TAG_SEQUENCE)?;
    top.finish()?;

    let mut cert = Reader::new(certificate);
    let tbs = cert.expect(der::TAG_SEQUENCE)?;
    cert.expect(der::TAG_SEQUENCE)?; // signatureAlgorithm
    cert.expect(der::TAG_BIT_STRING)?; // signatureValue
    cert.finish()?;

    let mut tbs = Reader::new(tbs);
    if tbs.peek_tag() == Some(der::TAG_CONTEXT_0) {
        let mut version = Reader::new(tbs.expect(der::TAG_CONTEXT_0)?);
        version.expect(der::TAG_INTEGER)?;
        version.finish()?;
    }
    tbs.expect(der::TAG_INTEGER)?; // serialNumber
    tbs.expect(der::TAG_SEQUENCE)?; // signature
    tbs.expect(der::TAG_SEQUENCE)?; // issuer
    tbs.expect(der::TAG_SEQUENCE)?; // validity
    tbs.expect(der::TAG_SEQUENCE)?; // subject
    let spki = tbs.expect(der::TAG_SEQUENCE)?;
    // Optional issuerUniqueID [1], subjectUniqueID [2], extensions [3]: must
    // be well-formed and nothing else may follow.
    while !tbs.is_empty() {
        let (tag, _) = tbs.read()?;
        if !matches!(tag, 0x81 | 0x82 | 0xA1 | 0xA2 | 0xA3) {
            return Err(AssertionError::InvalidCertificate);
        }
    }

    let (alg, public_key) = parse_spki(spki)?;
    let thumbprint = crate::b64::encode(digest::digest(&digest::SHA256, der).as_ref());
    Ok(CertificateKey {
        alg,
        public_key,
        thumbprint,
    })
}

fn parse_spki(spki: &[u8]) -> Result<(PublicKeyAlg, Vec<u8>), AssertionError> {
    let mut spki = Reader::new(spki);
    let mut alg_id = Reader::new(spki.expect(der::TAG_SEQUENCE)?);
    let bits = spki.expect(der::TAG_BIT_STRING)?;
    spki.finish()?;
    // BIT STRING: first byte is the count of unused bits, which must be 0 for keys.
    let key = match bits {
        [0, key @ ..] => key,
        _ => return Err(AssertionError::InvalidCertificate),
    };
    let oid = alg_id.expect(der::TAG_OID)?;
    if oid == OID_EC_PUBLIC_KEY {
        if alg_id.peek_tag() != Some(der::TAG_OID) {
            return Err(AssertionError::UnsupportedKey);
        }
        let curve = alg_id.expect(der::TAG_OID)?;
        alg_id.finish()?;
        if curve != OID_PRIME256V1 {
            return Err(AssertionError::UnsupportedKey);
        }
        // Only the uncompressed point form.
        if key.len() != 65 || key[0] != 0x04 {
            return Err(AssertionError::UnsupportedKey);
        }
        Ok((PublicKeyAlg::EcP256, key.to_vec()))
    } else if oid == OID_RSA_ENCRYPTION {
        if !alg_id.is_empty() && !alg_id.expect(der::TAG_NULL)?.is_empty() {
            return Err(AssertionError::InvalidCertificate);
        }
        alg_id.finish()?;
        check_rsa_public_key(key)?;
        Ok((PublicKeyAlg::Rsa, key.to_vec()))
    } else {
        Err(AssertionError::UnsupportedKey)
    }
}

/// Checks `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`
/// with a 2048..=8192-bit modulus.
fn check_rsa_public_key(key: &[u8]) -> Result<(), AssertionError> {
    let mut outer = Reader::new(key);
    let mut seq = Reader::new(outer.expect(der::TAG_SEQUENCE)?);
    outer.finish()?;
    let modulus = der::positive_integer(seq.expect(der::TAG_INTEGER)?)?;
    der::positive_integer(seq.expect(der::TAG_INTEGER)?)?;
    seq.finish()?;
    if !(256..=1024).contains(&modulus.len()) {
        return Err(AssertionError::UnsupportedKey);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
}

/// Verifies an RFC 7523 client assertion signed with the key of `key`.
///
/// Requires: size ≤ 8 KiB; `alg` ES256 for EC keys, RS256 or PS256 for RSA
/// keys; a matching `x5t#S256` header if present; a valid signature;
/// `iss == sub == client_id`; `aud` equal to (or, as an array, containing)
/// `audience`; `now < exp ≤ now + 600 + 30`; `nbf`, if present, not more than
/// 30 s ahead; a non-empty `jti`.
pub fn verify_client_assertion(
    token: &str,
    key: &CertificateKey,
    client_id: &str,
    audience: &str,
    now: i64,
) -> Result<AssertionClaims, AssertionError> {
    let parts = jose::split(token)?;
    let algorithm: &'static dyn signature::VerificationAlgorithm =
        match (key.alg, parts.header.alg.as_str()) {
            (PublicKeyAlg::EcP256, "ES256") => &signature::ECDSA_P256_SHA256_FIXED,
            (PublicKeyAlg::Rsa, "RS256") => &signature::RSA_PKCS1_2048_8192_SHA256,
            (PublicKeyAlg::Rsa, "PS256") => &signature::RSA_PSS_2048_8192_SHA256,
            _ => return Err(AssertionError::UnsupportedAlgorithm),
        };
    if let Some(x5t) = &parts.header.x5t_s256
        && !crate::secret::constant_time_eq(x5t.as_bytes(), key.thumbprint.as_bytes())
    {
        return Err(AssertionError::KeyMismatch);
    }
    UnparsedPublicKey::new(algorithm, &key.public_key)
        .verify(parts.signing_input, &parts.signature)
        .map_err(|_| AssertionError::BadSignature)?;

    let claims: RawClaims =
        serde_json::from_slice(&parts.payload).map_err(|_| AssertionError::Malformed)?;
    if client_id.is_empty() || claims.iss != client_id {
        return Err(AssertionError::WrongIssuer);
    }
    if claims.sub != client_id {
        return Err(AssertionError::WrongSubject);
    }
    let aud_ok = match &claims.aud {
        Audience::One(a) => a == audience,
        Audience::Many(list) => list.iter().any(|a| a == audience),
    };
    if audience.is_empty() || !aud_ok {
        return Err(AssertionError::WrongAudience);
    }
    if claims.exp <= now {
        return Err(AssertionError::Expired);
    }
    if claims.exp > now.saturating_add(MAX_LIFETIME_SECONDS + LEEWAY_SECONDS) {
        return Err(AssertionError::ExpiryTooFar);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECONDS))
    {
        return Err(AssertionError::NotYetValid);
    }
    let jti = match claims.jti {
        Some(jti) if !jti.is_empty() => jti,
        _ => return Err(AssertionError::MissingJti),
    };
    Ok(AssertionClaims {
        iss: claims.iss,
        sub: claims.sub,
        aud: audience.to_owned(),
        exp: claims.exp,
        jti,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_shapes() {
        assert_eq!(parse_certificate_pem(""), Err(AssertionError::InvalidPem));
        assert_eq!(
            parse_certificate_pem("-----BEGIN CERTIFICATE-----\nAAAA\n"),
            Err(AssertionError::InvalidPem)
        );
        assert_eq!(
            parse_certificate_pem("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            Err(AssertionError::InvalidPem)
        );
        assert_eq!(
            parse_certificate_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(AssertionError::InvalidCertificate)
        );
    }

    #[test]
    fn rsa_key_size_bounds() {
        fn rsa_key(modulus_len: usize) -> Vec<u8> {
            let mut n = vec![0x00];
            n.extend(std::iter::repeat_n(0xC5, modulus_len));
            let mut ints = vec![0x02, 0x82, (n.len() >> 8) as u8, n.len() as u8];
            ints.extend(&n);
            ints.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
            let mut out = vec![0x30, 0x82, (ints.len() >> 8) as u8, ints.len() as u8];
            out.extend(ints);
            out
        }
        assert!(check_rsa_public_key(&rsa_key(256)).is_ok());
        assert_eq!(
            check_rsa_public_key(&rsa_key(255)),
            Err(AssertionError::UnsupportedKey)
        );
        assert_eq!(
            check_rsa_public_key(&rsa_key(1025)),
            Err(AssertionError::UnsupportedKey)
        );
        let mut trailing = rsa_key(256);
        trailing.push(0);
        assert_eq!(
            check_rsa_public_key(&trailing),
            Err(AssertionError::InvalidCertificate)
        );
    }
}
