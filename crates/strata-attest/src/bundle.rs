//! Signed reference-value bundles: the only way reference policies enter the control plane.
//!
//! A release process signs a [`BundlePayload`] (a version and named [`ReferencePolicy`]s)
//! with an Ed25519 release key; the control plane is configured with the release *public*
//! keys ([`ReleaseKey`]) and accepts a bundle only if [`verify_bundle`] passes. The payload
//! travels as the exact JSON string that was signed, so no re-serialization can change what
//! the signature covers. The signed message is domain-separated:
//!
//! ```text
//! signature = Ed25519(release key, "strata-policy-bundle-v1\0" ‖ payload bytes)
//! ```
//!
//! `version` lets the importer refuse rollbacks (a bundle must be newer than the policies it
//! replaces); that comparison needs stored state, so it is the caller's job.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::policy::{PolicyError, ReferencePolicy};

/// The domain-separation prefix of every bundle signature.
pub const SIGNING_CONTEXT: &[u8] = b"strata-policy-bundle-v1\0";

/// A configured release public key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseKey {
    /// The name bundles refer to it by.
    pub key_id: String,
    /// The 32-byte Ed25519 public key, base64.
    pub public_key: String,
}

impl ReleaseKey {
    /// The public half of `pair`, named `key_id`.
    pub fn from_key_pair(key_id: &str, pair: &Ed25519KeyPair) -> ReleaseKey {
        ReleaseKey {
            key_id: key_id.to_owned(),
            public_key: STANDARD.encode(pair.public_key().as_ref()),
        }
    }
}

/// What a bundle carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundlePayload {
    /// Monotonic release number.
    pub version: u64,
    /// When it was issued (RFC 3339 UTC; informational).
    pub issued_at: String,
    /// Policies by name.
    pub policies: BTreeMap<String, ReferencePolicy>,
}

/// A bundle as distributed (`strata host policy import bundle.json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignedBundle {
    /// The JSON of a [`BundlePayload`], exactly as signed.
    pub payload: String,
    /// Base64 Ed25519 signature over [`SIGNING_CONTEXT`] ‖ `payload`.
    pub signature: String,
    /// Which release key signed it.
    pub key_id: String,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// No configured release key has this id.
    #[error("the bundle is signed with key {key_id:?}, which is not a configured release key")]
    UnknownKey {
        /// The bundle's key id.
        key_id: String,
    },
    /// The signature does not verify (or is not base64 Ed25519).
    #[error("the bundle's signature does not verify with release key {key_id:?}")]
    BadSignature {
        /// The key tried.
        key_id: String,
    },
    /// A configured release key is unusable.
    #[error("release key {key_id:?} is not a base64 32-byte ed25519 public key")]
    BadReleaseKey {
        /// The key.
        key_id: String,
    },
    /// The signed payload is not a bundle payload.
    #[error("the signed payload is not a valid bundle")]
    MalformedPayload(#[source] serde_json::Error),
    /// A policy in the signed payload cannot be appraised.
    #[error("policy {name:?} in the bundle is invalid")]
    InvalidPolicy {
        /// The policy.
        name: String,
        /// Why.
        #[source]
        source: PolicyError,
    },
}

fn message(payload: &str) -> Vec<u8> {
    let mut m = SIGNING_CONTEXT.to_vec();
    m.extend_from_slice(payload.as_bytes());
    m
}

/// Verifies `bundle` against the configured `keys` and returns its payload. The signature is
/// checked before the payload is parsed; every policy must pass
/// [`ReferencePolicy::validate`].
pub fn verify_bundle(
    bundle: &SignedBundle,
    keys: &[ReleaseKey],
) -> Result<BundlePayload, BundleError> {
    let candidates: Vec<&ReleaseKey> = keys.iter().filter(|k| k.key_id == bundle.key_id).collect();
    if candidates.is_empty() {
        return Err(BundleError::UnknownKey {
            key_id: bundle.key_id.clone(),
        });
    }
    let signature = STANDARD.decode(bundle.signature.trim().as_bytes()).ok();
    let msg = message(&bundle.payload);
    let mut verified = false;
    for key in candidates {
        let public = STANDARD
            .decode(key.public_key.trim().as_bytes())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| BundleError::BadReleaseKey {
                key_id: key.key_id.clone(),
            })?;
        if let Some(sig) = &signature
            && UnparsedPublicKey::new(&ED25519, &public)
                .verify(&msg, sig)
                .is_ok()
        {
            verified = true;
            break;
        }
    }
    if !verified {
        return Err(BundleError::BadSignature {
            key_id: bundle.key_id.clone(),
        });
    }
    let payload: BundlePayload =
        serde_json::from_str(&bundle.payload).map_err(BundleError::MalformedPayload)?;
    for (name, policy) in &payload.policies {
        policy
            .validate()
            .map_err(|source| BundleError::InvalidPolicy {
                name: name.clone(),
                source,
            })?;
    }
    Ok(payload)
}

/// Signs `payload` with `pair` as release key `key_id` (release tooling and tests).
pub fn sign_bundle(
    payload: &BundlePayload,
    key_id: &str,
    pair: &Ed25519KeyPair,
) -> Result<SignedBundle, serde_json::Error> {
    let payload = serde_json::to_string(payload)?;
    let signature = STANDARD.encode(pair.sign(&message(&payload)).as_ref());
    Ok(SignedBundle {
        payload,
        signature,
        key_id: key_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pair() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn payload() -> BundlePayload {
        BundlePayload {
            version: 7,
            issued_at: "2025-01-01T00:00:00Z".into(),
            policies: [("default".to_owned(), crate::testkit::policy())]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_signed_bundle_verifies_and_every_refusal_is_distinct() {
        let release = key_pair();
        let keys = vec![ReleaseKey::from_key_pair("release-2025", &release)];
        let bundle = sign_bundle(&payload(), "release-2025", &release).unwrap();
        assert_eq!(verify_bundle(&bundle, &keys).unwrap(), payload());

        // JSON shape of what `strata host policy import` reads.
        let json = serde_json::to_value(&bundle).unwrap();
        assert_eq!(json["keyId"], "release-2025");
        assert!(json["payload"].as_str().unwrap().contains("\"version\":7"));

        let unknown = SignedBundle {
            key_id: "someone".into(),
            ..bundle.clone()
        };
        assert!(
            matches!(verify_bundle(&unknown, &keys), Err(BundleError::UnknownKey { key_id }) if key_id == "someone")
        );

        let tampered = SignedBundle {
            payload: bundle.payload.replace("\"version\":7", "\"version\":8"),
            ..bundle.clone()
        };
        assert!(matches!(
            verify_bundle(&tampered, &keys),
            Err(BundleError::BadSignature { .. })
        ));

        let impostor = sign_bundle(&payload(), "release-2025", &key_pair()).unwrap();
        assert!(matches!(
            verify_bundle(&impostor, &keys),
            Err(BundleError::BadSignature { .. })
        ));

        let garbled = SignedBundle {
            signature: "%%%".into(),
            ..bundle.clone()
        };
        assert!(matches!(
            verify_bundle(&garbled, &keys),
            Err(BundleError::BadSignature { .. })
        ));

        // Signed but not a bundle.
        let mut junk = bundle.clone();
        junk.payload = "{\"version\": \"seven\"}".into();
        junk.signature = STANDARD.encode(release.sign(&message(&junk.payload)).as_ref());
        assert!(matches!(
            verify_bundle(&junk, &keys),
            Err(BundleError::MalformedPayload(_))
        ));

        // Signed, parses, but a policy could never pass.
        let mut bad = payload();
        if let Some(p) = bad.policies.get_mut("default") {
            p.pcrs.clear();
        }
        let bad = sign_bundle(&bad, "release-2025", &release).unwrap();
        assert!(
            matches!(verify_bundle(&bad, &keys), Err(BundleError::InvalidPolicy { name, .. }) if name == "default")
        );

        // A broken configured key is reported as such.
        let broken = vec![ReleaseKey {
            key_id: "release-2025".into(),
            public_key: "AAAA".into(),
        }];
        assert!(matches!(
            verify_bundle(&bundle, &broken),
            Err(BundleError::BadReleaseKey { .. })
        ));
    }

    #[test]
    fn the_signature_is_domain_separated() {
        let release = key_pair();
        let keys = vec![ReleaseKey::from_key_pair("k", &release)];
        let payload = serde_json::to_string(&payload()).unwrap();
        // A signature over the bare payload (e.g. made for another protocol) is refused.
        let bare = SignedBundle {
            signature: STANDARD.encode(release.sign(payload.as_bytes()).as_ref()),
            payload,
            key_id: "k".into(),
        };
        assert!(matches!(
            verify_bundle(&bare, &keys),
            Err(BundleError::BadSignature { .. })
        ));
    }

    #[test]
    fn key_ids_may_repeat_during_rotation() {
        let (old, new) = (key_pair(), key_pair());
        let keys = vec![
            ReleaseKey::from_key_pair("release", &old),
            ReleaseKey::from_key_pair("release", &new),
        ];
        for pair in [&old, &new] {
            let b = sign_bundle(&payload(), "release", pair).unwrap();
            assert!(verify_bundle(&b, &keys).is_ok());
        }
    }
}
