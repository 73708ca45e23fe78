//! ES256 access tokens: signing, JWKS publication and verification.
//!
//! Tokens are compact JWS with header `{"alg":"ES256","typ":"JWT","kid":…}`.
//! Verification accepts only ES256 and only keys published in the JWKS the
//! [`Verifier`] was built from, selected by `kid`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::jose::{self, JoseError};

/// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: i64 = 30;
/// Largest token accepted or produced, in bytes.
pub const MAX_TOKEN_BYTES: usize = jose::MAX_TOKEN_BYTES;

/// Access-token claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// Principal id.
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    /// Tenant id.
    pub tid: String,
    /// Principal type: `"user"` or `"servicePrincipal"`.
    pub ptype: String,
    pub name: String,
    /// Authentication methods: `"pwd"`, `"mfa"`, `"secret"`, `"cert"`.
    #[serde(default)]
    pub amr: Vec<String>,
}

/// Errors from token signing and verification. Messages never contain the
/// token or key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is too large")]
    TooLarge,
    #[error("token is malformed")]
    Malformed,
    #[error("token algorithm is not supported")]
    UnsupportedAlgorithm,
    #[error("token signing key is unknown")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("signing key is invalid")]
    InvalidKey,
    #[error("key set contains a duplicate key id")]
    DuplicateKeyId,
    #[error("key generation failed")]
    KeyGeneration,
    #[error("token signing failed")]
    Signing,
}

impl From<JoseError> for TokenError {
    fn from(e: JoseError) -> Self {
        match e {
            JoseError::TooLarge => TokenError::TooLarge,
            JoseError::Malformed => TokenError::Malformed,
        }
    }
}

/// A public key in JWK form (RFC 7517), as published in the JWKS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `"EC"`.
    pub kty: String,
    /// Always `"P-256"`.
    pub crv: String,
    /// base64url of the 32-byte X coordinate.
    pub x: String,
    /// base64url of the 32-byte Y coordinate.
    pub y: String,
    pub kid: String,
    /// Always `"sig"`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Always `"ES256"`.
    pub alg: String,
}

/// A JWK set, as served at the JWKS endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// An ES256 token-signing key. `Debug` shows only the key id; cloning shares
/// the key pair.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    key_pair: Arc<EcdsaKeyPair>,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize)]
struct SignHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

impl SigningKey {
    /// Generates a new P-256 key. Returns the key and its PKCS#8 document,
    /// which the caller persists (encrypted) and later loads with
    /// [`SigningKey::from_pkcs8`].
    pub fn generate(kid: String) -> Result<(Self, Vec<u8>), TokenError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| TokenError::KeyGeneration)?;
        let pkcs8 = pkcs8.as_ref().to_vec();
        let key = Self::from_pkcs8(kid, &pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Loads a P-256 key from a PKCS#8 document.
    pub fn from_pkcs8(kid: String, pkcs8: &[u8]) -> Result<Self, TokenError> {
        if kid.is_empty() {
            return Err(TokenError::InvalidKey);
        }
        let rng = SystemRandom::new();
        let key_pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|_| TokenError::InvalidKey)?;
        Ok(Self {
            kid,
            key_pair: Arc::new(key_pair),
            rng,
        })
    }

    /// The key id placed in token headers and the JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> Jwk {
        // Uncompressed SEC1 point: 0x04 || x (32) || y (32).
        let point = self.key_pair.public_key().as_ref();
        let coords = point.get(1..).unwrap_or_default();
        let (x, y) = coords.split_at(coords.len() / 2);
        Jwk {
            kty: "EC".to_owned(),
            crv: "P-256".to_owned(),
            x: crate::b64::encode(x),
            y: crate::b64::encode(y),
            kid: self.kid.clone(),
            use_: "sig".to_owned(),
            alg: "ES256".to_owned(),
        }
    }

    /// Signs the claims into a compact JWS.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let header = serde_json::to_vec(&SignHeader {
            alg: "ES256",
            typ: "JWT",
            kid: &self.kid,
        })
        .map_err(|_| TokenError::Signing)?;
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Signing)?;
        let mut token = format!(
            "{}.{}",
            crate::b64::encode(&header),
            crate::b64::encode(&payload)
        );
        let sig = self
            .key_pair
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| TokenError::Signing)?;
        token.push('.');
        token.push_str(&crate::b64::encode(sig.as_ref()));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        Ok(token)
    }
}

/// Verifies access tokens against a fixed issuer, audience and key set.
pub struct Verifier {
    issuer: String,
    audience: String,
    keys: HashMap<String, UnparsedPublicKey<Vec<u8>>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kids", &kids)
            .finish()
    }
}

fn decode_coordinate(s: &str) -> Result<Vec<u8>, TokenError> {
    match crate::b64::decode(s) {
        Some(v) if v.len() == 32 => Ok(v),
        _ => Err(TokenError::InvalidKey),
    }
}

impl Verifier {
    /// Builds a verifier. Every JWK must be an EC P-256 ES256 signing key with
    /// a non-empty, unique `kid`.
    pub fn new(issuer: String, audience: String, jwks: &Jwks) -> Result<Self, TokenError> {
        let mut keys = HashMap::with_capacity(jwks.keys.len());
        for jwk in &jwks.keys {
            if jwk.kty != "EC"
                || jwk.crv != "P-256"
                || jwk.alg != "ES256"
                || jwk.use_ != "sig"
                || jwk.kid.is_empty()
            {
                return Err(TokenError::InvalidKey);
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&decode_coordinate(&jwk.x)?);
            point.extend_from_slice(&decode_coordinate(&jwk.y)?);
            let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
            if keys.insert(jwk.kid.clone(), key).is_some() {
                return Err(TokenError::DuplicateKeyId);
            }
        }
        Ok(Self {
            issuer,
            audience,
            keys,
        })
    }

    /// Verifies a token at Unix time `now` and returns its claims.
    ///
    /// Checks, in order: size, shape and encoding, `alg` is ES256, `kid`
    /// names a known key, the signature, claim structure, `exp`/`nbf`/`iat`
    /// (with [`LEEWAY_SECONDS`]), issuer, then audience.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let parts = jose::split(token)?;
        if parts.header.alg != "ES256" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if let Some(typ) = &parts.header.typ
            && !typ.eq_ignore_ascii_case("JWT")
            && !typ.eq_ignore_ascii_case("at+jwt")
        {
            return Err(TokenError::Malformed);
        }
        let key = parts
            .header
            .kid
            .as_ref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        if parts.signature.len() != 64 {
            return Err(TokenError::BadSignature);
        }
        key.verify(parts.signing_input, &parts.signature)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims =
            serde_json::from_slice(&parts.payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now.saturating_sub(LEEWAY_SECONDS) {
            return Err(TokenError::Expired);
        }
        let latest = now.saturating_add(LEEWAY_SECONDS);
        if claims.nbf > latest || claims.iat > latest {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let (key, pkcs8) = SigningKey::generate("k1".into()).unwrap();
        let dbg = format!("{key:?}");
        assert!(dbg.contains("k1") && dbg.contains("redacted"));
        let as_b64 = crate::b64::encode(&pkcs8);
        assert!(!dbg.contains(&as_b64[..16]));
    }

    #[test]
    fn jwk_shape() {
        let (key, pkcs8) = SigningKey::generate("k1".into()).unwrap();
        let jwk = key.public_jwk();
        assert_eq!(crate::b64::decode(&jwk.x).unwrap().len(), 32);
        assert_eq!(crate::b64::decode(&jwk.y).unwrap().len(), 32);
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(json["use"], "sig");
        let again = SigningKey::from_pkcs8("k1".into(), &pkcs8).unwrap();
        assert_eq!(again.public_jwk(), jwk);
    }

    #[test]
    fn bad_keys_rejected() {
        assert_eq!(
            SigningKey::from_pkcs8("k".into(), b"nope").unwrap_err(),
            TokenError::InvalidKey
        );
        let (key, _) = SigningKey::generate("k".into()).unwrap();
        let good = key.public_jwk();
        let mut bad = good.clone();
        bad.x = "AAAA".into();
        let err = Verifier::new("i".into(), "a".into(), &Jwks { keys: vec![bad] });
        assert_eq!(err.unwrap_err(), TokenError::InvalidKey);
        let mut bad = good.clone();
        bad.alg = "RS256".into();
        let err = Verifier::new("i".into(), "a".into(), &Jwks { keys: vec![bad] });
        assert_eq!(err.unwrap_err(), TokenError::InvalidKey);
        let dup = Jwks {
            keys: vec![good.clone(), good],
        };
        assert_eq!(
            Verifier::new("i".into(), "a".into(), &dup).unwrap_err(),
            TokenError::DuplicateKeyId
        );
    }
}
